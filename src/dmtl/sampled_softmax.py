"""The ``sampled_softmax`` objective's loss: an in-batch sampled softmax with the log-Q correction, each row
weighted by how much the student's target says the pair is a positive (:data:`SOFTMAX_WEIGHTS`).

The pointwise losses (teacher, distillation, each student's target) are in :mod:`dmtl.losses`; the objective
that picks between them, :mod:`dmtl.objectives`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dmtl.losses import Batch, check_same_shape

if TYPE_CHECKING:
    from dmtl.config import DistillConfig


def sampled_softmax_loss(
    user_emb: Tensor, item_emb: Tensor, item_row: Tensor, log_q: Tensor, weight: Tensor, n_negatives: int
) -> Tensor:
    """In-batch sampled softmax with the log-Q correction (Yi et al., RecSys 2019), rows weighted.

    Row ``i`` is the pair (user ``i``, item ``i``); the items of the batch's first ``n_negatives`` rows are
    the negatives of every row (the batch is shuffled, so they are a sample of the training stream; with
    ``n_negatives >= B`` every other row's item is a negative, the classic in-batch softmax). Because an
    item enters a batch with probability ``q_j`` (its share of the stream), popular items would be
    over-penalised as negatives; subtracting ``log q_j`` from every logit corrects the sampled softmax towards
    the full softmax over the corpus. A negative holding row ``i``'s own item ("accidental hit", including
    row ``i`` itself) is masked.

    ``loss = sum_i w_i * -log softmax([<u_i, v_i> - log q_i, <u_i, v_j> - log q_j for j])[0] / sum_i w_i``
    (0 when no row has weight): a row's weight is how much the student's target says the pair is a positive
    (:data:`SOFTMAX_WEIGHTS`). The cost is ``B * n_negatives`` logits rather than ``B * B``.

    Args:
        user_emb: ``(B, d)`` user-tower outputs.
        item_emb: ``(B, d)`` item-tower outputs of the same rows.
        item_row: ``(B,)`` item index of each row (for the accidental-hit mask).
        log_q: ``(B,)`` log sampling probability of each row's item.
        weight: ``(B,)`` non-negative row weights.
        n_negatives: how many of the batch's rows serve as the shared negatives.
    """
    check_same_shape(item_row=item_row, log_q=log_q, weight=weight)
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1; got {n_negatives}")
    log_q = log_q.to(user_emb.dtype)
    n = min(int(n_negatives), len(item_row))
    weight = weight.to(user_emb.dtype)
    # Rows without weight add nothing to the loss; their items still serve as negatives. Only the weighted
    # rows' logits are computed, and the constant part of every negative logit (-log q_j, -inf on an
    # accidental hit) is one bias matrix outside the autograd graph, added by the matmul itself.
    rows = torch.nonzero(weight > 0).squeeze(1)
    if len(rows) == 0:
        return (user_emb * item_emb).sum() * 0.0
    user, weight = user_emb[rows], weight[rows]
    positive = (user * item_emb[rows]).sum(dim=-1) - log_q[rows]
    hit = item_row[rows, None] == item_row[None, :n]
    bias = torch.where(hit, torch.tensor(float("-inf"), dtype=log_q.dtype), -log_q[None, :n])
    negative = torch.addmm(bias, user, item_emb[:n].T)
    nll = torch.logaddexp(positive, torch.logsumexp(negative, dim=1)) - positive
    return (weight * nll).sum() / weight.sum()


SoftmaxWeight = Callable[[Batch, float, "DistillConfig | None"], Tensor]
SOFTMAX_WEIGHTS: dict[str, SoftmaxWeight] = {
    # How much each logged impression counts as a positive of the student's target (docs/protocol.md §3).
    "ctr": lambda b, scale, d: b["click"].float(),
    "duration_regression": lambda b, scale, d: torch.log1p(b["duration"].float()),
    "weighted_lr": lambda b, scale, d: b["click"].float() * b["duration"].float() / scale,
    "ctcvr_hard": lambda b, scale, d: (b["click"] * b["long_read"]).float(),
    "dmtl": lambda b, scale, d: (
        b["soft_label"].float() + d.hard_weight * (b["click"] * b["long_read"]).float()
    ),
}
"""Each student's row weight in the ``sampled_softmax`` objective: its target as a positive weight."""
