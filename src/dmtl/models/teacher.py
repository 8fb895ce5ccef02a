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

from dmtl.models.layers import MLP, FeatureEmbedding

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
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; valid: {BACKBONES}")
        if backbone == "mmoe" and n_experts < 1:
            raise ValueError(f"n_experts must be >= 1; got {n_experts}")
        if not expert_dims:
            raise ValueError("expert_dims must name at least one layer")
        self.backbone, self.esmm, self.duration_head = backbone, bool(esmm), bool(duration_head)
        self.user_emb = FeatureEmbedding(user_cardinalities, emb_dim)
        self.item_emb = FeatureEmbedding(item_cardinalities, emb_dim)
        self.context_emb = FeatureEmbedding(context_cardinalities, emb_dim)
        in_dim = self.user_emb.out_dim + self.item_emb.out_dim + self.context_emb.out_dim
        self.n_experts = n_experts if backbone == "mmoe" else 1
        self.experts = nn.ModuleList(MLP(in_dim, expert_dims, dropout) for _ in range(self.n_experts))
        # One softmax gate per task (MMoE eq. 5), computed as one linear layer for speed.
        self.gates = nn.Linear(in_dim, len(TASKS) * self.n_experts) if backbone == "mmoe" else None
        hidden = self.experts[0].out_dim
        self.ctr_tower = MLP(hidden, (*tower_dims, 1), dropout, last_activation=False)
        self.cvr_tower = MLP(hidden, (*tower_dims, 1), dropout, last_activation=False)
        self.dur_tower = (
            MLP(hidden, (*tower_dims, 1), dropout, last_activation=False) if duration_head else None
        )

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
        x = torch.cat([self.user_emb(user_x), self.item_emb(item_x), self.context_emb(context_x)], dim=1)
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, E, H)
        if self.gates is not None:
            gates = self.gates(x).view(-1, len(TASKS), self.n_experts).softmax(dim=-1)
            mixed = torch.einsum("bte,beh->bth", gates, experts)  # per-task expert mixture
            h_ctr, h_cvr = mixed[:, 0], mixed[:, 1]
        else:
            gates, h_ctr, h_cvr = None, experts[:, 0], experts[:, 0]
        logit_ctr = self.ctr_tower(h_ctr).squeeze(-1)
        logit_cvr = self.cvr_tower(h_cvr).squeeze(-1)
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
        if self.dur_tower is not None:
            # Softplus: a mean of log1p(duration) >= 0 cannot be negative.
            out["dur_log"] = F.softplus(self.dur_tower(h_cvr).squeeze(-1))
        return out
