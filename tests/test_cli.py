"""The command lines print one ERROR line for any failure, with the full traceback in the log file it names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from dmtl import params as P
from dmtl import realdata, sweep
from dmtl.cli import parse_assignments, run_main
from dmtl.notebook import main as notebook_main

REPO = Path(__file__).resolve().parents[1]
DAY0 = 1650844800
LOG_LINE = re.compile(r" \[full traceback: (.+\.log)\]$")


@pytest.fixture(autouse=True)
def log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "logs"
    monkeypatch.setenv("DMTL_LOG_DIR", str(folder))
    return folder


@pytest.fixture
def log_folder(tmp_path: Path) -> Path:
    """A generic log of 4 users, 3 items and 5 days (too few items for the default eval.ks)."""
    folder = tmp_path / "mylog"
    folder.mkdir()
    rows = [
        (u, i, DAY0 + d * 86400 + u * 60 + i, int((u + i) % 2 == 0))
        for d in range(5)
        for u in range(4)
        for i in range(3)
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "time", "click"])
    frame.assign(duration=frame["click"] * 20.0).to_csv(folder / "impressions.csv", index=False)
    return folder


def one_error(err: str) -> tuple[str, Path]:
    """The single ERROR line of ``err`` and the log file it names (which must hold a traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR "), err
    assert "Traceback" not in err
    match = LOG_LINE.search(lines[0])
    assert match, lines[0]
    log = Path(match.group(1))
    assert "Traceback (most recent call last)" in log.read_text()
    return lines[0], log


def test_malformed_set_value(log_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert realdata.main(["generic", str(log_folder), "--out", str(out), "--set", "train.seeds=[0, 1"]) == 1
    line, log = one_error(capsys.readouterr().err)
    assert line.startswith("ERROR --set train.seeds: '[0, 1' is not a valid YAML value (")
    assert "Fix: write a YAML value and quote it for the shell" in line
    assert log.parent == tmp_path / "logs" and log.name.startswith("dmtl.realdata-")
    assert not out.exists()


def test_unknown_sweep_is_refused_before_any_work(
    log_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert (
        realdata.main(["generic", str(log_folder), "--out", str(out), "--sweeps", "unexposed", "nosuch"]) == 1
    )
    line, _ = one_error(capsys.readouterr().err)
    assert "unknown sweep(s) ['nosuch']" in line and "'unexposed'" in line
    assert not out.exists()


def test_set_without_a_value(log_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        realdata.main(["generic", str(log_folder), "--out", str(tmp_path / "out"), "--set", "train.seeds"])
        == 1
    )
    line, _ = one_error(capsys.readouterr().err)
    assert "--set 'train.seeds': expected KEY=VALUE with a dotted parameter key" in line


def test_set_values_are_yaml_1_2_like_params_yaml() -> None:
    # YAML 1.1 (PyYAML) reads 1e-5 as a string; params.yaml and DVC read YAML 1.2: a number.
    assert parse_assignments(["teacher.lr=1e-5", "train.seeds=[0, 1]", "data.tau=mean"]) == {
        "teacher.lr": 1e-05,
        "train.seeds": [0, 1],
        "data.tau": "mean",
    }


def test_params_file_that_is_a_folder(
    log_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["generic", str(log_folder), "--out", str(tmp_path / "out"), "--params-file", str(tmp_path)]
    assert realdata.main(args) == 1
    line, _ = one_error(capsys.readouterr().err)
    assert line.startswith(f"ERROR {tmp_path}: is a folder, not a parameters file. Fix:")
    assert not (tmp_path / "out").exists()


def test_data_path_that_is_a_file(log_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["generic", str(log_folder / "impressions.csv"), "--out", str(tmp_path / "out")]
    args += ["--params-file", str(REPO / "params.yaml")]
    assert realdata.main(args) == 1
    line, _ = one_error(capsys.readouterr().err)
    assert (
        f"{log_folder / 'impressions.csv'}: is a file, not a folder. Fix: set data.path to the folder" in line
    )
    assert "impressions.csv/impressions.csv" not in line
    assert not (tmp_path / "out").exists()


def test_preflight_refusal_runs_no_notebook(
    log_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    args = ["generic", str(log_folder), "--out", str(out), "--params-file", str(REPO / "params.yaml")]
    assert realdata.main(args) == 1
    line, _ = one_error(capsys.readouterr().err)
    assert "column 'item_id': the catalogue has 3 item(s), fewer than the largest K in eval.ks" in line
    assert not out.exists()  # refused before the first notebook: no report, no artifact


def test_the_command_prints_exactly_one_line(log_folder: Path, tmp_path: Path) -> None:
    """As a user runs it: the whole of stderr is one ERROR line, nothing else (no warning, no frame)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dmtl.realdata",
            "generic",
            str(log_folder / "nowhere"),
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    line, _ = one_error(proc.stderr)
    assert f"{log_folder / 'nowhere'}: folder not found. Fix: set data.path" in line


def test_the_notebook_command_prints_exactly_one_line(tmp_path: Path) -> None:
    """What dvc repro runs: the kernel's own start-up warnings do not join the ERROR line on stderr."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise ValueError('boom')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "fails.ipynb")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dmtl.notebook",
            str(tmp_path / "fails.ipynb"),
            str(tmp_path / "out" / "fails"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    line, _ = one_error(proc.stderr)
    assert "failed with ValueError: boom" in line and "internal error" not in line


def test_notebook_failure_log_holds_the_cells_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("def inner():\n    raise ValueError('boom')\n\ninner()")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "fails.ipynb"
    nbformat.write(nb, path)
    assert notebook_main([str(path), str(tmp_path / "out" / "fails")]) == 1
    line, log = one_error(capsys.readouterr().err)
    assert "failed with ValueError: boom" in line
    text = log.read_text()
    assert "the failing cell's traceback" in text and "inner()" in text and "raise ValueError('boom')" in text
    assert "\x1b[" not in text  # colour codes stripped


def test_malformed_notebook_parameter(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert notebook_main([str(tmp_path / "x.ipynb"), str(tmp_path / "x"), "-p", "student", "[dmtl"]) == 1
    line, _ = one_error(capsys.readouterr().err)
    assert line.startswith("ERROR -p student: '[dmtl' is not a valid YAML value")


def test_sweep_bad_values_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert sweep.main(["--param", "data.tau", "--values", "{25"]) == 2
    line, _ = one_error(capsys.readouterr().err)
    assert line.startswith("ERROR --values: '{25' is not a valid YAML value")


def test_unknown_sweep_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert sweep.main(["nonexistent", "--params-file", str(REPO / "params.yaml")]) == 2
    line, _ = one_error(capsys.readouterr().err)
    assert "unknown sweep 'nonexistent'; sweeps.grid has" in line


def test_an_internal_error_is_one_line_too(capsys: pytest.CaptureFixture) -> None:
    def broken() -> int:
        return {}["missing"]

    assert run_main("dmtl.test", broken, argv=[]) == 1
    line, log = one_error(capsys.readouterr().err)
    assert line.startswith("ERROR internal error, please report it with the log: KeyError: 'missing'")
    assert 'return {}["missing"]' in log.read_text()
    assert run_main("dmtl.test", lambda: (_ for _ in ()).throw(P.ParamsError("bad")), {P.ParamsError: 2}) == 2
