"""Never a broken model: which layers a forward pass calls, and a check that a result runs.

Replacing a layer by a factorised pair or cutting its channels is safe only where the model
*calls* that layer as a module. Some modules read a layer's weight directly instead:
``nn.MultiheadAttention`` reads ``out_proj.weight``, torchvision's Swin attention reads
``qkv.weight`` and ``proj.weight``; replacing such a layer breaks the model at its first forward.
A :class:`Probe` runs the uncompressed model once on a few inputs (the first
:data:`CHECK_INPUTS` calibration inputs, or a dummy batch of a shape the model accepts) and
records which ``Conv2d``/``Linear`` modules were called and what the output looks like;
:meth:`Probe.not_called` gives the reasons for leaving the others out, and
:meth:`Probe.check` runs a compressed model on the same inputs before a method returns it: if it
fails, or its output changes shape or becomes non-finite, :class:`BrokenModelError` names the
module that failed and the replaced layers inside it.

The dummy batch (no calibration given): ``(2, C_in, S, S)`` for a model whose first layer is a
``Conv2d``, ``S`` the model's ``image_size`` attribute when it has one, else the first of
:data:`DUMMY_SIZES` the model accepts; ``(2, in_features)`` or ``(2, 8, in_features)`` for one
whose first layer is a ``Linear``. Random values from a fixed seed; the global random state is
not touched. Every run is in eval mode without gradients; the train/eval mode is restored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from smoothviz.layers import compressible_layers

CHECK_INPUTS = 8  # calibration inputs a check runs on
DUMMY_SIZES = (28, 32, 64, 224)  # square image sides tried for a convolutional model, in order
NOT_CALLED = (
    "not called as a module in the model's forward: another module reads its weight directly "
    "(or it is unused), so replacing it would break the model"
)


class BrokenModelError(RuntimeError):
    """A compression method built a model that does not run; the message names the layer."""


def _run(model: nn.Module, x: torch.Tensor) -> Any:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.train(was_training)


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def dummy_shapes(model: nn.Module, count: int = 2) -> list[tuple[int, ...]]:
    """The input shapes tried for a dummy batch of ``count`` inputs (see the module docstring)."""
    found = compressible_layers(model)
    if not found:
        return []
    first = found[0][1]
    if isinstance(first, nn.Conv2d):
        size = getattr(model, "image_size", None)
        sizes = ([size] if isinstance(size, int) else []) + list(DUMMY_SIZES)
        return [(count, first.in_channels, s, s) for s in dict.fromkeys(sizes)]
    return [(count, first.in_features), (count, 8, first.in_features)]


def _signature(out: Any) -> Any:
    """What must not change: the nesting, shapes and dtypes of a model's output."""
    if isinstance(out, torch.Tensor):
        return ("tensor", tuple(out.shape), out.dtype)
    if isinstance(out, (tuple, list)):
        return (type(out).__name__, tuple(_signature(o) for o in out))
    if isinstance(out, dict):
        return ("dict", tuple((k, _signature(v)) for k, v in out.items()))
    return type(out).__name__


def _finite(out: Any) -> bool:
    if isinstance(out, torch.Tensor):
        return not out.is_floating_point() or bool(torch.isfinite(out).all())
    if isinstance(out, (tuple, list)):
        return all(_finite(o) for o in out)
    if isinstance(out, dict):
        return all(_finite(o) for o in out.values())
    return True


@dataclass(frozen=True)
class Probe:
    """What one forward pass of the uncompressed model showed.

    Attributes
    ----------
    inputs
        The inputs it ran on (``None``: no calibration was given and no dummy batch fits).
    called
        Names of the ``Conv2d``/``Linear`` modules it called as modules (``None`` when unknown).
    signature
        Nesting, shapes and dtypes of its output.
    finite
        Whether its output was finite.
    """

    inputs: torch.Tensor | None
    called: frozenset[str] | None
    signature: Any = None
    finite: bool = True

    def not_called(self, names: Iterable[str]) -> dict[str, str]:
        """``{layer: reason}`` for the layers of ``names`` the forward pass did not call."""
        if self.called is None:
            return {}
        return {n: NOT_CALLED for n in names if n not in self.called}

    def check(self, new: nn.Module, *, method: str, changed: Iterable[str]) -> None:
        """Run ``new`` on the probe's inputs; raise :class:`BrokenModelError` unless it runs and
        its output has the uncompressed model's shapes (and is finite where that one's was).

        ``changed`` names the layers the method replaced or cut, for the message. Nothing is run
        when the probe has no inputs.
        """
        if self.inputs is None:
            return
        changed = list(changed)
        names = {id(m): name for name, m in new.named_modules()}
        device, _ = _device_dtype(new)
        try:
            out = _run(new, self.inputs.to(device))
        except Exception as exc:
            where = _failing_module(exc, names)
            raise BrokenModelError(_broken_text(method, new, where, changed, exc)) from exc
        problem = None
        if _signature(out) != self.signature:
            problem = f"its output changed from {self.signature} to {_signature(out)}"
        elif self.finite and not _finite(out):
            problem = "its output holds NaN or inf where the uncompressed model's does not"
        if problem:
            raise BrokenModelError(
                f"{method} built a model that does not compute a valid output: {problem}. "
                f"Layers it changed: {_shown(changed)}. Leave some out with layers=."
            )


def _failing_module(exc: BaseException, names: dict[int, str]) -> str | None:
    """The innermost module of the compressed model whose code is on the traceback."""
    where = None
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and id(owner) in names:
            where = names[id(owner)]
        tb = tb.tb_next
    return where


def _shown(names: list[str], limit: int = 8) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "none"


def _broken_text(
    method: str, new: nn.Module, where: str | None, changed: list[str], exc: BaseException
) -> str:
    error = f"{type(exc).__name__}: {exc}"
    if where is None:
        return (
            f"{method} built a model that does not run ({error}). Layers it changed: "
            f"{_shown(changed)}. Leave some out with layers=."
        )
    inside = [
        c for c in changed if c == where or c.startswith(where + ".") or where.startswith(c + ".")
    ]
    kind = type(new.get_submodule(where)).__name__ if where else type(new).__name__
    return (
        f"{method} built a model that does not run: {where or 'the model'} ({kind}) raised "
        f"{error}. Layers it changed there: {_shown(inside or changed)}; leave them out with "
        "layers= (and please report the model: smoothviz should have left them out itself)."
    )


def probe_model(
    model: nn.Module,
    calibration: torch.Tensor | None = None,
    *,
    record_calls: bool = False,
) -> Probe:
    """Run ``model`` once on the first :data:`CHECK_INPUTS` calibration inputs, or on a dummy batch
    it accepts, and record its output (and with ``record_calls``, which Conv2d/Linear it calls).

    Raises
    ------
    ValueError
        If ``model`` does not run on the calibration inputs (naming their shape).
    """
    layers = compressible_layers(model) if record_calls else []
    called: set[str] = set()
    handles = [
        m.register_forward_pre_hook(lambda _m, _a, name=name: called.add(name))
        for name, m in layers
    ]
    device, dtype = _device_dtype(model)
    try:
        if calibration is not None:
            x = calibration[:CHECK_INPUTS]
            try:
                out = _run(model, x.to(device))
            except RuntimeError as exc:
                raise ValueError(
                    f"calibration of shape {tuple(calibration.shape)} does not fit the model: {exc}"
                ) from exc
        else:
            x, out = _dummy_run(model, device, dtype, reset=called.clear)
    finally:
        for h in handles:
            h.remove()
    if x is None:
        return Probe(None, None)
    return Probe(x, frozenset(called) if record_calls else None, _signature(out), _finite(out))


def _dummy_run(model: nn.Module, device, dtype, reset) -> tuple[torch.Tensor | None, Any]:
    gen = torch.Generator().manual_seed(0)
    for shape in dummy_shapes(model):
        reset()  # a failed try may have called some layers
        x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
        try:
            return x, _run(model, x)
        except Exception:  # a shape (or dtype) this model does not accept: try the next
            continue
    return None, None
