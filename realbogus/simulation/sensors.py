"""The sensors of a survey camera and what makes each one different.

The camera is described by ``simulation.instrument`` (a preset of ``conf/instrument/``): pixel
scale, sensor count and size, how the sensors tile the field, gain, read noise and full well,
optics and vignetting. The Tomo-e Gozen preset (the default) has 84 CMOS sensors tiling a
circular field about 9 degrees across (20.8 deg^2 of silicon: the sensors cover about a third of
the circle, with gaps between them); the ZTF preset has 16 CCDs read out in 4 quadrants each,
every quadrant being one "sensor". Each sensor gets, from a fixed instrument seed, its own:

- position in the field (degrees from the centre), which sets the optical PSF contribution
  (growing toward the edge, elongated along the radius) and the vignetting (none within
  ``vignetting[0]`` degrees, falling to ``vignetting[1]`` at the field's edge);
- inverse gain (e-/ADU) and read noise (e- per frame), scattered around the nominal values;
- throughput (quantum efficiency scatter), temperature offset (so dark current and hot pixels
  differ), hot-pixel density, amplifier-glow strength, column/row-defect rate and crosstalk level;
- a mix of bogus kinds (global weights, tilted by the sensor's own defects and PSF quality, then
  scattered with a Dirichlet draw) and a relative rate of bogus detections.

These properties do not change between the training and the test set: the same camera observes
both. Per-image conditions (seeing, sky, temperature, ...) are drawn in :mod:`.scenes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from realbogus.data.kinds import FIRST_ALERT_KIND, KIND_CODES, TRAIN_BOGUS_KINDS

__all__ = [
    "N_SENSORS",
    "SENSOR_SHAPE",
    "GAIN_MODES",
    "TOMOE",
    "SensorArray",
    "make_sensors",
    "vignetting",
    "bogus_mix",
]

N_SENSORS = 84
#: Sensor size in pixels (x, y).
SENSOR_SHAPE = (2000, 1128)
#: Published (inverse gain e-/ADU, read noise e-, linear well e-) per gain mode.
GAIN_MODES = {
    "high": (0.23, 2.0, 6000.0),
    "mid": (0.94, 4.1, 25000.0),
    "low": (2.4, 9.2, 52000.0),
}
PIXEL_SCALE = 1.189  # arcsec per pixel
FIELD_RADIUS_DEG = 4.5
#: The Tomo-e Gozen camera: the values :func:`make_sensors` uses for keys an instrument leaves out.
TOMOE = {
    "pixel_scale": PIXEL_SCALE,
    "n_sensors": N_SENSORS,
    "sensor_shape": list(SENSOR_SHAPE),
    "grid": [12, 16],
    "pitch_deg": [1.0, 0.75],
    "field_radius_deg": FIELD_RADIUS_DEG,
    "vignetting": [2.0, 0.5],
    "gain_mode": "high",
    "inv_gain": None,
    "read_noise": None,
    "full_well": None,
    "gain_scatter": 0.04,
    "read_noise_scatter": 0.15,
    "optics_fwhm": [0.8, 1.0, 0.4],
}


@dataclass(frozen=True)
class SensorArray:
    """Per-sensor properties, each an array of length 84 (index = ``sensor_id``)."""

    x_deg: np.ndarray            # sensor centre in the field, degrees
    y_deg: np.ndarray
    inv_gain: np.ndarray         # e- per ADU
    read_noise: np.ndarray       # e- per frame
    well: np.ndarray             # linear full well, e- per frame
    throughput: np.ndarray       # relative quantum efficiency (1 = nominal)
    optics_fwhm: np.ndarray      # arcsec at the sensor centre, added in quadrature to the seeing
    optics_ellip: np.ndarray     # 1 - axis ratio of the optical PSF
    temp_offset: np.ndarray      # K above the camera's mean temperature
    hot_density: np.ndarray      # relative hot/warm/RTS pixel density
    glow: np.ndarray             # relative amplifier-glow strength
    defect_rate: np.ndarray      # relative column/row defect rate
    crosstalk: np.ndarray        # relative crosstalk/ghost level
    bogus_rate: np.ndarray       # relative number of bogus detections per image
    shape: tuple = SENSOR_SHAPE  # sensor size in pixels (x, y)
    pixel_scale: float = PIXEL_SCALE  # arcsec per pixel
    field_radius_deg: float = FIELD_RADIUS_DEG  # radius of the field, degrees
    vignetting_at: tuple = (2.0, 0.5)  # (radius where vignetting starts, illumination at the edge)

    @property
    def n(self) -> int:
        return int(self.x_deg.shape[0])

    def field_position(self, sensor_id, x_pix, y_pix):
        """Field coordinates (degrees) of pixel ``(x_pix, y_pix)`` on sensor ``sensor_id``."""
        w, h = self.shape
        sx = self.x_deg[sensor_id] + (np.asarray(x_pix) / w - 0.5) * (w * self.pixel_scale / 3600.0)
        sy = self.y_deg[sensor_id] + (np.asarray(y_pix) / h - 0.5) * (h * self.pixel_scale / 3600.0)
        return sx, sy

    def vignetting(self, r_deg):
        """Relative illumination at ``r_deg`` degrees from the field centre."""
        return vignetting(r_deg, self.vignetting_at[0], self.field_radius_deg, self.vignetting_at[1])


def _layout(n: int, grid, pitch) -> tuple[np.ndarray, np.ndarray]:
    """Sensor centres: the ``n`` cells of a ``grid`` (columns, rows) closest to the field centre,
    ordered row by row from the top, left to right. ``pitch`` (degrees) leaves the gaps."""
    nx, ny = (int(v) for v in grid)
    ix, iy = np.meshgrid(np.arange(-nx // 2, nx - nx // 2) + 0.5, np.arange(-ny // 2, ny - ny // 2) + 0.5)
    x, y = (ix * float(pitch[0])).ravel(), (iy * float(pitch[1])).ravel()
    if n > x.size:
        raise ValueError(f"a {nx} x {ny} grid holds {x.size} sensors, not {n}")
    order = np.lexsort((np.abs(x), np.hypot(x, y)))[:n]
    x, y = x[order], y[order]
    rows = np.lexsort((x, -y))  # top row first, left to right
    return x[rows], y[rows]


def vignetting(r_deg, start: float = 2.0, edge: float = FIELD_RADIUS_DEG, at_edge: float = 0.5):
    """Relative illumination at ``r_deg`` degrees from the field centre: 1 inside ``start``
    degrees, ``at_edge`` at the field's edge ``edge`` (and never below 0.4)."""
    t = np.clip((np.asarray(r_deg, np.float64) - start) / (edge - start), 0.0, None)
    return np.clip(1.0 - (1.0 - at_edge) * t**1.5, 0.4, 1.0)


def make_sensors(instrument_seed: int = 84, instrument: str | dict = "high") -> SensorArray:
    """Draw the camera's sensors.

    Parameters
    ----------
    instrument_seed
        Seed of the sensor properties (kept apart from the data seed so that train and test
        sets, and datasets of every scale, share one camera).
    instrument
        The ``simulation.instrument`` parameters (keys left out take the Tomo-e values of
        :data:`TOMOE`), or just a Tomo-e gain mode (``high``, ``mid`` or ``low``), which sets
        the nominal inverse gain, read noise and well.
    """
    inst = dict(TOMOE, **({"gain_mode": instrument} if isinstance(instrument, str) else dict(instrument)))
    gain_mode = inst["gain_mode"]
    if gain_mode not in GAIN_MODES:
        raise ValueError(f"gain_mode {gain_mode!r} is not one of {sorted(GAIN_MODES)}")
    g0, rn0, well0 = (inst[k] if inst[k] is not None else GAIN_MODES[gain_mode][i]
                      for i, k in enumerate(("inv_gain", "read_noise", "full_well")))
    rng = np.random.default_rng(np.random.SeedSequence(instrument_seed))
    n = int(inst["n_sensors"])
    x, y = _layout(n, inst["grid"], inst["pitch_deg"])
    radius = float(inst["field_radius_deg"])
    r = np.hypot(x, y) / radius
    lognorm = lambda s: np.exp(rng.normal(0.0, s, n))  # noqa: E731 - one-line helper
    hot = lognorm(0.6)
    glow = lognorm(0.8)
    defect = lognorm(0.7)
    crosstalk = lognorm(0.5)
    # A few sensors are clearly worse than the rest, as on any real mosaic.
    worst = rng.choice(n, size=6, replace=False)
    hot[worst[:2]] *= 4.0
    glow[worst[2:4]] *= 5.0
    defect[worst[4:]] *= 5.0
    o_centre, o_edge, o_scatter = (float(v) for v in inst["optics_fwhm"])
    optics = o_centre + o_edge * r**2 + np.abs(rng.normal(0.0, o_scatter, n))
    return SensorArray(
        x_deg=x,
        y_deg=y,
        inv_gain=g0 * (1.0 + rng.normal(0.0, float(inst["gain_scatter"]), n)),
        read_noise=rn0 * lognorm(float(inst["read_noise_scatter"])),
        well=well0 * (1.0 + rng.normal(0.0, 0.05, n)),
        throughput=np.clip(1.0 + rng.normal(0.0, 0.05, n), 0.8, 1.15),
        optics_fwhm=optics,
        optics_ellip=np.clip(0.02 + 0.12 * r**2 + np.abs(rng.normal(0.0, 0.03, n)), 0.0, 0.3),
        temp_offset=rng.normal(0.0, 1.5, n) + 1.5 * r,
        hot_density=hot,
        glow=glow,
        defect_rate=defect,
        crosstalk=crosstalk,
        bogus_rate=lognorm(0.3) * (0.7 + 0.3 * hot ** 0.5),
        shape=tuple(int(v) for v in inst["sensor_shape"]),
        pixel_scale=float(inst["pixel_scale"]),
        field_radius_deg=radius,
        vignetting_at=tuple(float(v) for v in inst["vignetting"]),
    )


#: Which sensor property tilts the weight of which bogus kind.
_KIND_TILT = {
    "hot_pixel": "hot_density",
    "warm_pixel": "hot_density",
    "rts_pixel": "hot_density",
    "amp_glow": "glow",
    "column_defect": "defect_rate",
    "row_defect": "defect_rate",
    "crosstalk_ghost": "crosstalk",
}


#: Bogus kinds registered before those modelled on real alerts. Later kinds enter the per-sensor
#: draws only when some weight is given to them, so mixes without them are drawn exactly as before.
FIRST_KINDS = sum(KIND_CODES[k] < FIRST_ALERT_KIND for k in TRAIN_BOGUS_KINDS)
#: Subtraction residuals: more frequent on sensors with a worse PSF.
_PSF_TILTED = ("psf_mismatch_ring", "dipole_residual", "galaxy_core_residual", "bright_star_residual",
               "star_core_residual")


def bogus_mix(sensors: SensorArray, weights: dict, concentration: float, seed: int) -> np.ndarray:
    """Per-sensor probabilities of each bogus kind, shape (n_sensors, len(TRAIN_BOGUS_KINDS)).

    Parameters
    ----------
    sensors
        The camera.
    weights
        Global relative weight of each kind (name -> weight; missing kinds get 0).
    concentration
        Dirichlet concentration of the per-sensor scatter (smaller = sensors differ more).
    seed
        Seed of the scatter (use the instrument seed plus a split offset).
    """
    every = np.array([float(weights.get(k, 0.0)) for k in TRAIN_BOGUS_KINDS])
    if every.sum() <= 0:
        raise ValueError("bogus kind weights sum to zero")
    active = np.flatnonzero((np.arange(every.size) < FIRST_KINDS) | (every > 0))
    kinds = [TRAIN_BOGUS_KINDS[j] for j in active]
    base = every[active]
    tilt = np.ones((sensors.n, base.size))
    psf_quality = sensors.optics_fwhm / np.median(sensors.optics_fwhm)
    for j, kind in enumerate(kinds):
        if kind in _KIND_TILT:
            tilt[:, j] = getattr(sensors, _KIND_TILT[kind])
        elif kind in _PSF_TILTED:
            tilt[:, j] = psf_quality**2
    w = base[None, :] * tilt
    w /= w.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    alpha = np.maximum(w * concentration, 1e-3)
    mix = np.array([rng.dirichlet(a) for a in alpha])
    mix[:, base == 0] = 0.0
    out = np.zeros((sensors.n, every.size))
    out[:, active] = mix / mix.sum(axis=1, keepdims=True)
    return out
