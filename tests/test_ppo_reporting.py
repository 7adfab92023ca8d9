"""Experiment logging (issue 18): ``report_to="tensorboard"`` writes event files in ``log_dir``;
reading them back with TensorBoard's own reader gives every iteration's metrics at its step, next
to the CSV/JSONL log, which is still written. W&B runs offline, trackio locally (its SQLite
database), both without a network."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

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
    keys = [key.encode() for key in ("objective/kl", "objective/scores", "loss/policy")]
    # W&B's service process writes the record file; on a loaded machine (a CI run of the whole
    # suite) its last records reached the disk after finish() had returned, so wait for them
    deadline = time.monotonic() + 60
    while not all(key in records.read_bytes() for key in keys) and time.monotonic() < deadline:
        time.sleep(0.5)
    data = records.read_bytes()
    assert all(key in data for key in keys), (len(data), [k for k in keys if k not in data])
    trainer.save(tmp_path / "ck.pt")
    resumed = PPOTrainer.load(tmp_path / "ck.pt", tiny_causal_lm(tok, n_layer=1, n_embd=16, n_head=2), tok,
                              TargetWordReward("good"))
    assert resumed.reporter.run_id == run_id


_TRACKIO_RUN = textwrap.dedent("""
    import json, sys
    import torch
    from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
    from rlhf_lab.ppo import PPOConfig, PPOTrainer

    torch.set_num_threads(1)
    tok = word_tokenizer()
    config = PPOConfig(batch_size=4, num_mini_batches=1, response_length=4, progress=False, device="cpu",
                       log_dir=sys.argv[1], report_to="trackio", run_name="test")
    reward = lambda prompts, responses: [float(len(r)) for r in responses]   # varies: metrics not all 0
    trainer = PPOTrainer(tiny_causal_lm(tok, n_layer=1, n_embd=16, n_head=2), tok, reward, config)
    history = trainer.train(["hello", "the cat is", "i see a", "good morning"], 2)
    json.dump(history, open(sys.argv[2], "w"))
""")


def test_trackio_local_database_holds_every_iteration(tmp_path):
    """trackio with no network: each project is one SQLite file, ``$TRACKIO_DIR/{project}.db``
    (trackio's documented storage schema: table ``metrics``, one row per ``log`` call with
    ``run_name``, ``step`` and the metrics as JSON). The run goes in a child process because trackio
    reads ``TRACKIO_DIR`` once, when it is imported; the rows are read back here with ``sqlite3``,
    independently of trackio's code, and must hold every iteration's metrics at its step."""
    pytest.importorskip("trackio")
    db_dir = tmp_path / "trackio"
    env = dict(os.environ, TRACKIO_DIR=str(db_dir), TRACKIO_PROJECT="rlhf_lab_test", HF_HUB_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", _TRACKIO_RUN, str(tmp_path / "log"), str(tmp_path / "history.json")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((tmp_path / "history.json").read_text())
    with sqlite3.connect(db_dir / "rlhf_lab_test.db") as db:
        rows = db.execute("SELECT step, metrics FROM metrics WHERE run_name = 'test' ORDER BY step").fetchall()
    assert [step for step, _ in rows] == [1, 2]
    logged = [json.loads(m) for _, m in rows]
    for key in ("objective/scores", "objective/kl", "policy/entropy", "loss/value", "time/iteration"):
        assert [m[key] for m in logged] == [h[key] for h in history], key   # JSON keeps the float exactly
    assert any(h["objective/scores"] != 0 for h in history)
    finite = {k for k, v in history[0].items() if isinstance(v, float) and math.isfinite(v)}
    assert finite <= set(logged[0])                                          # every number is logged
    assert len((tmp_path / "log" / "metrics.jsonl").read_text().splitlines()) == 2
