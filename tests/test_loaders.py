"""Readers of external stamp collections: Zenodo layout, npy/npz, FITS, HDF5, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from realbogus.data.format import write_dataset
from realbogus.data.kinds import KIND_CODES
from realbogus.data.loaders import iter_stamp_blocks, load_stamps, open_stamps
from realbogus.errors import ConfigError, DataError

OBJECT_TYPES = ["artifact", "galx_artificial_real", "rand_artificial_real"]


def make_stamps(n: int, seed: int = 0) -> np.ndarray:
    """Random stamps whose pixel (0, 0, 0) holds a unique id, so rows can be traced."""
    rng = np.random.default_rng(seed)
    x = rng.normal(100.0, 10.0, (n, 29, 29, 3)).astype(np.float32)
    x[:, 0, 0, 0] = seed * 10_000 + np.arange(n)
    return x


def store(x: np.ndarray, how: str) -> np.ndarray:
    """Arrange (N, 29, 29, 3) stamps as the published files might hold them."""
    if how == "chw":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if how == "flat":
        return x.reshape(len(x), -1)
    if how == "float64":
        return x.astype(np.float64)
    return x


def write_zenodo(folder: Path, sensors: dict[int, int], how: str = "hwc", mag: bool = True) -> dict[int, np.ndarray]:
    """Write images<id>.npy + params<id>.csv for {sensor_id: n}; return the stamps per sensor."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for sid, n in sensors.items():
        x = make_stamps(n, seed=sid + 1)
        np.save(folder / f"images{sid}.npy", store(x, how))
        lines = [",object_type,x,y" + (",mag" if mag else "")]
        for i in range(n):
            m = f",{15.0 + 0.1 * i:.1f}" if mag and i % 4 else ("," if mag else "")
            lines.append(f"{i},{OBJECT_TYPES[i % 3]},1.0,2.0{m}")
        (folder / f"params{sid}.csv").write_text("\n".join(lines) + "\n")
        out[sid] = x
    return out


# ----------------------------------------------------------------------------- Zenodo layout
@pytest.mark.parametrize("how", ["hwc", "chw", "flat", "float64"])
def test_zenodo_directory_reads_every_sensor(tmp_path, how):
    truth = write_zenodo(tmp_path / "z", {3: 7, 12: 5}, how=how)
    images, cols = load_stamps(tmp_path / "z")
    assert images.dtype == np.float32 and images.shape == (12, 29, 29, 3)
    np.testing.assert_array_equal(images, np.concatenate([truth[3], truth[12]]))
    np.testing.assert_array_equal(cols["sensor_id"], [3] * 7 + [12] * 5)
    np.testing.assert_array_equal(cols["sample_index"], list(range(7)) + list(range(5)))
    expect_label = [0, 1, 1] * 2 + [0] + [0, 1, 1, 0, 1]
    np.testing.assert_array_equal(cols["label"], expect_label)
    codes = [0, KIND_CODES["galx_artificial_real"], KIND_CODES["rand_artificial_real"]]
    np.testing.assert_array_equal(cols["kind"][:3], codes)
    assert np.isnan(cols["mag"][0]) and cols["mag"][1] == pytest.approx(15.1)
    with open_stamps(tmp_path / "z") as src:
        assert src.layout == "zenodo" and src.split == "train" and src.id_columns == ["sample_index"]


def test_zenodo_single_sensor_file_and_missing_magnitude(tmp_path):
    truth = write_zenodo(tmp_path, {5: 6}, mag=False)
    images, cols = load_stamps(tmp_path / "images5.npy")
    np.testing.assert_array_equal(images, truth[5])
    assert (cols["sensor_id"] == 5).all() and np.isnan(cols["mag"]).all()


def test_zenodo_test_pair(tmp_path):
    real, bogus = make_stamps(3, 1), make_stamps(5, 2)
    np.save(tmp_path / "real_transient_201217.npy", real)
    np.save(tmp_path / "bogus_transient_201221.npy", store(bogus, "flat"))
    images, cols = load_stamps(tmp_path)
    np.testing.assert_array_equal(images, np.concatenate([real, bogus]))
    np.testing.assert_array_equal(cols["label"], [1] * 3 + [0] * 5)
    assert (cols["kind"] == 0).all() and (cols["sensor_id"] == -1).all()


def test_zenodo_split_chooses_between_training_files_and_test_pair(tmp_path):
    write_zenodo(tmp_path, {1: 4})
    np.save(tmp_path / "real_a.npy", make_stamps(2, 5))
    np.save(tmp_path / "bogus_a.npy", make_stamps(3, 6))
    with pytest.raises(DataError, match="split=train or split=test"):
        load_stamps(tmp_path)
    assert len(load_stamps(tmp_path, split="train")[0]) == 4
    assert len(load_stamps(tmp_path, split="test")[0]) == 5
    with pytest.raises(ConfigError):
        load_stamps(tmp_path, split="validation")


# ----------------------------------------------------------------------------- npy / npz
def test_plain_npy_and_single_stamp(tmp_path):
    x = make_stamps(9)
    np.save(tmp_path / "a.npy", store(x, "chw"))
    images, cols = load_stamps(tmp_path / "a.npy")
    np.testing.assert_array_equal(images, x)
    assert cols == {}
    np.save(tmp_path / "one.npy", x[0])
    np.testing.assert_array_equal(load_stamps(tmp_path / "one.npy")[0], x[:1])
    np.save(tmp_path / "fortran.npy", np.asfortranarray(x))
    np.testing.assert_array_equal(load_stamps(tmp_path / "fortran.npy", block_rows=4)[0], x)


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_carries_identifiers_and_checks_columns(tmp_path, compressed):
    x = make_stamps(10)
    save = np.savez_compressed if compressed else np.savez
    save(
        tmp_path / "c.npz",
        images=x[..., [1, 0, 2]],  # stored as (ref, new, diff)
        channel_order=np.array(["template", "science", "difference"]),
        candid=np.arange(10, dtype=np.int64) + 1000,
        objectId=np.array([f"ZTF{i:03d}" for i in range(10)]),
        label=np.array([1, 0, -1, 1, 0, 1, 0, 0, 1, 1]),
        kind=np.array(["sn_in_host"] + ["cosmic_ray"] * 9),
        magpsf=np.linspace(17, 19, 10),
        nan_count=np.zeros((10, 3), np.int16),  # not 1-D: not a column
    )
    images, cols = load_stamps(tmp_path / "c.npz", block_rows=3)
    np.testing.assert_array_equal(images, x)
    assert set(cols) == {"candid", "objectId", "label", "kind", "magpsf", "mag"}
    assert cols["label"].dtype == np.int8 and cols["kind"][0] == KIND_CODES["sn_in_host"]
    assert cols["objectId"][3] == "ZTF003" and cols["mag"].dtype == np.float32
    with open_stamps(tmp_path / "c.npz") as src:
        assert set(src.id_columns) == {"candid", "objectId", "magpsf"}


def test_real_ztf_triplets_load(ztf_npz):
    images, cols = load_stamps(ztf_npz)
    assert images.shape[1:] == (29, 29, 3) and len(images) == len(cols["candid"])
    assert "objectId" in cols and np.isfinite(images).all()


# ----------------------------------------------------------------------------- FITS
def write_fits_examples(folder: Path, x: np.ndarray) -> None:
    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    # named HDUs in a scrambled order
    fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(x[0, ..., 2], name="DIFF"),
        fits.ImageHDU(x[0, ..., 0], name="SCI"),
        fits.ImageHDU(x[0, ..., 1], name="TEMPLATE"),
    ]).writeto(folder / "c0.fits")
    # unnamed HDUs in channel order
    fits.HDUList([fits.PrimaryHDU(x[1, ..., 0]), fits.ImageHDU(x[1, ..., 1]), fits.ImageHDU(x[1, ..., 2])]).writeto(
        folder / "c1.fits")
    # one 3x29x29 cube, gzipped
    fits.PrimaryHDU(np.moveaxis(x[2], -1, 0)).writeto(folder / "c2.fits.gz")
    # three files
    for ch, suffix in enumerate(["sci", "tmpl", "sub"]):
        fits.PrimaryHDU(x[3, ..., ch]).writeto(folder / f"c3_{suffix}.fits")


def test_fits_triplets_in_every_form(tmp_path):
    x = make_stamps(4)
    write_fits_examples(tmp_path / "f", x)
    images, cols = load_stamps(tmp_path / "f", block_rows=3)
    np.testing.assert_array_equal(images, x)
    assert list(cols["name"]) == ["c0", "c1", "c2", "c3"]
    single, cols = load_stamps(tmp_path / "f" / "c3_tmpl.fits")  # one member of a three-file triplet
    np.testing.assert_array_equal(single, x[3:4])
    assert list(cols["name"]) == ["c3"]
    np.testing.assert_array_equal(load_stamps(tmp_path / "f" / "c0.fits")[0], x[:1])


# ----------------------------------------------------------------------------- HDF5 and streaming
def test_hdf5_input_and_blocks_are_bounded(tmp_path):
    x = make_stamps(23)
    cols = {"label": np.ones(23, np.int8), "sensor_id": np.arange(23, dtype=np.int16),
            "kind": np.zeros(23, np.int16), "mag": np.zeros(23, np.float32)}
    write_dataset(tmp_path / "d.h5", x, cols)
    np.save(tmp_path / "d.npy", x)
    for path in (tmp_path / "d.h5", tmp_path / "d.npy"):
        blocks = list(iter_stamp_blocks(path, block_rows=5))
        assert [len(b) for b, _ in blocks] == [5, 5, 5, 5, 3]
        np.testing.assert_array_equal(np.concatenate([b for b, _ in blocks]), x)
    np.testing.assert_array_equal(np.concatenate([c["sensor_id"] for _, c in iter_stamp_blocks(tmp_path / "d.h5", 5)]),
                                  np.arange(23))


# ----------------------------------------------------------------------------- masked pixels
def test_nan_policy_fill_uses_stamp_channel_median(tmp_path):
    x = make_stamps(6)
    x[2, 5, 5, 1] = np.nan
    x[2, 6, 6, 1] = np.inf
    x[4, 0:3, 0, 2] = 3.4e38  # float32-max sentinels
    np.save(tmp_path / "m.npy", x)
    with pytest.raises(DataError) as err:
        load_stamps(tmp_path / "m.npy")
    assert "m.npy: row 2" in str(err.value) and "nan_policy=fill" in str(err.value)
    images, cols = load_stamps(tmp_path / "m.npy", nan_policy="fill")
    np.testing.assert_array_equal(cols["n_masked"], [0, 0, 2, 0, 3, 0])
    finite = x[2, ..., 1][np.isfinite(x[2, ..., 1])]
    assert images[2, 5, 5, 1] == images[2, 6, 6, 1] == np.float32(np.median(finite))
    assert np.isfinite(images).all() and np.abs(images).max() < 1e30
    untouched = np.ones(len(x), bool)
    untouched[[2, 4]] = False
    np.testing.assert_array_equal(images[untouched], x[untouched])


def test_nan_policy_fill_refuses_mostly_masked_stamps(tmp_path):
    x = make_stamps(3)
    x[1, :10, :, 2] = np.nan  # 10 of 29 rows of the diff channel: 34%
    np.save(tmp_path / "m.npy", x)
    with pytest.raises(DataError, match=r"m.npy: row 1: 34% of the diff channel is masked"):
        load_stamps(tmp_path / "m.npy", nan_policy="fill")
    assert load_stamps(tmp_path / "m.npy", nan_policy="fill", max_masked_fraction=0.5)[1]["n_masked"][1] == 290
    with pytest.raises(ConfigError):
        load_stamps(tmp_path / "m.npy", nan_policy="zero")


# ----------------------------------------------------------------------------- bad input
def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected message fragment); each path must raise DataError."""
    from astropy.io import fits

    cases = {}
    cases["missing"] = (tmp / "nothing.npy", "no such file")
    (tmp / "empty").mkdir()
    cases["empty directory"] = (tmp / "empty", "empty directory")
    (tmp / "notes.txt").write_text("x")
    cases["unknown suffix"] = (tmp / "notes.txt", "unrecognised input format")
    (tmp / "other").mkdir()
    (tmp / "other" / "readme.txt").write_text("x")
    cases["no stamp files"] = (tmp / "other", "no recognised stamp files")
    np.save(tmp / "ch4.npy", np.zeros((2, 29, 29, 4), np.float32))
    cases["four channels"] = (tmp / "ch4.npy", "4 channels")
    np.save(tmp / "big.npy", np.zeros((2, 31, 31, 3), np.float32))
    cases["wrong size"] = (tmp / "big.npy", "not a stack of 29x29x3 stamps")
    np.save(tmp / "text.npy", np.array([["a"] * 2523]))
    cases["non-numeric"] = (tmp / "text.npy", "non-numeric dtype")
    np.save(tmp / "none.npy", np.zeros((0, 29, 29, 3), np.float32))
    cases["no stamps"] = (tmp / "none.npy", "holds no stamps")
    (tmp / "junk.npy").write_bytes(b"not numpy at all" * 10)
    cases["corrupt npy"] = (tmp / "junk.npy", "not a .npy file")
    np.save(tmp / "full.npy", make_stamps(4))
    (tmp / "cut.npy").write_bytes((tmp / "full.npy").read_bytes()[:-500])
    cases["truncated npy"] = (tmp / "cut.npy", "truncated (39996 bytes, the header promises 40496)")
    np.savez(tmp / "full.npz", images=make_stamps(4))
    (tmp / "cut.npz").write_bytes((tmp / "full.npz").read_bytes()[:-300])
    cases["truncated npz"] = (tmp / "cut.npz", "not a readable .npz archive")
    raw = bytearray((tmp / "full.npz").read_bytes())
    raw[4000] ^= 0xFF
    (tmp / "flip.npz").write_bytes(bytes(raw))
    cases["corrupt npz"] = (tmp / "flip.npz", "corrupt")
    np.savez(tmp / "noimg.npz", a=np.zeros(3), b=np.zeros(3))
    cases["npz without images"] = (tmp / "noimg.npz", "no array 'images'")
    np.savez(tmp / "badlabel.npz", images=make_stamps(4), label=np.array([1, 0, 2, 1]))
    cases["npz bad label"] = (tmp / "badlabel.npz", "labels are 1 real")
    np.savez(tmp / "shortlabel.npz", images=make_stamps(4), label=np.array([1, 0, 1]))
    cases["npz label length"] = (tmp / "shortlabel.npz", "there are 4 stamps")
    np.savez(tmp / "badorder.npz", images=make_stamps(4), channel_order=np.array(["g", "r", "i"]))
    cases["npz channel order"] = (tmp / "badorder.npz", "does not name new, ref and diff")
    # Zenodo layout
    z = tmp / "z_no_type"
    write_zenodo(z, {1: 3})
    (z / "params1.csv").write_text(",kind,mag\n0,artifact,1\n1,artifact,1\n2,artifact,1\n")
    cases["no object_type"] = (z, "no 'object_type' column")
    z = tmp / "z_unknown_type"
    write_zenodo(z, {1: 3})
    (z / "params1.csv").write_text(",object_type\n0,artifact\n1,satellite\n2,artifact\n")
    cases["unknown object_type"] = (z, "line 3: unknown object_type 'satellite'")
    z = tmp / "z_length"
    write_zenodo(z, {1: 3, 2: 4})
    (z / "params2.csv").write_text(",object_type\n0,artifact\n")
    cases["length mismatch"] = (z, "params2.csv: 1 rows, but images2.npy holds 4 stamps")
    z = tmp / "z_missing_params"
    write_zenodo(z, {1: 3, 2: 3})
    (z / "params2.csv").unlink()
    cases["missing params"] = (z, "no matching params2.csv")
    z = tmp / "z_pair"
    z.mkdir()
    np.save(z / "real_x.npy", make_stamps(2))
    cases["half a test pair"] = (z, "one real*.npy and one bogus*.npy, found 1 and 0")
    # FITS
    fdir = tmp / "fits_incomplete"
    fdir.mkdir()
    fits.PrimaryHDU(np.zeros((29, 29))).writeto(fdir / "a_new.fits")
    fits.PrimaryHDU(np.zeros((29, 29))).writeto(fdir / "a_ref.fits")
    cases["incomplete FITS triplet"] = (fdir, "'a' has a_new.fits, a_ref.fits but no diff file")
    fits.PrimaryHDU(np.zeros((63, 63))).writeto(tmp / "big.fits")
    cases["FITS wrong shape"] = (tmp / "big.fits", "(63, 63)")
    fits.HDUList([fits.PrimaryHDU(np.zeros((29, 29))), fits.ImageHDU(np.zeros((29, 29)))]).writeto(tmp / "two.fits")
    cases["FITS two HDUs"] = (tmp / "two.fits", "found 2 image HDU(s)")
    (tmp / "junk.fits").write_bytes(b"SIMPLE = rubbish " * 200)
    cases["corrupt FITS"] = (tmp / "junk.fits", "not a readable FITS file")
    fits.HDUList([fits.PrimaryHDU(np.zeros((29, 29))), fits.ImageHDU(np.zeros((29, 29))),
                  fits.ImageHDU(np.zeros((29, 29)))]).writeto(tmp / "whole.fits")
    (tmp / "cut.fits").write_bytes((tmp / "whole.fits").read_bytes()[:-4000])
    cases["truncated FITS"] = (tmp / "cut.fits", "cut.fits")
    a = np.zeros((29, 29))
    a[3, 4] = np.nan
    fits.HDUList([fits.PrimaryHDU(a), fits.ImageHDU(np.zeros((29, 29))), fits.ImageHDU(np.zeros((29, 29)))]).writeto(
        tmp / "nan.fits")
    cases["FITS NaN"] = (tmp / "nan.fits", "masked pixel")
    # HDF5
    (tmp / "junk.h5").write_bytes(b"\0" * 1000)
    cases["corrupt HDF5"] = (tmp / "junk.h5", "not a readable HDF5 file")
    return cases


def test_bad_inputs_raise_one_line_errors_naming_the_file(tmp_path):
    cases = _bad_inputs(tmp_path)
    for name, (path, fragment) in cases.items():
        with pytest.raises(DataError) as err:
            load_stamps(path)
        message = str(err.value)
        assert fragment in message, (name, message)
        assert "\n" not in message, (name, message)
        assert path.name in message or str(path) in message, (name, message)
