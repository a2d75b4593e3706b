"""Scoring speed, side by side on the same stamps: plain Keras, the package's paths, ONNX, int8, a cascade.

    python benchmarks/bench_inference.py --complex RUN --simple RUN --data TEST.h5 --calibrate TRAIN.h5
                                         [--stamps N] [--rounds 5] [--batch 512] [--screen-tpr 0.999]
                                         [--keep DIR] [--end-to-end N] [--variants] [--smoke]

In one process, interleaved round by round (so a busy machine slows every path alike), on the
same stamps, it times the complex model's

- ``fp32 model.predict``: ``model.predict(x, batch_size=...)`` of the float32 network - the
  baseline every ratio is against;
- ``keras fp32`` and ``keras bf16``: the package's Keras path (one fixed-shape traced graph,
  two batches in flight) in float32 and with a bfloat16 copy; ``keras auto`` is whichever
  ``precision=auto`` measures faster here (printed);
- ``onnx fp32`` and ``onnx int8``: exports written by :func:`realbogus.deploy.export.export_onnx`
  (int8: static, calibrated on ``--calibrate`` training stamps), run by ONNX Runtime with every
  graph optimisation and one thread per usable core;
- ``openvino fp32`` and ``openvino int8``: the same two exports under OpenVINO
  (:class:`realbogus.deploy.inference.OpenVinoScorer`: fixed batch shape, one stream per core,
  float32 arithmetic for the float layers), when the ``openvino`` package is installed;
- ``cascade``: the simple model (ONNX float32) screens every stamp at the threshold keeping
  ``--screen-tpr`` of its validation reals (its run folder's ``validation_predictions.csv``,
  never the test split), the complex model (``--cascade-model``, default int8) scores the rest.

It prints stamps/s (best round: other work on a shared machine only slows rounds down),
stamps/s per usable core, the ratio to the baseline, and on the labelled ``--data`` file the
AUC, the AUC difference and the largest |score difference| from the float32 baseline. For the
cascade also: the share of stamps and of test reals screened out, and the FPR at TPR 0.9
against the complex model alone. The simple model's own ``model.predict`` rate is printed for
its cost ratio.

``--end-to-end N`` then times whole processes on an N-stamp ``.npy`` file (reading, model
loading, scoring, writing a CSV): a plain Keras script (``load_model``, ``model.predict``,
``np.savetxt``) against ``python -m realbogus.predict`` with the Keras model
(``precision=auto``), with the float32 and the int8 export (the int8 one under each runtime), and
with the cascade; each is run
once on a small file first (warming the ``auto`` cache and the page cache), and the time for
10^6 stamps is scaled from N.

``--variants`` adds ONNX Runtime with the cores inside each operator (``threads``) or on one
batch each (``streams``), with and without layout transformations (``all``, ``extended``; the
``onnx`` rows use whichever combination the scorer's ``auto`` measured fastest), on one core
and without spinning threads, other ONNX batch sizes, an int8 export with the first
and last layers quantised too, and the Keras paths with one stream.

``--smoke`` builds tiny untrained models and synthetic stamps and runs everything in seconds:
a check that the benchmark works, whose numbers mean nothing. Without ``--complex`` /
``--simple`` the default-size models have random weights (rates hold, AUCs mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import realbogus  # noqa: E402,F401  (before TensorFlow: keeps its start-up messages quiet)

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = {"simple": {"name": "simple", "conv_filters": [4, 8], "dense_units": [16]},
        "complex": {"name": "complex", "feature_filters": 8, "feature_layers": 1,
                    "stages": [{"conv": 8, "blocks": [[8, 1], [16, 2]]}]}}

PLAIN_SCRIPT = '''\
"""The plain way: load the Keras model, model.predict in float32, write the scores."""
import sys, numpy as np
from realbogus.models import load_model
model_path, stamps_path, out_path, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = load_model(model_path)
x = np.load(stamps_path, mmap_mode="r")
logits = np.concatenate([model.predict(np.asarray(x[s:s + 65536]), batch_size=batch, verbose=0)
                         for s in range(0, len(x), 65536)]).astype(np.float64)
score = 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))
np.savetxt(out_path, np.column_stack([np.arange(len(score)), score]), delimiter=",", fmt=["%d", "%.17g"],
           header="index,score", comments="")
'''


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return sorted(f for f in line.split(":", 1)[1].split() if "bf16" in f or f.startswith("amx")
                                  or f in ("avx512f", "avx512_vnni", "avx_vnni"))
    except OSError:
        pass
    return []


def model_file(name: str, run: str | None, smoke: bool, work: Path) -> tuple[Path, Path | None, str]:
    """(.keras file, run folder or None, description) of a model: trained, random or tiny."""
    import keras

    from realbogus.models import build_model

    if run:
        path = Path(run)
        return (path / "model.keras" if path.is_dir() else path), (path if path.is_dir() else None), str(path)
    if smoke:
        cfg = TINY[name]
    else:
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"model={name}"]).model
    keras.utils.set_random_seed(0)
    path = work / f"{name}.keras"
    build_model(cfg).save(path)
    return path, None, "tiny, random weights" if smoke else "random weights"


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.poisson(300.0, size=(n, 29, 29, 3)).astype(np.float32)
    y = (np.arange(n) % 2).astype(int)
    x[y == 1, 12:17, 12:17, 0] += 200.0
    x[..., 2] = x[..., 0] - x[..., 1]
    return x, y


def labelled_set(path: str | None, n_max: int, smoke: bool):
    if path:
        from realbogus.deploy.export import spread_stamps

        x, y, what = spread_stamps(path, n_max)
        if y is None:
            raise SystemExit(f"{path}: needs labels of both classes for the AUC")
        keep = y >= 0
        return x[keep], y[keep], what
    return (*synthetic(256 if smoke else 4096), "synthetic stamps")


def tile(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x] * (-(-n // x.shape[0])))[:n]


def rate_table(methods: dict, x: np.ndarray, rounds: int) -> dict[str, float]:
    for fn in methods.values():  # trace, warm up
        fn(x[: min(len(x), 1024)])
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t0)
    return {k: x.shape[0] / float(np.min(v)) for k, v in times.items()}


def cascade_scores(screen, scorer, threshold: float, x: np.ndarray, ceiling: float) -> tuple[np.ndarray, np.ndarray]:
    """(scores, passed) of ``x`` through the cascade, as ``predict`` computes them (blocks of 4,096)."""
    from realbogus.deploy.cascade import Cascade, screened_scores
    from realbogus.evaluation.scoring import scores_from_logits

    c = Cascade(screen, scorer, threshold, len(x))
    for s in range(0, len(x), 4096):
        c.feed(x[s:s + 4096], s)
    c.flush()
    scores = scores_from_logits(np.where(c.passed[:, None], c.logits, 0.0))
    out = ~c.passed
    scores[out] = screened_scores(scores_from_logits(c.screen_logits[out]), threshold, ceiling)
    return scores, c.passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--complex", help="run folder or .keras of a trained complex model")
    parser.add_argument("--simple", help="run folder of a trained simple model (the screen; its "
                                         "validation_predictions.csv sets the screen threshold)")
    parser.add_argument("--data", help="labelled file for AUC and score differences (e.g. data/quick/test.h5)")
    parser.add_argument("--calibrate", help="training stamps to calibrate int8 on (e.g. data/quick/train.h5)")
    parser.add_argument("--eval-rows", type=int, default=50000, help="labelled stamps used, spread over --data")
    parser.add_argument("--stamps", type=int, default=None, help="stamps per timed round (default 4096)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--screen-tpr", type=float, default=0.999)
    parser.add_argument("--cascade-model", default="onnx int8",
                        choices=["onnx int8", "onnx fp32", "openvino int8", "openvino fp32", "keras auto"])
    parser.add_argument("--keep", help="folder to keep the ONNX exports in (default: a temporary folder)")
    parser.add_argument("--end-to-end", type=int, default=0, metavar="N",
                        help="also time whole processes (plain Keras script, predict) on N stamps")
    parser.add_argument("--variants", action="store_true",
                        help="also time ONNX Runtime without layout transformations and with one thread, and "
                             "the Keras paths with one stream")
    parser.add_argument("--smoke", action="store_true", help="tiny untrained models, seconds: checks the benchmark")
    args = parser.parse_args()
    if args.smoke:
        args.stamps, args.rounds, args.batch = args.stamps or 256, 1, min(args.batch, 64)
    n_time = args.stamps or 4096

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    from realbogus.deploy.cascade import SCREEN_CEILING, screen_threshold_from_validation
    from realbogus.deploy.export import export_onnx
    from realbogus.deploy.inference import OnnxScorer, OpenVinoScorer, Scorer, openvino_available
    from realbogus.evaluation.metrics import auc, fpr_at_tpr
    from realbogus.evaluation.scoring import scores_from_logits
    from realbogus.models import load_model
    from realbogus.speed import cache_dir, processor, usable_cores

    cores = usable_cores()
    print("load average at start (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"processor: {processor()}; usable cores: {cores}; CPU flags: {' '.join(cpu_flags()) or 'none of interest'}; "
          f"TensorFlow {tf.__version__}; TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}")

    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp, contextlib.ExitStack() as stack:
        if args.smoke:  # tiny throw-away models: their measurements stay out of the user's cache
            stack.enter_context(cache_dir(Path(tmp) / "speed_cache"))
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        complex_keras, _, complex_what = model_file("complex", args.complex, args.smoke, work)
        simple_keras, simple_run, simple_what = model_file("simple", args.simple, args.smoke, work)
        xl, yl, data_what = labelled_set(args.data, args.eval_rows, args.smoke)
        if args.calibrate:
            calibrate = args.calibrate
        else:  # a synthetic "training file", distinct from the evaluation stamps
            calibrate = work / "calibration.npy"
            np.save(calibrate, synthetic(512, seed=1)[0])
            print("int8 calibrated on synthetic stamps (give --calibrate TRAIN.h5 for a real measurement)")

        paths = {"complex fp32": work / "complex.onnx", "complex int8": work / "complex.int8.onnx",
                 "simple fp32": work / "simple.onnx"}
        t0 = time.perf_counter()
        export_onnx(complex_keras, paths["complex fp32"], overwrite=True)
        # the benchmark reports the differences itself: no tolerance refuses the export here
        q = export_onnx(complex_keras, paths["complex int8"], overwrite=True, calibrate=calibrate,
                        check=args.data, score_tolerance=1.0, auc_tolerance=1.0)["int8"]
        export_onnx(simple_keras, paths["simple fp32"], overwrite=True)
        print(f"exports written in {time.perf_counter() - t0:.0f} s; int8 calibration: {q['calibration_set']}")

        network = load_model(complex_keras)
        simple = load_model(simple_keras)
        keras_auto = Scorer(network, batch_size=args.batch, precision="auto")
        onnx32 = OnnxScorer(paths["complex fp32"], batch_size=args.batch)
        onnx8 = OnnxScorer(paths["complex int8"], batch_size=args.batch)
        screen = OnnxScorer(paths["simple fp32"], batch_size=args.batch)
        complex_paths = {"onnx int8": onnx8, "onnx fp32": onnx32, "keras auto": keras_auto}
        if openvino_available():  # the same exports under OpenVINO (float32 arithmetic for the float layers)
            complex_paths["openvino int8"] = OpenVinoScorer(paths["complex int8"], batch_size=args.batch)
            complex_paths["openvino fp32"] = OpenVinoScorer(paths["complex fp32"], batch_size=args.batch)
        elif args.cascade_model.startswith("openvino"):
            raise SystemExit("--cascade-model openvino ...: pip install openvino")
        if simple_run is not None:
            thr = screen_threshold_from_validation(simple_run, args.screen_tpr)
            threshold, thr_what = thr["threshold"], (f"{thr['reference']}: keeps {thr['n_real_kept']}/{thr['n_real']} "
                                                     f"validation reals")
        else:  # no validation predictions for a random model: only the mechanics are exercised
            threshold = float(np.median(screen.scores(xl)))
            thr_what = "median screen score of these stamps (no --simple run folder: means nothing)"
        ceiling = SCREEN_CEILING

        def cascade(a):
            return cascade_scores(screen, complex_paths[args.cascade_model], threshold, a, ceiling)[0]

        methods = {
            "fp32 model.predict": lambda a: network.predict(a, batch_size=args.batch, verbose=0),
            "keras fp32": Scorer(network, batch_size=args.batch, precision="float32").logits,
            "keras bf16": Scorer(network, batch_size=args.batch, precision="mixed_bfloat16").logits,
            "onnx fp32": onnx32.logits,
            "onnx int8": onnx8.logits,
            **{name: complex_paths[name].logits for name in ("openvino fp32", "openvino int8") if name in complex_paths},
            f"cascade ({args.cascade_model})": cascade,
            "screen alone (simple onnx fp32)": screen.logits,
            "simple fp32 model.predict": lambda a: simple.predict(a, batch_size=args.batch, verbose=0),
        }
        if args.variants:
            for label, kw in (*((f"{way}/{level}", {"parallel": way, "optimization": level})
                                for way in ("threads", "streams") for level in ("all", "extended")),
                              ("1 core", {"threads": 1, "optimization": "all"}), ("no spinning", {"spinning": False})):
                for prec in ("fp32", "int8"):
                    methods[f"onnx {prec}, {label}"] = OnnxScorer(paths[f"complex {prec}"], batch_size=args.batch,
                                                                  **kw).logits
            for prec in ("float32", "mixed_bfloat16"):
                methods[f"keras {prec}, 1 stream"] = Scorer(network, args.batch, prec, streams=1).logits
            ends = work / "complex.int8-ends.onnx"
            qe = export_onnx(complex_keras, ends, overwrite=True, calibrate=calibrate, check=args.data,
                             score_tolerance=1.0, auc_tolerance=1.0, float_ends=False)["int8"]
            methods["onnx int8, all layers"] = OnnxScorer(ends, batch_size=args.batch).logits
            print(f"int8 with every layer quantised: largest score difference {qe['max_score_difference']:.3g} "
                  f"on its check set")
            for b in (256, 1024):
                if b != args.batch:
                    methods[f"onnx int8, batch {b}"] = OnnxScorer(paths["complex int8"], batch_size=b).logits
        print(f"\ncomplex model: {complex_what}; simple model (screen): {simple_what}")
        print(f"keras auto (precision=auto) chose {keras_auto.precision} "
              f"({'measured now' if keras_auto.auto.measured else 'cached'}: "
              + ", ".join(f"{k} {v:,.0f}/s" for k, v in keras_auto.auto.rates.items()) + ")")
        print("onnx session settings chosen: " + "; ".join(
            f"{k} {v.parallel}/{v.optimization}" + ("" if v.auto is None else " (" + ", ".join(
                f"{p} {r:,.0f}/s" for p, r in v.auto.rates.items()) + ")")
            for k, v in (("complex fp32", onnx32), ("complex int8", onnx8), ("simple fp32", screen))))
        print(f"screen threshold {threshold:.6g}: {thr_what}")
        x = tile(xl, n_time)
        print(f"timing: {n_time} stamps x {args.rounds} rounds (tiled from {data_what}), batch {args.batch}",
              flush=True)
        rates = rate_table(methods, x, args.rounds)
        base = rates["fp32 model.predict"]

        ref = scores_from_logits(network.predict(xl, batch_size=args.batch, verbose=0))
        a_ref = auc(ref, yl)
        f_ref = fpr_at_tpr(ref, yl, 0.9)
        print(f"\nagreement on {data_what} ({(yl == 1).sum()} real, {(yl == 0).sum()} bogus); float32 AUC {a_ref:.6f}, "
              f"FPR at TPR 0.9 {f_ref.fpr:.3g}")
        print(f"  {'path':32s} {'stamps/s':>10s} {'per core':>9s} {'ratio':>6s} {'AUC':>9s} {'AUC diff':>9s} "
              f"{'max|score diff|':>15s}")
        for name, fn in methods.items():
            if name.startswith(("simple", "screen")):
                print(f"  {name:32s} {rates[name]:10,.0f} {rates[name] / cores:9,.0f} {rates[name] / base:6.2f}")
                continue
            out = fn(xl)
            s = out if out.ndim == 1 else scores_from_logits(np.asarray(out, np.float32))
            a = auc(s, yl)
            passed = slice(None)
            if name.startswith("cascade"):
                passed = cascade_scores(screen, complex_paths[args.cascade_model], threshold, xl, ceiling)[1]
            diff = float(np.abs(s[passed] - ref[passed]).max()) if np.any(passed) else float("nan")
            print(f"  {name:32s} {rates[name]:10,.0f} {rates[name] / cores:9,.0f} {rates[name] / base:6.2f} "
                  f"{a:9.6f} {a - a_ref:+9.1e} {diff:15.2e}{'  (passed rows)' if name.startswith('cascade') else ''}",
                  flush=True)
        s_c, passed = cascade_scores(screen, complex_paths[args.cascade_model], threshold, xl, ceiling)
        f_c = fpr_at_tpr(s_c, yl, 0.9)
        lost = int(((yl == 1) & ~passed).sum())
        print(f"\ncascade: screened out {np.mean(~passed):.1%} of these stamps ({np.mean(~passed[yl == 0]):.1%} of "
              f"the bogus), {lost} of {(yl == 1).sum()} reals ({lost / max(1, (yl == 1).sum()):.3%}); FPR at TPR 0.9 "
              f"{f_c.fpr:.3g} against {f_ref.fpr:.3g} for the complex model alone ({f_c.fpr - f_ref.fpr:+.2g})")
        r_screen = rates["screen alone (simple onnx fp32)"]
        r_complex = rates[{"keras auto": f"keras {'bf16' if keras_auto.precision != 'float32' else 'fp32'}"}.get(
            args.cascade_model, args.cascade_model)]
        pass_bogus = float(np.mean(passed[yl == 0]))
        night = 1e6 / r_screen + 1e6 * pass_bogus / r_complex
        fastest = max((k for k in rates if k.startswith(("onnx", "openvino"))), key=rates.get)
        print(f"10^6 stamps, scaled from the rates (the baseline: {1e6 / base / 60:.1f} min): {fastest} "
              f"{1e6 / rates[fastest] / 60:.1f} min; cascade at these stamps' mix "
              f"{1e6 / rates[f'cascade ({args.cascade_model})'] / 60:.1f} min; cascade on a night of bogus "
              f"(pass rate {pass_bogus:.1%}) about {night / 60:.1f} min")

        if args.end_to_end:
            end_to_end(args, complex_keras, paths, xl, threshold, work)
    print("load average at end (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))


def end_to_end(args, complex_keras: Path, paths: dict, xl: np.ndarray, threshold: float, work: Path) -> None:
    """Whole processes on an N-stamp .npy: the plain Keras script against ``python -m realbogus.predict``."""
    from realbogus.deploy.inference import openvino_available
    from realbogus.speed import usable_cores

    n = int(args.end_to_end)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    script = work / "plain_keras.py"
    script.write_text(PLAIN_SCRIPT)
    files = {}
    for name, rows in (("warm", min(n, 1024)), ("night", n)):
        files[name] = work / f"{name}.npy"
        out = np.lib.format.open_memmap(files[name], mode="w+", dtype=np.float32, shape=(rows, 29, 29, 3))
        for s in range(0, rows, len(xl)):
            out[s:s + len(xl)] = xl[: rows - s]
        out.flush()
        del out

    def predict(model, *extra):
        return lambda inp, out: [sys.executable, "-m", "realbogus.predict", f"model={model}", f"input={inp}",
                                 f"output={out}", f"batch_size={args.batch}", "overwrite=true", "progress=none",
                                 *extra]

    commands = {
        "plain Keras script": lambda inp, out: [sys.executable, str(script), str(complex_keras), str(inp), str(out),
                                                str(args.batch)],
        "predict (Keras, precision=auto)": predict(complex_keras),
        "predict (onnx fp32)": predict(paths["complex fp32"]),
        "predict (onnx int8, onnxruntime)": predict(paths["complex int8"], "runtime=onnxruntime"),
        "predict (cascade, onnxruntime)": predict(paths["complex int8"], f"screen={paths['simple fp32']}",
                                                  f"screen_threshold={threshold!r}", "runtime=onnxruntime"),
    }
    if openvino_available():
        commands["predict (onnx int8, openvino)"] = predict(paths["complex int8"], "runtime=openvino")
        commands["predict (cascade, openvino)"] = predict(paths["complex int8"], f"screen={paths['simple fp32']}",
                                                          f"screen_threshold={threshold!r}", "runtime=openvino")
    print(f"\nend to end, whole processes on a {n:,}-stamp .npy ({n * 29 * 29 * 3 * 4 / 1e9:.2f} GB) -> CSV "
          f"(each run once on {min(n, 1024):,} stamps first):")
    times = {}
    for name, cmd in commands.items():
        for which in ("warm", "night"):
            t0 = time.perf_counter()
            done = subprocess.run(cmd(files[which], work / f"{which}.csv"), capture_output=True, text=True, env=env)
            dt = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(f"{name} failed: {done.stderr.strip().splitlines()[-1:]}")
        times[name] = dt
        print(f"  {name:34s} {dt:8.1f} s  {n / dt:9,.0f} stamps/s  {n / dt / usable_cores():8,.0f} per core  "
              f"ratio {times['plain Keras script'] / dt:5.2f}  10^6 stamps: {1e6 / n * dt / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
