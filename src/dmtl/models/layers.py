"""Building blocks shared by the teacher and the two-tower students: field embeddings and MLPs.

Input convention (fixed for the whole package): every categorical feature arrives already encoded as an
int64 index, with index 0 the out-of-vocabulary/missing bucket of its field, so a feature of cardinality
``c`` takes values in ``[0, c)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    if before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before > 1:
            torch.set_num_threads(before)


class _GatherRows(torch.autograd.Function):
    """``table.index_select(0, rows)`` whose backward scatters the gradient on one thread.

    The gradient of a gather is a scatter-add into a zero table (``index_add_``); on CPU it sorts the
    indices in parallel first. For the few ten thousand rows of a batch that parallel sort costs more in
    thread synchronisation than it saves: on two cores it measured 10-20x slower than one thread when the
    machine had other load (``benchmarks/bench_roofline.py`` profiles it), and no faster when idle. Same
    rows, same sums, same order: only the thread count differs.
    """

    @staticmethod
    def forward(ctx: Any, table: Tensor, rows: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(rows)
        ctx.n_rows = table.shape[0]
        return table.index_select(0, rows)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        (rows,) = ctx.saved_tensors
        with _one_thread():
            table_grad = grad.new_zeros((ctx.n_rows, grad.shape[1])).index_add_(0, rows, grad)
        return table_grad, None


class FeatureEmbedding(nn.Module):
    """Embeds ``F`` categorical fields with one table and per-field offsets, then concatenates them.

    One ``nn.Embedding`` of ``sum(cardinalities)`` rows replaces ``F`` small tables (one lookup instead of
    ``F``); field ``f``'s value ``k`` lives at row ``offsets[f] + k``, so equal values of different fields
    (every field's OOV index 0, for instance) get different vectors.

    Args:
        cardinalities: vocabulary size of each field, including its OOV index 0; may be empty.
        dim: embedding size per field.
        field_names: how error messages name the fields (default: their column numbers).
    """

    def __init__(self, cardinalities: Sequence[int], dim: int, field_names: Sequence[str] | None = None):
        super().__init__()
        cards = [int(c) for c in cardinalities]
        if field_names is not None and len(field_names) != len(cards):
            raise ValueError(f"{len(field_names)} field names for {len(cards)} cardinalities")
        self.field_names = list(field_names) if field_names is not None else list(range(len(cards)))
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
            bad = [
                self.field_names[i]
                for i in ((x < 0) | (x >= self.limits)).any(0).nonzero().flatten().tolist()
            ]
            raise ValueError(
                f"indices out of range in field(s) {bad} (cardinalities {self.cardinalities}); encode unseen "
                "values as 0, the OOV index"
            )
        # index_select rather than nn.Embedding's own lookup: the same rows and gradient, but its backward
        # (an index_add) is about twice as fast on CPU as embedding_dense_backward; see _GatherRows.
        rows = (x + self.offsets).reshape(-1)
        return _GatherRows.apply(self.embedding.weight, rows).view(x.shape[0], self.out_dim)


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


def _relu_grad_(grad: Tensor, act: Tensor) -> Tensor:
    """ReLU's backward in place: zero ``grad`` where the ReLU output ``act`` is 0."""
    return torch.ops.aten.threshold_backward.grad_input(grad, act, 0, grad_input=grad)


class _SharedInputMLPs(torch.autograd.Function):
    """Forward and backward of :class:`ParallelMLP` on an input shared by all members, written out by hand.

    All members' first layers (and an optional side layer reading the same input, the MMoE gates) are one
    ``(B, in) x (in, n * width + side)`` GEMM; the later layers are batched GEMMs over the members.
    Autograd would walk the same GEMMs, but through views between the first layer's ``(B, n * width)``
    layout and the batched layers' ``(n, B, width)`` layout, whose backward materialises each layout change
    with an extra copy and mixed-stride element-wise kernels. Here every gradient is written straight into
    the layout its consumer reads (``bmm(..., out=...)`` into a strided view), ReLU's backward masks the
    gradient in place, and nothing but the activations is kept for backward.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, relu_last: bool, n_layers: int, *params: Tensor) -> Any:  # noqa: D102
        weights, biases, side = params[:n_layers], params[n_layers : 2 * n_layers], params[2 * n_layers :]
        n, d_in, width = weights[0].shape
        w_first = weights[0].permute(1, 0, 2).reshape(d_in, n * width)
        b_first = biases[0].reshape(-1)
        if side:  # the side layer (nn.Linear layout: weight (out, in)) as extra output columns
            w_first, b_first = torch.cat([w_first, side[0].t()], 1), torch.cat([b_first, side[1]])
        out0 = torch.addmm(b_first, x, w_first)
        h = out0[:, : n * width]
        if n_layers > 1 or relu_last:
            h.relu_()
        h = h.view(-1, n, width).transpose(0, 1)  # (n, B, width), a strided view: a valid bmm operand
        acts = [out0]
        for i in range(1, n_layers):
            h = torch.baddbmm(biases[i], h, weights[i])
            if i < n_layers - 1 or relu_last:
                h.relu_()
            acts.append(h)
        ctx.meta = (relu_last, n_layers, n, width)
        ctx.save_for_backward(x, w_first, *weights[1:], *acts)
        return (h, out0[:, n * width :]) if side else h

    @staticmethod
    def backward(ctx: Any, grad: Tensor, grad_side: Tensor | None = None) -> tuple[Tensor | None, ...]:  # noqa: D102
        relu_last, n_layers, n, width = ctx.meta
        x, w_first, *rest = ctx.saved_tensors
        weights, acts = rest[: n_layers - 1], rest[n_layers - 1 :]
        out0 = acts[0]
        g0 = torch.empty_like(out0)  # the first GEMM's output gradient, members then side
        g_members = g0[:, : n * width].view(-1, n, width).transpose(0, 1)  # (n, B, width) view of g0
        gw: list[Tensor] = [grad] * n_layers
        gb: list[Tensor] = [grad] * n_layers
        if n_layers == 1:
            g_members.copy_(grad)
        g = grad
        for i in range(n_layers - 1, 0, -1):
            if i < n_layers - 1 or relu_last:  # in place on our own buffers, not on the incoming gradient
                g = (
                    _relu_grad_(g, acts[i])
                    if i < n_layers - 1
                    else torch.ops.aten.threshold_backward(g, acts[i], 0)
                )
            below = acts[i - 1] if i > 1 else out0[:, : n * width].view(-1, n, width).transpose(0, 1)
            gw[i] = torch.bmm(below.transpose(1, 2), g)
            gb[i] = g.sum(1, keepdim=True)
            g = torch.bmm(g, weights[i - 1].transpose(1, 2), out=g_members if i == 1 else None)
        if g0.shape[1] > n * width:
            g0[:, n * width :].copy_(grad_side) if grad_side is not None else g0[:, n * width :].zero_()
        if n_layers > 1 or relu_last:
            _relu_grad_(g0[:, : n * width], out0[:, : n * width])
        g_w = x.t() @ g0
        g_b = g0.sum(0)
        gw[0] = g_w[:, : n * width].reshape(-1, n, width).permute(1, 0, 2).contiguous()
        gb[0] = g_b[: n * width].view(n, 1, width)
        side = (g_w[:, n * width :].t().contiguous(), g_b[n * width :]) if g0.shape[1] > n * width else ()
        gx = g0 @ w_first.t() if ctx.needs_input_grad[0] else None
        return (gx, None, None, *gw, *gb, *side)


class ParallelMLP(nn.Module):
    """``n`` independent MLPs of the same widths, evaluated together with batched matrix products.

    The same function as ``n`` separate :class:`MLP` (member ``k``'s layer ``l`` computes
    ``h @ weights[l][k] + biases[l][k]``), but each layer is one GEMM over all members instead of ``n`` small
    ones in a Python loop: an input shared by every member (the MMoE experts all read the same features)
    goes through one ``(B, in) x (in, n * width)`` product, and the later layers, whose inputs differ per
    member, through one batched product (``torch.baddbmm``). Fewer, larger kernels and fewer parameter
    tensors for the optimizer to walk; the arithmetic is that of the separate MLPs.

    Args:
        in_dim: input width of every member.
        dims: output width of each layer; at least one.
        n: number of members.
        dropout: dropout after each hidden activation (0 disables it).
        last_activation: whether the last layer also gets ReLU and dropout (``False`` for logits).

    Each member's weights start as ``nn.Linear``'s would (uniform in ``+-1/sqrt(fan_in)``, weights and biases).
    """

    def __init__(
        self, in_dim: int, dims: Sequence[int], n: int, dropout: float = 0.0, last_activation: bool = True
    ):
        super().__init__()
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        if not dims:
            raise ValueError("dims must name at least one layer")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        widths = [int(in_dim), *(int(d) for d in dims)]
        self.n, self.widths, self.in_dim, self.out_dim = int(n), tuple(widths), widths[0], widths[-1]
        self.dropout, self.last_activation = float(dropout), bool(last_activation)
        # weights[l]: (n, in, out); biases[l]: (n, 1, out), broadcast over the batch in baddbmm.
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(n, a, b)) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(n, 1, b)) for b in widths[1:])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation for every member: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases, strict=True):
                bound = 1.0 / w.shape[1] ** 0.5
                w.uniform_(-bound, bound)
                b.uniform_(-bound, bound)

    def _activate(self, h: Tensor, last: bool) -> Tensor:
        if last and not self.last_activation:
            return h
        h = torch.relu(h)
        return nn.functional.dropout(h, self.dropout, self.training) if self.dropout > 0 else h

    def forward(self, x: Tensor) -> Tensor:
        """Apply every member.

        Args:
            x: ``(B, in_dim)``, one input shared by all members, or ``(n, B, in_dim)``, one per member.

        Returns:
            ``(n, B, out_dim)``: member ``k``'s output is ``[k]``.
        """
        if x.dim() == 2 and x.shape[1] == self.in_dim:
            if self.dropout == 0 or not self.training:
                return _SharedInputMLPs.apply(
                    x, self.last_activation, len(self.weights), *self.weights, *self.biases
                )
            return self._layers(self._first(x), start=1)
        if x.dim() == 3 and x.shape[0] == self.n and x.shape[2] == self.in_dim:
            return self._layers(x, start=0)
        raise ValueError(f"expected (B, {self.in_dim}) or ({self.n}, B, {self.in_dim}); got {tuple(x.shape)}")

    def forward_with_side(self, x: Tensor, side: nn.Linear) -> tuple[Tensor, Tensor]:
        """The members' outputs on a shared input ``x`` ``(B, in_dim)``, and ``side(x)``.

        ``side`` (a linear layer reading the same input, such as the MMoE gates) is computed in the same
        GEMM as the members' first layers: its weights become extra output columns of that product.
        """
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected (B, {self.in_dim}); got {tuple(x.shape)}")
        if self.dropout > 0 and self.training:
            return self._layers(self._first(x), start=1), side(x)
        params = (*self.weights, *self.biases, side.weight, side.bias)
        return _SharedInputMLPs.apply(x, self.last_activation, len(self.weights), *params)

    def _first(self, x: Tensor) -> Tensor:
        w0 = self.weights[0]
        h = torch.addmm(self.biases[0].reshape(-1), x, w0.permute(1, 0, 2).reshape(self.in_dim, -1))
        return self._activate(h, len(self.weights) == 1).view(-1, self.n, w0.shape[2]).transpose(0, 1)

    def _layers(self, h: Tensor, start: int) -> Tensor:
        for i in range(start, len(self.weights)):
            h = self._activate(torch.baddbmm(self.biases[i], h, self.weights[i]), i == len(self.weights) - 1)
        return h


class _SoftmaxMixture(torch.autograd.Function):
    """Forward and backward of :func:`softmax_mixture`, written out as a handful of element-wise kernels.

    Autograd's route (``softmax`` over the last dimension of size E, then ``einsum``) runs a softmax whose
    reduction dimension is tiny, and a batched GEMM of ``B`` products of ``(T x E)`` by ``(E x H)``
    matrices, whose per-matrix overhead dwarfs their arithmetic; both measured several times slower than
    these explicit multiply-adds over ``(B, H)`` slices.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, experts: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        gates = (logits - logits.amax(-1, keepdim=True)).exp_()
        gates.div_(gates.sum(-1, keepdim=True))
        n_tasks, n_experts = gates.shape[1], gates.shape[2]
        g = gates.permute(1, 2, 0).unsqueeze(-1)  # (T, E, B, 1): one column of weights per task and expert
        mixed = experts.new_empty(n_tasks, *experts.shape[1:])
        for t in range(n_tasks):
            torch.mul(experts[0], g[t, 0], out=mixed[t])
            for e in range(1, n_experts):
                mixed[t].addcmul_(experts[e], g[t, e])
        ctx.save_for_backward(gates, experts)
        return mixed, gates

    @staticmethod
    def backward(ctx: Any, grad_mixed: Tensor, grad_gates: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        gates, experts = ctx.saved_tensors
        n_tasks, n_experts = gates.shape[1], gates.shape[2]
        g = gates.permute(1, 2, 0).unsqueeze(-1)
        grad_experts = torch.empty_like(experts)
        d_gates = grad_gates.clone()  # zeros when the gates output is unused
        for e in range(n_experts):
            torch.mul(grad_mixed[0], g[0, e], out=grad_experts[e])
            for t in range(1, n_tasks):
                grad_experts[e].addcmul_(grad_mixed[t], g[t, e])
            for t in range(n_tasks):
                d_gates[:, t, e] += torch.linalg.vecdot(grad_mixed[t], experts[e])
        # Softmax backward: d logits = g * (d g - sum_e g * d g).
        grad_logits = gates * (d_gates - (gates * d_gates).sum(-1, keepdim=True))
        return grad_logits, grad_experts


def softmax_mixture(logits: Tensor, experts: Tensor) -> tuple[Tensor, Tensor]:
    """MMoE's gated mixture (Ma et al. 2018, eq. 5): each task's softmax gate weighs the experts' outputs.

    Args:
        logits: gate logits ``(B, T, E)``: per impression, task and expert.
        experts: expert outputs ``(E, B, H)``.

    Returns:
        ``(mixed, gates)``: ``mixed[t] = sum_e gates[:, t, e, None] * experts[e]``, shape ``(T, B, H)``,
        and ``gates = softmax(logits, -1)``, ``(B, T, E)``.
    """
    if logits.dim() != 3 or experts.dim() != 3 or logits.shape[2] != experts.shape[0]:
        raise ValueError(
            f"expected logits (B, T, E) and experts (E, B, H); got {tuple(logits.shape)}, {tuple(experts.shape)}"
        )
    return _SoftmaxMixture.apply(logits, experts)
