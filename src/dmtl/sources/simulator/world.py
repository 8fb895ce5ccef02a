"""Drawing a simulated world: users, items, and the feed log a logging policy shows them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from dmtl.schema import FeedLog, coerce_impressions
from dmtl.sources.simulator.config import LENGTH_BANDS, SECONDS_PER_DAY, SimConfig
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
_REDRAWS = 3  # attempts to replace an item the user was already shown before dropping the slot


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
