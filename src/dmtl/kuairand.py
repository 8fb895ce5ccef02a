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
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.generic import (
    MISSING,
    check_duration_units,
    check_folder,
    check_times,
    feature_table,
    finalize_feed_log,
    read_header,
    read_table,
    require_columns,
    require_rows,
    to_clicks,
    to_durations,
    to_ids,
    to_integers,
    to_numbers,
    yyyymmdd_to_days,
)
from dmtl.schema import ITEM_LENGTH, DataError, FeedLog, LoadOptions, LogSize

logger = logging.getLogger(__name__)

VARIANTS: tuple[str, ...] = ("pure", "1k", "27k")
LOG_KINDS: tuple[str, ...] = ("standard", "random")

# role -> official column; only these are read (usecols), which keeps the 27K logs (~23 GB) tractable.
LOG_COLUMNS: dict[str, str] = {
    "user_id": "user_id",
    "item_id": "video_id",
    "date": "date",
    "time_ms": "time_ms",
    "click": "is_click",
    "duration": "play_time_ms",
}
USER_FEATURES: tuple[str, ...] = (
    "user_active_degree",
    "is_lowactive_period",
    "is_live_streamer",
    "is_video_author",
    "follow_user_num_range",
    "fans_user_num_range",
    "friend_user_num_range",
    "register_days_range",
    *(f"onehot_feat{i}" for i in range(18)),
)
"""Categorical user features. The raw counts (``follow_user_num`` ...) are left out: their ``*_range``
bands carry them as categories."""
ITEM_FEATURES: tuple[str, ...] = (
    "video_type",
    "upload_type",
    "music_type",
    "tag",
    "visible_status",
    "video_length_band",
    "author_id",
)
"""Item feature columns of the result; ``video_length_band`` is derived from ``video_duration``."""

UNKNOWN_CODE = -124
"""KuaiRand's code for an unknown value (e.g. ``is_live_streamer``); read as missing."""

KUAIRAND_YEAR = 2022
"""File names carry month and day only; every KuaiRand log is from 2022."""

_OFFICIAL_FIX = "use the official, unmodified KuaiRand file under its official name"
_FILE_NAME = re.compile(
    r"^(?:log_(?P<log>standard|random)_(?P<m1>\d{1,2})_(?P<d1>\d{1,2})_to_(?P<m2>\d{1,2})_(?P<d2>\d{1,2})"
    r"|(?P<features>user_features|video_features_basic))"
    r"_(?P<variant>pure|1k|27k)(?:_part(?P<part>\d+))?\.csv$"
)


@dataclass(frozen=True)
class KuaiRandFile:
    """One official KuaiRand file, as told by its name.

    Attributes:
        path: the file.
        kind: ``"standard"``, ``"random"``, ``"user_features"`` or ``"video_features_basic"``.
        variant: ``"pure"``, ``"1k"`` or ``"27k"``.
        first_date: first date the name covers (yyyymmdd), 0 for feature files.
        last_date: last date the name covers (yyyymmdd), 0 for feature files.
        part: N of ``_partN``, 0 for an unsplit file.
    """

    path: Path
    kind: str
    variant: str
    first_date: int = 0
    last_date: int = 0
    part: int = 0


def scan_kuairand(directory: str | Path) -> list[KuaiRandFile]:
    """List the official KuaiRand files in ``directory`` (or in its ``data/`` subfolder if it has none)."""
    directory = Path(directory)
    check_folder(directory, "the KuaiRand CSV files")
    found = []
    for path in sorted(directory.iterdir()):
        match = _FILE_NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        g = match.groupdict()
        dates = (0, 0)
        if g["log"]:
            dates = tuple(
                KUAIRAND_YEAR * 10000 + int(g[m]) * 100 + int(g[d]) for m, d in (("m1", "d1"), ("m2", "d2"))
            )
        found.append(
            KuaiRandFile(
                path, g["log"] or g["features"], g["variant"], dates[0], dates[1], int(g["part"] or 0)
            )
        )
    if not found and (directory / "data").is_dir():
        return scan_kuairand(directory / "data")
    return found


def _ordered_parts(files: list[KuaiRandFile]) -> list[KuaiRandFile]:
    """Order files by date range then part number; raise if a split file has a part missing."""
    groups: dict[tuple[int, int], list[KuaiRandFile]] = {}
    for f in files:
        groups.setdefault((f.first_date, f.last_date), []).append(f)
    ordered = []
    for _, group in sorted(groups.items()):
        group.sort(key=lambda f: f.part)
        parts = [f.part for f in group]
        if parts != [0] and parts != list(range(1, len(parts) + 1)):
            names = [f.path.name for f in group]
            raise DataError(
                group[0].path.parent,
                None,
                f"incomplete or ambiguous split file: found {names} (parts {parts}); a split file needs "
                "_part1 .. _partN with none missing and no unsplit copy beside them",
                "download the missing part or remove the stray file",
            )
        ordered += group
    return ordered


def _choose_variant(files: list[KuaiRandFile], variant: str | None, directory: Path) -> str:
    present = sorted({f.variant for f in files}, key=VARIANTS.index)
    if variant is not None:
        variant = variant.lower()
        if variant not in VARIANTS:
            raise ValueError(
                f"unknown KuaiRand variant {variant!r}; valid: {list(VARIANTS)} or None (detect)"
            )
        if variant not in present:
            raise DataError(
                directory,
                None,
                f"no KuaiRand-{variant} files; variants present: {present}",
                "pass one of those",
            )
        return variant
    if not present:
        names = sorted(p.name for p in directory.iterdir())[:20]
        raise DataError(
            directory,
            None,
            f"no official KuaiRand file names found (e.g. log_standard_4_22_to_5_08_pure.csv); files: {names}",
            "point to the folder of the unpacked KuaiRand archive, with its file names unchanged",
        )
    if len(present) > 1:
        by_variant = {v: [f.path.name for f in files if f.variant == v] for v in present}
        raise DataError(
            directory,
            None,
            f"files of several KuaiRand variants: {by_variant}",
            f"pass variant= one of {present}",
        )
    return present[0]


def _kind_hint(header: Sequence[str]) -> str:
    """Say what a file with this header looks like, to make a swapped file obvious in the message."""
    if "user_active_degree" in header:
        return " (this looks like a KuaiRand user features file)"
    if "video_type" in header or "upload_type" in header:
        return " (this looks like a KuaiRand video features file)"
    if "show_cnt" in header:
        return " (this looks like a KuaiRand video statistics file)"
    if "is_click" in header and "time_ms" in header:
        return " (this looks like a KuaiRand log)"
    return ""


def _read_log(
    path: Path, date_range: tuple[int, int] | None, counts: dict[str, int], options: LoadOptions
) -> tuple[pd.DataFrame, int]:
    """Read and validate one log file; return its raw frame (see dmtl.generic.RAW_COLUMNS) and rows read."""
    check_log_header(path, options)
    frame = read_table(path, list(LOG_COLUMNS.values()), encoding=options.encoding)
    require_rows(frame, path, _OFFICIAL_FIX)
    return log_raw(frame, path, date_range, counts, options), len(frame)


def check_log_header(path: Path, options: LoadOptions) -> None:
    """Raise :class:`DataError` unless ``path`` has the official log columns (naming what it looks like)."""
    header = read_header(path, options.encoding)
    require_columns(header, LOG_COLUMNS, path, hint=_kind_hint(header), fix=_OFFICIAL_FIX)


def log_raw(
    frame: pd.DataFrame,
    path: Path,
    date_range: tuple[int, int] | None,
    counts: dict[str, int],
    options: LoadOptions,
    whole_log: bool = True,
) -> pd.DataFrame:
    """A log file's rows (``frame``) converted and checked into the raw frame (dmtl.generic.RAW_COLUMNS).

    ``whole_log=False`` converts one chunk of the file (:mod:`dmtl.chunked`): the median clicked duration and
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
            header, {c: c for c in (key, *columns)}, f.path, hint=_kind_hint(header), fix=_OFFICIAL_FIX
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
    kinds, date_range, variant, files, data_dir = _select(directory, logs, date_range, variant)

    counts: dict[str, int] = {}
    frames, read, rows_read = [], [], 0
    for kind in kinds:
        for f in _log_files(files, kind, variant, data_dir, date_range):
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
    meta = {
        "variant": variant,
        "logs": list(kinds),
        "date_range": list(date_range) if date_range is not None else None,
        "files": read + [str(f.path) for f in user_files + video_files],
        "rows_read": rows_read,
        "policy_counts": counts,
        "video_length_band_edges_s": edges,
    }
    return finalize_feed_log(
        raw,
        users,
        items,
        source=f"kuairand-{variant}",
        log_file=Path(read[0]) if len(read) == 1 else data_dir,
        user_file=user_files[0].path,
        item_file=video_files[0].path,
        meta=meta,
        options=options,
    )


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
        feature_files[kind] = _ordered_parts(group)
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


def _select(
    directory: str | Path,
    logs: Sequence[str] | str,
    date_range: tuple[int, int] | None,
    variant: str | None,
) -> tuple[tuple[str, ...], tuple[int, int] | None, str, list[KuaiRandFile], Path]:
    """Check the arguments and find the variant's files: (logs, date_range, variant, files, their folder)."""
    directory = Path(directory)
    kinds = (logs,) if isinstance(logs, str) else tuple(dict.fromkeys(logs))
    unknown = [k for k in kinds if k not in LOG_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown KuaiRand log(s) {unknown or list(kinds)}; valid: {list(LOG_KINDS)}")
    if date_range is not None:
        date_range = _check_date_range(date_range)
    files = scan_kuairand(directory)
    variant = _choose_variant(files, variant, directory)
    files = [f for f in files if f.variant == variant]
    return kinds, date_range, variant, files, files[0].path.parent


def _log_files(
    files: list[KuaiRandFile], kind: str, variant: str, data_dir: Path, date_range: tuple[int, int] | None
) -> list[KuaiRandFile]:
    """The log files of ``kind`` to read, in part order, skipping those whose name misses ``date_range``."""
    log_files = [f for f in files if f.kind == kind]
    if not log_files:
        raise DataError(
            data_dir,
            None,
            f"no log_{kind}_*_{variant}.csv file; KuaiRand files here: {[f.path.name for f in files]}",
            f"add the official log_{kind} file(s) or leave '{kind}' out of logs",
        )
    return [
        f
        for f in _ordered_parts(log_files)
        if date_range is None or not (f.last_date < date_range[0] or f.first_date > date_range[1])
    ]


def scan_kuairand_size(
    directory: str | Path,
    logs: Sequence[str] = ("standard",),
    date_range: tuple[int, int] | None = None,
    variant: str | None = None,
    options: LoadOptions | None = None,
) -> LogSize:
    """The sizes of a KuaiRand log for the pre-flight checks (:mod:`dmtl.checks`), read cheaply.

    Finds the files as :func:`load_kuairand` does (so a missing or wrong file fails here) and reads only
    the ``user_id``, ``video_id``, ``date`` and ``is_click`` columns of the logs. The feature columns are
    the official ones, fixed by this loader.
    """
    options = options or LoadOptions()
    kinds, date_range, variant, files, data_dir = _select(directory, logs, date_range, variant)
    users, items, days, clicks = [], [], [], 0
    for kind in kinds:
        for f in _log_files(files, kind, variant, data_dir, date_range):
            header = read_header(f.path, options.encoding)
            needed = {k: LOG_COLUMNS[k] for k in ("user_id", "item_id", "date", "click")}
            require_columns(header, needed, f.path, hint=_kind_hint(header), fix=_OFFICIAL_FIX)
            frame = read_table(f.path, list(needed.values()), encoding=options.encoding)
            require_rows(frame, f.path, _OFFICIAL_FIX)
            date = to_integers(frame["date"], f.path, "date", fix="KuaiRand's 'date' is yyyymmdd")
            keep = (
                np.ones(len(frame), bool)
                if date_range is None
                else ((date >= date_range[0]) & (date <= date_range[1]))
            )
            users.append(to_ids(frame["user_id"], f.path, "user_id")[keep])
            items.append(to_ids(frame["video_id"], f.path, "video_id")[keep])
            days.append(np.unique(date[keep]))
            clicks += int(to_clicks(frame["is_click"], f.path, "is_click")[keep].sum())
    item_ids = np.concatenate(items) if items else np.empty(0, np.int64)
    _, per_item = np.unique(item_ids, return_counts=True)
    return LogSize(
        where=str(data_dir),
        n_users=int(np.unique(np.concatenate(users)).size) if users else 0,
        n_items=int(per_item.size),
        n_days=int(np.unique(np.concatenate(days)).size) if days else 0,
        n_clicks=clicks,
        max_item_impressions=int(per_item.max()) if per_item.size else 0,
        user_features=USER_FEATURES,
        item_features=ITEM_FEATURES,
    )


def _check_date_range(date_range: tuple[int, int]) -> tuple[int, int]:
    try:
        first, last = (int(d) for d in date_range)
        parsed = pd.to_datetime([str(first), str(last)], format="%Y%m%d")
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"date_range must be two yyyymmdd ints, e.g. (20220425, 20220430); got {date_range!r}"
        ) from err
    if parsed[0] > parsed[1]:
        raise ValueError(f"date_range starts after it ends: {date_range!r}")
    return first, last
