"""Typed, validated configuration of every stage: one frozen dataclass per group of ``params.yaml``.

``params.yaml`` is the one place defaults live: every field here is required, so a key missing from the
file is an error, never a silent fallback in code. :func:`build` turns the YAML tree into a :class:`Study`
and refuses unknown keys and bad values with a message that names the key and lists the valid options;
:meth:`Study.to_dict` gives the tree back (what sweeps override and what metrics files record).

A field's rule (:func:`rule`, built from :mod:`dmtl.rules`) validates and normalises its value (lists become tuples, so a config cannot
be changed after it is built). Models, Lightning modules and ``fit`` take these objects, so a parameter
can be followed from ``params.yaml`` to the code that reads it by its attribute name.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dmtl import vocab as V
from dmtl.rules import (
    Check,
    ParamsError,
    boolean,
    choice,
    columns,
    devices,
    encoding,
    int_list,
    mapping,
    margins,
    number,
    number_list,
    subset,
    tau,
    text,
)


# -------------------------------------------------------------------------------------------- groups
def rule(check: Check, doc: str) -> Any:
    """A required config field validated by ``check``; ``doc`` says what it means (shown by ``describe``)."""
    return field(metadata={"check": check, "doc": doc})


def group(doc: str) -> Any:
    """A required field holding a nested config group."""
    return field(metadata={"doc": doc})


@dataclass(frozen=True)
class DataConfig:
    """``data``: where the log comes from, how it is split by day, and the long-read threshold."""

    source: V.Source = rule(choice(V.SOURCES), "simulated | kuairand | generic")
    path: str = rule(text, "kuairand / generic: directory of the files (ignored for simulated)")
    preset: V.Preset = rule(choice(V.PRESETS), "simulated: world size (tiny | small | default | large)")
    sim_seed: int = rule(number(0, None, True), "simulated: the world's seed; model seeds are train.seeds")
    sim: dict[str, Any] = rule(mapping, "simulated: knob overrides, checked by dmtl.sources.simulator.config")
    kuairand_logs: tuple[str, ...] = rule(subset(V.KUAIRAND_LOGS, allow_empty=False), "kuairand logs read")
    columns: dict[str, str] = rule(columns, "generic: schema name -> your column name")
    val_days: int = rule(number(1, None, True), "last day(s) of the training period: early stopping")
    test_days: int = rule(number(1, None, True), "last day(s) of the log: the test period")
    tau: str | float = rule(tau, "long-read threshold: 'mean' clicked training duration (paper) or seconds")
    long_read: V.LongReadRule = rule(
        choice(V.LONG_READ_RULES),
        "auto | duration (> tau) | completion (played share) | length_band (tau per item-length band)",
    )
    completion_threshold: float = rule(
        number(0.01, 10.0), "long_read = completion: the played share of the item"
    )
    length_bands: int = rule(number(1, 50, True), "long_read = length_band: quantile bands of item length")
    storage: V.Storage = rule(
        choice(V.STORAGES),
        "prepared impressions: memory (tensors) | shards (Parquet shards streamed into training: memory does "
        "not grow with the log) | auto (shards above 20M impressions)",
    )
    shard_rows: int = rule(number(1000, None, True), "storage = shards: impressions per shard (about)")
    # Reading and plausibility rules of the real-data loaders (dmtl.schema.LoadOptions, docs/data_formats.md
    # section 4); the simulator ignores them.
    encoding: str = rule(encoding, "kuairand / generic: text encoding of the CSV files")
    max_median_duration_s: float = rule(
        number(1.0, None), "a higher median clicked duration is refused: the likely unit mistake (ms)"
    )
    max_duration_s: float = rule(number(1.0, None), "clicked durations above it are capped, and counted")
    first_year: int = rule(number(1970, 9998, True), "timestamps before 1 January of this year are refused")
    last_year: int = rule(number(1970, 9998, True), "timestamps after 31 December of this year are refused")
    max_span_days: int = rule(number(1, None, True), "a log spanning more days is refused")


@dataclass(frozen=True)
class TrainConfig:
    """``train``: the budget and hardware shared by the teacher and every student."""

    seeds: tuple[int, ...] = rule(int_list(lo=0, unique=True), "model seeds")
    batch_size: int = rule(number(1, None, True), "impressions per optimizer step")
    max_epochs: int = rule(number(1, None, True), "epoch cap")
    patience: int = rule(number(0, None, True), "epochs without a better validation value before stopping")
    select_on: V.SelectOn = rule(
        choice(V.SELECT_ON),
        "students: the one validation metric for early stopping and tuning (recall_long | auc_ctcvr | loss)",
    )
    accelerator: V.Accelerator = rule(choice(V.ACCELERATORS), "lightning.Trainer accelerator")
    devices: int | str | tuple[int, ...] = rule(devices, "lightning.Trainer devices")
    strategy: V.Strategy = rule(choice(V.STRATEGIES), "lightning.Trainer strategy")
    num_nodes: int = rule(number(1, None, True), "lightning.Trainer num_nodes")
    precision: V.Precision = rule(choice(V.PRECISIONS), "lightning.Trainer precision")
    threads: int = rule(number(1, 256, True), "torch intra-op threads on CPU (shared by the workers)")
    workers: int = rule(
        number(1, 64, True), "seeds trained side by side, in processes of threads / workers threads"
    )
    steps_per_call: int = rule(number(1, 4096, True), "optimizer steps per Lightning training_step")


@dataclass(frozen=True)
class TeacherConfig:
    """``teacher``: the MMoE + ESMM teacher (docs/protocol.md sections 1-2)."""

    backbone: V.Backbone = rule(choice(V.BACKBONES), "mmoe | shared_bottom")
    esmm: bool = rule(boolean, "false: CVR tower trained on clicked impressions only")
    n_experts: int = rule(number(1, 64, True), "MMoE experts")
    expert_dims: tuple[int, ...] = rule(int_list(), "layer widths of each expert")
    tower_dims: tuple[int, ...] = rule(int_list(allow_empty=True), "hidden widths of each task tower")
    emb_dim: int = rule(number(1, 1024, True), "embedding size per field")
    dot_dim: int = rule(number(0, 1024, True), "user x item inner-product term of each task logit (0: none)")
    lr: float = rule(number(1e-6, 1.0), "Adam learning rate")
    weight_decay: float = rule(number(0.0, 1.0), "Adam weight decay")
    w_ctr: float = rule(number(0.0, None), "weight of BCE(y_c, p_ctr)")
    w_ctcvr: float = rule(number(0.0, None), "weight of BCE(y_c * y_d, p_ctcvr)")
    w_duration: float = rule(number(0.0, None), "> 0 adds an E[log duration | click] head")
    position: V.TeacherPosition = rule(
        choice(V.TEACHER_POSITIONS),
        "bias: a learned P(seen | position) factor in training only (PAL), predictions at the top of the feed "
        "| feature: an MMoE input (predictions at the logged position) | none",
    )
    variants: tuple[str, ...] = rule(
        subset(V.TEACHER_VARIANTS),
        "variants trained beside the default: shared_bottom, no_esmm, position_feature, no_position",
    )
    variant_seeds: int = rule(number(0, None, True), "how many of train.seeds the variants use")


@dataclass(frozen=True)
class TowersConfig:
    """``students.common``: what every student shares: the two-tower architecture and the training objective
    (docs/protocol.md section 3)."""

    tower_dims: tuple[int, ...] = rule(int_list(allow_empty=True), "hidden widths of each tower's MLP")
    out_dim: int = rule(number(1, 1024, True), "embedding size shared by the towers")
    score: V.Score = rule(choice(V.SCORES), "dot: sigmoid(<u, v>) | cosine: cos(u, v) / cosine_temperature")
    cosine_temperature: float = rule(number(1e-4, None), "score = cosine only: the cosine temperature")
    objective: V.Objective = rule(
        choice(V.OBJECTIVES),
        "pointwise: each student's loss on logged impressions | sampled_softmax: in-batch softmax over the "
        "corpus with log-Q correction, each impression weighted by the student's target",
    )
    softmax_negatives: int = rule(
        number(1, 1_000_000, True), "sampled_softmax: the batch rows whose items are every row's negatives"
    )
    position_bias: bool = rule(
        boolean,
        "students trained on logged click labels (ctr, weighted_lr, ctcvr_hard): training multiplies their "
        "click probability by a learned P(seen | position) (PAL; pointwise objective); serving uses the towers alone",
    )


@dataclass(frozen=True)
class DistillConfig:
    """The distillation settings of a student that learns from the teacher (protocol section 2)."""

    soft_target: V.SoftTarget = rule(choice(V.SOFT_TARGETS), "the teacher output distilled")
    distill_loss: V.DistillLoss = rule(
        choice(V.DISTILL_LOSSES), "bce | mse | kl | logit_mse (MSE on logits) against the soft target"
    )
    kl_temperature: float = rule(number(1e-3, None), "distill_loss = kl only: the temperature T")
    hard_weight: float = rule(number(0.0, None), "weight of BCE on the hard label y_c * y_d")
    teacher_training: V.TeacherTraining = rule(
        choice(V.TEACHER_TRAININGS), "two_stage: frozen teacher | joint: trained alongside (stop-gradient)"
    )
    unexposed_ratio: float = rule(
        number(0.0, 16.0), "teacher-labelled (user, item) pairs the logs never showed, per batch row (0: off)"
    )
    unexposed_popularity_share: float = rule(
        number(0.0, 1.0),
        "share of those pairs whose item is drawn by training popularity (the rest: uniform)",
    )
    unexposed_weight: float = rule(number(0.0, None), "weight of the distillation loss on those pairs")


@dataclass(frozen=True)
class StudentConfig:
    """``students.<name>``: one student's optimiser settings (and distillation settings if it has a teacher)."""

    name: str
    lr: float = rule(number(1e-6, 1.0), "Adam learning rate")
    emb_dim: int = rule(number(1, 1024, True), "embedding size per field")
    weight_decay: float = rule(number(0.0, 1.0), "Adam weight decay")
    distill: DistillConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``students.<name>`` group as in params.yaml (distillation keys flattened into it)."""
        out = {f: _plain(getattr(self, f)) for f in ("lr", "emb_dim", "weight_decay")}
        if self.distill is not None:
            out.update(to_dict(self.distill))
        return out


@dataclass(frozen=True)
class StudentsConfig:
    """``students``: which students are trained, their shared towers, and each one's own settings."""

    names: tuple[str, ...]
    common: TowersConfig
    by_name: dict[str, StudentConfig]

    def __getitem__(self, name: str) -> StudentConfig:
        return self.by_name[name]

    @classmethod
    def from_tree(cls, tree: Any, prefix: str = "students.") -> StudentsConfig:
        """``names``, ``common`` and one group per student of the vocabulary (distillation keys only for
        students that learn from the teacher)."""
        valid = ["names", "common", *V.STUDENT_NAMES]
        tree = _as_mapping(tree, prefix, valid)
        _check_keys(tree, valid, prefix)
        names = subset(V.STUDENT_NAMES, allow_empty=False)(prefix + "names", tree["names"])
        common = build_group(TowersConfig, tree["common"], prefix + "common.")
        base = [f.name for f in _fields(StudentConfig)]
        distill = [f.name for f in _fields(DistillConfig)]
        by_name = {}
        for s in V.STUDENTS:
            key, keys = f"{prefix}{s.name}.", base + (distill if s.needs_teacher else [])
            own = _as_mapping(tree[s.name], key, keys)
            _check_keys(own, keys, key)
            d = build_group(DistillConfig, {k: own[k] for k in distill}, key) if s.needs_teacher else None
            by_name[s.name] = build_group(
                StudentConfig, {k: own[k] for k in base}, key, name=s.name, distill=d
            )
        return cls(names=names, common=common, by_name=by_name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "common": to_dict(self.common),
            **{name: cfg.to_dict() for name, cfg in self.by_name.items()},
        }


@dataclass(frozen=True)
class EvalConfig:
    """``eval``: cut-offs, the approximate index beside exact search, intervals and the bait rule."""

    # A repeated K would be one column reported twice (and a duplicate key downstream).
    ks: tuple[int, ...] = rule(int_list(unique=True), "retrieval cut-offs K")
    ann: V.AnnIndex = rule(choice(V.ANN_INDEXES), "approximate index reported beside exact search")
    ann_nlist: int = rule(number(1, None, True), "ivf_flat: lists")
    ann_nprobe: int = rule(number(1, None, True), "ivf_flat: lists probed per query")
    ann_ef_search: int = rule(number(1, None, True), "hnsw: candidate list per query")
    ci_level: float = rule(number(0.5, 0.999), "confidence level of every interval")
    n_boot: int = rule(
        number(100, 100_000, True), "bootstrap replicates (users x seeds) of the retrieval metrics"
    )
    n_boot_ranking: int = rule(number(100, 100_000, True), "bootstrap replicates of the ranking AUCs")
    bootstrap_seed: int = rule(number(0, None, True), "seed of the bootstrap's random draws")
    margins: dict[str, float] = rule(
        margins, "equivalence margin per metric (base name): TOST within +-margin"
    )
    reference: str = rule(choice(V.STUDENT_NAMES), "the model every other one is compared with")
    baselines: tuple[str, ...] = rule(
        subset(V.BASELINE_NAMES), "popularity lists evaluated beside the students"
    )
    history_mask: bool = rule(boolean, "retrieval skips the items each user was shown on the training days")
    oracle_users: int = rule(
        number(1, None, True), "simulated: retrieval users (a fixed sample) of oracle_p_long"
    )
    bait_min_items: int = rule(
        number(1, None, True), "real data: bait_share is reported only when at least this many items qualify"
    )
    bait_min_impressions: int = rule(
        number(1, None, True), "real data: training impressions for the bait rule"
    )


@dataclass(frozen=True)
class TuningGrid:
    """``tuning.grid``: the same grid for the teacher and every student."""

    lr: tuple[float, ...] = rule(number_list(1e-6, 1.0), "learning rates")
    emb_dim: tuple[int, ...] = rule(number_list(1, 1024, integer=True), "embedding sizes")


def distill_variants(key: str, value: Any) -> dict[str, dict[str, Any]]:
    """``tuning.distill_variants``: ``"<sweep>=<value>"`` -> the dotted overrides that make that variant."""
    out = {}
    for label, over in mapping(key, value).items():
        if not isinstance(label, str) or "=" not in label:
            raise ParamsError(f"{key}: {label!r} must read '<sweep name>=<value>', e.g. 'distill_loss=mse'")
        out[label] = mapping(f"{key}.{label}", over)
    return out


@dataclass(frozen=True)
class TuningConfig:
    """``tuning``: `make tune`, one grid for every model, chosen on one validation metric."""

    seeds: tuple[int, ...] = rule(int_list(lo=0, unique=True), "model seeds of every grid point")
    objectives: tuple[str, ...] = rule(
        subset(V.OBJECTIVES, allow_empty=False), "training objectives compared"
    )
    grid: TuningGrid = group("the grid")
    distill_variants: dict[str, dict[str, Any]] = rule(
        distill_variants, "the reference's other distillation losses, each tuned for its ablation sweep"
    )


@dataclass(frozen=True)
class SweepSpec:
    """One sweep of ``sweeps.grid``: a dotted parameter and its values.

    Attributes:
        param: the swept dotted key.
        values: its values, one grid point each.
        fixed: dotted keys set at every point (e.g. ``students.dmtl.distill_loss: kl`` for a sweep of the KL
            temperature).
        regime: the sweep moves a property of the data (density, cold items, ...): one axis of the report's
            map of where distillation helps, rather than an ablation of a modelling choice.
        at: dotted keys set at one value only (``str(value)`` -> settings), e.g. the learning rate tuned for
            that distillation loss (written by ``python -m dmtl.tuning apply``).
    """

    param: str
    values: tuple[Any, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    regime: bool = False
    at: dict[str, dict[str, Any]] = field(default_factory=dict)


_SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def sweep_grid(key: str, value: Any) -> dict[str, SweepSpec]:
    out = {}
    for name, spec in mapping(key, value).items():
        if not isinstance(name, str) or not _SWEEP_NAME.fullmatch(name):
            # The name becomes a folder (sweeps/<name>/) and an argument of dvc.yaml's shell command.
            raise ParamsError(
                f"sweeps.grid: the sweep name {name!r} must be letters, digits, '_' or '-' (it names a folder "
                "and is passed to a shell command by dvc.yaml)"
            )
        if (
            not isinstance(spec, Mapping)
            or not {"param", "values"} <= set(spec) <= {"param", "values", "fixed", "regime", "at"}
            or not isinstance(spec["param"], str)
            or not isinstance(spec["values"], list | tuple)
            or not spec["values"]
            or not isinstance(spec.get("fixed", {}), Mapping)
            or not isinstance(spec.get("regime", False), bool)
            or not isinstance(spec.get("at", {}), Mapping)
            or not all(isinstance(v, Mapping) for v in spec.get("at", {}).values())
        ):
            raise ParamsError(
                f"sweeps.grid.{name} = {spec!r} must be {{param: dotted.key, values: [a non-empty list]}}, "
                "optionally with fixed: {dotted.key: value} and regime: true|false"
            )
        at = {str(k): dict(v) for k, v in spec.get("at", {}).items()}
        unknown = sorted(set(at) - {str(v) for v in spec["values"]})
        if unknown:
            raise ParamsError(f"sweeps.grid.{name}.at names {unknown}, which are not among its values")
        out[name] = SweepSpec(
            spec["param"], tuple(spec["values"]), dict(spec.get("fixed", {})), spec.get("regime", False), at
        )
    return out


@dataclass(frozen=True)
class SweepsConfig:
    """``sweeps``: the ablations of docs/protocol.md section 2, each run by dmtl.sweep."""

    seeds: tuple[int, ...] = rule(int_list(lo=0, unique=True), "model seeds of every grid point")
    students: tuple[str, ...] = rule(subset(V.STUDENT_NAMES, allow_empty=False), "students each point trains")
    workers: int = rule(number(1, 64, True), "grid points run at once")
    n_boot_ranking: int = rule(
        number(100, 100_000, True), "bootstrap replicates of the ranking AUCs of a point"
    )
    grid: dict[str, SweepSpec] = rule(sweep_grid, "name -> {param, values, fixed, regime}")


@dataclass(frozen=True)
class Study:
    """The whole ``params.yaml``: one typed group per stage family."""

    data: DataConfig = group("the log and its split")
    train: TrainConfig = group("the shared training budget")
    teacher: TeacherConfig = group("the teacher")
    students: StudentsConfig = group("the students")
    eval: EvalConfig = group("evaluation")
    tuning: TuningConfig = group("the tuning grid")
    sweeps: SweepsConfig = group("the ablation sweeps")

    def to_dict(self) -> dict[str, Any]:
        """The YAML tree again (lists, plain dicts): what overrides are applied to."""
        return to_dict(self)


GROUPS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Study))


# ----------------------------------------------------------------------------------------- building
def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, SweepSpec):
        out = {"param": value.param, "values": [_plain(v) for v in value.values]}
        if value.fixed:
            out["fixed"] = _plain(value.fixed)
        if value.regime:
            out["regime"] = True
        if value.at:
            out["at"] = _plain(value.at)
        return out
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as its YAML tree (tuples become lists)."""
    if hasattr(config, "to_dict") and not isinstance(config, Study):
        return config.to_dict()
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else _plain(value)
    return out


def _fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "check" in f.metadata or "doc" in f.metadata]


def _check_keys(tree: Mapping[str, Any], valid: list[str], prefix: str) -> None:
    unknown = [k for k in tree if k not in valid]
    if unknown:
        where = prefix.rstrip(".") or "params.yaml"
        raise ParamsError(
            f"unknown key(s) {[prefix + k for k in unknown]} in {where}; valid keys: {sorted(valid)}"
        )
    missing = [k for k in valid if k not in tree]
    if missing:
        raise ParamsError(f"missing key(s) {[prefix + k for k in missing]}")


def _as_mapping(value: Any, prefix: str, valid: list[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ParamsError(f"{prefix.rstrip('.')} must be a mapping with keys {sorted(valid)}")
    return value


def build_group(cls: type, tree: Any, prefix: str, **extra: Any) -> Any:
    """Build dataclass ``cls`` from ``tree`` (the group at dotted ``prefix``), validating every field.

    A field with a rule is checked by it; a field without one holds a nested group, built by that group's
    ``from_tree`` when it has one (``students``) or field by field otherwise.
    """
    fields = _fields(cls)
    valid = [f.name for f in fields]
    tree = _as_mapping(tree, prefix, valid)
    _check_keys(tree, valid, prefix)
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields:
        key = prefix + f.name
        if "check" in f.metadata:
            values[f.name] = f.metadata["check"](key, tree[f.name])
        else:
            sub = hints[f.name]
            make = getattr(sub, "from_tree", None) or (lambda t, p, sub=sub: build_group(sub, t, p))
            values[f.name] = make(tree[f.name], key + ".")
    return cls(**values, **extra)


def build(tree: Any) -> Study:
    """Build and validate the whole study configuration from the ``params.yaml`` tree."""
    return build_group(Study, tree, "")


def describe(cls: type) -> dict[str, str]:
    """Field name -> its documentation line: what each key of a group means."""
    return {f.name: f.metadata.get("doc", "") for f in _fields(cls)}
