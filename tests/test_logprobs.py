"""rlhf_lab.logprobs against the chain rule computed prefix by prefix on a real transformers LM."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rlhf_lab.logprobs import (
    entropy_from_logits,
    position_ids_from_mask,
    response_logits,
    sequence_logprobs,
    token_logprobs,
)


# --------------------------------------------------------------------------- token_logprobs
def test_token_logprobs_against_explicit_softmax(float_dtype, device):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=g, dtype=float_dtype) * 3
    tokens = torch.randint(0, 5, (2, 3), generator=g)
    for temperature in (1.0, 0.5, 2.0):
        out = token_logprobs(logits.to(device), tokens.to(device), temperature).cpu()
        assert out.shape == (2, 3) and out.dtype == float_dtype
        for b in range(2):
            for t in range(3):
                z = [v / temperature for v in logits[b, t].tolist()]
                want = math.log(math.exp(z[tokens[b, t]]) / sum(math.exp(v) for v in z))
                assert out[b, t].item() == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_token_logprobs_half_precision_is_computed_in_float32():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 50, generator=g, dtype=torch.float64) * 5
    tokens = torch.randint(0, 50, (2, 4), generator=g)
    bf = logits.to(torch.bfloat16)
    out = token_logprobs(bf, tokens)
    assert out.dtype == torch.float32
    want = torch.log_softmax(bf.double(), -1).gather(-1, tokens[..., None])[..., 0]
    assert torch.allclose(out.double(), want, atol=1e-5)


def test_token_logprobs_is_stable_for_huge_logits():
    logits = torch.tensor([[[1e4, 0.0, -1e4]]])
    out = token_logprobs(logits, torch.tensor([[1]]))
    assert out.item() == pytest.approx(-1e4)


# --------------------------------------------------------------------------- entropy
def test_entropy_against_enumeration(float_dtype):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 6, generator=g, dtype=float_dtype)
    for temperature in (1.0, 0.7):
        out = entropy_from_logits(logits, temperature)
        assert out.shape == (2, 3) and out.dtype == float_dtype
        for b in range(2):
            for t in range(3):
                z = [math.exp(v / temperature) for v in logits[b, t].tolist()]
                s = sum(z)
                want = -sum((v / s) * math.log(v / s) for v in z)
                assert out[b, t].item() == pytest.approx(want, rel=1e-5)


def test_entropy_limits_and_impossible_actions():
    assert entropy_from_logits(torch.zeros(1, 1, 8)).item() == pytest.approx(math.log(8))
    inf = float("inf")
    out = entropy_from_logits(torch.tensor([[[0.0, 0.0, -inf, -inf]]]))
    assert out.item() == pytest.approx(math.log(2))
    assert entropy_from_logits(torch.tensor([[[1e4, 0.0]]])).item() == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- sequence_logprobs
PROMPTS = ["good day", "the cat is very happy today", "hello"]
RESPONSES = ["to you <eos>", "yes <eos>", "the dog and the cat see a big red bird <eos>"]


def _batch(tok):
    """Prompts left-padded to a common length P, responses right-padded after EOS (as the rollout makes them)."""
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    resp_ids = [tok(r, add_special_tokens=False)["input_ids"] for r in RESPONSES]
    P, R = max(map(len, prompt_ids)), max(map(len, resp_ids))
    pad = tok.pad_token_id
    ids, mask = [], []
    for p, r in zip(prompt_ids, resp_ids):
        ids.append([pad] * (P - len(p)) + p + r + [pad] * (R - len(r)))
        mask.append([0] * (P - len(p)) + [1] * (len(p) + len(r)) + [0] * (R - len(r)))
    return torch.tensor(ids), torch.tensor(mask), P, prompt_ids, resp_ids


def _chain_rule(model, prompt, response, temperature=1.0):
    """log pi(y_j | x, y_<j) for each j: each prefix scored alone, unpadded, one sequence at a time."""
    out = []
    with torch.no_grad():
        for j, token in enumerate(response):
            prefix = torch.tensor([prompt + response[:j]])
            logits = model(input_ids=prefix).logits[0, -1].double() / temperature
            out.append((logits[token] - torch.logsumexp(logits, 0)).item())
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sequence_logprobs_equals_the_chain_rule_prefix_by_prefix(tiny_lm, word_tok, temperature):
    ids, mask, P, prompt_ids, resp_ids = _batch(word_tok)
    assert len({len(p) for p in prompt_ids}) == 3  # mixed prompt lengths, so real left padding
    with torch.no_grad():
        out = sequence_logprobs(tiny_lm, ids, mask, P, temperature=temperature)
    assert out.shape == (3, ids.shape[1] - P) and out.dtype == torch.float32
    for b, (p, r) in enumerate(zip(prompt_ids, resp_ids)):
        want = _chain_rule(tiny_lm, p, r, temperature)
        assert out[b, : len(r)].tolist() == pytest.approx(want, abs=2e-5)
        assert (out[b, len(r):] == 0).all()  # padding after EOS
        # and the row sums to log pi(y | x)
        assert out[b].sum().item() == pytest.approx(sum(want), abs=1e-4)


def test_left_padding_needs_the_position_ids(tiny_lm, word_tok):
    # sanity check that the test above can fail: GPT-2 fed default positions scores padded rows differently
    ids, mask, P, prompt_ids, resp_ids = _batch(word_tok)
    with torch.no_grad():
        naive = tiny_lm(input_ids=ids, attention_mask=mask, position_ids=torch.arange(ids.shape[1])[None].expand_as(ids)).logits
        naive_lp = token_logprobs(naive[:, P - 1 : -1], ids[:, P:])
    want = _chain_rule(tiny_lm, prompt_ids[0], resp_ids[0])  # row 0 is left-padded
    assert max(abs(a - b) for a, b in zip(naive_lp[0, : len(want)].tolist(), want)) > 1e-3


def test_position_ids_from_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 3, 3]]


class _NoKeepWrapper(torch.nn.Module):
    """A causal LM whose forward has no ``logits_to_keep``: exercises the full-logits path."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)


def test_response_logits_shape_shift_and_both_paths(tiny_lm, word_tok):
    ids, mask, P, _, _ = _batch(word_tok)
    with torch.no_grad():
        kept = response_logits(tiny_lm, ids, mask, P)
        full = response_logits(_NoKeepWrapper(tiny_lm), ids, mask, P)
        ref = tiny_lm(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    assert kept.shape == (3, ids.shape[1] - P, len(word_tok))
    assert torch.allclose(kept, full, atol=1e-6)
    assert torch.allclose(kept, ref[:, P - 1 : -1], atol=1e-6)


def test_entropy_and_gradients_from_one_forward(tiny_lm, word_tok):
    ids, mask, P, _, resp_ids = _batch(word_tok)
    model = copy.deepcopy(tiny_lm)
    logp, ent = sequence_logprobs(model, ids, mask, P, return_entropy=True)
    with torch.no_grad():
        want_ent = entropy_from_logits(response_logits(model, ids, mask, P))
    resp_mask = mask[:, P:].bool()
    assert torch.allclose(ent[resp_mask], want_ent[resp_mask]) and (ent[~resp_mask] == 0).all()
    logp.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_float64_model_gives_float64(tiny_lm, word_tok):
    ids, mask, P, prompt_ids, resp_ids = _batch(word_tok)
    model = copy.deepcopy(tiny_lm).double()
    with torch.no_grad():
        out = sequence_logprobs(model, ids, mask, P)
    assert out.dtype == torch.float64
    assert out[2, : len(resp_ids[2])].tolist() == pytest.approx(_chain_rule(model, prompt_ids[2], resp_ids[2]), abs=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_sequence_logprobs_on_cuda(tiny_lm, word_tok):
    ids, mask, P, _, _ = _batch(word_tok)
    model = copy.deepcopy(tiny_lm).cuda()
    with torch.no_grad():
        cpu = sequence_logprobs(tiny_lm, ids, mask, P)
        gpu = sequence_logprobs(model, ids.cuda(), mask.cuda(), P).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: token_logprobs(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)), "tokens"),
        (lambda: token_logprobs(torch.zeros(2, 3, 5), torch.full((2, 3), 5)), "tokens"),
        (lambda: token_logprobs(torch.zeros(2, 3, 5), torch.zeros(2, 3), 1.0), "tokens"),
        (lambda: token_logprobs(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), 0.0), "temperature"),
        (lambda: entropy_from_logits(torch.zeros(2, 3, 5), -1.0), "temperature"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(response_start=0), "response_start"),
        (dict(response_start=9), "response_start"),
        (dict(response_start=2.5), "response_start"),
        (dict(attention_mask=torch.ones(2, 8)), "attention_mask"),
        (dict(temperature=0), "temperature"),
    ],
)
def test_sequence_logprobs_bad_input(tiny_lm, kwargs, word):
    args = dict(input_ids=torch.ones(2, 9, dtype=torch.long), attention_mask=torch.ones(2, 9), response_start=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        sequence_logprobs(tiny_lm, **args)
