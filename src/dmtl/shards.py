"""Out-of-core data: the prepared impressions as Parquet shards, and their readers.

The in-memory path (:func:`dmtl.features.prepare`, :class:`dmtl.data.ImpressionTensors`) holds every impression
as tensors: the fastest on a small log, and its memory grows with the log (about 0.3 GB per million
impressions from simulation to training). The out-of-core path, chosen by ``data.storage``
(:func:`dmtl.log_shards.storage_for`: ``memory``, ``shards``, or ``auto``: shards above
:data:`AUTO_SHARDS_ABOVE` impressions), keeps them on disk; its peak memory is one window of shards plus
what grows with users and items (their feature tables, the simulator's latents) and with clicks (the
clicked training durations tau is the mean of), not with impressions. The modules:

- :mod:`dmtl.log_shards` and :mod:`dmtl.shard_prepare` write them: the log as shards of whole users (the
  simulator's chunks, a real log bucketed by user in :mod:`dmtl.sources.ingest.chunked`), prepared in two
  passes (:func:`dmtl.shard_prepare.prepare_shards`) into ``<data>/shards/<split>/part-<k>.parquet``: the rows
  of :func:`dmtl.features.prepare` of the whole log.
- this module reads them (:class:`ShardedPrepared`, the stages' :func:`read_prepared`), and the teacher's
  per-shard predictions (``<teacher>/predictions/<split>/part-<k>.parquet``, row for row beside the shard).
- :mod:`dmtl.streaming` streams them into training, a window of shards at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmtl.features import SPLITS, Prepared
from dmtl.io import read_json

AUTO_SHARDS_ABOVE = 20_000_000
"""``data.storage: auto`` prepares into shards above this many (estimated) impressions: the in-memory path
needs about 5.5 GiB at 20M (``benchmarks/bench_scale.py``), and is faster below."""
SHARDS = "shards"
"""The folder of prepared shards inside the prepared-data folder."""
PREDICTIONS = "predictions"
"""The folder of a teacher's per-shard predictions inside its artifact folder."""


def part_name(index: int) -> str:
    """The file name of shard ``index``."""
    return f"part-{index:05d}.parquet"


class ShardedPrepared:
    """Prepared data whose impressions are shards on disk: :class:`dmtl.features.Prepared` without
    ``impressions`` (the tables, the metadata and its properties), plus readers of the shards."""

    def __init__(self, directory: Path, users: pd.DataFrame, items: pd.DataFrame, meta: dict[str, Any]):
        self.directory, self.users, self.items, self.meta = Path(directory), users, items, meta

    @classmethod
    def read(cls, directory: str | Path) -> ShardedPrepared:
        directory = Path(directory)
        return cls(
            directory,
            pd.read_parquet(directory / "users.parquet"),
            pd.read_parquet(directory / "items.parquet"),
            read_json(directory / "meta.json"),
        )

    user_cardinalities = Prepared.user_cardinalities
    item_cardinalities = Prepared.item_cardinalities
    context_cardinalities = Prepared.context_cardinalities
    cardinalities = Prepared.cardinalities
    tau_seconds = Prepared.tau_seconds

    def files(self, split: str) -> list[Path]:
        """The shards of ``split``, in order."""
        return [self.directory / SHARDS / f["file"] for f in self.meta["shards"][split]]

    def rows(self, split: str) -> list[int]:
        """Rows of each shard of ``split``."""
        return [int(f["rows"]) for f in self.meta["shards"][split]]

    def read_shard(self, split: str, index: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        cols = list(columns) if columns is not None else None
        return pd.read_parquet(self.files(split)[index], columns=cols)

    def iter_split(self, split: str, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        """Each shard of ``split`` in turn."""
        for index in range(len(self.files(split))):
            yield self.read_shard(split, index, columns)

    def read_split(self, split: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Every row of ``split`` in one frame (evaluation reads the test days this way)."""
        parts = list(self.iter_split(split, columns))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)

    def bincount(
        self,
        split: str,
        column: str,
        minlength: int,
        weights: Callable[[pd.DataFrame], np.ndarray] | None = None,
    ) -> np.ndarray:
        """``np.bincount`` of ``column`` over ``split`` (``weights``: a function of a shard's frame)."""
        total = np.zeros(minlength)
        cols = None if weights is not None else [column]
        for part in self.iter_split(split, cols):
            w = weights(part) if weights is not None else None
            total += np.bincount(part[column].to_numpy(), weights=w, minlength=minlength)
        return total

    def to_prepared(
        self, columns: Sequence[str] | None = None, splits: Sequence[str] = tuple(SPLITS)
    ) -> Prepared:
        """An in-memory :class:`Prepared` of ``splits`` (their shards concatenated, train then val then
        test), with only ``columns`` (and ``split``) when given: what the readers that need every row read."""
        cols = None if columns is None else list(dict.fromkeys([*columns, "split"]))
        parts = [p for name in splits for p in self.iter_split(name, cols)]
        imp = pd.concat(parts, ignore_index=True)
        return Prepared(imp, self.users, self.items, self.meta)


def read_overview(directory: str | Path, max_rows: int = 5_000_000) -> Prepared:
    """What the data notebook's overview figure reads: the prepared data, or for shards the training shards
    in order up to ``max_rows`` rows (whole users; the simulator's users are drawn independently, so a
    sample of them), with the tables and metadata."""
    if not is_sharded(directory):
        return Prepared.read(directory)
    shards = ShardedPrepared.read(directory)
    parts, n = [], 0
    for part in shards.iter_split("train"):
        parts.append(part)
        n += len(part)
        if n >= max_rows:
            break
    return Prepared(pd.concat(parts, ignore_index=True), shards.users, shards.items, shards.meta)


def is_sharded(directory: str | Path) -> bool:
    """Whether the prepared data in ``directory`` is in shards (``meta.json`` says so)."""
    meta = Path(directory) / "meta.json"
    return meta.exists() and read_json(meta).get("storage") == "shards"


def read_prepared(directory: str | Path) -> Prepared | ShardedPrepared:
    """The prepared data in ``directory``: a :class:`ShardedPrepared` for shards, else a :class:`Prepared`."""
    return ShardedPrepared.read(directory) if is_sharded(directory) else Prepared.read(directory)


def read_predictions(directory: str | Path, prepared: ShardedPrepared, split: str) -> dict[str, np.ndarray]:
    """A teacher's predictions of every row of ``split``, in the order of :meth:`ShardedPrepared.read_split`."""
    directory = Path(directory)
    parts = [pd.read_parquet(directory / f["file"]) for f in prepared.meta["shards"][split]]
    pred = pd.concat(parts, ignore_index=True)
    return {k: pred[k].to_numpy() for k in pred.columns}
