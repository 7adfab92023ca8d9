r"""PPOTrainer: the flow of one PPO iteration (unit 5) wired from the tested core functions.

.. code-block:: text

    prompts ─► rollout (KV cache, temperature T_s: tokens, log π_old, entropy[, V])
            ─► score r(x, y)            (reward callable or sequence-classification model)
            ─► log π_ref, V(s_t)         (one no-grad forward each)
            ─► r_t = −β·k̂_t + [t = last]·r          objectives.per_token_rewards
            ─► Â_t, R̂_t  (GAE γ, λ; Â whitened)      advantages.gae / advantages.whiten
            ─► K epochs × minibatches of  L = L^clip + c_V·L^V − c_H·H
                                                      objectives.ppo_clip_loss / value_loss
            ─► metrics, then β update                 kl_control.*KLController

Every model stays in eval mode (dropout off: a policy sampled with dropout on and re-scored
without it would not have a ratio of 1 at the first minibatch).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..advantages import gae, whiten
from ..divergence import sequence_log_ratio
from ..kl_control import AdaptiveKLController, FixedKLController
from ..logprobs import entropy_from_logits, left_pad, response_logits, token_logprobs
from ..masked import masked_mean
from ..objectives import per_token_rewards, ppo_clip_loss, value_loss
from ..reward_model import score_with_model
from ..utils import default_device
from .checkpoint import atomic_torch_save, load_checkpoint
from .config import PPOConfig
from .modeling import (
    ValueModel,
    fuse_tanh_gelu,
    hidden_size,
    max_context,
    model_vocab_size,
    new_value_head,
    policy_forward,
    split_causal_lm,
)
from .rollout import Rollout, sample

Tensor = torch.Tensor
RewardFn = Callable[[List[str], List[str]], Sequence[float]]
CHECKPOINT_FORMAT = "rlhf_lab.ppo/1"


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class PPOTrainer:
    r"""PPO for any transformers causal LM, on CPU or CUDA.

    Args:
        policy: a transformers causal LM (``*ForCausalLM``); trained in place, moved to
            ``config.device``.
        tokenizer: its tokenizer; must have a pad token (``tokenizer.pad_token =
            tokenizer.eos_token`` is the usual fix). Prompts are tokenized once and left-padded by
            the trainer whatever the tokenizer's ``padding_side``.
        reward: ``reward(prompts, responses) -> list[float]`` on decoded text, or a transformers
            sequence-classification model with one label, scored on prompt + response at the last
            real token (with ``reward_tokenizer`` if it has its own vocabulary; by default the
            policy's token ids are scored directly).
        config: :class:`PPOConfig` (defaults when ``None``).
        ref_policy: the frozen reference :math:`\pi_{\text{ref}}`; ``None`` = a frozen deep copy of
            the starting policy.
        value_model: a separate value network (a one-label sequence-classification model, or a
            causal LM whose trunk gets a new head). ``None``: ``config.value_model`` decides
            (``"shared"``: a value head on the policy's trunk).

    ``train(prompts, iterations)`` returns one metrics dict per iteration (``reward``, ``kl``,
    ``entropy``, ``clipfrac``, ``approx_kl``, ``loss/policy``, ``loss/value``,
    ``episodes_per_second``, ``tokens_per_second`` and more; see :meth:`step`).
    ``save(path)`` / ``PPOTrainer.load(path, policy, tokenizer, reward)`` resume a run exactly.
    """

    def __init__(
        self,
        policy,
        tokenizer,
        reward: Union[RewardFn, nn.Module],
        config: Optional[PPOConfig] = None,
        ref_policy=None,
        value_model=None,
        reward_tokenizer=None,
    ):
        self.config = cfg = config if config is not None else PPOConfig()
        if not isinstance(cfg, PPOConfig):
            raise ValueError(f"config must be a PPOConfig, got {type(cfg).__name__}")
        self.device = torch.device(cfg.device) if cfg.device else default_device()
        self.dtype = _dtype(cfg.dtype)
        if self.dtype == torch.float16 and self.device.type != "cuda":
            raise ValueError("dtype 'float16' needs CUDA; use 'bfloat16' or 'float32' on CPU")

        # tokenizer
        if tokenizer is None:
            raise ValueError("tokenizer is required")
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "tokenizer has no pad token: set one, e.g. `tokenizer.pad_token = tokenizer.eos_token`"
            )
        self.tokenizer = tokenizer
        self.pad_token_id = int(tokenizer.pad_token_id)
        if cfg.stop_token_id is not None:
            self.stop_token_id: Optional[int] = int(cfg.stop_token_id)
        elif cfg.stop_token == "eos":
            if tokenizer.eos_token_id is None:
                raise ValueError("stop_token='eos' but the tokenizer has no eos token: set stop_token=None")
            self.stop_token_id = int(tokenizer.eos_token_id)
        else:
            self.stop_token_id = None

        # policy and reference
        if not hasattr(policy, "get_output_embeddings") or policy.get_output_embeddings() is None:
            raise ValueError("policy must be a transformers causal LM (with an output embedding / lm_head)")
        self.policy = policy.to(self.device)
        vocab = model_vocab_size(policy)
        if len(tokenizer) > vocab:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the policy's vocabulary has {vocab}")
        if ref_policy is policy:
            raise ValueError(
                "ref_policy is the policy itself: the KL to it would always be 0. Pass ref_policy=None "
                "(the trainer keeps a frozen copy of the starting policy) or a separate model"
            )
        self._owns_ref = ref_policy is None
        self.ref_policy = copy.deepcopy(policy) if ref_policy is None else ref_policy.to(self.device)
        ref_vocab = model_vocab_size(self.ref_policy)
        if ref_vocab != vocab:
            raise ValueError(
                f"ref_policy has a vocabulary of {ref_vocab} tokens but policy has {vocab}: "
                "the per-token KL needs the same vocabulary (the same tokenizer)"
            )
        if self._owns_ref:
            # Our private copy; a caller's ref_policy is left as it is (it is only run under no_grad).
            self.ref_policy.requires_grad_(False)
        self.context = max_context(policy)
        self._parts = split_causal_lm(policy)

        # value function
        self.value_head: Optional[nn.Module] = None
        self.value_model: Optional[ValueModel] = None
        if value_model is policy:
            raise ValueError(
                "value_model is the policy itself: for a value head on the policy's trunk use "
                "PPOConfig(value_model='shared') and leave value_model=None"
            )
        if value_model is not None:
            # Initializing the critic from the reward model is common; it must then be a copy, or
            # training the critic would change the reward.
            self.value_model = ValueModel.from_pretrained_model(value_model, copy_model=value_model is reward)
            self.value_model.to(self.device)
        elif cfg.value_model == "shared":
            self.value_head = new_value_head(hidden_size(policy)).to(self.device)
        else:
            trunk = copy.deepcopy(getattr(policy, "base_model", policy))
            self.value_model = ValueModel(trunk, new_value_head(hidden_size(policy))).to(self.device)

        # reward
        self.reward = reward
        self.reward_tokenizer = reward_tokenizer
        if isinstance(reward, nn.Module):
            n_labels = getattr(getattr(reward, "config", None), "num_labels", 1)
            if n_labels != 1:
                raise ValueError(f"reward model must have num_labels=1, got {n_labels}")
            reward.to(self.device)  # scored under no_grad only; the caller's flags are left alone
            if reward_tokenizer is None:
                emb = reward.get_input_embeddings() if hasattr(reward, "get_input_embeddings") else None
                if emb is not None and emb.weight.shape[0] < len(tokenizer):
                    raise ValueError(
                        f"reward model's vocabulary ({emb.weight.shape[0]}) is smaller than the policy "
                        f"tokenizer's ({len(tokenizer)}): pass reward_tokenizer="
                    )
            elif reward_tokenizer.pad_token_id is None:
                raise ValueError("reward_tokenizer has no pad token")
        elif not callable(reward):
            raise ValueError("reward must be a callable (prompts, responses) -> list[float] or a sequence-classification model")

        if cfg.fused_activations:
            for m in (self.policy, self.ref_policy, self.value_model, self.reward):
                fuse_tanh_gelu(m)

        # optimisation
        self._trainable = [p for p in self.policy.parameters() if p.requires_grad]
        if not self._trainable:
            raise ValueError(
                "policy has no parameter with requires_grad=True: PPO would train nothing "
                "(was it frozen, e.g. a copy of a model used as a reference?)"
            )
        value_params = (self.value_head or self.value_model).parameters()
        self._trainable += [p for p in value_params if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self._trainable, lr=cfg.learning_rate, eps=cfg.adam_eps, weight_decay=cfg.weight_decay,
            foreach=True,
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        if cfg.adaptive_kl:
            self.kl_ctl = AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        else:
            self.kl_ctl = FixedKLController(cfg.kl_coef)

        # randomness: one generator for sampling (on the device), one for shuffling (CPU)
        self._sample_gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self._shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.iteration = 0
        self.history: List[dict] = []
        self._order: List[int] = []
        self._pos = 0
        self._fingerprint: Optional[str] = None
        self._set_eval()

    # ------------------------------------------------------------------ helpers
    def _set_eval(self) -> None:
        for m in (self.policy, self.ref_policy, self.value_head, self.value_model, self.reward):
            if isinstance(m, nn.Module):
                m.eval()

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def recompute_logprobs(self) -> bool:
        c = self.config.recompute_logprobs
        return (self.dtype != torch.float32) if c is None else bool(c)

    def encode_prompts(self, prompts: Sequence[str]) -> List[List[int]]:
        """Token ids of each prompt; raises ``ValueError`` for an empty prompt or one that leaves
        no room for ``response_length`` tokens in the model's context. Prompts given as lists of
        token ids are taken as they are."""
        if isinstance(prompts, str) or len(prompts) == 0:
            raise ValueError("prompts must be a non-empty list of strings (or of token-id lists)")
        if all(isinstance(p, str) for p in prompts):
            enc = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        elif all(isinstance(p, (list, tuple)) for p in prompts):
            enc = [list(p) for p in prompts]
        else:
            raise ValueError("prompts must be a list of strings or a list of token-id lists")
        for i, ids in enumerate(enc):
            if len(ids) == 0:
                raise ValueError(f"prompts[{i}] is empty after tokenization")
            if self.context is not None and len(ids) + self.config.response_length > self.context:
                raise ValueError(
                    f"prompts[{i}] has {len(ids)} tokens; with response_length={self.config.response_length} "
                    f"that exceeds the model's context of {self.context} positions"
                )
        return [list(map(int, ids)) for ids in enc]

    def _bind_prompts(self, prompts: Sequence[str]) -> None:
        fp = hashlib.sha1("\x1e".join(prompts).encode("utf-8")).hexdigest()
        if fp != self._fingerprint:
            self._fingerprint, self._order, self._pos = fp, [], 0

    def _next_indices(self, n: int) -> List[int]:
        """The next ``batch_size`` prompt indices: passes over a fresh shuffle of all prompts."""
        out = []
        while len(out) < self.config.batch_size:
            if self._pos >= len(self._order):
                self._order = torch.randperm(n, generator=self._shuffle_gen).tolist()
                self._pos = 0
            out.append(self._order[self._pos])
            self._pos += 1
        return out

    def _score(self, prompts: List[str], ro: Rollout) -> Tensor:
        B = ro.responses.shape[0]
        lengths = ro.mask.sum(dim=1).long().tolist()
        if isinstance(self.reward, nn.Module):
            with self._autocast():
                if self.reward_tokenizer is None or self.reward_tokenizer is self.tokenizer:
                    scores = score_with_model(self.reward, ro.input_ids, ro.attention_mask)
                else:
                    # the policy's tokenizer decodes prompt + response together (spacing as it was sampled)
                    rows = [[t for t, m in zip(r, mk) if m] for r, mk in zip(ro.input_ids.tolist(), ro.attention_mask.tolist())]
                    texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
                    enc = self.reward_tokenizer(texts, return_tensors="pt", padding=True)
                    scores = score_with_model(self.reward, enc["input_ids"].to(self.device),
                                              enc["attention_mask"].to(self.device))
            return scores.float()
        out = self.reward(list(prompts), self.decode(ro.responses, lengths))
        try:
            scores = torch.as_tensor([float(s) for s in out], dtype=torch.float32)
        except (TypeError, ValueError):
            raise ValueError("reward must return a list of numbers, one per response") from None
        if scores.numel() != B:
            raise ValueError(f"reward returned {scores.numel()} scores for {B} responses")
        if not bool(torch.isfinite(scores).all()):
            raise ValueError("reward returned NaN or inf")
        return scores.to(self.device)

    def decode(self, responses: Tensor, lengths: Sequence[int]) -> List[str]:
        rows = [r[:n] for r, n in zip(responses.tolist(), lengths)]
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)

    def _values(self, input_ids: Tensor, attention_mask: Tensor, P: int, hidden: Optional[Tensor]) -> Tensor:
        if self.value_head is not None:
            return self.value_head(hidden).squeeze(-1).float()
        return self.value_model(input_ids, attention_mask, P)

    # ------------------------------------------------------------------ one iteration
    def step(self, prompts: Sequence[str], prompt_ids: Optional[List[List[int]]] = None) -> dict:
        r"""One PPO iteration on ``prompts`` (one response each): :meth:`rollout` then :meth:`learn`.

        Metrics (means over the batch; "per token" means over real response tokens):
        ``reward`` (mean score :math:`r(x,y)`), ``reward_std``, ``kl`` (mean
        :math:`\sum_t \log\pi_{\text{old}} - \log\pi_{\text{ref}}`), ``kl_coef`` (the
        :math:`\beta` used), ``non_score_reward`` (mean :math:`\sum_t -\beta\hat k_t`),
        ``rlhf_reward`` (mean :math:`\sum_t r_t`), ``entropy`` (per token, at :math:`T_s`),
        ``clipfrac`` (share of tokens where the clipped surrogate is the smaller term),
        ``approx_kl``, ``ratio``, ``loss/policy``, ``loss/value``, ``loss/total``,
        ``value_clipfrac`` (share of tokens where the clipped value error is the larger term),
        ``explained_variance``, ``grad_norm``, ``response_length``,
        ``eos_fraction``, ``episodes_per_second``, ``tokens_per_second``, ``time/*``.
        """
        if prompt_ids is None:
            prompt_ids = self.encode_prompts(prompts)
        t0 = time.perf_counter()
        ro = self.rollout(prompt_ids)
        return self.learn(ro, list(prompts), t_start=t0)

    def rollout(self, prompt_ids: List[List[int]]) -> Rollout:
        """Sample one response per prompt (token ids) with the KV cache: a :class:`Rollout`."""
        cfg = self.config
        self._set_eval()
        ids, pmask = left_pad(prompt_ids, self.pad_token_id, self.device)
        shared = self.value_head is not None
        return sample(
            self._parts, ids, pmask, response_length=cfg.response_length, temperature=cfg.temperature,
            pad_token_id=self.pad_token_id, stop_token_id=self.stop_token_id, generator=self._sample_gen,
            value_head=self.value_head if (shared and not self.recompute_logprobs) else None,
            autocast=self._autocast,
        )

    def learn(self, ro: Rollout, prompts: List[str], t_start: Optional[float] = None) -> dict:
        """Score a rollout, build per-token rewards and advantages, run the PPO update, update β."""
        cfg = self.config
        self._set_eval()
        shared = self.value_head is not None
        t1 = time.perf_counter()
        t0 = t_start if t_start is not None else t1
        P, mask = ro.response_start, ro.mask

        with torch.no_grad():
            old_logp, values = ro.logprobs, ro.values
            if self.recompute_logprobs:
                with self._autocast():
                    logits, h = policy_forward(self._parts, ro.input_ids, ro.attention_mask, P, want_hidden=shared)
                    old_logp = token_logprobs(logits, ro.responses, cfg.temperature) * mask
                    if shared:
                        values = self._values(ro.input_ids, ro.attention_mask, P, h)
            if values is None:
                with self._autocast():
                    values = self._values(ro.input_ids, ro.attention_mask, P, None)
            values = values.float() * mask
            scores = self._score(list(prompts), ro)
            with self._autocast():
                ref_logits = response_logits(self.ref_policy, ro.input_ids, ro.attention_mask, P)
            ref_logp = token_logprobs(ref_logits, ro.responses, cfg.temperature) * mask
            del ref_logits
            penalized = scores
            if cfg.missing_eos_penalty is not None:
                penalized = scores - cfg.missing_eos_penalty * (~ro.ended).float()
            beta = float(self.kl_ctl.value)
            rewards = per_token_rewards(penalized, old_logp, ref_logp, beta, mask, kl=cfg.kl_estimator)
            rlhf_reward = (rewards * mask).sum(dim=1)
            if cfg.whiten_rewards:
                rewards = whiten(rewards, mask, shift_mean=False)
            advantages, returns = gae(rewards, values, cfg.gamma, cfg.lam, mask)
            if cfg.whiten_advantages:
                advantages = whiten(advantages, mask)
        t2 = time.perf_counter()

        upd = self._update(ro, old_logp, values, advantages, returns)
        t3 = time.perf_counter()

        with torch.no_grad():
            kl_seq = sequence_log_ratio(old_logp, ref_logp, mask)
            kl_mean = float(kl_seq.mean())
            resid_var = masked_mean((returns - values - masked_mean(returns - values, mask)) ** 2, mask)
            ret_var = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
            n_tokens = float(mask.sum())
            B = mask.shape[0]
            metrics = {
                "iteration": self.iteration + 1,
                "reward": float(scores.mean()),
                "reward_std": float(scores.std()) if B > 1 else 0.0,
                "kl": kl_mean,
                "kl_coef": beta,
                "non_score_reward": float((rlhf_reward - penalized).mean()),
                "rlhf_reward": float(rlhf_reward.mean()),
                "entropy": float(masked_mean(ro.entropy, mask)),
                **upd,
                "explained_variance": float(1 - resid_var / ret_var) if float(ret_var) > 0 else float("nan"),
                "response_length": n_tokens / B,
                "eos_fraction": float(ro.ended.float().mean()),
                "episodes_per_second": B / (t3 - t0),
                "tokens_per_second": n_tokens / (t3 - t0),
                "time/rollout": t1 - t0,
                "time/score": t2 - t1,
                "time/update": t3 - t2,
                "time/iteration": t3 - t0,
            }
        self.kl_ctl.update(kl_mean, B)
        self.iteration += 1
        self.history.append(metrics)
        self._log(metrics)
        return metrics

    def _update(self, ro: Rollout, old_logp: Tensor, old_values: Tensor, advantages: Tensor, returns: Tensor) -> dict:
        """``num_ppo_epochs`` passes of minibatch steps on :math:`L = L^{clip} + c_V L^V - c_H H`.

        A minibatch's gradient is accumulated over micro-batches, each loss weighted by its
        share of the minibatch's real tokens, so accumulation equals one large batch exactly."""
        cfg = self.config
        B = old_logp.shape[0]
        P = ro.response_start
        shared = self.value_head is not None
        acc = {k: torch.zeros((), device=self.device) for k in
               ("clipfrac", "approx_kl", "ratio", "loss/policy", "loss/value", "loss/total", "value_clipfrac", "entropy_update")}
        grad_norms: List[Tensor] = []
        n_updates = 0
        for _ in range(cfg.num_ppo_epochs):
            perm = torch.randperm(B, generator=self._shuffle_gen).to(self.device)
            for s in range(0, B, cfg.mini_batch_size):
                idx = perm[s : s + cfg.mini_batch_size]
                mb_tokens = ro.mask[idx].sum()
                self.optimizer.zero_grad(set_to_none=True)
                for ms in range(0, len(idx), cfg.micro_batch_size):
                    j = idx[ms : ms + cfg.micro_batch_size]
                    m = ro.mask[j]
                    with self._autocast():
                        logits, h = policy_forward(self._parts, ro.input_ids[j], ro.attention_mask[j], P, want_hidden=shared)
                        new_values = self._values(ro.input_ids[j], ro.attention_mask[j], P, h)
                    new_logp = token_logprobs(logits, ro.responses[j], cfg.temperature)
                    pg_loss, st = ppo_clip_loss(new_logp, old_logp[j], advantages[j], cfg.cliprange, m)
                    vf_loss = value_loss(new_values, old_values[j], returns[j], clip_eps=cfg.cliprange_value, mask=m)
                    loss = pg_loss + cfg.vf_coef * vf_loss
                    if cfg.ent_coef > 0:
                        ent = masked_mean(entropy_from_logits(logits, cfg.temperature), m)
                        loss = loss - cfg.ent_coef * ent
                        acc["entropy_update"] += ent.detach() * (m.sum() / mb_tokens)
                    w = m.sum() / mb_tokens
                    if self.scaler is not None:
                        self.scaler.scale(loss * w).backward()
                    else:
                        (loss * w).backward()
                    with torch.no_grad():
                        acc["clipfrac"] += st["clipfrac"] * w
                        acc["approx_kl"] += st["approx_kl"] * w
                        acc["ratio"] += st["ratio_mean"] * w
                        acc["loss/policy"] += pg_loss.detach() * w
                        acc["loss/value"] += vf_loss.detach() * w
                        acc["loss/total"] += loss.detach() * w
                        if cfg.cliprange_value is not None:
                            # share of tokens where the clipped error is the larger one, i.e. where
                            # the clip decides the value loss (TRL's vf_clipfrac)
                            v_old, ret = old_values[j], returns[j]
                            v_clipped = v_old + torch.clamp(new_values - v_old, -cfg.cliprange_value, cfg.cliprange_value)
                            binding = ((v_clipped - ret) ** 2 > (new_values - ret) ** 2).float()
                            acc["value_clipfrac"] += masked_mean(binding, m) * w
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                # With no clipping the norm is still measured (an infinite bound scales by 1).
                max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
                grad_norms.append(torch.nn.utils.clip_grad_norm_(self._trainable, max_norm))
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                n_updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        out = {k: float(v) / n_updates for k, v in acc.items()}
        if cfg.ent_coef == 0:
            out.pop("entropy_update")
        out["grad_norm"] = float(torch.stack(grad_norms).mean())
        return out

    # ------------------------------------------------------------------ the loop
    def train(self, prompts: Sequence[str], iterations: int,
              callback: Optional[Callable[[dict], None]] = None) -> List[dict]:
        """Run ``iterations`` PPO iterations, each on ``batch_size`` prompts drawn in passes over a
        fresh shuffle of ``prompts`` (strings, or lists of token ids); returns the list of
        per-iteration metrics (see :meth:`step`). ``callback(metrics)`` runs after each iteration.

        A tqdm bar shows progress (``config.progress=False`` hides it); with ``config.log_dir``
        every iteration is appended to ``metrics.jsonl`` and ``metrics.csv`` there."""
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
        token_ids = self.encode_prompts(prompts)
        if all(isinstance(p, str) for p in prompts):
            prompts = list(prompts)
        else:
            prompts = self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)
        self._bind_prompts(prompts)
        from tqdm.auto import tqdm

        out = []
        bar = tqdm(range(iterations), desc="PPO", disable=not self.config.progress, leave=False)
        for _ in bar:
            idx = self._next_indices(len(prompts))
            m = self.step([prompts[i] for i in idx], [token_ids[i] for i in idx])
            bar.set_postfix(reward=f"{m['reward']:.3f}", kl=f"{m['kl']:.3f}")
            out.append(m)
            if callback is not None:
                callback(m)
        bar.close()
        return out

    def _log(self, metrics: dict) -> None:
        if not self.config.log_dir:
            return
        folder = Path(self.config.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        path = folder / "metrics.csv"
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(metrics), extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(metrics)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        value = self.value_head if self.value_head is not None else self.value_model
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "history": list(self.history),
            "policy": self.policy.state_dict(),
            "value": value.state_dict(),
            "value_kind": "head" if self.value_head is not None else "model",
            "ref": self.ref_policy.state_dict() if self._owns_ref else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "kl_controller": self.kl_ctl.state_dict(),
            "prompts": {"order": list(self._order), "pos": self._pos, "fingerprint": self._fingerprint},
            "rng": {
                "sample": self._sample_gen.get_state(),
                "shuffle": self._shuffle_gen.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "python": random.getstate(),
                "numpy": np.random.get_state(),
            },
        }

    def save(self, path) -> Path:
        """Write a checkpoint to ``path`` atomically (temporary file + rename): weights of the
        policy, the value function and (when the trainer made it) the reference, the optimizer,
        the KL controller, the iteration counter, the prompt-sampling position and every RNG."""
        return atomic_torch_save(self.state_dict(), path)

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a {CHECKPOINT_FORMAT} checkpoint (format={state.get('format')!r})")
        self.policy.load_state_dict(state["policy"])
        kind = "head" if self.value_head is not None else "model"
        if state["value_kind"] != kind:
            raise ValueError(f"checkpoint has a value {state['value_kind']}, this trainer a value {kind}")
        (self.value_head if self.value_head is not None else self.value_model).load_state_dict(state["value"])
        if state["ref"] is not None:
            self.ref_policy.load_state_dict(state["ref"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
        p = state["prompts"]
        self._order, self._pos, self._fingerprint = list(p["order"]), int(p["pos"]), p["fingerprint"]
        rng = state["rng"]
        self._sample_gen.set_state(rng["sample"])
        self._shuffle_gen.set_state(rng["shuffle"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])

    @classmethod
    def load(cls, path, policy, tokenizer, reward, ref_policy=None, value_model=None, reward_tokenizer=None,
             **config_overrides) -> "PPOTrainer":
        """Rebuild a trainer from :meth:`save`'s file and continue where it stopped.

        ``policy`` (and ``value_model`` if the run had one) must have the saved architecture;
        their weights are replaced by the checkpoint's. ``reward`` is passed again (a callable
        cannot be saved). ``config_overrides`` change run-only fields such as ``progress``,
        ``log_dir`` or ``device``."""
        state = load_checkpoint(path)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
        config = PPOConfig.from_dict({**state["config"], **config_overrides})
        if state["ref"] is None and ref_policy is None:
            raise ValueError("this checkpoint was trained with a user-given ref_policy: pass it again")
        trainer = cls(policy, tokenizer, reward, config, ref_policy=ref_policy, value_model=value_model,
                      reward_tokenizer=reward_tokenizer)
        trainer.load_state_dict(state)
        return trainer
