"""rlhf_lab.divergence against independent computations: hand sums, enumeration, Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_lab.divergence import categorical_kl, kl_estimate, sequence_log_ratio

finite = st.floats(-20, 20, allow_nan=False, allow_infinity=False)


# --------------------------------------------------------------------------- sequence_log_ratio
def test_good_day_example_gives_2_4(float_dtype):
    # the course card: 'Good' -0.8 vs ref -1.5, 'day' -0.4 vs ref -2.1 -> 0.7 + 1.7 = 2.4
    logp = torch.tensor([[-0.8, -0.4]], dtype=float_dtype)
    ref = torch.tensor([[-1.5, -2.1]], dtype=float_dtype)
    out = sequence_log_ratio(logp, ref)
    assert out.shape == (1,) and out.dtype == float_dtype
    assert out.item() == pytest.approx(2.4, abs=1e-6)


def test_sequence_log_ratio_is_the_sum_of_token_log_ratios(device, float_dtype):
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(4, 7, generator=g, dtype=float_dtype) * 5
    ref = -torch.rand(4, 7, generator=g, dtype=float_dtype) * 5
    lengths = [7, 3, 1, 5]
    mask = torch.zeros(4, 7, dtype=float_dtype)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    out = sequence_log_ratio(logp.to(device), ref.to(device), mask.to(device)).cpu()
    for b, n in enumerate(lengths):  # a plain Python sum over the real tokens
        expected = sum(float(logp[b, t]) - float(ref[b, t]) for t in range(n))
        assert out[b].item() == pytest.approx(expected, abs=1e-5)


def test_padding_changes_nothing_even_nan_and_its_gradient_stays_clean():
    logp = torch.tensor([[-1.0, -2.0, float("nan")], [-0.5, float("inf"), -float("inf")]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, 3.0], [-0.1, float("nan"), 7.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out = sequence_log_ratio(logp, ref, mask)
    assert torch.allclose(out, torch.tensor([0.5 - 1.0, -0.4]))
    out.sum().backward()
    assert torch.equal(logp.grad, mask)
    for kind in ("k1", "k2", "k3"):
        est = kl_estimate(logp, ref, kind, mask)
        assert torch.isfinite(est).all() and (est[mask == 0] == 0).all()
        g, = torch.autograd.grad(est.sum(), logp)
        assert torch.isfinite(g).all() and (g[mask == 0] == 0).all()


# --------------------------------------------------------------------------- kl_estimate
def test_estimators_match_their_definitions_elementwise(float_dtype):
    logp = torch.tensor([[-0.8, -0.4, -3.0]], dtype=float_dtype)
    ref = torch.tensor([[-1.5, -2.1, -0.2]], dtype=float_dtype)
    for t in range(3):
        log_r = float(ref[0, t]) - float(logp[0, t])
        want = {"k1": -log_r, "k2": 0.5 * log_r**2, "k3": math.exp(log_r) - 1 - log_r}
        for kind, value in want.items():
            assert kl_estimate(logp, ref, kind)[0, t].item() == pytest.approx(value, rel=1e-6)


def _categorical(n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, generator=g, dtype=dtype) * 1.5, 0)


@pytest.mark.parametrize("seed", range(5))
def test_k1_and_k3_are_exactly_unbiased_k2_is_not(seed):
    # expectation under pi by enumerating every action (no sampling): sum_a pi(a) k(a)
    pi, ref = _categorical(6, seed), _categorical(6, seed + 100)
    true_kl = sum(float(pi[a]) * math.log(float(pi[a]) / float(ref[a])) for a in range(6))
    logp, ref_logp = pi.log()[None], ref.log()[None]
    expect = {k: float((pi * kl_estimate(logp, ref_logp, k)[0]).sum()) for k in ("k1", "k2", "k3")}
    assert expect["k1"] == pytest.approx(true_kl, rel=1e-10)
    assert expect["k3"] == pytest.approx(true_kl, rel=1e-10)
    assert abs(expect["k2"] - true_kl) > 1e-4


def _gaussian_samples(mu_ref, n=200_000, seed=0):
    """Samples from the policy N(0, 1) and log-densities under it and under the reference N(mu_ref, 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, generator=g, dtype=torch.float64)
    pol, ref = torch.distributions.Normal(0.0, 1.0), torch.distributions.Normal(mu_ref, 1.0)
    return pol.log_prob(x), ref.log_prob(x), mu_ref**2 / 2  # KL(N(0,1) || N(mu,1)) = mu^2 / 2


@pytest.mark.parametrize("mu_ref", [0.1, 1.0])
def test_monte_carlo_bias_and_spread_on_gaussians(mu_ref):
    logp, ref_logp, true_kl = _gaussian_samples(mu_ref)
    n = logp.shape[1]
    stats = {}
    for kind in ("k1", "k2", "k3"):
        k = kl_estimate(logp, ref_logp, kind)[0]
        stats[kind] = (k.mean().item(), k.std().item())
    for kind in ("k1", "k3"):  # unbiased: within 4 standard errors of the truth
        mean, std = stats[kind]
        assert abs(mean - true_kl) < 4 * std / math.sqrt(n)
    # k2: log r = mu x - mu^2/2 with x ~ N(0,1), so E[k2] = (mu^2 + mu^4/4)/2 = KL + mu^4/8
    mean2, std2 = stats["k2"]
    assert mean2 == pytest.approx(true_kl + mu_ref**4 / 8, abs=4 * std2 / math.sqrt(n))
    if mu_ref == 1.0:
        assert mean2 - true_kl > 10 * std2 / math.sqrt(n)  # the bias is plainly visible
    else:  # close policies: k2 and k3 have far less spread than k1
        assert stats["k3"][1] < stats["k1"][1] / 5
        assert stats["k2"][1] < stats["k1"][1] / 5


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=8))
def test_k3_and_k2_are_nonnegative_k1_can_be_negative(pairs):
    logp = torch.tensor([[a for a, _ in pairs]], dtype=torch.float64)
    ref = torch.tensor([[b for _, b in pairs]], dtype=torch.float64)
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    assert (kl_estimate(logp, ref, "k2") >= 0).all()
    assert torch.allclose(kl_estimate(logp, ref, "k1"), logp - ref)


def test_k3_is_accurate_for_nearly_equal_policies():
    logp = torch.tensor([[-1.0]], dtype=torch.float32)
    ref = logp + 1e-4
    # (r - 1) - log r ~ (log r)^2 / 2 for small log r
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5e-8, rel=1e-2)


# --------------------------------------------------------------------------- categorical_kl
def _kl_by_enumeration(p_logits, q_logits):
    zp = [math.exp(v) for v in p_logits]
    zq = [math.exp(v) for v in q_logits]
    sp, sq = sum(zp), sum(zq)
    return sum((a / sp) * math.log((a / sp) / (b / sq)) for a, b in zip(zp, zq) if a > 0)


def test_categorical_kl_against_enumeration(float_dtype, device):
    g = torch.Generator().manual_seed(1)
    p = torch.randn(3, 4, 5, generator=g, dtype=float_dtype) * 2
    q = torch.randn(3, 4, 5, generator=g, dtype=float_dtype) * 2
    out = categorical_kl(p.to(device), q.to(device)).cpu()
    assert out.shape == (3, 4) and out.dtype == float_dtype
    for i in range(3):
        for j in range(4):
            want = _kl_by_enumeration(p[i, j].tolist(), q[i, j].tolist())
            assert out[i, j].item() == pytest.approx(want, rel=1e-5, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 6).flatmap(lambda n: st.tuples(st.lists(finite, min_size=n, max_size=n),
                                                     st.lists(finite, min_size=n, max_size=n))))
def test_categorical_kl_nonnegative_and_zero_only_at_equality(pq):
    p, q = (torch.tensor(v, dtype=torch.float64) for v in pq)
    kl = categorical_kl(p, q).item()
    assert kl >= 0
    assert categorical_kl(p, p + 3.0).item() == pytest.approx(0.0, abs=1e-12)  # same distribution
    # Pinsker: KL >= 2 TV^2, so KL > 0 as soon as the distributions differ (beyond rounding)
    tv = 0.5 * (torch.softmax(p, 0) - torch.softmax(q, 0)).abs().sum().item()
    assert kl >= 2 * tv**2 - 1e-12
    if tv > 1e-6:
        assert kl > 0
    assert kl == pytest.approx(_kl_by_enumeration(p.tolist(), q.tolist()), rel=1e-6, abs=1e-9)


def test_categorical_kl_support_and_large_logits():
    inf = float("inf")
    # p puts no mass on the last action: that term counts 0
    assert categorical_kl(torch.tensor([0.0, 0.0, -inf]), torch.tensor([0.0, 0.0, 0.0])).item() == pytest.approx(
        math.log(3 / 2)
    )
    # q puts no mass where p does: infinite
    assert categorical_kl(torch.tensor([0.0, 0.0]), torch.tensor([0.0, -inf])).item() == inf
    big = torch.tensor([1e4, 0.0, -1e4])
    assert categorical_kl(big, big - 5).item() == 0.0
    assert torch.isfinite(categorical_kl(big, big.flip(0)))


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: sequence_log_ratio(torch.zeros(2, 3), torch.zeros(2, 4)), "ref_logp"),
        (lambda: sequence_log_ratio(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 2)), "mask"),
        (lambda: sequence_log_ratio(torch.tensor([[float("nan")]]), torch.zeros(1, 1)), "logp"),
        (lambda: kl_estimate(torch.zeros(1, 1), torch.tensor([[float("inf")]])), "ref_logp"),
        (lambda: kl_estimate(torch.zeros(1, 1), torch.zeros(1, 1), kind="k4"), "kind"),
        (lambda: categorical_kl(torch.zeros(2, 3), torch.zeros(2, 4)), "q_logits"),
        (lambda: categorical_kl(torch.tensor([float("nan"), 0.0]), torch.zeros(2)), "p_logits"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()
