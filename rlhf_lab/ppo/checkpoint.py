"""Atomic checkpoint files: write to a temporary file in the same folder, fsync, then rename.

A reader (or a run resumed after a crash) therefore sees either the previous checkpoint or the
complete new one, never a half-written file (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch


def atomic_torch_save(obj, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`atomic_torch_save` (a ``ValueError`` for a path that is
    not a file, or a file that torch cannot read as one)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path {str(path)!r} is not a checkpoint file")
    # weights_only=False: the checkpoint holds RNG states and plain Python containers we wrote.
    try:
        return torch.load(str(path), map_location=map_location, weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError) as error:
        raise ValueError(f"{str(path)!r} is not a readable checkpoint ({type(error).__name__}: {error})") from None


def capture_rng_state(**generators: torch.Generator) -> dict:
    """Every random state a run depends on: the named generators, torch's global CPU and CUDA
    generators, Python's and NumPy's."""
    return {
        **{name: g.get_state() for name, g in generators.items()},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }


def restore_rng_state(state: dict, **generators: torch.Generator) -> None:
    """Put back what :func:`capture_rng_state` captured."""
    for name, g in generators.items():
        g.set_state(state[name])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
