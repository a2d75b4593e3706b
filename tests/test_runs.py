"""Runs you can trust: exact resume after a kill anywhere, the folder lock, states, checked configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from realbogus.errors import ConfigError
from realbogus.rundir import RunDir, RunLockedError

REPO = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k != "REALBOGUS_FAULT"}


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def train_cmd(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "realbogus.train", "model=simple", "loss=ce_ech_vat", "data=smoke",
            f"data.dir={data_dir}", "trainer.epochs=3", "trainer.steps_per_epoch=5", "trainer.batch_size=64",
            "trainer.n_bootstrap=20", "trainer.progress=none", "trainer.augment=true", f"hydra.run.dir={run_dir}",
            *extra]


def run(cmd, fault: str | None = None) -> subprocess.CompletedProcess:
    env = dict(ENV, **({"REALBOGUS_FAULT": fault} if fault else {}))
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


# Kill points of one resumed run, in the order a run reaches them (see realbogus/faults.py). Each
# rerun resumes from what the previous one left; "batch:N" counts the steps of that process.
KILLS = [
    ("start", None),                 # locked and marked running, nothing computed
    ("batch:3@INT", 130),            # Ctrl-C mid-epoch 1
    ("batch:7", None),               # SIGKILL mid-epoch 2 (epoch 1 was not committed before: 5 + 2 steps)
    ("checkpoint@TERM", 143),        # SIGTERM between an epoch's weight files and its state.json
    ("checkpoint", None),            # SIGKILL at the same place
    ("scoring", None),               # model saved, validation scored, test split not yet
    ("outputs", None),               # predictions.csv written, metrics.json not yet
    ("finalize", None),              # evaluation written, model card and "done" state not yet
]


def test_a_run_killed_anywhere_and_rerun_gives_the_uninterrupted_bytes(smoke_dir, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    done = run(train_cmd(smoke_dir, whole))
    assert done.returncode == 0, done.stderr[-2000:]
    for fault, code in KILLS:
        res = run(train_cmd(smoke_dir, resumed), fault)
        state = json.loads((resumed / "run_state.json").read_text())
        if code is None:  # SIGKILL: no word, the state still says running, the folder is free
            assert res.returncode == -9, (fault, res.stderr[-2000:])
            assert state["status"] == "running" and RunDir(resumed).status() == "interrupted"
        else:
            assert res.returncode == code, (fault, res.stderr[-2000:])
            last = res.stderr.strip().splitlines()[-1]
            assert last.startswith("interrupted after epoch") and "rerun the same command to resume" in last
            assert "Traceback" not in res.stderr
            assert state["status"] == "interrupted" and state["reason"].startswith(("Ctrl-C", "SIGTERM"))
        assert not list(resumed.rglob(".*.tmp*")), "a temporary file was left behind"
    final = run(train_cmd(smoke_dir, resumed))
    assert final.returncode == 0, final.stderr[-2000:]
    for name in ("predictions.csv", "validation_predictions.csv", "history.csv", "metrics.json"):
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name
    assert RunDir(resumed).status(epochs=3) == "done"
    log = (resumed / "train.log").read_text()
    assert log.count("resuming") >= 3 and "after epoch 1 (float32)" in log


def test_a_second_process_on_the_folder_is_refused_and_a_dead_holder_releases_it(smoke_dir, tmp_path):
    folder = RunDir(tmp_path / "run")
    with folder.locked():
        assert folder.holder() == os.getpid()
        res = run(train_cmd(smoke_dir, folder.path))
        assert res.returncode == 2
        assert res.stderr.strip() == (f"error: {folder.path} is in use by another process (pid {os.getpid()}); "
                                      "wait for it to finish or stop it, then rerun")
        with pytest.raises(RunLockedError):
            RunDir(folder.path).acquire()
    assert folder.holder() is None
    # A holder killed without a chance to clean up leaves a lock file, but no lock.
    code = (f"import os, signal; from realbogus.rundir import RunDir; RunDir({str(folder.path)!r}).acquire(); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", code], env=ENV).returncode == -9
    assert (folder.path / ".lock").exists() and folder.holder() is None
    with folder.locked():
        assert folder.holder() == os.getpid()


def test_a_run_that_failed_before_its_first_checkpoint_does_not_claim_the_folder(smoke_dir, tmp_path):
    from realbogus.train import train

    def cfg(*extra):
        c = compose_train(["model=simple", "loss=ce", "data=smoke", *extra])
        with open_dict(c):
            c.data.dir = str(smoke_dir)
            c.trainer.update(epochs=1, steps_per_epoch=3, batch_size=64, n_bootstrap=10, progress="none")
        return c

    # fails inside the fit (after the folder was taken): more warm-up steps than the run has
    with pytest.raises(ConfigError, match="warmup_steps"):
        train(cfg("schedule=cosine", "schedule.warmup_steps=500", "schedule.max_warmup_fraction=1"), tmp_path)
    state = RunDir(tmp_path).state()
    assert state["status"] == "failed" and "warmup_steps" in state["reason"]
    assert RunDir(tmp_path).holder() is None
    # the corrected command (another config) uses the folder
    metrics = train(cfg("schedule=cosine", "schedule.warmup_steps=1"), tmp_path)
    assert 0 <= metrics["auc"] <= 1 and RunDir(tmp_path).status(epochs=1) == "done"
    # once it holds a finished run, another experiment is refused
    with pytest.raises(ConfigError, match="holds a run with a different config"):
        train(cfg("schedule=cosine", "schedule.warmup_steps=2"), tmp_path)


BAD_VALUES = [
    ("trainer.epochs=abc", "trainer.epochs: expected a positive integer, got 'abc'"),
    ("trainer.epochs=0", "trainer.epochs: expected a positive integer, got 0"),
    ("trainer.batch_size=0", "trainer.batch_size: expected a positive integer, got 0"),
    ("trainer.batch_size=2.5", "trainer.batch_size: expected a positive integer, got 2.5"),
    ("loss.lambda_ce=abc", "loss.lambda_ce: expected a non-negative number, got 'abc'"),
    ("trainer.validation_fraction=1.5", "trainer.validation_fraction: expected a number strictly between 0 and 1"),
    ("optimizer.learning_rate=-1", "optimizer.learning_rate: expected a positive number, got -1"),
    ("trainer.precision=float16", "trainer.precision: expected one of float32, mixed_bfloat16, auto"),
    ("trainer.resume=maybe", "trainer.resume: expected true or false, got 'maybe'"),
    ("loss.vat.power_iterations=0", "loss.vat.power_iterations: expected a positive integer, got 0"),
    ("seed=-3", "seed: expected a non-negative integer, got -3"),
    ("label_cleaning=score_threshold label_cleaning.trainer.epochs=x",
     "label_cleaning.trainer.epochs: expected a positive integer, got 'x'"),
    ("loss.lambda_ce=0 loss.lambda_ech=0 loss.lambda_lds=0", "every weight"),
]


@pytest.mark.parametrize("override,message", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_are_refused_by_name(override, message):
    from realbogus.schema import check_train_config

    with pytest.raises(ConfigError) as err:
        check_train_config(compose_train(override.split()))
    assert message in str(err.value)


def test_whole_numbers_reach_keras_as_floats():
    from realbogus.schema import check_train_config
    from realbogus.training.fit import build_optimizer

    cfg = check_train_config(compose_train(["optimizer=sgd", "optimizer.momentum=0", "optimizer.learning_rate=1",
                                            "loss.lambda_ce=1"]))
    assert isinstance(cfg.optimizer.momentum, float) and isinstance(cfg.optimizer.learning_rate, float)
    assert isinstance(cfg.loss.lambda_ce, float)
    opt = build_optimizer(cfg.optimizer)
    assert float(opt.momentum) == 0.0 and float(opt.learning_rate) == 1.0


def test_the_command_refuses_a_bad_value_in_one_line_before_loading_tensorflow_or_data(tmp_path):
    res = run([sys.executable, "-m", "realbogus.train", "data=smoke", f"data.dir={tmp_path / 'data'}",
               "trainer.epochs=abc", f"hydra.run.dir={tmp_path / 'run'}"])
    assert res.returncode == 2
    assert res.stderr.strip() == "error: trainer.epochs: expected a positive integer, got 'abc'"
    assert not (tmp_path / "data").exists()  # nothing simulated
    assert not (tmp_path / "run" / "run_state.json").exists()  # the folder was not claimed


@pytest.mark.parametrize("module,says,not_listed", [
    ("realbogus.train", "train one real/bogus classifier", None),
    ("realbogus.evaluate", "Recompute the evaluation outputs", "optimizer: "),
    ("realbogus.data.convert", "Convert external stamps", "optimizer: "),
    ("realbogus.noise_sweep", "label-noise robustness study", None),
    ("realbogus.reproduce", "every figure of the paper", "optimizer: "),
])
def test_every_command_help_says_what_it_does_with_examples(module, says, not_listed):
    res = run([sys.executable, "-m", module, "--help"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert says in res.stdout and "Examples:" in res.stdout and res.stdout.count(f"python -m {module}") >= 3
    if not_listed:
        assert not_listed not in res.stdout  # the training groups this command does not use


def _imports(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_training_fits_networks_and_knows_nothing_of_label_handling_or_runs_pipeline():
    """training/ is imported by label cleaning's stage 1, so it must not import label handling back
    (the cycle training.driver -> label_errors -> label_errors.oof -> training.driver is gone)."""
    for path in (REPO / "realbogus" / "training").glob("*.py"):
        bad = {m for m in _imports(path) if m.startswith(("realbogus.label_errors", "realbogus.label_noise",
                                                            "realbogus.train", "realbogus.noise_sweep"))
               and not m.startswith("realbogus.training")}
        assert not bad, (path.name, bad)


def test_run_folder_file_names_are_written_in_one_place():
    import re

    names = ("run_state.json", "run_config.yaml")
    for path in (REPO / "realbogus").rglob("*.py"):
        if path.name == "rundir.py":
            continue
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        literals = re.findall(r"""["']([\w.]+)["']""", code)
        assert not set(literals) & set(names), path


def test_an_output_folder_under_a_file_is_one_line_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("")
    res = run([sys.executable, "-m", "realbogus.train", "data=smoke", f"data.dir={tmp_path / 'data'}",
               f"hydra.run.dir={tmp_path / 'afile' / 'run'}"])
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: hydra.run.dir={tmp_path / 'afile' / 'run'}: {tmp_path / 'afile'} is a file, not a folder"


@pytest.mark.skipif(os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia"), reason="a GPU is here")
def test_no_gpu_probe_error_on_a_machine_without_a_gpu():
    env = {k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    res = subprocess.run([sys.executable, "-c", "import realbogus, tensorflow as tf; tf.config.list_physical_devices()"],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "cuInit" not in res.stderr and "E0000" not in res.stderr


def test_the_cosine_warm_up_is_capped_at_a_share_of_the_planned_steps():
    from omegaconf import OmegaConf

    from realbogus.training.fit import build_schedule

    def rate(schedule, total, step):
        return float(build_schedule(OmegaConf.create(schedule), 1.0, total)(step))

    cosine = {"name": "cosine", "warmup_steps": 300, "final_fraction": 0.0, "max_warmup_fraction": 0.3}
    # a long run warms up over the configured 300 steps: half the peak at step 150, the peak at 300
    assert rate(cosine, 1056, 150) == pytest.approx(0.5, abs=1e-6)
    assert rate(cosine, 1056, 300) == pytest.approx(1.0, abs=1e-6)
    # a 100-step run warms up over its first 30 steps, then decays to 0 at its last step
    assert rate(cosine, 100, 15) == pytest.approx(0.5, abs=1e-6)
    assert rate(cosine, 100, 30) == pytest.approx(1.0, abs=1e-6)
    assert rate(cosine, 100, 100) == pytest.approx(0.0, abs=1e-6)
    # without the cap a warm-up as long as the run is refused
    with pytest.raises(ConfigError, match="warmup_steps"):
        build_schedule(OmegaConf.create({**cosine, "max_warmup_fraction": 1.0}), 1.0, 100)


def test_options_of_a_loss_term_that_is_off_do_not_block_a_resume():
    from realbogus.rundir import config_diff, resume_neutral_keys

    def loss(**kw):
        base = {"lambda_ce": 0.1, "lambda_ech": 0.0, "lambda_lds": 0.0, "margin": 0.25, "ech_warmup_steps": 0,
                "vat": {"radius": "fixed", "xi": 1e-3, "fraction": 1.0}}
        base.update(kw)
        return {"schedule": {"name": "cosine"}, "loss": base}

    def blocking(old, new):
        return [d for d in config_diff(old, new) if not d.startswith(resume_neutral_keys(new))]

    ce = loss()
    # CE alone: VAT's and ECH's options are not computed, so they may differ
    assert blocking(ce, loss(vat={"radius": "noise", "xi": 0.1, "fraction": 1.0}, margin=1.0)) == []
    # with the term on they are the experiment
    vat_on = loss(lambda_lds=0.1)
    assert blocking(vat_on, loss(lambda_lds=0.1, vat={"radius": "noise", "xi": 1e-3, "fraction": 1.0})) == [
        "loss.vat.radius"]
    assert blocking(loss(lambda_ech=0.1), loss(lambda_ech=0.1, margin=1.0)) == ["loss.margin"]
    # and a weight itself always is
    assert blocking(ce, loss(lambda_lds=0.1)) == ["loss.lambda_lds"]
    # more epochs extend a constant-rate run, but change a cosine run's whole schedule
    assert blocking({**ce, "trainer": {"epochs": 2}}, {**ce, "trainer": {"epochs": 3}}) == ["trainer.epochs"]
    constant = {**ce, "schedule": {"name": "constant"}}
    assert blocking({**constant, "trainer": {"epochs": 2}}, {**constant, "trainer": {"epochs": 3}}) == []


def test_a_stream_kept_after_its_run_still_writes_to_the_terminal(tmp_path, capsys):
    """A logging handler (or a worker's next job) holding the run's stdout after the run ended
    must not fail with "I/O operation on closed file": it reaches the terminal, not the log."""
    import logging

    run = RunDir(tmp_path / "run")
    with run.logging_to_file():
        kept = sys.stderr
        handler = logging.StreamHandler(kept)
        print("inside the run", file=kept)
    logger = logging.getLogger("realbogus.test_kept_stream")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        kept.write("after the run\n")  # raised ValueError before the fix
        kept.flush()
        logger.warning("a late warning")
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "after the run" in err and "a late warning" in err and "Logging error" not in err
    log = run.log_path.read_text()
    assert "inside the run" in log and "after the run" not in log


def test_a_closed_terminal_stream_does_not_fail_the_run(tmp_path, monkeypatch):
    """In a multirun's worker the process's own stderr was found closed by a later job: the run
    goes on, its log still gets every line, and closing the tee closes nothing."""
    import io

    dead = io.StringIO()
    dead.close()
    monkeypatch.setattr(sys, "stderr", dead)
    monkeypatch.setattr(sys, "__stderr__", dead)
    run = RunDir(tmp_path / "run")
    with run.logging_to_file():
        assert sys.stderr.isatty() is False  # raised "I/O operation on closed file" before
        print("still logged", file=sys.stderr, flush=True)
        sys.stdout.close()
        print("stdout still open", flush=True)
    assert sys.stderr is dead and not sys.stdout.closed
    log = run.log_path.read_text()
    assert "still logged" in log and "stdout still open" in log
