"""rlhf_lab.ppo: learning, KL control, exact resume, masking, sampling, errors (CPU, seconds)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
from rlhf_lab.logprobs import sequence_logprobs
from rlhf_lab.ppo import PPOConfig, PPOTrainer
from rlhf_lab.ppo.rewards import TargetWordReward
from rlhf_lab.ppo.rollout import Rollout

PROMPTS = ["hello", "the cat is", "i see a", "good morning", "thank you", "the dog", "today is", "we like"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def tiny(tok, seed=0, **kw):
    kw = {"n_embd": 32, "n_layer": 1, "n_head": 2, **kw}
    return tiny_causal_lm(tok, seed=seed, **kw)


def cfg(**kw):
    base = dict(batch_size=8, response_length=6, learning_rate=3e-3, kl_coef=0.01, temperature=1.0,
                progress=False, num_mini_batches=2, device="cpu", seed=0)
    base.update(kw)
    return PPOConfig(**base)


def strip_time(ms):
    return [{k: v for k, v in m.items() if not k.startswith("time/") and "per_second" not in k} for m in ms]


def same_metrics(a, b):
    for x, y in zip(strip_time(a), strip_time(b)):
        assert x.keys() == y.keys()
        for k in x:
            assert (x[k] == y[k]) or (math.isnan(x[k]) and math.isnan(y[k])), (k, x[k], y[k])


# ------------------------------------------------------------------------------------ learning
# Thresholds from tests/measure_ppo_thresholds.py: seeds 0-11 (model initialization and trainer
# seed), each under ATEN_CPU_CAPABILITY=default and =avx2 and with 1 and 2 torch threads, 48 runs
# per quantity on an AVX2 machine. Every (capability, threads) pair gave a different run for the
# same seed (sampling turns last-bit differences into other tokens), so these are distributions:
#
#   quantity (test)                                  min     median   max
#   mean score, first 3 iterations (raises_reward)   0.000   0.008    0.019
#   gain, last 3 minus first 3 (raises_reward)       0.227   0.575    0.883
#   largest KL over 30 iterations (raises_reward)    7.55    20.95    30.31
#   KL, beta = 0.001, last 3 of 15 (large_beta)      0.958   5.05     15.64
#   KL, beta = 2, last 3 of 15 (large_beta)          0.125   0.407    0.633
#   KL ratio beta=0.001 / beta=2 (large_beta)        2.02    12.2     42.8
#
# The thresholds leave a margin of 1.6x to 2.6x beyond the worst run measured (the old 0.25 gain and
# the absolute 0.5 bound on the beta = 2 KL were inside these distributions: 0.227 and 0.633).
START_MAX, GAIN_MIN, KL_MAX = 0.05, 0.1, 60.0
BETA_ITERATIONS, LARGE_BETA_KL_MAX, KL_RATIO_MIN = 15, 1.2, 1.25


def test_ppo_raises_reward_on_target_word_task_with_bounded_kl(tok):
    """A tiny GPT-2 rewarded for the share of the word 'good' learns it within a few dozen
    iterations, while the KL to the reference stays bounded."""
    trainer = PPOTrainer(tiny(tok), tok, TargetWordReward("good"),
                         cfg(batch_size=16, response_length=8, stop_token=None, kl_coef=0.02))
    ms = trainer.train(PROMPTS, 30)
    start = sum(m["objective/scores"] for m in ms[:3]) / 3
    end = sum(m["objective/scores"] for m in ms[-3:]) / 3
    assert start < START_MAX
    assert end > start + GAIN_MIN, (start, end)
    assert max(m["objective/kl"] for m in ms) < KL_MAX
    for key in ("objective/scores", "objective/kl", "policy/entropy", "policy/clipfrac", "policy/approxkl",
                "loss/policy", "loss/value", "time/episodes_per_second", "time/tokens_per_second"):
        assert all(math.isfinite(m[key]) for m in ms), key


def test_large_beta_keeps_policy_near_reference(tok):
    """Same task and steps: the KL to the reference with beta = 2 stays well under the KL with
    beta = 0.001 (a relative claim; 12x at the median of the measured runs, 2x at the worst)."""
    def final_kl(beta):
        t = PPOTrainer(tiny(tok), tok, TargetWordReward("good"),
                       cfg(batch_size=16, response_length=8, stop_token=None, kl_coef=beta))
        ms = t.train(PROMPTS, BETA_ITERATIONS)
        return sum(m["objective/kl"] for m in ms[-3:]) / 3

    kl_small, kl_large = final_kl(0.001), final_kl(2.0)
    assert kl_large * KL_RATIO_MIN < kl_small, (kl_large, kl_small)
    assert kl_large < LARGE_BETA_KL_MAX


def test_adaptive_kl_coefficient_moves_towards_target(tok):
    t = PPOTrainer(tiny(tok), tok, TargetWordReward("good"),
                   cfg(adaptive_kl=True, kl_coef=0.1, kl_target=100.0, kl_horizon=16, stop_token=None))
    ms = t.train(PROMPTS, 3)
    # KL far below the target: the clipped error is -0.2 and beta shrinks by 1 - 0.2 * 8 / 16 = 0.9 each time
    assert ms[1]["objective/kl_coef"] == pytest.approx(0.9 * ms[0]["objective/kl_coef"])
    assert t.kl_ctl.value == pytest.approx(0.9 * ms[-1]["objective/kl_coef"])


# ------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("value_model", ["shared", "separate"])
def test_resume_equals_uninterrupted(tok, tmp_path, value_model):
    """N iterations in one go == k iterations, save, load into fresh models, N - k more:
    identical metrics and identical final weights (CPU)."""
    c = cfg(value_model=value_model, adaptive_kl=True, kl_target=1.0, kl_horizon=50, missing_eos_penalty=0.5,
            gradient_accumulation_steps=2, log_dir=None)
    reward = TargetWordReward("good")
    full = PPOTrainer(tiny(tok), tok, reward, c)
    ms_full = full.train(PROMPTS[:5], 5)  # 5 prompts, batch 8: the prompt order wraps mid-run

    part = PPOTrainer(tiny(tok), tok, reward, c)
    ms_a = part.train(PROMPTS[:5], 2)
    part.save(tmp_path / "ck.pt")
    del part
    resumed = PPOTrainer.load(tmp_path / "ck.pt", tiny(tok, seed=123), tok, reward)
    assert resumed.iteration == 2
    ms_b = resumed.train(PROMPTS[:5], 3)
    same_metrics(ms_full, ms_a + ms_b)
    assert resumed.history[-1]["iteration"] == 5
    for (n, p), (_, q) in zip(full.policy.state_dict().items(), resumed.policy.state_dict().items()):
        assert torch.equal(p, q), n
    vf = full.value_head or full.value_model
    vr = resumed.value_head or resumed.value_model
    for p, q in zip(vf.state_dict().values(), vr.state_dict().values()):
        assert torch.equal(p, q)


def test_seeded_runs_repeat_and_seeds_differ(tok):
    a = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg()).train(PROMPTS, 2)
    b = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg()).train(PROMPTS, 2)
    c = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg(seed=1)).train(PROMPTS, 2)
    same_metrics(a, b)
    assert strip_time(a) != strip_time(c)


def test_checkpoint_write_is_atomic(tok, tmp_path, monkeypatch):
    t = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg())
    path = tmp_path / "ck.pt"
    t.save(path)
    before = path.read_bytes()

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        t.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


# ------------------------------------------------------------------------------------ sampling and masking
def test_old_logprobs_and_values_from_sampling_equal_recomputation(tok):
    """The KV-cache sampling pass's log-probs (at temperature T) equal a fresh full forward in
    eval mode; so do the shared value head's values; padding after EOS is masked."""
    t = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg(temperature=0.7, response_length=10))
    # make EOS likely (logit ≈ 3 against ≈ 0) so that most rows stop early, at different steps
    with torch.no_grad():
        v = torch.zeros(32)
        v[0] = 1.0
        t.policy.transformer.ln_f.bias.copy_(v)
        t.policy.transformer.wte.weight[tok.eos_token_id] = 3.0 * v
        t.value_head.weight.normal_()
    ro = t.rollout(t.encode_prompts(PROMPTS))
    ref = sequence_logprobs(t.policy, ro.input_ids, ro.attention_mask, ro.response_start, temperature=0.7)
    torch.testing.assert_close(ro.logprobs, ref * ro.mask, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        v = t._values(ro.input_ids, ro.attention_mask, ro.response_start)  # one full forward
    torch.testing.assert_close(ro.values, v * ro.mask, atol=1e-5, rtol=1e-5)
    # EOS handling: mask is ones then zeros, pad after EOS, `ended` marks the rows that stopped
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert bool(ro.ended.any())
    for row, m, ended in zip(ro.responses.tolist(), ro.mask.tolist(), ro.ended.tolist()):
        n = int(sum(m))
        assert m == [1.0] * n + [0.0] * (len(m) - n)
        assert all(x == pad for x in row[n:])
        assert ended == (row[n - 1] == eos)
        assert eos not in row[: n - 1]


def _pad_rollout(ro: Rollout, extra: int, pad_id: int) -> Rollout:
    B = ro.responses.shape[0]
    z = lambda dtype: torch.zeros((B, extra), dtype=dtype)  # noqa: E731
    return Rollout(
        input_ids=torch.cat([ro.input_ids, torch.full((B, extra), pad_id)], 1),
        attention_mask=torch.cat([ro.attention_mask, z(torch.long)], 1),
        response_start=ro.response_start,
        responses=torch.cat([ro.responses, torch.full((B, extra), pad_id)], 1),
        mask=torch.cat([ro.mask, z(torch.float32)], 1),
        logprobs=torch.cat([ro.logprobs, torch.randn(B, extra)], 1),  # garbage in padded slots
        entropy=torch.cat([ro.entropy, torch.randn(B, extra)], 1),
        values=None if ro.values is None else torch.cat([ro.values, torch.randn(B, extra)], 1),
        ended=ro.ended,
    )


@pytest.mark.parametrize("value_model", ["shared", "separate"])
def test_appending_padding_changes_nothing(tok, value_model):
    """The same rollout with 3 extra padded columns (garbage log-probs/values there) gives the same
    update: same metrics and the same weights afterwards."""
    c = cfg(value_model=value_model, stop_token=None)
    a = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), c)
    b = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), c)
    ro = a.rollout(a.encode_prompts(PROMPTS))
    ma = a.learn(ro, PROMPTS)
    mb = b.learn(_pad_rollout(ro, 3, tok.pad_token_id), PROMPTS)
    for k, v in strip_time([ma])[0].items():
        assert v == pytest.approx(mb[k], rel=1e-4, abs=1e-5, nan_ok=True), k
    for p, q in zip(a.policy.parameters(), b.policy.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_gradient_accumulation_equals_one_large_minibatch(tok):
    a = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg(num_mini_batches=1, gradient_accumulation_steps=1))
    b = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg(num_mini_batches=1, gradient_accumulation_steps=4))
    ma, mb = a.train(PROMPTS, 1)[0], b.train(PROMPTS, 1)[0]
    assert ma["loss/policy"] == pytest.approx(mb["loss/policy"], abs=1e-6)
    assert ma["val/clipfrac"] == pytest.approx(mb["val/clipfrac"], abs=1e-6)
    for p, q in zip(a.policy.parameters(), b.policy.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_missing_eos_penalty_and_k3(tok):
    t = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg(missing_eos_penalty=1.0, kl_estimator="k3"))
    for m in t.train(PROMPTS, 3):
        # Σ_t r_t = (score − penalty for a response without EOS) + KL part
        penalty = 1.0 * (1 - m["completions/eos_fraction"])
        assert 0 < penalty <= 1  # most responses of 6 tokens from a random policy do not stop
        assert m["objective/rlhf_reward"] - m["objective/non_score_reward"] == pytest.approx(
            m["objective/scores"] - penalty, abs=1e-5)
        assert m["objective/non_score_reward"] <= 1e-7  # k3 ≥ 0


def test_reward_model_scored_on_ids_equals_scored_on_text(tok):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    rm_cfg = GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2, num_labels=1,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    rm = GPT2ForSequenceClassification(rm_cfg)
    a = PPOTrainer(tiny(tok), tok, rm, cfg(stop_token=None))
    b = PPOTrainer(tiny(tok), tok, rm, cfg(stop_token=None), reward_tokenizer=word_tokenizer(padding_side="right"))
    ro = a.rollout(a.encode_prompts(PROMPTS))
    with torch.no_grad():
        sa, sb = a._score(PROMPTS, ro), b._score(PROMPTS, ro)
    # rows that sampled a special token (<unk>, <bos>, ...) decode differently: compare the others
    special = torch.tensor(tok.all_special_ids)
    clean = ~torch.isin(ro.responses, special).any(dim=1)
    assert int(clean.sum()) >= 3
    torch.testing.assert_close(sa[clean], sb[clean], atol=1e-5, rtol=1e-5)
    assert math.isfinite(a.learn(ro, PROMPTS)["objective/scores"])


def test_separate_value_model_from_sequence_classifier_and_bf16_autocast(tok):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    vm = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2, num_labels=1,
                                                  pad_token_id=tok.pad_token_id))
    t = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg(dtype="bfloat16", num_ppo_epochs=1, num_mini_batches=1),
                   value_model=vm)
    assert t.recompute_logprobs
    ms = t.train(PROMPTS, 2)
    assert all(math.isfinite(m["loss/value"]) and math.isfinite(m["objective/kl"]) for m in ms)
    # one minibatch step per iteration: its statistics come from the forward before the step, which
    # the recomputed old log-probabilities equal exactly (the ratio is 1 to float32 rounding)
    assert all(m["val/ratio"] == pytest.approx(1.0, abs=1e-6) and m["policy/approxkl"] < 1e-9 for m in ms)


def test_log_files_and_progress(tok, tmp_path):
    from rlhf_lab.plotting import load_metrics

    t = PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg(log_dir=str(tmp_path / "run")))
    ms = t.train(PROMPTS, 2)
    js = load_metrics(tmp_path / "run" / "metrics.jsonl")
    cs = load_metrics(tmp_path / "run" / "metrics.csv")
    assert len(js) == len(cs) == 2
    assert js[1]["objective/scores"] == ms[1]["objective/scores"]
    assert cs[1]["objective/kl"] == pytest.approx(ms[1]["objective/kl"])
    assert "reward" not in json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    # the flat names of release 0.1 stay readable for one release, in memory and from the log
    for row in (ms[1], js[1]):
        for old, new in (("reward", "objective/scores"), ("kl", "objective/kl"), ("entropy", "policy/entropy"),
                         ("clipfrac", "policy/clipfrac"), ("approx_kl", "policy/approxkl"),
                         ("episodes_per_second", "time/episodes_per_second"),
                         ("tokens_per_second", "time/tokens_per_second"), ("loss/policy", "loss/policy")):
            assert old in row and row[old] == row[new] and row.get(old) == row[new]


# ------------------------------------------------------------------------------------ errors
def test_clear_errors(tok):
    reward = TargetWordReward("good")
    no_pad = word_tokenizer()
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="pad token"):
        PPOTrainer(tiny(tok), no_pad, reward, cfg())
    t = PPOTrainer(tiny(tok, n_positions=16), tok, reward, cfg(response_length=8))
    with pytest.raises(ValueError, match=r"prompts\[1\].*context"):
        t.train(["hello", " ".join(["good"] * 10)], 1)
    t = PPOTrainer(tiny(tok), tok, lambda p, r: [1.0] * (len(r) - 1), cfg())
    with pytest.raises(ValueError, match="7 scores for 8 responses"):
        t.train(PROMPTS, 1)
    t = PPOTrainer(tiny(tok), tok, lambda p, r: [float("nan")] * len(r), cfg())
    with pytest.raises(ValueError, match="NaN"):
        t.train(PROMPTS, 1)
    other = tiny_causal_lm(vocab_size=len(tok) + 7, n_embd=32, n_layer=1, n_head=2)
    with pytest.raises(ValueError, match="ref_policy has a vocabulary"):
        PPOTrainer(tiny(tok), tok, reward, cfg(), ref_policy=other)
    with pytest.raises(ValueError, match="batch_size"):
        cfg(batch_size=6, num_mini_batches=4)
    with pytest.raises(ValueError, match="kl_estimator"):
        cfg(kl_estimator="k2")
    with pytest.raises(ValueError, match="unknown PPOConfig field"):
        PPOConfig.from_dict({"beta": 0.1})


def test_config_uses_trl_names():
    names = {f.name for f in dataclasses.fields(PPOConfig)}
    assert {"kl_coef", "cliprange", "cliprange_value", "vf_coef", "gamma", "lam", "num_ppo_epochs",
            "num_mini_batches", "response_length", "temperature", "learning_rate", "seed", "batch_size",
            "kl_estimator", "adaptive_kl", "kl_target", "kl_horizon", "whiten_rewards", "max_grad_norm",
            "device", "dtype"} <= names


def test_a_callers_reference_is_not_frozen_and_a_frozen_policy_is_refused():
    import copy

    from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
    from rlhf_lab.ppo import PPOConfig, PPOTrainer

    tok = word_tokenizer()
    policy = tiny_causal_lm(tok, n_layer=1, n_embd=16, n_head=2)
    ref = copy.deepcopy(policy)
    cfg = PPOConfig(batch_size=2, response_length=4, progress=False)
    PPOTrainer(policy, tok, lambda p, r: [0.0] * len(p), cfg, ref_policy=ref)
    assert all(p.requires_grad for p in ref.parameters())
    frozen = copy.deepcopy(policy).requires_grad_(False)
    with pytest.raises(ValueError, match="policy"):
        PPOTrainer(frozen, tok, lambda p, r: [0.0] * len(p), cfg)
