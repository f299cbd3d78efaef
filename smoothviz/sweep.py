"""Compress several trained models with several methods at several budgets; one tidy table out.

One row per ``(training, method, target_reduction)``, every one evaluated under one protocol:
test accuracy straight after compression (no gradient step), BatchNorm re-estimation on training
images as its own column, every parameter counted (non-zeros for magnitude pruning), FLOPs from
``torch.utils.flop_counter``, measured latency with the device named. The expensive per-model
work (each layer's SVD, the interpolative decomposition's pivoted QRs) is done once per model and
reused for every budget, and so is the evaluation of what a compressed model leaves unchanged:
each one is evaluated from its first changed layer on, from the model's own cached activations
(:class:`smoothviz.variant_eval.VariantEvaluator`; the accuracies are exactly a plain
evaluation's). :func:`sweep_seeds` runs the sweep for the trainings of several seeds; every row
carries its ``seed``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from smoothviz._validation import check_choice, check_int
from smoothviz.compress import (
    METHODS,
    BudgetError,
    data_aware_svd_compress,
    data_aware_svd_factors,
    hybrid_compress,
    hybrid_factors,
    interpolative_compress,
    interpolative_factors,
    prune_channels,
    prune_magnitude,
    svd_compress,
    svd_factors,
)
from smoothviz.compress.budget import check_reduction
from smoothviz.compress.layer_inputs import share_reference_inputs
from smoothviz.data import ImageData
from smoothviz.measure import (
    bn_reestimate as _bn_reestimate,
)
from smoothviz.measure import (
    count_flops,
    count_params,
    measure_latency,
)
from smoothviz.progress import progress_bar
from smoothviz.threads import share_threads
from smoothviz.variant_eval import VariantEvaluator

COLUMNS = [
    "training",
    "seed",
    "method",
    "target_reduction",
    "param_reduction",
    "params",
    "params_uncompressed",
    "flops",
    "latency_ms",
    "latency_iqr_ms",
    "compress_seconds",
    "test_acc",
    "test_loss",
    "test_acc_bn_reestimated",
    "test_loss_bn_reestimated",
    "test_acc_uncompressed",
    "device",
    "error",
]


# --- compression-side reuse (issue 25): used by compress() only --------------------------------
def _share_recordings(cache: Mapping[Any, Any]) -> None:
    """One recording of the original model's layer inputs per model and calibration set, whichever
    method made it first (each factor object keeps what it uses in its own ``cache``)."""
    stores = [f.cache for f in cache.values() if isinstance(getattr(f, "cache", None), dict)]
    share_reference_inputs(stores)


def compress(
    model: nn.Module,
    method: str,
    param_reduction: float,
    *,
    calibration: torch.Tensor | None = None,
    cache: dict[str, Any] | None = None,
    layers: Sequence[str] | str | None = None,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Compress ``model`` by ``method`` (one of ``METHODS``) to a whole-network reduction target.

    ``cache`` (a dict you keep per model) stores what is computed once per model between calls:
    the SVD factors, the data-aware SVD factors, the ID pivoted QRs, the hybrid's scores, any
    allocation scores derived from them, and (inside the factors) the original model's layer
    inputs that the sequential methods compare with, so that a further target runs only the
    compressed model. A result computed with a warm cache is bit-identical to one computed
    from scratch. ``options`` are extra keyword arguments of the method's function, e.g.
    ``{"allocation": "sensitivity"}`` for ``svd`` or ``{"sequential": False}`` for
    ``svd_data_aware``.

    Sets torch's CPU threads to this process's share of the cores first
    (:func:`smoothviz.threads.share_threads`; ``SMOOTHVIZ_THREADS=off`` opts out).
    """
    check_choice("method", method, METHODS)
    share_threads()
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict of keyword arguments or None, got {options!r}")
    opts = dict(options or {})
    cache = {} if cache is None else cache
    if method == "svd":
        if "svd" not in cache:
            cache["svd"] = svd_factors(model, layers)
        if opts.get("allocation", "energy") != "energy":
            opts.setdefault("calibration", calibration)
        return svd_compress(
            model, param_reduction=param_reduction, layers=layers, factors=cache["svd"], **opts
        )
    if method == "svd_data_aware":
        if calibration is None:
            raise TypeError("calibration is required for method='svd_data_aware'")
        made_with = {k: opts.pop(k) for k in ("damping", "output_weighting") if k in opts}
        key = ("svd_data_aware", tuple(sorted(made_with.items())))
        if key not in cache:
            cache[key] = data_aware_svd_factors(model, calibration, layers=layers, **made_with)
        _share_recordings(cache)
        return data_aware_svd_compress(
            model,
            calibration,
            param_reduction=param_reduction,
            layers=layers,
            factors=cache[key],
            **opts,
        )
    if method == "prune_magnitude":
        return prune_magnitude(model, param_reduction=param_reduction, layers=layers, **opts)
    if method == "prune_channels":
        return prune_channels(
            model, calibration, param_reduction=param_reduction, layers=layers, **opts
        )
    if method == "hybrid":
        if calibration is None:
            raise TypeError("calibration is required for method='hybrid'")
        made_with = {k: opts.pop(k) for k in ("damping",) if k in opts}
        key = ("hybrid", tuple(sorted(made_with.items())))
        if key not in cache:  # the other methods' factors, when this sweep made them already
            cache[key] = hybrid_factors(
                model,
                calibration,
                layers=layers,
                data_aware=None if made_with else cache.get(("svd_data_aware", ())),
                interpolative=cache.get("interpolative"),
                **made_with,
            )
        _share_recordings(cache)
        return hybrid_compress(model, param_reduction=param_reduction, factors=cache[key], **opts)
    if "interpolative" not in cache:
        if calibration is None:
            raise TypeError("calibration is required for method='interpolative'")
        cache["interpolative"] = interpolative_factors(model, calibration, layers=layers)
    _share_recordings(cache)
    return interpolative_compress(
        model, param_reduction=param_reduction, factors=cache["interpolative"], **opts
    )


def sweep(
    models: Mapping[str, nn.Module],
    methods: Sequence[str],
    reductions: Sequence[float],
    data: ImageData,
    *,
    bn_reestimate: bool = True,
    calibration_size: int = 512,
    bn_images: int = 2048,
    layers: Sequence[str] | str | None = None,
    latency_batch: int = 32,
    latency_repeats: int = 10,
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool | None = True,
    per_image: bool = False,
    incremental: bool = True,
) -> pd.DataFrame:
    """Compress every model by every method at every target and measure each result.

    Parameters
    ----------
    models
        ``{training name: trained model}`` (not modified), e.g. ``{"baseline": ..., "smooth": ...}``.
    methods
        Any of :data:`smoothviz.compress.METHODS`: ``"svd"``, ``"svd_data_aware"``,
        ``"prune_magnitude"``, ``"prune_channels"``, ``"interpolative"``, ``"hybrid"``.
    reductions
        Whole-network parameter-reduction targets, each in [0, 1).
    data
        Train split for calibration and BN re-estimation; test split for the accuracy.
    bn_reestimate
        Also report accuracy after BatchNorm re-estimation on training images (own columns).
    calibration_size
        Training images used by the data-aware methods (at most all of them): data-aware SVD,
        interpolative decomposition, channel importance and bias compensation of
        ``prune_channels``.
    bn_images
        Training images used for BN re-estimation.
    layers
        Layer selection for every method (default: all Conv2d/Linear but the first and the last).
    latency_batch, latency_repeats
        Batch size and timed repetitions of the latency measurement (median reported).
    seed
        Chooses the calibration images (and the BN re-estimation images); recorded in every row's
        ``seed`` (:func:`sweep_seeds` passes each training seed, so a seed's two trainings share
        their calibration images).
    options
        ``{method: {keyword: value}}``: extra arguments of a method's function, e.g.
        ``{"svd": {"allocation": "sensitivity"}}`` (see :func:`compress`).
    progress
        Show a tqdm progress bar (None: only in a live notebook, see
        :func:`smoothviz.progress.progress_enabled`).
    per_image
        Also keep, per row, which test images the compressed model classifies correctly: column
        ``test_correct``, a bool array (None where the target was not reached). The headline's
        one-seed interval needs it; :func:`smoothviz.headline.save_results` stores it compactly.
    incremental
        Evaluate each compressed model from its first changed layer on, from the model's cached
        activations (:class:`~smoothviz.variant_eval.VariantEvaluator`): the same accuracies and
        losses, bit for bit, for less work. False: a plain evaluation of every model.

    Returns
    -------
    pandas.DataFrame
        One row per (training, method, target_reduction), columns :data:`COLUMNS` (and
        ``test_correct``). A target a method cannot reach gives a row with the reason in ``error``
        and NaN measurements.
    """

    if not isinstance(models, Mapping) or not models:
        raise TypeError("models must be a non-empty dict {training name: nn.Module}")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods: {bad or 'none'} given; allowed: {list(METHODS)}")
    reductions = [check_reduction(r, "reductions") for r in reductions]
    options = {} if options is None else options
    if not isinstance(options, Mapping) or any(
        not isinstance(v, Mapping) for v in options.values()
    ):
        raise TypeError(f"options must be a dict {{method: {{keyword: value}}}}, got {options!r}")
    stray = [m for m in options if m not in methods]
    if stray:
        raise ValueError(f"options: {stray} are not among the methods swept ({list(methods)})")
    if not isinstance(data, ImageData):
        raise TypeError(f"data must be an ImageData, got {type(data).__name__}")
    calibration_size = check_int("calibration_size", calibration_size, low=1)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data.y_train), generator=g)
    calibration = data.x_train[perm[:calibration_size]]
    bn_x = data.x_train[perm[:bn_images]]
    rows = []
    bar = progress_bar(
        len(models) * len(methods) * len(reductions), f"sweep (seed {seed})", progress=progress
    )
    for training, model in models.items():
        model.eval()
        device = next(model.parameters()).device
        example = data.x_test[:1].to(device)
        latency_x = data.x_test[:latency_batch].to(device)
        base_params = count_params(model)
        evaluators = _Evaluators(model, data, bn_x if bn_reestimate else None, incremental)
        base_acc = evaluators.plain.evaluate()["accuracy"]
        cache: dict[str, Any] = {}
        for method in methods:
            for target in reductions:
                bar.set_postfix_str(f"{training} {method} {target:.2f}")
                row: dict[str, Any] = {
                    "training": training,
                    "seed": seed,
                    "method": method,
                    "target_reduction": target,
                    "params_uncompressed": base_params,
                    "test_acc_uncompressed": base_acc,
                    "error": None,
                }
                try:
                    t0 = time.perf_counter()
                    small = compress(
                        model,
                        method,
                        target,
                        calibration=calibration,
                        cache=cache,
                        layers=layers,
                        options=options.get(method),
                    )
                    row["compress_seconds"] = time.perf_counter() - t0
                except BudgetError as exc:
                    row["error"] = str(exc)
                    rows.append(row)
                    bar.update()
                    continue
                params = count_params(small)
                lat = measure_latency(small, latency_x, repeats=latency_repeats)
                row.update(
                    param_reduction=1.0 - params / base_params,
                    params=params,
                    flops=count_flops(small, example),
                    latency_ms=lat["latency_ms"],
                    latency_iqr_ms=lat["latency_iqr_ms"],
                    device=lat["device"],
                )
                row.update(evaluators.measure(small, per_image))
                rows.append(row)
                bar.update()
    bar.close()
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    if per_image:  # None, not NaN, where nothing was measured
        table["test_correct"] = [r.get("test_correct") for r in rows]
    return table


class _Evaluators:
    """The test-set evaluations of one model's compressed variants, plain and after BatchNorm
    re-estimation on ``bn_x`` (None: not measured), each reusing the unchanged prefix."""

    def __init__(self, model: nn.Module, data: ImageData, bn_x: torch.Tensor | None, incremental):
        self._data, self._bn_x, self._incremental = data, bn_x, incremental
        self.plain = VariantEvaluator(model, data.x_test, data.y_test, incremental=incremental)
        self._model = model
        self._bn: VariantEvaluator | None = None

    def bn(self) -> VariantEvaluator:
        """The evaluator of the re-estimated model, made on first use: re-estimation gives an
        unchanged prefix the same statistics in the model and in every variant."""
        if self._bn is None:
            base = _bn_reestimate(self._model, self._bn_x, max_images=None)
            x, y = self._data.x_test, self._data.y_test
            self._bn = VariantEvaluator(base, x, y, incremental=self._incremental)
        return self._bn

    def measure(self, small: nn.Module, per_image: bool) -> dict[str, Any]:
        """The accuracy columns of one compressed model's row."""
        metrics = self.plain.evaluate(small, per_image=per_image)
        out: dict[str, Any] = {"test_acc": metrics["accuracy"], "test_loss": metrics["loss"]}
        if per_image:
            out["test_correct"] = metrics["correct"].numpy()
        if self._bn_x is not None:
            re = self.bn().evaluate(_bn_reestimate(small, self._bn_x, max_images=None))
            out.update(test_acc_bn_reestimated=re["accuracy"], test_loss_bn_reestimated=re["loss"])
        return out


def sweep_seeds(
    models: Mapping[int, Mapping[str, nn.Module]],
    methods: Sequence[str],
    reductions: Sequence[float],
    data: ImageData,
    **options: Any,
) -> pd.DataFrame:
    """:func:`sweep` for the trainings of several seeds: one table, every row with its ``seed``.

    Parameters
    ----------
    models
        ``{seed: {training name: model}}``, e.g. ``{0: {"baseline": ..., "smooth": ...}, 1: ...}``.
        Each seed's models are swept with ``seed=`` that seed, so they share calibration and BN
        re-estimation images (and every seed's rows use the same test images): smooth and
        baseline are paired within a seed.
    methods, reductions, data, **options
        As for :func:`sweep` (``seed`` is not an option here).
    """
    if not isinstance(models, Mapping) or not models:
        raise TypeError("models must be a non-empty dict {seed: {training name: nn.Module}}")
    if "seed" in options:
        raise TypeError("sweep_seeds takes the seeds from models' keys; do not pass seed=")
    bad = [s for s in models if not isinstance(s, int) or isinstance(s, bool) or s < 0]
    if bad:
        raise ValueError(f"models: seeds must be ints >= 0, got {bad}")
    frames = [sweep(m, methods, reductions, data, seed=s, **options) for s, m in models.items()]
    return pd.concat(frames, ignore_index=True)
