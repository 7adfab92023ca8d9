r"""Unit 6's tabular lab: where the KL term leads a softmax policy, in the loss or in the reward.

One prompt, a small vocabulary of responses, a softmax policy :math:`\pi_\theta = \mathrm{softmax}(z)`
over it, a reference :math:`\pi_{\mathrm{ref}}` and a reward vector :math:`r`. With
:math:`\log r(y) = \log\pi_{\mathrm{ref}}(y) - \log\pi_\theta(y)` and the per-sample estimators
of :func:`rlhf_lab.divergence.kl_estimate` (:math:`k_1 = -\log r`, :math:`k_2 = \tfrac12(\log r)^2`,
:math:`k_3 = (r - 1) - \log r`), the KL term is either

- **in the loss** (``placement="loss"``): :math:`\beta\,k(y)` is added to the loss of a sampled
  :math:`y` and differentiated with :math:`y` held fixed. Its expected gradient is
  :math:`\mathbb{E}_{y\sim\pi_\theta}[\nabla_z k(y)]`: 0 for ``k1``,
  :math:`\nabla_z\mathrm{KL}(\pi_\theta\|\pi_{\mathrm{ref}})` for ``k2`` and
  :math:`\nabla_z\mathrm{KL}(\pi_{\mathrm{ref}}\|\pi_\theta)` for ``k3`` (GRPO's choice);
- **in the reward** (``placement="reward"``): :math:`-\beta\,k(y)` is added to the reward and
  enters the policy gradient as a weight of :math:`\nabla_z\log\pi_\theta(y)`, with no gradient
  through it. For ``k1`` its expected gradient is
  :math:`\nabla_z\mathrm{KL}(\pi_\theta\|\pi_{\mathrm{ref}})` (PPO's per-token KL reward).

Every expectation is computed exactly by enumerating the vocabulary, and estimated by Monte Carlo
from samples. :func:`train` runs gradient descent on the logits under one choice: k2 in the loss
and k1 in the reward reach unit 4's :math:`\pi^* \propto \pi_{\mathrm{ref}}\,e^{r/\beta}`
(:func:`rlhf_lab.optimal_policy.optimal_policy`); k3 in the loss reaches the maximizer of
:math:`\mathbb{E}[r] - \beta\,\mathrm{KL}(\pi_{\mathrm{ref}}\|\pi_\theta)`
(:func:`forward_kl_optimum`); k1 in the loss ignores the KL and follows the reward alone. The
derivations are in :mod:`rlhf_lab.derivations.beyond_ppo`.

Everything is computed in float64 (inputs are converted), so results do not depend on the CPU.

Example::

    >>> import torch
    >>> ref = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    >>> z = torch.log(torch.tensor([0.2, 0.3, 0.5]))
    >>> g = kl_term_gradient(z, ref, "k1", "loss")
    >>> bool(g.abs().max() < 1e-12)             # k1 in the loss: zero expected gradient
    True
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from ..divergence import KL_ESTIMATORS, kl_estimate
from ..masked import check_scalar

Tensor = torch.Tensor

__all__ = [
    "PLACEMENTS",
    "CHOICES",
    "kl_term_gradient",
    "kl_term_gradient_mc",
    "MonteCarloGradient",
    "divergence_gradients",
    "forward_kl_optimum",
    "train",
    "Trajectory",
]

PLACEMENTS = ("loss", "reward")
# the four choices unit 6 compares: (estimator, placement)
CHOICES = (("k1", "loss"), ("k2", "loss"), ("k3", "loss"), ("k1", "reward"))


def _vector(name: str, x, *, logits: bool = True) -> Tensor:
    # a list of Python floats goes straight to float64, not through float32
    try:
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a vector of numbers, got {x!r}") from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real numbers, got {t.dtype}")
    t = t.detach().to(torch.float64)
    if t.dim() != 1 or t.shape[0] < 2:
        raise ValueError(f"{name} must be a vector over a vocabulary of at least 2 responses, "
                         f"got shape {tuple(t.shape)}")
    if logits and bool((t == float("inf")).any() | torch.isnan(t).any()):
        raise ValueError(f"{name} contains NaN or +inf")
    if not logits and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def _choice(estimator: str, placement: str) -> None:
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")


def _inputs(logits, ref_logits) -> tuple[Tensor, Tensor]:
    z = _vector("logits", logits)
    ref = _vector("ref_logits", ref_logits)
    if z.shape != ref.shape:
        raise ValueError(f"ref_logits has shape {tuple(ref.shape)} but logits has shape "
                         f"{tuple(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("logits must be finite (every response possible under the policy)")
    if bool((ref == float("-inf")).any()):
        raise ValueError("ref_logits must be finite: a response impossible under the reference "
                         "makes every estimator infinite where the policy samples it")
    return z, torch.log_softmax(ref, dim=-1)


def _per_response(z: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """k(y) for every response y of the vocabulary, as a function of the logits z."""
    return kl_estimate(torch.log_softmax(z, dim=-1), ref_logp, kind=estimator)


def _surrogate(z: Tensor, ref_logp: Tensor, estimator: str, placement: str) -> Tensor:
    """A scalar whose gradient in z is the exact expected gradient of the KL term: the
    enumeration over the vocabulary, weighted by the (detached) sampling probabilities."""
    logp = torch.log_softmax(z, dim=-1)
    probs = logp.detach().exp()
    if placement == "loss":
        return (probs * kl_estimate(logp, ref_logp, kind=estimator)).sum()
    k = kl_estimate(logp.detach(), ref_logp, kind=estimator)      # a reward: no gradient
    return (probs * k * logp).sum()


def kl_term_gradient(logits, ref_logits, estimator: str = "k3", placement: str = "loss") -> Tensor:
    r"""The exact expected gradient, in the logits, of the KL term (the penalty, to be minimized).

    - ``placement="loss"``: :math:`\sum_y \pi_\theta(y)\,\nabla_z k(y)` (the sample held fixed);
    - ``placement="reward"``: :math:`\sum_y \pi_\theta(y)\,k(y)\,\nabla_z\log\pi_\theta(y)`
      (the estimate is a number in the reward's place; a policy-gradient step on the reward
      :math:`r - \beta k` descends :math:`\beta` times this).

    Multiply by :math:`\beta` for the term's share of the update. Computed by enumerating the
    vocabulary with autograd (no closed form is used).

    Args:
        logits: ``[V]`` policy logits :math:`z`.
        ref_logits: ``[V]`` reference logits (finite).
        estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
        placement: ``"loss"`` or ``"reward"``.

    Returns:
        ``[V]`` float64.
    """
    _choice(estimator, placement)
    z, ref_logp = _inputs(logits, ref_logits)
    z = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_surrogate(z, ref_logp, estimator, placement), z)
    return grad


def _per_sample_gradients(z: Tensor, ref_logp: Tensor, estimator: str, placement: str) -> Tensor:
    """``[V, V]``: row y is the gradient in z contributed by one sample of response y."""
    if placement == "loss":
        return torch.autograd.functional.jacobian(
            lambda zz: _per_response(zz, ref_logp, estimator), z)
    k = _per_response(z, ref_logp, estimator)
    score = torch.autograd.functional.jacobian(lambda zz: torch.log_softmax(zz, dim=-1), z)
    return k[:, None] * score


class MonteCarloGradient(NamedTuple):
    """A Monte Carlo gradient estimate: ``mean`` ``[V]`` and its standard error ``stderr``
    ``[V]`` (sample standard deviation of the per-sample gradients / √n)."""

    mean: Tensor
    stderr: Tensor


def kl_term_gradient_mc(logits, ref_logits, estimator: str = "k3", placement: str = "loss",
                        n_samples: int = 1000,
                        generator: Optional[torch.Generator] = None) -> MonteCarloGradient:
    """Monte Carlo estimate of :func:`kl_term_gradient` from ``n_samples`` responses drawn from
    the policy: the average of the per-sample gradients (each computed by autograd with its
    sample held fixed, or with the estimate as a reward weight), and its standard error.

    Its standard error shows what a value's low variance does not: k3 in the loss and k1 in the
    reward estimate different gradients with different noise.
    """
    _choice(estimator, placement)
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    z, ref_logp = _inputs(logits, ref_logits)
    probs = torch.softmax(z, dim=-1)
    samples = torch.multinomial(probs, n_samples, replacement=True, generator=generator)
    per_sample = _per_sample_gradients(z, ref_logp, estimator, placement)[samples]
    return MonteCarloGradient(per_sample.mean(dim=0),
                              per_sample.std(dim=0) / math.sqrt(n_samples))


def divergence_gradients(logits, ref_logits) -> dict:
    r"""Gradients in the logits of the two divergences, by autograd on the exact KLs: ``"reverse"``
    :math:`\nabla_z\mathrm{KL}(\pi_\theta\|\pi_{\mathrm{ref}})` and ``"forward"``
    :math:`\nabla_z\mathrm{KL}(\pi_{\mathrm{ref}}\|\pi_\theta)` (``[V]`` float64 each). The
    references that :func:`kl_term_gradient` is compared with."""
    z, ref_logp = _inputs(logits, ref_logits)
    out = {}
    for name in ("reverse", "forward"):
        zz = z.clone().requires_grad_(True)
        logp = torch.log_softmax(zz, dim=-1)
        if name == "reverse":
            kl = (logp.exp() * (logp - ref_logp)).sum()
        else:
            kl = (ref_logp.exp() * (ref_logp - logp)).sum()
        (out[name],) = torch.autograd.grad(kl, zz)
    return out


def forward_kl_optimum(ref_probs, rewards, beta: float) -> Tensor:
    r"""The maximizer of :math:`\mathbb{E}_\pi[r] - \beta\,\mathrm{KL}(\pi_{\mathrm{ref}}\|\pi)`
    over distributions: where k3 in the loss leads.

    .. math::
        \pi(a) = \frac{\beta\,\pi_{\mathrm{ref}}(a)}{c - r(a)}, \qquad
        c = \beta + \mathbb{E}_\pi[r] > \max_{a:\,\pi_{\mathrm{ref}}(a) > 0} r(a),

    with :math:`c` the unique root of :math:`\sum_a \beta\pi_{\mathrm{ref}}(a)/(c - r(a)) = 1`
    (the sum falls from :math:`+\infty` to 0 as :math:`c` grows), found by bisection. The
    objective is concave in :math:`\pi`, so this stationary point is the maximum. Derived in
    :func:`rlhf_lab.derivations.beyond_ppo.forward_kl_optimum`. Unlike unit 4's
    :math:`\pi^*`, it is never more than :math:`\beta/(c - r(a))` times the reference, so it keeps
    mass wherever the reference has it.

    Args:
        ref_probs: ``[V]`` reference probabilities (non-negative, summing to one).
        rewards: ``[V]`` finite rewards.
        beta: ``> 0``.

    Returns:
        ``[V]`` float64 probabilities.
    """
    b = check_scalar("beta", beta, positive=True)
    q = _vector("ref_probs", ref_probs, logits=False)
    r = _vector("rewards", rewards, logits=False)
    if q.shape != r.shape:
        raise ValueError(f"rewards has shape {tuple(r.shape)} but ref_probs has shape "
                         f"{tuple(q.shape)}")
    if bool((q < 0).any()) or abs(float(q.sum()) - 1.0) > 1e-6:
        raise ValueError("ref_probs must be non-negative and sum to 1")
    support = q > 0
    top = float(r[support].max())
    # Σ_a β q_a/(c − r_a) is ≥ β q_top/(c − top) near top and ≤ β/(c − top) everywhere
    lo, hi = top, top + b + 1.0
    while float((b * q[support] / (hi - r[support])).sum()) > 1.0:
        hi = top + 2 * (hi - top)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        total = float((b * q[support] / (mid - r[support])).sum()) if mid > top else math.inf
        lo, hi = (mid, hi) if total > 1.0 else (lo, mid)
    c = hi
    probs = torch.where(support, b * q / (c - r), torch.zeros_like(q))
    return probs / probs.sum()


class Trajectory(NamedTuple):
    """One training run, one row per step (``steps + 1`` rows, the start included).

    Attributes:
        probs: ``[steps + 1, V]`` the policy.
        expected_reward: ``[steps + 1]`` :math:`\\mathbb{E}_\\pi[r]`.
        reverse_kl: ``[steps + 1]`` :math:`\\mathrm{KL}(\\pi\\|\\pi_{\\mathrm{ref}})`.
        forward_kl: ``[steps + 1]`` :math:`\\mathrm{KL}(\\pi_{\\mathrm{ref}}\\|\\pi)`.
    """

    probs: Tensor
    expected_reward: Tensor
    reverse_kl: Tensor
    forward_kl: Tensor


def _loo_mean(x: Tensor) -> Tensor:
    """Each sample's leave-one-out mean of ``x`` (RLOO's baseline)."""
    n = x.shape[0]
    return (x.sum() - x) / (n - 1)


def _exact_update(z: Tensor, ref_logp: Tensor, r: Tensor, beta: float, estimator: str,
                  placement: str) -> Tensor:
    """The exact gradient of the loss by enumeration: −∇_z E_π[r] (the policy gradient with the
    mean baseline) plus β times the KL term's expected gradient (see :func:`kl_term_gradient`)."""
    zz = z.clone().requires_grad_(True)
    logp = torch.log_softmax(zz, dim=-1)
    probs = logp.detach().exp()
    loss = -(probs * (r - (probs * r).sum()) * logp).sum()
    if beta != 0:
        loss = loss + beta * _surrogate(zz, ref_logp, estimator, placement)
    (g,) = torch.autograd.grad(loss, zz)
    return g


def _sampled_update(z, ref_logp, r, beta, estimator, placement, n, generator) -> Tensor:
    """A Monte Carlo gradient of the loss from n samples: REINFORCE with the leave-one-out
    baseline on the reward (shaped by −β k for the reward placement), plus β ∇k for the loss
    placement."""
    probs = torch.softmax(z, dim=-1)
    y = torch.multinomial(probs, n, replacement=True, generator=generator)
    # per-sample gradients gathered from one row per response of the vocabulary
    score = torch.autograd.functional.jacobian(lambda zz: torch.log_softmax(zz, dim=-1), z)[y]
    reward = r[y]
    if placement == "reward" and beta != 0:
        reward = reward - beta * _per_response(z, ref_logp, estimator)[y]
    grad = -((reward - _loo_mean(reward))[:, None] * score).mean(dim=0)
    if placement == "loss" and beta != 0:
        grad = grad + beta * _per_sample_gradients(z, ref_logp, estimator, "loss")[y].mean(dim=0)
    return grad


def train(ref_logits, rewards, beta: float, estimator: str = "k3", placement: str = "loss", *,
          steps: int = 2000, lr: float = 1.0, init_logits=None, n_samples: Optional[int] = None,
          generator: Optional[torch.Generator] = None) -> Trajectory:
    r"""Gradient descent on the logits of a softmax policy under one placement of the KL term.

    The loss's gradient at each step is the policy gradient of the reward,
    :math:`-\nabla_z\mathbb{E}_\pi[r]`, plus :math:`\beta` times :func:`kl_term_gradient`
    (``placement="loss"``: :math:`\beta\,\mathbb{E}[\nabla k]`; ``"reward"``: the policy gradient of
    the shaped reward :math:`r - \beta k`). With ``n_samples=None`` both are exact (enumeration);
    with ``n_samples=n`` each step uses n sampled responses (REINFORCE with the leave-one-out
    baseline, RLOO), so the curves are noisy.

    Where it ends (exact gradients, enough steps): k2 in the loss and k1 in the reward reach
    :math:`\pi^* = \pi_{\mathrm{ref}}e^{r/\beta}/Z`; k3 in the loss reaches
    :func:`forward_kl_optimum`; k1 in the loss follows the reward alone (the same trajectory as
    ``beta=0``) toward the best response.

    Args:
        ref_logits: ``[V]`` reference logits (finite).
        rewards: ``[V]`` finite rewards.
        beta: KL coefficient ``>= 0``.
        estimator, placement: the choice (see :data:`CHOICES`).
        steps: number of updates (``>= 1``).
        lr: step size ``> 0``.
        init_logits: ``[V]`` starting logits (default: the reference's, as in RLHF).
        n_samples: ``None`` for exact gradients, or samples per step (``>= 2``).
        generator: random generator for the samples.

    Returns:
        :class:`Trajectory`.
    """
    _choice(estimator, placement)
    b = check_scalar("beta", beta, nonnegative=True)
    step_size = check_scalar("lr", lr, positive=True)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if n_samples is not None and (not isinstance(n_samples, int) or isinstance(n_samples, bool)
                                  or n_samples < 2):
        raise ValueError(f"n_samples must be None or an integer >= 2, got {n_samples!r}")
    z, ref_logp = _inputs(ref_logits if init_logits is None else init_logits, ref_logits)
    r = _vector("rewards", rewards, logits=False)
    if r.shape != z.shape:
        raise ValueError(f"rewards has shape {tuple(r.shape)} but ref_logits has shape "
                         f"{tuple(z.shape)}")
    ref_probs = ref_logp.exp()
    rows = []
    for step in range(steps + 1):
        rows.append(torch.softmax(z, dim=-1))
        if step == steps:
            break
        if n_samples is None:
            grad = _exact_update(z, ref_logp, r, b, estimator, placement)
        else:
            grad = _sampled_update(z, ref_logp, r, b, estimator, placement, n_samples, generator)
        z = z - step_size * grad
    probs = torch.stack(rows)
    logp = torch.log(probs)
    return Trajectory(
        probs=probs,
        expected_reward=probs @ r,
        reverse_kl=(probs * (logp - ref_logp)).sum(dim=-1),
        forward_kl=(ref_probs * (ref_logp - logp)).sum(dim=-1),
    )
