"""The stage table: dvc.yaml is generated from it, and every module a stage imports is one of its deps."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml
from conftest import REPO

from dmtl import dag


def test_dvc_yaml_is_the_stage_table():
    assert (REPO / "dvc.yaml").read_text() == dag.render(REPO), "dvc.yaml is stale: run `python -m dmtl.dag`"
    assert dag.main(["--check"]) == 0  # and the plot templates


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def _imports_of_cells(notebook: Path) -> set[str]:
    """Every dmtl module a notebook imports, found independently of dmtl.dag (a plain walk of the cells)."""
    found = set()
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dmtl"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("dmtl")}
    return found


def _file_of(module: str) -> str | None:
    base = REPO / "src" / Path(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p.relative_to(REPO).as_posix()
    return None


def test_every_module_a_stage_notebook_imports_is_a_dep():
    """A stage whose notebook imports a module its dvc.yaml deps miss could keep a stale result."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    checked = 0
    for name, stage in stages.items():
        body = stage.get("do", stage)
        deps = body["deps"]
        notebooks = [d for d in deps if d.startswith("notebooks/") and d.endswith(".ipynb")]
        for nb in notebooks:
            for module in _imports_of_cells(REPO / nb):
                file = _file_of(module)
                if file is not None:
                    assert _covered(file, deps), f"stage {name}: {nb} imports {module}, not a dep"
                    checked += 1
    assert checked > 20


def test_closure_follows_imports_inside_functions(tmp_path):
    pkg = tmp_path / "dmtl"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from dmtl import b\n")
    (pkg / "b.py").write_text("def f():\n    from dmtl.sub.c import g\n    return g\n")
    (pkg / "sub" / "c.py").write_text("import os\n")
    (pkg / "unused.py").write_text("")
    files = [p.relative_to(tmp_path).as_posix() for p in dag.code_closure(["dmtl.a"], tmp_path)]
    assert files == [
        "dmtl/__init__.py",
        "dmtl/a.py",
        "dmtl/b.py",
        "dmtl/sub/__init__.py",
        "dmtl/sub/c.py",
    ]


def test_stage_deps_are_tight():
    """The evaluation stage reads the simulator's oracle, and needs no loader of real data; the teacher stage
    needs no evaluation code. (The old hand-written deps missed the first and over-listed the rest.)"""
    evaluate = dag.stage_code(dag.stage("evaluate"))
    assert "src/dmtl/sources/simulator/oracle.py" in evaluate
    assert not {
        "src/dmtl/sources/kuairand/load.py",
        "src/dmtl/sources/generic.py",
        "src/dmtl/sources/ingest/reading.py",
        "src/dmtl/sources/simulator/world.py",
    } & set(evaluate)
    teacher = dag.stage_code(dag.stage("teacher"))
    assert "src/dmtl/evaluation.py" not in teacher and "src/dmtl/retrieval.py" not in teacher


def test_realdata_runner_and_sweeps_follow_the_table():
    from dmtl import sweep

    assert sweep.ORDER == ("prepare", "teacher", "student", "evaluate")
    assert [s.name for s in dag.STAGES][: len(sweep.ORDER)] == list(sweep.ORDER)
    notebooks = [s.notebook for s in dag.STAGES if s.notebook]
    assert notebooks == [
        "notebooks/01_data.ipynb",
        "notebooks/02_teacher.ipynb",
        "notebooks/03_student.ipynb",
        "notebooks/04_evaluate.ipynb",
        "notebooks/05_report.ipynb",
    ]
