"""The toy text domain of unit 5: grammar, hidden gold rule and preference labels.

The gold rule is checked against scores worked out by hand, and the claims the notebook relies on
(the grammar never gushes, repeats or runs long; labels follow Bradley-Terry) against counts and
frequencies computed independently.
"""

import math
import random

import pytest

from rlhf_lab.course import toy_domain as td

# -- the vocabulary and the grammar --------------------------------------------------------------

def test_tokenizer_covers_every_prompt_and_response_word():
    tok = td.tokenizer()
    unk = tok.unk_token_id
    for prompt, response in td.sft_corpus(300, seed=3):
        ids = tok(prompt + " " + response, add_special_tokens=False)["input_ids"]
        assert unk not in ids, (prompt, response)
        # one token per word or punctuation mark
        assert len(ids) == len((prompt + " " + response).split())


def test_tokenizer_roundtrip_through_words_of():
    tok = td.tokenizer()
    text = "the cat is warm , not cold ."
    decoded = tok.decode(tok(text, add_special_tokens=False)["input_ids"])
    assert td.words_of(decoded) == text.split()


def test_grammar_stays_inside_the_region_where_gold_is_monotone():
    """No response of the grammar has more than two positive words, a repeated content word,
    more than max_words words, or a missing final period."""
    stop = {"the", "a", "is", ".", ",", "?"}
    for prompt, response in td.sft_corpus(2000, seed=1):
        words = response.split()
        assert sum(w in td.POSITIVE for w in words) <= td.GOLD.max_positive
        content = [w for w in words if w not in stop]
        assert len(content) == len(set(content)), response
        assert len([w for w in words if w not in ".,?"]) <= td.GOLD.max_words
        assert words[-1] == "."


def test_on_the_grammar_gold_is_topic_plus_tone():
    """Where the grammar lives, gold reduces to topic + 0.6 per positive - 0.7 per negative."""
    for prompt, response in td.sft_corpus(1000, seed=2):
        words = response.split()
        topic = [w for w in prompt.split() if w in td.TOPICS][0]
        expected = (1.0 * (topic in words) + 0.6 * sum(w in td.POSITIVE for w in words)
                    - 0.7 * sum(w in td.NEGATIVE for w in words))
        assert td.gold_reward(prompt, response) == pytest.approx(expected)


def test_off_topic_share_is_close_to_requested():
    pairs = td.sft_corpus(4000, seed=0, off_topic=0.25)
    off = sum(td.prompt_topic(p) not in r.split() for p, r in pairs) / len(pairs)
    assert abs(off - 0.25) < 0.03


def test_prompts_are_deterministic_and_ask_about_a_topic():
    a, b = td.make_prompts(50, seed=7), td.make_prompts(50, seed=7)
    assert a == b
    assert a != td.make_prompts(50, seed=8)
    assert all(td.prompt_topic(p) in td.TOPICS for p in a)
    with pytest.raises(ValueError, match="n"):
        td.make_prompts(-1)


# -- the gold rule, by hand ------------------------------------------------------------------------

P = "tell me about the cat ."


@pytest.mark.parametrize("response, expected", [
    ("the cat is good .", 1.0 + 0.6),
    ("the cat is great and happy .", 1.0 + 1.2),
    ("the dog is great and happy .", 1.2),                       # off topic
    ("the cat is bad .", 1.0 - 0.7),
    ("the cat is happy", 1.0 + 0.6 - 1.0),                       # unfinished
    # three positives: credit for two, gushing penalty for the third
    ("the cat is great , happy and nice .", 1.0 + 1.2 - 0.8),
    # "great" four times: one distinct positive, 2 over the cap, 3 repeats
    ("the cat is great great great great .", 1.0 + 0.6 - 0.8 * 2 - 0.5 * 3),
    # 12 words: 3 over the limit of 9; "and" repeated twice; 4 positives, 2 over the cap
    ("the cat is very nice and kind and warm and happy today .",
     1.0 + 1.2 - 0.8 * 2 - 0.5 * 2 - 0.25 * 3),
    ("", -1.0),
])
def test_gold_reward_matches_hand_computation(response, expected):
    assert td.gold_reward(P, response) == pytest.approx(expected)


def test_gold_reward_ignores_glued_punctuation_and_case():
    assert td.gold_reward(P, "The cat is warm, not cold.") == td.gold_reward(
        P, "the cat is warm , not cold .")


def test_gold_rule_weights_can_be_changed():
    rule = td.GoldRule(topic=0.0, positive=1.0)
    assert td.gold_reward(P, "the cat is good .", rule) == pytest.approx(1.0)


def test_gold_rewards_is_a_batched_reward_function():
    ps = [P, "describe the sun ."]
    rs = ["the cat is good .", "the sun is bad ."]
    assert td.gold_rewards(ps, rs) == [td.gold_reward(p, r) for p, r in zip(ps, rs)]
    with pytest.raises(ValueError, match="prompts"):
        td.gold_rewards(ps, rs[:1])


# -- preference labels -----------------------------------------------------------------------------

def test_noiseless_labels_prefer_the_higher_gold_and_drop_ties_and_duplicates():
    prompts = [P, P, P, P]
    first = ["the cat is good .", "the cat is bad .", "the cat is good .", "the cat is warm ."]
    second = ["the cat is bad .", "the cat is good .", "the cat is good .", "the cat is kind ."]
    pairs = td.label_pairs(prompts, first, second)
    assert [(x["chosen"], x["rejected"]) for x in pairs] == [
        ("the cat is good .", "the cat is bad ."), ("the cat is good .", "the cat is bad .")]
    kept = td.label_pairs(prompts, first, second, drop_ties=False)
    assert len(kept) == 3  # the identical pair is always dropped


def test_noisy_labels_follow_bradley_terry():
    """With temperature T the first response wins with probability sigmoid((g1 - g2) / T)."""
    a, b = "the cat is good .", "the cat is bad ."       # gold 1.6 vs 0.3
    n, temperature = 20000, 1.0
    pairs = td.label_pairs([P] * n, [a] * n, [b] * n, temperature=temperature, seed=0)
    freq = sum(x["chosen"] == a for x in pairs) / n
    p = 1 / (1 + math.exp(-(1.6 - 0.3) / temperature))
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_label_pairs_checks_its_arguments():
    with pytest.raises(ValueError, match="same length"):
        td.label_pairs([P], ["x"], [])
    with pytest.raises(ValueError, match="temperature"):
        td.label_pairs([P], ["x ."], ["y ."], temperature=-1)


def test_preference_pairs_are_labelled_by_gold_and_repeatable():
    pairs = td.preference_pairs(500, seed=4)
    assert 300 < len(pairs) <= 500
    assert pairs == td.preference_pairs(500, seed=4)
    for x in pairs:
        assert td.gold_reward(x["prompt"], x["chosen"]) > td.gold_reward(x["prompt"], x["rejected"])


def test_agreement_counts_ties_as_half():
    pairs = [{}, {}, {}, {}]
    assert td.agreement(pairs, [1, 2, 0, 5], [0, 3, 0, 1]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    with pytest.raises(ValueError):
        td.agreement([], [], [])
    with pytest.raises(ValueError):
        td.agreement(pairs, [1], [0])


def test_gold_is_a_perfect_scorer_of_its_own_noiseless_labels():
    pairs = td.preference_pairs(300, seed=5)
    c = [td.gold_reward(x["prompt"], x["chosen"]) for x in pairs]
    r = [td.gold_reward(x["prompt"], x["rejected"]) for x in pairs]
    assert td.agreement(pairs, c, r) == 1.0
    # a random scorer is near one half
    rng = random.Random(0)
    rand = [rng.random() for _ in pairs]
    assert 0.35 < td.agreement(pairs, rand, [rng.random() for _ in pairs]) < 0.65
