"""Exercises: live answer checkers and static quizzes for the notebooks and the book.

Two kinds of tools live here.

**Checkers** run in a live kernel (Jupyter, Colab). Each takes the reader's answer as a Python
object (a number, a tensor, a function, a sympy expression; never a string to ``eval``), prints
one short line of feedback (``✔`` or ``✘`` and what is off) and returns ``True`` or ``False``.

The notebooks store the unanswered exercise (``answer = ...``, or a function whose body is
``return ...``), and the book shows that stored output. Then a checker prints one neutral line,
:data:`PLACEHOLDER_MESSAGE` (or, for a function, what to fill in), with no ``✘``, and returns
``None``, so that the cell shows no ``False`` either: an unanswered exercise is not a wrong one.

- :func:`check_number`, :func:`check_tensor`, :func:`check_function`, :func:`check_expression`,
  :func:`check_choice`.

**Static quizzes** return an object that IPython displays as HTML and that works without a
kernel, so the same cell output gives feedback in the built book (opened online or from
``file://``), in JupyterLab and on Colab:

- :func:`multiple_choice`: radio buttons; the feedback is pure CSS (``:checked``), no JavaScript.
- :func:`numeric_quiz`: a number field and a few lines of inline JavaScript.
- :func:`ordering_quiz`: put shuffled steps back in order (inline JavaScript).

Element ids are derived from ``key`` (or a hash of the question), never random, so the stored
outputs are identical from run to run (nbval compares them). Inline math written as
``\\( ... \\)`` in questions and options is typeset by MathJax in the book: the quiz container
carries the ``tex2jax_process mathjax_process`` classes that Sphinx's MathJax set-up looks for.
"""

from __future__ import annotations

import copy
import hashlib
import html
import json
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "PLACEHOLDER_MESSAGE",
    "FUNCTION_PLACEHOLDER_MESSAGE",
    "check_number",
    "check_tensor",
    "check_function",
    "check_expression",
    "check_choice",
    "multiple_choice",
    "numeric_quiz",
    "ordering_quiz",
    "Quiz",
]

# One line that fits the book's column (76 characters, rlhf_lab.course.display.TEXT_COLUMNS)
PLACEHOLDER_MESSAGE = "✎ Your turn: replace `...` with your answer and run this cell to check it."
FUNCTION_PLACEHOLDER_MESSAGE = "✎ Your turn: fill in {name}, then run this cell to check it."
RIGHT = "✔"
WRONG = "✘"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _say(ok: bool, text: str) -> bool:
    print(f"{RIGHT if ok else WRONG} {text}")
    return ok


def _is_placeholder(answer: Any) -> bool:
    if answer is Ellipsis:
        print(PLACEHOLDER_MESSAGE)
        return True
    return False


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _short(obj: Any, limit: int = 60) -> str:
    if isinstance(obj, torch.Tensor):
        text = f"tensor(shape={tuple(obj.shape)}, dtype={obj.dtype})" if obj.numel() > 6 else repr(
            obj.detach().cpu().tolist())
    elif isinstance(obj, np.ndarray):
        text = f"array(shape={obj.shape}, dtype={obj.dtype})" if obj.size > 6 else repr(obj.tolist())
    else:
        text = repr(obj)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_float(x: Any) -> float | None:
    """A plain float from a Python/NumPy/sympy number or a one-element tensor; None otherwise.

    Booleans are not numbers: ``True``, ``np.True_`` and bool arrays/tensors give None.
    """
    if isinstance(x, (bool, np.bool_, str, bytes)):
        return None
    if isinstance(x, torch.Tensor):
        return (float(x.detach().cpu().item())
                if x.numel() == 1 and x.dtype != torch.bool and not x.is_complex() else None)
    if isinstance(x, np.ndarray):
        return float(x.item()) if x.size == 1 and x.dtype.kind in "iuf" else None
    if isinstance(x, (int, float, np.integer, np.floating)):
        return float(x)
    try:  # sympy numbers and anything else with __float__
        return float(x)
    except (TypeError, ValueError):
        return None


def _close(a: float, e: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(e):
        return math.isnan(a) and math.isnan(e)
    if math.isinf(a) or math.isinf(e):
        return a == e
    return abs(a - e) <= atol + rtol * abs(e)


def _number_hint(a: float, e: float, rtol: float, atol: float) -> str:
    if math.isnan(e):
        return "is wrong: the expected value is NaN (not a number)"
    if math.isnan(a):
        return "is NaN"
    if math.isinf(a):
        return "is infinite"
    if e != 0 and _close(-a, e, rtol, atol):
        return "has the wrong sign"
    hint = "is too high" if a > e else "is too low"
    if e != 0 and a != 0:
        ratio = a / e
        for r, words in ((2.0, "about twice"), (0.5, "about half"), (10.0, "about 10×"),
                         (0.1, "about a tenth of")):
            if abs(ratio - r) <= 1e-3 * abs(r):
                return f"is {words} the expected value"
    return hint


def _plain(x: Any) -> Any:
    """Nested lists/tuples with every tensor detached and moved to NumPy (for np.asarray)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        try:
            return t.numpy()
        except (TypeError, RuntimeError):  # e.g. bfloat16: leave it to np.asarray
            return t
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _to_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, (np.ndarray, list, tuple, int, float, np.number)) and not isinstance(x, bool):
        try:
            arr = np.asarray(_plain(x))
            if not arr.flags.c_contiguous:  # e.g. negative strides from x[::-1]: torch refuses them
                arr = arr.copy(order="C")
            return torch.as_tensor(arr)
        except (TypeError, ValueError, RuntimeError):
            return None
    return None


def _is_bool_scalar(x: Any) -> bool:
    """True for bool, np.bool_ and 0-d bool arrays/tensors."""
    if isinstance(x, (bool, np.bool_)):
        return True
    if isinstance(x, torch.Tensor):
        return x.dtype == torch.bool and x.dim() == 0
    if isinstance(x, np.ndarray):
        return x.dtype == np.bool_ and x.ndim == 0
    return False


def _as_bool(x: Any) -> bool | None:
    """A plain bool from bool, np.bool_ or a one-element bool array/tensor; None otherwise."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, torch.Tensor) and x.dtype == torch.bool and x.numel() == 1:
        return bool(x.item())
    if isinstance(x, np.ndarray) and x.dtype == np.bool_ and x.size == 1:
        return bool(x.item())
    return None


def _equal(a: Any, e: Any) -> bool:
    """``a == e`` for arbitrary objects, never raising: elementwise results count as different."""
    try:
        res = a == e
        if isinstance(res, (np.ndarray, torch.Tensor)):
            return False
        return bool(res)
    except Exception:  # noqa: BLE001 - objects whose == raises are simply different
        return False


def _dtype_kind(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    if t.is_complex():
        return "complex"
    if t.is_floating_point():
        return "float"
    return "int"


def _tensor_difference(a: torch.Tensor, e: torch.Tensor, rtol: float, atol: float) -> str | None:
    """None when a matches e; otherwise one short phrase saying what differs."""
    if tuple(a.shape) != tuple(e.shape):
        return f"has shape {tuple(a.shape)}, expected {tuple(e.shape)}"
    if _dtype_kind(a) != _dtype_kind(e):
        return f"has dtype {a.dtype}, expected a {_dtype_kind(e)} tensor like {e.dtype}"
    if a.numel() == 0:
        return None
    if a.dtype == torch.bool:
        bad = a != e
    else:
        af, ef = a.to(torch.float64 if not a.is_complex() else torch.complex128), e.to(
            torch.float64 if not e.is_complex() else torch.complex128)
        bad = ~torch.isclose(af, ef, rtol=rtol, atol=atol, equal_nan=True)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return None
    idx = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
    where = f"index {idx if len(idx) != 1 else idx[0]}" if idx else "its only entry"
    got, want = a[idx].item() if idx else a.item(), e[idx].item() if idx else e.item()
    show = (lambda v: _fmt(v)) if isinstance(got, float) else repr
    return (f"differs at {n_bad} of {a.numel()} entries; first at {where}: "
            f"{show(got)} vs expected {show(want)}")


def _difference(a: Any, e: Any, rtol: float, atol: float) -> str | None:
    """Compare two results of any common kind; None when they match, else a short phrase."""
    if a is Ellipsis:
        return "returned `...`: fill in the body of the function"
    if a is None and e is not None:
        return "returned None: did you forget `return`?"
    if e is None:
        return None if a is None else f"is {_short(a)}, expected None"
    if isinstance(e, str):
        return None if isinstance(a, str) and a == e else f"is {_short(a)}, expected {_short(e)}"
    if _is_bool_scalar(e) and not (isinstance(e, (torch.Tensor, np.ndarray))
                                   and isinstance(a, (torch.Tensor, np.ndarray))):
        want, got = bool(e), _as_bool(a)
        if got is None:
            return f"is {_short(a)}, expected {want} (a bool)"
        return None if got == want else f"is {got}, expected {want}"
    if isinstance(e, (torch.Tensor, np.ndarray)):
        te = _to_tensor(e)
        if te is not None:
            ta = _to_tensor(a)
            if ta is None:
                return f"returned {type(a).__name__}, expected a tensor"
            return _tensor_difference(ta, te, rtol, atol)
    if isinstance(e, (tuple, list)):
        if not isinstance(a, (tuple, list)):
            return f"returned {type(a).__name__}, expected a {type(e).__name__} of {len(e)}"
        if len(a) != len(e):
            return f"returned {len(a)} values, expected {len(e)}"
        for i, (ai, ei) in enumerate(zip(a, e)):
            d = _difference(ai, ei, rtol, atol)
            if d is not None:
                return f"item {i} {d}"
        return None
    if isinstance(e, Mapping):
        if not isinstance(a, Mapping):
            return f"returned {type(a).__name__}, expected a dict"
        missing = [k for k in e if k not in a]
        if missing:
            return f"is missing the key {missing[0]!r}"
        for k in e:
            d = _difference(a[k], e[k], rtol, atol)
            if d is not None:
                return f"[{k!r}] {d}"
        return None
    fe = _as_float(e)
    if fe is not None:
        fa = _as_float(a)
        if fa is None:
            return f"returned {type(a).__name__}, expected a number"
        return None if _close(fa, fe, rtol, atol) else f"is {_fmt(fa)}, expected {_fmt(fe)}"
    return None if _equal(a, e) else f"is {_short(a)}, expected {_short(e)}"


# --------------------------------------------------------------------------------------------
# live checkers
# --------------------------------------------------------------------------------------------

def check_number(answer: Any, expected: Any, *, rtol: float = 1e-3, atol: float = 1e-6,
                 name: str = "answer", explain: str | None = None) -> bool | None:
    """Check a scalar: right when ``|answer − expected| ≤ atol + rtol·|expected|``.

    Accepts Python, NumPy and sympy numbers and one-element tensors. Booleans are never numbers:
    ``True``, ``np.True_`` and bool arrays/tensors are refused as ``answer`` (✘) and as
    ``expected`` (TypeError). A NaN ``expected`` is matched only by a NaN answer. On a wrong
    answer it says whether the value is too high or too low (or has the wrong sign, or is off by
    a factor of 2 or 10) and adds ``explain`` if given.
    """
    if _is_placeholder(answer):
        return None
    e = _as_float(expected)
    if e is None:
        raise TypeError(f"expected must be a number, got {type(expected).__name__}")
    a = _as_float(answer)
    if a is None:
        return _say(False, f"{name} should be a number, got {_short(answer)}.")
    if _close(a, e, rtol, atol):
        return _say(True, f"{name} = {_fmt(a)} is right.")
    msg = f"{name} = {_fmt(a)} {_number_hint(a, e, rtol, atol)}."
    if explain:
        msg += f" {explain}"
    return _say(False, msg)


def check_tensor(answer: Any, expected: Any, *, rtol: float = 1e-5, atol: float = 1e-6,
                 name: str = "answer") -> bool | None:
    """Check a tensor (or array / nested list): same shape, same kind of dtype, close values.

    Float32 vs float64 is fine; float vs int vs bool is not. On a mismatch it reports the shape,
    the dtype, or how many entries differ and the first index where they do.
    """
    if _is_placeholder(answer):
        return None
    e = _to_tensor(expected)
    if e is None:
        raise TypeError(f"expected must be a tensor or array, got {type(expected).__name__}")
    a = _to_tensor(answer)
    if a is None:
        return _say(False, f"{name} should be a tensor, got {type(answer).__name__}.")
    diff = _tensor_difference(a, e, rtol, atol)
    if diff is None:
        return _say(True, f"{name} matches (shape {tuple(a.shape)}).")
    return _say(False, f"{name} {diff}.")


def _call(fn: Callable, case: Any) -> Any:
    case = copy.deepcopy(case)  # a function that changes its inputs in place must not fool us
    if isinstance(case, Mapping):
        return fn(**case)
    if isinstance(case, tuple):
        return fn(*case)
    return fn(case)


def _case_text(fname: str, case: Any) -> str:
    if isinstance(case, Mapping):
        inner = ", ".join(f"{k}={_short(v, 30)}" for k, v in case.items())
    elif isinstance(case, tuple):
        inner = ", ".join(_short(v, 30) for v in case)
    else:
        inner = _short(case, 30)
    return f"{fname}({inner})"


def check_function(candidate: Any, reference: Callable, cases: Sequence[Any], *,
                   rtol: float = 1e-5, atol: float = 1e-6, name: str | None = None
                   ) -> bool | None:
    """Call ``candidate`` and ``reference`` on every case and compare the results.

    ``cases`` is a list whose items are tuples of positional arguments or dicts of keyword
    arguments (anything else is passed as the single argument). Results may be numbers, tensors,
    arrays, or tuples/lists/dicts of them. Reports the first case that fails or raises.
    A reference result that is None, a string or a single bool (``bool``, ``np.bool_``, a 0-d
    bool tensor/array) must be matched by an object of the same kind (any single bool for a bool).
    """
    if _is_placeholder(candidate):
        return None
    fname = name or getattr(candidate, "__name__", "your function")
    if not callable(candidate):
        return _say(False, f"{fname} should be a function, got {type(candidate).__name__}.")
    cases = list(cases)
    if not cases:
        raise ValueError("cases must not be empty")
    for case in cases:
        want = _call(reference, case)
        try:
            got = _call(candidate, case)
        except Exception as exc:  # noqa: BLE001 - report the reader's error, do not raise it
            return _say(False, f"{_case_text(fname, case)} raised {type(exc).__name__}: {exc}")
        if got is Ellipsis:   # the stored exercise: `return ...` not yet replaced
            print(FUNCTION_PLACEHOLDER_MESSAGE.format(name=fname))
            return None
        diff = _difference(got, want, rtol, atol)
        if diff is not None:
            return _say(False, f"{_case_text(fname, case)} {diff}.")
    return _say(True, f"{fname} agrees with the reference on all {len(cases)} cases.")


def _sympy_kind(v: Any) -> str | None:
    """"matrix", "equation" or "expression" for the sympy objects check_expression compares."""
    import sympy as sp

    if isinstance(v, sp.MatrixBase):  # before Expr: immutable matrices are Exprs too
        return "matrix"
    if isinstance(v, sp.Equality):
        return "equation"
    if isinstance(v, sp.Expr):
        return "expression"
    return None


def _sympified(x: Any):
    """``(sympy object, its kind)`` for ``x``, or ``(None, None)`` when it is not one that
    check_expression compares."""
    import sympy as sp

    try:
        v = sp.sympify(x, strict=True)
    except (sp.SympifyError, TypeError):
        return None, None
    return v, _sympy_kind(v)


def _sample_points(symbols: Sequence[Any], n: int = 6, seed: int = 0) -> list[dict]:
    """Deterministic exact values for ``symbols`` that respect their sign/integer assumptions."""
    import sympy as sp

    rng = random.Random(seed)
    points = []
    for _ in range(n):
        pt = {}
        for s in symbols:
            v = (sp.Integer(rng.randint(1, 5)) if s.is_integer
                 else sp.Rational(rng.randint(30, 230), 100))
            pt[s] = -v if (s.is_negative or s.is_nonpositive) else v
        points.append(pt)
    return points


def _values_at_points(a: Any, e: Any):
    """``(a, e)`` evaluated at a few random points of their symbols, as complex numbers: the
    finite pairs, or ``None`` when either does not evaluate to a number (e.g. an undefined f(x))."""
    import sympy as sp

    symbols = sorted(a.free_symbols | e.free_symbols, key=sp.default_sort_key)
    pairs = []
    for pt in _sample_points(symbols):
        try:
            av, ev = complex(a.xreplace(pt).evalf(30)), complex(e.xreplace(pt).evalf(30))
        except (TypeError, ValueError, ZeroDivisionError):
            return None
        if all(map(math.isfinite, (av.real, av.imag, ev.real, ev.imag))):
            pairs.append((av, ev))
    return pairs


def _numerically_equal(a: Any, e: Any, rtol: float = 1e-9) -> bool:
    """``a`` and ``e`` agree (relative to their size) at a few random points of their symbols."""
    pairs = _values_at_points(a, e)
    if not pairs or len(pairs) < 3:
        return False
    scale = max(max(abs(av), abs(ev)) for av, ev in pairs)
    return all(abs(av - ev) <= rtol * scale for av, ev in pairs)


def _show_constant(c: Any) -> str:
    """A constant for a message: exact when exact, a short decimal when it carries floats."""
    import sympy as sp

    if c.has(sp.Float) and c.is_real:
        try:
            return _fmt(float(c))
        except (TypeError, ValueError):
            pass
    return str(c)


def _expression_difference(a: Any, e: Any) -> str | None:
    """None when the sympy expressions ``a`` and ``e`` are equal, else a phrase saying how not."""
    import sympy as sp

    diff = sp.simplify(a - e)
    if diff == 0 or diff.equals(0):
        return None
    if diff.has(sp.Float) and _numerically_equal(a, e):  # e.g. math.log(2)*beta vs log(2)*beta
        return None
    extra = sorted(map(str, a.free_symbols - e.free_symbols))
    missing = sorted(map(str, e.free_symbols - a.free_symbols))
    if extra:
        return f"depends on {', '.join(extra)}, which the result does not"
    if missing:
        return f"is missing {', '.join(missing)}"
    if sp.simplify(a + e) == 0:
        return "has the wrong sign"
    if e != 0:
        ratio = sp.simplify(a / e)
        if ratio.is_number:
            return f"is off by a constant factor ({_show_constant(ratio)})"
    if not diff.free_symbols:
        return f"is off by an additive constant ({_show_constant(diff)})"
    text = sp.sstr(diff)
    if len(text) > 60:
        text = text[:59] + "…"
    return f"differs from the result by {text}"


def _equivalent_equations(a: Any, e: Any) -> bool:
    """Two sp.Eq are equivalent when ``a.lhs − a.rhs`` is a nonzero constant times ``e.lhs − e.rhs``.
    """
    import sympy as sp

    da, de = a.lhs - a.rhs, e.lhs - e.rhs
    if sp.simplify(da - de) == 0 or sp.simplify(da + de) == 0:
        return True
    if sp.simplify(de) == 0:
        return sp.simplify(da) == 0
    ratio = sp.simplify(da / de)
    if ratio.is_number and ratio.is_finite and ratio.is_zero is False:
        return True
    if da.has(sp.Float) or de.has(sp.Float):  # the ratio at a few points: one nonzero constant?
        pairs = _values_at_points(da, de)
        if pairs is None:
            return False
        values = [num / den for num, den in pairs if den != 0]
        if len(values) >= 3 and values[0] != 0:
            return all(abs(v - values[0]) <= 1e-9 * abs(values[0]) for v in values)
    return False


def check_expression(answer: Any, expected: Any, *, name: str = "answer") -> bool | None:
    """Check a sympy expression: right when ``simplify(answer − expected) == 0``.

    When they differ, says how: missing or extra symbols, a wrong sign, a constant factor, or an
    additive constant (e.g. a forgotten ``log Z``). Strings are refused (no ``eval``), and so is
    anything that is not an expression, an equation or a matrix (``x > r``, ``True``, tuples).

    - Symbols are matched by name: an answer built with ``sp.Symbol("beta")`` is compared as if
      it used the expected ``beta`` (with its assumptions, e.g. ``positive=True``).
    - Equations (``sp.Eq``) are right when ``lhs − rhs`` is a nonzero constant multiple of the
      expected one (``Eq(2*x, 2*r)`` matches ``Eq(x, r)``).
    - Matrices are compared entry by entry; the first wrong entry is reported.
    - When the difference holds floats (``math.log(2)*beta`` for ``log(2)*beta``), the two are
      also compared numerically at a few points (relative tolerance 1e-9).

    Raises TypeError when ``expected`` is not an expression, an equation or a matrix.
    """
    import sympy as sp

    if _is_placeholder(answer):
        return None
    if isinstance(answer, str):
        return _say(False, f"{name} should be a sympy expression built from the symbols, "
                           f"not a string.")
    e, ke = _sympified(expected)
    if ke is None:
        raise TypeError(f"expected must be a sympy expression, equation (sp.Eq) or matrix, "
                        f"got {type(expected).__name__}")
    a, ka = _sympified(answer)
    if ka is None:
        return _say(False, f"{name} should be a sympy expression, equation (sp.Eq) or matrix, "
                           f"not {type(answer).__name__} ({_short(answer, 40)}).")
    # match symbols by name: Symbol("beta") stands for the expected Symbol("beta", positive=True)
    by_name = {s.name: s for s in e.free_symbols if isinstance(s, sp.Symbol)
               and not isinstance(s, sp.Dummy)}
    swap = {s: by_name[s.name] for s in a.free_symbols
            if isinstance(s, sp.Symbol) and not isinstance(s, sp.Dummy)
            and s.name in by_name and s != by_name[s.name]}
    if swap:
        a = a.xreplace(swap)
    if ka == "equation" or ke == "equation":
        if ka != ke:
            return _say(False, f"{name} should {'not ' if ka == 'equation' else ''}"
                               f"be an equation (sp.Eq).")
        same = _equivalent_equations(a, e)
        return _say(same, f"{name} is {'right' if same else 'not the expected equation'}.")
    if ka == "matrix" or ke == "matrix":
        if ke != "matrix":
            return _say(False, f"{name} should be a single expression, not a matrix.")
        if ka != "matrix":
            return _say(False, f"{name} should be a {e.rows}×{e.cols} matrix (sp.Matrix), "
                               f"got {type(answer).__name__}.")
        if a.shape != e.shape:
            return _say(False, f"{name} has shape {a.shape}, expected {e.shape}.")
        for i in range(e.rows):
            for j in range(e.cols):
                d = _expression_difference(a[i, j], e[i, j])
                if d is not None:
                    return _say(False, f"{name} entry ({i}, {j}) {d}.")
        return _say(True, f"{name} is right.")
    d = _expression_difference(a, e)
    return _say(d is None, f"{name} {'is right' if d is None else d}.")


def _letter(x: Any) -> str | None:
    if isinstance(x, str):
        s = x.strip().strip("()").strip().lower()
        return s if len(s) == 1 and s.isalpha() else None
    return None


def check_choice(answer: Any, correct: str, *, explanations: Mapping[str, str] | None = None
                 ) -> bool | None:
    """Live multiple choice: ``answer`` is a letter (``"b"``, ``"B"`` or ``"(b)"``).

    ``explanations`` maps letters to a sentence shown when that letter is picked. The options
    are taken to run from (a) to the last letter among ``correct`` and the explanations' keys:
    a letter past it gets "there is no option"; one inside it without an explanation gets a
    plain "is not it".
    """
    if _is_placeholder(answer):
        return None
    want = _letter(correct)
    if want is None:
        raise ValueError(f"correct must be a single letter, got {correct!r}")
    notes = {(_letter(k) or k): v for k, v in (explanations or {}).items()}
    got = _letter(answer)
    if got is None:
        return _say(False, f"answer with one letter such as \"a\"; "
                           f"got {_short(answer)}.")
    if explanations and got not in notes and got != want:
        last = max([k for k in notes if _letter(k) == k] + [want])
        if got > last:
            return _say(False, f"there is no option ({got}).")
    note = f" {notes[got]}" if got in notes else ""
    if got == want:
        return _say(True, f"({got}) is right.{note}")
    return _say(False, f"({got}) is not it.{note}")


# --------------------------------------------------------------------------------------------
# static quizzes
# --------------------------------------------------------------------------------------------

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _text(s: str) -> str:
    """Escape HTML, keep ``\\( \\)`` math for MathJax, render `code` and **bold**."""
    out = html.escape(str(s), quote=False)
    out = _CODE.sub(r"<code>\1</code>", out)
    return _BOLD.sub(r"<strong>\1</strong>", out)


_KIND_NAMES = {"mc": "multiple_choice", "num": "numeric_quiz", "ord": "ordering_quiz"}

# Ids already given out for a ``key`` in this process (one notebook kernel): id -> (kind, key).
# Two different keys (or kinds) must not share an element id on the same page.
_KEYED_IDS: dict[str, tuple[str, str]] = {}


def _quiz_id(kind: str, key: str | None, *parts: Any) -> str:
    if key is not None:
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", str(key)).strip("-")
        if not slug:
            raise ValueError(f"key {key!r} has no usable characters")
        qid = f"rlq-{slug}"
        owner = _KEYED_IDS.setdefault(qid, (kind, str(key)))
        if owner != (kind, str(key)):
            raise ValueError(
                f"key {key!r} gives the element id {qid!r}, which the "
                f"{_KIND_NAMES.get(owner[0], owner[0])} quiz with key {owner[1]!r} already uses: "
                f"give each quiz its own key (after renaming a quiz, restart the kernel)")
        return qid
    digest = hashlib.sha1(json.dumps([kind, *map(str, parts)]).encode()).hexdigest()[:10]
    return f"rlq-{kind}-{digest}"


# One style sheet for every quiz. It is repeated in each output (a notebook output cannot rely
# on another cell's), scoped to .rlhf-quiz, and uses the theme's colours where they exist.
_STYLE = """<style>
.rlhf-quiz{border:1px solid #c9d3de;border-left:4px solid #3b78c2;border-radius:6px;padding:.6em .9em;margin:.8em 0;background:transparent;font-size:.95em}
.rlhf-quiz .rlhf-q{font-weight:600;margin:0 0 .5em 0}
.rlhf-quiz .rlhf-opt{margin:.25em 0;display:grid;grid-template-columns:auto minmax(0,1fr);column-gap:.45em;align-items:baseline}
.rlhf-quiz .rlhf-opt input{margin:0}
.rlhf-quiz .rlhf-opt label{cursor:pointer;margin:0;display:block}
.rlhf-quiz .rlhf-fb{display:none;grid-column:2;margin:.2em 0 .3em 0;padding:.15em .5em;border-radius:4px}
.rlhf-quiz .rlhf-opt input:checked ~ .rlhf-fb{display:block}
.rlhf-quiz .rlhf-right{color:#1a6b2f;background:rgba(46,160,67,.12)}
.rlhf-quiz .rlhf-wrong{color:#9b1c1c;background:rgba(218,54,51,.10)}
.rlhf-quiz .rlhf-status{display:inline-block;margin-left:.6em;padding:.1em .5em;border-radius:4px}
.rlhf-quiz .rlhf-status:empty{display:none}
.rlhf-quiz input[type=text]{width:9em;padding:.15em .3em}
.rlhf-quiz button{margin-left:.4em;padding:.15em .7em;cursor:pointer}
.rlhf-quiz ol.rlhf-steps{margin:.3em 0;padding-left:0;list-style:none}
.rlhf-quiz ol.rlhf-steps li{margin:.25em 0;padding:.1em .3em;border-radius:4px;display:flex;align-items:baseline;column-gap:.5em}
.rlhf-quiz ol.rlhf-steps select{flex:none}
.rlhf-quiz details{margin-top:.4em}
</style>"""

# Shared JavaScript for the numeric and ordering quizzes; defined once per page, idempotent.
_SCRIPT = """<script>
(function(){
if (window.rlhfQuiz) return;
function show(el, ok, text){ el.textContent = text; el.className = 'rlhf-status ' + (ok ? 'rlhf-right' : 'rlhf-wrong'); }
window.rlhfQuiz = {
  number: function(id){
    var box = document.getElementById(id), input = document.getElementById(id + '-input');
    var fb = document.getElementById(id + '-fb');
    var raw = (input.value || '').trim().replace(/\\u2212/g, '-').replace(',', '.');
    var x = raw === '' ? NaN : Number(raw);
    if (!isFinite(x)) { show(fb, false, '\\u2718 Type a number, e.g. 0.25'); return false; }
    var want = Number(box.dataset.answer), tol = Number(box.dataset.tol);
    var ok = Math.abs(x - want) <= tol * Math.max(1, Math.abs(want));
    show(fb, ok, ok ? '\\u2714 Right.' : (x > want ? '\\u2718 Too high.' : '\\u2718 Too low.'));
    return ok;
  },
  order: function(id){
    var box = document.getElementById(id), rows = box.querySelectorAll('li[data-pos]');
    var fb = document.getElementById(id + '-fb'), right = 0, chosen = 0, count = {};
    rows.forEach(function(li){
      var v = li.querySelector('select').value;
      if (v) { chosen++; count[v] = (count[v] || 0) + 1; }
    });
    rows.forEach(function(li){
      var v = li.querySelector('select').value;
      var lo = Number(li.dataset.min || li.dataset.pos), hi = Number(li.dataset.max || li.dataset.pos);
      var ok = v !== '' && count[v] === 1 && Number(v) >= lo && Number(v) <= hi;
      if (ok) right++;
      li.className = v === '' ? '' : (ok ? 'rlhf-right' : 'rlhf-wrong');
    });
    if (chosen < rows.length) { show(fb, false, '\\u2718 Give every step a position.'); return false; }
    var all = right === rows.length;
    var shared = Object.keys(count).some(function(k){ return count[k] > 1; });
    show(fb, all, all ? '\\u2714 Right order.' : '\\u2718 ' + (shared ? 'Two steps share a position; ' : '')
         + right + ' of ' + rows.length + ' in place.');
    return all;
  }
};
})();
</script>"""

_CONTAINER_CLASSES = "rlhf-quiz tex2jax_process mathjax_process"


class Quiz:
    """A static quiz: IPython shows the HTML; ``repr`` gives a plain-text version."""

    def __init__(self, kind: str, quiz_id: str, html_body: str, text: str):
        self.kind = kind
        self.id = quiz_id
        self._html = html_body
        self._text = text

    def _repr_html_(self) -> str:
        return self._html

    def __repr__(self) -> str:
        return self._text

    __str__ = __repr__

    @property
    def html(self) -> str:
        return self._html


def _option_list(options: Sequence[str] | Mapping[str, str]) -> list[tuple[str, str]]:
    if isinstance(options, Mapping):
        items = [(_letter(k), v) for k, v in options.items()]
        if any(k is None for k, _ in items):
            raise ValueError("option keys must be single letters")
        return items  # type: ignore[return-value]
    options = list(options)
    if not 2 <= len(options) <= 26:
        raise ValueError(f"options must hold 2 to 26 entries, got {len(options)}")
    return [(chr(ord("a") + i), str(o)) for i, o in enumerate(options)]


def multiple_choice(question: str, options: Sequence[str] | Mapping[str, str], correct: str | int,
                    explanations: Sequence[str] | Mapping[str, str] | None = None, *,
                    key: str | None = None) -> Quiz:
    """A multiple-choice question that gives feedback with no kernel and no JavaScript.

    ``options`` is a list (lettered a, b, c, …) or a dict ``{letter: text}``; ``correct`` is a
    letter or a 0-based index; ``explanations`` (list aligned with ``options`` or dict by letter)
    is shown under the option the reader picks. Radio inputs and the CSS ``:checked`` selector do
    the work, so it behaves the same in the static book, JupyterLab and Colab.
    """
    opts = _option_list(options)
    letters = [k for k, _ in opts]
    if isinstance(correct, (bool, np.bool_)):
        raise ValueError(f"correct must be a letter or a 0-based index, got {correct!r}")
    if isinstance(correct, (int, np.integer)):
        if not 0 <= correct < len(letters):
            raise ValueError(f"correct index {correct!r} is out of range: there are "
                             f"{len(letters)} options (indices 0 to {len(letters) - 1})")
        want = letters[int(correct)]
    else:
        want = _letter(correct)
    if want not in letters:
        raise ValueError(f"correct {correct!r} is not one of the options {letters}")
    if explanations is None:
        notes: dict[str, str] = {}
    elif isinstance(explanations, Mapping):
        notes = {_letter(k) or k: v for k, v in explanations.items()}
    else:
        if isinstance(explanations, str):
            raise ValueError("explanations must be a list aligned with the options or a dict "
                             "by letter, not a string")
        explanations = list(explanations)
        if len(explanations) != len(letters):
            raise ValueError(f"explanations has {len(explanations)} entries but there are "
                             f"{len(letters)} options")
        notes = dict(zip(letters, explanations))
    qid = _quiz_id("mc", key, question, [o for _, o in opts])
    rows = []
    for letter, text in opts:
        ok = letter == want
        verdict = "Right." if ok else "Not quite."
        note = f" {_text(notes[letter])}" if letter in notes else ""
        rows.append(
            f'<div class="rlhf-opt"><input type="radio" name="{qid}" id="{qid}-{letter}" '
            f'value="{letter}" data-correct="{str(ok).lower()}">'
            f'<label for="{qid}-{letter}">({letter}) {_text(text)}</label>'
            f'<div class="rlhf-fb {"rlhf-right" if ok else "rlhf-wrong"}">'
            f'{RIGHT if ok else WRONG} {verdict}{note}</div></div>')
    body = (f'{_STYLE}<div class="{_CONTAINER_CLASSES} rlhf-mc" id="{qid}" role="group">'
            f'<p class="rlhf-q">{_text(question)}</p>{"".join(rows)}</div>')
    text = "\n".join([f"Quiz: {question}", *(f"  ({k}) {o}" for k, o in opts),
                      "(Pick an option in the rendered notebook or the book.)"])
    return Quiz("multiple_choice", qid, body, text)


def numeric_quiz(question: str, answer: float, *, tol: float = 1e-2, key: str | None = None,
                 hint: str | None = None) -> Quiz:
    """A question whose answer is a number; the reader types it and presses *Check* (or Enter).

    Accepted when ``|x − answer| ≤ tol · max(1, |answer|)``; ``tol`` is a finite number ≥ 0
    (any numeric type: it is written into the HTML as a plain number). A few lines of inline
    JavaScript do the check, so it works in the static book and on Colab without a kernel.
    """
    a = _as_float(answer)
    if a is None or not math.isfinite(a):
        raise ValueError(f"answer must be a finite number, got {answer!r}")
    t = _as_float(tol)
    if t is None or not math.isfinite(t) or t < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    tol_text = str(int(tol)) if isinstance(tol, (int, np.integer)) else repr(t)
    qid = _quiz_id("num", key, question, a)
    hint_html = (f'<details class="rlhf-hint"><summary>Hint</summary>{_text(hint)}</details>'
                 if hint else "")
    body = (f'{_STYLE}{_SCRIPT}<div class="{_CONTAINER_CLASSES} rlhf-num" id="{qid}" '
            f'data-answer="{a!r}" data-tol="{tol_text}">'
            f'<p class="rlhf-q">{_text(question)}</p>'
            f'<input type="text" inputmode="decimal" id="{qid}-input" aria-label="your answer" '
            f'placeholder="your answer" '
            f"onkeydown=\"if(event.key==='Enter'){{window.rlhfQuiz.number('{qid}');}}\">"
            f'<button type="button" onclick="window.rlhfQuiz.number(\'{qid}\')">Check</button>'
            f'<span class="rlhf-status" id="{qid}-fb" role="status" aria-live="polite"></span>'
            f'{hint_html}</div>')
    text = f"Quiz: {question}\n(Type a number in the rendered notebook or the book.)"
    return Quiz("numeric_quiz", qid, body, text)


def ordering_quiz(question: str, steps: Sequence[str | Sequence[str]], *, key: str | None = None,
                  seed: int = 0) -> Quiz:
    """Put steps back in order. ``steps`` is given in a correct order.

    An item of ``steps`` that is a list or tuple of strings is a group of steps that may come in
    any order among themselves (they commute, e.g. scoring with the reward model and computing
    the reference log-probabilities): every order of a group is accepted, as long as the group
    takes its block of positions. Say in the solution which steps commute.

    The steps are shown shuffled (deterministically from ``seed``, never in a correct order); the
    reader picks the position of each step and presses *Check* to see which are in place. Each
    row carries ``data-pos`` (its place in the order given), ``data-min`` and ``data-max`` (the
    positions its group may take). Raises ValueError for fewer than two steps, an empty group, or
    a single group (nothing to order).
    """
    flat: list[str] = []
    ranges: list[tuple[int, int]] = []
    for k, item in enumerate(steps):
        group = [str(x) for x in item] if isinstance(item, (list, tuple)) else [str(item)]
        if not group:
            raise ValueError(f"steps[{k}] is an empty group")
        lo = len(flat) + 1
        flat += group
        ranges += [(lo, len(flat))] * len(group)
    n = len(flat)
    if n < 2:
        raise ValueError(f"steps must hold at least 2 entries, got {n}")
    if ranges[0] == (1, n):
        raise ValueError("steps is a single group whose order does not matter: nothing to order")

    def valid(order: list[int]) -> bool:
        return all(ranges[i][0] <= pos + 1 <= ranges[i][1] for pos, i in enumerate(order))

    order = list(range(n))
    random.Random(seed).shuffle(order)
    while valid(order):   # never shown in a correct order
        order = order[1:] + order[:1]
    qid = _quiz_id("ord", key, question, steps)
    choices = "".join(f'<option value="{i + 1}">{i + 1}</option>' for i in range(n))
    rows = "".join(
        f'<li data-pos="{i + 1}" data-min="{ranges[i][0]}" data-max="{ranges[i][1]}">'
        f'<select aria-label="position of this step">'
        f'<option value="">–</option>{choices}</select><span>{_text(flat[i])}</span></li>'
        for i in order)
    body = (f'{_STYLE}{_SCRIPT}<div class="{_CONTAINER_CLASSES} rlhf-order" id="{qid}">'
            f'<p class="rlhf-q">{_text(question)}</p>'
            f'<ol class="rlhf-steps">{rows}</ol>'
            f'<button type="button" onclick="window.rlhfQuiz.order(\'{qid}\')">Check</button>'
            f'<span class="rlhf-status" id="{qid}-fb" role="status" aria-live="polite"></span>'
            f'</div>')
    text = "\n".join([f"Quiz: {question}", *(f"  - {flat[i]}" for i in order),
                      "(Put the steps in order in the rendered notebook or the book.)"])
    return Quiz("ordering_quiz", qid, body, text)
