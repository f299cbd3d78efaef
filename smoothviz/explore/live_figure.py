"""A matplotlib figure that is redrawn in place: only the artists that change are re-rendered.

Re-creating a figure and saving it through ``savefig(bbox_inches="tight")`` on every slider move
costs hundreds of milliseconds, most of it laying out and rendering text (tick labels, titles) that
never changes. :class:`LiveFigure` renders the figure once, freezes its layout, keeps the rendered
background without the changing ("animated") artists, and on every :meth:`~LiveFigure.png` pastes
that background and draws only those artists on top (matplotlib's blitting), then encodes the
pixels with Pillow's fast PNG setting.

Because the layout is frozen after the first drawing, a text that changes must never need more
room than it had then: :func:`fit_text` wraps it to the figure's width and pads it to a fixed
number of lines, so every state of the title fits the space laid out for the first.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterable

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

# Width of an average character over the font size (DejaVu Sans: digits 0.64, lower case about 0.55);
# taken high, and only 92 % of the figure's width is used, so that a wrapped line always fits.
_CHAR_EM = 0.62


def fit_text(text: str, figure: Figure, *, fontsize: float, lines: int) -> str:
    """``text`` wrapped to ``figure``'s width at ``fontsize`` points, as exactly ``lines`` lines.

    Shorter texts are padded with blank lines (the layout keeps the same room for every state);
    a longer one is cut, its last line ending in "…".
    """
    chars = max(20, int(figure.get_figwidth() * 72 * 0.92 / (_CHAR_EM * fontsize)))
    out = textwrap.wrap(text, chars) or [""]
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][: chars - 1] + "…"
    return "\n".join(out + [" "] * (lines - len(out)))


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
