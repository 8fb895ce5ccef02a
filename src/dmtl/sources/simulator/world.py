"""Simulating a world and its feed log: whole (:func:`simulate`) or one chunk of users at a time
(:func:`simulate_in_chunks`, the out-of-core data); the population is :mod:`.population`'s, the log :mod:`.feed`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dmtl.schema import FeedLog
from dmtl.sources.simulator.config import SimConfig
from dmtl.sources.simulator.feed import draw_impressions
from dmtl.sources.simulator.oracle import Oracle
from dmtl.sources.simulator.population import World, draw_world

# The chunked log (:func:`simulate_in_chunks`): chunk c of users draws from PCG64([seed, 3, c]).
_STREAM_CHUNKS = 3


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
    world = draw_world(config, int(seed), rng)
    impressions = draw_impressions(config, world, rng)
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
    _world: World | None = None

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
        return draw_impressions(config, self._world, rng, rows)

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
    world = draw_world(config, int(seed), rng)
    meta = {"seed": int(seed), "config": config.to_dict(), "users_per_chunk": int(chunk_users)}
    return ChunkedSimulation(world.users, world.items, world.oracle, int(chunk_users), meta, world)
