"""Benchmark the simulator: triplets per second and peak memory.

Usage::

    python benchmarks/bench_simulate.py [--rows 40960] [--workers 2] [--split train] [--instrument tomoe]
                                        [--keep DIR]

Generates ``--rows`` triplets of a split with the default (``quick``) physics and the camera
preset ``--instrument`` (``conf/instrument/``) into a temporary file, and prints the rate (wall clock, and per CPU-second of all processes, which does not depend
on other jobs sharing the machine) and the peak resident memory of the writing process and of the
largest worker. The output is deleted unless ``--keep`` names a folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from realbogus.simulation import instrument_preset, resolve_config, simulate_split


def _max_rss_mb(who: int) -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1.0 / 1024.0 if sys.platform != "darwin" else 1.0 / 1024.0**2
    return resource.getrusage(who).ru_maxrss * scale


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40960, help="triplets to generate")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--chunk-rows", type=int, default=None, help="rows per chunk (default: config)")
    parser.add_argument("--instrument", default="tomoe", help="camera preset (conf/instrument/<name>.yaml)")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the output in")
    args = parser.parse_args(argv)

    cfg = resolve_config(instrument_preset(args.instrument))
    real_fraction = cfg["train"]["n_real"] / (cfg["train"]["n_real"] + cfg["train"]["n_bogus"])
    if args.split == "test":
        real_fraction = cfg["test"]["n_real"] / (cfg["test"]["n_real"] + cfg["test"]["n_bogus"])
    n_real = int(round(args.rows * real_fraction))
    cfg[args.split] = {"n_real": n_real, "n_bogus": args.rows - n_real}
    if args.chunk_rows:
        cfg["chunk_rows"] = args.chunk_rows

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_simulate_"))
    path = folder / f"{args.split}.h5"
    t0, c0 = time.perf_counter(), _cpu_seconds()
    stats = simulate_split(cfg, args.split, path, overwrite=True, workers=args.workers)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    size_mb = path.stat().st_size / 1024.0**2
    result = {
        "instrument": args.instrument,
        "rows": stats["n_rows"],
        "workers": args.workers,
        "seconds": seconds,
        "triplets_per_s": stats["n_rows"] / seconds,
        "triplets_per_cpu_s": stats["n_rows"] / cpu,
        "load_average": os.getloadavg()[0],
        "peak_rss_main_mb": _max_rss_mb(resource.RUSAGE_SELF),
        "peak_rss_worker_mb": _max_rss_mb(resource.RUSAGE_CHILDREN),
        "file_mb": size_mb,
    }
    if args.keep is None:
        path.unlink()
        os.rmdir(folder)
    print(f"simulate {args.split} ({args.instrument}): {result['rows']} triplets on {args.workers} worker(s) in {seconds:.1f} s "
          f"= {result['triplets_per_s']:,.0f} triplets/s ({result['triplets_per_cpu_s']:,.0f} per CPU-second; "
          f"load average {result['load_average']:.1f})")
    print(f"peak memory: writer {result['peak_rss_main_mb']:.0f} MB, largest worker "
          f"{result['peak_rss_worker_mb']:.0f} MB; file {size_mb:.0f} MB")
    return result


if __name__ == "__main__":
    main()
