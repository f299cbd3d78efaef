"""The calibration forward pass, advanced layer by layer, for methods that change layers in order.

A sequential method changes the layers of a copy in forward order, each fitted on the inputs the
already-changed layers before it give. Running the copy from its input up to every layer costs a
forward pass per layer (quadratic in the depth). :class:`LayerStream` instead runs the model's
``torch.fx`` graph node by node on every calibration batch and pauses at a layer: the values it
keeps are those still needed further on, so a layer changed during the pause is used by
everything after it, and the whole sequence costs one forward pass (ours). The numbers are the
same floats the module's own forward gives (the same operations on the same values, in order).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import fx, nn

from smoothviz.compress.chains import trace
from smoothviz.compress.layer_inputs import ReferenceInputs, input_rows, paired_layer_inputs
from smoothviz.layers import set_submodule


class LayerStream:
    """``model``'s forward pass on ``calibration`` in batches of ``batch_size``, paused at layers.

    Parameters
    ----------
    model
        The model (traceable by ``torch.fx``; run in eval mode, without gradients). Layers it
        replaces through :meth:`replace`, or changes in place, during a pause are what every
        later layer sees.
    calibration
        The inputs (already validated).
    batch_size
        Images per batch (the same batches as every other calibration pass).
    """

    def __init__(self, model: nn.Module, calibration: torch.Tensor, batch_size: int) -> None:
        self.model = model
        self.graph_module = trace(model)
        self.nodes = list(self.graph_module.graph.nodes)
        self._index = {n: i for i, n in enumerate(self.nodes)}
        self._last_use = {
            n: max((self._index[u] for u in n.users), default=self._index[n]) for n in self.nodes
        }
        self._calls = {}
        for i, n in enumerate(self.nodes):
            if n.op == "call_module":
                self._calls.setdefault(str(n.target), i)
        device = next(model.parameters()).device
        self._batches = [
            calibration[s : s + batch_size].to(device)
            for s in range(0, len(calibration), batch_size)
        ]
        self._envs: list[dict[fx.Node, object]] = [{} for _ in self._batches]
        # one interpreter for every batch: it looks each module up when it calls it, so a
        # replaced layer is used from then on
        self._interpreter = fx.Interpreter(self.graph_module, garbage_collect_values=False)
        self._position = 0  # the next node to run, in every batch

    def __contains__(self, name: object) -> bool:
        return name in self._calls

    def inputs(self, name: str) -> list[tuple[torch.Tensor, int]]:
        """Advance every batch to layer ``name`` (its first call); per batch, the tensor it
        receives and the batch's image count. Layers must be asked for in forward order."""
        stop = self._calls[name]
        if stop < self._position:
            raise ValueError(
                f"LayerStream: layer {name!r} was passed already; ask in forward order"
            )
        node = self.nodes[stop]
        out = []
        for env, batch in zip(self._envs, self._batches, strict=True):
            self._run(env, batch, stop)
            out.append((env[node.args[0]], batch.shape[0]))
        self._position = stop
        return out

    def replace(self, name: str, module: nn.Module) -> None:
        """Put ``module`` in place of layer ``name`` (in the model and in its graph)."""
        set_submodule(self.model, name, module)
        set_submodule(self.graph_module, name, module)

    def _run(self, env: dict, batch: torch.Tensor, stop: int) -> None:
        interpreter = self._interpreter
        interpreter.env = env
        with torch.no_grad():
            for i in range(self._position, stop):
                node = self.nodes[i]
                if node.op == "output":
                    continue
                env[node] = batch if node.op == "placeholder" else interpreter.run_node(node)
                for arg in node.all_input_nodes:  # free what nothing later reads
                    if self._last_use[arg] <= i:
                        env.pop(arg, None)


def open_stream(model: nn.Module, calibration: torch.Tensor, batch_size: int) -> LayerStream | None:
    """A :class:`LayerStream` of ``model``, or None when ``torch.fx`` cannot trace it (then run the
    model up to each layer instead)."""
    try:
        return LayerStream(model, calibration, batch_size)
    except TypeError:
        return None


def stream_pairs(
    original: nn.Module,
    stream: LayerStream,
    name: str,
    reference: ReferenceInputs | None,
    original_stream: LayerStream | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Per batch, layer ``name``'s input rows in ``original`` and in the stream's model, and the
    image count: what :func:`~smoothviz.compress.layer_inputs.paired_layer_inputs` gives, with
    the original's side from ``reference`` where it holds the layer, else from
    ``original_stream`` (the original's own stream, advanced in the same order)."""
    current = stream.inputs(name)
    recorded = reference is not None and name in reference
    theirs = None if recorded else original_stream.inputs(name)
    m_orig, m_new = original.get_submodule(name), stream.model.get_submodule(name)
    for i, (x_hat, images) in enumerate(current):
        x = reference.batch(name, i) if recorded else theirs[i][0]
        yield input_rows(m_orig, x).float(), input_rows(m_new, x_hat).float(), images


class RefitPass:
    """Both sides of a sequential refit, layer by layer, for every sequential method (the
    data-aware SVD's refit, the hybrid's): per layer the input rows in ``original`` and in
    ``copy`` (the copy being compressed in forward order), and the place a compressed layer goes.

    The copy's side comes from its :class:`LayerStream` (traced by :meth:`open`, once), or, where
    fx cannot trace the copy or keeps the layer's module whole (attention), from running both
    models up to the layer (the same rows). The original's side comes from ``reference`` where it
    holds the layer, else from the original's own stream, opened when first needed.
    """

    def __init__(
        self,
        original: nn.Module,
        copy: nn.Module,
        calibration: torch.Tensor,
        batch_size: int,
        reference: ReferenceInputs | None,
    ) -> None:
        self.original, self.copy = original, copy
        self._calibration, self._batch_size, self._reference = calibration, batch_size, reference
        self._opened = False
        self._stream: LayerStream | None = None
        self._original_stream: LayerStream | None = None

    def open(self) -> None:
        """Trace the copy as it is now (the first call only); later changes go through
        :meth:`replace`."""
        if not self._opened:
            self._stream = open_stream(self.copy, self._calibration, self._batch_size)
            self._opened = True

    def pairs(self, name: str) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """Per batch, layer ``name``'s input rows in the original and in the copy, and the image
        count (opens the copy's stream if it is not open). Layers are asked for in forward order."""
        self.open()
        stream = self._stream
        if stream is None or name not in stream:
            return paired_layer_inputs(
                self.original, self.copy, name, self._calibration, self._batch_size, self._reference
            )
        recorded = self._reference is not None and name in self._reference
        if not recorded and self._original_stream is None:
            self._original_stream = LayerStream(self.original, self._calibration, self._batch_size)
        return stream_pairs(self.original, stream, name, self._reference, self._original_stream)

    def replace(self, name: str, layer: nn.Module) -> None:
        """Put ``layer`` in place of layer ``name`` of the copy (and of its stream when open)."""
        if self._stream is not None:
            self._stream.replace(name, layer)
        else:
            set_submodule(self.copy, name, layer)
