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

The same run with ``PPOConfig(distributed="fsdp")`` (FSDP2, ``fully_shard``, on gloo) shards the
policy and the value head over the 2 ranks; measured (AVX2, 1 thread): the weights differ from the
one-process run's by at most 2.5e-7, 1.3e-6 and 4.5e-6 after iterations 1, 2, 3, the continuous
metrics by at most 6e-5 relative (``val/explained_variance`` at iteration 3), the value clip fraction
by 0.027 (one token); the same tolerances apply. Each rank holds half of every parameter (dim 0).
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

from rlhf_lab.ppo.distributed import fsdp2_available

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


def _two_processes(out: Path, iterations: int, resume_after: int, distributed: str = "ddp") -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(WORKER), str(out), str(iterations), str(resume_after), distributed]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> dict:
    """The one-process run both tests compare with."""
    return _one_process(tmp_path_factory.mktemp("one") / "one.pt", 3)


def _assert_same_run(one: dict, two: dict) -> None:
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
        assert one[part].keys() == two[part].keys()
        for name, weight in one[part].items():
            torch.testing.assert_close(two[part][name], weight, rtol=1e-4, atol=1e-4, msg=f"{part}.{name}")


def test_two_gloo_processes_equal_one_process(tmp_path, one):
    two = _two_processes(tmp_path / "two.pt", 3, resume_after=2)
    assert (tmp_path / "two.pt.checkpoint.pt").exists()  # written once, by rank 0
    _assert_same_run(one, two)
    # the runs trained: the weights moved away from the starting model's
    from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer

    start = tiny_causal_lm(word_tokenizer(), n_layer=2, n_embd=32, n_head=2, seed=0).state_dict()
    assert any(not torch.equal(start[name], w) for name, w in one["policy"].items())


@pytest.mark.skipif(not fsdp2_available(), reason="torch < 2.6: no FSDP2 (fully_shard)")
def test_two_gloo_processes_with_fsdp_equal_one_process_and_hold_half_the_weights(tmp_path, one):
    two = _two_processes(tmp_path / "two.pt", 3, resume_after=2, distributed="fsdp")
    assert (tmp_path / "two.pt.checkpoint.pt").exists()  # gathered by every rank, written by rank 0
    _assert_same_run(one, two)
    # sharded on dim 0: rank r holds rows [r * ceil(n / 2), (r + 1) * ceil(n / 2)) of each parameter
    (full,), halves = one["local_numel"], two["local_numel"]
    # the reference (the trainer's frozen copy) is sharded as well: about half of it on each rank
    reference, ref_halves = full.pop("reference"), [half.pop("reference") for half in halves]
    assert sum(ref_halves) == reference and all(0.45 * reference < n < 0.55 * reference for n in ref_halves)
    assert len(halves) == 2 and halves[0].keys() == halves[1].keys() == full.keys()
    shapes = {**{f"policy.{k}": v.shape for k, v in one["policy"].items()},
              **{f"value_head.{k}": v.shape for k, v in one["value"].items()}}
    for name, numel in full.items():
        rows = shapes[name][0]
        per_row, first = numel // rows, -(-rows // 2)
        assert halves[0][name] == first * per_row and halves[1][name] == (rows - first) * per_row, name
    assert sum(halves[0].values()) + sum(halves[1].values()) == sum(full.values())
    assert sum(halves[1].values()) > 0.45 * sum(full.values())  # rank 1 really holds half, not nothing
    # its optimizer state is keyed by parameter names: a one-process trainer refuses it clearly
    from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
    from rlhf_lab.ppo import PPOTrainer
    from rlhf_lab.ppo.rewards import TargetWordReward

    tok = word_tokenizer()
    with pytest.raises(ValueError, match="distributed='fsdp' on several processes"):
        PPOTrainer.load(tmp_path / "two.pt.checkpoint.pt", tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2), tok,
                        TargetWordReward("good"))


def test_distributed_field_is_checked(monkeypatch):
    from rlhf_lab.ppo import PPOConfig, distributed

    with pytest.raises(ValueError, match="distributed"):
        PPOConfig(distributed="zero3")
    assert PPOConfig().distributed == "ddp"
    # an older torch (no FSDP2) is refused with the field named, before any collective runs
    monkeypatch.setattr(distributed, "fsdp2_available", lambda: False)
    with pytest.raises(ValueError, match=r"PPOConfig.distributed='fsdp' needs torch >= 2.6"):
        distributed.DataParallel(torch.device("cpu"), "fsdp")
