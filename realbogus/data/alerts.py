"""Alert packets as brokers receive them: Avro files of ZTF-like and DECam-like alerts.

:func:`open_alerts` turns one ``.avro`` file, or a directory of them, into a
:class:`~realbogus.data.loaders.StampSource` that ``python -m realbogus.predict`` scores like any
other input. A file may hold one alert or many (an Avro container file of records).

What is read from each alert
----------------------------
``cutoutScience``, ``cutoutTemplate``, ``cutoutDifference``
    The three cutouts, as a record with a ``stampData`` bytes field (ZTF) or as bytes (DECam,
    LSST); gzip-compressed FITS or plain FITS. They become channels (new, ref, diff).
``candid``, ``objectId``
    The identifiers carried into every output row; where a schema lacks them, the first of
    :data:`ID_FIELDS` found (top level first, then inside ``candidate``) is used under the same
    column name. ``candid`` stays an integer when every alert has an integer one.
``isdiffpos``
    Inside ``candidate`` (or at the top level): whether the difference is science minus
    template (``'t'``, ``'1'``, 1) or template minus science (``'f'``, ``'0'``, 0: a fading
    candidate).

Orientation (``orient=True``)
    The training reals always brighten, so a triplet reads (image where the candidate is
    brighter, the other image, positive difference). A fading alert is turned into that
    orientation by exchanging science and template, with the rule and the functions of the
    real-data check (:func:`realbogus.evaluation.realdata.fading`, ``orient_triplets``). The
    difference is *not* negated: a fading alert's difference cutout is already template minus
    science, positive at the candidate (as in the three public ZTF packets used by the tests:
    both ``isdiffpos='f'`` ones peak positive at the centre), so after the exchange
    ``diff = new - ref`` holds as in the training data. The column ``swapped`` (1/0) records
    the choice for every row.

Size (centre crop or pad)
    Cutouts of any size are cut to 29 x 29 around their centre pixel (row ``H // 2``, column
    ``W // 2``; for ZTF's and DECam's 63 x 63 cutouts, pixel (31, 31), where the candidate
    sits): rows ``H // 2 - 14`` to ``H // 2 + 14``. Where a cutout is smaller, the missing
    border is padded with masked pixels (NaN), which the ``nan_policy`` of the reader then
    handles like any other masked pixel: an error under ``error``; under ``fill`` replaced by
    the median of the stamp and channel and counted in ``n_masked``, as long as no channel is
    masked beyond ``max_masked_fraction``. The three cutouts of an alert must have the same
    shape.

Centring check (per row)
    The crop assumes the candidate at the centre pixel, which fails for cutouts cut short by a
    detector edge. The candidate is located as the significant positive peak of the
    difference nearest to the centre: a local maximum of the 3 x 3 box-smoothed difference
    standing :data:`PEAK_SIGMA` robust standard deviations (1.4826 MAD) above the smoothed
    map's median. ``centre_offset`` is its distance from the centre pixel, in pixels (NaN when
    the difference holds no significant peak: nothing to check). An alert whose offset
    exceeds ``max_centre_offset`` (default 3 pixels, about 1.5 ZTF seeing FWHM) gets
    ``off_centre = 1``; it is read and kept in the output, in order, but ``predict`` leaves its
    score empty rather than score a stamp centred on something else.

Every problem (no such path, a directory without ``.avro`` files, a file that is not Avro or is
truncated, an alert without one of the cutouts, an unreadable cutout, cutouts of different
shapes) raises :class:`~realbogus.errors.DataError` with one line naming the file and, where
known, the alert's ``candid``.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from realbogus.data.format import STAMP_SHAPE
from realbogus.data.loaders import SENTINEL, StampSource, read_fits_image
from realbogus.errors import ConfigError, DataError

__all__ = [
    "ALERT_SUFFIXES",
    "CUTOUT_FIELDS",
    "ID_FIELDS",
    "PEAK_SIGMA",
    "DEFAULT_MAX_CENTRE_OFFSET",
    "is_alert_path",
    "centre_crop",
    "centre_offset",
    "AlertSource",
    "open_alerts",
]

ALERT_SUFFIXES = (".avro",)
#: Alert field of each channel, in channel order (new, ref, diff).
CUTOUT_FIELDS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
#: Output column -> alert fields that give it, first found wins (LSST names after ZTF's).
ID_FIELDS: dict[str, tuple[str, ...]] = {
    "candid": ("candid", "diaSourceId", "alertId"),
    "objectId": ("objectId", "diaObjectId"),
}
#: Significance (robust standard deviations of the smoothed difference) of the candidate's peak.
PEAK_SIGMA = 3.0
DEFAULT_MAX_CENTRE_OFFSET = 3.0
_HALF = STAMP_SHAPE[0] // 2


def is_alert_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ``.avro`` file or a directory holding one (``layout=auto``)."""
    path = Path(path)
    if path.is_dir():
        try:
            return any(p.is_file() and p.name.lower().endswith(ALERT_SUFFIXES) for p in path.iterdir())
        except OSError:
            return False
    return path.name.lower().endswith(ALERT_SUFFIXES)


# ----------------------------------------------------------------------------- geometry
def centre_crop(image: np.ndarray, size: int = STAMP_SHAPE[0]) -> np.ndarray:
    """The ``size`` x ``size`` window around pixel ``(H // 2, W // 2)``; NaN where outside ``image``."""
    h, w = image.shape
    half = size // 2
    out = np.full((size, size), np.nan, np.float32)
    top, left = h // 2 - half, w // 2 - half
    r0, r1 = max(top, 0), min(top + size, h)
    c0, c1 = max(left, 0), min(left + size, w)
    if r1 > r0 and c1 > c0:
        out[r0 - top:r1 - top, c0 - left:c1 - left] = image[r0:r1, c0:c1]
    return out


def centre_offset(difference: np.ndarray, sigma: float = PEAK_SIGMA) -> float:
    """Distance (pixels) from the centre pixel to the nearest significant peak of ``difference``.

    See the module docstring; NaN when no pixel of the smoothed difference is a local maximum
    ``sigma`` robust standard deviations above its median. Masked pixels count as the median.
    """
    from scipy import ndimage

    d = np.asarray(difference, np.float64)
    with np.errstate(invalid="ignore"):
        good = np.abs(d) < SENTINEL
    if not good.any():
        return float("nan")
    d = np.where(good, d, np.median(d[good]))
    smooth = ndimage.uniform_filter(d, 3, mode="nearest")
    median = np.median(smooth)
    noise = 1.4826 * np.median(np.abs(smooth - median))
    peaks = (smooth == ndimage.maximum_filter(smooth, 3, mode="nearest")) & (smooth > median + sigma * noise)
    if noise <= 0 or not peaks.any():
        return float("nan")
    rows, cols = np.nonzero(peaks)
    h, w = d.shape
    return float(np.hypot(rows - h // 2, cols - w // 2).min())


# ----------------------------------------------------------------------------- records
def _short(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _field(record: Mapping, names) -> object:
    """The first of ``names`` present (and not None) at the top level, then inside ``candidate``."""
    inner = record.get("candidate") if isinstance(record.get("candidate"), Mapping) else {}
    for scope in (record, inner):
        for name in names:
            if scope.get(name) is not None:
                return scope[name]
    return None


def _iter_records(path: Path) -> Iterator[Mapping]:
    import fastavro

    try:
        with open(path, "rb") as fh:
            yield from fastavro.reader(fh)
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({_short(exc)})") from None
    except Exception as exc:  # fastavro raises ValueError, EOFError, StopIteration, schema errors, ...
        raise DataError(f"{path}: not a readable Avro alert file, corrupt or truncated ({_short(exc)})") from None


def _cutout_bytes(record: Mapping, field: str, where: str) -> bytes:
    value = record.get(field)
    if isinstance(value, Mapping):
        value = value.get("stampData")
    if not isinstance(value, (bytes, bytearray)) or not value:
        raise DataError(f"{where}: no {field} cutout (expected bytes or a record with stampData)")
    value = bytes(value)
    if value[:2] == b"\x1f\x8b":  # astropy does not unpack gzip from an in-memory file
        try:
            value = gzip.decompress(value)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{where}: {field}: corrupt gzip data ({_short(exc)})") from None
    return value


def _triplet(record: Mapping, where: str) -> tuple[np.ndarray, float]:
    """(29 x 29 x 3 stamp as stored, centring offset) of one alert."""
    images = []
    for field in CUTOUT_FIELDS:
        image = read_fits_image(io.BytesIO(_cutout_bytes(record, field, where)), f"{where}: {field}")
        if image.ndim != 2:
            image = np.squeeze(image)
            if image.ndim != 2:
                raise DataError(f"{where}: {field} has shape {image.shape}, expected a 2-D image")
        images.append(image)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"{where}: cutouts of different shapes ({', '.join(str(im.shape) for im in images)})")
    stamp = np.stack([centre_crop(im) for im in images], axis=-1)
    return stamp, centre_offset(images[2])


class AlertSource(StampSource):
    """Alerts of one or more Avro files, read in two passes.

    The first pass (at opening) reads the identifiers and ``isdiffpos`` of every alert; the
    stamps are decoded block by block in the second, so memory is bounded by one block
    whatever the number of alerts. Columns: ``candid``, ``objectId``, ``isdiffpos`` (as text),
    ``alert_file``, ``swapped``, and ``centre_offset`` / ``off_centre`` (filled as the blocks
    are read).
    """

    layout = "avro"

    def __init__(self, path: Path, files: list[Path], orient: bool = True,
                 max_centre_offset: float = DEFAULT_MAX_CENTRE_OFFSET, split: str = ""):
        from realbogus.evaluation.realdata import fading

        self.files = list(files)
        self.orient = bool(orient)
        self.max_centre_offset = float(max_centre_offset)
        ids: dict[str, list] = {name: [] for name in ID_FIELDS}
        isdiffpos, file_index, self._counts = [], [], []
        for k, f in enumerate(self.files):
            count = 0
            for record in _iter_records(f):
                for name, aliases in ID_FIELDS.items():
                    ids[name].append(_field(record, aliases))
                sign = _field(record, ("isdiffpos",))
                isdiffpos.append("" if sign is None else str(sign))
                file_index.append(k)
                count += 1
            self._counts.append(count)
        n = len(isdiffpos)
        if n == 0:
            raise DataError(f"{path}: holds no alerts")
        candid = ids["candid"]
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in candid):
            candid_col = np.asarray(candid, np.int64)
        else:
            candid_col = np.asarray(["" if v is None else str(v) for v in candid], dtype=str)
        isdiffpos_col = np.asarray(isdiffpos, dtype=str)
        swapped = fading(isdiffpos_col) if self.orient else np.zeros(n, bool)
        columns = {
            "candid": candid_col,
            "objectId": np.asarray(["" if v is None else str(v) for v in ids["objectId"]], dtype=str),
            "isdiffpos": isdiffpos_col,
            "alert_file": np.asarray([self.files[k].name for k in file_index], dtype=str),
            "swapped": swapped.astype(np.int8),
            "centre_offset": np.full(n, np.nan, np.float32),
            "off_centre": np.zeros(n, np.int8),
        }
        super().__init__(path, n, columns, split)

    def _describe(self, row: int) -> str:
        return f"{self.path if self.path.is_file() else self.path / self.columns['alert_file'][row]}: " \
               f"alert {self.columns['candid'][row]}"

    def _raw_blocks(self, block_rows):
        from realbogus.evaluation.realdata import orient_triplets

        def records():
            for f, expected in zip(self.files, self._counts):
                count = 0
                for record in _iter_records(f):
                    count += 1
                    if count <= expected:
                        yield record
                if count != expected:
                    raise DataError(f"{f}: changed while being read ({expected} alerts, then {count})")

        stamps, start = [], 0
        offsets = self.columns["centre_offset"]
        for row, record in enumerate(records()):
            stamp, offsets[row] = _triplet(record, self._describe(row))
            stamps.append(stamp)
            if len(stamps) == block_rows or row == self.n - 1:
                block = np.stack(stamps)
                rows = slice(start, start + len(stamps))
                swap = self.columns["swapped"][rows].astype(bool)
                if swap.any():
                    block = orient_triplets(block, swap)
                with np.errstate(invalid="ignore"):
                    self.columns["off_centre"][rows] = offsets[rows] > self.max_centre_offset
                yield start, block, (lambda i, s=start: self._describe(s + i))
                start += len(stamps)
                stamps = []


def open_alerts(path: str | os.PathLike, orient: bool = True,
                max_centre_offset: float = DEFAULT_MAX_CENTRE_OFFSET) -> AlertSource:
    """Open an ``.avro`` alert file, or a directory of them (read in name order).

    Parameters
    ----------
    path
        The file or directory.
    orient
        Exchange science and template of fading alerts (see the module docstring).
    max_centre_offset
        Largest distance (pixels) of the candidate's peak from the centre pixel before the
        alert is flagged ``off_centre``.

    Returns
    -------
    AlertSource
        Use it in a ``with`` block, as any :class:`~realbogus.data.loaders.StampSource`.

    Raises
    ------
    DataError
        Missing path, no alert files, unreadable files (see the module docstring).
    """
    if isinstance(max_centre_offset, bool) or not isinstance(max_centre_offset, (int, float)) \
            or not max_centre_offset >= 0:
        raise ConfigError(f"max_centre_offset={max_centre_offset!r} must be a number of pixels >= 0")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.name.lower().endswith(ALERT_SUFFIXES))
        if not files:
            raise DataError(f"{path}: no alert files (*.avro)")
    else:
        files = [path]
    return AlertSource(path, files, orient=orient, max_centre_offset=max_centre_offset)
