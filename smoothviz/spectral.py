"""Scalar summaries of a singular-value spectrum."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from smoothviz._validation import check_number
from smoothviz.layers import matrix_view


@torch.no_grad()
def singular_values(weight: torch.Tensor) -> torch.Tensor:
    """Singular values (descending, float64, on the CPU) of a weight's matrix view."""
    return torch.linalg.svdvals(matrix_view(weight.detach()).double()).cpu()


def effective_rank(s: torch.Tensor) -> float:
    """Entropy effective rank (Roy & Vetterli 2007): ``exp(H(p))`` with ``p = σ / Σσ``.

    Between 1 (a single non-zero singular value) and the number of singular values (all equal).
    """
    s = s.double().clamp_min(0)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(s: torch.Tensor) -> float:
    """``||M||_F² / ||M||_2² = Σσ² / σ_max²`` (0 for a zero matrix)."""
    s = s.double()
    top = s.max() if s.numel() else torch.tensor(0.0)
    return float(s.pow(2).sum() / top.pow(2)) if top > 0 else 0.0


def energy_fractions(s: torch.Tensor | Sequence[float]) -> np.ndarray:
    """``σ_j² / Σσ²``: the share of ``||M||_F²`` each singular value carries, in float64.

    A zero spectrum gives zeros (the sum is clamped at 1e-300 instead of dividing by zero).
    """
    e = torch.as_tensor(s, dtype=torch.float64).pow(2)
    return (e / e.sum().clamp_min(1e-300)).numpy()


def rank_for_energy(s: torch.Tensor | Sequence[float], energy: float) -> int:
    """Smallest rank ``r`` whose kept energy ``Σ_{j<r} σ_j² / Σσ²`` reaches ``energy`` in (0, 1].

    The one rule behind ``svd_compress(energy=...)``, the rank explorer's equal-energy split and
    the ``rank_90``/``rank_99`` columns of :func:`smoothviz.analysis.spectrum_summary`. ``s`` need
    not be sorted. A tolerance of 1e-12 lets ``energy=1.0`` be reached despite rounding; a zero
    spectrum keeps its full rank.
    """
    check_number("energy", energy, low=0, high=1, low_open=True)
    s = torch.as_tensor(s, dtype=torch.float64).sort(descending=True).values
    cum = np.cumsum(energy_fractions(s))
    return int(min(np.searchsorted(cum, energy - 1e-12) + 1, len(cum)))
