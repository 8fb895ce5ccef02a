"""User and item feature tables of a real log: categorical values, checked names, the join onto the log.

Shared by every real-data source: a feature file that does not cover the log gets :data:`MISSING` rows, with a
WARNING and a count (policy 8 of docs/data_formats.md); one covering none of the log's ids is a
:class:`~dmtl.schema.DataError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.schema import (
    ITEM_LENGTH,
    RESERVED_FEATURE_NAMES,
    DataError,
)
from dmtl.sources.ingest.convert import to_ids, to_numbers

logger = logging.getLogger(__name__)

MISSING = "missing"
"""The category every missing feature value becomes (features are categorical downstream)."""


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
