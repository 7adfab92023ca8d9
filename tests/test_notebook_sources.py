"""Each stored notebook notebooks/NN_name.ipynb is generated from its jupytext source
notebooks/src/NN_name.py (``make notebooks NB=NN_name``): same cells in the same order, same
cell types, same sources and same tags. Nobody edits an .ipynb by hand."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

jupytext = pytest.importorskip("jupytext", reason="jupytext is in the test extra: make test")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = NOTEBOOKS / "src"
STORED = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
WRITTEN = sorted(p.stem for p in SOURCES.glob("[0-9][0-9]_*.py"))
NAMES = sorted(set(STORED) | set(WRITTEN))


def _cells(nb):
    return [(c.cell_type, c.source.rstrip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_matches_its_source(name):
    ipynb, py = NOTEBOOKS / f"{name}.ipynb", SOURCES / f"{name}.py"
    assert py.exists(), f"{ipynb.relative_to(ROOT)} has no jupytext source {py.relative_to(ROOT)}"
    assert ipynb.exists(), (f"{py.relative_to(ROOT)} was never built: "
                            f"run `make notebooks NB={name}`")
    stored = _cells(nbformat.read(ipynb, as_version=4))
    source = _cells(jupytext.read(py))
    hint = f"regenerate it: make notebooks NB={name}"
    assert len(stored) == len(source), \
        f"{name}: {len(stored)} cells stored, {len(source)} in the source; {hint}"
    for i, (s, w) in enumerate(zip(stored, source)):
        assert s[0] == w[0], f"{name} cell {i}: type {s[0]} stored, {w[0]} in the source; {hint}"
        assert s[1] == w[1], (f"{name} cell {i} ({w[0]}): the stored source differs from "
                              f"the .py, starting {w[1][:60]!r}; {hint}")
        assert s[2] == w[2], f"{name} cell {i}: tags {s[2]} stored, {w[2]} in the source; {hint}"


@pytest.mark.parametrize("name", STORED)
def test_stored_notebook_is_executed_and_clean(name):
    """Outputs are stored (the book does not execute), in order, with no widget state."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code if c.source.strip()]
    assert all(n is not None for n in counts), f"{name}: some code cells were never run"
    assert counts == sorted(counts), f"{name}: cells were not run top to bottom"
    assert "widgets" not in nb.metadata, f"{name}: widget state is stored (the book would fetch JS)"
    for c in code:
        for out in c.get("outputs", []):
            assert out.get("output_type") != "error", f"{name}: a cell stored an error"


def test_every_notebook_is_in_the_table_of_contents():
    import yaml

    toc = (ROOT / "_toc.yml").read_text()
    files = yaml.safe_load(toc)
    listed = {ch["file"] for part in files.get("parts", []) for ch in part.get("chapters", [])}
    missing = [n for n in STORED if f"notebooks/{n}" not in listed]
    assert not missing, f"notebooks missing from _toc.yml: {missing}"


@pytest.mark.parametrize("name", WRITTEN)
def test_source_has_no_control_characters(name):
    """A Python escape in a non-raw string (``"\\beta"`` is a backspace plus "eta") breaks MathJax."""
    text = (SOURCES / f"{name}.py").read_text(encoding="utf-8")
    bad = [(n, line) for n, line in enumerate(text.splitlines(), 1)
           if any(ord(ch) < 32 and ch != "\t" for ch in line)]
    assert not bad, f"{name}.py has control characters on lines {[n for n, _ in bad]}"


def _strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


@pytest.mark.parametrize("name", STORED)
def test_stored_outputs_have_no_control_characters(name):
    """Quiz HTML or markdown built from a non-raw string would carry e.g. a backspace for ``\\b``."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    bad = [i for i, cell in enumerate(nb.cells)
           for s in _strings(cell.get("outputs", []))
           if any(ord(ch) < 32 and ch not in "\t\n\r\x1b" for ch in s)]
    assert not bad, f"{name}: control characters in the outputs of cells {sorted(set(bad))}"


@pytest.mark.parametrize("name", WRITTEN)
def test_quiz_cells_hide_their_answers_in_the_book(name):
    """A quiz's arguments hold its answer (``correct=``, the steps in order): the book shows only the quiz."""
    import re

    quiz = re.compile(r"\b(multiple_choice|numeric_quiz|ordering_quiz)\(")
    nb = jupytext.read(SOURCES / f"{name}.py")
    shown = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and quiz.search(c.source)
             and "remove-input" not in c.metadata.get("tags", [])]
    assert not shown, f"{name}: quiz cells {shown} need the tag remove-input"
