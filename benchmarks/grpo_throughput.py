#!/usr/bin/env python
"""Critic-free group methods: rlhf_lab against TRL 1.16's GRPOTrainer and RLOOTrainer, side by side.

The setup is the shared one (``shared_setup.py``: the 512-token BPE, the 256 prompts of 8 tokens,
the 2-layer width-128 GPT-2 after ``torch.manual_seed(0)``), with the GRPO config of issue 16:
4 prompts x G = 8 completions = 32 episodes per iteration, 32-token completions with no stop,
temperature 0.7, beta 0.04 with the k3 KL in the loss, mu = 1, epsilon 0.2, ``loss_type="dapo"``,
group-scaled advantages, AdamW lr 1e-5 constant (eps 1e-8, no weight decay), gradient clipping
1.0, the token-set reward (ids 64-95 among the 32 completion ids), fp32, 2 threads.
TRL's side is ``trl/grpo_worker.py`` run by TRL 1.16's interpreter. Ours runs
``rlhf_lab.ppo.PPOTrainer`` with ``GRPOConfig`` (``RLOOConfig``), the config names of DESIGN.md
and issue 16 (``advantage_estimator``, ``num_generations``, ``beta``, ``epsilon``,
``loss_type``, ``scale_rewards``, ``num_iterations``; TRL's names are aliases of our fields, listed
in ``Config.TRL_NAMES``); a library without them makes our worker print a line with
``"status": "not yet supported"`` and the reason, and the summary has no ratio.

Usage::

    python benchmarks/grpo_throughput.py --runs 3 --wait-quiet 60       # GRPO pairs, then the learning check
    python benchmarks/grpo_throughput.py --trainers grpo rloo --learning-iterations 0
    python benchmarks/grpo_throughput.py --worker ours 10               # one run of ours, one JSON line

Each run is its own subprocess; runs alternate (TRL first, then ours first, ...); JSON lines (every
run, then per trainer a summary with medians, ratios, per-pair ratios and the phase split:
generation, reference forward, update) are appended to ``results/grpo_throughput.jsonl``.
Learning check: 40 iterations at lr 1e-4 on the same reward, mean score of iterations 1-5 and 36-40.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402
import shared_setup  # noqa: E402

PROMPTS_PER_ITERATION, GROUP = 4, 8
EPISODES = PROMPTS_PER_ITERATION * GROUP


def ours_config(estimator: str, lr: float, beta: float, mu: int):
    """Our config for ``estimator`` with TRL's field names, or :class:`harness.NotYetSupported`."""
    import rlhf_lab.ppo as ppo

    name = {"grpo": "GRPOConfig", "rloo": "RLOOConfig"}[estimator]
    Config = getattr(ppo, name, None)
    if Config is None:
        raise harness.NotYetSupported(f"rlhf_lab.ppo has no {name} yet (issue 16)")
    wanted = dict(
        advantage_estimator=estimator, num_generations=GROUP, beta=beta, epsilon=0.2, num_iterations=mu,
        batch_size=EPISODES, response_length=shared_setup.RESPONSE_TOKENS, stop_token=None, temperature=0.7,
        learning_rate=lr, adam_eps=1e-8, weight_decay=0.0, max_grad_norm=1.0, seed=shared_setup.SEED,
        device="cpu", dtype="float32", progress=False,
    )
    if estimator == "grpo":
        wanted.update(loss_type="dapo", scale_rewards="group", kl_estimator="k3")
    if dataclasses.is_dataclass(Config):
        known = {f.name for f in dataclasses.fields(Config)} | set(getattr(Config, "TRL_NAMES", {}))
        missing = sorted(set(wanted) - known)
        if missing:
            raise harness.NotYetSupported(f"{name} has no field(s) {', '.join(missing)} yet (issue 16)")
    try:
        return Config(**wanted)
    except (TypeError, ValueError) as e:
        raise harness.NotYetSupported(f"{name}(...) refused the benchmark's config: {e}") from None


def kl_per_token(m: dict) -> float:
    """The KL of one iteration in TRL's unit: nats per completion token."""
    if "loss/kl" in m:
        return m["loss/kl"]
    return m["objective/kl"] / max(m["completions/mean_length"], 1e-12)


def _median_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(sorted(times)[repeats // 2], 4)


def bare_floors(trainer, prompts) -> dict:
    """Seconds of the bare computations under each phase of our iteration, same shapes and threads,
    timed after the run (median of 5): ``generation``, the model's own KV-cache loop (prompt, then
    31 one-token steps of the 32 rows, greedy: no sampling, log-probs, masks or positions);
    ``forward``, one no-grad forward of the 32 x 40 batch (what the reference forward costs);
    ``forward_backward_step``, one forward and backward of that batch with a loss on its logits
    and an AdamW step on a copy of the policy (what the update costs)."""
    import copy

    import torch

    from rlhf_lab.ppo.rollout import cache_argument

    ids = trainer.encode_prompts(prompts)
    batch = [ids[i] for i in trainer._next_indices(len(ids))]
    rollout = trainer.rollout(batch)
    policy = copy.deepcopy(trainer.policy).eval()
    x, mask = rollout.input_ids, rollout.attention_mask
    prompt, name = x[:, : rollout.response_start], cache_argument(policy)

    @torch.no_grad()
    def generation():
        out = policy(input_ids=prompt, use_cache=True, logits_to_keep=1)
        for _ in range(shared_setup.RESPONSE_TOKENS - 1):
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            out = policy(input_ids=token, use_cache=True, logits_to_keep=1, **{name: getattr(out, name)})

    @torch.no_grad()
    def forward():
        policy(input_ids=x, attention_mask=mask)

    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-9, foreach=True)

    def forward_backward_step():
        optimizer.zero_grad(set_to_none=True)
        policy(input_ids=x, attention_mask=mask).logits.float().logsumexp(-1).mean().backward()
        optimizer.step()

    return {"generation": _median_seconds(generation), "forward": _median_seconds(forward),
            "forward_backward_step": _median_seconds(forward_backward_step)}


def worker_ours(iterations: int, estimator: str, lr: float, threads: int, beta: float, mu: int,
                floors_wanted: bool = False) -> dict:
    import torch

    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    head = {"impl": f"rlhf_lab-{estimator}", "revision": harness.git_revision(), "iterations": iterations,
            "learning_rate": lr}
    try:
        config = ours_config(estimator, lr, beta, mu)
    except harness.NotYetSupported as e:
        return {**head, "status": harness.NOT_YET, "reason": str(e)}
    from rlhf_lab.ppo import PPOTrainer

    t_build = time.perf_counter()
    tokenizer, prompts = shared_setup.tokenizer_and_prompts()
    policy = shared_setup.build_policy(tokenizer)
    reward = shared_setup.token_set_reward_model(shared_setup.GRPO_TOKEN_SET)
    rows_scored = []
    full_length = shared_setup.PROMPT_TOKENS + shared_setup.RESPONSE_TOKENS

    def count_rows(_module, args, kwargs, _out):
        # the backbone is called with keywords; rlhf_lab's one-row probe of how a classifier
        # reads its sequence (reward_model.reads_last_token) is not a scoring batch
        ids = args[0] if args else kwargs["input_ids"]
        if ids.shape[1] == full_length:
            rows_scored.append(int(ids.shape[0]))

    reward.backbone.register_forward_hook(count_rows, with_kwargs=True)
    try:
        trainer = PPOTrainer(policy, tokenizer, reward, config)
    except (TypeError, ValueError, NotImplementedError) as e:
        return {**head, "status": harness.NOT_YET, "reason": f"PPOTrainer refused the config: {e}"}
    build_s = time.perf_counter() - t_build
    critic = [getattr(trainer, name, None) for name in ("value_head", "value_model")]
    value_parameters = sum(p.numel() for m in critic if m is not None for p in m.parameters())

    clock = harness.IterationClock()
    with harness.RunConditions() as conditions:
        clock.tick()
        metrics = trainer.train(prompts, iterations, callback=clock.tick)
    if rows_scored and set(rows_scored) != {EPISODES}:
        return {**head, "status": "config mismatch",
                "reason": f"the reward model scored batches of {sorted(set(rows_scored))} completions, expected {EPISODES}"}
    peak_rss = harness.peak_rss_mb()  # before the floors below, which allocate on their own
    floors = bare_floors(trainer, prompts) if floors_wanted else {}
    tokens = sorted(m["completions/mean_length"] * EPISODES for m in metrics)[len(metrics) // 2]
    phases = [{k[len("time/"):]: v for k, v in m.items() if k.startswith("time/")} for m in metrics]
    scores = [m["objective/scores"] for m in metrics]
    return {
        **head, "status": "ok", "torch_version": torch.__version__, "threads": torch.get_num_threads(),
        "episodes_per_iteration": EPISODES, "num_generations": GROUP, "num_iterations_mu": mu, "beta": beta,
        "config": {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, type(None)))},
        "value_parameters": value_parameters,
        **clock.summary(EPISODES, tokens),
        "phase_seconds_median": harness.median_phases(phases),
        "build_seconds": round(build_s, 3),
        "floor_seconds": floors,
        "peak_rss_mb": peak_rss,
        **conditions.fields(),
        "scores": [round(s, 4) for s in scores],
        # TRL's logged "kl": the k3 estimate averaged over the batch's completion tokens, read in the
        # update's forward; ours the same (loss/kl with loss_type "dapo", mu = 1) or, for an
        # estimator with the KL in the reward, objective/kl (k1 summed per response) per token
        "kls": [round(kl_per_token(m), 6) for m in metrics],
        "kls_k1_per_response": [round(m["objective/kl"], 6) for m in metrics],
        **{k: v for k, v in harness.learning_summary(scores).items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["ours"], help="run our worker once and print its JSON line")
    harness.add_run_options(ap, "1.16", "grpo_throughput.jsonl")
    ap.add_argument("--estimator", choices=["grpo", "rloo"], default="grpo", help="a worker run's estimator")
    ap.add_argument("--trainers", nargs="+", choices=["grpo", "rloo"], default=["grpo"],
                    help="which comparisons to run: GRPO (GRPOTrainer) and/or RLOO (RLOOTrainer)")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--num-iterations", type=int, default=1, help="mu")
    ap.add_argument("--learning-iterations", type=int, default=40, help="0 skips the learning check")
    ap.add_argument("--learning-lr", type=float, default=1e-4)
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--floors", action="store_true",
                    help="our worker also times the bare computations under each phase (after the run)")
    a = ap.parse_args()

    if a.worker:
        n = a.iterations_pos or a.iterations
        harness.print_line(worker_ours(n, a.estimator, a.lr, a.threads, a.beta, a.num_iterations,
                                     floors_wanted=a.floors))
        return

    trl = None if a.skip_trl else harness.require_python(harness.trl_python("1.16", a.trl_python), "1.16")
    me = [sys.executable, str(Path(__file__).resolve())]
    when, emit = harness.stamp(), harness.JsonLines(a.out)

    def commands(estimator: str, n: int, lr: float) -> dict:
        shared = ["--lr", lr, "--beta", a.beta, "--num-iterations", a.num_iterations, "--threads", a.threads]
        cmds = {} if a.skip_trl else {"trl": [trl, harness.TRL_DIR / "grpo_worker.py", n, "--trainer", estimator] + shared}
        cmds["rlhf_lab"] = me + ["--worker", "ours", n, "--estimator", estimator] + shared + (
            ["--floors"] if a.floors else [])
        return cmds

    for estimator in a.trainers:
        raw = harness.alternating_runs(commands(estimator, a.iterations, a.lr), a.runs, emit, a.wait_quiet, when=when)
        summary = harness.side_by_side(raw, "rlhf_lab", "trl", harness.THROUGHPUT_KEYS)
        for side, rows in raw.items():
            measured = [r for r in rows if "phase_seconds_median" in r]
            if measured:
                summary.setdefault("phase_seconds_median", {})[side] = harness.median_phases(
                    [r["phase_seconds_median"] for r in measured], skip_first=False)
        pending = [r["reason"] for r in raw["rlhf_lab"] if r.get("status", "ok") != "ok"]
        if pending:
            summary["rlhf_lab_status"] = {"status": raw["rlhf_lab"][0]["status"], "reason": pending[0]}
        emit({"kind": "throughput_summary", "when": when, "trainer": estimator, "runs": a.runs,
              "iterations": a.iterations, "revision": harness.git_revision(), **summary})

    if a.learning_iterations > 0:
        n, lr = a.learning_iterations, a.learning_lr
        learned = harness.learning_runs(commands("grpo", n, lr), emit, a.wait_quiet, when=when, iterations=n,
                                        learning_rate=lr)
        emit({"kind": "learning", "when": when, "trainer": "grpo", "iterations": n, "learning_rate": lr, **learned})


if __name__ == "__main__":
    main()
