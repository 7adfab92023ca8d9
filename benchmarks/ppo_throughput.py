#!/usr/bin/env python
"""rlhf_lab.ppo against TRL's last PPOTrainer (trl 1.12.0), side by side, on TRL's anchor config.

The anchor (``/work/shared/anchors/trl-ppo``, see its README) is GPT-2 with 2 layers, width 128,
4 heads, a 512-token BPE vocabulary, batch 32, 8-token prompts, 32-token responses (no stop
token), 4 PPO epochs, 1 minibatch, kl_coef 0.05, temperature 0.7, lr 3e-6, a reference copy of
the policy and *separate* randomly initialized GPT-2 value and reward models, 2 torch threads,
float32. Our worker builds exactly the same tokenizer, prompts and models (it imports the
anchor's builder functions) and runs ``rlhf_lab.ppo.PPOTrainer`` with the same hyper-parameters
(value model = the same GPT-2 sequence classifier, no gradient clipping, Adam eps 1e-8, k1 KL).

Usage::

    python benchmarks/ppo_throughput.py                      # 3 alternating pairs of runs + learning
    python benchmarks/ppo_throughput.py --runs 5 --iterations 10 --learning-iterations 40
    python benchmarks/ppo_throughput.py --worker ours 10     # one run of ours, one JSON line

Every run is its own subprocess (TRL from its own virtual environment, ``--trl-python``), so each
peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, as the anchor measures it) covers one
implementation only, interpreter and imports included. The order alternates (TRL first, then ours
first, ...) and, with ``--wait-quiet``, each run waits until the CPUs are idle: the machine is
shared, so only side-by-side ratios are meaningful. Prints JSON lines: every raw run, then a
summary with medians and ratios; all lines are appended to ``benchmarks/results/``.

Learning on the same task: both implementations train the identical starting policy for the
same number of iterations against the identical reward model with the same config except a
learning rate large enough to move in a few dozen iterations (``--learning-lr``); we compare the
mean score of the first and last 5 iterations (same batch size, prompts and temperature) and the
final KL. ``--learning-task token-set`` (default): the score is the number of response tokens in
a fixed set of 32 ids (1/16 of the vocabulary), a rule with a known start (about 2 of 32 tokens
for a random policy) and optimum (32) that both trainers call as the same one-label classifier; ``random-rm``: the anchor's
random GPT-2 classifier (a weak test: its scores barely vary).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_ANCHOR = Path(os.environ.get("TRL_ANCHOR", "/work/shared/anchors/trl-ppo"))
DEFAULT_TRL_PYTHON = Path(os.environ.get("TRL_PYTHON", ROOT / ".venv-trl" / "bin" / "python"))
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1"}


def load_anchor(anchor_dir: Path):
    path = anchor_dir / "bench_trl_ppo.py"
    if not path.is_file():
        raise SystemExit(f"TRL anchor script not found at {path} (set --anchor or TRL_ANCHOR)")
    spec = importlib.util.spec_from_file_location("bench_trl_ppo", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def anchor_prompts(anchor, tokenizer, rng):
    """The anchor's 256 prompts of exactly 8 tokens (its build_dataset without `datasets`)."""
    rows = []
    while len(rows) < anchor.N_PROMPTS:
        text = " ".join(rng.choice(anchor.WORDS) for _ in range(12))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= anchor.PROMPT_LEN:
            rows.append(ids[: anchor.PROMPT_LEN])
    return rows


TOKEN_SET = tuple(range(5, 512, 16))  # 32 token ids, 1/16 of the anchor's vocabulary
LEARNING_TASKS = ("token-set", "random-rm")


def token_set_reward_model(token_ids=TOKEN_SET, prompt_len: int = 8, response_len: int = 32):
    """A rule written as a one-label sequence classifier: how many of the response's tokens lie in
    ``token_ids`` (a random policy scores about ``response_len / 16`` = 2, the best score is 32).

    Both trainers call a reward model the same way: its backbone on prompt + response, then its
    one-label ``score`` head read at the last response token. Here the backbone's "hidden state"
    at every position is the row's count of set tokens after the prompt, so both read the same
    score whichever position they pick (TRL stops a response at a sampled pad token; the pad id
    is not in the set and is masked out by both)."""
    from types import SimpleNamespace

    import torch

    class Backbone(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("ids", torch.tensor(token_ids, dtype=torch.long))

        def forward(self, input_ids, attention_mask=None, **_):
            hit = torch.isin(input_ids, self.ids)
            if attention_mask is not None:
                hit &= attention_mask.bool()
            hit[:, :prompt_len] = False
            count = hit.sum(dim=1).float()
            h = count[:, None, None].expand(-1, input_ids.shape[1], 1)
            return SimpleNamespace(last_hidden_state=h, hidden_states=(h,))

    class TokenSetRewardModel(torch.nn.Module):
        base_model_prefix = "backbone"

        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.score = torch.nn.Linear(1, 1, bias=False)
            torch.nn.init.ones_(self.score.weight)
            self.requires_grad_(False)

        @property
        def base_model(self):
            return self.backbone

    return TokenSetRewardModel()


# ----------------------------------------------------------------------------- workers
def worker_ours(iterations: int, lr: float, threads: int, anchor_dir: Path, all_scores: bool,
                value: str = "separate", task: str = "random-rm") -> dict:
    import torch

    torch.set_num_threads(threads)
    anchor = load_anchor(anchor_dir)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    from rlhf_lab.ppo import PPOConfig, PPOTrainer

    t_build0 = time.perf_counter()
    tokenizer, rng = anchor.build_tokenizer()
    prompts = anchor_prompts(anchor, tokenizer, rng)
    policy, ref_policy, value_model, reward_model = anchor.build_models(tokenizer)
    if task == "token-set":
        reward_model = token_set_reward_model(prompt_len=anchor.PROMPT_LEN, response_len=anchor.RESPONSE_LEN)
    cfg = PPOConfig(
        batch_size=anchor.BATCH, num_mini_batches=1, gradient_accumulation_steps=1,
        num_ppo_epochs=anchor.NUM_PPO_EPOCHS, response_length=anchor.RESPONSE_LEN,
        temperature=0.7, kl_coef=anchor.KL_COEF, learning_rate=lr, adam_eps=1e-8,
        max_grad_norm=None, stop_token=None, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1,
        gamma=1.0, lam=0.95, kl_estimator="k1", seed=anchor.SEED, device="cpu", dtype="float32",
        progress=False, value_model="shared" if value == "shared" else "separate",
    )
    # "separate" (the anchor's config): the anchor's GPT-2 sequence classifier is the value model.
    # "shared" (not TRL-comparable, for information): a value head on the policy's own trunk.
    trainer = PPOTrainer(policy, tokenizer, reward_model, cfg, ref_policy=ref_policy,
                         value_model=value_model if value == "separate" else None)
    build_s = time.perf_counter() - t_build0

    stamps, cpu = [time.perf_counter()], [time.process_time()]

    def tick(_m):
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    load_before = os.getloadavg()[0]
    metrics = trainer.train(prompts, iterations, callback=tick)
    load_after = os.getloadavg()[0]
    per_iter = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    cpu_iter = [b - a for a, b in zip(cpu[:-1], cpu[1:])]
    steady = per_iter[1:]
    med = statistics.median(steady)
    B = cfg.batch_size
    tokens = [m["completions/mean_length"] * B for m in metrics]
    out = {
        "impl": "rlhf_lab" if value == "separate" else "rlhf_lab_shared_value_head",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "iterations": iterations,
        "batch_size": B,
        "num_mini_batches": cfg.num_mini_batches,
        "num_ppo_epochs": cfg.num_ppo_epochs,
        "prompt_len": anchor.PROMPT_LEN,
        "response_length": cfg.response_length,
        "seconds_per_iteration": round(med, 4),
        "episodes_per_second": round(B / med, 3),
        "tokens_generated_per_second": round(statistics.median(tokens[1:]) / med, 1),
        "seconds_per_iteration_min": round(min(steady), 4),
        "first_iteration_seconds": round(per_iter[0], 4),
        "cpu_seconds_per_iteration": round(statistics.median(cpu_iter[1:]), 4),
        "phase_seconds_median": {
            "rollout": round(statistics.median(m["time/rollout"] for m in metrics[1:]), 4),
            "scoring_ref_value_reward_gae": round(statistics.median(m["time/score"] for m in metrics[1:]), 4),
            "ppo_update": round(statistics.median(m["time/update"] for m in metrics[1:]), 4),
        },
        "iteration_seconds": [round(x, 4) for x in per_iter],
        "build_seconds": round(build_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "loadavg_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        "learning_rate": lr,
        "final_metrics": {k: round(v, 6) for k, v in metrics[-1].items() if not k.startswith("time/")},
    }
    if all_scores:
        out["scores"] = [round(m["objective/scores"], 6) for m in metrics]
        out["kls"] = [round(m["objective/kl"], 6) for m in metrics]
    return out


def worker_trl_learn(iterations: int, lr: float, threads: int, anchor_dir: Path, task: str = "random-rm") -> dict:
    """TRL on the anchor config, recording the mean score and KL of every iteration."""
    import shutil
    import tempfile
    import warnings

    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    anchor = load_anchor(anchor_dir)
    import transformers
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    hf_logging.set_verbosity_error()
    tokenizer, rng = anchor.build_tokenizer()
    dataset = anchor.build_dataset(tokenizer, rng)
    policy, ref_policy, value_model, reward_model = anchor.build_models(tokenizer)
    if task == "token-set":
        reward_model = token_set_reward_model(prompt_len=anchor.PROMPT_LEN, response_len=anchor.RESPONSE_LEN)
    logs = []

    class Rec(TrainerCallback):
        def on_log(self, args, state, control, logs_=None, **kw):
            pass

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: F811
            if logs and "objective/scores" in logs:
                logs_list.append(dict(logs))

    logs_list = logs
    outdir = tempfile.mkdtemp(prefix="trl_ppo_learn_")
    cfg = PPOConfig(
        output_dir=outdir, per_device_train_batch_size=anchor.BATCH, gradient_accumulation_steps=1,
        num_mini_batches=1, total_episodes=iterations * anchor.BATCH, response_length=anchor.RESPONSE_LEN,
        num_ppo_epochs=anchor.NUM_PPO_EPOCHS, kl_coef=anchor.KL_COEF, learning_rate=lr, seed=anchor.SEED,
        report_to="none", eval_strategy="no", save_strategy="no", num_sample_generations=0, bf16=False,
        fp16=False, logging_steps=1, disable_tqdm=True, local_rollout_forward_batch_size=anchor.BATCH,
        use_cpu=True, dataloader_num_workers=0,
    )
    trainer = PPOTrainer(args=cfg, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                         reward_model=reward_model, train_dataset=dataset, value_model=value_model)
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.add_callback(Rec())
    trainer.train()
    shutil.rmtree(outdir, ignore_errors=True)
    return {
        "impl": "trl", "iterations": iterations, "learning_rate": lr,
        "scores": [round(log["objective/scores"], 6) for log in logs],
        "kls": [round(log["objective/kl"], 6) for log in logs],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }


# ----------------------------------------------------------------------------- orchestration
def wait_quiet(max_wait: float) -> float:
    def snap():
        v = list(map(int, open("/proc/stat").readline().split()[1:]))
        return sum(v), v[3] + v[4]

    deadline = time.time() + max_wait
    while True:
        t0, i0 = snap()
        time.sleep(3)
        t1, i1 = snap()
        busy = 1 - (i1 - i0) / max(1, t1 - t0)
        if busy < 0.10 or time.time() > deadline:
            return busy


def run_json(cmd, env) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["ours", "trl-learn"], help="run one worker and print its JSON line")
    ap.add_argument("iterations_pos", nargs="?", type=int, help="iterations of a worker run")
    ap.add_argument("--runs", type=int, default=3, help="pairs of throughput runs (alternating order)")
    ap.add_argument("--iterations", type=int, default=10, help="PPO iterations per throughput run (first = warm-up)")
    ap.add_argument("--lr", type=float, default=3e-6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--learning-iterations", type=int, default=40, help="0 skips the learning comparison")
    ap.add_argument("--learning-lr", type=float, default=1e-4)
    ap.add_argument("--learning-task", choices=LEARNING_TASKS, default="token-set",
                    help="token-set: reward = number of response tokens in a fixed set of 32 ids (a rule both "
                         "trainers see as the same one-label classifier); random-rm: the anchor's random GPT-2 "
                         "reward model")
    ap.add_argument("--reward", choices=LEARNING_TASKS, default="random-rm",
                    help="a worker's reward model (throughput runs: the anchor's, random-rm)")
    ap.add_argument("--all-scores", action="store_true")
    ap.add_argument("--anchor", type=Path, default=DEFAULT_ANCHOR)
    ap.add_argument("--trl-python", type=Path, default=DEFAULT_TRL_PYTHON)
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to this many s for idle CPUs before each run")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ppo_throughput.jsonl")
    ap.add_argument("--skip-trl", action="store_true", help="only our implementation")
    ap.add_argument("--ours-value", choices=["separate", "shared"], default="separate",
                    help="value function of our runs: the anchor's separate value model (default, TRL-comparable) "
                         "or a value head on the policy trunk (informational)")
    a = ap.parse_args()

    if a.worker:
        n = a.iterations_pos or a.iterations
        if a.worker == "ours":
            res = worker_ours(n, a.lr, a.threads, a.anchor, a.all_scores, a.ours_value, a.reward)
        else:
            res = worker_trl_learn(n, a.lr, a.threads, a.anchor, a.reward)
        print(json.dumps(res), flush=True)
        return

    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    me = [sys.executable, str(Path(__file__).resolve())]
    trl_cmd = [str(a.trl_python), str(a.anchor / "bench_trl_ppo.py"), str(a.iterations), "--threads", str(a.threads),
               "--lr", str(a.lr)]
    ours_cmd = me + ["--worker", "ours", str(a.iterations), "--threads", str(a.threads), "--lr", str(a.lr),
                     "--anchor", str(a.anchor), "--ours-value", a.ours_value]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    out = open(a.out, "a")

    def emit(obj):
        line = json.dumps(obj)
        print(line, flush=True)
        out.write(line + "\n")
        out.flush()

    raw = {"trl": [], "rlhf_lab": []}
    for r in range(a.runs):
        order = ["trl", "rlhf_lab"] if r % 2 == 0 else ["rlhf_lab", "trl"]
        for impl in order:
            if impl == "trl" and a.skip_trl:
                continue
            busy = wait_quiet(a.wait_quiet) if a.wait_quiet > 0 else None
            res = run_json(trl_cmd if impl == "trl" else ours_cmd, env)
            res.pop("phase_seconds_per_iteration_gen_score_update_other", None)
            res.update(run=r, kind="throughput_run", when=stamp, cpu_busy_before=busy)
            raw[impl].append(res)
            emit(res)

    keys = ["seconds_per_iteration", "episodes_per_second", "tokens_generated_per_second", "peak_rss_mb",
            "cpu_seconds_per_iteration"]
    med = {impl: {k: round(statistics.median(r[k] for r in rs), 4) for k in keys} for impl, rs in raw.items() if rs}
    summary = {"kind": "throughput_summary", "when": stamp, "runs": a.runs, "iterations": a.iterations, "median": med}
    if raw["trl"] and raw["rlhf_lab"]:
        summary["ratio_episodes_per_second"] = round(
            med["rlhf_lab"]["episodes_per_second"] / med["trl"]["episodes_per_second"], 3)
        summary["ratio_peak_rss"] = round(med["rlhf_lab"]["peak_rss_mb"] / med["trl"]["peak_rss_mb"], 3)
        # the fastest steady iteration of each run is far less sensitive to a busy neighbour
        best = {impl: statistics.median(r["seconds_per_iteration_min"] for r in rs) for impl, rs in raw.items()}
        summary["ratio_episodes_per_second_best_iteration"] = round(best["trl"] / best["rlhf_lab"], 3)
        summary["ratio_episodes_per_second_per_pair"] = [
            round(o["episodes_per_second"] / t["episodes_per_second"], 3) for t, o in zip(raw["trl"], raw["rlhf_lab"])]
    emit(summary)

    if a.learning_iterations > 0:
        n = a.learning_iterations
        learn = {}
        cmds = {"rlhf_lab": me + ["--worker", "ours", str(n), "--threads", str(a.threads), "--lr", str(a.learning_lr),
                                  "--anchor", str(a.anchor), "--all-scores",
                                  "--reward", a.learning_task]}
        if not a.skip_trl:
            cmds["trl"] = [str(a.trl_python)] + me[1:] + ["--worker", "trl-learn", str(n), "--threads", str(a.threads),
                                                          "--lr", str(a.learning_lr), "--anchor", str(a.anchor),
                                                          "--reward", a.learning_task]
        for impl, cmd in cmds.items():
            if a.wait_quiet > 0:
                wait_quiet(a.wait_quiet)
            res = run_json(cmd, env)
            s = res["scores"]
            emit({"kind": "learning_run", "when": stamp, "impl": impl, "iterations": n,
                  "learning_rate": a.learning_lr, "scores": s, "kls": res["kls"]})
            learn[impl] = {
                "score_first5": round(statistics.mean(s[:5]), 5),
                "score_last5": round(statistics.mean(s[-5:]), 5),
                "gain": round(statistics.mean(s[-5:]) - statistics.mean(s[:5]), 5),
                "kl_last5": round(statistics.mean(res["kls"][-5:]), 5),
                "scores": s, "kls": res["kls"],
            }
        emit({"kind": "learning", "when": stamp, "iterations": n, "learning_rate": a.learning_lr,
              "task": a.learning_task, **learn})
    out.close()


if __name__ == "__main__":
    main()
