r"""Reward-model training on preference pairs (Bradley–Terry), for unit 5's full pipeline.

A reward model :math:`r_\phi(x, y)` is any transformers sequence-classification model with one
label, read at the last real token of prompt + response. Given pairs where a person preferred
:math:`y_w` (chosen) over :math:`y_l` (rejected), the Bradley–Terry model says

.. math::
    P(y_w \succ y_l \mid x) = \sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l)\big),

so training minimizes the negative log-likelihood
:math:`\mathcal{L}(\phi) = -\operatorname{mean}\,\log\sigma(r_\phi(x, y_w) - r_\phi(x, y_l))`.
Only differences of scores are identified: adding a constant to :math:`r_\phi` changes nothing.

.. code-block:: python

    pairs = [("the cat is", " happy", " sad"), ...]          # (prompt, chosen, rejected)
    history = train_reward_model(rm, tokenizer, pairs, epochs=3)
    reward_accuracy(rm, tokenizer, held_out_pairs)          # share with r(chosen) > r(rejected)
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .utils import default_device, eval_mode, seeded_torch

Tensor = torch.Tensor
Pair = Union[Tuple[str, str, str], Mapping[str, str]]


def bradley_terry_loss(chosen: Tensor, rejected: Tensor) -> Tuple[Tensor, Tensor]:
    r"""``(loss, accuracy)``: :math:`-\operatorname{mean}\log\sigma(r_w - r_l)` and the share of
    pairs with :math:`r_w > r_l`, a tie counting one half (a constant model scores 50 %, chance).
    Uses ``logsigmoid`` (stable for large margins)."""
    if not isinstance(chosen, Tensor) or not isinstance(rejected, Tensor) or chosen.shape != rejected.shape:
        raise ValueError("chosen and rejected must be tensors of the same shape")
    if chosen.numel() == 0:
        raise ValueError("chosen is empty")
    margin = chosen.float() - rejected.float()
    return -F.logsigmoid(margin).mean(), _pairwise_accuracy(margin)


def _pairwise_accuracy(margin: Tensor) -> Tensor:
    return ((margin > 0).float() + 0.5 * (margin == 0).float()).mean()


def _as_triples(pairs: Sequence[Pair]) -> List[Tuple[str, str, str]]:
    out = []
    for i, p in enumerate(pairs):
        if isinstance(p, Mapping):
            try:
                out.append((p["prompt"], p["chosen"], p["rejected"]))
            except KeyError as e:
                raise ValueError(f"pairs[{i}] lacks the key {e}") from None
        elif isinstance(p, (tuple, list)) and len(p) == 3:
            out.append(tuple(p))
        else:
            raise ValueError(f"pairs[{i}] must be (prompt, chosen, rejected) or a dict with those keys")
    if not out:
        raise ValueError("pairs is empty")
    return out


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def score_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: Optional[int] = None,
                grad: bool = False) -> Tensor:
    """Scores ``[N]`` of ``texts`` under a one-label sequence-classification model, read as
    :func:`rlhf_lab.ppo.modeling.score_with_model` reads them (a decoder at the last real token)."""
    from .ppo.modeling import score_with_model

    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token: set one, e.g. `tokenizer.pad_token = tokenizer.eos_token`")
    device = _device_of(model)
    outs = []
    for s in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[s : s + batch_size]), return_tensors="pt", padding=True,
                        truncation=max_length is not None, max_length=max_length)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        with torch.enable_grad() if grad else torch.no_grad():
            outs.append(score_with_model(model, ids, mask))
    return torch.cat(outs)


def train_reward_model(
    model,
    tokenizer,
    pairs: Sequence[Pair],
    *,
    epochs: int = 1,
    batch_size: int = 8,
    learning_rate: float = 1e-4,
    weight_decay: float = 0.0,
    max_length: Optional[int] = None,
    device=None,
    seed: int = 0,
    progress: bool = True,
) -> List[dict]:
    r"""Fit ``model`` to preference ``pairs`` by minimizing the Bradley–Terry loss.

    ``pairs``: ``(prompt, chosen, rejected)`` tuples or dicts with those keys; the texts scored
    are ``prompt + chosen`` and ``prompt + rejected``. AdamW, shuffled minibatches; ``seed`` fixes the order and the dropout masks.
    Returns one dict per optimizer step: ``loss``, ``accuracy`` (share of the minibatch ranked
    right), ``margin`` (mean :math:`r_w - r_l`), ``epoch``. The model is left in eval mode.
    """
    from tqdm.auto import tqdm

    triples = _as_triples(pairs)
    if getattr(getattr(model, "config", None), "num_labels", 1) != 1:
        raise ValueError("model must be a sequence-classification model with num_labels=1")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    device = torch.device(device) if device is not None else default_device()
    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate,
                            weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    history = []
    steps = epochs * ((len(triples) + batch_size - 1) // batch_size)
    bar = tqdm(total=steps, desc="reward model", disable=not progress, leave=False)
    with seeded_torch(seed, device):  # dropout repeats for a given seed
        for epoch in range(epochs):
            order = torch.randperm(len(triples), generator=g).tolist()
            for s in range(0, len(order), batch_size):
                batch = [triples[i] for i in order[s : s + batch_size]]
                texts = [p + c for p, c, _ in batch] + [p + r for p, _, r in batch]
                scores = score_texts(model, tokenizer, texts, batch_size=len(texts), max_length=max_length, grad=True)
                chosen, rejected = scores[: len(batch)], scores[len(batch) :]
                loss, acc = bradley_terry_loss(chosen, rejected)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                history.append({"epoch": epoch, "loss": float(loss.detach()), "accuracy": float(acc),
                                "margin": float((chosen - rejected).detach().mean())})
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
    bar.close()
    model.eval()
    return history


@torch.no_grad()
def reward_accuracy(model, tokenizer, pairs: Sequence[Pair], batch_size: int = 32,
                    max_length: Optional[int] = None) -> float:
    """Share of ``pairs`` where the model scores the chosen response above the rejected one (a tie
    counts one half, so a model that scores everything alike gets 50 %, chance level)."""
    triples = _as_triples(pairs)
    with eval_mode(model):
        chosen = score_texts(model, tokenizer, [p + c for p, c, _ in triples], batch_size, max_length)
        rejected = score_texts(model, tokenizer, [p + r for p, _, r in triples], batch_size, max_length)
    return float(_pairwise_accuracy(chosen - rejected))
