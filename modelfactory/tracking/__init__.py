"""Experiment trackers (MLflow, Weights & Biases) driven from config by a Hydra callback.

``tracking=mlflow`` or ``tracking=wandb`` on the command line (``modelfactory/conf/tracking/``);
``tracking=none`` (the default) costs nothing. The SDKs are imported only when chosen. See :mod:`modelfactory.tracking.callback`
(the callback, the choice of tracker) and :mod:`modelfactory.tracking.base` (the interface).
"""

from __future__ import annotations

from .base import Tracker, job_params, read_state, tracking_settings
from .callback import TrackingCallback, make_tracker

__all__ = ["Tracker", "TrackingCallback", "job_params", "make_tracker", "read_state", "tracking_settings"]
