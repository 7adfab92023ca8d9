"""PPO for any transformers causal LM (unit 5): :class:`PPOConfig` and :class:`PPOTrainer`.

.. code-block:: python

    from rlhf_lab.ppo import PPOConfig, PPOTrainer
    trainer = PPOTrainer(policy, tokenizer, reward, PPOConfig(batch_size=16, kl_coef=0.05))
    metrics = trainer.train(prompts, iterations=50)     # one dict per iteration
    trainer.save("run.pt"); trainer = PPOTrainer.load("run.pt", policy, tokenizer, reward)
    # unit 6: the same trainer without a critic (GRPO, RLOO, Dr. GRPO, REINFORCE++)
    trainer = PPOTrainer(policy, tokenizer, reward, GRPOConfig(batch_size=32, num_generations=8, beta=0.04))

Modules: ``config`` (the dataclass, one docstring per field), ``trainer`` (the iteration, as the
numbered steps of its algorithm box), ``rollout`` (sampling with the KV cache), ``modeling``
(trunk/head split, value heads and value models), ``metrics`` (the metric names, in TRL's
namespaces), ``checkpoint`` (atomic files, random states), ``rewards`` (toy reward functions),
``__main__`` (the ``rlhf-ppo`` command line).
"""

from .config import GRPOConfig, PPOConfig, RLOOConfig
from .trainer import PPOTrainer

__all__ = ["GRPOConfig", "PPOConfig", "PPOTrainer", "RLOOConfig"]
