"""rlhf_lab.kl_control: the adaptive rule of Ziegler et al. (2019), step by step."""

from __future__ import annotations

import pytest
import torch

from rlhf_lab.kl_control import AdaptiveKLController, FixedKLController


def test_fixed_controller_never_moves():
    c = FixedKLController(0.05)
    for kl in (0.0, 3.0, 100.0):
        assert c.update(kl, 64) == 0.05
    assert c.value == 0.05


@pytest.mark.parametrize(
    "kl, n_steps, expected_error",
    [
        (6.0, 256, 0.0),  # on target: unchanged
        (6.6, 256, 0.1),  # 10 % above: error 0.1
        (5.4, 256, -0.1),
        (60.0, 256, 0.2),  # clipped at +0.2
        (0.0, 256, -0.2),  # clipped at -0.2
    ],
)
def test_adaptive_single_step_follows_the_rule(kl, n_steps, expected_error):
    c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    new = c.update(kl, n_steps)
    # written out by hand: beta <- beta * (1 + e * n_steps / horizon)
    assert new == pytest.approx(0.1 * (1 + expected_error * n_steps / 10_000), rel=1e-12)
    assert c.value == new


def test_adaptive_sequence_against_a_plain_loop():
    kls = [1.0, 8.0, 6.5, torch.tensor(5.0), 30.0, 6.0]
    c = AdaptiveKLController(0.2, target=6.0, horizon=1000)
    beta = 0.2
    for kl in kls:
        e = float(kl) / 6.0 - 1
        e = 0.2 if e > 0.2 else (-0.2 if e < -0.2 else e)
        beta = beta * (1 + e * 32 / 1000)
        assert c.update(kl, 32) == pytest.approx(beta, rel=1e-12)


def test_adaptive_steers_beta_in_the_right_direction():
    c = AdaptiveKLController(0.1, target=6.0, horizon=100)
    for _ in range(10):
        c.update(12.0, 10)  # KL too high: beta grows
    assert c.value == pytest.approx(0.1 * 1.02**10)
    c2 = AdaptiveKLController(0.1, target=6.0, horizon=100)
    c2.update(1.0, 10)
    assert c2.value < 0.1
    assert c2.update(6.0, 0) == c2.value  # no episodes, no change


def test_state_dict_round_trip():
    c = AdaptiveKLController(0.1, target=6.0, horizon=100)
    c.update(9.0, 10)
    d = AdaptiveKLController(1.0, target=1.0, horizon=1)
    d.load_state_dict(c.state_dict())
    assert (d.value, d.target, d.horizon) == (c.value, c.target, c.horizon)
    assert d.update(3.0, 5) == c.update(3.0, 5)
    f = FixedKLController(0.3)
    g = FixedKLController(0.0)
    g.load_state_dict(f.state_dict())
    assert g.value == 0.3


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: FixedKLController(-0.1), "beta"),
        (lambda: AdaptiveKLController(0.0, 6.0, 100), "init_beta"),
        (lambda: AdaptiveKLController(0.1, 0.0, 100), "target"),
        (lambda: AdaptiveKLController(0.1, 6.0, -1), "horizon"),
        (lambda: AdaptiveKLController(0.1, 6.0, 100).update(float("nan"), 10), "current_kl"),
        (lambda: AdaptiveKLController(0.1, 6.0, 100).update(float("inf"), 10), "current_kl"),
        (lambda: AdaptiveKLController(0.1, 6.0, 100).update(1.0, -3), "n_steps"),
        (lambda: AdaptiveKLController(0.1, 6.0, 100).update(1.0, 2.5), "n_steps"),
        (lambda: FixedKLController(0.1).update("x", 3), "current_kl"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()
