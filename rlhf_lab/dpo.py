r"""Direct Preference Optimization for causal LMs (unit 6): preference pairs, a frozen reference, no
reward model and no sampling.

The loss is :func:`rlhf_lab.objectives.dpo_loss` (DPO, Rafailov et al. 2023; cDPO's label
smoothing; IPO, Azar et al. 2024) on sequence log-probabilities read from a causal LM with
:func:`rlhf_lab.logprobs.sequence_logprobs`. The implicit reward of a response is
:math:`\hat r(x, y) = \beta(\log\pi_\theta(y \mid x) - \log\pi_{\text{ref}}(y \mid x))`: the reward
for which :math:`\pi_\theta` would be the KL-regularized optimum of unit 4 (up to a function of
the prompt, which cancels in a pair).

.. code-block:: python

    from rlhf_lab.dpo import dpo, preference_accuracy
    history = dpo(policy, tokenizer, pairs, beta=0.1, epochs=2)   # pairs: (prompt, chosen, rejected)
    preference_accuracy(policy, ref_policy, tokenizer, held_out_pairs)

A batch is one forward of ``2B`` rows: the ``B`` chosen responses, then the ``B`` rejected ones
(prompts left-padded, responses right-padded, an EOS appended to each response as in
:func:`rlhf_lab.sft.sft`).
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .logprobs import check_fits_model, sequence_logprobs
from .masked import check_scalar
from .objectives import DPO_LOSS_TYPES, dpo_loss
from .reward_model import Pair, as_triples
from .sft import encode_examples
from .utils import resolve_device, seeded_torch

Tensor = torch.Tensor


def encode_pairs(tokenizer, pairs: Sequence[Pair], add_eos: bool = True, device=None):
    """``(input_ids, attention_mask, P)`` of ``2B`` rows: the chosen responses of the ``B`` pairs,
    then the rejected ones, each after its prompt (prompts left-padded to ``P``)."""
    triples = as_triples(pairs)
    examples = [(p, c) for p, c, _ in triples] + [(p, r) for p, _, r in triples]
    return encode_examples(tokenizer, examples, add_eos=add_eos, device=device)


def pair_logprobs(model, input_ids: Tensor, attention_mask: Tensor, response_start: int,
                  average: bool = False) -> Tuple[Tensor, Tensor]:
    r"""``(logp_chosen, logp_rejected)``, each ``[B]``: :math:`\log\pi(y \mid x) = \sum_t \log
    \pi(y_t \mid x, y_{<t})` of the chosen and rejected rows of :func:`encode_pairs`' batch (one
    forward), or with ``average=True`` the mean per response token (IPO's length normalization).
    Nats."""
    logp = sequence_logprobs(model, input_ids, attention_mask, response_start)
    mask = attention_mask[:, response_start:].to(logp.dtype)
    per_row = logp.sum(dim=-1)
    if average:
        per_row = per_row / mask.sum(dim=-1)
    half = per_row.shape[0] // 2
    return per_row[:half], per_row[half:]


def dpo_batch_loss(policy, ref_policy, input_ids: Tensor, attention_mask: Tensor, response_start: int,
                   beta: float, *, label_smoothing: float = 0.0,
                   loss_type: str = "sigmoid") -> Tuple[Tensor, Dict[str, Tensor]]:
    r"""The DPO (or cDPO, IPO) loss of one batch of :func:`encode_pairs`, and its metrics.

    Metrics, with TRL's names (the implicit rewards :math:`\hat r = \beta(\log\pi_\theta -
    \log\pi_{\text{ref}})` of each response, in nats times :math:`\beta`):

    - ``rewards/chosen``, ``rewards/rejected``: mean :math:`\hat r` of each side;
    - ``rewards/margins``: mean :math:`\hat r(y_w) - \hat r(y_l)`;
    - ``rewards/accuracies``: share of pairs with :math:`\hat r(y_w) > \hat r(y_l)` (a tie counts
      one half, so the reference itself scores 0.5).

    ``loss_type="ipo"`` scores length-normalized log-probabilities (the mean per token), as TRL does.
    """
    average = loss_type == "ipo"
    logp_chosen, logp_rejected = pair_logprobs(policy, input_ids, attention_mask, response_start, average)
    with torch.no_grad():
        ref_chosen, ref_rejected = pair_logprobs(ref_policy, input_ids, attention_mask, response_start, average)
    loss = dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta, label_smoothing=label_smoothing,
                    loss_type=loss_type)
    with torch.no_grad():
        chosen = beta * (logp_chosen - ref_chosen)
        rejected = beta * (logp_rejected - ref_rejected)
        margin = chosen - rejected
        stats = {"rewards/chosen": chosen.mean(), "rewards/rejected": rejected.mean(),
                 "rewards/margins": margin.mean(), "rewards/accuracies": _accuracy(margin)}
    return loss, stats


def _accuracy(margin: Tensor) -> Tensor:
    return ((margin > 0).to(margin.dtype) + 0.5 * (margin == 0).to(margin.dtype)).mean()


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def dpo(
    policy,
    tokenizer,
    pairs: Sequence[Pair],
    ref_policy=None,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
    epochs: int = 1,
    batch_size: int = 8,
    learning_rate: float = 1e-4,
    max_grad_norm: Optional[float] = 1.0,
    device=None,
    seed: int = 0,
    progress: bool = True,
) -> List[dict]:
    r"""Train ``policy`` in place on preference ``pairs`` by DPO; returns one dict per step.

    ``ref_policy``: the frozen :math:`\pi_{\text{ref}}` (``None``: a frozen copy of the starting
    policy, TRL's default). ``beta``, ``label_smoothing`` and ``loss_type`` (``"sigmoid"`` or
    ``"ipo"``) as in :func:`rlhf_lab.objectives.dpo_loss`, with TRL's ``DPOConfig`` names and
    defaults (``beta=0.1``). AdamW on shuffled minibatches of ``batch_size`` pairs, gradient
    clipping at ``max_grad_norm``; ``seed`` fixes the order. Each step's dict holds ``loss``, the
    metrics of :func:`dpo_batch_loss` and ``epoch``. The models are left in eval mode (dropout
    off, so that the policy and its reference score alike at the start: the loss is then log 2).
    """
    from tqdm.auto import tqdm

    triples = as_triples(pairs)
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    check_scalar("beta", beta, positive=True)
    check_scalar("learning_rate", learning_rate, positive=True)
    if max_grad_norm is not None:
        check_scalar("max_grad_norm", max_grad_norm, positive=True)
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if ref_policy is policy:
        raise ValueError("ref_policy is the policy itself: pass None (a frozen copy is made) or a separate model")
    device = resolve_device(device, "device")
    for i, triple in enumerate(triples):  # a too-long pair fails now, not mid-epoch
        check_fits_model(policy, encode_pairs(tokenizer, [triple])[0], f"pairs[{i}]")
    policy.to(device).eval()
    ref = copy.deepcopy(policy).requires_grad_(False) if ref_policy is None else ref_policy.to(device).eval()
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("policy has no parameter with requires_grad=True: DPO would train nothing")
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    history: List[dict] = []
    steps = epochs * ((len(triples) + batch_size - 1) // batch_size)
    bar = tqdm(total=steps, desc="DPO", disable=not progress, leave=False)
    with seeded_torch(seed, device):
        for epoch in range(epochs):
            order = torch.randperm(len(triples), generator=generator).tolist()
            for start in range(0, len(order), batch_size):
                batch = [triples[i] for i in order[start : start + batch_size]]
                ids, mask, P = encode_pairs(tokenizer, batch, device=device)
                loss, stats = dpo_batch_loss(policy, ref, ids, mask, P, beta, label_smoothing=label_smoothing,
                                             loss_type=loss_type)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
                history.append({"loss": float(loss.detach()), **{k: float(v) for k, v in stats.items()},
                                "epoch": epoch})
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
    bar.close()
    return history


@torch.no_grad()
def preference_accuracy(policy, ref_policy, tokenizer, pairs: Sequence[Pair], batch_size: int = 32) -> float:
    r"""Share of ``pairs`` whose chosen response has the larger implicit reward
    :math:`\log\pi_\theta - \log\pi_{\text{ref}}` (a tie counts one half: the reference scores 0.5).
    The held-out accuracy of DPO's implied reward model."""
    triples = as_triples(pairs)
    _check_positive_int("batch_size", batch_size)
    device = next(policy.parameters()).device
    margins = []
    for start in range(0, len(triples), batch_size):
        ids, mask, P = encode_pairs(tokenizer, triples[start : start + batch_size], device=device)
        chosen, rejected = pair_logprobs(policy, ids, mask, P)
        ref_chosen, ref_rejected = pair_logprobs(ref_policy, ids, mask, P)
        margins.append((chosen - ref_chosen) - (rejected - ref_rejected))
    return float(_accuracy(torch.cat(margins)))
