"""dpo_loss checked against the Bradley-Terry likelihood of the reward it implies."""

import math

import pytest
import torch

from rlhf_lab.objectives import dpo_loss
from rlhf_lab.optimal_policy import optimal_policy


def test_at_the_optimal_policy_dpo_is_the_bradley_terry_loss_of_the_true_reward():
    # pi* = pi_ref exp(r/beta)/Z, so beta*log(pi*/pi_ref) = r - beta*log Z and the margin is r_w - r_l.
    torch.manual_seed(0)
    ref = torch.softmax(torch.randn(7, dtype=torch.float64), -1)
    reward = torch.randn(7, dtype=torch.float64) * 2
    beta = 0.7
    pi_star = optimal_policy(ref, reward, beta)
    w = torch.tensor([0, 1, 2, 5, 6])
    lose = torch.tensor([3, 4, 6, 0, 1])
    got = dpo_loss(pi_star.log()[w], pi_star.log()[lose], ref.log()[w], ref.log()[lose], beta)
    bt = sum(-math.log(1 / (1 + math.exp(-(float(reward[i]) - float(reward[j]))))) for i, j in zip(w, lose)) / len(w)
    assert float(got) == pytest.approx(bt, rel=1e-12)


def test_at_the_reference_the_loss_is_log_two_and_its_gradient_raises_the_chosen_response():
    ref = torch.log(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    theta = ref.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    loss = dpo_loss(logp[[0]], logp[[2]], ref[[0]], ref[[2]], beta=0.1)
    assert loss.detach().item() == pytest.approx(math.log(2))
    loss.backward()
    # gradient descent raises the chosen logit and lowers the rejected one
    assert theta.grad[0] < 0 < theta.grad[2]
    # finite differences on the chosen logit
    h = 1e-6
    bumped = ref.clone()
    bumped[0] += h
    lp = torch.log_softmax(bumped, -1)
    fd = (float(dpo_loss(lp[[0]], lp[[2]], ref[[0]], ref[[2]], beta=0.1)) - math.log(2)) / h
    assert float(theta.grad[0]) == pytest.approx(fd, rel=1e-4)


@pytest.mark.parametrize("kwargs, word", [
    (dict(beta=0.0), "beta"),
    (dict(beta=-1.0), "beta"),
    (dict(logp_rejected=torch.zeros(3)), "logp_rejected"),
    (dict(logp_chosen=torch.tensor([0.0, float("nan")])), "logp_chosen"),
])
def test_bad_input_raises_value_error_naming_the_argument(kwargs, word):
    args = dict(logp_chosen=torch.zeros(2), logp_rejected=torch.zeros(2),
                ref_logp_chosen=torch.zeros(2), ref_logp_rejected=torch.zeros(2), beta=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        dpo_loss(**args)
