"""Ranking and retrieval metrics of the study (docs/protocol.md section 4), each implemented once.

Ranking metrics score test impressions: ``auc`` (Mann-Whitney, ties counted half) and ``gauc``
(impression-weighted mean of per-user AUC over users with both classes), combined by
:func:`ranking_metrics` into ``auc_click``, ``auc_ctcvr``, ``auc_cvr`` and their ``gauc_*`` twins.

Retrieval metrics score a top-K list per user over the whole item corpus (from :mod:`dmtl.retrieval`):
``recall_at_k`` (used for ``recall_long@K`` and ``recall_click@K``), ``oracle_ratio_at_k`` and
``bait_share_at_k``. Top-K arrays are ``(n_users, K_max)`` item indices; row ``r`` is user ``r``; an entry
``-1`` (an approximate index that found fewer than K items) is a missing slot, and an item listed twice in a
row counts once, so no metric can exceed its ideal value because of a faulty list.

Every function is vectorised: no Python loop runs over users, items or impressions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dmtl.schema import DataError
from dmtl.vocab import RANKING_METRICS


# --------------------------------------------------------------------------------------------- checks
def binary_labels(labels: np.ndarray | Sequence, name: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(np.int8)
    if not np.isin(y, (0, 1)).all():
        raise DataError(None, name, "labels other than 0/1", f"pass {name} as 0/1 (hard labels only)")
    return y.astype(np.int8)


def _finite_scores(scores: np.ndarray | Sequence, n: int, name: str = "score") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like the labels, got {s.shape}")
    if not np.isfinite(s).all():
        raise DataError(
            None, name, f"{int((~np.isfinite(s)).sum())} non-finite scores", "scores must be finite"
        )
    return s


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = [int(k) for k in np.atleast_1d(np.asarray(ks))]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def _check_topk(topk: np.ndarray) -> np.ndarray:
    t = np.asarray(topk)
    if t.ndim != 2 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"topk must be a 2-D integer array (n_users, K_max), got {t.dtype} {t.shape}")
    if (t < -1).any():
        raise ValueError("topk holds item indices >= 0, or -1 for a missing slot; found values < -1")
    return t.astype(np.int64, copy=False)


def _effective_k(k: int, n_cols: int, n_items: int | None) -> int:
    """K actually evaluated: K larger than the corpus means the whole corpus (a list cannot be longer)."""
    k_eff = min(k, n_items) if n_items is not None else k
    if k_eff > n_cols:
        raise ValueError(
            f"K={k} needs at least {k_eff} columns of topk, got {n_cols}; retrieve max(ks) items per user"
            + ("" if n_items is not None else " (or pass n_items when topk already spans the whole corpus)")
        )
    return k_eff


def _unique_slots(topk: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted first-K items of each row and a mask of slots that count: valid (>= 0) and first occurrence."""
    block = np.sort(topk[:, :k], axis=1)
    keep = block >= 0
    keep[:, 1:] &= block[:, 1:] != block[:, :-1]
    return block, keep


def _mean_or_nan(per_user: np.ndarray) -> float:
    finite = per_user[np.isfinite(per_user)]
    return float(finite.mean()) if finite.size else float("nan")


# --------------------------------------------------------------------------------------------- AUC
def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (what makes Mann-Whitney count ties as half)."""
    order = np.argsort(values, kind="stable")
    sorted_vals = values[order]
    new_run = np.ones(values.size, dtype=bool)
    new_run[1:] = sorted_vals[1:] != sorted_vals[:-1]
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], values.size)
    run_rank = (starts + 1 + ends) / 2.0  # mean of the 1-based positions start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def auc(labels: np.ndarray | Sequence, scores: np.ndarray | Sequence) -> float:
    """Area under the ROC curve by the Mann-Whitney statistic, ties between classes counted half.

    Args:
        labels: 0/1 (or boolean) labels, shape ``(n,)``.
        scores: finite scores, shape ``(n,)``; higher means more likely positive.

    Returns:
        P(score of a random positive > score of a random negative) + 0.5 * P(tie); ``nan`` when only one
        class (or nothing) is present, since AUC is then undefined.
    """
    y = binary_labels(labels, "labels")
    s = _finite_scores(scores, y.size)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = float(_average_ranks(s)[y == 1].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def per_group_auc(
    labels: np.ndarray | Sequence, scores: np.ndarray | Sequence, groups: np.ndarray | Sequence
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUC of every group at once, vectorised (one sort, no loop over groups).

    Rows are sorted by (group, score); ties of equal score inside a group share their average within-group
    rank, so each group's AUC equals :func:`auc` on that group alone.

    Args:
        labels: 0/1 labels, shape ``(n,)``.
        scores: finite scores, shape ``(n,)``.
        groups: group key per row (e.g. user id), shape ``(n,)``, any sortable dtype.

    Returns:
        ``(group_keys, auc_per_group, n_per_group)``: sorted unique keys, their AUC (``nan`` for groups with
        one class) and their number of rows.
    """
    y = binary_labels(labels, "labels")
    s = _finite_scores(scores, y.size)
    g = np.asarray(groups)
    if g.shape != y.shape:
        raise ValueError(f"groups must have shape {y.shape} like the labels, got {g.shape}")
    if y.size == 0:
        return g[:0], np.empty(0), np.empty(0, dtype=np.int64)
    # Sorted by (group, score) as a score sort then a stable group sort: a fraction of np.lexsort's time
    # (the stable sort is a radix sort on small non-negative integer keys such as user indices).
    order = np.argsort(s)
    key = g[order]
    if np.issubdtype(key.dtype, np.integer) and key.min() >= 0 and key.max() < 2**16:
        key = key.astype(np.uint16)
    order = order[np.argsort(key, kind="stable")]
    g, s, y = g[order], s[order], y[order]
    n = y.size
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    new_run = new_group.copy()
    new_run[1:] |= s[1:] != s[:-1]
    group_id = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], n)
    run_len = run_end - run_start
    # Average 1-based position of the tie run, made relative to the first row of its group.
    run_rank = (run_start + 1 + run_end) / 2.0 - group_start[group_id[run_start]]
    rank = np.repeat(run_rank, run_len)
    n_rows = np.bincount(group_id)
    n_pos = np.bincount(group_id, weights=y).astype(np.float64)
    n_neg = n_rows - n_pos
    rank_sum = np.bincount(group_id, weights=rank * y)
    with np.errstate(divide="ignore", invalid="ignore"):
        aucs = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    aucs[(n_pos == 0) | (n_neg == 0)] = np.nan
    return g[group_start], aucs, n_rows


def gauc(
    labels: np.ndarray | Sequence, scores: np.ndarray | Sequence, groups: np.ndarray | Sequence
) -> float:
    """Group AUC: impression-weighted mean of per-group AUC over groups that have both classes.

    Groups with a single class have no AUC and are left out of both numerator and weights
    (docs/protocol.md section 4, ``gauc_*``).

    Args:
        labels: 0/1 labels, shape ``(n,)``.
        scores: finite scores, shape ``(n,)``.
        groups: group key per row (the user), shape ``(n,)``.

    Returns:
        ``sum_g n_g * AUC_g / sum_g n_g`` over groups with both classes; ``nan`` if there is none.
    """
    _, aucs, n_rows = per_group_auc(labels, scores, groups)
    ok = np.isfinite(aucs)
    if not ok.any():
        return float("nan")
    return float(np.sum(aucs[ok] * n_rows[ok]) / np.sum(n_rows[ok]))


def ranking_metrics(
    score: np.ndarray | Sequence,
    click: np.ndarray | Sequence,
    long_read: np.ndarray | Sequence,
    user: np.ndarray | Sequence,
) -> dict[str, float]:
    """The six ranking metrics of docs/protocol.md section 4 for one model on test impressions.

    Args:
        score: the model's score per impression (any monotone transform gives the same numbers).
        click: y_c, 0/1 per impression.
        long_read: y_d, 0/1 per impression (1 = clicked and read longer than tau); only its value on
            clicked impressions matters, since ``auc_ctcvr`` uses y_c * y_d.
        user: user id per impression (the GAUC group).

    Returns:
        ``auc_click`` (score vs y_c, all impressions), ``auc_ctcvr`` (score vs y_c*y_d, all),
        ``auc_cvr`` (score vs y_d among clicked impressions) and ``gauc_click``, ``gauc_ctcvr``,
        ``gauc_cvr`` (same populations, grouped by user). ``nan`` where a population has one class.
    """
    y_c = binary_labels(click, "click")
    y_d = binary_labels(long_read, "long_read")
    s = _finite_scores(score, y_c.size)
    u = np.asarray(user)
    if y_d.shape != y_c.shape or u.shape != y_c.shape:
        raise ValueError(
            f"score, click, long_read and user must have one length; got {s.shape}, {y_c.shape}, "
            f"{y_d.shape}, {u.shape}"
        )
    y_ctcvr = y_c * y_d
    clicked = y_c == 1
    return {
        "auc_click": auc(y_c, s),
        "auc_ctcvr": auc(y_ctcvr, s),
        "auc_cvr": auc(y_d[clicked], s[clicked]),
        "gauc_click": gauc(y_c, s, u),
        "gauc_ctcvr": gauc(y_ctcvr, s, u),
        "gauc_cvr": gauc(y_d[clicked], s[clicked], u[clicked]),
    }


def teacher_ranking_metrics(pred: Mapping[str, np.ndarray], imp: Mapping[str, Any]) -> dict[str, float]:
    """Each teacher head scored on its own task: p_ctr on click, p_ctcvr on click-and-long-read, p_cvr on
    long reads among clicks (each metric computed once)."""
    click, long_read = np.asarray(imp["click"]), np.asarray(imp["long_read"])
    user = np.asarray(imp["user_idx"])
    ctcvr = click * long_read
    clicked = click == 1
    out = {}
    for task, head, labels, rows in (
        ("click", "p_ctr", click, slice(None)),
        ("ctcvr", "p_ctcvr", ctcvr, slice(None)),
        ("cvr", "p_cvr", long_read, clicked),
    ):
        out[f"auc_{task}"] = auc(labels[rows], pred[head][rows])
        out[f"gauc_{task}"] = gauc(labels[rows], pred[head][rows], user[rows])
    return {m: out[m] for m in RANKING_METRICS}


# --------------------------------------------------------------------------------------------- retrieval
def recall_at_k(
    topk: np.ndarray,
    pos_user: np.ndarray | Sequence,
    pos_item: np.ndarray | Sequence,
    ks: Sequence[int],
    *,
    n_items: int | None = None,
    return_per_user: bool = False,
) -> dict[int, float] | dict[int, np.ndarray]:
    """Recall@K of a top-K list against each user's positives (``recall_long@K``, ``recall_click@K``).

    Args:
        topk: ``(n_users, K_max)`` retrieved item indices, best first; row r is user r; -1 = missing slot.
        pos_user: row index of each positive pair.
        pos_item: item index of each positive pair; a pair given twice counts once.
        ks: cut-offs K.
        n_items: corpus size. Needed only to allow K > K_max when ``topk`` already spans the whole corpus
            (then recall@K = recall@n_items).
        return_per_user: return each row's recall (``nan`` for rows without positives) instead of the mean,
            so a caller working in chunks of users can average over all of them.

    Returns:
        ``{K: mean over users with >= 1 positive of |top-K ∩ positives| / |positives|}`` (``nan`` if no
        user has a positive), or ``{K: per-user array}`` with ``return_per_user``.
    """
    t = _check_topk(topk)
    ks = _check_ks(ks)
    n_rows, n_cols = t.shape
    pu = np.asarray(pos_user).astype(np.int64, copy=False).ravel()
    pi = np.asarray(pos_item).astype(np.int64, copy=False).ravel()
    if pu.shape != pi.shape:
        raise ValueError(f"pos_user and pos_item must have one length, got {pu.shape} and {pi.shape}")
    if pu.size and (pu.min() < 0 or pu.max() >= n_rows):
        raise ValueError(
            f"pos_user must be row indices of topk in [0, {n_rows}), got [{pu.min()}, {pu.max()}]"
        )
    if pi.size and pi.min() < 0:
        raise ValueError("pos_item must be item indices >= 0")
    # One int64 key per (row, item) pair, so duplicates collapse and membership is a sorted search.
    base = max(int(t.max(initial=-1)), int(pi.max(initial=-1)), (n_items or 0) - 1) + 1
    pos_keys = np.unique(pu * base + pi)
    n_pos = np.bincount(pos_keys // base, minlength=n_rows).astype(np.float64)
    has_pos = n_pos > 0
    rows = np.arange(n_rows, dtype=np.int64)[:, None]
    out: dict[int, float] | dict[int, np.ndarray] = {}
    for k in ks:
        block, keep = _unique_slots(t, _effective_k(k, n_cols, n_items))
        keys = rows * base + block
        if pos_keys.size:
            where = np.minimum(np.searchsorted(pos_keys, keys), pos_keys.size - 1)
            hits = ((pos_keys[where] == keys) & keep).sum(axis=1)
        else:
            hits = np.zeros(n_rows, dtype=np.int64)
        per_user = np.full(n_rows, np.nan)
        per_user[has_pos] = hits[has_pos] / n_pos[has_pos]
        out[k] = per_user if return_per_user else _mean_or_nan(per_user)
    return out


def oracle_ratio_at_k(
    topk: np.ndarray,
    value: np.ndarray,
    ks: Sequence[int],
    *,
    return_per_user: bool = False,
) -> dict[int, float] | dict[int, np.ndarray]:
    """Simulator only: the ground-truth value of the top K over that of the best possible top K.

    docs/protocol.md section 4: ``oracle_read_time@K`` (value = expected reading time) and ``oracle_p_long@K``
    (value = probability of a click and a read longer than tau), from the oracle, never the logged data. A
    ratio of 1 means the list holds the K items of highest value for that user.

    Args:
        topk: ``(n_rows, K_max)`` retrieved item indices (-1 = missing slot, duplicates count once).
        value: ``(n_rows, n_items)`` non-negative value of each item for the same rows (a block of users when
            the caller works in chunks); items a list may not hold (the history mask) should be 0 here.
        ks: cut-offs K; K > n_items means the whole corpus.
        return_per_user: return each row's ratio instead of the mean (``nan`` where the best top K has zero
            value).

    Returns:
        ``{K: mean over rows of ratio}`` or ``{K: per-row ratio array}``.
    """
    t = _check_topk(topk)
    ks = _check_ks(ks)
    ert = np.asarray(value, dtype=np.float64)
    if ert.ndim != 2 or ert.shape[0] != t.shape[0]:
        raise ValueError(f"value must be (n_rows={t.shape[0]}, n_items), got {ert.shape}")
    if not np.isfinite(ert).all() or (ert < 0).any():
        raise DataError(None, "value", "negative or non-finite values", "pass values >= 0")
    n_rows, n_items = ert.shape
    if t.size and t.max() >= n_items:
        raise ValueError(f"topk holds item index {t.max()} but value has {n_items} items")
    k_max = min(max(ks), n_items)
    if n_rows == 0 or n_items == 0:
        empty = np.empty(0) if return_per_user else float("nan")
        return {k: empty for k in ks}
    # The best K per row: partial selection, then a sort of only the selected K_max columns.
    best = -np.partition(-ert, k_max - 1, axis=1)[:, :k_max] if k_max < n_items else ert
    best_cum = np.cumsum(-np.sort(-best, axis=1), axis=1)
    out: dict[int, float] | dict[int, np.ndarray] = {}
    for k in ks:
        k_eff = _effective_k(k, t.shape[1], n_items)
        block, keep = _unique_slots(t, k_eff)
        got = (np.take_along_axis(ert, np.maximum(block, 0), axis=1) * keep).sum(axis=1)
        ideal = best_cum[:, k_eff - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            per_user = np.where(ideal > 0, got / ideal, np.nan)
        out[k] = per_user if return_per_user else _mean_or_nan(per_user)
    return out


def bait_share_at_k(
    topk: np.ndarray,
    is_bait: np.ndarray | Sequence,
    ks: Sequence[int],
    *,
    return_per_user: bool = False,
) -> dict[int, float] | dict[int, np.ndarray]:
    """Share of clickbait items in each user's top K, averaged over users (lower is better).

    Args:
        topk: ``(n_users, K_max)`` retrieved item indices (-1 = missing slot, duplicates count once).
        is_bait: ``(n_items,)`` boolean flag per item: the simulator's ground truth, or
            :func:`dmtl.evaluation.real_bait_items` on real data.
        ks: cut-offs K; K > n_items means the whole corpus.
        return_per_user: return each row's share instead of the mean.

    Returns:
        ``{K: mean over users of (#bait in top K) / (#items in top K)}`` or per-user arrays (``nan`` for an
        empty row).
    """
    t = _check_topk(topk)
    ks = _check_ks(ks)
    bait = np.asarray(is_bait)
    if bait.ndim != 1 or bait.dtype != bool:
        raise ValueError(f"is_bait must be a 1-D boolean array over items, got {bait.dtype} {bait.shape}")
    if t.size and t.max() >= bait.size:
        raise ValueError(f"topk holds item index {t.max()} but is_bait covers {bait.size} items")
    out: dict[int, float] | dict[int, np.ndarray] = {}
    for k in ks:
        block, keep = _unique_slots(t, _effective_k(k, t.shape[1], bait.size))
        n_bait = (bait[np.maximum(block, 0)] & keep).sum(axis=1)
        n_valid = keep.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_user = np.where(n_valid > 0, n_bait / n_valid, np.nan)
        out[k] = per_user if return_per_user else _mean_or_nan(per_user)
    return out
