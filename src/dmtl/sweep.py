"""Sweeps: move one parameter over a grid, rerun the stages it affects, write one tidy table and a plot.

``python -m dmtl.sweep NAME`` runs the sweep ``sweeps.grid.NAME`` of ``params.yaml``;
``python -m dmtl.sweep --param students.dmtl.hard_weight --values 0 0.5 1`` runs an ad-hoc one.
Each grid value executes ``notebooks/sweep_point.ipynb`` with papermill into ``artifacts/sweeps/NAME/<value>/``
(so every point leaves a readable notebook; runs live under ``artifacts/sweeps/NAME/``), starting at the first stage the parameter affects and
linking earlier stages' outputs from the main run. The result is ``sweeps/NAME/results.csv``, one row per
(value, model, metric) with mean, interval and per-seed values, and ``sweeps/NAME/summary.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dmtl import params as P
from dmtl.io import atomic_path
from dmtl.pipeline import LOWER_IS_BETTER_PREFIXES, Paths, run_evaluate, run_prepare, run_student, run_teacher

STAGES = ("prepare", "teacher", "students", "evaluate")


def first_stage(param: str) -> str:
    """The earliest stage whose inputs ``param`` changes."""
    group = param.split(".", 1)[0]
    if group == "data":
        return "prepare"
    if group in ("teacher", "train"):
        return "teacher"
    if group == "students":
        return "students"
    if group == "eval":
        return "evaluate"
    raise P.ParamsError(f"cannot sweep {param!r}: choose a key under data, train, teacher, students or eval")


def _link_earlier(base_root: Path, root: Path, start: str) -> None:
    """Reuse the main run's outputs of the stages before ``start`` (symlinks; nothing is copied)."""
    base, here = Paths(base_root), Paths(root)
    needed = []
    if STAGES.index(start) > 0:
        needed.append((base.data, here.data))
    if STAGES.index(start) > 1:
        needed.append((base.root / "artifacts" / "teacher", here.root / "artifacts" / "teacher"))
    for src, dst in needed:
        if not src.exists():
            raise FileNotFoundError(f"{src} is missing: run the main pipeline (dvc repro) before this sweep")
        _link_dir(src, dst)


def _link_dir(src: Path, dst: Path) -> None:
    """A relative symlink ``dst`` -> ``src`` (kept if already there)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        return
    os.symlink(os.path.relpath(src.resolve(), dst.parent.resolve()), dst)


def run_point(
    params: Mapping[str, Any],
    root: str | Path,
    start: str = "prepare",
    base_root: str | Path = ".",
    param: str = "",
) -> pd.DataFrame:
    """Run the stages from ``start`` on into ``root``; return the per-seed metrics table.

    For a student's own parameter (``students.<name>.*``) only that student is retrained; the others are
    the main run's, linked, when the seeds are the main run's (their inputs did not change).
    """
    root = Path(root)
    base_root = Path(base_root)
    _link_earlier(base_root, root, start)
    i = STAGES.index(start)
    if i <= 0:
        run_prepare(params, root)
    if i <= 1:
        run_teacher(params, root)
    if i <= 2:
        retrain = list(params["students"]["names"])
        owner = param.split(".")[1] if param.startswith("students.") and param.count(".") >= 2 else None
        base_params_file = base_root / "params.yaml"
        if owner in retrain and owner != "common" and base_params_file.exists():
            base_seeds = P.load(base_params_file)["train"]["seeds"]
            if list(base_seeds) == list(params["train"]["seeds"]):
                for name in retrain:
                    if name != owner and (base_root / "artifacts" / "students" / name).exists():
                        _link_dir(
                            base_root / "artifacts" / "students" / name,
                            root / "artifacts" / "students" / name,
                        )
                retrain = [owner]
        for name in retrain:
            run_student(params, name, root)
    run_evaluate(params, root)
    return pd.read_parquet(Paths(root).metrics / "per_seed.parquet")


def _value_dir(value: Any) -> str:
    return str(value).replace("/", "_").replace(" ", "")


def point_overrides(params: Mapping[str, Any], param: str, value: Any) -> dict[str, Any]:
    """The overrides of one grid point: the swept value, and the sweep's own seeds and students."""
    sw = params["sweeps"]
    names = list(sw["students"])
    if params["eval"]["reference"] not in names:
        names.append(params["eval"]["reference"])
    # Teacher variants are shown by the teacher stage; a sweep trains only the default teacher.
    return {param: value, "train.seeds": list(sw["seeds"]), "students.names": names, "teacher.variants": []}


def _get(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _same_setting(base: Mapping[str, Any], point: Mapping[str, Any], param: str, value: Any) -> bool:
    """Whether the grid point sets ``param`` as the main run does (simulator knobs: same effective config)."""
    if param.startswith("data.sim.") and base["data"]["source"] == "simulated":
        from dmtl.simulator import make_config

        d0, d1 = base["data"], point["data"]
        return make_config(d0["preset"], d0["sim"]) == make_config(d1["preset"], d1["sim"])
    return _get(base, param) == value


def reuse_main_run(
    base: Mapping[str, Any], point: Mapping[str, Any], param: str, value: Any, base_root: Path
) -> pd.DataFrame | None:
    """The main run's per-seed table restricted to the sweep's students, when the point equals the main run."""
    per_seed = Paths(base_root).metrics / "per_seed.parquet"
    if not per_seed.exists() or not _same_setting(base, point, param, value):
        return None
    if list(point["train"]["seeds"]) != list(base["train"]["seeds"]):
        return None
    if not set(point["students"]["names"]) <= set(base["students"]["names"]) or param.startswith(
        "teacher.variants"
    ):
        return None
    table = pd.read_parquet(per_seed)
    return table[table["model"].isin([*point["students"]["names"], "teacher"])].reset_index(drop=True)


def run_sweep(
    param: str,
    values: Sequence[Any],
    out_dir: str | Path,
    runs_dir: str | Path,
    params_file: str | Path = "params.yaml",
    base_root: str | Path = ".",
    use_papermill: bool = True,
    extra_overrides: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Run one sweep and write ``results.csv`` and ``summary.png`` into ``out_dir``."""
    from dmtl.notebook import execute
    from dmtl.stats import mean_ci

    base = P.load(params_file, dict(extra_overrides or {}))
    start = first_stage(param)
    out_dir = Path(out_dir)
    runs = Path(runs_dir)
    if runs.exists():
        shutil.rmtree(runs)  # a sweep always starts clean: no half-finished grid point is reused
    tables: list[pd.DataFrame | None] = [None] * len(values)
    todo: list[tuple[int, Any, Path, dict[str, Any]]] = []
    for i, value in enumerate(values):
        overrides = {**(extra_overrides or {}), **point_overrides(base, param, value)}
        point = P.apply_overrides(base, overrides)  # fail before any work on a bad value
        reused = reuse_main_run(base, point, param, value, Path(base_root))
        if reused is not None:
            # This grid point is the main run's configuration: its per-seed metrics are already computed
            # (same params, same seeds, deterministic stages), so they are read, not recomputed.
            tables[i] = reused.assign(value=str(value))
        else:
            todo.append((i, value, runs / _value_dir(value), overrides))
    # Points run side by side (sweeps.workers), each with its share of train.threads, so two points on two
    # cores each keep one core busy instead of both waiting on every small parallel region of one point.
    parallel = min(int(base["sweeps"]["workers"]), len(todo)) if use_papermill else 1
    if parallel > 1:
        threads = max(1, int(base["train"]["threads"]) // parallel)
        todo = [(i, v, root, {**o, "train.threads": threads}) for i, v, root, o in todo]

    def run_one(item: tuple[int, Any, Path, dict[str, Any]]) -> tuple[int, pd.DataFrame]:
        i, value, root, overrides = item
        if use_papermill:
            execute(
                Path(__file__).resolve().parents[2] / "notebooks" / "sweep_point.ipynb"
                if not Path("notebooks/sweep_point.ipynb").exists()
                else "notebooks/sweep_point.ipynb",
                root / "sweep_point",
                {
                    "params_file": str(params_file),
                    "root": str(root),
                    "overrides": json.dumps(overrides),
                    "start": start,
                    "base_root": str(Path(base_root).resolve()),
                    "param": param,
                },
                html=True,
            )
            table = pd.read_parquet(Paths(root).metrics / "per_seed.parquet")
        else:
            table = run_point(P.apply_overrides(base, overrides), root, start, base_root, param)
        return i, table.assign(value=str(value))

    if parallel > 1:
        from concurrent.futures import ThreadPoolExecutor

        # Each point is its own kernel process; the threads here only wait on them.
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            done = list(pool.map(run_one, todo))
    else:
        done = [run_one(item) for item in todo]
    for i, table in done:
        tables[i] = table
    per_seed = pd.concat(tables, ignore_index=True)
    level = base["eval"]["ci_level"]
    rows = []
    metrics = [c for c in per_seed.columns if c not in ("model", "seed", "value")]
    for (value, model), g in per_seed.groupby(["value", "model"], sort=False):
        for metric in metrics:
            if g[metric].notna().any():
                ci = mean_ci(g[metric].to_numpy(), level)
                rows.append(
                    {
                        "param": param,
                        "value": value,
                        "model": model,
                        "metric": metric,
                        "mean": ci["mean"],
                        "ci_low": ci["ci_low"],
                        "ci_high": ci["ci_high"],
                        "n": ci["n"],
                        "higher_is_better": not metric.startswith(LOWER_IS_BETTER_PREFIXES),
                        "values": json.dumps([float(x) for x in g[metric]]),
                    }
                )
    results = pd.DataFrame(rows)
    with atomic_path(out_dir / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    from dmtl import plots
    from dmtl.report import SWEEP_METRICS

    shown = [m for m in SWEEP_METRICS if m in set(results["metric"])]
    plots.sweep_summary(results[results["model"] != "teacher"], param, shown, out_dir / "summary.png")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run a parameter sweep of the DMTL study.")
    ap.add_argument("name", nargs="?", help="a sweep of sweeps.grid in params.yaml")
    ap.add_argument("--param", help="dotted parameter key for an ad-hoc sweep")
    ap.add_argument("--values", nargs="+", help="values (YAML) for an ad-hoc sweep")
    ap.add_argument("--params-file", default="params.yaml")
    ap.add_argument("--out", help="output folder (default sweeps/NAME)")
    ap.add_argument(
        "--in-process", action="store_true", help="skip papermill: run the stages in this process"
    )
    args = ap.parse_args(argv)
    import yaml

    try:
        if args.param:
            param, values = args.param, [yaml.safe_load(v) for v in args.values or []]
            name = args.name or param.replace(".", "_")
        else:
            grid = P.load(args.params_file)["sweeps"]["grid"]
            if args.name not in grid:
                raise P.ParamsError(f"unknown sweep {args.name!r}; sweeps.grid has {sorted(grid)}")
            param, values, name = grid[args.name]["param"], grid[args.name]["values"], args.name
        out = Path(args.out or Path("sweeps") / name)
        runs = Path("artifacts") / "sweeps" / out.name
        res = run_sweep(param, values, out, runs, args.params_file, use_papermill=not args.in_process)
    except (P.ParamsError, FileNotFoundError) as e:
        print(f"ERROR {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a failed notebook: its cell's error, not a traceback wall
        from dmtl.notebook import NotebookFailed

        if isinstance(e, NotebookFailed):
            print(f"ERROR {e}", file=sys.stderr)
            return 1
        raise
    print(f"wrote {out / 'results.csv'} ({len(res)} rows) and {out / 'summary.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
