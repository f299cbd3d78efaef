"""Where a number came from: the git commit named in every result file."""

from __future__ import annotations

from smoothviz import provenance


def test_the_commit_named_by_the_sender_wins_over_a_copied_git_folder(monkeypatch):
    monkeypatch.delenv(provenance.GIT_SHA_ENV, raising=False)
    own = provenance.git_sha()
    assert own != "unknown" and len(own.split("+")[0]) == 40  # this checkout's HEAD
    monkeypatch.setenv(provenance.GIT_SHA_ENV, "  d264ba7e4c8a  ")
    assert provenance.git_sha() == "d264ba7e4c8a (from $SMOOTHVIZ_GIT_SHA)"
    assert provenance.environment_info()["git_sha"] == "d264ba7e4c8a (from $SMOOTHVIZ_GIT_SHA)"
    monkeypatch.setenv(provenance.GIT_SHA_ENV, "")  # empty: not set
    assert provenance.git_sha() == own


def test_dates_and_versions_come_from_provenance():
    import re

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", provenance.utc_now())
    assert re.fullmatch(r"\d{8}-\d{6}", provenance.utc_now("%Y%m%d-%H%M%S"))
    versions = provenance.package_versions()
    assert list(versions) == list(provenance.REPORT_PACKAGES)
    assert versions["smoothviz"] != "not installed"
    assert provenance.package_versions(["no-such-package-xyz"]) == {
        "no-such-package-xyz": "not installed"
    }
