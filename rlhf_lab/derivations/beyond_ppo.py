"""Unit 6: beyond PPO — what the KL term optimizes, dropping the critic, loss aggregation, clipping.

- **The KL term as a loss or as a reward.** ∇E_{y~π_θ}[f_θ(y)] = E[f ∇log π_θ] + E[∇f]. A loss on
  sampled tokens keeps only the second (pathwise) term, a reward only the first (score-function)
  term. With log r = log π_ref(y) − log π_θ(y): E[∇k1] = 0, E[∇k2] = ∇KL(π_θ‖π_ref) and
  E[∇k3] = ∇KL(π_ref‖π_θ), the forward KL (Schulman 2020's estimators used as losses, as GRPO does
  with k3); in the reward, E[(r − β k1 − b) ∇log π_θ] = ∇(E[r] − β KL(π_θ‖π_ref)) for any baseline
  b that does not depend on y (unit 4's objective). k3 in the loss therefore drives the policy to
  the stationary point of E[r] − β KL(π_ref‖π_θ), π(a) = β π_ref(a)/(β + E_π[r] − r(a)), not to
  unit 4's π*.
- **Dropping the critic.** A group baseline that does not depend on the sample it scores keeps
  REINFORCE unbiased (Ahmadian et al. 2024, RLOO); the leave-one-out advantage is
  G/(G − 1)(r_i − r̄); GRPO's (r_i − r̄)/σ has mean 0 and unit (population) variance (Shao et al.
  2024), and gives a prompt whose rewards are Bernoulli(p) the weight 1/√(p(1 − p)).
- **Loss aggregation** (Liu et al. 2025, Dr. GRPO; Yu et al. 2025, DAPO): the weight of one token
  of response i is 1/(B L_i) ("grpo"), 1/Σ_j L_j ("dapo"/"bnpo") or 1/(B L_max) ("dr_grpo"); under
  "grpo" a positive advantage pushes a short response's tokens harder and a negative advantage
  pushes a long response's tokens less.
- **Clipping with one step per batch** (μ = 1) never acts: the ratio is exactly 1 where the gradient
  is taken. Clip-higher (DAPO): one update raises a token of probability p to at most
  (1 + ε_high)p, so unlikely tokens rise slowly and a larger ε_high lets them rise faster.

Finite model of the KL derivations: a vocabulary y_1..y_K, π_θ(y_i) = π(i, θ) > 0 an arbitrary
differentiable function of θ (any one coordinate of the parameters) that sums to one for every θ,
π_ref(y_i) = q_i > 0 and the rewards r_i independent of θ. These are general-K proofs; the
softmax appears where a concrete parametrization is needed (the forward-KL optimum, the Bernoulli
weight).
"""

from __future__ import annotations

import functools

import sympy as sp

from .core import Derivation, equal, holds, then

__all__ = [
    "derivation", "derivations",
    "gradient_of_expectation", "k1_in_loss", "k2_in_loss", "k3_in_loss", "kl_in_reward",
    "forward_kl_optimum", "group_baseline", "leave_one_out", "grpo_advantage",
    "bernoulli_std_weight", "loss_aggregation", "length_bias", "one_step_ratio", "clip_higher",
]

_MOD = "beyond_ppo"

K = sp.Symbol("K", integer=True, positive=True)
i = sp.Symbol("i", integer=True, positive=True)
theta = sp.Symbol("theta", real=True)
pi = sp.Function("pi", positive=True)      # pi(i, θ) = π_θ(y_i)
q = sp.IndexedBase("q", positive=True)     # π_ref(y_i), free of θ
r = sp.IndexedBase("r", real=True)         # r(y_i), free of θ
beta = sp.Symbol("beta", positive=True)
P = pi(i, theta)


def _sum(expr):
    """Σ_{i=1}^{K} expr over the vocabulary."""
    return sp.Sum(expr, (i, 1, K))


def _d(expr):
    """∂/∂θ, left unevaluated for verify()."""
    return sp.Derivative(expr, theta)


# π_θ sums to one for every θ; verify() substitutes it only in the steps that say so
NORMALIZED = {_sum(P): 1}

# -- LaTeX pieces ---------------------------------------------------------------------------------
PI = r"\pi_\theta(y)"
REF = r"\pi_{\mathrm{ref}}(y)"
E = r"\mathbb{E}_{y\sim\pi_\theta}"
SCORE = r"\nabla_\theta\log\pi_\theta(y)"
KL_REV = r"\mathrm{KL}(\pi_\theta \,\|\, \pi_{\mathrm{ref}})"
KL_FWD = r"\mathrm{KL}(\pi_{\mathrm{ref}} \,\|\, \pi_\theta)"
LOGR = r"\log\frac{" + PI + "}{" + REF + "}"
_FINITE = (r"A vocabulary $y_1, \dots, y_K$; $\pi_\theta(y)$ is any differentiable function of "
           r"$\theta$ (one coordinate of the parameters) that is positive and sums to one for "
           r"every $\theta$; $\pi_{\mathrm{ref}}(y) > 0$ does not depend on $\theta$.")
_ESTIMATORS = (r" For a sample $y \sim \pi_\theta$, $\log r(y) = \log\pi_{\mathrm{ref}}(y) - "
               r"\log\pi_\theta(y)$, $k_1 = -\log r$, $k_2 = \tfrac12(\log r)^2$, "
               r"$k_3 = (r - 1) - \log r$. Used as a loss, the estimate is differentiated with "
               r"the sampled $y$ held fixed: no gradient flows through the sampling.")


@functools.lru_cache(maxsize=None)
def gradient_of_expectation() -> Derivation:
    """∇E_{y~π_θ}[f_θ(y)] = E[f_θ(y) ∇log π_θ(y)] + E[∇f_θ(y)]: the score-function term (what a
    reward gives) and the pathwise term (what a loss on samples gives)."""
    f = sp.Function("f", real=True)(i, theta)         # a per-sample quantity, e.g. a KL estimate
    E_score = sp.Symbol("E_score", real=True)         # E_{y~π_θ}[f_θ(y) ∇log π_θ(y)]
    E_path = sp.Symbol("E_path", real=True)           # E_{y~π_θ}[∇f_θ(y)]
    score_sum = _sum(P * f * _d(sp.log(P)))
    path_sum = _sum(P * _d(f))
    return Derivation(
        title="Two parts of the gradient of an expectation: the sample's and the estimate's",
        intro=_FINITE + (r" $f_\theta(y)$ is a per-sample quantity that may depend on $\theta$, "
                         r"such as a KL estimate. A loss on samples differentiates $f_\theta(y)$ "
                         r"with $y$ held fixed: its expected gradient is the second term. A "
                         r"reward multiplies $\nabla_\theta\log\pi_\theta(y)$ and is not "
                         r"differentiated: the first term. Only both together are "
                         r"$\nabla_\theta\mathbb{E}[f_\theta]$."),
        name=f"{_MOD}.gradient_of_expectation",
        steps=[
            equal(_d(_sum(P * f)), _sum(_d(P) * f + P * _d(f)),
                  "product rule, term by term in the finite sum",
                  tex_lhs=r"\nabla_\theta\, " + E + r"\big[f_\theta(y)\big]",
                  tex_rhs=(r"\sum_y \big(\nabla_\theta" + PI + r"\, f_\theta(y) + " + PI
                           + r"\,\nabla_\theta f_\theta(y)\big)")),
            then(score_sum + path_sum, "log-derivative trick: ∇π = π ∇log π",
                 tex_rhs=(r"\sum_y " + PI + r"\, f_\theta(y)\, " + SCORE + r" + \sum_y " + PI
                          + r"\,\nabla_\theta f_\theta(y)")),
            then(E_score + E_path, "each sum is an expectation under π_θ",
                 subs={E_score: score_sum, E_path: path_sum},
                 tex_rhs=(E + r"\big[f_\theta(y)\, " + SCORE + r"\big] + " + E
                          + r"\big[\nabla_\theta f_\theta(y)\big]")),
        ],
    )


@functools.lru_cache(maxsize=None)
def k1_in_loss() -> Derivation:
    """E_{y~π_θ}[∇k1(y)] = 0: k1 used as a loss has no expected gradient at all."""
    k1 = sp.log(P) - sp.log(q[i])                       # −log r
    return Derivation(
        title="k1 as a loss: its expected gradient is zero",
        intro=_FINITE + _ESTIMATORS + (r" Although $\mathbb{E}[k_1] = " + KL_REV
                                       + r"$, the whole gradient of that KL sits in the "
                                       r"score-function term, which a loss drops."),
        name=f"{_MOD}.k1_in_loss",
        steps=[
            equal(_sum(P * _d(k1)), _sum(P * _d(sp.log(P))),
                  "the sample is fixed and π_ref does not depend on θ: ∇k1 = ∇log π_θ",
                  tex_lhs=E + r"\big[\nabla_\theta k_1(y)\big]",
                  tex_rhs=r"\sum_y " + PI + r"\, " + SCORE),
            then(_sum(_d(P)), "log-derivative trick backwards: π ∇log π = ∇π",
                 tex_rhs=r"\sum_y \nabla_\theta " + PI),
            then(_d(_sum(P)), "a finite sum: the gradient of the sum",
                 tex_rhs=r"\nabla_\theta \sum_y " + PI),
            then(0, "π_θ sums to one for every θ: the score has expectation 0",
                 subs=NORMALIZED, tex_rhs=r"\nabla_\theta 1 = 0"),
        ],
    )


@functools.lru_cache(maxsize=None)
def k2_in_loss() -> Derivation:
    """E_{y~π_θ}[∇k2(y)] = ∇KL(π_θ‖π_ref): k2 as a loss follows the reverse KL."""
    k2 = (sp.log(q[i]) - sp.log(P)) ** 2 / 2
    log_ratio = sp.log(P) - sp.log(q[i])
    return Derivation(
        title="k2 as a loss: the gradient of the reverse KL",
        intro=_FINITE + _ESTIMATORS,
        name=f"{_MOD}.k2_in_loss",
        steps=[
            equal(_sum(P * _d(k2)), _sum(P * log_ratio * _d(sp.log(P))),
                  "the sample is fixed: chain rule on ½(log r)², with ∇log r = −∇log π_θ",
                  tex_lhs=E + r"\big[\nabla_\theta k_2(y)\big]",
                  tex_rhs=r"\sum_y " + PI + r"\, " + LOGR + r"\, " + SCORE),
            then(_sum(_d(P) * log_ratio), "log-derivative trick backwards: π ∇log π = ∇π",
                 tex_rhs=r"\sum_y \nabla_\theta" + PI + r"\, " + LOGR),
            then(_sum(_d(P) * log_ratio) + _d(_sum(P)),
                 "add ∇Σ π_θ, which is ∇1 = 0", subs=NORMALIZED,
                 tex_rhs=(r"\sum_y \nabla_\theta" + PI + r"\, " + LOGR
                          + r" + \nabla_\theta\sum_y " + PI)),
            then(_d(_sum(P * sp.log(P / q[i]))),
                 "product rule backwards: ∇(π log(π/π_ref)) = ∇π log(π/π_ref) + ∇π",
                 tex_rhs=(r"\nabla_\theta \sum_y " + PI + r"\, " + LOGR + r" = \nabla_\theta\, "
                          + KL_REV)),
        ],
    )


@functools.lru_cache(maxsize=None)
def k3_in_loss() -> Derivation:
    """E_{y~π_θ}[∇k3(y)] = ∇KL(π_ref‖π_θ), the forward KL, although E[k3] = KL(π_θ‖π_ref)."""
    ratio = q[i] / P                                   # r = π_ref / π_θ
    k3 = ratio - 1 - sp.log(ratio)
    return Derivation(
        title="k3 as a loss: the gradient of the forward KL",
        intro=_FINITE + _ESTIMATORS + (r" This is the KL term of GRPO's loss "
                                       r"(Shao et al. 2024). Its value estimates the reverse "
                                       r"KL; its gradient as a loss misses the score-function "
                                       r"term and follows the forward KL."),
        name=f"{_MOD}.k3_in_loss",
        steps=[
            equal(_sum(P * _d(k3)), _sum((1 - ratio) * _d(P)),
                  "the sample is fixed: ∇r = −r ∇log π_θ and ∇log r = −∇log π_θ",
                  tex_lhs=E + r"\big[\nabla_\theta k_3(y)\big]",
                  tex_rhs=(r"\sum_y \Big(1 - \frac{" + REF + "}{" + PI + r"}\Big)\,"
                           r"\nabla_\theta" + PI)),
            then(_d(_sum(P)) - _sum(q[i] * _d(sp.log(P))),
                 "split the sum; π_ref/π_θ times ∇π_θ is π_ref ∇log π_θ",
                 tex_rhs=(r"\nabla_\theta\sum_y " + PI + r" - \sum_y " + REF + r"\, " + SCORE)),
            then(-_sum(q[i] * _d(sp.log(P))), "π_θ sums to one for every θ", subs=NORMALIZED,
                 tex_rhs=r"-\sum_y " + REF + r"\, " + SCORE),
            then(_d(_sum(q[i] * sp.log(q[i] / P))), "π_ref does not depend on θ",
                 tex_rhs=(r"\nabla_\theta \sum_y " + REF + r"\log\frac{" + REF + "}{" + PI
                          + r"} = \nabla_\theta\, " + KL_FWD)),
            equal(_sum(P * k3), _sum(q[i]) - _sum(P) + _sum(P * sp.log(P / q[i])),
                  "as a value k3 estimates the reverse KL: E[r] = Σ π_ref",
                  tex_lhs=E + r"\big[k_3(y)\big]",
                  tex_rhs=r"\sum_y " + REF + r" - \sum_y " + PI + r" + \sum_y " + PI + LOGR),
            then(_sum(P * sp.log(P / q[i])),
                 "both sum to one: the value is the reverse KL, its loss gradient the forward KL's",
                 subs={_sum(q[i]): 1, **NORMALIZED}, tex_rhs=KL_REV),
        ],
    )


@functools.lru_cache(maxsize=None)
def kl_in_reward() -> Derivation:
    """E[(r − β k1 − b) ∇log π_θ] = ∇(E[r] − β KL(π_θ‖π_ref)) for any baseline b free of y."""
    b = sp.Symbol("b", real=True)                   # a baseline that does not depend on y
    log_ratio = sp.log(P) - sp.log(q[i])            # k1(y)
    shaped = r[i] - beta * log_ratio - b
    return Derivation(
        title="The KL in the reward: the policy gradient of unit 4's objective",
        intro=_FINITE + (r" The per-token reward is $r(y) - \beta\, k_1(y)$, with "
                         r"$k_1 = \log\pi_\theta(y) - \log\pi_{\mathrm{ref}}(y)$ treated as a "
                         r"number (no gradient through it), and $b$ is any baseline that does "
                         r"not depend on $y$. With $r = 0$ the chain reads "
                         r"$\mathbb{E}[-\beta k_1\, \nabla\log\pi_\theta] = "
                         r"-\beta\,\nabla\mathrm{KL}(\pi_\theta \,\|\, \pi_{\mathrm{ref}})$."),
        name=f"{_MOD}.kl_in_reward",
        steps=[
            equal(_sum(P * shaped * _d(sp.log(P))), _sum(shaped * _d(P)),
                  "log-derivative trick: π ∇log π = ∇π",
                  tex_lhs=E + r"\big[(r(y) - \beta k_1(y) - b)\, " + SCORE + r"\big]",
                  tex_rhs=(r"\sum_y \Big(r(y) - \beta" + LOGR + r" - b\Big)\,\nabla_\theta"
                           + PI)),
            then(_sum(r[i] * _d(P)) - beta * _sum(_d(P) * log_ratio) - b * _d(_sum(P)),
                 "split the sum; b does not depend on y",
                 tex_rhs=(r"\sum_y r(y)\,\nabla_\theta" + PI + r" - \beta\sum_y \nabla_\theta"
                          + PI + r"\, " + LOGR + r" - b\,\nabla_\theta\sum_y " + PI)),
            then(_sum(r[i] * _d(P)) - beta * _sum(_d(P) * log_ratio),
                 "π_θ sums to one: the baseline's term is b ∇1 = 0", subs=NORMALIZED,
                 tex_rhs=(r"\sum_y r(y)\,\nabla_\theta" + PI + r" - \beta\sum_y \nabla_\theta"
                          + PI + r"\, " + LOGR)),
            then(_d(_sum(P * r[i])) - beta * (_d(_sum(P * sp.log(P / q[i]))) - _d(_sum(P))),
                 "r does not depend on θ; product rule backwards, as for k2",
                 tex_rhs=(r"\nabla_\theta\sum_y " + PI + r"\, r(y) - \beta\Big(\nabla_\theta"
                          r"\sum_y " + PI + r"\, " + LOGR + r" - \nabla_\theta\sum_y " + PI
                          + r"\Big)")),
            then(_d(_sum(P * r[i]) - beta * _sum(P * sp.log(P / q[i]))),
                 "π_θ sums to one: unit 4's objective, whose maximizer is π*",
                 subs=NORMALIZED,
                 tex_rhs=(r"\nabla_\theta\Big(" + E + r"[r(y)] - \beta\, " + KL_REV
                          + r"\Big)")),
        ],
    )


@functools.lru_cache(maxsize=None)
def forward_kl_optimum() -> Derivation:
    """Where k3 in the loss (with the reward's policy gradient) leads: the stationary point of
    E[r] − β KL(π_ref‖π), π(a) = β π_ref(a)/(β + E_π[r] − r(a)), which is not unit 4's π*."""
    z = sp.symbols("z_1:4", real=True)
    qs = sp.symbols("q_1:4", positive=True)
    rs = sp.symbols("r_1:4", real=True)
    den = sum(sp.exp(zj) for zj in z)
    pis = [sp.exp(zj) / den for zj in z]               # a softmax policy over three responses
    objective = (sum(a * b for a, b in zip(pis, rs))
                 - beta * sum(a * sp.log(a / b) for a, b in zip(qs, pis)))
    mean_r = sum(a * b for a, b in zip(pis, rs))
    # one coordinate of the stationarity condition, with π(a), π_ref(a), r(a) and E_π[r] free
    pa, qa = sp.symbols("p_a q_a", positive=True)
    ra, rbar = sp.symbols("r_a rbar", real=True)
    component = pa * (ra - rbar) + beta * (qa - pa)
    fixed_point = beta * qa / (beta + rbar - ra)
    # the two-response example: π_ref = (1/2, 1/2), r = (1, 0), β = 1
    x1, x2 = sp.symbols("x_1 x_2", positive=True)
    example = sp.Matrix([x1 * (1 - x1) + (sp.Rational(1, 2) - x1),
                         x2 * (0 - x1) + (sp.Rational(1, 2) - x2)])
    forward = (1 / sp.sqrt(2), 1 - 1 / sp.sqrt(2))
    star1 = sp.E / (1 + sp.E)                           # unit 4's π*(y_1) = e^1 / (e^1 + e^0)
    return Derivation(
        title="Where k3 in the loss leads: the optimum of the forward-KL objective",
        intro=(r"The reward's policy gradient plus $\beta$ times $k_3$ in the loss follows "
               r"$\nabla_\theta\big(\mathbb{E}_{\pi_\theta}[r] - \beta\,"
               r"\mathrm{KL}(\pi_{\mathrm{ref}} \,\|\, \pi_\theta)\big)$. Three responses with "
               r"$\pi_\theta = \mathrm{softmax}(z)$, $\pi_{\mathrm{ref}} = (q_1, q_2, q_3)$ "
               r"summing to one, rewards $r_a$, $\beta > 0$; then a two-response example."),
        name=f"{_MOD}.forward_kl_optimum",
        symbol_names={pa: r"\pi(a)", qa: r"\pi_{\mathrm{ref}}(a)", ra: "r(a)",
                      rbar: r"\bar r", x1: r"\pi_1", x2: r"\pi_2"},
        steps=[
            equal(sp.Derivative(objective, z[0]),
                  pis[0] * (rs[0] - mean_r) + beta * (qs[0] - pis[0]),
                  "softmax score e_a − π, and Σ_b π_ref(b) ∇log π(b) = π_ref − π (shown for "
                  "a = 1, the others alike)",
                  subs={qs[2]: 1 - qs[0] - qs[1]},
                  tex_lhs=(r"\frac{\partial}{\partial z_a}\Big(\mathbb{E}_{\pi_\theta}[r] - "
                           r"\beta\, " + KL_FWD + r"\Big)"),
                  tex_rhs=(r"\pi_\theta(a)\big(r(a) - \mathbb{E}_{\pi_\theta}[r]\big) + "
                           r"\beta\big(\pi_{\mathrm{ref}}(a) - \pi_\theta(a)\big)")),
            equal(sp.Subs(component, pa, fixed_point), 0,
                  "so the stationary point has π(a) = β π_ref(a) / (β + E_π[r] − r(a))",
                  tex_lhs=(r"\Big[\pi(a)\big(r(a) - \bar r\big) + \beta\big("
                           r"\pi_{\mathrm{ref}}(a) - \pi(a)\big)\Big]_{\pi(a) = \frac{\beta\, "
                           r"\pi_{\mathrm{ref}}(a)}{\beta + \bar r - r(a)}}"),
                  tex_rhs="0"),
            equal(example.applyfunc(lambda e: sp.Subs(e, (x1, x2), forward)), sp.zeros(2, 1),
                  "two responses, π_ref uniform, r = (1, 0), β = 1: π = (1/√2, 1 − 1/√2) is "
                  "that point",
                  tex_lhs=(r"\Big[\pi_a\big(r_a - \textstyle\sum_b \pi_b r_b\big) + "
                           r"\tfrac12 - \pi_a\Big]_{\pi = (1/\sqrt{2},\ 1 - 1/\sqrt{2})}"),
                  tex_rhs="0"),
            holds(sp.StrictLessThan(forward[0], star1, evaluate=False),
                  "unit 4's π* gives the better response more: the forward KL covers the reference",
                  tex=(r"\pi_1 = \tfrac{1}{\sqrt{2}} \approx 0.707 &< \pi^*_1 = "
                       r"\tfrac{e}{1 + e} \approx 0.731")),
        ],
    )


@functools.lru_cache(maxsize=None)
def group_baseline() -> Derivation:
    """REINFORCE with a baseline computed from the other samples of the group stays unbiased;
    a baseline that depends on the sample it scores adds a bias term."""
    M = sp.Symbol("M", integer=True, positive=True)
    c = sp.Symbol("c", integer=True, positive=True)
    Q = sp.IndexedBase("Q", positive=True)      # probability of the others' joint outcome c
    b = sp.IndexedBase("b", real=True)           # baseline computed from the others' outcome c
    own = sp.IndexedBase("beta_own", real=True)  # a baseline b(y_1) that uses the scored sample
    bbar = sp.Symbol("bbar", real=True)          # E[b] over the other samples
    others = lambda e: sp.Sum(e, (c, 1, M))      # noqa: E731
    return Derivation(
        title="A group baseline keeps REINFORCE unbiased, if it ignores the sample it scores",
        intro=(_FINITE + r" The rewards $r(y)$ do not depend on $\theta$. A group holds $G$ "
               r"samples of one prompt, drawn independently from $\pi_\theta$. Score $y_1$ "
               r"(each sample in turn, by symmetry): the others' joint outcomes "
               r"$c = 1, \dots, M$ have probabilities $Q_c$ (summing to one) and give the "
               r"baseline $b_c = b(y_2, \dots, y_G)$, for example their mean reward (RLOO)."),
        name=f"{_MOD}.group_baseline",
        symbol_names={bbar: r"\bar b"},
        steps=[
            equal(_sum(P * _d(sp.log(P)) * others(Q[c] * (r[i] - b[c]))),
                  _sum(_d(P) * (r[i] * others(Q[c]) - others(Q[c] * b[c]))),
                  "independent samples: average over the others inside; log-derivative trick",
                  tex_lhs=(r"\mathbb{E}\big[(r(y_1) - b(y_2, \dots, y_G))\,\nabla_\theta\log"
                           r"\pi_\theta(y_1)\big]"),
                  tex_rhs=(r"\sum_{y_1}\nabla_\theta\pi_\theta(y_1)\Big(r(y_1)\sum_c Q_c - "
                           r"\sum_c Q_c\, b_c\Big)")),
            then(_sum(r[i] * _d(P)) - bbar * _d(_sum(P)),
                 "the others' probabilities sum to one; their average baseline is a number",
                 subs={others(Q[c]): 1, others(Q[c] * b[c]): bbar},
                 tex_rhs=(r"\sum_{y}r(y)\,\nabla_\theta" + PI + r" - \bar b\,\nabla_\theta"
                          r"\sum_y " + PI)),
            then(_sum(r[i] * _d(P)), "π_θ sums to one: the baseline's term vanishes",
                 subs=NORMALIZED, tex_rhs=r"\sum_{y}r(y)\,\nabla_\theta" + PI),
            then(_d(_sum(P * r[i])), "the reward does not depend on θ: the true gradient",
                 tex_rhs=r"\nabla_\theta\, " + E + r"[r(y)]"),
            equal(_sum(P * _d(sp.log(P)) * (r[i] - own[i])),
                  _d(_sum(P * r[i])) - _sum(own[i] * _d(P)),
                  "a baseline b(y_1) that uses the scored sample leaves a term Σ b(y) ∇π(y), "
                  "not 0 in general",
                  tex_lhs=(r"\mathbb{E}\big[(r(y_1) - b(y_1))\,\nabla_\theta\log"
                           r"\pi_\theta(y_1)\big]"),
                  tex_rhs=(r"\nabla_\theta\, " + E + r"[r(y)] - \sum_y b(y)\,\nabla_\theta"
                           + PI)),
        ],
    )


# -- group advantages -----------------------------------------------------------------------------

G = sp.Symbol("G", integer=True, positive=True)      # group size (at least 2)
j = sp.Symbol("j", integer=True, positive=True)
rbar = sp.Symbol("rbar", real=True)                  # the group's mean reward
_ALL = sp.Sum(r[j], (j, 1, G))                       # Σ_j r_j
_MEAN = {rbar: _ALL / G}
_GROUP_NAMES = {rbar: r"\bar r"}


@functools.lru_cache(maxsize=None)
def leave_one_out() -> Derivation:
    """A_i = r_i − mean_{j≠i} r_j = G/(G − 1)(r_i − r̄); the group-mean baseline gives
    (G − 1)/G of it."""
    others = sp.Symbol("S_others", real=True)        # Σ_{j≠i} r_j
    defs = {others: _ALL - r[i], **_MEAN}
    loo = r[i] - others / (G - 1)
    r1, r2, r3 = sp.symbols("r_1:4", real=True)
    mean3 = (r1 + r2 + r3) / 3
    loo3 = sp.Matrix([r1 - (r2 + r3) / 2, r2 - (r1 + r3) / 2, r3 - (r1 + r2) / 2])
    A = G / (G - 1) * (r[j] - rbar)
    return Derivation(
        title="The leave-one-out advantage is G/(G − 1) times the deviation from the mean",
        intro=(r"A group of $G \geq 2$ rewards $r_1, \dots, r_G$ of one prompt, their mean "
               r"$\bar r$; RLOO (Ahmadian et al. 2024) scores sample $i$ against the mean of "
               r"the other $G - 1$, which does not depend on sample $i$."),
        name=f"{_MOD}.leave_one_out",
        symbol_names=_GROUP_NAMES,
        steps=[
            equal(loo, r[i] - (G * rbar - r[i]) / (G - 1),
                  "the others sum to all minus r_i, and all G rewards sum to G times their mean", subs=defs,
                  tex_lhs=r"A_i = r_i - \frac{1}{G-1}\sum_{j \neq i} r_j",
                  tex_rhs=r"r_i - \frac{G\bar r - r_i}{G-1}"),
            then((G * r[i] - G * rbar) / (G - 1), "common denominator",
                 tex_rhs=r"\frac{G r_i - G\bar r}{G-1}"),
            then(G / (G - 1) * (r[i] - rbar), "factor out G",
                 tex_rhs=r"\frac{G}{G-1}\,(r_i - \bar r)"),
            equal(loo3, sp.Matrix([sp.Subs(G / (G - 1) * (x - rbar), (G, rbar), (3, mean3))
                                   for x in (r1, r2, r3)]),
                  "check with G = 3 rewards written out",
                  tex_lhs=(r"\Big(r_1 - \tfrac{r_2 + r_3}{2},\ r_2 - \tfrac{r_1 + r_3}{2},\ "
                           r"r_3 - \tfrac{r_1 + r_2}{2}\Big)"),
                  tex_rhs=r"\tfrac32\,\big(r_1 - \bar r,\ r_2 - \bar r,\ r_3 - \bar r\big)"),
            equal(r[i] - rbar, (G - 1) / G * loo,
                  "the group mean includes r_i: a scaled A_i, so (G − 1)/G of the true gradient",
                  subs=defs,
                  tex_lhs=r"r_i - \bar r",
                  tex_rhs=r"\frac{G-1}{G}\, A_i"),
            equal(sp.Sum(A, (j, 1, G)), G / (G - 1) * sp.Sum(r[j] - rbar, (j, 1, G)),
                  "a constant factor leaves the sum",
                  tex_lhs=r"\sum_{j=1}^{G} A_j",
                  tex_rhs=r"\frac{G}{G-1}\sum_{j=1}^{G} (r_j - \bar r)"),
            then(G / (G - 1) * (_ALL - G * rbar), "the mean reward does not depend on j",
                 tex_rhs=r"\frac{G}{G-1}\Big(\sum_{j=1}^{G} r_j - G\bar r\Big)"),
            then(0, "the advantages of a group sum to zero", subs=_MEAN, tex_rhs="0"),
        ],
    )


@functools.lru_cache(maxsize=None)
def grpo_advantage() -> Derivation:
    """A_j = (r_j − r̄)/σ: mean 0, mean square 1 (population σ) or (G − 1)/G (Bessel), and the
    same for rewards shifted or scaled by a > 0."""
    sigma = sp.Symbol("sigma", positive=True)        # population standard deviation of the group
    s_b = sp.Symbol("s", positive=True)              # Bessel-corrected standard deviation
    dev2 = sp.Sum((r[j] - rbar) ** 2, (j, 1, G))
    A = (r[j] - rbar) / sigma
    a = sp.Symbol("a", positive=True)
    c = sp.Symbol("c", real=True)
    r1, r2, r3 = sp.symbols("r_1:4", real=True)
    rs = [r1, r2, r3]
    m = sum(rs) / 3

    def normalized(values):
        mean = sum(values) / 3
        std = sp.sqrt(sum((v - mean) ** 2 for v in values) / 3)
        return sp.Matrix([(v - mean) / std for v in values])

    return Derivation(
        title="GRPO's group-normalized advantage",
        intro=(r"A group of $G \geq 2$ rewards of one prompt with mean $\bar r$ and standard "
               r"deviation $\sigma = \sqrt{\tfrac1G\sum_j (r_j - \bar r)^2}$ (Shao et al. "
               r"2024); the Bessel-corrected $s = \sqrt{\tfrac{1}{G-1}\sum_j (r_j - \bar r)^2}$ "
               r"is what `torch.std` computes. A group whose rewards all tie has $\sigma = 0$: "
               r"its advantages are set to 0 and it teaches nothing."),
        name=f"{_MOD}.grpo_advantage",
        symbol_names=_GROUP_NAMES,
        steps=[
            equal(sp.Sum(A, (j, 1, G)), (_ALL - G * rbar) / sigma,
                  "the mean and σ do not depend on j",
                  tex_lhs=r"\sum_{j=1}^{G} \frac{r_j - \bar r}{\sigma}",
                  tex_rhs=r"\frac{1}{\sigma}\Big(\sum_{j=1}^{G} r_j - G\bar r\Big)"),
            then(0, "the mean is the group's: the advantages sum to zero", subs=_MEAN,
                 tex_rhs="0"),
            equal(sp.Sum(A ** 2, (j, 1, G)) / G, 1,
                  "σ is the group's standard deviation: unit mean square",
                  subs={sigma: sp.sqrt(dev2 / G)},
                  tex_lhs=r"\frac1G\sum_{j=1}^{G} \Big(\frac{r_j - \bar r}{\sigma}\Big)^2"),
            equal(sp.Sum(((r[j] - rbar) / s_b) ** 2, (j, 1, G)) / G, (G - 1) / G,
                  "with the Bessel-corrected s instead, the mean square is (G − 1)/G",
                  subs={s_b: sp.sqrt(dev2 / (G - 1))},
                  tex_lhs=r"\frac1G\sum_{j=1}^{G} \Big(\frac{r_j - \bar r}{s}\Big)^2",
                  tex_rhs=r"\frac{G-1}{G}"),
            equal(normalized([a * v + c for v in rs]),
                  (sp.Matrix(rs) - sp.ones(3, 1) * m)
                  / sp.sqrt(sum((v - m) ** 2 for v in rs) / 3),
                  "G = 3: rewards a r + c with a > 0 give the same advantages, so the reward's "
                  "scale does not matter",
                  tex_lhs=r"A_j\big(a r_1 + c, \dots, a r_3 + c\big)",
                  tex_rhs=r"A_j\big(r_1, \dots, r_3\big) = \frac{r_j - \bar r}{\sigma}"),
        ],
    )


@functools.lru_cache(maxsize=None)
def bernoulli_std_weight() -> Derivation:
    """Dividing by the group std weights a prompt with Bernoulli(p) rewards by 1/√(p(1 − p))."""
    p = sp.Symbol("p", positive=True)
    z = sp.Symbol("z", real=True)
    pz = 1 / (1 + sp.exp(-z))                        # a two-outcome softmax: P(success) = σ(z)
    sd_z = sp.sqrt(pz * (1 - pz))
    score_success = sp.Derivative(sp.log(pz), z)
    score_failure = sp.Derivative(sp.log(1 - pz), z)
    grpo_grad = (pz * ((1 - pz) / sd_z) * score_success
                 + (1 - pz) * ((0 - pz) / sd_z) * score_failure)
    weight = 1 / sp.sqrt(p * (1 - p))
    k = sp.Symbol("k", integer=True, positive=True)   # successes in the group
    phat = k / G
    bessel_var = (k * (1 - phat) ** 2 + (G - k) * (0 - phat) ** 2) / (G - 1)
    return Derivation(
        title="GRPO's weight on a prompt with success rate p",
        intro=(r"Rewards 1 (success, probability $p$) or 0. For a large group $\bar r \to p$ "
               r"and $\sigma \to \sqrt{p(1-p)}$; the advantage is $(r - p)/\sigma$. The "
               r"gradient is worked out for a policy with logit $z$ and $p = 1/(1 + e^{-z})$, "
               r"so $\nabla_z\log p = 1 - p$ and $\nabla_z\log(1 - p) = -p$ (unit 3's "
               r"softmax score). Prompts that are nearly always failed or nearly always "
               r"solved weigh the most; Dr. GRPO (Liu et al. 2025) drops the division for "
               r"this reason. In a group of $G$ with $k$ successes, $\hat p = k/G$."),
        name=f"{_MOD}.bernoulli_std_weight",
        steps=[
            equal(p * (1 - p) ** 2 + (1 - p) * p ** 2, p * (1 - p),
                  "E[r] = p; r − p is 1 − p with probability p and −p otherwise",
                  tex_lhs=r"\sigma^2 = p\,(1-p)^2 + (1-p)\,p^2", tex_rhs=r"p\,(1-p)"),
            equal(grpo_grad, sd_z,
                  "expected gradient with GRPO's advantage (r − p)/σ",
                  tex_lhs=(r"\mathbb{E}\Big[\frac{r - p}{\sigma}\,\nabla_z\log\pi(r)\Big] = "
                           r"p\,\frac{1-p}{\sigma}(1-p) + (1-p)\,\frac{-p}{\sigma}(-p)"),
                  tex_rhs=r"\sqrt{p(1-p)}"),
            equal(pz * (1 - pz) * score_success + (1 - pz) * (0 - pz) * score_failure,
                  pz * (1 - pz),
                  "without the division (Dr. GRPO, RLOO): p(1 − p), so GRPO multiplies this "
                  "prompt's gradient by 1/σ",
                  tex_lhs=r"\mathbb{E}\big[(r - p)\,\nabla_z\log\pi(r)\big]",
                  tex_rhs=r"p\,(1-p)"),
            holds(sp.LessThan(p * (1 - p), sp.Rational(1, 4), evaluate=False),
                  "p(1 − p) is at most ¼, so the weight 1/√(p(1 − p)) is at least 2",
                  tex=r"p\,(1-p) &\leq \tfrac14"),
            equal(sp.Subs(sp.Derivative(weight, p), p, sp.Rational(1, 2)), 0,
                  "the least weight, 2, goes to p = ½: prompts solved half the time",
                  tex_lhs=r"\frac{d}{dp}\frac{1}{\sqrt{p(1-p)}}\Big|_{p=1/2}"),
            equal(sp.Limit(sp.sqrt(p) * weight, p, 0, "+"), 1,
                  "the weight grows like 1/√p as p → 0, and like 1/√(1 − p) as p → 1",
                  tex_lhs=r"\lim_{p\to 0^+}\sqrt{p}\cdot\frac{1}{\sqrt{p(1-p)}}"),
            equal(bessel_var, G / (G - 1) * phat * (1 - phat),
                  "k successes in a group of G, Bessel-corrected: the weight shrinks by √((G − 1)/G)",
                  tex_lhs=(r"s^2 = \frac{k(1-\hat p)^2 + (G-k)\,\hat p^2}{G-1}"),
                  tex_rhs=r"\frac{G}{G-1}\,\hat p\,(1-\hat p)"),
        ],
    )


# -- loss aggregation -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def loss_aggregation() -> Derivation:
    """The weight of one token of response i: 1/(B L_i) ("grpo"), 1/Σ_j L_j ("dapo"/"bnpo"),
    1/(B L_max) ("dr_grpo")."""
    B = sp.Symbol("B", integer=True, positive=True)           # responses in the batch
    # one token's loss term in each of responses 1 and 2, and the sum of their other terms
    x1, x2, R1, R2 = sp.symbols("ell_1t ell_2t R_1 R_2", real=True)
    means_o = sp.Symbol("O", real=True)       # Σ over the other responses of their token means
    T_o = sp.Symbol("T_o", real=True)         # sum of the other responses' token terms
    N_o = sp.Symbol("N_o", positive=True)     # number of tokens of the other responses
    L1, L2, L_max = sp.symbols("L_1 L_2 L_max", positive=True)
    T1, T2 = x1 + R1, x2 + R2                 # Σ_t ℓ_{1,t}, Σ_t ℓ_{2,t}
    losses = {
        "grpo": (T1 / L1 + T2 / L2 + means_o) / B,
        "dapo": (T1 + T2 + T_o) / (L1 + L2 + N_o),
        "dr_grpo": (T1 + T2 + T_o) / (B * L_max),
    }

    def weights(loss):
        return sp.Matrix([sp.Derivative(loss, x1), sp.Derivative(loss, x2)])

    def lhs(kind):
        return (r"\Big(\frac{\partial\mathcal{L}_{\mathrm{" + kind.replace("_", r"\text{-}")
                + r"}}}{\partial \ell_{1,t}},\ \frac{\partial\mathcal{L}_{\mathrm{"
                + kind.replace("_", r"\text{-}") + r"}}}{\partial \ell_{2,t}}\Big)")

    return Derivation(
        title="Loss aggregation: the weight each choice gives one token",
        intro=(r"A batch of $B$ responses; response $i$ has $L_i$ tokens with per-token loss "
               r"terms $\ell_{i,t}$ (for example $-A_i\,\rho_{i,t}$). In responses 1 and 2 one "
               r"token's term $\ell_{i,t}$ is written out and the other $L_i - 1$ summed in "
               r"$R_i$; the other responses are summarized. "
               r"$\mathcal{L}_{\mathrm{grpo}} = \frac1B\sum_i \frac{1}{L_i}\sum_t \ell_{i,t}$, "
               r"$\mathcal{L}_{\mathrm{dapo}} = \sum_{i,t}\ell_{i,t} / \sum_i L_i$ (also "
               r"`bnpo`), $\mathcal{L}_{\mathrm{dr\text{-}grpo}} = \sum_{i,t}\ell_{i,t} / "
               r"(B\,L_{\max})$ with a constant $L_{\max}$ (Liu et al. 2025; Yu et al. 2025)."),
        name=f"{_MOD}.loss_aggregation",
        steps=[
            equal(weights(losses["grpo"]), sp.Matrix([1 / (B * L1), 1 / (B * L2)]),
                  "grpo: mean over each response's tokens, then over the responses",
                  tex_lhs=lhs("grpo"),
                  tex_rhs=r"\Big(\frac{1}{B\,L_1},\ \frac{1}{B\,L_2}\Big)"),
            equal(weights(losses["dapo"]), sp.Matrix([1 / (L1 + L2 + N_o)] * 2),
                  "dapo: one mean over every token of the batch",
                  tex_lhs=lhs("dapo"),
                  tex_rhs=r"\Big(\frac{1}{\sum_j L_j},\ \frac{1}{\sum_j L_j}\Big)"),
            equal(weights(losses["dr_grpo"]), sp.Matrix([1 / (B * L_max)] * 2),
                  "Dr. GRPO: a constant normalizer",
                  tex_lhs=lhs("dr_grpo"),
                  tex_rhs=r"\Big(\frac{1}{B\,L_{\max}},\ \frac{1}{B\,L_{\max}}\Big)"),
            equal(sp.Matrix([L1 * sp.Derivative(loss, x1) for loss in losses.values()]),
                  sp.Matrix([1 / B, L1 / (L1 + L2 + N_o), L1 / (B * L_max)]),
                  "a whole response: 1/B in grpo whatever its length, else in proportion to it",
                  tex_lhs=r"L_1\,\frac{\partial\mathcal{L}}{\partial \ell_{1,t}}",
                  tex_rhs=(r"\Big(\frac1B,\ \frac{L_1}{\sum_j L_j},\ "
                           r"\frac{L_1}{B\,L_{\max}}\Big)")),
        ],
    )


@functools.lru_cache(maxsize=None)
def length_bias() -> Derivation:
    """Under "grpo" a positive advantage favours short responses and a negative one penalizes
    long responses less (Dr. GRPO's length bias); "dapo" and "dr_grpo" weigh all tokens alike."""
    B, L, d = sp.symbols("B L d", positive=True)
    A = sp.Symbol("A", real=True)
    A_pos = sp.Symbol("A", positive=True)
    C = sp.Symbol("C", positive=True)                # a negative advantage is A = −C
    gap = lambda adv: adv / (B * L) - adv / (B * (L + d))   # noqa: E731
    return Derivation(
        title="The length bias of the per-sequence mean",
        intro=(r"Under `grpo` the gradient of a token of response $i$ carries "
               r"$A_i/(B\,L_i)$ (with one optimizer step per batch the ratio is 1). Two "
               r"responses with the same advantage $A$ have lengths $L$ and $L + d$, $d > 0$. "
               r"Under `dapo` every token of the batch carries the same $1/\sum_j L_j$, and "
               r"under `dr_grpo` the same $1/(B\,L_{\max})$: no length bias."),
        name=f"{_MOD}.length_bias",
        symbol_names={A_pos: "A"},
        steps=[
            equal(gap(A), A * d / (B * L * (L + d)),
                  "the difference of the two per-token weights",
                  tex_lhs=r"\frac{A}{B\,L} - \frac{A}{B\,(L+d)}",
                  tex_rhs=r"\frac{A\,d}{B\,L\,(L+d)}"),
            holds(sp.StrictGreaterThan(gap(A_pos), 0, evaluate=False),
                  "A > 0: every token of the shorter response is pushed up more, so correct "
                  "responses drift shorter",
                  tex=r"\frac{A}{B\,L} - \frac{A}{B\,(L+d)} &> 0 \quad (A > 0)"),
            holds(sp.StrictLessThan(C / (B * (L + d)), C / (B * L), evaluate=False),
                  "A < 0: every token of the longer response is pushed down less, so wrong "
                  "responses drift longer",
                  tex=r"\frac{|A|}{B\,(L+d)} &< \frac{|A|}{B\,L} \quad (A < 0)"),
            equal(sp.Derivative(A / (B * L), L), -A / (B * L ** 2),
                  "the same as a rate: the grpo weight of a token falls with its response's "
                  "length",
                  tex_lhs=r"\frac{\partial}{\partial L}\frac{A}{B\,L}",
                  tex_rhs=r"-\frac{A}{B\,L^2}"),
            equal(sp.Derivative(A / (B * sp.Symbol("L_max", positive=True)), L), 0,
                  "Dr. GRPO: a constant normalizer, no dependence on the response's length",
                  tex_lhs=r"\frac{\partial}{\partial L}\frac{A}{B\,L_{\max}}"),
        ],
    )


# -- clipping with one step per batch, and clip-higher --------------------------------------------

eps_low, eps_high, v, w, s = sp.symbols("epsilon_low epsilon_high v w s", positive=True)
_EPS_NAMES = {eps_low: r"\epsilon_{\mathrm{low}}", eps_high: r"\epsilon_{\mathrm{high}}"}


def _clipped(rho, adv, low=eps_low, high=eps_high):
    """min(ρA, clip(ρ, 1 − ε_low, 1 + ε_high)A), left for verify() to decide."""
    return sp.Min(rho * adv, sp.Min(sp.Max(rho, 1 - low, evaluate=False), 1 + high,
                                    evaluate=False) * adv, evaluate=False)


@functools.lru_cache(maxsize=None)
def one_step_ratio() -> Derivation:
    """With one optimizer step per batch (μ = 1) the ratio is 1 where the gradient is taken and
    the clipped surrogate's gradient is the unclipped one: clipping never acts."""
    theta_old = sp.Symbol("theta_old", real=True)
    ell = sp.Function("ell", real=True)               # ell(θ) = log π_θ(y) of a sampled token
    rho = sp.exp(ell(theta) - ell(theta_old))
    A = sp.Symbol("A", real=True)
    A_pos = sp.Symbol("A", positive=True)
    Bn = sp.Symbol("B", positive=True)                # a negative advantage is A = −B
    band = sp.Matrix([_clipped(1 + v, A_pos, high=v + w), _clipped(1 - v, A_pos, low=v + w),
                      _clipped(1 + v, -Bn, high=v + w), _clipped(1 - v, -Bn, low=v + w)])
    unclipped = sp.Matrix([(1 + v) * A_pos, (1 - v) * A_pos, -(1 + v) * Bn, -(1 - v) * Bn])
    above = _clipped(1 + eps_high + s, A_pos)
    return Derivation(
        title="One optimizer step per batch: the ratio is 1 and the clip never acts",
        intro=(r"The surrogate $\min\big(\rho A,\ \mathrm{clip}(\rho, 1-\epsilon_{\mathrm{low}}, "
               r"1+\epsilon_{\mathrm{high}})A\big)$ with $\rho(\theta) = \pi_\theta(y) / "
               r"\pi_{\theta_{\mathrm{old}}}(y) = e^{\log\pi_\theta(y) - \log"
               r"\pi_{\theta_{\mathrm{old}}}(y)}$. With $\mu = 1$ (TRL's `num_iterations`) the "
               r"batch is sampled at $\theta_{\mathrm{old}}$ and the one gradient step is taken "
               r"there."),
        name=f"{_MOD}.one_step_ratio",
        symbol_names={**_EPS_NAMES, theta_old: r"\theta_{\mathrm{old}}", A_pos: "A"},
        steps=[
            equal(sp.Subs(rho, theta, theta_old), 1,
                  "at θ = θ_old the ratio is exactly 1",
                  tex_lhs=r"\rho(\theta_{\mathrm{old}})"),
            equal(band, unclipped,
                  "near ρ = 1, inside (1 − ε_low, 1 + ε_high), neither clip is active, for either "
                  "sign of A",
                  tex_lhs=(r"\min\big(\rho A,\ \mathrm{clip}(\rho)A\big)\big|_{1-\epsilon_"
                           r"{\mathrm{low}} < \rho < 1+\epsilon_{\mathrm{high}}}"),
                  tex_rhs=r"\rho A"),
            equal(sp.Subs(sp.Derivative(A * rho, theta), theta, theta_old),
                  A * sp.Subs(sp.Derivative(ell(theta), theta), theta, theta_old),
                  "so the gradient at θ_old is A ∇log π_θ(y): REINFORCE with this advantage, "
                  "and the clip fraction is 0",
                  tex_lhs=r"\nabla_\theta \big(\rho(\theta) A\big)\big|_{\theta_{\mathrm{old}}}",
                  tex_rhs=r"A\,\nabla_\theta\log\pi_\theta(y)\big|_{\theta_{\mathrm{old}}}"),
            equal(above, (1 + eps_high) * A_pos,
                  "μ > 1: from the second step on ρ can leave the band, here above it with A > 0",
                  tex_lhs=(r"\min\big(\rho A,\ \mathrm{clip}(\rho)A\big)\big|_{A > 0,\ \rho > "
                           r"1+\epsilon_{\mathrm{high}}}"),
                  tex_rhs=r"(1+\epsilon_{\mathrm{high}})\,A"),
            equal(sp.Derivative(above, s), 0,
                  "a constant: that token gets no gradient, which only later passes over the "
                  "batch can cause",
                  tex_lhs=(r"\frac{\partial}{\partial\rho}\min\big(\rho A,\ \mathrm{clip}(\rho)"
                           r"A\big)\big|_{A > 0,\ \rho > 1+\epsilon_{\mathrm{high}}}")),
        ],
    )


@functools.lru_cache(maxsize=None)
def clip_higher() -> Derivation:
    """One update raises a token of probability p to at most (1 + ε_high)p: low-probability
    tokens rise slowly (DAPO's clip-higher argument)."""
    p, u, target, n = sp.symbols("p u P n", positive=True)
    cap = (1 + eps_high) * p
    steps_needed = sp.log(target / p) / sp.log(1 + eps_high)
    ratio_of_steps = sp.log(sp.Rational(6, 5)) / sp.log(sp.Rational(32, 25))
    return Derivation(
        title="Clip-higher: how fast an unlikely token can rise",
        intro=(r"A token with probability $p = \pi_{\theta_{\mathrm{old}}}(y)$ and advantage "
               r"$A > 0$. Past $\rho = 1 + \epsilon_{\mathrm{high}}$ the surrogate is constant "
               r"(previous derivation), so an update stops pushing once "
               r"$\pi_\theta(y) = (1 + \epsilon_{\mathrm{high}})\,p$ (Yu et al. 2025). "
               r"Symmetrically $A < 0$ stops at $(1 - \epsilon_{\mathrm{low}})\,p$; DAPO keeps "
               r"$\epsilon_{\mathrm{low}} = 0.2$ and raises $\epsilon_{\mathrm{high}}$ to 0.28. "
               r"The cap binds only unlikely tokens: likely ones can take the probability "
               r"mass in a few updates while rare, exploratory ones rise by a factor of at "
               r"most $1 + \epsilon_{\mathrm{high}}$ per update, so the entropy falls; a "
               r"larger $\epsilon_{\mathrm{high}}$ lets them rise faster."),
        name=f"{_MOD}.clip_higher",
        symbol_names={**_EPS_NAMES, target: "P"},
        steps=[
            equal(cap - p, eps_high * p,
                  "the most one update adds to a token's probability is proportional to p",
                  tex_lhs=(r"\max\pi_\theta(y) - p = (1+\epsilon_{\mathrm{high}})\,p - p"),
                  tex_rhs=r"\epsilon_{\mathrm{high}}\, p"),
            equal(sp.Matrix([sp.Subs(cap, (eps_high, p), (sp.Rational(1, 5), sp.Rational(1, 100))),
                             sp.Subs(cap, (eps_high, p), (sp.Rational(1, 5), sp.Rational(9, 10)))]),
                  sp.Matrix([sp.Rational(12, 1000), sp.Rational(108, 100)]),
                  "DAPO's example, ε_high = 0.2: 0.01 can reach 0.012, while 0.9 is not limited",
                  tex_lhs=r"(1 + 0.2)\,(0.01,\ 0.9)", tex_rhs=r"(0.012,\ 1.08)"),
            holds(sp.StrictGreaterThan((1 + eps_high) * (1 / (1 + eps_high) + u), 1,
                                       evaluate=False),
                  "likely tokens can reach probability 1 in one update: the cap binds only unlikely ones",
                  tex=(r"(1+\epsilon_{\mathrm{high}})\,p &> 1 \quad \text{for}\ p > "
                       r"\tfrac{1}{1+\epsilon_{\mathrm{high}}}")),
            equal(sp.Subs((1 + eps_high) ** n * p, n, steps_needed), target,
                  "compounding the cap: rising from p to P takes at least "
                  "log(P/p)/log(1 + ε_high) updates",
                  tex_lhs=(r"(1+\epsilon_{\mathrm{high}})^n\, p\ \big|_{n = \log(P/p)/\log"
                           r"(1+\epsilon_{\mathrm{high}})}"),
                  tex_rhs="P"),
            holds(sp.StrictLessThan(ratio_of_steps, sp.Rational(3, 4), evaluate=False),
                  "ε_high = 0.28 instead of 0.2: under three quarters of the updates",
                  tex=(r"\frac{\log 1.2}{\log 1.28} \approx 0.739 &< \tfrac34")),
        ],
    )


def derivation() -> Derivation:
    """The unit's main chain: the gradient of an expectation has a score-function part and a
    pathwise part, which is what separates a KL term in the loss from one in the reward."""
    return gradient_of_expectation()


def derivations() -> list[Derivation]:
    """All derivations of unit 6, main first."""
    return [gradient_of_expectation(), k1_in_loss(), k2_in_loss(), k3_in_loss(), kl_in_reward(),
            forward_kl_optimum(), group_baseline(), leave_one_out(), grpo_advantage(),
            bernoulli_std_weight(), loss_aggregation(), length_bias(), one_step_ratio(),
            clip_higher()]
