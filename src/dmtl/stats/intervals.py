"""Intervals: Student-t over seeds (on the logit scale of a bounded metric), percentiles of replicates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special
from scipy import stats as st

LOGIT_EPS = 1e-6
"""Values at a bound are moved this far inside (as a share of the range) before the logit."""


def _level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


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
    v = np.asarray(values, dtype=np.float64).ravel()
    return _seed_interval(v, _level(level), bounds, "values")


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
    return _seed_interval(va - vb, level, None if bounds is None else difference_bounds(bounds), "diffs")


def _seed_interval(
    v: np.ndarray, level: float, bounds: tuple[float, float] | None, values_key: str
) -> dict[str, Any]:
    """The summary :func:`mean_ci` and :func:`paired_diff` return for per-seed values ``v`` (``nan`` seeds
    left out): the t interval, or within ``bounds`` the logit-scale one; ``v`` itself under ``values_key``."""
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
        values_key: [float(x) for x in v],
        "interval": "t" if bounds is None else "logit-t",
    }


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
