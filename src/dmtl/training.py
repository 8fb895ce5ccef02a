"""Lightning modules for the teacher and the students, and one ``fit`` shared by both.

Every student is one :class:`StudentModule` parameterised by its target (docs/protocol.md section 3): the
architecture and the training loop are identical, so a gap between students is the target's doing.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from dmtl import vocab as V
from dmtl.config import StudentConfig, TeacherConfig, TowersConfig, TrainConfig
from dmtl.data import ImpressionDataModule, ImpressionTensors
from dmtl.features import MAX_POSITION_BUCKET
from dmtl.io import atomic_path, write_parquet
from dmtl.losses import soft_target_from_teacher, teacher_loss
from dmtl.models.position import POSITION_FEATURE, PositionBias, position_column
from dmtl.models.teacher import MultiTaskTeacher
from dmtl.models.two_tower import TwoTower
from dmtl.progress import ProgressLine

if TYPE_CHECKING:
    from dmtl.objectives import StudentObjective, UnexposedPairs
    from dmtl.streaming import ShardedData

CONTEXT_FEATURES: tuple[str, ...] = (POSITION_FEATURE,)
"""The context columns of a batch when the caller names none (``Prepared.meta["context_features"]``)."""
POSITION_BUCKETS = MAX_POSITION_BUCKET + 1
"""Cardinality of the encoded position (:func:`dmtl.features.prepare`): the rows of a position factor."""


def quiet_lightning() -> None:
    """Lightning's banners and tips would bury the notebooks' narrative; keep warnings that matter."""
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # A frozen teacher labelling a student's unexposed pairs stays in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    # The modules move their own dict batches (``_StepCost.transfer_batch_to_device``), on purpose.
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed Python, numpy and torch, and pin CPU threads so runs repeat exactly."""
    L.seed_everything(seed, workers=True, verbose=False)
    if threads:
        torch.set_num_threads(threads)


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


class CurveRecorder(Callback):
    """Keeps the epoch-level train and validation losses: the learning curves DVC plots read."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after the epoch's validation loop, so both losses of this epoch are known here.
        m = trainer.callback_metrics
        self.rows.append(
            {
                "epoch": int(trainer.current_epoch),
                "train_loss": pl_module.epoch_train_loss(),
                "val_loss": float(m["val_loss"]) if "val_loss" in m else float("nan"),
                "val_select": float(m["val_select"]) if "val_select" in m else float("nan"),
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["epoch", "train_loss", "val_loss", "val_select"])


def make_trainer(train: TrainConfig, callbacks: list[Callback], ckpt_dir: Path) -> L.Trainer:
    """A Trainer whose hardware comes from params, so the same notebook runs on CPU, a GPU or under DDP.

    Deterministic algorithms, without filling every new tensor with NaN first (torch's default under
    deterministic mode): no kernel here reads memory it did not write, so the numbers are bitwise the same and
    the teacher's step about a fifth faster (``benchmarks/bench_roofline.py``).
    """
    trainer = L.Trainer(
        accelerator=train.accelerator,
        devices=list(train.devices) if isinstance(train.devices, tuple) else train.devices,
        strategy=train.strategy,
        num_nodes=train.num_nodes,
        precision=train.precision,
        max_epochs=train.max_epochs,
        callbacks=callbacks,
        default_root_dir=str(ckpt_dir),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        num_sanity_val_steps=0,
    )
    torch.utils.deterministic.fill_uninitialized_memory = False
    return trainer


def fit(
    module: L.LightningModule,
    data: ImpressionTensors | ShardedData,
    train: TrainConfig,
    seed: int,
    extra_callbacks: list[Callback] | None = None,
    eval_batch_size: int | None = None,
    select: Callback | None = None,
) -> pd.DataFrame:
    """Train ``module`` with early stopping; load its best weights; return the curve.

    ``data`` is the in-memory tensors or, on the out-of-core path, the shards (:class:`dmtl.streaming.ShardedData`),
    streamed a window at a time; the loop is the same.

    Early stopping and the kept checkpoint follow the validation loss, or, given a ``select`` callback
    (:class:`dmtl.selection.ValidationMetric`), the validation metric it logs (``val_select``, higher is
    better). Checkpoints live in a private temporary folder, so an interrupted run leaves nothing behind
    that a later run could pick up by mistake: rerunning the stage restarts cleanly.
    """
    quiet_lightning()
    seed_everything(seed, train.threads)
    if isinstance(data, ImpressionTensors):
        dm = ImpressionDataModule(
            data, train.batch_size, seed, eval_batch_size=eval_batch_size, steps_per_call=train.steps_per_call
        )
    else:  # the out-of-core path (dmtl.streaming.ShardedData): the same loop, batches streamed from shards
        dm = data.datamodule(train.batch_size, seed, eval_batch_size, train.steps_per_call)
    curve = CurveRecorder()
    monitor, mode = ("val_select", "max") if select is not None else ("val_loss", "min")
    ckpt_dir = Path(tempfile.mkdtemp(prefix="dmtl-ckpt-"))
    try:
        best = ModelCheckpoint(
            dirpath=ckpt_dir, monitor=monitor, mode=mode, save_top_k=1, save_weights_only=True
        )
        stop = EarlyStopping(monitor=monitor, mode=mode, patience=train.patience)
        first = [select] if select is not None else []  # logs val_select before the others read it
        progress = ProgressLine(seed, train.seeds)  # one terminal line per run (dmtl.progress)
        callbacks = [*first, curve, best, stop, progress, *(extra_callbacks or [])]
        trainer = make_trainer(train, callbacks, ckpt_dir)
        trainer.fit(module, datamodule=dm)
        if best.best_model_path:
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
    finally:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    module.cpu().eval()
    return curve.frame()


@torch.no_grad()
def predict_teacher(
    module: TeacherModule, data: ImpressionTensors, batch_size: int = 65536
) -> dict[str, np.ndarray]:
    """p_ctr, p_cvr and p_ctcvr (and dur_log if present) for every impression, in row order.

    With ``teacher.position: bias`` they are position-free (the predictions at the top of the feed) and
    ``p_seen`` is the learned ``P(seen | logged position)``: ``p_seen * p_ctr`` is the fitted click
    probability at the logged position (a diagnostic; nothing downstream scores it).
    """
    module.eval()
    keys = ["p_ctr", "p_cvr", "p_ctcvr"] + (["dur_log"] if module.model.duration_head else [])
    keys += ["p_seen"] if module.position is not None else []
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for start in range(0, len(data), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(data)))
        out = module(data.batch(rows))
        if module.position is not None:
            out["p_seen"] = out["log_p_seen"].exp()
        for k in keys:
            chunks[k].append(out[k].float().numpy())
    return {k: np.concatenate(v) for k, v in chunks.items()}


def predict_teacher_shards(
    module: TeacherModule,
    data: ShardedData,
    directory: str | Path,
    splits: Sequence[str] = ("train", "val", "test"),
) -> None:
    """:func:`predict_teacher` for every shard of ``splits`` (the out-of-core path, :mod:`dmtl.streaming`),
    written to ``<directory>/<split>/part-<k>.parquet``, row for row beside the shard they score (the
    students' soft labels are read with each shard); the folder is replaced whole, once complete."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in splits:
        for index, entry in enumerate(data.prepared.meta["shards"][split]):
            pred = predict_teacher(module, data.shard(split, index, soft=False))
            write_parquet(pd.DataFrame(pred), tmp / entry["file"])
    shutil.rmtree(directory, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, directory)


@torch.no_grad()
def tower_embeddings(model: TwoTower, table: torch.Tensor, user: bool, batch_size: int = 65536) -> np.ndarray:
    """User (or item) tower outputs for every row of a feature table: what retrieval indexes."""
    model.eval()
    fn = model.user_embedding if user else model.item_embedding
    parts = [fn(table[s : s + batch_size]).float().numpy() for s in range(0, len(table), batch_size)]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def save_state(module: torch.nn.Module, path: Path) -> None:
    """Write a state dict atomically, byte for byte the same for the same weights (saved through a file handle,
    the archive's inner folder is ``archive``, not the random temporary file's name)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(module.state_dict(), handle)
