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


def test_tuning_chooses_alike_and_applies_the_choice(tmp_path):
    """One metric for all: the teacher's best point, the objective whose students retrieve better on average,
    each student's best point under it, and each distillation variant's own point for its ablation sweep."""
    rows = []
    for objective, shift in (("pointwise", 0.0), ("sampled_softmax", 0.1)):
        for model in ("ctr", "dmtl"):
            for lr, val in ((0.01, 0.30), (0.03, 0.35 if model == "ctr" else 0.25)):
                rows.append(
                    {
                        "model": model,
                        "variant": "",
                        "objective": objective,
                        "lr": lr,
                        "emb_dim": 16,
                        "val": val + shift,
                    }
                )
    rows += [
        {"model": "teacher", "variant": "", "objective": "", "lr": 0.003, "emb_dim": 32, "val": 0.74},
        {"model": "teacher", "variant": "", "objective": "", "lr": 0.01, "emb_dim": 16, "val": 0.73},
        {
            "model": "dmtl",
            "variant": "distill_loss=mse",
            "objective": "sampled_softmax",
            "lr": 0.003,
            "emb_dim": 16,
            "val": 0.2,
        },
        {
            "model": "dmtl",
            "variant": "distill_loss=mse",
            "objective": "sampled_softmax",
            "lr": 0.03,
            "emb_dim": 16,
            "val": 0.3,
        },
    ]
    chosen = tuning.choose(pd.DataFrame(rows))
    assert chosen["teacher"] == {"lr": 0.003, "emb_dim": 32}
    assert chosen["objective"] == "sampled_softmax"
    assert chosen["students"] == {"ctr": {"lr": 0.03, "emb_dim": 16}, "dmtl": {"lr": 0.01, "emb_dim": 16}}
    assert chosen["distill_variants"] == {"distill_loss=mse": {"lr": 0.03, "emb_dim": 16}}
    tuning.write_outputs(pd.DataFrame(rows), chosen, tmp_path)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        (REPO / "params.yaml").read_text()
        + "    distill_loss: {param: students.dmtl.distill_loss, values: [bce, mse]}\n"  # a variant's own sweep
    )
    tuning.apply(tmp_path / "chosen.yaml", params_file)
    from dmtl.params import load

    applied = load(params_file)
    assert applied.teacher.emb_dim == 32 and applied.students.common.objective == "sampled_softmax"
    assert applied.students["ctr"].lr == 0.03 and applied.students["dmtl"].lr == 0.01
    # The objective ablation trains each student at its own point under the other objective.
    assert chosen["by_objective"]["pointwise"]["students"] == {
        "ctr": {"lr": 0.03, "emb_dim": 16},
        "dmtl": {"lr": 0.01, "emb_dim": 16},
    }
    assert applied.sweeps.grid["objective"].at["pointwise"] == {
        "students.ctr.lr": 0.03,
        "students.ctr.emb_dim": 16,
        "students.dmtl.lr": 0.01,
        "students.dmtl.emb_dim": 16,
    }
    assert applied.sweeps.grid["distill_loss"].at["mse"] == {
        "students.dmtl.lr": 0.03,
        "students.dmtl.emb_dim": 16,
    }
    assert "# Parameters of the DMTL study" in params_file.read_text()  # comments survive


def test_committed_tuning_grid_is_the_same_for_every_model():
    """Fairness of the committed tuning run: every model and variant was tried on exactly the grid of
    params.yaml, on every objective, and params.yaml uses the committed choice."""
    from dmtl.params import load

    params = load(REPO / "params.yaml")
    grid, chosen = tuning.read_grid(REPO / "tuning")
    points = {tuple(p.values()) for p in tuning.grid_points(params.tuning.grid)}
    for key, part in grid.groupby(["model", "variant", "objective"], dropna=False):
        tried = [tuple(r) for r in part[list(tuning.GRID_KEYS)].itertuples(index=False)]
        assert len(tried) == len(set(tried)) and set(tried) == points, key
    assert set(grid.loc[grid["model"] != "teacher", "model"]) == set(params.students.names)
    assert chosen == tuning.choose(grid)
    assert params.students.common.objective == chosen["objective"]
    for key, value in chosen["teacher"].items():
        assert getattr(params.teacher, key) == pytest.approx(value)
    for student, values in chosen["students"].items():
        for key, value in values.items():
            assert getattr(params.students[student], key) == pytest.approx(value), (student, key)


def test_sweeps_under_another_objective_use_that_objectives_tuned_points():
    """An ablation that trains under the objective the tuning did not choose (the default's objective sweep,
    the full run's pointwise distillation sweeps) puts every student at its point tuned under that objective."""
    import yaml

    from dmtl.fullrun import read_full
    from dmtl.params import load

    _, chosen = tuning.read_grid(REPO / "tuning")
    params = load(REPO / "params.yaml")
    _, overrides = read_full(REPO / "full.yaml")
    specs = [spec.to_dict() for spec in params.sweeps.grid.values()]
    specs += [yaml.safe_load(yaml.safe_dump(v)) for k, v in overrides.items() if k.startswith("sweeps.grid.")]
    checked = 0
    for spec in specs:
        if not isinstance(spec, dict) or "param" not in spec:
            continue
        for value in spec["values"]:
            setting = {**spec.get("fixed", {}), **spec.get("at", {}).get(str(value), {})}
            objective = (
                value
                if spec["param"] == "students.common.objective"
                else setting.get("students.common.objective")
            )
            if objective is None or objective == chosen["objective"]:
                continue
            found = chosen["by_objective"][objective]
            for student, point in found["students"].items():
                for key, tuned in point.items():
                    assert setting[f"students.{student}.{key}"] == pytest.approx(tuned), (
                        spec["param"],
                        student,
                    )
            for variant, point in found["distill_variants"].items():  # one point serves every variant
                assert point == found["students"]["dmtl"], variant
            checked += 1
    assert checked >= 3  # the objective sweep's pointwise value and the two pointwise distillation sweeps
