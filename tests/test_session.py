"""Notebooks run where people open them: the repository is found from notebooks/, the pipeline's outputs are
never overwritten from outside the pipeline, and a wrong root is named before any work."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import REPO, TINY

from dmtl import session
from dmtl.config import ParamsError


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A copy of the study's top level (dvc.yaml, params.yaml) and a prepared-data folder, kernel in notebooks/."""
    root = tmp_path / "study"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "artifacts" / "data").mkdir(parents=True)
    (root / "artifacts" / "data" / "meta.json").write_text("{}")
    monkeypatch.chdir(root / "notebooks")
    monkeypatch.delenv(session.PIPELINE_ENV, raising=False)
    return root


def test_repository_is_found_from_the_notebooks_folder(repo):
    assert session.find_repo() == repo.resolve()
    study, paths = session.start("params.yaml", ".", json.dumps(TINY), stage="prepare")
    assert study.data.preset == "tiny"


def test_outside_the_pipeline_the_default_root_is_scratch_with_inputs_linked(repo, capsys):
    study, paths = session.start("params.yaml", ".", "{}", stage="teacher")
    assert paths.root == repo.resolve() / "scratch"
    assert "writing into" in capsys.readouterr().out
    linked = paths.root / "artifacts" / "data"
    assert linked.is_symlink() and linked.resolve() == (repo / "artifacts" / "data").resolve()
    # A link where this stage writes is removed, so training can never write through it into the repository.
    (paths.root / "artifacts" / "teacher").symlink_to(repo / "artifacts" / "data")
    session.start("params.yaml", ".", "{}", stage="teacher")
    assert not (paths.root / "artifacts" / "teacher").exists()


def test_the_pipeline_and_allow_overwrite_write_where_told(repo, monkeypatch):
    _, paths = session.start("params.yaml", ".", "{}", stage="teacher", allow_overwrite=True)
    assert paths.root == repo.resolve()
    monkeypatch.setenv(session.PIPELINE_ENV, "1")
    _, paths = session.start("params.yaml", ".", "{}", stage="teacher")
    assert paths.root == repo.resolve() and not (repo / "scratch").exists()


def test_wrong_root_is_named_before_any_work(repo, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(
        ParamsError, match=r"elsewhere': stage 'teacher' reads \['artifacts/data'\].*Fix: run"
    ):
        session.start("params.yaml", str(elsewhere), "{}", stage="teacher")
    with pytest.raises(ParamsError, match="student.*artifacts/teacher"):
        session.start("params.yaml", ".", "{}", stage="student", item="dmtl")
    assert os.environ.get(session.PIPELINE_ENV) is None
