"""Tests of the camera presets (conf/instrument/): Tomo-e byte identity, the ZTF camera, and the
kinds and effects modelled on real alerts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from realbogus.data import kinds as K
from realbogus.errors import ConfigError
from realbogus.simulation import DEFAULTS, generate_kind, instrument_preset, resolve_config, simulate_split
from realbogus.simulation import scenes
from realbogus.simulation.generator import camera, fill_added_keys, fingerprint, generate_chunk

REPO = Path(__file__).resolve().parents[1]
QUIET = {"star_density": 0.0, "galaxy_density": 0.0, "clutter_cosmic_ray": 0.0, "clutter_hot_pixel": 0.0}
SMALL = {"train": {"n_real": 60, "n_bogus": 200}, "test": {"n_real": 40, "n_bogus": 200}, "chunk_rows": 128}

#: Written before the presets existed (numpy 2.4.6, x86-64 with AVX-512): SHA-256 of the files
#: ``simulate_split`` wrote for SMALL with ``workers=1, config_text="pinned"``, 16-digit SHA-256
#: of every dataset in them, and the fingerprints of the smoke and quick data.
PINNED_NUMPY = "2.4.6"
PINNED_FILES = {
    "train": "0a84be6d7bf7c9e74bebf908e1248008037d585c45177c5b2404bdbde7dfc125",
    "test": "c08ec5fb06c202ceaf77a45e3e287ca7453fb69b2d121941f7121f6dd9bfae10",
}
PINNED_ARRAYS = {
    "train": {"images": "ba3321df6624e8e3", "kind": "164f68496096ac66", "label": "5e4d54db16d8bd42",
              "true_label": "1f15fe49057d5d84", "sensor_id": "94dcd94fde13d758", "mag": "326ad51e79186e4d",
              "snr": "29b20e21fd450db8", "x": "b743874bda72fde8", "y": "d5e74fb11e7d8db8",
              "fwhm_new": "ec35c123a7ed7dc6", "fwhm_ref": "b7044decd09f5fa2", "limit_mag": "575970a049b8da8f",
              "host_offset": "facaa3bc7493b8c9"},
    "test": {"images": "dbe087c4e0d30cee", "kind": "69ad917da2c45a97", "label": "fa3dda894929d829",
             "true_label": "fa3dda894929d829", "sensor_id": "cda3c70895957c10", "mag": "5a83b6ac3b9a1176",
             "snr": "d9e8b174aa8edf80", "x": "a22489597f97c062", "y": "528cd6c750b1246f",
             "fwhm_new": "7bce1ef5a8a24a91", "fwhm_ref": "1882013471ddc102", "limit_mag": "07a1b7a502d17cc4",
             "host_offset": "ab17f6b0198ff800"},
}
PINNED_FINGERPRINTS = {
    "small": {"train": "104ee2b88da9d2d4", "test": "d7c8baafdb4a1e46"},
    "smoke": {"train": "cb11b51429551fe2", "test": "0a565f545eab2b2d"},
    "quick": {"train": "ef6638ae4c48fa5f", "test": "8e95866bfa1f88c1"},
}


def _compose(overrides, config_name: str = "simulate"):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    return OmegaConf.to_container(cfg.data.simulation, resolve=True)


def test_every_command_composes_a_camera():
    """The data configs bring the camera: simulate and train both compose it, and switch it."""
    for name in ("simulate", "train"):
        assert _compose(["data=smoke"], name)["instrument"]["name"] == "tomoe"
        assert _compose(["data=paper"], name)["instrument"]["name"] == "tomoe"
        assert _compose(["data=smoke", "instrument@data.simulation=ztf"], name)["instrument"]["name"] == "ztf"
        assert _compose(["data=ztf"], name)["instrument"]["name"] == "ztf"
    # A preset file holds the same parameters the composed config does.
    assert resolve_config(instrument_preset("ztf")) == resolve_config(_compose(["data=ztf"]))


def _array_hashes(path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: hashlib.sha256(np.ascontiguousarray(f[k][()]).tobytes()).hexdigest()[:16] for k in f}


def _pinned_or_skip(ok: bool, what: str) -> None:
    if not ok and np.__version__ != PINNED_NUMPY:
        pytest.skip(f"{what} pinned with numpy {PINNED_NUMPY}, this is {np.__version__}")
    assert ok, what


# ----------------------------------------------------------------- Tomo-e: the same bytes as before
def test_tomoe_preset_reproduces_the_files_of_before(tmp_path):
    """instrument=tomoe (the default, composed by Hydra) writes the same files, byte for byte."""
    sim = _compose(["data=smoke"])
    assert sim["instrument"]["name"] == "tomoe"
    cfg = resolve_config({**sim, **SMALL})
    assert cfg == resolve_config(SMALL)  # the preset is the simulator's defaults
    for split in ("train", "test"):
        path = tmp_path / f"{split}.h5"
        simulate_split(cfg, split, path, workers=1, config_text="pinned")
        assert fingerprint(cfg, split) == PINNED_FINGERPRINTS["small"][split]
        arrays = _array_hashes(path)
        _pinned_or_skip(arrays == PINNED_ARRAYS[split], f"{split} arrays")
        _pinned_or_skip(hashlib.sha256(path.read_bytes()).hexdigest() == PINNED_FILES[split], f"{split} file")


def test_fingerprints_of_existing_datasets_are_kept():
    """Files simulated before the presets existed are still reused (same fingerprint)."""
    smoke, quick = resolve_config(_compose(["data=smoke"])), resolve_config(_compose([]))
    for split in ("train", "test"):
        assert fingerprint(smoke, split) == PINNED_FINGERPRINTS["smoke"][split]
        assert fingerprint(quick, split) == PINNED_FINGERPRINTS["quick"][split]
    # Any camera key changed from the Tomo-e value changes the data, hence the fingerprint.
    other = resolve_config({"instrument": {"read_noise_scatter": 0.2}})
    assert fingerprint(other, "train") != fingerprint(quick, "train")


def test_saved_configs_without_the_new_keys_still_match():
    """A run config saved before the presets (no new keys) is completed to today's default."""
    old = json.loads(json.dumps(DEFAULTS))
    for key in ("name", "detector", "pixel_scale", "n_sensors", "spikes", "masked_fraction"):
        del old["instrument"][key]
    del old["conditions"]["bad_seeing_range"]
    del old["bogus"]["snr_slope"]["bright_star_residual"]
    for key in ("variable_fraction", "variable_mix", "variable_contrast"):
        del old["reals"][key]
    assert fill_added_keys(old) == DEFAULTS


# ----------------------------------------------------------------- the ZTF camera
@pytest.fixture(scope="module")
def ztf() -> dict:
    return resolve_config({**_compose(["data=smoke", "instrument@data.simulation=ztf"]), **SMALL})


def test_ztf_preset_holds_the_published_facts(ztf):
    inst = ztf["instrument"]
    assert inst["name"] == "ztf" and inst["detector"] == "ccd"
    assert inst["pixel_scale"] == 1.01 and inst["n_sensors"] == 64 and inst["sensor_shape"] == [3072, 3080]
    assert inst["exposures"] == [30.0, 30.0] and ztf["conditions"]["ref_depth"] == [15.0, 40.0]
    assert inst["read_noise"] == 10.0
    assert _compose(["data=ztf"])["instrument"] == inst  # data=ztf: the same camera
    sensors = camera(ztf)
    assert sensors.n == 64 and sensors.shape == (3072, 3080)
    # 64 quadrants of 0.86 deg (1.01" x 3072) with small gaps: the mosaic spans 7-7.5 degrees.
    assert 6.9 < sensors.x_deg.max() - sensors.x_deg.min() + 0.86 < 7.5
    assert np.median(sensors.read_noise) == pytest.approx(10.0, rel=0.05)
    for mix in ("train_mix", "test_mix"):
        assert not {"rts_pixel", "amp_glow"} & {k for k, v in ztf["bogus"][mix].items() if v > 0}


def test_ztf_images_have_the_published_seeing_and_depth(ztf):
    out = generate_kind("rand_artificial_real", 600, cfg=dict(ztf, background=QUIET))
    assert 1.8 < np.median(out["fwhm_new"]) < 2.2  # arcsec, median delivered image quality ~2.0"
    assert 20.2 < np.median(out["limit_mag"]) < 20.8  # 5-sigma depth r ~ 20.5 in 30 s
    assert out["sensor_id"].max() < 64
    # Dark current is negligible: the sky level in electrons follows the sky alone.
    assert np.all(scenes.dark_rate(np.array([280.0, 300.0]), ztf["instrument"]["dark_current"]) == 0)


def test_ztf_chunks_and_files(ztf, tmp_path):
    chunk = generate_chunk(ztf, "train", 0)
    names = {K.KIND_NAMES[k] for k in np.unique(chunk["kind"])}
    assert not names & {"rts_pixel", "amp_glow", "genuine_variable"}
    assert "bright_star_residual" in names
    variables = np.isin(chunk["kind"], [K.kind_code(k) for k in K.VARIABLE_KINDS])
    assert variables.any() and (chunk["label"][variables] == 1).all() and (chunk["true_label"][variables] == 1).all()
    simulate_split(ztf, "test", tmp_path / "test.h5", workers=1)
    with h5py.File(tmp_path / "test.h5", "r") as f:
        assert f.attrs["pixel_scale_arcsec"] == 1.01
        names = list(f.attrs["kind_names"])
        kinds = f["kind"][()]
        fading = f["fading"][()]
    assert names == list(K.KIND_NAMES) and kinds.max() < len(names)
    assert {K.kind_code("variable_star"), K.kind_code("bright_star_residual")} & set(kinds.tolist())
    # Fadings are drawn only for the kinds that change (or err) either way.
    either = np.isin(kinds, [K.kind_code(k) for k in (*K.VARIABLE_KINDS, "variable_star_no_change", "star_core_residual")])
    assert fading.dtype == np.int8 and fading[either].any() and not fading[~either].any()


def test_cameras_without_negative_detections_write_no_fading_column(tmp_path):
    cfg = resolve_config(SMALL)
    assert cfg["instrument"]["negative_detections"] is False
    simulate_split(cfg, "test", tmp_path / "test.h5", workers=1)
    with h5py.File(tmp_path / "test.h5", "r") as f:
        assert "fading" not in f
    with pytest.raises(ConfigError, match="negative_detections"):
        resolve_config({"instrument": {"negative_detections": "yes"}})


def _centre_excess(a):
    return a[:, 13:16, 13:16].mean(axis=(1, 2)) - np.median(a, axis=(1, 2))


@pytest.mark.parametrize("name", K.VARIABLE_KINDS)
def test_fading_variables_are_stored_as_the_survey_stores_them(name):
    """With negative detections, half the genuine changes fade: brighter in the reference, and the
    stored difference negated (reference minus new), so the candidate is positive either way."""
    cfg = instrument_preset("ztf")
    out = generate_kind(name, 400, cfg=dict(cfg, background=QUIET), seed=6)
    fade = out["fading"] == 1
    assert 0.4 < fade.mean() < 0.6
    new, ref, diff = (_centre_excess(out["images"][..., i]) for i in range(3))
    assert np.median((new - ref)[fade]) < 0 < np.median((new - ref)[~fade])
    assert np.median(diff[fade]) > 0 and np.median(diff[~fade]) > 0
    assert np.median(out["snr"][fade]) > 5 and np.median(out["snr"][~fade]) > 5


def test_star_core_residual_sits_on_the_core_of_a_bright_star_either_sign():
    out, ref, dist = _star_of("star_core_residual", 400, seed=7)
    assert np.median(dist) <= 1.0  # the star is at the detection
    assert np.median(ref.max(axis=(1, 2))) > 20 * np.median(np.abs(ref))  # and bright
    fade = out["fading"] == 1
    assert 0.35 < fade.mean() < 0.65  # the errors go either way
    # The residual is a small fraction of the star: the two images agree to a few per cent.
    new = out["images"][..., 0] - np.median(out["images"][..., 0], axis=(1, 2), keepdims=True)
    assert np.median(np.abs(new.sum(axis=(1, 2)) / ref.sum(axis=(1, 2)) - 1)) < 0.2
    assert np.median(_centre_excess(out["images"][..., 2])) > 0  # stored positive, as detected
    assert np.median(out["snr"]) > 5 and (out["true_label"] == 0).all()
    # On the Tomo-e camera (positive detections only) none fade, and no column is written.
    tomoe = generate_kind("star_core_residual", 100, cfg={"background": QUIET}, seed=7)
    assert "fading" not in tomoe and np.median(tomoe["snr"]) > 5


def test_cmos_only_kinds_are_refused_on_a_ccd_camera():
    ztf = instrument_preset("ztf")
    ztf["bogus"]["train_mix"]["amp_glow"] = 0.05
    with pytest.raises(ConfigError, match="amp_glow"):
        resolve_config(ztf)
    with pytest.raises(ConfigError, match="detector"):
        resolve_config({"instrument": {"detector": "film"}})
    with pytest.raises(ConfigError, match="n_sensors"):
        resolve_config({"instrument": {"n_sensors": 500}})
    with pytest.raises(ConfigError, match="preset"):
        instrument_preset("hubble")


# ----------------------------------------------------------------- effects and kinds
def test_bleed_spills_the_excess_charge_along_the_column():
    img = np.zeros((2, 29, 29), np.float32)
    sat = np.array([100.0, 100.0], np.float32)[:, None, None]
    img[0, 13:16, 10] = 350.0  # three pixels, 750 e- over the well: 4 pixels each way
    img[1, 14, 3] = 90.0       # below the well: untouched
    before = img.copy()
    scenes.bleed(img, sat)
    run = np.flatnonzero(img[0, :, 10] >= 100.0)
    assert run.min() == 13 - 4 and run.max() == 15 + 4 and run.size == 3 + 8
    np.testing.assert_array_equal(np.delete(img[0], 10, axis=1), np.delete(before[0], 10, axis=1))
    np.testing.assert_array_equal(img[1], before[1])


def test_masked_regions_lie_beside_the_detection():
    cfg = instrument_preset("ztf")
    cfg["instrument"]["masked_fraction"] = 1.0
    out = generate_kind("rand_artificial_real", 200, cfg=dict(cfg, background=QUIET), seed=1)
    im = out["images"]
    zero = (im == 0).all(axis=-1)  # masked in every channel
    assert zero.any(axis=(1, 2)).mean() > 0.9
    assert not zero[:, 12:17, 12:17].any()  # the mask's edge is at least 3 pixels from the candidate
    # Unmasked stamps of the same draw keep the candidate: its S/N is untouched by the mask.
    assert np.median(out["snr"]) > 20


def _star_of(kind: str, n: int, seed: int):
    """ZTF stamps of ``kind`` on an empty field, their background-subtracted references, and the
    distance (pixels) from the detection to the reference's brightest pixel."""
    out = generate_kind(kind, n, cfg=dict(instrument_preset("ztf"), background=QUIET), seed=seed)
    ref = out["images"][..., 1]
    ref = ref - np.median(ref, axis=(1, 2), keepdims=True)
    iy, ix = np.unravel_index(ref.reshape(len(ref), -1).argmax(axis=1), (29, 29))
    return out, ref, np.hypot(ix - 14, iy - 14)


def test_bright_star_residual_sits_beside_a_bright_star():
    out, ref, dist = _star_of("bright_star_residual", 300, seed=2)
    assert np.median(dist) > 2.0  # the star is not at the detection
    assert np.median(ref.max(axis=(1, 2))) > 20 * np.median(np.abs(ref))  # and it is bright
    assert np.median(out["snr"]) > 5.0
    # Some are saturated and, on the CCD, bleed: their flat tops run along a column.
    new = out["images"][..., 0]
    top = new == new.max(axis=(1, 2), keepdims=True)
    saturated = top.sum(axis=(1, 2)) >= 3
    taller = top.any(axis=2).sum(axis=1) > top.any(axis=1).sum(axis=1)
    assert 0.03 < saturated.mean() < 0.3 and taller[saturated].mean() > 0.8
    assert out["true_label"].max() == 0


@pytest.mark.parametrize("name", K.VARIABLE_KINDS)
def test_genuine_variables_change_a_source_present_in_both_images(name):
    out = generate_kind(name, 200, cfg={"background": QUIET}, seed=3)
    new, ref, diff = (out["images"][..., i] for i in range(3))
    centre = slice(13, 16)
    excess = lambda a: a[:, centre, centre].mean(axis=(1, 2)) - np.median(a, axis=(1, 2))  # noqa: E731
    assert np.median(excess(ref)) > 0  # a star or nucleus in the reference
    assert np.median(excess(new) - excess(ref)) > 0 and np.median(out["snr"]) > 5
    assert (out["true_label"] == 1).all() and np.isfinite(out["mag"]).all()


# ----------------------------------------------------------------- noise peaks from the noise model
def _background_scene(cfg: dict, n: int, seed: int):
    sensors = camera(cfg)
    rng = np.random.default_rng(seed)
    sid = rng.integers(0, sensors.n, n)
    x, y = rng.uniform(100, sensors.shape[0] - 100, n), rng.uniform(100, sensors.shape[1] - 100, n)
    cond = scenes.draw_conditions(rng, sid, x, y, sensors, cfg["conditions"], cfg["instrument"])
    return scenes.Scene(cond), rng


@pytest.mark.parametrize("preset", ["tomoe", "ztf"])
def test_filter_noise_scale_matches_the_scatter_of_pure_background(preset):
    """The predicted scatter of the detection statistic equals the one measured on noise stamps."""
    scene, rng = _background_scene(resolve_config(instrument_preset(preset)), 3000, seed=5)
    s = scene.filter_noise_scale(np.arange(3000))
    _, snr = scene.finish(rng)
    assert 1.0 < np.median(s) < 1.1  # the reference's smoothed noise adds a few per cent
    assert abs((snr / s).std() - 1.0) < 0.04  # 3000 samples: 1.3% standard error
    assert abs(np.mean(snr / s)) < 0.06


def test_gaussian_noise_peaks_follow_the_gaussian_tail():
    cfg = resolve_config({"bogus": {"noise_peak_snr": "gaussian", "noise_excess": [0.0, 3.0]}})
    out = generate_kind("noise_peak", 2000, cfg=dict(cfg, background=QUIET), seed=4)
    snr = out["snr"].astype(np.float64)
    assert snr.min() > 4.99
    # Above a threshold of 5, a Gaussian tail of scale s (1 to 1.1 here) puts 35-42% of the
    # crossings beyond 5.2 and 7-10% beyond 5.5; the Pareto law of index 8 puts 73% and 47% there.
    from scipy.stats import norm

    for level in (5.2, 5.5):
        lo = norm.sf(level) / norm.sf(5.0)
        hi = norm.sf(level / 1.1) / norm.sf(5.0 / 1.1)
        frac = (snr > level).mean()
        err = 3 * np.sqrt(hi * (1 - hi) / snr.size)
        assert lo - err < frac < hi + err, (level, frac, lo, hi)
    # The excess: a given share has the heavy Pareto tail instead.
    heavy = resolve_config({"bogus": {"noise_peak_snr": "gaussian", "noise_excess": [0.5, 1.0]}})
    out = generate_kind("noise_peak", 2000, cfg=dict(heavy, background=QUIET), seed=4)
    assert 0.3 < (out["snr"] > 7.0).mean() < 0.45  # half the peaks, (5/7)^1 of them beyond 7
    with pytest.raises(ConfigError, match="noise_peak_snr"):
        resolve_config({"bogus": {"noise_peak_snr": "poisson"}})


def _residuals(kind: str, n: int, seed: int, **bogus):
    cfg = instrument_preset("ztf")
    cfg["bogus"].update(bogus)
    return generate_kind(kind, n, cfg=dict(cfg, background=QUIET), seed=seed)


@pytest.mark.parametrize("kind", ["bright_star_residual", "star_core_residual"])
def test_selected_star_residuals_are_detections_whose_snr_grows_with_the_star(kind):
    """``star_residual_snr: selected`` (the ZTF preset's): the errors keep their drawn size, so the
    residual is a fixed small fraction of its star and bright core residuals sit on bright stars;
    every stored candidate is a positive detection (errors scaled to a drawn S/N could not always
    reach it: the older ``scaled`` law left a quarter of the core residuals negative as stored)."""
    out = _residuals(kind, 600, seed=11)
    assert instrument_preset("ztf")["bogus"]["star_residual_snr"] == "selected"
    assert np.mean(out["snr"] > 3.0) > 0.95  # detected, and positive as stored (fadings negated)
    if kind == "star_core_residual":
        ref = out["images"][..., 1]
        ref_flux = (ref - np.median(ref, axis=(1, 2), keepdims=True))[:, 4:25, 4:25].sum(axis=(1, 2))
        rho = np.corrcoef(np.argsort(np.argsort(ref_flux)), np.argsort(np.argsort(out["snr"])))[0, 1]
        assert rho > 0.3, rho  # Spearman correlation of the star's flux and the residual's S/N
        diff = out["images"][..., 2]
        core = np.abs(diff[:, 11:18, 11:18].sum(axis=(1, 2)) - 49 * np.median(diff, axis=(1, 2)))
        assert np.median(core / ref_flux) < 0.05  # a few per cent of the star, as its errors are
        assert 0.3 < out["fading"].mean() < 0.7  # the errors go either way


def test_selected_star_residual_snr_follows_the_star_counts():
    """Known answer: a residual detected above S/N 5 on stars counted as N(> F) ~ F^-alpha has
    P(S/N > 20) = (5 / 20)^alpha below the brightest stars' cut: 0.06 for alpha 2, 0.5 for 0.5."""
    steep = _residuals("star_core_residual", 800, seed=12, star_counts_slope=2.0)["snr"]
    flat = _residuals("star_core_residual", 800, seed=12, star_counts_slope=0.5)["snr"]
    assert np.mean(steep > 20) < 0.15
    assert 0.25 < np.mean(flat > 20) < 0.6
    with pytest.raises(ConfigError, match="star_residual_snr"):
        resolve_config({"bogus": {"star_residual_snr": "pareto"}})
    with pytest.raises(ConfigError, match="star_counts_slope"):
        resolve_config({"bogus": {"star_counts_slope": 0}})
    with pytest.raises(ConfigError, match="wrong type.*'steep'"):  # one line, not a traceback
        resolve_config({"bogus": {"star_counts_slope": "steep"}})
