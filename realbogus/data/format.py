"""The realbogus HDF5 dataset format: one file per split (``train.h5``, ``test.h5``).

Layout (format version 1.0)::

    images      float32 (N, 29, 29, 3)  channels (new, ref, diff), counts (ADU), chunked by rows
    label       int8    (N,)            label as given: 1 real, 0 bogus, -1 unlabelled
    true_label  int8    (N,)            ground truth (simulated data only; optional)
    sensor_id   int16   (N,)            detector 0..83 (-1 unknown)
    kind        int16   (N,)            index into the file attribute ``kind_names``
    mag         float32 (N,)            magnitude of the (injected) source, NaN where none
    <extra>     any 1-D (N,)            optional per-sample columns (e.g. ``fwhm_new``, ``candid``);
                                        text columns are variable-length UTF-8 strings

File attributes: ``format`` ("realbogus"), ``format_version``, ``channel_order``
("new,ref,diff"), ``pixel_scale_arcsec``, ``kind_names`` (list of str), ``seed`` (-1 if not
simulated), ``config`` (YAML text of the generating or converting configuration), ``split``,
``n_rows``.

Files are written under a temporary name in the same folder and renamed into place when
complete, so a reader never sees a half-written file and a crash leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from realbogus.data.kinds import KIND_NAMES
from realbogus.errors import DataError

__all__ = [
    "FORMAT_VERSION",
    "STAMP_SHAPE",
    "CHANNEL_ORDER",
    "CORE_FIELDS",
    "DatasetWriter",
    "H5Dataset",
    "open_dataset",
    "read_dataset",
    "write_dataset",
    "check_images",
]

FORMAT_VERSION = "1.0"
STAMP_SHAPE = (29, 29, 3)
CHANNEL_ORDER = "new,ref,diff"
DEFAULT_PIXEL_SCALE = 1.189
CORE_FIELDS: dict[str, str] = {
    "label": "int8",
    "sensor_id": "int16",
    "kind": "int16",
    "mag": "float32",
}
OPTIONAL_FIELDS: dict[str, str] = {"true_label": "int8"}


def _is_text_dtype(dtype) -> bool:
    """Whether a declared column dtype holds text (numpy str/bytes, ``str`` or object)."""
    if dtype is str:
        return True
    try:
        return np.dtype(dtype).kind in "USO"
    except TypeError:
        return False


def _publish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the usual permissions of a new file (mkstemp makes it private) and rename it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def check_images(images: np.ndarray, source: str) -> np.ndarray:
    """Check that ``images`` is a finite float array of shape (N, 29, 29, 3).

    Parameters
    ----------
    images
        Array of stamps.
    source
        Name of where the stamps came from, used in error messages.

    Returns
    -------
    numpy.ndarray
        The stamps as float32.

    Raises
    ------
    DataError
        On a wrong shape or non-finite pixels, naming ``source`` and the first bad row.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != STAMP_SHAPE:
        raise DataError(
            f"{source}: stamps have shape {images.shape}, expected (N, 29, 29, 3) "
            f"with channels ({CHANNEL_ORDER})"
        )
    if not np.issubdtype(images.dtype, np.number):
        raise DataError(f"{source}: stamps have non-numeric dtype {images.dtype}")
    images = images.astype(np.float32, copy=False)
    finite = np.isfinite(images).all(axis=(1, 2, 3))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(
            f"{source}: {bad.size} stamp(s) hold NaN/inf pixels (first at row {bad[0]}); "
            "use nan_policy=fill to replace masked pixels"
        )
    return images


class DatasetWriter:
    """Append samples to a new realbogus HDF5 file, atomically.

    Use as a context manager; the file appears at ``path`` only when the block exits without an
    exception.

    Parameters
    ----------
    path
        Destination file.
    attrs
        Extra file attributes (``seed``, ``config``, ``split``, ``pixel_scale_arcsec``, ...).
    chunk_rows
        Rows per HDF5 chunk of ``images``.
    with_true_label
        Whether the file carries ``true_label``.
    extra_fields
        Names and dtypes of additional per-sample columns.
    overwrite
        Replace an existing file; otherwise an existing ``path`` is an error.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        attrs: Mapping | None = None,
        chunk_rows: int = 512,
        with_true_label: bool = False,
        extra_fields: Mapping[str, str] | None = None,
        overwrite: bool = False,
    ):
        import h5py

        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise DataError(f"{self.path}: already exists (refusing to overwrite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._file = None
        try:
            self._file = h5py.File(self._tmp, "w")
            self._create(attrs, chunk_rows, with_true_label, extra_fields)
        except BaseException:
            self.abort()
            raise

    def _create(self, attrs, chunk_rows, with_true_label, extra_fields) -> None:
        import h5py

        self.n_rows = 0
        self._fields = dict(CORE_FIELDS)
        if with_true_label:
            self._fields.update(OPTIONAL_FIELDS)
        self._fields.update(extra_fields or {})
        # Text columns (identifiers such as object names) are stored as variable-length UTF-8.
        self._text = {name for name, dtype in self._fields.items() if _is_text_dtype(dtype)}
        f = self._file
        f.create_dataset(
            "images", shape=(0, *STAMP_SHAPE), maxshape=(None, *STAMP_SHAPE), dtype="float32",
            chunks=(chunk_rows, *STAMP_SHAPE),
        )
        for name, dtype in self._fields.items():
            if name in self._text:
                dtype = h5py.string_dtype("utf-8")
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(max(chunk_rows, 4096),))
        base = {
            "format": "realbogus",
            "format_version": FORMAT_VERSION,
            "channel_order": CHANNEL_ORDER,
            "pixel_scale_arcsec": DEFAULT_PIXEL_SCALE,
            "kind_names": list(KIND_NAMES),
            "seed": -1,
            "config": "",
            "split": "",
        }
        base.update(dict(attrs or {}))
        for key, value in base.items():
            f.attrs[key] = value

    def append(self, images: np.ndarray, **columns: np.ndarray) -> None:
        """Append a block of samples; every declared column must be given with N rows."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != STAMP_SHAPE:
            raise DataError(f"{self.path}: cannot append stamps of shape {images.shape}")
        n = images.shape[0]
        missing = set(self._fields) - set(columns)
        unknown = set(columns) - set(self._fields)
        if missing or unknown:
            raise ValueError(f"columns missing {sorted(missing)} / undeclared {sorted(unknown)}")
        start, stop = self.n_rows, self.n_rows + n
        ds = self._file["images"]
        ds.resize(stop, axis=0)
        ds[start:stop] = images
        for name in self._fields:
            col = np.asarray(columns[name]).reshape(-1)
            if name in self._text:
                col = np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in col], dtype=object)
            if col.shape[0] != n:
                raise ValueError(f"column {name!r} has {col.shape[0]} rows, images have {n}")
            d = self._file[name]
            d.resize(stop, axis=0)
            d[start:stop] = col
        self.n_rows = stop

    def close(self) -> Path:
        """Finish the file and move it into place; return its path."""
        try:
            self._file.attrs["n_rows"] = self.n_rows
            self._file.close()
            _publish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        try:
            if self._file is not None:
                self._file.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_dataset(
    path: str | os.PathLike,
    images: np.ndarray,
    columns: Mapping[str, np.ndarray],
    attrs: Mapping | None = None,
    overwrite: bool = False,
    chunk_rows: int = 512,
) -> Path:
    """Write whole arrays to a new realbogus HDF5 file (atomically). Returns the path."""
    columns = dict(columns)
    extra = {
        k: str(np.asarray(v).dtype)
        for k, v in columns.items()
        if k not in CORE_FIELDS and k not in OPTIONAL_FIELDS
    }
    with DatasetWriter(
        path, attrs=attrs, chunk_rows=chunk_rows, with_true_label="true_label" in columns,
        extra_fields=extra, overwrite=overwrite,
    ) as w:
        n = len(images)
        step = max(chunk_rows * 16, 1)
        for s in range(0, n, step):
            w.append(images[s:s + step], **{k: np.asarray(v)[s:s + step] for k, v in columns.items()})
    return Path(path)


class H5Dataset:
    """A validated, open realbogus HDF5 file with lazy row access.

    Use :func:`open_dataset` to create one. Per-sample columns are read whole (they are small);
    ``images`` are read by row selection or in contiguous blocks.
    """

    def __init__(self, path: str | os.PathLike, required: Sequence[str] | None = None):
        import h5py

        self.path = Path(path)
        self._required = tuple(CORE_FIELDS) if required is None else tuple(required)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise DataError(f"{self.path}: is a directory, expected an HDF5 file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            reason = str(exc).split("(")[-1].rstrip(")") if "(" in str(exc) else str(exc)
            raise DataError(f"{self.path}: not a readable HDF5 file ({reason})") from None
        try:
            self._validate()
        except Exception:
            self._file.close()
            raise

    def _validate(self) -> None:
        f = self._file
        if "images" not in f:
            raise DataError(f"{self.path}: no 'images' dataset; not a realbogus file")
        shape = f["images"].shape
        if len(shape) != 4 or tuple(shape[1:]) != STAMP_SHAPE:
            raise DataError(f"{self.path}: 'images' has shape {shape}, expected (N, 29, 29, 3)")
        self.n = int(shape[0])
        for name in self._required:
            if name not in f:
                raise DataError(f"{self.path}: missing dataset {name!r}")
        for name, ds in f.items():
            if not hasattr(ds, "shape"):
                raise DataError(f"{self.path}: unexpected group {name!r}; not a realbogus file")
            if name != "images" and (ds.ndim != 1 or ds.shape[0] != self.n):
                raise DataError(f"{self.path}: dataset {name!r} has shape {ds.shape}, expected ({self.n},)")
        version = str(f.attrs.get("format_version", ""))
        if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
            raise DataError(f"{self.path}: format version {version!r} is not supported (expected {FORMAT_VERSION})")
        if "n_rows" in f.attrs and int(f.attrs["n_rows"]) != self.n:
            raise DataError(f"{self.path}: truncated (n_rows says {int(f.attrs['n_rows'])}, images hold {self.n})")

    # -- metadata
    @property
    def attrs(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self._file.attrs.items()}

    @property
    def kind_names(self) -> list[str]:
        names = self._file.attrs.get("kind_names")
        return [str(n) for n in names] if names is not None else list(KIND_NAMES)

    @property
    def fields(self) -> list[str]:
        return [k for k in self._file.keys() if k != "images"]

    def __len__(self) -> int:
        return self.n

    # -- data
    def column(self, name: str) -> np.ndarray:
        """Read one whole per-sample column (text columns come back as ``str`` arrays)."""
        import h5py

        if name not in self._file or name == "images":
            raise DataError(f"{self.path}: no column {name!r} (has {', '.join(self.fields)})")
        ds = self._file[name]
        try:
            if h5py.check_string_dtype(ds.dtype) is not None:
                return np.asarray(ds.asstr()[...], dtype=str)
            return ds[...]
        except OSError as exc:
            raise DataError(
                f"{self.path}: cannot read column {name!r} ({exc}); the file may be truncated"
            ) from None

    def images(self, rows: slice | Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Read stamps for ``rows`` (a slice, an index array in any order, or all)."""
        ds = self._file["images"]
        try:
            if rows is None:
                return ds[...]
            if isinstance(rows, slice):
                return ds[rows]
            rows = np.asarray(rows, dtype=np.int64)
            if rows.size == 0:
                return np.empty((0, *STAMP_SHAPE), np.float32)
            order = np.argsort(rows, kind="stable")
            sorted_rows = rows[order]
            uniq, inverse = np.unique(sorted_rows, return_inverse=True)
            block = ds[uniq]
            out = np.empty((rows.size, *STAMP_SHAPE), np.float32)
            out[order] = block[inverse]
            return out
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read stamps ({exc}); the file may be truncated") from None

    def iter_blocks(self, block_rows: int = 4096, rows: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_indices, stamps)`` blocks in file order, over all rows or sorted ``rows``."""
        if rows is None:
            for s in range(0, self.n, block_rows):
                idx = np.arange(s, min(s + block_rows, self.n))
                yield idx, self.images(slice(s, idx[-1] + 1))
        else:
            rows = np.sort(np.asarray(rows, dtype=np.int64))
            for s in range(0, rows.size, block_rows):
                idx = rows[s:s + block_rows]
                yield idx, self.images(idx)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "H5Dataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_dataset(path: str | os.PathLike, required: Sequence[str] | None = None) -> H5Dataset:
    """Open and validate a realbogus HDF5 file.

    ``required`` names the per-sample datasets that must be present (default: the core fields
    ``label``, ``sensor_id``, ``kind``, ``mag``; scoring needs none of them, only ``images``).

    Raises
    ------
    DataError
        If the file is missing, not HDF5, truncated, or lacks the required datasets.
    """
    return H5Dataset(path, required)


def read_dataset(path: str | os.PathLike, fields: Sequence[str] | None = None, with_images: bool = True) -> dict:
    """Read a whole file into memory as a dict of arrays (``images`` plus the columns)."""
    with open_dataset(path) as ds:
        names = list(fields) if fields is not None else ds.fields
        out = {name: ds.column(name) for name in names}
        if with_images:
            out["images"] = ds.images()
        out["attrs"] = ds.attrs
    return out
