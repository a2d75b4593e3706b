"""Is ZTF's recorded S/N on our scale? Our candidate S/N against the S/N fields of ZTF alert packets.

:func:`realbogus.plots.realism.candidate_snr` (a Gaussian matched filter over the difference's
robust background noise) is in noise units on real alerts. ZTF's packets carry three S/N-like
numbers of their own, and this module compares each with it, alert by alert:

``ssnrms``
    S / stddev(S) at the candidate, where S is the difference convolved with its PSF.
``scorr``
    The peak-pixel S/N of the matched-filtered detection image (ZOGY's S_corr).
``1.0857 / sigmapsf``
    The S/N of ZTF's PSF-fit magnitude (the "recorded S/N" of the realism table).

The ratio ``ours / (1.0857 / sigmapsf)`` splits into three factors, ``A * B * C``, exactly for
every alert. Fluxes are in DN on the ``magzpsci`` scale of the cutouts:

``A = F_ours / F_psf``
    Our Gaussian-filter flux, ``sum(d g) sum(g) / sum(g^2)``, over ZTF's PSF-fit flux
    ``10^(-0.4 (magpsf - magzpsci))``.
``B = sF_lim / sF_ours``
    ZTF's background-only PSF-fit flux error, ``10^(-0.4 (diffmaglim - magzpsci)) / 5`` (one
    value per image: ``diffmaglim`` is its 5-sigma limit), over our filter's white-noise flux
    error ``sigma sum(g) / sqrt(sum(g^2))``. ``F_ours / sF_ours`` is our S/N.
``C = sF_psf / sF_lim``
    ``sigmapsf``'s flux error, ``F_psf sigmapsf / 1.0857``, over that background-only error.
    Compared with ``sqrt(chipsf)``.

Two noise-equivalent areas (px^2) say where B comes from: the one ZTF's background error implies,
``(sF_lim / sigma)^2``, and the candidate's own, ``(sum d)^2 / (sum d^2 - N sigma^2)`` within
7 pixels of the centre (noise bias removed; only where our S/N > 25). Our filter's is
``(sum g)^2 / sum(g^2)``.

Stamps are read with the package's alert reader (:mod:`realbogus.data.alerts`: the 29 x 29
centre crop of each cutout) and kept as stored (no orientation: channel 1 is the template, as
``on_template_source`` expects). Masked pixels (NaN, float32-max sentinels, padding) become 0, as
in ``ztf_alerts_dev.npz``, and the estimator leaves them out. The filter's FWHM is the median
:func:`~realbogus.plots.realism.point_source_fwhm` of the set, as in the realism table, unless
``--fwhm`` sets it. Groups: probable reals ``drb >= 0.9``, probable bogus ``drb < 0.1`` (ZTF's
deep real/bogus score), and on or off a template source (``on_template_source``: the template's
peak within 2 pixels of the centre is at least 20 robust sigma).

Where the alerts come from:

``--alerts PATH ...``
    Avro files, or directories of ``.avro`` files. Records without a ZTF ``candidate``
    (``sigmapsf``) are skipped and counted.
``--npz PATH --mirrors DIR``
    An alert archive with ``candid``, ``source_repo``, ``source_path`` and ``source_commit``
    per row (``ztf_alerts_dev.npz``), and a folder of git mirrors named ``<owner>+<name>``
    (bare repositories, or folders holding one as ``repo``). Each packet is read at its recorded
    commit, else at ``HEAD``, else at the last commit of the mirror's history that has the path.
    Avro or JSON (MongoDB's ``{"$binary": ...}`` cutouts). The record is matched on ``candid``.
    Rows whose packet cannot be found or read are counted and listed, not fatal.

Snappy-compressed Avro packets are decoded by ``cramjam`` (fastavro's codec; in the requirements).

From the shell::

    python -m realbogus.plots.snr_scale --npz ../shared/data/ztf_alerts_dev.npz --mirrors MIRRORS --out DIR
    python -m realbogus.plots.snr_scale --alerts ../shared/data/alerts

It prints a Markdown table (median [25th, 75th percentile] per group) and, with ``--out``, writes
``DIR/snr_scale.csv`` (one row per alert). Bad input (a missing path, a file that is not Avro,
no ZTF alert at all) stops with one line and exit status 2.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from realbogus.errors import ConfigError, DataError, report_errors

__all__ = [
    "MAG_PER_SNR",
    "PACKET_FIELDS",
    "CSV_FILE",
    "ROWS",
    "GROUPS",
    "packet_records",
    "mirror_git_dir",
    "find_packet",
    "ReadAlerts",
    "read_alert_files",
    "read_npz_packets",
    "measure",
    "group_masks",
    "summary_table",
    "write_csv",
    "main",
]

#: ``sigmapsf`` (mag) per unit of 1/SNR: 2.5 / ln(10), rounded as in the realism table.
MAG_PER_SNR = 1.0857
#: Numeric fields taken from each packet (top level first, then inside ``candidate``).
PACKET_FIELDS = ("drb", "magpsf", "sigmapsf", "magzpsci", "diffmaglim", "chipsf", "scorr", "ssnrms")
CSV_FILE = "snr_scale.csv"
#: Pixels nearer the centre than this are left out of the noise (``candidate_snr``'s default).
EXCLUDE_RADIUS = 6.0
#: Radius (pixels) of the candidate's profile for its noise-equivalent area, and the S/N above which it is given.
PROFILE_RADIUS, PROFILE_MIN_SNR = 7.0, 25.0

#: Rows of the table: per-alert key -> label.
ROWS: dict[str, str] = {
    "ours": "S/N: ours (`candidate_snr`)",
    "ssnrms": "S/N: ZTF `ssnrms`",
    "scorr": "S/N: ZTF `scorr`",
    "ztf_snr": "S/N: ZTF 1.0857 / `sigmapsf`",
    "ours_over_ssnrms": "ours / `ssnrms`",
    "ours_over_scorr": "ours / `scorr`",
    "ours_over_ztf": "ours / (1.0857 / `sigmapsf`) = A·B·C",
    "A": "A: flux, ours / ZTF PSF fit",
    "B": "B: flux error, ZTF background (`diffmaglim`) / ours",
    "C": "C: flux error, `sigmapsf` / ZTF background",
    "sqrt_chipsf": "sqrt(`chipsf`)",
    "C_over_sqrt_chipsf": "C / sqrt(`chipsf`)",
    "nea_ztf": "noise area (px²) of ZTF's background error",
    "nea_profile": "noise area (px²) of the candidate's profile (S/N > 25)",
}
#: Columns of the table, in order.
GROUPS = ("reals on", "reals off", "reals", "bogus", "all")


# ----------------------------------------------------------------------------- packets
def _unbinary(obj):
    """MongoDB extended JSON ``{"$binary": "..."}`` (or ``{"$binary": {"base64": ...}}``) -> bytes, recursively."""
    if isinstance(obj, dict):
        if "$binary" in obj:
            value = obj["$binary"]
            value = value.get("base64", "") if isinstance(value, dict) else value
            return base64.b64decode(value)
        return {k: _unbinary(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unbinary(v) for v in obj]
    return obj


def packet_records(raw: bytes, label: str) -> list[Mapping]:
    """The alert records of one packet file's bytes: an Avro container file, or JSON (one alert or a list).

    Raises
    ------
    DataError
        Neither readable Avro nor JSON; the message names ``label``.
    """
    import fastavro

    from realbogus.data.alerts import _short

    if raw.lstrip()[:1] in (b"{", b"["):
        try:
            data = _unbinary(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{label}: not a readable JSON alert ({_short(exc)})") from None
        records = data if isinstance(data, list) else [data]
        return [r for r in records if isinstance(r, Mapping)]
    try:
        return list(fastavro.reader(io.BytesIO(raw)))
    except Exception as exc:  # fastavro raises ValueError, EOFError, StopIteration, schema errors, ...
        raise DataError(f"{label}: not a readable Avro alert file, corrupt or truncated ({_short(exc)})") from None


def _is_ztf(record: Mapping) -> bool:
    candidate = record.get("candidate")
    return isinstance(candidate, Mapping) and candidate.get("sigmapsf") is not None


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _read_ztf_alert(record: Mapping, where: str, source: str) -> dict:
    """Stamp (masked pixels 0), identifiers and :data:`PACKET_FIELDS` of one ZTF record."""
    from realbogus.data.alerts import _field, _triplet
    from realbogus.data.loaders import SENTINEL

    stamp, offset = _triplet(record, where)
    with np.errstate(invalid="ignore"):
        stamp = np.where(np.abs(stamp) < SENTINEL, stamp, 0.0).astype(np.float32)
    candid = _field(record, ("candid",))
    out = {
        "source": source,
        "candid": "" if candid is None else str(candid),
        "objectId": str(_field(record, ("objectId",)) or ""),
        "isdiffpos": str(_field(record, ("isdiffpos",)) or ""),
        "centre_offset": offset,
        "stamp": stamp,
    }
    for name in PACKET_FIELDS:
        out[name] = _number(_field(record, (name,)))
    return out


class ReadAlerts:
    """What was read: per-alert dicts, and lines about what was not."""

    def __init__(self):
        self.alerts: list[dict] = []
        self.problems: list[str] = []
        self.n_other = 0  # records that are not ZTF alerts
        self.notes: list[str] = []

    def extend(self, other: "ReadAlerts") -> None:
        self.alerts += other.alerts
        self.problems += other.problems
        self.n_other += other.n_other
        self.notes += other.notes


def read_alert_files(paths: Iterable[str | os.PathLike]) -> ReadAlerts:
    """The ZTF alerts of Avro files or directories of them (read with :func:`realbogus.data.alerts.open_alerts`).

    A missing path, a directory without ``.avro`` files or a file that is not Avro raises
    :class:`~realbogus.errors.DataError`; an alert whose cutouts cannot be read is listed in
    ``problems`` and skipped.
    """
    from realbogus.data.alerts import _iter_records, open_alerts

    out = ReadAlerts()
    for path in paths:
        with open_alerts(path, orient=False) as src:  # checks the path and every file, lists them
            files = list(src.files)
        for f in files:
            for k, record in enumerate(_iter_records(f)):
                if not _is_ztf(record):
                    out.n_other += 1
                    continue
                where = f"{f}: alert {record.get('candid', k)}"
                try:
                    out.alerts.append(_read_ztf_alert(record, where, str(f)))
                except DataError as exc:
                    out.problems.append(str(exc))
    return out


def mirror_git_dir(mirrors: Path, repo: str) -> Path | None:
    """The git directory of ``repo`` (``owner/name``) under ``mirrors``, or None.

    Looked for as ``<owner>+<name>/repo``, ``<owner>+<name>`` and ``<owner>+<name>.git``.
    """
    name = str(repo).strip().replace("/", "+")
    if not name:
        return None
    for candidate in (mirrors / name / "repo", mirrors / name, mirrors / f"{name}.git"):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    return None


def _git(git_dir: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, check=False)
    except OSError as exc:
        raise DataError(f"cannot run git to read the mirrors ({exc})") from None


def find_packet(git_dir: Path, path: str, commit: str = "", history: int = 5) -> tuple[bytes | None, str]:
    """The bytes of ``path`` in the mirror: at ``commit``, else ``HEAD``, else in its history.

    The history tried is the last ``history`` commits that touched ``path`` (the file as each
    left it, then as it was just before, for a commit that deleted it).

    Returns
    -------
    (bytes, ref) when found, where ``ref`` is ``commit``, ``HEAD`` or the commit used (``<sha>^``
    for the parent of one); else ``(None, reason)``.
    """
    refs = [r for r in (str(commit).strip(), "HEAD") if r]
    for ref in refs:
        res = _git(git_dir, "cat-file", "blob", f"{ref}:{path}")
        if res.returncode == 0:
            return res.stdout, ref
    res = _git(git_dir, "rev-list", "--all", "-n", str(int(history)), "--", path)
    if res.returncode != 0:
        text = res.stderr.decode(errors="replace").strip().splitlines()
        return None, f"git: {text[-1] if text else 'rev-list failed'}"
    for rev in res.stdout.decode().split():
        for ref in (rev, f"{rev}^"):
            found = _git(git_dir, "cat-file", "blob", f"{ref}:{path}")
            if found.returncode == 0:
                return found.stdout, ref
    return None, "not at the recorded commit, at HEAD or in the mirror's history"


_NPZ_COLUMNS = ("candid", "source_repo", "source_path", "source_commit")


def read_npz_packets(npz: str | os.PathLike, mirrors: str | os.PathLike) -> ReadAlerts:
    """The source packet of every row of an alert archive, from git mirrors (see the module docstring).

    Raises
    ------
    DataError
        The archive is missing, unreadable or lacks a provenance column, or ``mirrors`` is not a
        folder. Rows whose packet is not found or not readable are listed in ``problems``.
    """
    from realbogus.data.alerts import _field

    npz, mirrors = Path(npz), Path(mirrors)
    if not npz.is_file():
        raise DataError(f"{npz}: no such file (--npz must name an .npz archive of alerts)")
    if not zipfile.is_zipfile(npz):
        raise DataError(f"{npz}: not an .npz archive (--npz must name an .npz archive of alerts)")
    if not mirrors.is_dir():
        raise DataError(f"{mirrors}: no such folder (--mirrors must name a folder of git mirrors)")
    try:
        with np.load(npz, allow_pickle=False) as z:
            missing = [c for c in _NPZ_COLUMNS if c not in z.files]
            if missing:
                raise DataError(f"{npz}: no column {', '.join(missing)} (needs {', '.join(_NPZ_COLUMNS)})")
            cols = {c: np.asarray(z[c]) for c in _NPZ_COLUMNS}
            images = np.asarray(z["images"]) if "images" in z.files else None
            sigmapsf = np.asarray(z["sigmapsf"], np.float64) if "sigmapsf" in z.files else None
    except DataError:
        raise
    except Exception as exc:  # not a zip, not an .npz, object arrays, ...
        raise DataError(f"{npz}: not a readable .npz archive ({str(exc).strip().splitlines()[0]})") from None
    n = len(cols["candid"])
    if any(len(v) != n for v in cols.values()):
        raise DataError(f"{npz}: columns {', '.join(_NPZ_COLUMNS)} differ in length")
    out = ReadAlerts()
    same_stamp = same_sigma = compared = 0
    for i in range(n):
        repo, path, commit = (str(cols[c][i]) for c in ("source_repo", "source_path", "source_commit"))
        candid = str(cols["candid"][i])
        where = f"{npz.name} row {i} (candid {candid}, {repo}:{path})"
        git_dir = mirror_git_dir(mirrors, repo)
        if git_dir is None:
            out.problems.append(f"{where}: no mirror of {repo} in {mirrors}")
            continue
        raw, ref = find_packet(git_dir, path, commit)
        if raw is None:
            out.problems.append(f"{where}: {ref}")
            continue
        try:
            records = packet_records(raw, where)
        except DataError as exc:
            out.problems.append(str(exc))
            continue
        match = [r for r in records if str(_field(r, ("candid",))) == candid]
        if not match:
            out.problems.append(f"{where}: no alert with this candid among the packet's {len(records)}")
            continue
        if not _is_ztf(match[0]):
            out.n_other += 1
            continue
        try:
            alert = _read_ztf_alert(match[0], where, f"{repo}:{path}@{ref}")
        except DataError as exc:
            out.problems.append(str(exc))
            continue
        out.alerts.append(alert)
        compared += 1
        if images is not None and images.shape[1:] == alert["stamp"].shape:
            same_stamp += bool(np.array_equal(np.nan_to_num(images[i]), alert["stamp"]))
        if sigmapsf is not None:
            same_sigma += bool(np.float32(sigmapsf[i]) == np.float32(alert["sigmapsf"]))
    if compared:
        out.notes.append(f"checked against {npz.name}: stamps identical for {same_stamp} of {compared}, "
                         f"`sigmapsf` for {same_sigma} of {compared}")
    return out


# ----------------------------------------------------------------------------- numbers
def measure(stamps: np.ndarray, fields: Mapping[str, np.ndarray], fwhm: float | None = None) -> dict[str, np.ndarray]:
    """Our S/N, ZTF's, their ratios and the A·B·C decomposition, per alert.

    Parameters
    ----------
    stamps
        (N, 29, 29, 3) stamps as stored (science, template, difference), masked pixels 0.
    fields
        (N,) arrays of :data:`PACKET_FIELDS` (NaN where a packet lacks one).
    fwhm
        FWHM (pixels) of the filter; default the median ``point_source_fwhm`` of ``stamps``.

    Returns
    -------
    dict of str to numpy.ndarray
        (N,) arrays: every key of :data:`ROWS`, and ``filter_fwhm``, ``noise`` (the difference's
        robust noise), ``F_ours``, ``sF_ours``, ``F_psf``, ``sF_psf``, ``sF_lim``,
        ``template_peak_snr`` and ``on_source``; plus the scalars ``fwhm`` and ``nea_filter``.
    """
    from realbogus.evaluation.realdata import template_peak_snr
    from realbogus.plots import realism as R

    stamps = np.asarray(stamps, np.float64)
    n, size = stamps.shape[0], stamps.shape[1]
    if fwhm is None:
        with R._no_empty_warnings():
            fwhm = float(np.nanmedian(R.point_source_fwhm(stamps)))
    fwhm = float(fwhm)
    ours = R.candidate_snr(stamps, fwhm, exclude_radius=EXCLUDE_RADIUS)
    d, g, noise = R.candidate_filter(stamps, fwhm, exclude_radius=EXCLUDE_RADIUS)  # the estimator's pieces
    valid = stamps[..., 2] != 0.0
    r = R._centre_distance(size)
    sum_g, sum_g2 = g[0].sum(), (g[0] ** 2).sum()  # one filter for every alert
    f = {k: np.asarray(fields[k], np.float64) for k in PACKET_FIELDS}
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        F_ours = (d * g).sum(axis=(1, 2)) * sum_g / sum_g2
        sF_ours = np.where(noise > 0, noise, np.nan) * sum_g / np.sqrt(sum_g2)
        F_psf = 10.0 ** (-0.4 * (f["magpsf"] - f["magzpsci"]))
        sF_psf = F_psf * f["sigmapsf"] / MAG_PER_SNR
        sF_lim = 10.0 ** (-0.4 * (f["diffmaglim"] - f["magzpsci"])) / 5.0
        ztf_snr = MAG_PER_SNR / f["sigmapsf"]
        C = sF_psf / sF_lim
        sqrt_chipsf = np.sqrt(f["chipsf"])
        disc = (r < PROFILE_RADIUS)[None] & valid
        total = np.where(disc, d, 0.0).sum(axis=(1, 2))
        power = np.where(disc, d**2, 0.0).sum(axis=(1, 2)) - disc.sum(axis=(1, 2)) * noise**2
        nea_profile = np.where((ours > PROFILE_MIN_SNR) & (power > 0), total**2 / power, np.nan)
        out = {
            "ours": ours,
            "ssnrms": f["ssnrms"],
            "scorr": f["scorr"],
            "ztf_snr": ztf_snr,
            "ours_over_ssnrms": ours / f["ssnrms"],
            "ours_over_scorr": ours / f["scorr"],
            "ours_over_ztf": ours / ztf_snr,
            "A": F_ours / F_psf,
            "B": sF_lim / sF_ours,
            "C": C,
            "sqrt_chipsf": sqrt_chipsf,
            "C_over_sqrt_chipsf": C / sqrt_chipsf,
            "nea_ztf": (sF_lim / noise) ** 2,
            "nea_profile": nea_profile,
        }
    peak = template_peak_snr(stamps)
    out.update({
        "filter_fwhm": np.full(n, fwhm), "noise": noise, "F_ours": F_ours, "sF_ours": sF_ours,
        "F_psf": F_psf, "sF_psf": sF_psf, "sF_lim": sF_lim,
        "template_peak_snr": peak, "on_source": R.on_template_source(stamps),
        "fwhm": fwhm, "nea_filter": float(sum_g**2 / sum_g2),
    })
    return out


def group_masks(drb: np.ndarray, on_source: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`GROUPS` -> (N,) bool: probable reals (``drb >= 0.9``) on and off a template source, all
    probable reals, probable bogus (``drb < 0.1``), and every alert."""
    from realbogus.plots.realism import DRB_BOGUS, DRB_REAL

    drb = np.asarray(drb, np.float64)
    on = np.asarray(on_source, bool)
    with np.errstate(invalid="ignore"):
        real, bogus = drb >= DRB_REAL, drb < DRB_BOGUS
    return {"reals on": real & on, "reals off": real & ~on, "reals": real, "bogus": bogus,
            "all": np.ones(len(drb), bool)}


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _cell(values: np.ndarray, n_group: int) -> str:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return "-"
    lo, med, hi = np.percentile(v, [25, 50, 75])
    text = f"{_fmt(med)} [{_fmt(lo)}, {_fmt(hi)}]"
    return text if v.size == n_group else f"{text} (n={v.size})"


def summary_table(measured: Mapping[str, np.ndarray], groups: Mapping[str, np.ndarray]) -> str:
    """Markdown: one row per key of :data:`ROWS`, one column per group; cells median [25th, 75th percentile]."""
    names = list(groups)
    lines = ["| | " + " | ".join(f"{g} (n={int(np.sum(groups[g]))})" for g in names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for key, label in ROWS.items():
        values = np.asarray(measured[key], np.float64)
        cells = [_cell(values[np.asarray(groups[g], bool)], int(np.sum(groups[g]))) for g in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Columns of the CSV after the identifiers: packet fields, then measured numbers.
_CSV_MEASURED = ("template_peak_snr", "on_source", "filter_fwhm", "noise", "F_ours", "sF_ours", "F_psf", "sF_psf",
                 "sF_lim", *ROWS)


def write_csv(path: str | os.PathLike, alerts: Sequence[Mapping], measured: Mapping[str, np.ndarray]) -> Path:
    """One row per alert (identifiers, packet fields, measured numbers), written atomically."""
    from realbogus.io import atomic_write

    ids = ("source", "candid", "objectId", "isdiffpos", "centre_offset")
    header = [*ids, *PACKET_FIELDS, *[k for k in _CSV_MEASURED if k not in PACKET_FIELDS]]

    def fmt(v) -> str:
        if isinstance(v, (bool, np.bool_)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return "" if not np.isfinite(v) else f"{float(v):.10g}"
        return str(v)

    path = Path(path)
    with atomic_write(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i, alert in enumerate(alerts):
            row = [alert[k] for k in ids] + [alert[k] for k in PACKET_FIELDS]
            row += [measured[k][i] for k in header[len(ids) + len(PACKET_FIELDS):]]
            writer.writerow([fmt(v) for v in row])
    return path


# ----------------------------------------------------------------------------- command line
def _positive(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of pixels > 0")
    return value


@report_errors
def main(argv=None) -> str:
    """``python -m realbogus.plots.snr_scale``: the table on stdout, optionally the CSV."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m realbogus.plots.snr_scale",
        description="Compare our candidate S/N (realbogus.plots.realism.candidate_snr, on each alert's "
                    "difference cutout) with the S/N fields of ZTF alert packets: ssnrms, scorr and "
                    "1.0857/sigmapsf, and split ours/(1.0857/sigmapsf) into A (flux ratio) x B (ZTF's "
                    "background PSF-fit error from diffmaglim/magzpsci over our filter's error) x C "
                    "(sigmapsf's error over that background error), beside sqrt(chipsf). Prints a "
                    "Markdown table of medians and interquartile ranges for probable reals (drb >= 0.9) "
                    "on and off a >= 20-sigma template source, probable bogus (drb < 0.1) and all alerts.",
        epilog="Example: python -m realbogus.plots.snr_scale --npz ../shared/data/ztf_alerts_dev.npz "
               "--mirrors MIRRORS --out DIR, MIRRORS a folder of git mirrors named <owner>+<name>.")
    parser.add_argument("--alerts", nargs="+", action="extend", type=Path, default=[], metavar="PATH",
                        help="Avro alert files, or directories of .avro files (repeatable)")
    parser.add_argument("--npz", type=Path, metavar="PATH",
                        help="alert archive whose rows name their packets (candid, source_repo, source_path, "
                             "source_commit), e.g. ../shared/data/ztf_alerts_dev.npz; needs --mirrors")
    parser.add_argument("--mirrors", type=Path, metavar="DIR",
                        help="folder of git mirrors named <owner>+<name> (bare, or holding one as 'repo')")
    parser.add_argument("--fwhm", type=_positive, metavar="PIXELS",
                        help="FWHM of the Gaussian filter (default: median point_source_fwhm of the alerts read)")
    parser.add_argument("--out", type=Path, metavar="DIR", help=f"write DIR/{CSV_FILE}, one row per alert")
    args = parser.parse_args(argv)

    if not args.alerts and args.npz is None:
        raise ConfigError("nothing to read: give --alerts PATH ... and/or --npz PATH --mirrors DIR")
    if (args.npz is None) != (args.mirrors is None):
        raise ConfigError("--npz and --mirrors go together: the archive names the packets, the mirrors hold them")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out}: is a file, not a folder")

    read = ReadAlerts()
    if args.alerts:
        read.extend(read_alert_files(args.alerts))
    if args.npz is not None:
        read.extend(read_npz_packets(args.npz, args.mirrors))
    if not read.alerts:
        inputs = [str(p) for p in args.alerts] + ([str(args.npz)] if args.npz is not None else [])
        why = f"; {len(read.problems)} not found or unreadable, first: {read.problems[0]}" if read.problems else ""
        raise DataError(f"no ZTF alerts (records with a candidate sigmapsf) in {', '.join(inputs)}"
                        f" ({read.n_other} other records{why})")

    stamps = np.stack([a["stamp"] for a in read.alerts])
    fields = {k: np.array([a[k] for a in read.alerts], np.float64) for k in PACKET_FIELDS}
    measured = measure(stamps, fields, args.fwhm)
    groups = group_masks(fields["drb"], measured["on_source"])
    table = summary_table(measured, groups)

    print(f"{len(read.alerts)} ZTF alerts read; {len(read.problems)} not found or unreadable; "
          f"{read.n_other} records of other surveys skipped. Filter FWHM {measured['fwhm']:.2f} px "
          f"(noise area {measured['nea_filter']:.1f} px²).")
    for note in read.notes:
        print(note + ".")
    print("Cells: median [25th, 75th percentile]; (n=) where a packet field is missing. Reals drb >= 0.9, "
          "bogus drb < 0.1; on/off: template peak >= 20 sigma within 2 px of the centre.")
    print()
    print(table)
    if read.problems:
        print()
        print(f"Not found or unreadable ({len(read.problems)}):")
        n_snappy = sum("cramjam" in line for line in read.problems)
        if n_snappy:
            print(f"- {n_snappy} of them are snappy-compressed Avro, which needs `pip install cramjam`")
        for line in read.problems[:20]:
            print(f"- {line}")
        if len(read.problems) > 20:
            print(f"- ... and {len(read.problems) - 20} more")
    if args.out is not None:
        path = write_csv(args.out / CSV_FILE, read.alerts, measured)
        print()
        print(f"wrote {path}")
    return table


if __name__ == "__main__":
    main()
