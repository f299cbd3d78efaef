"""Which layers smoothviz acts on, and the matrix view of their weights.

Regularisers and compression methods share one notion of a "compressible layer": a ``Conv2d`` or
``Linear`` module, addressed by its dotted name in ``model.named_modules()``. By default the first
such layer (the stem, whose input has only a few channels) and the last one (the classifier) are left
out, as in design.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

COMPRESSIBLE_TYPES = (nn.Conv2d, nn.Linear)


def compressible_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``Conv2d`` and ``Linear`` of ``model`` in definition order, as ``(name, module)``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, COMPRESSIBLE_TYPES)]


def select_layers(
    model: nn.Module, layers: Sequence[str] | None = None
) -> list[tuple[str, nn.Module]]:
    """Resolve a layer selection to ``(name, module)`` pairs.

    Parameters
    ----------
    model
        The network.
    layers
        ``None`` for the default (every Conv2d/Linear except the first and the last), ``"all"`` for
        every one, or an explicit sequence of module names.

    Raises
    ------
    ValueError
        If a name does not exist in ``model`` or is not a Conv2d/Linear.
    TypeError
        If ``layers`` is not None, a string or an iterable of names.
    """
    found = compressible_layers(model)
    if layers is None:
        return found[1:-1]
    if isinstance(layers, str):
        if layers == "all":
            return found
        raise ValueError(f"layers must be None, 'all' or a sequence of layer names, got {layers!r}")
    if not isinstance(layers, Iterable):
        raise TypeError(f"layers must be None, 'all' or a sequence of layer names, got {layers!r}")
    layers = list(layers)  # a generator is read once
    by_name = dict(found)
    unknown = [name for name in layers if name not in by_name]
    if unknown:
        raise ValueError(
            f"layers: {unknown} are not Conv2d/Linear layers of this model; "
            f"allowed names: {list(by_name)}"
        )
    return [(name, by_name[name]) for name in layers]


def matrix_view(weight: torch.Tensor) -> torch.Tensor:
    """``(C_out, C_in*k_h*k_w)`` view of a conv weight; a Linear weight is returned as it is."""
    return weight.reshape(weight.shape[0], -1)
