"""What every side-by-side benchmark here does the same way: find TRL's interpreters, wait for an
idle CPU, run one worker per subprocess and read its JSON line, time iterations, append JSON
lines to ``results/``, and take medians and ratios.

The machine these figures come from is shared, so a figure is only quoted as a ratio of runs
made side by side, alternating, each started on an idle CPU, with the CPU share that other
processes took during the run recorded next to it (``cpu_share_others``).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
TRL_DIR = HERE / "trl"
#: Where ``trl/make_venvs.sh`` puts TRL's environments by default (ignored by git).
VENVS = HERE / ".venvs"
TRL_VERSIONS = {"1.12": "trl-1.12", "1.16": "trl-1.16"}
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1",
}
NOT_YET = "not yet supported"


class NotYetSupported(Exception):
    """A mode that the library does not offer yet: the worker reports it instead of failing."""


THROUGHPUT_KEYS = ("seconds_per_iteration", "episodes_per_second", "tokens_generated_per_second", "peak_rss_mb",
                   "cpu_seconds_per_iteration", "seconds_per_iteration_min")


def add_run_options(ap, trl_version: str, results_file: str, runs: int = 3, iterations: int = 10) -> None:
    """The options every side-by-side script shares (a worker's iteration count, runs, threads,
    TRL's interpreter, waiting for an idle CPU, where the lines go)."""
    from argparse import SUPPRESS

    ap.add_argument("iterations_pos", nargs="?", type=int, help=SUPPRESS)
    ap.add_argument("--runs", type=int, default=runs, help="runs of each side, in alternating order")
    ap.add_argument("--iterations", type=int, default=iterations, help="iterations per run (the first is warm-up)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every run")
    ap.add_argument("--trl-python", type=Path, default=None,
                    help=f"TRL {trl_version}'s interpreter (default $TRL_PYTHON_{trl_version.replace('.', '_')} or "
                         f"benchmarks/.venvs/{TRL_VERSIONS[trl_version]}/bin/python)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to this many s for idle CPUs before each run")
    ap.add_argument("--out", type=Path, default=RESULTS / results_file, help="JSON lines are appended here")


def set_offline() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def trl_python(version: str, given: Optional[Path] = None) -> Path:
    """The interpreter of TRL ``version``'s environment: ``given``, else ``$TRL_PYTHON_1_12`` /
    ``$TRL_PYTHON_1_16``, else ``benchmarks/.venvs/trl-<version>/bin/python``."""
    if given is not None:
        return Path(given)
    env = os.environ.get("TRL_PYTHON_" + version.replace(".", "_"))
    if env:
        return Path(env)
    return VENVS / TRL_VERSIONS[version] / "bin" / "python"


def require_python(path: Path, version: str) -> Path:
    if not Path(path).exists():
        raise SystemExit(f"no interpreter at {path} for TRL {version}: create the environments with "
                         f"`bash benchmarks/trl/make_venvs.sh` (see benchmarks/README.md) or pass --trl-python")
    return Path(path)


def worker_env() -> dict:
    """The environment of a worker subprocess: offline, and this checkout's ``rlhf_lab`` first."""
    path = os.pathsep.join(p for p in (str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **OFFLINE_ENV, "PYTHONPATH": path}


# ----------------------------------------------------------------------------- the CPU
def _cpu_jiffies() -> tuple[int, int]:
    """(total, busy) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields), sum(fields) - idle


def wait_for_idle_cpu(max_wait_s: float, window_s: float = 3.0, threshold: float = 0.10) -> Optional[float]:
    """Block until the CPUs are at least 90 % idle over ``window_s`` (or ``max_wait_s`` passed);
    returns the busy share of the last window (``None`` when not waiting, or where /proc/stat is missing)."""
    if max_wait_s <= 0 or not Path("/proc/stat").exists():
        return None
    give_up = time.monotonic() + max_wait_s
    while True:
        total0, busy0 = _cpu_jiffies()
        time.sleep(window_s)
        total1, busy1 = _cpu_jiffies()
        busy = (busy1 - busy0) / max(1, total1 - total0)
        if busy < threshold or time.monotonic() > give_up:
            return round(busy, 3)


class RunConditions:
    """How busy the machine was around a timed block: the 1-minute load average before and after,
    and the share of all CPUs that *other* processes used during it (a run that a neighbour
    shared is slower for reasons that have nothing to do with it)::

        with RunConditions() as conditions:
            trainer.train()
        line.update(conditions.fields())
    """

    def __enter__(self) -> "RunConditions":
        self.load_before = os.getloadavg()[0]
        self._t, self._cpu = time.perf_counter(), time.process_time()
        self._busy = _cpu_jiffies()[1] if Path("/proc/stat").exists() else None
        return self

    def __exit__(self, *exc) -> None:
        self.load_after = os.getloadavg()[0]
        self.others = None
        if self._busy is not None:
            wall = time.perf_counter() - self._t
            busy_s = (_cpu_jiffies()[1] - self._busy) / os.sysconf("SC_CLK_TCK")
            mine = time.process_time() - self._cpu
            self.others = round(max(0.0, (busy_s - mine) / (wall * (os.cpu_count() or 1))), 3)

    def fields(self) -> dict:
        return {"loadavg_1min_before_after": [round(self.load_before, 2), round(self.load_after, 2)],
                "cpu_share_others": self.others}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (``ru_maxrss``), interpreter and imports included."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


# ----------------------------------------------------------------------------- iterations
class IterationClock:
    """Wall and CPU time stamps at the start of a run and at the end of every iteration."""

    def __init__(self) -> None:
        self.wall: List[float] = []
        self.cpu: List[float] = []

    def tick(self, *_args, **_kwargs) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    @staticmethod
    def _gaps(stamps: Sequence[float]) -> List[float]:
        return [b - a for a, b in zip(stamps[:-1], stamps[1:])]

    def summary(self, episodes_per_iteration: int, tokens_per_iteration: float) -> dict:
        """Seconds per iteration = median over iterations 2.. (the first is warm-up)."""
        per_iter, cpu_iter = self._gaps(self.wall), self._gaps(self.cpu)
        if len(per_iter) < 2:
            raise ValueError("need at least 2 iterations: the first one is warm-up")
        steady = per_iter[1:]
        med = statistics.median(steady)
        return {
            "seconds_per_iteration": round(med, 4),
            "episodes_per_second": round(episodes_per_iteration / med, 3),
            "tokens_generated_per_second": round(tokens_per_iteration / med, 1),
            "seconds_per_iteration_min": round(min(steady), 4),
            "first_iteration_seconds": round(per_iter[0], 4),
            "cpu_seconds_per_iteration": round(statistics.median(cpu_iter[1:]), 4),
            "iteration_seconds": [round(x, 4) for x in per_iter],
        }


class Spans:
    """Time spent inside wrapped callables, as ``(label, start, end, grad_enabled)`` records.

    ``wrap(owner, "name", label)`` replaces ``owner.name`` by a timed pass-through (same
    arguments, same result), so a trainer's own methods or module functions can be timed
    without changing what they do."""

    def __init__(self) -> None:
        self.records: List[tuple] = []

    def wrap(self, owner, attr: str, label: str) -> None:
        import torch

        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.records.append((label, t0, time.perf_counter(), torch.is_grad_enabled()))

        setattr(owner, attr, timed)

    def between(self, lo: float, hi: float, label: str, grad: Optional[bool] = None) -> List[tuple]:
        return [r for r in self.records if r[0] == label and lo <= r[1] < hi and (grad is None or r[3] == grad)]

    def seconds(self, lo: float, hi: float, label: str, grad: Optional[bool] = None) -> float:
        return sum(end - start for _, start, end, _ in self.between(lo, hi, label, grad))


def median_phases(rows: Sequence[Dict[str, float]], skip_first: bool = True) -> Dict[str, float]:
    """Per-phase medians over iterations (without the warm-up one), or over runs (``skip_first=False``)."""
    rows = list(rows[1:] if skip_first and len(rows) > 1 else rows)
    return {key: round(statistics.median(r[key] for r in rows), 4) for key in rows[0]} if rows else {}


def learning_summary(scores: Sequence[float], kls: Optional[Sequence[float]] = None, k: int = 5) -> dict:
    out = {"score_first5": round(statistics.fmean(scores[:k]), 4), "score_last5": round(statistics.fmean(scores[-k:]), 4)}
    out["gain"] = round(out["score_last5"] - out["score_first5"], 4)
    if kls:
        out["kl_last5"] = round(statistics.fmean(kls[-k:]), 4)
    return out


# ----------------------------------------------------------------------------- subprocesses and lines
def run_worker(cmd: Sequence, timeout_s: float = 3600) -> dict:
    """Run one worker, return the last JSON line it printed; a failure says which command and why."""
    cmd = [str(c) for c in cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"worker timed out after {timeout_s:.0f} s: {' '.join(cmd)}") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"worker failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


def print_line(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


class JsonLines:
    """Prints each line and appends it to ``path`` (``None``: print only)."""

    def __init__(self, path: Optional[Path]):
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lines: List[dict] = []

    def __call__(self, obj: dict) -> dict:
        self.lines.append(obj)
        print_line(obj)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(obj) + "\n")
        return obj


def git_revision() -> Optional[dict]:
    """Which code a figure comes from: the checkout's commit, the last commit that changed
    ``rlhf_lab/``, and whether ``rlhf_lab/`` or the benchmark scripts had uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        if not head:
            return None
        return {"commit": head, "rlhf_lab_commit": git("log", "-1", "--format=%h", "--", "rlhf_lab"),
                "dirty": bool(git("status", "--porcelain", "--", "rlhf_lab", "benchmarks", ":!benchmarks/results"))}
    except (OSError, subprocess.SubprocessError):
        return None


def alternate(sides: Sequence[str], runs: int) -> Iterable[tuple[int, str]]:
    """(run, side) in alternating order: A B, B A, A B, ... so that a slow spell hits both sides."""
    for run in range(runs):
        order = list(sides) if run % 2 == 0 else list(reversed(sides))
        for side in order:
            yield run, side


def alternating_runs(cmds: Dict[str, Sequence], runs: int, emit: "JsonLines", wait_quiet: float,
                     **fields) -> Dict[str, List[dict]]:
    """Run each side's command ``runs`` times in alternating order (see :func:`alternate`), each on an
    idle CPU when ``wait_quiet`` > 0; every result line gets ``fields`` and is emitted. Returns the
    lines by side."""
    raw: Dict[str, List[dict]] = {side: [] for side in cmds}
    for run, side in alternate(list(cmds), runs):
        busy = wait_for_idle_cpu(wait_quiet)
        res = run_worker(cmds[side])
        res.update(run=run, kind="throughput_run", cpu_busy_before=busy, **fields)
        raw[side].append(emit(res))
    return raw


def learning_runs(cmds: Dict[str, Sequence], emit: "JsonLines", wait_quiet: float, **fields) -> dict:
    """One learning run per side; emits each run's scores and returns the first/last-5 summary per
    side (or its status when the side cannot run it yet)."""
    learned = {}
    for side, cmd in cmds.items():
        wait_for_idle_cpu(wait_quiet)
        res = run_worker(cmd)
        if res.get("status", "ok") != "ok":
            learned[side] = {"status": res["status"], "reason": res.get("reason")}
            continue
        emit({"kind": "learning_run", "impl": res["impl"], "scores": res["scores"], "kls": res["kls"], **fields})
        learned[side] = learning_summary(res["scores"], res["kls"])
    return learned


def side_by_side(raw: Dict[str, List[dict]], ours: str, theirs: str, keys: Sequence[str],
                 faster: Callable[[dict], float] = lambda r: r["episodes_per_second"]) -> dict:
    """Medians of ``keys`` for each side, their ratios (ours / theirs) and the ratio of each pair."""
    mine, other = [r for r in raw.get(ours, []) if r.get("status", "ok") == "ok"], raw.get(theirs, [])
    out: dict = {"median": {}}
    for side, rows in ((ours, mine), (theirs, other)):
        if rows:
            out["median"][side] = {k: round(statistics.median(r[k] for r in rows), 4) for k in keys if k in rows[0]}
    if mine and other:
        a, b = out["median"][ours], out["median"][theirs]
        out["ratio"] = {k: round(a[k] / b[k], 3) for k in keys if k in a and k in b and b[k]}
        out["ratio_per_pair"] = [round(faster(x) / faster(y), 3) for x, y in zip(mine, other)]
    return out


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
