r"""Returns, generalized advantage estimation (GAE) and whitening.

Units 3 and 5 of the course. A response of :math:`T` tokens is an episode: the state
:math:`s_t = (x, y_{<t})`, the action :math:`a_t = y_t`, the reward :math:`r_t` (unit 5:
:math:`-\beta` times the per-token KL estimate, plus the score at the last token) and the
value :math:`V(s_t)` from the value head. Tensors are ``[B, T]`` with an optional float mask
(1 = real response token, 0 = padding after EOS).

Padding: the recursions run over the *real* tokens of each row only. A padded position
contributes nothing (its reward and value are ignored, the carried quantities pass through it
unchanged) and its output is 0; after a row's last real token the bootstrap value is 0 (the
episode has ended). With the usual masks (ones then zeros) this is the textbook recursion on
the unpadded row.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .masked import (
    as_mask,
    check_finite,
    check_same_shape,
    check_scalar,
    check_token_tensor,
    masked_mean,
    masked_var,
    zero_padding,
)

Tensor = torch.Tensor


def _check_rate(name: str, value: float) -> float:
    v = check_scalar(name, value, nonnegative=True)
    if v > 1:
        raise ValueError(f"{name} must lie in [0, 1], got {v}")
    return v


def discounted_returns(rewards: Tensor, gamma: float, mask: Optional[Tensor] = None) -> Tensor:
    r"""Reward-to-go :math:`G_t = \sum_{k \ge t} \gamma^{k-t} r_k` over each row's real tokens.

    Computed backwards: :math:`G_t = r_t + \gamma G_{t+1}`, :math:`G = 0` after the last real
    token. Unit 3 (the return that the policy gradient weights) and unit 5.

    Returns:
        ``[B, T]``; padded positions are 0.
    """
    check_token_tensor("rewards", rewards)
    g = _check_rate("gamma", gamma)
    m = as_mask(mask, rewards)
    check_finite("rewards", rewards, m)
    r = zero_padding(rewards, m)
    if r.shape[1] == 0:
        return r.clone()
    carry = torch.zeros_like(r[:, 0])
    out = [None] * r.shape[1]
    for t in reversed(range(r.shape[1])):
        real = m[:, t] != 0
        ret = r[:, t] + g * carry
        carry = torch.where(real, ret, carry)
        out[t] = torch.where(real, ret, torch.zeros_like(ret))
    return torch.stack(out, dim=1)


def gae(
    rewards: Tensor,
    values: Tensor,
    gamma: float,
    lam: float,
    mask: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    r"""Generalized advantage estimation (Schulman et al., 2016) and the value targets.

    .. math::
        \delta_t = r_t + \gamma V(s_{t+1}) - V(s_t), \qquad
        \hat A_t = \delta_t + \gamma\lambda \hat A_{t+1}, \qquad
        \hat R_t = \hat A_t + V(s_t)

    with :math:`V(s_{T+1}) = 0` and :math:`\hat A_{T+1} = 0` after the last real token.
    :math:`\lambda = 1` gives :math:`\hat A_t = G_t - V(s_t)` (discounted return minus the
    baseline: unbiased, high variance); :math:`\lambda = 0` gives the one-step TD error
    :math:`\delta_t` (low variance, biased by the value error). Unit 5 (unit 3 introduces the
    advantage). ``values`` should come detached from the value head (the advantages are
    constants in the losses).

    Returns:
        ``(advantages, returns)``, both ``[B, T]``, 0 at padded positions.
    """
    check_token_tensor("rewards", rewards)
    check_same_shape(rewards=rewards, values=values)
    g = _check_rate("gamma", gamma)
    lmbda = _check_rate("lam", lam)
    m = as_mask(mask, rewards)
    check_finite("rewards", rewards, m)
    check_finite("values", values, m)
    r = zero_padding(rewards, m)
    v = zero_padding(values.to(rewards.dtype), m)
    if r.shape[1] == 0:
        return r.clone(), r.clone()
    next_value = torch.zeros_like(r[:, 0])
    next_adv = torch.zeros_like(r[:, 0])
    adv = [None] * r.shape[1]
    for t in reversed(range(r.shape[1])):
        real = m[:, t] != 0
        delta = r[:, t] + g * next_value - v[:, t]
        a = delta + g * lmbda * next_adv
        next_adv = torch.where(real, a, next_adv)
        next_value = torch.where(real, v[:, t], next_value)
        adv[t] = torch.where(real, a, torch.zeros_like(a))
    advantages = torch.stack(adv, dim=1)
    returns = zero_padding(advantages + v, m)
    return advantages, returns


def whiten(x: Tensor, mask: Optional[Tensor] = None, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    r"""Normalize over the real tokens of the whole batch: :math:`(x - \mu) / \sqrt{\sigma^2 + \epsilon}`.

    :math:`\mu` and :math:`\sigma^2` are the masked mean and the Bessel-corrected masked variance
    (:func:`rlhf_lab.masked.masked_var`, as TRL). With ``shift_mean=False`` the mean is added
    back: unit variance, original mean (TRL uses this to whiten rewards without changing their
    sign on average). Unit 5 (whitened advantages stabilize the PPO step size).

    Needs at least 2 real tokens. Returns ``[B, T]`` (any shape), 0 at padded positions.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating-point torch.Tensor")
    m = as_mask(mask, x)
    check_finite("x", x, m)
    check_scalar("eps", eps, nonnegative=True)
    xc = zero_padding(x, m)
    mean = masked_mean(xc, m)
    var = masked_var(xc, m)
    out = (xc - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return zero_padding(out, m)
