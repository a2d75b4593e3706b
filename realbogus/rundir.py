"""The run folder: one owner for its file names, its state, its lock and the resume decision.

Every training run (a ``python -m realbogus.train`` command, a cell of the noise sweep, a fold of
label cleaning's stage 1) writes into one folder. :class:`RunDir` is the only code that knows
the folder's layout, so every command (train, evaluate, noise_sweep, reproduce, the report) reads
it through this class::

    run_config.yaml           the composed config of the run (resolved)
    run_state.json            {"status": running | interrupted | failed | done, "reason": ..., ...}
    .lock                     exclusive lock held by the process working in the folder (its pid)
    train.log                 everything the run printed, appended session after session
    .hydra/overrides.yaml     the command-line overrides of the latest session (written by Hydra)
    checkpoint/state.json     epochs finished, early-stopping state, names of the weight files
    checkpoint/*.weights.h5   the weights (with optimizer state) it names
    history.csv, tensorboard/ per-epoch losses and metrics
    model.keras               the trained network (best epoch)
    validation_predictions.csv, predictions.csv, metrics.json, ...   evaluation outputs

States
------
``running``: a process holds the folder (or died without a word: then the lock is free).
``interrupted``: stopped by Ctrl-C or SIGTERM; rerunning the same command resumes.
``failed``: stopped by an error, named in ``reason``; rerunning resumes after the last checkpoint.
``done``: trained, evaluated and finalised.

Resume rule
-----------
A folder whose run never finished an epoch holds nothing and is reused by any config. Otherwise a
config may continue it only if it differs from ``run_config.yaml`` in :func:`resume_neutral_keys`
alone: display and scoring settings (:data:`RESULT_NEUTRAL_KEYS`), ``trainer.precision`` (the
arithmetic, not the experiment) and ``trainer.epochs`` when the learning rate does not depend on
the planned length of the run, and the options of a loss term whose weight is 0 (``loss.vat.*``
with ``lambda_lds: 0``, ``loss.margin`` and ``loss.ech_warmup_steps`` with ``lambda_ech: 0``: the
term is not computed). Keys added to the configs after a run was saved are filled with
their defaults by :func:`fill_added_keys` before comparing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, Mapping

from realbogus.errors import ConfigError, RealbogusError
from realbogus.io import atomic_write, read_json, save_json

__all__ = [
    "RunDir",
    "RunLockedError",
    "RESULT_NEUTRAL_KEYS",
    "resume_neutral_keys",
    "fill_added_keys",
    "config_diff",
    "STATUSES",
]

STATUSES = ("missing", "running", "interrupted", "failed", "done")

#: Trainer keys that change only what is shown or how scoring is batched, never the trained model.
RESULT_NEUTRAL_KEYS = ("trainer.resume", "trainer.progress", "trainer.progress_seconds", "trainer.eval_batch_size",
                       "trainer.n_bootstrap")


class RunLockedError(RealbogusError):
    """Another live process holds the run folder."""


def resume_neutral_keys(cfg: Mapping) -> tuple[str, ...]:
    """Config keys whose change still lets a run folder continue (see the module docstring)."""
    keys = RESULT_NEUTRAL_KEYS + ("trainer.precision",)
    schedule = (cfg.get("schedule") or {}) if isinstance(cfg, Mapping) else {}
    if str(schedule.get("name", "constant")) == "constant":
        # A constant learning rate does not know the run's length: more epochs extend the run.
        keys += ("trainer.epochs",)
    loss = (cfg.get("loss") or {}) if isinstance(cfg, Mapping) else {}
    if float(loss.get("lambda_lds", 1.0) or 0.0) == 0.0:
        keys += ("loss.vat.",)  # VAT's options, when its term is off (the step does not compute it)
    if float(loss.get("lambda_ech", 1.0) or 0.0) == 0.0:
        keys += ("loss.margin", "loss.ech_warmup_steps")
    return keys


#: Defaults of config keys added after runs were saved: a run_config.yaml without them was trained
#: as if they had these values. Each entry: dotted key -> value.
_ADDED_KEY_DEFAULTS: dict[str, object] = {
    "label_noise": {"mode": "none", "run_tag": ""},
    "data_subset": {"name": "all", "sensors": None, "n_train": None, "test_sensors": False, "seed": 0,
                    "run_tag": ""},
    "schedule": {"name": "constant", "warmup_steps": 0, "final_fraction": 1.0},
    # 0.3 is today's cap; it reproduces a cosine run saved before the cap existed exactly when that
    # run's warm-up took at most 30% of its steps (the 1,056-step quick runs warm up over 300)
    "schedule.max_warmup_fraction": 0.3,
    "trainer.augment": False,
    "loss.ech_warmup_steps": 0,
    "loss.vat.radius": "fixed",
    "loss.vat.snr_change": 1.0,
    "loss.vat.xi_min": 0.0,
    "loss.vat.fraction": 1.0,
}
#: The same for keys that exist in one model's config only.
_ADDED_MODEL_KEY_DEFAULTS: dict[str, dict[str, object]] = {
    "complex": {"frn_learned_eps": False, "frn_spatial": "mean", "zero_init_residual": False},
}


def fill_added_keys(old: dict) -> dict:
    """Fill keys added to the configs after ``old`` (a saved run config, plain dict) was written."""
    for dotted, value in _ADDED_KEY_DEFAULTS.items():
        *parents, last = dotted.split(".")
        node = old
        for p in parents:
            node = node.setdefault(p, {})
        node.setdefault(last, json.loads(json.dumps(value)))
    model = old.get("model")
    if isinstance(model, dict):
        for key, value in _ADDED_MODEL_KEY_DEFAULTS.get(str(model.get("name")), {}).items():
            model.setdefault(key, value)
    simulation = (old.get("data") or {}).get("simulation")
    if isinstance(simulation, dict):
        from realbogus.simulation.generator import fill_added_keys as fill_simulation

        fill_simulation(simulation)
    return old


def config_diff(a, b, prefix: str = "") -> list[str]:
    """Dotted keys at which two nested plain configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += config_diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class RunDir:
    """A run folder: paths, state, lock, and whether a config may resume it.

    Parameters
    ----------
    path
        The folder (created when the run starts, not by this constructor).
    """

    CONFIG = "run_config.yaml"
    STATE = "run_state.json"
    LOCK = ".lock"
    LOG = "train.log"
    CHECKPOINT = "checkpoint"
    HISTORY = "history.csv"
    TENSORBOARD = "tensorboard"
    MODEL = "model.keras"
    PREDICTIONS = "predictions.csv"
    VALIDATION_PREDICTIONS = "validation_predictions.csv"
    METRICS = "metrics.json"
    #: Hydra's record of the latest session's command-line overrides (hydra.output_subdir/overrides.yaml).
    HYDRA_OVERRIDES = ".hydra/overrides.yaml"
    #: What a run that never reached its first checkpoint may leave behind (removed on a fresh start).
    TRAINING_OUTPUTS = (CHECKPOINT, HISTORY, TENSORBOARD, METRICS, MODEL, PREDICTIONS, VALIDATION_PREDICTIONS)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fh = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- paths
    config_path = property(lambda self: self.path / self.CONFIG)
    state_path = property(lambda self: self.path / self.STATE)
    checkpoint_dir = property(lambda self: self.path / self.CHECKPOINT)
    model_path = property(lambda self: self.path / self.MODEL)
    predictions_path = property(lambda self: self.path / self.PREDICTIONS)
    metrics_path = property(lambda self: self.path / self.METRICS)
    log_path = property(lambda self: self.path / self.LOG)

    # -- readers (used by evaluate, noise_sweep, reproduce and the report)
    def state(self) -> dict | None:
        """``run_state.json``, or None when missing or unreadable."""
        return read_json(self.state_path)

    def checkpoint_state(self) -> dict:
        """The training state saved with the last checkpoint (fresh when there is none)."""
        from realbogus.training.state import load_state

        return load_state(self.checkpoint_dir)

    def has_checkpoint(self) -> bool:
        """True once the run finished at least one epoch (only then does the folder hold a run)."""
        return int(self.checkpoint_state().get("epoch", 0)) > 0

    def saved_config(self) -> dict | None:
        """``run_config.yaml`` as plain Python (keys added later filled in), or None."""
        if not self.config_path.is_file():
            return None
        from omegaconf import OmegaConf

        return fill_added_keys(OmegaConf.to_container(OmegaConf.load(self.config_path), resolve=True))

    def overrides(self) -> list[str] | None:
        """The command-line overrides of the run's latest ``python -m realbogus.train`` session, as
        Hydra recorded them (``.hydra/overrides.yaml``), or None when there is no such record (a run
        trained in-process, or ``hydra.output_subdir=null``). Hydra writes the record before the
        run's own code runs, so a session refused by :meth:`resume_decision` replaces it too."""
        import yaml

        try:
            found = yaml.safe_load((self.path / self.HYDRA_OVERRIDES).read_text())
        except (OSError, yaml.YAMLError):
            return None
        return [str(o) for o in found] if isinstance(found, list) else None

    def status(self, epochs: int | None = None) -> str:
        """One of :data:`STATUSES`. ``done`` needs the evaluation on disk and, when ``epochs`` is
        given, the run trained that far (or stopped early); a done run asked for more epochs is
        ``interrupted`` (a rerun trains on). A ``running`` folder whose process is gone is
        reported as ``interrupted``."""
        state = self.state()
        if state is None:
            return "missing"
        status = state.get("status", "running")
        if status == "done":
            if not self.metrics_path.is_file():
                return "interrupted"
            if epochs is not None:
                ckpt = self.checkpoint_state()
                if not ckpt.get("stopped") and int(ckpt.get("epoch", 0)) < int(epochs):
                    return "interrupted"
            return "done"
        if status == "running" and self.holder() is None:
            return "interrupted"
        return status if status in STATUSES else "running"

    def is_done(self, epochs: int | None = None) -> bool:
        return self.status(epochs) == "done"

    def holder(self) -> int | None:
        """Pid of the live process holding the folder's lock, or None."""
        path = self.path / self.LOCK
        if not path.is_file():
            return None
        with open(path) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                text = fh.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fh, fcntl.LOCK_UN)
        return None

    # -- writers
    def write_state(self, status: str, reason: str | None = None, **extra) -> None:
        """Record the run's state (atomically)."""
        if status not in STATUSES[1:]:
            raise ValueError(f"unknown run status {status!r}")
        save_json(self.state_path, {"status": status, **({"reason": reason} if reason else {}), **extra})

    def write_config(self, cfg) -> None:
        from omegaconf import OmegaConf

        with atomic_write(self.config_path) as fh:
            fh.write(OmegaConf.to_yaml(cfg, resolve=True))

    def clear_training_outputs(self) -> None:
        """Remove what a run that never finished an epoch left behind."""
        for name in self.TRAINING_OUTPUTS:
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    # -- lock
    def acquire(self) -> "RunDir":
        """Take the folder's exclusive lock for the life of this process (or until :meth:`release`).

        Raises
        ------
        RunLockedError
            Another live process holds it. A lock left by a dead process is free (the operating
            system releases it with the process), so it is simply taken over.
        """
        if self._lock_fh is not None:
            return self
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise ConfigError(f"{self.path}: cannot create the run folder ({exc.strerror})") from None
        fh = open(self.path / self.LOCK, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK):
                raise
            fh.seek(0)
            pid = fh.read().strip() or "?"
            fh.close()
            raise RunLockedError(f"{self.path} is in use by another process (pid {pid}); wait for it to finish "
                                 "or stop it, then rerun") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh
        return self

    def release(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    @contextlib.contextmanager
    def locked(self) -> Iterator["RunDir"]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    # -- the resume decision
    def resume_decision(self, cfg, resume: bool = True) -> str:
        """``fresh`` (start over: nothing to keep), ``resume`` (continue) or ``done`` (finished).

        Raises
        ------
        ConfigError
            The folder holds a run of a different experiment.
        """
        from omegaconf import OmegaConf

        if not resume or not self.has_checkpoint() or not self.config_path.is_file():
            return "fresh"
        new = OmegaConf.to_container(cfg, resolve=True)
        diffs = [d for d in config_diff(self.saved_config(), fill_added_keys(new))
                 if not d.startswith(resume_neutral_keys(new))]
        if diffs:
            raise ConfigError(
                f"{self.path} holds a run with a different config ({', '.join(diffs[:5])}); "
                "choose another run_name=... or pass trainer.resume=false to start it over"
            )
        return "done" if self.is_done(int(new["trainer"]["epochs"])) else "resume"

    # -- the run's log
    @contextlib.contextmanager
    def logging_to_file(self) -> Iterator[None]:
        """Copy everything written to stdout and stderr into ``train.log`` (appended)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", buffering=1) as log:
            out, err = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = _Tee(_live(out, sys.__stdout__), log), _Tee(_live(err, sys.__stderr__), log)
            try:
                yield
            finally:
                sys.stdout, sys.stderr = out, err


def _live(stream, fallback):
    """``stream``, or ``fallback`` when ``stream`` is closed (None when both are)."""
    for s in (stream, fallback):
        if s is not None and not getattr(s, "closed", False):
            return s
    return None


class _Tee:
    """A text stream that writes to a terminal stream and a log file; carriage-return progress
    redraws reach the log only as their final line.

    It never fails its run over the terminal side: in a multirun's worker process (Hydra's
    joblib launcher) the worker's own stderr was seen closed by the time a later job ran (every
    ``isatty()`` then raised "I/O operation on closed file"), so a closed or missing terminal
    stream is skipped and the log still gets everything. Closing the tee closes neither side;
    whatever kept a reference to it after its run ended writes to the terminal alone.
    """

    def __init__(self, stream, log):
        self.stream, self.log = stream, log
        self._pending = ""

    def _terminal(self):
        s = self.stream
        return s if s is not None and not getattr(s, "closed", False) else None

    def write(self, text: str) -> int:
        terminal = self._terminal()
        if terminal is not None:
            terminal.write(text)
        buf = self._pending + text
        *lines, self._pending = buf.split("\n")
        if not self.log.closed:
            for line in lines:
                self.log.write(line.rsplit("\r", 1)[-1] + "\n")
        return len(text)

    def flush(self) -> None:
        terminal = self._terminal()
        if terminal is not None:
            terminal.flush()
        if not self.log.closed:
            self.log.flush()

    def isatty(self) -> bool:
        terminal = self._terminal()
        return bool(terminal is not None and terminal.isatty())

    def fileno(self) -> int:
        terminal = self._terminal()
        if terminal is None:
            raise io.UnsupportedOperation("fileno: the terminal stream is closed")
        return terminal.fileno()

    @property
    def closed(self) -> bool:
        return False

    def close(self) -> None:
        """Closing the tee closes neither the terminal stream nor the run's log."""

    def __getattr__(self, name):
        return getattr(self.stream, name)
