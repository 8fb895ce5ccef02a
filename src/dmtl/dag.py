"""The study's one stage table: ``dvc.yaml``, the real-data runner and sweeps all follow it.

Each :class:`Stage` names its command, the notebook it executes, the parameters it reads, the other stages'
outputs it reads and the files it writes. Its code dependencies are not listed by hand: they are the
``src/dmtl`` modules its notebook and command import, followed through every import (module level and inside
functions, :func:`code_closure`), so no code change can leave a stale result in DVC's cache.

``python -m dmtl.dag`` writes ``dvc.yaml`` from the table; ``python -m dmtl.dag --check`` (and
``tests/test_dag.py``) fails when ``dvc.yaml`` differs from it.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "dmtl"


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    Attributes:
        name: the DVC stage name (``student@dmtl`` for an item of a ``foreach`` stage).
        desc: one line that ``dvc stage list`` shows.
        notebook: the notebook it executes (``None`` for a command-only stage); its executed copy is cached
            by DVC and its HTML rendering is kept in git, so a visitor can read it without running anything.
        modules: modules its command runs (``python -m``), whose imports are its code too.
        params: the ``params.yaml`` keys it reads (a group or a dotted key).
        reads: other stages' outputs it reads.
        outs: outputs DVC caches (artifacts).
        uncached: outputs DVC does not cache: small files kept in git (tables, figures, metrics files) or
            scratch it rebuilds.
        metrics: the files or folders ``dvc metrics show`` prints.
        plots: the data files ``dvc plots show`` draws, with their DVC plot settings.
        foreach: for a stage run once per item: the params key listing the items (``${item}`` /
            ``${key}`` in the other fields).
        notebook_params: papermill parameters beyond ``params_file``, ``root`` and ``overrides``.
        command: the command, when it is not the notebook runner.
    """

    name: str
    desc: str
    notebook: str | None = None
    modules: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    uncached: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    foreach: str | None = None
    notebook_params: Mapping[str, str] = field(default_factory=dict)
    command: str | None = None

    @property
    def report(self) -> str | None:
        """The executed notebook's path without suffix (``reports/<stem>``): its .ipynb and .html."""
        if self.notebook is None:
            return None
        stem = Path(self.notebook).stem
        return f"reports/{stem}_${{item}}" if self.foreach else f"reports/{stem}"

    @property
    def cmd(self) -> str:
        if self.command:
            return self.command
        extra = "".join(f" -p {k} {v}" for k, v in self.notebook_params.items())
        return f"python -m dmtl.notebook {self.notebook} {self.report}{extra}"


def _curves(path: str) -> tuple[str, Mapping[str, Any]]:
    """A learning-curve file drawn with one line per run (its ``series`` column)."""
    return path, {"x": "epoch", "y": "val_loss", "template": "by_series"}


STAGES: tuple[Stage, ...] = (
    Stage(
        "prepare",
        "Load or simulate the log, split it by day, set tau, encode features.",
        notebook="notebooks/01_data.ipynb",
        params=("data",),
        reads=("data",),
        outs=("artifacts/data",),
        uncached=("metrics/data.json", "plots/figures/data_overview.png"),
    ),
    Stage(
        "teacher",
        "Train the MMoE + ESMM teacher (and its variants) for every seed.",
        notebook="notebooks/02_teacher.ipynb",
        params=("teacher", "train", "eval.ci_level"),
        reads=("artifacts/data",),
        outs=("artifacts/teacher", "metrics/teacher_runs.parquet"),
        uncached=("metrics/teacher.json", "metrics/tau.json", "plots/figures/teacher_learning_curves.png"),
        plots=(_curves("plots/teacher_curves.csv"),),
    ),
    Stage(
        "student",
        "Train one two-tower student for every seed and export its towers.",
        notebook="notebooks/03_student.ipynb",
        foreach="students.names",
        notebook_params={"student": "${item}"},
        params=("students.common", "students.${item}", "train", "teacher"),
        reads=("artifacts/data", "artifacts/teacher"),
        outs=("artifacts/students/${item}",),
        uncached=("metrics/students/${item}.json", "plots/figures/student_${item}_curves.png"),
        plots=(_curves("plots/students/${item}_curves.csv"),),
    ),
    Stage(
        "evaluate",
        "Every metric of every model and seed; intervals and paired verdicts.",
        notebook="notebooks/04_evaluate.ipynb",
        params=("eval", "train.seeds", "students.names"),
        reads=("artifacts/data", "artifacts/teacher", "artifacts/students"),
        outs=("metrics/per_seed.parquet",),
        uncached=("metrics/metrics.json", "plots/student_vs_teacher.csv"),
        metrics=("metrics/headline",),
        plots=(("plots/retrieval_at_k.csv", {"x": "k", "y": "recall_long", "template": "by_model"}),),
    ),
    Stage(
        "sweep",
        "One ablation sweep of docs/protocol.md section 2 (sweeps.grid).",
        modules=("dmtl.sweep",),
        command="python -m dmtl.sweep ${key}",
        foreach="sweeps.grid",
        params=(
            "data",
            "train",
            "teacher",
            "students",
            "eval",
            "sweeps.seeds",
            "sweeps.students",
            "sweeps.workers",
            "sweeps.grid.${key}",
        ),
        reads=("artifacts/data", "artifacts/teacher", "metrics/per_seed.parquet"),
        uncached=("artifacts/sweeps/${key}", "sweeps/${key}/results.csv", "sweeps/${key}/summary.png"),
    ),
    Stage(
        "report",
        "The answer: results, verdicts, figures, sweeps, limitations.",
        notebook="notebooks/05_report.ipynb",
        params=("eval",),
        reads=(
            "metrics/metrics.json",
            "metrics/per_seed.parquet",
            "metrics/teacher.json",
            "metrics/teacher_runs.parquet",
            "metrics/students",
            "metrics/data.json",
            "plots/retrieval_at_k.csv",
            "plots/student_vs_teacher.csv",
            "sweeps",
        ),
        uncached=("plots/figures/report",),
    ),
    Stage(
        "timings",
        "Per-stage wall-clock seconds of this run, read from the executed notebooks (a measurement).",
        modules=("dmtl.timings",),
        command="python -m dmtl.timings",
        reads=("reports/05_report.ipynb",),
        uncached=("metrics/timings.json",),
    ),
)
FIGURES = "plots/figures"
"""Every PNG the stages draw: one ``dvc plots show`` entry, images render offline (unlike vega charts)."""


def stage(name: str) -> Stage:
    """The stage called ``name``."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {[s.name for s in STAGES]}")


# ------------------------------------------------------------------------------------ code closure
def _module_path(module: str, src: Path) -> Path | None:
    """The source file of ``dmtl.a.b`` under ``src`` (the folder holding the ``dmtl`` package)."""
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(tree: ast.AST, src: Path) -> set[str]:
    """``dmtl`` modules an AST imports anywhere (module level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != PACKAGE:
                continue
            found.add(node.module)
            # ``from dmtl import vocab`` imports the module dmtl.vocab, not a name of dmtl/__init__.py.
            found |= {
                f"{node.module}.{a.name}" for a in node.names if _module_path(f"{node.module}.{a.name}", src)
            }
    return found


def _with_packages(module: str) -> list[str]:
    """A module and every package above it (importing ``a.b.c`` runs ``a`` and ``a.b`` first)."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def code_closure(modules: Iterable[str], src: Path = REPO / "src") -> list[Path]:
    """Every source file the ``modules`` import, transitively, as sorted paths under ``src``."""
    todo = [m for mod in modules for m in _with_packages(mod)]
    seen: dict[str, Path] = {}
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        path = _module_path(mod, src)
        if path is None:
            continue
        seen[mod] = path
        todo += [m for found in _imported(ast.parse(path.read_text()), src) for m in _with_packages(found)]
    return sorted(set(seen.values()))


def notebook_imports(notebook: str | Path, src: Path = REPO / "src") -> set[str]:
    """``dmtl`` modules imported by a notebook's code cells (IPython magics and shell lines skipped)."""
    nb = json.loads(Path(notebook).read_text())
    found: set[str] = set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        found |= _imported(ast.parse(code), src)
    return found


def stage_code(s: Stage, repo: Path = REPO) -> list[str]:
    """The stage's code dependencies: its notebook and every module it runs, relative to ``repo``."""
    modules = set(s.modules) | ({"dmtl.notebook"} if s.notebook else set())
    notebooks = [s.notebook] if s.notebook else []
    if "dmtl.sweep" in s.modules:
        notebooks.append("notebooks/sweep_point.ipynb")  # each grid point executes it
    for nb in notebooks:
        modules |= notebook_imports(repo / nb, repo / "src")
    files = [p.relative_to(repo).as_posix() for p in code_closure(modules, repo / "src")]
    return [*notebooks, *files]


# ---------------------------------------------------------------------------------------- dvc.yaml
HEADER = """\
# The DMTL study: data -> teacher -> students -> evaluate -> sweeps -> report.
# GENERATED by `python -m dmtl.dag` from the stage table in src/dmtl/dag.py: edit the table, not this file
# (tests/test_dag.py fails when they differ). Each notebook stage executes one notebook with papermill and
# keeps the executed notebook and its HTML rendering under reports/. Code deps are every module a stage
# imports, so no code change can leave a stale result.
"""


def _dvc_stage(s: Stage, repo: Path) -> dict[str, Any]:
    body: dict[str, Any] = {"desc": s.desc, "cmd": s.cmd}
    body["deps"] = [*stage_code(s, repo), *s.reads]
    if s.params:
        body["params"] = list(s.params)
    outs: list[Any] = list(s.outs)
    if s.report:
        outs += [f"{s.report}.ipynb", {f"{s.report}.html": {"cache": False}}]
    outs += [{f: {"cache": False}} for f in s.uncached]
    if outs:
        body["outs"] = outs
    if s.metrics:
        body["metrics"] = [{f: {"cache": False}} for f in s.metrics]
    if s.plots:
        body["plots"] = [{f: {"cache": False, **opts}} for f, opts in s.plots]
    if s.foreach:
        return {"foreach": f"${{{s.foreach}}}", "do": body}
    return body


def render(repo: Path = REPO) -> str:
    """``dvc.yaml`` as the stage table says."""
    import yaml

    doc = {"stages": {s.name: _dvc_stage(s, repo) for s in STAGES}, "plots": [FIGURES]}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


# ------------------------------------------------------------------------------------- plot templates
def _template(color_field: str, colors: Mapping[str, str] | None) -> dict[str, Any]:
    """A vega-lite line chart in DVC's template format, one line per value of ``color_field``."""
    anchor = "<DVC_METRIC_{}>".format
    color: dict[str, Any] = {"field": color_field, "type": "nominal"}
    if colors:
        color["scale"] = {"domain": list(colors), "range": list(colors.values())}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": anchor("DATA")},
        "title": anchor("TITLE"),
        "width": anchor("PLOT_WIDTH"),
        "height": anchor("PLOT_HEIGHT"),
        "mark": {"type": "line", "point": True, "tooltip": {"content": "data"}},
        "encoding": {
            "x": {"field": anchor("X"), "type": "quantitative", "title": anchor("X_LABEL")},
            "y": {
                "field": anchor("Y"),
                "type": "quantitative",
                "title": anchor("Y_LABEL"),
                "scale": {"zero": False},
            },
            "color": color,
        },
    }


def templates() -> dict[str, str]:
    """DVC plot templates (``.dvc/plots/<name>.json``): ``by_model`` colours each model as every figure of the
    study does (:func:`dmtl.vocab.model_color`); ``by_series`` draws one line per run of a learning curve."""
    from dmtl import vocab as V

    colors = {m: V.model_color(m) for m in V.MODEL_ORDER}
    specs = {"by_model": _template("model", colors), "by_series": _template("series", None)}
    return {name: json.dumps(spec, indent=2) + "\n" for name, spec in specs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write dvc.yaml from the stage table (or --check it).")
    ap.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml differs from the table")
    ap.add_argument("--repo", type=Path, default=REPO)
    args = ap.parse_args(argv)
    files = {args.repo / "dvc.yaml": render(args.repo)}
    files |= {args.repo / ".dvc" / "plots" / f"{name}.json": text for name, text in templates().items()}
    if args.check:
        stale = [str(p) for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale:
            print(f"{stale} differ from the stage table: run `python -m dmtl.dag`", file=sys.stderr)
            return 1
        return 0
    from dmtl.io import atomic_path

    for path, text in files.items():
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
