"""The on-disk formats of the models' outputs that later stages read: one writer and one reader each.

- Teacher predictions: ``p_ctr``, ``p_cvr``, ``p_ctcvr`` (and ``dur_log``) for every impression, in row order
  of the prepared impressions (``predictions.parquet``).
- The teacher's position factor (``teacher.position: bias``): the learned P(seen | position) of each encoded
  position bucket (``position_bias.json``).
- Student towers: the user embedding of every user row and the item embedding of every corpus item
  (``user_emb.npy``, ``item_emb.npy``): what retrieval indexes and searches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.io import read_json, write_json, write_npy, write_parquet
from dmtl.paths import Paths


@dataclass(frozen=True)
class Towers:
    """One trained student's exported embeddings: user rows and the whole item corpus."""

    user: np.ndarray
    item: np.ndarray


def write_teacher_predictions(pred: dict[str, np.ndarray], directory: Path) -> None:
    write_parquet(pd.DataFrame(pred), directory / "predictions.parquet")


def read_teacher_predictions(root: str | Path, seed: int, variant: str = "default") -> dict[str, np.ndarray]:
    """The teacher's predictions for every impression (``p_ctr``, ``p_cvr``, ``p_ctcvr``, ...)."""
    pred = pd.read_parquet(Paths(root).teacher(variant, seed) / "predictions.parquet")
    return {k: pred[k].to_numpy(copy=True) for k in pred.columns}


def write_position_bias(p_seen: np.ndarray, n_train: np.ndarray, directory: Path) -> None:
    """P(seen | bucket) of each encoded position bucket (0: not recorded; b >= 1: feed position b - 1) and
    the bucket's training impressions (a bucket with none keeps its initial value)."""
    buckets = np.arange(len(p_seen))
    write_json(
        {
            "bucket": buckets.tolist(),
            "position": (buckets - 1).tolist(),
            "p_seen": np.asarray(p_seen).tolist(),
            "n_train": np.asarray(n_train).tolist(),
        },
        directory / "position_bias.json",
    )


def read_position_bias(root: str | Path, seed: int, variant: str = "default") -> pd.DataFrame | None:
    """The teacher's learned P(seen | position) per bucket (``bucket``, ``position``, ``p_seen``,
    ``n_train``); ``None`` for a teacher without a position factor."""
    path = Paths(root).teacher(variant, seed) / "position_bias.json"
    return pd.DataFrame(read_json(path)) if path.exists() else None


def write_towers(towers: Towers, directory: Path) -> None:
    write_npy(towers.user, directory / "user_emb.npy")
    write_npy(towers.item, directory / "item_emb.npy")


def read_towers(root: str | Path, name: str, seed: int) -> Towers:
    d = Paths(root).student(name, seed)
    return Towers(np.load(d / "user_emb.npy"), np.load(d / "item_emb.npy"))
