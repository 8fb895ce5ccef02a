"""The stages end to end on the tiny preset: outputs, numbers, determinism, the report's table."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from dmtl.features import Prepared
from dmtl.io import read_json
from dmtl.metrics import auc
from dmtl.paths import Paths
from dmtl.stages.evaluate import run_evaluate
from dmtl.stages.prepare import run_prepare
from dmtl.stages.student import run_student
from dmtl.stages.teacher import run_teacher


def test_every_model_and_metric_is_reported(tiny_run, tiny_params):
    summary = read_json(tiny_run / "metrics" / "metrics.json")
    models = set(summary["models"])
    assert models == {"teacher", *tiny_params.students.names, *tiny_params.eval.baselines}
    for name in tiny_params.students.names:
        for k in tiny_params.eval.ks:
            for base in ("recall_long", "recall_click", "bait_share", "oracle_read_time"):
                d = summary["models"][name][f"{base}@{k}"]
                assert len(d["values"]) == 2 and d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert "recall_long@100" not in summary["models"]["teacher"]  # the teacher has no towers: not retrievable
    for other in set(tiny_params.students.names) - {"dmtl"}:
        assert "verdict" in summary["comparisons"][f"dmtl_vs_{other}"]["auc_ctcvr"]


def test_paired_difference_is_computed_from_the_per_seed_values(tiny_run):
    summary = read_json(tiny_run / "metrics" / "metrics.json")
    per_seed = pd.read_parquet(tiny_run / "metrics" / "per_seed.parquet")
    a = per_seed[per_seed.model == "dmtl"].sort_values("seed")["recall_long@100"].to_numpy()
    b = per_seed[per_seed.model == "ctr"].sort_values("seed")["recall_long@100"].to_numpy()
    d = summary["comparisons"]["dmtl_vs_ctr"]["recall_long@100"]
    assert d["mean"] == pytest.approx(float(np.mean(a - b)))


def _popularity_and_constant_auc_ctcvr(tiny_run) -> tuple[float, float]:
    prepared = Prepared.read(tiny_run / "artifacts" / "data")
    imp = prepared.impressions
    train, test = imp[imp.split == 0], imp[imp.split == 2]
    y = (test["click"] * test["long_read"]).to_numpy()
    # Popularity predictor: each item's training click-and-long-read rate (unseen items: global rate).
    rate = (train["click"] * train["long_read"]).groupby(train["item_idx"]).mean()
    pop = test["item_idx"].map(rate).fillna(rate.mean()).to_numpy()
    return auc(y, pop), auc(y, np.zeros(len(y)))


def test_teacher_beats_constant_on_auc_ctcvr(tiny_run):
    _, constant_auc = _popularity_and_constant_auc_ctcvr(tiny_run)
    assert constant_auc == 0.5
    teacher = read_json(tiny_run / "metrics" / "metrics.json")["models"]["teacher"]["auc_ctcvr"]
    assert min(teacher["values"]) > constant_auc


@pytest.mark.xfail(
    strict=True,
    reason="issue 15: without the position shortcut (teacher.position = bias, predictions at the top of the "
    "feed) the teacher does not beat the items' training long-read rate on the tiny preset (0.70 vs 0.72); "
    "remove this mark once the teacher does",
)
def test_teacher_beats_popularity_on_auc_ctcvr(tiny_run):
    popularity_auc, _ = _popularity_and_constant_auc_ctcvr(tiny_run)
    teacher = read_json(tiny_run / "metrics" / "metrics.json")["models"]["teacher"]["auc_ctcvr"]
    assert teacher["mean"] > popularity_auc, (teacher, popularity_auc)


def test_teacher_outputs_respect_esmm(tiny_run, tiny_params):
    pred = pd.read_parquet(Paths(tiny_run).teacher("default", 0) / "predictions.parquet")
    assert (pred["p_ctcvr"] <= pred["p_ctr"] + 1e-7).all()
    np.testing.assert_allclose(pred["p_ctcvr"], pred["p_ctr"] * pred["p_cvr"], rtol=1e-5, atol=1e-7)
    assert len(pred) == len(Prepared.read(tiny_run / "artifacts" / "data").impressions)


def test_teacher_predictions_are_at_the_reference_position(tiny_run, tiny_params):
    """teacher.position = bias (the default): the written predictions are position-free, i.e. those at the top
    of the feed, where the learned factor P(seen | position) is 1; p_seen rides along as a diagnostic."""
    from dmtl.artifacts import read_position_bias

    assert tiny_params.teacher.position == "bias"
    prepared = Prepared.read(tiny_run / "artifacts" / "data")
    table = read_position_bias(tiny_run, 0).set_index("position")
    factor = table["p_seen"]
    assert factor[0] == 1.0 and factor[-1] == 1.0  # pinned: top of the feed, position not recorded
    assert ((factor > 0) & (factor <= 1)).all()
    train_positions = table.index[(table.index >= 0) & (table["n_train"] > 0)]
    train = prepared.impressions[prepared.split_mask("train")]
    assert table["n_train"].sum() == len(train)
    # Examination falls down the feed: the last position shown is seen less than the second.
    assert factor[train_positions.max()] < factor[1] < 1.0
    pred = pd.read_parquet(Paths(tiny_run).teacher("default", 0) / "predictions.parquet")
    bucket = prepared.impressions["ctx_position"].to_numpy()
    np.testing.assert_allclose(pred["p_seen"], factor.to_numpy()[bucket], rtol=1e-6)
    assert read_position_bias(tiny_run, 0, "no_esmm") is not None


def test_student_embeddings_cover_users_and_corpus(tiny_run, tiny_params):
    prepared = Prepared.read(tiny_run / "artifacts" / "data")
    for name in tiny_params.students.names:
        d = Paths(tiny_run).student(name, 1)
        u, v = np.load(d / "user_emb.npy"), np.load(d / "item_emb.npy")
        assert u.shape == (len(prepared.users), tiny_params.students.common.out_dim)
        assert v.shape == (len(prepared.items), tiny_params.students.common.out_dim)
        assert np.isfinite(u).all() and np.isfinite(v).all()


def test_report_table_equals_metrics_file(tiny_run):
    from dmtl.report import results_numbers, results_table

    summary = read_json(tiny_run / "metrics" / "metrics.json")
    numbers = results_numbers(summary)
    for row in numbers.to_dict("records"):
        d = summary["models"][row["model"]][row["metric"]]
        for key in ("mean", "ci_low", "ci_high"):
            # a figure without an interval (an index check measured on one seed) is None there, NaN here
            assert row[key] == d[key] or (d[key] is None and np.isnan(row[key])), (
                row["model"],
                row["metric"],
                key,
            )
    table = results_table(summary)
    d = summary["models"]["dmtl"]["auc_ctcvr"]
    assert table.loc["auc_ctcvr", "dmtl"] == f"{d['mean']:.4f} [{d['ci_low']:.4f}, {d['ci_high']:.4f}]"


# Wall-clock seconds a stage records beside its results: the only bytes two identical runs may not share.
WALL_CLOCK = "seconds"


def _without_wall_clock(path):
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
        return table.drop(columns=WALL_CLOCK, errors="ignore").to_dict("list")
    data = json.loads(path.read_text())
    data.pop(WALL_CLOCK, None)
    for run in data.get("runs", []) if isinstance(data, dict) else []:
        run.pop(WALL_CLOCK, None)
    return data


def test_same_params_give_identical_metrics(tiny_run, tiny_params, tmp_path):
    """Determinism: a second run from scratch of every stage writes byte-identical metrics files.

    Files holding wall-clock seconds (the data summary, the per-run tables of teacher and students) are
    identical once those seconds are removed, and byte-identical in everything else.
    """
    run_prepare(tiny_params, tmp_path)
    run_teacher(tiny_params, tmp_path)
    for name in tiny_params.students.names:
        run_student(tiny_params, name, tmp_path)
    run_evaluate(tiny_params, tmp_path)
    first = sorted(p.relative_to(tiny_run) for p in (tiny_run / "metrics").rglob("*") if p.is_file())
    second = sorted(p.relative_to(tmp_path) for p in (tmp_path / "metrics").rglob("*") if p.is_file())
    assert first == second and len(first) >= 5
    timed = []
    for rel in first:
        a, b = (tiny_run / rel).read_bytes(), (tmp_path / rel).read_bytes()
        if a != b:
            timed.append(str(rel))
            assert _without_wall_clock(tiny_run / rel) == _without_wall_clock(tmp_path / rel), rel
    # metrics.json (every reported number), teacher.json and tau.json carry no clock: byte for byte.
    assert not {"metrics/metrics.json", "metrics/teacher.json", "metrics/tau.json"} & set(timed)
    assert set(timed) <= {"metrics/data.json", "metrics/teacher_runs.parquet"} | {
        f"metrics/students/{name}.json" for name in tiny_params.students.names
    }


def test_tau_is_mean_clicked_training_duration(tiny_run):
    prepared = Prepared.read(tiny_run / "artifacts" / "data")
    imp = prepared.impressions
    clicked_train = imp[(imp.split == 0) & (imp.click == 1)]
    assert math.isclose(prepared.tau_seconds, float(clicked_train["duration"].mean()), rel_tol=1e-6)
    tau = read_json(tiny_run / "metrics" / "tau.json")
    assert tau["tau_seconds"] == pytest.approx(prepared.tau_seconds)


def test_joint_regime_trains_teacher_alongside_with_stop_gradient(tiny_run, tiny_params, tmp_path):
    """Joint training: the student distils a teacher trained in the same loop; it needs no frozen teacher."""
    import os

    from dmtl import params as P

    params = P.apply_overrides(
        tiny_params, {"students.dmtl.teacher_training": "joint", "train.seeds": [0], "train.max_epochs": 1}
    )
    (tmp_path / "artifacts").mkdir()
    os.symlink(tiny_run / "artifacts" / "data", tmp_path / "artifacts" / "data")  # no teacher folder at all
    summary = run_student(params, "dmtl", tmp_path)
    assert summary["runs"][0]["epochs"] == 1 and np.isfinite(summary["runs"][0]["best_val_loss"])
    emb = np.load(Paths(tmp_path).student("dmtl", 0) / "item_emb.npy")
    assert np.isfinite(emb).all()


def test_p_ctr_x_duration_target_formula():
    import torch

    from dmtl.losses import soft_target_from_teacher as soft_label_from_teacher

    out = {
        "p_ctr": torch.tensor([0.5, 0.2, 0.9, 0.9]),
        "dur_log": torch.log1p(torch.tensor([30.0, 300.0, 0.0, 300.0])),
    }
    soft = soft_label_from_teacher(out, "p_ctr_x_duration", duration_cap=100.0)
    # p_ctr * E[duration | click] / cap, clipped to [0, 1]: 0.5*0.3, 0.2*3, 0.9*0, min(0.9*3, 1)
    torch.testing.assert_close(soft, torch.tensor([0.15, 0.6, 0.0, 1.0]))
    assert torch.equal(
        soft_label_from_teacher(out | {"p_ctcvr": torch.ones(4)}, "p_ctcvr", 1.0), torch.ones(4)
    )
    with pytest.raises(ValueError, match="p_ctcvr"):
        soft_label_from_teacher(out, "p_cvr", 1.0)


def test_student_hyperparameters_record_each_temperature_under_its_own_name(tiny_run):
    """The cosine temperature of the towers and the KL temperature of distillation are two settings: the
    metrics file of a distilled student records both, and never one in place of the other."""
    ctr = read_json(tiny_run / "metrics" / "students" / "ctr.json")["hyperparameters"]
    dmtl = read_json(tiny_run / "metrics" / "students" / "dmtl.json")["hyperparameters"]
    assert dmtl["cosine_temperature"] == ctr["cosine_temperature"]
    assert "kl_temperature" in dmtl and "kl_temperature" not in ctr and "temperature" not in dmtl


def test_unknown_student_is_named(tiny_params, tmp_path):
    with pytest.raises(ValueError, match="students.names"):
        run_student(tiny_params, "dssm", tmp_path)
