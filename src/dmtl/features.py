"""From a :class:`~dmtl.schema.FeedLog` to model-ready integer features, split by time.

The split is by day (docs/protocol.md section 4: no random row split): the last ``test_days`` days are the test
period, the ``val_days`` before them validate (early stopping, tuning), the rest train. Every categorical
feature is encoded to ``0..n``, with 0 the out-of-vocabulary bucket: ids unseen in training map to 0, so a
test user or item the models never trained on gets the shared OOV embedding instead of a random row.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmtl.io import read_json, write_json, write_parquet
from dmtl.labels import apply_long_read, fit_long_read, resolve_rule
from dmtl.schema import (
    ITEM_LENGTH,
    RESERVED_FEATURE_NAMES,
    DataError,
    FeedLog,
    check_feed_log,
    coerce_impressions,
    context_columns,
)

log = logging.getLogger(__name__)

SPLITS = {"train": 0, "val": 1, "test": 2}
MAX_POSITION_BUCKET = 10
MAX_CONTEXT_BUCKET = 10
"""Context columns ``ctx_<name>`` of the log are encoded like position: ``min(value, 9) + 1``, 0 = unknown."""


@dataclass
class Prepared:
    """Model-ready data: encoded impressions, encoded user and item tables, and the metadata.

    ``impressions`` has one row per impression with ``user_idx`` / ``item_idx`` (rows of ``users`` /
    ``items``), the labels ``click``, ``long_read``, ``duration``, the context features (``ctx_position``,
    then the log's own ``ctx_<name>`` columns; names in ``meta["context_features"]``, vocabulary sizes in
    ``meta["context_cardinalities"]``) and ``split`` (0 train, 1 val, 2 test). ``users`` and ``items`` hold one encoded integer column per
    feature, the id first; their row order is the corpus order used by retrieval.
    """

    impressions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def user_cardinalities(self) -> list[int]:
        return self.meta["user_cardinalities"]

    @property
    def item_cardinalities(self) -> list[int]:
        return self.meta["item_cardinalities"]

    @property
    def context_cardinalities(self) -> list[int]:
        return self.meta["context_cardinalities"]

    @property
    def cardinalities(self) -> dict[str, list[int]]:
        """Vocabulary sizes of the ``user``, ``item`` and ``context`` fields: what the models are built with."""
        return {
            "user": self.user_cardinalities,
            "item": self.item_cardinalities,
            "context": self.context_cardinalities,
        }

    @property
    def tau_seconds(self) -> float:
        return float(self.meta["tau_seconds"])

    def split_mask(self, name: str) -> np.ndarray:
        return self.impressions["split"].to_numpy() == SPLITS[name]

    def write(self, directory: str | Path) -> None:
        directory = Path(directory)
        shutil.rmtree(directory / "shards", ignore_errors=True)  # an earlier run's out-of-core layout
        write_parquet(self.impressions, directory / "impressions.parquet")
        write_parquet(self.users, directory / "users.parquet")
        write_parquet(self.items, directory / "items.parquet")
        write_json(self.meta, directory / "meta.json")

    @classmethod
    def read(cls, directory: str | Path) -> Prepared:
        """The prepared data in ``directory``; prepared shards (:mod:`dmtl.shards`) are read whole, every
        shard concatenated (the stages stream them instead: :func:`dmtl.shards.read_prepared`)."""
        directory = Path(directory)
        meta = read_json(directory / "meta.json")
        if meta.get("storage") == "shards":  # train, val, test: each split's shards in order
            files = [directory / "shards" / f["file"] for split in SPLITS for f in meta["shards"][split]]
            impressions = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
            users, items = (
                pd.read_parquet(directory / "users.parquet"),
                pd.read_parquet(directory / "items.parquet"),
            )
            return cls(impressions, users, items, meta)
        return cls(
            impressions=pd.read_parquet(directory / "impressions.parquet"),
            users=pd.read_parquet(directory / "users.parquet"),
            items=pd.read_parquet(directory / "items.parquet"),
            meta=read_json(directory / "meta.json"),
        )


def split_days(days: np.ndarray, val_days: int, test_days: int, source: str = "log") -> np.ndarray:
    """Assign each impression to train (0), val (1) or test (2) by its day; the latest days are test."""
    unique = np.unique(days)
    if len(unique) < val_days + test_days + 1:
        raise DataError(
            source,
            "day",
            f"the log spans {len(unique)} day(s) but val_days={val_days} + test_days={test_days} "
            "leave no training day",
            "use a longer log or lower data.val_days / data.test_days",
        )
    test_start = unique[-test_days]
    val_start = unique[-(test_days + val_days)]
    return np.where(days >= test_start, 2, np.where(days >= val_start, 1, 0)).astype(np.int8)


def choose_tau(
    duration: np.ndarray, click: np.ndarray, is_train: np.ndarray, rule: str | float, source: str = "log"
) -> float:
    """The long-read threshold tau in seconds.

    ``'mean'`` is the paper's rule (docs/protocol.md section 1): the mean duration of clicked impressions, computed
    on the training split only so the test period never leaks into a label definition. A number is a fixed
    threshold in seconds.

    Raises:
        ValueError: ``rule`` is neither ``'mean'`` nor a finite number >= 0.
        DataError: ``'mean'`` with no clicked impression in the training split.
    """
    if rule == "mean":
        clicked = duration[(click == 1) & is_train]
        if clicked.size == 0:
            raise DataError(
                source,
                "click",
                "no clicked impression in the training split, so tau = mean clicked duration is undefined",
                "check the click column, or give data.tau in seconds",
            )
        return float(clicked.mean())
    if isinstance(rule, bool) or not isinstance(rule, int | float) or not np.isfinite(rule) or rule < 0:
        raise ValueError(f"tau = {rule!r} is not valid; use 'mean' or a number of seconds >= 0")
    return float(rule)


def _encode_column(values: pd.Series, known: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Codes 1..n for each distinct value (0 = missing or not in ``known``) and the cardinality n + 1."""
    vocab_source = values if known is None else pd.Series(known)
    vocab = pd.Index(pd.unique(vocab_source.dropna()))
    try:
        vocab = vocab.sort_values()  # stable codes whatever the row order
    except TypeError:
        vocab = pd.Index(sorted(vocab.astype(str)))
        values = values.astype(str)
    codes = vocab.get_indexer(values) + 1  # -1 (unknown) -> 0
    return codes.astype(np.int64), len(vocab) + 1


def _encode_table(
    table: pd.DataFrame, id_col: str, train_ids: np.ndarray
) -> tuple[pd.DataFrame, list[int], list[str]]:
    out = {}
    cards = []
    codes, card = _encode_column(table[id_col], known=train_ids)
    out[id_col] = codes
    cards.append(card)
    names = [id_col]
    # A feature value carried only by users/items first seen after training (a new publisher, say) would
    # get an embedding row no training step ever moves: it joins the OOV bucket 0 instead, like unseen ids.
    in_train = table[id_col].isin(train_ids).to_numpy()
    for col in table.columns:
        if col == id_col:
            continue
        codes, card = _encode_column(table[col], known=table[col].to_numpy()[in_train])
        out[col] = codes
        cards.append(card)
        names.append(col)
    return pd.DataFrame(out), cards, names


@dataclass(frozen=True)
class LabelRule:
    """How ``y_d`` is decided (:mod:`dmtl.labels`): ``data.long_read`` and its settings."""

    rule: str = "duration"
    completion_threshold: float = 1.0
    length_bands: int = 5


def check_feature_names(source: str, users: pd.DataFrame, items: pd.DataFrame) -> None:
    """Refuse a feature column whose name the study uses internally (in memory and sharded preparation)."""
    for table in (users, items):
        reserved = [c for c in table.columns if c in RESERVED_FEATURE_NAMES]
        if reserved:
            # prepare() adds raw_user_id / raw_item_id beside the features: a feature of that name would be
            # overwritten by raw ids and then embedded as if it were a code (an index out of range).
            raise DataError(
                source,
                reserved[0],
                f"feature column '{reserved[0]}' has a name the study uses internally "
                f"(reserved: {list(RESERVED_FEATURE_NAMES)})",
                f"rename the column, e.g. to '{reserved[0]}_feature'",
            )


def _impressions(feed: FeedLog) -> pd.DataFrame:
    """The schema-checked impressions without repeats, sorted by day, then time."""
    # Every source goes through the same checks here, the simulator included, so no loader can hand the
    # models a log that breaks the schema.
    imp = coerce_impressions(feed.impressions, feed.source)
    check_feed_log(FeedLog(imp, feed.users, feed.items, feed.source), feed.source)
    check_feature_names(feed.source, feed.users, feed.items)
    key = ["user_id", "item_id", "time"]
    repeated = imp.duplicated(key)
    if repeated.any():
        # One impression counted twice would weigh twice in training and in every test metric.
        raise DataError(
            feed.source,
            ", ".join(key),
            f"{int(repeated.sum())} impressions repeat an earlier (user_id, item_id, time)",
            "drop the duplicates (the real-data loaders keep the first: docs/data_formats.md policies 3-4)",
        )
    return imp.sort_values(["day", "time"], kind="stable").reset_index(drop=True)


def _context(imp: pd.DataFrame) -> dict[str, np.ndarray]:
    """Position and the log's own context columns (:mod:`dmtl.schema`), as small vocabularies: no value is
    learnt from the test period; unknown (negative) -> 0."""
    pos = imp["position"].to_numpy().astype(np.int64)
    out = {"ctx_position": np.where(pos < 0, 0, np.minimum(pos, MAX_POSITION_BUCKET - 1) + 1)}
    for name in context_columns(imp.columns):
        v = imp[name].to_numpy(np.int64)
        out[name] = np.where(v < 0, 0, np.minimum(v, MAX_CONTEXT_BUCKET - 1) + 1)
    return out


def prepare(
    feed: FeedLog,
    val_days: int = 1,
    test_days: int = 2,
    tau: str | float = "mean",
    labels: LabelRule | None = None,
) -> Prepared:
    """Split ``feed`` by day, set the long-read label and encode every feature (vectorised).

    Args:
        feed: the log in the generic schema (any source); its items may carry ``length_s``.
        val_days: days before the test period that validate (early stopping, tuning).
        test_days: the last days of the log: the test period.
        tau: ``'mean'`` (mean clicked training duration, the paper's rule) or seconds.
        labels: the long-read rule (:mod:`dmtl.labels`); the paper's duration rule when ``None``.

    Returns:
        The encoded impressions (sorted by day, then time), user and item tables, and the metadata.

    Raises:
        DataError: a missing or mistyped impression column, a broken schema invariant
            (:func:`dmtl.schema.check_feed_log`), a feature column with a reserved name, a repeated
            (user, item, time) impression, a split left empty by the day counts, or a length-aware rule on
            items without a length.
        ValueError: a bad ``tau``.
    """
    imp = _impressions(feed)
    day = imp["day"].to_numpy()
    split = split_days(day, val_days, test_days, feed.source)
    for name, code in SPLITS.items():
        if not (split == code).any():
            raise DataError(
                feed.source, "day", f"the {name} split is empty", "check data.val_days / data.test_days"
            )
    click = imp["click"].to_numpy().astype(np.int8)
    duration = imp["duration"].to_numpy().astype(np.float32)
    is_train = split == 0
    tau_seconds = choose_tau(duration, click, is_train, tau, feed.source)
    items = feed.items.reset_index(drop=True)
    labels = labels or LabelRule()
    has_length = ITEM_LENGTH in items.columns
    rule = resolve_rule(labels.rule, feed.source, has_length)
    item_idx = pd.Index(items["item_id"]).get_indexer(imp["item_id"])
    length = items[ITEM_LENGTH].to_numpy(np.float64)[item_idx] if has_length else None
    label_info = fit_long_read(
        duration, click, is_train, length, rule, tau_seconds, labels.completion_threshold, labels.length_bands
    )
    long_read = apply_long_read(duration, click, length, label_info)
    return _encode(
        feed,
        imp,
        items.drop(columns=[ITEM_LENGTH], errors="ignore"),
        split,
        long_read,
        tau_seconds,
        tau,
        label_info,
    )


def _encode(
    feed: FeedLog,
    imp: pd.DataFrame,
    items: pd.DataFrame,
    split: np.ndarray,
    long_read: np.ndarray,
    tau_seconds: float,
    tau: str | float,
    label_info: dict[str, Any],
) -> Prepared:
    """Encode users, items and context; assemble the prepared impressions and their metadata."""
    day, is_train = imp["day"].to_numpy(), split == 0
    duration = imp["duration"].to_numpy().astype(np.float32)
    click = imp["click"].to_numpy().astype(np.int8)
    users = feed.users.reset_index(drop=True)
    train_users = np.unique(imp["user_id"].to_numpy()[is_train])
    train_items = np.unique(imp["item_id"].to_numpy()[is_train])
    users_enc, items_enc, table_meta = encode_tables(users, items, train_users, train_items)
    user_idx = pd.Index(users["user_id"]).get_indexer(imp["user_id"])
    item_idx = pd.Index(items["item_id"]).get_indexer(imp["item_id"])
    encoded = encode_impressions(imp, split, long_read, user_idx, item_idx)
    n_oov_test_users = int((users_enc["user_id"].to_numpy()[user_idx[split == 2]] == 0).sum())
    n_oov_test_items = int((items_enc["item_id"].to_numpy()[item_idx[split == 2]] == 0).sum())
    if n_oov_test_users or n_oov_test_items:
        log.info(
            "test impressions with ids unseen in training (out-of-vocabulary bucket): %d users, %d items",
            n_oov_test_users,
            n_oov_test_items,
        )
    meta = {
        **label_meta(feed.source, tau_seconds, tau, label_info, duration[(click == 1) & is_train]),
        **table_meta,
        **context_meta(imp.columns),
        "split_days": {name: sorted(np.unique(day[split == code]).tolist()) for name, code in SPLITS.items()},
        "n_impressions": {name: int((split == code).sum()) for name, code in SPLITS.items()},
        "n_users": len(users),
        "n_items": len(items),
        "oov_test_impressions": {"users": n_oov_test_users, "items": n_oov_test_items},
    }
    return Prepared(encoded, users_enc, items_enc, meta)


def encode_tables(
    users: pd.DataFrame, items: pd.DataFrame, train_users: np.ndarray, train_items: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The encoded user and item tables (codes from the training ids: docs/protocol.md section 4) with their
    raw ids beside, and their part of the metadata (feature names and cardinalities)."""
    users_enc, user_cards, user_names = _encode_table(users, "user_id", train_users)
    items_enc, item_cards, item_names = _encode_table(items, "item_id", train_items)
    # The raw ids travel beside the encoded features (not fed to models): evaluation maps corpus rows back
    # to the source's ids, e.g. to ask the simulator's oracle about them.
    users_enc["raw_user_id"] = users["user_id"].to_numpy()
    items_enc["raw_item_id"] = items["item_id"].to_numpy()
    meta = {
        "user_features": user_names,
        "item_features": item_names,
        "user_cardinalities": user_cards,
        "item_cardinalities": item_cards,
    }
    return users_enc, items_enc, meta


def encode_impressions(
    imp: pd.DataFrame, split: np.ndarray, long_read: np.ndarray, user_idx: np.ndarray, item_idx: np.ndarray
) -> pd.DataFrame:
    """The prepared impressions (:class:`Prepared`) of the schema-checked, sorted rows ``imp``."""
    context = _context(imp)
    return pd.DataFrame(
        {
            "user_id": imp["user_id"].to_numpy(),
            "item_id": imp["item_id"].to_numpy(),
            "day": imp["day"].to_numpy(),
            "position": imp["position"].to_numpy(),
            "user_idx": user_idx.astype(np.int64),
            "item_idx": item_idx.astype(np.int64),
            **{n: v.astype(np.int64) for n, v in context.items()},
            "click": imp["click"].to_numpy().astype(np.int8),
            "duration": imp["duration"].to_numpy().astype(np.float32),
            "long_read": long_read,
            "split": split,
        }
    )


def label_meta(
    source: str, tau_seconds: float, tau: str | float, label_info: dict[str, Any], clicked_train: np.ndarray
) -> dict[str, Any]:
    """The metadata of the labels: tau, the long-read rule and the clicked training durations' mean and
    99th percentile (``clicked_train``: float32, in the log's order, which the mean depends on)."""
    return {
        "source": source,
        "tau_seconds": tau_seconds,
        "tau_rule": "mean clicked training duration" if tau == "mean" else "fixed seconds",
        **label_info,
        "mean_clicked_train_duration": float(clicked_train.mean()) if clicked_train.size else 1.0,
        "duration_cap_seconds": float(np.quantile(clicked_train, 0.99)) if clicked_train.size else 1.0,
    }


def context_meta(columns: Any) -> dict[str, Any]:
    """The context features of a log with these impression columns and their vocabulary sizes."""
    names = ["ctx_position", *context_columns(columns)]
    return {
        "context_features": names,
        "context_cardinalities": [MAX_POSITION_BUCKET + 1] + [MAX_CONTEXT_BUCKET + 1] * (len(names) - 1),
    }
