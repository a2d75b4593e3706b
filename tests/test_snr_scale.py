"""Our candidate S/N against ZTF's recorded S/N fields (``python -m realbogus.plots.snr_scale``)."""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_alerts import REAL_ALERTS, alert_schema, fits_bytes, triplet, write_alerts

from realbogus.data.alerts import CUTOUT_FIELDS
from realbogus.plots.snr_scale import CSV_FILE, MAG_PER_SNR, PACKET_FIELDS, main

REPO = Path(__file__).resolve().parents[1]
SIZE, FWHM, NOISE, ZP = 63, 2.5, 5.0, 26.0

# ZTF-like packets with the candidate fields the comparison reads (floats, as ZTF stores them)
SNR_SCHEMA = alert_schema(
    "ztf", [{"name": "candid", "type": "long"}, {"name": "isdiffpos", "type": "string"},
            *({"name": k, "type": ["null", "float"], "default": None} for k in PACKET_FIELDS)],
    lambda name: ["null", {"type": "record", "name": name, "fields": [
        {"name": "fileName", "type": "string"}, {"name": "stampData", "type": "bytes"}]}])


def gaussian(fwhm: float, size: int = SIZE) -> np.ndarray:
    """A round Gaussian centred on pixel (size // 2, size // 2), summing to 1."""
    r2 = np.sum((np.mgrid[:size, :size] - size // 2) ** 2, axis=0)
    g = np.exp(-r2 / (2 * (fwhm / 2.354820045) ** 2))
    return g / g.sum()


def filter_error(fwhm: float = FWHM) -> float:
    """The white-noise flux error of the Gaussian filter for noise NOISE: sigma sum(g) / sqrt(sum g^2)."""
    g = gaussian(fwhm, 29)
    return NOISE * g.sum() / np.sqrt((g**2).sum())


def ztf_alert(seed: int, snr: float, drb: float | None, on_source: bool, sigmapsf: float, b: float,
              chipsf: float) -> dict:
    """A packet: a PSF-shaped source of true matched-filter S/N ``snr`` in white noise NOISE.

    ``diffmaglim`` makes ZTF's background flux error ``b`` times the filter's; ``ssnrms`` is
    the true S/N; magnitudes are on the zero point ZP (the cutouts' DN).
    """
    rng = np.random.default_rng(seed)
    p = gaussian(FWHM)
    flux = snr * NOISE / np.sqrt((p**2).sum())
    sci = rng.normal(200.0, NOISE / 2, (SIZE, SIZE)) + flux * p
    ref = rng.normal(300.0, NOISE / 5, (SIZE, SIZE)) + (2e4 * p if on_source else 0.0)
    diff = rng.normal(0.0, NOISE, (SIZE, SIZE)) + flux * p
    fields = {"drb": drb, "magpsf": ZP - 2.5 * np.log10(flux), "sigmapsf": sigmapsf, "magzpsci": ZP,
              "diffmaglim": ZP - 2.5 * np.log10(5 * b * filter_error()), "chipsf": chipsf,
              "scorr": snr / 2, "ssnrms": snr}
    return {"candid": 1000 + seed, "objectId": f"ZTF{seed:02d}", "images": np.stack([sci, ref, diff]),
            "fields": {k: (None if v is None else float(v)) for k, v in fields.items()}}


def packet_record(alert: dict) -> dict:
    cutouts = {name: {"fileName": f"{alert['candid']}_{name}.fits.gz", "stampData": fits_bytes(im, True)}
               for name, im in zip(CUTOUT_FIELDS, alert["images"])}
    return {"objectId": alert["objectId"], "candid": alert["candid"],
            "candidate": {"candid": alert["candid"], "isdiffpos": "t", **alert["fields"]}, **cutouts}


def write_packets(path: Path, alerts: list[dict]) -> Path:
    import fastavro

    with open(path, "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(SNR_SCHEMA), [packet_record(a) for a in alerts])
    return path


def write_json_packet(path: Path, alert: dict) -> Path:
    """The packet as MongoDB extended JSON (cutouts as {"$binary": base64}), as braai's notebooks keep them."""
    record = packet_record(alert)
    for name in CUTOUT_FIELDS:
        record[name]["stampData"] = {"$binary": base64.b64encode(record[name]["stampData"]).decode()}
    path.write_text(json.dumps(record))
    return path


def run(argv, capsys) -> tuple[str, list[dict]]:
    main([str(a) for a in argv])
    out = capsys.readouterr().out
    rows = []
    if "--out" in argv:
        with open(Path(argv[argv.index("--out") + 1]) / CSV_FILE, newline="") as fh:
            rows = list(csv.DictReader(fh))
    return out, rows


def column(rows, name) -> np.ndarray:
    return np.array([float(r[name]) if r[name] != "" else np.nan for r in rows])


def fails(argv, capsys, text: str) -> None:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and text in err, err
    assert err.startswith("error: ") and err.count("\n") == 1, err


# ----------------------------------------------------------------------------- the decomposition
SET = [  # seed, S/N, drb, on a template source, sigmapsf, B, chipsf
    (1, 40.0, 0.95, True, 0.06, 2.2, 1.5),
    (2, 60.0, 0.99, True, 0.04, 2.0, 1.0),
    (3, 30.0, 0.92, False, 0.08, 3.0, 2.0),
    (4, 50.0, 0.97, False, 0.05, 2.5, 1.2),
    (5, 80.0, 0.02, True, 0.03, 2.3, 9.0),
    (6, 45.0, 0.05, True, 0.07, 2.1, 4.0),
    (7, 35.0, None, False, 0.05, 2.4, 1.1),
]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("packets")
    alerts = [ztf_alert(*spec) for spec in SET]
    write_packets(folder / "night1.avro", alerts[:4])
    write_packets(folder / "night2.avro", alerts[4:])
    return folder, alerts


def test_decomposition_has_the_planted_answer(synthetic, tmp_path, capsys):
    folder, alerts = synthetic
    out, rows = run(["--alerts", folder, "--fwhm", FWHM, "--out", tmp_path], capsys)
    assert [r["candid"] for r in rows] == [str(a["candid"]) for a in alerts]
    f = {k: np.array([np.float32(np.nan if a["fields"][k] is None else a["fields"][k]) for a in alerts], np.float64)
         for k in PACKET_FIELDS}  # as stored: float32
    ours, ztf = column(rows, "ours"), column(rows, "ztf_snr")
    A, B, C = column(rows, "A"), column(rows, "B"), column(rows, "C")
    # exact identities, per alert
    np.testing.assert_allclose(ztf, MAG_PER_SNR / f["sigmapsf"], rtol=1e-6)
    np.testing.assert_allclose(A * B * C, ours / ztf, rtol=1e-8)
    np.testing.assert_allclose(column(rows, "ours_over_ztf"), ours * f["sigmapsf"] / MAG_PER_SNR, rtol=1e-6)
    np.testing.assert_allclose(ours, column(rows, "F_ours") / column(rows, "sF_ours"), rtol=1e-8)
    flux = 10 ** (-0.4 * (f["magpsf"] - f["magzpsci"]))
    lim = 10 ** (-0.4 * (f["diffmaglim"] - f["magzpsci"])) / 5
    np.testing.assert_allclose(C, flux * f["sigmapsf"] / MAG_PER_SNR / lim, rtol=1e-6)
    np.testing.assert_allclose(column(rows, "sqrt_chipsf"), np.sqrt(f["chipsf"]), rtol=1e-6)
    nea_filter = (column(rows, "sF_ours") / column(rows, "noise")) ** 2
    np.testing.assert_allclose(column(rows, "nea_ztf"), B**2 * nea_filter, rtol=1e-8)
    # the estimator is the package's: candidate_snr of the 29 x 29 centre crop
    from realbogus.plots.realism import candidate_snr

    crops = np.stack([a["images"][:, 17:46, 17:46].transpose(1, 2, 0) for a in alerts])
    np.testing.assert_allclose(ours, candidate_snr(crops, FWHM), rtol=1e-6)
    # noisy answers: planted S/N (ssnrms), flux (A = 1) and background-error ratio (B)
    planted = np.array([s[1] for s in SET])
    np.testing.assert_allclose(column(rows, "ours_over_ssnrms"), 1.0, atol=0.12)
    assert abs(np.median(ours / planted) - 1) < 0.05
    np.testing.assert_allclose(A, 1.0, atol=0.12)
    np.testing.assert_allclose(B, [s[5] for s in SET], rtol=0.12)
    psf_area = 4 * np.pi * (FWHM / 2.354820045) ** 2  # noise-equivalent area of the Gaussian PSF
    assert np.median(column(rows, "nea_profile")) == pytest.approx(psf_area, rel=0.2)
    # groups: probable reals on / off a template source, probable bogus, all
    assert column(rows, "on_source").tolist() == [float(s[3]) for s in SET]
    assert "| reals on (n=2) | reals off (n=2) | reals (n=4) | bogus (n=2) | all (n=7) |" in out
    assert "7 ZTF alerts read; 0 not found or unreadable; 0 records of other surveys skipped" in out
    line = next(li for li in out.splitlines() if li.startswith("| ours / `ssnrms` |"))
    assert line.count("[") == 5


def test_filter_width_defaults_to_the_measured_fwhm(synthetic, capsys):
    folder, _ = synthetic
    out, _ = run(["--alerts", folder / "night1.avro", folder / "night2.avro"], capsys)
    fwhm = float(out.split("Filter FWHM ")[1].split(" px")[0])
    assert fwhm == pytest.approx(FWHM, abs=0.15)
    assert "| ours / (1.0857 / `sigmapsf`) = A·B·C |" in out


def test_missing_fields_and_other_surveys_are_counted(tmp_path, capsys):
    alert = ztf_alert(8, 40.0, 0.95, False, 0.05, 2.0, 1.0)
    alert["fields"]["ssnrms"] = alert["fields"]["magzpsci"] = None  # older packets lack them
    write_packets(tmp_path / "old.avro", [alert, ztf_alert(9, 40.0, 0.95, False, 0.05, 2.0, 1.0)])
    write_alerts(tmp_path / "decam.avro", [{"candid": 5, "objectId": "c4d", "images": triplet(seed=1)}],
                 schema="decam")
    out, rows = run(["--alerts", tmp_path, "--fwhm", FWHM, "--out", tmp_path / "out"], capsys)
    assert "2 ZTF alerts read; 0 not found or unreadable; 1 records of other surveys skipped" in out
    assert rows[0]["ssnrms"] == rows[0]["A"] == rows[0]["B"] == rows[0]["C"] == ""
    assert rows[0]["ours_over_ztf"] != "" and rows[1]["C"] != ""
    assert "(n=1) |" in next(li for li in out.splitlines() if li.startswith("| S/N: ZTF `ssnrms` |"))


# ----------------------------------------------------------------------------- --npz with git mirrors
def _git(*args, cwd) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    res = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, check=True)
    return res.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_npz_rows_are_read_from_git_mirrors(tmp_path, capsys):
    alerts = [ztf_alert(s, 40.0, 0.95, s % 2 == 0, 0.05, 2.0, 1.0) for s in (11, 12, 13, 14)]
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    _git("init", "-q", cwd=work)
    write_packets(work / "data" / "pair.avro", alerts[:2])  # one file, two alerts: matched on candid
    write_json_packet(work / "data" / "one.json", alerts[2])
    write_packets(work / "data" / "gone.avro", alerts[3:])
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "packets", cwd=work)
    first = _git("rev-parse", "HEAD", cwd=work)
    _git("rm", "-q", "data/gone.avro", cwd=work)  # only in the history now
    _git("commit", "-q", "-m", "remove one", cwd=work)
    mirrors = tmp_path / "mirrors"
    _git("clone", "-q", "--bare", str(work), str(mirrors / "owner+fixtures" / "repo"), cwd=tmp_path)

    crops = np.stack([a["images"][:, 17:46, 17:46].transpose(1, 2, 0) for a in alerts]).astype(np.float32)
    rows = [  # candid, repo, path, commit
        (1011, "owner/fixtures", "data/pair.avro", first),
        (1012, "owner/fixtures", "data/pair.avro", "0" * 40),  # unknown commit: read at HEAD
        (1013, "owner/fixtures", "data/one.json", first),
        (1014, "owner/fixtures", "data/gone.avro", ""),  # deleted: found in the history
        (1099, "owner/fixtures", "data/pair.avro", first),  # not in the packet
        (1011, "owner/fixtures", "data/nowhere.avro", first),  # no such file
        (1011, "someone/else", "data/pair.avro", first),  # no such mirror
    ]
    n = len(rows)
    npz = tmp_path / "alerts.npz"
    np.savez(npz, images=np.concatenate([crops, np.zeros((n - 4, 29, 29, 3), np.float32)]),
             candid=np.array([r[0] for r in rows], np.int64), source_repo=np.array([r[1] for r in rows]),
             source_path=np.array([r[2] for r in rows]), source_commit=np.array([r[3] for r in rows]),
             sigmapsf=np.full(n, 0.05, np.float32))
    out, csv_rows = run(["--npz", npz, "--mirrors", mirrors, "--fwhm", FWHM, "--out", tmp_path / "out"], capsys)
    assert [r["candid"] for r in csv_rows] == ["1011", "1012", "1013", "1014"]
    assert csv_rows[0]["source"] == f"owner/fixtures:data/pair.avro@{first}"
    assert csv_rows[1]["source"].endswith("@HEAD")
    assert "4 ZTF alerts read; 3 not found or unreadable" in out
    assert "stamps identical for 4 of 4, `sigmapsf` for 4 of 4" in out
    assert "row 4 (candid 1099" in out and "no alert with this candid" in out
    assert "row 5 (candid 1011" in out and "not at the recorded commit, at HEAD or in the mirror's history" in out
    assert "no mirror of someone/else" in out
    np.testing.assert_allclose(column(csv_rows, "ours_over_ssnrms"), 1.0, atol=0.12)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_stops_with_one_line(synthetic, tmp_path, capsys):
    folder, _ = synthetic
    (tmp_path / "junk.avro").write_bytes(b"not avro at all" * 20)
    (tmp_path / "empty").mkdir()
    write_alerts(tmp_path / "decam.avro", [{"candid": 5, "objectId": "c4d", "images": triplet(seed=1)}],
                 schema="decam")
    np.savez(tmp_path / "bare.npz", candid=np.arange(3))
    fails(["--alerts", tmp_path / "missing.avro"], capsys, "missing.avro: no such file or directory")
    fails(["--alerts", tmp_path / "junk.avro"], capsys, "junk.avro: not a readable Avro alert file")
    fails(["--alerts", tmp_path / "empty"], capsys, "no alert files (*.avro)")
    fails(["--alerts", tmp_path / "decam.avro"], capsys, "no ZTF alerts (records with a candidate sigmapsf)")
    fails([], capsys, "nothing to read")
    fails(["--npz", tmp_path / "bare.npz"], capsys, "--npz and --mirrors go together")
    fails(["--npz", tmp_path / "junk.avro", "--mirrors", tmp_path], capsys, "junk.avro: not an .npz archive")
    fails(["--npz", tmp_path / "nope.npz", "--mirrors", tmp_path], capsys, "nope.npz: no such file")
    fails(["--npz", tmp_path / "bare.npz", "--mirrors", tmp_path], capsys,
          "bare.npz: no column source_repo, source_path, source_commit")
    fails(["--npz", tmp_path / "bare.npz", "--mirrors", tmp_path / "nomirrors"], capsys, "no such folder")
    (tmp_path / "file").write_text("x")
    fails(["--alerts", folder, "--out", tmp_path / "file"], capsys, "is a file, not a folder")
    with pytest.raises(SystemExit) as info:
        main(["--alerts", str(folder), "--fwhm", "-1"])
    assert info.value.code == 2 and "must be a number of pixels > 0" in capsys.readouterr().err


def test_command_line_help():
    res = subprocess.run([sys.executable, "-m", "realbogus.plots.snr_scale", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("usage: python -m realbogus.plots.snr_scale")
    for option in ("--alerts", "--npz", "--mirrors", "--fwhm", "--out", "ssnrms", "sigmapsf"):
        assert option in res.stdout


# ----------------------------------------------------------------------------- real packets
def test_real_alert_packets(tmp_path, capsys):
    if not REAL_ALERTS.is_dir():
        pytest.skip("real alert packets (../shared/data/alerts) not present")
    out, rows = run(["--alerts", REAL_ALERTS, "--out", tmp_path], capsys)
    assert "3 ZTF alerts read; 0 not found or unreadable; 1 records of other surveys skipped" in out
    assert [r["candid"] for r in rows] == ["739260766315010006", "2695378462115010012", "472263571115115000"]
    ours = column(rows, "ours")
    np.testing.assert_allclose(column(rows, "A") * column(rows, "B") * column(rows, "C"),
                               column(rows, "ours_over_ztf"), rtol=1e-8)
    np.testing.assert_allclose(column(rows, "ours_over_ztf"), ours / column(rows, "ztf_snr"), rtol=1e-8)
    # ZTF's ssnrms is on our scale; 1.0857 / sigmapsf is not
    ratio = column(rows, "ours_over_ssnrms")
    assert np.all((ratio > 0.9) & (ratio < 1.2)), ratio
    assert np.all(column(rows, "ours_over_ztf") > 2)
