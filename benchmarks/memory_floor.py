#!/usr/bin/env python
"""Peak RSS of a process stage by stage, up to the moment a PPO run on the anchor config could start.

``ru_maxrss`` after: the bare interpreter, ``import torch``, transformers' GPT-2, the trainer's
module (``rlhf_lab.ppo``, or ``trl.experimental.ppo`` with ``--trainer trl`` run from TRL's venv),
and the shared setup's tokenizer and four models (``shared_setup.py``). It is the floor under any peak-memory figure that
``ppo_throughput.py`` reports for this config; prints one JSON line (and appends it to
``results/memory_floor.jsonl``).

    python benchmarks/memory_floor.py
    benchmarks/.venvs/trl-1.12/bin/python benchmarks/memory_floor.py --trainer trl
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trainer", choices=["rlhf_lab", "trl"], default="rlhf_lab")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "memory_floor.jsonl")
    a = ap.parse_args()
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TRL_EXPERIMENTAL_SILENCE"):
        os.environ.setdefault(k, "1")

    stages = {"python": peak_mb()}
    import torch

    torch.set_num_threads(2)
    stages["import torch"] = peak_mb()
    from transformers import GPT2LMHeadModel  # noqa: F401

    stages["+ transformers GPT-2"] = peak_mb()
    if a.trainer == "rlhf_lab":
        sys.path.insert(0, str(HERE.parent))
        import rlhf_lab.ppo  # noqa: F401
    else:
        from trl.experimental.ppo import PPOTrainer  # noqa: F401
    stages[f"+ {a.trainer} PPO module"] = peak_mb()

    sys.path.insert(0, str(HERE))
    import shared_setup

    tokenizer, _ = shared_setup.tokenizer_and_prompts()
    models = shared_setup.ppo_models(tokenizer)  # noqa: F841
    stages["+ tokenizer and the 4 anchor models"] = peak_mb()

    line = {"kind": "memory_floor", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "trainer": a.trainer,
            "torch_version": torch.__version__, "peak_rss_mb_after": stages}
    print(json.dumps(line), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
