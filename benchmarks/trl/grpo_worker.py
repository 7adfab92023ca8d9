#!/usr/bin/env python
"""TRL 1.16's GRPOTrainer (``--trainer grpo``) or RLOOTrainer (``--trainer rloo``) on the shared setup.

Run it with the interpreter of the TRL 1.16 environment (``trl/make_venvs.sh``); it prints one
JSON line. ``grpo_throughput.py`` calls it.

Config (the GRPO comparison of issue 16): one iteration = one generation batch of 4 prompts x
G = 8 completions = 32 episodes (``per_device_train_batch_size=32``, ``num_generations=8``, one
process, no accumulation); completions of exactly 32 tokens (``min_new_tokens=32``: EOS cannot
be sampled, TRL has no "no stop token" switch); temperature 0.7, top-p 1, no top-k; beta 0.04
(k3 KL to the reference in the loss, TRL's ratio-weighted ``use_bias_correction_kl`` default);
mu = ``num_iterations`` = 1; epsilon 0.2; ``loss_type="dapo"``; ``scale_rewards="group"``;
AdamW (TRL's default fused) lr 1e-5 with a **constant** schedule; gradient clipping 1.0;
dropout off; fp32 and no gradient checkpointing (TRL turns on bf16 and checkpointing by default,
even on a CPU); 2 threads. Reward: the token-set rule on the 32 completion ids as generated
(``shared_setup.GRPO_TOKEN_SET``). The prompts go in as text (TRL tokenizes them; each gives back
its 8 ids). TRL builds its reference with ``from_pretrained(model.config._name_or_path)``, so the
starting policy is saved to a temporary folder first (and the reference checked equal to it).

Timing: only ``trainer.train()``; an iteration ends at the ``on_step_end`` of its mu-th step; the
first is warm-up. Phases per iteration: *generation* (TRL's ``_generate``: tokenize, sample,
decode), *reference forward* (the no-grad log-prob forwards: reference, and old log-probs when
TRL computes them), *scoring rest* (rewards, advantages, bookkeeping of
``_generate_and_score_completions``), *update* (training forward, backward, clipping, AdamW, loss
metrics), *other* (between steps).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402
import shared_setup  # noqa: E402

harness.set_offline()

PROMPTS_PER_ITERATION, GROUP = 4, 8
EPISODES = PROMPTS_PER_ITERATION * GROUP


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("iterations", type=int, nargs="?", default=10, help="generation batches of 32 completions")
    ap.add_argument("--trainer", choices=["grpo", "rloo"], default="grpo")
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--num-iterations", type=int, default=1, help="mu: optimizer steps per generation batch")
    ap.add_argument("--loss-type", default="dapo", help="GRPO only")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.iterations < 2:
        ap.error("need at least 2 iterations (the first is warm-up)")

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import datasets
    import transformers
    import trl
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    if args.trainer == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer

    t_build = time.perf_counter()
    tokenizer, prompts = shared_setup.tokenizer_and_prompts()
    dataset = datasets.Dataset.from_dict({"prompt": shared_setup.prompt_texts(tokenizer, prompts)})
    policy = shared_setup.build_policy(tokenizer)
    workdir = tempfile.mkdtemp(prefix=f"trl_{args.trainer}_worker_")
    start_dir = os.path.join(workdir, "starting_policy")
    policy.save_pretrained(start_dir)
    policy.config._name_or_path = start_dir

    rewards_seen = []

    def token_set(completion_ids, **_):
        scores = shared_setup.count_in_set(completion_ids, shared_setup.GRPO_TOKEN_SET)
        rewards_seen.append((sum(scores) / len(scores), sum(len(c) for c in completion_ids)))
        return scores

    mu = args.num_iterations
    options = dict(
        output_dir=workdir, per_device_train_batch_size=EPISODES, gradient_accumulation_steps=1,
        num_generations=GROUP, max_completion_length=shared_setup.RESPONSE_TOKENS,
        generation_kwargs={"min_new_tokens": shared_setup.RESPONSE_TOKENS}, temperature=0.7, top_p=1.0, top_k=0,
        beta=args.beta, num_iterations=mu, epsilon=0.2, learning_rate=args.lr, lr_scheduler_type="constant",
        max_grad_norm=1.0, max_steps=args.iterations * mu, disable_dropout=True, seed=shared_setup.SEED,
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, use_vllm=False,
        dataloader_num_workers=0, logging_steps=1, report_to="none", save_strategy="no", eval_strategy="no",
        disable_tqdm=True, log_completions=False,
    )
    if args.trainer == "grpo":
        options.update(loss_type=args.loss_type, scale_rewards="group")
    config = Config(**options)
    if config.generation_batch_size != EPISODES or config.steps_per_generation != 1:
        raise SystemExit(f"TRL would generate {config.generation_batch_size} completions in "
                         f"{config.steps_per_generation} steps, not {EPISODES} in 1")

    step_begin, step_end, cpu_end, begin, logs = [], [], [], [], []

    class Hooks(TrainerCallback):
        def on_train_begin(self, *a, **k):
            begin.extend([time.perf_counter(), time.process_time()])

        def on_step_begin(self, *a, **k):
            step_begin.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            step_end.append(time.perf_counter())
            cpu_end.append(time.process_time())

        def on_log(self, *a, **kwargs):
            if kwargs.get("logs"):
                logs.append(dict(kwargs["logs"]))

    trainer = Trainer(model=policy, reward_funcs=token_set, args=config, train_dataset=dataset,
                      processing_class=tokenizer)
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.add_callback(Hooks())
    if (trainer.ref_model is not None) != (args.beta != 0):
        raise SystemExit("TRL built a reference model exactly when beta != 0; it did not")
    if trainer.ref_model is not None:
        ref = trainer.ref_model.state_dict()
        if any(not torch.equal(v, ref[k]) for k, v in trainer.model.state_dict().items()):
            raise SystemExit("TRL's reference model is not the starting policy")

    spans = harness.Spans()
    for method, label in (("_generate_and_score_completions", "generate_and_score"), ("_generate", "generation"),
                          ("_get_per_token_logps_and_entropies", "logps"), ("_calculate_rewards", "reward")):
        spans.wrap(trainer, method, label)
    build_s = time.perf_counter() - t_build

    with harness.RunConditions() as conditions:
        trainer.train()

    if len(step_end) != args.iterations * mu:
        raise SystemExit(f"{len(step_end)} optimizer steps, expected {args.iterations * mu}")
    clock = harness.IterationClock()
    clock.wall, clock.cpu = [begin[0]] + step_end[mu - 1::mu], [begin[1]] + cpu_end[mu - 1::mu]
    phases = []
    for k, (lo, hi) in enumerate(zip(clock.wall[:-1], clock.wall[1:])):
        in_steps = sum(step_end[i] - step_begin[i] for i in range(k * mu, (k + 1) * mu))
        gen_score = spans.seconds(lo, hi, "generate_and_score")
        generation = spans.seconds(lo, hi, "generation")
        reference = spans.seconds(lo, hi, "logps", grad=False)
        phases.append({
            "generation": generation, "reference_forward": reference,
            "scoring_rest": gen_score - generation - reference, "update": in_steps - gen_score,
            "other": (hi - lo) - in_steps, "reward_fn": spans.seconds(lo, hi, "reward"),
        })
    means = [m for m, _ in rewards_seen]
    tokens = sorted(n for _, n in rewards_seen)[len(rewards_seen) // 2]
    last = {}
    for entry in [x for x in logs if "loss" in x][-mu:]:
        last.update(entry)
    out = {
        "impl": f"trl-{args.trainer}", "trl_version": trl.__version__,
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
        "threads": torch.get_num_threads(), "iterations": args.iterations, "episodes_per_iteration": EPISODES,
        "num_generations": GROUP, "num_iterations_mu": mu, "beta": args.beta,
        "loss_type": args.loss_type if args.trainer == "grpo" else "rloo (sequence-level ratio)",
        "learning_rate": args.lr, "reference_model": trainer.ref_model is not None,
        **clock.summary(EPISODES, tokens),
        "phase_seconds_median": harness.median_phases(phases),
        "build_seconds": round(build_s, 3),
        "peak_rss_mb": harness.peak_rss_mb(),
        **conditions.fields(),
        "scores": [round(m, 4) for m in means],
        "kls": [round(x.get("kl", 0.0), 6) for x in logs if "loss" in x][mu - 1::mu],
        **{k: v for k, v in harness.learning_summary(means).items() if k != "kl_last5"},
        "final_metrics": {k: round(v, 6) for k, v in last.items()
                          if isinstance(v, (int, float)) and k not in ("epoch", "step_time")},
    }
    shutil.rmtree(workdir, ignore_errors=True)
    harness.print_line(out)


if __name__ == "__main__":
    main()
