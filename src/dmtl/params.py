"""Load and validate ``params.yaml`` before any work is done.

Unknown keys and bad values stop the run with the valid options listed, so a typo in a sweep
(``students.dmtl.los``) fails loudly instead of silently running the default.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

STUDENT_NAMES = ("ctr", "duration_regression", "weighted_lr", "ctcvr_hard", "dmtl")
TEACHER_VARIANTS = ("shared_bottom", "no_esmm")


class ParamsError(ValueError):
    """A parameter is unknown or has a bad value; the message lists the valid options."""


Check = Callable[[str, Any], None]


def _choice(*options: Any) -> Check:
    def check(key: str, value: Any) -> None:
        if value not in options:
            raise ParamsError(f"{key} = {value!r} is not valid; choose one of {list(options)}")

    return check


def _number(lo: float | None = None, hi: float | None = None, integer: bool = False) -> Check:
    def check(key: str, value: Any) -> None:
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            kind = "an integer" if integer else "a number"
            raise ParamsError(f"{key} = {value!r} must be {kind}")
        # NaN compares False with every bound, so without this a .nan in params.yaml would pass silently.
        if not math.isfinite(value):
            raise ParamsError(f"{key} = {value!r} must be a finite number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ParamsError(f"{key} = {value!r} must lie in [{lo}, {hi}]")

    return check


def _bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ParamsError(f"{key} = {value!r} must be true or false")


def _str(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ParamsError(f"{key} = {value!r} must be a non-empty string")


def _int_list(lo: int = 1, allow_empty: bool = False, unique: bool = False) -> Check:
    def check(key: str, value: Any) -> None:
        if not isinstance(value, list) or (not value and not allow_empty):
            raise ParamsError(f"{key} = {value!r} must be a list of integers")
        for i, v in enumerate(value):
            _number(lo, None, integer=True)(f"{key}[{i}]", v)
        if unique and len(set(value)) != len(value):
            # A repeated seed is the same run counted twice: it would narrow the interval over seeds
            # (docs/protocol.md section 4) without adding evidence.
            raise ParamsError(f"{key} = {value!r} repeats an entry; list each one once")

    return check


def _number_list(lo: float, hi: float, integer: bool = False) -> Check:
    def check(key: str, value: Any) -> None:
        if not isinstance(value, list) or not value:
            raise ParamsError(f"{key} = {value!r} must be a non-empty list of numbers")
        for i, v in enumerate(value):
            _number(lo, hi, integer)(f"{key}[{i}]", v)

    return check


def _subset(*options: str, allow_empty: bool = True) -> Check:
    def check(key: str, value: Any) -> None:
        if not isinstance(value, list) or (not value and not allow_empty):
            raise ParamsError(f"{key} = {value!r} must be a list drawn from {list(options)}")
        bad = [v for v in value if v not in options]
        if bad:
            raise ParamsError(f"{key} has unknown entries {bad}; choose from {list(options)}")
        if len(set(value)) != len(value):
            raise ParamsError(f"{key} = {value!r} repeats an entry")

    return check


def _tau(key: str, value: Any) -> None:
    if value == "mean":
        return
    try:
        _number(0.0, None)(key, value)
    except ParamsError as e:
        raise ParamsError(f"{e}; use 'mean' (mean clicked training duration) or seconds >= 0") from None


def _mapping(key: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise ParamsError(f"{key} = {value!r} must be a mapping")


def _columns(key: str, value: Any) -> None:
    """The generic loader's column mapping: checked here so a typo stops the run before any work."""
    from dmtl.generic import SCHEMA_COLUMNS

    _mapping(key, value)
    unknown = sorted(set(value) - set(SCHEMA_COLUMNS))
    if unknown:
        raise ParamsError(f"{key} has unknown schema column(s) {unknown}; valid keys: {list(SCHEMA_COLUMNS)}")
    for name, column in value.items():
        _str(f"{key}.{name}", column)


def _devices(key: str, value: Any) -> None:
    """What lightning.Trainer(devices=...) accepts: a count, -1 (all), 'auto', or device indices."""
    if value == "auto" or value == -1:
        return
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return
    if isinstance(value, list) and value:
        _int_list(lo=0, unique=True)(key, value)
        return
    if isinstance(value, str) and value.replace(",", "").strip().isdigit():
        return
    raise ParamsError(
        f"{key} = {value!r} is not valid; use a device count >= 1, -1 (all), 'auto', "
        "a list of device indices such as [0, 1], or a string such as '0,1'"
    )


_STUDENT_COMMON = {
    "lr": _number(1e-6, 1.0),
    "emb_dim": _number(1, 1024, True),
    "weight_decay": _number(0.0, 1.0),
}

SPEC: dict[str, Any] = {
    "data": {
        "source": _choice("simulated", "kuairand", "generic"),
        "path": _str,
        "preset": _choice("tiny", "default", "large"),
        "sim_seed": _number(0, None, True),
        "sim": _mapping,  # checked against the simulator's own knobs by dmtl.simulator.make_config
        "kuairand_logs": _subset("standard", "random", allow_empty=False),
        "columns": _columns,
        "val_days": _number(1, None, True),
        "test_days": _number(1, None, True),
        "tau": _tau,
    },
    "train": {
        "seeds": _int_list(lo=0, unique=True),
        "batch_size": _number(1, None, True),
        "max_epochs": _number(1, None, True),
        "patience": _number(0, None, True),
        "accelerator": _choice("cpu", "gpu", "cuda", "mps", "auto"),
        "devices": _devices,
        "strategy": _choice("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "single_device"),
        "num_nodes": _number(1, None, True),
        "precision": _choice("32-true", "32", "16-mixed", "bf16-mixed", "64-true"),
        "threads": _number(1, 256, True),
        "steps_per_call": _number(1, 4096, True),
    },
    "teacher": {
        "backbone": _choice("mmoe", "shared_bottom"),
        "esmm": _bool,
        "n_experts": _number(1, 64, True),
        "expert_dims": _int_list(),
        "tower_dims": _int_list(allow_empty=True),
        "emb_dim": _number(1, 1024, True),
        "lr": _number(1e-6, 1.0),
        "weight_decay": _number(0.0, 1.0),
        "w_ctr": _number(0.0, None),
        "w_ctcvr": _number(0.0, None),
        "w_duration": _number(0.0, None),
        "use_position": _bool,
        "variants": _subset(*TEACHER_VARIANTS),
        "variant_seeds": _number(0, None, True),
    },
    "students": {
        "names": _subset(*STUDENT_NAMES, allow_empty=False),
        "common": {
            "tower_dims": _int_list(allow_empty=True),
            "out_dim": _number(1, 1024, True),
            "score": _choice("dot", "cosine"),
            "temperature": _number(1e-4, None),
        },
        "ctr": dict(_STUDENT_COMMON),
        "duration_regression": dict(_STUDENT_COMMON),
        "weighted_lr": dict(_STUDENT_COMMON),
        "ctcvr_hard": dict(_STUDENT_COMMON),
        "dmtl": {
            **_STUDENT_COMMON,
            "target": _choice("p_ctcvr", "p_ctr", "p_ctr_x_duration"),
            "loss": _choice("bce", "mse", "kl"),
            "temperature": _number(1e-3, None),
            "hard_weight": _number(0.0, None),
            "regime": _choice("two_stage", "joint"),
        },
    },
    "eval": {
        "ks": _int_list(),
        "ann": _choice("ivf_flat", "hnsw"),
        "ann_nlist": _number(1, None, True),
        "ann_nprobe": _number(1, None, True),
        "ann_ef_search": _number(1, None, True),
        "ci_level": _number(0.5, 0.999),
        "reference": _choice(*STUDENT_NAMES),
        "bait_min_impressions": _number(1, None, True),
    },
    "tuning": {
        "seed": _number(0, None, True),
        "grid": {
            "lr": _number_list(1e-6, 1.0),
            "emb_dim": _number_list(1, 1024, integer=True),
            "weight_decay": _number_list(0.0, 1.0),
        },
    },
    "sweeps": {
        "seeds": _int_list(lo=0, unique=True),
        "students": _subset(*STUDENT_NAMES, allow_empty=False),
        "workers": _number(1, 64, True),
        "grid": _mapping,
    },
}


def _validate(tree: Mapping[str, Any], spec: Mapping[str, Any], prefix: str, partial: bool) -> None:
    unknown = [k for k in tree if k not in spec]
    if unknown:
        where = prefix.rstrip(".") or "params.yaml"
        raise ParamsError(
            f"unknown key(s) {[prefix + k for k in unknown]} in {where}; valid keys: {sorted(spec)}"
        )
    if not partial:
        missing = [k for k in spec if k not in tree]
        if missing:
            raise ParamsError(f"missing key(s) {[prefix + k for k in missing]}")
    for key, value in tree.items():
        rule = spec[key]
        if isinstance(rule, dict):
            if not isinstance(value, dict):
                raise ParamsError(f"{prefix}{key} must be a mapping with keys {sorted(rule)}")
            _validate(value, rule, f"{prefix}{key}.", partial)
        else:
            rule(prefix + key, value)


def validate(params: Mapping[str, Any], partial: bool = False, sweeps: bool = True) -> None:
    """Raise :class:`ParamsError` when ``params`` has unknown keys, missing keys or bad values."""
    _validate(params, SPEC, "", partial)
    if partial:
        return
    teacher, data = params["teacher"], params["data"]
    if params["students"]["dmtl"]["target"] == "p_ctr_x_duration" and teacher["w_duration"] <= 0:
        raise ParamsError(
            "students.dmtl.target = p_ctr_x_duration needs the teacher's duration head: set teacher.w_duration > 0"
        )
    if params["eval"]["reference"] not in params["students"]["names"]:
        raise ParamsError(f"eval.reference = {params['eval']['reference']!r} must be one of students.names")
    if data["source"] == "simulated":
        from dmtl.simulator import make_config

        try:
            make_config(data["preset"], data["sim"])
        except ValueError as e:
            raise ParamsError(f"data.sim: {e}") from e
    if not sweeps:
        return
    for name, sweep in params["sweeps"]["grid"].items():
        if (
            not isinstance(sweep, dict)
            or set(sweep) != {"param", "values"}
            or not isinstance(sweep["param"], str)
            or not isinstance(sweep["values"], list)
            or not sweep["values"]
        ):
            raise ParamsError(
                f"sweeps.grid.{name} = {sweep!r} must be {{param: dotted.key, values: [a non-empty list]}}"
            )
        for v in sweep["values"]:
            try:
                validate(apply_overrides(params, {sweep["param"]: v}, check=False), sweeps=False)
            except ParamsError as e:
                raise ParamsError(f"sweeps.grid.{name}: {e}") from e


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree['a']['b']`` for key ``'a.b'``, creating mappings only under free-form keys (data.sim)."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        if part not in node:
            raise ParamsError(f"unknown parameter {key!r}: no key {part!r}")
        node = node[part]
        if not isinstance(node, dict):
            raise ParamsError(f"unknown parameter {key!r}: {part!r} is not a group")
    node[parts[-1]] = value


def apply_overrides(
    params: Mapping[str, Any], overrides: Mapping[str, Any], check: bool = True
) -> dict[str, Any]:
    """Return a copy of ``params`` with dotted-key ``overrides`` applied (and validated when ``check``)."""
    out = copy.deepcopy(dict(params))
    for key, value in overrides.items():
        set_dotted(out, key, value)
    if check:
        validate(out)
    return out


def read_yaml(path: str | Path) -> Any:
    """Read YAML 1.2 as DVC does (so ``1e-05`` is a number, as in ``dvc exp run -S``)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(Path(path).read_text())


def load(
    path: str | Path = "params.yaml", overrides: Mapping[str, Any] | str | None = None
) -> dict[str, Any]:
    """Read, override and validate the study's parameters.

    Args:
        path: the params file.
        overrides: dotted keys to values, or the same as a JSON string (how papermill passes them).
    """
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: parameters file not found")
    from ruamel.yaml import YAMLError

    try:
        params = read_yaml(path) or {}
    except YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: must be a mapping of the groups {sorted(SPEC)}")
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides) if overrides.strip() else {}
        except json.JSONDecodeError as e:
            raise ParamsError(f"overrides {overrides!r} are not valid JSON ({e})") from e
    if not isinstance(overrides or {}, Mapping):
        raise ParamsError(f"overrides {overrides!r} must be a mapping of dotted keys to values")
    try:
        return apply_overrides(params, overrides or {}, check=True)
    except ParamsError as e:
        raise ParamsError(f"{path}: {e}") from e
