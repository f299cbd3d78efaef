"""Save and load compressed models: ``state_dict`` plus a JSON description of the structure.

``save_compressed(model, "m.pt", arch=...)`` writes ``m.pt`` (the state_dict, via
``torch.save``) and ``m.json`` (format version, the architecture to rebuild, and the constructor
arguments of every Conv2d, Linear, BatchNorm, :class:`~smoothviz.compress.factorized.Factorized`
and :class:`~smoothviz.compress.attention.ProjectedAttention` module, which captures factorised
layers, split attention and cut channels alike, plus which weights are sparse).
``load_compressed`` rebuilds the architecture, swaps in modules of the recorded shapes, and loads
the weights with ``torch.load(weights_only=True)``: no pickled objects are ever executed. Both files
are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smoothviz.atomic import atomic_torch_save, atomic_write_text
from smoothviz.compress.attention import ProjectedAttention, settle_encoders
from smoothviz.compress.factorized import Factorized
from smoothviz.layers import set_submodule

FORMAT = "smoothviz.compressed/1"


def _describe(m: nn.Module) -> dict[str, Any] | None:
    if isinstance(m, Factorized):
        return {"type": "Factorized"}
    if isinstance(m, ProjectedAttention):
        return {
            "type": "ProjectedAttention",
            "embed_dim": m.embed_dim,
            "num_heads": m.num_heads,
            "kdim": m.kdim,
            "vdim": m.vdim,
            "bias": m.projection_bias,
            "dropout": m.dropout,
            "batch_first": m.batch_first,
        }
    if isinstance(m, nn.Conv2d):
        return {
            "type": "Conv2d",
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel_size": list(m.kernel_size),
            "stride": list(m.stride),
            "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
            "dilation": list(m.dilation),
            "groups": m.groups,
            "bias": m.bias is not None,
            "padding_mode": m.padding_mode,
        }
    if isinstance(m, nn.Linear):
        return {
            "type": "Linear",
            "in_features": m.in_features,
            "out_features": m.out_features,
            "bias": m.bias is not None,
        }
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {
            "type": type(m).__name__,
            "num_features": m.num_features,
            "eps": m.eps,
            "momentum": m.momentum,
            "affine": m.affine,
            "track_running_stats": m.track_running_stats,
        }
    return None


def _build(spec: dict[str, Any]) -> nn.Module:
    kind = spec["type"]
    args = {k: v for k, v in spec.items() if k not in ("type", "name")}
    if kind == "Factorized":
        return Factorized(nn.Identity(), nn.Identity())
    if kind == "ProjectedAttention":
        return ProjectedAttention(args.pop("embed_dim"), args.pop("num_heads"), **args)
    if kind == "Conv2d":
        for key in ("kernel_size", "stride", "dilation"):
            args[key] = tuple(args[key])
        if isinstance(args["padding"], list):
            args["padding"] = tuple(args["padding"])
        return nn.Conv2d(**args)
    if kind == "Linear":
        return nn.Linear(**args)
    if kind in ("BatchNorm1d", "BatchNorm2d"):
        return getattr(nn, kind)(**args)
    raise ValueError(f"unknown module type {kind!r} in the structure description")


def describe_structure(model: nn.Module) -> list[dict[str, Any]]:
    """Constructor arguments of every Conv2d/Linear/BatchNorm/Factorized/ProjectedAttention
    module, parents first."""
    out = []
    for name, m in model.named_modules():
        spec = _describe(m)
        if spec is not None and name:
            out.append({"name": name, **spec})
    return out


def _json_paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    return path, path.with_suffix(".json")


def save_compressed(
    model: nn.Module,
    path: str | Path,
    *,
    arch: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` (state_dict) and its ``.json`` sidecar (structure), both atomically.

    Parameters
    ----------
    model
        A model returned by a smoothviz compression function (or any model).
    path
        Where the state_dict goes, e.g. ``"cnn_svd70.pt"``; the sidecar is ``"cnn_svd70.json"``.
    arch
        Keyword arguments of :func:`smoothviz.models.build_model` that build the uncompressed
        architecture (e.g. ``{"name": "cnn", "in_channels": 1, "num_classes": 10, "width": 16}``);
        without it, :func:`load_compressed` needs a ``base`` model.
    metadata
        Anything JSON-serialisable to keep alongside (config, method, target).

    Returns
    -------
    Path
        The state_dict path.
    """
    pt, sidecar = _json_paths(path)
    if pt.suffix == ".json":
        raise ValueError(f"path must not end in .json (that is the sidecar), got {str(path)!r}")
    info = getattr(model, "compression_info", None)
    description = {
        "format": FORMAT,
        "arch": arch,
        "modules": describe_structure(model),
        "sparse_parameters": list(getattr(model, "sparse_parameters", [])),
        "compression_info": info,
        "metadata": metadata,
    }
    text = json.dumps(description, indent=1, default=str)  # fails early if not serialisable
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(pt, state)
    atomic_write_text(sidecar, text)
    return pt


def load_compressed(path: str | Path, base: nn.Module | None = None) -> nn.Module:
    """Rebuild a compressed model saved by :func:`save_compressed` (weights-only load).

    Parameters
    ----------
    path
        The state_dict path given to :func:`save_compressed`.
    base
        An uncompressed model of the same architecture (its weights are not used; it is copied,
        not modified). Needed when the model was saved without ``arch``.

    Returns
    -------
    nn.Module
        The compressed model on the CPU, in eval mode.
    """
    import copy

    pt, sidecar = _json_paths(path)
    if not pt.is_file() or not sidecar.is_file():
        raise FileNotFoundError(f"need both {pt} and {sidecar}")
    description = json.loads(sidecar.read_text())
    if description.get("format") != FORMAT:
        raise ValueError(
            f"{sidecar}: unknown format {description.get('format')!r}, expected {FORMAT!r}"
        )
    if base is not None:
        model = copy.deepcopy(base).cpu()
    elif description.get("arch"):
        from smoothviz.models import build_model

        model = build_model(**description["arch"])
    else:
        raise TypeError(
            f"base: {pt} was saved without arch; pass base=<an uncompressed model of the same "
            "architecture>"
        )
    for spec in description["modules"]:
        set_submodule(model, spec["name"], _build(spec))
    settle_encoders(model)  # encoders over split attention skip their nested-tensor path
    state = torch.load(pt, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    if description.get("sparse_parameters"):
        model.sparse_parameters = list(description["sparse_parameters"])
    if description.get("compression_info") is not None:
        model.compression_info = description["compression_info"]
    return model.eval()
