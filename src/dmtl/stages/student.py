"""Stage ``student@<name>``: train one two-tower student for every seed, export its towers (notebook 03)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dmtl.artifacts import Towers, read_teacher_predictions, write_towers
from dmtl.config import Study, to_dict
from dmtl.data import ImpressionTensors, UnexposedSampler
from dmtl.features import Prepared
from dmtl.io import write_csv, write_json
from dmtl.losses import soft_target_from_teacher
from dmtl.modules import StudentModule, TeacherModule, build_student, build_teacher, student_position_column
from dmtl.objectives import StudentObjective, UnexposedPairs, item_log_q
from dmtl.parallel import map_runs, prepared_data
from dmtl.paths import Paths
from dmtl.predict import tower_embeddings
from dmtl.selection import ValidationMetric
from dmtl.shards import PREDICTIONS, ShardedPrepared
from dmtl.streaming import ShardedData, SoftLabels
from dmtl.training import fit, save_state, seed_everything


def build_module(
    study: Study,
    name: str,
    prepared: Prepared | ShardedPrepared,
    tensors: ImpressionTensors | ShardedData,
    root: Path,
    seed: int,
) -> StudentModule:
    """Student ``name`` of seed ``seed`` with its objective, and for a student that learns from the teacher,
    the teacher trained alongside (joint) or the frozen teacher of the same seed labelling unexposed pairs."""
    student, common = study.students[name], study.students.common
    distill = student.distill
    duration_cap = prepared.meta["duration_cap_seconds"]
    joint = distill is not None and distill.teacher_training == "joint"
    context = prepared.meta["context_features"]
    teacher = _teacher(study, prepared) if joint else None
    pairs = sampler = None
    if distill is not None and distill.unexposed_ratio > 0:
        sampler = UnexposedSampler(tensors, distill.unexposed_ratio, distill.unexposed_popularity_share, seed)
        if teacher is None:  # two-stage: the frozen teacher of this seed labels the pairs
            frozen = _teacher(study, prepared)
            state = torch.load(
                Paths(root).teacher("default", seed) / "model.pt", map_location="cpu", weights_only=True
            )
            frozen.model.load_state_dict(state)
            frozen.requires_grad_(False).eval()
            labeller = _Labeller(frozen, distill.soft_target, duration_cap)
        else:
            labeller = None  # set below: the module's own teacher, detached
        pairs = UnexposedPairs(
            sampler, tensors.user_table, tensors.item_table, labeller, len(prepared.context_cardinalities)
        )
    log_q = None
    if common.objective == "sampled_softmax":
        counts = tensors.item_counts("train").astype(np.float64)
        extra = sampler.item_probability() if sampler is not None else np.zeros(len(counts))
        log_q = item_log_q(extra, counts, distill.unexposed_ratio if sampler is not None else 0.0)
    objective = StudentObjective(
        student,
        common.objective,
        prepared.meta["mean_clicked_train_duration"],
        log_q,
        common.softmax_negatives,
    )
    module = StudentModule(
        build_student(prepared.cardinalities, common, student),
        student,
        objective,
        duration_cap,
        teacher,
        pairs,
        position_column=student_position_column(common, student, context),
    )
    if pairs is not None and pairs.labeller is None:
        pairs.labeller = module.teacher_label
    return module


def _teacher(study: Study, prepared: Prepared) -> TeacherModule:
    """A fresh default teacher for this data (context inputs chosen by name, :func:`dmtl.modules.build_teacher`)."""
    context = prepared.meta["context_features"]
    model = build_teacher(prepared.cardinalities, study.teacher, "default", context)
    return TeacherModule(model, study.teacher, "default", context)


class _Labeller(torch.nn.Module):
    """A frozen teacher's soft target for a batch (two-stage labelling of unexposed pairs)."""

    def __init__(self, teacher: TeacherModule, target: str, duration_cap: float):
        super().__init__()
        self.teacher, self.target, self.duration_cap = teacher, target, duration_cap

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = {k: v for k, v in self.teacher(batch).items() if v is not None}
        return soft_target_from_teacher(out, self.target, self.duration_cap)


def _shard_soft_labels(root: str | Path, seed: int, distill: Any, prepared: ShardedPrepared) -> SoftLabels:
    """The frozen teacher's per-shard predictions as this student's soft targets (two-stage regime)."""
    cap = prepared.meta["duration_cap_seconds"]

    def transform(pred: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {k: torch.from_numpy(v) for k, v in pred.items()}
        return soft_target_from_teacher(tensors, distill.soft_target, cap).numpy()

    return SoftLabels(Paths(root).teacher("default", seed) / PREDICTIONS, transform)


def _train_seed(seed: int, study: Study, name: str, root: str, threads: int) -> tuple[pd.DataFrame, dict]:
    """Train and export student ``name`` of ``seed``; return its learning curve and its run record."""
    paths = Paths(root)
    prepared, _ = prepared_data(paths.data)
    sharded = isinstance(prepared, ShardedPrepared)  # the out-of-core path (dmtl.shards)
    student, common = study.students[name], study.students.common
    train = dataclasses.replace(study.train, threads=threads)
    distill = student.distill
    two_stage = distill is not None and distill.teacher_training == "two_stage"
    if sharded:
        labels = _shard_soft_labels(root, seed, distill, prepared) if two_stage else None
        tensors = ShardedData(prepared, labels)
    else:
        soft = None
        if two_stage:
            pred = {k: torch.from_numpy(v) for k, v in read_teacher_predictions(root, seed).items()}
            soft = soft_target_from_teacher(
                pred, distill.soft_target, prepared.meta["duration_cap_seconds"]
            ).numpy()
        tensors = ImpressionTensors(prepared, soft_labels=soft)
    seed_everything(seed, train.threads)
    module = build_module(study, name, prepared, tensors, Path(root), seed)
    # The softmax objective's loss depends on the batch's negatives: validate on batches of the same size.
    eval_batch = train.batch_size if common.objective == "sampled_softmax" else None
    # On shards, the validation metric reads the validation days and their users' training history only.
    val_data = tensors.validation_tensors() if sharded else tensors
    select = ValidationMetric(val_data, train.select_on) if train.select_on != "loss" else None
    t0 = time.perf_counter()
    curve = fit(module, tensors, train, seed, eval_batch_size=eval_batch, select=select)
    seconds = time.perf_counter() - t0
    model = module.model
    out = paths.student(name, seed)
    save_state(model, out / "model.pt")
    towers = Towers(
        tower_embeddings(model, tensors.user_table, user=True),
        tower_embeddings(model, tensors.item_table, user=False),
    )
    write_towers(towers, out)
    run = {
        "seed": seed,
        "epochs": len(curve),
        "best_val_loss": float(curve["val_loss"].min()),
        "best_val_select": float(curve["val_select"].max()),
        "stopped_early": len(curve) < train.max_epochs,
        "seconds": seconds,
    }
    return curve.assign(student=name, seed=seed, series=f"seed {seed}"), run


def run_student(study: Study, name: str, root: str | Path = ".") -> dict[str, Any]:
    """Train student ``name`` for every seed (side by side in ``train.workers`` processes) and export its user
    and item embeddings.

    A student that learns from the teacher distils, for seed ``s``, the teacher of seed ``s``: its frozen
    predictions (two-stage) or a teacher trained alongside it (joint, stop-gradient).
    """
    if name not in study.students.names:
        raise ValueError(f"unknown student {name!r}; students.names has {list(study.students.names)}")
    paths = Paths(root)
    train = study.train
    fn = partial(_train_seed, study=study, name=name, root=str(root))
    done = map_runs(fn, list(train.seeds), train.workers, train.threads)
    write_csv(pd.concat([curve for curve, _ in done], ignore_index=True), paths.student_curves(name))
    summary = {
        "student": name,
        "hyperparameters": {**to_dict(study.students.common), **study.students[name].to_dict()},
        "runs": [run for _, run in done],
    }
    write_json(summary, paths.student_metrics(name))
    return summary
