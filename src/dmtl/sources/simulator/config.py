"""The simulated world's knobs (:class:`SimConfig`), their validation and the size presets."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

SECONDS_PER_DAY = 86_400
LENGTH_BANDS: tuple[str, ...] = ("short", "medium", "long", "very_long")


@dataclass(frozen=True)
class SimConfig:
    """Every knob of the simulated feed; the defaults give feed-like data (see :data:`CALIBRATION_TARGETS`).

    Attributes:
        n_users: Number of users.
        n_items: Number of items in the corpus (all available on every day unless ``cold_item_share`` > 0).
            Data-density knob: impressions per item ~ ``n_users * impressions per user / n_items`` (figure
            ``impressions_per_item``); changes the corpus retrieval searches, so prefer
            ``sessions_per_user_day`` for a density sweep.
        n_days: Days of log; ``day`` runs 0..n_days-1 and the study splits train/validation/test by day.
        n_topics: Number of topics; the item's topic is its observed ``category``.
        n_publishers: Number of publishers (observed item feature); each has a home topic.
        sessions_per_user_day: Mean number of feed sessions per user and day (before activity scaling).
            The data-density knob: impressions per user and per item scale with it (figures
            ``impressions_per_user``, ``impressions_per_item``, ``long_reads_per_item``) while the world (users,
            items, latents) stays the same.
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
        bounce_bias: Intercept of the bounce logit (bounce = leave within seconds). The long-read-rate knob:
            raising it turns more clicks into bounces, so the share of clicks that are long reads falls (figures
            ``bounce_share``, ``share_clicks_above_mean``, ``share_clicks_above_50s``); impressions and clicks
            stay identical, the mean clicked duration (the paper's tau) falls with it.
        quality_read_effect: Effect of quality on reading: lowers the bounce logit and raises the read
            fraction logit (the lever that makes clickbait short reads).
        match_read_effect: Effect of topic match on reading, in the same two places.
        read_fraction_bias: Intercept of the logit of the mean read fraction of non-bounced reads.
        read_fraction_concentration: Concentration ``a + b`` of the Beta read fraction (larger = less spread).
        bounce_median_s: Median seconds of a bounce.
        bounce_sigma: SD of log bounce seconds.
        cold_item_share: Share of items (drawn at random) first available on day ``n_days - cold_item_days``:
            the logging policy never shows them before, so with ``cold_item_days = data.test_days`` they are
            new items of the test period (out-of-vocabulary ids; models see them only through their features).
            0 = every item available every day (figures ``cold_test_impression_share``,
            ``cold_test_long_read_share``).
        cold_item_days: The last days of the log in which cold items are available; match ``data.test_days``.
        fan_strength: Strength of the latent user x publisher "fan" affinity: a user's fan publishers get
            ``+fan_strength`` on the click logit and ``fan_strength / 2`` more read (lower bounce logit, higher
            read-fraction logit). The towers cannot represent this sparse, high-rank cross term; the teacher can
            see it through ``ctx_publisher_clicks`` (``log_publisher_clicks``). 0 = absent (figures
            ``fan_impression_share``, ``fan_click_share``, ``fan_info_share``, ``history_ctr_ratio``).
        fan_publishers: Fan publishers drawn per user (with replacement: a topic by the user's affinities, then
            one of its home publishers), so fans are where the user reads but not predictable from topics alone.
        log_publisher_clicks: Add the impression context column ``ctx_publisher_clicks``: the user's clicks on
            the item's publisher at strictly earlier times (a causal, legitimately logged cross feature).
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
    cold_item_share: float = 0.0
    cold_item_days: int = 2
    fan_strength: float = 0.0
    fan_publishers: int = 3
    log_publisher_clicks: bool = False

    def __post_init__(self) -> None:
        _validate_config(self)

    @property
    def release_day(self) -> int:
        """First day on which cold items are available (``n_days - cold_item_days``)."""
        return self.n_days - self.cold_item_days

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


_PROBABILITY_FIELDS = ("clickbait_share", "title_style_signal", "policy_explore", "cold_item_share")
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
    "fan_strength",
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
    if not cfg.cold_item_share < 1.0:
        raise ValueError(
            f"SimConfig.cold_item_share must be below 1 (some items must exist before the cold days), "
            f"got {cfg.cold_item_share!r}"
        )
    if cfg.cold_item_share > 0 and not cfg.cold_item_days < cfg.n_days:
        raise ValueError(
            f"SimConfig.cold_item_days must be below n_days={cfg.n_days} (cold items need earlier days "
            f"without them), got {cfg.cold_item_days!r}"
        )


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
    # The study's default run (params.yaml): ~160k impressions, sized so the whole study (5 seeds of every
    # model trained to convergence, the regime map, the ablations) fits the 10-minute budget on 2 cores.
    "small": SimConfig(n_users=4_000, n_items=1_500, n_days=10, n_publishers=150),
    # The simulator's standard world: ~600k impressions (benchmarks, calibration).
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
