"""The generic click + duration log format: its loader and its chunked (out-of-core) reader.

A directory holds ``impressions.csv`` or ``impressions.parquet`` (required) and, optionally,
``users.(csv|parquet)`` and ``items.(csv|parquet)``. :func:`load_generic` reads it into the study's
:class:`~dmtl.schema.FeedLog`. The format, every policy and every error are documented in
``docs/data_formats.md``.

The column checks, typed conversions, row policies and feature join are the shared ones of
:mod:`dmtl.sources.ingest`, which :mod:`dmtl.sources.kuairand` uses too, so that every source obeys one set of
rules: bad input raises :class:`~dmtl.schema.DataError` naming the file, the column and the fix; anything the
loader repairs is counted in ``FeedLog.meta["policy_counts"]`` and logged with :mod:`logging`, never changed
silently.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.log_shards import LogShards
from dmtl.schema import (
    REQUIRED_COLUMNS,
    SCHEMA_COLUMNS,
    DataError,
    FeedLog,
    LoadOptions,
    LogSize,
)
from dmtl.sources.ingest.chunked import ChunkedLog, FileFacts, bucket_count, count_rows, iter_table
from dmtl.sources.ingest.convert import (
    check_duration_units,
    check_times,
    to_clicks,
    to_day_numbers,
    to_durations,
    to_epoch_ms_and_day,
    to_ids,
    to_numbers,
    to_positions,
)
from dmtl.sources.ingest.policies import add_count, finalize_feed_log
from dmtl.sources.ingest.reading import check_folder, read_header, read_table, require_columns, require_rows
from dmtl.sources.ingest.side_features import check_feature_names, feature_table

logger = logging.getLogger(__name__)


def _resolve_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    mapping = {name: name for name in REQUIRED_COLUMNS}
    if columns:
        unknown = sorted(set(columns) - set(SCHEMA_COLUMNS))
        if unknown:
            raise ValueError(
                f"unknown schema column(s) {unknown} in `columns`; valid keys: {list(SCHEMA_COLUMNS)}"
            )
        not_text = [k for k, v in columns.items() if not isinstance(v, str)]
        if not_text:
            raise ValueError(
                f"`columns` values must be column names (str); got {[columns[k] for k in not_text]}"
            )
        mapping.update(columns)
    shared = column_collisions(mapping)
    if shared:
        raise ValueError(
            f"`columns` maps several schema names to one column: {shared}; each schema name needs its own "
            "column"
        )
    return mapping


def column_collisions(mapping: Mapping[str, str]) -> dict[str, list[str]]:
    """Columns that several schema names map to (``{column: [names]}``): one column cannot be two things."""
    by_column: dict[str, list[str]] = {}
    for name, column in mapping.items():
        by_column.setdefault(column, []).append(name)
    return {column: names for column, names in by_column.items() if len(names) > 1}


def find_table(directory: Path, stem: str, required: bool) -> Path | None:
    for suffix in (".csv", ".parquet"):
        if (directory / f"{stem}{suffix}").is_dir():
            raise DataError(
                directory / f"{stem}{suffix}",
                None,
                "is a folder, not a file",
                f"put the {stem} file itself at {directory / (stem + suffix)} (not a folder of that name)",
            )
    found = [
        directory / f"{stem}{suffix}"
        for suffix in (".csv", ".parquet")
        if (directory / f"{stem}{suffix}").is_file()
    ]
    if len(found) > 1:
        raise DataError(
            directory, None, f"both {found[0].name} and {found[1].name} exist", "keep exactly one of them"
        )
    if not found and required:
        present = sorted(p.name for p in directory.iterdir())[:20]
        raise DataError(
            directory / f"{stem}.csv",
            None,
            f"no {stem}.csv or {stem}.parquet in {directory} (found: {present})",
            f"put the impression log at {directory}/{stem}.csv or .parquet",
        )
    return found[0] if found else None


def _read_generic_features(
    path: Path | None, key: str, log_name: str, encoding: str = "utf-8"
) -> pd.DataFrame | None:
    if path is None:
        logger.info("no %s feature file; the %s table holds ids only", key.removesuffix("_id"), key)
        return None
    header = read_header(path, encoding)
    id_column = _feature_id_column(header, path, key, log_name)
    frame = read_table(path, encoding=encoding)
    require_rows(frame, path, "export the file with its rows, or remove it (feature files are optional)")
    return feature_table(frame, id_column, key, path)


def _feature_id_column(header: Sequence[str], path: Path, key: str, log_name: str) -> str:
    id_column = next((c for c in (log_name, key) if c in header), None)
    if id_column is None:
        raise DataError(
            path,
            log_name,
            f"no id column: neither '{log_name}' (the impression file's name) nor '{key}' is in {header}",
            f"name the id column '{log_name}' or '{key}'",
        )
    check_feature_names(header, id_column, key, path)
    return id_column


def _impression_columns(
    directory: Path, columns: Mapping[str, str] | None, encoding: str
) -> tuple[Path, dict[str, str]]:
    """The impression file and the mapping schema name -> its column, checked against the file's header."""
    check_folder(directory)
    mapping = _resolve_columns(columns)
    path = find_table(directory, "impressions", required=True)
    assert path is not None
    header = read_header(path, encoding)
    require_columns(header, mapping, path)
    for optional in ("position", "day"):
        # An optional column is used when mapped, or when the file has a column of exactly its name that
        # no other schema name already uses (columns={'time': 'day'} must not read 'day' twice).
        if optional not in mapping and optional in header and optional not in mapping.values():
            mapping[optional] = optional
        if optional in mapping and mapping[optional] not in header:
            require_columns(header, {optional: mapping[optional]}, path)
    return path, mapping


def _read_times(
    frame: pd.DataFrame, mapping: Mapping[str, str], path: Path, options: LoadOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Parse and check the time (and day) columns: (epoch ms, calendar day number) per row."""
    time_ms, cal_day = to_epoch_ms_and_day(frame[mapping["time"]], path, mapping["time"])
    check_times(time_ms, path, mapping["time"], options, frame.index.to_numpy())
    if "day" in mapping:
        cal_day = to_day_numbers(frame[mapping["day"]], path, mapping["day"])
    return time_ms, cal_day


_NO_ROWS_FIX = "export the log with its rows (the file holds only its header)"


def scan_generic(
    directory: str | Path, columns: Mapping[str, str] | None = None, options: LoadOptions | None = None
) -> LogSize:
    """The sizes of a generic-format log for the pre-flight checks (:mod:`dmtl.checks`), read cheaply.

    Reads the headers of every file and only the id, time, day and click columns of the impressions, and
    applies the same column, time and path checks as :func:`load_generic`, so a bad log fails here in
    seconds rather than after loading.
    """
    options = options or LoadOptions()
    directory = Path(directory)
    path, mapping = _impression_columns(directory, columns, options.encoding)
    used = {k: mapping[k] for k in ("user_id", "item_id", "time", "click", "day") if k in mapping}
    text = [mapping[c] for c in ("time", "day") if c in mapping]
    frame = read_table(
        path, list(used.values()), as_text=text if path.suffix == ".csv" else (), encoding=options.encoding
    )
    require_rows(frame, path, _NO_ROWS_FIX)
    _, cal_day = _read_times(frame, mapping, path, options)
    users = to_ids(frame[mapping["user_id"]], path, mapping["user_id"])
    items = to_ids(frame[mapping["item_id"]], path, mapping["item_id"])
    click = to_clicks(frame[mapping["click"]], path, mapping["click"])
    features: dict[str, tuple[str, ...]] = {}
    for stem, key in (("users", "user_id"), ("items", "item_id")):
        table = find_table(directory, stem, required=False)
        header: list[str] = []
        if table is not None:
            header = read_header(table, options.encoding)
            id_column = _feature_id_column(header, table, key, mapping[key])
            header = [c for c in header if c != id_column]
        features[key] = tuple(header)
    _, per_item = np.unique(items, return_counts=True)
    return LogSize(
        where=str(path),
        n_users=int(np.unique(users).size),
        n_items=int(per_item.size),
        n_days=int(np.unique(cal_day).size),
        n_clicks=int(click.sum()),
        max_item_impressions=int(per_item.max()),
        user_features=features["user_id"],
        item_features=features["item_id"],
    )


def raw_impressions(
    frame: pd.DataFrame,
    mapping: Mapping[str, str],
    path: Path,
    options: LoadOptions,
    counts: dict[str, int],
    whole_log: bool = True,
) -> pd.DataFrame:
    """The impression file's rows (``frame``, columns named by ``mapping``) converted and checked: the raw
    frame (:data:`RAW_COLUMNS`) :func:`finalize_feed_log` takes.

    ``whole_log=False`` converts one chunk of the file (:mod:`dmtl.sources.ingest.chunked`): the rules that need the whole
    log (the median clicked duration, the time span) are left to the caller, the others apply as they are.
    """
    click = to_clicks(frame[mapping["click"]], path, mapping["click"])
    seconds = to_numbers(frame[mapping["duration"]], path, mapping["duration"])
    duration, n_zeroed = to_durations(seconds, click, path, mapping["duration"])
    add_count(counts, "missing_nonclick_durations_zeroed", n_zeroed)
    if whole_log:
        check_duration_units(duration, click, path, mapping["duration"], options)
    chunk_options = options if whole_log else dataclasses.replace(options, max_span_days=sys.maxsize)
    time_ms, cal_day = _read_times(frame, mapping, path, chunk_options)
    if "position" in mapping:
        position, n_missing = to_positions(frame[mapping["position"]], path, mapping["position"])
        add_count(counts, "missing_positions", n_missing)
    else:
        position = np.full(len(frame), -1, dtype=np.int16)
    return pd.DataFrame(
        {
            "user_id": to_ids(frame[mapping["user_id"]], path, mapping["user_id"]),
            "item_id": to_ids(frame[mapping["item_id"]], path, mapping["item_id"]),
            "cal_day": cal_day,
            "time_ms": time_ms,
            "position": position,
            "click": click,
            "duration": duration,
        }
    )


def load_generic(
    directory: str | Path, columns: Mapping[str, str] | None = None, options: LoadOptions | None = None
) -> FeedLog:
    """Load a click + duration log in the generic format (docs/data_formats.md) into a :class:`FeedLog`.

    Args:
        directory: holds ``impressions.(csv|parquet)`` and optionally ``users.(csv|parquet)`` and
            ``items.(csv|parquet)``.
        columns: maps schema names (``user_id``, ``item_id``, ``time``, ``click``, ``duration`` and the
            optional ``position`` and ``day``) to the impression file's column names; unmapped names are
            looked up as they are. ``time`` is epoch seconds, epoch milliseconds or ISO 8601 strings;
            ``duration`` is seconds; without a ``day`` column the day is the calendar date of ``time``.
            The users/items files' id column has the impression file's name for it, or ``user_id`` /
            ``item_id``; every other column there is a categorical feature.
        options: the CSV encoding and the plausibility thresholds (``params.yaml`` data); defaults when None.

    Returns:
        The log, with ``meta["policy_counts"]`` recording every repair the policies made.

    Raises:
        DataError: a file, column or value is unusable or implausible; the message names the file, column
            and fix.
        ValueError: ``columns`` has a key that is not a schema name, or maps two names to one column.
    """
    options = options or LoadOptions()
    directory = Path(directory)
    path, mapping = _impression_columns(directory, columns, options.encoding)
    text = [mapping[c] for c in ("time", "day") if c in mapping]
    frame = read_table(
        path,
        list(mapping.values()),
        as_text=text if path.suffix == ".csv" else (),
        encoding=options.encoding,
    )
    require_rows(frame, path, _NO_ROWS_FIX)
    meta: dict = {"files": [str(path)], "rows_read": len(frame), "columns": dict(mapping)}
    counts: dict[str, int] = meta.setdefault("policy_counts", {})

    raw = raw_impressions(frame, mapping, path, options, counts)
    user_path = find_table(directory, "users", required=False)
    item_path = find_table(directory, "items", required=False)
    meta["files"] += [str(p) for p in (user_path, item_path) if p is not None]
    return finalize_feed_log(
        raw,
        _read_generic_features(user_path, "user_id", mapping["user_id"], options.encoding),
        _read_generic_features(item_path, "item_id", mapping["item_id"], options.encoding),
        source=f"generic:{directory.name}",
        log_file=path,
        user_file=user_path,
        item_file=item_path,
        meta=meta,
        options=options,
    )


def load_generic_shards(
    directory: str | Path,
    scratch: str | Path,
    shard_rows: int,
    columns: Mapping[str, str] | None = None,
    options: LoadOptions | None = None,
    check: Callable[[LogSize], None] | None = None,
) -> LogShards:
    """:func:`dmtl.sources.generic.load_generic` in chunks (module docstring): the log as shards of whole users.

    Args:
        directory: the generic-format folder.
        scratch: an empty folder for the buckets and the shards (the caller removes it).
        shard_rows: rows per chunk read and per bucket (about).
        columns: as :func:`~dmtl.sources.generic.load_generic`'s.
        options: the CSV encoding and the plausibility thresholds.
        check: called with the log's sizes after the first pass (the pre-flight checks), before the buckets
            are finalized.
    """

    options = options or LoadOptions()
    directory, scratch = Path(directory), Path(scratch)
    path, mapping = _impression_columns(directory, columns, options.encoding)
    text = [mapping[c] for c in ("time", "day") if c in mapping]
    run = ChunkedLog(scratch, bucket_count(count_rows(path), shard_rows))
    meta: dict = {"files": [str(path)], "columns": dict(mapping), "policy_counts": run.counts}
    facts = FileFacts(path)
    as_text = text if path.suffix == ".csv" else ()
    for frame in iter_table(path, list(mapping.values()), shard_rows, as_text, options.encoding):
        facts.check_unit(frame[mapping["time"]], mapping["time"])
        raw = raw_impressions(frame, mapping, path, options, run.counts, whole_log=False)
        facts.add(raw, frame.index.to_numpy())
        run.add(raw)
    if facts.rows == 0:
        raise DataError(path, None, "has a header but no data rows", _NO_ROWS_FIX)
    facts.check(mapping["duration"], mapping["time"], options)
    meta["rows_read"] = facts.rows
    user_path = find_table(directory, "users", required=False)
    item_path = find_table(directory, "items", required=False)
    meta["files"] += [str(p) for p in (user_path, item_path) if p is not None]
    users = _read_generic_features(user_path, "user_id", mapping["user_id"], options.encoding)
    items = _read_generic_features(item_path, "item_id", mapping["item_id"], options.encoding)
    if check is not None:
        check(
            run.size(
                str(path),
                [c for c in (users.columns if users is not None else []) if c != "user_id"],
                [c for c in (items.columns if items is not None else []) if c != "item_id"],
            )
        )
    return run.finish(
        users,
        items,
        source=f"generic:{directory.name}",
        log_file=path,
        user_file=user_path,
        item_file=item_path,
        meta=meta,
        options=options,
    )
