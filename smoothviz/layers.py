"""Which layers smoothviz acts on, and the matrix view of their weights.

Regularisers and compression methods share one notion of a "compressible layer": a ``Conv2d`` or
``Linear`` module, addressed by its dotted name in ``model.named_modules()``. What ``layers=None``
means depends on who asks (``method=``), because the first layer is a poor candidate for one method
and a good one for another:

- ``"regularizers"`` (training, analysis, magnitude pruning): every such layer but the first (the
  stem, whose input has only a few channels) and the last (the classifier); ``docs/methods.md``
  ("Which layers each method acts on") gives the reasons. This default is unchanged so that
  cached checkpoints (whose config hash includes ``layers=None``) keep meaning what they meant.
- ``"svd"``: the same, plus the first layer when factorising it can save parameters at a useful
  rank: its break-even rank ``m·n/(m+n)`` (rank below which the two factors are smaller than the
  ``m×n`` matrix view) is at least :data:`MIN_BREAK_EVEN_RANK`. A Linear on 784 pixels with 512
  outputs (break-even 309) is included; a 3×3 stem on 1 or 3 input channels (matrix views 16×9 or
  64×27, break-even 6 or 19) is not. The classifier stays out.
- ``"channels"`` (``prune_channels``, ``interpolative_compress``): every layer is a candidate
  *producer*; the first layer's output channels are as prunable as any other whatever its input
  size. The classifier's outputs are never cut: they reach the model's output, which the channel
  group finder (:mod:`smoothviz.compress.chains`) never cuts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

COMPRESSIBLE_TYPES = (nn.Conv2d, nn.Linear)
DEFAULT_FOR = ("regularizers", "svd", "channels")
MIN_BREAK_EVEN_RANK = 32


def compressible_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``Conv2d`` and ``Linear`` of ``model`` in definition order, as ``(name, module)``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, COMPRESSIBLE_TYPES)]


def break_even_rank(module: nn.Module) -> float:
    """``m·n/(m+n)`` of the matrix view: a rank-``r`` factorisation saves parameters iff ``r`` is
    below it."""
    m, n = matrix_view(module.weight).shape
    return m * n / (m + n)


def default_layers(model: nn.Module, method: str = "regularizers") -> list[tuple[str, nn.Module]]:
    """The layers ``layers=None`` stands for, for ``method`` (see the module docstring).

    Parameters
    ----------
    model
        The network.
    method
        ``"regularizers"`` (all but the first and last Conv2d/Linear), ``"svd"`` (the same plus the
        first layer when its break-even rank is at least :data:`MIN_BREAK_EVEN_RANK`) or
        ``"channels"`` (every Conv2d/Linear as a producer; outputs that reach the model's output,
        such as the classifier's, are never cut by the channel methods).
    """
    if method not in DEFAULT_FOR:
        raise ValueError(f"method must be one of {list(DEFAULT_FOR)}, got {method!r}")
    found = compressible_layers(model)
    if method == "channels":
        return found
    chosen = found[1:-1]
    if method == "svd" and len(found) > 1 and break_even_rank(found[0][1]) >= MIN_BREAK_EVEN_RANK:
        chosen = found[:-1]
    return chosen


def left_out(
    model: nn.Module, chosen: Iterable[str], method: str = "regularizers"
) -> dict[str, str]:
    """``{name: why}`` for every Conv2d/Linear of ``model`` that is not in ``chosen``.

    The reason says what the default rule of ``method`` decided (first layer, classifier) or that
    the layer was not in an explicit ``layers=`` selection.
    """
    chosen = set(chosen)
    found = compressible_layers(model)
    reasons = {}
    for i, (name, m) in enumerate(found):
        if name in chosen:
            continue
        if i == len(found) - 1 and method != "channels":
            reasons[name] = "the classifier, left out by default"
        elif i == 0 and method == "svd":
            reasons[name] = (
                f"first layer, left out by default: break-even rank {break_even_rank(m):.1f} "
                f"< {MIN_BREAK_EVEN_RANK}"
            )
        elif i == 0 and method == "regularizers":
            reasons[name] = "first layer, left out by default"
        else:
            reasons[name] = "not in layers="
    return reasons


def layers_value(model: nn.Module, names: Iterable[str]) -> str:
    """The shortest ``layers=`` value (as source text) that selects ``names``."""
    names = set(names)
    every = [name for name, _ in compressible_layers(model)]
    if names >= set(every):
        return "'all'"
    return repr([name for name in every if name in names])


def select_layers(
    model: nn.Module, layers: Sequence[str] | str | None = None, *, method: str = "regularizers"
) -> list[tuple[str, nn.Module]]:
    """Resolve a layer selection to ``(name, module)`` pairs.

    Parameters
    ----------
    model
        The network.
    layers
        ``None`` for the default of ``method`` (:func:`default_layers`), ``"all"`` for every
        Conv2d/Linear, or an explicit sequence of module names.
    method
        Whose default ``None`` means: ``"regularizers"`` (every Conv2d/Linear but the first and
        the last), ``"svd"`` or ``"channels"``; see the module docstring.

    Raises
    ------
    ValueError
        If a name does not exist in ``model`` or is not a Conv2d/Linear, or ``method`` is unknown.
    TypeError
        If ``layers`` is not None, a string or an iterable of names.
    """
    if method not in DEFAULT_FOR:
        raise ValueError(f"method must be one of {list(DEFAULT_FOR)}, got {method!r}")
    found = compressible_layers(model)
    if layers is None:
        return default_layers(model, method)
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


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` (e.g. ``"layer1.0.conv1"``) of ``model`` by ``new``.

    The parent must exist (``model.get_submodule`` raises ``AttributeError`` naming what is
    missing); the child itself may be new.
    """
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
