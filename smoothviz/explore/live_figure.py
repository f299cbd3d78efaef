"""A matplotlib figure that is redrawn in place: only the artists that change are re-rendered.

Re-creating a figure and saving it through ``savefig(bbox_inches="tight")`` on every slider move
costs hundreds of milliseconds, most of it laying out and rendering text (tick labels, titles) that
never changes. :class:`LiveFigure` renders the figure once, freezes its layout, keeps the rendered
background without the changing ("animated") artists, and on every :meth:`~LiveFigure.png` pastes
that background and draws only those artists on top (matplotlib's blitting), then encodes the
pixels with Pillow's fast PNG setting.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


class LiveFigure:
    """Blit the changing artists of ``figure`` over its cached background; encode as PNG.

    Parameters
    ----------
    figure
        A figure with everything drawn, the changing artists included (their first state is used
        to lay the figure out).
    animated
        The artists that change between frames. Update them (``set_height``, ``set_text``, ...),
        then call :meth:`png`.
    dpi
        Resolution of the rendered image.
    """

    def __init__(self, figure: Figure, animated: Iterable[Artist], *, dpi: float = 90) -> None:
        self.figure = figure
        self.animated = list(animated)
        figure.set_dpi(dpi)
        self._canvas = FigureCanvasAgg(figure)
        self._canvas.draw()  # lays the figure out (constrained layout) with every artist
        figure.set_layout_engine("none")  # ... and keeps that layout from now on
        for artist in self.animated:
            artist.set_animated(True)
        self._canvas.draw()
        self._background = self._canvas.copy_from_bbox(figure.bbox)

    def pixels(self) -> np.ndarray:
        """The current frame as an ``(height, width, 3)`` uint8 array."""
        self._canvas.restore_region(self._background)
        for artist in self.animated:
            self.figure.draw_artist(artist)
        return np.asarray(self._canvas.buffer_rgba())[..., :3].copy()

    def png(self) -> bytes:
        """The current frame as PNG bytes."""
        buf = io.BytesIO()
        Image.fromarray(self.pixels()).save(buf, format="png", compress_level=1)
        return buf.getvalue()
