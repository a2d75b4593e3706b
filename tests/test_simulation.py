"""Tests of the simulator: shapes, physics, label errors, determinism, files and commands."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from realbogus.data import kinds as K
from realbogus.data.format import open_dataset, read_dataset
from realbogus.errors import ConfigError, DataError
from realbogus.simulation import DEFAULTS, ensure_dataset, generate_kind, resolve_config, simulate_split
from realbogus.simulation import psf, scenes
from realbogus.simulation.generator import EXTRA_FIELDS, chunk_plan, generate_chunk
from realbogus.simulation.sensors import N_SENSORS, make_sensors

SMOKE = {"train": {"n_real": 1128, "n_bogus": 1872}, "test": {"n_real": 150, "n_bogus": 3000}}
QUIET = {"star_density": 0.0, "galaxy_density": 0.0, "clutter_cosmic_ray": 0.0, "clutter_hot_pixel": 0.0}
#: Kinds with an injected or astrophysical source, hence a magnitude.
SOURCE_KINDS = set(K.REAL_KINDS) | set(K.FAILED_INJECTION_KINDS)


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("smoke")
    ensure_dataset({"dir": str(folder), "source": "simulate", "simulation": dict(SMOKE, workers=1)},
                   log=None, progress=False)
    return folder


@pytest.fixture(scope="module")
def smoke_train(smoke_dir) -> dict:
    return read_dataset(smoke_dir / "train.h5")


@pytest.fixture(scope="module")
def smoke_test(smoke_dir) -> dict:
    return read_dataset(smoke_dir / "test.h5")


# ----------------------------------------------------------------- PSF and sensors
def test_moffat_matches_astropy_and_conserves_flux():
    from astropy.modeling.models import Moffat2D

    x0, y0, flux, fwhm, beta = np.array([14.3]), np.array([13.6]), 1000.0, 3.1, 3.2
    ours = psf.moffat(x0, y0, flux, fwhm, beta)[0]
    alpha = float(psf.moffat_alpha(fwhm, beta))
    yy, xx = np.mgrid[:29, :29]
    model = Moffat2D(amplitude=flux * (beta - 1) / (np.pi * alpha**2), x_0=14.3, y_0=13.6, gamma=alpha, alpha=beta)
    np.testing.assert_allclose(ours, model(xx, yy), rtol=2e-5, atol=1e-6)
    assert np.isclose(psf.moffat_fwhm(alpha, beta), fwhm)
    big = psf.moffat(np.array([100.0]), np.array([100.0]), flux, fwhm, beta, size=201)[0]
    assert abs(big.sum() / flux - 1) < 0.01
    # An elongated PSF keeps its flux and its peak stays at the sub-pixel centre.
    ell = psf.moffat(np.array([100.3]), np.array([99.8]), flux, fwhm, beta, 0.6, 0.4, size=201)[0]
    assert abs(ell.sum() / flux - 1) < 0.01
    assert np.unravel_index(ell.argmax(), ell.shape) == (100, 100)


def test_sensors_differ():
    s = make_sensors()
    assert s.n == N_SENSORS
    r = np.hypot(s.x_deg, s.y_deg)
    assert 3.8 < r.max() < 4.6  # the sensors span a ~9-degree field
    for field in ("inv_gain", "read_noise", "optics_fwhm", "hot_density", "glow", "temp_offset"):
        values = getattr(s, field)
        assert np.std(values) > 0.02 * np.abs(np.mean(values)), field
    assert np.array_equal(make_sensors().read_noise, s.read_noise)  # fixed by the instrument seed


def test_per_sensor_variation_in_stamps():
    s = make_sensors()
    centre, worst = int(np.argmin(np.hypot(s.x_deg, s.y_deg))), int(np.argmax(s.optics_fwhm))
    cfg = {"background": QUIET}
    a = generate_kind("noise_peak", 200, cfg=cfg, sensor_id=centre)
    b = generate_kind("noise_peak", 200, cfg=cfg, sensor_id=worst)
    assert np.median(b["fwhm_new"]) > np.median(a["fwhm_new"]) + 0.3  # arcsec: worse optics
    sky_a, sky_b = np.median(a["images"][..., 0]), np.median(b["images"][..., 0])
    assert abs(sky_a / sky_b - 1) > 0.1  # vignetting and dark current differ
    noise_a = np.median(np.std(a["images"][..., 2], axis=(1, 2)))
    noise_b = np.median(np.std(b["images"][..., 2], axis=(1, 2)))
    assert abs(noise_a / noise_b - 1) > 0.05
    assert np.all(a["sensor_id"] == centre)


# ----------------------------------------------------------------- scenes and kinds
def _conditions(n=64, seed=0):
    cfg = resolve_config()
    rng = np.random.default_rng(seed)
    sensors = make_sensors()
    sid = rng.integers(0, N_SENSORS, n)
    x, y = rng.uniform(100, 1800, n), rng.uniform(100, 1000, n)
    return scenes.draw_conditions(rng, sid, x, y, sensors, cfg["conditions"], cfg["instrument"])


def test_subtraction_cancels_static_sources_and_keeps_the_transient():
    cond = _conditions()
    cond.match_dx[:] = 0.0
    cond.match_dy[:] = 0.0
    cond.match_scale[:] = 1.0
    cond.match_width[:] = 1.0
    scene = scenes.Scene(cond)
    rows = np.arange(cond.n)
    flux = scenes.mag_to_flux(16.0, cond.flux_zp)
    scene.add_star(rows, np.full(cond.n, 8.2), np.full(cond.n, 20.7), flux)
    scene.add_galaxy(rows, np.full(cond.n, 12.0), np.full(cond.n, 15.0), flux, 3.0, 1.5, 0.6, 0.3)
    assert np.allclose(scene.new, scene.match, atol=1e-3 * flux.max())
    before, ref_before = scene.new.copy(), scene.ref.copy()
    scene.new[rows] += scene.psf_new(rows, cond.cx, cond.cy, flux)
    residual = scene.new - scene.match
    assert np.allclose(residual, scene.new - before, atol=1e-3 * flux.max())
    assert np.array_equal(scene.ref, ref_before)  # the transient is absent from the reference
    images, snr = scene.finish(np.random.default_rng(1))
    assert images.shape == (cond.n, 29, 29, 3) and np.median(snr) > 20


@pytest.mark.parametrize("name", [k for k in K.KIND_NAMES if k != "unknown"])
def test_every_kind_renders(name):
    split = "test" if name in K.TEST_REAL_KINDS else "train"
    out = generate_kind(name, 12, seed=1, split=split)
    images = out["images"]
    assert images.shape == (12, 29, 29, 3) and images.dtype == np.float32
    assert np.isfinite(images).all()
    assert np.all(out["kind"] == K.kind_code(name))
    assert np.all(out["true_label"] == K.true_class_of_kind(K.kind_code(name)))
    assert np.isnan(out["mag"]).all() == (name not in SOURCE_KINDS)
    if name in K.TRAIN_BOGUS_KINDS and name not in ("saturated_star", "noise_peak"):
        # Bogus features are scaled to be detected at the stamp centre.
        assert np.median(out["snr"]) > 3.0, name
    if name == "noise_peak":
        # Conditioned exactly on the threshold-hugging detection S/N.
        assert np.all(out["snr"] > 4.99) and np.median(out["snr"]) < 6.0


def test_clean_reals_difference_is_new_minus_reference():
    cfg = {"background": QUIET, "reals": {"train_mag_bright": 13.0, "train_mag_faint": -3.0}}
    out = generate_kind("rand_artificial_real", 100, cfg=cfg, seed=2)
    new, ref, diff = (out["images"][..., c].astype(np.float64) for c in range(3))
    new_bg = new - np.median(new, axis=(1, 2), keepdims=True)
    ref_bg = ref - np.median(ref, axis=(1, 2), keepdims=True)
    # No field objects: the difference is the new image's source, the reference is empty.
    corr = [np.corrcoef(d.ravel(), n.ravel())[0, 1] for d, n in zip(diff, new_bg)]
    assert np.median(corr) > 0.95
    core = (slice(None), slice(11, 18), slice(11, 18))
    assert np.all(np.abs(ref_bg[core].sum(axis=(1, 2))) < 0.2 * new_bg[core].sum(axis=(1, 2)))
    np.testing.assert_allclose(diff[core].sum(axis=(1, 2)), (new_bg - ref_bg)[core].sum(axis=(1, 2)),
                               rtol=0.15)


# ----------------------------------------------------------------- generator
def test_chunk_plan_allocates_exactly():
    cfg = resolve_config({"train": {"n_real": 5000, "n_bogus": 8000}, "chunk_rows": 1000})
    plan = chunk_plan(cfg, "train")
    assert plan[:, 0].sum() == 5000 and plan[:, 1].sum() == 8000
    assert plan[:, 2].sum() == round(0.010 * 5000) and plan[:, 3].sum() == round(0.006 * 8000)
    assert np.all(plan[:, :2].sum(axis=1)[:-1] == 1000)
    assert chunk_plan(cfg, "test")[:, 2:].sum() == 0


def test_chunk_columns_and_dtypes():
    cfg = resolve_config(dict(SMOKE, chunk_rows=256))
    out = generate_chunk(cfg, "train", 0)
    n = out["images"].shape[0]
    assert out["images"].shape == (n, 29, 29, 3) and out["images"].dtype == np.float32
    expected = {"label": np.int8, "true_label": np.int8, "sensor_id": np.int16, "kind": np.int16, "mag": np.float32}
    expected.update({k: np.dtype(v) for k, v in EXTRA_FIELDS.items()})
    for name, dtype in expected.items():
        assert out[name].dtype == dtype and out[name].shape == (n,), name
    # Values are raw counts (ADU) with a sky level, not normalised.
    assert np.median(out["images"][..., 0]) > 100.0


def test_smoke_files(smoke_dir, smoke_train, smoke_test):
    for split, data in (("train", smoke_train), ("test", smoke_test)):
        labels = data["label"]
        assert (labels == 1).sum() == SMOKE[split]["n_real"]
        assert (labels == 0).sum() == SMOKE[split]["n_bogus"]
        attrs = data["attrs"]
        assert attrs["seed"] == DEFAULTS["seed"] and attrs["split"] == split and "simulation" in attrs["config"]
        assert np.isfinite(data["images"]).all()
        assert set(EXTRA_FIELDS) <= set(data)
        assert (data["sensor_id"] >= 0).all() and (data["sensor_id"] < N_SENSORS).all()
    ratio = SMOKE["train"]["n_real"] / sum(SMOKE["train"].values())
    assert abs(ratio - 0.376) < 0.01  # the paper's real:bogus ratio
    assert len(np.unique(smoke_train["sensor_id"])) == N_SENSORS


def test_label_error_rates(smoke_train, smoke_test):
    label, truth = smoke_train["label"], smoke_train["true_label"]
    hidden = ((label == 0) & (truth == 1)).sum() / (label == 0).sum()
    failed = ((label == 1) & (truth == 0)).sum() / (label == 1).sum()
    assert abs(hidden - 0.006) < 0.001 and abs(failed - 0.010) < 0.001
    kinds = smoke_train["kind"]
    assert set(kinds[(label == 0) & (truth == 1)]) <= {K.kind_code(k) for k in K.HIDDEN_REAL_KINDS}
    assert set(kinds[(label == 1) & (truth == 0)]) <= {K.kind_code(k) for k in K.FAILED_INJECTION_KINDS}
    assert np.array_equal(smoke_test["label"], smoke_test["true_label"])  # clean test labels
    # true_label is always the kind's true class.
    cls = np.array([K.true_class_of_kind(k) for k in range(len(K.KIND_NAMES))])
    assert np.array_equal(cls[kinds], truth)


def test_kinds_per_split(smoke_train, smoke_test):
    train = {K.KIND_NAMES[k] for k in np.unique(smoke_train["kind"])}
    test = {K.KIND_NAMES[k] for k in np.unique(smoke_test["kind"])}
    # Injections onto stars are off by default (reals.star_fraction: 0), and the Tomo-e preset
    # has none of the kinds modelled on ZTF alerts (registered later).
    later = {name for name in K.KIND_NAMES if K.kind_code(name) >= K.FIRST_ALERT_KIND}
    assert (set(K.TRAIN_REAL_KINDS) - {"star_artificial_real"}) | (set(K.TRAIN_BOGUS_KINDS) - later) <= train
    assert "star_artificial_real" not in train and not train & later
    assert train & set(K.HIDDEN_REAL_KINDS) and train & set(K.FAILED_INJECTION_KINDS)
    assert set(K.TEST_REAL_KINDS) | (set(K.TRAIN_BOGUS_KINDS) - later) == test
    # Half the training injections are near a host galaxy.
    real = smoke_train["kind"][smoke_train["label"] == 1]
    galx = (real == K.kind_code("galx_artificial_real")).sum() / len(real)
    assert 0.4 < galx < 0.6


def test_mag_nan_iff_no_source(smoke_train, smoke_test):
    for data in (smoke_train, smoke_test):
        has_source = np.isin(data["kind"], [K.kind_code(k) for k in SOURCE_KINDS])
        assert np.array_equal(np.isfinite(data["mag"]), has_source)
        host = np.isfinite(data["host_offset"])
        assert not host[data["kind"] == K.kind_code("rand_artificial_real")].any()
    galx = smoke_train["kind"] == K.kind_code("galx_artificial_real")
    assert np.isfinite(smoke_train["host_offset"][galx]).all()
    # Injections span the detection limit.
    rel = (smoke_train["mag"] - smoke_train["limit_mag"])[smoke_train["true_label"] == 1]
    rel = rel[np.isfinite(rel)]
    assert rel.min() < -3.0 and rel.max() > 0.0


def test_determinism_across_workers(tmp_path):
    cfg = {"train": {"n_real": 150, "n_bogus": 250}, "chunk_rows": 100}
    simulate_split(cfg, "train", tmp_path / "a.h5", workers=1)
    simulate_split(cfg, "train", tmp_path / "b.h5", workers=2)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "a.h5") == digest(tmp_path / "b.h5")
    simulate_split(dict(cfg, seed=7), "train", tmp_path / "c.h5", workers=1)
    with open_dataset(tmp_path / "a.h5") as a, open_dataset(tmp_path / "c.h5") as c:
        assert not np.array_equal(a.images(slice(0, 10)), c.images(slice(0, 10)))


# ----------------------------------------------------------------- configuration and files
def test_star_injections_option():
    """reals.star_fraction: off by default (same draws and fingerprint as before it existed);
    when on, that share of the injections sits on a star present in both images."""
    from realbogus.simulation.generator import fingerprint, generate_chunk

    small = {"chunk_rows": 256, "train": {"n_real": 200, "n_bogus": 56}}
    off = resolve_config(small)
    explicit = resolve_config({**small, "reals": {"star_fraction": 0.0, "star_contrast": [0.5, 0.6]}})
    assert fingerprint(off, "train") == fingerprint(explicit, "train")  # contrast unused when off
    a, b = generate_chunk(off, "train", 0), generate_chunk(explicit, "train", 0)
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["kind"], b["kind"])
    on = resolve_config({**small, "reals": {"star_fraction": 0.3}})
    assert fingerprint(on, "train") != fingerprint(off, "train")
    c = generate_chunk(on, "train", 0)
    star = c["kind"] == K.kind_code("star_artificial_real")
    genuine = (c["label"] == 1) & (c["true_label"] == 1)
    assert 0.2 < star.sum() / genuine.sum() < 0.4
    assert (c["label"][star] == 1).all() and (c["true_label"][star] == 1).all()
    # The reference holds a source at the centre for star injections, not for random ones.
    def centre_excess(images):
        ref = images[..., 1]
        return ref[:, 13:16, 13:16].mean(axis=(1, 2)) - np.median(ref, axis=(1, 2))
    rand = c["kind"] == K.kind_code("rand_artificial_real")
    assert np.median(centre_excess(c["images"][star])) > 10 * max(np.median(centre_excess(c["images"][rand])), 1.0)
    with pytest.raises(ConfigError, match="star_fraction"):
        resolve_config({"reals": {"star_fraction": 1.5}})
    with pytest.raises(ConfigError, match="star_contrast"):
        resolve_config({"reals": {"star_fraction": 0.1, "star_contrast": [2.0, 1.0]}})


def test_resolve_config_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_config({"trian": {}})
    with pytest.raises(ConfigError, match="non-negative"):
        resolve_config({"train": {"n_real": -1}})
    with pytest.raises(ConfigError, match="hidden_real_rate"):
        resolve_config({"label_errors": {"hidden_real_rate": 0.7}})
    with pytest.raises(ConfigError, match="not among"):
        resolve_config({"bogus": {"train_mix": {"sn_in_host": 1.0}}})
    assert resolve_config({"test_conditions": {"ref_depth": [5.0, 10.0]}})["test_conditions"]["ref_depth"] == [5.0, 10.0]


def test_yaml_configs_match_defaults(repo_root):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(repo_root / "conf"), version_base="1.3"):
        quick = compose(config_name="simulate")
        smoke = compose(config_name="simulate", overrides=["data=smoke"])
        paper = compose(config_name="simulate", overrides=["data=paper"])
    assert OmegaConf.to_container(quick.data.simulation, resolve=True) == DEFAULTS
    assert smoke.data.simulation.train.n_real == 1128 and smoke.data.name == "smoke"
    sizes = OmegaConf.to_container(paper.data.simulation, resolve=True)
    assert sizes["train"] == {"n_real": 1224773, "n_bogus": 2031193}
    assert sizes["test"] == {"n_real": 363, "n_bogus": 255777}
    assert str(smoke.data.dir).endswith("smoke")


def test_ensure_dataset_reuses_and_checks(smoke_dir, capsys):
    cfg = {"dir": str(smoke_dir), "source": "simulate", "simulation": dict(SMOKE, workers=1)}
    mtime = (smoke_dir / "train.h5").stat().st_mtime_ns
    messages = []
    paths = ensure_dataset(cfg, log=messages.append, progress=False)
    assert paths == (smoke_dir / "train.h5", smoke_dir / "test.h5")
    assert (smoke_dir / "train.h5").stat().st_mtime_ns == mtime
    assert all("reusing" in m for m in messages) and len(messages) == 2
    # The number of workers does not change the data, so it does not stop reuse either.
    ensure_dataset(dict(cfg, simulation=dict(SMOKE, workers=2)), log=None, progress=False)
    with pytest.raises(DataError, match="different parameters"):
        ensure_dataset(dict(cfg, simulation=dict(SMOKE, seed=5)), log=None, progress=False)
    # A file depends on its own split's size only.
    bigger_test = dict(SMOKE, test={"n_real": 150, "n_bogus": 3001}, workers=1)
    with pytest.raises(DataError, match="test.h5"):
        ensure_dataset(dict(cfg, simulation=bigger_test), log=messages.append, progress=False)
    assert "train: reusing" in messages[-1]


def test_ensure_dataset_hdf5_missing(tmp_path):
    with pytest.raises(DataError, match="train.h5"):
        ensure_dataset({"dir": str(tmp_path), "source": "hdf5"})
    with pytest.raises(ConfigError, match="source"):
        ensure_dataset({"dir": str(tmp_path), "source": "ftp"})


def test_simulate_command(tmp_path, repo_root, capsys):
    from hydra import compose, initialize_config_dir

    from realbogus.simulate import run

    tiny = ["data=smoke", f"data.dir={tmp_path}", "progress=false", "workers=1",
            "data.simulation.train.n_real=40", "data.simulation.train.n_bogus=60",
            "data.simulation.test.n_real=5", "data.simulation.test.n_bogus=50"]
    with initialize_config_dir(config_dir=str(repo_root / "conf"), version_base="1.3"):
        cfg = compose(config_name="simulate", overrides=tiny)
    results = run(cfg)
    assert results["train"]["n_rows"] == 100 and results["test"]["n_rows"] == 55
    assert "triplets/s" in capsys.readouterr().out
    again = run(cfg)
    assert again["train"]["rate"] is None
    assert "reusing" in capsys.readouterr().out


def test_gallery_without_ztf(tmp_path):
    from realbogus.plots.gallery import make_gallery

    out = make_gallery(tmp_path / "gallery.png", ztf=tmp_path / "absent.npz")
    assert out.exists() and 10_000 < out.stat().st_size < 1_500_000
    assert not list(tmp_path.glob(".*tmp*"))


def test_gallery_with_ztf(tmp_path, ztf_npz, smoke_dir):
    from realbogus.plots.gallery import make_gallery

    out = make_gallery(tmp_path / "gallery.png", data_dir=smoke_dir, ztf=ztf_npz)
    assert out.stat().st_size < 1_500_000


# ----------------------------------------------------------------- interrupted runs
#: 16-digit SHA-256 of the smoke files' datasets, as written before the camera presets existed
#: (numpy 2.4.6, x86-64 with AVX-512; the file attribute ``config`` lists the new keys).
SMOKE_IMAGES = {"train": "a6b411f414406409", "test": "7ff96a5a9b31485b"}
SMOKE_KINDS = {"train": "70d18e15eeba0cd6", "test": "560be0588c349057"}


def _simulate_cmd(folder: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "realbogus.simulate", "data=smoke", f"data.dir={folder}", "progress=false",
            "workers=2"]


def test_sigkill_leaves_no_worker_and_a_rerun_cleans_up(tmp_path, repo_root):
    """SIGKILL mid-write: the workers end with their parent, the rerun removes the temporary and
    writes the same bytes as an uninterrupted run (whose arrays are those of before the presets)."""
    import os
    import signal
    import subprocess
    import time

    psutil = pytest.importorskip("psutil")
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    folder = tmp_path / "data"
    subprocess.run(_simulate_cmd(folder), check=True, cwd=tmp_path, env=env, capture_output=True)
    clean = {split: (folder / f"{split}.h5").read_bytes() for split in ("train", "test")}
    for split in ("train", "test"):
        with open_dataset(folder / f"{split}.h5") as ds:
            ok = (hashlib.sha256(ds.images().tobytes()).hexdigest()[:16] == SMOKE_IMAGES[split]
                  and hashlib.sha256(ds.column("kind").tobytes()).hexdigest()[:16] == SMOKE_KINDS[split])
        if not ok and np.__version__ != "2.4.6":
            pytest.skip(f"smoke hashes pinned with numpy 2.4.6, this is {np.__version__}")
        assert ok, split
        (folder / f"{split}.h5").unlink()

    proc = subprocess.Popen(_simulate_cmd(folder), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    workers = []
    while time.monotonic() < deadline and proc.poll() is None:
        workers = parent.children(recursive=True)
        if workers and list(folder.glob(".train.h5.*.tmp")):
            break
        time.sleep(0.02)
    assert proc.poll() is None and workers, "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert list(folder.glob(".train.h5.*.tmp")) and not (folder / "train.h5").exists()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:  # do not leave them behind when the check fails
        p.kill()
    assert not alive, f"workers outlived their parent: {alive}"

    out = subprocess.run(_simulate_cmd(folder), check=True, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "left by an interrupted run" in out.stdout
    assert not list(folder.glob(".*.tmp"))
    for split in ("train", "test"):
        assert (folder / f"{split}.h5").read_bytes() == clean[split]


def test_stale_temporaries_of_other_outputs_and_live_writers_are_kept(tmp_path):
    import h5py

    from realbogus.simulation import remove_stale_temporaries

    stale = tmp_path / ".train.h5.abc123.tmp"
    stale.write_bytes(b"partial")
    other = tmp_path / ".test.h5.abc123.tmp"
    other.write_bytes(b"another output's")
    live = tmp_path / ".train.h5.live.tmp"
    with h5py.File(live, "w"):  # a writer holds its file
        removed = remove_stale_temporaries(tmp_path / "train.h5")
        assert live.exists()
    assert removed == [stale] and not stale.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path / "train.h5") == [live]


def test_simulate_help_describes_the_command(repo_root):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "realbogus.simulate", "--help"], cwd=repo_root,
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("python -m realbogus.simulate: simulate")
    assert out.count("python -m realbogus.simulate data=") == 3
    assert "instrument: tomoe, ztf" in out
