"""The course module that packs unit 5's pipeline for unit 6: what it measures and what it counts.

`evaluate`'s KL is checked against a plain per-response loop without padding or masks, and
`training_bytes` against the state torch's AdamW really holds after a step and against counts by
hand (tied weights once).
"""

import copy

import torch

from rlhf_lab.course import toy_domain as td
from rlhf_lab.course import toy_pipeline as tp
from rlhf_lab.course.models import tiny_causal_lm


def _models(seed_ref=1):
    tok = td.tokenizer()
    policy = tiny_causal_lm(tok, n_layer=1, n_embd=16, n_head=2, n_positions=64, seed=0).eval()
    ref = tiny_causal_lm(tok, n_layer=1, n_embd=16, n_head=2, n_positions=64, seed=seed_ref).eval()
    return tok, policy, ref


def _sequence_logprob(model, prompt_ids, response_ids):
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    p = len(prompt_ids)
    return sum(float(logp[p - 1 + t, tok]) for t, tok in enumerate(response_ids))


def test_evaluate_kl_matches_a_plain_loop_per_response():
    tok, policy, ref = _models()
    prompts = td.make_prompts(12, seed=5)          # prompts of different lengths: left padding
    out = tp.evaluate(policy, ref, tok, prompts, seed=3, response_length=8, return_samples=True)
    assert len(out["responses"]) == len(prompts)
    for prompt, response, kl in zip(prompts, out["responses"], out["kls"]):
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        # the response stops at its first EOS, which it includes
        assert tok.eos_token_id not in response[:-1]
        expected = _sequence_logprob(policy, prompt_ids, response) - _sequence_logprob(ref, prompt_ids, response)
        assert abs(kl - expected) < 1e-4, (prompt, response, kl, expected)
    assert abs(out["kl"] - sum(out["kls"]) / len(prompts)) < 1e-6   # a float32 mean


def test_evaluate_kl_is_zero_against_itself_and_gold_is_the_rules():
    tok, policy, _ = _models()
    prompts = td.make_prompts(16, seed=2)
    out = tp.evaluate(policy, copy.deepcopy(policy), tok, prompts, seed=0, response_length=8, return_samples=True)
    assert out["kl"] == 0.0
    # the answers as text, without the tokenizer's special tokens (EOS, and the <unk>/<pad> an
    # untrained policy samples), one at a time
    texts = [tok.decode(r, skip_special_tokens=True) for r in out["responses"]]
    assert abs(out["gold"] - sum(td.gold_rewards(prompts, texts)) / len(prompts)) < 1e-9


def test_training_bytes_matches_adamw_state_after_a_step():
    tok, policy, ref = _models()
    head = torch.nn.Linear(16, 1)
    optimizer = torch.optim.AdamW([*policy.parameters(), *head.parameters()], lr=1e-3)
    ids = torch.tensor([[3, 4, 5, 6]])
    (policy(input_ids=ids).logits.sum() + head(torch.ones(16)).sum()).backward()
    optimizer.step()
    counted = tp.training_bytes(policy, ref, head, ref, optimizer=optimizer)
    by_rule = tp.training_bytes(policy, ref, head, ref)
    assert counted == by_rule
    # by hand: GPT-2 ties lm_head to the token embedding, counted once
    n = sum(p.numel() for p in policy.parameters())
    assert n < sum(p.numel() for p in policy.state_dict().values())   # the tied copy is in the state dict twice
    assert counted["policy"] == counted["gradients"] == 4 * n
    assert counted["adam"] == 8 * n + 4 * len(list(policy.parameters()))
    assert counted["critic"] == 16 * 17 + 4 * 2
    assert counted["total"] == sum(v for k, v in counted.items() if k != "total")


def test_judge_scores_with_the_reward_model_and_records_gold():
    tok, policy, _ = _models()

    class Scores:
        reward_model = None

        def rm_scores(self, prompts, responses):
            return torch.tensor([float(len(r)) for r in responses])

    judge = tp.Judge(Scores())
    prompts = ["tell me about the cat .", "describe the moon ."]
    responses = ["the cat is warm .", "the moon is bad ."]
    assert judge(prompts, responses) == [17.0, 17.0]
    assert judge.proxy == [17.0]
    assert judge.gold == [sum(td.gold_rewards(prompts, responses)) / 2]
