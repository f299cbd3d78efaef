"""A report's plan: presets applied, command-line values parsed, every grid point validated.

:func:`plan` turns a preset, ``-p`` overrides and ``--grid`` values into :class:`GridPoint` objects
before any work: each point's notebooks carry the parameters papermill will inject *and* the
validated parameter object (:mod:`smoothviz.notebook_params`) they parse into, so nothing later
parses them again. A wrong name or value raises :class:`~smoothviz.config.ConfigError` naming it.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from smoothviz import data
from smoothviz.config import ConfigError, TrainConfig
from smoothviz.notebook_params import NOTEBOOKS, NotebookParams
from smoothviz.presets import EMBEDDED_FALLBACK, PRESETS

STATUSES = ("pending", "running", "ok", "failed", "skipped")


# --------------------------------------------------------------------------- command-line values
def parse_value(text: str) -> Any:
    """A command-line value as a Python literal when it is one (``16``, ``0.5``, ``None``,
    ``[0.3, 0.5]``, ``true``), else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _name_value(item: str, option: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise ConfigError(f"{option} expects name=value, got {item!r}")
    return name, value


def parse_parameters(items: Sequence[str] | None) -> dict[str, Any]:
    """``["width=8", "epochs=2"]`` -> ``{"width": 8, "epochs": 2}``."""
    out: dict[str, Any] = {}
    for item in items or ():
        name, value = _name_value(item, "-p")
        out[name] = parse_value(value)
    return out


def parse_grid(items: Sequence[str] | None) -> dict[str, list[Any]]:
    """``["width=8,16"]`` -> ``{"width": [8, 16]}`` (commas inside brackets stay in one value)."""
    out: dict[str, list[Any]] = {}
    for item in items or ():
        name, value = _name_value(item, "--grid")
        values = [parse_value(v) for v in _split_top_level(value) if v.strip()]
        if not values:
            raise ConfigError(f"--grid {name}: no values given")
        if name in out:
            raise ConfigError(f"--grid {name} given twice")
        out[name] = values
    return out


def known_parameters() -> dict[str, list[str]]:
    """Every notebook parameter name and the notebooks that take it."""
    names: dict[str, list[str]] = {}
    for nb, cls in NOTEBOOKS.items():
        for name in cls.field_names():
            names.setdefault(name, []).append(nb)
    return names


# --------------------------------------------------------------------------- the plan's pieces
@dataclass
class NotebookRun:
    """One notebook of one grid point, and what became of it.

    ``parameters`` are what papermill injects (the values given, not the defaults); ``config`` is
    the validated parameter object they make, with every default filled in.
    """

    name: str
    title: str
    parameters: dict[str, Any]
    config: NotebookParams
    status: str = "pending"
    seconds: float | None = None
    error: str | None = None
    ipynb: str | None = None  # paths relative to the run folder
    html: str | None = None
    figure: str | None = None  # the notebook's last figure as a PNG, shown on the landing page

    def record(self) -> dict[str, Any]:
        """What ``report.json`` says of the notebook (every field but ``config``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "config"}


@dataclass
class GridPoint:
    """One set of parameters and its notebooks."""

    label: str
    folder: str
    parameters: dict[str, Any]
    notebooks: list[NotebookRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said on the landing page (data fallback...)

    @property
    def status(self) -> str:
        states = {nb.status for nb in self.notebooks}
        for s in ("failed", "running", "pending"):
            if s in states:
                return s
        return "ok"

    def training_configs(self) -> list[TrainConfig]:
        """The distinct trainings its notebooks train: the baseline and the smooth model at every
        seed of ``seeds`` (every notebook trains the same ones)."""
        configs: list[TrainConfig] = []
        for nb in self.notebooks:
            for cfg in nb.config.all_training_configs():
                if cfg not in configs:
                    configs.append(cfg)
        return configs

    def record(self) -> dict[str, Any]:
        """What ``report.json`` says of the point."""
        return {
            "label": self.label,
            "folder": self.folder,
            "status": self.status,
            "parameters": self.parameters,
            "notes": self.notes,
            "notebooks": [nb.record() for nb in self.notebooks],
        }


def _coerce_list(cls: type[NotebookParams], name: str, value: Any) -> Any:
    """A bare string for a list-typed parameter becomes a list (``svd,prune_magnitude``)."""
    hint = str(cls.field_types()[name])
    if isinstance(value, str) and hint.startswith("tuple"):
        return [parse_value(v) for v in value.split(",") if v.strip()]
    return value


def _slug(values: Mapping[str, Any]) -> str:
    text = "_".join(f"{k}-{v}" for k, v in values.items()) or "defaults"
    return re.sub(r"[^A-Za-z0-9._-]+", "", text.replace(" ", ""))[:80] or "point"


# --------------------------------------------------------------------------- planning
def resolve_preset(
    preset: str, named: set[str] | frozenset[str] = frozenset()
) -> tuple[dict, list]:
    """A preset's values, with the embedded-data fallback applied when it is needed.

    When the preset (or the notebooks' default) asks for the full Fashion-MNIST, the user did not
    name ``dataset`` (``named``: the parameter names given with -p/--grid), and the full set is not
    installed, the values of :data:`~smoothviz.presets.EMBEDDED_FALLBACK` replace the preset's.
    Returns the values and the notes to show on the landing page.
    """
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    values = dict(PRESETS[preset])
    dataset = values.get("dataset", NotebookParams.default("dataset"))
    if "dataset" in named or dataset != "fashion-mnist" or data.fashion_mnist_available():
        return values, []
    values.update(EMBEDDED_FALLBACK)
    note = (
        "The full Fashion-MNIST is not installed (Debian package dataset-fashion-mnist, which "
        "scripts/setup.sh installs when run as root, or $SMOOTHVIZ_FASHION_MNIST), so this run "
        "trained and tested on the embedded subset (10,000 training, 2,000 test images): "
        "accuracies are lower than the full set gives."
    )
    return values, [note]


def plan(
    preset: str = "default",
    parameters: Mapping[str, Any] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    notebooks: Sequence[str] | None = None,
) -> list[GridPoint]:
    """Validate everything and lay out the grid points; nothing runs.

    Raises
    ------
    ConfigError
        For an unknown preset, a parameter no notebook takes, a name given twice, or a value one of
        the notebooks' config dataclasses rejects (the message names the parameter).
    """
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    parameters = dict(parameters or {})
    grid = {k: list(v) for k, v in (grid or {}).items()}
    names = list(notebooks) if notebooks is not None else list(NOTEBOOKS)
    unknown_nb = [n for n in names if n not in NOTEBOOKS]
    if unknown_nb:
        raise ConfigError(f"notebooks {unknown_nb} are not bundled; allowed: {list(NOTEBOOKS)}")
    known = {p for n in names for p in NOTEBOOKS[n].field_names()}
    for source, given in (("-p", parameters), ("--grid", grid)):
        bad = sorted(set(given) - known)
        if bad:
            raise ConfigError(
                f"unknown parameter(s) {bad} ({source}); the notebooks take: {sorted(known)}"
            )
    both = sorted(set(parameters) & set(grid))
    if both:
        raise ConfigError(f"parameter(s) {both} given both with -p and --grid")
    preset_values, notes = resolve_preset(preset, named=set(parameters) | set(grid))
    points = []
    combos = list(itertools.product(*grid.values())) if grid else [()]
    for i, combo in enumerate(combos):
        point_values = dict(zip(grid, combo))
        values = {**preset_values, **parameters, **point_values}
        point = GridPoint(
            label=", ".join(f"{k}={v!r}" for k, v in point_values.items()) or "(no grid)",
            folder=f"{i:02d}-{_slug(point_values)}",
            parameters={},
            notes=list(notes),
        )
        for name in names:
            cls = NOTEBOOKS[name]
            own = {k: _coerce_list(cls, k, v) for k, v in values.items() if k in cls.field_names()}
            try:
                config = cls.from_dict(own)  # raises ConfigError naming the parameter
            except TypeError as exc:  # defensive: anything the dataclass itself rejects
                raise ConfigError(f"{name}: {exc}") from exc
            if own.get("seed") is not None:  # deprecated: the notebooks get what it means
                own = {k: v for k, v in own.items() if k != "seed"} | {"seeds": list(config.seeds)}
            point.parameters.update(config.to_dict())
            point.notebooks.append(NotebookRun(name, cls.title, own, config))
        points.append(point)
    return points
