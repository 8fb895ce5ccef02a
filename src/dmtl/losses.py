"""Every pointwise loss of the study: the teacher's (ESMM and its ablations) and each student target's (the
sampled-softmax objective's loss is in :mod:`dmtl.sampled_softmax`).

All losses work on logits or log-probabilities, never on probabilities passed through ``log``, so they stay
finite (values and gradients) for saturated outputs such as logits of +-100. Label tensors may be any
numeric dtype; they are cast to the logits' dtype. Every per-impression tensor must have the same shape
``(B,)``: a ``(B, 1)`` label against ``(B,)`` logits would broadcast to ``(B, B)`` and train on nonsense, so
it is an error.

Competitor definitions: docs/protocol.md section 3; the open choices (distillation target, loss, hard-label weight,
training regime): docs/protocol.md section 2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from dmtl.vocab import DISTILL_LOSSES, SOFT_TARGETS

if TYPE_CHECKING:
    from dmtl.config import DistillConfig

SOFT_LABEL_EPS = 1e-6
"""Soft labels are clamped to ``[eps, 1 - eps]`` before being turned into logits (KL distillation)."""


def check_same_shape(**tensors: Tensor | None) -> None:
    """Refuse per-impression tensors of different shapes (``None`` skipped): see the module docstring."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items() if t is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"per-impression tensors must share one shape (B,); got {shapes}")


def bce_product(factors: Sequence[tuple[Tensor, Tensor]], target: Tensor) -> Tensor:
    """Per-impression BCE of ``target`` against a product of probabilities ``p = p_1 * ... * p_n``.

    Each factor comes as ``(log p_k, log(1 - p_k))``. ``log p`` is the sum of the ``log p_k`` and, because
    ``1 - p_1 ... p_n = (1 - p_1) + p_1 (1 - p_2) + ... + p_1 ... p_{n-1} (1 - p_n)`` (a telescoping sum of
    non-negative terms), ``log(1 - p) = logsumexp_k(log p_1 + ... + log p_{k-1} + log(1 - p_k))``: exact and
    finite for every finite pair of logits, with no clamping. (A ``log1mexp(log p)`` would lose everything
    once ``log p`` rounds to 0, e.g. at logits of +100 in float32.) A factor pinned to 1 enters as
    ``(0, -inf)``: its ``-inf`` term drops out of the log-sum-exp with zero gradient.

    The ESMM product ``p_ctcvr = p_ctr * p_cvr`` (Ma et al. 2018) is the two-factor case; PAL's
    ``P(seen | position) * p_ctr [* p_cvr]`` (Guo et al. 2019) the two- and three-factor cases.

    Args:
        factors: ``(log p_k, log(1 - p_k))`` per factor, each ``(B,)``; at least one factor.
        target: labels in ``[0, 1]``, shape ``(B,)``.

    Returns:
        Per-impression losses, shape ``(B,)``.
    """
    if not factors:
        raise ValueError("a product needs at least one factor")
    check_same_shape(
        target=target, **{f"factor_{k}_{j}": t for k, f in enumerate(factors) for j, t in enumerate(f)}
    )
    dtype = factors[0][0].dtype
    target = target.to(dtype)
    prefix = torch.zeros_like(factors[0][0])  # log p_1 + ... + log p_{k-1}
    terms = []
    for log_p, log_1m_p in factors:
        terms.append(prefix + log_1m_p)
        prefix = prefix + log_p
    log_1m_prod = torch.logsumexp(torch.stack(terms), dim=0)
    return -(target * prefix + (1.0 - target) * log_1m_prod)


def sigmoid_factor(logit: Tensor) -> tuple[Tensor, Tensor]:
    """``(log sigmoid(logit), log(1 - sigmoid(logit)))``: a logit as a factor of :func:`bce_product`."""
    return F.logsigmoid(logit), F.logsigmoid(-logit)


def bce_ctcvr_from_logits(
    logit_ctr: Tensor, logit_cvr: Tensor, target: Tensor, seen: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Per-impression BCE of ``target`` against ``p_ctcvr = sigmoid(logit_ctr) * sigmoid(logit_cvr)``.

    ESMM's product (Ma et al. 2018) through :func:`bce_product`, exact and finite for every finite pair of
    logits. With ``seen`` (``(log P(seen), log P(not seen))`` of each impression's position, PAL), the
    target is fitted by ``P(seen) * p_ctcvr``.

    Args:
        logit_ctr: CTR logits ``a``, shape ``(B,)``.
        logit_cvr: CVR logits ``b``, shape ``(B,)``.
        target: ``y_c * y_d`` in ``[0, 1]``, shape ``(B,)``.
        seen: the position factor, or ``None`` for none.

    Returns:
        Per-impression losses, shape ``(B,)``.
    """
    factors = [sigmoid_factor(logit_ctr), sigmoid_factor(logit_cvr)]
    return bce_product(factors if seen is None else [seen, *factors], target)


def seen_factor(out: Mapping[str, Tensor | None]) -> tuple[Tensor, Tensor] | None:
    """The position factor ``(log_p_seen, log_p_unseen)`` of a forward output or batch, if it has one
    (:class:`dmtl.models.position.PositionBias`)."""
    log_seen, log_unseen = out.get("log_p_seen"), out.get("log_p_unseen")
    if log_seen is None or log_unseen is None:
        return None
    return log_seen, log_unseen


def click_bce(
    logit: Tensor, target: Tensor, batch: Mapping[str, Tensor], weight: Tensor | None = None
) -> Tensor:
    """Per-impression BCE of a label that needs a logged click (``y_c`` or ``y_c * y_d``).

    Plain ``BCE(target, sigmoid(logit))``, or, when ``batch`` carries a position factor (PAL,
    ``students.common.position_bias``), ``BCE(target, P(seen | position) * sigmoid(logit))``: the logged
    label is explained by where the item was shown times the position-free score the towers give.
    """
    seen = seen_factor(batch)
    if seen is None:
        return F.binary_cross_entropy_with_logits(logit, target, weight=weight, reduction="none")
    check_same_shape(logit=logit, log_p_seen=seen[0], log_p_unseen=seen[1])
    loss = bce_product([seen, sigmoid_factor(logit)], target)
    return loss if weight is None else loss * weight


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    # Zero (with a graph, so backward still works) when the mask is empty, e.g. a batch without clicks.
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def teacher_loss(
    out: Mapping[str, Tensor | None],
    click: Tensor,
    long_read: Tensor,
    *,
    w_ctr: float,
    w_ctcvr: float,
    esmm: bool,
    w_duration: float,
    duration: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The teacher's multi-task loss (docs/protocol.md section 1, "Teacher"; section 2 for the variants).

    ESMM (default): ``w_ctr * BCE(y_c, p_ctr) + w_ctcvr * BCE(y_c * y_d, p_ctcvr)``, both means over all
    impressions; ``p_cvr`` gets no direct loss. Without ESMM: ``w_ctr * BCE(y_c, p_ctr) + w_ctcvr *
    BCE(y_d, p_cvr)``, the second a mean over clicked impressions only (0 for a batch without clicks), so
    ``long_read`` of non-clicked impressions is never read. ``w_duration > 0`` adds ``w_duration *
    MSE(dur_log, log1p(duration))`` over clicked impressions (needs the teacher's duration head).

    Position as a bias (PAL, Guo et al. 2019; ``teacher.position: bias``): when ``out`` carries the position
    factor ``log_p_seen``, ``log_p_unseen`` (:class:`dmtl.models.position.PositionBias`), the logged click
    is fitted by ``P(seen | position) * p_ctr`` and the logged ``y_c * y_d`` by ``P(seen | position) * p_ctr *
    p_cvr``, so ``p_ctr``, ``p_cvr`` and ``p_ctcvr`` stay free of position. The clicked-only CVR term of the
    no-ESMM ablation is conditional on a click, so it takes no position factor.

    Args:
        out: the teacher's forward output; reads ``logit_ctr``, ``logit_cvr`` and (if present) the position
            factor ``log_p_seen``, ``log_p_unseen`` and (if used) ``dur_log``.
        click: ``y_c`` in {0, 1}, shape ``(B,)``.
        long_read: ``y_d`` in {0, 1}, shape ``(B,)``.
        w_ctr: weight of the click term.
        w_ctcvr: weight of the CTCVR term (of the CVR term without ESMM).
        esmm: ESMM training (all impressions) or the "no ESMM" ablation (CVR on clicked only).
        w_duration: weight of the duration-head term; 0 skips it.
        duration: reading duration in seconds, shape ``(B,)``; required when ``w_duration > 0``.

    Returns:
        ``(loss, parts)``: the scalar loss to minimise and its unweighted terms (detached, for logging):
        ``loss_ctr`` and ``loss_ctcvr`` (ESMM) or ``loss_cvr`` (no ESMM), plus ``loss_duration`` if used.
    """
    if min(w_ctr, w_ctcvr, w_duration) < 0:
        raise ValueError(
            f"loss weights must be >= 0; got w_ctr={w_ctr}, w_ctcvr={w_ctcvr}, w_duration={w_duration}"
        )
    logit_ctr, logit_cvr = out["logit_ctr"], out["logit_cvr"]
    check_same_shape(
        logit_ctr=logit_ctr, logit_cvr=logit_cvr, click=click, long_read=long_read, duration=duration
    )
    click = click.to(logit_ctr.dtype)
    long_read = long_read.to(logit_ctr.dtype)
    seen = seen_factor(out)
    if seen is None:
        parts = {"loss_ctr": F.binary_cross_entropy_with_logits(logit_ctr, click)}
    else:
        check_same_shape(logit_ctr=logit_ctr, log_p_seen=seen[0], log_p_unseen=seen[1])
        parts = {"loss_ctr": bce_product([seen, sigmoid_factor(logit_ctr)], click).mean()}
    if esmm:
        parts["loss_ctcvr"] = bce_ctcvr_from_logits(logit_ctr, logit_cvr, click * long_read, seen).mean()
        loss = w_ctr * parts["loss_ctr"] + w_ctcvr * parts["loss_ctcvr"]
    else:
        cvr = F.binary_cross_entropy_with_logits(logit_cvr, long_read, reduction="none")
        parts["loss_cvr"] = _masked_mean(cvr, click > 0)
        loss = w_ctr * parts["loss_ctr"] + w_ctcvr * parts["loss_cvr"]
    if w_duration > 0:
        if duration is None or "dur_log" not in out:
            raise ValueError("w_duration > 0 needs `duration` and a teacher built with duration_head=True")
        check_same_shape(dur_log=out["dur_log"], duration=duration)
        sq = (out["dur_log"] - torch.log1p(duration.to(logit_ctr.dtype))) ** 2
        parts["loss_duration"] = _masked_mean(sq, click > 0)
        loss = loss + w_duration * parts["loss_duration"]
    return loss, {k: v.detach() for k, v in parts.items()}


def soft_label_logit(soft_label: Tensor, eps: float = SOFT_LABEL_EPS) -> Tensor:
    """``logit(clamp(soft_label, eps, 1 - eps))``: a probability turned into a finite logit."""
    p = soft_label.clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def bernoulli_kl_with_logits(logit_q: Tensor, logit_p: Tensor) -> Tensor:
    """Per-element ``KL(Bern(sigmoid(logit_q)) || Bern(sigmoid(logit_p)))``, from logits (finite for any)."""
    q = torch.sigmoid(logit_q)
    return q * (F.logsigmoid(logit_q) - F.logsigmoid(logit_p)) + (1.0 - q) * (
        F.logsigmoid(-logit_q) - F.logsigmoid(-logit_p)
    )


def distillation_loss(
    logit: Tensor, soft_label: Tensor, loss: str = "bce", temperature: float = 1.0
) -> Tensor:
    """Mean distillation loss of student logits against the teacher's soft labels (docs/protocol.md section 2).

    ``bce``: BCE with soft targets. ``mse``: ``mean((sigmoid(logit) - soft_label)^2)``. ``kl``: ``T^2 *
    KL(Bern(sigmoid(logit_t / T)) || Bern(sigmoid(logit / T)))`` with ``logit_t`` the logit of the clamped
    soft label; the ``T^2`` keeps gradient size comparable across temperatures (Hinton et al. 2015).
    ``logit_mse``: ``mean((logit - logit_t)^2)``, regression on logits (Ba & Caruana, *Do Deep Nets Really
    Need to be Deep?*, NeurIPS 2014): unlike the other three, its gradient does not vanish where both
    probabilities are small, which is where most soft labels of a feed lie.
    The soft label is detached: the student never sends gradient into the teacher, which is what makes
    joint training a stop-gradient regime.
    """
    if loss not in DISTILL_LOSSES:
        raise ValueError(f"unknown distillation loss {loss!r}; valid: {DISTILL_LOSSES}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    check_same_shape(logit=logit, soft_label=soft_label)
    soft = soft_label.detach().to(logit.dtype)
    if not bool(((soft >= 0) & (soft <= 1)).all()):
        raise ValueError(
            "soft labels must be probabilities in [0, 1]; rescale the target (e.g. p_ctr * E[duration])"
        )
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logit, soft)
    if loss == "mse":
        return ((torch.sigmoid(logit) - soft) ** 2).mean()
    if loss == "logit_mse":
        return ((logit - soft_label_logit(soft)) ** 2).mean()
    t = float(temperature)
    return t * t * bernoulli_kl_with_logits(soft_label_logit(soft) / t, logit / t).mean()


def soft_target_from_teacher(out: Mapping[str, Tensor], target: str, duration_cap: float) -> Tensor:
    """The distillation target of docs/protocol.md section 2 from the teacher's outputs.

    ``p_ctr_x_duration`` is p_ctr times E[duration | click] from the teacher's duration head, divided by the
    99th percentile of clicked training durations and clipped to 1 so it is a probability-like target.
    """
    if target in ("p_ctcvr", "p_ctr"):
        return out[target]
    if target == "p_ctr_x_duration":
        expected = torch.expm1(out["dur_log"]).clamp(min=0.0)
        return (out["p_ctr"] * (expected / duration_cap)).clamp(0.0, 1.0)
    raise ValueError(f"unknown distillation target {target!r}; valid: {list(SOFT_TARGETS)}")


Batch = Mapping[str, Tensor]
"""A training batch (:mod:`dmtl.data`): ``click``, ``long_read``, ``duration`` and, for students that learn
from the teacher, ``soft_label``; with ``students.common.position_bias``, the position factor ``log_p_seen``,
``log_p_unseen`` that :class:`dmtl.modules.StudentModule` adds for students whose label needs a click
(:attr:`dmtl.vocab.Student.click_label`); every tensor of shape ``(B,)``."""


def _labels(logit: Tensor, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    click, long_read, duration = batch["click"], batch["long_read"], batch["duration"]
    check_same_shape(
        logit=logit, click=click, long_read=long_read, duration=duration, soft_label=batch.get("soft_label")
    )
    return click.to(logit.dtype), long_read.to(logit.dtype), duration.to(logit.dtype)


def ctr_loss(logit: Tensor, batch: Batch, duration_scale: float, distill: DistillConfig | None) -> Tensor:
    """``ctr``: ``BCE(y_c, sigmoid(logit))``, the production baseline (:func:`click_bce`: times ``P(seen |
    position)`` when the batch carries the position factor)."""
    click, _, _ = _labels(logit, batch)
    return click_bce(logit, click, batch).mean()


def duration_regression_loss(
    logit: Tensor, batch: Batch, duration_scale: float, distill: DistillConfig | None
) -> Tensor:
    """``duration_regression``: ``MSE(logit, log1p(duration))``, non-clicks at duration 0 (the "common
    practice" the paper argues against)."""
    _, _, duration = _labels(logit, batch)
    return ((logit - torch.log1p(duration)) ** 2).mean()


def weighted_lr_loss(
    logit: Tensor, batch: Batch, duration_scale: float, distill: DistillConfig | None
) -> Tensor:
    """``weighted_lr``: BCE on ``y_c`` with positives weighted ``duration / duration_scale``, negatives 1
    (Covington et al., RecSys 2016); :func:`click_bce`, so with the position factor in the batch the click
    probability is ``P(seen | position) * sigmoid(logit)``.

    Summed and divided by the *batch size*: the minibatch loss is then an unbiased estimate of the
    population loss, whose optimum has odds ``exp(logit) = E[duration] / (duration_scale * (1 - CTR))``,
    about ``E[duration] / duration_scale`` at feed CTRs. (Dividing by the batch's total weight would make it
    a ratio estimator and weight batches unequally.)
    """
    click, _, duration = _labels(logit, batch)
    if not duration_scale > 0:
        raise ValueError(f"duration_scale must be > 0; got {duration_scale}")
    if bool((duration < 0).any()):
        raise ValueError("durations must be >= 0 seconds for weighted_lr")
    weight = click * duration / duration_scale + (1.0 - click)
    return click_bce(logit, click, batch, weight).sum() / logit.numel()


def ctcvr_hard_loss(
    logit: Tensor, batch: Batch, duration_scale: float, distill: DistillConfig | None
) -> Tensor:
    """``ctcvr_hard``: ``BCE(y_c * y_d, sigmoid(logit))``, the multi-task label without a teacher
    (:func:`click_bce`: times ``P(seen | position)`` when the batch carries the position factor)."""
    click, long_read, _ = _labels(logit, batch)
    return click_bce(logit, click * long_read, batch).mean()


def dmtl_loss(logit: Tensor, batch: Batch, duration_scale: float, distill: DistillConfig | None) -> Tensor:
    """``dmtl``: ``distillation_loss(logit, soft_label) + hard_weight * BCE(y_c * y_d, sigmoid(logit))``.

    With ``hard_weight == 0`` the labels are not read at all: the student learns from the teacher only.
    """
    if distill is None:
        raise ValueError(
            "a distilled student needs its distillation settings (students.<name>.distill_loss, ...)"
        )
    soft = batch.get("soft_label")
    if soft is None:
        raise ValueError("a distilled student needs soft_label (the teacher's probabilities) in its batch")
    click, long_read, _ = _labels(logit, batch)
    if distill.hard_weight < 0:
        raise ValueError(f"hard_weight must be >= 0; got {distill.hard_weight}")
    loss = distillation_loss(logit, soft, distill.distill_loss, distill.kl_temperature)
    if distill.hard_weight > 0:
        loss = loss + distill.hard_weight * F.binary_cross_entropy_with_logits(logit, click * long_read)
    return loss


StudentLoss = Callable[[Tensor, Batch, float, "DistillConfig | None"], Tensor]
STUDENT_LOSSES: dict[str, StudentLoss] = {
    "ctr": ctr_loss,
    "duration_regression": duration_regression_loss,
    "weighted_lr": weighted_lr_loss,
    "ctcvr_hard": ctcvr_hard_loss,
    "dmtl": dmtl_loss,
}
"""Each student of :data:`dmtl.vocab.STUDENTS` and its loss (docs/protocol.md section 3)."""


def student_loss(
    name: str, logit: Tensor, batch: Batch, duration_scale: float, distill: DistillConfig | None
) -> Tensor:
    """The loss of student ``name`` on one batch.

    Args:
        name: a student of :data:`dmtl.vocab.STUDENTS`.
        logit: student scores ``<u, v>``, shape ``(B,)``.
        batch: the labels (and ``soft_label`` for a student that learns from the teacher), each ``(B,)``.
        duration_scale: ``weighted_lr`` only: seconds per unit of positive weight (mean clicked duration).
        distill: the distillation settings of a student with a teacher; ``None`` for the others.

    Returns:
        The scalar loss.
    """
    if name not in STUDENT_LOSSES:
        raise ValueError(f"unknown student {name!r}; valid: {list(STUDENT_LOSSES)}")
    return STUDENT_LOSSES[name](logit, batch, duration_scale, distill)


__all__ = [
    "DISTILL_LOSSES",
    "SOFT_LABEL_EPS",
    "STUDENT_LOSSES",
    "bce_ctcvr_from_logits",
    "bce_product",
    "click_bce",
    "seen_factor",
    "sigmoid_factor",
    "bernoulli_kl_with_logits",
    "distillation_loss",
    "soft_label_logit",
    "soft_target_from_teacher",
    "ctcvr_hard_loss",
    "ctr_loss",
    "dmtl_loss",
    "duration_regression_loss",
    "student_loss",
    "teacher_loss",
    "weighted_lr_loss",
]
