"""Position as a bias, not a shortcut: a learned P(seen | position) factor beside a position-free model.

PAL (Guo, Liu, Tang, Dong, He, Li. *PAL: A Position-bias Aware Learning Framework for CTR Prediction in
Live Recommender Systems.* RecSys 2019): the logged click is ``P(click | x, pos) = P(seen | pos) *
P(click | x, seen)``. Training fits the product to the logged labels; serving (and everything the study
reports, the teacher's soft labels included) uses the position-free factor alone, so a model cannot use
the logging policy's ranking, which the feed position carries, as a shortcut (docs/protocol.md section 2,
"position").

Identification: only the product is fitted, so ``P(seen | pos)`` and ``P(click | x, seen)`` trade a common
scale. The factor is pinned to 1 at the reference position (the top of the feed, the most examined slot of
a feed) and at the "position not recorded" bucket, which makes the position-free factor exactly the click
probability at the top of the feed, and a log without positions (KuaiRand) exactly the plain model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POSITION_FEATURE = "ctx_position"
"""The context feature holding the encoded feed position (:func:`dmtl.features.prepare`)."""
UNKNOWN_BUCKET = 0
"""Encoded position of an impression whose source records no position (``position == -1``)."""
REFERENCE_BUCKET = 1
"""Encoded position 0, the top of the feed: the reference position, where ``P(seen) = 1``."""


class PositionBias(nn.Module):
    """``log P(seen | position bucket)`` and ``log P(not seen | position bucket)``, one parameter per bucket.

    A table of one logit per bucket is the most general function of a single categorical input (a deeper
    "position tower" over the same input can represent nothing more). Pinned buckets have ``P(seen) = 1``
    exactly: ``log P(seen) = 0`` and ``log P(not seen) = -inf``, which :func:`dmtl.losses.bce_product` takes
    as given (its log-sum-exp ignores ``-inf`` terms, with zero gradient).

    Args:
        n_buckets: cardinality of the encoded position feature.
        pinned: buckets whose ``P(seen)`` is fixed at 1 (default: unknown position and the top of the feed).
    """

    def __init__(self, n_buckets: int, pinned: Sequence[int] = (UNKNOWN_BUCKET, REFERENCE_BUCKET)):
        super().__init__()
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1; got {n_buckets}")
        if any(not 0 <= b < n_buckets for b in pinned):
            raise ValueError(f"pinned buckets {list(pinned)} must lie in [0, {n_buckets})")
        self.n_buckets = int(n_buckets)
        # Logit 0 (P(seen) = 1/2) to start: no prior on how fast examination decays with position.
        self.logit = nn.Parameter(torch.zeros(self.n_buckets))
        free = torch.ones(self.n_buckets, dtype=torch.bool)
        free[list(pinned)] = False
        self.register_buffer("free", free, persistent=False)

    def log_probs(self) -> tuple[Tensor, Tensor]:
        """``(log P(seen), log P(not seen))`` of every bucket, each ``(n_buckets,)``."""
        zero = torch.zeros_like(self.logit)
        log_seen = torch.where(self.free, F.logsigmoid(self.logit), zero)
        log_unseen = torch.where(self.free, F.logsigmoid(-self.logit), zero - torch.inf)
        return log_seen, log_unseen

    def p_seen(self) -> Tensor:
        """``P(seen | bucket)`` of every bucket, ``(n_buckets,)``: what the factor absorbed."""
        return self.log_probs()[0].exp()

    def forward(self, bucket: Tensor) -> dict[str, Tensor]:
        """The factor of each impression.

        Args:
            bucket: encoded positions, ``(B,)`` int64 in ``[0, n_buckets)``.

        Returns:
            ``log_p_seen`` and ``log_p_unseen``, each ``(B,)``: the extra factor of the click probability
            that :func:`dmtl.losses.teacher_loss` and the click-label student losses multiply in.
        """
        if bucket.dim() != 1:
            raise ValueError(f"expected position buckets of shape (B,); got {tuple(bucket.shape)}")
        if bool(((bucket < 0) | (bucket >= self.n_buckets)).any()):
            raise ValueError(
                f"position buckets must lie in [0, {self.n_buckets}); encode them as dmtl.features"
            )
        log_seen, log_unseen = self.log_probs()
        return {"log_p_seen": log_seen[bucket], "log_p_unseen": log_unseen[bucket]}


def position_column(context_features: Sequence[str]) -> int | None:
    """Index of the position feature among the context columns (``None`` if the data has none)."""
    names = list(context_features)
    return names.index(POSITION_FEATURE) if POSITION_FEATURE in names else None
