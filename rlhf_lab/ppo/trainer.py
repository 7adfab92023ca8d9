r"""PPOTrainer: one PPO iteration (unit 5) wired from the tested functions of the library.

The steps of the algorithm box in :class:`PPOTrainer`'s docstring carry the same numbers in the
code: step 1 in :meth:`PPOTrainer.step`, steps 2 to 8 in :meth:`PPOTrainer.learn`, the update of
step 7 in :meth:`PPOTrainer._update` (minibatch -> micro-batch -> :meth:`PPOTrainer._loss`).
Everything else (setting up the models and their precision, metrics, checkpoints) sits in named
helpers around them.

Every model stays in eval mode (dropout off: a policy sampled with dropout on and re-scored
without it would not have a ratio of 1 at the first minibatch).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..advantages import gae, grpo_advantages, reinforce_pp_advantages, rloo_advantages, tied_groups, whiten
from ..divergence import sequence_log_ratio
from ..kl_control import AdaptiveKLController, FixedKLController
from ..logprobs import LOW_PRECISION, entropy_from_logits, left_pad, response_logits, token_logprobs
from ..masked import masked_mean
from ..objectives import aggregate_loss, clipped_surrogate, kl_penalty, micro_batch_share, per_token_rewards, value_loss
from ..reward_model import score_with_model
from ..utils import resolve_device
from .checkpoint import atomic_torch_save, capture_rng_state, load_checkpoint, restore_rng_state
from .config import PPOConfig
from .distributed import DataParallel, local_device, pad_columns
from .metrics import Metrics
from .modeling import (
    PolicyValue,
    ValueModel,
    checkpointing_active,
    enable_gradient_checkpointing,
    eval_mode,
    fused_tanh_gelu,
    hidden_size,
    is_peft_model,
    max_context,
    model_vocab_size,
    new_value_head,
    parameter_dtype,
    policy_forward,
    split_causal_lm,
    unwrap_peft,
)
from .prompts import chat_prompt_ids, end_of_turn_token_id, is_conversation, prompt_list, prompt_text
from .reporting import Reporter
from .rollout import Rollout, draw_uniforms, sample

Tensor = torch.Tensor
RewardFn = Callable[[List[str], List[str]], Sequence[float]]
CHECKPOINT_FORMAT = "rlhf_lab.ppo/1"


@dataclasses.dataclass
class PPOBatch:
    """What the PPO update reads, one row per response: the rollout's layout (``input_ids`` and
    ``attention_mask`` ``[B, P + T]``, ``responses`` and ``mask`` ``[B, T]``) and the constants of
    the update (``old_logprobs``, ``old_values``, ``advantages``, ``returns``: ``[B, T]``; without a
    critic ``old_values`` and ``returns`` are zeros). With the KL in the loss, ``ref_logprobs``
    ``[B, T]`` and the ``kl_coef`` :math:`\\beta` of the iteration."""

    input_ids: Tensor
    attention_mask: Tensor
    response_start: int
    responses: Tensor
    mask: Tensor
    old_logprobs: Tensor
    old_values: Tensor
    advantages: Tensor
    returns: Tensor
    ref_logprobs: Optional[Tensor] = None
    kl_coef: float = 0.0

    def rows(self, index: Tensor) -> "PPOBatch":
        """The responses ``index`` (a minibatch or a micro-batch)."""
        return PPOBatch(**{f.name: _take_rows(getattr(self, f.name), index) for f in dataclasses.fields(self)})


def _take_rows(value, index: Tensor):
    return value[index] if isinstance(value, Tensor) else value


class PPOTrainer:
    r"""PPO for any transformers causal LM, on CPU or CUDA.

    One iteration (:meth:`step`), numbered as in the code:

    1. **rollout**: sample one response per prompt with the KV cache at temperature :math:`T_s`,
       keeping each sampled token's log-probability and entropy (and value, with a shared head);
    2. **old log-probabilities and values**: those of the sampling pass, or recomputed by one
       forward when the forwards run in low precision (so that the first ratio is exactly 1);
    3. **score** :math:`r(x, y)` with the reward callable or model, minus ``missing_eos_penalty``
       for a response that never stopped;
    4. **reference log-probabilities** :math:`\log\pi_{\text{ref}}(y_t \mid s_t)`;
    5. **per-token rewards** :math:`r_t = -\beta\hat k_t + [t = \text{last}]\, r`
       (:func:`rlhf_lab.objectives.per_token_rewards`; the score alone with ``kl_placement="loss"``);
    6. **advantages** by ``advantage_estimator``: GAE(:math:`\gamma, \lambda`) with the critic's
       values and returns (:func:`rlhf_lab.advantages.gae`), or without a critic the group baselines
       (:func:`~rlhf_lab.advantages.rloo_advantages`, :func:`~rlhf_lab.advantages.grpo_advantages`)
       or REINFORCE++'s returns; whitened when ``whiten_advantages`` (:func:`rlhf_lab.advantages.whiten`);
    7. **PPO update**: ``num_ppo_epochs`` passes of minibatch steps on
       :math:`L = L^{\text{clip}} [+ \beta L^{KL}] + c_V L^V - c_H H`, the per-token losses reduced
       by ``loss_type`` (:func:`rlhf_lab.objectives.clipped_surrogate`,
       :func:`~rlhf_lab.objectives.kl_penalty`, :func:`~rlhf_lab.objectives.aggregate_loss`,
       :func:`rlhf_lab.objectives.value_loss` with a critic);
    8. **metrics**, then the :math:`\beta` update (:mod:`rlhf_lab.kl_control`).

    Args:
        policy: a transformers causal LM (``*ForCausalLM``); trained in place, moved to
            ``config.device``. Its parameters may be float32, bfloat16 or float64 (the value head
            is built in the same dtype); float16 weights are refused (train float32 weights with
            ``PPOConfig(dtype="float16")`` instead).
        tokenizer: its tokenizer; must have a pad token (``tokenizer.pad_token =
            tokenizer.eos_token`` is the usual fix). Prompts are tokenized once and left-padded by
            the trainer whatever the tokenizer's ``padding_side``.
        reward: ``reward(prompts, responses) -> list[float]`` on decoded text, or a transformers
            sequence-classification model with one label, scored on prompt + response at the last
            real token (with ``reward_tokenizer`` if it has its own vocabulary; by default the
            policy's token ids are scored directly). Run under ``no_grad`` only, never changed.
        config: :class:`PPOConfig` (defaults when ``None``).
        ref_policy: the frozen reference :math:`\pi_{\text{ref}}`; ``None`` = a frozen deep copy of
            the starting policy. Run under ``no_grad`` only, never changed.
        value_model: a separate value network (a one-label sequence-classification model, or a
            causal LM whose trunk gets a new head), trained in place; when it is also the reward
            model or the reference, the trainer trains a copy. ``None``: ``config.value_model``
            decides (``"shared"``: a value head on the policy's trunk).

    One model in two roles: the policy cannot also be the reference, the value model or the
    reward model (training it would move the target it is measured against), nor can the
    reference be the reward model; each of these raises ``ValueError``, also when two models
    merely share parameters. A value model that is the reward model or the reference is copied.

    ``train(prompts, iterations)`` returns one :class:`~rlhf_lab.ppo.metrics.Metrics` dict per
    iteration (keys in :data:`rlhf_lab.ppo.metrics.DESCRIPTIONS`). ``save(path)`` /
    ``PPOTrainer.load(path, policy, tokenizer, reward)`` resume a run exactly.
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
        self.config = _checked_config(config)
        self.device = local_device(resolve_device(self.config.device, "PPOConfig.device"))
        _check_roles(policy=policy, ref_policy=ref_policy, value_model=value_model, reward=reward)
        self._setup_data_parallel()
        self._setup_tokenizer(tokenizer)
        self._setup_policy_and_reference(policy, ref_policy)
        self._setup_value_function(value_model, reward)
        self._setup_reward(reward, reward_tokenizer)
        self._setup_precision()
        self._setup_gradient_checkpointing()
        self._setup_update_module()  # before the optimizer: FSDP replaces the parameters by their shards
        self._setup_optimizer()
        self._setup_run_state()

    # ------------------------------------------------------------------ setup steps
    def _setup_data_parallel(self) -> None:
        """The process group when a launcher started several processes (``None`` for one); the
        batch and each minibatch are split evenly over the ranks (see :mod:`rlhf_lab.ppo.distributed`)."""
        cfg = self.config
        self._dp = DataParallel.from_environment(self.device, cfg.distributed)
        if self._dp is None:
            return
        world = self._dp.world_size
        if cfg.mini_batch_size % (world * cfg.gradient_accumulation_steps):
            raise ValueError(
                f"with {world} processes, batch_size / num_mini_batches ({cfg.mini_batch_size}) must be divisible by "
                f"the number of processes × gradient_accumulation_steps ({world} × {cfg.gradient_accumulation_steps}): "
                "every rank takes an equal share of each minibatch"
            )

    @property
    def is_main_process(self) -> bool:
        """True in a one-process run and on rank 0 of a data-parallel one (which logs and saves)."""
        return self._dp is None or self._dp.is_main

    def _setup_tokenizer(self, tokenizer) -> None:
        """The pad token (left padding of prompts) and the stop token that ends a response."""
        cfg = self.config
        if tokenizer is None:
            raise ValueError("tokenizer is required")
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad token: set one, e.g. `tokenizer.pad_token = tokenizer.eos_token`")
        self.tokenizer = tokenizer
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.stop_token_id: Optional[int] = cfg.stop_token_id
        if cfg.stop_token == "eos" and cfg.apply_chat_template:
            # an instruct model ends its answer with the template's end-of-turn token
            self.stop_token_id = end_of_turn_token_id(tokenizer)
        elif cfg.stop_token == "eos":
            if tokenizer.eos_token_id is None:
                raise ValueError("PPOConfig.stop_token='eos' but the tokenizer has no eos token: set stop_token=None "
                                 "(and stop_token_id, or no missing_eos_penalty)")
            self.stop_token_id = int(tokenizer.eos_token_id)

    def _setup_policy_and_reference(self, policy, ref_policy) -> None:
        """The trained policy and the frozen reference (a private frozen copy when not given)."""
        cfg = self.config
        if not hasattr(policy, "get_output_embeddings") or policy.get_output_embeddings() is None:
            raise ValueError("policy must be a transformers causal LM (with an output embedding / lm_head)")
        self.policy = policy.to(self.device)
        self.vocab_size = vocab = model_vocab_size(policy)
        if len(self.tokenizer) > vocab:
            raise ValueError(f"tokenizer has {len(self.tokenizer)} tokens but the policy's vocabulary has {vocab}")
        if self.stop_token_id is not None and not self.stop_token_id < vocab:
            raise ValueError(f"PPOConfig.stop_token_id ({self.stop_token_id}) lies outside the policy's vocabulary "
                             f"of {vocab} tokens")
        self.context = max_context(policy)
        if self.context is not None and cfg.response_length >= self.context:
            raise ValueError(f"PPOConfig.response_length ({cfg.response_length}) leaves no room for a prompt in the "
                             f"policy's context of {self.context} positions")
        # a LoRA policy's reference is the same model with its adapters disabled: no second copy
        self.lora = is_peft_model(policy)
        self._ref_kind = "given" if ref_policy is not None else "adapters_disabled" if self.lora else "copy"
        self._owns_ref = self._ref_kind == "copy"
        if self._ref_kind == "copy":
            self.ref_policy = copy.deepcopy(policy).requires_grad_(False)
        else:
            self.ref_policy = policy if self._ref_kind == "adapters_disabled" else ref_policy.to(self.device)
        if model_vocab_size(self.ref_policy) != vocab:
            raise ValueError(f"ref_policy has a vocabulary of {model_vocab_size(self.ref_policy)} tokens but policy has "
                             f"{vocab}: the per-token KL needs the same vocabulary (the same tokenizer)")
        # the transformers model inside a peft wrapper: its trunk carries the adapter layers
        self._parts = split_causal_lm(unwrap_peft(policy))
        self._ref_parts = self._parts if self._ref_kind == "adapters_disabled" else None

    def _setup_value_function(self, value_model, reward) -> None:
        """A value head on the policy's trunk (``"shared"``) or a separate value model, in the
        dtype of the trunk it reads; none at all for a critic-free ``advantage_estimator`` (the
        memory that dropping the critic saves)."""
        self.value_head: Optional[nn.Module] = None
        self.value_model: Optional[ValueModel] = None
        policy_dtype = parameter_dtype(self.policy)
        if not self.config.needs_critic:
            if value_model is not None:
                raise ValueError(f"value_model is given but advantage_estimator={self.config.advantage_estimator!r} "
                                 "uses no critic: leave value_model=None (or use advantage_estimator='gae')")
            return
        if value_model is not None:
            # a critic initialized from the reward model or the reference is trained as a copy
            copy_model = _shares_parameters(value_model, reward) or _shares_parameters(value_model, self.ref_policy)
            self.value_model = ValueModel.from_pretrained_model(value_model, copy_model=copy_model).to(self.device)
        elif self.config.value_model == "shared":
            self.value_head = new_value_head(hidden_size(self.policy), policy_dtype, self.device)
        else:
            # with LoRA the copied trunk keeps the adapter layers: its adapters (and head) train
            base = unwrap_peft(self.policy)
            trunk = copy.deepcopy(getattr(base, "base_model", base))
            head = new_value_head(hidden_size(self.policy), policy_dtype, self.device)
            self.value_model = ValueModel(trunk, head).to(self.device)

    def _setup_reward(self, reward, reward_tokenizer) -> None:
        self.reward = reward
        self.reward_tokenizer = reward_tokenizer
        if not isinstance(reward, nn.Module):
            if not callable(reward):
                raise ValueError("reward must be a callable (prompts, responses) -> list[float] or a "
                                 "sequence-classification model")
            return
        n_labels = getattr(getattr(reward, "config", None), "num_labels", 1)
        if n_labels != 1:
            raise ValueError(f"reward model must have num_labels=1, got {n_labels}")
        reward.to(self.device)  # scored under no_grad only; the caller's flags are left alone
        if reward_tokenizer is not None:
            if reward_tokenizer.pad_token_id is None:
                raise ValueError("reward_tokenizer has no pad token")
            return
        embeddings = reward.get_input_embeddings() if hasattr(reward, "get_input_embeddings") else None
        if embeddings is not None and embeddings.weight.shape[0] < len(self.tokenizer):
            raise ValueError(f"reward model's vocabulary ({embeddings.weight.shape[0]}) is smaller than the policy "
                             f"tokenizer's ({len(self.tokenizer)}): pass reward_tokenizer=")

    def _setup_precision(self) -> None:
        """Autocast dtype, whether the forwards run in low precision, and the gradient scaler
        (built once, enabled only for float16: the update has no precision branch)."""
        self.dtype = self.config.torch_dtype
        if self.dtype == torch.float16 and self.device.type != "cuda":
            raise ValueError("PPOConfig.dtype='float16' needs CUDA; use 'bfloat16' or 'float32' on "
                             f"{self.device.type} (rlhf_lab.utils.autocast_dtype picks one)")
        for role, model in (("policy", self.policy), ("value_model", self.value_model)):
            if parameter_dtype(model) == torch.float16:
                raise ValueError(
                    f"{role} has float16 parameters, which the optimizer cannot update reliably (the gradient "
                    f"scaler refuses float16 gradients): load it in float32 (or bfloat16) and set "
                    f"PPOConfig(dtype='float16') to compute in float16 under autocast"
                )
        self.low_precision = self.dtype != torch.float32 or parameter_dtype(self.policy) in LOW_PRECISION
        self.scaler = _grad_scaler(self.device, enabled=self.dtype == torch.float16)

    def _setup_gradient_checkpointing(self) -> None:
        """transformers' activation checkpointing on the trained models (policy, separate value model)."""
        if not self.config.gradient_checkpointing:
            return
        enable_gradient_checkpointing(self.policy)
        if self.value_model is not None and hasattr(self.value_model.trunk, "supports_gradient_checkpointing"):
            enable_gradient_checkpointing(self.value_model.trunk)

    def _setup_optimizer(self) -> None:
        cfg = self.config
        self._trainable = [p for p in self.policy.parameters() if p.requires_grad]
        value_module = self._value_module()
        if value_module is not None:
            self._trainable += [p for p in value_module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self._trainable, lr=cfg.learning_rate, eps=cfg.adam_eps,
                                           weight_decay=cfg.weight_decay, foreach=True)
        # with no clipping the norm is still measured (an infinite bound scales by 1)
        self._max_grad_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")

    def _setup_update_module(self) -> None:
        """The update's forward (policy and values) as one module, in ``DistributedDataParallel``
        on several ranks (parameters broadcast from rank 0; gradients averaged in the backward)."""
        if not any(p.requires_grad for p in self.policy.parameters()):
            raise ValueError(
                "policy has no parameter with requires_grad=True: PPO would train nothing "
                "(was it frozen, e.g. a copy of a model used as a reference?)"
            )
        self._policy_value = PolicyValue(self._parts, self.value_head, self.value_model)
        if self._dp is None:
            self._update_module = self._policy_value
            return
        if self._sharded and self.lora:
            raise ValueError("PPOConfig.distributed='fsdp' does not take a LoRA (peft) policy yet: use "
                             "distributed='ddp' (the adapters are small) or a full policy")
        # the transformer blocks (transformers' `_no_split_modules`) are FSDP's units
        layers = [name for model in (self._parts.model, getattr(self.value_model, "trunk", None))
                  for name in (getattr(model, "_no_split_modules", None) or ())]
        self._update_module = self._dp.wrap(self._policy_value, layer_classes=layers)
        if self._sharded:
            # FSDP2 makes the first module whose forward runs its root: run the update module's once,
            # on two tokens, before sampling calls the trunk's blocks directly
            ids = torch.zeros((1, 2), dtype=torch.long, device=self.device)
            with torch.no_grad(), eval_mode(self._update_module):
                self._update_module(ids, torch.ones_like(ids), 1)
            self._dp.reshard(self._update_module)
            if self._owns_ref:  # the trainer's frozen copy: sharded too (no gradients, no optimizer state)
                self._dp.wrap(self.ref_policy, layer_classes=layers)

    @property
    def _sharded(self) -> bool:
        """Several ranks with ``distributed="fsdp"``: the policy and value function hold shards."""
        return self._dp is not None and self._dp.sharded

    def _setup_run_state(self) -> None:
        """KL controller, random generators (sampling on the device, shuffling on the CPU),
        counters, and the log folder (created now, so that a bad path fails before any work)."""
        cfg = self.config
        if cfg.adaptive_kl:
            self.kl_ctl = AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        else:
            self.kl_ctl = FixedKLController(cfg.kl_coef)
        self._sample_gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self._shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.iteration = 0
        self.history: List[Metrics] = []
        self._order: List[int] = []
        self._pos = 0
        self._fingerprint: Optional[str] = None
        if cfg.log_dir and self.is_main_process:
            try:
                Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ValueError(f"PPOConfig.log_dir={cfg.log_dir!r} cannot be created: {error}") from None
        self.reporter = None
        if cfg.report_targets and self.is_main_process:
            self.reporter = Reporter(cfg.report_targets, cfg.log_dir, cfg.run_name, cfg.to_dict())
        self._set_eval()

    # ------------------------------------------------------------------ plumbing
    def _set_eval(self) -> None:
        for model in (self.policy, self.ref_policy, self.value_head, self.value_model, self.reward):
            if isinstance(model, nn.Module):
                model.eval()

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _fused_activations(self):
        """Python tanh-GELUs run as torch's fused kernel during a call, restored after it."""
        if not self.config.fused_activations:
            return contextlib.nullcontext()
        return fused_tanh_gelu(self.policy, self.ref_policy, self.value_model, self.reward)

    @property
    def recompute_logprobs(self) -> bool:
        choice = self.config.recompute_logprobs
        return self.low_precision if choice is None else choice

    def _policy_and_values(self, input_ids: Tensor, attention_mask: Tensor, response_start: int):
        """Response-aligned logits ``[B, T, V]`` and values ``[B, T]`` (float32) in one policy
        forward (shared head) or a policy and a value-model forward (:class:`PolicyValue`); values
        ``None`` without a critic; with gradients, through ``DistributedDataParallel`` on several ranks."""
        module = self._update_module if torch.is_grad_enabled() else self._policy_value
        return module(input_ids, attention_mask, response_start)

    def _values(self, input_ids: Tensor, attention_mask: Tensor, response_start: int) -> Tensor:
        """Values ``[B, T]`` alone: the value model's forward, or the policy's trunk and the head."""
        if self.value_head is None and not self._sharded:  # sharded: only the root forward gathers the weights
            return self.value_model(input_ids, attention_mask, response_start)
        return self._policy_and_values(input_ids, attention_mask, response_start)[1]

    # ------------------------------------------------------------------ prompts
    def encode_prompts(self, prompts: Sequence[str]) -> List[List[int]]:
        """Token ids of each prompt; raises ``ValueError`` for an empty prompt, a token id outside
        the policy's vocabulary, or a prompt that leaves no room for ``response_length`` tokens in
        the model's context. Prompts given as lists of token ids are taken as they are."""
        if isinstance(prompts, str) or len(prompts) == 0:
            raise ValueError("prompts must be a non-empty list of strings (or of token-id lists)")
        conversations = [is_conversation(p) for p in prompts]
        if self.config.apply_chat_template and all(isinstance(p, str) or c for p, c in zip(prompts, conversations)):
            encoded = chat_prompt_ids(self.tokenizer, prompts)
        elif any(conversations):
            raise ValueError("prompts hold conversations (lists of {'role', 'content'} messages): set "
                             "PPOConfig(apply_chat_template=True) to format them with the tokenizer's chat template")
        elif all(isinstance(p, str) for p in prompts):
            encoded = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        elif all(isinstance(p, (list, tuple)) for p in prompts):
            encoded = [list(p) for p in prompts]
        else:
            raise ValueError("prompts must be a list of strings or a list of token-id lists")
        for i, ids in enumerate(encoded):
            self._check_prompt(i, ids)
        return [[int(t) for t in ids] for ids in encoded]

    def _check_prompt(self, i: int, ids: Sequence[int]) -> None:
        if len(ids) == 0:
            raise ValueError(f"prompts[{i}] is empty after tokenization")
        bad = [t for t in ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"prompts[{i}] holds token id {bad[0]!r}, outside the policy's vocabulary "
                             f"[0, {self.vocab_size})")
        if self.context is not None and len(ids) + self.config.response_length > self.context:
            raise ValueError(
                f"prompts[{i}] has {len(ids)} tokens; with response_length={self.config.response_length} "
                f"that exceeds the model's context of {self.context} positions"
            )

    def _bind_prompts(self, prompts: Sequence[str]) -> None:
        fingerprint = hashlib.sha1("\x1e".join(prompts).encode("utf-8")).hexdigest()
        if fingerprint != self._fingerprint:
            self._fingerprint, self._order, self._pos = fingerprint, [], 0

    def _next_indices(self, n: int) -> List[int]:
        """The next ``batch_size`` prompt indices: ``batch_size / num_generations`` prompts drawn in
        passes over a fresh shuffle of all prompts, each repeated ``num_generations`` times in a
        row (one group per prompt)."""
        out, group = [], self.config.num_generations
        while len(out) < self.config.batch_size // group:
            if self._pos >= len(self._order):
                self._order = torch.randperm(n, generator=self._shuffle_gen).tolist()
                self._pos = 0
            out.append(self._order[self._pos])
            self._pos += 1
        return [i for i in out for _ in range(group)]

    def decode(self, responses: Tensor, lengths: Sequence[int], ended: Optional[Sequence[bool]] = None) -> List[str]:
        """The responses as text (special tokens skipped). With ``apply_chat_template`` the answer
        alone: the end-of-turn token of a response that ``ended`` is cut, and surrounding white space."""
        if self.config.apply_chat_template and ended is not None:
            lengths = [n - int(bool(e)) for n, e in zip(lengths, ended)]
        rows = [r[:n] for r, n in zip(responses.tolist(), lengths)]
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [t.strip() for t in texts] if self.config.apply_chat_template else texts

    # ------------------------------------------------------------------ one iteration
    def step(self, prompts: Sequence[str], prompt_ids: Optional[List[List[int]]] = None) -> Metrics:
        """One PPO iteration on ``prompts`` (one response each; with ``num_generations`` G > 1 the
        prompts come in groups of G equal ones in a row, as :meth:`train` draws them): step 1, :meth:`rollout`, then
        steps 2 to 8, :meth:`learn`. Returns the iteration's metrics (see
        :data:`rlhf_lab.ppo.metrics.DESCRIPTIONS`)."""
        if prompt_ids is None:
            prompt_ids = self.encode_prompts(prompts)
        t_start = time.perf_counter()
        with self._fused_activations():
            # 1. rollout: one response per prompt, sampled with the KV cache
            rollout = self.rollout(prompt_ids)
            return self.learn(rollout, list(prompts), t_start=t_start)

    def rollout(self, prompt_ids: List[List[int]]) -> Rollout:
        """Sample one response per prompt (token ids) with the KV cache: a :class:`Rollout`."""
        cfg = self.config
        self._set_eval()
        ids, prompt_mask = left_pad(prompt_ids, self.pad_token_id, self.device)
        read_values = self.value_head is not None and not self.recompute_logprobs
        rows = total_rows = None
        if self._dp is not None:
            # this rank's rows of the whole batch, in the layout a one-process run gives them
            width = self._dp.max_int(ids.shape[1])
            ids = pad_columns(ids, width, self.pad_token_id, left=True)
            prompt_mask = pad_columns(prompt_mask, width, 0, left=True)
            total_rows = len(prompt_ids) * self._dp.world_size
            rows = self._dp.rows(total_rows)
        gathered = self._dp.full_parameters(self._update_module) if self._dp is not None else contextlib.nullcontext()
        with self._fused_activations(), gathered:
            rollout = sample(
                self._parts, ids, prompt_mask, response_length=cfg.response_length, temperature=cfg.temperature,
                pad_token_id=self.pad_token_id, stop_token_id=self.stop_token_id, generator=self._sample_gen,
                value_head=self.value_head if read_values else None, autocast=self._autocast,
                rows=rows, total_rows=total_rows,
            )
        if self._dp is not None:
            rollout = self._align_with_other_ranks(rollout, total_rows)
        return rollout

    def _align_with_other_ranks(self, rollout: Rollout, total_rows: int) -> Rollout:
        """A rank whose responses all stopped early: its generator draws the uniforms of the steps the
        other ranks still sampled (so the streams stay as one), and its rollout is right-padded to
        their length (padding changes no result)."""
        length = rollout.responses.shape[1]
        longest = self._dp.max_int(length)
        if longest > length:
            draw_uniforms(self._sample_gen, total_rows, self.device, steps=longest - length)
        padded = {name: pad_columns(getattr(rollout, name), rollout.response_start + longest, fill)
                  for name, fill in (("input_ids", self.pad_token_id), ("attention_mask", 0))}
        padded.update({name: pad_columns(getattr(rollout, name), longest, fill)
                       for name, fill in (("responses", self.pad_token_id), ("mask", 0.0), ("logprobs", 0.0),
                                          ("entropy", 0.0), ("values", 0.0)) if getattr(rollout, name) is not None})
        return dataclasses.replace(rollout, **padded)

    def _whole_batch(self, rollout: Rollout, *tensors: Tensor):
        """``rollout`` and ``tensors`` as they are in one process; on several ranks every rank's rows
        of them, in rank order (the batch a one-process run holds)."""
        if self._dp is None:
            return (rollout, *tensors)
        fields = {f.name: self._dp.gather_rows(getattr(rollout, f.name)) for f in dataclasses.fields(rollout)
                  if isinstance(getattr(rollout, f.name), torch.Tensor)}
        return (dataclasses.replace(rollout, **fields), *(None if t is None else self._dp.gather_rows(t) for t in tensors))

    def learn(self, rollout: Rollout, prompts: List[str], t_start: Optional[float] = None) -> Metrics:
        """Steps 2 to 8 of the iteration on a sampled rollout (see the class docstring)."""
        timer = _PhaseTimer(t_start)
        self._set_eval()
        with self._fused_activations():
            with torch.no_grad():
                # 2. log-probabilities and values of the sampled tokens under the sampling policy
                old_logprobs, old_values = self._old_logprobs_and_values(rollout)
                # 3. score each response (a response that never stopped loses missing_eos_penalty)
                scores = self._score(prompts, rollout)
                eos_adjusted_scores = self._minus_missing_eos_penalty(scores, rollout.ended)
                # 4. log-probabilities under the frozen reference
                ref_logprobs = self._ref_logprobs(rollout)
                # (several ranks: every rank's rows, so that steps 5 to 8 see the whole batch)
                rollout, old_logprobs, old_values, scores, eos_adjusted_scores, ref_logprobs = self._whole_batch(
                    rollout, old_logprobs, old_values, scores, eos_adjusted_scores, ref_logprobs)
                # 5. per-token rewards: -beta * k_t at every token (the KL in the reward), the score at the last one
                beta, mask = self.kl_ctl.value, rollout.mask
                rewards = self._per_token_rewards(eos_adjusted_scores, old_logprobs, ref_logprobs, beta, mask)
                # 6. advantages (and returns) by GAE or a critic-free estimator, whitened over the batch's real tokens
                whitened = _has_variance(mask)
                advantages, returns = self._advantages(rewards, old_values, mask, whitened)
            timer.lap("score")
            # 7. PPO update: num_ppo_epochs passes of minibatch steps on L = L^clip + c_V L^V - c_H H (+ beta KL)
            batch = PPOBatch(rollout.input_ids, rollout.attention_mask, rollout.response_start, rollout.responses,
                             mask, old_logprobs, old_values, advantages, returns, ref_logprobs, beta)
            update_stats = self._update(self._rows_that_teach(batch, eos_adjusted_scores))
            timer.lap("update")
        # 8. metrics, then the beta update
        metrics = self._metrics(rollout, timer, update_stats, scores=scores, rewards=rewards, beta=beta,
                                eos_adjusted_scores=eos_adjusted_scores, old_logprobs=old_logprobs,
                                ref_logprobs=ref_logprobs, old_values=old_values, returns=returns, whitened=whitened)
        self.kl_ctl.update(metrics["objective/kl"], mask.shape[0])
        self._record(metrics)
        return metrics

    # ------------------------------------------------------------------ steps 5 and 6 (unit 6: the estimators)
    def _per_token_rewards(self, scores: Tensor, old_logprobs: Tensor, ref_logprobs: Tensor, beta: float,
                           mask: Tensor) -> Tensor:
        """Step 5: :math:`r_t = -\\beta\\hat k_t + [t = \\text{last}]\\,r`; with the KL in the loss,
        the score alone (:math:`\\beta` then weighs the KL term of step 7)."""
        cfg = self.config
        if cfg.kl_placement == "loss":
            return per_token_rewards(scores, old_logprobs, ref_logprobs, 0.0, mask)
        return per_token_rewards(scores, old_logprobs, ref_logprobs, beta, mask, kl=cfg.kl_estimator)

    def _advantages(self, rewards: Tensor, old_values: Tensor, mask: Tensor, whitened: bool):
        """Step 6: ``(advantages, returns)`` ``[B, T]``. GAE with the critic's values; without a
        critic, the estimator's advantage of each response's summed reward given to every one of its
        tokens (``"rloo"``, ``"grpo"``, ``"dr_grpo"``), or REINFORCE++'s whitened returns; returns
        are then zeros (no value loss reads them)."""
        cfg, estimator = self.config, self.config.advantage_estimator
        if estimator == "gae":
            shaped = whiten(rewards, mask, shift_mean=False) if cfg.whiten_rewards and whitened else rewards
            advantages, returns = gae(shaped, old_values, cfg.gamma, cfg.lam, mask)
        elif estimator == "reinforce_pp":
            advantages, returns = reinforce_pp_advantages(rewards, mask, cfg.gamma, normalize=False), old_values
        else:
            # a response's rewards add up to its score minus beta times its summed KL (with the KL in the reward)
            response_rewards = (rewards * mask).sum(dim=1)
            if estimator == "rloo":
                per_response = rloo_advantages(response_rewards, cfg.num_generations)
            else:
                per_response = grpo_advantages(response_rewards, cfg.num_generations, scale=cfg.group_scale)
            advantages, returns = per_response[:, None] * mask, old_values
        if cfg.whiten_advantages and whitened:
            advantages = whiten(advantages, mask)
        return advantages, returns

    def _rows_that_teach(self, batch: PPOBatch, scores: Tensor) -> PPOBatch:
        """``dynamic_sampling``: the batch without the groups whose scores all tie (DAPO); a batch
        in which every group ties is kept whole (its advantages are 0: the update only moves the
        KL term)."""
        if not self.config.dynamic_sampling:
            return batch
        keep = ~tied_groups(scores, self.config.num_generations)
        if bool(keep.all()) or not bool(keep.any()):
            return batch
        return batch.rows(keep.nonzero().squeeze(1))

    def _update(self, batch: PPOBatch) -> Dict[str, float]:
        """7. ``num_ppo_epochs`` passes over the batch in minibatches, one optimizer step each. A
        minibatch's gradient adds up its micro-batches' gradients, each policy loss weighted by its
        share under ``loss_type`` (:func:`rlhf_lab.objectives.micro_batch_share`; the share of the
        minibatch's real tokens for ``"dapo"``) and the token means (value loss, entropy) by the
        share of real tokens, so accumulation equals one large minibatch exactly."""
        cfg = self.config
        means = _StepMeans()
        world = self._dp.world_size if self._dp is not None else 1
        for _epoch in range(cfg.num_ppo_epochs):
            order = torch.randperm(batch.mask.shape[0], generator=self._shuffle_gen).to(self.device)
            for minibatch in order.split(cfg.mini_batch_size):
                self.optimizer.zero_grad(set_to_none=True)
                minibatch_mask = batch.mask[minibatch]
                micro_batches = self._rank_share(minibatch).split(cfg.micro_batch_size // world)
                for i, micro_batch in enumerate(micro_batches):
                    stats, token_share, share = self._backward(batch, micro_batch, minibatch_mask,
                                                               last=i == len(micro_batches) - 1)
                    means.add(stats, token_share, share)
                means.add_step(self._optimizer_step())
        self.optimizer.zero_grad(set_to_none=True)
        if self._dp is not None:
            means.sum_over_ranks(self._dp)
        return means.read(check_finite=not self.scaler.is_enabled())

    def _rank_share(self, minibatch: Tensor) -> Tensor:
        """The rows of a minibatch this rank trains on: all of them, or its equal share on several ranks."""
        return minibatch if self._dp is None else minibatch.tensor_split(self._dp.world_size)[self._dp.rank]

    def _backward(self, batch: PPOBatch, micro_batch: Tensor, minibatch_mask: Tensor, last: bool):
        """The backward pass of one micro-batch's loss, its policy loss weighted by its share of the
        minibatch under ``loss_type`` and its token means by its share of the minibatch's real tokens;
        returns its statistics, that token share and its ``loss_type`` share. On several ranks DDP averages the ranks'
        gradients in the backward of the minibatch's last micro-batch (hence the weight times the
        number of ranks: the averaged sum is the one-process gradient). With gradient checkpointing
        the layers recompute their activations here."""
        world = self._dp.world_size if self._dp is not None else 1
        sync = contextlib.nullcontext() if self._dp is None or last else self._dp.no_sync(self._update_module)
        micro = batch.rows(micro_batch)
        share = micro_batch_share(micro.mask, minibatch_mask, self.config.loss_type)
        token_share = micro.mask.sum() / minibatch_mask.sum()
        with sync, checkpointing_active(self.policy, self.value_model):
            loss, stats = self._loss(micro, token_means_weight=token_share / share)
            self.scaler.scale(loss * (share * world)).backward()
        return stats, token_share, share

    def _loss(self, batch: PPOBatch, token_means_weight: Union[float, Tensor] = 1.0):
        """The loss of one micro-batch, :math:`L = L^{clip} [+ \\beta L^{KL}] + c_V L^V - c_H H`, and its
        statistics: the clipped surrogate (and the KL term, with ``kl_placement="loss"``) per
        token, reduced by ``loss_type``; the value loss (with a critic) and the entropy bonus are
        token means, weighted by ``token_means_weight`` (their micro-batch share over the policy
        loss's, 1 for ``"dapo"``). The inputs were checked once at the trainer's boundary: no check
        here waits for the device."""
        cfg = self.config
        with self._autocast():
            logits, values = self._policy_and_values(batch.input_ids, batch.attention_mask, batch.response_start)
        logprobs = token_logprobs(logits, batch.responses, cfg.temperature, validate=False)
        per_token, pg_stats = clipped_surrogate(logprobs, batch.old_logprobs, batch.advantages, cfg.cliprange,
                                                batch.mask, clip_eps_high=cfg.cliprange_high, validate=False)
        loss = pg_loss = self._aggregate(per_token, batch.mask)
        stats = {"loss/policy": pg_loss, "policy/clipfrac": pg_stats["clipfrac"],
                 "policy/approxkl": pg_stats["approx_kl"], "val/ratio": pg_stats["ratio_mean"]}
        if cfg.kl_placement == "loss":
            old_logprobs = batch.old_logprobs if cfg.use_bias_correction_kl else None
            kl_loss = self._aggregate(kl_penalty(logprobs, batch.ref_logprobs, cfg.kl_estimator, batch.mask,
                                                 old_logp=old_logprobs, validate=False), batch.mask)
            loss = loss + batch.kl_coef * kl_loss
            stats["loss/kl"] = kl_loss
        if values is not None:
            vf_loss, vf_stats = value_loss(values, batch.old_values, batch.returns, cfg.cliprange_value, batch.mask,
                                           validate=False)
            loss = loss + token_means_weight * (cfg.vf_coef * vf_loss)
            stats.update({"loss/value": vf_loss, "val/clipfrac": vf_stats["clipfrac"]})
        if cfg.ent_coef > 0:
            entropy = masked_mean(entropy_from_logits(logits, cfg.temperature), batch.mask, validate=False)
            loss = loss - token_means_weight * (cfg.ent_coef * entropy)
            stats["loss/entropy"] = entropy
        stats["loss/total"] = loss
        return loss, {name: value.detach() for name, value in stats.items()}

    def _aggregate(self, per_token: Tensor, mask: Tensor) -> Tensor:
        """A per-token loss reduced by ``loss_type`` (``"dr_grpo"`` divides by ``response_length``)."""
        return aggregate_loss(per_token, mask, self.config.loss_type, self.config.response_length, validate=False)

    def _optimizer_step(self) -> Tensor:
        """Unscale (float16), clip the global gradient norm, step; returns the norm before clipping."""
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self._trainable, self._max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor, replicated (the norm over every shard)
            grad_norm = grad_norm.full_tensor()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return grad_norm

    # ------------------------------------------------------------------ steps 2 to 4
    def _old_logprobs_and_values(self, rollout: Rollout):
        """Step 2: :math:`\\log\\pi_{old}` and :math:`V_{old}` of the sampled tokens, ``[B, T]``
        float32, 0 on padding: read while sampling, or (``recompute_logprobs``) recomputed with the
        update's own forward so that the first PPO ratio is exactly 1 in low precision."""
        mask, temperature = rollout.mask, self.config.temperature
        logprobs, values = rollout.logprobs, rollout.values
        with self._autocast():
            if self.recompute_logprobs:
                logits, values = self._policy_and_values(rollout.input_ids, rollout.attention_mask,
                                                         rollout.response_start)
                logprobs = token_logprobs(logits, rollout.responses, temperature) * mask
            elif values is None and self._value_module() is not None:
                values = self._values(rollout.input_ids, rollout.attention_mask, rollout.response_start)
        if values is None:  # no critic: nothing reads the values
            return logprobs, torch.zeros_like(mask)
        return logprobs, values.float() * mask

    def _score(self, prompts: List[str], rollout: Rollout) -> Tensor:
        """Step 3: the score :math:`r(x, y)` of each response, ``[B]`` float32 (a ``ValueError``
        names what is wrong with a reward callable's answer)."""
        if isinstance(self.reward, nn.Module):
            with self._autocast():
                return self._score_with_model(rollout).float()
        lengths = rollout.mask.sum(dim=1).long().tolist()
        answer = self.reward(list(prompts), self.decode(rollout.responses, lengths, rollout.ended.tolist()))
        try:
            scores = torch.as_tensor([float(s) for s in answer], dtype=torch.float32)
        except (TypeError, ValueError):
            raise ValueError("reward must return a list of numbers, one per response") from None
        if scores.numel() != rollout.responses.shape[0]:
            raise ValueError(f"reward returned {scores.numel()} scores for {rollout.responses.shape[0]} responses")
        if not bool(torch.isfinite(scores).all()):
            raise ValueError("reward returned NaN or inf")
        return scores.to(self.device)

    def _score_with_model(self, rollout: Rollout) -> Tensor:
        if self.reward_tokenizer is None or self.reward_tokenizer is self.tokenizer:
            return score_with_model(self.reward, rollout.input_ids, rollout.attention_mask)
        # the policy's tokenizer decodes prompt + response together (spacing as it was sampled)
        rows = [[t for t, keep in zip(row, row_mask) if keep]
                for row, row_mask in zip(rollout.input_ids.tolist(), rollout.attention_mask.tolist())]
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        encoded = self.reward_tokenizer(texts, return_tensors="pt", padding=True)
        return score_with_model(self.reward, encoded["input_ids"].to(self.device),
                                encoded["attention_mask"].to(self.device))

    def _minus_missing_eos_penalty(self, scores: Tensor, ended: Tensor) -> Tensor:
        """Step 3: ``missing_eos_penalty`` off the score of every response that never stopped."""
        if self.config.missing_eos_penalty is None:
            return scores
        return scores - self.config.missing_eos_penalty * (~ended).float()

    def _ref_logprobs(self, rollout: Rollout) -> Tensor:
        """Step 4: :math:`\\log\\pi_{ref}` of the sampled tokens at the sampling temperature. With a
        LoRA policy and no ``ref_policy``, the policy's own forward with its adapters disabled."""
        with self._autocast(), self._reference_weights():
            if self._ref_parts is not None:
                logits, _ = policy_forward(self._ref_parts, rollout.input_ids, rollout.attention_mask,
                                           rollout.response_start, want_hidden=False)
            else:
                logits = response_logits(self.ref_policy, rollout.input_ids, rollout.attention_mask,
                                         rollout.response_start)
        return token_logprobs(logits, rollout.responses, self.config.temperature) * rollout.mask

    def _reference_weights(self):
        """The reference's weights: the LoRA policy with its adapters disabled (peft's
        ``disable_adapter()``), or the reference model as it is."""
        if self._ref_kind == "adapters_disabled":
            return self.policy.disable_adapter()
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ step 8: metrics
    def _metrics(self, rollout: Rollout, timer: "_PhaseTimer", update_stats: Dict[str, float], *, scores, rewards,
                 eos_adjusted_scores, old_logprobs, ref_logprobs, old_values, returns, beta, whitened) -> Metrics:
        mask = rollout.mask
        batch_size, n_tokens = mask.shape[0], float(mask.sum())
        rlhf_reward = (rewards * mask).sum(dim=1)
        metrics = Metrics({
            "iteration": self.iteration + 1,
            "objective/scores": float(scores.mean()),
            "objective/scores_std": float(scores.std()) if batch_size > 1 else 0.0,
            "objective/kl": float(sequence_log_ratio(old_logprobs, ref_logprobs, mask).mean()),
            "objective/kl_coef": float(beta),
            "objective/non_score_reward": float((rlhf_reward - eos_adjusted_scores).mean()),
            "objective/rlhf_reward": float(rlhf_reward.mean()),
            "policy/entropy": float(masked_mean(rollout.entropy, mask)),
            **update_stats,
            **self._critic_metrics(old_values, returns, mask),
            "completions/mean_length": n_tokens / batch_size,
            "completions/eos_fraction": float(rollout.ended.float().mean()),
            "time/episodes_per_second": batch_size / timer.total,
            "time/tokens_per_second": n_tokens / timer.total,
            **{f"time/{phase}": seconds for phase, seconds in timer.seconds.items()},
            "time/iteration": timer.total,
        })
        if self.config.whiten_advantages or self.config.whiten_rewards:
            metrics["val/whitened"] = float(whitened)
        if self.config.num_generations > 1:
            tied = tied_groups(eos_adjusted_scores, self.config.num_generations)
            metrics["objective/frac_reward_zero_std"] = float(tied.float().mean())
        return metrics

    def _critic_metrics(self, old_values: Tensor, returns: Tensor, mask: Tensor) -> Dict[str, float]:
        if not self.config.needs_critic:
            return {}
        return {"val/explained_variance": _explained_variance(old_values, returns, mask)}

    def _record(self, metrics: Metrics) -> None:
        self.iteration += 1
        self.history.append(metrics)
        if not self.is_main_process:
            return
        if self.reporter is not None:
            self.reporter.log(metrics, step=self.iteration)
        if not self.config.log_dir:
            return
        folder = Path(self.config.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        path = folder / "metrics.csv"
        new_file = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(metrics), extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(metrics)

    # ------------------------------------------------------------------ the loop
    def train(self, prompts, iterations: int, callback: Optional[Callable[[dict], None]] = None,
              prompt_column: Optional[str] = None) -> List[Metrics]:
        """Run ``iterations`` PPO iterations, each on ``batch_size`` prompts drawn in passes over a
        fresh shuffle of ``prompts``; returns the list of per-iteration metrics (see :meth:`step`).
        ``callback(metrics)`` runs after each iteration.

        ``prompts``: a list of strings, of token-id lists, or (with ``apply_chat_template``) of
        conversations (lists of ``{"role", "content"}`` messages); or a ``datasets.Dataset`` whose
        column ``prompt_column`` holds them. On several ranks every rank passes the same prompts and
        samples its share of each batch.

        A tqdm bar shows progress (``config.progress=False`` hides it); with ``config.log_dir``
        every iteration is appended to ``metrics.jsonl`` and ``metrics.csv`` there, and
        ``config.report_to`` sends it to TensorBoard, W&B or trackio."""
        from tqdm.auto import tqdm

        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable or None, got {type(callback).__name__}")
        prompts = prompt_list(prompts, prompt_column)
        token_ids = self.encode_prompts(prompts)
        texts = self._prompt_texts(prompts, token_ids)
        self._bind_prompts(texts)
        history = []
        bar = tqdm(range(iterations), desc="PPO", disable=not (self.config.progress and self.is_main_process),
                   leave=False)
        for _ in bar:
            indices = self._next_indices(len(texts))
            if self._dp is not None:  # every rank drew the same batch: this rank samples its share
                indices = indices[self._dp.rows(len(indices))]
            metrics = self.step([texts[i] for i in indices], [token_ids[i] for i in indices])
            bar.set_postfix(reward=f"{metrics['objective/scores']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
            history.append(metrics)
            if callback is not None:
                callback(metrics)
        bar.close()
        if self.reporter is not None:
            self.reporter.close()
        return history

    def _prompt_texts(self, prompts: list, token_ids: List[List[int]]) -> List[str]:
        """What the reward function reads as each prompt: the string (a conversation's last user
        message), or the decoded token ids."""
        if all(isinstance(p, str) or is_conversation(p) for p in prompts):
            return [prompt_text(p) for p in prompts]
        return self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The whole training state (:meth:`save` writes it). With ``distributed="fsdp"`` on several
        ranks the weights and optimizer state are gathered whole to rank 0's CPU memory (the other
        ranks get empty dicts for them): every rank must call it."""
        trained = self._sharded_state() if self._sharded else None
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "history": [dict(m) for m in self.history],
            # a LoRA policy: its adapters only (the base weights never change)
            "policy": trained["policy"] if trained else self._policy_state(),
            "lora_config": self._lora_config(),
            "value": trained["value"] if trained else
                     self._value_module().state_dict() if self._value_module() is not None else None,
            "value_kind": self._value_kind(),
            "ref": (self._dp.full_state_dict(self.ref_policy) if self._sharded else self.ref_policy.state_dict())
                   if self._owns_ref else None,
            "ref_kind": self._ref_kind,
            "wandb_run_id": self.reporter.run_id if self.reporter is not None else None,
            "optimizer": trained["optimizer"] if trained else self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "kl_controller": self.kl_ctl.state_dict(),
            "prompts": {"order": list(self._order), "pos": self._pos, "fingerprint": self._fingerprint},
            "rng": capture_rng_state(sample=self._sample_gen, shuffle=self._shuffle_gen),
        }

    def _value_prefix(self) -> str:
        return "value_head." if self.value_head is not None else "value_model."

    def _sharded_state(self) -> dict:
        """FSDP: the policy's and value function's full weights (split out of the update module's
        names) and the optimizer state keyed by those names, whole tensors on the CPU."""
        full = self._dp.full_state_dict(self._update_module)
        value_prefix = self._value_prefix()
        value = {k[len(value_prefix):]: v for k, v in full.items() if k.startswith(value_prefix)}
        return {"policy": {k[len("policy."):]: v for k, v in full.items() if k.startswith("policy.")},
                "value": value if self._value_module() is not None else None,
                "optimizer": self._dp.full_optimizer_state_dict(self._update_module, self.optimizer)}

    def _policy_state(self) -> dict:
        if not self.lora:
            return self.policy.state_dict()
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.policy)

    def _lora_config(self) -> Optional[dict]:
        """The adapter's peft config as a dict (to wrap a base model again on :meth:`load`)."""
        if not self.lora:
            return None
        return self.policy.peft_config[self.policy.active_adapter].to_dict()

    def _value_module(self) -> Optional[nn.Module]:
        return self.value_head if self.value_head is not None else self.value_model

    def _value_kind(self) -> str:
        if self._value_module() is None:
            return "none"
        return "head" if self.value_head is not None else "model"

    def save(self, path) -> Path:
        """Write a checkpoint to ``path`` atomically (temporary file + rename): weights of the
        policy (of its LoRA adapters alone for a peft model), the value function and (when the
        trainer made it) the reference, the optimizer, the KL controller, the iteration counter,
        the prompt-sampling position and every RNG. On several ranks rank 0 writes it (every rank
        holds the same state) and every rank waits until it is written."""
        if Path(path).is_dir():
            raise ValueError(f"path {str(path)!r} is a folder: give a file name, e.g. {str(Path(path) / 'checkpoint.pt')!r}")
        if self._sharded:  # gathering the shards is collective
            state = self.state_dict()
            if self.is_main_process:
                atomic_torch_save(state, path)
        elif self.is_main_process:
            atomic_torch_save(self.state_dict(), path)
        if self._dp is not None:
            self._dp.barrier()
        return Path(path)

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s state. Everything is checked (format, value function,
        parameter names and shapes) before anything is changed."""
        self._check_state(state)
        if self._sharded:  # every rank read the same whole tensors and keeps its shards of them
            full = {f"policy.{k}": v for k, v in state["policy"].items()}
            if self._value_module() is not None:
                full.update({f"{self._value_prefix()}{k}": v for k, v in state["value"].items()})
            self._dp.load_full_state_dict(self._update_module, full)
        else:
            self._load_policy_state(state["policy"])
            if self._value_module() is not None:
                self._value_module().load_state_dict(state["value"])
        if state["ref"] is not None and self._sharded:
            self._dp.load_full_state_dict(self.ref_policy, state["ref"])
        elif state["ref"] is not None:
            self.ref_policy.load_state_dict(state["ref"])
        if self._sharded:
            self._dp.load_full_optimizer_state_dict(self._update_module, self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.iteration = int(state["iteration"])
        self.history = [Metrics(m) for m in state["history"]]
        prompts = state["prompts"]
        self._order, self._pos, self._fingerprint = list(prompts["order"]), int(prompts["pos"]), prompts["fingerprint"]
        restore_rng_state(state["rng"], sample=self._sample_gen, shuffle=self._shuffle_gen)
        if self.reporter is not None and state.get("wandb_run_id"):
            self.reporter.run_id = state["wandb_run_id"]

    def _load_policy_state(self, policy_state: dict) -> None:
        if not self.lora:
            self.policy.load_state_dict(policy_state)
            return
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.policy, policy_state)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"the checkpoint's adapters do not fit this policy (unexpected {result.unexpected_keys[:3]})")

    def _check_state(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"not a {CHECKPOINT_FORMAT} checkpoint (format={found!r})")
        if state["value_kind"] != self._value_kind():
            raise ValueError(f"checkpoint has a value {state['value_kind']}, this trainer a value {self._value_kind()}")
        if bool(state.get("lora_config")) != self.lora:
            saved, this = ("LoRA adapters", "a full policy") if state.get("lora_config") else ("a full policy", "LoRA")
            raise ValueError(f"the checkpoint holds {saved} but this trainer trains {this}: pass a policy of the saved kind")
        if state["ref"] is not None and not self._owns_ref:
            raise ValueError("this checkpoint holds its own frozen copy of the starting policy as the reference: "
                             "pass ref_policy=None to resume it (a given ref_policy is never overwritten)")
        groups = state["optimizer"].get("param_groups") or [{}]
        by_name = any(isinstance(p, str) for p in groups[0].get("params", ()))  # FSDP's full optimizer state
        if by_name != self._sharded:
            saved, this = ("distributed='fsdp' on several processes", "does not shard") if by_name else \
                ("one process or distributed='ddp'", "shards with distributed='fsdp'")
            raise ValueError(f"the checkpoint's optimizer state was written by a run with {saved} but this trainer "
                             f"{this}: resume it the way it was trained (its 'policy' and 'value' weights are "
                             "whole tensors and load into any model)")
        value = self._value_module()
        for role, current in (("policy", self._policy_state()), ("value", value.state_dict() if value is not None else None),
                              ("ref", self.ref_policy.state_dict() if state["ref"] is not None else None)):
            if current is not None:
                _check_same_architecture(role, current, state[role])

    @classmethod
    def load(cls, path, policy, tokenizer, reward, ref_policy=None, value_model=None, reward_tokenizer=None,
             **config_overrides) -> "PPOTrainer":
        """Rebuild a trainer from :meth:`save`'s file and continue where it stopped.

        ``policy`` (and ``value_model`` if the run had one) must have the saved architecture;
        their weights are replaced by the checkpoint's. For a LoRA run, ``policy`` is the base model
        (wrapped here with the saved LoRA config) or the base model already wrapped by peft; the
        saved adapters replace its own. ``reward`` is passed again (a callable cannot be saved).
        ``config_overrides`` change run-only fields such as ``progress``, ``log_dir`` or ``device``."""
        state = load_checkpoint(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
        config = PPOConfig.from_dict({**state["config"], **config_overrides})
        if state.get("ref_kind", "copy" if state["ref"] is not None else "given") == "given" and ref_policy is None:
            raise ValueError("this checkpoint was trained with a user-given ref_policy: pass it again")
        if state.get("lora_config") and not is_peft_model(policy):
            import peft

            policy = peft.get_peft_model(policy, peft.PeftConfig.from_peft_type(**state["lora_config"]))
        trainer = cls(policy, tokenizer, reward, config, ref_policy=ref_policy, value_model=value_model,
                      reward_tokenizer=reward_tokenizer)
        trainer.load_state_dict(state)
        return trainer


# ---------------------------------------------------------------------- helpers
class _PhaseTimer:
    """Wall time of the iteration's phases: ``lap(name)`` ends the phase begun at the last lap
    (the first lap, ``rollout``, began at ``start``)."""

    def __init__(self, start: Optional[float]):
        now = time.perf_counter()
        self.start = start if start is not None else now
        self.seconds = {"rollout": now - self.start}
        self._last = now

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._last = now - self._last, now

    @property
    def total(self) -> float:
        return self._last - self.start


class _StepMeans:
    """Statistics of the update, summed as detached tensors during the loop (no host sync) and
    read once at the end as means over the optimizer steps. A micro-batch's statistic counts with
    the weight that makes the sum the minibatch's own: its ``loss_type`` share for the losses
    reduced by ``loss_type`` (:data:`LOSS_TYPE_STATS`), its share of the real tokens for the token
    means (the two differ for the per-response ``"grpo"`` and ``"dr_grpo"``)."""

    LOSS_TYPE_STATS = frozenset({"loss/policy", "loss/kl", "loss/total"})

    def __init__(self):
        self.sums: Dict[str, Tensor] = {}
        self.grad_norms: List[Tensor] = []

    def add(self, stats: Dict[str, Tensor], token_share: Tensor, loss_share: Tensor) -> None:
        for name, value in stats.items():
            weighted = value * (loss_share if name in self.LOSS_TYPE_STATS else token_share)
            self.sums[name] = self.sums[name] + weighted if name in self.sums else weighted

    def add_step(self, grad_norm: Tensor) -> None:
        self.grad_norms.append(grad_norm)

    def sum_over_ranks(self, dp: DataParallel) -> None:
        """Each rank summed its share of every minibatch (weighted by the minibatch's real tokens):
        the sums over the ranks are the one-process sums. One all-reduce; the gradient norms,
        taken after DDP's averaging, are the same on every rank already."""
        names = sorted(self.sums)
        total = torch.stack([self.sums[n].float() for n in names])
        dp.dist.all_reduce(total)
        self.sums = dict(zip(names, total))

    def read(self, check_finite: bool) -> Dict[str, float]:
        steps = len(self.grad_norms)
        out = {name: float(total) / steps for name, total in self.sums.items()}
        out["policy/grad_norm"] = float(torch.stack(self.grad_norms).mean())
        if check_finite and not all(map(_finite, (out["loss/total"], out["policy/grad_norm"]))):
            raise ValueError(f"the PPO update produced a non-finite loss or gradient (loss/total = {out['loss/total']}, "
                             f"grad norm = {out['policy/grad_norm']}): the policy diverged; lower learning_rate")
        return out


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _has_variance(mask: Tensor) -> bool:
    """Whitening divides by a variance over the batch's real tokens, which needs two of them."""
    return bool(mask.sum() >= 2)


def _explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """:math:`1 - \\mathrm{Var}(R - V) / \\mathrm{Var}(R)` over the real tokens (NaN when Var(R) = 0)."""
    residual = returns - values
    residual_var = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    returns_var = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    return float(1 - residual_var / returns_var) if float(returns_var) > 0 else float("nan")


def _checked_config(config) -> PPOConfig:
    if config is None:
        return PPOConfig()
    if not isinstance(config, PPOConfig):
        raise ValueError(f"config must be a PPOConfig, got {type(config).__name__}")
    return config


def _grad_scaler(device: torch.device, enabled: bool):
    """``torch.amp.GradScaler(enabled=...)``, built once: disabled, each of its calls is the plain
    optimizer call (the update loop has no precision branch). torch < 2.3 has only the CUDA one."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # pragma: no cover - torch < 2.3


def _parameter_ids(model) -> set:
    return {id(p) for p in model.parameters()} if isinstance(model, nn.Module) else set()


def _shares_parameters(a, b) -> bool:
    """``a`` and ``b`` are the same model, or hold some of the same parameter tensors."""
    if a is None or b is None:
        return False
    return a is b or bool(_parameter_ids(a) & _parameter_ids(b))


# Pairs of roles that one model cannot play at once: training the first would move the second.
# (value_model, reward) and (value_model, ref_policy) are allowed: the value model is then a copy.
_EXCLUSIVE_ROLES = {
    ("policy", "ref_policy"): "the KL to it would always be 0. Pass ref_policy=None (the trainer keeps a frozen "
                              "copy of the starting policy) or a separate model",
    ("policy", "value_model"): "for a value head on the policy's trunk use PPOConfig(value_model='shared') and "
                               "leave value_model=None",
    ("policy", "reward"): "training the policy would change its own reward; score with a separate model",
    ("ref_policy", "reward"): "the reference must be a causal LM and the reward model a one-label classifier: "
                              "pass two models",
}


def _check_roles(**models) -> None:
    """Refuse one model (or shared parameters) in two roles where training one changes the other."""
    for (first, second), fix in _EXCLUSIVE_ROLES.items():
        a, b = models[first], models[second]
        if a is not None and b is not None and _shares_parameters(a, b):
            relation = f"is the {first} itself" if a is b else f"shares parameters with the {first}"
            raise ValueError(f"{second} {relation}: {fix}")


def _check_same_architecture(role: str, current: dict, saved: dict) -> None:
    missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
    if missing or unexpected:
        raise ValueError(f"the checkpoint's {role} has other parameters than this trainer's "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}): pass a model of the saved architecture")
    for name, tensor in current.items():
        if tuple(tensor.shape) != tuple(saved[name].shape):
            raise ValueError(f"the checkpoint's {role} parameter {name} has shape {tuple(saved[name].shape)}, this "
                             f"trainer's {tuple(tensor.shape)}: pass a model of the saved architecture")
