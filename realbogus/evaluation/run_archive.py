"""Compact copies of finished runs, small enough to commit, from which their folders come back.

A run folder holds weights, checkpoints and logs (tens of MB) and lives on the machine that trained
it; the figures and the report need only a few of its files. :func:`archive_run` keeps those, and
:func:`restore_run` writes them back as a finished run folder, so ``python -m realbogus.reproduce``
redraws its figures and report (``draw_only=true``) or finishes the runs still missing on a
machine that never trained the others. Layout of one archive (a folder named like the run)::

    run_config.yaml, run_state.json, history.csv, metrics.json   copies
    checkpoint/state.json                                          copy (epochs, early stopping)
    label_error_report.json, label_noise.json                      copies, when the run has them
    label_errors.csv.gz                                            gzip of the copy, when present
    predictions.npz                                                the test predictions, every column
                                                                   of predictions.csv (kinds as codes
                                                                   + names), compressed, exact
    ARCHIVE.json                                                   format version, source, file hashes

Exact means that the restored ``predictions.csv`` is byte-identical to the original (a test checks
it): scores are kept in float32 when that loses nothing, else float64, and magnitudes likewise
(compared through the CSV's ``%.7g`` text). The model itself (``model.keras``) is not kept, so a
restored run cannot be scored again or resumed (its ``run_state.json`` says ``restored_from``), and
the real-data check, which needs the network, leaves it out.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from realbogus.errors import DataError
from realbogus.io import read_json, save_json
from realbogus.rundir import RunDir

__all__ = ["FORMAT", "COPIED", "archive_run", "restore_run", "archived_config", "is_archive", "archive_size", "manifest",
           "file_sha256", "config_differences", "restore_planned", "archive_if_changed"]

FORMAT = 1
#: Files copied as they are, relative to the run folder (names from :class:`realbogus.rundir.RunDir`).
COPIED = (RunDir.CONFIG, RunDir.STATE, RunDir.HISTORY, RunDir.METRICS, f"{RunDir.CHECKPOINT}/state.json",
          "label_error_report.json", "label_noise.json")
GZIPPED = ("label_errors.csv",)
PREDICTIONS = RunDir.PREDICTIONS
MANIFEST = "ARCHIVE.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _narrow(values: np.ndarray, text=None) -> np.ndarray:
    """float32 when it keeps every value (compared as numbers, or as ``text`` renders them)."""
    values = np.asarray(values, np.float64)
    f32 = values.astype(np.float32)
    if text is None:
        same = np.array_equal(f32.astype(np.float64), values, equal_nan=True)
    else:
        same = np.array_equal(text(f32.astype(np.float64)), text(values))
    return f32 if same else values


def _mag_text(mag: np.ndarray) -> np.ndarray:
    out = np.char.mod("%.7g", mag)
    out[~np.isfinite(mag)] = ""
    return out


def _int(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.int64)
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if values.size == 0 or (values.min() >= info.min and values.max() <= info.max):
            return values.astype(dtype)
    return values


def is_archive(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def archive_size(path: str | os.PathLike) -> int:
    """Bytes on disk of an archive folder."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def archive_run(run_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write the compact copy of finished run ``run_dir`` into folder ``dest`` (replaced whole).

    Raises
    ------
    DataError
        The run has no ``predictions.csv`` or ``run_config.yaml`` (it is not a finished run).
    """
    from realbogus.evaluation.report import read_predictions

    run_dir, dest = Path(run_dir), Path(dest)
    for need in (RunDir.CONFIG, PREDICTIONS):
        if not (run_dir / need).is_file():
            raise DataError(f"{run_dir}: no {need}; only a finished run can be archived")
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {}
    for name in COPIED:
        src = run_dir / name
        if src.is_file():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / name)
            files[name] = file_sha256(src)
    for name in GZIPPED:
        src = run_dir / name
        if src.is_file():
            with open(src, "rb") as fin, gzip.GzipFile(tmp / f"{name}.gz", "wb", compresslevel=9, mtime=0) as fout:
                shutil.copyfileobj(fin, fout)
            files[name] = file_sha256(src)
    pred = read_predictions(run_dir / PREDICTIONS)
    kinds, codes = np.unique(pred["kind"], return_inverse=True)
    np.savez_compressed(tmp / "predictions.npz", index=_int(pred["index"]), score=_narrow(pred["score"]),
                        label=_int(pred["label"]), true_label=_int(pred["true_label"]),
                        sensor_id=_int(pred["sensor_id"]), kind=_int(codes), kind_names=kinds.astype(str),
                        mag=_narrow(pred["mag"], _mag_text))
    files[PREDICTIONS] = file_sha256(run_dir / PREDICTIONS)
    save_json(tmp / MANIFEST, {"format": FORMAT, "run": run_dir.name, "files": files})
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old{os.getpid()}")
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(dest)
    return dest


def archived_config(src: str | os.PathLike) -> dict | None:
    """The archived run's ``run_config.yaml`` as plain Python (keys added later filled in)."""
    from omegaconf import OmegaConf

    from realbogus.rundir import fill_added_keys

    path = Path(src) / RunDir.CONFIG
    if not path.is_file():
        return None
    return fill_added_keys(OmegaConf.to_container(OmegaConf.load(path), resolve=True))


def restore_run(src: str | os.PathLike, run_dir: str | os.PathLike) -> Path:
    """Write archive ``src`` back as the finished run folder ``run_dir`` (which must hold no run).

    Every file is checked against the hash recorded when it was archived.

    Raises
    ------
    DataError
        ``src`` is not an archive, a file differs from its recorded hash, or ``run_dir``
        already holds a run.
    """
    from realbogus.evaluation.report import write_predictions

    src, run_dir = Path(src), Path(run_dir)
    manifest = read_json(src / MANIFEST)
    if not manifest or manifest.get("format") != FORMAT:
        raise DataError(f"{src}: not a run archive of format {FORMAT} (no readable {MANIFEST})")
    if (run_dir / RunDir.STATE).is_file() or (run_dir / RunDir.CHECKPOINT).is_dir():
        raise DataError(f"{run_dir}: already holds a run; restore only into a missing or empty folder")
    files = manifest.get("files", {})
    tmp = run_dir.with_name(f".{run_dir.name}.restore{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in COPIED:
            if (src / name).is_file():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / name, tmp / name)
        for name in GZIPPED:
            if (src / f"{name}.gz").is_file():
                with gzip.open(src / f"{name}.gz", "rb") as fin, open(tmp / name, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
        try:
            with np.load(src / "predictions.npz", allow_pickle=False) as z:
                cols = {k: z[k] for k in ("index", "score", "label", "true_label", "sensor_id", "mag")}
                cols["kind"] = z["kind_names"][z["kind"]]
        except (OSError, ValueError, KeyError, IndexError) as exc:  # zipfile.BadZipFile is an OSError
            raise DataError(f"{src}/predictions.npz: unreadable ({exc})") from None
        write_predictions(tmp / PREDICTIONS, cols)
        for name, digest in files.items():
            if not (tmp / name).is_file() or file_sha256(tmp / name) != digest:
                raise DataError(f"{src}: {name} does not restore to the file that was archived (hash differs)")
        state = read_json(tmp / RunDir.STATE) or {"status": "done"}
        state["restored_from"] = str(src)
        save_json(tmp / RunDir.STATE, state)
        if run_dir.exists():
            leftover = [p.name for p in run_dir.iterdir()]
            if leftover:
                raise DataError(f"{run_dir}: not empty ({', '.join(leftover[:3])}); restore only into an empty folder")
            run_dir.rmdir()
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return run_dir


def manifest(src: str | os.PathLike) -> dict | None:
    return read_json(Path(src) / MANIFEST)


def config_differences(src: str | os.PathLike, planned) -> list[str]:
    """How archive ``src``'s config differs from ``planned`` (a composed training config), by the
    resume rule of :mod:`realbogus.rundir` (display, scoring and precision keys do not count)."""
    from omegaconf import OmegaConf

    from realbogus.rundir import config_diff, fill_added_keys, resume_neutral_keys

    saved = archived_config(src)
    if saved is None:
        return [f"no {RunDir.CONFIG}"]
    new = OmegaConf.to_container(planned, resolve=True) if not isinstance(planned, dict) else planned
    return [d for d in config_diff(saved, fill_added_keys(new)) if not d.startswith(resume_neutral_keys(new))]


def restore_planned(root: str | os.PathLike, run_dir: str | os.PathLike, epochs: int, planned) -> str:
    """Restore planned run ``run_dir`` from ``root/<its name>`` if it can stand for the run.

    Returns ``"restored"``; ``""`` when there is nothing to do (no archive, or the folder already
    holds a run); otherwise why the archive was not used (another config, fewer epochs), and the
    run is to be trained. ``planned`` is the run's composed training config, or a function
    returning it (called only when there is an archive to compare).
    """
    src, folder = Path(root) / Path(run_dir).name, RunDir(run_dir)
    if not is_archive(src) or folder.state() is not None or folder.checkpoint_dir.is_dir():
        return ""
    if not RunDir(src).is_done(epochs):  # the copy holds the files that decide it
        return f"{src}: trained for fewer epochs than planned ({epochs}); not restored, to be trained"
    diffs = config_differences(src, planned() if callable(planned) else planned)
    if diffs:
        return f"{src}: archived with another config ({', '.join(diffs[:3])}); not restored, to be trained"
    restore_run(src, run_dir)
    return "restored"


def archive_if_changed(root: str | os.PathLike, run_dir: str | os.PathLike, epochs: int | None = None) -> Path | None:
    """Archive finished run ``run_dir`` into ``root/<its name>`` unless that copy is current."""
    folder = RunDir(run_dir)
    if not folder.is_done(epochs) or not folder.predictions_path.is_file() or not folder.config_path.is_file():
        return None
    dest = Path(root) / folder.path.name
    known = ((manifest(dest) or {}).get("files") or {}).get(PREDICTIONS)
    if known is not None and known == file_sha256(folder.predictions_path):
        return None
    return archive_run(folder.path, dest)

