"""rlhf_lab.dpo: DPO on a causal LM, checked against a plain loop over the tokens of each
response, finite differences on a float64 model, the log 2 at the reference, and learning on the
toy domain's preference pairs."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rlhf_lab.course import toy_domain as td
from rlhf_lab.course.models import tiny_causal_lm
from rlhf_lab.dpo import dpo, dpo_batch_loss, encode_pairs, pair_logprobs, preference_accuracy

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [("tell me about the city .", "the city is quiet .", "my city is slow today ."),
         ("describe the cat", "the cat is warm and happy .", "a cat ."),
         ("what is the river ?", "the river is calm .", "the river is loud , not calm .")]


@pytest.fixture(scope="module")
def tok():
    return td.tokenizer()


def model(tok, seed=0, dtype=torch.float32):
    return tiny_causal_lm(tok, n_layer=1, n_embd=32, n_head=2, seed=seed).to(dtype).eval()


def _loop_logprob(m, tok, prompt, response):
    """log pi(response + EOS | prompt), one unpadded sequence, one token at a time."""
    p = tok(prompt, add_special_tokens=True)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logits = m(input_ids=ids).logits[0]
    total = 0.0
    for k, token in enumerate(r):
        total += float(torch.log_softmax(logits[len(p) + k - 1].double(), -1)[token])
    return total


def test_pair_logprobs_against_a_loop_over_unpadded_sequences(tok):
    m = model(tok, seed=1)
    ids, mask, P = encode_pairs(tok, PAIRS)
    with torch.no_grad():
        chosen, rejected = pair_logprobs(m, ids, mask, P)
        mean_chosen, _ = pair_logprobs(m, ids, mask, P, average=True)
    for i, (p, c, r) in enumerate(PAIRS):
        assert float(chosen[i]) == pytest.approx(_loop_logprob(m, tok, p, c), abs=1e-4)
        assert float(rejected[i]) == pytest.approx(_loop_logprob(m, tok, p, r), abs=1e-4)
        n = len(tok(c, add_special_tokens=False)["input_ids"]) + 1
        assert float(mean_chosen[i]) == pytest.approx(float(chosen[i]) / n, rel=1e-6)


def test_at_the_reference_the_loss_is_log_two_and_the_rewards_are_zero(tok):
    m = model(tok)
    ids, mask, P = encode_pairs(tok, PAIRS)
    for smoothing in (0.0, 0.2):
        loss, stats = dpo_batch_loss(m, copy.deepcopy(m), ids, mask, P, beta=0.1, label_smoothing=smoothing)
        assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-6)
        assert float(stats["rewards/margins"]) == 0.0 and float(stats["rewards/accuracies"]) == 0.5
    loss, _ = dpo_batch_loss(m, copy.deepcopy(m), ids, mask, P, beta=0.5, loss_type="ipo")
    assert float(loss.detach()) == pytest.approx(1 / (2 * 0.5) ** 2, rel=1e-6)  # (0 - 1/(2 beta))^2


@pytest.mark.parametrize("kwargs", [dict(), dict(label_smoothing=0.1), dict(loss_type="ipo")])
def test_gradient_matches_finite_differences(tok, kwargs):
    torch.manual_seed(0)
    policy = model(tok, seed=2, dtype=torch.float64)
    ref = model(tok, seed=3, dtype=torch.float64)  # another model, so that the margins are not 0
    ids, mask, P = encode_pairs(tok, PAIRS)
    loss, _ = dpo_batch_loss(policy, ref, ids, mask, P, beta=0.3, **kwargs)
    loss.backward()
    h = 1e-6
    for name, param in list(policy.named_parameters())[:6:2]:
        for index in [(0,) * param.dim(), tuple(s - 1 for s in param.shape)]:
            with torch.no_grad():
                param[index] += h
                up = float(dpo_batch_loss(policy, ref, ids, mask, P, beta=0.3, **kwargs)[0])
                param[index] -= 2 * h
                down = float(dpo_batch_loss(policy, ref, ids, mask, P, beta=0.3, **kwargs)[0])
                param[index] += h
            assert float(param.grad[index]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9), name


# Held-out accuracy of the implicit reward after DPO on 200 toy-domain pairs (3 epochs, beta 0.1),
# from tests/measure_critic_free_thresholds.py --estimators dpo: seeds 0-7 x ATEN_CPU_CAPABILITY
# default/avx2, 1 thread, 16 runs: accuracy on the 48 held-out pairs min 0.8125, median 0.896,
# max 0.9375 (the reference itself scores 0.5); the last step's mean implicit-reward margin
# min 0.24, median 0.49, max 0.62. The threshold sits halfway between chance and the worst run.
DPO_HELD_OUT_MIN = 0.65


def dpo_run(tok, seed):
    pairs = td.preference_pairs(300, seed=0)
    train, held = pairs[:200], pairs[200:]
    policy = model(tok, seed=seed)
    ref = copy.deepcopy(policy).requires_grad_(False)
    before = preference_accuracy(policy, ref, tok, held)
    history = dpo(policy, tok, train, ref, beta=0.1, epochs=3, batch_size=16, learning_rate=3e-3, progress=False,
                  seed=seed)
    return {"before": before, "after": preference_accuracy(policy, ref, tok, held),
            "first_loss": history[0]["loss"], "last_margin": history[-1]["rewards/margins"]}


def test_held_out_preference_accuracy_rises(tok):
    out = dpo_run(tok, seed=0)
    assert out["before"] == 0.5 and out["first_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert out["after"] > DPO_HELD_OUT_MIN, out
    assert out["last_margin"] > 0


@pytest.mark.parametrize("call, word", [
    (lambda m, tok: dpo(m, tok, [], progress=False), "pairs"),
    (lambda m, tok: dpo(m, tok, [("a", "b")], progress=False), r"pairs\[0\]"),
    (lambda m, tok: dpo(m, tok, [{"prompt": "a", "chosen": "b"}], progress=False), "rejected"),
    (lambda m, tok: dpo(m, tok, PAIRS, beta=0.0, progress=False), "beta"),
    (lambda m, tok: dpo(m, tok, PAIRS, loss_type="hinge", progress=False), "loss_type"),
    (lambda m, tok: dpo(m, tok, PAIRS, epochs=0, progress=False), "epochs"),
    (lambda m, tok: dpo(m, tok, PAIRS, ref_policy=m, progress=False), "ref_policy"),
    (lambda m, tok: dpo(m, tok, PAIRS, label_smoothing=0.5, progress=False), "label_smoothing"),
])
def test_bad_input_names_the_argument(tok, call, word):
    with pytest.raises(ValueError, match=word):
        call(model(tok), tok)
