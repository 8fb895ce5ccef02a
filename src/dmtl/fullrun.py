"""The full run: the study's paper-grade numbers, on several simulated worlds with more seeds.

``make full`` (``python -m dmtl.fullrun``) runs the whole study (every stage notebook, through the stage table)
once per simulated world of ``full.yaml`` (``data.sim_seed``), with that file's overrides (more seeds, wider
sweep grids), into ``results/full/world_<seed>/``; the sweeps (the regime map and the ablations) run on the
first world. Each world's rendered report and metrics stay under its folder, and
``results/full/metrics/worlds.json`` gathers, for each headline metric, ``dmtl`` against the strongest
non-distilled model in every world: the per-world difference with its bootstrap interval and Holm-corrected
verdict, and across worlds the mean difference with a t-interval over the worlds and how many worlds agree.
The README quotes that file (``python -m dmtl.readme``).

The default ``dvc repro`` is the same study on one world with fewer seeds and smaller grids, sized to run in
minutes; the full run takes about an hour on two cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dmtl.io import read_json, write_json

FULL_FILE = "full.yaml"
OUT = Path("results") / "full"


def read_full(path: str | Path = FULL_FILE) -> tuple[list[int], dict[str, Any]]:
    """The worlds (simulator seeds) and the overrides of the full run."""
    spec = yaml.safe_load(Path(path).read_text())
    worlds = [int(w) for w in spec["worlds"]]
    if not worlds or len(set(worlds)) != len(worlds):
        raise ValueError(f"{path}: worlds must be distinct simulator seeds, got {spec['worlds']!r}")
    return worlds, dict(spec.get("overrides", {}))


def world_root(out: Path, seed: int) -> Path:
    return out / f"world_{seed}"


def run(out: Path = OUT, full_file: str | Path = FULL_FILE, params_file: str = "params.yaml") -> Path:
    """Run the study on every world (sweeps on the first), then gather the worlds; return the gathered file."""
    from dmtl.realdata import run_study

    worlds, overrides = read_full(full_file)
    for i, seed in enumerate(worlds):
        run_study(world_root(out, seed), {**overrides, "data.sim_seed": seed}, params_file, sweeps=i == 0)
    return gather(out, worlds)


def gather(out: Path, worlds: list[int]) -> Path:
    """``worlds.json``: per headline metric, ``dmtl`` against the strongest non-distilled model in each world
    (difference, bootstrap interval, Holm-corrected verdict) and across the worlds."""
    from scipy import stats

    from dmtl.report import _comparison, primary_metrics, strongest_competitor

    per_world = {seed: read_json(world_root(out, seed) / "metrics" / "metrics.json") for seed in worlds}
    first = per_world[worlds[0]]
    metrics: dict[str, Any] = {}
    for metric in primary_metrics(first):
        rows = {}
        for seed, summary in per_world.items():
            other = strongest_competitor(summary, metric)
            d = _comparison(summary, other, metric) if other else None
            if d is not None:
                rows[str(seed)] = {
                    "strongest": other,
                    "reference": summary["models"][summary["reference"]][metric]["mean"],
                    "competitor": summary["models"][other][metric]["mean"],
                    **{k: d.get(k) for k in ("mean", "ci_low", "ci_high", "p_holm", "decision", "verdict")},
                }
        diffs = np.array([r["mean"] for r in rows.values()], dtype=float)
        n = len(diffs)
        half = float(stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        decisions = [r["decision"] for r in rows.values()]
        metrics[metric] = {
            "worlds": rows,
            "mean": float(diffs.mean()) if n else float("nan"),
            "ci_low": float(diffs.mean() - half) if n > 1 else None,
            "ci_high": float(diffs.mean() + half) if n > 1 else None,
            "n_worlds": n,
            "decisions": {code: decisions.count(code) for code in dict.fromkeys(decisions)},
        }
    meta = {k: first["meta"][k] for k in ("ks", "source", "simulated", "reference") if k in first["meta"]}
    meta |= {
        "worlds": worlds,
        "seeds": first["meta"]["seeds"],
        "n_boot": first.get("method", {}).get("n_boot"),
    }
    path = out / "metrics" / "worlds.json"
    write_json({"meta": meta, "metrics": metrics}, path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--full-file", default=FULL_FILE)
    ap.add_argument("--params-file", default="params.yaml")
    ap.add_argument(
        "--gather-only", action="store_true", help="only rebuild worlds.json from the worlds' runs"
    )
    args = ap.parse_args(argv)
    from dmtl.cli import run_main

    def body() -> int:
        if args.gather_only:
            path = gather(args.out, read_full(args.full_file)[0])
        else:
            path = run(args.out, args.full_file, args.params_file)
        print(f"wrote {path}")
        return 0

    return run_main("dmtl.fullrun", body, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
