"""rlhf_lab.course.exercises: the live checkers and the static quizzes' HTML.

The quizzes' behaviour in a browser (clicking, typing, MathJax) is tested in test_book.py.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest
import sympy as sp
import torch

from rlhf_lab.course import exercises as ex
from rlhf_lab.course.exercises import (
    FUNCTION_PLACEHOLDER_MESSAGE,
    PLACEHOLDER_MESSAGE,
    check_choice,
    check_expression,
    check_function,
    check_number,
    check_tensor,
    multiple_choice,
    numeric_quiz,
    ordering_quiz,
)


def one_line(capsys) -> str:
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"feedback should be one line, got {out!r}"
    return lines[0]


# --- the unanswered placeholder ----------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: check_number(..., 1.0),
    lambda: check_tensor(..., torch.zeros(2)),
    lambda: check_function(..., abs, [(1,)]),
    lambda: check_expression(..., sp.Symbol("x")),
    lambda: check_choice(..., "a"),
])
def test_placeholder_asks_for_an_answer_without_raising(call, capsys):
    """The stored notebook holds the unanswered exercise and the book shows its output: one
    neutral line (no ✘: nothing is wrong yet) and no return value, so no bare ``False``."""
    assert call() is None
    line = one_line(capsys)
    assert line == PLACEHOLDER_MESSAGE
    assert not line.startswith(("✔", "✘"))
    # it fits the book's column (tests/test_book.py measures printed lines): 76 characters
    assert len(PLACEHOLDER_MESSAGE) <= 76
    assert len(FUNCTION_PLACEHOLDER_MESSAGE.format(name="my_token_penalty")) <= 76


def test_an_unwritten_function_body_is_unanswered_not_wrong(capsys):
    def my_k3(logp, ref_logp):
        return ...  # the stored exercise

    assert check_function(my_k3, lambda a, b: a - b, [(1.0, 2.0)], name="my_k3") is None
    assert one_line(capsys) == FUNCTION_PLACEHOLDER_MESSAGE.format(name="my_k3")
    # a tuple that still holds `...` is an answer in progress: that one is reported as wrong
    assert check_function(lambda a, b: (a, ...), lambda a, b: (a, b), [(1.0, 2.0)]) is False
    assert "fill in the body" in one_line(capsys)


def test_unanswered_cells_show_no_bare_bool_in_ipython():
    """What a notebook cell shows: the displayhook prints a checker's return value unless it is
    None. Every checker called on the placeholder must leave nothing for it to print."""
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    cells = ["check_number(..., 1.0)", "check_tensor(..., torch.zeros(2))",
             "check_expression(..., sp.Symbol('x'))", "check_choice(..., 'a')",
             "check_function(lambda x: ..., abs, [(1,)], name='f')"]
    shell.user_ns.update(dict(check_number=check_number, check_tensor=check_tensor,
                              check_expression=check_expression, check_choice=check_choice,
                              check_function=check_function, torch=torch, sp=sp))
    for cell in cells:
        with capture_output() as out:
            shell.run_cell(cell, store_history=False)
        assert out.outputs == [], f"{cell}: displays {out.outputs}"
        assert out.stdout.startswith("✎") and "False" not in out.stdout, (cell, out.stdout)


# --- check_number ------------------------------------------------------------------------------

@pytest.mark.parametrize("answer", [0.6931, np.float32(0.69315), torch.tensor(0.6931), sp.log(2), 0.69315])
def test_check_number_right(answer, capsys):
    assert check_number(answer, np.log(2)) is True
    assert one_line(capsys).startswith("✔")


@pytest.mark.parametrize("answer, words", [
    (0.8, "too high"), (0.5, "too low"), (-0.6931, "wrong sign"), (1.3863, "twice"),
    (float("nan"), "NaN"), ("0.69", "should be a number"), (torch.ones(2), "should be a number"),
    (True, "should be a number"),
])
def test_check_number_wrong_says_what_is_off(answer, words, capsys):
    assert check_number(answer, np.log(2), name="kl") is False
    line = one_line(capsys)
    assert line.startswith("✘") and words in line
    assert "kl" in line


def test_check_number_tolerances_and_explain(capsys):
    assert check_number(1.0005, 1.0) is True  # default rtol 1e-3
    assert check_number(1.0005, 1.0, rtol=1e-5) is False
    assert check_number(5e-7, 0.0) is True  # atol
    capsys.readouterr()
    assert check_number(1.1, 1.0, explain="Remember the baseline.") is False
    assert one_line(capsys).endswith("too high. Remember the baseline.")


# --- check_tensor ------------------------------------------------------------------------------

def test_check_tensor_right_accepts_arrays_lists_and_float_widths(capsys):
    want = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert check_tensor(want.clone(), want)
    assert check_tensor(want.double(), want)
    assert check_tensor(want.numpy(), want)
    assert check_tensor([[1.0, 2.0], [3.0, 4.0 + 1e-7]], want)
    assert check_tensor(want.requires_grad_(), want)
    assert all(line.startswith("✔") for line in capsys.readouterr().out.splitlines())


def test_check_tensor_wrong_shape(capsys):
    assert check_tensor(torch.zeros(2, 3), torch.zeros(3, 2), name="adv") is False
    line = one_line(capsys)
    assert "adv" in line and "(2, 3)" in line and "(3, 2)" in line


def test_check_tensor_wrong_dtype(capsys):
    assert check_tensor(torch.zeros(3, dtype=torch.long), torch.zeros(3)) is False
    assert "dtype" in one_line(capsys)


def test_check_tensor_says_where_values_differ(capsys):
    want = torch.arange(6.0).reshape(2, 3)
    got = want.clone()
    got[1, 2] += 1
    assert check_tensor(got, want) is False
    line = one_line(capsys)
    assert "1 of 6" in line and "(1, 2)" in line


def test_check_tensor_nan_and_non_tensor(capsys):
    assert check_tensor(torch.tensor([float("nan")]), torch.tensor([1.0])) is False
    assert check_tensor(torch.tensor([float("nan")]), torch.tensor([float("nan")])) is True
    assert check_tensor("abc", torch.zeros(2)) is False
    assert "should be a tensor" in capsys.readouterr().out


# --- check_function ----------------------------------------------------------------------------

def masked_mean(x, mask=None):
    if mask is None:
        return x.mean()
    return (x * mask).sum() / mask.sum()


CASES = [
    (torch.tensor([1.0, 2.0, 3.0]),),
    {"x": torch.tensor([1.0, 2.0, 3.0]), "mask": torch.tensor([1.0, 1.0, 0.0])},
]


def test_check_function_right(capsys):
    def mine(x, mask=None):
        m = torch.ones_like(x) if mask is None else mask
        return torch.sum(x * m) / torch.sum(m)

    assert check_function(mine, masked_mean, CASES) is True
    assert "2 cases" in one_line(capsys)


def test_check_function_reports_first_failing_case(capsys):
    def unmasked(x, mask=None):
        return x.mean()

    assert check_function(unmasked, masked_mean, CASES) is False
    line = one_line(capsys)
    assert line.startswith("✘ unmasked(x=") and "mask=" in line and "expected 1.5" in line


def test_check_function_reports_exceptions_and_placeholders(capsys):
    def broken(x, mask=None):
        raise RuntimeError("shapes do not match")

    assert check_function(broken, masked_mean, CASES) is False
    assert "RuntimeError: shapes do not match" in one_line(capsys)

    def unfinished(x, mask=None):
        ...

    assert check_function(unfinished, masked_mean, CASES) is False
    assert "returned None: did you forget `return`?" in one_line(capsys)
    assert check_function(lambda x, mask=None: ..., masked_mean, CASES) is None
    assert one_line(capsys) == FUNCTION_PLACEHOLDER_MESSAGE.format(name="<lambda>")
    assert check_function(42, masked_mean, CASES) is False
    assert "should be a function" in one_line(capsys)


def test_check_function_tuples_and_in_place_changes(capsys):
    def ref(x):
        return x.sum(), x * 2

    def sneaky(x):
        x.mul_(2)  # changes its input: the reference must still see the original
        return x.sum() / 2, x

    assert check_function(sneaky, ref, [(torch.ones(3),)]) is True
    assert check_function(lambda x: (x.sum(),), ref, [(torch.ones(3),)]) is False
    assert "1 values, expected 2" in capsys.readouterr().out.splitlines()[-1]


# --- check_expression --------------------------------------------------------------------------

beta, r, Z, x = sp.symbols("beta r Z x", positive=True)


def test_check_expression_right_up_to_simplification(capsys):
    assert check_expression(sp.log(sp.exp(r / beta)), r / beta) is True
    assert check_expression(sp.log(Z * x), sp.log(Z) + sp.log(x)) is True
    assert all(line.startswith("✔") for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize("answer, words", [
    (-r / beta, "wrong sign"),
    (2 * r / beta, "constant factor (2)"),
    (r / beta + 1, "additive constant (1)"),
    (r / beta + sp.log(Z), "depends on Z"),
    (r, "missing beta"),
    (r / beta + r**2 / beta, "differs from the result by"),
    ("r/beta", "not a string"),
])
def test_check_expression_wrong_says_how(answer, words, capsys):
    assert check_expression(answer, r / beta, name="log ratio") is False
    line = one_line(capsys)
    assert line.startswith("✘ log ratio") and words in line


def test_check_expression_equations(capsys):
    assert check_expression(sp.Eq(x, 2 * r), sp.Eq(2 * r, x)) is True
    assert check_expression(sp.Eq(x, r), sp.Eq(2 * r, x)) is False
    assert check_expression(x, sp.Eq(x, r)) is False


# --- check_choice ------------------------------------------------------------------------------

def test_check_choice(capsys):
    notes = {"a": "That is the reward.", "b": "KL is never negative."}
    assert check_choice("B", "b", explanations=notes) is True
    assert one_line(capsys) == "✔ (b) is right. KL is never negative."
    assert check_choice("(a)", "b", explanations=notes) is False
    assert one_line(capsys) == "✘ (a) is not it. That is the reward."
    assert check_choice("z", "b", explanations=notes) is False
    assert check_choice(2, "b") is False
    with pytest.raises(ValueError):
        check_choice("a", "bb")


# --- static quizzes ----------------------------------------------------------------------------

class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(html: str) -> list[tuple[str, dict]]:
    p = _Collector()
    p.feed(html)
    return p.tags


def test_multiple_choice_html_is_static_deterministic_and_math_ready():
    q = multiple_choice(r"Which is \(\mathrm{KL}(p\|q)\) when \(p = q\)?",
                        ["1", "0", "a < b"], "b", ["No.", "Yes.", "No."])
    again = multiple_choice(r"Which is \(\mathrm{KL}(p\|q)\) when \(p = q\)?",
                            ["1", "0", "a < b"], 1, ["No.", "Yes.", "No."])
    assert q._repr_html_() == again._repr_html_()  # stable ids: nbval compares stored outputs
    html = q._repr_html_()
    assert "<script" not in html  # works with no JavaScript at all
    assert "input:checked ~ .rlhf-fb" in html
    tags = parse(html)
    container = next(a for t, a in tags if t == "div" and "rlhf-mc" in a.get("class", ""))
    assert {"tex2jax_process", "mathjax_process"} <= set(container["class"].split())
    radios = [a for t, a in tags if t == "input"]
    assert [a["value"] for a in radios] == ["a", "b", "c"]
    assert [a["data-correct"] for a in radios] == ["false", "true", "false"]
    assert len({a["name"] for a in radios}) == 1
    assert r"\(\mathrm{KL}(p\|q)\)" in html and "a &lt; b" in html
    assert "Quiz: Which is" in repr(q) and "0x" not in repr(q)


def test_quiz_ids_come_from_key_or_question():
    a = multiple_choice("Q1?", ["x", "y"], "a", key="unit 1/kl sign")
    b = multiple_choice("Q2?", ["x", "y"], "a")
    c = multiple_choice("Q3?", ["x", "y"], "a")
    assert a.id == "rlq-unit-1-kl-sign"
    assert b.id != c.id and re.fullmatch(r"rlq-mc-[0-9a-f]{10}", b.id)
    with pytest.raises(ValueError):
        multiple_choice("Q?", ["x", "y"], "c")
    with pytest.raises(ValueError):
        multiple_choice("Q?", ["x"], "a")


def test_numeric_quiz_html():
    q = numeric_quiz(r"What is \(\log 2\)?", np.log(2), tol=1e-2, key="log2", hint="Use a calculator.")
    html = q._repr_html_()
    tags = parse(html)
    box = next(a for t, a in tags if a.get("id") == "rlq-log2")
    assert float(box["data-answer"]) == pytest.approx(np.log(2)) and float(box["data-tol"]) == 0.01
    assert any(t == "input" and a.get("id") == "rlq-log2-input" for t, a in tags)
    assert "window.rlhfQuiz.number('rlq-log2')" in html and "<script>" in html
    assert "Use a calculator." in html
    assert html == numeric_quiz(r"What is \(\log 2\)?", np.log(2), tol=1e-2, key="log2",
                                hint="Use a calculator.")._repr_html_()
    with pytest.raises(ValueError):
        numeric_quiz("?", float("inf"))


def test_ordering_quiz_is_shuffled_deterministically():
    steps = ["rollout", "score", "log-probs", "per-token rewards", "GAE", "update"]
    q = ordering_quiz("Order one PPO iteration.", steps, seed=3)
    html = q._repr_html_()
    positions = [int(a["data-pos"]) for t, a in parse(html) if t == "li"]
    assert sorted(positions) == list(range(1, 7)) and positions != list(range(1, 7))
    assert html == ordering_quiz("Order one PPO iteration.", steps, seed=3)._repr_html_()
    two = ordering_quiz("Two?", ["first", "second"])
    assert [int(a["data-pos"]) for t, a in parse(two.html) if t == "li"] == [2, 1]


def test_ordering_quiz_accepts_every_order_of_steps_that_commute():
    """A group (a tuple) of steps may come in any order: each row carries the block of
    positions its group takes, and the quiz is never shown in any accepted order."""
    steps = ["rollout", ("score with the reward model", "reference log-probs and values"),
             "per-token rewards", "GAE", "update"]
    for seed in range(20):
        q = ordering_quiz("Order one PPO iteration.", steps, seed=seed)
        rows = [a for t, a in parse(q.html) if t == "li"]
        ranges = {int(a["data-pos"]): (int(a["data-min"]), int(a["data-max"])) for a in rows}
        assert ranges == {1: (1, 1), 2: (2, 3), 3: (2, 3), 4: (4, 4), 5: (5, 5), 6: (6, 6)}
        shown = [int(a["data-pos"]) for a in rows]
        assert not all(ranges[p][0] <= k + 1 <= ranges[p][1] for k, p in enumerate(shown)), seed
    assert "score with the reward model" in q.html and "Quiz: Order" in repr(q)
    # the id of a quiz without groups is what it was (stored outputs keep their ids)
    plain = ["a", "b", "c"]
    assert ordering_quiz("Q?", plain).id == ordering_quiz("Q?", list(plain)).id
    with pytest.raises(ValueError, match="single group"):
        ordering_quiz("Q?", [("a", "b")])
    with pytest.raises(ValueError, match="empty group"):
        ordering_quiz("Q?", ["a", ()])


def test_quiz_options_keep_the_radio_beside_its_text():
    """A radio button and its label share one grid row (the label wraps in the second column),
    so a long option never leaves its button alone on the line above."""
    html = multiple_choice("Q?", ["x " * 80, "y"], "a")._repr_html_()
    assert re.search(r"\.rlhf-quiz \.rlhf-opt\{[^}]*display:grid;grid-template-columns:auto", html)
    assert re.search(r"\.rlhf-quiz \.rlhf-fb\{[^}]*grid-column:2", html)
    opt = re.search(r'<div class="rlhf-opt">(<input[^>]*>)(<label[^>]*>)', html)
    assert opt, "the radio input and its label are the first two children of an option"


def test_public_names():
    for name in ["check_number", "check_tensor", "check_function", "check_expression",
                 "check_choice", "multiple_choice", "numeric_quiz", "ordering_quiz"]:
        assert callable(getattr(ex, name))


# --- regressions -------------------------------------------------------------------------------

def test_check_tensor_accepts_arrays_with_negative_strides(capsys):
    rewards = np.array([1.0, 2.0, 3.0, 4.0])
    reward_to_go = np.cumsum(rewards[::-1])[::-1]  # a view with a negative stride
    assert reward_to_go.strides[0] < 0
    want = torch.tensor([10.0, 9.0, 7.0, 4.0])
    assert check_tensor(reward_to_go, want) is True
    assert check_tensor(want, reward_to_go) is True  # as `expected` too
    assert check_tensor(np.arange(6.0).reshape(2, 3).T, torch.tensor([[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]))
    assert all(line.startswith("✔") for line in capsys.readouterr().out.splitlines())


def test_check_tensor_accepts_a_list_of_tensors_that_require_grad(capsys):
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    assert check_tensor([w[0] * 2, w[1] * 2], torch.tensor([2.0, 4.0])) is True
    assert check_tensor([w, w], [[1.0, 2.0], [1.0, 2.0]]) is True
    assert check_tensor([w[0] * 3, w[1]], torch.tensor([2.0, 2.0])) is False
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("✔") and out[1].startswith("✔") and "1 of 2" in out[2]


@pytest.mark.parametrize("reference, words", [
    (lambda x: None, "expected None"),
    (lambda x: "done", "expected 'done'"),
    (lambda x: True, "expected True"),
    (lambda x: np.bool_(False), "expected False"),
])
def test_check_function_array_against_none_str_or_bool_is_a_clear_mismatch(reference, words, capsys):
    assert check_function(lambda x: np.array([1.0, 2.0]), reference, [(1,)], name="f") is False
    line = one_line(capsys)
    assert line.startswith("✘ f(1)") and words in line


def test_check_function_bools_of_any_kind_match_each_other(capsys):
    for got, want in [(True, np.bool_(True)), (np.bool_(False), False), (True, torch.tensor(True)),
                      (torch.tensor(False), np.array(False)), (False, torch.tensor(False))]:
        assert check_function(lambda x, g=got: g, lambda x, w=want: w, [(0,)]) is True, (got, want)
    capsys.readouterr()
    assert check_function(lambda x: False, lambda x: np.bool_(True), [(0,)], name="g") is False
    assert "is False, expected True" in one_line(capsys)
    assert check_function(lambda x: 1, lambda x: np.bool_(True), [(0,)], name="g") is False
    assert "expected True" in one_line(capsys)
    # a shaped bool tensor is still compared as a tensor
    assert check_function(lambda x: torch.tensor([True]), lambda x: torch.tensor(True), [(0,)]) is False
    assert "shape" in one_line(capsys)


@pytest.mark.parametrize("answer", [True, np.bool_(True), np.array(True), torch.tensor(True)])
def test_check_number_refuses_every_kind_of_bool(answer, capsys):
    assert check_number(answer, 1.0) is False
    assert "should be a number" in one_line(capsys)


@pytest.mark.parametrize("expected", [True, np.bool_(True), np.array(True), torch.tensor(True)])
def test_check_number_expected_bool_is_a_type_error(expected):
    with pytest.raises(TypeError):
        check_number(1.0, expected)


def test_check_number_with_nan_expected(capsys):
    assert check_number(0.5, float("nan")) is False
    line = one_line(capsys)
    assert "expected value is NaN" in line and "too" not in line
    assert check_number(float("nan"), float("nan")) is True


def test_check_expression_matrices(capsys):
    assert check_expression(sp.Matrix([[0, 0]]), sp.Matrix([[0, 0]])) is True
    assert check_expression(sp.Matrix([r / beta, sp.log(sp.exp(x))]), sp.Matrix([r / beta, x])) is True
    assert all(line.startswith("✔") for line in capsys.readouterr().out.splitlines())
    assert check_expression(sp.Matrix([r / beta, -x]), sp.Matrix([r / beta, x]), name="v") is False
    assert one_line(capsys) == "✘ v entry (1, 0) has the wrong sign."
    assert check_expression(sp.Matrix([[1, 2]]), sp.Matrix([1, 2]), name="v") is False
    assert one_line(capsys) == "✘ v has shape (1, 2), expected (2, 1)."
    assert check_expression(x, sp.Matrix([x])) is False
    assert "matrix" in one_line(capsys)
    assert check_expression(sp.Matrix([x]), x) is False
    assert "matrix" in one_line(capsys)


@pytest.mark.parametrize("answer", [x > r, True, (x, r), [x], np.array([1.0])])
def test_check_expression_refuses_non_expressions(answer, capsys):
    assert check_expression(answer, x, name="e") is False
    line = one_line(capsys)
    assert line.startswith("✘ e should be a sympy expression")


def test_check_expression_bad_expected_is_a_type_error():
    with pytest.raises(TypeError):
        check_expression(x, x > r)


def test_check_expression_equations_up_to_a_constant_factor(capsys):
    assert check_expression(sp.Eq(2 * x, 2 * r), sp.Eq(x, r)) is True
    assert check_expression(sp.Eq(-x / 3, -r / 3), sp.Eq(x, r)) is True
    assert check_expression(sp.Eq(x / beta, r / beta), sp.Eq(x, r)) is False  # not a constant
    assert check_expression(sp.Eq(x, 0.5 * r), sp.Eq(x, r / 2)) is True
    lines = capsys.readouterr().out.splitlines()
    assert [line[0] for line in lines] == ["✔", "✔", "✘", "✔"]


def test_check_expression_matches_symbols_by_name(capsys):
    plain_beta, plain_r = sp.Symbol("beta"), sp.Symbol("r")
    assert check_expression(sp.log(sp.exp(plain_r / plain_beta)), r / beta) is True
    assert check_expression(sp.sqrt(plain_beta**2), beta) is True
    assert all(line.startswith("✔") for line in capsys.readouterr().out.splitlines())
    assert check_expression(2 * plain_r / plain_beta, r / beta) is False
    assert "constant factor (2)" in one_line(capsys)


def test_check_expression_float_coefficients_compare_numerically(capsys):
    import math

    assert check_expression(math.log(2) * beta, sp.log(2) * beta) is True
    assert check_expression(math.log(2) * beta + r, r + sp.log(2) * beta) is True
    assert check_expression(sp.Float(math.pi) * x**2, sp.pi * x**2) is True
    assert all(line.startswith("✔") for line in capsys.readouterr().out.splitlines())
    assert check_expression(0.7 * beta, sp.log(2) * beta) is False  # 1% off is still wrong
    line = one_line(capsys)
    assert "constant factor (1.00989)" in line
    assert check_expression(math.log(2) * beta * (1 + 1e-6), sp.log(2) * beta) is False


def test_numeric_quiz_writes_plain_numbers_for_numpy_tol():
    q = numeric_quiz("Q?", np.float64(2.5), tol=np.float64(0.05), key="np-tol")
    box = next(a for t, a in parse(q.html) if a.get("id") == "rlq-np-tol")
    assert box["data-tol"] == "0.05" and box["data-answer"] == "2.5"
    assert float(box["data-tol"]) == 0.05
    q = numeric_quiz("Q?", np.int64(3), tol=np.float32(0.25), key="np-tol")
    box = next(a for t, a in parse(q.html) if a.get("id") == "rlq-np-tol")
    assert box["data-tol"] == "0.25" and box["data-answer"] == "3.0"
    q = numeric_quiz("Q?", 3, tol=0, key="np-tol")
    assert 'data-tol="0"' in q.html


@pytest.mark.parametrize("tol", [-0.1, float("nan"), float("inf"), "0.05", True, None])
def test_numeric_quiz_refuses_bad_tol(tol):
    with pytest.raises(ValueError, match="tol"):
        numeric_quiz("Q?", 1.0, tol=tol)


def test_check_choice_unexplained_option_is_not_called_missing(capsys):
    notes = {"a": "Too small.", "c": "Too large."}
    assert check_choice("b", "d", explanations=notes) is False
    assert one_line(capsys) == "✘ (b) is not it."
    assert check_choice("(c)", "d", explanations=notes) is False
    assert one_line(capsys) == "✘ (c) is not it. Too large."
    assert check_choice("e", "d", explanations=notes) is False
    assert one_line(capsys) == "✘ there is no option (e)."


def test_quiz_keys_that_share_an_id_are_refused():
    multiple_choice("Q?", ["x", "y"], "a", key="regression clash")
    multiple_choice("Q?", ["x", "y"], "b", key="regression clash")  # re-running a cell is fine
    with pytest.raises(ValueError, match="key"):
        numeric_quiz("Q?", 1.0, key="regression-clash")
    with pytest.raises(ValueError, match="key"):
        ordering_quiz("Q?", ["a", "b"], key="regression clash")
    with pytest.raises(ValueError, match="key"):
        multiple_choice("Q?", ["x", "y"], "a", key="regression/clash")


@pytest.mark.parametrize("correct", [-1, 2, 5, True])
def test_multiple_choice_correct_index_out_of_range(correct):
    with pytest.raises(ValueError, match="correct"):
        multiple_choice("Q?", ["x", "y"], correct)


@pytest.mark.parametrize("explanations", [["only one"], ["1", "2", "3"], "ab"])
def test_multiple_choice_explanations_must_match_the_options(explanations):
    with pytest.raises(ValueError, match="explanations"):
        multiple_choice("Q?", ["x", "y"], "a", explanations)
