"""Interruption: a training stage stopped mid-epoch leaves no output DVC would accept, and reruns exactly.

The stages train through :func:`dmtl.training.fit`, whose checkpoints live in a private temporary folder,
and write every output by temp file + rename (:func:`dmtl.io.atomic_path`). Three ways a run can stop are
tried on the tiny preset: an exception inside training, Ctrl-C (Lightning turns it into exit status 1), and
SIGKILL of the whole process. After each, a clean rerun must give exactly the uninterrupted result.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from dmtl import params as P
from dmtl import training
from dmtl.io import atomic_path, read_json, write_json, write_parquet
from dmtl.stages import student as student_stage
from dmtl.stages import teacher as teacher_stage
from dmtl.stages.prepare import run_prepare
from dmtl.stages.student import run_student
from dmtl.stages.teacher import run_teacher

REPO = Path(__file__).resolve().parents[1]

# Small enough to train in about a second per model; one thread, because on a busy 2-core machine two torch
# threads per process slow a step down by an order of magnitude.
FAST = {
    "data.preset": "tiny",
    "train.seeds": [0],
    "train.max_epochs": 2,
    "train.patience": 1,
    "train.batch_size": 512,
    "train.threads": 1,
    "train.workers": 1,
    "teacher.variants": [],
    "students.names": ["ctr", "dmtl"],
}
CRASH_EPOCH, CRASH_BATCH = 1, 3  # the second epoch, after the first epoch's checkpoint was written


class Crash(Callback):
    """Stops training at (CRASH_EPOCH, CRASH_BATCH) with ``make()``, noting the temp folder's files first."""

    def __init__(self, make: Callable[[], BaseException | None], temp_root: Path):
        self.make = make
        self.temp_root = temp_root
        self.files_at_crash: list[str] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int
    ) -> None:
        if trainer.current_epoch == CRASH_EPOCH and i == CRASH_BATCH:
            self.files_at_crash = sorted(
                str(p.relative_to(self.temp_root)) for p in self.temp_root.rglob("*")
            )
            exc = self.make()
            if exc is not None:
                raise exc


STAGES: dict[str, tuple[Callable[[dict, Path], Any], list[str]]] = {
    # stage -> (run it, the outputs it must not leave behind when interrupted)
    "teacher": (
        run_teacher,
        [
            "artifacts/teacher",
            "metrics/teacher.json",
            "metrics/tau.json",
            "metrics/teacher_runs.parquet",
            "plots/teacher_curves.csv",
        ],
    ),
    "student_ctr": (
        lambda params, root: run_student(params, "ctr", root),
        ["artifacts/students/ctr", "metrics/students/ctr.json", "plots/students/ctr_curves.csv"],
    ),
}


@pytest.fixture(scope="module")
def fast_params():
    return P.load(REPO / "params.yaml", FAST)


@pytest.fixture(scope="module")
def reference(fast_params: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared data and an uninterrupted run of every stage under test."""
    root = tmp_path_factory.mktemp("reference")
    run_prepare(fast_params, root)
    for run, _ in STAGES.values():
        run(fast_params, root)
    return root


@pytest.fixture
def fresh_root(reference: Path, tmp_path: Path) -> Path:
    """A root holding only the prepared data: the state in which the training stages start."""
    root = tmp_path / "run"
    shutil.copytree(reference / "artifacts" / "data", root / "artifacts" / "data")
    return root


@pytest.fixture
def private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temporary folder, redirected so that leftovers of this test alone can be seen."""
    temp = tmp_path / "system_tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


@pytest.fixture
def restore_sigint() -> Iterator[None]:
    # Lightning ignores SIGINT from the first Ctrl-C on, so that a second one cannot break its shutdown.
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def inject(monkeypatch: pytest.MonkeyPatch, crash: Crash) -> None:
    """Make every ``fit`` of the training stages run with the crash callback."""
    real_fit = training.fit

    def fit_with_crash(
        module: L.LightningModule,
        data: Any,
        train: dict[str, Any],
        seed: int,
        extra_callbacks: list[Callback] | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        return real_fit(module, data, train, seed, [*(extra_callbacks or []), crash], **kwargs)

    for stage in (teacher_stage, student_stage):
        monkeypatch.setattr(stage, "fit", fit_with_crash)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_nothing_accepted(root: Path, outputs: list[str]) -> None:
    left = [p for p in files_under(root) if any(p == o or p.startswith(o + "/") for o in outputs)]
    assert left == [], f"an interrupted stage left outputs behind: {left}"
    assert not list(root.rglob("*.tmp")), "a temporary file was left behind"


def assert_same_outputs(a: Path, b: Path, outputs: list[str]) -> None:
    """Every output file of the stage is identical, except the wall-clock seconds the runs record."""
    names = [p for p in files_under(a) if any(p == o or p.startswith(o + "/") for o in outputs)]
    assert names and names == [p for p in files_under(b) if p in names]
    for name in names:
        fa, fb = a / name, b / name
        if name.endswith(".parquet"):
            ta, tb = pd.read_parquet(fa), pd.read_parquet(fb)
            pd.testing.assert_frame_equal(
                ta.drop(columns="seconds", errors="ignore"), tb.drop(columns="seconds", errors="ignore")
            )
        elif name.endswith(".pt"):
            sa = torch.load(fa, weights_only=True)
            sb = torch.load(fb, weights_only=True)
            assert sa.keys() == sb.keys()
            for key in sa:
                assert torch.equal(sa[key], sb[key]), (name, key)
        elif name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(fa), np.load(fb))
        elif name.endswith(".json") and "students" in name:
            ja, jb = read_json(fa), read_json(fb)
            for run in (*ja["runs"], *jb["runs"]):
                run.pop("seconds")
            assert ja == jb
        else:
            assert fa.read_bytes() == fb.read_bytes(), name


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_exception_mid_epoch_leaves_nothing_and_rerun_is_exact(
    stage: str,
    fast_params: dict[str, Any],
    reference: Path,
    fresh_root: Path,
    private_temp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run, outputs = STAGES[stage]
    crash = Crash(lambda: RuntimeError("simulated crash"), private_temp)
    with monkeypatch.context() as m:
        inject(m, crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(fast_params, fresh_root)
    # The crash came after a checkpoint was written (so there was something to leave behind)...
    assert any(f.startswith("dmtl-ckpt-") and f.endswith(".ckpt") for f in crash.files_at_crash), (
        crash.files_at_crash
    )
    # ...and neither the checkpoint folder nor any output survived it.
    assert list(private_temp.iterdir()) == []
    assert_nothing_accepted(fresh_root, outputs)
    # Rerunning the stage restarts it cleanly and gives exactly the uninterrupted result.
    run(fast_params, fresh_root)
    assert_same_outputs(reference, fresh_root, outputs)
    assert list(private_temp.iterdir()) == []


def test_ctrl_c_exits_with_status_1_and_leaves_nothing(
    fast_params: dict[str, Any],
    fresh_root: Path,
    private_temp: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_sigint: None,
) -> None:
    # Lightning catches KeyboardInterrupt and exits with status 1: DVC sees a failed stage, never a
    # finished one, even though training "stopped gracefully".
    crash = Crash(lambda: KeyboardInterrupt(), private_temp)
    inject(monkeypatch, crash)
    with pytest.raises(SystemExit) as stop:
        run_teacher(fast_params, fresh_root)
    assert stop.value.code == 1
    assert crash.files_at_crash
    assert list(private_temp.iterdir()) == []
    assert_nothing_accepted(fresh_root, STAGES["teacher"][1])


KILL_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    from lightning.pytorch.callbacks import Callback
    from dmtl import params as P, training
    from dmtl.stages import student, teacher

    class Kill(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, i):
            if trainer.current_epoch == {epoch} and i == {batch}:
                os.kill(os.getpid(), signal.SIGKILL)

    real_fit = training.fit
    killing_fit = lambda module, data, train, seed, extra_callbacks=None, **kw: real_fit(
        module, data, train, seed, [Kill()], **kw
    )
    teacher.fit = student.fit = killing_fit
    study, root, stage = P.load(sys.argv[1], json.loads(sys.argv[2])), sys.argv[3], sys.argv[4]
    if stage == "teacher":
        teacher.run_teacher(study, root)
    else:
        student.run_student(study, stage.removeprefix("student_"), root)
    """
).format(epoch=CRASH_EPOCH, batch=CRASH_BATCH)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_sigkill_mid_epoch_leaves_no_output_and_rerun_is_exact(
    stage: str, fast_params: dict[str, Any], reference: Path, fresh_root: Path, tmp_path: Path
) -> None:
    """``kill -9`` of the teacher's or a student's training process, then the rerun ``dvc repro`` would do."""
    temp = tmp_path / "killed_tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_SCRIPT,
            str(REPO / "params.yaml"),
            json.dumps(FAST),
            str(fresh_root),
            stage,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run, outputs = STAGES[stage]
    assert_nothing_accepted(fresh_root, outputs)
    # A killed process cannot clean up: its checkpoint folder stays in the system temp folder. No later run
    # reads it (each run makes a new private folder), so the rerun below is unaffected by it.
    left = [p.name for p in temp.iterdir()]
    assert len(left) == 1 and left[0].startswith("dmtl-ckpt-"), left
    run(fast_params, fresh_root)
    assert_same_outputs(reference, fresh_root, outputs)


def test_atomic_path_keeps_the_old_file_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "out" / "metrics.json"
    write_json({"auc": 0.7}, target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_text('{"auc": 0.')  # half written
            raise RuntimeError("killed")
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_atomic_path_creates_nothing_when_the_first_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "predictions.parquet"
    bad = pd.DataFrame({"p_ctr": [0.1, object()]})  # pyarrow cannot store this column
    with pytest.raises(ValueError, match="Could not convert"):  # pyarrow.ArrowInvalid
        write_parquet(bad, target)
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_on_success_with_the_usual_file_mode(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json({"auc": 0.7}, target)
    write_json({"auc": 0.8}, target)
    assert target.read_text() == '{\n  "auc": 0.8\n}\n'
    # mkstemp makes owner-only files; the output gets the mode a plain open() would give it.
    probe = tmp_path / "probe"
    probe.write_text("")
    assert target.stat().st_mode & 0o777 == probe.stat().st_mode & 0o777
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "probe"]
