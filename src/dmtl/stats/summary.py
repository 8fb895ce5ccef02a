"""Every model's metrics with bounded intervals and the reference's Holm-corrected verdicts (docs/protocol.md §4)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dmtl import vocab as V
from dmtl.io import jsonable
from dmtl.stats.bootstrap import (
    Draws,
    EvalSample,
    Replicates,
    _seed_array,
    bootstrap_per_user,
    bootstrap_ranking,
)
from dmtl.stats.decisions import (
    _constant,
    _margin,
    bootstrap_p,
    decide,
    equivalence_p,
    holm,
    t_equivalence_p,
    t_test_p,
)
from dmtl.stats.intervals import _level, mean_ci, paired_diff, percentile_interval


def bootstrap_summary(
    per_user: Mapping[str, Mapping[str, Any]] | None = None,
    scores: Mapping[str, Mapping[str, Any]] | None = None,
    sample: EvalSample | None = None,
    *,
    reference: str,
    competitors: Sequence[str] | None = None,
    per_seed: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    level: float = 0.95,
    n_boot: int = 1000,
    n_boot_ranking: int | None = 200,
    gauc: bool = True,
    seed: int = 0,
    margins: Mapping[str, float] | float | None = None,
    primary: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every model's metrics with bounded intervals, and Holm-corrected verdicts of the reference against
    each competitor: the statistics of docs/protocol.md section 4.

    Args:
        per_user: ``{model: {metric: (n_seeds, n_ret)}}`` per-user values of the per-user metrics
            (``recall_long@K``, ``recall_click@K``, ``bait_share@K``, ``oracle_read_time@K``, ...), rows in
            the seed order shared by every input, columns the retrieval population's users in one order
            (``sample.retrieval_users`` places them on the user axis); ``nan`` = the user does not count.
        scores: ``{model: {task: (n_seeds, n_imp)}}`` test scores of the ranking tasks ``click``, ``ctcvr``,
            ``cvr`` for ``auc_<task>`` (see :func:`bootstrap_ranking`); ``gauc_<task>`` come with ``gauc``.
        sample: the test users and impressions; required with ``scores``; without it the user axis is the
            columns of ``per_user``.
        reference: the model every competitor is compared with.
        competitors: the models compared with it (default: every other model).
        per_seed: ``{model: {metric: [value per seed]}}`` for metrics without per-user values (e.g.
            ``ann_recall_vs_exact``): logit-scale t intervals over seeds, paired t-test and t TOST. A metric
            present in ``per_user`` or ``scores`` is taken from there.
        level: confidence level of every interval; ``alpha = 1 - level`` for every test.
        n_boot: replicates of the per-user metrics.
        n_boot_ranking: replicates of the ranking metrics (the first ones of the same draws; each costs a
            pass over the test impressions); ``None`` = ``n_boot``.
        gauc: also bootstrap ``gauc_*``.
        seed: seed of the bootstrap's random generator (same inputs and seed, same numbers).
        margins: equivalence margin per metric (full or base name) on the metric's scale, or one for all;
            a metric without one is never called "equivalent".
        primary: metrics whose comparisons form the main Holm family (e.g. the headline metrics); the other
            comparisons form a second family. ``None``: one family of every comparison.

    Returns:
        JSON-serialisable dict (``nan`` -> ``None``)::

            {"level", "reference",
             "method": {"n_boot", "n_boot_ranking", "seed", "n_users", "n_seeds", "alpha", "families"},
             "models": {model: {metric: {"mean", "ci_low", "ci_high", "n", "n_missing", "level", "values",
                                         "interval", "n_boot", "se"}}},
             "comparisons": {f"{reference}_vs_{model}": {metric: {"mean", "ci_low", "ci_high", "n",
                 "n_missing", "level", "diffs", "interval", "n_boot", "p", "p_holm", "margin",
                 "p_equivalence", "p_equivalence_holm", "family", "decision", "verdict"}}}}

        ``mean`` is the mean over seeds of the metric on the observed test data; ``values`` / ``diffs`` are
        per seed; ``interval`` is ``"bootstrap"`` (percentile, users x seeds) or ``"logit-t"`` (seeds only);
        ``se`` is the replicates' standard deviation. ``decision`` is a code of :data:`DECISIONS`.
    """
    level = _level(level)
    alpha = round(1.0 - level, 12)  # 0.05, not 0.050000000000000044
    per_user, scores, per_seed = per_user or {}, scores or {}, per_seed or {}
    models = list(dict.fromkeys([*per_user, *scores, *per_seed]))
    others = _competitors(models, reference, competitors)
    n_seeds = _n_seeds(per_user, scores, per_seed)
    n_users, users = _user_axis(per_user, sample)
    n_boot_ranking = n_boot if n_boot_ranking is None else n_boot_ranking
    draws = Draws.draw(n_users, n_seeds, max(n_boot, n_boot_ranking), seed)

    reps: dict[str, dict[str, Replicates]] = {}
    for model, block in bootstrap_per_user(per_user, draws.head(n_boot), users).items():
        reps.setdefault(model, {}).update(block)
    if scores:
        if sample is None:
            raise ValueError("ranking scores need the EvalSample of test impressions and their users")
        ranked = bootstrap_ranking(scores, sample, draws.head(n_boot_ranking), gauc=gauc)
        for model, block in ranked.items():
            reps.setdefault(model, {}).update(block)
    out_models = {m: _model_block(reps.get(m, {}), per_seed.get(m, {}), level) for m in models}

    rows = {
        (other, metric): _comparison(
            metric, reps, per_seed, reference, other, level, _margin(metric, margins)
        )
        for other in others
        for metric in out_models[reference]
        if metric in out_models[other]
    }
    families = _correct_by_family(rows, primary, alpha)
    comparisons: dict[str, dict[str, Any]] = {f"{reference}_vs_{o}": {} for o in others}
    for (other, metric), row in rows.items():
        row["decision"], row["verdict"] = decide(
            diff=row["mean"],
            p_holm=row["p_holm"],
            p_equivalence_holm=row["p_equivalence_holm"],
            margin=row["margin"],
            alpha=alpha,
            higher_is_better=V.higher_is_better(metric),
            constant=row.pop("_constant"),
            reference=reference,
            other=other,
        )
        comparisons[f"{reference}_vs_{other}"][metric] = row

    method = {
        "n_boot": n_boot,
        "n_boot_ranking": n_boot_ranking,
        "seed": seed,
        "n_users": n_users,
        "n_seeds": n_seeds,
        "alpha": alpha,
        "families": families,
        "interval": "percentile bootstrap over test users and seeds (logit-t over seeds where marked)",
        "correction": "Holm over the comparisons of each family",
        "equivalence": "TOST within the metric's margin",
    }
    summary = {"level": level, "reference": reference, "method": method, "models": out_models}
    return jsonable(summary | {"comparisons": comparisons})


def _competitors(models: Sequence[str], reference: str, competitors: Sequence[str] | None) -> list[str]:
    """The models compared with ``reference``: ``competitors`` (checked), or every other model."""
    if reference not in models:
        raise ValueError(f"reference model {reference!r} has no metrics; models: {list(models)}")
    others = [m for m in models if m != reference] if competitors is None else list(competitors)
    unknown = [m for m in others if m not in models or m == reference]
    if unknown:
        raise ValueError(
            f"competitors {unknown} are not models other than {reference!r}; models: {list(models)}"
        )
    return others


def _user_axis(
    per_user: Mapping[str, Mapping[str, Any]], sample: EvalSample | None
) -> tuple[int, np.ndarray | None]:
    """How many users the bootstrap draws over, and where the retrieval population's users sit among them."""
    if sample is not None:
        return sample.n_users, sample.retrieval_users
    widths = {np.shape(x)[-1] for block in per_user.values() for x in block.values()}
    if len(widths) > 1:
        raise ValueError(f"per_user arrays have different numbers of users {sorted(widths)}; align them")
    return (widths.pop() if widths else 1), None


def _model_block(
    reps: Mapping[str, Replicates], per_seed: Mapping[str, Sequence[float]], level: float
) -> dict[str, Any]:
    """One model's metrics: bootstrap percentile intervals, then logit-t intervals of the seed-only metrics."""
    block: dict[str, Any] = {}
    for metric, r in reps.items():
        low, high = percentile_interval(r.draws, level)
        finite = np.isfinite(r.per_seed)
        block[metric] = {
            "mean": r.value,
            "ci_low": low,
            "ci_high": high,
            "n": int(finite.sum()),
            "n_missing": int((~finite).sum()),
            "level": level,
            "values": r.per_seed,
            "interval": "bootstrap",
            "n_boot": int(r.draws.size),
            "se": float(np.nanstd(r.draws, ddof=1)) if np.isfinite(r.draws).sum() > 1 else math.nan,
        }
    for metric, values in per_seed.items():
        if metric not in block:
            block[metric] = mean_ci(values, level, V.metric(metric).bounds) | {"n_boot": 0}
    return block


def _correct_by_family(
    rows: dict[tuple[str, str], dict[str, Any]], primary: Sequence[str] | None, alpha: float
) -> dict[str, int]:
    """Holm-correct the comparisons' p-values within each family (``primary`` metrics, the rest; or one
    family of all); sets each row's ``family``, ``p_holm`` and ``p_equivalence_holm``. Returns the number of
    tested comparisons per family."""
    primary_set = None if primary is None else set(primary)
    for key, row in rows.items():
        row["family"] = (
            "all" if primary_set is None else ("primary" if key[1] in primary_set else "secondary")
        )
    families: dict[str, int] = {}
    for family in sorted({row["family"] for row in rows.values()}):
        keys = [k for k, row in rows.items() if row["family"] == family]
        p_adj, _ = holm({k: rows[k]["p"] for k in keys}, alpha)
        eq_adj, _ = holm({k: rows[k]["p_equivalence"] for k in keys}, alpha)
        families[family] = sum(math.isfinite(rows[k]["p"]) for k in keys)
        for k in keys:
            rows[k]["p_holm"], rows[k]["p_equivalence_holm"] = p_adj[k], eq_adj[k]
    return families


def _n_seeds(*inputs: Mapping[str, Mapping[str, Any]]) -> int:
    """The one number of seeds of ``(per_user, scores, per_seed)``: rows of their arrays, length of lists."""
    per_user, scores, per_seed = inputs
    counts = {
        _seed_array(x, None, f"{what}[{model!r}][{metric!r}]").shape[0]
        for what, block in (("per_user", per_user), ("scores", scores))
        for model, metrics in block.items()
        for metric, x in metrics.items()
    }
    counts |= {len(x) for metrics in per_seed.values() for x in metrics.values()}
    if not counts:
        raise ValueError("nothing to summarise: per_user, scores and per_seed are all empty")
    if len(counts) != 1:
        raise ValueError(
            f"inputs have different numbers of seeds {sorted(counts)}; every model and metric needs the same "
            "seeds, in one order (a missing value is nan, not a shorter row)"
        )
    return counts.pop()


def _comparison(
    metric: str,
    reps: Mapping[str, Mapping[str, Replicates]],
    per_seed: Mapping[str, Mapping[str, Sequence[float]]],
    reference: str,
    other: str,
    level: float,
    margin: float | None,
) -> dict[str, Any]:
    """One row of the comparisons, before correction: interval, p-values and what :func:`decide` needs."""
    a, b = reps.get(reference, {}).get(metric), reps.get(other, {}).get(metric)
    if a is not None and b is not None:
        d = a.draws - b.draws
        diffs = a.per_seed - b.per_seed
        low, high = percentile_interval(d, level)
        finite = np.isfinite(diffs)
        zero = bool(np.isfinite(d).any() and (d[np.isfinite(d)] == 0).all() and a.value - b.value == 0)
        row = {
            "mean": a.value - b.value,
            "ci_low": low,
            "ci_high": high,
            "n": int(finite.sum()),
            "n_missing": int((~finite).sum()),
            "level": level,
            "diffs": diffs,
            "interval": "bootstrap",
            "n_boot": int(d.size),
            "p": bootstrap_p(d),
            "margin": margin,
            "p_equivalence": equivalence_p(d, margin) if margin else math.nan,
            "_constant": (_constant(np.r_[a.draws, a.value]), _constant(np.r_[b.draws, b.value]))
            if zero
            else None,
        }
        return row
    # Seed-only: at least one side has no per-user values; a bootstrapped side gives its per-seed values.
    va = a.per_seed if a is not None else np.asarray(per_seed[reference][metric], dtype=np.float64)
    vb = b.per_seed if b is not None else np.asarray(per_seed[other][metric], dtype=np.float64)
    row = paired_diff(va, vb, level, V.metric(metric).bounds)
    diffs = np.asarray(row["diffs"])
    finite = diffs[np.isfinite(diffs)]
    zero = bool(finite.size and (finite == 0).all())
    both = np.isfinite(va) & np.isfinite(vb)
    return row | {
        "n_boot": 0,
        "p": t_test_p(diffs),
        "margin": margin,
        "p_equivalence": t_equivalence_p(diffs, margin) if margin else math.nan,
        "_constant": (_constant(va[both]), _constant(vb[both])) if zero else None,
    }
