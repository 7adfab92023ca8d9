"""Unit 3's small problems: a softmax bandit and a tabular episodic MDP for REINFORCE vs A2C.

Everything here is small enough to be computed exactly, which is what lets the course *check*
the policy gradient instead of trusting it:

- a **softmax policy** over a few actions, π_θ(a) = exp(θ_a) / Σ_b exp(θ_b). Its score is
  ∇_θ log π_θ(a) = e_a − π_θ (:func:`softmax_score`), so the exact gradient of
  J(θ) = Σ_a π_θ(a) A(a) is ∂J/∂θ_k = π_θ(k) (A(k) − Σ_a π_θ(a) A(a)) (:func:`softmax_pg_gradient`);
- an **episodic MDP** (:class:`EpisodicMDP`) with a handful of states, a fixed horizon H and a
  tabular softmax policy θ ∈ R^{S×A}. Its expected return J(θ) is computed exactly by dynamic
  programming (differentiable, so autograd gives the true ∇J), and episodes are sampled in a
  batch, so Monte-Carlo gradient estimates (:func:`episode_gradients`) can be compared with the
  truth: their mean (unbiasedness) and their spread (:func:`gradient_variance`);
- the A2C loss that unit 3 trains the MDP with is a general loss and lives in the library:
  :func:`rlhf_lab.objectives.a2c_loss`.

Example::

    >>> import torch
    >>> logits = torch.log(torch.tensor([0.2, 0.4, 0.4]))
    >>> softmax_pg_gradient(logits, torch.tensor([2.0, -1.0, 0.0]))
    tensor([ 0.4000, -0.4000,  0.0000])
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import torch

from ..masked import check_finite, check_same_shape, check_scalar

Tensor = torch.Tensor

__all__ = [
    "softmax_score",
    "softmax_pg_gradient",
    "EpisodicMDP",
    "EpisodeBatch",
    "episode_gradients",
    "gradient_variance",
]


# ---------------------------------------------------------------------------------------------
# the softmax bandit
# ---------------------------------------------------------------------------------------------

def _check_logits(logits: Tensor, name: str = "logits") -> Tensor:
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor")
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(f"{name} must have at least 2 actions on its last axis, "
                         f"got shape {tuple(logits.shape)}")
    check_finite(name, logits)
    return logits


def softmax_score(logits: Tensor, action) -> Tensor:
    """∇_θ log π_θ(a) = e_a − π_θ for a softmax policy π_θ = softmax(θ) (the *score function*).

    ``logits`` has the actions on its last axis; ``action`` is an index (or a tensor of indices
    matching ``logits.shape[:-1]``). Unit 3.
    """
    _check_logits(logits)
    probs = torch.softmax(logits, dim=-1)
    action = torch.as_tensor(action, device=logits.device, dtype=torch.long)
    n = logits.shape[-1]
    if bool(((action < 0) | (action >= n)).any()):
        raise ValueError(f"action must lie in 0..{n - 1}, got {action.tolist()}")
    if action.shape != logits.shape[:-1]:
        raise ValueError(f"action has shape {tuple(action.shape)}, expected "
                         f"{tuple(logits.shape[:-1])}")
    return torch.nn.functional.one_hot(action, n).to(logits.dtype) - probs


def softmax_pg_gradient(logits: Tensor, advantages: Tensor) -> Tensor:
    """Exact policy gradient of a softmax bandit: ∂/∂θ_k Σ_a π_θ(a) A(a) = π_θ(k)(A(k) − Ā).

    Ā = Σ_a π_θ(a) A(a) is the policy's average advantage; it is 0 when ``advantages`` really
    are advantages of this policy (A = Q − V), and then the gradient is simply π_θ(k) A(k):
    an action with A(k) = 0 gets no push at all. Equals E_{a∼π_θ}[A(a) ∇_θ log π_θ(a)]
    (the log-derivative trick). Unit 3.
    """
    _check_logits(logits)
    if not isinstance(advantages, torch.Tensor):
        raise ValueError(f"advantages must be a torch.Tensor, got {type(advantages).__name__}")
    check_same_shape(logits=logits, advantages=advantages)
    check_finite("advantages", advantages)
    probs = torch.softmax(logits, dim=-1)
    adv = advantages.to(probs.dtype)
    mean_adv = (probs * adv).sum(dim=-1, keepdim=True)
    return probs * (adv - mean_adv)


# ---------------------------------------------------------------------------------------------
# a tabular episodic MDP
# ---------------------------------------------------------------------------------------------

class EpisodeBatch(NamedTuple):
    """A batch of episodes: ``states``, ``actions`` (long) and ``rewards`` (float), each ``[N, H]``."""

    states: Tensor
    actions: Tensor
    rewards: Tensor


@dataclasses.dataclass(frozen=True)
class EpisodicMDP:
    """A finite-horizon MDP: ``horizon`` steps, transition table ``P[s, a, s']``, mean rewards
    ``R[s, a]`` (plus Gaussian noise of std ``reward_noise`` when sampled), start distribution
    ``initial[s]``. A policy is a logits table ``[n_states, n_actions]`` (the same at every step).
    """

    transitions: Tensor
    rewards: Tensor
    initial: Tensor
    horizon: int
    reward_noise: float = 0.0

    def __post_init__(self):
        P, R, mu = self.transitions, self.rewards, self.initial
        for name, x in (("transitions", P), ("rewards", R), ("initial", mu)):
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise ValueError(f"{name} must be a floating-point torch.Tensor")
        if P.dim() != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"transitions must have shape [S, A, S], got {tuple(P.shape)}")
        S, A = P.shape[0], P.shape[1]
        if tuple(R.shape) != (S, A):
            raise ValueError(f"rewards has shape {tuple(R.shape)}, expected {(S, A)}")
        if tuple(mu.shape) != (S,):
            raise ValueError(f"initial has shape {tuple(mu.shape)}, expected {(S,)}")
        if bool((P < 0).any()) or not torch.allclose(P.sum(-1), torch.ones(S, A, dtype=P.dtype)):
            raise ValueError("transitions must hold probability rows that sum to 1")
        if bool((mu < 0).any()) or abs(float(mu.sum()) - 1) > 1e-6:
            raise ValueError("initial must be a probability vector")
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {self.horizon!r}")
        check_scalar("reward_noise", self.reward_noise, nonnegative=True)

    @classmethod
    def random(cls, n_states: int = 4, n_actions: int = 3, horizon: int = 8, *,
               reward_offset: float = 0.0, reward_scale: float = 1.0, reward_noise: float = 0.0,
               seed: int = 0) -> "EpisodicMDP":
        """A random MDP: Dirichlet(1) transitions, rewards ``offset + scale·U(0, 1)``, uniform start.

        A large ``reward_offset`` does not change which policy is best (every episode gets the
        same extra ``offset·H``) but makes returns large, which is what hurts REINFORCE without
        a baseline.
        """
        g = torch.Generator().manual_seed(seed)
        # Dirichlet(1) rows: normalized exponential draws (from our own generator)
        gamma = -torch.log(torch.rand(n_states, n_actions, n_states, generator=g, dtype=torch.float64))
        P = gamma / gamma.sum(-1, keepdim=True)
        R = reward_offset + reward_scale * torch.rand(n_states, n_actions, generator=g, dtype=torch.float64)
        mu = torch.full((n_states,), 1.0 / n_states, dtype=torch.float64)
        return cls(P.float(), R.float(), mu.float(), int(horizon), float(reward_noise))

    @property
    def n_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transitions.shape[1]

    def _logits(self, logits: Tensor) -> Tensor:
        _check_logits(logits)
        if tuple(logits.shape) != (self.n_states, self.n_actions):
            raise ValueError(f"logits has shape {tuple(logits.shape)}, expected "
                             f"{(self.n_states, self.n_actions)}")
        return logits

    def q_values(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Exact ``(V, Q)`` by backward induction: V ``[H+1, S]`` (V_H = 0), Q ``[H, S, A]``.

        Q_t(s, a) = R(s, a) + Σ_s' P(s'|s, a) V_{t+1}(s'),  V_t(s) = Σ_a π(a|s) Q_t(s, a).
        Differentiable in ``logits``.
        """
        logits = self._logits(logits)
        dtype = logits.dtype
        P, R = self.transitions.to(logits.device, dtype), self.rewards.to(logits.device, dtype)
        probs = torch.softmax(logits, dim=-1)
        V = [torch.zeros(self.n_states, dtype=dtype, device=logits.device)]
        Qs = []
        for _ in range(self.horizon):
            Q = R + P @ V[0]
            V.insert(0, (probs * Q).sum(-1))
            Qs.insert(0, Q)
        return torch.stack(V), torch.stack(Qs)

    def expected_return(self, logits: Tensor) -> Tensor:
        """J(θ) = E_τ[Σ_t r_t] exactly (a differentiable scalar): autograd of it is the true ∇J."""
        V, _ = self.q_values(logits)
        return (self.initial.to(V) * V[0]).sum()

    def rollout(self, logits: Tensor, n: int, generator: Optional[torch.Generator] = None) -> EpisodeBatch:
        """Sample ``n`` episodes with the policy (no gradient flows through sampling)."""
        logits = self._logits(logits)
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        n, H = int(n), self.horizon
        probs = torch.softmax(logits.detach().cpu().double(), dim=-1)
        P, R = self.transitions.double(), self.rewards.double()
        states = torch.empty(n, H, dtype=torch.long)
        actions = torch.empty(n, H, dtype=torch.long)
        rewards = torch.empty(n, H, dtype=torch.float64)
        s = torch.multinomial(self.initial.double().expand(n, -1), 1, generator=generator).squeeze(1)
        for t in range(H):
            a = torch.multinomial(probs[s], 1, generator=generator).squeeze(1)
            r = R[s, a]
            if self.reward_noise > 0:
                r = r + self.reward_noise * torch.randn(n, generator=generator, dtype=torch.float64)
            states[:, t], actions[:, t], rewards[:, t] = s, a, r
            s = torch.multinomial(P[s, a], 1, generator=generator).squeeze(1)
        dev = logits.device
        return EpisodeBatch(states.to(dev), actions.to(dev), rewards.to(dev, logits.dtype))


def episode_gradients(logits: Tensor, states: Tensor, actions: Tensor, weights: Tensor) -> Tensor:
    """One policy-gradient estimate per episode: g_n = Σ_t Ψ_{n,t} ∇_θ log π_θ(a_{n,t} | s_{n,t}).

    For a tabular softmax policy the score of step t only touches row s_t of θ:
    ∇_θ log π(a|s) = e_s ⊗ (e_a − π(·|s)). ``weights`` Ψ is the return, the reward-to-go
    (``advantages.discounted_returns(rewards, 1.0)``) or an advantage. Returns ``[N, S, A]``; the mean over episodes is the batch
    estimate of ∇J.
    """
    _check_logits(logits)
    check_same_shape(states=states, actions=actions, weights=weights)
    N, H = states.shape
    S, A = logits.shape
    if bool(((states < 0) | (states >= S)).any()) or bool(((actions < 0) | (actions >= A)).any()):
        raise ValueError("states or actions hold indices outside the logits table")
    probs = torch.softmax(logits.detach(), dim=-1)
    score = torch.nn.functional.one_hot(actions, A).to(probs.dtype) - probs[states]   # [N, H, A]
    contrib = score * weights.to(score.dtype).unsqueeze(-1)
    grads = torch.zeros(N, S, A, dtype=score.dtype, device=score.device)
    idx = states.unsqueeze(-1).expand(N, H, A)
    grads.scatter_add_(1, idx, contrib)
    return grads


def gradient_variance(grads: Tensor) -> Tensor:
    """Total variance of per-episode gradient estimates: E‖g − ḡ‖² (the trace of the covariance).

    ``grads`` is ``[N, ...]`` (one estimate per episode); the batch-mean estimate over N episodes
    has N times less of it.
    """
    if not isinstance(grads, torch.Tensor) or grads.dim() < 1 or grads.shape[0] < 2:
        raise ValueError("grads must be a tensor [N, ...] with N >= 2")
    flat = grads.reshape(grads.shape[0], -1)
    return flat.var(dim=0, unbiased=True).sum()
