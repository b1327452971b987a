"""``tracking=mlflow``: one MLflow run per job, nested (``mlflow.parentRunId``) under one run per sweep.

Where: ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<project dir>/mlruns.db`` (the
directory run.py was started from), with artifacts in ``<that dir>/mlruns/``. Browse it with
``mlflow ui --backend-store-uri sqlite:///mlruns.db`` (the full ``mlflow`` package has the UI).

The stateless ``MlflowClient`` is used, not the fluent ``mlflow.start_run``: no active-run global to
leak between jobs that share a process (the basic launcher) and no automatic tags (``mlflow.user``,
``mlflow.source.name``, git): the run holds only what we log.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError
from .base import Tracker

__all__ = ["MlflowTracker", "tracking_uri"]

_PARAM_MAX = 6000  # MLflow's limit on a param value
_BATCH = 100  # params per log_batch call
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. :/]")


def tracking_uri(settings: Any, project_dir: Path) -> str:
    """``tracking.uri`` > ``$MLFLOW_TRACKING_URI`` > a SQLite file in the project dir."""
    uri = settings.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    return str(uri) if uri else f"sqlite:///{(project_dir / 'mlruns.db').resolve()}"


def _key(name: str) -> str:
    return _BAD_KEY.sub("_", name)[:250]


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, settings: Any, project_dir: Path) -> None:
        super().__init__(settings, project_dir)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise MissingDependencyError("mlflow-skinny", "mlflow", "tracking=mlflow") from exc
        self.uri = tracking_uri(settings, project_dir)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = str(settings.get("experiment") or "modelfactory")

    # -------------------------------------------------------------------------------------- helpers

    def _artifact_location(self) -> str | None:
        """Next to a SQLite file (not wherever the first job happened to run); a server decides its own."""
        if not self.uri.startswith("sqlite:///"):
            return None
        db = Path(self.uri[len("sqlite:///") :])
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.experiment)
        return (db.parent / "mlruns" / safe).resolve().as_uri()

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        try:
            return str(
                self.client.create_experiment(self.experiment, artifact_location=self._artifact_location())
            )
        except MlflowException:  # another process created it in between
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return str(found.experiment_id)

    def _existing(self, state: dict[str, Any] | None) -> Any:
        """The run a saved state names, if this store has it (another URI: a new run)."""
        from mlflow.exceptions import MlflowException

        run_id = (state or {}).get("run_id")
        if not run_id:
            return None
        try:
            return self.client.get_run(str(run_id))
        except MlflowException:
            return None

    def _open(
        self,
        previous: dict[str, Any] | None,
        name: str,
        tags: dict[str, str],
        experiment_id: str | None = None,
    ) -> tuple[str, str]:
        run = self._existing(previous)
        if run is not None:
            self.client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id, run.info.experiment_id
        exp = experiment_id or self._experiment_id()
        run = self.client.create_run(exp, run_name=name, tags=tags)
        return run.info.run_id, exp

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        """Params not yet on the run (a resumed run keeps its first values: MLflow refuses a change)."""
        from mlflow.entities import Param

        have = self.client.get_run(run_id).data.params
        new = [Param(_key(k), str(v)[:_PARAM_MAX]) for k, v in params.items() if _key(k) not in have]
        for i in range(0, len(new), _BATCH):
            self.client.log_batch(run_id, params=new[i : i + _BATCH])

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_key(k), float(v), now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def _close(self, run_id: str, files: list[Path], failed: bool) -> None:
        for path in files:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    # -------------------------------------------------------------------------------------- Tracker

    def start_sweep(
        self, name: str, params: dict[str, str], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        run_id, exp = self._open(previous, name, {"modelfactory.kind": "sweep"})
        self._log_params(run_id, params)
        return {"run_id": run_id, "experiment_id": exp}

    def end_sweep(
        self,
        state: dict[str, Any],
        name: str,
        params: dict[str, str],
        metrics: dict[str, float],
        files: list[Path],
    ) -> None:
        run = self._existing(state)
        if run is None:
            return
        self._log_metrics(run.info.run_id, metrics, 0)
        self._close(run.info.run_id, files, failed=False)

    def start_job(
        self,
        name: str,
        params: dict[str, str],
        tags: dict[str, str],
        parent: dict[str, Any] | None,
        previous: dict[str, Any] | None,
    ) -> dict[str, Any]:
        tags = {**tags, "modelfactory.kind": "job"}
        parent_id = (parent or {}).get("run_id")
        if parent_id:
            tags["mlflow.parentRunId"] = str(parent_id)
        run_id, exp = self._open(previous, name, tags, (parent or {}).get("experiment_id"))
        self._log_params(run_id, params)
        return {"run_id": run_id, "experiment_id": exp}

    def end_job(
        self, state: dict[str, Any], metrics: dict[str, float], step: int, files: list[Path], failed: bool
    ) -> None:
        run_id = str(state["run_id"])
        self._log_metrics(run_id, metrics, step)
        self._close(run_id, files, failed)
