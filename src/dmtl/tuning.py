"""The same small tuning grid for every student, chosen on the validation days by its own loss.

Fairness (docs/protocol.md section 3): every student gets the same grid of learning rate, embedding size and weight
decay, the same epoch budget and early stopping; each is chosen by the validation loss of *its own* target.
The grid is not a pipeline stage: ``make tune`` (``python -m dmtl.tuning run``) executes
``notebooks/tune.ipynb`` once on the main run's data and teacher, its results are committed
(``tuning/grid.csv``, ``tuning/chosen.yaml``, ``tuning/tune.html``), and ``python -m dmtl.tuning apply`` writes
the chosen values into ``params.yaml``, so the default run uses them without paying for the grid.
"""

from __future__ import annotations

import argparse
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

GRID_KEYS = ("lr", "emb_dim", "weight_decay")


def grid_points(grid: TuningGrid) -> list[dict[str, Any]]:
    return [
        dict(zip(GRID_KEYS, values, strict=True))
        for values in itertools.product(*(getattr(grid, k) for k in GRID_KEYS))
    ]


def run_grid(study: Study, root: str | Path = ".") -> pd.DataFrame:
    """Train every student at every grid point (one seed) and record its best validation loss."""
    from dmtl.stages.student import run_student

    paths = Paths(root)
    scratch = Paths(paths.artifacts / "tuning")
    link_dir(paths.data, scratch.data)
    link_dir(paths.teachers, scratch.teachers)
    rows = []
    for name in study.students.names:
        for point in grid_points(study.tuning.grid):
            overrides = {f"students.{name}.{k}": v for k, v in point.items()}
            overrides["train.seeds"] = [study.tuning.seed]
            summary = run_student(P.apply_overrides(study, overrides), name, scratch.root)
            run = summary["runs"][0]
            rows.append({"student": name, **point, "val_loss": run["best_val_loss"], "epochs": run["epochs"]})
    return pd.DataFrame(rows)


def choose(grid: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The point with the lowest validation loss per student (ties: the first in grid order)."""
    best = grid.loc[grid.groupby("student", sort=False)["val_loss"].idxmin()]
    return {r["student"]: {k: _plain(r[k]) for k in GRID_KEYS} for r in best.to_dict("records")}


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def write_outputs(grid: pd.DataFrame, chosen: Mapping[str, Any], out: str | Path = "tuning") -> None:
    out = Path(out)
    with atomic_path(out / "grid.csv") as tmp:
        grid.to_csv(tmp, index=False)
    with atomic_path(out / "chosen.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(dict(chosen), sort_keys=True))


def apply(
    chosen_file: str | Path = "tuning/chosen.yaml", params_file: str | Path = "params.yaml"
) -> dict[str, Any]:
    """Write the chosen values into ``params.yaml`` (comments and order kept)."""
    import io

    from ruamel.yaml import YAML

    chosen = yaml.safe_load(Path(chosen_file).read_text())
    ry = YAML()  # round-trip mode: keeps params.yaml's comments and order
    ry.preserve_quotes = True
    doc = ry.load(Path(params_file).read_text())
    for student, values in chosen.items():
        for key, value in values.items():
            doc["students"][student][key] = value
    buf = io.StringIO()
    ry.dump(doc, buf)
    P.validate(YAML(typ="safe", pure=True).load(buf.getvalue()))
    with atomic_path(Path(params_file)) as tmp:
        tmp.write_text(buf.getvalue())
    return chosen


def run_notebook(params_file: str | Path = "params.yaml") -> None:
    """Execute ``notebooks/tune.ipynb`` into ``tuning/tune`` (needs the main run's data and teacher)."""
    from dmtl.notebook import execute

    if not Paths(".").teachers.exists():
        raise FileNotFoundError(
            "artifacts/teacher is missing: run the main pipeline (dvc repro) before tuning"
        )
    execute("notebooks/tune.ipynb", Path("tuning") / "tune", {"params_file": str(params_file)}, html=True)
    Path("tuning/tune.ipynb").unlink(missing_ok=True)  # the rendered HTML is what is kept


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
