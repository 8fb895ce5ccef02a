"""The teacher's and the students' models built from their configs, and the Lightning modules that train them.

Every student is one :class:`StudentModule` parameterised by its target (docs/protocol.md section 3): the
architecture and the training loop are identical, so a gap between students is the target's doing.
:func:`dmtl.training.fit` trains either module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from dmtl import vocab as V
from dmtl.config import StudentConfig, TeacherConfig, TowersConfig
from dmtl.features import MAX_POSITION_BUCKET
from dmtl.losses import soft_target_from_teacher, teacher_loss
from dmtl.models.position import POSITION_FEATURE, PositionBias, position_column
from dmtl.models.teacher import MultiTaskTeacher
from dmtl.models.two_tower import TwoTower

if TYPE_CHECKING:
    from dmtl.objectives import StudentObjective, UnexposedPairs


CONTEXT_FEATURES: tuple[str, ...] = (POSITION_FEATURE,)
"""The context columns of a batch when the caller names none (``Prepared.meta["context_features"]``)."""
POSITION_BUCKETS = MAX_POSITION_BUCKET + 1
"""Cardinality of the encoded position (:func:`dmtl.features.prepare`): the rows of a position factor."""


_VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "shared_bottom": {"backbone": "shared_bottom"},
    "no_esmm": {"esmm": False},
    "position_feature": {"position": "feature"},
    "no_position": {"position": "none"},
}


def teacher_variant(cfg: TeacherConfig, variant: str = "default") -> TeacherConfig:
    """The teacher settings of ``variant`` (``teacher.variants``, docs/protocol.md section 2): the default
    with its backbone, ESMM or position handling swapped."""
    if variant not in _VARIANTS:
        raise ValueError(f"unknown teacher variant {variant!r}; valid: {['default', *V.TEACHER_VARIANTS]}")
    return dataclasses.replace(cfg, **_VARIANTS[variant])


def teacher_context(context_features: Sequence[str], position: str) -> list[int]:
    """The context columns the teacher's backbone reads: every context feature, the position only when
    ``position == "feature"`` (selected by name, so other context features always stay inputs)."""
    return [i for i, name in enumerate(context_features) if name != POSITION_FEATURE or position == "feature"]


def build_teacher(
    cards: Mapping[str, list[int]],
    cfg: TeacherConfig,
    variant: str = "default",
    context_features: Sequence[str] = CONTEXT_FEATURES,
) -> MultiTaskTeacher:
    """The teacher of ``cfg``; ``variant`` swaps the backbone, drops ESMM or changes how position enters
    (docs/protocol.md section 2). ``context_features`` names the columns of ``cards["context"]`` (and of
    the batches' ``context_x``); build the :class:`TeacherModule` with the same variant and names."""
    cfg = teacher_variant(cfg, variant)
    if len(context_features) != len(cards["context"]):
        raise ValueError(
            f"context_features {list(context_features)} do not name the {len(cards['context'])} context "
            "columns; pass Prepared.meta['context_features']"
        )
    return MultiTaskTeacher(
        cards["user"],
        cards["item"],
        [cards["context"][i] for i in teacher_context(context_features, cfg.position)],
        emb_dim=cfg.emb_dim,
        dot_dim=cfg.dot_dim,
        backbone=cfg.backbone,
        n_experts=cfg.n_experts,
        expert_dims=cfg.expert_dims,
        tower_dims=cfg.tower_dims,
        esmm=cfg.esmm,
        duration_head=cfg.w_duration > 0,
    )


def student_position_column(
    common: TowersConfig, student: StudentConfig, context_features: Sequence[str]
) -> int | None:
    """The context column of the position factor a student trains with, or ``None`` for none.

    Only with ``students.common.position_bias``, only for a student whose label needs a logged click
    (:attr:`dmtl.vocab.Student.click_label`) and only where the data records position.
    """
    if not common.position_bias or not V.student(student.name).click_label:
        return None
    return position_column(context_features)


def build_student(cards: Mapping[str, list[int]], common: TowersConfig, student: StudentConfig) -> TwoTower:
    """The two-tower student every target shares (``students.common``), sized by its own ``emb_dim``."""
    return TwoTower(
        cards["user"],
        cards["item"],
        emb_dim=student.emb_dim,
        tower_dims=common.tower_dims,
        out_dim=common.out_dim,
        score=common.score,
        temperature=common.cosine_temperature,
    )


class _StepCost(L.LightningModule):
    """The training loop both modules share, with Lightning's per-step costs cut where they do no work.

    - Manual optimization over groups of batches (:class:`dmtl.data.StepGroups`): one optimizer step per
      batch, exactly as Lightning's automatic loop takes them, but Lightning's hooks and bookkeeping run
      once per group. ``manual_backward`` and the wrapped optimizer keep precision plugins and DDP's
      gradient synchronisation working as in the automatic loop.
    - Batches are dicts of tensors built on the host; on a CPU run they are already where they belong, so
      Lightning's generic walk over the batch to move it is skipped.
    - The training loss is summed on the module and reduced once per epoch (:meth:`epoch_train_loss`)
      instead of going through ``self.log`` on every step, whose bookkeeping cost about 1 ms per step,
      a sixth of a two-tower step on CPU.

    ``benchmarks/bench_training.py`` measures the loop against the model alone.
    """

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def train_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batches: list[Mapping[str, torch.Tensor]], batch_idx: int) -> None:
        opt = self.optimizers()
        for batch in batches:
            loss = self.train_loss(batch)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            self.record_train_loss(loss, len(batch["click"]))

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if device.type == "cpu":
            return batch
        if isinstance(batch, list):
            return [self.transfer_batch_to_device(b, device, dataloader_idx) for b in batch]
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._loss_n = 0

    def record_train_loss(self, loss: torch.Tensor, n: int) -> None:
        """Add one batch's mean loss, weighted by its ``n`` samples, to this epoch's total."""
        self._loss_sum += loss.detach().double() * n
        self._loss_n += n

    def epoch_train_loss(self) -> float:
        """The sample-weighted mean training loss of the current epoch over all processes (DDP ranks)."""
        if not getattr(self, "_loss_n", 0):
            return float("nan")
        total = torch.stack([self._loss_sum, torch.tensor(float(self._loss_n), dtype=torch.float64)])
        total = self.trainer.strategy.reduce(total.to(self.device), reduce_op="sum")
        return float(total[0] / total[1])


class TeacherModule(_StepCost):
    """MMoE + ESMM teacher (or a variant) trained on click and long read over all impressions.

    ``teacher.position`` (docs/protocol.md section 2): ``bias`` keeps position out of the backbone and adds
    a learned ``P(seen | position)`` factor (:class:`dmtl.models.position.PositionBias`, PAL) that only the
    loss multiplies in, so the forward's ``p_ctr``, ``p_cvr`` and ``p_ctcvr`` are position-free: the
    predictions at the top of the feed, where the factor is 1; ``feature`` feeds position to the backbone
    (its predictions then depend on the logged position); ``none`` ignores it.

    Args:
        model: the backbone from :func:`build_teacher` with the same ``variant`` and ``context_features``.
        cfg: the study's teacher settings (``variant`` is applied to them).
        variant: ``default`` or one of ``teacher.variants``.
        context_features: names of the batches' ``context_x`` columns (``Prepared.meta["context_features"]``).
    """

    def __init__(
        self,
        model: MultiTaskTeacher,
        cfg: TeacherConfig,
        variant: str = "default",
        context_features: Sequence[str] = CONTEXT_FEATURES,
    ):
        super().__init__()
        cfg = teacher_variant(cfg, variant)
        columns = teacher_context(context_features, cfg.position)
        if len(columns) != model.n_fields[2]:
            raise ValueError(
                f"the teacher reads {model.n_fields[2]} context columns but variant {variant!r} "
                f"selects {len(columns)} of {list(context_features)}: build the model and its module with "
                "the same variant and context_features"
            )
        self.model = model
        self.cfg = cfg
        self.register_buffer("context_columns", torch.tensor(columns, dtype=torch.long), persistent=False)
        pos = position_column(context_features) if cfg.position == "bias" else None
        self.position_col = pos
        self.position = PositionBias(POSITION_BUCKETS) if pos is not None else None

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ctx = batch["context_x"]
        out = self.model(batch["user_x"], batch["item_x"], ctx.index_select(1, self.context_columns))
        if self.position is not None:
            out = {**out, **self.position(ctx[:, self.position_col])}
        return out

    def _loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.loss_from(self(batch), batch)

    def loss_from(
        self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The teacher's loss for outputs ``out`` already computed on ``batch``."""
        return teacher_loss(
            out,
            batch["click"],
            batch["long_read"],
            w_ctr=self.cfg.w_ctr,
            w_ctcvr=self.cfg.w_ctcvr,
            esmm=self.model.esmm,
            w_duration=self.cfg.w_duration,
            duration=batch["duration"],
        )

    def train_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self._loss(batch)[0]

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss, _ = self._loss(batch)
        self.log("val_loss", loss, on_epoch=True, batch_size=len(batch["click"]), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


class StudentModule(_StepCost):
    """The two-tower student trained on its own target under the study's objective
    (:class:`dmtl.objectives.StudentObjective`).

    A student that learns from the teacher reads its soft labels from the batch (two-stage regime: the
    frozen teacher's predictions, attached by the data) or, given a ``teacher`` module (joint regime), from
    that teacher's detached outputs on the same batch (stop-gradient: the distillation loss never moves the
    teacher, whose own loss trains it alongside). ``pairs`` adds teacher-labelled unexposed pairs to each
    training batch (never to validation batches, so the early-stopping loss is that of the logged days).
    """

    def __init__(
        self,
        model: TwoTower,
        student: StudentConfig,
        objective: StudentObjective,
        duration_cap: float,
        teacher: TeacherModule | None = None,
        pairs: UnexposedPairs | None = None,
        position_column: int | None = None,
    ):
        super().__init__()
        if (teacher is not None or pairs is not None) and student.distill is None:
            raise ValueError(f"student {student.name!r} does not learn from a teacher: no teacher, no pairs")
        self.model = model
        self.student = student
        self.objective = objective
        self.duration_cap = duration_cap
        self.teacher = teacher
        self.pairs = pairs
        # Position as a bias (PAL): a P(seen | position) factor trained beside the towers and used by the
        # loss only (:func:`student_position_column` says which students take one).
        self.position_column = position_column
        self.position = PositionBias(POSITION_BUCKETS) if position_column is not None else None

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The towers' logits ``<u, v>``: what serving and retrieval use, whatever the position."""
        return self.model(batch["user_x"], batch["item_x"])

    def teacher_label(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The joint teacher's detached soft target for ``batch`` (the labeller of unexposed pairs)."""
        out = self.teacher(batch)
        detached = {k: v.detach() for k, v in out.items() if v is not None}
        return soft_target_from_teacher(detached, self.student.distill.soft_target, self.duration_cap)

    def with_position_factor(self, batch: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        """``batch`` plus ``log_p_seen``, ``log_p_unseen`` of its positions when this student models position
        bias (read by :func:`dmtl.losses.click_bce`); ``batch`` itself otherwise."""
        if self.position is None:
            return batch
        return {**batch, **self.position(batch["context_x"][:, self.position_column])}

    def _loss(self, batch: Mapping[str, torch.Tensor], with_pairs: bool) -> torch.Tensor:
        batch = self.with_position_factor(batch)
        t_loss = None
        if self.teacher is not None:
            # One teacher forward per step: its loss trains the teacher; the detached outputs are the soft
            # labels (stop-gradient).
            out = self.teacher(batch)
            t_loss, _ = self.teacher.loss_from(out, batch)
            detached = {k: v.detach() for k, v in out.items() if v is not None}
            soft = soft_target_from_teacher(detached, self.student.distill.soft_target, self.duration_cap)
            batch = {**batch, "soft_label": soft}
        pairs = self.pairs(batch["user_row"]) if with_pairs and self.pairs is not None else None
        loss = self.objective(self.model, batch, pairs)
        return loss if t_loss is None else loss + t_loss

    def train_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self._loss(batch, with_pairs=True)

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        loss = self._loss(batch, with_pairs=False)
        self.log("val_loss", loss, on_epoch=True, batch_size=len(batch["click"]), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        s = self.student
        groups = [{"params": self.model.parameters(), "lr": s.lr, "weight_decay": s.weight_decay}]
        if self.position is not None:  # the position factor: one logit per position, not regularised
            groups.append({"params": self.position.parameters(), "lr": s.lr, "weight_decay": 0.0})
        if self.teacher is not None:
            t = self.teacher.cfg
            groups.append({"params": self.teacher.parameters(), "lr": t.lr, "weight_decay": t.weight_decay})
        return torch.optim.Adam(groups)
