"""The model plumbing of the PPO trainer: trunk/head split and value heads.

Every forward here follows the batch layout of :mod:`rlhf_lab.logprobs`: prompts left-padded to a
common length ``P``, responses right-padded after EOS, position ids ``cumsum(mask) - 1``.

A transformers causal LM is ``lm_head(trunk(x))`` for almost every architecture; when that holds
(checked numerically once, see :func:`split_causal_lm`) the trainer runs the trunk once and
projects onto the vocabulary only the ``T`` response positions, and a shared value head reads the
same hidden states (one forward gives logits and values). Architectures that post-process their
logits (soft-capping, scaling) fall back to the model's own forward.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Optional

import torch
from torch import nn

from ..logprobs import max_context, position_ids_from_mask, response_logits  # noqa: F401 (max_context: public here too)
from ..reward_model import scalar_head
from ..utils import eval_mode

Tensor = torch.Tensor


def model_vocab_size(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and hasattr(head, "weight"):
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def hidden_size(model) -> int:
    cfg = model.config
    for name in ("hidden_size", "n_embd", "d_model"):
        v = getattr(cfg, name, None)
        if isinstance(v, int):
            return v
    return int(model.get_input_embeddings().weight.shape[1])


def parameter_dtype(model) -> Optional[torch.dtype]:
    """The dtype of the first floating-point parameter of ``model`` (``None`` without one)."""
    if not isinstance(model, nn.Module):
        return None
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


class CausalLMParts:
    """``trunk`` (the base model) and ``head`` (the output embedding) of a causal LM, or ``None``
    for both when the model's logits are not ``head(trunk(x).last_hidden_state)`` (then
    ``separable`` is False and the model's own forward is used)."""

    def __init__(self, model):
        self.model = model
        self.trunk, self.head = None, None
        base = getattr(model, "base_model", None)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if base is not None and base is not model and head is not None:
            self.trunk, self.head = base, head

    @property
    def separable(self) -> bool:
        return self.trunk is not None


@torch.no_grad()
def split_causal_lm(model, probe_len: int = 5) -> CausalLMParts:
    """Split ``model`` into trunk and head, verifying ``head(trunk(x)) == model(x).logits`` on a
    short probe (in eval mode) so that models that rescale their logits are never mis-scored."""
    parts = CausalLMParts(model)
    if not parts.separable:
        return parts
    device = next(model.parameters()).device
    vocab = model_vocab_size(model)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, probe_len), generator=g).to(device)
    mask = torch.ones_like(ids)
    try:
        with eval_mode(model):
            full = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            h = parts.trunk(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            split = parts.head(h).float()
        ok = split.shape == full.shape and torch.allclose(split, full, rtol=1e-3, atol=1e-3)
    except Exception:  # any architecture whose trunk cannot be called like this
        ok = False
    if not ok:
        parts.trunk, parts.head = None, None
    return parts


def policy_forward(parts: CausalLMParts, input_ids: Tensor, attention_mask: Tensor, response_start: int,
                   want_hidden: bool) -> tuple[Tensor, Optional[Tensor]]:
    """Response-aligned logits ``[B, T, V]`` (``T = L - P``) and, when ``want_hidden``, the hidden
    states ``[B, T, H]`` at the same positions (column ``P - 1 + t`` predicts response token t)."""
    p = response_start
    if parts.separable:
        out = parts.trunk(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        h = out.last_hidden_state[:, p - 1 : -1]
        return parts.head(h), (h if want_hidden else None)
    if not want_hidden:
        return response_logits(parts.model, input_ids, attention_mask, p), None
    out = parts.model(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids_from_mask(attention_mask), use_cache=False,
                      output_hidden_states=True)
    return out.logits[:, p - 1 : -1], out.hidden_states[-1][:, p - 1 : -1]


class TanhGELU(nn.Module):
    r"""GELU with the tanh approximation, :math:`\tfrac12 x\,(1 + \tanh(\sqrt{2/\pi}\,(x + 0.044715\,x^3)))`,
    as one fused torch kernel (forward and backward)."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.gelu(x, approximate="tanh")


def _python_tanh_gelu_classes() -> tuple:
    try:
        from transformers.activations import FastGELUActivation, NewGELUActivation
    except ImportError:  # pragma: no cover - transformers without these classes
        return ()
    return (NewGELUActivation, FastGELUActivation)


def fuse_tanh_gelu(model: nn.Module) -> int:
    r"""Replace, in place, transformers' Python-level tanh-GELU modules (``gelu_new``, GPT-2's
    activation, and ``gelu_fast``) by :class:`TanhGELU`; returns how many were replaced.

    Both compute the same function; the Python versions run it as five or six separate tensor
    operations each way (a third of a small GPT-2's forward + backward time on a CPU), the fused
    kernel as one. The outputs agree to float32 rounding (a test checks logits and gradients).
    Modules hold no parameters, so state dicts and checkpoints are unchanged."""
    targets = _python_tanh_gelus(model)
    for parent, name, _ in targets:
        setattr(parent, name, TanhGELU())
    return len(targets)


def _python_tanh_gelus(model) -> list:
    classes = _python_tanh_gelu_classes()
    if not classes or not isinstance(model, nn.Module):
        return []
    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
            if type(child) in classes]


@contextlib.contextmanager
def fused_tanh_gelu(*models) -> Iterator[int]:
    """Within the block, every model in ``models`` runs its Python tanh-GELUs as :class:`TanhGELU`
    (as :func:`fuse_tanh_gelu` does); on exit, even by an exception, the original modules are put
    back, so a caller's model is left exactly as it was given. Yields how many were replaced.
    Entering it again inside the block changes nothing (there is nothing left to replace)."""
    targets = [t for m in models for t in _python_tanh_gelus(m)]
    for parent, name, _ in targets:
        setattr(parent, name, TanhGELU())
    try:
        yield len(targets)
    finally:
        for parent, name, original in targets:
            setattr(parent, name, original)


def new_value_head(width: int, dtype: Optional[torch.dtype] = None, device=None) -> nn.Linear:
    r"""A linear value head :math:`V(s_t) = w^\top h_t + b`, initialized to zero, in ``dtype``
    (that of the trunk it reads: a bfloat16 trunk gets a bfloat16 head) on ``device``.

    Zero weights make :math:`V \equiv 0` at the start and, on a shared trunk, send no value-loss
    gradient into the trunk on the first update (the policy is not disturbed before the head has
    learned anything); the bias then moves quickly to the mean return."""
    head = nn.Linear(width, 1, dtype=dtype, device=device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class ValueModel(nn.Module):
    r"""A separate value network :math:`V_\phi(s_t)` for every response position.

    Built from a sequence-classification model (its trunk and its one-label head, read at every
    position as TRL does) or from a causal LM (its trunk and a new zero-initialized head)."""

    def __init__(self, trunk: nn.Module, head: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.head = head

    @classmethod
    def from_pretrained_model(cls, model, copy_model: bool = False) -> "ValueModel":
        if copy_model:
            model = copy.deepcopy(model)
        base = getattr(model, "base_model", model)
        try:
            head = scalar_head(model)
        except ValueError:
            head = new_value_head(hidden_size(model), parameter_dtype(base), next(model.parameters()).device)
        return cls(base, head)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, response_start: int) -> Tensor:
        """Values ``[B, T]`` at the columns ``P - 1 … L - 2`` (the states that emit tokens 0 … T-1)."""
        out = self.trunk(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        h = out.last_hidden_state[:, response_start - 1 : -1]
        return self.head(h).squeeze(-1).float()


# ---------------------------------------------------------------------- LoRA adapters (peft)
def is_peft_model(model) -> bool:
    """``model`` is a ``peft.PeftModel`` (read by duck typing: ``peft`` is an optional extra and is
    never imported here)."""
    return all(hasattr(model, name) for name in ("peft_config", "disable_adapter", "get_base_model"))


def unwrap_peft(model):
    """The transformers model inside a ``peft.PeftModel`` (with the adapter layers injected in its
    modules, so its forward runs the adapters unless they are disabled), or ``model`` itself."""
    return model.get_base_model() if is_peft_model(model) else model


# ---------------------------------------------------------------------- gradient checkpointing
def enable_gradient_checkpointing(model) -> None:
    """transformers' own activation checkpointing on every decoder layer of ``model`` (non-reentrant,
    so frozen LoRA bases need no input gradients): ``activation_checkpointing_enable`` from
    transformers 5.24 on, ``gradient_checkpointing_enable`` (now deprecated) before. A ``ValueError``
    names an architecture that does not support it."""
    model = unwrap_peft(model)
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"PPOConfig.gradient_checkpointing=True but {type(model).__name__} does not support "
                         "gradient checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers < 5.24
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _checkpointed_layer_classes() -> tuple:
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # pragma: no cover - transformers < 4.52 checkpoints inside the model's own loop
        return (nn.Module,)
    return (GradientCheckpointingLayer,)


@contextlib.contextmanager
def checkpointing_active(*models) -> Iterator[int]:
    """Within the block, the checkpointed layers of ``models`` recompute their activations in the
    backward pass; yields how many layers. transformers checkpoints a layer only while that layer's
    own ``training`` flag is set; the trainer keeps every model in eval mode (no dropout), so this
    sets the flag on the checkpointed layers alone, not on their children (dropout stays off), and
    puts it back on exit. Under ``no_grad`` (sampling with the KV cache) nothing is checkpointed."""
    layers = [m for model in models if isinstance(model, nn.Module) for m in model.modules()
              if isinstance(m, _checkpointed_layer_classes()) and getattr(m, "gradient_checkpointing", False) is True]
    flags = [m.training for m in layers]
    for m in layers:
        m.training = True
    try:
        yield len(layers)
    finally:
        for m, flag in zip(layers, flags):
            m.training = flag


# ---------------------------------------------------------------------- the update's forward as a module
class PolicyValue(nn.Module):
    """The forward of the PPO update as one module: response-aligned logits ``[B, T, V]`` and values
    ``[B, T]`` (float32) of the policy and its value function, in one trunk pass with a shared value
    head (values ``None`` without a critic). A module so that ``DistributedDataParallel`` can wrap it
    (DDP averages the gradients of what runs through its wrapper's forward); it holds no parameters
    of its own."""

    def __init__(self, parts: CausalLMParts, value_head: Optional[nn.Module], value_model: Optional[nn.Module]):
        super().__init__()
        self.parts = parts  # not a module: the trunk and head below are registered through `policy`
        self.policy = parts.model
        self.value_head, self.value_model = value_head, value_model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, response_start: int):
        shared = self.value_head is not None
        logits, hidden = policy_forward(self.parts, input_ids, attention_mask, response_start, want_hidden=shared)
        if shared:
            return logits, self.value_head(hidden).squeeze(-1).float()
        if self.value_model is None:  # a critic-free estimator: no values
            return logits, None
        return logits, self.value_model(input_ids, attention_mask, response_start)
