"""`ruff check .` is clean (issue 13): pyflakes, pycodestyle, import order, the line length.

The rules are in pyproject.toml ([tool.ruff]); ruff comes with the test extra, at the version of
requirements/lock.txt, so the result does not change with a new ruff release until `make lock`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    if "No module named ruff" in out.stderr:
        raise AssertionError("ruff is missing: it is in the test extra (make env installs it)")
    assert out.returncode == 0, f"ruff check . (fix with `ruff check --fix .`):\n{out.stdout}{out.stderr}"
