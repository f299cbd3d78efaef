"""Model zoo shapes, layer selection, torchvision architectures built offline."""

import pytest
import torch
from torch import nn

from smoothviz.layers import compressible_layers, matrix_view, select_layers
from smoothviz.models import build_model


@pytest.mark.parametrize("name", ["resnet18", "cnn", "mlp", "vit"])
def test_models_map_images_to_logits(name):
    model = build_model(name, in_channels=1, num_classes=10, width=8)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_resnet18_is_cifar_style():
    model = build_model("resnet18", in_channels=3, num_classes=7, width=16)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert len(compressible_layers(model)) == 21  # stem, 16 block convs, 3 shortcuts, fc
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_torchvision_models_are_built_without_weights_and_adapt_channels():
    model = build_model("torchvision:resnet18", in_channels=1, num_classes=10)
    assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="unknown torchvision architecture"):
        build_model("torchvision:not_a_net")


def test_vit_is_torchvisions_vision_transformer_for_the_data():
    from torchvision.models import VisionTransformer

    model = build_model("vit", in_channels=1, num_classes=10, width=16, image_size=32)
    assert isinstance(model, VisionTransformer) and model.image_size == 32
    assert model.hidden_dim == 16 and model.conv_proj.in_channels == 1
    assert len(model.encoder.layers) == 6
    with pytest.raises(ValueError, match="image_size must be a multiple of 4"):
        build_model("vit", image_size=30)
    with pytest.raises(ValueError, match="width must be a multiple of 4"):
        build_model("vit", width=6)


def test_bad_names_and_sizes_are_named():
    with pytest.raises(ValueError, match="model: unknown model 'transformer'"):
        build_model("transformer")
    with pytest.raises(ValueError, match="width must be a positive int"):
        build_model("cnn", width=0)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("cnn", num_classes=1)


def test_default_layer_selection_leaves_out_first_and_classifier():
    model = build_model("cnn", width=4)
    names = [n for n, _ in compressible_layers(model)]
    assert [n for n, _ in select_layers(model)] == names[1:-1]
    assert [n for n, _ in select_layers(model, "all")] == names
    with pytest.raises(ValueError, match="allowed names"):
        select_layers(model, ["nope"])


def test_matrix_view_of_a_conv_weight():
    w = torch.randn(8, 3, 5, 5)
    assert matrix_view(w).shape == (8, 75)
    assert torch.equal(matrix_view(w)[2], w[2].flatten())
