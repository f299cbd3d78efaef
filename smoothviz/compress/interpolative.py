"""Interpolative decomposition (Chee, Renz, Damle, De Sa, NeurIPS 2022): model-preserving pruning.

For each producer -> consumer chain (see :mod:`smoothviz.compress.chains`), the consumer's input
activations on a calibration set, ``Z`` of shape ``(N·H·W, C)``, are factored by column-pivoted QR
``Z Π = Q R``. Keeping the first ``k`` pivots ``S``, ``Z ≈ Z[:, S] T`` with
``T = [I_k, R11⁻¹ R12] Πᵀ``; the producer (and its BatchNorm, and a depthwise conv in between) keeps
channels ``S`` and the consumer's input weights become ``W'[:, s] = Σ_c T[s, c] W[:, c]``. No
gradient step; keeping every channel reproduces the network.

Choices that are ours:

- ``Z`` is streamed: we keep only the ``C×C`` triangular factor ``R0`` of ``Z`` (updated batch by
  batch with ``torch.linalg.qr`` in float64) and run scipy's pivoted QR on ``R0``; this gives the
  same pivots and ``R`` as pivoting ``Z`` itself (``Z = Q0 R0``) at a fraction of the memory.
- Every chain is measured on the *original* model (not on the output of already-compressed
  layers), so the factors are computed once per model and reused for every budget.
- ``R11⁻¹ R12`` is solved by least squares, which stays finite when ``Z`` is rank deficient
  (dead ReLU channels).
- A flatten between producer and a Linear consumer is handled: each channel owns ``f`` consecutive
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

from smoothviz.compress.budget import allocate, check_reachable, check_reduction, exactly_one
from smoothviz.compress.calibration import check_calibration
from smoothviz.compress.chains import Chain, ChannelPlan, find_chains
from smoothviz.compress.prune import apply_channel_cut


@dataclass(frozen=True)
class ChainQR:
    """Pivoted QR of one chain's consumer inputs: ``Z[:, pivots] = Q r``."""

    chain: Chain
    pivots: np.ndarray  # (C,) channel order, most informative first
    r: np.ndarray  # (C, C) upper triangular, |diag| non-increasing

    def error_proxy(self) -> np.ndarray:
        """``|R[j, j] / R[0, 0]|`` for every position ``j`` (the score of keeping pivot ``j``)."""
        d = np.abs(np.diag(self.r))
        return d / max(d[0], 1e-300)

    def interpolation(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Kept channels ``S`` (pivot order) and ``T`` (k×C) with ``Z ≈ Z[:, S] T``."""
        c = self.chain.channels
        r11, r12 = self.r[:k, :k], self.r[:k, k:]
        t_piv = np.zeros((k, c))
        t_piv[:, :k] = np.eye(k)
        if k < c:
            t_piv[:, k:] = scipy.linalg.lstsq(r11, r12, lapack_driver="gelsd")[0]
        t = np.empty_like(t_piv)
        t[:, self.pivots] = t_piv
        return self.pivots[:k].copy(), t


class IDFactors(Mapping):
    """Pivoted QRs of every chain of a model, by producer name; build with
    :func:`interpolative_factors`."""

    def __init__(self, qrs: dict[str, ChainQR], plan: ChannelPlan) -> None:
        self._qrs = qrs
        self.plan = plan

    def __getitem__(self, name: str) -> ChainQR:
        return self._qrs[name]

    def __iter__(self):
        return iter(self._qrs)

    def __len__(self) -> int:
        return len(self._qrs)


def interpolative_factors(
    model: nn.Module,
    calibration: torch.Tensor,
    *,
    layers: Sequence[str] | str | None = None,
    batch_size: int = 128,
) -> IDFactors:
    """Pivoted QR of the consumer inputs of every chain, on a calibration set (forward passes only).

    Parameters
    ----------
    model
        The trained network (not modified; run in eval mode).
    calibration
        Input images ``(N, C, H, W)`` (training images, not test images).
    layers
        Producer selection (default: every Conv2d/Linear but the first and the last).
    batch_size
        Images per forward pass.
    """
    calibration = check_calibration(model, calibration)
    chains = find_chains(model, layers)
    consumers = {c.consumer: c for c in chains}
    r_factors: dict[str, torch.Tensor | None] = {c.producer: None for c in chains}

    def hook(name: str):
        chain = consumers[name]

        def record(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach().double()
            c = chain.channels
            if x.ndim == 4:
                z = x.permute(0, 2, 3, 1).reshape(-1, c)
            else:
                z = x.reshape(x.shape[0], c, -1).permute(0, 2, 1).reshape(-1, c)
            prev = r_factors[chain.producer]
            stacked = z if prev is None else torch.cat([prev, z])
            r_factors[chain.producer] = torch.linalg.qr(stacked, mode="r").R

        return record

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in consumers]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            for start in range(0, len(calibration), batch_size):
                model(calibration[start : start + batch_size].to(device))
    except RuntimeError as exc:
        raise ValueError(
            f"calibration of shape {tuple(calibration.shape)} does not fit the model: {exc}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    qrs = {}
    for c in chains:
        r0 = r_factors[c.producer].cpu().numpy()
        if r0.shape[0] < c.channels:  # fewer rows than channels: pad the triangle with zeros
            r0 = np.vstack([r0, np.zeros((c.channels - r0.shape[0], c.channels))])
        r, piv = scipy.linalg.qr(r0, mode="r", pivoting=True)
        qrs[c.producer] = ChainQR(
            c, np.asarray(piv), np.asarray(r[0] if isinstance(r, tuple) else r)
        )
    return IDFactors(qrs, ChannelPlan(model, chains))


def interpolative_compress(
    model: nn.Module,
    calibration: torch.Tensor | None = None,
    *,
    param_reduction: float | None = None,
    tolerance: float | None = None,
    keep: Mapping[str, int] | None = None,
    layers: Sequence[str] | str | None = None,
    factors: IDFactors | None = None,
) -> nn.Module:
    """Compress by interpolative decomposition of the activations; returns a new model.

    Parameters
    ----------
    model
        The trained network (not modified); must be traceable by ``torch.fx``.
    calibration
        Training inputs ``(N, C, H, W)`` on which the activations are measured (not needed when
        ``factors`` is given).
    param_reduction
        Whole-network target in [0, 1), split across layers by one global threshold on the error
        proxy ``|R[k,k] / R[0,0]|``; met within 1 pp or a :class:`BudgetError` says why not.
    tolerance
        Per-layer rule: keep the pivots whose ``|R[j,j] / R[0,0]|`` exceeds ``tolerance`` (in
        [0, 1)); at least one channel stays.
    keep
        ``{producer name: number of channels to keep}``.
    layers
        Producer selection (default: every Conv2d/Linear but the first and the last).
    factors
        Cached :func:`interpolative_factors` of ``model`` (skips the calibration passes).

    Exactly one of ``param_reduction``, ``tolerance`` and ``keep``.

    Returns
    -------
    nn.Module
        The smaller copy; ``.compression_info["kept"]`` lists the kept channels per producer.
    """
    mode = exactly_one(param_reduction=param_reduction, tolerance=tolerance, keep=keep)
    if mode == "param_reduction":
        check_reduction(param_reduction)
    elif mode == "tolerance":
        check_reduction(tolerance, "tolerance")
    elif not isinstance(keep, Mapping):
        raise TypeError(f"keep must be a dict {{producer name: channels to keep}}, got {keep!r}")
    if factors is None:
        if calibration is None:
            raise TypeError("calibration is required unless cached factors are passed")
        check_calibration(model, calibration)
        chain_list = find_chains(model, layers)
        plan = ChannelPlan(model, chain_list)
    else:
        plan = factors.plan
        chain_list = [q.chain for q in factors.values()]
    chains = {c.producer: c for c in chain_list}
    if mode == "keep":
        unknown = [p for p in keep if p not in chains]
        if unknown:
            raise ValueError(f"keep: {unknown} are not prunable producers; allowed: {list(chains)}")
        for p, k in keep.items():
            c = chains[p].channels
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= c:
                raise ValueError(f"keep[{p!r}] must be an int in [1, {c}], got {k!r}")
    if mode == "param_reduction":
        check_reachable(
            param_reduction,
            plan.total,
            plan.min_params(),
            "the interpolative decomposition of these layers",
        )
    if factors is None:
        factors = interpolative_factors(model, calibration, layers=layers)
    if mode == "keep":
        kept_n = {p: int(k) for p, k in keep.items()}
    elif mode == "tolerance":
        kept_n = {p: max(1, int((q.error_proxy() > tolerance).sum())) for p, q in factors.items()}
    else:
        scores = {p: q.error_proxy() for p, q in factors.items()}
        kept_n = allocate(
            scores,
            plan.params,
            plan.total,
            float(param_reduction),
            what="the interpolative decomposition of these layers",
        )
    keep_idx, mix = {}, {}
    for p, k in kept_n.items():
        s, t = factors[p].interpolation(k)
        keep_idx[p] = s.tolist()
        mix[p] = torch.from_numpy(t)
    new = copy.deepcopy(model)
    apply_channel_cut(new, chains, keep_idx, mix)
    new.compression_info = {
        "method": "interpolative",
        "kept": {p: sorted(v) for p, v in keep_idx.items()},
    }
    return new
