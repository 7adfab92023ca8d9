"""One small PPO run, launched once (one process) or by ``torchrun`` (several): the worker of
tests/test_ppo_distributed.py.

``python tests/_ddp_run.py OUT ITERATIONS [RESUME_AFTER [DISTRIBUTED]]`` trains a tiny GPT-2 for ITERATIONS
iterations on fixed prompts and writes, on rank 0, the per-iteration metrics (without the timings)
and the final weights to OUT. With RESUME_AFTER, it trains that many iterations, saves a checkpoint
(rank 0 writes it), builds a fresh trainer from it on every rank and trains the rest. DISTRIBUTED
is ``PPOConfig.distributed`` ("ddp" or "fsdp"); with "fsdp" OUT also holds, per rank, how many
elements of each trained parameter that rank holds, and of the whole reference (``local_numel``).
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


def _policy_weights(trainer) -> dict:
    """The policy's whole weights (gathered to rank 0 from the shards under FSDP: every rank calls this)."""
    if getattr(trainer, "_sharded", False):
        return trainer.state_dict()["policy"]
    return trainer.policy.state_dict()


def run(out: str, iterations: int, resume_after: int = 0, distributed: str = "ddp") -> None:
    torch.set_num_threads(1)
    tok = word_tokenizer()
    reward = TargetWordReward("good")
    trainer = PPOTrainer(tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2, seed=0), tok, reward,
                         PPOConfig(**CONFIG, distributed=distributed))
    weights = []  # the flattened policy after each iteration

    def snapshot(_metrics):
        policy = _policy_weights(trainer)  # under FSDP whole on rank 0 only
        if trainer.is_main_process:
            weights.append(torch.cat([w.detach().flatten() for w in policy.values()]))

    history = trainer.train(PROMPTS, resume_after or iterations, callback=snapshot)
    if resume_after:
        checkpoint = f"{out}.checkpoint.pt"
        trainer.save(checkpoint)
        trainer = PPOTrainer.load(checkpoint, tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2, seed=1), tok, reward)
        history = history + trainer.train(PROMPTS, iterations - resume_after, callback=snapshot)
    state = trainer.state_dict()  # whole weights, on every rank (collective under FSDP)
    local = {name: (p.to_local() if hasattr(p, "to_local") else p).numel() for name, p in
             trainer._update_module.named_parameters()}
    local["reference"] = sum((p.to_local() if hasattr(p, "to_local") else p).numel()
                             for p in trainer.ref_policy.parameters())
    locals_ = [local]
    if torch.distributed.is_initialized():
        locals_ = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(locals_, local)
    if trainer.is_main_process:
        metrics = [{k: v for k, v in m.items() if not k.startswith("time/")} for m in history]
        torch.save({"metrics": metrics, "weights": weights, "policy": state["policy"], "value": state["value"],
                    "local_numel": locals_}, out)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0,
        sys.argv[4] if len(sys.argv) > 4 else "ddp")
