"""Run a study notebook with papermill and render it to HTML, atomically.

``python -m dmtl.notebook notebooks/02_teacher.ipynb reports/02_teacher -p student dmtl`` writes
``reports/02_teacher.ipynb`` (executed) and ``reports/02_teacher.html``: the report as a reader wants it,
text, tables and figures without the code cells' input. ``--with-code`` also writes
``reports/02_teacher.code.html`` with the code shown. When a cell fails, the error is printed as the failing
cell's exception and source line, not as papermill's wall of JSON, and no output is left where DVC would
take it for a finished stage.

The kernel runs quietly: its connection is encrypted (CurveZMQ, where the kernelspec supports it), so it
prints no "running over TCP without encryption" warning, and it is not interrupted on shutdown, so no
``KeyboardInterrupt caught in kernel`` line reaches the terminal. What a stage prints to the terminal is its
progress (``dmtl.progress``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from dmtl.io import atomic_path


class NotebookFailed(RuntimeError):
    """A notebook cell raised (or the notebook could not run); the message is that cell's error.

    ``details`` holds the kernel's full traceback of the failing cell (plain text), which the command line
    writes to its failure log rather than to the screen.
    """

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ARROW = re.compile(r"^-+>\s*(\d+)\s?(.*)$")


def failing_line(traceback: list[str]) -> str | None:
    """``line N: <source>`` of the failing cell from IPython's (coloured) traceback, if it shows one.

    The cell's own frame (``Cell In[k], line N``) is used, not the innermost frame, so an error raised
    deep inside ``dmtl`` still points at the notebook line that called it.
    """
    for frame in traceback:
        text = _ANSI.sub("", frame)
        if not text.lstrip().startswith("Cell In["):
            continue
        for line in text.splitlines():
            m = _ARROW.match(line.strip())
            if m:
                return f"line {m.group(1)}: {m.group(2).strip()}"
    return None


_KERNEL_MANAGER: type | None = None


def kernel_manager_class() -> type:
    """The kernel manager every stage notebook runs under: jupyter_client's, made quiet at the source.

    Two messages reached the terminal of ``dvc repro`` from every kernel (issue 16):

    - ``Kernel is running over TCP without encryption`` (ipykernel >= 7 warns when its sockets are plain
      TCP). jupyter_client provisions CurveZMQ keys when ``transport_encryption`` is ``auto`` and the
      kernelspec declares ``supported_encryption: curve`` (ipykernel's does), so the warning's cause is
      removed rather than its text hidden.
    - ``KeyboardInterrupt caught in kernel``: jupyter_client interrupts the kernel (SIGINT) before every
      shutdown, to stop code that may still run. A stage notebook has finished (or failed) when it is shut
      down, and the signal can land while ipykernel is still leaving its last cell, which it then reports
      (6 runs in 48 on this machine, 3 kernels at a time). Shutting down without the interrupt removes the
      race; a kernel that really is busy is still stopped by the shutdown request and then killed.
    """
    global _KERNEL_MANAGER
    if _KERNEL_MANAGER is None:
        import zmq
        from jupyter_client.manager import AsyncKernelManager
        from traitlets import default

        class StageKernelManager(AsyncKernelManager):  # type: ignore[misc]
            if "transport_encryption" in AsyncKernelManager.class_trait_names():

                @default("transport_encryption")
                def _transport_encryption_default(self) -> str:
                    return "auto" if zmq.has("curve") else "disabled"

            async def _async_interrupt_kernel(self) -> None:
                if self.shutting_down:
                    return
                await super()._async_interrupt_kernel()

        _KERNEL_MANAGER = StageKernelManager
    return _KERNEL_MANAGER


def render_html(nb: Any, with_code: bool = False) -> str:
    """The notebook as an HTML page; code cells' input is left out unless ``with_code``.

    Outputs (text, tables, figures) are kept either way; the same page with code is what
    ``jupyter nbconvert --to html <notebook>`` gives.
    """
    from nbconvert import HTMLExporter

    exporter = HTMLExporter()
    exporter.exclude_input = not with_code
    # The prompt column (In [3]:) only means something next to the code it numbers.
    exporter.exclude_input_prompt = not with_code
    exporter.exclude_output_prompt = not with_code
    body, _ = exporter.from_notebook_node(nb)
    return body


def execute(
    notebook: str | Path,
    out_stem: str | Path,
    parameters: dict[str, Any] | None = None,
    html: bool = True,
    kernel: str = "python3",
    with_code: bool = False,
) -> Path:
    """Execute ``notebook`` into ``out_stem``.ipynb (and .html); return the executed notebook's path.

    Args:
        notebook: the notebook to run; its cell tagged ``parameters`` holds the defaults.
        out_stem: output path without suffix.
        parameters: values papermill injects after the ``parameters`` cell.
        html: also render ``out_stem``.html, without the code cells' input (a report for reading).
        kernel: the Jupyter kernel to run it with.
        with_code: also render ``out_stem``.code.html, with the code shown (needs ``html``).

    Raises:
        NotebookFailed: a cell raised (the message is that cell's error, on one line) or the notebook could
            not run. Nothing is then written at ``out_stem``; the partly executed notebook is kept as
            ``out_stem``.FAILED.ipynb for reading.
    """
    import nbformat
    import papermill as pm

    out_stem = Path(out_stem)
    out_nb = out_stem.with_suffix(".ipynb")
    if not Path(notebook).is_file():
        raise NotebookFailed(f"{notebook}: no such notebook")
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    # The kernel inherits the environment: its notebook then knows it runs for the pipeline (dmtl.session).
    os.environ["DMTL_PIPELINE"] = "1"
    with tempfile.TemporaryDirectory(prefix="dmtl-nb-") as tmp:
        tmp_nb = Path(tmp) / out_nb.name
        try:
            pm.execute_notebook(
                str(notebook),
                str(tmp_nb),
                parameters=parameters or {},
                kernel_name=kernel,
                progress_bar=False,
                log_output=False,
                cwd=None,
                # Quiet at the source (kernel_manager_class): no unencrypted-TCP warning, no shutdown interrupt.
                kernel_manager_class=kernel_manager_class(),
            )
        except pm.PapermillExecutionError as e:
            where = failing_line(e.traceback)
            raise NotebookFailed(
                f"{notebook}: cell In[{e.exec_count}]{f' ({where})' if where else ''} failed with "
                f"{e.ename}: {_one_line(e.evalue)}{_kept(tmp_nb, out_stem)}",
                details="\n".join(_ANSI.sub("", frame) for frame in e.traceback),
            ) from None
        except Exception as e:  # the kernel died, was not found, timed out: still one line, not a dump
            raise NotebookFailed(
                f"{notebook}: could not run: {type(e).__name__}: {_one_line(str(e))}{_kept(tmp_nb, out_stem)}"
            ) from e
        nb = nbformat.read(tmp_nb, as_version=4)
        with atomic_path(out_nb) as t:
            nbformat.write(nb, t)
        if html:
            with atomic_path(out_stem.with_suffix(".html")) as t:
                t.write_text(render_html(nb), encoding="utf-8")
            if with_code:
                with atomic_path(_code_html_path(out_stem)) as t:
                    t.write_text(render_html(nb, with_code=True), encoding="utf-8")
    _failed_path(out_stem).unlink(missing_ok=True)  # an older failure no longer describes the outputs
    if not (html and with_code):
        _code_html_path(out_stem).unlink(missing_ok=True)  # nor does an older with-code rendering
    return out_nb


def _one_line(text: str, limit: int = 2000) -> str:
    """The error on one line (the CLI prints exactly one ERROR line), cut if it is a wall of text."""
    flat = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _code_html_path(out_stem: Path) -> Path:
    return out_stem.parent / f"{out_stem.name}.code.html"


def _failed_path(out_stem: Path) -> Path:
    return out_stem.parent / f"{out_stem.name}.FAILED.ipynb"


def _kept(tmp_nb: Path, out_stem: Path) -> str:
    """Keep the failed run for reading, under a name DVC does not track; say where (or nothing)."""
    if not tmp_nb.exists():
        return ""
    failed = _failed_path(out_stem)
    with atomic_path(failed) as t:
        t.write_bytes(tmp_nb.read_bytes())
    return f" [the partly executed notebook is kept at {failed}]"


def main(argv: list[str] | None = None) -> int:
    """The command line: exit status 0, or 1 with one ``ERROR`` line on stderr when the notebook fails.

    The ``ERROR`` line names a log file (``logs/``) with the full traceback, the failing cell's included.
    """
    from dmtl.cli import parse_value, run_main
    from dmtl.notebook import execute  # the package's own, not __main__'s copy under ``python -m``

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook")
    ap.add_argument(
        "out_stem", help="output path without suffix: writes .ipynb and .html (the report, code hidden)"
    )
    ap.add_argument(
        "-p",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter (YAML value)",
    )
    ap.add_argument("--no-html", action="store_true")
    ap.add_argument(
        "--with-code", action="store_true", help="also write OUT_STEM.code.html, the report with its code"
    )
    args = ap.parse_args(argv)

    def body() -> int:
        params = {k: parse_value(v, f"-p {k}") for k, v in args.p}
        execute(args.notebook, args.out_stem, params, html=not args.no_html, with_code=args.with_code)
        return 0

    return run_main("dmtl.notebook", body, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
