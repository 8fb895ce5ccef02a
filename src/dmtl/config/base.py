"""The machinery of the config groups: a field's rule, building and validating a group from its YAML tree,
and the tree back from a group (:mod:`dmtl.config`)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from dmtl.rules import Check, ParamsError


def rule(check: Check, doc: str) -> Any:
    """A required config field validated by ``check``; ``doc`` says what it means (shown by ``describe``)."""
    return field(metadata={"check": check, "doc": doc})


def group(doc: str) -> Any:
    """A required field holding a nested config group."""
    return field(metadata={"doc": doc})


def plain(value: Any) -> Any:
    """A field's value as YAML holds it: tuples become lists, inside dicts and lists too."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and hasattr(value, "to_dict"):  # a value type (SweepSpec)
        return value.to_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as its YAML tree (tuples become lists)."""
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return fields_to_dict(config)


def fields_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as its YAML tree, field by field (what :func:`to_dict` does for a group without a
    ``to_dict`` of its own)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else plain(value)
    return out


def rule_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "check" in f.metadata or "doc" in f.metadata]


def check_keys(tree: Mapping[str, Any], valid: list[str], prefix: str) -> None:
    unknown = [k for k in tree if k not in valid]
    if unknown:
        where = prefix.rstrip(".") or "params.yaml"
        raise ParamsError(
            f"unknown key(s) {[prefix + k for k in unknown]} in {where}; valid keys: {sorted(valid)}"
        )
    missing = [k for k in valid if k not in tree]
    if missing:
        raise ParamsError(f"missing key(s) {[prefix + k for k in missing]}")


def as_mapping(value: Any, prefix: str, valid: list[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ParamsError(f"{prefix.rstrip('.')} must be a mapping with keys {sorted(valid)}")
    return value


def build_group(cls: type, tree: Any, prefix: str, **extra: Any) -> Any:
    """Build dataclass ``cls`` from ``tree`` (the group at dotted ``prefix``), validating every field.

    A field with a rule is checked by it; a field without one holds a nested group, built by that group's
    ``from_tree`` when it has one (``students``) or field by field otherwise.
    """
    fields = rule_fields(cls)
    valid = [f.name for f in fields]
    tree = as_mapping(tree, prefix, valid)
    check_keys(tree, valid, prefix)
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


def describe(cls: type) -> dict[str, str]:
    """Field name -> its documentation line: what each key of a group means."""
    return {f.name: f.metadata.get("doc", "") for f in rule_fields(cls)}
