"""The generic click + duration log format, and the validation and policies every real-data loader shares.

A directory holds ``impressions.csv`` or ``impressions.parquet`` (required) and, optionally,
``users.(csv|parquet)`` and ``items.(csv|parquet)``. :func:`load_generic` reads it into the study's
:class:`~dmtl.schema.FeedLog`. The format, every policy and every error are documented in
``docs/data_formats.md``.

The helpers below (column checks, typed conversions, the duplicate/order/duration policies and the feature
join) are also what :mod:`dmtl.kuairand` uses, so that every source obeys one set of rules: bad input raises
:class:`~dmtl.schema.DataError` naming the file, the column and the fix; anything the loader repairs is
counted in ``FeedLog.meta["policy_counts"]`` and logged with :mod:`logging`, never changed silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.schema import (
    ITEM_LENGTH,
    REQUIRED_COLUMNS,
    RESERVED_FEATURE_NAMES,
    SCHEMA_COLUMNS,
    DataError,
    FeedLog,
    LoadOptions,
    LogSize,
    check_feed_log,
    coerce_impressions,
)

logger = logging.getLogger(__name__)

MISSING = "missing"
"""The category every missing feature value becomes (features are categorical downstream)."""


MS_THRESHOLD = 10**11
"""Numeric times at or above this are epoch milliseconds, below it epoch seconds (1e11 s is year 5138)."""

_MAX_POSITION = int(np.iinfo(np.int16).max)

# Internal impression frame every loader builds before :func:`finalize_feed_log`: ``cal_day`` is a calendar
# day number (any origin), ``time_ms`` a timestamp in milliseconds (any origin).
RAW_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "cal_day", "time_ms", "position", "click", "duration")


# ----------------------------------------------------------------------------------------------- reading
def check_folder(directory: Path, what: str = "the log files", param: str = "data.path") -> None:
    """Raise :class:`DataError` unless ``directory`` is an existing folder (a file or nothing is named as such)."""
    if directory.is_dir():
        return
    if directory.exists():
        raise DataError(
            directory,
            None,
            "is a file, not a folder",
            f"set {param} to the folder that holds {what} ({directory.parent}), not to a file in it",
        )
    raise DataError(directory, None, "folder not found", f"set {param} to the folder that holds {what}")


def row_label(file: Path | str | None, index: int) -> str:
    """How a user finds data row ``index`` (0-based, as read) in ``file``: its CSV line, or its parquet row."""
    if file is not None and str(file).endswith(".csv"):
        return f"line {int(index) + 2}"  # line 1 is the header
    return f"row {int(index)}"


def encoding_error(path: Path, encoding: str) -> DataError:
    """The :class:`DataError` for a CSV file that is not valid ``encoding`` text, naming the first bad line.

    Called only after a read failed: the file is decoded again in 1 MiB chunks (no per-line Python) to
    find the first byte that does not decode.
    """
    lines, where, carry = 1, "", b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            data = carry + chunk
            if not data:
                break
            try:
                data.decode(encoding)
                carry = b""
            except UnicodeDecodeError as err:
                if chunk and err.end == len(data):
                    # A character cut by the chunk's end: decode it with the next chunk.
                    carry = data[err.start :]
                    lines += data[: err.start].count(b"\n")
                    continue
                bad = err.start
                lines += data[:bad].count(b"\n")
                start = data.rfind(b"\n", 0, bad) + 1
                end = data.find(b"\n", bad)
                text = data[start : end if end >= 0 else len(data)].decode("latin-1").strip()[:80]
                where = f": byte 0x{data[bad]:02x} on line {lines} (read as Latin-1: {text!r})"
                break
            if not chunk:
                break
            lines += data.count(b"\n")
    return DataError(
        path,
        None,
        f"is not valid {encoding} text{where}",
        "re-save the file as UTF-8, or set data.encoding to the file's encoding (latin-1 for ISO-8859-1, "
        "cp1252 for an Excel export on Windows)",
    )


def read_header(path: Path, encoding: str = "utf-8") -> list[str]:
    """Return the column names of a CSV or parquet file, or raise :class:`DataError` if it is unreadable."""
    if path.is_dir():
        raise DataError(path, None, "is a folder, not a file", f"put the file itself at {path}")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        return [str(c) for c in pd.read_csv(path, nrows=0, encoding=encoding).columns]
    except UnicodeDecodeError:
        raise encoding_error(path, encoding) from None
    except pd.errors.EmptyDataError as err:
        raise DataError(path, None, "the file is empty", "re-export the file with a header row") from err
    except (OSError, ValueError) as err:
        raise DataError(
            path, None, f"cannot be read ({err})", "check the file is valid CSV or parquet"
        ) from err


def _holds_bytes(values: pd.Series) -> bool:
    """Whether a column pyarrow read holds raw bytes: how it returns text that is not valid UTF-8."""
    if values.dtype != object:
        return False
    kind = pd.api.types.infer_dtype(values, skipna=True)
    return kind == "bytes" or (kind == "mixed" and values.map(type).eq(bytes).any())


def read_table(
    path: Path,
    usecols: Sequence[str] | None = None,
    as_text: Sequence[str] = (),
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Read ``usecols`` (all when None) of a CSV or parquet file.

    CSV goes through pyarrow's multi-threaded parser first (large logs). Where a column holds values of
    mixed types pyarrow refuses the file, so it is re-read with pandas' own parser, which keeps such a
    column as text for the validators to report the offending values.

    Args:
        path: the file.
        usecols: columns to read; None reads every column.
        as_text: CSV columns read as text, so that the caller parses them (pyarrow would otherwise turn
            ISO datetimes with offsets into UTC and lose their wall-clock date).
        encoding: the CSV file's text encoding (``data.encoding``).

    Raises:
        DataError: the text is not valid ``encoding`` (naming the first bad line and the fix).
    """
    cols = list(dict.fromkeys(usecols)) if usecols is not None else None
    if path.suffix == ".parquet":
        return pd.read_parquet(path, columns=cols)
    dtype = {c: "str" for c in as_text}
    try:
        try:
            frame = pd.read_csv(path, usecols=cols, engine="pyarrow", dtype=dtype or None, encoding=encoding)
        except ValueError as err:
            if isinstance(err, UnicodeDecodeError):
                raise
            frame = pd.read_csv(path, usecols=cols, dtype=dtype or None, low_memory=False, encoding=encoding)
    except UnicodeDecodeError:
        raise encoding_error(path, encoding) from None
    # pyarrow does not refuse invalid UTF-8: it hands such a column back as bytes (b'caf\xe9'), which
    # would become nonsense categories. Refused instead, with the line and the fix.
    if any(_holds_bytes(frame[c]) for c in frame.columns):
        raise encoding_error(path, encoding)
    return frame


def require_rows(frame: pd.DataFrame, file: Path, fix: str) -> None:
    """Raise :class:`DataError` for a file with a header but no data rows."""
    if len(frame) == 0:
        raise DataError(file, None, "has a header but no data rows", fix)


def require_columns(
    header: Sequence[str], needed: Mapping[str, str], file: Path, hint: str = "", fix: str | None = None
) -> None:
    """Raise :class:`DataError` for the first of ``needed`` (role -> column name) absent from ``header``.

    The message lists the file's columns and the closest match, so a misnamed column is obvious.

    Args:
        header: the file's columns.
        needed: schema role -> the column expected for it.
        file: the file, for the message.
        hint: appended to the problem (e.g. what the file looks like instead).
        fix: the fix to suggest; by default, renaming the column or mapping it in ``load_generic(columns=)``.
    """
    for role, column in needed.items():
        if column in header:
            continue
        close = difflib.get_close_matches(column, header, n=1, cutoff=0.6)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        what = f" (the {role})" if role != column else ""
        raise DataError(
            file,
            column,
            f"column '{column}'{what} not found{guess}; the file's columns are {list(header)}{hint}",
            fix
            or f"rename the file's column to '{column}', or map it with columns={{'{role}': '<its name>'}}",
        )


# ------------------------------------------------------------------------------------- typed conversions
def _examples(values: pd.Series, mask: np.ndarray) -> list:
    return values[mask].drop_duplicates().head(3).tolist()


def to_numbers(values: pd.Series, file: Path, column: str) -> np.ndarray:
    """Return ``values`` as float64 (NaN where missing); raise :class:`DataError` on non-numeric text."""
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype="float64")
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = (numbers.isna() & values.notna()).to_numpy()
    if bad.any():
        raise DataError(
            file,
            column,
            f"{int(bad.sum())} non-numeric values, e.g. {_examples(values, bad)}",
            f"store '{column}' as numbers",
        )
    return numbers.to_numpy(dtype="float64", na_value=np.nan)


def to_integers(values: pd.Series, file: Path, column: str, minimum: int = 0, fix: str = "") -> np.ndarray:
    """Return ``values`` as int64; raise :class:`DataError` if any is missing, fractional or below ``minimum``."""
    if pd.api.types.is_integer_dtype(values) and not values.hasnans:
        out = values.to_numpy(dtype="int64")
    else:
        try:
            x = to_numbers(values, file, column)
        except DataError as err:
            raise DataError(file, column, err.problem, fix or err.fix) from None
        if np.isnan(x).any():
            raise DataError(
                file, column, f"{int(np.isnan(x).sum())} missing values", f"drop rows without '{column}'"
            )
        fractional = ~np.isfinite(x) | (x != np.round(x))
        if fractional.any():
            raise DataError(
                file,
                column,
                f"{int(fractional.sum())} non-integer values, e.g. {_examples(values, fractional)}",
                fix or f"store '{column}' as integers",
            )
        out = x.astype(np.int64)
    below = out < minimum
    if below.any():
        raise DataError(
            file,
            column,
            f"{int(below.sum())} values below {minimum}, e.g. {_examples(values, below)}",
            fix or f"'{column}' must be integers >= {minimum}",
        )
    return out


def to_ids(values: pd.Series, file: Path, column: str) -> np.ndarray:
    """Return user or item ids as int64; ids must be non-negative integers (see :mod:`dmtl.schema`)."""
    return to_integers(
        values,
        file,
        column,
        fix=f"map '{column}' to non-negative integers (e.g. with pandas.factorize), the same way in the log "
        "and in the feature file",
    )


def to_clicks(values: pd.Series, file: Path, column: str) -> np.ndarray:
    """Return clicks as int8 0/1; raise :class:`DataError` on missing values or anything but 0/1."""
    x = to_numbers(values, file, column)
    if np.isnan(x).any():
        raise DataError(
            file,
            column,
            f"{int(np.isnan(x).sum())} missing clicks",
            f"fill '{column}' with 0/1 or drop the rows",
        )
    bad = (x != 0) & (x != 1)
    if bad.any():
        raise DataError(
            file,
            column,
            f"{int(bad.sum())} values other than 0/1, e.g. {_examples(values, bad)}",
            "encode clicks as 0/1",
        )
    return x.astype(np.int8)


def to_durations(seconds: np.ndarray, click: np.ndarray, file: Path, column: str) -> tuple[np.ndarray, int]:
    """Validate durations in seconds against clicks; return them with missing non-click durations set to 0.

    Policy (docs/data_formats.md): a missing duration on a non-clicked impression is 0, because a non-click
    has no reading time by definition (docs/protocol.md section 1, challenge 1); a missing duration on a click is an
    error, because any value filled in would be a made-up reading time. Negative and infinite durations are
    errors.

    Returns:
        The durations (float64) and the number of missing non-click durations set to 0.
    """
    if np.isinf(seconds).any():
        raise DataError(
            file, column, f"{int(np.isinf(seconds).sum())} infinite durations", "durations must be finite"
        )
    negative = seconds < 0
    if negative.any():
        raise DataError(
            file,
            column,
            f"{int(negative.sum())} negative durations, e.g. {np.unique(seconds[negative])[:3].tolist()}",
            "durations must be >= 0; drop or correct those rows",
        )
    missing = np.isnan(seconds)
    clicked_missing = missing & (click == 1)
    if clicked_missing.any():
        raise DataError(
            file,
            column,
            f"{int(clicked_missing.sum())} clicked impressions without a duration",
            "drop those rows or supply their duration; the loader will not invent a reading time",
        )
    return np.where(missing, 0.0, seconds), int(missing.sum())


def yyyymmdd_to_days(dates: np.ndarray, file: Path, column: str) -> np.ndarray:
    """Turn yyyymmdd integers (KuaiRand's ``date``) into day numbers since 1970-01-01."""
    unique, inverse = np.unique(dates, return_inverse=True)
    parsed = pd.to_datetime(pd.Series(unique.astype(str)), format="%Y%m%d", errors="coerce")
    if parsed.isna().any():
        raise DataError(
            file,
            column,
            f"invalid yyyymmdd dates, e.g. {unique[parsed.isna().to_numpy()][:3].tolist()}",
            "use yyyymmdd",
        )
    return parsed.to_numpy().astype("datetime64[D]").astype(np.int64)[inverse]


def _parse_datetimes(values: pd.Series, file: Path, column: str) -> pd.Series:
    try:
        return pd.to_datetime(values, format="ISO8601")
    except (ValueError, TypeError) as err:
        coerced = pd.to_datetime(values, format="ISO8601", errors="coerce", utc=True)
        bad = (coerced.isna() & values.notna()).to_numpy()
        problem = (
            f"{int(bad.sum())} values that are neither numbers nor ISO datetimes, e.g. {_examples(values, bad)}"
            if bad.any()
            else f"datetimes that cannot be combined ({err})"
        )
        raise DataError(
            file,
            column,
            problem,
            "use epoch seconds, epoch milliseconds or ISO 8601 strings with one time-zone offset throughout",
        ) from None


def _wall_and_instant(stamps: pd.Series) -> tuple[pd.Series, pd.Series]:
    if getattr(stamps.dt, "tz", None) is not None:
        # The calendar date a reader lived is the wall-clock date in the log's own zone, not UTC's.
        return stamps.dt.tz_localize(None), stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps, stamps


def _datetime64(series: pd.Series, unit: str) -> np.ndarray:
    return series.to_numpy().astype(f"datetime64[{unit}]").astype(np.int64)


def to_epoch_ms_and_day(values: pd.Series, file: Path, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse times into (epoch milliseconds, calendar day number since 1970-01-01).

    Numbers are epoch milliseconds when their largest magnitude is >= :data:`MS_THRESHOLD`, else epoch
    seconds; their calendar day is the UTC date. ISO 8601 strings (or datetime columns) keep their own
    wall-clock date when they carry a time-zone offset. Missing or unparseable times raise
    :class:`DataError`.
    """
    if values.isna().any():
        raise DataError(
            file, column, f"{int(values.isna().sum())} missing times", f"drop rows without '{column}'"
        )
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values)):
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all():
            values = numbers
    if pd.api.types.is_bool_dtype(values):
        raise DataError(
            file, column, "boolean times", "use epoch seconds, epoch milliseconds or ISO 8601 strings"
        )
    if pd.api.types.is_numeric_dtype(values):
        x = values.to_numpy(dtype="float64")
        if not np.isfinite(x).all():
            raise DataError(file, column, "non-finite times", "use finite epoch seconds or milliseconds")
        big = np.abs(x) >= MS_THRESHOLD
        in_ms = bool(big.any())
        if in_ms and not big.all():
            # Seconds and milliseconds in one column: either reading puts part of the log decades away.
            rows = values.index.to_numpy()
            examples = [
                f"{row_label(file, rows[i])}: {x[i]:.0f} ({unit})"
                for mask, unit in ((~big, "seconds"), (big, "milliseconds"))
                for i in np.flatnonzero(mask)[:2]
            ]
            raise DataError(
                file,
                column,
                f"mixes epoch seconds and epoch milliseconds ({int((~big).sum())} values below 1e11, "
                f"{int(big.sum())} at or above), e.g. {'; '.join(examples)}",
                "store every time in one unit: multiply the seconds by 1000 (or divide the milliseconds by "
                "1000) before loading",
            )
        logger.info("%s: numeric '%s' read as epoch %s", file, column, "milliseconds" if in_ms else "seconds")
        ms = np.rint(x if in_ms else x * 1000.0).astype(np.int64)
        return ms, np.floor_divide(ms, 86_400_000)
    stamps = (
        values if pd.api.types.is_datetime64_any_dtype(values) else _parse_datetimes(values, file, column)
    )
    wall, instant = _wall_and_instant(stamps)
    return _datetime64(instant, "ms"), _datetime64(wall, "D")


def check_times(
    time_ms: np.ndarray, file: Path, column: str, options: LoadOptions, rows: np.ndarray | None = None
) -> None:
    """Refuse timestamps outside ``first_year``..``last_year`` and a log spanning more than ``max_span_days``.

    Both rules (docs/data_formats.md section 4) catch what a plain parse accepts: a time in seconds where the
    rest is milliseconds (1970), a far-future typo (2286), a stray year in an otherwise recent log. The
    message names example rows (``rows``: each value's row in the file as read, default 0..n-1).
    """
    if time_ms.size == 0:
        return
    rows = np.arange(time_ms.size) if rows is None else np.asarray(rows)
    epoch = np.datetime64("1970-01-01T00:00:00", "ms")

    def stamp(i: int) -> str:
        return f"{row_label(file, rows[i])} ({epoch + np.timedelta64(int(time_ms[i]), 'ms')})"

    lo = int(np.datetime64(f"{options.first_year:04d}-01-01", "ms").astype(np.int64))
    hi = int(np.datetime64(f"{options.last_year + 1:04d}-01-01", "ms").astype(np.int64))
    outside = (time_ms < lo) | (time_ms >= hi)
    if outside.any():
        examples = "; ".join(stamp(i) for i in np.flatnonzero(outside)[:3])
        raise DataError(
            file,
            column,
            f"{int(outside.sum())} timestamps outside the years {options.first_year}-{options.last_year}, "
            f"e.g. {examples}",
            "correct those rows (a time in seconds among milliseconds reads as 1970; a typo in the year), or "
            "widen data.first_year / data.last_year if the log really lies outside them",
        )
    first, last = int(np.argmin(time_ms)), int(np.argmax(time_ms))
    span = (int(time_ms[last]) - int(time_ms[first])) / 86_400_000
    if span > options.max_span_days:
        # Name the rows farthest from the median time: a stray row is usually one of them.
        far = np.argsort(-np.abs(time_ms - np.median(time_ms)), kind="stable")[:3]
        raise DataError(
            file,
            column,
            f"the timestamps span {span:.0f} days, more than data.max_span_days = {options.max_span_days}; "
            f"the rows farthest from the median time are {'; '.join(stamp(i) for i in far)}",
            "correct or drop those rows, or raise data.max_span_days if the log really spans that long",
        )


def check_duration_units(
    duration: np.ndarray, click: np.ndarray, file: Path, column: str, options: LoadOptions
) -> None:
    """Refuse durations whose median over clicks is implausible for seconds: a likely unit mistake (ms).

    A median read of over ``max_median_duration_s`` (default an hour) is not a feed; the typical cause is a
    column in milliseconds, whose median is a thousand times the real one (docs/data_formats.md section 4).
    """
    clicked = duration[(click == 1) & np.isfinite(duration)]
    if clicked.size == 0:
        return
    median = float(np.median(clicked))
    if median > options.max_median_duration_s:
        raise DataError(
            file,
            column,
            f"the median clicked duration is {median:,.0f} s ({median / 3600:.1f} h), implausible for seconds "
            f"(data.max_median_duration_s = {options.max_median_duration_s:g}): the column looks like "
            f"milliseconds (it would be {median / 1000:,.1f} s)",
            "give durations in seconds (divide the column by 1000), or raise data.max_median_duration_s if "
            "reads really last this long",
        )


def to_day_numbers(values: pd.Series, file: Path, column: str) -> np.ndarray:
    """Parse a day column: day indexes, yyyymmdd integers or ISO dates; return day numbers (any origin)."""
    if values.isna().any():
        raise DataError(
            file, column, f"{int(values.isna().sum())} missing days", f"drop rows without '{column}'"
        )
    numbers = pd.to_numeric(values, errors="coerce") if not pd.api.types.is_numeric_dtype(values) else values
    if numbers.notna().all():
        days = to_integers(numbers, file, column, minimum=np.iinfo(np.int64).min)
        if days.min() >= 19000101 and days.max() <= 21001231:
            # Eight-digit values in this range are dates (KuaiRand style), not day indexes in the millions.
            return yyyymmdd_to_days(days, file, column)
        return days
    wall, _ = _wall_and_instant(_parse_datetimes(values, file, column))
    return _datetime64(wall, "D")


def to_positions(values: pd.Series, file: Path, column: str) -> tuple[np.ndarray, int]:
    """Parse feed positions (0 = top); missing ones become -1 ("not recorded"). Return them and that count."""
    x = to_numbers(values, file, column)
    missing = np.isnan(x)
    x = np.where(missing, -1.0, x)
    bad = (x != np.round(x)) | (x < -1) | (x > _MAX_POSITION)
    if bad.any():
        raise DataError(
            file,
            column,
            f"{int(bad.sum())} positions that are not integers in [-1, {_MAX_POSITION}], e.g. "
            f"{_examples(values, bad)}",
            "use 0 for the top of the feed and -1 (or empty) where the position is unknown",
        )
    return x.astype(np.int16), int(missing.sum())


# ---------------------------------------------------------------------------------------------- features
def as_category(values: pd.Series) -> pd.Series:
    """Turn a feature column into category strings, with :data:`MISSING` where the value is missing.

    Integral numbers print without a decimal point (``1.0`` -> ``"1"``), so a column that pandas read as
    float because it has gaps gives the same categories as a gap-free one.
    """
    if pd.api.types.is_integer_dtype(values):
        # Straight to text: a detour through float64 would corrupt ids above 2**53.
        text = values.astype("Int64").astype("string")
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        x = values.to_numpy(dtype="float64", na_value=np.nan)
        finite = np.isfinite(x)
        x = np.where(finite, x, np.nan)
        if np.array_equal(x[finite], np.round(x[finite])):
            text = pd.Series(x, index=values.index).astype("Int64").astype("string")
        else:
            text = pd.Series(x, index=values.index).astype("string")
    else:
        text = values.astype("string").str.strip().replace("", pd.NA)
    return text.fillna(MISSING).astype(str)


def check_feature_names(header: Sequence[str], id_column: str, key: str, file: Path) -> None:
    """Refuse feature columns whose names collide with the id or with the study's internal columns."""
    if key != id_column and key in header:
        raise DataError(
            file,
            key,
            f"the file has two id columns, '{id_column}' and '{key}'; the second would be read as a feature "
            "and overwrite the ids",
            f"keep one id column: drop or rename '{key}' (or '{id_column}')",
        )
    reserved = [c for c in header if c in RESERVED_FEATURE_NAMES]
    if reserved:
        raise DataError(
            file,
            reserved[0],
            f"feature column '{reserved[0]}' has a name the study uses internally "
            f"(reserved: {list(RESERVED_FEATURE_NAMES)})",
            f"rename the column, e.g. to '{reserved[0]}_feature'",
        )


def feature_table(frame: pd.DataFrame, id_column: str, key: str, file: Path) -> pd.DataFrame:
    """Return ``frame`` as a feature table: ``key`` (int64 ids) plus every other column as categories.

    Raises:
        DataError: a feature column would collide with the id (``key`` beside another id column) or with a
            column the study uses internally (:data:`dmtl.schema.RESERVED_FEATURE_NAMES`).
    """
    check_feature_names(list(frame.columns), id_column, key, file)
    ids = to_ids(frame[id_column], file, id_column)
    out = {key: ids}
    for column in frame.columns:
        if column == id_column:
            continue
        values = frame[column]
        if column == ITEM_LENGTH and key == "item_id":
            # The item's length is not a feature: it is kept in seconds for the length-aware labels.
            length = to_numbers(values, file, column)
            if (length[np.isfinite(length)] <= 0).any():
                raise DataError(file, column, "lengths <= 0 seconds", f"store '{column}' as seconds > 0")
            out[column] = length
            continue
        if pd.api.types.is_float_dtype(values):
            x = values.to_numpy(dtype="float64", na_value=np.nan)
            if not np.array_equal(x[np.isfinite(x)], np.round(x[np.isfinite(x)])):
                logger.warning(
                    "%s: feature '%s' has fractional values; it is treated as categorical downstream, "
                    "so bin it first if it is continuous",
                    file,
                    column,
                )
        out[column] = as_category(values).to_numpy()
    return pd.DataFrame(out)


def attach_features(
    table: pd.DataFrame | None, log_ids: np.ndarray, key: str, file: Path | None, counts: dict[str, int]
) -> pd.DataFrame:
    """Restrict a feature table to the ids in the log and complete it, by the documented policies.

    - Exact duplicate rows are dropped; the same id with different features is a :class:`DataError`.
    - Ids in the log but not in the table get a row of :data:`MISSING` features, with a warning and a count
      (``<key>s_missing_from_features``); if no id of the log is in the table, the file is the wrong one
      and a :class:`DataError` is raised.
    - Rows for ids the log never shows are dropped (they carry no training signal).

    Args:
        table: ``key`` plus category-string feature columns, or None when the source has no feature file.
        log_ids: the ids in the log (any order, repeats allowed).
        key: ``"user_id"`` or ``"item_id"``.
        file: the feature file, for messages.
        counts: the policy counter to update.
    """
    ids = np.unique(log_ids)
    if table is None:
        return pd.DataFrame({key: ids})
    exact = table.duplicated()
    if exact.any():
        counts[f"{key}_feature_duplicate_rows_dropped"] = int(exact.sum())
        logger.info("%s: dropped %d exact duplicate feature rows", file, int(exact.sum()))
        table = table.loc[~exact.to_numpy()]
    conflicting = table[key].duplicated(keep=False)
    if conflicting.any():
        raise DataError(
            file,
            key,
            f"{int(table.loc[conflicting, key].nunique())} ids with conflicting feature rows, e.g. "
            f"{table.loc[conflicting, key].unique()[:3].tolist()}",
            "keep one feature row per id",
        )
    known = np.isin(ids, table[key].to_numpy())
    if not known.any():
        raise DataError(
            file,
            key,
            f"none of the log's {ids.size} ids is in this feature file (e.g. {ids[:3].tolist()})",
            "pass the feature file that belongs to this log (same dataset and variant)",
        )
    table = table.loc[np.isin(table[key].to_numpy(), ids)]
    absent = ids[~known]
    counts[f"{key}s_missing_from_features"] = int(absent.size)
    if absent.size:
        logger.warning(
            "%s: %d of the log's %d %ss have no feature row; their features are set to '%s'",
            file,
            absent.size,
            ids.size,
            key,
            MISSING,
        )
        fill = {key: absent, ITEM_LENGTH: np.nan}  # an unknown length is unknown, not a category
        filler = pd.DataFrame({c: fill.get(c, MISSING) for c in table.columns})
        table = pd.concat([table, filler.astype(table.dtypes.to_dict())], ignore_index=True)
    return table.sort_values(key, kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ policies
def finalize_feed_log(
    raw: pd.DataFrame,
    users: pd.DataFrame | None,
    items: pd.DataFrame | None,
    *,
    source: str,
    log_file: Path,
    user_file: Path | None,
    item_file: Path | None,
    meta: dict,
    options: LoadOptions | None = None,
) -> FeedLog:
    """Apply the shared policies to a validated raw impression frame and return a checked :class:`FeedLog`.

    In order (docs/data_formats.md): rows identical in every column read are dropped; rows repeating an
    earlier (user_id, item_id, time) are dropped, the first kept; rows are sorted by time (stable);
    durations on non-clicked impressions are set to 0 (docs/protocol.md section 6: KuaiRand records play time on
    impressions it does not count as clicks); clicks with zero duration are kept as clicks that were not
    long reads. ``day`` counts calendar days from the first date present, ``time`` whole seconds from the
    first impression. Each count goes to ``meta["policy_counts"]`` and to the log; ``meta["as_read"]``
    keeps the row count, click rate and clicked mean duration before any policy, to compare with a
    dataset's published figures.

    Args:
        raw: columns :data:`RAW_COLUMNS`, already validated and typed.
        users: user feature table (``user_id`` + category strings) or None.
        items: item feature table (``item_id`` + category strings) or None.
        source: the FeedLog's source name.
        log_file: the impression file (or directory) named in messages.
        user_file: the user feature file named in messages.
        item_file: the item feature file named in messages.
        meta: metadata so far; returned inside the FeedLog with counts and summary numbers added.
        options: the plausibility thresholds (``max_duration_s`` caps clicked durations); defaults when None.
    """
    options = options or LoadOptions()
    counts: dict[str, int] = meta.setdefault("policy_counts", {})
    if raw.empty:
        raise DataError(log_file, None, "no impressions to load", "check the files and the date range")

    as_read_clicks = raw["click"].to_numpy() == 1
    meta["as_read"] = {
        "rows": len(raw),
        "click_rate": float(as_read_clicks.mean()),
        "clicked_duration_mean_s": float(raw["duration"].to_numpy()[as_read_clicks].mean())
        if as_read_clicks.any()
        else 0.0,
    }
    cal_day, time_ms = raw["cal_day"].to_numpy(), raw["time_ms"].to_numpy()
    impressions = row_policies(raw, counts, meta, options, log_file, int(time_ms.min()), int(cal_day.min()))
    for name, n in counts.items():
        if n:
            logger.info("%s: %s = %d of %d rows", log_file, name, n, meta.get("rows_read", len(raw)))

    users = attach_features(users, impressions["user_id"].to_numpy(), "user_id", user_file, counts)
    items = attach_features(items, impressions["item_id"].to_numpy(), "item_id", item_file, counts)

    meta["missing_feature_values"] = {
        name: {c: int(n) for c in table.columns if c != key and (n := (table[c].to_numpy() == MISSING).sum())}
        for name, key, table in (("users", "user_id", users), ("items", "item_id", items))
    }
    clicked = impressions["click"].to_numpy() == 1
    epoch = np.datetime64("1970-01-01", "D")
    meta.update(
        rows_kept=len(impressions),
        first_date=str(epoch + int(cal_day.min())),
        last_date=str(epoch + int(cal_day.max())),
        n_users=len(users),
        n_items=len(items),
        click_rate=float(clicked.mean()),
        clicked_duration_mean_s=float(impressions["duration"].to_numpy()[clicked].mean())
        if clicked.any()
        else 0.0,
    )
    log = FeedLog(impressions=impressions, users=users, items=items, source=source, meta=meta)
    check_feed_log(log, file=log_file)
    return log


def _add(counts: dict[str, int], name: str, n: int) -> None:
    counts[name] = counts.get(name, 0) + n


def row_policies(
    raw: pd.DataFrame,
    counts: dict[str, int],
    meta: dict,
    options: LoadOptions,
    log_file: Path,
    time_origin_ms: int,
    day_origin: int,
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """The row policies of :func:`finalize_feed_log` on a validated raw frame: the impressions in the schema
    (and the columns ``keep`` of ``raw``, carried along).

    ``time_origin_ms`` and ``day_origin`` are the whole log's first time and calendar day (``time`` and
    ``day`` count from them; the same-second rule cuts seconds from the first); the chunked loaders
    (:mod:`dmtl.chunked`) apply this to each bucket of users with the log's origins, adding to ``counts``.
    Every rule compares rows of one user only except the time-order count (``rows_out_of_time_order``),
    which a bucket counts among its own rows.
    """
    # Identical in every column read (a carried column that is not one, e.g. a row number, does not count).
    exact = raw.duplicated([c for c in raw.columns if c in RAW_COLUMNS or c not in keep]).to_numpy()
    raw = raw.loc[~exact]
    repeated = raw.duplicated(["user_id", "item_id", "time_ms"]).to_numpy()
    raw = raw.loc[~repeated]
    _add(counts, "exact_duplicate_rows_dropped", int(exact.sum()))
    _add(counts, "duplicate_key_rows_dropped", int(repeated.sum()))

    time_ms = raw["time_ms"].to_numpy()
    late = time_ms[1:] < np.maximum.accumulate(time_ms)[:-1]
    _add(counts, "rows_out_of_time_order", int(late.sum()))
    raw = raw.iloc[np.argsort(time_ms, kind="stable")].reset_index(drop=True)
    # The schema's time is whole seconds: two impressions of one item to one user within the same second
    # (distinct in milliseconds) would become duplicates downstream, so the first is kept here too.
    second = (raw["time_ms"].to_numpy() - time_origin_ms) // 1000
    same_second = pd.DataFrame({"u": raw["user_id"].to_numpy(), "i": raw["item_id"].to_numpy(), "s": second})
    same_second = same_second.duplicated().to_numpy()
    _add(counts, "same_second_duplicate_rows_dropped", int(same_second.sum()))
    raw = raw[~same_second].reset_index(drop=True)

    click = raw["click"].to_numpy()
    duration = raw["duration"].to_numpy(dtype="float64")
    nonclick_played = (click == 0) & (duration > 0)
    _add(counts, "nonclick_durations_zeroed", int(nonclick_played.sum()))
    _add(counts, "clicks_with_zero_duration", int(((click == 1) & (duration == 0)).sum()))
    duration = np.where(nonclick_played, 0.0, duration)
    # A read longer than max_duration_s (default 4 h) is a session left open or a clock fault, not reading
    # time; uncapped, one such row moves tau (the mean) and every long-read label with it.
    over = duration > options.max_duration_s
    _add(counts, "durations_capped", int(over.sum()))
    meta["duration_cap_s"] = float(options.max_duration_s)
    if over.any():
        logger.warning(
            "%s: %d clicked durations above data.max_duration_s = %g s capped to it (largest %g s)",
            log_file,
            int(over.sum()),
            options.max_duration_s,
            float(duration[over].max()),
        )
    duration = np.minimum(duration, options.max_duration_s)

    cal_day = raw["cal_day"].to_numpy()
    time_ms = raw["time_ms"].to_numpy()
    impressions = coerce_impressions(
        pd.DataFrame(
            {
                "user_id": raw["user_id"].to_numpy(),
                "item_id": raw["item_id"].to_numpy(),
                "day": cal_day - day_origin,
                "time": (time_ms - time_origin_ms) // 1000,
                "position": raw["position"].to_numpy(),
                "click": click,
                "duration": duration,
            }
        ),
        file=log_file,
    )
    return impressions.assign(**{c: raw[c].to_numpy() for c in keep})


# ------------------------------------------------------------------------------------------ generic format
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


def _find_table(directory: Path, stem: str, required: bool) -> Path | None:
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
    path = _find_table(directory, "impressions", required=True)
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
        table = _find_table(directory, stem, required=False)
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

    ``whole_log=False`` converts one chunk of the file (:mod:`dmtl.chunked`): the rules that need the whole
    log (the median clicked duration, the time span) are left to the caller, the others apply as they are.
    """
    click = to_clicks(frame[mapping["click"]], path, mapping["click"])
    seconds = to_numbers(frame[mapping["duration"]], path, mapping["duration"])
    duration, n_zeroed = to_durations(seconds, click, path, mapping["duration"])
    _add(counts, "missing_nonclick_durations_zeroed", n_zeroed)
    if whole_log:
        check_duration_units(duration, click, path, mapping["duration"], options)
    chunk_options = options if whole_log else dataclasses.replace(options, max_span_days=sys.maxsize)
    time_ms, cal_day = _read_times(frame, mapping, path, chunk_options)
    if "position" in mapping:
        position, n_missing = to_positions(frame[mapping["position"]], path, mapping["position"])
        _add(counts, "missing_positions", n_missing)
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
    user_path = _find_table(directory, "users", required=False)
    item_path = _find_table(directory, "items", required=False)
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
