"""Deployment: calibration, operating thresholds, model cards, SavedModel export and fast scoring.

:func:`finalize_run` is what the training driver calls once a run is evaluated; the other
modules are used by ``python -m realbogus.predict`` and can be used on their own.
"""

from realbogus.deploy.finalize import finalize_run

__all__ = ["finalize_run"]
