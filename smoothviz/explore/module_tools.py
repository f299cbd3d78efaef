"""What the incremental evaluator does to single modules and graph nodes.

Folding a BatchNorm into the convolution before it, finding the BatchNorm calls that can be folded,
telling which traced operations write into their input, comparing two modules by value, and sizes
of what a forward pass produces.
"""

from __future__ import annotations

import copy
import itertools
import operator
from collections.abc import Mapping
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# call_function targets that write into their first argument
INPLACE_FUNCTIONS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.iand,
    operator.ior,
    operator.setitem,
}


def module_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU when it has none)."""
    p = next(itertools.chain(model.parameters(), model.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


def tensor_bytes(value: Any) -> int:
    """Bytes held by a tensor, or by the tensors of a (nested) tuple or list; 0 for anything else."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def writes_in_place(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    """Whether the traced operation ``node`` may overwrite one of its inputs."""
    if node.op == "call_function":
        return node.target in INPLACE_FUNCTIONS or bool(node.kwargs.get("inplace", False))
    if node.op == "call_method":
        name = str(node.target)
        return name.endswith("_") and not name.endswith("__")
    if node.op == "call_module":
        return bool(getattr(modules.get(str(node.target)), "inplace", False))
    return False


def with_batchnorm_folded(module: nn.Module, bn: nn.Module | None) -> nn.Module:
    """A copy of ``module`` (eval mode) with ``bn`` folded into its last convolution."""
    module = copy.deepcopy(module).eval()
    if bn is None:
        return module
    bn = copy.deepcopy(bn).eval()
    if isinstance(module, nn.Conv2d):
        return fuse_conv_bn_eval(module, bn)
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], nn.Conv2d):
        return nn.Sequential(*module[:-1], fuse_conv_bn_eval(module[-1], bn))
    return nn.Sequential(module, bn)  # nothing to fold into: run the two in turn


def foldable_batchnorm(node: fx.Node, modules: Mapping[str, nn.Module], calls: Mapping[str, int]):
    """The BatchNorm2d call that only post-processes this Conv2d call, if there is one."""
    if node.op != "call_module" or not isinstance(modules.get(str(node.target)), nn.Conv2d):
        return None
    if len(node.users) != 1 or calls[str(node.target)] != 1:
        return None
    user = next(iter(node.users))
    bn = modules.get(str(user.target)) if user.op == "call_module" else None
    if (
        not isinstance(bn, nn.BatchNorm2d)
        or bn.running_mean is None
        or calls[str(user.target)] != 1
        or user.args != (node,)
        or user.kwargs
    ):
        return None
    return user


def _settings(m: nn.Module) -> dict[str, Any]:
    """A module's plain settings (sizes, stride, eps...), without mode flags."""
    return {
        k: v
        for k, v in vars(m).items()
        if not k.startswith("_") and k not in ("training", "inplace")
    }


def same_module(a: nn.Module, b: nn.Module) -> bool:
    """Same type, settings and tensors (parameters and buffers), submodules included."""
    if type(a) is not type(b) or _settings(a) != _settings(b):
        return False
    if [n for n, _ in a.named_modules()] != [n for n, _ in b.named_modules()]:
        return False
    if any(
        type(x) is not type(z) or _settings(x) != _settings(z)
        for x, z in zip(a.modules(), b.modules(), strict=True)
    ):
        return False
    ta = dict(itertools.chain(a.named_parameters(), a.named_buffers()))
    tb = dict(itertools.chain(b.named_parameters(), b.named_buffers()))
    if ta.keys() != tb.keys():
        return False
    return all(ta[k].shape == tb[k].shape and torch.equal(ta[k], tb[k]) for k in ta)
