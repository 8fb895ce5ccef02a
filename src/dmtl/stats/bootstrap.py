"""The hierarchical bootstrap over test users and seeds: per-user metrics and weighted AUCs for all replicates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dmtl.metrics import binary_labels
from dmtl.stats.auc import _auc_rows, _check_impressions, _per_user_auc


@dataclass(frozen=True)
class Draws:
    """B bootstrap replicates of the test users and of the training seeds, drawn once for a dataset.

    Every model, seed and metric is evaluated on the same draws, so differences between models are paired.

    Attributes:
        users: ``(B, n_users)`` multiplicity of each test user in each replicate (a multinomial draw of
            ``n_users`` users with replacement: each row sums to ``n_users``).
        seeds: ``(B, n_seeds)`` multiplicity of each training seed in each replicate (rows sum to
            ``n_seeds``).
    """

    users: np.ndarray
    seeds: np.ndarray

    @classmethod
    def draw(cls, n_users: int, n_seeds: int, n_boot: int, seed: int) -> Draws:
        """``n_boot`` replicates from ``np.random.default_rng(seed)``: users first, then seeds."""
        if n_users < 1 or n_seeds < 1 or n_boot < 1:
            raise ValueError(f"need n_users, n_seeds, n_boot >= 1, got {n_users}, {n_seeds}, {n_boot}")
        rng = np.random.default_rng(seed)
        users = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=n_boot).astype(np.int32)
        seeds = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot).astype(np.int32)
        return cls(users, seeds)

    @property
    def n_boot(self) -> int:
        return int(self.users.shape[0])

    def head(self, n_boot: int) -> Draws:
        """The first ``n_boot`` replicates (a cheaper metric resampled fewer times, on the same draws)."""
        if not 1 <= n_boot <= self.n_boot:
            raise ValueError(f"n_boot must be in [1, {self.n_boot}], got {n_boot}")
        return Draws(self.users[:n_boot], self.seeds[:n_boot])


def _with_observed(weights: np.ndarray) -> np.ndarray:
    """Row 0 = the observed sample (every unit once), rows 1.. = the replicates."""
    w = np.asarray(weights)
    return np.vstack([np.ones((1, w.shape[1]), dtype=w.dtype), w])


@dataclass(frozen=True)
class Replicates:
    """One model's metric on the observed data and on every bootstrap replicate.

    Attributes:
        per_seed: ``(n_seeds,)`` the metric on the observed test data, per seed (``nan`` = undefined).
        value: the reported number: the mean of ``per_seed`` over its finite seeds.
        draws: ``(B,)`` the replicate distribution of ``value``.
    """

    per_seed: np.ndarray
    value: float
    draws: np.ndarray


def seed_means(per_seed: np.ndarray, seed_weights: np.ndarray) -> np.ndarray:
    """Mean over drawn seeds: ``sum_s m_s x_s / sum_s m_s`` over finite ``x_s``, for every row.

    Args:
        per_seed: ``(R, ..., n_seeds)`` values, one per row (replicate) and seed.
        seed_weights: ``(R, n_seeds)`` multiplicity of each seed in each row.

    Returns:
        ``(R, ...)``; ``nan`` where no drawn seed has a finite value.
    """
    x = np.asarray(per_seed, dtype=np.float64)
    m = np.asarray(seed_weights, dtype=np.float64)
    m = m.reshape(m.shape[0], *([1] * (x.ndim - 2)), m.shape[1])
    ok = np.isfinite(x)
    w = np.where(ok, m, 0.0)
    num = (w * np.where(ok, x, 0.0)).sum(axis=-1)
    den = w.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def user_weighted_means(
    values: np.ndarray, user_weights: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Weighted means over users for every row of multiplicities, as two matrix products.

    ``mean_r = sum_u m_ru a_u x_u / sum_u m_ru a_u`` over users with finite ``x_u``: with ``a = 1`` the
    user-weighted mean of a per-user metric on a resampled user set (a user drawn twice counts twice),
    with ``a_u`` = the user's impressions the impression-weighted mean of :func:`dmtl.metrics.gauc`.

    Args:
        values: ``(n_users,)`` or ``(C, n_users)`` per-user values; ``nan`` = the user does not count.
        user_weights: ``(R, n_users)`` multiplicities (one row per replicate; all ones = the observed data).
        weights: ``a``: ``(n_users,)`` or the shape of ``values``; default 1.

    Returns:
        ``(R,)`` or ``(R, C)``; ``nan`` where no counted user has weight.
    """
    x = np.asarray(values, dtype=np.float64)
    one = x.ndim == 1
    x = np.atleast_2d(x)
    w = np.asarray(user_weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != x.shape[1]:
        raise ValueError(f"user_weights must be (R, n_users={x.shape[1]}), got {w.shape}")
    ok = np.isfinite(x)
    if weights is None:
        num = w @ np.where(ok, x, 0.0).T
        den_cols = ok.astype(np.float64)
    else:
        a = np.broadcast_to(np.asarray(weights, dtype=np.float64), x.shape)
        num = w @ np.where(ok, a * x, 0.0).T
        den_cols = np.where(ok, a, 0.0)
    # Metrics of one population share their denominator (e.g. recall_long@K of every model and seed counts
    # the users with a long read): one product per distinct column.
    first: dict[bytes, int] = {}
    column = np.array([first.setdefault(row.tobytes(), len(first)) for row in den_cols])
    _, first_row = np.unique(column, return_index=True)  # ids number the distinct columns in order
    den = (w @ den_cols[first_row].T)[:, column]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / den, np.nan)
    return out[:, 0] if one else out


def _seed_array(values: Any, n_cols: int | None, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or (n_cols is not None and x.shape[1] != n_cols):
        raise ValueError(f"{what} must be (n_seeds, {n_cols or 'n'}): one row per seed, got shape {x.shape}")
    return x


def bootstrap_per_user(
    per_user: Mapping[str, Mapping[str, Any]], draws: Draws, users: np.ndarray | None = None
) -> dict[str, dict[str, Replicates]]:
    """Hierarchical bootstrap of per-user metrics (retrieval: ``recall_long@K``, ``bait_share@K``, ...).

    Replicate ``b`` of model ``M``: ``sum_s S_bs mean_b(M, s) / sum_s S_bs`` with ``S`` the seed draw and
    ``mean_b(M, s) = sum_u W_bu x_Msu / sum_u W_bu`` over users with finite ``x_Msu`` (the user draw ``W``
    shared by every model and seed). All columns go through one matrix product per denominator.

    Args:
        per_user: ``{model: {metric: (n_seeds, n) per-user values}}``; rows in one seed order shared by all
            models, columns the same users in the same order for every model, seed and metric.
        draws: the replicates (``draws.seeds`` has ``n_seeds`` columns).
        users: positions on the user axis of ``draws.users`` of the ``n`` columns (the retrieval population
            inside all test users); default: the columns are the whole axis.

    Returns:
        ``{model: {metric: Replicates}}``.
    """
    w_users = _with_observed(draws.users)
    if users is not None:
        w_users = w_users[:, np.asarray(users)]
    n_cols = w_users.shape[1]
    n_seeds = draws.seeds.shape[1]
    keys = [(model, metric) for model, block in per_user.items() for metric in block]
    if not keys:
        return {}
    blocks = []
    for model, metric in keys:
        x = _seed_array(per_user[model][metric], n_cols, f"per_user[{model!r}][{metric!r}]")
        if x.shape[0] != n_seeds:
            raise ValueError(
                f"per_user[{model!r}][{metric!r}] has {x.shape[0]} seeds but the draws have {n_seeds}; "
                "every model needs the same seeds, in the same order"
            )
        blocks.append(x)
    means = user_weighted_means(np.concatenate(blocks), w_users)  # (R, keys * n_seeds)
    means = means.reshape(means.shape[0], len(keys), n_seeds)
    values = seed_means(means, _with_observed(draws.seeds))  # (R, keys)
    out: dict[str, dict[str, Replicates]] = {}
    for i, (model, metric) in enumerate(keys):
        out.setdefault(model, {})[metric] = Replicates(means[0, i], float(values[0, i]), values[1:, i])
    return out


def bootstrap_gauc(
    labels: np.ndarray | Sequence,
    scores: np.ndarray | Sequence,
    user: np.ndarray | Sequence,
    user_weights: np.ndarray,
) -> np.ndarray:
    """GAUC of every user-resampled replicate: ``sum_u m_u n_u AUC_u / sum_u m_u n_u`` over two-class users.

    A user drawn m times enters m times with the same AUC and impression count, so this equals
    :func:`dmtl.metrics.gauc` on the explicitly resampled data (copies as distinct groups or as one).

    Args:
        labels, scores, user: as :func:`bootstrap_auc`.
        user_weights: ``(R, n_users)`` multiplicities.

    Returns:
        ``(R,)``; ``nan`` where no drawn user has both classes.
    """
    w = np.asarray(user_weights)
    y, s, u = _check_impressions(labels, scores, user, w.shape[1])
    auc_u, n_u = _per_user_auc(y, s, u, w.shape[1])
    return user_weighted_means(auc_u, w, weights=n_u)


@dataclass(frozen=True)
class EvalSample:
    """The test data the bootstrap resamples: the test users (the unit) and their test impressions.

    Attributes:
        n_users: size of the user axis: every test user (with at least one test impression).
        impression_user: ``(n_imp,)`` each test impression's position on the user axis.
        click: ``(n_imp,)`` y_c.
        long_read: ``(n_imp,)`` y_d (only its value on clicked impressions matters).
        retrieval_users: ``(n_ret,)`` positions on the user axis of the rows of the per-user retrieval
            arrays (the retrieval population, in its row order); ``None``: those rows are the whole axis.
    """

    n_users: int
    impression_user: np.ndarray
    click: np.ndarray
    long_read: np.ndarray
    retrieval_users: np.ndarray | None = None

    def __post_init__(self) -> None:
        u = np.asarray(self.impression_user)
        if (
            u.ndim != 1
            or not np.issubdtype(u.dtype, np.integer)
            or (u.size and (u.min() < 0 or u.max() >= self.n_users))
        ):
            raise ValueError(f"impression_user must be 1-D integer positions in [0, {self.n_users})")
        for name in ("click", "long_read"):
            if np.shape(getattr(self, name)) != u.shape:
                raise ValueError(
                    f"{name} must have one value per impression ({u.size}), "
                    f"got {np.shape(getattr(self, name))}"
                )
        r = self.retrieval_users
        if r is not None:
            r = np.asarray(r)
            if (
                r.ndim != 1
                or not np.issubdtype(r.dtype, np.integer)
                or (r.size and (r.min() < 0 or r.max() >= self.n_users))
            ):
                raise ValueError(f"retrieval_users must be 1-D integer positions in [0, {self.n_users})")

    def ranking_tasks(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{task: (rows, labels)}``: the impressions each ranking task scores and their labels
        (docs/protocol.md section 4: ``auc_click`` and ``auc_ctcvr`` over all impressions, ``auc_cvr``
        among clicked ones)."""
        y_c = binary_labels(self.click, "click")
        y_d = binary_labels(self.long_read, "long_read")
        every = np.ones(y_c.size, dtype=bool)
        return {"click": (every, y_c), "ctcvr": (every, y_c * y_d), "cvr": (y_c == 1, y_d)}


def bootstrap_ranking(
    scores: Mapping[str, Mapping[str, Any]], sample: EvalSample, draws: Draws, gauc: bool = True
) -> dict[str, dict[str, Replicates]]:
    """Hierarchical bootstrap of the ranking metrics: AUC (and GAUC) per replicate, then the seed mean.

    Args:
        scores: ``{model: {task: (n_seeds, n_imp) scores}}`` with task in ``click``, ``ctcvr``, ``cvr``
            (as :attr:`dmtl.evaluation.Evaluation.test_scores`); every test impression scored (``cvr`` reads
            the clicked ones). A two-tower model scores every task with one array; the teacher each with
            its own head.
        sample: the test impressions and their users.
        draws: the replicates (user axis = ``sample.n_users``).
        gauc: also the ``gauc_<task>`` twin of each ``auc_<task>``.

    Returns:
        ``{model: {"auc_<task>" | "gauc_<task>": Replicates}}``.
    """
    if draws.users.shape[1] != sample.n_users:
        raise ValueError(f"draws cover {draws.users.shape[1]} users but the sample has {sample.n_users}")
    w_users = _with_observed(draws.users)
    wt = np.ascontiguousarray(w_users.T)
    w_seeds = _with_observed(draws.seeds)
    n_seeds = draws.seeds.shape[1]
    tasks = sample.ranking_tasks()
    u_all = np.asarray(sample.impression_user).astype(np.int64)
    out: dict[str, dict[str, Replicates]] = {}
    gauc_keys: list[tuple[str, str]] = []
    gauc_auc: list[np.ndarray] = []
    gauc_n: list[np.ndarray] = []
    for model, block in scores.items():
        for task, arr in block.items():
            if task not in tasks:
                raise ValueError(f"scores[{model!r}] has {task!r}; ranking tasks are {sorted(tasks)}")
            rows, labels = tasks[task]
            x = _seed_array(arr, u_all.size, f"scores[{model!r}][{task!r}]")
            if x.shape[0] != n_seeds:
                raise ValueError(f"scores[{model!r}][{task!r}] has {x.shape[0]} seeds, the draws {n_seeds}")
            y, u = labels[rows], u_all[rows]
            per_seed = np.empty((w_users.shape[0], n_seeds))
            for k in range(n_seeds):
                s = x[k, rows]
                if not np.isfinite(s).all():
                    raise ValueError(f"scores[{model!r}][{task!r}] seed row {k} has non-finite scores")
                per_seed[:, k] = _auc_rows(y, s, u, wt)
                if gauc:
                    a, n = _per_user_auc(y, s, u, sample.n_users)
                    gauc_auc.append(a)
                    gauc_n.append(n)
            if gauc:
                gauc_keys.append((model, f"gauc_{task}"))
            values = seed_means(per_seed, w_seeds)
            out.setdefault(model, {})[f"auc_{task}"] = Replicates(per_seed[0], float(values[0]), values[1:])
    if gauc_keys:
        means = user_weighted_means(np.array(gauc_auc), w_users, weights=np.array(gauc_n))
        means = means.reshape(means.shape[0], len(gauc_keys), n_seeds)
        values = seed_means(means, w_seeds)
        for i, (model, metric) in enumerate(gauc_keys):
            out[model][metric] = Replicates(means[0, i], float(values[0, i]), values[1:, i])
    return out
