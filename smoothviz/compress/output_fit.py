"""Fitting a layer to what the original model computes: whitening, the whitened truncation, the refit.

Shared by the data-aware SVD (:mod:`~smoothviz.compress.data_aware_svd`) and the hybrid method
(:mod:`~smoothviz.compress.hybrid`):

- :func:`whiten`: ``L`` with ``L Lᵀ`` the damped input covariance, and ``L⁻¹``;
- :func:`truncation_factors`: the SVD of ``D W L`` (``D`` the BatchNorm weighting of the
  outputs), mapped back, so that truncating it minimises the layer's output error on its inputs
  (the data-aware SVD's truncation; see that module for the derivation);
- :func:`fit_to_original`: the least-squares weight that makes a layer of a partially compressed
  model reproduce the *original* model's outputs from the inputs it now receives, ridge-damped
  towards its current weight. It generalises the data-aware SVD's sequential refit to layers whose
  input channels were removed (fewer inputs than the original layer), whose output channels were
  removed (only the kept rows are fitted) and to an intercept (the mean the removed inputs carried,
  folded back by the caller). With none of these it is exactly the data-aware refit's formula.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from smoothviz.compress.factorized import LayerFactors
from smoothviz.compress.layer_inputs import ReferenceInputs, paired_layer_inputs
from smoothviz.layers import matrix_view


def whiten(cov: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``L`` with ``L Lᵀ = cov + δ·(tr cov / n)·I``, and ``L⁻¹``, in float64.

    Cholesky of the damped covariance; where that fails (round-off on a nearly singular matrix),
    eigen-whitening with the eigenvalues clamped at the damping level.

    Returns
    -------
    l, l_inv, how
        The whitening factor, its inverse and ``"cholesky"`` or ``"eigen"``.
    """
    n = cov.shape[0]
    scale = float(torch.diagonal(cov).mean())
    eye = torch.eye(n, dtype=torch.float64)
    reg = cov + damping * scale * eye
    chol, info = torch.linalg.cholesky_ex(reg)
    if int(info) == 0:
        return chol, torch.linalg.solve_triangular(chol, eye, upper=False), "cholesky"
    evals, evecs = torch.linalg.eigh((reg + reg.T) / 2)
    evals = evals.clamp_min(max(damping, 1e-12) * scale)
    root = evals.sqrt()
    return evecs * root, (evecs / root).T, "eigen"


def truncation_factors(
    name: str,
    weight: torch.Tensor,
    cov: torch.Tensor,
    d: torch.Tensor,
    damping: float,
    dtype: torch.dtype,
) -> tuple[LayerFactors, str]:
    """The whitened truncation factors of one layer: ``u = D⁻¹U``, ``s = Σ``, ``vh = Vᵀ L⁻¹`` for
    ``D W L = U Σ Vᵀ`` with ``L Lᵀ`` the damped ``cov`` (:func:`whiten`), and the whitening used."""
    w = matrix_view(weight.detach().to("cpu", torch.float64))
    white, white_inv, how = whiten(cov, damping)
    u, s, vh = torch.linalg.svd(d[:, None] * w @ white, full_matrices=False)
    f = LayerFactors(
        name,
        (u / d[:, None]).to(dtype),
        s.to(dtype),
        (vh @ white_inv).to(dtype),
        tuple(weight.shape),
    )
    return f, how


@dataclass
class LayerFit:
    """What :func:`fit_to_original` found for one layer (float64, on the CPU).

    ``weight`` is the fitted matrix view ``(m', n')``; ``shift`` the intercept to add to each
    output (``None`` unless asked for); ``gram`` the layer's current input second moment
    ``X̂ᵀX̂`` per calibration image, which the whitened truncation of ``weight`` needs.
    """

    weight: torch.Tensor
    shift: torch.Tensor | None
    gram: torch.Tensor


def fit_to_original(
    original: nn.Module,
    current: nn.Module,
    name: str,
    calibration: torch.Tensor,
    *,
    damping: float,
    rows: Sequence[int] | None = None,
    intercept: bool = False,
    batch_size: int = 128,
    reference: ReferenceInputs | None = None,
) -> LayerFit:
    """The weight with which layer ``name`` of ``current`` best reproduces the original's outputs.

    With ``X`` the layer's input rows in ``original`` (``n`` columns) and ``X̂`` those in
    ``current`` (``n'`` columns: fewer when input channels were removed), ``W`` the original
    matrix view restricted to ``rows`` (the output channels ``current`` kept, in its order) and
    ``W₀`` the current weight, ridge ``λ = δ·tr(X̂ᵀX̂)/n'``:

        W* = argmin ‖X̂ W*ᵀ (+ 1 cᵀ) − X Wᵀ‖² + λ‖W* − W₀‖²

    solved in closed form (``c``, the intercept, only when ``intercept``; it is not damped).
    Both models must be in eval mode.

    Parameters
    ----------
    original, current
        The uncompressed model and the partially compressed one (not modified).
    name
        The layer, a Conv2d/Linear in both (geometry other than the channel counts unchanged).
    calibration
        Training inputs (already validated), run in batches of ``batch_size``.
    damping
        ``δ``, the relative ridge (the data-aware SVD's ``damping``).
    rows
        The original output channels the current layer keeps, in its order (``None``: all).
    intercept
        Also fit a constant per output (for layers that lost input channels: the mean those
        carried).
    reference
        The original's layer inputs, recorded once
        (:func:`~smoothviz.compress.layer_inputs.reference_inputs`).
    """
    pairs = paired_layer_inputs(original, current, name, calibration, batch_size, reference)
    return fit_from_pairs(
        original.get_submodule(name),
        current.get_submodule(name),
        pairs,
        damping=damping,
        rows=rows,
        intercept=intercept,
    )


def fit_from_pairs(
    original: nn.Module,
    current: nn.Module,
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor, int]],
    *,
    damping: float,
    rows: Sequence[int] | None = None,
    intercept: bool = False,
) -> LayerFit:
    """:func:`fit_to_original` for one layer, given its input rows: ``original`` and ``current``
    are the layer itself in the two models, ``pairs`` per batch ``(X rows, X̂ rows, images)``
    (float32, as :func:`~smoothviz.compress.layer_inputs.paired_layer_inputs` gives them)."""
    w0 = matrix_view(current.weight.detach().to("cpu", torch.float64))
    n_hat = w0.shape[1]
    w = matrix_view(original.weight.detach().to("cpu", torch.float64))
    gram = torch.zeros(n_hat, n_hat, dtype=torch.float64)
    cross = torch.zeros(n_hat, w.shape[1], dtype=torch.float64)
    sum_hat = torch.zeros(n_hat, dtype=torch.float64)
    sum_x = torch.zeros(w.shape[1], dtype=torch.float64)
    count = images = 0
    for x, x_hat, b in pairs:
        gram += (x_hat.T @ x_hat).to("cpu", torch.float64)
        cross += (x_hat.T @ x).to("cpu", torch.float64)
        if intercept:
            sum_hat += x_hat.double().sum(0).cpu()
            sum_x += x.double().sum(0).cpu()
            count += x.shape[0]
        images += b
    gram, cross = gram / max(images, 1), cross / max(images, 1)
    ridge = damping * float(torch.diagonal(gram).mean()) * torch.eye(n_hat, dtype=torch.float64)
    plain = rows is None and not intercept and w0.shape == w.shape and torch.equal(w0, w)
    if plain:  # the data-aware SVD's refit, the same floats
        return LayerFit(torch.linalg.solve(gram + ridge, (cross + ridge) @ w.T).T, None, gram)
    target = w if rows is None else w[torch.as_tensor(list(rows), dtype=torch.long)]
    rhs = cross @ target.T + ridge @ w0.T  # (n', m')
    if not intercept:
        return LayerFit(torch.linalg.solve(gram + ridge, rhs).T, None, gram)
    mean_hat, mean_x = sum_hat / max(images, 1), sum_x / max(images, 1)
    a = torch.zeros(n_hat + 1, n_hat + 1, dtype=torch.float64)
    a[:n_hat, :n_hat] = gram + ridge
    a[:n_hat, n_hat] = a[n_hat, :n_hat] = mean_hat
    a[n_hat, n_hat] = count / max(images, 1)  # output positions per image
    solution = torch.linalg.solve(a, torch.cat([rhs, (mean_x @ target.T)[None, :]]))
    return LayerFit(solution[:n_hat].T, solution[n_hat], gram)
