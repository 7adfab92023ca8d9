r"""Rollout: sample responses from the policy with the KV cache (unit 5, the first arrow).

A hand-written loop rather than ``model.generate``: one trunk call per token on the last token
only, with the KV cache, reading from the same pass

- the sampled token :math:`y_t \sim \operatorname{softmax}(z_t / T_s)`,
- its log-probability :math:`\log\pi_{\text{old}}(y_t \mid s_t)` at the same temperature
  (:func:`rlhf_lab.logprobs.token_logprobs`), so no second forward is needed (a test checks it
  equals a fresh recomputation),
- the entropy :math:`H_t` (:func:`rlhf_lab.logprobs.entropy_from_logits`) for the metrics,
- and, with a value head on the shared trunk, :math:`V(s_t)` from the same hidden state.

After a row emits the stop token its later columns hold the pad token and mask 0; the loop ends
early once every row has stopped.

The KV cache is passed under the name the model's ``forward`` takes (:func:`cache_argument`):
``cache`` from transformers 5.24 on, ``past_key_values`` before.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Optional

import torch

from ..logprobs import entropy_from_logits, position_ids_from_mask, token_logprobs
from .modeling import CausalLMParts

Tensor = torch.Tensor


@dataclass
class Rollout:
    """One batch of sampled episodes, in the trainer's layout.

    ``input_ids``/``attention_mask``: ``[B, P + T]`` (prompt left-padded, response right-padded);
    ``response_start = P``; ``responses``/``mask``/``logprobs``/``entropy``/``values``:
    ``[B, T]`` (``values`` is ``None`` unless a shared value head was read while sampling)."""

    input_ids: Tensor
    attention_mask: Tensor
    response_start: int
    responses: Tensor
    mask: Tensor
    logprobs: Tensor
    entropy: Tensor
    values: Optional[Tensor]
    ended: Tensor  # [B] bool: the row emitted the stop token


def _uniform_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps the cumulative sum exact enough for vocabularies of 10^5 (MPS has no float64)
    return torch.float32 if device.type == "mps" else torch.float64


def draw_uniforms(generator: torch.Generator, rows: int, device, steps: int = 1) -> Tensor:
    """``steps`` draws of the ``[rows, 1]`` uniforms :func:`sample_categorical` uses (the last one is
    returned): the generator advances as ``steps`` sampling steps of a batch of ``rows`` would
    advance it (a data-parallel rank that stopped early catches up with the others this way)."""
    device = torch.device(device)
    u = None
    for _ in range(steps):
        u = torch.rand((rows, 1), generator=generator, dtype=_uniform_dtype(device), device=device)
    return u


def sample_categorical(logits: Tensor, generator: torch.Generator, rows: Optional[slice] = None,
                       total_rows: Optional[int] = None) -> Tensor:
    r"""One draw per row from :math:`\operatorname{softmax}(\text{logits})`: ``[B, V] -> [B]``.

    Inverts the cumulative distribution in float64 (float32 on MPS): ``u ~ U[0, 1)`` per row and
    the first token whose cumulative probability exceeds ``u``. It needs ``B`` uniforms per step where
    ``torch.multinomial`` draws an exponential per vocabulary entry (7x faster here for 32 x 512).
    A token of probability 0 (a ``-inf`` logit) is never drawn; a row with no finite
    distribution raises ``ValueError``.

    ``rows``/``total_rows``: ``logits`` are the rows ``rows`` of a batch of ``total_rows`` (one
    data-parallel rank's share); the uniforms of the whole batch are drawn and these rows use theirs,
    so that every row gets the token it would get in a one-process run."""
    dtype = _uniform_dtype(logits.device)
    probs = torch.softmax(logits.to(dtype), dim=-1)
    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1:]
    if not bool((torch.isfinite(total) & (total > 0)).all()):
        raise ValueError("logits hold NaN (or a row of -inf): cannot sample a token")
    u = draw_uniforms(generator, total_rows or logits.shape[0], logits.device)
    if rows is not None:
        u = u[rows]
    idx = torch.searchsorted(cdf, u * total, right=True).squeeze(1)
    # u * total can round up to total: fall back to the last token that has probability > 0
    V = logits.shape[-1]
    last_positive = (V - 1) - (probs > 0).flip(-1).int().argmax(dim=-1)
    return torch.minimum(idx, last_positive)


def cache_argument(model) -> str:
    """The name under which ``model.forward`` takes (and its output returns) the KV cache:
    ``"cache"`` from transformers 5.24 on, where ``past_key_values`` is deprecated, and
    ``"past_key_values"`` before (the floor, 4.56, has only that); chosen by the signature."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


class _CachedForward:
    """The policy's forward one step at a time with the KV cache: the whole prompt first, then the
    token sampled last; returns the logits ``[B, V]`` and (with a value head) the values ``[B]``
    at the last position."""

    def __init__(self, parts: CausalLMParts, prompt_ids: Tensor, prompt_mask: Tensor, response_length: int,
                 value_head: Optional[torch.nn.Module]):
        B, self.prompt_len = prompt_ids.shape
        self.parts, self.value_head = parts, value_head
        self.model = parts.trunk if parts.separable else parts.model
        self.cache_name = cache_argument(self.model)
        self.extra = {} if parts.separable else {"logits_to_keep": 1, "output_hidden_states": value_head is not None}
        self.full_mask = torch.ones((B, self.prompt_len + response_length), dtype=torch.long, device=prompt_ids.device)
        self.full_mask[:, : self.prompt_len] = prompt_mask
        self.next_position = position_ids_from_mask(prompt_mask)[:, -1:] + 1  # [B, 1]
        self.ids, self.positions, self.cache, self.t = prompt_ids, position_ids_from_mask(prompt_mask), None, 0

    def __call__(self):
        out = self.model(input_ids=self.ids, attention_mask=self.full_mask[:, : self.prompt_len + self.t],
                         position_ids=self.positions, use_cache=True, **{self.cache_name: self.cache}, **self.extra)
        self.cache = getattr(out, self.cache_name)
        if self.parts.separable:
            hidden = out.last_hidden_state[:, -1]
            logits = self.parts.head(hidden)
        else:
            logits = out.logits[:, -1]
            hidden = out.hidden_states[-1][:, -1] if self.value_head is not None else None
        values = self.value_head(hidden).squeeze(-1).float() if self.value_head is not None else None
        return logits.float(), values

    def advance(self, token: Tensor) -> None:
        self.ids, self.positions = token.unsqueeze(1), self.next_position + self.t
        self.t += 1


@torch.no_grad()
def sample(
    parts: CausalLMParts,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    response_length: int,
    temperature: float,
    pad_token_id: int, stop_token_id: Optional[int], generator: torch.Generator,
    value_head: Optional[torch.nn.Module] = None, autocast=None,
    rows: Optional[slice] = None, total_rows: Optional[int] = None,
) -> Rollout:
    """Sample one response per prompt (at most ``response_length`` tokens) with the KV cache.
    ``rows``/``total_rows``: the prompts are these rows of a larger batch (see
    :func:`sample_categorical`)."""
    autocast = autocast or contextlib.nullcontext
    B, device = prompt_ids.shape[0], prompt_ids.device
    forward = _CachedForward(parts, prompt_ids, prompt_mask, response_length, value_head)
    tokens = torch.full((B, response_length), pad_token_id, dtype=torch.long, device=device)
    per_token = {name: torch.zeros((B, response_length), dtype=torch.float32, device=device)
                 for name in ("mask", "logprobs", "entropy", "values")}
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for t in range(response_length):
        with autocast():
            logits, values = forward()
        live = ~done
        token = torch.where(live, sample_categorical(logits / temperature, generator, rows, total_rows), pad_token_id)
        tokens[:, t], per_token["mask"][:, t] = token, live.float()
        logprob = token_logprobs(logits.unsqueeze(1), token.unsqueeze(1), temperature, validate=False).squeeze(1)
        for name, x in (("logprobs", logprob), ("entropy", entropy_from_logits(logits, temperature)), ("values", values)):
            if x is not None:
                per_token[name][:, t] = torch.where(live, x, torch.zeros_like(x))
        if stop_token_id is not None:
            done = done | (token == stop_token_id)
            if bool(done.all()):
                break
        forward.advance(token)
    length = t + 1
    per_token = {name: x[:, :length] for name, x in per_token.items()}
    ended = done if stop_token_id is not None else torch.zeros(B, dtype=torch.bool, device=device)
    return Rollout(torch.cat([prompt_ids, tokens[:, :length]], dim=1),
                   torch.cat([prompt_mask, per_token["mask"].long()], dim=1), prompt_ids.shape[1], tokens[:, :length],
                   per_token["mask"], per_token["logprobs"], per_token["entropy"],
                   per_token["values"] if value_head is not None else None, ended)
