"""The trainer only wires the library's functions: one PPO iteration written by hand from them
(CleanRL style, the lines unit 5 shows) gives exactly the trainer's update on the same rollout.

This checks the wiring (which tensors go where, in which order, with which masks and
constants), independently of the formulas, which their own tests check against independent
computations. Equality is exact: same weights to the last bit.
"""

from __future__ import annotations

import pytest
import torch

from rlhf_lab.advantages import gae, grpo_advantages, whiten
from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
from rlhf_lab.logprobs import position_ids_from_mask, sequence_logprobs, token_logprobs
from rlhf_lab.objectives import aggregate_loss, clipped_surrogate, kl_penalty, per_token_rewards, ppo_clip_loss, value_loss
from rlhf_lab.ppo import GRPOConfig, PPOConfig, PPOTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["hello", "the cat is", "i see a", "good morning", "thank you", "the dog", "today is", "we like"]


def characters(prompts, responses):
    return [len(r) / 20 for r in responses]


def ppo_iteration(policy, value_head, ref_policy, rollout, scores, config, optimizer, generator):
    """One PPO iteration on a sampled rollout: per-token rewards, GAE, whitening, then
    ``num_ppo_epochs`` passes of minibatch steps on the clipped surrogate plus the value loss."""
    c = config
    ids, attention, P = rollout.input_ids, rollout.attention_mask, rollout.response_start
    tokens, mask = rollout.responses, rollout.mask
    params = list(policy.parameters()) + list(value_head.parameters())

    def logits_and_values(rows):
        # the trunk's hidden states at the positions that predict the response tokens
        out = policy.transformer(input_ids=ids[rows], attention_mask=attention[rows],
                                 position_ids=position_ids_from_mask(attention[rows]), use_cache=False)
        hidden = out.last_hidden_state[:, P - 1 : -1]
        return policy.lm_head(hidden), value_head(hidden).squeeze(-1)

    with torch.no_grad():
        # 2. the sampling pass kept log pi_old and V_old of every sampled token
        old_logprobs, old_values = rollout.logprobs, rollout.values * mask
        # 4. log pi_ref of the same tokens, at the sampling temperature
        ref_logprobs = sequence_logprobs(ref_policy, ids, attention, P, c.temperature)
        # 5. per-token rewards: -beta * (log pi_old - log pi_ref), plus the score at the last token
        rewards = per_token_rewards(scores, old_logprobs, ref_logprobs, c.kl_coef, mask)
        # 6. advantages and returns by GAE, advantages whitened over the batch
        advantages, returns = gae(rewards, old_values, c.gamma, c.lam, mask)
        advantages = whiten(advantages, mask)

    # 7. K epochs over shuffled minibatches
    for epoch in range(c.num_ppo_epochs):
        order = torch.randperm(len(ids), generator=generator)
        for rows in order.split(c.mini_batch_size):
            logits, values = logits_and_values(rows)
            logprobs = token_logprobs(logits, tokens[rows], c.temperature)
            pg_loss, _ = ppo_clip_loss(logprobs, old_logprobs[rows], advantages[rows], c.cliprange, mask[rows])
            vf_loss, _ = value_loss(values, old_values[rows], returns[rows], c.cliprange_value, mask[rows])
            loss = pg_loss + c.vf_coef * vf_loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm)
            optimizer.step()


@pytest.mark.parametrize("stop_token", ["eos", None])
def test_one_iteration_by_hand_equals_the_trainers_update(stop_token):
    tok = word_tokenizer()
    config = PPOConfig(batch_size=8, num_mini_batches=2, num_ppo_epochs=2, response_length=6, learning_rate=3e-3,
                       kl_coef=0.05, temperature=0.9, stop_token=stop_token, fused_activations=False,
                       progress=False, device="cpu", seed=0)
    reward = characters  # a score that differs between responses
    trainer = PPOTrainer(tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2), tok, reward, config)
    by_hand = PPOTrainer(tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2), tok, reward, config)
    with torch.no_grad():
        for t in (trainer, by_hand):
            # a value head that is not zero, so that values and returns matter from the start
            t.value_head.weight.copy_(torch.linspace(-0.3, 0.3, t.value_head.weight.numel()).view_as(t.value_head.weight))
            # EOS likely (logit about 2 against about 0), so that responses end at different lengths
            t.policy.transformer.ln_f.bias[0] = 1.0
            t.policy.transformer.wte.weight[tok.eos_token_id] = 2.0 * torch.nn.functional.one_hot(
                torch.tensor(0), 32).float()
    rollout = trainer.rollout(trainer.encode_prompts(PROMPTS))
    if stop_token == "eos":
        assert 0 < rollout.ended.sum() < len(PROMPTS)  # some responses stopped early, some did not
    lengths = rollout.mask.sum(dim=1).long().tolist()
    scores = torch.tensor(reward(PROMPTS, trainer.decode(rollout.responses, lengths)))
    assert scores.abs().sum() > 0  # some responses score: the update has a signal

    metrics = trainer.learn(rollout, PROMPTS)
    optimizer = torch.optim.AdamW(list(by_hand.policy.parameters()) + list(by_hand.value_head.parameters()),
                                  lr=config.learning_rate, eps=config.adam_eps, weight_decay=config.weight_decay,
                                  foreach=True)
    generator = torch.Generator().manual_seed(config.seed + 1)  # the trainer's shuffling generator
    ppo_iteration(by_hand.policy, by_hand.value_head, by_hand.ref_policy, rollout, scores, config, optimizer,
                  generator)

    assert metrics["objective/scores"] == pytest.approx(scores.mean().item())
    for (name, a), (_, b) in zip(trainer.policy.named_parameters(), by_hand.policy.named_parameters()):
        assert torch.equal(a, b), name
    for a, b in zip(trainer.value_head.parameters(), by_hand.value_head.parameters()):
        assert torch.equal(a, b)
    start = tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2)
    assert not torch.equal(start.lm_head.weight, trainer.policy.lm_head.weight)  # the update did move


# --------------------------------------------------------------------------- unit 6: one GRPO iteration
def grpo_iteration(policy, ref_policy, rollout, scores, config, optimizer, generator):
    """One GRPO iteration on a sampled rollout: group-normalized advantages (no critic), then
    ``num_iterations`` passes of minibatch steps on the clipped surrogate (clip-higher) plus
    beta times the k3 KL to the reference in the loss, each reduced per response then averaged."""
    c = config
    ids, attention, P = rollout.input_ids, rollout.attention_mask, rollout.response_start
    tokens, mask = rollout.responses, rollout.mask

    def logprobs_of(rows):
        out = policy.transformer(input_ids=ids[rows], attention_mask=attention[rows],
                                 position_ids=position_ids_from_mask(attention[rows]), use_cache=False)
        logits = policy.lm_head(out.last_hidden_state[:, P - 1 : -1])
        return token_logprobs(logits, tokens[rows], c.temperature)

    with torch.no_grad():
        # 2. log pi_old from the sampling pass; 4. log pi_ref of the same tokens
        old_logprobs = rollout.logprobs
        ref_logprobs = sequence_logprobs(ref_policy, ids, attention, P, c.temperature)
        # 6. one advantage per response, (r - group mean) / (group std + eps), on every token
        advantages = grpo_advantages(scores, c.num_generations)[:, None] * mask

    # 7. mu passes over shuffled minibatches
    for iteration in range(c.num_iterations):
        order = torch.randperm(len(ids), generator=generator)
        for rows in order.split(c.mini_batch_size):
            logprobs = logprobs_of(rows)
            surrogate, _ = clipped_surrogate(logprobs, old_logprobs[rows], advantages[rows], c.epsilon, mask[rows],
                                             clip_eps_high=c.epsilon_high)
            kl = kl_penalty(logprobs, ref_logprobs[rows], "k3", mask[rows], old_logp=old_logprobs[rows])
            loss = aggregate_loss(surrogate, mask[rows], "grpo") + c.beta * aggregate_loss(kl, mask[rows], "grpo")
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(policy.parameters()), c.max_grad_norm)
            optimizer.step()


def test_one_grpo_iteration_by_hand_equals_the_trainers_update():
    tok = word_tokenizer()
    config = GRPOConfig(batch_size=8, num_generations=4, num_mini_batches=2, num_iterations=2, response_length=6,
                        learning_rate=3e-3, beta=0.05, epsilon=0.2, epsilon_high=0.28, loss_type="grpo",
                        temperature=0.9, stop_token="eos", fused_activations=False, progress=False, device="cpu",
                        seed=0)
    prompts = [p for p in PROMPTS[:2] for _ in range(4)]  # two groups of four
    trainer = PPOTrainer(tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2), tok, characters, config)
    by_hand = PPOTrainer(tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2), tok, characters, config)
    assert trainer.value_head is None and trainer.value_model is None  # no critic to train
    with torch.no_grad():
        for t in (trainer, by_hand):  # EOS likely, so that responses end at different lengths
            t.policy.transformer.ln_f.bias[0] = 1.0
            t.policy.transformer.wte.weight[tok.eos_token_id] = 2.0 * torch.nn.functional.one_hot(
                torch.tensor(0), 32).float()
    rollout = trainer.rollout(trainer.encode_prompts(prompts))
    assert len(set(rollout.mask.sum(dim=1).tolist())) > 1  # responses of different lengths
    lengths = rollout.mask.sum(dim=1).long().tolist()
    scores = torch.tensor(characters(prompts, trainer.decode(rollout.responses, lengths)))
    assert len(set(scores[:4].tolist())) > 1 and len(set(scores[4:].tolist())) > 1  # both groups teach

    metrics = trainer.learn(rollout, prompts)
    optimizer = torch.optim.AdamW(list(by_hand.policy.parameters()), lr=config.learning_rate, eps=config.adam_eps,
                                  weight_decay=config.weight_decay, foreach=True)
    generator = torch.Generator().manual_seed(config.seed + 1)
    grpo_iteration(by_hand.policy, by_hand.ref_policy, rollout, scores, config, optimizer, generator)

    assert metrics["policy/clipfrac"] > 0  # the second pass moved some ratios past the clip range
    for (name, a), (_, b) in zip(trainer.policy.named_parameters(), by_hand.policy.named_parameters()):
        assert torch.equal(a, b), name
    start = tiny_causal_lm(tok, n_layer=2, n_embd=32, n_head=2)
    assert not torch.equal(start.lm_head.weight, trainer.policy.lm_head.weight)
