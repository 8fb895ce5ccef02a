"""Real logs read in chunks into log shards of whole users: the out-of-core path of the real-data loaders.

:func:`dmtl.generic.load_generic` and :func:`dmtl.kuairand.load_kuairand` read a log whole. Here the same
files go through the same rules a chunk of ``data.shard_rows`` rows at a time, with memory bounded by one
chunk plus what grows with users, items and clicks:

1. **Read**: each impression file in chunks (pandas' chunked CSV reader, Parquet row batches); each chunk
   converted and checked by the loaders' own functions (:func:`dmtl.generic.raw_impressions`,
   :func:`dmtl.kuairand.log_raw`: an error names the file, the column, the line and the fix, as on the
   in-memory path) and appended to the bucket of its users (``user_id % n_buckets``, one Parquet file each).
   The rules over a whole file are applied once the file is read: its median clicked duration (the unit
   check), its time span (naming its first and last rows), one time unit throughout.
2. **Pre-flight**: the sizes the first pass measured (:class:`dmtl.schema.LogSize`) against the parameters
   (:func:`dmtl.checks.check_size`), before anything is prepared.
3. **Finalize**: each bucket through the loaders' row policies (:func:`dmtl.generic.row_policies`: duplicates,
   time order, same-second repeats, durations) with the whole log's first time and day, into a log shard
   (:class:`dmtl.sharding.LogShards`) that :func:`dmtl.sharding.prepare_shards` prepares.

The log shards hold the rows of :func:`~dmtl.generic.load_generic` / :func:`~dmtl.kuairand.load_kuairand`
(``tests/test_shards.py``), with :data:`dmtl.sharding.LOG_ROW` ordering simultaneous rows as the whole log
orders them; the policy counts are theirs, except ``rows_out_of_time_order``, counted within each bucket.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dmtl.generic import (
    MS_THRESHOLD,
    attach_features,
    check_duration_units,
    check_times,
    encoding_error,
    row_label,
    row_policies,
)
from dmtl.schema import DataError, LoadOptions, LogSize
from dmtl.sharding import LOG_ROW, LogShards

_ROW = "_row"  # the row's place in the files read, in order (LOG_ROW is built from it)
_ROW_BITS = 40  # rows < 2**40; the millisecond within the second sits above them in LOG_ROW


# ------------------------------------------------------------------------------------------- reading
def estimate_rows(data: Any) -> int:
    """About how many impressions the configured real log holds, without reading it: a Parquet file's row
    count, a CSV file's size over the mean length of its first lines; 0 when the files cannot be found."""
    try:
        paths = _impression_files(data)
    except (DataError, OSError, ValueError):
        return 0
    return sum(_file_rows(p) for p in paths)


def _impression_files(data: Any) -> list[Path]:
    if data.source == "kuairand":
        from dmtl.kuairand import _log_files, _select

        kinds, date_range, variant, files, data_dir = _select(data.path, data.kuairand_logs, None, None)
        return [f.path for kind in kinds for f in _log_files(files, kind, variant, data_dir, date_range)]
    from dmtl.generic import _find_table

    path = _find_table(Path(data.path), "impressions", required=True)
    return [path] if path is not None else []


def _file_rows(path: Path) -> int:
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
    places in the file (0-based), so :func:`dmtl.generic.row_label` names their lines.

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
class _FileFacts:
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
        (:func:`dmtl.generic.to_epoch_ms_and_day`), which would read a file that switches unit between two
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


# -------------------------------------------------------------------------------------------- loading
@dataclass
class _Chunked:
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
        """:func:`dmtl.generic.finalize_feed_log` bucket by bucket: the log shards and their metadata."""
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
            # then by their place in the files (dmtl.sharding.LOG_ROW).
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

    logging.getLogger("dmtl.generic").info("%s: %s = %d of %d rows", log_file, name, n, rows)


def _n_buckets(rows: int, shard_rows: int) -> int:
    return max(1, math.ceil(rows / max(shard_rows, 1)))


def load_generic_shards(
    directory: str | Path,
    scratch: str | Path,
    shard_rows: int,
    columns: Mapping[str, str] | None = None,
    options: LoadOptions | None = None,
    check: Callable[[LogSize], None] | None = None,
) -> LogShards:
    """:func:`dmtl.generic.load_generic` in chunks (module docstring): the log as shards of whole users.

    Args:
        directory: the generic-format folder.
        scratch: an empty folder for the buckets and the shards (the caller removes it).
        shard_rows: rows per chunk read and per bucket (about).
        columns: as :func:`~dmtl.generic.load_generic`'s.
        options: the CSV encoding and the plausibility thresholds.
        check: called with the log's sizes after the first pass (the pre-flight checks), before the buckets
            are finalized.
    """
    from dmtl import generic as G

    options = options or LoadOptions()
    directory, scratch = Path(directory), Path(scratch)
    path, mapping = G._impression_columns(directory, columns, options.encoding)
    text = [mapping[c] for c in ("time", "day") if c in mapping]
    run = _Chunked(scratch, _n_buckets(_file_rows(path), shard_rows))
    meta: dict = {"files": [str(path)], "columns": dict(mapping), "policy_counts": run.counts}
    facts = _FileFacts(path)
    as_text = text if path.suffix == ".csv" else ()
    for frame in iter_table(path, list(mapping.values()), shard_rows, as_text, options.encoding):
        facts.check_unit(frame[mapping["time"]], mapping["time"])
        raw = G.raw_impressions(frame, mapping, path, options, run.counts, whole_log=False)
        facts.add(raw, frame.index.to_numpy())
        run.add(raw)
    if facts.rows == 0:
        raise DataError(path, None, "has a header but no data rows", G._NO_ROWS_FIX)
    facts.check(mapping["duration"], mapping["time"], options)
    meta["rows_read"] = facts.rows
    user_path = G._find_table(directory, "users", required=False)
    item_path = G._find_table(directory, "items", required=False)
    meta["files"] += [str(p) for p in (user_path, item_path) if p is not None]
    users = G._read_generic_features(user_path, "user_id", mapping["user_id"], options.encoding)
    items = G._read_generic_features(item_path, "item_id", mapping["item_id"], options.encoding)
    if check is not None:
        check(
            run.size(
                str(path),
                [c for c in (users.columns if users is not None else []) if c != "user_id"],
                [c for c in (items.columns if items is not None else []) if c != "item_id"],
            )
        )
    return run.finish(
        users,
        items,
        source=f"generic:{directory.name}",
        log_file=path,
        user_file=user_path,
        item_file=item_path,
        meta=meta,
        options=options,
    )


def load_kuairand_shards(
    directory: str | Path,
    scratch: str | Path,
    shard_rows: int,
    logs: Sequence[str] = ("standard",),
    date_range: tuple[int, int] | None = None,
    variant: str | None = None,
    *,
    length_bands: int = 5,
    options: LoadOptions | None = None,
    check: Callable[[LogSize], None] | None = None,
) -> LogShards:
    """:func:`dmtl.kuairand.load_kuairand` in chunks (module docstring): the log as shards of whole users.

    The arguments are :func:`~dmtl.kuairand.load_kuairand`'s, with ``scratch``, ``shard_rows`` and ``check``
    as in :func:`load_generic_shards`.
    """
    from dmtl import kuairand as K

    options = options or LoadOptions()
    if length_bands < 1:
        raise ValueError(f"length_bands must be >= 1, got {length_bands}")
    scratch = Path(scratch)
    kinds, date_range, variant, files, data_dir = K._select(directory, logs, date_range, variant)
    log_files = [f for kind in kinds for f in K._log_files(files, kind, variant, data_dir, date_range)]
    run = _Chunked(scratch, _n_buckets(sum(_file_rows(f.path) for f in log_files), shard_rows))
    read, rows_read = [], 0
    for f in log_files:
        K.check_log_header(f.path, options)
        facts = _FileFacts(f.path)
        n_read = 0
        cols = list(K.LOG_COLUMNS.values())
        for frame in iter_table(f.path, cols, shard_rows, encoding=options.encoding):
            n_read += len(frame)
            raw = K.log_raw(frame, f.path, date_range, run.counts, options, whole_log=False)
            rows = frame.index.to_numpy()
            if date_range is not None:  # log_raw kept the rows in the range: their places in the file
                date = frame["date"].to_numpy()
                rows = rows[(date >= date_range[0]) & (date <= date_range[1])]
            facts.add(raw, rows)
            run.add(raw)
        if n_read == 0:
            raise DataError(f.path, None, "has a header but no data rows", K._OFFICIAL_FIX)
        facts.check("play_time_ms", "time_ms", options)
        read.append(str(f.path))
        rows_read += n_read
    if run.facts.rows == 0:
        raise DataError(
            data_dir,
            "date",
            f"no impressions of logs {list(kinds)} within date_range {date_range}",
            "choose dates that the log files cover (their names give the ranges)",
        )
    users, items, edges, user_files, video_files = K.kuairand_tables(
        files,
        variant,
        data_dir,
        run.facts.users,
        run.facts.items,
        length_bands,
        options.encoding,
    )
    if check is not None:
        check(run.size(str(data_dir), K.USER_FEATURES, K.ITEM_FEATURES))
    meta = {
        "variant": variant,
        "logs": list(kinds),
        "date_range": list(date_range) if date_range is not None else None,
        "files": read + [str(f.path) for f in user_files + video_files],
        "rows_read": rows_read,
        "policy_counts": run.counts,
        "video_length_band_edges_s": edges,
    }
    return run.finish(
        users,
        items,
        source=f"kuairand-{variant}",
        log_file=Path(read[0]) if len(read) == 1 else data_dir,
        user_file=user_files[0].path,
        item_file=video_files[0].path,
        meta=meta,
        options=options,
    )


def load_source_shards(study: Any, scratch: str | Path) -> LogShards:
    """The configured real log (``data.source``: kuairand or generic) as log shards, its sizes checked
    against the parameters (:func:`dmtl.checks.check_size`) after the first pass."""
    from dmtl.checks import check_size

    data = study.data
    scratch = Path(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    options = LoadOptions.from_params(data)

    def check(size: LogSize) -> None:
        check_size(study, size)

    if data.source == "kuairand":
        return load_kuairand_shards(
            data.path, scratch, data.shard_rows, data.kuairand_logs, options=options, check=check
        )
    return load_generic_shards(data.path, scratch, data.shard_rows, data.columns or None, options, check)
