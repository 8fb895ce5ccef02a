"""Tests for the generic click + duration format and the shared validation policies (dmtl.sources.generic, dmtl.sources.ingest)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmtl.schema import DataError, LoadOptions
from dmtl.sources.generic import load_generic
from dmtl.sources.ingest.convert import to_epoch_ms_and_day
from dmtl.sources.ingest.side_features import as_category

DAY0 = 1650844800  # 2022-04-25 00:00:00 UTC, epoch seconds
COLUMNS = {"user_id": "uid", "item_id": "vid", "time": "ts", "click": "clk", "duration": "dur"}


def _write(directory: Path, name: str, frame: pd.DataFrame) -> Path:
    path = directory / name
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def _impressions(**overrides: list) -> pd.DataFrame:
    """Four impressions, the last one logged out of time order and with an empty non-click duration."""
    data = {
        "uid": [1, 2, 1, 2],
        "vid": [10, 11, 11, 10],
        "ts": [DAY0, DAY0 + 3600, DAY0 + 86400 + 5, DAY0 + 100],
        "clk": [1, 0, 1, 0],
        "dur": [30.0, 0.0, 12.5, np.nan],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def test_csv_log_is_mapped_sorted_and_counted(tmp_path: Path) -> None:
    _write(tmp_path, "impressions.csv", _impressions())
    _write(
        tmp_path, "users.csv", pd.DataFrame({"uid": [1, 2], "age_band": [3.0, np.nan], "city": [" a ", "b"]})
    )
    _write(tmp_path, "items.csv", pd.DataFrame({"item_id": [10, 11, 12], "topic": ["x", "y", "z"]}))
    log = load_generic(tmp_path, COLUMNS)

    imp = log.impressions
    # Sorted by time: rows 0, 3, 1, 2 of the file; time in seconds since the first impression.
    assert imp["user_id"].tolist() == [1, 2, 2, 1]
    assert imp["item_id"].tolist() == [10, 10, 11, 11]
    assert imp["time"].tolist() == [0, 100, 3600, 86405]
    assert imp["day"].tolist() == [0, 0, 0, 1]
    assert imp["position"].tolist() == [-1, -1, -1, -1]
    assert imp["click"].tolist() == [1, 0, 0, 1]
    assert imp["duration"].tolist() == [30.0, 0.0, 0.0, 12.5]
    counts = log.meta["policy_counts"]
    assert counts["rows_out_of_time_order"] == 1  # the last file row is earlier than one before it
    assert counts["missing_nonclick_durations_zeroed"] == 1
    assert log.meta["first_date"] == "2022-04-25" and log.meta["last_date"] == "2022-04-26"
    assert log.meta["click_rate"] == 0.5 and log.meta["clicked_duration_mean_s"] == pytest.approx(21.25)

    # Users file keyed by the log's own id name; features become category strings, gaps become "missing".
    assert log.users.to_dict("list") == {"user_id": [1, 2], "age_band": ["3", "missing"], "city": ["a", "b"]}
    # Items are restricted to those the log shows.
    assert log.items.to_dict("list") == {"item_id": [10, 11], "topic": ["x", "y"]}


def test_parquet_iso_times_keep_their_wall_clock_date_and_positions(tmp_path: Path) -> None:
    # 23:30 and 00:10 at +08:00 are the same UTC date but two local calendar days.
    frame = pd.DataFrame(
        {
            "user_id": [1, 1],
            "item_id": [5, 6],
            "time": ["2022-04-25T23:30:00+08:00", "2022-04-26T00:10:00+08:00"],
            "click": [True, False],
            "duration": [7.0, 0.0],
            "position": [0.0, np.nan],
        }
    )
    _write(tmp_path, "impressions.parquet", frame)
    log = load_generic(tmp_path)
    assert log.impressions["day"].tolist() == [0, 1]
    assert log.impressions["time"].tolist() == [0, 2400]
    assert log.impressions["position"].tolist() == [0, -1]
    assert log.meta["policy_counts"]["missing_positions"] == 1
    # No feature files: the feature tables hold the log's ids only.
    assert log.users.columns.tolist() == ["user_id"] and log.items["item_id"].tolist() == [5, 6]


def test_epoch_seconds_and_milliseconds_agree() -> None:
    seconds = pd.Series([DAY0, DAY0 + 86399.5])
    ms_a, day_a = to_epoch_ms_and_day(seconds, Path("f"), "ts")
    ms_b, day_b = to_epoch_ms_and_day(seconds * 1000, Path("f"), "ts")
    assert ms_a.tolist() == ms_b.tolist() == [DAY0 * 1000, DAY0 * 1000 + 86399500]
    assert day_a.tolist() == day_b.tolist() == [19107, 19107]  # 2022-04-25 is day 19107 since 1970-01-01


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ([20220430, 20220501, 20220430], [0, 1, 0]),
        ([3, 5, 3], [0, 2, 0]),
        (["2022-04-30", "2022-05-02", "2022-04-30"], [0, 2, 0]),
    ],
)
def test_day_column_yyyymmdd_index_or_iso(tmp_path: Path, days: list, expected: list[int]) -> None:
    frame = _impressions(uid=[1, 2, 3, 4]).iloc[:3].assign(day=days)
    _write(tmp_path, "impressions.csv", frame)
    log = load_generic(tmp_path, {**COLUMNS, "day": "day"})
    # Rows sorted by time keep file order here; a day column overrides the calendar date of the time.
    assert log.impressions["day"].tolist() == expected


def test_duplicates_and_click_duration_policies(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 3],
            "item_id": [10, 10, 10, 10, 10],
            "time": [DAY0, DAY0, DAY0, DAY0 + 1, DAY0 + 2],
            "click": [1, 1, 0, 0, 1],
            "duration": [5.0, 5.0, 0.0, 9.0, 0.0],
        }
    )
    _write(tmp_path, "impressions.csv", frame)
    log = load_generic(tmp_path)
    counts = log.meta["policy_counts"]
    assert counts["exact_duplicate_rows_dropped"] == 1
    assert counts["duplicate_key_rows_dropped"] == 1  # same (user, item, time), different click: first kept
    assert counts["nonclick_durations_zeroed"] == 1  # user 2 played 9 s without a click
    assert counts["clicks_with_zero_duration"] == 1  # user 3: a click, kept, duration 0
    assert log.impressions[["user_id", "click", "duration"]].to_numpy().tolist() == [
        [1, 1, 5],
        [2, 0, 0],
        [3, 1, 0],
    ]
    assert log.meta["rows_read"] == 5 and log.meta["rows_kept"] == 3


@pytest.mark.parametrize(
    ("overrides", "column", "in_message"),
    [
        ({"clk": [1, 0, "yes", 0]}, "clk", "non-numeric"),
        ({"clk": [1, 0, 2, 0]}, "clk", "other than 0/1"),
        ({"clk": [1, 0, np.nan, 0]}, "clk", "missing clicks"),
        ({"dur": [30.0, -1.0, 12.5, 0.0]}, "dur", "negative"),
        ({"dur": [np.nan, 0.0, 12.5, 0.0]}, "dur", "clicked impressions without a duration"),
        ({"dur": [np.inf, 0.0, 12.5, 0.0]}, "dur", "infinite"),
        ({"dur": ["slow", 0.0, 12.5, 0.0]}, "dur", "non-numeric"),
        ({"uid": ["u1", "u2", "u1", "u2"]}, "uid", "non-numeric"),
        ({"uid": [1.5, 2, 1, 2]}, "uid", "non-integer"),
        ({"uid": [1, -2, 1, 2]}, "uid", "below 0"),
        ({"vid": [10, np.nan, 11, 10]}, "vid", "missing values"),
        ({"ts": ["2022-04-25", "yesterday", "2022-04-26", "2022-04-25"]}, "ts", "neither numbers nor ISO"),
        ({"ts": [DAY0, np.nan, DAY0, DAY0]}, "ts", "missing times"),
    ],
)
def test_bad_values_raise_data_error_naming_file_and_column(
    tmp_path: Path, overrides: dict, column: str, in_message: str
) -> None:
    path = _write(tmp_path, "impressions.csv", _impressions(**overrides))
    with pytest.raises(DataError) as info:
        load_generic(tmp_path, COLUMNS)
    assert info.value.file == str(path) and info.value.column == column
    assert in_message in info.value.problem and info.value.fix


def test_misnamed_column_suggests_the_close_match(tmp_path: Path) -> None:
    _write(tmp_path, "impressions.csv", _impressions().rename(columns={"clk": "clicks"}))
    with pytest.raises(DataError, match="did you mean 'clicks'") as info:
        load_generic(tmp_path, {**COLUMNS, "click": "click"})
    assert info.value.column == "click" and "columns={'click'" in info.value.fix


def test_bad_position_raises(tmp_path: Path) -> None:
    _write(tmp_path, "impressions.csv", _impressions().assign(pos=[0, 1.5, 2, 3]))
    with pytest.raises(DataError, match="positions that are not integers") as info:
        load_generic(tmp_path, {**COLUMNS, "position": "pos"})
    assert info.value.column == "pos"


def test_unknown_mapping_key_lists_valid_keys(tmp_path: Path) -> None:
    _write(tmp_path, "impressions.csv", _impressions())
    with pytest.raises(ValueError, match=r"valid keys: \['user_id', 'item_id', 'time'"):
        load_generic(tmp_path, {**COLUMNS, "watch_time": "dur"})


def test_missing_or_ambiguous_impression_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no impressions.csv or impressions.parquet"):
        load_generic(tmp_path)
    _write(tmp_path, "impressions.csv", _impressions())
    _write(tmp_path, "impressions.parquet", _impressions())
    with pytest.raises(DataError, match="both impressions.csv and impressions.parquet"):
        load_generic(tmp_path, COLUMNS)


def test_feature_file_not_covering_the_log_adds_missing_rows_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path, "impressions.csv", _impressions())
    # User 1 twice with identical features (dropped); user 2 absent from the file.
    _write(tmp_path, "users.csv", pd.DataFrame({"user_id": [1, 1, 7], "segment": ["a", "a", "b"]}))
    with caplog.at_level(logging.WARNING, logger="dmtl.sources.ingest"):
        log = load_generic(tmp_path, COLUMNS)
    assert log.users.to_dict("list") == {"user_id": [1, 2], "segment": ["a", "missing"]}
    assert log.meta["policy_counts"]["user_ids_missing_from_features"] == 1
    assert log.meta["policy_counts"]["user_id_feature_duplicate_rows_dropped"] == 1
    assert "1 of the log's 2 user_ids have no feature row" in caplog.text


@pytest.mark.parametrize(
    ("users", "in_message"),
    [
        (pd.DataFrame({"uid": [7, 8], "segment": ["a", "b"]}), "none of the log's 2 ids"),
        (pd.DataFrame({"uid": [1, 1, 2], "segment": ["a", "b", "c"]}), "conflicting feature rows"),
        (pd.DataFrame({"person": [1, 2], "segment": ["a", "b"]}), "neither 'uid'"),
    ],
)
def test_wrong_feature_file_raises(tmp_path: Path, users: pd.DataFrame, in_message: str) -> None:
    _write(tmp_path, "impressions.csv", _impressions())
    path = _write(tmp_path, "users.csv", users)
    with pytest.raises(DataError) as info:
        load_generic(tmp_path, COLUMNS)
    assert in_message in str(info.value) and info.value.file == str(path)


def test_as_category() -> None:
    assert as_category(pd.Series([1.0, np.nan, 3.0])).tolist() == ["1", "missing", "3"]
    assert as_category(pd.Series([0.5, 2.0])).tolist() == ["0.5", "2.0"]
    assert as_category(pd.Series([" x", "", None])).tolist() == ["x", "missing", "missing"]
    assert as_category(pd.Series([2**62 + 1, -3])).tolist() == [str(2**62 + 1), "-3"]


# ------------------------------------------------------------ plausibility at load (docs/data_formats.md §4)
def test_durations_in_milliseconds_are_refused_as_a_unit_mistake(tmp_path: Path) -> None:
    # Clicked reads of 30 s and 12.5 s, logged in milliseconds: median 21,250 "seconds" (5.9 h).
    _write(tmp_path, "impressions.csv", _impressions(dur=[30_000.0, 0.0, 12_500.0, np.nan]))
    with pytest.raises(DataError) as err:
        load_generic(tmp_path, COLUMNS)
    assert err.value.column == "dur" and err.value.file == str(tmp_path / "impressions.csv")
    assert "median clicked duration is 21,250 s (5.9 h), implausible for seconds" in err.value.problem
    assert "looks like milliseconds (it would be 21.2 s)" in err.value.problem
    assert "divide the column by 1000" in err.value.fix and "data.max_median_duration_s" in err.value.fix
    # The documented override: a log of genuinely long reads is accepted with a higher threshold.
    log = load_generic(tmp_path, COLUMNS, LoadOptions(max_median_duration_s=30_000, max_duration_s=1e6))
    assert log.impressions["duration"].max() == 30_000


def test_mixed_seconds_and_milliseconds_are_refused_naming_rows(tmp_path: Path) -> None:
    ts = [DAY0, (DAY0 + 3600) * 1000, DAY0 + 86400 + 5, (DAY0 + 100) * 1000]
    _write(tmp_path, "impressions.csv", _impressions(ts=ts))
    with pytest.raises(DataError) as err:
        load_generic(tmp_path, COLUMNS)
    assert err.value.column == "ts"
    # CSV line numbers (line 1 is the header): lines 2 and 4 in seconds, 3 and 5 in milliseconds.
    assert (
        "mixes epoch seconds and epoch milliseconds (2 values below 1e11, 2 at or above), e.g. "
        f"line 2: {DAY0} (seconds); line 4: {DAY0 + 86405} (seconds); line 3: {(DAY0 + 3600) * 1000} "
        f"(milliseconds); line 5: {(DAY0 + 100) * 1000} (milliseconds)"
    ) in err.value.problem
    assert "multiply the seconds by 1000" in err.value.fix


@pytest.mark.parametrize(
    ("bad", "shown"),
    [(10_000_000_000, "2286-11-20T17:46:40.000"), (1_650_844, "1970-01-20T02:34:04.000")],
    ids=["year-2286", "year-1970"],
)
def test_timestamps_outside_the_plausible_years_are_refused_naming_rows(
    tmp_path: Path, bad: int, shown: str
) -> None:
    _write(tmp_path, "impressions.csv", _impressions(ts=[DAY0, DAY0 + 3600, bad, DAY0 + 100]))
    with pytest.raises(DataError) as err:
        load_generic(tmp_path, COLUMNS)
    assert err.value.column == "ts"
    assert f"1 timestamps outside the years 2000-2100, e.g. line 4 ({shown})" in err.value.problem
    assert "data.first_year / data.last_year" in err.value.fix
    wide = LoadOptions(first_year=1970, last_year=2300, max_span_days=200_000)
    assert len(load_generic(tmp_path, COLUMNS, wide).impressions) == 4  # the documented override


def test_a_log_spanning_more_than_max_span_days_names_its_farthest_rows(tmp_path: Path) -> None:
    year_later = DAY0 + 400 * 86400
    _write(tmp_path, "impressions.csv", _impressions(ts=[DAY0, DAY0 + 3600, year_later, DAY0 + 100]))
    with pytest.raises(DataError) as err:
        load_generic(tmp_path, COLUMNS)
    assert "the timestamps span 400 days, more than data.max_span_days = 366" in err.value.problem
    assert err.value.problem.index("line 4 (2023-05-30") < err.value.problem.index("line 2")  # farthest first
    assert "raise data.max_span_days" in err.value.fix
    assert len(load_generic(tmp_path, COLUMNS, LoadOptions(max_span_days=400)).impressions) == 4


def test_extreme_durations_are_capped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One click of 1e12 s among ordinary reads: capped to max_duration_s (4 h by default), counted, warned.
    _write(tmp_path, "impressions.csv", _impressions(clk=[1, 1, 1, 0], dur=[30.0, 20.0, 1e12, np.nan]))
    with caplog.at_level(logging.WARNING, logger="dmtl.sources.ingest"):
        log = load_generic(tmp_path, COLUMNS)
    assert log.impressions["duration"].tolist() == [30.0, 0.0, 20.0, 14_400.0]  # in time order
    assert log.meta["policy_counts"]["durations_capped"] == 1 and log.meta["duration_cap_s"] == 14_400.0
    assert log.meta["as_read"]["clicked_duration_mean_s"] == pytest.approx((50 + 1e12) / 3)  # before policies
    assert log.meta["clicked_duration_mean_s"] == pytest.approx((50 + 14_400) / 3)
    assert (
        "1 clicked durations above data.max_duration_s = 14400 s capped to it (largest 1e+12 s)"
        in caplog.text
    )
    capped = load_generic(tmp_path, COLUMNS, LoadOptions(max_duration_s=60.0))
    assert capped.impressions["duration"].max() == 60.0


# ----------------------------------------------------------------- encodings, paths, empty files (§5)
def test_latin1_feature_file_is_refused_with_the_line_and_the_fix(tmp_path: Path) -> None:
    _write(tmp_path, "impressions.csv", _impressions())
    (tmp_path / "items.csv").write_bytes("vid,topic\n10,sport\n11,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        load_generic(tmp_path, COLUMNS)
    assert err.value.file == str(tmp_path / "items.csv")
    assert err.value.problem == "is not valid utf-8 text: byte 0xe9 on line 3 (read as Latin-1: '11,café')"
    assert "set data.encoding" in err.value.fix and "latin-1" in err.value.fix
    log = load_generic(tmp_path, COLUMNS, LoadOptions(encoding="latin-1"))  # the documented override
    assert log.items["topic"].tolist() == ["sport", "café"]


def test_non_utf8_header_and_utf8_bom(tmp_path: Path) -> None:
    (tmp_path / "impressions.csv").write_bytes(
        "uid,vid,ts,clk,dur,r\xe9gion\n1,10,1650844800,1,3,x\n".encode("latin-1")
    )
    with pytest.raises(DataError, match=r"not valid utf-8 text: byte 0xe9 on line 1"):
        load_generic(tmp_path, COLUMNS)
    # Excel's "CSV UTF-8" starts with a byte-order mark: read as UTF-8, the first column keeps its name.
    _impressions().to_csv(tmp_path / "impressions.csv", index=False, encoding="utf-8-sig")
    assert len(load_generic(tmp_path, COLUMNS).impressions) == 4


def test_an_encoding_error_past_the_first_chunk_names_its_line(tmp_path: Path) -> None:
    from dmtl.sources.ingest.reading import encoding_error

    path = tmp_path / "big.csv"
    # 1 MiB chunks: put a two-byte character across the first chunk boundary, and a bad byte far later.
    first = b"a" * ((1 << 20) - 1) + "é".encode() + b"\n"
    path.write_bytes(first + b"ok\n" * 5 + b"bad \xff here\n")
    err = encoding_error(path, "utf-8")
    assert "byte 0xff on line 7 (read as Latin-1: 'bad ÿ here')" in err.problem


@pytest.mark.parametrize(
    ("content", "file", "problem"),
    [
        ("uid,vid,ts,clk,dur\n", "impressions.csv", "has a header but no data rows"),
        ("", "impressions.csv", "the file is empty"),
    ],
    ids=["header-only", "empty"],
)
def test_header_only_and_empty_impression_files(
    tmp_path: Path, content: str, file: str, problem: str
) -> None:
    (tmp_path / file).write_text(content)
    with pytest.raises(DataError) as err:
        load_generic(tmp_path, COLUMNS)
    assert err.value.problem == problem and err.value.file == str(tmp_path / file)


def test_header_only_feature_file(tmp_path: Path) -> None:
    _write(tmp_path, "impressions.csv", _impressions())
    (tmp_path / "users.csv").write_text("uid,segment\n")
    with pytest.raises(DataError, match="users.csv: has a header but no data rows. Fix: .*remove it"):
        load_generic(tmp_path, COLUMNS)


def test_data_paths_not_found_file_or_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere: folder not found. Fix: set data.path"):
        load_generic(tmp_path / "nowhere", COLUMNS)
    log_file = _write(tmp_path, "impressions.csv", _impressions())
    with pytest.raises(DataError) as err:
        load_generic(log_file, COLUMNS)  # the file itself instead of its folder
    assert str(err.value) == (
        f"{log_file}: is a file, not a folder. Fix: set data.path to the folder that holds the log files "
        f"({tmp_path}), not to a file in it"
    )
    assert "impressions.csv/impressions.csv" not in str(err.value)
    nested = tmp_path / "nested"
    (nested / "impressions.csv").mkdir(parents=True)  # an archive unpacked into a folder of that name
    with pytest.raises(DataError, match=r"nested/impressions.csv: is a folder, not a file"):
        load_generic(nested, COLUMNS)


def test_column_map_collisions_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "impressions.csv", _impressions().assign(day=[1, 1, 2, 1]))
    with pytest.raises(
        ValueError, match=r"maps several schema names to one column: \{'ts': \['time', 'day'\]\}"
    ):
        load_generic(tmp_path, {**COLUMNS, "day": "ts"})
    # A column named like an optional schema name is not used twice: 'day' mapped as time stays time only.
    frame = _impressions().rename(columns={"ts": "day"})
    _write(tmp_path, "impressions.csv", frame)
    log = load_generic(tmp_path, {**COLUMNS, "time": "day"})
    assert log.meta["columns"] == {**COLUMNS, "time": "day"}
    # An optional column mapped explicitly must exist.
    with pytest.raises(DataError, match=r"column 'pos' \(the position\) not found"):
        load_generic(tmp_path, {**COLUMNS, "time": "day", "position": "pos"})


@pytest.mark.parametrize(
    ("users", "column", "in_message"),
    [
        (pd.DataFrame({"uid": [1, 2], "user_id": [5, 6]}), "user_id", "two id columns, 'uid' and 'user_id'"),
        (pd.DataFrame({"uid": [1, 2], "raw_user_id": [5, 6]}), "raw_user_id", "uses internally"),
        (pd.DataFrame({"uid": [1, 2], "user_idx": [5, 6]}), "user_idx", "uses internally"),
    ],
)
def test_feature_columns_colliding_with_ids_or_internal_names(
    tmp_path: Path, users: pd.DataFrame, column: str, in_message: str
) -> None:
    _write(tmp_path, "impressions.csv", _impressions())
    path = _write(tmp_path, "users.csv", users)
    with pytest.raises(DataError) as err:
        load_generic(tmp_path, COLUMNS)
    assert err.value.file == str(path) and err.value.column == column and in_message in err.value.problem
