"""Reading the files of a real log: folders, headers, tables, their encoding, required rows and columns.

Shared by every real-data source (:mod:`dmtl.sources.generic`, :mod:`dmtl.sources.kuairand`): bad input raises
:class:`~dmtl.schema.DataError` naming the file, the column (or line) and the fix (docs/data_formats.md).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from dmtl.schema import (
    DataError,
)


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
