"""Tests and verdicts: bootstrap and t p-values, TOST equivalence, Holm correction, one decision per comparison."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np
from scipy import stats as st

K = TypeVar("K", bound=Hashable)


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
