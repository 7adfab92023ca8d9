#!/usr/bin/env python
"""rlhf_lab.ppo against TRL's last PPOTrainer (trl 1.12.0), side by side, on the tiny shared setup.

The setup (``shared_setup.py``) is a GPT-2 with 2 layers, width 128, 4 heads, a 512-token BPE
vocabulary, 256 prompts of 8 tokens; the config is TRL PPO's anchor config: batch 32, 32-token
responses (no stop token), 4 PPO epochs, 1 minibatch, kl_coef 0.05, temperature 0.7, lr 3e-6,
a reference copy of the policy and *separate* random GPT-2 value and reward models, 2 torch
threads, float32. TRL's side is ``trl/ppo_worker.py`` run by TRL 1.12's interpreter; ours runs
``rlhf_lab.ppo.PPOTrainer`` with the same hyper-parameters (the same GPT-2 classifier as a separate
value model, no gradient clipping, Adam eps 1e-8, k1 KL, gamma 1, lambda 0.95, clipped value loss,
vf_coef 0.1) or, with ``--ours-value shared``, our default value head on the policy's trunk.

Usage::

    python benchmarks/ppo_throughput.py --runs 3 --wait-quiet 60         # 3 alternating pairs + learning
    python benchmarks/ppo_throughput.py --ours-value shared --learning-iterations 0
    python benchmarks/ppo_throughput.py --worker ours 10                 # one run of ours, one JSON line

Every run is its own subprocess, so each peak RSS (``ru_maxrss``) covers one implementation,
interpreter and imports included. The order alternates (TRL first, then ours first, ...) and,
with ``--wait-quiet S``, each run waits up to S seconds for idle CPUs. Prints JSON lines (every
run, then a summary with medians, ratios and per-pair ratios) and appends them to
``results/ppo_throughput.jsonl``.

Learning on the same task: both train the identical starting policy for ``--learning-iterations``
iterations at ``--learning-lr`` against the same rule (``--learning-task token-set``: the number
of response tokens among 32 fixed ids, the same one-label classifier for both trainers;
``random-rm``: the random GPT-2 reward model, a weak test); we compare the mean score of the
first and last 5 iterations and the final KL.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402
import shared_setup  # noqa: E402
from shared_setup import token_set_reward_model  # noqa: E402,F401  (kept importable from here)

LEARNING_TASKS = ("token-set", "random-rm")
BATCH = 32


def worker_ours(iterations: int, lr: float, threads: int, value: str, reward: str, record_scores: bool) -> dict:
    import time

    import torch

    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from rlhf_lab.ppo import PPOConfig, PPOTrainer

    t_build = time.perf_counter()
    tokenizer, prompts = shared_setup.tokenizer_and_prompts()
    policy, reference, value_model, reward_model = shared_setup.ppo_models(tokenizer)
    if reward == "token-set":
        reward_model = token_set_reward_model()
    config = PPOConfig(
        batch_size=BATCH, num_mini_batches=1, gradient_accumulation_steps=1, num_ppo_epochs=4,
        response_length=shared_setup.RESPONSE_TOKENS, temperature=0.7, kl_coef=0.05, learning_rate=lr, adam_eps=1e-8,
        max_grad_norm=None, stop_token=None, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=0.95,
        kl_estimator="k1", seed=shared_setup.SEED, device="cpu", dtype="float32", progress=False, value_model=value,
    )
    # "separate": the same GPT-2 classifier as TRL's value model; "shared": a value head on the trunk
    trainer = PPOTrainer(policy, tokenizer, reward_model, config, ref_policy=reference,
                         value_model=value_model if value == "separate" else None)
    build_s = time.perf_counter() - t_build

    clock = harness.IterationClock()
    with harness.RunConditions() as conditions:
        clock.tick()
        metrics = trainer.train(prompts, iterations, callback=clock.tick)
    tokens = sorted(m["completions/mean_length"] * BATCH for m in metrics)[len(metrics) // 2]
    phases = [{"rollout": m["time/rollout"], "scoring_ref_value_reward_gae": m["time/score"],
               "ppo_update": m["time/update"]} for m in metrics]
    out = {
        "impl": "rlhf_lab" if value == "separate" else "rlhf_lab_shared_value_head",
        "revision": harness.git_revision(), "torch_version": torch.__version__, "threads": torch.get_num_threads(),
        "iterations": iterations, "batch_size": BATCH, "response_length": config.response_length,
        "num_ppo_epochs": config.num_ppo_epochs, "learning_rate": lr, "reward": reward,
        **clock.summary(BATCH, tokens),
        "phase_seconds_median": harness.median_phases(phases),
        "build_seconds": round(build_s, 3),
        "peak_rss_mb": harness.peak_rss_mb(),
        **conditions.fields(),
        "final_metrics": {k: round(v, 6) for k, v in metrics[-1].items() if not k.startswith("time/")},
    }
    if record_scores:
        out["scores"] = [round(m["objective/scores"], 6) for m in metrics]
        out["kls"] = [round(m["objective/kl"], 6) for m in metrics]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["ours"], help="run our worker once and print its JSON line")
    harness.add_run_options(ap, "1.12", "ppo_throughput.jsonl")
    ap.add_argument("--lr", type=float, default=3e-6)
    ap.add_argument("--learning-iterations", type=int, default=40, help="0 skips the learning comparison")
    ap.add_argument("--learning-lr", type=float, default=1e-4)
    ap.add_argument("--learning-task", choices=LEARNING_TASKS, default="token-set")
    ap.add_argument("--reward", choices=LEARNING_TASKS, default="random-rm", help="a worker run's reward model")
    ap.add_argument("--record-scores", "--all-scores", action="store_true", help="a worker run: every score and KL")
    ap.add_argument("--ours-value", choices=["separate", "shared"], default="separate",
                    help="our value function: a separate value model as TRL's (default) or our value head on the trunk")
    ap.add_argument("--skip-trl", action="store_true", help="only our implementation")
    a = ap.parse_args()

    if a.worker:
        n = a.iterations_pos or a.iterations
        harness.print_line(worker_ours(n, a.lr, a.threads, a.ours_value, a.reward, a.record_scores))
        return

    trl = None if a.skip_trl else harness.require_python(harness.trl_python("1.12", a.trl_python), "1.12")
    me = [sys.executable, str(Path(__file__).resolve())]
    trl_worker = [trl, harness.TRL_DIR / "ppo_worker.py"]
    common = ["--threads", a.threads]
    cmds = {"trl": trl_worker + [a.iterations, "--lr", a.lr] + common,
            "rlhf_lab": me + ["--worker", "ours", a.iterations, "--lr", a.lr, "--ours-value", a.ours_value] + common}
    if a.skip_trl:
        del cmds["trl"]
    when, emit = harness.stamp(), harness.JsonLines(a.out)
    raw = harness.alternating_runs(cmds, a.runs, emit, a.wait_quiet, when=when)

    summary = harness.side_by_side(raw, "rlhf_lab", "trl", harness.THROUGHPUT_KEYS)
    if "ratio" in summary:
        # the fastest steady iteration of each run is far less sensitive to a busy neighbour
        summary["ratio"]["episodes_per_second_best_iteration"] = round(
            summary["median"]["trl"]["seconds_per_iteration_min"] / summary["median"]["rlhf_lab"]["seconds_per_iteration_min"], 3)
    emit({"kind": "throughput_summary", "when": when, "runs": a.runs, "iterations": a.iterations,
          "ours_value": a.ours_value, "revision": harness.git_revision(), **summary})

    if a.learning_iterations > 0:
        n, lr = a.learning_iterations, a.learning_lr
        learn_cmds = {"rlhf_lab": me + ["--worker", "ours", n, "--lr", lr, "--ours-value", a.ours_value,
                                        "--reward", a.learning_task, "--record-scores"] + common}
        if not a.skip_trl:
            learn_cmds["trl"] = trl_worker + [n, "--lr", lr, "--reward", a.learning_task, "--record-scores"] + common
        learned = harness.learning_runs(learn_cmds, emit, a.wait_quiet, when=when, iterations=n, learning_rate=lr,
                                        task=a.learning_task)
        emit({"kind": "learning", "when": when, "iterations": n, "learning_rate": lr, "task": a.learning_task,
              "ours_value": a.ours_value, **learned})


if __name__ == "__main__":
    main()
