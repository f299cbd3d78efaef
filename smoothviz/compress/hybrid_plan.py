"""The hybrid method's budget: one allocation over SVD terms and channels, scored alike.

:func:`~smoothviz.compress.hybrid.hybrid_compress` chooses, under one parameter budget, for every
layer between factorisation (the data-aware SVD) and channel removal (the interpolative
decomposition's pivots), or both. Both kinds of removable unit get a score in the same unit, the
*share of a layer's output energy* its removal costs (post-BatchNorm, on the calibration inputs),
divided by the parameters it saves, and the one allocator
(:func:`~smoothviz.compress.budget.split_budget`) removes the cheapest first while it counts the
parameters exactly:

- **an SVD term** ``j`` of layer ``l``: ``σ_j² / Σσ²`` of the whitened, BatchNorm-weighted matrix
  (the data-aware SVD's own output error, as a share of the layer's output energy;
  :class:`~smoothviz.compress.data_aware_svd.DataAwareFactors`) over ``m + n``, the parameters one
  rank costs;
- **a channel** of group ``g``, at pivot position ``i`` (:func:`channel_output_error`): with the
  readers' (centred) inputs ``Z`` of each source in pivot order factored ``Z = Q R`` (no
  pivoting), keeping the first ``k`` channels leaves the residual ``Σ_{i>=k} Q_i R[i, :]``, so the
  error it causes in a reader's output ``D W`` (``D`` the reader's BatchNorm weighting) is
  ``Σ_{i>=k} e_i`` with ``e_i = Σ_taps ‖D W_tap R[i, :]ᵀ‖²``: additive per removed pivot, and
  ``Σ_i e_i`` is the whole (centred) output the group's channels give its readers. Its score is
  ``e_i / Σ e`` over the parameters one channel of the group carries (writers' rows, BatchNorms,
  readers' columns; :class:`~smoothviz.compress.chains.ChannelPlan`).

Why shares and not absolute errors (ours): absolute output errors are summed over a feature map's
positions and measured in each layer's own scale, and the classifier's logits have neither a
BatchNorm nor many positions, so on a trained CNN absolute scores made the classifier's input
channels look nearly free and the allocation cut them to one or two; shares compare layers of any
size and scale, as the data-aware SVD's ``"energy"`` allocation does (within 0.4 pp of its default
in ``benchmarks/results/svd_choices.md``).

Approximations (ours): the channel error treats a convolution's kernel taps as independent (it
ignores the correlation of the residual between neighbouring positions; exact for 1x1
convolutions and Linear readers), it is the error of the interpolation ``T`` before the hybrid's
own refit (which can only lower it on the calibration inputs), and the costs are those of the
uncut layers (a channel removed from a factorised layer saves ``r`` instead of ``m`` weights per
reader). Within a group the scores are made non-increasing (a running maximum from the end), as
the allocator requires. The parameter count itself is exact: :class:`HybridPlan`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.linalg
from torch import nn

from smoothviz.compress.chains import ChannelGroup, ChannelPlan
from smoothviz.compress.layer_inputs import output_weights
from smoothviz.compress.surgery import per_channel
from smoothviz.layers import matrix_view

CHANNEL, RANK = "channels", "rank"  # the two kinds of unit, the keys' prefixes


def unit_key(kind: str, name: str) -> str:
    """The allocator's key of a group's channels (``kind="channels"``) or a layer's rank."""
    return f"{kind}:{name}"


def split_key(key: str) -> tuple[str, str]:
    """``(kind, name)`` of a :func:`unit_key`."""
    kind, _, name = key.partition(":")
    return kind, name


def weights_at(rank: int, m: int, n: int) -> int:
    """Weights of an ``m × n`` matrix view kept at ``rank``: ``rank·(m + n)`` where it is
    factorised (``rank`` at most the break-even rank and below ``min(m, n)``, as
    :meth:`~smoothviz.compress.factorized.LayerFactors.factorizes_at`), else ``m·n``."""
    return rank * (m + n) if factorizes(rank, m, n) else m * n


def factorizes(rank: int, m: int, n: int) -> bool:
    """The factorisation rule of :class:`~smoothviz.compress.factorized.LayerFactors` for an
    ``m × n`` matrix view (its shape after channels were removed)."""
    break_even = max(0, -(-m * n // (m + n)) - 1)
    return rank <= break_even and rank < min(m, n)


class HybridPlan:
    """Exact parameter count of a model whose groups keep some channels and layers some ranks.

    Parameters
    ----------
    model
        The uncompressed network.
    groups
        The channel groups that may be cut (their readers without a bias and without a BatchNorm
        gain one when cut: the intercept of the refit, counted as
        :class:`~smoothviz.compress.chains.ChannelPlan` counts compensation biases).
    layers
        The layers that may be factorised.
    bias_for
        Readers that gain a bias when their group is cut.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: list[ChannelGroup],
        layers: list[str],
        bias_for: list[str],
    ) -> None:
        self.channels = ChannelPlan(model, groups, bias_for)
        self.total = self.channels.total
        self.groups = {g.name: g for g in groups}
        self.shapes = {n: tuple(matrix_view(model.get_submodule(n).weight).shape) for n in layers}
        self.writes = {w.name: g.name for g in groups for w in g.writers}
        self.reads = {r.name: g.name for g in groups for r in g.readers}

    def shape_after(self, layer: str, kept: Mapping[str, int]) -> tuple[int, int]:
        """The matrix view ``(m', n')`` of ``layer`` when group ``g`` keeps ``kept[g]`` channels."""
        m, n = self.shapes[layer]
        out, inp = self.writes.get(layer), self.reads.get(layer)
        if out in kept:
            m = kept[out]
        if inp in kept:
            n = n // self.groups[inp].channels * kept[inp]
        return m, n

    def params(self, kept: Mapping[str, int], ranks: Mapping[str, int]) -> int:
        """Every parameter of the model with groups at ``kept`` channels and layers at ``ranks``."""
        total = self.channels.params(dict(kept))
        for layer, r in ranks.items():
            m, n = self.shape_after(layer, kept)
            total -= m * n - weights_at(int(r), m, n)
        return total

    def params_of_units(self, units: Mapping[str, int]) -> int:
        """:meth:`params` for the allocator's ``{unit_key: kept}``."""
        return self.params(*kept_from_units(units))

    def per_channel(self, group: str) -> int:
        """Parameters one channel of ``group`` carries (with nothing else cut)."""
        c = self.groups[group].channels
        return max(1, self.channels.params({}) - self.channels.params({group: c - 1}))


def channel_output_error(
    model: nn.Module,
    group: ChannelGroup,
    pivots: np.ndarray,
    roots: Mapping[str, np.ndarray],
    images: int,
    followers: Mapping[str, str],
) -> np.ndarray:
    """``e_i``: the error each pivot's removal adds in the readers' post-BatchNorm outputs.

    Parameters
    ----------
    model
        The uncompressed network (readers' weights and BatchNorms are read).
    group
        The channel group.
    pivots
        Its channel order, most informative first (the interpolative decomposition's pivots).
    roots
        Per source tensor, ``B`` with ``Bᵀ B`` its (centred) Gram matrix of the reader inputs.
    images
        Calibration images the Grams were summed over (the scores are per image).
    followers
        ``{layer: BatchNorm that directly follows it}`` (``D`` of each reader).

    Returns
    -------
    numpy.ndarray
        ``e_i`` for pivot positions ``i = 0 .. C-1`` (removing positions ``k..C-1`` costs their
        sum; see the module docstring).
    """
    piv = np.asarray(pivots)
    total = np.zeros(group.channels)
    for src, b in roots.items():
        r = scipy.linalg.qr(b[:, piv], mode="r")[0]
        r = np.asarray(r)[: group.channels]
        if r.shape[0] < group.channels:
            r = np.vstack([r, np.zeros((group.channels - r.shape[0], group.channels))])
        for reader in group.readers:
            if reader.source != src:
                continue
            m = model.get_submodule(reader.name)
            w3 = per_channel(m, m.weight.detach(), group.channels).double().cpu()  # (out, C, t)
            d = output_weights(model, reader.name, followers.get(reader.name))
            w3 = (w3 * d[:, None, None])[:, piv, :]
            for t in range(w3.shape[2]):  # column i of W_t Rᵀ is W_t R[i, :]ᵀ
                total += ((w3[:, :, t].numpy() @ r.T) ** 2).sum(0)
    return total / max(images, 1)


def hybrid_scores(
    rank_errors: Mapping[str, np.ndarray],
    channel_errors: Mapping[str, np.ndarray],
    plan: HybridPlan,
) -> dict[str, np.ndarray]:
    """The allocator's scores: share of the layer's output energy per parameter saved,
    non-increasing within each unit key (see the module docstring).

    ``rank_errors``: per layer, ``σ_j²`` of its data-aware factors; ``channel_errors``: per group,
    :func:`channel_output_error`.
    """
    scores: dict[str, np.ndarray] = {}
    for layer, err in rank_errors.items():
        m, n = plan.shapes[layer]
        scores[unit_key(RANK, layer)] = _share(err) / (m + n)
    for group, err in channel_errors.items():
        s = _share(err) / plan.per_channel(group)
        scores[unit_key(CHANNEL, group)] = np.maximum.accumulate(s[::-1])[::-1]
    return scores


def _share(errors: np.ndarray) -> np.ndarray:
    e = np.asarray(errors, dtype=np.float64)
    return e / max(float(e.sum()), 1e-300)


def kept_from_units(units: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """``(channels kept per group, rank per layer)`` of the allocator's ``{unit_key: kept}``."""
    kept, ranks = {}, {}
    for key, value in units.items():
        kind, name = split_key(key)
        (kept if kind == CHANNEL else ranks)[name] = int(value)
    return kept, ranks
