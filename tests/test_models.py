"""Tests for dmtl.models: embeddings, MLP, the MMoE+ESMM teacher and the two-tower student."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from dmtl.losses import teacher_loss
from dmtl.models import MLP, FeatureEmbedding, MultiTaskTeacher, TwoTower
from dmtl.models.layers import ParallelMLP

USER_CARDS, ITEM_CARDS, CTX_CARDS = [50, 3, 6], [80, 5, 4, 7], [8, 2]
B = 64


def random_fields(cards: list[int], n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (n,), generator=gen) for c in cards], dim=1)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return random_fields(USER_CARDS, B, 1), random_fields(ITEM_CARDS, B, 2), random_fields(CTX_CARDS, B, 3)


# ---------------------------------------------------------------- layers


def test_feature_embedding_offsets_and_lookup() -> None:
    torch.manual_seed(0)
    emb = FeatureEmbedding([3, 4, 2], dim=5)
    with torch.no_grad():  # distinct rows everywhere (OOV rows start at zero), so lookups can be told apart
        emb.embedding.weight.copy_(torch.arange(45, dtype=torch.float32).view(9, 5))
    x = torch.tensor([[0, 0, 0], [2, 3, 1]])
    out = emb(x)
    assert out.shape == (2, 15)
    w = emb.embedding.weight
    # Field f's value k is row offsets[f] + k, offsets = [0, 3, 7].
    torch.testing.assert_close(out[1], torch.cat([w[2], w[3 + 3], w[7 + 1]]))
    # The OOV index 0 of each field is its own vector.
    f0, f1, f2 = out[0].view(3, 5)
    assert not torch.equal(f0, f1) and not torch.equal(f1, f2)
    torch.testing.assert_close(f1, w[3])


@pytest.mark.parametrize("bad", [[[3, 0, 0]], [[0, 4, 0]], [[0, 0, -1]]])
def test_feature_embedding_rejects_out_of_range(bad: list[list[int]]) -> None:
    emb = FeatureEmbedding([3, 4, 2], dim=5)
    with pytest.raises(ValueError, match="OOV"):
        emb(torch.tensor(bad))


def test_feature_embedding_shapes_and_validation() -> None:
    assert FeatureEmbedding([], dim=4)(torch.zeros((7, 0), dtype=torch.long)).shape == (7, 0)
    # An empty table has nothing to train (DDP would flag a trainable size-0 weight as unused).
    assert not any(p.requires_grad for p in FeatureEmbedding([], dim=4).parameters())
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        FeatureEmbedding([3, 4], dim=4)(torch.zeros((7, 3), dtype=torch.long))
    with pytest.raises(ValueError, match=">= 1"):
        FeatureEmbedding([3, 0], dim=4)


def test_mlp_structure() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 6)
    hidden = MLP(6, (8, 4))
    assert hidden.out_dim == 4 and (hidden(x) >= 0).all()  # ReLU after the last layer
    head = MLP(6, (8, 1), dropout=0.5, last_activation=False)
    kinds = [type(m).__name__ for m in head.net]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear"]
    head.eval()
    torch.testing.assert_close(head(x), head(x))
    assert (head(x) < 0).any()  # a logit layer may be negative
    torch.testing.assert_close(MLP(6, ())(x), x)


# ---------------------------------------------------------------- fused layers against plain loops


def member_mlps(bank: ParallelMLP) -> list[MLP]:
    """The unfused reference: one plain MLP per member of ``bank``, with the member's weights copied."""
    mlps = []
    for k in range(bank.n):
        mlp = MLP(bank.in_dim, bank.widths[1:], last_activation=bank.last_activation).to(
            bank.weights[0].dtype
        )
        linears = [m for m in mlp.net if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for layer, w, b in zip(linears, bank.weights, bank.biases, strict=True):
                layer.weight.copy_(w[k].T)
                layer.bias.copy_(b[k, 0])
        mlps.append(mlp)
    return mlps


@pytest.mark.parametrize(
    ("dims", "n", "last_activation", "shared"),
    [
        ((8, 5), 3, True, True),
        ((8, 5, 4), 2, False, True),
        ((6,), 4, True, True),
        ((7, 3), 1, False, True),
        ((6,), 1, False, True),
        ((8, 1), 3, False, False),
        ((5,), 2, True, False),
    ],
)
def test_parallel_mlp_matches_a_loop_of_mlps(
    dims: tuple[int, ...], n: int, last_activation: bool, shared: bool
) -> None:
    torch.manual_seed(0)
    bank = ParallelMLP(10, dims, n, last_activation=last_activation).double()
    refs = member_mlps(bank)
    x = torch.randn(9, 10, dtype=torch.float64) if shared else torch.randn(n, 9, 10, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = bank(x1)
    ref = torch.stack([mlp(x2 if shared else x2[k]) for k, mlp in enumerate(refs)])
    assert out.shape == (n, 9, dims[-1])
    torch.testing.assert_close(out, ref)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    for k, mlp in enumerate(refs):
        linears = [m for m in mlp.net if isinstance(m, torch.nn.Linear)]
        for layer, w, b in zip(linears, bank.weights, bank.biases, strict=True):
            torch.testing.assert_close(w.grad[k], layer.weight.grad.T)
            torch.testing.assert_close(b.grad[k, 0], layer.bias.grad)


def test_parallel_mlp_hand_written_backward_passes_gradcheck() -> None:
    torch.manual_seed(0)
    bank = ParallelMLP(5, (4, 3), 3, last_activation=False).double()
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: bank(x), (x, *bank.parameters()))


def test_parallel_mlp_dropout_and_shapes() -> None:
    torch.manual_seed(0)
    bank = ParallelMLP(6, (8, 4), 2, dropout=0.5)
    x = torch.randn(32, 6)
    bank.eval()
    torch.testing.assert_close(bank(x), torch.stack([m(x) for m in member_mlps(bank)]))
    bank.train()
    out = bank(x)
    out.sum().backward()  # the dropout path goes through autograd
    assert all(p.grad is not None for p in bank.parameters())
    with pytest.raises(ValueError, match=r"\(B, 6\) or \(2, B, 6\)"):
        bank(torch.randn(3, 32, 6))
    with pytest.raises(ValueError, match="n must be"):
        ParallelMLP(6, (4,), 0)


def test_feature_embedding_gradient_is_a_scatter_add_and_keeps_threads() -> None:
    torch.manual_seed(0)
    emb = FeatureEmbedding([3, 4], dim=2)
    x = torch.tensor([[1, 2], [1, 0], [2, 2], [1, 3]])  # repeated rows must add up
    upstream = torch.randn(4, 4)
    threads = torch.get_num_threads()
    (emb(x) * upstream).sum().backward()
    assert torch.get_num_threads() == threads
    expected = torch.zeros(7, 2)
    rows = (x + torch.tensor([0, 3])).reshape(-1)
    for r, g in zip(rows.tolist(), upstream.reshape(-1, 2), strict=True):
        expected[r] += g
    torch.testing.assert_close(emb.embedding.weight.grad, expected)


def test_gather_rows_gradient_is_bitwise_index_select_s() -> None:
    """The one-thread scatter changes the thread count, not the sums: same bits as autograd's own."""
    from dmtl.models.layers import _GatherRows

    gen = torch.Generator().manual_seed(0)
    table = torch.randn(3000, 8, requires_grad=True)
    rows = torch.randint(0, 3000, (20000,), generator=gen)  # many repeated rows
    upstream = torch.randn(20000, 8, generator=gen)
    expected = torch.autograd.grad((table.index_select(0, rows) * upstream).sum(), table)[0]
    got = torch.autograd.grad((_GatherRows.apply(table, rows) * upstream).sum(), table)[0]
    assert torch.equal(got, expected)


# ---------------------------------------------------------------- teacher


def make_teacher(**kw: object) -> MultiTaskTeacher:
    torch.manual_seed(0)
    return MultiTaskTeacher(USER_CARDS, ITEM_CARDS, CTX_CARDS, emb_dim=4, **kw)


def unfused_teacher_forward(
    teacher: MultiTaskTeacher, experts: list[MLP], towers: list[MLP], user_x, item_x, context_x
) -> dict[str, torch.Tensor]:
    """The teacher computed as before the fusion: a Python loop of one MLP per expert and per tower."""
    x = teacher.embedding(torch.cat([user_x, item_x, context_x], 1))
    stacked = torch.stack([expert(x) for expert in experts], dim=1)  # (B, E, H)
    if teacher.gates is not None:
        gates = teacher.gates(x).view(-1, 2, len(experts)).softmax(-1)
        h_ctr, h_cvr = (torch.einsum("be,beh->bh", gates[:, t], stacked) for t in range(2))
    else:
        h_ctr = h_cvr = stacked[:, 0]
    logit_ctr, logit_cvr = towers[0](h_ctr).squeeze(-1), towers[1](h_cvr).squeeze(-1)
    out = {
        "logit_ctr": logit_ctr,
        "logit_cvr": logit_cvr,
        "p_ctcvr": torch.sigmoid(logit_ctr) * torch.sigmoid(logit_cvr),
    }
    if teacher.duration_head:
        out["dur_log"] = torch.nn.functional.softplus(towers[2](h_cvr).squeeze(-1))
    return out


@pytest.mark.parametrize(
    "kw", [{"n_experts": 4}, {"n_experts": 3, "duration_head": True}, {"backbone": "shared_bottom"}]
)
def test_teacher_fused_experts_match_the_unfused_loop(batch: tuple, kw: dict) -> None:
    """Outputs and gradients of the fused teacher equal a per-expert, per-tower loop with the same weights."""
    import copy

    fused = make_teacher(expert_dims=(6, 5), tower_dims=(4,), **kw).double()
    ref = copy.deepcopy(fused)  # its embeddings and gates; the experts and towers become plain MLPs
    experts, towers = member_mlps(ref.experts), member_mlps(ref.towers)
    out = fused(*batch)
    expected = unfused_teacher_forward(ref, experts, towers, *batch)
    for key, value in expected.items():
        torch.testing.assert_close(out[key], value, msg=key)
    click = (torch.arange(B) % 3 == 0).double()
    w_duration = 1.0 if fused.duration_head else 0.0
    duration = torch.full((B,), 20.0, dtype=torch.float64)
    for o in (out, expected):
        loss, _ = teacher_loss(
            o, click, click, w_ctr=1.0, w_ctcvr=1.0, esmm=True, w_duration=w_duration, duration=duration
        )
        loss.backward()
    torch.testing.assert_close(fused.embedding.embedding.weight.grad, ref.embedding.embedding.weight.grad)
    if fused.gates is not None:
        torch.testing.assert_close(fused.gates.weight.grad, ref.gates.weight.grad)
        torch.testing.assert_close(fused.gates.bias.grad, ref.gates.bias.grad)
    for bank, mlps in ((fused.experts, experts), (fused.towers, towers)):
        for k, mlp in enumerate(mlps):
            linears = [m for m in mlp.net if isinstance(m, torch.nn.Linear)]
            for layer, w, b in zip(linears, bank.weights, bank.biases, strict=True):
                torch.testing.assert_close(w.grad[k], layer.weight.grad.T)
                torch.testing.assert_close(b.grad[k, 0], layer.bias.grad)


def test_teacher_outputs_and_gates(batch: tuple) -> None:
    teacher = make_teacher(n_experts=3)
    out = teacher(*batch)
    for key in ("logit_ctr", "logit_cvr", "p_ctr", "p_cvr", "p_ctcvr", "log_p_ctcvr"):
        assert out[key].shape == (B,)
    gates = out["gates"]
    assert gates.shape == (B, 2, 3) and (gates >= 0).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(B, 2))
    torch.testing.assert_close(out["p_ctcvr"], out["p_ctr"] * out["p_cvr"])
    torch.testing.assert_close(out["log_p_ctcvr"], torch.log(out["p_ctcvr"]))
    assert "dur_log" not in out


def test_teacher_input_errors_name_the_side_and_column(batch: tuple) -> None:
    teacher = make_teacher()
    user_x, item_x, ctx_x = batch
    bad = item_x.clone()
    bad[0, 2] = ITEM_CARDS[2]  # one past the vocabulary of item column 2
    with pytest.raises(ValueError, match="item column 2"):
        teacher(user_x, bad, ctx_x)
    with pytest.raises(ValueError, match=r"item_x of shape \(B, 4\)"):
        teacher(user_x, item_x[:, :3], ctx_x)


def test_teacher_p_ctcvr_never_exceeds_p_ctr(batch: tuple) -> None:
    teacher = make_teacher()
    with torch.no_grad():
        for weight in teacher.towers.weights:  # push many outputs of both towers to saturation
            weight.mul_(200.0)
        out = teacher(*batch)
    assert (out["p_ctcvr"] <= out["p_ctr"]).all()
    assert torch.isfinite(out["log_p_ctcvr"]).all()
    assert (out["p_ctr"] == 1).any() or (out["p_ctr"] == 0).any() or (out["p_cvr"] == 1).any()


@pytest.mark.parametrize("esmm", [True, False])
def test_teacher_gradients_reach_every_expert_and_gate(batch: tuple, esmm: bool) -> None:
    teacher = make_teacher(n_experts=4, esmm=esmm)
    click = torch.zeros(B).index_fill_(0, torch.arange(0, B, 3), 1.0)
    long_read = click * (torch.arange(B) % 2 == 0)
    loss, parts = teacher_loss(
        teacher(*batch), click, long_read, w_ctr=1.0, w_ctcvr=1.0, esmm=teacher.esmm, w_duration=0.0
    )
    assert ("loss_ctcvr" in parts) == esmm and ("loss_cvr" in parts) != esmm
    loss.backward()
    for name, param in teacher.experts.named_parameters():  # (n_experts, ...) each: every expert's slice
        for e in range(4):
            assert param.grad is not None and param.grad[e].abs().sum() > 0, f"expert {e} {name}"
    assert teacher.gates.weight.grad.abs().sum() > 0


def test_teacher_shared_bottom(batch: tuple) -> None:
    teacher = make_teacher(backbone="shared_bottom", n_experts=4)
    out = teacher(*batch)
    assert out["gates"] is None and teacher.gates is None and teacher.experts.n == 1
    assert (out["p_ctcvr"] <= out["p_ctr"]).all()
    with pytest.raises(ValueError, match="valid: .*'mmoe'"):
        make_teacher(backbone="ple")


def test_teacher_duration_head(batch: tuple) -> None:
    teacher = make_teacher(duration_head=True)
    out = teacher(*batch)
    assert out["dur_log"].shape == (B,) and (out["dur_log"] >= 0).all()
    click = torch.ones(B)
    loss, parts = teacher_loss(
        out, click, click, w_ctr=1.0, w_ctcvr=1.0, esmm=True, w_duration=1.0, duration=torch.full((B,), 30.0)
    )
    loss.backward()
    assert "loss_duration" in parts
    assert teacher.towers.weights[0].grad[2].abs().sum() > 0  # the third tower is the duration head


def test_teacher_context_optional() -> None:
    torch.manual_seed(0)
    teacher = MultiTaskTeacher(USER_CARDS, ITEM_CARDS, [], emb_dim=4)
    u, i = random_fields(USER_CARDS, 5, 1), random_fields(ITEM_CARDS, 5, 2)
    a = teacher(u, i, torch.zeros((5, 0), dtype=torch.long))
    b = teacher(u, i)
    torch.testing.assert_close(a["p_ctcvr"], b["p_ctcvr"])


# ---------------------------------------------------------------- two tower


def make_two_tower(**kw: object) -> TwoTower:
    torch.manual_seed(0)
    return TwoTower(USER_CARDS, ITEM_CARDS, emb_dim=4, tower_dims=(16,), out_dim=8, **kw)


@pytest.mark.parametrize("score", ["dot", "cosine"])
def test_two_tower_logit_factorises_over_all_pairs(batch: tuple, score: str) -> None:
    model = make_two_tower(score=score)
    user_x, item_x, _ = batch
    u, v = model.user_embedding(user_x), model.item_embedding(item_x)
    torch.testing.assert_close(model(user_x, item_x), (u * v).sum(-1))
    # Every (user i, item j) pair scores u_i . v_j: the model is retrievable by inner product.
    pairs_u = user_x.repeat_interleave(B, dim=0)
    pairs_i = item_x.repeat(B, 1)
    torch.testing.assert_close(model(pairs_u, pairs_i).view(B, B), u @ v.T)


def test_two_tower_towers_are_independent(batch: tuple) -> None:
    model = make_two_tower()
    user_x, item_x, _ = batch
    user_params = set(map(id, model.user_tower.parameters()))
    assert user_params.isdisjoint(map(id, model.item_tower.parameters()))
    u0, v0 = model.user_embedding(user_x).detach(), model.item_embedding(item_x).detach()
    with torch.no_grad():
        for p in model.item_tower.parameters():
            p.add_(1.0)
    torch.testing.assert_close(model.user_embedding(user_x), u0)  # user side untouched by item weights
    v1 = model.item_embedding(item_x).detach()
    assert not torch.allclose(v1, v0)
    with torch.no_grad():
        for p in model.user_tower.parameters():
            p.mul_(-2.0)
    torch.testing.assert_close(model.item_embedding(item_x), v1)  # item side untouched by user weights
    assert not torch.allclose(model.user_embedding(user_x), u0)
    grads = torch.autograd.grad(
        model.user_embedding(user_x).sum(), list(model.item_tower.parameters()), allow_unused=True
    )
    assert all(g is None for g in grads)


def test_two_tower_cosine_bounded_by_inverse_temperature(batch: tuple) -> None:
    t = 0.05
    model = make_two_tower(score="cosine", temperature=t)
    user_x, item_x, _ = batch
    u, v = model.user_embedding(user_x), model.item_embedding(item_x)
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(B))
    torch.testing.assert_close(v.norm(dim=-1), torch.full((B,), 1 / t))
    logits = u @ v.T
    assert logits.abs().max() <= 1 / t + 1e-4
    # An item vector scored against its own direction reaches the bound.
    torch.testing.assert_close((v * v * t).sum(-1), torch.full((B,), 1 / t))


def test_two_tower_faiss_inner_product_matches_score(batch: tuple) -> None:
    model = make_two_tower(score="cosine", temperature=0.2)
    user_x, item_x, _ = batch
    with torch.no_grad():
        u, v = model.user_embedding(user_x).numpy(), model.item_embedding(item_x).numpy()
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(np.ascontiguousarray(v))
    scores, ids = index.search(np.ascontiguousarray(u), 5)
    full = u @ v.T
    np.testing.assert_allclose(scores, np.take_along_axis(full, ids, axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores[:, 0], full.max(axis=1), rtol=1e-5, atol=1e-5)


def test_two_tower_validation() -> None:
    with pytest.raises(ValueError, match="valid: .*'dot'.*'cosine'"):
        make_two_tower(score="l2")
    with pytest.raises(ValueError, match="temperature"):
        make_two_tower(score="cosine", temperature=0.0)


def test_oov_rows_start_at_zero():
    from dmtl.models.layers import FeatureEmbedding

    emb = FeatureEmbedding([5, 3, 4], dim=6)
    out = emb(torch.zeros((2, 3), dtype=torch.long))
    assert torch.count_nonzero(out) == 0
    assert torch.count_nonzero(emb(torch.ones((2, 3), dtype=torch.long))) > 0


def test_teacher_inner_product_term_adds_a_user_item_interaction() -> None:
    """dot_dim > 0 adds <W_u x_user, W_i x_item> per task: with everything else zeroed, the logit is exactly it."""
    torch.manual_seed(0)
    teacher = MultiTaskTeacher(
        [5], [7], [], emb_dim=4, n_experts=2, expert_dims=(8,), tower_dims=(), dot_dim=3
    )
    with torch.no_grad():
        for p in teacher.towers.parameters():
            p.zero_()
        teacher.embedding.embedding.weight.normal_()
    user, item = torch.tensor([[1], [2]]), torch.tensor([[3], [4]])
    out = teacher(user, item)
    emb = teacher.embedding(torch.cat([user, item], dim=1))
    u = teacher.dot_user(emb[:, :4]).view(2, 2, 3)
    v = teacher.dot_item(emb[:, 4:]).view(2, 2, 3)
    torch.testing.assert_close(out["logit_ctr"], (u * v).sum(-1)[:, 0])
    torch.testing.assert_close(out["logit_cvr"], (u * v).sum(-1)[:, 1])
