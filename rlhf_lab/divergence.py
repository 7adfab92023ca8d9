"""How far the policy has moved from the reference: the log-ratio penalty and KL estimators.

Units 1 and 2 of the course. Notation: :math:`\\pi_\\theta` the policy being trained,
:math:`\\pi_{\\text{ref}}` the frozen reference, :math:`\\tau = (x, y_1, \\dots, y_T)` a sampled
response, and per token :math:`\\log \\pi_\\theta(y_t \\mid x, y_{<t})` (``logp``) and
:math:`\\log \\pi_{\\text{ref}}(y_t \\mid x, y_{<t})` (``ref_logp``), both of shape ``[B, T]``.
A float ``mask`` of the same shape (1 = real response token, 0 = padding after EOS) is optional;
padded positions never change a result (they are replaced by 0 before any arithmetic, so even a
NaN or inf sitting there neither leaks into the value nor into a gradient).
"""

from __future__ import annotations

from typing import Optional

import torch

from .masked import as_mask, check_finite, check_same_shape, zero_padding

Tensor = torch.Tensor

KL_ESTIMATORS = ("k1", "k2", "k3")


def _pair(logp: Tensor, ref_logp: Tensor, mask: Optional[Tensor], validate: bool = True):
    """Validate a ``(logp, ref_logp, mask)`` triple; return the two with padding zeroed, and the mask."""
    if not validate:
        m = as_mask(mask, logp, validate=False)
        return zero_padding(logp, m), zero_padding(ref_logp.to(logp.dtype), m), m
    check_same_shape(logp=logp, ref_logp=ref_logp)
    if logp.dim() < 1:
        raise ValueError("logp must have at least one dimension (tokens on the last axis)")
    if not logp.is_floating_point():
        raise ValueError(f"logp must be a floating-point tensor, got {logp.dtype}")
    m = as_mask(mask, logp)
    check_finite("logp", logp, m)
    check_finite("ref_logp", ref_logp, m)
    return zero_padding(logp, m), zero_padding(ref_logp.to(logp.dtype), m), m


def sequence_log_ratio(logp: Tensor, ref_logp: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    r"""The trajectory penalty :math:`\log \pi_\theta(\tau) - \log \pi_{\text{ref}}(\tau)`, per sequence.

    .. math::
        \text{Penalty}(\tau) = \sum_{t=1}^{T} m_t \big(\log \pi_\theta(y_t \mid x, y_{<t})
        - \log \pi_{\text{ref}}(y_t \mid x, y_{<t})\big)

    Unit 1 defines the penalty on whole trajectories; unit 2 shows (chain rule) that it is the
    sum of the per-token log-ratios computed here. Its expectation under :math:`\pi_\theta` is
    :math:`\mathrm{KL}(\pi_\theta \,\|\, \pi_{\text{ref}}) \ge 0`, but a single sample may be negative.

    Example (the course's "Good day"): ``logp = [-0.8, -0.4]``, ``ref_logp = [-1.5, -2.1]``
    give ``0.7 + 1.7 = 2.4``.

    Args:
        logp, ref_logp: ``[B, T]`` (any leading shape; tokens on the last axis).
        mask: optional ``[B, T]`` 0/1 mask.

    Returns:
        ``[B]``: one penalty per sequence.
    """
    lp, rp, _ = _pair(logp, ref_logp, mask)
    return (lp - rp).sum(dim=-1)


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str = "k1", mask: Optional[Tensor] = None, *,
                validate: bool = True) -> Tensor:
    r"""Per-token estimators of :math:`\mathrm{KL}(\pi_\theta \| \pi_{\text{ref}})` (Schulman, 2020).

    For a token sampled from :math:`\pi_\theta`, let
    :math:`\log r = \log \pi_{\text{ref}}(y_t) - \log \pi_\theta(y_t)` (= ``ref_logp - logp``):

    - ``"k1"``: :math:`-\log r`. Unbiased, high variance, can be negative (unit 2's per-token penalty).
    - ``"k2"``: :math:`\tfrac12 (\log r)^2`. Always :math:`\ge 0`, low variance, **biased**
      (its expectation is an f-divergence that matches KL only to second order).
    - ``"k3"``: :math:`(r - 1) - \log r`. Unbiased (:math:`\mathbb{E}_{\pi_\theta}[r] = 1`) and
      always :math:`\ge 0` (since :math:`\log r \le r - 1`), with lower variance than k1 when the
      two policies are close. Computed as ``expm1(log r) - log r`` for accuracy near 0.

    Used in unit 5 for the per-token KL reward and for monitoring (PPO's ``approx_kl`` is k3 with
    the old policy in the role of :math:`\pi_\theta` and the current one in the role of the
    reference). ``validate=False`` skips the checks that read values (see :mod:`rlhf_lab.masked`).

    Returns:
        ``[B, T]`` estimates; padded positions are 0.
    """
    if kind not in KL_ESTIMATORS:
        raise ValueError(f"kind must be one of {KL_ESTIMATORS}, got {kind!r}")
    lp, rp, _ = _pair(logp, ref_logp, mask, validate)
    log_r = rp - lp  # exactly 0 at padded positions, so every estimator is 0 there
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    return torch.expm1(log_r) - log_r


def categorical_kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    r"""Exact :math:`\mathrm{KL}(p \,\|\, q) = \sum_a p(a)\,(\log p(a) - \log q(a))` over the last axis.

    ``p`` and ``q`` are given by logits (any unnormalized log-probabilities; ``-inf`` marks an
    impossible action). Both are normalized with ``log_softmax``, so large logits are safe.
    Terms with :math:`p(a) = 0` count 0; :math:`p(a) > 0 = q(a)` gives ``inf``. The result is
    clamped at 0 (rounding can otherwise give ``-1e-8``). This is the quantity that units 1, 2 and 4
    estimate by sampling; use it on full next-token distributions (logits ``[B, T, V]`` give ``[B, T]``).

    Returns:
        ``p_logits.shape[:-1]``.
    """
    check_same_shape(p_logits=p_logits, q_logits=q_logits)
    if p_logits.dim() < 1 or p_logits.shape[-1] == 0:
        raise ValueError("p_logits must have a non-empty last axis (the actions)")
    if not p_logits.is_floating_point():
        raise ValueError(f"p_logits must be a floating-point tensor, got {p_logits.dtype}")
    for name, t in (("p_logits", p_logits), ("q_logits", q_logits)):
        if bool(torch.isnan(t).any()) or bool((t == float("inf")).any()):
            raise ValueError(f"{name} contains NaN or +inf")
        if bool((t == float("-inf")).all(dim=-1).any()):
            raise ValueError(f"{name} has a row of only -inf: no distribution")
    log_p = torch.log_softmax(p_logits, dim=-1)
    log_q = torch.log_softmax(q_logits.to(p_logits.dtype), dim=-1)
    p = log_p.exp()
    support = p > 0
    terms = torch.where(support, p * (torch.where(support, log_p, 0.0) - torch.where(support, log_q, 0.0)), 0.0)
    # where p > 0 and q = 0 the term above is p·(log p − (−inf)) = +inf, as it should be
    return terms.sum(dim=-1).clamp_min(0.0)
