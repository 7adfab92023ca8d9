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
``solveset`` on a stated interval). A step that sympy can only check numerically says so with
``check="numeric"`` and is checked at seeded random rational points.

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
from sympy.core.relational import Relational
from sympy.simplify.simplify import sum_simplify

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


def _as_pairs(subs: Mapping | Iterable | None) -> tuple:
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
        subs: substitutions applied before checking (constraints such as ``p_K = 1 - p_1 - ...``).
        domain: ``((symbol, sympy.Interval), ...)`` used to prove a one-variable condition with
            ``solveset`` when the symbols' assumptions do not settle its sign.
        check: ``"exact"`` (symbolic) or ``"numeric"`` (random rational spot checks; rare).
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
            changes["subs"] = _as_pairs(changes["subs"])
        if "domain" in changes:
            changes["domain"] = _as_pairs(changes["domain"])
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
                condition=_freeze(condition), subs=_as_pairs(subs), domain=_as_pairs(domain),
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


def _apply(expr, subs, simplifier=None):
    if subs:
        expr = expr.subs(dict(subs))
    if hasattr(expr, "doit"):
        expr = expr.doit()
    if simplifier is not None:
        expr = simplifier(expr)
    return expr


def _sample_values(symbols, rng):
    values = {}
    for s in sorted(symbols, key=str):
        # positive rationals in [1/10, 9/20]: inside (0, 1), summable to < 1 in pairs
        values[s] = sp.Rational(rng.randint(10, 45), 100)
    return values


def _numeric_zero(expr, *, trials=5, seed=0, tol=1e-10) -> tuple[bool, str]:
    rng = random.Random(seed)
    entries = list(expr) if isinstance(expr, sp.MatrixBase) else [expr]
    free = set().union(*(sp.sympify(e).free_symbols for e in entries))
    for _ in range(trials):
        vals = _sample_values(free, rng)
        for e in entries:
            v = sp.N(sp.sympify(e).subs(vals), 30)
            if not v.is_number or abs(complex(v)) > tol:
                return False, f"at {vals} the difference is {sp.N(v, 6)}"
    return True, ""


@functools.lru_cache(maxsize=None)
def _check_equal(lhs, rhs, subs, check, simplifier) -> tuple[bool, str]:
    if isinstance(lhs, sp.MatrixBase) != isinstance(rhs, sp.MatrixBase):
        return False, "one side is a matrix and the other is not"
    if isinstance(lhs, sp.MatrixBase) and lhs.shape != rhs.shape:
        return False, f"shapes differ: {lhs.shape} vs {rhs.shape}"
    diff = _apply(lhs - rhs, subs, simplifier)
    if check == "numeric":
        return _numeric_zero(diff)
    out = _simplified(diff)
    if not _is_zero(out) and subs:
        # constraints such as Σ p_i = 1 may only appear after simplification
        out = _simplified(out.subs(dict(subs)))
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
        # undecided by assumptions: try the stated interval of a single variable
        free = d.free_symbols
        dom = dict(domain)
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
        free = cond.free_symbols
        rng = random.Random(0)
        for _ in range(5):
            vals = _sample_values(free, rng)
            if not bool(cond.subs(vals)):
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
        """One ``aligned`` block, one line per step, the reason beside each line."""
        lines = [self.line_tex(i) for i in range(len(self.steps))]
        return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"

    def markdown(self) -> str:
        parts = [f"**{self.title}**"]
        if self.intro:
            parts.append(self.intro)
        parts.append("$$\n" + self.latex() + "\n$$")
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
