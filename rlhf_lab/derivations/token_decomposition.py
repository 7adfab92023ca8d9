"""Unit 2: the sequence penalty decomposes exactly into per-token penalties.

An autoregressive model factorizes π(y|x) = Π_t π(y_t|x, y_<t), so log π(y|x) is a sum over
tokens, and Penalty(x, y) = log π_θ(y|x) − log π_ref(y|x) = Σ_t (log π_θ − log π_ref) per token.
The length T is a symbol: the identity holds for every response length.
"""

from __future__ import annotations

import functools

import sympy as sp

from .core import Derivation, equal, holds, then

__all__ = [
    "derivation", "derivations",
    "log_of_product", "sequence_penalty_is_token_sum", "two_token_example",
]

_MOD = "token_decomposition"

T = sp.Symbol("T", integer=True, positive=True)   # response length
t = sp.Symbol("t", integer=True, positive=True)   # token position
# per-token conditionals π(y_t | x, y_<t) as positive functions of the position t
pi_theta = sp.Function("pi_theta", positive=True)
pi_ref = sp.Function("pi_ref", positive=True)

TOKEN_THETA = r"\pi_\theta(y_t \mid x, y_{<t})"
TOKEN_REF = r"\pi_{\mathrm{ref}}(y_t \mid x, y_{<t})"
SEQ_THETA = r"\pi_\theta(y \mid x)"
SEQ_REF = r"\pi_{\mathrm{ref}}(y \mid x)"


def _prod(expr):
    return sp.Product(expr, (t, 1, T))


def _sum(expr):
    return sp.Sum(expr, (t, 1, T))


# the probabilities of the whole response, π_θ(y|x) and π_ref(y|x); the chain rule of
# probability (one factor per token) is the substitution that the first step of each
# derivation applies
seq_theta = sp.Symbol("Pi_theta", positive=True)
seq_ref = sp.Symbol("Pi_ref", positive=True)
CHAIN_RULE = {seq_theta: sp.Product(pi_theta(t), (t, 1, T)),
              seq_ref: sp.Product(pi_ref(t), (t, 1, T))}


_INTRO = (r"A response $y = (y_1, \dots, y_T)$ to a prompt $x$, of any length $T$; each "
          r"per-token conditional is positive.")


@functools.lru_cache(maxsize=None)
def log_of_product() -> Derivation:
    """log π_θ(y|x) = Σ_t log π_θ(y_t|x, y_<t) for a symbolic length T."""
    return Derivation(
        title="The log-probability of a response is a sum over its tokens",
        intro=_INTRO,
        name=f"{_MOD}.log_of_product",
        steps=[
            equal(sp.log(seq_theta), sp.log(_prod(pi_theta(t))),
                  "chain rule of probability: one factor per token", subs=CHAIN_RULE,
                  tex_lhs=r"\log " + SEQ_THETA,
                  tex_rhs=r"\log \prod_{t=1}^{T} " + TOKEN_THETA),
            then(_sum(sp.log(pi_theta(t))), "the log of a product is the sum of the logs",
                 tex_rhs=r"\sum_{t=1}^{T} \log " + TOKEN_THETA),
        ],
    )


@functools.lru_cache(maxsize=None)
def sequence_penalty_is_token_sum() -> Derivation:
    """Penalty(x, y) = Σ_t (log π_θ(y_t|·) − log π_ref(y_t|·))."""
    penalty = sp.log(seq_theta) - sp.log(seq_ref)
    return Derivation(
        title="The sequence penalty is the sum of per-token penalties",
        intro=_INTRO,
        name=f"{_MOD}.sequence_penalty_is_token_sum",
        steps=[
            equal(penalty, sp.log(_prod(pi_theta(t))) - sp.log(_prod(pi_ref(t))),
                  "both models factorize over tokens", subs=CHAIN_RULE,
                  tex_lhs=r"\mathrm{Penalty}(x, y) = \log " + SEQ_THETA + r" - \log " + SEQ_REF,
                  tex_rhs=(r"\log\prod_{t=1}^{T}" + TOKEN_THETA + r" - \log\prod_{t=1}^{T}"
                           + TOKEN_REF)),
            then(_sum(sp.log(pi_theta(t))) - _sum(sp.log(pi_ref(t))),
                 "the log of a product is the sum of the logs",
                 tex_rhs=(r"\sum_{t=1}^{T}\log " + TOKEN_THETA + r" - \sum_{t=1}^{T}\log "
                          + TOKEN_REF)),
            then(_sum(sp.log(pi_theta(t)) - sp.log(pi_ref(t))),
                 "two sums over the same tokens combine",
                 tex_rhs=(r"\sum_{t=1}^{T}\big(\log " + TOKEN_THETA + r" - \log " + TOKEN_REF
                          + r"\big)")),
            then(_sum(sp.log(pi_theta(t) / pi_ref(t))), "log of a quotient",
                 tex_rhs=(r"\sum_{t=1}^{T}\log\frac{" + TOKEN_THETA + "}{" + TOKEN_REF + "}")),
        ],
    )


@functools.lru_cache(maxsize=None)
def two_token_example() -> Derivation:
    """The course card's 'Good day' example: per-token log-probabilities −0.8/−1.5 ('Good')
    and −0.4/−2.1 ('day') give Penalty = 2.4: the response is e^2.4 ≈ 11 times likelier under
    the current policy than under the reference."""
    good_theta, good_ref = sp.Rational(-8, 10), sp.Rational(-15, 10)
    day_theta, day_ref = sp.Rational(-4, 10), sp.Rational(-21, 10)
    def add(*terms):
        return sp.Add(*terms, evaluate=False)   # unevaluated: verify() does the arithmetic

    penalty = add(add(good_theta, -good_ref), add(day_theta, -day_ref))
    per_token = add(sp.Rational(7, 10), sp.Rational(17, 10))
    # π_θ(y|x)/π_ref(y|x) = e^{-0.8-0.4} / e^{-1.5-2.1}
    ratio = sp.Mul(sp.exp(good_theta + day_theta),
                   sp.Pow(sp.exp(good_ref + day_ref), -1, evaluate=False), evaluate=False)
    return Derivation(
        title="Worked example: the response 'Good day'",
        intro=(r"Per-token log-probabilities: 'Good' $-0.8$ under $\pi_\theta$ and $-1.5$ "
               r"under $\pi_{\mathrm{ref}}$; 'day' $-0.4$ and $-2.1$."),
        name=f"{_MOD}.two_token_example",
        steps=[
            equal(penalty, per_token,
                  "per-token penalties of 'Good' and 'day'",
                  tex_lhs=(r"\mathrm{Penalty}(x, \text{Good day}) = "
                           r"\big(-0.8 - (-1.5)\big) + \big(-0.4 - (-2.1)\big)"),
                  tex_rhs=r"0.7 + 1.7"),
            then(sp.Rational(24, 10), "add", tex_rhs="2.4"),
            equal(ratio, sp.exp(sp.Rational(24, 10)), "exponentiate the sequence log-ratio",
                  tex_lhs=(r"\frac{\pi_\theta(\text{Good day} \mid x)}"
                           r"{\pi_{\mathrm{ref}}(\text{Good day} \mid x)} = "
                           r"\frac{e^{-0.8-0.4}}{e^{-1.5-2.1}}"),
                  tex_rhs=r"e^{2.4}"),
            holds(sp.And(sp.StrictGreaterThan(ratio, 11, evaluate=False),
                         sp.StrictLessThan(ratio, sp.Rational(111, 10), evaluate=False)),
                  "about 11 times likelier under the current policy",
                  tex=r"11 < e^{2.4} &< 11.1"),
        ],
    )


def derivation() -> Derivation:
    """The unit's main chain: the sequence penalty is the sum of per-token penalties."""
    return sequence_penalty_is_token_sum()


def derivations() -> list[Derivation]:
    """All derivations of unit 2, main first."""
    return [sequence_penalty_is_token_sum(), log_of_product(), two_token_example()]
