"""Measure the distributions behind the learning thresholds of tests/test_critic_free_trainer.py.

Runs the tests' training set-ups (each critic-free estimator on the target-word task, and DPO on
the toy domain's preference pairs, tests/test_dpo_lm.py) for several
seeds (the model's initialization and the trainer's seed) and prints one JSON line per estimator
and seed; the thresholds in the test come from these numbers with a margin. Run it under each CPU
capability, e.g.::

    for cap in default avx2; do
        ATEN_CPU_CAPABILITY=$cap python tests/measure_critic_free_thresholds.py --seeds 8
    done

Not collected by pytest (the file name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from test_critic_free_trainer import LEARNING_ITERATIONS, learning_run  # noqa: E402
from test_dpo_lm import dpo_run  # noqa: E402

from rlhf_lab.course import toy_domain  # noqa: E402
from rlhf_lab.course.models import word_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--estimators", default="grpo,rloo,dr_grpo,reinforce_pp,dpo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok, toy_tok = word_tokenizer(), toy_domain.tokenizer()
    for estimator in args.estimators.split(","):
        for seed in range(args.seeds):
            out = dpo_run(toy_tok, seed) if estimator == "dpo" else learning_run(tok, estimator, seed)
            print(json.dumps({"estimator": estimator, "seed": seed, "iterations": LEARNING_ITERATIONS,
                              "cap": os.environ.get("ATEN_CPU_CAPABILITY", "native"), "threads": args.threads,
                              **out}), flush=True)


if __name__ == "__main__":
    main()
