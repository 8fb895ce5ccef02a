"""README and report text come from the metrics file; tuning picks each student's own best point."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import REPO

from dmtl import readme, tuning
from dmtl.io import read_json


def test_readme_results_match_the_metrics_files():
    """The README's generated sections equal what dmtl.readme renders from the committed output files."""
    text = (REPO / "README.md").read_text()
    assert readme.render(text, REPO) == text, "README is stale: run `python -m dmtl.readme`"


def test_readme_section_quotes_metrics(tiny_run, tmp_path):
    summary = read_json(tiny_run / "metrics" / "metrics.json")
    md = readme.results_markdown(summary, "t")
    d = summary["models"]["dmtl"]["auc_ctcvr"]
    assert f"{d['mean']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]" in md
    fake = tmp_path / "README.md"
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "metrics.json").write_text((tiny_run / "metrics" / "metrics.json").read_text())
    fake.write_text("a\n<!-- results:simulated:start -->\nold\n<!-- results:simulated:end -->\nb\n")
    assert readme.main(["--readme", str(fake)]) == 0
    out = fake.read_text()
    assert "old" not in out and f"{d['mean']:.3f}" in out and out.startswith("a\n") and out.endswith("b\n")
    assert readme.main(["--readme", str(fake), "--check"]) == 0


def test_tuning_chooses_lowest_validation_loss_per_student_and_applies_it(tmp_path):
    grid = pd.DataFrame(
        [
            {"student": "ctr", "lr": 0.01, "emb_dim": 16, "weight_decay": 0.0, "val_loss": 0.30},
            {"student": "ctr", "lr": 0.001, "emb_dim": 32, "weight_decay": 0.0, "val_loss": 0.25},
            {"student": "dmtl", "lr": 0.003, "emb_dim": 16, "weight_decay": 1e-5, "val_loss": 0.10},
            {"student": "dmtl", "lr": 0.01, "emb_dim": 16, "weight_decay": 0.0, "val_loss": 0.11},
        ]
    )
    chosen = tuning.choose(grid)
    assert chosen == {
        "ctr": {"lr": 0.001, "emb_dim": 32, "weight_decay": 0.0},
        "dmtl": {"lr": 0.003, "emb_dim": 16, "weight_decay": 1e-5},
    }
    tuning.write_outputs(grid, chosen, tmp_path)
    params_file = tmp_path / "params.yaml"
    params_file.write_text((REPO / "params.yaml").read_text())
    tuning.apply(tmp_path / "chosen.yaml", params_file)
    from dmtl.params import read_yaml

    applied = read_yaml(params_file)
    assert applied["students"]["ctr"]["emb_dim"] == 32 and applied["students"]["dmtl"]["weight_decay"] == 1e-5
    assert "# Parameters of the DMTL study" in params_file.read_text()  # comments survive


def test_grid_is_the_same_for_every_student():
    """Fairness of the committed tuning run: every student was tried on exactly the grid of params.yaml."""
    from dmtl.params import load, read_yaml

    params = load(REPO / "params.yaml")
    points = {tuple(p.values()) for p in tuning.grid_points(params.tuning.grid)}
    grid = pd.read_csv(REPO / "tuning" / "grid.csv")
    assert set(grid["student"]) == set(params.students.names)
    for student, part in grid.groupby("student"):
        tried = [tuple(r) for r in part[list(tuning.GRID_KEYS)].itertuples(index=False)]
        assert len(tried) == len(set(tried)) and set(tried) == points, student
    # The committed choice is each student's lowest validation loss, and params.yaml uses it.
    chosen = read_yaml(REPO / "tuning" / "chosen.yaml")
    assert chosen == tuning.choose(grid)
    for student, values in chosen.items():
        for key, value in values.items():
            assert getattr(params.students[student], key) == pytest.approx(value), (student, key)
