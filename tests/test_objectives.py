"""rlhf_lab.objectives against direct per-token evaluation, hand counts and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_lab.objectives import (
    per_token_rewards,
    policy_gradient_objective,
    ppo_clip_loss,
    rlhf_loss,
    value_loss,
)

LENGTHS = [4, 1, 6]


def _data(seed=0, dtype=torch.float64, T=6, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(len(LENGTHS), T, generator=g, dtype=dtype) * 3
    other = logp + torch.randn(len(LENGTHS), T, generator=g, dtype=dtype) * scale
    adv = torch.randn(len(LENGTHS), T, generator=g, dtype=dtype)
    mask = torch.zeros(len(LENGTHS), T, dtype=dtype)
    for b, n in enumerate(LENGTHS):
        mask[b, :n] = 1
    return logp, other, adv, mask


def _real(mask):
    return [(b, t) for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t]]


# --------------------------------------------------------------------------- policy gradient
def test_policy_gradient_objective_value_and_gradient(float_dtype):
    logp, _, adv, mask = _data(dtype=float_dtype)
    logp = logp.clone().requires_grad_()
    obj = policy_gradient_objective(logp, adv, mask)
    want = sum(logp[b, t].item() * adv[b, t].item() for b, t in _real(mask)) / len(LENGTHS)
    assert obj.item() == pytest.approx(want, rel=1e-5)
    obj.backward()
    assert torch.allclose(logp.grad, adv * mask / len(LENGTHS))


# --------------------------------------------------------------------------- rlhf_loss
def test_rlhf_loss_good_day():
    logp = torch.tensor([[-0.8, -0.4]])
    ref = torch.tensor([[-1.5, -2.1]])
    # -r + beta * penalty = -1 + 0.1 * 2.4
    assert rlhf_loss(torch.tensor([1.0]), logp, ref, 0.1).item() == pytest.approx(-0.76, abs=1e-6)


def test_rlhf_loss_is_the_batch_mean_of_minus_reward_plus_beta_penalty(float_dtype):
    logp, ref, _, mask = _data(dtype=float_dtype)
    scores = torch.tensor([0.5, -1.0, 2.0], dtype=float_dtype)
    out = rlhf_loss(scores, logp, ref, 0.2, mask)
    per_seq = [-scores[b].item() + 0.2 * sum(logp[b, t].item() - ref[b, t].item() for t in range(n))
               for b, n in enumerate(LENGTHS)]
    assert out.item() == pytest.approx(sum(per_seq) / 3, rel=1e-5)


# --------------------------------------------------------------------------- per_token_rewards
@pytest.mark.parametrize("kl", ["k1", "k3"])
def test_per_token_rewards_sum_and_placement(kl, float_dtype):
    logp, ref, _, mask = _data(dtype=float_dtype)
    scores = torch.tensor([0.5, -1.0, 2.0], dtype=float_dtype)
    beta = 0.1
    rewards = per_token_rewards(scores, logp, ref, beta, mask, kl=kl)
    for b, n in enumerate(LENGTHS):
        for t in range(logp.shape[1]):
            if t >= n:
                assert rewards[b, t].item() == 0
                continue
            log_r = ref[b, t].item() - logp[b, t].item()
            k = -log_r if kl == "k1" else math.expm1(log_r) - log_r
            want = -beta * k + (scores[b].item() if t == n - 1 else 0.0)
            assert rewards[b, t].item() == pytest.approx(want, rel=1e-5, abs=1e-6)
        if kl == "k1":  # a response's rewards add up to r - beta * Penalty
            penalty = sum(logp[b, t].item() - ref[b, t].item() for t in range(n))
            assert rewards[b].sum().item() == pytest.approx(scores[b].item() - beta * penalty, rel=1e-5)


def test_per_token_rewards_without_mask_puts_the_score_last_and_handles_holes():
    z = torch.zeros(2, 3)
    out = per_token_rewards(torch.tensor([1.0, 2.0]), z, z, 0.5)
    assert out.tolist() == [[0, 0, 1.0], [0, 0, 2.0]]
    hole = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    out = per_token_rewards(torch.tensor([1.0, 2.0]), torch.zeros(2, 4), torch.zeros(2, 4), 0.5, hole)
    assert out.tolist() == [[0, 0, 1.0, 0], [0, 2.0, 0, 0]]


# --------------------------------------------------------------------------- ppo_clip_loss
def _direct_ppo(logp, old, adv, eps, mask):
    """CleanRL/paper form, token by token: -min(rho A, clip(rho) A), and a count of clipped tokens."""
    losses, clipped, k3, k1 = [], 0, [], []
    for b, t in _real(mask):
        lr = logp[b, t].item() - old[b, t].item()
        rho, a = math.exp(lr), adv[b, t].item()
        losses.append(-min(rho * a, min(max(rho, 1 - eps), 1 + eps) * a))
        clipped += (a > 0 and rho > 1 + eps) or (a < 0 and rho < 1 - eps)
        k3.append(rho - 1 - lr)
        k1.append(-lr)
    n = len(losses)
    return sum(losses) / n, clipped / n, sum(k3) / n, sum(k1) / n


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_ppo_clip_loss_against_direct_evaluation(eps, float_dtype):
    logp, old, adv, mask = _data(seed=1, dtype=float_dtype)
    loss, stats = ppo_clip_loss(logp, old, adv, eps, mask)
    want_loss, want_frac, want_kl, want_k1 = _direct_ppo(logp, old, adv, eps, mask)
    assert loss.item() == pytest.approx(want_loss, rel=1e-5)
    assert stats["clipfrac"].item() == pytest.approx(want_frac)
    assert 0 < want_frac < 1  # the data exercise both branches
    assert stats["approx_kl"].item() == pytest.approx(want_kl, rel=1e-5)
    assert stats["approx_kl_k1"].item() == pytest.approx(want_k1, rel=1e-5)
    ratios = [math.exp(logp[b, t].item() - old[b, t].item()) for b, t in _real(mask)]
    assert stats["ratio_max"].item() == pytest.approx(max(ratios), rel=1e-5)
    assert stats["ratio_min"].item() == pytest.approx(min(ratios), rel=1e-5)
    assert stats["ratio_mean"].item() == pytest.approx(sum(ratios) / len(ratios), rel=1e-5)
    assert all(v.dim() == 0 and not v.requires_grad for v in stats.values())


def test_ppo_gradient_at_rho_one_is_the_policy_gradient():
    logp, _, adv, mask = _data(seed=2)
    old = logp.clone()
    theta = logp.clone().requires_grad_()
    loss, stats = ppo_clip_loss(theta, old, adv, 0.2, mask)
    g_ppo, = torch.autograd.grad(loss, theta)
    theta2 = logp.clone().requires_grad_()
    g_pg, = torch.autograd.grad(policy_gradient_objective(theta2, adv, mask), theta2)
    # PPO averages over tokens, the PG objective sums per sequence and averages over sequences
    n_tokens, batch = mask.sum().item(), mask.shape[0]
    assert torch.allclose(g_ppo, -g_pg * batch / n_tokens)
    assert stats["clipfrac"].item() == 0 and stats["approx_kl"].item() == 0


def test_ppo_gradient_vanishes_exactly_where_clipped_and_matches_finite_differences():
    logp, old, adv, mask = _data(seed=1)
    theta = logp.clone().requires_grad_()
    loss, _ = ppo_clip_loss(theta, old, adv, 0.2, mask)
    g, = torch.autograd.grad(loss, theta)
    h = 1e-6
    for b, t in _real(mask):
        rho, a = math.exp(logp[b, t].item() - old[b, t].item()), adv[b, t].item()
        clipped = (a > 0 and rho > 1.2) or (a < 0 and rho < 0.8)
        if clipped:
            assert g[b, t].item() == 0
        bumped_up, bumped_down = logp.clone(), logp.clone()
        bumped_up[b, t] += h
        bumped_down[b, t] -= h
        fd = (ppo_clip_loss(bumped_up, old, adv, 0.2, mask)[0] - ppo_clip_loss(bumped_down, old, adv, 0.2, mask)[0]) / (2 * h)
        assert g[b, t].item() == pytest.approx(fd.item(), abs=1e-6)


# --------------------------------------------------------------------------- value_loss
def test_value_loss_with_and_without_clipping(float_dtype):
    g = torch.Generator().manual_seed(3)
    v, old, ret = (torch.randn(3, 6, generator=g, dtype=float_dtype) for _ in range(3))
    _, _, _, mask = _data(dtype=float_dtype)
    plain, plain_stats = value_loss(v, old, ret, mask=mask)
    want = 0.5 * sum((v[b, t].item() - ret[b, t].item()) ** 2 for b, t in _real(mask)) / len(_real(mask))
    assert plain.item() == pytest.approx(want, rel=1e-5)
    eps = 0.2
    clipped, stats = value_loss(v, old, ret, clip_eps=eps, mask=mask)
    terms, n_clipped = [], 0
    for b, t in _real(mask):
        vb, ob, rb = v[b, t].item(), old[b, t].item(), ret[b, t].item()
        v_clip = ob + min(max(vb - ob, -eps), eps)
        terms.append(0.5 * max((vb - rb) ** 2, (v_clip - rb) ** 2))
        n_clipped += (v_clip - rb) ** 2 > (vb - rb) ** 2  # TRL's vf_clipfrac: the clipped error is the larger
    assert clipped.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert clipped.item() >= plain.item()
    assert stats["clipfrac"].item() == pytest.approx(n_clipped / len(terms))
    assert 0 < n_clipped < len(terms)  # the data exercise both branches
    assert plain_stats["clipfrac"].item() == 0
    assert all(x.dim() == 0 and not x.requires_grad for x in stats.values())
    # a clip range wider than every change is no clipping at all
    assert value_loss(v, old, ret, clip_eps=100.0, mask=mask)[0].item() == pytest.approx(plain.item(), rel=1e-6)


def test_value_loss_gradient_stops_where_the_clipped_term_wins():
    v = torch.tensor([[2.0, 0.1]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0]])
    ret = torch.tensor([[-1.0, 1.0]])
    loss, _ = value_loss(v, old, ret, clip_eps=0.5)
    loss.backward()
    # token 0: v moved +2 away from R = -1; v_clip = 0.5, (0.5+1)^2 < (2+1)^2: the unclipped term wins
    # token 1: v moved +0.1, inside the clip range: both terms agree; gradient (v - R)/n either way
    assert v.grad[0].tolist() == pytest.approx([(2.0 + 1.0) / 2, (0.1 - 1.0) / 2])
    v2 = torch.tensor([[1.5]], requires_grad=True)
    # moved +1.5 towards R=2: clipped 0.5 is farther, (0.5-2)^2 > (1.5-2)^2, clipped term wins: zero gradient
    value_loss(v2, torch.zeros(1, 1), torch.full((1, 1), 2.0), clip_eps=0.5)[0].backward()
    assert v2.grad.item() == 0


def test_unvalidated_losses_read_no_tensor_value_and_equal_the_validated_ones(host_syncs):
    """A training loop calls both losses with ``validate=False``: no host sync at all. The
    validated path (for direct callers) reads values once per check: 5 in ppo_clip_loss (mask is
    0/1, mask not empty, three inputs finite) and 5 in value_loss, against 27 for the pair before
    the checks moved to the boundary (every masked mean re-checked its mask)."""
    logp, old, adv, mask = _data(seed=1)
    g = torch.Generator().manual_seed(3)
    v, v_old, ret = (torch.randn(3, 6, generator=g, dtype=logp.dtype) for _ in range(3))
    results, counts = [], []
    for validate in (False, True):
        with host_syncs() as reads:
            pg = ppo_clip_loss(logp, old, adv, 0.2, mask, validate=validate)
            vf = value_loss(v, v_old, ret, 0.2, mask, validate=validate)
        counts.append(reads.count)
        results.append((pg, vf))
    assert counts == [0, 10]
    (pg_fast, vf_fast), (pg_checked, vf_checked) = results
    for fast, checked in ((pg_fast, pg_checked), (vf_fast, vf_checked)):
        assert torch.equal(fast[0], checked[0])
        assert fast[1].keys() == checked[1].keys()
        assert all(torch.equal(fast[1][k], checked[1][k]) for k in fast[1])


@settings(max_examples=50, deadline=None)
@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(0.01, 0.5), st.floats(-3, 3))
def test_ppo_loss_is_never_below_the_unclipped_surrogate(lr, a, eps, junk):
    logp = torch.tensor([[lr, junk]], dtype=torch.float64)
    old = torch.zeros(1, 2, dtype=torch.float64)
    adv = torch.tensor([[a, junk]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    loss, _ = ppo_clip_loss(logp, old, adv, eps, mask)
    assert loss.item() >= -a * math.exp(lr) - 1e-12  # pessimistic bound: max of the two losses


# --------------------------------------------------------------------------- padding and errors
def test_padding_changes_nothing():
    logp, old, adv, mask = _data(seed=4)
    dirty = [x.masked_fill(mask == 0, float("nan")) for x in (logp, old, adv)]
    a = ppo_clip_loss(logp, old, adv, 0.2, mask)
    b = ppo_clip_loss(*dirty, 0.2, mask)
    assert a[0].item() == b[0].item() and all(a[1][k].item() == b[1][k].item() for k in a[1])
    scores = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.equal(per_token_rewards(scores, logp, old, 0.1, mask), per_token_rewards(scores, dirty[0], dirty[1], 0.1, mask))
    assert value_loss(logp, old, adv, 0.2, mask)[0].item() == value_loss(*dirty, 0.2, mask)[0].item()
    assert policy_gradient_objective(logp, adv, mask).item() == policy_gradient_objective(dirty[0], dirty[2], mask).item()


Z = torch.zeros(2, 3)


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: ppo_clip_loss(Z, Z, Z, 0.0), "clip_eps"),
        (lambda: ppo_clip_loss(Z, Z, Z, -0.1), "clip_eps"),
        (lambda: ppo_clip_loss(Z, Z, torch.zeros(2, 4), 0.2), "advantages"),
        (lambda: ppo_clip_loss(Z, Z, Z, 0.2, torch.zeros(2, 3)), "mask"),
        (lambda: ppo_clip_loss(Z, torch.full((2, 3), float("nan")), Z, 0.2), "old_logp"),
        (lambda: value_loss(Z, Z, Z, clip_eps=0.0), "clip_eps"),
        (lambda: value_loss(Z, torch.zeros(3, 2), Z), "old_values"),
        (lambda: value_loss(Z, Z, Z, mask=torch.zeros(2, 3)), "mask"),
        (lambda: rlhf_loss(torch.zeros(2), Z, Z, -0.1), "beta"),
        (lambda: rlhf_loss(torch.tensor([0.0, float("nan")]), Z, Z, 0.1), "scores"),
        (lambda: rlhf_loss(torch.zeros(3), Z, Z, 0.1), "scores"),
        (lambda: per_token_rewards(torch.tensor([float("inf"), 0.0]), Z, Z, 0.1), "scores"),
        (lambda: per_token_rewards(torch.zeros(2), Z, Z, -1.0), "beta"),
        (lambda: per_token_rewards(torch.zeros(2), Z, Z, 0.1, torch.tensor([[1.0, 0, 0], [0, 0, 0]])), "mask"),
        (lambda: per_token_rewards(torch.zeros(2), Z, Z, 0.1, kl="k2"), "kl"),
        (lambda: per_token_rewards(torch.zeros(2), Z, torch.zeros(2, 2), 0.1), "ref_logp"),
        (lambda: policy_gradient_objective(Z, torch.zeros(2)), "advantages"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()
