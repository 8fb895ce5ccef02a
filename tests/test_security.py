"""What is rendered and what is loaded: user strings are escaped in reports, files are loaded safely.

Reports are notebooks rendered to HTML by nbconvert, which passes raw HTML inside Markdown through, so any
user string (a data folder's name, a sweep's name or values) must be escaped before it enters Markdown;
DataFrame tables are escaped by pandas. Loading never executes code from a file: ``torch.load`` with
``weights_only=True``, YAML through a safe loader, no pickle, and no shell with user strings.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import matplotlib
import nbformat
import pandas as pd
import pytest
from nbconvert import HTMLExporter

from dmtl import plots, report, sweep_tables
from dmtl.sweep import _value_dir

REPO = Path(__file__).resolve().parents[1]
ATTACK = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _sources() -> list[tuple[str, ast.AST]]:
    """Every Python source of the project (package, benchmarks, tests) and every notebook's code, parsed."""
    out = []
    for path in [
        *(REPO / "src").rglob("*.py"),
        *(REPO / "benchmarks").rglob("*.py"),
        *(REPO / "tests").rglob("*.py"),
    ]:
        out.append((str(path.relative_to(REPO)), ast.parse(path.read_text())))
    for path in (REPO / "notebooks").glob("*.ipynb"):
        nb = json.loads(path.read_text())
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "code":
                code = "".join(cell["source"])
                code = "\n".join(
                    line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))
                )
                out.append((f"{path.relative_to(REPO)}[cell {i}]", ast.parse(code)))
    return out


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            calls.append((f"{owner}.{name}" if owner else name, node))
    return calls


def _keyword(call: ast.Call, name: str) -> object:
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<expression>"
    return None


def test_loading_never_executes_code_from_a_file() -> None:
    problems = []
    sources = _sources()
    assert len(sources) > 30
    for where, tree in sources:
        for name, call in _calls(tree):
            line = f"{where}:{call.lineno}"
            if name == "torch.load" and _keyword(call, "weights_only") is not True:
                problems.append(f"{line}: torch.load without weights_only=True")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
                problems.append(f"{line}: {name} (use yaml.safe_load)")
            # ruamel's "safe" and round-trip (the default, kept by tuning.apply for comments) build no objects.
            if name == "YAML" and _keyword(call, "typ") not in (None, "safe", "rt"):
                problems.append(f"{line}: ruamel YAML(typ={_keyword(call, 'typ')!r})")
            if name in ("pickle.load", "pickle.loads", "pd.read_pickle", "dill.load"):
                problems.append(f"{line}: {name}")
            if name in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") not in (None, False):
                problems.append(f"{line}: np.load with allow_pickle")
            if _keyword(call, "shell") not in (None, False):
                problems.append(f"{line}: shell=True")
            builtin = isinstance(call.func, ast.Name) and call.func.id in ("eval", "exec")
            if name in ("os.system", "os.popen") or builtin:
                problems.append(f"{line}: {name}")
    assert problems == []


def test_markdown_helpers_escape_html() -> None:
    assert report.md_text("<b>a</b> & *b*") == r"&lt;b&gt;a&lt;/b&gt; &amp; \*b\*"
    assert report.md_code("<b>") == "<code>&lt;b&gt;</code>"
    heading = sweep_tables.sweep_heading("tau", {"param": "data.tau", "values": ["mean", ATTACK]})
    assert "<script" not in heading and "<img" not in heading and "&lt;script&gt;" in heading


def _render(*outputs: dict) -> str:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("display_data", data=data) for data in outputs]
    nb.cells = [cell]
    body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def test_user_strings_are_escaped_in_the_rendered_report() -> None:
    """A data folder named with HTML, sweep values with HTML: the rendered HTML holds them as text only."""
    summary = {
        "meta": {
            "source": f"generic:{ATTACK}",
            "seeds": [0],
            "tau_seconds": 30.0,
            "n_test_impressions": 10,
            "n_items": 5,
            "n_retrieval_users": 2,
            "n_retrieval_users_with_long_read": 1,
            "bait_rule": f"rule {ATTACK}",
            "bait_items": 1,
        }
    }
    data_summary = {"train": {"impressions": 7}, "val": {"impressions": 3}}
    sweep = pd.DataFrame(
        {
            "value": [ATTACK],
            "model": ["dmtl"],
            "metric": ["auc_ctcvr"],
            "mean": [0.6],
            "ci_low": [0.5],
            "ci_high": [0.7],
        }
    )
    body = _render(
        {"text/markdown": report.setup_text(summary, data_summary), "text/plain": ""},
        {"text/markdown": report.limitations_text(summary), "text/plain": ""},
        {
            "text/markdown": sweep_tables.sweep_heading(ATTACK, {"param": "data.path", "values": [ATTACK]}),
            "text/plain": "",
        },
        {"text/html": sweep_tables.sweep_table(sweep)._repr_html_(), "text/plain": ""},
        {"text/html": pd.DataFrame({ATTACK: [ATTACK]}, index=[ATTACK])._repr_html_(), "text/plain": ""},
    )
    assert "<script>alert" not in body and "<img src=x" not in body
    assert body.count("&lt;script&gt;alert") >= 5  # every string is there, as text


def test_dollar_signs_in_plot_labels_are_drawn_literally(tmp_path: Path) -> None:
    # '$...$' starts matplotlib's mathtext: '$x_$' is a formula that does not parse, and savefig raises.
    results = pd.DataFrame(
        {
            "value": ["$x_$", "<b>1</b>"],
            "model": ["dmtl", "dmtl"],
            "metric": ["auc_ctcvr", "auc_ctcvr"],
            "mean": [0.6, 0.61],
            "ci_low": [0.5, 0.52],
            "ci_high": [0.7, 0.71],
        }
    )
    plots.sweep_summary(results, "data.sim.$weird_$", ["auc_ctcvr"], tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0
    assert plots.plain("a$b") == r"a\$b"
    fig = matplotlib.figure.Figure()
    fig.add_subplot().set_title("$x_$")
    with pytest.raises(ValueError):
        fig.savefig(tmp_path / "raw.png")  # what the escaping prevents


@pytest.mark.parametrize("value", ["..", ".", "../../etc", "a/b", "<b>", "x y"])
def test_a_sweep_value_cannot_shape_a_path(tmp_path: Path, value: str) -> None:
    name = _value_dir(value)
    assert "/" not in name and set(name) - {"."} and "<" not in name
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert _value_dir(0.5) == "0.5" and _value_dir("mean") == "mean" and _value_dir([0, 1]) == "[0,1]"
