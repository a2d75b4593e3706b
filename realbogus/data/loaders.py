"""Readers for stamp collections from outside the project, and for our own HDF5 files.

Every reader turns its input into float32 stamps of shape (N, 29, 29, 3), channels
(new, ref, diff), plus per-sample columns (1-D arrays of length N). Stamps are read block by
block, so a collection far larger than memory can be scored or converted.

Accepted inputs (``layout="auto"`` picks one from the path)
-----------------------------------------------------------
``zenodo``
    The published Tomo-e Gozen release. A directory holding, per sensor, ``images<id>.npy``
    with ``params<id>.csv`` (one CSV row per stamp), or a single ``images<id>.npy`` whose
    ``params<id>.csv`` sits beside it (without it the file reads as a plain ``.npy``). The CSV
    column ``object_type`` gives the label and kind: ``artifact`` -> label 0, kind ``unknown``;
    ``galx_artificial_real`` and ``rand_artificial_real`` -> label 1 and the kind of that name. ``sensor_id`` comes from
    the file name, ``mag`` from the first magnitude-like CSV column found (see
    :data:`MAG_COLUMNS`; NaN if none), ``sample_index`` is the row within the sensor's file.
    A test set is a pair of files ``real*.npy`` + ``bogus*.npy`` in one directory (e.g.
    ``real_transient_201217.npy`` + ``bogus_transient_201221.npy``): label 1 and 0, kind
    ``unknown``. A directory holding both training files and a test pair needs ``split``.
``npy``
    A plain ``.npy`` stack of stamps (no columns), or an ``.npz`` archive with
    the array ``images`` (or a single array of any name). Every other 1-D array of length N in
    the archive is carried as a column: ``label`` (-1/0/1), ``true_label``, ``sensor_id``,
    ``kind`` (integer codes, or kind names as strings) and ``mag`` are checked; identifiers such
    as ``candid``, ``objectId`` or ``id`` are passed through unchanged. An array
    ``channel_order`` of three names (e.g. ``science, template, difference``) reorders the
    channels into (new, ref, diff). Compressed archives are streamed too.
``fits``
    FITS cutouts (read with astropy), one sample per triplet, identified by the column ``name``
    (the file stem). A triplet is either one file holding three 29x29 image HDUs - chosen by
    EXTNAME when all three are named (see :data:`CHANNEL_NAMES`), otherwise taken in file order
    as new, ref, diff - or one 3x29x29 image cube; or three files ``<stem>_<channel>.fits``
    whose suffix names the channel: ``new``/``sci``/``science``, ``ref``/``reference``/
    ``tmpl``/``template``, ``diff``/``difference``/``sub`` (separator ``_``, ``-`` or ``.``;
    extensions ``.fits``, ``.fit``, ``.fts``, optionally gzipped). The path may be one file, one
    member of a three-file triplet, or a directory of such files (sorted by stem).
``hdf5``
    Our own format (:mod:`realbogus.data.format`), all columns carried.

Stamp arrays may be stored as (N, 29, 29, 3), channels-first (N, 3, 29, 29), or flat
(N, 2523) - the latter reshaped row-major to 29x29x3, as the published scripts do. A single
stamp (29, 29, 3) or (3, 29, 29) counts as N = 1. Any numeric dtype is cast to float32.

Masked pixels (``nan_policy``)
------------------------------
Real cutouts have masked pixels: NaN, inf, or float32-max sentinels. A pixel counts as masked
when it is not finite or its absolute value is at least 1e30.

- ``"error"`` (the default): the first stamp holding a masked pixel raises :class:`DataError`
  naming the file and the row.
- ``"fill"``: each masked pixel is replaced by the median of the finite pixels of the same
  stamp and channel (0 if the channel has none), and the column ``n_masked`` (int16) counts the
  replaced pixels of each stamp. A stamp whose worst channel has more than
  ``max_masked_fraction`` (default 0.25) of its pixels masked is still an error: too little of
  it is left to classify.

Every problem with the input (missing or empty path, wrong shape or channel count, masked
pixels, a params CSV without ``object_type`` or with unknown values, a CSV and an image file of
different lengths, corrupt or truncated npy/npz/FITS/HDF5 files) raises :class:`DataError`
with one line naming the file and the problem.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from realbogus.data.format import CORE_FIELDS, OPTIONAL_FIELDS, STAMP_SHAPE, open_dataset
from realbogus.data.kinds import KIND_CODES, KIND_NAMES, UNKNOWN
from realbogus.errors import ConfigError, DataError

__all__ = [
    "LAYOUTS",
    "NAN_POLICIES",
    "OBJECT_TYPES",
    "MAG_COLUMNS",
    "CHANNEL_NAMES",
    "StampSource",
    "open_stamps",
    "iter_stamp_blocks",
    "load_stamps",
    "apply_nan_policy",
    "with_core_columns",
    "read_fits_image",
]

LAYOUTS = ("auto", "zenodo", "npy", "fits", "hdf5")
NAN_POLICIES = ("error", "fill")
#: ``object_type`` in the published params CSV -> (label, kind name).
OBJECT_TYPES: dict[str, tuple[int, str]] = {
    "artifact": (0, "unknown"),
    "galx_artificial_real": (1, "galx_artificial_real"),
    "rand_artificial_real": (1, "rand_artificial_real"),
}
#: Column names taken as the magnitude, first match wins (compared case-insensitively).
MAG_COLUMNS = (
    "mag", "magnitude", "mag_inj", "inj_mag", "injected_mag", "mag_injected",
    "magpsf", "mag_psf", "mag_auto", "mag_aper",
)
#: Names (EXTNAME, file-name suffix, ``channel_order`` entry) accepted for each channel.
CHANNEL_NAMES: dict[str, tuple[str, ...]] = {
    "new": ("new", "sci", "science", "search"),
    "ref": ("ref", "reference", "tmpl", "template", "temp"),
    "diff": ("diff", "difference", "sub", "subtracted", "subtraction"),
}
_CHANNEL_OF = {alias: ch for ch, aliases in CHANNEL_NAMES.items() for alias in aliases}
_CHANNELS = ("new", "ref", "diff")

SENTINEL = 1e30
_FLAT = int(np.prod(STAMP_SHAPE))
_FITS_SUFFIXES = (".fits.gz", ".fit.gz", ".fts.gz", ".fits", ".fit", ".fts")
_H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
_IMAGES_RE = re.compile(r"^images(\d+)\.npy$", re.IGNORECASE)
_PARAMS_RE = re.compile(r"^params(\d+)\.csv$", re.IGNORECASE)
_REAL_RE = re.compile(r"^real.*\.npy$", re.IGNORECASE)
_BOGUS_RE = re.compile(r"^bogus.*\.npy$", re.IGNORECASE)
_TRIPLET_RE = re.compile(r"^(?P<base>.+?)[_.-](?P<ch>" + "|".join(_CHANNEL_OF) + r")$", re.IGNORECASE)
_CORE_DEFAULTS = {"label": -1, "sensor_id": -1, "kind": UNKNOWN, "mag": np.nan}
#: Columns with a meaning of their own; every other column is an identifier carried through.
_VALUE_COLUMNS = set(CORE_FIELDS) | set(OPTIONAL_FIELDS) | {"n_masked"}

Where = Callable[[int], str]


# ----------------------------------------------------------------------------- stamp shapes
def _stamp_layout(shape: Sequence[int], source) -> tuple[str, int]:
    """Return (arrangement, N) for an array of ``shape`` holding stamps, or raise DataError."""
    shape = tuple(int(s) for s in shape)
    h, w, c = STAMP_SHAPE
    if shape == (h, w, c):
        return "hwc1", 1
    if shape == (c, h, w):
        return "chw1", 1
    if len(shape) == 4 and shape[1:] == (h, w, c):
        return "hwc", shape[0]
    if len(shape) == 4 and shape[1:] == (c, h, w):
        return "chw", shape[0]
    if len(shape) == 2 and shape[1] == _FLAT:
        return "flat", shape[0]
    if len(shape) == 4 and shape[1:3] == (h, w):
        raise DataError(f"{source}: stamps have {shape[3]} channels (shape {shape}), expected 3 (new, ref, diff)")
    if len(shape) == 4 and shape[2:] == (h, w):
        raise DataError(f"{source}: stamps have {shape[1]} channels (shape {shape}), expected 3 (new, ref, diff)")
    raise DataError(
        f"{source}: array of shape {shape} is not a stack of 29x29x3 stamps "
        "(accepted: (N, 29, 29, 3), (N, 3, 29, 29), (N, 2523))"
    )


def _check_numeric(dtype: np.dtype, source) -> None:
    if dtype.kind not in "biuf":
        raise DataError(f"{source}: stamps have non-numeric dtype {dtype}")


def _to_stamps(block: np.ndarray, arrangement: str, channel_perm: Sequence[int] | None = None) -> np.ndarray:
    """Rearrange a block of raw rows into a fresh, writable float32 (k, 29, 29, 3) array."""
    block = np.asarray(block)
    if arrangement in ("hwc1", "chw1"):
        block = block[None]
    if arrangement == "flat":
        block = block.reshape(-1, *STAMP_SHAPE)
    elif arrangement.startswith("chw"):
        block = block.transpose(0, 2, 3, 1)
    if channel_perm is not None:
        block = block[..., list(channel_perm)]
    return np.array(block, dtype=np.float32, order="C", copy=True)


# ----------------------------------------------------------------------------- masked pixels
def apply_nan_policy(
    images: np.ndarray,
    nan_policy: str = "error",
    max_masked_fraction: float = 0.25,
    where: Where | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the masked-pixel policy (see the module docstring) to a block of stamps.

    Parameters
    ----------
    images
        Writable float32 stamps (k, 29, 29, 3); filled in place under ``"fill"``.
    nan_policy
        ``"error"`` or ``"fill"``.
    max_masked_fraction
        Largest tolerated fraction of masked pixels in any one channel of a stamp (``"fill"``).
    where
        Maps a row of the block to a description such as ``"file.npy: row 17"``.

    Returns
    -------
    images, n_masked
        The stamps and the number of masked pixels of each (int16).
    """
    where = where or (lambda i: f"row {i}")
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(images) < SENTINEL)
    per_stamp = bad.sum(axis=(1, 2, 3))
    rows = np.flatnonzero(per_stamp)
    if rows.size == 0:
        return images, per_stamp.astype(np.int16)
    if nan_policy == "error":
        first = int(rows[0])
        raise DataError(
            f"{where(first)}: stamp holds {int(per_stamp[first])} masked pixel(s) (NaN, inf or |value| >= 1e30)"
            f"{f' and {rows.size - 1} more stamp(s) in this block do too' if rows.size > 1 else ''}; "
            "use nan_policy=fill to replace them"
        )
    sub_bad = bad[rows]
    fraction = sub_bad.mean(axis=(1, 2))  # (k, 3)
    worst = fraction.max(axis=1)
    if (worst > max_masked_fraction).any():
        i = int(np.argmax(worst > max_masked_fraction))
        ch = _CHANNELS[int(np.argmax(fraction[i]))]
        raise DataError(
            f"{where(int(rows[i]))}: {worst[i]:.0%} of the {ch} channel is masked, more than "
            f"max_masked_fraction={max_masked_fraction:g}"
        )
    sub = images[rows]
    masked = np.where(sub_bad, np.nan, sub)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a channel with no finite pixel
        fill = np.nanmedian(masked, axis=(1, 2))
    fill = np.nan_to_num(fill, nan=0.0).astype(np.float32)
    images[rows] = np.where(sub_bad, fill[:, None, None, :], sub)
    return images, per_stamp.astype(np.int16)


def _check_policy(nan_policy: str, max_masked_fraction: float, block_rows: int = 1) -> None:
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(f"nan_policy={nan_policy!r} is not one of {', '.join(NAN_POLICIES)}")
    if not 0.0 <= float(max_masked_fraction) <= 1.0:
        raise ConfigError(f"max_masked_fraction={max_masked_fraction!r} must lie in [0, 1]")
    if int(block_rows) < 1:
        raise ConfigError(f"block_rows={block_rows!r} must be a positive integer")


# ----------------------------------------------------------------------------- columns
def _as_label(values: np.ndarray, name: str, source) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise DataError(f"{source}: column {name!r} has dtype {values.dtype}, expected integers -1, 0, 1")
    bad = ~np.isin(values, (-1, 0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: column {name!r} holds {values[i].item()!r} at row {i}; "
            "labels are 1 real, 0 bogus, -1 unlabelled"
        )
    return values.astype(np.int8)


def _as_kind(values: np.ndarray, source, kind_names: Sequence[str] | None = None) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind in "US":
        values = values.astype(str)
        names = values
    elif values.dtype.kind in "iu":
        if kind_names is None:
            bad = (values < 0) | (values >= len(KIND_NAMES))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{source}: column 'kind' holds code {values[i]} at row {i}, outside 0..{len(KIND_NAMES) - 1}"
                )
            return values.astype(np.int16)
        table = np.asarray([str(n) for n in kind_names])
        bad = (values < 0) | (values >= table.size)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{source}: column 'kind' holds code {values[i]} at row {i}, outside its kind_names")
        names = table[values]
    else:
        raise DataError(f"{source}: column 'kind' has dtype {values.dtype}, expected kind codes or names")
    uniq, inverse = np.unique(names, return_inverse=True)
    codes = []
    for name in uniq:
        if name not in KIND_CODES:
            raise DataError(f"{source}: column 'kind' holds unknown kind {name!r}")
        codes.append(KIND_CODES[name])
    return np.asarray(codes, dtype=np.int16)[inverse.reshape(-1)]


def _find_mag(names: Sequence[str]) -> str | None:
    lower = {n.lower(): n for n in names}
    for cand in MAG_COLUMNS:
        if cand in lower:
            return lower[cand]
    return None


def _normalise_columns(columns: dict[str, np.ndarray], source, kind_names=None) -> dict[str, np.ndarray]:
    """Check and cast the columns with a meaning (label, kind, sensor_id, mag); keep the rest."""
    out = dict(columns)
    for name in ("label", "true_label"):
        if name in out:
            out[name] = _as_label(out[name], name, source)
    if "kind" in out:
        out["kind"] = _as_kind(out["kind"], source, kind_names)
    if "sensor_id" in out:
        sid = np.asarray(out["sensor_id"])
        if sid.dtype.kind not in "iu" or (sid.size and (sid.min() < -1 or sid.max() > np.iinfo(np.int16).max)):
            raise DataError(f"{source}: column 'sensor_id' must hold integers from -1 (unknown) up")
        out["sensor_id"] = sid.astype(np.int16)
    mag_name = "mag" if "mag" in out else _find_mag(list(out))
    if mag_name is not None:
        mag = np.asarray(out[mag_name])
        if mag.dtype.kind not in "biuf":
            raise DataError(f"{source}: column {mag_name!r} has dtype {mag.dtype}, expected magnitudes")
        out["mag"] = mag.astype(np.float32)
    return out


def with_core_columns(columns: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Return ``columns`` with the format's core fields present and cast to their dtypes.

    Missing fields get their "unknown" values: ``label`` -1, ``sensor_id`` -1, ``kind`` 0
    (``unknown``), ``mag`` NaN.
    """
    out = dict(columns)
    for name, dtype in CORE_FIELDS.items():
        if name in out:
            out[name] = np.asarray(out[name]).astype(dtype, copy=False)
        else:
            out[name] = np.full(n, _CORE_DEFAULTS[name], dtype=dtype)
    if "true_label" in out:
        out["true_label"] = np.asarray(out["true_label"]).astype(OPTIONAL_FIELDS["true_label"], copy=False)
    return out


# ----------------------------------------------------------------------------- sources
class StampSource:
    """An opened stamp collection: per-sample columns in memory, stamps read block by block.

    Create one with :func:`open_stamps`; use it as a context manager.

    Attributes
    ----------
    path : Path
        The input path.
    layout : str
        ``zenodo``, ``npy``, ``npz``, ``fits`` or ``hdf5``.
    n : int
        Number of stamps.
    columns : dict of numpy.ndarray
        Per-sample columns (length ``n``) that the input carries.
    split : str
        ``train`` or ``test`` when the input says so (Zenodo layout, or as requested), else "".
    attrs : dict
        File attributes to carry into a converted file (HDF5 input: ``kind_names``).
    """

    layout = ""

    def __init__(self, path: Path, n: int, columns: dict | None = None, split: str = ""):
        self.path = Path(path)
        self.n = int(n)
        self.columns: dict[str, np.ndarray] = dict(columns or {})
        self.split = split
        self.attrs: dict = {}

    @property
    def id_columns(self) -> list[str]:
        """Columns other than label, true_label, kind, sensor_id, mag: identifiers to carry along."""
        return [name for name in self.columns if name not in _VALUE_COLUMNS]

    def _raw_blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray, Where]]:
        """Yield ``(start_row, float32 stamps, where)`` with unchecked pixel values."""
        raise NotImplementedError

    def _where(self, start: int) -> Where:
        """Describe row ``i`` of a block starting at ``start`` as ``"<path>: row <n>"``."""
        return lambda i: f"{self.path}: row {start + i}"

    def iter_blocks(
        self, block_rows: int = 4096, nan_policy: str = "error", max_masked_fraction: float = 0.25,
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Yield ``(stamps, columns)`` blocks of at most ``block_rows`` rows, in input order.

        Under ``nan_policy="fill"`` the columns gain ``n_masked``.
        """
        _check_policy(nan_policy, max_masked_fraction, block_rows)
        for start, raw, where in self._raw_blocks(int(block_rows)):
            images, n_masked = apply_nan_policy(raw, nan_policy, float(max_masked_fraction), where)
            stop = start + len(images)
            cols = {name: col[start:stop] for name, col in self.columns.items()}
            if nan_policy == "fill":
                previous = cols.get("n_masked", 0)  # an input converted with fill before
                cols["n_masked"] = (previous + n_masked).astype(np.int16)
            yield images, cols

    def close(self) -> None:
        pass

    def __enter__(self) -> "StampSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n


def _npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read an NPY header: (shape, Fortran order, dtype); the file is left at the data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy format version {version}")


class NpySource(StampSource):
    """A ``.npy`` stack of stamps, read block by block with plain file reads.

    Plain reads rather than a memory map keep the resident memory at one block however large
    the file is; Fortran-ordered arrays (rare) fall back to a memory map.
    """

    layout = "npy"

    def __init__(self, path: Path, columns: dict | None = None, split: str = ""):
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                magic = fh.read(6)
                if magic.startswith(b"PK"):
                    raise DataError(f"{path}: is an .npz archive, not a .npy array; name it *.npz")
                if magic != b"\x93NUMPY":
                    raise DataError(f"{path}: not a .npy file (no NPY header)")
                fh.seek(0)
                shape, self._fortran, self._dtype = _npy_header(fh)
                self._offset = fh.tell()
            size = path.stat().st_size
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npy file ({_short(exc)})") from None
        if self._dtype.hasobject:
            raise DataError(f"{path}: holds Python objects, expected numbers")
        _check_numeric(self._dtype, path)
        self._arrangement, n = _stamp_layout(shape, path)
        expected = self._offset + int(np.prod(shape, dtype=np.int64)) * self._dtype.itemsize
        if size < expected:
            raise DataError(f"{path}: truncated ({size} bytes, the header promises {expected})")
        if n == 0:
            raise DataError(f"{path}: holds no stamps")
        self._shape = tuple(shape)
        super().__init__(path, n, columns, split)

    def _raw_blocks(self, block_rows):
        if self._fortran or self._arrangement in ("hwc1", "chw1"):
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
            for start in range(0, self.n, block_rows):
                part = arr if self._arrangement in ("hwc1", "chw1") else arr[start:start + block_rows]
                yield start, _to_stamps(part, self._arrangement), self._where(start)
            return
        row_shape = self._shape[1:]
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * self._dtype.itemsize
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                for start in range(0, self.n, block_rows):
                    k = min(block_rows, self.n - start)
                    buf = fh.read(k * row_bytes)
                    if len(buf) != k * row_bytes:
                        raise DataError(f"{self.path}: ends early, at row {start + len(buf) // row_bytes}")
                    block = np.frombuffer(buf, dtype=self._dtype).reshape(k, *row_shape)
                    yield start, _to_stamps(block, self._arrangement), self._where(start)
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read ({_short(exc)})") from None


class NpzSource(StampSource):
    """An ``.npz`` archive: ``images`` streamed from the zip member, 1-D arrays as columns."""

    layout = "npz"

    def __init__(self, path: Path, split: str = ""):
        path = Path(path)
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npz archive ({_short(exc)})") from None
        self._zf = zf
        try:
            self._open(path, split)
        except BaseException:
            zf.close()
            raise

    def _open(self, path: Path, split: str) -> None:
        zf = self._zf
        members = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}
        if not members:
            raise DataError(f"{path}: archive holds no arrays")
        if "images" in members:
            key = "images"
        elif len(members) == 1:
            key = next(iter(members))
        else:
            raise DataError(f"{path}: no array 'images' (holds {', '.join(sorted(members))})")
        self._key = key
        headers = {}
        for name, info in members.items():
            try:
                with zf.open(info) as fh:
                    shape, fortran, dtype = _npy_header(fh)
                    offset = fh.tell()
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                raise DataError(f"{path}: array {name!r} is unreadable ({_short(exc)})") from None
            expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if dtype.hasobject:
                if name == key:
                    raise DataError(f"{path}: array {name!r} holds Python objects, expected numbers")
                continue
            if info.file_size != expected:
                raise DataError(
                    f"{path}: array {name!r} is truncated or corrupt ({info.file_size} bytes, expected {expected})"
                )
            headers[name] = (shape, fortran, dtype, offset)
        shape, self._fortran, self._dtype, self._offset = headers[key]
        _check_numeric(self._dtype, f"{path}[{key}]")
        self._arrangement, n = _stamp_layout(shape, f"{path}[{key}]")
        if n == 0:
            raise DataError(f"{path}: holds no stamps")
        self._shape = shape
        for name in _VALUE_COLUMNS & set(headers):
            if tuple(headers[name][0]) != (n,):
                raise DataError(f"{path}: array {name!r} has shape {tuple(headers[name][0])}, but there are {n} stamps")
        columns = {name: self._read_member(name) for name, (s, *_rest) in headers.items()
                   if name != key and tuple(s) == (n,) and name not in ("channel_order", "kind_names")}
        self._perm = None
        if "channel_order" in headers and tuple(headers["channel_order"][0]) == (3,):
            order = self._read_member("channel_order")
            self._perm = _channel_permutation(order, path)
        kind_names = None
        if "kind_names" in headers and "kind" in columns:
            kind_names = [str(k) for k in self._read_member("kind_names")]
        columns = _normalise_columns(columns, path, kind_names)
        super().__init__(path, n, columns, split)

    def _read_member(self, name: str) -> np.ndarray:
        try:
            with self._zf.open(name + ".npy") as fh:
                return np.lib.format.read_array(fh, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise DataError(f"{self.path}: array {name!r} is unreadable ({_short(exc)})") from None

    def _raw_blocks(self, block_rows):
        if self._fortran or self._arrangement in ("hwc1", "chw1"):
            arr = self._read_member(self._key)
            for start in range(0, self.n, block_rows):
                part = arr if self._arrangement in ("hwc1", "chw1") else arr[start:start + block_rows]
                yield start, _to_stamps(part, self._arrangement, self._perm), self._where(start)
            return
        row_shape = tuple(self._shape[1:])
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * self._dtype.itemsize
        try:
            with self._zf.open(self._key + ".npy") as fh:
                fh.read(self._offset)
                for start in range(0, self.n, block_rows):
                    k = min(block_rows, self.n - start)
                    buf = fh.read(k * row_bytes)
                    if len(buf) != k * row_bytes:
                        row = start + len(buf) // row_bytes
                        raise DataError(f"{self.path}: array {self._key!r} ends early, at row {row}")
                    block = np.frombuffer(buf, dtype=self._dtype).reshape(k, *row_shape)
                    yield start, _to_stamps(block, self._arrangement, self._perm), self._where(start)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(f"{self.path}: array {self._key!r} is corrupt ({_short(exc)})") from None

    def close(self) -> None:
        self._zf.close()


def _channel_permutation(order: np.ndarray, source) -> list[int] | None:
    names = [str(v).strip().lower() for v in np.asarray(order).reshape(-1)]
    channels = [_CHANNEL_OF.get(n) for n in names]
    if None in channels or sorted(channels) != sorted(_CHANNELS):
        raise DataError(f"{source}: channel_order {names} does not name new, ref and diff")
    perm = [channels.index(ch) for ch in _CHANNELS]
    return None if perm == [0, 1, 2] else perm


class H5Source(StampSource):
    """Our HDF5 format, read through :func:`realbogus.data.format.open_dataset`."""

    layout = "hdf5"

    def __init__(self, path: Path, split: str = ""):
        # scoring needs only the stamps; a conversion gives missing core columns their "unknown" values
        self._ds = open_dataset(path, required=())
        try:
            if len(self._ds) == 0:
                raise DataError(f"{path}: holds no stamps")
            columns = {name: self._ds.column(name) for name in self._ds.fields}
            attrs = self._ds.attrs
        except BaseException:
            self._ds.close()
            raise
        super().__init__(path, len(self._ds), columns, split or str(attrs.get("split", "")))
        self.attrs = {"kind_names": self._ds.kind_names}

    def _raw_blocks(self, block_rows):
        for start in range(0, self.n, block_rows):
            block = np.array(self._ds.images(slice(start, start + block_rows)), dtype=np.float32)
            yield start, block, self._where(start)

    def close(self) -> None:
        self._ds.close()


class ConcatSource(StampSource):
    """Several sources read one after the other (the sensors of the Zenodo layout, test pairs)."""

    def __init__(self, path: Path, children: Sequence[StampSource], layout: str, split: str = ""):
        self.children = list(children)
        self.layout = layout
        names = set(self.children[0].columns)
        for child in self.children[1:]:
            if set(child.columns) != names:
                raise DataError(f"{child.path}: columns {sorted(child.columns)} differ from {sorted(names)}")
        columns = {name: np.concatenate([c.columns[name] for c in self.children]) for name in names}
        super().__init__(path, sum(c.n for c in self.children), columns, split)

    def _raw_blocks(self, block_rows):
        offset = 0
        for child in self.children:
            for start, block, where in child._raw_blocks(block_rows):
                yield offset + start, block, where
            offset += child.n

    def close(self) -> None:
        for child in self.children:
            child.close()


# ----------------------------------------------------------------------------- Zenodo layout
def _read_params(path: Path) -> dict[str, np.ndarray]:
    """Read ``object_type`` (-> label, kind) and the magnitude from a params CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file, expected a header with 'object_type'")
            header = [h.strip() for h in header]
            lower = [h.lower() for h in header]
            if "object_type" not in lower:
                shown = ", ".join(h or "''" for h in header[:12]) + (", ..." if len(header) > 12 else "")
                raise DataError(f"{path}: no 'object_type' column (columns: {shown})")
            i_type = lower.index("object_type")
            mag_name = _find_mag(header)
            i_mag = header.index(mag_name) if mag_name is not None else None
            labels, kinds, mags = [], [], []
            for row in reader:
                if not row:
                    continue
                line = reader.line_num
                if len(row) <= i_type or (i_mag is not None and len(row) <= i_mag):
                    raise DataError(f"{path}: line {line} has {len(row)} fields, header has {len(header)}")
                value = row[i_type].strip()
                try:
                    label, kind = OBJECT_TYPES[value]
                except KeyError:
                    raise DataError(
                        f"{path}: line {line}: unknown object_type {value!r} "
                        f"(expected {', '.join(OBJECT_TYPES)})"
                    ) from None
                labels.append(label)
                kinds.append(KIND_CODES[kind])
                if i_mag is not None:
                    text = row[i_mag].strip()
                    blank = not text or text.lower() in ("nan", "null", "none", "na")
                    try:
                        mags.append(np.nan if blank else float(text))
                    except ValueError:
                        raise DataError(f"{path}: line {line}: {mag_name} {text!r} is not a number") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text CSV file ({_short(exc)})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    n = len(labels)
    if n == 0:
        raise DataError(f"{path}: no rows")
    return {
        "label": np.asarray(labels, np.int8),
        "kind": np.asarray(kinds, np.int16),
        "mag": np.asarray(mags, np.float32) if i_mag is not None else np.full(n, np.nan, np.float32),
    }


def _zenodo_sensor(images: Path, params: Path, sensor_id: int) -> NpySource:
    src = NpySource(images, split="train")
    cols = _read_params(params)
    m = len(cols["label"])
    if m != src.n:
        src.close()
        raise DataError(f"{params}: {m} rows, but {images.name} holds {src.n} stamps")
    cols["sensor_id"] = np.full(src.n, sensor_id, np.int16)
    cols["sample_index"] = np.arange(src.n, dtype=np.int32)
    src.columns = cols
    return src


def _zenodo_test_half(path: Path, label: int) -> NpySource:
    src = NpySource(path, split="test")
    n = src.n
    src.columns = {
        "label": np.full(n, label, np.int8),
        "kind": np.full(n, UNKNOWN, np.int16),
        "sensor_id": np.full(n, -1, np.int16),
        "mag": np.full(n, np.nan, np.float32),
        "sample_index": np.arange(n, dtype=np.int32),
    }
    return src


def _open_all(path: Path, makers: Sequence[Callable[[], StampSource]], layout: str, split: str) -> StampSource:
    children: list[StampSource] = []
    try:
        for make in makers:
            children.append(make())
        return ConcatSource(path, children, layout, split)
    except BaseException:
        for child in children:
            child.close()
        raise


def _open_zenodo_dir(path: Path, files: Sequence[Path], split: str | None) -> StampSource:
    images = {}
    params = {}
    for f in files:
        for regex, table in ((_IMAGES_RE, images), (_PARAMS_RE, params)):
            m = regex.match(f.name)
            if m:
                sid = int(m.group(1))
                if sid in table:
                    raise DataError(f"{path}: two files for sensor {sid} ({table[sid].name}, {f.name})")
                table[sid] = f
    reals = [f for f in files if _REAL_RE.match(f.name)]
    boguses = [f for f in files if _BOGUS_RE.match(f.name)]
    has_train = bool(images or params)
    has_test = bool(reals or boguses)
    if split is None:
        if has_train and has_test:
            raise DataError(
                f"{path}: holds both training files (images<id>.npy) and a test pair (real*/bogus*.npy); "
                "choose one with split=train or split=test"
            )
        split = "train" if has_train else "test"
    if split == "train":
        if not has_train:
            raise DataError(f"{path}: no images<id>.npy + params<id>.csv files for split=train")
        for sid, f in images.items():
            if sid not in params:
                raise DataError(f"{f}: no matching params{sid}.csv in {path}")
        for sid, f in params.items():
            if sid not in images:
                raise DataError(f"{f}: no matching images{sid}.npy in {path}")
        makers = [lambda s=sid: _zenodo_sensor(images[s], params[s], s) for sid in sorted(images)]
        return _open_all(path, makers, "zenodo", "train")
    if len(reals) != 1 or len(boguses) != 1:
        raise DataError(
            f"{path}: a test pair needs one real*.npy and one bogus*.npy, found {len(reals)} and {len(boguses)}"
            + ("; put each pair in a directory of its own" if reals and boguses else "")
        )
    makers = [lambda: _zenodo_test_half(reals[0], 1), lambda: _zenodo_test_half(boguses[0], 0)]
    return _open_all(path, makers, "zenodo", "test")


def _open_zenodo_file(path: Path) -> StampSource:
    m = _IMAGES_RE.match(path.name)
    if not m:
        raise DataError(f"{path}: layout=zenodo expects images<id>.npy or a directory of them")
    sid = int(m.group(1))
    candidates = [p for p in path.parent.iterdir() if (pm := _PARAMS_RE.match(p.name)) and int(pm.group(1)) == sid]
    if not candidates:
        raise DataError(f"{path}: no matching params{sid}.csv beside it")
    if len(candidates) > 1:
        raise DataError(f"{path}: several params files for sensor {sid}")
    src = _zenodo_sensor(path, candidates[0], sid)
    src.layout = "zenodo"
    return src


def _has_params_sibling(path: Path) -> bool:
    m = _IMAGES_RE.match(path.name)
    if not m:
        return False
    sid = int(m.group(1))
    return any((pm := _PARAMS_RE.match(p.name)) and int(pm.group(1)) == sid for p in path.parent.iterdir())


# ----------------------------------------------------------------------------- FITS
def _fits_stem(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in _FITS_SUFFIXES:
        if name.endswith(suffix):
            return path.name[: len(path.name) - len(suffix)]
    return None


def _fits_image_planes(source, label) -> list[tuple[str, np.ndarray]]:
    """``(EXTNAME in lower case, float32 data)`` of every image HDU holding data.

    ``source`` is a path or a binary file object (gzip-compressed or plain FITS); ``label``
    names it in error messages.
    """
    from astropy.io import fits

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(source, memmap=False) as hdul:
                hdus = [h for h in hdul if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))]
                planes = [(h.name.strip().lower(), np.asarray(h.data, dtype=np.float32))
                          for h in hdus if h.data is not None]
        for w in caught:
            if "truncat" in str(w.message).lower():
                raise DataError(f"{label}: truncated FITS file ({_short(w.message)})")
    except DataError:
        raise
    except Exception as exc:  # astropy raises many types (OSError, ValueError, TypeError, ...)
        raise DataError(f"{label}: not a readable FITS file, corrupt or truncated ({_short(exc)})") from None
    if not planes:
        raise DataError(f"{label}: no image data")
    return planes


def read_fits_image(source, label) -> np.ndarray:
    """The first image of a FITS file or file object as a float32 array of any shape.

    Parameters
    ----------
    source
        A path, or a binary file object such as ``io.BytesIO(stamp_bytes)``; gzip-compressed
        FITS is read as well.
    label
        How error messages name the source.

    Raises
    ------
    DataError
        Not FITS, corrupt or truncated, or no image data.
    """
    return _fits_image_planes(source, label)[0][1]


def _read_fits_planes(path: Path, want_triplet: bool) -> list[np.ndarray]:
    """Return the 29x29 planes of a FITS file: three (new, ref, diff) or one (a channel file)."""
    planes = _fits_image_planes(path, path)
    if not want_triplet:
        name, data = planes[0]
        if data.shape != STAMP_SHAPE[:2]:
            raise DataError(f"{path}: image has shape {data.shape}, expected 29x29")
        return [data]
    if len(planes) == 1 and planes[0][1].shape in ((3, 29, 29), STAMP_SHAPE):
        cube = planes[0][1]
        return [cube[i] for i in range(3)] if cube.shape == (3, 29, 29) else [cube[..., i] for i in range(3)]
    named = {}
    for name, data in planes:
        ch = _CHANNEL_OF.get(name)
        if ch is not None and ch not in named:
            named[ch] = (name, data)
    if len(named) == 3:
        chosen = [named[ch] for ch in _CHANNELS]
    elif len(planes) == 3:
        chosen = planes
    else:
        raise DataError(
            f"{path}: expected three 29x29 image HDUs (new, ref, diff) or one 3x29x29 cube, "
            f"found {len(planes)} image HDU(s) of shape {', '.join(str(d.shape) for _, d in planes)}"
        )
    for name, data in chosen:
        if data.shape != STAMP_SHAPE[:2]:
            raise DataError(f"{path}: HDU {name.upper() or 'PRIMARY'!r} has shape {data.shape}, expected 29x29")
    return [data for _, data in chosen]


class FitsSource(StampSource):
    """FITS cutouts: single-file triplets and three-file triplets, one sample each."""

    layout = "fits"

    def __init__(self, path: Path, entries: Sequence[tuple[str, object]], split: str = ""):
        # entries: (name, Path of a single-file triplet | {channel: Path})
        self.entries = list(entries)
        names = np.asarray([name for name, _ in self.entries], dtype=str)
        super().__init__(path, len(self.entries), {"name": names}, split)

    @staticmethod
    def _describe(name: str, files) -> str:
        if isinstance(files, Path):
            return str(files)
        return f"{files['new'].parent / name}_{{new,ref,diff}} ({', '.join(files[ch].name for ch in _CHANNELS)})"

    def _read_entry(self, name: str, files) -> np.ndarray:
        if isinstance(files, Path):
            planes = _read_fits_planes(files, want_triplet=True)
        else:
            planes = [_read_fits_planes(files[ch], want_triplet=False)[0] for ch in _CHANNELS]
        return np.stack(planes, axis=-1)

    def _raw_blocks(self, block_rows):
        for start in range(0, self.n, block_rows):
            part = self.entries[start:start + block_rows]
            block = np.stack([self._read_entry(name, files) for name, files in part]).astype(np.float32)
            yield start, block, (lambda i, p=part: self._describe(*p[i]))


def _fits_entries(path: Path, files: Sequence[Path]) -> list[tuple[str, object]]:
    singles: dict[str, Path] = {}
    triplets: dict[str, dict[str, Path]] = {}
    for f in files:
        stem = _fits_stem(f)
        if stem is None:
            continue
        m = _TRIPLET_RE.match(stem)
        if m:
            base, ch = m.group("base"), _CHANNEL_OF[m.group("ch").lower()]
            slot = triplets.setdefault(base, {})
            if ch in slot:
                raise DataError(f"{path}: cutout {base!r} has two {ch} files ({slot[ch].name}, {f.name})")
            slot[ch] = f
        else:
            singles[stem] = f
    for base, slot in triplets.items():
        missing = [ch for ch in _CHANNELS if ch not in slot]
        if missing:
            have = ", ".join(slot[ch].name for ch in _CHANNELS if ch in slot)
            raise DataError(f"{path}: cutout {base!r} has {have} but no {' or '.join(missing)} file")
        if base in singles:
            raise DataError(f"{path}: cutout {base!r} is both a single file and a three-file triplet")
    entries = [(name, f) for name, f in singles.items()] + [(base, slot) for base, slot in triplets.items()]
    return sorted(entries, key=lambda e: e[0])


def _open_fits(path: Path, split: str) -> FitsSource:
    if path.is_dir():
        files = _visible_files(path)
        entries = _fits_entries(path, files)
        if not entries:
            raise DataError(f"{path}: no FITS files (*.fits, *.fit, *.fts, optionally .gz)")
        return FitsSource(path, entries, split)
    stem = _fits_stem(path) or path.stem
    m = _TRIPLET_RE.match(stem)
    if m:
        base = m.group("base")
        siblings = [f for f in _visible_files(path.parent) if (s := _fits_stem(f)) and (mm := _TRIPLET_RE.match(s))
                    and mm.group("base") == base]
        entries = [e for e in _fits_entries(path.parent, siblings) if e[0] == base]
        return FitsSource(path, entries, split)
    return FitsSource(path, [(stem, path)], split)


# ----------------------------------------------------------------------------- entry points
def _short(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _visible_files(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError as exc:
        raise DataError(f"{path}: cannot list directory ({_short(exc)})") from None


def open_stamps(path: str | os.PathLike, layout: str = "auto", split: str | None = None) -> StampSource:
    """Open a stamp collection for block-wise reading.

    Parameters
    ----------
    path
        A file or directory in one of the layouts of the module docstring.
    layout
        ``auto`` (decide from the suffix or the directory's contents), ``zenodo``, ``npy``
        (``.npy`` or ``.npz``), ``fits`` or ``hdf5``.
    split
        ``train`` or ``test``: which part of a Zenodo directory holding both to read. For other
        layouts it is only recorded as :attr:`StampSource.split`.

    Returns
    -------
    StampSource
        Close it (or use it in a ``with`` block) when done.

    Raises
    ------
    DataError
        If the path is missing, empty, unrecognised, or its content is invalid.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout={layout!r} is not one of {', '.join(LAYOUTS)}")
    if split is not None and split not in ("train", "test"):
        raise ConfigError(f"split={split!r} is not one of train, test")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        files = _visible_files(path)
        if not files:
            raise DataError(f"{path}: empty directory")
        zenodo = any(_IMAGES_RE.match(f.name) or _PARAMS_RE.match(f.name) or _REAL_RE.match(f.name)
                     or _BOGUS_RE.match(f.name) for f in files)
        fits_files = any(_fits_stem(f) is not None for f in files)
        if layout == "zenodo" or (layout == "auto" and zenodo and not fits_files):
            return _open_zenodo_dir(path, files, split)
        if layout == "fits" or (layout == "auto" and fits_files and not zenodo):
            return _open_fits(path, split or "")
        if layout == "auto" and zenodo and fits_files:
            raise DataError(
                f"{path}: holds both Zenodo-layout npy files and FITS files; choose with layout=zenodo or layout=fits"
            )
        if layout in ("npy", "hdf5"):
            raise DataError(f"{path}: is a directory; layout={layout} expects a file")
        raise DataError(
            f"{path}: no recognised stamp files (expected images<id>.npy + params<id>.csv, "
            "a real*.npy + bogus*.npy test pair, or FITS cutouts)"
        )
    name = path.name.lower()
    if layout == "auto":
        if _fits_stem(path) is not None:
            layout = "fits"
        elif name.endswith(".npy"):
            layout = "zenodo" if _has_params_sibling(path) else "npy"
        elif name.endswith(".npz"):
            layout = "npy"
        elif name.endswith(_H5_SUFFIXES):
            layout = "hdf5"
        else:
            raise DataError(
                f"{path}: unrecognised input format (suffix {path.suffix!r}); expected .npy, .npz, "
                ".h5/.hdf5, .fits or a directory"
            )
    if layout == "zenodo":
        return _open_zenodo_file(path)
    if layout == "npy":
        return NpzSource(path, split or "") if name.endswith(".npz") else NpySource(path, split=split or "")
    if layout == "fits":
        return _open_fits(path, split or "")
    return H5Source(path, split or "")


def iter_stamp_blocks(
    path: str | os.PathLike,
    block_rows: int = 4096,
    nan_policy: str = "error",
    *,
    layout: str = "auto",
    split: str | None = None,
    max_masked_fraction: float = 0.25,
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Iterate over any supported input in blocks of at most ``block_rows`` stamps.

    Memory stays bounded by one block (``.npy`` files and ``.npz`` members are read
    sequentially, HDF5 by row slices, FITS files a block at a time).

    Yields
    ------
    images, columns
        float32 stamps (k, 29, 29, 3) and the per-sample columns of those rows.
    """
    _check_policy(nan_policy, max_masked_fraction, block_rows)

    def blocks():
        with open_stamps(path, layout=layout, split=split) as src:
            yield from src.iter_blocks(block_rows, nan_policy, max_masked_fraction)

    return blocks()


def load_stamps(
    path: str | os.PathLike,
    nan_policy: str = "error",
    *,
    layout: str = "auto",
    split: str | None = None,
    max_masked_fraction: float = 0.25,
    block_rows: int = 4096,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read a whole input into memory.

    Returns
    -------
    images, columns
        float32 stamps (N, 29, 29, 3), channels (new, ref, diff), and the per-sample columns the
        input carries (plus ``n_masked`` under ``nan_policy="fill"``).
    """
    _check_policy(nan_policy, max_masked_fraction, block_rows)
    with open_stamps(path, layout=layout, split=split) as src:
        images = np.empty((src.n, *STAMP_SHAPE), np.float32)
        n_masked = []
        row = 0
        for block, cols in src.iter_blocks(block_rows, nan_policy, max_masked_fraction):
            images[row:row + len(block)] = block
            row += len(block)
            if "n_masked" in cols:
                n_masked.append(cols["n_masked"])
        columns = dict(src.columns)
    if nan_policy == "fill":
        columns["n_masked"] = np.concatenate(n_masked)
    return images, columns
