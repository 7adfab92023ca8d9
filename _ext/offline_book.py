"""A small Sphinx extension for a book that reads well offline (loaded from _config.yml).

- MathJax on every page, not only on pages whose Markdown has math: quiz outputs of
  ``rlhf_lab.course.exercises`` carry ``\\( ... \\)`` in raw HTML, which Sphinx cannot see.
- Each inline script once: sphinx-thebe registers its ``const THEBE_JS_URL = ...`` snippet twice
  under Jupyter Book 1, and the second copy throws "Identifier has already been declared".
"""

from __future__ import annotations


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


def setup(app):
    app.connect("builder-inited", _always_mathjax)
    app.connect("html-page-context", _dedupe_scripts, priority=999)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
