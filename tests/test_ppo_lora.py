"""LoRA through peft and gradient checkpointing (issue 18).

- the reference of a LoRA policy is the policy with its adapters disabled: its log-probabilities
  equal those of the base model saved before wrapping and loaded again, and no second copy exists;
- training changes the adapters and the value head only, every base weight stays bit-identical;
- save/load write the adapters (not the base weights) and resume exactly;
- gradient checkpointing (transformers' own) recomputes the layers in the backward pass and gives
  the gradients of a run without it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
from rlhf_lab.logprobs import sequence_logprobs
from rlhf_lab.ppo import PPOConfig, PPOTrainer
from rlhf_lab.ppo.modeling import checkpointing_active
from rlhf_lab.ppo.rewards import TargetWordReward

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["hello", "the cat is", "i see a", "good morning", "thank you", "the dog", "today is", "we like"]


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def tiny(tok, seed=0):
    return tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2, seed=seed)


def lora(model):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn", "c_proj", "c_fc"],
                             fan_in_fan_out=True, task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # peft draws lora_A from torch's global generator
        return peft.get_peft_model(model, config)


def cfg(**kw):
    base = dict(batch_size=8, response_length=6, learning_rate=1e-2, kl_coef=0.05, temperature=1.0, progress=False,
                num_mini_batches=2, device="cpu", seed=0, stop_token=None)
    return PPOConfig(**{**base, **kw})


def strip_time(ms):
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in ms]


def test_reference_is_the_policy_with_adapters_disabled(tok, tmp_path):
    base = tiny(tok)
    base.save_pretrained(tmp_path / "base")
    trainer = PPOTrainer(lora(base), tok, TargetWordReward("good"), cfg())
    trainer.train(PROMPTS, 3)  # the adapters move away from their no-op start (B = 0)

    # no second copy: every tensor the trainer holds for its policy and reference is the policy's
    assert trainer.ref_policy is trainer.policy
    assert trainer._ref_kind == "adapters_disabled"

    from transformers import GPT2LMHeadModel

    loaded = GPT2LMHeadModel.from_pretrained(tmp_path / "base").eval()
    ro = trainer.rollout(trainer.encode_prompts(PROMPTS))
    with torch.no_grad():
        ref = trainer._ref_logprobs(ro)
        expected = sequence_logprobs(loaded, ro.input_ids, ro.attention_mask, ro.response_start, temperature=1.0)
        adapted = sequence_logprobs(trainer.policy, ro.input_ids, ro.attention_mask, ro.response_start, temperature=1.0)
    torch.testing.assert_close(ref, expected * ro.mask, atol=1e-6, rtol=1e-6)
    # the adapters are on again after the reference forward, and they change the distribution
    torch.testing.assert_close(ro.logprobs, adapted * ro.mask, atol=1e-5, rtol=1e-5)
    assert float(((adapted - expected) * ro.mask).abs().max()) > 1e-3


def test_only_adapters_and_value_head_train(tok):
    policy = lora(tiny(tok))
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    trainer = PPOTrainer(policy, tok, TargetWordReward("good"), cfg())
    head_before = copy.deepcopy(trainer.value_head.state_dict())
    trainer.train(PROMPTS, 3)
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    adapters = {n for n in before if "lora_" in n}
    assert changed and changed <= adapters, sorted(changed - adapters)[:3]
    assert len(changed) >= len(adapters) // 2  # lora_A moves from the first step, lora_B too
    assert not torch.equal(trainer.value_head.weight, head_before["weight"])
    trainable = {id(p) for p in trainer._trainable}
    assert trainable == {id(p) for n, p in policy.named_parameters() if "lora_" in n} | \
        {id(p) for p in trainer.value_head.parameters()}


@pytest.mark.parametrize("reload", ["base model", "peft model"])
def test_lora_resume_equals_uninterrupted(tok, tmp_path, reload):
    c = cfg(adaptive_kl=True, kl_target=1.0, kl_horizon=50, gradient_accumulation_steps=2)
    reward = TargetWordReward("good")
    full = PPOTrainer(lora(tiny(tok)), tok, reward, c)
    ms_full = full.train(PROMPTS[:5], 4)

    part = PPOTrainer(lora(tiny(tok)), tok, reward, c)
    ms_a = part.train(PROMPTS[:5], 2)
    part.save(tmp_path / "ck.pt")
    state = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert state["policy"] and all("lora_" in k for k in state["policy"])  # the adapters, not the base weights
    assert state["ref"] is None and state["ref_kind"] == "adapters_disabled"
    del part
    base = tiny(tok)  # the same base weights; its adapters come from the checkpoint
    resumed = PPOTrainer.load(tmp_path / "ck.pt", base if reload == "base model" else lora(base), tok, reward)
    ms_b = resumed.train(PROMPTS[:5], 2)
    for x, y in zip(strip_time(ms_full), strip_time(ms_a + ms_b)):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k] == y[k] or (math.isnan(x[k]) and math.isnan(y[k])), k
    for (n, p), (_, q) in zip(full.policy.named_parameters(), resumed.policy.named_parameters()):
        assert torch.equal(p, q), n
    assert torch.equal(full.value_head.weight, resumed.value_head.weight)


def test_lora_checkpoint_refused_by_a_full_trainer_and_back(tok, tmp_path):
    reward = TargetWordReward("good")
    PPOTrainer(lora(tiny(tok)), tok, reward, cfg()).save(tmp_path / "lora.pt")
    PPOTrainer(tiny(tok), tok, reward, cfg()).save(tmp_path / "full.pt")
    full = PPOTrainer(tiny(tok), tok, reward, cfg())
    with pytest.raises(ValueError, match="LoRA adapters"):
        full.load_state_dict(torch.load(tmp_path / "lora.pt", weights_only=False))
    adapted = PPOTrainer(lora(tiny(tok)), tok, reward, cfg())
    with pytest.raises(ValueError, match="a full policy"):
        adapted.load_state_dict(torch.load(tmp_path / "full.pt", weights_only=False))


# ------------------------------------------------------------------------------------ gradient checkpointing
def _attention_calls(model):
    """Count the calls of every attention module: a checkpointed layer runs its children twice
    (forward, then again in the backward pass)."""
    calls = []
    for module in model.modules():
        if type(module).__name__ == "GPT2Attention":
            module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("adapters", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_recomputes_and_gives_the_same_update(tok, adapters):
    if adapters:
        pytest.importorskip("peft")
    wrap = lora if adapters else (lambda m: m)
    c = dict(num_ppo_epochs=1, num_mini_batches=1, max_grad_norm=None)
    plain = PPOTrainer(wrap(tiny(tok)), tok, TargetWordReward("good"), cfg(**c))
    checkpointed = PPOTrainer(wrap(tiny(tok)), tok, TargetWordReward("good"), cfg(gradient_checkpointing=True, **c))
    ro = plain.rollout(plain.encode_prompts(PROMPTS))
    calls = {name: _attention_calls(t.policy) for name, t in (("plain", plain), ("checkpointed", checkpointed))}
    m_plain, m_checkpointed = plain.learn(ro, PROMPTS), checkpointed.learn(ro, PROMPTS)
    # 2 layers; plain: one update forward (old log-probs come from sampling), plus the reference
    # forward when the reference is the same modules with the adapters disabled; checkpointed: the
    # update's layers run once more in the backward pass
    assert len(calls["plain"]) == 2 * (1 + adapters), calls
    assert len(calls["checkpointed"]) == len(calls["plain"]) + 2, calls
    assert m_checkpointed["policy/grad_norm"] == pytest.approx(m_plain["policy/grad_norm"], rel=1e-6)
    for (n, p), (_, q) in zip(plain.policy.named_parameters(), checkpointed.policy.named_parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7, msg=n)
    # outside the update the layers are in eval mode again and sampling keeps its KV cache
    assert not any(m.training for m in checkpointed.policy.modules())
    before = len(calls["checkpointed"])
    checkpointed.rollout(checkpointed.encode_prompts(PROMPTS))
    assert len(calls["checkpointed"]) == before + 2 * 6  # one cached step per token and layer, no recompute


def test_checkpointing_active_sets_only_the_checkpointed_layers(tok):
    from rlhf_lab.ppo.modeling import enable_gradient_checkpointing

    model = tiny(tok).eval()
    with checkpointing_active(model) as n:
        assert n == 0  # not enabled: nothing to do
    enable_gradient_checkpointing(model)
    with checkpointing_active(model) as n:
        assert n == 2
        assert [m.training for m in model.transformer.h] == [True, True]
        assert not any(m.training for m in model.transformer.h[0].children())  # dropout stays off
    assert not any(m.training for m in model.modules())
