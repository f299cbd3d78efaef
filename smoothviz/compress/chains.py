"""Channel groups: which output channels can be cut together, found by tracing with ``torch.fx``.

Structured pruning and the interpolative decomposition cut output channels of some layers (the
*writers*) and the matching input channels of the layers that read them (the *readers*). Channel
``c`` of a writer is tied to channel ``c`` of everything it flows into one to one: BatchNorm,
element-wise activations, pooling, dropout, depthwise convolutions, a flatten, and, through a
residual add, channel ``c`` of every other tensor in that add. A **channel group** is one such
equivalence class: all the writers that write into one channel space (in a ResNet stage: the stem
or projection shortcut, and every block's last conv), the BatchNorms and depthwise convs on it, and
all the dense layers that read it (every block's first conv, the next stage's first conv and
shortcut, or the classifier). Removing channel ``c`` of a group removes it from every member at
once, so the network stays consistent. The simplest group is a *chain*: one writer, one reader
(``conv -> bn -> relu -> conv``).

A group is **blocked** (never cut) when its channels reach something whose channel axis we cannot
shrink: the model's output (so the classifier's outputs are never cut), a concatenation, a reshape,
an unknown module, a grouped (non-depthwise) convolution, a module called more than once, or a sum
with a tensor that is not itself in the group.

Implemented by hand on ``torch.fx`` (a union-find over the channel spaces of one graph walk,
about 200 lines) because no library in our dependencies finds such groups; torch-pruning's
DependencyGraph does this and much more but would be a dependency for this alone, and a short
walk we can read is easier to trust than a general one we cannot.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from smoothviz.compress.tracing import trace_model
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
_CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous"}
# Element-wise sums and products of two tensors tie their channels one to one.
_ELEMENTWISE_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, torch.add}
_ELEMENTWISE_METHODS = {"add", "add_", "mul", "mul_"}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class Writer:
    """A dense layer whose output channels belong to a group, and the BatchNorm right after it."""

    name: str
    norm: str | None = None


@dataclass(frozen=True)
class Reader:
    """A dense layer whose input channels belong to a group.

    Attributes
    ----------
    name
        The ``Conv2d``/``Linear``.
    features_per_channel
        ``1``, or the spatial size ``f`` when a flatten sits in between: input feature ``c*f + j``
        belongs to channel ``c``.
    norm
        The BatchNorm that alone receives this layer's output, if any (where a constant correction
        can go without adding a parameter).
    source
        Name of the graph node this layer reads; readers with the same source see the same tensor.
    """

    name: str
    features_per_channel: int = 1
    norm: str | None = None
    source: str = ""


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are cut together: writers, the channel-wise modules on them, and readers.

    ``name`` (the first writer in graph order) is the key used by ``channels=``/``keep=`` and in
    ``compression_info``. ``passthrough`` lists the BatchNorms and depthwise convs on the channels.
    """

    name: str
    channels: int
    writers: tuple[Writer, ...]
    passthrough: tuple[str, ...]
    readers: tuple[Reader, ...]

    @property
    def residual(self) -> bool:
        """True when several layers write into these channels (they meet in a residual add)."""
        return len(self.writers) > 1


@dataclass(frozen=True)
class GroupSearch:
    """The cuttable groups of a model and, for every selected layer left out, the reason."""

    groups: list[ChannelGroup]
    skipped: dict[str, str] = field(default_factory=dict)


def _is_dense(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)


def _is_depthwise(m: nn.Module, c: int) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == c and m.in_channels == c and m.out_channels == c


def trace(model: nn.Module) -> fx.GraphModule:
    """The model's ``torch.fx`` graph (:func:`~smoothviz.compress.tracing.trace_model`: PyTorch's
    Transformer encoder layers opened), with an error that says why structured methods need it."""
    try:
        return trace_model(model)
    except Exception as exc:  # fx raises many kinds of errors on data-dependent control flow
        raise TypeError(
            f"model: structured compression (prune_channels, interpolative_compress) needs a "
            f"model that torch.fx can trace; tracing failed with {type(exc).__name__}: {exc}. "
            "svd_compress, data_aware_svd_compress and prune_magnitude need no tracing."
        ) from exc


class _Spaces:
    """Union-find over channel spaces; each space remembers its members and why it is blocked."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.channels: list[int] = []
        self.writers: dict[int, list[str]] = defaultdict(list)
        self.passthrough: dict[int, list[str]] = defaultdict(list)
        self.readers: dict[int, list[tuple[str, int, str]]] = defaultdict(list)
        self.blocked: dict[int, str] = {}

    def new(self, channels: int) -> int:
        self.parent.append(len(self.parent))
        self.channels.append(channels)
        return len(self.parent) - 1

    def root(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> int:
        a, b = self.root(a), self.root(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # the earlier space stays the root
        return min(a, b)

    def block(self, s: int, reason: str) -> None:
        self.blocked.setdefault(s, reason)


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _walk(gm: fx.GraphModule) -> tuple[_Spaces, dict[str, fx.Node]]:
    """One pass over the graph: which channel space every tensor is in."""
    modules = dict(gm.named_modules())
    calls = defaultdict(int)
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] += 1
    spaces = _Spaces()
    where: dict[fx.Node, tuple[int, bool]] = {}  # tensor -> (space, flattened)
    dense_nodes: dict[str, fx.Node] = {}

    for node in gm.graph.nodes:
        args = _tensor_args(node)
        inputs = [a for a in args if a in where]
        first = node.args[0] if node.args else None
        only_first = len(args) == 1 and first is args[0]  # the tensor is the sole tensor argument
        handled = False
        if node.op == "call_module":
            m = modules[node.target]
            if _is_dense(m):
                dense_nodes[node.target] = node
                if first in where and only_first:
                    s, flat = where[first]
                    c = spaces.channels[s]
                    if isinstance(m, nn.Conv2d):
                        f = 0 if flat or m.in_channels != c else 1
                    else:
                        f = m.in_features // c if m.in_features % c == 0 else 0
                        f = f if flat or f == 1 else 0
                    if f == 0:
                        spaces.block(s, f"read by {node.target} in a way we cannot cut")
                    else:
                        spaces.readers[s].append((node.target, f, first.name))
                        if calls[node.target] > 1:
                            spaces.block(s, f"{node.target} is called more than once")
                    handled = True
                out = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
                s_out = spaces.new(out)
                spaces.writers[s_out].append(node.target)
                if calls[node.target] > 1:
                    spaces.block(s_out, f"{node.target} is called more than once")
                where[node] = (s_out, False)
            elif first in where and only_first:
                s, flat = where[first]
                c = spaces.channels[s]
                if (
                    isinstance(m, _NORMS) and m.num_features == c or _is_depthwise(m, c)
                ) and not flat:
                    spaces.passthrough[s].append(node.target)
                    if calls[node.target] > 1:
                        spaces.block(s, f"{node.target} is called more than once")
                    where[node], handled = (s, flat), True
                elif isinstance(m, _CHANNELWISE_MODULES):
                    where[node], handled = (s, flat), True
                elif isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
                    where[node], handled = (s, True), True
            if isinstance(m, nn.Conv2d) and m.groups != 1 and node not in where:
                s_out = spaces.new(m.out_channels)
                spaces.block(s_out, f"{node.target} is a grouped convolution")
                where[node] = (s_out, False)
        elif node.op == "call_function" and first in where:
            s, flat = where[first]
            if node.target in _CHANNELWISE_FUNCTIONS and only_first:
                where[node], handled = (s, flat), True
            elif node.target is torch.flatten and only_first:
                start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
                if start == 1 and len(node.args) <= 2 and "end_dim" not in node.kwargs:
                    where[node], handled = (s, True), True
            elif node.target in _ELEMENTWISE_FUNCTIONS:
                handled = _tie(spaces, where, node, args, s, flat)
        elif node.op == "call_method" and first in where:
            s, flat = where[first]
            if node.target in _CHANNELWISE_METHODS and only_first:
                where[node], handled = (s, flat), True
            elif node.target == "flatten" and only_first and node.args[1:] == (1,):
                where[node], handled = (s, True), True
            elif node.target in _ELEMENTWISE_METHODS:
                handled = _tie(spaces, where, node, args, s, flat)
        if not handled:
            what = _describe(node, modules)
            for a in inputs:
                spaces.block(where[a][0], f"it reaches {what}")
    return spaces, dense_nodes


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """Words for what a tensor flows into, for the reason a group is blocked."""
    if node.op == "output":
        return "the model's output"
    if node.op == "call_module":
        m = modules[node.target]
        kind = type(m).__name__
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            kind = f"grouped {kind}, groups={m.groups}"
        return f"{node.target} ({kind})"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{name} ({node.op.replace('_', ' ')})"


def _tie(spaces: _Spaces, where: dict, node: fx.Node, args: list, s: int, flat: bool) -> bool:
    """A sum/product: every tensor in it must be in a channel space of the same shape."""
    if len(args) > 2 or any(a not in where or where[a][1] != flat for a in args):
        return False
    for a in args:
        s = spaces.union(s, where[a][0])
    where[node] = (s, flat)
    return True


def _norm_after(node: fx.Node, modules: dict[str, nn.Module], channels: int) -> str | None:
    """The BatchNorm that alone receives ``node``'s output, if there is one."""
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module":
        m = modules[users[0].target]
        if isinstance(m, _NORMS) and m.num_features == channels and m.track_running_stats:
            return str(users[0].target)
    return None


def find_groups(
    model: nn.Module, layers: Sequence[str] | str | None = None, *, residual: bool = True
) -> GroupSearch:
    """Every channel group whose writers are all among the selected layers.

    Parameters
    ----------
    model
        The network; it must be traceable by ``torch.fx``.
    layers
        Writer selection as in :func:`smoothviz.layers.select_layers` with ``method="channels"``
        (default: every Conv2d/Linear; the classifier's outputs are never cut because they reach
        the model's output). A residual group is cut only if every one of its writers is selected.
    residual
        Also return groups with several writers (channels tied by a residual add). ``False`` keeps
        only single-writer groups, as structured pruning did before residual groups existed.

    Returns
    -------
    GroupSearch
        ``groups`` in graph order, and ``skipped``: ``{layer: reason}`` for every selected
        Conv2d/Linear whose output channels are not cut.
    """
    if not isinstance(residual, bool):
        raise TypeError(f"residual must be True or False, got {residual!r}")
    chosen = select_layers(model, layers, method="channels")
    selected = {name for name, _ in chosen}
    gm = trace(model)
    modules = dict(gm.named_modules())
    spaces, dense_nodes = _walk(gm)
    members: dict[int, list[int]] = defaultdict(list)
    for s in range(len(spaces.parent)):
        members[spaces.root(s)].append(s)
    groups, skipped = [], {}
    for name, m in chosen:
        if not _is_dense(m):
            skipped[name] = "grouped/depthwise convolution (its channels are tied to its groups)"
        elif name not in dense_nodes:
            skipped[name] = _not_called(gm, modules, name)
    for root in sorted(members):
        parts = members[root]
        writers = [w for s in parts for w in spaces.writers[s]]
        if not writers:
            continue
        reason = next((spaces.blocked[s] for s in parts if s in spaces.blocked), None)
        readers = [r for s in parts for r in spaces.readers[s]]
        if reason is None and not readers:
            reason = "nothing reads its channels"
        unselected = [w for w in writers if w not in selected]
        if reason is None and unselected:
            reason = f"its channels are tied to {unselected}, which are not selected"
        if reason is None and len(writers) > 1 and not residual:
            reason = f"its channels are tied by a residual add to {writers} (residual=False)"
        if reason is not None:
            for w in writers:
                if w in selected:
                    others = [o for o in writers if o != w]
                    skipped[w] = reason + (f" (writers tied together: {others})" if others else "")
            continue
        c = spaces.channels[root]
        groups.append(
            ChannelGroup(
                name=writers[0],
                channels=c,
                writers=tuple(Writer(w, _norm_after(dense_nodes[w], modules, c)) for w in writers),
                passthrough=tuple(p for s in parts for p in spaces.passthrough[s]),
                readers=tuple(
                    Reader(r, f, _norm_after(dense_nodes[r], modules, _out(modules[r])), src)
                    for r, f, src in readers
                ),
            )
        )
    return GroupSearch(groups, skipped)


def _not_called(gm: fx.GraphModule, modules: dict[str, nn.Module], name: str) -> str:
    """Why a layer has no call in the graph: inside a module traced as one node, its weight read
    directly, or not used."""
    parts = name.split(".")
    leaves = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    for i in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:i])
        if parent in leaves:
            return (
                f"inside {parent} ({type(modules[parent]).__name__}), which is traced as one "
                "module and reads this layer's weight itself, so its channels cannot be cut"
            )
    read = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    if f"{name}.weight" in read:
        return "its weight is read directly by the model's code, not through its forward"
    return "not called in the model's forward"


def _out(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def _module_params(
    m: nn.Module, out: int | None = None, inp: int | None = None, bias: bool | None = None
) -> int:
    """Parameters of ``m`` with its output/input channel count replaced (closed form)."""
    bias = getattr(m, "bias", None) is not None if bias is None else bias
    if isinstance(m, _NORMS):
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
    """Closed-form parameter count of a model whose groups keep ``kept[group]`` channels.

    ``bias_for`` names readers that gain a bias (the folded mean of removed channels) as soon as
    their group loses a channel; it is counted, so the budget stays honest.
    """

    def __init__(
        self, model: nn.Module, groups: Sequence[ChannelGroup], bias_for: Sequence[str] = ()
    ) -> None:
        self.groups = {g.name: g for g in groups}
        self.total = sum(p.numel() for p in model.parameters())
        self._modules: dict[str, nn.Module] = {}
        self._out: dict[str, str] = {}  # module -> group whose kept count sets its output size
        self._in: dict[str, tuple[str, int]] = {}  # module -> (group, features per channel)
        for g in groups:
            for name in (*(w.name for w in g.writers), *g.passthrough):
                self._out[name] = g.name
            for r in g.readers:
                self._in[r.name] = (g.name, r.features_per_channel)
        for name in (*self._out, *self._in):
            self._modules.setdefault(name, model.get_submodule(name))
        self._bias_for = {b for b in bias_for if model.get_submodule(b).bias is None}
        self._base = self.total - sum(_module_params(m) for m in self._modules.values())

    def params(self, kept: dict[str, int]) -> int:
        """Total parameters when group ``g`` keeps ``kept.get(g, all)`` channels."""
        total = self._base
        for name, m in self._modules.items():
            out = kept.get(self._out[name]) if name in self._out else None
            inp, bias = None, None
            if name in self._in:
                group, f = self._in[name]
                if group in kept:
                    inp = kept[group] * f
                    cut = kept[group] < self.groups[group].channels
                    bias = True if cut and name in self._bias_for else None
            total += _module_params(m, out, inp, bias)
        return total

    def min_params(self) -> int:
        return self.params({g: 1 for g in self.groups})
