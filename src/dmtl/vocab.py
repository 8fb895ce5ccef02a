"""The study's vocabulary: every model, metric and choice it names, defined once.

Params validation, losses, training, evaluation, the report, the plots and the README all read their
names, directions, ranges, display order and colours from here, so adding a student, a baseline or a metric
is one entry below plus its own function (a loss in :mod:`dmtl.losses`, a scorer in :mod:`dmtl.evaluation`);
``tests/test_vocab.py`` checks that every entry has its function and every function its entry.

Names follow the paper (docs/protocol.md section 1): ``p_ctr``, ``p_cvr`` (P(long read | click)),
``p_ctcvr = p_ctr * p_cvr``, ``long_read`` (clicked and read longer than tau).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

# ------------------------------------------------------------------------------------------- choices
# Each choice is a Literal type (what a config field is annotated with) and the tuple of its values.
Source = Literal["simulated", "kuairand", "generic"]
Preset = Literal["tiny", "small", "default", "large"]
KuaiRandLog = Literal["standard", "random"]
Backbone = Literal["mmoe", "shared_bottom"]
TeacherVariant = Literal["shared_bottom", "no_esmm", "position_feature", "no_position"]
TeacherPosition = Literal["bias", "feature", "none"]
Score = Literal["dot", "cosine"]
SoftTarget = Literal["p_ctcvr", "p_ctr", "p_ctr_x_duration"]
DistillLoss = Literal["bce", "mse", "kl", "logit_mse"]
TeacherTraining = Literal["two_stage", "joint"]
Objective = Literal["pointwise", "sampled_softmax"]
SelectOn = Literal["recall_long", "auc_ctcvr", "loss"]
LongReadRule = Literal["auto", "duration", "completion", "length_band"]
Storage = Literal["auto", "memory", "shards"]
AnnIndex = Literal["hnsw", "ivf_flat"]
Accelerator = Literal["cpu", "gpu", "cuda", "mps", "auto"]
Strategy = Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "single_device"]
Precision = Literal["32-true", "32", "16-mixed", "bf16-mixed", "64-true"]

SOURCES: tuple[str, ...] = get_args(Source)
PRESETS: tuple[str, ...] = get_args(Preset)
KUAIRAND_LOGS: tuple[str, ...] = get_args(KuaiRandLog)
BACKBONES: tuple[str, ...] = get_args(Backbone)
TEACHER_VARIANTS: tuple[str, ...] = get_args(TeacherVariant)
TEACHER_POSITIONS: tuple[str, ...] = get_args(TeacherPosition)
SCORES: tuple[str, ...] = get_args(Score)
SOFT_TARGETS: tuple[str, ...] = get_args(SoftTarget)
DISTILL_LOSSES: tuple[str, ...] = get_args(DistillLoss)
TEACHER_TRAININGS: tuple[str, ...] = get_args(TeacherTraining)
OBJECTIVES: tuple[str, ...] = get_args(Objective)
SELECT_ON: tuple[str, ...] = get_args(SelectOn)
LONG_READ_RULES: tuple[str, ...] = get_args(LongReadRule)
STORAGES: tuple[str, ...] = get_args(Storage)
ANN_INDEXES: tuple[str, ...] = get_args(AnnIndex)
ACCELERATORS: tuple[str, ...] = get_args(Accelerator)
STRATEGIES: tuple[str, ...] = get_args(Strategy)
PRECISIONS: tuple[str, ...] = get_args(Precision)

# -------------------------------------------------------------------------------------------- models
TEACHER = "teacher"
"""The MMoE + ESMM teacher: an upper bound on ranking metrics; not retrievable (it has no towers)."""


@dataclass(frozen=True)
class Student:
    """A two-tower student: one shared architecture, its own training target (docs/protocol.md section 3).

    Attributes:
        name: the name in params, metrics, tables and figures.
        target: one line on what it is trained on (shown in the student notebook and the report).
        needs_teacher: trained on the teacher's outputs, so it takes the distillation settings
            (``students.<name>.soft_target``, ``distill_loss``, ...) and depends on the teacher stage.
        color: its colour in every figure.
        click_label: trained by BCE on a logged label that needs a click (``y_c`` or ``y_c * y_d``), so the
            feed position biases its label; with ``students.common.position_bias`` its training multiplies
            the click probability by a learned ``P(seen | position)`` (PAL, :func:`dmtl.losses.click_bce`).
    """

    name: str
    target: str
    needs_teacher: bool
    color: str
    click_label: bool = False


STUDENTS: tuple[Student, ...] = (
    Student(
        "dmtl",
        "the paper's student: matches the frozen teacher's output (by default BCE against p_ctcvr) over all "
        "training impressions; hard-label weight, loss and target are parameters.",
        needs_teacher=True,
        color="#d62728",
    ),
    Student(
        "ctr",
        "binary cross-entropy on the click label y_c: the production baseline.",
        needs_teacher=False,
        color="#1f77b4",
        click_label=True,
    ),
    Student(
        "duration_regression",
        "mean squared error on log(1 + duration), non-clicks as zero duration: the 'common practice' the "
        "paper criticises, which mixes 'not clicked' with 'read briefly'.",
        needs_teacher=False,
        color="#2ca02c",
    ),
    Student(
        "weighted_lr",
        "click BCE with positives weighted by duration / mean clicked duration (YouTube 2016): the odds "
        "exp(<u, v>) approximate expected reading time.",
        needs_teacher=False,
        color="#ff7f0e",
        click_label=True,
    ),
    Student(
        "ctcvr_hard",
        "BCE on the hard multi-task label y_c * y_d (clicked and read longer than tau), no teacher.",
        needs_teacher=False,
        color="#9467bd",
        click_label=True,
    ),
)
STUDENT_NAMES: tuple[str, ...] = tuple(s.name for s in STUDENTS)
TEACHER_COLOR = "#444444"
OTHER_COLOR = "#7f7f7f"


@dataclass(frozen=True)
class Baseline:
    """A non-personalised popularity list: the same ranking for every user (docs/protocol.md section 3).

    Attributes:
        name: the name in metrics, tables and figures.
        count: what is counted per item over the training days: ``impressions``, ``clicks`` or
            ``long_reads`` (clicked and read longer than tau).
        description: one line for the report.
        color: its colour in every figure.
    """

    name: str
    count: Literal["impressions", "clicks", "long_reads"]
    description: str
    color: str


BASELINES: tuple[Baseline, ...] = (
    Baseline("pop_long_reads", "long_reads", "the items with the most training long reads", "#8c564b"),
    Baseline("pop_clicks", "clicks", "the items with the most training clicks", "#e377c2"),
    Baseline("pop_impressions", "impressions", "the items shown most in training", "#bcbd22"),
)
BASELINE_NAMES: tuple[str, ...] = tuple(b.name for b in BASELINES)

MODEL_ORDER: tuple[str, ...] = (TEACHER, *STUDENT_NAMES, *BASELINE_NAMES)
"""Display order of every table and figure."""


def student(name: str) -> Student:
    """The vocabulary entry of student ``name`` (``KeyError`` naming the valid ones)."""
    for s in STUDENTS:
        if s.name == name:
            return s
    raise KeyError(f"unknown student {name!r}; valid: {list(STUDENT_NAMES)}")


def model_color(name: str) -> str:
    """One colour per model in every figure."""
    if name == TEACHER:
        return TEACHER_COLOR
    return next((m.color for m in (*STUDENTS, *BASELINES) if m.name == name), OTHER_COLOR)


def baseline(name: str) -> Baseline:
    """The vocabulary entry of popularity baseline ``name``."""
    for b in BASELINES:
        if b.name == name:
            return b
    raise KeyError(f"unknown baseline {name!r}; valid: {list(BASELINE_NAMES)}")


def ordered_models(models: Iterable[str]) -> list[str]:
    """``models`` in display order; names the vocabulary does not know go last, in their own order."""
    names = list(models)
    return [m for m in MODEL_ORDER if m in names] + [m for m in names if m not in MODEL_ORDER]


# ------------------------------------------------------------------------------------------- metrics
MetricFamily = Literal["ranking", "retrieval", "segment", "oracle", "check"]


@dataclass(frozen=True)
class Metric:
    """A metric of docs/protocol.md section 4.

    Attributes:
        name: base name; at-K metrics are reported as ``<name>@<K>``.
        family: ``ranking`` (scores of test impressions), ``retrieval`` (top-K lists over the corpus),
            ``segment`` (a retrieval metric on warm or cold users or items), ``oracle`` (top-K lists scored by
            the simulator's ground truth) or ``check`` (diagnostics: the approximate index against exact
            search, the lists without the history mask).
        higher_is_better: the direction verdicts read.
        bounds: the range every value lies in; intervals are kept inside it.
        at_k: reported per cut-off K of ``eval.ks``.
        description: one line for tables and the report.
    """

    name: str
    family: MetricFamily
    higher_is_better: bool
    bounds: tuple[float, float]
    at_k: bool
    description: str


_UNIT = (0.0, 1.0)
METRICS: tuple[Metric, ...] = (
    Metric("auc_click", "ranking", True, _UNIT, False, "score vs y_c over all test impressions"),
    Metric("auc_ctcvr", "ranking", True, _UNIT, False, "score vs y_c * y_d over all test impressions"),
    Metric("auc_cvr", "ranking", True, _UNIT, False, "score vs y_d among clicked test impressions"),
    Metric("gauc_click", "ranking", True, _UNIT, False, "impression-weighted per-user AUC of auc_click"),
    Metric("gauc_ctcvr", "ranking", True, _UNIT, False, "impression-weighted per-user AUC of auc_ctcvr"),
    Metric("gauc_cvr", "ranking", True, _UNIT, False, "impression-weighted per-user AUC of auc_cvr"),
    Metric("recall_long", "retrieval", True, _UNIT, True, "share of a user's test long reads in the top K"),
    Metric("recall_click", "retrieval", True, _UNIT, True, "share of a user's test clicks in the top K"),
    Metric("bait_share", "retrieval", False, _UNIT, True, "share of clickbait items in the top K"),
    Metric("recall_long_warm_users", "segment", True, _UNIT, True, "recall_long@K of users seen in training"),
    Metric(
        "recall_long_cold_users", "segment", True, _UNIT, True, "recall_long@K of users not seen in training"
    ),
    Metric(
        "recall_long_warm_items",
        "segment",
        True,
        _UNIT,
        True,
        "recall_long@K of long reads of items seen in training",
    ),
    Metric(
        "recall_long_cold_items",
        "segment",
        True,
        _UNIT,
        True,
        "recall_long@K of long reads of items not seen in training",
    ),
    Metric(
        "oracle_p_long",
        "oracle",
        True,
        _UNIT,
        True,
        "P(long read) of the top K over that of the best top K (simulator ground truth; the paper's objective)",
    ),
    Metric(
        "oracle_read_time",
        "oracle",
        True,
        _UNIT,
        True,
        "expected reading time of the top K over that of the best top K (simulator ground truth)",
    ),
    Metric("recall_long_ann", "check", True, _UNIT, True, "recall_long@K of the approximate index's lists"),
    Metric(
        "ann_recall_vs_exact",
        "check",
        True,
        _UNIT,
        False,
        "share of the exact top K_max the approximate index finds",
    ),
    Metric(
        "recall_long_unmasked",
        "check",
        True,
        _UNIT,
        True,
        "recall_long@K of lists that may repeat items the user was shown in training",
    ),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
RANKING_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.family == "ranking")

MAIN_K = 100
"""The cut-off K of the headline retrieval metrics (the middle of ``eval.ks`` when 100 is not in it)."""
HEADLINE: tuple[str, ...] = ("auc_ctcvr", f"recall_long@{MAIN_K}", f"bait_share@{MAIN_K}")
"""The study's three headline numbers: duration ranking, long reads retrieved, clickbait retrieved."""


def metric(name: str) -> Metric:
    """The entry of a reported metric name: ``auc_ctcvr`` or an at-K name such as ``recall_long@100``."""
    base = name.split("@", 1)[0]
    for m in METRICS:
        if m.name == base:
            return m
    raise KeyError(f"unknown metric {name!r}; valid base names: {list(METRIC_NAMES)}")


def higher_is_better(name: str) -> bool:
    """The direction of a reported metric name (``bait_share@100`` -> False)."""
    return metric(name).higher_is_better


def main_k(ks: Iterable[int]) -> int:
    """The cut-off the report headlines: :data:`MAIN_K` when evaluated, else the middle of ``ks``."""
    ordered = sorted(ks)
    return MAIN_K if MAIN_K in ordered else ordered[len(ordered) // 2]


def headline(ks: Iterable[int]) -> tuple[str, ...]:
    """:data:`HEADLINE` at the cut-off :func:`main_k` of ``ks``."""
    k = main_k(ks)
    return tuple(m.split("@")[0] + f"@{k}" if "@" in m else m for m in HEADLINE)


def reported(base_names: Iterable[str], ks: Iterable[int]) -> list[str]:
    """Reported names of ``base_names`` in vocabulary order, at-K metrics expanded over ``ks``."""
    wanted, cutoffs = set(base_names), sorted(ks)
    out: list[str] = []
    for m in METRICS:
        if m.name in wanted:
            out += [f"{m.name}@{k}" for k in cutoffs] if m.at_k else [m.name]
    return out
