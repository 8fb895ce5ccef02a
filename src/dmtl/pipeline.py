"""The study's stages as functions: what each notebook calls, so notebooks stay narrative.

Every path is relative to a ``root`` folder (the repository for ``dvc repro``; a scratch folder per grid
point for sweeps), so one implementation serves the pipeline, sweeps and tests:

    root/artifacts/data/                prepared data (+ oracle/ for the simulator)
    root/artifacts/teacher/<variant>/seed_<s>/    state dict, predictions for every impression
    root/artifacts/students/<name>/seed_<s>/      state dict, user and item embeddings
    root/metrics/*.json                 what ``dvc metrics show`` reads
    root/plots/*.csv                    what ``dvc plots show`` reads
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmtl import metrics as M
from dmtl.features import Prepared, prepare
from dmtl.io import read_json, write_json, write_parquet
from dmtl.schema import FeedLog

log = logging.getLogger(__name__)

TEACHER = "teacher"
RANKING_METRICS = ("auc_click", "auc_ctcvr", "auc_cvr", "gauc_click", "gauc_ctcvr", "gauc_cvr")
# Lower is better for these; every other metric is higher-is-better.
LOWER_IS_BETTER_PREFIXES = ("bait_share",)


class Paths:
    """Where every stage reads and writes, under one root."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)
        self.data = self.root / "artifacts" / "data"
        self.oracle = self.data / "oracle"
        self.metrics = self.root / "metrics"
        self.plots = self.root / "plots"

    def teacher(self, variant: str, seed: int) -> Path:
        return self.root / "artifacts" / "teacher" / variant / f"seed_{seed}"

    def student(self, name: str, seed: int) -> Path:
        return self.root / "artifacts" / "students" / name / f"seed_{seed}"


# --------------------------------------------------------------------------------------------- data


def load_source(params: Mapping[str, Any]) -> tuple[FeedLog, Any]:
    """The configured source as a FeedLog, with the simulator's oracle (None for real data)."""
    data = params["data"]
    if data["source"] == "simulated":
        from dmtl.simulator import make_config, simulate

        return simulate(make_config(data["preset"], data["sim"]), seed=data["sim_seed"])
    if data["source"] == "kuairand":
        from dmtl.kuairand import load_kuairand

        return load_kuairand(data["path"], logs=tuple(data["kuairand_logs"])), None
    from dmtl.generic import load_generic

    return load_generic(data["path"], columns=data["columns"] or None), None


def run_prepare(params: Mapping[str, Any], root: str | Path = ".") -> dict[str, Any]:
    """Load or simulate the log, split it by day, set tau, encode features; write data and its summary."""
    paths = Paths(root)
    t0 = time.perf_counter()
    feed, oracle = load_source(params)
    prepared = prepare(feed, params["data"]["val_days"], params["data"]["test_days"], params["data"]["tau"])
    prepared.write(paths.data)
    if oracle is not None:
        oracle.write(paths.oracle)
    summary = data_summary(prepared)
    if oracle is not None:
        from dmtl.simulator import calibration

        summary["calibration"] = calibration(feed, oracle)
    summary["seconds"] = time.perf_counter() - t0
    write_json(summary, paths.metrics / "data.json")
    return summary


def data_summary(prepared: Prepared) -> dict[str, Any]:
    """Sizes, rates and tau of the prepared data, per split."""
    imp = prepared.impressions
    out: dict[str, Any] = {"tau_seconds": prepared.tau_seconds, "tau_rule": prepared.meta["tau_rule"]}
    for name in ("train", "val", "test"):
        part = imp[prepared.split_mask(name)]
        clicked = part["click"] == 1
        out[name] = {
            "impressions": len(part),
            "users": int(part["user_id"].nunique()),
            "items": int(part["item_id"].nunique()),
            "ctr": float(clicked.mean()),
            "mean_clicked_duration": float(part.loc[clicked, "duration"].mean()),
            "long_read_rate": float(part["long_read"].mean()),
            "long_read_given_click": float(part.loc[clicked, "long_read"].mean()),
        }
    return out


# ------------------------------------------------------------------------------------------ teacher


def _cards(prepared: Prepared) -> dict[str, list[int]]:
    return {
        "user": prepared.user_cardinalities,
        "item": prepared.item_cardinalities,
        "context": prepared.context_cardinalities,
    }


def teacher_ranking_metrics(pred: Mapping[str, np.ndarray], imp: pd.DataFrame) -> dict[str, float]:
    """Each head scored on its own task: p_ctr for click, p_ctcvr for click-and-long-read, p_cvr for CVR."""
    click, long_read, user = imp["click"].to_numpy(), imp["long_read"].to_numpy(), imp["user_idx"].to_numpy()
    by_head = {h: M.ranking_metrics(pred[h], click, long_read, user) for h in ("p_ctr", "p_ctcvr", "p_cvr")}
    out = {}
    for task, head in (("click", "p_ctr"), ("ctcvr", "p_ctcvr"), ("cvr", "p_cvr")):
        out[f"auc_{task}"] = by_head[head][f"auc_{task}"]
        out[f"gauc_{task}"] = by_head[head][f"gauc_{task}"]
    return out


def run_teacher(params: Mapping[str, Any], root: str | Path = ".") -> dict[str, Any]:
    """Train the teacher for every seed (and its variants for the first ``variant_seeds`` seeds)."""
    from dmtl.data import ImpressionTensors
    from dmtl.training import TeacherModule, build_teacher, fit, predict_teacher, save_state

    paths = Paths(root)
    prepared = Prepared.read(paths.data)
    tensors = ImpressionTensors(prepared)
    hp, train = params["teacher"], params["train"]
    seeds = list(train["seeds"])
    runs = [("default", s) for s in seeds]
    runs += [(v, s) for v in hp["variants"] for s in seeds[: hp["variant_seeds"]]]
    curves, rows = [], []
    for variant, seed in runs:
        from dmtl.training import seed_everything

        seed_everything(seed, train["threads"])
        module = TeacherModule(build_teacher(_cards(prepared), hp, variant), hp)
        t0 = time.perf_counter()
        curve = fit(module, tensors, train, seed)
        seconds = time.perf_counter() - t0
        pred = predict_teacher(module, tensors)
        out = paths.teacher(variant, seed)
        save_state(module.model, out / "model.pt")
        write_parquet(pd.DataFrame(pred), out / "predictions.parquet")
        curves.append(curve.assign(variant=variant, seed=seed))
        for split in ("val", "test"):
            mask = prepared.split_mask(split)
            scores = {k: v[mask] for k, v in pred.items()}
            m = teacher_ranking_metrics(scores, prepared.impressions[mask])
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "split": split,
                    "epochs": len(curve),
                    "seconds": seconds,
                    **m,
                }
            )
    table = pd.DataFrame(rows)
    write_parquet(table, paths.metrics / "teacher_runs.parquet")
    write_json(
        {"tau_seconds": prepared.tau_seconds, "tau_rule": prepared.meta["tau_rule"]},
        paths.metrics / "tau.json",
    )
    curves_df = pd.concat(curves, ignore_index=True)
    _write_csv(curves_df, paths.plots / "teacher_curves.csv")
    summary = summarise_runs(table, group="variant", level=params["eval"]["ci_level"])
    write_json(summary, paths.metrics / "teacher.json")
    return summary


def summarise_runs(table: pd.DataFrame, group: str, level: float) -> dict[str, Any]:
    """{group value: {split: {metric: mean and interval over seeds}}} for a per-seed run table."""
    from dmtl.stats import mean_ci

    out: dict[str, Any] = {}
    for (g, split), part in table.groupby([group, "split"], sort=False):
        out.setdefault(g, {})[split] = {
            m: _jsonable(mean_ci(part[m].to_numpy(), level)) for m in RANKING_METRICS
        }
    return out


# ----------------------------------------------------------------------------------------- students


def load_soft_labels(root: str | Path, seed: int, target: str, duration_cap: float) -> np.ndarray:
    """The frozen teacher's distillation target for every impression (two-stage regime)."""
    import torch

    from dmtl.training import soft_label_from_teacher

    pred = pd.read_parquet(Paths(root).teacher("default", seed) / "predictions.parquet")
    out = {k: torch.from_numpy(pred[k].to_numpy(copy=True)) for k in pred.columns}
    return soft_label_from_teacher(out, target, duration_cap).numpy()


def run_student(params: Mapping[str, Any], name: str, root: str | Path = ".") -> dict[str, Any]:
    """Train student ``name`` for every seed and export its user and item embeddings."""
    from dmtl.data import ImpressionTensors
    from dmtl.training import (
        StudentModule,
        TeacherModule,
        build_student,
        build_teacher,
        fit,
        save_state,
        seed_everything,
        tower_embeddings,
    )

    if name not in params["students"]["names"]:
        raise ValueError(f"unknown student {name!r}; students.names has {params['students']['names']}")
    paths = Paths(root)
    prepared = Prepared.read(paths.data)
    common, hp, train = params["students"]["common"], params["students"][name], params["train"]
    duration_cap = prepared.meta["duration_cap_seconds"]
    joint = name == "dmtl" and hp["regime"] == "joint"
    curves, rows = [], []
    for seed in train["seeds"]:
        soft = None
        if name == "dmtl" and not joint:
            soft = load_soft_labels(root, seed, hp["target"], duration_cap)
        tensors = ImpressionTensors(prepared, soft_labels=soft)
        seed_everything(seed, train["threads"])
        model = build_student(_cards(prepared), common, hp)
        teacher = None
        if joint:
            teacher = TeacherModule(build_teacher(_cards(prepared), params["teacher"]), params["teacher"])
        module = StudentModule(
            model,
            name,
            hp,
            duration_scale=prepared.meta["mean_clicked_train_duration"],
            teacher=teacher,
            soft_target=hp.get("target", "p_ctcvr"),
            duration_cap=duration_cap,
        )
        t0 = time.perf_counter()
        curve = fit(module, tensors, train, seed)
        seconds = time.perf_counter() - t0
        out = paths.student(name, seed)
        save_state(model, out / "model.pt")
        _save_npy(tower_embeddings(model, tensors.user_table, user=True), out / "user_emb.npy")
        _save_npy(tower_embeddings(model, tensors.item_table, user=False), out / "item_emb.npy")
        curves.append(curve.assign(student=name, seed=seed))
        rows.append(
            {
                "seed": seed,
                "epochs": len(curve),
                "best_val_loss": float(curve["val_loss"].min()),
                "seconds": seconds,
            }
        )
    _write_csv(pd.concat(curves, ignore_index=True), paths.plots / "students" / f"{name}_curves.csv")
    summary = {"student": name, "hyperparameters": {**common, **hp}, "runs": rows}
    write_json(summary, paths.metrics / "students" / f"{name}.json")
    return summary


def _save_npy(array: np.ndarray, path: Path) -> None:
    from dmtl.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    from dmtl.io import atomic_path

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float | np.floating) and not np.isfinite(v):
            out[k] = None
        elif isinstance(v, np.ndarray | list | tuple):
            out[k] = [
                None if (isinstance(x, float | np.floating) and not np.isfinite(x)) else float(x) for x in v
            ]
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------- evaluation


def student_scores(
    user_emb: np.ndarray, item_emb: np.ndarray, user_idx: np.ndarray, item_idx: np.ndarray
) -> np.ndarray:
    """<u, v> for each impression: the score the towers would serve (monotone in sigmoid(<u, v>))."""
    return np.einsum("ij,ij->i", user_emb[user_idx], item_emb[item_idx])


def run_evaluate(params: Mapping[str, Any], root: str | Path = ".") -> dict[str, Any]:
    """Every metric of docs/protocol.md section 4 for every model and seed; summaries with intervals."""
    from dmtl import retrieval as R
    from dmtl.stats import summarise

    paths = Paths(root)
    prepared = Prepared.read(paths.data)
    ev, seeds, names = params["eval"], params["train"]["seeds"], params["students"]["names"]
    ks = sorted(ev["ks"])
    k_max = max(ks)
    imp = prepared.impressions
    test = prepared.split_mask("test")
    test_imp = imp[test]
    train_imp = imp[prepared.split_mask("train")]
    n_items = len(prepared.items)

    # Retrieval population: test users with at least one click; positives are their test clicks / long reads.
    clicked = test_imp[test_imp["click"] == 1]
    users = np.unique(clicked["user_idx"].to_numpy())
    row_of_user = pd.Index(users)
    click_pairs = (row_of_user.get_indexer(clicked["user_idx"]), clicked["item_idx"].to_numpy())
    long = clicked[clicked["long_read"] == 1]
    long_pairs = (row_of_user.get_indexer(long["user_idx"]), long["item_idx"].to_numpy())
    has_long = np.zeros(len(users), dtype=bool)
    has_long[long_pairs[0]] = True

    oracle = None
    if paths.oracle.exists():
        from dmtl.simulator import Oracle

        oracle = Oracle.read(paths.oracle)
        raw_items = prepared.items["raw_item_id"].to_numpy()
        bait = oracle.items.set_index("item_id").loc[raw_items, "is_clickbait"].to_numpy().astype(bool)
        bait_rule = "simulator ground truth: items generated as clickbait"
    else:
        bait, bait_rule = M.real_bait_items(
            train_imp["item_idx"].to_numpy(),
            train_imp["click"].to_numpy(),
            train_imp["long_read"].to_numpy(),
            min_impressions=ev["bait_min_impressions"],
            n_items=n_items,
        )
    raw_users = prepared.users["raw_user_id"].to_numpy()[users]

    per_seed: list[dict[str, Any]] = []
    oracle_lists: dict[int, np.ndarray] = {}  # row of per_seed -> its exact top-K (simulator only)
    samples = []
    for seed in seeds:
        pred = pd.read_parquet(paths.teacher("default", seed) / "predictions.parquet")
        t_test = {k: pred[k].to_numpy()[test] for k in ("p_ctr", "p_cvr", "p_ctcvr")}
        per_seed.append({"model": TEACHER, "seed": seed, **teacher_ranking_metrics(t_test, test_imp)})
        for name in names:
            d = paths.student(name, seed)
            u, v = np.load(d / "user_emb.npy"), np.load(d / "item_emb.npy")
            score = student_scores(u, v, test_imp["user_idx"].to_numpy(), test_imp["item_idx"].to_numpy())
            row: dict[str, Any] = {"model": name, "seed": seed}
            row.update(
                M.ranking_metrics(
                    score,
                    test_imp["click"].to_numpy(),
                    test_imp["long_read"].to_numpy(),
                    test_imp["user_idx"].to_numpy(),
                )
            )
            q = np.ascontiguousarray(u[users])
            _, exact = R.exact_topk(q, v, k_max)
            index = R.build_ann_index(v, ev["ann"], **ann_settings(ev, seed))
            _, approx = R.ann_topk(index, q, k_max)
            row["ann_recall_vs_exact"] = R.index_recall(exact[:, :k_max], approx[:, :k_max])
            rc = M.recall_at_k(exact, click_pairs[0], click_pairs[1], ks)
            rl = M.recall_at_k(exact, long_pairs[0], long_pairs[1], ks)
            rl_ann = M.recall_at_k(approx, long_pairs[0], long_pairs[1], ks)
            bs = M.bait_share_at_k(exact, bait, ks)
            for k in ks:
                row[f"recall_click@{k}"] = rc[k]
                row[f"recall_long@{k}"] = rl[k]
                row[f"recall_long_ann@{k}"] = rl_ann[k]
                row[f"bait_share@{k}"] = bs[k]
            if oracle is not None:
                # Scored after the loop, in one pass over the oracle's matrix for all lists.
                oracle_lists[len(per_seed)] = exact.astype(np.int32)
            per_seed.append(row)
            if seed == seeds[0]:
                rng = np.random.default_rng(0)
                take = rng.choice(len(test_imp), size=min(5000, len(test_imp)), replace=False)
                samples.append(
                    pd.DataFrame(
                        {
                            "model": name,
                            "student_score": score[take],
                            "teacher_p_ctcvr": t_test["p_ctcvr"][take],
                            "click": test_imp["click"].to_numpy()[take],
                            "long_read": test_imp["long_read"].to_numpy()[take],
                        }
                    )
                )
    if oracle_lists:
        ort = _oracle_read_time(oracle, raw_users, prepared.items["raw_item_id"].to_numpy(), oracle_lists, ks)
        for i, by_k in ort.items():
            per_seed[i].update({f"oracle_read_time@{k}": by_k[k] for k in ks})
    table = pd.DataFrame(per_seed)
    write_parquet(table, paths.metrics / "per_seed.parquet")
    metric_names = [c for c in table.columns if c not in ("model", "seed")]
    per_model = {
        model: {m: part[m].to_list() for m in metric_names if part[m].notna().any()}
        for model, part in table.groupby("model", sort=False)
    }
    higher = {m: not m.startswith(LOWER_IS_BETTER_PREFIXES) for m in metric_names}
    summary = summarise(per_model, reference=ev["reference"], higher_is_better=higher, level=ev["ci_level"])
    summary["meta"] = {
        "seeds": list(seeds),
        "ks": ks,
        "n_test_impressions": int(test.sum()),
        "n_retrieval_users": int(len(users)),
        "n_retrieval_users_with_long_read": int(has_long.sum()),
        "n_items": n_items,
        "tau_seconds": prepared.tau_seconds,
        "bait_rule": bait_rule,
        "bait_items": int(bait.sum()),
        "source": prepared.meta["source"],
        "reference": ev["reference"],
    }
    write_json(summary, paths.metrics / "metrics.json")
    _write_plots(table, ks, paths, pd.concat(samples, ignore_index=True) if samples else None)
    return summary


def ann_settings(ev: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The approximate index's settings from ``params['eval']`` for its kind (``eval.ann``)."""
    if ev["ann"] == "ivf_flat":
        return {"nlist": ev["ann_nlist"], "nprobe": ev["ann_nprobe"], "seed": seed}
    return {"ef_search": ev["ann_ef_search"]}


def _oracle_read_time(
    oracle: Any,
    raw_users: np.ndarray,
    raw_items: np.ndarray,
    lists: Mapping[Any, np.ndarray],
    ks: Sequence[int],
    chunk: int = 2048,
) -> dict[Any, dict[int, float]]:
    """oracle_read_time@K averaged over users for each top-K list of ``lists`` (same users, same order).

    The oracle's expected-reading-time matrix is the same for every model and seed, so it is computed once
    per chunk of users and every list is scored against it.
    """
    total = {key: {k: 0.0 for k in ks} for key in lists}
    for s in range(0, len(raw_users), chunk):
        ert = oracle.expected_read_time(raw_users[s : s + chunk], raw_items)
        for key, topk in lists.items():
            per_user = M.oracle_read_time_at_k(topk[s : s + chunk], ert, ks, return_per_user=True)
            for k in ks:
                total[key][k] += float(np.sum(per_user[k]))
    return {key: {k: by_k[k] / len(raw_users) for k in ks} for key, by_k in total.items()}


def _write_plots(table: pd.DataFrame, ks: Sequence[int], paths: Paths, samples: pd.DataFrame | None) -> None:
    """Tidy CSVs that ``dvc plots`` and the report draw from."""
    students = table[table["model"] != TEACHER]
    rows = []
    for model, part in students.groupby("model", sort=False):
        for k in ks:
            rows.append(
                {
                    "model": model,
                    "k": k,
                    "recall_long": part[f"recall_long@{k}"].mean(),
                    "recall_click": part[f"recall_click@{k}"].mean(),
                    "bait_share": part[f"bait_share@{k}"].mean(),
                    **(
                        {"oracle_read_time": part[f"oracle_read_time@{k}"].mean()}
                        if f"oracle_read_time@{k}" in part
                        else {}
                    ),
                }
            )
    _write_csv(pd.DataFrame(rows), paths.plots / "retrieval_at_k.csv")
    if samples is not None:
        _write_csv(samples, paths.plots / "student_vs_teacher.csv")


def read_metrics(root: str | Path = ".") -> dict[str, Any]:
    return read_json(Paths(root).metrics / "metrics.json")
