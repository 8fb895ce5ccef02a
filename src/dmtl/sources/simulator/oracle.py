"""The ground truth of a simulated world: latents and the closed-form formulas of the simulation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from dmtl.io import read_json, write_json, write_parquet
from dmtl.sources.simulator.config import SimConfig

FAN_READ_SHARE = 0.5
"""The fan affinity moves the reading logits by this share of its click effect (as topic match: 0.3 vs 0.6)."""


class Oracle:
    """Ground truth of a simulated world: item and user latents plus the formulas of the simulation.

    Evaluation only (docs/protocol.md section 5): models never see it. ``click_prob``, ``expected_duration``,
    ``expected_read_time`` and ``long_read_prob`` take user ids and optionally item ids and return a
    ``(len(user_ids), n_items)`` matrix (the whole corpus, in the order of ``items.item_id``, when
    ``item_ids`` is None), so evaluation can walk the corpus in chunks of users. The ``pair_*`` methods give
    the same quantities for aligned (user, item) pairs, e.g. logged impressions.

    Attributes:
        items: ``item_id, topic, publisher, length_s, quality, attractiveness, is_clickbait, popularity,
            release_day`` (``publisher`` is needed only with fans, ``release_day`` defaults to 0).
        users: ``user_id, reading_speed, click_bias, activity`` and ``affinity_<topic>`` per topic.
        fans: ``user_id, publisher``: each user's fan publishers (the latent user x publisher affinity whose
            effect is ``config.fan_strength``); empty when the world has none.
        config: The :class:`SimConfig` that generated the world (its formulas' coefficients).
        seed: The simulation seed, when known.
    """

    ITEM_COLUMNS = ("item_id", "topic", "length_s", "quality", "attractiveness", "is_clickbait")
    USER_COLUMNS = ("user_id", "reading_speed", "click_bias")

    def __init__(
        self,
        items: pd.DataFrame,
        users: pd.DataFrame,
        config: SimConfig,
        seed: int | None = None,
        fans: pd.DataFrame | None = None,
    ):
        for name, table, cols in (("items", items, self.ITEM_COLUMNS), ("users", users, self.USER_COLUMNS)):
            missing = [c for c in cols if c not in table.columns]
            if missing:
                raise ValueError(f"Oracle.{name} lacks column(s) {missing}; needs {list(cols)}")
        aff_cols = affinity_columns(config.n_topics)
        missing = [c for c in aff_cols if c not in users.columns]
        if missing:
            raise ValueError(f"Oracle.users lacks affinity column(s) {missing[:3]}...; needs {aff_cols[0]}..")
        topics = items["topic"].to_numpy()
        if len(topics) and (topics.min() < 0 or topics.max() >= config.n_topics):
            raise ValueError(f"Oracle.items.topic must lie in 0..{config.n_topics - 1} (config.n_topics)")
        self.items = items.reset_index(drop=True)
        self.users = users.reset_index(drop=True)
        self.config = config
        self.seed = seed
        self._item_ids = self.items["item_id"].to_numpy(np.int64)
        self._user_ids = self.users["user_id"].to_numpy(np.int64)
        self._user_order = np.argsort(self._user_ids, kind="stable")
        self._item_order = np.argsort(self._item_ids, kind="stable")
        self._topic = self.items["topic"].to_numpy(np.int64)
        self._quality = self.items["quality"].to_numpy(np.float64)
        self._length = self.items["length_s"].to_numpy(np.float64)
        self._item_click_logit = (
            config.click_bias
            + config.attractiveness_weight * self.items["attractiveness"].to_numpy(np.float64)
            + config.quality_click_weight * self._quality
        )
        self._speed = self.users["reading_speed"].to_numpy(np.float64)
        self._user_click_logit = self.users["click_bias"].to_numpy(np.float64)
        theta = self.users[aff_cols].to_numpy(np.float64)
        self._match = topic_match(theta, config.match_floor)  # (n_users, n_topics)
        self._init_fans(fans)

    def _init_fans(self, fans: pd.DataFrame | None) -> None:
        """Fans as sorted keys ``user_row * n_publishers + publisher`` with a CSR row index per user row."""
        n_pub = self.config.n_publishers
        if fans is None:
            fans = pd.DataFrame({"user_id": np.zeros(0, np.int64), "publisher": np.zeros(0, np.int64)})
        missing = [c for c in ("user_id", "publisher") if c not in fans.columns]
        if missing:
            raise ValueError(f"Oracle.fans lacks column(s) {missing}; needs ['user_id', 'publisher']")
        if len(fans) and "publisher" not in self.items.columns:
            raise ValueError("Oracle.items needs a 'publisher' column when the world has fans")
        self.fans = fans.reset_index(drop=True)
        pub = self.fans["publisher"].to_numpy(np.int64)
        if len(pub) and (pub.min() < 0 or pub.max() >= n_pub):
            raise ValueError(f"Oracle.fans.publisher must lie in 0..{n_pub - 1} (config.n_publishers)")
        rows = self._rows(self.fans["user_id"].to_numpy(), "user") if len(pub) else np.zeros(0, np.int64)
        self._fan_keys = np.unique(rows * n_pub + pub)
        self._fan_indptr = np.searchsorted(self._fan_keys, np.arange(len(self._user_ids) + 1) * n_pub)
        has_pub = "publisher" in self.items.columns
        self._publisher = self.items["publisher"].to_numpy(np.int64) if has_pub else None

    # -- id mapping ---------------------------------------------------------------------------------------

    @property
    def item_ids(self) -> np.ndarray:
        """Item ids in corpus order (the column order of the matrices)."""
        return self._item_ids

    @property
    def is_clickbait(self) -> np.ndarray:
        """Boolean clickbait flag per item, in corpus order."""
        return self.items["is_clickbait"].to_numpy(bool)

    @property
    def release_day(self) -> np.ndarray:
        """First day each item is available (0 = from the start; cold items later), in corpus order."""
        if "release_day" not in self.items.columns:
            return np.zeros(len(self._item_ids), dtype=np.int64)
        return self.items["release_day"].to_numpy(np.int64)

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each user id in ``users`` (``ValueError`` for unknown ids)."""
        return self._rows(user_ids, "user")

    def item_index(self, item_ids: np.ndarray) -> np.ndarray:
        """Corpus position of each item id in ``items`` (``ValueError`` for unknown ids)."""
        return self._rows(item_ids, "item")

    def _rows(self, ids: np.ndarray, which: str) -> np.ndarray:
        known, order = (
            (self._user_ids, self._user_order) if which == "user" else (self._item_ids, self._item_order)
        )
        ids = np.asarray(ids, dtype=np.int64).ravel()
        pos = np.searchsorted(known, ids, sorter=order)
        pos = np.minimum(pos, len(known) - 1)
        rows = order[pos]
        bad = known[rows] != ids
        if bad.any():
            raise ValueError(f"{int(bad.sum())} unknown {which} id(s), e.g. {ids[bad][:5].tolist()}")
        return rows

    def _grid(self, user_ids: np.ndarray, item_ids: np.ndarray | None, pairwise: bool) -> tuple[Any, ...]:
        u = self._rows(user_ids, "user")
        i = np.arange(len(self._item_ids)) if item_ids is None else self._rows(item_ids, "item")
        if pairwise:
            if len(u) != len(i):
                raise ValueError(f"pair_* needs as many item ids as user ids, got {len(u)} and {len(i)}")
            return u, i
        return u[:, None], i[None, :]

    # -- the formulas (broadcast over a (users, items) grid or aligned pairs) ------------------------------

    # In-place arithmetic below: a (2,000 x 4,000) block is 64 MB per temporary, and allocating them costs
    # more than the arithmetic.

    def _fan_indicator(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Whether user row ``u`` is a fan of item ``i``'s publisher, broadcast like ``u`` and ``i``."""
        keys, n_pub = self._fan_keys, self.config.n_publishers
        shape = np.broadcast_shapes(np.shape(u), np.shape(i))
        if len(keys) == 0:
            return np.zeros(shape, dtype=bool)
        pub = self._publisher[i]
        if len(shape) == 2 and np.shape(u)[1] == 1 and np.shape(i)[0] == 1:
            # A (users x items) grid: dense fan rows of these users (n_users x n_publishers), then one gather.
            rows = np.asarray(u)[:, 0]
            start, counts = self._fan_indptr[rows], np.diff(self._fan_indptr)[rows]
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            fan_pub = keys[np.repeat(start, counts) + offsets] % n_pub
            dense = np.zeros((len(rows), n_pub), dtype=bool)
            dense[np.repeat(np.arange(len(rows)), counts), fan_pub] = True
            return dense[:, pub[0]]
        key = u * n_pub + pub
        pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        return keys[pos] == key

    def _fan(self, u: np.ndarray, i: np.ndarray) -> np.ndarray | None:
        """The fan indicator, or None when the world has no fan effect (skips the work)."""
        if self.config.fan_strength == 0 or len(self._fan_keys) == 0:
            return None
        return self._fan_indicator(u, i)

    def _click(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        logit = self._match[u, self._topic[i]]  # a new array: the gather copies
        logit *= self.config.match_click_weight
        logit += self._user_click_logit[u]
        logit += self._item_click_logit[i]
        fan = self._fan(u, i)
        if fan is not None:  # in place where the user is a fan: no (users x items) float temporary
            np.add(logit, self.config.fan_strength, out=logit, where=fan)
        return special.expit(logit, out=logit)

    def _reading(self, u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bounce probability, mean read fraction and full-read seconds (module docstring, "Reading")."""
        c = self.config
        match = self._match[u, self._topic[i]]
        quality = self._quality[i]
        frac_mean = match * c.match_read_effect
        frac_mean += c.read_fraction_bias + c.quality_read_effect * quality
        p_bounce = match
        p_bounce *= -c.match_read_effect
        p_bounce += c.bounce_bias - c.quality_read_effect * quality
        fan = self._fan(u, i)
        if fan is not None:
            shift = FAN_READ_SHARE * c.fan_strength
            np.add(frac_mean, shift, out=frac_mean, where=fan)
            np.subtract(p_bounce, shift, out=p_bounce, where=fan)
        special.expit(p_bounce, out=p_bounce)
        special.expit(frac_mean, out=frac_mean)
        return p_bounce, frac_mean, self._length[i] / self._speed[u]

    def _duration(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        p_bounce, frac_mean, full_s = self._reading(u, i)
        c = self.config
        bounce_mean = c.bounce_median_s * math.exp(c.bounce_sigma**2 / 2)
        # E = p * bounce_mean + (1 - p) * read with read = full_s * frac_mean, rearranged to run in place.
        read = full_s
        read *= frac_mean
        read -= bounce_mean
        np.subtract(1.0, p_bounce, out=p_bounce)
        read *= p_bounce
        read += bounce_mean
        return read

    def _long_read(self, u: np.ndarray, i: np.ndarray, tau_seconds: float) -> np.ndarray:
        p_bounce, frac_mean, full_s = self._reading(u, i)
        c = self.config
        if c.bounce_sigma > 0:
            z = (math.log(tau_seconds) - math.log(c.bounce_median_s)) / c.bounce_sigma
            bounce_long = float(special.ndtr(-z))
        else:
            bounce_long = float(c.bounce_median_s > tau_seconds)
        kappa = c.read_fraction_concentration
        needed = np.minimum(tau_seconds / full_s, 1.0)  # read fraction needed to exceed tau
        read_long = special.betaincc(kappa * frac_mean, kappa * (1.0 - frac_mean), needed)
        return p_bounce * bounce_long + (1.0 - p_bounce) * read_long

    # -- public matrices ------------------------------------------------------------------------------------

    def click_prob(self, user_ids: np.ndarray, item_ids: np.ndarray | None = None) -> np.ndarray:
        """P(click) with no position effect (as if examined): ``(len(user_ids), n_items)``.

        Args:
            user_ids: User ids (any order, repeats allowed).
            item_ids: Item ids; None = the whole corpus in the order of ``items.item_id``.

        Returns:
            Float64 matrix, rows follow ``user_ids`` and columns ``item_ids``.
        """
        return self._click(*self._grid(user_ids, item_ids, pairwise=False))

    def expected_duration(self, user_ids: np.ndarray, item_ids: np.ndarray | None = None) -> np.ndarray:
        """E[duration | click] in seconds, shaped like :meth:`click_prob`."""
        return self._duration(*self._grid(user_ids, item_ids, pairwise=False))

    def expected_read_time(self, user_ids: np.ndarray, item_ids: np.ndarray | None = None) -> np.ndarray:
        """``click_prob * expected_duration``: expected seconds of reading per (examined) impression."""
        u, i = self._grid(user_ids, item_ids, pairwise=False)
        return self._click(u, i) * self._duration(u, i)

    def long_read_prob(
        self, user_ids: np.ndarray, item_ids: np.ndarray | None = None, tau_seconds: float = 50.0
    ) -> np.ndarray:
        """P(duration > tau_seconds | click): the ground-truth "CVR" of docs/protocol.md section 1.

        Slower than the other matrices (an incomplete beta function per entry, about 3 us each): chunk users.
        """
        if not tau_seconds > 0:
            raise ValueError(f"tau_seconds must be > 0, got {tau_seconds!r}")
        return self._long_read(*self._grid(user_ids, item_ids, pairwise=False), tau_seconds)

    def pair_click_prob(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """:meth:`click_prob` for aligned pairs ``(user_ids[k], item_ids[k])``: shape ``(n,)``."""
        return self._click(*self._grid(user_ids, item_ids, pairwise=True))

    def pair_expected_duration(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """:meth:`expected_duration` for aligned pairs: shape ``(n,)``."""
        return self._duration(*self._grid(user_ids, item_ids, pairwise=True))

    def pair_long_read_prob(
        self, user_ids: np.ndarray, item_ids: np.ndarray, tau_seconds: float = 50.0
    ) -> np.ndarray:
        """:meth:`long_read_prob` for aligned pairs: shape ``(n,)``."""
        return self._long_read(*self._grid(user_ids, item_ids, pairwise=True), tau_seconds)

    def pair_bounce_prob(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """P(bounce | click) for aligned pairs: shape ``(n,)`` (module docstring, "Reading duration")."""
        return self._reading(*self._grid(user_ids, item_ids, pairwise=True))[0]

    def fan_affinity(self, user_ids: np.ndarray, item_ids: np.ndarray | None = None) -> np.ndarray:
        """Whether each user is a fan of each item's publisher: boolean, shaped like :meth:`click_prob`."""
        return self._fan_indicator(*self._grid(user_ids, item_ids, pairwise=False))

    def pair_fan_affinity(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """:meth:`fan_affinity` for aligned pairs: shape ``(n,)``."""
        return self._fan_indicator(*self._grid(user_ids, item_ids, pairwise=True))

    def examination_prob(self, position: np.ndarray) -> np.ndarray:
        """Position effect: P(examined) = ``1 / (1 + position) ** position_decay`` (position 0 = top)."""
        pos = np.asarray(position, dtype=np.float64)
        return (1.0 + np.maximum(pos, 0.0)) ** -self.config.position_decay

    # -- files ----------------------------------------------------------------------------------------------

    def write(self, directory: str | Path) -> None:
        """Write ``items.parquet``, ``users.parquet``, ``fans.parquet`` and ``oracle.json`` (config, seed).

        Each file is written atomically (:mod:`dmtl.io`).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_parquet(self.items, directory / "items.parquet")
        write_parquet(self.users, directory / "users.parquet")
        write_parquet(self.fans, directory / "fans.parquet")
        write_json({"config": self.config.to_dict(), "seed": self.seed}, directory / "oracle.json")

    @classmethod
    def read(cls, directory: str | Path) -> Oracle:
        """Read an oracle written by :meth:`write`."""
        directory = Path(directory)
        meta = read_json(directory / "oracle.json")
        fans = directory / "fans.parquet"  # absent in oracles written before fans existed: no fans
        return cls(
            items=pd.read_parquet(directory / "items.parquet"),
            users=pd.read_parquet(directory / "users.parquet"),
            config=SimConfig.from_dict(meta["config"]),
            seed=meta.get("seed"),
            fans=pd.read_parquet(fans) if fans.exists() else None,
        )


def affinity_columns(n_topics: int) -> list[str]:
    """Names of the oracle's per-topic affinity columns: ``affinity_00`` ... (zero-padded)."""
    width = max(2, len(str(n_topics - 1)))
    return [f"affinity_{t:0{width}d}" for t in range(n_topics)]


def topic_match(theta: np.ndarray, match_floor: float) -> np.ndarray:
    """``log(n_topics * theta + match_floor)``: 0 near an average topic, positive for a favourite one."""
    return np.log(theta.shape[-1] * theta + match_floor)
