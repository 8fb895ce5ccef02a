"""Every loss of the study: the teacher's (ESMM and its ablations) and each student target's.

All losses work on logits or log-probabilities, never on probabilities passed through ``log``, so they stay
finite (values and gradients) for saturated outputs such as logits of +-100. Label tensors may be any
numeric dtype; they are cast to the logits' dtype. Every per-impression tensor must have the same shape
``(B,)``: a ``(B, 1)`` label against ``(B,)`` logits would broadcast to ``(B, B)`` and train on nonsense, so
it is an error.

Competitor definitions: docs/protocol.md section 3; the open choices (distillation target, loss, hard-label weight,
training regime): docs/protocol.md section 2.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

STUDENT_TARGETS = ("ctr", "duration_regression", "weighted_lr", "ctcvr_hard", "dmtl")
DISTILL_LOSSES = ("bce", "mse", "kl")
SOFT_LABEL_EPS = 1e-6
"""Soft labels are clamped to ``[eps, 1 - eps]`` before being turned into logits (KL distillation)."""


def _check_same_shape(**tensors: Tensor | None) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items() if t is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"per-impression tensors must share one shape (B,); got {shapes}")


def bce_ctcvr_from_logits(logit_ctr: Tensor, logit_cvr: Tensor, target: Tensor) -> Tensor:
    """Per-impression BCE of ``target`` against ``p_ctcvr = sigmoid(logit_ctr) * sigmoid(logit_cvr)``.

    ``log p_ctcvr = logsigmoid(a) + logsigmoid(b)`` and, because ``1 - p_ctr p_cvr = (1 - p_ctr) +
    p_ctr (1 - p_cvr)``, ``log(1 - p_ctcvr) = logaddexp(logsigmoid(-a), logsigmoid(a) + logsigmoid(-b))``:
    exact and finite for every finite pair of logits, with no clamping (ESMM's product, Ma et al. 2018).

    Args:
        logit_ctr: CTR logits ``a``, shape ``(B,)``.
        logit_cvr: CVR logits ``b``, shape ``(B,)``.
        target: ``y_c * y_d`` in ``[0, 1]``, shape ``(B,)``.

    Returns:
        Per-impression losses, shape ``(B,)``.
    """
    _check_same_shape(logit_ctr=logit_ctr, logit_cvr=logit_cvr, target=target)
    target = target.to(logit_ctr.dtype)
    log_p = F.logsigmoid(logit_ctr) + F.logsigmoid(logit_cvr)
    log_1m_p = torch.logaddexp(F.logsigmoid(-logit_ctr), F.logsigmoid(logit_ctr) + F.logsigmoid(-logit_cvr))
    return -(target * log_p + (1.0 - target) * log_1m_p)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    # Zero (with a graph, so backward still works) when the mask is empty, e.g. a batch without clicks.
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def teacher_loss(
    out: Mapping[str, Tensor | None],
    click: Tensor,
    long_read: Tensor,
    w_ctr: float = 1.0,
    w_ctcvr: float = 1.0,
    esmm: bool = True,
    w_duration: float = 0.0,
    duration: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The teacher's multi-task loss (docs/protocol.md section 1, "Teacher"; section 2 for the variants).

    ESMM (default): ``w_ctr * BCE(y_c, p_ctr) + w_ctcvr * BCE(y_c * y_d, p_ctcvr)``, both means over all
    impressions; ``p_cvr`` gets no direct loss. Without ESMM: ``w_ctr * BCE(y_c, p_ctr) + w_ctcvr *
    BCE(y_d, p_cvr)``, the second a mean over clicked impressions only (0 for a batch without clicks), so
    ``long_read`` of non-clicked impressions is never read. ``w_duration > 0`` adds ``w_duration *
    MSE(dur_log, log1p(duration))`` over clicked impressions (needs the teacher's duration head).

    Args:
        out: the teacher's forward output; reads ``logit_ctr``, ``logit_cvr`` and (if used) ``dur_log``.
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
    _check_same_shape(
        logit_ctr=logit_ctr, logit_cvr=logit_cvr, click=click, long_read=long_read, duration=duration
    )
    click = click.to(logit_ctr.dtype)
    long_read = long_read.to(logit_ctr.dtype)
    parts = {"loss_ctr": F.binary_cross_entropy_with_logits(logit_ctr, click)}
    if esmm:
        parts["loss_ctcvr"] = bce_ctcvr_from_logits(logit_ctr, logit_cvr, click * long_read).mean()
        loss = w_ctr * parts["loss_ctr"] + w_ctcvr * parts["loss_ctcvr"]
    else:
        cvr = F.binary_cross_entropy_with_logits(logit_cvr, long_read, reduction="none")
        parts["loss_cvr"] = _masked_mean(cvr, click > 0)
        loss = w_ctr * parts["loss_ctr"] + w_ctcvr * parts["loss_cvr"]
    if w_duration > 0:
        if duration is None or "dur_log" not in out:
            raise ValueError("w_duration > 0 needs `duration` and a teacher built with duration_head=True")
        _check_same_shape(dur_log=out["dur_log"], duration=duration)
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
    The soft label is detached: the student never sends gradient into the teacher, which is what makes
    joint training a stop-gradient regime.
    """
    if loss not in DISTILL_LOSSES:
        raise ValueError(f"unknown distillation loss {loss!r}; valid: {DISTILL_LOSSES}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    _check_same_shape(logit=logit, soft_label=soft_label)
    soft = soft_label.detach().to(logit.dtype)
    if not bool(((soft >= 0) & (soft <= 1)).all()):
        raise ValueError(
            "soft labels must be probabilities in [0, 1]; rescale the target (e.g. p_ctr * E[duration])"
        )
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logit, soft)
    if loss == "mse":
        return ((torch.sigmoid(logit) - soft) ** 2).mean()
    t = float(temperature)
    return t * t * bernoulli_kl_with_logits(soft_label_logit(soft) / t, logit / t).mean()


def student_loss(
    target: str,
    logit: Tensor,
    click: Tensor,
    long_read: Tensor,
    duration: Tensor,
    soft_label: Tensor | None = None,
    *,
    distill_loss: str = "bce",
    temperature: float = 1.0,
    hard_weight: float = 0.0,
    duration_scale: float = 1.0,
) -> Tensor:
    """The loss of one two-tower student, chosen by its training target (docs/protocol.md section 3).

    - ``ctr``: ``BCE(y_c, sigmoid(logit))``.
    - ``duration_regression``: ``MSE(logit, log1p(duration))``, non-clicks at duration 0 (the "common
      practice" the paper argues against).
    - ``weighted_lr``: BCE on ``y_c`` with positives weighted ``duration / duration_scale`` and negatives 1
      (Covington et al., RecSys 2016), summed and divided by the *batch size*: the minibatch loss is then an
      unbiased estimate of the population loss, whose optimum has odds ``exp(logit) = E[duration] /
      (duration_scale * (1 - CTR))``, about ``E[duration] / duration_scale`` at feed CTRs. (Dividing by the
      batch's total weight would make it a ratio estimator and weight batches unequally.)
    - ``ctcvr_hard``: ``BCE(y_c * y_d, sigmoid(logit))``.
    - ``dmtl``: ``distillation_loss(logit, soft_label) + hard_weight * BCE(y_c * y_d, sigmoid(logit))``;
      with ``hard_weight == 0`` the labels are not read at all.

    Args:
        target: one of :data:`STUDENT_TARGETS`.
        logit: student scores ``<u, v>``, shape ``(B,)``.
        click: ``y_c``, shape ``(B,)``.
        long_read: ``y_d``, shape ``(B,)``.
        duration: seconds, 0 for non-clicks, shape ``(B,)``.
        soft_label: teacher probabilities in [0, 1], shape ``(B,)``; required for ``dmtl`` only.
        distill_loss: ``dmtl`` only: one of :data:`DISTILL_LOSSES`.
        temperature: ``dmtl`` with ``kl`` only: the distillation temperature ``T``.
        hard_weight: ``dmtl`` only: weight of the hard CTCVR-label term.
        duration_scale: ``weighted_lr`` only: seconds per unit of positive weight.

    Returns:
        The scalar loss.
    """
    if target not in STUDENT_TARGETS:
        raise ValueError(f"unknown student target {target!r}; valid: {STUDENT_TARGETS}")
    _check_same_shape(logit=logit, click=click, long_read=long_read, duration=duration, soft_label=soft_label)
    click = click.to(logit.dtype)
    if target == "ctr":
        return F.binary_cross_entropy_with_logits(logit, click)
    if target == "duration_regression":
        return ((logit - torch.log1p(duration.to(logit.dtype))) ** 2).mean()
    if target == "weighted_lr":
        if not duration_scale > 0:
            raise ValueError(f"duration_scale must be > 0; got {duration_scale}")
        duration = duration.to(logit.dtype)
        if bool((duration < 0).any()):
            raise ValueError("durations must be >= 0 seconds for weighted_lr")
        weight = click * duration / duration_scale + (1.0 - click)
        return (
            F.binary_cross_entropy_with_logits(logit, click, weight=weight, reduction="sum") / logit.numel()
        )
    if target == "ctcvr_hard":
        return F.binary_cross_entropy_with_logits(logit, click * long_read.to(logit.dtype))
    # dmtl
    if soft_label is None:
        raise ValueError("target 'dmtl' needs soft_label (the teacher's probabilities)")
    if hard_weight < 0:
        raise ValueError(f"hard_weight must be >= 0; got {hard_weight}")
    loss = distillation_loss(logit, soft_label, distill_loss, temperature)
    if hard_weight > 0:
        hard = F.binary_cross_entropy_with_logits(logit, click * long_read.to(logit.dtype))
        loss = loss + hard_weight * hard
    return loss


__all__ = [
    "DISTILL_LOSSES",
    "SOFT_LABEL_EPS",
    "STUDENT_TARGETS",
    "bce_ctcvr_from_logits",
    "bernoulli_kl_with_logits",
    "distillation_loss",
    "soft_label_logit",
    "student_loss",
    "teacher_loss",
]
