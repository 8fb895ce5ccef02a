"""Scale: the whole study path on the ``large`` preset at 1M, 5M and 10M impressions; time and peak memory.

Usage::

    python benchmarks/bench_scale.py --out benchmarks/results/scale.json
    python benchmarks/bench_scale.py --impressions 200000 500000        # a quick smoke run

Each size runs in a fresh process (so its peak memory is its own) and goes through the study's stages with
the study's own configuration (``params.yaml``: teacher, students, batch size, threads, ANN index): simulate
the ``large`` world with ``n_users`` rescaled so it schedules about that many impressions, prepare it, train
the teacher for one epoch, score every impression with it, train the DMTL student on those soft labels for
one epoch, export the towers' embeddings, and retrieve the top-K items of the whole corpus for every test
user with a click, exactly and with the approximate index. Every stage reports its seconds and the peak
resident memory of the process while it ran (sampled every 20 ms from ``/proc/self/statm``; the process's
overall ``ru_maxrss`` is reported beside it).

"Time grows about linearly" is checked as the slope of log(total seconds) against log(impressions) over
the sizes: 1 is linear, below 1 means fixed costs still weigh at the small sizes. No assertion on speed
anywhere: the figures are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZES = (1_000_000, 5_000_000, 10_000_000)
TARGET_PEAK_GIB = 8.0
TARGET_MAX_SLOPE = 1.15  # log-log slope of total time vs impressions; "about linear" and not worse


class PeakRSS:
    """Peak resident memory per stage: a daemon thread samples ``/proc/self/statm`` every ``interval`` s."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.stages: list[dict[str, Any]] = []

    def rss(self) -> int:
        """Current resident set size in bytes."""
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self.rss())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @contextmanager
    def stage(self, name: str, **info: Any) -> Iterator[dict[str, Any]]:
        """Time a stage and record the peak RSS seen while it ran; ``info`` and yielded keys are kept."""
        self._peak = self.rss()
        record: dict[str, Any] = {"stage": name, **info}
        start = time.perf_counter()
        yield record
        record["seconds"] = time.perf_counter() - start
        record["peak_rss_gib"] = max(self._peak, self.rss()) / 2**30
        self.stages.append(record)
        print(f"  {name:<12} {record['seconds']:8.1f} s  peak {record['peak_rss_gib']:.2f} GiB", flush=True)


def run_size(
    impressions: int, seed: int = 0, threads: int | None = None, params_file: Path = REPO / "params.yaml"
) -> dict[str, Any]:
    """Run every stage once at about ``impressions`` impressions (in this process) and return the figures.

    ``threads`` overrides ``train.threads`` (torch's threads) and sets faiss's to match.
    """
    import dataclasses

    import faiss

    from dmtl import params as P
    from dmtl.training import quiet_lightning, seed_everything

    quiet_lightning()
    study = P.load(params_file, {"data.preset": "large"})
    train = dataclasses.replace(study.train, max_epochs=1, patience=1, threads=threads or study.train.threads)
    faiss.omp_set_num_threads(train.threads)
    seed_everything(seed, train.threads)
    load_start = os.getloadavg()
    with PeakRSS() as mem:
        config = _stages(mem, study, train, impressions, seed)
    stages = mem.stages
    return {
        "impressions": stages[0]["impressions"],
        "scheduled_impressions": impressions,
        "n_users": config.n_users,
        "n_items": config.n_items,
        "n_days": config.n_days,
        "seconds": sum(s["seconds"] for s in stages),
        "peak_rss_gib": max(s["peak_rss_gib"] for s in stages),
        # ru_maxrss is KiB on Linux: the whole process's peak, a check on the sampled figure.
        "ru_maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "stages": stages,
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "threads": train.threads,
        "batch_size": train.batch_size,
    }


def _stages(mem: PeakRSS, study: Any, train: Any, impressions: int, seed: int) -> Any:
    """Simulate, prepare, train the teacher and the dmtl student one epoch each, retrieve; returns the
    simulator's configuration (its number of users scaled to ``impressions``)."""
    import torch
    from training_common import new_student

    from dmtl import retrieval as R
    from dmtl.data import ImpressionTensors
    from dmtl.evaluation import ann_settings
    from dmtl.features import prepare
    from dmtl.sources.simulator.config import make_config
    from dmtl.sources.simulator.world import simulate
    from dmtl.training import (
        TeacherModule,
        build_teacher,
        fit,
        predict_teacher,
        tower_embeddings,
    )

    data_cfg = study.data
    base = make_config("large", data_cfg.sim)
    n_users = max(1, round(base.n_users * impressions / base.expected_impressions))
    config = make_config("large", {**data_cfg.sim, "n_users": n_users})
    with mem.stage("simulate") as rec:
        log, _ = simulate(config, data_cfg.sim_seed)
        rec["impressions"] = len(log.impressions)
    with mem.stage("prepare"):
        prepared = prepare(log, data_cfg.val_days, data_cfg.test_days, data_cfg.tau)
        del log
    with mem.stage("tensors"):
        data = ImpressionTensors(prepared)
    with mem.stage("teacher", train_impressions=len(data.indices("train"))):
        teacher = TeacherModule(build_teacher(prepared.cardinalities, study.teacher), study.teacher)
        fit(teacher, data, train, seed)
    with mem.stage("soft_labels"):
        soft = predict_teacher(teacher, data)["p_ctcvr"]
        data.soft_label = torch.from_numpy(np.asarray(soft, dtype=np.float32))
    with mem.stage("student"):
        student = new_student(prepared, study.students.common, study.students["dmtl"], seed, data)
        model = student.model
        fit(student, data, train, seed)
    with mem.stage("embeddings"):
        user_emb = tower_embeddings(model, data.user_table, user=True)
        item_emb = tower_embeddings(model, data.item_table, user=False)
    ev = study.eval
    k = max(ev.ks)
    with mem.stage("retrieval", k=k, n_items=len(item_emb)) as rec:
        imp = prepared.impressions
        test_clicks = (imp["split"].to_numpy() == 2) & (imp["click"].to_numpy() == 1)
        users = np.unique(imp["user_idx"].to_numpy()[test_clicks])
        queries = np.ascontiguousarray(user_emb[users])
        _, exact = R.exact_topk(queries, item_emb, k)
        index = R.build_ann_index(item_emb, ev.ann, **ann_settings(ev, seed))
        _, approx = R.ann_topk(index, queries, k)
        rec["queries"] = len(users)
        rec["ann_recall_vs_exact"] = R.index_recall(exact, approx)
    return config


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log(y) on log(x): 1 for y proportional to x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])


def run(
    sizes: Sequence[int] = SIZES, seed: int = 0, threads: int | None = None, timeout: float = 1800.0
) -> dict[str, Any]:
    """Run each size in a fresh Python process and collect the figures."""
    points = []
    for n in sizes:
        print(f"{n:,} impressions (scheduled):", flush=True)
        with tempfile.TemporaryDirectory(prefix="dmtl-scale-") as tmp:
            out = Path(tmp) / "point.json"
            cmd = [sys.executable, __file__, "--worker", str(n), "--seed", str(seed), "--point-out", str(out)]
            cmd += [] if threads is None else ["--threads", str(threads)]
            subprocess.run(cmd, check=True, timeout=timeout, cwd=REPO)
            points.append(json.loads(out.read_text()))
    n_imp = [p["impressions"] for p in points]
    slopes = {"total": loglog_slope(n_imp, [p["seconds"] for p in points]) if len(points) > 1 else None}
    for name in [s["stage"] for s in points[0]["stages"]]:
        secs = [next(s["seconds"] for s in p["stages"] if s["stage"] == name) for p in points]
        slopes[name] = loglog_slope(n_imp, secs) if len(points) > 1 else None
    return {
        "points": points,
        "time_loglog_slope": slopes,
        "max_peak_rss_gib": max(p["peak_rss_gib"] for p in points),
        "targets": {"max_peak_rss_gib": TARGET_PEAK_GIB, "max_time_loglog_slope": TARGET_MAX_SLOPE},
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, nargs="+", default=list(SIZES), help="scheduled sizes")
    parser.add_argument("--seed", type=int, default=0, help="model seed (the world is params' data.sim_seed)")
    parser.add_argument("--threads", type=int, default=None, help="override params' train.threads")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--point-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        point = run_size(args.worker, args.seed, args.threads)
        args.point_out.write_text(json.dumps(point))
        return
    from dmtl.io import write_json

    figures = run(args.impressions, args.seed, args.threads)
    for p in figures["points"]:
        print(
            f"{p['impressions']:>12,} impressions: {p['seconds']:7.1f} s, peak {p['peak_rss_gib']:.2f} GiB "
            f"(ru_maxrss {p['ru_maxrss_gib']:.2f} GiB)"
        )
    print(f"log-log slope of time vs impressions: {figures['time_loglog_slope']['total']}")
    if args.out is not None:
        write_json(figures, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
