"""The standard PPO dashboard (unit 5): reward, KL, entropy, clip fraction and value loss.

.. code-block:: python

    metrics = trainer.train(prompts, iterations=50)
    fig = plot_dashboard(metrics)                 # or plot_dashboard("runs/x/metrics.jsonl")

What healthy curves look like: the reward rises; the KL to the reference grows slowly and
levels off (a KL that explodes means :math:`\\beta` is too small or the step too large); the
entropy falls gently (a collapse towards 0 means the policy became deterministic); the clip
fraction stays between a few percent and about 0.2 (above 0.3 the steps are too large for the
trust band); the value loss falls.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from .ppo.metrics import CURRENT_NAMES, Metrics

DASHBOARD = (
    ("objective/scores", "mean score r(x, y)"),
    ("objective/kl", "KL(π‖π_ref) per response [nats]"),
    ("policy/entropy", "entropy per token [nats]"),
    ("policy/clipfrac", "clip fraction"),
    ("loss/value", "value loss"),
)


def load_metrics(path: Union[str, Path]) -> List[Dict[str, float]]:
    """Read a metrics log written by the trainer (``metrics.jsonl`` or ``metrics.csv``). Each row
    is a :class:`~rlhf_lab.ppo.metrics.Metrics`: a log of release 0.1 (flat names such as
    ``reward``) answers the current names too, and a current log the flat ones."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path {str(path)!r} is not a file")
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = []
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:
                    rows.append(Metrics({k: float(v) for k, v in row.items() if v not in ("", None)}))
                except ValueError as e:
                    raise ValueError(f"{path}: line {line} holds a value that is not a number ({e})") from None
            return rows
    return [Metrics(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def _smooth(ys: List[float], window: int) -> List[float]:
    out, acc = [], []
    for y in ys:
        acc.append(y)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def plot_dashboard(
    metrics: Union[Sequence[Dict[str, float]], str, Path],
    keys: Optional[Sequence[str]] = None,
    smooth: int = 1,
    axes=None,
    title: Optional[str] = None,
):
    """Plot one panel per metric against the iteration; returns the matplotlib figure.

    ``metrics``: the list returned by ``PPOTrainer.train`` (or a path to its log). ``keys``
    defaults to the score, KL, entropy, clip fraction and value loss; the flat names of release
    0.1 (``reward``, ``kl``, ``entropy``, ``clipfrac``) are read as the current ones. ``smooth`` > 1 overlays a
    running mean over that many iterations (the raw curve stays, faded)."""
    import matplotlib.pyplot as plt

    if isinstance(metrics, (str, Path)):
        metrics = load_metrics(metrics)
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics is empty")
    labels = dict(DASHBOARD)
    keys = [CURRENT_NAMES.get(k, k) for k in keys] if keys is not None else [k for k, _ in DASHBOARD]
    metrics = [m if isinstance(m, Metrics) else Metrics(m) for m in metrics]
    for i, m in enumerate(metrics):
        missing = [k for k in keys if k not in m]
        if missing:
            raise ValueError(f"metrics[{i}] lacks the key(s) {missing}")
    if not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f"smooth must be a positive int, got {smooth!r}")
    xs = [m.get("iteration", i + 1) for i, m in enumerate(metrics)]
    if axes is None:
        # at most 3 panels a row, 2.2 in each: the figure fits a 6.6 in book column at 100%
        ncols = min(len(keys), 3)
        nrows = -(-len(keys) // ncols)
        fig, grid = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.3 * nrows), squeeze=False)
        axes = list(grid.flat)
        for spare in axes[len(keys):]:
            fig.delaxes(spare)
        axes = axes[:len(keys)]
    else:
        axes = list(getattr(axes, "flat", axes))
        if len(axes) < len(keys):
            raise ValueError(f"axes has {len(axes)} panels for {len(keys)} keys {keys}")
        fig = axes[0].figure
    for ax, k in zip(axes, keys):
        ys = [float(m[k]) for m in metrics]
        if smooth > 1:
            ax.plot(xs, ys, color="C0", alpha=0.3, lw=1)
            ax.plot(xs, _smooth(ys, smooth), color="C0", lw=2)
        else:
            ax.plot(xs, ys, color="C0", lw=1.5)
        ax.set_title(labels.get(k, k), fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
