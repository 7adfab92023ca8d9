#!/usr/bin/env python
"""PPO throughput of rlhf_lab on a 124M-parameter GPT-2, and where the time goes (for a GPU).

Config (the issue's GPU figure): ``GPT2Config()`` defaults (12 layers, width 768, 12 heads,
vocabulary 50,257: 124M parameters), random initialization, batch 64, prompts of 64 random token
ids, responses of exactly 64 tokens (no stop token), 4 PPO epochs, 1 minibatch, bf16 autocast,
the value head on the policy's trunk (``--value separate`` for a second GPT-2 as value model).
The reward is a rule that costs nothing (the number of response tokens in a fixed 1/16 of the
vocabulary, the token-set rule of ``shared_setup.py``), so the figure is the trainer's own
cost: sampling, reference forward, update.

Prints JSON lines: one per run (s/iteration, episodes/s, generated tokens/s, phase split, peak
CUDA memory), then the top operators of one profiled iteration by self time on the device
(``"where the time goes"``). Appends them to ``results/ppo_gpu_throughput.jsonl``.

    python benchmarks/ppo_gpu_throughput.py                       # on a CUDA machine
    python benchmarks/ppo_gpu_throughput.py --value separate --dtype float32
    python benchmarks/ppo_gpu_throughput.py --smoke               # tiny model on CPU: checks the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def build(args):
    import torch
    from shared_setup import token_set_reward_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_lab.course.models import word_tokenizer

    vocab = 1024 if args.smoke else GPT2Config().vocab_size
    tokenizer = word_tokenizer([f"w{i}" for i in range(vocab - 4)])  # 4 special tokens come first
    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   bos_token_id=tokenizer.bos_token_id)
    if args.smoke:
        cfg = GPT2Config(vocab_size=vocab, n_layer=2, n_embd=64, n_head=4, n_positions=256, **special)
    else:
        cfg = GPT2Config(**special)  # GPT-2 small: 124M parameters
    assert len(tokenizer) == cfg.vocab_size
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(cfg)
    policy.loss_type = "ForCausalLM"
    token_set = tuple(range(5, cfg.vocab_size, 16))
    reward = token_set_reward_model(token_set, prompt_len=args.prompt_len, response_len=args.response_length)
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(4, cfg.vocab_size, (args.batch * 4, args.prompt_len), generator=g).tolist()
    return policy, tokenizer, reward, prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--response-length", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--mini-batches", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=8, help="per run; the first is warm-up")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    ap.add_argument("--value", choices=["shared", "separate"], default="shared")
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--smoke", action="store_true", help="a tiny GPT-2 on CPU, 2 runs of 3 iterations")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON lines are appended here (default results/ppo_gpu_throughput.jsonl; --smoke: nowhere)")
    args = ap.parse_args()

    import torch

    from rlhf_lab.ppo import PPOConfig, PPOTrainer

    if args.smoke:
        args.batch, args.prompt_len, args.response_length = 4, 8, 8
        args.iterations, args.runs, args.dtype = 3, 2, "float32"
        args.device = args.device or "cpu"
    if args.out is None and not args.smoke:
        args.out = HERE / "results" / "ppo_gpu_throughput.jsonl"
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.smoke:
        print("no CUDA device: this benchmark is for a GPU (use --smoke to check the script on CPU)", file=sys.stderr)
        raise SystemExit(2)
    cuda = device.type == "cuda"
    lines = []

    def emit(obj):
        obj = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), **obj}
        print(json.dumps(obj), flush=True)
        lines.append(obj)

    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if cuda else "cpu"}
    for run in range(args.runs):
        policy, tokenizer, reward, prompts = build(args)
        n_params = sum(p.numel() for p in policy.parameters())
        cfg = PPOConfig(
            batch_size=args.batch, num_mini_batches=args.mini_batches, num_ppo_epochs=args.epochs,
            response_length=args.response_length, stop_token=None, temperature=0.7, kl_coef=0.05,
            learning_rate=1e-5, dtype=args.dtype, device=str(device), value_model=args.value, progress=False,
            seed=run,
        )
        trainer = PPOTrainer(policy, tokenizer, reward, cfg)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        stamps = [time.perf_counter()]

        def tick(_m):
            if cuda:
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())

        metrics = trainer.train(prompts, args.iterations, callback=tick)
        per_iter = [b - a for a, b in zip(stamps[:-1], stamps[1:])][1:]
        med = statistics.median(per_iter)
        tokens = statistics.median(m["completions/mean_length"] for m in metrics[1:]) * args.batch
        emit({
            "kind": "ppo_gpu_throughput_run", "run": run, **env, "parameters": n_params,
            "batch_size": args.batch, "prompt_len": args.prompt_len, "response_length": args.response_length,
            "num_ppo_epochs": args.epochs, "num_mini_batches": args.mini_batches, "dtype": args.dtype,
            "value_model": args.value, "seconds_per_iteration": round(med, 4),
            "episodes_per_second": round(args.batch / med, 2),
            "tokens_generated_per_second": round(tokens / med, 1),
            "phase_seconds_median": {k: round(statistics.median(m[f"time/{k}"] for m in metrics[1:]), 4)
                                     for k in ("rollout", "score", "update")},
            "peak_cuda_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
            "iteration_seconds": [round(x, 4) for x in per_iter],
        })
        if run == args.runs - 1:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=acts) as prof:
                trainer.train(prompts, 1)
                if cuda:
                    torch.cuda.synchronize(device)
            key = "self_device_time_total" if cuda else "self_cpu_time_total"
            rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
            total = sum(getattr(e, key, 0) for e in prof.key_averages()) or 1
            emit({"kind": "ppo_gpu_profile", **env, "sorted_by": key, "top_ops": [
                {"name": e.key, "self_ms": round(getattr(e, key, 0) / 1000, 2),
                 "share": round(getattr(e, key, 0) / total, 3), "calls": e.count} for e in rows[:20]]})
        del trainer, policy
        if cuda:
            torch.cuda.empty_cache()

    runs = [x for x in lines if x["kind"] == "ppo_gpu_throughput_run"]
    emit({"kind": "ppo_gpu_throughput_summary", **env,
          "median_episodes_per_second": round(statistics.median(r["episodes_per_second"] for r in runs), 2),
          "median_tokens_generated_per_second": round(statistics.median(r["tokens_generated_per_second"] for r in runs), 1),
          "median_seconds_per_iteration": round(statistics.median(r["seconds_per_iteration"] for r in runs), 4)})
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            for obj in lines:
                f.write(json.dumps(obj) + "\n")


if __name__ == "__main__":
    main()
