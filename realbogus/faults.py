"""Fault injection for the crash tests: stop the process at a named point of its work.

Set ``REALBOGUS_FAULT=<point>[:<n>][@<signal>]`` and the process sends itself ``signal``
(default ``KILL``; ``INT`` acts as Ctrl-C, ``TERM`` as a scheduler's stop) the ``n``-th time
(default 1) it reaches ``point``. The points of a training run, in order:

``start``       the run folder is locked and marked running, nothing computed yet
``batch``       after a training step (``batch:7`` is the 7th step of this process)
``checkpoint``  an epoch's weight files are written, its ``state.json`` not yet replaced
``scoring``     the model is saved and the validation split scored, the test split not yet
``outputs``     ``predictions.csv`` is written, ``metrics.json`` and the figures not yet
``finalize``    the evaluation is written, the model card and the ``done`` state not yet

Without the variable every call is a dictionary look-up; nothing else changes.
"""

from __future__ import annotations

import os
import signal

__all__ = ["fault_point", "ENV"]

ENV = "REALBOGUS_FAULT"
_seen: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Count a pass through ``name``; send the configured signal on the configured pass."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    where, _, sig = spec.partition("@")
    point, _, nth = where.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(nth or 1):
        os.kill(os.getpid(), getattr(signal, f"SIG{sig or 'KILL'}"))
