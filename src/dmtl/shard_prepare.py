"""Log shards (:mod:`dmtl.log_shards`) prepared in two passes into the out-of-core data (:mod:`dmtl.shards`).

:func:`prepare_shards`: the split by day, tau and the long-read labels from training aggregates, and the id
encodings from training ids, in two passes over the log shards. Pass 1 checks each shard with the in-memory
path's rules and gathers the days, each user's and item's first day and the clicked durations; pass 2 labels
and encodes each shard and writes its rows of each split. The result is :func:`dmtl.features.prepare` of the
concatenated log: the same rows (each shard in the same order), the same tau, labels and encodings
(``tests/test_shards.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmtl.features import (
    SPLITS,
    LabelRule,
    check_feature_names,
    choose_tau,
    context_meta,
    encode_impressions,
    encode_tables,
    label_meta,
    split_days,
)
from dmtl.io import read_json, write_json, write_parquet
from dmtl.labels import apply_long_read, fit_long_read, resolve_rule
from dmtl.log_shards import LOG_ROW, LogShards
from dmtl.schema import (
    ITEM_LENGTH,
    DataError,
    FeedLog,
    check_feed_log,
    coerce_impressions,
)
from dmtl.shards import SHARDS, ShardedPrepared, part_name

logger = logging.getLogger(__name__)


@dataclass
class _Pass1:
    """What the first pass over the log shards gathers (module docstring)."""

    days: set[int] = field(default_factory=set)
    user_first_day: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    item_first_day: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    clicked: list[dict[str, np.ndarray]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    rows: int = 0


def _checked(raw: pd.DataFrame, log: LogShards, path: Path, check_tables: bool) -> pd.DataFrame:
    """One shard through the in-memory path's checks (:func:`dmtl.features.prepare`); a chunk holds whole
    users, so the repeated-impression rule applies shard by shard."""
    imp = coerce_impressions(raw, path)
    # The feature tables' own rules (ids unique) once; every shard's ids against them.
    users, items = (
        (log.users, log.items) if check_tables else (log.users[["user_id"]], log.items[["item_id"]])
    )
    check_feed_log(FeedLog(imp, users, items, log.source), path)
    key = ["user_id", "item_id", "time"]
    repeated = imp.duplicated(key)
    if repeated.any():
        raise DataError(
            path,
            ", ".join(key),
            f"{int(repeated.sum())} impressions repeat an earlier (user_id, item_id, time)",
            "drop the duplicates (the real-data loaders keep the first: docs/data_formats.md policies 3-4)",
        )
    return imp


def _sorted(imp: pd.DataFrame) -> np.ndarray:
    """The order of :func:`dmtl.features.prepare`: by day, then time, stable."""
    return np.lexsort((imp["time"].to_numpy(), imp["day"].to_numpy()))


def _first_pass(log: LogShards, has_length: bool) -> _Pass1:
    check_feature_names(log.source, log.users, log.items)
    user_index, item_index = pd.Index(log.users["user_id"]), pd.Index(log.items["item_id"])
    none = np.iinfo(np.int64).max
    out = _Pass1(user_first_day=np.full(len(user_index), none), item_first_day=np.full(len(item_index), none))
    user_shard = np.full(len(user_index), -1, np.int64)
    for k, (path, raw) in enumerate(zip(log.files, log.chunks(), strict=True)):
        imp = _checked(raw, log, path, check_tables=k == 0)
        if k == 0:
            out.columns = list(imp.columns)
        elif list(imp.columns) != out.columns:
            raise DataError(
                path,
                None,
                f"columns {list(imp.columns)} differ from the first shard's {out.columns}",
                "write every shard of a log with the same columns",
            )
        user_row = user_index.get_indexer(imp["user_id"])
        item_row = item_index.get_indexer(imp["item_id"])
        seen = np.unique(user_row)
        elsewhere = seen[(user_shard[seen] >= 0) & (user_shard[seen] != k)]
        if elsewhere.size:
            raise DataError(
                path,
                "user_id",
                f"{elsewhere.size} users also have impressions in an earlier shard, e.g. user "
                f"{log.users['user_id'].to_numpy()[elsewhere[0]]}",
                "write each user's impressions into one shard (the repeated-impression rule is checked per shard)",
            )
        user_shard[seen] = k
        day = imp["day"].to_numpy().astype(np.int64)
        out.days.update(np.unique(day).tolist())
        np.minimum.at(out.user_first_day, user_row, day)
        np.minimum.at(out.item_first_day, item_row, day)
        click = imp["click"].to_numpy() == 1
        # ~16 bytes a click (24 with LOG_ROW, 28 with item lengths): what grows with the log here.
        part = {
            "day": day[click].astype(np.int32),
            "time": imp["time"].to_numpy()[click],
            "duration": imp["duration"].to_numpy()[click],
        }
        if LOG_ROW in raw.columns:  # else the shards' own order is the log's: kept by the stable sort
            part["tie"] = raw[LOG_ROW].to_numpy(np.int64)[click]
        if has_length:
            part["item_row"] = item_row[click].astype(np.int32)
        out.clicked.append(part)
        out.rows += len(imp)
    if out.rows == 0:
        raise DataError(log.source, None, "the log has no impressions", "check the log shards")
    return out


@dataclass(frozen=True)
class _DaySplit:
    """The split code (0 train, 1 val, 2 test) of each day of the log."""

    days: np.ndarray  # sorted
    codes: np.ndarray

    def __call__(self, day: np.ndarray) -> np.ndarray:
        return self.codes[np.searchsorted(self.days, day)].astype(np.int8)


@dataclass
class _Fit:
    """What the first pass decides: the split of each day, tau, the label rule's thresholds, the encodings."""

    day_split: _DaySplit
    tau_seconds: float
    label_info: dict[str, Any]
    users_enc: pd.DataFrame
    items_enc: pd.DataFrame
    meta: dict[str, Any]


def _fit(
    p1: _Pass1, log: LogShards, val_days: int, test_days: int, tau: str | float, labels: LabelRule
) -> _Fit:
    days = np.array(sorted(p1.days), dtype=np.int64)
    codes = split_days(days, val_days, test_days, log.source)
    for name, code in SPLITS.items():
        if not (codes == code).any():
            raise DataError(
                log.source, "day", f"the {name} split is empty", "check data.val_days / data.test_days"
            )
    day_split = _DaySplit(days, codes)
    clicked = {}
    for key in list(p1.clicked[0]):  # one column at a time: the peak holds one unsorted copy
        clicked[key] = np.concatenate([c.pop(key) for c in p1.clicked])
    keys = [clicked[k] for k in ("tie", "time", "day") if k in clicked]
    order = np.lexsort(keys)  # the whole log's order: by day, then time, then place in the log (stable)
    del keys
    for key in list(clicked):
        clicked[key] = clicked[key][order]
    del order
    is_train = day_split(clicked["day"]) == 0
    duration = clicked["duration"].astype(np.float32)
    ones = np.ones(len(duration), np.int8)
    tau_seconds = choose_tau(duration, ones, is_train, tau, log.source)
    items = log.items.reset_index(drop=True)
    has_length = ITEM_LENGTH in items.columns
    rule = resolve_rule(labels.rule, log.source, has_length)
    length = items[ITEM_LENGTH].to_numpy(np.float64)[clicked["item_row"]] if has_length else None
    info = fit_long_read(
        duration, ones, is_train, length, rule, tau_seconds, labels.completion_threshold, labels.length_bands
    )
    val_start = days[codes > 0].min()
    train_users = log.users["user_id"].to_numpy()[p1.user_first_day < val_start]
    train_items = items["item_id"].to_numpy()[p1.item_first_day < val_start]
    users_enc, items_enc, table_meta = encode_tables(
        log.users.reset_index(drop=True),
        items.drop(columns=[ITEM_LENGTH], errors="ignore"),
        train_users,
        train_items,
    )
    meta = {
        **label_meta(log.source, tau_seconds, tau, info, duration[is_train]),
        **table_meta,
        **context_meta(p1.columns),
        "split_days": {name: days[codes == code].tolist() for name, code in SPLITS.items()},
        "n_users": len(log.users),
        "n_items": len(items),
    }
    return _Fit(day_split, tau_seconds, info, users_enc, items_enc, meta)


class _SplitSummary:
    """The per-split figures of :func:`dmtl.stages.prepare.data_summary`, summed over shards."""

    def __init__(self, n_users: int, n_items: int):
        self.n = self.clicks = self.long_reads = self.long_clicked = 0
        self.clicked_seconds = 0.0
        self.users, self.items = np.zeros(n_users, bool), np.zeros(n_items, bool)

    def add(self, part: pd.DataFrame) -> None:
        click = part["click"].to_numpy() == 1
        long_read = part["long_read"].to_numpy() == 1
        self.n += len(part)
        self.clicks += int(click.sum())
        self.long_reads += int(long_read.sum())
        self.long_clicked += int((long_read & click).sum())
        self.clicked_seconds += float(part["duration"].to_numpy()[click].astype(np.float64).sum())
        self.users[part["user_idx"].to_numpy()] = True
        self.items[part["item_idx"].to_numpy()] = True

    def figures(self) -> dict[str, Any]:
        nan = float("nan")
        return {
            "impressions": self.n,
            "users": int(self.users.sum()),
            "items": int(self.items.sum()),
            "ctr": self.clicks / self.n if self.n else nan,
            "mean_clicked_duration": self.clicked_seconds / self.clicks if self.clicks else nan,
            "long_read_rate": self.long_reads / self.n if self.n else nan,
            "long_read_given_click": self.long_clicked / self.clicks if self.clicks else nan,
        }


def prepare_shards(
    log: LogShards,
    directory: str | Path,
    val_days: int = 1,
    test_days: int = 2,
    tau: str | float = "mean",
    labels: LabelRule | None = None,
) -> ShardedPrepared:
    """:func:`dmtl.features.prepare` for a log in shards, in two passes with memory bounded by one shard.

    Writes ``users.parquet``, ``items.parquet``, ``shards/<split>/part-<k>.parquet`` (the prepared rows of
    log shard ``k`` in that split, sorted by day then time) and ``meta.json`` (last, so a folder without it
    is unfinished) into ``directory``.

    Raises:
        DataError: every rule of :func:`dmtl.features.prepare`, naming the shard; and a user whose
            impressions span two shards.
    """
    directory = Path(directory)
    labels = labels or LabelRule()
    items = log.items.reset_index(drop=True)
    has_length = ITEM_LENGTH in items.columns
    p1 = _first_pass(log, has_length)
    fit = _fit(p1, log, val_days, test_days, tau, labels)

    # Pass 2: label, encode and write each shard's rows of each split.
    user_index, item_index = pd.Index(log.users["user_id"]), pd.Index(items["item_id"])
    length_of = items[ITEM_LENGTH].to_numpy(np.float64) if has_length else None
    user_code, item_code = fit.users_enc["user_id"].to_numpy(), fit.items_enc["item_id"].to_numpy()
    tmp = directory / (SHARDS + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    files: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    summary = {name: _SplitSummary(len(user_index), len(item_index)) for name in SPLITS}
    oov = {"users": 0, "items": 0}
    without_length = 0
    for k, (path, raw) in enumerate(zip(log.files, log.chunks(), strict=True)):
        imp = coerce_impressions(raw, path)
        imp = imp.iloc[_sorted(imp)].reset_index(drop=True)
        split = fit.day_split(imp["day"].to_numpy())
        user_idx = user_index.get_indexer(imp["user_id"])
        item_idx = item_index.get_indexer(imp["item_id"])
        length = length_of[item_idx] if length_of is not None else None
        duration = imp["duration"].to_numpy().astype(np.float32)
        click = imp["click"].to_numpy().astype(np.int8)
        if length is not None:
            without_length += int((~(np.isfinite(length) & (length > 0))).sum())
        long_read = apply_long_read(duration, click, length, fit.label_info)
        encoded = encode_impressions(imp, split, long_read, user_idx, item_idx)
        test = split == SPLITS["test"]
        oov["users"] += int((user_code[user_idx[test]] == 0).sum())
        oov["items"] += int((item_code[item_idx[test]] == 0).sum())
        for name, code in SPLITS.items():
            part = encoded[split == code].reset_index(drop=True)
            if len(part) == 0:
                continue
            write_parquet(part, tmp / name / part_name(k))
            files[name].append({"file": f"{name}/{part_name(k)}", "rows": len(part)})
            summary[name].add(part)
    if "impressions_without_length" in fit.label_info:
        fit.label_info["impressions_without_length"] = without_length
        fit.meta["impressions_without_length"] = without_length
    if oov["users"] or oov["items"]:
        logger.info("test impressions with ids unseen in training (out-of-vocabulary bucket): %s", oov)
    meta = {
        **fit.meta,
        "n_impressions": {name: sum(f["rows"] for f in files[name]) for name in SPLITS},
        "oov_test_impressions": oov,
        "storage": "shards",
        "shards": files,
        "split_summary": {name: s.figures() for name, s in summary.items()},
    }
    return _publish(directory, tmp, fit, meta)


def _publish(directory: Path, tmp: Path, fit: _Fit, meta: dict[str, Any]) -> ShardedPrepared:
    """The encoded tables, the written shards (moved from ``tmp``) and, last, ``meta.json`` into ``directory``."""
    (directory / "impressions.parquet").unlink(missing_ok=True)
    write_parquet(fit.users_enc, directory / "users.parquet")
    write_parquet(fit.items_enc, directory / "items.parquet")
    shutil.rmtree(directory / SHARDS, ignore_errors=True)
    (directory / SHARDS).parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, directory / SHARDS)
    write_json(meta, directory / "meta.json")
    return ShardedPrepared(directory, fit.users_enc, fit.items_enc, read_json(directory / "meta.json"))
