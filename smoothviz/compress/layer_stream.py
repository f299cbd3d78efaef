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
from smoothviz.compress.layer_inputs import ReferenceInputs, input_rows
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
