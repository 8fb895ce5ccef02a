"""Tests of dmtl.retrieval: exact search against numpy, approximate indexes, index recall arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from dmtl.retrieval import ann_topk, build_ann_index, describe_index, exact_topk, index_recall
from dmtl.schema import DataError


def _clustered(n_items: int, n_users: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items in well-separated clusters; users near a cluster: an easy case for any ANN index."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim)) * 5
    items = centres[rng.integers(0, 20, n_items)] + rng.normal(size=(n_items, dim)) * 0.3
    users = centres[rng.integers(0, 20, n_users)] + rng.normal(size=(n_users, dim)) * 0.3
    return users, items


def test_exact_topk_matches_numpy_argsort() -> None:
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(40, 8)), rng.normal(size=(500, 8))  # float64: converted to float32
    scores, idx = exact_topk(users, items, k=25)
    ip = users.astype(np.float32) @ items.astype(np.float32).T
    want = np.argsort(-ip, axis=1, kind="stable")[:, :25]
    assert idx.dtype == np.int64 and scores.dtype == np.float32 and idx.shape == (40, 25)
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(scores, np.take_along_axis(ip, want, axis=1), rtol=1e-5)


def test_exact_topk_non_contiguous_and_k_clipped() -> None:
    rng = np.random.default_rng(1)
    items = np.asfortranarray(rng.normal(size=(7, 4)))
    users = rng.normal(size=(6, 8))[:, ::2]  # a strided view
    scores, idx = exact_topk(users, items, k=100)
    assert idx.shape == (6, 7)
    np.testing.assert_array_equal(np.sort(idx, axis=1), np.tile(np.arange(7), (6, 1)))
    assert (np.diff(scores, axis=1) <= 0).all()


def test_exact_topk_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="dim"):
        exact_topk(np.ones((2, 3)), np.ones((4, 5)), k=2)
    with pytest.raises(DataError, match="non-finite"):
        exact_topk(np.ones((2, 3)), np.full((4, 3), np.nan), k=2)
    with pytest.raises(ValueError, match="positive"):
        exact_topk(np.ones((2, 3)), np.ones((4, 3)), k=0)


def test_index_recall_arithmetic() -> None:
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    approx = np.array([[3, 2, 9], [-1, 4, 4]])  # row 1: a missing slot and a repeated item count once
    assert index_recall(exact, approx) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert index_recall(exact, exact) == 1.0
    assert index_recall(exact, np.full((2, 3), -1)) == 0.0
    with pytest.raises(ValueError, match="shape"):
        index_recall(exact, approx[:, :2])


def test_ivf_probing_every_list_is_exact() -> None:
    users, items = _clustered(2000, 50)
    index = build_ann_index(items, "ivf_flat", nlist=16, nprobe=16)
    _, exact_idx = exact_topk(users, items, k=50)
    _, approx_idx = ann_topk(index, users, k=50)
    assert index_recall(exact_idx, approx_idx) == 1.0
    assert describe_index(index) == {
        "kind": "ivf_flat",
        "nlist": 16,
        "nprobe": 16,
        "seed": 0,
        "n_items": 2000,
    }


@pytest.mark.parametrize(("kind", "params"), [("ivf_flat", {}), ("hnsw", {"ef_search": 200})])
def test_ann_recall_close_to_one_on_easy_data(kind: str, params: dict) -> None:
    users, items = _clustered(3000, 60, seed=2)
    _, exact_idx = exact_topk(users, items, k=20)
    index = build_ann_index(items, kind, **params)
    _, approx_idx = ann_topk(index, users, k=20)
    assert index_recall(exact_idx, approx_idx) > 0.95


def test_ivf_build_is_deterministic() -> None:
    rng = np.random.default_rng(4)
    items, users = rng.normal(size=(3000, 8)), rng.normal(size=(30, 8))
    a = ann_topk(build_ann_index(items, nlist=32, nprobe=2, seed=7), users, 30)[1]
    b = ann_topk(build_ann_index(items, nlist=32, nprobe=2, seed=7), users, 30)[1]
    np.testing.assert_array_equal(a, b)


def test_ann_clips_settings_and_rejects_unknown_ones() -> None:
    items = np.random.default_rng(5).normal(size=(10, 4))
    with pytest.warns(UserWarning, match="nlist"):
        index = build_ann_index(items, "ivf_flat", nlist=64, nprobe=8)
    assert describe_index(index)["nlist"] == 10 and describe_index(index)["nprobe"] == 8
    assert ann_topk(index, items[:3], k=50)[1].shape == (3, 10)
    with pytest.raises(ValueError, match="valid"):
        build_ann_index(items, "lsh")
    with pytest.raises(ValueError, match="ef_search"):
        build_ann_index(items, "ivf_flat", ef_search=10)
    hnsw = build_ann_index(items, "hnsw", m=8)
    assert describe_index(hnsw)["m"] == 8 and describe_index(hnsw)["kind"] == "hnsw"


def test_ivf_short_lists_give_missing_slots() -> None:
    rng = np.random.default_rng(6)
    items, users = rng.normal(size=(800, 8)), rng.normal(size=(20, 8))
    index = build_ann_index(items, nlist=20, nprobe=1)
    _, approx_idx = ann_topk(index, users, k=200)
    _, exact_idx = exact_topk(users, items, k=200)
    assert (approx_idx == -1).any()  # one probed list of ~40 items cannot fill 200 slots
    got = index_recall(exact_idx, approx_idx)
    valid_share = (approx_idx >= 0).sum(axis=1) / 200
    assert 0.0 < got <= valid_share.mean()


def test_hnsw_finds_the_exact_neighbours_of_tower_embeddings(tiny_run, tiny_params) -> None:
    """The index reduces inner-product search to nearest neighbour, so it recovers the exact neighbours of the
    students' vectors and keeps the exact inner products as scores."""
    for name in tiny_params.students.names:
        folder = tiny_run / "artifacts" / "students" / name / "seed_0"
        users, items = np.load(folder / "user_emb.npy"), np.load(folder / "item_emb.npy")
        _, exact_idx = exact_topk(users, items, k=50)
        index = build_ann_index(items, "hnsw")
        scores, idx = ann_topk(index, users, k=50)
        assert index_recall(exact_idx, idx) > 0.95, name
        np.testing.assert_allclose(scores, np.einsum("ud,ukd->uk", users, items[idx]), rtol=1e-4, atol=1e-4)
        d = describe_index(index)
        assert d["kind"] == "hnsw" and d["n_items"] == len(items) and d["ef_search"] == 128


def test_hnsw_recovers_neighbours_a_plain_inner_product_graph_misses() -> None:
    """Item vectors in a narrow cone with norms that vary, users pointing away from it (what pointwise-trained
    towers produce): a plain inner-product HNSW graph finds a third of the exact top K; the reduction to
    nearest neighbour finds them."""
    import faiss

    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    direction /= np.linalg.norm(direction)
    items = (direction + 0.15 * rng.normal(size=(1500, 16))) * rng.lognormal(0, 0.5, size=(1500, 1))
    users = -direction + 0.5 * rng.normal(size=(1200, 16))
    _, exact_idx = exact_topk(users, items, k=50)
    assert index_recall(exact_idx, ann_topk(build_ann_index(items, "hnsw"), users, k=50)[1]) > 0.9
    plain = faiss.IndexHNSWFlat(16, 32, faiss.METRIC_INNER_PRODUCT)
    plain.hnsw.efSearch = 128
    plain.add(np.ascontiguousarray(items, dtype=np.float32))
    assert index_recall(exact_idx, plain.search(np.ascontiguousarray(users, dtype=np.float32), 50)[1]) < 0.6
