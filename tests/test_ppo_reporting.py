"""Experiment logging through TensorBoard (issue 18): ``report_to="tensorboard"`` writes event files
in ``log_dir``; reading them back with TensorBoard's own reader gives every iteration's metrics at
its step, next to the CSV/JSONL log, which is still written."""

from __future__ import annotations

import json

import pytest

from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
from rlhf_lab.ppo import PPOConfig, PPOTrainer
from rlhf_lab.ppo.rewards import TargetWordReward

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tensorboard_event_files_hold_every_iteration(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tok = word_tokenizer()
    config = PPOConfig(batch_size=4, num_mini_batches=1, response_length=4, progress=False, device="cpu",
                       log_dir=str(tmp_path), report_to="tensorboard")
    history = PPOTrainer(tiny_causal_lm(tok, n_layer=1, n_embd=16, n_head=2), tok, TargetWordReward("good"),
                         config).train(["hello", "the cat is", "i see a", "good morning"], 2)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"objective/kl", "objective/scores", "loss/policy", "policy/clipfrac"} <= tags
    for key in ("objective/kl", "objective/scores", "loss/value"):
        read = events.Scalars(key)
        assert [e.step for e in read] == [1, 2]
        assert [e.value for e in read] == pytest.approx([m[key] for m in history], rel=1e-6)  # stored as float32
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["objective/kl"] == pytest.approx(history[1]["objective/kl"])
    assert (tmp_path / "metrics.csv").exists()


def test_report_to_is_checked():
    with pytest.raises(ValueError, match="report_to"):
        PPOConfig(report_to="mlflow")
    with pytest.raises(ValueError, match="report_to"):
        PPOConfig(report_to=["tensorboard", 3])
    assert PPOConfig(report_to=["tensorboard", "wandb"]).report_targets == ("tensorboard", "wandb")


def test_wandb_offline_run_holds_the_metrics(tmp_path, monkeypatch):
    """W&B in offline mode (no network): the run is written under ``log_dir``; its record file (a
    binary log W&B syncs later) names every metric, and the checkpoint keeps the run's id so that a
    resumed trainer continues the same run."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tok = word_tokenizer()
    config = PPOConfig(batch_size=4, num_mini_batches=1, response_length=4, progress=False, device="cpu",
                       log_dir=str(tmp_path), report_to="wandb", run_name="test")
    trainer = PPOTrainer(tiny_causal_lm(tok, n_layer=1, n_embd=16, n_head=2), tok, TargetWordReward("good"), config)
    trainer.train(["hello", "the cat is", "i see a", "good morning"], 1)
    run_id = trainer.reporter.run_id
    (records,) = tmp_path.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    data = records.read_bytes()
    assert all(key.encode() in data for key in ("objective/kl", "objective/scores", "loss/policy"))
    trainer.save(tmp_path / "ck.pt")
    resumed = PPOTrainer.load(tmp_path / "ck.pt", tiny_causal_lm(tok, n_layer=1, n_embd=16, n_head=2), tok,
                              TargetWordReward("good"))
    assert resumed.reporter.run_id == run_id
