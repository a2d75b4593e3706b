"""Training-step speed of CE+ECH+VAT: a straightforward step against the package's step.

    python benchmarks/bench_train_step.py [--model complex] [--loss ce_ech_vat] [--batch 256]
                                          [--steps 4] [--rounds 2] [--train-epochs 2]
                                          [--variants] [--vat-fraction F ...] [--data-dir DIR]
                                          [--override KEY=VALUE ...]

Variants, timed in one process and interleaved round by round:

- ``eager, fp32``: the step as first written - a Python function run eagerly, float32, the VAT
  term computing its own clean forward pass (``lds(..., logits=None)``);
- ``tf.function, fp32``: the same step traced once (fixed batch shape), still with the extra
  clean forward pass - the stricter baseline;
- ``package, fp32``: :class:`realbogus.training.model.RealBogusModel` through ``fit`` (compiled
  train step, clean logits reused by VAT, the package's tf.data pipeline);
- ``package, mixed_bfloat16``: the same under ``trainer.precision=mixed_bfloat16`` (bfloat16
  compute, float32 variables; normalisation, FRN/SE statistics, logits and the VAT direction
  search arithmetic stay float32);
- with ``--variants``: the package step compiled with XLA (``jit_compile=True``);
- with ``--vat-fraction F``: the package step in bfloat16 with VAT's smoothness term on a share
  ``F`` of each batch (``loss.vat.fraction=F``), the cheaper step; its ratio to the full-batch
  bfloat16 step is the saving.

Rates are samples/s in the best round (a round is ``--steps`` steps, timed after one more that
absorbs a ``fit`` call's start-up; other work on a shared machine only slows rounds down, and
the load average is printed); ratios are against both baselines. Then every variant but the
eager one (the same arithmetic as the traced baseline) trains ``--train-epochs`` epochs on the
training split from the same initial weights and seed: its sustained rate over that training
(a steadier figure on a busy machine) and its test AUC (scored in float32), with the
difference from the float32 variants, are reported. Data: ``data=smoke`` (simulated on first use), or
``--data-dir``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import realbogus  # noqa: E402,F401  (before TensorFlow: keeps its start-up messages quiet)

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def compose(overrides: list[str]):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hcompose(config_name="train", overrides=overrides)


class Straightforward:
    """CE + ECH + VAT written directly: float32, VAT does its own clean forward pass."""

    def __init__(self, cfg, initial_weights, compiled: bool):
        import keras
        import tensorflow as tf

        from realbogus.losses import exp_cross_hinge, lds, masked_cross_entropy
        from realbogus.models import build_model, split_model
        from realbogus.training.fit import build_optimizer

        self.network = build_model(cfg.model)
        self.network.set_weights(initial_weights)
        self.optimizer = build_optimizer(cfg.optimizer)
        normalizer, body = split_model(self.network)
        loss = cfg.loss
        seed = keras.random.SeedGenerator(int(cfg.seed))

        def step(x, y):
            with tf.GradientTape() as tape:
                logits = self.network(x, training=True)
                total = loss.lambda_ce * masked_cross_entropy(y, logits)
                total += loss.lambda_ech * exp_cross_hinge(y, logits, margin=loss.margin)
                if loss.lambda_lds:
                    total += loss.lambda_lds * lds(lambda t: body(t, training=True), normalizer(x), xi=loss.vat.xi,
                                                   eps=loss.vat.eps, power_iterations=loss.vat.power_iterations,
                                                   seed=seed)
            variables = self.network.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
            return total

        self.step = tf.function(step) if compiled else step

    def run(self, batches, steps: int) -> float:
        """Run ``steps`` steps; return the wall time of all but the first."""
        marks = []
        for _ in range(steps):
            x, y = next(batches)
            float(self.step(x, y))
            marks.append(time.perf_counter())
        return marks[-1] - marks[0]


class Package:
    """RealBogusModel.fit on the package's input pipeline, at a given precision."""

    def __init__(self, cfg, initial_weights, precision: str, train_path, rows, labels, jit_compile: bool = False):
        import keras

        from realbogus.data.pipeline import make_dataset
        from realbogus.training.fit import FitSpec, build_optimizer, build_trainable

        keras.mixed_precision.set_global_policy(precision)
        try:
            self.model = build_trainable(FitSpec.from_config(cfg))
            self.model.compile(optimizer=build_optimizer(cfg.optimizer), jit_compile=jit_compile)
            self.model(np.zeros((1, 29, 29, 3), np.float32))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        self.model.network.set_weights(initial_weights)
        self.data = make_dataset(train_path, rows=rows, labels=labels, batch_size=int(cfg.trainer.batch_size),
                                 shuffle=True, seed=int(cfg.seed), repeat=True, drop_remainder=True)

    @property
    def network(self):
        return self.model.network

    def run(self, batches, steps: int) -> float:
        """Run ``steps`` steps in one ``fit`` call; return the wall time of all but the first."""
        import keras

        marks = []

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                marks.append(time.perf_counter())

        self.model.fit(self.data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[Clock()])
        return marks[-1] - marks[0]


def test_auc(network, test_path, cfg) -> float:
    """AUC on the test split, scored by a float32 copy of the network."""
    from realbogus.evaluation.metrics import auc
    from realbogus.evaluation.scoring import score_dataset
    from realbogus.models import build_model

    fp32 = build_model(cfg.model)
    fp32.set_weights(network.get_weights())
    pred = score_dataset(fp32, test_path, batch_size=1024, progress=False)
    return auc(pred["score"], pred["label"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="complex", choices=["simple", "complex"])
    parser.add_argument("--loss", default="ce_ech_vat")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-epochs", type=int, default=2, help="epochs of the final-metric training (0: skip)")
    parser.add_argument("--variants", action="store_true", help="also time the XLA-compiled package step")
    parser.add_argument("--vat-fraction", type=float, action="append", default=[], metavar="F",
                        help="also time the bfloat16 package step with VAT on this share of the batch (repeatable)")
    parser.add_argument("--data-dir", help="folder with train.h5 and test.h5 to use instead of data=smoke")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a training config override for every variant, e.g. loss.vat.radius=noise (repeatable)")
    args = parser.parse_args()
    for f in args.vat_fraction:
        if not 0.0 < f <= 1.0:
            parser.error(f"--vat-fraction {f}: must be in (0, 1]")

    import keras
    import tensorflow as tf

    from realbogus.data.format import open_dataset
    from realbogus.data.pipeline import make_dataset
    from realbogus.models import build_model
    from realbogus.simulation import ensure_dataset

    data = ["data=hdf5", f"data.dir={args.data_dir}"] if args.data_dir else ["data=smoke"]
    cfg = compose([f"model={args.model}", f"loss={args.loss}", *data, f"trainer.batch_size={args.batch}",
                   *args.override])
    train_path, test_path = ensure_dataset(cfg.data, log=None, progress=False)
    with open_dataset(train_path) as ds:
        labels = ds.column("label").astype(np.int32)
    rows = np.arange(labels.size)
    keras.utils.set_random_seed(int(cfg.seed))
    initial = build_model(cfg.model).get_weights()

    def batches():
        ds = make_dataset(train_path, rows=rows, labels=labels, batch_size=args.batch, shuffle=True,
                          seed=int(cfg.seed), repeat=True, drop_remainder=True)
        return iter(ds)

    def variants():
        out = {
            "eager, fp32 (baseline)": lambda: Straightforward(cfg, initial, compiled=False),
            "tf.function, fp32 (baseline)": lambda: Straightforward(cfg, initial, compiled=True),
            "package, fp32": lambda: Package(cfg, initial, "float32", train_path, rows, labels),
            "package, mixed_bfloat16": lambda: Package(cfg, initial, "mixed_bfloat16", train_path, rows, labels),
        }
        if args.variants:
            out["package, mixed_bfloat16, XLA"] = lambda: Package(cfg, initial, "mixed_bfloat16", train_path, rows,
                                                                  labels, jit_compile=True)
        for f in args.vat_fraction:
            part = compose([f"model={args.model}", f"loss={args.loss}", *data, f"trainer.batch_size={args.batch}",
                            *args.override, f"loss.vat.fraction={f}"])
            out[f"package, mixed_bfloat16, VAT on {f:g}"] = (
                lambda part=part: Package(part, initial, "mixed_bfloat16", train_path, rows, labels))
        return out

    print("load average at start (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    print(f"cores: {os.cpu_count()}; TensorFlow {tf.__version__}; {args.model} + {args.loss}, batch {args.batch}, "
          f"{args.steps} steps x {args.rounds} rounds" + (f"; overrides {' '.join(args.override)}" if args.override
                                                         else ""))
    feed = batches()
    next(feed)
    t0 = time.perf_counter()
    for _ in range(20):
        next(feed)
    print(f"  input pipeline alone (tf.data from the HDF5 file): {20 * args.batch / (time.perf_counter() - t0):,.0f} "
          "samples/s", flush=True)
    runners = {name: make() for name, make in variants().items()}
    feeds = {name: batches() for name in runners}
    for name, r in runners.items():  # trace and warm up
        r.run(feeds[name], 2)
    times = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, r in runners.items():
            times[name].append(r.run(feeds[name], args.steps + 1))
    # the best round: other work on a shared machine only ever slows a round down
    rates = {k: args.steps * args.batch / float(np.min(v)) for k, v in times.items()}
    eager, graph = rates["eager, fp32 (baseline)"], rates["tf.function, fp32 (baseline)"]
    for k, r in rates.items():
        print(f"  {k:36s} {r:8.1f} samples/s   x{r / eager:5.2f} vs eager   x{r / graph:5.2f} vs tf.function",
              flush=True)
    del runners, feeds

    if args.train_epochs > 0:
        steps = args.train_epochs * (labels.size // args.batch)
        print(f"final metric: {args.train_epochs} epochs ({steps} steps) from the same initial weights", flush=True)
        aucs, sustained = {}, {}
        for name, make in variants().items():
            if name.startswith("eager"):
                continue  # same arithmetic as the traced baseline, only slower
            keras.utils.set_random_seed(int(cfg.seed))
            runner = make()
            sustained[name] = (steps - 1) * args.batch / runner.run(batches(), steps)
            aucs[name] = test_auc(runner.network, test_path, cfg)
            print(f"  {name:32s} test AUC {aucs[name]:.5f}; {sustained[name]:6.1f} samples/s over steps 2-{steps}",
                  flush=True)
        base, same = aucs["tf.function, fp32 (baseline)"], aucs["package, fp32"]
        base_rate = sustained["tf.function, fp32 (baseline)"]
        for name, a in aucs.items():
            print(f"  {name:32s} x{sustained[name] / base_rate:4.2f} vs tf.function sustained; AUC difference "
                  f"{a - base:+.5f} vs the fp32 baseline, {a - same:+.5f} vs the package in fp32")

    print("load average at end (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
