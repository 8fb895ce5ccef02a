"""Benchmark the simulator: impressions per second and peak memory on one core.

Usage::

    python benchmarks/bench_simulator.py --impressions 1000000 --out benchmarks/results/simulator.json
    python benchmarks/bench_simulator.py --preset large
    python benchmarks/bench_simulator.py --preset tiny --set clickbait_share=0.3

``--impressions`` rescales ``n_users`` so the preset schedules about that many impressions. The figures are
printed and, with ``--out``, written as JSON. Peak memory is Python's traced allocations (numpy reports its
buffers to ``tracemalloc``) and the process's peak resident set size. No assertion on speed: a machine's
speed is not a property of the code.
"""

from __future__ import annotations

import os

# One core, as the issue asks; set before numpy is imported so no BLAS pool starts.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from dmtl.io import write_json  # noqa: E402
from dmtl.sources.simulator.calibration import calibration  # noqa: E402
from dmtl.sources.simulator.config import PRESETS, make_config  # noqa: E402
from dmtl.sources.simulator.world import simulate  # noqa: E402


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def run(preset: str, impressions: int | None, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """Simulate once under ``tracemalloc`` and return the figures."""
    config = make_config(preset, overrides)
    if impressions is not None:
        scale = impressions / config.expected_impressions
        config = make_config(preset, {**overrides, "n_users": max(1, round(config.n_users * scale))})
    tracemalloc.start()
    start = time.perf_counter()
    log, oracle = simulate(config, seed)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    n_users = min(2_000, config.n_users)
    start = time.perf_counter()
    oracle.click_prob(np.arange(n_users))
    oracle_seconds = time.perf_counter() - start

    n = len(log.impressions)
    cal = calibration(log, oracle)
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss_unit = 1 if sys.platform == "darwin" else 1024
    return {
        "preset": preset,
        "overrides": overrides,
        "seed": seed,
        "n_users": config.n_users,
        "n_items": config.n_items,
        "n_days": config.n_days,
        "impressions": n,
        "seconds": seconds,
        "impressions_per_second": n / seconds,
        "peak_traced_mib": peak / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * rss_unit / 2**20,
        "oracle_click_prob_block": [n_users, config.n_items],
        "oracle_click_prob_seconds": oracle_seconds,
        "calibration": {k: cal[k] for k in ("ctr", "mean_clicked_duration", "bait_ctr_ratio", "checks")},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--impressions", type=int, default=None, help="rescale n_users to about this many")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="simulator override")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    figures = run(args.preset, args.impressions, _parse_set(args.set), args.seed)
    print(
        f"{figures['impressions']:,} impressions ({args.preset}, {figures['n_users']:,} users x "
        f"{figures['n_items']:,} items x {figures['n_days']} days) in {figures['seconds']:.2f} s: "
        f"{figures['impressions_per_second']:,.0f} impressions/s on one core"
    )
    print(
        f"peak memory: {figures['peak_traced_mib']:,.0f} MiB traced, {figures['peak_rss_mib']:,.0f} MiB RSS"
    )
    rows, cols = figures["oracle_click_prob_block"]
    print(f"oracle click_prob {rows:,} x {cols:,}: {figures['oracle_click_prob_seconds']:.2f} s")
    print(f"calibration checks: {figures['calibration']['checks']}")
    if args.out is not None:
        write_json(figures, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
