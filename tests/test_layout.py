"""The package layout: the library apart from the course helpers, and one module map.

- every library module imports with sympy, matplotlib and ipywidgets missing (a plain
  ``pip install rlhf-lab`` gives a lean training library);
- no library module imports from ``rlhf_lab.course`` or ``rlhf_lab.derivations`` (the
  dependencies point one way: course -> library), checked on the source, so a lazy import
  inside a function counts too (the ``rlhf-ppo`` command line may load the course's offline
  models: it is an application on top of the library);
- the book's library page lists every module of the package, and the package docstring points to it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import rlhf_lab

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rlhf_lab"
COURSE_ONLY = ("rlhf_lab.course", "rlhf_lab.derivations")
APPLICATIONS = {"rlhf_lab/ppo/__main__.py"}  # the command line may load the course's offline models


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _library_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if not any(str(p.relative_to(ROOT)).startswith(c.replace(".", "/")) for c in COURSE_ONLY))


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


def test_library_never_imports_the_course():
    wrong = {}
    for path in _library_files():
        if str(path.relative_to(ROOT)) in APPLICATIONS:
            continue
        bad = sorted(m for m in _imported_modules(path) if m.startswith(COURSE_ONLY))
        if bad:
            wrong[str(path.relative_to(ROOT))] = bad
    assert not wrong, f"library modules importing course helpers: {wrong}"


def test_library_imports_without_the_course_extra():
    mods = sorted({_module_name(p) for p in _library_files()})
    code = ("import sys\n"
            "for name in ('sympy', 'matplotlib', 'ipywidgets'):\n"
            "    sys.modules[name] = None  # as if not installed\n"
            f"import importlib\nfor m in {mods!r}:\n    importlib.import_module(m)\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_every_module_is_in_the_module_map():
    page = (ROOT / "book" / "library.md").read_text(encoding="utf-8")
    modules = sorted({_module_name(p) for p in PACKAGE.rglob("*.py")} - {"rlhf_lab"})
    missing = [m for m in modules if f"`{m}`" not in page]
    assert not missing, f"book/library.md's module map does not list: {missing}"
    assert "book/library.md" in (rlhf_lab.__doc__ or "")


@pytest.mark.parametrize("name", sorted(rlhf_lab._SUBMODULES))
def test_lazy_submodules_resolve(name):
    assert getattr(rlhf_lab, name).__name__ == f"rlhf_lab.{name}"
