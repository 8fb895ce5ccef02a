"""The vocabulary: every name the study uses is defined once, and each entry has its function."""

from __future__ import annotations

import pytest

from dmtl import evaluation, losses, vocab
from dmtl.config import DistillConfig, StudentsConfig


def test_every_student_has_a_loss_and_every_loss_a_student():
    assert set(losses.STUDENT_LOSSES) == set(vocab.STUDENT_NAMES)


def test_every_retrieval_metric_has_a_scorer():
    retrieval = {m.name for m in vocab.METRICS if m.family in ("retrieval", "segment")}
    assert set(evaluation.SCORERS) == retrieval


def test_metric_lookup_directions_and_ranges():
    assert vocab.higher_is_better("recall_long@100") and not vocab.higher_is_better("bait_share@50")
    assert vocab.metric("auc_ctcvr").bounds == (0.0, 1.0)
    with pytest.raises(KeyError, match="valid base names"):
        vocab.metric("ndcg@10")
    assert vocab.headline([50, 100, 200]) == ("auc_ctcvr", "recall_long@100", "bait_share@100")
    assert vocab.headline([10, 20]) == ("auc_ctcvr", "recall_long@20", "bait_share@20")
    assert vocab.reported(["bait_share", "auc_click"], [20, 10]) == [
        "auc_click",
        "bait_share@10",
        "bait_share@20",
    ]


def test_models_have_one_order_and_one_colour():
    assert vocab.ordered_models(["ctr", "mystery", "teacher", "dmtl"]) == [
        "teacher",
        "dmtl",
        "ctr",
        "mystery",
    ]
    colours = [vocab.model_color(m) for m in vocab.MODEL_ORDER]
    assert len(set(colours)) == len(colours)


def test_students_that_learn_from_the_teacher_take_the_distillation_settings(tmp_path):
    """A student's needs come from its vocabulary entry, not from its name in the code."""
    from conftest import REPO

    from dmtl import params as P

    tree = P.load(REPO / "params.yaml").to_dict()["students"]
    built = StudentsConfig.from_tree(tree)
    for s in vocab.STUDENTS:
        assert isinstance(built[s.name].distill, DistillConfig) == s.needs_teacher
