r"""Data-parallel PPO on ``torch.distributed``: what the trainer needs of the process group.

Launch the same script once per process with ``torchrun --nproc-per-node N script.py`` (or
``accelerate launch --num_processes N script.py``); the launcher sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and :class:`rlhf_lab.ppo.PPOTrainer` joins the
process group (``nccl`` on CUDA, ``gloo`` on the CPU) unless the script already did. One
iteration on ``N`` ranks:

1. every rank draws the same ``batch_size`` prompts (the shuffling generator is seeded alike) and
   samples, scores and runs the reference on its own ``batch_size / N`` of them; the uniforms that
   pick the tokens are drawn for the whole batch from the shared sampling generator and each rank
   uses its own rows, so the responses are those of a one-process run;
2. the rows are gathered (:meth:`DataParallel.gather_rows`: a few ``[B, P + T]`` and ``[B, T]``
   tensors, small next to the forward passes), so that the per-token rewards, the advantages and
   their whitening, the adaptive-KL controller's KL and every metric are computed on the whole batch
   by the library's own functions: global by construction, identical on every rank;
3. each minibatch of the update (drawn from the shared shuffling generator) is split in ``N``
   equal parts, one per rank; ``DistributedDataParallel`` averages the gradients, every loss being
   weighted by its share of the minibatch's real tokens times ``N``, so the step is the one-process
   step;
4. rank 0 writes the logs and checkpoints; every rank holds the same state and loads the same file.

A run on ``N`` processes therefore equals a run on one with the same ``batch_size``, seeds and
prompts, to float rounding (``tests/test_ppo_distributed.py`` runs 2 gloo processes on the CPU).
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn

Tensor = torch.Tensor


def launched_world_size() -> int:
    """``WORLD_SIZE`` as a launcher (``torchrun``, ``accelerate launch``) set it; 1 without one."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an int, got {os.environ['WORLD_SIZE']!r}") from None


class DataParallel:
    """The default process group of ``torch.distributed`` as the trainer uses it (``rank``,
    ``world_size``, collectives on whole tensors). :meth:`from_environment` joins or builds it."""

    def __init__(self, device: torch.device):
        import torch.distributed as dist

        self.dist, self.device = dist, device
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    @classmethod
    def from_environment(cls, device: torch.device) -> Optional["DataParallel"]:
        """The process group a launcher describes, or ``None`` for a one-process run. Joins it
        (``init_process_group``: ``nccl`` for CUDA, ``gloo`` otherwise) unless it already exists."""
        import torch.distributed as dist

        if not dist.is_available():
            if launched_world_size() > 1:
                raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
            return None
        if not dist.is_initialized():
            if launched_world_size() <= 1:
                return None
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if dist.get_world_size() == 1:
            return None
        return cls(device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, n_global: int) -> slice:
        """This rank's rows of a batch of ``n_global`` (contiguous blocks, rank 0 first)."""
        share = n_global // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def max_int(self, value: int) -> int:
        """The largest ``value`` over the ranks."""
        t = torch.tensor([int(value)], dtype=torch.long, device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return int(t.item())

    def gather_rows(self, tensor: Tensor) -> Tensor:
        """Every rank's ``tensor`` (same shape on all) concatenated along dim 0 in rank order."""
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        self.dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    def barrier(self) -> None:
        self.dist.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in ``DistributedDataParallel`` (parameters broadcast from rank 0 now; gradients
        averaged in the backward pass). ``broadcast_buffers=False``: no buffer is trained, and the
        no-grad forwards (sampling, reference) never go through the wrapper."""
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)


def local_device(device: torch.device) -> torch.device:
    """``cuda`` without an index means, in a launched process, the GPU of ``LOCAL_RANK``."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def pad_columns(tensor: Tensor, width: int, value, left: bool = False) -> Tensor:
    """``tensor`` ``[B, T, ...]`` padded with ``value`` to ``width`` columns, on the right (or the left)."""
    extra = width - tensor.shape[1]
    if extra <= 0:
        return tensor
    pad = torch.full((tensor.shape[0], extra, *tensor.shape[2:]), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([pad, tensor] if left else [tensor, pad], dim=1)

