"""What the command lines (``python -m dmtl.realdata``, ``dmtl.notebook``, ``dmtl.sweep``) print on failure.

Any failure becomes exactly one ``ERROR`` line on stderr, naming a log file that holds the full traceback
(and, for a failing notebook, the kernel's traceback of the failing cell), so a bad input never greets its
user with a wall of frames (docs/robustness.md section 7). Logs go to ``logs/`` in the working directory,
or to ``$DMTL_LOG_DIR`` when set.

Command-line values (``--set KEY=VALUE``, ``-p NAME VALUE``, ``--values``) are parsed here as YAML 1.2 with
the safe loader, as ``params.yaml`` is, so ``1e-05`` is a number on the command line too, and a malformed
value is a :class:`~dmtl.params.ParamsError` naming the option and the fix.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dmtl.params import ParamsError

LOG_DIR_VARIABLE = "DMTL_LOG_DIR"


def one_line(text: Any, limit: int = 2000) -> str:
    """``text`` flattened to one line, cut to ``limit`` characters."""
    flat = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def log_dir() -> Path:
    """Where failure logs go: ``$DMTL_LOG_DIR``, else ``logs/`` in the working directory."""
    return Path(os.environ.get(LOG_DIR_VARIABLE) or "logs")


def write_failure_log(command: str, error: BaseException, argv: Sequence[str] | None = None) -> Path:
    """Write the full traceback of ``error`` (and its ``details``, e.g. a notebook cell's) to a new log file.

    Returns:
        The log's path (in the system temporary folder if the log folder cannot be written).
    """
    name = f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    body = [
        f"command: {command} {' '.join(argv if argv is not None else sys.argv[1:])}",
        f"working directory: {Path.cwd()}",
        "",
        "".join(traceback.format_exception(error)),
    ]
    details = getattr(error, "details", "")
    if details:
        body += ["the failing cell's traceback (inside the notebook's kernel):", details]
    text = "\n".join(body) + "\n"
    for folder in (log_dir(), Path(os.environ.get("TMPDIR", "/tmp"))):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    raise OSError(f"cannot write a failure log to {log_dir()} or the temporary folder")


def run_main(
    command: str,
    body: Callable[[], int],
    exit_codes: Mapping[type[BaseException], int] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Run a command line's ``body``; on any exception print one ``ERROR`` line and return its exit code.

    Args:
        command: the command's name, for the log file's name (``dmtl.realdata``).
        body: the command; returns its exit status.
        exit_codes: exception type -> exit status (the first matching entry wins); 1 otherwise.
        argv: the arguments, recorded in the log.
    """
    try:
        return body()
    except KeyboardInterrupt:
        raise
    except Exception as error:  # every failure: one line here, the frames in the log
        try:
            where = f" [full traceback: {write_failure_log(command, error, argv)}]"
        except OSError:
            where = ""
        # By name: a module run as ``python -m`` defines its classes twice (as __main__ and as itself).
        names = {c.__name__ for c in type(error).__mro__}
        kind = (
            ""
            if names & {"ParamsError", "DataError", "NotebookFailed", "FileNotFoundError"}
            else f"internal error, please report it with the log: {type(error).__name__}: "
        )
        print(f"ERROR {kind}{one_line(error)}{where}", file=sys.stderr)
        for kind_of_error, code in (exit_codes or {}).items():
            if isinstance(error, kind_of_error):
                return code
        return 1


def parse_value(text: str, option: str) -> Any:
    """Parse one command-line value as YAML 1.2 (safe loader), or raise :class:`ParamsError` naming ``option``."""
    from ruamel.yaml import YAML, YAMLError

    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as e:
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ParamsError(
            f"{option}: {text!r} is not a valid YAML value ({problem}). Fix: write a YAML value and quote it "
            "for the shell, e.g. --set 'train.seeds=[0, 1]' or --set data.tau=25"
        ) from None


def parse_assignments(items: Sequence[str], option: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` strings to ``{KEY: parsed VALUE}``; a malformed item is a :class:`ParamsError`."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(
                f"{option} {item!r}: expected KEY=VALUE with a dotted parameter key. Fix: e.g. "
                f"{option} train.max_epochs=2"
            )
        out[key.strip()] = parse_value(value, f"{option} {key.strip()}")
    return out
