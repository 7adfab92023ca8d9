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
from typing import Any, ClassVar, Dict, Mapping, Optional

import torch

from ..advantages import GRPO_SCALES
from ..divergence import KL_ESTIMATORS
from ..kl_control import PROPORTIONAL_ERROR_CLIP
from ..objectives import LOSS_TYPES, PER_TOKEN_KL

#: ``PPOConfig.dtype`` names and the torch dtypes they stand for (the one table of them).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
VALUE_MODELS = ("shared", "separate")
DISTRIBUTED = ("ddp", "fsdp")
REPORT_TO = ("tensorboard", "wandb", "trackio")
STOP_TOKENS = (None, "eos")
#: ``advantage_estimator`` values: GAE needs a critic, the others do not.
ADVANTAGE_ESTIMATORS = ("gae", "rloo", "grpo", "dr_grpo", "reinforce_pp")
#: the estimators whose baseline comes from the other responses of a prompt's group
GROUP_ESTIMATORS = ("rloo", "grpo", "dr_grpo")
KL_PLACEMENTS = ("reward", "loss")


@dataclass
class PPOConfig:
    r"""Hyper-parameters of :class:`rlhf_lab.ppo.PPOTrainer`.

    One iteration samples ``batch_size`` responses (``num_generations`` per prompt, so
    ``batch_size / num_generations`` prompts), scores them and runs ``num_ppo_epochs`` passes over
    the batch in ``num_mini_batches`` minibatches, each split into ``gradient_accumulation_steps``
    micro-batches whose gradients add up to exactly the minibatch's gradient. The loss of a
    micro-batch is

    .. math::
        L = L^{\text{clip}} + c_V L^V - c_H H, \qquad
        r_t = -\beta\,\hat k_t + [t = T_{\text{last}}]\; r(x, y)

    with the per-token reward :math:`r_t` of unit 5 (:func:`rlhf_lab.objectives.per_token_rewards`).

    ``advantage_estimator`` chooses how the advantages :math:`\hat A_t` are estimated (unit 6):
    ``"gae"`` with a critic (today's PPO, the default), or without one from the other responses
    to the same prompt (``"rloo"``, ``"grpo"``, ``"dr_grpo"``) or from the batch
    (``"reinforce_pp"``); only ``"gae"`` builds a value head or value model, and the value fields
    (``value_model``, ``vf_coef``, ``cliprange_value``) are read only then. ``kl_placement`` puts
    :math:`\beta\hat k` in the reward (as above) or in the loss, ``loss_type`` chooses how the
    per-token losses are averaged. :class:`~rlhf_lab.ppo.GRPOConfig` and
    :class:`~rlhf_lab.ppo.RLOOConfig` are this dataclass with TRL's field names and defaults.
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
    """Passes over the batch per iteration (PPO's K; TRL's GRPO calls it ``num_iterations``,
    :math:`\\mu`). With one pass in one minibatch the update is on-policy: the ratio is 1 (the old
    log-probabilities are the policy's own, from the sampling pass: equal to the update's forward up
    to rounding), clipping never acts and the gradient is REINFORCE's with the estimator's baseline."""
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
    """:math:`\\hat k_t`: ``"k1"`` (:math:`\\log\\pi - \\log\\pi_{\\text{ref}}`), ``"k3"``
    (:math:`(\\rho - 1) - \\log\\rho`, :math:`\\rho = \\pi_{\\text{ref}}/\\pi`) or, with
    ``kl_placement="loss"`` only, ``"k2"`` (:math:`\\tfrac12\\log^2\\rho`)."""
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
    """Normalize the advantages to mean 0, variance 1 over the batch's real tokens (TRL's PPO always
    does; for ``"reinforce_pp"`` this is its global batch normalization; it applies to every
    estimator, and :class:`GRPOConfig`/:class:`RLOOConfig` turn it off, as TRL's GRPO and RLOO
    do). A batch with fewer than 2 real tokens has no variance: it is left as it is and
    ``val/whitened`` reports 0."""

    # ---------------------------------------------------------------- advantages without a critic (unit 6)
    advantage_estimator: str = "gae"
    """How the advantages are estimated. ``"gae"``: GAE(:math:`\\gamma, \\lambda`) with a critic
    (:func:`rlhf_lab.advantages.gae`; the only estimator that builds one). Critic-free:
    ``"rloo"``, the leave-one-out baseline of the group (:func:`~rlhf_lab.advantages.rloo_advantages`);
    ``"grpo"``, the group mean and spread (:func:`~rlhf_lab.advantages.grpo_advantages`, scaled by
    ``scale_rewards``); ``"dr_grpo"``, the group mean without the spread (Dr. GRPO; pair it with
    ``loss_type="dr_grpo"`` for the paper's recipe); ``"reinforce_pp"``, REINFORCE++ (per-token
    KL rewards, returns, normalized over the batch: :func:`~rlhf_lab.advantages.reinforce_pp_advantages`,
    its normalization switched by ``whiten_advantages``). The group estimators give every token of a
    response the response's advantage."""
    num_generations: int = 1
    """:math:`G`, responses sampled per prompt in one batched rollout (TRL's name); ``batch_size``
    counts responses, as TRL's GRPO counts completions, and must be a multiple of it. The group
    estimators need :math:`G \\ge 2`."""
    scale_rewards: Optional[str] = None
    """The spread that ``"grpo"`` divides by: ``"group"`` (each prompt's standard deviation),
    ``"batch"`` (the batch's) or ``"none"``; ``None``: ``"group"`` for ``"grpo"`` and ``"none"``
    for ``"dr_grpo"`` (only ``None`` or ``"none"`` is accepted there). TRL's name; its default is
    ``"group"``."""
    dynamic_sampling: bool = False
    """Drop from the update the groups whose scores all tie (their advantages are 0: they would only
    dilute the token mean), DAPO's dynamic sampling without the resampling that refills the batch
    (Yu et al. 2025). Group estimators only; ``objective/frac_reward_zero_std`` reports the share
    of such responses in every case."""

    # ---------------------------------------------------------------- where the KL goes (unit 6)
    kl_placement: str = "reward"
    """``"reward"``: :math:`-\\beta\\hat k_t` in the per-token reward (unit 5; with a group
    estimator the response's summed :math:`-\\beta\\sum_t\\hat k_t` joins its score before the
    baseline, as TRL's RLOO does); ``"loss"``: :math:`\\beta\\hat k_t` added to the per-token
    policy loss (GRPO; :func:`rlhf_lab.objectives.kl_penalty` says which divergence's gradient each
    estimator then gives)."""
    use_bias_correction_kl: bool = False
    """With the KL in the loss: weight :math:`\\hat k_t` by the importance ratio
    :math:`\\pi_\\theta/\\pi_{\\text{old}}`, so that k1 or k3 give the gradient of
    :math:`\\mathrm{KL}(\\pi_\\theta\\|\\pi_{\\text{ref}})` (TRL's name; its GRPO default is ``True``)."""

    # ---------------------------------------------------------------- PPO losses and GAE
    loss_type: str = "dapo"
    """How the per-token policy losses are averaged (TRL's names, :func:`rlhf_lab.objectives.aggregate_loss`):
    ``"dapo"`` (one token mean over the minibatch, what PPO has always done here), ``"bnpo"``
    (the same), ``"grpo"`` (a token mean per response, then the mean over responses) or
    ``"dr_grpo"`` (the sum over tokens divided by responses × ``response_length``). The value loss
    and the entropy bonus stay token means."""
    cliprange: float = 0.2
    """:math:`\\varepsilon` of the clipped surrogate: the ratio is clipped to
    :math:`[1 - \\varepsilon, 1 + \\varepsilon]`."""
    cliprange_high: Optional[float] = None
    """A different upper bound :math:`1 + \\varepsilon_{\\text{high}}` for the ratio (DAPO's
    clip-higher, which recommends 0.28; TRL's GRPO calls it ``epsilon_high``); ``None``: ``cliprange``."""
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

    distributed: str = "ddp"
    """How several processes (``torchrun``, ``accelerate launch``) share the trained modules:
    ``"ddp"``, a full copy on every rank with the gradients averaged (``DistributedDataParallel``);
    ``"fsdp"``, the policy, its value function, their gradients and the optimizer state sharded over
    the ranks (torch's FSDP2, ``fully_shard``: torch >= 2.6). Ignored in a one-process run
    (see :mod:`rlhf_lab.ppo.distributed`)."""

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
    def needs_critic(self) -> bool:
        """Whether the estimator needs a value function (only ``"gae"`` does)."""
        return self.advantage_estimator == "gae"

    @property
    def group_scale(self) -> Optional[str]:
        """The ``scale`` of :func:`rlhf_lab.advantages.grpo_advantages` for ``"grpo"``/``"dr_grpo"``."""
        if self.advantage_estimator == "dr_grpo":
            return "none"
        if self.advantage_estimator == "grpo":
            return self.scale_rewards or "group"
        return None

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
        values = cls._translate(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        return cls(**dict(values))

    def replace(self, **changes) -> "PPOConfig":
        return dataclasses.replace(self, **self._translate(changes))

    #: TRL's names of some fields (``GRPOConfig``/``RLOOConfig``: ``beta`` is ``kl_coef`` ...)
    TRL_NAMES: ClassVar[Dict[str, str]] = {}

    @staticmethod
    def _translate(values: Mapping[str, Any]) -> dict:
        return dict(values)


# ------------------------------------------------------------------------ validation
_INTS = ("batch_size", "num_mini_batches", "gradient_accumulation_steps", "num_ppo_epochs", "response_length",
         "kl_horizon", "num_generations")
_POSITIVE = ("learning_rate", "temperature", "cliprange", "adam_eps", "kl_target")
_NON_NEGATIVE = ("kl_coef", "vf_coef", "ent_coef", "weight_decay")
_OPTIONAL_POSITIVE = ("cliprange_value", "max_grad_norm", "cliprange_high")
_BOOLS = ("adaptive_kl", "whiten_rewards", "whiten_advantages", "fused_activations", "progress", "dynamic_sampling",
          "use_bias_correction_kl", "gradient_checkpointing", "apply_chat_template")


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
    choices = (("kl_estimator", KL_ESTIMATORS), ("dtype", tuple(DTYPES)), ("value_model", VALUE_MODELS),
               ("distributed", DISTRIBUTED),
               ("stop_token", STOP_TOKENS), ("advantage_estimator", ADVANTAGE_ESTIMATORS),
               ("kl_placement", KL_PLACEMENTS), ("loss_type", tuple(LOSS_TYPES)), ("scale_rewards", (None,) + GRPO_SCALES))
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
    _check_estimator(config)


def _check_estimator(config: PPOConfig) -> None:
    """The settings of unit 6: groups, the estimator, the KL placement."""
    estimator, G = config.advantage_estimator, config.num_generations
    if config.batch_size % G:
        raise ValueError(f"batch_size ({config.batch_size}) must be a multiple of num_generations ({G}): it counts "
                         f"responses, {G} per prompt")
    if estimator in GROUP_ESTIMATORS and G < 2:
        raise ValueError(f"advantage_estimator={estimator!r} takes its baseline from the other responses to the same "
                         f"prompt: num_generations must be >= 2, got {G}")
    if config.kl_placement == "reward" and config.kl_estimator not in PER_TOKEN_KL:
        raise ValueError(f"kl_estimator={config.kl_estimator!r} is biased as a reward; in the reward use one of "
                         f"{PER_TOKEN_KL}, or set kl_placement='loss' (where k2 gives the gradient of KL(pi || pi_ref))")
    if config.use_bias_correction_kl and config.kl_placement != "loss":
        raise ValueError("use_bias_correction_kl weights the KL term of the loss: set kl_placement='loss'")
    if config.scale_rewards is not None and estimator not in ("grpo", "dr_grpo"):
        raise ValueError(f"scale_rewards applies to advantage_estimator='grpo', not {estimator!r}")
    if estimator == "dr_grpo" and config.scale_rewards not in (None, "none"):
        raise ValueError(f"advantage_estimator='dr_grpo' is GRPO without scaling: scale_rewards must be None or "
                         f"'none', got {config.scale_rewards!r} (or use advantage_estimator='grpo')")
    if config.dynamic_sampling and estimator not in GROUP_ESTIMATORS:
        raise ValueError(f"dynamic_sampling drops groups whose scores tie: it needs a group estimator "
                         f"{GROUP_ESTIMATORS}, got advantage_estimator={estimator!r}")
    if config.whiten_rewards and estimator in GROUP_ESTIMATORS:
        raise ValueError(f"whiten_rewards scales per-token rewards, which advantage_estimator={estimator!r} does not "
                         "use (it scores whole responses): set whiten_rewards=False")


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


# ------------------------------------------------------------------------ TRL-style aliases
def _with_trl_names(cls):
    """Let ``cls`` take and answer TRL's names for fields that mean the same as ours (``beta`` is
    ``kl_coef`` ...): constructor keywords, ``from_dict`` / ``replace`` keys and properties that
    read and write our field. The dataclass keeps one field per setting (``to_dict`` gives our
    names), so a checkpoint or a run file of any of the configs builds a :class:`PPOConfig`."""
    init = cls.__init__

    def translate(values: dict) -> dict:
        values = dict(values)
        for trl_name, ours in cls.TRL_NAMES.items():
            if trl_name in values:
                value = values.pop(trl_name)
                if ours in values and values[ours] != value:
                    raise ValueError(f"{trl_name} is {ours}: give one of them, not both ({value!r} and {values[ours]!r})")
                values[ours] = value
        return values

    def __init__(self, *args, **kwargs):
        init(self, *args, **translate(kwargs))

    __init__.__doc__ = init.__doc__
    cls.__init__ = __init__
    cls._translate = staticmethod(translate)
    for trl_name, ours in cls.TRL_NAMES.items():
        setattr(cls, trl_name, property(lambda self, f=ours: getattr(self, f),
                                        lambda self, value, f=ours: setattr(self, f, value),
                                        doc=f"TRL's name for :attr:`{ours}`."))
    return cls


@_with_trl_names
@dataclass
class GRPOConfig(PPOConfig):
    r""":class:`PPOConfig` with the defaults of TRL's ``GRPOConfig`` and its names: a TRL recipe
    carries over with little change, and :class:`~rlhf_lab.ppo.PPOTrainer` runs it.

    GRPO (Shao et al. 2024): ``num_generations`` responses per prompt, advantages from the group
    (:func:`rlhf_lab.advantages.grpo_advantages`), no critic, the k3 KL in the loss, token means
    over the batch (``loss_type="dapo"``, TRL's default), one optimizer pass per batch.

    TRL's names, each the same setting as ours: ``beta`` = ``kl_coef``, ``epsilon`` =
    ``cliprange``, ``epsilon_high`` = ``cliprange_high``, ``num_iterations`` (:math:`\mu`) =
    ``num_ppo_epochs``, ``max_completion_length`` = ``response_length``; ``num_generations``,
    ``loss_type``, ``scale_rewards``, ``use_bias_correction_kl``, ``temperature``,
    ``learning_rate``, ``max_grad_norm`` and ``seed`` are TRL's names already. ``batch_size``
    counts completions per iteration, as TRL's generation batch does.

    Defaults that differ from TRL's, and why: ``response_length`` 32 (TRL 512: ours suits the
    CPU-sized models of the course); ``seed`` 0 (TRL 42); ``dtype="float32"`` (TRL turns on bf16:
    exact and CPU-friendly here; ``dtype="bfloat16"`` on a GPU); ``scale_rewards=None``, which
    means ``"group"`` for ``"grpo"`` as TRL's default and ``"none"`` for ``"dr_grpo"``; the reference
    is kept at ``beta = 0`` too (TRL drops it), because ``objective/kl`` is always reported.
    """

    TRL_NAMES = {"beta": "kl_coef", "epsilon": "cliprange", "epsilon_high": "cliprange_high",
                 "num_iterations": "num_ppo_epochs", "max_completion_length": "response_length"}

    advantage_estimator: str = "grpo"
    num_generations: int = 8
    kl_coef: float = 0.0
    kl_placement: str = "loss"
    kl_estimator: str = "k3"
    use_bias_correction_kl: bool = True
    loss_type: str = "dapo"
    num_ppo_epochs: int = 1
    whiten_advantages: bool = False
    learning_rate: float = 1e-6
    adam_eps: float = 1e-8
    temperature: float = 1.0


@_with_trl_names
@dataclass
class RLOOConfig(PPOConfig):
    r""":class:`PPOConfig` with the defaults of TRL's ``RLOOConfig`` and its names.

    RLOO (Ahmadian et al. 2024): ``num_generations`` responses per prompt, the leave-one-out
    baseline (:func:`rlhf_lab.advantages.rloo_advantages`), no critic, the KL in the reward (each
    response's :math:`-\beta\sum_t \hat k_t` with k1 joins its score before the baseline, as in
    TRL), one optimizer pass per batch. Names as in :class:`GRPOConfig` (``beta``, ``epsilon``,
    ``epsilon_high``, ``num_iterations``, ``max_completion_length``).

    Defaults that differ from TRL's, and why: the loss. TRL's RLOO clips one ratio per response
    (the product over its tokens) and averages over responses; here every token has its ratio and
    ``loss_type="dr_grpo"`` sums a response's tokens and divides by a constant. With one pass per
    batch (``num_iterations=1``, where clipping never acts) the two gradients point the same way
    and differ by the constant ``response_length``. ``response_length``, ``seed`` and ``dtype``
    as in :class:`GRPOConfig`. TRL's ``normalize_advantages`` (off by default) normalizes over
    responses; ``whiten_advantages`` (off here too) normalizes over tokens.
    """

    TRL_NAMES = GRPOConfig.TRL_NAMES

    advantage_estimator: str = "rloo"
    num_generations: int = 2
    kl_coef: float = 0.05
    kl_placement: str = "reward"
    kl_estimator: str = "k1"
    loss_type: str = "dr_grpo"
    num_ppo_epochs: int = 1
    whiten_advantages: bool = False
    learning_rate: float = 1e-6
    adam_eps: float = 1e-8
    temperature: float = 1.0
