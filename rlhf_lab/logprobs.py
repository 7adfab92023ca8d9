r"""Per-token log-probabilities of a response under a causal language model.

Unit 2 of the course: by the chain rule,
:math:`\log \pi(y \mid x) = \sum_{t=1}^{T} \log \pi(y_t \mid x, y_{<t})`, and a causal LM gives
all :math:`T` factors in one forward pass over ``prompt + response``: the logits at position
:math:`i` predict the token at position :math:`i + 1` (the *one-position shift*).

Batch layout used throughout ``rlhf_lab`` (and produced by the PPO rollout):

.. code-block:: text

    column:   0 ........ P-1 | P ................ P+T-1
    row 0:    pad pad  x x x | y y y <eos> pad pad
    row 1:    x x x x x x x  | y y <eos> pad pad pad
              prompts LEFT-padded | responses right-padded after EOS

so ``response_start = P`` is the same column for every row. ``attention_mask`` is 1 on real
tokens (prompt and response) and 0 on padding. Position ids are computed from the mask
(``cumsum - 1``, clamped at 0) and passed explicitly, so left padding does not shift the
positions of a model with absolute position embeddings such as GPT-2: a left-padded row scores
exactly as it would alone.

Temperature: sampling at temperature :math:`T_s` draws from ``softmax(logits / T_s)``; to score
those samples under the policy that produced them, pass the same ``temperature`` here.
"""

from __future__ import annotations

import inspect
from typing import Optional, Tuple, Union

import torch

from .masked import check_scalar

Tensor = torch.Tensor

LOW_PRECISION = (torch.float16, torch.bfloat16)  # computed in float32 here; the trainer recomputes under them


def _as_compute_dtype(logits: Tensor) -> Tensor:
    """float16/bfloat16 logits are upcast to float32 (log-softmax in half precision loses ~1e-2)."""
    if logits.dtype in LOW_PRECISION:
        return logits.float()
    return logits


def _check_temperature(temperature: float) -> float:
    return check_scalar("temperature", temperature, positive=True)


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0, *, validate: bool = True) -> Tensor:
    r"""Log-softmax of ``logits / temperature`` gathered at ``tokens``.

    .. math::
        \log \pi(y_t \mid x, y_{<t}) = \frac{z_t[y_t]}{T_s} - \log \sum_{v} \exp\frac{z_t[v]}{T_s}

    Unit 2. ``logits`` must already be aligned with the tokens they predict (``logits[:, t]`` is
    the distribution of ``tokens[:, t]``; see :func:`response_logits`). Memory-lean: it gathers
    one logit per position and subtracts a ``logsumexp``, never materializing the full
    ``[B, T, V]`` log-softmax; half-precision logits are computed in float32, float64 stays float64.

    Args:
        logits: ``[B, T, V]`` (any leading shape ``[..., V]``).
        tokens: ``[B, T]`` integer ids in ``[0, V)``.
        temperature: sampling temperature :math:`T_s > 0`.
        validate: check that every token lies in the vocabulary (reads the tokens: a host sync
            on a GPU). ``False`` for a loop whose tokens were checked once, e.g. sampled ones.

    Returns:
        ``[B, T]`` log-probabilities (float32, or float64 for float64 logits).
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise ValueError("logits must be a floating-point torch.Tensor")
    if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise ValueError("tokens must be an integer torch.Tensor")
    if logits.dim() < 1 or tuple(logits.shape[:-1]) != tuple(tokens.shape):
        raise ValueError(
            f"tokens has shape {tuple(tokens.shape)} but logits has shape {tuple(logits.shape)}; "
            "expected logits of shape tokens.shape + (vocab,)"
        )
    t = _check_temperature(temperature)
    vocab = logits.shape[-1]
    if validate and tokens.numel() and bool(((tokens < 0) | (tokens >= vocab)).any()):  # one device sync
        raise ValueError(f"tokens must lie in [0, {vocab}) (the vocabulary of logits)")
    z = _as_compute_dtype(logits)
    if t != 1.0:
        z = z / t
    picked = z.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(z, dim=-1)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Entropy of the next-token distribution at every position.

    .. math::
        H_t = -\sum_v \pi(v \mid x, y_{<t}) \log \pi(v \mid x, y_{<t}),
        \qquad \pi = \operatorname{softmax}(z_t / T_s)

    Unit 5 reports it as a metric (an entropy that collapses towards 0 means the policy has
    become nearly deterministic). Computed with ``log_softmax`` in float32 (float64 kept);
    impossible actions (``-inf`` logits) contribute 0.

    Args:
        logits: ``[B, T, V]`` (any leading shape). Returns ``logits.shape[:-1]``.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise ValueError("logits must be a floating-point torch.Tensor")
    t = _check_temperature(temperature)
    z = _as_compute_dtype(logits)
    if t != 1.0:
        z = z / t
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(dim=-1)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Position of each token among the real tokens of its row: ``cumsum(mask) - 1``, clamped at 0.

    With left padding, the first real token of every row gets position 0, as it would alone.
    """
    pos = attention_mask.long().cumsum(dim=-1) - 1
    return pos.clamp_min(0)


def _pad(token_lists, pad_id: int, device, left: bool) -> Tuple[Tensor, Tensor]:
    lists = [list(t) for t in token_lists]
    if not lists:
        raise ValueError("token_lists is empty")
    width = max(len(t) for t in lists)
    ids = torch.full((len(lists), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(lists), width), dtype=torch.long)
    for i, t in enumerate(lists):
        if t:
            cols = slice(width - len(t), width) if left else slice(0, len(t))
            ids[i, cols] = torch.as_tensor(t, dtype=torch.long)
            mask[i, cols] = 1
    return ids.to(device), mask.to(device)


def left_pad(token_lists, pad_id: int, device=None) -> Tuple[Tensor, Tensor]:
    """Prompts of the batch layout: lists of token ids left-padded to a common length ``P``,
    as ``(ids [B, P], mask [B, P])`` (long tensors; ``mask`` 1 on real tokens)."""
    return _pad(token_lists, pad_id, device, left=True)


def right_pad(token_lists, pad_id: int, device=None) -> Tuple[Tensor, Tensor]:
    """Responses of the batch layout: lists of token ids right-padded to a common length ``T``,
    as ``(ids [B, T], mask [B, T])``."""
    return _pad(token_lists, pad_id, device, left=False)


def max_context(model) -> Optional[int]:
    """The number of positions the model can read (``None`` when its config does not say)."""
    cfg = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def check_fits_model(model, input_ids: Tensor, name: str = "input_ids", hint: str = "") -> None:
    """Raise ``ValueError`` naming ``name`` when a row of ``input_ids`` is longer than the model's
    context or holds a token id outside its input vocabulary: torch would otherwise fail deep
    inside the forward with an ``IndexError``. One read of the ids (a host sync)."""
    context = max_context(model)
    if context is not None and input_ids.shape[-1] > context:
        raise ValueError(f"{name} has rows of {input_ids.shape[-1]} tokens, more than the model's context of "
                         f"{context} positions{hint}")
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is None or input_ids.numel() == 0:
        return
    vocab = int(embeddings.weight.shape[0])
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"{name} holds token id {low if low < 0 else high}, outside the model's vocabulary "
                         f"[0, {vocab}) (a tokenizer that does not belong to the model?)")


def _accepts(model, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return False
    return name in params


def _check_batch(input_ids: Tensor, attention_mask: Tensor, response_start) -> int:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids must be a [B, L] integer tensor")
    if input_ids.is_floating_point():
        raise ValueError("input_ids must be an integer tensor")
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask has shape {got}, expected {tuple(input_ids.shape)} (that of input_ids)")
    if isinstance(response_start, torch.Tensor):
        if response_start.numel() != 1:
            raise ValueError("response_start must be one int (prompts are left-padded to a common length P)")
        response_start = response_start.item()
    if isinstance(response_start, bool) or not float(response_start).is_integer():
        raise ValueError(f"response_start must be an int, got {response_start!r}")
    response_start = int(response_start)
    length = input_ids.shape[1]
    if not 1 <= response_start < length:
        raise ValueError(
            f"response_start must satisfy 1 <= response_start < {length} (the sequence length), got {response_start}"
        )
    return response_start


def response_logits(model, input_ids: Tensor, attention_mask: Tensor, response_start: int) -> Tensor:
    r"""The logits that predict the response tokens, aligned with them: ``[B, L - P, V]``.

    ``result[:, t]`` is :math:`z(\cdot \mid x, y_{<t})`, the output of the model at column
    ``P - 1 + t`` (the one-position shift), so ``token_logprobs(result, input_ids[:, P:])``
    scores the response. Position ids come from ``attention_mask`` (see
    :func:`position_ids_from_mask`) and are passed to the model. When the model's ``forward``
    accepts ``logits_to_keep`` (transformers' causal LMs do), only the last ``L - P + 1`` positions
    are projected onto the vocabulary, which saves memory on long prompts. Gradients flow when
    called outside ``torch.no_grad()``.

    Unit 2 (the chain rule) and unit 5 (scoring the rollout under the policy and the reference).
    """
    p = _check_batch(input_ids, attention_mask, response_start)
    length = input_ids.shape[1]
    kwargs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask.long(),
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    keep = length - p + 1  # columns P-1 .. L-1; the last one predicts past the end and is dropped
    sliced = False
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
        sliced = True
    out = model(**kwargs)
    logits = out.logits if hasattr(out, "logits") else out[0]
    if sliced and logits.shape[1] == keep:
        return logits[:, :-1, :]
    return logits[:, p - 1 : length - 1, :]


def sequence_logprobs(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_start: int,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""Per-token log-probabilities of the response part under any transformers causal LM.

    .. math::
        \text{out}[b, t] = \log \pi(y_{b,t} \mid x_b, y_{b,<t}), \qquad
        \sum_t \text{out}[b, t] = \log \pi(y_b \mid x_b)

    Unit 2. ``input_ids``/``attention_mask`` are ``[B, L]`` with the prompts left-padded to a
    common length ``P = response_start`` and the responses after them (right-padded). Built from
    :func:`response_logits` and :func:`token_logprobs`. Positions where
    ``attention_mask[:, P:] == 0`` (padding after EOS) are set to 0, so a row's sum is the
    log-probability of its real response tokens.

    Args:
        temperature: score under ``softmax(logits / temperature)`` (use the sampling temperature).
        return_entropy: also return the per-token entropy (:func:`entropy_from_logits`, 0 on
            padding) from the same forward pass.

    Returns:
        ``[B, L - P]`` float tensor (float32 for half-precision models), or ``(logp, entropy)``.
    """
    _check_temperature(temperature)
    p = _check_batch(input_ids, attention_mask, response_start)
    logits = response_logits(model, input_ids, attention_mask, p)
    tokens = input_ids[:, p:]
    resp_mask = attention_mask[:, p:] != 0
    logp = token_logprobs(logits, tokens, temperature)
    logp = torch.where(resp_mask, logp, torch.zeros_like(logp))
    if not return_entropy:
        return logp
    ent = entropy_from_logits(logits, temperature)
    ent = torch.where(resp_mask, ent, torch.zeros_like(ent))
    return logp, ent
