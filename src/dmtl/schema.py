"""The study's generic impression-log schema, shared by the simulator and every real-data loader.

Every source (simulated, KuaiRand, a user's own logs) is turned into a :class:`FeedLog`: three tables with
the columns below. Everything downstream (preprocessing, models, evaluation) reads only this schema, so a
new source needs only a loader.

impressions (one row per shown item):
    user_id  int64    user identifier (any non-negative integer)
    item_id  int64    item identifier
    day      int32    day index, 0 = first day of the log; the train/validation/test split is by day
    time     int64    seconds since the log's start (orders impressions within a day)
    position int16    feed position, 0 = top; -1 when the source does not record it
    click    int8     1 if clicked, else 0
    duration float32  reading/playing time in seconds; 0 when not clicked

Optional impression context columns ``ctx_<name>`` (int64 >= 0, e.g. a count such as the user's earlier clicks
on the item's publisher; -1 = unknown) are passed through: they describe the impression, not the user or the
item, so only models that take impression context (the teacher) can use them. ``ctx_position`` is reserved
(the encoded ``position``). A context column must be known when the impression is served (computed from
earlier events only).

users: ``user_id`` plus categorical feature columns (any dtype; treated as categories).
items: ``item_id`` plus categorical feature columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

IMPRESSION_COLUMNS: dict[str, str] = {
    "user_id": "int64",
    "item_id": "int64",
    "day": "int32",
    "time": "int64",
    "position": "int16",
    "click": "int8",
    "duration": "float32",
}

CONTEXT_PREFIX = "ctx_"
"""Impression columns named ``ctx_<name>`` are optional context features (module docstring)."""
RESERVED_CONTEXT = ("ctx_position",)

SCHEMA_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "time", "click", "duration", "position", "day")
"""Schema names a log's columns can be mapped to (``data.columns``, ``load_generic(columns=...)``)."""

REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "time", "click", "duration")
"""The schema names every real log must have (the others, ``position`` and ``day``, are optional)."""


ITEM_LENGTH = "length_s"
"""Optional column of the items table: the item's length in seconds (reading time of a full read, a video's
duration). It is not a feature: the length-aware long-read rules use it (:mod:`dmtl.labels`)."""

RESERVED_FEATURE_NAMES: tuple[str, ...] = (
    "raw_user_id",
    "raw_item_id",
    "user_idx",
    "item_idx",
    "ctx_position",
    "split",
    "long_read",
)
"""Column names the prepared tables and impressions use internally (:func:`dmtl.features.prepare`).

A user or item feature with one of these names would be overwritten by, or confused with, the internal
column (a feature named ``raw_item_id`` would feed raw item ids to an embedding sized for codes), so every
loader refuses it."""


@dataclass(frozen=True)
class LoadOptions:
    """How the real-data loaders read files and which values they accept as plausible (``params.yaml`` data).

    Every threshold is documented with its rule in docs/data_formats.md section 4 and can be overridden by
    the ``data.*`` parameter of the same name.

    Attributes:
        encoding: text encoding of CSV files (``data.encoding``), any name Python's codecs know.
        max_median_duration_s: a median clicked duration above this many seconds is refused as a likely
            unit mistake (milliseconds given as seconds).
        max_duration_s: clicked durations above this are capped to it and counted (an open session or a
            clock fault, not a read).
        first_year: timestamps before 1 January of this year are refused (e.g. seconds read as ms: 1970).
        last_year: timestamps after 31 December of this year are refused (a typo, milliseconds read as
            seconds).
        max_span_days: a log whose timestamps span more days than this is refused, naming its extreme rows.
    """

    encoding: str = "utf-8"
    max_median_duration_s: float = 3600.0
    max_duration_s: float = 14400.0
    first_year: int = 2000
    last_year: int = 2100
    max_span_days: int = 366

    @classmethod
    def from_params(cls, data: Any) -> LoadOptions:
        """The options from the ``data`` group: a :class:`dmtl.config.DataConfig` or its YAML mapping."""
        if isinstance(data, Mapping):
            return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        return cls(**{f.name: getattr(data, f.name) for f in fields(cls) if hasattr(data, f.name)})


@dataclass(frozen=True)
class LogSize:
    """What the pre-flight checks (:mod:`dmtl.checks`) need to know about a log, measured without loading it.

    Attributes:
        where: what was measured (a file, a folder, or the simulator's preset), for messages.
        n_users: distinct users in the log.
        n_items: distinct items in the log: the retrieval catalogue.
        n_days: distinct calendar days (the split is by day).
        n_clicks: clicked impressions, or None when not measured.
        max_item_impressions: impressions of the most shown item, or None when not measured.
        user_features: user feature columns (beside the id).
        item_features: item feature columns (beside the id).
    """

    where: str
    n_users: int
    n_items: int
    n_days: int
    n_clicks: int | None = None
    max_item_impressions: int | None = None
    user_features: tuple[str, ...] = ()
    item_features: tuple[str, ...] = ()


class DataError(ValueError):
    """Bad input: the message names the file, the column and the fix."""

    def __init__(self, file: str | Path | None, column: str | None, problem: str, fix: str):
        self.file = str(file) if file is not None else None
        self.column = column
        self.problem = problem
        self.fix = fix
        where = f"{self.file}" if self.file else "input"
        if column:
            where += f", column '{column}'"
        super().__init__(f"{where}: {problem}. Fix: {fix}")


@dataclass
class FeedLog:
    """A click + duration impression log in the study's generic schema."""

    impressions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    source: str = "unknown"
    meta: dict = field(default_factory=dict)

    @property
    def user_feature_columns(self) -> list[str]:
        return [c for c in self.users.columns if c != "user_id"]

    @property
    def item_feature_columns(self) -> list[str]:
        return [c for c in self.items.columns if c != "item_id"]

    def write(self, directory: str | Path) -> None:
        """Write the three tables as parquet files (each atomically) into ``directory``."""
        from dmtl.io import write_parquet

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_parquet(self.impressions, directory / "impressions.parquet")
        write_parquet(self.users, directory / "users.parquet")
        write_parquet(self.items, directory / "items.parquet")

    @classmethod
    def read(cls, directory: str | Path, source: str = "parquet") -> FeedLog:
        directory = Path(directory)
        return cls(
            impressions=pd.read_parquet(directory / "impressions.parquet"),
            users=pd.read_parquet(directory / "users.parquet"),
            items=pd.read_parquet(directory / "items.parquet"),
            source=source,
        )


def coerce_impressions(df: pd.DataFrame, file: str | Path | None = None) -> pd.DataFrame:
    """Return ``df`` with exactly the schema's impression columns and dtypes, or raise :class:`DataError`."""
    missing = [c for c in IMPRESSION_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            file,
            missing[0],
            f"missing impression column(s) {missing}; found {list(df.columns)}",
            f"provide columns {list(IMPRESSION_COLUMNS)} (see dmtl.schema)",
        )
    out = {}
    for col, dtype in IMPRESSION_COLUMNS.items():
        values = df[col]
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            raise DataError(
                file, col, f"expected numbers, found dtype {values.dtype}", f"store '{col}' as {dtype}"
            )
        if values.isna().any():
            raise DataError(
                file,
                col,
                f"{int(values.isna().sum())} missing values",
                f"fill or drop rows with missing '{col}'",
            )
        array = values.to_numpy()
        if np.dtype(dtype).kind == "i" and array.dtype.kind != "b":
            # astype would truncate 1.5 to 1 and wrap 40000 into int16 silently: refuse instead.
            info = np.iinfo(dtype)
            as_float = array.astype(np.float64)
            bad = (as_float != np.round(as_float)) | (as_float < info.min) | (as_float > info.max)
            if bad.any():
                raise DataError(
                    file,
                    col,
                    f"{int(bad.sum())} values are not integers in [{info.min}, {info.max}], "
                    f"e.g. {array[bad][:3].tolist()}",
                    f"store '{col}' as whole numbers that fit {dtype}",
                )
        out[col] = array.astype(dtype, copy=False)
    out.update(_coerce_context(df, file))
    return pd.DataFrame(out)


def context_columns(columns: Iterable[str]) -> list[str]:
    """The optional impression context columns (``ctx_<name>``) among ``columns``, in their order."""
    return [c for c in columns if isinstance(c, str) and c.startswith(CONTEXT_PREFIX)]


def _coerce_context(df: pd.DataFrame, file: str | Path | None) -> dict[str, np.ndarray]:
    """The ``ctx_<name>`` columns of ``df`` as int64, or :class:`DataError` naming the column and the fix."""
    out = {}
    for col in context_columns(df.columns):
        if col in RESERVED_CONTEXT:
            raise DataError(
                file, col, "this context name is reserved", f"rename '{col}' (e.g. ctx_my_{col[4:]})"
            )
        values = df[col]
        array = values.to_numpy()
        ok = pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
        as_float = array.astype(np.float64) if ok else None
        if not ok or not np.isfinite(as_float).all() or (as_float != np.round(as_float)).any():
            raise DataError(
                file,
                col,
                f"context values must be whole numbers without missing values, found dtype {values.dtype}",
                f"store '{col}' as integers >= 0 (a count or a code; -1 = unknown)",
            )
        out[col] = array.astype(np.int64)
    return out


def check_feed_log(log: FeedLog, file: str | Path | None = None) -> None:
    """Check the invariants every source must satisfy; raise :class:`DataError` naming the fix."""
    imp = log.impressions
    file = file or log.source
    clicks = imp["click"].to_numpy()
    dur = imp["duration"].to_numpy()
    if not np.isin(clicks, (0, 1)).all():
        raise DataError(file, "click", "values other than 0/1", "encode clicks as 0/1")
    if (dur < 0).any() or not np.isfinite(dur).all():
        raise DataError(
            file, "duration", "negative or non-finite durations", "durations must be seconds >= 0"
        )
    if ((clicks == 0) & (dur > 0)).any():
        raise DataError(
            file, "duration", "durations on non-clicked impressions", "set duration to 0 where click is 0"
        )
    for key, table in (("user_id", log.users), ("item_id", log.items)):
        if key not in table.columns:
            raise DataError(
                file, key, f"feature table lacks '{key}'", f"add a '{key}' column to the feature table"
            )
        if table[key].duplicated().any():
            raise DataError(file, key, "duplicate ids in the feature table", f"keep one row per {key}")
        absent = ~np.isin(imp[key].to_numpy(), table[key].to_numpy())
        if absent.any():
            raise DataError(
                file,
                key,
                f"{int(absent.sum())} impressions whose {key} is not in the feature table",
                f"add feature rows for every {key} in the log (or drop those impressions)",
            )
