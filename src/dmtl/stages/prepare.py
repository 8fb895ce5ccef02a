"""Stage ``prepare``: load or simulate the log, split it by day, set tau, encode features (notebook 01)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dmtl.checks import check_prepared, input_summary, preflight
from dmtl.config import Study
from dmtl.features import LabelRule, Prepared, prepare
from dmtl.io import write_json
from dmtl.paths import Paths
from dmtl.sources.registry import load_source


def run_prepare(study: Study, root: str | Path = ".") -> dict[str, Any]:
    """Load or simulate the log, split it by day, set tau, encode features; write data and its summary.

    The pre-flight checks (:mod:`dmtl.checks`) run first, so a log that cannot carry the study stops here
    in seconds, before anything is loaded in full or written.
    """
    paths = Paths(root)
    t0 = time.perf_counter()
    preflight(study)
    feed, oracle = load_source(study.data)
    data = study.data
    labels = LabelRule(data.long_read, data.completion_threshold, data.length_bands)
    prepared = prepare(feed, data.val_days, data.test_days, data.tau, labels)
    check_prepared(study, prepared)
    prepared.write(paths.data)
    summary = data_summary(prepared)
    summary["simulated"] = oracle is not None
    summary.update(input_summary(feed))
    if oracle is not None:
        from dmtl.sources.simulator.calibration import calibration

        oracle.write(paths.oracle)
        summary["calibration"] = calibration(feed, oracle)
    summary["seconds"] = time.perf_counter() - t0
    write_json(summary, paths.metrics / "data.json")
    return summary


def data_summary(prepared: Prepared) -> dict[str, Any]:
    """Sizes, rates and tau of the prepared data, per split."""
    imp = prepared.impressions
    keys = ("tau_seconds", "tau_rule", "long_read_rule", "band_edges_s", "band_tau_s", "completion_threshold")
    out: dict[str, Any] = {k: prepared.meta[k] for k in keys if k in prepared.meta}
    for name in ("train", "val", "test"):
        part = imp[prepared.split_mask(name)]
        clicked = part["click"] == 1
        out[name] = {
            "impressions": len(part),
            "users": int(part["user_id"].nunique()),
            "items": int(part["item_id"].nunique()),
            "ctr": float(clicked.mean()),
            "mean_clicked_duration": float(part.loc[clicked, "duration"].mean()),
            "long_read_rate": float(part["long_read"].mean()),
            "long_read_given_click": float(part.loc[clicked, "long_read"].mean()),
        }
    return out
