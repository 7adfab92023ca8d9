"""Legible pages: figures, tables and source code that fit the book's column at 100% zoom.

The book's rule is that nothing is scaled down to fit: a figure is drawn at the width it is shown
at, a table wraps or scrolls inside its own box, a derivation is one display equation per step
(:meth:`rlhf_lab.derivations.core.Derivation.markdown`). The numbers below were measured in the
built book (sphinx-book-theme, headless Chromium): at a 1280 px wide window a cell output is
``COLUMN_PX`` = 688 CSS px wide, and printed text (14 px monospace, 8.4 px a character, 16 px
padding each side) fits 77 characters a line; ``TEXT_COLUMNS`` = 76 leaves one for glyphs that
come from a fallback font (Σ, π, ␣).

One call at the top of a notebook::

    from rlhf_lab.course.display import use_book_style
    use_book_style()

sets matplotlib's defaults (figure width = the column, font sizes, dpi) and makes every figure
that Jupyter shows a PNG that carries the size of its smallest text, measured from the text the
figure actually draws, in a PNG ``tEXt`` chunk (``rlhf-min-text-px``: pixels of the PNG). The
book's browser test reads it and multiplies it by the scale at which the image is shown, so a
figure whose smallest text renders under ``MIN_TEXT_PX`` = 9 CSS px fails the test, naming it.

The rest:

- :func:`subplots`: several panels in rows that fit the column (narrower panels or more rows);
- :func:`table`: rows of numbers and strings as an HTML table that wraps or scrolls within the
  column, with optional cell colours whose text colour is chosen for contrast;
- :func:`show_source`: a function's code with its docstring rendered as prose and math.
"""

from __future__ import annotations

import ast
import html as _html
import inspect
import io
import math
import numbers
import re
import struct
import textwrap
import zlib
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "COLUMN_PX",
    "TEXT_COLUMNS",
    "MIN_TEXT_PX",
    "DPI",
    "FIGURE_WIDTH",
    "use_book_style",
    "figsize",
    "subplots",
    "smallest_text_px",
    "figure_png",
    "png_text_chunks",
    "table",
    "Table",
    "diverging_colors",
    "text_color_for",
    "show_source",
    "Source",
]

COLUMN_PX = 688          # CSS px: width of a cell output in the book at a 1280 px window
TEXT_COLUMNS = 76        # characters of printed output per line that fit COLUMN_PX (77 measured)
MIN_TEXT_PX = 9          # CSS px: the smallest text a figure may show (tests/test_book.py)
DPI = 100                # figure pixels per inch, at which 1 figure px = 1 CSS px in the book
FIGURE_WIDTH = 6.6       # inches: COLUMN_PX less the tight bounding box's padding
PANEL_MIN_WIDTH = 2.2    # inches: narrower panels cannot hold tick labels at BOOK_FONT sizes
PNG_TEXT_KEY = "rlhf-min-text-px"

# Font sizes in points; at DPI = 100 one point is 100/72 = 1.39 px, so 9 pt is 12.5 px: a
# figure shown at 72% of its width still has 9 px text.
BOOK_FONT = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9.5,
    "figure.titlesize": 11,
}


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------

def figsize(ncols: int = 1, nrows: int = 1, *, panel_height: float = 2.6,
            width: float | None = None) -> tuple[float, float]:
    """``(width, height)`` in inches for ``nrows`` × ``ncols`` panels: the column's width
    (``FIGURE_WIDTH`` = 6.6 in, or ``width``) and ``panel_height`` inches per row.

    Raises ValueError when the panels would be narrower than ``PANEL_MIN_WIDTH`` (2.2 in):
    use more rows (see :func:`subplots`)."""
    for name, v in (("ncols", ncols), ("nrows", nrows)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not (isinstance(panel_height, (int, float)) and panel_height > 0):
        raise ValueError(f"panel_height must be a positive number, got {panel_height!r}")
    w = FIGURE_WIDTH if width is None else float(width)
    if not 0 < w <= FIGURE_WIDTH:
        raise ValueError(f"width must be in (0, {FIGURE_WIDTH}] inches (the book's column), "
                         f"got {width!r}")
    if w / ncols < PANEL_MIN_WIDTH - 1e-9:
        raise ValueError(f"ncols={ncols} makes panels {w / ncols:.2f} in wide, under "
                         f"{PANEL_MIN_WIDTH} in: use more rows (subplots(n) chooses them)")
    return (w, panel_height * nrows)


def max_columns(width: float = FIGURE_WIDTH) -> int:
    """How many panels fit side by side in ``width`` inches (3 in the book's column)."""
    return max(1, int((width + 1e-9) // PANEL_MIN_WIDTH))


def subplots(n: int = 1, *, ncols: int | None = None, panel_height: float = 2.6,
             width: float | None = None, **kwargs):
    """``(fig, axes)`` with ``n`` panels laid out to fit the column: ``ncols`` per row (default:
    as many as fit, at most ``n``), as many rows as needed. ``axes`` is a flat list of the ``n``
    axes (spare grid cells are removed). Other keyword arguments go to ``plt.subplots``
    (``sharex``, ``sharey``, ...); the layout is ``"constrained"`` unless given.

    Four panels give a row of 3 and a row of 1 (3 fit side by side); ``ncols=2`` gives 2 × 2::

        fig, axes = subplots(4, ncols=2, sharey=True)
    """
    import matplotlib.pyplot as plt

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    w = FIGURE_WIDTH if width is None else float(width)
    cols = min(n, max_columns(w)) if ncols is None else ncols
    rows = math.ceil(n / cols)
    kwargs.setdefault("layout", "constrained")
    fig, grid = plt.subplots(rows, cols, figsize=figsize(cols, rows, panel_height=panel_height,
                                                         width=w),
                             squeeze=False, **kwargs)
    axes = list(grid.flat)
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def _drawn_font_sizes(fig) -> list[float]:
    """Font sizes (points) of every text the figure draws: ``Text.draw`` is wrapped while the
    canvas draws, so only text that is actually drawn counts (visible, non-empty, ticks in
    view), whatever created it (titles, tick labels, legends, annotations, ``fig.text``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    sizes: list[float] = []
    original = Text.draw

    def recording_draw(self, renderer):
        if self.get_visible() and self.get_text().strip():
            sizes.append(float(self.get_fontsize()))
        return original(self, renderer)

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    Text.draw = recording_draw
    try:
        canvas.draw()
    finally:
        Text.draw = original
    return sizes


def smallest_text_px(fig, dpi: float | None = None) -> float | None:
    """The size of the figure's smallest drawn text, in pixels of an image saved at ``dpi``
    (default: the figure's dpi): font size in points × dpi / 72. None when it draws no text."""
    sizes = _drawn_font_sizes(fig)
    if not sizes:
        return None
    return min(sizes) * (dpi or fig.dpi) / 72.0


def figure_png(fig, dpi: float | None = None, *, hidpi: bool = False) -> tuple[bytes, dict]:
    """``(png_bytes, metadata)`` for showing ``fig``: saved with a tight bounding box at ``dpi``
    (default: the figure's), with ``tEXt`` chunks ``rlhf-min-text-px`` (see
    :func:`smallest_text_px`, in pixels of this PNG, or ``none``) and ``rlhf-dpi``.

    ``hidpi=True`` saves at twice the dpi and returns ``{"width": ..., "height": ...}`` at half
    the pixel size, so the figure is shown at the same size but sharp on high-density screens
    (the text size in the chunk is then in pixels of the larger PNG; the test divides by the
    displayed scale either way)."""
    dpi = float(dpi or fig.dpi) * (2 if hidpi else 1)
    small = smallest_text_px(fig, dpi)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05,
                facecolor=fig.get_facecolor(), edgecolor="none",
                metadata={PNG_TEXT_KEY: "none" if small is None else f"{small:.2f}",
                          "rlhf-dpi": f"{dpi:g}"})
    data = buf.getvalue()
    meta = {}
    if hidpi:
        w, h = struct.unpack(">II", data[16:24])
        meta = {"width": w // 2, "height": h // 2}
    return data, meta


def png_text_chunks(data: bytes) -> dict[str, str]:
    """The ``tEXt`` (and ``zTXt``) chunks of a PNG as a dict (used by the book's tests)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("data is not a PNG (bad signature)")
    out, pos = {}, 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            out[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"IEND":
            break
        pos += 12 + length
    return out


def use_book_style(*, hidpi: bool = False) -> None:
    """Make figures legible in the book: call once at the top of a notebook.

    - matplotlib defaults: figures ``FIGURE_WIDTH`` (6.6 in) wide at ``DPI`` (100), so they
      are shown at 100% in the book's column; font sizes ``BOOK_FONT`` (9 pt and up); a light
      grid.
    - In IPython (Jupyter, Colab, nbconvert), figures are shown as PNG through
      :func:`figure_png`, which records the smallest drawn text in the PNG, for the book's test.
      ``hidpi=True`` gives sharper figures on high-density screens at twice the bytes.

    Works without IPython too (then only the defaults change). Call it after any
    ``%matplotlib`` / ``%config InlineBackend`` line, which would register their own formatter.
    """
    import matplotlib as mpl
    import matplotlib.pyplot as plt  # noqa: F401 - selects the inline backend in a kernel

    mpl.rcParams.update({
        "figure.figsize": (FIGURE_WIDTH, 3.4),
        "figure.dpi": DPI,
        "savefig.dpi": "figure",
        "axes.grid": True,
        "grid.alpha": 0.3,
        **BOOK_FONT,
    })
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return
    # The inline backend registers its own PNG formatter when the backend is first resolved;
    # resolve it now so that ours, set after, is the one that stays.
    try:
        plt.get_backend()
        plt.close(plt.figure())
    except Exception:  # noqa: BLE001 - a headless backend without figures is fine
        pass
    from matplotlib.figure import Figure

    formatters = ip.display_formatter.formatters
    for mime in ("image/svg+xml", "image/jpeg", "application/pdf", "image/retina"):
        if mime in formatters:
            formatters[mime].pop(Figure, None)
    formatters["image/png"].for_type(Figure, lambda fig: figure_png(fig, hidpi=hidpi))


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------

def _rgb(color) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    try:
        return to_rgb(color)
    except ValueError:
        raise ValueError(f"colors: {color!r} is not a colour matplotlib knows") from None


def _luminance(rgb: Sequence[float]) -> float:
    """WCAG relative luminance of an sRGB colour with channels in [0, 1]."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast_ratio(a, b) -> float:
    """WCAG contrast ratio of two colours (1 to 21; 4.5 is the minimum for body text)."""
    la, lb = sorted((_luminance(_rgb(a)), _luminance(_rgb(b))), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_color_for(background) -> str:
    """``"#000000"`` or ``"#ffffff"``, whichever contrasts more with ``background``; the ratio is
    at least 4.58 for every colour (WCAG AA asks 4.5)."""
    return ("#000000" if contrast_ratio(background, "#000000") >= contrast_ratio(background, "#ffffff")
            else "#ffffff")


def diverging_colors(values: Sequence[float], vmax: float | None = None,
                     cmap: str = "RdBu_r", strength: float = 0.8) -> list[str]:
    """Hex background colours for ``values`` on a diverging colour map centred at 0, ``vmax``
    (default: the largest |value|) at ``strength`` of the map's end (lighter than its extremes,
    so that text stays easy to read). Pass the result as a row of ``table(colors=...)``."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    vals = [float(v) for v in values]
    top = max([abs(v) for v in vals if math.isfinite(v)] + [0.0]) if vmax is None else float(vmax)
    top = top or 1.0
    cm = plt.get_cmap(cmap)
    return [to_hex(cm(0.5 + 0.5 * strength * max(-1.0, min(1.0, v / top))))
            if math.isfinite(v) else "#ffffff" for v in vals]


def _cell_text(value: Any, fmt: str | None) -> tuple[str, bool]:
    """(text, is_number) for one cell: integers as they are, other reals with ``fmt`` (default
    ``.4g``), 0-d tensors and arrays as their number, anything else as ``str``."""
    if hasattr(value, "ndim") and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if value is None:
        return "", False
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value), False
    if fmt is not None:
        return format(value, fmt), True
    if isinstance(value, numbers.Integral):
        return str(int(value)), True
    return format(float(value), ".4g"), True


class Table:
    """An HTML table that fits its column (returned by :func:`table`)."""

    def __init__(self, html_text: str, plain: str):
        self._html = html_text
        self._plain = plain

    def _repr_html_(self) -> str:
        return self._html

    def __repr__(self) -> str:
        return self._plain

    @property
    def html(self) -> str:
        return self._html


def table(rows: Sequence[Sequence[Any]], columns: Sequence[str] | None = None, *,
          colors: Sequence[Sequence[Any]] | None = None, caption: str | None = None,
          formats: str | Sequence[str | None] | None = None, row_headers: bool = False,
          align: Sequence[str] | None = None) -> Table:
    """Rows of numbers and strings as an HTML table that fits the book's column.

    Args:
        rows: a list of rows, each a list of cells (str, int, float, NumPy or 0-d torch numbers).
        columns: header texts, one per column (optional).
        colors: optional background colours with the shape of ``rows`` (any colour matplotlib
            knows, or None for none); each coloured cell's text is black or white, whichever
            contrasts more (at least 4.5:1). :func:`diverging_colors` maps numbers to colours.
        caption: a line above the table.
        formats: a format spec for numbers (``".3f"``), or one per column (None keeps the
            default ``.4g`` for floats).
        row_headers: the first cell of each row is a row header (``<th>``).
        align: ``"left"``, ``"right"`` or ``"center"`` per column (numbers right, text left by
            default).

    Returns a :class:`Table`: HTML in a notebook and in the book (in a box that scrolls
    sideways rather than overflow the page, and whose cells wrap text), aligned plain text
    elsewhere. Raises ValueError on ragged rows or a ``colors``/``columns``/``formats``/
    ``align`` of the wrong length.
    """
    rows = [list(r) for r in rows]
    if not rows:
        raise ValueError("rows must hold at least one row")
    n = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != n:
            raise ValueError(f"rows[{i}] has {len(r)} cells, rows[0] has {n}")
    if columns is not None and len(columns) != n:
        raise ValueError(f"columns has {len(columns)} names for {n} columns")
    if isinstance(formats, str) or formats is None:
        fmts = [formats] * n
    else:
        fmts = list(formats)
        if len(fmts) != n:
            raise ValueError(f"formats has {len(fmts)} entries for {n} columns")
    if colors is not None:
        colors = [list(r) for r in colors]
        if len(colors) != len(rows) or any(len(c) != n for c in colors):
            raise ValueError("colors must have the shape of rows (one colour or None per cell)")
    if align is not None:
        if len(align) != n or any(a not in ("left", "right", "center") for a in align):
            raise ValueError(f"align must give 'left', 'right' or 'center' for each of the "
                             f"{n} columns, got {align!r}")
    cells = [[_cell_text(v, fmts[j]) for j, v in enumerate(r)] for r in rows]
    numeric = [all(c[j][1] or c[j][0] == "" for c in cells) for j in range(n)]
    aligns = list(align) if align is not None else [
        "right" if numeric[j] else "left" for j in range(n)]

    def td(i, j, text, tag="td"):
        style = [f"text-align:{aligns[j]}"]
        if numeric[j]:
            style.append("white-space:nowrap")
        bg = colors[i][j] if colors is not None else None
        if bg is not None:
            from matplotlib.colors import to_hex

            style += [f"background-color:{to_hex(_rgb(bg))}", f"color:{text_color_for(bg)}"]
        return f'<{tag} style="{";".join(style)}">{_html.escape(text)}</{tag}>'

    parts = ['<div class="rlhf-table-wrap" style="max-width:100%;overflow-x:auto">',
             '<table class="rlhf-table" style="border-collapse:collapse">']
    if caption:
        parts.append(f"<caption>{_html.escape(caption)}</caption>")
    if columns is not None:
        parts.append("<thead><tr>" + "".join(
            f'<th style="text-align:{aligns[j]}">{_html.escape(str(c))}</th>'
            for j, c in enumerate(columns)) + "</tr></thead>")
    parts.append("<tbody>")
    for i, r in enumerate(cells):
        parts.append("<tr>" + "".join(
            td(i, j, text, "th" if row_headers and j == 0 else "td")
            for j, (text, _) in enumerate(r)) + "</tr>")
    parts.append("</tbody></table></div>")
    # plain text: the same table with aligned columns
    grid = ([[str(c) for c in columns]] if columns is not None else []) + [
        [t for t, _ in r] for r in cells]
    widths = [max(len(g[j]) for g in grid) for j in range(n)]
    lines = [caption] if caption else []
    for g in grid:
        lines.append("  ".join(g[j].rjust(widths[j]) if aligns[j] == "right" else
                               g[j].ljust(widths[j]) for j in range(n)).rstrip())
    return Table("".join(parts), "\n".join(lines))


# --------------------------------------------------------------------------------------------
# source code
# --------------------------------------------------------------------------------------------

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const):`~?\.?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Yields|Raises|Attributes|Shapes|"
                      r"Example|Examples|Note|Notes|See also|Keyword arguments):\s*$")
_ITEM_SECTIONS = {"Args", "Arguments", "Parameters", "Attributes", "Raises", "Keyword arguments"}


def _inline(s: str) -> str:
    s = _MATH_ROLE.sub(lambda m: f"${m.group(1).strip()}$", s)
    s = _ROLE.sub(lambda m: f"`{m.group(1)}`", s)
    return _LITERAL.sub(lambda m: f"`{m.group(1)}`", s)


def _indented_block(lines: list[str], start: int) -> tuple[list[str], int]:
    """The indented lines after ``lines[start]`` (blank lines inside kept), dedented, and the
    index of the first line after them."""
    j, body = start + 1, []
    while j < len(lines) and (not lines[j].strip() or lines[j].startswith((" ", "\t"))):
        body.append(lines[j])
        j += 1
    while body and not body[-1].strip():
        body.pop()
    return textwrap.dedent("\n".join(body)).splitlines(), j


def _docstring_markdown(doc: str) -> str:
    """A reST / Google-style docstring as Markdown: ``:math:`x``` → ``$x$``, ``.. math::``
    blocks → ``$$``, double-backquoted literals and ``:func:`` roles → code, ``::`` and
    ``.. code-block::`` blocks → fenced code, ``Args:``-like sections → a bold heading and a
    bulleted item per argument, other sections (``Returns:``) → a bold heading and their text."""
    doc = inspect.cleandoc(doc)
    # a role or a literal that a line break splits is joined first, so that lines convert alone
    doc = re.sub(r":[\w:]+:`[^`]*`|``[^`]+``", lambda m: re.sub(r"\s*\n\s*", " ", m.group(0)), doc)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(_convert_lines(doc.splitlines()))).strip()


def _convert_lines(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith(".. math::"):
            body, i = _indented_block(lines, i)
            out += ["", "$$", *body, "$$", ""]
            continue
        if stripped.startswith((".. code-block::", ".. code::")) or (
                stripped.endswith("::") and not stripped.startswith("..")):
            lang = stripped.split("::", 1)[1].strip() if stripped.startswith("..") else ""
            if not stripped.startswith(".."):
                text = stripped[:-3] if stripped.endswith(" ::") else stripped[:-1]
                if text.strip():
                    out.append(_inline(text))
            body, i = _indented_block(lines, i)
            out += ["", f"```{lang or 'python'}", *body, "```", ""]
            continue
        m = _SECTION.match(stripped)
        if m and not lines[i].startswith((" ", "\t")):
            body, i = _indented_block(lines, i)
            out += ["", f"**{m.group(1)}**", ""]
            if m.group(1) in _ITEM_SECTIONS:
                for line in body:     # an item per line at the base indentation
                    if not line.strip():
                        continue
                    if line.startswith((" ", "\t")) and out and out[-1].startswith("- "):
                        out[-1] += " " + _inline(line.strip())
                    else:
                        out.append("- " + _inline(line.strip()))
                out.append("")
            else:
                out += _convert_lines(body) + [""]
            continue
        out.append(_inline(lines[i]) if stripped else "")
        i += 1
    return out


def _without_docstring(source: str) -> str:
    """``source`` (of one function or class) without its docstring."""
    source = textwrap.dedent(source)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or not node.body:
        return source
    first = node.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
            and isinstance(first.value.value, str)):
        return source
    lines = source.splitlines()
    del lines[first.lineno - 1:first.end_lineno]
    if len(node.body) == 1:   # a function that is only a docstring
        lines.insert(first.lineno - 1, " " * first.col_offset + "...")
    return "\n".join(lines).rstrip() + "\n"


class Source:
    """A function's source for display (returned by :func:`show_source`)."""

    def __init__(self, markdown: str, plain: str):
        self._markdown = markdown
        self._plain = plain

    def _repr_markdown_(self) -> str:
        return self._markdown

    def __repr__(self) -> str:
        return self._plain

    @property
    def markdown(self) -> str:
        return self._markdown


def show_source(obj: Callable | type, *, docstring: bool = True) -> Source:
    """Show the code of a function or class readably, in place of
    ``print(inspect.getsource(obj))``: the docstring as prose with typeset math (Sphinx
    ``:math:`` roles become ``$...$``), then the code without the docstring, highlighted.
    ``docstring=False`` shows the code alone.

    Returns a :class:`Source`: Markdown in Jupyter, on Colab and in the book; the raw source as
    plain text elsewhere. Raises ValueError when the source cannot be found (a built-in)."""
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError) as exc:
        raise ValueError(f"obj: no Python source for {obj!r} ({exc})") from None
    code = _without_docstring(source).rstrip()
    fence = "```" if "```" not in code else "~~~~"
    parts = []
    doc = inspect.getdoc(obj) if docstring else None
    if doc:
        parts.append(_docstring_markdown(doc))
    parts.append(f"{fence}python\n{code}\n{fence}")
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", "object"))
    md = '<div class="rlhf-source">\n\n' + "\n\n".join(parts) + "\n\n</div>"
    return Source(md, f"# {name}\n{textwrap.dedent(source).rstrip()}")
