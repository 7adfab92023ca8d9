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
"""

from __future__ import annotations

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


def sample_categorical(logits: Tensor, generator: torch.Generator) -> Tensor:
    r"""One draw per row from :math:`\operatorname{softmax}(\text{logits})`: ``[B, V] -> [B]``.

    Inverts the cumulative distribution in float64 (float32 on MPS): ``u ~ U[0, 1)`` per row and
    the first token whose cumulative probability exceeds ``u``. It needs ``B`` uniforms per step where
    ``torch.multinomial`` draws an exponential per vocabulary entry (7x faster here for 32 x 512).
    A token of probability 0 (a ``-inf`` logit) is never drawn; a row with no finite
    distribution raises ``ValueError``."""
    # float64 keeps the cumulative sum exact enough for vocabularies of 10^5 (MPS has no float64)
    dtype = torch.float32 if logits.device.type == "mps" else torch.float64
    probs = torch.softmax(logits.to(dtype), dim=-1)
    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1:]
    if not bool((torch.isfinite(total) & (total > 0)).all()):
        raise ValueError("logits hold NaN (or a row of -inf): cannot sample a token")
    u = torch.rand((logits.shape[0], 1), generator=generator, dtype=dtype, device=logits.device)
    idx = torch.searchsorted(cdf, u * total, right=True).squeeze(1)
    # u * total can round up to total: fall back to the last token that has probability > 0
    V = logits.shape[-1]
    last_positive = (V - 1) - (probs > 0).flip(-1).int().argmax(dim=-1)
    return torch.minimum(idx, last_positive)


@torch.no_grad()
def sample(
    parts: CausalLMParts,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    *,
    response_length: int,
    temperature: float,
    pad_token_id: int,
    stop_token_id: Optional[int],
    generator: torch.Generator,
    value_head: Optional[torch.nn.Module] = None,
    autocast=None,
) -> Rollout:
    """Sample one response per prompt (at most ``response_length`` tokens) with the KV cache."""
    import contextlib

    autocast = autocast or contextlib.nullcontext
    B, P = prompt_ids.shape
    device = prompt_ids.device
    full_mask = torch.ones((B, P + response_length), dtype=torch.long, device=device)
    full_mask[:, :P] = prompt_mask
    tokens = torch.full((B, response_length), pad_token_id, dtype=torch.long, device=device)
    mask = torch.zeros((B, response_length), dtype=torch.float32, device=device)
    logps = torch.zeros((B, response_length), dtype=torch.float32, device=device)
    ents = torch.zeros((B, response_length), dtype=torch.float32, device=device)
    values = torch.zeros((B, response_length), dtype=torch.float32, device=device) if value_head is not None else None
    done = torch.zeros(B, dtype=torch.bool, device=device)
    next_pos = position_ids_from_mask(prompt_mask)[:, -1:] + 1  # [B, 1]
    model = parts.trunk if parts.fused else parts.model

    cache = None
    step_ids, step_pos = prompt_ids, position_ids_from_mask(prompt_mask)
    T = response_length
    for t in range(response_length):
        with autocast():
            out = model(input_ids=step_ids, attention_mask=full_mask[:, : P + t], position_ids=step_pos,
                        past_key_values=cache, use_cache=True,
                        **({} if parts.fused else {"logits_to_keep": 1, "output_hidden_states": value_head is not None}))
            cache = out.past_key_values
            if parts.fused:
                h = out.last_hidden_state[:, -1]
                logits = parts.head(h)
            else:
                logits = out.logits[:, -1]
                h = out.hidden_states[-1][:, -1] if value_head is not None else None
            if value_head is not None:
                v = value_head(h).squeeze(-1).float()
        logits = logits.float()
        z = logits / temperature
        nxt = sample_categorical(z, generator)
        live = ~done
        nxt = torch.where(live, nxt, torch.full_like(nxt, pad_token_id))
        tokens[:, t] = nxt
        mask[:, t] = live.float()
        lp = token_logprobs(logits.unsqueeze(1), nxt.unsqueeze(1), temperature).squeeze(1)
        logps[:, t] = torch.where(live, lp, torch.zeros_like(lp))
        ent = entropy_from_logits(logits, temperature)
        ents[:, t] = torch.where(live, ent, torch.zeros_like(ent))
        if values is not None:
            values[:, t] = torch.where(live, v, torch.zeros_like(v))
        if stop_token_id is not None:
            done = done | (nxt == stop_token_id)
            if bool(done.all()):
                T = t + 1
                break
        step_ids, step_pos = nxt.unsqueeze(1), next_pos + t
    tokens, mask, logps, ents = tokens[:, :T], mask[:, :T], logps[:, :T], ents[:, :T]
    if values is not None:
        values = values[:, :T]
    input_ids = torch.cat([prompt_ids, tokens], dim=1)
    attention_mask = torch.cat([prompt_mask, mask.long()], dim=1)
    ended = done if stop_token_id is not None else torch.zeros(B, dtype=torch.bool, device=device)
    return Rollout(input_ids, attention_mask, P, tokens, mask, logps, ents, values, ended)
