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
