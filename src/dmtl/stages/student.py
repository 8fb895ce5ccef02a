"""Stage ``student@<name>``: train one two-tower student for every seed, export its towers (notebook 03)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from dmtl.artifacts import Towers, read_teacher_predictions, write_towers
from dmtl.config import Study, to_dict
from dmtl.data import ImpressionTensors
from dmtl.features import Prepared
from dmtl.io import write_csv, write_json
from dmtl.losses import soft_target_from_teacher
from dmtl.paths import Paths
from dmtl.training import (
    StudentModule,
    TeacherModule,
    build_student,
    build_teacher,
    fit,
    save_state,
    seed_everything,
    tower_embeddings,
)


def run_student(study: Study, name: str, root: str | Path = ".") -> dict[str, Any]:
    """Train student ``name`` for every seed and export its user and item embeddings.

    A student that learns from the teacher distils, for seed ``s``, the teacher of seed ``s``: its frozen
    predictions (two-stage) or a teacher trained alongside it (joint, stop-gradient).
    """
    if name not in study.students.names:
        raise ValueError(f"unknown student {name!r}; students.names has {list(study.students.names)}")
    paths = Paths(root)
    prepared = Prepared.read(paths.data)
    student, common, train = study.students[name], study.students.common, study.train
    distill = student.distill
    joint = distill is not None and distill.teacher_training == "joint"
    duration_cap = prepared.meta["duration_cap_seconds"]
    curves, rows = [], []
    for seed in train.seeds:
        soft = None
        if distill is not None and not joint:
            pred = {k: torch.from_numpy(v) for k, v in read_teacher_predictions(root, seed).items()}
            soft = soft_target_from_teacher(pred, distill.soft_target, duration_cap).numpy()
        tensors = ImpressionTensors(prepared, soft_labels=soft)
        seed_everything(seed, train.threads)
        model = build_student(prepared.cardinalities, common, student)
        teacher = (
            TeacherModule(build_teacher(prepared.cardinalities, study.teacher), study.teacher)
            if joint
            else None
        )
        module = StudentModule(
            model,
            student,
            duration_scale=prepared.meta["mean_clicked_train_duration"],
            duration_cap=duration_cap,
            teacher=teacher,
        )
        t0 = time.perf_counter()
        curve = fit(module, tensors, train, seed)
        seconds = time.perf_counter() - t0
        out = paths.student(name, seed)
        save_state(model, out / "model.pt")
        towers = Towers(
            tower_embeddings(model, tensors.user_table, user=True),
            tower_embeddings(model, tensors.item_table, user=False),
        )
        write_towers(towers, out)
        curves.append(curve.assign(student=name, seed=seed, series=f"seed {seed}"))
        rows.append(
            {
                "seed": seed,
                "epochs": len(curve),
                "best_val_loss": float(curve["val_loss"].min()),
                "seconds": seconds,
            }
        )
    write_csv(pd.concat(curves, ignore_index=True), paths.student_curves(name))
    summary = {
        "student": name,
        "hyperparameters": {**to_dict(common), **student.to_dict()},
        "runs": rows,
    }
    write_json(summary, paths.student_metrics(name))
    return summary
