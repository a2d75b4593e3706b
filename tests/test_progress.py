"""Progress display: a bar on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from realbogus.progress import LineProgress, progress_bar


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_a_log_gets_a_line_a_minute_and_no_carriage_returns(monkeypatch):
    import realbogus.progress as P

    clock = _Clock()
    monkeypatch.setattr(P.time, "monotonic", clock)
    out = io.StringIO()  # not a terminal
    bar = progress_bar(total=1000, desc="simulate train", unit="triplet", file=out, unit_scale=True)
    assert isinstance(bar, LineProgress)
    with bar:
        for _ in range(10):
            clock.t += 15.0
            bar.update(100)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == ["simulate train: 400/1,000 (40%), 7 triplet/s", "simulate train: 800/1,000 (80%), 7 triplet/s",
                     "simulate train: 1,000/1,000 (100%), 7 triplet/s"]


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    with progress_bar(total=10, desc="x", disable=True, file=out) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_a_terminal_gets_tqdm():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    from tqdm import tqdm

    bar = progress_bar(total=3, desc="x", file=Tty())
    assert isinstance(bar, tqdm)
    bar.close()
