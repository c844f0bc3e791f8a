"""cpm_nb.core.progress: a tqdm bar where someone watches, plain lines when headless."""

import io

import pytest

from cpm_nb.core import progress as P


def test_the_mode_follows_the_environment(monkeypatch):
    monkeypatch.setenv("CPM_NB_STATIC", "1")
    assert P.resolve_mode(True) == "lines"
    assert P.resolve_mode(False) == P.resolve_mode(None) == "off"
    assert P.resolve_mode("bar") == "bar"
    monkeypatch.setenv("CPM_NB_STATIC", "0")
    monkeypatch.setattr(P, "_is_terminal", lambda stream: True)
    assert P.resolve_mode(True) == "bar"
    monkeypatch.setattr(P, "_is_terminal", lambda stream: False)  # a log file, a pipe
    assert P.resolve_mode(True) == "lines"
    with pytest.raises(ValueError, match="progress mode"):
        P.resolve_mode("fancy")


def test_headless_lines_come_every_tenth_with_the_postfix():
    out = io.StringIO()
    with P.Progress(40, "cropping train", unit="person", mode="lines", stream=out) as bar:
        for i in range(40):
            if i == 20:
                bar.set_postfix({"loss": "0.25"})
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("cropping train: 4/40 people (")
    assert lines[-1].startswith("cropping train: 40/40 people, loss 0.25 (")


def test_coarse_updates_and_an_early_stop():
    out = io.StringIO()
    bar = P.Progress(20, "training", unit="step", initial=5, mode="lines", stream=out)
    bar.update_to(10)
    bar.update_to(10)  # no news: no line
    bar.update_to(12)
    bar.close()  # stopped early: the last count is shown
    bar.close()
    assert [x.split(" (")[0] for x in out.getvalue().splitlines()] == [
        "training: 10/20 steps", "training: 12/20 steps"]


def test_bytes_and_unknown_totals():
    out = io.StringIO()
    with P.Progress(3 * 2**20, "mpii.tar.gz", unit="B", unit_scale=True, mode="lines",
                    stream=out) as bar:
        bar.update(3 * 2**20)
    assert out.getvalue().startswith("mpii.tar.gz: 3.00MB/3.00MB (")
    out = io.StringIO()
    with P.Progress(None, "extracting", unit="file", mode="lines", stream=out) as bar:
        bar.update(5)
    assert out.getvalue().startswith("extracting: 5 files (")  # at the end only


def test_a_bar_in_a_terminal_and_nothing_when_off():
    out = io.StringIO()
    with P.Progress(8, "rendering", unit="img", mode="bar", stream=out) as bar:
        assert bar.is_bar
        bar.update(8)
    assert "rendering" in out.getvalue() and "8/8" in out.getvalue()
    quiet = io.StringIO()
    with P.Progress(8, "rendering", mode=False, stream=quiet) as bar:
        bar.update(8)
    assert quiet.getvalue() == "" and not bar.is_bar


def test_track_yields_every_item_and_counts_them(capsys):
    assert list(P.track(range(5), "x", mode=False)) == [0, 1, 2, 3, 4]
    assert list(P.track(iter(range(3)), "jobs", unit="job", mode="lines")) == [0, 1, 2]
    assert capsys.readouterr().err.startswith("jobs: 3 jobs (")
