"""The landing page's thumbnails: each notebook's headline figure (its tagged cell), cropped so it
can be read small."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
from PIL import Image  # noqa: E402

from smoothviz.notebook_params import NOTEBOOKS, notebook_path  # noqa: E402
from smoothviz.report.execute import (  # noqa: E402
    HEADLINE_TAG,
    THUMBNAIL_ASPECT,
    _extract_figure,
    thumbnail_png,
)


def _png(width: float, height: float, colour: str) -> bytes:
    fig = plt.figure(figsize=(width, height), dpi=50)
    fig.add_axes((0.25, 0.25, 0.5, 0.5)).plot([0, 1], [0, 1], color=colour)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def _cell(png: bytes, tags=()):
    cell = nbformat.v4.new_code_cell("draw()", metadata={"tags": list(tags)})
    data = {"image/png": base64.b64encode(png).decode()}
    cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    return cell


def test_the_thumbnail_is_the_tagged_figure_margins_cut_and_a_tall_one_cropped(tmp_path):
    nb = nbformat.v4.new_notebook(
        cells=[
            _cell(_png(4, 3, "red")),
            _cell(_png(6, 12, "blue"), [HEADLINE_TAG]),  # tall, like a grid of 19 panels
            _cell(_png(4, 3, "green")),  # the last figure is not the headline
        ]
    )
    nbformat.write(nb, tmp_path / "nb.ipynb")
    assert _extract_figure(tmp_path / "nb.ipynb", tmp_path / "nb.png")
    thumb = Image.open(tmp_path / "nb.png").convert("RGB")
    assert thumb.height <= THUMBNAIL_ASPECT * thumb.width + 1
    colours = thumb.getcolors(thumb.width * thumb.height)
    blue = sum(n for n, (r, g, b) in colours if b > 150 and r < 100 and g < 150)
    red = sum(n for n, (r, g, b) in colours if r > 150 and g < 100 and b < 100)
    assert blue > 0 and red == 0
    # Margins cut: the axes frame (black) reaches near every edge the crop left.
    full = Image.open(io.BytesIO(_png(6, 12, "blue")))
    assert thumb.width < full.width * 0.75


def test_without_a_tag_the_first_figure_and_a_wide_one_is_not_cut_short(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[_cell(_png(8, 3, "red")), _cell(_png(4, 3, "green"))])
    nbformat.write(nb, tmp_path / "nb.ipynb")
    assert _extract_figure(tmp_path / "nb.ipynb", tmp_path / "nb.png")
    thumb = Image.open(tmp_path / "nb.png").convert("RGB")
    assert any(r > 150 and g < 100 for _, (r, g, b) in thumb.getcolors(10**6))
    blank = Image.new("RGB", (100, 80), "white")
    out = io.BytesIO()
    blank.save(out, format="PNG")
    width, height = Image.open(io.BytesIO(thumbnail_png(out.getvalue()))).size
    assert width == 100 and height <= 45  # nothing drawn: nothing to cut, but never taller


def test_every_notebook_tags_one_headline_figure():
    for name in NOTEBOOKS:
        nb = nbformat.read(notebook_path(name), as_version=4)
        tagged = [c for c in nb.cells if HEADLINE_TAG in c.metadata.get("tags", [])]
        assert len(tagged) == 1, name
