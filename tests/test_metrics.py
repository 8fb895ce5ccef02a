"""Tests of dmtl.metrics on hand-computed cases and against reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dmtl.metrics import (
    auc,
    bait_share_at_k,
    gauc,
    oracle_ratio_at_k,
    per_group_auc,
    ranking_metrics,
    recall_at_k,
)
from dmtl.schema import DataError
from dmtl.truth import real_bait_items


# ------------------------------------------------------------------------------------------- AUC
def test_auc_no_cross_class_tie() -> None:
    # Positives both score 0.4; negatives 0.1 and 0.35: all 4 pairs ordered (the tie is within a class).
    assert auc([0, 1, 1, 0], [0.1, 0.4, 0.4, 0.35]) == 1.0


def test_auc_tie_between_classes_counts_half() -> None:
    # pos {0.4, 0.35}, neg {0.1, 0.4}: pairs 1 + 0.5 (tie) + 1 + 0 = 2.5 of 4.
    assert auc([0, 1, 1, 0], [0.1, 0.4, 0.35, 0.4]) == pytest.approx(0.625)


def test_auc_all_tied_is_half_and_reversed_is_zero() -> None:
    assert auc([0, 1, 0, 1], [3, 3, 3, 3]) == 0.5
    assert auc([1, 1, 0], [0.1, 0.2, 0.3]) == 0.0


def test_auc_one_class_is_nan() -> None:
    assert np.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert np.isnan(auc([], []))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_many_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 5000)
    s = rng.integers(0, 20, 5000) + 0.3 * y  # coarse scores: many ties within and across classes
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    s = rng.normal(size=5000)
    assert auc(y.astype(bool), s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="labels"):
        auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="non-finite"):
        auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="shape"):
        auc([0, 1], [0.1, 0.2, 0.3])


# ------------------------------------------------------------------------------------------- GAUC
def test_gauc_by_hand_excludes_one_class_user_and_weights_by_impressions() -> None:
    # user 7: pos 0.9 vs neg {0.5, 0.95} -> 1/2, 3 impressions.
    # user 3: pos {0.3, 0.2} vs neg {0.1, 0.3} -> (1 + 0.5 + 1 + 0)/4 = 0.625, 4 impressions.
    # user 5: only positives -> no AUC, left out of numerator and weights.
    labels = [1, 0, 1, 0, 0, 1, 1, 0, 1]
    scores = [0.9, 0.1, 0.2, 0.5, 0.3, 0.3, 0.8, 0.95, 0.7]
    users = [7, 3, 3, 7, 3, 3, 5, 7, 5]
    assert gauc(labels, scores, users) == pytest.approx((3 * 0.5 + 4 * 0.625) / 7)
    keys, aucs, n = per_group_auc(labels, scores, users)
    assert keys.tolist() == [3, 5, 7]
    assert aucs[0] == pytest.approx(0.625) and np.isnan(aucs[1]) and aucs[2] == pytest.approx(0.5)
    assert n.tolist() == [4, 2, 3]


def test_gauc_is_not_the_unweighted_mean() -> None:
    # user 0: 2 impressions, AUC 1; user 1: 6 impressions, AUC 0 -> weighted 2/8, unweighted would be 1/2.
    labels = [1, 0, 1, 1, 1, 0, 0, 0]
    scores = [0.9, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9]
    users = [0, 0, 1, 1, 1, 1, 1, 1]
    assert gauc(labels, scores, users) == pytest.approx(0.25)


def test_per_group_auc_matches_auc_per_group_with_ties() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    users = rng.integers(0, 60, n) * 11  # non-contiguous ids, shuffled order
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 5, n).astype(float)  # heavy ties inside each user
    keys, aucs, counts = per_group_auc(y, s, users)
    for key, value, count in zip(keys, aucs, counts, strict=True):
        mask = users == key
        assert count == mask.sum()
        assert value == pytest.approx(auc(y[mask], s[mask]), abs=1e-12)


def test_gauc_all_one_class_is_nan_and_string_groups_work() -> None:
    assert np.isnan(gauc([1, 1, 0], [0.1, 0.2, 0.3], [0, 0, 1]))
    assert gauc([1, 0, 0, 1], [0.9, 0.1, 0.2, 0.8], ["b", "b", "a", "a"]) == 1.0


def test_ranking_metrics_populations() -> None:
    # Four impressions of one user plus one of another. Long reads only matter on clicked impressions.
    score = np.array([0.9, 0.8, 0.3, 0.2, 0.5])
    click = np.array([1, 1, 0, 1, 0])
    long_read = np.array([0, 1, 0, 1, 0])
    user = np.array([0, 0, 0, 0, 1])
    m = ranking_metrics(score, click, long_read, user)
    assert set(m) == {"auc_click", "auc_ctcvr", "auc_cvr", "gauc_click", "gauc_ctcvr", "gauc_cvr"}
    assert m["auc_click"] == pytest.approx(auc(click, score))
    # ctcvr positives {0.8, 0.2} vs negatives {0.9, 0.3, 0.5}: 0.8 beats 0.3, 0.5; 0.2 beats none -> 2/6.
    assert m["auc_ctcvr"] == pytest.approx(2 / 6)
    # cvr among clicked {0.9 (no), 0.8 (yes), 0.2 (yes)}: positives never beat 0.9 -> 0.
    assert m["auc_cvr"] == 0.0
    # user 1 has one impression (one class): GAUC is user 0's AUC.
    assert m["gauc_click"] == pytest.approx(auc(click[:4], score[:4]))
    assert m["gauc_cvr"] == 0.0


# ------------------------------------------------------------------------------------------- recall@K
def test_recall_with_duplicate_positives_and_user_without_positives() -> None:
    topk = np.array([[3, 1, 2], [0, 5, 4], [1, 2, 3]])
    pos_user = np.array([0, 0, 0, 1])
    pos_item = np.array([1, 1, 7, 4])  # (0, 1) twice: user 0 has positives {1, 7}
    r = recall_at_k(topk, pos_user, pos_item, ks=[1, 2, 3])
    # user 0: K=1 0, K=2 1/2, K=3 1/2; user 1: 0, 0, 1; user 2 has no positive and is left out.
    assert r == pytest.approx({1: 0.0, 2: 0.25, 3: 0.75})
    per_user = recall_at_k(topk, pos_user, pos_item, ks=[2], return_per_user=True)[2]
    assert per_user[:2] == pytest.approx([0.5, 0.0]) and np.isnan(per_user[2])


def test_recall_duplicate_and_missing_slots_count_once() -> None:
    topk = np.array([[1, 1, -1, 7]])
    r = recall_at_k(topk, [0, 0], [1, 7], ks=[2, 3, 4])
    assert r == pytest.approx({2: 0.5, 3: 0.5, 4: 1.0})


def test_recall_k_beyond_list() -> None:
    topk = np.array([[2, 0, 1]])
    with pytest.raises(ValueError, match="columns"):
        recall_at_k(topk, [0], [1], ks=[5])
    # When the list already spans the whole corpus, K > n_items is recall over the corpus.
    assert recall_at_k(topk, [0], [1], ks=[5], n_items=3) == {5: 1.0}


def test_recall_no_positives_is_nan() -> None:
    assert np.isnan(recall_at_k(np.array([[0, 1]]), [], [], ks=[1])[1])


def test_recall_vectorised_matches_sets() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 50, 40
    topk = np.stack([rng.permutation(n_items)[:10] for _ in range(n_users)])
    pu, pi = rng.integers(0, n_users, 300), rng.integers(0, n_items, 300)
    got = recall_at_k(topk, pu, pi, ks=[5, 10], return_per_user=True)
    for k in (5, 10):
        for u in range(n_users):
            pos = set(pi[pu == u].tolist())
            want = len(pos & set(topk[u, :k].tolist())) / len(pos) if pos else np.nan
            np.testing.assert_allclose(got[k][u], want)


# ------------------------------------------------------------------------------------------- oracle read time
def test_oracle_read_time_by_hand() -> None:
    ert = np.array([[5.0, 1.0, 3.0, 0.0]])
    r = oracle_ratio_at_k(np.array([[2, 1, 0, 3]]), ert, ks=[1, 2, 3, 10])
    # K=1: 3/5; K=2: (3+1)/(5+3); K=3: 9/9; K=10 -> whole corpus: 9/9.
    assert r == pytest.approx({1: 0.6, 2: 0.5, 3: 1.0, 10: 1.0})


def test_oracle_read_time_is_one_for_the_best_list_and_chunks_average() -> None:
    rng = np.random.default_rng(1)
    ert = rng.gamma(2.0, 20.0, size=(30, 100))
    best = np.argsort(-ert, axis=1)[:, :20]
    assert oracle_ratio_at_k(best, ert, ks=[5, 20]) == pytest.approx({5: 1.0, 20: 1.0})
    random_list = np.stack([rng.permutation(100)[:20] for _ in range(30)])
    full = oracle_ratio_at_k(random_list, ert, ks=[20])[20]
    parts = [
        oracle_ratio_at_k(random_list[i : i + 7], ert[i : i + 7], ks=[20], return_per_user=True)[20]
        for i in range(0, 30, 7)
    ]
    assert np.mean(np.concatenate(parts)) == pytest.approx(full)
    assert 0.0 < full < 1.0


def test_oracle_read_time_duplicates_and_zero_rows() -> None:
    ert = np.array([[4.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    topk = np.array([[0, 0, 1], [0, 1, 2]])
    per_user = oracle_ratio_at_k(topk, ert, ks=[2], return_per_user=True)[2]
    # Row 0 lists item 0 twice: it counts once, 4/6 (not 8/6). Row 1 has nothing to read: nan, left out.
    assert per_user[0] == pytest.approx(4 / 6) and np.isnan(per_user[1])
    assert oracle_ratio_at_k(topk, ert, ks=[2])[2] == pytest.approx(4 / 6)


# ------------------------------------------------------------------------------------------- bait share
def test_bait_share_by_hand() -> None:
    is_bait = np.array([True, False, True, False, False])
    topk = np.array([[0, 1, 2], [3, 4, 0]])
    r = bait_share_at_k(topk, is_bait, ks=[1, 2, 3])
    # K=1: (1 + 0)/2; K=2: (1/2 + 0)/2; K=3: (2/3 + 1/3)/2.
    assert r == pytest.approx({1: 0.5, 2: 0.25, 3: 0.5})
    assert bait_share_at_k(np.array([[0, -1, 0]]), is_bait, ks=[3]) == {3: 1.0}
    with pytest.raises(ValueError, match="boolean"):
        bait_share_at_k(topk, np.array([1, 0, 1, 0, 0]), ks=[1])


# ------------------------------------------------------------------------------ real-data bait rule
def test_real_bait_items_rule() -> None:
    # Items 0..7: 20 impressions each, clicks 1..8; long reads = clicks except items 5 (3 of 6), 6 (0 of 7).
    clicks = np.arange(1, 9)
    longs = clicks.copy()
    longs[5], longs[6] = 3, 0
    item, click, long_read = [], [], []
    for i, (c, lr) in enumerate(zip(clicks, longs, strict=True)):
        item += [i] * 20
        click += [1] * c + [0] * (20 - c)
        long_read += [1] * lr + [0] * (c - lr) + [1] * (20 - c)  # long_read on non-clicks must be ignored
    item += [8] * 5 + [9] * 30  # item 8: too few impressions; item 9: never clicked
    click += [1] * 5 + [0] * 30
    long_read += [0] * 35
    mask, rule = real_bait_items(np.array(item), np.array(click), np.array(long_read), n_items=12)
    # CTR 75th percentile: clicks 6 + 0.25 * (7 - 6) = 6.25 -> 0.3125 (items 6, 7).
    # Long-read rates sorted [0, .5, 1, 1, 1, 1, 1, 1]: 25th percentile 0.5 + 0.75 * 0.5 = 0.875 (items 5, 6).
    assert mask.shape == (12,) and np.flatnonzero(mask).tolist() == [6]
    assert "0.3125" in rule and "0.8750" in rule and "1 of 8" in rule and ">= 20" in rule


def test_real_bait_items_no_eligible_item_raises() -> None:
    with pytest.raises(DataError, match="bait_min_impressions"):
        real_bait_items(np.array([0, 1]), np.array([1, 0]), np.array([0, 0]), min_impressions=20)
