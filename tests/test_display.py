"""rlhf_lab.course.display: figures sized for the book's column that carry the size of their
smallest text, tables that fit, and readable source. The book-level guards that use these are in
test_book.py."""

from __future__ import annotations

import ast
import io
import re
import struct

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlhf_lab.course import display  # noqa: E402
from rlhf_lab.course.display import (  # noqa: E402
    FIGURE_WIDTH,
    MIN_TEXT_PX,
    PNG_TEXT_KEY,
    contrast_ratio,
    diverging_colors,
    figsize,
    figure_png,
    png_text_chunks,
    show_source,
    smallest_text_px,
    subplots,
    table,
    text_color_for,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# -- figures ------------------------------------------------------------------------------------

def test_figsize_fits_the_column_and_refuses_panels_too_narrow_to_read():
    assert figsize() == (FIGURE_WIDTH, 2.6)
    assert figsize(3, 2, panel_height=2.0) == (FIGURE_WIDTH, 4.0)
    with pytest.raises(ValueError, match="more rows"):
        figsize(4)
    with pytest.raises(ValueError, match="width"):
        figsize(width=FIGURE_WIDTH + 1)
    with pytest.raises(ValueError, match="ncols"):
        figsize(0)


@pytest.mark.parametrize("n, rows, cols", [(1, 1, 1), (3, 1, 3), (4, 2, 3), (5, 2, 3), (7, 3, 3)])
def test_subplots_wraps_panels_into_rows(n, rows, cols):
    fig, axes = subplots(n, sharey=True)
    assert len(axes) == n == len(fig.axes)
    assert axes[0].get_gridspec().get_geometry() == (rows, cols)
    w, h = fig.get_size_inches()
    assert w == pytest.approx(FIGURE_WIDTH) and h == pytest.approx(2.6 * rows)
    fig, axes = subplots(4, ncols=2)
    assert axes[0].get_gridspec().get_geometry() == (2, 2)


def _ink_height(fig) -> int:
    """Rows of the rendered figure that hold any dark pixel (the figure holds one glyph)."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    dark = (rgba[..., :3].min(axis=-1) < 128).any(axis=1)
    return int(dark.sum())


@pytest.mark.parametrize("size, dpi", [(6, 100), (9, 100), (14, 100), (9, 200)])
def test_smallest_text_px_matches_the_rendered_glyphs(size, dpi):
    """Independent check: render one capital H alone and measure its ink. DejaVu Sans's cap
    height is 0.729 em, so the H is 0.729 × (the reported size in pixels) rows tall."""
    fig = plt.figure(figsize=(2, 1), dpi=dpi)
    fig.text(0.5, 0.5, "H", fontsize=size, family="DejaVu Sans", ha="center", va="center")
    reported = smallest_text_px(fig)
    assert reported == pytest.approx(size * dpi / 72)
    assert _ink_height(fig) == pytest.approx(0.729 * reported, abs=1.5)


def test_smallest_text_px_counts_only_text_that_is_drawn():
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot([0, 1], [0, 1])
    ax.tick_params(labelsize=11)
    ax.set_title("title", fontsize=12)
    hidden = ax.text(0.5, 0.5, "hidden", fontsize=3)
    hidden.set_visible(False)
    ax.text(0.2, 0.2, "", fontsize=2)                 # empty: nothing drawn
    ax.set_xlim(0, 1)
    assert smallest_text_px(fig) == pytest.approx(11 * 100 / 72)
    ax.legend(["a line"], fontsize=7)
    assert smallest_text_px(fig) == pytest.approx(7 * 100 / 72)
    empty = plt.figure()
    assert smallest_text_px(empty) is None


def test_figure_png_records_the_smallest_text_in_a_text_chunk():
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot([1, 2, 3])
    ax.tick_params(labelsize=8)
    data, meta = figure_png(fig)
    assert meta == {}
    chunks = png_text_chunks(data)
    assert float(chunks[PNG_TEXT_KEY]) == pytest.approx(8 * 100 / 72, abs=0.01)
    assert chunks["rlhf-dpi"] == "100"
    # an independent reader of the chunk: Pillow
    from PIL import Image

    assert Image.open(io.BytesIO(data)).text[PNG_TEXT_KEY] == chunks[PNG_TEXT_KEY]
    # hidpi: twice the pixels, shown at the same size, the text size in pixels of the PNG
    big, meta = figure_png(fig, hidpi=True)
    w1, h1 = struct.unpack(">II", data[16:24])
    w2, h2 = struct.unpack(">II", big[16:24])
    assert abs(w2 - 2 * w1) <= 2 and meta == {"width": w2 // 2, "height": h2 // 2}
    assert float(png_text_chunks(big)[PNG_TEXT_KEY]) == pytest.approx(2 * 8 * 100 / 72, abs=0.01)
    with pytest.raises(ValueError, match="not a PNG"):
        png_text_chunks(b"GIF89a")


def test_book_style_figures_fit_the_column_with_legible_text():
    display.use_book_style()
    try:
        fig, axes = subplots(5, sharey=True)
        for ax in axes:
            ax.plot([1, 3, 2], label="a curve")
            ax.set_xlabel("iteration")
            ax.set_title("a panel title")
        axes[0].legend()
        data, _ = figure_png(fig)
        width = struct.unpack(">II", data[16:24])[0]
        assert width <= display.COLUMN_PX, f"{width} px is wider than the column"
        assert float(png_text_chunks(data)[PNG_TEXT_KEY]) >= MIN_TEXT_PX
    finally:
        matplotlib.rcdefaults()
        matplotlib.use("Agg")


def test_book_style_makes_ipython_show_measured_pngs():
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        display.use_book_style()
        fig, ax = plt.subplots()
        ax.plot([1, 2])
        data, _ = shell.display_formatter.format(fig)
        png = data["image/png"]
        assert PNG_TEXT_KEY in png_text_chunks(png)
    finally:
        from matplotlib.figure import Figure

        shell.display_formatter.formatters["image/png"].pop(Figure, None)
        matplotlib.rcdefaults()
        matplotlib.use("Agg")


# -- tables -------------------------------------------------------------------------------------

def test_contrast_ratio_matches_published_values():
    # WCAG examples: black on white is 21:1, #777777 on white 4.48:1, #595959 on white 7.0:1
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
    assert contrast_ratio("#595959", "#ffffff") == pytest.approx(7.0, abs=0.01)


@pytest.mark.parametrize("bg", ["#67001f", "#b2182b", "#f7f7f7", "#2166ac", "#808080", "#777777",
                                "yellow", (0.5, 0.5, 0.5)])
def test_cell_text_colour_is_readable_on_any_background(bg):
    fg = text_color_for(bg)
    assert contrast_ratio(bg, fg) >= 4.5
    if bg == "#67001f":          # the dark red of a "+2.46" cell: white text, not black
        assert fg == "#ffffff"


def test_table_html_wraps_scrolls_and_colours_with_contrast():
    vals = [0.31, -1.2, 2.46]
    t = table([["log π_θ", -1.5, -0.4, -2.0], ["penalty", *vals]], ["", "Good", "day", "<EOS>"],
              colors=[[None] * 4, [None, *diverging_colors(vals)]], caption="per-token terms",
              formats=[None, "+.2f", "+.2f", "+.2f"], row_headers=True)
    html = t._repr_html_()
    assert html.startswith('<div class="rlhf-table-wrap" style="max-width:100%;overflow-x:auto">')
    assert "&lt;EOS&gt;" in html and "<caption>per-token terms</caption>" in html
    assert "+2.46" in html and "-1.20" in html and "<th " in html
    for bg, fg in re.findall(r"background-color:(#[0-9a-f]{6});color:(#[0-9a-f]{6})", html):
        assert contrast_ratio(bg, fg) >= 4.5, (bg, fg)
    assert len(re.findall(r"background-color", html)) == 3
    text = repr(t).splitlines()
    assert text[0] == "per-token terms" and "+2.46" in text[-1]
    assert len({len(line) for line in text[1:]}) <= 2        # aligned columns


def test_table_refuses_ragged_input():
    with pytest.raises(ValueError, match=r"rows\[1\]"):
        table([[1, 2], [3]])
    with pytest.raises(ValueError, match="columns"):
        table([[1, 2]], ["a"])
    with pytest.raises(ValueError, match="shape of rows"):
        table([[1, 2]], colors=[["red"]])
    with pytest.raises(ValueError, match="colour"):
        table([[1, 2]], colors=[["not-a-colour", None]])
    with pytest.raises(ValueError, match="align"):
        table([[1, 2]], align=["left"])


def test_table_formats_numbers_of_every_kind():
    import torch

    t = table([[np.float32(0.123456), torch.tensor(2.5), 7, True, None, "x"]])
    html = t.html
    assert ">0.1235<" in html and ">2.5<" in html and ">7<" in html and ">True<" in html


# -- source -------------------------------------------------------------------------------------

def _example(beta: float, mask=None) -> float:
    """Scale by :math:`\\beta` and return ``beta * 2``; see :func:`rlhf_lab.masked.masked_mean`.

    Args:
        beta: the KL coefficient :math:`\\beta \\geq 0`, a float that goes on for long enough
            to need a second line.
        mask: unused.

    Returns:
        The scaled value.
    """
    return beta * 2


def test_show_source_renders_the_docstring_as_prose_and_the_code_without_it():
    md = show_source(_example).markdown
    assert r"$\beta$" in md and ":math:" not in md and "``beta" not in md
    assert "`rlhf_lab.masked.masked_mean`" in md
    assert "- beta: the KL coefficient $\\beta \\geq 0$, a float that goes on for long enough " \
           "to need a second line." in md
    assert "**Returns**" in md
    code = re.search(r"```python\n(.*?)\n```", md, re.S).group(1)
    tree = ast.parse(code)
    fn = tree.body[0]
    assert ast.get_docstring(fn) is None and isinstance(fn.body[0], ast.Return)
    assert show_source(_example, docstring=False).markdown.count("Scale by") == 0
    assert "Scale by" in repr(show_source(_example))       # plain text: the raw source


def test_show_source_on_library_functions_parses_as_markdown_with_math():
    markdown_it = pytest.importorskip("markdown_it")
    dollarmath = pytest.importorskip("mdit_py_plugins.dollarmath")
    from rlhf_lab.objectives import ppo_clip_loss
    from rlhf_lab.sft import sft_loss

    parser = markdown_it.MarkdownIt("commonmark").use(dollarmath.dollarmath_plugin)
    for fn in (sft_loss, ppo_clip_loss):
        md = show_source(fn).markdown
        tokens = parser.parse(md)
        fences = [t for t in tokens if t.type == "fence"]
        assert len(fences) == 1 and fences[0].info == "python", fn.__name__
        ast.parse(fences[0].content)
        assert ":math:" not in md
    with pytest.raises(ValueError, match="obj"):
        show_source(len)
