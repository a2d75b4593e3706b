"""Tests of the crowding, on-source, candidate S/N and S/N-figure parts of the realism measurements."""

from __future__ import annotations

import numpy as np
import pytest

from realbogus.evaluation.realdata import DEFAULT_ZTF
from realbogus.plots.realism import (
    SUMMARY_LABELS,
    candidate_snr,
    count_sources,
    filter_noise_scatter,
    on_template_source,
    plot_snr_distributions,
    realism_summary,
    summary_markdown,
)

SIZE = 29
CENTRE = (SIZE - 1) / 2.0


def gaussian(x0, y0, amplitude, sigma) -> np.ndarray:
    """(N, 29, 29) round Gaussians of the given peak amplitudes and widths (pixels)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    x0, y0, amplitude, sigma = (np.asarray(v, np.float64)[:, None, None] for v in (x0, y0, amplitude, sigma))
    return amplitude * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2.0 * sigma**2))


def blank(n: int, rng: np.random.Generator, sky: float = 100.0) -> np.ndarray:
    """Stamps of unit white noise on a sky level in every channel (none of it exactly zero)."""
    return (sky + rng.normal(size=(n, SIZE, SIZE, 3))).astype(np.float64)


# Off-centre positions far enough apart (and from the centre) to stay distinct sources.
SPOTS = [(4, 4), (24, 5), (5, 23), (23, 23), (14, 3), (25, 14)]


def test_count_sources_counts_injected_sources_and_skips_the_centre():
    rng = np.random.default_rng(10)
    images = blank(7, rng)
    truth = np.arange(7) % (len(SPOTS) + 1)
    for i, k in enumerate(truth):
        for x, y in SPOTS[:k]:
            images[i, ..., 1] += gaussian([x], [y], [60.0], [1.0])[0]
    images[::2, ..., 1] += gaussian(np.full(4, CENTRE), np.full(4, CENTRE), np.full(4, 500.0), np.full(4, 1.5))
    np.testing.assert_array_equal(count_sources(images), truth)
    # Only the reference is looked at by default, and a masked (zero) block is no source.
    assert np.all(count_sources(images, channel=0) == 0)
    masked = images.copy()
    masked[:, 9:13, 0:3, 1] = 0.0  # (rows, columns) away from every spot
    np.testing.assert_array_equal(count_sources(masked), truth)
    flat = np.zeros((1, SIZE, SIZE, 3))
    assert np.isnan(count_sources(flat)[0])


def test_count_sources_merges_a_source_into_one_group():
    rng = np.random.default_rng(11)
    images = blank(3, rng)
    images[..., 1] += gaussian([5.0] * 3, [5.0] * 3, [2000.0] * 3, [2.5] * 3)  # a broad, bright star
    assert np.all(count_sources(images) == 1)


def test_on_template_source_share():
    rng = np.random.default_rng(12)
    empty = blank(40, rng)
    starred = blank(40, rng)
    starred[..., 1] += gaussian(CENTRE + rng.uniform(-1, 1, 40), CENTRE + rng.uniform(-1, 1, 40),
                                np.full(40, 200.0), np.full(40, 1.3))
    assert on_template_source(starred).mean() == 1.0
    assert on_template_source(empty).mean() == 0.0
    # A bright star elsewhere in the reference does not put the candidate on a source.
    aside = blank(5, rng)
    aside[..., 1] += gaussian([4.0] * 5, [4.0] * 5, [500.0] * 5, [1.3] * 5)
    assert not on_template_source(aside).any()
    assert on_template_source(starred, min_snr=1e6).mean() == 0.0


@pytest.mark.parametrize("sigma", [0.9, 1.4])
def test_candidate_snr_recovers_the_matched_filter_snr(sigma):
    rng = np.random.default_rng(13)
    n = 300
    images = blank(n, rng, sky=0.0)
    images[..., 2] += 5.0  # a background offset the estimator subtracts
    # Unit noise: a Gaussian of peak A has the matched-filter S/N A sqrt(sum g^2), g of unit peak.
    amplitude = rng.uniform(3.0, 30.0, n)
    psf = gaussian(np.full(n, CENTRE), np.full(n, CENTRE), np.ones(n), np.full(n, sigma))
    expected = amplitude * np.sqrt((psf**2).sum(axis=(1, 2)))
    images[..., 2] += amplitude[:, None, None] * psf
    ratio = candidate_snr(images, fwhm=2.3548 * sigma) / expected
    assert np.mean(ratio) == pytest.approx(1.0, abs=0.1)
    # Per-stamp widths are accepted too; a filter much too wide loses S/N.
    same = candidate_snr(images, fwhm=np.full(n, 2.3548 * sigma))
    np.testing.assert_allclose(same, candidate_snr(images, fwhm=2.3548 * sigma))
    assert np.mean(candidate_snr(images, fwhm=6 * 2.3548 * sigma) / expected) < 0.8
    # On white noise the statistic is in noise units.
    assert filter_noise_scatter(images, 2.3548 * sigma) == pytest.approx(1.0, abs=0.1)


def test_candidate_snr_of_empty_and_masked_stamps():
    rng = np.random.default_rng(14)
    images = blank(200, rng, sky=0.0)
    images[..., 2] += 1e-3  # no exact zeros in the noise
    snr = candidate_snr(images, fwhm=2.5)
    assert abs(np.mean(snr)) < 0.2 and np.std(snr) == pytest.approx(1.0, abs=0.15)
    images[0, ..., 2] = 0.0
    assert np.isnan(candidate_snr(images[:1], fwhm=2.5)[0])


def test_realism_summary_and_markdown():
    rng = np.random.default_rng(15)
    n = 40
    images = blank(n, rng)
    images[..., 2] -= 100.0
    amplitude = np.where(np.arange(n) < 20, 20.0, 5.0)
    src = gaussian(np.full(n, CENTRE), np.full(n, CENTRE), amplitude, np.full(n, 1.0))
    images[..., 0] += src
    images[..., 2] += src
    images[:10, ..., 1] += gaussian(np.full(10, CENTRE), np.full(10, CENTRE), np.full(10, 300.0), np.full(10, 1.0))
    real = np.arange(n) < 20
    summary = realism_summary(images, pixel_scale=1.2, real=real, bogus=~real, recorded_snr=np.full(n, 7.0))
    assert summary["fwhm_pixels"] == pytest.approx(2.3548, rel=0.1)
    assert summary["fwhm_arcsec"] == pytest.approx(1.2 * summary["fwhm_pixels"])
    assert summary["on_source"] == 0.25 and summary["on_source_real"] == 0.5 and summary["on_source_bogus"] == 0.0
    assert summary["sources_mean"] == 0.0 and summary["sources_any"] == 0.0
    assert summary["snr_real"] > 2 * summary["snr_bogus"] > 0
    assert summary["recorded_snr_real"] == 7.0
    table = summary_markdown({"A": summary, "B": summary})
    lines = table.splitlines()
    assert lines[0] == "| | A | B |" and len(lines) == 2 + len(SUMMARY_LABELS)
    assert "| candidate on a template source: reals | 0.50 | 0.50 |" in lines


def test_plot_snr_distributions_writes_a_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from realbogus.evaluation.plots import save_figure

    rng = np.random.default_rng(16)
    panels = {"one": {"a": 5 + rng.pareto(2.0, 200), "b": 10 * (1 + rng.pareto(1.0, 50))},
              "two": {"a": 5 + rng.pareto(3.0, 100)}}
    fig = plot_snr_distributions(panels, styles={"b": {"ls": "--"}})
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert len(axes) == 2 and axes[0].get_xscale() == "log"
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["a (200)", "b (50)"]
    paths = save_figure(fig, tmp_path / "snr_distributions.png", formats=("png",))
    plt.close(fig)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line_without_alerts(tmp_path, capsys):
    from realbogus.plots.realism import main, noise_peak_law, preset_sample

    sample = preset_sample("ztf", n_real=30, n_bogus=30, n_noise_peaks=20, seed=1)
    kinds = set(sample["mix"]["kind"][sample["mix"]["true_label"] == 1])
    from realbogus.data.kinds import kind_code

    assert kinds <= {kind_code(k) for k in sample["cfg"]["reals"]["test_mix"]}
    assert noise_peak_law(sample["cfg"]).startswith("Gaussian tail")
    assert noise_peak_law(preset_sample("tomoe", 16, 0, 1)["cfg"]).startswith("Pareto")

    table = main(["--out", str(tmp_path), "--ztf", str(tmp_path / "absent.npz"), "--presets", "ztf",
                  "--n", "30", "--n-shape", "15"])
    out = capsys.readouterr().out
    assert "left out" in out and table in out and "ZTF alerts" not in table.splitlines()[0]
    assert (tmp_path / "snr_distributions.png").stat().st_size > 0
    assert (tmp_path / "snr_distributions.pdf").stat().st_size > 0


@pytest.mark.skipif(not DEFAULT_ZTF.is_file(), reason="needs ../shared/data/ztf_alerts_dev.npz")
def test_alert_numbers():
    from realbogus.plots.realism import compare_with_alerts

    summaries, panels, _ = compare_with_alerts(presets=(), ztf=DEFAULT_ZTF)
    alerts = summaries["ZTF alerts"]
    assert panels == {}
    assert 1.8 < alerts["fwhm_pixels"] < 2.6  # ZTF seeing ~2" on 1.01" pixels
    assert alerts["on_source_bogus"] > 0.8  # this file's probable bogus sit on stars (README)
    assert 0.8 < alerts["snr_scatter"] < 1.2  # the S/N is in noise units on real differences too
    assert alerts["snr_real"] > 5.0
