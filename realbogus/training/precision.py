"""Numeric precision of training: a context manager for Keras' policy, and ``auto`` by measurement.

``float32`` computes and stores in float32; ``mixed_bfloat16`` computes in bfloat16 with float32
variables. Which is faster depends on the processor, not on its feature flags: on one 2-core
machine with AVX-512 bf16 instructions the bfloat16 step ran 1.8x the float32 step, on another
0.8x. ``auto`` therefore times a few training steps of the actual model and objective in both
precisions on the machine at hand and keeps the faster; the result is cached per processor,
model, objective and batch size in ``$REALBOGUS_CACHE_DIR`` (default ``~/.cache/realbogus``),
``precision.json``. A resumed run keeps the precision it started with (recorded in its checkpoint).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Iterator

from realbogus.errors import ConfigError
from realbogus.io import save_json

__all__ = ["PRECISIONS", "precision_policy", "resolve_precision", "measure_step_rates", "cache_path"]

PRECISIONS = ("float32", "mixed_bfloat16")


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy to ``name`` inside the block; restore the previous one after."""
    import keras

    if name not in PRECISIONS:
        raise ConfigError(f"trainer.precision={name!r} is not one of {', '.join(PRECISIONS)}, auto")
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _processor() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_path() -> Path:
    return Path(os.environ.get("REALBOGUS_CACHE_DIR", Path.home() / ".cache" / "realbogus")) / "precision.json"


def _key(spec) -> str:
    from omegaconf import OmegaConf

    what = {"cpu": _processor(), "cores": os.cpu_count(), "model": OmegaConf.to_container(spec.model, resolve=True),
            "terms": [bool(float(spec.loss.get(k, 0) or 0)) for k in ("lambda_ce", "lambda_ech", "lambda_lds")],
            "batch": int(spec.trainer.batch_size)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def measure_step_rates(spec, steps: int = 3) -> dict[str, float]:
    """Training samples per second of ``spec``'s model and objective in each precision.

    Each precision builds the model, traces the step, runs one warm-up step and then times
    ``steps`` steps on random stamps of the configured batch size.
    """
    import keras
    import numpy as np

    from realbogus.training.fit import build_optimizer, build_trainable

    batch = int(spec.trainer.batch_size)
    rng = np.random.default_rng(0)
    x = rng.normal(100.0, 10.0, (batch, 29, 29, 3)).astype(np.float32)
    y = (np.arange(batch) % 2).astype(np.int32)
    rates = {}
    for name in PRECISIONS:
        with precision_policy(name):
            model = build_trainable(spec)
            model.compile(optimizer=build_optimizer(spec.optimizer))
            model.train_on_batch(x, y)
            t0 = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            rates[name] = steps * batch / (time.perf_counter() - t0)
        keras.backend.clear_session()
    return rates


def resolve_precision(requested: str, spec) -> str:
    """``requested`` itself, or for ``auto`` the faster precision on this machine (measured, cached)."""
    if requested in PRECISIONS:
        return requested
    if requested != "auto":
        raise ConfigError(f"trainer.precision={requested!r} is not one of {', '.join(PRECISIONS)}, auto")
    path, key = cache_path(), _key(spec)
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        print("trainer.precision=auto: timing a few training steps in float32 and bfloat16 ...", flush=True)
        rates = measure_step_rates(spec)
        best = max(rates, key=rates.get)
        cache[key] = {"choice": best, "samples_per_s": {k: round(v, 1) for k, v in rates.items()},
                      "cpu": _processor(), "model": str(spec.model.name), "batch": int(spec.trainer.batch_size)}
        try:
            save_json(path, cache)
        except OSError:
            pass  # an unwritable cache only costs the measurement next time
    entry = cache[key]
    rates = entry["samples_per_s"]
    print(f"trainer.precision=auto: {entry['choice']} ({rates['float32']:.0f} samples/s float32, "
          f"{rates['mixed_bfloat16']:.0f} bfloat16 on this processor)", flush=True)
    return str(entry["choice"])
