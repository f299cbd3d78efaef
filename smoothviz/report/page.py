"""The landing page of a report: ``index.html`` and its JSON twin ``report.json``.

The page opens with the headline of each grid point: the table of test accuracies (per training,
method and target, and after BatchNorm re-estimation when it was measured, next to the
uncompressed accuracy; the best method per target) and one sentence computed from it
(:mod:`smoothviz.headline`), on the test split it names. Then the status, a summary table with
links, the parameters of every point, and the device, versions and git SHA that produced it.
``report.json`` holds the same content, the headline as records under ``headline`` (each with
``n_seeds``, ``test_acc_mean`` and ``test_acc_ci95``) and the paired differences under
``differences`` (one record per point, method and target with ``difference_mean``,
``difference_ci95``, ``n_seeds``, ``ci_source`` and ``verdict``). Every user-given string is
HTML-escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smoothviz.atomic import atomic_write_text
from smoothviz.errors import error_text
from smoothviz.headline import (
    RESULTS_FILE,
    best_methods,
    describe_test_split,
    differences,
    headline_sentence,
    headline_table,
    load_results,
    load_seed_spread,
)
from smoothviz.report.plan import GridPoint
from smoothviz.tables import differences_summary, interval

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;max-width:75rem;
color:#1d1d1f}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;
text-align:left;vertical-align:top;font-size:.9rem}th{background:#f4f4f6}
.state{display:inline-block;padding:.15rem .6rem;border-radius:.8rem;font-weight:600;color:#fff}
.succeeded,.ok{background:#1b7f3b}.failed{background:#b00020}.running,.pending{background:#a15c00}
.skipped{background:#777}
td .state{font-size:.8rem}.err{color:#b00020;white-space:pre-wrap;font-family:monospace;
font-size:.8rem;max-width:40rem}code{font-size:.85rem}
.sentence{font-size:1.1rem;font-weight:600;margin:.6rem 0;max-width:60rem}
.headline td.num{text-align:right;font-variant-numeric:tabular-nums}.headline .best{font-weight:700;
background:#e8f5ec}.headline tr.bestrow td{background:#f8f8fa;font-size:.8rem}
.note{background:#fff4e0;border-left:4px solid #a15c00;padding:.4rem .8rem;max-width:60rem}
.muted{color:#555;font-size:.85rem}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def point_headline(run_dir: Path, point: GridPoint) -> dict[str, Any] | None:
    """The headline of one grid point from its trade-off results, or None before they exist.

    Returns ``{"table", "differences", "differences_table", "best", "best_bn", "sentence",
    "test_split"}`` (DataFrames, a :class:`~smoothviz.tables.Table` and strings), or
    ``{"error": text}`` when the results file cannot be read or lacks what the headline needs.
    With one seed, the sentence quotes the committed seed spread of the point's configuration
    when there is one (:func:`~smoothviz.headline.load_seed_spread`).
    """
    path = Path(run_dir) / point.folder / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        results = load_results(path)
        table = headline_table(results)
        spread = None
        own = bool(point.notebooks) and point.notebooks[0].config.checkpoints is not None
        # The committed seed spread is of smoothviz's trainings, never of a user's checkpoints.
        if (
            point.notebooks
            and not own
            and {"dataset", "test_images"} <= set(results.columns)
            and len(results)
        ):
            spread = load_seed_spread(
                point.notebooks[0].config.training_configs(),
                str(results["dataset"].iloc[0]),
                int(results["test_images"].iloc[0]),
            )
        return {
            "table": table,
            "differences": differences(results),
            "differences_table": differences_summary(results),
            "best": best_methods(table),
            "best_bn": best_methods(table, "test_acc_bn_reestimated"),
            "sentence": headline_sentence(results, spread=spread),
            "test_split": describe_test_split(results),
        }
    except (OSError, ValueError, KeyError) as exc:
        return {"error": f"{path.name}: {error_text(exc)}"}


def _pct_cell(value: Any, best: bool, low: Any = None, high: Any = None) -> str:
    """One accuracy in %, with its interval over seeds in brackets when there is one."""
    text = interval(value, low, high)  # "—" for None or NaN: not measured or not reached
    return f'<td class="num{" best" if best else ""}">{_e(text)}</td>'


def _headline_html(point: GridPoint, headline: Mapping[str, Any] | None, label: bool) -> str:
    """One point's headline: the sentence, the test split, the table with the best methods."""
    title = f"<h3>{_e(point.label)}</h3>" if label else ""
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in point.notes)
    if headline is None:
        waiting = {"failed": "not measured: the run failed before the trade-off notebook ended"}
        text = waiting.get(point.status, "not measured yet: the trade-off notebook has not ended")
        return f'{title}{notes}<p class="muted">Headline {_e(text)}.</p>'
    if "error" in headline:
        return f'{title}{notes}<p class="err">headline unavailable: {_e(headline["error"])}</p>'
    table = headline["table"]
    targets = sorted(set(table["target_reduction"].dropna()))
    trainings = list(dict.fromkeys(table["training"]))
    methods = list(dict.fromkeys(table["method"]))
    best = {(r.training, r.target_reduction): r.method for r in headline["best"].itertuples()}
    best_bn = {(r.training, r.target_reduction): r.method for r in headline["best_bn"].itertuples()}
    configs = {}
    if point.notebooks and point.notebooks[0].config.checkpoints is not None:
        configs = {  # the user's own models: nothing was trained
            k: f"{point.notebooks[0].config.model}, your checkpoint {v}"
            for k, v in point.notebooks[0].config.checkpoints.items()
        }
    elif point.notebooks:  # the trainings compared, in words (every notebook trains the same two)
        trainings = point.notebooks[0].config.training_configs()
        configs = {k: _describe_training(v) for k, v in trainings.items()}
    with_bn = bool(table["test_acc_bn_reestimated"].notna().any())
    span = 2 if with_bn else 1
    head1 = (
        "<tr><th rowspan=2>training</th><th rowspan=2>method</th><th rowspan=2>uncompressed</th>"
        + "".join(f"<th colspan={span}>{100 * t:.0f} % fewer parameters</th>" for t in targets)
        + "</tr>"
    )
    head2 = (
        "<tr>"
        + ("<th>plain</th><th>BN re-est.</th>" if with_bn else "<th>plain</th>") * len(targets)
        + "</tr>"
    )
    body = []
    for training in trainings:
        rows = table[table["training"] == training]
        unc = rows["test_acc_uncompressed"].iloc[0]
        for i, method in enumerate(methods):
            cells = [
                f"<td>{_e(training)}</td>" if i == 0 else "<td></td>",
                f"<td>{_e(method)}</td>",
            ]
            cells.append(_pct_cell(unc, False) if i == 0 else "<td></td>")
            for t in targets:
                row = rows[(rows["method"] == method) & (rows["target_reduction"] == t)]
                plain = row["test_acc"].iloc[0] if len(row) else None
                bn = row["test_acc_bn_reestimated"].iloc[0] if len(row) else None
                ci = (row["test_acc_ci95_low"].iloc[0], row["test_acc_ci95_high"].iloc[0])
                cells.append(_pct_cell(plain, best.get((training, t)) == method, *ci))
                if with_bn:
                    cells.append(_pct_cell(bn, best_bn.get((training, t)) == method))
            body.append("<tr>" + "".join(cells) + "</tr>")
        cells = [f"<td>{_e(training)}</td>", "<td>best method</td>", "<td></td>"]
        for t in targets:
            cells.append(f"<td>{_e(best.get((training, t)) or '—')}</td>")
            if with_bn:
                cells.append(f"<td>{_e(best_bn.get((training, t)) or '—')}</td>")
        body.append('<tr class="bestrow">' + "".join(cells) + "</tr>")
    described = "".join(f"<li><b>{_e(name)}</b>: {_e(text)}</li>" for name, text in configs.items())
    n_seeds = int(table["n_seeds"].max()) if len(table) else 0
    seeds = (
        f"Mean over {n_seeds} seeds, its 95 % Student-t interval over seeds in brackets. "
        if n_seeds > 1
        else "One seed. "
    )
    return f"""{title}{notes}<p class="sentence">{_e(headline["sentence"])}</p>
<p class="muted">Test accuracy in %, on the {_e(headline["test_split"])}, straight after
compression (no gradient step){_BN_WORDS if with_bn else ""}. {seeds}Bold: the best method of
each training at each target. — : not measured, or the method could not reach the target.</p>
<table class="headline"><thead>{head1}{head2}</thead><tbody>{"".join(body)}</tbody></table>
<div class="muted">{headline["differences_table"].to_html()}</div>
<ul class="muted">{described}</ul>"""


_BN_WORDS = '; "BN re-est." re-estimates the BatchNorm statistics on training images first'


def _describe_training(cfg: Any) -> str:
    """A TrainConfig in words: model, data, epochs and the regulariser weights that are on."""
    regs = [
        f"{name.replace('_', '-')} weight {getattr(cfg, name):g}"
        for name in ("first_order", "second_order", "nuclear", "proximal")
        if getattr(cfg, name) > 0
    ]
    images = "all" if cfg.train_subset is None else f"{cfg.train_subset:,}"
    width = "" if cfg.width is None else f" width {cfg.width}"
    return (
        f"{cfg.model}{width}, {cfg.epochs} epochs on {images} {cfg.dataset} training images, "
        + (", ".join(regs) if regs else "no regulariser")
        + f" (config {cfg.config_hash()})"
    )


def render_index(
    meta: Mapping[str, Any],
    points: Sequence[GridPoint],
    state: str,
    headlines: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> str:
    """The landing page's HTML (every user-given string escaped).

    ``headlines`` maps a point's folder to its :func:`point_headline`; the page opens with them.
    """
    headlines = headlines or {}
    headline_html = "\n".join(
        _headline_html(p, headlines.get(p.folder), label=len(points) > 1) for p in points
    )
    words = {
        "running": "RUNNING — incomplete (or interrupted)",
        "succeeded": "SUCCEEDED",
        "failed": "FAILED",
    }
    summary = []
    for p in points:
        for nb in p.notebooks:
            links = []
            if nb.html:
                links.append(f'<a href="{_e(nb.html)}">HTML</a>')
            if nb.ipynb:
                links.append(f'<a href="{_e(nb.ipynb)}">notebook</a>')
            if nb.figure:
                target = _e(nb.html or nb.figure)
                links.append(
                    f'<br><a href="{target}"><img src="{_e(nb.figure)}" alt="headline figure of '
                    f'{_e(nb.name)}" style="width:40rem;max-width:100%;margin-top:.3rem"></a>'
                )
            summary.append(
                [
                    _e(p.label),
                    _e(f"{nb.name} · {nb.title}"),
                    f'<span class="state {_e(nb.status)}">{_e(nb.status)}</span>',
                    "" if nb.seconds is None else f"{nb.seconds:.1f} s",
                    " · ".join(links),
                    f'<div class="err">{_e(nb.error)}</div>' if nb.error else "",
                ]
            )
    names = sorted({k for p in points for k in p.parameters})
    param_rows = [
        [f"<code>{_e(n)}</code>"] + [_e(repr(p.parameters.get(n, "—"))) for p in points]
        for n in names
    ]
    env_rows = [
        [_e(k), _e(v)]
        for k, v in {
            **meta["environment"],
            **{f"version: {k}": v for k, v in meta["versions"].items()},
        }.items()
    ]
    overrides = ", ".join(f"{k}={v!r}" for k, v in meta["overrides"].items()) or "none"
    grid = ", ".join(f"{k}={v!r}" for k, v in meta["grid"].items()) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>smoothviz report {_e(meta["run_id"])}</title><style>{_CSS}</style></head>
<body data-state="{_e(state)}">
<h1>smoothviz report <code>{_e(meta["run_id"])}</code></h1>
<p><span class="state {_e(state)}">{_e(words.get(state, state))}</span></p>
<h2>Headline: accuracy without fine-tuning, smooth vs baseline</h2>
{headline_html}
<p>Preset <code>{_e(meta["preset"])}</code> · parameters: <code>{_e(overrides)}</code> ·
grid: <code>{_e(grid)}</code><br>started {_e(meta["started"])}
{"· finished " + _e(meta["finished"]) if meta.get("finished") else ""}<br>
command: <code>{_e(meta["command"])}</code></p>
<h2>Summary</h2>
{_table(summary, ["grid point", "notebook", "status", "time", "output", "error"])}
<h2>Parameters</h2>
{_table(param_rows, ["parameter"] + [p.folder for p in points])}
<h2>Produced by</h2>
{_table(env_rows, ["", ""])}
<p>Accuracy is measured on the held-out test split straight after compression, with no gradient
step (docs/methods.md); notebooks show their outputs only, their code is in <code>notebooks/</code>.</p>
</body></html>
"""


def _records(frame: Any, interval_key: str) -> list[dict[str, Any]]:
    """A frame as JSON records (NaN as null) with ``<key>_low``/``_high`` as one ``[low, high]``."""
    out = json.loads(frame.to_json(orient="records"))
    for r in out:
        r[interval_key] = [r.pop(f"{interval_key}_low"), r.pop(f"{interval_key}_high")]
    return out


def write_index(
    index: Path, meta: Mapping[str, Any], points: Sequence[GridPoint], state: str
) -> None:
    """Write ``index.html`` and ``report.json`` beside it, atomically, for the run's state now.

    ``meta``: the run's record (``run_id``, ``preset``, ``command``, ``overrides``, ``grid``,
    ``environment``, ``versions``, ``started``, ``finished``...); ``state``: ``"running"``,
    ``"succeeded"`` or ``"failed"``. Each point's headline is read from its trade-off results
    when they exist.
    """
    index = Path(index)
    headlines = {p.folder: point_headline(index.parent, p) for p in points}
    records, diffs, sentences, splits = [], [], {}, {}
    for p in points:
        h = headlines[p.folder]
        if not h or "error" in h:
            continue
        records += _records(h["table"].assign(point=p.folder), "test_acc_ci95")
        diffs += _records(h["differences"].assign(point=p.folder), "difference_ci95")
        sentences[p.folder], splits[p.folder] = h["sentence"], h["test_split"]
    record = {
        **meta,
        "state": state,
        "headline": records,
        "differences": diffs,
        "headline_sentence": sentences,
        "test_split": splits,
        "points": [p.record() for p in points],
    }
    atomic_write_text(index.parent / "report.json", json.dumps(record, indent=2, default=str))
    atomic_write_text(index, render_index(meta, points, state, headlines))
