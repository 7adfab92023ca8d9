"""Edge cases found in review: each is a bad input that must raise, or a padded NaN that must not
leak, checked against an independent computation where there is a value to compare."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_lab.course import toy_domain as td
from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
from rlhf_lab.course.tabular import TreeMDP
from rlhf_lab.divergence import categorical_kl
from rlhf_lab.kl_control import AdaptiveKLController
from rlhf_lab.objectives import a2c_loss
from rlhf_lab.ppo import PPOConfig
from rlhf_lab.sft import sft, sft_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def test_adaptive_kl_refuses_a_step_that_could_make_beta_non_positive():
    ctl = AdaptiveKLController(0.1, 6.0, 10)
    with pytest.raises(ValueError, match="n_steps"):
        ctl.update(0.0, 64)           # 1 - 0.2 * 64 / 10 < 0
    assert ctl.value == 0.1
    ctl.update(0.0, 49)               # the largest step that is still allowed: beta shrinks, stays > 0
    assert ctl.value == pytest.approx(0.1 * (1 - 0.2 * 49 / 10))
    with pytest.raises(ValueError, match="kl_horizon"):
        PPOConfig(adaptive_kl=True, batch_size=64, kl_horizon=10)
    PPOConfig(adaptive_kl=True, batch_size=64, kl_horizon=13)


def test_a2c_loss_gradients_ignore_nan_in_padded_slots():
    torch.manual_seed(0)
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    logp = torch.randn(2, 3).requires_grad_()
    values = torch.randn(2, 3).requires_grad_()
    returns = torch.randn(2, 3)
    clean = (logp.detach().clone().requires_grad_(), values.detach().clone().requires_grad_())
    loss_clean, _ = a2c_loss(clean[0], clean[1], returns, mask)
    loss_clean.backward()
    dirty_returns = returns.clone()
    dirty_returns[1, 2] = float("nan")
    with torch.no_grad():
        logp[1, 2] = float("inf")
        values[1, 2] = float("nan")
    loss, _ = a2c_loss(logp, values, dirty_returns, mask)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(loss_clean.item(), rel=1e-6)
    assert logp.grad[1, 2] == 0 and values.grad[1, 2] == 0
    torch.testing.assert_close(logp.grad * mask, clean[0].grad * mask)
    torch.testing.assert_close(values.grad * mask, clean[1].grad * mask)


def test_sft_loss_with_no_target_token_raises():
    tok = word_tokenizer()
    model = tiny_causal_lm(tok, n_layer=1, n_embd=16, n_head=2)
    ids = torch.tensor([[tok.bos_token_id, 10, 11, tok.pad_token_id]])
    mask = torch.tensor([[1, 1, 1, 0]])
    with pytest.raises(ValueError, match="no target token"):
        sft_loss(model, ids, mask, response_start=3)


def test_sft_with_dropout_repeats_for_a_seed_and_leaves_the_callers_rng_alone():
    tok = word_tokenizer()
    examples = [("hello", "good day"), ("the cat is", "warm"), ("i see a", "dog"), ("we like", "the sun")] * 2
    losses = []
    for noise in (1, 2):
        torch.manual_seed(noise)          # a different global state before each run
        torch.rand(noise * 7)
        model = tiny_causal_lm(tok, n_layer=1, n_embd=16, n_head=2, dropout=0.3, seed=0)
        state = torch.get_rng_state()
        losses.append([h["loss"] for h in sft(model, tok, examples, epochs=2, batch_size=4, device="cpu",
                                              seed=5, progress=False)])
        assert torch.equal(torch.get_rng_state(), state)
    assert losses[0] == losses[1]


def test_label_pairs_rejects_a_nan_temperature_and_flips_a_coin_on_kept_ties():
    prompt = "tell me about the cat ."
    with pytest.raises(ValueError, match="temperature"):
        td.label_pairs([prompt], ["the cat is warm ."], ["the cat is bad ."], temperature=float("nan"))
    a, b = "the cat is warm .", "the cat is happy ."
    assert td.gold_reward(prompt, a) == td.gold_reward(prompt, b)
    chosen = {td.label_pairs([prompt], [a], [b], drop_ties=False, seed=s)[0]["chosen"] for s in range(20)}
    assert chosen == {a, b}
    assert td.label_pairs([prompt], [a], [b], seed=0) == []  # dropped by default


def test_exact_kls_handle_impossible_actions():
    tree = TreeMDP(("x", "y"), 1)
    kl = tree.kl(torch.tensor([[0.0, -math.inf]]), torch.tensor([[0.0, 0.0]]))
    assert kl.item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="-inf"):
        tree.kl(torch.tensor([[-math.inf, -math.inf]]), torch.tensor([[0.0, 0.0]]))
    with pytest.raises(ValueError, match="only -inf"):
        categorical_kl(torch.zeros(1, 3), torch.full((1, 3), -math.inf))
    with pytest.raises(ValueError, match="only -inf"):
        categorical_kl(torch.full((1, 3), -math.inf), torch.zeros(1, 3))


def test_plot_dashboard_rejects_too_few_axes_a_missing_key_and_a_text_column(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlhf_lab.plotting import load_metrics, plot_dashboard

    rows = [{"reward": 1.0, "kl": 0.1}, {"reward": 2.0}]
    with pytest.raises(ValueError, match=r"metrics\[1\] lacks"):
        plot_dashboard(rows, keys=["reward", "kl"])
    fig, ax = plt.subplots(1, 1)
    with pytest.raises(ValueError, match="1 panels for 2 keys"):
        plot_dashboard([{"reward": 1.0, "kl": 0.1}], keys=["reward", "kl"], axes=[ax])
    plt.close("all")
    path = tmp_path / "m.csv"
    path.write_text("reward,note\n1.0,fine\n")
    with pytest.raises(ValueError, match="line 2"):
        load_metrics(path)


def test_reward_accuracy_of_a_constant_model_is_chance():
    from rlhf_lab.reward_model import reward_accuracy

    class Constant(torch.nn.Module):
        config = type("C", (), {"num_labels": 1})()

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, input_ids, attention_mask=None, **_):
            return type("O", (), {"logits": torch.zeros(input_ids.shape[0], 1) + self.w})()

    tok = word_tokenizer()
    pairs = [("hello", "good day", "bad day"), ("the cat is", "warm", "bad")]
    assert reward_accuracy(Constant(), tok, pairs) == 0.5
