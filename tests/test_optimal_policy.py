"""rlhf_lab.optimal_policy: optimality by random search, beta log Z, the limits, stability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_lab.divergence import categorical_kl
from rlhf_lab.optimal_policy import log_partition, optimal_policy, regularized_value

tables = st.integers(2, 6).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n),  # unnormalized reference weights
        st.lists(st.floats(-5, 5), min_size=n, max_size=n),  # rewards
        st.floats(0.05, 10.0),  # beta
    )
)


def _table(weights, rewards):
    w = torch.tensor(weights, dtype=torch.float64)
    return w / w.sum(), torch.tensor(rewards, dtype=torch.float64)


def _value_by_hand(pi, ref, r, beta):
    return sum(p * x for p, x in zip(pi, r)) - beta * sum(p * math.log(p / q) for p, q in zip(pi, ref) if p > 0)


@settings(max_examples=40, deadline=None)
@given(tables, st.integers(0, 2**31 - 1))
def test_no_other_distribution_scores_higher(table, seed):
    weights, rewards, beta = table
    ref, r = _table(weights, rewards)
    star = optimal_policy(ref, r, beta)
    best = regularized_value(star, ref, r, beta).item()
    rng = np.random.default_rng(seed)
    n = len(weights)
    candidates = [rng.dirichlet(np.ones(n)) for _ in range(200)]  # anywhere in the simplex
    for scale in (1e-1, 1e-2, 1e-3):  # and close to the optimum
        for _ in range(50):
            q = star.numpy() * np.exp(rng.normal(0, scale, n))
            candidates.append(q / q.sum())
    candidates += [np.eye(n)[i] for i in range(n)]  # the corners (deterministic policies)
    values = regularized_value(torch.tensor(np.stack(candidates)), ref, r, beta)
    assert values.max().item() <= best + 1e-12
    # the value by hand agrees, and the optimum is beta * log Z
    assert best == pytest.approx(_value_by_hand(star.tolist(), ref.tolist(), rewards, beta), rel=1e-9, abs=1e-9)
    log_z = math.log(sum(q * math.exp(x / beta) for q, x in zip(ref.tolist(), rewards)))
    assert log_partition(ref, r, beta).item() == pytest.approx(log_z, rel=1e-10, abs=1e-10)
    assert best == pytest.approx(beta * log_z, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(tables, st.integers(0, 2**31 - 1))
def test_value_gap_is_beta_times_kl_to_the_optimum(table, seed):
    # J(pi) = beta log Z - beta KL(pi || pi*): the identity behind unit 4
    weights, rewards, beta = table
    ref, r = _table(weights, rewards)
    pi = torch.tensor(np.random.default_rng(seed).dirichlet(np.ones(len(weights))))
    star = optimal_policy(ref, r, beta)
    gap = beta * log_partition(ref, r, beta) - regularized_value(pi, ref, r, beta)
    assert gap.item() == pytest.approx(beta * categorical_kl(pi.log(), star.log()).item(), rel=1e-7, abs=1e-10)


def test_formula_by_hand_and_dtypes(float_dtype):
    ref = torch.tensor([0.5, 0.3, 0.2], dtype=float_dtype)
    r = torch.tensor([1.0, 2.0, -1.0], dtype=float_dtype)
    beta = 0.7
    out = optimal_policy(ref, r, beta)
    assert out.dtype == float_dtype
    w = [q * math.exp(x / beta) for q, x in zip(ref.tolist(), r.tolist())]
    assert out.tolist() == pytest.approx([v / sum(w) for v in w], rel=1e-6)
    assert out.sum().item() == pytest.approx(1.0)


def test_limits_in_beta():
    ref = torch.tensor([0.5, 0.2, 0.2, 0.1], dtype=torch.float64)
    r = torch.tensor([0.0, 1.0, 1.0, -2.0], dtype=torch.float64)
    assert torch.allclose(optimal_policy(ref, r, 1e9), ref, atol=1e-8)  # beta -> inf: pi_ref
    # beta -> 0: the argmax; the tie between actions 1 and 2 is split in proportion to pi_ref
    assert torch.allclose(optimal_policy(ref, r, 1e-4), torch.tensor([0, 0.5, 0.5, 0], dtype=torch.float64))
    top = torch.tensor([0.0, 3.0, 1.0, -2.0], dtype=torch.float64)
    assert optimal_policy(ref, top, 1e-3).tolist() == [0.0, 1.0, 0.0, 0.0]
    # the optimal value tends to E_ref[r] (beta -> inf) and max r (beta -> 0)
    assert (1e6 * log_partition(ref, r, 1e6)).item() == pytest.approx((ref * r).sum().item(), abs=1e-5)
    assert (1e-3 * log_partition(ref, top, 1e-3)).item() == pytest.approx(3.0 + 1e-3 * math.log(0.2))


def test_stable_for_large_reward_over_beta(float_dtype):
    ref = torch.tensor([0.25, 0.25, 0.5], dtype=float_dtype)
    r = torch.tensor([1e4, 1e4 - 1, 0.0], dtype=float_dtype)
    beta = 1e-2  # r / beta = 1e6: exp would overflow
    pi = optimal_policy(ref, r, beta)
    assert torch.isfinite(pi).all() and pi[0].item() == pytest.approx(1.0)
    log_z = log_partition(ref, r, beta)
    assert log_z.item() == pytest.approx(1e6 + math.log(0.25), rel=1e-6)
    assert torch.isfinite(regularized_value(pi, ref, r, beta))


def test_array_likes_batches_and_impossible_actions():
    ref = [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]
    r = np.array([[1.0, 0.0, 100.0], [0.0, 0.0, 1.0]])
    pi = optimal_policy(ref, r, 1.0)
    assert pi.shape == (2, 3)
    assert pi[0, 2].item() == 0.0  # impossible under pi_ref stays impossible whatever its reward
    assert log_partition(ref, r, 1.0).shape == (2,)
    # a policy that uses an action pi_ref never takes has infinite KL
    assert regularized_value([1 / 3, 1 / 3, 1 / 3], ref[0], r[0], 1.0).item() == -math.inf
    # beta = 0: the value is just the expected reward
    assert regularized_value([1 / 3, 1 / 3, 1 / 3], ref[0], r[0], 0.0).item() == pytest.approx(101 / 3)
    # broadcasting one reward table against several reference tables
    assert optimal_policy(torch.tensor(ref), torch.tensor([0.0, 1.0, 2.0]), 0.5).shape == (2, 3)


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: optimal_policy([0.5, 0.5], [1.0, 0.0], 0.0), "beta"),
        (lambda: optimal_policy([0.5, 0.5], [1.0, 0.0], -1.0), "beta"),
        (lambda: log_partition([0.5, 0.5], [1.0, 0.0], 0.0), "beta"),
        (lambda: regularized_value([0.5, 0.5], [0.5, 0.5], [1.0, 0.0], -0.1), "beta"),
        (lambda: optimal_policy([0.6, 0.6], [1.0, 0.0], 1.0), "ref_probs"),
        (lambda: optimal_policy([1.5, -0.5], [1.0, 0.0], 1.0), "ref_probs"),
        (lambda: optimal_policy([0.5, 0.5], [float("nan"), 0.0], 1.0), "rewards"),
        (lambda: optimal_policy([0.5, 0.5], [float("inf"), 0.0], 1.0), "rewards"),
        (lambda: optimal_policy([0.5, 0.5], [1.0, 0.0, 2.0], 1.0), "shapes"),
        (lambda: regularized_value([0.9, 0.2], [0.5, 0.5], [1.0, 0.0], 1.0), "probs"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()
