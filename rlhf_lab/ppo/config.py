r"""PPOConfig: every hyper-parameter of one PPO run in one dataclass (unit 5).

Where a field means what a field of TRL's ``PPOConfig`` means it has TRL's name (``kl_coef`` is
the course's :math:`\beta`, ``cliprange`` its :math:`\varepsilon`, ``gamma``/``lam`` the GAE
:math:`\gamma, \lambda`), so a TRL recipe carries over field by field. Each field has its
docstring right under it (as in CleanRL's ``Args``); where our default differs from TRL's, the
docstring says so.

Every setting is checked when the config is built (``ValueError`` naming the field), so that a
run never fails half-way through because of a value it accepted at the start. What can only be
checked against the models and the tokenizer (a stop token that exists, a device that is there)
is checked when :class:`~rlhf_lab.ppo.PPOTrainer` is built.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from ..kl_control import PROPORTIONAL_ERROR_CLIP
from ..objectives import PER_TOKEN_KL

#: ``PPOConfig.dtype`` names and the torch dtypes they stand for (the one table of them).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
VALUE_MODELS = ("shared", "separate")
REPORT_TO = ("tensorboard", "wandb", "trackio")
STOP_TOKENS = (None, "eos")


@dataclass
class PPOConfig:
    r"""Hyper-parameters of :class:`rlhf_lab.ppo.PPOTrainer`.

    One iteration samples ``batch_size`` responses (one per prompt), scores them and runs
    ``num_ppo_epochs`` passes over the batch in ``num_mini_batches`` minibatches, each split into
    ``gradient_accumulation_steps`` micro-batches whose gradients add up to exactly the
    minibatch's gradient. The loss of a micro-batch is

    .. math::
        L = L^{\text{clip}} + c_V L^V - c_H H, \qquad
        r_t = -\beta\,\hat k_t + [t = T_{\text{last}}]\; r(x, y)

    with the per-token reward :math:`r_t` of unit 5 (:func:`rlhf_lab.objectives.per_token_rewards`).
    """

    # ---------------------------------------------------------------- batch and optimisation
    batch_size: int = 16
    """Responses sampled per iteration, one per prompt (TRL: ``per_device_train_batch_size`` ×
    ``gradient_accumulation_steps``)."""
    num_mini_batches: int = 1
    """Minibatches per epoch: one optimizer step each."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per minibatch (forward/backward in smaller pieces, same gradient)."""
    num_ppo_epochs: int = 4
    """Passes over the batch per iteration (PPO's K)."""
    learning_rate: float = 1e-5
    """AdamW step size (TRL's default is 5e-5, from ``TrainingArguments``)."""
    adam_eps: float = 1e-5
    """AdamW :math:`\\epsilon` (TRL: ``adam_epsilon`` = 1e-8; 1e-5 is CleanRL's and OpenAI's)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    max_grad_norm: Optional[float] = 1.0
    """Clip the global gradient norm (policy and value parameters together) to this; ``None``:
    no clipping (the norm is still reported as ``policy/grad_norm``)."""

    # ---------------------------------------------------------------- sampling
    response_length: int = 32
    """Most tokens sampled per response (TRL's default is 53)."""
    temperature: float = 0.7
    """Sampling temperature :math:`T_s`; every log-probability (policy and reference) is
    computed at the same temperature, so the samples are scored by the distribution they came from."""
    stop_token: Optional[str] = "eos"
    """``"eos"``: a response ends at the tokenizer's EOS token; ``None``: at ``stop_token_id``, or
    after ``response_length`` tokens (TRL's default is ``None``)."""
    stop_token_id: Optional[int] = None
    """The id of the token that ends a response (TRL: exclusive with ``stop_token``)."""
    missing_eos_penalty: Optional[float] = None
    """Subtracted from the score of a response that never emitted the stop token (>= 0; needs a
    stop token)."""

    # ---------------------------------------------------------------- reward shaping and KL control
    kl_coef: float = 0.05
    """:math:`\\beta`, the weight of the per-token KL penalty :math:`-\\beta \\hat k_t` (the
    starting value when ``adaptive_kl``)."""
    kl_estimator: str = "k1"
    """:math:`\\hat k_t` in the reward: ``"k1"`` (:math:`\\log\\pi - \\log\\pi_{\\text{ref}}`) or
    ``"k3"`` (:math:`(\\rho - 1) - \\log\\rho`, :math:`\\rho = \\pi_{\\text{ref}}/\\pi`)."""
    adaptive_kl: bool = False
    """Adapt :math:`\\beta` towards ``kl_target`` by Ziegler et al.'s (2019) rule (not in TRL's
    current PPO)."""
    kl_target: float = 6.0
    """The KL (nats per response) that the adaptive rule aims at."""
    kl_horizon: int = 10000
    """Episodes over which the adaptive rule corrects its error."""
    whiten_rewards: bool = False
    """Scale the per-token rewards to unit variance over the batch (mean kept) before GAE."""
    whiten_advantages: bool = True
    """Normalize the advantages to mean 0, variance 1 over the batch's real tokens (TRL always
    does). A batch with fewer than 2 real tokens has no variance: it is left as it is and
    ``val/whitened`` reports 0."""

    # ---------------------------------------------------------------- PPO losses and GAE
    cliprange: float = 0.2
    """:math:`\\varepsilon` of the clipped surrogate: the ratio is clipped to
    :math:`[1 - \\varepsilon, 1 + \\varepsilon]`."""
    cliprange_value: Optional[float] = 0.2
    """Clip of the value update around the rollout's values; ``None``: unclipped value loss."""
    vf_coef: float = 0.1
    """:math:`c_V`, the weight of the value loss."""
    ent_coef: float = 0.0
    """:math:`c_H`, the weight of an entropy bonus (not in TRL's PPO)."""
    gamma: float = 1.0
    """Discount :math:`\\gamma` of GAE."""
    lam: float = 0.95
    """:math:`\\lambda` of GAE."""

    # ---------------------------------------------------------------- models
    value_model: str = "shared"
    """``"shared"``: a zero-initialized linear value head on the policy's own trunk (one forward
    gives logits and values; CleanRL's ``pg + c_V·vf`` loss). ``"separate"``: a value model from
    a copy of the starting policy's trunk (what TRL and Ziegler et al. do; more memory).
    A ``value_model=`` given to the trainer overrides both."""
    recompute_logprobs: Optional[bool] = None
    """Take the old log-probabilities (and shared values) from the sampling pass (``False``) or
    recompute them with one full forward (``True``). ``None``: recompute exactly when the
    forwards run in low precision (``dtype``, or a policy with bfloat16/float16 weights), so that
    the first ratio of an iteration is exactly 1."""
    fused_activations: bool = True
    """Run transformers' Python-level tanh-GELU (GPT-2's ``gelu_new``, ``gelu_fast``) as torch's
    fused kernel for the same function, inside the trainer's calls only: the models are restored
    when each call returns (:func:`rlhf_lab.ppo.modeling.fused_tanh_gelu`)."""

    gradient_checkpointing: bool = False
    """Recompute the policy's (and a separate value model's) layer activations in the backward pass
    instead of keeping them: less memory, one more forward per update step. transformers' own
    activation checkpointing (non-reentrant), active in the update only; sampling keeps its KV
    cache (TRL: the same field)."""

    # ---------------------------------------------------------------- prompts
    apply_chat_template: bool = False
    """Format each prompt as a user turn with the tokenizer's chat template, ending with the
    generation prompt (the assistant turn's header); a response then ends at the template's
    end-of-turn token (``stop_token="eos"`` means that token), and decoded responses hold the
    assistant's text without the template. For instruct models."""

    # ---------------------------------------------------------------- run
    seed: int = 0
    """Seeds sampling and shuffling; a CPU run repeats exactly (TRL's default is 42)."""
    device: Optional[str] = None
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``None``: CUDA when available."""
    dtype: str = "float32"
    """Precision of the forward passes: ``"bfloat16"``/``"float16"`` run them under
    ``torch.autocast`` with float32 parameters and optimizer (float16 adds a gradient scaler and
    needs CUDA). :func:`rlhf_lab.utils.autocast_dtype` picks the right one for a device (TRL's
    default is bf16)."""
    progress: bool = True
    """Show a progress bar."""
    log_dir: Optional[str] = None
    """Append every iteration's metrics to ``metrics.jsonl`` and ``metrics.csv`` in this folder
    (and write TensorBoard's event files there with ``report_to="tensorboard"``)."""
    report_to: Optional[Any] = None
    """Also send every iteration's metrics to ``"tensorboard"``, ``"wandb"`` or ``"trackio"`` (one
    name, a list of them, or ``None``), through those libraries (``pip install "rlhf-lab[logging]"``).
    W&B reads its usual environment (``WANDB_PROJECT``, ``WANDB_MODE=offline`` ...); trackio's
    project is ``TRACKIO_PROJECT`` or ``"rlhf_lab"``."""
    run_name: Optional[str] = None
    """The run's name for W&B and trackio (their own default when ``None``)."""

    def __post_init__(self) -> None:
        _check_types(self)
        _check_ranges(self)
        _check_combinations(self)

    @property
    def mini_batch_size(self) -> int:
        return self.batch_size // self.num_mini_batches

    @property
    def micro_batch_size(self) -> int:
        return self.mini_batch_size // self.gradient_accumulation_steps

    @property
    def report_targets(self) -> tuple:
        """``report_to`` as a tuple of names (empty for ``None``)."""
        if self.report_to is None:
            return ()
        return (self.report_to,) if isinstance(self.report_to, str) else tuple(self.report_to)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PPOConfig":
        """Build from a mapping; an unknown key raises ``ValueError`` naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PPOConfig field(s): {', '.join(unknown)}")
        return cls(**dict(values))

    def replace(self, **changes) -> "PPOConfig":
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------------ validation
_INTS = ("batch_size", "num_mini_batches", "gradient_accumulation_steps", "num_ppo_epochs", "response_length",
         "kl_horizon")
_POSITIVE = ("learning_rate", "temperature", "cliprange", "adam_eps", "kl_target")
_NON_NEGATIVE = ("kl_coef", "vf_coef", "ent_coef", "weight_decay")
_OPTIONAL_POSITIVE = ("cliprange_value", "max_grad_norm")
_BOOLS = ("adaptive_kl", "whiten_rewards", "whiten_advantages", "fused_activations", "progress",
          "gradient_checkpointing", "apply_chat_template")


def _number(config: PPOConfig, name: str) -> float:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = " (in YAML write 1.0e-4, not 1e-4, which YAML reads as text)" if isinstance(value, str) else ""
        raise ValueError(f"{name} must be a number, got {value!r}{hint}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _check_types(config: PPOConfig) -> None:
    for name in _INTS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name in _BOOLS:
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(config, name)!r}")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed < 2**63 - 1:
        raise ValueError(f"seed must be an int in [0, 2**63 - 1), got {config.seed!r}")
    if config.recompute_logprobs not in (None, True, False):
        raise ValueError(f"recompute_logprobs must be None, True or False, got {config.recompute_logprobs!r}")
    if config.log_dir is not None and not isinstance(config.log_dir, str):
        raise ValueError(f"log_dir must be a path (str) or None, got {config.log_dir!r}")
    if config.run_name is not None and not isinstance(config.run_name, str):
        raise ValueError(f"run_name must be a str or None, got {config.run_name!r}")
    report_to = config.report_to
    names = [report_to] if isinstance(report_to, str) else report_to
    if report_to is not None and (not isinstance(names, (list, tuple)) or not all(n in REPORT_TO for n in names)):
        raise ValueError(f"report_to must be None or one or more of {REPORT_TO}, got {report_to!r}")


def _check_ranges(config: PPOConfig) -> None:
    for name in _POSITIVE:
        if not _number(config, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(config, name)!r}")
    for name in _NON_NEGATIVE:
        if not _number(config, name) >= 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)!r}")
    for name in _OPTIONAL_POSITIVE:
        if getattr(config, name) is not None and not _number(config, name) > 0:
            raise ValueError(f"{name} must be > 0 or None, got {getattr(config, name)!r}")
    for name in ("gamma", "lam"):
        if not 0 <= _number(config, name) <= 1:
            raise ValueError(f"{name} must lie in [0, 1], got {getattr(config, name)!r}")
    if config.missing_eos_penalty is not None and not _number(config, "missing_eos_penalty") >= 0:
        raise ValueError(f"missing_eos_penalty must be >= 0 or None, got {config.missing_eos_penalty!r}")
    choices = (("kl_estimator", PER_TOKEN_KL), ("dtype", tuple(DTYPES)), ("value_model", VALUE_MODELS),
               ("stop_token", STOP_TOKENS))
    for name, allowed in choices:
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(config, name)!r}")
    stop_id = config.stop_token_id
    if stop_id is not None and (isinstance(stop_id, bool) or not isinstance(stop_id, int) or stop_id < 0):
        raise ValueError(f"stop_token_id must be a token id (an int >= 0) or None, got {stop_id!r}")
    if config.device is not None:
        try:
            torch.device(config.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda', got {config.device!r}") from None


def _check_combinations(config: PPOConfig) -> None:
    per_update = config.num_mini_batches * config.gradient_accumulation_steps
    if config.batch_size % per_update:
        raise ValueError(
            f"batch_size ({config.batch_size}) must be divisible by num_mini_batches × "
            f"gradient_accumulation_steps ({config.num_mini_batches} × {config.gradient_accumulation_steps})"
        )
    if config.stop_token is not None and config.stop_token_id is not None:
        raise ValueError("set stop_token or stop_token_id, not both (stop_token='eos' means the tokenizer's EOS id)")
    if config.missing_eos_penalty is not None and config.stop_token is None and config.stop_token_id is None:
        raise ValueError(
            "missing_eos_penalty is set but there is no stop token (stop_token=None, stop_token_id=None): "
            "every response would be penalized; set stop_token='eos' or drop missing_eos_penalty"
        )
    whitening = [name for name in ("whiten_advantages", "whiten_rewards") if getattr(config, name)]
    if whitening and config.batch_size * config.response_length < 2:
        raise ValueError(
            f"{' and '.join(whitening)} need at least 2 tokens per batch, but batch_size × response_length = "
            f"{config.batch_size} × {config.response_length} = 1: raise batch_size or set {whitening[0]}=False"
        )
    if config.adaptive_kl:
        _check_adaptive_kl(config)


def _check_adaptive_kl(config: PPOConfig) -> None:
    if not config.kl_coef > 0:
        raise ValueError(f"kl_coef must be > 0 with adaptive_kl=True (a multiplicative rule cannot leave 0), "
                         f"got {config.kl_coef!r}")
    if config.batch_size >= config.kl_horizon / PROPORTIONAL_ERROR_CLIP:
        raise ValueError(
            f"kl_horizon ({config.kl_horizon}) must exceed batch_size × {PROPORTIONAL_ERROR_CLIP:g} "
            f"({config.batch_size * PROPORTIONAL_ERROR_CLIP:g}) for the adaptive KL rule: one update of a full "
            "batch could otherwise drive beta to 0 or below"
        )
