"""Weighted Mann-Whitney AUC and GAUC for every bootstrap replicate from one sort of the scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse

from dmtl.metrics import binary_labels, per_group_auc


def _check_impressions(labels: Any, scores: Any, user: Any, n_users: int) -> tuple[np.ndarray, ...]:
    y = binary_labels(labels, "labels")
    s = np.asarray(scores, dtype=np.float64)
    u = np.asarray(user)
    if s.shape != y.shape or u.shape != y.shape:
        raise ValueError(f"labels, scores and user must have one length, got {y.shape}, {s.shape}, {u.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} non-finite scores; scores must be finite")
    if not np.issubdtype(u.dtype, np.integer) or (u.size and (u.min() < 0 or u.max() >= n_users)):
        raise ValueError(f"user must be integer positions on the user axis [0, {n_users})")
    return y, s, u.astype(np.int64, copy=False)


def _auc_rows(
    y: np.ndarray, s: np.ndarray, u: np.ndarray, wt: np.ndarray, budget: int = 1 << 22
) -> np.ndarray:
    """Weighted Mann-Whitney AUC for every column of ``wt`` (``(n_users, R)`` user multiplicities).

    With ``w_i`` the multiplicity of impression i's user, ``AUC = sum_{i pos, j neg} w_i w_j ([s_i > s_j] +
    [s_i = s_j] / 2) / (sum_pos w)(sum_neg w)``: the AUC of the data set in which every user's impressions
    appear as often as the user was drawn. One sort: the larger class ("big") is sorted by score; each
    impression of the other ("small") class cuts it at the left and right end of its tie run (``lo``,
    ``hi``), and those cuts split it into segments. Two sparse products with ``wt`` give, in every replicate,
    the weight of each segment and the small-class weight sitting at each cut; the running sum of the first
    is the big-class weight below each cut, so ``sum_small w_i (2 below_i + tied_i) = sum_cuts (small weight
    at the cut) x (big weight below it)`` with each small impression counted at both its cuts. Every sum is
    of integers, exact in float32 below 2^24 and in float64 below 2^53. Cost per replicate: a pass over the
    impressions inside the sparse products and a few over the cuts.
    """
    n_users, n_rows = wt.shape
    pos = y == 1
    p_w = np.bincount(u[pos], minlength=n_users).astype(np.float64) @ wt
    n_w = np.bincount(u[~pos], minlength=n_users).astype(np.float64) @ wt
    out = np.full(n_rows, np.nan)
    if not pos.any() or pos.all():
        return out
    flip = int(pos.sum()) > int((~pos).sum())  # cut the larger class: the sparse product is the cheap pass
    small = ~pos if flip else pos
    big_s, big_u = s[~small], u[~small]
    order = np.argsort(big_s)  # order inside a tie run is irrelevant: cuts fall at run ends
    big_s, big_u = big_s[order], big_u[order]
    small_s, small_u = s[small], u[small]
    lo = np.searchsorted(big_s, small_s, side="left")  # big-class impressions scored below
    hi = np.searchsorted(big_s, small_s, side="right")  # ... below or tied
    cuts = np.unique(np.concatenate(([0, big_s.size], lo, hi)))
    # Running sums of counts are exact in float32 below 2^24 (and it halves the memory traffic).
    dtype = np.float32 if max(p_w.max(), n_w.max()) < 2**24 else np.float64
    segments = sparse.csr_matrix((np.ones(big_s.size, dtype), big_u, cuts), shape=(cuts.size - 1, n_users))
    at_cut = sparse.csr_matrix(
        (np.ones(2 * small_u.size, dtype), (np.searchsorted(cuts, np.r_[lo, hi]), np.r_[small_u, small_u])),
        shape=(cuts.size, n_users),
    )
    twice_below = np.empty(n_rows)
    step = max(1, budget // cuts.size)
    for c0 in range(0, n_rows, step):
        w = np.ascontiguousarray(wt[:, c0 : c0 + step], dtype=dtype)
        below = np.zeros((cuts.size, w.shape[1]), dtype=dtype)
        below[1:] = segments @ w
        np.cumsum(below, axis=0, out=below)  # below[k] = weight of big_s[:cuts[k]]
        # The products reach (total weight)^2: summed in float64, exact below 2^53.
        twice_below[c0 : c0 + step] = np.einsum(
            "kj,kj->j", at_cut @ w, below, dtype=np.float64, casting="unsafe"
        )
    pairs2 = 2.0 * p_w * n_w
    if flip:  # the share of pairs the small (negative) class wins; integers, so the subtraction is exact
        twice_below = pairs2 - twice_below
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = twice_below / pairs2
    ok = (p_w > 0) & (n_w > 0)
    out[ok] = auc[ok]
    return out


def bootstrap_auc(
    labels: np.ndarray | Sequence,
    scores: np.ndarray | Sequence,
    user: np.ndarray | Sequence,
    user_weights: np.ndarray,
) -> np.ndarray:
    """AUC of every user-resampled replicate from one sort of the scores (ties counted half).

    Replicate r equals :func:`dmtl.metrics.auc` on the data set in which each user's impressions are
    repeated ``user_weights[r, user]`` times (see ``_auc_rows`` for the algorithm).

    Args:
        labels: 0/1 per impression, shape ``(n,)``.
        scores: finite scores, shape ``(n,)``.
        user: each impression's position on the user axis, shape ``(n,)``.
        user_weights: ``(R, n_users)`` integer multiplicities (a row of ones = the observed data).

    Returns:
        ``(R,)`` AUCs; ``nan`` in a replicate that draws only one class.
    """
    w = np.asarray(user_weights)
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.integer) or (w.size and w.min() < 0):
        raise ValueError(
            f"user_weights must be a 2-D array of integer multiplicities >= 0, got {w.dtype} {w.shape}"
        )
    y, s, u = _check_impressions(labels, scores, user, w.shape[1])
    return _auc_rows(y, s, u, np.ascontiguousarray(w.T))


def _per_user_auc(y: np.ndarray, s: np.ndarray, u: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's AUC (``nan`` with one class) and impression count, on the whole user axis."""
    keys, aucs, n_rows = per_group_auc(y, s, u)
    auc_u = np.full(n_users, np.nan)
    n_u = np.zeros(n_users)
    auc_u[keys] = aucs
    n_u[keys] = n_rows
    return auc_u, n_u
