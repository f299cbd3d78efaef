"""The explorer base: models, measuring, readouts, the live figure, debounce and stepwise release.

:class:`Explorer` is what :class:`~smoothviz.explore.rank.RankExplorer` and
:class:`~smoothviz.explore.prune.PruneExplorer` share. A subclass says what a choice is (which
modules it replaces, how to install it into an :class:`~smoothviz.explore.incremental.
IncrementalEvaluator`, which artists of its figure change); this class turns every user move into
one measurement and keeps the readouts, the status line and the figure in step:

- **Debounce.** A move is measured at once on the drag subset, and the readout and the figure mark
  that number as an estimate with its 95 % binomial interval and say when the full test set
  follows; once the controls have been still for ``settle_seconds``, the full test set is measured
  (:meth:`Explorer.settle`).
- **Stepwise release.** That full measurement runs one batch per event-loop turn, so the next move
  is handled at once and abandons it; a long one shows its progress in the readout.
- **Errors where the user looks.** An exception in a callback goes to the status line.
- **Taking the choice away.** :meth:`Explorer.settings` (the choice as a dict),
  :meth:`Explorer.save` (the compressed model and its settings) and the Save button.
- **Progress.** The synchronous full measurements (the first one, :meth:`Explorer.summary`, ...)
  show a notebook progress bar in a live notebook (:mod:`smoothviz.progress`).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as W
import pandas as pd
from IPython.display import Image
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from torch import nn

from smoothviz._validation import check_int, check_number
from smoothviz.atomic import atomic_write_text
from smoothviz.compress.serialize import save_compressed
from smoothviz.data import ImageData
from smoothviz.errors import error_text
from smoothviz.explore.incremental import IncrementalEvaluator
from smoothviz.explore.live_figure import LiveFigure, fit_text
from smoothviz.explore.readout import (
    accuracy_html,
    measurement_title,
    seconds_text,
    size_html,
)
from smoothviz.measure import count_params
from smoothviz.progress import progress_bar

FIGURE_DPI = 90
PROGRESS_SECONDS = 0.5  # a full-set measurement this long shows its progress
TITLE_POINTS = 10.0  # the figure's title: its font size
SLIDER_STEP = 0.005  # reduction sliders: 0.5 % per key press, 190 steps over the range
SLIDER_FORMAT = ".1%"  # ... shown with one decimal, as settings() rounds them
DEFAULT_SAVE_DIR = "compressed_models"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop callbacks run on (ipykernel's), or None in plain Python."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return None
    return loop if loop.is_running() else None


class Explorer:
    """The shared part of the explorers: models, evaluators, readouts, status line, live figure,
    debounce and stepwise release.

    Not used on its own: a subclass builds its controls, observes them with :meth:`_changed`
    (one user move) and provides the hooks below (``compressed_model``, ``_swappable``,
    ``_install``, ``_draw_figure``, ``_refresh``, ``_artist_list``).

    Parameters
    ----------
    models
        A trained model, or ``{name: model}`` to switch between.
    data
        The dataset whose test split is measured.
    drag_subset
        Test images evaluated while a control moves.
    settle_seconds
        Time the controls must be still before the full test set is evaluated; ``None`` evaluates
        the full test set synchronously on every change.
    seed
        Seed of the drag subset.
    cache_mb
        Memory for cached activations per model, in MiB (0: none); deeper layers first.
    arch
        Keyword arguments of :func:`smoothviz.models.build_model` that build the models'
        architecture, recorded by :meth:`save` so that
        :func:`~smoothviz.compress.serialize.load_compressed` rebuilds a saved model on its own;
        ``None``: loading needs ``base=`` (the uncompressed model).
    save_dir
        Folder the Save button writes into (relative paths from the working directory: a
        notebook's own folder, and the grid point's folder in a batch report).
    progress
        Progress bars for the synchronous full measurements: ``None`` shows them in a live
        notebook only (:func:`smoothviz.progress.progress_enabled`).
    """

    _figsize: tuple[float, float] = (6.5, 3.0)  # inches; subclasses set their own
    _title_lines = 3  # lines laid out for the figure's title (the longest words wrapped)

    def __init__(
        self,
        models: nn.Module | Mapping[str, nn.Module],
        data: ImageData,
        *,
        drag_subset: int = 500,
        settle_seconds: float | None = 0.4,
        seed: int = 0,
        cache_mb: float = 512.0,
        arch: Mapping[str, Any] | None = None,
        save_dir: str | Path = DEFAULT_SAVE_DIR,
        progress: bool | None = None,
    ) -> None:
        if isinstance(models, nn.Module):
            models = {"model": models}
        if not isinstance(models, Mapping) or not models:
            raise TypeError("models must be an nn.Module or a non-empty mapping name -> nn.Module")
        bad = [k for k, m in models.items() if not isinstance(m, nn.Module)]
        if bad:
            raise TypeError(f"models: {bad} are not nn.Module instances")
        if not isinstance(data, ImageData):
            raise TypeError(f"data must be a smoothviz.data.ImageData, got {type(data).__name__}")
        drag_subset = check_int("drag_subset", drag_subset, low=1)
        settle_seconds = check_number("settle_seconds", settle_seconds, low=0, allow_none=True)
        self.models = dict(models)
        self.data = data
        self.settle_seconds = settle_seconds
        self.cache_mb = check_number("cache_mb", cache_mb, low=0)
        if arch is not None and not isinstance(arch, Mapping):
            raise TypeError(f"arch must be None or a dict of build_model arguments, got {arch!r}")
        if not isinstance(save_dir, (str, Path)):
            raise TypeError(f"save_dir must be a folder path, got {save_dir!r}")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be None, True or False, got {progress!r}")
        self.arch = None if arch is None else dict(arch)
        self.save_dir = Path(save_dir)
        self.progress = progress
        # Seconds per image of the last warm measurement of each kind ("full", "drag"): what the
        # readout's "the full test set follows in about N s" is estimated from.
        self._seconds_per_image: dict[str, float] = {}
        n_test = len(data.y_test)
        self._x_full, self._y_full = data.x_test, data.y_test
        # The drag subset; None when it would be the whole test split (then one evaluation does).
        self._drag = None
        if drag_subset < n_test:
            small = data.subset(n_test=drag_subset, seed=seed)
            self._drag = (small.x_test, small.y_test)
        self._evaluators: dict[str, IncrementalEvaluator] = {}
        self._live: tuple[Any, LiveFigure, Any] | None = None  # (structure key, figure, artists)
        self._timer: asyncio.TimerHandle | None = None
        self._release: tuple | None = None  # the full-set measurement under way, if any
        self._release_handle: asyncio.Handle | None = None
        self._syncing = False
        self.choice_error: str | None = None  # why the last choice could not be made, if it failed
        self.last: dict[str, Any] = {}  # the latest measurement (read by tests and the readouts)
        self.model_select = W.Dropdown(options=list(self.models), description="model")
        self.accuracy_label = W.HTML(value="test accuracy: …")
        self.params_label = W.HTML(value="parameters: …")
        self.status = W.HTML(value="")
        self.image = W.Image(format="png", layout=W.Layout(min_height="260px"))
        self.save_button = W.Button(
            description="Save",
            icon="save",
            tooltip="write the compressed model and its settings into the save folder",
        )
        self.saved_label = W.HTML(value="")
        self.save_button.on_click(self._save_clicked)
        # Stable hooks for styling and for the browser test.
        self.accuracy_label.add_class("smoothviz-accuracy")
        self.params_label.add_class("smoothviz-params")
        self.status.add_class("smoothviz-status")
        self.image.add_class("smoothviz-figure")
        self.save_button.add_class("smoothviz-save")
        self.saved_label.add_class("smoothviz-saved")

    # ------------------------------------------------------------------ to be provided by subclasses
    def compressed_model(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _swappable(self, name: str) -> list[str] | None:  # pragma: no cover - abstract
        """Modules of model ``name`` that a choice may replace (None: any leaf module)."""
        raise NotImplementedError

    def _install(self, evaluator: IncrementalEvaluator) -> int:  # pragma: no cover - abstract
        """Put the current choice into ``evaluator``; return the choice's parameter count."""
        raise NotImplementedError

    def _draw_figure(self, fig: Figure) -> Any:  # pragma: no cover - abstract
        """Draw the figure's fixed parts and its changing artists; return those artists."""
        raise NotImplementedError

    def _refresh(self, artists: Any) -> None:  # pragma: no cover - abstract
        """Set the changing artists to the current choice and measurement."""
        raise NotImplementedError

    def _figure_key(self) -> Any:
        """What the fixed parts of the figure depend on (a change redraws the whole figure)."""
        return self.model_select.value

    @staticmethod
    def _artist_list(artists: Any) -> list[Artist]:  # pragma: no cover - abstract
        """The changing artists, flat (what the live figure redraws)."""
        raise NotImplementedError

    def _flops(self) -> tuple[int, int, bool] | None:
        """FLOPs per image of the current choice and of the uncompressed model, and whether the
        choice holds zeroed weights that dense kernels still run (None: not counted)."""
        return None

    def _save_stem(self) -> str:
        """The file name (without suffix) the Save button writes the current choice under."""
        return self.model_select.value

    # ------------------------------------------------------------------ shared behaviour
    @property
    def model(self) -> nn.Module:
        """The uncompressed model currently selected."""
        return self.models[self.model_select.value]

    def evaluator(self) -> IncrementalEvaluator:
        """The incremental evaluator of the current model (built on first use)."""
        name = self.model_select.value
        if name not in self._evaluators:
            ev = IncrementalEvaluator(
                self.models[name], self._swappable(name), cache_mb=self.cache_mb
            )
            ev.add_inputs("full", self._x_full, self._y_full)
            if self._drag is not None:
                ev.add_inputs("drag", *self._drag)
            self._evaluators[name] = ev
        return self._evaluators[name]

    def measure(self, full: bool = True, *, progress: bool = False) -> dict[str, Any]:
        """Compress as the widgets say, then measure accuracy (full test set or drag subset).

        With ``progress=True`` a full-set measurement shows a progress bar where the explorer's
        ``progress`` says so (in a live notebook, by default).
        """
        self._cancel_release()
        warm = self.model_select.value in self._evaluators  # a first evaluation builds, slower
        steps, params, full = self._start_measure(full)
        start = time.monotonic()
        n = len(self._y_full) if full else len(self._drag[1])
        show = self.progress if progress and full else False
        with progress_bar(n, "measuring the test set", progress=show, unit="img") as bar:
            while True:
                try:
                    fraction = next(steps)
                except StopIteration as done:
                    metrics = done.value
                    break
                bar.update(round(fraction * n) - bar.n)
            bar.update(n - bar.n)  # the last batch yields nothing; a full bar closes cleanly
        result = self._record(metrics, params, full)
        if warm:
            self._seconds_per_image["full" if full else "drag"] = (time.monotonic() - start) / n
        return result

    def full_seconds(self) -> float | None:
        """About how long the full test set takes to measure now: from the last warm full
        measurement, else scaled up from the last drag measurement (None before either)."""
        per_image = self._seconds_per_image.get("full", self._seconds_per_image.get("drag"))
        return None if per_image is None else per_image * len(self._y_full)

    def _start_measure(self, full: bool):
        """Install the current choice; the evaluation as steps, the parameter count, fullness."""
        ev = self.evaluator()
        params = self._install(ev)
        full = full or self._drag is None
        return ev.evaluate_steps("full" if full else "drag"), params, full

    def _record(self, metrics: dict[str, float], params: int, full: bool) -> dict[str, Any]:
        total = count_params(self.model)
        result = {
            "test_acc": metrics["accuracy"],
            "test_loss": metrics["loss"],
            "n_test": metrics["n"],
            "full": full,
            "params": params,
            "total_params": total,
            "param_reduction": 1.0 - params / total,
        }
        flops = self._flops()
        if flops is not None:
            result.update(
                flops=flops[0],
                total_flops=flops[1],
                flop_reduction=1.0 - flops[0] / flops[1],
                sparse=flops[2],
            )
        self.last = result
        return result

    def figure(self) -> Figure:
        """The current choice as a new matplotlib Figure (e.g. to save it)."""
        fig = Figure(figsize=self._figsize, layout="constrained")
        self._refresh(self._draw_figure(fig))
        return fig

    def _figure_png(self) -> bytes:
        """The live figure at the current state, as PNG (only the changing artists redrawn)."""
        key = self._figure_key()
        if self._live is None or self._live[0] != key:  # laid out and rendered once per key
            fig = Figure(figsize=self._figsize, layout="constrained")
            artists = self._draw_figure(fig)
            self._refresh(artists)
            self._live = (key, LiveFigure(fig, self._artist_list(artists), dpi=FIGURE_DPI), artists)
        _, live, artists = self._live
        self._refresh(artists)
        return live.png()

    def _title(self, fig: Figure, text: str) -> str:
        """``text`` fitted to the room the figure's title was laid out with (never clipped)."""
        return fit_text(text, fig, fontsize=TITLE_POINTS, lines=self._title_lines)

    def _measurement_words(self) -> str:
        return measurement_title(self.last) if "error" not in self.last else "measuring…"

    def snapshot(self) -> Image:
        """The current figure as a PNG image: a static record that shows in any notebook output."""
        if not self.last.get("full") or "error" in self.last:
            self.update(full=True, progress=True)
        return Image(data=self._figure_png())

    def settings(self) -> dict[str, Any]:
        """The current choice as a dict (subclasses add their controls), reductions rounded to
        what the sliders show."""
        return {"model": self.model_select.value}

    def save(self, path: str | Path) -> Path:
        """Write the current choice's compressed model and, beside it, its settings.

        ``path`` (the state_dict) and its structure sidecar ``<stem>.json`` come from
        :func:`~smoothviz.compress.serialize.save_compressed` (with the explorer's ``arch`` and
        :meth:`settings` as metadata); ``<stem>.settings.json`` holds :meth:`settings` and the
        latest measurement (``"full": false`` marks a drag-subset estimate). Every file is
        written atomically. Load the model with
        :func:`~smoothviz.compress.serialize.load_compressed` (``base=`` the uncompressed model
        when the explorer has no ``arch``).

        Returns
        -------
        Path
            The state_dict path.
        """
        path = Path(path)
        settings = self.settings()
        model = self.compressed_model()
        pt = save_compressed(model, path, arch=self.arch, metadata=settings)
        record = {
            "model_file": pt.name,
            "settings": settings,
            "measurement": {k: v for k, v in self.last.items() if k != "error"},
        }
        atomic_write_text(pt.with_name(f"{pt.stem}.settings.json"), json.dumps(record, indent=1))
        return pt

    def _save_clicked(self, _button: Any = None) -> None:
        """The Save button: :meth:`save` into ``save_dir``; the written path is shown beside it."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", self._save_stem()).strip("_") or "choice"
        try:
            pt = self.save(self.save_dir / f"{stem}.pt")
        except Exception as exc:  # shown in the widget, where the user is looking
            self._fail_text(error_text(exc))
            return
        where = html.escape(str(pt.resolve()))
        self.saved_label.value = (
            f"saved <code>{where}</code> (structure: <code>{html.escape(pt.stem)}.json</code>, "
            f"settings: <code>{html.escape(pt.stem)}.settings.json</code>)"
        )

    def _readouts(self) -> W.VBox:
        """The accuracy and size readouts, full width below the controls."""
        return W.VBox([self.accuracy_label, self.params_label])

    def _save_row(self) -> W.HBox:
        return W.HBox([self.save_button, self.saved_label])

    def summary(self) -> pd.DataFrame:
        """One row: the current choice and its measurement on the full test set."""
        if not self.last.get("full") or "error" in self.last:
            self.update(full=True, progress=True)
        if "error" in self.last:
            raise RuntimeError(self.last["error"])
        if self.choice_error:
            raise RuntimeError(self.choice_error)
        return pd.DataFrame([{**self.settings(), **self.last}])

    def _show(self, result: dict[str, Any]) -> None:
        self.accuracy_label.value = accuracy_html(
            result, len(self._y_full), self.full_seconds(), self.settle_seconds
        )
        self.params_label.value = size_html(result)

    def _draw(self) -> None:
        self.image.value = self._figure_png()

    def _fail(self, exc: BaseException) -> None:
        text = error_text(exc)
        self._fail_text(text)
        self.last = {"error": text}

    def _choice_failed(self, exc: BaseException) -> None:
        """The current controls name no choice (e.g. a budget out of reach): say why, keep the
        last measurement; :meth:`summary` raises it until the choice is made by hand."""
        self.choice_error = error_text(exc)
        self._fail_text(self.choice_error)

    def _fail_text(self, text: str) -> None:
        self.status.value = (
            f"<pre style='color:#b00020;white-space:pre-wrap;margin:0'>{html.escape(text)}</pre>"
        )

    def update(self, full: bool = True, *, progress: bool = False) -> None:
        """Measure, refresh the readouts and the figure; errors go to the status line."""
        try:
            self._finish(self.measure(full=full, progress=progress))
        except Exception as exc:  # shown in the widget, where the user is looking
            self._fail(exc)

    def _finish(self, result: dict[str, Any]) -> None:
        self._draw()  # figure first: when the readout says "full test set", the figure agrees
        self._show(result)
        self.status.value = ""
        if self.choice_error:
            self._fail_text(self.choice_error)

    def _changed(self, change: Any = None, *, settle: bool = True) -> None:
        """One user move: one evaluation (the drag subset), then the full set once settled.

        ``settle=False`` measures the full set at once: an explorer's first measurement, so that a
        batch (papermill) run leaves no timer or background measurement in the kernel.
        """
        if self._syncing:
            return
        self._cancel_timer()
        self._cancel_release()
        if not settle:  # the first measurement: the full set at once, a progress bar if slow
            self.update(full=True, progress=True)
            return
        loop = _running_loop()
        if self.settle_seconds is None or self._drag is None or loop is None:
            self.update(full=True)  # nothing to wait for (plain Python, or no smaller subset)
            return
        self.update(full=False)
        self._timer = loop.call_later(self.settle_seconds, self._settled)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def pending(self) -> str | None:
        """What is still to come for the last move: ``"settle"`` while the settle timer waits,
        ``"full"`` while the full test set is being measured batch by batch, else ``None``."""
        if self._timer is not None:
            return "settle"
        if self._release is not None:
            return "full"
        return None

    def settle(self, *, stepwise: bool = False) -> None:
        """Measure the full test set now, as when the controls have come to rest.

        Cancels a waiting settle timer and a full measurement under way. By default the
        measurement runs at once, so the readouts show the full-set result when this returns.
        With ``stepwise=True`` and a running event loop (a notebook kernel), it runs one batch per
        event-loop turn, as the settle timer runs it, so that the next move abandons it
        (:attr:`pending` is ``"full"`` meanwhile).
        """
        self._cancel_timer()
        loop = _running_loop() if stepwise else None
        if loop is None:
            self._cancel_release()
            self.update(full=True, progress=True)
            return
        self._start_release(loop)

    def _settled(self) -> None:
        """The settle timer fired: the controls are still."""
        self._timer = None
        self.settle(stepwise=True)

    def _start_release(self, loop: asyncio.AbstractEventLoop) -> None:
        """Measure the full test set one batch per event-loop turn."""
        self._cancel_release()
        try:
            steps, params, _ = self._start_measure(True)
        except Exception as exc:
            self._fail(exc)
            return
        self._release = (steps, params, loop, self.accuracy_label.value, time.monotonic())
        self._release_shown = time.monotonic()
        self._release_handle = loop.call_soon(self._release_step)

    def _release_step(self) -> None:
        steps, params, loop, label, started = self._release
        self._release_handle = None
        try:
            fraction = next(steps)
        except StopIteration as done:
            self._release = None
            self._seconds_per_image["full"] = (time.monotonic() - started) / len(self._y_full)
            try:
                self._finish(self._record(done.value, params, True))
            except Exception as exc:
                self._fail(exc)
            return
        except Exception as exc:
            self._release = None
            self._fail(exc)
            return
        now = time.monotonic()
        if now - self._release_shown > PROGRESS_SECONDS:  # a long one: say so, and how long
            self._release_shown = now
            n = len(self._y_full)
            left = (now - started) * (1 - fraction) / max(fraction, 1e-9)
            self.accuracy_label.value = (
                f"{label} · measuring all {n:,} images: {fraction:.0%}, {seconds_text(left)} left"
            )
        self._release_handle = loop.call_soon(self._release_step)

    def _cancel_release(self) -> None:
        if self._release_handle is not None:
            self._release_handle.cancel()
            self._release_handle = None
        if self._release is not None:
            self._release[0].close()  # an abandoned measurement leaves no cached activations
            self._release = None

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)
