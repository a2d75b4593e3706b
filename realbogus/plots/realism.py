"""How realistic are simulated stamps? Pixel statistics and point-source shapes, side by side.

The same measurements run on any (N, 29, 29, 3) stamps in counts, simulated or real (for example
the ZTF alert triplets of ``../shared/data``), so two sets can be compared number by number:

- :func:`background_statistics`: per stamp and channel, the sky level, the robust noise, the
  sky-to-noise ratio, the lag-1 noise correlation (resampled templates have correlated noise) and
  the fraction of 5-sigma outliers (clutter: stars, cosmic rays, defects); plus the reference and
  difference noise relative to the new image's;
- :func:`radial_profiles` and :func:`point_source_fwhm`: the shape of the source at the stamp
  centre (profiles in arcseconds, so that different pixel scales compare; the FWHM in pixels,
  times the pixel scale for arcseconds);
- :func:`count_sources`: crowding, the distinct sources of the reference around the candidate;
  :func:`on_template_source`: whether the candidate sits on a source of the reference (the
  real-data check's 20-sigma criterion);
- :func:`candidate_snr`: the PSF-matched S/N of the difference at the candidate, measured on the
  stamp alone so that real and simulated stamps compare (:func:`filter_noise_scatter` checks
  that it is in noise units);
- :func:`statistics_table`, :func:`plot_statistic_histograms` and :func:`plot_profiles`: the
  comparison as a table and as figures;
- :func:`preset_stamps` and :func:`preset_sample`: stamps simulated with each camera preset
  (Tomo-e Gozen, ZTF), to put both next to real alerts;
- :func:`realism_summary`, :func:`summary_markdown`, :func:`plot_snr_distributions` and
  :func:`compare_with_alerts`: every number above for the presets and the alerts, as one table,
  and the S/N distributions of noise peaks, test reals and alerts as one figure. From the shell::

      python -m realbogus.plots.realism [--out experiments/figures] [--ztf PATH] [--presets tomoe ztf]

Background statistics leave out a disc around the stamp centre (the candidate itself would
inflate the noise) and pixels that are exactly zero (masked pixels, in real cutouts and in the
simulated masked regions alike).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Mapping, Sequence

import numpy as np

from realbogus.errors import report_errors
from realbogus.plots.stamps import CHANNEL_NAMES

__all__ = [
    "MAD_TO_SIGMA",
    "STATISTIC_LABELS",
    "background_statistics",
    "radial_profiles",
    "point_source_fwhm",
    "candidate_filter",
    "statistics_table",
    "plot_statistic_histograms",
    "plot_profiles",
    "preset_stamps",
    "CROWDING_SIGMA",
    "SUMMARY_LABELS",
    "count_sources",
    "on_template_source",
    "candidate_snr",
    "filter_noise_scatter",
    "realism_summary",
    "summary_markdown",
    "plot_snr_distributions",
    "preset_sample",
    "noise_peak_law",
    "compare_with_alerts",
    "main",
]

#: Standard deviation of a normal distribution per unit of median absolute deviation.
MAD_TO_SIGMA = 1.4826
GAUSSIAN_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

#: What each statistic of :func:`background_statistics` means, for tables and axis labels.
STATISTIC_LABELS: dict[str, str] = {
    **{f"{ch}_sky": f"{ch}: sky level (median, counts)" for ch in CHANNEL_NAMES},
    **{f"{ch}_noise": f"{ch}: noise (1.4826 MAD, counts)" for ch in CHANNEL_NAMES},
    "new_sky_to_noise": "new: sky / noise",
    "ref_sky_to_noise": "ref: sky / noise",
    **{f"{ch}_corr": f"{ch}: lag-1 noise correlation" for ch in CHANNEL_NAMES},
    **{f"{ch}_outliers": f"{ch}: fraction of pixels > 5 sigma" for ch in CHANNEL_NAMES},
    "ref_new_noise_ratio": "noise ratio ref / new",
    "diff_new_noise_ratio": "noise ratio diff / new",
}


@contextmanager
def _no_empty_warnings():
    """Silence numpy's warnings about all-NaN rows (they give NaN, which is what we want)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All-NaN slice")
        warnings.filterwarnings("ignore", message="Mean of empty slice")
        yield


def _centre_distance(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2.0
    return np.hypot(xx - c, yy - c)


def _row_nanmedian(a: np.ndarray) -> np.ndarray:
    """Median of each row ignoring NaN (``np.nanmedian`` only on the rows that need it: it is slow)."""
    out = np.empty(a.shape[0])
    has_nan = np.isnan(a).any(axis=1)
    out[~has_nan] = np.median(a[~has_nan], axis=1)
    if has_nan.any():
        out[has_nan] = np.nanmedian(a[has_nan], axis=1)
    return out


def _lag1_correlation(z: np.ndarray) -> np.ndarray:
    """Mean correlation of horizontally and vertically adjacent pixels; NaN pixels are skipped."""
    num = np.zeros(z.shape[0])
    den = np.zeros(z.shape[0])
    for a, b in ((z[:, :, :-1], z[:, :, 1:]), (z[:, :-1, :], z[:, 1:, :])):
        both = np.isfinite(a) & np.isfinite(b)
        a0, b0 = np.where(both, a, 0.0), np.where(both, b, 0.0)
        num += (a0 * b0).sum(axis=(1, 2))
        den += (0.5 * (a0**2 + b0**2)).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def background_statistics(images: np.ndarray, exclude_radius: float = 6.0, clip: float = 3.0) -> dict[str, np.ndarray]:
    """Per-stamp statistics of the background of each channel.

    Parameters
    ----------
    images
        (N, H, W, 3) stamps in counts, channels (new, ref, diff).
    exclude_radius
        Pixels closer than this to the stamp centre are left out (the candidate).
    clip
        The noise correlation uses only pixels within ``clip`` noise units of the sky, so
        sources do not count as correlated noise.

    Returns
    -------
    dict of str to numpy.ndarray
        Arrays of shape (N,), keyed as in :data:`STATISTIC_LABELS`: ``{channel}_sky``,
        ``{channel}_noise``, ``{channel}_corr``, ``{channel}_outliers`` for every channel,
        ``new_sky_to_noise``, ``ref_sky_to_noise``, ``ref_new_noise_ratio`` and
        ``diff_new_noise_ratio``. NaN where a stamp has no usable background pixels.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected stamps of shape (N, H, H, 3), got {images.shape}")
    outer = _centre_distance(images.shape[1]) >= exclude_radius
    out: dict[str, np.ndarray] = {}
    for c, ch in enumerate(CHANNEL_NAMES):
        x = images[..., c].copy()
        x[:, ~outer] = np.nan
        x[x == 0.0] = np.nan  # masked pixels
        flat = x[:, outer]
        with np.errstate(invalid="ignore"), _no_empty_warnings():
            sky = _row_nanmedian(flat)
            noise = MAD_TO_SIGMA * _row_nanmedian(np.abs(flat - sky[:, None]))
            z = (x - sky[:, None, None]) / np.where(noise > 0, noise, np.nan)[:, None, None]
            n_valid = np.isfinite(z).sum(axis=(1, 2))
            out[f"{ch}_outliers"] = np.where(n_valid > 0, (z > 5.0).sum(axis=(1, 2)) / np.maximum(n_valid, 1), np.nan)
            out[f"{ch}_corr"] = _lag1_correlation(np.where(np.abs(z) < clip, z, np.nan))
        out[f"{ch}_sky"] = sky
        out[f"{ch}_noise"] = noise
    with np.errstate(invalid="ignore", divide="ignore"):
        for ch in ("new", "ref"):
            out[f"{ch}_sky_to_noise"] = out[f"{ch}_sky"] / out[f"{ch}_noise"]
        out["ref_new_noise_ratio"] = out["ref_noise"] / out["new_noise"]
        out["diff_new_noise_ratio"] = out["diff_noise"] / out["new_noise"]
    return {key: out[key] for key in STATISTIC_LABELS}


def _source_centres(images: np.ndarray, search_radius: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel centre of the source near the middle of each 2-D stamp, and its background.

    The brightest pixel within ``search_radius`` of the stamp centre, refined by the flux-weighted
    centroid of the positive pixels in the 3 x 3 box around it.
    """
    n, size, _ = images.shape
    r = _centre_distance(size)
    background = np.median(images[:, r >= 8.0], axis=1)
    x = images - background[:, None, None]
    near = np.where(r <= search_radius, x, -np.inf).reshape(n, -1).argmax(axis=1)
    py, px = np.divmod(near, size)
    offsets = np.arange(-1, 2)
    ys = np.clip(py[:, None] + offsets[None, :], 0, size - 1)
    xs = np.clip(px[:, None] + offsets[None, :], 0, size - 1)
    box = np.clip(x[np.arange(n)[:, None, None], ys[:, :, None], xs[:, None, :]], 0.0, None)
    total = box.sum(axis=(1, 2))
    safe = np.where(total > 0, total, 1.0)
    cy = np.where(total > 0, (box.sum(axis=2) * ys).sum(axis=1) / safe, py)
    cx = np.where(total > 0, (box.sum(axis=1) * xs).sum(axis=1) / safe, px)
    return cx, cy, background


def radial_profiles(images: np.ndarray, pixel_scale: float, channel: int = 2, r_max: float = 8.0,
                    bin_width: float = 0.5, aperture: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged profiles of the source at each stamp's centre, in arcseconds.

    Parameters
    ----------
    images
        (N, H, W, 3) stamps in counts.
    pixel_scale
        Arcseconds per pixel of these stamps.
    channel
        Channel to measure (default: the difference, where a transient is alone).
    r_max, bin_width
        Radial bins in arcseconds: ``0, bin_width, ..., r_max``.
    aperture
        Radius in arcseconds of the flux that normalises each profile.

    Returns
    -------
    radii : numpy.ndarray
        (n_bins,) bin centres in arcseconds.
    profiles : numpy.ndarray
        (N, n_bins) mean surface brightness in each bin, as a fraction of the flux inside
        ``aperture`` per square arcsecond, so that stamps at different pixel scales compare.
        NaN in empty bins or where the aperture flux is not positive.
    """
    stamps = np.asarray(images, dtype=np.float64)[..., channel]
    n, size, _ = stamps.shape
    cx, cy, background = _source_centres(stamps)
    x = stamps - background[:, None, None]
    yy, xx = np.mgrid[:size, :size]
    r_arcsec = np.hypot(xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]) * pixel_scale
    flux = np.where(r_arcsec <= aperture, x, 0.0).sum(axis=(1, 2))
    edges = np.arange(0.0, r_max + bin_width / 2, bin_width)
    profiles = np.full((n, edges.size - 1), np.nan)
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (r_arcsec >= lo) & (r_arcsec < hi)
        count = inside.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            profiles[:, b] = np.where(count > 0, np.where(inside, x, 0.0).sum(axis=(1, 2)) / count, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        profiles = profiles / (pixel_scale**2 * np.where(flux > 0, flux, np.nan))[:, None]
    return 0.5 * (edges[:-1] + edges[1:]), profiles


def point_source_fwhm(images: np.ndarray, channel: int = 2, half_box: int = 5) -> np.ndarray:
    """FWHM in pixels of the source at each stamp's centre, from a Gaussian fit.

    Fits a round Gaussian plus a constant background to the ``(2 half_box + 1)``-pixel box at the
    stamp centre (least squares, the source centre free within 3 pixels). A Gaussian fitted to a
    seeing-limited Moffat profile (beta 2.5-4.5) gives about 1.05 times its FWHM; real and
    simulated stamps measured the same way compare directly.

    Parameters
    ----------
    images
        (N, H, W, 3) stamps in counts.
    channel
        Channel to measure (default: the difference).
    half_box
        Half the side of the fitted box, in pixels.

    Returns
    -------
    numpy.ndarray
        (N,) FWHM in pixels (multiply by the pixel scale for arcseconds); NaN where the fit
        fails or finds no peak.
    """
    from scipy.optimize import least_squares

    stamps = np.asarray(images, dtype=np.float64)[..., channel]
    n, size, _ = stamps.shape
    cx, cy, background = _source_centres(stamps)
    c = (size - 1) // 2
    box = slice(c - half_box, c + half_box + 1)
    yy, xx = np.mgrid[box, box].astype(np.float64)
    lower = [0.0, c - 3.0, c - 3.0, 0.3, -np.inf]
    upper = [np.inf, c + 3.0, c + 3.0, 2.0 * half_box, np.inf]
    out = np.full(n, np.nan)
    for i in range(n):
        data = stamps[i, box, box]
        peak = data.max() - background[i]
        if not np.isfinite(peak) or peak <= 0:
            continue

        def residual(p, data=data):
            amp, x0, y0, sigma, sky = p
            return (amp * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2.0 * sigma**2)) + sky - data).ravel()

        start = [peak, np.clip(cx[i], c - 3, c + 3), np.clip(cy[i], c - 3, c + 3), 1.2, background[i]]
        try:
            fit = least_squares(residual, start, bounds=(lower, upper))
        except ValueError:
            continue
        sigma = fit.x[3]
        if fit.success and fit.x[0] > 0 and sigma < upper[3] * 0.999:
            out[i] = GAUSSIAN_FWHM_PER_SIGMA * sigma
    return out


def statistics_table(groups: Mapping[str, Mapping[str, np.ndarray]], keys: Sequence[str] | None = None):
    """Medians (and 16th-84th percentiles) of each statistic, one column per group of stamps.

    Parameters
    ----------
    groups
        Name of a set of stamps (e.g. ``"simulated"``, ``"ZTF"``) -> the output of
        :func:`background_statistics` (or any dict of per-stamp arrays with the same keys).
    keys
        Statistics to list (default: every key of the first group).

    Returns
    -------
    astropy.table.Table
        Columns ``statistic``, then ``<group>`` (median) and ``<group> 16-84%`` (range as text).
    """
    from astropy.table import Table

    names = list(groups)
    keys = list(keys) if keys is not None else list(next(iter(groups.values())))
    table = Table()
    table["statistic"] = [STATISTIC_LABELS.get(k, k) for k in keys]
    for name in names:
        medians, ranges = [], []
        for k in keys:
            v = np.asarray(groups[name][k], dtype=np.float64)
            v = v[np.isfinite(v)]
            if v.size == 0:
                medians.append(np.nan)
                ranges.append("-")
                continue
            lo, med, hi = np.percentile(v, [16, 50, 84])
            medians.append(med)
            ranges.append(f"{lo:.3g} - {hi:.3g}")
        table[name] = medians
        table[name].format = ".3g"
        table[f"{name} 16-84%"] = ranges
    return table


def plot_statistic_histograms(groups: Mapping[str, Mapping[str, np.ndarray]], keys: Sequence[str],
                              per_row: int = 3, panel_size: tuple[float, float] = (2.6, 1.9), fig=None):
    """Normalised histograms of per-stamp statistics, the groups overlaid, one panel per key.

    Each panel's bins span the 1st-99th percentiles of all groups together, so one outlying
    stamp does not squash the rest.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    n_rows = -(-len(keys) // per_row)
    if fig is None:
        fig = plt.figure(figsize=(per_row * panel_size[0], n_rows * panel_size[1]), layout="constrained")
    axes = fig.subplots(n_rows, per_row, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        values = {name: np.asarray(g[key], np.float64) for name, g in groups.items()}
        values = {name: v[np.isfinite(v)] for name, v in values.items()}
        pooled = np.concatenate([v for v in values.values() if v.size] or [np.zeros(1)])
        lo, hi = np.percentile(pooled, [1, 99])
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
        for name, v in values.items():
            if v.size:
                ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, density=True, histtype="step",
                        label=f"{name} (median {np.median(v):.3g})")
        ax.set_title(STATISTIC_LABELS.get(key, key), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
        ax.legend(fontsize=6, frameon=False)
    for ax in axes[len(keys):]:
        ax.axis("off")
    return fig


def plot_profiles(ax, radii: np.ndarray, profiles: Mapping[str, np.ndarray], log: bool = False) -> None:
    """Median radial profile of each group with its 16th-84th percentile band.

    Parameters
    ----------
    ax
        Matplotlib axes to draw on.
    radii, profiles
        Bin centres and, per group, the (N, n_bins) output of :func:`radial_profiles`.
    log
        Logarithmic y axis (shows the wings; noisy bins below zero are then left out).
    """
    for name, p in profiles.items():
        p = np.asarray(p, np.float64)
        with _no_empty_warnings():
            lo, med, hi = np.nanpercentile(p, [16, 50, 84], axis=0)
        line = ax.plot(radii, med, marker=".", label=f"{name} ({len(p)} stamps)")[0]
        ax.fill_between(radii, lo, hi, color=line.get_color(), alpha=0.2, where=(lo > 0) if log else None)
    if log:
        ax.set_yscale("log")
    else:
        ax.axhline(0.0, color="0.5", lw=0.5)
    ax.set_xlabel("radius (arcsec)")
    ax.set_ylabel("fraction of flux per arcsec$^2$")
    ax.legend(fontsize=7, frameon=False)


def preset_stamps(presets: Sequence[str] = ("tomoe", "ztf"), n: int = 400, kind: str = "rand_artificial_real",
                  seed: int = 0) -> dict[str, tuple[np.ndarray, float]]:
    """Stamps of one kind simulated with each camera preset, with the preset's pixel scale.

    Parameters
    ----------
    presets
        Names of ``conf/instrument/`` presets.
    n
        Stamps per preset.
    kind
        The kind to simulate (default: point sources injected at random, in their fields).
    seed
        Seed of the draw (the same for every preset).

    Returns
    -------
    dict
        Preset name -> ``(images, pixel_scale)``: (n, 29, 29, 3) stamps in ADU and arcsec per
        pixel, ready for :func:`background_statistics`, :func:`point_source_fwhm` and
        :func:`radial_profiles`.
    """
    from realbogus.simulation import generate_kind, instrument_preset, resolve_config

    out = {}
    for name in presets:
        cfg = resolve_config(instrument_preset(name))
        stamps = generate_kind(kind, n, cfg=cfg, seed=seed)["images"]
        out[name] = (stamps, float(cfg["instrument"]["pixel_scale"]))
    return out


# ----------------------------------------------------------------------------- crowding and S/N
#: Robust sigmas above its median from which a reference pixel belongs to a source (crowding).
CROWDING_SIGMA = 5.0
#: Camera presets the command line compares with the alerts.
PRESETS = ("tomoe", "ztf")
#: ZTF's deep real/bogus score from which an alert is probably real, and below which probably bogus.
DRB_REAL, DRB_BOGUS = 0.9, 0.1
#: Arcseconds per pixel of the ZTF alert stamps.
ZTF_PIXEL_SCALE = 1.01


def _robust_sky_noise(x: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and 1.4826 MAD of each (H, W) image of ``x``, over the pixels where ``use`` holds."""
    flat = np.where(use, x, np.nan).reshape(x.shape[0], -1)
    with np.errstate(invalid="ignore"), _no_empty_warnings():
        sky = _row_nanmedian(flat)
        noise = MAD_TO_SIGMA * _row_nanmedian(np.abs(flat - sky[:, None]))
    return sky, noise


def count_sources(images: np.ndarray, channel: int = 1, threshold: float = CROWDING_SIGMA,
                  exclude_radius: float = 3.0) -> np.ndarray:
    """Number of distinct sources in one channel of each stamp (crowding of the field).

    A source is a group of 8-connected pixels more than ``threshold`` robust sigmas (1.4826 MAD)
    above the stamp's median. Groups reaching into the disc of radius ``exclude_radius`` around
    the centre are not counted: that is the candidate itself, or the star or galaxy it sits on
    (:func:`on_template_source` says how often). Masked pixels (exactly zero) are left out.

    Parameters
    ----------
    images
        (N, H, W, 3) stamps in counts.
    channel
        Channel to count in (default: the reference, deep and free of the transient).
    threshold
        Robust sigmas above the median.
    exclude_radius
        Radius in pixels of the central disc whose sources are not counted.

    Returns
    -------
    numpy.ndarray
        (N,) float counts; NaN where a stamp has no noise to measure (fully masked or flat).
    """
    from scipy import ndimage

    x = np.asarray(images, dtype=np.float64)[..., channel]
    n, size, _ = x.shape
    valid = x != 0.0
    sky, noise = _robust_sky_noise(x, valid)
    with np.errstate(invalid="ignore"):
        above = valid & (x - sky[:, None, None] > threshold * noise[:, None, None])
    # One call for the whole stack: pixels connect within a stamp, never across stamps.
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    labels, total = ndimage.label(above, structure=structure)
    counts = np.zeros(n)
    if total:
        stamp_of = np.zeros(total + 1, np.int64)
        stamp_of[labels[above]] = np.nonzero(above)[0]
        central = np.zeros(total + 1, bool)
        central[labels[:, _centre_distance(size) < exclude_radius]] = True
        keep = np.flatnonzero(~central[1:]) + 1
        counts = np.bincount(stamp_of[keep], minlength=n).astype(np.float64)
    return np.where(noise > 0, counts, np.nan)


def on_template_source(images: np.ndarray, min_snr: float | None = None) -> np.ndarray:
    """Whether each stamp's candidate sits on a source of the reference.

    The criterion of the real-data check (:func:`realbogus.evaluation.realdata.template_peak_snr`):
    the reference's brightest pixel within 2 pixels of the centre is at least ``min_snr``
    (default :data:`realbogus.evaluation.realdata.SOURCE_SNR`, 20) robust sigmas above the
    reference's median.

    Returns
    -------
    numpy.ndarray
        (N,) bool.
    """
    from realbogus.evaluation.realdata import SOURCE_SNR, template_peak_snr

    return template_peak_snr(images) >= (SOURCE_SNR if min_snr is None else float(min_snr))


def candidate_filter(images: np.ndarray, fwhm, channel: int = 2, exclude_radius: float = 6.0):
    """The pieces of :func:`candidate_snr`: ``(d, g, sigma)``.

    ``d`` (N, H, W) is the channel minus its robust sky, masked (zero) pixels kept at 0; ``g``
    (N, H, W) the round Gaussian filter of FWHM ``fwhm`` at the central pixel; ``sigma`` (N,) the
    robust noise beyond ``exclude_radius``. The S/N is ``sum(d g) / (sigma sqrt(sum g^2))``.
    """
    x = np.asarray(images, dtype=np.float64)[..., channel]
    n, size, _ = x.shape
    r = _centre_distance(size)
    valid = x != 0.0  # masked pixels: left out of the noise, contribute nothing to the sum
    sky, noise = _robust_sky_noise(x, valid & (r >= exclude_radius)[None])
    sigma = np.broadcast_to(np.asarray(fwhm, dtype=np.float64), (n,)) / GAUSSIAN_FWHM_PER_SIGMA
    g = np.exp(-(r[None] ** 2) / (2.0 * sigma[:, None, None] ** 2))
    d = np.where(valid, x - sky[:, None, None], 0.0)
    return d, g, noise


def candidate_snr(images: np.ndarray, fwhm, channel: int = 2, exclude_radius: float = 6.0) -> np.ndarray:
    """PSF-matched S/N of the difference at the stamp centre, measured on the stamp alone.

    The estimator is the simulator's detection statistic (:meth:`Scene.amplitude_for_snr
    <realbogus.simulation.scenes.Scene.amplitude_for_snr>`), ``sum(d g) / (sigma sqrt(sum g^2))``,
    with what a stamp alone provides: ``g`` a round Gaussian of FWHM ``fwhm`` centred on the
    stamp's central pixel (where both the alerts and the simulator put the candidate), ``d`` the
    difference minus its median, and ``sigma`` the difference's robust noise (1.4826 MAD) beyond
    ``exclude_radius``, the noise taken as white, as the simulator takes it. Because it needs
    neither the true PSF nor the true noise, it runs the same on simulated and on real stamps;
    a Gaussian in place of a Moffat PSF and a candidate up to half a pixel off the centre cost a
    few per cent of the S/N.

    Parameters
    ----------
    images
        (N, H, W, 3) stamps in counts, the candidate positive in ``channel``.
    fwhm
        FWHM of the filter in pixels: a number, or (N,) values; e.g. the median of
        :func:`point_source_fwhm` over a set of stamps.
    channel
        Channel to measure (default: the difference).
    exclude_radius
        Pixels nearer than this to the centre are left out of the noise.

    Returns
    -------
    numpy.ndarray
        (N,) S/N; NaN where the background has no noise to measure.
    """
    d, g, noise = candidate_filter(images, fwhm, channel, exclude_radius)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = (d * g).sum(axis=(1, 2)) / (noise * np.sqrt((g**2).sum(axis=(1, 2))))
    return np.where(noise > 0, snr, np.nan)


def filter_noise_scatter(images: np.ndarray, fwhm, channel: int = 2, min_radius: float = 8.0, step: int = 4) -> float:
    """Scatter of :func:`candidate_snr`'s statistic on empty background: 1 if its S/N is in noise units.

    The same filter, normalised the same way, is laid at grid positions (every ``step`` pixels,
    at least ``min_radius`` from the centre and 4 pixels from the edges) of every stamp; the
    result is the robust standard deviation (1.4826 MAD) of all these values. Noise correlated
    over the filter's width makes it exceed 1 (the S/N is then overstated by that factor), an
    overestimated noise makes it fall below 1.

    Parameters
    ----------
    images
        (N, H, W, 3) stamps in counts.
    fwhm
        FWHM of the filter in pixels (a number).
    channel
        Channel to measure (default: the difference).
    min_radius, step
        Where to lay the filter: away from the candidate, on a grid.

    Returns
    -------
    float
        NaN if no position is usable.
    """
    x = np.asarray(images, dtype=np.float64)[..., channel]
    n, size, _ = x.shape
    r = _centre_distance(size)
    valid = x != 0.0
    sky, noise = _robust_sky_noise(x, valid & (r >= 6.0)[None])
    d = np.where(valid, x - sky[:, None, None], 0.0)
    yy, xx = np.mgrid[:size, :size]
    sigma = float(fwhm) / GAUSSIAN_FWHM_PER_SIGMA
    values = []
    for cy in range(4, size - 4, step):
        for cx in range(4, size - 4, step):
            if np.hypot(cx - (size - 1) / 2.0, cy - (size - 1) / 2.0) < min_radius:
                continue
            g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * sigma**2))
            with np.errstate(invalid="ignore", divide="ignore"):
                values.append((d * g).sum(axis=(1, 2)) / (noise * np.sqrt((g**2).sum())))
    v = np.concatenate(values) if values else np.zeros(0)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(v - np.median(v))))


# ----------------------------------------------------------------------------- the comparison
#: Rows of :func:`realism_summary` and :func:`summary_markdown`: key -> label.
SUMMARY_LABELS: dict[str, str] = {
    "n": "stamps: pixel statistics / mix (reals + bogus)",
    "new_sky_to_noise": "new: sky / noise",
    "ref_new_noise_ratio": "noise ratio ref / new",
    "ref_corr": "ref: lag-1 noise correlation",
    "diff_new_noise_ratio": "noise ratio diff / new",
    "fwhm_arcsec": "FWHM of the central source (arcsec)",
    "fwhm_pixels": "FWHM of the central source (pixels)",
    "sources_median": "reference sources per stamp, median",
    "sources_mean": "reference sources per stamp, mean",
    "sources_any": "share of stamps with a reference source",
    "on_source": "candidate on a template source (>= 20 sigma): all",
    "on_source_real": "candidate on a template source: reals",
    "on_source_bogus": "candidate on a template source: bogus",
    "snr_real": "candidate S/N, median: reals",
    "snr_bogus": "candidate S/N, median: bogus",
    "snr_scatter": "candidate S/N filter on empty background: scatter",
    "recorded_snr_real": "recorded S/N, median: reals (simulator's `snr`; ZTF 1.0857 / `sigmapsf`, "
                         "not on the candidate S/N's scale)",
}


def realism_summary(stamps: np.ndarray, pixel_scale: float, real: np.ndarray, bogus: np.ndarray,
                    shape_stamps: np.ndarray | None = None,
                    recorded_snr: np.ndarray | None = None) -> dict[str, object]:
    """The numbers of one set of stamps for the realism table (keys of :data:`SUMMARY_LABELS`).

    Parameters
    ----------
    stamps
        (N, 29, 29, 3) stamps in counts, a mix of reals and bogus: crowding, the share on a
        template source and the candidate S/N are measured on them.
    pixel_scale
        Arcseconds per pixel.
    real, bogus
        (N,) bool: which stamps are (probably) real and which (probably) bogus; the shares and
        S/N are also given for each. A stamp may be neither (``on_source`` counts every stamp).
    shape_stamps
        Stamps for the pixel statistics and the FWHM (default: ``stamps``); e.g. clean point
        sources. The median FWHM in pixels is also the width of :func:`candidate_snr`'s filter.
    recorded_snr
        (N,) S/N that came with the stamps (the simulator's ``snr`` column, or a survey's own),
        whose median over the reals is given beside the measured one; optional.

    Returns
    -------
    dict
        Medians of :func:`background_statistics`, the median FWHM (arcsec and pixels), the median
        and mean of :func:`count_sources` and the share of stamps with at least one source, the
        shares of :func:`on_template_source` (all, reals, bogus), the median :func:`candidate_snr`
        of reals and of bogus, its :func:`filter_noise_scatter`, the median ``recorded_snr`` of
        the reals, and ``n`` (text); plus
        ``snr`` (the per-stamp S/N array, for figures) and ``filter_fwhm``.
    """
    stamps = np.asarray(stamps)
    shape_stamps = stamps if shape_stamps is None else np.asarray(shape_stamps)
    real, bogus = np.asarray(real, bool), np.asarray(bogus, bool)
    stats = background_statistics(shape_stamps)
    with _no_empty_warnings():
        out: dict[str, object] = {"n": f"{len(shape_stamps)} / {len(stamps)} ({real.sum()} + {bogus.sum()})"}
        for key in ("new_sky_to_noise", "ref_new_noise_ratio", "ref_corr", "diff_new_noise_ratio"):
            out[key] = float(np.nanmedian(stats[key]))
        fwhm = float(np.nanmedian(point_source_fwhm(shape_stamps)))
        out["fwhm_arcsec"], out["fwhm_pixels"] = fwhm * float(pixel_scale), fwhm
        sources = count_sources(stamps)
        out["sources_median"], out["sources_mean"] = float(np.nanmedian(sources)), float(np.nanmean(sources))
        out["sources_any"] = float(np.mean(sources[np.isfinite(sources)] >= 1))
        on = on_template_source(stamps)
        for key, rows in (("on_source", slice(None)), ("on_source_real", real), ("on_source_bogus", bogus)):
            out[key] = float(on[rows].mean()) if on[rows].size else np.nan
        snr = candidate_snr(stamps, fwhm)
        out["snr_real"] = float(np.nanmedian(snr[real])) if real.any() else np.nan
        out["snr_bogus"] = float(np.nanmedian(snr[bogus])) if bogus.any() else np.nan
        out["snr_scatter"] = filter_noise_scatter(stamps, fwhm)
        recorded = np.full(len(stamps), np.nan) if recorded_snr is None else np.asarray(recorded_snr, np.float64)
        out["recorded_snr_real"] = float(np.nanmedian(recorded[real])) if np.isfinite(recorded[real]).any() else np.nan
    out["snr"], out["filter_fwhm"] = snr, fwhm
    return out


def summary_markdown(summaries: Mapping[str, Mapping[str, object]]) -> str:
    """A Markdown table of :func:`realism_summary` outputs: one row per statistic, one column per set."""
    names = list(summaries)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label in SUMMARY_LABELS.items():
        cells = []
        for name in names:
            v = summaries[name].get(key, np.nan)
            if isinstance(v, str):
                cells.append(v)
            elif not np.isfinite(v):
                cells.append("-")
            elif key.startswith("on_source") or key == "sources_any":
                cells.append(f"{v:.2f}")
            elif key == "fwhm_arcsec":
                cells.append(f'{v:.2f}"')
            elif key == "sources_median":
                cells.append(f"{v:g}")
            else:
                cells.append(f"{v:.3g}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _survival(ax, values: np.ndarray, **style) -> None:
    """Fraction of ``values`` at or above each S/N, as a step curve."""
    v = np.sort(np.asarray(values, np.float64)[np.isfinite(values)])
    if v.size:
        ax.step(v, 1.0 - np.arange(v.size) / v.size, where="post", **style)


def plot_snr_distributions(panels: Mapping[str, Mapping[str, np.ndarray]],
                           styles: Mapping[str, Mapping] | None = None, x_range: tuple[float, float] = (3.0, 1000.0),
                           threshold: float | None = 5.0, y_min: float = 1e-3, fig=None):
    """Survival curves of S/N (share of a set at or above each S/N), one panel per group of sets.

    Parameters
    ----------
    panels
        Panel title -> (curve label -> S/N values). The number of values goes into the legend.
    styles
        Curve label -> keyword arguments of ``Axes.step`` (colour, line style); optional.
    x_range
        Limits of the logarithmic S/N axis.
    threshold
        Detection threshold to mark with a vertical line (``None``: none).
    y_min
        Lower limit of the logarithmic share axis.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    styles = styles or {}
    if fig is None:
        fig = plt.figure(figsize=(5.5 * len(panels), 5.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True).ravel()
    for ax, (title, curves) in zip(axes, panels.items()):
        for label, values in curves.items():
            n = int(np.isfinite(np.asarray(values, np.float64)).sum())
            _survival(ax, values, label=f"{label} ({n})", **dict(styles.get(label, {})))
        if threshold is not None:
            ax.axvline(threshold, color="0.5", lw=0.7, ls=":")
        ax.set_xscale("log")
        ax.set_xlim(*x_range)
        ax.set_yscale("log")  # the tails (noise excess, bright residuals) are what differ
        ax.set_ylim(y_min, 1.3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("S/N of the difference at the candidate")
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
        ax.legend(fontsize=6.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    axes[0].set_ylabel("share with at least this S/N")
    return fig


def preset_sample(preset: str, n_real: int = 1000, n_bogus: int = 1000, n_noise_peaks: int = 1000,
                  seed: int = 0) -> dict:
    """Test-split stamps of a camera preset, as its test file mixes them, and its noise peaks.

    Parameters
    ----------
    preset
        Name of a ``conf/instrument/`` preset.
    n_real, n_bogus
        Rows of the mix: reals drawn from ``reals.test_mix``, bogus from each sensor's
        ``bogus.test_mix`` (one test chunk of exactly these sizes).
    n_noise_peaks
        ``noise_peak`` stamps (training split, whose S/N follows ``bogus.noise_peak_snr``).
    seed
        Seed of both draws.

    Returns
    -------
    dict
        ``mix`` and ``noise_peaks`` (dicts of ``images`` and columns, ``snr`` among them),
        ``cfg`` (the resolved configuration) and ``pixel_scale`` (arcsec per pixel).
    """
    from realbogus.simulation import generate_kind, instrument_preset, resolve_config
    from realbogus.simulation.generator import generate_chunk

    cfg = resolve_config({**instrument_preset(preset), "seed": int(seed), "chunk_rows": max(16, n_real + n_bogus),
                          "test": {"n_real": int(n_real), "n_bogus": int(n_bogus)}})
    return {
        "mix": generate_chunk(cfg, "test", 0),
        "noise_peaks": generate_kind("noise_peak", n_noise_peaks, cfg=cfg, seed=seed, split="train"),
        "cfg": cfg,
        "pixel_scale": float(cfg["instrument"]["pixel_scale"]),
    }


def noise_peak_law(cfg: Mapping) -> str:
    """How a resolved configuration draws the S/N of noise peaks, in words (for legends)."""
    b = cfg["bogus"]
    if b["noise_peak_snr"] == "gaussian":
        share, index = (float(v) for v in b["noise_excess"])
        return f"Gaussian tail + {share:.0%} excess (Pareto {index:g})"
    return f"Pareto law (index {float(b['snr_slope']['noise_peak']):g})"


def compare_with_alerts(presets: Sequence[str] = PRESETS, ztf=None, n: int = 1000, n_shape: int = 600,
                        seed: int = 0) -> tuple[dict, dict, dict]:
    """Everything the command line shows: the realism numbers and the S/N curves.

    Each preset is measured on :func:`preset_sample` (``n`` reals, ``n`` bogus, ``n`` noise
    peaks) and, for the pixel statistics and the FWHM, on ``n_shape`` random injections
    (:func:`preset_stamps`, as in the README's earlier table); the alerts of ``ztf`` (when the
    file exists) on all of them, probable reals being ``drb >= 0.9`` and probable bogus
    ``drb < 0.1``.

    Returns
    -------
    summaries, panels, styles
        Set name -> :func:`realism_summary`; and the arguments of :func:`plot_snr_distributions`.
    """
    from pathlib import Path

    summaries: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    styles: dict[str, dict] = {}
    if ztf is not None and Path(ztf).is_file():
        from realbogus.evaluation.realdata import load_alerts

        images, columns = load_alerts(ztf, nan_policy="fill")
        drb = np.asarray(columns["drb"], np.float64)
        with np.errstate(invalid="ignore"):
            real, bogus = drb >= DRB_REAL, drb < DRB_BOGUS
        with np.load(ztf, allow_pickle=False) as z:  # ZTF's own PSF-fit S/N, for comparison
            recorded = 1.0857 / np.asarray(z["sigmapsf"], np.float64) if "sigmapsf" in z.files else None
        summaries["ZTF alerts"] = s = realism_summary(images, ZTF_PIXEL_SCALE, real, bogus, recorded_snr=recorded)
        curves["ZTF alerts"] = {f"ZTF alerts, drb >= {DRB_REAL:g}": s["snr"][real],
                                f"ZTF alerts, drb < {DRB_BOGUS:g}": s["snr"][bogus]}
        styles[f"ZTF alerts, drb >= {DRB_REAL:g}"] = {"color": "k", "lw": 1.6}
        styles[f"ZTF alerts, drb < {DRB_BOGUS:g}"] = {"color": "0.55", "lw": 1.6}
    panels: dict[str, dict] = {}
    for name in presets:
        sample = preset_sample(name, n, n, n, seed)
        mix, peaks, scale = sample["mix"], sample["noise_peaks"], sample["pixel_scale"]
        real = mix["true_label"] == 1
        shape = preset_stamps((name,), n=n_shape, seed=seed)[name][0]
        summaries[f"`{name}` preset"] = s = realism_summary(mix["images"], scale, real, ~real, shape_stamps=shape,
                                                            recorded_snr=mix["snr"])
        peak_snr = candidate_snr(peaks["images"], s["filter_fwhm"])
        law = noise_peak_law(sample["cfg"])
        panel = {
            "test reals, measured": s["snr"][real],
            "test reals, simulator's S/N": mix["snr"][real],
            "test bogus mix, measured": s["snr"][~real],
            "noise peaks, measured": peak_snr,
            f"noise peaks, simulator's S/N: {law}": peaks["snr"],
        }
        styles.update({"test reals, measured": {"color": "tab:blue", "lw": 1.4},
                       "test reals, simulator's S/N": {"color": "tab:blue", "lw": 0.9, "ls": "--"},
                       "test bogus mix, measured": {"color": "tab:orange", "lw": 0.9},
                       "noise peaks, measured": {"color": "tab:red", "lw": 1.4},
                       f"noise peaks, simulator's S/N: {law}": {"color": "tab:red", "lw": 0.9, "ls": "--"}})
        for alerts in curves.values():
            panel.update(alerts)
        title = f"{name} preset ({scale:g}\"/pixel)" + (" and ZTF alerts" if curves else "")
        panels[title] = panel
    return summaries, panels, styles


@report_errors
def main(argv=None) -> str:
    """``python -m realbogus.plots.realism``: the realism table (Markdown, on stdout) and the S/N figure."""
    import argparse
    from pathlib import Path

    from realbogus.evaluation.realdata import DEFAULT_ZTF

    parser = argparse.ArgumentParser(
        prog="python -m realbogus.plots.realism",
        description="Realism of the camera presets against real ZTF alerts: pixel statistics, crowding, PSF "
                    "width, candidate S/N (a Markdown table on stdout) and the S/N distributions of noise peaks, "
                    "test reals and alerts (OUT/snr_distributions.png and .pdf).")
    parser.add_argument("--out", type=Path, default=Path("experiments/figures"), help="folder of the figure")
    parser.add_argument("--ztf", type=Path, default=DEFAULT_ZTF, help="ZTF alert triplets (.npz); left out if absent")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), help="camera presets (conf/instrument/)")
    parser.add_argument("--n", type=int, default=1000, help="simulated reals, bogus and noise peaks per preset")
    parser.add_argument("--n-shape", type=int, default=600,
                        help="random injections per preset for the pixel statistics and the FWHM")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated stamps")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from realbogus.evaluation.plots import save_figure

    if not args.ztf.is_file():
        print(f"{args.ztf}: no such file; the alerts are left out")
    summaries, panels, styles = compare_with_alerts(args.presets, args.ztf, n=args.n, n_shape=args.n_shape,
                                                   seed=args.seed)
    table = summary_markdown(summaries)
    print(table)
    fig = plot_snr_distributions(panels, styles)
    paths = save_figure(fig, args.out / "snr_distributions.png", formats=("png", "pdf"))
    plt.close(fig)
    print("wrote " + ", ".join(str(p) for p in paths))
    return table


if __name__ == "__main__":
    main()
