"""Shared fixtures: a word-level tokenizer and a tiny GPT-2 (random init, built offline in ~0.1 s).

Kept small on purpose; other test files may use them:

- ``word_tok``: :func:`rlhf_lab.course.models.word_tokenizer` (left padding, ``<pad>`` id 0).
- ``tiny_lm``: :func:`rlhf_lab.course.models.tiny_causal_lm` on ``word_tok`` (2 layers, width 32),
  in eval mode. Session-scoped: do not train it in place (``copy.deepcopy`` it first).
- ``float_dtype``: parametrized over float32 and float64.
- ``device``: CPU, plus CUDA when available (CUDA cases skip otherwise).
- ``one_thread``: one intra-op torch thread for the test (training tests: deterministic and robust
  on a busy shared 2-core machine); use with ``pytest.mark.usefixtures("one_thread")``.
- ``host_syncs``: a context manager counting the reads of tensor values into Python
  (``bool(t)``, ``float(t)``, ``int(t)``, ``t.item()``, ``t.tolist()``), each a host-device
  synchronization on a GPU: ``with host_syncs() as reads: ...; assert reads.count == 0``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.fixture(scope="session")
def word_tok():
    return word_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm(word_tok):
    model = tiny_causal_lm(word_tok, n_layer=2, n_embd=32, n_head=4, n_positions=64, seed=0)
    model.eval()
    return model


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def float_dtype(request):
    return request.param


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class _Reads:
    count = 0


@pytest.fixture
def host_syncs(monkeypatch):
    @contextlib.contextmanager
    def counting():
        reads = _Reads()
        originals = {name: getattr(torch.Tensor, name)
                     for name in ("__bool__", "__float__", "__int__", "__index__", "item", "tolist")}

        def counted(original):
            def read(self, *args, **kwargs):
                reads.count += 1
                return original(self, *args, **kwargs)
            return read

        with monkeypatch.context() as patch:
            for name, original in originals.items():
                patch.setattr(torch.Tensor, name, counted(original))
            yield reads

    return counting
