"""rlhf_lab.exercises: the live checkers and the static quizzes' HTML.

The quizzes' behaviour in a browser (clicking, typing, MathJax) is tested in test_book.py.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest
import sympy as sp
import torch

from rlhf_lab import exercises as ex
from rlhf_lab.exercises import (
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
    assert call() is False
    assert one_line(capsys) == PLACEHOLDER_MESSAGE


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
    assert check_function(lambda x, mask=None: ..., masked_mean, CASES) is False
    assert "fill in the body" in one_line(capsys)
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


def test_public_names():
    for name in ["check_number", "check_tensor", "check_function", "check_expression",
                 "check_choice", "multiple_choice", "numeric_quiz", "ordering_quiz"]:
        assert callable(getattr(ex, name))
