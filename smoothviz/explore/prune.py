"""The prune explorer: choose a pruning ratio and method, watch accuracy and per-layer sizes.

Each move prunes a copy of the model (:data:`PRUNE_METHODS`: global magnitude pruning, or
structured channel pruning by BatchNorm scale) and swaps into the model's
:class:`~smoothviz.explore.incremental.IncrementalEvaluator` only the modules that differ from
the ones installed. FLOPs per image are counted once per distinct structure of the pruned model
(magnitude pruning keeps the structure, so it is counted once per model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as W
import pandas as pd
import torch
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from torch import nn

from smoothviz.compress.prune import prune_channels, prune_magnitude
from smoothviz.compress.targets import renamed_keyword
from smoothviz.data import ImageData
from smoothviz.explore.base import (
    DEFAULT_SAVE_DIR,
    SLIDER_FORMAT,
    SLIDER_STEP,
    TITLE_POINTS,
    Explorer,
)
from smoothviz.explore.incremental import IncrementalEvaluator
from smoothviz.layers import select_layers
from smoothviz.measure import count_flops, count_params
from smoothviz.notebook_params import SLIDER_MAX, check_slider_fraction
from smoothviz.plots import plot_kept_weights

PRUNE_METHODS = {
    "magnitude (unstructured, global)": "prune_magnitude",
    # Data-free prune_channels (BatchNorm-scale importance): calibration-based importance and bias
    # compensation cost seconds per move on a ResNet, too slow to follow a slider.
    "channels by BN scale (structured)": "prune_channels",
}
_PRUNERS = {"prune_magnitude": prune_magnitude, "prune_channels": prune_channels}


class PruneExplorer(Explorer):
    """Choose a pruning ratio (whole-network parameter reduction) and see accuracy and sizes.

    Parameters
    ----------
    models
        A trained model, or ``{name: model}`` to switch between.
    data
        The dataset whose test split is measured.
    layers
        Layer selection as in :func:`smoothviz.layers.select_layers`.
    param_reduction
        Initial fraction of the whole model's parameters to remove (``ratio=`` is its old name,
        accepted for one release with a ``DeprecationWarning``).
    drag_subset, settle_seconds, seed, cache_mb, arch, save_dir, progress
        As for :class:`RankExplorer`.

    Attributes
    ----------
    reduction, method
        The controls (``ratio`` is the old name of ``reduction``; steps of 0.5 %);
        ``accuracy_label``, ``params_label``, ``status``, ``image``, ``save_button``,
        ``saved_label`` and ``widget`` as for :class:`RankExplorer`.
    """

    def __init__(
        self,
        models: nn.Module | Mapping[str, nn.Module],
        data: ImageData,
        *,
        layers: Any = None,
        param_reduction: float | None = None,
        ratio: float | None = None,
        drag_subset: int = 500,
        settle_seconds: float | None = 0.4,
        seed: int = 0,
        cache_mb: float = 512.0,
        arch: Mapping[str, Any] | None = None,
        save_dir: Any = DEFAULT_SAVE_DIR,
        progress: bool | None = None,
    ) -> None:
        param_reduction = renamed_keyword(
            "PruneExplorer", "ratio", "param_reduction", ratio, param_reduction
        )
        param_reduction = 0.5 if param_reduction is None else param_reduction
        check_slider_fraction("param_reduction", param_reduction)
        super().__init__(
            models,
            data,
            drag_subset=drag_subset,
            settle_seconds=settle_seconds,
            seed=seed,
            cache_mb=cache_mb,
            arch=arch,
            save_dir=save_dir,
            progress=progress,
        )
        self.layers = layers
        self._layer_names = [n for n, _ in select_layers(next(iter(self.models.values())), layers)]
        self.reduction = W.FloatSlider(
            value=param_reduction,
            min=0.0,
            max=SLIDER_MAX,
            step=SLIDER_STEP,
            description="reduction",
            readout_format=SLIDER_FORMAT,
            continuous_update=True,
            layout=W.Layout(width="640px"),
        )
        self.method = W.Dropdown(options=list(PRUNE_METHODS), description="method")
        for w in (self.reduction, self.method, self.model_select):
            w.observe(self._changed, names="value")
        controls = [self.reduction, self.method]
        if len(self.models) > 1:
            controls.insert(0, self.model_select)
        self.widget = W.VBox(
            [W.VBox(controls), self._readouts(), self.status, self.image, self._save_row()]
        )
        self.widget.add_class("smoothviz-prune-explorer")
        self._pruned: tuple[Any, nn.Module] | None = None
        self._structure_flops: dict[tuple, int] = {}  # pruned structure -> FLOPs per image
        self._changed(settle=False)

    @property
    def ratio(self) -> W.FloatSlider:
        """The old name of :attr:`reduction` (the whole-network reduction slider)."""
        return self.reduction

    def settings(self) -> dict[str, Any]:
        """The current choice: model, pruning method (as the drop-down says it, and the function
        that prunes) and the target reduction as the slider shows it."""
        return {
            "model": self.model_select.value,
            "method": self.method.value,
            "pruner": PRUNE_METHODS[self.method.value],
            "target_reduction": round(self.reduction.value, 3),
        }

    def _save_stem(self) -> str:
        reached = self.last.get("param_reduction", self.reduction.value)
        return (
            f"{self.model_select.value}-{PRUNE_METHODS[self.method.value]}-{100 * reached:.1f}pct"
        )

    def _flops(self) -> tuple[int, int, bool]:
        """Counted by ``count_flops`` once per model and per distinct pruned structure (the layer
        shapes), so a drag that keeps the structure costs nothing."""
        pruned = self.compressed_model()
        total = self._count(self.model)
        return self._count(pruned), total, bool(getattr(pruned, "sparse_parameters", None))

    def _count(self, model: nn.Module) -> int:
        key = (
            self.model_select.value,
            tuple(
                (n, tuple(m.weight.shape))
                for n, m in model.named_modules()
                if isinstance(m, (nn.Conv2d, nn.Linear))
            ),
        )
        if key not in self._structure_flops:
            self._structure_flops[key] = count_flops(model, self._x_full[:1])
        return self._structure_flops[key]

    def compressed_model(self) -> nn.Module:
        """A pruned copy of the current model at the current ratio and method."""
        key = (self.model_select.value, self.method.value, self.reduction.value)
        if self._pruned is not None and self._pruned[0] == key:
            return self._pruned[1]
        method = _PRUNERS[PRUNE_METHODS[self.method.value]]
        pruned = method(self.model, param_reduction=self.reduction.value, layers=self.layers)
        self._pruned = (key, pruned)
        return pruned

    def _swappable(self, name: str) -> None:
        return None  # structured pruning also shrinks BatchNorms and the next layers' inputs

    def _install(self, evaluator: IncrementalEvaluator) -> int:
        pruned = self.compressed_model()
        evaluator.load(pruned)  # swaps only the modules that differ from the installed ones
        return count_params(pruned)

    _figsize = (7.0, 4.6)

    def _draw_figure(self, fig: Figure) -> dict[str, Any]:
        """Per layer, the fraction of weights that the pruned model keeps."""
        ax = fig.subplots()
        kept = pd.DataFrame({"layer": self._layer_names, "kept_fraction": self._kept_fractions()})
        plot_kept_weights(kept, ax=ax)
        # the measurement, in words; laid out with all its lines, so no state is clipped
        title = fig.suptitle(self._title(fig, " "), fontsize=TITLE_POINTS)
        return {"bars": ax.containers[-1], "title": title}

    def _kept_fractions(self) -> list[float]:
        """Per layer, the non-zero weights of the pruned model over the weights of the model."""
        pruned = self.compressed_model()
        return [
            int(torch.count_nonzero(pruned.get_submodule(name).weight))
            / self.model.get_submodule(name).weight.numel()
            for name in self._layer_names
        ]

    @staticmethod
    def _artist_list(artists: Any) -> list[Artist]:
        return [*artists["bars"], artists["title"]]

    def _refresh(self, artists: dict[str, Any]) -> None:
        for bar, fraction in zip(artists["bars"], self._kept_fractions(), strict=True):
            bar.set_width(fraction)
        title = artists["title"]
        words = (
            f"{self.model_select.value}, {self.method.value} at "
            f"{100 * self.reduction.value:.1f} %: {self._measurement_words()}"
        )
        title.set_text(self._title(title.figure, words))
