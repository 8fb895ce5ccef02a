"""Smoke run of the whole DVC pipeline on the tiny preset: every notebook executes through papermill.

This is the test that makes a broken notebook fail CI. It copies the pipeline (dvc.yaml, notebooks, the
package sources DVC tracks) into a fresh git + DVC repository with tiny parameters and runs ``dvc repro``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY

pytestmark = pytest.mark.timeout(1500)


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True
    )


def _tiny_params() -> dict:
    from dmtl import params as P

    return P.load(REPO / "params.yaml", TINY)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("dvc_smoke")
    for item in ("dvc.yaml", "notebooks", "src", "data.dvc"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, repo / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, repo / item)
    (repo / "params.yaml").write_text(yaml.safe_dump(_tiny_params().to_dict(), sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    assert _dvc(repo, "init", "-q").returncode == 0
    shutil.copytree(REPO / ".dvc" / "plots", repo / ".dvc" / "plots")  # the study's plot templates
    (repo / "data").mkdir()
    assert _dvc(repo, "add", "-q", "data").returncode == 0
    run = _dvc(repo, "repro")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    (repo.parent / f"{repo.name}.repro.log").write_text(run.stdout + run.stderr)  # what the terminal showed
    return repo


def test_repro_renders_every_notebook(tiny_repo):
    names = _tiny_params().students.names
    stems = ["01_data", "02_teacher", "04_evaluate", "05_report"] + [f"03_student_{n}" for n in names]
    for stem in stems:
        assert (tiny_repo / "reports" / f"{stem}.ipynb").exists(), stem
        html = (tiny_repo / "reports" / f"{stem}.html").read_text()
        assert "<html" in html.lower() and "Traceback" not in html
    # Every sweep point leaves its executed notebook too.
    assert list((tiny_repo / "artifacts" / "sweeps" / "hard_weight").glob("*/sweep_point.ipynb"))


def test_reports_show_every_figure_their_stage_draws(tiny_repo):
    """Each report carries the PNGs its notebook writes under plots/ (issue 16: none used to)."""
    names = _tiny_params().students.names
    drawn = {"01_data": 1, "02_teacher": 1, "04_evaluate": 0, **{f"03_student_{n}": 1 for n in names}}
    drawn["05_report"] = len(list((tiny_repo / "plots" / "figures" / "report").glob("*.png")))
    assert drawn["05_report"] == 7  # 6 figures of the main comparison and the one sweep's
    for stem, n in drawn.items():
        html = (tiny_repo / "reports" / f"{stem}.html").read_text()
        assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', html)) == n, stem


def test_the_terminal_shows_progress_and_no_kernel_noise(tiny_repo):
    log = (tiny_repo.parent / f"{tiny_repo.name}.repro.log").read_text()
    assert "teacher (mmoe) seed 0 (1/2): " in log and "teacher (mmoe) seed 1 (2/2): " in log
    for name in _tiny_params().students.names:
        assert f"\n{name} seed 1 (2/2): " in log, name
    assert "[students.dmtl.hard_weight=1.0] dmtl seed 0 (1/2): " in log  # the sweep's one new point
    assert "without encryption" not in log and "KeyboardInterrupt" not in log and "Traceback" not in log


def test_metrics_plots_and_status(tiny_repo):
    shown = _dvc(tiny_repo, "metrics", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "auc_ctcvr" in shown.stdout
    # The table a terminal shows: one short row per model, a few headline columns.
    table = _dvc(tiny_repo, "metrics", "show").stdout.splitlines()
    assert len(table) == 1 + len(_tiny_params().students.names) + 1 + len(_tiny_params().eval.baselines)
    assert max(len(line) for line in table) <= 120, table
    plots = _dvc(tiny_repo, "plots", "show", "-o", str(tiny_repo / "plots_html"))
    assert plots.returncode == 0, plots.stderr
    assert (tiny_repo / "plots_html" / "index.html").exists()
    status = _dvc(tiny_repo, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout or "{}") == {}, status.stdout
    again = _dvc(tiny_repo, "repro")
    assert again.returncode == 0 and "up to date" in again.stdout.lower(), again.stdout


def test_changing_one_student_reruns_only_what_depends_on_it(tiny_repo):
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    params["students"]["ctr"]["lr"] = params["students"]["ctr"]["lr"] * 2
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _dvc(tiny_repo, "status", "--json")
    changed = set(json.loads(status.stdout))
    assert "student@ctr" in changed
    assert not {"prepare", "teacher", "student@dmtl", "student@weighted_lr", "evaluate", "report"} & changed
    rerun = _dvc(tiny_repo, "repro")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    ran = {line.split("'")[1] for line in rerun.stdout.splitlines() if line.startswith("Running stage")}
    assert {"student@ctr", "evaluate", "report"} <= ran
    assert (
        not {"prepare", "teacher", "student@dmtl", "student@duration_regression", "student@weighted_lr"} & ran
    )
