"""Executable derivations of the course: every step is checked with sympy.

One module per unit, each with ``derivation()`` (the unit's main chain) and ``derivations()``
(all derivations of the unit, main first)::

    from rlhf_lab.derivations import divergence_penalty
    d = divergence_penalty.derivation()
    d.verify()          # raises DerivationError naming the first step that fails
    d.latex()           # one aligned block, the reason beside each line
    d                   # in Jupyter: the title and the rendered math

=====  ======================  ==========================================================
unit   module                  what is derived
=====  ======================  ==========================================================
1      ``divergence_penalty``  E[log pi_theta - log pi_ref] = KL >= 0; penalized objective
2      ``token_decomposition`` sequence penalty = sum of per-token penalties
3      ``advantage_objective`` log-derivative trick, softmax score, baseline, A2C loss
4      ``kl_derivation``       pi* = pi_ref exp(r/beta)/Z and the KL form of the objective
5      ``ppo_objective``       clipped surrogate cases, GAE, per-token KL reward
6      ``beyond_ppo``          E[grad k1] = 0, E[grad k2], E[grad k3]; KL in the reward;
                               group baselines (RLOO, GRPO); loss aggregation; clip-higher
=====  ======================  ==========================================================
"""

from __future__ import annotations

import importlib

from .core import Derivation, DerivationError, Step, equal, holds, then, verify_all

UNITS = (
    "divergence_penalty",
    "token_decomposition",
    "advantage_objective",
    "kl_derivation",
    "ppo_objective",
    "beyond_ppo",
)

__all__ = [
    "Derivation", "DerivationError", "Step", "equal", "holds", "then", "verify_all",
    "all_derivations", "UNITS", *UNITS,
]


def __getattr__(name):
    if name in UNITS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(UNITS))


def all_derivations() -> list[Derivation]:
    """Every derivation of every unit, in course order (each unit's main derivation first)."""
    out: list[Derivation] = []
    for unit in UNITS:
        out.extend(importlib.import_module(f"{__name__}.{unit}").derivations())
    return out
