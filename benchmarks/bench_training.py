"""Peer comparison: this project's training loop against torch-rechub's, on the same data and models.

Usage::

    python benchmarks/bench_training.py --out benchmarks/results/training.json
    python benchmarks/bench_training.py --preset tiny --repeats 1          # a quick smoke run

Context, not a target. The 10x-over-torch-rechub target set earlier rested on a mis-measured anchor
(torch-rechub fed a DataFrame); fed as its multi-task example feeds it, torch-rechub is within a few x of
any loop's limit. What the project now measures itself against is the machine (``bench_roofline.py``:
the share of the same-run GEMM rate); this comparison stays as context for a reader who knows
torch-rechub. Figures per model (the MMoE+ESMM teacher and the two-tower student), on the simulator's
``default`` preset prepared once with :func:`dmtl.features.prepare`, so both libraries train on the same
encoded arrays:

Peer loop
    The same architecture trained by this project (Lightning, :func:`dmtl.training.fit` on
    :class:`dmtl.data.BatchStream`) and by torch-rechub 0.9 with its own documented trainer and data path
    (``MTLTrainer`` / ``MatchTrainer`` fed by ``DataGenerator`` / ``TorchDataset`` DataLoaders, features as
    a dict of numpy arrays as in its multi-task example), same features, batch size, epochs (3, no early
    stop), learning rate and threads. Throughput is training samples per second of the training epochs
    (validation excluded on both sides); each side's test AUCs show the speed is not bought with quality.
    Each side keeps its own end of training: ``fit`` restores the epoch with the best validation loss,
    torch-rechub keeps its last weights (its early stopper restores only when it stops early).
Model-only limit
    Forward + loss + backward + optimizer step of the same model on batches already gathered in memory
    (:mod:`training_common`); ``loop / model-only`` is the share of time the loop spends on the model.
    No loop beats its own model-only limit, so this project's model-only throughput over torch-rechub's
    loop bounds any speed-up (the "bound" row).
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
reported too.

Its DSSM does not learn this task, and that is its design, not a bug of this harness: each tower ends in
BatchNorm + ReLU before the L2 normalisation, so both embeddings are non-negative, the cosine lies in
[0, 1] and the score ``sigmoid(cosine)`` in [0.5, 0.731]. The soft labels average a few percent, so BCE
drives every score to the 0.5 floor and the ranking collapses (test AUC about 0.5; the score range and the
labels' mean are recorded).

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
import dataclasses  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from training_common import (  # noqa: E402
    deterministic,
    gather_batches,
    loop_figures,
    median,
    model_only_step,
    new_student,
    new_teacher,
    prepared_data,
    samples_per_second,
    study_params,
    train_config,
)

from dmtl.config import Study  # noqa: E402
from dmtl.data import BatchStream, ImpressionTensors  # noqa: E402
from dmtl.features import Prepared  # noqa: E402
from dmtl.io import write_json  # noqa: E402
from dmtl.metrics import auc  # noqa: E402
from dmtl.modules import StudentModule, TeacherModule  # noqa: E402
from dmtl.predict import predict_teacher  # noqa: E402
from dmtl.sources.simulator.config import PRESETS  # noqa: E402
from dmtl.training import quiet_lightning  # noqa: E402

# The configuration both libraries train (see the module docstring); lr and weight decay are the study's.
PEER_TEACHER: dict[str, Any] = {
    "backbone": "mmoe",
    "esmm": True,
    "n_experts": 4,
    "expert_dims": (128, 64),
    "tower_dims": (32,),
    "emb_dim": 16,
    "lr": 0.003,
    "weight_decay": 0.0,
    "w_ctr": 1.0,
    "w_ctcvr": 1.0,
    "w_duration": 0.0,
    "position": "feature",
}
# Point-wise BCE on the soft labels, as torch-rechub's MatchTrainer (mode 0) trains its DSSM.
PEER_TOWERS: dict[str, Any] = {"tower_dims": (64,), "out_dim": 32, "score": "dot", "objective": "pointwise"}
PEER_STUDENT: dict[str, Any] = {"lr": 0.003, "emb_dim": 16, "weight_decay": 0.0}
AUC_TOLERANCE = 0.01  # "on par": this project's test AUC at most this far below torch-rechub's (context)


# ------------------------------------------------------------------------------------------------ data


@dataclass
class PeerData:
    """The prepared data once, as this project reads it and as torch-rechub reads it."""

    study: Study
    prepared: Prepared
    data: ImpressionTensors
    rows: dict[str, torch.Tensor]  # train / val / test impression rows
    x: dict[str, dict[str, np.ndarray]]  # torch-rechub's features per split
    click: dict[str, np.ndarray]
    ctcvr: dict[str, np.ndarray]  # click * long read

    def teacher(self, seed: int) -> TeacherModule:
        cfg = dataclasses.replace(self.study.teacher, **PEER_TEACHER)
        return new_teacher(self.prepared, cfg, seed)

    def student(self, seed: int) -> StudentModule:
        s = self.study.students
        common = dataclasses.replace(s.common, **PEER_TOWERS)
        distill = dataclasses.replace(s["dmtl"].distill, distill_loss="bce", hard_weight=0.0)
        student = dataclasses.replace(s["dmtl"], distill=distill, **PEER_STUDENT)
        return new_student(self.prepared, common, student, seed, self.data)


def peer_data(preset: str) -> PeerData:
    """The study's simulated world (``data.sim_seed``) at ``preset``, prepared as the study prepares it."""
    study = study_params({"data.preset": preset})
    prepared = prepared_data(study)
    data = ImpressionTensors(prepared)
    rows = {split: data.indices(split) for split in ("train", "val", "test")}
    click = {k: data.click[r].numpy().astype(np.int64) for k, r in rows.items()}
    ctcvr = {k: click[k] * data.long_read[r].numpy().astype(np.int64) for k, r in rows.items()}
    x = {k: feature_columns(data, prepared, r) for k, r in rows.items()}
    return PeerData(study, prepared, data, rows, x, click, ctcvr)


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


# -------------------------------------------------------------------------------------- this project


@dataclass
class Run:
    """How this project's side runs: batch size, epochs, threads, repeats and seed."""

    batch_size: int
    epochs: int
    threads: int
    repeats: int
    seed: int
    workers: int  # torch-rechub's DataLoader workers


def ours(
    build: Callable[[int], L.LightningModule], data: ImpressionTensors, study: Study, run: Run, log: Callable
) -> tuple[dict[str, Any], L.LightningModule]:
    """Model-only and loop figures of this project's model, median of alternating repeats (fresh models)."""
    train = train_config(study.train, run.batch_size, run.epochs, run.threads)
    limits, loops = [], []
    for r in range(run.repeats):
        with deterministic(True):
            batches = gather_batches(data, run.batch_size, run.seed)
            limits.append(samples_per_second(model_only_step(build(run.seed)), batches))
        module = build(run.seed)
        loops.append(loop_figures(module, data, train, run.seed))
        log(f"  run {r + 1}: model-only {limits[-1]:,.0f}/s, loop {loops[-1]['samples_per_second']:,.0f}/s")
    figures = {
        "samples_per_second": median([x["samples_per_second"] for x in loops]),
        "samples_per_second_runs": [x["samples_per_second"] for x in loops],
        "model_only_samples_per_second": median(limits),
        "model_only_runs": limits,
        "train_seconds": median([x["train_seconds"] for x in loops]),
        "fit_seconds": median([x["fit_seconds"] for x in loops]),
    }
    figures["loop_share_of_model_only"] = (
        figures["samples_per_second"] / figures["model_only_samples_per_second"]
    )
    return figures, module


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
        SparseFeature(n, vocab_size=int(c), embed_dim=PEER_TEACHER["emb_dim"])
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
        n_expert=PEER_TEACHER["n_experts"],
        expert_params={"dims": list(PEER_TEACHER["expert_dims"])},
        tower_params_list=[{"dims": list(PEER_TEACHER["tower_dims"])}] * 2,
    )
    return RechubMMoEESMM(mmoe)


def rechub_student_model(prepared: Prepared, seed: int) -> nn.Module:
    """torch-rechub's DSSM with this study's tower widths ([64] hidden, 32-d output)."""
    from torch_rechub.models.matching import DSSM

    meta = prepared.meta
    dims = {"dims": [*PEER_TOWERS["tower_dims"], PEER_TOWERS["out_dim"]]}
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


def _rechub_trainer(
    kind: str,
    model: nn.Module,
    train: tuple[dict[str, np.ndarray], np.ndarray],
    val: tuple[dict[str, np.ndarray] | None, np.ndarray | None],
    batch_size: int,
    epochs: int,
    workers: int,
    as_frame: bool,
    model_path: str,
) -> tuple[Any, tuple[Any, ...]]:
    """torch-rechub's trainer for ``kind`` and the loaders its ``fit`` takes, as its examples build them."""
    from torch_rechub.trainers import MatchTrainer, MTLTrainer
    from torch_rechub.utils.data import DataGenerator

    opt = {"lr": PEER_TEACHER["lr"] if kind == "mtl" else PEER_STUDENT["lr"], "weight_decay": 0.0}
    (x_train, y_train), (x_val, y_val) = train, val
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
            model_path=model_path,
        )
        return trainer, (train_dl, val_dl)
    # DataGenerator's train loader is the one MatchDataGenerator builds (TorchDataset, shuffled).
    gen = DataGenerator(x_train, y_train)
    train_dl = torch.utils.data.DataLoader(
        gen.dataset, batch_size=batch_size, shuffle=True, num_workers=workers
    )
    trainer = MatchTrainer(
        model, mode=0, optimizer_params=opt, n_epoch=epochs, device="cpu", model_path=model_path
    )
    return trainer, (train_dl,)


def rechub_fit(
    kind: str,
    model: nn.Module,
    train: tuple[dict[str, np.ndarray], np.ndarray],
    val: tuple[dict[str, np.ndarray] | None, np.ndarray | None],
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
    with tempfile.TemporaryDirectory(prefix="dmtl-rechub-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        trainer, loaders = _rechub_trainer(
            kind, model, train, val, batch_size, epochs, workers, as_frame, tmp
        )
        seconds = _timed_epochs(trainer)
        start = time.perf_counter()
        trainer.fit(*loaders)
        fit_seconds = time.perf_counter() - start
    n = len(train[1]) * epochs
    return {
        "samples_per_second": n / sum(seconds),
        "train_seconds": sum(seconds),
        "fit_seconds": fit_seconds,
        "train_samples": n,
    }


def _rechub_batches(
    x: dict[str, np.ndarray], y: np.ndarray, batch_size: int, seed: int
) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Shuffled in-memory batches in torch-rechub's format: (feature dict, labels)."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).numpy()
    xt = {k: torch.from_numpy(v[perm]) for k, v in x.items()}
    yt = torch.from_numpy(np.asarray(y)[perm])
    return [
        ({k: v[s : s + batch_size] for k, v in xt.items()}, yt[s : s + batch_size])
        for s in range(0, len(yt), batch_size)
    ]


def rechub_model_only(
    kind: str, model: nn.Module, x: dict[str, np.ndarray], y: np.ndarray, batch_size: int, seed: int
) -> float:
    """Samples/s of torch-rechub's training-step body (forward, its loss, backward, Adam) on in-memory
    batches: what its ``train_one_epoch`` does, minus its DataLoader."""
    from torch_rechub.basic.loss_func import RegularizationLoss

    batches = _rechub_batches(x, y, batch_size, seed)
    lr = PEER_TEACHER["lr"] if kind == "mtl" else PEER_STUDENT["lr"]
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

    step(batches[0])
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    return len(y) / (time.perf_counter() - start)


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


def _summary(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    return {
        "this_project": ours,
        "torch_rechub": peer,
        "speedup": ours["samples_per_second"] / peer["samples_per_second"],
        "model_only_speedup": ours["model_only_samples_per_second"] / peer["model_only_samples_per_second"],
        "auc_gap_click": ours["auc_click"] - peer["auc_click"],
        "auc_gap_ctcvr": ours["auc_ctcvr"] - peer["auc_ctcvr"],
    }


def teacher_figures(pd: PeerData, run: Run, log: Callable) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Both libraries' teacher: loop, model-only and test AUCs; returns our teacher's predictions too."""
    log("teacher, this project:")
    ours_t, module = ours(pd.teacher, pd.data, pd.study, run, log)
    pred = predict_teacher(module, pd.data)
    test = pd.rows["test"].numpy()
    ours_t |= {
        "auc_click": auc(pd.click["test"], pred["p_ctr"][test]),
        "auc_ctcvr": auc(pd.ctcvr["test"], pred["p_ctcvr"][test]),
    }
    y = {k: np.stack([pd.click[k], pd.ctcvr[k]], axis=1) for k in ("train", "val")}
    limit = rechub_model_only(
        "mtl",
        rechub_teacher_model(pd.prepared, run.seed),
        pd.x["train"],
        y["train"],
        run.batch_size,
        run.seed,
    )
    model = rechub_teacher_model(pd.prepared, run.seed)
    loop = rechub_fit(
        "mtl",
        model,
        (pd.x["train"], y["train"]),
        (pd.x["val"], y["val"]),
        run.batch_size,
        run.epochs,
        run.workers,
    )
    p = _rechub_predict(model, pd.x["test"])
    peer = {
        **loop,
        "model_only_samples_per_second": limit,
        "auc_click": auc(pd.click["test"], p[:, 0]),
        "auc_ctcvr": auc(pd.ctcvr["test"], p[:, 1]),
    }
    peer["loop_share_of_model_only"] = peer["samples_per_second"] / limit
    log(f"teacher, torch-rechub: model-only {limit:,.0f}/s, loop {peer['samples_per_second']:,.0f}/s")
    return _summary(ours_t, peer), pred


def data_path_figures(pd: PeerData, run: Run, teacher: dict[str, Any], log: Callable) -> dict[str, Any]:
    """Each library's data path alone (no model), and torch-rechub's loop fed a DataFrame (context)."""
    y = np.stack([pd.click["train"], pd.ctcvr["train"]], axis=1)
    y_val = np.stack([pd.click["val"], pd.ctcvr["val"]], axis=1)
    n_frame = min(len(y), 50_000)  # the DataFrame path is slow; a slice gives its rate
    x_frame = {k: v[:n_frame] for k, v in pd.x["train"].items()}
    d = {
        "this_project_samples_per_second": ours_data_path(pd.data, run.batch_size, run.seed),
        "torch_rechub_samples_per_second": rechub_data_path(pd.x["train"], y, run.batch_size),
        "torch_rechub_dataframe_samples_per_second": rechub_data_path(
            x_frame, y[:n_frame], run.batch_size, as_frame=True
        ),
        "torch_rechub_dataframe_rows": n_frame,
    }
    # torch-rechub's loop as its ranking examples feed it (a DataFrame): one epoch on a slice, for context.
    frame_loop = rechub_fit(
        "mtl",
        rechub_teacher_model(pd.prepared, run.seed),
        (x_frame, y[:n_frame]),
        (pd.x["val"], y_val),
        run.batch_size,
        1,
        run.workers,
        as_frame=True,
    )
    d["torch_rechub_dataframe_teacher_loop_samples_per_second"] = frame_loop["samples_per_second"]
    # Seconds per sample of the data path over seconds per sample of the whole loop: its share of the loop.
    d["this_project_share_of_teacher_loop"] = (
        teacher["this_project"]["samples_per_second"] / d["this_project_samples_per_second"]
    )
    d["torch_rechub_share_of_teacher_loop"] = (
        teacher["torch_rechub"]["samples_per_second"] / d["torch_rechub_samples_per_second"]
    )
    log(
        f"data path alone: this project {d['this_project_samples_per_second']:,.0f}/s, torch-rechub {d['torch_rechub_samples_per_second']:,.0f}/s"
    )
    return d


def student_figures(pd: PeerData, run: Run, soft: np.ndarray, log: Callable) -> dict[str, Any]:
    """Both libraries' two-tower student distilling the same soft labels (our teacher's ``p_ctcvr``)."""
    log("student, this project:")
    sdata = ImpressionTensors(pd.prepared, soft_labels=soft)
    ours_s, module = ours(pd.student, sdata, pd.study, run, log)
    score = _student_logits(module, sdata, pd.rows["test"])
    ours_s |= {"auc_click": auc(pd.click["test"], score), "auc_ctcvr": auc(pd.ctcvr["test"], score)}
    y_soft = soft[pd.rows["train"].numpy()]
    limit = rechub_model_only(
        "match", rechub_student_model(pd.prepared, run.seed), pd.x["train"], y_soft, run.batch_size, run.seed
    )
    model = rechub_student_model(pd.prepared, run.seed)
    loop = rechub_fit(
        "match", model, (pd.x["train"], y_soft), (None, None), run.batch_size, run.epochs, run.workers
    )
    p = _rechub_predict(model, pd.x["test"])
    peer = {
        **loop,
        "model_only_samples_per_second": limit,
        "auc_click": auc(pd.click["test"], p),
        "auc_ctcvr": auc(pd.ctcvr["test"], p),
        # DSSM scores sigmoid(cosine) of ReLU-ended towers: always in [0.5, 0.731]. The range on the test
        # days and the soft labels' mean show why it cannot fit targets of a few percent (module docstring).
        "test_score_range": [float(p.min()), float(p.max())],
        "train_soft_label_mean": float(y_soft.mean()),
    }
    peer["loop_share_of_model_only"] = peer["samples_per_second"] / limit
    log(f"student, torch-rechub: model-only {limit:,.0f}/s, loop {peer['samples_per_second']:,.0f}/s")
    return _summary(ours_s, peer)


def config_figures(pd: PeerData, run: Run, preset: str) -> dict[str, Any]:
    meta = pd.prepared.meta
    return {
        "preset": preset,
        "seed": run.seed,
        "batch_size": run.batch_size,
        "epochs": run.epochs,
        "threads": run.threads,
        "repeats": run.repeats,
        "rechub_num_workers": run.workers,
        "train_impressions": len(pd.rows["train"]),
        "test_impressions": len(pd.rows["test"]),
        "n_features": {side: len(meta[f"{side}_features"]) for side in ("user", "item", "context")},
        "teacher": {k: list(v) if isinstance(v, tuple) else v for k, v in PEER_TEACHER.items()},
        "student": {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in PEER_TOWERS.items()},
            **PEER_STUDENT,
            "loss": "bce",
        },
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
    """Run the peer comparison for the teacher and the student; return the figures.

    This project's model-only and loop figures are the median of ``repeats`` alternating runs (a fresh
    model each), so a burst of load from another process moves neither much; torch-rechub's loop, slower,
    runs once per model and its model-only limit once.
    """
    import torch_rechub

    quiet_lightning()
    warnings.filterwarnings("ignore", message=".*not writable.*")
    torch.set_num_threads(threads)
    load_start, t0 = os.getloadavg(), time.perf_counter()
    pd = peer_data(preset)
    log(
        f"data: {preset} preset, {len(pd.rows['train']):,} training impressions ({time.perf_counter() - t0:.1f} s)"
    )
    r = Run(batch_size, epochs, threads, repeats, seed, rechub_workers)
    teacher, pred = teacher_figures(pd, r, log)
    data_path = data_path_figures(pd, r, teacher, log)
    student = student_figures(pd, r, pred["p_ctcvr"].astype(np.float32), log)
    return {
        "config": config_figures(pd, r, preset),
        "teacher": teacher,
        "data_path": data_path,
        "student": student,
        "context": {"auc_tolerance": AUC_TOLERANCE},
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
            f"(model-only {peer['model_only_samples_per_second']:,.0f}); ratio {f['speedup']:.1f}x"
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
