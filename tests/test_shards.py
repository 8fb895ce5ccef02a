"""The out-of-core data path (dmtl.log_shards, dmtl.shard_prepare, dmtl.shards, dmtl.streaming,
dmtl.sources.ingest.chunked): shards give the in-memory path's data, and the streaming reader covers every
training row once per epoch, deterministically, each DDP rank its own shards."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dmtl import shards as S
from dmtl import streaming as T
from dmtl.features import LabelRule, prepare
from dmtl.log_shards import choose_storage, storage_for, write_log_shards
from dmtl.schema import DataError, FeedLog
from dmtl.shard_prepare import prepare_shards
from dmtl.sources.simulator.config import make_config
from dmtl.sources.simulator.world import simulate, simulate_in_chunks

REPO = Path(__file__).resolve().parents[1]
SHARED_SLICE = Path(__file__).resolve().parents[2] / "shared/data/kuairand-pure"
KEY = ["user_id", "item_id", "day", "position"]  # one impression (the simulator shows an item once per user)


@pytest.fixture(scope="module")
def tiny() -> tuple[FeedLog, object]:
    # With a context column (ctx_publisher_clicks), so context features travel through the shards too.
    return simulate(make_config("tiny", {"log_publisher_clicks": True}), 2021)


@pytest.fixture(scope="module")
def sharded(tiny, tmp_path_factory) -> tuple[S.ShardedPrepared, object]:
    """The tiny log cut into 5 shards and prepared shard by shard, beside the in-memory preparation."""
    log, _ = tiny
    root = tmp_path_factory.mktemp("shards")
    shards = write_log_shards(log, root / "log", shard_rows=8_000)
    assert len(shards.files) == 5
    return prepare_shards(shards, root / "data"), prepare(log)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY).reset_index(drop=True)


def test_prepared_shards_are_the_in_memory_preparation(sharded) -> None:
    shards, mem = sharded
    # tau to the last bit (the mean of the clicked training durations in the whole log's order), and every
    # other piece of metadata: split days, encodings' cardinalities, counts, duration cap.
    assert shards.meta["tau_seconds"] == mem.meta["tau_seconds"]
    assert {k: shards.meta[k] for k in mem.meta} == mem.meta
    pd.testing.assert_frame_equal(shards.users, mem.users)
    pd.testing.assert_frame_equal(shards.items, mem.items)
    # The same rows with the same labels, encodings and context, as a set.
    whole = shards.to_prepared().impressions
    assert len(whole) == len(mem.impressions)
    pd.testing.assert_frame_equal(_sorted(whole), _sorted(mem.impressions)[whole.columns])
    # Within each shard, the same order as the in-memory rows of its users (day, then time).
    for split, code in (("train", 0), ("val", 1), ("test", 2)):
        assert sum(shards.rows(split)) == mem.meta["n_impressions"][split]
        for part in shards.iter_split(split):
            users = np.unique(part["user_id"].to_numpy())
            own = mem.impressions[mem.impressions["user_id"].isin(users) & (mem.impressions["split"] == code)]
            pd.testing.assert_frame_equal(part, own.reset_index(drop=True)[part.columns])


def test_length_band_labels_match(tiny, tmp_path) -> None:
    log, oracle = tiny
    items = log.items.assign(length_s=oracle.items["length_s"].to_numpy())
    feed = FeedLog(log.impressions, log.users, items, "generic:x")
    rule = LabelRule("length_band", 1.0, 5)
    mem = prepare(feed, labels=rule)
    shards = prepare_shards(write_log_shards(feed, tmp_path / "log", 6_000), tmp_path / "data", labels=rule)
    for key in ("tau_seconds", "band_edges_s", "band_tau_s", "impressions_without_length"):
        assert shards.meta[key] == mem.meta[key]
    whole = shards.to_prepared().impressions
    pd.testing.assert_frame_equal(_sorted(whole), _sorted(mem.impressions)[whole.columns])


def test_shards_must_hold_whole_users(tiny, tmp_path) -> None:
    log, _ = tiny
    shards = write_log_shards(log, tmp_path / "log", 8_000)
    # A user split over two shards: the repeated-impression rule could not be checked shard by shard.
    first = pd.read_parquet(shards.files[0])
    moved = first[first["user_id"] == first["user_id"].iloc[0]].iloc[:1]
    pd.concat([pd.read_parquet(shards.files[1]), moved]).to_parquet(shards.files[1], index=False)
    with pytest.raises(DataError, match=r"part-00001\.parquet.*user_id.*earlier shard"):
        prepare_shards(shards, tmp_path / "data")


def test_chunked_simulation_keeps_the_world_and_draws_chunks_of_users() -> None:
    config = make_config("tiny")
    log, oracle = simulate(config, 7)
    sim = simulate_in_chunks(config, 7, chunk_users=500)
    # The world is simulate()'s; only the log is drawn per chunk, from the chunk's own stream.
    pd.testing.assert_frame_equal(sim.users, log.users)
    pd.testing.assert_frame_equal(sim.items, log.items)
    pd.testing.assert_frame_equal(sim.oracle.users, oracle.users)
    pd.testing.assert_frame_equal(sim.oracle.items, oracle.items)
    assert sim.n_chunks == 3  # 1200 users by 500
    chunks = list(sim.chunks())
    users = [set(c["user_id"]) for c in chunks]
    assert max(users[0]) < 500 <= min(users[1]) and max(users[1]) < 1000 <= min(users[2])
    pd.testing.assert_frame_equal(sim.chunk(1), chunks[1])  # a chunk is the same whenever it is drawn
    whole = pd.concat(chunks)
    # The same model: impressions per user and CTR close to the whole-log draw's.
    assert len(whole) == pytest.approx(len(log.impressions), rel=0.05)
    assert whole["click"].mean() == pytest.approx(log.impressions["click"].mean(), abs=0.01)


# ------------------------------------------------------------------------------------------- streaming
def _stream_keys(stream: T.ShardStream) -> tuple[np.ndarray, list[int]]:
    keys, sizes = [], []
    for batch in stream:
        keys.append(batch["user_row"].numpy() * 100_000 + batch["item_row"].numpy())
        sizes.append(len(batch["click"]))
    return np.concatenate(keys), sizes


def test_stream_covers_every_training_row_once_per_epoch(sharded) -> None:
    shards, _ = sharded
    data = T.ShardedData(shards, window=2)
    train = shards.read_split("train", ["user_idx", "item_idx"])
    expected = np.sort(train["user_idx"].to_numpy() * 100_000 + train["item_idx"].to_numpy())
    stream = T.ShardStream(data, "train", 1000, shuffle=True, seed=3)
    epochs = [_stream_keys(stream) for _ in range(2)]
    for keys, sizes in epochs:
        np.testing.assert_array_equal(np.sort(keys), expected)  # each row exactly once
        assert len(sizes) == len(stream) == -(-len(expected) // 1000)
        assert all(s == 1000 for s in sizes[:-1])  # full batches across window boundaries
    assert not np.array_equal(epochs[0][0], epochs[1][0])  # reshuffled each epoch
    # Deterministic per seed: the same seed streams the same batches, another seed others.
    again = T.ShardStream(data, "train", 1000, shuffle=True, seed=3)
    np.testing.assert_array_equal(_stream_keys(again)[0], epochs[0][0])
    other = T.ShardStream(data, "train", 1000, shuffle=True, seed=4)
    assert not np.array_equal(_stream_keys(other)[0], epochs[0][0])
    # Without shuffling: the shards in order, each in its own order.
    ordered = _stream_keys(T.ShardStream(data, "train", 1000, shuffle=False))[0]
    np.testing.assert_array_equal(
        ordered, train["user_idx"].to_numpy() * 100_000 + train["item_idx"].to_numpy()
    )


def test_stream_batches_are_the_shards_rows(sharded) -> None:
    shards, _ = sharded
    data = T.ShardedData(shards)
    batch = next(iter(T.ShardStream(data, "val", 10_000, shuffle=False)))
    val = shards.read_split("val")
    n = len(batch["click"])
    np.testing.assert_array_equal(batch["user_row"].numpy(), val["user_idx"].to_numpy()[:n])
    np.testing.assert_array_equal(batch["click"].numpy(), val["click"].to_numpy()[:n].astype(np.float32))
    np.testing.assert_array_equal(
        batch["long_read"].numpy(), val["long_read"].to_numpy()[:n].astype(np.float32)
    )
    ctx = val[shards.meta["context_features"]].to_numpy()[:n]
    np.testing.assert_array_equal(batch["context_x"].numpy(), ctx)
    users = shards.users[shards.meta["user_features"]].to_numpy()
    np.testing.assert_array_equal(batch["user_x"].numpy(), users[val["user_idx"].to_numpy()[:n]])


def test_ranks_read_disjoint_shards(sharded, monkeypatch) -> None:
    shards, _ = sharded
    rows = shards.rows("train")
    ranks = T.assign_shards(rows, 2)
    assert sorted(ranks[0] + ranks[1]) == list(range(len(rows)))  # every shard, once
    load = [sum(rows[i] for i in r) for r in ranks]
    assert abs(load[0] - load[1]) <= max(rows)  # balanced by rows
    with pytest.raises(ValueError, match="lower data.shard_rows"):
        T.assign_shards(rows, len(rows) + 1)

    data = T.ShardedData(shards, window=2)
    streams = {}
    for rank in (0, 1):
        monkeypatch.setattr(T, "_world", lambda rank=rank: (2, rank))
        stream = T.ShardStream(data, "train", 500, shuffle=True, seed=1)
        keys, sizes = _stream_keys(stream)
        streams[rank] = (keys, sizes, stream.shards_read)
    (k0, s0, r0), (k1, s1, r1) = streams[0], streams[1]
    assert sorted(r0) == ranks[0] and sorted(r1) == ranks[1]
    assert not set(k0) & set(k1)  # disjoint rows
    assert len(s0) == len(s1) and sum(s0) == sum(s1) == min(load)  # DDP needs equal batch counts


def test_teacher_predictions_per_shard(sharded, tmp_path) -> None:
    from dmtl import params as P
    from dmtl.data import ImpressionTensors
    from dmtl.modules import TeacherModule, build_teacher
    from dmtl.predict import predict_teacher, predict_teacher_shards

    shards, _ = sharded
    study = P.load(REPO / "params.yaml", {"data.preset": "tiny"})
    ctx = shards.meta["context_features"]
    torch.manual_seed(0)
    model = build_teacher(shards.cardinalities, study.teacher, "default", ctx)
    module = TeacherModule(model, study.teacher, "default", ctx)
    data = T.ShardedData(shards)
    predict_teacher_shards(module, data, tmp_path / "pred")
    whole = shards.to_prepared()
    expected = predict_teacher(module, ImpressionTensors(whole))
    offset = 0
    for split in ("train", "val", "test"):
        got = S.read_predictions(tmp_path / "pred", shards, split)
        n = sum(shards.rows(split))
        for head in ("p_ctr", "p_ctcvr"):
            np.testing.assert_allclose(got[head], expected[head][offset : offset + n], rtol=1e-5, atol=1e-7)
        offset += n
    # The student reads them back as its soft labels, row for row beside the shard.
    soft = T.SoftLabels(tmp_path / "pred", lambda p: p["p_ctcvr"].astype(np.float32))
    frame = T.ShardedData(shards, soft).frame("test", 0)
    first = S.read_predictions(tmp_path / "pred", shards, "test")["p_ctcvr"][: len(frame)]
    np.testing.assert_array_equal(frame["soft_label"].to_numpy(), first)


def test_storage_choice() -> None:
    assert choose_storage("auto", 1e6) == "memory"
    assert choose_storage("auto", S.AUTO_SHARDS_ABOVE + 1) == "shards"
    assert choose_storage("shards", 10) == "shards"
    assert choose_storage("memory", 1e9) == "memory"
    from dmtl import params as P

    study = P.load(REPO / "params.yaml")
    assert study.data.storage == "auto" and storage_for(study.data) == "memory"  # the default study
    large = P.load(REPO / "params.yaml", {"data.preset": "large", "data.sim": {"sessions_per_user_day": 1.0}})
    assert storage_for(large.data) == "shards"  # 22M scheduled impressions


def test_study_stages_on_shards(tmp_path) -> None:
    """prepare -> teacher -> a distilled student -> evaluate with data.storage = shards."""
    from dmtl import params as P
    from dmtl.stages.evaluate import run_evaluate
    from dmtl.stages.prepare import run_prepare
    from dmtl.stages.student import run_student
    from dmtl.stages.teacher import run_teacher

    study = P.load(
        REPO / "params.yaml",
        {
            "data.preset": "tiny",
            "data.storage": "shards",
            "data.shard_rows": 8_000,
            "train.seeds": [0],
            "train.max_epochs": 2,
            "train.batch_size": 512,
            "train.threads": 1,
            "teacher.variants": [],
            "students.names": ["ctr", "dmtl"],
            "eval.n_boot": 100,
            "eval.n_boot_ranking": 100,
        },
    )
    summary = run_prepare(study, tmp_path)
    data = tmp_path / "artifacts/data"
    assert (data / "shards/train").is_dir() and not (data / "impressions.parquet").exists()
    assert not (tmp_path / "artifacts/.log_shards").exists()  # the scratch log is gone
    assert summary["storage"]["kind"] == "shards" and summary["calibration"]["n_impressions"] > 0
    n = sum(summary[s]["impressions"] for s in ("train", "val", "test"))
    assert n == sum(S.ShardedPrepared.read(data).meta["n_impressions"].values())
    run_teacher(study, tmp_path)
    assert (tmp_path / "artifacts/teacher/default/seed_0/predictions/train").is_dir()
    for name in study.students.names:
        run_student(study, name, tmp_path)
    metrics = run_evaluate(study, tmp_path)
    for model in ("teacher", "ctr", "dmtl"):
        assert 0.3 < metrics["models"][model]["auc_click"]["mean"] < 1.0
    assert 0 <= metrics["models"]["dmtl"]["recall_long@100"]["mean"] <= 1
    assert metrics["meta"]["n_test_impressions"] == summary["test"]["impressions"]


# ------------------------------------------------------------------------------------ chunked real logs
def _generic_folder(log: FeedLog, folder: Path) -> Path:
    """The tiny log as a generic CSV log (epoch milliseconds, a few repeated rows for the policies)."""
    folder.mkdir(parents=True)
    imp = log.impressions
    start = np.datetime64("2024-03-01T00:00:00", "ms").astype(np.int64)
    ms = np.random.default_rng(0).integers(0, 1000, len(imp))
    frame = pd.DataFrame(
        {
            "user_id": imp["user_id"],
            "item_id": imp["item_id"],
            "time": start + imp["time"].to_numpy() * 1000 + ms,
            "click": imp["click"],
            "duration": imp["duration"].round(3),
            "position": imp["position"],
        }
    )
    frame = pd.concat([frame, frame.iloc[[5, 900, 20_000]]])  # exact repeats: dropped, counted
    frame.to_csv(folder / "impressions.csv", index=False)
    log.users.to_csv(folder / "users.csv", index=False)
    log.items.to_csv(folder / "items.csv", index=False)
    return folder


def test_chunked_generic_log_is_the_in_memory_load(tiny, tmp_path) -> None:
    from dmtl.sources.generic import load_generic, load_generic_shards

    log, _ = tiny
    folder = _generic_folder(log, tmp_path / "log")
    feed = load_generic(folder)
    shards = load_generic_shards(folder, tmp_path / "scratch", shard_rows=4_000)
    assert len(shards.files) > 1
    for policy in (
        "exact_duplicate_rows_dropped",
        "duplicate_key_rows_dropped",
        "same_second_duplicate_rows_dropped",
    ):
        assert shards.meta["policy_counts"][policy] == feed.meta["policy_counts"][policy]
    assert shards.meta["policy_counts"]["exact_duplicate_rows_dropped"] == 3
    mem = prepare(feed)
    prepared = prepare_shards(shards, tmp_path / "data")
    assert prepared.meta["tau_seconds"] == mem.meta["tau_seconds"]
    assert {k: prepared.meta[k] for k in mem.meta} == mem.meta
    whole = prepared.to_prepared().impressions
    pd.testing.assert_frame_equal(_sorted(whole), _sorted(mem.impressions)[whole.columns])


def test_chunked_errors_name_the_file_column_and_line(tiny, tmp_path) -> None:
    from dmtl.sources.generic import load_generic_shards

    log, _ = tiny
    folder = _generic_folder(log, tmp_path / "log")
    frame = pd.read_csv(folder / "impressions.csv")
    frame.loc[30_000, "time"] = 1_000  # 1970: a time in seconds among milliseconds, in a late chunk
    frame.to_csv(folder / "impressions.csv", index=False)
    with pytest.raises(DataError, match=r"impressions\.csv, column 'time'.*line 30002"):
        load_generic_shards(folder, tmp_path / "scratch", shard_rows=4_000)
    # One unit per file: a chunk in seconds after chunks in milliseconds is refused, as the whole file is.
    frame = pd.read_csv(folder / "impressions.csv")
    frame.loc[30_000:, "time"] = frame.loc[30_000:, "time"] // 1000
    frame.loc[:29_999, "time"] = frame.loc[:29_999, "time"].clip(lower=10**12)
    frame.to_csv(folder / "impressions.csv", index=False)
    with pytest.raises(DataError, match="mixes epoch seconds and epoch milliseconds"):
        load_generic_shards(folder, tmp_path / "scratch2", shard_rows=4_000)


def test_chunked_log_sizes_go_through_the_preflight_checks(tiny, tmp_path) -> None:
    from dmtl.sources.generic import load_generic_shards

    log, _ = tiny
    folder = _generic_folder(log, tmp_path / "log")
    seen = []
    load_generic_shards(folder, tmp_path / "scratch", 10_000, check=seen.append)
    (size,) = seen
    assert size.n_users == log.impressions["user_id"].nunique()
    assert size.n_items == log.impressions["item_id"].nunique()
    assert size.n_days == log.impressions["day"].nunique()
    repeated = int(log.impressions["click"].iloc[[5, 900, 20_000]].sum())
    assert size.n_clicks == int(log.impressions["click"].sum()) + repeated  # counted before the policies
    assert size.max_item_impressions >= log.impressions["item_id"].value_counts().max()


def test_chunked_kuairand_slice_is_the_in_memory_load(tmp_path) -> None:
    if not SHARED_SLICE.is_dir():
        pytest.skip(f"shared KuaiRand slice not present at {SHARED_SLICE}")
    from dmtl.sources.kuairand.load import load_kuairand
    from dmtl.sources.kuairand.shards import load_kuairand_shards

    feed = load_kuairand(SHARED_SLICE)
    shards = load_kuairand_shards(SHARED_SLICE, tmp_path / "scratch", shard_rows=20_000)
    mem = prepare(feed, labels=LabelRule("length_band", 1.0, 5))
    prepared = prepare_shards(shards, tmp_path / "data", labels=LabelRule("length_band", 1.0, 5))
    assert {k: prepared.meta[k] for k in mem.meta} == mem.meta
    whole = prepared.to_prepared().impressions
    pd.testing.assert_frame_equal(_sorted(whole), _sorted(mem.impressions)[whole.columns])


def test_estimated_rows(tiny, tmp_path) -> None:
    from dmtl.sources.registry import estimate_rows

    log, _ = tiny
    folder = _generic_folder(log, tmp_path / "csv")
    data = dataclasses.make_dataclass("D", ["source", "path"])("generic", str(folder))
    assert estimate_rows(data) == pytest.approx(len(log.impressions) + 3, rel=0.05)
    pq_folder = tmp_path / "pq"
    pq_folder.mkdir()
    pd.read_csv(folder / "impressions.csv").to_parquet(pq_folder / "impressions.parquet")
    assert estimate_rows(dataclasses.replace(data, path=str(pq_folder))) == len(log.impressions) + 3
    assert estimate_rows(dataclasses.replace(data, path=str(tmp_path / "absent"))) == 0
