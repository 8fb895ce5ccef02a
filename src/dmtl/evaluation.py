"""Evaluation of docs/protocol.md section 4: what is scored, over which users, against which positives.

- :class:`Population`: the retrieval population (test users with a click), their positives, what each was
  shown on the training days (the history mask) and which users and items are warm (seen in training).
- Models: the students' exported towers, and the popularity baselines of :data:`dmtl.vocab.BASELINES` as the
  same kind of towers (a 1-d user vector of ones and an item vector of training counts), so every model is
  retrieved by one search over the same corpus with the same mask.
- Scorers: each retrieval and segment metric of :data:`dmtl.vocab.METRICS` has its function in
  :data:`SCORERS` (``tests/test_vocab.py`` checks the two agree), returning one value per retrieval user;
  the ground truth (:mod:`dmtl.truth`) adds the oracle metrics; ranking metrics are
  :func:`dmtl.metrics.ranking_metrics`.

:func:`evaluate_models` scores every model and seed and keeps per-user values and test scores for the
statistics; the stage function :func:`dmtl.stages.evaluate.run_evaluate` loads artifacts and writes files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from dmtl import metrics as M
from dmtl import retrieval as R
from dmtl import vocab as V
from dmtl.artifacts import Towers
from dmtl.config import EvalConfig
from dmtl.features import Prepared
from dmtl.stats.bootstrap import EvalSample
from dmtl.truth import GroundTruth

TEACHER_HEADS = {"click": "p_ctr", "ctcvr": "p_ctcvr", "cvr": "p_cvr"}
"""The teacher head each ranking task scores (docs/protocol.md section 4)."""

PerUser = dict[str, np.ndarray]
"""Metric name -> one value per retrieval user (``nan`` where the metric is undefined for that user)."""


# ----------------------------------------------------------------------------------------- population
@dataclass(frozen=True)
class Population:
    """Test users with at least one click (rows of every top-K list), their positives and their history.

    ``click_pairs`` / ``long_pairs`` are ``(row, item_idx)`` arrays of each test click / long read, ``row``
    the user's position in ``users``. ``history`` is a sparse ``(rows, items)`` matrix of what each user was
    shown on the training and validation days (``None`` without the history mask); a test positive the user
    was already shown cannot be retrieved under the mask, so it is not counted as a positive either.
    """

    users: np.ndarray
    click_pairs: tuple[np.ndarray, np.ndarray]
    long_pairs: tuple[np.ndarray, np.ndarray]
    history: sparse.csr_matrix | None
    warm_users: np.ndarray
    warm_items: np.ndarray

    @classmethod
    def build(cls, prepared: Prepared, history_mask: bool) -> Population:
        imp = prepared.impressions
        test = imp[prepared.split_mask("test")]
        clicked = test[test["click"] == 1]
        users = np.unique(clicked["user_idx"].to_numpy())
        row_of = pd.Index(users)
        n_items = len(prepared.items)
        history = None
        if history_mask:
            seen = imp[prepared.split_mask("train") | prepared.split_mask("val")]
            rows = row_of.get_indexer(seen["user_idx"])
            keep = rows >= 0
            ones = np.ones(int(keep.sum()), dtype=np.int8)
            history = sparse.csr_matrix(
                (ones, (rows[keep], seen["item_idx"].to_numpy()[keep])), shape=(len(users), n_items)
            )
            history.data[:] = 1  # a pair shown twice is one entry

        def pairs(part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
            r, i = row_of.get_indexer(part["user_idx"]), part["item_idx"].to_numpy()
            if history is not None and len(r):
                fresh = np.asarray(history[r, i]).ravel() == 0
                r, i = r[fresh], i[fresh]
            return r, i

        # Encoded id 0 is the out-of-vocabulary bucket: ids never seen on a training day.
        warm_users = prepared.users["user_id"].to_numpy()[users] != 0
        warm_items = prepared.items["item_id"].to_numpy() != 0
        return cls(
            users, pairs(clicked), pairs(clicked[clicked["long_read"] == 1]), history, warm_users, warm_items
        )

    @property
    def n_with_long_read(self) -> int:
        return int(np.unique(self.long_pairs[0]).size)

    @property
    def max_history(self) -> int:
        return 0 if self.history is None else int(np.diff(self.history.indptr).max(initial=0))


# -------------------------------------------------------------------------------------------- scorers
def _segment(
    pop: Population, topk: np.ndarray, ks: Sequence[int], users: np.ndarray | None, items: bool | None
) -> dict[int, np.ndarray]:
    """recall_long@K per user, over a segment of users (``users`` mask) or of positive items (``items``:
    warm (True) or cold (False))."""
    rows, item = pop.long_pairs
    if items is not None:
        keep = pop.warm_items[item] == items
        rows, item = rows[keep], item[keep]
    per_user = M.recall_at_k(topk, rows, item, ks, return_per_user=True)
    if users is not None:
        per_user = {k: np.where(users, v, np.nan) for k, v in per_user.items()}
    return per_user


Scorer = Callable[[np.ndarray, Population, GroundTruth, Sequence[int]], dict[int, np.ndarray]]
SCORERS: dict[str, Scorer] = {
    "recall_long": lambda t, pop, truth, ks: M.recall_at_k(t, *pop.long_pairs, ks, return_per_user=True),
    "recall_click": lambda t, pop, truth, ks: M.recall_at_k(t, *pop.click_pairs, ks, return_per_user=True),
    "bait_share": lambda t, pop, truth, ks: (
        M.bait_share_at_k(t, truth.bait, ks, return_per_user=True)
        if truth.bait is not None
        else {k: np.full(len(t), np.nan) for k in ks}
    ),
    "recall_long_warm_users": lambda t, pop, truth, ks: _segment(pop, t, ks, pop.warm_users, None),
    "recall_long_cold_users": lambda t, pop, truth, ks: _segment(pop, t, ks, ~pop.warm_users, None),
    "recall_long_warm_items": lambda t, pop, truth, ks: _segment(pop, t, ks, None, True),
    "recall_long_cold_items": lambda t, pop, truth, ks: _segment(pop, t, ks, None, False),
}
"""Each retrieval and segment metric of :data:`dmtl.vocab.METRICS`: per-user values of one exact top-K list."""


def student_scores(
    user_emb: np.ndarray, item_emb: np.ndarray, user_idx: np.ndarray, item_idx: np.ndarray
) -> np.ndarray:
    """<u, v> for each impression: the score the towers would serve (monotone in sigmoid(<u, v>))."""
    return np.einsum("ij,ij->i", user_emb[user_idx], item_emb[item_idx])


def popularity_towers(prepared: Prepared, count: str) -> Towers:
    """A popularity list as towers: every user scores every item by its training ``count``.

    Ties are broken by the item's training clicks, then by its index, through a tiny offset, so the list
    is one fixed ranking of the corpus.
    """
    train = prepared.impressions[prepared.split_mask("train")]
    n_items = len(prepared.items)
    item = train["item_idx"].to_numpy()
    weights = {
        "impressions": None,
        "clicks": train["click"].to_numpy(),
        "long_reads": train["click"].to_numpy() * train["long_read"].to_numpy(),
    }[count]
    primary = np.bincount(item, weights=weights, minlength=n_items)
    clicks = np.bincount(item, weights=train["click"].to_numpy(), minlength=n_items)
    rank = np.lexsort((np.arange(n_items)[::-1], clicks, primary))  # ascending: best last
    score = np.empty(n_items)
    score[rank] = np.arange(n_items)
    return Towers(np.ones((len(prepared.users), 1), np.float32), score.astype(np.float32)[:, None])


def ann_settings(ev: EvalConfig, seed: int) -> dict[str, Any]:
    """The approximate index's settings for its kind (``eval.ann``)."""
    if ev.ann == "ivf_flat":
        return {"nlist": ev.ann_nlist, "nprobe": ev.ann_nprobe, "seed": seed}
    return {"ef_search": ev.ann_ef_search}


def _index_checks(
    towers: Towers,
    queries: np.ndarray,
    pop: Population,
    exact: np.ndarray,
    ev: EvalConfig,
    seed: int,
    ks: Sequence[int],
) -> PerUser:
    """The approximate index against exact search, and recall without the history mask."""
    k_max = exact.shape[1]
    index = R.build_ann_index(towers.item, ev.ann, **ann_settings(ev, seed))
    _, approx = R.ann_topk(index, queries, k_max + pop.max_history)
    approx = R.drop_history(approx, pop.history, k_max)
    out: PerUser = {"ann_recall_vs_exact": np.full(len(queries), R.index_recall(exact, approx))}
    out |= {f"recall_long_ann@{k}": v for k, v in SCORERS["recall_long"](approx, pop, None, ks).items()}  # type: ignore[arg-type]
    if pop.history is not None:
        unmasked = R.masked_exact_topk(queries, towers.item, k_max)
        out |= {
            f"recall_long_unmasked@{k}": v for k, v in SCORERS["recall_long"](unmasked, pop, None, ks).items()
        }  # type: ignore[arg-type]
    return out


def score_towers(
    towers: Towers,
    test: pd.DataFrame,
    pop: Population,
    truth: GroundTruth,
    ev: EvalConfig,
    seed: int,
    checks: bool,
) -> tuple[dict[str, float], PerUser, np.ndarray, np.ndarray]:
    """Ranking and retrieval metrics of one model given as towers.

    Returns:
        ``(ranking, per_user, score, exact)``: the ranking metrics; per-user retrieval, segment and (with
        ``checks``) index metrics; the score of every test impression; the exact top-K list.
    """
    ks = sorted(ev.ks)
    score = student_scores(towers.user, towers.item, test["user_idx"].to_numpy(), test["item_idx"].to_numpy())
    ranking = M.ranking_metrics(
        score, test["click"].to_numpy(), test["long_read"].to_numpy(), test["user_idx"].to_numpy()
    )
    queries = np.ascontiguousarray(towers.user[pop.users])
    exact = R.masked_exact_topk(queries, towers.item, max(ks), pop.history)
    per_user: PerUser = {}
    for name, scorer in SCORERS.items():
        per_user |= {f"{name}@{k}": v for k, v in scorer(exact, pop, truth, ks).items()}
    if checks:
        per_user |= _index_checks(towers, queries, pop, exact, ev, seed, ks)
    return ranking, per_user, score, exact


@dataclass
class Evaluation:
    """What :func:`evaluate_models` found.

    Attributes:
        per_seed: one row per (model, seed): every metric (retrieval metrics as means over users).
        population: the retrieval population.
        per_user: (model, seed) -> per-user values of the retrieval, segment and oracle metrics.
        test_scores: (model, seed) -> task (``click``, ``ctcvr``, ``cvr``) -> the score of every test impression
            that the model's ranking metric of that task reads (one score for every task of a two-tower
            model; the teacher's ``p_ctr``, ``p_ctcvr`` and ``p_cvr``).
        sample: for the first seed, a sample of test impressions with each student's score beside the
            teacher's ``p_ctcvr`` (a report figure).
    """

    per_seed: pd.DataFrame
    population: Population
    per_user: dict[tuple[str, int], PerUser] = field(default_factory=dict)
    test_scores: dict[tuple[str, int], dict[str, np.ndarray]] = field(default_factory=dict)
    sample: pd.DataFrame = field(default_factory=pd.DataFrame)


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def evaluate_models(
    prepared: Prepared,
    truth: GroundTruth,
    teacher_predictions: Callable[[int], Mapping[str, np.ndarray]],
    student_towers: Callable[[str, int], Towers],
    students: Sequence[str],
    seeds: Sequence[int],
    ev: EvalConfig,
) -> Evaluation:
    """Every metric of every model and seed: the teacher, each student and each popularity baseline.

    Args:
        prepared: the prepared data (test split, corpus).
        truth: the ground truth of the data.
        teacher_predictions: seed -> the teacher's ``p_ctr``, ``p_cvr``, ``p_ctcvr`` for every impression, or
            for the test impressions only (in their order).
        student_towers: (student, seed) -> its exported embeddings.
        students: the students to score.
        seeds: the model seeds.
        ev: evaluation settings (cut-offs, index, history mask, baselines).
    """
    test_mask = prepared.split_mask("test")
    test = prepared.impressions[test_mask]
    pop = Population.build(prepared, ev.history_mask)
    result = Evaluation(pd.DataFrame(), pop)
    rows: list[dict[str, Any]] = []
    lists: dict[tuple[str, int], np.ndarray] = {}
    samples = []
    take = np.random.default_rng(0).choice(len(test), size=min(5000, len(test)), replace=False)
    baselines = {
        b: score_towers(popularity_towers(prepared, V.baseline(b).count), test, pop, truth, ev, 0, False)
        for b in ev.baselines
    }
    for seed in seeds:
        pred = teacher_predictions(seed)
        # Predictions of every impression, or (the out-of-core path) of the test impressions alone.
        t_test = {
            k: (p if len(p) != len(test_mask) else p[test_mask])
            for k in ("p_ctr", "p_cvr", "p_ctcvr")
            for p in [np.asarray(pred[k])]
        }
        rows.append({"model": V.TEACHER, "seed": seed, **M.teacher_ranking_metrics(t_test, test)})
        result.test_scores[(V.TEACHER, seed)] = {t: t_test[h] for t, h in TEACHER_HEADS.items()}
        # The index checks (the approximate index against exact search, the lists without the history mask) are
        # diagnostics of the search, not of the models: the first seed's students answer them.
        checks = seed == seeds[0]
        scored = {
            name: score_towers(student_towers(name, seed), test, pop, truth, ev, seed, checks)
            for name in students
        }
        for name, (ranking, per_user, score, exact) in {**scored, **baselines}.items():
            rows.append(
                {"model": name, "seed": seed, **ranking, **{m: _mean(v) for m, v in per_user.items()}}
            )
            result.per_user[(name, seed)] = dict(per_user)
            result.test_scores[(name, seed)] = dict.fromkeys(TEACHER_HEADS, score)
            lists[(name, seed)] = exact
        if seed == seeds[0]:
            for name, (_, _, score, _) in scored.items():
                samples.append(
                    pd.DataFrame(
                        {
                            "model": name,
                            "student_score": score[take],
                            "teacher_p_ctcvr": t_test["p_ctcvr"][take],
                            "click": test["click"].to_numpy()[take],
                            "long_read": test["long_read"].to_numpy()[take],
                        }
                    )
                )
    oracle = truth.oracle_scores(pop.users, lists, sorted(ev.ks), pop.history)
    where = {(r["model"], r["seed"]): i for i, r in enumerate(rows)}
    for key, per_user in oracle.items():
        result.per_user[key] |= per_user
        rows[where[key]] |= {m: _mean(v) for m, v in per_user.items()}
    result.per_seed = pd.DataFrame(rows)
    result.sample = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame()
    return result


def eval_sample(test: pd.DataFrame, population: Population) -> EvalSample:
    """What the bootstrap of :mod:`dmtl.stats` resamples: every test user (the unit), each test impression's
    position among them, its labels, and where the retrieval population's rows sit among them."""
    users = np.unique(test["user_idx"].to_numpy())
    return EvalSample(
        n_users=users.size,
        impression_user=np.searchsorted(users, test["user_idx"].to_numpy()),
        click=test["click"].to_numpy(),
        long_read=test["long_read"].to_numpy(),
        retrieval_users=np.searchsorted(users, population.users),
    )


def bootstrap_inputs(
    result: Evaluation, test: pd.DataFrame, seeds: Sequence[int]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]], EvalSample]:
    """The inputs of :func:`dmtl.stats.bootstrap_summary` from what :func:`evaluate_models` kept.

    Args:
        result: the evaluation (its ``per_user`` and ``test_scores``).
        test: the test impressions it scored (``user_idx``, ``click``, ``long_read``), in its order.
        seeds: the model seeds, in the order every input's rows take.

    Returns:
        ``(per_user, scores, sample)``: ``{model: {metric: (n_seeds, n_retrieval_users)}}`` (a metric a model
        lacks on a seed is a row of ``nan`` there), ``{model: {task: (n_seeds, n_test)}}`` (a model that
        scores every task with one score gets one array for all of them) and the :class:`EvalSample`.
    """
    n_rows = len(result.population.users)
    missing = np.full(n_rows, np.nan)
    per_user: dict[str, dict[str, np.ndarray]] = {}
    for model in dict.fromkeys(m for m, _ in result.per_user):
        by_seed = [result.per_user.get((model, s), {}) for s in seeds]
        names = dict.fromkeys(name for values in by_seed for name in values)
        per_user[model] = {name: np.stack([v.get(name, missing) for v in by_seed]) for name in names}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for model in dict.fromkeys(m for m, _ in result.test_scores):
        absent = [s for s in seeds if (model, s) not in result.test_scores]
        if absent:
            raise ValueError(
                f"{model} has no test scores for seeds {absent}; evaluate every model on every seed"
            )
        stacked: dict[tuple[int, ...], np.ndarray] = {}
        block = {}
        for task in TEACHER_HEADS:
            arrays = [result.test_scores[(model, s)][task] for s in seeds]
            key = tuple(id(a) for a in arrays)
            block[task] = stacked[key] if key in stacked else stacked.setdefault(key, np.stack(arrays))
        scores[model] = block
    return per_user, scores, eval_sample(test, result.population)


def at_k_table(per_seed: pd.DataFrame, ks: Sequence[int]) -> pd.DataFrame:
    """Tidy (model, k, metric means over seeds) table of the retrieval and oracle metrics at each K."""
    models = per_seed[per_seed["model"] != V.TEACHER]
    bases = [m.name for m in V.METRICS if m.at_k and m.family in ("retrieval", "oracle")]
    bases = [b for b in bases if f"{b}@{ks[0]}" in per_seed.columns]
    rows = []
    for model, part in models.groupby("model", sort=False):
        for k in ks:
            rows.append({"model": model, "k": k, **{b: part[f"{b}@{k}"].mean() for b in bases}})
    return pd.DataFrame(rows)
