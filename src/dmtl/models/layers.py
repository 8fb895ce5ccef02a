"""Building blocks shared by the teacher and the two-tower students: field embeddings and MLPs.

Input convention (fixed for the whole package): every categorical feature arrives already encoded as an
int64 index, with index 0 the out-of-vocabulary/missing bucket of its field, so a feature of cardinality
``c`` takes values in ``[0, c)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class FeatureEmbedding(nn.Module):
    """Embeds ``F`` categorical fields with one table and per-field offsets, then concatenates them.

    One ``nn.Embedding`` of ``sum(cardinalities)`` rows replaces ``F`` small tables (one lookup instead of
    ``F``); field ``f``'s value ``k`` lives at row ``offsets[f] + k``, so equal values of different fields
    (every field's OOV index 0, for instance) get different vectors.

    Args:
        cardinalities: vocabulary size of each field, including its OOV index 0; may be empty.
        dim: embedding size per field.
    """

    def __init__(self, cardinalities: Sequence[int], dim: int):
        super().__init__()
        cards = [int(c) for c in cardinalities]
        if any(c < 1 for c in cards):
            raise ValueError(f"every cardinality must be >= 1 (index 0 is the OOV bucket); got {cards}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim}")
        self.cardinalities = cards
        self.dim = int(dim)
        self.n_fields = len(cards)
        self.out_dim = self.n_fields * self.dim
        self.embedding = nn.Embedding(sum(cards), self.dim)
        offsets = torch.tensor([0, *cards[:-1]], dtype=torch.long).cumsum(0) if cards else torch.zeros(0)
        # Derived from ``cardinalities``, so not part of the state dict.
        self.register_buffer("offsets", offsets.long(), persistent=False)
        self.register_buffer("limits", torch.tensor(cards, dtype=torch.long), persistent=False)
        # Each field's OOV row starts at zero: an id never seen in training (row never updated) then adds
        # nothing, instead of a random vector that would score unseen users and items arbitrarily.
        with torch.no_grad():
            self.embedding.weight[self.offsets] = 0.0
        if not cards:
            # An empty table (no fields, e.g. a teacher without context inputs) takes part in no forward:
            # frozen, so distributed training does not report its size-0 weight as an unused parameter.
            self.embedding.weight.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """Look up ``x`` of shape ``(B, F)`` (int64) and return the concatenation ``(B, F * dim)``."""
        if x.dim() != 2 or x.shape[1] != self.n_fields:
            raise ValueError(f"expected indices of shape (B, {self.n_fields}); got {tuple(x.shape)}")
        if self.n_fields == 0:
            return x.new_zeros((x.shape[0], 0), dtype=self.embedding.weight.dtype)
        # An index past its field's vocabulary would silently read the *next* field's rows of the shared
        # table, so it is an error here rather than a wrong feature.
        if bool(((x < 0) | (x >= self.limits)).any()):
            bad = ((x < 0) | (x >= self.limits)).any(0).nonzero().flatten().tolist()
            raise ValueError(
                f"indices out of range in field(s) {bad} (cardinalities {self.cardinalities}); encode unseen "
                "values as 0, the OOV index"
            )
        # index_select rather than nn.Embedding's own lookup: the same rows and gradient, but its backward
        # (an index_add) is about twice as fast on CPU as embedding_dense_backward.
        rows = (x + self.offsets).reshape(-1)
        return self.embedding.weight.index_select(0, rows).view(x.shape[0], self.out_dim)


class MLP(nn.Module):
    """A stack of ``Linear -> ReLU (-> Dropout)`` layers.

    Args:
        in_dim: input width.
        dims: output width of each layer; empty gives the identity.
        dropout: dropout after each hidden activation (0 disables it).
        last_activation: whether the last layer also gets ReLU and dropout; ``False`` for a layer that
            emits logits or embeddings.
    """

    def __init__(self, in_dim: int, dims: Sequence[int], dropout: float = 0.0, last_activation: bool = True):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        layers: list[nn.Module] = []
        width = int(in_dim)
        for i, out in enumerate(dims):
            layers.append(nn.Linear(width, int(out)))
            if i < len(dims) - 1 or last_activation:
                layers.append(nn.ReLU())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
            width = int(out)
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        """Apply the stack to ``x`` of shape ``(B, in_dim)``; returns ``(B, out_dim)``."""
        return self.net(x)
