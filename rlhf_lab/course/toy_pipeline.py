"""Unit 5's toy pipeline in one call, for the units that start where it ends (unit 6).

:func:`build` runs unit 5's stages 1 and 2 with unit 5's settings: supervised fine-tuning of a
small GPT-2 on :mod:`rlhf_lab.course.toy_domain`'s grammar, preference pairs sampled from the SFT
policy and labelled by the gold rule, and a Bradley–Terry reward model initialized from the SFT
trunk. :class:`Judge` is the reward a trainer sees (the reward model's score) and records the gold
score of the same responses on the side. :func:`evaluate` measures any policy the same way
(gold reward and the sequence-level :math:`\\mathrm{KL}(\\pi\\|\\pi_{\\text{ref}})` on fresh
samples), and :func:`training_bytes` counts what a method holds in memory while it trains.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from ..logprobs import sequence_logprobs
from ..reward_model import reward_accuracy, score_texts, train_reward_model
from ..sft import sft
from ..utils import set_seed
from . import toy_domain as td
from .models import encode_batch, tiny_causal_lm

__all__ = ["CPU_SIZES", "GPU_SIZES", "Pipeline", "build", "sample", "Judge", "evaluate",
           "adam_state_bytes", "training_bytes", "tensor_bytes"]

#: unit 5's sizes (its stages 1 and 2), on a CPU and on a GPU
CPU_SIZES = dict(n_layer=2, n_embd=64, sft_examples=4000, sft_epochs=6, pair_prompts=1500, rm_epochs=4)
GPU_SIZES = dict(n_layer=4, n_embd=128, sft_examples=16000, sft_epochs=6, pair_prompts=4000, rm_epochs=4)
RESPONSE_LENGTH = 16


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str], response_length: int = RESPONSE_LENGTH,
           temperature: float = 1.0, batch_size: int = 512) -> list[str]:
    """One response per prompt by ancestral sampling at ``temperature`` (the global RNG), as text."""
    out = []
    for i in range(0, len(prompts), batch_size):
        ids, _, gen = _generate(model, tokenizer, prompts[i:i + batch_size], response_length, temperature)
        out += tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
    return out


def _generate(model, tokenizer, prompts: Sequence[str], response_length: int, temperature: float):
    """``(prompt ids, prompt mask, prompt + response ids)``: transformers' own ancestral sampling
    (the global RNG), padded after EOS."""
    model.eval()
    ids, att = encode_batch(tokenizer, list(prompts), device=next(model.parameters()).device)
    gen = model.generate(input_ids=ids, attention_mask=att, do_sample=True, top_k=0, top_p=1.0,
                         temperature=temperature, max_new_tokens=response_length,
                         pad_token_id=tokenizer.pad_token_id)
    return ids, att, gen


def _reward_model_from(policy, tokenizer):
    from transformers import GPT2ForSequenceClassification

    config = policy.config.to_dict() | {"num_labels": 1, "id2label": {0: "reward"}, "label2id": {"reward": 0}}
    rm = GPT2ForSequenceClassification(type(policy.config)(**config))
    rm.transformer.load_state_dict(policy.transformer.state_dict())
    rm.config.pad_token_id = tokenizer.pad_token_id
    return rm.to(next(policy.parameters()).device)


@dataclass
class Pipeline:
    """What :func:`build` returns: the SFT policy, its frozen copy (the reference), the labelled
    pairs (``train_pairs`` trained the reward model), the reward model and its held-out accuracy."""

    tokenizer: object
    policy: nn.Module
    reference: nn.Module
    train_pairs: list
    test_pairs: list
    reward_model: nn.Module
    rm_accuracy: float
    sft_losses: list = field(default_factory=list)

    def rm_scores(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """:math:`r_\\phi(x, y)`: the reward model's score of each prompt + response."""
        return score_texts(self.reward_model, self.tokenizer, [p + r for p, r in zip(prompts, responses)])


def build(sizes: Optional[dict] = None, device=None, seed: int = 0) -> Pipeline:
    """Unit 5's stages 1 and 2: SFT, preference pairs labelled by the gold rule, a reward model.

    ``sizes``: :data:`CPU_SIZES` (the default) or :data:`GPU_SIZES`; ``seed`` shifts every seed
    (0 gives unit 5's). About 30 s on two CPU cores with :data:`CPU_SIZES`."""
    s = dict(CPU_SIZES if sizes is None else sizes)
    device = torch.device(device or "cpu")
    tok = td.tokenizer()
    policy = tiny_causal_lm(tok, n_layer=s["n_layer"], n_embd=s["n_embd"], n_head=4, n_positions=64,
                            seed=seed).to(device)
    set_seed(seed)
    history = sft(policy, tok, td.sft_corpus(s["sft_examples"], seed=seed), epochs=s["sft_epochs"], batch_size=64,
                  learning_rate=3e-3, seed=seed, device=device, progress=False)
    pair_prompts = td.make_prompts(s["pair_prompts"], seed=11 + seed)
    set_seed(3 + seed)
    first, second = sample(policy, tok, pair_prompts), sample(policy, tok, pair_prompts)
    pairs = td.label_pairs(pair_prompts, first, second, seed=seed)
    split = int(0.8 * len(pairs))
    set_seed(4 + seed)
    rm = _reward_model_from(policy, tok)
    train_reward_model(rm, tok, pairs[:split], epochs=s["rm_epochs"], batch_size=32, learning_rate=1e-3,
                       seed=seed, device=device, progress=False)
    rm.eval().requires_grad_(False)
    accuracy = reward_accuracy(rm, tok, pairs[split:])
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    return Pipeline(tok, policy, reference, pairs[:split], pairs[split:], rm, accuracy,
                    [h["loss"] for h in history])


class Judge:
    """The reward given to a trainer: the reward model's score (the proxy). Records, per call, the
    mean proxy and the mean gold reward of the same responses, which the trainer never sees."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline, self.proxy, self.gold = pipeline, [], []

    @torch.no_grad()
    def __call__(self, prompts, responses):
        scores = self.pipeline.rm_scores(prompts, responses).tolist()
        self.proxy.append(sum(scores) / len(scores))
        gold = td.gold_rewards(prompts, responses)
        self.gold.append(float(sum(gold)) / len(gold))
        return scores


@torch.no_grad()
def evaluate(policy, reference, tokenizer, prompts: Sequence[str], seed: int = 0,
             response_length: int = RESPONSE_LENGTH, return_samples: bool = False) -> dict:
    """Gold reward and KL of ``policy`` on one fresh sample per prompt (temperature 1).

    ``kl`` is the mean over responses of :math:`\\sum_t \\log\\pi(y_t\\mid\\cdot) -
    \\log\\pi_{\\text{ref}}(y_t\\mid\\cdot)` over the response's tokens up to and including EOS
    (:math:`k_1` summed over the sequence, an unbiased estimate of the sequence-level
    :math:`\\mathrm{KL}(\\pi\\|\\pi_{\\text{ref}})`), the same for every method. Returns
    ``{"gold", "kl", "length"}`` (length in words, EOS not counted); with ``return_samples`` also
    ``"responses"`` (each response's token ids, EOS included) and ``"kls"`` (each one's KL)."""
    eos = tokenizer.eos_token_id
    set_seed(seed)
    ids, att, gen = _generate(policy, tokenizer, prompts, response_length, temperature=1.0)
    p = ids.shape[1]
    responses = gen[:, p:]
    # the response's tokens: up to and including the first EOS (generate pads after it)
    is_eos = (responses == eos).long()
    after_eos = (is_eos.cumsum(dim=1) - is_eos) > 0
    mask = (~after_eos).float()
    full_mask = torch.cat([att, mask.long()], dim=1)
    kl = (sequence_logprobs(policy, gen, full_mask, p) - sequence_logprobs(reference, gen, full_mask, p)).sum(dim=1)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    gold = td.gold_rewards(list(prompts), texts)
    lengths = (mask.sum(dim=1) - (is_eos * mask).sum(dim=1))
    out = {"gold": float(sum(gold)) / len(gold), "kl": float(kl.mean()), "length": float(lengths.mean())}
    if return_samples:
        out["responses"] = [row[m.bool()].tolist() for row, m in zip(responses, mask)]
        out["kls"] = kl.tolist()
    return out


def tensor_bytes(tensors) -> int:
    """Bytes of the distinct tensors in ``tensors`` (each storage counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None or id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def adam_state_bytes(optimizer: torch.optim.Optimizer, params=None) -> int:
    """Bytes of the optimizer's per-parameter state (Adam: ``exp_avg``, ``exp_avg_sq``, ``step``),
    for ``params`` only when given."""
    keep = None if params is None else {id(p) for p in params}
    return tensor_bytes(v for p, state in optimizer.state.items() if keep is None or id(p) in keep
                        for v in state.values() if torch.is_tensor(v))


def training_bytes(policy, reference=None, critic=None, reward_model=None, optimizer=None) -> dict:
    """What a method holds while it trains, in bytes, counted from the objects themselves.

    ``policy``/``critic``: trained (parameters, one gradient each, the optimizer's state);
    ``reference``/``reward_model``: frozen (parameters only). Without ``optimizer`` the Adam state is
    counted as two tensors of each trained parameter's size plus a one-element step per tensor
    (what ``torch.optim.AdamW`` keeps after its first step). Activations are not counted: they
    depend on the batch, not on the method. Returns ``{"policy", "gradients", "adam", "reference",
    "critic", "reward_model", "total"}``; ``critic`` holds the critic's parameters, gradients and
    Adam state."""
    def params(m):
        return [] if m is None else list(m.parameters())

    def adam(ps):
        if optimizer is not None:
            return adam_state_bytes(optimizer, ps)
        return sum(2 * p.numel() * p.element_size() + 4 for p in ps)

    pol, cri = params(policy), params(critic)
    out = {"policy": tensor_bytes(pol), "gradients": tensor_bytes(pol), "adam": adam(pol),
           "reference": tensor_bytes(params(reference)),
           "critic": 2 * tensor_bytes(cri) + (adam(cri) if cri else 0),
           "reward_model": tensor_bytes(params(reward_model))}
    out["total"] = sum(out.values())
    return out
