"""Data-aware truncated SVD: truncate each layer where its *output* on real inputs changes least.

Weight-only SVD minimises ``||W - W_r||_F`` and so treats every input direction alike. What the
network sees is the layer's output on its actual inputs. With ``X`` the layer's inputs on ``N``
calibration images (for a ``Conv2d`` its patches, the columns of ``F.unfold`` with the layer's
stride, padding, dilation and padding mode), the best rank-``r`` weight in ``||(W - W_r) X||_F``
is found by whitening:

    C = X Xᵀ / N + δ·(tr C / n)·I = L Lᵀ       (Cholesky; eigen-whitening if that fails)
    D W L = U Σ Vᵀ,   W_r = D⁻¹ U_r Σ_r V_rᵀ L⁻¹

``D`` (ours, ``output_weighting="batchnorm"``) weights each output channel by the BatchNorm that
follows the layer, ``|γ| / sqrt(running_var + ε)``, so that the error is measured where the next
layer sees it: a BatchNorm makes the network blind to the scale of the conv weight before it, so
raw output errors of two layers are not comparable, but post-BatchNorm errors are. ``σ_j²`` is
then the output error (per calibration image, post-BatchNorm units) that removing rank-one term
``j`` causes, in the same units in every layer; that is the score the global budget compares.

The factors are stored as an :class:`~smoothviz.compress.factorized.SVDFactors` whose
``u = D⁻¹U``, ``s = Σ`` and ``vh = Vᵀ L⁻¹``, so the factorised layers are built by the same code
as the weight-only SVD (first layer ``Σ^½ Vᵀ L⁻¹``, second ``D⁻¹ U Σ^½``) and have exactly its
shape and cost; the rank-explorer widget and
:func:`~smoothviz.compress.factorized.compress_from_factors` take them as they are.

Sequential mode (``sequential=True``): the layers are refitted in forward order on the inputs
``X̂`` produced by the already-compressed layers before them, to the *original* outputs ``W X``:
``W* = W X X̂ᵀ (X̂ X̂ᵀ)⁻¹`` then the whitened truncation of ``W*`` on ``X̂``; later layers so
correct the errors of earlier ones.

What a layer sees (patches, input statistics, the BatchNorm weighting ``D``) comes from
:mod:`~smoothviz.compress.layer_inputs`; the request, the factor types and the factorised layers
from :mod:`~smoothviz.compress.factorized`; the rank allocations from
:mod:`~smoothviz.compress.rank_allocation`. This module holds the whitening, the factors and the
sequential refit; the whitening and the truncation itself are in
:mod:`~smoothviz.compress.output_fit` (shared with the hybrid method).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from smoothviz._validation import check_choice, check_int, check_number
from smoothviz.compress.calibration import check_calibration
from smoothviz.compress.factorized import (
    LayerFactors,
    SVDFactors,
    factorized_model,
    param_count,
    resolve_svd_request,
    split_for_svd,
    svd_layers,
    svd_target,
)
from smoothviz.compress.layer_inputs import (
    ReferenceInputs,
    collect_input_stats,
    output_weights,
    paired_layer_inputs,
    reference_inputs,
)
from smoothviz.compress.layer_stream import RefitPass
from smoothviz.compress.output_fit import truncation_factors, whiten
from smoothviz.compress.rank_allocation import (
    allocate_ranks,
    choose_ranks,
    output_error_scores,
    rank_sensitivity,
)
from smoothviz.compress.shrinkage import RowShortfall, sample_shrinkage, warn_few_rows
from smoothviz.layers import matrix_view, select_layers

DEFAULT_DAMPING = 1e-2
OUTPUT_WEIGHTINGS = ("batchnorm", "none")
ALLOCATIONS = ("output_error", "energy", "sensitivity")  # the default first

__all__ = [
    "ALLOCATIONS",
    "DEFAULT_DAMPING",
    "OUTPUT_WEIGHTINGS",
    "DataAwareFactors",
    "data_aware_svd_compress",
    "data_aware_svd_factors",
    "refit_layer",
    "sequential_refit",
    # moved to output_fit.py; importable from here as before
    "truncation_factors",
    "whiten",
    # moved to rank_allocation.py; importable from here as before
    "allocate_ranks",
    "output_error_scores",
    "rank_sensitivity",
]


# --------------------------------------------------------------------------------- the factors
class DataAwareFactors(SVDFactors):
    """Whitened SVDs of a model's layers, by layer name; build with
    :func:`data_aware_svd_factors`.

    An :class:`~smoothviz.compress.factorized.SVDFactors` (``compress_from_factors`` and the rank explorer
    take it as it is) whose ``s`` are the singular values of ``D W L``, plus ``skipped``
    (layer -> why it stays dense), ``order`` (the order the forward pass runs the layers),
    ``settings`` (damping, weighting, whitening used per layer) and ``output_weights`` (``D``).
    """

    method = "svd_data_aware"

    def __init__(
        self,
        factors: dict[str, LayerFactors],
        total_params: int,
        *,
        skipped: Mapping[str, str],
        order: Sequence[str],
        settings: Mapping[str, Any],
        weights: Mapping[str, torch.Tensor],
    ) -> None:
        super().__init__(factors, total_params)
        self.skipped = dict(skipped)
        self.order = [n for n in order if n in factors]
        self.settings = dict(settings)
        self.output_weights = dict(weights)

    def output_error(self) -> dict[str, np.ndarray]:
        """Per layer, the output error ``σ_j²`` (per calibration image, post-BatchNorm) each term's
        removal causes: whitening makes the singular values output errors by construction."""
        return {n: f.s.double().pow(2).numpy() for n, f in self.items()}


def _grouped_skips(model: nn.Module, layers: Sequence[str] | str | None) -> dict[str, str]:
    return {
        n: "grouped/depthwise convolution: its matrix view mixes independent groups; not factorised"
        for n, m in select_layers(model, layers)
        if isinstance(m, nn.Conv2d) and m.groups != 1
    }


def _weights_for(model: nn.Module, name: str, followers: Mapping[str, str], weighting: str):
    if weighting == "none":
        return torch.ones(model.get_submodule(name).weight.shape[0], dtype=torch.float64)
    return output_weights(model, name, followers.get(name))


def _check_options(damping: object, output_weighting: object, batch_size: object) -> tuple:
    return (
        check_number("damping", damping, low=0, high=1, low_open=True),
        check_choice("output_weighting", output_weighting, OUTPUT_WEIGHTINGS),
        check_int("batch_size", batch_size, low=1),
    )


def data_aware_svd_factors(
    model: nn.Module,
    calibration: torch.Tensor,
    *,
    layers: Sequence[str] | str | None = None,
    damping: float = DEFAULT_DAMPING,
    output_weighting: str = "batchnorm",
    batch_size: int = 128,
) -> DataAwareFactors:
    """Compute (once) the whitened SVD of every selected layer on a calibration set.

    Parameters
    ----------
    model
        The trained network (not modified; run in eval mode, forward passes only).
    calibration
        Training inputs ``(N, C, H, W)`` (``(N, ...)`` for a model without convolutions), never
        test images; a few hundred images are enough.
    layers
        Layer selection as for ``svd_compress`` (default: every Conv2d/Linear but the first and the
        last). Grouped/depthwise convolutions, layers the forward pass never reaches and layers
        whose inputs are all zero or not finite are skipped; ``.skipped`` says why.
    damping
        ``δ`` in ``(0, 1]``: ``δ·(tr C / n)`` is added to the diagonal of every input covariance
        ``C`` (``n × n``) before whitening, so a singular covariance (dead ReLU channels, fewer
        patches than dimensions) is never inverted as it is.
    output_weighting
        ``"batchnorm"``: measure each output channel's error after the BatchNorm that directly
        follows the layer, where there is one; ``"none"``: raw layer outputs.
    batch_size
        Images per forward pass.

    Returns
    -------
    DataAwareFactors
        Pass it to :func:`data_aware_svd_compress` (``factors=``) or
        :func:`~smoothviz.compress.factorized.compress_from_factors`.
    """
    calibration = check_calibration(model, calibration)
    damping, output_weighting, batch_size = _check_options(damping, output_weighting, batch_size)
    model = split_for_svd(model)
    skipped = _grouped_skips(model, layers)
    chosen = svd_layers(model, layers)
    stats, order, followers = collect_input_stats(
        model, calibration, [n for n, _ in chosen], batch_size=batch_size
    )
    factors: dict[str, LayerFactors] = {}
    weights: dict[str, torch.Tensor] = {}
    whitening: dict[str, str] = {}
    short: list[RowShortfall] = []
    for name, m in chosen:
        st = stats.get(name)
        reason = (
            "the forward pass on the calibration inputs never reaches this layer"
            if st is None
            else st.unusable()
        )
        if reason:
            skipped[name] = reason
            continue
        weights[name] = _weights_for(model, name, followers, output_weighting)
        cov, _ = st.shrunk_covariance()  # as measured unless it saw too few rows
        factors[name], whitening[name] = truncation_factors(
            name, m.weight, cov, weights[name], damping, m.weight.dtype
        )
        if (gap := st.shortfall(name)) is not None:
            short.append(gap)
    warn_few_rows("data-aware SVD", short)
    settings = {
        "damping": damping,
        "output_weighting": output_weighting,
        "calibration_images": int(len(calibration)),
        "whitening": whitening,
        "batchnorm_after": {n: followers[n] for n in factors if n in followers},
        "few_rows": {g.name: {"rows": g.rows, "dims": g.dims, "shrinkage": g.alpha} for g in short},
    }
    return DataAwareFactors(
        factors,
        param_count(model),
        skipped=skipped,
        order=order,
        settings=settings,
        weights=weights,
    )


def sequential_refit(
    model: nn.Module,
    factors: DataAwareFactors,
    calibration: torch.Tensor,
    ranks: Mapping[str, int],
    *,
    batch_size: int = 128,
    progress: bool = False,
    reference: ReferenceInputs | None = None,
) -> tuple[nn.Module, dict[str, int | None]]:
    """Compress layer after layer, each fitted on the inputs the compressed layers before it give.

    For layer ``l`` with original input rows ``X`` and current ones ``X̂``, the weight that best
    reproduces the original output is ``W* = W XᵀX̂ (X̂ᵀX̂)⁻¹``; damped towards ``W`` (ridge
    ``λ = δ·tr(X̂ᵀX̂)/n``), ``W* = W (XᵀX̂ + λI)(X̂ᵀX̂ + λI)⁻¹``, which is ``W`` itself while
    nothing upstream has changed. ``W*`` is then truncated to ``ranks[l]`` by the whitened SVD on
    ``X̂``. A layer at or above its break-even rank stays dense with its original weight.
    ``reference``: the original model's layer inputs on these calibration batches, recorded once
    (:func:`~smoothviz.compress.layer_inputs.reference_inputs`), so that only the compressed
    model runs. It runs once in all, not once per layer: a
    :class:`~smoothviz.compress.layer_stream.LayerStream` pauses its forward pass at each layer
    (where ``torch.fx`` cannot trace the model, it runs up to each layer instead; the same floats
    either way).

    Returns
    -------
    model, used
        The compressed copy and the rank used per layer (``None``: left dense).
    """
    from tqdm.auto import tqdm

    new = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    new.eval()
    used: dict[str, int | None] = {}
    changed = False  # until a layer is cut, X̂ = X and the cached factors are exact
    names = [n for n in factors.order if n in ranks]
    # The copy's forward pass, paused layer by layer; traced at the first cut (before it, the
    # cached factors are exact and no layer's inputs are needed).
    refit = RefitPass(model, new, calibration, batch_size, reference)
    try:
        for name in tqdm(names, desc="sequential refit", disable=not progress, leave=False):
            f, r = factors[name], int(ranks[name])
            m = model.get_submodule(name)
            if not f.factorizes_at(r):
                used[name] = None
                continue
            if changed:
                f = refit_layer(
                    model,
                    new,
                    name,
                    calibration,
                    factors,
                    batch_size=batch_size,
                    reference=reference,
                    pairs=refit.pairs(name),
                )
            refit.replace(name, f.build_layer(m, r))
            used[name] = r
            changed = True
    finally:
        model.train(was_training)
    new.train(was_training)
    return new, used


def refit_layer(
    original: nn.Module,
    current: nn.Module,
    name: str,
    calibration: torch.Tensor,
    factors: DataAwareFactors,
    *,
    batch_size: int = 128,
    reference: ReferenceInputs | None = None,
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor, int]] | None = None,
) -> LayerFactors:
    """The whitened factors of layer ``name`` refitted on its inputs in ``current``.

    ``W* = W (XᵀX̂ + λI)(X̂ᵀX̂ + λI)⁻¹`` reproduces, from the inputs ``X̂`` the (partially
    compressed) ``current`` model gives the layer, the outputs the ``original`` model gives on
    its inputs ``X``; then the whitened truncation of ``W*`` on ``X̂`` (see
    :func:`sequential_refit`). Both models must be in eval mode. While nothing upstream has
    changed, the result equals ``factors[name]`` up to round-off. ``reference`` as for
    :func:`sequential_refit`; ``pairs``: the layer's input rows per batch in both models, when the
    caller has them (:func:`~smoothviz.compress.layer_stream.stream_pairs`).
    """
    n = factors[name].shape[1]
    gram = torch.zeros(n, n, dtype=torch.float64)
    cross = torch.zeros(n, n, dtype=torch.float64)
    images = rows = 0
    kept: list[torch.Tensor] = []  # the rows by image while they are fewer than n
    if pairs is None:
        pairs = paired_layer_inputs(original, current, name, calibration, batch_size, reference)
    for x, x_hat, b in pairs:
        gram += (x_hat.T @ x_hat).to("cpu", torch.float64)
        cross += (x_hat.T @ x).to("cpu", torch.float64)
        images += b
        rows += x_hat.shape[0]
        if rows < n:
            kept.append(x_hat.reshape(b, -1, n).to("cpu", torch.float64))
    if rows < n:  # fewer rows than dimensions: Ledoit-Wolf shrinkage of both moments
        alpha = sample_shrinkage(torch.cat(kept).numpy())
        prior = alpha * float(torch.diagonal(gram).sum()) / n * torch.eye(n, dtype=torch.float64)
        gram = (1.0 - alpha) * gram + prior
        cross = (1.0 - alpha) * cross + prior  # where no row went, the refit keeps W
    gram, cross = gram / max(images, 1), cross / max(images, 1)
    m = original.get_submodule(name)
    w = matrix_view(m.weight.detach().to("cpu", torch.float64))
    damping = factors.settings["damping"]
    ridge = damping * float(torch.diagonal(gram).mean()) * torch.eye(n, dtype=torch.float64)
    w_star = torch.linalg.solve(gram + ridge, (cross + ridge) @ w.T).T
    lf, _ = truncation_factors(
        name,
        w_star.reshape(m.weight.shape),
        gram,
        factors.output_weights[name],
        damping,
        m.weight.dtype,
    )
    return lf


# ------------------------------------------------------------------------------------ compress
def data_aware_svd_compress(
    model: nn.Module,
    calibration: torch.Tensor | None = None,
    *,
    param_reduction: float | None = None,
    energy: float | None = None,
    ranks: Mapping[str, int] | int | None = None,
    layers: Sequence[str] | str | None = None,
    factors: DataAwareFactors | None = None,
    allocation: str = "output_error",
    sequential: bool = True,
    damping: float = DEFAULT_DAMPING,
    output_weighting: str = "batchnorm",
    batch_size: int = 128,
    progress: bool = False,
) -> nn.Module:
    """Compress with data-aware truncated SVD; returns a new model, the input is left untouched.

    Each selected layer is factorised into the same two thinner layers as by
    :func:`~smoothviz.compress.svd.svd_compress` (same parameters and FLOPs at the same rank), but
    the truncation minimises the layer's output error on the calibration inputs instead of the
    weight error. No gradient step.

    Parameters
    ----------
    model
        The trained network.
    calibration
        Training inputs ``(N, C, H, W)``, a few hundred images; required unless ``factors`` are
        given, ``sequential=False`` and ``allocation`` is not ``"sensitivity"``.
    param_reduction
        Whole-network target: the fraction of *all* the model's parameters to remove, in [0, 1);
        split across layers by ``allocation``; met within 1 pp.
    energy
        Per-layer kept output energy in (0, 1]: each layer keeps the smallest rank with
        ``Σ_{j<r} σ_j² >= energy · Σ σ_j²`` (σ of the whitened ``D W L``).
    ranks
        ``{layer name: rank}``, or one int for every selected layer.
    layers
        Layer selection (default as for ``svd_compress``).
    factors
        Cached :func:`data_aware_svd_factors` of ``model`` (then ``damping`` and
        ``output_weighting`` are those the factors were made with).
    allocation
        ``"output_error"`` (default): one global threshold on the absolute output error ``σ_j²``
        each removal causes; ``"energy"``: on ``σ_j² / Σσ²`` per layer; ``"sensitivity"``: on
        the measured KL to the uncompressed outputs of cutting each layer alone
        (:mod:`smoothviz.compress.sensitivity`, computed once and kept in ``factors.cache``).
    sequential
        Refit every layer, in forward order, on the inputs the already-compressed layers before it
        produce (:func:`sequential_refit`); ``False`` truncates every layer on the original inputs.
    damping
        Relative diagonal loading of the input covariance, in (0, 1] (see
        :func:`data_aware_svd_factors`).
    output_weighting
        ``"batchnorm"`` or ``"none"`` (see :func:`data_aware_svd_factors`).
    batch_size
        Images per forward pass.
    progress
        Show tqdm progress bars for the sequential refit and the sensitivity measurement.

    Exactly one of ``param_reduction``, ``energy``, ``ranks`` must be given.

    Returns
    -------
    nn.Module
        The compressed copy. ``.compression_info`` holds the method, the rank per layer (``None``:
        left dense), ``skipped`` (layer -> reason), ``allocation``, ``sequential`` and ``damping``.
    """
    target = svd_target(param_reduction, energy, ranks)
    if not isinstance(sequential, bool):
        raise TypeError(f"sequential must be True or False, got {sequential!r}")
    damping, output_weighting, batch_size = _check_options(damping, output_weighting, batch_size)
    if factors is not None and not isinstance(factors, DataAwareFactors):
        raise TypeError(
            "factors must come from data_aware_svd_factors (weight-only svd_factors give the "
            f"weight-only truncation), got {type(factors).__name__}"
        )
    if calibration is None and (factors is None or sequential):
        why = "sequential=True refits on it" if factors is not None else "no factors are given"
        raise TypeError(
            f"calibration is required ({why}): pass training inputs (N, C, H, W) as calibration"
        )
    model = split_for_svd(model)  # a copy only when it holds attention
    request = resolve_svd_request(
        model,
        target,
        layers=layers,
        allocation=allocation,
        calibration=calibration,
        allocations=ALLOCATIONS,
        default_allocation="output_error",
        needs_calibration=("sensitivity",),
        what="data-aware SVD of the selected layers",
    )
    calibration = request.calibration
    if factors is None:
        factors = data_aware_svd_factors(
            model,
            calibration,
            layers=request.names,
            damping=damping,
            output_weighting=output_weighting,
            batch_size=batch_size,
        )
        factors.skipped.update(_grouped_skips(model, layers))
        selected = [n for n, _ in select_layers(model, layers, method="svd")]
        for n, why in request.probe.not_called(selected).items():  # left out by the probe
            factors.skipped.setdefault(n, why)
    else:
        missing = [n for n in request.names if n not in factors and n not in factors.skipped]
        if missing:
            raise ValueError(f"factors: no cached data-aware SVD for layers {missing}")
    factors = factors.subset([n for n in request.names if n in factors])
    if request.kind == "ranks":
        skipped = {n: factors.skipped[n] for n in request.ranks if n in factors.skipped}
        if skipped:
            raise ValueError(f"ranks: these layers cannot be factorised here: {skipped}")
    ranks = choose_ranks(model, factors, request, progress=progress)
    if sequential:
        # The original's layer inputs, recorded once per factors and calibration batch: a second
        # target with the same factors runs only the compressed model.
        reference = reference_inputs(factors.cache, model, calibration, batch_size)
        new, used = sequential_refit(
            model,
            factors,
            calibration,
            ranks,
            batch_size=batch_size,
            progress=progress,
            reference=reference,
        )
    else:
        new, used = factorized_model(model, factors, ranks)
    request.probe.check(
        new, method="data_aware_svd_compress", changed=[n for n, r in used.items() if r]
    )
    new.compression_info = {
        "method": "svd_data_aware",
        "ranks": used,
        "skipped": {n: r for n, r in factors.skipped.items() if n not in used},
        "allocation": allocation if request.kind == "param_reduction" else request.kind,
        "sequential": sequential,
        "damping": factors.settings["damping"],
        "output_weighting": factors.settings["output_weighting"],
    }
    if factors.settings.get("few_rows"):
        new.compression_info["few_rows"] = factors.settings["few_rows"]
    return new
