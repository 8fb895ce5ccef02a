"""One registry dispatches ``data.source`` to its loader.

Every loader returns the log in the study's schema (:class:`dmtl.schema.FeedLog`) and, for the simulator,
its :class:`~dmtl.sources.simulator.oracle.Oracle` (ground truth for evaluation only); real data has none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dmtl.config import DataConfig
from dmtl.schema import FeedLog, LoadOptions


def _simulated(data: DataConfig) -> tuple[FeedLog, Any]:
    from dmtl.sources.simulator.config import make_config
    from dmtl.sources.simulator.world import simulate

    return simulate(make_config(data.preset, data.sim), seed=data.sim_seed)


def _kuairand(data: DataConfig) -> tuple[FeedLog, Any]:
    from dmtl.kuairand import load_kuairand

    return load_kuairand(data.path, logs=data.kuairand_logs, options=LoadOptions.from_params(data)), None


def _generic(data: DataConfig) -> tuple[FeedLog, Any]:
    from dmtl.generic import load_generic

    return load_generic(data.path, columns=data.columns or None, options=LoadOptions.from_params(data)), None


LOADERS: dict[str, Callable[[DataConfig], tuple[FeedLog, Any]]] = {
    "simulated": _simulated,
    "kuairand": _kuairand,
    "generic": _generic,
}
"""Each source of :data:`dmtl.vocab.SOURCES` and its loader."""


def load_source(data: DataConfig) -> tuple[FeedLog, Any]:
    """The configured source as ``(log, oracle)``; the oracle is ``None`` for real data."""
    return LOADERS[data.source](data)
