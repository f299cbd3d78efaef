"""Scalar summaries of a singular-value spectrum."""

from __future__ import annotations

import torch

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
