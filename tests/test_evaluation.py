"""Evaluation on hand-built cases: the history mask, popularity lists, segments, and the oracle's p_long@K."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from dmtl import retrieval as R
from dmtl.evaluation import (
    SCORERS,
    Evaluation,
    Population,
    bootstrap_inputs,
    eval_sample,
    popularity_towers,
)
from dmtl.features import SPLITS, Prepared


def _prepared(
    rows: list[tuple[int, int, int, int, str]], n_users: int, n_items: int, cold_items=(), cold_users=()
):
    """(user_idx, item_idx, click, long_read, split) rows; encoded id 0 marks users/items unseen in training."""
    imp = pd.DataFrame(rows, columns=["user_idx", "item_idx", "click", "long_read", "split"])
    imp["split"] = imp["split"].map(SPLITS)
    users = pd.DataFrame({"user_id": [0 if u in cold_users else u + 1 for u in range(n_users)]})
    items = pd.DataFrame({"item_id": [0 if i in cold_items else i + 1 for i in range(n_items)]})
    return Prepared(imp, users, items, {})


def test_masked_search_skips_each_users_history_and_breaks_ties_by_index():
    user = np.array([[1.0], [1.0], [-1.0]], dtype=np.float32)
    item = np.array([[3.0], [5.0], [5.0], [1.0]], dtype=np.float32)  # items 1 and 2 tie
    history = sparse.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]]))
    got = R.masked_exact_topk(user, item, 3, history)
    np.testing.assert_array_equal(got, [[2, 0, 3], [1, 2, 0], [3, -1, -1]])
    # Without a history it is plain exact search (the same items as faiss, tie order by index).
    np.testing.assert_array_equal(R.masked_exact_topk(user, item, 2), [[1, 2], [1, 2]] + [[3, 0]])


def test_drop_history_keeps_the_order_of_the_rest():
    topk = np.array([[4, 2, 7, 1, -1], [0, 1, 2, 3, 4]])
    history = sparse.csr_matrix(([1, 1, 1], ([0, 0, 1], [2, 4, 0])), shape=(2, 8))
    np.testing.assert_array_equal(R.drop_history(topk, history, 3), [[7, 1, -1], [1, 2, 3]])
    np.testing.assert_array_equal(R.drop_history(topk, None, 2), [[4, 2], [0, 1]])


def test_population_masks_history_and_drops_unreachable_positives():
    rows = [
        (0, 0, 1, 1, "train"),  # user 0 read item 0 in training
        (0, 1, 0, 0, "val"),  # ... and was shown item 1 on the validation day
        (0, 0, 1, 1, "test"),  # a repeat of a training read: not retrievable under the mask
        (0, 2, 1, 1, "test"),  # a fresh long read
        (1, 3, 1, 0, "test"),  # user 1 (never in training): a click, not a long read
        (2, 1, 0, 0, "test"),  # user 2 never clicks in test: not in the population
    ]
    prep = _prepared(rows, 3, 4, cold_users={1}, cold_items={3})
    pop = Population.build(prep, history_mask=True)
    np.testing.assert_array_equal(pop.users, [0, 1])
    assert pop.history.toarray().tolist() == [[1, 1, 0, 0], [0, 0, 0, 0]]
    assert list(zip(*pop.long_pairs, strict=True)) == [(0, 2)]
    assert sorted(zip(*pop.click_pairs, strict=True)) == [(0, 2), (1, 3)]
    assert pop.warm_users.tolist() == [True, False] and pop.warm_items.tolist() == [True, True, True, False]
    unmasked = Population.build(prep, history_mask=False)
    assert unmasked.history is None and sorted(zip(*unmasked.long_pairs, strict=True)) == [(0, 0), (0, 2)]
    # Segments: recall over warm / cold users, and over positives on warm / cold items.
    topk = np.array([[2, 3], [3, 0]])
    got = {
        name: SCORERS[name](topk, pop, None, [1])[1]
        for name in SCORERS
        if "click" not in name and "bait" not in name
    }
    assert got["recall_long"][0] == 1.0 and np.isnan(got["recall_long"][1])  # user 1 has no long read
    assert got["recall_long_warm_users"][0] == 1.0 and np.isnan(got["recall_long_cold_users"][0])
    assert got["recall_long_warm_items"][0] == 1.0 and np.isnan(got["recall_long_cold_items"]).all()
    clicks = SCORERS["recall_click"](topk, pop, None, [1])[1]
    np.testing.assert_array_equal(clicks, [1.0, 1.0])


def test_popularity_lists_rank_by_training_counts():
    rows = [
        (0, 0, 1, 1, "train"),
        (1, 0, 1, 0, "train"),
        (2, 1, 1, 1, "train"),
        (0, 1, 0, 0, "train"),
        (1, 1, 0, 0, "train"),
        (2, 2, 0, 0, "train"),
        (0, 3, 1, 1, "test"),  # test days are not counted
        (0, 3, 1, 1, "test"),
    ]
    prep = _prepared(rows, 3, 4)

    def ranking(count):
        t = popularity_towers(prep, count)
        assert (t.user == 1).all()  # the same list for every user
        return list(np.argsort(-t.item[:, 0]))

    assert ranking("impressions") == [1, 0, 2, 3]  # 3, 2, 1, 0 impressions
    assert ranking("clicks") == [0, 1, 2, 3]  # 2 clicks, 1 click; ties at 0 broken by the lower index
    assert ranking("long_reads")[:2] == [0, 1]  # one long read each: item 0 has more clicks


@pytest.fixture(scope="module")
def tiny_world():
    from dmtl.features import prepare
    from dmtl.sources.simulator.config import make_config
    from dmtl.sources.simulator.world import simulate

    log, oracle = simulate(make_config("tiny"), 2021)
    return prepare(log, 1, 2, "mean"), oracle


def test_oracle_p_long_is_the_share_of_the_best_possible_long_read_probability(tiny_world):
    from dmtl.truth import SimulatorTruth

    prep, oracle = tiny_world
    truth = SimulatorTruth(oracle, prep, sample_users=5)
    pop = Population.build(prep, history_mask=True)
    users = pop.users[:40]
    rng = np.random.default_rng(1)
    lists = {"random": rng.integers(0, len(prep.items), size=(40, 10)), "top": None}
    raw_u, raw_i = prep.users["raw_user_id"].to_numpy()[users], prep.items["raw_item_id"].to_numpy()
    value = oracle.click_prob(raw_u, raw_i) * oracle.long_read_prob(raw_u, raw_i, prep.tau_seconds)
    value[pop.history[:40].toarray().astype(bool)] = 0.0
    lists["top"] = np.argsort(-value, axis=1, kind="stable")[:, :10]
    got = truth.oracle_scores(users, lists, [5, 10], pop.history[:40])
    p_long = got["top"]["oracle_p_long@10"]
    sampled = np.isfinite(p_long)
    assert sampled.sum() == 5  # a fixed sample of users, the same for every list
    np.testing.assert_allclose(p_long[sampled], 1.0)  # the best list scores exactly 1
    rand = got["random"]["oracle_p_long@5"][sampled]
    block = lists["random"][sampled][:, :5]
    uniq = [np.unique(r) for r in block]
    want = [value[sampled][j, u].sum() / np.sort(value[sampled][j])[-5:].sum() for j, u in enumerate(uniq)]
    np.testing.assert_allclose(rand, want, rtol=1e-9)
    assert np.isfinite(got["random"]["oracle_read_time@5"]).all()  # read time: every user


def test_population_without_any_test_long_read():
    """A small real log where no test click is a long read: no positives, no crash."""
    prep = _prepared([(0, 0, 1, 1, "train"), (0, 1, 1, 0, "test")], 1, 2)
    pop = Population.build(prep, history_mask=True)
    assert len(pop.long_pairs[0]) == 0 and list(zip(*pop.click_pairs, strict=True)) == [(0, 1)]


# ------------------------------------------------------------------------------ the statistics' inputs
def _population(users: list[int]) -> Population:
    empty = (np.empty(0, dtype=int), np.empty(0, dtype=int))
    n = len(users)
    return Population(np.array(users), empty, empty, None, np.ones(n, bool), np.ones(4, bool))


def test_eval_sample_places_impressions_and_the_retrieval_population_on_one_user_axis():
    test = pd.DataFrame({"user_idx": [9, 3, 3, 5, 9], "click": [1, 0, 1, 0, 0], "long_read": [0, 0, 1, 0, 0]})
    sample = eval_sample(test, _population([3, 9]))  # users who clicked
    assert sample.n_users == 3  # users 3, 5, 9 (5 never clicks: not retrieved, still a test user)
    np.testing.assert_array_equal(sample.impression_user, [2, 0, 0, 1, 2])
    np.testing.assert_array_equal(sample.retrieval_users, [0, 2])


def test_bootstrap_inputs_stack_seeds_in_order():
    test = pd.DataFrame({"user_idx": [9, 3, 3], "click": [1, 0, 1], "long_read": [0, 0, 1]})
    score = {0: np.array([0.1, 0.2, 0.3]), 1: np.array([0.4, 0.5, 0.6])}
    result = Evaluation(
        pd.DataFrame(),
        _population([3, 9]),
        per_user={
            ("dmtl", 0): {"recall_long@1": np.array([1.0, np.nan])},
            ("dmtl", 1): {"recall_long@1": np.array([0.5, 0.0]), "oracle_p_long@1": np.array([0.2, 0.3])},
        },
        test_scores={
            ("dmtl", 0): dict.fromkeys(("click", "ctcvr", "cvr"), score[0]),
            ("dmtl", 1): dict.fromkeys(("click", "ctcvr", "cvr"), score[1]),
            ("teacher", 0): {"click": score[0], "ctcvr": score[1], "cvr": score[0]},
            ("teacher", 1): {"click": score[1], "ctcvr": score[0], "cvr": score[1]},
        },
    )
    per_user, scores, sample = bootstrap_inputs(result, test, seeds=[1, 0])
    np.testing.assert_array_equal(per_user["dmtl"]["recall_long@1"], [[0.5, 0.0], [1.0, np.nan]])
    np.testing.assert_array_equal(per_user["dmtl"]["oracle_p_long@1"], [[0.2, 0.3], [np.nan, np.nan]])
    assert "teacher" not in per_user
    np.testing.assert_array_equal(scores["dmtl"]["cvr"], [score[1], score[0]])
    assert scores["dmtl"]["click"] is scores["dmtl"]["ctcvr"]  # one array for a model's one score
    np.testing.assert_array_equal(scores["teacher"]["ctcvr"], [score[0], score[1]])
    assert sample.n_users == 2 and list(sample.retrieval_users) == [0, 1]
    with pytest.raises(ValueError, match="seeds"):
        bootstrap_inputs(result, test, seeds=[0, 1, 2])
