"""One validation metric selects every student: its epoch (early stopping) and its hyper-parameters (tuning).

``train.select_on`` (docs/protocol.md section 3, "tuned the same way") is one of:

- ``recall_long``: recall of the validation days' long reads in the top ``MAIN_K`` over the whole corpus,
  for users with a validation long read, the items each was shown on the training days left out: the
  study's retrieval question, asked on the days before the test period.
- ``auc_ctcvr``: AUC of the student's score against click-and-long-read on the validation impressions.
- ``loss``: each student's own validation loss (the old rule: for a distilled student it measures fidelity to
  the teacher, not retrieval, so models are not selected alike).

:class:`ValidationMetric` computes the first two after each validation epoch and logs them as
``val_select``, which early stopping and the best checkpoint follow (higher is better).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from scipy import sparse

from dmtl import metrics as M
from dmtl import retrieval as R
from dmtl.data import ImpressionTensors
from dmtl.vocab import MAIN_K

MONITOR = {
    "loss": ("val_loss", "min"),
    "recall_long": ("val_select", "max"),
    "auc_ctcvr": ("val_select", "max"),
}
"""``train.select_on`` -> (the logged value early stopping follows, its direction)."""


class ValidationMetric(Callback):
    """Logs ``val_select``: the student's ``recall_long@MAIN_K`` or ``auc_ctcvr`` on the validation days."""

    def __init__(self, data: ImpressionTensors, metric: str, k: int = MAIN_K):
        if metric not in ("recall_long", "auc_ctcvr"):
            raise ValueError(f"no validation metric {metric!r}; choose recall_long or auc_ctcvr")
        self.data, self.metric = data, metric
        self.k = min(k, len(data.item_table))
        val = data.indices("val")
        self.val_rows = val
        long = val[(data.click[val] * data.long_read[val]) > 0]
        self.users = np.unique(data.user_idx[long].numpy())
        row_of = {u: r for r, u in enumerate(self.users)}
        self.pos_rows = np.array([row_of[u] for u in data.user_idx[long].numpy()], dtype=np.int64)
        self.pos_items = data.item_idx[long].numpy()
        train = data.indices("train")
        seen_users, seen_items = data.user_idx[train].numpy(), data.item_idx[train].numpy()
        rows = np.searchsorted(self.users, seen_users)
        keep = (rows < len(self.users)) & (self.users[np.minimum(rows, len(self.users) - 1)] == seen_users)
        self.history = sparse.csr_matrix(
            (np.ones(int(keep.sum()), np.int8), (rows[keep], seen_items[keep])),
            shape=(len(self.users), len(data.item_table)),
        )

    @torch.no_grad()
    def value(self, model: torch.nn.Module) -> float:
        """The metric of ``model`` (a two tower) on the validation days."""
        was_training = model.training
        model.eval()
        try:
            if self.metric == "auc_ctcvr":
                batch = self.data.batch(self.val_rows)
                score = model(batch["user_x"], batch["item_x"]).double().cpu().numpy()
                return M.auc((batch["click"] * batch["long_read"]).numpy().astype(np.int8), score)
            device = next(model.parameters()).device
            users = model.user_embedding(self.data.user_table[torch.from_numpy(self.users)].to(device))
            items = model.item_embedding(self.data.item_table.to(device))
            topk = R.masked_exact_topk(
                users.float().cpu().numpy(), items.float().cpu().numpy(), self.k, self.history
            )
            return float(M.recall_at_k(topk, self.pos_rows, self.pos_items, [self.k])[self.k])
        finally:
            model.train(was_training)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        pl_module.log("val_select", self.value(pl_module.model), on_epoch=True, sync_dist=False)
