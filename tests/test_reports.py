"""What a reader gets: every figure a notebook draws is in its executed notebook and its HTML report, the
report hides the code (a with-code rendering beside it), counts print as integers, and figures keep one
colour per model. Also what the terminal gets from a stage: progress lines, no kernel noise."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, TINY

from dmtl import plots, progress, report
from dmtl import vocab as V
from dmtl.notebook import execute
from dmtl.vocab import model_color

IMG = re.compile(r'<img[^>]*src="data:image/png;base64,([^"]+)"')


@pytest.fixture(scope="module")
def report_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """05_report executed on a copy of the tiny run's metrics and plots: (root, output stem)."""
    root = tmp_path_factory.mktemp("report_root")
    for folder in ("metrics", "plots"):
        shutil.copytree(tiny_run / folder, root / folder)
    stem = root / "reports" / "05_report"
    parameters = {"params_file": str(REPO / "params.yaml"), "root": str(root), "overrides": json.dumps(TINY)}
    execute(REPO / "notebooks" / "05_report.ipynb", stem, parameters, with_code=True)
    return root, stem


def test_report_html_shows_every_figure_the_notebook_draws(report_run):
    root, stem = report_run
    drawn = sorted((root / "plots" / "figures" / "report").glob("*.png"))
    # ranking AUC bars, retrieval bars, metrics against K, two paired differences, student vs teacher
    # (the tiny run has no sweeps, so no sweep figure).
    assert [p.stem for p in drawn] == [
        "at_k_curves",
        "paired_bait_share",
        "paired_recall_long",
        "ranking_auc",
        "retrieval_bars",
        "student_vs_teacher",
    ]
    html = stem.with_suffix(".html").read_text()
    shown = [base64.b64decode(b) for b in IMG.findall(html)]
    assert len(shown) == len(drawn)
    # The report shows exactly the files under plots/, in the order the notebook draws them.
    assert sorted(shown) == sorted(p.read_bytes() for p in drawn)
    executed = nbformat.read(stem.with_suffix(".ipynb"), as_version=4)
    images = [o for c in executed.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == len(drawn)
    # Each figure sits in the output of the cell that draws it: the bars cell carries two, in order.
    bars_cell = next(c for c in executed.cells if "metric_bars" in c.source)
    pngs = [base64.b64decode(o["data"]["image/png"]) for o in bars_cell.outputs if "data" in o]
    root_report = root / "plots" / "figures" / "report"
    assert pngs == [
        (root_report / "ranking_auc.png").read_bytes(),
        (root_report / "retrieval_bars.png").read_bytes(),
    ]


def test_report_html_hides_code_and_the_code_rendering_shows_it(report_run):
    _, stem = report_run
    html = stem.with_suffix(".html").read_text()
    with_code = (stem.parent / "05_report.code.html").read_text()
    # Code is syntax-highlighted into spans, but a name stays whole.
    assert "metric_bars" not in html and "metric_bars" in with_code
    assert "In&nbsp;[" not in html  # no prompt column without the code it numbers
    assert len(IMG.findall(with_code)) == len(IMG.findall(html))
    assert "Every model: mean [95% interval]" in html  # the text and tables stay


def test_a_rerun_without_code_removes_the_stale_code_rendering(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("y_marker = x + 1\ny_marker")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "n.ipynb")
    out = tmp_path / "out" / "n"
    execute(tmp_path / "n.ipynb", out, with_code=True)
    assert "y_marker" in (out.parent / "n.code.html").read_text()
    assert "y_marker" not in out.with_suffix(".html").read_text()
    execute(tmp_path / "n.ipynb", out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["n.html", "n.ipynb"]


def _notebook(path: Path, code: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_kernel_progress_reaches_the_terminal_not_the_notebook(tmp_path, capfd):
    """A stage's kernel inherits the terminal (fd 2): a progress line goes there, and not into the notebook."""
    code = "from dmtl.progress import emit, line\nemit(line('dmtl', 1, [0, 1, 2], 4, 12.34))\nprint('in the notebook')"
    execute(_notebook(tmp_path / "p.ipynb", code), tmp_path / "p", html=False)
    err = capfd.readouterr().err
    assert err.splitlines() == ["dmtl seed 1 (2/3): 4 epochs, 12.3 s"]
    executed = nbformat.read(tmp_path / "p.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert text == "in the notebook\n"


def test_kernels_print_nothing_to_the_terminal(tmp_path, capfd):
    """No "TCP without encryption" warning, no "KeyboardInterrupt caught in kernel" at shutdown.

    Before: the warning on every run and the interrupt on 6 runs in 48 (3 at a time, this notebook).
    """
    from concurrent.futures import ThreadPoolExecutor

    nb = _notebook(tmp_path / "q.ipynb", "import json\nm = n + 1")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda i: execute(nb, tmp_path / f"q{i}", html=False), range(6)))
    assert capfd.readouterr().err == ""


def test_progress_line_format_and_sweep_context(capsys) -> None:
    assert (
        progress.line("teacher (mmoe)", 1, [0, 1, 2], 4, 12.34)
        == "teacher (mmoe) seed 1 (2/3): 4 epochs, 12.3 s"
    )
    assert progress.line("ctr", 7, None, 1, 0.05) == "ctr seed 7: 1 epoch, 0.1 s"
    progress.set_context("students.dmtl.hard_weight=0.5")
    try:
        progress.emit(progress.line("dmtl", 0, [0], 2, 1.0))
    finally:
        progress.set_context("")
    assert capsys.readouterr().err == "[students.dmtl.hard_weight=0.5] dmtl seed 0 (1/1): 2 epochs, 1.0 s\n"


def test_training_prints_one_progress_line_per_model_and_seed(tiny_run, tiny_params, tmp_path, capsys):
    from dmtl.paths import Paths
    from dmtl.stages.student import run_student

    root = tmp_path / "run"
    Paths(root).data.parent.mkdir(parents=True)
    Paths(root).data.symlink_to(Paths(tiny_run).data)
    capsys.readouterr()
    run_student(tiny_params, "ctr", root)
    lines = capsys.readouterr().err.splitlines()
    runs = json.loads(Paths(root).student_metrics("ctr").read_text())["runs"]
    assert len(runs) == len(tiny_params.train.seeds) == 2
    assert [re.sub(r", [0-9.]+ s$", "", x) for x in lines] == [
        f"ctr seed {r['seed']} ({i + 1}/2): {r['epochs']} epoch{'s' if r['epochs'] != 1 else ''}"
        for i, r in enumerate(runs)
    ]


def test_figures_are_closed_outside_a_kernel(tmp_path: Path) -> None:
    plt.close("all")
    for _ in range(20):  # with the one below, past matplotlib's 20-open-figures warning
        plots.save(plt.subplots()[0], None)
    curves = pd.DataFrame(
        {
            "epoch": [0, 1, 0, 1],
            "train_loss": [1.0, 0.5, 0.9, 0.6],
            "val_loss": [1.1, 0.7, 1.0, 0.8],
            "student": "dmtl",
            "seed": [0, 0, 1, 1],
        }
    )
    fig = plots.learning_curves(curves, hue="student", path=tmp_path / "curves.png")
    assert plt.get_fignums() == []
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig.savefig(tmp_path / "again.png")  # a returned figure is still usable
    assert [ln.get_color() for ln in fig.axes[0].get_lines()][:1] == [model_color("dmtl")]


def test_at_k_curves_use_the_model_colours() -> None:
    table = pd.DataFrame(
        {
            "k": [50, 100] * 3,
            "model": ["ctr", "ctr", "dmtl", "dmtl", "weighted_lr", "weighted_lr"],
            "recall_long": [0.1, 0.2, 0.3, 0.4, 0.2, 0.3],
            "bait_share": [0.3, 0.2, 0.1, 0.1, 0.2, 0.1],
        }
    )
    fig = plots.at_k_curves(table, ["recall_long", "bait_share"])
    expected = {m: model_color(m) for m in ("dmtl", "ctr", "weighted_lr")}
    (legend,) = fig.legends  # one legend for the figure, in display order
    assert {
        t.get_text(): h.get_color() for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
    } == expected
    assert [t.get_text() for t in legend.get_texts()] == ["dmtl", "ctr", "weighted_lr"]
    for ax in fig.axes:
        assert ax.get_legend() is None
        # each panel's line of a model (its points at K = 50, 100) wears that model's colour
        drawn = {tuple(ln.get_ydata()): ln.get_color() for ln in ax.get_lines() if len(ln.get_ydata()) == 2}
        col = ax.get_title().removesuffix("@K")
        for model, colour in expected.items():
            assert drawn[tuple(table.loc[table["model"] == model, col])] == colour


def test_palette_fixes_models_and_teacher_variants() -> None:
    colours = plots.palette(["dmtl", "default", "no_esmm", "shared_bottom"])
    assert colours["dmtl"] == model_color("dmtl") and colours["default"] == model_color("teacher")
    # The variants' colours are their own: no model, student or baseline, wears them.
    models = {model_color(m) for m in V.MODEL_ORDER}
    assert len({colours["no_esmm"], colours["shared_bottom"]} - models) == 2


def test_counts_print_as_integers() -> None:
    summary = {
        s: {"impressions": n, "users": 3, "items": 4, "ctr": 0.125}
        for s, n in (("train", 19429), ("val", 4920), ("test", 9351))
    }
    table = report.split_table(summary)
    assert table["impressions"].tolist() == [19429, 4920, 9351]
    assert str(table["impressions"].dtype) == "int64" and table["ctr"].dtype == np.float64
    assert "19429.0" not in table.to_string() and "19429" in table.to_string()
    cal = report.calibration_table(
        {"n_impressions": 33700, "ctr": 0.10632, "checks": {"ctr": True}, "pos": [1]}
    )
    assert cal["value"].to_dict() == {"n_impressions": "33,700", "ctr": "0.1063"}
