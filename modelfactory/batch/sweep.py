"""A multirun with ``runner.provider_batch.enabled=true``: every job submits its batches, then the sweep waits for all of
them together, and only then collects each job.

Without it each job would submit and wait in turn (a launcher runs ``n_jobs`` at a time), so the last
job's batches would start only after the first ones ended: hours of provider queue time in a row. With
it (``BatchSweepCallback`` in ``hydra.callbacks``, as ``modelfactory/conf/config.yaml`` has it):

1. each job of the multirun runs with ``batch_phase="submit"`` (``run.py`` asks :func:`sweep_collects`):
   cache hits are written, the rest submitted, the ids recorded in the job's ``batches.json``; the job
   records ``status: submitted`` in ``job.json`` and returns at once, under any launcher (basic, joblib,
   submitit, Ray on a shared disk): only files are shared;
2. when the last job has returned, :meth:`BatchSweepCallback.on_multirun_end` (in the launching process)
   polls every job's batches together (:func:`~modelfactory.batch.driver.wait_all`);
3. then each job is collected in place: its own config (``.hydra/config.yaml``, ``.hydra/hydra.yaml``)
   is run again with ``batch_phase="collect"``, exactly as a re-run into the job's dir would be, with
   the sweep's other callbacks notified of it (a tracker's run continues): ``results.jsonl``,
   ``job.json`` (``exit_code``, ``elapsed_s`` including the wait), ``result.json``; the summary
   callback, which runs after this one, then sees finished jobs.

Nothing is lost to a crash or Ctrl-C while waiting: the batches keep running, recorded in each job's
``batches.json``. Re-running the same sweep (same ``hydra.sweep.dir``) submits nothing new and waits
again; re-running one job into its dir (``hydra.run.dir=<job dir>``) collects that job alone.

Keys in a model config must come from the environment (``${oc.env:...}``, an env fallback), as they
should anyway: the collecting run reads the job's saved config, where a key written literally in a
config file was masked.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

__all__ = ["BatchSweepCallback", "collect_sweep", "submitted_jobs", "sweep_collects"]

log = logging.getLogger("modelfactory.batch")


def sweep_collects(callbacks: Any) -> bool:
    """Whether a multirun's ``hydra.callbacks`` include :class:`BatchSweepCallback`, i.e. whether its
    batch jobs may only submit (the sweep collects them at its end)."""
    if not isinstance(callbacks, Mapping):
        return False
    names = {f"{__name__}.BatchSweepCallback", "modelfactory.batch.BatchSweepCallback"}
    return any(isinstance(c, Mapping) and str(c.get("_target_")) in names for c in callbacks.values())


def _number(path: Path) -> tuple[int, str]:
    """Job dirs in their numeric order (0, 1, ..., 10), whatever their nesting."""
    digits = re.findall(r"\d+", path.name)
    return (int(digits[-1]) if digits else -1, str(path))


def submitted_jobs(sweep_dir: str | Path) -> list[Path]:
    """The job dirs under ``sweep_dir`` whose ``job.json`` says ``status: submitted``."""
    from ..job.record import JOB_FILE, read_job

    dirs = {p.parent for p in Path(sweep_dir).rglob(JOB_FILE)}
    return sorted((d for d in dirs if (read_job(d) or {}).get("status") == "submitted"), key=_number)


@dataclass
class _Job:
    dir: Path
    cfg: DictConfig  # the job's own config, as its task function got it (.hydra/config.yaml)
    full: DictConfig  # with the hydra node (.hydra/hydra.yaml): what callbacks get
    record: dict[str, Any]  # job.json of the submit phase


def _load(job_dir: Path) -> _Job:
    from ..errors import ConfigError, Problem
    from ..job.record import read_job

    saved = job_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(
            [Problem("job dir", f"no .hydra/config.yaml in {job_dir}", "collect a job run.py wrote")],
            title="collecting a sweep's batches",
        )
    cfg = OmegaConf.load(saved)
    assert isinstance(cfg, DictConfig)
    hydra_file = job_dir / ".hydra" / "hydra.yaml"
    hydra = OmegaConf.load(hydra_file) if hydra_file.is_file() else OmegaConf.create({})
    full = OmegaConf.merge(cfg, hydra)
    assert isinstance(full, DictConfig)
    return _Job(job_dir, cfg, full, read_job(job_dir) or {})


@contextmanager
def _as_job(job: _Job) -> Iterator[None]:
    """Hydra's view of the running job set to ``job`` (``${hydra:...}`` in its config resolves as it did
    in the job), the sweep's restored afterwards. Without a usable hydra node, nothing is changed."""
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig

    instance = HydraConfig.instance()
    before = instance.cfg
    try:
        hydra = OmegaConf.merge(OmegaConf.structured(HydraConf), job.full.get("hydra") or {})
        instance.set_config(OmegaConf.merge(job.cfg, {"hydra": hydra}))  # type: ignore[arg-type]
        changed = True
    except Exception as exc:  # noqa: BLE001 - an older or foreign hydra.yaml: keep the sweep's view
        log.debug("%s: cannot set the job's hydra config: %s", job.dir, exc)
        changed = False
    try:
        yield
    finally:
        if changed:
            instance.cfg = before


def _other_callbacks(job: _Job) -> list[Any]:
    """The job's hydra.callbacks but this module's own, instantiated as Hydra does for each job."""
    from hydra.utils import instantiate

    callbacks = OmegaConf.select(job.full, "hydra.callbacks") or {}
    out = []
    for name, params in callbacks.items():
        if sweep_collects({name: params}):
            continue
        try:
            out.append(instantiate(params))
        except Exception as exc:  # noqa: BLE001 - as Hydra: a broken callback warns, the job goes on
            log.warning("callback %s: %s", name, exc)
    return out


def _notify(callbacks: list[Any], hook: str, **kwargs: Any) -> None:
    for cb in callbacks:
        try:
            getattr(cb, hook)(**kwargs)
        except Exception as exc:  # noqa: BLE001 - Hydra's own policy: warn, go on
            log.warning("callback %s.%s: %s: %s", type(cb).__name__, hook, type(exc).__name__, exc)


def _groups(jobs: list[_Job]) -> list[Any]:
    """Each job's batches with the adapter of its own model (built from its own config)."""
    from ..factory import build_model
    from .base import BATCHES_FILE, BatchState
    from .driver import BatchGroup, BatchOptions, adapter_for

    groups = []
    for job in jobs:
        try:
            with _as_job(job):
                options = BatchOptions.from_config(OmegaConf.select(job.cfg, "runner.provider_batch"))
                adapter = adapter_for(build_model(job.cfg.model))
        except Exception as exc:  # noqa: BLE001 - that job's collecting run reports it
            log.warning("%s: cannot poll its batches: %s: %s", job.dir, type(exc).__name__, exc)
            continue
        state = BatchState.load(job.dir / BATCHES_FILE)
        groups.append(BatchGroup(str(job.dir), adapter, state, options.max_wait))
    return groups


def _collect(job: _Job, waited_s: float) -> int:
    """Run the job again in its dir with ``batch_phase="collect"``, callbacks notified; its exit code."""
    from hydra.core.utils import JobReturn, JobStatus

    from .._runlock import dir_lock
    from ..job.app import run_job
    from ..job.record import read_job, write_job

    callbacks = _other_callbacks(job)
    with _as_job(job), dir_lock(job.dir):  # the job's run and the wait added to its record: one run
        _notify(callbacks, "on_job_start", config=job.full, task_function=None)
        root = job.record.get("root")
        code = run_job(
            job.cfg,
            job.dir,
            model_name=job.record.get("model"),
            root=None if root is None else Path(root),
            batch_phase="collect",
        )
        record = read_job(job.dir) or {}
        if record:  # the wait was part of this job's run: its throughput is items over all of it
            record["elapsed_s"] = round(float(record.get("elapsed_s") or 0.0) + waited_s, 4)
            record["batch_wait_s"] = round(waited_s, 4)
            write_job(job.dir, record)
        ret = JobReturn(status=JobStatus.COMPLETED if code == 0 else JobStatus.FAILED)
        ret.return_value = code
        _notify(callbacks, "on_job_end", config=job.full, job_return=ret)
    return code


def collect_sweep(
    sweep_dir: str | Path,
    *,
    poll_s: float | None = None,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, int]:
    """Wait for the batches of every submitted job under ``sweep_dir`` together, then collect each job;
    ``{job dir: exit code}``. ``poll_s``: the first wait between polls (default: the smallest
    ``runner.provider_batch.poll_s`` of the jobs)."""
    from .driver import BatchOptions, wait_all

    jobs = []
    for job_dir in submitted_jobs(sweep_dir):
        try:
            jobs.append(_load(job_dir))
        except Exception as exc:  # noqa: BLE001 - the other jobs are still collected
            log.warning("%s: cannot collect it: %s: %s", job_dir, type(exc).__name__, exc)
    if not jobs:
        return {}
    groups = _groups(jobs)
    progress = progress and all(OmegaConf.select(j.cfg, "runner.progress", default=True) for j in jobs)
    if poll_s is None:
        polls = [
            BatchOptions.from_config(OmegaConf.select(j.cfg, "runner.provider_batch")).poll_s for j in jobs
        ]
        poll_s = min(polls)
    running = sum(len(g.state.running()) for g in groups)
    print(
        f"{len(jobs)} job(s) submitted {running} batch(es); waiting for all of them "
        f"(Ctrl-C leaves them running: re-run the same sweep to collect them)",
        file=sys.stderr,
    )
    try:
        waited = wait_all(groups, poll_s, progress=progress, sleep=sleep)
    except KeyboardInterrupt:
        dirs = " ".join(str(j.dir) for j in jobs)
        print(
            f"\ninterrupted: the sweep's batches keep running at the provider (already paid for). "
            f"Re-run the same sweep (same hydra.sweep.dir) to collect them, or cancel them with "
            f"`modelfactory batches cancel <job dir>` for each of: {dirs}",
            file=sys.stderr,
        )
        raise
    return {str(job.dir): _collect(job, waited.get(str(job.dir), 0.0)) for job in jobs}


class BatchSweepCallback(Callback):
    """``hydra.callbacks``: at the end of a multirun, wait for every job's provider batches together and
    collect each job (see the module docstring). Listed after the summary callback, so that it runs
    before it (Hydra calls ``on_multirun_end`` in reverse order). Does nothing in a sweep of online jobs.
    """

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir() or not submitted_jobs(sweep_dir):
            return
        codes = collect_sweep(sweep_dir, progress=self.progress)
        failed = sum(1 for c in codes.values() if c)
        if failed:
            print(
                f"{failed} of {len(codes)} batch job(s) did not finish cleanly (see job.json)",
                file=sys.stderr,
            )
