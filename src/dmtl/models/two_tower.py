"""The two-tower (double-tower) retriever shared by every student (docs/protocol.md sections 1 and 3).

A user tower and an item tower map their own features to one embedding size; the score is their inner
product, so item vectors can be computed once and served from a nearest-neighbour index. Each tower reads
only its own side's features and owns its own parameters (no shared embedding tables), which is what makes
``logit(u, i) = <user_embedding(u), item_embedding(i)>`` hold for every pair, not just logged ones.

All competitors use this one architecture and differ only in their training target
(:func:`dmtl.losses.student_loss`), so any gap between them is the target's doing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from dmtl.models.layers import MLP, FeatureEmbedding

SCORES = ("dot", "cosine")


class _Tower(nn.Module):
    """Field embeddings, then an MLP to ``out_dim``: the body of both towers.

    Args:
        cardinalities: vocabulary sizes of this side's fields (column 0: the id).
        emb_dim: embedding size per field.
        tower_dims: hidden widths of the MLP.
        out_dim: the embedding size shared with the other tower.
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        emb_dim: int = 16,
        tower_dims: Sequence[int] = (64,),
        out_dim: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.embedding = FeatureEmbedding(cardinalities, emb_dim)
        # No activation on the output layer: embeddings must be free to take negative coordinates.
        self.mlp = MLP(self.embedding.out_dim, (*tower_dims, out_dim), dropout, last_activation=False)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        """Map field indices ``(B, n_fields)`` to embeddings ``(B, out_dim)``."""
        return self.mlp(self.embedding(x))


class UserTower(_Tower):
    """User features and user id (column 0) -> a user embedding; never sees item features."""


class ItemTower(_Tower):
    """Item features and item id (column 0) -> an item embedding; never sees user features."""


class TwoTower(nn.Module):
    """Two-tower student: ``logit = <u, v>``, ``score = sigmoid(logit)``.

    Args:
        user_cardinalities: vocabulary sizes of the user fields (column 0: user id).
        item_cardinalities: vocabulary sizes of the item fields (column 0: item id).
        emb_dim: embedding size per field.
        tower_dims: hidden widths of each tower's MLP.
        out_dim: the shared embedding size.
        score: ``"dot"`` (raw inner product, docs/protocol.md section 2 default) or ``"cosine"``
            (``cos(u, v) / temperature``, so logits are bounded by ``1 / temperature``).
        temperature: the cosine temperature; only ``score="cosine"`` reads it.
        dropout: dropout in both towers.
    """

    def __init__(
        self,
        user_cardinalities: Sequence[int],
        item_cardinalities: Sequence[int],
        emb_dim: int = 16,
        tower_dims: Sequence[int] = (64,),
        out_dim: int = 32,
        score: str = "dot",
        temperature: float = 0.1,
        dropout: float = 0.0,
    ):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; valid: {SCORES}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.score, self.temperature = score, float(temperature)
        self.user_tower = UserTower(user_cardinalities, emb_dim, tower_dims, out_dim, dropout)
        self.item_tower = ItemTower(item_cardinalities, emb_dim, tower_dims, out_dim, dropout)

    def user_embedding(self, user_x: Tensor) -> Tensor:
        """User vectors ``(B, out_dim)`` from user fields ``(B, n_user_fields)``; unit norm for cosine."""
        u = self.user_tower(user_x)
        return F.normalize(u, dim=-1) if self.score == "cosine" else u

    def item_embedding(self, item_x: Tensor) -> Tensor:
        """Item vectors ``(B, out_dim)`` from item fields ``(B, n_item_fields)``.

        For cosine they are unit vectors divided by the temperature: folding ``1 / T`` into the item side
        makes the plain inner product the logit, so an inner-product index (faiss ``IndexFlatIP``) ranks by
        exactly the model's score.
        """
        v = self.item_tower(item_x)
        return F.normalize(v, dim=-1) / self.temperature if self.score == "cosine" else v

    def forward(self, user_x: Tensor, item_x: Tensor) -> Tensor:
        """Logits ``(B,)`` of the pairs ``(user_x[b], item_x[b])``: ``<user_embedding, item_embedding>``."""
        return (self.user_embedding(user_x) * self.item_embedding(item_x)).sum(dim=-1)
