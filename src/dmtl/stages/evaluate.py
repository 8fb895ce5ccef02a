"""Stage ``evaluate``: every metric of docs/protocol.md section 4 for every model and seed (notebook 04)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dmtl import vocab as V
from dmtl.artifacts import read_teacher_predictions, read_towers
from dmtl.config import Study
from dmtl.evaluation import Evaluation, at_k_table, bootstrap_inputs, evaluate_models
from dmtl.features import Prepared
from dmtl.io import read_json, write_csv, write_json, write_parquet
from dmtl.paths import Paths
from dmtl.shards import PREDICTIONS, ShardedPrepared, read_predictions, read_prepared
from dmtl.stats.summary import bootstrap_summary
from dmtl.truth import load_truth

EVALUATION_COLUMNS = ("user_idx", "item_idx", "click", "long_read", "split")
"""The prepared impressions' columns evaluation reads."""


def run_evaluate(study: Study, root: str | Path = ".") -> dict[str, Any]:
    """Every metric of docs/protocol.md section 4 for every model and seed; summaries with intervals."""
    paths = Paths(root)
    prepared = read_prepared(paths.data)
    teacher_predictions = lambda seed: read_teacher_predictions(root, seed)  # noqa: E731
    if isinstance(prepared, ShardedPrepared):
        # The out-of-core path (dmtl.shards): every split's ids and labels in memory (the history mask, the
        # popularity lists and the bait rule count training rows; ~19 bytes a row), the teacher's
        # predictions of the test days only.
        shards = prepared
        prepared = shards.to_prepared(EVALUATION_COLUMNS)
        teacher_predictions = lambda seed: read_predictions(  # noqa: E731
            paths.teacher("default", seed) / PREDICTIONS, shards, "test"
        )
    ev, seeds = study.eval, study.train.seeds
    truth = load_truth(prepared, paths.oracle, ev)

    result = evaluate_models(
        prepared,
        truth,
        teacher_predictions,
        lambda name, seed: read_towers(root, name, seed),
        study.students.names,
        seeds,
        ev,
    )
    table = result.per_seed
    write_parquet(table, paths.metrics / "per_seed.parquet")
    summary = summarise_evaluation(result, prepared, study, truth.simulated)
    summary["meta"] = {
        "seeds": list(seeds),
        "ks": sorted(ev.ks),
        "n_test_impressions": int(prepared.split_mask("test").sum()),
        "n_retrieval_users": len(result.population.users),
        "n_retrieval_users_with_long_read": result.population.n_with_long_read,
        "n_items": len(prepared.items),
        "tau_seconds": prepared.tau_seconds,
        "bait_rule": truth.bait_rule,
        "bait_items": int(truth.bait.sum()) if truth.bait is not None else 0,
        "long_read_rule": prepared.meta.get("long_read_rule", "duration"),
        "source": prepared.meta["source"],
        "simulated": truth.simulated,
        "reference": ev.reference,
    }
    write_json(summary, paths.metrics / "metrics.json")
    write_headline(summary, paths.headline)
    write_csv(at_k_table(table, sorted(ev.ks)), paths.plots / "retrieval_at_k.csv")
    if len(result.sample):
        write_csv(result.sample, paths.plots / "student_vs_teacher.csv")
    return summary


def summarise_evaluation(
    result: Evaluation, prepared: Prepared, study: Study, simulated: bool
) -> dict[str, Any]:
    """Every model's metrics with bounded intervals and the reference's Holm-corrected verdicts against every
    other model (docs/protocol.md section 4, statistics): a bootstrap over test users and seeds for the
    metrics scored per user and per impression, seed-only intervals for the checks."""
    ev, seeds = study.eval, study.train.seeds
    test = prepared.impressions[prepared.split_mask("test")]
    per_user, scores, sample = bootstrap_inputs(result, test, seeds)
    checks = {m.name for m in V.METRICS if m.family == "check"}
    per_user = {
        model: {k: v for k, v in block.items() if k.split("@")[0] not in checks}
        for model, block in per_user.items()
    }
    table = result.per_seed
    per_seed = {
        model: {
            c: part.sort_values("seed")[c].to_list()
            for c in table.columns
            if c.split("@")[0] in checks and part[c].notna().any()
        }
        for model, part in table.groupby("model", sort=False)
    }
    primary = list(V.headline(ev.ks))
    if simulated:
        primary.append(f"oracle_p_long@{V.main_k(ev.ks)}")
    return bootstrap_summary(
        per_user,
        scores,
        sample,
        reference=ev.reference,
        per_seed=per_seed,
        level=ev.ci_level,
        n_boot=ev.n_boot,
        n_boot_ranking=ev.n_boot_ranking,
        seed=ev.bootstrap_seed,
        margins=ev.margins,
        primary=primary,
    )


def headline_numbers(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each model's headline means (the README table's core): what ``dvc metrics show`` prints."""
    ks = summary["meta"]["ks"]
    names = list(V.headline(ks))
    if summary["meta"]["simulated"]:
        names.append(f"oracle_p_long@{V.main_k(ks)}")
    return {
        model: {m: metrics[m]["mean"] for m in names if m in metrics}
        for model, metrics in summary["models"].items()
    }


def write_headline(summary: dict[str, Any], directory: Path) -> None:
    """One small JSON per model (``dvc metrics show`` prints one row per file); the folder is replaced as a
    whole, so a model dropped from the study leaves no stale row."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for model, numbers in headline_numbers(summary).items():
        write_json(numbers, tmp / f"{model}.json")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def read_metrics(root: str | Path = ".") -> dict[str, Any]:
    return read_json(Paths(root).metrics / "metrics.json")
