"""Convert external stamps into the realbogus HDF5 format.

    python -m realbogus.data.convert input=PATH output=FILE.h5 [layout=auto|zenodo|npy|fits|hdf5]
        [split=train|test] [nan_policy=error|fill] [max_masked_fraction=0.25] [overwrite=false]

Reads any input :mod:`realbogus.data.loaders` accepts, block by block, and writes it through
:class:`realbogus.data.format.DatasetWriter`: memory stays bounded by one block, and the output
appears only when complete (an error leaves no file). A Zenodo directory holding every sensor's
``images<id>.npy`` + ``params<id>.csv`` becomes one file with ``sensor_id`` per sample; a
directory holding a ``real*.npy`` + ``bogus*.npy`` test pair becomes a labelled test file.
Columns the input lacks get their "unknown" values (label -1, sensor_id -1, kind ``unknown``,
mag NaN); identifier columns (``candid``, ``objectId``, FITS ``name``, Zenodo ``sample_index``,
...) are kept as extra columns. The conversion settings are stored as YAML in the file
attribute ``config``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from realbogus.data.format import CORE_FIELDS, OPTIONAL_FIELDS, DatasetWriter
from realbogus.data.loaders import NAN_POLICIES, open_stamps, with_core_columns, _check_policy
from realbogus.errors import ConfigError, DataError, report_errors

__all__ = ["convert", "main"]

_OUTPUT_SUFFIXES = (".h5", ".hdf5")


def _extra_dtype(values: np.ndarray) -> str:
    values = np.asarray(values)
    if values.dtype.kind in "USO":
        return "str"
    return values.dtype.str


def convert(
    input: str | os.PathLike,
    output: str | os.PathLike,
    layout: str = "auto",
    split: str | None = None,
    nan_policy: str = "error",
    max_masked_fraction: float = 0.25,
    overwrite: bool = False,
    block_rows: int = 4096,
    progress: bool = False,
    config_yaml: str | None = None,
) -> dict:
    """Convert ``input`` into the HDF5 file ``output``.

    Parameters
    ----------
    input, output
        Source file or directory; destination ``.h5``/``.hdf5`` file.
    layout, split, nan_policy, max_masked_fraction
        As in :func:`realbogus.data.loaders.open_stamps` and ``iter_blocks``.
    overwrite
        Replace an existing ``output``; otherwise its existence is an error.
    block_rows
        Stamps per block read and written.
    progress
        Show a progress bar.
    config_yaml
        Text stored in the ``config`` attribute (default: these arguments as YAML).

    Returns
    -------
    dict
        ``path``, ``n_rows`` and counts of ``real``, ``bogus`` and ``unlabelled`` samples.
    """
    output = Path(output)
    if output.suffix.lower() not in _OUTPUT_SUFFIXES:
        raise ConfigError(f"output={output}: expected a .h5 or .hdf5 file name")
    if output.is_dir():
        raise DataError(f"{output}: is a directory, expected an HDF5 file name")
    if output.exists() and not overwrite:
        raise DataError(f"{output}: already exists (pass overwrite=true to replace it)")
    _check_policy(nan_policy, max_masked_fraction, block_rows)
    if config_yaml is None:
        config_yaml = OmegaConf.to_yaml(OmegaConf.create({
            "input": str(input), "output": str(output), "layout": layout, "split": split,
            "nan_policy": nan_policy, "max_masked_fraction": float(max_masked_fraction),
        }))
    from realbogus.progress import progress_bar

    counts = {"real": 0, "bogus": 0, "unlabelled": 0}
    with open_stamps(input, layout=layout, split=split) as src:
        columns = with_core_columns(src.columns, src.n)
        extra = {name: _extra_dtype(col) for name, col in columns.items()
                 if name not in CORE_FIELDS and name not in OPTIONAL_FIELDS}
        if nan_policy == "fill":
            extra["n_masked"] = "int16"
        attrs = {
            "config": config_yaml,
            "split": split or src.split,
            "source": str(input),
            "source_layout": src.layout,
            "nan_policy": nan_policy,
        }
        attrs.update(src.attrs)
        bar = progress_bar(total=src.n, unit="stamp", disable=not progress, desc=f"convert {Path(input).name}")
        # Small inputs get small chunks: HDF5 allocates whole chunks even for a few rows.
        chunk_rows = int(min(512, max(16, src.n)))
        with DatasetWriter(output, attrs=attrs, chunk_rows=chunk_rows, with_true_label="true_label" in columns,
                           extra_fields=extra, overwrite=overwrite) as writer:
            for images, cols in src.iter_blocks(block_rows, nan_policy, max_masked_fraction):
                cols = with_core_columns(cols, len(images))
                writer.append(images, **cols)
                label = cols["label"]
                counts["real"] += int((label == 1).sum())
                counts["bogus"] += int((label == 0).sum())
                counts["unlabelled"] += int((label == -1).sum())
                bar.update(len(images))
        bar.close()
        n = src.n
    return {"path": str(output), "n_rows": n, **counts}


@report_errors
def _run(cfg: DictConfig) -> dict:
    for key in ("input", "output"):
        if OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
            raise ConfigError(f"{key}=PATH is required (python -m realbogus.data.convert input=PATH output=FILE.h5)")
    if cfg.nan_policy not in NAN_POLICIES:
        raise ConfigError(f"nan_policy={cfg.nan_policy!r} is not one of {', '.join(NAN_POLICIES)}")
    if cfg.progress not in ("auto", "bar", "none"):
        raise ConfigError(f"progress={cfg.progress!r} is not one of auto, bar, none")
    progress = cfg.progress == "bar" or (cfg.progress == "auto" and sys.stderr.isatty())
    summary = convert(
        cfg.input, cfg.output, layout=cfg.layout, split=cfg.split, nan_policy=cfg.nan_policy,
        max_masked_fraction=float(cfg.max_masked_fraction), overwrite=bool(cfg.overwrite),
        block_rows=int(cfg.block_rows), progress=progress, config_yaml=OmegaConf.to_yaml(cfg),
    )
    print(
        f"wrote {summary['path']}: {summary['n_rows']} stamps "
        f"({summary['real']} real, {summary['bogus']} bogus, {summary['unlabelled']} unlabelled)"
    )
    return summary


@hydra.main(version_base="1.3", config_path="../../conf", config_name="convert")
def main(cfg: DictConfig) -> None:
    """Command-line entry point (Hydra)."""
    _run(cfg)


if __name__ == "__main__":
    main()
