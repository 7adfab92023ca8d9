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

``PPOConfig(distributed="fsdp")`` replaces step 3's ``DistributedDataParallel`` by torch's FSDP2
(``fully_shard``, torch >= 2.6; Zhao et al., 2023, "PyTorch FSDP"): the update module (policy and
value function) and the trainer's frozen reference copy are sharded, each transformer block one unit
and the rest the root unit, so that every rank holds ``1 / N`` of each parameter, gradient and AdamW
moment. The reduce-scatter averages the gradients as DDP's all-reduce does, so the same weighting
gives the one-process step. Sampling calls the trunk once per token, outside the root's forward:
:meth:`DataParallel.full_parameters` gathers every unit for the whole loop. Step 4's checkpoint is
gathered by every rank (``torch.distributed.checkpoint.state_dict``, full state dicts on the CPU)
and written by rank 0; every rank loads the whole file and keeps its shards. Tested on 2 gloo
processes on the CPU; not run on GPUs here.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

Tensor = torch.Tensor


def launched_world_size() -> int:
    """``WORLD_SIZE`` as a launcher (``torchrun``, ``accelerate launch``) set it; 1 without one."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an int, got {os.environ['WORLD_SIZE']!r}") from None


def fsdp2_available() -> bool:
    """Whether this torch has FSDP2's public ``torch.distributed.fsdp.fully_shard`` (torch >= 2.6)."""
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


class DataParallel:
    """The default process group of ``torch.distributed`` as the trainer uses it (``rank``,
    ``world_size``, collectives on whole tensors). :meth:`from_environment` joins or builds it.
    ``strategy`` (``PPOConfig.distributed``): ``"ddp"`` replicates the trained module,
    ``"fsdp"`` shards it (:meth:`wrap`)."""

    def __init__(self, device: torch.device, strategy: str = "ddp"):
        import torch.distributed as dist

        if strategy not in ("ddp", "fsdp"):
            raise ValueError(f"PPOConfig.distributed must be 'ddp' or 'fsdp', got {strategy!r}")
        if strategy == "fsdp" and not fsdp2_available():
            raise ValueError(f"PPOConfig.distributed='fsdp' needs torch >= 2.6 (FSDP2's "
                             f"torch.distributed.fsdp.fully_shard); this torch is {torch.__version__}: "
                             "use distributed='ddp' or a newer torch")
        self.dist, self.device, self.strategy = dist, device, strategy
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    @classmethod
    def from_environment(cls, device: torch.device, strategy: str = "ddp") -> Optional["DataParallel"]:
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
        return cls(device, strategy)

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

    def wrap(self, module: nn.Module, layer_classes: Sequence[str] = ()) -> nn.Module:
        """``"ddp"``: ``module`` in ``DistributedDataParallel`` (parameters broadcast from rank 0 now;
        gradients averaged in the backward pass). ``broadcast_buffers=False``: no buffer is trained,
        and the no-grad forwards (sampling, reference) never go through the wrapper.

        ``"fsdp"``: ``module`` itself, sharded in place by FSDP2 after its parameters and buffers
        were broadcast from rank 0: every submodule whose class is named in ``layer_classes`` (the
        transformer blocks: a model's ``_no_split_modules``) is one unit, the rest (embeddings, tied
        output embedding, final norm, value head) the root unit. Each rank then holds ``1 / N`` of
        every parameter (``DTensor`` shards, dim 0), of its gradient (reduce-scattered, averaged
        like DDP's) and of the optimizer state built on them; a unit is all-gathered for its
        forward and backward and freed after. Build the optimizer after this call."""
        if not self.sharded:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        with torch.no_grad():  # every rank shards rank 0's weights, as DDP starts from them
            for tensor in [*module.parameters(), *module.buffers()]:
                self.dist.broadcast(tensor.data, src=0)
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        names = set(layer_classes)
        for sub in list(module.modules())[1:]:
            if type(sub).__name__ in names:
                fully_shard(sub, mesh=mesh)
        # the root too frees its gathered weights after each forward (FSDP2 keeps them by default):
        # the module's parameters are then always the shards the optimizer holds
        fully_shard(module, mesh=mesh, reshard_after_forward=True)
        return module

    def reshard(self, module: nn.Module) -> None:
        """FSDP: every unit of ``module`` back to its shards (its parameters are the shards again)."""
        if not self.sharded:
            return
        from torch.distributed.fsdp import FSDPModule

        for unit in module.modules():
            if isinstance(unit, FSDPModule):
                unit.reshard()

    @contextlib.contextmanager
    def no_sync(self, module: nn.Module) -> Iterator[None]:
        """Gradients accumulate on each rank without communication (all micro-batches of a
        minibatch but the last): DDP's ``no_sync``, FSDP2's ``set_requires_gradient_sync(False)``."""
        if not self.sharded:
            with module.no_sync():
                yield
            return
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)

    @contextlib.contextmanager
    def full_parameters(self, module: nn.Module) -> Iterator[None]:
        """For forwards that do not enter ``module``'s own forward (sampling calls the trunk once per
        token with the KV cache): every FSDP unit all-gathered once and kept whole until the end,
        then sharded again. Peak memory during sampling is one full copy of ``module``, as in
        every FSDP rollout that does not shard generation itself. Nothing to do under DDP."""
        if not self.sharded:
            yield
            return
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in module.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
        try:
            yield
        finally:
            for unit in units:
                unit.set_reshard_after_forward(True, recurse=False)
                unit.reshard()

    def full_state_dict(self, module: nn.Module) -> dict:
        """``module``'s state dict with whole tensors on the CPU (collective: every rank calls it)."""
        if not self.sharded:
            return module.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        self.reshard(module)
        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_full_state_dict(self, module: nn.Module, state: dict) -> None:
        """Load whole tensors (every rank passes the same) into the sharded ``module``: each keeps its shard."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))

    def full_optimizer_state_dict(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer's state keyed by parameter names, whole tensors on the CPU (collective)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        self.reshard(module)
        return get_optimizer_state_dict(module, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_full_optimizer_state_dict(self, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))


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

