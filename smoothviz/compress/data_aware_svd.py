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

The factors are stored as an :class:`~smoothviz.compress.svd.SVDFactors` whose ``u = D⁻¹U``,
``s = Σ`` and ``vh = Vᵀ L⁻¹``, so the factorised layers are built by the same code as the weight-only
SVD (first layer ``Σ^½ Vᵀ L⁻¹``, second ``D⁻¹ U Σ^½``) and have exactly its shape and cost; the
rank-explorer widget and :func:`~smoothviz.compress.svd.compress_from_factors` take them as they are.

Sequential mode (``sequential=True``): the layers are refitted in forward order on the inputs
``X̂`` produced by the already-compressed layers before them, to the *original* outputs ``W X``:
``W* = W X X̂ᵀ (X̂ X̂ᵀ)⁻¹`` then the whitened truncation of ``W*`` on ``X̂``; later layers so
correct the errors of earlier ones.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from smoothviz.compress.budget import (
    allocate,
    check_allocation,
    check_reduction,
    exactly_one,
)
from smoothviz.compress.calibration import check_calibration, run_calibration
from smoothviz.compress.svd import (
    LayerFactors,
    SVDFactors,
    _check_ranks,
    _count,
    _factorize,
    _set_module,
    _svd_layers,
    compress_from_factors,
    resolve_request,
)
from smoothviz.layers import matrix_view, select_layers

DEFAULT_DAMPING = 1e-2
OUTPUT_WEIGHTINGS = ("batchnorm", "none")
ALLOCATIONS = ("output_error", "energy", "sensitivity")


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted activations are recorded."""


# ------------------------------------------------------------------------------ input statistics
def layer_inputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows ``X`` (one per output position) that the layer multiplies by its matrix view.

    A ``Conv2d``'s input becomes its patches ``(N·H_out·W_out, C_in·k_h·k_w)``, in the column
    order of ``F.unfold`` and of the weight's matrix view, with the layer's stride, padding,
    dilation and padding mode; a ``Linear``'s input becomes ``(N·..., n)``.
    """
    if isinstance(module, nn.Conv2d):
        return (
            conv_patches(module, x).transpose(1, 2).reshape(-1, matrix_view(module.weight).shape[1])
        )
    return x.reshape(-1, x.shape[-1])


def conv_patches(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``F.unfold(x)`` for the geometry of ``module``, ``(N, C_in·k_h·k_w, H_out·W_out)``.

    Built from ``k_h·k_w`` strided slices of the padded input (ours: on a CPU this is about ten
    times faster than ``F.unfold`` and gives the same numbers, which a test checks).
    """
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
    elif isinstance(module.padding, str):
        x = F.pad(x, _same_padding(module) if module.padding == "same" else (0, 0, 0, 0))
    else:
        ph, pw = module.padding
        x = F.pad(x, (pw, pw, ph, ph))
    (kh, kw), (dh, dw), (sh, sw) = module.kernel_size, module.dilation, module.stride
    n, c, h, w = x.shape
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    cols = [
        x[:, :, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    return torch.stack(cols, 2).reshape(n, c * kh * kw, ho * wo)


def _same_padding(module: nn.Conv2d) -> tuple[int, int, int, int]:
    pads: list[int] = []
    for k, d in zip(reversed(module.kernel_size), reversed(module.dilation)):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return (pads[0], pads[1], pads[2], pads[3])


@dataclass
class InputStats:
    """Accumulated second moment of one layer's input rows, in float64 on the CPU."""

    gram: torch.Tensor  # Σ x xᵀ over rows
    images: int = 0
    finite: bool = True

    @classmethod
    def empty(cls, n: int) -> InputStats:
        return cls(torch.zeros(n, n, dtype=torch.float64))

    def add(self, rows: torch.Tensor, images: int) -> None:
        # float32 products per batch (half the time of float64 on a CPU; the relative round-off,
        # ~1e-6, sits far below the damping), summed across batches in float64.
        r = rows.detach().float()
        if not torch.isfinite(r).all():
            self.finite = False
            return
        self.gram += (r.T @ r).to("cpu", torch.float64)
        self.images += images

    def covariance(self) -> torch.Tensor:
        """``X Xᵀ`` per calibration image (summed over a feature map's positions, ours: a
        per-position average under-weights the small late feature maps, and measured worse)."""
        return self.gram / max(self.images, 1)


def collect_input_stats(
    model: nn.Module,
    calibration: torch.Tensor,
    names: Sequence[str],
    *,
    batch_size: int = 128,
) -> tuple[dict[str, InputStats], list[str], dict[str, str]]:
    """One pass over the calibration set: input second moments of the named layers.

    Returns
    -------
    stats, order, followers
        ``{name: InputStats}`` for every layer the forward pass reached; the names in the order the
        forward pass runs them; ``{layer: BatchNorm name}`` for layers whose output feeds a
        BatchNorm directly.
    """
    stats: dict[str, InputStats] = {}
    order: list[str] = []
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    followers: dict[str, str] = {}

    def pre(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            rows = layer_inputs(module, args[0])
            if name not in stats:
                stats[name] = InputStats.empty(rows.shape[1])
                order.append(name)
            stats[name].add(rows, args[0].shape[0])

        return hook

    def post(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            outputs[id(out)] = (name, out)

        return hook

    def bn_pre(bn_name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            hit = outputs.get(id(args[0]))
            if hit is not None and hit[1] is args[0]:
                followers.setdefault(hit[0], bn_name)

        return hook

    handles = []
    for name in names:
        m = model.get_submodule(name)
        handles += [m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post(name))]
    for bn_name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_pre_hook(bn_pre(bn_name)))
    run_calibration(model, calibration, handles, batch_size, before_batch=outputs.clear)
    return stats, order, followers


# ------------------------------------------------------------------------------------ whitening
def whiten(cov: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``L`` with ``L Lᵀ = cov + δ·(tr cov / n)·I``, and ``L⁻¹``, in float64.

    Cholesky of the damped covariance; where that fails (round-off on a nearly singular matrix),
    eigen-whitening with the eigenvalues clamped at the damping level.

    Returns
    -------
    l, l_inv, how
        The whitening factor, its inverse and ``"cholesky"`` or ``"eigen"``.
    """
    n = cov.shape[0]
    scale = float(torch.diagonal(cov).mean())
    eye = torch.eye(n, dtype=torch.float64)
    reg = cov + damping * scale * eye
    chol, info = torch.linalg.cholesky_ex(reg)
    if int(info) == 0:
        return chol, torch.linalg.solve_triangular(chol, eye, upper=False), "cholesky"
    evals, evecs = torch.linalg.eigh((reg + reg.T) / 2)
    evals = evals.clamp_min(max(damping, 1e-12) * scale)
    root = evals.sqrt()
    return evecs * root, (evecs / root).T, "eigen"


def _output_weights(model: nn.Module, bn_name: str | None, m_out: int) -> torch.Tensor:
    if bn_name is None:
        return torch.ones(m_out, dtype=torch.float64)
    bn = model.get_submodule(bn_name)
    if bn.running_var is None or bn.num_features != m_out:
        return torch.ones(m_out, dtype=torch.float64)
    d = (bn.running_var.detach().double().cpu() + bn.eps).rsqrt()
    if bn.weight is not None:
        d = d * bn.weight.detach().double().cpu().abs()
    # A channel with γ = 0 carries nothing; keep its weight tiny but non-zero so D⁻¹ exists.
    return d.clamp_min(1e-6 * float(d.max().clamp_min(1e-300)))


def _truncation_factors(
    name: str,
    weight: torch.Tensor,
    cov: torch.Tensor,
    d: torch.Tensor,
    damping: float,
    dtype: torch.dtype,
) -> tuple[LayerFactors, str]:
    w = matrix_view(weight.detach().to("cpu", torch.float64))
    white, white_inv, how = whiten(cov, damping)
    u, s, vh = torch.linalg.svd(d[:, None] * w @ white, full_matrices=False)
    f = LayerFactors(
        name,
        (u / d[:, None]).to(dtype),
        s.to(dtype),
        (vh @ white_inv).to(dtype),
        tuple(weight.shape),
    )
    return f, how


# --------------------------------------------------------------------------------- the factors
class DataAwareFactors(SVDFactors):
    """Whitened SVDs of a model's layers, by layer name; build with
    :func:`data_aware_svd_factors`.

    An :class:`~smoothviz.compress.svd.SVDFactors` (``compress_from_factors`` and the rank explorer
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
        """Per layer, the output error ``σ_j²`` (per calibration image) each term's removal causes."""
        return {n: f.s.double().pow(2).numpy() for n, f in self.items()}


def _check_damping(damping: object) -> float:
    if (
        isinstance(damping, bool)
        or not isinstance(damping, (int, float))
        or not np.isfinite(damping)
        or not 0 < damping <= 1
    ):
        raise ValueError(f"damping must be a number in (0, 1], got {damping!r}")
    return float(damping)


def _check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _grouped_skips(model: nn.Module, layers: Sequence[str] | str | None) -> dict[str, str]:
    return {
        n: "grouped/depthwise convolution: its matrix view mixes independent groups; not factorised"
        for n, m in select_layers(model, layers)
        if isinstance(m, nn.Conv2d) and m.groups != 1
    }


def _weights_for(model: nn.Module, name: str, followers: Mapping[str, str], weighting: str):
    m_out = model.get_submodule(name).weight.shape[0]
    if weighting == "none":
        return torch.ones(m_out, dtype=torch.float64)
    return _output_weights(model, followers.get(name), m_out)


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
        :func:`~smoothviz.compress.svd.compress_from_factors`.
    """
    calibration = check_calibration(model, calibration)
    damping = _check_damping(damping)
    _check_choice("output_weighting", output_weighting, OUTPUT_WEIGHTINGS)
    batch_size = _check_int("batch_size", batch_size)
    skipped = _grouped_skips(model, layers)
    chosen = _svd_layers(model, layers)
    stats, order, followers = collect_input_stats(
        model, calibration, [n for n, _ in chosen], batch_size=batch_size
    )
    factors: dict[str, LayerFactors] = {}
    weights: dict[str, torch.Tensor] = {}
    whitening: dict[str, str] = {}
    for name, m in chosen:
        st = stats.get(name)
        reason = _unusable(st)
        if reason:
            skipped[name] = reason
            continue
        weights[name] = _weights_for(model, name, followers, output_weighting)
        factors[name], whitening[name] = _truncation_factors(
            name, m.weight, st.covariance(), weights[name], damping, m.weight.dtype
        )
    settings = {
        "damping": damping,
        "output_weighting": output_weighting,
        "calibration_images": int(len(calibration)),
        "whitening": whitening,
        "batchnorm_after": {n: followers[n] for n in factors if n in followers},
    }
    return DataAwareFactors(
        factors, _count(model), skipped=skipped, order=order, settings=settings, weights=weights
    )


def _unusable(st: InputStats | None) -> str | None:
    if st is None:
        return "the forward pass on the calibration inputs never reaches this layer"
    if not st.finite:
        return "its inputs on the calibration set are not finite (NaN/inf): cannot be whitened"
    if float(torch.diagonal(st.gram).sum()) <= 0.0:
        return "its inputs on the calibration set are all zero: nothing to whiten"
    return None


# --------------------------------------------------------------------------- allocation scores
def output_error_scores(
    model: nn.Module, factors: SVDFactors, calibration: torch.Tensor, *, batch_size: int = 128
) -> dict[str, np.ndarray]:
    """Output error each rank-one term's removal causes, for weight-only SVD factors.

    For ``M = Σ σ_j u_j v_jᵀ``, removing term ``j`` changes the (post-BatchNorm) output by
    ``D u_j σ_j v_jᵀ X``, of energy ``σ_j² ‖D u_j‖² v_jᵀ C v_j`` per calibration image (``C`` the
    layer's input covariance). Cross terms between removed terms are ignored; the scores are made
    non-increasing within a layer (a running maximum from the end), as the allocator requires.
    Cached in ``factors.cache``.
    """
    from smoothviz.compress.sensitivity import fingerprint

    calibration = check_calibration(model, calibration)
    key = ("output_error", fingerprint(calibration), tuple(factors))
    if key in factors.cache:
        return factors.cache[key]
    stats, _, followers = collect_input_stats(
        model, calibration, list(factors), batch_size=batch_size
    )
    out = {}
    for name, f in factors.items():
        st = stats.get(name)
        if _unusable(st):  # no signal: every term is as harmless as any other
            out[name] = np.zeros(f.max_rank)
            continue
        d = _weights_for(model, name, followers, "batchnorm")
        v = f.vh.double().T  # (n, r)
        input_energy = ((st.covariance() @ v) * v).sum(0)
        out_norm = (d[:, None] * f.u.double()).pow(2).sum(0)
        e = (f.s.double().pow(2) * out_norm * input_energy).numpy()
        out[name] = np.maximum.accumulate(e[::-1])[::-1]
    factors.cache[key] = out
    return out


def rank_sensitivity(
    model: nn.Module,
    factors: SVDFactors,
    calibration: torch.Tensor,
    *,
    images: int | None = None,
    progress: bool = False,
):
    """The sensitivity table of a model's SVD factors (each layer alone at candidate ranks).

    Candidates are fractions of the full rank up to the break-even rank
    (:func:`~smoothviz.compress.sensitivity.candidate_sizes`); cached in ``factors.cache``.
    """
    from smoothviz.compress.sensitivity import (
        DEFAULT_IMAGES,
        candidate_sizes,
        fingerprint,
        measure_sensitivity,
    )

    images = DEFAULT_IMAGES if images is None else images
    calibration = check_calibration(model, calibration)
    x = calibration[:images]
    key = ("sensitivity", fingerprint(x), tuple(factors))
    if key not in factors.cache:
        candidates = {n: candidate_sizes(f.max_rank, f.break_even_rank) for n, f in factors.items()}
        factors.cache[key] = measure_sensitivity(
            model,
            x,
            candidates,
            {n: f.max_rank for n, f in factors.items()},
            lambda name, rank: compress_from_factors(model, factors, {name: rank}),
            images=None,
            progress=progress,
        )
    return factors.cache[key]


def allocate_ranks(
    model: nn.Module,
    factors: SVDFactors,
    param_reduction: float,
    allocation: str,
    calibration: torch.Tensor | None = None,
    *,
    progress: bool = False,
) -> dict[str, int]:
    """Per-layer ranks that remove ``param_reduction`` of the model, split by ``allocation``.

    ``"energy"``: ``σ_j² / Σσ²`` per layer; ``"output_error"``: ``σ_j²`` of data-aware factors,
    or :func:`output_error_scores` for weight-only ones; ``"sensitivity"``: measured KL
    (:func:`rank_sensitivity`) per parameter saved (``unit_scores(..., rule="marginal")``, each
    rank costing ``m + n`` parameters).
    """
    from smoothviz.compress.sensitivity import unit_scores

    if allocation == "energy":
        scores = {n: f.energy() for n, f in factors.items()}
    elif allocation == "output_error":
        if isinstance(factors, DataAwareFactors):
            scores = factors.output_error()
        else:
            scores = output_error_scores(model, factors, calibration)
    elif allocation == "sensitivity":
        table = rank_sensitivity(model, factors, calibration, progress=progress)
        scores = unit_scores(table, {n: f.shape[0] + f.shape[1] for n, f in factors.items()})
    else:
        raise ValueError(f"allocation must be one of {list(ALLOCATIONS)}, got {allocation!r}")
    what = f"{factors.method} of the selected layers (allocation={allocation!r})"
    return allocate(scores, factors.params_at, factors.total_params, param_reduction, what=what)


# ---------------------------------------------------------------------------------- sequential
def _paired_inputs(
    original: nn.Module,
    current: nn.Module,
    name: str,
    calibration: torch.Tensor,
    batch_size: int,
):
    """Per batch, the rows of layer ``name``'s input in the original and in the current model."""
    captured: dict[str, torch.Tensor] = {}

    def grab(key: str):
        def hook(module: nn.Module, args: tuple) -> None:
            captured[key] = layer_inputs(module, args[0]).float()
            raise _Stop  # nothing after this layer is needed

        return hook

    handles = [
        original.get_submodule(name).register_forward_pre_hook(grab("x")),
        current.get_submodule(name).register_forward_pre_hook(grab("x_hat")),
    ]
    device = next(original.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, len(calibration), batch_size):
                xb = calibration[start : start + batch_size].to(device)
                for model in (original, current):
                    try:
                        model(xb)
                    except _Stop:
                        pass
                yield captured.pop("x"), captured.pop("x_hat"), xb.shape[0]
    finally:
        for h in handles:
            h.remove()


def sequential_refit(
    model: nn.Module,
    factors: DataAwareFactors,
    calibration: torch.Tensor,
    ranks: Mapping[str, int],
    *,
    batch_size: int = 128,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, int | None]]:
    """Compress layer after layer, each fitted on the inputs the compressed layers before it give.

    For layer ``l`` with original input rows ``X`` and current ones ``X̂``, the weight that best
    reproduces the original output is ``W* = W XᵀX̂ (X̂ᵀX̂)⁻¹``; damped towards ``W`` (ridge
    ``λ = δ·tr(X̂ᵀX̂)/n``), ``W* = W (XᵀX̂ + λI)(X̂ᵀX̂ + λI)⁻¹``, which is ``W`` itself while
    nothing upstream has changed. ``W*`` is then truncated to ``ranks[l]`` by the whitened SVD on
    ``X̂``. A layer at or above its break-even rank stays dense with its original weight.

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
    try:
        for name in tqdm(names, desc="sequential refit", disable=not progress, leave=False):
            f, r = factors[name], int(ranks[name])
            m = model.get_submodule(name)
            if r > f.break_even_rank or r >= f.max_rank:
                used[name] = None
                continue
            if changed:
                f = _refit_layer(model, new, name, calibration, factors, batch_size)
            _set_module(new, name, _factorize(m, f, r))
            used[name] = r
            changed = True
    finally:
        model.train(was_training)
    new.train(was_training)
    return new, used


def _refit_layer(
    original: nn.Module,
    current: nn.Module,
    name: str,
    calibration: torch.Tensor,
    factors: DataAwareFactors,
    batch_size: int,
) -> LayerFactors:
    n = factors[name].shape[1]
    gram = torch.zeros(n, n, dtype=torch.float64)
    cross = torch.zeros(n, n, dtype=torch.float64)
    images = 0
    for x, x_hat, b in _paired_inputs(original, current, name, calibration, batch_size):
        gram += (x_hat.T @ x_hat).to("cpu", torch.float64)
        cross += (x_hat.T @ x).to("cpu", torch.float64)
        images += b
    gram, cross = gram / max(images, 1), cross / max(images, 1)
    m = original.get_submodule(name)
    w = matrix_view(m.weight.detach().to("cpu", torch.float64))
    damping = factors.settings["damping"]
    ridge = damping * float(torch.diagonal(gram).mean()) * torch.eye(n, dtype=torch.float64)
    w_star = torch.linalg.solve(gram + ridge, (cross + ridge) @ w.T).T
    lf, _ = _truncation_factors(
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
    mode = exactly_one(param_reduction=param_reduction, energy=energy, ranks=ranks)
    if mode == "param_reduction":
        check_reduction(param_reduction)
    elif mode == "energy":
        if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1:
            raise ValueError(f"energy must be a number in (0, 1], got {energy!r}")
    if not isinstance(sequential, bool):
        raise TypeError(f"sequential must be True or False, got {sequential!r}")
    check_allocation(
        allocation,
        ALLOCATIONS,
        default="output_error",
        mode=mode,
        calibration=calibration,
        needs_calibration=("sensitivity",),
    )
    damping = _check_damping(damping)
    _check_choice("output_weighting", output_weighting, OUTPUT_WEIGHTINGS)
    batch_size = _check_int("batch_size", batch_size)
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
    if calibration is not None:
        calibration = check_calibration(model, calibration)
    chosen, ranks = resolve_request(
        model, layers, ranks, mode, param_reduction, "data-aware SVD of the selected layers"
    )
    if factors is None:
        factors = data_aware_svd_factors(
            model,
            calibration,
            layers=[n for n, _ in chosen],
            damping=damping,
            output_weighting=output_weighting,
            batch_size=batch_size,
        )
        factors.skipped.update(_grouped_skips(model, layers))
    else:
        missing = [n for n, _ in chosen if n not in factors and n not in factors.skipped]
        if missing:
            raise ValueError(f"factors: no cached data-aware SVD for layers {missing}")
    names = [n for n, _ in chosen if n in factors]
    factors = factors.subset(names)
    if mode == "ranks":
        skipped = {n: factors.skipped[n] for n in ranks if n in factors.skipped}
        if skipped:
            raise ValueError(f"ranks: these layers cannot be factorised here: {skipped}")
        _check_ranks(factors, ranks)
    elif mode == "energy":
        ranks = factors.ranks_for_energy(float(energy))
    else:
        ranks = allocate_ranks(
            model, factors, float(param_reduction), allocation, calibration, progress=progress
        )
    if sequential:
        new, used = sequential_refit(
            model, factors, calibration, ranks, batch_size=batch_size, progress=progress
        )
    else:
        new = compress_from_factors(model, factors, ranks)
        used = new.compression_info["ranks"]
    new.compression_info = {
        "method": "svd_data_aware",
        "ranks": used,
        "skipped": {n: r for n, r in factors.skipped.items() if n not in used},
        "allocation": allocation if mode == "param_reduction" else mode,
        "sequential": sequential,
        "damping": factors.settings["damping"],
        "output_weighting": factors.settings["output_weighting"],
    }
    return new
