"""Seed statistics of docs/protocol.md section 4: mean and t interval per number, paired differences, verdicts.

Every reported number is a mean over training seeds with a Student-t confidence interval; every competitor
is compared with the reference model (``dmtl``) by the paired difference over seeds, and a claim is made
only when that interval excludes zero. A seed whose metric is ``nan`` (e.g. an AUC with one class) is left
out, and ``n`` always says how many seeds a number rests on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as st

from dmtl.io import jsonable


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


def mean_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Mean over seeds with a two-sided Student-t confidence interval.

    Args:
        values: one value per seed; ``nan`` seeds are ignored (and counted in ``n_missing``).
        level: confidence level.

    Returns:
        ``{"mean", "sd", "ci_low", "ci_high", "n", "n_missing", "level", "values"}``; ``mean +- t_{n-1} *
        sd / sqrt(n)``. With one finite value the bounds are ``nan``; with none the mean is too.
    """
    level = _level(level)
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = v[np.isfinite(v)]
    mean, sd, low, high = _t_interval(finite, level)
    return {
        "mean": mean,
        "sd": sd,
        "ci_low": low,
        "ci_high": high,
        "n": int(finite.size),
        "n_missing": int(v.size - finite.size),
        "level": level,
        "values": [float(x) for x in v],
    }


def paired_diff(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = 0.95
) -> dict[str, Any]:
    """Paired difference ``a - b`` over seeds with a Student-t interval.

    Pairing by seed removes the variance both models share through the seed (same data order and
    initialisation stream), which is why docs/protocol.md section 4 compares models this way.

    Args:
        a: per-seed values of the reference model, in seed order.
        b: per-seed values of the competitor, same seeds in the same order.
        level: confidence level.

    Returns:
        ``{"mean", "sd", "ci_low", "ci_high", "n", "n_missing", "level", "diffs"}`` over seeds where both
        values are finite.
    """
    level = _level(level)
    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"paired values need one value per seed on both sides, got {va.size} and {vb.size}")
    d = va - vb
    finite = d[np.isfinite(d)]
    mean, sd, low, high = _t_interval(finite, level)
    return {
        "mean": mean,
        "sd": sd,
        "ci_low": low,
        "ci_high": high,
        "n": int(finite.size),
        "n_missing": int(d.size - finite.size),
        "level": level,
        "diffs": [float(x) for x in d],
    }


def verdict(
    diff: Mapping[str, Any], higher_is_better: bool, name_a: str = "dmtl", name_b: str = "competitor"
) -> str:
    """Plain-words reading of a :func:`paired_diff`; a claim only when the interval excludes zero.

    Args:
        diff: output of ``paired_diff(a, b)``.
        higher_is_better: direction of the metric (False for e.g. ``bait_share@K``).
        name_a: the model of ``a``.
        name_b: the model of ``b``.

    Returns:
        ``"<a> better than <b>"``, ``"<a> worse than <b>"``, ``"no significant difference"``, or
        ``"undetermined (n=<n> paired seeds)"`` when fewer than two paired seeds leave no interval.
    """
    low, high = diff.get("ci_low"), diff.get("ci_high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"undetermined (n={diff.get('n', 0)} paired seeds)"
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
