"""Test layers 4 and 5: the book builds with warnings as errors, and headless Chromium reads it.

One session fixture builds the book from scratch (``jupyter-book build -W -n --keep-going``) into
a temporary folder, from the notebooks' stored outputs. The browser tests then open that build
from ``file://`` with every network request blocked, as a reader without a connection would.

Without Chromium the browser tests are skipped with the reason; with
``RLHF_LAB_REQUIRE_BROWSER=1`` (set by ``.ci/run``) a missing browser is a failure. Set
``RLHF_LAB_BOOK_HTML=/path/to/_build/html`` to run the browser checks on an existing build
(faster while editing pages; the strict build test is then skipped), and
``RLHF_LAB_BOOK_SOURCE=/path`` to build a scratch copy of the book instead of the repository.

The whole file runs on one pytest-xdist worker (``--dist loadfile``), so the book is built once.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse
from urllib.request import url2pathname

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# The book's source folder: the repository, or (to try these tests on a scratch copy) another.
ROOT = Path(os.environ.get("RLHF_LAB_BOOK_SOURCE", REPO)).resolve()
ARTIFACTS = REPO / "test-artifacts"
REQUIRE_BROWSER = os.environ.get("RLHF_LAB_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-dev-shm-usage"]
COLAB = "https://colab.research.google.com/github/"

pytestmark = pytest.mark.book


# --------------------------------------------------------------------------------------------
# the pages the book must have, read from _toc.yml (known before anything is built)
# --------------------------------------------------------------------------------------------

def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", f) for f in files]


TOC_FILES = _toc_files()
NOTEBOOK_PAGES = [f for f in TOC_FILES if f.startswith("notebooks/")]


def _source_of(docname: str) -> Path | None:
    for ext in (".ipynb", ".md"):
        if (ROOT / (docname + ext)).exists():
            return ROOT / (docname + ext)
    return None


# --------------------------------------------------------------------------------------------
# layer 4: the strict build
# --------------------------------------------------------------------------------------------

def _jupyter_book() -> list[str] | None:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    return [found] if found else None


@pytest.fixture(scope="session")
def book_build(tmp_path_factory) -> dict:
    """Build the book fresh, warnings as errors; return the HTML folder and the build log."""
    existing = os.environ.get("RLHF_LAB_BOOK_HTML")
    if existing:
        html = Path(existing).resolve()
        if not (html / "index.html").exists():
            pytest.fail(f"RLHF_LAB_BOOK_HTML={existing} holds no built book (no index.html)")
        return {"html": html, "log": "", "returncode": 0, "reused": True}
    jb = _jupyter_book()
    if jb is None:
        pytest.fail("jupyter-book is not installed: run `make test` (it installs the book extra)")
    if not (ROOT / "_vendor" / "mathjax" / "tex-svg.js").exists():
        pytest.fail("MathJax is not vendored (_vendor/mathjax): run `make mathjax`, or `make test`")
    missing = [f for f in TOC_FILES if _source_of(f) is None]
    if missing:
        pytest.fail(f"_toc.yml lists pages that do not exist: {missing}")
    out = tmp_path_factory.mktemp("book")
    cmd = [*jb, "build", str(ROOT), "--builder", "html", "--path-output", str(out),
           "-W", "-n", "--keep-going", "--all"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"})
    log = proc.stdout + proc.stderr
    return {"html": out / "_build" / "html", "log": log, "returncode": proc.returncode,
            "reused": False}


def _warnings(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line) or "Traceback" in line]


def test_book_builds_with_warnings_as_errors(book_build):
    if book_build["reused"]:
        pytest.skip("RLHF_LAB_BOOK_HTML is set: checking an existing build, not building")
    problems = "\n".join(_warnings(book_build["log"])) or book_build["log"][-3000:]
    assert book_build["returncode"] == 0, f"the strict book build failed:\n{problems}"
    assert not _warnings(book_build["log"]), f"the build logged warnings:\n{problems}"


@pytest.fixture(scope="session")
def html_dir(book_build) -> Path:
    if book_build["returncode"] != 0:
        pytest.fail("the book did not build (see test_book_builds_with_warnings_as_errors)")
    return book_build["html"]


def test_build_is_self_contained(html_dir):
    """Everything a reader needs offline is inside the build folder."""
    assert (html_dir / "mathjax" / "tex-svg.js").exists(), "MathJax was not copied into the build"
    assert (html_dir / "searchindex.js").exists(), "no search index"
    for docname in TOC_FILES:
        assert (html_dir / f"{docname}.html").exists(), f"{docname} was not built"
    for docname in NOTEBOOK_PAGES:  # the download button serves the notebook itself
        assert (html_dir / "_sources" / f"{docname}.ipynb").exists()
    # Pages reference MathJax relative to themselves, so any depth works from file://.
    page = (html_dir / f"{NOTEBOOK_PAGES[0] if NOTEBOOK_PAGES else TOC_FILES[0]}.html").read_text()
    srcs = re.findall(r'<script[^>]+src="([^"]*mathjax/tex-svg\.js[^"]*)"', page)
    assert srcs and not any("://" in s for s in srcs), srcs
    for html in html_dir.rglob("*.html"):
        text = html.read_text(errors="replace")
        remote = re.findall(r'<script[^>]+src="(?:https?:)?//[^"]+"|<link[^>]+stylesheet[^>]+'
                            r'href="(?:https?:)?//[^"]+"', text)
        assert not remote, f"{html.relative_to(html_dir)} loads from the network: {remote}"


# --------------------------------------------------------------------------------------------
# layer 5: headless Chromium over file://
# --------------------------------------------------------------------------------------------

def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser",
                      "google-chrome", "google-chrome-stable"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _no_browser(reason: str):
    if REQUIRE_BROWSER:
        pytest.fail(f"browser layer required (RLHF_LAB_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(f"browser layer skipped: {reason}. Install it with "
                f"`apt-get install chromium` (Debian) or set CHROMIUM=/path/to/chrome; "
                f"CI (.ci/run) installs it and requires this layer")


@pytest.fixture(scope="session")
def browser():
    exe = _chromium()
    if exe is None:
        _no_browser("no Chromium executable found (chromium, chromium-browser, google-chrome)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the python package `playwright` is not installed")
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        except Exception as exc:  # noqa: BLE001
            _no_browser(f"Chromium at {exe} did not start ({str(exc).splitlines()[0]})")
        yield b
        b.close()


class Reader:
    """A browser tab that records console errors, page errors, failed and network requests."""

    def __init__(self, browser, width: int = 1280):
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(
            f"console error: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(
            f"failed request: {r.url} ({r.failure})"))

        def block(route):
            self.problems.append(f"network request from an offline page: {route.request.url}")
            route.abort()

        self.page.route(re.compile(r"^(https?|wss?)://"), block)

    def open(self, path: Path, query: str = ""):
        self.page.goto(path.as_uri() + query, wait_until="load")
        self.wait_for_math()

    def wait_for_math(self) -> str:
        return self.page.evaluate("""async () => {
            if (!window.MathJax || !window.MathJax.startup) return 'none';
            await window.MathJax.startup.promise;
            return 'done';
        }""")

    def close(self):
        self.context.close()


@pytest.fixture
def reader(browser):
    r = Reader(browser)
    yield r
    r.close()


# Text left outside typeset math and code: any TeX delimiter here was not processed by MathJax.
_VISIBLE_TEXT_JS = """() => {
    const body = document.querySelector('main') || document.body;
    const clone = body.cloneNode(true);
    clone.querySelectorAll('pre, code, script, style, textarea, mjx-container, .MathJax, '
        + 'mjx-assistive-mml, .highlight').forEach(e => e.remove());
    return clone.textContent;
}"""
_RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\\frac|\\mathrm|\\pi\b|\\log\b")

_PAGE_FACTS_JS = """async () => {
    for (const img of document.images) { img.loading = 'eager'; }
    await Promise.all(Array.from(document.images).map(
        img => img.decode ? img.decode().catch(() => null) : null));
    return {
        images: Array.from(document.images).map(img => ({
            src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0})),
        links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
        assets: Array.from(document.querySelectorAll('link[href], script[src]')).map(
            e => e.href || e.src),
        math: document.querySelectorAll('mjx-container').length,
        mathErrors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length,
        texSpans: document.querySelectorAll('.math').length,
        title: document.title,
    };
}"""


@functools.lru_cache(maxsize=None)
def _ids_in(path: Path) -> frozenset[str]:
    text = path.read_text(errors="replace")
    return frozenset(unquote(m) for m in re.findall(r'\s(?:id|name)="([^"]+)"', text))


def _broken_links(urls: list[str], html_dir: Path) -> list[str]:
    broken = []
    for url in sorted(set(urls)):
        parsed = urlparse(url)
        if parsed.scheme != "file":
            continue
        base, fragment = urldefrag(url)
        target = Path(url2pathname(urlparse(base).path))
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            broken.append(f"{url}: no such file")
            continue
        try:
            target.relative_to(html_dir)
        except ValueError:
            broken.append(f"{url}: points outside the built book")
            continue
        if fragment and target.suffix == ".html" and unquote(fragment) not in _ids_in(target):
            broken.append(f"{url}: no element with id {unquote(fragment)!r}")
    return broken


def _check_page(reader: Reader, html_dir: Path, docname: str) -> dict:
    path = html_dir / f"{docname}.html"
    reader.open(path)
    facts = reader.page.evaluate(_PAGE_FACTS_JS)
    failures = list(reader.problems)
    if facts["texSpans"]:
        if facts["math"] == 0:
            failures.append(f"{facts['texSpans']} math elements but nothing typeset by MathJax")
    leftover = _RAW_TEX.findall(reader.page.evaluate(_VISIBLE_TEXT_JS))
    if leftover:
        failures.append(f"raw TeX left in the rendered text: {sorted(set(leftover))}")
    if facts["mathErrors"]:
        failures.append(f"{facts['mathErrors']} MathJax errors")
    failures += [f"image did not load: {i['src']}" for i in facts["images"] if not i["ok"]]
    failures += _broken_links(facts["links"] + facts["assets"], html_dir)
    assert not failures, f"{docname}:\n  " + "\n  ".join(failures)
    return facts


@pytest.mark.browser
@pytest.mark.parametrize("docname", TOC_FILES)
def test_page_reads_offline(reader, html_dir, docname):
    """Opens from file://, no network, math typeset, images loaded, every internal link resolves."""
    facts = _check_page(reader, html_dir, docname)
    assert facts["title"], "page has no title"


@pytest.mark.browser
def test_index_and_genindex(reader, html_dir):
    reader.page.goto((html_dir / "index.html").as_uri(), wait_until="load")
    reader.page.wait_for_url(re.compile(re.escape(TOC_FILES[0]) + r"\.html"), timeout=10_000)
    _check_page(reader, html_dir, "genindex")


@pytest.mark.browser
def test_front_page_has_math_and_figure(reader, html_dir):
    facts = _check_page(reader, html_dir, TOC_FILES[0])
    assert facts["math"] >= 3, "the front page should show typeset equations"
    assert facts["images"], "the front page should show the course map"
    ARTIFACTS.mkdir(exist_ok=True)
    reader.page.screenshot(path=str(ARTIFACTS / "front_page.png"), full_page=True)


@pytest.mark.browser
@pytest.mark.parametrize("docname", NOTEBOOK_PAGES)
def test_notebook_page_exercises_and_launch(reader, html_dir, docname):
    """Each unit has exercises whose solutions stay hidden until toggled, and a Colab button that
    opens the Colab-ready copy (colab/NAME.ipynb, plain Markdown), which the page offers for
    download too, with the book's exercise numbers."""
    import json

    sys.path.insert(0, str(ROOT / "_ext"))
    import colab_convert

    reader.open(html_dir / f"{docname}.html")
    page = reader.page
    name = Path(docname).name
    copy_url = colab_convert.Book.load(ROOT).colab_url(name)
    assert copy_url.startswith(COLAB) and copy_url.endswith(f"/{colab_convert.COPIES_DIR}/{name}.ipynb")
    assert page.locator(f'a[href="{copy_url}"]').count() >= 1, \
        f"no Colab launch link to the Colab-ready copy ({copy_url})"
    assert (ROOT / colab_convert.COPIES_DIR / f"{name}.ipynb").exists(), "the copy Colab opens is not committed"
    assert page.locator(f'a[href^="{COLAB}"][href$="{docname}.ipynb"]').count() == 0, \
        "a Colab link still opens the MyST notebook, whose markup Colab shows raw"
    assert page.locator('a[href$="_sources/' + docname + '.ipynb"]').count() >= 1, \
        "no .ipynb download link"
    download = page.locator(f'a[href$="{colab_convert.COPIES_DIR}/{name}.ipynb"]')
    assert download.count() >= 1, "no download link to the Colab-ready copy"
    built_copy = html_dir / colab_convert.COPIES_DIR / f"{name}.ipynb"
    assert built_copy.exists(), "the Colab-ready copy is not in the built book"
    copy_cells = json.loads(built_copy.read_text(encoding="utf-8"))["cells"]
    copy_numbers = [n for c in copy_cells if c["cell_type"] == "markdown"
                    for n in re.findall(r"^#### Exercise (\d+)", "".join(c["source"]), re.M)]
    page_numbers = re.findall(r"Exercise (\d+)", " ".join(
        page.locator("div.exercise .admonition-title, div.exercise-start .admonition-title").all_text_contents()))
    assert copy_numbers == page_numbers, "the Colab-ready copy numbers its exercises unlike the book"
    exercises = page.locator("div.exercise, div.exercise-start")
    solutions = page.locator("div.solution, div.solution-start")
    assert exercises.count() >= 1, "no {exercise} block"
    assert solutions.count() >= 1, "no {solution} block"
    for i in range(solutions.count()):
        sol = solutions.nth(i)
        body = sol.locator("section").first
        assert not body.is_visible(), f"solution {i + 1} is visible before it is toggled"
        sol.locator(".admonition-title").first.click()
        body.wait_for(state="visible", timeout=5_000)
    if docname == NOTEBOOK_PAGES[0]:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{Path(docname).name}.png"), full_page=True)
    assert not reader.problems, reader.problems


def _check_multiple_choice(page, quiz) -> None:
    qid = quiz.get_attribute("id")
    radios = quiz.locator("input[type=radio]")
    right = [i for i in range(radios.count()) if radios.nth(i).get_attribute("data-correct") == "true"]
    wrong = [i for i in range(radios.count()) if i not in right]
    assert len(right) == 1 and wrong, f"{qid}: needs one right and at least one wrong option"
    feedback = quiz.locator(".rlhf-fb")
    assert all(not feedback.nth(i).is_visible() for i in range(feedback.count())), \
        f"{qid}: feedback shown before any choice"
    quiz.locator(f'label[for="{radios.nth(wrong[0]).get_attribute("id")}"]').click()
    fb = feedback.nth(wrong[0])
    assert fb.is_visible() and fb.inner_text().startswith("✘"), f"{qid}: no ✘ for a wrong pick"
    quiz.locator(f'label[for="{radios.nth(right[0]).get_attribute("id")}"]').click()
    assert not fb.is_visible(), f"{qid}: old feedback still shown"
    fb = feedback.nth(right[0])
    assert fb.is_visible() and fb.inner_text().startswith("✔"), f"{qid}: no ✔ for the right pick"


def _check_numeric(page, quiz) -> None:
    qid = quiz.get_attribute("id")
    answer = float(quiz.get_attribute("data-answer"))
    tol = float(quiz.get_attribute("data-tol"))
    field, status = quiz.locator("input[type=text]"), quiz.locator(".rlhf-status")
    field.fill(repr(answer + 10 * tol * max(1.0, abs(answer)) + 1))
    quiz.locator("button").click()
    assert status.inner_text().startswith("✘"), f"{qid}: a wrong number was accepted"
    field.fill(repr(answer))
    field.press("Enter")
    assert status.inner_text().startswith("✔"), f"{qid}: the right number was refused"


def _check_ordering(page, quiz) -> None:
    qid = quiz.get_attribute("id")
    rows = quiz.locator("li[data-pos]")
    n, status = rows.count(), quiz.locator(".rlhf-status")
    for i in range(n):  # every step one place off: all wrong
        rows.nth(i).locator("select").select_option(str(int(rows.nth(i).get_attribute("data-pos")) % n + 1))
    quiz.locator("button").click()
    assert status.inner_text().startswith("✘"), f"{qid}: a wrong order was accepted"
    for i in range(n):
        rows.nth(i).locator("select").select_option(rows.nth(i).get_attribute("data-pos"))
    quiz.locator("button").click()
    assert status.inner_text().startswith("✔"), f"{qid}: the right order was refused"


@pytest.mark.browser
def test_quizzes_give_feedback_without_a_kernel(reader, html_dir):
    """Every static quiz in the book: a wrong answer gets ✘, the right one ✔; its math is typeset."""
    seen = {"rlhf-mc": 0, "rlhf-num": 0, "rlhf-order": 0}
    check = {"rlhf-mc": _check_multiple_choice, "rlhf-num": _check_numeric,
             "rlhf-order": _check_ordering}
    for docname in TOC_FILES:
        reader.open(html_dir / f"{docname}.html")
        for kind in seen:
            quizzes = reader.page.locator(f"div.rlhf-quiz.{kind}")
            for i in range(quizzes.count()):
                quiz = quizzes.nth(i)
                assert "\\(" not in quiz.text_content(), f"{docname}: math in a quiz was not typeset"
                quiz.scroll_into_view_if_needed()
                check[kind](reader.page, quiz)
                seen[kind] += 1
    assert not reader.problems, reader.problems
    assert seen["rlhf-mc"] >= 1, "the book has no multiple-choice quiz (rlhf_lab.course.exercises)"


@pytest.mark.browser
def test_search_works_offline(reader, html_dir):
    """Sphinx search loads its index with a <script> tag, so it works from file:// too."""
    reader.open(html_dir / "search.html", "?q=divergence")
    results = reader.page.locator("#search-results ul.search li")
    results.first.wait_for(timeout=15_000)
    assert results.count() >= 2
    hrefs = reader.page.eval_on_selector_all("#search-results ul.search li a", "as => as.map(a => a.href)")
    assert not _broken_links(hrefs, html_dir)
    assert not reader.problems, reader.problems


# --------------------------------------------------------------------------------------------
# layer 5b: legible at 100% zoom (issue 14). Each guard measures, in the rendered page, and names
# what fails where: the page, the section, the cell (its first line of code) and the numbers.
# --------------------------------------------------------------------------------------------

WIDE, PHONE = 1280, 390
MIN_TEXT_PX = 9.0          # CSS px: the smallest text a figure may show
PNG_TEXT_KEY = "rlhf-min-text-px"   # written by rlhf_lab.course.display.figure_png


@pytest.fixture
def phone_reader(browser):
    r = Reader(browser, width=PHONE)
    yield r
    r.close()


# Opens every hidden solution and <details>, so that what they hold is measured too, and gives
# each element a description of where it is: the section heading, the cell and its first line.
_PREPARE_JS = """() => {
    document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
    document.querySelectorAll('details').forEach(d => { d.open = true; });
    const cells = Array.from(document.querySelectorAll('article div.cell'));
    const heads = Array.from(document.querySelectorAll('article h1, article h2, article h3'));
    window.rlhfWhere = (el) => {
        let head = '';
        for (const h of heads) {
            if (h.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING)
                head = h.textContent.replace(/[#¶]/g, '').trim();
        }
        const cell = el.closest('div.cell');
        let what = 'prose';
        if (cell) {
            const pre = cell.querySelector('.cell_input pre');
            const lines = pre ? pre.textContent.split('\\n').map(l => l.trim())
                .filter(l => l && !l.startsWith('#')) : [];
            what = 'cell ' + (cells.indexOf(cell) + 1) + ': '
                + (lines.length ? lines[0].slice(0, 70) : '(input hidden)');
        }
        return (head ? '§ ' + head.slice(0, 60) + ' | ' : '') + what;
    };
    // what makes the page scroll sideways: the outermost elements past its right edge
    window.rlhfSticksOut = () => {
        const limit = document.documentElement.clientWidth + 1, found = [];
        const walk = (el) => {
            const style = getComputedStyle(el);
            if (style.position === 'fixed' || style.visibility === 'hidden' || style.display === 'none')
                return;                                  // off-canvas sidebars do not scroll the page
            if (el.getBoundingClientRect().right > limit && el.getClientRects().length) {
                const tag = el.tagName.toLowerCase() + (el.className && typeof el.className === 'string'
                    ? '.' + el.className.trim().split(/\\s+/).slice(0, 2).join('.') : '');
                found.push(tag + ' (right edge ' + Math.round(el.getBoundingClientRect().right)
                           + ' px) at ' + window.rlhfWhere(el));
                return;
            }
            if (['auto', 'scroll', 'hidden', 'clip'].includes(style.overflowX)) return;
            for (const c of el.children) walk(c);
        };
        for (const c of document.body.children) walk(c);
        return found.slice(0, 5);
    };
    return cells.length;
}"""


def _prepare(reader: Reader, docname: str, html_dir: Path) -> None:
    reader.open(html_dir / f"{docname}.html")
    reader.page.evaluate(_PREPARE_JS)
    reader.wait_for_math()


_MATH_SCALE_JS = """async () => {
    const tex = new Map();
    if (window.MathJax && MathJax.startup && MathJax.startup.document) {
        for (const item of Array.from(MathJax.startup.document.math))
            tex.set(item.typesetRoot, item.math);
    }
    const out = [];
    for (const c of document.querySelectorAll('article mjx-container')) {
        const svg = c.querySelector(':scope > svg');
        if (!svg || !(svg.getAttribute('width') || '').endsWith('ex')) continue;
        if (!svg.getClientRects().length) continue;             // not laid out (display: none)
        const probe = document.createElement('span');
        probe.style.cssText = 'display:inline-block;width:100ex;height:0;margin:0;padding:0;border:0';
        c.appendChild(probe);
        const ex = probe.getBoundingClientRect().width / 100;
        probe.remove();
        const natural = parseFloat(svg.getAttribute('width')) * ex;
        const shown = svg.getBoundingClientRect().width;
        const box = c.closest('div.math') || c.parentElement;
        const source = (tex.get(c) || '').trim();
        out.push({
            display: c.getAttribute('display') === 'true',
            natural: natural, shown: shown, column: box.clientWidth,
            multiline: /\\\\\\\\|\\\\begin\\{(aligned|align|gathered|array|split)/.test(source),
            tex: source.replace(/\\s+/g, ' ').slice(0, 90),
            where: window.rlhfWhere(c),
        });
    }
    return out;
}"""


def _math_problems(reader: Reader) -> list[str]:
    problems = []
    for m in reader.page.evaluate(_MATH_SCALE_JS):
        scale = m["shown"] / m["natural"] if m["natural"] else 1.0
        if scale < 0.995:
            problems.append(f"{m['where']}: math scaled to {scale:.0%} "
                            f"({m['natural']:.0f} px shown at {m['shown']:.0f} px): {m['tex']}")
        elif m["display"] and m["multiline"] and m["natural"] > m["column"] + 1:
            problems.append(f"{m['where']}: a multi-line display ({m['natural']:.0f} px) is wider "
                            f"than its column ({m['column']} px); show one equation per line "
                            f"(a derivation: Derivation.show()): {m['tex']}")
    return problems


@pytest.mark.browser
@pytest.mark.legibility
@pytest.mark.parametrize("docname", TOC_FILES)
def test_math_is_never_scaled_down_at_1280px(reader, html_dir, docname):
    """No MathJax container is drawn smaller than its natural size, and no multi-line display is
    wider than its column (a single equation wider than the column may scroll)."""
    _prepare(reader, docname, html_dir)
    problems = _math_problems(reader)
    assert not problems, f"{docname} at {WIDE} px:\n  " + "\n  ".join(problems)


@pytest.mark.browser
@pytest.mark.legibility
@pytest.mark.parametrize("docname", NOTEBOOK_PAGES)
def test_derivations_are_legible_on_a_phone(phone_reader, html_dir, docname):
    """The same at a 390 px wide window, where the derivations' reasons go under their equations."""
    _prepare(phone_reader, docname, html_dir)
    problems = _math_problems(phone_reader)
    overflow = phone_reader.page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    if overflow > 1:
        culprits = phone_reader.page.evaluate("() => window.rlhfSticksOut()")
        problems.append(f"the page scrolls sideways by {overflow} px: {culprits}")
    assert not problems, f"{docname} at {PHONE} px:\n  " + "\n  ".join(problems)


_FIGURES_JS = """async () => {
    const imgs = Array.from(document.querySelectorAll('article img'));
    for (const img of imgs) { img.loading = 'eager'; }
    await Promise.all(imgs.map(img => img.decode ? img.decode().catch(() => null) : null));
    return imgs.filter(img => img.getClientRects().length).map(img => ({
        src: img.currentSrc || img.src, natural: img.naturalWidth,
        shown: img.getBoundingClientRect().width, where: window.rlhfWhere(img)}));
}"""


def _svg_min_font_user_units(path: Path) -> tuple[float | None, float | None]:
    """(smallest font size of the SVG's text, width of its viewBox), in SVG user units."""
    text = path.read_text(errors="replace")
    sizes = [float(v) for v in re.findall(r'font-size[=:]\s*"?\s*([0-9.]+)(?:px)?', text)]
    view = re.search(r'viewBox="\s*[-0-9.]+[ ,]+[-0-9.]+[ ,]+([0-9.]+)', text)
    return (min(sizes) if sizes else None), (float(view.group(1)) if view else None)


def _figure_problems(figures: list[dict]) -> list[str]:
    sys.path.insert(0, str(REPO))
    from rlhf_lab.course.display import png_text_chunks

    problems = []
    for f in figures:
        path = Path(url2pathname(urlparse(f["src"]).path))
        scale = f["shown"] / f["natural"] if f["natural"] else 0.0
        name = path.name if len(path.name) < 24 else path.name[:12] + "…" + path.suffix
        if path.suffix.lower() == ".png":
            chunk = png_text_chunks(path.read_bytes()).get(PNG_TEXT_KEY)
            if chunk is None:
                problems.append(f"{f['where']}: figure {name} (shown at {scale:.0%}) carries no "
                                f"measured text size: draw it after "
                                f"rlhf_lab.course.display.use_book_style()")
                continue
            if chunk == "none":
                continue
            shown_px = float(chunk) * scale
        elif path.suffix.lower() == ".svg":
            size, view = _svg_min_font_user_units(path)
            if size is None:
                continue
            if not view:
                problems.append(f"{f['where']}: SVG {name} has text but no viewBox to scale it by")
                continue
            shown_px = size * f["shown"] / view
        else:
            problems.append(f"{f['where']}: figure {name}: cannot measure its text ({path.suffix})")
            continue
        if shown_px < MIN_TEXT_PX:
            problems.append(f"{f['where']}: figure {name}: smallest text {shown_px:.1f} CSS px "
                            f"(under {MIN_TEXT_PX:g}; shown at {scale:.0%} of "
                            f"{f['natural']} px)")
    return problems


@pytest.mark.browser
@pytest.mark.legibility
@pytest.mark.parametrize("docname", TOC_FILES)
def test_figure_text_is_at_least_9px_at_1280px(reader, html_dir, docname):
    """Every figure's smallest text, as displayed: the PNG's recorded smallest text size (pixels
    of the PNG, from its drawn Text artists; see rlhf_lab.course.display) times the scale at
    which the page shows the image (its rendered width / its natural width); for an SVG, its
    smallest font-size times rendered width / viewBox width."""
    _prepare(reader, docname, html_dir)
    problems = _figure_problems(reader.page.evaluate(_FIGURES_JS))
    assert not problems, f"{docname} at {WIDE} px:\n  " + "\n  ".join(problems)


_OVERFLOW_JS = """() => {
    const out = [];
    const seen = new Set();
    const check = (el, kind) => {
        if (seen.has(el) || !el.getClientRects().length) return;
        seen.add(el);
        const box = kind === 'table'
            ? (el.closest('.pst-scrollable-table-container, .rlhf-table-wrap') || el.parentElement)
            : el;
        const width = kind === 'table' ? el.getBoundingClientRect().width : el.scrollWidth;
        const room = box.clientWidth;
        if (width > room + 1) {
            let line = '';
            if (kind === 'text') {
                line = el.textContent.split('\\n').reduce((a, b) => b.length > a.length ? b : a, '');
            }
            out.push({kind: kind, width: Math.round(width), room: room,
                      chars: line.length, line: line.trim().slice(0, 60),
                      where: window.rlhfWhere(el)});
        }
    };
    document.querySelectorAll('article table').forEach(t => check(t, 'table'));
    document.querySelectorAll('.cell_output pre').forEach(p => check(p, 'text'));
    const page = document.documentElement.scrollWidth - document.documentElement.clientWidth;
    return {items: out, page: page};
}"""


@pytest.mark.browser
@pytest.mark.legibility
@pytest.mark.parametrize("docname", TOC_FILES)
def test_tables_and_text_outputs_fit_their_column_at_1280px(reader, html_dir, docname):
    """No table and no printed output is wider than its column (neither cut nor hidden behind a
    sideways scroll), and the page itself never scrolls sideways."""
    _prepare(reader, docname, html_dir)
    found = reader.page.evaluate(_OVERFLOW_JS)
    problems = []
    for o in found["items"]:
        detail = f"; longest line {o['chars']} characters: {o['line']!r}" if o["kind"] == "text" else ""
        problems.append(f"{o['where']}: {o['kind']} {o['width']} px wide in a {o['room']} px "
                        f"column{detail}")
    if found["page"] > 1:
        culprits = reader.page.evaluate("() => window.rlhfSticksOut()")
        problems.append(f"the page scrolls sideways by {found['page']} px: {culprits}")
    assert not problems, f"{docname} at {WIDE} px:\n  " + "\n  ".join(problems)


_LEFTOVERS_JS = """() => {
    const out = [];
    for (const el of document.querySelectorAll('article *')) {
        if (el.children.length || !/NBVAL/.test(el.textContent)) continue;
        out.push('NBVAL marker shown: ' + window.rlhfWhere(el));
    }
    for (const o of document.querySelectorAll('.cell_output .output')) {
        const pre = o.querySelector('pre');           // not the copy button's "Copy to clipboard"
        const t = (pre ? pre.textContent : o.textContent).trim().replace(/^Out\\[\\d*\\]:\\s*/, '');
        if (t === 'True' || t === 'False')
            out.push('bare ' + t + ' output: ' + window.rlhfWhere(o));
    }
    for (const pre of document.querySelectorAll('.cell_output pre')) {
        const bad = pre.textContent.split('\\n').find(l => l.trim().startsWith('\\u2718'));
        if (bad) out.push('a checker reports a wrong answer in the stored output (' + bad.trim().slice(0, 50)
                          + '): ' + window.rlhfWhere(pre));
    }
    return Array.from(new Set(out));
}"""


@pytest.mark.browser
@pytest.mark.legibility
@pytest.mark.parametrize("docname", TOC_FILES)
def test_pages_show_nothing_meant_for_a_kernel_or_a_test(reader, html_dir, docname):
    """No nbval marker (a cell tag does that job invisibly), no bare True/False output and no
    checker's ✘ line (the stored exercise is unanswered: its checker prints a neutral line and
    returns None)."""
    _prepare(reader, docname, html_dir)
    problems = reader.page.evaluate(_LEFTOVERS_JS)
    assert not problems, f"{docname}:\n  " + "\n  ".join(problems)


def test_unit_times_come_from_the_stored_notebook(tmp_path):
    """The front page's reading and running times (directive ``unit-times`` of _ext/offline_book):
    a notebook with 450 words of Markdown, 120 lines of code and two cells that ran 30 s and 45 s
    reads in 450/100 + 120/10 = 16.5 -> 20 min and runs in 75 s."""
    sys.path.insert(0, str(REPO / "_ext"))
    from offline_book import unit_times

    def cell(kind, source, start=None, seconds=None):
        c = {"cell_type": kind, "source": source, "metadata": {}}
        if start is not None:
            c["metadata"]["execution"] = {
                "iopub.execute_input": f"2026-01-01T00:00:{start:02d}.000000Z",
                "shell.execute_reply": f"2026-01-01T00:{(start + seconds) // 60:02d}:"
                                       f"{(start + seconds) % 60:02d}.000000Z"}
        return c

    nb = {"cells": [cell("markdown", "# The title\n" + "word " * 447),
                    cell("code", "x = 1\n" * 60, 0, 30), cell("code", "\n".join(["y = 2"] * 60), 30, 45),
                    cell("markdown", "")],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "unit.ipynb"
    path.write_text(json.dumps(nb))
    t = unit_times(path)
    assert (t["title"], t["words"], t["code_lines"]) == ("The title", 450, 120)
    assert t["reading_min"] == 20 and t["running_s"] == pytest.approx(75.0)
    nb["cells"][1]["metadata"] = {}
    nb["cells"][2]["metadata"] = {}
    path.write_text(json.dumps(nb))
    assert unit_times(path)["running_s"] is None
