#!/usr/bin/env python
"""TRL 1.12's PPOTrainer (``trl.experimental.ppo``; PPO left TRL in 1.13) on our benchmark setups.

Run it with the interpreter of the TRL 1.12 environment (``trl/make_venvs.sh``); it prints one
JSON line. The orchestrators (``ppo_throughput.py``, ``smollm2_memory.py``) call it.

``--setup tiny`` (default): the shared setup of ``shared_setup.py`` with TRL PPO's anchor config:
batch 32 (``per_device_train_batch_size``), 1 minibatch, 4 PPO epochs, 32-token responses with
no stop token, kl_coef 0.05 (k1 in the reward), temperature 0.7, lr 3e-6 with TRL's default
linear decay, the separate random value and reward models (``--reward token-set``: the
token-set rule instead), reference = copy of the policy, fp32, no gradient checkpointing, CPU.

``--setup smollm2``: SmolLM2-135M-Instruct (``smollm2_setup.py``): batch 8, 24-token prompts,
32-token responses, 4 epochs; value model = a one-label classifier on a copy of the policy's
trunk; reward = the token-set rule; ``--peft``: TRL's ``peft_config`` with LoRA rank 16 on all
linear layers (TRL then takes the reference from the policy with its adapters disabled).

Timing: only ``trainer.train()``; an iteration ends at ``on_step_end``; the first is warm-up.
Phases per iteration: *generation* (TRL's ``batch_generation``), *scoring* (from the end of
generation to the first forward with gradients: log-probs, reference / value / reward forwards,
GAE, whitening, and one ``gc.collect()``), *update* (from there to ``on_step_end``), *other*
(the rest: the second ``gc.collect()``, data loading); ``gc_collect`` is the time in
``gc.collect()`` alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import harness  # noqa: E402
import shared_setup  # noqa: E402

harness.set_offline()


def build(args):
    """(tokenizer, prompt rows, policy, reference or None, value model, reward model, batch, response length)."""
    if args.setup == "tiny":
        tokenizer, prompts = shared_setup.tokenizer_and_prompts()
        policy, reference, value, reward = shared_setup.ppo_models(tokenizer)
        if args.reward == "token-set":
            reward = shared_setup.token_set_reward_model()
        return tokenizer, prompts, policy, reference, value, reward, 32, shared_setup.RESPONSE_TOKENS
    import copy

    import smollm2_setup as smol

    policy, tokenizer = smol.load_model(args.model)
    args.stages["model loaded"] = harness.peak_rss_mb()
    value = smol.value_model_from(policy, tokenizer)
    reference = None if args.peft else copy.deepcopy(policy)
    return (tokenizer, smol.prompts(tokenizer), policy, reference, value, smol.reward_model(policy), smol.BATCH,
            smol.RESPONSE_TOKENS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("iterations", type=int, nargs="?", default=10)
    ap.add_argument("--setup", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2", help="--setup smollm2's model")
    ap.add_argument("--peft", action="store_true", help="--setup smollm2: LoRA r16 on all linear layers")
    ap.add_argument("--reward", choices=["random-rm", "token-set"], default="random-rm")
    ap.add_argument("--lr", type=float, default=3e-6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record-scores", action="store_true", help="add each iteration's mean score and KL")
    args = ap.parse_args()
    if args.iterations < 2:
        ap.error("need at least 2 iterations (the first is warm-up)")
    args.stages = {"start": harness.peak_rss_mb()}

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import datasets
    import transformers
    import trl
    import trl.experimental.ppo.ppo_trainer as ppo_module
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    args.stages["imports"] = harness.peak_rss_mb()

    t_build = time.perf_counter()
    tokenizer, prompts, policy, reference, value, reward, batch, response_len = build(args)
    clock, logs = harness.IterationClock(), []

    class Hooks(TrainerCallback):
        def on_train_begin(self, *a, **k):
            clock.tick()

        def on_step_end(self, *a, **k):
            clock.tick()

        def on_log(self, *a, **kwargs):
            entry = kwargs.get("logs")
            if entry and "objective/scores" in entry:
                logs.append(dict(entry))

    spans = harness.Spans()
    spans.wrap(ppo_module, "batch_generation", "generation")
    spans.wrap(ppo_module, "forward", "forward")
    spans.wrap(ppo_module.gc, "collect", "gc")

    workdir = tempfile.mkdtemp(prefix="trl_ppo_worker_")
    config = PPOConfig(
        output_dir=workdir, per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_mini_batches=1,
        local_rollout_forward_batch_size=batch, total_episodes=args.iterations * batch, response_length=response_len,
        num_ppo_epochs=4, kl_coef=0.05, learning_rate=args.lr, seed=shared_setup.SEED, use_cpu=True, bf16=False,
        fp16=False, gradient_checkpointing=False, logging_steps=1, report_to="none", save_strategy="no",
        eval_strategy="no", num_sample_generations=0, disable_tqdm=True, dataloader_num_workers=0,
    )
    peft_config = None
    if args.peft:
        import smollm2_setup as smol

        peft_config = smol.lora_config()
    trainer = PPOTrainer(
        args=config, processing_class=tokenizer, model=policy, ref_model=reference, reward_model=reward,
        value_model=value, train_dataset=datasets.Dataset.from_dict({"input_ids": prompts}), peft_config=peft_config,
    )
    if config.num_total_batches != args.iterations:
        raise SystemExit(f"TRL would run {config.num_total_batches} iterations, not {args.iterations}")
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.add_callback(Hooks())
    build_s = time.perf_counter() - t_build
    args.stages["trainer built"] = harness.peak_rss_mb()

    with harness.RunConditions() as conditions:
        trainer.train()

    phases = []
    for lo, hi in zip(clock.wall[:-1], clock.wall[1:]):
        gen = spans.between(lo, hi, "generation")
        grad_fwd = spans.between(lo, hi, "forward", grad=True)
        gen_end = max(end for _, _, end, _ in gen)
        update_start = min(start for _, start, _, _ in grad_fwd)
        generation = sum(end - start for _, start, end, _ in gen)
        phases.append({
            "generation": generation, "scoring": update_start - gen_end, "update": hi - update_start,
            "other": (hi - lo) - generation - (update_start - gen_end) - (hi - update_start),
            "gc_collect": spans.seconds(lo, hi, "gc"),
        })
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    out = {
        "impl": "trl-ppo" + ("-peft" if args.peft else ""),
        "setup": args.setup if args.setup == "tiny" else f"smollm2:{args.model}",
        "trl_version": trl.__version__, "transformers_version": transformers.__version__,
        "torch_version": torch.__version__, "threads": torch.get_num_threads(), "iterations": args.iterations,
        "batch_size": batch, "response_length": response_len, "num_ppo_epochs": 4, "learning_rate": args.lr,
        "reward": args.reward if args.setup == "tiny" else "token-set",
        "trainable_parameters": trainable,
        **clock.summary(batch, batch * response_len),
        "phase_seconds_median": harness.median_phases(phases),
        "build_seconds": round(build_s, 3),
        "peak_rss_mb": harness.peak_rss_mb(),
        "peak_rss_mb_by_stage": args.stages,
        **conditions.fields(),
        "final_metrics": {k: round(v, 6) for k, v in (logs[-1] if logs else {}).items()
                          if isinstance(v, float) and k.startswith(("objective/", "loss/", "policy/", "val/"))},
    }
    if args.record_scores:
        out["scores"] = [round(x["objective/scores"], 6) for x in logs]
        out["kls"] = [round(x["objective/kl"], 6) for x in logs]
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    harness.print_line(out)


if __name__ == "__main__":
    main()
