"""Choose the fastest of several ways to compute the same thing by timing them, once per machine.

Which code path is fastest depends on the processor in ways its feature flags do not predict:
on one 2-core machine with AVX-512 bfloat16 instructions the bfloat16 training step ran 1.8x the
float32 step, on an Intel Xeon with the same flags bfloat16 scoring ran 0.8x float32. So
whenever the package has a choice (training precision, scoring path) it times the candidates
on the machine at hand, keeps the fastest, and remembers the answer, keyed by

- what is being chosen (``kind``: ``training_precision``, ``scoring_precision``, ...),
- the processor (its model name) and the number of cores this process may use,
- a description of the work (model content, batch size, objective ...) supplied by the caller,

in one JSON file, ``$REALBOGUS_CACHE_DIR/speed.json`` (default ``~/.cache/realbogus``). Delete
the file, or set ``REALBOGUS_CACHE_DIR`` elsewhere, to measure again. An unreadable or
unwritable cache only costs the measurement.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

__all__ = ["Choice", "processor", "usable_cores", "cache_path", "cache_dir", "cache_key", "fastest"]


@dataclass(frozen=True)
class Choice:
    """The outcome of :func:`fastest`.

    Attributes
    ----------
    choice : str
        The fastest candidate.
    rates : dict of str to float
        Each candidate's measured rate (work units per second; higher is faster).
    measured : bool
        True when the candidates were timed by this call, False when the cache answered.
    """

    choice: str
    rates: dict
    measured: bool


def processor() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cache_path() -> Path:
    """The cache file: ``$REALBOGUS_CACHE_DIR/speed.json`` (default ``~/.cache/realbogus``)."""
    return Path(os.environ.get("REALBOGUS_CACHE_DIR", Path.home() / ".cache" / "realbogus")) / "speed.json"


@contextlib.contextmanager
def cache_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Keep the cache in folder ``path`` inside the block (tests, smoke runs: not the user's cache).

    Sets ``REALBOGUS_CACHE_DIR``, so child processes started inside the block use it too.
    """
    previous = os.environ.get("REALBOGUS_CACHE_DIR")
    os.environ["REALBOGUS_CACHE_DIR"] = str(path)
    try:
        yield Path(path)
    finally:
        if previous is None:
            os.environ.pop("REALBOGUS_CACHE_DIR", None)
        else:
            os.environ["REALBOGUS_CACHE_DIR"] = previous


def cache_key(kind: str, work: Mapping) -> str:
    """Sixteen hex digits naming (``kind``, processor, usable cores, ``work``)."""
    what = {"kind": kind, "cpu": processor(), "cores": usable_cores(), "work": work}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read() -> dict:
    try:
        cache = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def fastest(kind: str, work: Mapping, candidates: Mapping[str, Callable[[], float]],
            announce: Callable[[str], None] | None = print) -> Choice:
    """The candidate with the highest rate, from the cache or by calling each candidate once.

    Parameters
    ----------
    kind
        What is chosen (part of the cache key and of the messages).
    work
        JSON-able description of the work that the rates depend on (model content, batch size).
    candidates
        Name -> function timing that candidate and returning its rate (higher is faster).
        Called only when the cache has no answer; a cached choice that is no longer among the
        candidates is measured again.
    announce
        Called with a one-line message before measuring and with the choice (``None``: silent).

    Returns
    -------
    Choice
    """
    if not candidates:
        raise ValueError("fastest() needs at least one candidate")
    key = cache_key(kind, work)
    entry = _read().get(key)
    if isinstance(entry, dict) and entry.get("choice") in candidates:
        choice = Choice(str(entry["choice"]), dict(entry.get("rates") or {}), False)
    else:
        if announce:
            announce(f"{kind}=auto: timing {', '.join(candidates)} once on this processor ...")
        rates = {name: float(measure()) for name, measure in candidates.items()}
        choice = Choice(max(rates, key=rates.get), rates, True)
        cache = _read()  # re-read: another process may have added its own entry meanwhile
        cache[key] = {"kind": kind, "choice": choice.choice, "rates": {k: round(v, 2) for k, v in rates.items()},
                      "cpu": processor(), "cores": usable_cores(), "work": dict(work),
                      "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            from realbogus.io import save_json

            save_json(cache_path(), cache)
        except OSError:
            pass  # an unwritable cache only costs the measurement next time
    if announce:
        rates = ", ".join(f"{k} {v:,.0f}/s" for k, v in choice.rates.items())
        announce(f"{kind}=auto: {choice.choice} ({rates} on {processor()}, {usable_cores()} cores"
                 f"{'' if choice.measured else '; cached'})")
    return choice
