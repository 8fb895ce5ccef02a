"""Sweeps: which stage a parameter reruns from, and when a grid point is the main run itself."""

from __future__ import annotations

import pandas as pd
import pytest

from dmtl import params as P
from dmtl import sweep
from dmtl.config import SweepSpec


@pytest.mark.parametrize(
    ("param", "stage"),
    [
        ("data.tau", "prepare"),
        ("data.sim.clickbait_share", "prepare"),
        ("teacher.w_ctcvr", "teacher"),
        ("train.max_epochs", "teacher"),
        ("students.dmtl.distill_loss", "student"),
        ("eval.ci_level", "teacher"),  # the teacher stage reports its intervals at this level
        ("eval.ks", "evaluate"),
    ],
)
def test_first_stage(param, stage):
    assert sweep.first_stage(param) == stage


def test_unknown_group_cannot_be_swept():
    with pytest.raises(P.ParamsError, match="cannot sweep"):
        sweep.first_stage("sweeps.seeds")


def test_a_point_whose_models_the_main_run_trained_only_evaluates(tiny_run, tiny_params):
    base = P.apply_overrides(tiny_params, {"sweeps.seeds": list(tiny_params.train.seeds)})
    spec = SweepSpec("students.dmtl.hard_weight", (0.0, 0.5))

    def point(value, **extra):
        return P.apply_overrides(base, {**sweep.point_overrides(base, spec, value), **extra})

    assert sweep.same_models_as_main(base, point(0.0), tiny_run)
    assert not sweep.same_models_as_main(base, point(0.5), tiny_run)
    # Fewer seeds than the main run: the same models (each seed's run is deterministic).
    assert sweep.same_models_as_main(base, point(0.0, **{"train.seeds": [1]}), tiny_run)
    assert not sweep.same_models_as_main(base, point(0.0, **{"train.seeds": [0, 5]}), tiny_run)
    # A simulator knob set to its preset's default is the main run's world.
    from dmtl.sources.simulator.config import make_config

    knob = SweepSpec("data.sim.clickbait_share", (0.15,))
    assert make_config("tiny").clickbait_share == 0.15
    same = P.apply_overrides(base, sweep.point_overrides(base, knob, 0.15))
    assert sweep.same_models_as_main(base, same, tiny_run)
    # The evaluation's own settings never require retraining.
    assert sweep.same_models_as_main(base, point(0.0, **{"eval.ks": [10, 20]}), tiny_run)


def test_point_overrides_set_every_strong_competitor_and_the_fixed_keys(tiny_params):
    spec = SweepSpec("students.dmtl.kl_temperature", (2.0,), {"students.dmtl.distill_loss": "kl"})
    over = sweep.point_overrides(tiny_params, spec, 2.0)
    assert over["students.dmtl.distill_loss"] == "kl" and over["students.dmtl.kl_temperature"] == 2.0
    assert over["students.names"] == [*tiny_params.sweeps.students] and over["teacher.variants"] == []
    assert sweep.first_stage(spec.param, *spec.fixed) == "student"
    assert sweep.first_stage("students.dmtl.hard_weight", "data.sim.fan_strength") == "prepare"


def test_student_sweep_retrains_only_the_swept_student(tiny_run, tiny_params, tmp_path):
    import yaml

    base_root = tmp_path / "base"
    base_root.mkdir()
    # The main run, as the sweep sees it: its params file and its outputs.
    (base_root / "params.yaml").write_text(yaml.safe_dump(tiny_params.to_dict(), sort_keys=False))
    (base_root / "artifacts").symlink_to(tiny_run / "artifacts")
    (base_root / "metrics").symlink_to(tiny_run / "metrics")
    point = P.apply_overrides(
        tiny_params,
        sweep.point_overrides(tiny_params, SweepSpec("students.dmtl.hard_weight", (1.0,)), 1.0),
    )
    point = P.apply_overrides(point, {"train.seeds": tiny_params.train.seeds})
    root = tmp_path / "point"
    table = sweep.run_point(
        point, root, start="student", base_root=base_root, param="students.dmtl.hard_weight"
    )
    assert (root / "artifacts" / "students" / "ctr").is_symlink()
    assert not (root / "artifacts" / "students" / "dmtl").is_symlink()
    main = pd.read_parquet(tiny_run / "metrics" / "per_seed.parquet")
    ctr_main = main[main.model == "ctr"].reset_index(drop=True)
    ctr_point = table[table.model == "ctr"].reset_index(drop=True)
    pd.testing.assert_frame_equal(ctr_point, ctr_main)
    dmtl_main = main[main.model == "dmtl"]["auc_ctcvr"].to_numpy()
    assert not (table[table.model == "dmtl"]["auc_ctcvr"].to_numpy() == dmtl_main).all()


@pytest.mark.slow
def test_points_run_side_by_side_give_the_sequential_results(tiny_run, tiny_params, tmp_path):
    """sweeps.workers = 2: two grid points execute their notebooks at once (papermill, one thread each),
    and the table equals the one the points give run one after the other in this process."""
    import yaml

    base_root = tmp_path / "base"
    base_root.mkdir()
    (base_root / "params.yaml").write_text(yaml.safe_dump(tiny_params.to_dict(), sort_keys=False))
    (base_root / "artifacts").symlink_to(tiny_run / "artifacts")
    (base_root / "metrics").symlink_to(tiny_run / "metrics")
    assert tiny_params.sweeps.workers == 2
    results = {}
    for mode, papermill in (("parallel", True), ("sequential", False)):
        results[mode] = sweep.run_sweep(
            SweepSpec("students.dmtl.hard_weight", (0.5, 1.0)),
            tmp_path / mode / "out",
            tmp_path / mode / "runs",
            params_file=base_root / "params.yaml",
            base_root=base_root,
            use_papermill=papermill,
        )
    # Both points really ran as notebooks, side by side: their runs overlap in time.
    from dmtl.timings import notebook_span

    spans = [notebook_span(p) for p in sorted((tmp_path / "parallel" / "runs").glob("*/sweep_point.ipynb"))]
    assert len(spans) == 2 and all(spans)
    assert max(s for s, _ in spans) < min(e for _, e in spans)
    pd.testing.assert_frame_equal(results["parallel"], results["sequential"])
