"""The hierarchical bootstrap of :mod:`dmtl.stats` at a realistic size: how long the statistics take.

Usage::

    python benchmarks/bench_stats.py --out benchmarks/results/stats.json
    python benchmarks/bench_stats.py --users 1000 --impressions 20000   # a quick smoke run

Synthetic inputs the size of a full study's evaluation: ``--models`` models x ``--seeds`` seeds, per-user
values of ``--metrics`` retrieval metrics over ``--users`` retrieval users (``--n-boot`` replicates), and test
scores of ``--impressions`` impressions for the three AUCs (and their GAUC twins) of every model and seed
(``--n-boot-ranking`` replicates). Labels: click rate 8%, long reads 40% of clicks, like the simulator's
default world. Timed (wall clock and CPU time of the process): the retrieval bootstrap, the ranking bootstrap
and the whole :func:`dmtl.stats.bootstrap_summary` (which includes both). Run on one core (``--threads 1``,
the default) for a figure that does not depend on the machine's BLAS threads; on a shared machine the CPU
time is that figure. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any


def _set_threads(n: int) -> None:
    # Must precede the numpy import: BLAS reads these once.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def make_inputs(args: argparse.Namespace) -> tuple[Any, Any, Any, list[str]]:
    import numpy as np

    from dmtl.stats.bootstrap import EvalSample

    rng = np.random.default_rng(0)
    n_imp, n_all = args.impressions, int(args.users * 1.2)  # some test users never click: not retrieved
    user = rng.integers(0, n_all, n_imp)
    click = (rng.random(n_imp) < 0.08).astype(np.int8)
    long_read = (click == 1) & (rng.random(n_imp) < 0.4)
    retrieval_users = np.sort(rng.choice(n_all, args.users, replace=False))
    sample = EvalSample(n_all, user, click, long_read.astype(np.int8), retrieval_users)
    models = [f"model_{i}" for i in range(args.models)]
    metrics = [f"recall_long@{k}" for k in range(1, args.metrics + 1)]
    has_long = rng.random(args.users) < 0.7
    per_user, scores = {}, {}
    for i, model in enumerate(models):
        x = rng.beta(2 + i * 0.05, 5, size=(len(metrics), args.seeds, args.users))
        x[:, :, ~has_long] = np.nan  # recall_long: users without a long read do not count
        per_user[model] = {m: x[j] for j, m in enumerate(metrics)}
        s = rng.standard_normal((args.seeds, n_imp)) + (0.5 + 0.05 * i) * (click + long_read)
        scores[model] = dict.fromkeys(("click", "ctcvr", "cvr"), s)
    return per_user, scores, sample, models


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, default=9)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--metrics", type=int, default=20)
    p.add_argument("--impressions", type=int, default=100_000)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--n-boot-ranking", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    _set_threads(args.threads)

    from dmtl.io import write_json
    from dmtl.stats.bootstrap import Draws, bootstrap_per_user, bootstrap_ranking
    from dmtl.stats.summary import bootstrap_summary

    per_user, scores, sample, models = make_inputs(args)
    draws = Draws.draw(sample.n_users, args.seeds, args.n_boot, 0)
    timings: dict[str, dict[str, float]] = {}

    def timed(name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        # Wall clock and this process's CPU time: on a shared machine the CPU time is the one-core figure.
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(*a, **kw)
        timings[name] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
        return out

    timed("retrieval", bootstrap_per_user, per_user, draws, sample.retrieval_users)
    ranking = draws.head(args.n_boot_ranking)
    timed("ranking_auc", bootstrap_ranking, scores, sample, ranking, gauc=False)
    timed("ranking_auc_gauc", bootstrap_ranking, scores, sample, ranking, gauc=True)
    summary = timed(
        "summary",
        bootstrap_summary,
        per_user,
        scores,
        sample,
        reference=models[0],
        n_boot=args.n_boot,
        n_boot_ranking=args.n_boot_ranking,
        margins=0.005,
    )
    n_comparisons = sum(len(v) for v in summary["comparisons"].values())
    out = {
        "config": vars(args) | {"out": str(args.out) if args.out else None},
        "timings": timings,
        "n_comparisons": n_comparisons,
        "load_average": os.getloadavg(),
    }

    def fig(name: str) -> str:
        return f"{timings[name]['cpu_s']:.2f} s CPU ({timings[name]['wall_s']:.2f} s wall)"

    print(
        f"{args.models} models x {args.seeds} seeds, {args.threads} thread(s), "
        f"load average {os.getloadavg()[0]:.1f}\n"
        f"  retrieval: {args.metrics} metrics x {args.users} users, B={args.n_boot}: {fig('retrieval')}\n"
        f"  ranking: 3 AUCs x {args.impressions} impressions, B={args.n_boot_ranking}: {fig('ranking_auc')}; "
        f"with the GAUC twins {fig('ranking_auc_gauc')}\n"
        f"  bootstrap_summary (all of it, {n_comparisons} comparisons): {fig('summary')}"
    )
    if args.out:
        write_json(out, args.out)
    return out


if __name__ == "__main__":
    main()
