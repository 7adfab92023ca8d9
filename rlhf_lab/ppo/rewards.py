"""Small reward functions for toy runs, tests and the command line (no model needed)."""

from __future__ import annotations

from typing import List, Sequence


class TargetWordReward:
    """Reward a response for containing ``word``: the share of its words equal to ``word``
    (``mode="fraction"``, in [0, 1]) or their count (``mode="count"``).

    A reward callable has the trainer's signature ``(prompts, responses) -> list[float]``."""

    def __init__(self, word: str, mode: str = "fraction"):
        if not isinstance(word, str) or not word.strip():
            raise ValueError("word must be a non-empty string")
        if mode not in ("fraction", "count"):
            raise ValueError(f"mode must be 'fraction' or 'count', got {mode!r}")
        self.word, self.mode = word.strip().lower(), mode

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> List[float]:
        out = []
        for r in responses:
            words = r.lower().split()
            n = sum(w == self.word for w in words)
            out.append(float(n) if self.mode == "count" else n / max(1, len(words)))
        return out

    def __repr__(self) -> str:
        return f"TargetWordReward({self.word!r}, mode={self.mode!r})"
