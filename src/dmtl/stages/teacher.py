"""Stage ``teacher``: train the MMoE + ESMM teacher for every seed, and its variants (notebook 02)."""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmtl import vocab as V
from dmtl.artifacts import write_position_bias, write_teacher_predictions
from dmtl.config import Study
from dmtl.io import jsonable, write_csv, write_json, write_parquet
from dmtl.metrics import teacher_ranking_metrics
from dmtl.models.position import POSITION_FEATURE
from dmtl.modules import TeacherModule, build_teacher
from dmtl.parallel import map_runs, prepared_data
from dmtl.paths import Paths
from dmtl.predict import predict_teacher, predict_teacher_shards
from dmtl.shards import PREDICTIONS, ShardedPrepared, read_predictions
from dmtl.stats.intervals import mean_ci
from dmtl.training import fit, save_state, seed_everything


def _train_run(
    run: tuple[str, int], study: Study, root: str, threads: int
) -> tuple[pd.DataFrame, list[dict]]:
    """Train and write one teacher (variant, seed); return its learning curve and its metrics rows."""
    variant, seed = run
    paths = Paths(root)
    prepared, tensors = prepared_data(paths.data)
    sharded = isinstance(prepared, ShardedPrepared)  # the out-of-core path (dmtl.shards)
    cfg, train = study.teacher, dataclasses.replace(study.train, threads=threads)
    context = prepared.meta["context_features"]
    seed_everything(seed, train.threads)
    model = build_teacher(prepared.cardinalities, cfg, variant, context)
    module = TeacherModule(model, cfg, variant, context)
    t0 = time.perf_counter()
    curve = fit(module, tensors, train, seed)
    seconds = time.perf_counter() - t0
    out = paths.teacher(variant, seed)
    save_state(module.model, out / "model.pt")
    if sharded:  # one prediction file per shard, beside it (the students' soft labels)
        predict_teacher_shards(module, tensors, out / PREDICTIONS)
    else:
        pred = predict_teacher(module, tensors)
        write_teacher_predictions(pred, out)
    if module.position is not None:
        p_seen = module.position.p_seen().detach().numpy()
        if sharded:
            n_train = prepared.bincount("train", POSITION_FEATURE, len(p_seen)).astype(np.int64)
        else:
            bucket = prepared.impressions[POSITION_FEATURE].to_numpy()[prepared.split_mask("train")]
            n_train = np.bincount(bucket, minlength=len(p_seen))
        write_position_bias(p_seen, n_train, out)
    rows = []
    for split in ("val", "test"):
        if sharded:
            imp = prepared.read_split(split, ["user_idx", "click", "long_read"])
            m = teacher_ranking_metrics(read_predictions(out / PREDICTIONS, prepared, split), imp)
        else:
            mask = prepared.split_mask(split)
            m = teacher_ranking_metrics({k: v[mask] for k, v in pred.items()}, prepared.impressions[mask])
        rows.append(
            {
                "variant": variant,
                "seed": seed,
                "split": split,
                "epochs": len(curve),
                "stopped_early": len(curve) < train.max_epochs,
                "seconds": seconds,
                **m,
            }
        )
    return curve.assign(variant=variant, seed=seed, series=f"{variant} seed {seed}"), rows


def run_teacher(study: Study, root: str | Path = ".") -> dict[str, Any]:
    """Train the teacher for every seed (and its variants for the first ``variant_seeds`` seeds), side by
    side in ``train.workers`` processes.

    The predictions written (the students' soft labels) and scored are the teacher's own: with
    ``teacher.position: bias`` position-free, at the top of the feed (:class:`dmtl.modules.TeacherModule`).
    """
    paths = Paths(root)
    prepared, _ = prepared_data(paths.data)
    cfg, train = study.teacher, study.train
    runs = [("default", s) for s in train.seeds]
    runs += [(v, s) for v in cfg.variants for s in train.seeds[: cfg.variant_seeds]]
    done = map_runs(partial(_train_run, study=study, root=str(root)), runs, train.workers, train.threads)
    table = pd.DataFrame([row for _, rows in done for row in rows])
    write_parquet(table, paths.metrics / "teacher_runs.parquet")
    write_json(
        {"tau_seconds": prepared.tau_seconds, "tau_rule": prepared.meta["tau_rule"]},
        paths.metrics / "tau.json",
    )
    write_csv(pd.concat([curve for curve, _ in done], ignore_index=True), paths.plots / "teacher_curves.csv")
    summary = summarise_runs(table, group="variant", level=study.eval.ci_level)
    write_json(summary, paths.metrics / "teacher.json")
    return summary


def summarise_runs(table: pd.DataFrame, group: str, level: float) -> dict[str, Any]:
    """{group value: {split: {metric: mean and interval over seeds}}} for a per-seed run table."""
    out: dict[str, Any] = {}
    for (g, split), part in table.groupby([group, "split"], sort=False):
        out.setdefault(g, {})[split] = {
            m: jsonable(mean_ci(part[m].to_numpy(), level)) for m in V.RANKING_METRICS
        }
    return out
