"""One SGD step of the CE objective on one device and under MirroredStrategy on two virtual CPUs.

Prints a JSON line with the number of replicas and the largest weight difference. Run as a
separate process: logical devices must be configured before TensorFlow initialises.
"""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from realbogus.training.fit import FitSpec, build_optimizer, build_trainable  # noqa: E402

conf = Path(__file__).resolve().parents[2] / "conf"
with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
    cfg = compose(config_name="train", overrides=["model=complex", "loss=ce", "optimizer=sgd", "optimizer.learning_rate=0.1"])

rng = np.random.default_rng(0)
x = rng.normal(100.0, 10.0, size=(64, 29, 29, 3)).astype("float32")
y = rng.integers(0, 2, size=64).astype("int32")


def one_step(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_trainable(FitSpec.from_config(cfg))
        model.compile(optimizer=build_optimizer(cfg.optimizer))
        model(x[:1])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    before = [v.numpy() for v in model.network.trainable_variables]
    model.fit(ds, epochs=1, verbose=0)
    after = [v.numpy() for v in model.network.trainable_variables]
    return after, max(float(np.max(np.abs(a - b))) for a, b in zip(before, after))


single, moved = one_step(tf.distribute.get_strategy())
mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored, _ = one_step(mirrored_strategy)
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored))
print(json.dumps({"replicas": mirrored_strategy.num_replicas_in_sync, "max_abs_diff": diff, "step_size": moved}))
