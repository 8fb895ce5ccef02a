"""The simulated feed log: the logging policy's sessions and slots, the items it shows, and the clicks and
reading durations they get (the package docstring gives the formulas).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dmtl.schema import coerce_impressions
from dmtl.sources.simulator.config import SECONDS_PER_DAY, SimConfig
from dmtl.sources.simulator.oracle import Oracle, affinity_columns
from dmtl.sources.simulator.population import World, flat_cdf_sample

_REDRAWS = 3  # attempts to replace an item the user was already shown before dropping the slot


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
        t = flat_cdf_sample(self.topic_cdf, users, u_topic)
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


def draw_impressions(
    config: SimConfig, world: World, rng: np.random.Generator, users: slice | None = None
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
