r"""KL-coefficient controllers: a fixed :math:`\beta`, or Ziegler et al.'s (2019) adaptive rule.

Unit 5. The per-token reward is :math:`-\beta \hat k_t` plus the score, and :math:`\beta` sets how
far the policy may drift from the reference. The adaptive controller steers the measured KL
(nats per response, :math:`\sum_t \log \pi - \log \pi_{\text{ref}}` averaged over the batch)
towards a target :math:`\mathrm{KL}_{\text{target}}`:

.. math::
    e_t = \operatorname{clip}\!\Big(\frac{\mathrm{KL}_t}{\mathrm{KL}_{\text{target}}} - 1,\; -0.2,\; 0.2\Big),
    \qquad \beta_{t+1} = \beta_t\,\Big(1 + K_\beta\, e_t\Big), \quad K_\beta = \frac{n_{\text{steps}}}{\text{horizon}}

(``n_steps`` = episodes in the batch just used, ``horizon`` = episodes over which the error is
corrected; Ziegler et al. use a target of 6 nats and a horizon of 10,000). Same rule as
``lm-human-preferences`` and TRL's ``AdaptiveKLController``.

Both controllers expose ``.value`` (the current :math:`\beta`, a float), ``.update(current_kl,
n_steps)`` (returns the new value) and ``state_dict()`` / ``load_state_dict()`` for checkpoints.
"""

from __future__ import annotations

import math
from typing import Dict

from .masked import check_scalar

PROPORTIONAL_ERROR_CLIP = 0.2


def _kl_value(current_kl) -> float:
    try:
        kl = float(current_kl.item() if hasattr(current_kl, "item") else current_kl)
    except (TypeError, ValueError):
        raise ValueError(f"current_kl must be a number, got {current_kl!r}") from None
    if not math.isfinite(kl):
        raise ValueError(f"current_kl must be finite, got {kl}")
    return kl


def _n_steps(n_steps) -> int:
    try:
        ok = not isinstance(n_steps, bool) and float(n_steps).is_integer() and n_steps >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    return int(n_steps)


class FixedKLController:
    r"""A constant :math:`\beta \ge 0`; ``update`` validates its input and changes nothing."""

    def __init__(self, beta: float):
        self.value = check_scalar("beta", beta, nonnegative=True)

    def update(self, current_kl, n_steps: int) -> float:
        _kl_value(current_kl)
        _n_steps(n_steps)
        return self.value

    def state_dict(self) -> Dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.value = check_scalar("beta", state["value"], nonnegative=True)

    def __repr__(self) -> str:
        return f"FixedKLController(beta={self.value:g})"


class AdaptiveKLController:
    r"""Ziegler et al. (2019):

    .. math::
        \beta \leftarrow \beta\,\big(1 + \operatorname{clip}(\mathrm{KL}/\mathrm{KL}_{\text{target}} - 1, \pm 0.2)
        \cdot n_{\text{steps}}/\text{horizon}\big)

    Args:
        init_beta: starting :math:`\beta > 0` (a multiplicative rule cannot leave 0).
        target: the KL to aim for, in nats per response, ``> 0``.
        horizon: episodes over which the error is corrected, ``> 0``.
    """

    def __init__(self, init_beta: float, target: float, horizon: float):
        self.value = check_scalar("init_beta", init_beta, positive=True)
        self.target = check_scalar("target", target, positive=True)
        self.horizon = check_scalar("horizon", horizon, positive=True)

    def update(self, current_kl, n_steps: int) -> float:
        kl = _kl_value(current_kl)
        n = _n_steps(n_steps)
        proportional_error = min(max(kl / self.target - 1.0, -PROPORTIONAL_ERROR_CLIP), PROPORTIONAL_ERROR_CLIP)
        if n >= self.horizon / PROPORTIONAL_ERROR_CLIP:
            # the rule assumes n_steps << horizon; beyond this the factor can reach 0 or below
            raise ValueError(
                f"n_steps ({n}) must be below horizon / {PROPORTIONAL_ERROR_CLIP:g} = "
                f"{self.horizon / PROPORTIONAL_ERROR_CLIP:g}, or beta could become 0 or negative: "
                "use a longer horizon"
            )
        mult = 1.0 + proportional_error * n / self.horizon
        self.value = self.value * mult
        return self.value

    def state_dict(self) -> Dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.value = check_scalar("init_beta", state["value"], positive=True)
        self.target = check_scalar("target", state["target"], positive=True)
        self.horizon = check_scalar("horizon", state["horizon"], positive=True)

    def __repr__(self) -> str:
        return f"AdaptiveKLController(value={self.value:g}, target={self.target:g}, horizon={self.horizon:g})"
