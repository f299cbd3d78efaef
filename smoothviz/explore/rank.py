"""The rank explorer: choose SVD ranks and watch accuracy, parameter count and the spectrum.

A global parameter-reduction slider (split into per-layer ranks by one of :data:`ALLOCATIONS`), one
rank slider per layer (shown as "r / full rank") and a drop-down for the spectrum shown. The SVD of
every layer is computed once per model (or passed in as ``factors``); moving a slider only slices
the cached factors, and only the layers whose rank changed are rebuilt in the model's
:class:`~smoothviz.explore.incremental.IncrementalEvaluator`. FLOPs per image come from a table
counted once per model (:class:`~smoothviz.explore.flops.RankFlops`), so a move only sums it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as W
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from torch import nn

from smoothviz._validation import check_int
from smoothviz.compress.rank_allocation import closest_ranks
from smoothviz.compress.svd import (
    compress_from_factors,
    factorize_layer,
    svd_factors,
)
from smoothviz.compress.targets import renamed_keyword
from smoothviz.data import ImageData
from smoothviz.explore.base import (
    DEFAULT_SAVE_DIR,
    SLIDER_FORMAT,
    SLIDER_STEP,
    TITLE_POINTS,
    Explorer,
)
from smoothviz.explore.flops import RankFlops
from smoothviz.explore.incremental import IncrementalEvaluator
from smoothviz.notebook_params import SLIDER_MAX, check_slider_fraction
from smoothviz.plots import plot_kept_ranks, plot_spectrum
from smoothviz.plots.layers import place_rank_label, style_rank_bar
from smoothviz.progress import progress_bar

# Drop-down label -> allocation of smoothviz.compress.rank_allocation.closest_ranks.
ALLOCATIONS = {
    "svd · global σ² threshold": "energy",
    "svd · equal kept energy per layer": "uniform_energy",
    "svd · equal rank fraction per layer": "uniform_rank",
}
# The names RankExplorer.allocate took before the package's one vocabulary (docs/methods.md).
_OLD_ALLOCATION_NAMES = {"global": "energy", "energy": "uniform_energy", "fraction": "uniform_rank"}


class RankExplorer(Explorer):
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
    arch, save_dir, progress
        What :meth:`save` records to rebuild the model, where the Save button writes, and
        whether slow steps show a progress bar (see :class:`~smoothviz.explore.base.Explorer`).

    Attributes
    ----------
    reduction, method, layer_select, rank_sliders
        The controls (``rank_sliders`` maps layer name to an ``IntSlider``; the reduction slider
        moves in steps of 0.5 %).
    accuracy_label, params_label, status, image
        The readouts, the error line and the figure (an ``Image`` widget updated in place).
    save_button, saved_label
        Writes the current choice into ``save_dir`` (:meth:`save`); shows the path written.
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
        arch: Mapping[str, Any] | None = None,
        save_dir: Any = DEFAULT_SAVE_DIR,
        progress: bool | None = None,
    ) -> None:
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
        self._factors = _resolve_factors(self.models, factors, layers, progress=self.progress)
        names = list(next(iter(self._factors.values())))
        self._installed: dict[str, dict[str, int | None]] = {}  # model -> layer -> installed rank
        self._allocations: dict[tuple, dict[str, int]] = {}
        self._flop_tables: dict[str, RankFlops] = {}
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
        # "/ full rank" after each slider's own (editable) readout: the slider reads "r / max".
        self.rank_max_labels = {
            name: W.HTML(f"/ {factors[name].max_rank}", layout=W.Layout(width="3.5em"))
            for name in names
        }
        self.reduction.add_class("smoothviz-reduction")
        for name, slider in self.rank_sliders.items():
            slider.add_class("smoothviz-rank-slider")
            self.rank_max_labels[name].add_class("smoothviz-rank-max")
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
                W.VBox(controls),
                self._readouts(),
                W.HTML("<b>rank per layer</b> (r / full rank; moving one overrides the split)"),
                W.GridBox(
                    [
                        W.HBox([slider, self.rank_max_labels[name]])
                        for name, slider in self.rank_sliders.items()
                    ],
                    layout=W.Layout(grid_template_columns="repeat(2, 48%)"),
                ),
                self.status,
                self.image,
                self._save_row(),
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

    def allocate(
        self, param_reduction: float, allocation: str | None = None, *, method: str | None = None
    ) -> dict[str, int]:
        """Per-layer ranks for a whole-network reduction, split by ``allocation``.

        ``"energy"`` (default): one threshold on ``σ² / Σσ²`` across layers (what
        ``svd_compress`` does; where that cannot meet the target within 1 pp, the closest split is
        taken and the parameter readout shows what was reached); ``"uniform_energy"``: the same
        kept energy in every layer; ``"uniform_rank"``: the same fraction of each layer's full
        rank. See :func:`smoothviz.compress.rank_allocation.closest_ranks`.

        ``method=`` (``"global"``, ``"energy"``, ``"fraction"``) is the old name of this
        argument and its values, accepted for one release with a ``DeprecationWarning``.
        """
        if method is not None:
            if method not in _OLD_ALLOCATION_NAMES:
                raise ValueError(
                    f"method must be one of {list(_OLD_ALLOCATION_NAMES)}, got {method!r}"
                )
            allocation = renamed_keyword(
                "RankExplorer.allocate",
                "method",
                "allocation",
                _OLD_ALLOCATION_NAMES[method],
                allocation,
            )
        return closest_ranks(self.factors, param_reduction, allocation or "energy")

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
            self._choice_failed(exc)
            return
        self._syncing = True
        try:
            for name, slider in self.rank_sliders.items():
                slider.max = self.factors[name].max_rank
                slider.value = ranks[name]
                self.rank_max_labels[name].value = f"/ {slider.max}"
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
        """The current choice: model, how the budget is split (``method`` as the drop-down says
        it, ``allocation`` in the package's vocabulary), the target reduction as the slider shows
        it, and every layer's rank (``{layer: rank}``)."""
        return {
            "model": self.model_select.value,
            "method": self.method.value,
            "allocation": ALLOCATIONS[self.method.value],
            "target_reduction": round(self.reduction.value, 3),
            "ranks": self.ranks,
        }

    def _save_stem(self) -> str:
        reached = self.last.get("param_reduction", self.reduction.value)
        return f"{self.model_select.value}-svd-{100 * reached:.1f}pct"

    def _flops(self) -> tuple[int, int, bool]:
        name = self.model_select.value
        if name not in self._flop_tables:
            self._flop_tables[name] = RankFlops(self.model, self.factors, self._x_full[:1])
        table = self._flop_tables[name]
        return table.at(self.ranks), table.total, False

    def compressed_model(self) -> nn.Module:
        """A compressed copy of the current model at the current ranks (slices cached factors)."""
        return compress_from_factors(self.model, self.factors, self.ranks)

    def _swappable(self, name: str) -> list[str]:
        return list(self._factors[name])

    def _install(self, evaluator: IncrementalEvaluator) -> int:
        """Swap in the layers whose rank changed since the last evaluation of this model.

        A layer is factorised where that saves parameters and the rank is below full, as in
        :func:`~smoothviz.compress.svd.compress_from_factors`; otherwise it stays dense.
        """
        factors, ranks = self.factors, self.ranks
        installed = self._installed.setdefault(self.model_select.value, {})
        changed = {}
        for name, rank in ranks.items():
            f = factors[name]
            check_int(f"rank of {name!r}", rank, low=1, high=f.max_rank)
            used = rank if f.factorizes_at(rank) else None
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

    _figsize = (10.0, 4.6)
    _title_lines = 2

    def _figure_key(self) -> Any:
        return (self.model_select.value, self.layer_select.value)

    def _draw_figure(self, fig: Figure) -> dict[str, Any]:
        """The chosen layer's spectrum with its rank marked, and every layer's kept rank."""
        layer = self.layer_select.value
        ax1, ax2 = fig.subplots(1, 2)
        plot_spectrum(self.factors[layer].s, layer, rank=self.ranks[layer], ax=ax1)
        plot_kept_ranks(self._rank_frame(), ax=ax2)
        return {
            "line": ax1.lines[-1],  # the rank marker and its label
            "label": ax1.texts[-1],
            "bars": ax2.containers[-1],
            # the measurement, in words; laid out with all its lines, so no state is clipped
            "title": fig.suptitle(self._title(fig, " "), fontsize=TITLE_POINTS),
        }

    def _rank_frame(self) -> pd.DataFrame:
        """The current ranks as :func:`~smoothviz.analysis.chosen_ranks` names them."""
        factors = self.factors
        return pd.DataFrame(
            [
                {
                    "layer": name,
                    "rank": rank,
                    "full_rank": factors[name].max_rank,
                    "factorized": factors[name].factorizes_at(rank),
                }
                for name, rank in self.ranks.items()
            ]
        )

    @staticmethod
    def _artist_list(artists: Any) -> list[Artist]:
        return [artists["line"], artists["label"], *artists["bars"], artists["title"]]

    def _refresh(self, artists: dict[str, Any]) -> None:
        factors, ranks = self.factors, self.ranks
        rank = ranks[self.layer_select.value]
        artists["line"].set_xdata([rank, rank])
        place_rank_label(artists["label"], rank)
        for bar, (name, r) in zip(artists["bars"], ranks.items(), strict=True):
            f = factors[name]
            style_rank_bar(bar, r / f.max_rank, f.factorizes_at(r))
        title = artists["title"]
        words = f"{self.model_select.value}: {self._measurement_words()}"
        title.set_text(self._title(title.figure, words))


def _resolve_factors(
    models: Mapping[str, nn.Module], factors: Any, layers: Any, *, progress: bool | None = None
) -> dict:
    """``{model name: factors}`` from RankExplorer's ``factors`` argument, checked; computed
    factors show a progress bar over the models where ``progress`` says so."""
    if factors is not None and layers is not None:
        raise TypeError("pass layers or factors (whose keys are the layers), not both")
    if factors is None or (callable(factors) and not isinstance(factors, Mapping)):
        compute = (lambda m: svd_factors(m, layers)) if factors is None else factors
        resolved = {}
        with progress_bar(len(models), "factors", progress=progress, unit="model") as bar:
            for name, m in models.items():
                resolved[name] = compute(m)
                bar.update()
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


# Its layer-shape loop repeats the one in compress_from_factors: swap in the compress package's
# check once that is public.
def _check_factors(name: str, model: nn.Module, factors: Any) -> None:
    """``factors`` has the interface the explorer uses and matches ``model``'s layers."""
    needed = ("params_at", "total_params")
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
