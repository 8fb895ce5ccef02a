"""The training data path: whole tensors in memory, batches gathered by slicing, no per-sample Python.

A batch is a dict of tensors: ``user_row`` / ``item_row`` (B,) rows of the user and item tables,
``user_x`` (B, n_user_features), ``item_x`` (B, n_item_features),
``context_x`` (B, n_context_features), ``click``, ``long_read``, ``duration`` (B,) floats, and ``soft_label``
(B,) when the teacher's outputs are attached. Features are gathered from the small user/item tables with one
index per batch, so an epoch costs a permutation and ``n / batch_size`` gathers.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, IterableDataset

from dmtl.features import Prepared


def _tensor(values: object, dtype: type) -> torch.Tensor:
    """A tensor sharing the array's memory where it can; a read-only array (pandas copy-on-write views) is
    copied once, since torch cannot hold read-only memory."""
    a = values.to_numpy(dtype=dtype) if hasattr(values, "to_numpy") else np.asarray(values, dtype=dtype)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


class ImpressionTensors:
    """All impressions of a :class:`Prepared` dataset as tensors, plus the user and item feature tables."""

    def __init__(self, prepared: Prepared, soft_labels: np.ndarray | None = None):
        imp = prepared.impressions
        self.user_table = _tensor(prepared.users[prepared.meta["user_features"]], np.int64)
        self.item_table = _tensor(prepared.items[prepared.meta["item_features"]], np.int64)
        self.user_idx = _tensor(imp["user_idx"], np.int64)
        self.item_idx = _tensor(imp["item_idx"], np.int64)
        self.context = _tensor(imp[prepared.meta["context_features"]], np.int64)
        self.click = _tensor(imp["click"], np.float32)
        self.long_read = _tensor(imp["long_read"], np.float32)
        self.duration = _tensor(imp["duration"], np.float32)
        self.split = imp["split"].to_numpy()
        self.soft_label = None if soft_labels is None else _tensor(soft_labels, np.float32)

    @classmethod
    def from_frame(
        cls,
        impressions: pd.DataFrame,
        user_table: torch.Tensor,
        item_table: torch.Tensor,
        context_features: list[str],
        soft_labels: np.ndarray | None = None,
    ) -> ImpressionTensors:
        """Tensors of some prepared impressions (one shard, a window of shards) over feature tables already
        made tensors: the streaming data path (:mod:`dmtl.streaming`) shares the tables between its windows."""
        out = cls.__new__(cls)
        out.user_table, out.item_table = user_table, item_table
        out.user_idx = _tensor(impressions["user_idx"], np.int64)
        out.item_idx = _tensor(impressions["item_idx"], np.int64)
        out.context = _tensor(impressions[context_features], np.int64)
        out.click = _tensor(impressions["click"], np.float32)
        out.long_read = _tensor(impressions["long_read"], np.float32)
        out.duration = _tensor(impressions["duration"], np.float32)
        out.split = impressions["split"].to_numpy()
        out.soft_label = None if soft_labels is None else _tensor(soft_labels, np.float32)
        return out

    def __len__(self) -> int:
        return len(self.click)

    def indices(self, split: str | tuple[str, ...]) -> torch.Tensor:
        from dmtl.features import SPLITS

        names = (split,) if isinstance(split, str) else split
        mask = np.isin(self.split, [SPLITS[n] for n in names])
        return torch.from_numpy(np.flatnonzero(mask))

    def batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather one batch for impression ``rows`` (a 1-d index tensor)."""
        user_row, item_row = self.user_idx[rows], self.item_idx[rows]
        out = {
            "user_row": user_row,
            "item_row": item_row,
            "user_x": self.user_table[user_row],
            "item_x": self.item_table[item_row],
            "context_x": self.context[rows],
            "click": self.click[rows],
            "long_read": self.long_read[rows],
            "duration": self.duration[rows],
        }
        if self.soft_label is not None:
            out["soft_label"] = self.soft_label[rows]
        return out

    def item_counts(self, split: str = "train") -> np.ndarray:
        """Impressions of each corpus item in ``split``."""
        rows = self.indices(split)
        return np.bincount(self.item_idx[rows].numpy(), minlength=len(self.item_table))

    def logged_pairs(self) -> np.ndarray:
        """Sorted ``user_row * n_items + item_row`` of every logged impression, every split."""
        return np.unique(self.user_idx.numpy() * len(self.item_table) + self.item_idx.numpy())


class UnexposedSampler:
    """(user, item) pairs the logs never showed, for a student to learn from the teacher's labels.

    The protocol's "random corpus negatives scored by the teacher" (docs/protocol.md section 2): for each
    batch, ``ratio * B`` pairs whose users are drawn from the batch's users and whose items are drawn from
    the whole corpus, a ``popularity_share`` of them in proportion to training impressions and the rest
    uniformly (new items included). A pair that was logged on any day, the validation and test days
    included, is redrawn once and dropped if it is again a logged pair, so no test impression is ever
    labelled by the teacher for the student.
    """

    def __init__(
        self, data: ImpressionTensors, ratio: float, popularity_share: float, seed: int, redraws: int = 1
    ):
        self.ratio, self.popularity_share, self.redraws = ratio, popularity_share, redraws
        self.n_items = len(data.item_table)
        counts = data.item_counts("train").astype(np.float64)
        self.popularity = torch.from_numpy(counts / max(counts.sum(), 1.0))
        self.logged = data.logged_pairs()
        self.generator = torch.Generator().manual_seed(seed * 7_919 + 17)

    def item_probability(self) -> np.ndarray:
        """The probability of each corpus item in a drawn pair (the mixture of popularity and uniform)."""
        uniform = np.full(self.n_items, 1.0 / self.n_items)
        return self.popularity_share * self.popularity.numpy() + (1.0 - self.popularity_share) * uniform

    def _items(self, n: int) -> torch.Tensor:
        g = self.generator
        by_popularity = torch.rand(n, generator=g) < self.popularity_share
        uniform = torch.randint(0, self.n_items, (n,), generator=g)
        popular = torch.multinomial(self.popularity, n, replacement=True, generator=g)
        return torch.where(by_popularity, popular, uniform)

    def _logged(self, users: torch.Tensor, items: torch.Tensor) -> np.ndarray:
        keys = users.numpy().astype(np.int64) * self.n_items + items.numpy()
        where = np.minimum(np.searchsorted(self.logged, keys), max(len(self.logged) - 1, 0))
        return self.logged[where] == keys if len(self.logged) else np.zeros(len(keys), dtype=bool)

    def draw(self, user_row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users, items)`` rows of about ``ratio * len(user_row)`` pairs never logged."""
        n = int(round(self.ratio * len(user_row)))
        users = user_row[torch.randint(0, len(user_row), (n,), generator=self.generator)]
        items = self._items(n)
        for _ in range(self.redraws):
            again = torch.from_numpy(self._logged(users, items))
            if not bool(again.any()):
                break
            items = torch.where(again, self._items(n), items)
        keep = torch.from_numpy(~self._logged(users, items))
        return users[keep], items[keep]


class BatchStream(IterableDataset):
    """Yields whole batches; reshuffled each epoch from ``seed + epoch``; sharded across DDP ranks."""

    def __init__(
        self, data: ImpressionTensors, rows: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0
    ):
        super().__init__()
        self.data, self.rows, self.batch_size, self.shuffle, self.seed = data, rows, batch_size, shuffle, seed
        self.epoch = 0

    def _shard(self, rows: torch.Tensor) -> torch.Tensor:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
            # Equal batch counts on every rank (DDP needs them): drop the remainder after sharding.
            per_rank = len(rows) // world
            return rows[rank * per_rank : (rank + 1) * per_rank]
        return rows

    def __len__(self) -> int:
        n = len(self._shard(self.rows))
        return (n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rows = self.rows
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            rows = rows[torch.randperm(len(rows), generator=g)]
            self.epoch += 1
        rows = self._shard(rows)
        for start in range(0, len(rows), self.batch_size):
            yield self.data.batch(rows[start : start + self.batch_size])


class StepGroups(IterableDataset):
    """Consecutive batches of a :class:`BatchStream` in lists of up to ``k``: one Lightning step each.

    The training step loops over the list and takes one optimizer step per batch, so the batches, their
    order and the updates are those of ``k = 1``; only Lightning's fixed cost per step is paid once per
    ``k`` batches (``train.steps_per_call``, like Keras' ``steps_per_execution``).
    """

    def __init__(self, stream: BatchStream, k: int):
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {k}")
        self.stream, self.k = stream, int(k)

    def __len__(self) -> int:
        return (len(self.stream) + self.k - 1) // self.k

    def __iter__(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        group: list[dict[str, torch.Tensor]] = []
        for batch in self.stream:
            group.append(batch)
            if len(group) == self.k:
                yield group
                group = []
        if group:
            yield group


class ImpressionDataModule(L.LightningDataModule):
    """Train on the training split (batches grouped by ``steps_per_call``), validate on the validation
    days (early stopping)."""

    def __init__(
        self,
        data: ImpressionTensors,
        batch_size: int,
        seed: int,
        eval_batch_size: int | None = None,
        steps_per_call: int = 1,
    ):
        super().__init__()
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.eval_batch_size = eval_batch_size or 4 * batch_size
        self.train_stream, self.val_stream = self.streams()
        self.train_groups = StepGroups(self.train_stream, steps_per_call)

    def streams(self) -> tuple[IterableDataset, IterableDataset]:
        """The training stream (shuffled by ``seed``) and the validation stream of :attr:`data`."""
        data = self.data
        return (
            BatchStream(data, data.indices("train"), self.batch_size, shuffle=True, seed=self.seed),
            BatchStream(data, data.indices("val"), self.eval_batch_size, shuffle=False),
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_groups, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_stream, batch_size=None, num_workers=0)
