"""PPOConfig: every hyper-parameter of one PPO run in one dataclass (unit 5).

Where a field means what a field of TRL's ``PPOConfig`` means it has TRL's name (``kl_coef`` is
the course's :math:`\\beta`, ``cliprange`` its :math:`\\varepsilon`, ``gamma``/``lam`` the GAE
:math:`\\gamma, \\lambda`), so a TRL recipe carries over field by field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

_DTYPES = ("float32", "bfloat16", "float16")
_KL_ESTIMATORS = ("k1", "k3")


@dataclass
class PPOConfig:
    r"""Hyper-parameters of :class:`rlhf_lab.ppo.PPOTrainer`.

    One iteration samples ``batch_size`` responses (one per prompt), scores them and runs
    ``num_ppo_epochs`` passes over the batch in ``num_mini_batches`` minibatches, each split into
    ``gradient_accumulation_steps`` micro-batches whose gradients add up to exactly the
    minibatch's gradient.

    Rewards and KL (unit 5). The per-token reward is

    .. math::
        r_t = -\beta\,\hat k(\log\pi_{\text{old}}(y_t\mid s_t), \log\pi_{\text{ref}}(y_t\mid s_t))
              + [t = T_{\text{last}}]\; r(x, y)

    with :math:`\hat k` the ``kl_estimator`` (``"k1"``: :math:`\log\pi-\log\pi_{\text{ref}}`,
    ``"k3"``: :math:`(\rho-1)-\log\rho`, :math:`\rho=\pi_{\text{ref}}/\pi`) and
    :math:`\beta` = ``kl_coef`` (fixed) or adapted towards ``kl_target`` over ``kl_horizon``
    episodes when ``adaptive_kl`` (Ziegler et al. 2019).

    Losses. ``cliprange`` is the :math:`\varepsilon` of the clipped surrogate,
    ``cliprange_value`` the clip of the value update (``None``: unclipped value loss),
    ``vf_coef`` the weight :math:`c_V` of the value loss and ``ent_coef`` an optional entropy
    bonus: :math:`L = L^{\text{clip}} + c_V L^V - c_H H`.

    Sampling. ``temperature`` :math:`T_s` scales the logits for sampling *and* whenever
    log-probabilities are recomputed (policy and reference). Sampling stops at ``stop_token``
    (``"eos"``: the tokenizer's EOS, or ``stop_token_id``; ``None``: always
    ``response_length`` tokens). ``missing_eos_penalty`` is subtracted from the score of a
    response that never emitted the stop token.

    Values. ``value_model="shared"`` (the default) puts a zero-initialized linear value head on
    the policy's own trunk: one forward gives logits and values, the cheapest choice (CleanRL's
    A2C-style ``pg + c_V·vf`` loss). ``"separate"`` builds a value model from a copy of the
    starting policy's trunk (more memory, no interference between the two losses; what TRL and
    Ziegler et al. do). Passing ``value_model=`` to the trainer overrides both.

    Precision and devices. ``dtype`` ``"bfloat16"``/``"float16"`` runs forwards under
    ``torch.autocast`` (parameters and optimizer stay float32; float16 adds a gradient
    scaler). ``device=None`` picks CUDA when available. ``seed`` makes a CPU run repeat exactly.
    ``recompute_logprobs=None`` takes the old log-probs from the sampling pass in float32 and
    recomputes them with one forward under autocast (so that the first PPO ratio is exactly 1).

    Speed. ``fused_activations`` replaces, in every model given to the trainer, transformers'
    Python-level tanh-GELU (GPT-2's ``gelu_new``) by torch's fused kernel for the same function
    (:func:`rlhf_lab.ppo.modeling.fuse_tanh_gelu`; outputs agree to float32 rounding).
    """

    # batch and optimisation
    batch_size: int = 16
    num_mini_batches: int = 1
    gradient_accumulation_steps: int = 1
    num_ppo_epochs: int = 4
    learning_rate: float = 1e-5
    adam_eps: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: Optional[float] = 1.0
    # sampling
    response_length: int = 32
    temperature: float = 0.7
    stop_token: Optional[str] = "eos"
    stop_token_id: Optional[int] = None
    missing_eos_penalty: Optional[float] = None
    # reward shaping and KL control
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    adaptive_kl: bool = False
    kl_target: float = 6.0
    kl_horizon: int = 10000
    whiten_rewards: bool = False
    whiten_advantages: bool = True
    # PPO losses and GAE
    cliprange: float = 0.2
    cliprange_value: Optional[float] = 0.2
    vf_coef: float = 0.1
    ent_coef: float = 0.0
    gamma: float = 1.0
    lam: float = 0.95
    # models
    value_model: str = "shared"
    recompute_logprobs: Optional[bool] = None
    fused_activations: bool = True
    # run
    seed: int = 0
    device: Optional[str] = None
    dtype: str = "float32"
    progress: bool = True
    log_dir: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_mini_batches", "gradient_accumulation_steps", "num_ppo_epochs",
                     "response_length", "kl_horizon"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        per_update = self.num_mini_batches * self.gradient_accumulation_steps
        if self.batch_size % per_update:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by num_mini_batches × "
                f"gradient_accumulation_steps ({self.num_mini_batches} × {self.gradient_accumulation_steps})"
            )
        for name in ("learning_rate", "temperature", "cliprange", "adam_eps", "kl_target"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("kl_coef", "vf_coef", "ent_coef", "weight_decay"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={self.gamma}, lam={self.lam}")
        if self.cliprange_value is not None and not self.cliprange_value > 0:
            raise ValueError(f"cliprange_value must be > 0 or None, got {self.cliprange_value!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.kl_estimator not in _KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {_KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.value_model not in ("shared", "separate"):
            raise ValueError(f"value_model must be 'shared' or 'separate', got {self.value_model!r}")
        if self.adaptive_kl and self.batch_size >= 5 * self.kl_horizon:
            raise ValueError(
                f"kl_horizon ({self.kl_horizon}) must exceed batch_size / 5 ({self.batch_size / 5:g}) for the "
                "adaptive KL rule: one update of a full batch could otherwise drive beta to 0 or below"
            )
        if self.stop_token not in (None, "eos"):
            raise ValueError(f"stop_token must be 'eos' or None, got {self.stop_token!r}")

    @property
    def mini_batch_size(self) -> int:
        return self.batch_size // self.num_mini_batches

    @property
    def micro_batch_size(self) -> int:
        return self.mini_batch_size // self.gradient_accumulation_steps

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
