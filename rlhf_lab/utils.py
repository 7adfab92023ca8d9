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


def resolve_device(device=None, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` (``None``: :func:`default_device`), checked to be present:
    a ``ValueError`` naming the setting ``name`` when it is malformed or not on this machine
    (torch itself fails later, deep inside, with an ``AssertionError`` for a missing CUDA)."""
    if device is None:
        device, name = default_device(), "RLHF_LAB_DEVICE" if os.environ.get("RLHF_LAB_DEVICE") else name
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must name a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={str(device)!r} but CUDA is not available on this machine: "
                             f"use 'cpu' (or leave {name} unset to pick CUDA only when present)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={str(device)!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{name}={str(device)!r} but MPS is not available on this machine: use 'cpu'")
    return resolved


#: the first CUDA compute capability with bfloat16 tensor cores (Ampere: A100, RTX 30xx)
BF16_MIN_CAPABILITY = (8, 0)


def autocast_dtype(device=None) -> str:
    """The ``PPOConfig.dtype`` (autocast precision) that suits ``device`` (default: :func:`default_device`).

    - ``"bfloat16"`` on a CUDA GPU of compute capability 8.0 or more (A100, H100, L4, RTX 30xx/40xx);
    - ``"float16"`` on an older CUDA GPU (T4, V100: ``torch.cuda.is_bf16_supported()`` answers
      True there, but bfloat16 is emulated, slower than float32; float16 has tensor cores, and
      the trainer adds a gradient scaler);
    - ``"float32"`` elsewhere (CPU, MPS): no autocast.
    """
    device = torch.device(device) if device is not None else default_device()
    if device.type != "cuda" or not torch.cuda.is_available():
        return "float32"
    capability = torch.cuda.get_device_capability(device)
    return "bfloat16" if tuple(capability) >= BF16_MIN_CAPABILITY else "float16"
