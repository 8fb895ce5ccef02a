"""The training loop: batches grouped per Lightning step take the same updates as one batch per step, and
the recorded training loss is the sample-weighted mean of the epoch's batch losses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    from dmtl import params as P
    from dmtl.features import prepare
    from dmtl.sources.simulator.config import make_config
    from dmtl.sources.simulator.world import simulate

    params = P.load(REPO / "params.yaml", {"data.preset": "tiny"})
    log, _ = simulate(make_config("tiny"), seed=params.data.sim_seed)
    return params, prepare(log, params.data.val_days, params.data.test_days, params.data.tau)


def _train(params, **over):
    base = {"batch_size": 512, "max_epochs": 2, "patience": 5, "threads": 1}
    return dataclasses.replace(params.train, **{**base, **over})


def _student(params, prepared, lr: float | None = None):
    from dmtl.modules import StudentModule, build_student
    from dmtl.objectives import StudentObjective
    from dmtl.training import seed_everything

    seed_everything(0, 1)
    ctr = params.students["ctr"]
    if lr is not None:
        ctr = dataclasses.replace(ctr, lr=lr)
    model = build_student(prepared.cardinalities, params.students.common, ctr)
    objective = StudentObjective(ctr, "pointwise", prepared.meta["mean_clicked_train_duration"], None, 1024)
    return StudentModule(model, ctr, objective, duration_cap=prepared.meta["duration_cap_seconds"])


def test_step_groups_keep_every_batch_in_order(tiny) -> None:
    from dmtl.data import BatchStream, ImpressionTensors, StepGroups

    _, prepared = tiny
    data = ImpressionTensors(prepared)
    rows = data.indices("train")
    plain = list(BatchStream(data, rows, 500, shuffle=True, seed=3))
    groups = StepGroups(BatchStream(data, rows, 500, shuffle=True, seed=3), 4)
    got = list(groups)
    n = len(plain)
    assert len(groups) == len(got) == -(-n // 4)
    assert [len(g) for g in got] == [4] * (n // 4) + ([n % 4] if n % 4 else [])
    flat = [b for g in got for b in g]
    assert len(flat) == n
    for a, b in zip(plain, flat, strict=True):
        assert torch.equal(a["user_x"], b["user_x"]) and torch.equal(a["click"], b["click"])
    with pytest.raises(ValueError, match="steps_per_call"):
        StepGroups(BatchStream(data, rows, 500, shuffle=False), 0)


def test_grouped_steps_train_exactly_as_single_steps(tiny) -> None:
    """steps_per_call only changes how many batches one Lightning step loops over: identical weights."""
    from dmtl.data import ImpressionTensors
    from dmtl.training import fit

    params, prepared = tiny
    data = ImpressionTensors(prepared)
    states, curves = [], []
    for k in (1, 5):
        module = _student(params, prepared)
        curves.append(fit(module, data, _train(params, steps_per_call=k), seed=0))
        states.append(module.model.state_dict())
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name
    assert curves[0].equals(curves[1])
    # And the weights did move: the comparison is between two trainings, not two untouched models.
    untouched = _student(params, prepared).model.state_dict()
    assert any(not torch.equal(untouched[n], states[0][n]) for n in untouched)


def test_recorded_train_loss_is_the_epoch_mean(tiny) -> None:
    """With a zero learning rate the weights stay put, so the epoch's recorded training loss must equal the
    loss of the whole training split computed in one pass (batch means weighted by batch size)."""
    from dmtl.data import ImpressionTensors
    from dmtl.training import fit

    params, prepared = tiny
    data = ImpressionTensors(prepared)
    module = _student(params, prepared, lr=0.0)
    with torch.no_grad():
        expected = float(module._loss(data.batch(data.indices("train")), with_pairs=False))
    curve = fit(module, data, _train(params, max_epochs=1, steps_per_call=3), seed=0)
    assert curve["train_loss"].iloc[0] == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        val = float(module._loss(data.batch(data.indices("val")), with_pairs=False))
    assert curve["val_loss"].iloc[0] == pytest.approx(val, rel=1e-4)


def test_saved_weights_are_the_same_bytes_for_the_same_weights(tmp_path):
    """A stage rerun with the same params writes the same model file (DVC then sees no change)."""
    import torch

    from dmtl.training import save_state

    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    save_state(module, tmp_path / "a" / "model.pt")
    save_state(module, tmp_path / "b" / "model.pt")
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()
    loaded = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert torch.equal(loaded["weight"], module.weight)
