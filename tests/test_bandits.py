"""Tests of rlhf_lab.course.bandits against independent computations (autograd, enumeration, loops)."""

import itertools

import pytest
import torch

from rlhf_lab.advantages import discounted_returns
from rlhf_lab.course.bandits import (
    EpisodicMDP,
    episode_gradients,
    gradient_variance,
    softmax_pg_gradient,
    softmax_score,
)
from rlhf_lab.objectives import a2c_loss


def test_softmax_score_matches_autograd():
    logits = torch.tensor([0.3, -1.2, 0.7, 0.1], dtype=torch.float64, requires_grad=True)
    for a in range(4):
        (g,) = torch.autograd.grad(torch.log_softmax(logits, -1)[a], logits)
        assert torch.allclose(softmax_score(logits.detach(), a), g)


def test_softmax_pg_gradient_is_autograd_of_expected_advantage():
    torch.manual_seed(0)
    for _ in range(5):
        logits = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
        adv = torch.randn(2, 5, dtype=torch.float64)
        (g,) = torch.autograd.grad((torch.softmax(logits, -1) * adv).sum(), logits)
        assert torch.allclose(softmax_pg_gradient(logits.detach(), adv), g)


def test_softmax_pg_gradient_docstring_example_and_zero_advantage():
    logits = torch.log(torch.tensor([0.2, 0.4, 0.4]))
    g = softmax_pg_gradient(logits, torch.tensor([2.0, -1.0, 0.0]))
    assert torch.allclose(g, torch.tensor([0.4, -0.4, 0.0]), atol=1e-6)


def test_softmax_inputs_are_validated():
    with pytest.raises(ValueError, match="advantages"):
        softmax_pg_gradient(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="action"):
        softmax_score(torch.zeros(3), 3)
    with pytest.raises(ValueError, match="logits"):
        softmax_score(torch.zeros(3, dtype=torch.long), 0)


def _enumerated_return(mdp, logits):
    """J by summing over every trajectory (no dynamic programming)."""
    probs = torch.softmax(logits, -1).double()
    P, R, mu = mdp.transitions.double(), mdp.rewards.double(), mdp.initial.double()
    S, A, H = mdp.n_states, mdp.n_actions, mdp.horizon
    total = 0.0
    for s0 in range(S):
        for acts in itertools.product(range(A), repeat=H):
            for nxt in itertools.product(range(S), repeat=H - 1):
                states = (s0,) + nxt
                p, ret = mu[s0], 0.0
                for t in range(H):
                    p = p * probs[states[t], acts[t]]
                    ret = ret + R[states[t], acts[t]]
                    if t + 1 < H:
                        p = p * P[states[t], acts[t], states[t + 1]]
                total = total + p * ret
    return total


def test_expected_return_matches_enumeration():
    mdp = EpisodicMDP.random(n_states=2, n_actions=2, horizon=3, reward_offset=1.0, seed=3)
    logits = torch.tensor([[0.5, -0.2], [1.0, 0.3]], dtype=torch.float64)
    assert abs(float(mdp.expected_return(logits)) - float(_enumerated_return(mdp, logits))) < 1e-5


def test_rollout_shapes_and_mean_return():
    mdp = EpisodicMDP.random(n_states=3, n_actions=2, horizon=4, reward_offset=2.0, seed=1)
    logits = torch.tensor([[0.0, 1.0], [0.5, 0.0], [-1.0, 0.0]])
    ro = mdp.rollout(logits, 20000, torch.Generator().manual_seed(0))
    assert ro.states.shape == ro.actions.shape == ro.rewards.shape == (20000, 4)
    mc = ro.rewards.double().sum(1).mean()
    assert abs(float(mc) - float(mdp.expected_return(logits.double()))) < 0.02


def test_episode_gradients_match_autograd_per_episode():
    mdp = EpisodicMDP.random(n_states=3, n_actions=3, horizon=5, seed=2)
    logits = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ro = mdp.rollout(logits, 7, torch.Generator().manual_seed(0))
    w = discounted_returns(ro.rewards.double(), 1.0)
    grads = episode_gradients(logits, ro.states, ro.actions, w)
    for n in range(7):
        th = logits.clone().requires_grad_(True)
        obj = (torch.log_softmax(th, -1)[ro.states[n], ro.actions[n]] * w[n]).sum()
        (g,) = torch.autograd.grad(obj, th)
        assert torch.allclose(grads[n], g)


def test_policy_gradient_estimators_are_unbiased_and_baseline_cuts_variance():
    mdp = EpisodicMDP.random(n_states=3, n_actions=3, horizon=4, reward_offset=5.0, seed=0)
    logits = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    (true_grad,) = torch.autograd.grad(mdp.expected_return(logits), logits)
    ro = mdp.rollout(logits.detach(), 40000, torch.Generator().manual_seed(0))
    G = discounted_returns(ro.rewards.double(), 1.0)
    V, _ = mdp.q_values(logits.detach())
    base = V[torch.arange(4).expand(40000, -1), ro.states]
    g_plain = episode_gradients(logits, ro.states, ro.actions, G)
    g_base = episode_gradients(logits, ro.states, ro.actions, G - base)
    for g in (g_plain, g_base):
        se = g.std(0) / 40000 ** 0.5
        assert bool(((g.mean(0) - true_grad).abs() <= 5 * se + 1e-9).all())
    assert gradient_variance(g_base) < 0.1 * gradient_variance(g_plain)


def test_gradient_variance_is_trace_of_covariance():
    g = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 1.0]])
    expected = torch.var(g[:, 0]) + torch.var(g[:, 1])
    assert torch.allclose(gradient_variance(g), expected)


def test_a2c_loss_by_hand_and_masking():
    logp = torch.tensor([[-0.5, -1.0, -2.0], [-0.2, -0.3, -9.0]], requires_grad=True)
    values = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.1, 7.0]], requires_grad=True)
    returns = torch.tensor([[2.0, 1.0, 0.5], [1.0, 0.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss, stats = a2c_loss(logp, values, returns, mask, vf_coef=0.5)
    adv = [[1.0, 0.5, 0.5], [0.8, -0.1]]
    lp = [[-0.5, -1.0, -2.0], [-0.2, -0.3]]
    pol = -(sum(a * b for a, b in zip(lp[0], adv[0])) + sum(a * b for a, b in zip(lp[1], adv[1]))) / 2
    sq = [x * x for x in adv[0] + adv[1]]
    val = 0.5 * sum(sq) / 5
    assert abs(float(loss.detach()) - (pol + 0.5 * val)) < 1e-6
    assert abs(stats["loss/policy"] - pol) < 1e-6
    loss.backward()
    # the advantage is held constant: the policy part does not push gradient into the values
    expected_vgrad = 0.5 * torch.tensor([[-1.0, -0.5, -0.5], [-0.8, 0.1, 0.0]]) / 5
    assert torch.allclose(values.grad, expected_vgrad, atol=1e-6)
    assert logp.grad[1, 2] == 0


def test_a2c_loss_validates():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="values"):
        a2c_loss(x, torch.zeros(2, 2), x)
    with pytest.raises(ValueError, match="vf_coef"):
        a2c_loss(x, x, x, vf_coef=-1)
    with pytest.raises(ValueError, match="returns"):
        a2c_loss(x, x, torch.full((2, 3), float("nan")))


def test_mdp_validates():
    with pytest.raises(ValueError, match="transitions"):
        EpisodicMDP(torch.ones(2, 2, 2), torch.zeros(2, 2), torch.tensor([0.5, 0.5]), 3)
    mdp = EpisodicMDP.random(n_states=2, n_actions=2, horizon=2)
    with pytest.raises(ValueError, match="logits"):
        mdp.expected_return(torch.zeros(3, 2))
