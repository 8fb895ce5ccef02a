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
from dataclasses import dataclass
from typing import Any

from dmtl.config.base import build_group, describe, fields_to_dict, group, rule, to_dict
from dmtl.config.groups import (
    DataConfig,
    DistillConfig,
    EvalConfig,
    StudentConfig,
    StudentsConfig,
    TeacherConfig,
    TowersConfig,
    TrainConfig,
)
from dmtl.config.sweeps import SweepsConfig, SweepSpec, TuningConfig, TuningGrid
from dmtl.rules import ParamsError


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
        return fields_to_dict(self)


GROUPS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Study))


def build(tree: Any) -> Study:
    """Build and validate the whole study configuration from the ``params.yaml`` tree."""
    return build_group(Study, tree, "")


__all__ = [
    "GROUPS",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "ParamsError",
    "StudentConfig",
    "StudentsConfig",
    "Study",
    "SweepSpec",
    "SweepsConfig",
    "TeacherConfig",
    "TowersConfig",
    "TrainConfig",
    "TuningConfig",
    "TuningGrid",
    "build",
    "build_group",
    "describe",
    "group",
    "rule",
    "to_dict",
]
