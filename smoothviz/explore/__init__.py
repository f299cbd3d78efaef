"""Interactive explorers: thin ipywidgets controllers over the compression and measuring functions.

:class:`RankExplorer` (SVD ranks: a global parameter-reduction slider, one rank slider per layer and a
drop-down for how the budget is split) and :class:`PruneExplorer` (a pruning-ratio slider and the
pruning method) show live test accuracy, the parameter count and a figure of the current choice.

Module map:

- ``base.py``: :class:`Explorer`, what both share: measuring, the readouts and status line, the live
  figure, debounce (drag subset while a control moves, full test set once it has settled) and the
  stepwise full measurement that the next move abandons.
- ``rank.py``: :class:`RankExplorer` and its :data:`ALLOCATIONS`.
- ``prune.py``: :class:`PruneExplorer` and its :data:`PRUNE_METHODS`.
- ``incremental.py``: :class:`IncrementalEvaluator`, one working copy per model whose layers are
  swapped in place, with BatchNorm folded into the convolutions, the test images kept on the
  model's device in its memory format, and the activations before the first changed layer reused.
- ``input_set.py``: one input set of the evaluator and :class:`CacheInfo`, what the evaluator kept
  and did for it (the tests read it).
- ``module_tools.py``: what the evaluator does to single modules and graph nodes (BatchNorm
  folding, in-place detection, module equality).
- ``live_figure.py``: :class:`LiveFigure`, a figure laid out and rendered once whose changing
  artists (bars, the rank marker, the title) are redrawn in place into an ``Image`` widget;
  ``fit_text`` keeps a changing title inside the room laid out for it.
- ``readout.py``: the words of the readouts and the figure's title (an estimate with its 95 %
  binomial interval while a slider moves, then the full test set; parameters and FLOPs).
- ``flops.py``: :class:`RankFlops`, FLOPs per image at any ranks from ``count_flops`` counts made
  once per model.

The figures are drawn by :mod:`smoothviz.plots` helpers (``plot_spectrum``, ``plot_kept_ranks``,
``plot_kept_weights``); an explorer only updates, in place, the artists that change.

An explorer's choice leaves with it: :meth:`Explorer.settings` (a dict), :meth:`Explorer.save`
(the compressed model via ``save_compressed``, and the settings beside it) and the Save button.

An exception in a callback is shown in the widget's status line instead of being lost in the kernel
log. Every callback can be driven from plain Python by setting a widget's ``.value``; with
``settle_seconds=None`` the full evaluation then runs synchronously, which is what the tests do
(:meth:`Explorer.settle` measures the full set at once in any case). Because papermill keeps no
widget state, :meth:`Explorer.snapshot` gives the current figure as a static image for batch
reports.

Names load on first use (PEP 562), so that ``smoothviz.explore.incremental`` can be imported
without ipywidgets and matplotlib.
"""

from importlib import import_module

# name -> module, imported on first attribute access
_LAZY = {
    "Explorer": "smoothviz.explore.base",
    "RankExplorer": "smoothviz.explore.rank",
    "ALLOCATIONS": "smoothviz.explore.rank",
    "PruneExplorer": "smoothviz.explore.prune",
    "PRUNE_METHODS": "smoothviz.explore.prune",
    "IncrementalEvaluator": "smoothviz.explore.incremental",
    "CacheInfo": "smoothviz.explore.input_set",
    "LiveFigure": "smoothviz.explore.live_figure",
    "RankFlops": "smoothviz.explore.flops",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'smoothviz.explore' has no attribute {name!r}")


__all__ = list(_LAZY)
