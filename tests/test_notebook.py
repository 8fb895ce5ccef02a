"""dmtl.notebook: a failing notebook surfaces as its failing cell's error, in one line, and leaves no output."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from dmtl.notebook import NotebookFailed, execute, failing_line, main


def write_notebook(path: Path, *cells: str) -> Path:
    """A notebook with a markdown title, a 'parameters' cell (name = "default"), then ``cells``."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('name = "default"\nout_file = "value.txt"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params, *map(nbformat.v4.new_code_cell, cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Code cell 2 (after the parameters cell) raises on its second line.
    folder = tmp_path_factory.mktemp("failing")
    return write_notebook(folder / "fails.ipynb", 'x = 1\nraise ValueError("boom")', 'print("never")')


def test_failing_cell_becomes_a_short_one_line_error(failing: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "fails"
    with pytest.raises(NotebookFailed) as err:
        execute(failing, out, {"name": "x"}, html=True)
    message = str(err.value)
    # In[3]: papermill's injected-parameters cell runs second, so the failing cell is the third executed.
    assert message.startswith(f'{failing}: cell In[3] (line 2: raise ValueError("boom")) failed with ')
    assert "ValueError: boom" in message
    assert len(message) < 500 and "\n" not in message
    assert "{" not in message.replace('("boom")', "")  # no JSON, no notebook dump
    # Nothing at the target that DVC could take for a finished stage; the failed run is kept aside.
    assert sorted(p.name for p in out.parent.iterdir()) == ["fails.FAILED.ipynb"]
    assert f"kept at {out.parent / 'fails.FAILED.ipynb'}" in message
    kept = nbformat.read(out.parent / "fails.FAILED.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in kept.cells for o in c.get("outputs", []))


def test_cli_returns_1_and_prints_one_error_line(failing: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "fails"
    assert main([str(failing), str(out), "-p", "name", "x"]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1
    assert "ValueError: boom" in errors[0] and "In[3]" in errors[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.with_suffix(".ipynb").exists() and not out.with_suffix(".html").exists()


def test_parameters_are_injected_and_outputs_written(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "writes.ipynb",
        "from pathlib import Path\nPath(out_file).write_text(f'{name}:{type(count).__name__}:{count}')",
    )
    out = tmp_path / "reports" / "writes"
    stale = out.parent / "writes.FAILED.ipynb"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")  # a failure from an earlier run
    # The CLI parses -p values as YAML, as dvc.yaml passes them: 3 arrives as an int.
    value_file = tmp_path / "value.txt"
    assert (
        main([str(nb), str(out), "-p", "name", "dmtl", "-p", "count", "3", "-p", "out_file", str(value_file)])
        == 0
    )
    assert value_file.read_text() == "dmtl:int:3"
    assert sorted(p.name for p in out.parent.iterdir()) == ["writes.html", "writes.ipynb"]  # stale one gone
    executed = nbformat.read(out.with_suffix(".ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'name = "dmtl"' in injected[0].source
    assert "<html" in out.with_suffix(".html").read_text()


def test_missing_notebook_is_one_line(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "absent.ipynb"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.strip().startswith(f"ERROR {tmp_path / 'absent.ipynb'}: no such notebook [full traceback: ")
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_failing_line_points_at_the_cell_not_the_library() -> None:
    # IPython's coloured traceback: the cell's frame, then a frame inside a library function.
    traceback = [
        "\x1b[31mDataError\x1b[39m                  Traceback (most recent call last)",
        "\x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32mIn[4]\x1b[39m\x1b[32m, line 3\x1b[39m\n"
        "\x1b[32m      1\x1b[39m params = P.load(params_file)\n"
        "\x1b[32m----> \x1b[39m\x1b[32m3\x1b[39m summary = run_prepare(params, root)\n",
        "\x1b[36mFile \x1b[39m\x1b[32m/src/dmtl/features.py:90\x1b[39m, in \x1b[36msplit_days\x1b[39m\n"
        "\x1b[32m---> \x1b[39m\x1b[32m90\x1b[39m     raise DataError(\n",
        "\x1b[31mDataError\x1b[39m: log, column 'day': ...",
    ]
    assert failing_line(traceback) == "line 3: summary = run_prepare(params, root)"
    assert failing_line(["SyntaxError: invalid syntax"]) is None


def test_stage_notebook_with_a_bad_param_fails_before_any_work(tmp_path: Path) -> None:
    """End to end: the data stage's notebook stops at params validation, in one line naming the key."""
    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "root"
    parameters = {
        "params_file": str(repo / "params.yaml"),
        "root": str(root),
        "overrides": json.dumps({"train.epochs": 3}),
    }
    with pytest.raises(NotebookFailed) as err:
        execute(repo / "notebooks" / "01_data.ipynb", tmp_path / "01_data", parameters, html=False)
    message = str(err.value)
    assert "failed with ParamsError" in message and "\n" not in message
    assert "start(params_file" in message  # the line of the cell, not of the library
    assert "unknown key(s) ['train.epochs'] in train; valid keys:" in message and "'max_epochs'" in message
    assert not root.exists()  # nothing was simulated, prepared or written
    assert not (tmp_path / "01_data.ipynb").exists()


def test_multi_line_error_is_flattened_to_one_line(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "multi.ipynb", 'raise ValueError("first line\\nsecond line")')
    with pytest.raises(NotebookFailed) as err:
        execute(nb, tmp_path / "multi", html=False)
    message = str(err.value)
    assert "\n" not in message and "ValueError: first line second line" in message
    assert "first line" in message and "second line" in message
