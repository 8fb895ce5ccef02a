"""Statistics of docs/protocol.md section 4: intervals, paired differences and corrected verdicts.

Modules: :mod:`.intervals` (seed intervals, percentiles), :mod:`.bootstrap` (replicates over users and
seeds), :mod:`.decisions` (p-values, TOST, Holm, verdicts) and :mod:`.summary` (what the evaluation
stage writes), :mod:`.auc` (weighted AUCs of every replicate).

Two levels, one vocabulary of outputs (``mean``, ``ci_low``, ``ci_high``, ``n``, ``values`` / ``diffs``,
``verdict``):

- **Seed statistics** (:func:`~.intervals.mean_ci`, :func:`~.intervals.paired_diff`): a Student-t interval over
  training seeds, used where only one number per seed exists (the teacher stage, sweeps). With ``bounds``
  the interval is computed on the logit scale of the metric's range (:func:`bounded_t_interval`), so it
  never leaves the range.
- **Hierarchical bootstrap** (:func:`bootstrap_summary`): the test users are a sample too, so every replicate
  resamples the test users (multinomial multiplicities, one draw shared by every model, seed and metric so
  that comparisons stay paired) *and* the training seeds (one draw shared by every model: models trained
  with the same seed share its data order and initialisation stream). A replicate's value of a model is the
  mean over the drawn seeds of the metric on the drawn users: a user-weighted mean for per-user metrics
  (:func:`bootstrap_per_user`), a weighted Mann-Whitney AUC for the ranking metrics
  (:func:`bootstrap_auc`, :func:`bootstrap_gauc`). Intervals are percentiles of the replicates, inside the
  metric's range by construction; p-values are two-sided bootstrap p-values (:func:`bootstrap_p`),
  Holm-corrected over the comparisons of a dataset (:func:`holm`); equivalence is a bootstrap TOST within a
  stated margin (:func:`equivalence_p`); :func:`decide` turns them into one verdict.

Seeds and users are crossed, not nested (every seed is scored on the same test users), so one user draw per
replicate is shared by all seeds; this two-way bootstrap counts the user x seed interaction in both
margins, which errs on the wide side. With few seeds (5) the seed part of any bootstrap is rough; the seed
count of every number is reported beside it.
"""
