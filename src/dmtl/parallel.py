"""Training runs side by side: the seeds (and teacher variants) of a stage in worker processes.

The study's models are small, so one training process does not keep two cores busy (most of a step is
short kernels and Python between them); two processes of one thread each train two seeds in about the time of
one. ``train.workers`` sets how many; each gets ``train.threads / workers`` threads. A run's numbers depend
on its thread count (the order of float reductions), never on which process ran it or when, so a setting of
``train.workers`` and ``train.threads`` always gives the same numbers.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_CACHE: dict[tuple[str, int], Any] = {}


def prepared_data(data_dir: Path) -> tuple[Any, Any]:
    """The prepared data of ``data_dir`` and its tensors, read once per process (and again only if the
    folder was rewritten); for prepared shards (:mod:`dmtl.shards`), their tables and the streaming reader
    (:class:`dmtl.streaming.ShardedData`)."""
    from dmtl.data import ImpressionTensors
    from dmtl.features import Prepared
    from dmtl.shards import ShardedPrepared, is_sharded
    from dmtl.streaming import ShardedData

    key = (str(data_dir.resolve()), (data_dir / "meta.json").stat().st_mtime_ns)
    if key not in _CACHE:
        _CACHE.clear()
        if is_sharded(data_dir):
            shards = ShardedPrepared.read(data_dir)
            _CACHE[key] = (shards, ShardedData(shards))
        else:
            prepared = Prepared.read(data_dir)
            _CACHE[key] = (prepared, ImpressionTensors(prepared))
    return _CACHE[key]


def threads_per_run(threads: int, workers: int, n_runs: int) -> int:
    """Each run's torch threads when ``workers`` processes share ``threads``."""
    return max(1, threads // max(1, min(workers, n_runs)))


def _die_with_parent() -> None:
    """Worker initializer: on Linux, the kernel ends the worker when its parent dies (a killed stage leaves no
    training processes behind); elsewhere a no-op."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def map_runs(fn: Callable[..., R], runs: Sequence[T], workers: int, threads: int) -> list[R]:
    """``fn(run, threads=...)`` for every run, in order; in ``workers`` spawned processes when more than one.

    ``fn`` must be a module-level function (it is pickled to the workers) and write what it produces itself.
    """
    per_run = threads_per_run(threads, workers, len(runs))
    if workers <= 1 or len(runs) <= 1:
        return [fn(run, threads=per_run) for run in runs]
    context = multiprocessing.get_context(
        "spawn"
    )  # fork would copy a process that already runs torch threads
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(runs)), mp_context=context, initializer=_die_with_parent
    )
    with pool:
        return list(pool.map(partial(fn, threads=per_run), runs))
