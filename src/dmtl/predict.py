"""What a trained module predicts: the teacher's probabilities for every impression (in memory or shard by
shard) and the towers' embeddings that retrieval indexes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from dmtl.data import ImpressionTensors
from dmtl.io import write_parquet
from dmtl.models.two_tower import TwoTower
from dmtl.modules import TeacherModule

if TYPE_CHECKING:
    from dmtl.streaming import ShardedData


@torch.no_grad()
def predict_teacher(
    module: TeacherModule, data: ImpressionTensors, batch_size: int = 65536
) -> dict[str, np.ndarray]:
    """p_ctr, p_cvr and p_ctcvr (and dur_log if present) for every impression, in row order.

    With ``teacher.position: bias`` they are position-free (the predictions at the top of the feed) and
    ``p_seen`` is the learned ``P(seen | logged position)``: ``p_seen * p_ctr`` is the fitted click
    probability at the logged position (a diagnostic; nothing downstream scores it).
    """
    module.eval()
    keys = ["p_ctr", "p_cvr", "p_ctcvr"] + (["dur_log"] if module.model.duration_head else [])
    keys += ["p_seen"] if module.position is not None else []
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for start in range(0, len(data), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(data)))
        out = module(data.batch(rows))
        if module.position is not None:
            out["p_seen"] = out["log_p_seen"].exp()
        for k in keys:
            chunks[k].append(out[k].float().numpy())
    return {k: np.concatenate(v) for k, v in chunks.items()}


def predict_teacher_shards(
    module: TeacherModule,
    data: ShardedData,
    directory: str | Path,
    splits: Sequence[str] = ("train", "val", "test"),
) -> None:
    """:func:`predict_teacher` for every shard of ``splits`` (the out-of-core path, :mod:`dmtl.streaming`),
    written to ``<directory>/<split>/part-<k>.parquet``, row for row beside the shard they score (the
    students' soft labels are read with each shard); the folder is replaced whole, once complete."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in splits:
        for index, entry in enumerate(data.prepared.meta["shards"][split]):
            pred = predict_teacher(module, data.shard(split, index, soft=False))
            write_parquet(pd.DataFrame(pred), tmp / entry["file"])
    shutil.rmtree(directory, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, directory)


@torch.no_grad()
def tower_embeddings(model: TwoTower, table: torch.Tensor, user: bool, batch_size: int = 65536) -> np.ndarray:
    """User (or item) tower outputs for every row of a feature table: what retrieval indexes."""
    model.eval()
    fn = model.user_embedding if user else model.item_embedding
    parts = [fn(table[s : s + batch_size]).float().numpy() for s in range(0, len(table), batch_size)]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
