"""What the readers of each channel group see on calibration data (forward passes only).

Both channel methods look at the inputs of the layers that read a group's channels:

- per *source* tensor (readers that read the same tensor share it), the rows ``Z`` of shape
  ``(N·H·W, C)`` (or ``(N·f, C)`` after a flatten): their count, channel means, the squared
  channel norms and, for the interpolative decomposition, the Gram matrix ``Zᵀ Z`` (float64);
- per *reader*, the mean input each of its weights sees: for a ``Conv2d`` the mean of every kernel
  tap over all output positions (shape ``(C, k_h, k_w)``, so zero padding at the borders is
  accounted for exactly), for a ``Linear`` the mean of every input feature (shape ``(C, f)``). The
  mean contribution of removed channels to the reader's output is ``Σ W ⊙ mean`` over them, which
  is what bias compensation folds back in (the taps come from
  :func:`smoothviz.compress.layer_inputs.tap_sums`, the conv geometry the data-aware SVD uses too).

Only ``C×C`` matrices and means are kept, never the activations themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from smoothviz._validation import check_int
from smoothviz.compress.calibration import check_calibration, run_calibration
from smoothviz.compress.chains import ChannelGroup, Reader
from smoothviz.compress.layer_inputs import ReferenceInputs, tap_sums
from smoothviz.compress.shrinkage import sample_shrinkage, shrink


@dataclass
class SourceStats:
    """Statistics of the rows ``Z`` (``(rows, C)``) of one tensor that readers read.

    A source with fewer rows than channels also keeps its rows by input (``samples``, ``(N,
    rows per input, C)``, smaller than the Gram matrix) for the Ledoit-Wolf shrinkage of
    :meth:`gram_for_fit`.
    """

    rows: int
    mean: np.ndarray  # (C,)
    sumsq: np.ndarray  # (C,) Σ z_c²
    gram: np.ndarray | None  # (C, C) Σ z zᵀ, when asked for
    samples: np.ndarray | None = None  # (N, rows per input, C), when rows < C

    def gram_for_fit(self, centered: bool) -> tuple[np.ndarray, float]:
        """The (centred) Gram matrix to fit to, and the shrinkage ``α`` applied to it: ``0.0``
        (the Gram as measured, bit for bit) unless the source has fewer rows than channels, where
        it is ``(1 - α) G + α (tr G / C) I`` (:mod:`smoothviz.compress.shrinkage`)."""
        gram = self.gram - self.rows * np.outer(self.mean, self.mean) if centered else self.gram
        if self.rows >= len(self.mean):
            return gram, 0.0
        if self.samples is None:
            return shrink(gram, 1.0), 1.0
        alpha = sample_shrinkage(self.samples - self.mean if centered else self.samples)
        return shrink(gram, alpha), alpha

    def variance(self) -> np.ndarray:
        """Per-channel variance over the rows."""
        return np.maximum(self.sumsq / self.rows - self.mean**2, 0.0)

    def covariance(self) -> np.ndarray:
        """``Zᵀ Z / rows - mean meanᵀ`` (needs the Gram)."""
        return self.gram / self.rows - np.outer(self.mean, self.mean)


@dataclass
class GroupStats:
    """Per source and per reader statistics of every group measured together."""

    sources: dict[str, SourceStats]
    tap_means: dict[str, torch.Tensor]  # reader -> (C, k_h, k_w) or (C, f), float64


def few_rows(z: torch.Tensor, x: torch.Tensor, channels: int, inputs: int) -> bool:
    """Whether ``inputs`` calibration inputs give this source fewer rows than ``channels``
    (``z``: the rows of the batch ``x``)."""
    return z.shape[0] // max(x.shape[0], 1) * inputs < channels


def by_input(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The rows ``z`` of batch ``x`` grouped by input, ``(N, rows per input, C)``, in float64 on
    the CPU (rows are ordered input by input, :func:`_rows`)."""
    return z.reshape(x.shape[0], -1, z.shape[1]).to("cpu", torch.float64)


def _rows(x: torch.Tensor, module: nn.Module, reader: Reader, channels: int) -> torch.Tensor:
    """One row per sample and position: a conv reads ``(N, C, H, W)``, a Linear its last axis
    (``(N, C·f)``, or tokens ``(N, ..., C)`` as in a Transformer or a channels-last MLP)."""
    if isinstance(module, nn.Conv2d):
        return x.permute(0, 2, 3, 1).reshape(-1, channels)
    f = reader.features_per_channel
    return x.reshape(-1, channels, f).permute(0, 2, 1).reshape(-1, channels)


def group_statistics(
    model: nn.Module,
    calibration: torch.Tensor,
    groups: Sequence[ChannelGroup],
    *,
    gram: bool = False,
    batch_size: int = 128,
) -> GroupStats:
    """Run ``calibration`` through ``model`` (eval mode, no gradient) and measure every reader input.

    Parameters
    ----------
    model
        The network (not modified; its train/eval mode is restored).
    calibration
        Training inputs ``(N, ...)``, validated by
        :func:`smoothviz.compress.calibration.check_calibration`.
    groups
        The groups whose readers are measured.
    gram
        Also accumulate the ``C×C`` Gram matrix of every source (the interpolative decomposition
        needs it; pruning needs only the diagonal).
    batch_size
        Images per forward pass.
    """
    calibration = check_calibration(model, calibration)
    batch_size = check_int("batch_size", batch_size, low=1)
    acc: dict[str, dict] = {}
    taps: dict[str, list] = {}
    by_reader = {r.name: (g, r) for g in groups for r in g.readers}

    def hook(name: str):
        g, reader = by_reader[name]
        module = model.get_submodule(name)

        def record(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            if reader.source not in acc or acc[reader.source]["owner"] == name:
                z = _rows(x, module, reader, g.channels).double()
                a = acc.setdefault(
                    reader.source,
                    {"owner": name, "rows": 0, "sum": 0.0, "sumsq": 0.0, "gram": 0.0},
                )
                a["rows"] += z.shape[0]
                a["sum"] = a["sum"] + z.sum(0)
                a["sumsq"] = a["sumsq"] + (z * z).sum(0)
                if gram:
                    a["gram"] = a["gram"] + z.T @ z
                    if few_rows(z, x, g.channels, len(calibration)):
                        a.setdefault("samples", []).append(by_input(z, x))
            if isinstance(module, nn.Conv2d):
                s, n = tap_sums(x, module)
            else:
                flat = x.reshape(-1, module.in_features)
                s = flat.double().sum(0).reshape(g.channels, reader.features_per_channel)
                n = flat.shape[0]
            t = taps.setdefault(name, [0.0, 0])
            t[0], t[1] = t[0] + s, t[1] + n

        return record

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in by_reader]
    run_calibration(model, calibration, handles, batch_size)
    sources = {}
    for src, a in acc.items():
        rows = a["rows"]
        sources[src] = SourceStats(
            rows,
            (a["sum"] / rows).cpu().numpy(),
            a["sumsq"].cpu().numpy(),
            a["gram"].cpu().numpy() if gram else None,
            torch.cat(a["samples"]).cpu().numpy() if "samples" in a else None,
        )
    tap_means = {name: (s / n).cpu() for name, (s, n) in taps.items()}
    return GroupStats(sources, tap_means)


@dataclass
class PairedStats:
    """Reader inputs of a compressed model next to those of the original, on the same images.

    For every source: ``gram`` ``Z̃ᵀ Z̃`` and ``cross`` ``Z̃ᵀ Z`` (compressed rows ``Z̃``, original
    rows ``Z``), both means; for every reader, the tap means of both.
    """

    rows: dict[str, int]
    gram: dict[str, np.ndarray]
    cross: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]  # compressed
    mean_original: dict[str, np.ndarray]
    tap_means: dict[str, torch.Tensor]  # compressed
    tap_means_original: dict[str, torch.Tensor]
    samples: dict[str, np.ndarray] = field(default_factory=dict)  # compressed rows, if few

    def source(self, src: str) -> SourceStats:
        """The compressed model's statistics of one source (for :meth:`SourceStats.gram_for_fit`)."""
        sumsq = np.diagonal(self.gram[src]).copy()
        return SourceStats(
            self.rows[src], self.mean[src], sumsq, self.gram[src], self.samples.get(src)
        )


def paired_statistics(
    original: nn.Module,
    compressed: nn.Module,
    calibration: torch.Tensor,
    group: ChannelGroup,
    *,
    batch_size: int = 128,
    reference: ReferenceInputs | None = None,
) -> PairedStats:
    """Run the same calibration batches through both models; measure ``group``'s reader inputs.

    ``reference``: the original's layer inputs on these batches, recorded once
    (:func:`~smoothviz.compress.layer_inputs.reference_inputs`); when it holds every reader, the
    original is not run and its side is read from it (the same floats).
    """
    calibration = check_calibration(original, calibration)
    first = {}
    for r in group.readers:
        first.setdefault(r.source, r)
    seen: dict[str, dict[str, torch.Tensor]] = {"original": {}, "compressed": {}}
    taps: dict[str, dict[str, list]] = {"original": {}, "compressed": {}}

    def hook(which: str, reader):
        module = (original if which == "original" else compressed).get_submodule(reader.name)

        def record(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            if first[reader.source] is reader:
                seen[which][reader.source] = _rows(x, module, reader, group.channels).double()
                if which == "compressed":
                    inputs[reader.source] = x
            if isinstance(module, nn.Conv2d):
                s, n = tap_sums(x, module)
            else:
                flat = x.reshape(-1, module.in_features)
                s = flat.double().sum(0).reshape(group.channels, reader.features_per_channel)
                n = flat.shape[0]
            t = taps[which].setdefault(reader.name, [0.0, 0])
            t[0], t[1] = t[0] + s, t[1] + n

        return record

    recorded = reference is not None and all(r.name in reference for r in group.readers)
    live = (
        (("compressed", compressed),)
        if recorded
        else (("original", original), ("compressed", compressed))
    )
    handles = [
        m.get_submodule(r.name).register_forward_pre_hook(hook(which, r))
        for which, m in live
        for r in group.readers
    ]
    replay = {r.name: hook("original", r) for r in group.readers} if recorded else {}
    acc = {src: {"rows": 0, "gram": 0.0, "cross": 0.0, "sum": 0.0, "sum0": 0.0} for src in first}
    inputs: dict[str, torch.Tensor] = {}  # the compressed model's input per source, for its shape
    modes = (original.training, compressed.training)
    original.eval()
    compressed.eval()
    try:
        device = next(original.parameters()).device
        with torch.no_grad():
            for i, start in enumerate(range(0, len(calibration), batch_size)):
                x = calibration[start : start + batch_size].to(device)
                if recorded:  # the original's side as a forward pass would record it
                    for r in group.readers:
                        replay[r.name](None, (reference.batch(r.name, i),))
                else:
                    original(x)
                compressed(x)
                for src, a in acc.items():
                    z, z0 = seen["compressed"][src], seen["original"][src]
                    a["rows"] += z.shape[0]
                    a["gram"] = a["gram"] + z.T @ z
                    a["cross"] = a["cross"] + z.T @ z0
                    a["sum"] = a["sum"] + z.sum(0)
                    a["sum0"] = a["sum0"] + z0.sum(0)
                    if few_rows(z, inputs[src], group.channels, len(calibration)):
                        a.setdefault("samples", []).append(by_input(z, inputs[src]))
    finally:
        for h in handles:
            h.remove()
        original.train(modes[0])
        compressed.train(modes[1])
    rows = {src: a["rows"] for src, a in acc.items()}
    return PairedStats(
        rows,
        {src: a["gram"].cpu().numpy() for src, a in acc.items()},
        {src: a["cross"].cpu().numpy() for src, a in acc.items()},
        {src: (a["sum"] / a["rows"]).cpu().numpy() for src, a in acc.items()},
        {src: (a["sum0"] / a["rows"]).cpu().numpy() for src, a in acc.items()},
        {name: (s / n).cpu() for name, (s, n) in taps["compressed"].items()},
        {name: (s / n).cpu() for name, (s, n) in taps["original"].items()},
        {src: torch.cat(a["samples"]).cpu().numpy() for src, a in acc.items() if "samples" in a},
    )
