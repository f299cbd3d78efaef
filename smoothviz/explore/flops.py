"""FLOPs per image of a model whose layers are cut to chosen SVD ranks, without a forward pass per move.

:class:`RankFlops` counts with :func:`smoothviz.measure.count_flops` once per model: the whole
uncompressed model, and each explored layer on its own input shape, dense and factorised at ranks 1
and 2. A factorised layer's FLOPs are linear in its rank (the ``k×k`` conv ``C_in → r`` and the
``1×1`` conv ``r → C_out`` each cost a fixed amount per unit of rank), so every other rank follows
exactly from those two counts, and a move costs one sum over the layers. Equal to ``count_flops``
of the compressed model (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from smoothviz.compress.svd import factorize_layer
from smoothviz.measure import count_flops


def layer_input_shapes(
    model: nn.Module, layers: list[str], example: torch.Tensor
) -> dict[str, tuple[int, ...]]:
    """The shape of the input each of ``layers`` receives when ``model`` runs on ``example``."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(_module, args, _output) -> None:  # returns None: the output is left alone
            shapes.setdefault(name, tuple(args[0].shape))

        return hook

    hooks = [model.get_submodule(name).register_forward_hook(record(name)) for name in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    missing = [name for name in layers if name not in shapes]
    if missing:
        raise ValueError(f"layers {missing} did not run in the model's forward pass")
    return shapes


class RankFlops:
    """FLOPs per image of ``model`` with its layers factorised at given ranks.

    Parameters
    ----------
    model
        The uncompressed model (not modified).
    factors
        Its layers' factors (an :class:`~smoothviz.compress.svd.SVDFactors` or the like).
    example
        One input image, batch of 1 (e.g. ``data.x_test[:1]``).
    """

    def __init__(self, model: nn.Module, factors: Mapping[str, Any], example: torch.Tensor) -> None:
        device = next(model.parameters()).device
        example = example[:1].to(device)
        self.factors = factors
        self.total = count_flops(model, example)
        shapes = layer_input_shapes(model, list(factors), example)
        self._dense: dict[str, int] = {}
        self._at_one: dict[str, int] = {}
        self._per_rank: dict[str, int] = {}
        for name, f in factors.items():
            module = model.get_submodule(name)
            x = torch.zeros(shapes[name], device=device)
            self._dense[name] = count_flops(module, x)
            one = count_flops(factorize_layer(module, 1, f).to(device), x)
            two = (
                count_flops(factorize_layer(module, 2, f).to(device), x) if f.max_rank > 1 else one
            )
            self._at_one[name], self._per_rank[name] = one, two - one

    def at(self, ranks: Mapping[str, int]) -> int:
        """FLOPs per image with each layer in ``ranks`` at its rank (dense where that saves
        nothing, as :func:`~smoothviz.compress.svd.compress_from_factors` leaves it)."""
        flops = self.total
        for name, rank in ranks.items():
            if self.factors[name].factorizes_at(rank):
                factorised = self._at_one[name] + (rank - 1) * self._per_rank[name]
                flops += factorised - self._dense[name]
        return flops
