"""rlhf_lab.reward_model: the Bradley–Terry loss and training to held-out accuracy."""

from __future__ import annotations

import math
import random

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from rlhf_lab.course.models import word_tokenizer
from rlhf_lab.reward_model import bradley_terry_loss, reward_accuracy, score_texts, train_reward_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def rm(tok, seed=0):
    cfg = GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2, num_labels=1,
                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(seed)
    m = GPT2ForSequenceClassification(cfg)
    m.loss_type = "ForSequenceClassification"
    return m


def pairs(n, seed):
    """People prefer polite answers: chosen contains 'thanks', rejected does not."""
    rng = random.Random(seed)
    words = "the a cat dog sun moon red blue big small see find like want".split()
    out = []
    for _ in range(n):
        prompt = " ".join(rng.choice(words) for _ in range(3))
        body = [rng.choice(words) for _ in range(4)]
        polite = body[:]
        polite.insert(rng.randrange(5), "thanks")
        out.append((prompt, " " + " ".join(polite), " " + " ".join(body)))
    return out


def test_bradley_terry_loss_matches_formula():
    c = torch.tensor([2.0, -1.0, 0.5, 30.0])
    r = torch.tensor([1.0, 1.0, 0.5, -30.0])
    loss, acc = bradley_terry_loss(c, r)
    expected = sum(math.log1p(math.exp(-(a - b))) for a, b in zip(c.tolist(), r.tolist())) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc.item() == 0.625  # 2 right, 1 wrong, 1 tie counted as a half: chance level for ties
    # invariant to adding a constant to every score
    assert bradley_terry_loss(c + 7, r + 7)[0].item() == pytest.approx(loss.item(), rel=1e-6)
    with pytest.raises(ValueError):
        bradley_terry_loss(c, r[:2])


def test_score_texts_is_independent_of_padding_side(tok):
    m = rm(tok).eval()
    texts = ["the cat", "the big red dog is happy", "hi"]
    left = score_texts(m, word_tokenizer(padding_side="left"), texts)
    right = score_texts(m, word_tokenizer(padding_side="right"), texts)
    alone = torch.cat([score_texts(m, tok, [t]) for t in texts])
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)


def test_reward_model_learns_preferences_held_out(tok):
    m = rm(tok)
    train, held_out = pairs(64, 0), pairs(40, 1)
    before = reward_accuracy(m, tok, held_out)
    hist = train_reward_model(m, tok, train, epochs=4, batch_size=16, learning_rate=3e-3, progress=False, device="cpu")
    after = reward_accuracy(m, tok, held_out)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert after >= 0.9 and after > before
    assert not m.training


def test_reward_model_errors(tok):
    with pytest.raises(ValueError, match="pairs"):
        train_reward_model(rm(tok), tok, [], progress=False)
    with pytest.raises(ValueError, match=r"pairs\[0\]"):
        train_reward_model(rm(tok), tok, [("a", "b")], progress=False)
    with pytest.raises(ValueError, match="key"):
        train_reward_model(rm(tok), tok, [{"prompt": "a", "chosen": "b"}], progress=False)
