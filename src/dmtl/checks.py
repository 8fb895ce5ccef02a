"""Pre-flight checks: the failures an input can cause that the parameters and the log's size reveal.

Run at the start of the prepare stage (:func:`dmtl.stages.prepare.run_prepare`) and by ``python -m dmtl.realdata``
before any notebook, so that a log too small for the study, or parameters that do not fit it, stop the run
in its first seconds with one message naming the file, the column or key, and the fix, instead of a minute
later from inside training or evaluation (docs/robustness.md section 2).

The log's size is measured without loading it: the simulator's preset gives its sizes; for real data
:func:`dmtl.sources.generic.scan_generic` and :func:`dmtl.sources.kuairand.files.scan_kuairand_size` read the headers and the
id, time/date and click columns only. Counts are taken before the loaders' de-duplication policies, so they
bound the loaded log from above; :func:`dmtl.features.prepare` and :func:`check_prepared` keep the exact
checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dmtl.config import Study
from dmtl.schema import RESERVED_FEATURE_NAMES, DataError, LoadOptions, LogSize


def log_size(study: Study) -> LogSize:
    """Measure the configured source cheaply (see the module docstring).

    Raises:
        DataError: the files are absent, unreadable or fail the loaders' column, time and path checks.
    """
    data = study.data
    options = LoadOptions.from_params(data)
    if data.source == "simulated":
        from dmtl.sources.simulator.config import make_config

        config = make_config(data.preset, data.sim)
        return LogSize(
            where=f"simulator preset '{data.preset}' (data.preset, data.sim)",
            n_users=config.n_users,
            n_items=config.n_items,
            n_days=config.n_days,
        )
    if data.source == "kuairand":
        from dmtl.sources.kuairand.files import scan_kuairand_size

        return scan_kuairand_size(data.path, logs=data.kuairand_logs, options=options)
    from dmtl.sources.generic import scan_generic

    return scan_generic(data.path, data.columns or None, options)


def check_size(study: Study, size: LogSize) -> None:
    """Raise :class:`DataError` when the log is too small for the parameters, or its features collide.

    Checked: enough days for ``data.val_days + data.test_days`` plus one training day; at least two users;
    a catalogue at least as large as the largest K of ``eval.ks``; at least one click; on real data, an
    item shown at least ``eval.bait_min_impressions`` times (the clickbait rule needs one); feature names
    that are not the study's internal column names.
    """
    data, ev = study.data, study.eval
    need = data.val_days + data.test_days + 1
    if size.n_days < need:
        raise DataError(
            size.where,
            "day",
            f"the log spans {size.n_days} day(s), but data.val_days = {data.val_days} and data.test_days = "
            f"{data.test_days} need at least {need} (one training day)",
            "use a longer log or lower data.val_days / data.test_days",
        )
    if size.n_users < 2:
        raise DataError(
            size.where,
            "user_id",
            f"the log has {size.n_users} user(s); a recommendation study needs at least 2 (retrieval ranks "
            "items per user, and the per-user metrics compare users)",
            "load a log with more users (check the user id column and its mapping in data.columns)",
        )
    k_max = max(ev.ks)
    if size.n_items < k_max:
        raise DataError(
            size.where,
            "item_id",
            f"the catalogue has {size.n_items} item(s), fewer than the largest K in eval.ks = {list(ev.ks)}: "
            f"recall@{k_max} would retrieve the whole catalogue",
            f"lower eval.ks to values of at most {size.n_items}, or load a log with more items",
        )
    if size.n_clicks == 0:
        raise DataError(
            size.where,
            "click",
            "the log has no clicked impression: there is nothing to learn or to retrieve",
            "check the click column (1 = clicked) and its mapping in data.columns",
        )
    bait_min = ev.bait_min_impressions
    if data.source != "simulated" and size.max_item_impressions is not None:
        if size.max_item_impressions < bait_min:
            raise DataError(
                size.where,
                "item_id",
                f"no item is shown {bait_min} times (the most shown: {size.max_item_impressions}), so the "
                "real-data clickbait rule (eval.bait_min_impressions) would be empty",
                f"lower eval.bait_min_impressions to at most {size.max_item_impressions}, or load a longer log",
            )
    for table, names in (("user", size.user_features), ("item", size.item_features)):
        reserved = [c for c in names if c in RESERVED_FEATURE_NAMES]
        if reserved:
            raise DataError(
                size.where,
                reserved[0],
                f"{table} feature column '{reserved[0]}' has a name the study uses internally "
                f"(reserved: {list(RESERVED_FEATURE_NAMES)})",
                f"rename the column, e.g. to '{reserved[0]}_feature'",
            )


def preflight(study: Study) -> LogSize:
    """Measure the source and check it against the parameters; return the sizes.

    Raises:
        DataError: the first problem found, naming the file (or preset), the column and the fix.
    """
    size = log_size(study)
    check_size(study, size)
    return size


def check_prepared(study: Study, prepared: Any) -> None:
    """The exact checks that need the split: run on the prepared data before any stage output is written.

    On real data the clickbait rule of docs/protocol.md section 4 needs an item with at least
    ``eval.bait_min_impressions`` *training* impressions and one click; without one, evaluation would fail
    after every model was trained. The condition is that of :func:`dmtl.truth.real_bait_items` (restated
    here so that the prepare stage does not depend on the evaluation's code; a test ties the two).

    Raises:
        DataError: naming the training split, the column and the fix.
    """
    if study.data.source == "simulated":
        return  # the simulator's clickbait is its ground truth, not the rule
    if not hasattr(prepared, "impressions"):  # prepared shards (dmtl.shards): counted shard by shard
        shown = prepared.bincount("train", "item_idx", len(prepared.items))
        clicked = prepared.bincount(
            "train", "item_idx", len(prepared.items), weights=lambda p: p["click"].to_numpy()
        )
    else:
        imp = prepared.impressions
        train = imp[prepared.split_mask("train")]
        item = train["item_idx"].to_numpy()
        shown = np.bincount(item, minlength=len(prepared.items))
        clicked = np.bincount(item, weights=train["click"].to_numpy(), minlength=len(prepared.items))
    bait_min = study.eval.bait_min_impressions
    eligible = (shown >= bait_min) & (clicked >= 1)
    if not eligible.any():
        most = int(shown[clicked >= 1].max(initial=0))
        raise DataError(
            prepared.meta.get("source", "log"),
            "item_id",
            f"no item has {bait_min} training impressions and a click (the most shown clicked item: {most}), "
            "so the real-data clickbait rule (eval.bait_min_impressions) would be empty",
            f"lower eval.bait_min_impressions to at most {max(most, 1)}, or use a longer training period",
        )


def input_summary(feed: Any) -> dict[str, Any]:
    """What the real-data loaders did on the way in, for ``metrics/data.json`` and the data notebook.

    ``policy_counts`` has a count per policy of docs/data_formats.md section 4 (``durations_capped`` among
    them) and ``duration_cap_s`` the cap used; the simulated source applies no policy and gives ``{}``.
    """
    meta = getattr(feed, "meta", None) or {}
    if "policy_counts" not in meta:
        return {}
    out: dict[str, Any] = {"policy_counts": {k: int(v) for k, v in meta["policy_counts"].items()}}
    if "duration_cap_s" in meta:
        out["duration_cap_s"] = float(meta["duration_cap_s"])
    return out
