"""Parameter and input errors read as one short paragraph in a notebook, full traceback on demand.

IPython shows what an exception's ``_render_traceback_`` returns instead of its traceback; these
tests run the package's errors through a real IPython shell, as a notebook cell would.
"""

from __future__ import annotations

import re
import sys

import pytest
from IPython.testing.globalipapp import get_ipython

from smoothviz import BudgetError, ConfigError, full_traceback
from smoothviz.errors import TRACEBACK_ENV, ShortTraceback, error_text, short_traceback

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def shell():
    return get_ipython()


def _shown(shell, code: str, capsys) -> tuple[str, BaseException]:
    """What a cell running ``code`` shows for its error (colour codes removed), and the error."""
    shell.run_cell(code)
    out = capsys.readouterr()
    return _ANSI.sub("", out.out + out.err), sys.last_value


def test_the_packages_input_errors_render_short():
    assert issubclass(ConfigError, ShortTraceback) and issubclass(ConfigError, ValueError)
    assert issubclass(BudgetError, ShortTraceback) and issubclass(BudgetError, ValueError)


def test_a_bad_parameter_shows_one_paragraph_naming_it_and_the_users_line(shell, capsys):
    code = (
        "from smoothviz.notebook_params import ExploreParams\n"
        "params = ExploreParams.from_dict({'prune_ratio': -0.2})\n"
    )
    text, exc = _shown(shell, code, capsys)
    assert isinstance(exc, ConfigError)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert lines[0].startswith("ConfigError: prune_ratio must be a number in [0, 0.95]")
    assert "got -0.2" in lines[0]
    assert "raised by line 2: params = ExploreParams.from_dict" in text
    assert "smoothviz.full_traceback()" in text
    assert len(lines) <= 4  # a paragraph, not a traceback through the package's internals
    assert "validated.py" not in text and "Traceback" not in text


def test_full_traceback_shows_the_frames_on_demand(shell, capsys, monkeypatch):
    shell.run_cell(
        "from smoothviz import svd_compress\n"
        "from smoothviz.models import build_model\n"
        "svd_compress(build_model('cnn', width=8), param_reduction=0.9999)\n"
    )
    short = _ANSI.sub("", capsys.readouterr().out)
    assert "BudgetError" in short and "budget.py" not in short
    full_traceback()  # the last error of the session, every frame
    full = _ANSI.sub("", capsys.readouterr().out)
    assert "BudgetError" in full and "budget.py" in full and "svd.py" in full
    # ... or always, with the environment variable.
    monkeypatch.setenv(TRACEBACK_ENV, "full")
    shell.run_cell("svd_compress(build_model('cnn', width=8), param_reduction=0.9999)\n")
    assert "budget.py" in _ANSI.sub("", capsys.readouterr().out)


def test_other_errors_keep_their_traceback(shell, capsys):
    shell.run_cell("def f():\n    raise KeyError('x')\nf()\n")
    text = _ANSI.sub("", capsys.readouterr().out)
    assert "Traceback" in text and "----> 3 f()" in text


def test_the_one_line_form_is_unchanged():
    try:
        raise ConfigError("width must be an int >= 1, got 0")
    except ConfigError as exc:
        assert error_text(exc) == "ConfigError: width must be an int >= 1, got 0"
        lines = short_traceback(exc)
    assert "ConfigError" in lines[0] and "width must be" in lines[0]
    assert "raised by line" in lines[1]  # this test's own line: it is outside the package
