"""Log shards (the first half of the out-of-core data, :mod:`dmtl.shards`): the log in the study's schema as
Parquet files of whole users, and the choice between the in-memory and the out-of-core path.

- **Log shards** (:class:`LogShards`): the log as Parquet files, each holding whole users (every impression of
  a user lies in one shard), with the user and item tables in memory. The simulator draws them chunk by chunk
  (:func:`simulate_log_shards`); a real log is read in chunks and bucketed by user
  (:mod:`dmtl.sources.ingest.chunked`); an in-memory log can be cut into them (:func:`write_log_shards`).
  :mod:`dmtl.shard_prepare` prepares them.
- **The choice** (:func:`storage_for`): ``data.storage`` (``memory`` | ``shards`` | ``auto``, shards above
  :data:`dmtl.shards.AUTO_SHARDS_ABOVE` impressions, estimated without reading the log).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmtl import vocab as V
from dmtl.io import write_parquet
from dmtl.schema import (
    FeedLog,
    check_feed_log,
    coerce_impressions,
)
from dmtl.shards import AUTO_SHARDS_ABOVE, part_name

logger = logging.getLogger(__name__)

LOG_ROW = "log_row"
"""Optional column of a log shard: a key that orders rows as the whole log does, when the shards reorder it
(rows of one user gathered). Only rows of one day and second are ever ordered by it: it orders the clicked
training durations as the whole log would, so tau, their mean, is the in-memory path's to the last bit.
Without it the log is the shards concatenated."""


def choose_storage(storage: str, impressions: float) -> str:
    """``memory`` or ``shards`` for ``data.storage`` and the (estimated) size of the log."""
    if storage not in V.STORAGES:
        raise ValueError(f"data.storage = {storage!r}; valid: {list(V.STORAGES)}")
    if storage != "auto":
        return storage
    return "shards" if impressions > AUTO_SHARDS_ABOVE else "memory"


def storage_for(data: Any) -> str:
    """``memory`` or ``shards`` for the ``data`` params (:class:`dmtl.config.DataConfig`): ``data.storage``,
    with ``auto`` decided by :func:`estimate_impressions`."""
    if data.storage != "auto":
        return choose_storage(data.storage, 0)
    return choose_storage("auto", estimate_impressions(data))


def estimate_impressions(data: Any) -> float:
    """About how many impressions the configured source holds, known without reading the log: the
    simulator's schedule (:attr:`~dmtl.sources.simulator.config.SimConfig.expected_impressions`), or the
    real log's rows (:func:`dmtl.sources.registry.estimate_rows`); 0 when the files cannot be found (the pre-flight
    checks then say why)."""
    if data.source == "simulated":
        from dmtl.sources.simulator.config import make_config

        return float(make_config(data.preset, data.sim).expected_impressions)
    from dmtl.sources.registry import estimate_rows

    return float(estimate_rows(data))


@dataclass
class LogShards:
    """A log in the study's schema as Parquet shards that each hold whole users (module docstring).

    Attributes:
        files: the shards, in the log's order.
        users: the user feature table (``user_id`` + features).
        items: the item feature table (``item_id`` + features, optionally ``length_s``).
        source: the source name (as :attr:`dmtl.schema.FeedLog.source`).
        meta: what the source recorded (seed, policy counts, ...).
    """

    files: list[Path]
    users: pd.DataFrame
    items: pd.DataFrame
    source: str
    meta: dict = field(default_factory=dict)

    def chunks(self, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        """Each shard's rows, one shard at a time."""
        for path in self.files:
            yield pd.read_parquet(path, columns=list(columns) if columns is not None else None)

    def sample(self) -> FeedLog:
        """The first shard as a :class:`FeedLog`: a sample of whole users (the simulator's users are drawn
        independently, so the first chunk of them is a random sample), e.g. for the calibration figures."""
        first = pd.read_parquet(self.files[0])
        return FeedLog(coerce_impressions(first), self.users, self.items, self.source, dict(self.meta))


def _write_shard(frame: pd.DataFrame, path: Path) -> None:
    write_parquet(frame, path)


def write_log_shards(feed: FeedLog, directory: str | Path, shard_rows: int) -> LogShards:
    """Cut an in-memory log into shards of whole users, about ``shard_rows`` impressions each.

    Users are taken in the order of the user table; each shard keeps its rows in the log's order and records
    their place in it (:data:`LOG_ROW`), so :func:`prepare_shards` gives what :func:`dmtl.features.prepare`
    gives on ``feed``.
    """
    directory = Path(directory)
    _fresh(directory)
    imp = feed.impressions
    user_row = pd.Index(feed.users["user_id"]).get_indexer(imp["user_id"])
    if (user_row < 0).any():
        check_feed_log(feed)  # names the impressions whose user has no feature row
    counts = np.bincount(user_row, minlength=len(feed.users))
    user_shard = (np.cumsum(counts) - counts) // max(int(shard_rows), 1)
    _, user_shard = np.unique(user_shard, return_inverse=True)  # no empty shard numbers
    shard = user_shard[user_row]
    order = np.argsort(shard, kind="stable")
    bounds = np.searchsorted(shard[order], np.arange(shard.max(initial=-1) + 2))
    files = []
    for k in range(len(bounds) - 1):
        rows = order[bounds[k] : bounds[k + 1]]
        if len(rows) == 0:
            continue
        part = imp.iloc[rows].reset_index(drop=True).assign(**{LOG_ROW: rows.astype(np.int64)})
        files.append(directory / part_name(k))
        _write_shard(part, files[-1])
    return LogShards(files, feed.users, feed.items, feed.source, dict(feed.meta))


def simulate_log_shards(
    config: Any, seed: int, directory: str | Path, shard_rows: int
) -> tuple[LogShards, Any]:
    """Draw a simulated log chunk by chunk (:func:`dmtl.sources.simulator.world.simulate_in_chunks`) into
    shards of about ``shard_rows`` impressions; return them and the world's oracle.

    The world (users, items, oracle) is :func:`~dmtl.sources.simulator.world.simulate`'s for the same
    ``(config, seed)``; the log is drawn from one stream per chunk (a different draw of the same model), so
    only one chunk is ever in memory.
    """
    from dmtl.sources.simulator.world import simulate_in_chunks, users_per_chunk

    directory = Path(directory)
    _fresh(directory)
    sim = simulate_in_chunks(config, seed, users_per_chunk(config, shard_rows))
    files = []
    for k, chunk in enumerate(sim.chunks()):
        if len(chunk):
            files.append(directory / part_name(k))
            _write_shard(chunk, files[-1])
    meta = {**sim.meta, "log": "drawn per chunk of users (simulate_in_chunks)"}
    return LogShards(files, sim.users, sim.items, "simulated", meta), sim.oracle


def _fresh(directory: Path) -> None:
    """An empty folder at ``directory`` (a stale shard of an earlier run must not be read as this one's)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
