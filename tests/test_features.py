"""Split by day, tau, labels and feature encoding (dmtl.features), on logs small enough to check by hand."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmtl.features import (
    MAX_CONTEXT_BUCKET,
    MAX_POSITION_BUCKET,
    SPLITS,
    Prepared,
    choose_tau,
    prepare,
    split_days,
)
from dmtl.schema import DataError, FeedLog

COLUMNS = ("user_id", "item_id", "day", "time", "position", "click", "duration")

# Train days 0-1, validation day 2, test days 3-4 (val_days=1, test_days=2).
# user 3 and item 30 appear only in the test period; item 30's publisher 'p_new' is carried by no training item.
ROWS = [
    # user, item, day, time, position, click, duration
    (1, 10, 0, 0, 0, 1, 10.0),
    (1, 11, 0, 5, 1, 0, 0.0),
    (2, 10, 1, 100, 0, 1, 30.0),
    (2, 12, 1, 110, 3, 1, 20.0),  # exactly tau (20): not a long read
    (2, 11, 1, 120, -1, 0, 0.0),
    (1, 12, 2, 200, 0, 1, 1000.0),  # validation: must not move tau
    (2, 10, 3, 300, 12, 1, 500.0),  # test: must not move tau
    (3, 30, 3, 310, 0, 1, 5.0),
    (1, 30, 4, 400, 2, 0, 0.0),
    (3, 11, 4, 410, 0, 1, 0.0),  # a click with no reading time: kept as a click, not a long read
]


def make_feed(rows: list[tuple] = ROWS, **tables: pd.DataFrame) -> FeedLog:
    imp = pd.DataFrame(rows, columns=list(COLUMNS))
    users = tables.get("users", pd.DataFrame({"user_id": [1, 2, 3], "age": ["18-24", "25-34", "18-24"]}))
    items = tables.get(
        "items", pd.DataFrame({"item_id": [10, 11, 12, 30], "publisher": ["p1", "p2", "p1", "p_new"]})
    )
    return FeedLog(imp, users, items, source="hand.csv")


@pytest.fixture(scope="module")
def prepared() -> Prepared:
    return prepare(make_feed(), val_days=1, test_days=2, tau="mean")


def test_split_by_day_latest_days_are_test() -> None:
    days = np.array([3, 0, 0, 1, 2, 4, 3])
    np.testing.assert_array_equal(split_days(days, 1, 2), [2, 0, 0, 0, 1, 2, 2])
    # Day indexes with gaps: the split counts distinct days, not calendar distance.
    np.testing.assert_array_equal(split_days(np.array([9, 0, 5, 7]), 1, 1), [2, 0, 0, 1])


def test_split_of_the_prepared_log(prepared: Prepared) -> None:
    assert prepared.meta["split_days"] == {"train": [0, 1], "val": [2], "test": [3, 4]}
    assert prepared.meta["n_impressions"] == {"train": 5, "val": 1, "test": 4}
    np.testing.assert_array_equal(prepared.split_mask("test"), prepared.impressions["day"].to_numpy() >= 3)


@pytest.mark.parametrize(("val_days", "test_days"), [(1, 4), (2, 3), (4, 1)])
def test_empty_split_names_day_and_the_fix(val_days: int, test_days: int) -> None:
    with pytest.raises(DataError, match="data.val_days / data.test_days") as err:
        prepare(make_feed(), val_days=val_days, test_days=test_days)
    assert err.value.column == "day"
    assert err.value.file == "hand.csv"
    assert "leave no training day" in err.value.problem


def test_tau_is_mean_of_clicked_training_durations_only(prepared: Prepared) -> None:
    # Training clicks read 10, 30 and 20 s; the 1000 s (validation) and 500 s (test) reads are ignored.
    assert prepared.tau_seconds == pytest.approx(20.0)
    assert prepared.meta["tau_rule"] == "mean clicked training duration"
    assert prepared.meta["mean_clicked_train_duration"] == pytest.approx(20.0)


def test_long_read_is_click_and_duration_strictly_above_tau(prepared: Prepared) -> None:
    imp = prepared.impressions.set_index(["user_id", "item_id", "day"])
    expected = {
        (1, 10, 0): 0,  # 10 s
        (1, 11, 0): 0,  # not clicked
        (2, 10, 1): 1,  # 30 s
        (2, 12, 1): 0,  # 20 s = tau
        (1, 12, 2): 1,
        (2, 10, 3): 1,
        (3, 30, 3): 0,
        (1, 30, 4): 0,
        (3, 11, 4): 0,  # clicked, zero duration
    }
    for key, long_read in expected.items():
        assert imp.loc[key, "long_read"] == long_read, key
    assert imp.loc[(3, 11, 4), "click"] == 1
    click, duration = prepared.impressions["click"], prepared.impressions["duration"]
    tau = prepared.tau_seconds
    assert (prepared.impressions["long_read"] == ((click == 1) & (duration > tau)).astype(int)).all()


def test_fixed_seconds_tau() -> None:
    fixed = prepare(make_feed(), tau=25)
    assert fixed.tau_seconds == 25.0
    assert fixed.meta["tau_rule"] == "fixed seconds"
    assert fixed.impressions["long_read"].sum() == 3  # 30 s, 1000 s, 500 s
    assert prepare(make_feed(), tau=0).impressions["long_read"].sum() == 6  # every click that was read at all


@pytest.mark.parametrize("rule", ["median", -1.0, float("nan"), True])
def test_bad_tau_lists_the_options(rule: object) -> None:
    with pytest.raises(ValueError, match="use 'mean' or a number of seconds >= 0"):
        choose_tau(np.array([10.0]), np.array([1]), np.array([True]), rule)  # type: ignore[arg-type]


def test_mean_tau_without_training_clicks_names_the_fix() -> None:
    rows = [(u, i, d, t, p, 0 if d < 2 else c, 0.0 if d < 2 else x) for u, i, d, t, p, c, x in ROWS]
    with pytest.raises(DataError, match="give data.tau in seconds") as err:
        prepare(make_feed(rows))
    assert (err.value.file, err.value.column) == ("hand.csv", "click")
    assert prepare(make_feed(rows), tau=25).tau_seconds == 25.0  # a fixed tau does not need them


def test_ids_unseen_in_training_encode_to_the_oov_bucket(prepared: Prepared, caplog) -> None:
    users = prepared.users.set_index("raw_user_id")
    items = prepared.items.set_index("raw_item_id")
    # Training users {1, 2} get codes 1, 2 (sorted); user 3, first seen in test, is OOV (0).
    assert users["user_id"].to_dict() == {1: 1, 2: 2, 3: 0}
    assert items["item_id"].to_dict() == {10: 1, 11: 2, 12: 3, 30: 0}
    assert prepared.user_cardinalities[0] == 3 and prepared.item_cardinalities[0] == 4
    # Its feature values keep their codes when training saw them (age '18-24' via user 1)...
    assert users.loc[3, "age"] == users.loc[1, "age"] != 0
    # ...but a value only an unseen item carries would get an embedding no training step moves: OOV too.
    assert items.loc[30, "publisher"] == 0 and items.loc[10, "publisher"] == items.loc[12, "publisher"]
    assert prepared.item_cardinalities[1] == 3  # p1, p2 and the OOV bucket
    # Test impressions reach the OOV rows; counted in meta and logged.
    assert prepared.meta["oov_test_impressions"] == {"users": 2, "items": 2}
    with caplog.at_level(logging.INFO, logger="dmtl.features"):
        prepare(make_feed())
    assert "out-of-vocabulary bucket): 2 users, 2 items" in caplog.text


def test_impression_rows_point_at_their_user_and_item(prepared: Prepared) -> None:
    imp = prepared.impressions
    np.testing.assert_array_equal(prepared.users["raw_user_id"].to_numpy()[imp["user_idx"]], imp["user_id"])
    np.testing.assert_array_equal(prepared.items["raw_item_id"].to_numpy()[imp["item_idx"]], imp["item_id"])


def test_codes_are_stable_under_row_order(prepared: Prepared) -> None:
    rng = np.random.default_rng(0)
    feed = make_feed()
    shuffled = FeedLog(
        feed.impressions.sample(frac=1.0, random_state=1),
        feed.users.iloc[rng.permutation(len(feed.users))],
        feed.items.iloc[rng.permutation(len(feed.items))],
        source=feed.source,
    )
    other = prepare(shuffled)
    for table, raw in (("users", "raw_user_id"), ("items", "raw_item_id")):
        a = getattr(prepared, table).set_index(raw).sort_index()
        b = getattr(other, table).set_index(raw).sort_index()
        pd.testing.assert_frame_equal(a, b)
    assert other.user_cardinalities == prepared.user_cardinalities
    assert other.item_cardinalities == prepared.item_cardinalities
    # Impressions come out in time order whatever the input order (the times here are distinct).
    cols = ["user_id", "item_id", "day", "click", "duration", "long_read", "split", "ctx_position"]
    pd.testing.assert_frame_equal(other.impressions[cols], prepared.impressions[cols])
    assert other.tau_seconds == prepared.tau_seconds


def test_impressions_out_of_time_order_are_sorted() -> None:
    rows = list(reversed(ROWS))
    out = prepare(make_feed(rows)).impressions
    in_time_order = [(u, i, d) for u, i, d, *_ in sorted(ROWS, key=lambda r: r[3])]
    assert list(out[["user_id", "item_id", "day"]].itertuples(index=False, name=None)) == in_time_order


def test_position_buckets(prepared: Prepared) -> None:
    imp = prepared.impressions.set_index(["user_id", "item_id", "day"])
    # -1 (unknown) -> 0; position p -> p + 1; everything at or past the last bucket shares it.
    assert imp.loc[(2, 11, 1), "ctx_position"] == 0
    assert imp.loc[(1, 10, 0), "ctx_position"] == 1 and imp.loc[(2, 12, 1), "ctx_position"] == 4
    assert imp.loc[(2, 10, 3), "ctx_position"] == MAX_POSITION_BUCKET  # position 12
    assert prepared.context_cardinalities == [MAX_POSITION_BUCKET + 1]
    assert set(np.unique(prepared.impressions["split"])) == set(SPLITS.values())


def test_prepared_round_trip(prepared: Prepared, tmp_path: Path) -> None:
    prepared.write(tmp_path)
    back = Prepared.read(tmp_path)
    pd.testing.assert_frame_equal(back.impressions, prepared.impressions)
    pd.testing.assert_frame_equal(back.users, prepared.users)
    assert back.meta == prepared.meta
    assert not list(tmp_path.glob("*.tmp"))


def _with(row: int, column: str, value: object) -> list[tuple]:
    rows = [list(r) for r in ROWS]
    rows[row][COLUMNS.index(column)] = value
    return [tuple(r) for r in rows]


@pytest.mark.parametrize(
    ("rows", "column", "in_message"),
    [
        (_with(1, "duration", 4.0), "duration", "durations on non-clicked impressions"),
        (_with(0, "duration", -3.0), "duration", "negative or non-finite durations"),
        (_with(0, "duration", float("inf")), "duration", "negative or non-finite durations"),
        (_with(0, "duration", float("nan")), "duration", "1 missing values"),
        (_with(0, "click", 2), "click", "values other than 0/1"),
        (_with(0, "click", 0.5), "click", "not integers"),  # would be truncated to 0 by a plain cast
        (_with(0, "user_id", 1.5), "user_id", "not integers"),
        (_with(0, "position", 40_000), "position", r"not integers in \[-32768, 32767\]"),
        (_with(0, "day", "monday"), "day", "expected numbers"),
    ],
)
def test_bad_impression_values_raise_data_error(rows: list[tuple], column: str, in_message: str) -> None:
    with pytest.raises(DataError, match=in_message) as err:
        prepare(make_feed(rows))
    assert err.value.column == column
    assert err.value.file == "hand.csv"
    assert err.value.fix


def test_missing_impression_column_is_named() -> None:
    feed = make_feed()
    feed.impressions = feed.impressions.drop(columns=["position"])
    with pytest.raises(DataError, match=r"missing impression column\(s\) \['position'\]") as err:
        prepare(feed)
    assert err.value.column == "position"


@pytest.mark.parametrize(
    ("tables", "column", "in_message"),
    [
        ({"users": pd.DataFrame({"user_id": [1, 2], "age": ["a", "b"]})}, "user_id", "2 impressions whose"),
        (
            {"items": pd.DataFrame({"item_id": [10, 11, 12], "publisher": ["p1"] * 3})},
            "item_id",
            "2 impressions",
        ),
        ({"users": pd.DataFrame({"user_id": [1, 2, 3, 3], "age": ["a"] * 4})}, "user_id", "duplicate ids"),
        ({"items": pd.DataFrame({"id": [10, 11, 12, 30]})}, "item_id", "feature table lacks 'item_id'"),
    ],
)
def test_feature_tables_must_cover_the_log_once(tables: dict, column: str, in_message: str) -> None:
    with pytest.raises(DataError, match=in_message) as err:
        prepare(make_feed(**tables))
    assert err.value.column == column


def test_duplicate_impressions_raise_data_error() -> None:
    with pytest.raises(DataError, match="1 impressions repeat an earlier") as err:
        prepare(make_feed([*ROWS, ROWS[2]]))
    assert err.value.column == "user_id, item_id, time"
    # The same user and item at another time is a new impression, not a duplicate.
    again = (*ROWS[2][:3], ROWS[2][3] + 1, *ROWS[2][4:])
    assert prepare(make_feed([*ROWS, again])).meta["n_impressions"]["train"] == 6


# -- impression context columns (ctx_<name>, issue 15) -------------------------------------------------------


def _feed_with_context(**columns: list) -> FeedLog:
    feed = make_feed()
    imp = feed.impressions.copy()
    for name, values in columns.items():
        imp[name] = values
    return FeedLog(imp, feed.users, feed.items, source=feed.source)


def test_context_columns_are_encoded_beside_position() -> None:
    # Values by row of ROWS: -1 (unknown) -> 0; v -> v + 1; everything from MAX_CONTEXT_BUCKET - 1 on shares
    # the last bucket. Rows are in time order already, so the encoded column keeps this order.
    clicks = [0, 1, -1, 2, 8, 9, 40, 0, 3, 1]
    flag = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    prepared = prepare(_feed_with_context(ctx_publisher_clicks=clicks, ctx_flag=flag))
    imp = prepared.impressions
    assert prepared.meta["context_features"] == ["ctx_position", "ctx_publisher_clicks", "ctx_flag"]
    assert prepared.context_cardinalities == [
        MAX_POSITION_BUCKET + 1,
        MAX_CONTEXT_BUCKET + 1,
        MAX_CONTEXT_BUCKET + 1,
    ]
    assert imp["ctx_publisher_clicks"].tolist() == [1, 2, 0, 3, 9, 10, 10, 1, 4, 2]
    assert imp["ctx_flag"].tolist() == [2, 1, 2, 1, 2, 1, 2, 1, 2, 1]
    assert imp["ctx_publisher_clicks"].dtype == np.int64
    # Without context columns nothing changes: position is the only context feature.
    assert prepare(make_feed()).meta["context_features"] == ["ctx_position"]


def test_context_columns_travel_with_their_rows() -> None:
    rows = list(reversed(ROWS))
    values = list(range(len(ROWS)))[::-1]  # row k of ROWS carries k
    imp = pd.DataFrame(rows, columns=list(COLUMNS))
    imp["ctx_k"] = values
    feed = make_feed()
    out = prepare(FeedLog(imp, feed.users, feed.items, source="x")).impressions
    assert out["ctx_k"].tolist() == [k + 1 for k in range(len(ROWS))]


@pytest.mark.parametrize(
    ("values", "name", "in_message"),
    [
        ([0.5] + [0] * 9, "ctx_share", "whole numbers"),
        ([None] + [0] * 9, "ctx_missing", "whole numbers"),
        (["a"] * 10, "ctx_text", "whole numbers"),
        ([0] * 10, "ctx_position", "reserved"),
    ],
)
def test_bad_context_columns_raise_data_error(values: list, name: str, in_message: str) -> None:
    with pytest.raises(DataError, match=in_message) as err:
        prepare(_feed_with_context(**{name: values}))
    assert err.value.column == name and "hand.csv" in str(err.value)
