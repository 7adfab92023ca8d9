"""The tiny setup every TRL comparison shares, built offline (nothing from a hub).

It reproduces the configuration of the TRL PPO and GRPO yardsticks that the benchmarks were first
measured against (their facts, not their code): a byte-level BPE tokenizer, 256 prompts of 8
tokens, a 2-layer GPT-2 policy and, for PPO, two random GPT-2 scalar models. Used by our workers
(``ppo_throughput.py``, ``grpo_throughput.py``) and by TRL's (``trl/ppo_worker.py``,
``trl/grpo_worker.py``), so both sides start from identical tokens and weights. It needs only
torch, transformers and tokenizers, and runs in the project's environment and in TRL's.

What is built, exactly:

- **Corpus**: ``random.Random(0)`` draws 4000 sentences; each draws its length n from
  ``randint(6, 20)``, then n words with ``choice`` from :data:`WORDS` (order matters), joined
  by spaces, with a full stop.
- **Tokenizer**: ``tokenizers`` BPE trained on that corpus to a vocabulary of 512, byte-level
  pre-tokenizer without prefix space and its decoder, the 256-symbol byte alphabet, special
  tokens ``<pad>`` = 0, ``<eos>`` = 1, ``<unk>`` = 2; wrapped as a fast tokenizer that pads on
  the left.
- **Prompts**: the same ``Random`` goes on: sentences of 12 words, tokenized without special
  tokens; a sentence of at least 8 tokens gives its first 8; until there are 256.
- **Models**: ``GPT2Config`` with the tokenizer's size, ``<eos>`` as BOS and EOS, ``<pad>`` as
  pad, 2 layers, width 128, 4 heads, 128 positions. Policy ``GPT2LMHeadModel`` after
  ``torch.manual_seed(0)``; the PPO value and reward models are one-label
  ``GPT2ForSequenceClassification`` after ``torch.manual_seed(1)`` and ``(2)``.
- **Token-set rewards**: the number of response tokens whose id lies in a fixed set.
  :data:`GRPO_TOKEN_SET` (ids 64-95, the byte symbols ``^ _ ` a-z { | }``) is the GRPO
  comparison's reward; :data:`PPO_TOKEN_SET` (every 16th id from 5) is the PPO learning task's.
  Both have about 2 hits in 32 tokens for the starting policy and 32 at best.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Iterable, List, Sequence

SEED = 0
VOCAB_SIZE = 512
SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
CORPUS_SENTENCES = 4000
N_PROMPTS = 256
PROMPT_TOKENS = 8
RESPONSE_TOKENS = 32
PROMPT_WORDS = 12
GPT2_SHAPE = {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 128}
VALUE_SEED, REWARD_SEED = SEED + 1, SEED + 2

# The random draws index this tuple: its order is part of the setup.
WORDS = tuple(
    "the a an one two three "
    "red blue green small large quick slow "
    "cat dog bird fish tree river stone house road city sun moon star cloud rain wind "
    "runs jumps sees finds makes takes gives eats sleeps sings reads writes "
    "under over near far into from with "
    "and or but because while when then again always never often "
    "model policy value reward token learning gradient step train sample prompt answer question "
    "good bad happy sad".split()
)

GRPO_TOKEN_SET = tuple(range(64, 96))
PPO_TOKEN_SET = tuple(range(5, VOCAB_SIZE, 16))


# ----------------------------------------------------------------------------- text and tokens
def _sentence(rng: random.Random, n_words: int) -> str:
    return " ".join([rng.choice(WORDS) for _ in range(n_words)])


def generated_corpus(rng: random.Random) -> List[str]:
    """The tokenizer's training text; advances ``rng`` exactly as the setup requires."""
    corpus = []
    for _ in range(CORPUS_SENTENCES):
        n_words = rng.randint(6, 20)
        corpus.append(_sentence(rng, n_words) + ".")
    return corpus


def train_bpe_tokenizer(corpus: Iterable[str]):
    """A byte-level BPE of :data:`VOCAB_SIZE` tokens trained on ``corpus``, as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    pad, eos, unk = SPECIAL_TOKENS
    spec = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe = Tokenizer(models.BPE(unk_token=unk))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainer=spec)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, padding_side="left", pad_token=pad, eos_token=eos,
                                   unk_token=unk)


def draw_prompts(tokenizer, rng: random.Random, n: int = N_PROMPTS, length: int = PROMPT_TOKENS,
                 words: int = PROMPT_WORDS) -> List[List[int]]:
    """``n`` prompts of exactly ``length`` token ids, cut from sentences of ``words`` words."""
    prompts: List[List[int]] = []
    while len(prompts) < n:
        ids = tokenizer(_sentence(rng, words), add_special_tokens=False)["input_ids"]
        if len(ids) >= length:
            prompts.append(list(ids[:length]))
    return prompts


def tokenizer_and_prompts():
    """``(tokenizer, prompt_ids)``: the BPE and the 256 prompts of 8 token ids."""
    rng = random.Random(SEED)
    tokenizer = train_bpe_tokenizer(generated_corpus(rng))
    prompts = draw_prompts(tokenizer, rng)
    if any(tokenizer.pad_token_id in p for p in prompts):
        raise RuntimeError("a prompt contains the pad token")
    return tokenizer, prompts


def prompt_texts(tokenizer, prompts: Sequence[Sequence[int]]) -> List[str]:
    """The prompts as text, for trainers that tokenize text themselves; each must give its ids back."""
    texts = [tokenizer.decode(list(p)) for p in prompts]
    again = tokenizer(texts, add_special_tokens=False)["input_ids"]
    bad = [i for i, (a, b) in enumerate(zip(again, prompts)) if list(a) != list(b)]
    if bad:
        raise RuntimeError(f"prompts {bad[:5]} do not re-tokenize to their own ids")
    return texts


# ----------------------------------------------------------------------------- models
def gpt2_config(tokenizer, **extra):
    from transformers import GPT2Config

    eos = tokenizer.eos_token_id
    return GPT2Config(vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos,
                      pad_token_id=tokenizer.pad_token_id, **GPT2_SHAPE, **extra)


def _quiet(model):
    # transformers 5 warns at every forward of a config-built GPT-2 that has no loss type set
    model.loss_type = "ForCausalLM"
    return model


def build_policy(tokenizer):
    """The policy: ``GPT2LMHeadModel`` built right after ``torch.manual_seed(0)`` (479k parameters)."""
    import torch
    from transformers import GPT2LMHeadModel

    config = gpt2_config(tokenizer)
    torch.manual_seed(SEED)
    policy = GPT2LMHeadModel(config)
    # sampling pads with <pad> and stops at <eos> unless a trainer says otherwise
    policy.generation_config.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return _quiet(policy)


def build_scalar_model(tokenizer, seed: int):
    """A random one-label ``GPT2ForSequenceClassification`` built right after ``torch.manual_seed(seed)``."""
    import torch
    from transformers import GPT2ForSequenceClassification

    config = gpt2_config(tokenizer, num_labels=1)
    torch.manual_seed(seed)
    return _quiet(GPT2ForSequenceClassification(config))


def ppo_models(tokenizer):
    """``(policy, reference, value_model, reward_model)`` of the PPO comparison; the reference is a
    copy of the starting policy."""
    import copy

    policy = build_policy(tokenizer)
    reference = copy.deepcopy(policy)
    return policy, reference, build_scalar_model(tokenizer, VALUE_SEED), build_scalar_model(tokenizer, REWARD_SEED)


# ----------------------------------------------------------------------------- rewards
def count_in_set(token_rows: Iterable[Sequence[int]], token_set: Iterable[int] = GRPO_TOKEN_SET) -> List[float]:
    """For each row of token ids, how many lie in ``token_set`` (plain Python: the reference rule)."""
    wanted = frozenset(int(t) for t in token_set)
    return [float(sum(1 for t in row if int(t) in wanted)) for row in token_rows]


def token_set_reward_model(token_ids: Sequence[int] = PPO_TOKEN_SET, prompt_len: int = PROMPT_TOKENS,
                           response_len: int = RESPONSE_TOKENS):
    """The token-set rule written as a one-label sequence classifier, so that trainers that score
    with a reward *model* (TRL's PPOTrainer, ours) see the same rule on the same token ids.

    Trainers call a reward model's backbone on prompt + response and read its one-label
    ``score`` head at the last response token. Here the backbone's "hidden state" at every
    position is the row's count of set tokens after the first ``prompt_len`` positions (prompts
    of fixed length, left-padded batches have none), so the score is the same whichever position
    a trainer reads; positions with attention mask 0 do not count. ``response_len`` is only
    recorded (the largest possible score)."""
    import torch

    class CountBackbone(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("ids", torch.tensor(sorted(set(token_ids)), dtype=torch.long))

        def forward(self, input_ids, attention_mask=None, **_):
            hits = torch.isin(input_ids, self.ids)
            if attention_mask is not None:
                hits &= attention_mask.bool()
            hits[:, :prompt_len] = False
            count = hits.sum(dim=1, dtype=torch.float32)
            hidden = count.view(-1, 1, 1).expand(-1, input_ids.shape[1], 1)
            return SimpleNamespace(last_hidden_state=hidden, hidden_states=(hidden,))

    class TokenSetRewardModel(torch.nn.Module):
        base_model_prefix = "backbone"

        def __init__(self):
            super().__init__()
            self.backbone = CountBackbone()
            self.score = torch.nn.Linear(1, 1, bias=False)
            torch.nn.init.ones_(self.score.weight)
            self.max_score = response_len
            self.requires_grad_(False)

        @property
        def base_model(self):
            return self.backbone

    return TokenSetRewardModel()
