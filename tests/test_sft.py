"""rlhf_lab.sft: the SFT loss against a plain loop, padding invariance, and learning."""

from __future__ import annotations

import pytest
import torch

from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
from rlhf_lab.sft import encode_examples, sft, sft_loss

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


DATA = [("the cat is", "happy"), ("the dog is", "sad"), ("good morning", "good day to you"),
        ("thank you", "you are very welcome"), ("hello", "hi"), ("i like", "the big red book")]


def test_sft_loss_equals_plain_per_token_loop(tok):
    model = tiny_causal_lm(tok, n_embd=32, n_layer=1, n_head=2).eval()
    ids, mask, P = encode_examples(tok, DATA)
    got = sft_loss(model, ids, mask, P)
    # independent: run each example alone, unpadded, and sum -log p of response tokens + EOS
    total, count = 0.0, 0
    for prompt, response in DATA:
        p = tok(prompt)["input_ids"]
        r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        x = torch.tensor([p + r])
        with torch.no_grad():
            logits = model(x).logits[0]
        for i, t in enumerate(r):
            total -= torch.log_softmax(logits[len(p) - 1 + i], -1)[t].item()
            count += 1
    assert got.item() == pytest.approx(total / count, rel=1e-5)


def test_prompt_loss_counts_prompt_tokens_too(tok):
    model = tiny_causal_lm(tok, n_embd=32, n_layer=1, n_head=2).eval()
    ids, mask, P = encode_examples(tok, DATA)
    n_resp = sum(len(tok(r, add_special_tokens=False)["input_ids"]) + 1 for _, r in DATA)
    n_all = sum(len(tok(p)["input_ids"]) - 1 for p, _ in DATA) + n_resp
    with torch.no_grad():
        a = sft_loss(model, ids, mask, P) * n_resp
        b = sft_loss(model, ids, mask, P, prompt_loss=True) * n_all
    assert b.item() > a.item() > 0


def test_sft_learns_the_demonstrations(tok):
    model = tiny_causal_lm(tok, n_embd=32, n_layer=1, n_head=2)
    hist = sft(model, tok, DATA, epochs=60, batch_size=3, learning_rate=3e-3, progress=False, device="cpu")
    assert hist[-1]["loss"] < 0.25 * hist[0]["loss"]
    assert not model.training
    # greedy continuation of a training prompt reproduces its response and stops
    x = torch.tensor([tok("the cat is")["input_ids"]])
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=3, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    assert out[0, x.shape[1]:].tolist()[:2] == tok("happy", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_sft_errors(tok):
    model = tiny_causal_lm(tok, n_embd=32, n_layer=1, n_head=2)
    with pytest.raises(ValueError, match="examples"):
        sft(model, tok, [], progress=False)
    with pytest.raises(ValueError, match=r"examples\[0\]"):
        sft(model, tok, [("only one",)], progress=False)
    no_pad = word_tokenizer()
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="pad token"):
        sft(model, no_pad, DATA, progress=False)
