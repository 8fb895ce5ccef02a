"""Tests for the KuaiRand loader on small fixtures in the official format (and, if present, the shared slice)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dmtl.schema import DataError
from dmtl.sources.kuairand.files import scan_kuairand
from dmtl.sources.kuairand.load import USER_FEATURES, load_kuairand, video_length_bands

SHARED_SLICE = Path(__file__).resolve().parents[2] / "shared/data/kuairand-pure"

LOG_HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,long_view,"
    "play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab"
).split(",")
USER_HEADER = [
    "user_id",
    "user_active_degree",
    "is_lowactive_period",
    "is_live_streamer",
    "is_video_author",
    "follow_user_num",
    "follow_user_num_range",
    "fans_user_num",
    "fans_user_num_range",
    "friend_user_num",
    "friend_user_num_range",
    "register_days",
    "register_days_range",
    *(f"onehot_feat{i}" for i in range(18)),
]
VIDEO_HEADER = (
    "video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,server_width,server_height,"
    "music_id,music_type,tag"
).split(",")

T0 = 1650816000000  # 2022-04-25 00:00 Beijing time, in epoch ms


def _log(rows: list[tuple], is_rand: int = 0) -> pd.DataFrame:
    """Official log rows from (user_id, video_id, date, time_ms, is_click, play_time_ms); other columns filled."""
    frame = pd.DataFrame(rows, columns=["user_id", "video_id", "date", "time_ms", "is_click", "play_time_ms"])
    filler = {c: 0 for c in LOG_HEADER if c not in frame.columns}
    filler.update(is_rand=is_rand, tab=1, duration_ms=60000)
    return frame.assign(**filler)[LOG_HEADER]


def _users(ids: list[int]) -> pd.DataFrame:
    n = len(ids)
    frame = pd.DataFrame({c: [1] * n for c in USER_HEADER}).assign(
        user_id=ids, user_active_degree="full_active", follow_user_num_range="(10,50]"
    )
    # Official missing values: NaN in onehot_feat4 and KuaiRand's unknown code -124 in is_live_streamer.
    frame.loc[0, "onehot_feat4"] = np.nan
    frame.loc[0, "is_live_streamer"] = -124
    return frame


def _videos(ids: list[int]) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "video_id": ids,
            "author_id": [7000 + i for i in ids],
            "video_type": "NORMAL",
            "upload_dt": "2022-04-10",
            "upload_type": "Web",
            "visible_status": 0.0,
            "video_duration": [10000.0 * (k + 1) for k in range(n)],
            "server_width": 720.0,
            "server_height": 1280.0,
            "music_id": 1,
            "music_type": 9.0,
            "tag": "39",
        }
    )


def _write(directory: Path, name: str, frame: pd.DataFrame) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_csv(directory / name, index=False)
    return directory / name


STANDARD_ROWS = [
    (0, 100, 20220425, T0 + 1000, 1, 30000),
    (1, 101, 20220425, T0 + 5000, 0, 2000),  # a non-click with play time: zeroed
    (1, 101, 20220425, T0 + 5000, 0, 2000),  # exact duplicate: dropped
    (0, 100, 20220425, T0 + 1000, 0, 0),  # same (user, video, time_ms), different: first kept
    (2, 102, 20220426, T0 + 86_400_000 + 500, 1, 0),  # a click with zero play time: kept
    (2, 101, 20220425, T0 + 3000, 1, 4500),  # logged out of time order
]


@pytest.fixture
def pure_dir(tmp_path: Path) -> Path:
    _write(tmp_path, "log_standard_4_25_to_4_26_pure.csv", _log(STANDARD_ROWS))
    _write(
        tmp_path, "log_random_4_25_to_4_26_pure.csv", _log([(1, 103, 20220426, T0 + 90_000_000, 1, 8000)], 1)
    )
    users = _users([0, 1, 2, 9])
    _write(tmp_path, "user_features_pure.csv", users)
    videos = _videos([100, 101, 102, 103, 104])
    videos.loc[1, "video_duration"] = np.nan  # official files miss some lengths, music types and tags
    videos.loc[2, "tag"] = np.nan
    videos.loc[2, "music_type"] = np.nan
    _write(tmp_path, "video_features_basic_pure.csv", videos)
    (tmp_path / "README.md").write_text("not a KuaiRand file")
    return tmp_path


def test_official_columns_map_to_the_schema(pure_dir: Path) -> None:
    log = load_kuairand(pure_dir)
    imp = log.impressions
    # Sorted by time_ms; day from `date`; time in whole seconds since the first impression.
    assert imp["user_id"].tolist() == [0, 2, 1, 2]
    assert imp["item_id"].tolist() == [100, 101, 101, 102]
    assert imp["day"].tolist() == [0, 0, 0, 1]
    assert imp["time"].tolist() == [0, 2, 4, 86399]
    assert imp["position"].tolist() == [-1] * 4
    assert imp["click"].tolist() == [1, 1, 0, 1]
    assert imp["duration"].tolist() == pytest.approx([30.0, 4.5, 0.0, 0.0])
    assert log.source == "kuairand-pure"
    assert log.meta["rows_read"] == 6 and log.meta["rows_kept"] == 4
    assert log.meta["policy_counts"] == {
        "missing_nonclick_durations_zeroed": 0,
        "exact_duplicate_rows_dropped": 1,
        "duplicate_key_rows_dropped": 1,
        "rows_out_of_time_order": 1,
        "same_second_duplicate_rows_dropped": 0,
        "nonclick_durations_zeroed": 1,
        "clicks_with_zero_duration": 1,
        "durations_capped": 0,
        "user_ids_missing_from_features": 0,
        "item_ids_missing_from_features": 0,
    }
    assert log.meta["as_read"] == {
        "rows": 6,
        "click_rate": 0.5,
        "clicked_duration_mean_s": pytest.approx(34.5 / 3),
    }


def test_user_and_video_features_with_missing_values(pure_dir: Path) -> None:
    log = load_kuairand(pure_dir, length_bands=2)
    users = log.users
    assert users["user_id"].tolist() == [0, 1, 2]  # user 9 never appears in the loaded log
    assert users.columns.tolist() == ["user_id", *USER_FEATURES]
    assert users["is_live_streamer"].tolist() == ["missing", "1", "1"]  # -124 is KuaiRand's "unknown"
    assert users["onehot_feat4"].tolist() == ["missing", "1", "1"]  # NaN made the column float: "1" not "1.0"
    assert users["follow_user_num_range"].tolist() == ["(10,50]"] * 3

    items = log.items
    assert items.columns.tolist() == [
        "item_id",
        "video_type",
        "upload_type",
        "music_type",
        "tag",
        "visible_status",
        "video_length_band",
        "author_id",
        "length_s",  # the video's length in seconds: for the length-aware labels, not a feature
    ]
    assert items["item_id"].tolist() == [100, 101, 102]
    np.testing.assert_array_equal(items["length_s"].to_numpy(), [10.0, np.nan, 30.0])
    assert items["tag"].tolist() == ["39", "39", "missing"]
    assert items["music_type"].tolist() == ["9", "9", "missing"]
    assert items["visible_status"].tolist() == ["0", "0", "0"]
    assert items["author_id"].tolist() == ["7100", "7101", "7102"]
    # Known lengths 10 s and 30 s; with 2 bands the median 20 s splits them.
    assert items["video_length_band"].tolist() == ["b0:10-20s", "missing", "b1:20-30s"]
    assert log.meta["video_length_band_edges_s"] == [10.0, 20.0, 30.0]
    assert log.meta["missing_feature_values"]["items"] == {"music_type": 1, "tag": 1, "video_length_band": 1}


def test_video_length_bands_by_hand() -> None:
    labels, edges = video_length_bands(np.array([10e3, 20e3, 30e3, 40e3, np.nan, -1.0]), 2)
    assert edges == [10.0, 25.0, 40.0]
    assert labels.tolist() == ["b0:10-25s", "b0:10-25s", "b1:25-40s", "b1:25-40s", "missing", "missing"]
    labels, edges = video_length_bands(np.array([5e3, 5e3]), 4)  # ties merge every band into one
    assert labels.tolist() == ["b0:5s", "b0:5s"] and edges == [5.0]


def test_random_log_alone_and_together(pure_dir: Path) -> None:
    random_only = load_kuairand(pure_dir, logs=("random",))
    assert random_only.impressions[["user_id", "item_id", "click", "duration"]].to_numpy().tolist() == [
        [1, 103, 1, 8.0]
    ]
    both = load_kuairand(pure_dir, logs=("standard", "random"))
    assert len(both.impressions) == 5 and both.meta["rows_read"] == 7
    assert [Path(f).name for f in both.meta["files"][:2]] == [
        "log_standard_4_25_to_4_26_pure.csv",
        "log_random_4_25_to_4_26_pure.csv",
    ]
    assert load_kuairand(pure_dir, logs="random").meta["logs"] == ["random"]  # a bare string is one log
    with pytest.raises(ValueError, match=r"valid: \['standard', 'random'\]"):
        load_kuairand(pure_dir, logs=("standard", "exposed"))


def test_date_range_filters_rows_and_skips_files_outside_it(pure_dir: Path) -> None:
    # A file whose name lies outside the range is never opened, so its broken content cannot matter.
    (pure_dir / "log_standard_5_01_to_5_08_pure.csv").write_text("garbage\n")
    log = load_kuairand(pure_dir, date_range=(20220426, 20220426))
    assert log.impressions["user_id"].tolist() == [2]
    assert log.impressions["day"].tolist() == [0]  # day 0 = first date loaded
    assert log.meta["policy_counts"]["rows_outside_date_range"] == 5
    with pytest.raises(DataError, match="column 'user_id' not found"):
        load_kuairand(pure_dir)  # without a range the broken file is read and rejected
    with pytest.raises(DataError, match="no impressions"):
        load_kuairand(pure_dir, date_range=(20220427, 20220427))
    with pytest.raises(ValueError, match="yyyymmdd"):
        load_kuairand(pure_dir, date_range=(20220431, 20220501))


def test_split_log_parts_are_read_in_order(tmp_path: Path) -> None:
    part1 = [(0, 100, 20220408, T0, 1, 1000), (1, 100, 20220408, T0 + 9, 0, 0)]
    part2 = [(1, 100, 20220409, T0 + 9, 1, 7000), (0, 101, 20220409, T0 + 86_400_000, 1, 2000)]
    _write(tmp_path, "log_standard_4_08_to_4_21_27k_part2.csv", _log(part2))
    _write(tmp_path, "log_standard_4_08_to_4_21_27k_part1.csv", _log(part1))
    _write(tmp_path, "user_features_27k.csv", _users([0, 1]))
    _write(tmp_path, "video_features_basic_27k.csv", _videos([100, 101]))
    log = load_kuairand(tmp_path)
    assert [Path(f).name for f in log.meta["files"][:2]] == [
        "log_standard_4_08_to_4_21_27k_part1.csv",
        "log_standard_4_08_to_4_21_27k_part2.csv",
    ]
    # (user 1, video 100, T0+9) occurs in both parts: part1's row (no click) is the one kept.
    assert log.impressions["click"].tolist() == [1, 0, 1]
    assert log.meta["rows_read"] == 4 and log.meta["variant"] == "27k"

    _write(tmp_path, "log_standard_4_22_to_5_08_27k_part3.csv", _log(part2))  # part1, part2 of it missing
    with pytest.raises(DataError, match="incomplete or ambiguous split file"):
        load_kuairand(tmp_path)


def test_variant_detection(pure_dir: Path) -> None:
    _write(pure_dir, "log_standard_4_08_to_4_21_1k.csv", _log(STANDARD_ROWS))
    with pytest.raises(DataError, match="several KuaiRand variants") as info:
        load_kuairand(pure_dir)
    assert "log_standard_4_08_to_4_21_1k.csv" in info.value.problem and "variant=" in info.value.fix
    assert len(load_kuairand(pure_dir, variant="pure").impressions) == 4
    with pytest.raises(DataError, match="no user_features_1k.csv|feature file not found"):
        load_kuairand(pure_dir, variant="1k")
    with pytest.raises(ValueError, match="valid: \\['pure', '1k', '27k'\\]"):
        load_kuairand(pure_dir, variant="2k")


def test_unpacked_archive_data_subfolder_and_empty_folder(tmp_path: Path, pure_dir: Path) -> None:
    archive = tmp_path / "KuaiRand-Pure"
    (archive / "data").mkdir(parents=True)
    for f in scan_kuairand(pure_dir):
        shutil.copy(f.path, archive / "data" / f.path.name)
    assert len(load_kuairand(archive).impressions) == 4  # the archive's layout: files under data/
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no official KuaiRand file names"):
        load_kuairand(empty)
    with pytest.raises(DataError, match="folder not found. Fix: set data.path to the folder"):
        load_kuairand(tmp_path / "nowhere")
    # The path of a file (the log itself) instead of its folder: the message names the folder to use.
    log_file = next(f.path for f in scan_kuairand(pure_dir) if f.kind == "standard")
    with pytest.raises(DataError, match=f"is a file, not a folder. Fix: .*folder .*{pure_dir}"):
        load_kuairand(log_file)


def test_wrong_files_are_named(pure_dir: Path) -> None:
    log_path = pure_dir / "log_standard_4_25_to_4_26_pure.csv"
    # The user features file saved under the log's name.
    _write(pure_dir, log_path.name, _users([0, 1]))
    with pytest.raises(DataError, match="looks like a KuaiRand user features file") as info:
        load_kuairand(pure_dir)
    assert info.value.file == str(log_path) and info.value.column == "video_id"
    # A log without is_click.
    _write(pure_dir, log_path.name, _log(STANDARD_ROWS).drop(columns="is_click"))
    with pytest.raises(DataError) as info:
        load_kuairand(pure_dir)
    assert info.value.file == str(log_path) and info.value.column == "is_click"
    # The video features file where the user features should be.
    _write(pure_dir, log_path.name, _log(STANDARD_ROWS))
    users_path = _write(pure_dir, "user_features_pure.csv", _videos([0, 1, 2]))
    with pytest.raises(DataError, match="looks like a KuaiRand video features file") as info:
        load_kuairand(pure_dir)
    assert info.value.file == str(users_path) and info.value.column == "user_id"


def test_feature_file_not_covering_the_log(pure_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(pure_dir, "user_features_pure.csv", _users([0, 1]))  # user 2 absent
    with caplog.at_level(logging.WARNING, logger="dmtl.sources.ingest"):
        log = load_kuairand(pure_dir)
    assert log.users.set_index("user_id").loc[2].eq("missing").all()
    assert log.meta["policy_counts"]["user_ids_missing_from_features"] == 1
    assert "1 of the log's 3 user_ids have no feature row" in caplog.text
    path = _write(pure_dir, "video_features_basic_pure.csv", _videos([500, 501]))  # another dataset's videos
    with pytest.raises(DataError, match="none of the log's 3 ids") as info:
        load_kuairand(pure_dir)
    assert info.value.file == str(path) and info.value.column == "item_id"


@pytest.mark.parametrize(
    ("row", "column", "in_message"),
    [
        ((3, 100, 20220425, T0, "yes", 1000), "is_click", "non-numeric"),
        ((3, 100, 20220425, T0, 1, -5), "play_time_ms", "negative"),
        ((3, 100, 20220425, T0, 1, None), "play_time_ms", "clicked impressions without a duration"),
        ((3, 100, 20220425, None, 1, 10), "time_ms", "missing values"),
        ((3, 100, 20221345, T0, 1, 10), "date", "invalid yyyymmdd"),
    ],
)
def test_bad_values_raise_data_error(pure_dir: Path, row: tuple, column: str, in_message: str) -> None:
    path = _write(pure_dir, "log_standard_4_25_to_4_26_pure.csv", _log([*STANDARD_ROWS, row]))
    with pytest.raises(DataError) as info:
        load_kuairand(pure_dir)
    assert info.value.file == str(path) and info.value.column == column and in_message in info.value.problem


def test_missing_play_time_on_a_non_click_is_zero_and_counted(pure_dir: Path) -> None:
    _write(
        pure_dir,
        "log_standard_4_25_to_4_26_pure.csv",
        _log([*STANDARD_ROWS, (3, 100, 20220425, T0, 0, None)]),
    )
    _write(pure_dir, "user_features_pure.csv", _users([0, 1, 2, 3]))
    log = load_kuairand(pure_dir)
    assert log.meta["policy_counts"]["missing_nonclick_durations_zeroed"] == 1
    assert log.impressions.loc[log.impressions["user_id"] == 3, "duration"].tolist() == [0.0]


def test_missing_log_or_feature_file(pure_dir: Path) -> None:
    (pure_dir / "log_random_4_25_to_4_26_pure.csv").unlink()
    with pytest.raises(DataError, match="no log_random_\\*_pure.csv file"):
        load_kuairand(pure_dir, logs=("standard", "random"))
    (pure_dir / "video_features_basic_pure.csv").unlink()
    with pytest.raises(DataError, match="feature file not found") as info:
        load_kuairand(pure_dir)
    assert info.value.file.endswith("video_features_basic_pure.csv")


def test_shared_slice_matches_its_readme() -> None:
    if not (SHARED_SLICE / "log_standard_4_25_to_4_30_pure.csv").is_file():
        pytest.skip(f"shared KuaiRand slice not present at {SHARED_SLICE}")
    log = load_kuairand(SHARED_SLICE)
    meta, counts = log.meta, log.meta["policy_counts"]
    # README facts, measured on the file as published (before the loader's policies).
    assert meta["rows_read"] == 94_784
    assert meta["as_read"]["click_rate"] == pytest.approx(0.438, abs=5e-4)
    assert meta["as_read"]["clicked_duration_mean_s"] == pytest.approx(46.1, abs=0.05)
    assert counts["exact_duplicate_rows_dropped"] + counts["duplicate_key_rows_dropped"] == 2_979
    # Three more pairs differ only in milliseconds: the same impression key at the schema's one-second grain.
    assert counts["same_second_duplicate_rows_dropped"] == 3
    assert meta["rows_kept"] == 94_784 - 2_979 - 3
    assert (meta["n_users"], meta["n_items"]) == (21_184, 5_564)
    assert (meta["first_date"], meta["last_date"]) == ("2022-04-25", "2022-04-30")
    assert log.impressions["day"].max() == 5
    # Feature files have missing values, and every logged id has a feature row.
    assert meta["missing_feature_values"]["users"] and meta["missing_feature_values"]["items"]
    assert counts["user_ids_missing_from_features"] == counts["item_ids_missing_from_features"] == 0
