"""A small Sphinx extension for a book that reads well offline (loaded from _config.yml).

- MathJax on every page, not only on pages whose Markdown has math: quiz outputs of
  ``rlhf_lab.course.exercises`` carry ``\\( ... \\)`` in raw HTML, which Sphinx cannot see.
- Each inline script once: sphinx-thebe registers its ``const THEBE_JS_URL = ...`` snippet twice
  under Jupyter Book 1, and the second copy throws "Identifier has already been declared".
- The ``unit-times`` directive: a table of each unit's reading time and running time, computed at
  build time from the stored notebooks (see :func:`unit_times`), so it never goes stale.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

# Reading speed for the book's text: technical prose with math is read far slower than the
# 200-250 words a minute of plain prose, and code is read line by line.
PROSE_WORDS_PER_MINUTE = 100
CODE_LINES_PER_MINUTE = 10


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for script in scripts:
        attrs = getattr(script, "attributes", {}) or {}
        key = (getattr(script, "filename", None) or "", attrs.get("body"), attrs.get("type"))
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    scripts[:] = unique


def _always_mathjax(app):
    app.set_html_assets_policy("always")


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def unit_times(path: Path) -> dict:
    """Reading and running time of one stored notebook.

    - ``reading_min``: words of its Markdown cells / ``PROSE_WORDS_PER_MINUTE`` plus lines of its
      code cells / ``CODE_LINES_PER_MINUTE``, in minutes, rounded up to a multiple of 5;
    - ``running_s``: the sum over code cells of the time each took when the stored outputs were
      made (nbclient records ``execute_input`` and ``execute_reply`` in each cell's metadata),
      or None when the notebook carries no timings;
    - ``title``: its first Markdown heading.
    """
    nb = json.loads(path.read_text(encoding="utf-8"))
    words = code_lines = 0
    running, timed = 0.0, False
    title = path.stem
    for cell in nb.get("cells", []):
        source = "".join(cell.get("source", []))
        if cell.get("cell_type") == "markdown":
            words += len(re.findall(r"\S+", source))
            if title == path.stem:
                m = re.search(r"^#\s+(.+)$", source, re.M)
                if m:
                    title = m.group(1).strip()
        elif cell.get("cell_type") == "code":
            code_lines += sum(1 for line in source.splitlines() if line.strip())
            ex = cell.get("metadata", {}).get("execution", {})
            if "iopub.execute_input" in ex and "shell.execute_reply" in ex:
                running += (_timestamp(ex["shell.execute_reply"])
                            - _timestamp(ex["iopub.execute_input"])).total_seconds()
                timed = True
    minutes = words / PROSE_WORDS_PER_MINUTE + code_lines / CODE_LINES_PER_MINUTE
    return {"title": title, "words": words, "code_lines": code_lines,
            "reading_min": 5 * max(1, math.ceil(minutes / 5)),
            "running_s": running if timed else None}


def _running_text(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    if seconds < 60:
        return "< 1 min"
    return f"{round(seconds / 60)} min"


class UnitTimes(SphinxDirective):
    """A table of units: one docname of a stored notebook per line of the directive's body."""

    has_content = True

    def run(self):
        rows = ["| Unit | Reading | Running |", "| --- | --- | --- |"]
        for line in self.content:
            docname = line.strip().strip("/")
            if not docname:
                continue
            path = Path(self.env.srcdir) / f"{docname}.ipynb"
            if not path.exists():
                raise self.error(f"unit-times: no stored notebook {docname}.ipynb")
            self.env.note_dependency(str(path))
            t = unit_times(path)
            rows.append(f"| {{doc}}`/{docname}` | {t['reading_min']} min "
                        f"| {_running_text(t['running_s'])} |")
        container = nodes.container(classes=["rlhf-unit-times"])
        self.state.nested_parse(StringList(rows, source="unit-times"), self.content_offset, container)
        return [container]


def setup(app):
    app.connect("builder-inited", _always_mathjax)
    app.connect("html-page-context", _dedupe_scripts, priority=999)
    app.add_directive("unit-times", UnitTimes)
    return {"version": "1.1", "parallel_read_safe": True, "parallel_write_safe": True}
