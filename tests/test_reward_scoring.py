"""Reward models are scored the way they score themselves, whatever the padding layout.

The reference is each row run alone, without any padding, through the model's own forward; the
trainer's batches mix left-padded prompts with right-padded responses."""

from __future__ import annotations

import pytest
import torch

from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
from rlhf_lab.ppo import PPOConfig, PPOTrainer
from rlhf_lab.reward_model import reads_last_token, right_aligned, score_with_model

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 60
PAD = 0


def _classifier(kind: str):
    import transformers as tf

    torch.manual_seed(0)
    small = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64, num_labels=1, pad_token_id=PAD)
    if kind == "gpt2":
        cfg = tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, num_labels=1,
                            pad_token_id=PAD, bos_token_id=1, eos_token_id=1)
        model = tf.GPT2ForSequenceClassification(cfg)
    elif kind == "bert":
        model = tf.BertForSequenceClassification(tf.BertConfig(**small))
    elif kind == "roberta":
        model = tf.RobertaForSequenceClassification(tf.RobertaConfig(**{**small, "pad_token_id": 1,
                                                                        "max_position_embeddings": 70}))
    elif kind == "distilbert":
        model = tf.DistilBertForSequenceClassification(tf.DistilBertConfig(
            vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64,
            num_labels=1, pad_token_id=PAD))
    elif kind == "deberta-v2":
        model = tf.DebertaV2ForSequenceClassification(tf.DebertaV2Config(**small))
    else:
        raise AssertionError(kind)
    return model.eval()


def _mixed_batch(pad_id: int):
    """Rows of (left pad, prompt, response, right pad) with different prompt and response lengths."""
    g = torch.Generator().manual_seed(1)
    P, T = 5, 6
    prompt_lens, response_lens = [5, 3, 1, 4], [6, 2, 4, 1]
    ids = torch.full((4, P + T), pad_id, dtype=torch.long)
    mask = torch.zeros((4, P + T), dtype=torch.long)
    rows = []
    for i, (pl, rl) in enumerate(zip(prompt_lens, response_lens)):
        real = torch.randint(2, VOCAB, (pl + rl,), generator=g)
        ids[i, P - pl : P + rl] = real
        mask[i, P - pl : P + rl] = 1
        rows.append(real)
    return ids, mask, rows


@pytest.mark.parametrize("kind", ["gpt2", "bert", "roberta", "distilbert", "deberta-v2"])
def test_scores_equal_each_row_scored_alone(kind):
    model = _classifier(kind)
    pad_id = model.config.pad_token_id
    ids, mask, rows = _mixed_batch(pad_id)
    with torch.no_grad():
        alone = torch.stack([model(input_ids=r[None], attention_mask=torch.ones_like(r[None])).logits[0, 0]
                             for r in rows])
        got = score_with_model(model, ids, mask)
    torch.testing.assert_close(got, alone, rtol=1e-4, atol=1e-5)
    assert reads_last_token(model) == (kind == "gpt2")


def test_right_aligned_keeps_order_and_moves_padding_to_the_end():
    ids = torch.tensor([[0, 0, 5, 6, 7, 0], [8, 9, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    mask = (ids != 0).long()
    mask[2] = 1
    a_ids, a_mask = right_aligned(ids, mask)
    assert a_ids.tolist() == [[5, 6, 7, 0, 0, 0], [8, 9, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]]
    assert a_mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]]


def test_trainer_scores_an_encoder_reward_model_with_its_own_tokenizer_correctly():
    import transformers as tf

    tok = word_tokenizer()
    torch.manual_seed(0)
    rm_tok = word_tokenizer(padding_side="right")  # its own tokenizer, right-padded like BERT's
    rm = tf.BertForSequenceClassification(tf.BertConfig(
        vocab_size=len(rm_tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        num_labels=1, pad_token_id=rm_tok.pad_token_id)).eval()
    trainer = PPOTrainer(tiny_causal_lm(tok, n_layer=1, n_embd=32, n_head=2), tok, rm,
                         PPOConfig(batch_size=4, response_length=5, progress=False, device="cpu"),
                         reward_tokenizer=rm_tok)
    prompts = ["hello", "the cat is", "good morning", "i see a"]
    ro = trainer.rollout(trainer.encode_prompts(prompts))
    scores = trainer._score(prompts, ro)
    texts = []
    for row, m in zip(ro.input_ids.tolist(), ro.attention_mask.tolist()):
        texts.append(tok.decode([t for t, k in zip(row, m) if k], skip_special_tokens=True))
    with torch.no_grad():
        alone = torch.stack([rm(**rm_tok(t, return_tensors="pt")).logits[0, 0] for t in texts])
    torch.testing.assert_close(scores, alone, rtol=1e-4, atol=1e-5)


def test_value_model_that_is_the_reward_model_is_copied_and_the_policy_is_refused():
    import transformers as tf

    tok = word_tokenizer()
    rm = tf.GPT2ForSequenceClassification(tf.GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2,
                                                        num_labels=1, pad_token_id=tok.pad_token_id,
                                                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    before = {k: v.clone() for k, v in rm.state_dict().items()}
    policy = tiny_causal_lm(tok, n_layer=1, n_embd=32, n_head=2)
    trainer = PPOTrainer(policy, tok, rm, PPOConfig(batch_size=4, response_length=4, progress=False, device="cpu",
                                                    learning_rate=1e-2), value_model=rm)
    trainer.train(["hello", "the cat is", "good morning", "i see a"], 2)
    after = rm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "training the critic changed the reward model"
    assert trainer.value_model.trunk is not rm.base_model

    with pytest.raises(ValueError, match="ref_policy is the policy itself"):
        PPOTrainer(policy, tok, rm, PPOConfig(batch_size=4, progress=False, device="cpu"), ref_policy=policy)
    with pytest.raises(ValueError, match="value_model is the policy itself"):
        PPOTrainer(policy, tok, rm, PPOConfig(batch_size=4, progress=False, device="cpu"), value_model=policy)


def test_the_layout_probe_is_not_fooled_by_autocast():
    # The trainer scores under autocast; the probe that decides the layout must not see bf16 noise.
    for kind, expected in (("gpt2", True), ("bert", False)):
        model = _classifier(kind)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert reads_last_token(model) is expected
