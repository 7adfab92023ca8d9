"""Unit 4: the KL-regularized objective and its optimal policy.

Maximizing E_π[r] − β·KL(π‖π_ref) over distributions gives π* = π_ref·exp(r/β)/Z(x) with
Z(x) = Σ_y π_ref(y|x) exp(r(x, y)/β). Then
KL(π_θ‖π*) = −(1/β)(E_{π_θ}[r] − β·KL(π_θ‖π_ref)) + log Z(x), and log Z(x) does not depend on θ:
minimizing KL(π_θ‖π*) is maximizing the regularized objective. Inverting π* gives the implied
reward r = β log(π*/π_ref) + β log Z, whose Z cancels in a Bradley-Terry preference (DPO).

Finite model used by the checks: responses y_1..y_K of one prompt x with π_θ(y_i|x) = p_i,
π_ref(y_i|x) = q_i > 0 and rewards r_i = r(x, y_i).
"""

from __future__ import annotations

import functools

import sympy as sp

from .core import Derivation, equal, holds, then

__all__ = [
    "derivation", "derivations",
    "kl_to_optimal_policy", "optimal_policy", "log_partition_is_constant", "maximum_value",
    "beta_limits", "implied_reward",
]

_MOD = "kl_derivation"

beta = sp.Symbol("beta", positive=True)
K = sp.Symbol("K", integer=True, positive=True)
i = sp.Symbol("i", integer=True, positive=True)
p = sp.IndexedBase("p", positive=True)     # π_θ(y_i | x)
q = sp.IndexedBase("q", positive=True)     # π_ref(y_i | x)
r = sp.IndexedBase("r", real=True)         # r(x, y_i)
Z = sp.Symbol("Z", positive=True)          # Z(x) = Σ_i q_i exp(r_i/β) > 0


def _sum(expr):
    return sp.Sum(expr, (i, 1, K))


def _pi_star(zz=Z):
    """π*(y_i|x) = π_ref(y_i|x) exp(r_i/β) / Z(x)."""
    return q[i] * sp.exp(r[i] / beta) / zz


_NAMES = {Z: r"Z(x)", beta: r"\beta"}
PI = r"\pi_\theta"
REF = r"\pi_{\mathrm{ref}}"
STAR = r"\pi^*"
KL_REF = r"\mathrm{KL}(\pi_\theta \,\|\, \pi_{\mathrm{ref}})"
KL_STAR = r"\mathrm{KL}(\pi_\theta \,\|\, \pi^*)"
ER = r"\mathbb{E}_{y\sim\pi_\theta}[r(x, y)]"
_FINITE = (r"Responses $y_1, \dots, y_K$ of a prompt $x$: $p_i = \pi_\theta(y_i \mid x)$ "
           r"(summing to one), $q_i = \pi_{\mathrm{ref}}(y_i \mid x) > 0$, "
           r"$r_i = r(x, y_i)$, $\beta > 0$.")


@functools.lru_cache(maxsize=None)
def optimal_policy() -> Derivation:
    """Stationarity of the Lagrangian with the normalization constraint gives
    π* = π_ref·exp(r/β)/Z."""
    pj, qj = sp.symbols("p_j q_j", positive=True)
    rj, lam = sp.symbols("r_j lambda", real=True)
    # the terms of E_π[r] − β KL(π‖π_ref) + λ(Σ π − 1) that depend on π(y_j)
    lagrangian_j = pj * rj - beta * pj * sp.log(pj / qj) + lam * pj
    # two of the terms, for a mixed second derivative of the separable objective
    pk, qk = sp.symbols("p_k q_k", positive=True)
    rk = sp.Symbol("r_k", real=True)
    lagrangian_pair = lagrangian_j + pk * rk - beta * pk * sp.log(pk / qk) + lam * pk
    stationarity = sp.diff(lagrangian_j, pj)
    C = sp.exp(lam / beta - 1)
    Zsum = _sum(q[i] * sp.exp(r[i] / beta))
    return Derivation(
        title="The optimal policy of the KL-regularized objective",
        intro=(r"Maximize $\mathbb{E}_{y\sim\pi}[r(x,y)] - \beta\,\mathrm{KL}(\pi \,\|\, "
               r"\pi_{\mathrm{ref}})$ over distributions $\pi(\cdot \mid x)$ with the "
               r"multiplier $\lambda$ for $\sum_y \pi(y \mid x) = 1$; $p_j = \pi(y_j \mid x)$, "
               r"$q_j = \pi_{\mathrm{ref}}(y_j \mid x)$, $r_j = r(x, y_j)$; the normalizer is "
               r"$Z(x) = \sum_y \pi_{\mathrm{ref}}(y \mid x)\, e^{r(x,y)/\beta}$; "
               r"$\mathcal{L}$ is the Lagrangian in the brackets of the first step."),
        name=f"{_MOD}.optimal_policy",
        symbol_names={pj: "p_j", qj: "q_j", rj: "r_j", pk: "p_k", qk: "q_k", rk: "r_k"},
        steps=[
            equal(sp.Derivative(lagrangian_j, pj), rj - beta * sp.log(pj / qj) - beta + lam,
                  "only the terms of y_j depend on p_j",
                  tex_lhs=(r"\frac{\partial}{\partial p_j}\Big[\sum_i p_i r_i - \beta\sum_i "
                           r"p_i\log\frac{p_i}{q_i} + \lambda\big(\textstyle\sum_i p_i - 1"
                           r"\big)\Big]"),
                  tex_rhs=r"r_j - \beta\log\frac{p_j}{q_j} - \beta + \lambda"),
            equal(stationarity.subs(pj, qj * sp.exp(rj / beta) * C), 0,
                  "set to zero and solve for p_j",
                  tex_lhs=(r"\text{stationary at } p_j = q_j\, e^{r_j/\beta}\, "
                           r"e^{\lambda/\beta - 1}: \quad r_j - \beta\log\frac{p_j}{q_j} - "
                           r"\beta + \lambda"),
                  tex_rhs="0"),
            equal(sp.Derivative(lagrangian_pair, pk, pj), 0,
                  "for k ≠ j: the objective is a sum of one term per p_j, so its Hessian is diagonal",
                  tex_lhs=r"\frac{\partial^2 \mathcal{L}}{\partial p_k\,\partial p_j}",
                  tex_rhs="0"),
            holds(sp.StrictLessThan(sp.Derivative(lagrangian_j, (pj, 2)), 0, evaluate=False),
                  "every diagonal entry is negative at every p_j > 0: the objective is strictly "
                  "concave on the simplex, and the stationary point, interior because every "
                  "p_j > 0, is its unique maximum",
                  tex=r"\frac{\partial^2 \mathcal{L}}{\partial p_j^2} = -\frac{\beta}{p_j} &< 0"),
            equal(_sum(q[i] * sp.exp(r[i] / beta) / Zsum), 1,
                  "the probabilities sum to one: this fixes the common factor of step 2 to 1/Z(x)",
                  tex_lhs=(r"\sum_{y} \pi^*(y \mid x) = \frac{1}{Z(x)}\sum_{y} "
                           r"\pi_{\mathrm{ref}}(y \mid x)\, e^{r(x,y)/\beta}"),
                  tex_rhs="1"),
        ],
    )


def _objective_terms():
    """KL(π_θ‖π*), KL(π_θ‖π_ref) and E_{π_θ}[r] over the K responses, as sympy sums."""
    kl_star = _sum(p[i] * sp.log(p[i] / _pi_star()))
    kl_ref = _sum(p[i] * sp.log(p[i] / q[i]))
    expected_r = _sum(p[i] * r[i])
    return kl_star, kl_ref, expected_r


@functools.lru_cache(maxsize=None)
def kl_to_optimal_policy() -> Derivation:
    """KL(π_θ‖π*) = −(1/β)(E_{π_θ}[r] − β·KL(π_θ‖π_ref)) + log Z(x)."""
    kl_star, kl_ref, expected_r = _objective_terms()
    normalized = {_sum(p[i]): 1}
    KL = sp.Symbol("KL_star", real=True)   # KL(π_θ‖π*), replaced by its definition in step 1
    return Derivation(
        title="Minimizing KL to the optimal policy is the regularized objective",
        intro=_FINITE + (r" The optimal policy is $\pi^*(y \mid x) = \pi_{\mathrm{ref}}"
                         r"(y \mid x)\, e^{r(x,y)/\beta} / Z(x)$."),
        name=f"{_MOD}.kl_to_optimal_policy",
        symbol_names=_NAMES,
        steps=[
            equal(KL, _sum(p[i] * sp.log(p[i] / _pi_star())), "definition of the KL",
                  subs={KL: kl_star},
                  tex_lhs=KL_STAR,
                  tex_rhs=(r"\sum_y " + PI + r"(y \mid x)\log\frac{" + PI + r"(y \mid x)}{"
                           + STAR + r"(y \mid x)}")),
            then(_sum(p[i] * (sp.log(p[i] / q[i]) - r[i] / beta + sp.log(Z))),
                 "substitute π* and take the log of each factor",
                 tex_rhs=(r"\sum_y " + PI + r"(y \mid x)\Big[\log\frac{" + PI + r"(y \mid x)}{"
                          + REF + r"(y \mid x)} - \frac{r(x,y)}{\beta} + \log Z(x)\Big]")),
            then(kl_ref - expected_r / beta + sp.log(Z) * _sum(p[i]),
                 "split the sum; log Z(x) does not depend on y",
                 tex_rhs=(KL_REF + r" - \frac{1}{\beta}" + ER + r" + \log Z(x)\sum_y " + PI
                          + r"(y \mid x)")),
            then(kl_ref - expected_r / beta + sp.log(Z), "π_θ sums to one",
                 subs=normalized,
                 tex_rhs=KL_REF + r" - \frac{1}{\beta}" + ER + r" + \log Z(x)"),
            then(-(expected_r - beta * kl_ref) / beta + sp.log(Z), "factor out −1/β",
                 tex_rhs=(r"-\frac{1}{\beta}\Big(" + ER + r" - \beta\," + KL_REF
                          + r"\Big) + \log Z(x)")),
        ],
    )


@functools.lru_cache(maxsize=None)
def log_partition_is_constant() -> Derivation:
    """KL(π_θ‖π*) and −(1/β)(E[r] − β·KL(π_θ‖π_ref)) differ by log Z(x), which has no θ in
    it: the two objectives have the same gradient and the same minimizers."""
    z = sp.symbols("z_1:4", real=True)                       # logits: θ of a softmax policy
    ps = sp.symbols("p_1:4", positive=True)
    qs = sp.symbols("q_1:4", positive=True)
    rs = sp.symbols("r_1:4", real=True)
    Zs = sum(a * sp.exp(b / beta) for a, b in zip(qs, rs))   # Z(x)
    # Z(x) written with π_ref and r as arbitrary functions of the logits, so that its gradient
    # is a real computation; the step then states that neither depends on θ
    q_of_z = [sp.Function(f"q_{k}", positive=True)(*z) for k in range(1, 4)]
    r_of_z = [sp.Function(f"r_{k}", real=True)(*z) for k in range(1, 4)]
    Z_of_z = sum(a * sp.exp(b / beta) for a, b in zip(q_of_z, r_of_z))
    frozen = {**dict(zip(q_of_z, qs)), **dict(zip(r_of_z, rs))}
    star = [a * sp.exp(b / beta) / Zs for a, b in zip(qs, rs)]
    kl_star = sum(a * sp.log(a / b) for a, b in zip(ps, star))
    kl_ref = sum(a * sp.log(a / b) for a, b in zip(ps, qs))
    expected_r = sum(a * b for a, b in zip(ps, rs))
    # the gap between the two objectives as a function of the free coordinates p_1, p_2
    gap = (kl_star + (expected_r - beta * kl_ref) / beta).subs(ps[2], 1 - ps[0] - ps[1])
    return Derivation(
        title="log Z(x) does not depend on θ, so it can be dropped",
        intro=(r"Three responses; $\pi_\theta = (p_1, p_2, p_3)$ with $p_3 = 1 - p_1 - p_2$, "
               r"for instance $\pi_\theta = \mathrm{softmax}(z)$ with $\theta = z$."),
        name=f"{_MOD}.log_partition_is_constant",
        symbol_names=_NAMES,
        steps=[
            equal(kl_star + (expected_r - beta * kl_ref) / beta, sp.log(Zs),
                  "for every π_θ the two objectives differ by log Z(x)",
                  subs={ps[2]: 1 - ps[0] - ps[1]},
                  tex_lhs=(KL_STAR + r" - \Big(-\frac{1}{\beta}\big(" + ER + r" - \beta\,"
                           + KL_REF + r"\big)\Big)"),
                  tex_rhs=(r"\log Z(x) = \log\sum_y " + REF + r"(y \mid x)\, "
                           r"e^{r(x,y)/\beta}")),
            equal(sp.Matrix([sp.Derivative(sp.log(Z_of_z), zj) for zj in z]), sp.zeros(3, 1),
                  "Z(x) involves only π_ref and r, not θ", subs=frozen,
                  tex_lhs=r"\nabla_\theta \log Z(x)", tex_rhs="0"),
            equal(sp.Matrix([sp.Derivative(gap, v) for v in ps[:2]]), sp.zeros(2, 1),
                  "so both objectives have the same gradient and the same minimizers",
                  tex_lhs=(r"\nabla_\theta\," + KL_STAR + r" - \nabla_\theta\Big(-\frac{1}"
                           r"{\beta}\big(" + ER + r" - \beta\," + KL_REF + r"\big)\Big)"),
                  tex_rhs="0"),
        ],
    )


@functools.lru_cache(maxsize=None)
def maximum_value() -> Derivation:
    """The objective equals β log Z − β·KL(π_θ‖π*) ≤ β log Z (KL ≥ 0 shown in Gibbs' form,
    as in unit 1), and π* attains the bound."""
    kl_star, kl_ref, expected_r = _objective_terms()
    # Gibbs' form of KL(π_θ‖π*) (unit 1): Σ_i p_i g(u_i) with g(u) = u − 1 − log u ≥ 0 and
    # u_i = π*(y_i|x) / π_θ(y_i|x) > 0
    ratio = sp.Function("u", positive=True)
    j = sp.Dummy("j", integer=True, positive=True)
    gibbs = _sum(p[i] * (ratio(i) - 1 - sp.log(ratio(i))))
    star_total = _sum(_pi_star())                   # Σ_i π*(y_i|x), 1 by the choice of Z(x)
    qs = sp.symbols("q_1:4", positive=True)
    rs = sp.symbols("r_1:4", real=True)
    Zs = sum(a * sp.exp(b / beta) for a, b in zip(qs, rs))
    star = [a * sp.exp(b / beta) / Zs for a, b in zip(qs, rs)]
    value_at_star = (sum(a * b for a, b in zip(star, rs))
                     - beta * sum(a * sp.log(a / b) for a, b in zip(star, qs)))
    return Derivation(
        title="The maximum of the regularized objective is β log Z(x)",
        intro=_FINITE + (r" $Z(x) = \sum_i q_i\, e^{r_i/\beta}$ normalizes "
                         r"$\pi^*_i = q_i\, e^{r_i/\beta}/Z(x)$; as in unit 1, "
                         r"$g(u) = u - 1 - \log u \geq 0$ for $u > 0$, and here "
                         r"$u_i = \pi^*_i / p_i$."),
        name=f"{_MOD}.maximum_value",
        symbol_names=_NAMES,
        steps=[
            equal(expected_r - beta * kl_ref, beta * sp.log(Z) - beta * kl_star,
                  "the previous identity multiplied by −β", subs={_sum(p[i]): 1},
                  tex_lhs=ER + r" - \beta\," + KL_REF,
                  tex_rhs=r"\beta\log Z(x) - \beta\," + KL_STAR),
            equal(kl_star, gibbs + _sum(p[i]) - star_total,
                  "add and subtract Σ p_i (u_i − 1), as in unit 1",
                  subs={ratio: sp.Lambda(j, q[j] * sp.exp(r[j] / beta) / (Z * p[j]))},
                  tex_lhs=KL_STAR,
                  tex_rhs=r"\sum_i p_i\, g(u_i) + \sum_i p_i - \sum_i \pi^*_i"),
            then(gibbs + 1 - 1, "π_θ and π* both sum to one",
                 subs={_sum(p[i]): 1, star_total: 1}, tex_rhs=r"\sum_i p_i\, g(u_i)"),
            holds(sp.LessThan(beta * sp.log(Z) - beta * gibbs, beta * sp.log(Z), evaluate=False),
                  "β > 0 and every term p_i g(u_i) ≥ 0, so KL(π_θ‖π*) ≥ 0",
                  tex=(r"\beta\log Z(x) - \beta\," + KL_STAR + r" &\leq \beta\log Z(x)")),
            equal(value_at_star, beta * sp.log(Zs),
                  "check at π = π* directly (three responses): the bound is attained",
                  tex_lhs=(r"\mathbb{E}_{y\sim\pi^*}[r(x,y)] - \beta\,\mathrm{KL}(\pi^* \,\|\, "
                           r"\pi_{\mathrm{ref}})"),
                  tex_rhs=r"\beta\log Z(x)"),
        ],
    )


@functools.lru_cache(maxsize=None)
def beta_limits() -> Derivation:
    """β → ∞: π* → π_ref and the value → E_ref[r]; β → 0: π* puts all mass on the best
    response and the value → max r (two responses, r_1 = r_2 + Δ with Δ > 0)."""
    q1, q2, delta = sp.symbols("q_1 q_2 Delta", positive=True)
    r1, r2 = sp.symbols("r_1 r_2", real=True)
    star1 = q1 * sp.exp(r1 / beta) / (q1 * sp.exp(r1 / beta) + q2 * sp.exp(r2 / beta))
    star1_gap = 1 / (1 + (q2 / q1) * sp.exp(-delta / beta))
    value = beta * sp.log(q1 * sp.exp(r1 / beta) + q2 * sp.exp(r2 / beta))   # β log Z
    value_gap = r2 + delta + beta * sp.log(q1 + q2 * sp.exp(-delta / beta))
    best = {r1: r2 + delta}
    normalized = {q2: 1 - q1}
    return Derivation(
        title="The limits β → ∞ and β → 0",
        intro=(r"Two responses with $\pi_{\mathrm{ref}} = (q_1, q_2)$, $q_1 + q_2 = 1$, and "
               r"rewards $r_1 = r_2 + \Delta$, $\Delta > 0$ (response 1 is better)."),
        name=f"{_MOD}.beta_limits",
        symbol_names=_NAMES,
        steps=[
            equal(star1, star1_gap, "divide by π_ref(y_1) exp(r_1/β)", subs=best,
                  tex_lhs=r"\pi^*(y_1 \mid x)",
                  tex_rhs=r"\frac{1}{1 + \frac{q_2}{q_1}\, e^{-\Delta/\beta}}"),
            equal(sp.Limit(star1_gap, beta, sp.oo), q1, "β → ∞: π* → π_ref, the reward is ignored",
                  subs=normalized, tex_lhs=r"\lim_{\beta\to\infty}\pi^*(y_1 \mid x)"),
            equal(sp.Limit(star1_gap, beta, 0, "+"), 1,
                  "β → 0: all mass on the best response, the reference is ignored",
                  tex_lhs=r"\lim_{\beta\to 0^+}\pi^*(y_1 \mid x)"),
            equal(sp.Limit(value, beta, sp.oo), q1 * r1 + q2 * r2,
                  "β → ∞: the best value is the reference's expected reward", subs=normalized,
                  tex_lhs=r"\lim_{\beta\to\infty}\beta\log Z(x)",
                  tex_rhs=r"q_1 r_1 + q_2 r_2"),
            equal(value, value_gap, "factor exp(r_1/β) out of Z(x)", subs=best,
                  tex_lhs=r"\beta\log Z(x)",
                  tex_rhs=r"r_1 + \beta\log\big(q_1 + q_2\, e^{-\Delta/\beta}\big)"),
            equal(sp.Limit(value_gap, beta, 0, "+"), r2 + delta,
                  "β → 0: the best value is the maximal reward",
                  tex_lhs=r"\lim_{\beta\to 0^+}\beta\log Z(x)", tex_rhs=r"r_1 = \max_y r(x,y)"),
        ],
    )


@functools.lru_cache(maxsize=None)
def implied_reward() -> Derivation:
    """r = β log(π*/π_ref) + β log Z(x); in a Bradley-Terry preference between two responses
    to the same prompt, β log Z(x) cancels: the door to DPO."""
    qi = sp.Symbol("q_i", positive=True)
    ri = sp.Symbol("r_i", real=True)
    star_i = qi * sp.exp(ri / beta) / Z
    sw, sl, qw, ql = sp.symbols("pi_w pi_l q_w q_l", positive=True)   # π*(y_w|x), π_ref(y_w|x)
    implied = lambda s, qq, zz=Z: beta * sp.log(s / qq) + beta * sp.log(zz)  # noqa: E731
    # the partition functions of the prompts of y_w and y_l: one Z(x) for one prompt (step 2)
    Z_w, Z_l = sp.symbols("Z_w Z_l", positive=True)
    r_w, r_l = sp.symbols("r_w r_l", real=True)
    rewards = {r_w: implied(sw, qw), r_l: implied(sl, ql)}
    # β log Z(x) kept in both implied rewards, so that differentiating shows it cancel
    kept = sp.UnevaluatedExpr(implied(sw, qw)) - sp.UnevaluatedExpr(implied(sl, ql))
    sigma = lambda u: 1 / (1 + sp.exp(-u))                             # noqa: E731
    margin = beta * sp.log(sw / qw) - beta * sp.log(sl / ql)
    W = r"\frac{\pi^*(y_w \mid x)}{\pi_{\mathrm{ref}}(y_w \mid x)}"
    L = r"\frac{\pi^*(y_l \mid x)}{\pi_{\mathrm{ref}}(y_l \mid x)}"
    return Derivation(
        title="The implied reward, and why Z(x) cancels in a preference",
        intro=(r"Invert $\pi^*(y \mid x) = \pi_{\mathrm{ref}}(y \mid x)\, e^{r(x,y)/\beta} "
               r"/ Z(x)$; then compare a preferred response $y_w$ with a rejected $y_l$ of "
               r"the same prompt under the Bradley-Terry model "
               r"$P(y_w \succ y_l \mid x) = \sigma(r(x,y_w) - r(x,y_l))$."),
        name=f"{_MOD}.implied_reward",
        symbol_names={**_NAMES, sw: r"\pi^*_w", sl: r"\pi^*_l", qw: r"q_w", ql: "q_l",
                      Z_w: r"Z(x_w)", Z_l: r"Z(x_l)"},
        steps=[
            equal(beta * sp.log(star_i / qi) + beta * sp.log(Z), ri,
                  "take logs of π* and solve for r",
                  tex_lhs=(r"\beta\log\frac{\pi^*(y \mid x)}{\pi_{\mathrm{ref}}(y \mid x)} "
                           r"+ \beta\log Z(x)"),
                  tex_rhs=r"r(x, y)"),
            equal(implied(sw, qw, Z_w) - implied(sl, ql, Z_l), margin,
                  "same prompt, same Z(x): β log Z(x) cancels", subs={Z_w: Z, Z_l: Z},
                  tex_lhs=r"r(x, y_w) - r(x, y_l)",
                  tex_rhs=r"\beta\log " + W + r" - \beta\log " + L),
            equal(sigma(r_w - r_l), sigma(margin),
                  "Bradley-Terry preference", subs=rewards,
                  tex_lhs=r"P(y_w \succ y_l \mid x)",
                  tex_rhs=r"\sigma\Big(\beta\log " + W + r" - \beta\log " + L + r"\Big)"),
            equal(sp.Derivative(sigma(kept), Z), 0,
                  "no Z(x) left: the preference needs only π and π_ref, the idea of DPO",
                  tex_lhs=r"\frac{\partial}{\partial Z(x)} P(y_w \succ y_l \mid x)",
                  tex_rhs="0"),
        ],
    )


def derivation() -> Derivation:
    """The unit's main chain: KL(π_θ‖π*) = −(1/β)(E[r] − β·KL(π_θ‖π_ref)) + log Z(x)."""
    return kl_to_optimal_policy()


def derivations() -> list[Derivation]:
    """All derivations of unit 4, main first."""
    return [kl_to_optimal_policy(), optimal_policy(), log_partition_is_constant(),
            maximum_value(), beta_limits(), implied_reward()]
