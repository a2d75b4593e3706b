"""User-facing errors and the one-line reporting used by every command-line entry point."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

__all__ = ["RealbogusError", "DataError", "ConfigError", "report_errors"]

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
