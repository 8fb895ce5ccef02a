"""Run the whole study on real logs: ``python -m dmtl.realdata kuairand DIR`` (or ``generic DIR``).

Executes every stage notebook with papermill into an output folder (default ``results/<source>``) with
``data.source`` and ``data.path`` overridden, so the study's own pipeline, unchanged, runs on the logs and
renders its report there. Sweeps are not run (``--sweeps`` runs them all, ``--sweeps unexposed objective``
the ones named); the simulator's
oracle metrics are skipped automatically and the documented real-data ``bait_share`` rule is used.

Before any notebook runs, the parameters are validated and the log is checked against them
(:func:`dmtl.checks.preflight`); any failure is one ``ERROR`` line naming a log file with the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dmtl import dag
from dmtl import params as P
from dmtl.config import Study
from dmtl.notebook import execute


def run_study(
    root: str | Path,
    overrides: dict[str, Any],
    params_file: str = "params.yaml",
    sweeps: bool | Sequence[str] = False,
) -> Path:
    """Execute the stage table's notebooks in order into ``root``; return the rendered report's path.

    ``sweeps``: ``True`` runs every sweep of ``sweeps.grid`` before the report, a list of names those only."""
    from dmtl.checks import preflight

    root = Path(root)
    study = P.load(params_file, overrides)  # validate before any work
    names = list(study.sweeps.grid) if sweeps is True else list(sweeps or [])
    unknown = sorted(set(names) - set(study.sweeps.grid))
    if unknown:
        raise ValueError(f"unknown sweep(s) {unknown}; valid: {list(study.sweeps.grid)} (sweeps.grid)")
    preflight(study)  # the log's size against the parameters, in seconds, before any notebook runs
    common = {"params_file": params_file, "root": str(root), "overrides": json.dumps(overrides)}
    report = None
    for stage in dag.STAGES:
        if stage.name == "sweep":
            if names:
                _run_sweeps(study, root, params_file, overrides, names)
            continue
        if stage.notebook is None:
            continue
        items = list(study.students.names) if stage.foreach == "students.names" else [None]
        for item in items:
            extra = {k: v.replace("${item}", item) for k, v in stage.notebook_params.items()} if item else {}
            stem = stage.report.replace("${item}", item) if item else stage.report
            report = execute(stage.notebook, root / stem, {**common, **extra})
    assert report is not None, "the stage table has no notebook stage"
    return report


def _run_sweeps(
    study: Study, root: Path, params_file: str, overrides: dict[str, Any], names: Sequence[str]
) -> None:
    from dmtl.paths import Paths
    from dmtl.sweep import run_sweep

    for name in names:
        spec = study.sweeps.grid[name]
        if spec.param.startswith("data.sim") and study.data.source != "simulated":
            continue
        run_sweep(
            spec,
            root / "sweeps" / name,
            Paths(root).sweeps / name,
            params_file,
            base_root=root,
            extra_overrides=overrides,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", choices=["kuairand", "generic"])
    ap.add_argument("path", help="directory of the log files")
    ap.add_argument("--out", help="output folder (default results/<source>)")
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides, e.g. train.seeds=[0,1,2]"
    )
    ap.add_argument("--params-file", default="params.yaml")
    ap.add_argument(
        "--sweeps",
        nargs="*",
        metavar="NAME",
        help="also run the sweeps of params.yaml (slow): all of them, or the ones named",
    )
    args = ap.parse_args(argv)
    from dmtl.cli import parse_assignments, run_main

    def body() -> int:
        overrides: dict[str, Any] = {"data.source": args.source, "data.path": str(Path(args.path).resolve())}
        overrides.update(parse_assignments(args.set))
        out = Path(args.out or Path("results") / args.source)
        sweeps = False if args.sweeps is None else (args.sweeps or True)
        report = run_study(out, overrides, args.params_file, sweeps=sweeps)
        print(f"report: {report.with_suffix('.html')}")
        return 0

    return run_main("dmtl.realdata", body, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
