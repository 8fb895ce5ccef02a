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
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dmtl import dag
from dmtl import params as P
from dmtl.config import Study
from dmtl.io import atomic_path, link_dir
from dmtl.paths import Paths
from dmtl.stages.evaluate import run_evaluate
from dmtl.stages.prepare import run_prepare
from dmtl.stages.student import run_student
from dmtl.stages.teacher import run_teacher
from dmtl.vocab import higher_is_better

RUNNERS: dict[str, Callable[..., Any]] = {
    "prepare": run_prepare,
    "teacher": run_teacher,
    "student": run_student,
    "evaluate": run_evaluate,
}
"""The stages a grid point runs, in the order of the stage table (:data:`dmtl.dag.STAGES`)."""
ORDER: tuple[str, ...] = tuple(s.name for s in dag.STAGES if s.name in RUNNERS)


def _covers(stage_param: str, param: str) -> bool:
    """Whether a stage that reads ``stage_param`` (``data``, ``students.${item}``...) reads ``param``."""
    head = stage_param.replace("${item}", param.split(".")[1] if param.count(".") >= 1 else "")
    return param == head or param.startswith(head + ".")


def first_stage(param: str) -> str:
    """The earliest stage of the stage table that reads ``param``."""
    for name in ORDER:
        if any(_covers(p, param) for p in dag.stage(name).params):
            return name
    raise P.ParamsError(f"cannot sweep {param!r}: choose a key under data, train, teacher, students or eval")


def _link_earlier(base_root: Path, root: Path, start: str) -> None:
    """Reuse the main run's outputs of the stages before ``start`` (symlinks; nothing is copied)."""
    base, here = Paths(base_root), Paths(root)
    needed = []
    if ORDER.index(start) > ORDER.index("prepare"):
        needed.append((base.data, here.data))
    if ORDER.index(start) > ORDER.index("teacher"):
        needed.append((base.teachers, here.teachers))
    for src, dst in needed:
        if not src.exists():
            raise FileNotFoundError(f"{src} is missing: run the main pipeline (dvc repro) before this sweep")
        link_dir(src, dst)


def _students_to_train(study: Study, param: str, base_root: Path, root: Path) -> list[str]:
    """The students a point retrains: for a student's own parameter (``students.<name>.*``) only that one;
    the others are the main run's, linked, when the seeds are the main run's (their inputs did not change)."""
    names = list(study.students.names)
    owner = param.split(".")[1] if param.startswith("students.") and param.count(".") >= 2 else None
    base_file = base_root / "params.yaml"
    if owner not in names or not base_file.exists():
        return names
    if list(P.load(base_file).train.seeds) != list(study.train.seeds):
        return names
    base = Paths(base_root)
    for name in names:
        if name != owner and base.students.joinpath(name).exists():
            link_dir(base.students / name, Paths(root).students / name)
    return [owner]


def run_point(
    study: Study, root: str | Path, start: str = "prepare", base_root: str | Path = ".", param: str = ""
) -> pd.DataFrame:
    """Run the stages from ``start`` on into ``root``; return the per-seed metrics table."""
    root, base_root = Path(root), Path(base_root)
    if param:  # progress lines of parallel grid points say which point they belong to
        from dmtl.progress import set_context

        set_context(f"{param}={_get(study.to_dict(), param)}")
    _link_earlier(base_root, root, start)
    for name in ORDER[ORDER.index(start) :]:
        if name == "student":
            for student in _students_to_train(study, param, base_root, root):
                run_student(study, student, root)
        else:
            RUNNERS[name](study, root)
    return pd.read_parquet(Paths(root).metrics / "per_seed.parquet")


def _value_dir(value: Any) -> str:
    """A grid value as a folder name inside the sweep's runs folder: never a path out of it.

    Characters other than letters, digits and ``_ . , = + - [ ]`` become ``_`` (so ``/``, ``..`` separators,
    quotes and HTML cannot shape the path), and a name of dots only is prefixed.
    """
    name = re.sub(r"[^\w.,=+\-\[\]]", "_", str(value).replace(" ", ""))
    return f"_{name}" if set(name) <= {"."} else name


def point_overrides(study: Study, param: str, value: Any) -> dict[str, Any]:
    """The overrides of one grid point: the swept value, and the sweep's own seeds and students."""
    sw = study.sweeps
    names = list(sw.students)
    if study.eval.reference not in names:
        names.append(study.eval.reference)
    # Teacher variants are shown by the teacher stage; a sweep trains only the default teacher.
    return {param: value, "train.seeds": list(sw.seeds), "students.names": names, "teacher.variants": []}


def _get(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _same_setting(base: Study, point: Study, param: str, value: Any) -> bool:
    """Whether the grid point sets ``param`` as the main run does (simulator knobs: same effective config)."""
    if param.startswith("data.sim.") and base.data.source == "simulated":
        from dmtl.sources.simulator.config import make_config

        d0, d1 = base.data, point.data
        return make_config(d0.preset, d0.sim) == make_config(d1.preset, d1.sim)
    return _get(base.to_dict(), param) == value


def reuse_main_run(base: Study, point: Study, param: str, value: Any, base_root: Path) -> pd.DataFrame | None:
    """The main run's per-seed table restricted to the sweep's students, when the point equals the main run."""
    per_seed = Paths(base_root).metrics / "per_seed.parquet"
    if not per_seed.exists() or not _same_setting(base, point, param, value):
        return None
    if list(point.train.seeds) != list(base.train.seeds):
        return None
    if not set(point.students.names) <= set(base.students.names) or param.startswith("teacher.variants"):
        return None
    table = pd.read_parquet(per_seed)
    return table[table["model"].isin([*point.students.names, "teacher"])].reset_index(drop=True)


@dataclass(frozen=True)
class Point:
    """One grid point to run: its position in the grid, its value, its root and its overrides."""

    index: int
    value: Any
    root: Path
    overrides: dict[str, Any]


def _notebook() -> str:
    local = Path("notebooks/sweep_point.ipynb")
    return str(local if local.exists() else Path(__file__).resolve().parents[2] / local)


def _run_point_notebook(
    point: Point, params_file: str | Path, start: str, base_root: Path, param: str
) -> pd.DataFrame:
    """Execute ``notebooks/sweep_point.ipynb`` for one point (its rendered notebook stays in its root)."""
    from dmtl.notebook import execute

    parameters = {
        "params_file": str(params_file),
        "root": str(point.root),
        "overrides": json.dumps(point.overrides),
        "start": start,
        "base_root": str(base_root.resolve()),
        "param": param,
    }
    execute(_notebook(), point.root / "sweep_point", parameters, html=True)
    return pd.read_parquet(Paths(point.root).metrics / "per_seed.parquet")


def results_table(per_seed: pd.DataFrame, param: str, level: float) -> pd.DataFrame:
    """One row per (value, model, metric): mean, interval, n, direction and the per-seed values."""
    from dmtl.stats import mean_ci

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
                        "higher_is_better": higher_is_better(metric),
                        "values": json.dumps([float(x) for x in g[metric]]),
                    }
                )
    return pd.DataFrame(rows)


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
    """Run one sweep and write ``results.csv`` and ``summary.png`` into ``out_dir``.

    A grid point equal to the main run's configuration reuses its per-seed metrics (same params, same
    seeds, deterministic stages); the others run side by side (``sweeps.workers``), each with its share of
    ``train.threads``, so two points on two cores each keep one core busy.
    """
    base = P.load(params_file, dict(extra_overrides or {}))
    start, base_root, runs = first_stage(param), Path(base_root), Path(runs_dir)
    if runs.exists():
        shutil.rmtree(runs)  # a sweep always starts clean: no half-finished grid point is reused
    tables: dict[int, pd.DataFrame] = {}
    todo: list[Point] = []
    for i, value in enumerate(values):
        overrides = {**(extra_overrides or {}), **point_overrides(base, param, value)}
        point = P.apply_overrides(base, overrides)  # fail before any work on a bad value
        reused = reuse_main_run(base, point, param, value, base_root)
        if reused is not None:
            tables[i] = reused.assign(value=str(value))
        else:
            todo.append(Point(i, value, runs / _value_dir(value), overrides))
    parallel = min(base.sweeps.workers, len(todo)) if use_papermill else 1
    if parallel > 1:
        threads = max(1, base.train.threads // parallel)
        todo = [Point(p.index, p.value, p.root, {**p.overrides, "train.threads": threads}) for p in todo]

    def run_one(point: Point) -> tuple[int, pd.DataFrame]:
        if use_papermill:
            table = _run_point_notebook(point, params_file, start, base_root, param)
        else:
            table = run_point(P.apply_overrides(base, point.overrides), point.root, start, base_root, param)
        return point.index, table.assign(value=str(point.value))

    if parallel > 1:
        from concurrent.futures import ThreadPoolExecutor

        # Each point is its own kernel process; the threads here only wait on them.
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            tables.update(pool.map(run_one, todo))
    else:
        tables.update(run_one(p) for p in todo)
    per_seed = pd.concat([tables[i] for i in range(len(values))], ignore_index=True)
    results = results_table(per_seed, param, base.eval.ci_level)
    with atomic_path(Path(out_dir) / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    from dmtl import plots
    from dmtl.report import sweep_metrics

    teacherless = results[results["model"] != "teacher"]
    plots.sweep_summary(teacherless, param, sweep_metrics(results), Path(out_dir) / "summary.png")
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
    from dmtl.cli import parse_value, run_main
    from dmtl.notebook import NotebookFailed

    def body() -> int:
        if args.param:
            param, values = args.param, [parse_value(v, "--values") for v in args.values or []]
            name = args.name or param.replace(".", "_")
        else:
            grid = P.load(args.params_file).sweeps.grid
            if args.name not in grid:
                raise P.ParamsError(f"unknown sweep {args.name!r}; sweeps.grid has {sorted(grid)}")
            param, values, name = grid[args.name].param, list(grid[args.name].values), args.name
        # An ad-hoc sweep is not a pipeline stage: it writes beside the pipeline's outputs, never into them,
        # so it cannot make the report stage out of date.
        pipeline_sweep = not args.param
        out = Path(args.out or Path("sweeps" if pipeline_sweep else "sweeps_adhoc") / name)
        runs = (
            Paths(".").sweeps / out.name if pipeline_sweep else Path("artifacts") / "adhoc_sweeps" / out.name
        )
        res = run_sweep(param, values, out, runs, args.params_file, use_papermill=not args.in_process)
        print(f"wrote {out / 'results.csv'} ({len(res)} rows) and {out / 'summary.png'}")
        return 0

    # A bad parameter or a missing main run exits 2, a failed grid point 1; each is one ERROR line.
    return run_main(
        "dmtl.sweep",
        body,
        exit_codes={P.ParamsError: 2, FileNotFoundError: 2, NotebookFailed: 1},
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
