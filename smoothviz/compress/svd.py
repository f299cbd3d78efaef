"""Truncated-SVD compression: a layer becomes two thinner layers, no gradient step.

For the matrix view ``M = W.reshape(C_out, C_in*k*k) ≈ U_r Σ_r V_rᵀ`` a ``Conv2d`` becomes a ``k×k``
conv ``C_in -> r`` (weight ``Σ_r^½ V_rᵀ``, same stride/padding/dilation, no bias) followed by a
``1×1`` conv ``r -> C_out`` (weight ``U_r Σ_r^½``, the original bias); a ``Linear`` becomes two
``Linear``s. A layer is factorised only where that saves parameters, ``r·(m + n) < m·n``; otherwise it
keeps its original dense weight.

The SVDs are the expensive part, so they are computed once per model (:func:`svd_factors`) and
every rank choice afterwards only slices them (:func:`compress_from_factors`): this is what the
sweep and the rank-explorer widget use. SVDs run in float64 through ``torch.linalg.svd``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from smoothviz.compress.budget import (
    allocate,
    check_allocation,
    check_reachable,
    check_reduction,
    exactly_one,
)
from smoothviz.compress.calibration import check_calibration
from smoothviz.layers import layers_value, left_out, matrix_view, select_layers

SVD_ALLOCATIONS = ("energy", "output_error", "sensitivity")


class Factorized(nn.Sequential):
    """Two layers that replace one: ``(k×k conv or Linear) -> (1×1 conv or Linear)`` of rank ``r``."""

    @property
    def rank(self) -> int:
        first = self[0]
        return first.out_channels if isinstance(first, nn.Conv2d) else first.out_features


@dataclass(frozen=True)
class LayerFactors:
    """Thin SVD ``M = U diag(S) Vh`` of one layer's matrix view (kept on the CPU)."""

    name: str
    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor
    weight_shape: tuple[int, ...]

    @property
    def max_rank(self) -> int:
        return int(self.s.numel())

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.u.shape[0]), int(self.vh.shape[1])

    @property
    def break_even_rank(self) -> int:
        """Largest rank whose factorisation has fewer weights than the dense layer (0: none)."""
        m, n = self.shape
        return max(0, -(-m * n // (m + n)) - 1)

    def weights_at(self, rank: int) -> int:
        """Weights (bias excluded) of this layer at ``rank``: factorised or dense, whichever it is."""
        m, n = self.shape
        return rank * (m + n) if rank <= self.break_even_rank else m * n

    def energy(self) -> np.ndarray:
        """Fraction of ``||M||_F²`` carried by each singular value."""
        e = self.s.double().pow(2)
        return (e / e.sum().clamp_min(1e-300)).numpy()


class SVDFactors(Mapping):
    """Cached SVDs of a model's layers, by layer name; build with :func:`svd_factors`.

    ``cache`` holds what is computed once per model on top of the SVDs (allocation scores that
    need calibration data, sensitivity tables); a :meth:`subset` shares it.
    """

    method = "svd"  # recorded in compression_info by compress_from_factors

    def __init__(self, factors: dict[str, LayerFactors], total_params: int) -> None:
        self._factors = factors
        self.total_params = total_params
        self.cache: dict = {}

    def subset(self, names: Sequence[str]) -> SVDFactors:
        """The factors of ``names`` only, sharing this object's ``cache``."""
        out = copy.copy(self)
        out._factors = {n: self._factors[n] for n in names}
        return out

    def __getitem__(self, name: str) -> LayerFactors:
        return self._factors[name]

    def __iter__(self):
        return iter(self._factors)

    def __len__(self) -> int:
        return len(self._factors)

    def params_at(self, ranks: Mapping[str, int]) -> int:
        """Parameters of the whole model when the layers in ``ranks`` are cut to those ranks."""
        saved = 0
        for name, r in ranks.items():
            f = self._factors[name]
            saved += f.shape[0] * f.shape[1] - f.weights_at(r)
        return self.total_params - saved

    def ranks_for_energy(self, energy: float) -> dict[str, int]:
        """Per layer, the smallest rank that keeps at least ``energy`` of ``||M||_F²``."""
        out = {}
        for name, f in self._factors.items():
            cum = np.cumsum(f.energy())
            out[name] = int(min(np.searchsorted(cum, energy - 1e-12) + 1, f.max_rank))
        return out

    def ranks_for_reduction(self, param_reduction: float) -> dict[str, int]:
        """Per-layer ranks that remove ``param_reduction`` of the whole model's parameters."""
        target = check_reduction(param_reduction)
        scores = {name: f.energy() for name, f in self._factors.items()}
        return allocate(
            scores, self.params_at, self.total_params, target, what="SVD of the selected layers"
        )


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _svd_layers(
    model: nn.Module, layers: Sequence[str] | str | None
) -> list[tuple[str, nn.Module]]:
    """The layers SVD factorises: ``layers``, or by default every Conv2d/Linear but the classifier,
    the first layer only when factorising it can save parameters at a useful rank (break-even rank
    ``m·n/(m+n) >= 32``: a Linear on 784 pixels yes, a 1- or 3-channel 3x3 stem no; see
    :func:`smoothviz.layers.default_layers`). Grouped convolutions are skipped."""
    chosen = select_layers(model, layers, method="svd")
    grouped = [n for n, m in chosen if isinstance(m, nn.Conv2d) and m.groups != 1]
    if grouped and layers is not None and not isinstance(layers, str):
        raise ValueError(
            f"layers: {grouped} are grouped/depthwise convolutions, which svd_compress does not "
            "factorise; leave them out"
        )
    return [(n, m) for n, m in chosen if n not in grouped]


def svd_factors(model: nn.Module, layers: Sequence[str] | str | None = None) -> SVDFactors:
    """Compute (once) the thin SVD of every selected layer's matrix view.

    Parameters
    ----------
    model
        The trained network (not modified).
    layers
        Layer selection as in :func:`smoothviz.layers.select_layers`; grouped convolutions are
        skipped.

    Returns
    -------
    SVDFactors
        A mapping ``name -> LayerFactors`` plus the model's parameter count; pass it to
        :func:`compress_from_factors` or ``svd_compress(..., factors=...)``.
    """
    factors = {}
    for name, m in _svd_layers(model, layers):
        w = m.weight.detach().to("cpu", torch.float64)
        u, s, vh = torch.linalg.svd(matrix_view(w), full_matrices=False)
        dtype = m.weight.dtype
        factors[name] = LayerFactors(name, u.to(dtype), s.to(dtype), vh.to(dtype), tuple(w.shape))
    return SVDFactors(factors, _count(model))


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _factorize(m: nn.Module, f: LayerFactors, rank: int) -> Factorized:
    root = f.s[:rank].clamp_min(0).sqrt()
    a = (root[:, None] * f.vh[:rank]).to(m.weight.device)  # (r, n)
    b = (f.u[:, :rank] * root[None, :]).to(m.weight.device)  # (m, r)
    bias = m.bias is not None
    if isinstance(m, nn.Conv2d):
        first = nn.Conv2d(
            m.in_channels,
            rank,
            m.kernel_size,
            m.stride,
            m.padding,
            m.dilation,
            1,
            False,
            m.padding_mode,
            device=m.weight.device,
            dtype=m.weight.dtype,
        )
        second = nn.Conv2d(
            rank, m.out_channels, 1, bias=bias, device=m.weight.device, dtype=m.weight.dtype
        )
        first.weight.data.copy_(a.reshape(first.weight.shape))
        second.weight.data.copy_(b.reshape(second.weight.shape))
    else:
        first = nn.Linear(
            m.in_features, rank, bias=False, device=m.weight.device, dtype=m.weight.dtype
        )
        second = nn.Linear(
            rank, m.out_features, bias=bias, device=m.weight.device, dtype=m.weight.dtype
        )
        first.weight.data.copy_(a)
        second.weight.data.copy_(b)
    if bias:
        second.bias.data.copy_(m.bias.detach())
    out = Factorized(first, second)
    out.train(m.training)
    return out


def factorize_layer(
    module: nn.Module, rank: int, factors: LayerFactors | None = None
) -> Factorized:
    """The two-layer rank-``rank`` replacement of one Conv2d/Linear, even where it saves nothing.

    Parameters
    ----------
    module
        A dense ``Conv2d`` (``groups=1``) or ``Linear``; not modified.
    rank
        In ``[1, min(m, n)]``; at full rank the pair reproduces the layer.
    factors
        Its cached SVD (computed here when omitted).
    """
    if not isinstance(module, (nn.Conv2d, nn.Linear)) or getattr(module, "groups", 1) != 1:
        raise TypeError(f"module must be a dense Conv2d or a Linear, got {module!r}")
    if factors is None:
        w = module.weight.detach().to("cpu", torch.float64)
        u, s, vh = torch.linalg.svd(matrix_view(w), full_matrices=False)
        dtype = module.weight.dtype
        factors = LayerFactors("", u.to(dtype), s.to(dtype), vh.to(dtype), tuple(w.shape))
    if (
        isinstance(rank, bool)
        or not isinstance(rank, (int, np.integer))
        or not (1 <= rank <= factors.max_rank)
    ):
        raise ValueError(f"rank must be an int in [1, {factors.max_rank}], got {rank!r}")
    return _factorize(module, factors, int(rank))


def _check_ranks(factors: SVDFactors, ranks: Mapping[str, int]) -> None:
    if not isinstance(ranks, Mapping):
        raise TypeError(f"ranks must be a dict {{layer name: rank}} or an int, got {ranks!r}")
    unknown = [n for n in ranks if n not in factors]
    if unknown:
        raise ValueError(
            f"ranks: {unknown} are not factorisable layers here; allowed names: {list(factors)}"
        )
    for name, r in ranks.items():
        mr = factors[name].max_rank
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= mr:
            raise ValueError(f"ranks[{name!r}] must be an int in [1, {mr}], got {r!r}")


def compress_from_factors(
    model: nn.Module, factors: SVDFactors, ranks: Mapping[str, int]
) -> nn.Module:
    """Cheap re-ranking: a new model whose layers in ``ranks`` use the cached SVD at those ranks.

    Parameters
    ----------
    model
        The model the factors were computed from (not modified).
    factors
        From :func:`svd_factors`.
    ranks
        ``{layer name: rank}``; a rank at or above the break-even rank keeps the layer dense.

    Returns
    -------
    nn.Module
        A deep copy with the factorised layers swapped in; ``.compression_info`` records the ranks
        actually used (``None`` for layers left dense).
    """
    _check_ranks(factors, ranks)
    new = copy.deepcopy(model)
    used: dict[str, int | None] = {}
    for name, r in ranks.items():
        f = factors[name]
        m = new.get_submodule(name)
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or tuple(m.weight.shape) != f.weight_shape:
            raise ValueError(
                f"factors: layer {name!r} of this model does not match the cached factors "
                f"(shape {f.weight_shape}); recompute them with svd_factors(model)"
            )
        if int(r) <= f.break_even_rank and int(r) < f.max_rank:
            _set_module(new, name, _factorize(m, f, int(r)))
            used[name] = int(r)
        else:
            used[name] = None
    new.compression_info = {"method": getattr(factors, "method", "svd"), "ranks": used}
    return new


def resolve_request(
    model: nn.Module,
    layers: Sequence[str] | str | None,
    ranks: Mapping[str, int] | int | None,
    mode: str,
    param_reduction: float | None,
    what: str,
) -> tuple[list[tuple[str, nn.Module]], Any]:
    """The layers an SVD request selects and its ranks, checked before any SVD is computed.

    Shared by the weight-only and the data-aware SVD: a ranks dict names the layers (not both);
    a ``param_reduction`` out of reach raises :class:`BudgetError` naming the layers left out;
    an int rank applies to every layer; every rank is an int in ``[1, min(m, n)]``.
    """
    if isinstance(ranks, Mapping):
        if layers is not None:
            raise TypeError("pass layers or a ranks dict (whose keys are the layers), not both")
        layers = list(ranks)
    chosen = _svd_layers(model, layers)
    if mode == "param_reduction":
        total = _count(model)
        min_params = total - sum(
            m.weight.numel() - min(m.weight.numel(), m.weight.shape[0] + m.weight[0].numel())
            for _, m in chosen
        )
        names = [n for n, _ in chosen]
        left = left_out(model, names, method="svd")  # named in the error, with the fix
        include = layers_value(model, [*names, *left]) if left else None
        check_reachable(param_reduction, total, min_params, what, left_out=left, include=include)
    if isinstance(ranks, (int, np.integer)) and not isinstance(ranks, bool):
        ranks = {n: int(ranks) for n, _ in chosen}
    if mode == "ranks":
        if not isinstance(ranks, Mapping):
            raise TypeError(f"ranks must be a dict {{layer name: rank}} or an int, got {ranks!r}")
        for name, m in chosen:
            mr = min(matrix_view(m.weight).shape)
            r = ranks[name]
            if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= mr:
                raise ValueError(f"ranks[{name!r}] must be an int in [1, {mr}], got {r!r}")
    return chosen, ranks


def svd_compress(
    model: nn.Module,
    *,
    param_reduction: float | None = None,
    energy: float | None = None,
    ranks: Mapping[str, int] | int | None = None,
    layers: Sequence[str] | str | None = None,
    factors: SVDFactors | None = None,
    allocation: str = "energy",
    calibration: torch.Tensor | None = None,
) -> nn.Module:
    """Compress with truncated SVD; returns a new model, the input is left untouched.

    Parameters
    ----------
    model
        The trained network.
    param_reduction
        Whole-network target: the fraction of *all* the model's parameters to remove, in [0, 1).
        Split across layers by one global threshold on ``σ_j² / Σσ²``; met within 1 pp.
    energy
        Per-layer kept-energy threshold in (0, 1]: each layer keeps the smallest rank with
        ``Σ_{j<r} σ_j² >= energy · Σ σ_j²``.
    ranks
        ``{layer name: rank}``, or one int for every selected layer.
    layers
        Layer selection (default: every Conv2d/Linear but the first and the last).
    factors
        Cached :func:`svd_factors` of ``model`` to skip the SVDs.
    allocation
        How ``param_reduction`` is split across layers: ``"energy"`` (default, the paper's
        method: one threshold on ``σ_j² / Σσ²``), ``"output_error"`` (one threshold on the output
        error each removal causes on ``calibration``, post-BatchNorm, see
        :func:`~smoothviz.compress.data_aware_svd.output_error_scores`) or ``"sensitivity"``
        (measured KL to the uncompressed outputs of cutting each layer alone, see
        :mod:`smoothviz.compress.sensitivity`). The truncation itself stays weight-only.
    calibration
        Training inputs ``(N, ...)``; needed by ``"output_error"`` and ``"sensitivity"``.
        The scores are computed once and kept in ``factors.cache``.

    Exactly one of ``param_reduction``, ``energy``, ``ranks`` must be given.

    Returns
    -------
    nn.Module
        The compressed copy, with ``.compression_info`` (method and ranks).
    """
    mode = exactly_one(param_reduction=param_reduction, energy=energy, ranks=ranks)
    if mode == "param_reduction":
        check_reduction(param_reduction)
    elif mode == "energy":
        if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1:
            raise ValueError(f"energy must be a number in (0, 1], got {energy!r}")
    check_allocation(
        allocation,
        SVD_ALLOCATIONS,
        default="energy",
        mode=mode,
        calibration=calibration,
        needs_calibration=("output_error", "sensitivity"),
    )
    if calibration is not None:
        check_calibration(model, calibration)
    chosen, ranks = resolve_request(
        model, layers, ranks, mode, param_reduction, "SVD of the selected layers"
    )
    if factors is None:
        factors = svd_factors(model, [n for n, _ in chosen])
    elif mode != "ranks":
        missing = [n for n, _ in chosen if n not in factors]
        if missing:
            raise ValueError(f"factors: no cached SVD for layers {missing}")
        factors = factors.subset([n for n, _ in chosen])
    if mode == "ranks":
        _check_ranks(factors, ranks)
    elif mode == "energy":
        ranks = factors.ranks_for_energy(float(energy))
    elif allocation == "energy":
        ranks = factors.ranks_for_reduction(float(param_reduction))
    else:
        from smoothviz.compress.data_aware_svd import allocate_ranks

        ranks = allocate_ranks(model, factors, float(param_reduction), allocation, calibration)
    return compress_from_factors(model, factors, ranks)
