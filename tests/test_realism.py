"""Tests of the realism measurements (pixel statistics and point-source shapes of stamps)."""

from __future__ import annotations

import numpy as np
import pytest

from realbogus.plots.realism import (
    STATISTIC_LABELS,
    background_statistics,
    plot_profiles,
    plot_statistic_histograms,
    point_source_fwhm,
    radial_profiles,
    statistics_table,
)
from realbogus.simulation.psf import moffat


def gaussian_blur(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Blur each 2-D image (last two axes) with a normalised Gaussian kernel (periodic edges)."""
    size = noise.shape[-1]
    k = np.fft.fftfreq(size)
    transfer = np.exp(-2 * (np.pi * sigma) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2))
    blurred = np.fft.ifft2(np.fft.fft2(noise) * transfer).real
    return blurred / np.sqrt((np.fft.ifft2(transfer).real ** 2).sum())  # keep unit variance


def noise_stamps(n: int, rng: np.random.Generator, sky=(1000.0, 990.0, 0.0), sigma=(20.0, 5.0, 20.6),
                 ref_blur: float = 0.0) -> np.ndarray:
    images = np.empty((n, 29, 29, 3))
    for c in range(3):
        white = rng.normal(size=(n, 29, 29))
        if c == 1 and ref_blur > 0:
            white = gaussian_blur(white, ref_blur)
        images[..., c] = sky[c] + sigma[c] * white
    return images.astype(np.float32)


def test_background_statistics_recover_sky_noise_and_ratios():
    rng = np.random.default_rng(1)
    stats = background_statistics(noise_stamps(300, rng))
    assert set(stats) == set(STATISTIC_LABELS)
    assert all(v.shape == (300,) for v in stats.values())
    med = {k: float(np.median(v)) for k, v in stats.items()}
    assert med["new_sky"] == pytest.approx(1000.0, abs=2.0)
    assert med["new_noise"] == pytest.approx(20.0, rel=0.05)
    assert med["new_sky_to_noise"] == pytest.approx(50.0, rel=0.05)
    assert med["ref_new_noise_ratio"] == pytest.approx(0.25, rel=0.05)
    assert med["diff_new_noise_ratio"] == pytest.approx(1.03, rel=0.05)
    for ch in ("new", "ref", "diff"):
        assert abs(med[f"{ch}_corr"]) < 0.03  # white noise
        assert med[f"{ch}_outliers"] == 0.0


def test_noise_correlation_of_a_resampled_reference():
    rng = np.random.default_rng(2)
    stats = background_statistics(noise_stamps(300, rng, ref_blur=0.6))
    # Gaussian smoothing of width s correlates neighbours by exp(-1 / (4 s^2)).
    assert np.median(stats["ref_corr"]) == pytest.approx(np.exp(-1 / (4 * 0.6**2)), abs=0.05)
    assert abs(np.median(stats["new_corr"])) < 0.03


def test_candidate_and_masked_pixels_are_left_out():
    rng = np.random.default_rng(3)
    clean = noise_stamps(50, rng)
    busy = clean.copy()
    busy[:, 10:19, 10:19, :] += 5000.0  # a bright candidate at the centre
    busy[:, :, :4, :] = 0.0             # a masked strip at the edge
    a, b = background_statistics(clean), background_statistics(busy)
    for key in ("new_sky", "new_noise", "ref_noise", "diff_noise"):
        assert np.median(b[key]) == pytest.approx(np.median(a[key]), rel=0.05), key
    # Outliers away from the centre are counted.
    spotted = clean.copy()
    spotted[:, 2, 2:12, 2] += 1000.0
    assert np.all(background_statistics(spotted)["diff_outliers"] > 0.01)


def test_fully_masked_stamp_gives_nan_not_an_error():
    images = noise_stamps(3, np.random.default_rng(4))
    images[1] = 0.0
    stats = background_statistics(images)
    assert np.isnan(stats["new_noise"][1]) and np.isfinite(stats["new_noise"][[0, 2]]).all()


def test_rejects_wrong_shape():
    with pytest.raises(ValueError, match="29, 29"):
        background_statistics(np.zeros((4, 29, 29)))


def point_sources(fwhm_pix, beta, rng, snr=None, scale=1.0):
    n = len(fwhm_pix)
    x0, y0 = 14 + rng.uniform(-0.5, 0.5, n), 14 + rng.uniform(-0.5, 0.5, n)
    src = moffat(x0, y0, 1.0, np.asarray(fwhm_pix), np.asarray(beta)).astype(np.float64) * scale
    images = np.zeros((n, 29, 29, 3))
    images[..., 0] = 100.0 + src
    images[..., 1] = 100.0
    images[..., 2] = src
    if snr is not None:
        # noise giving the PSF-matched S/N asked for
        sigma = np.sqrt((src**2).sum(axis=(1, 2))) / snr
        images[..., 2] += sigma[:, None, None] * rng.normal(size=(n, 29, 29))
    return images


def test_point_source_fwhm_recovers_moffat_fwhm():
    rng = np.random.default_rng(5)
    fwhm = rng.uniform(1.8, 5.0, 60)
    beta = rng.uniform(2.5, 4.5, 60)
    ratio = point_source_fwhm(point_sources(fwhm, beta, rng)) / fwhm
    assert np.all(np.isfinite(ratio))
    assert 1.0 <= np.median(ratio) <= 1.1  # a Gaussian fitted to a Moffat core: ~1.05
    noisy = point_source_fwhm(point_sources(fwhm, beta, rng, snr=30.0)) / fwhm
    assert np.nanmedian(noisy) == pytest.approx(np.median(ratio), abs=0.05)
    empty = point_source_fwhm(np.zeros((2, 29, 29, 3)))
    assert np.isnan(empty).all()


def test_radial_profiles_compare_across_pixel_scales():
    rng = np.random.default_rng(6)
    seeing = 3.0  # arcsec, the same source seen on two pixel grids
    profiles = {}
    for scale in (1.0, 1.2):
        images = point_sources(np.full(20, seeing / scale), np.full(20, 3.0), rng)
        radii, p = radial_profiles(images, pixel_scale=scale, r_max=8.0, bin_width=0.5)
        assert p.shape == (20, radii.size)
        assert np.all(np.diff(np.nanmedian(p, axis=0)[1:]) < 0)  # falls off outside the core
        # the profile integrates to the normalising aperture flux
        ring = np.pi * ((radii + 0.25) ** 2 - (radii - 0.25) ** 2)
        assert np.nansum(np.nanmedian(p, axis=0)[radii < 6.0] * ring[radii < 6.0]) == pytest.approx(1.0, abs=0.08)
        profiles[scale] = np.nanmedian(p, axis=0)
    core = radii <= 4.0
    np.testing.assert_allclose(profiles[1.2][core], profiles[1.0][core], rtol=0.15)


def test_table_and_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(7)
    groups = {"a": background_statistics(noise_stamps(30, rng)),
              "b": background_statistics(noise_stamps(30, rng, sigma=(10.0, 5.0, 10.0)))}
    table = statistics_table(groups, keys=["new_noise", "ref_new_noise_ratio"])
    assert list(table.colnames) == ["statistic", "a", "a 16-84%", "b", "b 16-84%"]
    assert table["a"][1] == pytest.approx(0.25, rel=0.1)
    assert table["b"][1] == pytest.approx(0.5, rel=0.1)
    fig = plot_statistic_histograms(groups, ["new_noise", "ref_corr"], per_row=2)
    assert len([ax for ax in fig.axes if ax.has_data()]) == 2
    plt.close(fig)
    fig, ax = plt.subplots()
    radii, p = radial_profiles(point_sources(np.full(5, 3.0), np.full(5, 3.0), rng), pixel_scale=1.0)
    plot_profiles(ax, radii, {"sim": p, "other": p[:2]}, log=True)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sim (5 stamps)", "other (2 stamps)"]
    assert ax.get_yscale() == "log"
    plt.close(fig)


def test_presets_differ_as_their_cameras_do():
    """Tomo-e (1.19"/pixel, ~3.5" FWHM) and ZTF (1.01"/pixel, ~2" FWHM), measured like real stamps."""
    from realbogus.plots.realism import preset_stamps

    stamps = preset_stamps(n=150, seed=3)
    assert set(stamps) == {"tomoe", "ztf"}
    fwhm = {}
    for name, (images, scale) in stamps.items():
        assert images.shape == (150, 29, 29, 3)
        fwhm[name] = np.nanmedian(point_source_fwhm(images)) * scale
        stats = background_statistics(images)
        # A deeper reference (10-40 or 15-40 frames) has a fraction of the new image's noise.
        assert 0.1 < np.nanmedian(stats["ref_new_noise_ratio"]) < 0.35
    assert stamps["tomoe"][1] == 1.189 and stamps["ztf"][1] == 1.01
    assert 3.0 < fwhm["tomoe"] < 4.3 and 1.7 < fwhm["ztf"] < 2.5  # arcsec, ~1.05 x the Moffat FWHM
