"""TrainConfig rejects bad values with a message naming the field and what is allowed."""

import pytest

from smoothviz.config import ConfigError, TrainConfig

BAD_VALUES = [
    ("dataset", "mnist", "dataset must be one of"),
    ("model", "resnet50", "model must be one of"),
    ("width", 0, "width must be"),
    ("width", True, "width must be int or None"),
    ("epochs", 0, "epochs must be an int >= 1"),
    ("epochs", 2.5, "epochs must be int"),
    ("batch_size", -1, "batch_size must be"),
    ("lr", 0.0, "lr must be a finite number > 0"),
    ("lr", "fast", "lr must be float"),
    ("momentum", 1.0, r"momentum must be a number in \[0, 1\)"),
    ("weight_decay", -1e-4, "weight_decay must be a finite number >= 0"),
    ("label_smoothing", 1.5, "label_smoothing must be"),
    ("schedule", "step", "schedule must be one of"),
    ("nuclear", float("inf"), "nuclear must be a finite number >= 0"),
    ("nuclear", -1.0, "nuclear must be"),
    ("nuclear_every", 0, "nuclear_every must be an int >= 1"),
    ("first_order", float("nan"), "first_order must be"),
    ("second_order", -0.1, "second_order must be"),
    ("proximal", -1, "proximal must be"),
    ("proximal_every", 0, "proximal_every must be"),
    ("layers", (), "layers must be None or a non-empty"),
    ("layers", (1, 2), "layers must be"),
    ("crop_padding", 40, "crop_padding must be an int in"),
    ("flip", "yes", "flip must be bool"),
    ("train_subset", 0, "train_subset must be"),
    ("seed", -3, "seed must be an int >= 0"),
    ("device", "tpu", "device must be one of"),
    ("compile", 1, "compile must be bool"),
]


@pytest.mark.parametrize("field,value,message", BAD_VALUES)
def test_bad_values_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})


def test_unknown_fields_are_rejected_by_from_dict():
    with pytest.raises(ConfigError, match=r"unknown TrainConfig field\(s\) \['lamda'\]"):
        TrainConfig.from_dict({"lamda": 0.1})


def test_config_is_frozen_hashable_and_its_hash_is_stable():
    a, b = TrainConfig(layers=["x", "y"]), TrainConfig(layers=("x", "y"))
    assert a == b and a.config_hash() == b.config_hash() and hash(a) == hash(b)
    assert a.config_hash() != a.replace(lr=0.1).config_hash()
    assert TrainConfig.from_dict(a.to_dict()) == a
    with pytest.raises(AttributeError):
        a.lr = 1.0  # frozen


# Checkpoint cache keys recorded before TrainConfig moved onto smoothviz.validated.Validated (at
# f173c41): the same config must keep its hash, or every cached checkpoint is orphaned. Each
# entry: the fields that differ from the defaults, and the hash.
PINNED_HASHES = {
    "default": ({}, "bdee2b24fc49b24a"),
    "resnet_full": (
        {
            "dataset": "fashion-mnist",
            "model": "resnet18",
            "width": 16,
            "epochs": 4,
            "train_subset": 20000,
        },
        "857ea263f3fb1a81",
    ),
    "cifar": (
        {"dataset": "cifar10", "model": "resnet18", "width": 64, "epochs": 30},
        "b0a06d69c88e2ec5",
    ),
    "nuclear": ({"nuclear": 0.001, "nuclear_every": 5, "seed": 3}, "52c66627e05365d2"),
    "first_order_int": ({"first_order": 1}, "ca3b9b165d8f70ee"),
    "first_order_float": ({"first_order": 1.0}, "0e5dfa293595bb58"),
    "second": (
        {"lr": 0.1, "momentum": 0.0, "schedule": "cosine", "second_order": 0.02},
        "0cab9d55130ded94",
    ),
    "proximal": (
        {"weight_decay": 0.0, "label_smoothing": 0.0, "proximal": 0.5, "proximal_every": 10},
        "1ae83f65f850aad2",
    ),
    "layers": (
        {"layers": ["features.0", "classifier"], "crop_padding": 0, "flip": False},
        "9961489861432b78",
    ),
    "layers_tuple": ({"layers": ["a"], "device": "cuda:1", "compile": True}, "99084424204b072f"),
    "torchvision": (
        {"data_root": "/data/x", "model": "torchvision:resnet18", "batch_size": 256},
        "d6a6636b7c7d90be",
    ),
    "mlp": (
        {
            "model": "mlp",
            "width": 16,
            "epochs": 1,
            "batch_size": 64,
            "train_subset": 500,
            "device": "cpu",
        },
        "5ddbaf41a4b5820f",
    ),
    "tiny_floats": (
        {"lr": 1e-05, "weight_decay": 1e-10, "first_order": 0.0063},
        "dc5871eeb6fb1f64",
    ),
    "main_baseline": (
        {
            "dataset": "fashion-mnist",
            "model": "resnet18",
            "width": 8,
            "epochs": 4,
            "train_subset": 24000,
        },
        "3894e1d9ec496e6a",
    ),
    "main_smooth": (
        {
            "dataset": "fashion-mnist",
            "model": "resnet18",
            "width": 8,
            "epochs": 4,
            "first_order": 0.01,
            "train_subset": 24000,
        },
        "4a920020a21daac1",
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED_HASHES))
def test_config_hash_is_pinned_byte_for_byte(name):
    changes, expected = PINNED_HASHES[name]
    cfg = TrainConfig(**changes)
    assert cfg.config_hash() == expected
    assert TrainConfig.from_dict(cfg.to_dict()).config_hash() == expected
    if cfg.layers is not None:  # a tuple and a list of layer names are the same config
        assert (
            TrainConfig(**{**changes, "layers": tuple(changes["layers"])}).config_hash() == expected
        )


def test_every_field_has_help_text_in_its_metadata():
    docs = TrainConfig.field_help()
    assert list(docs) == TrainConfig.field_names()
    assert all(docs.values()), [name for name, text in docs.items() if not text]
    assert docs["nuclear_every"] == "1: exact per step; k > 1: subgradient refreshed every k steps"


def test_the_validated_base_checks_types_converts_lists_and_names_unknown_fields():
    from dataclasses import dataclass
    from typing import ClassVar

    from smoothviz.validated import Validated, documented

    @dataclass(frozen=True)
    class Toy(Validated):
        field_label: ClassVar[str] = "toy option {name!r}"
        sizes: tuple[int, ...] = documented("sizes to try", default=(1, 2))
        scale: float | None = documented("a scale (None: none)", default=None)

    toy = Toy(sizes=[3, 4], scale=2)
    assert toy.sizes == (3, 4) and hash(toy) == hash(Toy(sizes=(3, 4), scale=2))
    assert toy.to_dict() == {"sizes": [3, 4], "scale": 2}
    assert Toy.field_help() == {"sizes": "sizes to try", "scale": "a scale (None: none)"}
    with pytest.raises(ConfigError, match=r"toy option 'sizes' must be list\[int\], got \[True\]"):
        Toy(sizes=[True])
    with pytest.raises(ConfigError, match=r"'scale' must be float or None, got 'x' \(str\)"):
        Toy(scale="x")
    with pytest.raises(
        ConfigError, match=r"unknown Toy field\(s\) \['size'\]; allowed: \['sizes', 'scale'\]"
    ):
        Toy.from_dict({"size": 1})
