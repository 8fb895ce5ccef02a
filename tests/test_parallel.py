"""Seeds trained side by side (train.workers) give exactly the runs trained one after another."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dmtl import params as P
from dmtl.paths import Paths
from dmtl.stages.student import run_student


@pytest.mark.timeout(600)
def test_two_worker_processes_give_the_sequential_runs(tiny_run, tiny_params, tmp_path):
    """One thread per run either way: two spawned workers and one process write identical towers."""
    roots = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        Paths(root).artifacts.mkdir(parents=True)
        Paths(root).data.symlink_to(Paths(tiny_run).data)
        Paths(root).teachers.symlink_to(Paths(tiny_run).teachers)
        study = P.apply_overrides(tiny_params, {"train.workers": workers, "train.threads": workers})
        run_student(study, "dmtl", root)
        roots[workers] = root
    for seed in tiny_params.train.seeds:
        a, b = Paths(roots[1]).student("dmtl", seed), Paths(roots[2]).student("dmtl", seed)
        for f in ("user_emb.npy", "item_emb.npy"):
            np.testing.assert_array_equal(np.load(a / f), np.load(b / f))
    runs = [json.loads(Paths(r).student_metrics("dmtl").read_text())["runs"] for r in roots.values()]
    assert [r["seed"] for r in runs[1]] == list(tiny_params.train.seeds)  # in seed order
    assert [(r["epochs"], r["best_val_select"]) for r in runs[0]] == [
        (r["epochs"], r["best_val_select"]) for r in runs[1]
    ]
