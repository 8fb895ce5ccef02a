"""Scale: simulate -> prepare -> one teacher epoch -> one student epoch -> retrieval at 1M, 10M and 100M
impressions on the out-of-core (sharded) data path; time and peak memory per size.

Usage::

    python benchmarks/bench_scale.py --out benchmarks/results/scale.json
    python benchmarks/bench_scale.py --impressions 200000 500000 --memory-impressions 200000   # smoke run

Each size runs in a fresh process (so its peak memory is its own) with the study's configuration
(``params.yaml``: teacher, the DMTL student, batch size, threads, ANN index, ``data.shard_rows``) on the
``large`` world (200k users, 50k items) with its sessions per user and day scaled so it schedules about that
many impressions (``--scale users`` scales the users instead; :func:`_world` says why density is the
default):

- ``simulate``: the log drawn one chunk of users at a time into Parquet shards (:func:`dmtl.log_shards.simulate_log_shards`);
- ``prepare``: split, tau, labels and encodings in two passes over the shards (:func:`dmtl.shard_prepare.prepare_shards`);
- ``teacher``: one epoch streamed from the training shards (:class:`dmtl.streaming.ShardStream`), then its
  validation pass;
- ``soft_labels``: the teacher's predictions written per training and validation shard;
- ``student``: one epoch of the DMTL student on those soft labels, streamed the same way;
- ``embeddings``, ``retrieval``: every user's and item's tower output, and the top-K items of the whole corpus
  for every test user with a click, exactly and with the approximate index (in chunks of queries).

Every stage reports its seconds and the peak resident memory of the process tree (this process and any
children) while it ran, sampled every 20 ms from ``/proc``. The in-memory path (all tensors in memory:
:func:`dmtl.features.prepare`, :class:`dmtl.data.ImpressionTensors`) is measured at the smaller sizes as context
(``--memory-impressions``): it is the default below ``dmtl.shards.AUTO_SHARDS_ABOVE`` impressions.

Targets (issue 17): peak memory under 8 GiB at 100M, and time per impression at the largest size within 15%
of the next size's. The time of KuaiRand-27K's 322M impressions is extrapolated from the measured slope
(seconds per extra impression between the two largest sizes). No assertion on speed anywhere: the figures
are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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
SIZES = (1_000_000, 10_000_000, 100_000_000)
MEMORY_SIZES = (1_000_000, 10_000_000)  # the in-memory path, as context
TARGET_PEAK_GIB = 8.0
TARGET_PER_IMPRESSION_RATIO = 1.15  # time per impression at the largest size / at the next size
KUAIRAND_27K_IMPRESSIONS = 322_000_000
QUERY_CHUNK = 65_536  # retrieval queries per search call: the top-K lists of all test users need not fit


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


class PeakRSS:
    """Peak resident memory of the process tree per stage: a daemon thread sums ``/proc/<pid>/statm`` over
    this process and its descendants every ``interval`` s."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.stages: list[dict[str, Any]] = []

    def rss(self) -> int:
        """Current resident set size of the process tree in bytes."""
        total, todo, seen = 0, [os.getpid()], set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * self._page
            except OSError:
                continue
            todo += _children(pid)
        return total

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
    impressions: int,
    storage: str = "shards",
    seed: int = 0,
    threads: int | None = None,
    scale: str = "density",
    params_file: Path = REPO / "params.yaml",
) -> dict[str, Any]:
    """Run every stage once at about ``impressions`` impressions (in this process) and return the figures.

    ``storage`` is ``shards`` (the out-of-core path) or ``memory``; ``threads`` overrides ``train.threads``
    (torch's threads) and sets faiss's to match.
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
    work = Path(tempfile.mkdtemp(prefix="dmtl-scale-", dir=os.environ.get("DMTL_SCALE_TMP")))
    try:
        with PeakRSS() as mem:
            stages = _stages_shards if storage == "shards" else _stages_memory
            config = stages(mem, study, train, _world(study, impressions, scale), seed, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stages = mem.stages
    n = stages[0]["impressions"]
    seconds = sum(s["seconds"] for s in stages)
    return {
        "storage": storage,
        "impressions": n,
        "scheduled_impressions": impressions,
        "scale": scale,
        "n_users": config.n_users,
        "n_items": config.n_items,
        "n_days": config.n_days,
        "sessions_per_user_day": config.sessions_per_user_day,
        "shard_rows": study.data.shard_rows if storage == "shards" else None,
        "seconds": seconds,
        "microseconds_per_impression": seconds / n * 1e6,
        "peak_rss_gib": max(s["peak_rss_gib"] for s in stages),
        # ru_maxrss is KiB on Linux: this process's own peak (children not included), a check on the sample.
        "ru_maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "stages": stages,
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "threads": train.threads,
        "batch_size": train.batch_size,
    }


def _world(study: Any, impressions: int, scale: str = "density") -> Any:
    """The ``large`` world scheduling about ``impressions`` impressions.

    ``density`` (the default) scales ``sessions_per_user_day``: the same 200k users and 50k items read more,
    as a service's log grows over time (KuaiRand-27K: 27k users, 322M impressions). ``users`` scales
    ``n_users`` at the preset's density (the earlier benchmark's choice): the models' user tables then grow
    with the log too, and with them the dense optimizer's cost per step (Adam updates every row of an
    embedding table each step), so time per impression grows with users whatever the data path does.
    """
    from dmtl.sources.simulator.config import make_config

    base = make_config("large", study.data.sim)
    factor = impressions / base.expected_impressions
    if scale == "users":
        return make_config("large", {**study.data.sim, "n_users": max(1, round(base.n_users * factor))})
    return make_config(
        "large", {**study.data.sim, "sessions_per_user_day": base.sessions_per_user_day * factor}
    )


def _retrieve(
    mem: PeakRSS, study: Any, user_emb: np.ndarray, item_emb: np.ndarray, users: np.ndarray, seed: int
):
    """Exact and approximate top-K for ``users``, a chunk of queries at a time; the index's recall."""
    from dmtl import retrieval as R
    from dmtl.evaluation import ann_settings

    ev = study.eval
    k = max(ev.ks)
    with mem.stage("retrieval", k=k, n_items=len(item_emb)) as rec:
        index = R.build_ann_index(item_emb, ev.ann, **ann_settings(ev, seed))
        hits = 0.0
        for start in range(0, len(users), QUERY_CHUNK):
            queries = np.ascontiguousarray(user_emb[users[start : start + QUERY_CHUNK]])
            _, exact = R.exact_topk(queries, item_emb, k)
            _, approx = R.ann_topk(index, queries, k)
            hits += R.index_recall(exact, approx) * len(queries)
        rec["queries"] = len(users)
        rec["ann_recall_vs_exact"] = hits / max(len(users), 1)


def _stages_shards(mem: PeakRSS, study: Any, train: Any, config: Any, seed: int, work: Path) -> Any:
    """The out-of-core path: shards from the simulator to the student; returns the simulator's config."""
    import pyarrow.parquet as pq
    from training_common import new_student

    from dmtl.log_shards import simulate_log_shards
    from dmtl.modules import TeacherModule, build_teacher
    from dmtl.predict import predict_teacher_shards, tower_embeddings
    from dmtl.shard_prepare import prepare_shards
    from dmtl.streaming import ShardedData, SoftLabels
    from dmtl.training import fit

    data_cfg = study.data
    with mem.stage("simulate", shard_rows=data_cfg.shard_rows) as rec:
        log, oracle = simulate_log_shards(config, data_cfg.sim_seed, work / "log", data_cfg.shard_rows)
        del oracle  # the study writes it for evaluation; nothing here reads it
        rec["impressions"] = sum(pq.ParquetFile(f).metadata.num_rows for f in log.files)
        rec["shards"] = len(log.files)
    with mem.stage("prepare"):
        prepared = prepare_shards(log, work / "data", data_cfg.val_days, data_cfg.test_days, data_cfg.tau)
        del log
        shutil.rmtree(work / "log")
    data = ShardedData(prepared)
    ctx = prepared.meta["context_features"]
    with mem.stage("teacher", train_impressions=sum(prepared.rows("train"))):
        model = build_teacher(prepared.cardinalities, study.teacher, "default", ctx)
        teacher = TeacherModule(model, study.teacher, "default", ctx)
        fit(teacher, data, train, seed)
    with mem.stage("soft_labels"):
        predict_teacher_shards(teacher, data, work / "predictions", splits=("train", "val"))
        del teacher
    soft = SoftLabels(work / "predictions", lambda pred: pred["p_ctcvr"].astype(np.float32))
    with mem.stage("student"):
        sdata = ShardedData(prepared, soft)
        student = new_student(prepared, study.students.common, study.students["dmtl"], seed, sdata)
        fit(student, sdata, train, seed)
    with mem.stage("embeddings"):
        user_emb = tower_embeddings(student.model, data.user_table, user=True)
        item_emb = tower_embeddings(student.model, data.item_table, user=False)
    # The test users with a click: all retrieval needs beside the towers (read one shard at a time).
    users = [
        p["user_idx"].to_numpy()[p["click"].to_numpy() == 1]
        for p in prepared.iter_split("test", ["user_idx", "click"])
    ]
    _retrieve(mem, study, user_emb, item_emb, np.unique(np.concatenate(users)), seed)
    return config


def _stages_memory(mem: PeakRSS, study: Any, train: Any, config: Any, seed: int, work: Path) -> Any:
    """The in-memory path (every tensor in memory), as the study runs below the shards threshold."""
    import torch
    from training_common import new_student

    from dmtl.data import ImpressionTensors
    from dmtl.features import prepare
    from dmtl.modules import TeacherModule, build_teacher
    from dmtl.predict import predict_teacher, tower_embeddings
    from dmtl.sources.simulator.world import simulate
    from dmtl.training import fit

    data_cfg = study.data
    with mem.stage("simulate") as rec:
        log, _ = simulate(config, data_cfg.sim_seed)
        rec["impressions"] = len(log.impressions)
    with mem.stage("prepare"):
        prepared = prepare(log, data_cfg.val_days, data_cfg.test_days, data_cfg.tau)
        del log
    with mem.stage("tensors"):
        data = ImpressionTensors(prepared)
    ctx = prepared.meta["context_features"]
    with mem.stage("teacher", train_impressions=len(data.indices("train"))):
        model = build_teacher(prepared.cardinalities, study.teacher, "default", ctx)
        teacher = TeacherModule(model, study.teacher, "default", ctx)
        fit(teacher, data, train, seed)
    with mem.stage("soft_labels"):
        soft = predict_teacher(teacher, data)["p_ctcvr"]
        data.soft_label = torch.from_numpy(np.asarray(soft, dtype=np.float32))
    with mem.stage("student"):
        student = new_student(prepared, study.students.common, study.students["dmtl"], seed, data)
        fit(student, data, train, seed)
    with mem.stage("embeddings"):
        user_emb = tower_embeddings(student.model, data.user_table, user=True)
        item_emb = tower_embeddings(student.model, data.item_table, user=False)
    imp = prepared.impressions
    test_clicks = (imp["split"].to_numpy() == 2) & (imp["click"].to_numpy() == 1)
    _retrieve(mem, study, user_emb, item_emb, np.unique(imp["user_idx"].to_numpy()[test_clicks]), seed)
    return config


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log(y) on log(x): 1 for y proportional to x."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])


def growth(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How time and memory grow over the sharded sizes, and the 322M (KuaiRand-27K) extrapolation."""
    points = sorted(points, key=lambda p: p["impressions"])
    n = [p["impressions"] for p in points]
    out: dict[str, Any] = {"sizes": n}
    if len(points) < 2:
        return out
    out["time_loglog_slope"] = loglog_slope(n, [p["seconds"] for p in points])
    out["stage_loglog_slope"] = {
        name: loglog_slope(n, [next(s["seconds"] for s in p["stages"] if s["stage"] == name) for p in points])
        for name in [s["stage"] for s in points[0]["stages"]]
    }
    big, prev = points[-1], points[-2]
    ratio = big["microseconds_per_impression"] / prev["microseconds_per_impression"]
    # Seconds per extra impression between the two largest sizes: the marginal cost, fixed costs left out.
    slope = (big["seconds"] - prev["seconds"]) / (big["impressions"] - prev["impressions"])
    seconds_322m = big["seconds"] + slope * (KUAIRAND_27K_IMPRESSIONS - big["impressions"])
    out.update(
        per_impression_ratio=ratio,
        per_impression_ratio_sizes=[prev["impressions"], big["impressions"]],
        marginal_microseconds_per_impression=slope * 1e6,
        kuairand_27k={
            "impressions": KUAIRAND_27K_IMPRESSIONS,
            "estimated_seconds": seconds_322m,
            "estimated_hours": seconds_322m / 3600,
            "method": f"the {big['impressions'] / 1e6:.3g}M run's time plus the marginal seconds per impression "
            f"between {prev['impressions'] / 1e6:.3g}M and {big['impressions'] / 1e6:.3g}M, times the extra "
            "impressions; same threads, same machine",
        },
    )
    return out


def run(
    sizes: Sequence[int] = SIZES,
    memory_sizes: Sequence[int] = MEMORY_SIZES,
    seed: int = 0,
    threads: int | None = None,
    timeout: float = 8 * 3600,
    scale: str = "density",
) -> dict[str, Any]:
    """Run each size in a fresh Python process and collect the figures."""
    points: dict[str, list[dict[str, Any]]] = {"shards": [], "memory": []}
    for storage, todo in (("memory", memory_sizes), ("shards", sizes)):
        for n in todo:
            print(f"{n:,} impressions (scheduled), {storage}:", flush=True)
            with tempfile.TemporaryDirectory(prefix="dmtl-scale-") as tmp:
                out = Path(tmp) / "point.json"
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    str(n),
                    "--storage",
                    storage,
                    "--seed",
                    str(seed),
                ]
                cmd += ["--point-out", str(out)] + ([] if threads is None else ["--threads", str(threads)])
                subprocess.run(cmd, check=True, timeout=timeout, cwd=REPO)
                points[storage].append(json.loads(out.read_text()))
    return {
        "points": points["shards"],
        "memory_points": points["memory"],
        "scale": scale,
        "growth": growth(points["shards"]),
        "max_peak_rss_gib": max((p["peak_rss_gib"] for p in points["shards"]), default=None),
        "targets": {
            "max_peak_rss_gib": TARGET_PEAK_GIB,
            "max_per_impression_ratio": TARGET_PER_IMPRESSION_RATIO,
        },
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=float, nargs="+", default=list(SIZES), help="sharded sizes")
    parser.add_argument(
        "--memory-impressions", type=float, nargs="*", default=list(MEMORY_SIZES), help="in-memory sizes"
    )
    parser.add_argument("--seed", type=int, default=0, help="model seed (the world is params' data.sim_seed)")
    parser.add_argument("--threads", type=int, default=None, help="override params' train.threads")
    parser.add_argument(
        "--scale",
        default="density",
        choices=["density", "users"],
        help="grow the log by sessions per user (fixed world) or by users",
    )
    parser.add_argument("--timeout", type=float, default=8 * 3600, help="seconds allowed per size")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--storage", default="shards", choices=["shards", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--point-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        point = run_size(int(args.worker), args.storage, args.seed, args.threads, args.scale)
        args.point_out.write_text(json.dumps(point))
        return
    from dmtl.io import write_json

    figures = run(
        [int(n) for n in args.impressions],
        [int(n) for n in args.memory_impressions],
        args.seed,
        args.threads,
        args.timeout,
        args.scale,
    )
    for p in figures["memory_points"] + figures["points"]:
        print(
            f"{p['storage']:>6} {p['impressions']:>12,} impressions: {p['seconds']:7.1f} s "
            f"({p['microseconds_per_impression']:.1f} us each), peak {p['peak_rss_gib']:.2f} GiB"
        )
    g = figures["growth"]
    if "per_impression_ratio" in g:
        print(f"time per impression, largest vs next size: {g['per_impression_ratio']:.3f}")
        print(f"KuaiRand-27K (322M) estimate: {g['kuairand_27k']['estimated_hours']:.2f} h")
    if args.out is not None:
        write_json(figures, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
