"""Statistics of docs/protocol.md section 4: intervals, paired differences and corrected verdicts.

Two levels, one vocabulary of outputs (``mean``, ``ci_low``, ``ci_high``, ``n``, ``values`` / ``diffs``,
``verdict``):

- **Seed statistics** (:func:`mean_ci`, :func:`paired_diff`, :func:`summarise`): a Student-t interval over
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

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from scipy import sparse, special
from scipy import stats as st

from dmtl import vocab as V
from dmtl.io import jsonable
from dmtl.metrics import binary_labels, per_group_auc

K = TypeVar("K", bound=Hashable)

LOGIT_EPS = 1e-6
"""Values at a bound are moved this far inside (as a share of the range) before the logit."""


def _level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


# ------------------------------------------------------------------------------------- seed statistics
def _t_interval(x: np.ndarray, level: float) -> tuple[float, float, float, float]:
    """(mean, sd, low, high) of finite ``x``; bounds are nan with fewer than two values."""
    n = x.size
    if n == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, math.nan
    sd = float(x.std(ddof=1))
    half = float(st.t.ppf(0.5 + level / 2.0, df=n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def _check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite (low, high) with low < high, got {bounds}")
    return lo, hi


def difference_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    """The range of a difference of two values in ``bounds``: ``(low - high, high - low)``."""
    lo, hi = _check_bounds(bounds)
    return lo - hi, hi - lo


def bounded_t_interval(
    x: np.ndarray | Sequence[float], level: float, bounds: tuple[float, float]
) -> tuple[float, float]:
    """Student-t interval on the logit scale of ``bounds``, mapped back: it never leaves ``bounds``.

    ``z = (x - low) / (high - low)`` is moved at most :data:`LOGIT_EPS` inside (0, 1), the t interval
    ``mean(logit z) +- t_{n-1} sd(logit z) / sqrt(n)`` is computed and mapped back through the inverse.
    All values equal gives the point interval ``[x, x]``; fewer than two values give ``(nan, nan)``.

    Args:
        x: finite values, one per seed, each inside ``bounds``.
        level: confidence level.
        bounds: ``(low, high)`` range of the metric (:attr:`dmtl.vocab.Metric.bounds`).
    """
    level = _level(level)
    lo, hi = _check_bounds(bounds)
    v = np.asarray(x, dtype=np.float64).ravel()
    if v.size < 2:
        return math.nan, math.nan
    if (v < lo).any() or (v > hi).any():
        raise ValueError(
            f"values {v.min():.6g}..{v.max():.6g} lie outside the bounds {bounds}; pass the metric's own "
            "bounds (dmtl.vocab.metric(name).bounds, or difference_bounds of them for a difference)"
        )
    if (v == v[0]).all():
        return float(v[0]), float(v[0])
    z = special.logit(np.clip((v - lo) / (hi - lo), LOGIT_EPS, 1.0 - LOGIT_EPS))
    _, _, zl, zh = _t_interval(z, level)
    return lo + (hi - lo) * float(special.expit(zl)), lo + (hi - lo) * float(special.expit(zh))


def mean_ci(
    values: Sequence[float] | np.ndarray, level: float = 0.95, bounds: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Mean over seeds with a two-sided Student-t confidence interval.

    Args:
        values: one value per seed; ``nan`` seeds are ignored (and counted in ``n_missing``).
        level: confidence level.
        bounds: the metric's range; when given, the interval is :func:`bounded_t_interval` (logit scale) and
            stays inside it. ``None`` keeps the plain t interval (unbounded quantities such as a loss).

    Returns:
        ``{"mean", "sd", "ci_low", "ci_high", "n", "n_missing", "level", "values", "interval"}``; ``mean +-
        t_{n-1} * sd / sqrt(n)`` (``interval == "t"``) or its logit-scale twin (``"logit-t"``). With one
        finite value the bounds are ``nan``; with none the mean is too.
    """
    level = _level(level)
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = v[np.isfinite(v)]
    mean, sd, low, high = _t_interval(finite, level)
    if bounds is not None:
        low, high = bounded_t_interval(finite, level, bounds)
    return {
        "mean": mean,
        "sd": sd,
        "ci_low": low,
        "ci_high": high,
        "n": int(finite.size),
        "n_missing": int(v.size - finite.size),
        "level": level,
        "values": [float(x) for x in v],
        "interval": "t" if bounds is None else "logit-t",
    }


def paired_diff(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    level: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Paired difference ``a - b`` over seeds with a Student-t interval.

    Pairing by seed removes the variance both models share through the seed (same data order and
    initialisation stream), which is why docs/protocol.md section 4 compares models this way.

    Args:
        a: per-seed values of the reference model, in seed order.
        b: per-seed values of the competitor, same seeds in the same order.
        level: confidence level.
        bounds: the *metric's* range; when given, the interval is the logit-scale t interval on the
            difference's range :func:`difference_bounds` (e.g. [-1, 1] for a metric in [0, 1]).

    Returns:
        ``{"mean", "sd", "ci_low", "ci_high", "n", "n_missing", "level", "diffs", "interval"}`` over seeds
        where both values are finite.
    """
    level = _level(level)
    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"paired values need one value per seed on both sides, got {va.size} and {vb.size}")
    d = va - vb
    finite = d[np.isfinite(d)]
    mean, sd, low, high = _t_interval(finite, level)
    if bounds is not None:
        low, high = bounded_t_interval(finite, level, difference_bounds(bounds))
    return {
        "mean": mean,
        "sd": sd,
        "ci_low": low,
        "ci_high": high,
        "n": int(finite.size),
        "n_missing": int(d.size - finite.size),
        "level": level,
        "diffs": [float(x) for x in d],
        "interval": "t" if bounds is None else "logit-t",
    }


def verdict(
    diff: Mapping[str, Any], higher_is_better: bool, name_a: str = "dmtl", name_b: str = "competitor"
) -> str:
    """Plain-words reading of a :func:`paired_diff`; a claim only when the interval excludes zero.

    Uncorrected for multiplicity: :func:`bootstrap_summary` gives Holm-corrected verdicts.

    Args:
        diff: output of ``paired_diff(a, b)``.
        higher_is_better: direction of the metric (False for e.g. ``bait_share@K``).
        name_a: the model of ``a``.
        name_b: the model of ``b``.

    Returns:
        ``"<a> better than <b>"``, ``"<a> worse than <b>"``, ``"no difference: identical in every seed"``
        (a ``[0, 0]`` interval: every paired difference is exactly zero), ``"no significant difference"``,
        or ``"undetermined (n=<n> paired seeds)"`` when fewer than two paired seeds leave no interval.
    """
    low, high = diff.get("ci_low"), diff.get("ci_high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"undetermined (n={diff.get('n', 0)} paired seeds)"
    if low == 0.0 and high == 0.0 and diff.get("mean") == 0.0:
        return "no difference: identical in every seed"
    if low > 0:
        a_higher = True
    elif high < 0:
        a_higher = False
    else:
        return "no significant difference"
    return f"{name_a} {'better' if a_higher == higher_is_better else 'worse'} than {name_b}"


def _direction(metric: str, higher_is_better: Mapping[str, bool]) -> bool:
    """Look up a metric's direction by its full name, then by its name before '@' (``recall_long@50``)."""
    for key in (metric, metric.split("@")[0], metric.split("@")[0] + "@K"):
        if key in higher_is_better:
            return bool(higher_is_better[key])
    raise ValueError(
        f"no direction for metric {metric!r} in higher_is_better; give it by full name or by its prefix "
        f"before '@' (known: {sorted(higher_is_better)})"
    )


def summarise(
    per_seed: Mapping[str, Mapping[str, Sequence[float]]],
    reference: str = "dmtl",
    higher_is_better: Mapping[str, bool] | None = None,
    level: float = 0.95,
) -> dict[str, Any]:
    """Every model's mean and interval, and the reference's paired difference with every other model.

    Seed-only t intervals, uncorrected verdicts: :func:`bootstrap_summary` is the study's summary when
    per-user values and test scores are at hand; this one remains for numbers with one value per seed.

    Args:
        per_seed: ``{model: {metric: [value per seed, in one seed order shared by all models]}}``.
        reference: the model every other one is compared with.
        higher_is_better: direction per metric, by full name (``"bait_share@50"``) or prefix before '@'
            (``"bait_share"``); required for every metric the reference shares with another model.
        level: confidence level.

    Returns:
        JSON-serialisable dict (``nan`` -> ``None``)::

            {"level": .., "reference": ..,
             "models": {model: {metric: mean_ci(...)}},
             "comparisons": {f"{reference}_vs_{model}": {metric: paired_diff(...) | {"verdict": str}}}}

        Comparisons cover the metrics both models have (the teacher has no retrieval metrics).
    """
    if reference not in per_seed:
        raise ValueError(f"reference model {reference!r} not in per_seed; models: {sorted(per_seed)}")
    higher_is_better = higher_is_better or {}
    models = {m: {k: mean_ci(v, level) for k, v in metrics.items()} for m, metrics in per_seed.items()}
    comparisons: dict[str, dict[str, Any]] = {}
    ref = per_seed[reference]
    for model, metrics in per_seed.items():
        if model == reference:
            continue
        block: dict[str, Any] = {}
        for metric in (k for k in ref if k in metrics):
            if len(ref[metric]) != len(metrics[metric]):
                raise ValueError(
                    f"{metric}: {reference} has {len(ref[metric])} seeds but {model} has "
                    f"{len(metrics[metric])}; paired differences need the same seeds"
                )
            d = paired_diff(ref[metric], metrics[metric], level)
            d["verdict"] = verdict(d, _direction(metric, higher_is_better), reference, model)
            block[metric] = d
        comparisons[f"{reference}_vs_{model}"] = block
    return jsonable({"level": level, "reference": reference, "models": models, "comparisons": comparisons})


# ----------------------------------------------------------------------------------- bootstrap draws
@dataclass(frozen=True)
class Draws:
    """B bootstrap replicates of the test users and of the training seeds, drawn once for a dataset.

    Every model, seed and metric is evaluated on the same draws, so differences between models are paired.

    Attributes:
        users: ``(B, n_users)`` multiplicity of each test user in each replicate (a multinomial draw of
            ``n_users`` users with replacement: each row sums to ``n_users``).
        seeds: ``(B, n_seeds)`` multiplicity of each training seed in each replicate (rows sum to
            ``n_seeds``).
    """

    users: np.ndarray
    seeds: np.ndarray

    @classmethod
    def draw(cls, n_users: int, n_seeds: int, n_boot: int, seed: int) -> Draws:
        """``n_boot`` replicates from ``np.random.default_rng(seed)``: users first, then seeds."""
        if n_users < 1 or n_seeds < 1 or n_boot < 1:
            raise ValueError(f"need n_users, n_seeds, n_boot >= 1, got {n_users}, {n_seeds}, {n_boot}")
        rng = np.random.default_rng(seed)
        users = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=n_boot).astype(np.int32)
        seeds = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot).astype(np.int32)
        return cls(users, seeds)

    @property
    def n_boot(self) -> int:
        return int(self.users.shape[0])

    def head(self, n_boot: int) -> Draws:
        """The first ``n_boot`` replicates (a cheaper metric resampled fewer times, on the same draws)."""
        if not 1 <= n_boot <= self.n_boot:
            raise ValueError(f"n_boot must be in [1, {self.n_boot}], got {n_boot}")
        return Draws(self.users[:n_boot], self.seeds[:n_boot])


def _with_observed(weights: np.ndarray) -> np.ndarray:
    """Row 0 = the observed sample (every unit once), rows 1.. = the replicates."""
    w = np.asarray(weights)
    return np.vstack([np.ones((1, w.shape[1]), dtype=w.dtype), w])


@dataclass(frozen=True)
class Replicates:
    """One model's metric on the observed data and on every bootstrap replicate.

    Attributes:
        per_seed: ``(n_seeds,)`` the metric on the observed test data, per seed (``nan`` = undefined).
        value: the reported number: the mean of ``per_seed`` over its finite seeds.
        draws: ``(B,)`` the replicate distribution of ``value``.
    """

    per_seed: np.ndarray
    value: float
    draws: np.ndarray


def seed_means(per_seed: np.ndarray, seed_weights: np.ndarray) -> np.ndarray:
    """Mean over drawn seeds: ``sum_s m_s x_s / sum_s m_s`` over finite ``x_s``, for every row.

    Args:
        per_seed: ``(R, ..., n_seeds)`` values, one per row (replicate) and seed.
        seed_weights: ``(R, n_seeds)`` multiplicity of each seed in each row.

    Returns:
        ``(R, ...)``; ``nan`` where no drawn seed has a finite value.
    """
    x = np.asarray(per_seed, dtype=np.float64)
    m = np.asarray(seed_weights, dtype=np.float64)
    m = m.reshape(m.shape[0], *([1] * (x.ndim - 2)), m.shape[1])
    ok = np.isfinite(x)
    w = np.where(ok, m, 0.0)
    num = (w * np.where(ok, x, 0.0)).sum(axis=-1)
    den = w.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def user_weighted_means(
    values: np.ndarray, user_weights: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Weighted means over users for every row of multiplicities, as two matrix products.

    ``mean_r = sum_u m_ru a_u x_u / sum_u m_ru a_u`` over users with finite ``x_u``: with ``a = 1`` the
    user-weighted mean of a per-user metric on a resampled user set (a user drawn twice counts twice),
    with ``a_u`` = the user's impressions the impression-weighted mean of :func:`dmtl.metrics.gauc`.

    Args:
        values: ``(n_users,)`` or ``(C, n_users)`` per-user values; ``nan`` = the user does not count.
        user_weights: ``(R, n_users)`` multiplicities (one row per replicate; all ones = the observed data).
        weights: ``a``: ``(n_users,)`` or the shape of ``values``; default 1.

    Returns:
        ``(R,)`` or ``(R, C)``; ``nan`` where no counted user has weight.
    """
    x = np.asarray(values, dtype=np.float64)
    one = x.ndim == 1
    x = np.atleast_2d(x)
    w = np.asarray(user_weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != x.shape[1]:
        raise ValueError(f"user_weights must be (R, n_users={x.shape[1]}), got {w.shape}")
    ok = np.isfinite(x)
    if weights is None:
        num = w @ np.where(ok, x, 0.0).T
        den_cols = ok.astype(np.float64)
    else:
        a = np.broadcast_to(np.asarray(weights, dtype=np.float64), x.shape)
        num = w @ np.where(ok, a * x, 0.0).T
        den_cols = np.where(ok, a, 0.0)
    # Metrics of one population share their denominator (e.g. recall_long@K of every model and seed counts
    # the users with a long read): one product per distinct column.
    first: dict[bytes, int] = {}
    column = np.array([first.setdefault(row.tobytes(), len(first)) for row in den_cols])
    _, first_row = np.unique(column, return_index=True)  # ids number the distinct columns in order
    den = (w @ den_cols[first_row].T)[:, column]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / den, np.nan)
    return out[:, 0] if one else out


def _seed_array(values: Any, n_cols: int | None, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or (n_cols is not None and x.shape[1] != n_cols):
        raise ValueError(f"{what} must be (n_seeds, {n_cols or 'n'}): one row per seed, got shape {x.shape}")
    return x


def bootstrap_per_user(
    per_user: Mapping[str, Mapping[str, Any]], draws: Draws, users: np.ndarray | None = None
) -> dict[str, dict[str, Replicates]]:
    """Hierarchical bootstrap of per-user metrics (retrieval: ``recall_long@K``, ``bait_share@K``, ...).

    Replicate ``b`` of model ``M``: ``sum_s S_bs mean_b(M, s) / sum_s S_bs`` with ``S`` the seed draw and
    ``mean_b(M, s) = sum_u W_bu x_Msu / sum_u W_bu`` over users with finite ``x_Msu`` (the user draw ``W``
    shared by every model and seed). All columns go through one matrix product per denominator.

    Args:
        per_user: ``{model: {metric: (n_seeds, n) per-user values}}``; rows in one seed order shared by all
            models, columns the same users in the same order for every model, seed and metric.
        draws: the replicates (``draws.seeds`` has ``n_seeds`` columns).
        users: positions on the user axis of ``draws.users`` of the ``n`` columns (the retrieval population
            inside all test users); default: the columns are the whole axis.

    Returns:
        ``{model: {metric: Replicates}}``.
    """
    w_users = _with_observed(draws.users)
    if users is not None:
        w_users = w_users[:, np.asarray(users)]
    n_cols = w_users.shape[1]
    n_seeds = draws.seeds.shape[1]
    keys = [(model, metric) for model, block in per_user.items() for metric in block]
    if not keys:
        return {}
    blocks = []
    for model, metric in keys:
        x = _seed_array(per_user[model][metric], n_cols, f"per_user[{model!r}][{metric!r}]")
        if x.shape[0] != n_seeds:
            raise ValueError(
                f"per_user[{model!r}][{metric!r}] has {x.shape[0]} seeds but the draws have {n_seeds}; "
                "every model needs the same seeds, in the same order"
            )
        blocks.append(x)
    means = user_weighted_means(np.concatenate(blocks), w_users)  # (R, keys * n_seeds)
    means = means.reshape(means.shape[0], len(keys), n_seeds)
    values = seed_means(means, _with_observed(draws.seeds))  # (R, keys)
    out: dict[str, dict[str, Replicates]] = {}
    for i, (model, metric) in enumerate(keys):
        out.setdefault(model, {})[metric] = Replicates(means[0, i], float(values[0, i]), values[1:, i])
    return out


# ----------------------------------------------------------------------------------------- ranking
def _check_impressions(labels: Any, scores: Any, user: Any, n_users: int) -> tuple[np.ndarray, ...]:
    y = binary_labels(labels, "labels")
    s = np.asarray(scores, dtype=np.float64)
    u = np.asarray(user)
    if s.shape != y.shape or u.shape != y.shape:
        raise ValueError(f"labels, scores and user must have one length, got {y.shape}, {s.shape}, {u.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} non-finite scores; scores must be finite")
    if not np.issubdtype(u.dtype, np.integer) or (u.size and (u.min() < 0 or u.max() >= n_users)):
        raise ValueError(f"user must be integer positions on the user axis [0, {n_users})")
    return y, s, u.astype(np.int64, copy=False)


def _auc_rows(
    y: np.ndarray, s: np.ndarray, u: np.ndarray, wt: np.ndarray, budget: int = 1 << 22
) -> np.ndarray:
    """Weighted Mann-Whitney AUC for every column of ``wt`` (``(n_users, R)`` user multiplicities).

    With ``w_i`` the multiplicity of impression i's user, ``AUC = sum_{i pos, j neg} w_i w_j ([s_i > s_j] +
    [s_i = s_j] / 2) / (sum_pos w)(sum_neg w)``: the AUC of the data set in which every user's impressions
    appear as often as the user was drawn. One sort: the larger class ("big") is sorted by score; each
    impression of the other ("small") class cuts it at the left and right end of its tie run (``lo``,
    ``hi``), and those cuts split it into segments. Two sparse products with ``wt`` give, in every replicate,
    the weight of each segment and the small-class weight sitting at each cut; the running sum of the first
    is the big-class weight below each cut, so ``sum_small w_i (2 below_i + tied_i) = sum_cuts (small weight
    at the cut) x (big weight below it)`` with each small impression counted at both its cuts. Every sum is
    of integers, exact in float32 below 2^24 and in float64 below 2^53. Cost per replicate: a pass over the
    impressions inside the sparse products and a few over the cuts.
    """
    n_users, n_rows = wt.shape
    pos = y == 1
    p_w = np.bincount(u[pos], minlength=n_users).astype(np.float64) @ wt
    n_w = np.bincount(u[~pos], minlength=n_users).astype(np.float64) @ wt
    out = np.full(n_rows, np.nan)
    if not pos.any() or pos.all():
        return out
    flip = int(pos.sum()) > int((~pos).sum())  # cut the larger class: the sparse product is the cheap pass
    small = ~pos if flip else pos
    big_s, big_u = s[~small], u[~small]
    order = np.argsort(big_s)  # order inside a tie run is irrelevant: cuts fall at run ends
    big_s, big_u = big_s[order], big_u[order]
    small_s, small_u = s[small], u[small]
    lo = np.searchsorted(big_s, small_s, side="left")  # big-class impressions scored below
    hi = np.searchsorted(big_s, small_s, side="right")  # ... below or tied
    cuts = np.unique(np.concatenate(([0, big_s.size], lo, hi)))
    # Running sums of counts are exact in float32 below 2^24 (and it halves the memory traffic).
    dtype = np.float32 if max(p_w.max(), n_w.max()) < 2**24 else np.float64
    segments = sparse.csr_matrix((np.ones(big_s.size, dtype), big_u, cuts), shape=(cuts.size - 1, n_users))
    at_cut = sparse.csr_matrix(
        (np.ones(2 * small_u.size, dtype), (np.searchsorted(cuts, np.r_[lo, hi]), np.r_[small_u, small_u])),
        shape=(cuts.size, n_users),
    )
    twice_below = np.empty(n_rows)
    step = max(1, budget // cuts.size)
    for c0 in range(0, n_rows, step):
        w = np.ascontiguousarray(wt[:, c0 : c0 + step], dtype=dtype)
        below = np.zeros((cuts.size, w.shape[1]), dtype=dtype)
        below[1:] = segments @ w
        np.cumsum(below, axis=0, out=below)  # below[k] = weight of big_s[:cuts[k]]
        # The products reach (total weight)^2: summed in float64, exact below 2^53.
        twice_below[c0 : c0 + step] = np.einsum(
            "kj,kj->j", at_cut @ w, below, dtype=np.float64, casting="unsafe"
        )
    pairs2 = 2.0 * p_w * n_w
    if flip:  # the share of pairs the small (negative) class wins; integers, so the subtraction is exact
        twice_below = pairs2 - twice_below
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = twice_below / pairs2
    ok = (p_w > 0) & (n_w > 0)
    out[ok] = auc[ok]
    return out


def bootstrap_auc(
    labels: np.ndarray | Sequence,
    scores: np.ndarray | Sequence,
    user: np.ndarray | Sequence,
    user_weights: np.ndarray,
) -> np.ndarray:
    """AUC of every user-resampled replicate from one sort of the scores (ties counted half).

    Replicate r equals :func:`dmtl.metrics.auc` on the data set in which each user's impressions are
    repeated ``user_weights[r, user]`` times (see ``_auc_rows`` for the algorithm).

    Args:
        labels: 0/1 per impression, shape ``(n,)``.
        scores: finite scores, shape ``(n,)``.
        user: each impression's position on the user axis, shape ``(n,)``.
        user_weights: ``(R, n_users)`` integer multiplicities (a row of ones = the observed data).

    Returns:
        ``(R,)`` AUCs; ``nan`` in a replicate that draws only one class.
    """
    w = np.asarray(user_weights)
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.integer) or (w.size and w.min() < 0):
        raise ValueError(
            f"user_weights must be a 2-D array of integer multiplicities >= 0, got {w.dtype} {w.shape}"
        )
    y, s, u = _check_impressions(labels, scores, user, w.shape[1])
    return _auc_rows(y, s, u, np.ascontiguousarray(w.T))


def _per_user_auc(y: np.ndarray, s: np.ndarray, u: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's AUC (``nan`` with one class) and impression count, on the whole user axis."""
    keys, aucs, n_rows = per_group_auc(y, s, u)
    auc_u = np.full(n_users, np.nan)
    n_u = np.zeros(n_users)
    auc_u[keys] = aucs
    n_u[keys] = n_rows
    return auc_u, n_u


def bootstrap_gauc(
    labels: np.ndarray | Sequence,
    scores: np.ndarray | Sequence,
    user: np.ndarray | Sequence,
    user_weights: np.ndarray,
) -> np.ndarray:
    """GAUC of every user-resampled replicate: ``sum_u m_u n_u AUC_u / sum_u m_u n_u`` over two-class users.

    A user drawn m times enters m times with the same AUC and impression count, so this equals
    :func:`dmtl.metrics.gauc` on the explicitly resampled data (copies as distinct groups or as one).

    Args:
        labels, scores, user: as :func:`bootstrap_auc`.
        user_weights: ``(R, n_users)`` multiplicities.

    Returns:
        ``(R,)``; ``nan`` where no drawn user has both classes.
    """
    w = np.asarray(user_weights)
    y, s, u = _check_impressions(labels, scores, user, w.shape[1])
    auc_u, n_u = _per_user_auc(y, s, u, w.shape[1])
    return user_weighted_means(auc_u, w, weights=n_u)


@dataclass(frozen=True)
class EvalSample:
    """The test data the bootstrap resamples: the test users (the unit) and their test impressions.

    Attributes:
        n_users: size of the user axis: every test user (with at least one test impression).
        impression_user: ``(n_imp,)`` each test impression's position on the user axis.
        click: ``(n_imp,)`` y_c.
        long_read: ``(n_imp,)`` y_d (only its value on clicked impressions matters).
        retrieval_users: ``(n_ret,)`` positions on the user axis of the rows of the per-user retrieval
            arrays (the retrieval population, in its row order); ``None``: those rows are the whole axis.
    """

    n_users: int
    impression_user: np.ndarray
    click: np.ndarray
    long_read: np.ndarray
    retrieval_users: np.ndarray | None = None

    def __post_init__(self) -> None:
        u = np.asarray(self.impression_user)
        if (
            u.ndim != 1
            or not np.issubdtype(u.dtype, np.integer)
            or (u.size and (u.min() < 0 or u.max() >= self.n_users))
        ):
            raise ValueError(f"impression_user must be 1-D integer positions in [0, {self.n_users})")
        for name in ("click", "long_read"):
            if np.shape(getattr(self, name)) != u.shape:
                raise ValueError(
                    f"{name} must have one value per impression ({u.size}), "
                    f"got {np.shape(getattr(self, name))}"
                )
        r = self.retrieval_users
        if r is not None:
            r = np.asarray(r)
            if (
                r.ndim != 1
                or not np.issubdtype(r.dtype, np.integer)
                or (r.size and (r.min() < 0 or r.max() >= self.n_users))
            ):
                raise ValueError(f"retrieval_users must be 1-D integer positions in [0, {self.n_users})")

    def ranking_tasks(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{task: (rows, labels)}``: the impressions each ranking task scores and their labels
        (docs/protocol.md section 4: ``auc_click`` and ``auc_ctcvr`` over all impressions, ``auc_cvr``
        among clicked ones)."""
        y_c = binary_labels(self.click, "click")
        y_d = binary_labels(self.long_read, "long_read")
        every = np.ones(y_c.size, dtype=bool)
        return {"click": (every, y_c), "ctcvr": (every, y_c * y_d), "cvr": (y_c == 1, y_d)}


def bootstrap_ranking(
    scores: Mapping[str, Mapping[str, Any]], sample: EvalSample, draws: Draws, gauc: bool = True
) -> dict[str, dict[str, Replicates]]:
    """Hierarchical bootstrap of the ranking metrics: AUC (and GAUC) per replicate, then the seed mean.

    Args:
        scores: ``{model: {task: (n_seeds, n_imp) scores}}`` with task in ``click``, ``ctcvr``, ``cvr``
            (as :attr:`dmtl.evaluation.Evaluation.test_scores`); every test impression scored (``cvr`` reads
            the clicked ones). A two-tower model scores every task with one array; the teacher each with
            its own head.
        sample: the test impressions and their users.
        draws: the replicates (user axis = ``sample.n_users``).
        gauc: also the ``gauc_<task>`` twin of each ``auc_<task>``.

    Returns:
        ``{model: {"auc_<task>" | "gauc_<task>": Replicates}}``.
    """
    if draws.users.shape[1] != sample.n_users:
        raise ValueError(f"draws cover {draws.users.shape[1]} users but the sample has {sample.n_users}")
    w_users = _with_observed(draws.users)
    wt = np.ascontiguousarray(w_users.T)
    w_seeds = _with_observed(draws.seeds)
    n_seeds = draws.seeds.shape[1]
    tasks = sample.ranking_tasks()
    u_all = np.asarray(sample.impression_user).astype(np.int64)
    out: dict[str, dict[str, Replicates]] = {}
    gauc_keys: list[tuple[str, str]] = []
    gauc_auc: list[np.ndarray] = []
    gauc_n: list[np.ndarray] = []
    for model, block in scores.items():
        for task, arr in block.items():
            if task not in tasks:
                raise ValueError(f"scores[{model!r}] has {task!r}; ranking tasks are {sorted(tasks)}")
            rows, labels = tasks[task]
            x = _seed_array(arr, u_all.size, f"scores[{model!r}][{task!r}]")
            if x.shape[0] != n_seeds:
                raise ValueError(f"scores[{model!r}][{task!r}] has {x.shape[0]} seeds, the draws {n_seeds}")
            y, u = labels[rows], u_all[rows]
            per_seed = np.empty((w_users.shape[0], n_seeds))
            for k in range(n_seeds):
                s = x[k, rows]
                if not np.isfinite(s).all():
                    raise ValueError(f"scores[{model!r}][{task!r}] seed row {k} has non-finite scores")
                per_seed[:, k] = _auc_rows(y, s, u, wt)
                if gauc:
                    a, n = _per_user_auc(y, s, u, sample.n_users)
                    gauc_auc.append(a)
                    gauc_n.append(n)
            if gauc:
                gauc_keys.append((model, f"gauc_{task}"))
            values = seed_means(per_seed, w_seeds)
            out.setdefault(model, {})[f"auc_{task}"] = Replicates(per_seed[0], float(values[0]), values[1:])
    if gauc_keys:
        means = user_weighted_means(np.array(gauc_auc), w_users, weights=np.array(gauc_n))
        means = means.reshape(means.shape[0], len(gauc_keys), n_seeds)
        values = seed_means(means, w_seeds)
        for i, (model, metric) in enumerate(gauc_keys):
            out[model][metric] = Replicates(means[0, i], float(values[0, i]), values[1:, i])
    return out


# ------------------------------------------------------------------------------- intervals and tests
def percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """Equal-tailed percentile interval of a replicate distribution (``nan`` replicates left out).

    Its ends are (interpolations between) replicate values, so it lies inside any range the replicates lie
    in: a metric in [0, 1] gets an interval in [0, 1], a difference of two such an interval in [-1, 1].
    """
    level = _level(level)
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(d, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference" (the achieved significance level of the percentile
    interval, Efron & Tibshirani 1993, ch. 16): ``min(1, 2 min(#{d* <= 0}, #{d* >= 0}) / B)``.

    Replicates equal to zero count on both sides, so a difference that is zero in every replicate has
    p = 1. The resolution is 1/B: p = 0 means fewer than one replicate in B on the other side of zero.
    ``nan`` without a finite replicate.
    """
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    return min(1.0, 2.0 * min(int((d <= 0).sum()), int((d >= 0).sum())) / d.size)


def equivalence_p(diffs: np.ndarray, margin: float) -> float:
    """Bootstrap TOST p-value of "equivalent within +-margin" (Schuirmann 1987 two one-sided tests).

    ``max(#{d* <= -margin}, #{d* >= margin}) / B``: small when the replicate distribution lies inside
    (-margin, margin); equivalence at level alpha <=> the (1 - 2 alpha) percentile interval inside it.
    ``nan`` without a finite replicate.
    """
    if not margin > 0:
        raise ValueError(f"an equivalence margin must be > 0, got {margin}")
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return math.nan
    return max(int((d <= -margin).sum()), int((d >= margin).sum())) / d.size


def t_test_p(diffs: Sequence[float] | np.ndarray) -> float:
    """Two-sided paired t-test p-value over seeds (finite differences); the seed-only fallback.

    ``nan`` with fewer than two; all differences equal: 1 if they are 0, else 0 (no spread at all)."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return math.nan
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return 1.0 if d[0] == 0.0 else 0.0
    t = abs(float(d.mean())) / (sd / math.sqrt(d.size))
    return float(2.0 * st.t.sf(t, df=d.size - 1))


def t_equivalence_p(diffs: Sequence[float] | np.ndarray, margin: float) -> float:
    """TOST p-value over seeds: the larger of the one-sided t p-values of ``d <= -margin`` and
    ``d >= margin`` (Schuirmann 1987). ``nan`` with fewer than two finite differences."""
    if not margin > 0:
        raise ValueError(f"an equivalence margin must be > 0, got {margin}")
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return math.nan
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size)
    if se == 0.0:
        return 0.0 if abs(mean) < margin else 1.0
    p_low = st.t.sf((mean + margin) / se, df=d.size - 1)
    p_high = st.t.cdf((mean - margin) / se, df=d.size - 1)
    return float(max(p_low, p_high))


def holm(pvalues: Mapping[K, float], alpha: float = 0.05) -> tuple[dict[K, float], set[K]]:
    """Holm-Bonferroni step-down correction of a family of p-values (Holm 1979).

    With the m finite p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted values are
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``; a hypothesis is rejected when its adjusted p is <= alpha,
    which controls the family-wise error rate at alpha. ``nan`` p-values are not tested (adjusted ``nan``,
    never rejected) and do not count in m.

    Returns:
        ``(adjusted, rejected)``: adjusted p-value per key, and the keys rejected at ``alpha``.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    keys = [k for k, p in pvalues.items() if p is not None and math.isfinite(p)]
    adjusted: dict[K, float] = {k: math.nan for k in pvalues}
    if not keys:
        return adjusted, set()
    p = np.array([float(pvalues[k]) for k in keys])
    order = np.argsort(p, kind="stable")
    m = p.size
    adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    for k, v in zip((keys[i] for i in order), adj, strict=True):
        adjusted[k] = float(v)
    return adjusted, {k for k in keys if adjusted[k] <= alpha}


DECISIONS = ("better", "worse", "equivalent", "no_difference", "not_enough_evidence", "undetermined")
"""Codes of :func:`decide`, one per kind of verdict."""


def decide(
    *,
    diff: float,
    p_holm: float,
    p_equivalence_holm: float,
    margin: float | None,
    alpha: float,
    higher_is_better: bool,
    constant: tuple[float | None, float | None] | None,
    reference: str,
    other: str,
) -> tuple[str, str]:
    """The verdict on ``reference - other``: a decision code of :data:`DECISIONS` and its words.

    In order: no finite difference -> ``undetermined``; a difference that is exactly zero in every
    replicate -> ``no_difference`` ("no difference: both <v>" when both models are the constant v, e.g. both
    retrieve no bait at all, else "no difference: identical in every replicate"); Holm-adjusted
    difference p <= alpha -> ``better`` / ``worse`` by the sign of ``diff`` and the metric's direction;
    Holm-adjusted TOST p <= alpha -> ``equivalent`` ("equivalent within ±margin"); else
    ``not_enough_evidence``. A zero-width interval never reads as "no significant difference".

    Args:
        diff: the observed difference ``reference - other``.
        p_holm: Holm-adjusted two-sided p of the difference.
        p_equivalence_holm: Holm-adjusted TOST p (``nan`` without a margin).
        margin: the equivalence margin, or ``None``.
        alpha: significance level (``1 - level``).
        higher_is_better: the metric's direction.
        constant: ``None`` when the difference is not zero in every replicate; else the constant value of
            each model (``None`` for a model that is not constant).
        reference: name of the reference model.
        other: name of the competitor.
    """
    if constant is not None:
        a, b = constant
        if a is not None and a == b:
            return "no_difference", f"no difference: both {a:g}"
        return "no_difference", "no difference: identical in every replicate"
    if not math.isfinite(diff):
        return "undetermined", "undetermined (no finite difference)"
    if math.isfinite(p_holm) and p_holm <= alpha and diff != 0.0:
        better = (diff > 0) == higher_is_better
        return (
            ("better", f"{reference} better than {other}")
            if better
            else ("worse", f"{reference} worse than {other}")
        )
    if margin is not None and math.isfinite(p_equivalence_holm) and p_equivalence_holm <= alpha:
        return "equivalent", f"equivalent within ±{margin:g}"
    return "not_enough_evidence", "not enough evidence"


def _constant(x: np.ndarray) -> float | None:
    v = np.asarray(x, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return float(v[0]) if v.size and (v == v[0]).all() else None


def _margin(metric: str, margins: Mapping[str, float] | float | None) -> float | None:
    """A metric's equivalence margin by full name, then by base name before '@'; ``None`` = no TOST."""
    if margins is None:
        return None
    if isinstance(margins, int | float):
        return float(margins)
    for key in (metric, metric.split("@", 1)[0]):
        if key in margins:
            return float(margins[key])
    return None


# -------------------------------------------------------------------------------------------- summary
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
    per_user = per_user or {}
    scores = scores or {}
    per_seed = per_seed or {}
    models = list(dict.fromkeys([*per_user, *scores, *per_seed]))
    if reference not in models:
        raise ValueError(f"reference model {reference!r} has no metrics; models: {models}")
    others = [m for m in models if m != reference] if competitors is None else list(competitors)
    unknown = [m for m in others if m not in models or m == reference]
    if unknown:
        raise ValueError(f"competitors {unknown} are not models other than {reference!r}; models: {models}")

    n_seeds = _n_seeds(per_user, scores, per_seed)
    if sample is not None:
        n_users = sample.n_users
        users = sample.retrieval_users
    else:
        widths = {np.shape(x)[-1] for block in per_user.values() for x in block.values()}
        if len(widths) > 1:
            raise ValueError(f"per_user arrays have different numbers of users {sorted(widths)}; align them")
        n_users, users = (widths.pop() if widths else 1), None
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

    out_models: dict[str, dict[str, Any]] = {}
    for model in models:
        block: dict[str, Any] = {}
        for metric, r in reps.get(model, {}).items():
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
        for metric, values in per_seed.get(model, {}).items():
            if metric not in block:
                block[metric] = mean_ci(values, level, V.metric(metric).bounds) | {"n_boot": 0}
        out_models[model] = block

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for other in others:
        for metric in out_models[reference]:
            if metric not in out_models[other]:
                continue
            rows[(other, metric)] = _comparison(
                metric, reps, per_seed, reference, other, level, _margin(metric, margins)
            )

    families: dict[str, int] = {}
    primary_set = None if primary is None else set(primary)
    for key, row in rows.items():
        row["family"] = (
            "all" if primary_set is None else ("primary" if key[1] in primary_set else "secondary")
        )
    for family in sorted({row["family"] for row in rows.values()}):
        keys = [k for k, row in rows.items() if row["family"] == family]
        p_adj, _ = holm({k: rows[k]["p"] for k in keys}, alpha)
        eq_adj, _ = holm({k: rows[k]["p_equivalence"] for k in keys}, alpha)
        families[family] = sum(math.isfinite(rows[k]["p"]) for k in keys)
        for k in keys:
            rows[k]["p_holm"], rows[k]["p_equivalence_holm"] = p_adj[k], eq_adj[k]

    comparisons: dict[str, dict[str, Any]] = {f"{reference}_vs_{o}": {} for o in others}
    for (other, metric), row in rows.items():
        constant = row.pop("_constant")
        row["decision"], row["verdict"] = decide(
            diff=row["mean"],
            p_holm=row["p_holm"],
            p_equivalence_holm=row["p_equivalence_holm"],
            margin=row["margin"],
            alpha=alpha,
            higher_is_better=V.higher_is_better(metric),
            constant=constant,
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
    return jsonable(
        {
            "level": level,
            "reference": reference,
            "method": method,
            "models": out_models,
            "comparisons": comparisons,
        }
    )


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
