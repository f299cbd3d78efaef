"""The report's HTML pages open offline: no script is fetched from a CDN (MathJax, mermaid,
require.js, the widget manager); a widget's output says in one line that it needs a live kernel."""

from __future__ import annotations

import re

import nbformat

from smoothviz.report.execute import offline_html_exporter

WIDGET = "application/vnd.jupyter.widget-view+json"


def _notebook_with_a_widget() -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("explorer")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={
                WIDGET: {"model_id": "abc", "version_major": 2, "version_minor": 0},
                "text/plain": "VBox(children=(FloatSlider(value=0.5),))",
            },
        ),
        nbformat.v4.new_output("display_data", data={"text/plain": "the static figure"}),
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Explore"), cell])
    # What nbclient stores after a run: the state of the widgets still open.
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {
                "abc": {
                    "model_name": "VBoxModel",
                    "model_module": "@jupyter-widgets/controls",
                    "model_module_version": "2.0.0",
                    "state": {},
                }
            },
            "version_major": 2,
            "version_minor": 0,
        }
    }
    return nb


def test_report_pages_load_no_script_from_the_internet():
    body, _ = offline_html_exporter().from_notebook_node(_notebook_with_a_widget())
    scripts = re.findall(r"<script[^>]*\bsrc=[^>]*>", body)
    assert scripts == []
    for cdn in ("cdnjs", "unpkg", "jsdelivr", "mathjax", "require.js", "mermaid.esm"):
        assert cdn not in body.lower(), cdn
    # The widget says in one line why it is not here; the output after it is kept.
    assert "runs in a live notebook only" in body
    assert "the static figure" in body
    assert "FloatSlider(value" not in body  # no raw repr in its place
    # Input cells stay out, as before.
    assert '<span class="n">explorer</span>' not in body
