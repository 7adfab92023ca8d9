"""The trainer reads like its algorithm box (issue 13): no function of rlhf_lab/ppo/trainer.py longer
than 40 lines of code (its docstring aside), and no control flow nested deeper than 3."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAINER = Path(__file__).resolve().parents[1] / "rlhf_lab" / "ppo" / "trainer.py"
MAX_LINES, MAX_DEPTH = 40, 3
BLOCKS = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try, ast.Match)


def _functions():
    tree = ast.parse(TRAINER.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def code_lines(fn: ast.FunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    return body[-1].end_lineno - body[0].lineno + 1


def depth(node: ast.AST, level: int = 0) -> int:
    """Deepest nesting of control-flow blocks below `node` (nested functions count afresh)."""
    deepest = level
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        # an `elif` is a nested If in the AST, but it reads at the same depth as its `if`
        nested = level + 1 if isinstance(child, BLOCKS) and not _is_elif(node, child) else level
        deepest = max(deepest, depth(child, nested))
    return deepest


def _is_elif(parent: ast.AST, child: ast.AST) -> bool:
    return isinstance(parent, ast.If) and isinstance(child, ast.If) and parent.orelse == [child] \
        and child.col_offset == parent.col_offset


def test_measures_on_known_code():
    src = ("def f():\n    '''doc\n    more'''\n    for i in x:\n        if i:\n            pass\n"
           "        elif j:\n            with a:\n                y = 1\n")
    fn = ast.parse(src).body[0]
    assert code_lines(fn) == 6
    assert depth(fn) == 3


@pytest.mark.parametrize("fn", _functions(), ids=lambda f: f.name)
def test_trainer_functions_are_short_and_flat(fn):
    assert code_lines(fn) <= MAX_LINES, f"{fn.name} has {code_lines(fn)} lines of code (at most {MAX_LINES})"
    assert depth(fn) <= MAX_DEPTH, f"{fn.name} nests control flow {depth(fn)} deep (at most {MAX_DEPTH})"
