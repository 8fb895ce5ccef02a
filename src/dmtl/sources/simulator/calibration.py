"""Feed marginals of a simulated log, checked against the targets of docs/protocol.md section 5."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from dmtl.schema import FeedLog
from dmtl.sources.simulator.oracle import Oracle

CALIBRATION_TARGETS: dict[str, tuple[float | None, float | None]] = {
    # (min, max), None = unbounded. Feed-like marginals (docs/protocol.md section 5, issue text).
    "ctr": (0.05, 0.15),
    "mean_clicked_duration": (40.0, 60.0),
    "share_clicks_above_mean": (0.25, 0.45),
    # Clickbait must be clicked a lot and read briefly, or the study has nothing to find.
    "bait_ctr_ratio": (1.5, None),
    "bait_long_read_ratio": (None, 0.5),
}


def calibration(log: FeedLog, oracle: Oracle) -> dict[str, Any]:
    """Feed marginals of a simulated log, checked against :data:`CALIBRATION_TARGETS`.

    A long read is a click with duration above the mean clicked duration (the paper's tau rule, docs/protocol.md
    section 1). Rates are per impression (CTR) or per click (long-read rate).

    Returns:
        Numbers: ``n_impressions, n_clicks, ctr, mean_clicked_duration, share_clicks_above_mean,
        bait_item_share, bait_impression_share, bait_click_share, bait_ctr, rest_ctr, bait_ctr_ratio,
        bait_long_read_rate, rest_long_read_rate, bait_long_read_ratio, position_ctr`` (list, CTR per
        position), the figures of the regime knobs (:func:`knob_figures`) and ``checks``:
        ``{target name: bool}``.
    """
    imp = log.impressions
    click = imp["click"].to_numpy() == 1
    duration = imp["duration"].to_numpy().astype(np.float64)
    bait = oracle.is_clickbait[oracle.item_index(imp["item_id"].to_numpy())]
    clicked_dur = duration[click]
    mean_dur = float(clicked_dur.mean()) if click.any() else float("nan")
    long_read = click & (duration > mean_dur)

    def rate(num: np.ndarray, den: np.ndarray) -> float:
        d = int(den.sum())
        return float((num & den).sum() / d) if d else float("nan")

    bait_ctr, rest_ctr = rate(click, bait), rate(click, ~bait)
    bait_lr, rest_lr = rate(long_read, click & bait), rate(long_read, click & ~bait)
    pos = imp["position"].to_numpy().astype(np.int64)
    valid = pos >= 0
    n_pos = int(pos[valid].max()) + 1 if valid.any() else 0
    shown = np.bincount(pos[valid], minlength=n_pos)
    clicks_at = np.bincount(pos[valid], weights=click[valid], minlength=n_pos)
    out: dict[str, Any] = {
        "n_impressions": len(imp),
        "n_clicks": int(click.sum()),
        "ctr": float(click.mean()) if len(imp) else float("nan"),
        "mean_clicked_duration": mean_dur,
        "share_clicks_above_mean": float((clicked_dur > mean_dur).mean()) if click.any() else float("nan"),
        "bait_item_share": float(oracle.is_clickbait.mean()),
        "bait_impression_share": float(bait.mean()) if len(imp) else float("nan"),
        "bait_click_share": float(bait[click].mean()) if click.any() else float("nan"),
        "bait_ctr": bait_ctr,
        "rest_ctr": rest_ctr,
        "bait_ctr_ratio": bait_ctr / rest_ctr if rest_ctr > 0 else float("nan"),
        "bait_long_read_rate": bait_lr,
        "rest_long_read_rate": rest_lr,
        "bait_long_read_ratio": bait_lr / rest_lr if rest_lr > 0 else float("nan"),
        "position_ctr": (clicks_at / np.maximum(shown, 1)).tolist(),
    }
    out.update(knob_figures(log, oracle))
    checks = {}
    for name, (lo, hi) in CALIBRATION_TARGETS.items():
        v = out[name]
        checks[name] = bool(math.isfinite(v) and (lo is None or v >= lo) and (hi is None or v <= hi))
    out["checks"] = checks
    return out


def knob_figures(log: FeedLog, oracle: Oracle) -> dict[str, float]:
    """The figures each regime knob of docs/protocol.md section 5 moves (issue 15), from the log and its truth.

    Long read = click with duration above the mean clicked duration, as in :func:`calibration`.

    Returns:
        Data density (``sessions_per_user_day``, ``n_items``): ``impressions_per_user``,
        ``impressions_per_item``, ``long_reads_per_item`` (over the whole corpus and every user).
        Long-read rate (``bounce_bias``): ``bounce_share`` (mean true bounce probability of the clicks),
        ``share_clicks_above_50s`` (the paper's fixed tau; the mean rule's share is
        ``share_clicks_above_mean``).
        Cold items (``cold_item_share``, ``cold_item_days``): ``cold_item_fraction`` (of the corpus),
        ``cold_test_impression_share`` and ``cold_test_long_read_share`` (share of the cold days'
        impressions and long reads that are on cold items).
        Teacher-privileged fans (``fan_strength``): ``fan_impression_share``, ``fan_click_share`` (on a fan's
        publisher), ``fan_info_share`` (share of the true click model's information, log-loss gain over a
        constant CTR, lost without the fan term; 0 when ``fan_strength`` is 0), ``history_ctr_ratio`` (CTR
        after an earlier click on the item's publisher over CTR without: what ``ctx_publisher_clicks`` tells)
        and ``fan_visible_share`` (share of fan impressions with an earlier click on the publisher).
    """
    cfg, imp = oracle.config, log.impressions
    users, items = imp["user_id"].to_numpy(), imp["item_id"].to_numpy()
    click = imp["click"].to_numpy() == 1
    duration = imp["duration"].to_numpy().astype(np.float64)
    mean_dur = float(duration[click].mean()) if click.any() else float("nan")
    long_read = click & (duration > mean_dur)
    n_users, n_items = len(oracle.users), len(oracle.item_ids)
    out: dict[str, float] = {
        "impressions_per_user": len(imp) / n_users,
        "impressions_per_item": len(imp) / n_items,
        "long_reads_per_item": float(long_read.sum()) / n_items,
        "bounce_share": _mean(oracle.pair_bounce_prob(users[click], items[click])),
        "share_clicks_above_50s": _mean(duration[click] > 50.0),
    }
    release = oracle.release_day
    cold_item = release[oracle.item_index(items)] > 0
    cold_days = imp["day"].to_numpy() >= cfg.release_day
    out["cold_item_fraction"] = float((release > 0).mean())
    out["cold_test_impression_share"] = _mean(cold_item[cold_days])
    out["cold_test_long_read_share"] = _mean(cold_item[cold_days & long_read])
    out.update(_fan_figures(imp, oracle, users, items, click))
    return out


def _fan_figures(
    imp: pd.DataFrame, oracle: Oracle, users: np.ndarray, items: np.ndarray, click: np.ndarray
) -> dict:
    """The fan figures of :func:`knob_figures`."""
    from dmtl.sources.simulator.feed import publisher_click_history

    cfg = oracle.config
    fan = oracle.pair_fan_affinity(users, items)
    p_click = oracle.pair_click_prob(users, items)
    exam = oracle.examination_prob(imp["position"].to_numpy())
    p_full = exam * p_click
    # The click model without its fan term: the same logit less fan_strength on fan pairs.
    p_nofan = (
        exam * special.expit(special.logit(p_click) - cfg.fan_strength * fan) if cfg.fan_strength else p_full
    )
    ll_full, ll_nofan = _log_loss(click, p_full), _log_loss(click, p_nofan)
    ll_const = _log_loss(click, np.full(len(click), click.mean())) if len(click) else float("nan")
    gain = ll_const - ll_full
    if "publisher" in oracle.items.columns:
        publisher = oracle.items["publisher"].to_numpy(np.int64)[oracle.item_index(items)]
        seen = publisher_click_history(users, publisher, imp["time"].to_numpy(), click) > 0
    else:
        seen = np.zeros(len(click), dtype=bool)
    ctr_seen, ctr_unseen = _mean(click[seen]), _mean(click[~seen])
    return {
        "fan_impression_share": _mean(fan),
        "fan_click_share": _mean(fan[click]),
        "fan_info_share": (ll_nofan - ll_full) / gain if gain > 0 else float("nan"),
        "history_ctr_ratio": ctr_seen / ctr_unseen if ctr_unseen > 0 else float("nan"),
        "fan_visible_share": _mean(seen[fan]),
    }


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p)))) if len(y) else float("nan")
