"""Run a study notebook with papermill and render it to HTML, atomically.

``python -m dmtl.notebook notebooks/02_teacher.ipynb reports/02_teacher -p student dmtl`` writes
``reports/02_teacher.ipynb`` (executed) and ``reports/02_teacher.html``. When a cell fails, the error is
printed as the failing cell's exception and source line, not as papermill's wall of JSON, and no output is
left where DVC would take it for a finished stage.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from dmtl.io import atomic_path


class NotebookFailed(RuntimeError):
    """A notebook cell raised; the message is that cell's error."""


def execute(
    notebook: str | Path,
    out_stem: str | Path,
    parameters: dict[str, Any] | None = None,
    html: bool = True,
    kernel: str = "python3",
) -> Path:
    """Execute ``notebook`` into ``out_stem``.ipynb (and .html); return the executed notebook's path."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    out_stem = Path(out_stem)
    out_nb = out_stem.with_suffix(".ipynb")
    out_nb.parent.mkdir(parents=True, exist_ok=True)
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
            )
        except pm.PapermillExecutionError as e:
            raise NotebookFailed(
                f"{notebook}: cell {e.exec_count} failed with {e.ename}: {e.evalue}\n"
                f"  (the partly executed notebook is kept at {_keep_failed(tmp_nb, out_stem)})"
            ) from None
        nb = nbformat.read(tmp_nb, as_version=4)
        with atomic_path(out_nb) as t:
            nbformat.write(nb, t)
        if html:
            body, _ = HTMLExporter().from_notebook_node(nb)
            with atomic_path(out_stem.with_suffix(".html")) as t:
                t.write_text(body, encoding="utf-8")
    return out_nb


def _keep_failed(tmp_nb: Path, out_stem: Path) -> Path:
    """Keep the failed run for reading, under a name DVC does not track."""
    failed = out_stem.parent / f"{out_stem.name}.FAILED.ipynb"
    if tmp_nb.exists():
        failed.write_bytes(tmp_nb.read_bytes())
    return failed


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook")
    ap.add_argument("out_stem", help="output path without suffix: writes .ipynb and .html")
    ap.add_argument(
        "-p",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter (YAML value)",
    )
    ap.add_argument("--no-html", action="store_true")
    args = ap.parse_args(argv)
    params = {k: _parse_value(v) for k, v in args.p}
    try:
        execute(args.notebook, args.out_stem, params, html=not args.no_html)
    except NotebookFailed as e:
        print(f"ERROR {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
