"""Drawing a simulated world's population: users and items (observed features and latents), cold items and
fans, and the oracle over them (the package docstring describes the model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from dmtl.sources.simulator.config import LENGTH_BANDS, SimConfig
from dmtl.sources.simulator.oracle import Oracle, affinity_columns

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

_PUBLISHER_TOPIC_LOYALTY = 0.9  # share of an item's publishers drawn among those whose home is its topic

_BAIT_SPREAD = 0.5  # sd of clickbait attractiveness and quality around their means (ordinary items: 1)

_LENGTH_CLIP_S = (10.0, 1800.0)


# Independent random streams for the knobs added after the main stream's order was fixed (issue 15): drawing
# them apart keeps the default world byte-identical and keeps everything else fixed when only such a knob
# moves (cold items are nested as cold_item_share grows; the fans do not move with fan_strength).
_STREAM_COLD, _STREAM_FANS = 1, 2


def _substream(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, stream]))


@dataclass
class World:
    """A drawn world: its observed users and items, the oracle, and what the logging policy draws from."""

    users: pd.DataFrame  # observed
    items: pd.DataFrame  # observed
    oracle: Oracle
    activity: np.ndarray  # sessions-per-day multiplier per user
    popularity: np.ndarray  # policy popularity per item
    release_day: np.ndarray  # first day each item is available


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


def _home_publishers(n_publishers: int, n_topics: int) -> np.ndarray:
    """Publishers per home topic: publisher p's home topic is p % n_topics, so topic t's are t, t + k, ..."""
    return np.maximum((n_publishers - np.arange(n_topics) + n_topics - 1) // n_topics, 0)


def _draw_items(
    config: SimConfig, rng: np.random.Generator, topic_share: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    c, n, k = config, config.n_items, config.n_topics
    topic = _draw_categorical(rng, topic_share, n)
    n_home = _home_publishers(c.n_publishers, k)
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


def _draw_release_day(config: SimConfig, seed: int) -> np.ndarray:
    """Day each item becomes available: ``config.release_day`` for a random ``cold_item_share``, else 0."""
    u = _substream(seed, _STREAM_COLD).random(config.n_items)
    return np.where(u < config.cold_item_share, config.release_day, 0).astype(np.int64)


def _draw_fans(config: SimConfig, seed: int, theta: np.ndarray) -> pd.DataFrame:
    """Each user's fan publishers: a topic drawn by the user's affinities, then one of its home publishers.

    Fans sit where the user reads (so they are seen), but which publishers of a topic is random per user: a
    sparse, high-rank user x publisher matrix that user and item embeddings cannot represent in low rank.
    """
    c, rng = config, _substream(seed, _STREAM_FANS)
    rows = np.repeat(np.arange(c.n_users), c.fan_publishers)
    cdf = np.cumsum(theta, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    topic = flat_cdf_sample(cdf, rows, rng.random(len(rows)))
    n_home = _home_publishers(c.n_publishers, c.n_topics)[topic]
    home = topic + c.n_topics * np.floor(rng.random(len(rows)) * n_home).astype(np.int64)
    publisher = np.where(n_home > 0, home, rng.integers(0, c.n_publishers, len(rows)))
    pairs = np.unique(rows * c.n_publishers + publisher)
    return pd.DataFrame({"user_id": pairs // c.n_publishers, "publisher": pairs % c.n_publishers})


def draw_world(config: SimConfig, seed: int, rng: np.random.Generator) -> World:
    """Users and items, observed and latent; ``seed`` is recorded in the oracle and seeds the knob streams."""
    topic_share = rng.dirichlet(np.full(config.n_topics, config.topic_supply_concentration))
    users_obs, users_latent = _draw_users(config, rng, topic_share)
    items_obs, items_latent = _draw_items(config, rng, topic_share)
    release_day = _draw_release_day(config, seed)
    items_latent["release_day"] = release_day
    theta = users_latent[affinity_columns(config.n_topics)].to_numpy(np.float64)
    fans = _draw_fans(config, seed, theta)  # user rows are user ids (0..n_users-1)
    oracle = Oracle(items_latent, users_latent, config, seed, fans=fans)
    return World(
        users=users_obs,
        items=items_obs,
        oracle=oracle,
        activity=users_latent["activity"].to_numpy(),
        popularity=items_latent["popularity"].to_numpy(),
        release_day=release_day,
    )


def flat_cdf_sample(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling of one column per entry of ``rows`` from a (n_rows, n_cols) CDF matrix.

    Row r's CDF is shifted by r and flattened, so a single ``searchsorted`` of ``r + u`` serves every row
    at once without materialising an (n_samples, n_cols) array (memory stays linear in the samples).
    """
    n_rows, n_cols = cdf.shape
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()
    col = np.searchsorted(flat, rows + u, side="right") - rows * n_cols
    return np.clip(col, 0, n_cols - 1)
