r"""Returns, generalized advantage estimation (GAE), whitening, and the critic-free estimators.

Units 3, 5 and 6 of the course. A response of :math:`T` tokens is an episode: the state
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

#: ``scale`` of :func:`grpo_advantages`: the group's standard deviation, the batch's, or none.
GRPO_SCALES = ("group", "batch", "none")


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


# ------------------------------------------------------------------ critic-free estimators (unit 6)
def _groups(scores: Tensor, group_size: int) -> Tensor:
    """``scores`` ``[B]`` as ``[B / G, G]`` (one row per prompt), after the checks every group
    estimator shares."""
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise ValueError(f"group_size must be an int, got {group_size!r}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (a group of one response has no baseline from the others), "
                         f"got {group_size}")
    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point() or scores.dim() != 1:
        raise ValueError("scores must be a floating-point torch.Tensor of shape [B] (one score per response)")
    if scores.shape[0] == 0 or scores.shape[0] % group_size:
        raise ValueError(f"group_size ({group_size}) must divide the number of scores ({scores.shape[0]}): "
                         "each prompt's responses fill one group")
    check_finite("scores", scores)
    return scores.view(-1, group_size)


def _zero_where_tied(groups: Tensor, advantages: Tensor) -> Tensor:
    """A group whose scores all tie has advantage 0, exactly (a float mean of equal numbers can
    differ from them in the last bit)."""
    tied = groups.amax(dim=1, keepdim=True) == groups.amin(dim=1, keepdim=True)
    return torch.where(tied, torch.zeros_like(advantages), advantages)


def rloo_advantages(scores: Tensor, group_size: int) -> Tensor:
    r"""REINFORCE leave-one-out (RLOO) advantages (Kool et al. 2019; Ahmadian et al. 2024).

    .. math::
        A_i = r_i - \frac{1}{G - 1}\sum_{j \ne i} r_j = \frac{G}{G - 1}\,(r_i - \bar r)

    over the :math:`G` responses of one prompt, :math:`\bar r` their mean. The baseline of a
    response is the mean of the *other* responses of its group, so it does not depend on the
    sample it scores and :math:`\mathbb{E}[A_i\,\nabla\log\pi(y_i)]` is the exact policy gradient
    (unit 3's baseline argument). Unit 6.

    Args:
        scores: ``[B]`` one score per response, groups of ``group_size`` consecutive rows.
        group_size: :math:`G \ge 2`, dividing ``B``.

    Returns:
        ``[B]`` advantages (each group's sum to 0).
    """
    g = _groups(scores, group_size)
    baseline = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)
    return _zero_where_tied(g, g - baseline).reshape(-1)


def grpo_advantages(scores: Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    r"""GRPO's group-normalized advantages (Shao et al. 2024, DeepSeekMath).

    .. math::
        A_i = \frac{r_i - \bar r_g}{s + \epsilon}

    with :math:`\bar r_g` the mean of the :math:`G` scores of the response's group and :math:`s`
    the Bessel-corrected standard deviation (``torch.std``, as TRL) of its group
    (``scale="group"``), of the whole batch (``"batch"``, as TRL's ``scale_rewards="batch"``) or
    :math:`s = 1, \epsilon = 0` (``"none"``: Dr. GRPO, Liu et al. 2025, who show that dividing by
    the group's spread weights prompts by their difficulty). A group whose scores all tie gets
    advantages exactly 0. Unit 6.

    Args:
        scores: ``[B]`` one score per response, groups of ``group_size`` consecutive rows.
        group_size: :math:`G \ge 2`, dividing ``B``.
        scale: ``"group"``, ``"batch"`` or ``"none"``.
        eps: :math:`\epsilon \ge 0` (TRL's 1e-4).

    Returns:
        ``[B]`` advantages.
    """
    if scale not in GRPO_SCALES:
        raise ValueError(f"scale must be one of {GRPO_SCALES}, got {scale!r}")
    e = check_scalar("eps", eps, nonnegative=True)
    g = _groups(scores, group_size)
    centred = _zero_where_tied(g, g - g.mean(dim=1, keepdim=True))
    if scale == "none":
        return centred.reshape(-1)
    spread = g.std(dim=1, keepdim=True) if scale == "group" else scores.std()
    return (centred / (spread + e)).reshape(-1)


def tied_groups(scores: Tensor, group_size: int) -> Tensor:
    """``[B]`` bool: whether the response's group has all scores equal (its group advantages are
    0, so it teaches nothing). Their share is TRL's ``frac_reward_zero_std``; DAPO's dynamic
    sampling drops these groups (Yu et al. 2025)."""
    g = _groups(scores, group_size)
    tied = g.amax(dim=1) == g.amin(dim=1)
    return tied.repeat_interleave(group_size)


def reinforce_pp_advantages(rewards: Tensor, mask: Optional[Tensor] = None, gamma: float = 1.0,
                            normalize: bool = True) -> Tensor:
    r"""REINFORCE++ advantages (Hu 2025): per-token returns, normalized over the whole batch.

    .. math::
        G_t = \sum_{s \ge t} \gamma^{s - t} r_s, \qquad
        A_t = \frac{G_t - \mu}{\sqrt{\sigma^2 + 10^{-8}}}

    with the per-token rewards :math:`r_t = -\beta\hat k_t + [t = \text{last}]\,r(x, y)` of
    :func:`rlhf_lab.objectives.per_token_rewards` (the KL in the reward, token by token), and
    :math:`\mu, \sigma^2` the mean and variance of :math:`G_t` over every real token of the batch
    (:func:`whiten`): the global batch normalization that replaces the critic's baseline.
    ``normalize=False`` returns :math:`G_t` (plain REINFORCE with the KL in the reward). Unit 6.

    Returns:
        ``[B, T]``, 0 at padded positions.
    """
    returns = discounted_returns(rewards, gamma, mask)
    return whiten(returns, mask) if normalize else returns
