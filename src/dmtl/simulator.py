"""A simulated Kandian-like news feed: the study's default data (docs/protocol.md section 5).

Real Kandian logs are private, so the study runs by default on a simulated feed that has what the paper is
about: clickbait that is clicked a lot and read briefly, zero-duration non-clicks, and a logging policy with
position bias. The world, in the order :func:`simulate` draws it:

Users
    Observed categorical features (gender, age band, city tier, device, activity level). Each observed
    feature value adds a topic-logit vector; their sum sets the user's segment mean over topics, and the
    user's latent topic affinities ``theta_u`` are Dirichlet around it (sparse), so the observed features
    carry real but incomplete signal about what a user reads. Latent reading speed (log-normal, weakly
    slower with age band), latent click propensity, and latent activity (sessions per day), of which the
    observed ``activity_level`` is a coarse bin.
Items
    Observed topic (``category``), length band, publisher and title style; latent length in seconds,
    quality, title attractiveness and clickbait flag. Clickbait items (share ``clickbait_share``) have high
    attractiveness and low quality. The title style only weakly tells clickbait apart, as in real feeds.
    Quality is observed nowhere: a model can learn it only from logged reading behaviour per item id.
Logging policy
    Each active user-day has a Poisson number of feed sessions of ``feed_length`` positions. Items are drawn
    from a mix of topic match and a log-normal popularity (not uniform), ranked by the policy's own score
    within the session (so position also carries some topic match, as in a ranked feed), and a (user, item)
    pair is shown at most once. Every item is available every day.
Click
    ``P(click) = exam(position) * sigmoid(logit)`` with examination ``1 / (1 + position) ** position_decay``
    and ``logit = click_bias + user_bias + match_click_weight * match + attractiveness_weight * attractiveness
    + quality_click_weight * quality``, where ``match = log(n_topics * theta_u[topic] + match_floor)``.
Reading duration (clicked impressions only; non-clicks have duration 0)
    With probability ``p_bounce = sigmoid(bounce_bias - quality_read_effect * quality - match_read_effect *
    match)`` the user bounces after a log-normal few seconds; otherwise the duration is ``length_s /
    reading_speed * f`` with read fraction ``f ~ Beta`` of mean ``sigmoid(read_fraction_bias +
    quality_read_effect * quality + match_read_effect * match)``. Clickbait therefore mostly bounces.

The ground truth is an :class:`Oracle`, written apart from the log and never given to models: it computes,
for any users and the whole corpus, the click probability without position effect, the expected duration
given a click and the long-read probability, in closed form from the same formulas the simulation samples.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from dmtl.io import read_json, write_json, write_parquet
from dmtl.schema import FeedLog, coerce_impressions

SECONDS_PER_DAY = 86_400

# Observed user features drawn independently of the latents: (values, probabilities). activity_level is not
# here because it is a bin of the latent activity (see _draw_users).
USER_FEATURES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "gender": (("female", "male"), (0.48, 0.52)),
    "age_band": (("<18", "18-24", "25-30", "31-40", "41-50", "50+"), (0.05, 0.20, 0.25, 0.25, 0.15, 0.10)),
    "city_tier": (("tier1", "tier2", "tier3", "tier4"), (0.20, 0.30, 0.30, 0.20)),
    "device": (("android", "ios", "other"), (0.70, 0.25, 0.05)),
}
ACTIVITY_LEVELS: tuple[str, ...] = ("low", "medium", "high")
# Standard-normal quantiles 0.50 and 0.85: half the users are "low", 15% "high" (population bins, so the
# mapping from latent activity to the observed level does not depend on the sample).
_ACTIVITY_Z_EDGES = (0.0, 1.0364333894937898)
# Relative strength of each observed feature's effect on topic preferences (scaled by segment_topic_sd):
# demographics say most about what someone reads, the device and activity level little.
_FEATURE_TOPIC_WEIGHT: dict[str, float] = {
    "gender": 1.0,
    "age_band": 1.0,
    "city_tier": 0.6,
    "device": 0.4,
    "activity_level": 0.3,
}
TITLE_STYLES: tuple[str, ...] = ("plain", "question", "number", "exclaim")
_TITLE_STYLE_BASE = np.array([0.55, 0.15, 0.20, 0.10])  # every item
_TITLE_STYLE_BAIT = np.array([0.10, 0.35, 0.25, 0.30])  # the "baity" styles clickbait leans to
LENGTH_BANDS: tuple[str, ...] = ("short", "medium", "long", "very_long")
_PUBLISHER_TOPIC_LOYALTY = 0.9  # share of an item's publishers drawn among those whose home is its topic
_BAIT_SPREAD = 0.5  # sd of clickbait attractiveness and quality around their means (ordinary items: 1)
_LENGTH_CLIP_S = (10.0, 1800.0)
_REDRAWS = 3  # attempts to replace an item the user was already shown before dropping the slot


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulated feed; the defaults give feed-like data (see :data:`CALIBRATION_TARGETS`).

    Attributes:
        n_users: Number of users.
        n_items: Number of items in the corpus (all available on every day).
        n_days: Days of log; ``day`` runs 0..n_days-1 and the study splits train/validation/test by day.
        n_topics: Number of topics; the item's topic is its observed ``category``.
        n_publishers: Number of publishers (observed item feature); each has a home topic.
        sessions_per_user_day: Mean number of feed sessions per user and day (before activity scaling).
        feed_length: Positions per feed session (``position`` 0..feed_length-1).
        position_gap_s: Seconds between consecutive positions of a session (sets ``time``).
        segment_topic_sd: SD of each observed user-feature value's topic-logit effect; larger = observed
            features say more about a user's topics.
        user_topic_concentration: Dirichlet concentration of a user's affinities around the segment mean;
            smaller = sparser, more idiosyncratic users (less predictable from observed features).
        match_floor: Floor inside ``match = log(n_topics * theta + match_floor)``, so a topic a user never
            reads has a finite, strongly negative match.
        reading_speed_sigma: SD of log reading speed (at speed 1 a full read takes ``length_s`` seconds).
        speed_age_effect: Change of log reading speed per age band (negative: older users read slower); the
            weak observed correlate of reading speed.
        activity_sigma: SD of log latent activity (sessions-per-day multiplier, mean 1).
        user_click_sd: SD of the latent per-user click-logit offset.
        topic_supply_concentration: Dirichlet concentration of the share of items per topic (smaller = more
            skewed supply).
        length_median_s: Median item length in seconds at reading speed 1.
        length_sigma: SD of log item length.
        topic_length_sd: SD of a per-topic shift of log length (some topics run longer).
        length_band_edges_s: Edges in seconds of the observed length bands (short/medium/long/very_long).
        publisher_quality_sd: SD of a per-publisher quality shift: the publisher id hints at quality a little.
        popularity_sigma: SD of the log-normal item popularity the logging policy uses (popularity skew).
        clickbait_share: Share of items that are clickbait.
        bait_attractiveness: Mean attractiveness of clickbait (ordinary items: standard normal).
        bait_quality: Mean quality of clickbait (ordinary items: standard normal plus publisher shift).
        title_style_signal: In [0, 1]: how far clickbait's title-style distribution moves from the ordinary
            one toward the "baity" styles; 0 = the title style says nothing about clickbait.
        policy_match_weight: Exponent on the relative topic affinity in the logging policy (0 = ignore
            topics, popularity only).
        policy_explore: Share of impressions the policy draws by popularity alone.
        policy_attractiveness_weight: Weight of attractiveness in the policy's item popularity: the
            production policy is itself click-trained, so it over-exposes attractive titles a little.
        unique_user_item: Show each (user, item) pair at most once: a repeat is redrawn (up to 3 times), then
            dropped.
        click_bias: Intercept of the click logit.
        match_click_weight: Weight of topic match in the click logit.
        attractiveness_weight: Weight of title attractiveness in the click logit (the clickbait lever).
        quality_click_weight: Weight of quality in the click logit (small: quality is hardly visible before
            the click).
        position_decay: Exponent ``eta`` of the examination probability ``1 / (1 + position) ** eta``.
        bounce_bias: Intercept of the bounce logit (bounce = leave within seconds).
        quality_read_effect: Effect of quality on reading: lowers the bounce logit and raises the read
            fraction logit (the lever that makes clickbait short reads).
        match_read_effect: Effect of topic match on reading, in the same two places.
        read_fraction_bias: Intercept of the logit of the mean read fraction of non-bounced reads.
        read_fraction_concentration: Concentration ``a + b`` of the Beta read fraction (larger = less spread).
        bounce_median_s: Median seconds of a bounce.
        bounce_sigma: SD of log bounce seconds.
    """

    n_users: int = 12_000
    n_items: int = 4_000
    n_days: int = 12
    n_topics: int = 20
    n_publishers: int = 300
    sessions_per_user_day: float = 0.55
    feed_length: int = 8
    position_gap_s: int = 15
    segment_topic_sd: float = 0.8
    user_topic_concentration: float = 3.0
    match_floor: float = 0.1
    reading_speed_sigma: float = 0.3
    speed_age_effect: float = -0.04
    activity_sigma: float = 0.7
    user_click_sd: float = 0.3
    topic_supply_concentration: float = 10.0
    length_median_s: float = 105.0
    length_sigma: float = 0.5
    topic_length_sd: float = 0.2
    length_band_edges_s: tuple[float, ...] = (60.0, 120.0, 240.0)
    publisher_quality_sd: float = 0.3
    popularity_sigma: float = 0.8
    clickbait_share: float = 0.15
    bait_attractiveness: float = 1.8
    bait_quality: float = -2.0
    title_style_signal: float = 0.35
    policy_match_weight: float = 1.0
    policy_explore: float = 0.1
    policy_attractiveness_weight: float = 0.2
    unique_user_item: bool = True
    click_bias: float = -3.0
    match_click_weight: float = 0.6
    attractiveness_weight: float = 0.8
    quality_click_weight: float = 0.1
    position_decay: float = 0.5
    bounce_bias: float = -1.3
    quality_read_effect: float = 1.0
    match_read_effect: float = 0.3
    read_fraction_bias: float = 0.0
    read_fraction_concentration: float = 4.0
    bounce_median_s: float = 4.0
    bounce_sigma: float = 0.5

    def __post_init__(self) -> None:
        _validate_config(self)

    @property
    def expected_impressions(self) -> float:
        """Impressions the policy schedules before (user, item) repeats are dropped: a size guide."""
        return self.n_users * self.n_days * self.sessions_per_user_day * self.feed_length

    def to_dict(self) -> dict[str, Any]:
        """All knobs as a JSON-friendly dict (tuples become lists)."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SimConfig:
        """Inverse of :meth:`to_dict`; unknown keys or bad values raise ``ValueError``."""
        return _replace_checked(cls(), values)


_PROBABILITY_FIELDS = ("clickbait_share", "title_style_signal", "policy_explore")
_POSITIVE_FIELDS = (
    "sessions_per_user_day",
    "user_topic_concentration",
    "match_floor",
    "topic_supply_concentration",
    "length_median_s",
    "read_fraction_concentration",
    "bounce_median_s",
)
_NON_NEGATIVE_FIELDS = (
    "segment_topic_sd",
    "reading_speed_sigma",
    "activity_sigma",
    "user_click_sd",
    "length_sigma",
    "topic_length_sd",
    "publisher_quality_sd",
    "popularity_sigma",
    "position_decay",
    "bounce_sigma",
    "policy_match_weight",
)


def _validate_config(cfg: SimConfig) -> None:
    # Field types are the annotation strings (``from __future__ import annotations``): 'int', 'float', ...
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.type == "int":
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"SimConfig.{f.name} must be an integer >= 1, got {v!r}")
        elif f.type == "bool":
            if not isinstance(v, bool | np.bool_):
                raise ValueError(f"SimConfig.{f.name} must be true or false, got {v!r}")
        elif f.type == "float":
            if isinstance(v, bool) or not isinstance(v, int | float | np.number) or not math.isfinite(v):
                raise ValueError(f"SimConfig.{f.name} must be a finite number, got {v!r}")
    for name in _PROBABILITY_FIELDS:
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"SimConfig.{name} must lie in [0, 1], got {getattr(cfg, name)!r}")
    for name in _POSITIVE_FIELDS:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"SimConfig.{name} must be > 0, got {getattr(cfg, name)!r}")
    for name in _NON_NEGATIVE_FIELDS:
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"SimConfig.{name} must be >= 0, got {getattr(cfg, name)!r}")
    edges = cfg.length_band_edges_s
    if (
        not isinstance(edges, tuple)
        or len(edges) != len(LENGTH_BANDS) - 1
        or not all(isinstance(e, int | float) and math.isfinite(e) and e > 0 for e in edges)
        or not all(a < b for a, b in zip(edges, edges[1:], strict=False))
    ):
        raise ValueError(
            f"SimConfig.length_band_edges_s must be {len(LENGTH_BANDS) - 1} increasing positive seconds "
            f"(bands {LENGTH_BANDS}), got {edges!r}"
        )
    if cfg.feed_length * cfg.position_gap_s >= SECONDS_PER_DAY:
        raise ValueError("SimConfig.feed_length * position_gap_s must be shorter than a day")


def _replace_checked(base: SimConfig, overrides: Mapping[str, Any]) -> SimConfig:
    fields = {f.name: f for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown simulator knob(s) {unknown}; valid: {sorted(fields)}")
    values: dict[str, Any] = {}
    for name, v in overrides.items():
        kind = fields[name].type
        # YAML and JSON give lists and may give 1000.0 for an integer: accept the unambiguous spellings.
        if kind == "int" and isinstance(v, float) and v.is_integer():
            v = int(v)
        elif kind == "float" and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        elif kind.startswith("tuple") and isinstance(v, list):
            v = tuple(float(e) if isinstance(e, int) and not isinstance(e, bool) else e for e in v)
        values[name] = v
    return dataclasses.replace(base, **values)


PRESETS: dict[str, SimConfig] = {
    # Tests and smoke runs: ~30k impressions in well under a second.
    "tiny": SimConfig(n_users=1_200, n_items=800, n_days=7, n_publishers=80, sessions_per_user_day=0.5),
    # The README's run: ~600k impressions, sized so 3 seeds x (teacher + 5 students) fit in 10 min on 2 cores.
    "default": SimConfig(),
    # Scale: >= 10 million impressions.
    "large": SimConfig(n_users=200_000, n_items=50_000, n_days=14, n_publishers=3_000),
}


def make_config(preset: str = "default", overrides: Mapping[str, Any] | None = None) -> SimConfig:
    """Return the preset's :class:`SimConfig` with ``overrides`` applied.

    Args:
        preset: One of :data:`PRESETS` (``tiny``, ``default``, ``large``).
        overrides: Knob name -> value (e.g. ``{"clickbait_share": 0.3}``, as in ``params.yaml``
            ``data.sim``).

    Returns:
        The validated configuration.

    Raises:
        ValueError: Unknown preset or knob (the message lists the valid ones), or a bad value.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown simulator preset {preset!r}; valid: {sorted(PRESETS)}")
    return _replace_checked(PRESETS[preset], dict(overrides or {}))


# ----------------------------------------------------------------------------------------------------------
# Ground truth


class Oracle:
    """Ground truth of a simulated world: item and user latents plus the formulas of the simulation.

    Evaluation only (docs/protocol.md section 5): models never see it. ``click_prob``, ``expected_duration``,
    ``expected_read_time`` and ``long_read_prob`` take user ids and optionally item ids and return a
    ``(len(user_ids), n_items)`` matrix (the whole corpus, in the order of ``items.item_id``, when
    ``item_ids`` is None), so evaluation can walk the corpus in chunks of users. The ``pair_*`` methods give
    the same quantities for aligned (user, item) pairs, e.g. logged impressions.

    Attributes:
        items: ``item_id, topic, publisher, length_s, quality, attractiveness, is_clickbait, popularity``.
        users: ``user_id, reading_speed, click_bias, activity`` and ``affinity_<topic>`` per topic.
        config: The :class:`SimConfig` that generated the world (its formulas' coefficients).
        seed: The simulation seed, when known.
    """

    ITEM_COLUMNS = ("item_id", "topic", "length_s", "quality", "attractiveness", "is_clickbait")
    USER_COLUMNS = ("user_id", "reading_speed", "click_bias")

    def __init__(self, items: pd.DataFrame, users: pd.DataFrame, config: SimConfig, seed: int | None = None):
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

    # -- id mapping ---------------------------------------------------------------------------------------

    @property
    def item_ids(self) -> np.ndarray:
        """Item ids in corpus order (the column order of the matrices)."""
        return self._item_ids

    @property
    def is_clickbait(self) -> np.ndarray:
        """Boolean clickbait flag per item, in corpus order."""
        return self.items["is_clickbait"].to_numpy(bool)

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

    def _click(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        logit = self._match[u, self._topic[i]]  # a new array: the gather copies
        logit *= self.config.match_click_weight
        logit += self._user_click_logit[u]
        logit += self._item_click_logit[i]
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

    def examination_prob(self, position: np.ndarray) -> np.ndarray:
        """Position effect: P(examined) = ``1 / (1 + position) ** position_decay`` (position 0 = top)."""
        pos = np.asarray(position, dtype=np.float64)
        return (1.0 + np.maximum(pos, 0.0)) ** -self.config.position_decay

    # -- files ----------------------------------------------------------------------------------------------

    def write(self, directory: str | Path) -> None:
        """Write ``items.parquet``, ``users.parquet`` and ``oracle.json`` (config, seed) into ``directory``.

        Each file is written atomically (:mod:`dmtl.io`).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_parquet(self.items, directory / "items.parquet")
        write_parquet(self.users, directory / "users.parquet")
        write_json({"config": self.config.to_dict(), "seed": self.seed}, directory / "oracle.json")

    @classmethod
    def read(cls, directory: str | Path) -> Oracle:
        """Read an oracle written by :meth:`write`."""
        directory = Path(directory)
        meta = read_json(directory / "oracle.json")
        return cls(
            items=pd.read_parquet(directory / "items.parquet"),
            users=pd.read_parquet(directory / "users.parquet"),
            config=SimConfig.from_dict(meta["config"]),
            seed=meta.get("seed"),
        )


def affinity_columns(n_topics: int) -> list[str]:
    """Names of the oracle's per-topic affinity columns: ``affinity_00`` ... (zero-padded)."""
    width = max(2, len(str(n_topics - 1)))
    return [f"affinity_{t:0{width}d}" for t in range(n_topics)]


def topic_match(theta: np.ndarray, match_floor: float) -> np.ndarray:
    """``log(n_topics * theta + match_floor)``: 0 near an average topic, positive for a favourite one."""
    return np.log(theta.shape[-1] * theta + match_floor)


# ----------------------------------------------------------------------------------------------------------
# Simulation


@dataclass
class _World:
    users: pd.DataFrame  # observed
    items: pd.DataFrame  # observed
    oracle: Oracle
    activity: np.ndarray  # sessions-per-day multiplier per user
    popularity: np.ndarray  # policy popularity per item


def _draw_categorical(rng: np.random.Generator, probs: np.ndarray, size: int) -> np.ndarray:
    return rng.choice(len(probs), size=size, p=np.asarray(probs) / np.sum(probs))


def _draw_users(
    config: SimConfig, rng: np.random.Generator, topic_share: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    c, n, k = config, config.n_users, config.n_topics
    codes = {name: _draw_categorical(rng, np.array(p), n) for name, (_, p) in USER_FEATURES.items()}
    z_activity = rng.standard_normal(n)
    codes["activity_level"] = np.searchsorted(_ACTIVITY_Z_EDGES, z_activity)
    # Segment mean: each observed feature value shifts topic logits (issue: observed features must carry
    # signal about the latent affinities); demand follows supply on average through log(topic_share).
    logits = np.broadcast_to(np.log(topic_share), (n, k)).copy()
    for name, weight in _FEATURE_TOPIC_WEIGHT.items():
        n_values = len(USER_FEATURES[name][0]) if name in USER_FEATURES else len(ACTIVITY_LEVELS)
        effect = rng.normal(0.0, c.segment_topic_sd * weight, size=(n_values, k))
        logits += effect[codes[name]]
    segment_mean = special.softmax(logits, axis=1)
    # Dirichlet via normalised gammas; a row can underflow to all zeros for tiny concentrations, then the
    # user simply gets the segment mean.
    gam = rng.standard_gamma(c.user_topic_concentration * segment_mean)
    total = gam.sum(axis=1, keepdims=True)
    theta = np.where(total > 0, gam / np.where(total > 0, total, 1.0), segment_mean)
    age_centre = (len(USER_FEATURES["age_band"][0]) - 1) / 2
    log_speed = c.speed_age_effect * (codes["age_band"] - age_centre) + rng.normal(
        0.0, c.reading_speed_sigma, n
    )
    click_bias = rng.normal(0.0, c.user_click_sd, n)
    activity = np.exp(c.activity_sigma * z_activity - c.activity_sigma**2 / 2)  # mean 1

    user_ids = np.arange(n, dtype=np.int64)
    observed = {"user_id": user_ids}
    for name, (values, _) in USER_FEATURES.items():
        observed[name] = np.asarray(values, dtype=object)[codes[name]]
    observed["activity_level"] = np.asarray(ACTIVITY_LEVELS, dtype=object)[codes["activity_level"]]
    latent = {
        "user_id": user_ids,
        "reading_speed": np.exp(log_speed),
        "click_bias": click_bias,
        "activity": activity,
    }
    latent.update(dict(zip(affinity_columns(k), theta.T, strict=True)))
    return pd.DataFrame(observed), pd.DataFrame(latent)


def _draw_items(
    config: SimConfig, rng: np.random.Generator, topic_share: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    c, n, k = config, config.n_items, config.n_topics
    topic = _draw_categorical(rng, topic_share, n)
    # Publishers: publisher p's home topic is p % n_topics, so those of topic t are t, t + k, t + 2k, ...
    n_home = np.maximum((c.n_publishers - np.arange(k) + k - 1) // k, 0)
    loyal = (rng.random(n) < _PUBLISHER_TOPIC_LOYALTY) & (n_home[topic] > 0)
    home_pick = topic + k * np.floor(rng.random(n) * n_home[topic]).astype(np.int64)
    publisher = np.where(loyal, home_pick, rng.integers(0, c.n_publishers, n))
    publisher_quality = rng.normal(0.0, c.publisher_quality_sd, c.n_publishers)

    is_bait = rng.random(n) < c.clickbait_share
    quality = np.where(
        is_bait,
        c.bait_quality + _BAIT_SPREAD * rng.standard_normal(n),
        publisher_quality[publisher] + rng.standard_normal(n),
    )
    attractiveness = np.where(
        is_bait, c.bait_attractiveness + _BAIT_SPREAD * rng.standard_normal(n), rng.standard_normal(n)
    )
    topic_length = rng.normal(0.0, c.topic_length_sd, k)
    length_s = np.clip(
        c.length_median_s * np.exp(topic_length[topic] + c.length_sigma * rng.standard_normal(n)),
        *_LENGTH_CLIP_S,
    )
    # Title style: clickbait leans to "baity" styles by title_style_signal, but ordinary items use them too,
    # so the feature only weakly separates clickbait (issue text).
    bait_style = (1.0 - c.title_style_signal) * _TITLE_STYLE_BASE + c.title_style_signal * _TITLE_STYLE_BAIT
    style_cdf = np.cumsum(np.where(is_bait[:, None], bait_style, _TITLE_STYLE_BASE), axis=1)
    style = np.minimum((rng.random(n)[:, None] > style_cdf).sum(axis=1), len(TITLE_STYLES) - 1)
    popularity = np.exp(
        c.popularity_sigma * rng.standard_normal(n) + c.policy_attractiveness_weight * attractiveness
    )

    item_ids = np.arange(n, dtype=np.int64)
    width = len(str(max(k - 1, 1)))
    pub_width = len(str(max(c.n_publishers - 1, 1)))
    observed = pd.DataFrame(
        {
            "item_id": item_ids,
            "category": np.asarray([f"topic_{t:0{width}d}" for t in range(k)], dtype=object)[topic],
            "length_band": np.asarray(LENGTH_BANDS, dtype=object)[
                np.searchsorted(c.length_band_edges_s, length_s)
            ],
            "publisher": np.asarray([f"pub_{p:0{pub_width}d}" for p in range(c.n_publishers)], dtype=object)[
                publisher
            ],
            "title_style": np.asarray(TITLE_STYLES, dtype=object)[style],
        }
    )
    latent = pd.DataFrame(
        {
            "item_id": item_ids,
            "topic": topic.astype(np.int64),
            "publisher": publisher.astype(np.int64),
            "length_s": length_s,
            "quality": quality,
            "attractiveness": attractiveness,
            "is_clickbait": is_bait,
            "popularity": popularity,
        }
    )
    return observed, latent


def _draw_world(config: SimConfig, seed: int, rng: np.random.Generator) -> _World:
    """Users and items, observed and latent; ``seed`` is only recorded in the oracle."""
    topic_share = rng.dirichlet(np.full(config.n_topics, config.topic_supply_concentration))
    users_obs, users_latent = _draw_users(config, rng, topic_share)
    items_obs, items_latent = _draw_items(config, rng, topic_share)
    oracle = Oracle(items_latent, users_latent, config, seed)
    return _World(
        users=users_obs,
        items=items_obs,
        oracle=oracle,
        activity=users_latent["activity"].to_numpy(),
        popularity=items_latent["popularity"].to_numpy(),
    )


def _flat_cdf_sample(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling of one column per entry of ``rows`` from a (n_rows, n_cols) CDF matrix.

    Row r's CDF is shifted by r and flattened, so a single ``searchsorted`` of ``r + u`` serves every row
    at once without materialising an (n_samples, n_cols) array (memory stays linear in the samples).
    """
    n_rows, n_cols = cdf.shape
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()
    col = np.searchsorted(flat, rows + u, side="right") - rows * n_cols
    return np.clip(col, 0, n_cols - 1)


def _draw_impressions(config: SimConfig, world: _World, rng: np.random.Generator) -> pd.DataFrame:
    c, oracle = config, world.oracle
    k, n_users = c.n_topics, c.n_users
    topic = oracle._topic
    theta = oracle.users[affinity_columns(k)].to_numpy(np.float64)

    # Sessions: Poisson per user-day, start uniform within the day; ordered by time.
    counts = rng.poisson(c.sessions_per_user_day * world.activity[:, None], size=(n_users, c.n_days)).ravel()
    user_day = np.repeat(np.arange(n_users * c.n_days), counts)
    s_user, s_day = user_day // c.n_days, user_day % c.n_days
    s_start = rng.integers(0, SECONDS_PER_DAY - c.feed_length * c.position_gap_s, len(user_day))
    s_time = s_day.astype(np.int64) * SECONDS_PER_DAY + s_start
    order = np.lexsort((s_user, s_time))
    s_user, s_day, s_time = s_user[order], s_day[order], s_time[order]
    n_sessions = len(s_user)

    # Logging policy (issue: popularity and topic match, not uniform). It factorises into
    # P(topic | user) * P(item | topic), so both draws are vectorised inverse-CDF lookups.
    topic_mass = np.bincount(topic, weights=world.popularity, minlength=k)
    relative = (k * theta + c.match_floor) ** c.policy_match_weight * topic_mass
    p_topic = (1.0 - c.policy_explore) * relative / relative.sum(axis=1, keepdims=True)
    p_topic += c.policy_explore * topic_mass / topic_mass.sum()
    topic_cdf = np.cumsum(p_topic, axis=1)
    topic_cdf /= topic_cdf[:, -1:]
    topic_cdf[:, -1] = 1.0

    by_topic = np.argsort(topic, kind="stable")
    sorted_topic = topic[by_topic]
    within = np.cumsum(world.popularity[by_topic])
    topic_end = np.cumsum(np.bincount(topic, minlength=k))
    before = np.concatenate(([0.0], within[topic_end[:-1] - 1]))  # popularity mass of earlier topics
    within = (within - before[sorted_topic]) / topic_mass[sorted_topic]
    within[topic_end[topic_end > 0] - 1] = 1.0
    item_flat = sorted_topic + within

    imp_session = np.repeat(np.arange(n_sessions), c.feed_length)
    imp_user = s_user[imp_session]

    def draw_items(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = _flat_cdf_sample(topic_cdf, rows, rng.random(len(rows)))
        j = np.searchsorted(item_flat, t + rng.random(len(rows)), side="right")
        return t, by_topic[np.minimum(j, topic_end[t] - 1)]

    imp_topic, imp_item = draw_items(imp_user)
    keep = np.ones(len(imp_user), dtype=bool)
    if c.unique_user_item:
        # A feed does not show an item twice to one user: a slot whose (user, item) pair appeared earlier
        # (rows are in time order) is redrawn a few times, then dropped if still a repeat.
        for attempt in range(_REDRAWS + 1):
            _, first = np.unique(imp_user.astype(np.int64) * c.n_items + imp_item, return_index=True)
            keep[:] = False
            keep[first] = True
            repeat = np.flatnonzero(~keep)
            if attempt == _REDRAWS or len(repeat) == 0:
                break
            imp_topic[repeat], imp_item[repeat] = draw_items(imp_user[repeat])
    imp_session, imp_user, imp_topic, imp_item = (
        imp_session[keep],
        imp_user[keep],
        imp_topic[keep],
        imp_item[keep],
    )
    # The feed is ranked by the policy's own probability of each item for this user.
    score = np.log(p_topic[imp_user, imp_topic]) + np.log(world.popularity[imp_item] / topic_mass[imp_topic])
    order = np.lexsort((-score, imp_session))
    imp_session, imp_user, imp_item = imp_session[order], imp_user[order], imp_item[order]
    n = len(imp_user)
    new_session = np.ones(n, dtype=bool)
    new_session[1:] = imp_session[1:] != imp_session[:-1]
    session_first = np.maximum.accumulate(np.where(new_session, np.arange(n), 0))
    position = np.arange(n) - session_first
    time = s_time[imp_session] + position * c.position_gap_s

    # Clicks (module docstring, "Click").
    p_click = oracle.examination_prob(position) * oracle._click(imp_user, imp_item)
    click = rng.random(n) < p_click

    # Durations for clicked impressions only (module docstring, "Reading duration").
    cu, ci = imp_user[click], imp_item[click]
    p_bounce, frac_mean, full_s = oracle._reading(cu, ci)
    bounce = rng.random(len(cu)) < p_bounce
    bounce_s = c.bounce_median_s * np.exp(c.bounce_sigma * rng.standard_normal(len(cu)))
    kappa = c.read_fraction_concentration
    fraction = rng.beta(kappa * frac_mean, kappa * (1.0 - frac_mean))
    duration = np.zeros(n, dtype=np.float32)
    duration[click] = np.where(bounce, bounce_s, full_s * fraction)

    final = np.argsort(time, kind="stable")
    return coerce_impressions(
        pd.DataFrame(
            {
                "user_id": oracle._user_ids[imp_user[final]],
                "item_id": oracle._item_ids[imp_item[final]],
                "day": s_day[imp_session[final]],
                "time": time[final],
                "position": position[final],
                "click": click[final],
                "duration": duration[final],
            }
        )
    )


def simulate(config: SimConfig, seed: int) -> tuple[FeedLog, Oracle]:
    """Simulate a feed log and its ground truth.

    The same ``(config, seed)`` gives identical outputs (numpy ``Generator(PCG64(seed))``, one stream
    consumed in a fixed order); different seeds give different worlds and logs.

    Args:
        config: The world's knobs (see :func:`make_config`).
        seed: Non-negative integer seed.

    Returns:
        ``(log, oracle)``: the log in the generic schema (:mod:`dmtl.schema`; latents never appear in it)
        and the :class:`Oracle` with the latents and formulas.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    world = _draw_world(config, int(seed), rng)
    impressions = _draw_impressions(config, world, rng)
    log = FeedLog(
        impressions=impressions,
        users=world.users,
        items=world.items,
        source="simulated",
        meta={"seed": int(seed), "config": config.to_dict()},
    )
    return log, world.oracle


def write_simulation(log: FeedLog, oracle: Oracle, directory: str | Path) -> None:
    """Write the log (``FeedLog.write``), ``simulation.json`` and the oracle (in ``directory/oracle``).

    The whole directory is built next to ``directory`` and renamed into place, so a reader never sees a log
    without its oracle or a half-written world.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        log.write(tmp)
        oracle.write(tmp / "oracle")
        write_json({"source": log.source, **log.meta}, tmp / "simulation.json")
        if directory.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
            os.replace(directory, trash / directory.name)
            os.replace(tmp, directory)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_simulation(directory: str | Path) -> tuple[FeedLog, Oracle]:
    """Read what :func:`write_simulation` wrote."""
    directory = Path(directory)
    log = FeedLog.read(directory, source="simulated")
    meta_path = directory / "simulation.json"
    if meta_path.exists():
        log.meta = {k: v for k, v in read_json(meta_path).items() if k != "source"}
    return log, Oracle.read(directory / "oracle")


# ----------------------------------------------------------------------------------------------------------
# Calibration

CALIBRATION_TARGETS: dict[str, tuple[float | None, float | None]] = {
    # (min, max), None = unbounded. Feed-like marginals (docs/protocol.md section 5, issue text).
    "ctr": (0.05, 0.15),
    "mean_clicked_duration": (40.0, 60.0),
    "share_clicks_above_mean": (0.25, 0.45),
    # Clickbait must be clicked a lot and read briefly, or the study has nothing to find.
    "bait_ctr_ratio": (1.5, None),
    "bait_long_read_ratio": (None, 0.5),
}


def calibration(log: FeedLog, oracle: Oracle) -> dict[str, Any]:
    """Feed marginals of a simulated log, checked against :data:`CALIBRATION_TARGETS`.

    A long read is a click with duration above the mean clicked duration (the paper's tau rule, docs/protocol.md
    section 1). Rates are per impression (CTR) or per click (long-read rate).

    Returns:
        Numbers: ``n_impressions, n_clicks, ctr, mean_clicked_duration, share_clicks_above_mean,
        bait_item_share, bait_impression_share, bait_click_share, bait_ctr, rest_ctr, bait_ctr_ratio,
        bait_long_read_rate, rest_long_read_rate, bait_long_read_ratio, position_ctr`` (list, CTR per
        position) and ``checks``: ``{target name: bool}``.
    """
    imp = log.impressions
    click = imp["click"].to_numpy() == 1
    duration = imp["duration"].to_numpy().astype(np.float64)
    bait = oracle.is_clickbait[oracle.item_index(imp["item_id"].to_numpy())]
    clicked_dur = duration[click]
    mean_dur = float(clicked_dur.mean()) if click.any() else float("nan")
    long_read = click & (duration > mean_dur)

    def rate(num: np.ndarray, den: np.ndarray) -> float:
        d = int(den.sum())
        return float((num & den).sum() / d) if d else float("nan")

    bait_ctr, rest_ctr = rate(click, bait), rate(click, ~bait)
    bait_lr, rest_lr = rate(long_read, click & bait), rate(long_read, click & ~bait)
    pos = imp["position"].to_numpy().astype(np.int64)
    valid = pos >= 0
    n_pos = int(pos[valid].max()) + 1 if valid.any() else 0
    shown = np.bincount(pos[valid], minlength=n_pos)
    clicks_at = np.bincount(pos[valid], weights=click[valid], minlength=n_pos)
    out: dict[str, Any] = {
        "n_impressions": len(imp),
        "n_clicks": int(click.sum()),
        "ctr": float(click.mean()) if len(imp) else float("nan"),
        "mean_clicked_duration": mean_dur,
        "share_clicks_above_mean": float((clicked_dur > mean_dur).mean()) if click.any() else float("nan"),
        "bait_item_share": float(oracle.is_clickbait.mean()),
        "bait_impression_share": float(bait.mean()) if len(imp) else float("nan"),
        "bait_click_share": float(bait[click].mean()) if click.any() else float("nan"),
        "bait_ctr": bait_ctr,
        "rest_ctr": rest_ctr,
        "bait_ctr_ratio": bait_ctr / rest_ctr if rest_ctr > 0 else float("nan"),
        "bait_long_read_rate": bait_lr,
        "rest_long_read_rate": rest_lr,
        "bait_long_read_ratio": bait_lr / rest_lr if rest_lr > 0 else float("nan"),
        "position_ctr": (clicks_at / np.maximum(shown, 1)).tolist(),
    }
    checks = {}
    for name, (lo, hi) in CALIBRATION_TARGETS.items():
        v = out[name]
        checks[name] = bool(math.isfinite(v) and (lo is None or v >= lo) and (hi is None or v <= hi))
    out["checks"] = checks
    return out
