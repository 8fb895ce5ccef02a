"""One registry dispatches ``data.source`` to its loader, in memory (:func:`load_source`) or as log shards
(:func:`load_source_shards`, the out-of-core path).

Every loader returns the log in the study's schema (:class:`dmtl.schema.FeedLog`) and, for the simulator,
its :class:`~dmtl.sources.simulator.oracle.Oracle` (ground truth for evaluation only); real data has none.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmtl.config import DataConfig
from dmtl.schema import DataError, FeedLog, LoadOptions, LogSize

if TYPE_CHECKING:
    from dmtl.log_shards import LogShards


def _simulated(data: DataConfig) -> tuple[FeedLog, Any]:
    from dmtl.sources.simulator.config import make_config
    from dmtl.sources.simulator.world import simulate

    return simulate(make_config(data.preset, data.sim), seed=data.sim_seed)


def _kuairand(data: DataConfig) -> tuple[FeedLog, Any]:
    from dmtl.sources.kuairand.load import load_kuairand

    return load_kuairand(data.path, logs=data.kuairand_logs, options=LoadOptions.from_params(data)), None


def _generic(data: DataConfig) -> tuple[FeedLog, Any]:
    from dmtl.sources.generic import load_generic

    return load_generic(data.path, columns=data.columns or None, options=LoadOptions.from_params(data)), None


LOADERS: dict[str, Callable[[DataConfig], tuple[FeedLog, Any]]] = {
    "simulated": _simulated,
    "kuairand": _kuairand,
    "generic": _generic,
}
"""Each source of :data:`dmtl.vocab.SOURCES` and its loader."""


def load_source(data: DataConfig) -> tuple[FeedLog, Any]:
    """The configured source as ``(log, oracle)``; the oracle is ``None`` for real data."""
    return LOADERS[data.source](data)


def estimate_rows(data: Any) -> int:
    """About how many impressions the configured real log holds, without reading it: a Parquet file's row
    count, a CSV file's size over the mean length of its first lines; 0 when the files cannot be found."""
    from dmtl.sources.ingest.chunked import count_rows

    try:
        paths = _impression_files(data)
    except (DataError, OSError, ValueError):
        return 0
    return sum(count_rows(p) for p in paths)


def _impression_files(data: Any) -> list[Path]:
    if data.source == "kuairand":
        from dmtl.sources.kuairand.files import log_files_of, select_logs

        kinds, date_range, variant, files, data_dir = select_logs(data.path, data.kuairand_logs, None, None)
        return [f.path for kind in kinds for f in log_files_of(files, kind, variant, data_dir, date_range)]
    from dmtl.sources.generic import find_table

    path = find_table(Path(data.path), "impressions", required=True)
    return [path] if path is not None else []


def load_source_shards(study: Any, scratch: str | Path) -> LogShards:
    """The configured real log (``data.source``: kuairand or generic) as log shards, its sizes checked
    against the parameters (:func:`dmtl.checks.check_size`) after the first pass."""
    from dmtl.checks import check_size

    data = study.data
    scratch = Path(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    options = LoadOptions.from_params(data)

    def check(size: LogSize) -> None:
        check_size(study, size)

    if data.source == "kuairand":
        from dmtl.sources.kuairand.shards import load_kuairand_shards

        return load_kuairand_shards(
            data.path, scratch, data.shard_rows, data.kuairand_logs, options=options, check=check
        )
    from dmtl.sources.generic import load_generic_shards

    return load_generic_shards(data.path, scratch, data.shard_rows, data.columns or None, options, check)
