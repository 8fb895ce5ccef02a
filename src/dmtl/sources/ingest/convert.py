"""Typed conversions of a real log's columns (ids, clicks, durations, dates, times, positions) and the checks
over a whole file's values (time units, plausible years and span, duration unit).

Shared by every real-data source: a value that cannot be converted raises :class:`~dmtl.schema.DataError`
naming the file, the column, example values and the fix (docs/data_formats.md, docs/robustness.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.schema import (
    DataError,
    LoadOptions,
)
from dmtl.sources.ingest.reading import row_label

logger = logging.getLogger(__name__)

MS_THRESHOLD = 10**11
"""Numeric times at or above this are epoch milliseconds, below it epoch seconds (1e11 s is year 5138)."""

_MAX_POSITION = int(np.iinfo(np.int16).max)


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
