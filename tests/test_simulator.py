"""Tests of the simulated feed (dmtl.sources.simulator): determinism, schema, calibration, oracle, knobs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from dmtl.features import prepare
from dmtl.schema import IMPRESSION_COLUMNS, FeedLog, check_feed_log
from dmtl.sources.simulator.calibration import CALIBRATION_TARGETS, calibration
from dmtl.sources.simulator.config import PRESETS, SimConfig, make_config
from dmtl.sources.simulator.feed import publisher_click_history
from dmtl.sources.simulator.oracle import Oracle, affinity_columns
from dmtl.sources.simulator.world import simulate

SEED = 2021


@pytest.fixture(scope="module")
def tiny():
    return simulate(make_config("tiny"), SEED)


@pytest.fixture(scope="module")
def default():
    return simulate(make_config("default"), SEED)


def write_simulation(log: FeedLog, oracle: Oracle, directory: Path) -> None:
    """The log's tables and its oracle, as the prepare stage writes them."""
    log.write(directory)
    oracle.write(directory / "oracle")


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


# -- determinism --------------------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path, tiny):
    log, oracle = tiny
    log2, oracle2 = simulate(make_config("tiny"), SEED)
    write_simulation(log, oracle, tmp_path / "a")
    write_simulation(log2, oracle2, tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert {"impressions.parquet", "users.parquet", "items.parquet", "oracle/oracle.json"} <= set(a)
    assert a.keys() == b.keys()
    assert all(a[name] == b[name] for name in a)


def test_same_seed_default_preset_identical(default):
    log, oracle = default
    log2, oracle2 = simulate(make_config("default"), SEED)
    pd.testing.assert_frame_equal(log.impressions, log2.impressions)
    pd.testing.assert_frame_equal(log.items, log2.items)
    pd.testing.assert_frame_equal(oracle.users, oracle2.users)


def test_different_seeds_differ(tiny):
    log, oracle = tiny
    log2, oracle2 = simulate(make_config("tiny"), SEED + 1)
    assert not np.array_equal(oracle.items["quality"], oracle2.items["quality"])
    assert not log.impressions.equals(log2.impressions)
    assert not np.array_equal(
        log.impressions["click"].to_numpy()[:1000], log2.impressions["click"].to_numpy()[:1000]
    )


def test_bad_seed_rejected():
    with pytest.raises(ValueError, match="seed"):
        simulate(make_config("tiny"), -1)


# -- schema -------------------------------------------------------------------------------------------------


def test_log_follows_the_generic_schema(tiny):
    log, oracle = tiny
    cfg = make_config("tiny")
    check_feed_log(log)
    imp = log.impressions
    assert list(imp.columns) == list(IMPRESSION_COLUMNS)
    assert {c: str(t) for c, t in imp.dtypes.items()} == IMPRESSION_COLUMNS
    assert list(log.users.columns) == [
        "user_id",
        "gender",
        "age_band",
        "city_tier",
        "device",
        "activity_level",
    ]
    assert list(log.items.columns) == ["item_id", "category", "length_band", "publisher", "title_style"]
    # No latent leaks into what models see.
    latent = {"quality", "attractiveness", "is_clickbait", "reading_speed", "popularity", "length_s"}
    assert not latent & (set(log.users.columns) | set(log.items.columns) | set(imp.columns))
    assert (imp.loc[imp["click"] == 0, "duration"] == 0).all()
    assert (imp.loc[imp["click"] == 1, "duration"] > 0).all()
    assert set(imp["day"].unique()) == set(range(cfg.n_days))
    np.testing.assert_array_equal(imp["time"].to_numpy() // 86_400, imp["day"].to_numpy())
    assert (np.diff(imp["time"].to_numpy()) >= 0).all()
    assert imp["position"].between(0, cfg.feed_length - 1).all()
    assert not imp.duplicated(["user_id", "item_id"]).any()
    assert 20_000 <= len(imp) <= 40_000
    assert len(oracle.items) == cfg.n_items and len(oracle.users) == cfg.n_users


def test_length_band_follows_the_latent_length(tiny):
    log, oracle = tiny
    edges = make_config("tiny").length_band_edges_s
    expected = np.array(["short", "medium", "long", "very_long"])[
        np.searchsorted(edges, oracle.items["length_s"])
    ]
    np.testing.assert_array_equal(log.items["length_band"].to_numpy(dtype=object), expected)


def test_repeats_are_redrawn_not_dropped(default):
    """The feed replaces an item the user already saw, so the log keeps (almost) its scheduled size."""
    log, _ = default
    assert not log.impressions.duplicated(["user_id", "item_id"]).any()
    assert len(log.impressions) > 0.95 * PRESETS["default"].expected_impressions


def test_every_item_available_and_test_items_seen_in_training(default):
    log, _ = default
    imp = log.impressions
    last = imp["day"].max()
    train_items = imp.loc[imp["day"] < last - 1, "item_id"].unique()
    test = imp.loc[imp["day"] >= last - 1, "item_id"]
    assert np.isin(test, train_items).mean() > 0.99
    # Every day shows most of the corpus: items are not tied to a day.
    per_day = imp.groupby("day")["item_id"].nunique()
    assert per_day.min() > 0.8 * len(log.items)


# -- calibration --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_calibration_holds(name, tiny, default):
    log, oracle = {"tiny": tiny, "default": default}[name]
    cal = calibration(log, oracle)
    assert set(cal["checks"]) == set(CALIBRATION_TARGETS)
    failed = {k: cal[k] for k, ok in cal["checks"].items() if not ok}
    assert not failed, f"{name}: {failed}"


def test_calibration_numbers_match_a_direct_computation(tiny):
    log, oracle = tiny
    cal = calibration(log, oracle)
    imp = log.impressions
    clicked = imp[imp["click"] == 1]
    mean = clicked["duration"].astype(float).mean()
    bait = oracle.items.set_index("item_id").loc[imp["item_id"], "is_clickbait"].to_numpy()
    assert cal["ctr"] == pytest.approx(imp["click"].mean())
    assert cal["mean_clicked_duration"] == pytest.approx(mean)
    assert cal["share_clicks_above_mean"] == pytest.approx((clicked["duration"] > mean).mean())
    assert cal["bait_ctr"] == pytest.approx(imp["click"][bait].mean())
    assert cal["bait_ctr_ratio"] == pytest.approx(imp["click"][bait].mean() / imp["click"][~bait].mean())
    assert cal["position_ctr"] == pytest.approx(imp.groupby("position")["click"].mean().tolist())


def test_calibration_check_fails_on_a_miscalibrated_log(tiny):
    log, oracle = tiny
    imp = log.impressions.copy()
    imp["duration"] = imp["duration"] * 3  # mean clicked duration ~150 s: outside 40..60
    bad = calibration(type(log)(imp, log.users, log.items), oracle)
    assert bad["checks"]["mean_clicked_duration"] is False
    assert bad["checks"]["ctr"] is True


def test_position_effect_lowers_ctr(default):
    ctr = calibration(*default)["position_ctr"]
    assert len(ctr) == PRESETS["default"].feed_length
    assert ctr[0] > ctr[-1] * 3
    assert all(a > b for a, b in zip(ctr, ctr[1:], strict=False))


# -- oracle -------------------------------------------------------------------------------------------------


def test_oracle_click_prob_matches_logged_clicks(default):
    """Summed P(examined) * P(click) over impressions predicts the clicks, overall and by group."""
    log, oracle = default
    imp = log.impressions
    u, i = imp["user_id"].to_numpy(), imp["item_id"].to_numpy()
    p = oracle.examination_prob(imp["position"].to_numpy()) * oracle.pair_click_prob(u, i)
    click = imp["click"].to_numpy()
    bait = oracle.is_clickbait[oracle.item_index(i)]
    groups = {"all": np.ones(len(imp), bool), "bait": bait, "rest": ~bait}
    groups.update({f"pos{k}": imp["position"].to_numpy() == k for k in (0, 3, 7)})
    for name, g in groups.items():
        sd = math.sqrt((p[g] * (1 - p[g])).sum())
        assert abs(click[g].sum() - p[g].sum()) < 4.5 * sd, name


def test_oracle_duration_matches_logged_durations(default):
    log, oracle = default
    imp = log.impressions[log.impressions["click"] == 1]
    u, i = imp["user_id"].to_numpy(), imp["item_id"].to_numpy()
    dur = imp["duration"].to_numpy(np.float64)
    bait = oracle.is_clickbait[oracle.item_index(i)]
    for g in (np.ones(len(imp), bool), bait, ~bait):
        expected = oracle.pair_expected_duration(u[g], i[g]).mean()
        se = dur[g].std() / math.sqrt(g.sum())
        assert abs(dur[g].mean() - expected) < 4.5 * se
    # Long reads at tau = 50 s: the closed form (incomplete beta) against the sampled durations.
    p_long = oracle.pair_long_read_prob(u, i, tau_seconds=50.0)
    sd = math.sqrt((p_long * (1 - p_long)).sum())
    assert abs((dur > 50).sum() - p_long.sum()) < 4.5 * sd


def test_clickbait_is_clicked_more_and_read_less_in_truth(default):
    _, oracle = default
    users = np.arange(500)
    bait = oracle.is_clickbait
    p = oracle.click_prob(users)
    d = oracle.expected_duration(users)
    assert p[:, bait].mean() > 1.5 * p[:, ~bait].mean()
    assert d[:, bait].mean() < 0.5 * d[:, ~bait].mean()


def test_oracle_matrices_agree_with_pairs_and_subsets(tiny):
    _, oracle = tiny
    users = np.array([5, 0, 5, 17])
    items = np.array([3, 42, 7])
    full = oracle.click_prob(users)
    assert full.shape == (4, len(oracle.items))
    np.testing.assert_allclose(full[0], full[2])
    sub = oracle.click_prob(users, items)
    np.testing.assert_allclose(sub, full[:, oracle.item_index(items)])
    uu, ii = np.meshgrid(users, items, indexing="ij")
    np.testing.assert_allclose(sub.ravel(), oracle.pair_click_prob(uu.ravel(), ii.ravel()))
    dur = oracle.expected_duration(users, items)
    np.testing.assert_allclose(dur.ravel(), oracle.pair_expected_duration(uu.ravel(), ii.ravel()))
    np.testing.assert_allclose(oracle.expected_read_time(users, items), sub * dur)
    lr = oracle.long_read_prob(users, items, tau_seconds=30.0)
    np.testing.assert_allclose(lr.ravel(), oracle.pair_long_read_prob(uu.ravel(), ii.ravel(), 30.0))
    assert ((lr >= 0) & (lr <= 1)).all()


def test_oracle_rejects_unknown_ids(tiny):
    _, oracle = tiny
    with pytest.raises(ValueError, match="unknown user"):
        oracle.click_prob(np.array([10**9]))
    with pytest.raises(ValueError, match="unknown item"):
        oracle.click_prob(np.array([0]), np.array([-3]))
    with pytest.raises(ValueError, match="as many"):
        oracle.pair_click_prob(np.array([0, 1]), np.array([0]))


def _hand_oracle() -> Oracle:
    """Two users, two items, two topics: every formula can be evaluated by hand."""
    cfg = SimConfig(
        n_users=2,
        n_items=2,
        n_topics=2,
        match_floor=0.1,
        click_bias=-2.0,
        match_click_weight=0.5,
        attractiveness_weight=0.8,
        quality_click_weight=0.1,
        bounce_bias=-1.0,
        quality_read_effect=1.0,
        match_read_effect=0.0,
        read_fraction_bias=0.0,
        read_fraction_concentration=2.0,  # with mean 0.5: Beta(1, 1), the uniform
        bounce_median_s=4.0,
        bounce_sigma=0.5,
        position_decay=0.5,
    )
    items = pd.DataFrame(
        {
            "item_id": [10, 11],
            "topic": [0, 1],
            "length_s": [100.0, 60.0],
            "quality": [0.0, -2.0],
            "attractiveness": [0.0, 2.0],
            "is_clickbait": [False, True],
        }
    )
    aff = affinity_columns(2)
    users = pd.DataFrame(
        {
            "user_id": [7, 3],
            "reading_speed": [1.0, 2.0],
            "click_bias": [0.0, 0.3],
            aff[0]: [1.0, 0.5],
            aff[1]: [0.0, 0.5],
        }
    )
    return Oracle(items, users, cfg)


def test_oracle_formulas_by_hand():
    oracle = _hand_oracle()
    sig = special.expit
    # user 7: topic-0 affinity 1 -> match log(2 * 1 + 0.1) on item 10 and log(0.1) on item 11.
    expected_click = np.array(
        [
            [sig(-2.0 + 0.5 * math.log(2.1)), sig(-2.0 + 0.5 * math.log(0.1) + 0.8 * 2.0 - 0.2)],
            [sig(-2.0 + 0.3 + 0.5 * math.log(1.1)), sig(-2.0 + 0.3 + 0.5 * math.log(1.1) + 1.6 - 0.2)],
        ]
    )
    np.testing.assert_allclose(oracle.click_prob(np.array([7, 3])), expected_click)
    # Item 10 (quality 0): bounce sigmoid(-1); otherwise reads a uniform fraction of length / speed.
    bounce_mean = 4.0 * math.exp(0.125)
    p10 = sig(-1.0)
    full = np.array([[100.0, 60.0], [50.0, 30.0]])
    p_bounce = np.array([p10, sig(-1.0 + 2.0)])
    frac = np.array([0.5, sig(-2.0)])
    expected_dur = p_bounce * bounce_mean + (1 - p_bounce) * full * frac
    np.testing.assert_allclose(oracle.expected_duration(np.array([7, 3])), expected_dur)
    np.testing.assert_allclose(oracle.expected_read_time(np.array([7, 3])), expected_click * expected_dur)
    # P(duration > 30 s | click) for user 7, item 10: uniform fraction must exceed 0.3; a bounce exceeds 30 s
    # with the log-normal tail.
    bounce_long = special.ndtr(-(math.log(30.0) - math.log(4.0)) / 0.5)
    expected_long = p10 * bounce_long + (1 - p10) * 0.7
    assert oracle.long_read_prob(np.array([7]), np.array([10]), tau_seconds=30.0)[0, 0] == pytest.approx(
        expected_long
    )
    # User 3 reads item 10 in 50 s at most: a 60-s read is impossible, only bounces could (and hardly do).
    assert oracle.long_read_prob(np.array([3]), np.array([10]), tau_seconds=60.0)[0, 0] < 1e-6
    np.testing.assert_allclose(oracle.examination_prob(np.array([0, 3, 8])), [1.0, 0.5, 1 / 3])


def test_oracle_round_trip(tmp_path, tiny):
    log, oracle = tiny
    write_simulation(log, oracle, tmp_path / "sim")
    write_simulation(log, oracle, tmp_path / "sim")  # overwriting an existing world is fine
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == [
        "impressions.parquet",
        "items.parquet",
        "oracle",
        "users.parquet",
    ]  # no temporary files left behind
    log2, oracle2 = FeedLog.read(tmp_path / "sim"), Oracle.read(tmp_path / "sim" / "oracle")
    check_feed_log(log2)
    pd.testing.assert_frame_equal(log.impressions, log2.impressions)
    assert oracle2.config == oracle.config and oracle2.seed == SEED
    pd.testing.assert_frame_equal(oracle.items, oracle2.items)
    users = np.arange(50)
    np.testing.assert_array_equal(oracle.expected_read_time(users), oracle2.expected_read_time(users))


# -- the world's structure ----------------------------------------------------------------------------------


def test_clickbait_share(default):
    _, oracle = default
    n = len(oracle.items)
    share = 0.15
    assert abs(oracle.is_clickbait.mean() - share) < 4 * math.sqrt(share * (1 - share) / n)
    bait = oracle.items[oracle.items["is_clickbait"]]
    rest = oracle.items[~oracle.items["is_clickbait"]]
    assert bait["attractiveness"].mean() > rest["attractiveness"].mean() + 1.0
    assert bait["quality"].mean() < rest["quality"].mean() - 1.0


def test_observed_features_carry_signal_about_latents(default):
    log, oracle = default
    users = log.users.merge(oracle.users, on="user_id")
    theta = users[affinity_columns(PRESETS["default"].n_topics)].to_numpy()
    # Share of affinity variance explained by the observed-feature segment (means per combination).
    segment = [users[c].to_numpy() for c in ("gender", "age_band", "city_tier", "device", "activity_level")]
    seg_mean = pd.DataFrame(theta).groupby(segment).transform("mean").to_numpy()
    explained = 1 - ((theta - seg_mean) ** 2).sum() / ((theta - theta.mean(0)) ** 2).sum()
    assert 0.05 < explained < 0.8  # real signal, but users stay idiosyncratic
    # Reading speed is weakly slower with age.
    age = users["age_band"].map({"<18": 0, "18-24": 1, "25-30": 2, "31-40": 3, "41-50": 4, "50+": 5})
    r = np.corrcoef(age, np.log(users["reading_speed"]))[0, 1]
    assert -0.5 < r < -0.05
    # Activity level is a bin of the latent activity: the means are ordered.
    act = users.groupby("activity_level")["activity"].mean()
    assert act["low"] < act["medium"] < act["high"]


def test_title_style_only_weakly_tells_clickbait(default):
    log, oracle = default
    bait = oracle.is_clickbait
    by_style = pd.Series(bait).groupby(log.items["title_style"].to_numpy()).mean()
    assert by_style.max() > by_style.min() + 0.05  # some signal
    assert by_style.max() < 0.5  # but no style is mostly clickbait


def test_logging_policy_is_not_uniform(default):
    log, oracle = default
    counts = log.impressions["item_id"].value_counts()
    assert counts.iloc[: len(oracle.items) // 10].sum() > 0.25 * len(log.impressions)  # popularity skew
    # Topic match: users are shown their favourite topics far more than supply alone would.
    imp = log.impressions.sample(20_000, random_state=0)
    theta = oracle.users[affinity_columns(PRESETS["default"].n_topics)].to_numpy()
    topic = oracle.items["topic"].to_numpy()[oracle.item_index(imp["item_id"].to_numpy())]
    shown_aff = theta[oracle.user_index(imp["user_id"].to_numpy()), topic].mean()
    assert shown_aff > 3 * (1 / PRESETS["default"].n_topics)


# -- knobs --------------------------------------------------------------------------------------------------


def _cal(**overrides) -> dict:
    return calibration(*simulate(make_config("tiny", overrides), SEED))


def test_more_clickbait_means_more_clicks_on_clickbait():
    shares = [_cal(clickbait_share=s)["bait_click_share"] for s in (0.05, 0.15, 0.3)]
    assert shares[0] < shares[1] < shares[2]


def test_attractiveness_weight_raises_bait_ctr_ratio():
    assert (
        _cal(attractiveness_weight=0.3)["bait_ctr_ratio"] < _cal(attractiveness_weight=1.2)["bait_ctr_ratio"]
    )


def test_quality_read_effect_lowers_bait_long_reads():
    weak, strong = _cal(quality_read_effect=0.2), _cal(quality_read_effect=1.5)
    assert strong["bait_long_read_ratio"] < weak["bait_long_read_ratio"]
    assert weak["bait_long_read_ratio"] > 0.5 > strong["bait_long_read_ratio"]


def test_no_clickbait_world_runs():
    cal = _cal(clickbait_share=0.0)
    assert cal["bait_click_share"] == 0.0
    assert cal["checks"]["ctr"] and not cal["checks"]["bait_ctr_ratio"]  # nothing to compare: check fails


def test_unique_user_item_off_allows_repeats():
    log, _ = simulate(make_config("tiny", {"unique_user_item": False}), SEED)
    assert log.impressions.duplicated(["user_id", "item_id"]).any()


def test_knob_defaults_are_the_current_world():
    """Every regime knob of issue 15 defaults to 'absent': no cold item, no fan effect, no context column."""
    cfg = make_config("default")
    assert (cfg.cold_item_share, cfg.fan_strength, cfg.log_publisher_clicks) == (0.0, 0.0, False)


# -- regime knobs (docs/protocol.md section 5, issue 15) -----------------------------------------------------


def _sim(**overrides) -> tuple[FeedLog, Oracle]:
    return simulate(make_config("tiny", overrides), SEED)


def test_density_knob_scales_impressions_per_user_and_item_in_the_same_world():
    (sparse_log, sparse_oracle), (dense_log, dense_oracle) = (
        _sim(sessions_per_user_day=0.25),
        _sim(sessions_per_user_day=1.0),
    )
    pd.testing.assert_frame_equal(sparse_oracle.items, dense_oracle.items)  # the world does not move
    pd.testing.assert_frame_equal(sparse_oracle.users, dense_oracle.users)
    sparse, dense = calibration(sparse_log, sparse_oracle), calibration(dense_log, dense_oracle)
    # Scheduled impressions per user = n_days * sessions_per_user_day * feed_length (activity has mean 1).
    assert sparse["impressions_per_user"] == pytest.approx(7 * 0.25 * 8, rel=0.1)
    assert dense["impressions_per_user"] == pytest.approx(7 * 1.0 * 8, rel=0.1)
    for key in ("impressions_per_user", "impressions_per_item", "long_reads_per_item"):
        assert 3.3 < dense[key] / sparse[key] < 4.5, key


def test_corpus_size_moves_impressions_per_item_not_per_user():
    small, large = _cal(n_items=400), _cal(n_items=1600)
    # Per user about the same (a small corpus drops a few more repeated (user, item) slots).
    assert small["impressions_per_user"] == pytest.approx(large["impressions_per_user"], rel=0.1)
    assert 3.5 < small["impressions_per_item"] / large["impressions_per_item"] < 4.5


def test_bounce_bias_lowers_the_long_read_share_with_the_same_clicks():
    runs = {b: _sim(bounce_bias=b) for b in (-1.3, 0.5, 2.0)}
    shown = runs[-1.3][0].impressions.drop(columns="duration")
    for log, _ in runs.values():  # reading is drawn after the clicks: impressions and clicks are identical
        pd.testing.assert_frame_equal(log.impressions.drop(columns="duration"), shown)
    cal = [calibration(*run) for run in runs.values()]
    bounce = [c["bounce_share"] for c in cal]
    above_mean = [c["share_clicks_above_mean"] for c in cal]
    above_50 = [c["share_clicks_above_50s"] for c in cal]
    assert bounce[0] < bounce[1] < bounce[2]
    assert above_mean[0] > above_mean[1] > above_mean[2]
    assert above_50[0] > above_50[1] > above_50[2]
    assert above_mean[2] < 0.25 < above_mean[0]  # documented range: ~0.35 at the default, ~0.16 at 2.0
    assert cal[0]["ctr"] == cal[2]["ctr"]


def test_cold_items_first_appear_on_their_release_day_and_are_out_of_vocabulary_in_test():
    cfg = make_config("tiny", {"cold_item_share": 0.3})
    log, oracle = simulate(cfg, SEED)
    imp = log.impressions
    release = oracle.release_day
    cold = release > 0
    assert abs(cold.mean() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / cfg.n_items)
    assert set(release[cold].tolist()) == {cfg.n_days - cfg.cold_item_days}
    assert (imp["day"].to_numpy() >= release[oracle.item_index(imp["item_id"].to_numpy())]).all()
    # With test_days = cold_item_days the cold items are the test period's new items: the out-of-vocabulary id.
    prepared = prepare(log, val_days=1, test_days=cfg.cold_item_days)
    test = prepared.impressions[prepared.split_mask("test")]
    encoded = prepared.items["item_id"].to_numpy()[test["item_idx"].to_numpy()]
    test_cold = release[oracle.item_index(test["item_id"].to_numpy())] > 0
    assert 0.15 < test_cold.mean() < 0.5
    assert (encoded[test_cold] == 0).all()
    assert (encoded[~test_cold] > 0).mean() > 0.99


def test_cold_item_share_moves_the_cold_share_of_test_impressions():
    runs = {s: _sim(cold_item_share=s) for s in (0.0, 0.1, 0.3)}
    figures = {s: calibration(*run)["cold_test_impression_share"] for s, run in runs.items()}
    assert figures[0.0] == 0.0
    assert figures[0.0] < figures[0.1] < figures[0.3]
    for share in (0.1, 0.3):  # about the cold share of the corpus (a little more: cold items are fresh)
        assert share - 0.05 < figures[share] < share + 0.12
    # The cold items are nested as the share grows, and the world is otherwise the same.
    cold = {s: oracle.release_day > 0 for s, (_, oracle) in runs.items()}
    assert (cold[0.1] <= cold[0.3]).all()
    latents = runs[0.0][1].items.drop(columns="release_day")
    pd.testing.assert_frame_equal(runs[0.3][1].items.drop(columns="release_day"), latents)


def test_fan_strength_moves_the_privileged_figures():
    cal = {s: _cal(fan_strength=s) for s in (0.0, 1.0, 2.0)}
    info = [c["fan_info_share"] for c in cal.values()]
    click_share = [c["fan_click_share"] for c in cal.values()]
    lift = [c["history_ctr_ratio"] for c in cal.values()]
    assert info[0] == 0.0 and 0.0 < info[1] < info[2]
    assert click_share[0] < click_share[1] < click_share[2]
    assert lift[0] < lift[1] < lift[2]
    # The policy does not know fans: the same impressions are shown whatever the strength.
    assert len({c["fan_impression_share"] for c in cal.values()}) == 1
    # tiny has 4 publishers per topic, so a fan publisher is a large share of its topic (default: ~5%).
    assert 0.05 < cal[0.0]["fan_impression_share"] < 0.25


def test_fans_are_sparse_and_do_not_move_with_strength():
    (log0, oracle0), (log2, oracle2) = _sim(fan_strength=0.0), _sim(fan_strength=2.0)
    pd.testing.assert_frame_equal(oracle0.fans, oracle2.fans)
    cols = ["user_id", "item_id", "day", "time", "position"]
    pd.testing.assert_frame_equal(log0.impressions[cols], log2.impressions[cols])
    per_user = oracle2.fans.groupby("user_id").size()
    assert per_user.max() <= 3 and per_user.mean() > 2.5  # fan_publishers = 3, drawn with replacement
    assert not oracle2.fans.duplicated().any()
    # Fans sit in the user's topics: their publishers' home topics have far more than average affinity.
    theta = oracle2.users[affinity_columns(20)].to_numpy()
    home = oracle2.fans["publisher"].to_numpy() % 20
    assert theta[oracle2.fans["user_id"].to_numpy(), home].mean() > 3 / 20


def test_oracle_with_fans_matches_logged_clicks_and_reads():
    log, oracle = simulate(make_config("tiny", {"fan_strength": 2.0, "n_users": 4_000}), SEED)
    imp = log.impressions
    u, i = imp["user_id"].to_numpy(), imp["item_id"].to_numpy()
    p = oracle.examination_prob(imp["position"].to_numpy()) * oracle.pair_click_prob(u, i)
    click = imp["click"].to_numpy() == 1
    fan = oracle.pair_fan_affinity(u, i)
    assert fan.sum() > 2_000
    for g in (fan, ~fan):
        sd = math.sqrt((p[g] * (1 - p[g])).sum())
        assert abs(click[g].sum() - p[g].sum()) < 4.5 * sd
    dur = imp["duration"].to_numpy(np.float64)
    for g in (fan & click, ~fan & click):
        expected = oracle.pair_expected_duration(u[g], i[g]).mean()
        assert abs(dur[g].mean() - expected) < 4.5 * dur[g].std() / math.sqrt(g.sum())
        p_long = oracle.pair_long_read_prob(u[g], i[g], tau_seconds=50.0)
        assert abs((dur[g] > 50).sum() - p_long.sum()) < 4.5 * math.sqrt((p_long * (1 - p_long)).sum())
    # Fans click and read more than the same model without the fan term would say.
    assert click[fan].mean() > 1.5 * click[~fan].mean()


def test_oracle_fan_formulas_by_hand():
    base = _hand_oracle()
    cfg = dataclasses.replace(base.config, fan_strength=1.0)
    items = base.items.assign(publisher=[0, 2])
    oracle = Oracle(items, base.users, cfg, fans=pd.DataFrame({"user_id": [7], "publisher": [2]}))
    users = np.array([7, 3])
    # User 7 is a fan of publisher 2, which publishes item 11.
    np.testing.assert_array_equal(oracle.fan_affinity(users), [[False, True], [False, False]])
    np.testing.assert_array_equal(
        oracle.pair_fan_affinity(np.array([7, 7, 3]), np.array([11, 10, 11])), [1, 0, 0]
    )
    sig = special.expit
    expected_click = base.click_prob(users)
    expected_click[0, 1] = sig(-2.0 + 0.5 * math.log(0.1) + 0.8 * 2.0 - 0.2 + 1.0)  # + fan_strength
    np.testing.assert_allclose(oracle.click_prob(users), expected_click)
    # Reading of (7, 11): bounce logit -1 + 2 (quality -2) - 0.5 (half the fan strength); read-fraction logit
    # -2 + 0.5; the full read is 60 s at speed 1. Every other pair reads as without fans.
    bounce_mean = 4.0 * math.exp(0.125)
    p_bounce = sig(1.0 - 0.5)
    expected_dur = base.expected_duration(users)
    expected_dur[0, 1] = p_bounce * bounce_mean + (1 - p_bounce) * 60.0 * sig(-1.5)
    np.testing.assert_allclose(oracle.expected_duration(users), expected_dur)
    np.testing.assert_allclose(
        oracle.pair_bounce_prob(np.array([7, 3]), np.array([11, 11])), [p_bounce, sig(1.0)]
    )
    # With fan_strength 0 the fans are there but change nothing.
    off = Oracle(items, base.users, base.config, fans=oracle.fans)
    np.testing.assert_array_equal(off.click_prob(users), base.click_prob(users))
    assert off.fan_affinity(users)[0, 1]


def test_publisher_click_history_by_hand():
    # (user, publisher, time, click, expected earlier clicks), deliberately out of time order.
    rows = [
        (1, 5, 20, 0, 1),
        (1, 5, 10, 1, 0),
        (1, 5, 30, 0, 2),
        (1, 5, 20, 1, 1),  # same time as the first row: neither sees the other's click
        (1, 6, 25, 1, 0),  # another publisher
        (2, 5, 15, 1, 0),  # another user
        (1, 5, 5, 0, 0),  # the earliest
        (1, 6, 40, 0, 1),
    ]
    user, pub, time, click, expected = (np.array(col) for col in zip(*rows, strict=True))
    np.testing.assert_array_equal(publisher_click_history(user, pub, time, click), expected)


def test_logged_publisher_clicks_are_the_causal_history():
    log, oracle = _sim(fan_strength=2.0, log_publisher_clicks=True)
    imp = log.impressions
    assert list(imp.columns) == [*IMPRESSION_COLUMNS, "ctx_publisher_clicks"]
    assert imp["ctx_publisher_clicks"].dtype == np.int64
    check_feed_log(log)
    # Everything else is the log without the column.
    plain, _ = _sim(fan_strength=2.0)
    pd.testing.assert_frame_equal(imp[list(IMPRESSION_COLUMNS)], plain.impressions)
    # A plain loop over a few users' impressions in time order (no ties within a user here).
    publisher = oracle.items["publisher"].to_numpy()[oracle.item_index(imp["item_id"].to_numpy())]
    some = imp.assign(publisher=publisher)[imp["user_id"] < 100]
    assert not some.duplicated(["user_id", "time"]).any()
    for _, rows in some.sort_values("time").groupby("user_id"):
        seen: dict[int, int] = {}
        for pub, clicked, logged in rows[["publisher", "click", "ctx_publisher_clicks"]].itertuples(
            index=False
        ):
            assert logged == seen.get(pub, 0)
            seen[pub] = seen.get(pub, 0) + clicked
    assert (imp["ctx_publisher_clicks"] > 0).mean() > 0.05


def test_oracle_round_trip_keeps_fans_and_release_days(tmp_path):
    log, oracle = _sim(fan_strength=2.0, cold_item_share=0.2)
    oracle.write(tmp_path / "oracle")
    back = Oracle.read(tmp_path / "oracle")
    pd.testing.assert_frame_equal(back.fans, oracle.fans)
    np.testing.assert_array_equal(back.release_day, oracle.release_day)
    users = np.arange(40)
    np.testing.assert_array_equal(back.click_prob(users), oracle.click_prob(users))
    # An oracle written before fans existed reads as a world without them.
    (tmp_path / "oracle" / "fans.parquet").unlink()
    assert len(Oracle.read(tmp_path / "oracle").fans) == 0


# -- configuration ------------------------------------------------------------------------------------------


def test_presets_are_sized_as_documented():
    assert set(PRESETS) == {"tiny", "small", "default", "large"}
    assert 20_000 <= PRESETS["tiny"].expected_impressions <= 40_000
    assert 500_000 <= PRESETS["default"].expected_impressions <= 700_000
    # Repeats dropped by the feed are ~1% at this corpus size, so >= 11M scheduled keeps >= 10M shown.
    assert PRESETS["large"].expected_impressions >= 11_000_000


def test_make_config_applies_and_converts_overrides():
    cfg = make_config("tiny", {"clickbait_share": 0.3, "n_users": 500.0, "length_band_edges_s": [30, 60, 90]})
    assert cfg.clickbait_share == 0.3 and cfg.n_users == 500 and isinstance(cfg.n_users, int)
    assert cfg.length_band_edges_s == (30.0, 60.0, 90.0)
    assert cfg.n_items == PRESETS["tiny"].n_items
    assert make_config() == PRESETS["default"]
    assert SimConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("huge", None, r"valid: \['default', 'large', 'small', 'tiny'\]"),
        ("tiny", {"clickbait_shares": 0.2}, r"unknown simulator knob.*valid: \[.*'clickbait_share'"),
        ("tiny", {"clickbait_share": 1.5}, r"clickbait_share must lie in \[0, 1\]"),
        ("tiny", {"policy_explore": -0.1}, r"policy_explore must lie in \[0, 1\]"),
        ("tiny", {"n_users": 0}, "n_users must be an integer >= 1"),
        ("tiny", {"n_users": 10.5}, "n_users must be an integer >= 1"),
        ("tiny", {"n_days": True}, "n_days must be an integer >= 1"),
        ("tiny", {"sessions_per_user_day": 0.0}, "sessions_per_user_day must be > 0"),
        ("tiny", {"popularity_sigma": -1.0}, "popularity_sigma must be >= 0"),
        ("tiny", {"click_bias": float("nan")}, "click_bias must be a finite number"),
        ("tiny", {"attractiveness_weight": "high"}, "attractiveness_weight must be a finite number"),
        ("tiny", {"unique_user_item": 1}, "unique_user_item must be true or false"),
        ("tiny", {"length_band_edges_s": [90, 60, 120]}, "length_band_edges_s must be 3 increasing"),
        ("tiny", {"cold_item_share": 1.0}, "cold_item_share must be below 1"),
        ("tiny", {"cold_item_share": -0.1}, r"cold_item_share must lie in \[0, 1\]"),
        ("tiny", {"cold_item_share": 0.2, "cold_item_days": 7}, "cold_item_days must be below n_days=7"),
        ("tiny", {"cold_item_days": 0}, "cold_item_days must be an integer >= 1"),
        ("tiny", {"fan_strength": -1.0}, "fan_strength must be >= 0"),
        ("tiny", {"fan_publishers": 0}, "fan_publishers must be an integer >= 1"),
        ("tiny", {"log_publisher_clicks": "yes"}, "log_publisher_clicks must be true or false"),
    ],
)
def test_make_config_rejects_bad_input(preset, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(preset, overrides)


@pytest.mark.slow
def test_large_preset_has_ten_million_impressions():
    log, oracle = simulate(make_config("large"), 0)
    assert len(log.impressions) >= 10_000_000
    assert all(calibration(log, oracle)["checks"].values())
