"""The DMTL teacher: an MMoE backbone with an ESMM click/long-read structure.

- MMoE: Ma, Zhao, Yi, Chen, Hong, Chi. *Modeling Task Relationships in Multi-task Learning with
  Multi-gate Mixture-of-Experts.* KDD 2018. Shared experts, one softmax gate per task.
- ESMM: Ma, Zhao, Huang, Wang, Hu, Zhu, Gai. *Entire Space Multi-Task Model.* SIGIR 2018.
  ``p_ctcvr = p_ctr * p_cvr``, both supervised over all impressions, so ``p_cvr`` never sees the biased
  clicked-only sample.
- DMTL: Zhao et al. *Distillation based Multi-task Learning.* arXiv 2102.07142 (docs/protocol.md section 1):
  "CVR" is P(long read | click); the teacher's ``p_ctcvr`` is the student's soft label.

The ablations of docs/protocol.md section 2 are constructor arguments: ``backbone="shared_bottom"`` and
``esmm=False`` (the CVR tower trained on clicked impressions only, :func:`dmtl.losses.teacher_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmtl.models.layers import FeatureEmbedding, ParallelMLP, softmax_mixture

BACKBONES = ("mmoe", "shared_bottom")
TASKS = ("ctr", "cvr")


class MultiTaskTeacher(nn.Module):
    """Click (CTR) and long-read-given-click (CVR) towers over an MMoE or shared-bottom backbone.

    Args:
        user_cardinalities: vocabulary sizes of the user fields (column 0: user id).
        item_cardinalities: vocabulary sizes of the item fields (column 0: item id).
        context_cardinalities: vocabulary sizes of the context fields; may be empty.
        emb_dim: embedding size per field.
        backbone: ``"mmoe"`` or ``"shared_bottom"``.
        n_experts: number of MMoE experts; ``shared_bottom`` has a single bottom network instead.
        expert_dims: layer widths of each expert (of the shared bottom).
        tower_dims: hidden widths of each task tower, before its final logit layer.
        esmm: train with the ESMM loss (``True``) or the clicked-only CVR ablation; read by the training
            module, which passes it to :func:`dmtl.losses.teacher_loss`.
        duration_head: add a third tower predicting ``E[log1p(duration) | click]`` (output ``dur_log``),
            used only for the ``p_ctr * E[duration | click]`` distillation target. It reads the CVR task's
            expert mixture, since both are quantities conditional on a click.
        dropout: dropout in experts and towers.
        dot_dim: size of the user x item inner-product term added to each task's logit (0: none).
    """

    def __init__(
        self,
        user_cardinalities: Sequence[int],
        item_cardinalities: Sequence[int],
        context_cardinalities: Sequence[int] = (),
        emb_dim: int = 16,
        backbone: str = "mmoe",
        n_experts: int = 4,
        expert_dims: Sequence[int] = (64, 32),
        tower_dims: Sequence[int] = (32,),
        esmm: bool = True,
        duration_head: bool = False,
        dropout: float = 0.0,
        dot_dim: int = 0,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; valid: {BACKBONES}")
        if backbone == "mmoe" and n_experts < 1:
            raise ValueError(f"n_experts must be >= 1; got {n_experts}")
        if not expert_dims:
            raise ValueError("expert_dims must name at least one layer")
        self.backbone, self.esmm, self.duration_head = backbone, bool(esmm), bool(duration_head)
        # One table for the user, item and context fields: one lookup and one gradient scatter, and the
        # concatenated input comes out of the lookup itself.
        self.n_fields = (len(user_cardinalities), len(item_cardinalities), len(context_cardinalities))
        names = [
            f"{side} column {i}"
            for side, n in zip(("user", "item", "context"), self.n_fields, strict=True)
            for i in range(n)
        ]
        cards = [*user_cardinalities, *item_cardinalities, *context_cardinalities]
        self.embedding = FeatureEmbedding(cards, emb_dim, field_names=names)
        in_dim = self.embedding.out_dim
        self.n_experts = n_experts if backbone == "mmoe" else 1
        # All experts (or the one shared bottom) as one ParallelMLP: one GEMM per layer, not one per expert.
        self.experts = ParallelMLP(in_dim, expert_dims, self.n_experts, dropout)
        # One softmax gate per task (MMoE eq. 5), as one linear layer; it is computed in the experts' first
        # GEMM (ParallelMLP.forward_with_side), since it reads the same input.
        self.gates = nn.Linear(in_dim, len(TASKS) * self.n_experts) if backbone == "mmoe" else None
        # The CTR and CVR towers (and the duration tower, which reads the CVR mixture) as one ParallelMLP.
        self.towers = ParallelMLP(
            self.experts.out_dim,
            (*tower_dims, 1),
            len(TASKS) + self.duration_head,
            dropout,
            last_activation=False,
        )
        # A user x item inner product added to each task's logit (the FM / two-tower term of DeepFM-style
        # rankers): an MLP over concatenated embeddings learns a dot product poorly, so without it the teacher
        # cannot even represent what its two-tower students do.
        self.dot_dim = int(dot_dim)
        n_user, n_item = self.n_fields[0] * emb_dim, self.n_fields[1] * emb_dim
        self.dot_user = nn.Linear(n_user, len(TASKS) * self.dot_dim, bias=False) if self.dot_dim else None
        self.dot_item = nn.Linear(n_item, len(TASKS) * self.dot_dim, bias=False) if self.dot_dim else None

    def forward(
        self, user_x: Tensor, item_x: Tensor, context_x: Tensor | None = None
    ) -> dict[str, Tensor | None]:
        """Score impressions.

        Args:
            user_x: user field indices, ``(B, n_user_fields)`` int64.
            item_x: item field indices, ``(B, n_item_fields)`` int64.
            context_x: context field indices, ``(B, n_context_fields)``; ``None`` means no context fields.

        Returns:
            ``logit_ctr``, ``logit_cvr``, ``p_ctr``, ``p_cvr``, ``p_ctcvr`` (= ``p_ctr * p_cvr``) and
            ``log_p_ctcvr`` (= ``logsigmoid(logit_ctr) + logsigmoid(logit_cvr)``), each ``(B,)``; ``gates``:
            ``(B, 2, n_experts)`` softmax weights of the CTR and CVR gates (``None`` for shared-bottom);
            with ``duration_head``, ``dur_log`` (``(B,)``, >= 0): predicted ``E[log1p(duration) | click]``.
        """
        if context_x is None:
            context_x = user_x.new_zeros((user_x.shape[0], 0))
        for side, x_side, n in zip(
            ("user_x", "item_x", "context_x"), (user_x, item_x, context_x), self.n_fields, strict=True
        ):
            if x_side.dim() != 2 or x_side.shape[1] != n:
                raise ValueError(f"expected {side} of shape (B, {n}); got {tuple(x_side.shape)}")
        x = self.embedding(torch.cat([user_x, item_x, context_x], dim=1))
        if self.gates is not None:
            experts, logits = self.experts.forward_with_side(x, self.gates)  # (E, B, H), (B, T * E)
            # Per-task softmax gates and expert mixture (T, B, H), MMoE eq. 5.
            mixed, gates = softmax_mixture(logits.view(-1, len(TASKS), self.n_experts), experts)
        else:
            gates, mixed = None, self.experts(x).expand(len(TASKS), -1, -1)
        if self.duration_head:
            # The duration tower reads the CVR task's mixture (both are conditional on a click).
            mixed = torch.cat([mixed, mixed[1:2]])
        logits = self.towers(mixed).squeeze(-1)  # (towers, B)
        if self.dot_user is not None:
            n_user, n_item = (n * self.embedding.dim for n in self.n_fields[:2])
            u = self.dot_user(x[:, :n_user]).view(-1, len(TASKS), self.dot_dim)
            v = self.dot_item(x[:, n_user : n_user + n_item]).view(-1, len(TASKS), self.dot_dim)
            logits = torch.cat([logits[: len(TASKS)] + (u * v).sum(-1).T, logits[len(TASKS) :]])
        logit_ctr, logit_cvr = logits[0], logits[1]
        p_ctr, p_cvr = torch.sigmoid(logit_ctr), torch.sigmoid(logit_cvr)
        out: dict[str, Tensor | None] = {
            "logit_ctr": logit_ctr,
            "logit_cvr": logit_cvr,
            "p_ctr": p_ctr,
            "p_cvr": p_cvr,
            # A product of two probabilities, so p_ctcvr <= p_ctr holds exactly, even in floating point.
            "p_ctcvr": p_ctr * p_cvr,
            "log_p_ctcvr": F.logsigmoid(logit_ctr) + F.logsigmoid(logit_cvr),
            "gates": gates,
        }
        if self.duration_head:
            # Softplus: a mean of log1p(duration) >= 0 cannot be negative.
            out["dur_log"] = F.softplus(logits[2])
        return out
