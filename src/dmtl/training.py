"""Training: one ``fit`` shared by the teacher and every student, with its seeding, trainer and state saving.

The modules it trains live in :mod:`dmtl.modules`; what a trained module predicts, in :mod:`dmtl.predict`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from dmtl.config import TrainConfig
from dmtl.data import ImpressionDataModule, ImpressionTensors
from dmtl.io import atomic_path
from dmtl.progress import ProgressLine

if TYPE_CHECKING:
    from dmtl.streaming import ShardedData


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


def save_state(module: torch.nn.Module, path: Path) -> None:
    """Write a state dict atomically, byte for byte the same for the same weights (saved through a file handle,
    the archive's inner folder is ``archive``, not the random temporary file's name)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(module.state_dict(), handle)
