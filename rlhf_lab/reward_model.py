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

import weakref
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .logprobs import check_fits_model, position_ids_from_mask
from .masked import check_scalar
from .utils import eval_mode, resolve_device, seeded_torch

Tensor = torch.Tensor
Pair = Union[Tuple[str, str, str], Mapping[str, str]]


def bradley_terry_loss(chosen: Tensor,
                       rejected: Tensor) -> Tuple[Tensor, Tensor]:
    r"""``(loss, accuracy)``: :math:`-\operatorname{mean}\log\sigma(r_w - r_l)` and the share of
    pairs with :math:`r_w > r_l`, a tie counting one half (a constant model scores 50 %, chance).
    Uses ``logsigmoid`` (stable for large margins)."""
    # lines of at most 76 characters: unit 5 shows this code in the book
    tensors = isinstance(chosen, Tensor) and isinstance(rejected, Tensor)
    if not tensors or chosen.shape != rejected.shape:
        raise ValueError("chosen and rejected must be tensors of one shape")
    if chosen.numel() == 0:
        raise ValueError("chosen is empty")
    margin = chosen.float() - rejected.float()
    return -F.logsigmoid(margin).mean(), _pairwise_accuracy(margin)


def _pairwise_accuracy(margin: Tensor) -> Tensor:
    return ((margin > 0).float() + 0.5 * (margin == 0).float()).mean()


def as_triples(pairs: Sequence[Pair]) -> List[Tuple[str, str, str]]:
    """``(prompt, chosen, rejected)`` tuples from tuples or dicts with those keys (TRL's column
    names); ``ValueError`` naming the bad item."""
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


# ------------------------------------------------------------------ scoring with a one-label model
def scalar_head(model) -> nn.Module:
    """The one-label head of a sequence-classification model (``score`` or ``classifier``)."""
    for name in ("score", "classifier", "v_head", "value_head"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise ValueError(
        f"{type(model).__name__} has no `score`/`classifier` head: pass a transformers "
        "*ForSequenceClassification model with num_labels=1"
    )


_READS_LAST_TOKEN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _trunk_and_scalar_head(model):
    base = getattr(model, "base_model", None)
    try:
        head = scalar_head(model)
    except ValueError:
        return None
    if base is None or base is model:
        return None
    return base, head


def _scores_at_last_token(trunk, head, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    L = input_ids.shape[1]
    cols = torch.arange(L, device=input_ids.device)
    last = (cols * (attention_mask != 0)).argmax(dim=1)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    h = trunk(input_ids=input_ids, attention_mask=attention_mask,
              position_ids=position_ids_from_mask(attention_mask), use_cache=False).last_hidden_state
    return head(h[rows, last])


@torch.no_grad()
def reads_last_token(model) -> bool:
    """Whether ``model`` scores a sequence with its one-label head on the hidden state of the last
    token, as transformers' decoder classifiers (GPT-2, Llama, Qwen, ...) do; checked once per model
    on a probe against the model's own forward. Encoder classifiers (BERT, RoBERTa, DeBERTa, ...)
    pool the first token or the whole sequence instead: they answer ``False``."""
    cached = _READS_LAST_TOKEN.get(model)
    if cached is not None:
        return cached
    parts = _trunk_and_scalar_head(model)
    ok = False
    if parts is not None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        vocab = int(emb.weight.shape[0]) if emb is not None else int(getattr(getattr(model, "config", None), "vocab_size", 2))
        pad = getattr(getattr(model, "config", None), "pad_token_id", None)
        ids = torch.randint(0, vocab, (1, 6), generator=torch.Generator().manual_seed(0))
        if pad is not None:
            ids[ids == pad] = (pad + 1) % vocab
        ids = ids.to(device)
        mask = torch.ones_like(ids)
        # bf16/fp16 weights round the two paths differently; float32 ones agree to 1e-6
        tol = 1e-4 if param is None or param.dtype == torch.float32 else 2e-2
        try:
            with eval_mode(model), torch.autocast(device.type, enabled=False):
                fast = _scores_at_last_token(*parts, ids, mask).float()
                try:
                    own = model(input_ids=ids, attention_mask=mask).logits.float()
                except Exception:  # a scoring module with no forward of its own: trunk + head is all it has
                    ok = True
                else:
                    ok = own.shape == fast.shape and torch.allclose(own, fast, rtol=tol, atol=tol)
        except Exception:
            ok = False
    _READS_LAST_TOKEN[model] = ok
    return ok


def right_aligned(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move each row's real tokens (mask 1) to the front, in order, and the padding to the end:
    the plain right-padded layout every model accepts (the trainer's rows are left-padded prompts
    followed by right-padded responses)."""
    order = torch.sort((attention_mask == 0).to(torch.int32), dim=1, stable=True).indices
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def score_with_model(reward_model, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Scores ``[B]`` of a one-label sequence-classification model. Gradients flow unless called
    under ``torch.no_grad()`` (the PPO trainer does; reward-model training doesn't).

    Decoder classifiers (see :func:`reads_last_token`) are read at each row's last real token,
    with position ids from the mask, so left padding, padding inside a row and a pad token equal
    to EOS are all handled. Any other classifier (an encoder that pools the first token, say) gets
    its rows right-aligned (:func:`right_aligned`) and is scored by its own forward."""
    if reads_last_token(reward_model):
        out = _scores_at_last_token(*_trunk_and_scalar_head(reward_model), input_ids, attention_mask)
    else:
        ids, mask = right_aligned(input_ids, attention_mask)
        out = reward_model(input_ids=ids, attention_mask=mask).logits
    if out.dim() != 2 or out.shape[1] != 1:
        raise ValueError(f"the reward model must have exactly one label, its output has shape {tuple(out.shape)}")
    return out[:, 0].float()


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def score_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: Optional[int] = None,
                grad: bool = False) -> Tensor:
    """Scores ``[N]`` of ``texts`` under a one-label sequence-classification model, read as
    :func:`score_with_model` reads them (a decoder at the last real token). A text longer than the
    model's context (without ``max_length``) or a tokenizer whose ids the model does not have
    raises ``ValueError``."""
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token: set one, e.g. `tokenizer.pad_token = tokenizer.eos_token`")
    _check_positive_int("batch_size", batch_size)
    if max_length is not None:
        _check_positive_int("max_length", max_length)
    device = _device_of(model)
    outs = []
    for s in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[s : s + batch_size]), return_tensors="pt", padding=True,
                        truncation=max_length is not None, max_length=max_length)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        check_fits_model(model, ids, "texts", hint="; pass max_length= to truncate them")
        with torch.enable_grad() if grad else torch.no_grad():
            outs.append(score_with_model(model, ids, mask))
    return torch.cat(outs)


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


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
    are ``prompt + chosen`` and ``prompt + rejected``. AdamW, shuffled minibatches; ``seed`` fixes the
    order and the dropout masks.
    Returns one dict per optimizer step: ``loss``, ``accuracy`` (share of the minibatch ranked
    right), ``margin`` (mean :math:`r_w - r_l`), ``epoch``. The model is left in eval mode.
    """
    from tqdm.auto import tqdm

    triples = as_triples(pairs)
    if getattr(getattr(model, "config", None), "num_labels", 1) != 1:
        raise ValueError("model must be a sequence-classification model with num_labels=1")
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    check_scalar("learning_rate", learning_rate, positive=True)
    check_scalar("weight_decay", weight_decay, nonnegative=True)
    device = resolve_device(device, "device")
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
    triples = as_triples(pairs)
    with eval_mode(model):
        chosen = score_texts(model, tokenizer, [p + c for p, c, _ in triples], batch_size, max_length)
        rejected = score_texts(model, tokenizer, [p + r for p, _, r in triples], batch_size, max_length)
    return float(_pairwise_accuracy(chosen - rejected))
