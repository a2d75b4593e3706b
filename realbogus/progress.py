"""Progress display: a tqdm bar on a terminal, a short line every minute in a log.

A bar redraws itself with carriage returns, which fill a log file (a simulation of the paper-scale
data writes thousands of redraws). :func:`progress_bar` gives tqdm's bar when its stream is a
terminal, and otherwise an object with the same ``update`` / ``close`` / context-manager interface
that prints ``desc: done/total (p%), rate unit/s`` every ``every`` seconds and once at the end.
"""

from __future__ import annotations

import sys
import time

__all__ = ["progress_bar", "LineProgress"]


def _count(n: float) -> str:
    return f"{n:,.0f}"


class LineProgress:
    """``update(n)`` counts; a line is printed at most every ``every`` seconds, and at ``close()``."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", every: float = 60.0,
                 disable: bool = False, file=None):
        self.total, self.desc, self.unit, self.every, self.disable = total, desc, unit, float(every), disable
        self.file = file if file is not None else sys.stderr
        self.n = 0
        self.t0 = self.last = time.monotonic()
        self._closed = False

    def _line(self) -> str:
        rate = self.n / max(time.monotonic() - self.t0, 1e-9)
        done = _count(self.n) + (f"/{_count(self.total)} ({100 * self.n / self.total:.0f}%)" if self.total else "")
        return f"{self.desc}: {done}, {rate:,.0f} {self.unit}/s"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self.last >= self.every:
            self.last = now
            print(self._line(), file=self.file, flush=True)

    def close(self) -> None:
        if not self._closed and not self.disable and self.n:
            print(self._line(), file=self.file, flush=True)
        self._closed = True

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False,
                 every: float = 60.0, file=None, **tqdm_options):
    """A tqdm bar on a terminal, else a :class:`LineProgress` (a line every ``every`` seconds)."""
    stream = file if file is not None else sys.stderr
    if not disable and hasattr(stream, "isatty") and stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=stream, **tqdm_options)
    return LineProgress(total, desc, unit, every, disable, stream)
