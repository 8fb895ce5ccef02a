"""Training throughput: this project's loop against torch-rechub's, and against the model-only limit.

Usage::

    python benchmarks/bench_training.py --out benchmarks/results/training.json
    python benchmarks/bench_training.py --preset tiny --repeats 1          # a quick smoke run

Two figures per model (the MMoE+ESMM teacher and the two-tower student), on the simulator's ``default``
preset prepared once with :func:`dmtl.features.prepare`, so both libraries train on the same encoded arrays:

Peer benchmark
    The same architecture trained by this project (Lightning, :func:`dmtl.training.fit` on
    :class:`dmtl.data.BatchStream`) and by torch-rechub 0.9 with its own documented trainer and data path
    (``MTLTrainer`` / ``MatchTrainer`` fed by ``DataGenerator`` / ``TorchDataset`` DataLoaders, features as
    a dict of numpy arrays as in its multi-task example), same features, batch size, epochs (3, no early
    stop), learning rate and threads. Throughput is training samples per second of the training epochs
    (validation excluded on both sides); each side's test AUCs show the speed is not bought with quality.
    Each side keeps its own end of training: ``fit`` restores the epoch with the best validation loss,
    torch-rechub keeps its last weights (its early stopper restores only when it stops early).
Model-only limit
    Forward + loss + backward + optimizer step of the same model on batches already gathered in memory: the
    fastest any training loop could go (the step is included because no loop can skip it). ``loop /
    model-only`` is the share of time the loop spends on the model, so ``1 - share`` is what its data path
    and bookkeeping cost.
Data path alone
    Each library's batches without a model: an epoch of ``BatchStream`` against torch-rechub's DataLoader
    (and, for context, the same DataLoader fed a pandas DataFrame, as torch-rechub's ranking examples do).

Architectures (what "same" means here): the teacher has 12 sparse features (6 user, 5 item, 1 position),
16-d embeddings, 4 experts of [128, 64], towers [32] -> 1, ESMM ``p_ctcvr = p_ctr * p_cvr`` with BCE on
click and on click * long read. torch-rechub's ``MMOE`` gives the two task probabilities; a 3-line wrapper
multiplies them into ``p_ctcvr`` so its ``MTLTrainer`` trains exactly the ESMM loss. The student is a
two-tower model with towers [64, 32] per side trained on the teacher's ``p_ctcvr`` as soft labels
(DMTL's two-stage regime); torch-rechub's ``DSSM`` is trained by ``MatchTrainer`` in point-wise mode (BCE on
the same soft labels). Differences that belong to torch-rechub's design are kept, not patched: its MLP puts
BatchNorm after every linear layer (gates included), its DSSM scores ``sigmoid(cosine)`` and its embeddings
start at N(0, 1e-4). They change the model's cost per sample, which is why each side's model-only limit is
reported too: the speed-up then splits into model cost and data-path cost.

Its DSSM does not learn this task, and that is its design, not a bug of this harness: each tower ends in
BatchNorm + ReLU before the L2 normalisation, so both embeddings are non-negative, the cosine lies in
[0, 1] and the score ``sigmoid(cosine)`` in [0.5, 0.731]. The soft labels average a few percent, so BCE
drives every score to the 0.5 floor and the ranking collapses (test AUC about 0.5; the score range and the
labels' mean are recorded). The AUC check ("on par") asks that this project's AUC is not more than 0.01
below torch-rechub's, so the student's figure passes it, but the student speed-up compares a model that
learns with one that does not, at the same cost per step.

Why 10x is out of reach here: no loop beats its own model-only limit, so the speed-up is bounded by this
project's model-only throughput over torch-rechub's whole loop (``notebooks/benchmarks.ipynb`` computes
that bound from the results). Fed a dict of numpy arrays (its multi-task example), torch-rechub's loop keeps
a large share of its own model-only speed, and its model-only speed is close to ours (the same GEMMs, plus
its BatchNorm), so the bound is a few x, not 10x. Its loop falls below a tenth of ours only when fed a
pandas DataFrame, as its ranking examples do; that ratio is recorded as context, not as the result.

No assertion on speed anywhere: a machine's speed is not a property of the code. The figures are printed
and written as JSON, with the load average at the start and end, since the machine may be shared.
"""

from __future__ import annotations

import os

# tqdm reads this when torch-rechub's trainers create their per-batch progress bars, which would flood the
# log and cost both libraries' comparison a little time on torch-rechub's side only.
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from dmtl import params as P  # noqa: E402
from dmtl.data import BatchStream, ImpressionTensors  # noqa: E402
from dmtl.features import Prepared, prepare  # noqa: E402
from dmtl.io import write_json  # noqa: E402
from dmtl.metrics import auc  # noqa: E402
from dmtl.models.two_tower import TwoTower  # noqa: E402
from dmtl.sources.simulator.config import PRESETS, make_config  # noqa: E402
from dmtl.sources.simulator.world import simulate  # noqa: E402
from dmtl.training import (  # noqa: E402
    StudentModule,
    TeacherModule,
    build_teacher,
    fit,
    predict_teacher,
    quiet_lightning,
)

REPO = Path(__file__).resolve().parents[1]
# The configuration of the measurement (see the module docstring); lr and weight decay are the
# study's (params.yaml), used on both sides.
TEACHER_HP: dict[str, Any] = {
    "backbone": "mmoe",
    "esmm": True,
    "n_experts": 4,
    "expert_dims": [128, 64],
    "tower_dims": [32],
    "emb_dim": 16,
    "lr": 0.003,
    "weight_decay": 0.0,
    "w_ctr": 1.0,
    "w_ctcvr": 1.0,
    "w_duration": 0.0,
    "position": "feature",
}
STUDENT_HP: dict[str, Any] = {
    "emb_dim": 16,
    "tower_dims": [64],
    "out_dim": 32,
    "lr": 0.003,
    "weight_decay": 0.0,
    "loss": "bce",
    "hard_weight": 0.0,
}
# Lightning steps group this many batches, as in the study (params.yaml train.steps_per_call).
STEPS_PER_CALL: int = P.load(REPO / "params.yaml")["train"]["steps_per_call"]
TARGET_SPEEDUP = 10.0
TARGET_LOOP_SHARE = 0.90
TARGET_AUC_GAP = 0.01  # "on par": this project's test AUC at most this far below torch-rechub's


# ------------------------------------------------------------------------------------------------ data


def peer_data(preset: str, params_file: Path = REPO / "params.yaml") -> Prepared:
    """The study's simulated world (``data.sim_seed``) at ``preset``, prepared as the study prepares it;
    both libraries read its encoded arrays."""
    data = P.load(params_file, {"data.preset": preset})["data"]
    log, _ = simulate(make_config(preset, data["sim"]), data["sim_seed"])
    return prepare(log, data["val_days"], data["test_days"], data["tau"])


def feature_columns(data: ImpressionTensors, prepared: Prepared, rows: torch.Tensor) -> dict[str, np.ndarray]:
    """torch-rechub's input format: one int64 array per feature name, one entry per impression row."""
    meta = prepared.meta
    user = data.user_table[data.user_idx[rows]].numpy()
    item = data.item_table[data.item_idx[rows]].numpy()
    ctx = data.context[rows].numpy()
    out = {name: user[:, j] for j, name in enumerate(meta["user_features"])}
    out |= {name: item[:, j] for j, name in enumerate(meta["item_features"])}
    out |= {name: ctx[:, j] for j, name in enumerate(meta["context_features"])}
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _labels(data: ImpressionTensors, rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    click = data.click[rows].numpy().astype(np.int64)
    return click, click * data.long_read[rows].numpy().astype(np.int64)


# -------------------------------------------------------------------------------------------- timing


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


def _steps_per_second(step: Callable[[Any], None], batches: Sequence[Any]) -> float:
    """Samples per second of ``step`` over ``batches`` (each with ``n`` rows), after one warm-up step."""
    step(batches[0][1])
    start = time.perf_counter()
    for _, batch in batches:
        step(batch)
    return sum(n for n, _ in batches) / (time.perf_counter() - start)


@contextlib.contextmanager
def _deterministic(on: bool):
    """make_trainer runs with ``deterministic=True``; the model-only run of our models must too."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


# -------------------------------------------------------------------------------------- this project


def _train_params(batch_size: int, epochs: int, threads: int) -> dict[str, Any]:
    # patience > epochs: no early stop, so both libraries train exactly ``epochs`` epochs.
    return {
        "batch_size": batch_size,
        "max_epochs": epochs,
        "patience": epochs + 1,
        "accelerator": "cpu",
        "devices": 1,
        "strategy": "auto",
        "num_nodes": 1,
        "precision": "32-true",
        "threads": threads,
        "steps_per_call": STEPS_PER_CALL,
    }


def _cards(prepared: Prepared) -> dict[str, list[int]]:
    return {
        "user": prepared.user_cardinalities,
        "item": prepared.item_cardinalities,
        "context": prepared.context_cardinalities,
    }


def _new_teacher(prepared: Prepared, seed: int) -> TeacherModule:
    torch.manual_seed(seed)
    return TeacherModule(build_teacher(_cards(prepared), TEACHER_HP), TEACHER_HP)


def _new_student(prepared: Prepared, seed: int) -> StudentModule:
    torch.manual_seed(seed)
    model = TwoTower(
        prepared.user_cardinalities,
        prepared.item_cardinalities,
        emb_dim=STUDENT_HP["emb_dim"],
        tower_dims=tuple(STUDENT_HP["tower_dims"]),
        out_dim=STUDENT_HP["out_dim"],
    )
    return StudentModule(
        model, "dmtl", STUDENT_HP, duration_scale=prepared.meta["mean_clicked_train_duration"]
    )


def ours_model_only(module: L.LightningModule, data: ImpressionTensors, batch_size: int, seed: int) -> float:
    """Samples/s of forward + loss + backward + Adam step on one epoch's batches, gathered beforehand."""
    stream = BatchStream(data, data.indices("train"), batch_size, shuffle=True, seed=seed)
    batches = [(len(b["click"]), b) for b in stream]
    opt = module.configure_optimizers()
    module.train()

    def step(batch: Mapping[str, torch.Tensor]) -> None:
        opt.zero_grad(set_to_none=True)
        loss = module._loss(batch)
        loss = loss[0] if isinstance(loss, tuple) else loss  # the teacher also returns its loss terms
        loss.backward()
        opt.step()

    with _deterministic(True):
        return _steps_per_second(step, batches)


def ours_fit(
    module: L.LightningModule, data: ImpressionTensors, batch_size: int, epochs: int, threads: int, seed: int
) -> dict[str, float]:
    """Train with the study's own ``fit`` and time its training epochs."""
    timer = EpochTimer()
    start = time.perf_counter()
    fit(module, data, _train_params(batch_size, epochs, threads), seed, extra_callbacks=[timer])
    return {
        "samples_per_second": timer.samples_per_second(),
        "train_seconds": sum(timer.seconds),
        "fit_seconds": time.perf_counter() - start,
        "train_samples": sum(timer.samples),
    }


@torch.no_grad()
def _student_logits(module: StudentModule, data: ImpressionTensors, rows: torch.Tensor) -> np.ndarray:
    module.eval()
    parts = [module(data.batch(rows[s : s + 65536])).numpy() for s in range(0, len(rows), 65536)]
    return np.concatenate(parts)


# ------------------------------------------------------------------------------------------ torch-rechub


class RechubMMoEESMM(nn.Module):
    """torch-rechub's ``MMOE`` with the ESMM product on top: outputs ``[p_ctr, p_ctr * p_cvr]``.

    ``MTLTrainer`` then minimises ``(BCE(y_c, p_ctr) + BCE(y_c * y_d, p_ctcvr)) / 2``: the teacher's loss
    (halved, which Adam's scale invariance makes immaterial). The model stays torch-rechub's own.
    """

    def __init__(self, mmoe: nn.Module):
        super().__init__()
        self.mmoe = mmoe

    def forward(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        p = self.mmoe(x)
        return torch.cat([p[:, :1], p[:, :1] * p[:, 1:2]], dim=1)


def _sparse_features(prepared: Prepared, names: Sequence[str], side: str) -> list[Any]:
    from torch_rechub.basic.features import SparseFeature

    cards = {"user": prepared.user_cardinalities, "item": prepared.item_cardinalities}.get(
        side, prepared.context_cardinalities
    )
    return [
        SparseFeature(n, vocab_size=int(c), embed_dim=TEACHER_HP["emb_dim"])
        for n, c in zip(names, cards, strict=True)
    ]


def rechub_teacher_model(prepared: Prepared, seed: int) -> RechubMMoEESMM:
    """torch-rechub's MMoE with this study's teacher configuration."""
    from torch_rechub.models.multi_task import MMOE

    meta = prepared.meta
    features = (
        _sparse_features(prepared, meta["user_features"], "user")
        + _sparse_features(prepared, meta["item_features"], "item")
        + _sparse_features(prepared, meta["context_features"], "context")
    )
    torch.manual_seed(seed)
    mmoe = MMOE(
        features,
        task_types=["classification", "classification"],
        n_expert=TEACHER_HP["n_experts"],
        expert_params={"dims": list(TEACHER_HP["expert_dims"])},
        tower_params_list=[{"dims": list(TEACHER_HP["tower_dims"])}] * 2,
    )
    return RechubMMoEESMM(mmoe)


def rechub_student_model(prepared: Prepared, seed: int) -> nn.Module:
    """torch-rechub's DSSM with this study's tower widths ([64] hidden, 32-d output)."""
    from torch_rechub.models.matching import DSSM

    meta = prepared.meta
    dims = {"dims": [*STUDENT_HP["tower_dims"], STUDENT_HP["out_dim"]]}
    torch.manual_seed(seed)
    return DSSM(
        _sparse_features(prepared, meta["user_features"], "user"),
        _sparse_features(prepared, meta["item_features"], "item"),
        user_params=dims,
        item_params=dims,
    )


def _timed_epochs(trainer: Any) -> list[float]:
    """Wrap ``trainer.train_one_epoch`` (instance attribute only) to record each epoch's seconds."""
    seconds: list[float] = []
    inner = trainer.train_one_epoch

    def timed(loader: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = inner(loader, *args, **kwargs)
        seconds.append(time.perf_counter() - start)
        return out

    trainer.train_one_epoch = timed
    return seconds


def rechub_fit(
    kind: str,
    model: nn.Module,
    x_train: dict[str, np.ndarray],
    y_train: np.ndarray,
    x_val: dict[str, np.ndarray] | None,
    y_val: np.ndarray | None,
    batch_size: int,
    epochs: int,
    workers: int,
    as_frame: bool = False,
) -> dict[str, float]:
    """Train with torch-rechub's trainer and DataLoaders; time its training epochs.

    ``kind`` is ``"mtl"`` (``MTLTrainer``, validation AUC each epoch as its ``fit`` does) or ``"match"``
    (``MatchTrainer`` point-wise; no validation loader, since its AUC needs hard labels and the student's
    targets are soft). ``as_frame`` feeds the training features as a pandas DataFrame (see
    :func:`rechub_data_path`).
    """
    from torch_rechub.trainers import MatchTrainer, MTLTrainer
    from torch_rechub.utils.data import DataGenerator

    opt = {"lr": TEACHER_HP["lr"] if kind == "mtl" else STUDENT_HP["lr"], "weight_decay": 0.0}
    with tempfile.TemporaryDirectory(prefix="dmtl-rechub-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        if kind == "mtl":
            import pandas as pd

            gen = DataGenerator(pd.DataFrame(x_train) if as_frame else x_train, y_train)
            train_dl, val_dl, _ = gen.generate_dataloader(
                x_val, y_val, x_val, y_val, batch_size=batch_size, num_workers=workers
            )
            trainer = MTLTrainer(
                model,
                task_types=["classification", "classification"],
                optimizer_params=opt,
                n_epoch=epochs,
                earlystop_patience=epochs + 1,
                device="cpu",
                model_path=tmp,
            )
            seconds = _timed_epochs(trainer)
            start = time.perf_counter()
            trainer.fit(train_dl, val_dl)
        else:
            # DataGenerator's train loader is the one MatchDataGenerator builds (TorchDataset, shuffled).
            gen = DataGenerator(x_train, y_train)
            train_dl = torch.utils.data.DataLoader(
                gen.dataset, batch_size=batch_size, shuffle=True, num_workers=workers
            )
            trainer = MatchTrainer(
                model, mode=0, optimizer_params=opt, n_epoch=epochs, device="cpu", model_path=tmp
            )
            seconds = _timed_epochs(trainer)
            start = time.perf_counter()
            trainer.fit(train_dl)
        fit_seconds = time.perf_counter() - start
    n = len(y_train) * epochs
    return {
        "samples_per_second": n / sum(seconds),
        "train_seconds": sum(seconds),
        "fit_seconds": fit_seconds,
        "train_samples": n,
    }


def rechub_model_only(
    kind: str, model: nn.Module, x: dict[str, np.ndarray], y: np.ndarray, batch_size: int, seed: int
) -> float:
    """Samples/s of torch-rechub's training-step body (forward, its loss, backward, Adam) on in-memory
    batches: what its ``train_one_epoch`` does, minus its DataLoader."""
    from torch_rechub.basic.loss_func import RegularizationLoss

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g).numpy()
    xt = {k: torch.from_numpy(v[perm]) for k, v in x.items()}
    yt = torch.from_numpy(np.asarray(y)[perm])
    batches = []
    for s in range(0, len(yt), batch_size):
        batches.append(
            (
                len(yt[s : s + batch_size]),
                ({k: v[s : s + batch_size] for k, v in xt.items()}, yt[s : s + batch_size]),
            )
        )
    lr = TEACHER_HP["lr"] if kind == "mtl" else STUDENT_HP["lr"]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=0.0)
    bce = nn.BCELoss()
    reg = RegularizationLoss(embedding_l1=0.0, embedding_l2=0.0, dense_l1=0.0, dense_l2=0.0)
    model.train()

    def step(batch: tuple[dict[str, torch.Tensor], torch.Tensor]) -> None:
        xb, yb = batch
        pred = model(xb)
        if kind == "mtl":
            losses = [bce(pred[:, i], yb[:, i].float()) for i in range(2)]
            loss = sum(losses) / 2
        else:
            losses = [bce(pred, yb.float())]
            loss = losses[0]
        loss = loss + reg(model)
        model.zero_grad()
        loss.backward()
        opt.step()
        [v.item() for v in losses]  # noqa: B018 -- its loop reads every loss back, so ours does too

    return _steps_per_second(step, batches)


@torch.no_grad()
def _rechub_predict(model: nn.Module, x: dict[str, np.ndarray]) -> np.ndarray:
    model.eval()
    n = len(next(iter(x.values())))
    parts = []
    for s in range(0, n, 65536):
        parts.append(model({k: torch.from_numpy(v[s : s + 65536]) for k, v in x.items()}).numpy())
    return np.concatenate(parts)


# ------------------------------------------------------------------------------------------ data paths


def ours_data_path(data: ImpressionTensors, batch_size: int, seed: int) -> float:
    """Samples/s of this project's data path alone: one epoch of :class:`BatchStream` batches, no model."""
    stream = BatchStream(data, data.indices("train"), batch_size, shuffle=True, seed=seed)
    start = time.perf_counter()
    n = sum(len(b["click"]) for b in stream)
    return n / (time.perf_counter() - start)


def rechub_data_path(
    x: dict[str, np.ndarray], y: np.ndarray, batch_size: int, as_frame: bool = False
) -> float:
    """Samples/s of torch-rechub's training DataLoader alone (``DataGenerator``, no model).

    ``as_frame`` passes the features as one pandas DataFrame, as torch-rechub's ranking examples do
    (``DataGenerator(df[features], y)``), instead of a dict of numpy arrays as its multi-task example does;
    ``TorchDataset`` then indexes a pandas Series per feature and sample.
    """
    import pandas as pd
    from torch_rechub.utils.data import DataGenerator

    features: Any = pd.DataFrame(x) if as_frame else x
    loader, _, _ = DataGenerator(features, y).generate_dataloader(x, y, x, y, batch_size=batch_size)
    start = time.perf_counter()
    n = sum(len(yb) for _, yb in loader)
    return n / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------- driver


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _summary(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    return {
        "this_project": ours,
        "torch_rechub": peer,
        "speedup": ours["samples_per_second"] / peer["samples_per_second"],
        "model_only_speedup": ours["model_only_samples_per_second"] / peer["model_only_samples_per_second"],
        "auc_gap_click": ours["auc_click"] - peer["auc_click"],
        "auc_gap_ctcvr": ours["auc_ctcvr"] - peer["auc_ctcvr"],
    }


def run(
    preset: str = "default",
    seed: int = 0,
    batch_size: int = 2048,
    epochs: int = 3,
    threads: int = 2,
    repeats: int = 3,
    rechub_workers: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the peer and model-only benchmarks for the teacher and the student; return the figures.

    This project's model-only and loop figures are the median of ``repeats`` alternating runs (a fresh
    model each), so a burst of load from another process moves neither much; torch-rechub's loop, 10-20x
    slower, runs once per model and its model-only limit once.
    """
    quiet_lightning()
    warnings.filterwarnings("ignore", message=".*not writable.*")
    torch.set_num_threads(threads)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    prepared = peer_data(preset)
    data = ImpressionTensors(prepared)
    train_rows, val_rows, test_rows = data.indices("train"), data.indices("val"), data.indices("test")
    x_train, x_val, x_test = (feature_columns(data, prepared, r) for r in (train_rows, val_rows, test_rows))
    (c_train, cc_train), (c_val, cc_val), (c_test, cc_test) = (
        _labels(data, r) for r in (train_rows, val_rows, test_rows)
    )
    log(f"data: {preset} preset, {len(train_rows):,} training impressions ({time.perf_counter() - t0:.1f} s)")

    # --- teacher
    loops, limits = [], []
    for r in range(repeats):
        limits.append(ours_model_only(_new_teacher(prepared, seed), data, batch_size, seed))
        module = _new_teacher(prepared, seed)
        loops.append(ours_fit(module, data, batch_size, epochs, threads, seed))
        log(
            f"teacher, this project, run {r + 1}: model-only {limits[-1]:,.0f}/s, loop {loops[-1]['samples_per_second']:,.0f}/s"
        )
    pred = predict_teacher(module, data)
    test = test_rows.numpy()
    ours_t = {
        "samples_per_second": _median([x["samples_per_second"] for x in loops]),
        "samples_per_second_runs": [x["samples_per_second"] for x in loops],
        "model_only_samples_per_second": _median(limits),
        "model_only_runs": limits,
        "train_seconds": _median([x["train_seconds"] for x in loops]),
        "fit_seconds": _median([x["fit_seconds"] for x in loops]),
        "auc_click": auc(c_test, pred["p_ctr"][test]),
        "auc_ctcvr": auc(cc_test, pred["p_ctcvr"][test]),
    }
    ours_t["loop_share_of_model_only"] = (
        ours_t["samples_per_second"] / ours_t["model_only_samples_per_second"]
    )
    y_train = np.stack([c_train, cc_train], axis=1)
    peer_limit = rechub_model_only(
        "mtl", rechub_teacher_model(prepared, seed), x_train, y_train, batch_size, seed
    )
    model = rechub_teacher_model(prepared, seed)
    peer_loop = rechub_fit(
        "mtl",
        model,
        x_train,
        y_train,
        x_val,
        np.stack([c_val, cc_val], 1),
        batch_size,
        epochs,
        rechub_workers,
    )
    p = _rechub_predict(model, x_test)
    peer_t = {
        **peer_loop,
        "model_only_samples_per_second": peer_limit,
        "auc_click": auc(c_test, p[:, 0]),
        "auc_ctcvr": auc(cc_test, p[:, 1]),
    }
    peer_t["loop_share_of_model_only"] = peer_t["samples_per_second"] / peer_limit
    log(f"teacher, torch-rechub: model-only {peer_limit:,.0f}/s, loop {peer_t['samples_per_second']:,.0f}/s")

    # --- the data paths alone (no model): what each library's loop spends on making batches.
    n_frame = min(len(y_train), 50_000)  # the DataFrame path is slow; a slice gives its rate
    data_paths = {
        "this_project_samples_per_second": ours_data_path(data, batch_size, seed),
        "torch_rechub_samples_per_second": rechub_data_path(x_train, y_train, batch_size),
        "torch_rechub_dataframe_samples_per_second": rechub_data_path(
            {k: v[:n_frame] for k, v in x_train.items()}, y_train[:n_frame], batch_size, as_frame=True
        ),
        "torch_rechub_dataframe_rows": n_frame,
    }
    # torch-rechub's loop as its ranking examples feed it (a DataFrame): one epoch on a slice, for context.
    frame_loop = rechub_fit(
        "mtl",
        rechub_teacher_model(prepared, seed),
        {k: v[:n_frame] for k, v in x_train.items()},
        y_train[:n_frame],
        x_val,
        np.stack([c_val, cc_val], 1),
        batch_size,
        1,
        rechub_workers,
        as_frame=True,
    )
    data_paths["torch_rechub_dataframe_teacher_loop_samples_per_second"] = frame_loop["samples_per_second"]
    # Seconds per sample of the data path over seconds per sample of the whole loop: its share of the loop.
    data_paths["this_project_share_of_teacher_loop"] = (
        ours_t["samples_per_second"] / data_paths["this_project_samples_per_second"]
    )
    data_paths["torch_rechub_share_of_teacher_loop"] = (
        peer_t["samples_per_second"] / data_paths["torch_rechub_samples_per_second"]
    )
    log(
        "data path alone: this project {:,.0f}/s, torch-rechub {:,.0f}/s (DataFrame input {:,.0f}/s, "
        "its teacher loop {:,.0f}/s)".format(
            data_paths["this_project_samples_per_second"],
            data_paths["torch_rechub_samples_per_second"],
            data_paths["torch_rechub_dataframe_samples_per_second"],
            data_paths["torch_rechub_dataframe_teacher_loop_samples_per_second"],
        )
    )

    # --- student: both libraries distil the same soft labels, this project's teacher's p_ctcvr.
    soft = pred["p_ctcvr"].astype(np.float32)
    sdata = ImpressionTensors(prepared, soft_labels=soft)
    loops, limits = [], []
    for r in range(repeats):
        limits.append(ours_model_only(_new_student(prepared, seed), sdata, batch_size, seed))
        module = _new_student(prepared, seed)
        loops.append(ours_fit(module, sdata, batch_size, epochs, threads, seed))
        log(
            f"student, this project, run {r + 1}: model-only {limits[-1]:,.0f}/s, loop {loops[-1]['samples_per_second']:,.0f}/s"
        )
    score = _student_logits(module, sdata, test_rows)
    ours_s = {
        "samples_per_second": _median([x["samples_per_second"] for x in loops]),
        "samples_per_second_runs": [x["samples_per_second"] for x in loops],
        "model_only_samples_per_second": _median(limits),
        "model_only_runs": limits,
        "train_seconds": _median([x["train_seconds"] for x in loops]),
        "fit_seconds": _median([x["fit_seconds"] for x in loops]),
        "auc_click": auc(c_test, score),
        "auc_ctcvr": auc(cc_test, score),
    }
    ours_s["loop_share_of_model_only"] = (
        ours_s["samples_per_second"] / ours_s["model_only_samples_per_second"]
    )
    y_soft = soft[train_rows.numpy()]
    peer_limit = rechub_model_only(
        "match", rechub_student_model(prepared, seed), x_train, y_soft, batch_size, seed
    )
    model = rechub_student_model(prepared, seed)
    peer_loop = rechub_fit("match", model, x_train, y_soft, None, None, batch_size, epochs, rechub_workers)
    p = _rechub_predict(model, x_test)
    peer_s = {
        **peer_loop,
        "model_only_samples_per_second": peer_limit,
        "auc_click": auc(c_test, p),
        "auc_ctcvr": auc(cc_test, p),
        # DSSM scores sigmoid(cosine) of ReLU-ended towers: always in [0.5, 0.731]. The range on the test
        # days and the soft labels' mean show why it cannot fit targets of a few percent (module docstring).
        "test_score_range": [float(p.min()), float(p.max())],
        "train_soft_label_mean": float(y_soft.mean()),
    }
    peer_s["loop_share_of_model_only"] = peer_s["samples_per_second"] / peer_limit
    log(f"student, torch-rechub: model-only {peer_limit:,.0f}/s, loop {peer_s['samples_per_second']:,.0f}/s")

    import torch_rechub

    return {
        "config": {
            "preset": preset,
            "seed": seed,
            "batch_size": batch_size,
            "epochs": epochs,
            "threads": threads,
            "repeats": repeats,
            "rechub_num_workers": rechub_workers,
            "train_impressions": len(train_rows),
            "test_impressions": len(test_rows),
            "n_features": {
                "user": len(prepared.meta["user_features"]),
                "item": len(prepared.meta["item_features"]),
                "context": len(prepared.meta["context_features"]),
            },
            "teacher": TEACHER_HP,
            "student": STUDENT_HP,
        },
        "teacher": _summary(ours_t, peer_t),
        "data_path": data_paths,
        "student": _summary(ours_s, peer_s),
        "targets": {
            "speedup": TARGET_SPEEDUP,
            "loop_share_of_model_only": TARGET_LOOP_SHARE,
            "max_auc_deficit": TARGET_AUC_GAP,
        },
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "seconds": time.perf_counter() - t0,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "torch_rechub": getattr(torch_rechub, "__version__", "unknown"),
        },
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }


def _report(figures: dict[str, Any]) -> None:
    for model in ("teacher", "student"):
        f = figures[model]
        ours, peer = f["this_project"], f["torch_rechub"]
        print(
            f"{model}: this project {ours['samples_per_second']:,.0f} samples/s "
            f"(model-only {ours['model_only_samples_per_second']:,.0f}, loop reaches "
            f"{ours['loop_share_of_model_only']:.0%}); torch-rechub {peer['samples_per_second']:,.0f} samples/s "
            f"(model-only {peer['model_only_samples_per_second']:,.0f}); speed-up {f['speedup']:.1f}x"
        )
        print(
            f"  test AUC click {ours['auc_click']:.4f} vs {peer['auc_click']:.4f}, "
            f"ctcvr {ours['auc_ctcvr']:.4f} vs {peer['auc_ctcvr']:.4f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0, help="model seed (the world is data.sim_seed)")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for both libraries")
    parser.add_argument("--repeats", type=int, default=3, help="runs of this project's loop (median)")
    parser.add_argument("--rechub-workers", type=int, default=0, help="DataLoader workers for torch-rechub")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    figures = run(
        args.preset, args.seed, args.batch_size, args.epochs, args.threads, args.repeats, args.rechub_workers
    )
    _report(figures)
    if args.out is not None:
        write_json(figures, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
