"""Experiment tracking as a Hydra callback: the app and the runner never see a tracker.

``TrackingCallback`` (wired in ``hydra.callbacks`` of ``modelfactory/conf/config.yaml``) reads
``tracking.backend`` (``tracking=none|mlflow|wandb``, ``modelfactory/conf/tracking/``) and drives a
:class:`Tracker`:

- ``on_multirun_start`` (the launching process): the sweep's parent run; its id goes to
  ``<sweep dir>/.tracking/<backend>.json`` so that every job, in whatever process or machine a launcher
  runs it, finds it there;
- ``on_job_start`` / ``on_job_end`` (the process that runs the job: the same one for the basic launcher,
  a worker for joblib, submitit or Ray): one run per job under the parent, its id kept in
  ``<job dir>/.tracking/<backend>.json``, so a resumed job continues its run instead of opening another;
  params (overrides + redacted model config) at the start, metrics and artifacts read back from the job's
  files at the end (the scores too, when the task has scorers: ``score/<label>`` and its ``_stderr``,
  ``_ci_low``, ``_ci_high``, ``_n``, ``_unscored``; ``score/judge_cost_usd``);
- ``on_multirun_end``: the sweep's totals and ``summary.*`` / ``report.html`` on the parent run (the summary
  callback runs first: Hydra calls ``on_multirun_end`` in reverse order, and this one is listed first).

A tracker problem is reported as a warning and never fails a job or a sweep: results on disk are the record.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .base import (
    SWEEP_FILES,
    Tracker,
    _clean,
    _override_params,
    _write_state,
    job_params,
    read_state,
    tracking_settings,
)

__all__ = ["TrackingCallback", "make_tracker"]

log = logging.getLogger("modelfactory.tracking")


def make_tracker(settings: Mapping[str, Any], project_dir: Path) -> Tracker:
    """The tracker named by ``tracking.backend``; its SDK is imported here, only when chosen."""
    backend = settings.get("backend")
    if backend == "mlflow":
        from .mlflow import MlflowTracker

        return MlflowTracker(settings, project_dir)
    if backend == "wandb":
        from .wandb import WandbTracker

        return WandbTracker(settings, project_dir)
    raise ValueError(f"tracking.backend: unknown backend {backend!r}; use tracking=none, mlflow or wandb")


def _job_name(config: DictConfig, job_dir: Path) -> str:
    parts = [f"{k}={v}" for k, v in _override_params(config).items()]
    num = OmegaConf.select(config, "hydra.job.num", default=None)
    head = f"job {num}" if _multirun(config) and num is not None else job_dir.name
    return _clean(" ".join([head, *parts]))[:250]


def _multirun(config: DictConfig) -> bool:
    return str(OmegaConf.select(config, "hydra.mode", default="")).endswith("MULTIRUN")


def _sweep_name(sweep_dir: Path, project_dir: Path) -> str:
    try:
        return str(sweep_dir.resolve().relative_to(project_dir.resolve()))
    except ValueError:
        return str(sweep_dir)


def _sweep_totals(sweep_dir: Path) -> dict[str, float]:
    from ..job.record import collect_jobs

    jobs = collect_jobs(sweep_dir)
    return {
        "jobs": len(jobs),
        "jobs_failed": sum(1 for j in jobs if j.get("error")),
        "ok": sum(int(j.get("ok") or 0) for j in jobs),
        "failed": sum(int(j.get("failed") or 0) for j in jobs),
        "tokens_in": sum(int(j.get("tokens_in") or 0) for j in jobs),
        "tokens_out": sum(int(j.get("tokens_out") or 0) for j in jobs),
    }


# ------------------------------------------------------------------------------------------ the callback


class TrackingCallback(Callback):
    """Logs every job to the tracker chosen by ``tracking=...``; does nothing with ``tracking=none``."""

    def __init__(self) -> None:
        self._live: Tracker | None = None
        self._state: dict[str, Any] | None = None

    # Launchers pickle the callbacks to their workers: a client or a live run must not travel with them.
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._live = None
        self._state = None

    @staticmethod
    def _guard(settings: Mapping[str, Any], what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # a tracker problem must not fail a job: the files on disk are the record
            message = _clean(str(exc))  # secret env values and URL credentials masked
            log.warning(
                "tracking=%s: could not %s: %s: %s",
                settings.get("backend"),
                what,
                type(exc).__name__,
                message,
            )

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        settings = tracking_settings(config)
        if settings is None:
            return

        def start() -> None:
            sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
            project_dir = Path(str(OmegaConf.select(config, "hydra.runtime.cwd", default=os.getcwd())))
            backend = str(settings["backend"])
            tracker = make_tracker(settings, project_dir)
            params = _override_params(config)
            state = tracker.start_sweep(
                _sweep_name(sweep_dir, project_dir), params, read_state(sweep_dir, backend)
            )
            _write_state(sweep_dir, backend, {**state, "project_dir": str(project_dir)})

        self._guard(settings, "start the sweep's run", start)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        settings = tracking_settings(config)
        if settings is None:
            return

        def end() -> None:
            sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
            state = read_state(sweep_dir, str(settings["backend"]))
            if state is None:
                return  # the start failed, and said so
            project_dir = Path(state.get("project_dir") or os.getcwd())
            tracker = make_tracker(settings, project_dir)
            files = [sweep_dir / n for n in SWEEP_FILES if (sweep_dir / n).is_file()]
            params = _override_params(config)
            tracker.end_sweep(
                state,
                _sweep_name(sweep_dir, project_dir),
                params,
                _sweep_totals(sweep_dir),
                files if settings.get("artifacts", True) else [],
            )

        self._guard(settings, "close the sweep's run", end)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        settings = tracking_settings(config)
        self._live = self._state = None
        if settings is None:
            return

        def start() -> None:
            backend = str(settings["backend"])
            job_dir = Path(str(config.hydra.runtime.output_dir))
            parent = read_state(Path(str(config.hydra.sweep.dir)), backend) if _multirun(config) else None
            cwd = OmegaConf.select(config, "hydra.runtime.cwd", default=None) or os.getcwd()
            project_dir = Path((parent or {}).get("project_dir") or cwd)
            tracker = make_tracker(settings, project_dir)
            tags = {"modelfactory.job_dir": str(job_dir.resolve())}
            num = OmegaConf.select(config, "hydra.job.num", default=None)
            if _multirun(config) and num is not None:
                tags["modelfactory.job"] = str(num)
            state = tracker.start_job(
                _job_name(config, job_dir), job_params(config), tags, parent, read_state(job_dir, backend)
            )
            _write_state(job_dir, backend, state)
            self._live, self._state = tracker, state

        self._guard(settings, "start the job's run", start)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        settings = tracking_settings(config)
        tracker, state = self._live, self._state
        self._live = self._state = None
        if settings is None or tracker is None or state is None:
            return

        def end() -> None:
            from hydra.core.utils import JobStatus

            from ..job.record import JOB_FILE, read_job, results_path
            from ..jobmetrics import job_metrics, score_metrics

            job_dir = Path(str(config.hydra.runtime.output_dir))
            configured = OmegaConf.select(config, "output.results_file", default=None)
            result_file = str(OmegaConf.select(config, "output.result_file", default="result.json"))
            metrics = {k: float(v) for k, v in job_metrics(job_dir, configured).items() if v is not None}
            metrics.update(score_metrics(job_dir))  # score/<label>, _stderr, _ci_low, _ci_high, ...
            info = read_job(job_dir) or {}
            failed = bool(info.get("error")) or getattr(job_return, "status", None) == JobStatus.FAILED
            paths = (results_path(job_dir, info, configured), job_dir / JOB_FILE, job_dir / result_file)
            files = [p for p in paths if p.is_file()]
            step = int(info.get("runs") or 1)
            tracker.end_job(state, metrics, step, files if settings.get("artifacts", True) else [], failed)

        self._guard(settings, "close the job's run", end)
