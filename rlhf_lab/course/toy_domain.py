"""A toy text domain for the RLHF pipeline of unit 5: prompts, fluent responses, a hidden gold rule.

The domain stands in for "a language model answering users, judged by people":

- **prompts** ask about one of a few topics (``"tell me about the cat ."``);
- **responses** come from a small grammar of fluent sentences (``"the cat is warm and happy ."``),
  which is what supervised fine-tuning (SFT) teaches a tiny randomly initialized model;
- the **gold reward** :func:`gold_reward` plays the human labeller. It is a fixed rule that the
  reward model never sees; it only sees which of two responses the rule (noisily) preferred,
  the way a reward model only sees human comparisons.

The gold rule, in words: stay on the prompt's topic; a warm tone is good, but only up to two
positive words (more is gushing and is penalized); negative words are bad; repeating words, running
long and not finishing the sentence are penalized. The sentences of the grammar never hold more
than two adjectives, never repeat a content word and never run long, so on the SFT distribution
"more positive words is better" is all a reward model can learn. Its penalties for gushing,
repetition and length are therefore invisible in the preference data: a policy optimized hard
against the learned reward can find them. That is the over-optimization of Gao et al. (2023) in a
domain small enough to train on a CPU in seconds.

Everything is deterministic given a seed (``random.Random``), and plain Python: no torch.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from ..masked import check_scalar

__all__ = [
    "TOPICS", "POSITIVE", "NEGATIVE", "NEUTRAL", "VERBS", "PROMPT_FORMS", "VOCAB",
    "GoldRule", "GOLD", "tokenizer", "make_prompts", "words_of", "prompt_topic", "sample_response",
    "sft_corpus", "gold_reward", "gold_rewards", "gold_features", "label_pairs",
    "preference_pairs", "agreement",
]

TOPICS: tuple[str, ...] = ("cat", "dog", "bird", "fish", "tree", "river", "sun", "moon",
                           "rain", "city", "house", "book")
POSITIVE: tuple[str, ...] = ("good", "nice", "great", "happy", "warm", "kind", "bright", "lovely")
NEGATIVE: tuple[str, ...] = ("bad", "sad", "cold", "dull", "ugly", "slow")
NEUTRAL: tuple[str, ...] = ("small", "big", "red", "blue", "green", "old", "quiet")
VERBS: tuple[str, ...] = ("run", "sing", "sleep", "eat", "walk", "swim", "shine", "fly")

#: The three ways a prompt asks about a topic.
PROMPT_FORMS: tuple[str, ...] = ("tell me about the {t} .", "what is the {t} like ?",
                                 "describe the {t} .")

#: Response templates of the SFT grammar: ``{t}`` topic, ``{a}``/``{b}`` adjectives, ``{v}`` verb.
TEMPLATES: tuple[str, ...] = (
    "the {t} is {a} .",
    "the {t} is {a} and {b} .",
    "i think the {t} is very {a} .",
    "the {a} {t} can {v} .",
    "my {t} is {a} today .",
    "it is a {a} {t} .",
    "we like the {a} {t} .",
    "the {t} is {a} , not {b} .",
)

_FUNCTION_WORDS = ("the", "a", "is", "and", "i", "think", "very", "can", "my", "today", "it",
                   "we", "like", "not", "tell", "me", "about", "what", "describe", "?", ".", ",")

#: Every word the domain uses, in a fixed order (the tokenizer's vocabulary).
VOCAB: tuple[str, ...] = tuple(dict.fromkeys(
    _FUNCTION_WORDS + TOPICS + POSITIVE + NEGATIVE + NEUTRAL + VERBS))

_STOP = frozenset({"the", "a", "is", ".", ",", "?"})
_WORD = re.compile(r"[a-z<>]+|[.,?!]")


def tokenizer():
    """The word-level tokenizer of the domain (one token per word, left padding)."""
    from .models import word_tokenizer

    return word_tokenizer(VOCAB)


# ------------------------------------------------------------------------------------------------
# prompts and the SFT grammar
# ------------------------------------------------------------------------------------------------

def make_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` prompts, each asking about a random topic in a random form."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    return [rng.choice(PROMPT_FORMS).format(t=rng.choice(TOPICS)) for _ in range(n)]


def words_of(text: str) -> list[str]:
    """The words and punctuation marks of a text, lower-cased (``"the cat, warm."`` gives
    ``["the", "cat", ",", "warm", "."]``): decoded model output may glue punctuation on."""
    return _WORD.findall(text.lower())


def prompt_topic(prompt: str) -> Optional[str]:
    """The topic a prompt asks about (the last topic word in it), or ``None``."""
    words = [w for w in words_of(prompt) if w in TOPICS]
    return words[-1] if words else None


def sample_response(prompt: str, rng: random.Random, off_topic: float = 0.15) -> str:
    """One fluent response from the grammar: a template with a topic, adjectives and a verb.

    With probability ``off_topic`` the response talks about another topic. Adjectives are drawn
    from all three tones, so responses range from pleasant to unpleasant; the two adjectives of a
    template are always different words.
    """
    topic = prompt_topic(prompt) or rng.choice(TOPICS)
    if rng.random() < off_topic:
        topic = rng.choice([t for t in TOPICS if t != topic])
    adjectives = POSITIVE + NEGATIVE + NEUTRAL
    a, b = rng.sample(adjectives, 2)
    return rng.choice(TEMPLATES).format(t=topic, a=a, b=b, v=rng.choice(VERBS))


def sft_corpus(n: int, seed: int = 0, off_topic: float = 0.15) -> list[tuple[str, str]]:
    """``n`` (prompt, response) demonstrations for supervised fine-tuning."""
    rng = random.Random(seed)
    prompts = make_prompts(n, seed=seed + 1)
    return [(p, sample_response(p, rng, off_topic)) for p in prompts]


# ------------------------------------------------------------------------------------------------
# the hidden gold rule
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GoldRule:
    """The weights of the gold reward (the stand-in for human judgement).

    ``score = topic·[on topic] + positive·min(#distinct positive, max_positive)
    − gushing·(#positive − max_positive)⁺ − negative·#negative − repeat·#repeated words
    − long·(#words − max_words)⁺ − unfinished·[does not end with "."]``
    """

    topic: float = 1.0
    positive: float = 0.6
    max_positive: int = 2
    gushing: float = 0.8
    negative: float = 0.7
    repeat: float = 0.5
    long: float = 0.25
    max_words: int = 9
    unfinished: float = 1.0


GOLD = GoldRule()


def gold_features(prompt: str, response: str) -> dict[str, float]:
    """The counts the gold rule looks at (useful to see *why* a response scores as it does)."""
    words = words_of(response)
    topic = prompt_topic(prompt)
    content = [w for w in words if w not in _STOP]
    positives = [w for w in words if w in POSITIVE]
    return {
        "on_topic": float(topic is not None and topic in words),
        "positive": float(len(positives)),
        "distinct_positive": float(len(set(positives))),
        "negative": float(sum(w in NEGATIVE for w in words)),
        "repeated": float(len(content) - len(set(content))),
        "words": float(sum(w not in (".", ",", "?") for w in words)),
        "finished": float(bool(words) and words[-1] == "."),
    }


def gold_reward(prompt: str, response: str, rule: GoldRule = GOLD) -> float:
    """The hidden gold score of one response (see :class:`GoldRule`)."""
    f = gold_features(prompt, response)
    score = rule.topic * f["on_topic"]
    score += rule.positive * min(f["distinct_positive"], rule.max_positive)
    score -= rule.gushing * max(0.0, f["positive"] - rule.max_positive)
    score -= rule.negative * f["negative"]
    score -= rule.repeat * f["repeated"]
    score -= rule.long * max(0.0, f["words"] - rule.max_words)
    score -= rule.unfinished * (1.0 - f["finished"])
    return float(score)


def gold_rewards(prompts: Sequence[str], responses: Sequence[str],
                 rule: GoldRule = GOLD) -> list[float]:
    """Batched :func:`gold_reward`, with the ``(prompts, responses) -> list[float]`` signature
    that :class:`rlhf_lab.ppo.PPOTrainer` accepts as a reward."""
    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses differ in length: {len(prompts)} vs "
                         f"{len(responses)}")
    return [gold_reward(p, r, rule) for p, r in zip(prompts, responses)]


# ------------------------------------------------------------------------------------------------
# preference pairs
# ------------------------------------------------------------------------------------------------

def label_pairs(prompts: Sequence[str], first: Sequence[str], second: Sequence[str], *,
                temperature: float = 0.0, seed: int = 0, rule: GoldRule = GOLD,
                drop_ties: bool = True) -> list[dict]:
    """Label pairs of responses with the gold rule, as a human labeller would.

    Returns ``{"prompt", "chosen", "rejected"}`` dicts. With ``temperature = 0`` the response with
    the higher gold score is chosen; with ``temperature > 0`` the labeller follows the
    Bradley-Terry model, choosing the first with probability
    ``sigmoid((gold_1 − gold_2) / temperature)``, so close calls are sometimes labelled "wrong",
    like real human labels. Pairs of identical responses, and (with ``drop_ties``) pairs whose
    gold scores are equal, are dropped: they carry no preference (a tie that is kept is labelled
    by a coin flip).
    """
    if not (len(prompts) == len(first) == len(second)):
        raise ValueError("prompts, first and second must have the same length")
    temperature = check_scalar("temperature", temperature, nonnegative=True)
    rng = random.Random(seed)
    out = []
    for p, a, b in zip(prompts, first, second):
        if a == b:
            continue
        ga, gb = gold_reward(p, a, rule), gold_reward(p, b, rule)
        if ga == gb and drop_ties:
            continue
        if temperature == 0:
            a_wins = ga > gb if ga != gb else rng.random() < 0.5  # a kept tie is a coin flip
        else:
            z = (ga - gb) / temperature
            a_wins = rng.random() < 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
        chosen, rejected = (a, b) if a_wins else (b, a)
        out.append({"prompt": p, "chosen": chosen, "rejected": rejected})
    return out


def preference_pairs(n: int, seed: int = 0, *, temperature: float = 0.0,
                     rule: GoldRule = GOLD) -> list[dict]:
    """``n`` labelled pairs of two grammar responses to the same prompt (at most ``n``: identical
    responses and ties are dropped). The notebook instead samples the pairs from the SFT policy;
    this version needs no model (tests, quick experiments)."""
    rng = random.Random(seed)
    prompts = make_prompts(n, seed=seed + 1)
    first = [sample_response(p, rng) for p in prompts]
    second = [sample_response(p, rng) for p in prompts]
    return label_pairs(prompts, first, second, temperature=temperature, seed=seed + 2, rule=rule)


def agreement(pairs: Sequence[dict], scores_chosen: Sequence[float],
              scores_rejected: Sequence[float]) -> float:
    """Share of pairs where a scorer ranks ``chosen`` above ``rejected`` (a tie counts half):
    the held-out accuracy of a reward model."""
    if not (len(pairs) == len(scores_chosen) == len(scores_rejected)):
        raise ValueError("pairs, scores_chosen and scores_rejected must have the same length")
    if not pairs:
        raise ValueError("pairs must not be empty")
    won = sum(1.0 if c > r else 0.5 if c == r else 0.0
              for c, r in zip(scores_chosen, scores_rejected))
    return won / len(pairs)
