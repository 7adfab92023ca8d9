"""Machinery for executable derivations: steps, verification and LaTeX rendering.

A :class:`Derivation` is a titled, ordered list of :class:`Step` objects. Each step is one of

- ``equal(lhs, rhs, reason)``: the sympy expressions ``lhs`` and ``rhs`` are equal;
- ``then(rhs, reason)``: the previous line's right-hand side equals ``rhs`` (a chain
  ``lhs = a = b = ...`` rendered as ``&= rhs`` lines);
- ``holds(condition, reason)``: the sympy condition (``x > 0``, ``Eq(a, b)``, ``And(...)``) holds.

Every step carries its reason in words ("log-derivative trick"). ``verify()`` checks the steps in
order with sympy and raises :class:`DerivationError` naming the derivation, the step number and
its reason at the first step that does not hold. Exact symbolic checks are the rule
(``simplify(lhs - rhs) == 0``, the sign of ``simplify(lhs - rhs)`` from the symbols' assumptions,
term by term for sums and products, ``solveset`` or the extrema of a function of one variable on
its interval). A step that sympy can only check numerically says so with ``check="numeric"``
and is checked at seeded random points drawn from the symbols' assumptions (negative and large
values for real symbols, integers for integer ones).

A step must not hold by construction: sympy evaluates eagerly (``p * diff(log(p), x)`` becomes
``diff(p, x)``, ``f.subs(x, 1)`` a number, ``Min`` of ordered arguments one of them, ``1/u**2 > 0``
``True``), which would make the check compare a line with itself. Build the side that carries
the step's work unevaluated (``Derivative``, ``Subs``, ``Min(..., evaluate=False)``,
``Gt(..., evaluate=False)``, ``UnevaluatedExpr``); ``verify()`` evaluates it (``doit``) before
checking. A definition is a named symbol (or an undefined function) that the step's ``subs``
replaces by what it stands for (``subs={KL: Σ p log(p/q)}``, ``subs={u: Lambda(j, q[j]/p[j])}``).

What is checked and what is shown can differ: the book's notation
(``\\mathbb{E}_{\\tau\\sim\\pi_\\theta}``) is given with ``tex_lhs`` / ``tex_rhs`` / ``tex``,
while the sympy objects hold the concrete model that is checked (for example a finite outcome
space with probabilities ``p_1..p_K``). The checks never read the LaTeX.

Use ``Derivation.replace_step(i, ...)`` or ``Derivation.broken(i)`` to build deliberately wrong
copies (tests use them to prove that ``verify()`` catches each step).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import sympy as sp
from sympy.core.function import AppliedUndef, UndefinedFunction
from sympy.core.relational import Relational
from sympy.simplify.simplify import sum_simplify
from sympy.tensor.indexed import Indexed

__all__ = [
    "DerivationError",
    "Step",
    "Derivation",
    "equal",
    "then",
    "holds",
]

_KINDS = ("equal", "then", "holds")


class DerivationError(AssertionError):
    """A step of a derivation does not hold (or could not be proven by sympy)."""

    def __init__(self, message: str, *, derivation: str = "", step: int = 0, reason: str = ""):
        super().__init__(message)
        self.derivation = derivation
        self.step = step  # 1-based, as displayed
        self.reason = reason


def _as_items(subs: Mapping | Iterable | None) -> tuple:
    if subs is None:
        return ()
    if isinstance(subs, Mapping):
        subs = subs.items()
    return tuple((sp.sympify(k), sp.sympify(v)) for k, v in subs)


@dataclasses.dataclass(frozen=True)
class Step:
    """One line of a derivation.

    Attributes:
        kind: ``"equal"``, ``"then"`` (lhs is the previous line's rhs) or ``"holds"``.
        reason: the justification in words, shown beside the line.
        lhs, rhs: sympy expressions (or matrices) that must be equal (``equal``/``then``).
        condition: a sympy relational or boolean that must hold (``holds``).
        subs: substitutions applied before checking: constraints (``p_K = 1 - p_1 - ...``,
            ``Σ_i p_i = 1``), definitions (``KL = Σ_i p_i log(p_i/q_i)``) and, for an undefined
            function, its definition as a ``Lambda`` (also inside sums over its argument).
        domain: ``((symbol, sympy.Interval), ...)`` used to prove a one-variable condition with
            ``solveset`` when the symbols' assumptions do not settle its sign.
        check: ``"exact"`` (symbolic) or ``"numeric"`` (spot checks at random points that
            respect the symbols' assumptions only; constraints must be substituted; rare).
        simplifier: optional callable applied to ``lhs - rhs`` before the default simplification.
        tex_lhs, tex_rhs, tex: LaTeX shown instead of the sympy printing (``tex`` replaces the
            whole mathematical part of a ``holds`` line; put ``&`` before its relation).
    """

    kind: str
    reason: str
    lhs: Any = None
    rhs: Any = None
    condition: Any = None
    subs: tuple = ()
    domain: tuple = ()
    check: str = "exact"
    simplifier: Callable | None = None
    tex_lhs: str | None = None
    tex_rhs: str | None = None
    tex: str | None = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if self.check not in ("exact", "numeric"):
            raise ValueError(f"check must be 'exact' or 'numeric', got {self.check!r}")
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ValueError("reason must be a non-empty string")
        bad = _FORBIDDEN_IN_REASON.intersection(self.reason)
        if bad:
            raise ValueError(f"reason must be plain words, without {sorted(bad)} "
                             "(it is rendered inside \\text{})")
        if self.kind == "holds" and self.tex is None and isinstance(
                self.condition, sp.logic.boolalg.BooleanAtom):
            raise ValueError("the condition was already evaluated by sympy to "
                             f"{self.condition}; build it with evaluate=False or give tex")
        if self.kind == "holds" and self.condition is None:
            raise ValueError("a 'holds' step needs a condition")
        if self.kind in ("equal", "then") and self.rhs is None:
            raise ValueError(f"an {self.kind!r} step needs rhs")
        if self.kind == "equal" and self.lhs is None:
            raise ValueError("an 'equal' step needs lhs")

    # -- convenience -------------------------------------------------------------------------
    def replace(self, **changes) -> "Step":
        """A copy of this step with some fields changed (``subs``/``domain`` may be dicts)."""
        if "subs" in changes:
            changes["subs"] = _as_items(changes["subs"])
        if "domain" in changes:
            changes["domain"] = _as_items(changes["domain"])
        for key in ("lhs", "rhs", "condition"):
            if key in changes:   # as equal()/then()/holds() do: matrices become immutable
                changes[key] = _freeze(changes[key])
        return dataclasses.replace(self, **changes)

    def broken(self) -> "Step":
        """A deliberately wrong copy: ``rhs + 1`` for an equality, the negation of a condition."""
        if self.kind == "holds":
            return self.replace(condition=sp.Not(self.condition))
        rhs = self.rhs
        if isinstance(rhs, sp.MatrixBase):
            bumped = rhs.as_mutable()
            bumped[0] = bumped[0] + 1
            return self.replace(rhs=sp.ImmutableMatrix(bumped))
        return self.replace(rhs=rhs + 1)


def equal(lhs, rhs, reason: str, **kw) -> Step:
    """A step stating ``lhs = rhs`` (rendered ``lhs &= rhs && (reason)``)."""
    return _make("equal", reason, lhs=lhs, rhs=rhs, **kw)


def then(rhs, reason: str, **kw) -> Step:
    """The next link of a chain: the previous line's right-hand side equals ``rhs``."""
    return _make("then", reason, rhs=rhs, **kw)


def holds(condition, reason: str, **kw) -> Step:
    """A step stating that a sympy condition holds (``x > 0``, ``Eq(a, b)``, ``And(...)``)."""
    return _make("holds", reason, condition=condition, **kw)


def _freeze(x):
    if isinstance(x, sp.MatrixBase):
        return sp.ImmutableMatrix(x)
    if x is None or isinstance(x, (sp.Basic, str)):
        return x
    return sp.sympify(x)


def _make(kind, reason, *, lhs=None, rhs=None, condition=None, subs=None, domain=None, **kw):
    return Step(kind=kind, reason=reason, lhs=_freeze(lhs), rhs=_freeze(rhs),
                condition=_freeze(condition), subs=_as_items(subs), domain=_as_items(domain),
                **kw)


# -- checking ---------------------------------------------------------------------------------

def _is_zero(expr) -> bool:
    if isinstance(expr, sp.MatrixBase):
        return all(_is_zero(e) for e in expr)
    return expr == 0 or expr.is_zero is True


def _simplified(expr):
    """Try exact rewritings, cheapest first, until one shows ``expr == 0``; return the last."""
    if isinstance(expr, sp.MatrixBase):
        return expr.applyfunc(_simplified)
    if _is_zero(expr):
        return sp.S.Zero
    out = expr
    for attempt in (
        lambda e: sp.cancel(sp.expand(sp.expand_log(e))),
        lambda e: sum_simplify(sp.expand(sp.expand_log(e))),   # combines Σ's over one index
        sp.simplify,
        lambda e: sp.simplify(sp.expand(sp.expand_log(sp.simplify(e)))),
        lambda e: sp.simplify(sp.factor_terms(sp.expand(sp.expand_log(sp.simplify(e))))),
    ):
        out = attempt(expr)
        if _is_zero(out):
            return out
    return out


def _substitute(expr, subs):
    """Apply a step's substitutions. A key that is an undefined function (``u``) is replaced by
    its value, a ``Lambda`` (``u(i) = q_i/p_i``), also inside sums over ``i``; every other key is
    substituted with ``subs``."""
    if not subs:
        return expr
    plain = {}
    for old, new in subs:
        if isinstance(old, UndefinedFunction):
            expr = expr.replace(old, new)
        else:
            plain[old] = new
    return expr.subs(plain) if plain else expr


def _unknown_terms(sm) -> bool:
    """Whether ``Sum.doit`` can only leave ``sm`` as it is: a sum over a symbolic range whose
    summand involves unknown terms of the index (``p[i]``, ``u(i)``) that no rule of
    summation applies to (no shifted index, no Kronecker delta, no piecewise)."""
    if len(sm.limits) != 1:
        return False
    i, lower, upper = sm.limits[0]
    if (upper - lower).is_Integer or sm.function.has(sp.KroneckerDelta, sp.Piecewise):
        return False
    unknown = [a for a in sm.function.atoms(Indexed, AppliedUndef) if i in a.free_symbols]
    return bool(unknown) and all(
        all(arg == i or i not in arg.free_symbols
            for arg in (a.indices if isinstance(a, Indexed) else a.args))
        for a in unknown)


class _HeldSum(sp.Sum):
    """A sum that ``doit`` leaves unevaluated (evaluating only its summand) while its summand
    satisfies :func:`_unknown_terms`: sympy's attempts to find a closed form for such a sum are
    slow and always fail. ``_apply`` turns it back into a ``Sum`` afterwards."""

    def doit(self, **hints):
        function = self.function.doit(**hints) if hints.get("deep", True) else self.function
        held = sp.Sum(function, *self.limits)
        return _HeldSum(function, *self.limits) if _unknown_terms(held) else held.doit(**hints)


def _doit(expr):
    if not hasattr(expr, "doit"):
        return expr
    if isinstance(expr, sp.Basic) and expr.has(sp.Sum):
        expr = expr.replace(lambda e: isinstance(e, sp.Sum) and _unknown_terms(e),
                            lambda e: _HeldSum(*e.args))
    expr = expr.doit()
    if isinstance(expr, sp.Basic) and expr.has(_HeldSum):
        expr = expr.replace(lambda e: isinstance(e, _HeldSum), lambda e: sp.Sum(*e.args))
    return expr


def _apply(expr, subs, simplifier=None):
    expr = _substitute(expr, subs)
    expr = _doit(expr)
    if simplifier is not None:
        expr = simplifier(expr)
    return expr


# -- numeric spot checks ----------------------------------------------------------------------

# magnitudes of the samples, by trial: small (inside (0, 1)), moderate, large
_REGIMES = ((sp.Rational(1, 10), sp.Rational(45, 100)), (sp.Integer(1), sp.Integer(9)),
            (sp.Integer(20), sp.Integer(200)))
_INT_REGIMES = ((1, 3), (4, 12), (20, 200))


def _sample_value(s, trial: int, rng: random.Random):
    """A sample for the symbol (or indexed / applied-function atom) ``s`` that respects its
    assumptions and nothing else: trial ``k`` draws its magnitude from regime ``k mod 3``; a
    symbol of unknown sign gets negative values in trials 1, 3 and 4, and one whose realness is
    unknown gets a complex value in trial 4."""
    lo, hi = _INT_REGIMES[trial % 3]
    if s.is_integer:
        mag = sp.Integer(rng.randint(lo, hi))
    else:
        a, b = _REGIMES[trial % 3]
        mag = a + (b - a) * sp.Rational(rng.randint(0, 1000), 1000)
    if s.is_positive or s.is_nonnegative:
        return mag
    if s.is_negative or s.is_nonpositive:
        return -mag
    value = -mag if trial in (1, 3, 4) else mag
    if s.is_real or s.is_extended_real or s.is_integer:
        return value
    return value + sp.I * sp.Rational(rng.randint(10, 90), 10) if trial == 4 else value


def _sample_values(expr, rng, trial: int = 0) -> dict:
    """Values for every free symbol and every indexed or applied-function atom of ``expr``
    (atoms first, so that ``p[i]`` is one unknown rather than ``p`` at ``i``)."""
    expr = sp.sympify(expr)
    atoms = sorted(expr.atoms(Indexed, AppliedUndef), key=sp.default_sort_key)
    values = {a: _sample_value(a, trial, rng) for a in atoms}
    rest = expr.xreplace(values) if values else expr
    for sym in sorted(rest.free_symbols, key=sp.default_sort_key):
        values[sym] = _sample_value(sym, trial, rng)
    return values


def _evaluate_at(expr, values):
    atoms = {k: v for k, v in values.items() if not isinstance(k, sp.Symbol)}
    symbols = {k: v for k, v in values.items() if isinstance(k, sp.Symbol)}
    return sp.sympify(expr).xreplace(atoms).subs(symbols)


def _numeric_zero(expr, *, trials=5, seed=0, tol=1e-10) -> tuple[bool, str]:
    """Spot-check ``expr == 0`` at seeded random points chosen from the symbols' assumptions
    (negative and large values for real symbols, integers for integer ones, ...). A value that is
    not a finite number (NaN, zoo) or not within ``tol`` of 0, relative to the size of the terms,
    fails."""
    rng = random.Random(seed)
    entries = [sp.sympify(e) for e in (expr if isinstance(expr, sp.MatrixBase) else [expr])]
    whole = sp.Tuple(*entries)
    for trial in range(trials):
        vals = _sample_values(whole, rng, trial)
        for e in entries:
            at = _evaluate_at(e, vals)
            v = sp.N(at, 30)
            try:
                c = complex(v)
                scale = max([1.0] + [abs(complex(sp.N(t, 30))) for t in sp.Add.make_args(at)])
            except (TypeError, ValueError, OverflowError):
                return False, f"at {vals} the difference is {v}, not a finite number"
            if not v.is_number or not abs(c) <= tol * scale:   # NaN compares False: fails
                return False, f"at {vals} the difference is {sp.N(v, 6)}"
    return True, ""


_NOT_NUMERIC = (sp.Sum, sp.Product, sp.Derivative, sp.Integral, sp.Subs, sp.Limit)


def _is_constraint(old) -> bool:
    """A substitution whose key is an expression (``Σ_i p_i``, ``p_1 + p_2``) rather than a
    symbol, indexed or applied-function atom or function: it states a constraint, which
    ``_check_equal`` may only be able to apply after simplification."""
    return (isinstance(old, sp.Basic) and not isinstance(old, UndefinedFunction)
            and not old.is_Atom and not isinstance(old, (Indexed, AppliedUndef)))


def _finite_instance(expr, constraints, size=2):
    """``expr`` with the symbolic upper limits of its sums (positive integer symbols) set to
    ``size`` and the sums written out, and each constraint ``old = new`` imposed by solving it
    for one indexed atom, applied undefined function or symbol it is linear in. Returns
    ``(expr, solved)``, or None where that is not possible."""
    sums = list(expr.atoms(sp.Sum))
    sizes = {}
    if sums:
        for sm in sums:
            if len(sm.limits) != 1 or not sm.limits[0][1].is_number:
                return None
            sizes.update({s: size for s in sm.limits[0][2].free_symbols})
        if not all(s.is_integer and s.is_positive for s in sizes):
            return None
        expr = expr.subs(sizes).doit()
    solved = {}
    for old, new in constraints:
        eq = old - new
        if sizes:
            eq = eq.subs(sizes)
        eq = eq.doit().xreplace(solved)
        candidates = (sorted(eq.atoms(Indexed), key=sp.default_sort_key, reverse=True)
                      + sorted(eq.atoms(AppliedUndef), key=sp.default_sort_key, reverse=True)
                      + sorted(eq.free_symbols - eq.atoms(Indexed), key=sp.default_sort_key,
                               reverse=True))
        for atom in candidates:
            coeff = sp.diff(eq, atom)
            if coeff == 0 or coeff.has(atom):
                continue
            value = sp.expand(atom - eq / coeff)
            solved = {k: v.xreplace({atom: value}) for k, v in solved.items()}
            solved[atom] = value
            break
        else:
            return None
    if expr.has(sp.Sum):
        return None
    return (expr.xreplace(solved) if solved else expr), solved


def _opaque_derivatives(expr):
    """``expr`` with each derivative of an undefined function that ``doit`` left (``∂π(i, θ)/∂θ``)
    replaced by a new undefined function of the same arguments: an unknown number at each point,
    which is all a refutation needs (a value of it that breaks the identity disproves it)."""
    reps = {}
    for der in expr.atoms(sp.Derivative):
        f = der.expr
        if isinstance(f, AppliedUndef):
            name = "_d_" + f.func.__name__ + "_" + "_".join(str(v) for v in der.variables)
            real = bool(f.is_real) and all(bool(v.is_real) for v in der.variables)
            reps[der] = sp.Function(name, real=real)(*f.args)
    return expr.xreplace(reps) if reps else expr


def _refute_numerically(expr, subs=(), tol=1e-8) -> str:
    """A quick disproof of ``expr == 0`` (an empty string when there is none): ``expr`` evaluated
    at one point that its symbols' assumptions and the step's constraints (``subs`` with an
    expression as key, such as Σ_i p_i = 1) allow, sums over a symbolic number of terms written
    out for two terms. It can only reject, never accept: a step is accepted only by the exact
    simplification; this just spares a wrong step the slow attempts. A derivative of an
    undefined function counts as one more unknown; other derivatives and limits are left to the
    exact check, and so is any point where a solved constraint breaks an assumption."""
    entries = list(expr) if isinstance(expr, sp.MatrixBase) else [expr]
    whole = _opaque_derivatives(sp.Tuple(*[sp.sympify(e) for e in entries]))
    constraints = [(old, new) for old, new in subs if _is_constraint(old)]
    solved = {}
    if constraints or whole.has(sp.Sum):
        inst = _finite_instance(whole, constraints)
        if inst is None:
            return ""
        whole, solved = inst
    if whole.has(*_NOT_NUMERIC):
        return ""
    rng = random.Random(1)
    vals = _sample_values(sp.Tuple(*whole, *solved.values()), rng, trial=0)
    try:
        for atom, value in solved.items():       # the solved atoms must still fit their
            v = complex(sp.N(_evaluate_at(value, vals), 30))   # assumptions
            if abs(v.imag) > tol or (atom.is_positive and not v.real > 0) or (
                    atom.is_nonnegative and not v.real >= 0) or (
                    atom.is_negative and not v.real < 0) or (
                    atom.is_nonpositive and not v.real <= 0) or (
                    atom.is_integer and v.real != int(v.real)):
                return ""
        for e in whole:
            at = _evaluate_at(e, vals)
            v = complex(sp.N(at, 30))
            scale = max([1.0] + [abs(complex(sp.N(t, 30))) for t in sp.Add.make_args(at)])
            if abs(v) > tol * scale:    # (a NaN compares False: no conclusion)
                return f"lhs - rhs = {sp.N(v, 6)} at {vals}, not 0"
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return ""
    return ""


@functools.lru_cache(maxsize=None)
def _check_equal(lhs, rhs, subs, check, simplifier) -> tuple[bool, str]:
    if isinstance(lhs, sp.MatrixBase) != isinstance(rhs, sp.MatrixBase):
        return False, "one side is a matrix and the other is not"
    if isinstance(lhs, sp.MatrixBase) and lhs.shape != rhs.shape:
        return False, f"shapes differ: {lhs.shape} vs {rhs.shape}"
    diff = _apply(lhs - rhs, subs, simplifier)
    if check == "numeric":
        return _numeric_zero(diff)
    refuted = _refute_numerically(diff, subs)
    if refuted:
        return False, refuted
    out = _simplified(diff)
    if not _is_zero(out) and subs:
        # constraints such as Σ p_i = 1 may only appear after simplification
        out = _simplified(_substitute(out, subs))
    if _is_zero(out):
        return True, ""
    return False, f"lhs - rhs simplifies to {out}, not 0"


_SIGN = {
    sp.StrictGreaterThan: "is_positive",
    sp.GreaterThan: "is_nonnegative",
    sp.StrictLessThan: "is_negative",
    sp.LessThan: "is_nonpositive",
    sp.Equality: "is_zero",
    sp.Unequality: "is_nonzero",
}


def _decide_sign(d, prop):
    """Rewrite ``d`` in forms whose sign sympy may read off its assumptions; return the form
    and ``getattr(form, prop)`` for the first form that decides it (None if none does)."""
    form = d
    for rewrite in (lambda e: e, sp.factor, sp.simplify, lambda e: sp.factor(sp.simplify(e))):
        form = rewrite(d)
        sign = getattr(form, prop)
        if sign is not None:
            return form, sign
    return form, None


# sign properties that _prove_order can establish: (negate first?, strict?)
_ORDER = {
    "is_nonnegative": (False, False),
    "is_positive": (False, True),
    "is_nonpositive": (True, False),
    "is_negative": (True, True),
}
_FLIP = {"is_nonnegative": "is_nonpositive", "is_positive": "is_negative",
         "is_nonpositive": "is_nonnegative", "is_negative": "is_positive"}
# functions whose derivative is continuous wherever sympy's continuous_domain says they are
# defined; anything else (Abs, Min, floor, Piecewise, ...) is left to the other methods
_SMOOTH = (sp.Add, sp.Mul, sp.Pow, sp.exp, sp.log)


def _opaque_to_dummies(expr):
    """Replace each indexed (``p[i]``) or applied-function (``u(i)``) atom by a fresh real dummy
    with the same sign assumptions; None if one of them is not known to be real. Proving a sign
    for arbitrary values of these dummies proves it for the atoms."""
    mapping = {}
    for atom in expr.atoms(Indexed, AppliedUndef):
        if atom.is_positive:
            mapping[atom] = sp.Dummy(positive=True)
        elif atom.is_negative:
            mapping[atom] = sp.Dummy(negative=True)
        elif atom.is_nonnegative:
            mapping[atom] = sp.Dummy(nonnegative=True)
        elif atom.is_nonpositive:
            mapping[atom] = sp.Dummy(nonpositive=True)
        elif atom.is_real:
            mapping[atom] = sp.Dummy(real=True)
        else:
            return None, {}
    return expr.xreplace(mapping), mapping


def _interval_of(x):
    """The interval that the assumptions of the real symbol ``x`` allow (None if not real)."""
    if x.is_positive:
        return sp.Interval.open(0, sp.oo)
    if x.is_nonnegative:
        return sp.Interval(0, sp.oo)
    if x.is_negative:
        return sp.Interval.open(-sp.oo, 0)
    if x.is_nonpositive:
        return sp.Interval(-sp.oo, 0)
    if x.is_real:
        return sp.S.Reals
    return None


def _univariate_order(f, x, interval, prop) -> bool:
    """Prove ``getattr(f(x), prop)`` for every ``x`` in ``interval``: first by ``solveset`` on
    the negation; where that cannot decide, from the extrema of a smooth ``f``. Between two
    consecutive critical points (zeros of ``f'``) a smooth ``f`` is strictly monotone, so its
    infimum is the least of its values at the critical points and its limits at the ends, and
    it is attained only at a critical point or a closed end."""
    negate, strict = _ORDER[prop]
    if negate:
        f = -f
    try:
        bad = sp.solveset(f <= 0 if strict else f < 0, x, interval)
        if bad is sp.S.EmptySet:
            return True
        if not isinstance(bad, sp.ConditionSet):
            return False            # solveset found where it fails
        if not isinstance(interval, sp.Interval) or any(
                not isinstance(a, _SMOOTH) for a in sp.preorder_traversal(f)
                if isinstance(a, sp.Basic) and not a.is_Atom):
            return False
        from sympy.calculus.util import continuous_domain
        interior = sp.Interval.open(interval.start, interval.end)
        if continuous_domain(f, x, interval) != interval:
            return False
        df = sp.diff(f, x)
        if continuous_domain(df, x, interior) != interior:
            return False
        critical = sp.solveset(sp.Eq(df, 0), x, interior)
        if not isinstance(critical, sp.FiniteSet):
            return False
        attained = [f.subs(x, c) for c in critical]
        approached = []             # limits at open or infinite ends, never attained
        for end, is_open, side in ((interval.start, interval.left_open, "+"),
                                   (interval.end, interval.right_open, "-")):
            if end.is_infinite or is_open:
                approached.append(sp.limit(f, x, end, side))
            else:
                attained.append(f.subs(x, end))
        need = "is_positive" if strict else "is_nonnegative"
        return (all(getattr(sp.simplify(v), need) is True for v in attained)
                and all(sp.simplify(v).is_extended_nonnegative is True for v in approached))
    except (NotImplementedError, TypeError, ValueError):
        return False


def _prove_order(expr, prop, dom, depth=0) -> bool:
    """Try to prove ``getattr(expr, prop)`` (a sign, e.g. ``is_nonnegative``) for all values of
    its symbols: from the assumptions, then term by term for a sum (``Add`` or ``Sum`` with a
    nonnegative number of terms), factor by factor for a product with one factor of unknown
    sign, and by :func:`_univariate_order` for a function of one variable (its interval taken
    from ``dom`` or from its assumptions). True only when proven."""
    if depth > 6:
        return False
    sign = getattr(expr, prop)          # the assumptions alone; rewritings come last
    if sign is not None:
        return sign
    if isinstance(expr, sp.Add) and all(_prove_order(t, prop, dom, depth + 1)
                                        for t in expr.args):
        return True
    if isinstance(expr, sp.Mul):
        flips, unknown = 0, []
        for factor in expr.args:
            if factor.is_positive:
                continue
            if factor.is_negative:
                flips += 1
            else:
                unknown.append(factor)
        if len(unknown) == 1:
            target = _FLIP[prop] if flips % 2 else prop
            if _prove_order(unknown[0], target, dom, depth + 1):
                return True
    if isinstance(expr, sp.Sum) and len(expr.limits) == 1:
        _, lower, upper = expr.limits[0]
        strict = _ORDER[prop][1]
        count = upper - lower + (0 if strict else 1)   # a strict sign needs one term at least
        if count.is_nonnegative and _prove_order(expr.function, prop, dom, depth + 1):
            return True
    _, sign = _decide_sign(expr, prop)
    if sign is not None:
        return sign
    generic, mapping = _opaque_to_dummies(expr)
    if generic is None or generic.has(sp.Sum, sp.Product, sp.Derivative, sp.Integral, sp.Subs):
        return False
    free = generic.free_symbols
    if len(free) != 1:
        return False
    (x,) = free
    original = {v: k for k, v in mapping.items()}.get(x, x)
    interval = dom.get(original, _interval_of(x))
    if interval is None:
        return False
    return _univariate_order(generic, x, interval, prop)


def _holds(cond, domain) -> tuple[bool, str]:
    if cond is sp.true or cond is True:
        return True, ""
    if cond is sp.false or cond is False:
        return False, "the condition is False"
    if isinstance(cond, sp.And):
        for arg in cond.args:
            ok, why = _holds(arg, domain)
            if not ok:
                return False, why
        return True, ""
    if isinstance(cond, Relational) and type(cond) in _SIGN:
        lhs, rhs = cond.lhs, cond.rhs
        if isinstance(lhs, sp.MatrixBase) or isinstance(rhs, sp.MatrixBase):
            if type(cond) is sp.Equality:
                return _check_equal(sp.ImmutableMatrix(lhs), sp.ImmutableMatrix(rhs), (),
                                    "exact", None)
            return False, "matrix conditions other than equality are not supported"
        d, sign = _decide_sign(lhs - rhs, _SIGN[type(cond)])
        if sign is True:
            return True, ""
        if sign is False:
            return False, f"lhs - rhs = {d} does not satisfy {_SIGN[type(cond)]}"
        dom = dict(domain)
        # undecided by assumptions: sums, products and functions of one variable (below)
        if _SIGN[type(cond)] in _ORDER and _prove_order(lhs - rhs, _SIGN[type(cond)], dom):
            return True, ""
        # an equation on the stated interval of a single variable
        free = d.free_symbols
        if len(free) == 1:
            (x,) = free
            if x in dom:
                negation = sp.Not(type(cond)(d, 0))
                bad = sp.solveset(negation, x, domain=dom[x])
                if bad is sp.S.EmptySet:
                    return True, ""
                return False, f"fails for {x} in {bad}"
        return False, f"could not prove {cond} (lhs - rhs = {d})"
    simp = sp.simplify(cond)
    if simp is sp.true:
        return True, ""
    if simp is sp.false:
        return False, "the condition simplifies to False"
    if isinstance(simp, sp.Not) and isinstance(simp.args[0], Relational):
        ok, _ = _holds(simp.args[0], domain)
        if ok:
            return False, "its negation holds"
        neg = simp.args[0].negated
        return _holds(neg, domain)
    if isinstance(simp, Relational) and simp != cond:
        return _holds(simp, domain)
    return False, f"could not prove {cond}"


@functools.lru_cache(maxsize=None)
def _check_holds(cond, subs, domain, check, simplifier) -> tuple[bool, str]:
    cond = _apply(cond, subs, simplifier)
    if check == "numeric":
        rng = random.Random(0)
        for trial in range(5):
            vals = _sample_values(cond, rng, trial)
            if _evaluate_at(cond, vals) is not sp.true:
                return False, f"fails at {vals}"
        return True, ""
    return _holds(cond, domain)


# -- rendering --------------------------------------------------------------------------------

_REL_TEX = {
    sp.StrictGreaterThan: ">",
    sp.GreaterThan: r"\geq",
    sp.StrictLessThan: "<",
    sp.LessThan: r"\leq",
    sp.Equality: "=",
    sp.Unequality: r"\neq",
}

# Unicode in reasons is rendered as math between \text{} pieces, so that reasons can say
# "since β > 0" in Python and MathJax shows a proper beta.
_UNICODE_TEX = {
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\epsilon",
    "θ": r"\theta", "λ": r"\lambda", "π": r"\pi", "ρ": r"\rho", "σ": r"\sigma", "τ": r"\tau",
    "Σ": r"\Sigma", "∇": r"\nabla", "∞": r"\infty", "≥": r"\geq", "≤": r"\leq", "≠": r"\neq",
    "·": r"\cdot", "→": r"\to", "∂": r"\partial", "−": "-", "‖": r"\|",
}
_FORBIDDEN_IN_REASON = set("$\\{}^~%&#")
_GREEK = "\u0370-\u03ff"
# a word with a subscript, like p_i, π_θ, π_ref, J_new: typeset as math
_SUBSCRIPTED = re.compile(rf"([A-Za-z{_GREEK}]+)_([A-Za-z0-9{_GREEK}]+)")


def _math_word(text: str) -> str:
    return "".join(_UNICODE_TEX.get(c, c) + (" " if c in _UNICODE_TEX else "") for c in text)


def _subscripted_tex(base: str, sub: str) -> str:
    sub_tex = (r"\mathrm{" + sub + "}" if len(sub) > 1 and sub.isascii() and sub.isalpha()
               else _math_word(sub).strip())
    return _math_word(base).strip() + "_{" + sub_tex + "}"


def reason_tex(reason: str) -> str:
    """``\\text{(reason)}`` with Greek letters, math symbols and subscripted words (``π_ref``)
    typeset as math, so that reasons read naturally in Python and render well in MathJax."""
    pieces, buf = [], []

    def flush():
        if buf:
            pieces.append(r"\text{" + "".join(buf) + "}")
            buf.clear()

    text = f"({reason})"
    pos = 0
    while pos < len(text):
        m = _SUBSCRIPTED.match(text, pos)
        if m and (pos == 0 or not text[pos - 1].isalnum()):
            flush()
            pieces.append(_subscripted_tex(m.group(1), m.group(2)))
            pos = m.end()
            continue
        ch = text[pos]
        if ch == "*" and pos > 0 and text[pos - 1] in _UNICODE_TEX:
            pieces.append("^*")   # π* is the optimal policy
        elif ch in _UNICODE_TEX:
            flush()
            pieces.append(_UNICODE_TEX[ch])
        else:
            buf.append(ch)
        pos += 1
    flush()
    return "".join(pieces)


# Reasons are shown as prose beside (or under) their equation. Greek letters, subscripted words
# and the symbols below become inline math, so that π_θ in a reason looks like π_θ in the
# equation; comparison signs and arrows read well as text and stay text.
_MATH_IN_PROSE = set("αβγδεθλπρστΣ∇∂‖")
# Markdown syntax characters that may occur in a reason: escaped so that they stay literal.
_MARKDOWN_SPECIAL = re.compile(r"([*_`<])")


def reason_markdown(reason: str) -> str:
    """The reason as one line of Markdown prose: plain text, with Greek letters, subscripted words
    (``π_ref``, ``p_i``) and ``‖ ∇ ∂ Σ`` as ``$...$`` inline math, Markdown syntax escaped.

    ``reason_markdown("since β > 0")`` is ``"since $\\beta$ > 0"``; it renders in the book (MyST),
    in Jupyter and on Colab, which all typeset ``$...$`` in Markdown outputs.
    """
    pieces: list[tuple[str, str]] = []     # ("math" | "text", content), adjacent math merged

    def add(kind: str, content: str) -> None:
        if (kind == "math" and len(pieces) >= 2 and pieces[-2][0] == "math"
                and re.fullmatch(r"[ /]+", pieces[-1][1])):   # "Σ p_i", "λ/β": one formula
            gap = pieces.pop()[1].strip() or " "
            pieces[-1] = ("math", pieces[-1][1] + gap + content)
        elif pieces and pieces[-1][0] == kind:
            sep = " " if kind == "math" else ""
            pieces[-1] = (kind, pieces[-1][1] + sep + content)
        else:
            pieces.append((kind, content))

    pos, text = 0, reason.strip()
    while pos < len(text):
        m = _SUBSCRIPTED.match(text, pos)
        if m and (pos == 0 or not text[pos - 1].isalnum()):
            add("math", _subscripted_tex(m.group(1), m.group(2)))
            pos = m.end()
            continue
        ch = text[pos]
        if ch == "*" and pieces and pieces[-1][0] == "math" and pos > 0 and text[pos - 1] in _UNICODE_TEX:
            pieces[-1] = ("math", pieces[-1][1] + "^*")   # π* is the optimal policy
        elif ch in _MATH_IN_PROSE:
            add("math", _UNICODE_TEX[ch])
        else:
            add("text", ch)
        pos += 1
    out = []
    for kind, content in pieces:
        out.append(f"${content}$" if kind == "math" else _MARKDOWN_SPECIAL.sub(r"\\\1", content))
    md = "".join(out)
    # a reason that starts like a list item ("1. ", "- ") must stay a paragraph
    return re.sub(r"^(\d+)([.)])(\s)", r"\1\\\2\3", re.sub(r"^([-+>])", r"\\\1", md))


_RELATIONS = ("=", "<", ">", "\\geq", "\\leq", "\\neq", "\\approx")


def _strip_alignment(tex: str) -> str:
    """``tex`` without its alignment points: every ``&`` outside ``\\begin{..} .. \\end{..}``
    (a matrix keeps its column separators)."""
    out, depth, i = [], 0, 0
    while i < len(tex):
        if tex.startswith("\\begin{", i):
            depth += 1
        elif tex.startswith("\\end{", i):
            depth -= 1
        elif tex[i] == "\\" and i + 1 < len(tex):   # an escaped character, e.g. \&
            out.append(tex[i:i + 2])
            i += 2
            continue
        elif tex[i] == "&" and depth == 0:
            i += 1
            continue
        out.append(tex[i])
        i += 1
    return re.sub(r"  +", " ", "".join(out)).strip()


@dataclasses.dataclass(frozen=True)
class Derivation:
    """A titled, ordered chain of verified steps.

    Attributes:
        title: shown in bold above the math.
        steps: tuple of :class:`Step`, in order.
        intro: optional short text (markdown, may contain ``$...$`` math) shown between the title
            and the math, e.g. the finite model the sympy check uses.
        name: a stable identifier, ``"<module>.<function>"``.
        symbol_names: ``((symbol, latex), ...)`` used when printing sympy expressions.
    """

    title: str
    steps: tuple
    intro: str = ""
    name: str = ""
    symbol_names: tuple = ()

    def __post_init__(self):
        steps = tuple(self.steps)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "symbol_names", _as_names(self.symbol_names))
        for i, s in enumerate(steps):
            if not isinstance(s, Step):
                raise TypeError(f"steps[{i}] is not a Step: {s!r}")
            if s.kind == "then":
                if i == 0 or steps[i - 1].kind == "holds":
                    raise ValueError(f"steps[{i}] is a 'then' step but does not follow an "
                                     "equality")

    # -- structure ----------------------------------------------------------------------------
    def __len__(self):
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)

    def lhs_of(self, index: int):
        """The left-hand side that step ``index`` is checked against (resolving ``then``)."""
        s = self.steps[index]
        if s.kind == "equal":
            return s.lhs
        if s.kind == "then":
            return self.steps[index - 1].rhs
        return None

    def replace_step(self, index: int, step: Step | None = None, **changes) -> "Derivation":
        """A copy with ``steps[index]`` (0-based) replaced by ``step`` or by a copy of it with
        ``changes`` (e.g. ``rhs=...``, ``condition=...``). Used by tests to build broken copies."""
        if step is None:
            step = self.steps[index].replace(**changes)
        elif changes:
            raise TypeError("give either a Step or field changes, not both")
        steps = list(self.steps)
        steps[index] = step
        return dataclasses.replace(self, steps=tuple(steps))

    def broken(self, index: int) -> "Derivation":
        """A copy in which ``steps[index]`` is deliberately wrong (see :meth:`Step.broken`)."""
        return self.replace_step(index, self.steps[index].broken())

    # -- verification -------------------------------------------------------------------------
    def check_step(self, index: int) -> tuple[bool, str]:
        """``(ok, detail)`` for ``steps[index]`` without raising."""
        s = self.steps[index]
        try:
            if s.kind == "holds":
                return _check_holds(s.condition, s.subs, s.domain, s.check, s.simplifier)
            return _check_equal(self.lhs_of(index), s.rhs, s.subs, s.check, s.simplifier)
        except Exception as exc:  # sympy errors count as "not proven"
            return False, f"sympy raised {type(exc).__name__}: {exc}"

    def verify(self) -> "Derivation":
        """Check every step in order; raise :class:`DerivationError` at the first failure.

        Returns the derivation itself, so ``d.verify()`` displays it in a notebook cell.
        """
        for i, s in enumerate(self.steps):
            ok, detail = self.check_step(i)
            if not ok:
                label = self.name or self.title
                raise DerivationError(
                    f"derivation {label!r} ({self.title}): step {i + 1} of {len(self.steps)} "
                    f"(steps[{i}], reason: {s.reason!r}) does not hold: {detail}",
                    derivation=label, step=i + 1, reason=s.reason)
        return self

    @property
    def numeric_steps(self) -> list[int]:
        """Indices of the steps that are only spot-checked numerically."""
        return [i for i, s in enumerate(self.steps) if s.check == "numeric"]

    # -- rendering ----------------------------------------------------------------------------
    def _tex(self, expr) -> str:
        if isinstance(expr, str):
            return expr
        return sp.latex(expr, symbol_names=dict(self.symbol_names), ln_notation=False)

    def line_tex(self, index: int) -> str:
        """The LaTeX of one line (without the trailing ``\\\\``)."""
        s = self.steps[index]
        why = r"&& " + reason_tex(s.reason) + (r"\ \text{[numeric check]}"
                                               if s.check == "numeric" else "")
        if s.kind == "holds":
            if s.tex is not None:
                body = s.tex if "&" in s.tex else "& " + s.tex
            elif isinstance(s.condition, Relational) and type(s.condition) in _REL_TEX:
                body = (f"{self._tex(s.condition.lhs)} &{_REL_TEX[type(s.condition)]} "
                        f"{self._tex(s.condition.rhs)}")
            else:
                body = "& " + self._tex(s.condition)
            return f"{body} {why}"
        rhs = s.tex_rhs if s.tex_rhs is not None else self._tex(s.rhs)
        if s.kind == "then":
            left = s.tex_lhs or ""
        else:
            left = s.tex_lhs if s.tex_lhs is not None else self._tex(s.lhs)
        return f"{left} &= {rhs} {why}"

    def latex(self) -> str:
        """One ``aligned`` block, one line per step, the reason beside each line (for LaTeX
        documents and tests; the notebooks and the book show :meth:`markdown`)."""
        lines = [self.line_tex(i) for i in range(len(self.steps))]
        return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"

    def step_tex(self, index: int) -> str:
        """The LaTeX of one step as a display equation of its own: :meth:`line_tex` without the
        reason and without alignment points. A ``then`` step starts with its relation
        (``= rhs``), continuing the chain above it."""
        math = self.line_tex(index).rsplit("&&", 1)[0]
        tex = _strip_alignment(math)
        return "{} " + tex if tex.startswith(_RELATIONS) else tex

    def markdown(self) -> str:
        """The derivation as Markdown: the title, the intro, then one ``$$...$$`` display equation
        per step, each followed by its reason as a line of prose.

        Plain Markdown and math is the floor that every renderer shows (the book, JupyterLab,
        Colab, which sanitizes HTML). Each step sits between ``<div class="rlhf-step">`` and
        ``</div>`` lines, with blank lines around its content so that the Markdown inside is still
        parsed; the book's style sheet (``_static/rlhf.css``) uses them to put the reason beside
        its equation on a wide screen and under it on a narrow one. A step wider than the column
        scrolls sideways; it is never scaled down.
        """
        parts = ['<div class="rlhf-derivation">', f"**{reason_markdown(self.title)}**"]
        if self.intro:
            parts.append(self.intro)
        for i, s in enumerate(self.steps):
            why = reason_markdown(s.reason)
            if s.check == "numeric":
                why += " (checked numerically, at random points)"
            tex = self.step_tex(i)
            kind = " rlhf-then" if tex.startswith("{} ") else ""
            parts += [f'<div class="rlhf-step{kind}">', "$$\n" + tex + "\n$$", why,
                      "</div>"]
        parts.append("</div>")
        return "\n\n".join(parts)

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def __repr__(self) -> str:
        return f"<Derivation {self.name or self.title!r}: {len(self.steps)} steps>"

    def show(self) -> None:
        """Verify every step, then display the chain (in Jupyter, on Colab and in the book).

        A step that fails raises :class:`DerivationError` before anything is shown, so a rendered
        derivation in a notebook is always a verified one.
        """
        from IPython.display import Markdown, display

        display(Markdown(self.verify().markdown()))

    def __str__(self) -> str:
        out = [self.title]
        for i, s in enumerate(self.steps):
            if s.kind == "holds":
                body = str(s.condition)
            else:
                left = "" if s.kind == "then" else str(s.lhs)
                body = f"{left} = {s.rhs}"
            out.append(f"  {i + 1}. {body}    ({s.reason})")
        return "\n".join(out)


def _as_names(names) -> tuple:
    if isinstance(names, Mapping):
        names = names.items()
    return tuple(names or ())


def verify_all(derivations: Sequence[Derivation]) -> list[Derivation]:
    """Verify a list of derivations (raising at the first failing step); return the list."""
    for d in derivations:
        d.verify()
    return list(derivations)
