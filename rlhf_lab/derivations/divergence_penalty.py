"""Unit 1: the log-probability difference as a divergence penalty.

Penalty(τ) = log π_θ(τ) − log π_ref(τ). Its expectation under π_θ is KL(π_θ‖π_ref) ≥ 0, with
equality only at π_θ = π_ref, although a single trajectory's penalty can be negative. Adding
−β·D to an objective keeps the maximizer close to θ_old, the more so the larger β.

Finite model used by the checks: K trajectories τ_1..τ_K with p_i = π_θ(τ_i) > 0 and
q_i = π_ref(τ_i) > 0, both summing to one.
"""

from __future__ import annotations

import functools

import sympy as sp

from .core import Derivation, equal, holds, then

__all__ = [
    "derivation", "derivations",
    "expected_penalty_is_kl", "kl_is_nonnegative", "bernoulli_kl", "three_outcome_kl",
    "penalized_quadratic", "single_trajectory_penalty",
]

_MOD = "divergence_penalty"

# K outcomes, probabilities p_i (policy) and q_i (reference)
K = sp.Symbol("K", integer=True, positive=True)
i = sp.Symbol("i", integer=True, positive=True)
p = sp.IndexedBase("p", positive=True)
q = sp.IndexedBase("q", positive=True)


def _sum(expr):
    """Σ_{i=1}^{K} expr: an expectation over the K trajectories once weighted by p_i."""
    return sp.Sum(expr, (i, 1, K))


def _E(f):
    """E_{τ~π_θ}[f(τ)] over the finite trajectory space."""
    return _sum(p[i] * f)


PENALTY_TEX = r"\log\pi_\theta(\tau) - \log\pi_{\mathrm{ref}}(\tau)"
KL_TEX = r"\mathrm{KL}(\pi_\theta \,\|\, \pi_{\mathrm{ref}})"
_FINITE = (r"Over a finite set of trajectories $\tau_1,\dots,\tau_K$ write "
           r"$p_i = \pi_\theta(\tau_i)$ and $q_i = \pi_{\mathrm{ref}}(\tau_i)$, both positive "
           r"and summing to one.")


@functools.lru_cache(maxsize=None)
def expected_penalty_is_kl() -> Derivation:
    """E_{τ~π_θ}[log π_θ(τ) − log π_ref(τ)] = KL(π_θ‖π_ref), and KL(π‖π) = 0."""
    kl = _sum(p[i] * sp.log(p[i] / q[i]))  # definition of KL(p‖q)
    # the two named quantities; each is replaced by its definition where the step uses it
    E_pen = sp.Symbol("E_penalty", real=True)      # E_{τ~π_θ}[Penalty(τ)]
    KL = sp.Symbol("KL", real=True)                # KL(π_θ‖π_ref)
    return Derivation(
        title="The expected penalty is the KL divergence",
        intro=_FINITE,
        name=f"{_MOD}.expected_penalty_is_kl",
        steps=[
            equal(E_pen, _sum(p[i] * (sp.log(p[i]) - sp.log(q[i]))),
                  "expectation over a finite set of trajectories",
                  subs={E_pen: _E(sp.log(p[i]) - sp.log(q[i]))},
                  tex_lhs=r"\mathbb{E}_{\tau\sim\pi_\theta}\big[" + PENALTY_TEX + r"\big]",
                  tex_rhs=r"\sum_{i=1}^{K} p_i\,(\log p_i - \log q_i)"),
            then(_sum(p[i] * sp.log(p[i])) - _sum(p[i] * sp.log(q[i])),
                 "linearity of the sum",
                 tex_rhs=r"\sum_{i} p_i \log p_i - \sum_{i} p_i \log q_i"),
            then(_sum(p[i] * sp.log(p[i] / q[i])), "log of a quotient",
                 tex_rhs=r"\sum_{i=1}^{K} p_i \log\frac{p_i}{q_i}"),
            then(KL, "definition of the KL divergence", subs={KL: kl}, tex_rhs=KL_TEX),
            equal(kl.subs(q, p), 0, "KL of a distribution with itself: log 1 = 0",
                  tex_lhs=r"\mathrm{KL}(\pi_{\mathrm{ref}} \,\|\, \pi_{\mathrm{ref}})"),
        ],
    )


@functools.lru_cache(maxsize=None)
def kl_is_nonnegative() -> Derivation:
    """Gibbs' inequality: KL(π_θ‖π_ref) = Σ p_i g(q_i/p_i) ≥ 0 with g(u) = u − 1 − log u ≥ 0."""
    u = sp.Symbol("u", positive=True)
    g = u - 1 - sp.log(u)  # the gap in log u ≤ u − 1
    kl = _sum(p[i] * sp.log(p[i] / q[i]))
    ratio = sp.Function("u", positive=True)     # u(i) = q_i / p_i > 0
    j = sp.Dummy("j", integer=True, positive=True)
    g_at = g.subs(u, ratio(i))                  # g(q_i / p_i)
    gibbs = _sum(p[i] * g_at)                   # Σ_i p_i g(q_i / p_i)
    return Derivation(
        title="The KL divergence is never negative (Gibbs' inequality)",
        intro=_FINITE + r" Let $g(u) = u - 1 - \log u$ for $u > 0$.",
        name=f"{_MOD}.kl_is_nonnegative",
        steps=[
            equal(sp.Subs(g, u, 1), 0, "g vanishes at u = 1", tex_lhs="g(1)"),
            equal(sp.Subs(sp.Derivative(g, u), u, 1), 0, "u = 1 is a stationary point of g",
                  tex_lhs=r"g'(1)"),
            equal(sp.Derivative(g, (u, 2)), 1 / u**2, "second derivative of g",
                  tex_lhs=r"g''(u)"),
            holds(sp.And(sp.StrictGreaterThan(sp.Derivative(g, (u, 2)), 0, evaluate=False),
                         sp.GreaterThan(g, 0, evaluate=False)),
                  "g is strictly convex, so g(u) ≥ g(1) = 0",
                  tex=r"g''(u) = \tfrac{1}{u^2} > 0 \ \text{and}\ g(u) &\geq 0 \quad (u > 0)"),
            equal(kl, gibbs + _sum(p[i]) - _sum(q[i]),
                  "add and subtract Σ p_i (q_i/p_i − 1)",
                  subs={ratio: sp.Lambda(j, q[j] / p[j])},
                  tex_lhs=KL_TEX,
                  tex_rhs=r"\sum_{i} p_i\, g\!\left(\tfrac{q_i}{p_i}\right) "
                          r"+ \sum_i p_i - \sum_i q_i"),
            then(gibbs + 1 - 1, "both distributions sum to one",
                 subs={_sum(p[i]): 1, _sum(q[i]): 1},
                 tex_rhs=r"\sum_{i} p_i\, g\!\left(\tfrac{q_i}{p_i}\right)"),
            holds(sp.GreaterThan(gibbs, 0, evaluate=False),
                  "every term is p_i > 0 times g ≥ 0",
                  tex=r"&\geq 0"),
        ],
    )


@functools.lru_cache(maxsize=None)
def bernoulli_kl() -> Derivation:
    """KL between Bernoulli(p) and Bernoulli(q): minimum 0, reached only at p = q."""
    pp, qq = sp.symbols("p q", positive=True)
    kl = pp * sp.log(pp / qq) + (1 - pp) * sp.log((1 - pp) / (1 - qq))
    dkl = sp.log(pp / qq) - sp.log((1 - pp) / (1 - qq))
    return Derivation(
        title="Bernoulli case: KL ≥ 0 with equality only at p = q",
        intro=(r"Two outcomes with $\pi_\theta = (p, 1-p)$ and "
               r"$\pi_{\mathrm{ref}} = (q, 1-q)$, $0 < p, q < 1$."),
        name=f"{_MOD}.bernoulli_kl",
        steps=[
            equal(sp.Subs(kl, pp, qq), 0, "no divergence at p = q",
                  tex_lhs=r"\mathrm{KL}(p\,\|\,q)\big|_{p=q}"),
            equal(sp.Derivative(kl, pp), dkl, "derivative in p",
                  tex_lhs=r"\frac{\partial}{\partial p}\mathrm{KL}(p\,\|\,q)"),
            equal(sp.Subs(dkl, pp, qq), 0, "p = q is a stationary point",
                  tex_lhs=r"\frac{\partial}{\partial p}\mathrm{KL}(p\,\|\,q)\big|_{p=q}"),
            equal(sp.Derivative(kl, (pp, 2)), 1 / (pp * (1 - pp)), "second derivative in p",
                  tex_lhs=r"\frac{\partial^2}{\partial p^2}\mathrm{KL}(p\,\|\,q)"),
            holds(1 / (pp * (1 - pp)) > 0,
                  "strictly convex on 0 < p < 1: p = q is the only minimum",
                  domain={pp: sp.Interval.open(0, 1)}),
        ],
    )


@functools.lru_cache(maxsize=None)
def three_outcome_kl() -> Derivation:
    """Three outcomes: the gradient on the simplex vanishes at p = q and the Hessian is
    positive definite, so p = q is the unique minimum (KL = 0 there)."""
    p1, p2, p3, q1, q2, q3 = sp.symbols("p_1 p_2 p_3 q_1 q_2 q_3", positive=True)
    on_simplex = {p3: 1 - p1 - p2}  # p_3 is determined by p_1, p_2
    kl = sum(a * sp.log(a / b) for a, b in ((p1, q1), (p2, q2), (p3, q3)))
    kl_free = kl.subs(on_simplex)  # a function of the free coordinates (p_1, p_2)
    grad = sp.Matrix([sp.diff(kl_free, v) for v in (p1, p2)])
    hess = sp.hessian(kl_free, (p1, p2))
    hess_p3 = sp.Matrix([[1 / p1 + 1 / p3, 1 / p3], [1 / p3, 1 / p2 + 1 / p3]])
    at_q = {p1: q1, p2: q2, q3: 1 - q1 - q2}
    return Derivation(
        title="Three outcomes: p = q is the unique minimum of the KL",
        intro=(r"$\pi_\theta = (p_1, p_2, p_3)$, $\pi_{\mathrm{ref}} = (q_1, q_2, q_3)$, all "
               r"positive with $p_3 = 1 - p_1 - p_2$ and $q_3 = 1 - q_1 - q_2$; the free "
               r"coordinates are $p_1, p_2$."),
        name=f"{_MOD}.three_outcome_kl",
        steps=[
            equal(grad, sp.Matrix([sp.log(p1 / q1) - sp.log(p3 / q3),
                                   sp.log(p2 / q2) - sp.log(p3 / q3)]),
                  "gradient on the simplex (p_3 moves with p_1, p_2)", subs=on_simplex,
                  tex_lhs=r"\nabla_{p_1,p_2}\mathrm{KL}"),
            equal(grad.applyfunc(lambda e: sp.Subs(e, tuple(at_q), tuple(at_q.values()))),
                  sp.zeros(2, 1), "p = q is a stationary point",
                  tex_lhs=r"\nabla_{p_1,p_2}\mathrm{KL}\big|_{p=q}"),
            equal(sp.Subs(kl, (p1, p2, p3), (q1, q2, q3)), 0, "the KL is 0 there",
                  tex_lhs=r"\mathrm{KL}\big|_{p=q}"),
            equal(hess, hess_p3, "Hessian in (p_1, p_2)", subs={p3: 1 - p1 - p2},
                  tex_lhs=r"\nabla^2_{p_1,p_2}\mathrm{KL}"),
            holds(sp.StrictGreaterThan(hess_p3[0, 0], 0, evaluate=False),
                  "first leading minor is positive"),
            holds(sp.StrictGreaterThan(hess_p3.det(), 0, evaluate=False),
                  "positive determinant: the Hessian is positive definite, so p = q is the "
                  "only minimum",
                  tex=(r"\det\nabla^2\mathrm{KL} = \tfrac{1}{p_1p_2} + \tfrac{1}{p_1p_3} "
                       r"+ \tfrac{1}{p_2p_3} &> 0")),
        ],
    )


@functools.lru_cache(maxsize=None)
def penalized_quadratic() -> Derivation:
    """J_new(θ) = J(θ) − β·D(θ, θ_old) on a quadratic toy: the maximizer moves toward θ_old as
    β grows (a larger β shrinks the trusted region)."""
    theta, theta_old, a = sp.symbols(r"theta theta_old a", real=True)
    beta = sp.Symbol("beta", nonnegative=True)
    J = -(theta - a) ** 2                 # the objective alone peaks at θ = a
    D = (theta - theta_old) ** 2          # divergence from the previous parameters
    J_new = J - beta * D
    theta_hat = (a + beta * theta_old) / (1 + beta)
    dist2 = (theta_hat - theta_old) ** 2  # squared size of the update
    return Derivation(
        title="A larger β keeps the maximizer of J − β·D closer to θ_old",
        intro=(r"Toy objective $J(\theta) = -(\theta - a)^2$ with divergence "
               r"$D(\theta, \theta_{\mathrm{old}}) = (\theta - \theta_{\mathrm{old}})^2$ "
               r"and $\beta \geq 0$; $J_{\mathrm{new}} = J - \beta D$ is maximized."),
        name=f"{_MOD}.penalized_quadratic",
        symbol_names={theta_old: r"\theta_{\mathrm{old}}"},
        steps=[
            equal(sp.Subs(sp.Derivative(J_new, theta), theta, theta_hat), 0,
                  "the stationary point solves dJ_new/dθ = 0",
                  tex_lhs=(r"\frac{\partial J_{\mathrm{new}}}{\partial\theta}"
                           r"\Big|_{\theta=\hat\theta}"),
                  tex_rhs=(r"0 \quad\text{for}\quad \hat\theta = "
                           r"\frac{a + \beta\,\theta_{\mathrm{old}}}{1+\beta}")),
            holds(sp.StrictLessThan(sp.Derivative(J_new, (theta, 2)), 0, evaluate=False),
                  "J_new is concave, so the stationary point is the maximizer",
                  tex=(r"\frac{\partial^2 J_{\mathrm{new}}}{\partial\theta^2} "
                       r"= -2(1+\beta) &< 0")),
            equal(theta_hat - theta_old, (a - theta_old) / (1 + beta),
                  "the update is the unpenalized one shrunk by 1/(1+β)",
                  tex_lhs=r"\hat\theta - \theta_{\mathrm{old}}"),
            equal(sp.Derivative(dist2, beta), -2 * (a - theta_old) ** 2 / (1 + beta) ** 3,
                  "rate of change of the squared step in β",
                  tex_lhs=r"\frac{\partial}{\partial\beta}(\hat\theta - "
                          r"\theta_{\mathrm{old}})^2"),
            holds(sp.LessThan(sp.Derivative(dist2, beta), 0, evaluate=False),
                  "the step never grows with β: the trusted region shrinks",
                  tex=(r"\frac{\partial}{\partial\beta}(\hat\theta - "
                       r"\theta_{\mathrm{old}})^2 &\leq 0")),
            equal(sp.Limit(theta_hat, beta, 0), a, "β → 0: the plain maximizer of J",
                  tex_lhs=r"\lim_{\beta\to 0}\hat\theta"),
            equal(sp.Limit(theta_hat, beta, sp.oo), theta_old, "β → ∞: no update at all",
                  tex_lhs=r"\lim_{\beta\to\infty}\hat\theta"),
        ],
    )


@functools.lru_cache(maxsize=None)
def single_trajectory_penalty() -> Derivation:
    """One trajectory's penalty can be negative although its expectation cannot."""
    pol = (sp.Rational(3, 4), sp.Rational(1, 4))   # π_θ(τ_1), π_θ(τ_2)
    ref = (sp.Rational(1, 2), sp.Rational(1, 2))   # π_ref(τ_1), π_ref(τ_2)
    penalty = [sp.log(a) - sp.log(b) for a, b in zip(pol, ref)]
    expected = sum(a * pen for a, pen in zip(pol, penalty))
    return Derivation(
        title="A single trajectory's penalty can be negative; its expectation cannot",
        intro=(r"Two trajectories with $\pi_\theta = (\tfrac34, \tfrac14)$ and "
               r"$\pi_{\mathrm{ref}} = (\tfrac12, \tfrac12)$."),
        name=f"{_MOD}.single_trajectory_penalty",
        steps=[
            equal(penalty[0], sp.log(3) - sp.log(2), "τ_1 is likelier under π_θ",
                  tex_lhs=r"\mathrm{Penalty}(\tau_1) = \log\tfrac34 - \log\tfrac12"),
            equal(penalty[1], -sp.log(2), "τ_2 is less likely under π_θ",
                  tex_lhs=r"\mathrm{Penalty}(\tau_2) = \log\tfrac14 - \log\tfrac12"),
            holds(sp.StrictLessThan(penalty[1], 0, evaluate=False), "a negative penalty for τ_2",
                  tex=r"\mathrm{Penalty}(\tau_2) &< 0"),
            equal(expected, sp.Rational(3, 4) * sp.log(3) - sp.log(2),
                  "weight each penalty by π_θ(τ)",
                  tex_lhs=(r"\mathbb{E}_{\tau\sim\pi_\theta}[\mathrm{Penalty}] = "
                           r"\tfrac34\log\tfrac32 + \tfrac14\log\tfrac12")),
            holds(sp.StrictGreaterThan(expected, 0, evaluate=False),
                  "the expectation is a KL divergence, positive as π_θ ≠ π_ref",
                  tex=r"\tfrac34\log 3 - \log 2 \approx 0.131 &> 0"),
        ],
    )


def derivation() -> Derivation:
    """The unit's main chain: the expected penalty is KL(π_θ‖π_ref)."""
    return expected_penalty_is_kl()


def derivations() -> list[Derivation]:
    """All derivations of unit 1, main first."""
    return [expected_penalty_is_kl(), kl_is_nonnegative(), bernoulli_kl(), three_outcome_kl(),
            penalized_quadratic(), single_trajectory_penalty()]
