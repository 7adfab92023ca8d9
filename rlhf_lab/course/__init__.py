"""The helpers only the book needs: exercises, widgets, toy problems and tiny models.

Nothing in the library (``rlhf_lab.*`` outside this package) imports from here. These modules
need the ``course`` extra (``pip install "rlhf-lab[course]"``: sympy, matplotlib, ipywidgets)
where they draw or check symbolic answers.

- ``exercises``   live checkers (numbers, tensors, functions, sympy expressions) and static quizzes
- ``widgets``     sliders above a matplotlib figure that redraws (``live_figure``)
- ``models``      offline tokenizers and tiny GPT-2s, and SmolLM2-135M-Instruct loading
- ``tabular``     unit 1's tree MDP, where every trajectory probability can be enumerated
- ``bandits``     unit 3's softmax bandit and episodic MDP with exact policy gradients
- ``toy_domain``  unit 5's text domain: prompts, an SFT grammar and a hidden gold reward
- ``kl_placement`` unit 6's softmax policy under each placement of the KL term (loss or reward)

The module map of the whole package is in the book's library page (``book/library.md``).
"""

import importlib

_SUBMODULES = {"exercises", "widgets", "models", "tabular", "bandits", "toy_domain", "kl_placement"}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'rlhf_lab.course' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
