"""rlhf_lab: the policy-optimization half of RLHF as small, tested PyTorch functions.

The library (torch and transformers only):

- ``masked``          masked reductions and the input checks every function shares
- ``divergence``      units 1-2: the log-probability penalty, per-token KL estimators, exact KL
- ``logprobs``        unit 2: the batch layout and per-token log-probabilities under a causal LM
- ``advantages``      units 3, 5, 6: discounted returns, GAE, whitening, RLOO/GRPO/REINFORCE++ advantages
- ``objectives``      units 3-6: policy-gradient objective, A2C, RLHF, PPO clip, value and DPO losses,
                      the KL in the loss, loss aggregations
- ``optimal_policy``  unit 4: the closed-form optimum of the KL-regularized objective
- ``kl_control``      unit 5: fixed and adaptive KL coefficients
- ``sft``             unit 5: supervised fine-tuning on (prompt, response) demonstrations
- ``reward_model``    unit 5: Bradley-Terry reward models and scoring with a one-label model
- ``ppo``             units 5-6: the trainer for any transformers causal LM (``PPOConfig``, ``PPOTrainer``;
                      ``GRPOConfig``, ``RLOOConfig`` for the critic-free estimators)
- ``dpo``             unit 6: DPO, cDPO and IPO on preference pairs for any causal LM
- ``plotting``        the training dashboard (needs matplotlib)
- ``utils``           seeds, devices, eval mode

For the course (the ``course`` extra: sympy, matplotlib, ipywidgets):

- ``derivations``     every derivation of the course, verified step by step with sympy
- ``course``          exercises, widgets, toy problems and tiny offline models

The module map, with what each module holds, is the book's library page (``book/library.md``).
Submodules are imported on demand, so ``import rlhf_lab`` stays cheap.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "masked", "divergence", "logprobs", "advantages", "objectives", "optimal_policy", "kl_control",
    "sft", "reward_model", "ppo", "dpo", "plotting", "utils", "derivations", "course",
}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'rlhf_lab' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
