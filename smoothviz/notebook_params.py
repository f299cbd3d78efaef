"""Validated parameters of the notebooks in ``notebooks/``: one frozen dataclass per notebook.

Each notebook has a ``parameters`` cell of literals (papermill injects overrides after it) and, next,
one cell ``params = <Class>.from_notebook(globals())``. papermill only *warns* about an unknown
parameter and injects it anyway, so :meth:`NotebookParams.from_notebook` collects every literal
variable the parameter cells defined and rejects names that are not fields, and values of the wrong
type, with a :class:`~smoothviz.config.ConfigError` naming the parameter.

The field list, defaults (from :mod:`smoothviz.presets`) and help texts here are the single source
of truth: ``scripts/make_notebooks.py`` writes the notebooks' parameter cells from them,
``smoothviz.report`` checks command-line parameters against them before any work, and a test checks
that ``papermill.inspect_notebook`` sees exactly these names. The classes hold parameters and what
follows from them (the trainings to compare, the data to load); figures and file reads are the
notebooks' calls into :mod:`smoothviz.analysis` and :mod:`smoothviz.plots`.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Self, Union, get_args, get_origin

from smoothviz._validation import is_number
from smoothviz.compress import METHODS
from smoothviz.config import ConfigError, TrainConfig
from smoothviz.data import FOLDER_PREFIX
from smoothviz.presets import DEFAULT_METHODS, DEFAULT_REDUCTIONS, MAIN_JOB
from smoothviz.validated import Validated, documented

__all__ = [
    "DEFAULT_METHODS",
    "NOTEBOOKS",
    "SLIDER_MAX",
    "ExploreParams",
    "NotebookParams",
    "SmoothnessParams",
    "SpectraParams",
    "TradeoffParams",
    "TrainParams",
    "check_slider_fraction",
    "notebook_annotation",
    "notebook_path",
    "parameters_source",
]

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# Names IPython puts into a kernel's namespace; never notebook parameters.
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})
# The explorers' sliders end here: an initial value beyond it could not be shown.
SLIDER_MAX = 0.95


def _help(text: str, **kwargs: Any) -> Any:
    if "=" in text or "#" in text:  # papermill's parameter parser would split the line there
        raise AssertionError(f"help text may not contain '=' or '#': {text!r}")
    return documented(text, **kwargs)


def notebook_annotation(annotation: Any) -> str:
    """The annotation written in a notebook's parameters cell (evaluable, and papermill-parsable)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return f'"Optional[{notebook_annotation(inner[0])}]"'
    if origin is tuple:
        return f"list[{get_args(annotation)[0].__name__}]"
    if origin is dict:
        key, item = get_args(annotation)
        return f"dict[{key.__name__}, {item.__name__}]"
    return annotation.__name__


def _is_literal(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_literal(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_literal(v) for k, v in value.items())
    return False


def _check_fraction(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if not low <= value < high:
        raise ConfigError(f"notebook parameter {name!r} must be in [{low}, {high}), got {value!r}")


def check_slider_fraction(name: str, value: object) -> None:
    """Raise ConfigError (a ValueError) unless ``value`` is a number an explorer's slider can show."""
    if not is_number(value) or not 0 <= value <= SLIDER_MAX:
        raise ConfigError(
            f"{name} must be a number in [0, {SLIDER_MAX}] (the slider's range), got {value!r}"
        )


@dataclass(frozen=True)
class NotebookParams(Validated):
    """Parameters shared by every notebook: the two trainings compared (baseline and smooth).

    The baseline is trained without any penalty; the smooth model with the ``first_order``,
    ``second_order`` and ``nuclear`` weights. Both are cached by their config, so every notebook
    asking for the same trainings gets them instantly after the first.
    """

    notebook: ClassVar[str] = ""
    title: ClassVar[str] = ""
    field_label: ClassVar[str] = "notebook parameter {name!r}"

    # The main job's defaults (the report's ``default`` preset): smoothviz.presets.MAIN_JOB says
    # which measurement chose each.
    dataset: str = _help(
        "fashion-mnist-mini | fashion-mnist | cifar10 | folder:PATH (train/ and test/ inside)",
        default=MAIN_JOB["dataset"],
    )
    model: str = _help("cnn | resnet18 | mlp | torchvision:<arch>", default=MAIN_JOB["model"])
    width: int | None = _help(
        "base width of the model (None: the model's default)", default=MAIN_JOB["width"]
    )
    epochs: int = _help("training epochs of each model", default=MAIN_JOB["epochs"])
    train_subset: int | None = _help(
        "train on this many images (None: all)", default=MAIN_JOB["train_subset"]
    )
    eval_subset: int | None = _help("evaluate on this many test images (None: all)", default=None)
    first_order: float = _help(
        "smooth training: first-order smoothness weight", default=MAIN_JOB["first_order"]
    )
    second_order: float = _help("smooth training: second-order smoothness weight", default=0.0)
    nuclear: float = _help("smooth training: nuclear-norm weight", default=0.0)
    seeds: tuple[int, ...] = _help(
        "seeds of the trainings (initialisation and data order), each trained twice (baseline "
        "and smooth); the first also draws the test subset",
        default=(0,),
    )
    seed: int | None = _help(
        "deprecated (one release): seed N means seeds [N]; use seeds", default=None
    )
    device: str = _help("auto | cpu | cuda | mps | cuda:N", default="auto")
    checkpoints: dict[str, str] | None = _help(
        "your own trained models instead of training: state_dict files of model for baseline "
        "and smooth, as a dict name to path (None: train both)",
        default=None,
    )

    def validate(self) -> None:
        """The checks every notebook shares; subclasses call it first, then check their own."""
        self._map_seed()
        self._absolute_paths()
        bad = [s for s in self.seeds if s < 0]
        if not self.seeds or bad:
            raise ConfigError(
                "notebook parameter 'seeds' must be a non-empty list of ints >= 0, got "
                f"{list(self.seeds)!r}"
            )
        twice = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if twice:
            raise ConfigError(
                f"notebook parameter 'seeds' lists seed(s) {twice} more than once "
                f"({list(self.seeds)!r}); give each seed once"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"notebook parameter {f.name!r} must be finite, got {value!r}")
        if self.eval_subset is not None and self.eval_subset < 1:
            raise ConfigError(
                f"notebook parameter 'eval_subset' must be None or >= 1, got {self.eval_subset!r}"
            )
        if self.first_order + self.second_order + self.nuclear <= 0:
            raise ConfigError(
                "notebook parameters 'first_order', 'second_order', 'nuclear': at least "
                "one must be > 0, or the smooth training equals the baseline"
            )
        self.training_configs()  # TrainConfig's validation names any bad training field
        if self.checkpoints is not None:
            self._check_checkpoint_files()

    def _absolute_paths(self) -> None:
        """Paths made absolute (papermill runs each notebook in its own folder), ``~`` expanded."""
        if self.dataset.startswith(FOLDER_PREFIX) and self.dataset[len(FOLDER_PREFIX) :].strip():
            from smoothviz.image_folder import folder_path

            object.__setattr__(self, "dataset", FOLDER_PREFIX + str(folder_path(self.dataset)))
        if self.checkpoints is not None:
            absolute = {k: str(Path(v).expanduser().resolve()) for k, v in self.checkpoints.items()}
            object.__setattr__(self, "checkpoints", absolute)

    def _check_checkpoint_files(self) -> None:
        """The names are baseline and smooth, the files exist, one seed (a checkpoint is one
        model). The files' content is checked once per report by :meth:`check_checkpoints`."""
        from smoothviz.checkpoints import check_checkpoint_names

        check_checkpoint_names(self.checkpoints, "notebook parameter 'checkpoints'")
        for name, path in self.checkpoints.items():
            if not Path(path).is_file():
                raise ConfigError(
                    f"notebook parameter 'checkpoints': {name!r}: no file at {path!r}"
                )
        if len(self.seeds) > 1:
            raise ConfigError(
                f"notebook parameter 'seeds' is {list(self.seeds)!r}, but 'checkpoints' gives one "
                "model per name: give one seed (it draws the test subset and the calibration "
                "images)"
            )

    def _map_seed(self) -> None:
        """The deprecated ``seed`` N becomes ``seeds`` [N] (and ``seed`` None), with a warning."""
        if self.seed is None:
            return
        if self.seeds not in ((0,), (self.seed,)):
            raise ConfigError(
                f"notebook parameters 'seed' ({self.seed!r}, deprecated) and 'seeds' "
                f"({list(self.seeds)!r}) disagree; give only seeds"
            )
        warnings.warn(
            f"notebook parameter 'seed' is deprecated and will be removed in the next release; "
            f"seed={self.seed!r} is taken as seeds=[{self.seed!r}] (use seeds, or --seeds N)",
            DeprecationWarning,
            stacklevel=2,
        )
        object.__setattr__(self, "seeds", (self.seed,))
        object.__setattr__(self, "seed", None)

    # ----------------------------------------------------------------- construction
    @classmethod
    def unknown_words(cls, unknown: list[str]) -> str:
        return f"unknown notebook parameter(s) {unknown} for {cls.notebook or cls.__name__}"

    @classmethod
    def from_notebook(cls, namespace: Mapping[str, Any]) -> Self:
        """Validate the parameters a notebook's parameter cells defined (pass ``globals()``).

        Every public variable holding a literal (number, string, bool, None, list) is taken as a
        parameter, so a name papermill injected that is not a field is reported, not ignored.
        """
        values = {
            name: value
            for name, value in namespace.items()
            if not name.startswith("_") and name not in _IPYTHON_NAMES and _is_literal(value)
        }
        return cls.from_dict(values)

    # ----------------------------------------------------------------- what the notebooks use
    def training_configs(self, seed: int | None = None) -> dict[str, TrainConfig]:
        """The two trainings compared at ``seed`` (default: the first of ``seeds``):
        ``{"baseline": ..., "smooth": ...}``."""
        common = dict(
            dataset=self.dataset,
            model=self.model,
            width=self.width,
            epochs=self.epochs,
            train_subset=self.train_subset,
            seed=self.seeds[0] if seed is None else seed,
            device=self.device,
        )
        return {
            "baseline": TrainConfig(**common),
            "smooth": TrainConfig(
                **common,
                first_order=self.first_order,
                second_order=self.second_order,
                nuclear=self.nuclear,
            ),
        }

    def all_training_configs(self) -> list[TrainConfig]:
        """Every training of every seed (what a cluster can train side by side); none when
        ``checkpoints`` gives the models."""
        if self.checkpoints is not None:
            return []
        return [cfg for s in self.seeds for cfg in self.training_configs(s).values()]

    def load_models(self, device: str | None = None) -> dict:
        """The models of ``checkpoints``, built for ``model``/``width`` and the dataset's
        channels, classes and image size: ``{"baseline": model, "smooth": model}`` in eval mode on
        ``device`` (default: the ``device`` parameter).

        Raises ConfigError naming the checkpoint when a file is refused or does not fit
        (:mod:`smoothviz.checkpoints`).
        """
        from smoothviz.checkpoints import CHECKPOINT_NAMES, load_checkpoint
        from smoothviz.data import dataset_shape
        from smoothviz.training import resolve_device

        if self.checkpoints is None:
            raise ConfigError("notebook parameter 'checkpoints' is None: there is nothing to load")
        in_channels, num_classes, image_size = dataset_shape(self.dataset)
        target = resolve_device(device or self.device)
        return {
            name: load_checkpoint(
                self.checkpoints[name],
                self.model,
                in_channels,
                num_classes,
                width=self.width,
                image_size=image_size,
                name=name,
            ).to(target)
            for name in CHECKPOINT_NAMES
        }

    def check_checkpoints(self) -> None:
        """Load every checkpoint once on the CPU (what the report does before any notebook runs,
        so a file that does not fit is named before any work)."""
        self.load_models(device="cpu")

    def _checkpoint_runs(self) -> dict:
        """``checkpoints`` as ``{name: TrainedRun}`` (:func:`smoothviz.checkpoints.checkpoint_runs`
        on :meth:`load_data`'s test images)."""
        from smoothviz.checkpoints import checkpoint_runs

        return checkpoint_runs(
            self.load_models(), self.load_data(), self.training_configs(), self.checkpoints
        )

    def train_runs(self, progress: bool | None = None) -> dict:
        """Train (or load from the cache) both trainings of the first seed: ``{name: TrainedRun}``.

        With ``checkpoints``, nothing is trained: the runs hold the given models
        (:meth:`load_models`), each history one row with its test accuracy.
        """
        from smoothviz.training import train

        if self.checkpoints is not None:
            return self._checkpoint_runs()
        return {
            name: train(cfg, progress=progress) for name, cfg in self.training_configs().items()
        }

    def train_seed_runs(self, progress: bool | None = None) -> dict[int, dict]:
        """Train (or load) both trainings at every seed: ``{seed: {name: TrainedRun}}`` (with
        ``checkpoints``: the given models at the one seed, as :meth:`train_runs`)."""
        from smoothviz.training import train

        if self.checkpoints is not None:
            return {self.seeds[0]: self._checkpoint_runs()}
        return {
            s: {
                name: train(cfg, progress=progress)
                for name, cfg in self.training_configs(s).items()
            }
            for s in self.seeds
        }

    def seed_models(self, progress: bool | None = None) -> dict[int, dict]:
        """Both trained models at every seed (trained or loaded): ``{seed: {"baseline": model,
        "smooth": model}}``, what :func:`smoothviz.sweep.sweep_seeds` takes (with
        ``checkpoints``: the given models at the one seed)."""
        if self.checkpoints is not None:
            return {self.seeds[0]: self.load_models()}
        return {
            s: {name: run.model for name, run in runs.items()}
            for s, runs in self.train_seed_runs(progress=progress).items()
        }

    def architecture(self, data) -> dict[str, Any]:
        """The trained models' :func:`~smoothviz.models.build_model` arguments on ``data``: what
        ``save_compressed(..., arch=...)`` records so that ``load_compressed`` rebuilds a saved
        model without the uncompressed one."""
        return {
            "name": self.model,
            "in_channels": data.in_channels,
            "num_classes": data.num_classes,
            "width": self.width,
            "image_size": data.image_size,
        }

    def load_data(self):
        """The dataset on the CPU, test split cut to ``eval_subset`` (seeded by the first of
        ``seeds``) when set: every seed is evaluated on the same test images."""
        from smoothviz.data import load_dataset

        data = load_dataset(self.dataset)
        if self.eval_subset is not None and self.eval_subset < len(data.y_test):
            data = data.subset(n_test=self.eval_subset, seed=self.seeds[0])
        return data


@dataclass(frozen=True)
class TrainParams(NotebookParams):
    """Notebook 1: train the baseline and the smooth model, and show their training curves."""

    notebook: ClassVar[str] = "01_train"
    title: ClassVar[str] = "Training baseline and smooth models"


@dataclass(frozen=True)
class SmoothnessParams(NotebookParams):
    """Notebook 2: weight heatmaps of chosen layers, smooth vs baseline, and a smoothness table."""

    notebook: ClassVar[str] = "02_smoothness"
    title: ClassVar[str] = "Weight smoothness"

    show_layers: tuple[str, ...] | None = _help(
        "layers to draw (None: the first max_layers of the default selection)", default=None
    )
    max_layers: int = _help("how many layers to draw when show_layers is None", default=3)

    def layers_to_draw(self, model) -> list[str]:
        """``show_layers``, or the first ``max_layers`` of the default layer selection."""
        from smoothviz.layers import select_layers

        if self.show_layers is not None:
            return [name for name, _ in select_layers(model, list(self.show_layers))]
        return [name for name, _ in select_layers(model)][: self.max_layers]

    def validate(self) -> None:
        super().validate()
        if self.max_layers < 1:
            raise ConfigError(
                f"notebook parameter 'max_layers' must be >= 1, got {self.max_layers!r}"
            )
        if self.show_layers is not None and not self.show_layers:
            raise ConfigError("notebook parameter 'show_layers' must be None or a non-empty list")


@dataclass(frozen=True)
class SpectraParams(NotebookParams):
    """Notebook 3: singular-value spectra and energy curves per layer."""

    notebook: ClassVar[str] = "03_spectra"
    title: ClassVar[str] = "Singular-value spectra"

    param_reduction: float = _help(
        "global SVD parameter reduction whose per-layer ranks are marked", default=0.5
    )
    spectra_layers: int | None = _help(
        "draw the spectra of this many layers, those the SVD budget cuts most (None: every layer)",
        default=6,
    )

    def validate(self) -> None:
        super().validate()
        _check_fraction("param_reduction", self.param_reduction)
        if self.spectra_layers is not None and self.spectra_layers < 1:
            raise ConfigError(
                "notebook parameter 'spectra_layers' must be None or >= 1, "
                f"got {self.spectra_layers!r}"
            )

    def layers_to_draw(self, models, ranks) -> list[str]:
        """The ``spectra_layers`` layers where ``ranks`` (a :func:`~smoothviz.analysis.chosen_ranks`
        frame of ``models``) remove the most parameters, in the network's order; every layer when
        it is None."""
        from smoothviz.analysis import layers_cut_most

        return layers_cut_most(models, ranks, self.spectra_layers)


@dataclass(frozen=True)
class TradeoffParams(NotebookParams):
    """Notebook 4: accuracy vs compression for every method and training; params/FLOPs/latency."""

    notebook: ClassVar[str] = "04_tradeoff"
    title: ClassVar[str] = "Accuracy vs compression"

    # The defaults fit the main job's 5 minutes (smoothviz.presets says how they were measured).
    methods: tuple[str, ...] | None = _help(
        "compression methods (None: every method in smoothviz.compress.METHODS)",
        default=DEFAULT_METHODS,
    )
    reductions: tuple[float, ...] = _help(
        "target parameter reductions, each in [0, 1)", default=DEFAULT_REDUCTIONS
    )
    # Off by default: in the main job it doubled the test-set passes (about 50 s of its 300 s,
    # benchmarks/results/main_job_profile.md); the full and cifar10 presets turn it on.
    bn_reestimate: bool = _help(
        "also report accuracy after BatchNorm re-estimation (its own columns)", default=False
    )
    show_lambda_sweep: bool = _help(
        "also draw the committed regulariser-weight sweep (benchmarks/results/lambda_sweep.csv)",
        default=False,
    )
    frontier_widths: tuple[int, ...] | None = _help(
        "train the baseline at these narrower widths too, at every seed: the trained-small "
        "frontier (None: show the committed measurement for this recipe if there is one)",
        default=None,
    )

    def validate(self) -> None:
        super().validate()
        if self.frontier_widths is not None:
            if not self.frontier_widths or any(w < 1 for w in self.frontier_widths):
                raise ConfigError(
                    "notebook parameter 'frontier_widths' must be None or a non-empty list of "
                    f"ints >= 1, got {list(self.frontier_widths)!r}"
                )
            if self.model.startswith("torchvision:"):
                raise ConfigError(
                    "notebook parameter 'frontier_widths' needs a model with a width (cnn, mlp, "
                    f"resnet18), got model={self.model!r}; set it to None"
                )
        if self.methods is not None:
            bad = [m for m in self.methods if m not in METHODS]
            if bad or not self.methods:
                raise ConfigError(
                    f"notebook parameter 'methods' must be a non-empty list from {list(METHODS)} "
                    f"(or None: all of them), got {list(self.methods)!r}"
                )
        if not self.reductions:
            raise ConfigError("notebook parameter 'reductions' must be a non-empty list")
        for r in self.reductions:
            _check_fraction("reductions", r)

    def all_training_configs(self) -> list[TrainConfig]:
        """Every training of every seed and, with ``frontier_widths``, the baseline's recipe at
        each of those widths and seeds (the trained-small frontier), so that a report on a
        cluster trains them side by side before the notebook loads them from the cache."""
        configs = super().all_training_configs()
        if self.frontier_widths is None:
            return configs
        from smoothviz.frontier import frontier_configs

        frontier = frontier_configs(
            self.training_configs()["baseline"], self.frontier_widths, self.seeds
        )
        return configs + [c for c in frontier if c not in configs]

    def sweep_options(self) -> dict[str, Any]:
        """The keyword arguments of the notebook's sweep (the benchmarks that measure the main
        job's sweep use the same): BN re-estimation on 1,024 training images, 5 timed latency
        runs, per-image correctness kept (the one-seed interval needs it), a progress bar in a
        live notebook only (:func:`smoothviz.progress.progress_enabled`)."""
        return {
            "bn_reestimate": self.bn_reestimate,
            "bn_images": 1024,
            "latency_repeats": 5,
            "per_image": True,
            "progress": None,
        }

    @property
    def method_list(self) -> list[str]:
        """The methods to run: ``methods``, or every method smoothviz has when it is None."""
        return list(METHODS) if self.methods is None else list(self.methods)


@dataclass(frozen=True)
class ExploreParams(NotebookParams):
    """Notebook 5: interactive rank and pruning explorers, plus a static figure of the defaults."""

    notebook: ClassVar[str] = "05_explore"
    title: ClassVar[str] = "Interactive exploration"

    param_reduction: float = _help("initial global parameter reduction of the SVD", default=0.5)
    prune_ratio: float = _help("initial pruning ratio", default=0.5)
    drag_subset: int = _help("test images evaluated while a slider moves", default=500)
    save_dir: str = _help(
        "folder the Save buttons and the save cell write into (relative: the notebook's folder, "
        "in a report the grid point's folder)",
        default="compressed_models",
    )

    def validate(self) -> None:
        super().validate()
        check_slider_fraction("param_reduction", self.param_reduction)
        check_slider_fraction("prune_ratio", self.prune_ratio)
        if self.drag_subset < 1:
            raise ConfigError(
                f"notebook parameter 'drag_subset' must be >= 1, got {self.drag_subset!r}"
            )
        if not self.save_dir.strip():
            raise ConfigError("notebook parameter 'save_dir' must be a non-empty folder path")


NOTEBOOKS: dict[str, type[NotebookParams]] = {
    cls.notebook: cls
    for cls in (TrainParams, SmoothnessParams, SpectraParams, TradeoffParams, ExploreParams)
}


def notebook_path(name: str) -> Path:
    """Path of a bundled notebook by name (``"01_train"``...)."""
    return NOTEBOOK_DIR / f"{name}.ipynb"


def parameters_source(cls: type[NotebookParams]) -> str:
    """The text of a notebook's ``parameters`` cell: annotated literals with a help comment each."""
    types_ = cls.field_types()
    helps = cls.field_help()
    lines = []
    for f in fields(cls):
        value = f.default
        if isinstance(value, tuple):
            value = list(value)
        lines.append(
            f"{f.name}: {notebook_annotation(types_[f.name])} = {value!r}  # {helps[f.name]}"
        )
    return "\n".join(lines)
