"""Alert packets (Avro) as input: reading, cropping, orientation, centring, masked pixels, scoring."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np
import pytest

from realbogus.errors import DataError

REPO = Path(__file__).resolve().parents[1]
REAL_ALERTS = REPO.parent / "shared" / "data" / "alerts"

_CUTOUTS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")


def alert_schema(namespace: str, candidate_fields: list[dict], cutout_type) -> dict:
    """An Avro alert schema: identifiers, a ``candidate`` record and the three cutouts."""
    return {
        "type": "record", "name": "alert", "namespace": namespace,
        "fields": [
            {"name": "objectId", "type": "string"},
            {"name": "candid", "type": "long"},
            {"name": "candidate", "type": {"type": "record", "name": "candidate", "fields": candidate_fields}},
            *({"name": name, "type": cutout_type(name)} for name in _CUTOUTS),
        ],
    }


# ZTF: cutouts are optional records {fileName, stampData}; DECam: cutouts are bytes
ZTF_SCHEMA = alert_schema("ztf", [{"name": "candid", "type": "long"}, {"name": "isdiffpos", "type": "string"},
                                  {"name": "drb", "type": ["null", "float"], "default": None}],
                          lambda name: ["null", {"type": "record", "name": name, "fields": [
                              {"name": "fileName", "type": "string"}, {"name": "stampData", "type": "bytes"}]}])
DECAM_SCHEMA = alert_schema("decam", [{"name": "isdiffpos", "type": "int"}], lambda name: "bytes")


# ----------------------------------------------------------------------------- helpers
def fits_bytes(image: np.ndarray, compress: bool) -> bytes:
    from astropy.io import fits

    buf = io.BytesIO()
    fits.PrimaryHDU(np.asarray(image, ">f4")).writeto(buf)
    data = buf.getvalue()
    return gzip.compress(data) if compress else data


def triplet(size: int = 63, seed: int = 0, at: tuple[int, int] | None = None, flux: float = 400.0,
            fading: bool = False) -> np.ndarray:
    """(3, size, size) science, template, difference: sky noise and a source at ``at`` (default the centre).

    A fading source is brighter in the template; its difference is template - science, as ZTF
    stores it, so it is positive at the source either way.
    """
    rng = np.random.default_rng(seed)
    sci = rng.normal(100.0, 3.0, (size, size))
    ref = rng.normal(100.0, 1.0, (size, size)) + 10.0  # the template is offset: tells the two apart
    cy, cx = at if at is not None else (size // 2, size // 2)
    yy, xx = np.mgrid[:size, :size]
    blob = flux * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
    if fading:
        ref = ref + blob
        diff = ref - sci
    else:
        sci = sci + blob
        diff = sci - ref
    diff = diff - np.median(diff)
    return np.stack([sci, ref, diff]).astype(np.float32)


def write_alerts(path: Path, alerts: list[dict], schema: str = "ztf", codec: str = "null") -> Path:
    """An Avro file of ``alerts`` (dicts: candid, objectId, images (3, H, W), isdiffpos, and optional drop)."""
    import fastavro

    records = []
    for a in alerts:
        images = a["images"]
        if schema == "ztf":
            cutouts = {name: {"fileName": f"{a['candid']}_{name}.fits.gz", "stampData": fits_bytes(im, True)}
                       for name, im in zip(_CUTOUTS, images)}
            candidate = {"candid": a["candid"], "isdiffpos": a.get("isdiffpos", "t"), "drb": 0.5}
        else:
            cutouts = {name: fits_bytes(im, False) for name, im in zip(_CUTOUTS, images)}
            candidate = {"isdiffpos": a.get("isdiffpos", 1)}
        for name in a.get("drop", ()):
            cutouts[name] = None
        records.append({"objectId": a["objectId"], "candid": a["candid"], "candidate": candidate, **cutouts})
    with open(path, "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(ZTF_SCHEMA if schema == "ztf" else DECAM_SCHEMA), records,
                        codec=codec)
    return path


def read_all(path, **kwargs):
    from realbogus.data.alerts import open_alerts

    nan_policy = kwargs.pop("nan_policy", "error")
    with open_alerts(path, **kwargs) as src:
        blocks = list(src.iter_blocks(2, nan_policy))
        columns = dict(src.columns)
    images = np.concatenate([b for b, _ in blocks])
    extra = {k: np.concatenate([c[k] for _, c in blocks]) for k in blocks[0][1] if k not in columns}
    return images, {**columns, **extra}


def crop(images: np.ndarray) -> np.ndarray:
    """The 29 x 29 centre of (3, H, W) cutouts as a (29, 29, 3) stamp."""
    h, w = images.shape[1:]
    return images[:, h // 2 - 14:h // 2 + 15, w // 2 - 14:w // 2 + 15].transpose(1, 2, 0)


# ----------------------------------------------------------------------------- reading
def test_ztf_like_file_of_many_alerts_is_cropped_and_oriented(tmp_path):
    rising, fading = triplet(seed=1), triplet(seed=2, fading=True)
    path = write_alerts(tmp_path / "night.avro", [
        {"candid": 11, "objectId": "ZTF00a", "images": rising, "isdiffpos": "t"},
        {"candid": 12, "objectId": "ZTF00b", "images": fading, "isdiffpos": "f"},
        {"candid": 13, "objectId": "ZTF00c", "images": triplet(seed=3), "isdiffpos": "t"},
    ])
    images, cols = read_all(path)
    assert images.shape == (3, 29, 29, 3) and images.dtype == np.float32
    assert cols["candid"].tolist() == [11, 12, 13] and cols["candid"].dtype == np.int64
    assert cols["objectId"].tolist() == ["ZTF00a", "ZTF00b", "ZTF00c"]
    assert cols["swapped"].tolist() == [0, 1, 0] and cols["isdiffpos"].tolist() == ["t", "f", "t"]
    np.testing.assert_array_equal(images[0], crop(rising))
    # the fading alert: template first, science second, difference unchanged (still positive at the source)
    np.testing.assert_array_equal(images[1], crop(fading)[..., [1, 0, 2]])
    assert images[1][14, 14, 0] > images[1][14, 14, 1] and images[1][14, 14, 2] > 100
    assert cols["centre_offset"].tolist() == [0, 0, 0] and cols["off_centre"].tolist() == [0, 0, 0]
    # orient=False keeps every alert as stored
    plain, cols = read_all(path, orient=False)
    assert cols["swapped"].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(plain[1], crop(fading))


@pytest.mark.parametrize("codec", ["snappy", "deflate"])
def test_compressed_avro_blocks_are_read(tmp_path, codec):
    """Brokers' archives hold Avro files with compressed blocks (half of the public ZTF packets
    behind the real-data check are snappy-coded; fastavro reads snappy through cramjam)."""
    stamps = triplet(seed=4)
    path = write_alerts(tmp_path / f"{codec}.avro", [{"candid": 7, "objectId": "ZTF00z", "images": stamps}], codec=codec)
    images, cols = read_all(path)
    assert cols["candid"].tolist() == [7]
    np.testing.assert_array_equal(images[0], crop(stamps))


def test_decam_like_raw_bytes_and_a_folder_of_files_in_name_order(tmp_path):
    folder = tmp_path / "alerts"
    folder.mkdir()
    write_alerts(folder / "b.avro", [{"candid": 7, "objectId": "ztf", "images": triplet(seed=4)}])
    write_alerts(folder / "a.avro", [
        {"candid": 65346, "objectId": "c4d_a", "images": triplet(seed=5, size=41), "isdiffpos": 1},
        {"candid": 65347, "objectId": "c4d_b", "images": triplet(seed=6, size=41, fading=True), "isdiffpos": 0},
    ], schema="decam")
    (folder / "notes.txt").write_text("not an alert")
    images, cols = read_all(folder)
    assert cols["candid"].tolist() == [65346, 65347, 7]
    assert cols["alert_file"].tolist() == ["a.avro", "a.avro", "b.avro"]
    assert cols["swapped"].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(images[0], crop(triplet(seed=5, size=41)))
    np.testing.assert_array_equal(images[1], crop(triplet(seed=6, size=41, fading=True))[..., [1, 0, 2]])


def test_small_cutouts_are_padded_as_masked_pixels(tmp_path):
    small = triplet(size=27, seed=7)
    small[0, 3, 4] = np.finfo(np.float32).max  # a float32-max sentinel inside the cutout
    path = write_alerts(tmp_path / "small.avro", [{"candid": 1, "objectId": "o", "images": small}])
    with pytest.raises(DataError, match=r"small\.avro: alert 1: .*masked pixel"):
        read_all(path)
    images, cols = read_all(path, nan_policy="fill")
    assert cols["n_masked"].tolist() == [3 * (29 ** 2 - 27 ** 2) + 1]
    np.testing.assert_array_equal(images[0, 1:28, 1:28, 2], small[2])  # the cutout sits in the middle
    assert np.isfinite(images).all() and np.abs(images).max() < 1e30
    tiny = write_alerts(tmp_path / "tiny.avro", [{"candid": 2, "objectId": "o", "images": triplet(size=21)}])
    with pytest.raises(DataError, match="max_masked_fraction"):
        read_all(tiny, nan_policy="fill")


def test_off_centre_candidates_are_flagged(tmp_path):
    from realbogus.data.alerts import centre_offset

    edge = triplet(seed=8, at=(31, 41))  # a cutout cut short: the candidate 10 pixels off the centre
    near = triplet(seed=9, at=(32, 33))
    path = write_alerts(tmp_path / "edge.avro", [
        {"candid": 1, "objectId": "a", "images": triplet(seed=10)},
        {"candid": 2, "objectId": "b", "images": edge},
        {"candid": 3, "objectId": "c", "images": near},
    ])
    _, cols = read_all(path)
    assert cols["off_centre"].tolist() == [0, 1, 0]
    assert cols["centre_offset"][1] == pytest.approx(10, abs=1)
    assert cols["centre_offset"][2] == pytest.approx(np.hypot(1, 2), abs=0.5)
    _, cols = read_all(path, max_centre_offset=15)
    assert cols["off_centre"].tolist() == [0, 0, 0]
    assert np.isnan(centre_offset(np.zeros((63, 63))))  # nothing to check on a flat difference


def test_bad_alert_files_stop_with_one_line(tmp_path):
    from realbogus.data.alerts import open_alerts

    (tmp_path / "junk.avro").write_bytes(b"not avro at all" * 20)
    good = write_alerts(tmp_path / "good.avro", [{"candid": 5, "objectId": "o", "images": triplet()}])
    (tmp_path / "cut.avro").write_bytes(good.read_bytes()[:-400])
    write_alerts(tmp_path / "nodiff.avro", [{"candid": 6, "objectId": "o", "images": triplet(),
                                             "drop": ["cutoutDifference"]}])
    mixed = triplet()
    write_alerts(tmp_path / "shapes.avro", [{"candid": 8, "objectId": "o",
                                             "images": [mixed[0], mixed[1], mixed[2][:, :40]]}])
    (tmp_path / "empty").mkdir()
    cases = {
        "junk.avro": "not a readable Avro alert file",
        "cut.avro": "cut.avro",
        "nodiff.avro": "alert 6: no cutoutDifference cutout",
        "shapes.avro": "alert 8: cutouts of different shapes",
        "empty": "no alert files",
        "missing.avro": "no such file",
    }
    for name, text in cases.items():
        with pytest.raises(DataError, match=text) as info:
            read_all(tmp_path / name)
        assert "\n" not in str(info.value), name
    with pytest.raises(Exception, match="max_centre_offset"):
        open_alerts(good, max_centre_offset=-1)


# ----------------------------------------------------------------------------- scoring
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import keras

    from realbogus.models import build_model

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_model({"name": "simple", "conv_filters": [4, 8], "dense_units": [8]}).save(path)
    return path


def test_predict_scores_alerts_with_ids_orientation_and_refusals(tmp_path, tiny_model):
    from realbogus.deploy.card import model_version
    from realbogus.evaluation.scoring import scores_from_logits
    from realbogus.models import load_model
    from realbogus.predict import predict_file

    alerts = [
        {"candid": 101, "objectId": "ZTF01", "images": triplet(seed=11), "isdiffpos": "t"},
        {"candid": 102, "objectId": "ZTF02", "images": triplet(seed=12, fading=True), "isdiffpos": "f"},
        {"candid": 103, "objectId": "ZTF03", "images": triplet(seed=13, at=(31, 45)), "isdiffpos": "t"},
    ]
    path = write_alerts(tmp_path / "alerts.avro", alerts)
    meta = predict_file(tiny_model, path, tmp_path / "scores.csv", precision="float32")
    with open(tmp_path / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["candid"] for r in rows] == ["101", "102", "103"]
    assert [r["objectId"] for r in rows] == ["ZTF01", "ZTF02", "ZTF03"]
    assert [r["swapped"] for r in rows] == ["0", "1", "0"] and [r["off_centre"] for r in rows] == ["0", "0", "1"]
    assert rows[2]["score"] == ""  # refused: the crop is not centred on the candidate
    network = load_model(tiny_model)
    stamps = np.stack([crop(alerts[0]["images"]), crop(alerts[1]["images"])[..., [1, 0, 2]]])
    want = scores_from_logits(network.predict(stamps, verbose=0))
    np.testing.assert_allclose([float(rows[0]["score"]), float(rows[1]["score"])], want, rtol=1e-6)
    version = model_version(network, None)
    assert {r["model_version"] for r in rows} == {version} and meta["model_version"] == version
    assert meta["input_layout"] == "avro" and meta["n_off_centre"] == 1 and meta["orientation"]["n_swapped"] == 1


def test_orient_auto_follows_what_the_model_learned(tmp_path, tiny_model):
    """A model trained on fadings stored as the survey stores them (its card says so) scores
    them as stored; one that saw brightenings only gets them with science and template exchanged."""
    import shutil

    from realbogus.deploy.card import embed_card, learned_fading_as_stored, resolve_orient
    from realbogus.errors import ConfigError
    from realbogus.predict import predict_file

    stored = {"training": {"config": {"data": {"simulation": {"instrument": {"negative_detections": True}}}}}}
    assert learned_fading_as_stored(stored) and not learned_fading_as_stored(None)
    assert resolve_orient("auto", stored) is False and resolve_orient("auto", {}) is True
    assert resolve_orient(True, stored) is True
    with pytest.raises(ConfigError, match="orient"):
        resolve_orient("sometimes", None)
    alerts = [{"candid": 1, "objectId": "ZTF01", "images": triplet(seed=12, fading=True), "isdiffpos": "f"}]
    path = write_alerts(tmp_path / "alerts.avro", alerts)
    ztf_model = tmp_path / "ztf.keras"
    shutil.copy(tiny_model, ztf_model)
    embed_card(ztf_model, stored)
    for model, swapped in ((tiny_model, "1"), (ztf_model, "0")):
        out = tmp_path / f"{model.stem}.csv"
        meta = predict_file(model, path, out, precision="float32", threshold=0.5)
        with open(out, newline="") as fh:
            assert [r["swapped"] for r in csv.DictReader(fh)] == [swapped]
        assert meta["orientation"]["orient"] is (swapped == "1")


def test_real_alert_packets(tmp_path, tiny_model):
    if not REAL_ALERTS.is_dir():
        pytest.skip("real alert packets (../shared/data/alerts) not present")
    from realbogus.predict import predict_file

    images, cols = read_all(REAL_ALERTS)
    assert cols["candid"].tolist() == [65346, 739260766315010006, 2695378462115010012, 472263571115115000]
    assert cols["objectId"].tolist()[1:] == ["ZTF17aaacxxf", "ZTF18abudxnw", "ZTF17aaajnnn"]
    assert cols["swapped"].tolist() == [0, 1, 1, 0]  # DECam isdiffpos 1; ZTF f, f, t
    assert cols["off_centre"].tolist() == [0, 0, 0, 0]
    centre = images[:, 13:16, 13:16, :].mean(axis=(1, 2))
    assert (centre[:, 2] > 0).all()  # every difference is positive at the candidate, fading ones included
    assert (centre[1:3, 0] > centre[1:3, 1]).all()  # after the swap the fading source is brighter in channel 0
    meta = predict_file(tiny_model, REAL_ALERTS, tmp_path / "real.csv", precision="float32")
    assert meta["n"] == 4 and meta["n_off_centre"] == 0
