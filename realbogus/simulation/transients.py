"""Real point sources: injected artificial sources (training) and actual transients (test).

Every renderer takes ``(scene, rows, rng, cfg)``: it adds its sources to the stamps ``rows`` of a
:class:`~realbogus.simulation.scenes.Scene` and records ``mag`` and ``host_offset`` (arcsec).
The detection, and so the stamp's centre, is the transient itself.

- ``galx_artificial_real``: a point source injected on or around a catalogued galaxy (a fifth at
  the nucleus, the rest anywhere out to twice the effective radius).
- ``rand_artificial_real``: a point source injected at a random position (it may land on a
  field star or galaxy by chance, as in the survey).
- ``star_artificial_real``: a point source injected exactly onto a field star, adding
  ``reals.star_contrast`` (log-uniform range) times the star's flux: a variable-star-like
  brightening, which surveys such as ZTF label real. Off by default (``reals.star_fraction: 0``).
- ``sn_in_host``: a supernova; its offset from the host follows the host's exponential light.
- ``sn_hostless``: no visible host (half of them have a faint, compact one).
- ``nuclear_transient``: at the nucleus of a concentrated galaxy (tidal disruptions, AGN flares).
- ``variable_star``: a genuine brightening of a star present in both images (the change divided
  by the quiescent flux drawn from ``reals.variable_contrast``); ``nuclear_variable``: the same
  for a point-like nucleus of a concentrated galaxy. Surveys differ on these: ZTF labels them real
  (``reals.variable_fraction`` of the training reals), the Tomo-e preset keeps its genuine
  variables among the bogus (``genuine_variable``). Their magnitudes follow the injections in
  the training split and the transients in the test split.

Injection magnitudes are uniform from ``train_mag_bright`` to just past each image's 5-sigma
limit; actual transients follow a TNS-like steep count ``dN/dm ~ 10^(slope m)`` down to about
the limit, so most are faint and many lie close to the detection threshold.
"""

from __future__ import annotations

import numpy as np

from realbogus.simulation.scenes import PIXEL_SCALE, Scene, mag_to_flux, powerlaw_mags

__all__ = [
    "RENDERERS",
    "draw_host",
    "add_host",
    "inject",
    "train_mags",
    "transient_mags",
]


def draw_host(rng: np.random.Generator, n: int, mag_range=(14.0, 20.0), concentrated: bool = False,
              pixel_scale: float = PIXEL_SCALE) -> dict:
    """Draw host-galaxy parameters: brighter galaxies are larger.

    Returns a dict of arrays ``mag, r_e`` (pixels of ``pixel_scale`` arcsec), ``n_sersic, q, theta``.
    """
    mag = rng.uniform(mag_range[0], mag_range[1], n)
    r_e_arcsec = np.clip(3.0 * 10.0 ** (-0.2 * (mag - 16.0)) * np.exp(rng.normal(0.0, 0.35, n)), 0.7, 15.0)
    if concentrated:
        n_sersic = rng.uniform(2.0, 4.0, n)
    else:
        n_sersic = np.where(rng.random(n) < 0.6, rng.uniform(0.8, 1.5, n), rng.uniform(1.5, 4.0, n))
    return {
        "mag": mag,
        "r_e": r_e_arcsec / pixel_scale,
        "n_sersic": n_sersic,
        "q": rng.uniform(0.3, 1.0, n),
        "theta": rng.uniform(0.0, np.pi, n),
    }


def add_host(scene: Scene, rows, rng: np.random.Generator, host: dict, offset_px) -> None:
    """Place hosts so that the transient at the detection position is ``offset_px`` from the nucleus."""
    c = scene.c
    angle = rng.uniform(0.0, 2.0 * np.pi, len(rows))
    gx = c.cx[rows] - offset_px * np.cos(angle)
    gy = c.cy[rows] - offset_px * np.sin(angle)
    flux = mag_to_flux(host["mag"], c.flux_zp[rows])
    scene.add_galaxy(rows, gx, gy, flux, host["r_e"], host["n_sersic"], host["q"], host["theta"])
    scene.host_offset[rows] = offset_px * c.pixel_scale


def inject(scene: Scene, rows, mag, axis_ratio=None, theta=None) -> None:
    """Add a point source of magnitude ``mag`` at the detection position, in the new image only."""
    c = scene.c
    flux = mag_to_flux(mag, c.flux_zp[rows])
    scene.new[rows] += scene.psf_new(rows, c.cx[rows], c.cy[rows], flux, axis_ratio=axis_ratio, theta=theta)
    scene.mag[rows] = mag


def train_mags(scene: Scene, rows, rng: np.random.Generator, cfg: dict) -> np.ndarray:
    """Injection magnitudes: uniform from the bright end to just past each image's limit."""
    r = cfg["reals"]
    hi = scene.c.limit_mag[rows] + r["train_mag_faint"]
    lo = np.minimum(r["train_mag_bright"], hi - 1.0)
    return rng.uniform(lo, hi)


def transient_mags(scene: Scene, rows, rng: np.random.Generator, cfg: dict, faint_offset=None) -> np.ndarray:
    """TNS-like magnitudes: ``dN/dm ~ 10^(slope m)`` between the bright end and the limit."""
    r = cfg["reals"]
    faint = r["test_mag_faint"] if faint_offset is None else faint_offset
    hi = scene.c.limit_mag[rows] + faint
    lo = np.minimum(r["test_mag_bright"], hi - 1.0)
    return powerlaw_mags(rng, lo, hi, r["test_mag_slope"])


def _galx_artificial_real(scene, rows, rng, cfg):
    n = len(rows)
    host = draw_host(rng, n, (14.0, 19.5), pixel_scale=scene.c.pixel_scale)
    nucleus = rng.random(n) < 0.2
    offset = np.where(nucleus, np.abs(rng.normal(0.0, 0.3, n)), rng.uniform(0.0, 2.0, n) * host["r_e"])
    add_host(scene, rows, rng, host, offset)
    inject(scene, rows, train_mags(scene, rows, rng, cfg))


def _rand_artificial_real(scene, rows, rng, cfg):
    inject(scene, rows, train_mags(scene, rows, rng, cfg))


def _star_artificial_real(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    mag = train_mags(scene, rows, rng, cfg)
    lo, hi = (float(v) for v in cfg["reals"]["star_contrast"])
    contrast = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    star = mag_to_flux(mag, c.flux_zp[rows]) / contrast
    # The star sits under the injection, to the precision of a catalogue position.
    sx = c.cx[rows] + rng.normal(0.0, 0.05, n)
    sy = c.cy[rows] + rng.normal(0.0, 0.05, n)
    scene.add_star(rows, sx, sy, star)
    inject(scene, rows, mag)


def _sn_in_host(scene, rows, rng, cfg):
    n = len(rows)
    host = draw_host(rng, n, (14.0, 20.5), pixel_scale=scene.c.pixel_scale)
    # Offsets follow an exponential disk's light: r ~ Gamma(2, h), h = r_e / 1.678.
    offset = rng.gamma(2.0, host["r_e"] / 1.678)
    add_host(scene, rows, rng, host, offset)
    inject(scene, rows, transient_mags(scene, rows, rng, cfg))


def _sn_hostless(scene, rows, rng, cfg):
    n = len(rows)
    faint = np.flatnonzero(rng.random(n) < 0.5)
    if faint.size:
        host = draw_host(rng, faint.size, (20.5, 22.5), pixel_scale=scene.c.pixel_scale)
        host["r_e"] = np.minimum(host["r_e"], 1.5 / scene.c.pixel_scale)
        add_host(scene, rows[faint], rng, host, rng.uniform(0.0, 3.0, faint.size) * host["r_e"])
    inject(scene, rows, transient_mags(scene, rows, rng, cfg))


def _nuclear_transient(scene, rows, rng, cfg):
    n = len(rows)
    host = draw_host(rng, n, (14.0, 19.0), concentrated=True, pixel_scale=scene.c.pixel_scale)
    add_host(scene, rows, rng, host, np.abs(rng.normal(0.0, 0.25, n)))
    inject(scene, rows, transient_mags(scene, rows, rng, cfg))


def _change_mags(scene, rows, rng, cfg) -> np.ndarray:
    """Magnitudes of genuine changes: like the injections in training, like TNS transients in the test."""
    if scene.split == "test":
        return transient_mags(scene, rows, rng, cfg)
    return train_mags(scene, rows, rng, cfg)


def _quiescent_flux(scene, rows, rng, cfg, mag) -> np.ndarray:
    """Flux before the change: the change divided by a contrast drawn from ``reals.variable_contrast``."""
    lo, hi = (float(v) for v in cfg["reals"]["variable_contrast"])
    contrast = np.exp(rng.uniform(np.log(lo), np.log(hi), len(rows)))
    return mag_to_flux(mag, scene.c.flux_zp[rows]) / contrast


def fading_rows(scene, rows, rng, cfg, share: float = 0.5) -> np.ndarray:
    """Draw which of ``rows`` are fadings, and mark them in ``scene.fading``.

    Only cameras with ``instrument.negative_detections`` detect them (the others draw nothing,
    so their data stay as before). ``share`` is the chance of a fading: a half for a change or
    an error that is as likely to go either way.
    """
    if not cfg["instrument"]["negative_detections"]:
        return np.zeros(len(rows), bool)
    fade = rng.random(len(rows)) < share
    scene.fading[rows[fade]] = True
    return fade


def _variable_star(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    mag = _change_mags(scene, rows, rng, cfg)
    base = _quiescent_flux(scene, rows, rng, cfg, mag)
    sx = c.cx[rows] + rng.normal(0.0, 0.05, n)
    sy = c.cy[rows] + rng.normal(0.0, 0.05, n)
    # The star is in both images, brighter in the new one; its quiescent light is subtracted
    # with the image's usual matching errors. Where the camera's pipeline also detects on the
    # negated difference, half the changes are fadings: brighter in the reference instead.
    change = mag_to_flux(mag, c.flux_zp[rows])
    fade = fading_rows(scene, rows, rng, cfg)
    scene.add_star(rows, sx, sy, base + np.where(fade, 0.0, change), flux_ref=base + np.where(fade, change, 0.0))
    scene.mag[rows] = mag


def _nuclear_variable(scene, rows, rng, cfg):
    n = len(rows)
    c = scene.c
    host = draw_host(rng, n, (14.0, 19.0), concentrated=True, pixel_scale=c.pixel_scale)
    add_host(scene, rows, rng, host, np.abs(rng.normal(0.0, 0.15, n)))
    mag = _change_mags(scene, rows, rng, cfg)
    # An active nucleus: a point source in both images, brighter in the new one (or, where the
    # camera detects fadings, brighter in the reference for half of them).
    base = _quiescent_flux(scene, rows, rng, cfg, mag)
    fade = fading_rows(scene, rows, rng, cfg)
    scene.add_star(rows, c.cx[rows], c.cy[rows], base,
                   flux_ref=base + np.where(fade, mag_to_flux(mag, c.flux_zp[rows]), 0.0))
    inject(scene, rows[~fade], mag[~fade])
    scene.mag[rows] = mag


RENDERERS = {
    "galx_artificial_real": _galx_artificial_real,
    "rand_artificial_real": _rand_artificial_real,
    "star_artificial_real": _star_artificial_real,
    "sn_in_host": _sn_in_host,
    "sn_hostless": _sn_hostless,
    "nuclear_transient": _nuclear_transient,
    "variable_star": _variable_star,
    "nuclear_variable": _nuclear_variable,
}
