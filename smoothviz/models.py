"""Model zoo: a CIFAR-style ResNet-18, a small CNN, an MLP and a small ViT, plus torchvision's.

``build_model("torchvision:<name>", ...)`` builds a torchvision zoo model with ``weights=None`` (no
download ever happens) and adapts its first layer to ``in_channels`` when that is not 3.
``"vit"`` is torchvision's ``VisionTransformer`` in a configuration small enough to train on a
CPU (:data:`VIT_CONFIG`), for the image size of the data.
"""

from __future__ import annotations

import torch
from torch import nn

from smoothviz.layers import set_submodule

MODEL_NAMES = ("resnet18", "cnn", "mlp", "vit")
DEFAULT_WIDTH = {"resnet18": 64, "cnn": 32, "mlp": 256, "vit": 64}
# The small ViT: patches of 4x4 pixels (49 tokens on 28x28 images), 6 encoder layers of 4 heads,
# hidden width ``width`` and MLP width ``mlp_ratio * width`` (ViT-B's ratio).
VIT_CONFIG = {"patch_size": 4, "num_layers": 6, "num_heads": 4, "mlp_ratio": 4}
TORCHVISION_PREFIX = "torchvision:"


class BasicBlock(nn.Module):
    """ResNet basic block: conv-bn-relu-conv-bn plus a (projected when needed) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem, no max-pool, four stages of two basic blocks."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        stages, in_planes = [], w
        for i, planes in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes))
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def small_cnn(in_channels: int = 1, num_classes: int = 10, width: int = 32) -> nn.Sequential:
    """Five 3x3 conv-bn-relu layers (widths w, 2w, 2w, 4w, 4w), two max-pools, a linear head."""
    w = width
    return nn.Sequential(
        *_conv_bn_relu(in_channels, w),
        *_conv_bn_relu(w, 2 * w),
        nn.MaxPool2d(2),
        *_conv_bn_relu(2 * w, 2 * w),
        *_conv_bn_relu(2 * w, 4 * w),
        nn.MaxPool2d(2),
        *_conv_bn_relu(4 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, num_classes),
    )


def mlp(in_features: int, num_classes: int = 10, width: int = 256, depth: int = 3) -> nn.Sequential:
    """Flatten, then ``depth`` hidden Linear-ReLU layers of ``width`` units, then the classifier."""
    layers: list[nn.Module] = [nn.Flatten()]
    features = in_features
    for _ in range(depth):
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def small_vit(
    in_channels: int = 1, num_classes: int = 10, width: int = 64, image_size: int = 28
) -> nn.Module:
    """torchvision's ``VisionTransformer`` with :data:`VIT_CONFIG` and hidden width ``width``.

    ``image_size`` must be a multiple of the patch size; ``width`` of the number of heads.
    """
    from torchvision.models import VisionTransformer

    patch, heads = VIT_CONFIG["patch_size"], VIT_CONFIG["num_heads"]
    if image_size % patch:
        raise ValueError(
            f"image_size must be a multiple of {patch} for model 'vit', got {image_size}"
        )
    if width % heads:
        raise ValueError(f"width must be a multiple of {heads} for model 'vit', got {width}")
    model = VisionTransformer(
        image_size=image_size,
        patch_size=patch,
        num_layers=VIT_CONFIG["num_layers"],
        num_heads=heads,
        hidden_dim=width,
        mlp_dim=VIT_CONFIG["mlp_ratio"] * width,
        num_classes=num_classes,
    )
    if in_channels != 3:
        old = model.conv_proj
        model.conv_proj = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride)
    return model


def _torchvision_model(arch: str, in_channels: int, num_classes: int) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ValueError(
            f"model: unknown torchvision architecture {arch!r}; allowed: {sorted(available)}"
        )
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if in_channels != 3:
        # Swap the first conv for one with the requested input channels, same geometry.
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                new = nn.Conv2d(
                    in_channels,
                    module.out_channels,
                    module.kernel_size,
                    module.stride,
                    module.padding,
                    module.dilation,
                    module.groups,
                    module.bias is not None,
                )
                set_submodule(model, name, new)
                break
    return model


def build_model(
    name: str,
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    width: int | None = None,
    image_size: int = 28,
) -> nn.Module:
    """Build a model by name.

    Parameters
    ----------
    name
        ``"resnet18"``, ``"cnn"``, ``"mlp"``, ``"vit"`` (:func:`small_vit`) or
        ``"torchvision:<arch>"`` (e.g. ``torchvision:vgg11_bn``).
    in_channels, num_classes
        Input channels of the images and number of classes.
    width
        Base width (channels of the first stage, hidden units of the MLP, the ViT's hidden
        width); ``None`` uses the model's default (resnet18: 64, cnn: 32, mlp: 256, vit: 64).
        Ignored for torchvision models.
    image_size
        Side of the square input images; only the MLP and the ViT need it.
    """
    if not isinstance(name, str):
        raise TypeError(f"model must be a string, got {type(name).__name__}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision_model(name[len(TORCHVISION_PREFIX) :], in_channels, num_classes)
    if name not in MODEL_NAMES:
        raise ValueError(
            f"model: unknown model {name!r}; allowed: {list(MODEL_NAMES)} "
            f"or '{TORCHVISION_PREFIX}<architecture>'"
        )
    if width is None:
        width = DEFAULT_WIDTH[name]
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    if name == "resnet18":
        return ResNet18(in_channels, num_classes, width)
    if name == "cnn":
        return small_cnn(in_channels, num_classes, width)
    if name == "vit":
        return small_vit(in_channels, num_classes, width, image_size)
    return mlp(in_channels * image_size * image_size, num_classes, width)
