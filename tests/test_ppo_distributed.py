"""Data-parallel PPO on torch.distributed (issue 18): 2 processes launched by ``torchrun`` on the
gloo backend (CPU) equal 1 process with the same global batch, seeds and prompts, over 3
iterations, with rank 0 saving a checkpoint after 2 and every rank resuming from it.

Both runs sample the same responses (each rank uses its rows of the whole batch's uniforms), then
compute rewards, advantages, whitening, the adaptive KL and the metrics on the gathered batch, and
DDP averages the gradients of each rank's half of every minibatch. What differs is float rounding
(the gradient sum in the all-reduce, BLAS on 4 rows instead of 8). Measured (AVX2, 1 thread): the
weights differ by at most 2e-7, 1.3e-6 and 4.7e-6 after iterations 1, 2, 3, the continuous metrics by
less than 1e-5 relative; the tolerance is 1e-4. The clip fractions count tokens on either side of a
threshold, so that rounding moves a token across it: they differed by 0.006 and 0.016 (one token of a
minibatch, over 4 epochs) and are compared to within 0.05.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("_ddp_run.py")
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")


def _one_process(out: Path, iterations: int) -> dict:
    spec = importlib.util.spec_from_file_location("_ddp_run", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        module.run(str(out), iterations)
    finally:
        torch.set_num_threads(threads)
    return torch.load(out, weights_only=False)


def _two_processes(out: Path, iterations: int, resume_after: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(WORKER), str(out), str(iterations), str(resume_after)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return torch.load(out, weights_only=False)


def test_two_gloo_processes_equal_one_process(tmp_path):
    one = _one_process(tmp_path / "one.pt", 3)
    two = _two_processes(tmp_path / "two.pt", 3, resume_after=2)
    assert (tmp_path / "two.pt.checkpoint.pt").exists()  # written once, by rank 0
    assert len(one["metrics"]) == len(two["metrics"]) == 3
    for i, (a, b) in enumerate(zip(one["metrics"], two["metrics"])):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float) and math.isnan(a[key]):
                assert math.isnan(b[key]), (i, key)
            elif key.endswith("clipfrac"):
                assert abs(b[key] - a[key]) <= 0.05, (i, key, a[key], b[key])
            else:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-4), (i, key, a[key], b[key])
    for i, (a, b) in enumerate(zip(one["weights"], two["weights"])):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4, msg=f"policy after iteration {i + 1}")
    for part in ("policy", "value"):
        for name, weight in one[part].items():
            torch.testing.assert_close(two[part][name], weight, rtol=1e-4, atol=1e-4, msg=f"{part}.{name}")
    # the runs trained: the weights moved away from the starting model's
    from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer

    start = tiny_causal_lm(word_tokenizer(), n_layer=2, n_embd=32, n_head=2, seed=0).state_dict()
    assert any(not torch.equal(start[name], w) for name, w in one["policy"].items())
