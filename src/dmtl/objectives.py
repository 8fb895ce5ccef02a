"""The students' two training objectives (``students.common.objective``) and the teacher-labelled pairs.

- ``pointwise``: the paper's setting. Each logged impression is scored alone and each student has its own
  loss (:data:`dmtl.losses.STUDENT_LOSSES`).
- ``sampled_softmax``: a retrieval objective over the corpus. Each impression is a (user, item) row of an
  in-batch softmax whose negatives are the batch's other items, log-Q corrected
  (:func:`dmtl.sampled_softmax.sampled_softmax_loss`), and weighted by how much the student's target says the pair is
  a positive (:data:`dmtl.sampled_softmax.SOFTMAX_WEIGHTS`): clicks for ``ctr``, long reads for ``ctcvr_hard``,
  duration for the two duration students, the teacher's soft label for ``dmtl``.

A student that learns from the teacher may add **teacher-labelled unexposed pairs** to every batch
(:class:`dmtl.data.UnexposedSampler`, ``students.<name>.unexposed_ratio``): pairs the logs never showed,
labelled by the teacher. In the pointwise objective they add ``unexposed_weight`` times the distillation loss
on them; in the softmax objective they are extra rows weighted by ``unexposed_weight`` times their label
(and negatives of the other rows). This is the one thing only a distilled student can learn from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from dmtl.config import StudentConfig
from dmtl.data import UnexposedSampler
from dmtl.losses import distillation_loss, student_loss
from dmtl.models.two_tower import TwoTower
from dmtl.sampled_softmax import SOFTMAX_WEIGHTS, sampled_softmax_loss

Batch = Mapping[str, Tensor]


class UnexposedPairs(nn.Module):
    """Draws the teacher-labelled pairs of one batch and labels them.

    Args:
        sampler: which pairs.
        user_table: user feature rows (the batch's ``user_x`` come from it).
        item_table: item feature rows.
        labeller: the teacher's soft target for a batch of ``user_x``, ``item_x``, ``context_x`` (the
            frozen teacher of the two-stage regime, or the teacher trained alongside, detached).
        n_context: context fields of the teacher; the pairs get the reference context (index 0: no
            position, no logged context), since the logs never showed them.
    """

    def __init__(
        self,
        sampler: UnexposedSampler,
        user_table: Tensor,
        item_table: Tensor,
        labeller: Callable[[Batch], Tensor],
        n_context: int,
    ):
        super().__init__()
        self.sampler, self.labeller, self.n_context = sampler, labeller, n_context
        self.register_buffer("user_table", user_table, persistent=False)
        self.register_buffer("item_table", item_table, persistent=False)

    def forward(self, user_row: Tensor) -> dict[str, Tensor] | None:
        users, items = self.sampler.draw(user_row.cpu())
        if len(users) == 0:
            return None
        users, items = users.to(self.user_table.device), items.to(self.item_table.device)
        pairs = {
            "user_row": users,
            "item_row": items,
            "user_x": self.user_table[users],
            "item_x": self.item_table[items],
            "context_x": torch.zeros((len(users), self.n_context), dtype=torch.long, device=users.device),
        }
        with torch.no_grad():
            pairs["soft_label"] = self.labeller(pairs).detach()
        return pairs


def item_log_q(sampler_items: np.ndarray, train_counts: np.ndarray, unexposed_ratio: float) -> Tensor:
    """log of each item's share of the rows a batch holds: training impressions, plus the unexposed pairs'
    items (``sampler_items``: their probability per item) at ``unexposed_ratio`` pairs per impression."""
    impressions = train_counts / max(train_counts.sum(), 1.0)
    q = (impressions + unexposed_ratio * sampler_items) / (1.0 + unexposed_ratio)
    return torch.from_numpy(np.log(np.maximum(q, 1e-12))).float()


class StudentObjective(nn.Module):
    """One student's loss on a batch (and its unexposed pairs) under ``students.common.objective``."""

    def __init__(
        self,
        student: StudentConfig,
        objective: str,
        duration_scale: float,
        log_q: Tensor | None,
        n_negatives: int,
    ):
        super().__init__()
        self.n_negatives = n_negatives
        if objective == "sampled_softmax" and log_q is None:
            raise ValueError("the sampled_softmax objective needs each item's log sampling probability")
        self.student, self.objective, self.duration_scale = student, objective, duration_scale
        self.register_buffer("log_q", log_q if log_q is not None else torch.zeros(0), persistent=False)

    def forward(self, model: TwoTower, batch: Batch, pairs: Batch | None = None) -> Tensor:
        if self.objective == "pointwise":
            return self._pointwise(model, batch, pairs)
        return self._softmax(model, batch, pairs)

    def _pointwise(self, model: TwoTower, batch: Batch, pairs: Batch | None) -> Tensor:
        s = self.student
        loss = student_loss(
            s.name, model(batch["user_x"], batch["item_x"]), batch, self.duration_scale, s.distill
        )
        if pairs is not None and s.distill is not None and s.distill.unexposed_weight > 0:
            logit = model(pairs["user_x"], pairs["item_x"])
            d = s.distill
            loss = loss + d.unexposed_weight * distillation_loss(
                logit, pairs["soft_label"], d.distill_loss, d.kl_temperature
            )
        return loss

    def _softmax(self, model: TwoTower, batch: Batch, pairs: Batch | None) -> Tensor:
        s = self.student
        user, item = model.user_embedding(batch["user_x"]), model.item_embedding(batch["item_x"])
        rows, weight = batch["item_row"], SOFTMAX_WEIGHTS[s.name](batch, self.duration_scale, s.distill)
        if pairs is not None and s.distill is not None:
            user = torch.cat([user, model.user_embedding(pairs["user_x"])])
            item = torch.cat([item, model.item_embedding(pairs["item_x"])])
            rows = torch.cat([rows, pairs["item_row"]])
            weight = torch.cat([weight, s.distill.unexposed_weight * pairs["soft_label"].to(weight.dtype)])
        return sampled_softmax_loss(user, item, rows, self.log_q[rows], weight, self.n_negatives)
