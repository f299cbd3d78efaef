"""Write the notebooks in notebooks/ (without outputs) from their cell sources below.

The parameter cells come from the dataclasses in ``smoothviz/notebook_params.py`` (names, literal
defaults, type annotations and help comments), so a notebook and its config never disagree.
Run ``python scripts/make_notebooks.py`` after changing either; ``--check`` exits 1 when the
committed notebooks differ from what this script would write (used by the tests).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smoothviz.notebook_params import NOTEBOOKS, parameters_source  # noqa: E402
from smoothviz.report.execute import HEADLINE_TAG  # noqa: E402

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

INTRO = {
    "01_train": (
        "Trains the two models every other notebook compares: a **baseline** (no penalty) and a "
        "**smooth** model (first/second-order smoothness and/or nuclear-norm penalties on the "
        "weights, defined in `docs/methods.md`), at every seed of `seeds`. Both are cached by "
        "their config, so the later notebooks load them instantly; 02, 03 and 05 show the first "
        "seed's, 04 compares every seed's."
    ),
    "02_smoothness": (
        "How smooth are the weights along the channel axes? Heatmaps of each chosen layer's matrix "
        "view (smooth beside baseline) and the normalised first/second differences of every layer "
        "(1 is what white-noise weights give, 0 is constant along the axis)."
    ),
    "03_spectra": (
        "Singular-value spectra of the compressible layers, both trainings overlaid, and the "
        "energy kept at each rank. Dashed lines mark the ranks that a whole-network SVD budget of "
        "`param_reduction` picks in each training. The figures show the `spectra_layers` layers "
        "where that budget removes the most parameters (`spectra_layers=None`: every layer); "
        "the tables list every layer."
    ),
    "04_tradeoff": (
        "Accuracy **without fine-tuning** against the fraction of parameters removed, for every "
        "compression method and both trainings at every seed, with parameters, FLOPs and latency. "
        "The headline (the report's landing page) is computed from this notebook's sweep: smooth "
        "minus baseline paired by seed, with its 95 % interval."
    ),
    "05_explore": (
        "Choose SVD ranks or a pruning ratio and see test accuracy, parameters and FLOPs. **In a "
        "live notebook** (JupyterLab, Jupyter Notebook) each explorer has sliders: while one "
        "moves, accuracy is estimated on `drag_subset` test images (marked *estimate*, with its "
        "95 % interval), and once it stops, measured on the full test set; the **Save** button "
        "writes the chosen compressed model into `save_dir`. **In the HTML report** there are no "
        "sliders: the static figure and table below each explorer show its default choice, and "
        "the last section saves the SVD explorer's choice into the report's folder."
    ),
}

HOW_TO = (
    "Parameters are in the next cell (tagged `parameters`); `papermill --help-notebook` lists them. "
    "The cell after it validates them and stops with a message naming any unknown or ill-typed one."
)

# The cell whose figure is the notebook's thumbnail on the report's landing page.
HEADLINE = [HEADLINE_TAG]

BODY = {
    "01_train": [
        (
            "code",
            """import matplotlib.pyplot as plt

from smoothviz.analysis import final_metrics, seed_histories
from smoothviz.checkpoints import checkpoint_table
from smoothviz.notebook_params import TrainParams
from smoothviz.plots import plot_history
from smoothviz.tables import checkpoint_summary, history_summary, training_summary

params = TrainParams.from_notebook(globals())
params""",
        ),
        (
            "markdown",
            "## Train (or load from the cache), at every seed\n\n"
            "With `checkpoints`, nothing is trained: the table shows your two models' parameters "
            "and test accuracy.",
        ),
        (
            "code",
            """runs = params.train_seed_runs(progress=True)  # with checkpoints: your models
histories = seed_histories(runs)
if params.checkpoints is None:
    display(training_summary(final_metrics(histories)))
else:
    display(checkpoint_summary(checkpoint_table(runs)))""",
        ),
        ("markdown", "## Training curves (with several seeds: the mean and its 95 % band)"),
        (
            "code",
            """if params.checkpoints is None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    plot_history(histories, y="test_acc", ax=axes[0])
    plot_history(histories, y="train_loss", ax=axes[1])
else:
    print("Your own checkpoints: no training curves (their accuracy is in the table above).")""",
            HEADLINE,
        ),
        ("markdown", "## Per-epoch history"),
        ("code", "history_summary(histories)"),
    ],
    "02_smoothness": [
        (
            "code",
            """import matplotlib.pyplot as plt

from smoothviz.analysis import smoothness_table, weight_smoothness
from smoothviz.notebook_params import SmoothnessParams
from smoothviz.plots import plot_smoothness, weights_grid
from smoothviz.tables import smoothness_summary

params = SmoothnessParams.from_notebook(globals())
params""",
        ),
        (
            "code",
            """runs = params.train_runs()
models = {"smooth": runs["smooth"].model, "baseline": runs["baseline"].model}""",
        ),
        ("markdown", "## Smoothness table (roughness, mean over the output and input axes)"),
        (
            "code",
            """smoothness = weight_smoothness(models)
smoothness_summary(smoothness_table(smoothness))""",
        ),
        ("markdown", "## Weights of the chosen layers: smooth beside baseline"),
        (
            "code",
            """weights_grid(models, params.layers_to_draw(models["baseline"]));""",
        ),
        ("markdown", "## Roughness per layer"),
        (
            "code",
            """fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
plot_smoothness(smoothness, order=1, ax=axes[0])
plot_smoothness(smoothness, order=2, ax=axes[1]);""",
            HEADLINE,
        ),
    ],
    "03_spectra": [
        (
            "code",
            """from smoothviz.analysis import chosen_ranks, singular_spectra, spectrum_summary
from smoothviz.notebook_params import SpectraParams
from smoothviz.plots import spectra_grid
from smoothviz.tables import ranks_table, spectrum_table

params = SpectraParams.from_notebook(globals())
params""",
        ),
        (
            "code",
            """runs = params.train_runs()
models = {"smooth": runs["smooth"].model, "baseline": runs["baseline"].model}
spectra = singular_spectra(models)""",
        ),
        ("markdown", "## Effective rank (Roy & Vetterli), stable rank and energy ranks"),
        ("code", "spectrum_table(spectrum_summary(models))"),
        ("markdown", "## Ranks chosen by the whole-network SVD budget"),
        (
            "code",
            """ranks = chosen_ranks(models, params.param_reduction)
ranks_table(ranks)""",
        ),
        (
            "markdown",
            "## Normalised singular values (log scale)\n\n"
            "The layers where the budget removes the most parameters (`spectra_layers`).",
        ),
        (
            "code",
            """layers = params.layers_to_draw(models, ranks)
spectra_grid(spectra, ranks=ranks, layers=layers);""",
            HEADLINE,
        ),
        ("markdown", "## Energy kept at each rank"),
        ("code", 'spectra_grid(spectra, y="cumulative_energy", ranks=ranks, layers=layers);'),
    ],
    "04_tradeoff": [
        (
            "code",
            """from smoothviz.analysis import load_lambda_sweep
from smoothviz.frontier import compare_to_frontier, frontier_for
from smoothviz.headline import best_methods, headline_sentence, headline_table, load_seed_spread
from smoothviz.notebook_params import TradeoffParams
from smoothviz.plots import lambda_sweep_grid, tradeoff_grid
from smoothviz.results_file import save_results
from smoothviz.sweep import sweep_seeds
from smoothviz.tables import (
    best_methods_summary,
    differences_summary,
    frontier_placement,
    frontier_summary,
    tradeoff_summary,
)

params = TradeoffParams.from_notebook(globals())
params""",
        ),
        (
            "code",
            """models = params.seed_models()  # {seed: {"baseline": model, "smooth": model}}
data = params.load_data()""",
        ),
        ("markdown", "## Compress every model of every seed with every method at every target"),
        (
            "code",
            """results = sweep_seeds(models, params.method_list, params.reductions, data,
                      **params.sweep_options())
save_results(results, data);  # tradeoff.csv: the report's landing page reads its headline from it""",
        ),
        ("markdown", "## Headline"),
        (
            "code",
            """# The committed seed spread is of trained models' configuration: not of your checkpoints.
spread = (
    load_seed_spread(params.training_configs(), data.name, len(data.y_test))
    if params.checkpoints is None
    else None
)
print(headline_sentence(results, spread=spread))""",
        ),
        ("code", "differences_summary(results)"),
        (
            "markdown",
            "Best method of each training at each target (plain accuracy, mean over seeds):",
        ),
        ("code", "best_methods_summary(best_methods(headline_table(results)))"),
        (
            "markdown",
            "## Against the trained-small frontier\n\n"
            "The baseline's recipe trained from scratch at the narrower `frontier_widths`, at every "
            "seed; when none are given, the measurement committed for this recipe "
            "(`benchmarks/results/trained_small_frontier.json`, its `source` says so), if there is "
            "one. Each compressed model is compared with it at its own parameter count "
            "(interpolated in log-parameters, never extrapolated; paired by seed where the "
            "frontier has the results' seeds; `docs/methods.md`).",
        ),
        (
            "code",
            """frontier = frontier_for(params.training_configs()["baseline"], params.frontier_widths,
                        data=data, seeds=params.seeds)
frontier_summary(frontier) if frontier is not None else None""",
        ),
        (
            "code",
            """if frontier is not None:
    display(frontier_placement(compare_to_frontier(results, frontier)))""",
        ),
        (
            "markdown",
            "## Accuracy vs parameters removed (no fine-tuning)\n\n"
            "Dotted lines: each training's uncompressed accuracy; dash-dot: chance level; grey: "
            "the trained-small frontier at its own parameter reduction (when there is one). With "
            "several seeds, each line is the mean over seeds and its band the 95 % Student-t "
            "interval of that mean.",
        ),
        (
            "code",
            "tradeoff_grid(results, chance=1 / data.num_classes, frontier=frontier);",
            HEADLINE,
        ),
        ("markdown", "## Parameters, FLOPs, latency and accuracy, smooth beside baseline"),
        ("code", "tradeoff_summary(results)"),
        (
            "markdown",
            "## How the regulariser weight was chosen\n\n"
            "Only with `show_lambda_sweep` (the `full` preset): accuracy at 70 % fewer parameters "
            "against each regulariser's weight, measured on the benchmark model by "
            "`benchmarks/lambda_sweep.py`; the `full` preset's first-order weight comes from it "
            "(its `lambda_sweep.md` says which weights were measured).",
        ),
        (
            "code",
            """if params.show_lambda_sweep:
    lambda_sweep, not_measured = load_lambda_sweep()
    lambda_sweep_grid(lambda_sweep, target=0.7, missing=not_measured)""",
        ),
    ],
    "05_explore": [
        (
            "code",
            """from pathlib import Path

from smoothviz import count_params, load_compressed, save_compressed
from smoothviz.notebook_params import ExploreParams
from smoothviz.tables import explorer_summary
from smoothviz.widgets import PruneExplorer, RankExplorer

params = ExploreParams.from_notebook(globals())
params""",
        ),
        (
            "code",
            """runs = params.train_runs()
models = {"smooth": runs["smooth"].model, "baseline": runs["baseline"].model}
data = params.load_data()
arch = params.architecture(data)  # what load_compressed needs to rebuild a saved model""",
        ),
        ("markdown", "## SVD ranks"),
        (
            "code",
            """explorer = RankExplorer(models, data, param_reduction=params.param_reduction,
                        drag_subset=params.drag_subset, seed=params.seeds[0],
                        arch=arch, save_dir=params.save_dir)
explorer""",
        ),
        (
            "markdown",
            "Static figure of the choice when this cell ran (the default choice in the report):",
        ),
        ("code", "explorer.snapshot()", HEADLINE),
        ("code", "explorer_summary(explorer.summary())"),
        ("markdown", "## Pruning"),
        (
            "code",
            """pruner = PruneExplorer(models, data, param_reduction=params.prune_ratio,
                       drag_subset=params.drag_subset, seed=params.seeds[0],
                       arch=arch, save_dir=params.save_dir)
pruner""",
        ),
        ("markdown", "Static figure of the choice when this cell ran:"),
        ("code", "pruner.snapshot()"),
        ("code", "explorer_summary(pruner.summary())"),
        (
            "markdown",
            "## Take the chosen model away\n\n"
            "`explorer.compressed_model()` is the compressed model of the explorer's current "
            "choice; `save_compressed` writes it (the weights, and a JSON file describing its "
            "structure) and `load_compressed` rebuilds it, weights loaded with "
            "`weights_only=True`. `explorer.save(path)` does the same and writes "
            "`explorer.settings()` beside it; in a live notebook the **Save** button under each "
            "explorer does that into `save_dir`.",
        ),
        (
            "code",
            """small = explorer.compressed_model()
path = save_compressed(small, Path(params.save_dir) / "rank_explorer_choice.pt", arch=arch,
                       metadata=explorer.settings())
path""",
        ),
        (
            "code",
            """reloaded = load_compressed(path)
count_params(reloaded), explorer.last["params"]""",
        ),
    ],
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as an nbformat v4 node, without outputs."""
    cls = NOTEBOOKS[name]
    cells = [
        nbformat.v4.new_markdown_cell(f"# {cls.title}\n\n{INTRO[name]}\n\n{HOW_TO}"),
        nbformat.v4.new_code_cell(parameters_source(cls), metadata={"tags": ["parameters"]}),
    ]
    for kind, source, *tags in BODY[name]:
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cells.append(make(source, metadata={"tags": tags[0]} if tags else {}))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids, so regenerating does not churn the files
        cell["id"] = f"{name}-{i:02d}"
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        text = nbformat.writes(build(name)) + "\n"
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print(f"out of date: {stale}; run python scripts/make_notebooks.py")
        return 1
    print(("up to date" if not stale else f"wrote {stale}") if not args.check else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
