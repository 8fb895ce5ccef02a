"""The same small tuning grid for every student, chosen on the validation days by its own loss.

Fairness (docs/protocol.md section 3): every student gets the same grid of learning rate, embedding size and weight
decay, the same epoch budget and early stopping; each is chosen by the validation loss of *its own* target.
The grid is a frozen pipeline stage (``tune``): it runs only when asked (``make tune``), its results are
committed (``tuning/grid.csv``, ``tuning/chosen.yaml``), and ``python -m dmtl.tuning apply`` writes the
chosen values into ``params.yaml``, so the default run uses them without paying for the grid.
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
from dmtl.io import atomic_path

GRID_KEYS = ("lr", "emb_dim", "weight_decay")


def grid_points(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    return [
        dict(zip(GRID_KEYS, values, strict=True))
        for values in itertools.product(*(grid[k] for k in GRID_KEYS))
    ]


def run_grid(params: Mapping[str, Any], root: str | Path = ".") -> pd.DataFrame:
    """Train every student at every grid point (one seed) and record its best validation loss."""
    from dmtl.pipeline import run_student

    tune = params["tuning"]
    rows = []
    for name in params["students"]["names"]:
        for point in grid_points(tune["grid"]):
            overrides = {f"students.{name}.{k}": v for k, v in point.items()}
            overrides["train.seeds"] = [tune["seed"]]
            p = P.apply_overrides(params, overrides)
            scratch = Path(root) / "artifacts" / "tuning"
            _link(Path(root), scratch)
            summary = run_student(p, name, scratch)
            run = summary["runs"][0]
            rows.append({"student": name, **point, "val_loss": run["best_val_loss"], "epochs": run["epochs"]})
    return pd.DataFrame(rows)


def _link(root: Path, scratch: Path) -> None:
    import os

    for part in ("data", "teacher"):
        dst = scratch / "artifacts" / part
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath((root / "artifacts" / part).resolve(), dst.parent.resolve()), dst)


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
    from ruamel.yaml import YAML

    chosen = yaml.safe_load(Path(chosen_file).read_text())
    ry = YAML()
    ry.preserve_quotes = True
    doc = ry.load(Path(params_file).read_text())
    for student, values in chosen.items():
        for key, value in values.items():
            doc["students"][student][key] = value
    import io

    buf = io.StringIO()
    ry.dump(doc, buf)
    from ruamel.yaml import YAML as _YAML

    P.validate(_YAML(typ="safe", pure=True).load(buf.getvalue()))
    with atomic_path(Path(params_file)) as tmp:
        tmp.write_text(buf.getvalue())
    return chosen


FROZEN_LINE = "    frozen: true\n"


def run_stage(dvc_file: str | Path = "dvc.yaml") -> int:
    """Run the frozen ``tune`` stage once: thaw it in ``dvc.yaml``, ``dvc repro tune``, freeze it again.

    The flag is toggled as text (not with ``dvc unfreeze``) so dvc.yaml keeps its comments and layout.
    """
    import subprocess

    path = Path(dvc_file)
    text = path.read_text()
    marker = "  tune:\n"
    start = text.index(marker)
    stage_end = text.find("\n\n", start)
    block = text[start:stage_end]
    if FROZEN_LINE not in block:
        raise RuntimeError(f"{path}: the tune stage is not frozen; add '{FROZEN_LINE.strip()}' to it")
    thawed = text[:start] + block.replace(FROZEN_LINE, "", 1) + text[stage_end:]
    path.write_text(thawed)
    try:
        return subprocess.run([sys.executable, "-m", "dvc", "repro", "tune"], check=False).returncode
    finally:
        path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Run the tuning grid (run) or write its choice into params.yaml (apply)."
    )
    ap.add_argument("command", choices=["run", "apply"])
    ap.add_argument("--chosen", default="tuning/chosen.yaml")
    ap.add_argument("--params-file", default="params.yaml")
    args = ap.parse_args(argv)
    if args.command == "run":
        code = run_stage()
        if code:
            return code
    chosen = apply(args.chosen, args.params_file)
    print(yaml.safe_dump(chosen, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
