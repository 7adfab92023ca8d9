"""Experiment logging the ecosystem's way: TensorBoard, Weights & Biases or trackio.

``PPOConfig(report_to="tensorboard")`` (or ``"wandb"``, ``"trackio"``, a list of them) sends every
iteration's metrics, with the iteration as the step, through the library itself: PyTorch's
``torch.utils.tensorboard.SummaryWriter`` (event files in ``log_dir``), ``wandb.init``/``wandb.log``
(``WANDB_MODE=offline`` keeps the run on disk), ``trackio.init``/``trackio.log`` (a local
database, viewed with ``trackio show``). They are optional extras: ``pip install
"rlhf-lab[logging]"``; a missing one is named when the trainer is built. The CSV and JSONL files
of ``log_dir`` are written as before, whatever ``report_to`` says. Only the main process of a
data-parallel run reports.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Dict, Optional

_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def check_installed(targets) -> None:
    """A ``ValueError`` naming the extra for a ``report_to`` target whose library is missing."""
    for name in targets:
        if importlib.util.find_spec(_MODULES[name]) is None:
            raise ValueError(f"PPOConfig.report_to={name!r} needs the {name} package: "
                             f"pip install \"rlhf-lab[logging]\" (or pip install {name})")


def scalars(metrics: dict) -> Dict[str, float]:
    """The metrics a tracker can plot: numbers only (``iteration`` is the step)."""
    return {k: float(v) for k, v in metrics.items()
            if k != "iteration" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Reporter:
    """The trackers of one run. ``log(metrics, step)`` after each iteration; ``close()`` flushes
    and ends them (a later ``log`` opens them again: W&B and trackio continue the same run)."""

    def __init__(self, targets, log_dir: Optional[str], run_name: Optional[str], config: dict):
        check_installed(targets)
        self.targets, self.log_dir, self.run_name, self.config = tuple(targets), log_dir, run_name, config
        self.run_id: Optional[str] = None  # W&B's run id, kept so that a resumed run continues it
        self._open: Dict[str, object] = {}

    def _start(self, name: str):
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter(log_dir=self.log_dir)
        if name == "wandb":
            import wandb

            run = wandb.init(id=self.run_id, resume="allow", name=self.run_name, config=self.config,
                             dir=self.log_dir, reinit="create_new")
            self.run_id = run.id  # W&B made it on the first start; a later start continues that run
            return run
        import trackio

        return trackio.init(project=os.environ.get("TRACKIO_PROJECT", "rlhf_lab"), name=self.run_name,
                            config=self.config, resume="allow")

    def log(self, metrics: dict, step: int) -> None:
        values = scalars(metrics)
        for name in self.targets:
            if name not in self._open:
                self._open[name] = self._start(name)
            run = self._open[name]
            if name == "tensorboard":
                for key, value in values.items():
                    run.add_scalar(key, value, global_step=step)
                run.flush()
            else:
                run.log(values, step=step)

    def close(self) -> None:
        for name, run in self._open.items():
            if name == "tensorboard":
                run.close()
            else:
                run.finish()
        self._open = {}
