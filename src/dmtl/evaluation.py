"""Evaluation of docs/protocol.md section 4: what is scored, against what truth, over which users.

Three pieces, each with one job:

- :class:`GroundTruth`: what the data can say beyond the logged labels. :class:`SimulatorTruth` wraps the
  simulator's oracle (ground-truth clickbait, expected reading time of any item for any user);
  :class:`LoggedTruth` applies the documented real-data rules (the training-period bait rule) and has no
  oracle metrics. Evaluation never asks which source the data came from; it asks the truth.
- :class:`Population`: the retrieval population (test users with a click) and their positives.
- Scorers: each retrieval metric of :data:`dmtl.vocab.METRICS` has its function in
  :data:`RETRIEVAL_SCORERS` (``tests/test_vocab.py`` checks the two agree); the ranking metrics are
  :func:`dmtl.metrics.ranking_metrics`.

:func:`evaluate_models` scores every model and seed and returns the per-seed table; the stage function in
:mod:`dmtl.pipeline` loads the artifacts, calls it and writes the files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from dmtl import metrics as M
from dmtl import retrieval as R
from dmtl.artifacts import Towers
from dmtl.config import EvalConfig
from dmtl.features import Prepared
from dmtl.schema import DataError
from dmtl.vocab import TEACHER


# ----------------------------------------------------------------------------------------- population
@dataclass(frozen=True)
class Population:
    """Test users with at least one click (rows of every top-K list) and their positive pairs.

    ``click_pairs`` / ``long_pairs`` are ``(row, item_idx)`` arrays: each test click / long read, with
    ``row`` the user's position in ``users``.
    """

    users: np.ndarray
    click_pairs: tuple[np.ndarray, np.ndarray]
    long_pairs: tuple[np.ndarray, np.ndarray]

    @classmethod
    def from_test(cls, test: pd.DataFrame) -> Population:
        clicked = test[test["click"] == 1]
        users = np.unique(clicked["user_idx"].to_numpy())
        row_of = pd.Index(users)
        long = clicked[clicked["long_read"] == 1]
        return cls(
            users=users,
            click_pairs=(row_of.get_indexer(clicked["user_idx"]), clicked["item_idx"].to_numpy()),
            long_pairs=(row_of.get_indexer(long["user_idx"]), long["item_idx"].to_numpy()),
        )

    @property
    def n_with_long_read(self) -> int:
        return int(np.unique(self.long_pairs[0]).size)


# ---------------------------------------------------------------------------------------------- truth
class GroundTruth(Protocol):
    """What evaluation may know beyond the logged labels."""

    simulated: bool
    bait: np.ndarray
    """Boolean clickbait flag per corpus item."""
    bait_rule: str
    """One line saying how ``bait`` was decided, printed beside every ``bait_share``."""

    def oracle_scores(
        self, population: Population, lists: Mapping[Any, np.ndarray], ks: Sequence[int]
    ) -> dict[Any, dict[str, float]]:
        """Oracle metrics (``oracle_read_time@K``, ...) of each top-K list; empty where there is no oracle."""
        ...


class SimulatorTruth:
    """The simulator's oracle: ground-truth clickbait and the expected reading time of every item."""

    simulated = True

    def __init__(self, oracle: Any, prepared: Prepared):
        self.oracle = oracle
        self.raw_items = prepared.items["raw_item_id"].to_numpy()
        self.raw_users = prepared.users["raw_user_id"].to_numpy()
        self.bait = (
            oracle.items.set_index("item_id").loc[self.raw_items, "is_clickbait"].to_numpy().astype(bool)
        )
        self.bait_rule = "simulator ground truth: items generated as clickbait"

    def oracle_scores(
        self, population: Population, lists: Mapping[Any, np.ndarray], ks: Sequence[int], chunk: int = 2048
    ) -> dict[Any, dict[str, float]]:
        """``oracle_read_time@K`` of each list (same users, same order), averaged over users.

        The oracle's expected-reading-time matrix is the same for every model and seed, so it is computed
        once per chunk of users and every list is scored against it.
        """
        raw_users = self.raw_users[population.users]
        total = {key: {k: 0.0 for k in ks} for key in lists}
        for s in range(0, len(raw_users), chunk):
            ert = self.oracle.expected_read_time(raw_users[s : s + chunk], self.raw_items)
            for key, topk in lists.items():
                per_user = M.oracle_read_time_at_k(topk[s : s + chunk], ert, ks, return_per_user=True)
                for k in ks:
                    total[key][k] += float(np.sum(per_user[k]))
        n = len(raw_users)
        return {key: {f"oracle_read_time@{k}": v / n for k, v in by_k.items()} for key, by_k in total.items()}


class LoggedTruth:
    """Real data: the documented bait rule on training impressions (docs/protocol.md section 4)."""

    simulated = False

    def __init__(self, prepared: Prepared, min_impressions: int):
        train = prepared.impressions[prepared.split_mask("train")]
        self.bait, self.bait_rule = real_bait_items(
            train["item_idx"].to_numpy(),
            train["click"].to_numpy(),
            train["long_read"].to_numpy(),
            min_impressions=min_impressions,
            n_items=len(prepared.items),
        )

    def oracle_scores(
        self, population: Population, lists: Mapping[Any, np.ndarray], ks: Sequence[int]
    ) -> dict[Any, dict[str, float]]:
        return {}


def real_bait_items(
    item_index: np.ndarray | Sequence,
    click: np.ndarray | Sequence,
    long_read: np.ndarray | Sequence,
    min_impressions: int = 20,
    *,
    n_items: int | None = None,
) -> tuple[np.ndarray, str]:
    """Real-data clickbait proxy of docs/protocol.md section 4, from *training* impressions only.

    An item is bait when, among items with at least ``min_impressions`` training impressions and at least
    one click, its CTR is in the top quartile (>= the 75th percentile) and its long-read rate among clicks
    is in the bottom quartile (<= the 25th percentile). Percentiles use numpy's default linear
    interpolation; ties at a threshold are included, so the bait set can exceed a sixteenth of the items.

    Args:
        item_index: item index (0-based, as in the corpus) of each training impression.
        click: y_c per impression.
        long_read: y_d per impression (only its value on clicked impressions is used).
        min_impressions: items with fewer training impressions are never bait (their rates are noise).
        n_items: corpus size; the mask covers items ``0 .. n_items - 1`` (default ``max(item_index) + 1``).

    Returns:
        ``(is_bait, rule)``: boolean mask over items, and a one-line rule with the thresholds used, to be
        printed beside every ``bait_share@K`` on real data.

    Raises:
        DataError: if no item is eligible (the rule would be empty, and a bait share of 0 meaningless).
    """
    items = np.asarray(item_index)
    if items.ndim != 1 or not np.issubdtype(items.dtype, np.integer) or (items.size and items.min() < 0):
        raise ValueError("item_index must be a 1-D array of item indices >= 0")
    y_c = M.binary_labels(click, "click")
    y_d = M.binary_labels(long_read, "long_read")
    if y_c.shape != items.shape or y_d.shape != items.shape:
        raise ValueError(
            f"item_index, click and long_read must have one length, got {items.shape}, "
            f"{y_c.shape}, {y_d.shape}"
        )
    size = int(items.max(initial=-1)) + 1
    if n_items is not None:
        if n_items < size:
            raise ValueError(f"n_items={n_items} is smaller than max(item_index) + 1 = {size}")
        size = n_items
    n_imp = np.bincount(items, minlength=size)
    n_click = np.bincount(items, weights=y_c, minlength=size)
    n_long = np.bincount(items, weights=y_c * y_d, minlength=size)
    eligible = (n_imp >= min_impressions) & (n_click >= 1)
    if not eligible.any():
        raise DataError(
            None,
            "item_id",
            f"no item has >= {min_impressions} training impressions and >= 1 click; the bait rule is empty",
            "lower eval.bait_min_impressions or use a longer training period",
        )
    ctr = np.divide(n_click, n_imp, out=np.zeros(size), where=eligible)
    long_rate = np.divide(n_long, n_click, out=np.zeros(size), where=eligible)
    ctr_min = float(np.quantile(ctr[eligible], 0.75))
    long_max = float(np.quantile(long_rate[eligible], 0.25))
    is_bait = eligible & (ctr >= ctr_min) & (long_rate <= long_max)
    rule = (
        f"bait = training CTR >= {ctr_min:.4f} (top quartile) and long-read rate among clicks <= "
        f"{long_max:.4f} (bottom quartile), among items with >= {min_impressions} training impressions "
        f"and >= 1 click: {int(is_bait.sum())} of {int(eligible.sum())} eligible items"
    )
    return is_bait, rule


def load_truth(prepared: Prepared, oracle_dir: Path, ev: EvalConfig) -> GroundTruth:
    """The simulator's oracle when the prepared data has one, else the real-data rules."""
    if oracle_dir.exists():
        from dmtl.sources.simulator.oracle import Oracle

        return SimulatorTruth(Oracle.read(oracle_dir), prepared)
    return LoggedTruth(prepared, ev.bait_min_impressions)


# -------------------------------------------------------------------------------------------- scorers
Scorer = Callable[[np.ndarray, Population, GroundTruth, Sequence[int]], dict[int, float]]
RETRIEVAL_SCORERS: dict[str, Scorer] = {
    "recall_long": lambda topk, pop, truth, ks: M.recall_at_k(topk, *pop.long_pairs, ks),
    "recall_click": lambda topk, pop, truth, ks: M.recall_at_k(topk, *pop.click_pairs, ks),
    "bait_share": lambda topk, pop, truth, ks: M.bait_share_at_k(topk, truth.bait, ks),
}
"""Each retrieval metric of :data:`dmtl.vocab.METRICS` and its function of one model's exact top-K list."""


def student_scores(
    user_emb: np.ndarray, item_emb: np.ndarray, user_idx: np.ndarray, item_idx: np.ndarray
) -> np.ndarray:
    """<u, v> for each impression: the score the towers would serve (monotone in sigmoid(<u, v>))."""
    return np.einsum("ij,ij->i", user_emb[user_idx], item_emb[item_idx])


def ann_settings(ev: EvalConfig, seed: int) -> dict[str, Any]:
    """The approximate index's settings for its kind (``eval.ann``)."""
    if ev.ann == "ivf_flat":
        return {"nlist": ev.ann_nlist, "nprobe": ev.ann_nprobe, "seed": seed}
    return {"ef_search": ev.ann_ef_search}


def score_student(
    towers: Towers,
    test: pd.DataFrame,
    population: Population,
    truth: GroundTruth,
    ev: EvalConfig,
    seed: int,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Ranking, retrieval and index metrics of one student; also its test scores and exact top-K list."""
    ks = sorted(ev.ks)
    k_max = max(ks)
    score = student_scores(towers.user, towers.item, test["user_idx"].to_numpy(), test["item_idx"].to_numpy())
    row = M.ranking_metrics(
        score, test["click"].to_numpy(), test["long_read"].to_numpy(), test["user_idx"].to_numpy()
    )
    queries = np.ascontiguousarray(towers.user[population.users])
    _, exact = R.exact_topk(queries, towers.item, k_max)
    index = R.build_ann_index(towers.item, ev.ann, **ann_settings(ev, seed))
    _, approx = R.ann_topk(index, queries, k_max)
    row["ann_recall_vs_exact"] = R.index_recall(exact[:, :k_max], approx[:, :k_max])
    for name, scorer in RETRIEVAL_SCORERS.items():
        row.update({f"{name}@{k}": v for k, v in scorer(exact, population, truth, ks).items()})
    row.update(
        {
            f"recall_long_ann@{k}": v
            for k, v in RETRIEVAL_SCORERS["recall_long"](approx, population, truth, ks).items()
        }
    )
    return row, score, exact


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_models` found: one row per (model, seed), the population, a score sample."""

    per_seed: pd.DataFrame
    population: Population
    sample: pd.DataFrame


def evaluate_models(
    prepared: Prepared,
    truth: GroundTruth,
    teacher_predictions: Callable[[int], Mapping[str, np.ndarray]],
    student_towers: Callable[[str, int], Towers],
    students: Sequence[str],
    seeds: Sequence[int],
    ev: EvalConfig,
) -> Evaluation:
    """Every metric of every model and seed.

    Args:
        prepared: the prepared data (test split, corpus).
        truth: the ground truth of the data.
        teacher_predictions: seed -> the teacher's ``p_ctr``, ``p_cvr``, ``p_ctcvr`` for every impression.
        student_towers: (student, seed) -> its exported embeddings.
        students: the students to score.
        seeds: the model seeds.
        ev: evaluation settings.

    Returns:
        One row per (model, seed) with every metric; the retrieval population; and, for the first seed, a
        sample of test impressions with each student's score beside the teacher's ``p_ctcvr`` (a figure).
    """
    test_mask = prepared.split_mask("test")
    test = prepared.impressions[test_mask]
    population = Population.from_test(test)
    rows: list[dict[str, Any]] = []
    lists: dict[int, np.ndarray] = {}  # row of ``rows`` -> its exact top-K (scored by the oracle at the end)
    samples = []
    take = np.random.default_rng(0).choice(len(test), size=min(5000, len(test)), replace=False)
    for seed in seeds:
        pred = teacher_predictions(seed)
        t_test = {k: np.asarray(pred[k])[test_mask] for k in ("p_ctr", "p_cvr", "p_ctcvr")}
        rows.append({"model": TEACHER, "seed": seed, **M.teacher_ranking_metrics(t_test, test)})
        for name in students:
            metrics, score, exact = score_student(
                student_towers(name, seed), test, population, truth, ev, seed
            )
            lists[len(rows)] = exact.astype(np.int32)
            rows.append({"model": name, "seed": seed, **metrics})
            if seed == seeds[0]:
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
    for i, extra in truth.oracle_scores(population, lists, sorted(ev.ks)).items():
        rows[i].update(extra)
    sample = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame()
    return Evaluation(pd.DataFrame(rows), population, sample)


def at_k_table(per_seed: pd.DataFrame, ks: Sequence[int]) -> pd.DataFrame:
    """Tidy (model, k, metric means over seeds) table of the at-K retrieval and oracle metrics."""
    students = per_seed[per_seed["model"] != TEACHER]
    bases = [c.split("@")[0] for c in per_seed.columns if "@" in c and not c.startswith("recall_long_ann")]
    bases = list(dict.fromkeys(bases))
    rows = []
    for model, part in students.groupby("model", sort=False):
        for k in ks:
            rows.append({"model": model, "k": k, **{b: part[f"{b}@{k}"].mean() for b in bases}})
    return pd.DataFrame(rows)
