"""Interactive explorers: thin ipywidgets controllers over the compression and measuring functions.

:class:`RankExplorer` (SVD ranks: a global parameter-reduction slider, one rank slider per layer and a
drop-down for how the budget is split) and :class:`PruneExplorer` (a pruning-ratio slider and the
pruning method) show live test accuracy, the parameter count and a figure of the current choice.

How they keep up with the hand:

- The SVD of every layer is computed once per model (or passed in as ``factors``); moving a slider
  only slices the cached factors, and only the layers whose rank changed are rebuilt.
- Accuracy comes from an :class:`~smoothviz.incremental.IncrementalEvaluator` per model: a working
  copy whose layers are swapped in place, with BatchNorm folded into the convolutions, the test
  images kept on the model's device in its memory format, and the activations before the first
  changed layer reused from the previous evaluation.
- While a slider moves, accuracy is measured on a small subset of the test images (``drag_subset``);
  once the slider has been still for ``settle_seconds``, on the full test set, and the readout says
  which. One user move is one evaluation, however many sliders it sets programmatically.
- The figure is a :class:`~smoothviz.live_figure.LiveFigure` shown in an ``Image`` widget: only the
  artists that change (bars, the rank marker, the title) are redrawn, and the PNG replaces the
  image in place.

An exception in a callback is shown in the widget's status line instead of being lost in the kernel
log. Every callback can be driven from plain Python by setting a widget's ``.value``; with
``settle_seconds=None`` the full evaluation then runs synchronously, which is what the tests do.
Because papermill keeps no widget state, :meth:`~_Explorer.snapshot` gives the current figure as a
static image for batch reports.
"""

from __future__ import annotations

import asyncio
import html
import time
import traceback
import warnings
from collections.abc import Mapping
from typing import Any

import ipywidgets as W
import numpy as np
import pandas as pd
from IPython.display import Image
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from torch import nn

from smoothviz.data import ImageData
from smoothviz.incremental import IncrementalEvaluator
from smoothviz.live_figure import LiveFigure
from smoothviz.measure import count_params
from smoothviz.notebook_params import SLIDER_MAX, check_slider_fraction

ALLOCATIONS = {
    "svd · global σ² threshold": "global",
    "svd · equal kept energy per layer": "energy",
    "svd · equal rank fraction per layer": "fraction",
}
PRUNE_METHODS = {
    "magnitude (unstructured, global)": "prune_magnitude",
    # Data-free prune_channels (BatchNorm-scale importance): calibration-based importance and bias
    # compensation cost seconds per move on a ResNet, too slow to follow a slider.
    "channels by BN scale (structured)": "prune_channels",
}
FIGURE_DPI = 90
PROGRESS_SECONDS = 0.5  # a full-set measurement this long shows its progress


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


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


class _Explorer:
    """Shared plumbing: models, evaluators, readouts, status line, live figure, debounce."""

    _figsize: tuple[float, float] = (6.5, 3.0)  # inches; subclasses set their own

    def __init__(
        self,
        models: nn.Module | Mapping[str, nn.Module],
        data: ImageData,
        *,
        drag_subset: int = 500,
        settle_seconds: float | None = 0.4,
        seed: int = 0,
        cache_mb: float = 512.0,
    ) -> None:
        if isinstance(models, nn.Module):
            models = {"model": models}
        if not isinstance(models, Mapping) or not models:
            raise TypeError("models must be an nn.Module or a non-empty mapping name -> nn.Module")
        bad = [k for k, m in models.items() if not isinstance(m, nn.Module)]
        if bad:
            raise TypeError(f"models: {bad} are not nn.Module instances")
        if not isinstance(data, ImageData):
            raise TypeError(f"data must be a smoothviz.data.ImageData, got {type(data).__name__}")
        if isinstance(drag_subset, bool) or not isinstance(drag_subset, int) or drag_subset < 1:
            raise ValueError(f"drag_subset must be an int >= 1, got {drag_subset!r}")
        if settle_seconds is not None and not settle_seconds >= 0:
            raise ValueError(f"settle_seconds must be None or >= 0, got {settle_seconds!r}")
        if isinstance(cache_mb, bool) or not isinstance(cache_mb, (int, float)) or cache_mb < 0:
            raise ValueError(f"cache_mb must be a number >= 0, got {cache_mb!r}")
        self.models = dict(models)
        self.data = data
        self.settle_seconds = settle_seconds
        self.cache_mb = float(cache_mb)
        n_test = len(data.y_test)
        self._x_full, self._y_full = data.x_test, data.y_test
        # The drag subset; None when it would be the whole test split (then one evaluation does).
        self._drag = None
        if drag_subset < n_test:
            small = data.subset(n_test=drag_subset, seed=seed)
            self._drag = (small.x_test, small.y_test)
        self._evaluators: dict[str, IncrementalEvaluator] = {}
        self._live: tuple[Any, LiveFigure, Any] | None = None  # (structure key, figure, artists)
        self._timer: asyncio.TimerHandle | None = None
        self._release: tuple | None = None  # the full-set measurement under way, if any
        self._release_handle: asyncio.Handle | None = None
        self._syncing = False
        self.choice_error: str | None = None  # why the last choice could not be made, if it failed
        self.last: dict[str, Any] = {}  # the latest measurement (read by tests and the readouts)
        self.model_select = W.Dropdown(options=list(self.models), description="model")
        self.accuracy_label = W.HTML(value="test accuracy: …")
        self.params_label = W.HTML(value="parameters: …")
        self.status = W.HTML(value="")
        self.image = W.Image(format="png", layout=W.Layout(min_height="260px"))
        # Stable hooks for styling and for the browser test.
        self.accuracy_label.add_class("smoothviz-accuracy")
        self.params_label.add_class("smoothviz-params")
        self.status.add_class("smoothviz-status")
        self.image.add_class("smoothviz-figure")

    # ------------------------------------------------------------------ to be provided by subclasses
    def compressed_model(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _swappable(self, name: str) -> list[str] | None:  # pragma: no cover - abstract
        """Modules of model ``name`` that a choice may replace (None: any leaf module)."""
        raise NotImplementedError

    def _install(self, evaluator: IncrementalEvaluator) -> int:  # pragma: no cover - abstract
        """Put the current choice into ``evaluator``; return the choice's parameter count."""
        raise NotImplementedError

    def _draw_figure(self, fig: Figure) -> Any:  # pragma: no cover - abstract
        """Draw the figure's fixed parts and its changing artists; return those artists."""
        raise NotImplementedError

    def _refresh(self, artists: Any) -> None:  # pragma: no cover - abstract
        """Set the changing artists to the current choice and measurement."""
        raise NotImplementedError

    def _figure_key(self) -> Any:
        """What the fixed parts of the figure depend on (a change redraws the whole figure)."""
        return self.model_select.value

    @staticmethod
    def _artist_list(artists: Any) -> list[Artist]:  # pragma: no cover - abstract
        """The changing artists, flat (what the live figure redraws)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared behaviour
    @property
    def model(self) -> nn.Module:
        """The uncompressed model currently selected."""
        return self.models[self.model_select.value]

    def evaluator(self) -> IncrementalEvaluator:
        """The incremental evaluator of the current model (built on first use)."""
        name = self.model_select.value
        if name not in self._evaluators:
            ev = IncrementalEvaluator(
                self.models[name], self._swappable(name), cache_mb=self.cache_mb
            )
            ev.add_inputs("full", self._x_full, self._y_full)
            if self._drag is not None:
                ev.add_inputs("drag", *self._drag)
            self._evaluators[name] = ev
        return self._evaluators[name]

    def measure(self, full: bool = True) -> dict[str, Any]:
        """Compress as the widgets say, then measure accuracy (full test set or drag subset)."""
        self._cancel_release()
        steps, params, full = self._start_measure(full)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return self._record(done.value, params, full)

    def _start_measure(self, full: bool):
        """Install the current choice; the evaluation as steps, the parameter count, fullness."""
        ev = self.evaluator()
        params = self._install(ev)
        full = full or self._drag is None
        return ev.evaluate_steps("full" if full else "drag"), params, full

    def _record(self, metrics: dict[str, float], params: int, full: bool) -> dict[str, Any]:
        total = count_params(self.model)
        result = {
            "test_acc": metrics["accuracy"],
            "test_loss": metrics["loss"],
            "n_test": metrics["n"],
            "full": full,
            "params": params,
            "total_params": total,
            "param_reduction": 1.0 - params / total,
        }
        self.last = result
        return result

    def figure(self) -> Figure:
        """The current choice as a new matplotlib Figure (e.g. to save it)."""
        fig = Figure(figsize=self._figsize, layout="constrained")
        self._refresh(self._draw_figure(fig))
        return fig

    def _figure_png(self) -> bytes:
        """The live figure at the current state, as PNG (only the changing artists redrawn)."""
        key = self._figure_key()
        if self._live is None or self._live[0] != key:
            fig = Figure(figsize=self._figsize, layout="constrained")
            artists = self._draw_figure(fig)
            self._refresh(artists)
            self._live = (key, LiveFigure(fig, self._artist_list(artists), dpi=FIGURE_DPI), artists)
        _, live, artists = self._live
        self._refresh(artists)
        return live.png()

    def snapshot(self) -> Image:
        """The current figure as a PNG image: a static record that shows in any notebook output."""
        if not self.last.get("full") or "error" in self.last:
            self.update(full=True)
        return Image(data=self._figure_png())

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
        self.image.value = self._figure_png()

    def _fail(self, exc: BaseException) -> None:
        text = _error_text(exc)
        self._fail_text(text)
        self.last = {"error": text}

    def _fail_text(self, text: str) -> None:
        self.status.value = (
            f"<pre style='color:#b00020;white-space:pre-wrap;margin:0'>{html.escape(text)}</pre>"
        )

    def update(self, full: bool = True) -> None:
        """Measure, refresh the readouts and the figure; errors go to the status line."""
        try:
            self._finish(self.measure(full=full))
        except Exception as exc:  # shown in the widget, where the user is looking
            self._fail(exc)

    def _finish(self, result: dict[str, Any]) -> None:
        self._draw()  # figure first: when the readout says "full test set", the figure agrees
        self._show(result)
        self.status.value = ""
        if self.choice_error:
            self._fail_text(self.choice_error)

    def _changed(self, change: Any = None, *, settle: bool = True) -> None:
        """One user move: one evaluation (the drag subset), then the full set once settled.

        ``settle=False`` measures the full set at once: an explorer's first measurement, so that a
        batch (papermill) run leaves no timer or background measurement in the kernel.
        """
        if self._syncing:
            return
        self._cancel_timer()
        self._cancel_release()
        loop = _running_loop()
        if self.settle_seconds is None or self._drag is None or loop is None or not settle:
            self.update(full=True)  # nothing to wait for (plain Python, or no smaller subset)
            return
        self.update(full=False)
        self._timer = loop.call_later(self.settle_seconds, self._settled)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _settled(self) -> None:
        """The slider is still: measure the full test set, one batch per event-loop turn, so
        that the next move is handled at once (it abandons this measurement)."""
        self._timer = None
        loop = _running_loop()
        if loop is None:
            self.update(full=True)
            return
        self._cancel_release()
        try:
            steps, params, _ = self._start_measure(True)
        except Exception as exc:
            self._fail(exc)
            return
        self._release = (steps, params, loop, self.accuracy_label.value)
        self._release_shown = time.monotonic()
        self._release_handle = loop.call_soon(self._release_step)

    def _release_step(self) -> None:
        steps, params, loop, label = self._release
        self._release_handle = None
        try:
            fraction = next(steps)
        except StopIteration as done:
            self._release = None
            try:
                self._finish(self._record(done.value, params, True))
            except Exception as exc:
                self._fail(exc)
            return
        except Exception as exc:
            self._release = None
            self._fail(exc)
            return
        if time.monotonic() - self._release_shown > PROGRESS_SECONDS:  # a long one: say so
            self._release_shown = time.monotonic()
            n = len(self._y_full)
            self.accuracy_label.value = f"{label} · measuring all {n:,} images: {fraction:.0%}"
        self._release_handle = loop.call_soon(self._release_step)

    def _cancel_release(self) -> None:
        if self._release_handle is not None:
            self._release_handle.cancel()
            self._release_handle = None
        if self._release is not None:
            self._release[0].close()  # an abandoned measurement leaves no cached activations
            self._release = None

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
    seed
        Seed of the drag subset.
    factors
        Precomputed factors instead of the weight SVD (e.g. a data-aware SVD): an
        :class:`~smoothviz.compress.svd.SVDFactors` (or an object with the same interface, whose
        ``LayerFactors`` hold ``u``, ``s``, ``vh`` with ``u @ diag(s) @ vh`` approximating the
        layer's matrix view) for a single model, ``{model name: factors}`` for several, or a
        function ``model -> factors``. Their layers are the ones explored (do not pass
        ``layers`` as well). ``None``: :func:`~smoothviz.compress.svd.svd_factors` of each model.
    cache_mb
        Memory for cached activations per model, in MiB (0: none); deeper layers first.

    Attributes
    ----------
    reduction, method, layer_select, rank_sliders
        The controls (``rank_sliders`` maps layer name to an ``IntSlider``).
    accuracy_label, params_label, status, image
        The readouts, the error line and the figure (an ``Image`` widget updated in place).
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
        factors: Any = None,
        cache_mb: float = 512.0,
    ) -> None:
        check_slider_fraction("param_reduction", param_reduction)
        super().__init__(
            models,
            data,
            drag_subset=drag_subset,
            settle_seconds=settle_seconds,
            seed=seed,
            cache_mb=cache_mb,
        )
        self._factors = _resolve_factors(self.models, factors, layers)
        names = list(next(iter(self._factors.values())))
        self._installed: dict[str, dict[str, int | None]] = {}  # model -> layer -> installed rank
        self._allocations: dict[tuple, dict[str, int]] = {}
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
        self.reduction.add_class("smoothviz-reduction")
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
                self.image,
            ]
        )
        self.widget.add_class("smoothviz-rank-explorer")
        self._reduction_changed(settle=False)

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

    def _allocation(self) -> dict[str, int]:
        """:meth:`allocate` for the current controls, remembered (a drag revisits values)."""
        key = (self.model_select.value, self.method.value, self.reduction.value)
        if key not in self._allocations:
            if len(self._allocations) >= 1024:
                self._allocations.clear()
            self._allocations[key] = self.allocate(key[2], ALLOCATIONS[key[1]])
        return dict(self._allocations[key])

    def _reduction_changed(self, change: Any = None, *, settle: bool = True) -> None:
        try:
            ranks = self._allocation()
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
        self._changed(settle=settle)

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

    def _swappable(self, name: str) -> list[str]:
        return list(self._factors[name])

    def _install(self, evaluator: IncrementalEvaluator) -> int:
        """Swap in the layers whose rank changed since the last evaluation of this model.

        A layer is factorised where that saves parameters and the rank is below full, as in
        :func:`~smoothviz.compress.svd.compress_from_factors`; otherwise it stays dense.
        """
        from smoothviz.compress.svd import factorize_layer

        factors, ranks = self.factors, self.ranks
        installed = self._installed.setdefault(self.model_select.value, {})
        changed = {}
        for name, rank in ranks.items():
            f = factors[name]
            if not 1 <= rank <= f.max_rank:
                raise ValueError(f"rank of {name!r} must be in [1, {f.max_rank}], got {rank!r}")
            used = rank if rank <= f.break_even_rank and rank < f.max_rank else None
            if name not in installed or installed[name] != used:
                original = self.model.get_submodule(name)
                changed[name] = original if used is None else factorize_layer(original, used, f)
                installed[name] = used
        if changed:
            try:
                evaluator.swap(changed)
            except BaseException:
                self._installed.pop(self.model_select.value, None)  # state unknown: rebuild all
                raise
        return factors.params_at(ranks)

    _figsize = (9.5, 3.2)

    def _figure_key(self) -> Any:
        return (self.model_select.value, self.layer_select.value)

    def _draw_figure(self, fig: Figure) -> dict[str, Any]:
        """The chosen layer's spectrum with its rank marked, and every layer's kept rank."""
        from smoothviz.plots import plot_spectra

        factors, ranks = self.factors, self.ranks
        layer = self.layer_select.value
        s = factors[layer].s.double()
        spectrum = pd.DataFrame(
            {
                "layer": layer,
                "index": np.arange(1, len(s) + 1),
                "sigma_normalized": (s / s[0].clamp_min(1e-300)).numpy(),
            }
        )
        ax1, ax2 = fig.subplots(1, 2)
        plot_spectra(spectrum, layer, ranks={layer: ranks[layer]}, ax=ax1)
        names = list(ranks)
        bars = ax2.bar(range(len(names)), [1.0] * len(names), color="C0")
        ax2.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("rank / full rank")
        ax2.set_title("kept rank (grey: left dense)")
        title = fig.suptitle(" ")
        return {"line": ax1.lines[-1], "label": ax1.texts[-1], "bars": bars, "title": title}

    @staticmethod
    def _artist_list(artists: Any) -> list[Artist]:
        return [artists["line"], artists["label"], *artists["bars"], artists["title"]]

    def _refresh(self, artists: dict[str, Any]) -> None:
        factors, ranks = self.factors, self.ranks
        rank = ranks[self.layer_select.value]
        artists["line"].set_xdata([rank, rank])
        artists["label"].xy = (rank, 1)
        artists["label"].set_text(f"r={rank}")
        for bar, (name, r) in zip(artists["bars"], ranks.items(), strict=True):
            f = factors[name]
            bar.set_height(r / f.max_rank)
            bar.set_color("C0" if r <= f.break_even_rank and r < f.max_rank else "0.6")
        text = f"{self.model_select.value}: measuring…"
        if self.last.get("test_acc") is not None:
            text = (
                f"{self.model_select.value}: test accuracy "
                f"{100 * self.last['test_acc']:.2f} % at "
                f"{100 * self.last['param_reduction']:.1f} % fewer parameters "
                f"({self.last['n_test']} test images)"
            )
        artists["title"].set_text(text)


def _resolve_factors(models: Mapping[str, nn.Module], factors: Any, layers: Any) -> dict:
    """``{model name: factors}`` from RankExplorer's ``factors`` argument, checked."""
    from smoothviz.compress.svd import svd_factors

    if factors is not None and layers is not None:
        raise TypeError("pass layers or factors (whose keys are the layers), not both")
    if factors is None:
        resolved = {name: svd_factors(m, layers) for name, m in models.items()}
    elif hasattr(factors, "params_at"):  # one factors object
        if len(models) != 1:
            raise ValueError(
                f"factors: one set of factors fits one model; pass {{model name: factors}} for "
                f"the models {list(models)}"
            )
        resolved = {next(iter(models)): factors}
    elif isinstance(factors, Mapping):
        if set(factors) != set(models):
            raise ValueError(
                f"factors: keys {sorted(factors)} must be the model names {sorted(models)}"
            )
        resolved = {name: factors[name] for name in models}
    elif callable(factors):
        resolved = {name: factors(m) for name, m in models.items()}
    else:
        raise TypeError(
            "factors must be None, an SVDFactors, {model name: SVDFactors} or a function "
            f"model -> SVDFactors, got {type(factors).__name__}"
        )
    first = None
    for name, f in resolved.items():
        _check_factors(name, models[name], f)
        if first is None:
            first = list(f)
        elif list(f) != first:
            raise ValueError(
                f"factors: model {name!r} has layers {list(f)} but the first model has {first}; "
                "the rank sliders need the same layers in every model"
            )
    if not first:
        raise ValueError("layers: no factorisable Conv2d/Linear layer selected")
    return resolved


def _check_factors(name: str, model: nn.Module, factors: Any) -> None:
    needed = ("params_at", "ranks_for_reduction", "ranks_for_energy", "total_params")
    missing = [a for a in needed if not hasattr(factors, a)]
    if missing or not isinstance(factors, Mapping):
        raise TypeError(
            f"factors of model {name!r} must be an SVDFactors-like mapping (lacks {missing})"
        )
    modules = dict(model.named_modules())
    for layer, f in factors.items():
        m = modules.get(layer)
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or tuple(m.weight.shape) != tuple(
            f.weight_shape
        ):
            raise ValueError(
                f"factors: layer {layer!r} of model {name!r} does not match the factors "
                f"(weight shape {tuple(f.weight_shape)}); compute them from this model"
            )


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
    drag_subset, settle_seconds, seed, cache_mb
        As for :class:`RankExplorer`.

    Attributes
    ----------
    ratio, method
        The controls; ``accuracy_label``, ``params_label``, ``status``, ``image`` and ``widget`` as
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
        cache_mb: float = 512.0,
    ) -> None:
        check_slider_fraction("ratio", ratio)
        super().__init__(
            models,
            data,
            drag_subset=drag_subset,
            settle_seconds=settle_seconds,
            seed=seed,
            cache_mb=cache_mb,
        )
        from smoothviz.layers import select_layers

        self.layers = layers
        self._layer_names = [n for n, _ in select_layers(next(iter(self.models.values())), layers)]
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
                self.image,
            ]
        )
        self.widget.add_class("smoothviz-prune-explorer")
        self._pruned: tuple[Any, nn.Module] | None = None
        self._changed(settle=False)

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

    def _swappable(self, name: str) -> None:
        return None  # structured pruning also shrinks BatchNorms and the next layers' inputs

    def _install(self, evaluator: IncrementalEvaluator) -> int:
        pruned = self.compressed_model()
        evaluator.load(pruned)  # swaps only the modules that differ from the installed ones
        return count_params(pruned)

    _figsize = (6.5, 3.0)

    def _draw_figure(self, fig: Figure) -> dict[str, Any]:
        """Per layer, the fraction of weights that the pruned model keeps."""
        ax = fig.subplots()
        names = self._layer_names
        bars = ax.bar(range(len(names)), [1.0] * len(names), color="C1")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
        ax.set_ylim(0, 1)
        ax.set_ylabel("kept weights / original")
        title = ax.set_title(" ")
        return {"bars": bars, "title": title}

    @staticmethod
    def _artist_list(artists: Any) -> list[Artist]:
        return [*artists["bars"], artists["title"]]

    def _refresh(self, artists: dict[str, Any]) -> None:
        import torch

        pruned = self.compressed_model()
        for bar, name in zip(artists["bars"], self._layer_names, strict=True):
            before = self.model.get_submodule(name).weight.numel()
            after = int(torch.count_nonzero(pruned.get_submodule(name).weight))
            bar.set_height(after / before)
        title = f"{self.method.value} at {100 * self.ratio.value:.0f} %"
        if self.last.get("test_acc") is not None:
            title += (
                f": test accuracy {100 * self.last['test_acc']:.2f} % "
                f"({self.last['n_test']} images)"
            )
        artists["title"].set_text(title)
