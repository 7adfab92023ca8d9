"""The Colab-ready copies of the notebooks in the built book (loaded from _config.yml).

- The Colab launch button of a notebook page opens its committed copy, ``colab/NAME.ipynb``
  (sphinx-book-theme builds the button from the page's own path, ``notebooks/NAME.ipynb``, whose
  MyST markup Colab shows raw).
- The download menu of a notebook page offers the copy too, and the build holds fresh copies
  (``_build/html/colab/NAME.ipynb``), converted from the notebooks it was built from.
- Bibliography entries get stable ids, ``cite-KEY`` (sphinxcontrib-bibtex's ``bibtex_cite_id``,
  unless _config.yml sets one), so that the copies' citations can link to them.

The conversion itself is ``colab_convert.py`` beside this file (``make colab``).
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import colab_convert
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)


def _stable_citation_ids(app, config):
    if "bibtex_cite_id" in config and not config.bibtex_cite_id:
        config.bibtex_cite_id = colab_convert.CITE_ID


def _book(app) -> colab_convert.Book:
    book = getattr(app, "_colab_book", None)
    if book is None:
        book = app._colab_book = colab_convert.Book.load(Path(app.srcdir))
    return book


def _notebook_name(app, pagename: str) -> str | None:
    try:
        notebooks = _book(app).notebooks
    except colab_convert.ConversionError:
        return None
    return posixpath.basename(pagename) if pagename in notebooks else None


def _point_buttons_at_copies(app, pagename, templatename, context, doctree):
    """Runs after sphinx-book-theme has built the header buttons (its handlers have priority 501)."""
    name = _notebook_name(app, pagename)
    if name is None:
        return
    for group in context.get("header_buttons", []):
        if group.get("label") == "launch-buttons":
            for button in group.get("buttons", []):
                if button.get("text") == "Colab":
                    button["url"] = _book(app).colab_url(name)
                    button["tooltip"] = "Launch the Colab-ready copy on Colab"
        elif group.get("label") == "download-buttons":
            buttons = group.setdefault("buttons", [])
            at = next((i + 1 for i, b in enumerate(buttons) if b.get("label") == "download-notebook-button"), 0)
            buttons.insert(at, {
                "type": "link",
                "url": context["pathto"](f"{colab_convert.COPIES_DIR}/{name}.ipynb", 1),
                "text": "Colab .ipynb",
                "icon": "fas fa-code",
                "tooltip": "Download the Colab-ready notebook (plain Markdown, solutions folded)",
                "label": "download-colab-notebook-button",
            })


def _write_copies(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir) / colab_convert.COPIES_DIR
    book = _book(app)
    colab_convert.write_copies(out, book)
    LOGGER.info(f"colab copies: {len(book.notebooks)} notebooks in {out}")


def setup(app):
    app.connect("config-inited", _stable_citation_ids)
    app.connect("html-page-context", _point_buttons_at_copies, priority=600)
    app.connect("build-finished", _write_copies)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
