"""Simulation of (new, reference, difference) triplets with known ground truth.

The camera is a preset of ``conf/instrument/`` (``simulation.instrument`` and the conditions,
mixes and labelling it implies): Tomo-e Gozen by default, ZTF as a second one
(:func:`instrument_preset`). Modules, one job each:

- :mod:`.sensors`: the camera's sensors (layout, gain, read noise, PSF quality, vignetting,
  defects, each sensor's mix of bogus kinds);
- :mod:`.psf`: Moffat PSFs and smoothing kernels on the pixel grid, vectorised over a batch;
- :mod:`.scenes`: observing conditions, stars and galaxies, PSF-matched subtraction and the
  noise model (electrons in, ADU out);
- :mod:`.transients`: real point sources (injections, actual transients);
- :mod:`.artifacts`: bogus detections of every kind and the label-error kinds;
- :mod:`.generator`: chunked, parallel, deterministic generation of a split.

Entry points: :func:`ensure_dataset` (used by every command that needs data) and
:func:`simulate_split`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from realbogus.errors import ConfigError, DataError
from realbogus.simulation.generator import (
    DEFAULTS,
    SIM_VERSION,
    fingerprint,
    generate_kind,
    instrument_preset,
    remove_stale_temporaries,
    resolve_config,
    simulate_split,
)

__all__ = [
    "DEFAULTS",
    "ensure_dataset",
    "dataset_paths",
    "existing_is_current",
    "simulate_split",
    "generate_kind",
    "resolve_config",
    "instrument_preset",
    "remove_stale_temporaries",
]


def _plain(data_cfg) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(data_cfg, DictConfig):
            return OmegaConf.to_container(data_cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    return dict(data_cfg)


def dataset_paths(data_cfg) -> tuple[Path, Path]:
    """``(dir/train.h5, dir/test.h5)`` for a data config."""
    cfg = _plain(data_cfg)
    if not cfg.get("dir"):
        raise ConfigError("data.dir is not set (the folder holding train.h5 and test.h5)")
    d = Path(str(cfg["dir"]))
    return d / "train.h5", d / "test.h5"


def existing_is_current(path: Path, sim_cfg: dict, split: str) -> bool:
    """Whether ``path`` is a complete ``split`` file generated with these simulation parameters.

    Raises
    ------
    DataError
        If the file exists, is complete, but was simulated with other parameters.
    """
    from realbogus.data.format import open_dataset

    if not path.exists():
        return False
    try:
        with open_dataset(path) as ds:
            stored = ds.attrs.get("sim_fingerprint")
            version = ds.attrs.get("sim_version")
    except DataError:
        return False  # incomplete or unreadable: generate it again
    if stored is not None and stored != fingerprint(sim_cfg, split):
        why = "different parameters"
        if version is not None and int(version) != SIM_VERSION:
            why = f"simulator version {int(version)} (this is version {SIM_VERSION})"
        raise DataError(f"{path}: was simulated with {why}; regenerate it (python -m realbogus.simulate "
                        "with the same data options and overwrite=true), delete it, or choose another data.dir")
    return True


def ensure_dataset(data_cfg, overwrite: bool = False, workers: int | None = None,
                   log: Callable[[str], None] | None = print, progress: bool = True,
                   config_text: str = "") -> tuple[Path, Path]:
    """Return ``(train_path, test_path)`` of a data config, simulating them when needed.

    Parameters
    ----------
    data_cfg
        The ``data`` config group: ``dir``, ``source`` (``simulate`` or ``hdf5``) and, for
        ``simulate``, ``simulation`` (parameters merged over :data:`DEFAULTS`).
    overwrite
        Simulate again even if complete files exist.
    workers
        Processes for the simulation (default: ``simulation.workers``).
    log
        Where to report reuse and generation (``None`` for silence).
    progress
        Show a progress bar while simulating.
    config_text
        YAML of the calling command's configuration, stored in the files.

    Raises
    ------
    DataError
        ``source: hdf5`` and a file is missing; or an existing file was simulated with other
        parameters (without ``overwrite``).
    ConfigError
        An unknown ``source`` or invalid simulation parameters.
    """
    cfg = _plain(data_cfg)
    train_path, test_path = dataset_paths(cfg)
    source = cfg.get("source", "simulate")
    if source == "hdf5":
        for p in (train_path, test_path):
            if not p.exists():
                raise DataError(f"{p}: no such file (data.source is hdf5: convert your data first)")
        return train_path, test_path
    if source != "simulate":
        raise ConfigError(f"data.source must be 'simulate' or 'hdf5', got {source!r}")
    sim = resolve_config(cfg.get("simulation"))
    if not config_text:
        import yaml

        config_text = yaml.safe_dump(dict(cfg, simulation=sim), sort_keys=False)
    say = log or (lambda _msg: None)
    for split, path in (("train", train_path), ("test", test_path)):
        remove_stale_temporaries(path)
        if not overwrite and existing_is_current(path, sim, split):
            say(f"{split}: reusing {path}")
            continue
        total = sim[split]["n_real"] + sim[split]["n_bogus"]
        bar = None
        if progress:
            from realbogus.progress import progress_bar

            bar = progress_bar(total=total, desc=f"simulate {split}", unit="triplet", unit_scale=True)
        try:
            stats = simulate_split(sim, split, path, overwrite=True, workers=workers,
                                   progress=bar.update if bar else None, config_text=config_text)
        finally:
            if bar is not None:
                bar.close()
        say(f"{split}: wrote {path} ({stats['n_rows']} triplets, {stats['rate']:.0f} triplets/s)")
    return train_path, test_path
