"""The config groups of the data, the shared training budget, the teacher, the students and evaluation
(``data``, ``train``, ``teacher``, ``students``, ``eval`` of ``params.yaml``; :mod:`dmtl.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dmtl import vocab as V
from dmtl.config.base import as_mapping, build_group, check_keys, plain, rule, rule_fields, to_dict
from dmtl.rules import (
    boolean,
    choice,
    columns,
    devices,
    encoding,
    int_list,
    mapping,
    margins,
    number,
    subset,
    tau,
    text,
)


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
        out = {f: plain(getattr(self, f)) for f in ("lr", "emb_dim", "weight_decay")}
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
        tree = as_mapping(tree, prefix, valid)
        check_keys(tree, valid, prefix)
        names = subset(V.STUDENT_NAMES, allow_empty=False)(prefix + "names", tree["names"])
        common = build_group(TowersConfig, tree["common"], prefix + "common.")
        base = [f.name for f in rule_fields(StudentConfig)]
        distill = [f.name for f in rule_fields(DistillConfig)]
        by_name = {}
        for s in V.STUDENTS:
            key, keys = f"{prefix}{s.name}.", base + (distill if s.needs_teacher else [])
            own = as_mapping(tree[s.name], key, keys)
            check_keys(own, keys, key)
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
