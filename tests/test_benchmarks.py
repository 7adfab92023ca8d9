"""benchmarks/: the learning task's rule reward model scores what it says, and our worker runs.

Not timed: figures come from ``benchmarks/ppo_throughput.py`` run by hand (see its README)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf_lab.reward_model import score_with_model

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("ppo_throughput", ROOT / "benchmarks" / "ppo_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_token_set_reward_counts_set_tokens_after_the_prompt():
    bench = _load_benchmark()
    token_set = (3, 7, 11)
    rm = bench.token_set_reward_model(token_set, prompt_len=4, response_len=6)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 14, (64, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[5, 8:] = 0  # a response that ended early: its padding must not count
    ids[5, 8:] = 3
    expected = [sum(1 for t, m in zip(row[4:], mrow[4:]) if t in token_set and m)
                for row, mrow in zip(ids.tolist(), mask.tolist())]
    got = score_with_model(rm, ids, mask)
    assert got.tolist() == [float(e) for e in expected]
    # TRL reads the score head at the last response token, we at the last real token: any
    # position gives the same value.
    h = rm.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(h[:, 0], h[:, -1])


@pytest.mark.skipif(not (Path(os.environ.get("TRL_ANCHOR", "/work/shared/anchors/trl-ppo")) / "bench_trl_ppo.py").is_file(),
                    reason="the TRL anchor directory is not on this machine")
def test_our_benchmark_worker_runs_and_prints_one_json_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ppo_throughput.py"), "--worker", "ours", "3", "--threads", "1",
         "--ours-value", "shared", "--reward", "token-set", "--all-scores"],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    )
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["impl"] == "rlhf_lab_shared_value_head" and line["iterations"] == 3
    assert line["episodes_per_second"] > 0 and line["peak_rss_mb"] > 0
    assert len(line["scores"]) == 3 and all(0 <= s <= 32 for s in line["scores"])


def test_gpu_benchmark_script_runs_in_smoke_mode_on_cpu(tmp_path):
    out_file = tmp_path / "gpu.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ppo_gpu_throughput.py"), "--smoke", "--out", str(out_file)],
                         capture_output=True, text=True, env=env, timeout=300, check=True)
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    kinds = [x["kind"] for x in lines]
    assert kinds == ["ppo_gpu_throughput_run", "ppo_gpu_throughput_run", "ppo_gpu_profile", "ppo_gpu_throughput_summary"]
    assert lines[0]["episodes_per_second"] > 0 and set(lines[0]["phase_seconds_median"]) == {"rollout", "score", "update"}
    assert lines[2]["top_ops"] and all(op["self_ms"] >= 0 for op in lines[2]["top_ops"])
    assert len(out_file.read_text().splitlines()) == 4
    assert "Model config" not in out.stderr  # no config warnings
