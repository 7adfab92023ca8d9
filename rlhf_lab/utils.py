"""Seeds and devices: the few lines every notebook and the trainer need."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


@contextlib.contextmanager
def seeded_torch(seed: int, device=None):
    """Run a block with torch's global RNG (CPU, and ``device`` when it is CUDA) seeded with
    ``seed``, and restore the caller's RNG state afterwards: dropout inside a training loop then
    repeats for a given seed whatever ran before, and the caller's random stream is untouched."""
    device = torch.device(device) if device is not None else None
    cuda = []
    if device is not None and device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def eval_mode(model):
    """Run a block with ``model`` in eval mode (dropout off), then restore its training flag,
    also when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) so a CPU run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def default_device() -> torch.device:
    """CUDA when present (Colab with a GPU), else CPU. ``RLHF_LAB_DEVICE`` overrides."""
    forced = os.environ.get("RLHF_LAB_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
