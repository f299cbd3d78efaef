"""A model as a ``torch.fx`` graph, with PyTorch's Transformer layers opened up.

The channel-group search (:mod:`smoothviz.compress.chains`) reads a model's graph. ``torch.fx``'s
default tracer keeps every ``torch.nn`` module as one leaf node, which is right for a ``Conv2d``
or a ``LayerNorm`` but hides the layers inside ``nn.TransformerEncoder`` and
``nn.TransformerEncoderLayer``: their feed-forward ``Linear`` pairs were reported as "not
called". Their own ``forward`` cannot be traced as it is (it branches on tensor properties to
choose PyTorch's fused fast path), so :func:`trace_model` traces them through the computation
they stand for, written out here: the encoder's loop over its layers and final norm, and each
layer's slow path (self-attention block, feed-forward block ``linear1 -> activation -> dropout
-> linear2 -> dropout2``, residual adds and LayerNorms, in ``norm_first`` order or not). The
fused fast path computes the same function. The attention module itself stays a leaf. Every other
``torch.nn`` module is a leaf as in ``fx.symbolic_trace``; modules of other packages (torchvision's
blocks) are traced through as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import fx, nn


def _encoder_layer(
    layer: nn.TransformerEncoderLayer,
    src: Any,
    src_mask: Any = None,
    src_key_padding_mask: Any = None,
    is_causal: bool = False,
) -> Any:
    def attention(x):
        out = layer.self_attn(
            x,
            x,
            x,
            attn_mask=src_mask,
            key_padding_mask=src_key_padding_mask,
            need_weights=False,
            is_causal=is_causal,
        )[0]
        return layer.dropout1(out)

    def feed_forward(x):
        return layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(x)))))

    x = src
    if layer.norm_first:
        x = x + attention(layer.norm1(x))
        return x + feed_forward(layer.norm2(x))
    x = layer.norm1(x + attention(x))
    return layer.norm2(x + feed_forward(x))


def _encoder(
    encoder: nn.TransformerEncoder,
    src: Any,
    mask: Any = None,
    src_key_padding_mask: Any = None,
    is_causal: bool | None = None,
) -> Any:
    out = src
    for layer in encoder.layers:
        out = layer(
            out, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal)
        )
    return out if encoder.norm is None else encoder.norm(out)


# Exact types only: a subclass may compute something else in its own forward.
OPENED: dict[type, Callable[..., Any]] = {
    nn.TransformerEncoder: _encoder,
    nn.TransformerEncoderLayer: _encoder_layer,
}


class _Tracer(fx.Tracer):
    """``fx.Tracer`` that traces the modules of :data:`OPENED` through their written-out forward."""

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        opened = OPENED.get(type(m))
        if opened is not None:
            # Submodule calls inside go through this tracer again, under their qualified names.
            return opened(m, *args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        # A module that says it must stay whole (compress.attention.ProjectedAttention) is a leaf.
        return getattr(type(m), "fx_leaf", False) or super().is_leaf_module(
            m, module_qualified_name
        )


def trace_model(model: nn.Module) -> fx.GraphModule:
    """The ``fx.GraphModule`` of ``model``, with PyTorch's Transformer encoder layers opened.

    Raises whatever ``torch.fx`` raises on a model it cannot trace (data-dependent control flow).
    """
    tracer = _Tracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)
