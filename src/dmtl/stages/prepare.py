"""Stage ``prepare``: load or simulate the log, split it by day, set tau, encode features (notebook 01)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from dmtl.checks import check_prepared, input_summary, preflight
from dmtl.config import Study
from dmtl.features import LabelRule, Prepared, prepare
from dmtl.io import write_json
from dmtl.log_shards import simulate_log_shards, storage_for
from dmtl.paths import Paths
from dmtl.shard_prepare import prepare_shards
from dmtl.shards import ShardedPrepared
from dmtl.sources.registry import load_source


def run_prepare(study: Study, root: str | Path = ".") -> dict[str, Any]:
    """Load or simulate the log, split it by day, set tau, encode features; write data and its summary.

    The pre-flight checks (:mod:`dmtl.checks`) run first, so a log that cannot carry the study stops here
    in seconds, before anything is loaded in full or written. ``data.storage`` chooses the in-memory path
    or the out-of-core one (:mod:`dmtl.shards`: the prepared impressions as Parquet shards).
    """
    paths = Paths(root)
    t0 = time.perf_counter()
    data = study.data
    if storage_for(data) == "shards":
        return _run_prepare_shards(study, paths, t0)
    preflight(study)
    feed, oracle = load_source(study.data)
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


def _run_prepare_shards(study: Study, paths: Paths, t0: float) -> dict[str, Any]:
    """:func:`run_prepare` on the out-of-core path (``data.storage``, :mod:`dmtl.log_shards`,
    :mod:`dmtl.shard_prepare`): the log is drawn or read into shards of whole users (scratch, removed after),
    then prepared shard by shard."""
    data = study.data
    scratch = paths.artifacts / ".log_shards"
    try:
        if data.source == "simulated":
            from dmtl.sources.simulator.config import make_config

            preflight(study)
            config = make_config(data.preset, data.sim)
            log, oracle = simulate_log_shards(config, data.sim_seed, scratch, data.shard_rows)
        else:
            # The pre-flight checks need the log's sizes, which the chunked loaders measure on their first
            # pass (the in-memory scans would hold whole columns), before anything is prepared.
            from dmtl.sources.registry import load_source_shards

            log, oracle = load_source_shards(study, scratch), None
        labels = LabelRule(data.long_read, data.completion_threshold, data.length_bands)
        prepared = prepare_shards(log, paths.data, data.val_days, data.test_days, data.tau, labels)
        check_prepared(study, prepared)
        summary = data_summary(prepared)
        summary["simulated"] = oracle is not None
        summary.update(input_summary(log))
        summary["storage"] = {"kind": "shards", "shards": len(log.files), "shard_rows": data.shard_rows}
        if oracle is not None:
            from dmtl.sources.simulator.calibration import calibration

            oracle.write(paths.oracle)
            # The first shard's users: the simulator draws users independently, so a random sample of them.
            summary["calibration"] = calibration(log.sample(), oracle)
            summary["calibration"]["sample"] = "the users of the first shard"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary["seconds"] = time.perf_counter() - t0
    write_json(summary, paths.metrics / "data.json")
    return summary


def data_summary(prepared: Prepared | ShardedPrepared) -> dict[str, Any]:
    """Sizes, rates and tau of the prepared data, per split."""
    keys = ("tau_seconds", "tau_rule", "long_read_rule", "band_edges_s", "band_tau_s", "completion_threshold")
    out: dict[str, Any] = {k: prepared.meta[k] for k in keys if k in prepared.meta}
    if isinstance(prepared, ShardedPrepared):  # summed over the shards while they were written
        return out | prepared.meta["split_summary"]
    imp = prepared.impressions
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
