"""Shared fixtures: a tiny study run once per test session (in-process, no papermill)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The tiny preset with a budget that trains in seconds: what the pipeline tests run on.
TINY = {
    "data.preset": "tiny",
    "train.seeds": [0, 1],
    "train.max_epochs": 3,
    "train.batch_size": 512,
    "train.threads": 1,  # tests share 2 cores with other processes: one thread avoids oversubscription
    "train.workers": 1,  # and one process: spawning workers costs more than the tiny runs they would share
    "teacher.variants": ["no_esmm"],
    "teacher.variant_seeds": 1,
    "sweeps.seeds": [0, 1],
    "sweeps.students": ["ctr", "dmtl"],
    "sweeps.grid": {"hard_weight": {"param": "students.dmtl.hard_weight", "values": [0.0, 1.0]}},
}


@pytest.fixture(scope="session")
def tiny_params():
    from dmtl import params as P

    return P.load(REPO / "params.yaml", TINY)


@pytest.fixture(scope="session")
def tiny_run(tiny_params, tmp_path_factory) -> Path:
    """Root folder of a complete tiny run: prepare, teacher, every student, evaluate."""
    from dmtl.stages.evaluate import run_evaluate
    from dmtl.stages.prepare import run_prepare
    from dmtl.stages.student import run_student
    from dmtl.stages.teacher import run_teacher

    root = tmp_path_factory.mktemp("tiny_run")
    run_prepare(tiny_params, root)
    run_teacher(tiny_params, root)
    for name in tiny_params.students.names:
        run_student(tiny_params, name, root)
    run_evaluate(tiny_params, root)
    return root


@pytest.fixture(autouse=True, scope="session")
def _failure_logs_out_of_the_repository(tmp_path_factory) -> None:
    """Command-line failure logs (dmtl.cli) go to a temporary folder, not to logs/ of the checkout."""
    import os

    os.environ["DMTL_LOG_DIR"] = str(tmp_path_factory.mktemp("failure_logs"))
