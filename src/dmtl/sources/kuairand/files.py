"""The official KuaiRand files (Pure, 1K, 27K): their names, finding them in a folder, choosing a variant's
log files and date range, and the pre-flight sizes (:func:`scan_kuairand_size`).

Official file names, all read from one directory (or its ``data/`` subfolder, as the archives unpack)::

    log_standard_4_08_to_4_21_27k_part1.csv   log_random_4_22_to_5_08_1k.csv
    user_features_27k.csv                     video_features_basic_pure.csv

A missing, renamed or wrong file raises :class:`~dmtl.schema.DataError` naming it and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.schema import DataError, LoadOptions, LogSize
from dmtl.sources.ingest.convert import to_clicks, to_ids, to_integers
from dmtl.sources.ingest.reading import check_folder, read_header, read_table, require_columns, require_rows

VARIANTS: tuple[str, ...] = ("pure", "1k", "27k")

LOG_KINDS: tuple[str, ...] = ("standard", "random")

KUAIRAND_YEAR = 2022
"""File names carry month and day only; every KuaiRand log is from 2022."""

OFFICIAL_FIX = "use the official, unmodified KuaiRand file under its official name"

_FILE_NAME = re.compile(
    r"^(?:log_(?P<log>standard|random)_(?P<m1>\d{1,2})_(?P<d1>\d{1,2})_to_(?P<m2>\d{1,2})_(?P<d2>\d{1,2})"
    r"|(?P<features>user_features|video_features_basic))"
    r"_(?P<variant>pure|1k|27k)(?:_part(?P<part>\d+))?\.csv$"
)


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


def ordered_parts(files: list[KuaiRandFile]) -> list[KuaiRandFile]:
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


def kind_hint(header: Sequence[str]) -> str:
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


def select_logs(
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


def log_files_of(
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
        for f in ordered_parts(log_files)
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
    kinds, date_range, variant, files, data_dir = select_logs(directory, logs, date_range, variant)
    users, items, days, clicks = [], [], [], 0
    for kind in kinds:
        for f in log_files_of(files, kind, variant, data_dir, date_range):
            header = read_header(f.path, options.encoding)
            needed = {k: LOG_COLUMNS[k] for k in ("user_id", "item_id", "date", "click")}
            require_columns(header, needed, f.path, hint=kind_hint(header), fix=OFFICIAL_FIX)
            frame = read_table(f.path, list(needed.values()), encoding=options.encoding)
            require_rows(frame, f.path, OFFICIAL_FIX)
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
