"""Tests for dmtl.losses: every loss against its formula on tiny hand-made batches, and stability."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dmtl.config import DistillConfig
from dmtl.losses import (
    DISTILL_LOSSES,
    SOFT_LABEL_EPS,
    STUDENT_LOSSES,
    bce_ctcvr_from_logits,
    bce_product,
    distillation_loss,
    sigmoid_factor,
    student_loss,
    teacher_loss,
)
from dmtl.vocab import STUDENT_NAMES, student

D = torch.float64


def bce(y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Per-element BCE from probabilities, the textbook way (fine for the moderate logits used here)."""
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))


def teacher_out(logit_ctr: list[float], logit_cvr: list[float], dur_log: list[float] | None = None) -> dict:
    out = {"logit_ctr": torch.tensor(logit_ctr, dtype=D), "logit_cvr": torch.tensor(logit_cvr, dtype=D)}
    if dur_log is not None:
        out["dur_log"] = torch.tensor(dur_log, dtype=D)
    return out


# A batch of four impressions: clicked long read, clicked short read, two non-clicks.
CLICK = torch.tensor([1, 1, 0, 0])
LONG = torch.tensor([1, 0, 0, 0])
DURATION = torch.tensor([math.e**2 - 1, math.e - 1, 0.0, 0.0], dtype=D)  # log1p -> [2, 1, 0, 0]
TEACHER_1_1 = {"w_ctr": 1.0, "w_ctcvr": 1.0, "w_duration": 0.0}  # the paper's 1 : 1 loss, no duration head


# ---------------------------------------------------------------- teacher


def test_teacher_loss_hand_computed_at_zero_logits() -> None:
    # p_ctr = p_cvr = 1/2, p_ctcvr = 1/4. CTR BCE is ln 2 for every impression. CTCVR BCE: ln 4 for the
    # long read, -ln(3/4) for the other three. Mean: (ln 4 + 3 ln(4/3)) / 4.
    out = teacher_out([0.0] * 4, [0.0] * 4)
    loss, parts = teacher_loss(out, CLICK, LONG, w_ctr=2.0, w_ctcvr=0.5, esmm=True, w_duration=0.0)
    want_ctcvr = (math.log(4) + 3 * math.log(4 / 3)) / 4
    assert parts["loss_ctr"].item() == pytest.approx(math.log(2))
    assert parts["loss_ctcvr"].item() == pytest.approx(want_ctcvr)
    assert loss.item() == pytest.approx(2.0 * math.log(2) + 0.5 * want_ctcvr)
    assert set(parts) == {"loss_ctr", "loss_ctcvr"}


def test_teacher_loss_esmm_equals_formula() -> None:
    a, b = [1.5, -0.3, 0.8, -2.0], [0.2, 1.1, -0.7, 0.4]
    out = teacher_out(a, b)
    p_ctr, p_cvr = torch.sigmoid(out["logit_ctr"]), torch.sigmoid(out["logit_cvr"])
    y_c, y_ctcvr = CLICK.to(D), (CLICK * LONG).to(D)
    want = 0.7 * bce(y_c, p_ctr).mean() + 1.3 * bce(y_ctcvr, p_ctr * p_cvr).mean()
    loss, _ = teacher_loss(out, CLICK, LONG, w_ctr=0.7, w_ctcvr=1.3, esmm=True, w_duration=0.0)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)


def test_teacher_loss_no_esmm_uses_clicked_only() -> None:
    a, b = [1.5, -0.3, 0.8, -2.0], [0.2, 1.1, -0.7, 0.4]
    out = teacher_out(a, b)
    p_ctr, p_cvr = torch.sigmoid(out["logit_ctr"]), torch.sigmoid(out["logit_cvr"])
    want_cvr = (bce(torch.tensor(1.0, dtype=D), p_cvr[0]) + bce(torch.tensor(0.0, dtype=D), p_cvr[1])) / 2
    loss, parts = teacher_loss(out, CLICK, LONG, w_ctr=1.0, w_ctcvr=2.0, esmm=False, w_duration=0.0)
    assert set(parts) == {"loss_ctr", "loss_cvr"}
    assert parts["loss_cvr"].item() == pytest.approx(want_cvr.item(), rel=1e-12)
    assert loss.item() == pytest.approx((bce(CLICK.to(D), p_ctr).mean() + 2 * want_cvr).item(), rel=1e-12)
    # long_read on non-clicked impressions is never read.
    loss2, _ = teacher_loss(
        out, CLICK, torch.tensor([1, 0, 1, 1]), w_ctr=1.0, w_ctcvr=2.0, esmm=False, w_duration=0.0
    )
    assert loss2.item() == loss.item()


def test_teacher_loss_no_esmm_without_clicks_is_zero_and_differentiable() -> None:
    logit_cvr = torch.tensor([0.3, -0.2], dtype=D, requires_grad=True)
    out = {"logit_ctr": torch.tensor([0.1, 0.2], dtype=D, requires_grad=True), "logit_cvr": logit_cvr}
    loss, parts = teacher_loss(out, torch.zeros(2), torch.zeros(2), **TEACHER_1_1, esmm=False)
    assert parts["loss_cvr"].item() == 0.0
    loss.backward()
    assert torch.equal(logit_cvr.grad, torch.zeros(2, dtype=D))


def test_teacher_loss_duration_term() -> None:
    out = teacher_out([0.0] * 4, [0.0] * 4, dur_log=[1.0, 3.0, 5.0, 7.0])
    base, _ = teacher_loss(out, CLICK, LONG, **TEACHER_1_1, esmm=True)
    loss, parts = teacher_loss(
        out, CLICK, LONG, w_ctr=1.0, w_ctcvr=1.0, esmm=True, w_duration=0.5, duration=DURATION
    )
    # Clicked only: (1 - 2)^2 and (3 - 1)^2 -> mean 2.5; the non-clicks' predictions are ignored.
    assert parts["loss_duration"].item() == pytest.approx(2.5)
    assert loss.item() == pytest.approx(base.item() + 0.5 * 2.5)
    with pytest.raises(ValueError, match="duration_head"):
        teacher_loss(
            teacher_out([0.0] * 4, [0.0] * 4),
            CLICK,
            LONG,
            w_ctr=1.0,
            w_ctcvr=1.0,
            esmm=True,
            w_duration=1.0,
            duration=DURATION,
        )


def test_ctcvr_bce_stable_and_exact_at_saturation() -> None:
    big = 100.0
    grid = torch.tensor([-big, 0.0, big])
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    a, b = a.flatten().requires_grad_(), b.flatten().requires_grad_()
    for y in (0.0, 1.0):
        loss = bce_ctcvr_from_logits(a, b, torch.full_like(a, y))
        assert torch.isfinite(loss).all()
        (ga, gb) = torch.autograd.grad(loss.sum(), (a, b))
        assert torch.isfinite(ga).all() and torch.isfinite(gb).all()
    # y = 0, both logits +100: -log(1 - p^2) with 1 - p ~ e^-100, so the loss is 100 - ln 2.
    one = torch.tensor([big])
    assert bce_ctcvr_from_logits(one, one, torch.zeros(1)).item() == pytest.approx(
        big - math.log(2), rel=1e-6
    )
    # y = 1, logits (+100, -100): -log p_ctcvr = softplus(-100) + softplus(100) ~ 100.
    assert bce_ctcvr_from_logits(one, -one, torch.ones(1)).item() == pytest.approx(big, rel=1e-6)


def test_teacher_loss_rejects_mismatched_shapes_and_negative_weights() -> None:
    out = teacher_out([0.0] * 4, [0.0] * 4)
    with pytest.raises(ValueError, match="shape"):
        teacher_loss(out, CLICK[:, None], LONG, **TEACHER_1_1, esmm=True)
    with pytest.raises(ValueError, match=">= 0"):
        teacher_loss(out, CLICK, LONG, w_ctr=-1.0, w_ctcvr=1.0, esmm=True, w_duration=0.0)


# ---------------------------------------------------------------- students


def sl(name, logit, click, long_read, duration, soft=None, duration_scale=1.0, **distill):
    """``student_loss`` on a batch of these labels, with the distillation settings a student with a teacher takes
    (``distill_loss`` bce, ``kl_temperature`` 1, ``hard_weight`` 0 unless given)."""
    batch = {"click": click, "long_read": long_read, "duration": duration}
    if soft is not None:
        batch["soft_label"] = soft
    settings = None
    if name in STUDENT_NAMES and student(name).needs_teacher:
        base = {"soft_target": "p_ctcvr", "distill_loss": "bce", "kl_temperature": 1.0, "hard_weight": 0.0}
        unexposed = {"unexposed_ratio": 0.0, "unexposed_popularity_share": 0.5, "unexposed_weight": 1.0}
        settings = DistillConfig(**{**base, **distill}, teacher_training="two_stage", **unexposed)
    return student_loss(name, logit, batch, duration_scale, settings)


def test_every_student_of_the_vocabulary_has_its_loss() -> None:
    assert set(STUDENT_LOSSES) == set(STUDENT_NAMES)


LOGIT = torch.tensor([0.5, -1.0, 2.0, -0.2], dtype=D)
SOFT = torch.tensor([0.6, 0.2, 0.05, 0.01], dtype=D)


def test_student_ctr_and_ctcvr_hard() -> None:
    p = torch.sigmoid(LOGIT)
    got = sl("ctr", LOGIT, CLICK, LONG, DURATION)
    assert got.item() == pytest.approx(bce(CLICK.to(D), p).mean().item(), rel=1e-12)
    got = sl("ctcvr_hard", LOGIT, CLICK, LONG, DURATION)
    assert got.item() == pytest.approx(bce((CLICK * LONG).to(D), p).mean().item(), rel=1e-12)


def test_student_duration_regression() -> None:
    # Targets log1p(duration) = [2, 1, 0, 0]; non-clicks regress to 0.
    got = sl("duration_regression", LOGIT, CLICK, LONG, DURATION)
    want = ((0.5 - 2) ** 2 + (-1 - 1) ** 2 + 2.0**2 + 0.2**2) / 4
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_student_weighted_lr() -> None:
    p = torch.sigmoid(LOGIT)
    scale = 10.0
    w = torch.tensor([(math.e**2 - 1) / scale, (math.e - 1) / scale, 1.0, 1.0], dtype=D)
    want = (w * bce(CLICK.to(D), p)).sum() / 4  # normalised by batch size
    got = sl("weighted_lr", LOGIT, CLICK, LONG, DURATION, duration_scale=scale)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    with pytest.raises(ValueError, match="duration_scale"):
        sl("weighted_lr", LOGIT, CLICK, LONG, DURATION, duration_scale=0.0)


def test_student_dmtl_each_distillation_loss() -> None:
    p = torch.sigmoid(LOGIT)
    got = sl("dmtl", LOGIT, CLICK, LONG, DURATION, SOFT)
    assert got.item() == pytest.approx(bce(SOFT, p).mean().item(), rel=1e-12)
    got = sl("dmtl", LOGIT, CLICK, LONG, DURATION, SOFT, distill_loss="mse")
    assert got.item() == pytest.approx(((p - SOFT) ** 2).mean().item(), rel=1e-12)
    t = 2.0
    q, s = torch.sigmoid(torch.logit(SOFT) / t), torch.sigmoid(LOGIT / t)
    kl = q * torch.log(q / s) + (1 - q) * torch.log((1 - q) / (1 - s))
    got = sl("dmtl", LOGIT, CLICK, LONG, DURATION, SOFT, distill_loss="kl", kl_temperature=t)
    assert got.item() == pytest.approx((t * t * kl.mean()).item(), rel=1e-9)


def test_student_dmtl_hard_weight() -> None:
    p = torch.sigmoid(LOGIT)
    got = sl("dmtl", LOGIT, CLICK, LONG, DURATION, SOFT, hard_weight=0.3)
    want = bce(SOFT, p).mean() + 0.3 * bce((CLICK * LONG).to(D), p).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize("distill", DISTILL_LOSSES)
def test_student_dmtl_ignores_labels_when_hard_weight_is_zero(distill: str) -> None:
    base = sl("dmtl", LOGIT, CLICK, LONG, DURATION, SOFT, distill_loss=distill, kl_temperature=1.5)
    other = sl(
        "dmtl", LOGIT, 1 - CLICK, 1 - LONG, DURATION * 7 + 3, SOFT, distill_loss=distill, kl_temperature=1.5
    )
    assert other.item() == base.item()
    # ... and they do matter once the hard term is on.
    hard = sl("dmtl", LOGIT, 1 - CLICK, 1 - LONG, DURATION, SOFT, distill_loss=distill, hard_weight=1.0)
    assert hard.item() != pytest.approx(base.item())


@pytest.mark.parametrize("t", [1.0, 3.0])
def test_kl_is_zero_when_soft_label_equals_student_probability(t: float) -> None:
    got = distillation_loss(LOGIT, torch.sigmoid(LOGIT), "kl", temperature=t)
    assert abs(got.item()) < 1e-10


def test_dmtl_sends_no_gradient_into_the_teacher() -> None:
    logit = LOGIT.clone().requires_grad_()
    soft = SOFT.clone().requires_grad_()
    for distill in DISTILL_LOSSES:
        sl("dmtl", logit, CLICK, LONG, DURATION, soft, distill_loss=distill).backward()
    assert soft.grad is None
    assert logit.grad is not None and logit.grad.abs().sum() > 0


@pytest.mark.parametrize("target", STUDENT_NAMES)
@pytest.mark.parametrize("distill", DISTILL_LOSSES)
def test_student_losses_finite_at_saturated_logits(target: str, distill: str) -> None:
    logit = torch.tensor([100.0, -100.0, 100.0, -100.0], requires_grad=True)
    soft = torch.tensor([0.0, 1.0, 1.0, 0.0])  # maximally wrong and exactly right soft labels
    loss = sl(
        target,
        logit,
        CLICK,
        LONG,
        DURATION.float(),
        soft,
        distill_loss=distill,
        kl_temperature=2.0,
        hard_weight=0.5,
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logit.grad).all()


def test_student_loss_bad_input() -> None:
    with pytest.raises(ValueError, match="valid: .*'ctr'.*'dmtl'"):
        sl("clicks", LOGIT, CLICK, LONG, DURATION)
    with pytest.raises(ValueError, match="valid: .*'bce'.*'kl'"):
        sl("dmtl", LOGIT, CLICK, LONG, DURATION, SOFT, distill_loss="huber")
    with pytest.raises(ValueError, match="soft_label"):
        sl("dmtl", LOGIT, CLICK, LONG, DURATION)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sl("dmtl", LOGIT, CLICK, LONG, DURATION, SOFT * 30)
    with pytest.raises(ValueError, match="shape"):
        sl("ctr", LOGIT, CLICK[:, None], LONG, DURATION)
    with pytest.raises(ValueError, match="temperature"):
        sl("dmtl", LOGIT, CLICK, LONG, DURATION, SOFT, distill_loss="kl", kl_temperature=0.0)


def test_weighted_lr_odds_approximate_expected_duration() -> None:
    """YouTube 2016: fitted odds = sum(positive weights) / #negatives = E[duration] / (scale * (1 - CTR))."""
    gen = torch.Generator().manual_seed(0)
    ctr = torch.tensor([0.01, 0.02, 0.03], dtype=D)
    mean_read = torch.tensor([20.0, 50.0, 120.0], dtype=D)
    n, scale = 40_000, 10.0
    group = torch.arange(3).repeat_interleave(n)
    click = (torch.rand(3 * n, generator=gen, dtype=D) < ctr[group]).to(D)
    read = -mean_read[group] * torch.log(torch.rand(3 * n, generator=gen, dtype=D))  # exponential
    duration = click * read
    theta = torch.zeros(3, dtype=D, requires_grad=True)  # one logit per group
    opt = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=200,
        tolerance_grad=1e-12,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = sl("weighted_lr", theta[group], click, click, duration, duration_scale=scale)
        loss.backward()
        return loss

    opt.step(closure)
    odds = theta.detach().exp()
    pos_weight = torch.zeros(3, dtype=D).index_add_(0, group, duration / scale)
    negatives = torch.zeros(3, dtype=D).index_add_(0, group, 1 - click)
    torch.testing.assert_close(odds, pos_weight / negatives, rtol=1e-6, atol=0)  # the exact optimum
    expected_duration = torch.zeros(3, dtype=D).index_add_(0, group, duration) / n
    torch.testing.assert_close(odds, expected_duration / scale, rtol=0.04, atol=0)  # 1/(1-CTR) <= 3.1%


# ---------------------------------------------------------------- products of probabilities (ESMM, PAL)


def factors_of(*logits: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [sigmoid_factor(a) for a in logits]


def test_bce_product_equals_formula_for_three_factors() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(50, generator=gen, dtype=D) * 2 for _ in range(3))
    y = torch.rand(50, generator=gen, dtype=D)  # soft targets too
    p = torch.sigmoid(a) * torch.sigmoid(b) * torch.sigmoid(c)
    got = bce_product(factors_of(a, b, c), y)
    torch.testing.assert_close(got, bce(y, p), rtol=1e-12, atol=1e-12)
    # One factor is the plain BCE; two factors are ESMM's product.
    torch.testing.assert_close(
        bce_product(factors_of(a), y), F.binary_cross_entropy_with_logits(a, y, reduction="none")
    )
    torch.testing.assert_close(bce_product(factors_of(a, b), y), bce_ctcvr_from_logits(a, b, y))


def test_bce_product_pinned_factor_is_one() -> None:
    """A factor pinned to P = 1 enters as (0, -inf): the loss is the product without it, with finite
    gradients everywhere (the -inf term drops out of the log-sum-exp)."""
    a = torch.tensor([1.5, -0.3, 0.8, -2.0], dtype=D, requires_grad=True)
    b = torch.tensor([0.2, 1.1, -0.7, 0.4], dtype=D, requires_grad=True)
    pinned = (torch.zeros(4, dtype=D), torch.full((4,), -torch.inf, dtype=D))
    y = (CLICK * LONG).to(D)
    got = bce_product([pinned, *factors_of(a, b)], y)
    torch.testing.assert_close(got, bce_ctcvr_from_logits(a, b, y), rtol=1e-14, atol=0)
    got.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_bce_product_stable_at_saturation() -> None:
    big = 100.0
    grid = torch.tensor([-big, 0.0, big])
    a, b, c = (g.flatten().requires_grad_() for g in torch.meshgrid(grid, grid, grid, indexing="ij"))
    for y in (0.0, 1.0):
        loss = bce_product(factors_of(a, b, c), torch.full_like(a, y))
        assert torch.isfinite(loss).all()
        grads = torch.autograd.grad(loss.sum(), (a, b, c))
        assert all(torch.isfinite(g).all() for g in grads)
    # y = 0, three logits of +100 (float32): -log(1 - p^3) with 1 - p ~ e^-100, so 100 - ln 3.
    one = torch.tensor([big])
    assert bce_product(factors_of(one, one, one), torch.zeros(1)).item() == pytest.approx(
        big - math.log(3), rel=1e-6
    )


def test_bce_product_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one factor"):
        bce_product([], torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        bce_product(factors_of(torch.zeros(3), torch.zeros(4)), torch.zeros(3))


SEEN_LOGIT = torch.tensor([3.0, -0.5, 0.0, 1.2], dtype=D)


def seen_of(logit: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"log_p_seen": F.logsigmoid(logit), "log_p_unseen": F.logsigmoid(-logit)}


def test_teacher_loss_with_position_factor_is_pal() -> None:
    """PAL (Guo et al. 2019): the logged click is fitted by P(seen) * p_ctr, the logged y_c * y_d by
    P(seen) * p_ctr * p_cvr; the clicked-only CVR term of the no-ESMM ablation takes no factor."""
    a, b = [1.5, -0.3, 0.8, -2.0], [0.2, 1.1, -0.7, 0.4]
    out = {**teacher_out(a, b), **seen_of(SEEN_LOGIT)}
    s, p_ctr, p_cvr = (torch.sigmoid(x) for x in (SEEN_LOGIT, out["logit_ctr"], out["logit_cvr"]))
    y_c, y_ctcvr = CLICK.to(D), (CLICK * LONG).to(D)
    loss, parts = teacher_loss(out, CLICK, LONG, w_ctr=0.7, w_ctcvr=1.3, esmm=True, w_duration=0.0)
    assert parts["loss_ctr"].item() == pytest.approx(bce(y_c, s * p_ctr).mean().item(), rel=1e-12)
    assert parts["loss_ctcvr"].item() == pytest.approx(
        bce(y_ctcvr, s * p_ctr * p_cvr).mean().item(), rel=1e-12
    )
    assert loss.item() == pytest.approx(0.7 * parts["loss_ctr"].item() + 1.3 * parts["loss_ctcvr"].item())
    _, plain = teacher_loss(teacher_out(a, b), CLICK, LONG, **TEACHER_1_1, esmm=False)
    _, biased = teacher_loss(out, CLICK, LONG, **TEACHER_1_1, esmm=False)
    assert biased["loss_cvr"].item() == plain["loss_cvr"].item()
    assert biased["loss_ctr"].item() == pytest.approx(bce(y_c, s * p_ctr).mean().item(), rel=1e-12)


def test_teacher_loss_with_pinned_position_factor_is_the_plain_loss() -> None:
    """Where the factor is pinned to 1 (the top of the feed, or a log without positions) PAL is ESMM."""
    a, b = [1.5, -0.3, 0.8, -2.0], [0.2, 1.1, -0.7, 0.4]
    pinned = {"log_p_seen": torch.zeros(4, dtype=D), "log_p_unseen": torch.full((4,), -torch.inf, dtype=D)}
    want, _ = teacher_loss(teacher_out(a, b), CLICK, LONG, **TEACHER_1_1, esmm=True)
    got, _ = teacher_loss({**teacher_out(a, b), **pinned}, CLICK, LONG, **TEACHER_1_1, esmm=True)
    assert got.item() == pytest.approx(want.item(), rel=1e-14)


def test_click_label_students_take_the_position_factor() -> None:
    """With the position factor in the batch, ctr, weighted_lr and ctcvr_hard fit their label by
    P(seen) * sigmoid(logit); the students whose label is not a logged click ignore it (vocabulary
    property ``click_label``, not a list of names in the trainer)."""
    s, p = torch.sigmoid(SEEN_LOGIT), torch.sigmoid(LOGIT)
    batch = {"click": CLICK, "long_read": LONG, "duration": DURATION, "soft_label": SOFT}
    factor = seen_of(SEEN_LOGIT)
    distill = DistillConfig(
        soft_target="p_ctcvr",
        distill_loss="bce",
        kl_temperature=1.0,
        hard_weight=0.5,
        teacher_training="two_stage",
        unexposed_ratio=0.0,
        unexposed_popularity_share=0.5,
        unexposed_weight=1.0,
    )

    def loss(name: str, extra: dict) -> float:
        settings = distill if student(name).needs_teacher else None
        return student_loss(name, LOGIT, {**batch, **extra}, 10.0, settings).item()

    assert loss("ctr", factor) == pytest.approx(bce(CLICK.to(D), s * p).mean().item(), rel=1e-12)
    y = (CLICK * LONG).to(D)
    assert loss("ctcvr_hard", factor) == pytest.approx(bce(y, s * p).mean().item(), rel=1e-12)
    w = torch.tensor([(math.e**2 - 1) / 10.0, (math.e - 1) / 10.0, 1.0, 1.0], dtype=D)
    want = (w * bce(CLICK.to(D), s * p)).sum() / 4
    assert loss("weighted_lr", factor) == pytest.approx(want.item(), rel=1e-12)
    for name in STUDENT_NAMES:
        changed = loss(name, factor) != pytest.approx(loss(name, {}), rel=1e-9)
        assert changed == student(name).click_label, name


def test_logit_mse_is_regression_on_logits() -> None:
    """Ba & Caruana 2014: mean((z - logit(q))^2); gradient 2 (z - logit(q)) / B."""
    logit = LOGIT.clone().requires_grad_()
    target = torch.log(SOFT / (1 - SOFT))
    got = distillation_loss(logit, SOFT, "logit_mse")
    assert got.item() == pytest.approx(((LOGIT - target) ** 2).mean().item(), rel=1e-12)
    got.backward()
    torch.testing.assert_close(logit.grad, 2 * (LOGIT - target) / 4)
    # Soft labels of exactly 0 or 1 are clamped to [eps, 1 - eps] first: finite logits to regress on.
    edge = distillation_loss(torch.zeros(2, dtype=D), torch.tensor([0.0, 1.0], dtype=D), "logit_mse")
    assert edge.item() == pytest.approx(math.log((1 - SOFT_LABEL_EPS) / SOFT_LABEL_EPS) ** 2, rel=1e-9)
    assert sl("dmtl", LOGIT, CLICK, LONG, DURATION, SOFT, distill_loss="logit_mse").item() == got.item()
