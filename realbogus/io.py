"""Atomic file output: everything is written under a temporary name and renamed into place."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

__all__ = ["atomic_path", "atomic_write", "save_json", "read_json", "save_csv_table", "to_jsonable"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned(folder: Path, stem: str, suffixes: str) -> None:
    """Delete temporaries of the same output left by writers that died (their pid is in the name)."""
    for tmp in folder.glob(f".{stem}.*.tmp{suffixes}"):
        pid = tmp.name[len(stem) + 2:].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    Use it for writers that want a file name (h5py, matplotlib, Keras). On an exception the
    temporary file is removed and ``path`` is left as it was. The temporary's name holds the
    writer's pid (``.<stem>.<pid>-<random>.tmp<suffixes>``), so the temporaries of a writer that
    was killed are removed the next time anything writes the same output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the whole suffix chain (".weights.h5", ".keras") last: some writers check it.
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    _remove_abandoned(path.parent, stem, suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.{os.getpid()}-", suffix=f".tmp{suffixes}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates the file private (0600); give it the permissions of an ordinary new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file beside ``path`` for writing; rename it to ``path`` on success."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def to_jsonable(obj):
    """Convert numpy scalars/arrays (recursively) to plain Python for JSON; NaN becomes None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def save_json(path: str | os.PathLike, obj, indent: int = 2) -> Path:
    """Write ``obj`` as JSON atomically."""
    with atomic_write(path) as fh:
        json.dump(to_jsonable(obj), fh, indent=indent)
        fh.write("\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON content of ``path``, or None when it is missing or unreadable."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def save_csv_table(path: str | os.PathLike, columns: Mapping[str, Sequence], float_format: str = "%.8g") -> Path:
    """Write equal-length columns as a CSV with a header row, atomically."""
    names = list(columns)
    cols = [np.asarray(columns[n]) for n in names]
    n = len(cols[0]) if cols else 0
    if any(len(c) != n for c in cols):
        raise ValueError("columns differ in length")

    def fmt(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else float_format % v
        return str(v)

    with atomic_write(path, newline="") as fh:
        fh.write(",".join(names) + "\n")
        for i in range(n):
            fh.write(",".join(fmt(c[i]) for c in cols) + "\n")
    return Path(path)
