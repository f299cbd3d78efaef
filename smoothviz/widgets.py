"""Interactive explorers: thin ipywidgets controllers over the compression and measuring functions.

:class:`RankExplorer` (SVD ranks: a global parameter-reduction slider, one rank slider per layer and a
drop-down for how the budget is split) and :class:`PruneExplorer` (a pruning-ratio slider and the
pruning method) show live test accuracy, the parameter count and a figure of the current choice.

How they stay responsive: the SVD of every layer is computed once per model
(:func:`smoothviz.compress.svd.svd_factors`); moving a slider only slices the cached factors. While a
slider moves, accuracy is measured on a small subset of the test images (``drag_subset``); once the
slider has been still for ``settle_seconds``, the full test set is evaluated and the readout says so.
Figures are drawn into an ``Output`` widget with ``clear_output(wait=True)`` (a figure redrawn through
the inline backend goes stale in a real browser), and an exception in a callback is shown in the
widget's status line instead of being lost in the kernel log.

Every callback can be driven from plain Python by setting a widget's ``.value``; with
``settle_seconds=None`` the full evaluation then runs synchronously, which is what the tests do.
"""

from __future__ import annotations

import asyncio
import html
import io
import traceback
import warnings
from collections.abc import Mapping
from typing import Any

import ipywidgets as W
import numpy as np
import pandas as pd
import torch
from IPython.display import Image, clear_output, display
from matplotlib.figure import Figure
from torch import nn

from smoothviz.data import ImageData
from smoothviz.measure import count_params, evaluate
from smoothviz.notebook_params import SLIDER_MAX, check_slider_fraction

ALLOCATIONS = {
    "svd · global σ² threshold": "global",
    "svd · equal kept energy per layer": "energy",
    "svd · equal rank fraction per layer": "fraction",
}
PRUNE_METHODS = {
    "magnitude (unstructured, global)": "prune_magnitude",
    "L1 filters (structured)": "prune_channels",
}


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop callbacks run on (ipykernel's), or None in plain Python."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return None
    return loop if loop.is_running() else None


def _figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


class _Explorer:
    """Shared plumbing: models, data subsets, readouts, status line, output area, debounce."""

    def __init__(
        self,
        models: nn.Module | Mapping[str, nn.Module],
        data: ImageData,
        *,
        drag_subset: int = 500,
        settle_seconds: float | None = 0.4,
        seed: int = 0,
    ) -> None:
        if isinstance(models, nn.Module):
            models = {"model": models}
        if not isinstance(models, Mapping) or not models:
            raise TypeError("models must be an nn.Module or a non-empty mapping name -> nn.Module")
        if not isinstance(data, ImageData):
            raise TypeError(f"data must be a smoothviz.data.ImageData, got {type(data).__name__}")
        if isinstance(drag_subset, bool) or not isinstance(drag_subset, int) or drag_subset < 1:
            raise ValueError(f"drag_subset must be an int >= 1, got {drag_subset!r}")
        if settle_seconds is not None and not settle_seconds >= 0:
            raise ValueError(f"settle_seconds must be None or >= 0, got {settle_seconds!r}")
        self.models = dict(models)
        self.data = data
        self.settle_seconds = settle_seconds
        n_test = len(data.y_test)
        small = (
            data.subset(n_test=min(drag_subset, n_test), seed=seed)
            if drag_subset < n_test
            else data
        )
        self._x_full, self._y_full = data.x_test, data.y_test
        self._x_drag, self._y_drag = small.x_test, small.y_test
        self._timer: asyncio.TimerHandle | None = None
        self._syncing = False
        self.choice_error: str | None = None  # why the last choice could not be made, if it failed
        self.last: dict[str, Any] = {}  # the latest measurement (read by tests and the readouts)
        self.model_select = W.Dropdown(options=list(self.models), description="model")
        self.accuracy_label = W.HTML(value="test accuracy: …")
        self.params_label = W.HTML(value="parameters: …")
        self.status = W.HTML(value="")
        self.output = W.Output(layout=W.Layout(min_height="260px"))
        # Stable hooks for styling and for the browser test.
        self.accuracy_label.add_class("smoothviz-accuracy")
        self.params_label.add_class("smoothviz-params")
        self.status.add_class("smoothviz-status")

    # ------------------------------------------------------------------ to be provided by subclasses
    def compressed_model(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def figure(self) -> Figure:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ shared behaviour
    @property
    def model(self) -> nn.Module:
        """The uncompressed model currently selected."""
        return self.models[self.model_select.value]

    def measure(self, full: bool = True) -> dict[str, Any]:
        """Compress as the widgets say, then measure accuracy (full test set or drag subset)."""
        compressed = self.compressed_model()
        x, y = (self._x_full, self._y_full) if full else (self._x_drag, self._y_drag)
        total = count_params(self.model)
        params = count_params(compressed)
        metrics = evaluate(compressed, (x, y))
        result = {
            "test_acc": metrics["accuracy"],
            "test_loss": metrics["loss"],
            "n_test": len(y),
            "full": full,
            "params": params,
            "total_params": total,
            "param_reduction": 1.0 - params / total,
        }
        self.last = result
        return result

    def snapshot(self) -> Image:
        """The current figure as a PNG image: a static record that shows in any notebook output."""
        if not self.last.get("full") or "error" in self.last:
            self.update(full=True)
        return Image(data=_figure_png(self.figure()))

    def settings(self) -> dict[str, Any]:
        """The current choice in words (overridden by subclasses)."""
        return {"model": self.model_select.value}

    def summary(self) -> pd.DataFrame:
        """One row: the current choice and its measurement on the full test set."""
        if not self.last.get("full") or "error" in self.last:
            self.update(full=True)
        if "error" in self.last:
            raise RuntimeError(self.last["error"])
        if self.choice_error:
            raise RuntimeError(self.choice_error)
        return pd.DataFrame([{**self.settings(), **self.last}])

    def _show(self, result: dict[str, Any]) -> None:
        where = "full test set" if result["full"] else "subset while moving"
        self.accuracy_label.value = (
            f"<b>test accuracy: {100 * result['test_acc']:.2f} %</b> "
            f"({where}, {result['n_test']} images)"
        )
        self.params_label.value = (
            f"parameters: <b>{result['params']:,}</b> of {result['total_params']:,} "
            f"({100 * result['param_reduction']:.1f} % fewer)"
        )

    def _draw(self) -> None:
        fig = self.figure()
        png = _figure_png(fig)
        with self.output:
            clear_output(wait=True)
            display(Image(data=png))

    def _fail(self, exc: BaseException) -> None:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self._fail_text(text)
        self.last = {"error": text}

    def _fail_text(self, text: str) -> None:
        self.status.value = (
            f"<pre style='color:#b00020;white-space:pre-wrap;margin:0'>{html.escape(text)}</pre>"
        )

    def update(self, full: bool = True) -> None:
        """Measure, refresh the readouts and the figure; errors go to the status line."""
        try:
            result = self.measure(full=full)
            self._draw()  # figure first: when the readout says "full test set", the figure agrees
            self._show(result)
            self.status.value = ""
            if self.choice_error:
                self._fail_text(self.choice_error)
        except Exception as exc:  # shown in the widget, where the user is looking
            self._fail(exc)

    def _changed(self, change: Any = None) -> None:
        if self._syncing:
            return
        if self.settle_seconds is None:
            self.update(full=True)
            return
        self.update(full=False)
        self._schedule_full()

    def _schedule_full(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = _running_loop()
        if loop is None:  # no event loop (plain Python): evaluate the full test set right away
            self.update(full=True)
            return
        self._timer = loop.call_later(self.settle_seconds, self._settled)

    def _settled(self) -> None:
        self._timer = None
        self.update(full=True)

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)


class RankExplorer(_Explorer):
    """Choose SVD ranks and see accuracy, parameter count and the spectrum with the chosen rank.

    Parameters
    ----------
    models
        A trained model, or ``{name: model}`` to switch between (e.g. baseline and smooth).
    data
        The dataset; its test split is what the accuracy is measured on.
    layers
        Layer selection as in :func:`smoothviz.layers.select_layers`.
    param_reduction
        Initial whole-network parameter reduction.
    drag_subset
        Test images evaluated while a slider moves.
    settle_seconds
        Time a slider must be still before the full test set is evaluated; ``None`` evaluates the
        full test set synchronously on every change.

    Attributes
    ----------
    reduction, method, layer_select, rank_sliders
        The controls (``rank_sliders`` maps layer name to an ``IntSlider``).
    accuracy_label, params_label, status, output
        The readouts, the error line and the figure area.
    widget
        The whole box, which is also what displaying the explorer shows.
    """

    def __init__(
        self,
        models: nn.Module | Mapping[str, nn.Module],
        data: ImageData,
        *,
        layers: Any = None,
        param_reduction: float = 0.5,
        drag_subset: int = 500,
        settle_seconds: float | None = 0.4,
        seed: int = 0,
    ) -> None:
        check_slider_fraction("param_reduction", param_reduction)
        super().__init__(
            models, data, drag_subset=drag_subset, settle_seconds=settle_seconds, seed=seed
        )
        from smoothviz.compress.svd import svd_factors

        self._factors = {name: svd_factors(m, layers) for name, m in self.models.items()}
        names = list(next(iter(self._factors.values())))
        if not names:
            raise ValueError("layers: no factorisable Conv2d/Linear layer selected")
        self.reduction = W.FloatSlider(
            value=param_reduction,
            min=0.0,
            max=SLIDER_MAX,
            step=0.01,
            description="reduction",
            readout_format=".0%",
            continuous_update=True,
            layout=W.Layout(width="420px"),
        )
        self.method = W.Dropdown(options=list(ALLOCATIONS), description="method")
        self.layer_select = W.Dropdown(options=names, description="spectrum")
        factors = self.factors
        self.rank_sliders = {
            name: W.IntSlider(
                value=factors[name].max_rank,
                min=1,
                max=factors[name].max_rank,
                description=name,
                continuous_update=True,
                style={"description_width": "initial"},
            )
            for name in names
        }
        for slider in self.rank_sliders.values():
            slider.add_class("smoothviz-rank-slider")
        self.reduction.observe(self._reduction_changed, names="value")
        self.method.observe(self._reduction_changed, names="value")
        self.model_select.observe(self._reduction_changed, names="value")
        self.layer_select.observe(self._redraw, names="value")
        for slider in self.rank_sliders.values():
            slider.observe(self._rank_changed, names="value")
        controls = [self.reduction, self.method, self.layer_select]
        if len(self.models) > 1:
            controls.insert(0, self.model_select)
        self.widget = W.VBox(
            [
                W.HBox([W.VBox(controls), W.VBox([self.accuracy_label, self.params_label])]),
                W.HTML("<b>rank per layer</b> (moving one overrides the global split)"),
                W.GridBox(
                    list(self.rank_sliders.values()),
                    layout=W.Layout(grid_template_columns="repeat(2, 48%)"),
                ),
                self.status,
                self.output,
            ]
        )
        self.widget.add_class("smoothviz-rank-explorer")
        self._reduction_changed()

    @property
    def factors(self):
        """Cached SVD factors (:class:`~smoothviz.compress.svd.SVDFactors`) of the current model."""
        return self._factors[self.model_select.value]

    @property
    def ranks(self) -> dict[str, int]:
        """The current rank of every layer."""
        return {name: s.value for name, s in self.rank_sliders.items()}

    def allocate(self, param_reduction: float, method: str = "global") -> dict[str, int]:
        """Per-layer ranks for a whole-network reduction, split by ``method``.

        ``"global"``: one threshold on ``σ² / Σσ²`` across layers (what ``svd_compress`` does; where
        that cannot meet the target within 1 pp, the closest split is taken and the parameter
        readout shows what was reached);
        ``"energy"``: the same kept energy in every layer; ``"fraction"``: the same fraction of each
        layer's full rank. The last two search the shared level that meets the budget best.
        """
        factors = self.factors
        if method == "global":
            from smoothviz.compress.budget import BudgetError, allocate

            try:
                return factors.ranks_for_reduction(param_reduction)
            except BudgetError:  # not reachable within 1 pp: take the closest split there is
                scores = {name: f.energy() for name, f in factors.items()}
                return allocate(
                    scores,
                    factors.params_at,
                    factors.total_params,
                    param_reduction,
                    tolerance=1.0,
                )
        goal = (1.0 - param_reduction) * factors.total_params
        if method == "energy":

            def ranks_at(level: float) -> dict[str, int]:
                return factors.ranks_for_energy(level)
        elif method == "fraction":

            def ranks_at(level: float) -> dict[str, int]:
                return {
                    n: max(1, min(f.max_rank, round(level * f.max_rank)))
                    for n, f in factors.items()
                }
        else:
            raise ValueError(f"method must be one of {list(ALLOCATIONS.values())}, got {method!r}")
        best = None
        for level in np.linspace(1e-3, 1.0, 400):  # params grow with the level; pick the closest
            ranks = ranks_at(float(level))
            gap = abs(factors.params_at(ranks) - goal)
            if best is None or gap < best[0]:
                best = (gap, ranks)
        return best[1]

    def _reduction_changed(self, change: Any = None) -> None:
        try:
            ranks = self.allocate(self.reduction.value, ALLOCATIONS[self.method.value])
            self.choice_error = None
        except Exception as exc:  # e.g. a budget this model cannot reach: say so, keep the ranks
            self.choice_error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._fail_text(self.choice_error)
            return
        self._syncing = True
        try:
            for name, slider in self.rank_sliders.items():
                slider.max = self.factors[name].max_rank
                slider.value = ranks[name]
        finally:
            self._syncing = False
        self._changed()

    def _rank_changed(self, change: Any = None) -> None:
        if not self._syncing:
            self.choice_error = None  # the user now sets ranks by hand
        self._changed(change)

    def _redraw(self, change: Any = None) -> None:
        try:
            self._draw()
        except Exception as exc:
            self._fail(exc)

    def settings(self) -> dict[str, Any]:
        return {
            "model": self.model_select.value,
            "method": self.method.value,
            "target_reduction": self.reduction.value,
            "ranks": ", ".join(f"{n}:{r}" for n, r in self.ranks.items()),
        }

    def compressed_model(self) -> nn.Module:
        """A compressed copy of the current model at the current ranks (slices cached factors)."""
        from smoothviz.compress.svd import compress_from_factors

        return compress_from_factors(self.model, self.factors, self.ranks)

    def figure(self) -> Figure:
        """The chosen layer's spectrum with its rank marked, and every layer's kept rank."""
        from smoothviz.plots import plot_spectra

        factors, ranks = self.factors, self.ranks
        layer = self.layer_select.value
        f = factors[layer]
        s = f.s.double()
        spectrum = pd.DataFrame(
            {
                "layer": layer,
                "index": np.arange(1, len(s) + 1),
                "sigma_normalized": (s / s[0].clamp_min(1e-300)).numpy(),
            }
        )
        fig = Figure(figsize=(9.5, 3.2), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        plot_spectra(spectrum, layer, ranks={layer: ranks[layer]}, ax=ax1)
        names = list(ranks)
        kept = [ranks[n] / factors[n].max_rank for n in names]
        colours = [
            "C0"
            if ranks[n] <= factors[n].break_even_rank and ranks[n] < factors[n].max_rank
            else "0.6"
            for n in names
        ]
        ax2.bar(range(len(names)), kept, color=colours)
        ax2.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("rank / full rank")
        ax2.set_title("kept rank (grey: left dense)")
        if self.last.get("test_acc") is not None:
            fig.suptitle(
                f"{self.model_select.value}: test accuracy "
                f"{100 * self.last['test_acc']:.2f} % at "
                f"{100 * self.last['param_reduction']:.1f} % fewer parameters "
                f"({self.last['n_test']} test images)"
            )
        return fig


class PruneExplorer(_Explorer):
    """Choose a pruning ratio (whole-network parameter reduction) and see accuracy and sizes.

    Parameters
    ----------
    models
        A trained model, or ``{name: model}`` to switch between.
    data
        The dataset whose test split is measured.
    layers
        Layer selection as in :func:`smoothviz.layers.select_layers`.
    ratio
        Initial fraction of the whole model's parameters to remove.
    drag_subset, settle_seconds
        As for :class:`RankExplorer`.

    Attributes
    ----------
    ratio, method
        The controls; ``accuracy_label``, ``params_label``, ``status``, ``output`` and ``widget`` as
        for :class:`RankExplorer`.
    """

    def __init__(
        self,
        models: nn.Module | Mapping[str, nn.Module],
        data: ImageData,
        *,
        layers: Any = None,
        ratio: float = 0.5,
        drag_subset: int = 500,
        settle_seconds: float | None = 0.4,
        seed: int = 0,
    ) -> None:
        check_slider_fraction("ratio", ratio)
        super().__init__(
            models, data, drag_subset=drag_subset, settle_seconds=settle_seconds, seed=seed
        )
        self.layers = layers
        self.ratio = W.FloatSlider(
            value=ratio,
            min=0.0,
            max=SLIDER_MAX,
            step=0.01,
            description="ratio",
            readout_format=".0%",
            continuous_update=True,
            layout=W.Layout(width="420px"),
        )
        self.method = W.Dropdown(options=list(PRUNE_METHODS), description="method")
        for w in (self.ratio, self.method, self.model_select):
            w.observe(self._changed, names="value")
        controls = [self.ratio, self.method]
        if len(self.models) > 1:
            controls.insert(0, self.model_select)
        self.widget = W.VBox(
            [
                W.HBox([W.VBox(controls), W.VBox([self.accuracy_label, self.params_label])]),
                self.status,
                self.output,
            ]
        )
        self.widget.add_class("smoothviz-prune-explorer")
        self._pruned: tuple[Any, nn.Module] | None = None
        self._changed()

    def settings(self) -> dict[str, Any]:
        return {
            "model": self.model_select.value,
            "method": self.method.value,
            "target_reduction": self.ratio.value,
        }

    def compressed_model(self) -> nn.Module:
        """A pruned copy of the current model at the current ratio and method."""
        from smoothviz.compress import prune

        key = (self.model_select.value, self.method.value, self.ratio.value)
        if self._pruned is not None and self._pruned[0] == key:
            return self._pruned[1]
        method = getattr(prune, PRUNE_METHODS[self.method.value])
        pruned = method(self.model, param_reduction=self.ratio.value, layers=self.layers)
        self._pruned = (key, pruned)
        return pruned

    def figure(self) -> Figure:
        """Per layer, the fraction of weights that the pruned model keeps."""
        from smoothviz.layers import select_layers

        pruned = self.compressed_model()
        names, kept = [], []
        for name, module in select_layers(self.model, self.layers):
            before = module.weight.numel()
            after_module = pruned.get_submodule(name)
            after = int(torch.count_nonzero(after_module.weight))
            names.append(name)
            kept.append(after / before)
        fig = Figure(figsize=(6.5, 3.0), layout="constrained")
        ax = fig.subplots()
        ax.bar(range(len(names)), kept, color="C1")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
        ax.set_ylim(0, 1)
        ax.set_ylabel("kept weights / original")
        title = f"{self.method.value} at {100 * self.ratio.value:.0f} %"
        if self.last.get("test_acc") is not None:
            title += (
                f": test accuracy {100 * self.last['test_acc']:.2f} % "
                f"({self.last['n_test']} images)"
            )
        ax.set_title(title)
        return fig
