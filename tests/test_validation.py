"""The shared scalar checks: accepted values come back converted, rejected ones name the parameter."""

import numpy as np
import pytest

from smoothviz._validation import check_choice, check_int, check_number, is_int, is_number


def test_ints_and_numbers_accept_numpy_scalars_and_refuse_bools():
    assert is_int(3) and is_int(np.int64(3)) and not is_int(True) and not is_int(3.0)
    assert is_number(0.5) and is_number(np.float32(0.5)) and not is_number(np.bool_(True))
    assert check_int("rank", np.int64(4), low=1, high=8) == 4
    assert type(check_int("rank", np.int64(4), low=1)) is int
    assert check_number("energy", 1, low=0, high=1, low_open=True) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({"low": 1}, 0, "batch_size must be an int >= 1, got 0"),
        ({"low": 1}, True, "batch_size must be an int >= 1, got True"),
        ({"low": 1, "high": 8}, 9, r"batch_size must be an int in \[1, 8\], got 9"),
        ({"low": 1, "allow_none": True}, "2", "batch_size must be None or an int >= 1, got '2'"),
    ],
)
def test_check_int_messages(kwargs, value, message):
    with pytest.raises(ValueError, match=message):
        check_int("batch_size", value, **kwargs)


def test_check_number_bounds_and_error_class():
    with pytest.raises(ValueError, match=r"energy must be a number in \(0, 1\], got 0"):
        check_number("energy", 0, low=0, high=1, low_open=True)
    with pytest.raises(TypeError, match=r"x must be a number in \[0, 1\), got 1.0"):
        check_number("x", 1.0, low=0, high=1, high_open=True, error=TypeError)
    assert check_number("cache_mb", None, low=0, allow_none=True) is None


def test_check_choice_lists_the_allowed_values():
    assert check_choice("variant", "corrected", ("corrected", "one_shot")) == "corrected"
    with pytest.raises(ValueError, match=r"variant must be one of \['a', 'b'\], got 'c'"):
        check_choice("variant", "c", ("a", "b"))
    with pytest.raises(ValueError, match="got \\['a'\\]"):
        check_choice("variant", ["a"], ("a", "b"))
