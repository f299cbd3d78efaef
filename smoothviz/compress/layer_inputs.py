"""What a layer sees on calibration data: its input rows, patches, padding and input statistics.

Every data-aware method looks at the inputs of some ``Conv2d``/``Linear`` layers:

- the data-aware SVD needs the rows ``X`` a layer multiplies by its matrix view (a conv's im2col
  patches, :func:`conv_patches`), their second moment (:class:`InputStats`,
  :func:`collect_input_stats`), how the next layer weights its outputs (:func:`output_weights`)
  and, for the sequential refit, the same layer's inputs in the
  original and in a partially compressed model side by side (:func:`paired_layer_inputs`);
- the channel statistics of :mod:`smoothviz.compress.activations` need the mean input under every
  kernel tap (:func:`tap_sums`), so that zero padding at the borders is accounted for exactly.

Both see a conv's input through the same geometry: :func:`conv_padding` (numeric, ``"same"`` and
``"valid"`` paddings), :func:`pad_input` (every padding mode) and :func:`kernel_taps` (the strided
slice of the padded input under each kernel tap).

The sequential methods compare a partially compressed model with the original on the same
calibration batches, once per layer or group and once per target. The original's side of every
such pass is the same each time, so :class:`ReferenceInputs` records it once (every Conv2d/Linear
input on every batch, kept while it fits a memory budget) and :func:`reference_inputs` keeps it in
a factor object's cache: a second target then runs only the compressed model (ours; the numbers
are the very same floats a new forward pass of the original gives, so the results are
bit-identical).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from smoothviz.compress.calibration import fingerprint, run_calibration
from smoothviz.compress.shrinkage import RowShortfall, sample_shrinkage, shrink
from smoothviz.layers import matrix_view


# --------------------------------------------------------------------------------- conv geometry
def conv_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` padding the conv applies, for numeric and string paddings.

    For ``padding="same"`` the split is torch's: ``d·(k-1)`` per axis, the smaller half first.
    """
    if conv.padding == "valid":
        return 0, 0, 0, 0
    if conv.padding == "same":
        pads: list[int] = []
        for k, d in zip(reversed(conv.kernel_size), reversed(conv.dilation), strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return pads[0], pads[1], pads[2], pads[3]
    ph, pw = conv.padding
    return pw, pw, ph, ph


def pad_input(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``x`` padded as ``conv`` pads it (zeros, reflect, replicate or circular); ``x`` if no pad."""
    pad = conv_padding(conv)
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    return F.pad(x, pad, mode=mode) if any(pad) else x


def kernel_taps(conv: nn.Conv2d, height: int, width: int) -> tuple[int, int, list[tuple]]:
    """Output size and, per kernel tap ``(i, j)``, the slices of a padded ``height×width`` input.

    Returns
    -------
    ho, wo, taps
        The output height and width, and ``[(rows, cols), ...]`` in ``F.unfold`` order (row-major
        over the kernel): ``x_padded[:, :, rows, cols]`` is the ``(N, C, ho, wo)`` input under
        that tap.
    """
    (kh, kw), (dh, dw), (sh, sw) = conv.kernel_size, conv.dilation, conv.stride
    ho, wo = (height - dh * (kh - 1) - 1) // sh + 1, (width - dw * (kw - 1) - 1) // sw + 1
    taps = [
        (
            slice(i * dh, i * dh + (ho - 1) * sh + 1, sh),
            slice(j * dw, j * dw + (wo - 1) * sw + 1, sw),
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return ho, wo, taps


def conv_patches(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``F.unfold(x)`` for the geometry of ``module``, ``(N, C_in·k_h·k_w, H_out·W_out)``.

    Built from ``k_h·k_w`` strided slices of the padded input (ours: on a CPU this is about ten
    times faster than ``F.unfold`` and gives the same numbers, which a test checks); unlike
    ``F.unfold`` it also handles string paddings and every padding mode.
    """
    x = pad_input(x, module)
    n, c, h, w = x.shape
    ho, wo, taps = kernel_taps(module, h, w)
    cols = [x[:, :, rows, cols] for rows, cols in taps]
    return torch.stack(cols, 2).reshape(n, c * len(taps), ho * wo)


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows ``X`` (one per output position) that the layer multiplies by its matrix view.

    A ``Conv2d``'s input becomes its patches ``(N·H_out·W_out, C_in·k_h·k_w)``, in the column
    order of ``F.unfold`` and of the weight's matrix view, with the layer's stride, padding,
    dilation and padding mode; a ``Linear``'s input becomes ``(N·..., n)``.
    """
    if isinstance(module, nn.Conv2d):
        return (
            conv_patches(module, x).transpose(1, 2).reshape(-1, matrix_view(module.weight).shape[1])
        )
    return x.reshape(-1, x.shape[-1])


def tap_sums(x: torch.Tensor, conv: nn.Conv2d) -> tuple[torch.Tensor, int]:
    """Σ over samples and output positions of the input under every kernel tap, and the count.

    Returns ``(sums, n)`` with ``sums`` of shape ``(C, k_h, k_w)`` in float64; ``sums / n`` is the
    mean input each weight of the conv sees (padding included, so borders are exact).
    """
    xp = pad_input(x, conv)
    ho, wo, taps = kernel_taps(conv, xp.shape[2], xp.shape[3])
    kh, kw = conv.kernel_size
    out = torch.empty(x.shape[1], kh, kw, dtype=torch.float64, device=x.device)
    for t, (rows, cols) in enumerate(taps):
        out[:, t // kw, t % kw] = xp[:, :, rows, cols].double().sum((0, 2, 3))
    return out, x.shape[0] * ho * wo


# ------------------------------------------------------------------------------ input statistics
@dataclass
class InputStats:
    """Accumulated second moment of one layer's input rows, in float64 on the CPU.

    ``rows`` counts the rows (one per image and output position). A layer expected to see fewer
    rows than it has input dimensions (``keep=True``) also keeps its rows, grouped by input, for
    the Ledoit-Wolf shrinkage of :meth:`shrunk_covariance`; they are smaller than the Gram matrix.
    """

    gram: torch.Tensor  # Σ x xᵀ over rows
    images: int = 0
    finite: bool = True
    rows: int = 0
    kept: list[torch.Tensor] | None = None  # (images, rows per image, n) per batch, if kept

    @classmethod
    def empty(cls, n: int, keep: bool = False) -> InputStats:
        return cls(torch.zeros(n, n, dtype=torch.float64), kept=[] if keep else None)

    def add(self, rows: torch.Tensor, images: int) -> None:
        # float32 products per batch (half the time of float64 on a CPU; the relative round-off,
        # ~1e-6, sits far below the damping), summed across batches in float64.
        r = rows.detach().float()
        if not torch.isfinite(r).all():
            self.finite = False
            return
        self.gram += (r.T @ r).to("cpu", torch.float64)
        self.images += images
        self.rows += r.shape[0]
        if self.kept is not None:
            self.kept.append(r.reshape(images, -1, r.shape[1]).to("cpu", torch.float64))

    def covariance(self) -> torch.Tensor:
        """``X Xᵀ`` per calibration image (summed over a feature map's positions, ours: a
        per-position average under-weights the small late feature maps, and measured worse)."""
        return self.gram / max(self.images, 1)

    def shrinkage(self) -> float:
        """The Ledoit-Wolf intensity ``α`` when the layer saw fewer rows than it has input
        dimensions, else ``0.0`` (:mod:`smoothviz.compress.shrinkage`; ``1.0`` when the rows
        were not kept)."""
        if self.rows >= self.gram.shape[0]:
            return 0.0
        if not self.kept:
            return 1.0
        return sample_shrinkage(torch.cat(self.kept).numpy())

    def shrunk_covariance(self) -> tuple[torch.Tensor, float]:
        """:meth:`covariance`, shrunk to ``(1 - α) C + α (tr C / n) I`` with ``α`` =
        :meth:`shrinkage` (``C`` itself, bit for bit, when the layer saw enough rows)."""
        cov, alpha = self.covariance(), self.shrinkage()
        if alpha == 0.0:
            return cov, alpha
        return torch.from_numpy(shrink(cov.numpy(), alpha)), alpha

    def shortfall(self, name: str) -> RowShortfall | None:
        """The :class:`~smoothviz.compress.shrinkage.RowShortfall` of this layer, or ``None`` when it
        saw at least as many rows as it has input dimensions."""
        n = self.gram.shape[0]
        if self.rows >= n:
            return None
        return RowShortfall(name, self.rows, n, self.images, self.shrinkage())

    def unusable(self) -> str | None:
        """Why these inputs cannot be whitened (not finite, all zero), or ``None``."""
        if not self.finite:
            return "its inputs on the calibration set are not finite (NaN/inf): cannot be whitened"
        if float(torch.diagonal(self.gram).sum()) <= 0.0:
            return "its inputs on the calibration set are all zero: nothing to whiten"
        return None


def collect_input_stats(
    model: nn.Module,
    calibration: torch.Tensor,
    names: Sequence[str],
    *,
    batch_size: int = 128,
) -> tuple[dict[str, InputStats], list[str], dict[str, str]]:
    """One pass over the calibration set: input second moments of the named layers.

    Returns
    -------
    stats, order, followers
        ``{name: InputStats}`` for every layer the forward pass reached; the names in the order the
        forward pass runs them; ``{layer: BatchNorm name}`` for layers whose output feeds a
        BatchNorm directly.
    """
    stats: dict[str, InputStats] = {}
    order: list[str] = []
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    followers: dict[str, str] = {}

    def pre(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            rows = input_rows(module, args[0])
            if name not in stats:
                per_image = rows.shape[0] // max(args[0].shape[0], 1)
                few = per_image * len(calibration) < rows.shape[1]  # keep rows for shrinkage
                stats[name] = InputStats.empty(rows.shape[1], keep=few)
                order.append(name)
            stats[name].add(rows, args[0].shape[0])

        return hook

    def post(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            outputs[id(out)] = (name, out)

        return hook

    def bn_pre(bn_name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            hit = outputs.get(id(args[0]))
            if hit is not None and hit[1] is args[0]:
                followers.setdefault(hit[0], bn_name)

        return hook

    handles = []
    for name in names:
        m = model.get_submodule(name)
        handles += [m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post(name))]
    for bn_name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_pre_hook(bn_pre(bn_name)))
    run_calibration(model, calibration, handles, batch_size, before_batch=outputs.clear)
    return stats, order, followers


def output_weights(model: nn.Module, name: str, batchnorm: str | None) -> torch.Tensor:
    """``D``: how much the next layer sees each output channel of layer ``name``, in float64.

    ``|γ| / sqrt(running_var + ε)`` of ``batchnorm``, the BatchNorm that directly follows the layer
    (from :func:`collect_input_stats`), so that output errors are compared where the next layer
    sees them; ones where there is none (or it does not fit). A channel with ``γ = 0`` gets a tiny
    non-zero weight so that ``D⁻¹`` exists.
    """
    m_out = model.get_submodule(name).weight.shape[0]
    if batchnorm is None:
        return torch.ones(m_out, dtype=torch.float64)
    bn = model.get_submodule(batchnorm)
    if bn.running_var is None or bn.num_features != m_out:
        return torch.ones(m_out, dtype=torch.float64)
    d = (bn.running_var.detach().double().cpu() + bn.eps).rsqrt()
    if bn.weight is not None:
        d = d * bn.weight.detach().double().cpu().abs()
    return d.clamp_min(1e-6 * float(d.max().clamp_min(1e-300)))


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted activations are recorded."""


def paired_layer_inputs(
    original: nn.Module,
    current: nn.Module,
    name: str,
    calibration: torch.Tensor,
    batch_size: int,
    reference: ReferenceInputs | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Per batch, the input rows of layer ``name`` in ``original`` and in ``current``, and the
    batch's image count (forward passes stop at the layer; both models must be in eval mode).

    ``reference``: the original's inputs recorded before (:func:`reference_inputs`, for these
    calibration batches); where it holds layer ``name`` the original is not run.
    """
    captured: dict[str, torch.Tensor] = {}

    def grab(key: str):
        def hook(module: nn.Module, args: tuple) -> None:
            captured[key] = input_rows(module, args[0]).float()
            raise _Stop  # nothing after this layer is needed

        return hook

    recorded = reference is not None and name in reference
    models = (current,) if recorded else (original, current)
    handles = [current.get_submodule(name).register_forward_pre_hook(grab("x_hat"))]
    if not recorded:
        handles.append(original.get_submodule(name).register_forward_pre_hook(grab("x")))
    module = original.get_submodule(name)
    device = next(original.parameters()).device
    try:
        with torch.no_grad():
            for i, start in enumerate(range(0, len(calibration), batch_size)):
                xb = calibration[start : start + batch_size].to(device)
                if recorded:
                    captured["x"] = input_rows(module, reference.batch(name, i)).float()
                for model in models:
                    try:
                        model(xb)
                    except _Stop:
                        pass
                yield captured.pop("x"), captured.pop("x_hat"), xb.shape[0]
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------- the original's inputs
REFERENCE_MAX_BYTES = 2**30  # default memory budget of ReferenceInputs (1 GiB)
REFERENCE_ENV = "SMOOTHVIZ_REFERENCE_MB"  # overrides the budget, in MiB (0: never record)


def reference_budget() -> int:
    """The memory budget of :class:`ReferenceInputs` in bytes: ``$SMOOTHVIZ_REFERENCE_MB`` MiB
    when set (``0`` switches the recording off), else :data:`REFERENCE_MAX_BYTES`."""
    text = os.environ.get(REFERENCE_ENV, "").strip()
    if not text:
        return REFERENCE_MAX_BYTES
    try:
        mib = float(text)
    except ValueError:
        raise ValueError(
            f"${REFERENCE_ENV} must be a number of MiB (0: off), got {text!r}"
        ) from None
    if mib < 0:
        raise ValueError(f"${REFERENCE_ENV} must be >= 0 MiB, got {text!r}")
    return int(mib * 2**20)


class _TooLarge(Exception):
    """Raised between calibration batches when the recorded inputs would exceed the budget."""


class ReferenceInputs:
    """The input of every Conv2d/Linear of a model on every calibration batch, recorded once.

    Build with :meth:`record` (or :func:`reference_inputs`, which caches it). ``batch(name, i)``
    is the tensor layer ``name`` received on batch ``i`` (``calibration[i*batch_size : ...]``),
    exactly as a new forward pass would give it. Layers called more than once per forward pass
    are not recorded (``name in reference`` is False for them: callers run the model instead).
    """

    def __init__(self, inputs: dict[str, list[torch.Tensor]], batch_size: int, images: int) -> None:
        self._inputs = inputs
        self.batch_size = batch_size
        self.images = images

    def __contains__(self, name: object) -> bool:
        return name in self._inputs

    def batch(self, name: str, index: int) -> torch.Tensor:
        """The input layer ``name`` received on calibration batch ``index``."""
        return self._inputs[name][index]

    @property
    def nbytes(self) -> int:
        """Memory held by the recorded tensors."""
        return sum(t.numel() * t.element_size() for ts in self._inputs.values() for t in ts)

    @classmethod
    def record(
        cls,
        model: nn.Module,
        calibration: torch.Tensor,
        batch_size: int,
        *,
        max_bytes: int | None = None,
    ) -> ReferenceInputs | None:
        """One forward pass of ``model`` (eval mode, no gradient) over ``calibration`` in batches,
        keeping every Conv2d/Linear input; ``None`` when they would not fit ``max_bytes``
        (default :func:`reference_budget`), which is found after the first batch."""
        limit = reference_budget() if max_bytes is None else int(max_bytes)
        if limit <= 0:
            return None
        names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        inputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        calls: dict[str, int] = {}
        repeated: set[str] = set()
        batches = -(-len(calibration) // batch_size)

        def pre(name: str):
            def hook(module: nn.Module, args: tuple) -> None:
                calls[name] = calls.get(name, 0) + 1
                if calls[name] == 1:  # a copy: a later in-place op must not change it
                    inputs[name].append(args[0].detach().clone())

            return hook

        def size() -> int:
            return sum(t.numel() * t.element_size() for ts in inputs.values() for t in ts)

        def before_batch() -> None:
            repeated.update(n for n, c in calls.items() if c > 1)
            first = bool(calls) and all(len(ts) <= 1 for ts in inputs.values())
            if first and size() * batches > limit:  # after the first batch: all would not fit
                raise _TooLarge
            calls.clear()

        handles = [model.get_submodule(n).register_forward_pre_hook(pre(n)) for n in names]
        try:
            run_calibration(model, calibration, handles, batch_size, before_batch=before_batch)
        except _TooLarge:
            return None
        repeated.update(n for n, c in calls.items() if c > 1)
        if size() > limit:
            return None
        kept = {n: ts for n, ts in inputs.items() if len(ts) == batches and n not in repeated}
        return cls(kept, batch_size, len(calibration))


def reference_key(calibration: torch.Tensor, batch_size: int) -> tuple[str, str, int]:
    """The cache key of the :class:`ReferenceInputs` of a calibration batch and batch size."""
    return ("reference_inputs", fingerprint(calibration), int(batch_size))


def reference_inputs(
    store: MutableMapping,
    model: nn.Module,
    calibration: torch.Tensor,
    batch_size: int,
) -> ReferenceInputs | None:
    """The :class:`ReferenceInputs` of ``model`` on ``calibration`` in batches of ``batch_size``,
    recorded on the first call and kept in ``store`` (a factor object's ``cache``; the factors
    belong to one model, as they are when made). ``None`` when they do not fit the budget."""
    key = reference_key(calibration, batch_size)
    if key not in store:
        store[key] = ReferenceInputs.record(model, calibration, batch_size)
    return store[key]


def share_reference_inputs(stores: Sequence[MutableMapping]) -> None:
    """Make every store hold the :class:`ReferenceInputs` any of them holds (the factor caches of
    several methods on one model and calibration set: one recording serves them all)."""
    found = {
        k: v
        for store in stores
        for k, v in store.items()
        if isinstance(k, tuple) and k[:1] == ("reference_inputs",)
    }
    for store in stores:
        for key, value in found.items():
            store.setdefault(key, value)
