"""Factorised layers: the factor types, the two-layer replacement, and an SVD request checked once.

Both SVD methods (the weight-only :mod:`~smoothviz.compress.svd` and the data-aware
:mod:`~smoothviz.compress.data_aware_svd`) end in the same place: per layer a thin factorisation
``M ≈ U diag(S) Vh`` of the matrix view (:class:`LayerFactors`), collected per model in an
:class:`SVDFactors` mapping, and one rank per layer. This module holds what they share:

- the factor types, and the one rule "a layer is factorised at rank ``r`` when ``r`` is at most
  its break-even rank and below its full rank" (:meth:`LayerFactors.factorizes_at`);
- the two-layer replacement: a ``Conv2d`` becomes a ``k×k`` conv ``C_in -> r`` (weight
  ``S_r^½ Vh_r``, same stride/padding/dilation, no bias) followed by a ``1×1`` conv
  ``r -> C_out`` (weight ``U_r S_r^½``, the original bias); a ``Linear`` becomes two ``Linear``s
  (:class:`Factorized`, built by :meth:`LayerFactors.build_layer`);
- the request of an SVD front door, resolved and checked once before any SVD is computed
  (:func:`svd_target`, then :func:`resolve_svd_request`: layers, allocation, calibration,
  reachability of the budget, ranks);
- the model at given ranks (:func:`compress_from_factors`, which checks the ranks, and
  :func:`factorized_model` for ranks a request already checked).

How ranks are chosen lives one floor up, in :mod:`~smoothviz.compress.rank_allocation`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from smoothviz._validation import check_int, check_number, is_int
from smoothviz.compress.attention import attention_modules, split_attention
from smoothviz.compress.budget import (
    check_allocation,
    check_reachable,
    check_reduction,
    exactly_one,
    split_budget,
)
from smoothviz.compress.calibration import check_calibration
from smoothviz.compress.forward_check import NOT_CALLED, Probe, probe_model
from smoothviz.layers import layers_value, left_out, matrix_view, select_layers, set_submodule
from smoothviz.spectral import energy_fractions, rank_for_energy


class Factorized(nn.Sequential):
    """Two layers that replace one: ``(k×k conv or Linear) -> (1×1 conv or Linear)`` of rank ``r``."""

    @property
    def rank(self) -> int:
        first = self[0]
        return first.out_channels if isinstance(first, nn.Conv2d) else first.out_features


def param_count(model: nn.Module) -> int:
    """Every parameter of ``model`` (zeros included): the reference of a parameter budget."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class LayerFactors:
    """Thin factorisation ``M = U diag(S) Vh`` of one layer's matrix view (kept on the CPU).

    For the weight-only SVD it is the SVD of the weight; the data-aware SVD stores its whitened
    factors in the same form, so that both build the same layers (:meth:`build_layer`).
    """

    name: str
    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor
    weight_shape: tuple[int, ...]

    @classmethod
    def of_layer(cls, module: nn.Module, name: str = "") -> LayerFactors:
        """The thin SVD of ``module``'s weight (computed in float64, stored in its dtype)."""
        w = module.weight.detach().to("cpu", torch.float64)
        u, s, vh = torch.linalg.svd(matrix_view(w), full_matrices=False)
        dtype = module.weight.dtype
        return cls(name, u.to(dtype), s.to(dtype), vh.to(dtype), tuple(w.shape))

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

    def factorizes_at(self, rank: int) -> bool:
        """Whether the layer is factorised at ``rank``: at most the break-even rank (so the two
        factors are smaller than the dense layer) and below the full rank. Elsewhere it stays
        dense with its original weight."""
        return rank <= self.break_even_rank and rank < self.max_rank

    def weights_at(self, rank: int) -> int:
        """Weights (bias excluded) of this layer at ``rank``: factorised or dense, whichever it is."""
        m, n = self.shape
        return rank * (m + n) if self.factorizes_at(rank) else m * n

    def energy(self) -> np.ndarray:
        """Fraction of ``||M||_F²`` carried by each singular value (``σ_j² / Σσ²``)."""
        return energy_fractions(self.s)

    def build_layer(self, module: nn.Module, rank: int) -> Factorized:
        """The two-layer rank-``rank`` replacement of ``module`` built from these factors.

        ``module`` is the dense ``Conv2d``/``Linear`` the factors approximate (its geometry, bias,
        device, dtype and train/eval mode are copied; it is not modified). ``rank`` is not checked
        here (see :func:`factorize_layer`).
        """
        root = self.s[:rank].clamp_min(0).sqrt()
        device, dtype = module.weight.device, module.weight.dtype
        a = (root[:, None] * self.vh[:rank]).to(device)  # (r, n)
        b = (self.u[:, :rank] * root[None, :]).to(device)  # (m, r)
        bias = module.bias is not None
        if isinstance(module, nn.Conv2d):
            m = module
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
                device=device,
                dtype=dtype,
            )
            second = nn.Conv2d(rank, m.out_channels, 1, bias=bias, device=device, dtype=dtype)
            first.weight.data.copy_(a.reshape(first.weight.shape))
            second.weight.data.copy_(b.reshape(second.weight.shape))
        else:
            first = nn.Linear(module.in_features, rank, bias=False, device=device, dtype=dtype)
            second = nn.Linear(rank, module.out_features, bias=bias, device=device, dtype=dtype)
            first.weight.data.copy_(a)
            second.weight.data.copy_(b)
        if bias:
            second.bias.data.copy_(module.bias.detach())
        out = Factorized(first, second)
        out.train(module.training)
        return out


class SVDFactors(Mapping):
    """Cached factorisations of a model's layers, by layer name; build with
    :func:`~smoothviz.compress.svd.svd_factors`.

    ``cache`` holds what is computed once per model on top of the factors (allocation scores that
    need calibration data, sensitivity tables); a :meth:`subset` shares it. ``method`` names the
    method in ``compression_info``.
    """

    method = "svd"

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

    def output_error(self) -> dict[str, np.ndarray] | None:
        """Per layer, the output error each term's removal causes, when the factors carry it.

        ``None`` here: the singular values of a weight say nothing about its inputs, so the output
        error is measured on calibration data
        (:func:`~smoothviz.compress.rank_allocation.output_error_scores`). Data-aware factors
        override this with their ``σ_j²``.
        """
        return None

    def ranks_for_energy(self, energy: float) -> dict[str, int]:
        """Deprecated: use :func:`smoothviz.compress.rank_allocation.energy_ranks`."""
        _moved(
            "SVDFactors.ranks_for_energy(energy)", "rank_allocation.energy_ranks(factors, energy)"
        )
        return {name: rank_for_energy(f.s, energy) for name, f in self._factors.items()}

    def ranks_for_reduction(self, param_reduction: float) -> dict[str, int]:
        """Deprecated: use :func:`smoothviz.compress.rank_allocation.allocate_ranks`."""
        _moved(
            "SVDFactors.ranks_for_reduction(param_reduction)",
            "rank_allocation.allocate_ranks(model, factors, param_reduction, 'energy')",
        )
        scores = {name: f.energy() for name, f in self._factors.items()}
        target = check_reduction(param_reduction)
        return split_budget(
            scores, self.params_at, self.total_params, target, what="SVD of the selected layers"
        )


def _moved(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated and goes in the next release; use smoothviz.compress.{new}",
        DeprecationWarning,
        stacklevel=3,
    )


GROUPED = (
    "grouped/depthwise convolution: not factorised (its matrix view mixes independent groups, "
    "and a depthwise kernel's k×k taps per channel leave nothing to save)"
)


def svd_layers(
    model: nn.Module, layers: Sequence[str] | str | None, probe: Probe | None = None
) -> list[tuple[str, nn.Module]]:
    """The layers an SVD factorises: ``layers``, or by default every Conv2d/Linear but the
    classifier, the first layer only when factorising it can save parameters at a useful rank
    (break-even rank ``m·n/(m+n) >= 32``: a Linear on 784 pixels yes, a 1- or 3-channel 3x3 stem
    no; see :func:`smoothviz.layers.default_layers`). Grouped convolutions, and layers that
    ``probe``'s forward pass did not call as modules (another module reads their weight
    directly), are skipped, and refused when named explicitly."""
    chosen = select_layers(model, layers, method="svd")
    grouped = [n for n, m in chosen if isinstance(m, nn.Conv2d) and m.groups != 1]
    uncalled = list(probe.not_called([n for n, _ in chosen])) if probe is not None else []
    if layers is not None and not isinstance(layers, str):
        if grouped:
            raise ValueError(
                f"layers: {grouped} are grouped/depthwise convolutions, which svd_compress does "
                "not factorise; leave them out"
            )
        if uncalled:
            raise ValueError(f"layers: {uncalled} are {NOT_CALLED}; leave them out")
    return [(n, m) for n, m in chosen if n not in grouped and n not in uncalled]


def svd_left_out(
    model: nn.Module, names: Sequence[str], probe: Probe | None = None
) -> tuple[dict[str, str], str | None]:
    """The Conv2d/Linear layers an SVD leaves out of ``names``, each with its reason, and the
    ``layers=`` value that adds those a selection could add (``None``: none)."""
    left = left_out(model, names, method="svd")
    fixed = {n: GROUPED for n in left if _is_grouped(model.get_submodule(n))}
    if probe is not None:
        fixed.update(probe.not_called([n for n in left if n not in fixed]))
    addable = [n for n in left if n not in fixed]
    left.update(fixed)
    return left, (layers_value(model, [*names, *addable]) if addable else None)


def _is_grouped(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups != 1


def split_for_svd(model: nn.Module) -> nn.Module:
    """The model the SVD methods work on: ``model`` itself, or, when it holds
    ``nn.MultiheadAttention``, a copy with each one split into called projections
    (:func:`~smoothviz.compress.attention.split_attention`), so their layers can be factorised."""
    return split_attention(model) if attention_modules(model) else model


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
        Its cached factors (the SVD is computed here when omitted).
    """
    if not isinstance(module, (nn.Conv2d, nn.Linear)) or getattr(module, "groups", 1) != 1:
        raise TypeError(f"module must be a dense Conv2d or a Linear, got {module!r}")
    if factors is None:
        factors = LayerFactors.of_layer(module)
    rank = check_int("rank", rank, low=1, high=factors.max_rank)
    return factors.build_layer(module, rank)


# ------------------------------------------------------------------------------- the request
def svd_target(
    param_reduction: float | None, energy: float | None, ranks: Mapping[str, int] | int | None
) -> tuple[str, Any]:
    """Which of the alternative SVD targets is given, with its value checked where it can be
    without the model: ``("param_reduction", float in [0, 1))``, ``("energy", float in (0, 1])``
    or ``("ranks", ranks)`` (checked by :func:`resolve_svd_request` against the layers)."""
    kind = exactly_one(param_reduction=param_reduction, energy=energy, ranks=ranks)
    if kind == "param_reduction":
        return kind, check_reduction(param_reduction)
    if kind == "energy":
        return kind, check_number("energy", energy, low=0, high=1, low_open=True)
    return kind, ranks


@dataclass(frozen=True)
class SVDRequest:
    """An SVD front door's request, checked once.

    Attributes
    ----------
    kind
        The target given: ``"param_reduction"``, ``"energy"`` or ``"ranks"``.
    value
        The reduction or the kept energy (``None`` for ``"ranks"``).
    ranks
        For ``"ranks"``, every selected layer's rank (an int in ``[1, min(m, n)]``).
    layers
        The selected ``(name, module)`` pairs, grouped convolutions left out.
    allocation
        How a ``param_reduction`` is split across layers.
    calibration
        The checked calibration inputs, or ``None``.
    probe
        One forward pass of the model (which layers it calls, its output), to leave out the
        layers it does not call and to check the compressed model runs.
    """

    kind: str
    value: float | None
    ranks: dict[str, int] | None
    layers: list[tuple[str, nn.Module]]
    allocation: str
    calibration: torch.Tensor | None
    probe: Probe | None = None

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.layers]


def resolve_svd_request(
    model: nn.Module,
    target: tuple[str, Any],
    *,
    layers: Sequence[str] | str | None,
    allocation: str,
    calibration: torch.Tensor | None,
    allocations: Sequence[str],
    default_allocation: str,
    needs_calibration: Sequence[str],
    what: str,
) -> SVDRequest:
    """Check an SVD request before any SVD is computed; shared by both SVD front doors.

    ``target`` is :func:`svd_target`'s result. The allocation must be one of ``allocations``
    (and apply: only a ``param_reduction`` is split); ``calibration`` must fit the model; a ranks
    dict names the layers (not both); a ``param_reduction`` out of reach raises
    :class:`~smoothviz.compress.budget.BudgetError` naming the layers left out (``what`` names the
    method in it); an int rank applies to every layer; every rank is an int in ``[1, min(m, n)]``.
    One forward pass (:func:`~smoothviz.compress.forward_check.probe_model`, on the first
    calibration inputs or a dummy batch) finds the layers the model does not call as modules;
    they are left out (named with their reason) and the request keeps the probe to check the
    compressed model.
    """
    kind, value = target
    check_allocation(
        allocation,
        allocations,
        default=default_allocation,
        mode=kind,
        calibration=calibration,
        needs_calibration=needs_calibration,
    )
    if calibration is not None:
        calibration = check_calibration(model, calibration)
    if kind == "ranks" and isinstance(value, Mapping):
        if layers is not None:
            raise TypeError("pass layers or a ranks dict (whose keys are the layers), not both")
        layers = list(value)
    probe = probe_model(model, calibration, record_calls=True)
    chosen = svd_layers(model, layers, probe)
    names = [n for n, _ in chosen]
    if kind == "param_reduction":
        total = param_count(model)
        # The smallest model: every selected layer at rank 1 (or dense, where that is smaller).
        min_params = total - sum(
            m.weight.numel() - min(m.weight.numel(), m.weight.shape[0] + m.weight[0].numel())
            for _, m in chosen
        )
        left, include = svd_left_out(model, names, probe)  # named in the error, with the fix
        check_reachable(value, total, min_params, what, left_out=left, include=include)
    ranks = None
    if kind == "ranks":
        given = {n: int(value) for n in names} if is_int(value) else value
        if not isinstance(given, Mapping):
            raise TypeError(f"ranks must be a dict {{layer name: rank}} or an int, got {value!r}")
        ranks = {
            name: check_int(
                f"ranks[{name!r}]", given[name], low=1, high=min(matrix_view(m.weight).shape)
            )
            for name, m in chosen
        }
        value = None
    return SVDRequest(kind, value, ranks, chosen, allocation, calibration, probe)


def check_ranks(factors: SVDFactors, ranks: Mapping[str, int]) -> None:
    """Raise unless ``ranks`` is ``{layer of factors: int in [1, its full rank]}``."""
    if not isinstance(ranks, Mapping):
        raise TypeError(f"ranks must be a dict {{layer name: rank}} or an int, got {ranks!r}")
    unknown = [n for n in ranks if n not in factors]
    if unknown:
        raise ValueError(
            f"ranks: {unknown} are not factorisable layers here; allowed names: {list(factors)}"
        )
    for name, r in ranks.items():
        check_int(f"ranks[{name!r}]", r, low=1, high=factors[name].max_rank)


# ---------------------------------------------------------------------- the model at given ranks
def factorized_model(
    model: nn.Module, factors: SVDFactors, ranks: Mapping[str, int]
) -> tuple[nn.Module, dict[str, int | None]]:
    """A deep copy of ``model`` with the layers in ``ranks`` factorised where
    :meth:`LayerFactors.factorizes_at` says so, and the rank used per layer (``None``: dense).

    ``ranks`` must already be checked (:func:`check_ranks`, or a request's ranks); the factors
    are checked against the model's layer shapes. A model with ``nn.MultiheadAttention`` is
    copied with it split into called projections (:func:`split_for_svd`), which the factors of
    such a model name.
    """
    new = split_attention(model)  # a deep copy; attention split where there is any
    used: dict[str, int | None] = {}
    for name, r in ranks.items():
        f = factors[name]
        m = new.get_submodule(name)
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or tuple(m.weight.shape) != f.weight_shape:
            raise ValueError(
                f"factors: layer {name!r} of this model does not match the cached factors "
                f"(shape {f.weight_shape}); recompute them with svd_factors(model)"
            )
        if f.factorizes_at(int(r)):
            set_submodule(new, name, f.build_layer(m, int(r)))
            used[name] = int(r)
        else:
            used[name] = None
    return new, used


def compress_from_factors(
    model: nn.Module, factors: SVDFactors, ranks: Mapping[str, int]
) -> nn.Module:
    """Cheap re-ranking: a new model whose layers in ``ranks`` use the cached factors at those ranks.

    Parameters
    ----------
    model
        The model the factors were computed from (not modified).
    factors
        From :func:`~smoothviz.compress.svd.svd_factors` or
        :func:`~smoothviz.compress.data_aware_svd.data_aware_svd_factors`.
    ranks
        ``{layer name: rank}``; a rank at or above the break-even rank keeps the layer dense.

    Returns
    -------
    nn.Module
        A deep copy with the factorised layers swapped in; ``.compression_info`` records the ranks
        actually used (``None`` for layers left dense).
    """
    check_ranks(factors, ranks)
    new, used = factorized_model(model, factors, ranks)
    new.compression_info = {"method": getattr(factors, "method", "svd"), "ranks": used}
    return new
