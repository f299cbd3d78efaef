"""``nn.MultiheadAttention`` with its four projections as layers the SVD methods can replace.

``nn.MultiheadAttention`` keeps its query/key/value projection as one packed parameter
``in_proj_weight`` (``3E × E``) and reads ``out_proj.weight`` directly in both of its paths, so
neither can be swapped for a factorised pair: the model breaks at its first forward.
:class:`ProjectedAttention` computes the same function with ``q_proj``, ``k_proj``, ``v_proj``
and ``out_proj`` as ``nn.Linear`` modules that it *calls*, so each can be factorised like any
other Linear (the in-projection split into its three ``E × E`` blocks, each with its own rank),
and every data-aware method sees their inputs through ordinary hooks. The parameters are the
same numbers, regrouped.

PyTorch's Transformer layers choose a fused fast path in eval mode that reads the attention's and
the feed-forward layers' weights directly. :class:`ProjectedAttention` tells them what
``nn.MultiheadAttention`` with separate projections (``kdim``/``vdim`` set) tells them,
``_qkv_same_embed_dim = False``, so ``nn.TransformerEncoderLayer`` takes its slow path, which
calls every submodule; :func:`settle_encoders` makes each ``nn.TransformerEncoder`` over such
layers skip its nested-tensor path, as its constructor decides for such layers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from smoothviz.layers import set_submodule


def _as_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True: not allowed) as ``-inf``/0, a float mask as it is."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
            mask, float("-inf")
        )
    return mask.to(dtype)


class ProjectedAttention(nn.Module):
    """Multi-head attention equal to ``nn.MultiheadAttention``, projections as called modules.

    Same call signature and results as ``nn.MultiheadAttention`` (batched or unbatched inputs,
    ``batch_first``, boolean or float ``attn_mask`` and ``key_padding_mask``,
    ``need_weights``/``average_attn_weights``, dropout on the attention weights in training).
    Build it from an existing attention with :meth:`from_attention`.
    """

    # torch.fx keeps it whole, as it keeps nn.MultiheadAttention: its forward branches on the
    # inputs' shapes and masks (compress.tracing reads this flag).
    fx_leaf = True

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        f = {"device": device, "dtype": dtype, "bias": bias}
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.projection_bias = bool(bias)  # kept: a factorised projection has no .bias to read
        self.q_proj = nn.Linear(embed_dim, embed_dim, **f)
        self.k_proj = nn.Linear(self.kdim, embed_dim, **f)
        self.v_proj = nn.Linear(self.vdim, embed_dim, **f)
        self.out_proj = nn.Linear(embed_dim, embed_dim, **f)
        # What PyTorch's Transformer layers read to choose their fused path (see the module
        # docstring): separate projections, no packed weight, no key/value bias, no zero
        # attention. They then call this module.
        self._qkv_same_embed_dim = False
        self.in_proj_weight = None
        self.in_proj_bias = None
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False

    @staticmethod
    def supports(attention: nn.MultiheadAttention) -> bool:
        """Whether :meth:`from_attention` can rebuild ``attention`` (no ``add_bias_kv`` and no
        ``add_zero_attn``, which append learned or zero keys)."""
        return attention.bias_k is None and attention.bias_v is None and not attention.add_zero_attn

    @classmethod
    def from_attention(cls, attention: nn.MultiheadAttention) -> ProjectedAttention:
        """The same attention, its weights copied (the argument is not modified)."""
        if not cls.supports(attention):
            raise TypeError(
                "attention: add_bias_kv=True or add_zero_attn=True is not supported by "
                "ProjectedAttention"
            )
        w = attention.out_proj.weight  # device and dtype of the copy
        new = cls(
            attention.embed_dim,
            attention.num_heads,
            kdim=attention.kdim,
            vdim=attention.vdim,
            bias=attention.in_proj_bias is not None,
            dropout=attention.dropout,
            batch_first=attention.batch_first,
            device=w.device,
            dtype=w.dtype,
        )
        if attention._qkv_same_embed_dim:
            sources = (attention.in_proj_weight,) * 3
            weights = attention.in_proj_weight.detach().chunk(3)
        else:
            sources = (attention.q_proj_weight, attention.k_proj_weight, attention.v_proj_weight)
            weights = tuple(w.detach() for w in sources)
        b_in = attention.in_proj_bias
        biases = b_in.detach().chunk(3) if b_in is not None else (None,) * 3
        pairs = [(new.out_proj.weight, attention.out_proj.weight)]
        if attention.out_proj.bias is not None:
            pairs.append((new.out_proj.bias, attention.out_proj.bias))
        with torch.no_grad():
            for proj, src, wt, b in zip(
                (new.q_proj, new.k_proj, new.v_proj), sources, weights, biases
            ):
                proj.weight.copy_(wt)
                proj.weight.requires_grad_(src.requires_grad)
                if b is not None:
                    proj.bias.copy_(b)
                    proj.bias.requires_grad_(b_in.requires_grad)
            for dst, src in pairs:
                dst.copy_(src.detach())
                dst.requires_grad_(src.requires_grad)
        return new.train(attention.training)

    def _mask(self, attn_mask, key_padding_mask, n: int, lq: int, lk: int, dtype) -> torch.Tensor:
        mask = None
        if attn_mask is not None:
            m = _as_additive(attn_mask, dtype)
            mask = m.reshape(1, 1, lq, lk) if m.dim() == 2 else m.reshape(n, self.num_heads, lq, lk)
        if key_padding_mask is not None:
            pad = _as_additive(key_padding_mask, dtype).reshape(n, 1, 1, lk)
            mask = pad if mask is None else mask + pad
        return mask

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As ``nn.MultiheadAttention.forward``; ``is_causal`` is a hint that ``attn_mask`` is
        causal, so the mask is what is applied."""
        if is_causal and attn_mask is None:
            raise RuntimeError("is_causal=True needs attn_mask, as for nn.MultiheadAttention")
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, lq, lk = query.shape[0], query.shape[1], key.shape[1]
        h, d = self.num_heads, self.head_dim
        q = self.q_proj(query).reshape(n, lq, h, d).transpose(1, 2)
        k = self.k_proj(key).reshape(n, lk, h, d).transpose(1, 2)
        v = self.v_proj(value).reshape(n, lk, h, d).transpose(1, 2)
        mask = self._mask(attn_mask, key_padding_mask, n, lq, lk, q.dtype)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * d**-0.5) @ k.transpose(-2, -1)
            weights = (scores if mask is None else scores + mask).softmax(-1)
            out = (F.dropout(weights, p) if p > 0 else weights) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(out.transpose(1, 2).reshape(n, lq, h * d))
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None:
            weights = weights.mean(1) if average_attn_weights else weights
            weights = weights if batched else weights.squeeze(0)
        return out, weights


def attention_modules(model: nn.Module) -> list[str]:
    """Names of the ``nn.MultiheadAttention`` modules :func:`split_attention` replaces."""
    return [
        name
        for name, m in model.named_modules()
        if type(m) is nn.MultiheadAttention and ProjectedAttention.supports(m)
    ]


def settle_encoders(model: nn.Module) -> None:
    """Switch off the nested-tensor path of every ``nn.TransformerEncoder`` whose first layer's
    attention is a :class:`ProjectedAttention` (what its constructor decides for such layers:
    that path reads the packed projection weight), in place."""
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoder) and len(m.layers):
            if isinstance(getattr(m.layers[0], "self_attn", None), ProjectedAttention):
                m.use_nested_tensor = False


def split_attention(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.MultiheadAttention`` (of exactly that type, without
    ``add_bias_kv``/``add_zero_attn``) replaced by the equal :class:`ProjectedAttention`.

    The copy computes the same function (up to float round-off) and has the same parameter count;
    ``model`` is not modified. A model without such attention is simply deep-copied.
    """
    new = copy.deepcopy(model)
    for name in attention_modules(new):
        set_submodule(new, name, ProjectedAttention.from_attention(new.get_submodule(name)))
    settle_encoders(new)
    return new
