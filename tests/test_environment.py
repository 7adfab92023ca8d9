"""pyproject.toml is the source of truth for dependencies; environment.yml must install the same."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
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


def test_environment_installs_the_package_itself():
    assert "-e ." in _environment_pip()


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


@pytest.mark.parametrize("extra", ["book", "test", "smollm"])
def test_makefile_installs_every_extra(extra):
    makefile = (ROOT / "Makefile").read_text()
    installs = re.search(r"pip install -q -e '\.\[([^\]]+)\]'", makefile)
    assert installs and extra in installs.group(1).split(","), f"make env does not install [{extra}]"
