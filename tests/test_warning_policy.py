"""The warning policy of the library's tests (tests/_warning_policy.py), tested on its own.

Warnings caused by rlhf_lab's calls fail a test; warnings a dependency raises about its own
internals do not. The call chains below are built from code compiled under module names
(``rlhf_lab.…`` for ours, ``fakelib.…`` for a dependency), so each case is exactly the stack
shape it names; one case uses transformers' real ``deprecate_kwarg`` through ``nn.Module``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import _warning_policy as policy
import pytest
import torch

TESTS = Path(__file__).resolve().parent


def _module(name: str, source: str) -> dict:
    """Execute ``source`` as if it were the module ``name`` (its frames carry that name)."""
    namespace = {"__name__": name, "warnings": warnings, "logging": logging, "torch": torch}
    exec(compile(textwrap.dedent(source), f"/fake/{name.replace('.', '/')}.py", "exec"), namespace)
    return namespace


# A dependency ("fakelib") with the shapes seen in the wild.
FAKELIB = _module("fakelib.api", """
    import functools

    def deprecate_kwarg(old):
        # like transformers' deprecate_kwarg: stacklevel=2 names the next wrapper, still fakelib
        def wrap(func):
            @functools.wraps(func)
            def wrapped(*args, **kwargs):
                if old in kwargs:
                    warnings.warn(f"`{old}` is deprecated", FutureWarning, stacklevel=2)
                return func(*args, **kwargs)
            return wrapped
        return wrap

    def outer_wrapper(func):
        @functools.wraps(func)
        def run(*args, **kwargs):
            return func(*args, **kwargs)
        return run

    class Model(torch.nn.Module):
        @outer_wrapper
        @deprecate_kwarg("past")
        def forward(self, x, past=None, cache=None):
            return x

    def old_function():
        # like torch.load's FutureWarning: default stacklevel, it names its own line
        warnings.warn("old_function is deprecated", FutureWarning)

    def renamed(x):
        # a well-behaved deprecation: names its caller
        warnings.warn("renamed is deprecated", DeprecationWarning, stacklevel=2)
        return x

    def internal_use():
        # the dependency calling its own deprecated function: its business, not ours
        return old_function()

    def about_itself():
        warnings.warn("fakelib tuned itself", UserWarning)

    def c_level_inside():
        # a C++ warning (std of one element) raised while the dependency runs its own code
        return torch.ones(1).std()

    def log_deprecation():
        logging.getLogger("transformers.fake").warning("`past` is deprecated. Use `cache` instead.")

    def log_other():
        logging.getLogger("transformers.fake").warning("generation flags are not valid")
""")

OURS = _module("rlhf_lab._fake", """
    def model_call(model):
        return model(1, past=2)

    def model_call_new_api(model):
        return model(1, cache=2)

    def calls(fn):
        return fn()

    def calls_renamed(fn):
        return fn(1)

    def warns_itself():
        warnings.warn("rlhf_lab speaks", UserWarning)
""")

THEIRS = _module("otherpkg.user", """
    def model_call(model):
        return model(1, past=2)

    def calls(fn):
        return fn()
""")


def _policy_verdict(fn, *args):
    """Run ``fn`` under the policy: ('raised', offenses) or ('passed', offenses, recorded warnings)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with policy.installed() as recorder:
            try:
                fn(*args)
            except Warning:
                return "raised", recorder.take()
    return "passed", recorder.take(), [str(w.message) for w in seen]


def test_deprecated_kwarg_through_decorators_and_module_call_is_ours():
    verdict, offenses = _policy_verdict(OURS["model_call"], FAKELIB["Model"]())
    assert verdict == "raised"
    assert [o.category for o in offenses] == ["FutureWarning"]
    assert offenses[0].culprit.startswith("/fake/rlhf_lab/_fake.py:")


def test_the_same_call_from_another_package_is_not_ours_and_is_still_reported():
    verdict, offenses, seen = _policy_verdict(THEIRS["model_call"], FAKELIB["Model"]())
    assert (verdict, offenses) == ("passed", [])
    assert seen == ["`past` is deprecated"]  # handed on to whoever records warnings


def test_new_api_does_not_warn():
    assert _policy_verdict(OURS["model_call_new_api"], FAKELIB["Model"]()) == ("passed", [], [])


def test_deprecation_that_names_its_own_line_blames_the_caller():
    assert _policy_verdict(OURS["calls"], FAKELIB["old_function"])[0] == "raised"
    assert _policy_verdict(THEIRS["calls"], FAKELIB["old_function"])[:2] == ("passed", [])


def test_deprecation_that_names_its_caller():
    assert _policy_verdict(OURS["calls_renamed"], FAKELIB["renamed"])[0] == "raised"


def test_dependency_using_its_own_deprecated_api_is_not_ours():
    verdict, offenses, seen = _policy_verdict(OURS["calls"], FAKELIB["internal_use"])
    assert (verdict, offenses) == ("passed", [])
    assert seen == ["old_function is deprecated"]


def test_dependency_warning_about_itself_is_not_ours():
    assert _policy_verdict(OURS["calls"], FAKELIB["about_itself"])[:2] == ("passed", [])


def test_a_warning_issued_in_rlhf_lab_is_ours():
    assert _policy_verdict(OURS["warns_itself"])[0] == "raised"


def test_pytest_warns_still_asserts_our_own_warnings():
    with policy.installed() as recorder:
        with pytest.warns(UserWarning, match="rlhf_lab speaks"):
            OURS["warns_itself"]()
    assert recorder.take() == []


def test_c_level_warning_on_our_line_is_ours():
    # torch warns from C++ (std of one element); the issuing Python frame is ours
    ours = _module("rlhf_lab._fake_c", "def std_of_one():\n    return torch.ones(1).std()\n")
    assert _policy_verdict(ours["std_of_one"])[0] == "raised"


def test_c_level_warning_inside_a_dependency_is_not_ours():
    verdict, offenses, seen = _policy_verdict(OURS["calls"], FAKELIB["c_level_inside"])
    assert (verdict, offenses) == ("passed", [])
    assert len(seen) == 1 and "degrees of freedom" in seen[0]


def test_logged_deprecation_is_ours_when_we_call_it():
    assert _policy_verdict(OURS["calls"], FAKELIB["log_deprecation"])[0] == "raised"
    assert _policy_verdict(THEIRS["calls"], FAKELIB["log_deprecation"])[:2] == ("passed", [])
    assert _policy_verdict(OURS["calls"], FAKELIB["log_other"])[:2] == ("passed", [])


def test_policy_is_removed_after_the_block():
    before = warnings.showwarning
    with policy.installed():
        pass
    assert warnings.showwarning is before
    assert policy._log_handler not in logging.getLogger("transformers").handlers or policy._recorders


def test_transformers_deprecate_kwarg_through_a_real_module():
    deprecation = pytest.importorskip("transformers.utils.deprecation")

    class Model(torch.nn.Module):
        @deprecation.deprecate_kwarg("past_key_values", "999.0.0", new_name="cache")
        def forward(self, x, cache=None):
            return x

    ours = _module("rlhf_lab._fake_hf", "def step(model):\n    return model(1, past_key_values=None)\n")
    theirs = _module("otherpkg.hf", "def step(model):\n    return model(1, past_key_values=None)\n")
    assert _policy_verdict(ours["step"], Model())[0] == "raised"
    assert _policy_verdict(theirs["step"], Model())[:2] == ("passed", [])


def test_a_swallowed_warning_still_fails_the_test(tmp_path):
    """The pytest hooks: a test whose code catches the raised warning still fails; others pass."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from _warning_policy import pytest_runtest_makereport, pytest_runtest_protocol  # noqa: F401
    """))
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""
        import warnings

        def _as(module, source):
            ns = {"__name__": module, "warnings": warnings}
            exec(compile(source, "/fake/" + module.replace(".", "/") + ".py", "exec"), ns)
            return ns

        LIB = _as("rlhf_lab._inner", "def f():\\n    try:\\n        g()\\n    except Exception:\\n        pass\\n"
                  "def g():\\n    warnings.warn('old', FutureWarning)\\n")
        DEP = _as("fakelib.inner", "def h():\\n    warnings.warn('dep internal', FutureWarning)\\n")

        def test_swallowed():
            LIB["f"]()

        def test_third_party_only():
            DEP["h"]()

        def test_clean():
            pass
    """))
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    text = out.stdout + out.stderr
    assert "FAILED test_inner.py::test_swallowed" in text, text
    assert "PASSED test_inner.py::test_third_party_only" in text, text
    assert "PASSED test_inner.py::test_clean" in text, text
    assert "caused by /fake/rlhf_lab/_inner.py" in text, text
    assert "1 failed, 2 passed" in text, text
