"""Unit 3: the policy gradient with advantages.

∇_θ J = E_τ[∇_θ log Pr_θ(τ) R(τ)] (log-derivative trick); only the policy's factors of Pr_θ(τ)
depend on θ, so ∇_θ log Pr_θ(τ) = Σ_t ∇_θ log π_θ(a_t|s_t). For a softmax policy the score function
is e_a − π; a baseline does not bias the gradient because E_a[∇ log π(a)] = 0. Maximizing
Σ_t log π_θ(a_t|s_t) A(s_t, a_t) raises actions with A > 0 and lowers those with A < 0; the A2C
loss is its negative.
"""

from __future__ import annotations

import functools

import sympy as sp

from .core import Derivation, equal, holds, then

__all__ = [
    "derivation", "derivations",
    "policy_gradient", "dynamics_drop_out", "reward_to_go", "softmax_score", "baseline_unbiased",
    "three_action_example", "a2c_loss",
]

_MOD = "advantage_objective"

theta = sp.Symbol("theta", real=True)
K = sp.Symbol("K", integer=True, positive=True)      # number of trajectories
i = sp.Symbol("i", integer=True, positive=True)
T = sp.Symbol("T", integer=True, positive=True)      # episode length
t = sp.Symbol("t", integer=True, nonnegative=True)
Pr = sp.Function("Pr", positive=True)                # Pr(i, θ) = Pr_θ(τ_i)
R = sp.IndexedBase("R", real=True)                   # R(τ_i), does not depend on θ

# three actions with logits z_1, z_2, z_3 and a softmax policy
z = sp.symbols("z_1:4", real=True)
_den = sum(sp.exp(zj) for zj in z)
pi3 = sp.Matrix([sp.exp(zj) / _den for zj in z])     # π = softmax(z)


def _score(a: int) -> sp.Matrix:
    """∇_z log π(a) computed by sympy from the log-softmax."""
    return sp.Matrix([sp.diff(sp.log(pi3[a]), zj) for zj in z])


def _e(a: int) -> sp.Matrix:
    return sp.Matrix([1 if j == a else 0 for j in range(3)])


# The probabilities that weight an expectation over the actions, kept as free positive symbols
# w_a until the step that needs them to be the softmax probabilities π_θ(a), which sum to one
# (with the softmax substituted from the start, E_a[∇ log π(a)] is identically 0 and every
# intermediate line would be 0 = 0).
w = sp.symbols("w_1:4", positive=True)
_WEIGHTS_ARE_PI = dict(zip(w, pi3))


@functools.lru_cache(maxsize=None)
def policy_gradient() -> Derivation:
    """∇J(θ) = Σ_τ ∇Pr_θ(τ) R(τ) = E_τ[∇ log Pr_θ(τ) R(τ)]."""
    P = Pr(i, theta)
    J = sp.Sum(P * R[i], (i, 1, K))
    grad_sum = sp.Sum(sp.Derivative(P, theta) * R[i], (i, 1, K))
    # ∇log p kept unevaluated (sympy would otherwise turn p ∇log p back into ∇p at once)
    dlogP = sp.Derivative(sp.log(P), theta)
    score_form = sp.Sum(P * dlogP * R[i], (i, 1, K))
    expectation = sp.Symbol("E_score", real=True)    # E_{τ~Pr_θ}[∇ log Pr_θ(τ) R(τ)]
    return Derivation(
        title="The policy gradient via the log-derivative trick",
        intro=(r"Over a finite set of trajectories $\tau_1, \dots, \tau_K$, "
               r"$J(\theta) = \mathbb{E}_{\tau\sim\Pr_\theta}[R(\tau)] "
               r"= \sum_\tau \Pr_\theta(\tau) R(\tau)$; the return $R(\tau)$ does not depend "
               r"on $\theta$."),
        name=f"{_MOD}.policy_gradient",
        steps=[
            equal(sp.Derivative(J, theta), grad_sum, "differentiate the finite sum term by term",
                  tex_lhs=r"\nabla_\theta J(\theta)",
                  tex_rhs=r"\sum_\tau \nabla_\theta \Pr_\theta(\tau)\, R(\tau)"),
            then(score_form, "log-derivative trick: ∇p = p ∇log p",
                 tex_rhs=(r"\sum_\tau \Pr_\theta(\tau)\, \nabla_\theta \log\Pr_\theta(\tau)\, "
                          r"R(\tau)")),
            then(expectation, "a probability-weighted sum is an expectation",
                 subs={expectation: score_form},     # E_{τ~Pr_θ}[f] = Σ_τ Pr_θ(τ) f(τ)
                 tex_rhs=(r"\mathbb{E}_{\tau\sim\Pr_\theta}\big[\nabla_\theta "
                          r"\log\Pr_\theta(\tau)\, R(\tau)\big]")),
            equal(sp.Derivative(P, theta), P * dlogP,
                  "the trick itself: the derivative of log p is p'/p",
                  tex_lhs=r"\nabla_\theta \Pr_\theta(\tau)",
                  tex_rhs=r"\Pr_\theta(\tau)\, \nabla_\theta \log\Pr_\theta(\tau)"),
        ],
    )


@functools.lru_cache(maxsize=None)
def dynamics_drop_out() -> Derivation:
    """∇_θ log Pr_θ(τ) = Σ_t ∇_θ log π_θ(a_t|s_t): the dynamics and the start state drop out."""
    pi = sp.Function("pi", positive=True)      # pi(t, θ) = π_θ(a_t | s_t)
    P = sp.Function("P", positive=True)        # P(t) = P(s_{t+1} | s_t, a_t), free of θ
    rho0 = sp.Symbol("rho_0", positive=True)   # ρ_0(s_0), free of θ
    traj = rho0 * sp.Product(pi(t, theta) * P(t), (t, 0, T - 1))
    log_traj = (sp.log(rho0) + sp.Sum(sp.log(pi(t, theta)), (t, 0, T - 1))
                + sp.Sum(sp.log(P(t)), (t, 0, T - 1)))
    PI = r"\pi_\theta(a_t \mid s_t)"
    DYN = r"P(s_{t+1} \mid s_t, a_t)"
    return Derivation(
        title="The environment's dynamics drop out of the score function",
        intro=(r"A trajectory $\tau = (s_0, a_0, \dots, s_T)$ has "
               r"$\Pr_\theta(\tau) = \rho_0(s_0)\prod_{t=0}^{T-1}" + PI + DYN + r"$; "
               r"only $\pi_\theta$ depends on $\theta$."),
        name=f"{_MOD}.dynamics_drop_out",
        steps=[
            equal(sp.log(traj), log_traj, "the log of a product is the sum of the logs",
                  tex_lhs=r"\log\Pr_\theta(\tau)",
                  tex_rhs=(r"\log\rho_0(s_0) + \sum_{t=0}^{T-1}\log " + PI
                           + r" + \sum_{t=0}^{T-1}\log " + DYN)),
            equal(sp.Derivative(log_traj, theta),
                  sp.Sum(sp.Derivative(sp.log(pi(t, theta)), theta), (t, 0, T - 1)),
                  "dynamics and start state do not depend on θ",
                  tex_lhs=r"\nabla_\theta\log\Pr_\theta(\tau)",
                  tex_rhs=r"\sum_{t=0}^{T-1}\nabla_\theta\log " + PI),
        ],
    )


@functools.lru_cache(maxsize=None)
def reward_to_go() -> Derivation:
    """Rewards earned before step t do not bias step t's gradient term: E[∇ log π(a_2) r_1] = 0,
    so each log-probability can be weighted by the reward-to-go instead of the whole return."""
    p = sp.symbols("p_1:4", positive=True)            # first-step action probabilities
    r1 = sp.symbols("r1_1:4", real=True)              # reward after the first action a_1 = i
    r2 = sp.Matrix(3, 3, lambda a1, a2: sp.Symbol(f"r2_{a1 + 1}{a2 + 1}", real=True))
    score_sum = sum((w[a] * _score(a) for a in range(3)), sp.zeros(3, 1))   # E_{a_2}[∇ log π]

    def expect(weight, probs=pi3):
        """E over a_1 ~ p, a_2 ~ probs of ∇_z log π_θ(a_2) · weight(a_1, a_2)."""
        return sum((p[a1] * probs[a2] * _score(a2) * weight(a1, a2)
                    for a1 in range(3) for a2 in range(3)), sp.zeros(3, 1))

    past = expect(lambda a1, a2: r1[a1], probs=w)     # a_2 ~ w, which is π_θ from step 2 on
    return Derivation(
        title="Reward-to-go: rewards from the past drop out",
        intro=(r"Two steps with three actions each: $a_1 \sim p$, then $a_2 \sim \pi_\theta$ "
               r"(softmax of logits $z$); $r_1$ follows $a_1$, $r_2$ follows $a_2$. The gradient "
               r"term of step 2 is weighted by the return $r_1 + r_2$. The check keeps the "
               r"probabilities $\pi_\theta(a_2)$ that weight the expectation as free symbols "
               r"until the second line, where they must be the softmax probabilities."),
        name=f"{_MOD}.reward_to_go",
        steps=[
            equal(past, sum((p[a1] * r1[a1] * score_sum for a1 in range(3)), sp.zeros(3, 1)),
                  "r_1 is fixed before a_2 is drawn",
                  tex_lhs=r"\mathbb{E}\big[\nabla_z\log\pi_\theta(a_2)\,r_1(a_1)\big]",
                  tex_rhs=(r"\sum_{a_1} p(a_1)\,r_1(a_1)\sum_{a_2}\pi_\theta(a_2)"
                           r"\,\nabla_z\log\pi_\theta(a_2)")),
            then(sp.zeros(3, 1), "the expected score function is 0, as for a baseline",
                 subs=_WEIGHTS_ARE_PI, tex_rhs="0"),
            equal(expect(lambda a1, a2: r1[a1] + r2[a1, a2]), expect(lambda a1, a2: r2[a1, a2]),
                  "only the reward-to-go remains",
                  tex_lhs=r"\mathbb{E}\big[\nabla_z\log\pi_\theta(a_2)\,(r_1 + r_2)\big]",
                  tex_rhs=r"\mathbb{E}\big[\nabla_z\log\pi_\theta(a_2)\,r_2\big]"),
        ],
    )


@functools.lru_cache(maxsize=None)
def softmax_score() -> Derivation:
    """For π = softmax(z): log π(a) = z_a − log Σ_b e^{z_b} and ∇_z log π(a) = e_a − π."""
    log_sum_exp = sp.log(_den)
    steps = [
        equal(sp.log(pi3[0]), z[0] - log_sum_exp, "log of a softmax",
              tex_lhs=r"\log\pi_\theta(a)",
              tex_rhs=r"z_a - \log\textstyle\sum_{b} e^{z_b}"),
    ]
    for a in range(3):
        steps.append(equal(_score(a), _e(a) - pi3,
                           f"derivative of the log-softmax, action {a + 1}",
                           tex_lhs=rf"\nabla_z \log\pi_\theta(a_{a + 1})",
                           tex_rhs=rf"e_{a + 1} - \pi_\theta"))
    return Derivation(
        title="The score function of a softmax policy is e_a − π",
        intro=(r"Three actions with logits $z = (z_1, z_2, z_3)$ and "
               r"$\pi_\theta(a) = e^{z_a} / \sum_b e^{z_b}$; $e_a$ is the one-hot vector of "
               r"action $a$."),
        name=f"{_MOD}.softmax_score",
        steps=steps,
    )


@functools.lru_cache(maxsize=None)
def baseline_unbiased() -> Derivation:
    """E_a[∇ log π(a)] = 0, so subtracting a baseline b(s) leaves the gradient unbiased."""
    q = sp.symbols("Q_1:4", real=True)        # action values Q(s, a)
    b = sp.Symbol("b", real=True)             # any baseline that does not depend on a
    expected_score = sum((w[a] * _score(a) for a in range(3)), sp.zeros(3, 1))
    with_baseline = sum((pi3[a] * _score(a) * (q[a] - b) for a in range(3)), sp.zeros(3, 1))
    without = sum((pi3[a] * _score(a) * q[a] for a in range(3)), sp.zeros(3, 1))
    return Derivation(
        title="A baseline leaves the policy gradient unbiased",
        intro=(r"Softmax policy over three actions with logits $z$; $b$ depends on the state "
               r"but not on the action. The check keeps the probabilities $\pi_\theta(a)$ that "
               r"weight the expectation as free symbols until the line that uses "
               r"$\sum_a \pi_\theta(a) = 1$."),
        name=f"{_MOD}.baseline_unbiased",
        steps=[
            equal(expected_score, sum((w[a] * (_e(a) - pi3) for a in range(3)),
                                      sp.zeros(3, 1)),
                  "score function of the softmax, e_a − π",
                  tex_lhs=r"\mathbb{E}_{a\sim\pi_\theta}[\nabla_z\log\pi_\theta(a)]",
                  tex_rhs=r"\sum_a \pi_\theta(a)\,(e_a - \pi_\theta)"),
            then(sp.Matrix(w) - pi3 * sum(w), "Σ_a π(a) e_a = π",
                 tex_rhs=r"\pi_\theta - \pi_\theta \sum_a \pi_\theta(a)"),
            then(sp.zeros(3, 1), "probabilities sum to one", subs=_WEIGHTS_ARE_PI,
                 tex_rhs=r"0"),
            equal(with_baseline, without, "the baseline term has expectation b · 0 = 0",
                  tex_lhs=(r"\mathbb{E}_{a\sim\pi_\theta}\big[\nabla_z\log\pi_\theta(a)"
                           r"\,(Q(s,a) - b(s))\big]"),
                  tex_rhs=(r"\mathbb{E}_{a\sim\pi_\theta}\big[\nabla_z\log\pi_\theta(a)"
                           r"\,Q(s,a)\big]")),
        ],
    )


@functools.lru_cache(maxsize=None)
def three_action_example() -> Derivation:
    """Three actions, uniform policy, advantages A = (2, −1, 0): one ascent step on
    Σ_a A(a) log π(a) raises π(a_1), lowers π(a_2) and also lowers π(a_3) although A(a_3) = 0."""
    adv = (sp.Integer(2), sp.Integer(-1), sp.Integer(0))
    objective = sum(adv[a] * sp.log(pi3[a]) for a in range(3))
    at_uniform = {zj: 0 for zj in z}
    grad = sp.Matrix([sp.diff(objective, zj) for zj in z])
    eta = sp.Symbol("eta", positive=True)      # step size of gradient ascent
    g0 = grad.subs(at_uniform)
    moved = pi3.subs({z[j]: eta * g0[j] for j in range(3)})   # π after a step of size η
    # the evaluations are left to verify(): the gradient at z = 0 and dπ/dη at η = 0
    grad_at_uniform = grad.applyfunc(lambda e: sp.Subs(e, z, (0, 0, 0)))
    rate = moved.applyfunc(lambda e: sp.Subs(sp.Derivative(e, eta), eta, 0))
    return Derivation(
        title="Three actions: who moves, and which way",
        intro=(r"Uniform policy ($z = 0$, $\pi_\theta = (\tfrac13, \tfrac13, \tfrac13)$), "
               r"advantages $A = (2, -1, 0)$, objective "
               r"$L(z) = \sum_a A(a)\log\pi_\theta(a)$, one gradient-ascent step "
               r"$z \leftarrow z + \eta\,\nabla_z L$."),
        name=f"{_MOD}.three_action_example",
        steps=[
            equal(grad, sum((adv[a] * (_e(a) - pi3) for a in range(3)), sp.zeros(3, 1)),
                  "score function of the softmax, e_a − π, for each action",
                  tex_lhs=r"\nabla_z L", tex_rhs=r"\sum_a A(a)\,(e_a - \pi_\theta)"),
            equal(grad_at_uniform,
                  sp.Matrix([sp.Rational(5, 3), sp.Rational(-4, 3), sp.Rational(-1, 3)]),
                  "at the uniform policy",
                  tex_lhs=r"\nabla_z L\big|_{z=0}"),
            equal(rate, sp.Matrix([sp.Rational(5, 9), sp.Rational(-4, 9), sp.Rational(-1, 9)]),
                  "first-order change of π through the softmax",
                  tex_lhs=r"\frac{d}{d\eta}\pi_\theta\big|_{\eta=0}"),
            holds(sp.StrictGreaterThan(rate[0], 0, evaluate=False),
                  "A > 0: the probability of a_1 rises",
                  tex=r"\tfrac{d}{d\eta}\pi_\theta(a_1) = \tfrac59 &> 0"),
            holds(sp.StrictLessThan(rate[1], 0, evaluate=False),
                  "A < 0: the probability of a_2 falls",
                  tex=r"\tfrac{d}{d\eta}\pi_\theta(a_2) = -\tfrac49 &< 0"),
            holds(sp.Unequality(rate[2], 0, evaluate=False),
                  "A = 0, yet the probability of a_3 moves: probabilities share one "
                  "normalization",
                  tex=r"\tfrac{d}{d\eta}\pi_\theta(a_3) = -\tfrac19 &\neq 0"),
            equal(sum(rate), 0, "the changes add up to zero",
                  tex_lhs=r"\sum_a \tfrac{d}{d\eta}\pi_\theta(a)"),
        ],
    )


@functools.lru_cache(maxsize=None)
def a2c_loss() -> Derivation:
    """L_A2C(θ) = −Σ_t log π_θ(a_t|s_t) A_t = −J_A(θ): descending the loss ascends J."""
    pi = sp.Function("pi", positive=True)   # pi(t, θ) = π_θ(a_t | s_t)
    A = sp.IndexedBase("A", real=True)      # advantages, treated as constants (no gradient)
    J = sp.Sum(sp.log(pi(t, theta)) * A[t], (t, 0, T - 1))
    loss = sp.Sum(-sp.log(pi(t, theta)) * A[t], (t, 0, T - 1))
    PI = r"\pi_\theta(a_t \mid s_t)"
    return Derivation(
        title="The A2C loss is the negative of the advantage objective",
        intro=(r"$J_A(\theta) = \sum_{t} \log " + PI + r"\, A(s_t, a_t)$ with the advantages "
               r"held fixed (no gradient flows through them)."),
        name=f"{_MOD}.a2c_loss",
        steps=[
            equal(loss, -J, "a constant factor −1 leaves the sum",
                  tex_lhs=r"\mathcal{L}_{\mathrm{A2C}}(\theta) = -\sum_{t=0}^{T-1}\log " + PI
                          + r"\, A(s_t, a_t)",
                  tex_rhs=r"-J_A(\theta)"),
            equal(sp.Derivative(loss, theta), -sp.Derivative(J, theta),
                  "so its gradient is −∇J: a descent step on the loss is an ascent step on J",
                  tex_lhs=r"\nabla_\theta\mathcal{L}_{\mathrm{A2C}}",
                  tex_rhs=r"-\nabla_\theta J_A(\theta)"),
            then(-sp.Sum(A[t] * sp.Derivative(sp.log(pi(t, theta)), theta), (t, 0, T - 1)),
                 "score function of each action, weighted by its advantage",
                 tex_rhs=(r"-\sum_{t=0}^{T-1} A(s_t, a_t)\,\nabla_\theta\log " + PI)),
        ],
    )


def derivation() -> Derivation:
    """The unit's main chain: the policy gradient via the log-derivative trick."""
    return policy_gradient()


def derivations() -> list[Derivation]:
    """All derivations of unit 3, main first."""
    return [policy_gradient(), dynamics_drop_out(), reward_to_go(), softmax_score(), baseline_unbiased(),
            three_action_example(), a2c_loss()]
