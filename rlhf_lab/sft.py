r"""Supervised fine-tuning (SFT): the first stage of the RLHF pipeline (unit 5).

Maximize the log-likelihood of demonstration responses given their prompts, i.e. minimize the
per-token negative log-likelihood over the response tokens only:

.. math::
    \mathcal{L}_{\text{SFT}}(\theta) = -\frac{1}{\sum_i |y_i|}\sum_i \sum_{t=1}^{|y_i|}
    \log \pi_\theta(y_{i,t} \mid x_i, y_{i,<t})

The prompt tokens are context, not targets (``prompt_loss=True`` trains on them too). An EOS
token is appended to every response (``add_eos``) so that the model learns to stop, which PPO's
rollout relies on. Log-probabilities come from :func:`rlhf_lab.logprobs.sequence_logprobs`, with
the trainer's batch layout (prompts left-padded, responses right-padded).

.. code-block:: python

    history = sft(model, tokenizer, [("the cat is", " happy"), ...], epochs=5)
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .logprobs import check_fits_model, left_pad, position_ids_from_mask, right_pad, sequence_logprobs
from .masked import check_scalar, masked_mean
from .utils import resolve_device, seeded_torch

Example = Union[Tuple[str, str], Mapping[str, str]]


def _as_examples(examples: Sequence[Example]) -> List[Tuple[str, str]]:
    out = []
    for i, e in enumerate(examples):
        if isinstance(e, Mapping):
            try:
                out.append((e["prompt"], e["response"]))
            except KeyError as k:
                raise ValueError(f"examples[{i}] lacks the key {k}") from None
        elif isinstance(e, (tuple, list)) and len(e) == 2:
            out.append((e[0], e[1]))
        else:
            raise ValueError(f"examples[{i}] must be (prompt, response) or a dict with those keys")
    if not out:
        raise ValueError("examples is empty")
    return out


def encode_examples(tokenizer, pairs: Sequence[Tuple[str, str]], add_eos: bool = True, device=None):
    """``(input_ids, attention_mask, P)``: prompts left-padded to ``P``, responses right-padded."""
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token: set one, e.g. `tokenizer.pad_token = tokenizer.eos_token`")
    if add_eos and tokenizer.eos_token_id is None:
        raise ValueError("add_eos=True but the tokenizer has no eos token")
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
    responses = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if not p:
            raise ValueError(f"examples[{i}] has an empty prompt")
        if not r and not add_eos:
            raise ValueError(f"examples[{i}] has an empty response")
    if add_eos:
        responses = [list(r) + [tokenizer.eos_token_id] for r in responses]
    pid, pmask = left_pad(prompts, tokenizer.pad_token_id, device)
    rid, rmask = right_pad(responses, tokenizer.pad_token_id, device)
    return torch.cat([pid, rid], dim=1), torch.cat([pmask, rmask], dim=1), pid.shape[1]


def sft_loss(model, input_ids, attention_mask, response_start: int,
             prompt_loss: bool = False) -> torch.Tensor:
    r"""Mean negative log-likelihood of the response tokens (:math:`\mathcal{L}_{\text{SFT}}`).

    With ``prompt_loss`` every real token but each row's first is a target."""
    # lines of at most 76 characters: unit 5 shows this code in the book
    if not prompt_loss:
        logp = sequence_logprobs(model, input_ids, attention_mask,
                                 response_start)
        m = attention_mask[:, response_start:].to(logp.dtype)
    else:
        logp = sequence_logprobs(model, input_ids, attention_mask, 1)
        # a row's first real token has no context: it is no target
        first = position_ids_from_mask(attention_mask)[:, 1:] == 0
        m = (attention_mask[:, 1:].bool() & ~first).to(logp.dtype)
    if not bool(m.sum() > 0):
        raise ValueError("attention_mask selects no target token "
                         "(every response is empty)")
    return -masked_mean(logp, m)


def sft(
    model,
    tokenizer,
    examples: Sequence[Example],
    *,
    epochs: int = 1,
    batch_size: int = 8,
    learning_rate: float = 1e-4,
    weight_decay: float = 0.0,
    max_grad_norm: Optional[float] = 1.0,
    add_eos: bool = True,
    prompt_loss: bool = False,
    device=None,
    seed: int = 0,
    progress: bool = True,
) -> List[dict]:
    r"""Fine-tune a causal LM on ``(prompt, response)`` demonstrations; returns per-step metrics.

    Each step minimizes :math:`\mathcal{L}_{\text{SFT}}` on a shuffled minibatch (AdamW,
    gradient clipping at ``max_grad_norm``). With ``prompt_loss=True`` the prompt tokens are
    targets too (plain language modelling of prompt + response). Returns dicts with ``loss``
    (nats per target token), ``tokens`` and ``epoch``. The model is left in eval mode.
    """
    from tqdm.auto import tqdm

    pairs = _as_examples(examples)
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    check_scalar("learning_rate", learning_rate, positive=True)
    check_scalar("weight_decay", weight_decay, nonnegative=True)
    if max_grad_norm is not None:
        check_scalar("max_grad_norm", max_grad_norm, positive=True)
    device = resolve_device(device, "device")
    for i, (prompt, response) in enumerate(pairs):  # before any step: a too-long example fails now, not mid-epoch
        ids, _, _ = encode_examples(tokenizer, [(prompt, response)], add_eos=add_eos)
        check_fits_model(model, ids, f"examples[{i}]")
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    history = []
    steps = epochs * ((len(pairs) + batch_size - 1) // batch_size)
    bar = tqdm(total=steps, desc="SFT", disable=not progress, leave=False)
    with seeded_torch(seed, device):  # dropout repeats for a given seed
        for epoch in range(epochs):
            order = torch.randperm(len(pairs), generator=g).tolist()
            for s in range(0, len(order), batch_size):
                batch = [pairs[i] for i in order[s : s + batch_size]]
                ids, mask, P = encode_examples(tokenizer, batch, add_eos=add_eos, device=device)
                loss = sft_loss(model, ids, mask, P, prompt_loss=prompt_loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                opt.step()
                history.append({"epoch": epoch, "loss": float(loss.detach()), "tokens": int(mask[:, P:].sum())})
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
    bar.close()
    model.eval()
    return history
