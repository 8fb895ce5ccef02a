"""The config groups of the tuning grid and the ablation sweeps (``tuning`` and ``sweeps`` of ``params.yaml``;
:mod:`dmtl.config`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dmtl import vocab as V
from dmtl.config.base import group, plain, rule
from dmtl.rules import (
    ParamsError,
    int_list,
    mapping,
    number,
    number_list,
    subset,
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

    def to_dict(self) -> dict[str, Any]:
        """The sweep as ``sweeps.grid.<name>`` holds it (the optional keys only where set)."""
        out = {"param": self.param, "values": [plain(v) for v in self.values]}
        if self.fixed:
            out["fixed"] = plain(self.fixed)
        if self.regime:
            out["regime"] = True
        if self.at:
            out["at"] = plain(self.at)
        return out


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
