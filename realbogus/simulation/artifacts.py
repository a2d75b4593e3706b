"""Bogus detections of every kind, and the label-error kinds.

Every renderer takes ``(scene, rows, rng, cfg)`` and adds its feature to the stamps ``rows`` of a
:class:`~realbogus.simulation.scenes.Scene`, so that the detection sits at the stamp's centre.
Bogus features are scaled to a *detection S/N* ``nu`` -- the PSF-matched filter's S/N at the
centre of the difference image -- drawn from a Pareto law ``nu = nu_min * U^(-1/a)`` whose index
``a`` is set per kind (``bogus.snr_slope``): a large index keeps the kind close to the detection
threshold, a small one gives it a long bright tail. Every bogus sample was thus "detected".

Subtraction residuals (star rendered in the new image and, with an error, in the matched reference)
- ``dipole_residual``: registration error of 0.03-1.5 pixel (log-normal, mostly small), with a
  photometric-scaling error on top, so small offsets give a lopsided, nearly point-like lobe.
- ``psf_mismatch_ring``: matched reference 6-30% too broad (a sharp positive core in a negative
  moat) or too narrow (a positive ring around a negative core).
- ``galaxy_core_residual``: a concentrated galaxy's core, blurred by a wrong kernel (half) or
  misregistered by 0.3-1 pixel (half).
- ``saturated_star``: a star 1.5-300 times over the full well: flat top clipped at different
  levels in the new image and the (scaled) reference, with wing residuals.
- ``variable_star_no_change``: a 2-12% photometric (colour-term) error on a star.
- ``bright_star_residual`` (modelled on real alerts; off in the Tomo-e preset): the detection
  lies 1.5-6 pixels from a star between a twentieth of and 1.5 times its saturation level, in
  what its subtraction leaves: the core's dipole or ring (its own registration, width and
  scaling errors), the wings (an aureole holding 3-12% of the light that the matching kernel
  gets wrong by ~20%), diffraction spikes (``instrument.spikes``) and, on CCDs, bleed trails.
  Its S/N (``bogus.star_residual_snr``): ``scaled`` scales the errors together so that the
  residual reaches a drawn Pareto S/N (clipped at 4x, so a quarter of the core residuals below
  ended negative as stored); ``selected`` (the ZTF preset's) keeps the errors at their drawn size
  and draws the star from the bright star counts, conditioned on the residual being detected.
- ``star_core_residual`` (off in the Tomo-e preset): the same stars and errors with the detection
  on the core, either sign (a fading where the camera detects on the negated difference).

Detector and environment (new image only; ``post`` marks read-out offsets without shot noise)
- ``cosmic_ray``: compact spots (Gaussian, sigma 0.3-1.1 pixel: the wider ones look like a
  sharp PSF), straight tracks 2-14 pixels long, and short "worms".
- ``hot_pixel`` / ``warm_pixel``: a single pixel (sometimes a pair) with inter-pixel capacitance
  (1.5% to each neighbour); warm pixels sit close to the threshold.
- ``rts_pixel``: a random-telegraph pixel (read-out), often with other flickering pixels nearby.
- ``column_defect`` / ``row_defect``: bright column or row segments (read-out offsets), sometimes
  with a dark one elsewhere or noisy neighbouring rows.
- ``amp_glow``: exponential glow from the amplifiers at the sensor's short edges (the stamp is
  placed there on the sensor).
- ``streak``: satellites (PSF-wide lines; a quarter short, 6-14 pixels, from slow movers), aircraft (wide,
  sometimes double, lines).
- ``crosstalk_ghost``: flat-topped copies of saturated stars (radius 2.5-5 pixels), optical
  ghost rings and large defocused disks (radius 4-8 pixels).
- ``edge_masked``: a masked half-plane or block (sensor edge or masked region; zero in new and
  difference) with a bright rim next to the detection.
- ``noise_peak``: pure background whose fluctuation reaches the threshold: the noise is
  conditioned on the matched-filter S/N, so on average it has the PSF's shape. Its S/N is a
  Pareto law like the other kinds' (``bogus.noise_peak_snr: pareto``, the Tomo-e default for
  now) or follows from the noise model: a Gaussian tail with an explicit non-Gaussian excess
  (``gaussian``; :func:`noise_peak_snr`).

Masked regions beside the candidate (``instrument.masked_fraction``, off for Tomo-e): a share
of all stamps, real or bogus, gets a block of zeros in every channel 3-12 pixels from the
detection, as pipelines blank pixels off the detector (:func:`add_masked_regions`).

Label errors
- Hidden reals among the bogus: ``asteroid`` (no reference counterpart; some trailed),
  ``unreported_transient`` (like the test transients), ``genuine_variable`` (a star that did
  brighten by 30% to 5 times).
- Failed injections among the reals: ``injection_on_saturated`` (lost in a saturated star),
  ``injection_on_bad_pixel`` (a faint source under a hot pixel or bright column),
  ``injection_too_faint`` (1-3 mag below the limit).
"""

from __future__ import annotations

import numpy as np

from realbogus.simulation import psf as _psf
from realbogus.simulation import transients as _tr
from realbogus.simulation.scenes import Scene, mag_to_flux, sersic
from realbogus.simulation.sensors import SENSOR_SHAPE

__all__ = ["RENDERERS", "PIXEL_CENTRED", "place", "add_clutter", "add_masked_regions", "detection_snr",
           "noise_peak_snr", "star_residual_shape"]

_GRID = np.arange(_psf.STAMP, dtype=np.float32)
#: Kinds whose detection is centred on a pixel (the defect), not at a sub-pixel position.
PIXEL_CENTRED = frozenset({"hot_pixel", "warm_pixel", "rts_pixel", "column_defect", "row_defect"})
_BRIGHTEST_MAG = 6.0


def detection_snr(rng: np.random.Generator, n: int, kind: str, cfg: dict) -> np.ndarray:
    """Detection S/N of ``n`` bogus samples of ``kind``: Pareto above the threshold."""
    b = cfg["bogus"]
    a = float(b["snr_slope"][kind])
    return np.minimum(b["detection_snr"] * rng.random(n) ** (-1.0 / a), 5000.0)


def _cap_flux(scene, rows, flux):
    return np.minimum(flux, mag_to_flux(_BRIGHTEST_MAG, scene.c.flux_zp[rows]))


def _unsaturated(scene, rows, flux):
    """Keep a residual's star below 80% of the full well (brighter ones are ``saturated_star``)."""
    c = scene.c
    peak = (c.beta_new[rows] - 1.0) / (np.pi * _alpha(scene, rows) ** 2)
    return np.minimum(flux, 0.8 * (c.sat_e[rows] - c.sky_e[rows]) / peak)


def star_residual_shape(scene: Scene, rows, sx, sy, dx=0.0, dy=0.0, scale=1.0, width=1.0) -> np.ndarray:
    """Difference left by a unit-flux star that :meth:`Scene.add_star` would add with these errors."""
    c = scene.c
    return scene.psf_new(rows, sx, sy, 1.0) - scene.psf_new(
        rows, sx + c.match_dx[rows] + dx, sy + c.match_dy[rows] + dy,
        c.match_scale[rows] * scale, fwhm_scale=c.match_width[rows] * width,
    )


def _alpha(scene, rows):
    c = scene.c
    return _psf.moffat_alpha(c.fwhm_new[rows], c.beta_new[rows])


def _segment(x1, y1, x2, y2, sigma) -> np.ndarray:
    """Lines from (x1, y1) to (x2, y2) with a Gaussian cross-section, flux 1 per pixel of length."""
    dx = _GRID[None, None, :] - np.asarray(x1, np.float32)[:, None, None]
    dy = _GRID[None, :, None] - np.asarray(y1, np.float32)[:, None, None]
    ux, uy = np.asarray(x2 - x1, np.float64), np.asarray(y2 - y1, np.float64)
    length = np.maximum(np.hypot(ux, uy), 1e-6)
    ux, uy = (ux / length).astype(np.float32), (uy / length).astype(np.float32)
    t = dx * ux[:, None, None] + dy * uy[:, None, None]
    t = np.clip(t, 0.0, np.asarray(length, np.float32)[:, None, None])
    px = dx - t * ux[:, None, None]
    py = dy - t * uy[:, None, None]
    s = np.asarray(sigma, np.float32)[:, None, None]
    return np.exp(-0.5 * (px * px + py * py) / (s * s)) / (np.sqrt(2 * np.pi) * s)


def _disk(x0, y0, radius, softness) -> np.ndarray:
    """Flat-topped disks with a logistic edge, unit height."""
    dx = _GRID[None, None, :] - np.asarray(x0, np.float32)[:, None, None]
    dy = _GRID[None, :, None] - np.asarray(y0, np.float32)[:, None, None]
    r = np.sqrt(dx * dx + dy * dy)
    n = r.shape[0]
    rad = np.broadcast_to(np.asarray(radius, np.float32), (n,))[:, None, None]
    soft = np.broadcast_to(np.asarray(softness, np.float32), (n,))[:, None, None]
    return 1.0 / (1.0 + np.exp(np.clip((r - rad) / soft, -30, 30)))


def _ring(x0, y0, radius, width) -> np.ndarray:
    dx = _GRID[None, None, :] - np.asarray(x0, np.float32)[:, None, None]
    dy = _GRID[None, :, None] - np.asarray(y0, np.float32)[:, None, None]
    r = np.sqrt(dx * dx + dy * dy)
    z = (r - np.asarray(radius, np.float32)[:, None, None]) / np.asarray(width, np.float32)[:, None, None]
    return np.exp(-0.5 * z * z)


def _pixel_image(n, ix, iy, values=1.0) -> np.ndarray:
    img = np.zeros((n, _psf.STAMP, _psf.STAMP), np.float32)
    ok = (ix >= 0) & (ix < _psf.STAMP) & (iy >= 0) & (iy < _psf.STAMP)
    vals = np.broadcast_to(np.asarray(values, np.float32), (n,))
    rows = np.arange(n)[ok]
    img[rows, np.asarray(iy)[ok], np.asarray(ix)[ok]] = vals[ok]
    return img


def _with_ipc(img, coupling=0.015) -> np.ndarray:
    """Spread a fraction of each pixel to its four neighbours (inter-pixel capacitance)."""
    out = img * (1.0 - 4 * coupling)
    out[:, 1:, :] += coupling * img[:, :-1, :]
    out[:, :-1, :] += coupling * img[:, 1:, :]
    out[:, :, 1:] += coupling * img[:, :, :-1]
    out[:, :, :-1] += coupling * img[:, :, 1:]
    return out


def _centre_pixels(scene, rows):
    c = scene.c
    return np.rint(c.cx[rows]).astype(int), np.rint(c.cy[rows]).astype(int)


# ------------------------------------------------------------------ subtraction residuals
def _dipole_residual(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    b = cfg["bogus"]
    offset = np.clip(b["dipole_offset_median"] * np.exp(rng.normal(0.0, 0.7, n)), 0.03, 1.5)
    phi = rng.uniform(0.0, 2 * np.pi, n)
    dx, dy = offset * np.cos(phi), offset * np.sin(phi)
    scale = 1.0 + rng.normal(0.0, 0.03, n)
    beta = c.beta_new[rows]
    # The positive lobe peaks where the PSF is steepest, on the side away from the shift.
    lobe = np.clip(_alpha(scene, rows) / np.sqrt(2 * beta + 1) - offset / 2, 0.0, None)
    sx = c.cx[rows] + lobe * np.cos(phi)
    sy = c.cy[rows] + lobe * np.sin(phi)
    shape = star_residual_shape(scene, rows, sx, sy, dx, dy, scale)
    flux = _unsaturated(scene, rows, scene.amplitude_for_snr(rows, shape, detection_snr(rng, n, "dipole_residual", cfg)))
    scene.add_star(rows, sx, sy, flux, dx=dx, dy=dy, scale=scale)


def _psf_mismatch_ring(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    core = rng.random(n) < 0.6
    width = np.where(core, 1.0 + rng.uniform(0.06, 0.3, n), 1.0 - rng.uniform(0.06, 0.25, n))
    # A too-narrow kernel leaves a positive ring peaking at r = alpha * sqrt(2 / (beta - 1)).
    ring_r = np.where(core, 0.0, _alpha(scene, rows) * np.sqrt(2.0 / (c.beta_new[rows] - 1.0)))
    phi = rng.uniform(0.0, 2 * np.pi, n)
    sx = c.cx[rows] - ring_r * np.cos(phi)
    sy = c.cy[rows] - ring_r * np.sin(phi)
    shape = star_residual_shape(scene, rows, sx, sy, width=width)
    flux = _unsaturated(scene, rows, scene.amplitude_for_snr(rows, shape, detection_snr(rng, n, "psf_mismatch_ring", cfg)))
    scene.add_star(rows, sx, sy, flux, width=width)


def _galaxy_core_residual(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    gx = c.cx[rows] + rng.normal(0.0, 0.4, n)
    gy = c.cy[rows] + rng.normal(0.0, 0.4, n)
    r_e = rng.uniform(0.8, 3.0, n)
    ns = rng.uniform(2.0, 4.0, n)
    q = rng.uniform(0.5, 1.0, n)
    th = rng.uniform(0.0, np.pi, n)
    # Half are blurred by a wrong kernel, half misregistered (a dipole on the core).
    shifted = rng.random(n) < 0.5
    soften = 1.0 + np.where(shifted, rng.uniform(0.0, 0.2, n), rng.uniform(0.15, 0.5, n))
    shift = np.where(shifted, rng.uniform(0.3, 1.0, n), np.abs(rng.normal(0.0, 0.2, n)))
    phi = rng.uniform(0.0, 2 * np.pi, n)
    dx, dy = shift * np.cos(phi), shift * np.sin(phi)
    scale = 1.0 + rng.normal(0.0, 0.03, n)
    s_new = 0.6 * c.fwhm_new[rows]
    shape = sersic(gx, gy, 1.0, r_e, ns, q, th, s_new) - sersic(
        gx + c.match_dx[rows] + dx, gy + c.match_dy[rows] + dy, c.match_scale[rows] * scale,
        r_e, ns, q, th, s_new * c.match_width[rows] * soften,
    )
    flux = scene.amplitude_for_snr(rows, shape, detection_snr(rng, n, "galaxy_core_residual", cfg))
    flux = np.minimum(flux, mag_to_flux(11.0, c.flux_zp[rows]))
    scene.add_galaxy(rows, gx, gy, flux, r_e, ns, q, th, soften_scale=soften, dx=dx, dy=dy, scale=scale)


def _saturated_star_at(scene, rows, rng):
    n = len(rows)
    c = scene.c
    sx = c.cx[rows] + rng.normal(0.0, 0.15, n) * c.fwhm_new[rows]
    sy = c.cy[rows] + rng.normal(0.0, 0.15, n) * c.fwhm_new[rows]
    beta = c.beta_new[rows]
    peak = (beta - 1.0) / (np.pi * _alpha(scene, rows) ** 2)
    over = np.exp(rng.uniform(np.log(1.5), np.log(300.0), n))
    flux = _cap_flux(scene, rows, c.sat_e[rows] / peak * over)
    scene.add_star(rows, sx, sy, flux)


def _saturated_star(scene, rows, rng, cfg):
    _saturated_star_at(scene, rows, rng)


def _variable_star_no_change(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    eps = rng.uniform(0.02, 0.12, n)
    sx = c.cx[rows] + rng.normal(0.0, 0.1, n)
    sy = c.cy[rows] + rng.normal(0.0, 0.1, n)
    snr = detection_snr(rng, n, "variable_star_no_change", cfg)
    # A reference scaled too faint leaves a positive star; where the camera also detects on the
    # negated difference, the error goes either way and a too-bright scaling is a "fading".
    sign = np.where(_tr.fading_rows(scene, rows, rng, cfg), -1.0, 1.0)
    scale = 1.0 - sign * eps
    shape = star_residual_shape(scene, rows, sx, sy, scale=scale)
    flux = _unsaturated(scene, rows, scene.amplitude_for_snr(rows, shape * np.float32(sign)[:, None, None], snr))
    scene.add_star(rows, sx, sy, flux, scale=scale)


def _spikes(x0, y0, angle, sigma, length) -> np.ndarray:
    """Four diffraction spikes of total flux 1 from (x0, y0): two lines at ``angle`` and
    ``angle + 90`` degrees, each made of three nested segments so the light falls off outward."""
    out = np.zeros((np.size(x0), _psf.STAMP, _psf.STAMP), np.float32)
    for k in (0.0, 0.5 * np.pi):
        ux, uy = np.cos(angle + k), np.sin(angle + k)
        for frac in (1.0, 0.5, 0.25):
            half = frac * length
            out += _segment(x0 - half * ux, y0 - half * uy, x0 + half * ux, y0 + half * uy, sigma)
    out /= (7.0 * np.asarray(length, np.float32))[:, None, None]
    return out


def _bright_star_residual(scene, rows, rng, cfg):
    # A bright star with the detection 1.5-6 pixels away: in its wings, a spike, a bleed trail or
    # the dipole/ring its core leaves.
    _residual_of_bright_star(scene, rows, rng, cfg, "bright_star_residual", on_core=False)


def _star_core_residual(scene, rows, rng, cfg):
    # The same stars and errors with the detection on the star's core: what a registration,
    # kernel-width or scaling error leaves where the star is brightest. The errors go either way,
    # so where the camera also detects on the negated difference half are "fadings".
    _residual_of_bright_star(scene, rows, rng, cfg, "star_core_residual", on_core=True)


#: RMS of a bright star's own subtraction errors: registration x and y (pixels), kernel width,
#: scaling, aureole and spikes (relative).
_STAR_ERROR_RMS = (0.1, 0.1, 0.04, 0.02, 0.2, 0.2)


def _residual_of_bright_star(scene, rows, rng, cfg, kind: str, on_core: bool):
    n = len(rows)
    c = scene.c
    # A bright star, from a twentieth of to 1.5 times the saturation level (the brighter ones
    # clip, and on CCDs bleed).
    peak = (c.beta_new[rows] - 1.0) / (np.pi * _alpha(scene, rows) ** 2)
    sat_flux = (c.sat_e[rows] - c.sky_e[rows]) / peak
    flux = _cap_flux(scene, rows, sat_flux * np.exp(rng.uniform(np.log(0.05), np.log(1.5), n)))
    if on_core:
        d = np.abs(rng.normal(0.0, 0.1, n))  # the detection at the core, to the centroid's precision
    else:
        d = rng.uniform(1.5, 6.0, n)
    phi = rng.uniform(0.0, 2 * np.pi, n)
    sx = c.cx[rows] - d * np.cos(phi)
    sy = c.cy[rows] - d * np.sin(phi)
    # This star's subtraction errors, up to a common factor: registration (0.1 px rms), kernel
    # width (4%), scaling (2%), and the wings -- an aureole (a broad Moffat, beta 1.6-2.2, 3-6
    # times the core's FWHM, 3-12% of the light) and the spikes -- reproduced to 20% (rms).
    dx, dy = rng.normal(0.0, _STAR_ERROR_RMS[0], (2, n))
    err_width, err_scale, err_halo, err_spike = rng.normal(0.0, 1.0, (4, n)) * np.array(_STAR_ERROR_RMS[2:])[:, None]
    halo = _psf.moffat(sx, sy, rng.uniform(0.03, 0.12, n), c.fwhm_new[rows] * rng.uniform(3.0, 6.0, n),
                       rng.uniform(1.6, 2.2, n))
    strength, angle = (float(v) for v in cfg["instrument"]["spikes"])
    a = np.full(n, np.deg2rad(angle))
    length = rng.uniform(8.0, 20.0, n)
    spikes = strength * _spikes(sx, sy, a, c.fwhm_new[rows] / 2.3548, length) if strength > 0 else 0.0
    new = scene.psf_new(rows, sx, sy, 1.0) + halo + spikes
    f32 = lambda v: np.asarray(v, np.float32)[:, None, None]  # noqa: E731

    def matched(lam):
        core = scene.psf_new(rows, sx + c.match_dx[rows] + lam * dx, sy + c.match_dy[rows] + lam * dy,
                             c.match_scale[rows] * (1.0 + lam * err_scale),
                             fwhm_scale=c.match_width[rows] * (1.0 + lam * err_width))
        return core + halo * f32(1.0 + lam * err_halo) + spikes * f32(1.0 + lam * err_spike)

    if cfg["bogus"]["star_residual_snr"] == "selected":
        flux, lam = _select_detected_residuals(scene, rows, rng, cfg, on_core, new, matched, sat_flux,
                                               (dx, dy, err_width, err_scale, err_halo, err_spike))
        _add_bright_star(scene, rows, cfg, flux, lam, new, matched, sx, sy, a, length, halo)
        return
    # The residual is nearly linear in the errors: scale them (by up to 4, either sign) so the
    # detection reaches its drawn S/N, on top of what the image's own matching errors leave.
    snr = detection_snr(rng, n, kind, cfg)
    if on_core:  # the errors' sign decides whether the core is left positive or negative
        snr = snr * np.where(_tr.fading_rows(scene, rows, rng, cfg), -1.0, 1.0)
    norm = flux / np.sqrt(c.var_diff[rows] * scene.psf_norm2[rows])

    def stat(lam):
        return norm * np.einsum("nij,nij->n", new - matched(lam), scene.psf_c[rows])

    def secant(lam_a, s_a, lam_b, s_b):
        slope = (s_b - s_a) / (lam_b - lam_a)
        step = (snr - s_a) / np.where(np.abs(slope) > 1e-9, slope, 1e-9)
        return np.clip(lam_a + step, -4.0, 4.0)

    s0 = stat(np.zeros(n))
    lam = secant(0.0, s0, 1.0, stat(np.ones(n)))
    lam = np.where(np.abs(lam) > 1e-3, secant(0.0, s0, lam, stat(lam)), lam)  # one refinement
    _add_bright_star(scene, rows, cfg, flux, lam, new, matched, sx, sy, a, length, halo)


def _add_bright_star(scene, rows, cfg, flux, lam, new, matched, sx, sy, a, length, halo):
    """Put the star in the new image, the reference and (with its errors x ``lam``) the matched one."""
    c = scene.c
    f32 = lambda v: np.asarray(v, np.float32)[:, None, None]  # noqa: E731
    strength = float(cfg["instrument"]["spikes"][0])
    scene.new[rows] += new * f32(flux)
    ref = scene.psf_ref(rows, sx, sy, 1.0) + halo
    if strength > 0:
        ref += strength * _spikes(sx, sy, a, c.fwhm_ref[rows] / 2.3548, length)
    scene.ref[rows] += ref * f32(flux)
    scene.match[rows] += matched(lam) * f32(flux)


#: Range of the stars whose residuals ``star_residual_snr: selected`` draws, in units of the flux
#: that fills the full well at the PSF's peak (the brighter ones are ``saturated_star``'s).
_RESIDUAL_STAR_RANGE = (0.005, 1.5)
#: Draws of a star's errors before the rows still undetectable on the brightest star take
#: errors scaled up to the threshold.
_RESIDUAL_DRAWS = 8


def _select_detected_residuals(scene, rows, rng, cfg, on_core, new, matched, sat_flux, errors):
    """Star flux and error sign of residuals that the survey detects (``star_residual_snr: selected``).

    Physics instead of a drawn S/N: each star keeps its errors at their drawn size (``lam`` = +-1),
    so the residual is a fixed fraction of the star, and its detection S/N grows with the star's
    flux. Stars come from the bright end of the star counts, N(> F) ~ F^-alpha
    (``bogus.star_counts_slope``), between ``_RESIDUAL_STAR_RANGE`` x the saturating flux; a
    sample is a *detected* residual, so the flux is drawn from that law conditioned on the S/N
    reaching ``bogus.detection_snr``, which is the law truncated below at threshold / (S/N per unit
    flux). The detected S/N is then a Pareto law of index alpha above the threshold, cut where the
    brightest stars stop; bright residuals sit on bright stars. Errors too small to be seen on the
    brightest star are drawn again (up to ``_RESIDUAL_DRAWS`` times; the rest are scaled up to the
    threshold on the brightest star). On the core, the errors go either way: with
    ``instrument.negative_detections`` a residual that leaves the core negative is a fading
    (stored negated); without it, and off the core, the sign that leaves a positive detection is
    taken. ``errors`` are the arrays of the star's errors, redrawn in place.
    """
    n = len(rows)
    c = scene.c
    b = cfg["bogus"]
    thr = float(b["detection_snr"])
    alpha = float(b["star_counts_slope"])
    lo = sat_flux * _RESIDUAL_STAR_RANGE[0]
    hi = _cap_flux(scene, rows, sat_flux * _RESIDUAL_STAR_RANGE[1])
    norm1 = 1.0 / np.sqrt(c.var_diff[rows] * scene.psf_norm2[rows])
    either_sign = on_core and bool(cfg["instrument"]["negative_detections"])
    scales = np.array(_STAR_ERROR_RMS)

    def unit_snr(lam):  # detection S/N per unit flux of the star
        return norm1 * np.einsum("nij,nij->n", new - matched(lam), scene.psf_c[rows])

    g = np.zeros(n)
    sign = np.ones(n)
    pending = np.ones(n, bool)
    for attempt in range(_RESIDUAL_DRAWS):
        if attempt:
            draws = rng.normal(0.0, 1.0, (6, int(pending.sum()))) * scales[:, None]
            for arr, d in zip(errors, draws):
                arr[pending] = d
        g_plus, g_minus = unit_snr(np.ones(n)), unit_snr(-np.ones(n))
        if either_sign:  # one sign, as likely as the other; a negative core is a fading
            pick = np.where(rng.random(n) < 0.5, 1.0, -1.0)
            g_new = np.where(pick > 0, g_plus, g_minus)
        else:  # the sign that leaves the larger positive detection
            pick = np.where(g_plus >= g_minus, 1.0, -1.0)
            g_new = np.maximum(g_plus, g_minus)
        g = np.where(pending, g_new, g)
        sign = np.where(pending, pick, sign)
        pending = np.abs(g) * hi < thr if either_sign else g * hi < thr
        if not pending.any():
            break
    gabs = np.abs(g)
    fmin = np.clip(thr / np.maximum(gabs, 1e-30), lo, hi)
    u = rng.random(n)
    flux = fmin * (1.0 - u * (1.0 - (fmin / hi) ** alpha)) ** (-1.0 / alpha)
    lam = sign.copy()
    if pending.any():  # still too faint on the brightest star: errors scaled up to the threshold
        flux[pending] = hi[pending]
        s0 = unit_snr(np.zeros(n)) * hi
        s1 = unit_snr(sign) * hi
        target = thr * np.where(either_sign & (g < 0), -1.0, 1.0)
        step = (target - s0) / np.where(np.abs(s1 - s0) > 1e-9, s1 - s0, 1e-9)
        lam = np.where(pending, np.clip(step, -4.0, 4.0) * sign, lam)
    if either_sign:
        scene.fading[rows[g < 0]] = True
    return flux, lam


# ------------------------------------------------------------------ detector and environment
def _cosmic_ray_shapes(scene, rows, rng, cfg, x0=None, y0=None) -> np.ndarray:
    n = len(rows)
    c = scene.c
    b = cfg["bogus"]
    x0 = c.cx[rows] if x0 is None else x0
    y0 = c.cy[rows] if y0 is None else y0
    p = np.array([b["cosmic_ray_mix"][k] for k in ("spot", "track", "worm")], np.float64)
    morph = rng.choice(3, size=n, p=p / p.sum())
    shape = np.zeros((n, _psf.STAMP, _psf.STAMP), np.float32)
    spot = np.flatnonzero(morph == 0)
    if spot.size:
        sig = rng.uniform(0.3, b["cosmic_ray_spot_sigma_max"], spot.size)
        shape[spot] = _psf.gaussian_blob(x0[spot], y0[spot], 1.0, sig, rng.uniform(0.6, 1.0, spot.size),
                                         rng.uniform(0.0, np.pi, spot.size))
    track = np.flatnonzero(morph == 1)
    if track.size:
        length = rng.uniform(2.0, 14.0, track.size)
        ang = rng.uniform(0.0, 2 * np.pi, track.size)
        t0 = rng.uniform(0.0, 1.0, track.size) * length
        x1, y1 = x0[track] - t0 * np.cos(ang), y0[track] - t0 * np.sin(ang)
        x2, y2 = x1 + length * np.cos(ang), y1 + length * np.sin(ang)
        shape[track] = _segment(x1, y1, x2, y2, rng.uniform(0.35, 0.6, track.size))
    worm = np.flatnonzero(morph == 2)
    if worm.size:
        x, y = x0[worm].astype(np.float64), y0[worm].astype(np.float64)
        for _ in range(3):
            shape[worm] += _psf.gaussian_blob(x, y, rng.uniform(0.5, 1.0, worm.size), 0.45)
            step = rng.uniform(0.0, 2 * np.pi, worm.size)
            x, y = x + np.cos(step), y + np.sin(step)
    return shape


def _cosmic_ray(scene, rows, rng, cfg):
    shape = _cosmic_ray_shapes(scene, rows, rng, cfg)
    amp = scene.amplitude_for_snr(rows, shape, detection_snr(rng, len(rows), "cosmic_ray", cfg))
    scene.new[rows] += shape * amp.astype(np.float32)[:, None, None]


def _defect_pixels(scene, rows, rng, pair_fraction) -> np.ndarray:
    n = len(rows)
    ix, iy = _centre_pixels(scene, rows)
    img = _pixel_image(n, ix, iy)
    pair = rng.random(n) < pair_fraction
    d = rng.integers(0, 4, n)
    jx = ix + np.array([1, -1, 0, 0])[d]
    jy = iy + np.array([0, 0, 1, -1])[d]
    img += _pixel_image(n, jx, jy, np.where(pair, rng.uniform(0.3, 1.0, n), 0.0))
    return img


def _hot_pixel(scene, rows, rng, cfg):
    shape = _with_ipc(_defect_pixels(scene, rows, rng, 0.15))
    amp = scene.amplitude_for_snr(rows, shape, detection_snr(rng, len(rows), "hot_pixel", cfg))
    scene.new[rows] += shape * amp.astype(np.float32)[:, None, None]


def _warm_pixel(scene, rows, rng, cfg):
    shape = _with_ipc(_defect_pixels(scene, rows, rng, 0.25))
    amp = scene.amplitude_for_snr(rows, shape, detection_snr(rng, len(rows), "warm_pixel", cfg))
    scene.new[rows] += shape * amp.astype(np.float32)[:, None, None]


def _rts_pixel(scene, rows, rng, cfg):
    n = len(rows)
    ix, iy = _centre_pixels(scene, rows)
    shape = _pixel_image(n, ix, iy)
    amp = scene.amplitude_for_snr(rows, shape, detection_snr(rng, n, "rts_pixel", cfg))
    image = shape * amp.astype(np.float32)[:, None, None]
    # Other flickering pixels of the same sensor region, caught in either state.
    for _ in range(3):
        on = rng.random(n) < 0.4
        vals = np.where(on, amp * rng.uniform(-1.0, 1.0, n), 0.0)
        image += _pixel_image(n, rng.integers(0, _psf.STAMP, n), rng.integers(0, _psf.STAMP, n), vals)
    scene.add_post(rows, image)


def _line_defect(scene, rows, rng, cfg, kind):
    n = len(rows)
    ix, iy = _centre_pixels(scene, rows)
    along, across = (iy, ix) if kind == "column_defect" else (ix, iy)
    full = rng.random(n) < (0.5 if kind == "column_defect" else 0.7)
    length = np.where(full, 2 * _psf.STAMP, rng.integers(4, 21, n))
    start = np.where(full, -_psf.STAMP, along - (rng.random(n) * length).astype(int))
    pos = _GRID.astype(int)[None, :]
    on_line = (pos >= start[:, None]) & (pos < (start + length)[:, None])  # (n, 29) along the line
    hit = (pos == across[:, None])                                          # (n, 29) across
    values = on_line * (1.0 + 0.1 * rng.standard_normal((n, _psf.STAMP)))
    if kind == "column_defect":
        shape = (values[:, :, None] * hit[:, None, :]).astype(np.float32)
    else:
        shape = (hit[:, :, None] * values[:, None, :]).astype(np.float32)
    amp = scene.amplitude_for_snr(rows, shape, detection_snr(rng, n, kind, cfg))
    image = shape * amp.astype(np.float32)[:, None, None]
    # A dark line elsewhere (column) or correlated offsets of the neighbouring rows (row).
    other = rng.random(n) < 0.3
    shift = rng.integers(3, 12, n) * np.where(rng.random(n) < 0.5, -1, 1)
    hit2 = (pos == (across + shift)[:, None]) & other[:, None]
    level = (-0.5 * amp)[:, None] if kind == "column_defect" else (0.3 * amp * rng.standard_normal(n))[:, None]
    line2 = (hit2 * level).astype(np.float32)
    if kind == "column_defect":
        image += line2[:, None, :]
    else:
        image += line2[:, :, None]
    scene.add_post(rows, image)


def _column_defect(scene, rows, rng, cfg):
    _line_defect(scene, rows, rng, cfg, "column_defect")


def _row_defect(scene, rows, rng, cfg):
    _line_defect(scene, rows, rng, cfg, "row_defect")


def _amp_glow(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    # Sensor coordinates of every stamp pixel (the stamp centre pixel is at (x, y)).
    sx = c.x[rows][:, None] + (_GRID[None, :] - 14.0)
    sy = c.y[rows][:, None] + (_GRID[None, :] - 14.0)
    w, h = c.sensor_shape
    dx = np.minimum(np.abs(sx), np.abs(w - 1 - sx))
    dy = np.minimum(np.abs(sy), np.abs(h - 1 - sy))
    lx = rng.uniform(15.0, 60.0, n)[:, None]
    ly = rng.uniform(50.0, 300.0, n)[:, None]
    gx = np.exp(-dx / lx)
    gy = 0.3 + 0.7 * np.exp(-dy / ly)
    shape = (gy[:, :, None] * gx[:, None, :]).astype(np.float32)
    amp = scene.amplitude_for_snr(rows, shape, detection_snr(rng, n, "amp_glow", cfg))
    scene.new[rows] += shape * amp.astype(np.float32)[:, None, None]


def _streak(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    ang = rng.uniform(0.0, np.pi, n)
    perp = rng.normal(0.0, 0.3, n)
    ox = c.cx[rows] - perp * np.sin(ang)
    oy = c.cy[rows] + perp * np.cos(ang)
    kind = rng.choice(3, size=n, p=[0.55, 0.25, 0.20])  # satellite, short (slow) satellite, aircraft
    half = np.where(kind == 1, rng.uniform(3.0, 7.0, n), 40.0)
    t0 = np.where(kind == 1, rng.uniform(-0.7, 0.7, n) * half, 0.0)
    sigma_psf = c.fwhm_new[rows] / 2.3548
    sigma = np.where(kind == 2, rng.uniform(1.5, 3.0, n), sigma_psf * rng.uniform(1.0, 1.2, n))
    ux, uy = np.cos(ang), np.sin(ang)
    x1, y1 = ox + (t0 - half) * ux, oy + (t0 - half) * uy
    x2, y2 = ox + (t0 + half) * ux, oy + (t0 + half) * uy
    shape = _segment(x1, y1, x2, y2, sigma)
    double = np.flatnonzero((kind == 2) & (rng.random(n) < 0.4))
    if double.size:
        sep = rng.uniform(3.0, 6.0, double.size)
        nx, ny = -uy[double] * sep, ux[double] * sep
        shape[double] += _segment(x1[double] + nx, y1[double] + ny, x2[double] + nx, y2[double] + ny, sigma[double])
    amp = scene.amplitude_for_snr(rows, shape, detection_snr(rng, n, "streak", cfg))
    scene.new[rows] += shape * amp.astype(np.float32)[:, None, None]


def _crosstalk_ghost(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    kind = rng.choice(3, size=n, p=[0.3, 0.35, 0.35])  # saturated-star copy, ghost ring, defocused disk
    shape = np.zeros((n, _psf.STAMP, _psf.STAMP), np.float32)
    cx, cy = c.cx[rows], c.cy[rows]
    k = np.flatnonzero(kind == 0)
    if k.size:
        shape[k] = _disk(cx[k] + rng.normal(0, 0.3, k.size), cy[k] + rng.normal(0, 0.3, k.size),
                         rng.uniform(2.5, 5.0, k.size), 0.15)
    k = np.flatnonzero(kind == 1)
    if k.size:
        radius = rng.uniform(3.0, 10.0, k.size)
        phi = rng.uniform(0.0, 2 * np.pi, k.size)
        shape[k] = _ring(cx[k] - radius * np.cos(phi), cy[k] - radius * np.sin(phi), radius,
                         rng.uniform(0.8, 2.5, k.size))
    k = np.flatnonzero(kind == 2)
    if k.size:
        radius = rng.uniform(4.0, 8.0, k.size)
        phi = rng.uniform(0.0, 2 * np.pi, k.size)
        off = rng.uniform(0.0, 0.8, k.size) * radius
        shape[k] = _disk(cx[k] - off * np.cos(phi), cy[k] - off * np.sin(phi), radius, 0.8)
    amp = scene.amplitude_for_snr(rows, shape, detection_snr(rng, n, "crosstalk_ghost", cfg))
    scene.new[rows] += shape * amp.astype(np.float32)[:, None, None]


def _edge_masked(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    w, h = c.sensor_shape
    # The rim (last unmasked line) passes 0-1.5 pixel from the detection; beyond it, masked.
    side = rng.integers(0, 4, n)  # mask toward -y, +y, -x, +x
    dist = rng.uniform(0.0, 1.5, n)
    x, y = c.x[rows], c.y[rows]
    edge = _on_sensor_edge(x, y, c.sensor_shape)
    at_edge = edge >= 0
    side = np.where(at_edge, edge, side)
    to_edge = np.choose(np.clip(side, 0, 3), [y, h - 1 - y, x, w - 1 - x])
    dist = np.where(at_edge, to_edge, dist)
    along_x = side < 2
    centre = np.where(at_edge, 14.0, np.where(along_x, c.cy[rows], c.cx[rows]))
    sign = np.where(side % 2 == 0, -1.0, 1.0)
    rim = np.rint(centre + sign * dist).astype(int)
    pos = _GRID.astype(int)[None, :]
    beyond = np.where(sign[:, None] < 0, pos < rim[:, None], pos > rim[:, None])  # (n, 29)
    at_rim = pos == rim[:, None]
    block = (rng.random(n) < 0.5) & ~at_edge  # a masked block of limited extent, not a half-plane
    lo = np.where(block, rng.integers(0, 10, n), -1)
    hi = np.where(block, rng.integers(19, 29, n), _psf.STAMP)
    extent = (pos >= lo[:, None]) & (pos <= hi[:, None])
    mask = np.where(along_x[:, None, None], beyond[:, :, None] & extent[:, None, :],
                    beyond[:, None, :] & extent[:, :, None])
    rim_img = np.where(along_x[:, None, None], at_rim[:, :, None] & extent[:, None, :],
                       at_rim[:, None, :] & extent[:, :, None]).astype(np.float32)
    rim_img *= (1.0 + 0.2 * rng.standard_normal(rim_img.shape)).astype(np.float32)
    amp = scene.amplitude_for_snr(rows, rim_img, detection_snr(rng, n, "edge_masked", cfg))
    scene.add_post(rows, rim_img * amp.astype(np.float32)[:, None, None])
    # Off the sensor there is no data in any channel; a masked region lacks new-image data only.
    scene.add_mask(rows[at_edge], mask[at_edge], with_ref=True)
    scene.add_mask(rows[~at_edge], mask[~at_edge])


def _on_sensor_edge(x, y, shape=SENSOR_SHAPE) -> np.ndarray:
    """Which side a stamp runs off a sensor of ``shape`` (x, y) on (0 -y, 1 +y, 2 -x, 3 +x), or -1."""
    w, h = shape
    side = np.full(np.shape(x), -1)
    side = np.where(y < 14, 0, side)
    side = np.where(y > h - 15, 1, side)
    side = np.where(x < 14, 2, side)
    side = np.where(x > w - 15, 3, side)
    return side


def noise_peak_snr(scene: Scene, rows, rng: np.random.Generator, cfg: dict) -> np.ndarray:
    """Detection S/N of noise peaks as the noise model gives it (``bogus.noise_peak_snr: gaussian``).

    The detection statistic of pure background is Gaussian with a standard deviation ``s``
    (:meth:`Scene.filter_noise_scale`, above 1 where the reference's smoothed noise adds up), so
    the S/N of the fluctuations that cross the threshold ``nu0`` follows the Gaussian tail above
    it: ``nu = s * x`` with ``x`` drawn from a standard normal truncated at ``nu0 / s``. Real
    difference images have more threshold crossings than Gaussian noise gives (imperfect
    subtraction, unflagged detector noise): a share ``bogus.noise_excess[0]`` of the peaks is that
    excess, with a Pareto tail of index ``bogus.noise_excess[1]`` above the threshold.
    """
    from scipy.special import ndtr, ndtri

    b = cfg["bogus"]
    n = len(rows)
    nu0 = float(b["detection_snr"])
    share, index = (float(v) for v in b["noise_excess"])
    s = scene.filter_noise_scale(rows)
    tail = ndtr(-nu0 / s)  # chance that a background pixel's statistic crosses the threshold
    x = -ndtri(rng.random(n) * tail)
    excess = nu0 * rng.random(n) ** (-1.0 / index)
    return np.where(rng.random(n) < share, excess, s * x)


def _noise_peak(scene, rows, rng, cfg):
    if cfg["bogus"]["noise_peak_snr"] == "gaussian":
        scene.force_snr[rows] = noise_peak_snr(scene, rows, rng, cfg)
    else:  # "pareto": the tuned index bogus.snr_slope.noise_peak
        scene.force_snr[rows] = detection_snr(rng, len(rows), "noise_peak", cfg)


# ------------------------------------------------------------------ hidden reals (labelled bogus)
def _asteroid(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    trailed = rng.random(n) < 0.3
    q = np.where(trailed, rng.uniform(0.5, 0.9, n), c.q_new[rows])
    th = np.where(trailed, rng.uniform(0.0, np.pi, n), c.theta[rows])
    mag = c.limit_mag[rows] + rng.uniform(-3.0, 0.2, n)
    _tr.inject(scene, rows, mag, axis_ratio=q, theta=th)


def _unreported_transient(scene, rows, rng, cfg):
    n = len(rows)
    in_host = rng.random(n) < 0.6
    _tr.RENDERERS["sn_in_host"](scene, rows[in_host], rng, cfg)
    _tr.RENDERERS["sn_hostless"](scene, rows[~in_host], rng, cfg)


def _genuine_variable(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    dmag = c.limit_mag[rows] + rng.uniform(-3.0, 0.0, n)
    dflux = mag_to_flux(dmag, c.flux_zp[rows])
    ratio = np.exp(rng.uniform(np.log(0.3), np.log(5.0), n))
    base = dflux / ratio
    sx = c.cx[rows] + rng.normal(0.0, 0.05, n)
    sy = c.cy[rows] + rng.normal(0.0, 0.05, n)
    scene.add_star(rows, sx, sy, base + dflux, flux_ref=base)
    scene.mag[rows] = dmag


# ------------------------------------------------------------------ failed injections (labelled real)
def _injection_on_saturated(scene, rows, rng, cfg):
    _saturated_star_at(scene, rows, rng)
    _tr.inject(scene, rows, _tr.train_mags(scene, rows, rng, cfg))


def _injection_on_bad_pixel(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    column = rng.random(n) < 0.3
    snr = rng.uniform(20.0, 300.0, n)
    ix, iy = _centre_pixels(scene, rows)
    pix = _with_ipc(_pixel_image(n, ix, iy))
    pos = _GRID.astype(int)[None, :]
    col = ((pos == ix[:, None])[:, None, :] * np.ones((1, _psf.STAMP, 1))).astype(np.float32)
    shape = np.where(column[:, None, None], col, pix)
    amp = scene.amplitude_for_snr(rows, shape, snr)
    scene.add_post(rows, shape * amp.astype(np.float32)[:, None, None])
    _tr.inject(scene, rows, c.limit_mag[rows] + rng.uniform(-1.0, 0.3, n))


def _injection_too_faint(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    near = rng.random(n) < 0.5
    if near.any():
        r = rows[near]
        host = _tr.draw_host(rng, r.size, (14.0, 19.5), pixel_scale=c.pixel_scale)
        _tr.add_host(scene, r, rng, host, rng.uniform(0.0, 2.0, r.size) * host["r_e"])
    _tr.inject(scene, rows, c.limit_mag[rows] + rng.uniform(1.0, 3.0, n))


RENDERERS = {
    "dipole_residual": _dipole_residual,
    "psf_mismatch_ring": _psf_mismatch_ring,
    "galaxy_core_residual": _galaxy_core_residual,
    "saturated_star": _saturated_star,
    "variable_star_no_change": _variable_star_no_change,
    "cosmic_ray": _cosmic_ray,
    "hot_pixel": _hot_pixel,
    "warm_pixel": _warm_pixel,
    "column_defect": _column_defect,
    "row_defect": _row_defect,
    "rts_pixel": _rts_pixel,
    "amp_glow": _amp_glow,
    "streak": _streak,
    "crosstalk_ghost": _crosstalk_ghost,
    "edge_masked": _edge_masked,
    "noise_peak": _noise_peak,
    "bright_star_residual": _bright_star_residual,
    "star_core_residual": _star_core_residual,
    "asteroid": _asteroid,
    "unreported_transient": _unreported_transient,
    "genuine_variable": _genuine_variable,
    "injection_on_saturated": _injection_on_saturated,
    "injection_on_bad_pixel": _injection_on_bad_pixel,
    "injection_too_faint": _injection_too_faint,
}


def add_clutter(scene: Scene, rng: np.random.Generator, bg: dict, hot_density: np.ndarray) -> None:
    """Add cosmic rays and hot pixels away from the detection, in any stamp.

    Parameters
    ----------
    scene
        The batch.
    rng
        Random generator.
    bg
        ``simulation.background`` parameters (``clutter_cosmic_ray``, ``clutter_hot_pixel``).
    hot_density
        Relative hot-pixel density of each stamp's sensor, shape (N,).
    """
    c = scene.c
    n = c.n
    sd = np.sqrt(c.var_diff)

    def away(m):
        r = rng.uniform(5.0, 14.0, m)
        phi = rng.uniform(0.0, 2 * np.pi, m)
        return 14.0 + r * np.cos(phi), 14.0 + r * np.sin(phi)

    rows = np.flatnonzero(rng.random(n) < bg["clutter_cosmic_ray"])
    if rows.size:
        x, y = away(rows.size)
        shape = _cosmic_ray_shapes(scene, rows, rng, {"bogus": {"cosmic_ray_mix": {"spot": 1, "track": 1, "worm": 0.3},
                                                               "cosmic_ray_spot_sigma_max": 1.0}}, x, y)
        total = sd[rows] * np.exp(rng.uniform(np.log(10.0), np.log(500.0), rows.size))
        scene.new[rows] += shape * total.astype(np.float32)[:, None, None]
    rows = np.flatnonzero(rng.random(n) < bg["clutter_hot_pixel"] * hot_density)
    if rows.size:
        x, y = away(rows.size)
        level = sd[rows] * np.exp(rng.uniform(np.log(3.0), np.log(300.0), rows.size))
        img = _with_ipc(_pixel_image(rows.size, np.rint(x).astype(int), np.rint(y).astype(int), level))
        scene.new[rows] += img


def add_masked_regions(scene: Scene, rng: np.random.Generator, fraction: float) -> None:
    """Mask, in a share ``fraction`` of all stamps, a region beside the detection (not on it).

    Pipelines blank pixels off the detector's edge and around bad regions; a real cutout then
    holds a block of zeros in every channel a few pixels from a perfectly good candidate (ZTF's
    alerts show such blocks). The region is a half-plane whose edge passes 3-12 pixels from the
    detection, on a random side, and of limited extent along the edge in half the cases.
    """
    n = scene.c.n
    rows = np.flatnonzero(rng.random(n) < fraction)
    m = rows.size
    if m == 0:
        return
    c = scene.c
    side = rng.integers(0, 4, m)  # mask toward -y, +y, -x, +x
    dist = rng.uniform(3.0, 12.0, m)
    along_x = side < 2
    centre = np.where(along_x, c.cy[rows], c.cx[rows])
    sign = np.where(side % 2 == 0, -1.0, 1.0)
    edge = centre + sign * dist
    pos = _GRID[None, :]
    beyond = np.where(sign[:, None] < 0, pos < edge[:, None], pos > edge[:, None])  # (m, 29)
    block = rng.random(m) < 0.5
    lo = np.where(block, rng.integers(0, 12, m), -1)
    hi = np.where(block, rng.integers(17, 29, m), _psf.STAMP)
    extent = (pos >= lo[:, None]) & (pos <= hi[:, None])
    mask = np.where(along_x[:, None, None], beyond[:, :, None] & extent[:, None, :],
                    beyond[:, None, :] & extent[:, :, None])
    scene.add_mask(rows, mask, with_ref=True)


def place(kind: str, rng: np.random.Generator, n: int, shape=SENSOR_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """On-sensor pixel positions of the centres of ``n`` stamps of ``kind``.

    Detections closer than half a stamp to the sensor's border are normally rejected, so stamps
    lie wholly on the sensor; the exceptions are amplifier glow (near the short edges, where the
    amplifiers are) and two fifths of the masked-edge detections (right at the border, with part
    of the stamp off the sensor). ``shape`` is the sensor's size in pixels (x, y).
    """
    w, h = shape
    m = 14.0
    x = rng.uniform(m, w - 1 - m, n)
    y = rng.uniform(m, h - 1 - m, n)
    if kind == "amp_glow":
        d = m + rng.exponential(20.0, n)
        x = np.where(rng.random(n) < 0.5, d, w - 1 - d)
        corner = rng.random(n) < 0.5
        dy = m + rng.exponential(120.0, n)
        y = np.where(corner, np.where(rng.random(n) < 0.5, dy, h - 1 - dy), y)
    elif kind == "edge_masked":
        edge = rng.random(n) < 0.4
        side = rng.integers(0, 4, n)
        d = rng.integers(0, 2, n).astype(np.float64)  # the stamp's centre is 0 or 1 pixel inside
        x = np.where(edge & (side == 2), d, np.where(edge & (side == 3), w - 1 - d, x))
        y = np.where(edge & (side == 0), d, np.where(edge & (side == 1), h - 1 - d, y))
    return np.clip(x, 0.0, w - 1), np.clip(y, 0.0, h - 1)
