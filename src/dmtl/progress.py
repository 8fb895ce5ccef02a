"""One progress line per trained model and seed, on the terminal that runs the stage.

``dvc repro`` runs each stage as ``python -m dmtl.notebook``, which executes the notebook in a Jupyter
kernel; what the kernel prints goes into the notebook, not to the terminal, so a stage used to run for
minutes without a line. :class:`ProgressLine` (a Lightning callback that :func:`dmtl.training.fit` adds to
every run) writes, when a model has finished training::

    teacher (mmoe) seed 1 (2/3): 4 epochs, 12.3 s
    [hard_weight=0.5] dmtl seed 0 (1/3): 5 epochs, 8.1 s

In a kernel the line goes to the kernel process's own stderr, which is the terminal of ``dvc repro`` (the
kernel inherits it from ``dmtl.notebook``), and is kept out of the notebook and its HTML report. Anywhere
else (tests, in-process sweeps) it goes to ``sys.stderr``.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

_context = ""


def set_context(text: str) -> None:
    """A prefix for the lines that follow (a sweep point sets ``param=value``); empty for none."""
    global _context
    _context = text


def describe(module: L.LightningModule) -> str:
    """What is being trained, in the study's words: a student's name, or the teacher and its backbone."""
    name = getattr(getattr(module, "student", None), "name", None)  # a StudentModule's StudentConfig
    if isinstance(name, str):
        return name
    model = getattr(module, "model", None)
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return type(module).__name__
    return f"teacher ({backbone}{'' if getattr(model, 'esmm', True) else ', no ESMM'})"


def line(what: str, seed: int, seeds: Sequence[int] | None, epochs: int, seconds: float) -> str:
    """``<context> <what> seed <s> (<i>/<n>): <epochs> epochs, <seconds> s``."""
    seeds = list(seeds or [])
    where = f" ({seeds.index(seed) + 1}/{len(seeds)})" if seed in seeds else ""
    prefix = f"[{_context}] " if _context else ""
    return f"{prefix}{what} seed {seed}{where}: {epochs} epoch{'s' if epochs != 1 else ''}, {seconds:.1f} s"


def emit(text: str) -> None:
    """Write ``text`` as one line to the terminal that runs this process (see the module docstring)."""
    from dmtl.plots import in_kernel

    data = (text + "\n").encode("utf-8", errors="replace")
    if in_kernel():
        try:
            # ipykernel's stderr stream forwards writes to the notebook; its fileno() is the kernel
            # process's original stderr (a copy ipykernel keeps for subprocesses), which reaches the terminal.
            os.write(sys.stderr.fileno(), data)
            return
        except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
            stream = sys.__stderr__
    else:
        stream = sys.stderr
    if stream is not None:
        stream.write(text + "\n")
        stream.flush()


class ProgressLine(Callback):
    """Emits one line when training ends: what was trained, its seed, epochs run and seconds taken."""

    def __init__(self, seed: int, seeds: Sequence[int] | None = None) -> None:
        self.seed = seed
        self.seeds = list(seeds) if seeds is not None else None
        self._t0 = 0.0
        self._epochs = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._epochs = time.perf_counter(), 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epochs += 1

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:  # one line per run, not one per DDP process
            return
        seconds = time.perf_counter() - self._t0
        emit(line(describe(pl_module), self.seed, self.seeds, self._epochs, seconds))

    def state_dict(self) -> dict[str, Any]:
        return {}
