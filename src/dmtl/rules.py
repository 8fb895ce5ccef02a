"""Validation rules of config fields: each checks one value and returns it normalised, or raises
:class:`ParamsError` with a message that names the dotted key and lists what would be valid."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from dmtl.schema import REQUIRED_COLUMNS, SCHEMA_COLUMNS


class ParamsError(ValueError):
    """A parameter is unknown or has a bad value; the message lists the valid options."""


Check = Callable[[str, Any], Any]
"""Validate ``value`` of dotted ``key``; return it normalised, or raise :class:`ParamsError`."""


# ---------------------------------------------------------------------------------------------- rules
def choice(options: tuple[Any, ...]) -> Check:
    def check(key: str, value: Any) -> Any:
        if value not in options:
            raise ParamsError(f"{key} = {value!r} is not valid; choose one of {list(options)}")
        return value

    return check


def number(lo: float | None = None, hi: float | None = None, integer: bool = False) -> Check:
    def check(key: str, value: Any) -> Any:
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            kind = "an integer" if integer else "a number"
            raise ParamsError(f"{key} = {value!r} must be {kind}")
        # NaN compares False with every bound, so without this a .nan in params.yaml would pass silently.
        if not math.isfinite(value):
            raise ParamsError(f"{key} = {value!r} must be a finite number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ParamsError(f"{key} = {value!r} must lie in [{lo}, {hi}]")
        return int(value) if integer else float(value)

    return check


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParamsError(f"{key} = {value!r} must be true or false")
    return value


def text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ParamsError(f"{key} = {value!r} must be a non-empty string")
    return value


def int_list(lo: int = 1, allow_empty: bool = False, unique: bool = False) -> Check:
    def check(key: str, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list | tuple) or (not value and not allow_empty):
            raise ParamsError(f"{key} = {value!r} must be a list of integers")
        out = tuple(number(lo, None, integer=True)(f"{key}[{i}]", v) for i, v in enumerate(value))
        if unique and len(set(out)) != len(out):
            # A repeated seed is the same run counted twice: it would narrow the interval over seeds
            # (docs/protocol.md section 4) without adding evidence.
            raise ParamsError(f"{key} = {list(value)!r} repeats an entry; list each one once")
        return out

    return check


def number_list(lo: float, hi: float, integer: bool = False) -> Check:
    def check(key: str, value: Any) -> tuple[float, ...]:
        if not isinstance(value, list | tuple) or not value:
            raise ParamsError(f"{key} = {value!r} must be a non-empty list of numbers")
        return tuple(number(lo, hi, integer)(f"{key}[{i}]", v) for i, v in enumerate(value))

    return check


def subset(options: tuple[str, ...], allow_empty: bool = True) -> Check:
    def check(key: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or (not value and not allow_empty):
            raise ParamsError(f"{key} = {value!r} must be a list drawn from {list(options)}")
        bad = [v for v in value if v not in options]
        if bad:
            raise ParamsError(f"{key} has unknown entries {bad}; choose from {list(options)}")
        if len(set(value)) != len(value):
            raise ParamsError(f"{key} = {list(value)!r} repeats an entry")
        return tuple(value)

    return check


def mapping(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ParamsError(f"{key} = {value!r} must be a mapping")
    return dict(value)


def tau(key: str, value: Any) -> str | float:
    if value == "mean":
        return value
    try:
        return number(0.0, None)(key, value)
    except ParamsError as e:
        raise ParamsError(f"{e}; use 'mean' (mean clicked training duration) or seconds >= 0") from None


def columns(key: str, value: Any) -> dict[str, str]:
    """The generic loader's column mapping: checked here so a typo stops the run before any work."""
    value = mapping(key, value)
    unknown = sorted(set(value) - set(SCHEMA_COLUMNS))
    if unknown:
        raise ParamsError(f"{key} has unknown schema column(s) {unknown}; valid keys: {list(SCHEMA_COLUMNS)}")
    out = {name: text(f"{key}.{name}", col) for name, col in value.items()}
    # Unmapped required names are read from the column of their own name, so they count too.
    by_column: dict[str, list[str]] = {}
    for name, column in ({name: name for name in REQUIRED_COLUMNS} | out).items():
        by_column.setdefault(column, []).append(name)
    shared = {column: names for column, names in by_column.items() if len(names) > 1}
    if shared:
        raise ParamsError(
            f"{key} maps several schema names to one column: {shared}; give each schema name its own column "
            f"(an unmapped {list(REQUIRED_COLUMNS)} name reads the column of that name)"
        )
    return out


def encoding(key: str, value: Any) -> str:
    """A text encoding Python's codecs know (the real-data loaders' CSV files)."""
    import codecs

    text(key, value)
    try:
        codecs.lookup(value)
    except LookupError:
        raise ParamsError(
            f"{key} = {value!r} is not an encoding Python knows; use e.g. 'utf-8', 'latin-1' or 'cp1252'"
        ) from None
    return value


def devices(key: str, value: Any) -> int | str | tuple[int, ...]:
    """What lightning.Trainer(devices=...) accepts: a count, -1 (all), 'auto', or device indices."""
    if value == "auto" or value == -1:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, list | tuple) and value:
        return int_list(lo=0, unique=True)(key, value)
    if isinstance(value, str) and value.replace(",", "").strip().isdigit():
        return value
    raise ParamsError(
        f"{key} = {value!r} is not valid; use a device count >= 1, -1 (all), 'auto', "
        "a list of device indices such as [0, 1], or a string such as '0,1'"
    )


def margins(key: str, value: Any) -> dict[str, float]:
    """Equivalence margins: a metric's base name (``dmtl.vocab.METRICS``) -> a margin > 0 on its scale."""
    from dmtl.vocab import METRIC_NAMES

    value = mapping(key, value)
    unknown = sorted(set(value) - set(METRIC_NAMES))
    if unknown:
        raise ParamsError(f"{key} has unknown metric(s) {unknown}; valid: {list(METRIC_NAMES)}")
    return {name: number(0.0, 1.0)(f"{key}.{name}", v) for name, v in value.items()}
