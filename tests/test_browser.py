"""A real browser: JupyterLab on loopback, Debian Chromium driven by playwright.

Opens the exploration notebook (with small parameters injected), runs it, and moves sliders with the
keyboard: the global reduction slider one key press at a time (each press must update the
parameter and accuracy readouts and the figure; the accuracy first reads as an estimate with its
±, then as the full test set), then a per-layer rank slider; the readouts and the figure must
follow, and end on the full test set. The Save button must write a model that ``load_compressed``
loads with the parameter count the readout shows, and a cell with a bad parameter must show a
short error. A second test runs each of notebooks 01-04 (Run All; figures and captioned tables
appear, no cell fails). The screenshots are kept under ``test-artifacts/``; ``notebook-0N-*.png``
are the ones ``docs/figures/`` holds. The kernel imports smoothviz from this checkout. Where
Chromium or JupyterLab is missing and we are not root (so ``scripts/setup.sh`` could not install
them), the test reports itself skipped with the reason;
under ``CI=true`` it must run, and fails instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("SMOOTHVIZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SMALL = {
    "width": 8,
    "epochs": 2,
    "train_subset": 2048,
    "eval_subset": 400,
    "drag_subset": 100,
    "param_reduction": 0.0,  # start uncompressed, so lowering a rank must cost accuracy
}
# The other notebooks: the same trainings (trained once, by the fixture), each notebook's own
# parameters, the heading its screenshot starts at and how many figures it draws.
_SHARED = {k: v for k, v in SMALL.items() if k not in ("drag_subset", "param_reduction")}
NOTEBOOK_RUNS = {
    "01_train": (_SHARED, "Train (or load from the cache)", 1),
    "02_smoothness": (_SHARED, "Smoothness table", 2),
    "03_spectra": ({**_SHARED, "param_reduction": 0.5}, "Ranks chosen by the whole-network", 2),
    "04_tradeoff": (
        {
            **_SHARED,
            "methods": ["svd", "prune_magnitude"],
            "reductions": [0.5, 0.7],
            "bn_reestimate": False,
        },
        "Accuracy vs parameters removed",
        1,
    ),
}
# Appended to the explore notebook: a parameter out of range, which must read as a short error.
BAD_CELL = "RankExplorer(models, data, param_reduction=-0.2)"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _missing() -> list[str]:
    missing = []
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium ({CHROMIUM}; Debian package 'chromium')")
    for module, what in (("jupyterlab", "JupyterLab"), ("playwright", "the playwright package")):
        if importlib.util.find_spec(module) is None:
            missing.append(what)
    return missing


def _require_browser_stack() -> None:
    missing = _missing()
    if not missing:
        return
    reason = f"browser test needs {', '.join(missing)}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; under CI=true this test must run (scripts/setup.sh installs them)")
    if os.geteuid() != 0:
        pytest.skip(f"{reason}, which cannot be installed without root")
    pytest.fail(f"{reason}; run scripts/setup.sh as root to install them")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _wait_for_idle_kernel(page, timeout: float = 90) -> None:
    """Wait until the notebook's kernel is idle, accepting a "Select Kernel" dialog if one opens
    (JupyterLab asks when its kernel list arrives after the notebook, as on a loaded machine)."""
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if accept.count() and accept.first.is_visible():
            accept.first.click()
        elif idle.count():
            page.wait_for_timeout(500)
            if not (accept.count() and accept.first.is_visible()):
                return
        page.wait_for_timeout(250)
    raise AssertionError(f"the kernel did not become idle within {timeout} s")


def _run_all_cells(page, attempts: int = 3) -> None:
    """Run All Cells from the menu until the first code cell shows it ran ([*] or [n]): on a loaded
    machine the kernel can report idle before its session takes requests, and the command is lost."""
    started = page.locator(".jp-CodeCell .jp-InputPrompt").filter(
        has_text=re.compile(r"\[(\*|\d+)\]")
    )
    for _ in range(attempts):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if started.count():
                return
            page.wait_for_timeout(250)
        _wait_for_idle_kernel(page)
    raise AssertionError(f"Run All Cells did not start the notebook in {attempts} attempts")


@pytest.fixture()
def lab(tmp_path, tmp_path_factory):
    """A JupyterLab server on loopback serving parameterised copies of the explore notebook
    (``explore.ipynb``, with :data:`BAD_CELL` appended) and the other notebooks as
    :data:`NOTEBOOK_RUNS` parameterises them (``01_train.ipynb``...); yields a function ``name -> URL`` and the notebooks' folder."""
    _require_browser_stack()
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from smoothviz.notebook_params import ExploreParams, notebook_path

    # Shared with tests/test_notebooks.py (same trainings), so the models are trained once.
    cache = tmp_path_factory.getbasetemp() / "train-cache"
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # kernels draw inline
    # The kernel imports smoothviz from this checkout (not another installed copy).
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(
        PYTHONPATH=path,
        SMOOTHVIZ_CACHE=str(cache),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
    )
    # Train the two small models here, so the notebook finds them in the cache.
    os.environ["SMOOTHVIZ_CACHE"] = str(cache)
    try:
        ExploreParams(**SMALL).train_runs()
    finally:
        os.environ.pop("SMOOTHVIZ_CACHE")
    work = tmp_path / "lab"
    work.mkdir()
    nb = parameterize_notebook(load_notebook_node(str(notebook_path("05_explore"))), SMALL)
    nb.cells.append(nbformat.v4.new_code_cell(BAD_CELL))
    nbformat.write(nb, work / "explore.ipynb")
    for name, (params, _, _) in NOTEBOOK_RUNS.items():
        nb = parameterize_notebook(load_notebook_node(str(notebook_path(name))), params)
        nbformat.write(nb, work / f"{name}.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={work}",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:  # containers and CI often run as root
        cmd.append("--allow-root")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log)
        yield (lambda name: f"http://127.0.0.1:{port}/lab/tree/{name}?token={token}"), work
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _figure_bytes(page) -> bytes:
    """The PNG the explorer's figure shows now, as the browser holds it."""
    data = page.evaluate(
        """async () => {
            const img = document.querySelector('.smoothviz-rank-explorer img.smoothviz-figure')
                || document.querySelector('.smoothviz-rank-explorer img');
            const buf = await (await fetch(img.src)).arrayBuffer();
            return Array.from(new Uint8Array(buf));
        }"""
    )
    return bytes(data)


def _press_until_changed(page, handle, key: str, label, presses: int) -> tuple[int, float]:
    """Press ``key`` once at a time until ``label``'s text changes; (presses, seconds of the last)."""
    from playwright.sync_api import expect

    for n in range(1, presses + 1):
        before = label.text_content()
        start = time.monotonic()
        handle.press(key)
        try:
            expect(label).not_to_have_text(before, timeout=15_000)
            return n, time.monotonic() - start
        except AssertionError:
            continue
    raise AssertionError(f"{label} did not change after {presses} presses of {key}")


_RECORD_TEXTS = """(selector) => {
    // Every text the element shows, in order: a readout that changes twice between two polls
    // of the test (the estimate, then the full set) is still seen in both states. The whole
    // document is observed, since JupyterLab may re-create a cell's elements as it scrolls.
    const text = () => { const el = document.querySelector(selector); return el && el.textContent; };
    window.__seen = [text()];
    new MutationObserver(() => {
        const now = text();
        if (now !== window.__seen[window.__seen.length - 1]) window.__seen.push(now);
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def _dismiss_news(page) -> None:
    """Close JupyterLab's "get notified about Jupyter news?" toast if it is showing."""
    no = page.get_by_role("button", name="No", exact=True)
    if no.count() and no.first.is_visible():
        no.first.click()


def _bad_parameter_error(page) -> str:
    """The error output of the last cell (the bad parameter), as the page shows it."""
    from playwright.sync_api import expect

    cell = page.locator(".jp-CodeCell").last
    error = cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    expect(error.first).to_be_visible(timeout=120_000)
    return error.first.text_content()


def test_sliders_moved_with_the_keyboard_change_the_readouts_and_figure(lab):
    from playwright.sync_api import expect, sync_playwright

    from smoothviz import load_compressed
    from smoothviz.measure import count_params

    url, work = lab
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "browser-rank-explorer.png"
    pct = re.compile(r"test accuracy: ([\d.]+) %")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(url("explore.ipynb"))
            page.locator(".jp-Notebook").first.wait_for(timeout=90_000)
            _wait_for_idle_kernel(page)
            _run_all_cells(page)
            explorer = page.locator(".smoothviz-rank-explorer").first
            accuracy = explorer.locator(".smoothviz-accuracy")
            params = explorer.locator(".smoothviz-params")
            expect(accuracy).to_contain_text("(full test set,", timeout=300_000)  # a loaded CI box
            _wait_for_idle_kernel(page)
            _dismiss_news(page)

            # 0. The last cell's bad parameter reads as one short paragraph, not a traceback.
            error = _bad_parameter_error(page)
            print(f"bad parameter shows:\n{error}")
            assert "ConfigError: param_reduction must be a number in [0, 0.95]" in error
            assert "got -0.2" in error and f"raised by line 1: {BAD_CELL}" in error
            assert "Traceback" not in error and len(error.strip().splitlines()) <= 4

            # Progress bars went away when done (none left behind, none marked as failed).
            assert page.locator(".progress-bar-danger").count() == 0
            start_text, start_params = accuracy.text_content(), params.text_content()
            start_figure = _figure_bytes(page)
            assert "FLOPs per image" in start_params
            page.evaluate(_RECORD_TEXTS, ".smoothviz-rank-explorer .smoothviz-accuracy")

            # 1. The global reduction slider, one key press at a time: the very first press
            # already moves the parameter readout (one evaluation per move).
            reduction = explorer.locator(".smoothviz-reduction .noUi-handle").first
            reduction.scroll_into_view_if_needed()
            reduction.focus()
            presses, seconds = _press_until_changed(page, reduction, "ArrowRight", params, 1)
            print(f"reduction: readout changed {seconds:.2f} s after the key press")
            # Steps are 0.5 %: press on until the full-set accuracy moves (at most 10 %).
            for _ in range(10):
                reduction.press("ArrowRight")
                _press_until_changed(page, reduction, "ArrowRight", accuracy, 30)
                expect(accuracy).to_contain_text("(full test set,", timeout=60_000)
                moved = pct.search(accuracy.text_content()).group(1)
                if moved != pct.search(start_text).group(1):
                    break
            moved_text, moved_params = accuracy.text_content(), params.text_content()
            moved_figure = _figure_bytes(page)
            assert moved_params != start_params and moved_figure != start_figure
            assert pct.search(moved_text).group(1) != pct.search(start_text).group(1)
            # While moving, the readout said "estimate" with its ±; then the full set replaced it.
            seen = page.evaluate("window.__seen")
            estimates = [t for t in seen if t and "estimate" in t]
            assert estimates, seen
            assert re.search(r"test accuracy: [\d.]+ % ± [\d.]+", estimates[0])
            assert "subset while moving: 100 images" in estimates[0]
            assert "follows" in estimates[0]  # when the full test set comes
            last_estimate = max(i for i, t in enumerate(seen) if t and "estimate" in t)
            assert any("(full test set" in t for t in seen[last_estimate + 1 :] if t), seen
            assert "estimate" not in moved_text

            # 2. A per-layer rank slider overrides the global split.
            handle = explorer.locator(".smoothviz-rank-slider .noUi-handle").first
            handle.scroll_into_view_if_needed()
            handle.focus()
            for _ in range(12):
                handle.press("ArrowLeft")
            expect(accuracy).not_to_have_text(moved_text, timeout=60_000)
            expect(accuracy).to_contain_text("(full test set,", timeout=60_000)
            after = accuracy.text_content()
            page.wait_for_timeout(1000)  # let the figure finish redrawing for the screenshot
            assert _figure_bytes(page) != moved_figure
            expect(explorer.locator(".smoothviz-rank-max").first).to_have_text(re.compile(r"/ \d+"))

            # 3. The Save button writes the chosen model; it loads back with the readout's size.
            explorer.locator(".smoothviz-save").click()
            saved = explorer.locator(".smoothviz-saved")
            expect(saved).to_contain_text("saved", timeout=60_000)
            path = Path(re.search(r"saved (\S+\.pt)", saved.text_content()).group(1))
            assert path.is_file() and work in path.parents
            shown = int(
                re.search(r"parameters: ([\d,]+)", params.text_content()).group(1).replace(",", "")
            )
            assert count_params(load_compressed(path)) == shown
            accuracy.scroll_into_view_if_needed()
            page.screenshot(path=str(shot))

            # 4. The mouse: drag the reduction handle to the middle of its track (about 50 %).
            track = explorer.locator(".smoothviz-reduction .noUi-target").first
            reduction.scroll_into_view_if_needed()
            box, grip = track.bounding_box(), reduction.bounding_box()
            page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + 0.53 * box["width"], box["y"] + box["height"] / 2, steps=12)
            page.mouse.up()
            expect(params).to_contain_text(re.compile(r"\((4\d|5\d)\.\d % fewer\)"), timeout=60_000)
            expect(accuracy).to_contain_text("(full test set,", timeout=60_000)
            page.set_viewport_size({"width": 1400, "height": 1500})
            page.evaluate(
                "document.querySelector('.smoothviz-rank-explorer').scrollIntoView({block: 'start'})"
            )
            page.wait_for_timeout(1000)  # the figure of the last measurement
            page.screenshot(path=str(ARTIFACTS / "notebook-05-explore.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-failure.png"))
            raise
        finally:
            browser.close()
    assert pct.search(after) and pct.search(moved_text).group(1) != pct.search(after).group(1)
    assert "status" not in after.lower()
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.parametrize("name", list(NOTEBOOK_RUNS))
def test_each_notebook_runs_in_the_browser(lab, name):
    """Run All on notebooks 01-04: their figures and captioned tables appear, no cell fails, no
    progress bar is left behind; the screenshot (``notebook-<name>.png``) starts at the heading
    :data:`NOTEBOOK_RUNS` names."""
    from playwright.sync_api import expect, sync_playwright

    url, _ = lab
    _, heading, n_figures = NOTEBOOK_RUNS[name]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            page.goto(url(f"{name}.ipynb"))
            page.locator(".jp-Notebook").first.wait_for(timeout=90_000)
            _wait_for_idle_kernel(page)
            _run_all_cells(page)
            figures = page.locator(".jp-OutputArea-output img")
            expect(figures).to_have_count(n_figures, timeout=420_000)
            _wait_for_idle_kernel(page, timeout=300)
            _dismiss_news(page)
            assert page.locator(".jp-OutputArea-output[data-mime-type*='stderr']").count() == 0
            assert page.locator(".progress-bar-danger").count() == 0
            captions = page.locator(".jp-OutputArea-output table caption")
            assert captions.count() >= 1, "no captioned table"
            page.locator(".jp-MarkdownCell", has_text=heading).first.click()
            page.evaluate(
                """(h) => [...document.querySelectorAll('.jp-MarkdownCell')]
                    .find((c) => c.textContent.includes(h)).scrollIntoView({block: 'start'})""",
                heading,
            )
            page.wait_for_timeout(800)
            page.screenshot(path=str(ARTIFACTS / f"notebook-{name.replace('_', '-')}.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"browser-failure-{name}.png"))
            raise
        finally:
            browser.close()
