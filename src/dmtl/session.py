"""The first cell of every stage notebook: find the study, load its params, and decide where to write.

A notebook runs in three places, and :func:`start` makes each one work:

- **The pipeline** (``dvc repro``, the real-data runner, sweeps: :mod:`dmtl.notebook` sets
  ``DMTL_PIPELINE=1``): it reads and writes under ``root`` exactly as told.
- **JupyterLab** ("Run All" with the kernel started in ``notebooks/``) or a direct ``papermill`` call: relative
  paths are resolved against the repository (the folder holding ``params.yaml`` and ``dvc.yaml``, found by
  walking up from the working folder), and the default ``root`` (the repository itself) is replaced by
  ``scratch/``, so the pipeline's tracked outputs are never overwritten behind DVC's back (pass
  ``allow_overwrite=True`` to write there anyway). What the stage reads (its ``reads`` in the stage table
  :data:`dmtl.dag.STAGES`) is linked from the repository into the scratch folder when it is not there yet.
- A wrong ``root``: the stage's inputs are checked before any work, with one message naming what is missing
  and how to make it.
"""

from __future__ import annotations

import os
from pathlib import Path

from dmtl import dag
from dmtl import params as P
from dmtl.config import ParamsError, Study
from dmtl.io import link_dir
from dmtl.paths import Paths

PIPELINE_ENV = "DMTL_PIPELINE"
SCRATCH = "scratch"
OPTIONAL_READS = ("data", "sweeps")
"""Inputs a stage runs without: the raw-data folder (empty for the simulator) and the sweeps (the report
says which were not run)."""


def find_repo(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (the working folder) that holds the study's ``dvc.yaml``
    and ``params.yaml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
            return folder
    return None


def in_pipeline() -> bool:
    return os.environ.get(PIPELINE_ENV) == "1"


def _resolve(path: str | Path, repo: Path | None) -> Path:
    path = Path(path)
    return path if path.is_absolute() or repo is None else repo / path


def _stage_paths(stage: dag.Stage, item: str | None) -> tuple[list[str], list[str]]:
    """What ``stage`` reads and writes, with ``${item}`` filled in."""
    fill = (lambda p: p.replace("${item}", item)) if item else (lambda p: p)
    writes = [*stage.outs, *stage.uncached, *stage.metrics, *(p for p, _ in stage.plots)]
    return [fill(p) for p in stage.reads], [fill(p) for p in writes]


def _link_inputs(repo: Path, root: Path, reads: list[str], writes: list[str]) -> None:
    """Link what the stage reads from the repository into ``root``; never keep a link where it writes."""
    for rel in writes:
        target = root / rel
        if target.is_symlink():
            target.unlink()  # writing through it would change the pipeline's own output
    for rel in reads:
        source, target = repo / rel, root / rel
        if source.exists() and not (target.exists() or target.is_symlink()):
            link_dir(source, target)


def _check_inputs(root: Path, reads: list[str], stage: dag.Stage) -> None:
    missing = [rel for rel in reads if not (root / rel).exists() and rel not in OPTIONAL_READS]
    if missing:
        raise ParamsError(
            f"root = {str(root)!r}: stage {stage.name!r} reads {missing}, which are not there. Fix: run the "
            f"earlier stages first (`dvc repro {stage.name}` runs them in the repository), or set root to a "
            "folder of a study run that has them"
        )


def start(
    params_file: str | Path,
    root: str | Path,
    overrides: str,
    stage: str,
    item: str | None = None,
    allow_overwrite: bool = False,
) -> tuple[Study, Paths]:
    """Load the study's params and return them with the paths the notebook of ``stage`` reads and writes.

    Args:
        params_file: the params file (relative paths: to the repository).
        root: where the stage reads and writes (relative paths: to the repository).
        overrides: dotted-key overrides as JSON.
        stage: the stage-table name of the notebook's stage (``prepare``, ``teacher``, ``student``, ...).
        item: the ``foreach`` item (the student's name).
        allow_overwrite: outside the pipeline, write into the repository's own outputs anyway.

    Raises:
        ParamsError: bad params, or the stage's inputs are not under ``root``.
    """
    repo = find_repo()
    study = P.load(_resolve(params_file, repo), overrides)
    target = _resolve(root, repo).resolve()
    spec = dag.stage(stage)
    reads, writes = _stage_paths(spec, item)
    if not in_pipeline() and repo is not None and target == repo and not allow_overwrite:
        target = repo / SCRATCH
        print(
            f"Not run by the pipeline: writing into {target} so the pipeline's outputs stay as DVC recorded "
            "them (set allow_overwrite=True to write into the repository itself)."
        )
        _link_inputs(repo, target, reads, writes)
    _check_inputs(target, reads, spec)
    return study, Paths(target)
