"""What the training benchmarks share: the study's data and models, the model-only step, the loop's clock.

``bench_roofline.py`` (the machine's limit) and ``bench_training.py`` (the peer comparison) both time
this project's training two ways:

Model-only
    Forward + loss + backward + Adam step of a Lightning module's own ``train_loss`` and
    ``configure_optimizers`` on batches gathered in memory beforehand: the fastest any training loop
    could go with this model (the optimizer step is included because no loop can skip it).
Whole loop
    The study's own :func:`dmtl.training.fit` (Lightning, :class:`dmtl.data.BatchStream`, the study's
    ``train.steps_per_call``), timed from each training epoch's start to its last batch (validation
    excluded) by :class:`EpochTimer`.

Both run with ``torch.use_deterministic_algorithms(True)``, as ``fit`` does (``deterministic=True``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from dmtl import params as P
from dmtl.config import StudentConfig, Study, TeacherConfig, TowersConfig, TrainConfig
from dmtl.data import BatchStream, ImpressionTensors
from dmtl.features import Prepared, prepare
from dmtl.modules import StudentModule, TeacherModule, build_student, build_teacher
from dmtl.objectives import StudentObjective, item_log_q
from dmtl.sources.registry import load_source
from dmtl.training import fit

REPO = Path(__file__).resolve().parents[1]
Batch = Mapping[str, torch.Tensor]
Step = Callable[[Batch], None]


# ------------------------------------------------------------------------------------------------ study


def study_params(
    overrides: Mapping[str, Any] | None = None, params_file: Path = REPO / "params.yaml"
) -> Study:
    """The study's validated parameters (``params.yaml``), with dotted-key ``overrides``."""
    return P.load(params_file, dict(overrides or {}))


def prepared_data(study: Study) -> Prepared:
    """The study's data (``data.*``: the simulated world ``data.sim_seed`` by default), prepared as the
    study prepares it."""
    feed, _ = load_source(study.data)
    return prepare(feed, study.data.val_days, study.data.test_days, study.data.tau)


def timing_soft_labels(prepared: Prepared, seed: int = 0) -> np.ndarray:
    """Stand-in soft labels for timing a distilling student without training a teacher first.

    A step's cost does not depend on the label values; these are uniform in [0, 0.1], the range of the
    teacher's ``p_ctcvr`` on the simulated feed.
    """
    n = len(prepared.impressions)
    return np.random.default_rng(seed).uniform(0.0, 0.1, n).astype(np.float32)


def new_teacher(prepared: Prepared, cfg: TeacherConfig, seed: int) -> TeacherModule:
    """A fresh teacher module of configuration ``cfg`` (seeded)."""
    torch.manual_seed(seed)
    return TeacherModule(build_teacher(prepared.cardinalities, cfg), cfg)


def new_student(
    prepared: Prepared, common: TowersConfig, student: StudentConfig, seed: int, data: ImpressionTensors
) -> StudentModule:
    """A fresh two-tower student module (seeded) under the study's objective, as the student stage builds
    it in the two-stage regime without unexposed pairs (``students.<name>.unexposed_ratio`` = 0)."""
    log_q = None
    if common.objective == "sampled_softmax":  # log-Q of the logged training items only (no pairs)
        counts = data.item_counts("train").astype(np.float64)
        log_q = item_log_q(np.zeros(len(counts)), counts, 0.0)
    duration_scale = prepared.meta["mean_clicked_train_duration"]
    objective = StudentObjective(student, common.objective, duration_scale, log_q, common.softmax_negatives)
    torch.manual_seed(seed)
    model = build_student(prepared.cardinalities, common, student)
    return StudentModule(model, student, objective, duration_cap=prepared.meta["duration_cap_seconds"])


def train_config(train: TrainConfig, batch_size: int, epochs: int, threads: int) -> TrainConfig:
    """The study's ``train`` group on one CPU process, for exactly ``epochs`` epochs (no early stop)."""
    return dataclasses.replace(
        train,
        batch_size=batch_size,
        max_epochs=epochs,
        patience=epochs + 1,
        accelerator="cpu",
        devices=1,
        strategy="auto",
        num_nodes=1,
        precision="32-true",
        threads=threads,
    )


# ------------------------------------------------------------------------------------------------ timing


@contextlib.contextmanager
def deterministic(on: bool = True) -> Iterator[None]:
    """``fit`` trains with ``deterministic=True``; the model-only runs must too."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def gather_batches(
    data: ImpressionTensors, batch_size: int, seed: int, max_samples: int | None = None
) -> list[dict[str, torch.Tensor]]:
    """Shuffled training batches gathered into memory, as the loop's first epoch would see them."""
    stream = BatchStream(data, data.indices("train"), batch_size, shuffle=True, seed=seed)
    batches = []
    for batch in stream:
        batches.append(batch)
        if max_samples is not None and len(batches) * batch_size >= max_samples:
            break
    return batches


def model_only_step(module: L.LightningModule, optimizer: torch.optim.Optimizer | None = None) -> Step:
    """One training step of ``module`` on an in-memory batch: forward, loss, backward, optimizer step.

    ``optimizer`` defaults to the module's own (``configure_optimizers``), i.e. the study's Adam.
    """
    opt = optimizer if optimizer is not None else module.configure_optimizers()
    module.train()

    def step(batch: Batch) -> None:
        opt.zero_grad(set_to_none=True)
        loss = module.train_loss(batch)
        loss.backward()
        opt.step()

    return step


def samples_per_second(step: Step, batches: Sequence[Batch], warmup: int = 1) -> float:
    """Samples per second of ``step`` over ``batches``, after ``warmup`` untimed steps."""
    for batch in batches[:warmup]:
        step(batch)
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    return sum(len(b["click"]) for b in batches) / (time.perf_counter() - start)


class EpochTimer(L.Callback):
    """Seconds and samples of each training epoch, from its start to the last training batch.

    The clock starts before the epoch's DataLoader iterator is built (so shuffling and batch gathering
    count) and stops where validation starts or, without validation, where the epoch ends.
    """

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.samples: list[int] = []
        self._start: float | None = None
        self._n = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._n = time.perf_counter(), 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # A training step takes a group of batches (train.steps_per_call).
        self._n += sum(len(b["click"]) for b in batch) if isinstance(batch, list) else len(batch["click"])

    def _stop(self) -> None:
        if self._start is not None:
            self.seconds.append(time.perf_counter() - self._start)
            self.samples.append(self._n)
            self._start = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop()

    def samples_per_second(self) -> float:
        return sum(self.samples) / sum(self.seconds)


def loop_figures(
    module: L.LightningModule, data: ImpressionTensors, train: TrainConfig, seed: int
) -> dict[str, float]:
    """Train with the study's own ``fit`` and time its training epochs (validation excluded)."""
    timer = EpochTimer()
    start = time.perf_counter()
    fit(module, data, train, seed, extra_callbacks=[timer])
    return {
        "samples_per_second": timer.samples_per_second(),
        "train_seconds": sum(timer.seconds),
        "fit_seconds": time.perf_counter() - start,
        "train_samples": sum(timer.samples),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
