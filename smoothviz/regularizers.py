"""Weight regularisers for compression-friendly training.

Three penalties added to the loss (nuclear norm, first- and second-order smoothness along the
channel axes) and one proximal step applied after the optimiser step (Alvarez & Salzmann's
singular-value soft-thresholding). Definitions and normalisation: docs/methods.md.

Performance: layers with the same matrix-view shape are stacked and decomposed in one batched SVD,
and the amortised nuclear norm refreshes its subgradient ``U Vᵀ`` only every ``k`` steps, so between
refreshes it costs one multiply-add per weight.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

from smoothviz.layers import matrix_view

# E ||Δⁿ w||² / E ||w||² for i.i.d. weights, away from the ends: the sum of the squared binomial
# coefficients of the n-th difference ((1, -1) -> 2, (1, -2, 1) -> 6).
DIFFERENCE_GAIN = {1: 2.0, 2: 6.0}
SMOOTHNESS_AXES = (0, 1)  # output-channel and input-channel axes of a Conv2d/Linear weight


def nuclear_norm(weight: torch.Tensor) -> torch.Tensor:
    """Sum of the singular values of the weight's matrix view (differentiable)."""
    return torch.linalg.svdvals(matrix_view(weight)).sum()


def _white_noise_energy(weight: torch.Tensor, order: int, dim: int) -> float:
    """Expected ``||diff(W, n, dim)||² / ||W||²`` for i.i.d. weights of this shape."""
    length = weight.shape[dim]
    return DIFFERENCE_GAIN[order] * (length - order) / length


def smoothness_axes(weight: torch.Tensor, order: int) -> list[int]:
    """The channel axes long enough to take an ``order``-th difference along."""
    return [d for d in SMOOTHNESS_AXES if weight.shape[d] > order]


def smoothness_penalty(weight: torch.Tensor, order: int) -> torch.Tensor:
    """Normalised ``order``-th difference penalty of one layer (differentiable).

    Mean over the output- and input-channel axes of ``||diff(W, n, axis)||² / g``, where ``g`` is the
    value of ``||diff||² / ||W||²`` for white-noise weights of this shape. So the penalty equals
    ``||W||²`` (the weight-decay term) on white noise and 0 on weights constant along the axes, and a
    single λ pulls every layer at the same relative rate whatever its size or scale.
    """
    if order not in DIFFERENCE_GAIN:
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    axes = smoothness_axes(weight, order)
    if not axes:
        return weight.new_zeros(())
    terms = [
        torch.diff(weight, n=order, dim=d).pow(2).sum() / _white_noise_energy(weight, order, d)
        for d in axes
    ]
    return torch.stack(terms).mean()


@torch.no_grad()
def normalized_difference(weight: torch.Tensor, order: int, dim: int) -> float:
    """Roughness of a weight along one axis: ``||diff(W, n, dim)||² / (g ||W||²)``.

    About 1 for white-noise weights, 0 for weights constant along ``dim``; comparable across layers.
    """
    weight = weight.detach().float()
    if weight.shape[dim] <= order:
        raise ValueError(
            f"dim {dim} has length {weight.shape[dim]}, too short for an order-{order} difference"
        )
    energy = weight.pow(2).sum().clamp_min(torch.finfo(weight.dtype).tiny)
    diff = torch.diff(weight, n=order, dim=dim).pow(2).sum()
    return float(diff / (energy * _white_noise_energy(weight, order, dim)))


def soft_threshold_singular_values(matrix: torch.Tensor, threshold: float) -> torch.Tensor:
    """``U diag(max(σ - threshold, 0)) Vᵀ`` of a matrix (or a batch of matrices)."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return (u * (s - threshold).clamp_min(0).unsqueeze(-2)) @ vh


class Regularization:
    """The penalties and the proximal step of one training run, over the selected layers.

    Parameters
    ----------
    layers
        ``(name, module)`` pairs of the regularised Conv2d/Linear layers.
    nuclear, first_order, second_order
        Penalty weights (0 switches a term off).
    nuclear_every
        1 for the exact nuclear norm every step; ``k > 1`` refreshes the subgradient every ``k`` steps.
    proximal, proximal_every
        Soft-threshold strength λ and period ``k``; each application uses threshold ``lr·λ·k`` so
        the total shrinkage per step matches the every-step version.
    """

    def __init__(
        self,
        layers: Sequence[tuple[str, nn.Module]],
        *,
        nuclear: float = 0.0,
        nuclear_every: int = 1,
        first_order: float = 0.0,
        second_order: float = 0.0,
        proximal: float = 0.0,
        proximal_every: int = 1,
    ) -> None:
        self.names = [name for name, _ in layers]
        self.weights = [module.weight for _, module in layers]
        self.nuclear, self.nuclear_every = nuclear, nuclear_every
        self.first_order, self.second_order = first_order, second_order
        self.proximal, self.proximal_every = proximal, proximal_every
        # Layers grouped by matrix-view shape, so one batched SVD serves each group.
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, w in enumerate(self.weights):
            groups[tuple(matrix_view(w).shape)].append(i)
        self.groups = list(groups.values())
        self._subgradients: list[torch.Tensor] | None = None

    @property
    def terms(self) -> list[str]:
        """Names of the active penalty terms, in the order :meth:`penalty` returns their values."""
        active = [
            ("nuclear", self.nuclear),
            ("first_order", self.first_order),
            ("second_order", self.second_order),
        ]
        return [name for name, weight in active if weight > 0]

    def _stacked(self, group: list[int]) -> torch.Tensor:
        return torch.stack([matrix_view(self.weights[i]).float() for i in group])

    def _nuclear_value(self, step: int) -> torch.Tensor:
        if self.nuclear_every == 1:
            return sum(torch.linalg.svdvals(self._stacked(g)).sum() for g in self.groups)
        if self._subgradients is None or step % self.nuclear_every == 0:
            with torch.no_grad():
                self._subgradients = []
                for g in self.groups:
                    u, _, vh = torch.linalg.svd(self._stacked(g), full_matrices=False)
                    self._subgradients.append(u @ vh)
        # <U Vᵀ, M> equals ||M||_* at the refresh and has gradient U Vᵀ (the nuclear subgradient).
        return sum(
            (sub * self._stacked(g)).sum() for sub, g in zip(self._subgradients, self.groups)
        )

    def penalty(self, step: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The weighted sum of the active penalties and each one's unweighted value, at ``step``."""
        values: list[torch.Tensor] = []
        total = (
            self.weights[0].new_zeros((), dtype=torch.float32) if self.weights else torch.zeros(())
        )
        if self.nuclear > 0:
            values.append(self._nuclear_value(step))
            total = total + self.nuclear * values[-1]
        for order, weight in ((1, self.first_order), (2, self.second_order)):
            if weight > 0:
                values.append(sum(smoothness_penalty(w.float(), order) for w in self.weights))
                total = total + weight * values[-1]
        return total, values

    @torch.no_grad()
    def proximal_step(self, step: int, lr: float) -> None:
        """Soft-threshold the singular values of every layer, on steps that are multiples of k."""
        if self.proximal <= 0 or (step + 1) % self.proximal_every != 0:
            return
        threshold = lr * self.proximal * self.proximal_every
        for g in self.groups:
            shrunk = soft_threshold_singular_values(self._stacked(g), threshold)
            for j, i in enumerate(g):
                self.weights[i].copy_(shrunk[j].view_as(self.weights[i]))

    @torch.no_grad()
    def nuclear_norms(self) -> torch.Tensor:
        """Exact sum of the nuclear norms of the regularised layers (for logging)."""
        return sum(torch.linalg.svdvals(self._stacked(g)).sum() for g in self.groups)
