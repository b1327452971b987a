"""``tracking=wandb``: one W&B run per job, grouped under the sweep (W&B's ``group``), plus one run per
sweep (``job_type: sweep``) holding the sweep's totals and ``summary.*`` / ``report.html``.

Offline by default (``tracking.mode``, else ``$WANDB_MODE``, else ``offline``): runs are written to
``<tracking.dir or $WANDB_DIR or the project dir>/wandb/offline-run-*``, no account or network needed,
which is what tests and air-gapped clusters want; upload them later with
``wandb sync wandb/offline-run-*``. A resumed job reopens its run id (``resume="allow"``): offline it
writes another ``offline-run-*-<same id>`` directory that ``wandb sync`` adds to the same run.

W&B has no nested runs; ``group`` is how its UI folds a sweep's runs together. Console capture, code
saving, git and machine metadata, and system stats are off: a run holds only what we log (no command
line, no environment).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError
from .base import Tracker

__all__ = ["WandbTracker"]

_QUIET: dict[str, Any] = {
    "console": "off",
    "save_code": False,
    "disable_code": True,
    "disable_git": True,
    "disable_job_creation": True,
    "x_disable_meta": True,
    "x_disable_stats": True,
    "x_disable_machine_info": True,
    "silent": True,
}


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, settings: Any, project_dir: Path) -> None:
        super().__init__(settings, project_dir)
        try:
            import wandb
        except ImportError as exc:
            raise MissingDependencyError("wandb", "wandb", "tracking=wandb") from exc
        self._wandb = wandb
        self.mode = str(settings.get("mode") or os.environ.get("WANDB_MODE") or "offline")
        self.project = str(settings.get("project") or os.environ.get("WANDB_PROJECT") or "modelfactory")
        self.entity = settings.get("entity") or None
        self.dir = Path(str(settings.get("dir") or os.environ.get("WANDB_DIR") or project_dir)).resolve()
        self.run: Any = None

    def _init(self, run_id: str, name: str, group: str | None, job_type: str, config: dict[str, str]) -> Any:
        known = set(getattr(self._wandb.Settings, "model_fields", {}))
        quiet = {k: v for k, v in _QUIET.items() if not known or k in known}
        self.dir.mkdir(parents=True, exist_ok=True)
        return self._wandb.init(
            mode=self.mode,  # type: ignore[arg-type]
            dir=str(self.dir),
            project=self.project,
            entity=self.entity,
            id=run_id,
            resume="allow",
            name=name,
            group=group,
            job_type=job_type,
            config=config,
            allow_val_change=True,
            reinit="create_new",
            settings=quiet,
        )

    @staticmethod
    def _finish(run: Any, metrics: dict[str, float], step: int, files: list[Path], failed: bool) -> None:
        try:
            if metrics:
                run.log(metrics, step=step)
                run.summary.update(metrics)
            for path in files:  # copied, not symlinked: the offline run stays whole if the sweep dir moves
                dest = Path(run.dir) / path.name
                shutil.copyfile(path, dest)
                run.save(str(dest), base_path=run.dir, policy="now")
        finally:
            run.finish(exit_code=1 if failed else 0)

    def start_sweep(
        self, name: str, params: dict[str, str], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        # Nothing is opened yet: with the basic launcher the jobs run in this process, and one open run at
        # a time keeps W&B's state simple. The ids are fixed now, so that every job can join the group.
        if previous and previous.get("run_id") and previous.get("group"):
            return {"run_id": previous["run_id"], "group": previous["group"]}
        return {"run_id": uuid.uuid4().hex[:12], "group": f"{name[-100:]}-{uuid.uuid4().hex[:6]}"}

    def end_sweep(
        self,
        state: dict[str, Any],
        name: str,
        params: dict[str, str],
        metrics: dict[str, float],
        files: list[Path],
    ) -> None:
        run = self._init(str(state["run_id"]), name, state.get("group"), "sweep", params)
        self._finish(run, metrics, 0, files, failed=False)

    def start_job(
        self,
        name: str,
        params: dict[str, str],
        tags: dict[str, str],
        parent: dict[str, Any] | None,
        previous: dict[str, Any] | None,
    ) -> dict[str, Any]:
        run_id = str((previous or {}).get("run_id") or uuid.uuid4().hex[:12])
        group = (parent or {}).get("group") or (previous or {}).get("group")
        self.run = self._init(run_id, name, group, "job", {**params, **tags})
        return {"run_id": run_id, "group": group}

    def end_job(
        self, state: dict[str, Any], metrics: dict[str, float], step: int, files: list[Path], failed: bool
    ) -> None:
        run, self.run = self.run, None
        if run is not None:
            self._finish(run, metrics, step, files, failed)
