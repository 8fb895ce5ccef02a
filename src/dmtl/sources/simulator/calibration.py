"""Feed marginals of a simulated log, checked against the targets of docs/protocol.md section 5."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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
        position) and ``checks``: ``{target name: bool}``.
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
    checks = {}
    for name, (lo, hi) in CALIBRATION_TARGETS.items():
        v = out[name]
        checks[name] = bool(math.isfinite(v) and (lo is None or v >= lo) and (hi is None or v <= hi))
    out["checks"] = checks
    return out
