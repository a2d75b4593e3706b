"""User-facing errors and the one-line reporting used by every command-line entry point."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, TypeVar

__all__ = ["RealbogusError", "DataError", "ConfigError", "report_errors", "check_output_overrides"]

F = TypeVar("F", bound=Callable)


class RealbogusError(Exception):
    """An error caused by the user's input or configuration, reported as one line."""


class DataError(RealbogusError):
    """A data file is missing, unreadable, of the wrong shape or holds invalid values."""


class ConfigError(RealbogusError):
    """A configuration value is invalid or inconsistent."""


def report_errors(func: F) -> F:
    """Turn a :class:`RealbogusError` raised by ``func`` into ``error: ...`` and exit status 2.

    Wrap the body of a command's main function with it, inside ``@hydra.main``, so Hydra's own
    traceback printing never sees the expected, user-caused errors.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RealbogusError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


#: Command-line keys naming a folder that Hydra creates before a command's own code runs.
_OUTPUT_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def check_output_overrides(argv: list[str] | None = None) -> None:
    """Stop with one line (exit 2) when an output folder given on the command line cannot exist.

    Hydra creates ``hydra.run.dir`` before the command's code runs, and a path under an existing
    file makes it fail with a traceback; call this before the ``@hydra.main`` function.
    """
    for arg in sys.argv[1:] if argv is None else argv:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+") not in _OUTPUT_KEYS:
            continue
        path = Path(value)
        for parent in (path, *path.parents):
            if parent.exists():
                if not parent.is_dir():
                    print(f"error: {key}={value}: {parent} is a file, not a folder", file=sys.stderr)
                    sys.exit(2)
                break
