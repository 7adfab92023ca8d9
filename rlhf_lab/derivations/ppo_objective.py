"""Unit 5: the pieces of PPO for language models.

- The clipped surrogate L^CLIP(ρ, A) = min(ρA, clip(ρ, 1−ε, 1+ε)A), case by case for A > 0 and
  A < 0, and how the course's notation Clip(ρ)·A with Clip(ρ) = min(ρ, clip(ρ, 1−ε, 1+ε)) relates
  to it (equal for A ≥ 0, different for A < 0).
- GAE: the recursion A_t = δ_t + γλA_{t+1} is the (γλ)-discounted sum of TD errors; λ = 1 gives
  the Monte-Carlo advantage and λ = 0 the one-step TD error.
- The per-token rewards (−β·log-ratio at every token, the score at the last) add up to
  r − β·Penalty, so the RLHF loss −r + β·Penalty is minus their sum.

Regions of ρ are written with positive symbols so that sympy can decide every min and max:
ρ = 1 + ε + s above the band, ρ = 1 − ε − s below it (s > 0), and ρ = 1 ± v inside it with
ε = v + w (v, w > 0). A negative advantage is written A = −B with B > 0.
"""

from __future__ import annotations

import functools

import sympy as sp

from .core import Derivation, equal, holds, then

__all__ = [
    "derivation", "derivations",
    "clipped_surrogate_cases", "course_clip_notation", "gae_is_discounted_td_sum",
    "per_token_rewards",
]

_MOD = "ppo_objective"

eps, s, v, w = sp.symbols("epsilon s v w", positive=True)
A_pos = sp.Symbol("A", positive=True)      # an advantage A > 0
B = sp.Symbol("B", positive=True)          # a negative advantage is A = −B


def clip(rho, e=eps, evaluate=True):
    """clip(ρ, 1−ε, 1+ε). With ``evaluate=False`` the min and max are left for ``verify()`` to
    decide (the derivations below use that, so that each case is a real check)."""
    return sp.Min(sp.Max(rho, 1 - e, evaluate=evaluate), 1 + e, evaluate=evaluate)


def surrogate(rho, adv, e=eps, evaluate=True):
    """The standard PPO surrogate min(ρA, clip(ρ, 1−ε, 1+ε)A) (to be maximized)."""
    return sp.Min(rho * adv, clip(rho, e, evaluate) * adv, evaluate=evaluate)


def course_clip(rho, e=eps, evaluate=True):
    """The course's Clip(ρ) = min(ρ, clip(ρ, 1−ε, 1+ε))."""
    return sp.Min(rho, clip(rho, e, evaluate), evaluate=evaluate)


def _surrogate(rho, adv, e=eps):
    """The surrogate as an unevaluated expression: verify() decides its min and max."""
    return surrogate(rho, adv, e, evaluate=False)


ABOVE = 1 + eps + s      # ρ > 1 + ε
BELOW = 1 - eps - s      # ρ < 1 − ε
INSIDE_UP = 1 + v        # 1 ≤ ρ < 1 + ε, with ε = v + w
INSIDE_DOWN = 1 - v      # 1 − ε < ρ ≤ 1, with ε = v + w

L_CLIP = r"L^{\mathrm{CLIP}}"
_REGIONS = (r"$L^{\mathrm{CLIP}}(\rho, A) = \min\big(\rho A,\ \operatorname{clip}(\rho, "
            r"1-\epsilon, 1+\epsilon)\,A\big)$ with $\epsilon > 0$, maximized in $\theta$ "
            r"through $\rho = \pi_\theta(a \mid s) / \pi_{\theta_{\mathrm{old}}}(a \mid s)$.")


def _at(region_tex: str, sign: str) -> str:
    return L_CLIP + r"\big|_{A " + sign + r" 0,\ " + region_tex + "}"


@functools.lru_cache(maxsize=None)
def clipped_surrogate_cases() -> Derivation:
    """Case analysis of min(ρA, clip(ρ)A): for A > 0 it is capped at (1+ε)A, for A < 0 at
    (1−ε)A; outside the cap it is ρA, and in the capped region its gradient is zero."""
    An = -B
    return Derivation(
        title="The clipped surrogate, case by case",
        intro=_REGIONS,
        name=f"{_MOD}.clipped_surrogate_cases",
        symbol_names={A_pos: "A"},
        steps=[
            equal(_surrogate(ABOVE, A_pos), (1 + eps) * A_pos,
                  "A > 0, ρ above the band: the clipped term is the smaller",
                  tex_lhs=_at(r"\rho > 1+\epsilon", ">"), tex_rhs=r"(1+\epsilon)\,A"),
            equal(sp.Derivative(_surrogate(ABOVE, A_pos), s), 0,
                  "constant in ρ there: no gradient pushes ρ further up",
                  tex_lhs=r"\frac{\partial}{\partial\rho}" + _at(r"\rho > 1+\epsilon", ">")),
            equal(_surrogate(INSIDE_UP, A_pos, v + w), INSIDE_UP * A_pos,
                  "A > 0, ρ inside the band (upper half): unclipped",
                  tex_lhs=_at(r"1 \leq \rho < 1+\epsilon", ">"), tex_rhs=r"\rho A"),
            equal(_surrogate(INSIDE_DOWN, A_pos, v + w), INSIDE_DOWN * A_pos,
                  "A > 0, ρ inside the band (lower half): unclipped",
                  tex_lhs=_at(r"1-\epsilon < \rho \leq 1", ">"), tex_rhs=r"\rho A"),
            equal(_surrogate(BELOW, A_pos), BELOW * A_pos,
                  "A > 0, ρ below the band: the min keeps the smaller ρA",
                  tex_lhs=_at(r"\rho < 1-\epsilon", ">"), tex_rhs=r"\rho A"),
            equal(_surrogate(BELOW, An), (1 - eps) * An,
                  "A < 0, ρ below the band: the clipped term is the smaller",
                  tex_lhs=_at(r"\rho < 1-\epsilon", "<"), tex_rhs=r"(1-\epsilon)\,A"),
            equal(sp.Derivative(_surrogate(BELOW, An), s), 0,
                  "constant in ρ there: no gradient pushes ρ further down",
                  tex_lhs=r"\frac{\partial}{\partial\rho}" + _at(r"\rho < 1-\epsilon", "<")),
            equal(sp.Matrix([_surrogate(INSIDE_UP, An, v + w), _surrogate(INSIDE_DOWN, An, v + w)]),
                  sp.Matrix([INSIDE_UP * An, INSIDE_DOWN * An]),
                  "A < 0, ρ inside the band: unclipped",
                  tex_lhs=_at(r"1-\epsilon < \rho < 1+\epsilon", "<"), tex_rhs=r"\rho A"),
            equal(_surrogate(ABOVE, An), ABOVE * An,
                  "A < 0, ρ above the band: the min keeps the smaller ρA, so a bad action "
                  "made likelier is always corrected",
                  tex_lhs=_at(r"\rho > 1+\epsilon", "<"), tex_rhs=r"\rho A"),
        ],
    )


@functools.lru_cache(maxsize=None)
def course_clip_notation() -> Derivation:
    """Clip(ρ)·A with Clip(ρ) = min(ρ, clip(ρ, 1−ε, 1+ε)) equals min(ρA, clip(ρ)A) for A ≥ 0;
    for A < 0 the two differ below and above the band."""
    A0 = sp.Symbol("A", nonnegative=True)   # A ≥ 0
    An = -B                                  # A < 0

    def course(rho, adv, e=eps):
        return course_clip(rho, e, evaluate=False) * adv

    def gap(rho, adv, e=eps):
        """course form minus the standard form."""
        return course(rho, adv, e) - _surrogate(rho, adv, e)

    COURSE = r"\mathrm{Clip}(\rho)\,A"
    STD = r"\min\big(\rho A, \operatorname{clip}(\rho)\,A\big)"
    return Derivation(
        title="The course's Clip(ρ)·A and the standard min(ρA, clip(ρ)A)",
        intro=(r"The course writes the surrogate as $\mathrm{Clip}(\rho)\,A$ with "
               r"$\mathrm{Clip}(\rho) = \min\big(\rho, \operatorname{clip}(\rho, 1-\epsilon, "
               r"1+\epsilon)\big)$; the standard PPO surrogate is "
               r"$\min\big(\rho A, \operatorname{clip}(\rho, 1-\epsilon, 1+\epsilon)\,A\big)$."),
        name=f"{_MOD}.course_clip_notation",
        symbol_names={A0: "A"},
        steps=[
            equal(sp.Matrix([gap(ABOVE, A0), gap(INSIDE_UP, A0, v + w),
                             gap(INSIDE_DOWN, A0, v + w), gap(BELOW, A0)]),
                  sp.zeros(4, 1),
                  "A ≥ 0: multiplying by A keeps the order, in every region of ρ",
                  tex_lhs=COURSE + " - " + STD + r"\big|_{A \geq 0}", tex_rhs="0"),
            equal(sp.Matrix([gap(INSIDE_UP, An, v + w), gap(INSIDE_DOWN, An, v + w)]),
                  sp.zeros(2, 1), "A < 0, ρ inside the band: both are ρA",
                  tex_lhs=(COURSE + " - " + STD + r"\big|_{A < 0,\ 1-\epsilon < \rho < "
                           r"1+\epsilon}"), tex_rhs="0"),
            equal(course(BELOW, An), BELOW * An,
                  "A < 0, ρ below the band: Clip(ρ) = ρ, the course form is unclipped",
                  tex_lhs=COURSE + r"\big|_{A < 0,\ \rho < 1-\epsilon}", tex_rhs=r"\rho A"),
            equal(gap(BELOW, An), s * B,
                  "while the standard form is (1 − ε)A there",
                  tex_lhs=COURSE + " - " + STD + r"\big|_{A < 0,\ \rho < 1-\epsilon}",
                  tex_rhs=r"\rho A - (1-\epsilon)A = |A|\,(1-\epsilon-\rho)"),
            equal(course(ABOVE, An), (1 + eps) * An,
                  "A < 0, ρ above the band: the course form is clipped",
                  tex_lhs=COURSE + r"\big|_{A < 0,\ \rho > 1+\epsilon}",
                  tex_rhs=r"(1+\epsilon)\,A"),
            equal(gap(ABOVE, An), s * B,
                  "while the standard form keeps ρA there",
                  tex_lhs=COURSE + " - " + STD + r"\big|_{A < 0,\ \rho > 1+\epsilon}",
                  tex_rhs=r"(1+\epsilon)A - \rho A = |A|\,(\rho-1-\epsilon)"),
            holds(sp.StrictGreaterThan(s * B, 0, evaluate=False),
                  "where they differ the course form is the larger: it stops correcting a "
                  "bad action made likelier, and keeps pushing down one already made rarer",
                  tex=r"|A| \cdot \operatorname{dist}(\rho, [1-\epsilon, 1+\epsilon]) &> 0"),
        ],
    )


@functools.lru_cache(maxsize=None)
def gae_is_discounted_td_sum(T: int = 4) -> Derivation:
    """GAE from the recursion A_t = δ_t + γλA_{t+1} (A_T = 0, V_T = 0) equals
    Σ_l (γλ)^l δ_{t+l}; λ = 1 gives Σ_l γ^l r_{t+l} − V_t, λ = 0 gives δ_t."""
    gamma, lam = sp.symbols("gamma lambda", positive=True)
    r = sp.symbols(f"r_0:{T}", real=True)
    V = list(sp.symbols(f"V_0:{T}", real=True)) + [sp.Integer(0)]  # V_T = 0 after the end
    delta = [r[k] + gamma * V[k + 1] - V[k] for k in range(T)]        # TD errors
    # the recursion, as rlhf_lab.advantages.gae computes it (backwards in time)
    adv = [sp.Integer(0)] * (T + 1)
    for k in reversed(range(T)):
        adv[k] = delta[k] + gamma * lam * adv[k + 1]
    closed = [sum((gamma * lam) ** l * delta[k + l] for l in range(T - k)) for k in range(T)]
    mc_return = sum(gamma ** l * r[l] for l in range(T))
    return Derivation(
        title=f"GAE is the (γλ)-discounted sum of TD errors (T = {T})",
        intro=(rf"Rewards $r_0, \dots, r_{{{T - 1}}}$, values $V_t = V(s_t)$ with "
               rf"$V_{{{T}}} = 0$ after the last token, TD errors "
               r"$\delta_t = r_t + \gamma V_{t+1} - V_t$, and the recursion "
               rf"$\hat A_t = \delta_t + \gamma\lambda\,\hat A_{{t+1}}$, $\hat A_{{{T}}} = 0$."),
        name=f"{_MOD}.gae_is_discounted_td_sum[T={T}]",
        steps=[
            equal(sp.Matrix(adv[:T]), sp.Matrix(closed),
                  "unroll the recursion, for every t",
                  tex_lhs=r"\hat A_t",
                  tex_rhs=rf"\sum_{{l=0}}^{{{T - 1}-t}} (\gamma\lambda)^l\, \delta_{{t+l}}"),
            equal(adv[0], sum((gamma * lam) ** l * delta[l] for l in range(T)),
                  "at t = 0",
                  tex_lhs=r"\hat A_0",
                  tex_rhs=(r"\delta_0 + \gamma\lambda\,\delta_1 + (\gamma\lambda)^2\delta_2 + "
                           r"\dots")),
            equal(adv[0].subs(lam, 1), mc_return - V[0],
                  "λ = 1: the TD errors telescope, leaving return minus baseline",
                  tex_lhs=r"\hat A_0\big|_{\lambda=1}",
                  tex_rhs=rf"\sum_{{l=0}}^{{{T - 1}}} \gamma^l r_l - V(s_0)"),
            equal(adv[0].subs(lam, 1) + V[0], mc_return,
                  "so the value target A + V is the Monte-Carlo return",
                  tex_lhs=r"\hat A_0\big|_{\lambda=1} + V(s_0)",
                  tex_rhs=rf"\sum_{{l=0}}^{{{T - 1}}} \gamma^l r_l"),
            equal(sp.Matrix(adv[:T]).applyfunc(lambda a: sp.Subs(a, lam, 0)), sp.Matrix(delta),
                  "λ = 0: the one-step TD error",
                  tex_lhs=r"\hat A_t\big|_{\lambda=0}", tex_rhs=r"\delta_t"),
        ],
    )


@functools.lru_cache(maxsize=None)
def per_token_rewards() -> Derivation:
    """Per-token rewards −β(log π_θ − log π_ref) at each token plus the score at the last
    token add up to r − β·Penalty; the RLHF loss −r + β·Penalty is minus their sum."""
    T = sp.Symbol("T", integer=True, positive=True)
    t = sp.Symbol("t", integer=True, positive=True)
    beta = sp.Symbol("beta", nonnegative=True)
    score = sp.Symbol("r", real=True)                  # r(x, y), given at the last token
    logp = sp.IndexedBase("ell", real=True)            # log π_θ(y_t | x, y_<t)
    ref_logp = sp.IndexedBase("ell_ref", real=True)    # log π_ref(y_t | x, y_<t)
    log_ratio = logp[t] - ref_logp[t]
    reward_t = -beta * log_ratio + score * sp.KroneckerDelta(t, T)
    penalty = sp.Sum(log_ratio, (t, 1, T))
    Penalty = sp.Symbol("Penalty", real=True)        # Penalty(x, y), by its definition (unit 2)
    LR = (r"\log\pi_\theta(y_t \mid x, y_{<t}) - \log\pi_{\mathrm{ref}}(y_t \mid x, y_{<t})")
    return Derivation(
        title="The per-token rewards add up to r − β·Penalty",
        intro=(r"Response tokens $t = 1, \dots, T$; the per-token reward is "
               r"$\tilde r_t = -\beta\big(" + LR + r"\big) + [t = T]\, r(x, y)$."),
        name=f"{_MOD}.per_token_rewards",
        steps=[
            equal(sp.Sum(reward_t, (t, 1, T)),
                  sp.Sum(-beta * log_ratio, (t, 1, T))
                  + sp.Sum(score * sp.KroneckerDelta(t, T), (t, 1, T)),
                  "split the sum",
                  tex_lhs=r"\sum_{t=1}^{T} \tilde r_t",
                  tex_rhs=(r"-\beta\sum_{t=1}^{T}\big(" + LR + r"\big) + \sum_{t=1}^{T} "
                           r"[t = T]\, r(x, y)")),
            then(score - beta * penalty, "the score enters once, at the last token",
                 tex_rhs=r"r(x, y) - \beta\sum_{t=1}^{T}\big(" + LR + r"\big)"),
            then(score - beta * Penalty, "the sum of per-token log-ratios is the penalty",
                 subs={Penalty: penalty},
                 tex_rhs=r"r(x, y) - \beta\,\mathrm{Penalty}(x, y)"),
            equal(-sp.Sum(reward_t, (t, 1, T)), -score + beta * penalty,
                  "so the RLHF loss is minus the undiscounted return of the rewards",
                  tex_lhs=r"-\sum_{t=1}^{T}\tilde r_t",
                  tex_rhs=r"-r(x, y) + \beta\,\mathrm{Penalty}(x, y)"),
        ],
    )


def derivation() -> Derivation:
    """The unit's main chain: the clipped surrogate, case by case."""
    return clipped_surrogate_cases()


def derivations() -> list[Derivation]:
    """All derivations of unit 5, main first."""
    return [clipped_surrogate_cases(), course_clip_notation(), gae_is_discounted_td_sum(),
            gae_is_discounted_td_sum(3), per_token_rewards()]
