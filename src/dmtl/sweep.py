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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dmtl import dag
from dmtl import params as P
from dmtl.config import Study, SweepSpec
from dmtl.io import atomic_path, link_dir, read_json
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


def first_stage(*params: str) -> str:
    """The earliest stage of the stage table that reads any of ``params``."""
    for name in ORDER:
        if any(_covers(p, param) for p in dag.stage(name).params for param in params):
            return name
    raise P.ParamsError(
        f"cannot sweep {list(params)}: choose keys under data, train, teacher, students or eval"
    )


def _get(tree: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` of a params tree (``None`` where absent)."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _link(src: Path, dst: Path) -> None:
    if not src.exists():
        raise FileNotFoundError(f"{src} is missing: run the main pipeline (dvc repro) before this sweep")
    link_dir(src, dst)


def _link_earlier(base_root: Path, root: Path, start: str) -> None:
    """Reuse the main run's outputs of the stages before ``start`` (symlinks; nothing is copied)."""
    base, here = Paths(base_root), Paths(root)
    if ORDER.index(start) > ORDER.index("prepare"):
        _link(base.data, here.data)
    if ORDER.index(start) > ORDER.index("teacher"):
        _link(base.teachers, here.teachers)
    if ORDER.index(start) > ORDER.index("student"):
        _link(base.students, here.students)


def _students_to_train(study: Study, param: str, base_root: Path, root: Path) -> list[str]:
    """The students a point retrains: for a student's own parameter (``students.<name>.*``) only that one;
    the others are the main run's, linked, when the point's seeds are among the main run's."""
    names = list(study.students.names)
    owner = param.split(".")[1] if param.startswith("students.") and param.count(".") >= 2 else None
    base_file = base_root / "params.yaml"
    if owner not in names or not base_file.exists():
        return names
    if not set(study.train.seeds) <= set(P.load(base_file).train.seeds):
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
    from dmtl.progress import set_context

    root, base_root = Path(root), Path(base_root)
    # Progress lines of parallel grid points say which point they belong to.
    set_context(f"{param}={_get(study.to_dict(), param)}" if param else "")
    try:
        _link_earlier(base_root, root, start)
        for name in ORDER[ORDER.index(start) :]:
            if name == "student":
                for student in _students_to_train(study, param, base_root, root):
                    run_student(study, student, root)
            else:
                RUNNERS[name](study, root)
    finally:
        set_context("")
    return pd.read_parquet(Paths(root).metrics / "per_seed.parquet")


def _value_dir(value: Any) -> str:
    """A grid value as a folder name inside the sweep's runs folder: never a path out of it.

    Characters other than letters, digits and ``_ . , = + - [ ]`` become ``_`` (so ``/``, ``..`` separators,
    quotes and HTML cannot shape the path), and a name of dots only is prefixed.
    """
    name = re.sub(r"[^\w.,=+\-\[\]]", "_", str(value).replace(" ", ""))
    return f"_{name}" if set(name) <= {"."} else name


def point_overrides(study: Study, spec: SweepSpec, value: Any) -> dict[str, Any]:
    """The overrides of one grid point: the swept value and the sweep's fixed settings, the sweep's own
    seeds and students (every strong competitor: docs/protocol.md section 3), no teacher variants (the
    teacher stage shows them), and the cheaper ranking bootstrap of sweeps."""
    sw = study.sweeps
    names = list(sw.students)
    if study.eval.reference not in names:
        names.append(study.eval.reference)
    return {
        **spec.fixed,
        **spec.at.get(str(value), {}),
        spec.param: value,
        "train.seeds": list(sw.seeds),
        "students.names": names,
        "teacher.variants": [],
        "eval.n_boot_ranking": sw.n_boot_ranking,
    }


def _models_of(study: Study) -> dict[str, Any]:
    """What a point's trained models depend on: data, teacher, training and each trained student's settings."""
    from dmtl.sources.simulator.config import make_config

    tree = study.to_dict()
    data = dict(tree["data"])
    if study.data.source == "simulated":
        data["sim"] = make_config(study.data.preset, study.data.sim).to_dict()
    train = {k: v for k, v in tree["train"].items() if k not in ("seeds", "threads")}
    teacher = {k: v for k, v in tree["teacher"].items() if k != "variants"}
    students = {n: tree["students"][n] for n in study.students.names}
    return {
        "data": data,
        "train": train,
        "teacher": teacher,
        "common": tree["students"]["common"],
        **students,
    }


def same_models_as_main(base: Study, point: Study, base_root: Path) -> bool:
    """Whether every model a point needs is one the main run trained: then the point only evaluates."""
    if not (Paths(base_root).students.exists() and Paths(base_root).teachers.exists()):
        return False
    if not set(point.train.seeds) <= set(base.train.seeds) or not set(point.students.names) <= set(
        base.students.names
    ):
        return False
    main = _models_of(base)
    return all(main.get(k) == v for k, v in _models_of(point).items())


@dataclass(frozen=True)
class Point:
    """One grid point to run: its position, value, root, overrides and the first stage it runs."""

    index: int
    value: Any
    root: Path
    overrides: dict[str, Any]
    start: str


def _notebook() -> str:
    local = Path("notebooks/sweep_point.ipynb")
    return str(local if local.exists() else Path(__file__).resolve().parents[2] / local)


def _run_point_notebook(point: Point, params_file: str | Path, base_root: Path, param: str) -> None:
    """Execute ``notebooks/sweep_point.ipynb`` for one point (its rendered notebook stays in its root)."""
    from dmtl.notebook import execute

    parameters = {
        "params_file": str(params_file),
        "root": str(point.root),
        "overrides": json.dumps(point.overrides),
        "start": point.start,
        "base_root": str(base_root.resolve()),
        "param": param,
    }
    execute(_notebook(), point.root / "sweep_point", parameters, html=True)


def results_tables(
    summaries: Mapping[Any, Mapping[str, Any]], param: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every point's metrics and comparisons, as read from its evaluation (bootstrap intervals, Holm).

    Returns:
        ``(results, comparisons)``: one row per (value, model, metric) with mean, interval, seeds and
        direction; one row per (value, competitor, metric) with the reference's difference, its interval, the
        Holm-corrected p-value and the decision.
    """
    rows, comps = [], []
    for value, summary in summaries.items():
        for model, metrics in summary["models"].items():
            for metric, d in metrics.items():
                if d.get("mean") is None:
                    continue
                rows.append(
                    {
                        "param": param,
                        "value": str(value),
                        "model": model,
                        "metric": metric,
                        **{k: d.get(k) for k in ("mean", "ci_low", "ci_high", "n")},
                        "higher_is_better": higher_is_better(metric),
                        "values": json.dumps(d.get("values", [])),
                    }
                )
        for key, per_metric in summary["comparisons"].items():
            for metric, d in per_metric.items():
                comps.append(
                    {
                        "param": param,
                        "value": str(value),
                        "competitor": key.split("_vs_", 1)[1],
                        "metric": metric,
                        **{
                            k: d.get(k)
                            for k in ("mean", "ci_low", "ci_high", "p_holm", "decision", "verdict")
                        },
                    }
                )
    return pd.DataFrame(rows), pd.DataFrame(comps)


def _plan(base: Study, spec: SweepSpec, runs: Path, base_root: Path, extra: Mapping[str, Any]) -> list[Point]:
    points = []
    for i, value in enumerate(spec.values):
        overrides = {**extra, **point_overrides(base, spec, value)}
        point = P.apply_overrides(base, overrides)  # fail before any work on a bad value
        start = (
            "evaluate"
            if same_models_as_main(base, point, base_root)
            else first_stage(spec.param, *spec.fixed)
        )
        points.append(Point(i, value, runs / _value_dir(value), overrides, start))
    return points


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    runs_dir: str | Path,
    params_file: str | Path = "params.yaml",
    base_root: str | Path = ".",
    use_papermill: bool = True,
    extra_overrides: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Run one sweep; write ``results.csv``, ``comparisons.csv`` and ``summary.png`` into ``out_dir``.

    A grid point whose models the main run already trained (same settings, its seeds among the main run's)
    links them and only evaluates; the others train what the swept parameter changes. Points run side by
    side (``sweeps.workers``), each with its share of ``train.threads``, so two points on two cores each keep
    one core busy.
    """
    base = P.load(params_file, dict(extra_overrides or {}))
    base_root, runs = Path(base_root), Path(runs_dir)
    if runs.exists():
        shutil.rmtree(runs)  # a sweep always starts clean: no half-finished grid point is reused
    todo = _plan(base, spec, runs, base_root, extra_overrides or {})
    parallel = min(base.sweeps.workers, len(todo)) if use_papermill else 1
    if parallel > 1:
        threads = max(1, base.train.threads // parallel)
        todo = [
            Point(p.index, p.value, p.root, {**p.overrides, "train.threads": threads}, p.start) for p in todo
        ]

    def run_one(point: Point) -> None:
        if use_papermill:
            _run_point_notebook(point, params_file, base_root, spec.param)
        else:
            run_point(
                P.apply_overrides(base, point.overrides), point.root, point.start, base_root, spec.param
            )

    if parallel > 1:
        from concurrent.futures import ThreadPoolExecutor

        # Each point is its own kernel process; the threads here only wait on them.
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(run_one, todo))
    else:
        for point in todo:
            run_one(point)
    summaries = {p.value: read_json(Paths(p.root).metrics / "metrics.json") for p in todo}
    results, comparisons = results_tables(summaries, spec.param)
    out_dir = Path(out_dir)
    for table, name in ((results, "results.csv"), (comparisons, "comparisons.csv")):
        with atomic_path(out_dir / name) as tmp:
            table.to_csv(tmp, index=False)
    from dmtl import plots
    from dmtl.sweep_tables import sweep_metrics

    teacherless = results[results["model"] != "teacher"]
    plots.sweep_summary(teacherless, spec.param, sweep_metrics(results), out_dir / "summary.png")
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
            spec = SweepSpec(args.param, tuple(parse_value(v, "--values") for v in args.values or []))
            name = args.name or args.param.replace(".", "_")
        else:
            grid = P.load(args.params_file).sweeps.grid
            if args.name not in grid:
                raise P.ParamsError(f"unknown sweep {args.name!r}; sweeps.grid has {sorted(grid)}")
            spec, name = grid[args.name], args.name
        # An ad-hoc sweep is not a pipeline stage: it writes beside the pipeline's outputs, never into them,
        # so it cannot make the report stage out of date.
        pipeline_sweep = not args.param
        out = Path(args.out or Path("sweeps" if pipeline_sweep else "sweeps_adhoc") / name)
        runs = (
            Paths(".").sweeps / out.name if pipeline_sweep else Path("artifacts") / "adhoc_sweeps" / out.name
        )
        res = run_sweep(spec, out, runs, args.params_file, use_papermill=not args.in_process)
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
