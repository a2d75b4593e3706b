"""Deployment: calibration, operating thresholds, model cards and versions, SavedModel and ONNX
export (float32, or static int8), fast scoring (TensorFlow, or ONNX Runtime alone; the fastest
settings measured on the machine) and a screening cascade of two models.

:func:`finalize_run` is what the training driver calls once a run is evaluated; the other
modules are used by ``python -m realbogus.predict`` and can be used on their own.
"""

from realbogus.deploy.finalize import finalize_run

__all__ = ["finalize_run"]
