"""Load and validate ``params.yaml`` before any work is done.

:func:`load` reads the file, applies dotted-key overrides (``dvc exp run -S``, papermill, sweeps) and returns
the typed :class:`dmtl.config.Study`. Unknown keys and bad values stop the run with the valid options listed,
so a typo in a sweep (``students.dmtl.distill_los``) fails loudly instead of silently running the default.
Cross-field rules (a target that needs a teacher head, a reference that is trained, simulator knobs, every
sweep value) are checked here after each group has validated itself.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dmtl import config as C
from dmtl.config import ParamsError, Study

__all__ = ["ParamsError", "Study", "apply_overrides", "load", "read_yaml", "set_dotted", "validate"]


def validate(tree: Mapping[str, Any] | Study, sweeps: bool = True) -> Study:
    """Build the typed study from ``tree`` and check the rules that span groups; raise :class:`ParamsError`."""
    study = tree if isinstance(tree, Study) else C.build(tree)
    distill = {n: s.distill for n, s in study.students.by_name.items() if s.distill is not None}
    for name, d in distill.items():
        if d.soft_target == "p_ctr_x_duration" and study.teacher.w_duration <= 0:
            raise ParamsError(
                f"students.{name}.soft_target = p_ctr_x_duration needs the teacher's duration head: "
                "set teacher.w_duration > 0"
            )
    if study.eval.reference not in study.students.names:
        raise ParamsError(f"eval.reference = {study.eval.reference!r} must be one of students.names")
    data = study.data
    if data.source == "simulated":
        from dmtl.sources.simulator.config import make_config

        try:
            world = make_config(data.preset, data.sim)
        except ValueError as e:
            raise ParamsError(f"data.sim: {e}") from e
        if world.cold_item_share > 0 and world.cold_item_days != data.test_days:
            # Cold items are the test period's new items only when they appear on exactly its days.
            raise ParamsError(
                f"data.sim.cold_item_days = {world.cold_item_days} must equal data.test_days = {data.test_days} "
                "when data.sim.cold_item_share > 0"
            )
    if sweeps:
        base = study.to_dict()
        for name, spec in study.sweeps.grid.items():
            for value in spec.values:
                try:
                    over = {**spec.fixed, **spec.at.get(str(value), {}), spec.param: value}
                    validate(_overridden(base, over), sweeps=False)
                except ParamsError as e:
                    raise ParamsError(f"sweeps.grid.{name}: {e}") from e
    return study


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


def _overridden(tree: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(tree))
    for key, value in overrides.items():
        set_dotted(out, key, value)
    return out


def apply_overrides(params: Mapping[str, Any] | Study, overrides: Mapping[str, Any]) -> Study:
    """A new validated :class:`Study`: ``params`` (a study or its YAML tree) with dotted ``overrides``."""
    tree = params.to_dict() if isinstance(params, Study) else params
    return validate(_overridden(tree, overrides))


def read_yaml(path: str | Path) -> Any:
    """Read YAML 1.2 as DVC does (so ``1e-05`` is a number, as in ``dvc exp run -S``), with the safe loader.

    Raises:
        ParamsError: the file is absent, a folder, unreadable, not UTF-8 or not valid YAML (a duplicate
            key, a tab in the indentation, an unclosed bracket ...); the message is one line naming the
            file, the line and the fix.
    """
    from ruamel.yaml import YAML, YAMLError

    path = Path(path)
    if path.is_dir():
        inside = path / "params.yaml"
        example = f", e.g. {inside}" if inside.is_file() else ""
        raise ParamsError(
            f"{path}: is a folder, not a parameters file. Fix: pass the YAML file itself{example}"
        )
    if not path.exists():
        raise ParamsError(f"{path}: parameters file not found. Fix: pass the path of an existing params.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(
            f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}). "
            "Fix: save the file as UTF-8"
        ) from None
    except OSError as e:
        raise ParamsError(
            f"{path}: cannot be read ({e.strerror}). Fix: check the file's permissions"
        ) from None
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as e:
        raise ParamsError(yaml_error_message(path, e, text)) from None


def yaml_error_message(path: str | Path, error: Exception, text: str = "") -> str:
    """One line for a YAML parse error: ``<file>, line L, column C: not valid YAML: <problem>. Fix: <fix>``.

    ``text`` (the file's content) lets a duplicate key's message name the line of its first occurrence.
    """
    mark = getattr(error, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(getattr(error, "problem", None) or error).split())
    context = str(getattr(error, "context", None) or "")
    opened = getattr(error, "context_mark", None)
    duplicate = re.search(r'found duplicate key "(.*?)"', problem)
    if duplicate:
        key, first = duplicate.group(1), ""
        if mark is not None and opened is not None:
            lines = text.splitlines()[opened.line : mark.line]
            indent = " " * mark.column
            hits = [i for i, line in enumerate(lines) if re.match(rf"{indent}{re.escape(key)}\s*:", line)]
            first = f" (it is first set on line {opened.line + hits[0] + 1})" if hits else ""
        fix = f"keep one '{key}:' in that mapping{first}; YAML allows each key once"
    elif "\\t" in problem or "\t" in problem:
        problem = "a tab character where YAML expects indentation or a value"
        fix = "indent with spaces only: replace the tab on that line with spaces"
    elif "flow" in context and opened is not None:
        fix = f"close the bracket opened on line {opened.line + 1}, column {opened.column + 1}"
    else:
        fix = (
            "check the indentation, the colons and the quotes on that line "
            "(a value holding ': ' or ' #' needs quotes)"
        )
    return f"{path}{where}: not valid YAML: {problem}. Fix: {fix}"


def load(path: str | Path = "params.yaml", overrides: Mapping[str, Any] | str | None = None) -> Study:
    """Read, override and validate the study's parameters.

    Args:
        path: the params file.
        overrides: dotted keys to values, or the same as a JSON string (how papermill passes them).
    """
    path = Path(path)
    tree = read_yaml(path) or {}
    if not isinstance(tree, dict):
        raise ParamsError(f"{path}: must be a mapping of the groups {sorted(C.GROUPS)}")
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides) if overrides.strip() else {}
        except json.JSONDecodeError as e:
            raise ParamsError(f"overrides {overrides!r} are not valid JSON ({e})") from e
    if not isinstance(overrides or {}, Mapping):
        raise ParamsError(f"overrides {overrides!r} must be a mapping of dotted keys to values")
    try:
        return apply_overrides(tree, overrides or {})
    except ParamsError as e:
        raise ParamsError(f"{path}: {e}") from e
