r"""The closed-form optimum of the KL-regularized objective, on a table of actions (unit 4).

For one prompt with a finite set of responses (actions) :math:`a`, reference probabilities
:math:`\pi_{\text{ref}}(a)` and rewards :math:`r(a)`, the objective

.. math::
    J_\beta(\pi) = \mathbb{E}_{a \sim \pi}[r(a)] - \beta\, \mathrm{KL}(\pi \,\|\, \pi_{\text{ref}})

is maximized by :math:`\pi^*(a) = \pi_{\text{ref}}(a)\, e^{r(a)/\beta} / Z` with
:math:`Z = \sum_a \pi_{\text{ref}}(a)\, e^{r(a)/\beta}`, and
:math:`J_\beta(\pi) = \beta \log Z - \beta\,\mathrm{KL}(\pi \,\|\, \pi^*)`, so the optimal value is
:math:`\beta \log Z`.

Every function works over the **last axis** (leading axes are independent tables) and accepts
tensors or array-likes (lists, NumPy arrays; converted with ``torch.as_tensor``, integers to the
default float dtype). Everything is computed in log space (``log_softmax`` / ``logsumexp``), so
``r / beta`` of 1e4 or more is fine.
"""

from __future__ import annotations

import torch

from .masked import check_scalar

Tensor = torch.Tensor


def _float(name: str, x, like: Tensor = None) -> Tensor:
    if like is not None and not isinstance(x, torch.Tensor) and not hasattr(x, "dtype"):
        t = torch.as_tensor(x, dtype=like.dtype, device=like.device)  # a list: take the table's dtype
    else:
        t = torch.as_tensor(x, device=None if like is None else like.device)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype() if like is None else like.dtype)
    if t.dim() == 0:
        raise ValueError(f"{name} must have at least one axis (the actions)")
    if t.shape[-1] == 0:
        raise ValueError(f"{name} has no actions (its last axis is empty)")
    return t


def _inputs(ref_probs, rewards, probs=None):
    ref = _float("ref_probs", ref_probs)
    r = _float("rewards", rewards, ref)
    tensors = {"ref_probs": ref, "rewards": r}
    if probs is not None:
        tensors = {"probs": _float("probs", probs, ref), **tensors}
    dtype = ref.dtype
    for t in tensors.values():
        dtype = torch.promote_types(dtype, t.dtype)
    try:
        shape = torch.broadcast_shapes(*(t.shape for t in tensors.values()))
    except RuntimeError:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())
        raise ValueError(f"shapes do not broadcast: {shapes}") from None
    out = {}
    for name, t in tensors.items():
        # tolerance of the sum-to-1 check from the dtype the caller gave (it catches unnormalized
        # tables, not rounding): float32 numbers promoted to float64 still sum to 1 +- 1e-7
        tol = {torch.float64: 1e-6, torch.float32: 1e-4}.get(t.dtype, 1e-2)
        t = t.to(dtype)
        if bool(torch.isnan(t).any()) or bool(torch.isinf(t).any()):
            raise ValueError(f"{name} contains NaN or inf")
        if name != "rewards":
            if bool((t < 0).any()):
                raise ValueError(f"{name} has negative probabilities")
            total = t.sum(dim=-1)
            if bool(((total - 1).abs() > tol * t.shape[-1]).any()):
                raise ValueError(f"{name} must sum to 1 over the last axis")
        out[name] = t.expand(shape) if t.shape != shape else t
    return out


def _logits(ref: Tensor, r: Tensor, beta: float) -> Tensor:
    # log π_ref + r/β; actions with π_ref = 0 get -inf and stay impossible
    return torch.log(ref) + r / beta


def optimal_policy(ref_probs, rewards, beta: float) -> Tensor:
    r"""The optimal policy :math:`\pi^*(a) = \pi_{\text{ref}}(a)\, e^{r(a)/\beta} / Z` (unit 4).

    Computed as ``softmax(log π_ref + r/β)``, which never overflows. Limits:
    :math:`\beta \to \infty` gives :math:`\pi_{\text{ref}}`; :math:`\beta \to 0` puts all the
    mass on the reward's argmax (shared in proportion to :math:`\pi_{\text{ref}}` on ties).
    ``beta`` must be ``> 0`` (at :math:`\beta = 0` the optimum is that argmax, not this formula).
    """
    b = check_scalar("beta", beta, positive=True)
    t = _inputs(ref_probs, rewards)
    return torch.softmax(_logits(t["ref_probs"], t["rewards"], b), dim=-1)


def log_partition(ref_probs, rewards, beta: float) -> Tensor:
    r"""The log-partition :math:`\log Z = \log \sum_a \pi_{\text{ref}}(a)\, e^{r(a)/\beta}` (``logsumexp``).

    :math:`\beta \log Z` is the optimal value :math:`\max_\pi J_\beta(\pi)`; :math:`\log Z` does
    not depend on :math:`\theta`, which is why unit 4 can drop it from the loss. Returns the
    shape of the inputs without their last axis.
    """
    b = check_scalar("beta", beta, positive=True)
    t = _inputs(ref_probs, rewards)
    return torch.logsumexp(_logits(t["ref_probs"], t["rewards"], b), dim=-1)


def regularized_value(probs, ref_probs, rewards, beta: float) -> Tensor:
    r""":math:`J_\beta(\pi) = \sum_a \pi(a)\, r(a) - \beta \sum_a \pi(a) \log\frac{\pi(a)}{\pi_{\text{ref}}(a)}`.

    The quantity that :func:`optimal_policy` maximizes (unit 4). Terms with :math:`\pi(a) = 0`
    count 0; :math:`\pi(a) > 0 = \pi_{\text{ref}}(a)` makes the KL infinite and the value
    ``-inf`` (for ``beta > 0``). ``beta >= 0`` (``beta = 0`` gives the expected reward).
    """
    b = check_scalar("beta", beta, nonnegative=True)
    t = _inputs(ref_probs, rewards, probs)
    p, ref, r = t["probs"], t["ref_probs"], t["rewards"]
    support = p > 0
    safe_p = torch.where(support, p, torch.ones_like(p))
    log_ratio = torch.log(safe_p) - torch.log(ref)  # +inf where ref = 0 < p
    kl = torch.where(support, p * log_ratio, torch.zeros_like(p)).sum(dim=-1)
    expected = (p * r).sum(dim=-1)
    if b == 0:
        return expected
    return expected - b * kl
