"""Interactive figures for a live kernel: sliders above a matplotlib figure that redraws.

The notebooks use this instead of ``ipywidgets.interact`` so that executing them with widget
state switched off works, and so that every exploration redraws the same way. The static book
cannot run a kernel: each notebook also draws the same figure for a few fixed values.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union


def live_figure(draw: Callable, sliders: Union[object, Sequence[object]], *, ncols: int = 1,
                figsize=(7, 4)):
    """Show ``sliders`` above a figure that ``draw(*values, ax)`` redraws whenever one moves.

    ``sliders`` is one ipywidgets slider or a list of them; ``draw`` receives their values in
    order, then the axes (one ``Axes`` when ``ncols == 1``, else an array of ``ncols``).
    Returns the ``VBox`` that was displayed.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    sliders = list(sliders) if isinstance(sliders, (list, tuple)) else [sliders]
    out = widgets.Output()

    def redraw(change=None):
        fig, axes = plt.subplots(1, ncols, figsize=figsize)
        draw(*[s.value for s in sliders], axes)
        fig.tight_layout()
        out.outputs = ()  # replace the previous picture rather than stacking a new one
        out.append_display_data(fig)
        plt.close(fig)

    for s in sliders:
        s.observe(redraw, names="value")
    box = widgets.VBox([*sliders, out])
    display(box)
    redraw()
    return box
