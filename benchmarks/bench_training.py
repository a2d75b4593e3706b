"""Training and inference throughput of the models on this machine.

    python benchmarks/bench_training.py [--models simple complex] [--losses ce ce_ech_vat]
                                        [--batch 256] [--steps 20] [--infer-stamps 20000]

Prints, for every model x loss, training samples/s (after a warm-up that absorbs tracing), and
for every model inference stamps/s, together with the core count. Stamps are synthetic count-like
arrays held in memory, so the figures measure the model and the training step, not disk I/O.
"""

from __future__ import annotations

import argparse
import os
import time

import realbogus  # noqa: E402,F401  (before TensorFlow: keeps its start-up messages quiet)

import numpy as np


def compose(model: str, loss: str):
    from pathlib import Path

    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return hcompose(config_name="train", overrides=[f"model={model}", f"loss={loss}"])


def synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.poisson(300.0, size=(n, 29, 29, 3)).astype("float32")
    y = rng.integers(0, 2, size=n).astype("int32")
    return x, y


def train_rate(model_name: str, loss: str, batch: int, steps: int) -> float:
    import keras
    import tensorflow as tf

    from realbogus.training.fit import FitSpec, build_optimizer, build_trainable

    cfg = compose(model_name, loss)
    keras.utils.set_random_seed(0)
    model = build_trainable(FitSpec.from_config(cfg))
    model.compile(optimizer=build_optimizer(cfg.optimizer))
    x, y = synthetic(batch * 4)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat().prefetch(2)
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)  # trace and warm up
    t0 = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - t0)


def infer_rate(model_name: str, n: int, batch: int = 1024) -> float:
    import keras
    import tensorflow as tf

    from realbogus.models import build_model

    cfg = compose(model_name, "ce")
    network = build_model(cfg.model)
    x, _ = synthetic(min(n, 8192))
    step = tf.function(lambda t: network(t, training=False), reduce_retracing=True)
    step(tf.constant(x[:batch]))
    t0 = time.perf_counter()
    done = 0
    while done < n:
        chunk = x[(done % x.shape[0]):][:batch]
        step(tf.constant(chunk)).numpy()
        done += chunk.shape[0]
    return done / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["simple", "complex"])
    parser.add_argument("--losses", nargs="+", default=["ce", "ce_ech_vat"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per case")
    parser.add_argument("--infer-stamps", type=int, default=20000, help="stamps scored per model")
    args = parser.parse_args()

    import tensorflow as tf

    print(f"cores: {os.cpu_count()}  tensorflow: {tf.__version__}  batch: {args.batch}")
    print(f"{'model':8s} {'loss':12s} {'train samples/s':>16s}")
    for m in args.models:
        for loss in args.losses:
            print(f"{m:8s} {loss:12s} {train_rate(m, loss, args.batch, args.steps):16.0f}", flush=True)
    print(f"{'model':8s} {'inference stamps/s':>20s}")
    for m in args.models:
        print(f"{m:8s} {infer_rate(m, args.infer_stamps):20.0f}", flush=True)


if __name__ == "__main__":
    main()
