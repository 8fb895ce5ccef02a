"""The students' objectives: the log-Q corrected sampled softmax against its formula, and the teacher-labelled
unexposed pairs (never a logged pair, never a test impression)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmtl.losses import STUDENT_LOSSES
from dmtl.objectives import item_log_q
from dmtl.sampled_softmax import SOFTMAX_WEIGHTS, sampled_softmax_loss

D = torch.float64


def test_sampled_softmax_equals_its_formula_with_log_q_and_accidental_hits():
    user = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=D)
    item = torch.tensor([[2.0, 0.0], [0.0, 1.0], [2.0, 0.0]], dtype=D)
    rows = torch.tensor([7, 3, 7])  # rows 0 and 2 hold the same item: not negatives of each other
    q = torch.tensor([0.5, 0.25, 0.5], dtype=D)
    w = torch.tensor([1.0, 0.5, 2.0], dtype=D)
    got = sampled_softmax_loss(user, item, rows, torch.log(q), w, n_negatives=3)
    logits = (user @ item.T).numpy() - np.log(q.numpy())[None, :]
    want, total = 0.0, 0.0
    for i in range(3):
        allowed = [j for j in range(3) if j == i or rows[j] != rows[i]]
        nll = -(logits[i, i] - math.log(sum(math.exp(logits[i, j]) for j in allowed)))
        want += w[i].item() * nll
        total += w[i].item()
    assert got.item() == pytest.approx(want / total, rel=1e-12)
    # The correction matters: without it a popular item (large q) is penalised more as a negative.
    plain = sampled_softmax_loss(user, item, rows, torch.zeros(3, dtype=D), w, n_negatives=3)
    assert plain.item() != pytest.approx(got.item())
    # No positive mass: zero loss, still differentiable.
    zero = sampled_softmax_loss(user.requires_grad_(), item, rows, torch.log(q), torch.zeros(3, dtype=D), 3)
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(user.grad).all()


def test_shared_negatives_are_the_first_rows_items():
    """With n_negatives < B every row's negatives are the items of the first n rows (its own item masked)."""
    gen = torch.Generator().manual_seed(0)
    user, item = torch.randn(6, 3, generator=gen, dtype=D), torch.randn(6, 3, generator=gen, dtype=D)
    rows = torch.tensor([0, 1, 2, 3, 1, 5])  # row 4 holds row 1's item
    log_q, w = torch.zeros(6, dtype=D), torch.ones(6, dtype=D)
    got = sampled_softmax_loss(user, item, rows, log_q, w, n_negatives=2)
    want = 0.0
    for i in range(6):
        pos = float(user[i] @ item[i])
        negs = [float(user[i] @ item[j]) for j in range(2) if rows[j] != rows[i]]
        want += -(pos - math.log(math.exp(pos) + sum(math.exp(x) for x in negs)))
    assert got.item() == pytest.approx(want / 6, rel=1e-12)
    # n >= B is the classic in-batch softmax.
    assert sampled_softmax_loss(user, item, rows, log_q, w, 6).item() == pytest.approx(
        sampled_softmax_loss(user, item, rows, log_q, w, 100).item()
    )


def test_every_student_has_a_softmax_weight():
    assert set(SOFTMAX_WEIGHTS) == set(STUDENT_LOSSES)
    batch = {
        "click": torch.tensor([1, 1, 0]),
        "long_read": torch.tensor([1, 0, 0]),
        "duration": torch.tensor([90.0, 10.0, 0.0]),
        "soft_label": torch.tensor([0.3, 0.1, 0.02]),
    }
    from dmtl.config import DistillConfig

    d = DistillConfig("p_ctcvr", "bce", 1.0, 0.5, "two_stage", 0.0, 0.5, 1.0)
    w = {name: fn(batch, 30.0, d).tolist() for name, fn in SOFTMAX_WEIGHTS.items()}
    assert w["ctr"] == [1.0, 1.0, 0.0] and w["ctcvr_hard"] == [1.0, 0.0, 0.0]
    assert w["weighted_lr"] == pytest.approx([3.0, 1 / 3, 0.0])
    assert w["duration_regression"] == pytest.approx([math.log1p(90), math.log1p(10), 0.0])
    assert w["dmtl"] == pytest.approx([0.8, 0.1, 0.02])  # soft label + hard_weight * y_c * y_d


def test_item_log_q_mixes_impressions_and_unexposed_pairs():
    counts = np.array([6.0, 2.0, 0.0, 0.0])
    unexposed = np.array([0.25, 0.25, 0.25, 0.25])
    got = item_log_q(unexposed, counts, 1.0).exp().numpy()
    np.testing.assert_allclose(got, [(0.75 + 0.25) / 2, (0.25 + 0.25) / 2, 0.125, 0.125], rtol=1e-6)
    np.testing.assert_allclose(item_log_q(unexposed, counts, 0.0).exp().numpy()[:2], [0.75, 0.25], rtol=1e-6)


@pytest.fixture(scope="module")
def tiny_tensors():
    from dmtl.data import ImpressionTensors
    from dmtl.features import prepare
    from dmtl.sources.simulator.config import make_config
    from dmtl.sources.simulator.world import simulate

    log, _ = simulate(make_config("tiny"), 2021)
    return ImpressionTensors(prepare(log, 1, 2, "mean"))


def test_unexposed_pairs_are_never_logged_and_follow_the_batch_users(tiny_tensors):
    from dmtl.data import UnexposedSampler

    data = tiny_tensors
    sampler = UnexposedSampler(data, ratio=2.0, popularity_share=0.5, seed=0)
    batch_users = data.user_idx[data.indices("train")[:512]]
    users, items = sampler.draw(batch_users)
    assert 0.95 * 1024 <= len(users) <= 1024  # a few logged draws are dropped after one redraw
    assert set(users.tolist()) <= set(batch_users.tolist())
    n_items = len(data.item_table)
    logged = set((data.user_idx.numpy() * n_items + data.item_idx.numpy()).tolist())
    test = data.indices("test")
    test_pairs = set((data.user_idx[test].numpy() * n_items + data.item_idx[test].numpy()).tolist())
    drawn = set((users.numpy() * n_items + items.numpy()).tolist())
    assert not drawn & logged and not drawn & test_pairs
    # Deterministic per seed; another seed draws other pairs.
    again = UnexposedSampler(data, ratio=2.0, popularity_share=0.5, seed=0).draw(batch_users)
    assert torch.equal(again[0], users) and torch.equal(again[1], items)
    other = UnexposedSampler(data, ratio=2.0, popularity_share=0.5, seed=1).draw(batch_users)
    assert not torch.equal(other[1][:50], items[:50])


def test_popularity_share_sets_the_item_distribution(tiny_tensors):
    from dmtl.data import UnexposedSampler

    data = tiny_tensors
    users = data.user_idx[data.indices("train")[:2000]]
    popular = UnexposedSampler(data, ratio=5.0, popularity_share=1.0, seed=0)
    uniform = UnexposedSampler(data, ratio=5.0, popularity_share=0.0, seed=0)
    counts = data.item_counts("train")
    top = np.argsort(-counts)[: len(counts) // 10]  # the most shown tenth of the corpus
    share = {
        name: np.isin(s.draw(users)[1].numpy(), top).mean()
        for name, s in (("pop", popular), ("uni", uniform))
    }
    assert share["pop"] > 0.25 and share["uni"] == pytest.approx(0.1, abs=0.02)
    np.testing.assert_allclose(uniform.item_probability(), 1 / len(counts))


def test_validation_metric_is_recall_of_validation_long_reads_with_training_exposures_masked(tiny_tensors):
    """The one selection metric: recall_long@K on the validation days, computed as evaluation computes it."""
    from dmtl.metrics import recall_at_k
    from dmtl.models.two_tower import TwoTower
    from dmtl.retrieval import masked_exact_topk
    from dmtl.selection import ValidationMetric

    data = tiny_tensors
    torch.manual_seed(0)
    model = TwoTower(
        [int(data.user_table[:, j].max()) + 1 for j in range(data.user_table.shape[1])],
        [int(data.item_table[:, j].max()) + 1 for j in range(data.item_table.shape[1])],
    )
    select = ValidationMetric(data, "recall_long", k=20)
    val = data.indices("val")
    long = val[(data.click[val] * data.long_read[val]) > 0]
    users = np.unique(data.user_idx[long].numpy())
    assert np.array_equal(select.users, users)
    with torch.no_grad():
        u = model.user_embedding(data.user_table[torch.from_numpy(users)]).numpy()
        v = model.item_embedding(data.item_table).numpy()
    train = data.indices("train")
    shown = {
        (a, b) for a, b in zip(data.user_idx[train].tolist(), data.item_idx[train].tolist(), strict=True)
    }
    topk = masked_exact_topk(u, v, 20, select.history)
    for r, user in enumerate(users[:50]):
        assert not {(int(user), int(i)) for i in topk[r]} & shown  # training exposures never retrieved
    rows = np.searchsorted(users, data.user_idx[long].numpy())
    want = recall_at_k(topk, rows, data.item_idx[long].numpy(), [20])[20]
    assert select.value(model) == pytest.approx(want)
    auc = ValidationMetric(data, "auc_ctcvr").value(model)
    assert 0.0 <= auc <= 1.0
