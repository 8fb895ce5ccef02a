"""The row policies every real-data loader applies before the log enters the study (docs/data_formats.md).

Duplicates, order, click/duration consistency and duration caps: anything repaired is counted in
``FeedLog.meta["policy_counts"]`` and logged with :mod:`logging`, never changed silently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.schema import (
    DataError,
    FeedLog,
    LoadOptions,
    check_feed_log,
    coerce_impressions,
)
from dmtl.sources.ingest.side_features import MISSING, attach_features

logger = logging.getLogger(__name__)


# Internal impression frame every loader builds before :func:`finalize_feed_log`: ``cal_day`` is a calendar
# day number (any origin), ``time_ms`` a timestamp in milliseconds (any origin).
RAW_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "cal_day", "time_ms", "position", "click", "duration")


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


def add_count(counts: dict[str, int], name: str, n: int) -> None:
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
    (:mod:`dmtl.sources.ingest.chunked`) apply this to each bucket of users with the log's origins, adding to ``counts``.
    Every rule compares rows of one user only except the time-order count (``rows_out_of_time_order``),
    which a bucket counts among its own rows.
    """
    # Identical in every column read (a carried column that is not one, e.g. a row number, does not count).
    exact = raw.duplicated([c for c in raw.columns if c in RAW_COLUMNS or c not in keep]).to_numpy()
    raw = raw.loc[~exact]
    repeated = raw.duplicated(["user_id", "item_id", "time_ms"]).to_numpy()
    raw = raw.loc[~repeated]
    add_count(counts, "exact_duplicate_rows_dropped", int(exact.sum()))
    add_count(counts, "duplicate_key_rows_dropped", int(repeated.sum()))

    time_ms = raw["time_ms"].to_numpy()
    late = time_ms[1:] < np.maximum.accumulate(time_ms)[:-1]
    add_count(counts, "rows_out_of_time_order", int(late.sum()))
    raw = raw.iloc[np.argsort(time_ms, kind="stable")].reset_index(drop=True)
    # The schema's time is whole seconds: two impressions of one item to one user within the same second
    # (distinct in milliseconds) would become duplicates downstream, so the first is kept here too.
    second = (raw["time_ms"].to_numpy() - time_origin_ms) // 1000
    same_second = pd.DataFrame({"u": raw["user_id"].to_numpy(), "i": raw["item_id"].to_numpy(), "s": second})
    same_second = same_second.duplicated().to_numpy()
    add_count(counts, "same_second_duplicate_rows_dropped", int(same_second.sum()))
    raw = raw[~same_second].reset_index(drop=True)

    click = raw["click"].to_numpy()
    duration = raw["duration"].to_numpy(dtype="float64")
    nonclick_played = (click == 0) & (duration > 0)
    add_count(counts, "nonclick_durations_zeroed", int(nonclick_played.sum()))
    add_count(counts, "clicks_with_zero_duration", int(((click == 1) & (duration == 0)).sum()))
    duration = np.where(nonclick_played, 0.0, duration)
    # A read longer than max_duration_s (default 4 h) is a session left open or a clock fault, not reading
    # time; uncapped, one such row moves tau (the mean) and every long-read label with it.
    over = duration > options.max_duration_s
    add_count(counts, "durations_capped", int(over.sum()))
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
