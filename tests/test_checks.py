"""Pre-flight checks (dmtl.checks): input that would fail a stage later is refused before any output is written.

Every case runs the prepare stage (:func:`dmtl.stages.prepare.run_prepare`, what ``dvc repro`` runs first) on a
small generic log and asserts the message (file, column or key, fix) and that the stage wrote nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dmtl import params as P
from dmtl.checks import check_size, input_summary, preflight
from dmtl.io import read_json
from dmtl.schema import DataError, LogSize
from dmtl.stages.prepare import run_prepare

REPO = Path(__file__).resolve().parents[1]
DAY0 = 1650844800  # 2022-04-25 00:00:00 UTC


def small_log(n_users: int = 10, n_items: int = 40, n_days: int = 6) -> pd.DataFrame:
    """Each user sees 6 items a day for ``n_days`` days; every third impression is clicked."""
    u, d, k = np.meshgrid(np.arange(n_users), np.arange(n_days), np.arange(6), indexing="ij")
    u, d, k = u.ravel(), d.ravel(), k.ravel()
    click = ((u + k + d) % 3 == 0).astype(int)
    return pd.DataFrame(
        {
            "user_id": u,
            "item_id": (u * 7 + d * 3 + k) % n_items,
            "time": DAY0 + d * 86400 + u * 600 + k * 10,
            "click": click,
            "duration": click * (5.0 + (u * 13 + k * 7 + d) % 60),
        }
    )


def write_log(folder: Path, frame: pd.DataFrame, items: pd.DataFrame | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "impressions.csv", index=False)
    if items is not None:
        items.to_csv(folder / "items.csv", index=False)
    return folder


def params_for(folder: Path, **overrides: Any) -> dict[str, Any]:
    base = {
        "data.source": "generic",
        "data.path": str(folder),
        "eval.ks": [5, 10],
        "eval.bait_min_impressions": 3,
    }
    return P.load(REPO / "params.yaml", {**base, **overrides})


def refused(params: dict[str, Any], root: Path) -> DataError:
    """Run the prepare stage, expect a DataError, and check it left nothing behind."""
    with pytest.raises(DataError) as err:
        run_prepare(params, root)
    written = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    assert written == [], f"the refused stage wrote {written}"
    assert "\n" not in str(err.value)
    return err.value


def test_preflight_measures_the_log_without_loading_it(tmp_path: Path) -> None:
    frame = small_log()
    size = preflight(params_for(write_log(tmp_path / "log", frame)))
    assert size.where == str(tmp_path / "log" / "impressions.csv")
    assert (size.n_users, size.n_items, size.n_days) == (10, frame["item_id"].nunique(), 6)
    assert size.n_clicks == int(frame["click"].sum()) == 120  # 360 impressions, one in three clicked
    assert size.max_item_impressions == int(frame["item_id"].value_counts().max())
    # The simulator's sizes come from its preset, without simulating anything.
    sim = preflight(P.load(REPO / "params.yaml", {"data.preset": "tiny"}))
    assert (sim.n_users, sim.n_items, sim.n_days) == (1200, 800, 7)


def test_catalogue_smaller_than_the_largest_k(tmp_path: Path) -> None:
    folder = write_log(tmp_path / "log", small_log())
    err = refused(params_for(folder, **{"eval.ks": [5, 50]}), tmp_path / "root")
    assert err.file == str(folder / "impressions.csv") and err.column == "item_id"
    assert "the catalogue has 40 item(s), fewer than the largest K in eval.ks = [5, 50]" in err.problem
    assert err.fix.startswith("lower eval.ks to values of at most 40")


def test_catalogue_smaller_than_k_on_the_simulator_fails_before_simulating(tmp_path: Path) -> None:
    params = P.load(REPO / "params.yaml", {"data.preset": "tiny", "data.sim.n_items": 120})
    err = refused(params, tmp_path / "root")
    assert err.file == "simulator preset 'tiny' (data.preset, data.sim)"
    assert (
        "the catalogue has 120 item(s), fewer than the largest K in eval.ks = [50, 100, 200]" in err.problem
    )


def test_duplicate_k_is_refused_at_validation() -> None:
    with pytest.raises(
        P.ParamsError, match=r"eval.ks = \[50, 100, 100\] repeats an entry; list each one once"
    ):
        P.load(REPO / "params.yaml", {"eval.ks": [50, 100, 100]})


def test_too_few_days_for_the_split(tmp_path: Path) -> None:
    folder = write_log(tmp_path / "log", small_log())
    err = refused(params_for(folder, **{"data.val_days": 3, "data.test_days": 3}), tmp_path / "root")
    assert err.column == "day"
    assert (
        "the log spans 6 day(s), but data.val_days = 3 and data.test_days = 3 need at least 7" in err.problem
    )
    assert "lower data.val_days / data.test_days" in err.fix


def test_a_single_user(tmp_path: Path) -> None:
    frame = small_log()
    folder = write_log(tmp_path / "log", frame[frame["user_id"] == 0])
    err = refused(params_for(folder), tmp_path / "root")
    assert (
        err.column == "user_id"
        and "the log has 1 user(s); a recommendation study needs at least 2" in err.problem
    )


def test_a_log_without_clicks(tmp_path: Path) -> None:
    folder = write_log(tmp_path / "log", small_log().assign(click=0, duration=0.0))
    err = refused(params_for(folder), tmp_path / "root")
    assert err.column == "click" and "no clicked impression" in err.problem


def test_no_item_shown_often_enough_for_the_clickbait_rule(tmp_path: Path) -> None:
    folder = write_log(tmp_path / "log", small_log())
    most = int(small_log()["item_id"].value_counts().max())
    err = refused(params_for(folder, **{"eval.bait_min_impressions": most + 1}), tmp_path / "root")
    assert f"no item is shown {most + 1} times (the most shown: {most})" in err.problem
    assert f"lower eval.bait_min_impressions to at most {most}" in err.fix


def test_clickbait_rule_checked_on_the_training_split_before_writing(tmp_path: Path) -> None:
    # Shown often enough over the whole log (pre-flight passes), but not within the training days.
    frame = small_log()
    most = int(frame["item_id"].value_counts().max())
    folder = write_log(tmp_path / "log", frame)
    err = refused(params_for(folder, **{"eval.bait_min_impressions": most}), tmp_path / "root")
    assert f"no item has {most} training impressions and a click" in err.problem


def test_the_training_split_check_is_the_evaluations_bait_rule(tmp_path: Path) -> None:
    """check_prepared refuses exactly when the evaluation's rule (dmtl.truth) would be empty."""
    from dmtl.checks import check_prepared
    from dmtl.features import prepare
    from dmtl.sources.generic import load_generic
    from dmtl.truth import LoggedTruth

    prepared = prepare(load_generic(write_log(tmp_path / "log", small_log())), 1, 2, "mean")
    train = prepared.impressions[prepared.split_mask("train")]
    clicked = train.groupby("item_idx")["click"].sum()
    shown = train.groupby("item_idx").size()
    most = int(shown[clicked >= 1].max())
    for bait_min, empty in ((most, False), (most + 1, True)):
        study = params_for(tmp_path / "log", **{"eval.bait_min_impressions": bait_min})
        if empty:
            with pytest.raises(DataError):
                check_prepared(study, prepared)
            with pytest.raises(DataError, match="the bait rule is empty"):
                LoggedTruth(prepared, bait_min)
        else:
            check_prepared(study, prepared)
            assert LoggedTruth(prepared, bait_min).bait.any()


@pytest.mark.parametrize("name", ["raw_item_id", "item_idx", "split"])
def test_item_feature_named_like_an_internal_column(tmp_path: Path, name: str) -> None:
    items = pd.DataFrame({"item_id": np.arange(40), name: np.arange(40) * 1000})
    folder = write_log(tmp_path / "log", small_log(), items)
    err = refused(params_for(folder), tmp_path / "root")
    assert err.file == str(folder / "items.csv") and err.column == name
    assert "has a name the study uses internally" in err.problem and f"'{name}_feature'" in err.fix


def test_internal_feature_names_are_refused_for_every_source() -> None:
    size = LogSize("a source", 10, 40, 6, 5, 9, user_features=("age", "raw_user_id"))
    with pytest.raises(
        DataError, match="user feature column 'raw_user_id' has a name the study uses internally"
    ):
        check_size(P.load(REPO / "params.yaml", {"eval.ks": [5]}), size)


def test_column_map_collision_is_refused_at_validation() -> None:
    with pytest.raises(
        P.ParamsError, match=r"maps several schema names to one column: \{'ts': \['time', 'day'\]\}"
    ):
        P.load(REPO / "params.yaml", {"data.columns": {"time": "ts", "day": "ts"}})
    # An unmapped required name reads the column of its own name: mapping click to 'duration' collides.
    with pytest.raises(P.ParamsError, match=r"\{'duration': \['click', 'duration'\]\}"):
        P.load(REPO / "params.yaml", {"data.columns": {"click": "duration"}})


def test_far_future_timestamp_is_named_in_the_first_seconds(tmp_path: Path) -> None:
    frame = small_log()
    frame.loc[7, "time"] = 10_000_000_000  # year 2286
    folder = write_log(tmp_path / "log", frame)
    err = refused(params_for(folder), tmp_path / "root")
    assert (
        err.column == "time"
        and "timestamps outside the years 2000-2100, e.g. line 9 (2286-11-20" in err.problem
    )


def test_data_path_that_is_a_file(tmp_path: Path) -> None:
    folder = write_log(tmp_path / "log", small_log())
    err = refused(params_for(folder / "impressions.csv"), tmp_path / "root")
    assert err.problem == "is a file, not a folder" and str(folder) in err.fix
    assert "impressions.csv/impressions.csv" not in str(err)


def test_capped_durations_reach_the_data_summary(tmp_path: Path) -> None:
    frame = small_log()
    clicked = np.flatnonzero(frame["click"].to_numpy() == 1)
    frame.loc[clicked[0], "duration"] = 1e12  # a click on day 0 (training)
    folder = write_log(tmp_path / "log", frame)
    summary = run_prepare(params_for(folder), tmp_path / "root")
    written = read_json(tmp_path / "root" / "metrics" / "data.json")
    assert written["policy_counts"]["durations_capped"] == 1 and written["duration_cap_s"] == 14_400.0
    assert summary["policy_counts"] == written["policy_counts"]
    # tau is the mean clicked training duration (days 0-2 of 6) with the outlier at its cap.
    train = frame[(frame["time"] < DAY0 + 3 * 86400) & (frame["click"] == 1)]
    assert written["tau_seconds"] == pytest.approx(float(np.minimum(train["duration"], 14_400.0).mean()))


def test_input_summary_is_empty_for_the_simulator() -> None:
    class Simulated:
        meta: dict = {}

    assert input_summary(Simulated()) == {}
