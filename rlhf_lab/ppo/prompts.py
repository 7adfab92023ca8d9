"""The prompts of a PPO run: a list, or a column of a ``datasets.Dataset``; chat templates.

- :func:`prompt_list` reads the prompts from a list, or from a column of a ``datasets.Dataset``
  (or anything with ``column_names`` and ``dataset[column]``: ``datasets`` is an optional extra,
  never imported here), so that any of the hub's prompt sets can be used directly.
- :func:`chat_prompt_ids` formats a prompt as a user turn with the tokenizer's chat template and
  the generation prompt (the header of the assistant's turn), as an instruct model was trained to
  see it. A prompt may also be a conversation, a list of ``{"role", "content"}`` messages.
- :func:`end_of_turn_token_id` finds the token with which the template closes a turn: an instruct
  model ends its answer with it, so a response stops there.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

Messages = List[dict]


def prompt_list(prompts: Any, column: Optional[str] = None) -> list:
    """The prompts as a list: ``prompts`` itself, or the column ``column`` of a dataset.

    A dataset is recognized by its ``column_names``; ``column`` is then required unless the
    dataset has exactly one column. Raises ``ValueError`` naming a missing column."""
    names = getattr(prompts, "column_names", None)
    if names is None:
        if column is not None:
            raise ValueError(f"prompt_column={column!r} is given but prompts is a {type(prompts).__name__}, "
                             "not a datasets.Dataset")
        return prompts
    if isinstance(names, dict):  # a DatasetDict: one split has to be chosen
        raise ValueError(f"prompts is a DatasetDict with splits {sorted(names)}: pass one split, e.g. dataset['train']")
    if column is None:
        if len(names) != 1:
            raise ValueError(f"prompts is a dataset with columns {list(names)}: pass prompt_column= to choose one")
        column = names[0]
    if column not in names:
        raise ValueError(f"prompt_column={column!r} is not a column of the dataset (it has {list(names)})")
    return list(prompts[column])


def is_conversation(prompt: Any) -> bool:
    return isinstance(prompt, (list, tuple)) and len(prompt) > 0 and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in prompt)


def _messages(prompt: Any) -> Messages:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if is_conversation(prompt):
        return [dict(m) for m in prompt]
    raise ValueError("with apply_chat_template=True a prompt must be a string or a list of {'role', 'content'} "
                     f"messages, got {type(prompt).__name__}")


def _check_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("PPOConfig.apply_chat_template=True but the tokenizer has no chat template "
                         "(tokenizer.chat_template is empty): use an instruct model's tokenizer, or set one")


def chat_prompt_text(tokenizer, prompt: Any) -> str:
    """``prompt`` (a string: one user turn; or a list of messages) rendered by the tokenizer's chat
    template, ending with the generation prompt."""
    _check_template(tokenizer)
    return tokenizer.apply_chat_template(_messages(prompt), tokenize=False, add_generation_prompt=True)


def chat_prompt_ids(tokenizer, prompts: Sequence[Any]) -> List[List[int]]:
    """Token ids of each prompt rendered by :func:`chat_prompt_text`. The template writes its own
    special tokens (``<|im_start|>`` ...), so none are added by the tokenizer (TRL does the same)."""
    texts = [chat_prompt_text(tokenizer, p) for p in prompts]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def prompt_text(prompt: Any) -> str:
    """What the reward function reads as a prompt: the string, or a conversation's last user message."""
    if isinstance(prompt, str):
        return prompt
    if is_conversation(prompt):
        users = [m["content"] for m in prompt if m["role"] == "user"]
        return str(users[-1] if users else prompt[-1]["content"])
    raise ValueError(f"a prompt must be a string or a list of messages, got {type(prompt).__name__}")


_PROBE = "Xq7 zebra"


def end_of_turn_token_id(tokenizer) -> int:
    """The token with which the tokenizer's chat template closes an assistant turn: a one-turn
    conversation with a probe answer is rendered, and the first token after the answer is taken
    (``<|im_end|>`` for ChatML templates such as SmolLM2's, ``<|eot_id|>`` for Llama 3,
    ``<end_of_turn>`` for Gemma). Raises ``ValueError`` when the template puts nothing after an answer."""
    _check_template(tokenizer)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    end = text.rfind(_PROBE)
    if end < 0:
        raise ValueError("the tokenizer's chat template drops the assistant's answer: cannot find its end-of-turn token")
    after = tokenizer(text[end + len(_PROBE):], add_special_tokens=False)["input_ids"]
    after = [t for t in after if tokenizer.decode([t]).strip()]  # skip a bare space or newline
    if not after:
        raise ValueError("the tokenizer's chat template writes nothing after an assistant's answer: set "
                         "PPOConfig.stop_token_id to the token that ends a turn")
    return int(after[0])
