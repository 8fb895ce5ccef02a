"""Retrieval at corpus scale: exact against approximate faiss search over a 1M-item corpus.

Usage::

    python benchmarks/bench_retrieval.py --out benchmarks/results/retrieval.json
    python benchmarks/bench_retrieval.py --items 100000 --queries 2000       # a quick smoke run

The corpus and the queries are synthetic, 32-d like the students' towers (``students.common.out_dim``):
no simulated world has a million items, and the point here is the index, not a model. They are drawn from
one Gaussian mixture (``--clusters`` centres with Zipf-like sizes, unit-variance centres, within-cluster
sd 0.5) because tower embeddings are clustered by topic; an isotropic cloud would be the worst case for an
inverted-file index and no recommender's embedding looks like it. Queries are a fresh sample of the same
mixture.

Search is the study's own (:mod:`dmtl.retrieval`): exact inner product (``IndexFlatIP``), the reference,
and IVF-Flat at several ``nprobe`` (and, with ``--hnsw``, HNSW). For each: build seconds, queries per
second of one batched search over all queries (how the evaluation queries every user at once) and
recall@100 against exact. The headline is the fastest setting whose recall@100 reaches the target;
no assertion on speed anywhere.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from dmtl import retrieval as R
from dmtl.io import write_json

TARGET_RECALL = 0.95  # recall@100 against exact at the reported operating point (this study's bar)
K = 100


def mixture_embeddings(
    n_items: int, n_queries: int, dim: int, clusters: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Items and queries from one Gaussian mixture with Zipf-like cluster sizes (see the module docstring)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    weights /= weights.sum()

    def draw(n: int) -> np.ndarray:
        which = rng.choice(clusters, size=n, p=weights)
        return centres[which] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)

    return np.ascontiguousarray(draw(n_items)), np.ascontiguousarray(draw(n_queries))


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run(
    n_items: int = 1_000_000,
    n_queries: int = 10_000,
    dim: int = 32,
    clusters: int = 1_000,
    nlist: int = 1024,
    nprobes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    hnsw: bool = False,
    threads: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Exact search and approximate indexes over one corpus; returns the figures."""
    faiss.omp_set_num_threads(threads)
    load_start = os.getloadavg()
    items, queries = mixture_embeddings(n_items, n_queries, dim, clusters, seed)
    (_, exact), exact_s = _timed(R.exact_topk, queries, items, K)
    exact_qps = n_queries / exact_s
    print(f"exact: {exact_qps:,.0f} queries/s ({n_queries:,} queries x {n_items:,} items)", flush=True)
    rows: list[dict[str, Any]] = []

    def measure(index: Any, build_s: float, label: str) -> None:
        """Time one search setting of ``index`` and record its recall against exact search."""
        (_, approx), search_s = _timed(R.ann_topk, index, queries, K)
        rows.append(
            {
                **R.describe_index(index),
                "build_seconds": build_s,
                "queries_per_second": n_queries / search_s,
                "recall_at_100": R.index_recall(exact, approx),
            }
        )
        print(
            f"{label}: {rows[-1]['queries_per_second']:,.0f} queries/s, recall@100 {rows[-1]['recall_at_100']:.4f}",
            flush=True,
        )

    index, build_s = _timed(R.build_ann_index, items, "ivf_flat", nlist=nlist, nprobe=1, seed=seed)
    for nprobe in nprobes:
        index.nprobe = min(nprobe, nlist)
        measure(index, build_s, f"ivf_flat nlist={nlist} nprobe={nprobe}")
    if hnsw:
        index, build_s = _timed(R.build_ann_index, items, "hnsw", m=32, ef_construction=80, ef_search=128)
        for ef in (64, 128, 256):
            index.hnsw.efSearch = ef
            measure(index, build_s, f"hnsw ef_search={ef}")
    good = [r for r in rows if r["recall_at_100"] >= TARGET_RECALL]
    best = (
        max(good, key=lambda r: r["queries_per_second"])
        if good
        else max(rows, key=lambda r: r["recall_at_100"])
    )
    return {
        "n_items": n_items,
        "n_queries": n_queries,
        "dim": dim,
        "k": K,
        "corpus": f"Gaussian mixture, {clusters} clusters, Zipf-like sizes, within-cluster sd 0.5",
        "threads": threads,
        "exact": {"kind": "exact", "queries_per_second": exact_qps, "search_seconds": exact_s},
        "approximate": rows,
        "operating_point": {**best, "speedup_vs_exact": best["queries_per_second"] / exact_qps},
        "targets": {"min_recall_at_100": TARGET_RECALL, "min_speedup_vs_exact": 1.0},
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "faiss": faiss.__version__,
        "seed": seed,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--hnsw", action="store_true", help="also build HNSW (single-threaded build: slow)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    figures = run(
        args.items,
        args.queries,
        args.dim,
        args.clusters,
        args.nlist,
        args.nprobe,
        args.hnsw,
        args.threads,
        args.seed,
    )
    op = figures["operating_point"]
    print(
        f"operating point: {op['kind']} { ({k: op[k] for k in ('nlist', 'nprobe', 'ef_search') if k in op}) }: "
        f"{op['queries_per_second']:,.0f} queries/s ({op['speedup_vs_exact']:.1f}x exact), "
        f"recall@100 {op['recall_at_100']:.4f}"
    )
    if args.out is not None:
        write_json(figures, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
