"""Any model a user brings (issue 24): every method on torchvision's zoo, an MLP, a Transformer.

Each case builds the model with random weights and ``num_classes=10`` (nothing is downloaded),
re-estimates its BatchNorm statistics on random inputs (so activations have a realistic scale),
and compresses it with ``sweep.compress`` (so every method of ``METHODS`` is covered, whatever
is added to it) at ``param_reduction=0.3`` with 16 calibration inputs. The method must either
return a model that runs on a batch of 1 and of 8 (eval mode, no gradient: PyTorch's fused
Transformer paths included), whose parameter count fell by 0.3 within 1 pp, while the input
model is left unchanged and shares no storage with the result; or raise a ``BudgetError`` whose
message names why.

The zoo: one model of every classification family in ``torchvision.models`` that builds and runs
on a 32x32 input in a few seconds (vit_b_16 at ``image_size=32``, 2x2 patches): resnet18,
resnet50, mobilenet_v2, mobilenet_v3_small, efficientnet_b0, shufflenet_v2_x0_5, squeezenet1_1,
regnet_y_400mf, regnet_x_400mf, densenet121, convnext_tiny, vit_b_16, swin_t, mnasnet0_5,
googlenet. Left out: the larger members of these families (the same layer types, more time),
alexnet and the vgg family (a 9,216- or 25,088-input classifier whose SVD alone takes longer than
the whole zoo here), inception_v3 (needs 75x75 inputs), maxvit_t (needs 224x224 inputs),
efficientnet_v2, swin_v2, resnext and wide_resnet (their layer types are covered above, at
several times the cost). Every torchvision case is ``slow`` (CI runs it; the inner loop
``-m "not slow"`` does not), and so are the data-aware methods on the ``nn.TransformerEncoder``;
the rest of the MLP and Transformer cases run in the fast lane.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from smoothviz.compress import METHODS, BudgetError
from smoothviz.compress.shrinkage import FewRowsWarning
from smoothviz.measure import bn_reestimate, count_params
from smoothviz.sweep import compress

TARGET = 0.3
CALIBRATION = 16


class TokenClassifier(nn.Module):
    """A 2-layer ``nn.TransformerEncoder`` (d_model 128, feed-forward 256, batch first) on token
    embeddings, mean-pooled, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(128, 4, dim_feedforward=256, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


def _torchvision(arch: str, **kwargs):
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(arch, weights=None, num_classes=10, **kwargs)

    return build


def _mlp() -> nn.Module:
    from smoothviz.models import mlp

    return mlp(784, 10, width=128, depth=2)


# name: (builder, input shape of one example)
IMAGE = (3, 32, 32)
ZOO = {
    "mlp": (_mlp, (1, 28, 28)),
    "transformer_encoder": (TokenClassifier, (12, 128)),
    **{
        arch: (_torchvision(arch), IMAGE)
        for arch in (
            "resnet18",
            "resnet50",
            "mobilenet_v2",
            "mobilenet_v3_small",
            "efficientnet_b0",
            "shufflenet_v2_x0_5",
            "squeezenet1_1",
            "regnet_y_400mf",
            "regnet_x_400mf",
            "densenet121",
            "convnext_tiny",
            "swin_t",
            "mnasnet0_5",
            "googlenet",
        )
    },
    "vit_b_16": (_torchvision("vit_b_16", image_size=32), IMAGE),
}
# The inner loop's cases; the data-aware methods on the Transformer take a few seconds each.
FAST = {("mlp", m) for m in METHODS} | {
    ("transformer_encoder", m) for m in METHODS if m not in ("svd_data_aware", "interpolative")
}

_cache: dict[str, tuple] = {}  # the model of the current arch (cases run arch by arch)


def _inputs(arch: str, n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, *ZOO[arch][1], generator=torch.Generator().manual_seed(seed))


def _zoo_model(arch: str):
    """(model in eval mode, calibration inputs, a copy of its state to compare with)."""
    if arch not in _cache:
        _cache.clear()
        torch.manual_seed(0)
        model = ZOO[arch][0]()
        calibration = _inputs(arch, CALIBRATION, seed=1)
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            model = bn_reestimate(model, calibration)
        model.eval()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        _cache[arch] = (model, calibration, state)
    return _cache[arch]


def _storage(model: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in model.state_dict().values() if t.numel()}


CASES = [
    pytest.param(
        arch,
        method,
        id=f"{arch}-{method}",
        marks=() if (arch, method) in FAST else pytest.mark.slow,
    )
    for arch in ZOO
    for method in METHODS
]


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_every_method_returns_a_model_that_runs_or_says_why(arch, method):
    model, calibration, state = _zoo_model(arch)
    total = count_params(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewRowsWarning)  # 16 inputs are few, on purpose
            small = compress(model, method, TARGET, calibration=calibration)
    except BudgetError as exc:
        text = str(exc)
        assert "cannot be reached" in text and (
            "Layers left out:" in text or "the closest is" in text
        ), text
        small = None
    # The input model is unchanged: same values, same mode, nothing attached.
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not model.training and not hasattr(model, "compression_info")
    if small is None:
        return
    assert not _storage(model) & _storage(small)
    reduction = 1.0 - count_params(small) / total
    assert abs(reduction - TARGET) <= 0.01, reduction
    small.eval()
    with torch.no_grad():
        for n in (1, 8):
            out = small(_inputs(arch, n, seed=2))
            assert out.shape == (n, 10) and torch.isfinite(out).all()
