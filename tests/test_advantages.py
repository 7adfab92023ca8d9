"""rlhf_lab.advantages against plain Python loops over each row's real tokens."""

from __future__ import annotations

import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_lab.advantages import discounted_returns, gae, whiten


def _loop_gae(r, v, gamma, lam):
    """The textbook recursion on one unpadded row (lists of floats)."""
    n = len(r)
    adv = [0.0] * n
    running = 0.0
    for t in reversed(range(n)):
        next_v = v[t + 1] if t + 1 < n else 0.0
        delta = r[t] + gamma * next_v - v[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv


def _loop_returns(r, gamma):
    return [sum(gamma ** (k - t) * r[k] for k in range(t, len(r))) for t in range(len(r))]


def _padded_batch(lengths, T, seed, dtype=torch.float64, garbage=float("nan")):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(len(lengths), T, generator=g, dtype=dtype)
    values = torch.randn(len(lengths), T, generator=g, dtype=dtype)
    mask = torch.zeros(len(lengths), T, dtype=dtype)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    rewards[mask == 0] = garbage  # whatever sits in the padding must not matter
    values[mask == 0] = -garbage
    return rewards, values, mask


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 8), min_size=1, max_size=4),
    gamma=st.floats(0, 1),
    lam=st.floats(0, 1),
    seed=st.integers(0, 10_000),
)
def test_gae_against_a_plain_reversed_loop_with_variable_lengths(lengths, gamma, lam, seed):
    T = max(lengths) + 1
    rewards, values, mask = _padded_batch(lengths, T, seed)
    adv, ret = gae(rewards, values, gamma, lam, mask)
    for b, n in enumerate(lengths):
        r, v = rewards[b, :n].tolist(), values[b, :n].tolist()
        want = _loop_gae(r, v, gamma, lam)
        assert adv[b, :n].tolist() == pytest.approx(want, rel=1e-9, abs=1e-9)
        assert ret[b, :n].tolist() == pytest.approx([a + x for a, x in zip(want, v)], rel=1e-9, abs=1e-9)
        assert (adv[b, n:] == 0).all() and (ret[b, n:] == 0).all()


def test_gae_lambda_one_is_discounted_return_minus_value(float_dtype, device):
    rewards, values, mask = _padded_batch([5, 2, 7], 7, seed=3, dtype=float_dtype, garbage=0.0)
    rewards, values, mask = rewards.to(device), values.to(device), mask.to(device)
    adv, _ = gae(rewards, values, 0.9, 1.0, mask)
    G = discounted_returns(rewards, 0.9, mask)
    assert adv.dtype == float_dtype and adv.device.type == device.type
    assert torch.allclose(adv, (G - values) * mask, atol=1e-5)
    for b, n in enumerate([5, 2, 7]):
        want = _loop_returns(rewards[b, :n].tolist(), 0.9)
        assert G[b, :n].tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_gae_lambda_zero_is_the_one_step_td_error():
    rewards, values, mask = _padded_batch([4, 1, 6], 6, seed=4)
    adv, _ = gae(rewards, values, 0.95, 0.0, mask)
    for b, n in enumerate([4, 1, 6]):
        for t in range(n):
            next_v = values[b, t + 1].item() if t + 1 < n else 0.0  # bootstrap 0 after the last token
            delta = rewards[b, t].item() + 0.95 * next_v - values[b, t].item()
            assert adv[b, t].item() == pytest.approx(delta, rel=1e-12)


def test_padding_changes_nothing_and_holes_are_skipped():
    rewards, values, mask = _padded_batch([3, 5], 6, seed=5)
    adv, ret = gae(rewards, values, 0.99, 0.95, mask)
    for b, n in enumerate([3, 5]):  # same as the row alone, without any padding
        a1, r1 = gae(rewards[b : b + 1, :n], values[b : b + 1, :n], 0.99, 0.95)
        assert torch.allclose(adv[b, :n], a1[0]) and torch.allclose(ret[b, :n], r1[0])
    # a mask with a hole: the recursion runs over the real tokens only
    r = torch.tensor([[1.0, 99.0, 2.0, 3.0]], dtype=torch.float64)
    v = torch.tensor([[0.5, -99.0, 0.1, 0.2]], dtype=torch.float64)
    m = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    adv, _ = gae(r, v, 0.9, 0.8, m)
    want = _loop_gae([1.0, 2.0, 3.0], [0.5, 0.1, 0.2], 0.9, 0.8)
    assert [adv[0, 0].item(), adv[0, 2].item(), adv[0, 3].item()] == pytest.approx(want)
    assert adv[0, 1].item() == 0


def test_discounted_returns_without_mask_and_gamma_limits():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    assert discounted_returns(r, 1.0).tolist() == [[6.0, 5.0, 3.0]]
    assert discounted_returns(r, 0.0).tolist() == [[1.0, 2.0, 3.0]]
    assert discounted_returns(r, 0.5).tolist() == [[1 + 1 + 0.75, 2 + 1.5, 3.0]]


# --------------------------------------------------------------------------- whiten
def test_whiten_against_statistics_module(float_dtype):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 5, generator=g, dtype=float_dtype) * 4 + 2
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=float_dtype)
    x_pad = x.masked_fill(mask == 0, float("nan"))
    real = [x[b, t].item() for b in range(3) for t in range(5) if mask[b, t]]
    mu, sd = statistics.fmean(real), statistics.stdev(real)  # stdev: Bessel-corrected
    out = whiten(x_pad, mask)
    keep = whiten(x_pad, mask, shift_mean=False)
    assert out.dtype == float_dtype
    for b in range(3):
        for t in range(5):
            if mask[b, t]:
                assert out[b, t].item() == pytest.approx((x[b, t].item() - mu) / sd, rel=1e-4, abs=1e-5)
                assert keep[b, t].item() == pytest.approx((x[b, t].item() - mu) / sd + mu, rel=1e-4, abs=1e-5)
            else:
                assert out[b, t].item() == 0 and keep[b, t].item() == 0
    whitened = [out[b, t].item() for b in range(3) for t in range(5) if mask[b, t]]
    assert statistics.fmean(whitened) == pytest.approx(0, abs=1e-5)
    assert statistics.stdev(whitened) == pytest.approx(1, rel=1e-4)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: gae(torch.zeros(2, 3), torch.zeros(2, 4), 0.9, 0.9), "values"),
        (lambda: gae(torch.zeros(2, 3), torch.zeros(2, 3), 1.5, 0.9), "gamma"),
        (lambda: gae(torch.zeros(2, 3), torch.zeros(2, 3), 0.9, -0.1), "lam"),
        (lambda: gae(torch.tensor([[float("nan")]]), torch.zeros(1, 1), 0.9, 0.9), "rewards"),
        (lambda: gae(torch.zeros(1, 1), torch.tensor([[float("inf")]]), 0.9, 0.9), "values"),
        (lambda: gae(torch.zeros(2, 3), torch.zeros(2, 3), 0.9, 0.9, torch.ones(3, 2)), "mask"),
        (lambda: discounted_returns(torch.zeros(3), 0.9), "rewards"),
        (lambda: discounted_returns(torch.zeros(2, 2), float("nan")), "gamma"),
        (lambda: whiten(torch.ones(2, 3), torch.zeros(2, 3)), "mask"),
        (lambda: whiten(torch.ones(2, 3), torch.tensor([[1.0, 0, 0], [0, 0, 0]])), "mask"),
        (lambda: whiten(torch.tensor([[1.0, float("inf")]])), "x"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()
