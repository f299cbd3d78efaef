"""Frozen dataclasses that check themselves: the base of every configuration in smoothviz.

:class:`Validated` is what :class:`~smoothviz.config.TrainConfig` and the notebook parameter classes
(:mod:`smoothviz.notebook_params`) have in common: each field's value is checked against its type
annotation when an instance is made (``bool`` is never an ``int``; a list given for a
``tuple[...]`` field is stored as a tuple, so instances stay hashable), then the class's own
:meth:`~Validated.validate` checks ranges and relations; :meth:`~Validated.from_dict` rejects unknown
names and lists the allowed ones; each field's help text lives in its metadata
(:func:`documented`), where the command line and the notebooks' parameter cells read it.

Every rejection is a :class:`ConfigError` whose message names the field, what is allowed and what
was given.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self, Union, get_args, get_origin, get_type_hints

from smoothviz.errors import ShortTraceback


class ConfigError(ShortTraceback, ValueError):
    """A configuration value is wrong; the message names the field and what is allowed.

    In a notebook it shows as a short paragraph, not a traceback (:class:`~smoothviz.errors.
    ShortTraceback`).
    """


def documented(help: str, **kwargs: Any) -> Any:
    """A dataclass field with its help text in ``metadata["help"]`` (``default=`` etc. as in
    :func:`dataclasses.field`)."""
    return field(metadata={"help": help}, **kwargs)


def fits(value: Any, annotation: Any) -> bool:
    """True when ``value`` is of the annotated type.

    Supported annotations: ``bool``, ``int``, ``float`` (an int is accepted), ``str``, ``None``,
    unions of these, ``tuple[T, ...]`` (a list or tuple whose items are ``T``) and
    ``dict[K, V]`` (a mapping whose keys are ``K`` and values ``V``). ``bool`` is not an ``int`` or
    a ``float`` here.
    """
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is tuple:
        item = get_args(annotation)[0]
        return isinstance(value, (tuple, list)) and all(fits(v, item) for v in value)
    if origin is dict:
        key, item = get_args(annotation)
        return isinstance(value, Mapping) and all(
            fits(k, key) and fits(v, item) for k, v in value.items()
        )
    raise TypeError(f"unsupported field annotation {annotation!r}")


def type_name(annotation: Any) -> str:
    """How a field's type reads in a message (``list[float]``, ``int or None``)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is tuple:
        return f"list[{type_name(get_args(annotation)[0])}]"
    if origin is dict:
        key, item = get_args(annotation)
        return f"dict[{type_name(key)}, {type_name(item)}]"
    return annotation.__name__


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


@dataclass(frozen=True)
class Validated:
    """Base of a frozen configuration dataclass: type-checked fields, ``from_dict``, help texts.

    Subclasses are ``@dataclass(frozen=True)`` classes whose fields are annotated with the types
    :func:`fits` supports; they override :meth:`validate` for ranges and relations between fields.
    """

    # How a message names a field: "{name}" -> "epochs must be ..." (str.format with name=).
    field_label: ClassVar[str] = "{name}"

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            if not fits(value, hints[f.name]):
                raise ConfigError(
                    f"{self.label(f.name)} must be {type_name(hints[f.name])}, "
                    f"got {value!r} ({type(value).__name__})"
                )
            if isinstance(value, list):  # store hashable tuples
                object.__setattr__(self, f.name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Checks beyond the types (ranges, choices, relations); overridden by subclasses."""

    # ----------------------------------------------------------------- fields
    @classmethod
    def label(cls, name: str) -> str:
        """How messages name field ``name``."""
        return cls.field_label.format(name=name)

    @classmethod
    def field_names(cls) -> list[str]:
        """The field names, in declaration order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """``{field name: help text}`` from each field's metadata."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """``{field name: type annotation}`` (evaluated)."""
        hints = _hints(cls)
        return {f.name: hints[f.name] for f in fields(cls)}

    @classmethod
    def default(cls, name: str) -> Any:
        """The default value of field ``name`` (a list-valued one as a tuple)."""
        for f in fields(cls):
            if f.name == name:
                return f.default
        raise ConfigError(f"{cls.unknown_words([name])}; allowed: {cls.field_names()}")

    @classmethod
    def unknown_words(cls, unknown: list[str]) -> str:
        """The start of the message for unknown names (``"unknown TrainConfig field(s) [...]"``)."""
        return f"unknown {cls.__name__} field(s) {unknown}"

    # ----------------------------------------------------------------- conversion
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Build from ``{name: value}`` (JSON, notebook parameters); unknown names are an error."""
        known = cls.field_names()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{cls.unknown_words(unknown)}; allowed: {known}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-ready values (tuples as lists), in declaration order."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)
