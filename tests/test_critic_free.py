"""Unit 6's pure functions (critic-free estimators, loss aggregation, the KL in the loss,
clip-higher) against independent computations: plain loops, exact enumeration over a small
vocabulary or bandit, autograd of exact divergences, and finite differences."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
import torch

from rlhf_lab.advantages import (
    discounted_returns,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
    tied_groups,
)
from rlhf_lab.divergence import categorical_kl
from rlhf_lab.objectives import (
    aggregate_loss,
    clipped_surrogate,
    dpo_loss,
    kl_penalty,
    micro_batch_share,
    ppo_clip_loss,
)

F64 = torch.float64


def _scores(B, seed):
    return torch.randn(B, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --------------------------------------------------------------------------- RLOO
@pytest.mark.parametrize("G, groups, seed", [(2, 3, 0), (3, 2, 1), (5, 4, 2), (8, 1, 3)])
def test_rloo_is_the_leave_one_out_loop_and_the_scaled_centring(G, groups, seed):
    r = _scores(G * groups, seed)
    got = rloo_advantages(r, G)
    for k in range(groups):
        row = r[k * G:(k + 1) * G].tolist()
        for i in range(G):
            others = [row[j] for j in range(G) if j != i]
            assert float(got[k * G + i]) == pytest.approx(row[i] - sum(others) / (G - 1), abs=1e-12)
            # the identity A_i = G/(G-1) (r_i - mean)
            assert float(got[k * G + i]) == pytest.approx(G / (G - 1) * (row[i] - statistics.fmean(row)), abs=1e-12)


def _bandit_gradient(probs_logits, reward, G, advantage_fn):
    """Exact E[(1/G) sum_i A_i grad log pi(a_i)] over all K^G draws of a group (enumeration)."""
    K = probs_logits.shape[0]
    logp = torch.log_softmax(probs_logits, -1)
    p = logp.exp().detach()
    total = torch.zeros(K, dtype=F64)
    for draw in itertools.product(range(K), repeat=G):
        weight = math.prod(float(p[a]) for a in draw)
        adv = advantage_fn(reward[list(draw)], G)
        # grad of log softmax at arm a: e_a - p
        for i, a in enumerate(draw):
            total += weight * float(adv[i]) * (torch.nn.functional.one_hot(torch.tensor(a), K).to(F64) - p) / G
    return total


@pytest.mark.parametrize("G", [2, 3])
def test_rloo_is_unbiased_by_exact_enumeration_and_the_plain_group_mean_is_not(G):
    logits = torch.tensor([0.3, -0.5, 1.1], dtype=F64)
    reward = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    z = logits.clone().requires_grad_(True)
    (torch.softmax(z, -1) * reward).sum().backward()  # the true gradient of J = E[r]
    true = z.grad
    got = _bandit_gradient(logits, reward, G, rloo_advantages)
    torch.testing.assert_close(got, true, rtol=1e-10, atol=1e-12)
    # with the group mean (the sample itself inside its baseline) the gradient shrinks by (G-1)/G
    centred = _bandit_gradient(logits, reward, G, lambda r, g: grpo_advantages(r, g, scale="none"))
    torch.testing.assert_close(centred, true * (G - 1) / G, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- GRPO / Dr. GRPO
@pytest.mark.parametrize("G, groups, seed", [(2, 2, 0), (4, 3, 1), (8, 4, 2)])
@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_grpo_against_a_plain_per_group_loop(G, groups, seed, eps):
    r = _scores(G * groups, seed)
    flat = r.tolist()
    batch_sd = statistics.stdev(flat)
    by_scale = {s: grpo_advantages(r, G, scale=s, eps=eps) for s in ("group", "batch", "none")}
    for k in range(groups):
        row = flat[k * G:(k + 1) * G]
        mu, sd = statistics.fmean(row), statistics.stdev(row)
        for i in range(G):
            j = k * G + i
            assert float(by_scale["group"][j]) == pytest.approx((row[i] - mu) / (sd + eps), rel=1e-10)
            assert float(by_scale["batch"][j]) == pytest.approx((row[i] - mu) / (batch_sd + eps), rel=1e-10)
            assert float(by_scale["none"][j]) == pytest.approx(row[i] - mu, abs=1e-12)


def test_tied_groups_give_exactly_zero_and_are_reported():
    # 0.1 three times: a float mean of equal numbers need not equal them
    r = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 3.0, 7.0, 7.0, 7.0], dtype=torch.float32)
    for adv in (rloo_advantages(r, 3), grpo_advantages(r, 3), grpo_advantages(r, 3, scale="none"),
                grpo_advantages(r, 3, scale="batch")):
        assert adv[:3].tolist() == [0.0, 0.0, 0.0] and adv[6:].tolist() == [0.0, 0.0, 0.0]
        assert bool((adv[3:6] != 0).all())
    assert tied_groups(r, 3).tolist() == [True] * 3 + [False] * 3 + [True] * 3
    assert float(tied_groups(r, 3).float().mean()) == pytest.approx(2 / 3)  # frac_reward_zero_std


def test_grpo_weights_a_bernoulli_prompt_by_one_over_its_spread():
    """Dividing by the group's spread gives a prompt of success rate p the weight 1/sqrt(p(1-p))
    (population std; torch.std is Bessel-corrected, hence the factor sqrt((G-1)/G))."""
    G = 8
    for successes in (1, 2, 4, 6):
        r = torch.tensor([1.0] * successes + [0.0] * (G - successes), dtype=F64)
        p = successes / G
        ratio = grpo_advantages(r, G, eps=0.0) / grpo_advantages(r, G, scale="none")
        expected = 1 / math.sqrt(p * (1 - p)) * math.sqrt((G - 1) / G)
        torch.testing.assert_close(ratio, torch.full((G,), expected, dtype=F64))


# --------------------------------------------------------------------------- REINFORCE++
def test_reinforce_pp_is_returns_whitened_over_the_batchs_real_tokens():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 5, generator=g, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=F64)
    rewards[mask == 0] = float("nan")
    gamma = 0.9
    returns = {}
    for b in range(3):
        row = [float(rewards[b, t]) for t in range(5) if mask[b, t]]
        for t in range(len(row)):
            returns[b, t] = sum(gamma ** (k - t) * row[k] for k in range(t, len(row)))
    mu, var = statistics.fmean(returns.values()), statistics.pvariance(returns.values())
    got = reinforce_pp_advantages(rewards, mask, gamma=gamma)
    raw = reinforce_pp_advantages(rewards, mask, gamma=gamma, normalize=False)
    for b in range(3):
        for t in range(5):
            if mask[b, t]:
                assert float(raw[b, t]) == pytest.approx(returns[b, t], rel=1e-12)
                # whiten() uses the Bessel-corrected variance over real tokens
                n = len(returns)
                assert float(got[b, t]) == pytest.approx((returns[b, t] - mu) / math.sqrt(var * n / (n - 1)), rel=1e-6)
            else:
                assert float(got[b, t]) == 0.0
    torch.testing.assert_close(raw, discounted_returns(rewards, gamma, mask))


# --------------------------------------------------------------------------- errors of the estimators
@pytest.mark.parametrize("call, word", [
    (lambda: rloo_advantages(torch.zeros(4), 1), "group_size"),
    (lambda: grpo_advantages(torch.zeros(4), 1), "group_size"),
    (lambda: rloo_advantages(torch.zeros(5), 2), "group_size"),
    (lambda: rloo_advantages(torch.zeros(4), True), "group_size"),
    (lambda: rloo_advantages(torch.zeros(4), 2.0), "group_size"),
    (lambda: rloo_advantages(torch.zeros(2, 2), 2), "scores"),
    (lambda: rloo_advantages(torch.zeros(4, dtype=torch.long), 2), "scores"),
    (lambda: grpo_advantages(torch.tensor([0.0, float("nan")]), 2), "scores"),
    (lambda: grpo_advantages(torch.zeros(4), 2, scale="std"), "scale"),
    (lambda: grpo_advantages(torch.zeros(4), 2, eps=-1.0), "eps"),
    (lambda: tied_groups(torch.zeros(3), 2), "group_size"),
])
def test_estimators_name_the_bad_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()


# --------------------------------------------------------------------------- loss aggregation
def _ragged(seed, lengths=(5, 2, 3), T=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), T, generator=g, dtype=F64)
    mask = torch.zeros(len(lengths), T, dtype=F64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    x[mask == 0] = float("nan")
    return x, mask, lengths


def test_aggregations_against_loops():
    x, mask, lengths = _ragged(0)
    rows = [[float(x[b, t]) for t in range(n)] for b, n in enumerate(lengths)]
    B, L_max = len(rows), 8
    assert float(aggregate_loss(x, mask, "grpo")) == pytest.approx(sum(sum(r) / len(r) for r in rows) / B, rel=1e-12)
    token_mean = sum(sum(r) for r in rows) / sum(lengths)
    assert float(aggregate_loss(x, mask, "dapo")) == pytest.approx(token_mean, rel=1e-12)
    assert float(aggregate_loss(x, mask, "bnpo")) == pytest.approx(token_mean, rel=1e-12)
    # Dr. GRPO: a sum over every real token divided by a constant
    total = 0.0
    for r in rows:
        for v in r:
            total += v
    assert float(aggregate_loss(x, mask, "dr_grpo", max_length=L_max)) == pytest.approx(total / (B * L_max), rel=1e-12)


def test_the_length_weighting_each_aggregation_gives_a_token():
    """The gradient of the loss with respect to a token's loss is the weight that token gets:
    1/(B L_i) under "grpo" (a short response's tokens weigh more), 1/sum L under "dapo",
    1/(B L_max) under "dr_grpo" (every token alike)."""
    _, mask, lengths = _ragged(1)
    B, L_max = len(lengths), 10
    expected = {"grpo": lambda b: 1 / (B * lengths[b]), "dapo": lambda b: 1 / sum(lengths),
                "dr_grpo": lambda b: 1 / (B * L_max)}
    for loss_type, weight in expected.items():
        per_token = torch.zeros(mask.shape, dtype=F64, requires_grad=True)
        aggregate_loss(per_token, mask, loss_type, max_length=L_max).backward()
        for b in range(B):
            for t in range(mask.shape[1]):
                want = weight(b) if mask[b, t] else 0.0
                assert float(per_token.grad[b, t]) == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "bnpo", "dr_grpo"])
def test_micro_batch_shares_add_up_to_the_batch_loss(loss_type):
    x, mask, _ = _ragged(2, lengths=(5, 2, 3, 6, 1, 4))
    whole = aggregate_loss(x, mask, loss_type, max_length=6)
    parts = sum(micro_batch_share(mask[i:i + 2], mask, loss_type)
                * aggregate_loss(x[i:i + 2], mask[i:i + 2], loss_type, max_length=6) for i in (0, 2, 4))
    assert float(parts) == pytest.approx(float(whole), rel=1e-12)


@pytest.mark.parametrize("call, word", [
    (lambda: aggregate_loss(torch.zeros(2, 3), None, "sum"), "loss_type"),
    (lambda: aggregate_loss(torch.zeros(2, 3), None, "dr_grpo"), "max_length"),
    (lambda: aggregate_loss(torch.zeros(2, 3), None, "dr_grpo", max_length=2), "max_length"),
    (lambda: aggregate_loss(torch.zeros(2, 3), torch.tensor([[1.0, 1, 0], [0, 0, 0]]), "grpo"), "mask"),
    (lambda: aggregate_loss(torch.zeros(2, 3), torch.ones(3, 2), "dapo"), "mask"),
    (lambda: aggregate_loss(torch.tensor([[float("nan")]]), None, "dapo"), "per_token"),
    (lambda: micro_batch_share(torch.ones(1, 2), torch.ones(2, 2), "mean"), "loss_type"),
])
def test_aggregation_names_the_bad_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()


# --------------------------------------------------------------------------- the KL in the loss
def _expected_kl_gradient(z, ref_logits, kind, ratio):
    """E_{y ~ pi}[grad of the KL term at y], by enumerating the vocabulary (pi = softmax(z))."""
    V = z.shape[0]
    p = torch.softmax(z, -1).detach()
    grad = torch.zeros(V, dtype=F64)
    ref_logp = torch.log_softmax(ref_logits, -1)
    for y in range(V):
        zz = z.detach().clone().requires_grad_(True)
        logp = torch.log_softmax(zz, -1)
        old = logp.detach() if ratio else None
        term = kl_penalty(logp[[y]].view(1, 1), ref_logp[[y]].view(1, 1), kind,
                          old_logp=None if old is None else old[[y]].view(1, 1))
        term.sum().backward()
        grad += p[y] * zz.grad
    return grad


def _divergence_gradient(z, ref_logits, reverse):
    zz = z.detach().clone().requires_grad_(True)
    kl = categorical_kl(zz, ref_logits) if reverse else categorical_kl(ref_logits, zz)
    kl.backward()
    return zz.grad


@pytest.mark.parametrize("seed, V", [(0, 2), (1, 3), (2, 5)])
def test_kl_in_the_loss_gradients_by_exact_enumeration(seed, V):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(V, generator=g, dtype=F64) * 1.5
    ref = torch.randn(V, generator=g, dtype=F64) * 1.5
    reverse, forward = _divergence_gradient(z, ref, True), _divergence_gradient(z, ref, False)
    assert float(reverse.abs().max()) > 1e-3 and float((reverse - forward).abs().max()) > 1e-3
    close = dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_expected_kl_gradient(z, ref, "k1", False), torch.zeros(V, dtype=F64), **close)
    torch.testing.assert_close(_expected_kl_gradient(z, ref, "k2", False), reverse, **close)
    torch.testing.assert_close(_expected_kl_gradient(z, ref, "k3", False), forward, **close)
    # weighted by the importance ratio pi/pi_old (TRL's use_bias_correction_kl): the reverse KL
    torch.testing.assert_close(_expected_kl_gradient(z, ref, "k1", True), reverse, **close)
    torch.testing.assert_close(_expected_kl_gradient(z, ref, "k3", True), reverse, **close)


def test_kl_penalty_is_the_estimate_and_zero_at_padding():
    x, mask, _ = _ragged(3)
    ref = x.flip(0).nan_to_num(0.3)
    out = kl_penalty(x, ref, "k3", mask)
    for b in range(3):
        for t in range(6):
            if mask[b, t]:
                log_r = float(ref[b, t]) - float(x[b, t])
                assert float(out[b, t]) == pytest.approx(math.exp(log_r) - 1 - log_r, rel=1e-12)
            else:
                assert float(out[b, t]) == 0.0
    # the ratio's value is 1 when old_logp = logp: the same numbers
    torch.testing.assert_close(kl_penalty(x, ref, "k3", mask, old_logp=x), out, equal_nan=False)
    with pytest.raises(ValueError, match="kind"):
        kl_penalty(x, ref, "k4", mask)
    with pytest.raises(ValueError, match="ref_logp"):
        kl_penalty(x, ref[:2], "k1", mask)
    with pytest.raises(ValueError, match="old_logp"):
        kl_penalty(x, ref, "k1", mask, old_logp=torch.full_like(x, float("nan")))


# --------------------------------------------------------------------------- clip-higher
def _loop_clipped(logp, old, adv, lo, hi):
    ratio = math.exp(logp - old)
    if adv >= 0:
        return -adv * min(ratio, 1 + hi)
    return -adv * max(ratio, 1 - lo)


def test_asymmetric_clip_against_the_case_by_case_loop():
    g = torch.Generator().manual_seed(4)
    logp = torch.randn(4, 7, generator=g, dtype=F64) * 0.5
    old = logp + torch.randn(4, 7, generator=g, dtype=F64) * 0.4
    adv = torch.randn(4, 7, generator=g, dtype=F64)
    per_token, stats = clipped_surrogate(logp, old, adv, 0.2, clip_eps_high=0.28)
    clipped = 0
    for b in range(4):
        for t in range(7):
            want = _loop_clipped(float(logp[b, t]), float(old[b, t]), float(adv[b, t]), 0.2, 0.28)
            assert float(per_token[b, t]) == pytest.approx(want, rel=1e-12)
            clipped += want != pytest.approx(-float(adv[b, t]) * math.exp(float(logp[b, t] - old[b, t])), rel=1e-12)
    assert float(stats["clipfrac"]) == pytest.approx(clipped / 28)
    assert 0 < clipped < 28
    loss, _ = ppo_clip_loss(logp, old, adv, 0.2, clip_eps_high=0.28)
    assert float(loss) == pytest.approx(float(per_token.mean()), rel=1e-12)
    # a ratio of 1.25 with a positive advantage: clipped at 1.2 symmetrically, not with eps_high 0.28
    one = torch.zeros(1, 1, dtype=F64)
    up = torch.full((1, 1), math.log(1.25), dtype=F64)
    a = torch.ones(1, 1, dtype=F64)
    assert float(clipped_surrogate(up, one, a, 0.2)[0]) == pytest.approx(-1.2)
    assert float(clipped_surrogate(up, one, a, 0.2, clip_eps_high=0.28)[0]) == pytest.approx(-1.25)
    with pytest.raises(ValueError, match="clip_eps_high"):
        clipped_surrogate(up, one, a, 0.2, clip_eps_high=0.0)


def test_with_the_ratio_at_one_the_gradient_is_reinforce_with_the_baseline():
    """mu = 1: old = logp detached, so the ratio is 1, nothing is clipped and the gradient of the
    token-mean loss is -mean_t A_t grad log pi (finite differences on the logits)."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 4, generator=g, dtype=F64)
    tokens = torch.tensor([[0, 3, 1], [2, 2, 0]])
    adv = torch.randn(2, 3, generator=g, dtype=F64)

    def logp_of(lg):
        return torch.log_softmax(lg, -1).gather(-1, tokens[..., None])[..., 0]

    z = logits.clone().requires_grad_(True)
    lp = logp_of(z)
    loss, stats = ppo_clip_loss(lp, lp.detach(), adv, 0.2, clip_eps_high=0.28)
    loss.backward()
    assert float(stats["clipfrac"]) == 0.0 and float(stats["ratio_max"]) == 1.0
    h = 1e-6
    for idx in [(0, 0, 0), (0, 1, 3), (1, 2, 1), (1, 0, 2)]:
        bumped = logits.clone()
        bumped[idx] += h
        fd = float(-(adv * (logp_of(bumped) - logp_of(logits))).mean()) / h
        assert float(z.grad[idx]) == pytest.approx(fd, rel=1e-5, abs=1e-9)


# --------------------------------------------------------------------------- cDPO and IPO
def _loop_dpo(lc, lr, rc, rr, beta, eps, loss_type):
    total = 0.0
    for a, b, c, d in zip(lc, lr, rc, rr):
        h = (a - c) - (b - d)
        if loss_type == "ipo":
            total += (h - 1 / (2 * beta)) ** 2
        else:
            sig = 1 / (1 + math.exp(-beta * h))
            total += -(1 - eps) * math.log(sig) - eps * math.log(1 - sig)
    return total / len(lc)


@pytest.mark.parametrize("eps, loss_type", [(0.0, "sigmoid"), (0.1, "sigmoid"), (0.3, "sigmoid"), (0.0, "ipo")])
def test_dpo_variants_against_a_loop_and_finite_differences(eps, loss_type):
    g = torch.Generator().manual_seed(6)
    lc, lr, rc, rr = (torch.randn(5, generator=g, dtype=F64) * 2 for _ in range(4))
    beta = 0.3
    args = [t.tolist() for t in (lc, lr, rc, rr)]
    lcg = lc.clone().requires_grad_(True)
    loss = dpo_loss(lcg, lr, rc, rr, beta, label_smoothing=eps, loss_type=loss_type)
    assert float(loss.detach()) == pytest.approx(_loop_dpo(*args, beta, eps, loss_type), rel=1e-12)
    loss.backward()
    h = 1e-6
    for i in range(5):
        bumped = [list(a) for a in args]
        bumped[0][i] += h
        lo = [list(a) for a in args]
        lo[0][i] -= h
        fd = (_loop_dpo(*bumped, beta, eps, loss_type) - _loop_dpo(*lo, beta, eps, loss_type)) / (2 * h)
        assert float(lcg.grad[i]) == pytest.approx(fd, rel=1e-6, abs=1e-10)
    if loss_type == "sigmoid":  # log 2 at the reference, whatever the smoothing
        assert float(dpo_loss(rc, rr, rc, rr, beta, label_smoothing=eps)) == pytest.approx(math.log(2), rel=1e-12)


@pytest.mark.parametrize("kwargs, word", [
    (dict(label_smoothing=0.5), "label_smoothing"),
    (dict(label_smoothing=-0.1), "label_smoothing"),
    (dict(loss_type="hinge"), "loss_type"),
    (dict(loss_type="ipo", label_smoothing=0.1), "label_smoothing"),
])
def test_dpo_variants_name_the_bad_argument(kwargs, word):
    x = torch.zeros(2)
    with pytest.raises(ValueError, match=word):
        dpo_loss(x, x, x, x, 0.1, **kwargs)
