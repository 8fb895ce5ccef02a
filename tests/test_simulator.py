"""Tests of the simulated feed (dmtl.sources.simulator): determinism, schema, calibration, oracle, knobs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from dmtl.schema import IMPRESSION_COLUMNS, FeedLog, check_feed_log
from dmtl.sources.simulator.calibration import CALIBRATION_TARGETS, calibration
from dmtl.sources.simulator.config import PRESETS, SimConfig, make_config
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


# -- configuration ------------------------------------------------------------------------------------------


def test_presets_are_sized_as_documented():
    assert set(PRESETS) == {"tiny", "default", "large"}
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
        ("huge", None, r"valid: \['default', 'large', 'tiny'\]"),
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
