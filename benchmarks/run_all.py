"""Run every benchmark and write ``benchmarks/results.json``: each figure next to its target, with a flag.

Usage::

    python benchmarks/run_all.py                         # all benchmarks (about 30 minutes on 2 cores)
    python benchmarks/run_all.py --threads auto          # one thread per process if the machine stays busy
    python benchmarks/run_all.py --only training         # rerun one; the others are kept from their files
    python benchmarks/run_all.py --collect               # rebuild results.json from the per-benchmark files

Each benchmark runs as its own process (its own peak memory, no state shared) and writes
``benchmarks/results/<name>.json``; this script then reads them all and writes ``benchmarks/results.json``
atomically. A benchmark that fails is reported as failed in the results, never dropped silently, and the
others still run. The machine may be shared, so before starting it waits (up to ``--max-wait`` seconds)
for the 1-minute load average to fall to ``--max-load`` and records the load average next to the figures
either way. No figure is asserted on: ``met`` says whether it reached its target on this run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results.json"
PARTS = HERE / "results"

# name -> (script, extra arguments); each writes PARTS / f"{name}.json" via --out.
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "simulator": ("bench_simulator.py", ["--impressions", "1000000"]),
    "roofline": ("bench_roofline.py", ["--compile", "6"]),
    "training": ("bench_training.py", []),
    "retrieval": ("bench_retrieval.py", []),
    "scale": ("bench_scale.py", []),
    "study": ("bench_study.py", []),
}
# --smoke: every code path on small sizes in about two minutes; figures go to PARTS / "smoke", not results.json.
SMOKE: dict[str, list[str]] = {
    "simulator": ["--impressions", "100000"],
    "roofline": ["--smoke"],
    "training": ["--preset", "tiny", "--repeats", "1"],
    "retrieval": ["--items", "100000", "--queries", "1000", "--nlist", "256"],
    "scale": ["--impressions", "100000", "300000", "--memory-impressions", "100000"],
    "study": ["--set", "data.preset=tiny", "--set", "train.seeds=[0,1]", "--set", "sweeps.seeds=[0,1]"],
}
# Benchmarks that need more than --timeout: the scale benchmark's 100M impressions take an hour or more.
MIN_TIMEOUT: dict[str, float] = {"scale": 9 * 3600.0}
SIMULATOR_TARGET_SECONDS = 10.0  # docs/protocol.md section 5: "a million impressions in seconds"


def wait_for_quiet(max_load: float, max_wait: float, poll: float = 60.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is at most ``max_load`` or ``max_wait`` seconds have passed."""
    start = time.monotonic()
    before = os.getloadavg()
    while os.getloadavg()[0] > max_load and time.monotonic() - start < max_wait:
        print(f"load average {os.getloadavg()[0]:.2f} > {max_load}; waiting {poll:.0f} s", flush=True)
        time.sleep(poll)
    return {
        "before_wait": list(before),
        "at_start": list(os.getloadavg()),
        "waited_seconds": time.monotonic() - start,
        "max_load": max_load,
    }


def run_benchmark(
    name: str, timeout: float, parts: Path, smoke: bool = False, threads: int | None = None
) -> dict[str, Any]:
    """Run one benchmark script as a subprocess; return its status (the figures go to its own file)."""
    script, extra = BENCHMARKS[name]
    extra = SMOKE[name] if smoke else extra
    if threads is not None and name != "simulator":  # the simulator benchmark is one core by design
        extra = [*extra, "--threads", str(threads)]
    out = parts / f"{name}.json"
    # A figure file left by an earlier run must not pass for this run's if this one fails.
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / script), *extra, "--out", str(out)]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, timeout=timeout, check=False)
        status = "ok" if proc.returncode == 0 else f"failed with exit code {proc.returncode}"
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout:.0f} s"
    return {
        "status": status,
        "seconds": time.perf_counter() - start,
        "load_average_end": list(os.getloadavg()),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


# ------------------------------------------------------------------------------------- figures and targets


def _row(
    figure: str,
    name: str,
    value: float | None,
    measured: str,
    target: str,
    met: bool | None,
    target_value: float | None = None,
    unit: str = "",
) -> dict[str, Any]:
    return {
        "id": figure,
        "name": name,
        "value": value,
        "unit": unit,
        "measured": measured,
        "target": target,
        "target_value": target_value,
        "met": met,
    }


CONTEXT = "context, not a target"


def training_figures(t: dict[str, Any]) -> list[dict[str, Any]]:
    """The peer comparison (``bench_training``): context rows; the targets are the roofline's."""
    rows = []
    tol = t.get("context", {}).get("auc_tolerance", 0.01)
    for model, label in (("teacher", "teacher (MMoE+ESMM)"), ("student", "student (two tower)")):
        f = t[model]
        ours, peer = f["this_project"], f["torch_rechub"]
        rows.append(
            _row(
                f"{model}_speedup_vs_torch_rechub",
                f"{label}: training throughput vs torch-rechub (peer benchmark)",
                f["speedup"],
                f"{f['speedup']:.1f}x ({ours['samples_per_second']:,.0f} vs {peer['samples_per_second']:,.0f} "
                "samples/s)",
                CONTEXT,
                None,
                unit="x",
            )
        )
        # No loop beats its own model-only limit: this bounds any speed-up a faster data path could give.
        bound = ours["model_only_samples_per_second"] / peer["samples_per_second"]
        rows.append(
            _row(
                f"{model}_speedup_bound",
                f"{label}: bound on that ratio (our model-only limit / torch-rechub's loop)",
                bound,
                f"{bound:.1f}x ({ours['model_only_samples_per_second']:,.0f} / "
                f"{peer['samples_per_second']:,.0f} samples/s)",
                CONTEXT,
                None,
                unit="x",
            )
        )
        gap = min(f["auc_gap_click"], f["auc_gap_ctcvr"])
        rows.append(
            _row(
                f"{model}_auc_vs_torch_rechub",
                f"{label}: test AUC, this project vs torch-rechub",
                gap,
                f"click {ours['auc_click']:.4f} vs {peer['auc_click']:.4f}, "
                f"click+long read {ours['auc_ctcvr']:.4f} vs {peer['auc_ctcvr']:.4f}"
                + ("" if gap >= -tol else f" (more than {tol} below)"),
                f"{CONTEXT} (speed not bought with quality)",
                None,
                unit="AUC",
            )
        )
    rows.extend(_data_path_rows(t))
    return rows


def _data_path_rows(t: dict[str, Any]) -> list[dict[str, Any]]:
    d = t.get("data_path")
    if d is None:
        return []
    share = d["this_project_share_of_teacher_loop"]
    rows = [
        _row(
            "teacher_data_path_share",
            "teacher: data path alone, its share of the training loop (peer benchmark)",
            share,
            f"{share:.1%} ({d['this_project_samples_per_second']:,.0f} samples/s alone); torch-rechub "
            f"{d['torch_rechub_share_of_teacher_loop']:.0%} "
            f"({d['torch_rechub_samples_per_second']:,.0f} samples/s alone, "
            f"{d['torch_rechub_dataframe_samples_per_second']:,.0f} with DataFrame input)",
            CONTEXT,
            None,
            unit="share",
        )
    ]
    frame = d.get("torch_rechub_dataframe_teacher_loop_samples_per_second")
    if frame:
        ours = t["teacher"]["this_project"]["samples_per_second"]
        rows.append(
            _row(
                "teacher_speedup_vs_torch_rechub_dataframe",
                "teacher: throughput vs torch-rechub fed a DataFrame (its ranking examples' input)",
                ours / frame,
                f"{ours / frame:.1f}x ({ours:,.0f} vs {frame:,.0f} samples/s)",
                CONTEXT,
                None,
                unit="x",
            )
        )
    return rows


def roofline_figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    """``bench_roofline``: each model's share of the same-run GEMM rate and the loop's share of model-only."""
    g, cfg, targets = r["gemm"], r["config"], r["targets"]
    threads = f"{cfg['threads']} thread{'s' if cfg['threads'] != 1 else ''}"
    setting = f"batch {cfg['batch_size']}, {threads}"
    rows = [
        _row(
            "gemm_rate",
            f"machine: fp32 GEMM rate ({g['n']}x{g['n']}, {threads}, same run)",
            g["gflops"],
            f"{g['gflops']:.1f} GFLOP/s (probes {g['gflops_min']:.1f}-{g['gflops_max']:.1f})",
            "the reference of the shares below",
            None,
            unit="GFLOP/s",
        )
    ]
    for model, label in (("teacher", "teacher (MMoE+ESMM)"), ("student", "student (two tower)")):
        f = r["models"][model]
        only, loop, ceil = f["model_only"], f["loop"], f["gemm_ceiling"]
        target = targets["model_only_share_of_gemm"]
        rows.append(
            _row(
                f"{model}_model_only_share_of_gemm",
                f"{label}: model-only training step, share of the GEMM rate ({setting})",
                only["share_of_gemm"],
                f"{only['share_of_gemm']:.0%} ({only['gflops']:.1f} GFLOP/s = {only['samples_per_second']:,.0f} "
                f"samples/s x {only['flops_per_sample'] / 1e3:,.0f} kFLOP); its GEMMs alone reach "
                f"{ceil['share_of_gemm']:.0%}",
                f">= {target:.0%}",
                only["share_of_gemm"] >= target,
                target,
                "share",
            )
        )
        target = targets["loop_share_of_model_only"]
        rows.append(
            _row(
                f"{model}_loop_vs_model_only",
                f"{label}: whole training loop vs model-only ({setting})",
                loop["share_of_model_only"],
                f"{loop['share_of_model_only']:.0%} (median of paired runs; loop "
                f"{loop['samples_per_second']:,.0f} samples/s, {loop['share_of_gemm']:.0%} of the GEMM rate)",
                f">= {target:.0%}",
                loop["share_of_model_only"] >= target,
                target,
                "share",
            )
        )
    rows.extend(_variant_rows(r))
    return rows


def _variant_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Context: the fusion's speed-up and the peer-shaped teacher at batch 2048 and 4096."""
    variants = {v["name"]: v for v in r["variants"]}
    rows = []
    unfused = next((v for n, v in variants.items() if n.startswith("teacher, experts unfused")), None)
    if unfused is not None:
        speedup = 1 / unfused["relative_to_default"]
        rows.append(
            _row(
                "teacher_fusion_speedup",
                "teacher: fused experts and towers vs the per-expert loop (model-only)",
                speedup,
                f"{speedup:.2f}x ({r['models']['teacher']['model_only']['samples_per_second']:,.0f} vs "
                f"{unfused['samples_per_second']:,.0f} samples/s)",
                CONTEXT,
                None,
                unit="x",
            )
        )
    peer = [v for v in r["variants"] if v["model"] == "teacher_peer"]
    if peer:
        dims = r["config"]["peer_expert_dims"]
        rows.append(
            _row(
                "teacher_peer_shape_model_only",
                f"teacher with experts {dims} (the peer benchmark's): model-only by batch size",
                peer[-1]["samples_per_second"],
                "; ".join(
                    f"batch {v['batch_size']}: {v['samples_per_second']:,.0f} samples/s, "
                    f"{v['share_of_gemm']:.0%} of the GEMM rate"
                    for v in peer
                ),
                CONTEXT,
                None,
                unit="samples/s",
            )
        )
    return rows


def scale_figures(s: dict[str, Any]) -> list[dict[str, Any]]:
    """``bench_scale``: time and peak memory per size on the sharded path, how time per impression grows,
    the KuaiRand-27K extrapolation, and the in-memory path as context."""
    from dmtl.shards import AUTO_SHARDS_ABOVE

    rows = []
    cap = s["targets"]["max_peak_rss_gib"]
    for p in s["points"]:
        n = p["impressions"]
        load = p.get("load_average_start", [float("nan")])[0]
        rows.append(
            _row(
                f"scale_{round(n / 1e6)}m",
                f"scale (sharded data path): simulate to retrieval at {n / 1e6:.1f}M impressions",
                p["peak_rss_gib"],
                f"{p['seconds']:.0f} s ({p['microseconds_per_impression']:.1f} us per impression), peak memory "
                f"{p['peak_rss_gib']:.2f} GiB (1-min load at start {load:.1f})",
                f"peak memory < {cap:.0f} GiB",
                p["peak_rss_gib"] < cap,
                cap,
                "GiB",
            )
        )
    g = s.get("growth", {})
    if "per_impression_ratio" in g:
        small, big = (n / 1e6 for n in g["per_impression_ratio_sizes"])
        limit = s["targets"]["max_per_impression_ratio"]
        rows.append(
            _row(
                "scale_time_per_impression",
                f"scale: time per impression at {big:g}M over {small:g}M (sharded)",
                g["per_impression_ratio"],
                f"{g['per_impression_ratio']:.3f} (log-log slope of time over all sizes "
                f"{g['time_loglog_slope']:.2f}; marginal {g['marginal_microseconds_per_impression']:.1f} us "
                "per impression)",
                f"<= {limit} (within {limit - 1:.0%})",
                g["per_impression_ratio"] <= limit,
                limit,
                "ratio",
            )
        )
        k = g["kuairand_27k"]
        rows.append(
            _row(
                "scale_kuairand_27k_estimate",
                f"scale: estimated time for KuaiRand-27K's {k['impressions'] / 1e6:.0f}M impressions (sharded)",
                k["estimated_hours"],
                f"{k['estimated_hours']:.1f} h ({k['method']})",
                CONTEXT,
                None,
                unit="h",
            )
        )
    for p in s.get("memory_points", []):
        n = p["impressions"]
        rows.append(
            _row(
                f"scale_memory_{round(n / 1e6)}m",
                f"scale (in-memory data path): simulate to retrieval at {n / 1e6:.1f}M impressions",
                p["peak_rss_gib"],
                f"{p['seconds']:.0f} s ({p['microseconds_per_impression']:.1f} us per impression), peak memory "
                f"{p['peak_rss_gib']:.2f} GiB",
                f"{CONTEXT} (the default below {AUTO_SHARDS_ABOVE / 1e6:.0f}M impressions)",
                None,
                unit="GiB",
            )
        )
    return rows


def retrieval_figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Exact and approximate search over the 1M-item corpus."""
    op, exact = r["operating_point"], r["exact"]
    setting = ", ".join(f"{k}={op[k]}" for k in ("nlist", "nprobe", "m", "ef_search") if k in op)
    min_recall = r["targets"]["min_recall_at_100"]
    return [
        _row(
            "retrieval_exact_qps",
            f"retrieval: exact search, {r['n_items'] / 1e6:g}M items",
            exact["queries_per_second"],
            f"{exact['queries_per_second']:,.0f} queries/s",
            "the reference (recall 1 by definition)",
            None,
            unit="queries/s",
        ),
        _row(
            "retrieval_ann",
            f"retrieval: approximate search ({op['kind']}, {setting}), {r['n_items'] / 1e6:g}M items",
            op["recall_at_100"],
            f"{op['queries_per_second']:,.0f} queries/s ({op['speedup_vs_exact']:.1f}x exact), "
            f"recall@100 {op['recall_at_100']:.4f}",
            f"recall@100 >= {min_recall} and faster than exact",
            op["recall_at_100"] >= min_recall and op["speedup_vs_exact"] > 1.0,
            min_recall,
            "recall@100",
        ),
    ]


def simulator_figures(s: dict[str, Any]) -> list[dict[str, Any]]:
    """The simulator's speed (``bench_simulator``, one core)."""
    per_million = s["seconds"] * 1e6 / s["impressions"]
    return [
        _row(
            "simulator_seconds_per_million",
            "simulator: seconds per million impressions (one core)",
            per_million,
            f"{per_million:.1f} s ({s['impressions_per_second']:,.0f} impressions/s, peak "
            f"{s['peak_rss_mib']:,.0f} MiB)",
            f"<= {SIMULATOR_TARGET_SECONDS:.0f} s (a million impressions in seconds)",
            per_million <= SIMULATOR_TARGET_SECONDS,
            SIMULATOR_TARGET_SECONDS,
            "s",
        )
    ]


def study_figures(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Wall-clock of the whole default run, ``dvc repro`` from nothing (``bench_study``)."""
    c, target = s["config"], s["target_seconds"]
    slowest = sorted(s["stages"].items(), key=lambda kv: -kv[1])[:3]
    return [
        _row(
            "study_wall_clock",
            f"whole study: `dvc repro` from scratch ({c['preset']} preset, {len(c['students'])} students x "
            f"{len(c['seeds'])} seeds, {len(c['sweeps'])} sweeps)",
            s["total_seconds"],
            f"{s['total_seconds']:.0f} s: main comparison {s['main_comparison_seconds']:.0f} s, sweeps "
            f"{s['sweeps_seconds']:.0f} s; slowest stages " + ", ".join(f"{k} {v:.0f} s" for k, v in slowest),
            f"<= {target:.0f} s on 2 cores",
            s["total_seconds"] <= target,
            target,
            "s",
        )
    ]


FIGURES: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "simulator": simulator_figures,
    "roofline": roofline_figures,
    "training": training_figures,
    "retrieval": retrieval_figures,
    "scale": scale_figures,
    "study": study_figures,
}


def _still_readable(name: str, kept: dict[str, Any]) -> bool:
    """Whether figures measured by an earlier version of a benchmark fit its current figure table."""
    try:
        FIGURES[name](kept)
    except (KeyError, TypeError, IndexError):
        return False
    return True


def collect(
    runs: dict[str, dict[str, Any]],
    load: dict[str, Any] | None,
    parts: Path = PARTS,
    results_file: Path = RESULTS,
    threads: int | None = None,
) -> dict[str, Any]:
    """Assemble the results file from the per-benchmark files; a benchmark neither rerun nor on disk keeps its
    figures from the previous results file, and one with neither is listed as not run."""
    from dmtl.io import read_json, write_json

    previous = read_json(results_file) if results_file.exists() else {}
    figures: list[dict[str, Any]] = []
    benchmarks: dict[str, Any] = {}
    all_runs: dict[str, dict[str, Any]] = {}
    for name in BENCHMARKS:
        part = parts / f"{name}.json"
        run = dict(runs.get(name) or previous.get("runs", {}).get(name) or {})
        kept = (previous.get("benchmarks") or {}).get(name)
        if part.exists():
            benchmarks[name] = read_json(part)
            figures.extend(FIGURES[name](benchmarks[name]))
            if name not in runs:  # collected from its file: that file is the benchmark's last good run
                run["status"] = "ok"
            run.setdefault("status", "ok")
        elif kept is not None and name not in runs and _still_readable(name, kept):
            # Not rerun and its file is gone (a fresh checkout): keep the figures measured last time.
            benchmarks[name] = kept
            figures.extend(FIGURES[name](kept))
        else:
            benchmarks[name] = None
            if run.get("status", "ok") == "ok":
                run["status"] = "not run"
        all_runs[name] = run
    results = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "load_average": load or previous.get("load_average"),
        # None: each benchmark ran with its own default (2 threads for torch and faiss).
        "threads": threads if load is not None else previous.get("threads"),
        "runs": all_runs,
        "figures": figures,
        "benchmarks": benchmarks,
    }
    write_json(results, results_file)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None)
    parser.add_argument("--collect", action="store_true", help="only rebuild results.json from the files")
    parser.add_argument("--max-load", type=float, default=1.0, help="wait until the 1-min load is this low")
    parser.add_argument("--max-wait", type=float, default=900.0, help="wait at most this many seconds")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per benchmark")
    parser.add_argument(
        "--threads",
        default=None,
        help="torch and faiss threads (default: each benchmark's own, 2); 'auto': 2 if the load fell to "
        "--max-load, else 1",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="small sizes; write under benchmarks/results/smoke"
    )
    args = parser.parse_args(argv)
    parts = PARTS / "smoke" if args.smoke else PARTS
    results_file = parts / "results.json" if args.smoke else RESULTS
    runs: dict[str, dict[str, Any]] = {}
    load = None
    threads = None if args.threads in (None, "auto") else int(args.threads)
    if not args.collect:
        load = wait_for_quiet(args.max_load, args.max_wait)
        if args.threads == "auto" and load["at_start"][0] > args.max_load:
            # Two OpenMP threads per process on two busy cores wait on each other at every parallel region
            # (slowdowns of 10x and more were seen here); one thread per process degrades gracefully.
            threads = 1
            load["threads_reason"] = (
                f"load {load['at_start'][0]:.2f} > {args.max_load}: one thread per process"
            )
        elif threads is not None:
            load["threads_reason"] = f"--threads {threads}"
        for name in args.only or list(BENCHMARKS):
            start_load = list(os.getloadavg())
            timeout = max(args.timeout, MIN_TIMEOUT.get(name, 0.0))
            runs[name] = {
                "load_average_start": start_load,
                **run_benchmark(name, timeout, parts, args.smoke, threads),
            }
    results = collect(runs, load, parts, results_file, threads)
    width = max(len(r["name"]) for r in results["figures"]) if results["figures"] else 0
    for r in results["figures"]:
        flag = {True: "met", False: "NOT MET", None: "info"}[r["met"]]
        print(f"{r['name']:<{width}}  {r['measured']}  [target {r['target']}: {flag}]")
    failed = [n for n, r in results["runs"].items() if r["status"] != "ok"]
    if failed:
        print(f"not run or failed: {failed}")
    print(f"wrote {results_file}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
