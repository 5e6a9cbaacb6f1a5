"""Tests for vpr/losses.py on a 2-D example small enough to check on paper.

Queries q0 = (0, 0) with positive p0 = (0.3, 0.4) (d = 0.5) and q1 = (1, 0) with p1 = q1 (d = 0).
Negatives (interleaved on purpose): n0 = (0.6, 0.8) -> q0, n2 = (1, 0.05) -> q1, n1 = (0, 0.4) -> q0,
n4 = (0, 0.3) -> q0. So q0 has three negatives and q1 one: the mean over pairs (divide by 4) differs from a
mean of per-query means.

             d(q,n)   d(p,n)
  q0, n0     1.0      0.5
  q1, n2     0.05     0.05
  q0, n1     0.4      0.3
  q0, n4     0.3      sqrt(0.1)
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from vpr.losses import SharpenedTripletMarginLoss, TripletMarginLoss, euclidean_distance

SQRT_01 = math.sqrt(0.1)


def _example(requires_grad: bool = False):
    anchor = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=requires_grad)
    positive = torch.tensor([[0.3, 0.4], [1.0, 0.0]], requires_grad=requires_grad)
    negatives = torch.tensor([[0.6, 0.8], [1.0, 0.05], [0.0, 0.4], [0.0, 0.3]], requires_grad=requires_grad)
    neg_to_query = torch.tensor([0, 1, 0, 0])
    return anchor, positive, negatives, neg_to_query


def test_euclidean_distance():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    torch.testing.assert_close(euclidean_distance(a, b), torch.tensor([5.0, 1e-6]))  # sqrt(eps) at 0


def test_triplet_hand_example():
    # terms max(0, d_qp + 0.1 - d_qn): n0 0.5+0.1-1 < 0 -> 0; n2 0+0.1-0.05 = 0.05; n1 0.5+0.1-0.4 = 0.2;
    # n4 0.5+0.1-0.3 = 0.3. Mean over the 4 pairs: 0.55 / 4. (Mean of query means would be (0.5/3+0.05)/2.)
    loss_fn = TripletMarginLoss(margin=0.1)
    pairs = loss_fn.pair_losses(*_example())
    torch.testing.assert_close(pairs, torch.tensor([0.0, 0.05, 0.2, 0.3]), atol=1e-5, rtol=0)
    assert loss_fn(*_example()).item() == pytest.approx(0.55 / 4, abs=1e-5)


def test_triplet_margin_matters():
    # margin 0.316: n0 0.5+0.316-1 < 0; n2 0.266; n1 0.416; n4 0.516
    loss = TripletMarginLoss(margin=0.316)(*_example())
    assert loss.item() == pytest.approx((0.266 + 0.416 + 0.516) / 4, abs=1e-5)


def test_triplet_gradient_pushes_negative_away():
    anchor, positive, negatives, neg_to_query = _example(requires_grad=True)
    TripletMarginLoss(margin=0.1)(anchor, positive, negatives, neg_to_query).backward()
    # d/dn of -d(q, n) / 4 = -(n - q) / |n - q| / 4; n0 is inactive (zero loss), n1 - q0 = (0, 0.4)
    torch.testing.assert_close(negatives.grad[0], torch.zeros(2))
    torch.testing.assert_close(negatives.grad[2], torch.tensor([0.0, -0.25]))
    torch.testing.assert_close(negatives.grad[1], torch.tensor([0.0, -0.25]))


def test_stml_v1_hand_example():
    # terms d_qp + 0.1 - d_qn + 1.4 - d_pn:
    # n0 0.5+0.1-1+1.4-0.5 = 0.5; n2 0+0.1-0.05+1.4-0.05 = 1.4; n1 0.5+0.1-0.4+1.4-0.3 = 1.3;
    # n4 0.5+0.1-0.3+1.4-sqrt(0.1) = 1.7-sqrt(0.1)
    loss_fn = SharpenedTripletMarginLoss(margin=0.1, margin_pn=1.4, version=1)
    expected = torch.tensor([0.5, 1.4, 1.3, 1.7 - SQRT_01])
    torch.testing.assert_close(loss_fn.pair_losses(*_example()), expected, atol=1e-5, rtol=0)
    assert loss_fn(*_example()).item() == pytest.approx(expected.sum().item() / 4, abs=1e-5)


def test_stml_v2_hand_example():
    # terms max(0, 1.4 - d_pn): 0.9, 1.35, 1.1, 1.4 - sqrt(0.1)
    loss_fn = SharpenedTripletMarginLoss(version=2)
    expected = torch.tensor([0.9, 1.35, 1.1, 1.4 - SQRT_01])
    torch.testing.assert_close(loss_fn.pair_losses(*_example()), expected, atol=1e-5, rtol=0)
    assert loss_fn(*_example()).item() == pytest.approx(expected.sum().item() / 4, abs=1e-5)


def test_zero_when_satisfied():
    anchor = torch.tensor([[0.0, 0.0]])
    positive = torch.tensor([[0.0, 0.1]])
    negatives = torch.tensor([[3.0, 4.0], [0.0, 5.0]])  # d(q,n) = 5, d(p,n) >= 4.9
    n2q = torch.tensor([0, 0])
    assert TripletMarginLoss(0.1)(anchor, positive, negatives, n2q).item() == 0.0
    # sTML v1: 0.1 + 0.1 - 5 + 1.4 - 4.9 < 0 for both
    assert SharpenedTripletMarginLoss(version=1)(anchor, positive, negatives, n2q).item() == 0.0
    assert SharpenedTripletMarginLoss(version=2)(anchor, positive, negatives, n2q).item() == 0.0


STML_V2 = SharpenedTripletMarginLoss(version=2)  # max(0, m_pn - d(p, n)) does not involve the anchor


@pytest.mark.parametrize("loss_fn", [TripletMarginLoss(), SharpenedTripletMarginLoss(version=1), STML_V2])
def test_finite_gradients_at_zero_distance(loss_fn):
    # q = p and n = q = p: every distance is exactly 0, where an unguarded sqrt has an infinite derivative.
    anchor = torch.tensor([[0.5, 0.5]], requires_grad=True)
    positive = torch.tensor([[0.5, 0.5]], requires_grad=True)
    negatives = torch.tensor([[0.5, 0.5]], requires_grad=True)
    loss = loss_fn(anchor, positive, negatives, torch.tensor([0]))
    assert loss.item() > 0  # active: the margins are violated
    loss.backward()
    for t in (positive, negatives) if loss_fn is STML_V2 else (anchor, positive, negatives):
        assert t.grad is not None and torch.isfinite(t.grad).all()


def test_no_negatives_gives_zero_with_graph():
    anchor, positive, _, _ = _example(requires_grad=True)
    loss = TripletMarginLoss()(anchor, positive, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(anchor.grad, torch.zeros_like(anchor))


def test_half_precision_inputs_are_computed_in_float32():
    anchor, positive, negatives, n2q = _example()
    loss = SharpenedTripletMarginLoss()(anchor.half(), positive.half(), negatives.half(), n2q)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((0.5 + 1.4 + 1.3 + 1.7 - SQRT_01) / 4, abs=2e-3)


def test_bad_inputs_raise():
    anchor, positive, negatives, _ = _example()
    loss_fn = TripletMarginLoss()
    with pytest.raises(ValueError, match="outside"):
        loss_fn(anchor, positive, negatives, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        loss_fn(anchor, positive, negatives, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        loss_fn(anchor, positive, negatives, torch.tensor([0.0, 1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="D=2"):
        loss_fn(anchor, positive, torch.zeros(4, 3), torch.tensor([0, 1, 0, 0]))
    with pytest.raises(ValueError, match="version"):
        SharpenedTripletMarginLoss(version=3)


@pytest.mark.parametrize(
    "loss_fn",
    [TripletMarginLoss(0.5), SharpenedTripletMarginLoss(0.1, 1.4, version=1), SharpenedTripletMarginLoss(version=2)],
    ids=["triplet", "stml-v1", "stml-v2"],
)
def test_double_inputs_stay_double_and_pass_gradcheck(loss_fn):
    """float64 in, float64 out: finite differences agree with the gradient (in float32 they would not)."""
    gen = torch.Generator().manual_seed(0)
    a, p, n = (
        (0.3 * torch.randn(s, 5, generator=gen, dtype=torch.float64)).requires_grad_() for s in (3, 3, 7)
    )  # distances about 1, as between unit descriptors
    n2q = torch.tensor([0, 0, 0, 1, 2, 2, 2])
    assert loss_fn(a, p, n, n2q).dtype == torch.float64
    assert loss_fn.pair_losses(a, p, n, n2q).gt(0).any()  # some terms are active: the check is not trivial
    assert torch.autograd.gradcheck(lambda a, p, n: loss_fn(a, p, n, n2q), (a, p, n), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TripletMarginLoss(margin=-1), "margin=-1 (loss.margin): a margin must be >= 0"),
        (lambda: SharpenedTripletMarginLoss(margin=-0.5), "margin=-0.5 (loss.margin): a margin must be >= 0"),
        (lambda: SharpenedTripletMarginLoss(margin_pn=-5), "margin_pn=-5 (loss.margin_pn): a margin must be >= 0"),
    ],
)
def test_a_negative_margin_is_refused(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()
