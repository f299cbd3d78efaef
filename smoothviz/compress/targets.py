"""One vocabulary for what a compression front door is asked to reach.

Every front door takes exactly one target (``docs/methods.md``, "Targets and allocations"):

- ``param_reduction``: the whole-network budget, the fraction of *all* the model's parameters
  removed (every method; split across layers by the method's allocation);
- a uniform rule applied to every layer or group: ``energy`` (SVD: the kept share of each
  layer's spectrum), ``amount`` (pruning: the fraction of the selected weights, or of each
  group's channels, removed; ``torch.nn.utils.prune``'s word) or ``rtol`` (interpolative
  decomposition: keep the pivots whose ``|R[j,j] / R[0,0]|`` exceeds it, NumPy's ``matrix_rank``
  word for a relative tolerance);
- explicit sizes: ``ranks`` (SVD: the kept rank per layer) or ``channels`` (channel methods: the
  kept channel count per group).

:data:`TARGETS` lists them. Keywords renamed for this vocabulary keep working for one release:
:func:`renamed_keyword` warns with a ``DeprecationWarning`` that names the new keyword.
"""

from __future__ import annotations

import warnings

TARGETS = {
    "param_reduction": "fraction of all the model's parameters removed, in [0, 1)",
    "energy": "per layer, the share of the spectrum kept, in (0, 1] (svd, svd_data_aware)",
    "amount": "fraction of the selected weights (prune_magnitude) or of each group's channels "
    "(prune_channels) removed, in [0, 1)",
    "rtol": "keep the pivots with |R[j,j] / R[0,0]| > rtol, in [0, 1) (interpolative)",
    "ranks": "{layer: kept rank}, or one int for every layer (svd, svd_data_aware)",
    "channels": "{group: kept channel count} (prune_channels, interpolative)",
}


def renamed_keyword(function: str, old: str, new: str, old_value: object, new_value: object):
    """The value of keyword ``new``, also accepted under its old name ``old`` for one release.

    Returns ``new_value`` when ``old_value`` is ``None``; otherwise warns (``DeprecationWarning``
    naming ``new``, pointing at the caller of ``function``) and returns ``old_value``.

    Raises
    ------
    TypeError
        If both names are given.
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{function}: pass {new}= only ({old}= is its old name), not both")
    warnings.warn(
        f"{function}({old}=...) is deprecated and goes in the next release; use {new}= instead",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
