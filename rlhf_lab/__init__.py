"""rlhf_lab: the policy-optimization half of RLHF as small, tested PyTorch functions.

Modules (each teaches one piece of the course):

- ``divergence``      unit 1-2: the log-probability penalty and KL estimators
- ``logprobs``        unit 2: per-token log-probabilities of a response under a causal LM
- ``advantages``      unit 3/5: discounted returns, GAE, whitening
- ``objectives``      unit 3-5: policy-gradient objective, RLHF loss, PPO clip and value losses
- ``optimal_policy``  unit 4: the closed-form optimum of the KL-regularized objective
- ``kl_control``      unit 5: fixed and adaptive KL coefficients
- ``derivations``     every derivation of the course, verified step by step with sympy
- ``ppo``             a PPO trainer for any transformers causal LM
- ``models``          tiny offline models and tokenizers, and SmolLM2-135M-Instruct loading
- ``exercises``       auto-checkers and static quizzes used by the notebooks

Submodules are imported on demand so that ``import rlhf_lab`` stays cheap.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "divergence", "logprobs", "advantages", "objectives", "optimal_policy", "kl_control",
    "derivations", "ppo", "models", "exercises", "masked", "utils", "plotting", "widgets", "sft", "reward_model",
    "tabular", "bandits", "toy_domain",
}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'rlhf_lab' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
