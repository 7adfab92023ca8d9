"""The rlhf-ppo command line and the plotting dashboard."""

from __future__ import annotations

import json

import pytest

from rlhf_lab.plotting import load_metrics, plot_dashboard
from rlhf_lab.ppo.__main__ import main

pytestmark = pytest.mark.usefixtures("one_thread")


RUN = """
policy:
  tiny: {{n_layer: 1, n_embd: 32, n_head: 2, seed: 0}}
reward:
  target_word: good
prompts: ["hello", "the cat is", "good morning", "thank you"]
iterations: {iterations}
config: {{batch_size: 4, response_length: 4, learning_rate: 1.0e-3, progress: false, device: cpu}}
output_dir: {out}
resume: true
"""


def test_cli_runs_logs_checkpoints_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(RUN.format(iterations=2, out=out))
    assert main(["--config", str(cfg)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [m["iteration"] for m in lines] == [1, 2]
    assert (out / "checkpoint.pt").is_file()
    assert main(["--config", str(cfg), "--iterations", "3"]) == 0  # resumes: one more iteration
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [m["iteration"] for m in lines] == [3]
    assert [m["iteration"] for m in load_metrics(out / "metrics.jsonl")] == [1, 2, 3]


def test_cli_rejects_unknown_keys(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("polcy: {tiny: {}}\n")
    with pytest.raises(SystemExit, match="unknown key"):
        main(["--config", str(cfg)])


def test_plot_dashboard(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    ms = [{"iteration": i + 1, "reward": i * 0.1, "kl": 0.01 * i, "entropy": 3 - 0.1 * i, "clipfrac": 0.1,
           "loss/value": 1 / (i + 1)} for i in range(6)]
    fig = plot_dashboard(ms, smooth=3, title="run")
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes][0].startswith("mean score")
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(json.dumps(m) for m in ms))
    assert len(plot_dashboard(p, keys=["reward", "kl"]).axes) == 2
    with pytest.raises(ValueError, match="lack"):
        plot_dashboard(ms, keys=["nope"])
