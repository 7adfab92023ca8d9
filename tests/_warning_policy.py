"""`-W error`, limited to warnings that rlhf_lab's own code causes (issue 15).

The library's tests must fail on the day a dependency deprecates something rlhf_lab calls, and
must not fail when a dependency warns about its own internals. Neither of pytest's built-in
switches does that:

- ``-W error`` fails on every warning of every dependency;
- ``filterwarnings = error:::rlhf_lab`` matches the module the warning *names*, and the emitter
  often names the wrong frame. transformers 5.24 warns ``past_key_values is deprecated ... Use
  cache instead`` from ``deprecate_kwarg`` with ``stacklevel=2``, which names transformers' own
  decorator (``transformers/utils/output_capturing.py``), not our call in ``rlhf_lab/ppo/rollout.py``.

So the stack decides, at the moment the warning is issued (:func:`responsible_frame`):

1. the frame that issued the warning (called ``warnings.warn``, or ran the C operation that
   warned) is in ``rlhf_lab``: ours;
2. a deprecation (``DeprecationWarning``, ``PendingDeprecationWarning``, ``FutureWarning``, or a
   WARNING record matching "deprecat" from the Hugging Face loggers, as transformers also logs
   deprecations): the caller of the deprecated API is responsible, found from the frame the
   warning names (its ``stacklevel``):
   - a frame in another package: that frame;
   - the emitter's own line (``stacklevel=1``): the emitter's caller, as if it had used
     ``stacklevel=2`` (so a dependency calling its own deprecated function is not ours);
   - one of the emitter's own wrappers (transformers' decorators) or call plumbing, or nothing
     (a log record): the first frame outward that is neither in the emitter's package nor
     plumbing (``torch.nn.Module.__call__``, ``functools``, ``contextlib``, import machinery,
     accelerate's forward hooks).
   Ours when that frame is in ``rlhf_lab``;
3. any other warning from a dependency: ours only if it names an ``rlhf_lab`` frame.

Ours means: the warning is raised as an exception at that point (as ``-W error`` does), and the
test fails even if something swallowed that exception (``except Exception`` in a fallback).
A warning that rlhf_lab issues on purpose is asserted with ``pytest.warns`` (which records it
before this policy sees it). A third-party warning that this rule wrongly blames on us is
silenced by an ``ignore`` entry in pyproject's ``filterwarnings``, with the reason.

Tested in tests/test_warning_policy.py.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from types import FrameType
from typing import Iterator, Optional

LIBRARY = "rlhf_lab"
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
# Frames that only pass a call through: a deprecated argument given to a model's forward reaches
# it through torch's Module.__call__ (and accelerate's hooks when a device map is used).
PLUMBING = (
    "torch.nn.modules.module", "torch.utils._contextlib", "torch.autograd.grad_mode",
    "accelerate.hooks", "functools", "contextlib", "importlib", "importlib._bootstrap",
    "importlib._bootstrap_external",
)
# Loggers through which libraries report deprecations (transformers' `logger.warning_once`).
DEPRECATION_LOGGERS = ("transformers", "huggingface_hub", "datasets", "accelerate", "peft")
DEPRECATION_MESSAGE = re.compile(r"deprecat", re.IGNORECASE)
_SELF = __name__


def _module(frame: FrameType) -> str:
    return frame.f_globals.get("__name__") or ""


def _package(frame: FrameType) -> str:
    return _module(frame).partition(".")[0]


def _is_ours(frame: FrameType) -> bool:
    name = _module(frame)
    return name == LIBRARY or name.startswith(LIBRARY + ".")


def _is_plumbing(frame: FrameType) -> bool:
    return _module(frame) in PLUMBING


def _outward(frame: Optional[FrameType]) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def responsible_frame(emitter: FrameType, deprecation: bool, filename: Optional[str] = None,
                      lineno: Optional[int] = None, logged: bool = False) -> Optional[FrameType]:
    """The frame whose code caused a warning issued in ``emitter`` (see the module docstring).

    ``filename``/``lineno`` are what the warning names (its ``stacklevel``); a log record
    (``logged``) names nothing. Returns ``None`` when no frame qualifies.
    """
    if _is_ours(emitter):
        return emitter
    if logged:
        package = _package(emitter)
        return next((f for f in _outward(emitter) if _package(f) != package and not _is_plumbing(f)), None)
    named = None
    if filename is not None:
        named = next((f for f in _outward(emitter)
                      if f.f_code.co_filename == filename and f.f_lineno == lineno), None)
    if not deprecation:
        return named or emitter
    if named is None or named is emitter:
        # It named its own line: the function that warns is taken to be the deprecated API
        # (what stacklevel=2 would have named), so its caller is responsible.
        return next((f for f in _outward(emitter.f_back) if not _is_plumbing(f)), None)
    if _package(named) != _package(emitter) and not _is_plumbing(named):
        return named
    # It named one of its own wrappers (a decorator) or the call plumbing: walk out of both.
    package = _package(emitter)
    return next((f for f in _outward(named) if _package(f) != package and not _is_plumbing(f)), None)


def _emitter(skip: tuple[str, ...]) -> Optional[FrameType]:
    """The innermost frame outside this module and the modules in ``skip``."""
    return next((f for f in _outward(sys._getframe(1)) if _module(f) != _SELF and _module(f) not in skip), None)


@dataclass
class Offense:
    message: str
    category: str
    culprit: str  # file:line in rlhf_lab
    stack: str

    def __str__(self) -> str:
        return f"{self.category}: {self.message}\n  caused by {self.culprit}\n{self.stack}"


@dataclass
class Recorder:
    offenses: list[Offense] = field(default_factory=list)

    def take(self) -> list[Offense]:
        out, self.offenses = self.offenses, []
        return out


_recorders: list[Recorder] = []


def _record(culprit: FrameType, emitter: FrameType, category: type, message: str) -> None:
    where = f"{culprit.f_code.co_filename}:{culprit.f_lineno}"
    stack = "".join(traceback.format_stack(emitter, limit=12))
    _recorders[-1].offenses.append(Offense(message, category.__name__, where, stack))


class _DeprecationLogHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if not _recorders or not DEPRECATION_MESSAGE.search(record.getMessage()):
            return
        emitter = _emitter(skip=("logging", "transformers.utils.logging"))
        culprit = emitter and responsible_frame(emitter, deprecation=True, logged=True)
        if culprit is not None and _is_ours(culprit):
            _record(culprit, emitter, FutureWarning, f"[{record.name}] {record.getMessage()}")
            raise FutureWarning(f"[{record.name}] {record.getMessage()}")


_log_handler = _DeprecationLogHandler()


@contextlib.contextmanager
def installed() -> Iterator[Recorder]:
    """Apply the policy inside the block; yields the :class:`Recorder` of what it caught.

    Nested blocks record into the innermost recorder. Enter it inside pytest's own
    ``catch_warnings`` (which resets ``warnings.showwarning``), so a test's warnings still reach
    pytest's summary when they are not ours.
    """
    recorder = Recorder()
    previous = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        emitter = _emitter(skip=("warnings",))
        culprit = emitter and responsible_frame(emitter, issubclass(category, DEPRECATIONS), filename, lineno)
        if culprit is not None and _is_ours(culprit):
            _record(culprit, emitter, category, str(message))
            raise message if isinstance(message, Warning) else category(message)
        return previous(message, category, filename, lineno, file, line)

    _recorders.append(recorder)
    if len(_recorders) == 1:
        for name in DEPRECATION_LOGGERS:
            logging.getLogger(name).addHandler(_log_handler)
    warnings.showwarning = showwarning
    try:
        yield recorder
    finally:
        warnings.showwarning = previous
        _recorders.pop()
        if not _recorders:
            for name in DEPRECATION_LOGGERS:
                logging.getLogger(name).removeHandler(_log_handler)


# --- pytest hooks (imported by tests/conftest.py) -------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - imported outside pytest
    pytest = None

if pytest is not None:
    _RECORDER = pytest.StashKey[Recorder]()

    # trylast: runs inside pytest's own warnings wrapper (tryfirst), which resets showwarning.
    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_protocol(item, nextitem):
        with installed() as recorder:
            item.stash[_RECORDER] = recorder
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(item, call):
        report = yield
        recorder = item.stash.get(_RECORDER, None)
        offenses = recorder.take() if recorder is not None else []
        if offenses:
            text = "\n\n".join(str(o) for o in offenses)
            report.sections.append(("warnings caused by rlhf_lab (an error in its tests)", text))
            if report.passed:
                report.outcome = "failed"
                report.longrepr = (f"{len(offenses)} warning(s) caused by rlhf_lab's own calls "
                                   f"(tests/_warning_policy.py):\n\n{text}")
        return report
