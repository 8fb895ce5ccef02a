"""Real logs read in chunks into log shards of whole users: the out-of-core path of the real-data loaders.

:func:`dmtl.sources.generic.load_generic` and :func:`dmtl.sources.kuairand.load.load_kuairand` read a log whole. Here the same
files go through the same rules a chunk of ``data.shard_rows`` rows at a time, with memory bounded by one
chunk plus what grows with users, items and clicks:

1. **Read**: each impression file in chunks (pandas' chunked CSV reader, Parquet row batches); each chunk
   converted and checked by the loaders' own functions (:func:`dmtl.sources.generic.raw_impressions`,
   :func:`dmtl.sources.kuairand.load.log_raw`: an error names the file, the column, the line and the fix, as on the
   in-memory path) and appended to the bucket of its users (``user_id % n_buckets``, one Parquet file each).
   The rules over a whole file are applied once the file is read: its median clicked duration (the unit
   check), its time span (naming its first and last rows), one time unit throughout.
2. **Pre-flight**: the sizes the first pass measured (:class:`dmtl.schema.LogSize`) against the parameters
   (:func:`dmtl.checks.check_size`), before anything is prepared.
3. **Finalize**: each bucket through the loaders' row policies (:func:`dmtl.sources.ingest.policies.row_policies`: duplicates,
   time order, same-second repeats, durations) with the whole log's first time and day, into a log shard
   (:class:`dmtl.log_shards.LogShards`) that :func:`dmtl.shard_prepare.prepare_shards` prepares.

The log shards hold the rows of :func:`~dmtl.sources.generic.load_generic` / :func:`~dmtl.sources.kuairand.load.load_kuairand`
(``tests/test_shards.py``), with :data:`dmtl.log_shards.LOG_ROW` ordering simultaneous rows as the whole log
orders them; the policy counts are theirs, except ``rows_out_of_time_order``, counted within each bucket.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dmtl.log_shards import LOG_ROW, LogShards
from dmtl.schema import DataError, LoadOptions, LogSize
from dmtl.sources.ingest.convert import MS_THRESHOLD, check_duration_units, check_times
from dmtl.sources.ingest.policies import row_policies
from dmtl.sources.ingest.reading import encoding_error, row_label
from dmtl.sources.ingest.side_features import attach_features

_ROW = "_row"  # the row's place in the files read, in order (LOG_ROW is built from it)

_ROW_BITS = 40  # rows < 2**40; the millisecond within the second sits above them in LOG_ROW


def count_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    lines = max(head.count(b"\n"), 1)
    return int(size / (len(head) / lines)) - 1


def iter_table(
    path: Path,
    usecols: Sequence[str],
    chunk_rows: int,
    as_text: Sequence[str] = (),
    encoding: str = "utf-8",
) -> Iterator[pd.DataFrame]:
    """``usecols`` of a CSV or Parquet file, ``chunk_rows`` rows at a time; each chunk's index holds its rows'
    places in the file (0-based), so :func:`dmtl.sources.ingest.reading.row_label` names their lines.

    Raises:
        DataError: the text is not valid ``encoding`` (naming the first bad line and the fix).
    """
    cols = list(dict.fromkeys(usecols))
    if path.suffix == ".parquet":
        start = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=cols):
            frame = batch.to_pandas()
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            yield frame
        return
    dtype = {c: "str" for c in as_text} or None
    try:
        reader = pd.read_csv(
            path, usecols=cols, dtype=dtype, chunksize=chunk_rows, encoding=encoding, low_memory=False
        )
        with reader:
            yield from reader  # pandas numbers the rows of every chunk on from the previous one's
    except UnicodeDecodeError:
        raise encoding_error(path, encoding) from None


@dataclass
class FileFacts:
    """What the rules over a whole file need, gathered chunk by chunk."""

    path: Path
    rows: int = 0
    clicked_seconds: list[np.ndarray] = field(default_factory=list)
    first: tuple[int, int] | None = None  # (time_ms, row) of the earliest impression
    last: tuple[int, int] | None = None
    unit: tuple[str, str] | None = None  # numeric times: ("s" | "ms", an example "line n: value")

    def add(self, raw: pd.DataFrame, rows: np.ndarray) -> None:
        self.rows += len(raw)
        click = raw["click"].to_numpy() == 1
        self.clicked_seconds.append(raw["duration"].to_numpy()[click])
        time_ms = raw["time_ms"].to_numpy()
        if len(time_ms):
            lo, hi = int(np.argmin(time_ms)), int(np.argmax(time_ms))
            if self.first is None or time_ms[lo] < self.first[0]:
                self.first = (int(time_ms[lo]), int(rows[lo]))
            if self.last is None or time_ms[hi] > self.last[0]:
                self.last = (int(time_ms[hi]), int(rows[hi]))

    def check_unit(self, values: pd.Series, column: str) -> None:
        """One time unit in the whole file: each chunk is read as seconds or milliseconds by its own values
        (:func:`dmtl.sources.ingest.convert.to_epoch_ms_and_day`), which would read a file that switches unit between two
        chunks without a word; the in-memory rule refuses such a file, and so does this."""
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        numbers = values if numeric else pd.to_numeric(values, errors="coerce")
        if not pd.api.types.is_numeric_dtype(numbers) or numbers.isna().any() or len(numbers) == 0:
            return
        x = numbers.to_numpy(dtype="float64")
        unit = "ms" if bool((np.abs(x) >= MS_THRESHOLD).any()) else "s"
        example = f"{row_label(self.path, values.index[0])}: {x[0]:.0f}"
        if self.unit is None:
            self.unit = (unit, example)
        elif self.unit[0] != unit:
            names = {"s": "seconds", "ms": "milliseconds"}
            raise DataError(
                self.path,
                column,
                f"mixes epoch seconds and epoch milliseconds, e.g. {self.unit[1]} ({names[self.unit[0]]}); "
                f"{example} ({names[unit]})",
                "store every time in one unit: multiply the seconds by 1000 (or divide the milliseconds by "
                "1000) before loading",
            )

    def check(self, duration_column: str, time_column: str, options: LoadOptions) -> None:
        """The whole-file rules: the median clicked duration, the time span."""
        clicked = np.concatenate(self.clicked_seconds) if self.clicked_seconds else np.zeros(0)
        check_duration_units(clicked, np.ones(len(clicked), np.int8), self.path, duration_column, options)
        if self.first is not None and self.last is not None:
            times = np.array([self.first[0], self.last[0]], dtype=np.int64)
            check_times(times, self.path, time_column, options, np.array([self.first[1], self.last[1]]))
        self.clicked_seconds = []


class _Buckets:
    """Rows appended to the bucket of their user (``user_id % n``), one Parquet file per bucket."""

    def __init__(self, directory: Path, n: int):
        self.directory, self.n = directory, n
        self.writers: dict[int, pq.ParquetWriter] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, raw: pd.DataFrame) -> None:
        bucket = raw["user_id"].to_numpy() % self.n
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(self.n + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            table = pa.Table.from_pandas(raw.iloc[order[bounds[b] : bounds[b + 1]]], preserve_index=False)
            if b not in self.writers:
                self.writers[b] = pq.ParquetWriter(self.directory / f"bucket-{b:05d}.parquet", table.schema)
            self.writers[b].write_table(table)

    def close(self) -> list[Path]:
        for writer in self.writers.values():
            writer.close()
        return [self.directory / f"bucket-{b:05d}.parquet" for b in sorted(self.writers)]


@dataclass
class _LogFacts:
    """The whole log's facts from the first pass: its origins, its ids and the sizes pre-flight checks."""

    rows: int = 0
    clicks: int = 0
    clicked_seconds: float = 0.0
    time_origin_ms: int | None = None
    day_origin: int | None = None
    last_day: int | None = None
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted, unique
    items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted, unique
    item_n: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # impressions of each
    days: set[int] = field(default_factory=set)

    def add(self, raw: pd.DataFrame) -> None:
        self.rows += len(raw)
        click = raw["click"].to_numpy() == 1
        self.clicks += int(click.sum())
        self.clicked_seconds += float(raw["duration"].to_numpy()[click].sum())
        if len(raw):
            t, d = int(raw["time_ms"].min()), raw["cal_day"].to_numpy()
            self.time_origin_ms = t if self.time_origin_ms is None else min(self.time_origin_ms, t)
            self.day_origin = int(d.min()) if self.day_origin is None else min(self.day_origin, int(d.min()))
            self.last_day = int(d.max()) if self.last_day is None else max(self.last_day, int(d.max()))
            self.days.update(np.unique(d).tolist())
        self.users = np.union1d(self.users, raw["user_id"].to_numpy())
        items, n = np.unique(raw["item_id"].to_numpy(), return_counts=True)
        merged, inverse = np.unique(np.concatenate([self.items, items]), return_inverse=True)
        weights = np.concatenate([self.item_n, n])
        self.items, self.item_n = merged, np.bincount(inverse, weights, len(merged)).astype(np.int64)


@dataclass
class ChunkedLog:
    """One chunked read of a log: where it writes, its buckets and facts."""

    scratch: Path
    n_buckets: int
    buckets: _Buckets = field(init=False)
    facts: _LogFacts = field(default_factory=_LogFacts)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.buckets = _Buckets(self.scratch / "buckets", self.n_buckets)

    def add(self, raw: pd.DataFrame) -> None:
        raw = raw.assign(**{_ROW: np.arange(self.facts.rows, self.facts.rows + len(raw), dtype=np.int64)})
        self.facts.add(raw)
        self.buckets.add(raw)

    def finish(
        self,
        users: pd.DataFrame | None,
        items: pd.DataFrame | None,
        *,
        source: str,
        log_file: Path,
        user_file: Path | None,
        item_file: Path | None,
        meta: dict,
        options: LoadOptions,
    ) -> LogShards:
        """:func:`dmtl.sources.ingest.policies.finalize_feed_log` bucket by bucket: the log shards and their metadata."""
        facts = self.facts
        if facts.rows == 0:
            raise DataError(log_file, None, "no impressions to load", "check the files and the date range")
        counts = meta.setdefault("policy_counts", self.counts)
        meta["as_read"] = {
            "rows": facts.rows,
            "click_rate": facts.clicks / facts.rows,
            "clicked_duration_mean_s": facts.clicked_seconds / facts.clicks if facts.clicks else 0.0,
        }
        users = attach_features(users, facts.users, "user_id", user_file, counts)
        items = attach_features(items, facts.items, "item_id", item_file, counts)
        shards, kept, clicks, clicked_seconds = [], 0, 0, 0.0
        out = self.scratch / "log"
        out.mkdir(parents=True, exist_ok=True)
        for k, path in enumerate(self.buckets.close()):
            raw = pd.read_parquet(path)
            imp = row_policies(
                raw,
                counts,
                meta,
                options,
                log_file,
                facts.time_origin_ms,
                facts.day_origin,
                ("time_ms", _ROW),
            )
            # Simultaneous rows (same day and second) in the order the whole log has them: by millisecond,
            # then by their place in the files (dmtl.log_shards.LOG_ROW).
            ms = (imp["time_ms"].to_numpy() - facts.time_origin_ms) % 1000
            imp[LOG_ROW] = (ms << _ROW_BITS) | imp[_ROW].to_numpy()
            imp = imp.drop(columns=["time_ms", _ROW])
            click = imp["click"].to_numpy() == 1
            kept += len(imp)
            clicks += int(click.sum())
            clicked_seconds += float(imp["duration"].to_numpy()[click].astype(np.float64).sum())
            shards.append(out / f"part-{k:05d}.parquet")
            imp.to_parquet(shards[-1], index=False)
            path.unlink()
        for name, n in counts.items():
            if n:
                logging_info(log_file, name, n, meta.get("rows_read", facts.rows))
        epoch = np.datetime64("1970-01-01", "D")
        meta["missing_feature_values"] = {
            name: {c: int(n) for c in t.columns if c != key and (n := (t[c].to_numpy() == "missing").sum())}
            for name, key, t in (("users", "user_id", users), ("items", "item_id", items))
        }
        meta.update(
            rows_kept=kept,
            first_date=str(epoch + facts.day_origin),
            last_date=str(epoch + facts.last_day),
            n_users=len(users),
            n_items=len(items),
            click_rate=clicks / kept,
            clicked_duration_mean_s=clicked_seconds / clicks if clicks else 0.0,
            storage={"shards": len(shards)},
        )
        return LogShards(shards, users, items, source, meta)

    def size(self, where: str, user_features: Sequence[str], item_features: Sequence[str]) -> LogSize:
        """The log's sizes (before the policies, as the in-memory scans measure them)."""
        per_item = self.facts.item_n
        return LogSize(
            where=where,
            n_users=int(self.facts.users.size),
            n_items=int(per_item.size),
            n_days=len(self.facts.days),
            n_clicks=self.facts.clicks,
            max_item_impressions=int(per_item.max()) if per_item.size else 0,
            user_features=tuple(user_features),
            item_features=tuple(item_features),
        )


def logging_info(log_file: Path, name: str, n: int, rows: int) -> None:
    import logging

    logging.getLogger("dmtl.sources.ingest.policies").info("%s: %s = %d of %d rows", log_file, name, n, rows)


def bucket_count(rows: int, shard_rows: int) -> int:
    return max(1, math.ceil(rows / max(shard_rows, 1)))
