"""Producer -> consumer channel chains, found by tracing the model with ``torch.fx``.

Structured pruning and the interpolative decomposition both cut the output channels of one layer
(the *producer*) and the matching input channels of the next (the *consumer*). That is only safe
when every output channel of the producer flows, one to one, through channel-wise operations
(BatchNorm, element-wise activations, pooling, dropout, depthwise convolutions, a flatten) into
exactly one dense consumer. A producer whose output also reaches a residual add, a concatenation or
a second consumer is *not* a chain: its channels are tied to other layers' channels, and cutting it
alone would break the network. This is how both methods are residual-aware: tied channels are left
alone (removing a whole residual group together is not implemented).

Implemented by hand on ``torch.fx`` because no library in our dependencies finds such chains
(torch-pruning's DepGraph does much more, but is not a dependency and would be one only for this).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from smoothviz.layers import select_layers

# Modules that act on each channel separately (or not at all) and have no channel-shaped parameters.
_CHANNELWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Mish,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_CHANNELWISE_FUNCTIONS = {
    torch.relu,
    F.relu,
    F.relu6,
    F.gelu,
    F.silu,
    F.hardswish,
    F.leaky_relu,
    F.elu,
    torch.sigmoid,
    torch.tanh,
    F.dropout,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
}
_CHANNELWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}


@dataclass(frozen=True)
class Chain:
    """One producer whose output channels reach exactly one consumer through channel-wise ops.

    Attributes
    ----------
    producer
        Name of the dense ``Conv2d``/``Linear`` whose output channels are cut.
    channels
        Its number of output channels ``C``.
    passthrough
        Names of the channel-shaped modules in between (BatchNorm, depthwise Conv2d), in order.
    consumer
        Name of the dense ``Conv2d``/``Linear`` whose input channels are cut or re-mixed.
    features_per_channel
        ``1``, or the spatial size ``f`` when a flatten sits in between: consumer input feature
        ``c*f + j`` belongs to channel ``c``.
    """

    producer: str
    channels: int
    passthrough: tuple[str, ...]
    consumer: str
    features_per_channel: int = 1


def _is_dense(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)


def _is_depthwise(m: nn.Module, c: int) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == c and m.in_channels == c and m.out_channels == c


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with an error that says why structured methods need it."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds of errors on data-dependent control flow
        raise TypeError(
            f"model: structured compression (prune_channels, interpolative_compress) needs a "
            f"model that torch.fx.symbolic_trace can trace; tracing failed with "
            f"{type(exc).__name__}: {exc}. svd_compress and prune_magnitude work on any model."
        ) from exc


def _follow(gm: fx.GraphModule, start: fx.Node, channels: int, calls: Counter) -> Chain | None:
    modules = dict(gm.named_modules())
    passthrough: list[str] = []
    flattened = False
    node = start
    while True:
        users = list(node.users)
        if len(users) != 1:
            return None
        user = users[0]
        # The channels must enter as the first argument and be the only tensor argument.
        if (
            not user.args
            or user.args[0] is not node
            or any(isinstance(a, fx.Node) for a in list(user.args[1:]) + list(user.kwargs.values()))
        ):
            return None
        if user.op == "call_module":
            m = modules[user.target]
            if calls[user.target] != 1 and not isinstance(m, _CHANNELWISE_MODULES):
                return None
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.num_features == channels:
                if flattened:
                    return None
                passthrough.append(user.target)
            elif _is_depthwise(m, channels) and not flattened:
                passthrough.append(user.target)
            elif isinstance(m, nn.Conv2d) and m.groups == 1 and not flattened:
                if m.in_channels != channels:
                    return None
                return Chain(modules_name(start), channels, tuple(passthrough), user.target)
            elif isinstance(m, nn.Linear):
                if m.in_features % channels != 0 or (not flattened and m.in_features != channels):
                    return None
                return Chain(
                    modules_name(start),
                    channels,
                    tuple(passthrough),
                    user.target,
                    m.in_features // channels,
                )
            elif isinstance(m, nn.Flatten):
                if m.start_dim != 1 or m.end_dim != -1:
                    return None
                flattened = True
            elif not isinstance(m, _CHANNELWISE_MODULES):
                return None
        elif user.op == "call_function":
            if user.target is torch.flatten:
                start_dim = user.args[1] if len(user.args) > 1 else user.kwargs.get("start_dim", 0)
                if start_dim != 1 or len(user.args) > 2 or "end_dim" in user.kwargs:
                    return None
                flattened = True
            elif user.target not in _CHANNELWISE_FUNCTIONS or user.target is operator.add:
                return None
        elif user.op == "call_method":
            if user.target == "flatten" and user.args[1:] == (1,):
                flattened = True
            elif user.target not in _CHANNELWISE_METHODS:
                return None
        else:
            return None
        node = user


def modules_name(node: fx.Node) -> str:
    return str(node.target)


def find_chains(model: nn.Module, layers: Sequence[str] | str | None = None) -> list[Chain]:
    """Every prunable producer -> consumer chain whose producer is among the selected layers.

    Parameters
    ----------
    model
        The network; it must be traceable by ``torch.fx``.
    layers
        Producer selection as in :func:`smoothviz.layers.select_layers` (default: every
        Conv2d/Linear except the first and the last). Selected layers that are not producers of a
        chain (tied by a residual add, grouped, feeding several layers) are skipped.
    """
    selected = {name for name, m in select_layers(model, layers) if _is_dense(m)}
    gm = trace(model)
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    modules = dict(gm.named_modules())
    chains = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in selected or calls[node.target] != 1:
            continue
        m = modules[node.target]
        channels = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        chain = _follow(gm, node, channels, calls)
        if chain is not None:
            chains.append(chain)
    return chains


def _module_params(m: nn.Module, out: int | None = None, inp: int | None = None) -> int:
    """Parameters of ``m`` with its output/input channel count replaced (closed form)."""
    bias = getattr(m, "bias", None) is not None
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        c = m.num_features if out is None else out
        return 2 * c if m.affine else 0
    if isinstance(m, nn.Conv2d):
        if m.groups != 1:  # depthwise, cut along its single channel axis
            c = m.out_channels if out is None else out
            return c * m.weight[0].numel() + (c if bias else 0)
        o = m.out_channels if out is None else out
        i = m.in_channels if inp is None else inp
        return o * i * m.kernel_size[0] * m.kernel_size[1] + (o if bias else 0)
    o = m.out_features if out is None else out
    i = m.in_features if inp is None else inp
    return o * i + (o if bias else 0)


class ChannelPlan:
    """Closed-form parameter count of a model whose chains keep ``kept[producer]`` channels."""

    def __init__(self, model: nn.Module, chains: Sequence[Chain]) -> None:
        self.chains = {c.producer: c for c in chains}
        self.total = sum(p.numel() for p in model.parameters())
        self._modules: dict[str, nn.Module] = {}
        self._out: dict[str, str] = {}  # module -> chain whose kept count sets its output size
        self._in: dict[str, tuple[str, int]] = {}  # module -> (chain, features per channel)
        for c in chains:
            self._out[c.producer] = c.producer
            for name in c.passthrough:
                self._out[name] = c.producer
            self._in[c.consumer] = (c.producer, c.features_per_channel)
            for name in (c.producer, *c.passthrough, c.consumer):
                self._modules[name] = model.get_submodule(name)
        self._base = self.total - sum(_module_params(m) for m in self._modules.values())

    def params(self, kept: dict[str, int]) -> int:
        """Total parameters when chain ``p`` keeps ``kept.get(p, all)`` channels."""
        total = self._base
        for name, m in self._modules.items():
            out = kept.get(self._out[name]) if name in self._out else None
            inp = None
            if name in self._in:
                chain, f = self._in[name]
                inp = kept[chain] * f if chain in kept else None
            total += _module_params(m, out, inp)
        return total

    def min_params(self) -> int:
        return self.params({p: 1 for p in self.chains})
