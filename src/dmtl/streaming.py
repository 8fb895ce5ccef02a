"""Training from prepared shards (:mod:`dmtl.shards`): the out-of-core counterpart of :mod:`dmtl.data`.

Training reads its shards a window at a time, shuffled within the window (every shard's rows mixed with the
window's others) from a generator seeded per epoch, in an order of shards shuffled per epoch; under DDP each
rank reads its own shards (a fixed, size-balanced assignment) and every rank takes the same number of rows.
A two-stage student reads the teacher's per-shard predictions (its soft labels) with each shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import IterableDataset

from dmtl.data import ImpressionDataModule, ImpressionTensors
from dmtl.features import SPLITS
from dmtl.shards import ShardedPrepared

TRAIN_COLUMNS = ("user_idx", "item_idx", "click", "long_read", "duration", "split")
"""Columns of a prepared shard that training reads, beside the context features."""


@dataclass(frozen=True)
class SoftLabels:
    """Where a teacher's per-shard predictions are (``<directory>/<split>/part-<k>.parquet``) and how a
    shard's predictions become its soft labels (the student's ``soft_target``)."""

    directory: Path
    transform: Callable[[dict[str, np.ndarray]], np.ndarray]


def assign_shards(rows: Sequence[int], world: int) -> list[list[int]]:
    """Shards per rank: the largest shard to the rank with the fewest rows so far (ties: the lower rank, the
    lower shard), each rank's list in shard order; the same for every rank, every epoch."""
    if world > len(rows):
        raise ValueError(
            f"{len(rows)} shard(s) for {world} processes: every process needs its own; lower data.shard_rows"
        )
    load, out = [0] * world, [[] for _ in range(world)]
    for index in sorted(range(len(rows)), key=lambda i: (-rows[i], i)):
        rank = min(range(world), key=lambda r: (load[r], r))
        out[rank].append(index)
        load[rank] += rows[index]
    return [sorted(o) for o in out]


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class ShardedData:
    """The training side of :class:`ShardedPrepared`: what :class:`dmtl.data.ImpressionTensors` offers a
    model's training (feature tables, batches of a split, training item counts), streamed from the shards.

    Args:
        prepared: the shards.
        soft_labels: the teacher's predictions to attach as ``soft_label`` (two-stage distillation).
        window: shards read and shuffled together.
    """

    def __init__(self, prepared: ShardedPrepared, soft_labels: SoftLabels | None = None, window: int = 4):
        if int(window) < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.prepared, self.soft_labels, self.window = prepared, soft_labels, int(window)
        meta = prepared.meta
        self.context_features = list(meta["context_features"])
        self.user_table = torch.from_numpy(
            prepared.users[meta["user_features"]].to_numpy(np.int64, copy=True)
        )
        self.item_table = torch.from_numpy(
            prepared.items[meta["item_features"]].to_numpy(np.int64, copy=True)
        )
        self._counts: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return sum(sum(self.prepared.rows(s)) for s in SPLITS)

    def frame(self, split: str, index: int, soft: bool = True) -> pd.DataFrame:
        """Shard ``index`` of ``split`` as training reads it (with ``soft_label`` when configured)."""
        frame = self.prepared.read_shard(split, index, [*TRAIN_COLUMNS, *self.context_features])
        if soft and self.soft_labels is not None:
            path = self.soft_labels.directory / self.prepared.meta["shards"][split][index]["file"]
            pred = pd.read_parquet(path)
            if len(pred) != len(frame):
                raise ValueError(
                    f"{path}: {len(pred)} predictions for {len(frame)} impressions; retrain the teacher"
                )
            frame["soft_label"] = self.soft_labels.transform(
                {k: pred[k].to_numpy(copy=True) for k in pred.columns}
            )
        return frame

    def tensors(self, frame: pd.DataFrame) -> ImpressionTensors:
        """Tensors of ``frame`` (rows of :meth:`frame`) over the shared feature tables."""
        soft = frame["soft_label"].to_numpy() if "soft_label" in frame.columns else None
        return ImpressionTensors.from_frame(
            frame, self.user_table, self.item_table, self.context_features, soft
        )

    def shard(self, split: str, index: int, soft: bool = True) -> ImpressionTensors:
        return self.tensors(self.frame(split, index, soft))

    def datamodule(
        self, batch_size: int, seed: int, eval_batch_size: int | None = None, steps_per_call: int = 1
    ) -> ShardDataModule:
        """What :func:`dmtl.training.fit` trains from."""
        return ShardDataModule(self, batch_size, seed, eval_batch_size, steps_per_call)

    def item_counts(self, split: str = "train") -> np.ndarray:
        """Impressions of each corpus item in ``split`` (one pass over its shards, kept)."""
        if split not in self._counts:
            counts = self.prepared.bincount(split, "item_idx", len(self.item_table))
            self._counts[split] = counts.astype(np.int64)
        return self._counts[split]

    def logged_pairs(self) -> np.ndarray:
        """Sorted ``user_row * n_items + item_row`` of every logged impression, every split (the pairs the
        unexposed sampler must not draw): memory grows with distinct pairs, as on the in-memory path."""
        n_items, keys = len(self.item_table), []
        for split in SPLITS:
            for part in self.prepared.iter_split(split, ["user_idx", "item_idx"]):
                keys.append(np.unique(part["user_idx"].to_numpy() * n_items + part["item_idx"].to_numpy()))
        return np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)

    def validation_tensors(self) -> ImpressionTensors:
        """The validation days and the training rows of their users with a long read, as tensors: all that
        :class:`dmtl.selection.ValidationMetric` reads (the validation metric and its history mask)."""
        val = pd.concat(list(self.prepared.iter_split("val")), ignore_index=True)
        long = val["click"].to_numpy() * val["long_read"].to_numpy() > 0
        users = np.unique(val["user_idx"].to_numpy()[long])
        train = [p[np.isin(p["user_idx"].to_numpy(), users)] for p in self.prepared.iter_split("train")]
        frame = pd.concat([*train, val], ignore_index=True)
        return ImpressionTensors.from_frame(frame, self.user_table, self.item_table, self.context_features)


class ShardStream(IterableDataset):
    """Whole batches of one split, read a window of shards at a time (module docstring).

    With ``shuffle``, epoch ``e`` reads this rank's shards in an order drawn from ``(seed, e)`` and
    shuffles the rows of each window from ``(seed, e, rank)``; rows left over at a window's end open the
    next window's first batch. Without it the shards and rows are read in order. Every rank yields
    ``len(self)`` batches: the rows of the rank with the fewest (the others' last rows are left out of that
    epoch, as the in-memory stream leaves out the remainder of an uneven split).
    """

    def __init__(
        self, data: ShardedData, split: str, batch_size: int, shuffle: bool, seed: int = 0, soft: bool = True
    ):
        super().__init__()
        self.data, self.split, self.batch_size = data, split, int(batch_size)
        self.shuffle, self.seed, self.soft = shuffle, seed, soft
        self.epoch = 0
        self.shards_read: list[int] = []  # this rank's shards in the last epoch, in reading order

    def _plan(self) -> tuple[list[int], int]:
        """This rank's shards and the rows every rank yields per epoch."""
        rows = self.data.prepared.rows(self.split)
        world, rank = _world()
        if world == 1:
            return list(range(len(rows))), sum(rows)
        ranks = assign_shards(rows, world)
        return ranks[rank], min(sum(rows[i] for i in r) for r in ranks)

    def __len__(self) -> int:
        return -(-self._plan()[1] // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        shards, limit = self._plan()
        _, rank = _world()
        if self.shuffle:
            shards = list(np.random.Generator(np.random.PCG64([self.seed, self.epoch])).permutation(shards))
            rng = np.random.Generator(np.random.PCG64([self.seed, self.epoch, rank, 1]))
            self.epoch += 1
        self.shards_read = [int(s) for s in shards]
        carry: pd.DataFrame | None = None
        left = limit
        for start in range(0, len(shards), self.data.window):
            parts = [
                self.data.frame(self.split, int(i), self.soft)
                for i in shards[start : start + self.data.window]
            ]
            frame = pd.concat(([carry] if carry is not None else []) + parts, ignore_index=True)
            rows = rng.permutation(len(frame)) if self.shuffle else np.arange(len(frame))
            last = len(rows) >= left  # this window holds the epoch's last rows (the limit falls in it)
            rows = rows[:left]
            tensors = self.data.tensors(frame)
            full = len(rows) - len(rows) % self.batch_size
            for s in range(0, len(rows) if last else full, self.batch_size):
                batch = rows[s : s + self.batch_size]
                left -= len(batch)
                yield tensors.batch(torch.from_numpy(batch))
            if last:
                return
            carry = frame.iloc[rows[full:]]


class ShardDataModule(ImpressionDataModule):
    """:class:`dmtl.data.ImpressionDataModule` over shards: train on the training shards (batches grouped by
    ``steps_per_call``), validate on the validation shards (``data`` is a :class:`ShardedData`)."""

    def streams(self) -> tuple[IterableDataset, IterableDataset]:
        """The training shards' stream (shuffled by ``seed``) and the validation shards' stream."""
        return (
            ShardStream(self.data, "train", self.batch_size, shuffle=True, seed=self.seed),
            ShardStream(self.data, "val", self.eval_batch_size, shuffle=False),
        )
