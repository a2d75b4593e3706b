"""How realistic are simulated stamps? Pixel statistics and point-source shapes, side by side.

The same measurements run on any (N, 29, 29, 3) stamps in counts, simulated or real (for example
the ZTF alert triplets of ``../shared/data``), so two sets can be compared number by number:

- :func:`background_statistics`: per stamp and channel, the sky level, the robust noise, the
  sky-to-noise ratio, the lag-1 noise correlation (resampled templates have correlated noise) and
  the fraction of 5-sigma outliers (clutter: stars, cosmic rays, defects); plus the reference and
  difference noise relative to the new image's;
- :func:`radial_profiles` and :func:`point_source_fwhm`: the shape of the source at the stamp
  centre, in arcseconds so that different pixel scales compare;
- :func:`statistics_table`, :func:`plot_statistic_histograms` and :func:`plot_profiles`: the
  comparison as a table and as figures;
- :func:`preset_stamps`: stamps simulated with each camera preset (Tomo-e Gozen, ZTF), to put
  both next to real alerts.

Background statistics leave out a disc around the stamp centre (the candidate itself would
inflate the noise) and pixels that are exactly zero (masked pixels, in real cutouts and in the
simulated masked regions alike).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Mapping, Sequence

import numpy as np

from realbogus.plots.stamps import CHANNEL_NAMES

__all__ = [
    "MAD_TO_SIGMA",
    "STATISTIC_LABELS",
    "background_statistics",
    "radial_profiles",
    "point_source_fwhm",
    "statistics_table",
    "plot_statistic_histograms",
    "plot_profiles",
    "preset_stamps",
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
