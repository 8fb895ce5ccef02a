"""Per-stage wall-clock times of the last run, read from the executed notebooks' papermill metadata.

``python -m dmtl.timings`` writes ``metrics/timings.json`` (stage -> seconds, and the total) and prints the
table. Times are measurements of one run on one machine, not assertions.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from dmtl.io import write_json


def notebook_seconds(path: Path) -> float | None:
    meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
    return meta.get("duration")


def notebook_span(path: Path) -> tuple[datetime, datetime] | None:
    """Start and end time of an executed notebook (papermill metadata), if recorded."""
    meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
    if not meta.get("start_time") or not meta.get("end_time"):
        return None
    return datetime.fromisoformat(meta["start_time"]), datetime.fromisoformat(meta["end_time"])


def collect(root: str | Path = ".") -> dict[str, Any]:
    root = Path(root)
    stages: dict[str, float] = {}
    for nb in sorted((root / "reports").glob("*.ipynb")):
        seconds = notebook_seconds(nb)
        if seconds is not None and not nb.name.endswith(".FAILED.ipynb"):
            stages[nb.stem] = round(float(seconds), 1)
    for sweep in sorted((root / "artifacts" / "sweeps").glob("*")):
        # Points may run side by side (sweeps.workers): the sweep's time is the span from the first
        # point's start to the last one's end, not the sum of their durations.
        spans = [notebook_span(nb) for nb in sweep.glob("*/sweep_point.ipynb")]
        spans = [s for s in spans if s is not None]
        if spans:
            seconds = (max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds()
            stages[f"sweep_{sweep.name}"] = round(seconds, 1)
    main = [k for k in stages if not k.startswith(("sweep_", "05_report", "tune", "benchmarks"))]
    return {
        "stages": stages,
        "main_comparison_seconds": round(sum(stages[k] for k in main), 1),
        "total_seconds": round(sum(stages.values()), 1),
    }


def main() -> int:
    out = collect(".")
    write_json(out, Path("metrics") / "timings.json")
    width = max((len(k) for k in out["stages"]), default=10)
    for k, v in out["stages"].items():
        print(f"{k:<{width}}  {v:8.1f} s")
    print(f"{'main comparison':<{width}}  {out['main_comparison_seconds']:8.1f} s")
    print(f"{'total':<{width}}  {out['total_seconds']:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
