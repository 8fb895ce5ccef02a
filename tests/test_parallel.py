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


_ORPHAN_SCRIPT = """
import os, sys, time
from dmtl.parallel import map_runs

def run(i, threads):
    with open(os.path.join(sys.argv[1], f"worker{i}"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    map_runs(run, [0, 1], workers=2, threads=2)
"""


def test_workers_end_when_the_stage_process_is_killed(tmp_path):
    """A killed stage (Ctrl-C twice, an out-of-memory kill) leaves no training processes behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "stage.py"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    pid_files = [tmp_path / "worker0", tmp_path / "worker1"]
    deadline = time.monotonic() + 60
    while not all(p.exists() and p.read_text() for p in pid_files):
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.1)
    workers = [int(p.read_text()) for p in pid_files]
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
