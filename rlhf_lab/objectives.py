r"""The objectives of the course: policy gradient, the RLHF loss, PPO's clipped losses.

Notation: ``logp`` = :math:`\log \pi_\theta(y_t \mid x, y_{<t})`, ``ref_logp`` the same under
:math:`\pi_{\text{ref}}`, ``old_logp`` under :math:`\pi_{\theta_{\text{old}}}` (the policy that
sampled the rollout), all ``[B, T]`` with an optional float ``mask`` (1 = real response token).
Every "mean over tokens" is the masked mean :math:`\sum m x / \sum m` over the whole batch; an
all-zero mask raises ``ValueError``. Padded positions never change a result (nor a gradient).

Quantities that are constants of an update (advantages, old log-probs, old values, returns)
are detached inside the losses, so only the current ``logp`` / ``values`` receive gradients.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from .divergence import kl_estimate, sequence_log_ratio
from .masked import (
    as_mask,
    check_finite,
    check_same_shape,
    check_scalar,
    check_token_tensor,
    masked_mean,
    zero_padding,
)

Tensor = torch.Tensor

PER_TOKEN_KL = ("k1", "k3")


def _scores(scores: Tensor, like: Tensor) -> Tensor:
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(scores, dtype=like.dtype, device=like.device)
    if scores.shape != like.shape[:1]:
        raise ValueError(f"scores has shape {tuple(scores.shape)}, expected ({like.shape[0]},): one score per sequence")
    check_finite("scores", scores)
    return scores.to(like.dtype)


def policy_gradient_objective(logp: Tensor, advantages: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    r"""The surrogate whose gradient is the policy gradient (to be **maximized**).

    .. math::
        L^{PG}(\theta) = \frac{1}{B} \sum_{b=1}^{B} \sum_{t} m_{b,t}\,
        \log \pi_\theta(a_{b,t} \mid s_{b,t})\, \hat A_{b,t},
        \qquad \nabla_\theta L^{PG} = \hat{\mathbb{E}}\Big[\sum_t \nabla_\theta \log \pi_\theta(a_t \mid s_t)\, A(s_t, a_t)\Big]

    Unit 3 (log-derivative trick; subtracting a baseline keeps it unbiased). The advantages are
    treated as constants (detached). The A2C loss is ``-policy_gradient_objective(...)`` plus a
    value loss. Returns a 0-d tensor.
    """
    check_token_tensor("logp", logp)
    check_same_shape(logp=logp, advantages=advantages)
    m = as_mask(mask, logp)
    check_finite("logp", logp, m)
    check_finite("advantages", advantages, m)
    if logp.shape[0] == 0:
        raise ValueError("logp has an empty batch")
    a = zero_padding(advantages.detach().to(logp.dtype), m)
    return (zero_padding(logp, m) * a).sum(dim=-1).mean()


def rlhf_loss(scores: Tensor, logp: Tensor, ref_logp: Tensor, beta: float, mask: Optional[Tensor] = None) -> Tensor:
    r"""The KL-regularized RLHF objective as a loss (to be **minimized**).

    .. math::
        \mathcal{L}(\theta) = \frac{1}{B}\sum_b \Big(-r(x_b, y_b) + \beta\,
        \big[\log \pi_\theta(y_b \mid x_b) - \log \pi_{\text{ref}}(y_b \mid x_b)\big]\Big)

    i.e. :math:`-J_{\text{new}} = -(J - \beta D)` with the penalty :math:`D` =
    :func:`rlhf_lab.divergence.sequence_log_ratio` (units 1 and 5). ``scores`` is ``[B]``
    (NaN/inf raise), ``beta >= 0``. Returns a 0-d tensor.
    """
    check_token_tensor("logp", logp)
    b = check_scalar("beta", beta, nonnegative=True)
    s = _scores(scores, logp)
    penalty = sequence_log_ratio(logp, ref_logp, mask)
    return (-s + b * penalty).mean()


def per_token_rewards(
    scores: Tensor,
    logp: Tensor,
    ref_logp: Tensor,
    beta: float,
    mask: Optional[Tensor] = None,
    kl: str = "k1",
) -> Tensor:
    r"""Unit 5's per-token reward: a KL penalty at every token, the score at the last one.

    .. math::
        r_t = -\beta\, \hat k_t + \mathbb{1}[t = t_{\text{last}}]\; r(x, y),
        \qquad \hat k_t = \log \pi_{\theta_{\text{old}}}(y_t) - \log \pi_{\text{ref}}(y_t) \;(\text{k1})

    where :math:`t_{\text{last}}` is each row's last real token (the last 1 in ``mask``; the
    last column without a mask). With ``kl="k1"`` a response's rewards add up to
    :math:`r - \beta\,\text{Penalty}`. ``kl="k3"`` uses :math:`(\rho - 1) - \log \rho`,
    :math:`\rho = \pi_{\text{ref}}/\pi_{\theta_{\text{old}}}` (non-negative, unbiased; see
    :func:`rlhf_lab.divergence.kl_estimate`). A row whose mask is all zeros has no last token
    and raises ``ValueError``.

    Returns:
        ``[B, T]``, 0 at padded positions.
    """
    check_token_tensor("logp", logp)
    if kl not in PER_TOKEN_KL:
        raise ValueError(f"kl must be one of {PER_TOKEN_KL}, got {kl!r}")
    b = check_scalar("beta", beta, nonnegative=True)
    s = _scores(scores, logp)
    m = as_mask(mask, logp)
    T = logp.shape[1]
    if T == 0:
        raise ValueError("logp has no tokens: the score needs a last token")
    if bool((m.sum(dim=-1) == 0).any()):
        raise ValueError("mask has a row of all zeros: that response has no last token for its score")
    k = kl_estimate(logp, ref_logp, kind=kl, mask=m)
    positions = torch.arange(T, device=logp.device)
    last = torch.where(m != 0, positions, -1).argmax(dim=-1)  # index of the last 1 in each row
    at_last = positions.unsqueeze(0) == last.unsqueeze(1)
    rewards = -b * k
    return rewards + torch.where(at_last, s.unsqueeze(1), torch.zeros_like(rewards))


def _check_per_token(mask: Optional[Tensor], **tensors: Tensor) -> None:
    """The checks of a loss over tokens: floating ``[B, T]`` tensors of one shape, a 0/1 mask with
    at least one real token, no NaN or inf at a real token. Each reads values (a host sync)."""
    first_name, first = next(iter(tensors.items()))
    check_token_tensor(first_name, first)
    check_same_shape(**tensors)
    m = as_mask(mask, first)
    if bool(m.sum() == 0):
        raise ValueError("mask is all zeros where a mean is needed")
    for name, x in tensors.items():
        check_finite(name, x, m)


def clipped_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    clip_eps: float,
    mask: Optional[Tensor] = None,
    *,
    clip_eps_high: Optional[float] = None,
    validate: bool = True,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    r"""PPO's clipped surrogate per token, before any mean: ``(per_token_loss [B, T], stats)``.

    .. math::
        \rho_t = \exp(\log \pi_\theta(a_t) - \log \pi_{\theta_{\text{old}}}(a_t)), \qquad
        \ell_t = \max\big(-\hat A_t \rho_t,\; -\hat A_t \operatorname{clip}(\rho_t,
        1 - \epsilon, 1 + \epsilon_{\text{high}})\big)

    with :math:`\epsilon_{\text{high}} = \epsilon` unless ``clip_eps_high`` is given (DAPO's
    clip-higher, Yu et al. 2025: a larger upper bound lets unlikely tokens with a positive
    advantage rise faster). Padded positions are 0. :func:`ppo_clip_loss` is its masked mean;
    :func:`aggregate_loss` offers the other means of unit 6. ``stats`` and ``validate`` as in
    :func:`ppo_clip_loss`.
    """
    if validate:
        clip_eps = check_scalar("clip_eps", clip_eps, positive=True)
        if clip_eps_high is not None:
            clip_eps_high = check_scalar("clip_eps_high", clip_eps_high, positive=True)
        _check_per_token(mask, logp=logp, old_logp=old_logp, advantages=advantages)
    high = clip_eps if clip_eps_high is None else clip_eps_high
    m = as_mask(mask, logp, validate=False)
    old = old_logp.detach().to(logp.dtype)
    a = zero_padding(advantages.detach().to(logp.dtype), m)
    log_ratio = zero_padding(logp - old, m)
    ratio = torch.exp(log_ratio)
    unclipped = -a * ratio
    clipped = -a * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high)
    per_token = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        new = logp.detach()
        real = m != 0  # min/max through where (boolean indexing would sync the GPU)
        inf = torch.full_like(ratio, float("inf"))
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(logp.dtype), m, validate=False),
            "approx_kl": masked_mean(kl_estimate(old, new, "k3", m, validate=False), m, validate=False),
            "approx_kl_k1": masked_mean(kl_estimate(old, new, "k1", m, validate=False), m, validate=False),
            "ratio_mean": masked_mean(ratio, m, validate=False),
            "ratio_min": torch.where(real, ratio, inf).min(),
            "ratio_max": torch.where(real, ratio, -inf).max(),
        }
    return per_token, {k: v.detach() for k, v in stats.items()}


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    clip_eps: float,
    mask: Optional[Tensor] = None,
    *,
    clip_eps_high: Optional[float] = None,
    validate: bool = True,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    r"""PPO's clipped surrogate as a loss (Schulman et al., 2017), to be **minimized**.

    .. math::
        \rho_t = \exp(\log \pi_\theta(a_t) - \log \pi_{\theta_{\text{old}}}(a_t)), \qquad
        \mathcal{L}^{CLIP} = \operatorname{mean}_t \max\big(-\hat A_t \rho_t,\;
        -\hat A_t \operatorname{clip}(\rho_t, 1 - \epsilon, 1 + \epsilon)\big)

    Unit 5. At :math:`\rho = 1` (the first minibatch of an iteration) its gradient is the
    policy gradient of unit 3 normalized per token: :math:`-\operatorname{mean}_t \hat A_t
    \nabla \log \pi_\theta(a_t)`. ``old_logp`` and ``advantages`` are detached.
    ``clip_eps_high`` sets a different upper bound :math:`1 + \epsilon_{\text{high}}` (DAPO's
    clip-higher; see :func:`clipped_surrogate`, the per-token loss this is the masked mean of).

    ``validate=True`` checks shapes, the mask (0/1, at least one real token), ``clip_eps > 0`` and
    that the inputs are finite at real tokens, raising ``ValueError`` naming the argument; these
    checks read tensor values, so on a GPU each waits for the device. ``validate=False`` skips
    them and the function then never synchronizes: for a training loop whose inputs were checked
    once (the PPO trainer checks them at its boundary).

    Returns:
        ``(loss, stats)``: ``loss`` a 0-d tensor; ``stats`` a dict of **detached 0-d tensors**
        (call ``.item()`` when logging, once per step):

        - ``clipfrac``: share of real tokens where the clipped term is the larger (strictly),
          i.e. where clipping removed the gradient;
        - ``approx_kl``: mean of :math:`(\rho - 1) - \log \rho`, the k3 estimator of
          :func:`rlhf_lab.divergence.kl_estimate` (tokens come from
          :math:`\pi_{\theta_{\text{old}}}`, so it estimates
          :math:`\mathrm{KL}(\pi_{\theta_{\text{old}}} \| \pi_\theta)`; non-negative);
        - ``approx_kl_k1``: mean of :math:`-\log \rho` (the k1 estimator of the same KL);
        - ``ratio_mean``, ``ratio_min``, ``ratio_max``: of :math:`\rho` over real tokens.
    """
    per_token, stats = clipped_surrogate(logp, old_logp, advantages, clip_eps, mask, clip_eps_high=clip_eps_high,
                                         validate=validate)
    return masked_mean(per_token, as_mask(mask, logp, validate=False), validate=False), stats


def kl_penalty(
    logp: Tensor,
    ref_logp: Tensor,
    kind: str = "k3",
    mask: Optional[Tensor] = None,
    *,
    old_logp: Optional[Tensor] = None,
    validate: bool = True,
) -> Tensor:
    r"""The KL term of a loss, per token: :math:`\hat k_t`, or :math:`\rho_t \hat k_t` (``[B, T]``).

    The KL placed **in the loss** (GRPO, Shao et al. 2024): :math:`\beta\,\hat k_t` is added to
    the per-token policy loss, with :math:`\hat k_t` one of the estimators of
    :func:`rlhf_lab.divergence.kl_estimate` (with ``logp`` in the role of :math:`\pi_\theta`) and
    the gradient flowing through ``logp`` while the sampled tokens stay fixed. What its gradient
    estimates, on-policy (tokens drawn from :math:`\pi_\theta`; unit 6 derives each line, a test
    checks it by enumerating a vocabulary):

    ========  ===============================================  ==============================================
    ``kind``  :math:`\mathbb{E}[\nabla \hat k]`                with ``old_logp`` (:math:`\rho\hat k`)
    ========  ===============================================  ==============================================
    k1        0: the term does nothing on average              :math:`\nabla\mathrm{KL}(\pi_\theta\|\pi_{ref})`
    k2        :math:`\nabla\mathrm{KL}(\pi_\theta\|\pi_{ref})`  :math:`\nabla\mathbb{E}_{\pi_\theta}[k_2]` (not a KL)
    k3        :math:`\nabla\mathrm{KL}(\pi_{ref}\|\pi_\theta)`  :math:`\nabla\mathrm{KL}(\pi_\theta\|\pi_{ref})`
    ========  ===============================================  ==============================================

    With ``old_logp`` (the sampling policy's log-probabilities) the estimate is weighted by the
    importance ratio :math:`\rho_t = \pi_\theta / \pi_{\theta_{\text{old}}}` (its value is 1
    on-policy, its gradient is not 0): the expectation is then taken under :math:`\pi_\theta`,
    whose gradient is that of :math:`\mathbb{E}_{\pi_\theta}[\hat k]`, the reverse KL for the
    unbiased k1 and k3. This is TRL's ``use_bias_correction_kl`` (DeepSeek-V3.2). The KL placed
    **in the reward** instead (:func:`per_token_rewards`, no gradient through it) gives
    :math:`\nabla\mathrm{KL}(\pi_\theta\|\pi_{ref})` with k1.

    Returns:
        ``[B, T]``, 0 at padded positions.
    """
    if validate:
        _check_per_token(mask, logp=logp, ref_logp=ref_logp)
        if old_logp is not None:
            _check_per_token(mask, logp=logp, old_logp=old_logp)
    m = as_mask(mask, logp, validate=False)
    k = kl_estimate(logp, ref_logp.detach(), kind, m, validate=validate)
    if old_logp is None:
        return k
    ratio = torch.exp(zero_padding(logp - old_logp.detach().to(logp.dtype), m))
    return ratio * k


#: ``loss_type`` of :func:`aggregate_loss`, with TRL's names: the per-token weight each gives a
#: token of response i (L_i real tokens, B responses).
LOSS_TYPES = {
    "grpo": "1 / (B L_i): a token mean per response, then the mean over responses (GRPO)",
    "dapo": "1 / sum_j L_j: one token mean over the whole batch (DAPO)",
    "bnpo": "1 / sum_j L_j: as dapo (TRL normalizes by the micro-batch's tokens; here by the batch's)",
    "dr_grpo": "1 / (B L_max): a constant normalizer, L_max = max_length (Dr. GRPO)",
}


def aggregate_loss(per_token: Tensor, mask: Optional[Tensor], loss_type: str = "dapo",
                   max_length: Optional[int] = None, *, validate: bool = True) -> Tensor:
    r"""Reduce a per-token loss ``[B, T]`` to a scalar by one of unit 6's aggregations.

    .. math::
        \mathcal{L}_{\text{grpo}} = \frac1B\sum_i \frac{1}{L_i}\sum_t \ell_{i,t},\qquad
        \mathcal{L}_{\text{dapo}} = \frac{\sum_{i,t} \ell_{i,t}}{\sum_i L_i},\qquad
        \mathcal{L}_{\text{dr\_grpo}} = \frac{\sum_{i,t} \ell_{i,t}}{B\,L_{\max}}

    (sums over real tokens, :math:`L_i` the real tokens of response i). A token of response i thus
    weighs :math:`1/(B L_i)`, :math:`1/\sum_j L_j` or :math:`1/(B L_{\max})`: under ``"grpo"``
    a token of a short response weighs more than one of a long response (the length bias of
    Liu et al. 2025), ``"dapo"`` (Yu et al. 2025) and ``"dr_grpo"`` weigh every token alike.
    ``"bnpo"`` is ``"dapo"`` here (see :data:`LOSS_TYPES`). ``max_length`` (:math:`L_{\max}`,
    the largest response length the run allows, a constant) is needed by ``"dr_grpo"`` only.

    :func:`micro_batch_share` gives the weights under which the losses of micro-batches add up
    to the loss of their batch, for every ``loss_type``.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {tuple(LOSS_TYPES)}, got {loss_type!r}")
    if validate:
        _check_per_token(mask, per_token=per_token)
        if loss_type == "grpo" and bool((as_mask(mask, per_token).sum(dim=-1) == 0).any()):
            raise ValueError("mask has a row of all zeros: loss_type='grpo' averages over each response's tokens")
        if loss_type == "dr_grpo":
            if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < per_token.shape[-1]:
                raise ValueError(f"max_length must be an int >= the number of token columns ({per_token.shape[-1]}) "
                                 f"for loss_type='dr_grpo', got {max_length!r}")
    m = as_mask(mask, per_token, validate=False)
    if loss_type in ("dapo", "bnpo"):
        return masked_mean(per_token, m, validate=False)
    total = zero_padding(per_token, m).sum(dim=-1)
    if loss_type == "grpo":
        return (total / m.sum(dim=-1)).mean()
    return total.sum() / (per_token.shape[0] * max_length)


def micro_batch_share(micro_mask: Tensor, batch_mask: Tensor, loss_type: str = "dapo") -> Tensor:
    r"""The weight :math:`w_k` of a micro-batch's :func:`aggregate_loss` in its batch's:
    :math:`\mathcal{L}(\text{batch}) = \sum_k w_k\,\mathcal{L}(\text{micro-batch}_k)` exactly, so
    gradient accumulation equals one large batch. It is the micro-batch's share of the batch's
    real tokens for the token means (``"dapo"``, ``"bnpo"``) and its share of the batch's
    responses for the per-response normalizers (``"grpo"``, ``"dr_grpo"``). A 0-d tensor."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {tuple(LOSS_TYPES)}, got {loss_type!r}")
    if loss_type in ("dapo", "bnpo"):
        return micro_mask.sum() / batch_mask.sum()
    return torch.tensor(micro_mask.shape[0] / batch_mask.shape[0], dtype=micro_mask.dtype, device=micro_mask.device)


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    clip_eps: Optional[float] = None,
    mask: Optional[Tensor] = None,
    *,
    validate: bool = True,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    r"""The value-head regression loss, optionally clipped around the rollout's values (unit 5).

    .. math::
        \mathcal{L}^{V} = \tfrac12 \operatorname{mean}_t \max\big((V_t - \hat R_t)^2,\;
        (V^{\text{clip}}_t - \hat R_t)^2\big), \qquad
        V^{\text{clip}}_t = V^{\text{old}}_t + \operatorname{clip}(V_t - V^{\text{old}}_t, -\epsilon, \epsilon)

    Without ``clip_eps``: :math:`\tfrac12 \operatorname{mean}_t (V_t - \hat R_t)^2` (the A2C
    critic loss of unit 3). ``old_values`` and ``returns`` are detached. ``validate`` as in
    :func:`ppo_clip_loss`.

    Returns:
        ``(loss, stats)``: ``loss`` a 0-d tensor; ``stats`` a dict of detached 0-d tensors with
        ``clipfrac``, the share of real tokens where the clipped error is strictly the larger (the
        clip decides the loss there and the gradient is 0; TRL's ``vf_clipfrac``; 0 without
        ``clip_eps``).
    """
    if validate:
        _check_per_token(mask, values=values, old_values=old_values, returns=returns)
        if clip_eps is not None:
            clip_eps = check_scalar("clip_eps", clip_eps, positive=True)
    m = as_mask(mask, values, validate=False)
    v = zero_padding(values, m)
    ret = zero_padding(returns.detach().to(values.dtype), m)
    err = (v - ret) ** 2
    clipfrac = torch.zeros((), dtype=values.dtype, device=values.device)
    if clip_eps is not None:
        old = zero_padding(old_values.detach().to(values.dtype), m)
        v_clip = old + torch.clamp(v - old, -clip_eps, clip_eps)
        err_clipped = (v_clip - ret) ** 2
        clipfrac = masked_mean((err_clipped > err).to(values.dtype), m, validate=False)
        err = torch.maximum(err, err_clipped)
    return 0.5 * masked_mean(err, m, validate=False), {"clipfrac": clipfrac.detach()}


def a2c_loss(logp: Tensor, values: Tensor, returns: Tensor, mask: Optional[Tensor] = None, *,
             advantages: Optional[Tensor] = None, vf_coef: float = 0.5) -> Tuple[Tensor, Dict[str, float]]:
    r"""The advantage actor-critic (A2C) loss on ``[B, T]`` tensors (Mnih et al., 2016), to be
    **minimized**: ``(loss, stats)``.

    .. math::
        \hat A_t = G_t - V(s_t), \qquad
        \mathcal{L} = -L^{PG}(\theta) + c_V\,\tfrac12 \operatorname{mean}_t \big(V(s_t) - G_t\big)^2

    with :math:`L^{PG}` = :func:`policy_gradient_objective` and the value term
    :func:`value_loss` without clipping. The advantage is held constant (detached): the policy
    term sends no gradient into the values. ``returns`` are the regression targets :math:`G_t`
    (reward-to-go or bootstrapped); pass ``advantages`` to use another estimate (e.g. the TD
    errors :math:`r_t + V(s_{t+1}) - V(s_t)`). ``vf_coef`` is :math:`c_V \ge 0`. Unit 3.

    ``stats``: ``loss/policy``, ``loss/value`` and ``advantage_mean`` as Python floats.
    """
    check_token_tensor("logp", logp)
    check_same_shape(logp=logp, values=values, returns=returns)
    m = as_mask(mask, logp)
    check_finite("returns", returns, m)
    c_v = check_scalar("vf_coef", vf_coef, nonnegative=True)
    if advantages is None:
        advantages = zero_padding(returns, m) - zero_padding(values, m)
    else:
        check_same_shape(logp=logp, advantages=advantages)
    policy = -policy_gradient_objective(logp, advantages, m)
    critic, _ = value_loss(values, values, returns, mask=m)
    loss = policy + c_v * critic
    stats = {"loss/policy": float(policy.detach()), "loss/value": float(critic.detach()),
             "advantage_mean": float(masked_mean(zero_padding(advantages.detach(), m), m))}
    return loss, stats


DPO_LOSS_TYPES = ("sigmoid", "ipo")


def dpo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    beta: float,
    *,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
) -> Tensor:
    r"""Direct Preference Optimization loss on sequence log-probabilities (unit 4's outlook).

    The KL-regularized optimum implies the reward :math:`r = \beta\log\frac{\pi^*}{\pi_{\mathrm{ref}}}
    + \beta\log Z(x)`; in a Bradley-Terry preference :math:`\sigma(r(y_w) - r(y_l))` the
    :math:`\log Z` cancels, so the policy itself can be fitted to preference pairs
    (Rafailov et al. 2023). With the log-ratio margin
    :math:`h = (\log\pi_\theta - \log\pi_{\mathrm{ref}})(y_w) - (\log\pi_\theta - \log\pi_{\mathrm{ref}})(y_l)`:

    .. math::
        \mathcal{L}_{\mathrm{DPO}} = -\operatorname{mean}\big[(1 - \varepsilon)\log\sigma(\beta h)
        + \varepsilon\log\sigma(-\beta h)\big], \qquad
        \mathcal{L}_{\mathrm{IPO}} = \operatorname{mean}\Big(h - \frac{1}{2\beta}\Big)^2

    ``loss_type="sigmoid"`` (the default) is DPO; ``label_smoothing`` :math:`\varepsilon \in
    [0, 0.5)` is conservative DPO (cDPO, Mitchell 2023: each label is taken to be flipped with
    probability :math:`\varepsilon`; 0 is plain DPO). ``loss_type="ipo"`` is IPO (Azar et al.
    2024): a squared loss that pulls :math:`h` to :math:`1/(2\beta)` instead of pushing it to
    infinity (pass length-normalized log-probabilities, as TRL and the IPO authors do; see
    :mod:`rlhf_lab.dpo`). Names as in TRL's ``DPOConfig``.

    Every argument is ``[B]``: the log-probability of each pair's preferred (``chosen``, y_w) and
    dispreferred (``rejected``, y_l) response, e.g. ``sequence_logprobs(...).sum(-1)``.
    ``beta`` must be > 0. Returns a 0-d tensor (gradients flow through the policy's terms only).
    At :math:`\pi_\theta = \pi_{\mathrm{ref}}` the DPO loss is :math:`\log 2` for any
    :math:`\varepsilon`.
    """
    check_same_shape(logp_chosen=logp_chosen, logp_rejected=logp_rejected,
                     ref_logp_chosen=ref_logp_chosen, ref_logp_rejected=ref_logp_rejected)
    if logp_chosen.dim() != 1:
        raise ValueError(f"logp_chosen must be [B] (one log-probability per pair), got {tuple(logp_chosen.shape)}")
    b = check_scalar("beta", beta, positive=True)
    eps = check_scalar("label_smoothing", label_smoothing, nonnegative=True)
    if not eps < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5) (0.5 would make the labels pure noise), got {eps}")
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if loss_type == "ipo" and eps:
        raise ValueError("label_smoothing applies to loss_type='sigmoid' (cDPO); IPO has no labels to smooth")
    for name, x in (("logp_chosen", logp_chosen), ("logp_rejected", logp_rejected),
                    ("ref_logp_chosen", ref_logp_chosen), ("ref_logp_rejected", ref_logp_rejected)):
        check_finite(name, x)
    margin = (logp_chosen - ref_logp_chosen.detach()) - (logp_rejected - ref_logp_rejected.detach())
    if loss_type == "ipo":
        return ((margin - 1 / (2 * b)) ** 2).mean()
    logsigmoid = torch.nn.functional.logsigmoid
    if eps == 0:
        return -logsigmoid(b * margin).mean()
    return -((1 - eps) * logsigmoid(b * margin) + eps * logsigmoid(-b * margin)).mean()
