"""TreeMDP (unit 1's tabular toy) against independent computations: explicit loops over prefixes."""

import itertools
import math

import pytest
import torch

from rlhf_lab.course.tabular import TreeMDP, tabular_policy_from_probs


def _prefix_rows(tree):
    """Independent numbering of the prefixes: breadth first, lexicographic within a length."""
    rows, i = {}, 0
    for h in range(tree.horizon):
        for prefix in itertools.product(range(tree.n_actions), repeat=h):
            rows[prefix] = i
            i += 1
    return rows


def _loop_logprob(tree, logits, traj):
    rows = _prefix_rows(tree)
    total = 0.0
    for t, a in enumerate(traj):
        z = [float(v) for v in logits[rows[tuple(traj[:t])]]]
        m = max(z)
        lse = m + math.log(sum(math.exp(v - m) for v in z))
        total += z[a] - lse
    return total


@pytest.mark.parametrize("n_actions,horizon", [(2, 1), (3, 2), (2, 4), (4, 3)])
def test_sizes_and_indexing(n_actions, horizon):
    tree = TreeMDP(tuple("abcd"[:n_actions]), horizon)
    rows = _prefix_rows(tree)
    assert tree.n_states == len(rows)
    assert tree.n_trajectories == n_actions**horizon
    for prefix, row in rows.items():
        got = tree.state_index(torch.tensor([prefix], dtype=torch.long).reshape(1, len(prefix)))
        assert int(got) == row
    trajs = tree.trajectories()
    assert [tuple(r) for r in trajs.tolist()] == list(itertools.product(range(n_actions), repeat=horizon))


@pytest.mark.parametrize("n_actions,horizon", [(2, 1), (3, 2), (2, 4)])
def test_log_prob_matches_loop_and_probs_sum_to_one(n_actions, horizon):
    tree = TreeMDP(tuple("abcd"[:n_actions]), horizon)
    logits = tree.random_logits(scale=2.0, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logp = tree.log_prob(logits)
    for traj, lp in zip(tree.trajectories().tolist(), logp.tolist()):
        assert lp == pytest.approx(_loop_logprob(tree, logits, traj), abs=1e-10)
    assert float(tree.probs(logits).sum()) == pytest.approx(1.0, abs=1e-12)
    steps = tree.step_logprobs(logits, tree.trajectories())
    assert steps.shape == (tree.n_trajectories, horizon)
    assert torch.allclose(steps.sum(1), logp)


def test_kl_by_enumeration_and_basic_properties():
    tree = TreeMDP(("good", "day", "night"), 2)
    g = torch.Generator().manual_seed(3)
    p = tree.random_logits(generator=g, dtype=torch.float64)
    q = tree.random_logits(generator=g, dtype=torch.float64)
    pp = [math.exp(_loop_logprob(tree, p, t)) for t in tree.trajectories().tolist()]
    qq = [math.exp(_loop_logprob(tree, q, t)) for t in tree.trajectories().tolist()]
    want = sum(a * math.log(a / b) for a, b in zip(pp, qq))
    assert float(tree.kl(p, q)) == pytest.approx(want, rel=1e-10)
    assert float(tree.kl(p, q)) > 0
    assert float(tree.kl(p, p)) == pytest.approx(0.0, abs=1e-12)
    # a constant added to one row does not change the policy
    assert float(tree.kl(p, p + 5.0)) == pytest.approx(0.0, abs=1e-12)


def test_one_step_kl_is_categorical_kl():
    tree = TreeMDP(("x", "y", "z"), 1)
    p = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
    q = torch.tensor([[0.4, 0.4, 0.2]], dtype=torch.float64)
    want = sum(a * math.log(a / b) for a, b in zip(p[0].tolist(), q[0].tolist()))
    assert float(tree.kl(p.log(), q.log())) == pytest.approx(want, rel=1e-12)


def test_sampling_frequencies_match_probabilities():
    tree = TreeMDP(("good", "day", "night"), 2)
    logits = tree.random_logits(generator=torch.Generator().manual_seed(0))
    n = 200_000
    trajs = tree.sample(logits, n, generator=torch.Generator().manual_seed(1))
    index = (trajs * torch.tensor([3, 1])).sum(1)
    freq = torch.bincount(index, minlength=9).double() / n
    probs = tree.probs(logits).double()
    se = (probs * (1 - probs) / n).sqrt()
    assert bool(((freq - probs).abs() <= 5 * se + 1e-12).all())


def test_expected_and_policy_from_probs():
    tree = TreeMDP(("a", "b"), 2)
    table = [[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]
    logits = tabular_policy_from_probs(tree, table)
    probs = tree.probs(logits)
    assert probs.tolist() == pytest.approx([0.45, 0.05, 0.1, 0.4], abs=1e-6)
    values = torch.tensor([1.0, 0.0, 0.0, 2.0])
    assert float(tree.expected(logits, values)) == pytest.approx(0.45 + 0.8, abs=1e-6)


@pytest.mark.parametrize("bad", [
    lambda: TreeMDP(("a",), 2),
    lambda: TreeMDP(("a", "a"), 2),
    lambda: TreeMDP(("a", "b"), 0),
    lambda: TreeMDP(("a", "b"), 2).log_prob(torch.zeros(2, 2)),
    lambda: TreeMDP(("a", "b"), 2).log_prob(torch.zeros(3, 2), torch.tensor([[0, 2]])),
    lambda: TreeMDP(("a", "b"), 2).sample(torch.zeros(3, 2), 0),
    lambda: TreeMDP(("a", "b"), 2).expected(torch.zeros(3, 2), torch.zeros(3)),
    lambda: tabular_policy_from_probs(TreeMDP(("a", "b"), 1), [[0.7, 0.7]]),
])
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        bad()
