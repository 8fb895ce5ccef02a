"""Loader for the official KuaiRand files (Pure, 1K, 27K) into the study's generic schema (docs/protocol.md section 6).

KuaiRand (Gao et al., CIKM 2022; Zenodo record 10439422; CC BY-SA 4.0) logs Kuaishou short-video
impressions with ``is_click`` and ``play_time_ms``: the closest public stand-in for the paper's Kandian logs.
Official file names, all read from one directory (or its ``data/`` subfolder, as the archives unpack)::

    log_standard_4_08_to_4_21_27k_part1.csv   log_random_4_22_to_5_08_1k.csv
    user_features_27k.csv                     video_features_basic_pure.csv

Mapping (docs/data_formats.md has the full table and every policy): ``user_id`` -> user_id, ``video_id`` ->
item_id, ``date`` -> day (0 = first date loaded), ``time_ms`` -> time (seconds since the first impression),
``is_click`` -> click, ``play_time_ms / 1000`` -> duration, position -1 (KuaiRand records none).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmtl.schema import ITEM_LENGTH, DataError, FeedLog, LoadOptions
from dmtl.sources.ingest.convert import (
    check_duration_units,
    check_times,
    to_clicks,
    to_durations,
    to_ids,
    to_integers,
    to_numbers,
    yyyymmdd_to_days,
)
from dmtl.sources.ingest.policies import finalize_feed_log
from dmtl.sources.ingest.reading import read_header, read_table, require_columns, require_rows
from dmtl.sources.ingest.side_features import MISSING, feature_table
from dmtl.sources.kuairand.files import (
    ITEM_FEATURES,
    LOG_COLUMNS,
    OFFICIAL_FIX,
    UNKNOWN_CODE,
    USER_FEATURES,
    KuaiRandFile,
    kind_hint,
    log_files_of,
    ordered_parts,
    select_logs,
)

logger = logging.getLogger(__name__)


def _read_log(
    path: Path, date_range: tuple[int, int] | None, counts: dict[str, int], options: LoadOptions
) -> tuple[pd.DataFrame, int]:
    """Read and validate one log file; return its raw frame (see dmtl.sources.ingest.policies.RAW_COLUMNS) and rows read."""
    check_log_header(path, options)
    frame = read_table(path, list(LOG_COLUMNS.values()), encoding=options.encoding)
    require_rows(frame, path, OFFICIAL_FIX)
    return log_raw(frame, path, date_range, counts, options), len(frame)


def check_log_header(path: Path, options: LoadOptions) -> None:
    """Raise :class:`DataError` unless ``path`` has the official log columns (naming what it looks like)."""
    header = read_header(path, options.encoding)
    require_columns(header, LOG_COLUMNS, path, hint=kind_hint(header), fix=OFFICIAL_FIX)


def log_raw(
    frame: pd.DataFrame,
    path: Path,
    date_range: tuple[int, int] | None,
    counts: dict[str, int],
    options: LoadOptions,
    whole_log: bool = True,
) -> pd.DataFrame:
    """A log file's rows (``frame``) converted and checked into the raw frame (dmtl.sources.ingest.policies.RAW_COLUMNS).

    ``whole_log=False`` converts one chunk of the file (:mod:`dmtl.sources.ingest.chunked`): the median clicked duration and
    the time span, rules on the whole file, are left to the caller.
    """
    date = to_integers(
        frame["date"], path, "date", fix="KuaiRand's 'date' is yyyymmdd; use the official file"
    )
    if date_range is not None:
        keep = (date >= date_range[0]) & (date <= date_range[1])
        counts["rows_outside_date_range"] = counts.get("rows_outside_date_range", 0) + int((~keep).sum())
        frame, date = frame.loc[keep], date[keep]
    click = to_clicks(frame["is_click"], path, "is_click")
    play_s = to_numbers(frame["play_time_ms"], path, "play_time_ms") / 1000.0
    duration, n_missing = to_durations(play_s, click, path, "play_time_ms")
    counts["missing_nonclick_durations_zeroed"] = (
        counts.get("missing_nonclick_durations_zeroed", 0) + n_missing
    )
    if whole_log:
        check_duration_units(duration, click, path, "play_time_ms", options)
    time_ms = to_integers(frame["time_ms"], path, "time_ms")
    chunk_options = options if whole_log else dataclasses.replace(options, max_span_days=sys.maxsize)
    check_times(time_ms, path, "time_ms", chunk_options, frame.index.to_numpy())
    return pd.DataFrame(
        {
            "user_id": to_ids(frame["user_id"], path, "user_id"),
            "item_id": to_ids(frame["video_id"], path, "video_id"),
            # The official `date` is the calendar day KuaiRand assigns (its hour is rounded, so a few
            # impressions at 23:xx carry the next date); we keep it so splits match the dataset's own days.
            "cal_day": yyyymmdd_to_days(date, path, "date"),
            "time_ms": time_ms,
            "position": np.full(len(frame), -1, dtype=np.int16),
            "click": click,
            "duration": duration,
        }
    )


def _unknown_to_missing(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    out = frame.copy()
    for column in columns:
        values = out[column]
        code = UNKNOWN_CODE if pd.api.types.is_numeric_dtype(values) else str(UNKNOWN_CODE)
        out[column] = values.mask(values == code)
    return out


def _feature_frame(
    files: list[KuaiRandFile], key: str, columns: Sequence[str], ids: np.ndarray, encoding: str = "utf-8"
) -> pd.DataFrame:
    """Read the (possibly split) feature file, keeping only rows whose id is in ``ids``."""
    frames = []
    for f in files:
        header = read_header(f.path, encoding)
        require_columns(
            header, {c: c for c in (key, *columns)}, f.path, hint=kind_hint(header), fix=OFFICIAL_FIX
        )
        frame = read_table(f.path, [key, *columns], encoding=encoding)
        frame = frame.loc[np.isin(to_ids(frame[key], f.path, key), ids)]
        frames.append(_unknown_to_missing(frame, columns))
    return pd.concat(frames, ignore_index=True)


def video_length_bands(video_duration_ms: np.ndarray, n_bands: int) -> tuple[np.ndarray, list[float]]:
    """Bin video lengths into ``n_bands`` quantile bands, labelled ``b<k>:<lo>-<hi>s``; missing -> "missing".

    Quantiles are over the videos given (one row per video), so each band holds about as many videos.
    Ties can merge bands. Non-finite and negative lengths are missing.

    Returns:
        The band label per video (object array) and the band edges in seconds.
    """
    seconds = np.asarray(video_duration_ms, dtype="float64") / 1000.0
    ok = np.isfinite(seconds) & (seconds >= 0)
    labels = np.full(seconds.shape, MISSING, dtype=object)
    if not ok.any():
        return labels, []
    edges = np.unique(np.quantile(seconds[ok], np.linspace(0.0, 1.0, n_bands + 1)))
    names = np.array(
        [f"b{k}:{lo:.0f}-{hi:.0f}s" for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))]
        or [f"b0:{edges[0]:.0f}s"],
        dtype=object,
    )
    code = np.clip(np.searchsorted(edges, seconds[ok], side="right") - 1, 0, names.size - 1)
    labels[ok] = names[code]
    return labels, edges.tolist()


def load_kuairand(
    directory: str | Path,
    logs: Sequence[str] = ("standard",),
    date_range: tuple[int, int] | None = None,
    variant: str | None = None,
    *,
    length_bands: int = 5,
    options: LoadOptions | None = None,
) -> FeedLog:
    """Load official KuaiRand files into a :class:`~dmtl.schema.FeedLog`.

    Args:
        directory: folder with the official CSV files (or the unpacked archive, whose ``data/`` holds them).
        logs: which logs to read, of ``"standard"`` and ``"random"``. Several are merged into one
            impression table without a marker, so load them separately to keep them apart.
        date_range: inclusive (first, last) dates as yyyymmdd ints on KuaiRand's ``date`` column; None
            reads every date. Files whose name's date range misses it are not opened.
        variant: ``"pure"``, ``"1k"`` or ``"27k"``; None detects it from the file names (an error if
            several are present).
        length_bands: number of quantile bands of ``video_duration`` in ``video_length_band``.
        options: the CSV encoding and the plausibility thresholds (``params.yaml`` data); defaults when None.

    Returns:
        The log; ``meta`` holds the files read, the row counts, every policy count and the band edges.

    Raises:
        DataError: missing, incomplete or wrong files, or bad values; the message names file, column, fix.
        ValueError: an unknown ``logs`` entry, ``variant`` or a malformed ``date_range``.
    """
    options = options or LoadOptions()
    if length_bands < 1:
        raise ValueError(f"length_bands must be >= 1, got {length_bands}")
    kinds, date_range, variant, files, data_dir = select_logs(directory, logs, date_range, variant)

    counts: dict[str, int] = {}
    frames, read, rows_read = [], [], 0
    for kind in kinds:
        for f in log_files_of(files, kind, variant, data_dir, date_range):
            raw, n = _read_log(f.path, date_range, counts, options)
            frames.append(raw)
            read.append(str(f.path))
            rows_read += n
    if not frames or sum(len(f) for f in frames) == 0:
        raise DataError(
            data_dir,
            "date",
            f"no impressions of logs {list(kinds)} within date_range {date_range}",
            "choose dates that the log files cover (their names give the ranges)",
        )
    raw = pd.concat(frames, ignore_index=True)
    users, items, edges, user_files, video_files = kuairand_tables(
        files,
        variant,
        data_dir,
        np.unique(raw["user_id"].to_numpy()),
        np.unique(raw["item_id"].to_numpy()),
        length_bands,
        options.encoding,
    )
    return finalize_feed_log(
        raw,
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
            counts,
            edges,
            data_dir,
            options,
        ),
    )


def finish_arguments(
    variant: str,
    kinds: Sequence[str],
    date_range: tuple[int, int] | None,
    read: list[str],
    user_files: list[KuaiRandFile],
    video_files: list[KuaiRandFile],
    rows_read: int,
    counts: dict[str, int],
    edges: list[float],
    data_dir: Path,
    options: LoadOptions,
) -> dict[str, Any]:
    """The keyword arguments that end a KuaiRand load, in memory (``finalize_feed_log``) or in shards
    (``ChunkedLog.finish``): the source's name, the files errors point to, and the metadata."""
    meta = {
        "variant": variant,
        "logs": list(kinds),
        "date_range": list(date_range) if date_range is not None else None,
        "files": read + [str(f.path) for f in user_files + video_files],
        "rows_read": rows_read,
        "policy_counts": counts,
        "video_length_band_edges_s": edges,
    }
    return {
        "source": f"kuairand-{variant}",
        "log_file": Path(read[0]) if len(read) == 1 else data_dir,
        "user_file": user_files[0].path,
        "item_file": video_files[0].path,
        "meta": meta,
        "options": options,
    }


def kuairand_tables(
    files: list[KuaiRandFile],
    variant: str,
    data_dir: Path,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    length_bands: int,
    encoding: str,
) -> tuple[pd.DataFrame, pd.DataFrame, list[float], list[KuaiRandFile], list[KuaiRandFile]]:
    """The user and item tables of the log's ``user_ids`` and ``item_ids`` (sorted, unique): ``(users, items,
    video length band edges, user feature files, video feature files)``."""
    feature_files = {}
    for kind in ("user_features", "video_features_basic"):
        group = [f for f in files if f.kind == kind]
        if not group:
            raise DataError(
                data_dir / f"{kind}_{variant}.csv",
                None,
                "feature file not found",
                f"put the official {kind}_{variant}.csv beside the logs",
            )
        feature_files[kind] = ordered_parts(group)
    user_files, video_files = feature_files["user_features"], feature_files["video_features_basic"]

    users = _feature_frame(user_files, "user_id", USER_FEATURES, user_ids, encoding)
    users = feature_table(users, "user_id", "user_id", user_files[0].path)
    video_columns = [c for c in ITEM_FEATURES if c != "video_length_band"] + ["video_duration"]
    videos = _feature_frame(video_files, "video_id", video_columns, item_ids, encoding)
    video_ms = to_numbers(videos["video_duration"], video_files[0].path, "video_duration")
    # Quantiles over the videos the loaded log shows, one row per video (duplicates would bias them).
    first = ~videos["video_id"].duplicated().to_numpy()
    bands, edges = video_length_bands(video_ms[first], length_bands)
    videos["video_length_band"] = (
        pd.Series(bands, index=videos.index[first]).reindex(videos.index).fillna(MISSING)
    )
    # The video's own length, in seconds, for the length-aware long-read labels (not a feature).
    videos[ITEM_LENGTH] = np.where(video_ms > 0, video_ms / 1000.0, np.nan)
    videos = videos.drop(columns="video_duration")[["video_id", *ITEM_FEATURES, ITEM_LENGTH]]
    items = feature_table(videos, "video_id", "item_id", video_files[0].path)
    return users, items, edges, user_files, video_files
