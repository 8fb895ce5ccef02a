"""What evaluation may know beyond the logged labels: the simulator's oracle, or the real-data rules.

:class:`SimulatorTruth` wraps the simulator's oracle (ground-truth clickbait; expected reading time and
long-read probability of any item for any user); :class:`LoggedTruth` applies the documented real-data rule
for clickbait (docs/protocol.md section 4) and has no oracle metrics. Evaluation never asks which source the
data came from; it asks the truth (:func:`load_truth`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dmtl import metrics as M
from dmtl.config import EvalConfig
from dmtl.features import Prepared
from dmtl.schema import DataError


class GroundTruth(Protocol):
    """What evaluation may know beyond the logged labels."""

    simulated: bool
    bait: np.ndarray | None
    """Boolean clickbait flag per corpus item (``None``: too few items qualify to report a bait share)."""
    bait_rule: str
    """One line saying how ``bait`` was decided, printed beside every ``bait_share``."""

    def oracle_scores(
        self, users: np.ndarray, lists: Mapping[Any, np.ndarray], ks: Sequence[int], history: Any = None
    ) -> dict[Any, dict[str, np.ndarray]]:
        """Per-user oracle metrics (``oracle_read_time@K``, ...) of each top-K list (rows = ``users``, user
        rows of the prepared data; ``history``: a sparse (rows, items) matrix of items no list may hold, left
        out of the best possible list too); empty where there is no oracle."""
        ...


class SimulatorTruth:
    """The simulator's oracle: ground-truth clickbait, and the expected reading time and long-read
    probability of every item for every user.

    ``oracle_read_time@K`` is scored for every retrieval user. ``oracle_p_long@K`` (the paper's objective:
    the probability of a click followed by a read longer than tau, without position effect) needs an
    incomplete beta function per (user, item), about 5 us each, so it is scored on a fixed random sample of
    ``sample_users`` retrieval users (the same for every model and seed, so comparisons stay paired); the
    other users get ``nan`` and are left out of its mean.
    """

    simulated = True

    def __init__(self, oracle: Any, prepared: Prepared, sample_users: int):
        self.oracle = oracle
        self.raw_items = prepared.items["raw_item_id"].to_numpy()
        self.raw_users = prepared.users["raw_user_id"].to_numpy()
        self.tau_seconds = prepared.tau_seconds
        # The oracle's long-read probability is P(duration > tau): defined for the duration rule only.
        self.sample_users = (
            sample_users if prepared.meta.get("long_read_rule", "duration") == "duration" else 0
        )
        self.bait = (
            oracle.items.set_index("item_id").loc[self.raw_items, "is_clickbait"].to_numpy().astype(bool)
        )
        self.bait_rule = "simulator ground truth: items generated as clickbait"

    def oracle_scores(
        self,
        users: np.ndarray,
        lists: Mapping[Any, np.ndarray],
        ks: Sequence[int],
        history: Any = None,
        chunk: int = 1024,
    ) -> dict[Any, dict[str, np.ndarray]]:
        """Per-user ``oracle_read_time@K`` and ``oracle_p_long@K`` of each list (same users, same order).

        The oracle's matrices are the same for every model and seed, so they are computed once per chunk of
        users and every list is scored against them.
        """
        raw_users = self.raw_users[users]
        n = len(raw_users)
        sample = np.zeros(n, dtype=bool)
        sample[np.random.default_rng(0).choice(n, size=min(self.sample_users, n), replace=False)] = True
        out = {
            key: {f"{m}@{k}": np.full(n, np.nan) for m in ("oracle_read_time", "oracle_p_long") for k in ks}
            for key in lists
        }
        for s in range(0, n, chunk):
            rows = slice(s, min(s + chunk, n))
            shown = None if history is None else history[rows].toarray().astype(bool)
            ert = self.oracle.expected_read_time(raw_users[rows], self.raw_items)
            if shown is not None:
                ert[shown] = 0.0  # no list may hold them, so neither may the best list
            self._score(out, "oracle_read_time", ert, lists, rows, np.ones(rows.stop - rows.start, bool), ks)
            picked = sample[rows]
            if picked.any():
                users_in = raw_users[rows][picked]
                p_long = self.oracle.click_prob(users_in, self.raw_items) * self.oracle.long_read_prob(
                    users_in, self.raw_items, self.tau_seconds
                )
                if shown is not None:
                    p_long[shown[picked]] = 0.0
                self._score(out, "oracle_p_long", p_long, lists, rows, picked, ks)
        return out

    @staticmethod
    def _score(
        out: dict[Any, dict[str, np.ndarray]],
        name: str,
        value: np.ndarray,
        lists: Mapping[Any, np.ndarray],
        rows: slice,
        picked: np.ndarray,
        ks: Sequence[int],
    ) -> None:
        where = np.arange(rows.start, rows.stop)[picked]
        for key, topk in lists.items():
            per_user = M.oracle_ratio_at_k(topk[where], value, ks, return_per_user=True)
            for k in ks:
                out[key][f"{name}@{k}"][where] = per_user[k]


class LoggedTruth:
    """Real data: the documented bait rule on training impressions (docs/protocol.md section 4).

    The rule reads the long-read label, so it follows ``data.long_read``: with a length-aware label a short
    video is not bait for being short. When fewer than ``min_items`` items qualify, a bait share would rest on
    a handful of items, so ``bait`` is ``None``, ``bait_share`` is not reported and ``bait_rule`` says why.
    """

    simulated = False

    def __init__(self, prepared: Prepared, min_impressions: int, min_items: int = 1):
        train = prepared.impressions[prepared.split_mask("train")]
        bait, rule = real_bait_items(
            train["item_idx"].to_numpy(),
            train["click"].to_numpy(),
            train["long_read"].to_numpy(),
            min_impressions=min_impressions,
            n_items=len(prepared.items),
        )
        self.n_bait = int(bait.sum())
        self.bait: np.ndarray | None = bait
        self.bait_rule = rule
        if self.n_bait < min_items:
            self.bait = None
            self.bait_rule = (
                f"not reported: {self.n_bait} item(s) qualify, fewer than eval.bait_min_items = {min_items}, "
                f"too few for a share to inform ({rule})"
            )

    def oracle_scores(
        self, users: np.ndarray, lists: Mapping[Any, np.ndarray], ks: Sequence[int], history: Any = None
    ) -> dict[Any, dict[str, np.ndarray]]:
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

        return SimulatorTruth(Oracle.read(oracle_dir), prepared, ev.oracle_users)
    return LoggedTruth(prepared, ev.bait_min_impressions, ev.bait_min_items)
