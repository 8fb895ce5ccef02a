"""KuaiRand's official files read in chunks into log shards of whole users: the out-of-core path of
:func:`dmtl.sources.kuairand.load.load_kuairand` (the steps are :mod:`dmtl.sources.ingest.chunked`'s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from dmtl.log_shards import LogShards
from dmtl.schema import DataError, LoadOptions, LogSize
from dmtl.sources.ingest.chunked import ChunkedLog, FileFacts, bucket_count, count_rows, iter_table
from dmtl.sources.kuairand.files import (
    ITEM_FEATURES,
    LOG_COLUMNS,
    OFFICIAL_FIX,
    USER_FEATURES,
    KuaiRandFile,
    log_files_of,
    select_logs,
)
from dmtl.sources.kuairand.load import check_log_header, finish_arguments, kuairand_tables, log_raw


def load_kuairand_shards(
    directory: str | Path,
    scratch: str | Path,
    shard_rows: int,
    logs: Sequence[str] = ("standard",),
    date_range: tuple[int, int] | None = None,
    variant: str | None = None,
    *,
    length_bands: int = 5,
    options: LoadOptions | None = None,
    check: Callable[[LogSize], None] | None = None,
) -> LogShards:
    """:func:`~dmtl.sources.kuairand.load.load_kuairand` in chunks (module docstring): the log as shards of
    whole users.

    The arguments are :func:`~dmtl.sources.kuairand.load.load_kuairand`'s, with ``scratch``, ``shard_rows`` and
    ``check`` as in :func:`dmtl.sources.generic.load_generic_shards`.
    """
    options = options or LoadOptions()
    if length_bands < 1:
        raise ValueError(f"length_bands must be >= 1, got {length_bands}")
    scratch = Path(scratch)
    kinds, date_range, variant, files, data_dir = select_logs(directory, logs, date_range, variant)
    log_files = [f for kind in kinds for f in log_files_of(files, kind, variant, data_dir, date_range)]
    run = ChunkedLog(scratch, bucket_count(sum(count_rows(f.path) for f in log_files), shard_rows))
    read, rows_read = [], 0
    for f in log_files:
        rows_read += _read_log_file(f, run, shard_rows, date_range, options)
        read.append(str(f.path))
    if run.facts.rows == 0:
        raise DataError(
            data_dir,
            "date",
            f"no impressions of logs {list(kinds)} within date_range {date_range}",
            "choose dates that the log files cover (their names give the ranges)",
        )
    users, items, edges, user_files, video_files = kuairand_tables(
        files,
        variant,
        data_dir,
        run.facts.users,
        run.facts.items,
        length_bands,
        options.encoding,
    )
    if check is not None:
        check(run.size(str(data_dir), USER_FEATURES, ITEM_FEATURES))
    return run.finish(
        users,
        items,
        **finish_arguments(
            variant,
            kinds,
            date_range,
            read,
            user_files,
            video_files,
            rows_read,
            run.counts,
            edges,
            data_dir,
            options,
        ),
    )


def _read_log_file(
    f: KuaiRandFile,
    run: ChunkedLog,
    shard_rows: int,
    date_range: tuple[int, int] | None,
    options: LoadOptions,
) -> int:
    """One log file read chunk by chunk into ``run``'s buckets, its whole-file rules checked; its rows read."""
    check_log_header(f.path, options)
    facts = FileFacts(f.path)
    n_read = 0
    cols = list(LOG_COLUMNS.values())
    for frame in iter_table(f.path, cols, shard_rows, encoding=options.encoding):
        n_read += len(frame)
        raw = log_raw(frame, f.path, date_range, run.counts, options, whole_log=False)
        rows = frame.index.to_numpy()
        if date_range is not None:  # log_raw kept the rows in the range: their places in the file
            date = frame["date"].to_numpy()
            rows = rows[(date >= date_range[0]) & (date <= date_range[1])]
        facts.add(raw, rows)
        run.add(raw)
    if n_read == 0:
        raise DataError(f.path, None, "has a header but no data rows", OFFICIAL_FIX)
    facts.check("play_time_ms", "time_ms", options)
    return n_read
