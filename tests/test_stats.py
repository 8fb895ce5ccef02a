"""Tests of dmtl.stats: t intervals by hand, paired differences, verdicts and the JSON summary; the
hierarchical bootstrap on cases with a known answer, the weighted AUC against explicit resamples, Holm on a
textbook example, TOST on constructed cases, bounded intervals and the [0, 0] case."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as st

from dmtl.metrics import auc, gauc
from dmtl.stats.auc import bootstrap_auc
from dmtl.stats.bootstrap import (
    Draws,
    EvalSample,
    bootstrap_gauc,
    bootstrap_per_user,
    bootstrap_ranking,
    seed_means,
    user_weighted_means,
)
from dmtl.stats.decisions import (
    DECISIONS,
    bootstrap_p,
    decide,
    equivalence_p,
    holm,
    t_equivalence_p,
    t_test_p,
)
from dmtl.stats.intervals import (
    bounded_t_interval,
    difference_bounds,
    mean_ci,
    paired_diff,
    percentile_interval,
)
from dmtl.stats.summary import bootstrap_summary

T_975_DF2 = 4.302652729911275  # Student-t 97.5% quantile, 2 degrees of freedom (tables: 4.303)
T_975_DF3 = 3.182446305284263  # 3 degrees of freedom (tables: 3.182)


def test_t_quantiles_are_the_table_values() -> None:
    assert st.t.ppf(0.975, 2) == pytest.approx(T_975_DF2)
    assert st.t.ppf(0.975, 3) == pytest.approx(T_975_DF3)


def test_mean_ci_by_hand() -> None:
    r = mean_ci([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(5 / 3)  # squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3
    half = T_975_DF3 * sd / 2
    assert r["mean"] == 2.5 and r["sd"] == pytest.approx(sd) and r["n"] == 4 and r["n_missing"] == 0
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((2.5 - half, 2.5 + half))
    assert r["values"] == [1.0, 2.0, 3.0, 4.0]


def test_mean_ci_level_and_nan_seeds() -> None:
    r90 = mean_ci([1.0, 2.0, 3.0, 4.0], level=0.9)
    assert r90["ci_high"] - 2.5 == pytest.approx(st.t.ppf(0.95, 3) * math.sqrt(5 / 3) / 2)
    r = mean_ci([1.0, float("nan"), 3.0])
    assert r["mean"] == 2.0 and r["n"] == 2 and r["n_missing"] == 1
    assert r["ci_high"] - 2.0 == pytest.approx(st.t.ppf(0.975, 1))  # sd of [1, 3] is sqrt(2), over sqrt(n=2)
    with pytest.raises(ValueError, match="level"):
        mean_ci([1.0, 2.0], level=95)


def test_mean_ci_one_and_zero_values() -> None:
    one = mean_ci([0.7])
    assert one["mean"] == 0.7 and one["n"] == 1 and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    none = mean_ci([float("nan")])
    assert math.isnan(none["mean"]) and none["n"] == 0 and none["n_missing"] == 1


def test_paired_diff_known_numbers() -> None:
    d = paired_diff([0.70, 0.72, 0.74], [0.68, 0.69, 0.70])
    # diffs 0.02, 0.03, 0.04: mean 0.03, sd 0.01, half-width 4.3027 * 0.01 / sqrt(3) = 0.024841.
    assert d["mean"] == pytest.approx(0.03) and d["sd"] == pytest.approx(0.01) and d["n"] == 3
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((0.03 - 0.0248414, 0.03 + 0.0248414), abs=1e-6)
    assert d["diffs"] == pytest.approx([0.02, 0.03, 0.04])


def test_paired_diff_is_narrower_than_unpaired_when_seeds_share_variance() -> None:
    seed_effect = np.array([0.0, 0.1, -0.1, 0.05])
    a, b = 0.7 + seed_effect + [0.01, 0.012, 0.009, 0.011], 0.7 + seed_effect
    d = paired_diff(a, b)
    assert d["ci_low"] > 0
    assert d["ci_high"] - d["ci_low"] < mean_ci(a)["ci_high"] - mean_ci(a)["ci_low"]


def test_paired_diff_drops_pairs_with_a_nan_and_checks_lengths() -> None:
    d = paired_diff([1.0, float("nan"), 3.0, 4.0], [0.5, 1.0, 2.0, float("nan")])
    assert d["n"] == 2 and d["n_missing"] == 2 and d["mean"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="per seed"):
        paired_diff([1.0, 2.0], [1.0])


# ------------------------------------------------------------------------------- bounded seed intervals
def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _expit(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_bounded_t_interval_by_hand() -> None:
    x = [0.2, 0.3, 0.4]
    z = [_logit(v) for v in x]  # -1.3863, -0.8473, -0.4055
    mean = sum(z) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in z) / 2)
    half = T_975_DF2 * sd / math.sqrt(3)
    low, high = bounded_t_interval(x, 0.95, (0.0, 1.0))
    assert (low, high) == pytest.approx((_expit(mean - half), _expit(mean + half)))
    # Any range: the same interval, rescaled.
    low2, high2 = bounded_t_interval([2.0, 3.0, 4.0], 0.95, (0.0, 10.0))
    assert (low2, high2) == pytest.approx((10 * low, 10 * high))


def test_bounded_intervals_never_leave_the_range() -> None:
    # The KuaiRand bait_share case of issue 15: small shares, the plain t interval crosses zero.
    shares = [0.01, 0.0, 0.03]
    assert mean_ci(shares)["ci_low"] < 0
    r = mean_ci(shares, bounds=(0.0, 1.0))
    assert 0.0 <= r["ci_low"] <= r["ci_high"] <= 1.0 and r["interval"] == "logit-t"
    assert r["mean"] == pytest.approx(0.04 / 3)  # the reported number is still the mean
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 8))
        x = np.clip(rng.choice([0.0, 1.0, 0.001, 0.999]) + rng.normal(0, 0.05, n), 0, 1)
        low, high = mean_ci(x, 0.99, bounds=(0.0, 1.0))["ci_low"], mean_ci(x, 0.99, (0.0, 1.0))["ci_high"]
        assert 0.0 <= low <= high <= 1.0
        y = np.clip(x + rng.normal(0, 0.3, n), 0, 1)
        d = paired_diff(x, y, 0.99, bounds=(0.0, 1.0))
        assert -1.0 <= d["ci_low"] <= d["ci_high"] <= 1.0


def test_bounded_interval_edge_cases() -> None:
    assert mean_ci([0.0, 0.0, 0.0], bounds=(0.0, 1.0))["ci_low"] == 0.0  # all equal: the point [0, 0]
    assert mean_ci([0.3, 0.3], bounds=(0.0, 1.0))["ci_high"] == 0.3
    assert all(math.isnan(v) for v in bounded_t_interval([0.3], 0.95, (0.0, 1.0)))
    assert difference_bounds((0.0, 1.0)) == (-1.0, 1.0)
    with pytest.raises(ValueError, match="outside the bounds"):
        mean_ci([0.5, 1.2], bounds=(0.0, 1.0))
    with pytest.raises(ValueError, match="bounds"):
        mean_ci([0.5, 0.6], bounds=(1.0, 0.0))


# ---------------------------------------------------------------------------------- bootstrap draws
def test_draws_are_multinomial_counts_and_reproducible() -> None:
    d = Draws.draw(n_users=50, n_seeds=5, n_boot=300, seed=3)
    assert d.users.shape == (300, 50) and d.seeds.shape == (300, 5) and d.n_boot == 300
    assert (d.users.sum(axis=1) == 50).all() and (d.seeds.sum(axis=1) == 5).all()
    assert d.users.min() >= 0 and d.seeds.min() >= 0
    # Each user is drawn once per replicate on average; P(a user is left out) = (1 - 1/n)^n ~ e^-1.
    assert d.users.mean() == 1.0
    assert (d.users == 0).mean() == pytest.approx((1 - 1 / 50) ** 50, abs=0.02)
    again = Draws.draw(50, 5, 300, 3)
    assert np.array_equal(d.users, again.users) and np.array_equal(d.seeds, again.seeds)
    assert not np.array_equal(d.users, Draws.draw(50, 5, 300, 4).users)
    head = d.head(10)
    assert np.array_equal(head.users, d.users[:10]) and np.array_equal(head.seeds, d.seeds[:10])
    with pytest.raises(ValueError, match="n_boot"):
        d.head(301)


def test_user_weighted_means_by_hand() -> None:
    x = np.array([1.0, 2.0, np.nan, 4.0])  # user 2 does not count (e.g. no long read)
    w = np.array([[1, 1, 1, 1], [2, 0, 1, 1], [0, 0, 4, 0]])
    got = user_weighted_means(x, w)
    assert got[0] == pytest.approx(7 / 3) and got[1] == pytest.approx(6 / 3) and math.isnan(got[2])
    # Weighted users (GAUC: impressions per user): sum m a x / sum m a.
    a = np.array([1.0, 3.0, 5.0, 2.0])
    assert user_weighted_means(x, w, weights=a)[1] == pytest.approx((2 * 1 + 1 * 2 * 4) / (2 * 1 + 1 * 2))
    # Several columns at once, each with its own missing users.
    cols = np.array([x, [np.nan, 1.0, 1.0, 1.0]])
    assert user_weighted_means(cols, w)[1] == pytest.approx([2.0, 1.0])


def test_seed_means_by_hand() -> None:
    per_seed = np.array([[0.1, 0.2, 0.6], [0.1, 0.2, 0.6], [0.1, np.nan, 0.6]])
    weights = np.array([[1, 1, 1], [3, 0, 0], [0, 2, 1]])
    got = seed_means(per_seed, weights)
    assert got == pytest.approx([0.3, 0.1, 0.6])  # a nan seed drawn twice does not count


def _explicit(x: np.ndarray, users: np.ndarray, seeds: np.ndarray) -> float:
    """The definition, by repetition: mean over the drawn seeds of the mean over the drawn users."""
    per_seed = []
    for s in np.repeat(np.arange(x.shape[0]), seeds):
        drawn = np.repeat(x[s], users)
        per_seed.append(np.nanmean(drawn))
    return float(np.mean(per_seed))


def test_bootstrap_per_user_is_the_explicit_resample() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((3, 12))  # 3 seeds x 12 users
    x[:, [2, 7]] = np.nan  # users without a positive
    draws = Draws.draw(12, 3, 25, seed=1)
    r = bootstrap_per_user({"dmtl": {"recall_long@100": x}}, draws)["dmtl"]["recall_long@100"]
    assert r.per_seed == pytest.approx(np.nanmean(x, axis=1))
    assert r.value == pytest.approx(np.nanmean(x))
    for b in range(draws.n_boot):
        assert r.draws[b] == pytest.approx(_explicit(x, draws.users[b], draws.seeds[b]))


def test_bootstrap_all_users_and_seeds_equal_has_zero_width() -> None:
    x = np.full((4, 30), 0.25)
    r = bootstrap_per_user({"dmtl": {"recall_long@100": x}}, Draws.draw(30, 4, 200, 0))["dmtl"]
    reps = r["recall_long@100"]
    assert reps.value == 0.25 and (reps.draws == 0.25).all()
    assert percentile_interval(reps.draws, 0.95) == (0.25, 0.25)


def test_bootstrap_two_users_exact_distribution() -> None:
    # One seed, users worth 0 and 1: the resample draws (0, 0), (0, 1) or (1, 1) with probability 1/4, 1/2,
    # 1/4, so the replicate is 0, 0.5 or 1 with those probabilities.
    draws = Draws.draw(2, 1, 4000, seed=5)
    reps = bootstrap_per_user({"m": {"recall_long@100": np.array([[0.0, 1.0]])}}, draws)["m"]
    d = reps["recall_long@100"].draws
    assert set(np.unique(d)) == {0.0, 0.5, 1.0}
    assert np.array_equal(d, draws.users[:, 1] / 2.0)  # each replicate is its own draw's mean
    freq = [(d == v).mean() for v in (0.0, 0.5, 1.0)]
    assert freq == pytest.approx([0.25, 0.5, 0.25], abs=0.03)  # 4000 draws: sd of a share <= 0.008


def test_bootstrap_two_seeds_exact_distribution() -> None:
    # Users all equal, seeds worth 0.2 and 0.6: replicate 0.2, 0.4 or 0.6 with probability 1/4, 1/2, 1/4.
    x = np.array([[0.2, 0.2, 0.2], [0.6, 0.6, 0.6]])
    draws = Draws.draw(3, 2, 4000, seed=6)
    d = bootstrap_per_user({"m": {"recall_long@100": x}}, draws)["m"]["recall_long@100"].draws
    assert d == pytest.approx(0.2 + 0.2 * draws.seeds[:, 1])
    freq = [np.isclose(d, v).mean() for v in (0.2, 0.4, 0.6)]
    assert freq == pytest.approx([0.25, 0.5, 0.25], abs=0.03)


def test_bootstrap_differences_are_paired_over_users_and_seeds() -> None:
    # Model b is model a minus 0.05 for every user and seed; users and seeds vary a lot. Pairing makes the
    # difference exactly 0.05 in every replicate while each model's own interval is wide.
    rng = np.random.default_rng(2)
    a = rng.uniform(0.1, 0.9, size=(5, 200))
    reps = bootstrap_per_user(
        {"a": {"recall_long@100": a}, "b": {"recall_long@100": a - 0.05}}, Draws.draw(200, 5, 300, 0)
    )
    ra, rb = reps["a"]["recall_long@100"], reps["b"]["recall_long@100"]
    assert ra.draws - rb.draws == pytest.approx(np.full(300, 0.05))
    low, high = percentile_interval(ra.draws, 0.95)
    assert high - low > 0.02


def test_bootstrap_per_user_on_a_sub_population_of_the_user_axis() -> None:
    # The retrieval population is users 1 and 3 of a 4-user axis: its columns take those users' weights.
    draws = Draws.draw(4, 1, 50, seed=0)
    x = np.array([[0.0, 1.0]])
    d = bootstrap_per_user({"m": {"recall_long@100": x}}, draws, users=np.array([1, 3]))["m"]
    w = draws.users[:, [1, 3]].astype(float)
    with np.errstate(invalid="ignore"):
        want = w[:, 1] / w.sum(axis=1)  # nan where neither retrieval user is drawn
    assert np.array_equal(np.isnan(d["recall_long@100"].draws), np.isnan(want))
    assert d["recall_long@100"].draws[~np.isnan(want)] == pytest.approx(want[~np.isnan(want)])


def test_bootstrap_per_user_rejects_misaligned_input() -> None:
    draws = Draws.draw(5, 2, 10, 0)
    with pytest.raises(ValueError, match="seeds"):
        bootstrap_per_user({"m": {"recall_long@100": np.zeros((3, 5))}}, draws)
    with pytest.raises(ValueError, match="n_seeds"):
        bootstrap_per_user({"m": {"recall_long@100": np.zeros((2, 4))}}, draws)


# -------------------------------------------------------------------------------------- weighted AUC
def _resampled(u: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the explicitly resampled data set (each user's rows ``counts[user]`` times) and the
    group of each row (every copy of a user its own group, as a fresh user of the resample)."""
    idx, grp = [], []
    for user, c in enumerate(counts):
        rows = np.flatnonzero(u == user)
        for copy in range(c):
            idx.append(rows)
            grp.append(np.full(rows.size, copy * counts.size + user))
    if not idx:
        return np.empty(0, dtype=int), np.empty(0, dtype=int)
    return np.concatenate(idx), np.concatenate(grp)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("positive_rate", [0.1, 0.5, 0.9])
def test_weighted_auc_equals_auc_of_the_explicit_resample(ties: bool, positive_rate: float) -> None:
    rng = np.random.default_rng(int(ties) * 10 + int(positive_rate * 10))
    n, n_users = 300, 25
    u = rng.integers(0, n_users, n)
    y = (rng.random(n) < positive_rate).astype(int)
    s = rng.integers(0, 5, n).astype(float) + y if ties else rng.standard_normal(n) + y
    draws = Draws.draw(n_users, 1, 12, seed=7)
    weights = np.vstack([np.ones((1, n_users), dtype=np.int32), draws.users])
    got_auc = bootstrap_auc(y, s, u, weights)
    got_gauc = bootstrap_gauc(y, s, u, weights)
    assert got_auc[0] == auc(y, s)  # all ones: the observed data, to the last bit
    assert got_gauc[0] == pytest.approx(gauc(y, s, u))
    for r in range(weights.shape[0]):
        idx, grp = _resampled(u, weights[r])
        assert got_auc[r] == pytest.approx(auc(y[idx], s[idx]), abs=1e-12)
        assert got_gauc[r] == pytest.approx(gauc(y[idx], s[idx], grp), abs=1e-12)
        # A user drawn twice is the same group twice: one group of doubled rows gives the same GAUC.
        assert got_gauc[r] == pytest.approx(gauc(y[idx], s[idx], u[idx]), abs=1e-12)


def test_weighted_auc_by_hand_and_one_class_replicates() -> None:
    # User 0: positive 0.9, negative 0.1; user 1: positive 0.2, negative 0.5.
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.1, 0.2, 0.5])
    u = np.array([0, 0, 1, 1])
    w = np.array([[1, 1], [2, 0], [1, 2], [0, 0]])
    got = bootstrap_auc(y, s, u, w)
    # Observed: pairs (0.9 > 0.1), (0.9 > 0.5), (0.2 > 0.1), (0.2 < 0.5): 3 of 4.
    assert got[0] == 0.75
    assert got[1] == 1.0  # only user 0, twice: every positive above every negative
    # User 1 twice: weights pos (1, 2), neg (1, 2): correct pairs 0.9>0.1 (1), 0.9>0.5 (2), 0.2>0.1 (2),
    # 0.2<0.5 (4 wrong): 5 of 9.
    assert got[2] == pytest.approx(5 / 9)
    assert math.isnan(got[3])  # nobody drawn
    only_pos = bootstrap_auc([1, 1], [0.1, 0.2], [0, 1], np.array([[1, 1]]))
    assert math.isnan(only_pos[0])


def test_weighted_auc_rejects_bad_weights_and_users() -> None:
    with pytest.raises(ValueError, match="multiplicities"):
        bootstrap_auc([0, 1], [0.1, 0.2], [0, 1], np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="user"):
        bootstrap_auc([0, 1], [0.1, 0.2], [0, 2], np.array([[1, 1]]))
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_auc([0, 1], [0.1, np.nan], [0, 1], np.array([[1, 1]]))


def _sample(rng: np.random.Generator, n: int, n_users: int) -> EvalSample:
    user = rng.integers(0, n_users, n)
    click = (rng.random(n) < 0.3).astype(np.int8)
    long_read = ((click == 1) & (rng.random(n) < 0.5)).astype(np.int8)
    return EvalSample(n_users, user, click, long_read)


def test_bootstrap_ranking_tasks_and_seed_mean() -> None:
    rng = np.random.default_rng(4)
    sample = _sample(rng, 400, 30)
    scores = rng.standard_normal((2, 400)) + sample.click + sample.long_read
    teacher = {t: rng.standard_normal((2, 400)) + sample.click for t in ("click", "ctcvr", "cvr")}
    draws = Draws.draw(30, 2, 8, seed=0)
    out = bootstrap_ranking(
        {"dmtl": dict.fromkeys(("click", "ctcvr", "cvr"), scores), "teacher": teacher},
        sample,
        draws,
    )
    clicked = sample.click == 1
    ctcvr = sample.click * sample.long_read
    for k in range(2):
        assert out["dmtl"]["auc_click"].per_seed[k] == auc(sample.click, scores[k])
        assert out["dmtl"]["auc_ctcvr"].per_seed[k] == auc(ctcvr, scores[k])
        assert out["dmtl"]["auc_cvr"].per_seed[k] == auc(sample.long_read[clicked], scores[k, clicked])
        assert out["dmtl"]["gauc_cvr"].per_seed[k] == pytest.approx(
            gauc(sample.long_read[clicked], scores[k, clicked], sample.impression_user[clicked])
        )
        assert out["teacher"]["auc_ctcvr"].per_seed[k] == auc(ctcvr, teacher["ctcvr"][k])
    # Replicate b: the seed-weighted mean of each drawn seed's AUC on the resampled users.
    for b in range(draws.n_boot):
        per_seed = [
            auc(sample.click[idx], scores[k][idx])
            for k in range(2)
            for idx in [_resampled(sample.impression_user, draws.users[b])[0]]
        ]
        want = np.dot(draws.seeds[b], per_seed) / 2
        assert out["dmtl"]["auc_click"].draws[b] == pytest.approx(want, abs=1e-12)


# ------------------------------------------------------------------------------------ tests, p-values
def test_percentile_interval_by_hand() -> None:
    d = np.arange(101, dtype=float) / 100  # 0.00 .. 1.00
    assert percentile_interval(d, 0.9) == pytest.approx((0.05, 0.95))
    assert percentile_interval(np.array([np.nan, 0.2, 0.4]), 0.5) == pytest.approx((0.25, 0.35))
    assert all(math.isnan(v) for v in percentile_interval(np.array([np.nan]), 0.9))


def test_bootstrap_p_by_hand() -> None:
    assert bootstrap_p(np.array([-1.0, 1.0, 2.0, 3.0])) == 0.5  # 2 * min(1, 3) / 4
    assert bootstrap_p(np.array([0.1, 0.2, 0.3])) == 0.0
    assert bootstrap_p(np.array([-0.1, -0.2])) == 0.0
    assert bootstrap_p(np.zeros(10)) == 1.0  # zero counts on both sides
    assert bootstrap_p(np.array([0.0, 1.0, 1.0, 1.0])) == 0.5
    assert math.isnan(bootstrap_p(np.array([np.nan])))


def test_holm_textbook_example() -> None:
    # Four tests at alpha = 0.05 (the example of Holm's method on Wikipedia): sorted p 0.005, 0.01, 0.03,
    # 0.04 against 0.05/4, 0.05/3, 0.05/2, 0.05/1: the first two are rejected, then 0.03 > 0.025 stops.
    p = {"A": 0.01, "B": 0.04, "C": 0.03, "D": 0.005}
    adjusted, rejected = holm(p, 0.05)
    assert rejected == {"A", "D"}
    # Adjusted: D 4 * 0.005 = 0.02; A 3 * 0.01 = 0.03; C 2 * 0.03 = 0.06; B max(1 * 0.04, 0.06) = 0.06.
    assert adjusted == pytest.approx({"D": 0.02, "A": 0.03, "C": 0.06, "B": 0.06})


def test_holm_edge_cases() -> None:
    adjusted, rejected = holm({"x": 0.3, "y": float("nan"), "z": 0.02}, 0.05)
    assert math.isnan(adjusted["y"]) and "y" not in rejected  # not tested, not counted in m
    assert adjusted["z"] == pytest.approx(0.04) and adjusted["x"] == pytest.approx(0.3) and rejected == {"z"}
    assert holm({"a": 0.02, "b": 0.03})[0] == pytest.approx(
        {"a": 0.04, "b": 0.04}
    )  # monotone: max(0.04, 0.03)
    assert holm({"a": 0.6, "b": 0.7})[0] == {"a": 1.0, "b": 1.0}  # capped at 1
    assert holm({}) == ({}, set())
    with pytest.raises(ValueError, match="alpha"):
        holm({"a": 0.1}, 5)


def test_bootstrap_tost_on_constructed_distributions() -> None:
    inside = np.linspace(-0.002, 0.002, 1000)
    assert equivalence_p(inside, 0.005) == 0.0
    shifted = np.linspace(0.001, 0.009, 1000)  # half the replicates beyond +margin
    assert equivalence_p(shifted, 0.005) == pytest.approx(0.5, abs=0.001)
    d = np.array([-0.006, -0.001, 0.0, 0.002, 0.007])
    assert equivalence_p(d, 0.005) == pytest.approx(1 / 5)  # max(#<= -m, #>= m) / B = max(1, 1) / 5
    assert equivalence_p(np.zeros(5), 0.001) == 0.0
    with pytest.raises(ValueError, match="margin"):
        equivalence_p(d, 0.0)


def test_seed_only_tests_by_formula() -> None:
    d = np.array([0.001, 0.002, 0.003])
    se = 0.001 / math.sqrt(3)
    assert t_test_p(d) == pytest.approx(2 * st.t.sf(0.002 / se, 2))
    want = max(st.t.sf((0.002 + 0.01) / se, 2), st.t.cdf((0.002 - 0.01) / se, 2))
    assert t_equivalence_p(d, 0.01) == pytest.approx(want)
    assert t_equivalence_p(d, 0.01) < 0.05 < t_equivalence_p(d, 0.002)
    assert t_test_p([0.0, 0.0, 0.0]) == 1.0 and t_test_p([0.1, 0.1]) == 0.0
    assert t_equivalence_p([0.1, 0.1], 0.2) == 0.0 and t_equivalence_p([0.1, 0.1], 0.05) == 1.0
    assert math.isnan(t_test_p([0.1])) and math.isnan(t_equivalence_p([0.1], 0.2))


NAN = float("nan")


@pytest.mark.parametrize(
    ("diff", "p_holm", "p_eq_holm", "margin", "higher", "constant", "want"),
    [
        (0.02, 0.01, 1.0, 0.005, True, None, ("better", "dmtl better than ctr")),
        (-0.02, 0.01, 1.0, None, True, None, ("worse", "dmtl worse than ctr")),
        # bait share: lower is better, so a positive difference is worse
        (0.02, 0.01, 1.0, None, False, None, ("worse", "dmtl worse than ctr")),
        (0.001, 0.6, 0.01, 0.005, True, None, ("equivalent", "equivalent within ±0.005")),
        (0.001, 0.6, 0.2, 0.005, True, None, ("not_enough_evidence", "not enough evidence")),
        # without a margin nothing is called equivalent
        (0.0, 1.0, NAN, None, True, None, ("not_enough_evidence", "not enough evidence")),
        # zero in every replicate: said as such, whatever the equivalence test says
        (0.0, 1.0, 0.0, 0.005, True, (0.0, 0.0), ("no_difference", "no difference: both 0")),
        (
            0.0,
            1.0,
            0.0,
            0.005,
            True,
            (None, None),
            ("no_difference", "no difference: identical in every replicate"),
        ),
        (NAN, NAN, NAN, None, True, None, ("undetermined", "undetermined (no finite difference)")),
    ],
)
def test_decide_reads_every_case(
    diff: float,
    p_holm: float,
    p_eq_holm: float,
    margin: float | None,
    higher: bool,
    constant: tuple | None,
    want: tuple[str, str],
) -> None:
    got = decide(
        diff=diff,
        p_holm=p_holm,
        p_equivalence_holm=p_eq_holm,
        margin=margin,
        alpha=0.05,
        higher_is_better=higher,
        constant=constant,
        reference="dmtl",
        other="ctr",
    )
    assert got == want and got[0] in DECISIONS


# ------------------------------------------------------------------------------------------- summary
def _study(rng: np.random.Generator, n_seeds: int = 3, n_users: int = 400) -> dict:
    """dmtl is better than ctr on recall_long@100 (shift 0.1 per user); ctcvr_hard equals dmtl up to noise
    of +-0.001 (equivalent within 0.005); weighted_lr is dmtl +-0.05 on alternate users: the same mean, but
    resampled users move the difference by about 0.003 either way; nobody retrieves bait."""
    base = rng.uniform(0.2, 0.6, size=(n_seeds, n_users))
    base[:, :40] = np.nan  # users without a long read
    noise = rng.uniform(-0.001, 0.001, size=base.shape)
    zero = np.zeros((n_seeds, n_users))
    return {
        "dmtl": {"recall_long@100": base, "bait_share@100": zero},
        "ctr": {"recall_long@100": base - 0.1, "bait_share@100": zero},
        "ctcvr_hard": {"recall_long@100": base + noise, "bait_share@100": zero},
        "weighted_lr": {
            "recall_long@100": base + 0.05 * (-1.0) ** np.arange(n_users),
            "bait_share@100": zero,
        },
    }


def test_bootstrap_summary_verdicts_structure_and_json() -> None:
    rng = np.random.default_rng(0)
    per_user = _study(rng)
    out = bootstrap_summary(per_user, reference="dmtl", n_boot=400, seed=1, margins={"recall_long": 0.005})
    json.dumps(out, allow_nan=False)
    assert out["method"]["n_seeds"] == 3 and out["method"]["n_users"] == 400
    dmtl = out["models"]["dmtl"]["recall_long@100"]
    assert dmtl["mean"] == pytest.approx(np.nanmean(per_user["dmtl"]["recall_long@100"]))
    assert dmtl["values"] == pytest.approx(np.nanmean(per_user["dmtl"]["recall_long@100"], axis=1))
    assert dmtl["n"] == 3 and dmtl["interval"] == "bootstrap" and dmtl["n_boot"] == 400
    assert 0 <= dmtl["ci_low"] < dmtl["mean"] < dmtl["ci_high"] <= 1
    c = out["comparisons"]
    assert set(c) == {"dmtl_vs_ctr", "dmtl_vs_ctcvr_hard", "dmtl_vs_weighted_lr"}
    assert c["dmtl_vs_ctr"]["recall_long@100"]["decision"] == "better"
    assert c["dmtl_vs_ctr"]["recall_long@100"]["verdict"] == "dmtl better than ctr"
    assert c["dmtl_vs_ctr"]["recall_long@100"]["mean"] == pytest.approx(0.1)
    assert c["dmtl_vs_ctr"]["recall_long@100"]["p"] == 0.0
    eq = c["dmtl_vs_ctcvr_hard"]["recall_long@100"]
    assert eq["decision"] == "equivalent" and eq["verdict"] == "equivalent within ±0.005"
    assert -0.005 < eq["ci_low"] <= eq["ci_high"] < 0.005
    # The [0, 0] case: nobody retrieves bait. Not "no significant difference", not even "equivalent".
    for other in ("ctr", "ctcvr_hard", "weighted_lr"):
        bait = c[f"dmtl_vs_{other}"]["bait_share@100"]
        assert (bait["ci_low"], bait["ci_high"], bait["mean"]) == (0.0, 0.0, 0.0)
        assert bait["decision"] == "no_difference" and bait["verdict"] == "no difference: both 0"
        assert bait["p"] == 1.0
    # Holm over every comparison of the dataset (one family): m = 3 competitors x 2 metrics.
    assert out["method"]["families"] == {"all": 6}
    for key, block in c.items():
        other = key.split("_vs_")[1]
        for metric, d in block.items():
            assert d["p_holm"] >= d["p"] and d["family"] == "all" and d["decision"] in DECISIONS
            assert -1.0 <= d["ci_low"] <= d["ci_high"] <= 1.0
            per_seed = np.subtract(
                out["models"]["dmtl"][metric]["values"], out["models"][other][metric]["values"]
            )
            assert d["diffs"] == pytest.approx(per_seed)


def test_bootstrap_summary_identical_models_and_no_margin() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(2, 100))
    out = bootstrap_summary(
        {"dmtl": {"recall_long@100": x}, "ctr": {"recall_long@100": x.copy()}}, reference="dmtl", n_boot=100
    )
    d = out["comparisons"]["dmtl_vs_ctr"]["recall_long@100"]
    assert d["verdict"] == "no difference: identical in every replicate" and d["margin"] is None


def test_bootstrap_summary_not_enough_evidence_and_holm_families() -> None:
    rng = np.random.default_rng(2)
    per_user = _study(rng)
    out = bootstrap_summary(
        per_user,
        reference="dmtl",
        competitors=["ctr", "weighted_lr"],
        n_boot=300,
        margins=0.0001,
        primary=["recall_long@100"],
    )
    assert set(out["comparisons"]) == {"dmtl_vs_ctr", "dmtl_vs_weighted_lr"}
    noisy = out["comparisons"]["dmtl_vs_weighted_lr"]["recall_long@100"]
    assert noisy["ci_low"] < 0 < noisy["ci_high"]
    assert noisy["decision"] == "not_enough_evidence" and noisy["verdict"] == "not enough evidence"
    assert noisy["family"] == "primary"
    assert out["comparisons"]["dmtl_vs_ctr"]["bait_share@100"]["family"] == "secondary"
    assert out["method"]["families"] == {"primary": 2, "secondary": 2}


def test_holm_turns_three_marginal_bootstrap_p_values_into_no_claim() -> None:
    # Three comparisons with raw p 0.02, 0.02, 0.02: each significant alone, none after Holm (0.06).
    B = 100
    d = np.r_[-np.ones(1), np.ones(B - 1)]  # 1 replicate of 100 below zero: p = 0.02
    p = bootstrap_p(d)
    assert p == 0.02
    adjusted, rejected = holm({"a": p, "b": p, "c": p}, 0.05)
    assert adjusted == pytest.approx({"a": 0.06, "b": 0.06, "c": 0.06}) and rejected == set()


def test_bootstrap_summary_with_ranking_metrics() -> None:
    rng = np.random.default_rng(3)
    n_users, n = 60, 900
    sample = _sample(rng, n, n_users)
    retrieval_users = np.arange(0, n_users, 2)  # half the test users are in the retrieval population
    sample = EvalSample(n_users, sample.impression_user, sample.click, sample.long_read, retrieval_users)
    good = rng.standard_normal((2, n)) + 2.0 * sample.click * sample.long_read
    poor = rng.standard_normal((2, n))
    tasks = ("click", "ctcvr", "cvr")
    teacher = {t: good + 0.1 for t in tasks}  # a monotone shift: the same AUCs as dmtl
    per_user = {
        "dmtl": {"recall_long@100": rng.uniform(0.3, 0.5, (2, 30))},
        "ctr": {"recall_long@100": rng.uniform(0.3, 0.5, (2, 30))},
    }
    out = bootstrap_summary(
        per_user,
        {"dmtl": dict.fromkeys(tasks, good), "ctr": dict.fromkeys(tasks, poor), "teacher": teacher},
        sample,
        reference="dmtl",
        n_boot=200,
        n_boot_ranking=50,
        margins={"auc_ctcvr": 0.01},
    )
    json.dumps(out, allow_nan=False)
    m = out["models"]
    ctcvr = sample.click * sample.long_read
    assert m["dmtl"]["auc_ctcvr"]["values"] == [auc(ctcvr, good[0]), auc(ctcvr, good[1])]
    assert m["dmtl"]["auc_ctcvr"]["n_boot"] == 50 and m["dmtl"]["recall_long@100"]["n_boot"] == 200
    assert m["dmtl"]["gauc_click"]["values"][1] == pytest.approx(
        gauc(sample.click, good[1], sample.impression_user)
    )
    assert "recall_long@100" not in m["teacher"]
    assert set(out["comparisons"]["dmtl_vs_teacher"]) == {f"{p}auc_{t}" for t in tasks for p in ("", "g")}
    c = out["comparisons"]
    assert c["dmtl_vs_ctr"]["auc_ctcvr"]["decision"] == "better"
    assert c["dmtl_vs_teacher"]["auc_ctcvr"]["verdict"] == "no difference: identical in every replicate"
    for model in m.values():
        for d in model.values():
            assert 0.0 <= d["ci_low"] <= d["mean"] <= d["ci_high"] <= 1.0


def test_bootstrap_summary_seed_only_metrics() -> None:
    # ann_recall_vs_exact has one number per seed: logit-t intervals, paired t-test, t TOST.
    per_seed = {
        "dmtl": {"ann_recall_vs_exact": [0.97, 0.98, 0.99], "recall_long_ann@100": [0.0, 0.0, 0.0]},
        "ctr": {"ann_recall_vs_exact": [0.96, 0.985, 0.99], "recall_long_ann@100": [0.0, 0.0, 0.0]},
    }
    out = bootstrap_summary(per_seed=per_seed, reference="dmtl", margins={"ann_recall_vs_exact": 0.05})
    json.dumps(out, allow_nan=False)
    d = out["models"]["dmtl"]["ann_recall_vs_exact"]
    assert d["interval"] == "logit-t" and d["ci_high"] <= 1.0
    c = out["comparisons"]["dmtl_vs_ctr"]
    assert c["ann_recall_vs_exact"]["p"] == pytest.approx(t_test_p([0.01, -0.005, 0.0]))
    assert c["ann_recall_vs_exact"]["decision"] == "equivalent"
    assert c["recall_long_ann@100"]["verdict"] == "no difference: both 0"


def test_bootstrap_summary_is_reproducible_and_checks_its_input() -> None:
    per_user = _study(np.random.default_rng(5), n_users=100)
    a = bootstrap_summary(per_user, reference="dmtl", n_boot=50, seed=9)
    b = bootstrap_summary(per_user, reference="dmtl", n_boot=50, seed=9)
    c = bootstrap_summary(per_user, reference="dmtl", n_boot=50, seed=10)
    assert a == b
    assert (
        a["models"]["dmtl"]["recall_long@100"]["ci_low"] != c["models"]["dmtl"]["recall_long@100"]["ci_low"]
    )
    with pytest.raises(ValueError, match="reference"):
        bootstrap_summary(per_user, reference="nope")
    with pytest.raises(ValueError, match="competitors"):
        bootstrap_summary(per_user, reference="dmtl", competitors=["nope"])
    with pytest.raises(ValueError, match="numbers of seeds"):
        bootstrap_summary(
            {"dmtl": {"recall_long@100": np.zeros((2, 5))}, "ctr": {"recall_long@100": np.zeros((3, 5))}},
            reference="dmtl",
        )
    with pytest.raises(ValueError, match="EvalSample"):
        bootstrap_summary(scores={"dmtl": {"click": np.zeros((2, 5))}}, reference="dmtl")
