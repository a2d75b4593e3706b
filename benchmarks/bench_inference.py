"""Inference speed: the straightforward float32 Keras path against the fast path of ``predict``.

    python benchmarks/bench_inference.py [--complex RUN] [--simple RUN] [--data TEST.h5]
                                         [--stamps N] [--rounds 5] [--batch 512]
                                         [--variants] [--night simple complex] [--end-to-end N]

For each model, in one process and interleaved round by round (so a busy machine slows every
path alike), it times

- ``fp32 predict``: ``model.predict(x, batch_size=...)`` of the float32 network, the baseline;
- ``fp32 graph``: the float32 network through one fixed-shape ``tf.function``, one batch at a
  time;
- ``fast``: exactly what ``python -m realbogus.predict`` uses (bfloat16 copy where the CPU
  has it, fixed-shape graph, two batches in flight);

and with ``--variants`` also each ingredient on its own (two streams in float32, one stream in
bfloat16), XLA compilation, a float32 first layer and other batch sizes.
Rates are stamps/s in the best round (other work on a shared machine only slows rounds down;
the load average is printed); ratios are against ``fp32 predict``. On a labelled set
(``--data``, default the smoke test split if present, else synthetic stamps) every path's AUC
difference and largest score difference from ``fp32 predict`` are reported. ``--night``
scores 10^6 stamps with the fast path (stamps held in memory, cycled) and reports the wall
time; otherwise the time for 10^6 stamps is extrapolated from the measured rate.
``--end-to-end N`` also times the whole ``predict`` command on an N-stamp ``.npy`` file
(reading, scoring, writing the CSV). RUN is a run folder or ``.keras`` file; without one the
model has random weights (the rates hold, the AUC means nothing).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return sorted(f for f in line.split(":", 1)[1].split() if "bf16" in f or f.startswith("amx")
                                  or f in ("avx512f", "avx512_vnni"))
    except OSError:
        pass
    return []


def load_network(name: str, run: str | None):
    import keras

    from realbogus.models import build_model, load_model

    if run:
        path = Path(run)
        return load_model(path / "model.keras" if path.is_dir() else path), str(path)
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}"])
    keras.utils.set_random_seed(0)
    return build_model(cfg.model), "random weights"


def labelled_set(path: str | None, n_max: int):
    from realbogus.data.format import read_dataset

    candidates = [path] if path else [os.path.join(os.environ.get("REALBOGUS_DATA_DIR", str(REPO / "data")),
                                                   "smoke", "test.h5")]
    for p in candidates:
        if p and Path(p).is_file():
            d = read_dataset(p, fields=["label"])
            keep = np.flatnonzero(d["label"] >= 0)[:n_max]
            return d["images"][keep], d["label"][keep].astype(int), p
    rng = np.random.default_rng(0)
    x = rng.poisson(300.0, size=(min(n_max, 4096), 29, 29, 3)).astype(np.float32)
    y = (np.arange(x.shape[0]) % 2).astype(int)
    x[y == 1, 12:17, 12:17, 0] += 200.0
    x[..., 2] = x[..., 0] - x[..., 1]
    return x, y, "synthetic"


def tile(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x] * (-(-n // x.shape[0])))[:n]


def rate_table(methods: dict, x: np.ndarray, rounds: int) -> dict[str, float]:
    for fn in methods.values():  # trace, warm up
        fn(x[:1024])
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t0)
    # the best round: other work on a shared machine only ever slows a round down
    return {k: x.shape[0] / float(np.min(v)) for k, v in times.items()}


def bench_model(name: str, run: str | None, data: str | None, n_time: int, rounds: int, batch: int,
                variants: bool, night: bool) -> dict:
    from realbogus.deploy.inference import Scorer
    from realbogus.evaluation.metrics import auc
    from realbogus.evaluation.scoring import scores_from_logits

    network, source = load_network(name, run)
    xl, yl, data_source = labelled_set(data, 20000)
    x = tile(xl, n_time)
    fast = Scorer(network, batch_size=batch, precision="auto")
    methods = {
        "fp32 predict": lambda a: network.predict(a, batch_size=batch, verbose=0),
        "fp32 graph": Scorer(network, batch_size=batch, precision="float32", streams=1).logits,
        f"fast ({fast.precision})": fast.logits,
    }
    if variants:
        methods["fp32 graph, 2 streams"] = Scorer(network, batch, "float32", streams=2).logits
        methods["fast, 1 stream"] = Scorer(network, batch, "auto", streams=1).logits
        methods["fp32 graph + XLA"] = Scorer(network, batch, "float32", jit_compile=True).logits
        if fast.precision != "float32":
            methods["bf16 graph + XLA"] = Scorer(network, batch, fast.precision, jit_compile=True).logits
            methods["bf16, first layer float32"] = Scorer(network, batch, fast.precision,
                                                          float32_first_layer=True).logits
        for b in (256, 1024):
            if b != batch:
                methods[f"fast, batch {b}"] = Scorer(network, b, "auto").logits
    print(f"\n== {name} model ({source}); {n_time} stamps x {rounds} rounds, batch {batch}", flush=True)
    rates = rate_table(methods, x, rounds)
    base = rates["fp32 predict"]

    ref_logits = np.asarray(network.predict(xl, batch_size=batch, verbose=0), np.float32)
    s_ref = scores_from_logits(ref_logits)
    a_ref = auc(s_ref, yl)
    print(f"  agreement with fp32 predict on {data_source} ({(yl == 1).sum()} real, {(yl == 0).sum()} bogus; "
          f"AUC {a_ref:.6f}):")
    print(f"  {'path':30s} {'stamps/s':>10s} {'ratio':>6s} {'AUC diff':>10s} {'max|score diff|':>16s}")
    agreement = {}
    for k, fn in methods.items():
        s_k = scores_from_logits(np.asarray(fn(xl), np.float32))
        agreement[k] = (auc(s_k, yl) - a_ref, float(np.abs(s_k - s_ref).max()))
        print(f"  {k:30s} {rates[k]:10,.0f} {rates[k] / base:6.2f} {agreement[k][0]:+10.1e} {agreement[k][1]:16.1e}",
              flush=True)
    a_fast = a_ref + agreement[f"fast ({fast.precision})"][0]
    fast_rate = rates[f"fast ({fast.precision})"]
    out = {"rates": rates, "auc_fp32": a_ref, "auc_fast": a_fast, "agreement": agreement,
           "night_extrapolated_s": 1e6 / fast_rate}
    print(f"  10^6 stamps, extrapolated: fast {1e6 / fast_rate / 60:.1f} min, fp32 predict {1e6 / base / 60:.1f} min")
    if night:
        block = tile(xl, 8 * batch)
        t0 = time.perf_counter()
        done = 0
        while done < 1_000_000:
            k = min(block.shape[0], 1_000_000 - done)
            fast.logits(block[:k])
            done += k
        dt = time.perf_counter() - t0
        out["night_measured_s"] = dt
        print(f"  10^6 stamps, measured with the fast path: {dt:.0f} s ({dt / 60:.1f} min, {1e6 / dt:,.0f} stamps/s)")
    return out


def bench_end_to_end(name: str, run: str | None, n: int, batch: int) -> None:
    """``predict_file`` on an ``n``-stamp ``.npy`` file: reading, scoring and CSV writing."""
    import tempfile

    from realbogus.predict import predict_file

    if not run:
        print(f"  end-to-end: skipped for {name} (needs --{name} RUN)")
        return
    xl, _, _ = labelled_set(None, 4096)
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        path = Path(tmp) / "stamps.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 29, 29, 3))
        for s in range(0, n, xl.shape[0]):
            out[s:s + xl.shape[0]] = xl[: n - s]
        out.flush()
        del out
        t0 = time.perf_counter()
        meta = predict_file(run, path, Path(tmp) / "scores.csv", batch_size=batch, target_tpr=0.9)
        dt = time.perf_counter() - t0
    print(f"  end-to-end predict on a {n:,}-stamp .npy ({n * 29 * 29 * 3 * 4 / 1e9:.1f} GB) -> CSV: {dt:.1f} s "
          f"({n / dt:,.0f} stamps/s incl. model loading and writing; scoring alone "
          f"{meta['stamps_per_second']:,.0f}/s) -> 10^6 stamps in {1e6 / n * dt / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["simple", "complex"], choices=["simple", "complex"])
    parser.add_argument("--simple", help="run folder or .keras of a trained simple model")
    parser.add_argument("--complex", help="run folder or .keras of a trained complex model")
    parser.add_argument("--data", help="labelled realbogus HDF5 file for the agreement check")
    parser.add_argument("--stamps", type=int, default=None, help="stamps per timed round (default by model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--variants", action="store_true", help="also time XLA and other batch sizes")
    parser.add_argument("--night", nargs="*", default=[], choices=["simple", "complex"],
                        help="measure 10^6 stamps with the fast path for these models")
    parser.add_argument("--end-to-end", type=int, default=0, metavar="N",
                        help="also run predict on an N-stamp .npy file written to a temporary folder")
    parser.add_argument("--inter-op", type=int, default=0, help="TensorFlow inter-op threads (0: its default)")
    parser.add_argument("--intra-op", type=int, default=0, help="TensorFlow intra-op threads (0: its default)")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)

    tf.get_logger().setLevel("ERROR")  # each variant traces its own graph; no retracing warnings
    print("load average at start (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"cores: {os.cpu_count()}; CPU flags: {' '.join(cpu_flags()) or 'none of interest'}; "
          f"TensorFlow {tf.__version__}; threads inter-op {args.inter_op}, intra-op {args.intra_op} (0: TensorFlow's "
          "default, one per core)")
    for name in args.models:
        n = args.stamps or (8192 if name == "simple" else 1024)
        bench_model(name, getattr(args, name), args.data, n, args.rounds, args.batch, args.variants,
                    name in args.night)
        if args.end_to_end:
            bench_end_to_end(name, getattr(args, name), args.end_to_end, args.batch)

    print("load average at end (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
