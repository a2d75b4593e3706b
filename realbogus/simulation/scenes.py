"""Observing conditions, sky scenes, image subtraction and the noise model.

A batch of stamps is built in three steps:

1. :func:`draw_conditions` draws, for every stamp, the image it comes from: sensor and position
   on the sensor, exposure (6 or 9 s stacks of 0.5 s frames), seeing and PSF (Moffat; FWHM from
   the seeing and the sensor's optics, elongated toward the field edge), sky brightness,
   transparency, camera temperature (dark current), and the reference stack's depth and seeing.
2. A :class:`Scene` collects, in electrons, what the sky puts on the detector: stars and
   galaxies rendered three times -- with the new image's PSF (``new``), with the reference's PSF
   (``ref``), and as the PSF-matched reference (``match``: the reference as the subtraction sees
   it after convolution to the new PSF, with a small, realistic registration and photometric-
   scaling error). Detector effects (cosmic rays, hot pixels, glow) are added to ``new`` only;
   read-out offsets (column and row defects, telegraph pixels) go to ``post`` (added after the
   photon noise).
3. :meth:`Scene.finish` adds the sky, photon noise (Poisson below 200 e-, its Gaussian limit
   above) and read noise, the reference's
   own (much smaller) noise, convolves that noise with the matching kernel for the difference,
   applies saturation and masks, and returns (new, ref, diff) in ADU.

All fluxes are electrons in the *new* image's photometric scale: the reference is a deeper stack
scaled to the new image's zero point, as a survey pipeline stores it. The stamps keep their sky
level in the new and reference channels; the difference is background-matched (about zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gamma as gamma_fn

from realbogus.simulation import psf as _psf
from realbogus.simulation.sensors import PIXEL_SCALE, SensorArray

__all__ = [
    "PIXEL_SCALE",
    "CENTRE",
    "Conditions",
    "draw_conditions",
    "Scene",
    "sersic",
    "dark_rate",
    "mag_to_flux",
    "flux_to_mag",
    "powerlaw_mags",
    "populate_field",
    "bleed",
]

CENTRE = 14.0        # centre pixel of a 29x29 stamp
_PAD = 6             # padding of the reference noise, for the matching kernel
_RS = 2              # radius of the reference's resampling kernel
_SIZE = _psf.STAMP
_POISSON_BELOW = 200.0  # e-: below this, photon noise is drawn as exact Poisson counts


def dark_rate(temperature_k, rates=(0.5, 6.0)):
    """Dark current (e-/s/pixel) at a sensor temperature: ``rates`` at 290 K and 305 K (Tomo-e's
    CMOS sensors: 0.5 and 6.0), exponential in the temperature; zero if ``rates[0]`` is zero."""
    r0, r1 = (float(v) for v in rates)
    if r0 <= 0.0:
        return np.zeros(np.shape(temperature_k))
    return r0 * (r1 / r0) ** ((np.asarray(temperature_k, np.float64) - 290.0) / 15.0)


def mag_to_flux(mag, flux_zp):
    """Electrons of a source of magnitude ``mag`` in an image whose mag-0 source gives ``flux_zp``."""
    return np.asarray(flux_zp) * 10.0 ** (-0.4 * np.asarray(mag, np.float64))


def flux_to_mag(flux, flux_zp):
    """Inverse of :func:`mag_to_flux`."""
    return 2.5 * np.log10(np.asarray(flux_zp) / np.maximum(np.asarray(flux, np.float64), 1e-30))


def powerlaw_mags(rng: np.random.Generator, lo, hi, slope: float) -> np.ndarray:
    """Magnitudes with ``dN/dm ~ 10^(slope m)`` between ``lo`` and ``hi`` (arrays or scalars)."""
    lo, hi = np.broadcast_arrays(np.asarray(lo, np.float64), np.asarray(hi, np.float64))
    span = 10.0 ** (-slope * (hi - lo))
    u = rng.random(hi.shape)
    return hi + np.log10(u * (1.0 - span) + span) / slope


@dataclass
class Conditions:
    """Per-stamp observing conditions; every field is an array of length N."""

    sensor_id: np.ndarray
    x: np.ndarray            # stamp centre on the sensor, pixels
    y: np.ndarray
    cx: np.ndarray           # detection position inside the stamp (pixel coordinates)
    cy: np.ndarray
    r_deg: np.ndarray        # distance from the field centre, degrees
    exptime: np.ndarray      # s
    n_frames: np.ndarray
    temperature: np.ndarray  # K
    fwhm_new: np.ndarray     # pixels
    beta_new: np.ndarray
    q_new: np.ndarray        # axis ratio
    theta: np.ndarray        # position angle, radians
    fwhm_ref: np.ndarray
    beta_ref: np.ndarray
    q_ref: np.ndarray
    flux_zp: np.ndarray      # e- in the new image for a magnitude-0 source
    sky_e: np.ndarray        # e-/pixel in the new image (sky + dark current)
    sky_ref_e: np.ndarray    # e-/pixel of the scaled reference's background
    dark_e: np.ndarray       # e-/pixel of dark current in the new image
    rn2: np.ndarray          # read-noise variance of the stack, e-^2
    inv_gain: np.ndarray     # e-/ADU
    sat_e: np.ndarray        # saturation level of the new stack, e-
    sat_ref_e: np.ndarray    # saturation level of the scaled reference, e-
    mask_saturated: np.ndarray  # whether saturated pixels are masked (zero) in the difference
    ref_depth: np.ndarray    # reference exposure / new exposure
    kernel_sigma: np.ndarray  # Gaussian sigma of the PSF-matching kernel, pixels
    resample_sigma: np.ndarray  # Gaussian sigma of the reference's resampling (noise correlation)
    var_ref: np.ndarray      # background variance per pixel of the scaled reference, e-^2
    var_diff: np.ndarray     # background variance per pixel of the difference, e-^2
    limit_mag: np.ndarray    # 5-sigma point-source limit of the difference
    match_dx: np.ndarray     # registration error of the matched reference, pixels
    match_dy: np.ndarray
    match_scale: np.ndarray  # photometric scaling of the matched reference (1 = perfect)
    match_width: np.ndarray  # PSF width ratio of the matched reference (1 = perfect)
    pixel_scale: float = PIXEL_SCALE  # arcsec per pixel of the camera
    sensor_shape: tuple = (2000, 1128)  # sensor size in pixels (x, y)
    ccd: bool = False        # CCD sensors: saturated charge bleeds along the columns

    @property
    def n(self) -> int:
        return int(self.sensor_id.shape[0])


def _lognormal(rng, median, sigma, n):
    return median * np.exp(rng.normal(0.0, sigma, n))


def draw_conditions(rng: np.random.Generator, sensor_id: np.ndarray, x: np.ndarray, y: np.ndarray,
                    sensors: SensorArray, cond: dict, inst: dict) -> Conditions:
    """Draw the observing conditions of N stamps.

    Parameters
    ----------
    rng
        Random generator of the chunk.
    sensor_id, x, y
        Sensor and on-sensor pixel position of each stamp's centre.
    sensors
        The camera (:func:`~realbogus.simulation.sensors.make_sensors`).
    cond
        Condition parameters (``simulation.conditions`` of the data config, merged with the
        split's overrides).
    inst
        Instrument parameters (``simulation.instrument``).
    """
    n = sensor_id.shape[0]
    s = sensor_id
    fx, fy = sensors.field_position(s, x, y)
    r_deg = np.hypot(fx, fy)
    vig = sensors.vignetting(r_deg)
    ps = sensors.pixel_scale

    allsky = rng.random(n) < cond["allsky_fraction"]
    long_exp, short_exp = (float(v) for v in inst.get("exposures", (9.0, 6.0)))
    exptime = np.where(allsky, long_exp, short_exp)
    n_frames = np.rint(exptime / inst["frame_time"])

    # Seeing: log-normal, plus a fraction of images from bad nights.
    seeing = _lognormal(rng, cond["seeing_median"], cond["seeing_sigma"], n)
    bad = rng.random(n) < cond["bad_seeing_fraction"]
    bad_lo, bad_hi = (float(v) for v in cond.get("bad_seeing_range", (5.0, 8.0)))
    seeing = np.where(bad, rng.uniform(bad_lo, bad_hi, n), seeing)
    r_sensor2 = sensors.x_deg[s] ** 2 + sensors.y_deg[s] ** 2
    optics = np.maximum(sensors.optics_fwhm[s] + (r_deg**2 - r_sensor2) / sensors.field_radius_deg**2, 0.5)
    fwhm_new = np.hypot(seeing, optics) / ps
    ref_seeing = _lognormal(rng, cond["ref_seeing_median"], 0.12, n)
    fwhm_ref = np.minimum(np.hypot(ref_seeing, optics) / ps, 0.95 * fwhm_new)
    beta_new = rng.uniform(2.5, 4.5, n)
    beta_ref = rng.uniform(2.5, 4.5, n)

    # Ellipticity: optics (radial) plus tracking/wind (random direction), added as spin-2 vectors.
    e_opt = sensors.optics_ellip[s] * (r_deg / np.maximum(np.sqrt(r_sensor2), 0.3)) ** 0.5
    phi = np.arctan2(fy, fx)
    e_atm = np.abs(rng.normal(0.0, cond["tracking_ellip"], n))
    psi = rng.uniform(0.0, np.pi, n)
    e1 = e_opt * np.cos(2 * phi) + e_atm * np.cos(2 * psi)
    e2 = e_opt * np.sin(2 * phi) + e_atm * np.sin(2 * psi)
    ell = np.clip(np.hypot(e1, e2), 0.0, 0.4)
    theta = 0.5 * np.arctan2(e2, e1)
    q_new = 1.0 - ell
    q_ref = 1.0 - 0.5 * ell

    # Photometry in electrons of the new stack.
    extinction = np.abs(rng.normal(0.0, cond["cloud_extinction"], n))
    throughput = vig * sensors.throughput[s]
    flux_zp = 10.0 ** (0.4 * inst["zeropoint"]) * exptime * throughput * 10.0 ** (-0.4 * extinction)
    sky_mu = rng.uniform(cond["sky_bright"], cond["sky_dark"], n)
    sky_sky = 10.0 ** (0.4 * (inst["zeropoint"] - sky_mu)) * ps**2 * exptime * throughput
    t_lo, t_hi = cond["temperature"]
    temperature = rng.uniform(t_lo, t_hi, n) + sensors.temp_offset[s]
    dark_e = dark_rate(temperature, inst.get("dark_current", (0.5, 6.0))) * exptime
    sky_e = sky_sky + dark_e
    rn2 = n_frames * sensors.read_noise[s] ** 2
    inv_gain = sensors.inv_gain[s]
    sat_e = n_frames * sensors.well[s]
    # The scaled reference saturates lower (its frames are scaled up to this image's zero point),
    # and half the images have their saturated pixels masked in the difference.
    sat_ref_e = sat_e * rng.uniform(0.6, 1.0, n)
    mask_saturated = rng.random(n) < 0.5

    # Reference: a deeper stack scaled to this image, background matched within a few per cent.
    d_lo, d_hi = cond["ref_depth"]
    ref_depth = np.exp(rng.uniform(np.log(d_lo), np.log(d_hi), n))
    sky_ref_e = sky_e * rng.uniform(0.95, 1.05, n)
    var_ref = (sky_ref_e + rn2) / ref_depth
    sig_new = fwhm_new / 2.3548
    sig_ref = fwhm_ref / 2.3548
    kernel_sigma = np.sqrt(np.maximum(sig_new**2 - sig_ref**2, 0.0))
    # The reference was resampled onto this image's pixels: its noise is correlated on a scale
    # ``resample_sigma`` (variance kept), then smoothed again by the matching kernel.
    rs_lo, rs_hi = cond["ref_resample_sigma"]
    resample_sigma = rng.uniform(rs_lo, rs_hi, n)
    k_rs = (_psf.gaussian_kernels(resample_sigma, _RS).astype(np.float64) ** 2).sum(axis=1) ** 2
    k_tot = (_psf.gaussian_kernels(np.hypot(resample_sigma, kernel_sigma), _PAD).astype(np.float64) ** 2
             ).sum(axis=1) ** 2
    var_diff = sky_e + rn2 + var_ref * np.minimum(k_tot / k_rs, 1.0)

    neff = _psf.moffat_neff(fwhm_new, beta_new)
    f5 = 0.5 * (25.0 + np.sqrt(625.0 + 100.0 * neff * var_diff))
    limit_mag = flux_to_mag(f5, flux_zp)

    m = cond["matching"]
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731 - local shorthand
    return Conditions(
        sensor_id=np.asarray(s, np.int16),
        x=f32(x), y=f32(y),
        cx=f32(CENTRE + rng.uniform(-0.5, 0.5, n)),
        cy=f32(CENTRE + rng.uniform(-0.5, 0.5, n)),
        r_deg=r_deg, exptime=exptime, n_frames=n_frames, temperature=temperature,
        fwhm_new=fwhm_new, beta_new=beta_new, q_new=q_new, theta=theta,
        fwhm_ref=fwhm_ref, beta_ref=beta_ref, q_ref=q_ref,
        flux_zp=flux_zp, sky_e=sky_e, sky_ref_e=sky_ref_e, dark_e=dark_e, rn2=rn2,
        inv_gain=inv_gain, sat_e=sat_e, sat_ref_e=sat_ref_e, mask_saturated=mask_saturated,
        ref_depth=ref_depth,
        kernel_sigma=kernel_sigma, resample_sigma=resample_sigma, var_ref=var_ref, var_diff=var_diff, limit_mag=limit_mag,
        match_dx=rng.normal(0.0, m["registration_rms"], n),
        match_dy=rng.normal(0.0, m["registration_rms"], n),
        match_scale=1.0 + rng.normal(0.0, m["scale_rms"], n),
        match_width=1.0 + rng.normal(0.0, m["width_rms"], n),
        pixel_scale=ps, sensor_shape=sensors.shape, ccd=inst.get("detector", "cmos") == "ccd",
    )


def _sersic_b(n):
    n = np.asarray(n, np.float64)
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n**2)


def sersic(x0, y0, flux, r_e, n_sersic, axis_ratio, theta, soften) -> np.ndarray:
    """Sersic galaxies seen through a PSF, one per stamp, as (N, 29, 29) float32.

    The PSF's blurring of the core is approximated by softening the radius,
    ``rho = sqrt(r^2 + soften^2)``; the outer profile is the Sersic law itself. ``flux`` is the
    analytic total of the unsoftened profile, so a galaxy has the same flux in every image and
    the difference of two renderings with the same softening is exactly zero.

    Parameters
    ----------
    x0, y0
        Galaxy centres, pixels.
    flux
        Total flux.
    r_e
        Circularised effective (half-light) radius, pixels.
    n_sersic
        Sersic index (1 exponential disk, 4 de Vaucouleurs bulge).
    axis_ratio, theta
        Minor/major axis ratio and position angle (radians).
    soften
        Softening length in pixels (about the PSF's sigma).
    """
    x0 = np.atleast_1d(x0)
    n = x0.shape[0]
    bc = lambda a: np.broadcast_to(np.asarray(a, np.float64), (n,))  # noqa: E731
    r_e, ns, q, th, soft = bc(r_e), bc(n_sersic), bc(axis_ratio), bc(theta), bc(soften)
    sq = np.sqrt(q)
    dx, dy = _psf._offsets(x0, y0, _SIZE)
    r2 = _psf._elliptical_r2(dx, dy, r_e / sq, r_e * sq, th)  # (r / r_e)^2, elliptical
    r2 += ((soft / r_e) ** 2).astype(np.float32)[:, None, None]
    b = _sersic_b(ns)
    # exp(-b * ((r/r_e)^(1/n) - 1)) computed as exp(-b * (exp(log(r2) / (2n)) - 1))
    prof = np.log(r2, out=r2)
    prof *= (0.5 / ns).astype(np.float32)[:, None, None]
    np.exp(prof, out=prof)
    prof -= np.float32(1.0)
    prof *= (-b).astype(np.float32)[:, None, None]
    np.exp(prof, out=prof)
    total = 2.0 * np.pi * ns * r_e**2 * np.exp(b) * b ** (-2.0 * ns) * gamma_fn(2.0 * ns)
    prof *= (np.asarray(flux, np.float64) / total).astype(np.float32)[:, None, None]
    return prof


class Scene:
    """Electron images of a batch of stamps under construction (see the module docstring).

    Attributes
    ----------
    new, ref, match
        (N, 29, 29) float32 expected electrons from sources, before sky and noise.
    post
        Read-out offsets added to the new image after noise (allocated on first use).
    mask, mask_ref
        Pixels masked (set to zero) in the new and difference images, and in the reference
        (allocated on first use).
    force_snr
        Where finite, the difference is conditioned to reach this PSF-matched S/N at the
        detection position by a noise fluctuation (``noise_peak``).
    mag, host_offset
        Per-stamp metadata filled in by the kind renderers (NaN where not applicable).
    psf_c
        Unit-flux new-image PSF at each detection position (the detection filter).
    split
        ``train`` or ``test``: which split the stamps belong to.
    """

    def __init__(self, cond: Conditions, split: str = "train"):
        self.c = cond
        self.split = split
        n = cond.n
        shape = (n, _SIZE, _SIZE)
        self.new = np.zeros(shape, np.float32)
        self.ref = np.zeros(shape, np.float32)
        self.match = np.zeros(shape, np.float32)
        self.post: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.mask_ref: np.ndarray | None = None
        self.force_snr = np.full(n, np.nan)
        self.mag = np.full(n, np.nan, np.float32)
        self.host_offset = np.full(n, np.nan, np.float32)
        # Detections on the negated difference (a source fainter in the new image), stored the
        # way such surveys store them: the difference negated (reference minus new), new and
        # reference as they are. Set only by renderers of cameras with negative detections.
        self.fading = np.zeros(n, bool)
        self.psf_c = _psf.moffat(cond.cx, cond.cy, 1.0, cond.fwhm_new, cond.beta_new, cond.q_new, cond.theta)
        self.psf_norm2 = np.einsum("nij,nij->n", self.psf_c, self.psf_c).astype(np.float64)

    # --- rendering helpers (rows: index array of the stamps concerned)
    def psf_new(self, rows, x, y, flux, fwhm_scale=1.0, axis_ratio=None, theta=None) -> np.ndarray:
        """New-image PSF of the given stamps at (x, y) with total ``flux`` (e-)."""
        c = self.c
        q = c.q_new[rows] if axis_ratio is None else axis_ratio
        th = c.theta[rows] if theta is None else theta
        return _psf.moffat(x, y, flux, c.fwhm_new[rows] * fwhm_scale, c.beta_new[rows], q, th)

    def psf_ref(self, rows, x, y, flux) -> np.ndarray:
        """Reference PSF of the given stamps."""
        c = self.c
        return _psf.moffat(x, y, flux, c.fwhm_ref[rows], c.beta_ref[rows], c.q_ref[rows], c.theta[rows])

    def add_star(self, rows, x, y, flux_new, flux_ref=None, dx=0.0, dy=0.0, scale=1.0, width=1.0):
        """Add stars: ``flux_new`` in the new image, ``flux_ref`` in the reference.

        ``dx, dy, scale, width`` are extra registration, photometric and PSF-width errors of the
        matched reference for these stars, on top of each stamp's global matching error.
        """
        if len(rows) == 0:
            return
        c = self.c
        flux_ref = flux_new if flux_ref is None else flux_ref
        self.new[rows] += self.psf_new(rows, x, y, flux_new)
        self.ref[rows] += self.psf_ref(rows, x, y, flux_ref)
        self.match[rows] += self.psf_new(
            rows, x + c.match_dx[rows] + dx, y + c.match_dy[rows] + dy,
            flux_ref * c.match_scale[rows] * scale, fwhm_scale=c.match_width[rows] * width,
        )

    def add_galaxy(self, rows, x, y, flux, r_e, n_sersic, axis_ratio, theta,
                   soften_scale=1.0, dx=0.0, dy=0.0, scale=1.0):
        """Add galaxies to all three images (softened by each image's PSF)."""
        if len(rows) == 0:
            return
        c = self.c
        s_new = 0.6 * c.fwhm_new[rows]
        s_ref = 0.6 * c.fwhm_ref[rows]
        self.new[rows] += sersic(x, y, flux, r_e, n_sersic, axis_ratio, theta, s_new)
        self.ref[rows] += sersic(x, y, flux, r_e, n_sersic, axis_ratio, theta, s_ref)
        self.match[rows] += sersic(
            x + c.match_dx[rows] + dx, y + c.match_dy[rows] + dy,
            flux * c.match_scale[rows] * scale, r_e, n_sersic, axis_ratio, theta,
            s_new * c.match_width[rows] * soften_scale,
        )

    def add_post(self, rows, image):
        """Add read-out offsets (e-) to the new image after its photon noise."""
        if self.post is None:
            self.post = np.zeros_like(self.new)
        self.post[rows] += image

    def add_mask(self, rows, mask, with_ref: bool = False):
        """Mask pixels (bool (m, 29, 29)) of the new and difference images (and the reference)."""
        if len(rows) == 0:
            return
        if self.mask is None:
            self.mask = np.zeros(self.new.shape, bool)
        self.mask[rows] |= mask
        if with_ref:
            if self.mask_ref is None:
                self.mask_ref = np.zeros(self.new.shape, bool)
            self.mask_ref[rows] |= mask

    def amplitude_for_snr(self, rows, shape, snr) -> np.ndarray:
        """Scale factor making ``shape`` (its contribution to the difference) reach ``snr``.

        The detection statistic is the PSF-matched filter at the detection position,
        ``sum(diff * p) / (sigma * sqrt(sum(p^2)))`` with ``p`` the unit new-image PSF.
        """
        overlap = np.einsum("nij,nij->n", shape, self.psf_c[rows]).astype(np.float64)
        overlap = np.maximum(overlap, 1e-6 * np.abs(shape).reshape(len(rows), -1).max(axis=1) + 1e-12)
        return snr * np.sqrt(self.c.var_diff[rows] * self.psf_norm2[rows]) / overlap

    def filter_noise_scale(self, rows) -> np.ndarray:
        """True standard deviation of the detection statistic on pure background, in units of
        the nominal one (``sigma * sqrt(sum(p^2))``, which treats the noise as white).

        The difference holds the new image's white noise and the reference's noise smoothed
        twice (by its resampling and by the matching kernel); smoothed noise adds up coherently
        under the PSF-shaped filter, so the statistic scatters more than the nominal value says.
        Computed exactly from the two kernels: ``var = (sky + rn^2) sum(p^2) + v_w sum((K * p)^2)``.
        """
        c = self.c
        rows = np.asarray(rows)
        k_rs = _psf.gaussian_kernels(c.resample_sigma[rows], _RS).astype(np.float64)
        k_ks = _psf.gaussian_kernels(c.kernel_sigma[rows], _PAD).astype(np.float64)
        # The composite 1-D kernel (resampling then matching), radius _RS + _PAD.
        from numpy.lib.stride_tricks import sliding_window_view

        padded = np.pad(k_ks, ((0, 0), (2 * _RS, 2 * _RS)))
        k_tot = np.einsum("nji,ni->nj", sliding_window_view(padded, 2 * _RS + 1, axis=1)[:, :, ::-1], k_rs)
        r = _RS + _PAD
        p = np.pad(self.psf_c[rows].astype(np.float64), ((0, 0), (2 * r, 2 * r), (2 * r, 2 * r)))
        kp = _psf.smooth(p, k_tot)
        white_var = c.var_ref[rows] / (k_rs**2).sum(axis=1) ** 2  # before the resampling kernel
        var = (c.sky_e[rows] + c.rn2[rows]) * self.psf_norm2[rows] + white_var * (kp**2).sum(axis=(1, 2))
        return np.sqrt(var / (c.var_diff[rows] * self.psf_norm2[rows]))

    # --- the observation
    def finish(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Add sky and noise, subtract, saturate and mask.

        Returns
        -------
        images
            (N, 29, 29, 3) float32 (new, ref, diff) in ADU.
        snr
            (N,) PSF-matched S/N at the detection position in the difference image.
        """
        c = self.c
        n = c.n
        col = lambda a: np.asarray(a, np.float32)[:, None, None]  # noqa: E731

        lam = self.new + col(c.sky_e)
        np.maximum(lam, 0.0, out=lam)
        # Photon and read noise in one Gaussian draw; exact Poisson counts where few photons fall
        # (the Gaussian is indistinguishable from Poisson above a few hundred electrons).
        new = rng.standard_normal(lam.shape, dtype=np.float32)
        new *= np.sqrt(lam + col(c.rn2))
        new += lam
        low = lam < _POISSON_BELOW
        if low.any():
            counts = rng.poisson(lam[low]).astype(np.float32)
            new[low] = counts + rng.standard_normal(counts.shape, dtype=np.float32) * np.broadcast_to(
                col(np.sqrt(c.rn2)), lam.shape)[low]
        if self.post is not None:
            new += self.post
        if c.ccd:
            bleed(new, col(c.sat_e))
        np.minimum(new, col(c.sat_e), out=new)
        saturated = (new >= col(c.sat_e)) & c.mask_saturated[:, None, None]

        # Reference noise on a padded grid, so that the matching kernel sees real neighbours.
        big = _SIZE + 2 * _PAD
        k_rs = _psf.gaussian_kernels(c.resample_sigma, _RS)
        norm = 1.0 / np.sqrt((k_rs.astype(np.float64) ** 2).sum(axis=1) ** 2)
        white = rng.standard_normal((n, big + 2 * _RS, big + 2 * _RS), dtype=np.float32)
        white *= col(np.sqrt(c.var_ref) * norm)
        noise_ref = _psf.smooth(white, k_rs)
        del white
        src_sd = np.sqrt(np.maximum(self.ref, 0.0) / col(c.ref_depth))
        noise_ref[:, _PAD:-_PAD, _PAD:-_PAD] += rng.standard_normal(src_sd.shape, dtype=np.float32) * src_sd
        ref = self.ref + col(c.sky_ref_e) + noise_ref[:, _PAD:-_PAD, _PAD:-_PAD]
        if c.ccd:
            bleed(ref, col(c.sat_ref_e))
        np.minimum(ref, col(c.sat_ref_e), out=ref)

        if c.ccd:
            bleed(self.match, col(c.sat_ref_e))
        matched = np.minimum(self.match, col(c.sat_ref_e))
        matched += _psf.smooth(noise_ref, _psf.gaussian_kernels(c.kernel_sigma, _PAD))
        diff = new - col(c.sky_e) - matched

        sigma_mf = np.sqrt(c.var_diff * self.psf_norm2)
        forced = np.flatnonzero(np.isfinite(self.force_snr))
        if forced.size:
            p = self.psf_c[forced]
            stat = np.einsum("nij,nij->n", diff[forced], p)
            amp = (self.force_snr[forced] * sigma_mf[forced] - stat) / self.psf_norm2[forced]
            bump = p * amp.astype(np.float32)[:, None, None]
            new[forced] += bump
            diff[forced] += bump

        if self.fading.any():
            diff[self.fading] *= -1.0
        diff[saturated] = 0.0
        if self.mask is not None:
            new[self.mask] = 0.0
            diff[self.mask] = 0.0
        if self.mask_ref is not None:
            ref[self.mask_ref] = 0.0

        snr = np.einsum("nij,nij->n", diff, self.psf_c) / sigma_mf
        images = np.stack([new, ref, diff], axis=-1)
        images *= col(1.0 / c.inv_gain)[..., None]
        return images, snr.astype(np.float32)


def bleed(images: np.ndarray, saturation: np.ndarray) -> None:
    """Spill the charge above ``saturation`` along each CCD column, in place.

    In a CCD the charge beyond a pixel's full well flows into its neighbours along the column:
    every column holding saturated pixels gets a saturated run extended, on both sides, by as
    many pixels as its excess charge fills (``excess / saturation / 2`` each way). CMOS pixels do
    not bleed.

    Parameters
    ----------
    images
        (N, H, W) electrons; rows are ``y`` (the CCD columns run along axis 1).
    saturation
        (N, 1, 1) full well of each image, electrons.
    """
    over = images > saturation
    rows = np.flatnonzero(over.any(axis=(1, 2)))
    if rows.size == 0:
        return
    sub, sat, hit = images[rows], saturation[rows], over[rows]
    height = sub.shape[1]
    excess = np.clip(sub - sat, 0.0, None).sum(axis=1)                 # (m, W) electrons per column
    in_col = hit.any(axis=1)
    first = hit.argmax(axis=1)
    last = height - 1 - hit[:, ::-1, :].argmax(axis=1)
    spill = np.ceil(excess / (2.0 * sat[:, 0, :]))
    i = np.arange(height)[None, :, None]
    run = in_col[:, None, :] & (i >= (first - spill)[:, None, :]) & (i <= (last + spill)[:, None, :])
    images[rows] = np.where(run, np.maximum(sub, sat), sub)


def populate_field(scene: "Scene", rng: np.random.Generator, bg: dict) -> None:
    """Add the field around every detection: stars and faint galaxies at random positions.

    Star counts are Poisson with a mean that varies log-normally from field to field (galactic
    latitude); magnitudes follow ``dN/dm ~ 10^(0.3 m)``. Objects may fall anywhere, including on
    the detection, and a little outside the stamp (their wings still show).
    """
    c = scene.c
    n = c.n
    lam = bg["star_density"] * np.exp(rng.normal(0.0, 0.8, n))
    counts = np.minimum(rng.poisson(lam), bg["max_stars"])
    for j in range(int(counts.max(initial=0))):
        rows = np.flatnonzero(counts > j)
        mag = powerlaw_mags(rng, np.full(rows.size, bg["star_mag_bright"]), 21.5, 0.3)
        x, y = rng.uniform(-3.0, _SIZE + 2.0, (2, rows.size))
        scene.add_star(rows, x, y, mag_to_flux(mag, c.flux_zp[rows]))
    counts = np.minimum(rng.poisson(bg["galaxy_density"], n), 3)
    for j in range(int(counts.max(initial=0))):
        rows = np.flatnonzero(counts > j)
        m = rows.size
        mag = rng.uniform(18.5, 22.5, m)
        x, y = rng.uniform(-3.0, _SIZE + 2.0, (2, m))
        r_e = rng.uniform(0.5, 2.5, m) / c.pixel_scale
        scene.add_galaxy(rows, x, y, mag_to_flux(mag, c.flux_zp[rows]), r_e, rng.uniform(0.8, 4.0, m),
                         rng.uniform(0.3, 1.0, m), rng.uniform(0.0, np.pi, m))
