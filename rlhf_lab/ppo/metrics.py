"""The names of the PPO trainer's metrics, in TRL's namespaces, and the flat names they replace.

One dict of metrics per iteration (:meth:`rlhf_lab.ppo.PPOTrainer.step`). The keys follow TRL's
PPO trainer (``objective/*`` for what the run optimizes, ``policy/*`` and ``val/*`` for the
update's diagnostics, ``loss/*``, ``time/*``) without TRL's ``_avg`` suffix: every update
statistic here is a mean over the iteration's minibatch steps.

The flat names of release 0.1 (``reward``, ``kl``, ``clipfrac`` ...) stay readable for one
release: a :class:`Metrics` dict answers them, and so does a row read back from an old log
(:func:`rlhf_lab.plotting.load_metrics`). Logs and checkpoints store the new names only.
"""

from __future__ import annotations

from typing import Any, Dict

#: new name -> the flat name it had in release 0.1 (readable until release 0.3)
LEGACY_NAMES: Dict[str, str] = {
    "objective/scores": "reward",
    "objective/scores_std": "reward_std",
    "objective/kl": "kl",
    "objective/kl_coef": "kl_coef",
    "objective/non_score_reward": "non_score_reward",
    "objective/rlhf_reward": "rlhf_reward",
    "policy/entropy": "entropy",
    "policy/clipfrac": "clipfrac",
    "policy/approxkl": "approx_kl",
    "policy/grad_norm": "grad_norm",
    "loss/entropy": "entropy_update",
    "val/ratio": "ratio",
    "val/clipfrac": "value_clipfrac",
    "val/explained_variance": "explained_variance",
    "completions/mean_length": "response_length",
    "completions/eos_fraction": "eos_fraction",
    "time/episodes_per_second": "episodes_per_second",
    "time/tokens_per_second": "tokens_per_second",
}
CURRENT_NAMES: Dict[str, str] = {old: new for new, old in LEGACY_NAMES.items()}

#: what each metric means (the docstring of :meth:`rlhf_lab.ppo.PPOTrainer.step` lists these)
DESCRIPTIONS: Dict[str, str] = {
    "iteration": "the iteration's number, from 1",
    "objective/scores": "mean score r(x, y) of the batch",
    "objective/scores_std": "standard deviation of the scores",
    "objective/kl": "mean over responses of sum_t log pi_old - log pi_ref (nats per response)",
    "objective/kl_coef": "the beta used in this iteration's rewards",
    "objective/non_score_reward": "mean over responses of sum_t -beta k_t",
    "objective/rlhf_reward": "mean over responses of sum_t r_t (score, missing-EOS penalty and KL part)",
    "policy/entropy": "entropy per token of the sampling distribution, at the sampling temperature",
    "policy/clipfrac": "share of tokens where the clipped surrogate is the larger term",
    "policy/approxkl": "k3 estimate of KL(pi_old || pi_theta) during the update",
    "policy/grad_norm": "global gradient norm before clipping (policy and value parameters)",
    "loss/policy": "clipped surrogate loss",
    "loss/value": "value loss (only with a critic: advantage_estimator='gae')",
    "loss/kl": "the KL term of the loss, mean of k_t reduced as loss_type (only with kl_placement='loss')",
    "loss/entropy": "entropy per token during the update (only with ent_coef > 0)",
    "loss/total": "L = L^clip + c_V L^V - c_H H",
    "val/ratio": "mean probability ratio pi_theta / pi_old during the update",
    "val/clipfrac": "share of tokens where the clipped value error is the larger term (TRL's vf_clipfrac)",
    "val/explained_variance": "1 - Var(R - V) / Var(R) of the rollout's values (only with a critic)",
    "objective/frac_reward_zero_std": "share of responses whose group of num_generations scores all tie (advantage 0)",
    "val/whitened": "1 if the batch was whitened as configured, 0 if it had fewer than 2 real tokens",
    "completions/mean_length": "mean response length in tokens",
    "completions/eos_fraction": "share of responses that emitted the stop token",
    "time/episodes_per_second": "responses per second of wall time (rollout to update)",
    "time/tokens_per_second": "response tokens per second of wall time",
    "time/rollout": "seconds sampling",
    "time/score": "seconds scoring, reference forward, rewards and advantages",
    "time/update": "seconds in the PPO update",
    "time/iteration": "seconds for the whole iteration",
}


class Metrics(dict):
    """A dict of one iteration's metrics that also answers the flat names of release 0.1
    (``m["kl"]`` is ``m["objective/kl"]``), and an old row's new names. Iterating, ``len`` and
    ``json.dumps`` see the stored keys only."""

    def _other_name(self, key: Any):
        return CURRENT_NAMES.get(key) or LEGACY_NAMES.get(key)

    def __missing__(self, key):
        other = self._other_name(key)
        if other is not None and dict.__contains__(self, other):
            return dict.__getitem__(self, other)
        raise KeyError(key)

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or dict.__contains__(self, self._other_name(key))

    def get(self, key, default=None):
        return self[key] if key in self else default
