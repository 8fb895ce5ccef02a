"""Full-corpus top-K retrieval with faiss (docs/protocol.md section 4, retrieval metrics).

Exact inner-product search (``IndexFlatIP``) is the reference every retrieval metric is computed on. An
approximate index (IVF-Flat or HNSW) is built beside it and its own recall against exact search is
reported, so index error never hides inside model error.

Scores are inner products. A student scoring ``sigmoid(<u, v>)`` ranks items exactly as ``<u, v>`` does;
a cosine student must pass L2-normalised embeddings (a temperature does not change the ranking).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np

from dmtl.schema import DataError

ANN_KINDS: dict[str, tuple[str, ...]] = {
    "ivf_flat": ("nlist", "nprobe", "seed"),
    "hnsw": ("m", "ef_construction", "ef_search"),
}


def _as_f32(x: np.ndarray, name: str) -> np.ndarray:
    """faiss reads C-contiguous float32 buffers only; anything else is converted once here."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(None, name, "non-finite embedding values", "check the model for NaN/inf outputs")
    return a


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    return int(k)


@contextmanager
def _faiss_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` OpenMP threads in faiss, restoring the previous setting afterwards."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _search(index: faiss.Index, user_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    users = _as_f32(user_emb, "user_emb")
    if users.shape[1] != index.d:
        raise ValueError(f"user_emb has dim {users.shape[1]} but the item index has dim {index.d}")
    k = min(_check_k(k), int(index.ntotal))
    if k == 0 or users.shape[0] == 0:
        return np.empty((users.shape[0], k), np.float32), np.empty((users.shape[0], k), np.int64)
    scores, idx = index.search(users, k)
    return scores, idx.astype(np.int64, copy=False)


def exact_topk(user_emb: np.ndarray, item_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k items by inner product over the whole corpus (the reference search).

    Args:
        user_emb: ``(n_users, dim)`` user-tower outputs.
        item_emb: ``(n_items, dim)`` item-tower outputs for the whole corpus; row = item index.
        k: items per user; clipped to ``n_items``.

    Returns:
        ``(scores, idx)``: ``(n_users, min(k, n_items))`` float32 inner products, best first, and the int64
        item indices.
    """
    items = _as_f32(item_emb, "item_emb")
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    return _search(index, user_emb, k)


def _default_nlist(n_items: int) -> int:
    # faiss wants >= 39 training points per centroid; 4 * sqrt(n) is the usual starting point.
    return max(1, min(round(4 * math.sqrt(n_items)), n_items // 39))


def build_ann_index(item_emb: np.ndarray, kind: str = "ivf_flat", **params: Any) -> faiss.Index | MipsHNSW:
    """Build an approximate inner-product index over the item corpus.

    Args:
        item_emb: ``(n_items, dim)`` item embeddings; row = item index.
        kind: ``"ivf_flat"`` (k-means coarse quantiser, exact scores within probed lists) or ``"hnsw"``.
        **params: for ``ivf_flat``: ``nlist`` (default ``min(4 sqrt(n), n / 39)``, clipped to ``n_items``
            with a warning), ``nprobe`` (default 16, clipped to ``nlist``), ``seed`` (k-means seed,
            default 0). For ``hnsw``: ``m`` (graph degree, default 32), ``ef_construction`` (default 200),
            ``ef_search`` (default 128). Unknown names raise, so no setting is silently ignored.

    Returns:
        A trained faiss index holding every item; :func:`describe_index` reports its effective settings.
        The build is deterministic: IVF k-means is seeded, and HNSW is built on one thread because parallel
        insertion order changes the graph.
    """
    if kind not in ANN_KINDS:
        raise ValueError(f"unknown ANN kind {kind!r}; valid: {sorted(ANN_KINDS)}")
    unknown = sorted(set(params) - set(ANN_KINDS[kind]))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {kind!r}; valid: {list(ANN_KINDS[kind])}")
    items = _as_f32(item_emb, "item_emb")
    n_items, dim = items.shape
    if n_items == 0:
        raise ValueError("item_emb is empty; an index needs at least one item")
    if kind == "ivf_flat":
        nlist = int(params.get("nlist") or _default_nlist(n_items))
        if nlist < 1:
            raise ValueError(f"nlist must be >= 1, got {nlist}")
        if nlist > n_items:
            warnings.warn(f"nlist={nlist} > n_items={n_items}; using nlist={n_items}", stacklevel=2)
            nlist = n_items
        nprobe = min(int(params.get("nprobe") or 16), nlist)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(params.get("seed", 0))
        # Too few points per centroid only makes faiss warn on stderr; the index is still valid.
        index.cp.min_points_per_centroid = 1
        index.train(items)
        index.add(items)
        index.nprobe = nprobe
        return index
    m = int(params.get("m", 32))
    if m < 2:
        raise ValueError(f"hnsw m must be >= 2, got {m}")
    # A greedy graph walk needs a metric, and the inner product is not one: when item norms differ, as the
    # towers' outputs do, large-norm items capture the walk and recall collapses (to a few percent on the
    # study's students). The standard reduction from maximum inner product to nearest neighbour (Bachrach
    # et al., RecSys 2014) appends sqrt(M^2 - |v|^2) to each item, M the largest norm, so every item has
    # norm M, and a 0 to each query, so <q', v'> = <q, v> exactly: same scores, same ranking, and the graph
    # is built on a sphere where inner product and distance agree.
    sq = np.einsum("ij,ij->i", items, items, dtype=np.float64)
    extra = np.sqrt(np.maximum(sq.max() - sq, 0.0)).astype(np.float32)
    graph = faiss.IndexHNSWFlat(dim + 1, m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = int(params.get("ef_construction", 200))
    graph.hnsw.efSearch = int(params.get("ef_search", 128))
    with _faiss_threads(1):
        graph.add(np.ascontiguousarray(np.hstack([items, extra[:, None]])))
    return MipsHNSW(graph)


class MipsHNSW:
    """An HNSW graph over items augmented for maximum inner product search (see :func:`build_ann_index`).

    Searches like a faiss index (``d``, ``ntotal``, ``search``): each query gets the 0 coordinate appended,
    and the scores returned are the exact inner products ``<q, v>`` of the items found. ``hnsw`` is the
    graph's parameters (``hnsw.efSearch`` trades speed for recall at search time).
    """

    def __init__(self, graph: faiss.IndexHNSWFlat):
        self.graph = graph
        self.d = int(graph.d) - 1

    @property
    def ntotal(self) -> int:
        return int(self.graph.ntotal)

    @property
    def hnsw(self) -> Any:
        return self.graph.hnsw

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        padded = np.zeros((queries.shape[0], self.d + 1), dtype=np.float32)
        padded[:, : self.d] = queries
        return self.graph.search(padded, k)


def describe_index(index: faiss.Index | MipsHNSW) -> dict[str, Any]:
    """The effective settings of an index from :func:`build_ann_index` (or exact), for the metrics file."""
    if isinstance(index, faiss.IndexIVFFlat):
        return {
            "kind": "ivf_flat",
            "nlist": int(index.nlist),
            "nprobe": int(index.nprobe),
            "seed": int(index.cp.seed),
            "n_items": int(index.ntotal),
        }
    if isinstance(index, MipsHNSW):
        graph = index.graph
        return {
            "kind": "hnsw",
            "m": int(graph.hnsw.nb_neighbors(1)),
            "ef_construction": int(graph.hnsw.efConstruction),
            "ef_search": int(graph.hnsw.efSearch),
            "n_items": int(graph.ntotal),
        }
    if isinstance(index, faiss.IndexFlatIP):
        return {"kind": "exact", "n_items": int(index.ntotal)}
    return {"kind": type(index).__name__, "n_items": int(index.ntotal)}


def ann_topk(index: faiss.Index, user_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k by inner product.

    Args:
        index: from :func:`build_ann_index`.
        user_emb: ``(n_users, dim)`` user embeddings.
        k: items per user; clipped to the corpus size.

    Returns:
        ``(scores, idx)`` like :func:`exact_topk`. IVF may find fewer than k items when the probed lists are
        small; those slots hold index -1 (score -3.4e38, the lowest float32), which every metric in
        :mod:`dmtl.metrics` skips.
    """
    return _search(index, user_emb, k)


def index_recall(exact_idx: np.ndarray, approx_idx: np.ndarray) -> float:
    """Recall of an approximate search against exact search: mean over users of |approx ∩ exact| / k.

    Args:
        exact_idx: ``(n_users, k)`` item indices from :func:`exact_topk`.
        approx_idx: ``(n_users, k)`` item indices from :func:`ann_topk` for the same users and k; -1 slots
            and repeated items count nothing.

    Returns:
        Mean overlap share; ``nan`` for no users or k = 0.
    """
    exact = np.asarray(exact_idx, dtype=np.int64)
    approx = np.asarray(approx_idx, dtype=np.int64)
    if exact.ndim != 2 or exact.shape != approx.shape:
        raise ValueError(
            f"exact_idx and approx_idx must be 2-D of one shape, got {exact.shape} and {approx.shape}"
        )
    n_users, k = exact.shape
    if n_users == 0 or k == 0:
        return float("nan")
    # Row-offset keys turn per-row set intersection into one sorted membership test. Sorting each row and
    # adding its offset gives globally sorted keys (a -1 slot becomes ``row * base - 1``, which no kept
    # approximate key can equal), so no global sort or de-duplication is needed.
    base = int(max(exact.max(), approx.max())) + 2
    rows = np.arange(n_users, dtype=np.int64)[:, None] * base
    exact_keys = (rows + np.sort(exact, axis=1)).ravel()
    approx_sorted = np.sort(approx, axis=1)
    keep = approx_sorted >= 0
    keep[:, 1:] &= approx_sorted[:, 1:] != approx_sorted[:, :-1]
    keys = rows + approx_sorted
    where = np.minimum(np.searchsorted(exact_keys, keys), max(exact_keys.size - 1, 0))
    hits = (exact_keys[where] == keys) & keep if exact_keys.size else np.zeros_like(keep)
    return float((hits.sum(axis=1) / k).mean())


def masked_exact_topk(
    user_emb: np.ndarray, item_emb: np.ndarray, k: int, history: Any = None, chunk: int = 1024
) -> np.ndarray:
    """Exact top-k items by inner product for each user, skipping the items of that user's ``history``.

    Evaluation's reference search when retrieval leaves out what each user was already shown (the history
    mask of docs/protocol.md section 4, as in RecBole and TorchRec's examples): scores are computed in chunks
    of users as one matrix product, the user's history is set to minus infinity, and the top k are selected
    per row. Ties are broken by the lower item index, so the lists are deterministic.

    Args:
        user_emb: ``(n_users, dim)`` query vectors.
        item_emb: ``(n_items, dim)`` item vectors; row = item index.
        k: items per user; clipped to ``n_items``.
        history: ``None`` or a sparse ``(n_users, n_items)`` matrix whose non-zero entries are skipped.
        chunk: users scored per matrix product.

    Returns:
        ``(n_users, min(k, n_items))`` int64 item indices, best first; ``-1`` pads a row whose user was
        shown so much of the corpus that fewer than k items are left.
    """
    users, items = _as_f32(user_emb, "user_emb"), _as_f32(item_emb, "item_emb")
    if users.shape[1] != items.shape[1]:
        raise ValueError(f"user_emb has dim {users.shape[1]} but item_emb has dim {items.shape[1]}")
    n_items = items.shape[0]
    k = min(_check_k(k), n_items)
    out = np.empty((users.shape[0], k), dtype=np.int64)
    for s in range(0, users.shape[0], chunk):
        scores = users[s : s + chunk] @ items.T
        if history is not None:
            rows, cols = history[s : s + chunk].nonzero()
            scores[rows, cols] = -np.inf
        top = (
            np.argpartition(-scores, k - 1, axis=1)[:, :k]
            if k < n_items
            else np.tile(np.arange(n_items), (len(scores), 1))
        )
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)  # by score, then item index
        top = np.take_along_axis(top, order, axis=1)
        top[np.take_along_axis(top_scores, order, axis=1) == -np.inf] = -1
        out[s : s + chunk] = top
    return out


def drop_history(topk: np.ndarray, history: Any, k: int) -> np.ndarray:
    """The first ``k`` items of each row of ``topk`` that are not in that row's ``history`` (-1 pads).

    For an approximate index, which cannot skip per-user items while it searches: search
    ``k + (largest history)`` items, then drop the history here.
    """
    t = np.asarray(topk, dtype=np.int64)
    if history is None:
        return t[:, :k]
    n_rows, width = t.shape
    base = max(int(t.max(initial=0)), history.shape[1]) + 1
    coo = history.tocoo()
    keys = np.sort(coo.row.astype(np.int64) * base + coo.col)
    flat = np.arange(n_rows, dtype=np.int64)[:, None] * base + t
    where = np.minimum(np.searchsorted(keys, flat), max(keys.size - 1, 0))
    seen = (keys[where] == flat) & (t >= 0) if keys.size else np.zeros_like(t, dtype=bool)
    keep = (t >= 0) & ~seen
    order = np.argsort(~keep, axis=1, kind="stable")  # kept items first, in their order
    out = np.take_along_axis(np.where(keep, t, -1), order, axis=1)[:, :k]
    if out.shape[1] < k:
        out = np.hstack([out, np.full((n_rows, k - out.shape[1]), -1, dtype=np.int64)])
    return out
