"""Simulate a dataset: ``python -m realbogus.simulate data=smoke data.dir=DIR``.

Writes ``DIR/train.h5`` and ``DIR/test.h5`` (default ``DIR``: ``data/<name>/``), reusing complete
files generated with the same parameters unless ``overwrite=true``, then prints a summary:
triplets per kind, the label-error rates as generated, and the generation speed.
"""

from __future__ import annotations

import time

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from realbogus.data.format import open_dataset
from realbogus.data.kinds import KIND_NAMES
from realbogus.errors import ConfigError, report_errors
from realbogus.simulation import (dataset_paths, existing_is_current, remove_stale_temporaries, resolve_config,
                                  simulate_split)

__all__ = ["run", "summarise"]


def summarise(path) -> dict:
    """Counts per kind and label-error rates of a dataset file."""
    with open_dataset(path) as ds:
        kind = ds.column("kind")
        label = ds.column("label")
        truth = ds.column("true_label") if "true_label" in ds.fields else label
        names = ds.kind_names
    counts = np.bincount(kind, minlength=len(names))
    out = {
        "n_rows": int(kind.size),
        "kind_counts": {names[i]: int(c) for i, c in enumerate(counts) if c},
        "n_real_labelled": int((label == 1).sum()),
        "n_bogus_labelled": int((label == 0).sum()),
    }
    out["real_labelled_truly_bogus"] = float(((label == 1) & (truth == 0)).sum() / max(out["n_real_labelled"], 1))
    out["bogus_labelled_truly_real"] = float(((label == 0) & (truth == 1)).sum() / max(out["n_bogus_labelled"], 1))
    return out


def _print_summary(split: str, stats: dict, rate: float | None) -> None:
    print(f"{split}: {stats['n_rows']} triplets ({stats['n_real_labelled']} labelled real, "
          f"{stats['n_bogus_labelled']} labelled bogus)")
    print(f"  label errors: {100 * stats['bogus_labelled_truly_real']:.3f}% of bogus-labelled are real, "
          f"{100 * stats['real_labelled_truly_bogus']:.3f}% of real-labelled are bogus")
    if rate is not None:
        print(f"  speed: {rate:,.0f} triplets/s")
    order = [k for k in KIND_NAMES if k in stats["kind_counts"]]
    width = max(len(k) for k in order)
    for k in order:
        print(f"  {k:<{width}} {stats['kind_counts'][k]:>9}")


@report_errors
def run(cfg: DictConfig) -> dict:
    """Simulate (or reuse) the train and test files of ``cfg.data``; return per-split summaries."""
    data = cfg.data
    if data.get("source", "simulate") != "simulate":
        raise ConfigError(f"data={data.get('name')} has source {data.get('source')!r}: nothing to simulate")
    sim = resolve_config(data.get("simulation"))
    workers = cfg.get("workers")
    config_text = OmegaConf.to_yaml(data, resolve=True)
    results = {}
    for split, path in zip(("train", "test"), dataset_paths(data)):
        rate = None
        for tmp in remove_stale_temporaries(path):
            print(f"{split}: removed {tmp.name}, left by an interrupted run")
        if not cfg.get("overwrite", False) and existing_is_current(path, sim, split):
            print(f"{split}: reusing complete file {path} (overwrite=true to regenerate)")
        else:
            total = sim[split]["n_real"] + sim[split]["n_bogus"]
            bar = None
            if cfg.get("progress", True):
                from realbogus.progress import progress_bar

                bar = progress_bar(total=total, desc=f"simulate {split}", unit="triplet", unit_scale=True)
            t0 = time.perf_counter()
            try:
                simulate_split(sim, split, path, overwrite=True, workers=workers,
                               progress=bar.update if bar else None, config_text=config_text)
            finally:
                if bar is not None:
                    bar.close()
            rate = total / (time.perf_counter() - t0)
            print(f"{split}: wrote {path}")
        stats = summarise(path)
        _print_summary(split, stats, rate)
        results[split] = dict(stats, rate=rate, path=str(path))
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="simulate")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
