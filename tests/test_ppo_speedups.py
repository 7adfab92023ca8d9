"""The trainer's two speed-ups change speed only: the fused tanh-GELU computes what transformers'
Python GELU computes, and the inverse-CDF sampler draws from the softmax it is given."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
from rlhf_lab.ppo import PPOConfig, PPOTrainer
from rlhf_lab.ppo import rollout as rollout_module
from rlhf_lab.ppo.modeling import TanhGELU, fuse_tanh_gelu
from rlhf_lab.ppo.rollout import sample_categorical

pytestmark = pytest.mark.usefixtures("one_thread")


def _python_gelus(model):
    from transformers.activations import FastGELUActivation, NewGELUActivation

    return [m for m in model.modules() if isinstance(m, (NewGELUActivation, FastGELUActivation))]


@pytest.mark.parametrize("activation", ["gelu_new", "gelu_fast"])
def test_fused_gelu_gives_the_same_logits_and_gradients(activation):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=97, n_layer=3, n_embd=48, n_head=4, n_positions=64,
                     activation_function=activation)
    python_model = GPT2LMHeadModel(cfg).eval()
    python_model.loss_type = "ForCausalLM"
    fused_model = copy.deepcopy(python_model)
    assert len(_python_gelus(python_model)) == 3

    assert fuse_tanh_gelu(fused_model) == 3
    assert _python_gelus(fused_model) == []
    assert sum(isinstance(m, TanhGELU) for m in fused_model.modules()) == 3
    assert fuse_tanh_gelu(fused_model) == 0  # idempotent
    assert fused_model.state_dict().keys() == python_model.state_dict().keys()

    ids = torch.randint(0, 97, (4, 20), generator=torch.Generator().manual_seed(1))
    outs = []
    for m in (python_model, fused_model):
        loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        outs.append((m(input_ids=ids).logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    (la, ga), (lb, gb) = outs
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-5)
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-4, atol=1e-6, msg=name)


def test_fuse_leaves_other_activations_and_non_modules_alone():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_layer=1, n_embd=16, n_head=2, activation_function="relu"))
    assert fuse_tanh_gelu(model) == 0
    assert fuse_tanh_gelu(lambda prompts, responses: [0.0] * len(responses)) == 0


def test_trainer_fuses_activations_only_inside_its_calls_and_gives_every_model_back_unchanged():
    """During an iteration every model runs the fused GELU (seen from inside the reward call);
    before and after, the caller's policy, reference, value and reward models hold their own
    Python GELU modules again (the trainer never leaves a caller's model rewritten)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tok = word_tokenizer()
    policy, ref = (tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2, seed=s) for s in (0, 1))
    value = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2,
                                                     num_labels=1, pad_token_id=tok.pad_token_id))
    originals = {id(m): list(_python_gelus(m)) for m in (policy, ref, value)}
    seen_during_the_call = []

    def reward(prompts, responses):
        seen_during_the_call.append([len(_python_gelus(m)) for m in (trainer.policy, trainer.ref_policy,
                                                                      trainer.value_model)])
        return [0.0] * len(responses)

    for fused in (True, False):
        seen_during_the_call.clear()
        trainer = PPOTrainer(policy, tok, reward, PPOConfig(batch_size=4, progress=False, device="cpu",
                                                            fused_activations=fused),
                             ref_policy=ref, value_model=value)
        trainer.train(["hello", "the cat is"], 2)
        assert seen_during_the_call == [[0, 0, 0]] * 2 if fused else [[2, 2, 1]] * 2
        for m in (policy, ref, value):
            assert list(_python_gelus(m)) == originals[id(m)]  # the very same module objects


def test_fused_tanh_gelu_restores_the_modules_after_an_exception():
    from rlhf_lab.ppo.modeling import fused_tanh_gelu

    tok = word_tokenizer()
    model = tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2)
    before = _python_gelus(model)
    with pytest.raises(RuntimeError, match="boom"):
        with fused_tanh_gelu(model, None, lambda p, r: [0.0]) as n:
            assert n == 2 and _python_gelus(model) == []
            with fused_tanh_gelu(model) as again:
                assert again == 0
            raise RuntimeError("boom")
    assert _python_gelus(model) == before


def test_sampler_frequencies_match_the_softmax():
    # Independent check: counts of 240k draws against the exact probabilities (binomial 5 sigma),
    # with a zero-probability token in the middle and one at the end of the vocabulary.
    logits = torch.tensor([1.0, -0.5, float("-inf"), 2.0, 0.3, -3.0, float("-inf")])
    p = torch.softmax(logits.double(), dim=0)
    n = 240_000
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_categorical(logits.expand(4000, -1), g) for _ in range(n // 4000)])
    counts = torch.bincount(draws, minlength=7).double()
    assert counts[2] == 0 and counts[6] == 0
    sigma = torch.sqrt(n * p * (1 - p))
    assert bool(((counts - n * p).abs() <= 5 * sigma + 1e-9).all()), (counts / n, p)


def test_sampler_on_a_peaked_row_and_rows_with_different_distributions():
    g = torch.Generator().manual_seed(3)
    logits = torch.tensor([[0.0, 40.0, 0.0], [float("-inf"), float("-inf"), 0.0], [5.0, float("-inf"), 5.0]])
    draws = torch.stack([sample_categorical(logits, g) for _ in range(2000)])
    assert bool((draws[:, 0] == 1).all())
    assert bool((draws[:, 1] == 2).all())
    frac0 = (draws[:, 2] == 0).double().mean().item()
    assert set(draws[:, 2].tolist()) <= {0, 2} and abs(frac0 - 0.5) < 5 * math.sqrt(0.25 / 2000)


def test_sampler_never_returns_a_zero_probability_token_when_u_rounds_up(monkeypatch):
    # The largest double below 1 times the total can round to the total itself; the row's last
    # tokens have probability 0, so the answer must be the last token that has some.
    def almost_one(shape, generator=None, dtype=None, device=None):
        return torch.full(shape, math.nextafter(1.0, 0.0), dtype=dtype, device=device)

    monkeypatch.setattr(rollout_module.torch, "rand", almost_one)
    logits = torch.tensor([[0.1, 0.2, 0.3, float("-inf"), float("-inf")], [0.0, 0.0, 0.0, 0.0, 0.0]])
    out = sample_categorical(logits, torch.Generator())
    assert out.tolist() == [2, 4]


def test_sampler_rejects_nan_logits():
    with pytest.raises(ValueError, match="NaN"):
        sample_categorical(torch.tensor([[0.0, float("nan")]]), torch.Generator())
    with pytest.raises(ValueError, match="NaN"):
        sample_categorical(torch.full((1, 3), float("-inf")), torch.Generator())


def test_sampler_is_repeatable_with_a_seeded_generator():
    logits = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))
    a = sample_categorical(logits, torch.Generator().manual_seed(5))
    b = sample_categorical(logits, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
