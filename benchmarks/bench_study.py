"""Wall-clock time of the whole default study: ``dvc repro`` from nothing, in a fresh copy of the repository.

Usage::

    python benchmarks/bench_study.py --out benchmarks/results/study.json
    python benchmarks/bench_study.py --set data.preset=tiny --set train.seeds=[0,1]   # a quick smoke run

The files git would see (tracked, plus untracked ones that are not ignored) are copied into a temporary
folder, which becomes a fresh git repository with no DVC cache and no stage outputs, so every stage of
``dvc.yaml`` runs (the frozen ``tune`` stage excepted, as in ``make study``). The clock covers everything a
user waits for: process starts, imports, papermill kernels, training, HTML rendering and DVC's own
hashing. Each stage's time runs from DVC's ``Running stage`` line to the next one (the last stage ends with
``dvc repro``). The copy imports its own ``src/`` (``PYTHONPATH``), so the code measured is the copy's.

The per-stage table is written with the total. No assertion on speed: ``met`` in results.json says whether
the run reached the target (10 minutes on 2 cores) that time.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 600.0
MAIN_STAGES = ("prepare", "teacher", "student@", "evaluate")
STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


def snapshot(dst: Path, overrides: dict[str, Any]) -> None:
    """Copy the working tree git sees into ``dst`` and make it a fresh git repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = Path(raw.decode())
        src = REPO / rel
        if not src.is_file():  # deleted but still in the index
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)
    (dst / "data").mkdir(exist_ok=True)  # data.dvc tracks the (empty by default) raw-data folder
    if overrides:
        from dmtl import params as P

        params = P.load(dst / "params.yaml", overrides).to_dict()
        (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=dst, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=dst, check=True)


def run_repro(repo: Path, log_path: Path) -> dict[str, Any]:
    """Run ``dvc repro`` in ``repo``, timestamping each stage from its ``Running stage`` line."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(repo / "src"),
    }
    starts: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro"],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            m = STAGE_LINE.match(line)
            if m:
                starts.append((m.group(1), time.perf_counter() - t0))
                print(f"{starts[-1][1]:7.1f} s  {m.group(1)}", flush=True)
        code = proc.wait()
    total = time.perf_counter() - t0
    ends = [s for _, s in starts[1:]] + [total]
    stages = {name: round(end - start, 1) for (name, start), end in zip(starts, ends, strict=True)}
    return {"returncode": code, "total_seconds": round(total, 1), "stages": stages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params override")
    parser.add_argument("--threads", type=int, default=None, help="train.threads (default: params.yaml)")
    parser.add_argument("--keep", type=Path, default=None, help="run here and keep it (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.threads is not None:
        overrides["train.threads"] = args.threads
    load_start = os.getloadavg()
    work = args.keep or Path(tempfile.mkdtemp(prefix="dmtl-study-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        snapshot(work, overrides)
        run = run_repro(work, work / "repro.log")
        if run["returncode"] != 0:
            tail = (work / "repro.log").read_text()[-3000:]
            print(tail, file=sys.stderr)
            return 1
        from dmtl import params as P

        params = P.load(work / "params.yaml").to_dict()
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    stages = run["stages"]
    figures = {
        **run,
        "main_comparison_seconds": round(sum(v for k, v in stages.items() if k.startswith(MAIN_STAGES)), 1),
        "sweeps_seconds": round(sum(v for k, v in stages.items() if k.startswith("sweep@")), 1),
        "target_seconds": TARGET_SECONDS,
        "config": {
            "preset": params["data"]["preset"],
            "seeds": params["train"]["seeds"],
            "students": params["students"]["names"],
            "sweeps": sorted(params["sweeps"]["grid"]),
            "threads": params["train"]["threads"],
            "overrides": dict(overrides),
        },
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    width = max(map(len, stages), default=5)
    for name, seconds in stages.items():
        print(f"{name:<{width}}  {seconds:7.1f} s")
    print(f"{'total':<{width}}  {run['total_seconds']:7.1f} s (target <= {TARGET_SECONDS:.0f} s)")
    if args.out is not None:
        from dmtl.io import write_json

        write_json(figures, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
