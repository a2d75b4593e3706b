"""python -m realbogus.compare: training runs side by side, from hand-made run folders (no training)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realbogus.compare import main
from realbogus.data.format import write_dataset
from realbogus.data.kinds import KIND_CODES
from realbogus.evaluation.compare import COLUMNS, PASS_RATE_COLUMNS
from realbogus.evaluation.report import write_predictions
from realbogus.io import save_json
from realbogus.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]

# The validation split of the done run: 11 reals (one a label error: truly bogus), 10 bogus, with
# their kind, S/N and S/N bin (floor.SNR_EDGES) and the run's score.
VAL = [  # (given label, true label, kind, snr, S/N bin, score)
    (1, 1, "sn_in_host", 40.0, "30-100", 0.99), (1, 1, "sn_in_host", 40.0, "30-100", 0.95),
    (1, 1, "sn_in_host", 12.0, "10-15", 0.93), (1, 1, "rand_artificial_real", 12.0, "10-15", 0.90),
    (1, 1, "rand_artificial_real", 5.5, "5-6", 0.85), (1, 1, "rand_artificial_real", 5.5, "5-6", 0.80),
    (1, 1, "rand_artificial_real", 4.0, "<5", 0.70), (1, 1, "sn_in_host", 150.0, ">=100", 0.60),
    (1, 1, "sn_in_host", 150.0, ">=100", 0.10), (1, 1, "sn_in_host", 20.0, "15-30", 0.55),
    (1, 0, "noise_peak", 5.5, "5-6", 0.97),
    (0, 0, "noise_peak", 5.5, "5-6", 0.88), (0, 0, "noise_peak", 5.5, "5-6", 0.50),
    (0, 0, "noise_peak", 4.5, "<5", 0.75), (0, 0, "noise_peak", 12.0, "10-15", 0.20),
    (0, 0, "cosmic_ray", 40.0, "30-100", 0.65), (0, 0, "cosmic_ray", 40.0, "30-100", 0.05),
    (0, 0, "cosmic_ray", 150.0, ">=100", 0.02), (0, 0, "cosmic_ray", 12.0, "10-15", 0.01),
    (0, 0, "cosmic_ray", 5.5, "5-6", 0.03), (0, 0, "cosmic_ray", 4.0, "<5", 0.04),
]


def _data(folder: Path) -> Path:
    """train.h5 (the rows of VAL at 1, 4, 7, ...; filler elsewhere) and test.h5 (VAL itself)."""
    folder.mkdir()
    rows = np.arange(1, 3 * len(VAL), 3)
    filler = (1, 1, "sn_in_host", 20.0, "15-30", 0.5)
    for name, table, at in (("train.h5", [filler] * (3 * len(VAL) + 1), rows), ("test.h5", list(VAL), None)):
        if at is not None:
            for i, r in zip(at, VAL):
                table[i] = r
        n = len(table)
        write_dataset(folder / name, np.zeros((n, 29, 29, 3), np.float32), {
            "label": np.array([t[0] for t in table], np.int8), "true_label": np.array([t[1] for t in table], np.int8),
            "sensor_id": np.zeros(n, np.int16), "kind": np.array([KIND_CODES[t[2]] for t in table], np.int16),
            "mag": np.full(n, np.nan, np.float32), "snr": np.array([t[3] for t in table], np.float32)})
    return folder


def _predictions(index) -> dict:
    return {"index": np.asarray(index), "score": np.array([t[5] for t in VAL]),
            "label": np.array([t[0] for t in VAL]), "true_label": np.array([t[1] for t in VAL]),
            "kind": np.array([t[2] for t in VAL]), "sensor_id": np.zeros(len(VAL), np.int64)}


def _run(path: Path, cfg, status: str, epochs: int, history: dict, overrides=None, metrics=None, **state) -> RunDir:
    run = RunDir(path)
    run.path.mkdir(parents=True)
    run.write_config(cfg)
    run.write_state(status, **state)
    save_json(run.checkpoint_dir / "state.json", {"epoch": epochs, "best_epoch": epochs, "precision": "float32"})
    cols = {"epoch": list(range(len(history["val_loss"]))), "loss": [1.0] * len(history["val_loss"]), **history}
    lines = [",".join(cols)] + [",".join(str(cols[k][i]) for k in cols) for i in range(len(cols["epoch"]))]
    (run / RunDir.HISTORY).write_text("\n".join(lines) + "\n")
    if overrides is not None:
        (run.path / ".hydra").mkdir()
        (run.path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        save_json(run.metrics_path, metrics)
    return run


METRICS = {"auc": 0.987654321, "fpr_at_tpr": {"0.9": {"fpr": 0.0123, "ci": [0.0101, 0.0149], "tpr": 0.9}}}
OVERRIDES = ["model=simple", "loss=ce", "trainer.epochs=3", "trainer.progress=lines", "data_subset.sensors=[1,2]"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three run folders on a hand-made data file: done, running (its lock held here), interrupted."""
    from realbogus.noise_sweep import compose_train

    root = tmp_path_factory.mktemp("compare")
    data = _data(root / "data")
    cfg = compose_train(["data=smoke", f"data.dir={data}", "model=simple", "loss=ce", "trainer.epochs=3",
                         "trainer.steps_per_epoch=5"])
    done = _run(root / "done", cfg, "done", 3, {"val_loss": [0.5, 0.4, 0.45], "val_fpr_at_tpr_0.9": [0.2, 0.05, 0.1]},
                overrides=OVERRIDES, metrics=METRICS, epochs_trained=3, steps_per_epoch=7,
                precision="mixed_bfloat16", wall_seconds_last_session=754.0)
    write_predictions(done / RunDir.VALIDATION_PREDICTIONS, _predictions(np.arange(1, 3 * len(VAL), 3)))
    write_predictions(done.predictions_path, _predictions(np.arange(len(VAL))))
    running = _run(root / "running", cfg, "running", 1, {"val_loss": [0.6], "val_fpr_at_tpr_0.9": [0.3]},
                   overrides=OVERRIDES[:2], pid=os.getpid())
    # stopped after a resume: the metrics.json on disk is an earlier session's
    interrupted = _run(root / "interrupted", cfg, "running", 2, {"val_loss": [0.6, 0.55]}, metrics=METRICS)
    running.acquire()
    yield root, {"done": done, "running": running, "interrupted": interrupted}
    running.release()


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_rows_match_the_history_and_metrics_of_each_run(runs, tmp_path, capsys):
    root, folders = runs
    out = tmp_path / "table.csv"
    main([str(p.path) for p in folders.values()] + ["--out", str(out)])
    header, rows = _read_csv(out)
    assert header == list(COLUMNS)
    rows = {r["run"]: r for r in rows}
    assert list(rows) == ["done", "running", "interrupted"]
    for name, run in folders.items():  # independently: history.csv and metrics.json as files
        r = rows[name]
        _, history = _read_csv(run / RunDir.HISTORY)
        loss = [float(h["val_loss"]) for h in history]
        assert [float(v) for v in r["val_loss_by_epoch"].split()] == pytest.approx(loss, rel=1e-3)
        if "val_fpr_at_tpr_0.9" in history[0]:
            fpr = [float(h["val_fpr_at_tpr_0.9"]) for h in history]
            assert [float(v) for v in r["val_fpr_at_tpr_0.9_by_epoch"].split()] == pytest.approx(fpr, rel=1e-3)
            assert float(r["val_fpr_at_tpr_0.9_best"]) == min(fpr)
        else:
            assert r["val_fpr_at_tpr_0.9_by_epoch"] == r["val_fpr_at_tpr_0.9_best"] == ""
    done, running, interrupted = rows["done"], rows["running"], rows["interrupted"]
    metrics = json.loads(folders["done"].metrics_path.read_text())
    assert done["state"] == "done" and done["epochs"] == "3" and done["steps"] == "21"  # the state's 7 steps an epoch
    assert done["precision"] == "mixed_bfloat16" and float(done["wall_min"]) == pytest.approx(754.0 / 60, abs=0.05)
    assert float(done["test_auc"]) == metrics["auc"]
    point = metrics["fpr_at_tpr"]["0.9"]
    assert [float(done[c]) for c in ("test_fpr_at_tpr_0.9", "fpr_lo", "fpr_hi")] == [point["fpr"], *point["ci"]]
    # the overrides Hydra recorded, without the display-only ones, quoted for a shell, and the folder
    assert done["command"] == ("python -m realbogus.train model=simple loss=ce trainer.epochs=3 "
                               f"'data_subset.sensors=[1,2]' hydra.run.dir={folders['done'].path}")
    # still training: validation columns, steps from trainer.steps_per_epoch, empty test columns
    assert running["state"] == "running" and running["epochs"] == "1" and running["steps"] == "5"
    assert running["precision"] == "float32" and running["wall_min"] == ""
    assert all(running[c] == "" for c in ("test_auc", "test_fpr_at_tpr_0.9", "fpr_lo", "fpr_hi"))
    assert running["command"].startswith("python -m realbogus.train model=simple loss=ce hydra.run.dir=")
    # a dead "running" process is interrupted; an earlier session's metrics are not shown; no record, no command
    assert interrupted["state"] == "interrupted" and interrupted["steps"] == "10"
    assert interrupted["test_auc"] == interrupted["command"] == ""
    text = capsys.readouterr().out
    assert "| done | done | 3 | 21 | 12.6 | 0.05 | 0.1 | 0.98765 | 1.23e-02 (1.01e-02-1.49e-02) |" in text
    assert "| running | running | 1 | 5 |" in text and f"wrote {out}" in text


def _brute_force(split_rows, truth_label) -> dict:
    """Pass rates by hand: the highest score keeping 90% of the true reals, then counts per group."""
    scores = np.array([t[5] for t in split_rows])
    real = np.array([t[truth_label] for t in split_rows]) == 1
    threshold = max(s for s in scores if np.mean(scores[real] >= s) >= 0.9)
    passed_bogus = [t for t, s, r in zip(split_rows, scores, real) if not r and s >= threshold]
    out = {}
    for table, col in (("kind", 2), ("snr", 4)):
        for group in {t[col] for t in split_rows}:
            members = [(t, s, r) for t, s, r in zip(split_rows, scores, real) if t[col] == group]
            n_real = sum(r for _, _, r in members)
            n_bogus = len(members) - n_real
            k = sum(1 for _, s, r in members if not r and s >= threshold)
            kept = sum(1 for _, s, r in members if r and s >= threshold)
            out[(table, group)] = {"n_real": n_real, "n_bogus": n_bogus, "n_bogus_passed": k,
                                   "tpr": kept / n_real if n_real else None, "fpr": k / n_bogus if n_bogus else None,
                                   "share": k / len(passed_bogus)}
    return out


@pytest.mark.parametrize("split", ["validation", "test"])
def test_pass_rates_match_a_brute_force_count(runs, tmp_path, split, capsys):
    root, folders = runs
    extra = [] if split == "validation" else ["--split", "test"]
    main([str(folders["done"].path), str(folders["running"].path), "--out", str(tmp_path / "t.csv"),
          "--pass-rates", str(tmp_path / "p.csv"), *extra])
    header, rows = _read_csv(tmp_path / "p.csv")
    assert header == list(PASS_RATE_COLUMNS)
    assert {r["run"] for r in rows} == {"done"}  # the running run has no final predictions
    assert "running: running, no pass rates yet" in capsys.readouterr().err
    # the ground truth of the data file, not the given label: the label error (score 0.97) is a passed bogus
    expected = _brute_force(VAL, truth_label=1)
    assert {(r["table"], r["group"]) for r in rows} == set(expected)
    for r in rows:
        e = expected[(r["table"], r["group"])]
        assert (int(r["n_real"]), int(r["n_bogus"]), int(r["n_bogus_passed"])) == (e["n_real"], e["n_bogus"],
                                                                                  e["n_bogus_passed"])
        for c in ("tpr", "fpr"):
            assert (r[c] == "") if e[c] is None else float(r[c]) == pytest.approx(e[c])
        assert float(r["share"]) == pytest.approx(e["share"])
    # 9 of the 10 true reals score 0.55 or more: 0.97, 0.88 and 0.75 pass (0.97 only by the truth)
    assert expected[("kind", "noise_peak")]["n_bogus_passed"] == 3


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys):
    root, folders = runs
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad, says in ((tmp_path / "missing", "no such run folder"), (empty, "not a run folder")):
        with pytest.raises(SystemExit) as exc:
            main([str(folders["done"].path), str(bad), "--out", str(tmp_path / "t.csv")])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {bad}: {says}") and err.count("\n") == 1
    assert not (tmp_path / "t.csv").exists()  # nothing written


def test_help_says_what_it_does_with_examples():
    res = subprocess.run([sys.executable, "-m", "realbogus.compare", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Tabulate training runs side by side" in res.stdout and "Examples:" in res.stdout
    assert res.stdout.count("python -m realbogus.compare") >= 3
