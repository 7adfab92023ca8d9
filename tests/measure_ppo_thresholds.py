"""Measure the distributions behind the learning thresholds of tests/test_ppo.py.

Runs the tests' training set-ups for several seeds (the seed of the model's initialization and of
the trainer) and prints one JSON line per seed; the thresholds in the tests come from these
numbers with a margin. Run it under each CPU capability and thread count, e.g.::

    for cap in default avx2; do for th in 1 2; do
        ATEN_CPU_CAPABILITY=$cap python tests/measure_ppo_thresholds.py --seeds 12 --threads $th
    done; done

Not collected by pytest (the file name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from test_ppo import BETA_ITERATIONS, PROMPTS, cfg, tiny  # noqa: E402

from rlhf_lab.course.models import word_tokenizer  # noqa: E402
from rlhf_lab.ppo import PPOTrainer  # noqa: E402
from rlhf_lab.ppo.rewards import TargetWordReward  # noqa: E402


def _get(m, new, old):
    return m[new] if new in m else m[old]


def reward_task(tok, seed):
    """test_ppo_raises_reward_on_target_word_task_with_bounded_kl"""
    trainer = PPOTrainer(tiny(tok, seed=seed), tok, TargetWordReward("good"),
                         cfg(batch_size=16, response_length=8, stop_token=None, kl_coef=0.02, seed=seed))
    ms = trainer.train(PROMPTS, 30)
    rewards = [_get(m, "objective/scores", "reward") for m in ms]
    kls = [_get(m, "objective/kl", "kl") for m in ms]
    return {"start": sum(rewards[:3]) / 3, "end": sum(rewards[-3:]) / 3, "max_kl": max(kls)}


def beta_task(tok, seed, iterations=BETA_ITERATIONS):
    """test_large_beta_keeps_policy_near_reference"""
    out = {}
    for name, beta in (("kl_small_beta", 0.001), ("kl_large_beta", 2.0)):
        trainer = PPOTrainer(tiny(tok, seed=seed), tok, TargetWordReward("good"),
                             cfg(batch_size=16, response_length=8, stop_token=None, kl_coef=beta, seed=seed))
        ms = trainer.train(PROMPTS, iterations)
        out[name] = sum(_get(m, "objective/kl", "kl") for m in ms[-3:]) / 3
    return out


def bf16_ratio(tok, seed):
    """test_separate_value_model_from_sequence_classifier_and_bf16_autocast"""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    vm = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2, num_labels=1,
                                                  pad_token_id=tok.pad_token_id))
    trainer = PPOTrainer(tiny(tok, seed=seed), tok, TargetWordReward("good"), cfg(dtype="bfloat16", seed=seed),
                         value_model=vm)
    ms = trainer.train(PROMPTS, 2)
    return {"bf16_ratio_first_iteration": _get(ms[0], "val/ratio", "ratio")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=["reward", "beta", "bf16"], action="append",
                    help="measure only these set-ups (default: all)")
    a = ap.parse_args()
    tasks = {"reward": reward_task, "beta": beta_task, "bf16": bf16_ratio}
    chosen = a.only or list(tasks)
    torch.set_num_threads(a.threads)
    tok = word_tokenizer()
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        row = {"seed": seed, "threads": a.threads, "capability": torch.backends.cpu.get_cpu_capability(),
               "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", "")}
        for name in chosen:
            row.update(tasks[name](tok, seed))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
