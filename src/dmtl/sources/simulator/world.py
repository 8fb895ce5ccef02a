"""Drawing a simulated world: users, items, and the feed log a logging policy shows them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

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


# Independent random streams for the knobs added after the main stream's order was fixed (issue 15): drawing
# them apart keeps the default world byte-identical and keeps everything else fixed when only such a knob
# moves (cold items are nested as cold_item_share grows; the fans do not move with fan_strength).
_STREAM_COLD, _STREAM_FANS = 1, 2
# The chunked log (:func:`simulate_in_chunks`): chunk c of users draws from PCG64([seed, 3, c]).
_STREAM_CHUNKS = 3


def _substream(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, stream]))


@dataclass
class _World:
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
    topic = _flat_cdf_sample(cdf, rows, rng.random(len(rows)))
    n_home = _home_publishers(c.n_publishers, c.n_topics)[topic]
    home = topic + c.n_topics * np.floor(rng.random(len(rows)) * n_home).astype(np.int64)
    publisher = np.where(n_home > 0, home, rng.integers(0, c.n_publishers, len(rows)))
    pairs = np.unique(rows * c.n_publishers + publisher)
    return pd.DataFrame({"user_id": pairs // c.n_publishers, "publisher": pairs % c.n_publishers})


def _draw_world(config: SimConfig, seed: int, rng: np.random.Generator) -> _World:
    """Users and items, observed and latent; ``seed`` is recorded in the oracle and seeds the knob streams."""
    topic_share = rng.dirichlet(np.full(config.n_topics, config.topic_supply_concentration))
    users_obs, users_latent = _draw_users(config, rng, topic_share)
    items_obs, items_latent = _draw_items(config, rng, topic_share)
    release_day = _draw_release_day(config, seed)
    items_latent["release_day"] = release_day
    theta = users_latent[affinity_columns(config.n_topics)].to_numpy(np.float64)
    fans = _draw_fans(config, seed, theta)  # user rows are user ids (0..n_users-1)
    oracle = Oracle(items_latent, users_latent, config, seed, fans=fans)
    return _World(
        users=users_obs,
        items=items_obs,
        oracle=oracle,
        activity=users_latent["activity"].to_numpy(),
        popularity=items_latent["popularity"].to_numpy(),
        release_day=release_day,
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


@dataclass
class _Policy:
    """The logging policy over the items available in one period: ``P(topic | user) * P(item | topic)``.

    It factorises, so both draws are vectorised inverse-CDF lookups (issue: popularity and topic match,
    not uniform).
    """

    p_topic: np.ndarray  # (n_users, n_topics)
    topic_cdf: np.ndarray  # (n_users, n_topics)
    topic_mass: np.ndarray  # popularity mass of the available items per topic
    by_topic: np.ndarray  # available item indices, sorted by topic
    item_flat: np.ndarray  # topic + within-topic popularity CDF, aligned with by_topic
    topic_end: np.ndarray  # end of each topic's run in by_topic

    def draw(self, users: np.ndarray, u_topic: np.ndarray, u_item: np.ndarray) -> tuple[np.ndarray, ...]:
        """Topic and item for each slot of ``users`` from the uniforms ``u_topic``, ``u_item``."""
        t = _flat_cdf_sample(self.topic_cdf, users, u_topic)
        j = np.searchsorted(self.item_flat, t + u_item, side="right")
        return t, self.by_topic[np.minimum(j, self.topic_end[t] - 1)]

    def log_prob(
        self, users: np.ndarray, topic: np.ndarray, item: np.ndarray, popularity: np.ndarray
    ) -> np.ndarray:
        """Log of the policy's probability of each shown item: the feed's ranking score."""
        return np.log(self.p_topic[users, topic]) + np.log(popularity[item] / self.topic_mass[topic])


def _policy(
    config: SimConfig,
    theta: np.ndarray,
    topic: np.ndarray,
    popularity: np.ndarray,
    available: np.ndarray | None = None,
) -> _Policy:
    """The :class:`_Policy` over the items where ``available`` is true (None = every item)."""
    c, k = config, config.n_topics
    items = np.arange(len(topic)) if available is None else np.flatnonzero(available)
    t_av, pop_av = topic[items], popularity[items]
    topic_mass = np.bincount(t_av, weights=pop_av, minlength=k)
    relative = (k * theta + c.match_floor) ** c.policy_match_weight * topic_mass
    p_topic = (1.0 - c.policy_explore) * relative / relative.sum(axis=1, keepdims=True)
    p_topic += c.policy_explore * topic_mass / topic_mass.sum()
    topic_cdf = np.cumsum(p_topic, axis=1)
    topic_cdf /= topic_cdf[:, -1:]
    topic_cdf[:, -1] = 1.0

    order = np.argsort(t_av, kind="stable")
    sorted_topic = t_av[order]
    within = np.cumsum(pop_av[order])
    counts = np.bincount(t_av, minlength=k)
    topic_end = np.cumsum(counts)
    before = np.concatenate(([0.0], within))[topic_end - counts]  # popularity mass of earlier topics
    within = (within - before[sorted_topic]) / topic_mass[sorted_topic]
    within[topic_end[counts > 0] - 1] = 1.0
    return _Policy(p_topic, topic_cdf, topic_mass, items[order], sorted_topic + within, topic_end)


def _draw_sessions(
    config: SimConfig, activity: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """Sessions ``(user, day, start time)``: Poisson per user-day, start uniform in the day, in time order.

    ``activity`` holds the users whose sessions are drawn (every user, or one chunk of them); the returned
    users are rows of it.
    """
    c, n_users = config, len(activity)
    counts = rng.poisson(c.sessions_per_user_day * activity[:, None], size=(n_users, c.n_days)).ravel()
    user_day = np.repeat(np.arange(n_users * c.n_days), counts)
    s_user, s_day = user_day // c.n_days, user_day % c.n_days
    s_start = rng.integers(0, SECONDS_PER_DAY - c.feed_length * c.position_gap_s, len(user_day))
    s_time = s_day.astype(np.int64) * SECONDS_PER_DAY + s_start
    order = np.lexsort((s_user, s_time))
    return s_user[order], s_day[order], s_time[order]


def _draw_slots(
    policies: list[_Policy], period: np.ndarray, users: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Topic and item of each slot, from the policy of the slot's period (same uniforms whatever the period)."""
    u_topic, u_item = rng.random(len(users)), rng.random(len(users))
    if len(policies) == 1:
        return policies[0].draw(users, u_topic, u_item)
    topic, item = np.empty(len(users), np.int64), np.empty(len(users), np.int64)
    for p, policy in enumerate(policies):
        m = period == p
        topic[m], item[m] = policy.draw(users[m], u_topic[m], u_item[m])
    return topic, item


def _fill_feed(
    config: SimConfig,
    policies: list[_Policy],
    period: np.ndarray,
    users: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Topic and item per slot, and which slots are kept.

    A feed does not show an item twice to one user (``unique_user_item``): a slot whose (user, item) pair
    appeared earlier (rows are in time order) is redrawn a few times, then dropped if still a repeat.
    """
    topic, item = _draw_slots(policies, period, users, rng)
    keep = np.ones(len(users), dtype=bool)
    if config.unique_user_item:
        for attempt in range(_REDRAWS + 1):
            _, first = np.unique(users.astype(np.int64) * config.n_items + item, return_index=True)
            keep[:] = False
            keep[first] = True
            repeat = np.flatnonzero(~keep)
            if attempt == _REDRAWS or len(repeat) == 0:
                break
            topic[repeat], item[repeat] = _draw_slots(policies, period[repeat], users[repeat], rng)
    return topic, item, keep


def _draw_outcomes(
    config: SimConfig,
    oracle: Oracle,
    user: np.ndarray,
    item: np.ndarray,
    position: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Click and duration per impression (module docstring, "Click" and "Reading duration")."""
    c, n = config, len(user)
    p_click = oracle.examination_prob(position) * oracle._click(user, item)
    click = rng.random(n) < p_click
    # Durations for clicked impressions only.
    cu, ci = user[click], item[click]
    p_bounce, frac_mean, full_s = oracle._reading(cu, ci)
    bounce = rng.random(len(cu)) < p_bounce
    bounce_s = c.bounce_median_s * np.exp(c.bounce_sigma * rng.standard_normal(len(cu)))
    kappa = c.read_fraction_concentration
    fraction = rng.beta(kappa * frac_mean, kappa * (1.0 - frac_mean))
    duration = np.zeros(n, dtype=np.float32)
    duration[click] = np.where(bounce, bounce_s, full_s * fraction)
    return click, duration


def publisher_click_history(
    user: np.ndarray, publisher: np.ndarray, time: np.ndarray, click: np.ndarray
) -> np.ndarray:
    """Per impression, the user's clicks on the same publisher at strictly earlier times (causal; vectorised).

    Impressions of one (user, publisher) at the same time do not see each other's clicks.
    """
    publisher = np.asarray(publisher, np.int64)
    key = np.asarray(user, np.int64) * (int(publisher.max(initial=0)) + 1) + publisher
    time = np.asarray(time, np.int64)
    order = np.lexsort((time, key))
    k, t = key[order], time[order]
    c = np.asarray(click, np.int64)[order]
    before = np.cumsum(c) - c  # clicks on earlier rows of the sorted log
    idx = np.arange(len(k))
    new_key = np.ones(len(k), bool)
    new_key[1:] = k[1:] != k[:-1]
    new_time = new_key.copy()
    new_time[1:] |= t[1:] != t[:-1]
    key_first = np.maximum.accumulate(np.where(new_key, idx, 0))
    time_first = np.maximum.accumulate(np.where(new_time, idx, 0))
    out = np.empty(len(k), np.int64)
    out[order] = before[time_first] - before[key_first]
    return out


def _draw_impressions(
    config: SimConfig, world: _World, rng: np.random.Generator, users: slice | None = None
) -> pd.DataFrame:
    """Sessions, the feed the policy fills and ranks, clicks and durations: the log (module docstring).

    ``users`` (a slice of user rows) draws the log of those users only (:func:`simulate_in_chunks`): every
    draw is per user, so a chunk of users needs nothing from the others; ``None`` draws every user's.
    """
    c, oracle = config, world.oracle
    rows = slice(None) if users is None else users
    first = 0 if users is None else int(users.start or 0)
    theta = oracle.users[affinity_columns(c.n_topics)].iloc[rows].to_numpy(np.float64)
    s_user, s_day, s_time = _draw_sessions(c, world.activity[rows], rng)
    if c.cold_item_share > 0:  # period 0 before the cold items' release day, period 1 from it
        warm = world.release_day < c.release_day
        policies = [_policy(c, theta, oracle._topic, world.popularity, warm)]
        policies.append(_policy(c, theta, oracle._topic, world.popularity))
        s_period = (s_day >= c.release_day).astype(np.int64)
    else:
        policies = [_policy(c, theta, oracle._topic, world.popularity)]
        s_period = np.zeros(len(s_user), np.int64)

    imp_session = np.repeat(np.arange(len(s_user)), c.feed_length)
    topic, item, keep = _fill_feed(c, policies, s_period[imp_session], s_user[imp_session], rng)
    imp_session, topic, item = imp_session[keep], topic[keep], item[keep]
    user, period = s_user[imp_session], s_period[imp_session]
    # The feed is ranked by the policy's own probability of each item for this user.
    if len(policies) == 1:
        score = policies[0].log_prob(user, topic, item, world.popularity)
    else:
        score = np.empty(len(user))
        for p, policy in enumerate(policies):
            m = period == p
            score[m] = policy.log_prob(user[m], topic[m], item[m], world.popularity)
    order = np.lexsort((-score, imp_session))
    imp_session, user, item = imp_session[order], user[order], item[order]
    n = len(user)
    new_session = np.ones(n, dtype=bool)
    new_session[1:] = imp_session[1:] != imp_session[:-1]
    position = np.arange(n) - np.maximum.accumulate(np.where(new_session, np.arange(n), 0))
    time = s_time[imp_session] + position * c.position_gap_s
    user = user + first  # rows of the chunk -> rows of the whole user table (the oracle's)
    click, duration = _draw_outcomes(c, oracle, user, item, position, rng)

    final = np.argsort(time, kind="stable")
    columns = {
        "user_id": oracle._user_ids[user[final]],
        "item_id": oracle._item_ids[item[final]],
        "day": s_day[imp_session[final]],
        "time": time[final],
        "position": position[final],
        "click": click[final],
        "duration": duration[final],
    }
    if c.log_publisher_clicks:
        publisher = oracle.items["publisher"].to_numpy(np.int64)[item[final]]
        columns["ctx_publisher_clicks"] = publisher_click_history(
            columns["user_id"], publisher, columns["time"], columns["click"]
        )
    return coerce_impressions(pd.DataFrame(columns))


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


@dataclass
class ChunkedSimulation:
    """A simulated world whose log is drawn one chunk of users at a time (:func:`simulate_in_chunks`).

    ``users``, ``items`` and ``oracle`` are those of :func:`simulate` with the same ``(config, seed)``: the
    world is drawn from the same stream in the same order. The log is not: chunk ``c`` (users
    ``c * users_per_chunk`` onwards) draws its sessions, feeds, clicks and durations from its own stream
    ``PCG64([seed, 3, c])``, so a chunk can be drawn without the others (memory bounded by one chunk) and the
    same ``(config, seed, users_per_chunk)`` gives the same chunks. The log of the chunks, concatenated, is
    a different draw from the same model as :func:`simulate`'s (same distribution, not the same rows).
    """

    users: pd.DataFrame
    items: pd.DataFrame
    oracle: Oracle
    users_per_chunk: int
    meta: dict = field(default_factory=dict)
    _world: _World | None = None

    @property
    def n_chunks(self) -> int:
        return -(-len(self.users) // self.users_per_chunk)

    def chunk(self, index: int) -> pd.DataFrame:
        """The impressions of chunk ``index`` (schema columns, in time order): its users' whole log."""
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk {index} of {self.n_chunks}")
        config, seed = self.oracle.config, self.meta["seed"]
        rng = np.random.Generator(np.random.PCG64([seed, _STREAM_CHUNKS, index]))
        rows = slice(index * self.users_per_chunk, min((index + 1) * self.users_per_chunk, len(self.users)))
        return _draw_impressions(config, self._world, rng, rows)

    def chunks(self) -> Iterator[pd.DataFrame]:
        """Every chunk in order; each is drawn when asked for, so only one is in memory at a time."""
        for index in range(self.n_chunks):
            yield self.chunk(index)


def users_per_chunk(config: SimConfig, rows: int) -> int:
    """Users per chunk so that a chunk holds about ``rows`` impressions (the preset's expected rate)."""
    per_user = config.expected_impressions / max(config.n_users, 1)
    return max(1, min(config.n_users, int(rows / max(per_user, 1e-9))))


def simulate_in_chunks(config: SimConfig, seed: int, chunk_users: int) -> ChunkedSimulation:
    """The world of :func:`simulate` with a log drawn in chunks of ``chunk_users`` users (out-of-core data).

    Args:
        config: the world's knobs.
        seed: non-negative integer seed.
        chunk_users: users per chunk (:func:`users_per_chunk` sizes it from a number of impressions).

    Returns:
        The :class:`ChunkedSimulation`; nothing of the log is drawn until a chunk is asked for.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if int(chunk_users) < 1:
        raise ValueError(f"chunk_users must be >= 1, got {chunk_users}")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    world = _draw_world(config, int(seed), rng)
    meta = {"seed": int(seed), "config": config.to_dict(), "users_per_chunk": int(chunk_users)}
    return ChunkedSimulation(world.users, world.items, world.oracle, int(chunk_users), meta, world)
