"""Position as a bias, not a shortcut (PAL, Guo et al. 2019): the teacher's and the students' position factor.

The hand-built world: one user, ``N_ITEMS`` items with a known click probability when seen
``sigmoid(effect)`` and long-read rate ``cvr``, shown at positions 0..9 examined with probability
``EXAM = 1 / (1 + position) ** 0.5`` (the simulator's law). The logging policy shows the better items higher
up, so position and item are correlated, which is what makes position a shortcut. Labels are the expected
values (soft labels), each (item, position) pair repeated as often as the policy shows it, so the
population optimum is known exactly: the factor must absorb ``EXAM`` and the position-free predictions must
be the item effects.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dmtl import params as P
from dmtl.models.position import REFERENCE_BUCKET, UNKNOWN_BUCKET, PositionBias, position_column
from dmtl.modules import (
    StudentModule,
    TeacherModule,
    build_student,
    build_teacher,
    student_position_column,
    teacher_context,
    teacher_variant,
)
from dmtl.objectives import StudentObjective
from dmtl.vocab import STUDENT_NAMES, student

REPO = Path(__file__).resolve().parents[1]
N_ITEMS, N_POS = 12, 10
EXAM = 1.0 / np.sqrt(1.0 + np.arange(N_POS))
D = torch.float32


def world(seed: int = 0) -> dict[str, torch.Tensor]:
    """One batch holding the whole hand-built log (see the module docstring)."""
    rng = np.random.default_rng(seed)
    effect = np.linspace(-2.0, 1.0, N_ITEMS)  # item i's click logit when seen
    cvr = np.linspace(0.1, 0.6, N_ITEMS)[rng.permutation(N_ITEMS)]
    rank = np.argsort(np.argsort(-effect))  # 0 = best item
    # Impressions of item i at position k: the policy shows good items at the top (counts 1..11).
    counts = 1 + np.rint(10 * np.exp(-np.abs(rank[:, None] * N_POS / N_ITEMS - np.arange(N_POS)) / 2))
    item, pos = np.nonzero(counts)
    reps = counts[item, pos].astype(int)
    item, pos = np.repeat(item, reps), np.repeat(pos, reps)
    p_click = EXAM[pos] / (1 + np.exp(-effect[item]))
    n = len(item)
    return {
        "user_x": torch.ones((n, 1), dtype=torch.long),
        "item_x": torch.from_numpy(item + 1)[:, None],
        "context_x": torch.from_numpy(pos + 1)[:, None],  # dmtl.features' encoding: position p -> p + 1
        "click": torch.tensor(p_click, dtype=D),
        "long_read": torch.tensor(
            cvr[item], dtype=D
        ),  # click * long_read = P(click) * cvr: the y_c * y_d rate
        "duration": torch.zeros(n, dtype=D),
        "effect": torch.tensor(effect, dtype=D),
        "cvr": torch.tensor(cvr, dtype=D),
    }


CARDS = {"user": [2], "item": [N_ITEMS + 1], "context": [N_POS + 1]}


@pytest.fixture(scope="module")
def study():
    return P.load(REPO / "params.yaml")


def train(module: torch.nn.Module, batch: dict, steps: int = 1000, lr: float = 0.03) -> None:
    """Full-batch steps of the module's own optimizer (so a parameter it leaves out stays put), at a learning
    rate that reaches the population optimum in well under a second."""
    torch.set_num_threads(1)  # small tensors: more threads only contend with other processes
    torch.manual_seed(0)
    opt = module.configure_optimizers()
    for group in opt.param_groups:
        group["lr"] = lr
    for _ in range(steps):
        opt.zero_grad()
        module.train_loss(batch).backward()
        opt.step()
    module.eval()


def teacher(study, position: str) -> TeacherModule:
    cfg = dataclasses.replace(
        study.teacher, position=position, n_experts=2, expert_dims=(8,), tower_dims=(8,), emb_dim=4
    )
    torch.manual_seed(0)
    return TeacherModule(build_teacher(CARDS, cfg), cfg)


def item_predictions(module: TeacherModule, batch: dict) -> dict[str, torch.Tensor]:
    """Each item's predictions, read at its first impression."""
    first = torch.tensor([int((batch["item_x"][:, 0] == i + 1).nonzero()[0]) for i in range(N_ITEMS)])
    with torch.no_grad():
        out = module({k: v[first] for k, v in batch.items() if v.dim() and len(v) == len(batch["click"])})
    return out


@pytest.fixture(scope="module")
def trained(study) -> dict[str, TeacherModule]:
    batch = world()
    out = {}
    for position in ("bias", "none", "feature"):
        out[position] = teacher(study, position)
        train(out[position], batch)
    return out


def test_bias_factor_absorbs_the_position_effect(trained) -> None:
    p_seen = trained["bias"].position.p_seen().detach().numpy()
    assert p_seen[UNKNOWN_BUCKET] == 1.0 and p_seen[REFERENCE_BUCKET] == 1.0  # pinned
    np.testing.assert_allclose(p_seen[1:], EXAM, atol=0.005)


def test_reference_predictions_recover_the_item_effect(trained) -> None:
    """The bias teacher's predictions are position-free and equal the item's click (and long-read) rate
    when seen; a teacher that ignores position (``none``) mixes in where the policy showed each item."""
    batch = world()
    truth_ctr = torch.sigmoid(batch["effect"])
    bias = item_predictions(trained["bias"], batch)
    torch.testing.assert_close(bias["p_ctr"], truth_ctr, atol=0.005, rtol=0)
    torch.testing.assert_close(bias["p_cvr"], batch["cvr"], atol=0.005, rtol=0)
    torch.testing.assert_close(bias["p_ctcvr"], truth_ctr * batch["cvr"], atol=0.005, rtol=0)
    naive = item_predictions(trained["none"], batch)
    assert (naive["p_ctr"] - truth_ctr).abs().max() > 0.1  # the shortcut's error, for scale


def test_bias_predictions_ignore_the_position_input(trained) -> None:
    batch = world()
    moved = {**batch, "context_x": torch.roll(batch["context_x"], 7, dims=0)}
    with torch.no_grad():
        for key in ("p_ctr", "p_cvr", "p_ctcvr"):
            assert torch.equal(trained["bias"](batch)[key], trained["bias"](moved)[key])
            # ... while the position-feature teacher's predictions move with it.
            assert not torch.allclose(trained["feature"](batch)[key], trained["feature"](moved)[key])
        # The factor itself does follow position: what the loss multiplies in.
        assert not torch.equal(trained["bias"](batch)["log_p_seen"], trained["bias"](moved)["log_p_seen"])


def test_predict_teacher_writes_reference_predictions_and_p_seen(trained) -> None:
    from dmtl.predict import predict_teacher

    class Data:  # the two methods predict_teacher reads
        def __init__(self, batch):
            self.b = batch

        def __len__(self):
            return len(self.b["click"])

        def batch(self, rows):
            return {k: v[rows] for k, v in self.b.items() if k not in ("effect", "cvr")}

    batch = world()
    pred = predict_teacher(trained["bias"], Data(batch), batch_size=100)
    with torch.no_grad():
        out = trained["bias"](batch)
    np.testing.assert_allclose(pred["p_ctcvr"], out["p_ctcvr"].numpy(), rtol=1e-6)  # chunks: float rounding
    np.testing.assert_allclose(pred["p_seen"], EXAM[batch["context_x"][:, 0].numpy() - 1], atol=0.005)
    assert "p_seen" not in predict_teacher(trained["none"], Data(batch), batch_size=100)


# ---------------------------------------------------------------- wiring: variants, context by name


def test_variants_set_position(study) -> None:
    assert teacher_variant(study.teacher, "position_feature").position == "feature"
    assert teacher_variant(study.teacher, "no_position").position == "none"
    assert teacher_variant(study.teacher, "no_esmm").esmm is False
    assert teacher_variant(study.teacher, "default") == study.teacher
    with pytest.raises(ValueError, match="valid: .*'position_feature'"):
        teacher_variant(study.teacher, "ple")


def test_context_inputs_are_chosen_by_name(study) -> None:
    """Other context features stay backbone inputs whatever the position handling."""
    names = ("ctx_device", "ctx_position", "ctx_hour")
    assert teacher_context(names, "feature") == [0, 1, 2]
    assert teacher_context(names, "bias") == teacher_context(names, "none") == [0, 2]
    cards = {**CARDS, "context": [3, N_POS + 1, 24]}
    for variant, n_inputs, has_factor in (
        ("default", 2, True),
        ("position_feature", 3, False),
        ("no_position", 2, False),
    ):
        model = build_teacher(cards, study.teacher, variant, names)
        module = TeacherModule(model, study.teacher, variant, names)
        assert model.n_fields[2] == n_inputs and (module.position is not None) == has_factor
    module = TeacherModule(
        build_teacher(cards, study.teacher, "default", names), study.teacher, "default", names
    )
    batch = {
        "user_x": torch.ones((4, 1), dtype=torch.long),
        "item_x": torch.tensor([[1], [2], [3], [4]]),
        "context_x": torch.tensor([[1, 1, 5], [2, 3, 5], [1, 9, 7], [0, 0, 0]]),
    }
    with torch.no_grad():
        base = module(batch)
        moved = module({**batch, "context_x": batch["context_x"].index_fill(1, torch.tensor([1]), 4)})
        device = module({**batch, "context_x": batch["context_x"].index_fill(1, torch.tensor([0]), 2)})
    assert torch.equal(base["p_ctr"], moved["p_ctr"])
    assert not torch.equal(base["log_p_seen"], moved["log_p_seen"])
    # ctx_device is an input: with trained-like weights it moves the prediction (OOV rows start at zero,
    # so move the rows first).
    with torch.no_grad():
        module.model.embedding.embedding.weight.normal_()
        base, device = (
            module(batch),
            module({**batch, "context_x": batch["context_x"].index_fill(1, torch.tensor([0]), 2)}),
        )
    assert not torch.equal(base["p_ctr"], device["p_ctr"])
    with pytest.raises(ValueError, match="same variant and context_features"):
        TeacherModule(
            build_teacher(cards, study.teacher, "position_feature", names), study.teacher, "default", names
        )
    with pytest.raises(ValueError, match="context_features"):
        build_teacher(cards, study.teacher, "default", ("ctx_position",))


def test_position_bias_module() -> None:
    bias = PositionBias(5)
    with torch.no_grad():
        bias.logit.copy_(torch.tensor([9.0, 9.0, 0.0, -1.0, 2.0]))
    out = bias(torch.tensor([0, 1, 2, 3, 4]))
    torch.testing.assert_close(out["log_p_seen"][:2], torch.zeros(2))  # pinned: P(seen) = 1
    assert torch.isneginf(out["log_p_unseen"][:2]).all()
    torch.testing.assert_close(out["log_p_seen"][2:].exp(), torch.sigmoid(torch.tensor([0.0, -1.0, 2.0])))
    torch.testing.assert_close(out["log_p_unseen"][2:].exp(), torch.sigmoid(torch.tensor([0.0, 1.0, -2.0])))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        bias(torch.tensor([5]))
    assert position_column(("ctx_device", "ctx_position")) == 1 and position_column(("ctx_device",)) is None


# ---------------------------------------------------------------- students


def ctr_student(study, position_bias: bool) -> StudentModule:
    common = dataclasses.replace(
        study.students.common, position_bias=position_bias, tower_dims=(8,), out_dim=4
    )
    cfg = dataclasses.replace(study.students["ctr"], emb_dim=4)
    torch.manual_seed(0)
    model = build_student(CARDS, common, cfg)
    column = student_position_column(common, cfg, ("ctx_position",))
    objective = StudentObjective(cfg, "pointwise", 1.0, None, n_negatives=1024)
    return StudentModule(model, cfg, objective, duration_cap=1.0, position_column=column)


def test_student_position_factor_absorbs_position_and_towers_never_see_it(study) -> None:
    batch = world()
    biased, plain = ctr_student(study, True), ctr_student(study, False)
    assert biased.position is not None and plain.position is None
    for module in (biased, plain):
        train(module, batch)
    np.testing.assert_allclose(biased.position.p_seen().detach().numpy()[1:], EXAM, atol=0.01)
    first = torch.tensor([int((batch["item_x"][:, 0] == i + 1).nonzero()[0]) for i in range(N_ITEMS)])
    one = {"user_x": batch["user_x"][first], "item_x": batch["item_x"][first]}
    truth = torch.sigmoid(batch["effect"])
    with torch.no_grad():
        assert (torch.sigmoid(biased(one)) - truth).abs().max() < 0.01
        assert (torch.sigmoid(plain(one)) - truth).abs().max() > 0.1
        # Serving: the towers' logits, the same whatever the position (retrieval never sees it).
        moved = {**batch, "context_x": torch.roll(batch["context_x"], 5, dims=0)}
        assert torch.equal(biased(batch), biased(moved))
    # The towers hold no position parameter: what retrieval exports is the towers alone.
    assert not any("position" in name for name in biased.model.state_dict())


def test_student_position_column_follows_the_vocabulary(study) -> None:
    common = study.students.common
    on, off = (
        dataclasses.replace(common, position_bias=True),
        dataclasses.replace(common, position_bias=False),
    )
    for name in STUDENT_NAMES:
        cfg = study.students[name]
        assert student_position_column(on, cfg, ("ctx_position",)) == (
            0 if student(name).click_label else None
        )
        assert student_position_column(off, cfg, ("ctx_position",)) is None
        assert student_position_column(on, cfg, ("ctx_device",)) is None  # no position recorded
    assert {s for s in STUDENT_NAMES if student(s).click_label} == {"ctr", "weighted_lr", "ctcvr_hard"}
