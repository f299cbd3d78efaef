"""Interpolative decomposition (Chee, Renz, Damle, De Sa, NeurIPS 2022): model-preserving pruning.

For each channel group (see :mod:`smoothviz.compress.chains`: a chain ``conv -> bn -> relu ->
conv``, or a whole residual stream), the readers' input activations on a calibration set, ``Z`` of
shape ``(N·H·W, C)``, are factored by column-pivoted QR ``Z Π = Q R``. Keeping the first ``k``
pivots ``S``, ``Z ≈ Z[:, S] T`` with ``T = [I_k, R11⁻¹ R12] Πᵀ``; the writers (and their
BatchNorms, and depthwise convs on the channels) keep channels ``S`` and every reader's input
weights become ``W'[:, s] = Σ_c T[s, c] W[:, c]``. No gradient step; keeping every channel
reproduces the network.

Variants (``variant=``; measured in ``benchmarks/results/channel_methods.md``):

- ``"one_shot"``: every group is measured on the *original* model, once; the factors are reused
  for every budget.
- ``"sequential"`` (Algorithm 1 of Chee et al.): groups are compressed in graph order, each one
  decomposed on the activations ``Z̃`` of the model whose earlier groups are already compressed.
- ``"corrected"`` (default, ours): sequential too, and each group's interpolation matrix is fitted
  to reproduce the *original* model's activations ``Z`` from the kept ones of the partially
  compressed model, ``T = argmin ||Z̃[:, S] T - Z||`` (pivots from ``Z̃``), so every group also
  undoes the error of the groups before it. Both original and compressed models run on the same
  calibration batches; the lost mean is matched to the original's as well.

The sequential variants take their per-group sizes from the one-shot factors (one global
allocation) and then re-measure each group: one calibration pass per group.

Choices that are ours:

- Only ``C×C`` Gram matrices are kept (float64), per *source* tensor (readers that read the same
  tensor share it); a residual stream is read at several depths, so its pivots come from the
  stacked square roots of all its sources' Grams (which pivoted-QR's the stacked ``Z`` exactly),
  and each source gets its own least-squares ``T`` for the shared kept set.
- ``compensate=True`` (default) fits ``T`` to the *centred* activations and folds the mean of what
  the readers lose into their bias or BatchNorm running mean (exactly as ``prune_channels`` does),
  making the decomposition affine: ``Z ≈ Z[:, S] T + 1 bᵀ``. ``compensate=False`` is the paper's
  linear ID.
- ``T[:, S] = I`` is imposed and only the removed columns are solved (least squares, which stays
  finite when ``Z`` is rank deficient, e.g. dead ReLU channels).
- A flatten between writer and a Linear reader is handled: each channel owns ``f`` consecutive
  input features, and ``Z`` gets one row per sample and position.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import nn

from smoothviz._validation import check_choice
from smoothviz.compress.activations import (
    GroupStats,
    PairedStats,
    SourceStats,
    group_statistics,
    paired_statistics,
)
from smoothviz.compress.calibration import check_calibration
from smoothviz.compress.chains import ChannelGroup, ChannelPlan, GroupSearch, find_groups
from smoothviz.compress.channel_request import (
    channel_target,
    kept_counts,
    resolve_channel_request,
)
from smoothviz.compress.forward_check import probe_model
from smoothviz.compress.layer_inputs import reference_inputs
from smoothviz.compress.shrinkage import RowShortfall, shrink, warn_few_rows
from smoothviz.compress.surgery import bias_readers, changed_layers, cut_group
from smoothviz.compress.targets import renamed_keyword

VARIANTS = ("corrected", "sequential", "one_shot")


def _root(gram: np.ndarray) -> np.ndarray:
    """A square matrix ``B`` with ``Bᵀ B = gram`` (symmetric eigen-decomposition)."""
    vals, vecs = np.linalg.eigh((gram + gram.T) / 2)
    return np.sqrt(np.clip(vals, 0.0, None))[:, None] * vecs.T


def _source_root(stats: SourceStats, centered: bool) -> np.ndarray:
    return _root(stats.gram_for_fit(centered)[0])


@dataclass(frozen=True)
class GroupQR:
    """Pivoted QR of one group's reader inputs (all sources stacked): ``Z[:, pivots] = Q r``."""

    group: ChannelGroup
    pivots: np.ndarray  # (C,) channel order, most informative first
    r: np.ndarray  # (C, C) upper triangular, |diag| non-increasing
    roots: dict[str, np.ndarray]  # source -> B with Bᵀ B = its (centred) Gram

    def error_proxy(self) -> np.ndarray:
        """``|R[j, j] / R[0, 0]|`` for every position ``j`` (the score of keeping pivot ``j``)."""
        d = np.abs(np.diag(self.r))
        return d / max(d[0], 1e-300)

    def interpolation(self, k: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Kept channels ``S`` (pivot order) and, per source, ``T`` (k×C) with ``Z ≈ Z[:, S] T``."""
        s = self.pivots[:k].copy()
        rest = self.pivots[k:]
        mix = {}
        for src, b in self.roots.items():
            t = np.zeros((k, self.group.channels))
            t[np.arange(k), s] = 1.0
            if len(rest):
                t[:, rest] = scipy.linalg.lstsq(b[:, s], b[:, rest], lapack_driver="gelsd")[0]
            mix[src] = t
        return s, mix


def _group_qr(group: ChannelGroup, stats: GroupStats, centered: bool) -> GroupQR:
    sources = dict.fromkeys(r.source for r in group.readers)
    roots = {src: _source_root(stats.sources[src], centered) for src in sources}
    r, piv = scipy.linalg.qr(np.vstack(list(roots.values())), mode="r", pivoting=True)
    r = np.asarray(r[0] if isinstance(r, tuple) else r)[: group.channels]
    if r.shape[0] < group.channels:
        r = np.vstack([r, np.zeros((group.channels - r.shape[0], group.channels))])
    return GroupQR(group, np.asarray(piv), r, roots)


def _corrected(
    group: ChannelGroup, stats: PairedStats, k: int, centered: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Kept channels from the partially compressed model's activations ``Z̃``, and per source the
    ``T`` that maps them back to the original model's ``Z``: ``min ||Z̃[:, S] T - Z||`` (centred
    when ``centered``), with a tiny ridge towards plain selection so dead channels stay finite."""
    grams, crosses = {}, {}
    for src in dict.fromkeys(r.source for r in group.readers):
        n, m, m0 = stats.rows[src], stats.mean[src], stats.mean_original[src]
        crosses[src] = stats.cross[src] - (n * np.outer(m, m0) if centered else 0.0)
        grams[src] = stats.gram[src] - (n * np.outer(m, m) if centered else 0.0)
        if n < group.channels:  # too few rows: Ledoit-Wolf, the cross moment towards Z = Z̃
            prior = shrink(grams[src], 1.0)  # (tr G / C) I
            grams[src], alpha = stats.source(src).gram_for_fit(centered)
            crosses[src] = (1.0 - alpha) * crosses[src] + alpha * prior
    stacked = np.vstack([_root(g) for g in grams.values()])
    piv = np.asarray(scipy.linalg.qr(stacked, mode="r", pivoting=True)[1])
    s = piv[:k].copy()
    select = np.zeros((k, group.channels))
    select[np.arange(k), s] = 1.0
    mix = {}
    for src, g in grams.items():
        gss = g[np.ix_(s, s)]
        ridge = 1e-9 * max(np.trace(gss) / k, 1e-300)
        mix[src] = np.linalg.solve(gss + ridge * np.eye(k), crosses[src][s] + ridge * select)
    return s, mix


class IDFactors(Mapping):
    """Pivoted QRs of every group of a model, by group name; build with
    :func:`interpolative_factors`. Also keeps the statistics (for bias compensation) and the
    calibration inputs (for the sequential variant); ``cache`` holds what later calls derive
    from them once (the original model's layer inputs the corrected variant compares with)."""

    def __init__(
        self,
        qrs: dict[str, GroupQR],
        plan: ChannelPlan,
        search: GroupSearch,
        stats: GroupStats,
        calibration: torch.Tensor,
        compensate: bool,
        residual: bool,
        batch_size: int,
        layers: Sequence[str] | str | None = None,
    ) -> None:
        self._qrs = qrs
        self.layers = layers
        self.plan = plan
        self.search = search
        self.stats = stats
        self.calibration = calibration
        self.compensate = compensate
        self.residual = residual
        self.batch_size = batch_size
        self.cache: dict = {}
        self.few_rows: list[RowShortfall] = []  # groups whose statistics were shrunk

    def __getitem__(self, name: str) -> GroupQR:
        return self._qrs[name]

    def __iter__(self):
        return iter(self._qrs)

    def __len__(self) -> int:
        return len(self._qrs)


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def interpolative_factors(
    model: nn.Module,
    calibration: torch.Tensor,
    *,
    layers: Sequence[str] | str | None = None,
    residual: bool = True,
    compensate: bool = True,
    batch_size: int = 128,
) -> IDFactors:
    """Pivoted QR of the reader inputs of every channel group, on a calibration set.

    Parameters
    ----------
    model
        The trained network (not modified; run in eval mode).
    calibration
        Input images ``(N, C, H, W)`` (training images, not test images).
    layers
        Writer selection (default: every Conv2d/Linear, the first layer included; the
        classifier's outputs are never cut).
    residual
        Include groups tied by a residual add (whole residual streams).
    compensate
        Factor the centred activations (for the affine, bias-compensated decomposition).
    batch_size
        Images per forward pass.
    """
    calibration = check_calibration(model, calibration)
    residual = _check_flag(residual, "residual")
    compensate = _check_flag(compensate, "compensate")
    search = find_groups(model, layers, residual=residual)
    stats = group_statistics(model, calibration, search.groups, gram=True, batch_size=batch_size)
    qrs = {g.name: _group_qr(g, stats, compensate) for g in search.groups}
    plan = ChannelPlan(
        model, search.groups, bias_readers(search.groups, model) if compensate else ()
    )
    factors = IDFactors(
        qrs, plan, search, stats, calibration, compensate, residual, batch_size, layers
    )
    factors.few_rows = _shortfalls(search.groups, stats, len(calibration), compensate)
    warn_few_rows("interpolative decomposition", factors.few_rows, "channel groups")
    return factors


def _shortfalls(
    groups: Sequence[ChannelGroup], stats: GroupStats, images: int, centered: bool
) -> list[RowShortfall]:
    """The groups whose readers saw fewer rows than the group has channels, per source."""
    out = []
    for g in groups:
        sources = list(dict.fromkeys(r.source for r in g.readers))
        for src in sources:
            st = stats.sources[src]
            if st.rows < g.channels:
                name = g.name if len(sources) == 1 else f"{g.name} (read at {src})"
                alpha = st.gram_for_fit(centered)[1]
                out.append(RowShortfall(name, st.rows, g.channels, images, alpha))
    return out


def interpolative_compress(
    model: nn.Module,
    calibration: torch.Tensor | None = None,
    *,
    param_reduction: float | None = None,
    rtol: float | None = None,
    channels: Mapping[str, int] | None = None,
    variant: str = "corrected",
    compensate: bool = True,
    residual: bool = True,
    layers: Sequence[str] | str | None = None,
    factors: IDFactors | None = None,
    batch_size: int = 128,
    tolerance: float | None = None,
    keep: Mapping[str, int] | None = None,
) -> nn.Module:
    """Compress by interpolative decomposition of the activations; returns a new model.

    Parameters
    ----------
    model
        The trained network (not modified); must be traceable by ``torch.fx``.
    calibration
        Training inputs ``(N, C, H, W)`` on which the activations are measured (not needed when
        ``factors`` is given: they keep theirs).
    param_reduction
        Whole-network target in [0, 1), split across groups by one global threshold on the error
        proxy ``|R[k,k] / R[0,0]|``; met within 1 pp or a :class:`BudgetError` names the layers
        left out and why.
    rtol
        Per-group rule: keep the pivots whose ``|R[j,j] / R[0,0]|`` exceeds ``rtol`` (a relative
        tolerance in [0, 1), as NumPy's ``matrix_rank``); at least one channel stays.
    channels
        ``{group name: number of channels to keep}`` (a group is named by its first writer).
    variant
        ``"corrected"`` (default: sequential, each group's correction fitted to reproduce the
        original model's activations from the partially compressed model's), ``"sequential"``
        (Algorithm 1 of Chee et al.: the ID of the partially compressed model's activations) or
        ``"one_shot"`` (every group measured on the original model); see the module docstring.
    compensate
        Affine decomposition: fit on centred activations and fold the lost mean into the readers'
        bias or BatchNorm running mean (default). ``False`` is the paper's linear ID.
    residual
        Also compress whole residual streams (channels tied by a residual add), default True.
    layers
        Writer selection (default: every Conv2d/Linear, the first layer included; the
        classifier's outputs are never cut).
    factors
        Cached :func:`interpolative_factors` of ``model`` (skips the one-shot calibration pass;
        ``layers``, ``residual`` and ``compensate`` are then those the factors were built with).
    batch_size
        Images per calibration forward pass.
    tolerance, keep
        Deprecated names of ``rtol`` and ``channels`` (a ``DeprecationWarning`` says so).

    Exactly one of ``param_reduction``, ``rtol`` and ``channels``.

    Returns
    -------
    nn.Module
        The smaller copy; ``.compression_info`` holds the options, the kept channels per group
        and the skipped layers with their reasons.
    """
    rtol = renamed_keyword("interpolative_compress", "tolerance", "rtol", tolerance, rtol)
    channels = renamed_keyword("interpolative_compress", "keep", "channels", keep, channels)
    target = channel_target(param_reduction, ("rtol", rtol), channels)
    check_choice("variant", variant, VARIANTS)
    if factors is None:
        if calibration is None:
            raise TypeError("calibration is required unless cached factors are passed")
        compensate = _check_flag(compensate, "compensate")
        residual = _check_flag(residual, "residual")
        search = plan = None
    else:
        if not isinstance(factors, IDFactors):
            raise TypeError(f"factors must come from interpolative_factors, got {factors!r}")
        search, plan, compensate = factors.search, factors.plan, factors.compensate
        layers, residual = factors.layers, factors.residual
        calibration = None  # the factors keep theirs, checked when they were made
    request = resolve_channel_request(
        model,
        target,
        calibration=calibration,
        layers=layers,
        residual=residual,
        compensate=compensate,
        what="the interpolative decomposition of these layers",
        search=search,
        plan=plan,
    )
    groups, search = request.groups, request.search
    if factors is None:
        factors = interpolative_factors(
            model,
            calibration,
            layers=layers,
            residual=residual,
            compensate=compensate,
            batch_size=batch_size,
        )
    kept_n = kept_counts(
        request,
        lambda: {p: q.error_proxy() for p, q in factors.items()},
        lambda rtol: {p: max(1, int((q.error_proxy() > rtol).sum())) for p, q in factors.items()},
    )
    new = copy.deepcopy(model)
    kept = {}
    reference = None
    if variant == "corrected" and kept_n:  # the original's side, recorded once per factors
        reference = reference_inputs(factors.cache, model, factors.calibration, factors.batch_size)
    for name, g in groups.items():  # graph order: earlier groups first
        if name not in kept_n:
            continue
        target = None
        if variant == "corrected":
            paired = paired_statistics(
                model,
                new,
                factors.calibration,
                g,
                batch_size=factors.batch_size,
                reference=reference,
            )
            s, mix = _corrected(g, paired, kept_n[name], compensate)
            means, target = paired.tap_means, paired.tap_means_original
        else:
            if variant == "sequential":
                stats = group_statistics(
                    new, factors.calibration, [g], gram=True, batch_size=factors.batch_size
                )
                qr = _group_qr(g, stats, compensate)
            else:
                stats, qr = factors.stats, factors[name]
            s, mix = qr.interpolation(kept_n[name])
            means = stats.tap_means
        cut_group(
            new,
            g,
            s.tolist(),
            mix={src: torch.from_numpy(t) for src, t in mix.items()},
            tap_means=means if compensate else None,
            target_means=target if compensate else None,
        )
        kept[name] = sorted(int(i) for i in s)
    new.compression_info = {
        "method": "interpolative",
        "variant": variant,
        "compensate": compensate,
        "residual": factors.residual,
        "kept": kept,
        "skipped": search.skipped,
    }
    if factors.few_rows:
        new.compression_info["few_rows"] = {
            s.name: {"rows": s.rows, "dims": s.dims, "shrinkage": s.alpha} for s in factors.few_rows
        }
    probe_model(model, factors.calibration).check(
        new, method="interpolative_compress", changed=changed_layers(groups, kept)
    )
    return new
