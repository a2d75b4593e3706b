"""The 84 CMOS sensors of a Tomo-e-like camera and what makes each one different.

The sensors tile a circular field about 9 degrees across (20.8 deg^2 of silicon: the sensors
cover about a third of the circle, with gaps between them). Each sensor gets, from a fixed
instrument seed, its own:

- position in the field (degrees from the centre), which sets the optical PSF contribution
  (growing toward the edge, elongated along the radius) and the vignetting (none within 2 degrees,
  falling to about half at the edge);
- inverse gain (e-/ADU) and read noise (e- per frame), scattered around the published values of
  the chosen gain mode;
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

from realbogus.data.kinds import TRAIN_BOGUS_KINDS

__all__ = [
    "N_SENSORS",
    "SENSOR_SHAPE",
    "GAIN_MODES",
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
_SENSOR_DEG = (SENSOR_SHAPE[0] * PIXEL_SCALE / 3600.0, SENSOR_SHAPE[1] * PIXEL_SCALE / 3600.0)
FIELD_RADIUS_DEG = 4.5


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

    @property
    def n(self) -> int:
        return int(self.x_deg.shape[0])

    def field_position(self, sensor_id, x_pix, y_pix):
        """Field coordinates (degrees) of pixel ``(x_pix, y_pix)`` on sensor ``sensor_id``."""
        sx = self.x_deg[sensor_id] + (np.asarray(x_pix) / SENSOR_SHAPE[0] - 0.5) * _SENSOR_DEG[0]
        sy = self.y_deg[sensor_id] + (np.asarray(y_pix) / SENSOR_SHAPE[1] - 0.5) * _SENSOR_DEG[1]
        return sx, sy


def _layout() -> tuple[np.ndarray, np.ndarray]:
    """Sensor centres: the 84 grid cells closest to the field centre, ordered row by row."""
    pitch_x, pitch_y = 1.0, 0.75  # degrees; leaves gaps so 84 sensors span a ~9-degree circle
    ix, iy = np.meshgrid(np.arange(-6, 6) + 0.5, np.arange(-8, 8) + 0.5)
    x, y = (ix * pitch_x).ravel(), (iy * pitch_y).ravel()
    order = np.lexsort((np.abs(x), np.hypot(x, y)))[:N_SENSORS]
    x, y = x[order], y[order]
    rows = np.lexsort((x, -y))  # top row first, left to right
    return x[rows], y[rows]


def vignetting(r_deg):
    """Relative illumination at ``r_deg`` degrees from the field centre (1 inside 2 degrees)."""
    t = np.clip((np.asarray(r_deg, np.float64) - 2.0) / (FIELD_RADIUS_DEG - 2.0), 0.0, None)
    return np.clip(1.0 - 0.5 * t**1.5, 0.4, 1.0)


def make_sensors(instrument_seed: int = 84, gain_mode: str = "high") -> SensorArray:
    """Draw the camera's 84 sensors.

    Parameters
    ----------
    instrument_seed
        Seed of the sensor properties (kept apart from the data seed so that train and test
        sets, and datasets of every scale, share one camera).
    gain_mode
        ``high``, ``mid`` or ``low``: sets the nominal inverse gain, read noise and well.
    """
    if gain_mode not in GAIN_MODES:
        raise ValueError(f"gain_mode {gain_mode!r} is not one of {sorted(GAIN_MODES)}")
    g0, rn0, well0 = GAIN_MODES[gain_mode]
    rng = np.random.default_rng(np.random.SeedSequence(instrument_seed))
    x, y = _layout()
    n = N_SENSORS
    r = np.hypot(x, y) / FIELD_RADIUS_DEG
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
    optics = 0.8 + 1.0 * r**2 + np.abs(rng.normal(0.0, 0.4, n))
    return SensorArray(
        x_deg=x,
        y_deg=y,
        inv_gain=g0 * (1.0 + rng.normal(0.0, 0.04, n)),
        read_noise=rn0 * lognorm(0.15),
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


def bogus_mix(sensors: SensorArray, weights: dict, concentration: float, seed: int) -> np.ndarray:
    """Per-sensor probabilities of each bogus kind, shape (84, len(TRAIN_BOGUS_KINDS)).

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
    base = np.array([float(weights.get(k, 0.0)) for k in TRAIN_BOGUS_KINDS])
    if base.sum() <= 0:
        raise ValueError("bogus kind weights sum to zero")
    tilt = np.ones((sensors.n, base.size))
    psf_quality = sensors.optics_fwhm / np.median(sensors.optics_fwhm)
    for j, kind in enumerate(TRAIN_BOGUS_KINDS):
        if kind in _KIND_TILT:
            tilt[:, j] = getattr(sensors, _KIND_TILT[kind])
        elif kind in ("psf_mismatch_ring", "dipole_residual", "galaxy_core_residual"):
            tilt[:, j] = psf_quality**2
    w = base[None, :] * tilt
    w /= w.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    alpha = np.maximum(w * concentration, 1e-3)
    mix = np.array([rng.dirichlet(a) for a in alpha])
    mix[:, base == 0] = 0.0
    return mix / mix.sum(axis=1, keepdims=True)
