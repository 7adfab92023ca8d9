"""One small PPO run, launched once (one process) or by ``torchrun`` (several): the worker of
tests/test_ppo_distributed.py.

``python tests/_ddp_run.py OUT ITERATIONS [RESUME_AFTER]`` trains a tiny GPT-2 for ITERATIONS
iterations on fixed prompts and writes, on rank 0, the per-iteration metrics (without the timings)
and the final weights to OUT. With RESUME_AFTER, it trains that many iterations, saves a checkpoint
(rank 0 writes it), builds a fresh trainer from it on every rank and trains the rest.
"""

from __future__ import annotations

import sys

import torch

from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
from rlhf_lab.ppo import PPOConfig, PPOTrainer
from rlhf_lab.ppo.rewards import TargetWordReward

PROMPTS = ["hello", "the cat is", "i see a", "good morning", "thank you", "the dog", "today is", "we like",
           "a big", "you are"]
CONFIG = dict(batch_size=8, num_mini_batches=2, gradient_accumulation_steps=2, response_length=6,
              learning_rate=1e-2, kl_coef=0.05, adaptive_kl=True, kl_target=1.0, kl_horizon=50,
              stop_token="eos", progress=False, device="cpu", seed=0)


def run(out: str, iterations: int, resume_after: int = 0) -> None:
    torch.set_num_threads(1)
    tok = word_tokenizer()
    reward = TargetWordReward("good")
    trainer = PPOTrainer(tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2, seed=0), tok, reward,
                         PPOConfig(**CONFIG))
    weights = []  # the flattened policy after each iteration

    def snapshot(_metrics):
        weights.append(torch.cat([p.detach().flatten() for p in trainer.policy.parameters()]))

    history = trainer.train(PROMPTS, resume_after or iterations, callback=snapshot)
    if resume_after:
        checkpoint = f"{out}.checkpoint.pt"
        trainer.save(checkpoint)
        trainer = PPOTrainer.load(checkpoint, tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2, seed=1), tok, reward)
        history = history + trainer.train(PROMPTS, iterations - resume_after, callback=snapshot)
    if trainer.is_main_process:
        metrics = [{k: v for k, v in m.items() if not k.startswith("time/")} for m in history]
        torch.save({"metrics": metrics, "weights": weights, "policy": trainer.policy.state_dict(),
                    "value": trainer.value_head.state_dict()}, out)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
