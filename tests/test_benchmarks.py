"""benchmarks/: the shared setup is the one the TRL figures were measured on, the rule reward models
score what they say, our workers run (or say cleanly what the library does not offer yet), and the
GPU check runs end to end on CPU in its smoke mode.

Not timed: figures come from the scripts run by hand (see benchmarks/README.md). TRL itself is
not installed here: its workers run only in their own environments (benchmarks/trl/make_venvs.sh)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf_lab.reward_model import score_with_model

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402
import shared_setup  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run(*args, timeout=600):
    out = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]


@pytest.fixture(scope="module")
def setup():
    tokenizer, prompts = shared_setup.tokenizer_and_prompts()
    return tokenizer, prompts, shared_setup.ppo_models(tokenizer)


def test_shared_setup_is_the_one_the_trl_figures_were_measured_on(setup):
    # Compared once, element by element, with the TRL PPO and GRPO yardsticks' own builders (identical
    # vocabulary and merges, the 256 prompts, all four models' weights); these fingerprints pin that result.
    tokenizer, prompts, models = setup
    vocab = hashlib.sha256(repr(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16]
    assert (len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (512, 0, 1, 2)
    assert vocab == "f0fcf9b89ea13b62"
    assert len(prompts) == 256 and {len(p) for p in prompts} == {8}
    assert prompts[0] == [499, 456, 363, 444, 437, 406, 360, 377]
    assert hashlib.sha256(repr(prompts).encode()).hexdigest()[:16] == "5a82634cd53adc4d"
    # the weights' sums, measured under ATEN_CPU_CAPABILITY=default and =avx2 (they differ by 2e-7 relative:
    # the vectorized normal sampler), so compared to 1e-5
    sums = [float(sum(v.double().sum() for v in m.state_dict().values() if v.is_floating_point())) for m in models]
    assert sums == pytest.approx([642.89905, 642.89905, 637.61204, 636.65585], rel=1e-5)
    assert [sum(p.numel() for p in m.parameters()) for m in models] == [478720, 478720, 478848, 478848]
    # the GRPO comparison hands TRL the prompts as text: each must give its own 8 ids back
    assert shared_setup.prompt_texts(tokenizer, prompts[:16])


def test_token_set_reward_counts_set_tokens_after_the_prompt():
    token_set = (3, 7, 11)
    rm = shared_setup.token_set_reward_model(token_set, prompt_len=4, response_len=6)
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
    # the function form TRL's GRPOTrainer calls on completion ids agrees with the model form
    rows = [row[4:] for row in ids.tolist()]
    full = torch.ones_like(ids)
    assert shared_setup.count_in_set(rows, token_set) == score_with_model(rm, ids, full).tolist()


def test_alternating_order_and_side_by_side_ratios():
    assert list(harness.alternate(["trl", "ours"], 3)) == [
        (0, "trl"), (0, "ours"), (1, "ours"), (1, "trl"), (2, "trl"), (2, "ours")]
    raw = {"ours": [{"episodes_per_second": 30.0, "peak_rss_mb": 400.0}, {"episodes_per_second": 36.0, "peak_rss_mb": 420.0},
                    {"status": harness.NOT_YET}],
           "trl": [{"episodes_per_second": 10.0, "peak_rss_mb": 600.0}, {"episodes_per_second": 12.0, "peak_rss_mb": 600.0}]}
    s = harness.side_by_side(raw, "ours", "trl", ["episodes_per_second", "peak_rss_mb"])
    assert s["median"]["ours"] == {"episodes_per_second": 33.0, "peak_rss_mb": 410.0}
    assert s["ratio"] == {"episodes_per_second": 3.0, "peak_rss_mb": round(410 / 600, 3)}
    assert s["ratio_per_pair"] == [3.0, 3.0]
    assert "ratio" not in harness.side_by_side({"ours": [{"status": harness.NOT_YET}], "trl": raw["trl"]}, "ours", "trl",
                                               ["episodes_per_second"])


def test_our_ppo_worker_runs_and_prints_one_json_line():
    (line,) = _run(BENCH / "ppo_throughput.py", "--worker", "ours", "3", "--threads", "1", "--ours-value", "shared",
                   "--reward", "token-set", "--record-scores")
    assert line["impl"] == "rlhf_lab_shared_value_head" and line["iterations"] == 3
    assert line["episodes_per_second"] > 0 and line["peak_rss_mb"] > 0
    assert len(line["scores"]) == 3 and all(0 <= s <= 32 for s in line["scores"])
    assert set(line["phase_seconds_median"]) == {"rollout", "scoring_ref_value_reward_gae", "ppo_update"}


def test_our_grpo_worker_runs_or_says_what_is_missing():
    (line,) = _run(BENCH / "grpo_throughput.py", "--worker", "ours", "2", "--threads", "1", "--floors")
    assert line["impl"] == "rlhf_lab-grpo"
    if line["status"] == harness.NOT_YET:
        assert "GRPOConfig" in line["reason"] or "field" in line["reason"]
    else:
        assert line["status"] == "ok", line
        assert line["episodes_per_iteration"] == 32 and len(line["scores"]) == 2
        assert line["value_parameters"] == 0  # critic-free: no value head, no value model
        assert set(line["floor_seconds"]) == {"generation", "forward", "forward_backward_step"}
        assert all(s > 0 for s in line["floor_seconds"].values())
        # TRL's unit: the first iteration's policy is the reference (KL 0), then nats per token, small
        assert line["kls"][0] == 0 and 0 <= line["kls"][1] < 0.1 and len(line["kls_k1_per_response"]) == 2


def test_smollm2_workers_run_on_a_tiny_model():
    (full,) = _run(BENCH / "smollm2_memory.py", "--worker", "ours", "--mode", "full", "2", "--model", "tiny",
                   "--threads", "1")
    assert full["status"] == "ok" and full["batch_size"] == 8 and full["prompt_len"] == 24
    assert full["seconds_per_iteration"] > 0 and full["peak_rss_mb_by_stage"]["trainer built"] <= full["peak_rss_mb"]
    for mode in ("lora", "lora-gc"):
        (line,) = _run(BENCH / "smollm2_memory.py", "--worker", "ours", "--mode", mode, "2", "--model", "tiny",
                       "--threads", "1")
        assert line["status"] == "ok", line
        assert line["trainable_parameters"] < full["trainable_parameters"] / 4  # adapters and the value head


def test_orchestrators_name_the_recipe_when_trl_is_missing(tmp_path):
    for script in ("ppo_throughput.py", "grpo_throughput.py"):
        out = subprocess.run([sys.executable, str(BENCH / script), "--runs", "1", "--trl-python", str(tmp_path / "none"),
                              "--out", str(tmp_path / "x.jsonl")], capture_output=True, text=True, env=ENV, timeout=120)
        assert out.returncode != 0 and "make_venvs.sh" in out.stderr
        assert not (tmp_path / "x.jsonl").exists()


def test_trl_lock_files_pin_the_versions_the_recipe_installs():
    recipe = (BENCH / "trl" / "make_venvs.sh").read_text()
    for version, lock in (("1.12.0", "requirements-trl-1.12.txt"), ("1.16.0", "requirements-trl-1.16.txt")):
        assert lock in recipe
        pins = [x for x in (BENCH / "trl" / lock).read_text().splitlines() if x and not x.startswith("#")]
        assert f"trl=={version}" in pins and all("==" in x for x in pins)
        assert not any(x.startswith(("torch==", "rlhf")) for x in pins)


def test_gpu_check_runs_in_smoke_mode_on_cpu(tmp_path):
    out = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--smoke", str(tmp_path)], capture_output=True, text=True,
                         env={**ENV, "PYTHON": sys.executable}, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    steps = {x["step"]: x for x in lines if x.get("kind") == "gpu_check_step"}
    assert list(steps) == ["cuda_tests", "ppo_gpu_throughput", "unit5_gpu_sizes", "smollm2_bf16", "smollm2_fp32",
                           "smollm2_lora_gc_bf16"]
    assert all(s["rc"] == 0 for s in steps.values())
    assert lines[0]["kind"] == "gpu_check_device"
    assert lines[-1]["kind"] == "gpu_check_summary" and lines[-1]["failed"] == []
    kinds = [x["kind"] for x in lines if x.get("kind", "").startswith("ppo_gpu")]
    assert kinds == ["ppo_gpu_throughput_run", "ppo_gpu_throughput_run", "ppo_gpu_profile", "ppo_gpu_throughput_summary"]
    run = next(x for x in lines if x.get("kind") == "ppo_gpu_throughput_run")
    assert run["episodes_per_second"] > 0 and set(run["phase_seconds_median"]) == {"rollout", "score", "update"}
    smol = [x for x in lines if x.get("impl") == "rlhf_lab-full"]
    assert [x["dtype"] for x in smol] == ["bfloat16", "float32"] and all(x["status"] == "ok" for x in smol)
    (lora,) = [x for x in lines if x.get("impl") == "rlhf_lab-lora-gc"]
    assert lora["status"] == "ok" and lora["dtype"] == "bfloat16"
    pytest_line = next(x for x in lines if x.get("kind") == "gpu_check_pytest")
    assert pytest_line["collected"] >= 1  # the CUDA cases exist (skipped without a GPU)
    assert (tmp_path / "gpu_check.log").stat().st_size > 0 and (tmp_path / "05_ppo_pipeline.unexecuted.py").exists()
    assert "Model config" not in (tmp_path / "gpu_check.log").read_text()  # no config warnings
