"""Scalar argument checks shared by the whole package: one wording for every "must be" error.

Each check returns the value (converted to a plain ``int``/``float``) or raises with a message that
names the parameter, the allowed values and what was given. ``bool`` is never accepted as a number
(``True`` is an ``int`` to Python, never what a user meant by a rank or a size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_INTS = (int, np.integer)
_NUMBERS = (int, float, np.integer, np.floating)


def is_int(value: object) -> bool:
    """True for an int (NumPy ints included), False for a bool or anything else."""
    return isinstance(value, _INTS) and not isinstance(value, (bool, np.bool_))


def is_number(value: object) -> bool:
    """True for an int or a float (NumPy scalars included), False for a bool or anything else."""
    return isinstance(value, _NUMBERS) and not isinstance(value, (bool, np.bool_))


def _range_words(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def check_int(
    name: str,
    value: object,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
    error: type[Exception] = ValueError,
) -> int | None:
    """``value`` as an int in ``[low, high]`` (either bound optional), else ``error`` naming ``name``.

    The message reads e.g. ``"batch_size must be an int >= 1, got 0"``.
    """
    if allow_none and value is None:
        return None
    ok = is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        words = " ".join(x for x in ("an int", _range_words(low, high, False, False)) if x)
        prefix = "None or " if allow_none else ""
        raise error(f"{name} must be {prefix}{words}, got {value!r}")
    return int(value)


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    error: type[Exception] = ValueError,
) -> float | None:
    """``value`` as a float within the given bounds, else ``error`` naming ``name``.

    Bounds are closed unless ``low_open``/``high_open``; the message reads e.g.
    ``"energy must be a number in (0, 1], got 1.5"``.
    """
    if allow_none and value is None:
        return None
    ok = is_number(value)
    if ok:
        v = float(value)
        if low is not None:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
    if not ok:
        words = " ".join(x for x in ("a number", _range_words(low, high, low_open, high_open)) if x)
        prefix = "None or " if allow_none else ""
        raise error(f"{name} must be {prefix}{words}, got {value!r}")
    return float(value)


def check_choice(
    name: str, value: object, allowed: Sequence[Any], *, error: type[Exception] = ValueError
) -> Any:
    """``value`` if it is one of ``allowed``, else ``error`` listing them."""
    if isinstance(value, (list, dict, set)) or value not in allowed:
        raise error(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value
