"""A tabular problem small enough to see whole: unit 1's toy (and unit 2's picture of a language model).

:class:`TreeMDP` is a deterministic, tree-shaped decision process: at each of ``horizon`` steps the
policy picks one of a few ``actions`` (think: words), and the state is the prefix of actions picked
so far. A trajectory τ = (a_1, …, a_H) is therefore a short "sentence", and a tabular policy is one
row of logits per prefix:

    π_θ(τ) = Π_t π_θ(a_t | a_<t),        log π_θ(τ) = Σ_t log π_θ(a_t | a_<t).

With ``len(actions) ** horizon`` trajectories, every expectation can be computed exactly by
enumeration, which is what the course uses to check Monte-Carlo estimates such as the divergence
penalty log π_θ(τ) − log π_ref(τ) against the exact KL(π_θ ‖ π_ref).

Example::

    >>> tree = TreeMDP(("good", "day", "night"), horizon=2)
    >>> logits = tree.random_logits(generator=torch.Generator().manual_seed(0))
    >>> round(float(tree.probs(logits).sum()), 6)    # a distribution over the 9 trajectories
    1.0
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class TreeMDP:
    """Trajectories of ``horizon`` actions drawn from ``actions``; the state is the prefix so far.

    A policy is a logits tensor of shape ``[n_states, n_actions]``: row :meth:`state_index` of a
    prefix holds the logits of the next action after that prefix (states are numbered breadth
    first: the empty prefix is 0, then the prefixes of length 1, and so on).
    """

    actions: tuple
    horizon: int

    def __post_init__(self):
        actions = tuple(str(a) for a in self.actions)
        object.__setattr__(self, "actions", actions)
        if len(actions) < 2:
            raise ValueError(f"actions must hold at least 2 entries, got {len(actions)}")
        if len(set(actions)) != len(actions):
            raise ValueError("actions must be distinct")
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {self.horizon!r}")

    # -- sizes and indexing ---------------------------------------------------------------------
    @property
    def n_actions(self) -> int:
        return len(self.actions)

    @property
    def n_states(self) -> int:
        """Number of non-terminal prefixes: 1 + A + … + A^(H−1)."""
        a = self.n_actions
        return (a**self.horizon - 1) // (a - 1)

    @property
    def n_trajectories(self) -> int:
        return self.n_actions**self.horizon

    def state_index(self, prefixes: Tensor) -> Tensor:
        """Row of the logits table for each prefix in ``prefixes`` (``[N, h]``, 0 ≤ h < H)."""
        prefixes = torch.as_tensor(prefixes, dtype=torch.long)
        if prefixes.dim() != 2:
            raise ValueError(f"prefixes must have shape [N, h], got {tuple(prefixes.shape)}")
        h = prefixes.shape[1]
        if h >= self.horizon:
            raise ValueError(f"prefixes have length {h}; the longest state prefix is {self.horizon - 1}")
        a = self.n_actions
        offset = (a**h - 1) // (a - 1)
        index = torch.zeros(prefixes.shape[0], dtype=torch.long, device=prefixes.device)
        for t in range(h):
            index = index * a + prefixes[:, t]
        return offset + index

    def trajectories(self) -> Tensor:
        """All ``A^H`` trajectories as action indices, ``[A^H, H]``, in lexicographic order."""
        grids = torch.meshgrid(*[torch.arange(self.n_actions)] * self.horizon, indexing="ij")
        return torch.stack([g.reshape(-1) for g in grids], dim=1)

    def names(self, trajectories: Optional[Tensor] = None) -> list[str]:
        """The trajectories as words joined by spaces, e.g. ``"good day"``."""
        trajs = self.trajectories() if trajectories is None else torch.as_tensor(trajectories)
        return [" ".join(self.actions[int(i)] for i in row) for row in trajs]

    # -- policies -------------------------------------------------------------------------------
    def _check_logits(self, logits: Tensor, name: str = "logits") -> Tensor:
        if not isinstance(logits, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
        if tuple(logits.shape) != (self.n_states, self.n_actions):
            raise ValueError(f"{name} has shape {tuple(logits.shape)}, expected "
                             f"{(self.n_states, self.n_actions)} (one row per state)")
        if not logits.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor")
        if bool(torch.isnan(logits).any()) or bool((logits == float("inf")).any()):
            raise ValueError(f"{name} contains NaN or +inf")
        if bool((logits == float("-inf")).all(dim=-1).any()):
            raise ValueError(f"{name} has a state whose actions are all -inf")
        return logits

    def random_logits(self, scale: float = 1.0, generator: Optional[torch.Generator] = None,
                      dtype: Optional[torch.dtype] = None) -> Tensor:
        """Gaussian logits with standard deviation ``scale``: a random tabular policy (default dtype)."""
        return scale * torch.randn(self.n_states, self.n_actions, generator=generator, dtype=dtype)

    def step_logprobs(self, logits: Tensor, trajectories: Tensor) -> Tensor:
        """``[N, H]``: log π(a_t | a_<t) for every step of every trajectory (the per-step penalty's parts)."""
        self._check_logits(logits)
        trajs = torch.as_tensor(trajectories, dtype=torch.long)
        if trajs.dim() != 2 or trajs.shape[1] != self.horizon:
            raise ValueError(f"trajectories must have shape [N, {self.horizon}], got {tuple(trajs.shape)}")
        if bool(((trajs < 0) | (trajs >= self.n_actions)).any()):
            raise ValueError(f"trajectories hold action indices outside 0..{self.n_actions - 1}")
        logp_table = torch.log_softmax(logits, dim=-1)
        cols = []
        for t in range(self.horizon):
            rows = self.state_index(trajs[:, :t])
            cols.append(logp_table[rows, trajs[:, t]])
        return torch.stack(cols, dim=1)

    def log_prob(self, logits: Tensor, trajectories: Optional[Tensor] = None) -> Tensor:
        """``[N]``: log π(τ) = Σ_t log π(a_t | a_<t) (all trajectories when none are given)."""
        trajs = self.trajectories() if trajectories is None else trajectories
        return self.step_logprobs(logits, trajs).sum(dim=1)

    def probs(self, logits: Tensor) -> Tensor:
        """``[A^H]``: the exact distribution π(τ) over all trajectories (order of :meth:`trajectories`)."""
        return self.log_prob(logits).exp()

    def sample(self, logits: Tensor, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``[n, H]``: ``n`` trajectories sampled step by step from the policy, as a rollout does."""
        self._check_logits(logits)
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        probs_table = torch.softmax(logits.detach(), dim=-1)
        trajs = torch.zeros(int(n), self.horizon, dtype=torch.long)
        for t in range(self.horizon):
            rows = self.state_index(trajs[:, :t])
            trajs[:, t] = torch.multinomial(probs_table[rows], 1, generator=generator).squeeze(1)
        return trajs

    def kl(self, logits: Tensor, ref_logits: Tensor) -> Tensor:
        """Exact KL(π ‖ π_ref) = Σ_τ π(τ) (log π(τ) − log π_ref(τ)) by enumerating every trajectory."""
        self._check_logits(ref_logits, "ref_logits")
        logp = self.log_prob(logits)
        ref_logp = self.log_prob(ref_logits)
        p = logp.exp()
        support = p > 0  # trajectories pi cannot take count 0 (their log-probability is -inf)
        terms = torch.where(support, p * (torch.where(support, logp, 0.0) - torch.where(support, ref_logp, 0.0)), 0.0)
        return terms.sum()

    def expected(self, logits: Tensor, values: Tensor) -> Tensor:
        """E_π[f(τ)] = Σ_τ π(τ) f(τ) for ``values`` = f over all trajectories (``[A^H]``)."""
        values = torch.as_tensor(values)
        if values.shape != (self.n_trajectories,):
            raise ValueError(f"values has shape {tuple(values.shape)}, expected ({self.n_trajectories},)")
        return (self.probs(logits) * values.to(logits.dtype)).sum()


def tabular_policy_from_probs(tree: TreeMDP, table: Sequence[Sequence[float]]) -> Tensor:
    """Logits (log-probabilities) of a tabular policy given as rows of next-action probabilities."""
    probs = torch.as_tensor(table, dtype=torch.float64)
    if tuple(probs.shape) != (tree.n_states, tree.n_actions):
        raise ValueError(f"table has shape {tuple(probs.shape)}, expected {(tree.n_states, tree.n_actions)}")
    if bool((probs <= 0).any()) or not torch.allclose(probs.sum(-1), torch.ones(tree.n_states, dtype=torch.float64)):
        raise ValueError("every row of table must hold positive probabilities that sum to 1")
    return probs.log().to(torch.float32)
