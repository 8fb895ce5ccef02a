"""Tuning: every model chosen alike, on one validation metric, from one grid, over several seeds.

Fairness (docs/protocol.md section 3): the teacher and every student get the same grid of learning rate and
embedding size (``tuning.grid``) and the same epoch budget and early stopping, each grid point is trained on
``tuning.seeds``, and every student is chosen on the *same* validation metric (``train.select_on``:
validation recall of long reads by default), never on its own loss (for a distilled student that would
measure fidelity to the teacher, not retrieval). The teacher, which has no towers, is chosen on validation
``auc_ctcvr`` of its position-free predictions. Three choices are made in order:

1. the teacher's point (the distilled students then learn from that teacher);
2. the training objective (``students.common.objective``): the one whose students retrieve better on the
   validation days, by the mean over students of each one's best point, the same rule for every student;
3. each student's point under that objective, and, for the ablation sweeps, each alternative distillation
   loss of ``dmtl`` (``tuning.distill_variants``) at its own best point, so an ablation never runs a loss at
   a learning rate tuned for another (written into the sweeps' ``at`` settings).

``make tune`` (``python -m dmtl.tuning run``) prepares the data and runs the grid in ``artifacts/tuning/``
(not a pipeline stage: it runs once, and its results are committed: ``tuning/grid.csv``,
``tuning/chosen.yaml``, ``tuning/tune.html``); ``python -m dmtl.tuning apply`` writes the choices into
``params.yaml``, comments and order kept.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dmtl import params as P
from dmtl.config import Study, TuningGrid
from dmtl.io import atomic_path, link_dir
from dmtl.paths import Paths

GRID_KEYS = ("lr", "emb_dim")


def grid_points(grid: TuningGrid) -> list[dict[str, Any]]:
    return [
        dict(zip(GRID_KEYS, values, strict=True))
        for values in itertools.product(*(getattr(grid, k) for k in GRID_KEYS))
    ]


def _point_root(base: Path, label: str) -> Paths:
    """A scratch root per grid point that reads the prepared data (and teacher) of the tuning run."""
    paths = Paths(base / "points" / label)
    link_dir(Paths(base).data, paths.data)
    return paths


def tune_teacher(study: Study, base: Path) -> pd.DataFrame:
    """Every teacher grid point on ``tuning.seeds``: validation auc_ctcvr of its predictions."""
    from dmtl.stages.teacher import run_teacher

    rows = []
    for point in grid_points(study.tuning.grid):
        label = "teacher_" + "_".join(f"{k}{v}" for k, v in point.items())
        over = {
            **{f"teacher.{k}": v for k, v in point.items()},
            "train.seeds": list(study.tuning.seeds),
            "teacher.variants": [],
        }
        root = _point_root(base, label)
        summary = run_teacher(P.apply_overrides(study, over), root.root)
        val = summary["default"]["val"]["auc_ctcvr"]
        rows.append(
            {"model": "teacher", "variant": "", "objective": "", **point, "val": val["mean"], "root": label}
        )
    return pd.DataFrame(rows)


def tune_students(study: Study, base: Path, teacher_root: str) -> pd.DataFrame:
    """Every student (and dmtl's alternative distillation losses) at every point, objective and seed."""
    from dmtl.stages.student import run_student

    rows = []
    variants = [("", {})] + [(label, dict(over)) for label, over in study.tuning.distill_variants.items()]
    for objective in study.tuning.objectives:
        for name in study.students.names:
            for label, extra in variants if name == study.eval.reference else variants[:1]:
                for point in grid_points(study.tuning.grid):
                    over = {f"students.{name}.{k}": v for k, v in point.items()}
                    over |= {
                        **extra,
                        "students.common.objective": objective,
                        "train.seeds": list(study.tuning.seeds),
                    }
                    root = Paths(base / "points" / teacher_root)
                    summary = run_student(P.apply_overrides(study, over), name, root.root)
                    runs = summary["runs"]
                    rows.append(
                        {
                            "model": name,
                            "variant": label,
                            "objective": objective,
                            **point,
                            "val": sum(r["best_val_select"] for r in runs) / len(runs),
                            "epochs": sum(r["epochs"] for r in runs) / len(runs),
                            "root": teacher_root,
                        }
                    )
    return pd.DataFrame(rows)


def run_grid(study: Study, root: str | Path = ".") -> pd.DataFrame:
    """Prepare the data once, then the teacher's grid, then every student's under the chosen teacher."""
    from dmtl.stages.prepare import run_prepare

    base = Paths(root).artifacts / "tuning"
    run_prepare(study, base)
    teacher = tune_teacher(study, base)
    best = teacher.loc[teacher["val"].idxmax()]
    study = P.apply_overrides(study, {f"teacher.{k}": _plain(best[k]) for k in GRID_KEYS})
    return pd.concat([teacher, tune_students(study, base, best["root"])], ignore_index=True)


def choose(grid: pd.DataFrame) -> dict[str, Any]:
    """The choices of the module docstring from a grid table (ties: the first in grid order)."""

    def best(part: pd.DataFrame) -> dict[str, Any]:
        row = part.loc[part["val"].idxmax()]
        return {k: _plain(row[k]) for k in GRID_KEYS}

    teacher = grid[grid["model"] == "teacher"]
    students = grid[(grid["model"] != "teacher") & (grid["variant"].fillna("") == "")]
    by_objective = {
        objective: part.groupby("model")["val"].max().mean()
        for objective, part in students.groupby("objective")
    }
    objective = max(by_objective, key=by_objective.get)

    def points(under: str) -> dict[str, Any]:
        chosen = students[students["objective"] == under]
        variants = grid[(grid["variant"].fillna("") != "") & (grid["objective"] == under)]
        return {
            "students": {m: best(part) for m, part in chosen.groupby("model", sort=False)},
            "distill_variants": {v: best(part) for v, part in variants.groupby("variant", sort=False)},
        }

    return {
        "teacher": best(teacher),
        "objective": objective,
        "objective_scores": {k: float(v) for k, v in by_objective.items()},
        **points(objective),
        # Each objective's own tuned points: a sweep that trains under another objective uses these.
        "by_objective": {o: points(o) for o in by_objective},
    }


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def write_outputs(grid: pd.DataFrame, chosen: Mapping[str, Any], out: str | Path = "tuning") -> None:
    out = Path(out)
    with atomic_path(out / "grid.csv") as tmp:
        grid.drop(columns="root", errors="ignore").to_csv(tmp, index=False)
    with atomic_path(out / "chosen.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(dict(chosen), sort_keys=True))


def apply(
    chosen_file: str | Path = "tuning/chosen.yaml", params_file: str | Path = "params.yaml"
) -> dict[str, Any]:
    """Write the choices into ``params.yaml`` (comments and order kept): the teacher's and every student's
    point, the objective, each distillation variant's point as that value's ``at`` settings of the
    sweeps that run it (``tuning.distill_variants`` names each variant by its sweep and value), and the
    objective sweep's other objectives at every student's point tuned under that objective."""
    from ruamel.yaml import YAML

    chosen = yaml.safe_load(Path(chosen_file).read_text())
    ry = YAML()  # round-trip mode: keeps params.yaml's comments and order
    ry.preserve_quotes = True
    ry.width = 4096  # one line per flow mapping, as params.yaml writes them
    doc = ry.load(Path(params_file).read_text())
    doc["teacher"].update(chosen["teacher"])
    doc["students"]["common"]["objective"] = chosen["objective"]
    for student, values in chosen["students"].items():
        doc["students"][student].update(values)
    reference = doc["eval"]["reference"]
    for label, values in chosen.get("distill_variants", {}).items():
        sweep, _, value = label.partition("=")
        spec = doc["sweeps"]["grid"].get(sweep)
        if spec is not None:
            at = spec.setdefault("at", {})
            at[value] = {f"students.{reference}.{k}": v for k, v in values.items()}
    for spec in doc["sweeps"]["grid"].values():
        if spec.get("param") == "students.common.objective":
            # The objective ablation trains every student at its own point under each objective.
            at = spec.setdefault("at", {})
            for other, found in chosen.get("by_objective", {}).items():
                if other != chosen["objective"]:
                    at[other] = {
                        f"students.{m}.{k}": v
                        for m, vals in found["students"].items()
                        for k, v in vals.items()
                    }
    buf = io.StringIO()
    ry.dump(doc, buf)
    P.validate(YAML(typ="safe", pure=True).load(buf.getvalue()))
    with atomic_path(Path(params_file)) as tmp:
        tmp.write_text(buf.getvalue())
    return chosen


def run_notebook(params_file: str | Path = "params.yaml") -> None:
    """Execute ``notebooks/tune.ipynb`` into ``tuning/tune`` (the rendered HTML is what is kept)."""
    from dmtl.notebook import execute

    execute("notebooks/tune.ipynb", Path("tuning") / "tune", {"params_file": str(params_file)}, html=True)
    Path("tuning/tune.ipynb").unlink(missing_ok=True)


def read_grid(folder: str | Path = "tuning") -> tuple[pd.DataFrame, dict[str, Any]]:
    """The committed grid and choices."""
    folder = Path(folder)
    return pd.read_csv(folder / "grid.csv"), yaml.safe_load((folder / "chosen.yaml").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Run the tuning grid (run) or write its choice into params.yaml (apply)."
    )
    ap.add_argument("command", choices=["run", "apply"])
    ap.add_argument("--chosen", default="tuning/chosen.yaml")
    ap.add_argument("--params-file", default="params.yaml")
    args = ap.parse_args(argv)
    if args.command == "run":
        run_notebook(args.params_file)
    chosen = apply(args.chosen, args.params_file)
    print(yaml.safe_dump(chosen, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
