"""Roofline: how close the teacher's and the student's training steps come to this machine's GEMM rate.

Usage::

    python benchmarks/bench_roofline.py --out benchmarks/results/roofline.json
    python benchmarks/bench_roofline.py --smoke            # tiny preset, one round: every code path
    python benchmarks/bench_roofline.py --compile          # also time torch.compile (minutes of compiling)

What is measured, all in one process and interleaved, so every figure sees the same machine:

GEMM rate
    A plain fp32 ``2048 x 2048`` matrix product with the thread count of one of the study's training
    processes (``train.threads / train.workers``: the seeds train side by side, sharing the cores), timed
    right before every measurement below: the machine's practical peak for dense fp32 arithmetic. A
    model figure is divided by the GEMM rate of its own moment (the mean of the probes before and after
    it), so a burst of load from elsewhere moves both.
FLOPs per sample
    Counted from the model's layers (:func:`forward_flops`): every ``nn.Linear``, every member of a
    :class:`dmtl.models.layers.ParallelMLP` (the MMoE experts and the task towers), the gates, the MMoE
    mixture (a batched product) and the two-tower score, at 2 FLOPs per multiply-add. Training costs 3x the
    forward matrix products: backward computes the gradient of each product's input and of its weight,
    each as large as the forward product (the first layer's input gradient is needed too, since the
    embeddings are trained). Element-wise work (ReLU, sigmoid, softmax, the loss), embedding gathers and
    scatters and Adam are not counted: they are memory traffic, not FLOPs, and are what keeps a model from
    the GEMM rate. ``torch.utils.flop_counter`` counts the same step's matrix products independently; both
    counts are recorded.
Model-only and whole loop
    :mod:`training_common`: forward + loss + backward + Adam on in-memory batches, and the study's own
    Lightning ``fit``. Achieved FLOP/s = samples/s x FLOPs per sample.
GEMM ceiling
    The matrix products of one training step (recorded with their shapes and strides) replayed alone:
    what the model's FLOPs cost at its own GEMM shapes if nothing else ran. The gap between it and the
    2048-square rate is the shapes' doing; the gap between the model-only step and it is everything else.
Variants
    The same step with the experts unfused (one small MLP per expert in a Python loop, as before), the
    peer benchmark's larger teacher at batches 2048 and 4096 (where an earlier ad-hoc figure and the peer
    benchmark disagreed), other batch sizes, Adam's fused kernel, the deterministic mode's NaN fill of new
    tensors turned off, and the other thread count (1 if the run uses more, else ``train.threads``): what
    each would change, measured, for the recommendations in the report. Every share is of the GEMM rate at
    this run's thread count.
torch.compile (``--compile STEPS``; ``run_all.py`` passes it)
    The model-only step with ``torch.compile`` against eager: compile time, speed, and whether two
    compiled runs end bitwise equal (determinism). Measured to decide on it, not used by the study.
Profile
    ``torch.profiler`` over a few model-only steps: the top operators by self time and the time split by
    phase (forward with loss, backward, optimizer) and kind (matrix products, embedding gather/scatter,
    other operators).

No assertion on speed: the figures are printed and written as JSON with the load average, and
``run_all.py`` compares them with the targets (70% of the GEMM rate model-only, 90% of model-only for the
loop).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from training_common import (
    Batch,
    Step,
    deterministic,
    gather_batches,
    loop_figures,
    median,
    model_only_step,
    new_student,
    new_teacher,
    prepared_data,
    study_params,
    timing_soft_labels,
    train_config,
)

from dmtl.config import Study
from dmtl.data import ImpressionTensors
from dmtl.features import Prepared
from dmtl.io import write_json
from dmtl.models.layers import MLP, ParallelMLP
from dmtl.models.teacher import TASKS, MultiTaskTeacher
from dmtl.models.two_tower import TwoTower
from dmtl.modules import StudentModule, TeacherModule
from dmtl.sampled_softmax import SOFTMAX_WEIGHTS
from dmtl.training import quiet_lightning

TARGET_SHARE_OF_GEMM = 0.70
TARGET_LOOP_SHARE = 0.90
PEER_EXPERT_DIMS = (128, 64)  # the peer benchmark's teacher (bench_training.py), 136,768 MACs a sample
SWEEP_BATCH_SIZES = (1024, 2048, 8192, 16384)  # besides the study's train.batch_size
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
EMBEDDING_OPS = ("aten::index_select", "aten::index_add_", "aten::scatter_add_", "aten::embedding")


# ------------------------------------------------------------------------------------------------ FLOPs


def forward_flops(module: L.LightningModule, batch: Batch) -> dict[str, int]:
    """Per-sample forward FLOPs (2 per multiply-add) of every matrix product of a training step, by layer.

    The model's layers, and for a two-tower student its score: ``<u, v>`` under the point-wise objective,
    or under the sampled softmax every weighted row's logits against the ``n`` shared negatives and its
    positive, ``2 * d * (n + 1)`` FLOPs per weighted row (the share of weighted rows is read off ``batch``).
    """
    parts: dict[str, int] = {}
    for name, m in module.model.named_modules():
        if isinstance(m, nn.Linear):
            parts[name] = 2 * m.in_features * m.out_features
        elif isinstance(m, ParallelMLP):
            parts[name] = 2 * m.n * sum(a * b for a, b in zip(m.widths[:-1], m.widths[1:], strict=True))
        elif isinstance(m, MultiTaskTeacher) and m.gates is not None:
            # Each task's mixture sum_e g_te * expert_e: a (1 x E) by (E x H) product per sample.
            parts[f"{name}.mixture" if name else "mixture"] = 2 * len(TASKS) * m.n_experts * m.experts.out_dim
        elif isinstance(m, TwoTower):
            parts["score"] = _score_flops(module, m.user_tower.out_dim, batch)
    return parts


def _score_flops(module: L.LightningModule, d: int, batch: Batch) -> int:
    objective = getattr(module, "objective", None)
    if objective is None or objective.objective != "sampled_softmax":
        return 2 * d  # <u, v>
    s = objective.student
    weight = SOFTMAX_WEIGHTS[s.name](batch, objective.duration_scale, s.distill)
    n = min(int(objective.n_negatives), len(weight))
    return round(2 * d * (n + 1) * float((weight > 0).double().mean()))


def training_flops(module: L.LightningModule, batch: Batch) -> int:
    """Per-sample FLOPs of a training step's matrix products: 3x forward (see the module docstring)."""
    return 3 * sum(forward_flops(module, batch).values())


def counted_flops(step: Step, batch: Batch) -> float:
    """Per-sample matrix-product FLOPs of one training step, as ``torch.utils.flop_counter`` counts them."""
    with FlopCounterMode(display=False) as counter:
        step(batch)
    return counter.get_total_flops() / len(batch["click"])


# ------------------------------------------------------------------------------------------- GEMM rate


class GemmProbe:
    """The machine's fp32 GEMM rate: ``n x n`` by ``n x n`` products on preallocated tensors."""

    def __init__(self, n: int = 2048, calls: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.n, self.calls = n, calls
        self.a, self.b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        self.out = torch.empty(n, n)
        self.rates: list[float] = []

    def rate(self) -> float:
        """FLOP/s of ``calls`` products after one warm-up; also kept in :attr:`rates`."""
        torch.mm(self.a, self.b, out=self.out)
        start = time.perf_counter()
        for _ in range(self.calls):
            torch.mm(self.a, self.b, out=self.out)
        rate = 2 * self.n**3 * self.calls / (time.perf_counter() - start)
        self.rates.append(rate)
        return rate


def timed_rate(step: Step, batches: Sequence[Batch], min_seconds: float, min_steps: int = 3) -> float:
    """Samples/s of ``step`` cycling over ``batches`` (after one warm-up step) for ``min_seconds``, and at
    least ``min_steps`` steps."""
    step(batches[0])
    n, i, start = 0, 0, time.perf_counter()
    while True:
        batch = batches[i % len(batches)]
        step(batch)
        n, i = n + len(batch["click"]), i + 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and i >= min_steps:
            return n / elapsed


@dataclass
class Case:
    """One model-only measurement: a step, its batches and its FLOPs per sample."""

    name: str
    model: str
    batch_size: int
    step: Step
    batches: list[dict[str, torch.Tensor]]
    flops_per_sample: float
    module: nn.Module | None = None
    setup: Callable[[bool], None] | None = None  # called with True before and False after timing
    rates: list[float] = dataclasses.field(default_factory=list)
    shares: list[float] = dataclasses.field(default_factory=list)


def measure_rounds(cases: Sequence[Case], probe: GemmProbe, rounds: int, min_seconds: float) -> None:
    """Time every case ``rounds`` times, in turn, each between two GEMM probes; fill rates and shares."""
    for _ in range(rounds):
        before = probe.rate()
        for case in cases:
            if case.setup:
                case.setup(True)
            try:
                rate = timed_rate(case.step, case.batches, min_seconds)
            finally:
                if case.setup:
                    case.setup(False)
            after = probe.rate()
            case.rates.append(rate)
            case.shares.append(rate * case.flops_per_sample / ((before + after) / 2))
            before = after


def case_figures(case: Case) -> dict[str, Any]:
    """Median samples/s, achieved GFLOP/s and share of the GEMM rate of one case, with every run."""
    sps = median(case.rates)
    return {
        "name": case.name,
        "model": case.model,
        "batch_size": case.batch_size,
        "flops_per_sample": case.flops_per_sample,
        "samples_per_second": sps,
        "gflops": sps * case.flops_per_sample / 1e9,
        "share_of_gemm": median(case.shares),
        "samples_per_second_runs": case.rates,
        "share_of_gemm_runs": case.shares,
    }


# ------------------------------------------------------------------------------------- GEMM ceiling


class RecordMatmuls(TorchDispatchMode):
    """Records every matrix product (op, operands' shapes and strides, scalars) a step runs."""

    OPS = ("mm", "addmm", "bmm", "baddbmm")

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, list[Any], dict[str, Any]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func.overloadpacket.__name__ in self.OPS:
            spec = [(a.shape, a.stride()) if isinstance(a, torch.Tensor) else a for a in args]
            out = {k: (v.shape, v.stride()) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
            self.calls.append((func, spec, out))
        return func(*args, **kwargs)


def gemm_replay(step: Step, batch: Batch) -> Step:
    """A step that runs only the matrix products ``step`` runs, on random tensors of the same layouts."""
    recorder = RecordMatmuls()
    with recorder:
        step(batch)

    def tensor(spec: Any) -> Any:
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], torch.Size):
            t = torch.empty_strided(spec[0], spec[1])
            return t.normal_() if t.numel() else t
        return spec

    calls = [
        (f, [tensor(a) for a in args], {k: tensor(v) for k, v in kw.items()})
        for f, args, kw in recorder.calls
    ]

    def replay(_: Batch) -> None:
        for func, args, kwargs in calls:
            func(*args, **kwargs)

    return replay


# --------------------------------------------------------------------------------- the unfused teacher


def _member_mlp(bank: ParallelMLP, k: int) -> MLP:
    """Member ``k`` of ``bank`` as a plain :class:`MLP` with the same weights."""
    mlp = MLP(bank.in_dim, bank.widths[1:], bank.dropout, bank.last_activation)
    linears = [m for m in mlp.net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer, w, b in zip(linears, bank.weights, bank.biases, strict=True):
            layer.weight.copy_(w[k].T)
            layer.bias.copy_(b[k, 0])
    return mlp


class LoopedTeacher(nn.Module):
    """The MMoE teacher as it was computed before the fusion: one small MLP per expert and per tower.

    Built from a :class:`MultiTaskTeacher` (MMoE, no duration head) with its weights copied, so both
    compute the same function; only the kernels differ. It is the "unfused" variant's model.
    """

    def __init__(self, fused: MultiTaskTeacher):
        super().__init__()
        if fused.gates is None or fused.duration_head:
            raise ValueError("LoopedTeacher reproduces the MMoE teacher without a duration head")
        self.esmm, self.duration_head, self.n_experts = fused.esmm, False, fused.n_experts
        self.embedding, self.gates = copy.deepcopy(fused.embedding), copy.deepcopy(fused.gates)
        self.experts = nn.ModuleList(_member_mlp(fused.experts, k) for k in range(fused.n_experts))
        self.ctr_tower, self.cvr_tower = (_member_mlp(fused.towers, k) for k in range(2))

    def forward(self, user_x: torch.Tensor, item_x: torch.Tensor, context_x: torch.Tensor) -> dict[str, Any]:
        x = self.embedding(torch.cat([user_x, item_x, context_x], dim=1))
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, E, H)
        gates = self.gates(x).view(-1, len(TASKS), self.n_experts).softmax(dim=-1)
        mixed = torch.einsum("bte,beh->bth", gates, experts)
        logit_ctr = self.ctr_tower(mixed[:, 0]).squeeze(-1)
        logit_cvr = self.cvr_tower(mixed[:, 1]).squeeze(-1)
        p_ctr, p_cvr = torch.sigmoid(logit_ctr), torch.sigmoid(logit_cvr)
        return {
            "logit_ctr": logit_ctr,
            "logit_cvr": logit_cvr,
            "p_ctr": p_ctr,
            "p_cvr": p_cvr,
            "p_ctcvr": p_ctr * p_cvr,
            "log_p_ctcvr": nn.functional.logsigmoid(logit_ctr) + nn.functional.logsigmoid(logit_cvr),
            "gates": gates,
        }


# ---------------------------------------------------------------------------------------------- cases


@dataclass
class Setting:
    """What every case is built from: the study, its data, thread count and batch size."""

    study: Study
    prepared: Prepared
    data: ImpressionTensors  # with stand-in soft labels, so one dataset serves teacher and student
    threads: int
    batch_size: int
    seed: int
    max_samples: int

    def batches(self, batch_size: int) -> list[dict[str, torch.Tensor]]:
        return gather_batches(self.data, batch_size, self.seed, max(self.max_samples, 2 * batch_size))

    def teacher(self, expert_dims: Sequence[int] | None = None) -> TeacherModule:
        cfg = self.study.teacher
        if expert_dims is not None:
            cfg = dataclasses.replace(cfg, expert_dims=tuple(expert_dims))
        return new_teacher(self.prepared, cfg, self.seed)

    def student(self) -> StudentModule:
        s = self.study.students
        return new_student(self.prepared, s.common, s["dmtl"], self.seed, self.data)


def _case(name: str, model: str, module: L.LightningModule, batches: list, **kw: Any) -> Case:
    step = model_only_step(module, kw.pop("optimizer", None))
    flops = training_flops(module, batches[0])
    return Case(name, model, len(batches[0]["click"]), step, batches, flops, module=module, **kw)


def main_cases(s: Setting) -> list[Case]:
    """The study's teacher and student at the study's batch size: the figures against the targets."""
    batches = s.batches(s.batch_size)
    return [
        _case("teacher", "teacher", s.teacher(), batches),
        _case("student", "student", s.student(), batches),
    ]


def _threads(during: int, after: int) -> Callable[[bool], None]:
    def setup(on: bool) -> None:
        torch.set_num_threads(during if on else after)

    return setup


def _no_fill(on: bool) -> None:
    # Deterministic mode fills every new tensor with NaN (to expose reads of uninitialised memory).
    torch.utils.deterministic.fill_uninitialized_memory = not on


def variant_cases(s: Setting, smoke: bool) -> list[Case]:
    """The variants of the module docstring, for the report's recommendations."""
    batches = s.batches(s.batch_size)
    looped = s.teacher()
    looped.model = LoopedTeacher(looped.model)
    cases = [_case("teacher, experts unfused (loop, as before)", "teacher", looped, batches)]
    for bs in (2048, 4096):
        peer = s.teacher(PEER_EXPERT_DIMS)
        cases.append(
            _case(f"teacher {list(PEER_EXPERT_DIMS)}, batch {bs}", "teacher_peer", peer, s.batches(bs))
        )
    for bs in SWEEP_BATCH_SIZES[:2] if smoke else SWEEP_BATCH_SIZES:
        cases.append(_case(f"teacher, batch {bs}", "teacher", s.teacher(), s.batches(bs)))
        cases.append(_case(f"student, batch {bs}", "student", s.student(), s.batches(bs)))
    for model, build in (("teacher", s.teacher), ("student", s.student)):
        module = build()
        cases.append(
            _case(f"{model}, Adam's fused kernel", model, module, batches, optimizer=fused_adam(module))
        )
        cases.append(_case(f"{model}, no NaN fill of new tensors", model, build(), batches, setup=_no_fill))
        # The other thread count: 1 if this run uses more, else train.threads (at least 2).
        other = 1 if s.threads > 1 else max(2, s.study.train.threads)
        if other != s.threads:
            label = f"{model}, {other} thread{'s' if other > 1 else ''}"
            cases.append(_case(label, model, build(), batches, setup=_threads(other, s.threads)))
    return cases


def fused_adam(module: L.LightningModule) -> torch.optim.Optimizer:
    """The module's own Adam settings with ``fused=True`` (one kernel per parameter, not a handful)."""
    opt = module.configure_optimizers()
    keep = ("params", "lr", "weight_decay")
    return torch.optim.Adam([{k: g[k] for k in keep} for g in opt.param_groups], fused=True)


def ceiling_cases(s: Setting, cases: Sequence[Case]) -> list[Case]:
    """The matrix products of each main case's step, replayed alone (see the module docstring)."""
    out = []
    for case in cases:
        replay = gemm_replay(case.step, case.batches[0])
        out.append(
            Case(
                f"{case.name}: its GEMMs alone",
                case.model,
                case.batch_size,
                replay,
                case.batches[:4],
                case.flops_per_sample,
            )
        )
    return out


# ------------------------------------------------------------------------------------------ the loop


def measure_loops(
    s: Setting, probe: GemmProbe, rounds: int, epochs: int, min_seconds: float
) -> dict[str, dict[str, Any]]:
    """The study's ``fit`` for the teacher and the student, ``rounds`` times each, in turn.

    Each loop run is paired with a model-only run of a fresh copy of the same model just before it, so
    the loop's share of model-only compares two figures of the same moment (the machine may be shared).
    """
    train = train_config(s.study.train, s.batch_size, epochs, s.threads)
    batches = s.batches(s.batch_size)
    runs: dict[str, list[dict[str, float]]] = {"teacher": [], "student": []}
    for _ in range(rounds):
        for model, build in (("teacher", s.teacher), ("student", s.student)):
            before = probe.rate()
            only = timed_rate(model_only_step(build()), batches, min_seconds)
            run = loop_figures(build(), s.data, train, s.seed)
            run["gemm_rate"] = (before + probe.rate()) / 2
            run["paired_model_only"] = only
            runs[model].append(run)
    out = {}
    for model, rs in runs.items():
        out[model] = {
            "samples_per_second": median([r["samples_per_second"] for r in rs]),
            "samples_per_second_runs": [r["samples_per_second"] for r in rs],
            "paired_model_only_runs": [r["paired_model_only"] for r in rs],
            "share_of_model_only": median([r["samples_per_second"] / r["paired_model_only"] for r in rs]),
            "gemm_rate": median([r["gemm_rate"] for r in rs]),
            "train_seconds": median([r["train_seconds"] for r in rs]),
            "fit_seconds": median([r["fit_seconds"] for r in rs]),
            "epochs": epochs,
            "steps_per_call": train.steps_per_call,
        }
    return out


# ------------------------------------------------------------------------------------------- profile


def _phase(event: Any) -> str:
    """forward (with the loss), backward or optimizer: from the operator's outermost caller."""
    phase, parent = "forward", event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return "optimizer"
        if parent.name.startswith("autograd::engine") or parent.name.endswith("Backward0"):
            phase = "backward"
        parent = parent.cpu_parent
    return phase


def _kind(name: str) -> str:
    if name in MATMUL_OPS:
        return "matrix products"
    if name in EMBEDDING_OPS or name.startswith("aten::embedding"):
        return "embedding gather/scatter"
    return "other operators"


def profile_step(case: Case, steps: int, top: int = 12) -> dict[str, Any]:
    """``torch.profiler`` over ``steps`` model-only steps: top operators and the phase x kind split."""
    from torch.profiler import ProfilerActivity, profile

    case.step(case.batches[0])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            case.step(case.batches[i % len(case.batches)])
    leaves = [e for e in prof.events() if e.name.startswith("aten::") and e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in leaves)
    by_op: dict[str, list[float]] = {}
    split: dict[str, float] = {}
    for e in leaves:
        by_op.setdefault(e.name, [0.0, 0])
        by_op[e.name][0] += e.self_cpu_time_total
        by_op[e.name][1] += 1
        key = f"{_phase(e)} / {_kind(e.name)}"
        split[key] = split.get(key, 0.0) + e.self_cpu_time_total / total
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1][0])[:top]
    return {
        "steps": steps,
        "batch_size": case.batch_size,
        "ms_per_step": total / 1e3 / steps,
        "top_ops": [
            {"op": name, "share": t / total, "ms_per_step": t / 1e3 / steps, "calls_per_step": n / steps}
            for name, (t, n) in ranked
        ],
        "split": dict(sorted(split.items(), key=lambda kv: -kv[1])),
        "aten_calls_per_step": sum(n for _, n in by_op.values()) / steps,
    }


# ------------------------------------------------------------------------------------- torch.compile


def _final_weights(module: L.LightningModule, step: Step, batches: Sequence[Batch]) -> torch.Tensor:
    for batch in batches:
        step(batch)
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def _compiled_step(module: L.LightningModule) -> Step:
    loss_fn = torch.compile(module.train_loss)
    opt = module.configure_optimizers()
    module.train()

    def step(batch: Batch) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(batch).backward()
        opt.step()

    return step


def compile_figures(s: Setting, probe: GemmProbe, steps: int, min_seconds: float) -> dict[str, Any]:
    """``torch.compile``'d model-only step against eager: compile time, speed, and determinism.

    Deterministic here means two compiled runs from the same seed end with bitwise identical weights
    after ``steps`` steps; the largest difference from eager (other kernels, so not bitwise equal) is
    recorded too.
    """
    out: dict[str, Any] = {}
    batches = s.batches(s.batch_size)[:steps]
    for model, build in (("teacher", s.teacher), ("student", s.student)):
        module = build()
        step = _compiled_step(module)
        start = time.perf_counter()
        step(batches[0])  # compiles the forward and backward graphs
        compile_seconds = time.perf_counter() - start
        case = Case(
            f"{model}, torch.compile", model, s.batch_size, step, batches, training_flops(module, batches[0])
        )
        eager = _case(f"{model}, eager", model, build(), batches)
        measure_rounds([case, eager], probe, 1, min_seconds)
        m1, m2, m3 = build(), build(), build()
        w1 = _final_weights(m1, _compiled_step(m1), batches)
        w2 = _final_weights(m2, _compiled_step(m2), batches)
        w3 = _final_weights(m3, model_only_step(m3), batches)
        out[model] = {
            "compile_seconds": compile_seconds,
            "compiled": case_figures(case),
            "eager": case_figures(eager),
            "deterministic": bool(torch.equal(w1, w2)),
            "max_abs_weight_diff_vs_eager": float((w1 - w3).abs().max()),
            "steps_compared": len(batches),
        }
    return out


def compile_or_why(s: Setting, probe: GemmProbe, steps: int, min_seconds: float) -> dict[str, Any]:
    """:func:`compile_figures`, or why it could not run (torch.compile needs a C++ compiler on CPU)."""
    try:
        return compile_figures(s, probe, steps, min_seconds)
    except Exception as e:  # any failure of this optional measurement is reported, not fatal
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]}


# ---------------------------------------------------------------------------------------------- driver


def make_setting(
    batch_size: int | None, threads: int | None, preset: str | None, seed: int, max_samples: int
) -> Setting:
    """The study's parameters (``preset`` overrides ``data.preset``), data and defaults."""
    study = study_params({"data.preset": preset} if preset else None)
    prepared = prepared_data(study)
    data = ImpressionTensors(prepared, soft_labels=timing_soft_labels(prepared, seed))
    return Setting(
        study=study,
        prepared=prepared,
        data=data,
        # Each training process's threads: train.threads shared by the train.workers seeds run side by side.
        threads=threads or max(1, study.train.threads // study.train.workers),
        batch_size=batch_size or study.train.batch_size,
        seed=seed,
        max_samples=max_samples,
    )


def flop_figures(cases: Sequence[Case]) -> dict[str, Any]:
    """Each main model's FLOPs per sample: by layer (forward), for training, and by the flop counter."""
    out = {}
    for case in cases:
        model = case.module.model
        out[case.model] = {
            "forward_by_layer": forward_flops(case.module, case.batches[0]),
            "training_per_sample": training_flops(case.module, case.batches[0]),
            "flop_counter_per_sample": counted_flops(case.step, case.batches[0]),
            "parameters": sum(p.numel() for p in model.parameters()),
            "parameter_tensors": len(list(model.parameters())),
        }
    return out


def variant_figures(variants: Sequence[Case], main: Sequence[Case]) -> list[dict[str, Any]]:
    """Each variant's figures, and its samples/s over its model's default step measured in the same round
    (the median of those per-round ratios: a busy round slows both alike)."""
    defaults = {c.model: c for c in main}
    out = []
    for case in variants:
        f = case_figures(case)
        default = defaults.get(case.model)
        if default is not None:
            ratios = [v / d for v, d in zip(case.rates, default.rates, strict=True)]
            f["relative_to_default"], f["relative_to_default_runs"] = median(ratios), ratios
        out.append(f)
    return out


def model_figures(main: Sequence[Case], ceilings: Sequence[Case], loops: dict[str, Any]) -> dict[str, Any]:
    """Per model: model-only, its GEMMs alone and the whole loop, each as samples/s, GFLOP/s and shares."""
    out = {}
    for case, ceiling in zip(main, ceilings, strict=True):
        only = case_figures(case)
        loop = dict(loops[case.model])
        loop["gflops"] = loop["samples_per_second"] * case.flops_per_sample / 1e9
        loop["share_of_gemm"] = loop["samples_per_second"] * case.flops_per_sample / loop.pop("gemm_rate")
        out[case.model] = {"model_only": only, "gemm_ceiling": case_figures(ceiling), "loop": loop}
    return out


def run(
    batch_size: int | None = None,
    threads: int | None = None,
    rounds: int = 3,
    epochs: int = 1,
    min_seconds: float = 1.0,
    preset: str | None = None,
    smoke: bool = False,
    compile_steps: int = 0,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every measurement of the module docstring; returns the figures (see :func:`main` for the CLI)."""
    quiet_lightning()
    warnings.filterwarnings("ignore", message=".*not writable.*")
    t0, load_start = time.perf_counter(), os.getloadavg()
    s = make_setting(batch_size, threads, preset, seed, max_samples=40_000 if smoke else 160_000)
    torch.set_num_threads(s.threads)
    log(
        f"data: {len(s.data.indices('train')):,} training impressions; {s.threads} threads, batch {s.batch_size}"
    )
    probe = GemmProbe()
    with deterministic(True):
        main = main_cases(s)
        flops = flop_figures(main)
        ceilings = ceiling_cases(s, main)
        variants = variant_cases(s, smoke)
        # One round measures every case once, so each variant has its default in the same round.
        measure_rounds([*main, *ceilings, *variants], probe, rounds, min_seconds)
        for c in [*main, *ceilings]:
            log(f"{c.name}: {median(c.rates):,.0f} samples/s, {median(c.shares):.0%} of the GEMM rate")
        loops = measure_loops(s, probe, rounds, epochs, min_seconds)
        profiles = {c.model: profile_step(c, steps=3 if smoke else 10) for c in main}
        compiled = compile_or_why(s, probe, compile_steps, min_seconds) if compile_steps else None
    models = model_figures(main, ceilings, loops)
    return {
        "config": config_figures(s, rounds, epochs, min_seconds),
        "gemm": gemm_figures(probe),
        "flops": flops,
        "models": models,
        "variants": variant_figures(variants, main),
        "profile": profiles,
        "compile": compiled,
        "targets": {
            "model_only_share_of_gemm": TARGET_SHARE_OF_GEMM,
            "loop_share_of_model_only": TARGET_LOOP_SHARE,
        },
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "seconds": time.perf_counter() - t0,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": L.__version__,
        },
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }


def config_figures(s: Setting, rounds: int, epochs: int, min_seconds: float) -> dict[str, Any]:
    """What was measured: data, batch size, threads and the two models' configurations."""
    from dmtl.config import to_dict

    return {
        "preset": s.study.data.preset,
        "train_impressions": len(s.data.indices("train")),
        "batch_size": s.batch_size,
        "threads": s.threads,
        "rounds": rounds,
        "loop_epochs": epochs,
        "min_seconds": min_seconds,
        "steps_per_call": s.study.train.steps_per_call,
        "teacher": to_dict(s.study.teacher),
        "student": {"towers": to_dict(s.study.students.common), "dmtl": s.study.students["dmtl"].to_dict()},
        "peer_expert_dims": list(PEER_EXPERT_DIMS),
    }


def gemm_figures(probe: GemmProbe) -> dict[str, Any]:
    """The GEMM probes: their median and spread (a wide spread means the machine was busy)."""
    rates = sorted(probe.rates)
    return {
        "n": probe.n,
        "gflops": median(rates) / 1e9,
        "gflops_min": rates[0] / 1e9,
        "gflops_max": rates[-1] / 1e9,
        "probes": len(rates),
    }


def report(figures: dict[str, Any]) -> None:
    """Print the figures against their targets."""
    g = figures["gemm"]
    print(
        f"GEMM rate ({g['n']}^2 fp32): {g['gflops']:.1f} GFLOP/s (probes {g['gflops_min']:.1f}-{g['gflops_max']:.1f})"
    )
    for model, f in figures["models"].items():
        only, ceil, loop = f["model_only"], f["gemm_ceiling"], f["loop"]
        print(
            f"{model}: {only['flops_per_sample'] / 1e3:,.0f} kFLOP/sample; model-only {only['samples_per_second']:,.0f}"
            f"/s = {only['gflops']:.1f} GFLOP/s = {only['share_of_gemm']:.0%} of the GEMM rate (its GEMMs alone "
            f"{ceil['share_of_gemm']:.0%}); loop {loop['samples_per_second']:,.0f}/s = "
            f"{loop['share_of_model_only']:.0%} of model-only"
        )
    for v in figures["variants"]:
        print(f"  {v['name']}: {v['samples_per_second']:,.0f}/s, {v['share_of_gemm']:.0%} of the GEMM rate")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size")
    parser.add_argument("--threads", type=int, default=None, help="default: train.threads / train.workers")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats of every measurement")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each whole-loop run")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="least time per model-only figure")
    parser.add_argument("--compile", type=int, default=0, metavar="STEPS", help="also time torch.compile")
    parser.add_argument("--smoke", action="store_true", help="tiny preset, one round, short runs")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    smoke = dict(preset="tiny", rounds=1, min_seconds=0.2) if args.smoke else {}
    figures = run(
        batch_size=args.batch_size,
        threads=args.threads,
        rounds=smoke.get("rounds", args.rounds),
        epochs=args.epochs,
        min_seconds=smoke.get("min_seconds", args.min_seconds),
        preset=smoke.get("preset"),
        smoke=args.smoke,
        compile_steps=args.compile,
    )
    report(figures)
    if args.out is not None:
        write_json(figures, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
