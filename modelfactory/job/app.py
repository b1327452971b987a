"""One job of the app, with no Hydra in it: spec -> items -> model -> runner -> record -> exit code.

``run.py`` composes the config with Hydra and calls :func:`run_job`; a test, a notebook or another
launcher can call it with any config shaped like ``conf/config.yaml`` (a ``DictConfig`` or a plain
mapping). What Hydra alone knows is passed in: the output directory and the name the model config was
chosen by. Everything a job leaves on disk is written through :mod:`modelfactory.job.record`.

Exit codes: 0 all good, 1 a backend or item failed, 2 a config or dataset problem (or an unreadable
record of the run dir, ``batches.json``, or another run holding the dir), 3 the job stopped at
its budget (``runner.max_cost_usd``; the reason is in ``job.json``'s ``budget``), 130 interrupted (Ctrl-C:
``job.json`` records it, the rows written stay for a resume). A job never raises for those (a sweep goes
on); it records the error in ``job.json`` (and ``result.json`` for one prompt) and prints it on stderr.
``job.json``'s ``exit_code`` keeps the code (a multirun's jobs have no process exit status of their own).

A task with ``scorers`` is scored as it runs (:mod:`modelfactory.job.scores`): its scorers and targets are
checked before any model call (exit 2), each row gets its ``scores``, and ``job.json`` gets ``scores``
(per scorer: mean, stderr, ci_low, ci_high, n, unscored) and ``primary`` (``{"scorer", "value"}``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from .items import Item
    from .record import JobRecord
    from .runner import RunStats
    from .spec import JobSpec

__all__ = ["run_job"]

log = logging.getLogger("modelfactory.run")  # the job log's name, as when this code lived in run.py


def run_job(
    cfg: DictConfig | Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    *,
    model_name: str | None = None,
    root: str | os.PathLike[str] | None = None,
    raise_errors: bool = False,
    batch_phase: str = "all",
) -> int:
    """Run one job and return its exit code; never raises for a config, dataset or backend problem.

    ``cfg``: the app's config (``model``, ``task``, ``generation``, ``stop_sequences``, ``runner``,
    ``output``). ``output_dir``: where ``job.json``, the results file and ``result.json`` go (a resumed job
    adds to what is there). ``model_name``: the name recorded for the model (run.py: the chosen
    ``model=`` config). ``root``: a second place to look for a relative dataset path.
    ``raise_errors``: re-raise instead of recording (run.py: ``HYDRA_FULL_ERROR=1``).
    ``batch_phase`` (``runner.provider_batch.enabled``): ``all`` (submit, wait, collect), ``submit`` (submit and
    return: ``job.json`` says ``status: submitted`` until a ``collect`` run of the same dir ends the job;
    a multirun's jobs do this, see :mod:`modelfactory.batch.sweep`) or ``collect``.

    The job holds ``output_dir``'s run lock (:mod:`modelfactory._runlock`) for its whole run: a second
    run into the same dir exits 2 at once, naming the process that holds it, and touches nothing there.

    Every log record made during the job (the job log, ``run.log``, a library's own lines) is scrubbed
    of the job's credentials and URL userinfo as it is made (:func:`~modelfactory.secrets.scrubbed_logs`).
    """
    from .._runlock import dir_lock
    from ..errors import ConfigError
    from ..secrets import redact_env, scrubbed_logs

    job_redact: list[Callable[[str], str]] = [redact_env]  # the model's own, once it is built
    with ExitStack() as held:
        try:  # one run per dir, taken before anything there is read or written
            held.enter_context(dir_lock(output_dir))
        except ConfigError as exc:  # another run holds the dir: its job.json and rows are left alone
            if raise_errors:
                raise
            print(f"error: {exc}", file=sys.stderr)
            log.info("error: %s", exc)
            return 2
        with scrubbed_logs(lambda text: job_redact[0](text)):
            return _run_job(cfg, Path(output_dir), model_name, root, raise_errors, batch_phase, job_redact)


def _run_job(
    cfg: DictConfig | Mapping[str, Any],
    out_dir: Path,
    model_name: str | None,
    root: str | os.PathLike[str] | None,
    raise_errors: bool,
    batch_phase: str,
    job_redact: list[Callable[[str], str]],
) -> int:
    """The job, top to bottom: the spec, the items, the model, the run, the record, the exit code."""
    from ..errors import ConfigError, DataError
    from ..pricing import price_for
    from ..secrets import redact_mapping
    from .runner import run_items
    from .scores import JobScores, job_items, task_config
    from .spec import JobSpec

    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    record = _start_record(cfg, out_dir, model_name)
    code, spec, items, stats = 0, None, [], None
    try:
        spec = JobSpec.from_config(cfg)
        record.files(spec.output.results_file, spec.output.result_file)
        # an api_key or a header among the per-call kwargs is written masked, as the model's own are
        record.result.update(stop_sequences=spec.stops, generation=redact_mapping(spec.generation))
        items = job_items(cfg, root)
        record.job["items"] = len(items)
        scores = JobScores.from_task(task_config(cfg), items)  # a bad scorer or target: before any call
        if record.task == "prompt":
            record.result["messages"] = items[0].messages
        model = _build_model(cfg.model, spec, record, job_redact)
        kwargs = _runner_kwargs(spec, record, len(items), model_name, batch_phase)
        workers = scores.workers if scores is not None else 1
        stats = run_items(model, items, score=scores, score_workers=workers, **kwargs)
        price = price_for(model)
        record.ran(stats, None if price is None else price.model_dump())
        if batch_phase == "submit" and stats.batches_pending:
            _submitted(record, stats.batches_pending, root)
        elif scores is not None and record.results_path is not None:  # all rows in: the summaries
            record.job.update(scores.finish(record.results_path, spec.runner.fsync))
            _say_scores(record.job["scores"])
    except KeyboardInterrupt:  # Ctrl-C: the rows written so far stay; a rerun resumes from them
        if raise_errors:
            raise
        return _interrupted(record)
    except Exception as exc:  # config, dataset, build, or a bug: recorded; a sweep goes on
        if raise_errors:
            raise
        record.failed({"type": type(exc).__name__, "message": job_redact[0](str(exc))})
        _say_error(record.job["error"])
        code = 2 if isinstance(exc, (ConfigError, DataError)) else 1
    budget_stop = stats.budget.reason if stats is not None and stats.budget is not None else None
    if budget_stop is not None and record.job["error"] is None:  # the summary's error column says why
        record.job["error"] = {"type": "BudgetExceeded", "message": budget_stop}
    record.write(code)
    if spec is None:  # the config itself is wrong: nothing more to write
        return code
    return _finish(record, spec, stats, items, budget_stop, code)


def _finish(
    record: JobRecord,
    spec: JobSpec,
    stats: RunStats | None,
    items: list[Item],
    budget_stop: str | None,
    code: int,
) -> int:
    """What the job prints and its exit code, from the run's own stats (nothing re-read)."""
    if record.job.get("status") == "submitted":
        print(f"{len(items)} items: {record.job['error']['message']}")
        log.info("%s", record.job["error"]["message"])
        return code
    if record.task == "prompt":
        code = _finish_prompt(record, stats, items, spec.output.print_reply, code)
    elif record.job["error"] is None or budget_stop is not None:
        assert stats is not None  # the run ended without an exception
        code = _finish_dataset(record, stats, len(items))
    if budget_stop is not None:  # items were left unsubmitted: the job did not finish
        print(f"error: {budget_stop}", file=sys.stderr)
        log.info("stopped: %s", budget_stop)
        code = code or 3
    if (
        record.job["exit_code"] != code
    ):  # decided by the rows: job.json keeps the exit code a sweep cannot see
        record.write(code)
    return code


def _start_record(cfg: DictConfig, out_dir: Path, model_name: str | None) -> JobRecord:
    """The job's record, before anything is checked: what task, which shard."""
    from .items import task_shard
    from .record import JobRecord

    task = cfg.get("task")
    record = JobRecord(out_dir, model_name, task.get("type", "prompt") if isinstance(task, Mapping) else None)
    shards, shard = task_shard(cfg)
    if record.task == "dataset" and shards != 1:  # the sweep summary and `modelfactory merge` group by it
        record.job["shard"] = {"index": shard, "count": shards}
    return record


def _build_model(cfg: Any, spec: JobSpec, record: JobRecord, job_redact: list[Callable[[str], str]]) -> Any:
    """The model, its credentials known to the job's scrubber (``job_redact``) and to tracebacks."""
    from ..factory import build_model
    from ..secrets import credential_values, redactor, remember_secrets

    model = build_model(cfg)
    job_redact[0] = redactor(getattr(model, "redact", None), spec.generation)
    # a traceback printed after the job (HYDRA_FULL_ERROR=1, run.py) is scrubbed of them too
    held = getattr(model, "secret_values", None)
    remember_secrets([*(held() if callable(held) else []), *credential_values(spec.generation)])
    if hasattr(model, "to_dict"):
        record.result["model_config"] = model.to_dict()
    return model


def _runner_kwargs(
    spec: JobSpec, record: JobRecord, n_items: int, model_name: str | None, batch_phase: str
) -> dict[str, Any]:
    """:func:`~modelfactory.job.runner.run_items`' keywords from the spec (``runner.*``, the call's)."""
    return {
        "concurrency": spec.runner.concurrency,
        "local_batch_size": spec.runner.local_batch_size,
        "results_path": record.results_path,
        "progress": spec.runner.progress and n_items > 1,
        "retry_errors": spec.runner.retry_errors,
        "fsync": spec.runner.fsync,
        "desc": str(model_name or "items"),
        "max_cost_usd": spec.runner.max_cost_usd,
        "provider_batch": _provider_batch(spec, batch_phase),
        "keep_rows": record.task == "prompt",  # the reply goes into result.json
        "stop_sequences": spec.stops,
        **spec.generation,
    }


def _submitted(record: JobRecord, pending: int, root: str | os.PathLike[str] | None) -> None:
    """``batch_phase="submit"``: the sweep's collecting run writes the rest of the record."""
    record.job.update(status="submitted", root=None if root is None else str(root))
    record.job["error"] = {
        "type": "BatchesPending",
        "message": f"{pending} batch(es) submitted and not collected yet: the sweep collects them when "
        f"every job has submitted; or re-run this job into {record.dir} to collect them",
    }


def _interrupted(record: JobRecord) -> int:
    """Ctrl-C: recorded with the rows kept, exit code 130."""
    from .record import read_results

    path = record.results_path
    done = len(read_results(path)) if path is not None else 0
    message = f"interrupted (Ctrl-C) with {done} rows in the results file; run again to resume"
    record.failed({"type": "KeyboardInterrupt", "message": message})
    record.job["interrupted"] = True
    record.write(130)
    print(f"interrupted: {done} rows kept in {path}; run the same command again to resume", file=sys.stderr)
    log.info("interrupted")
    return 130


def _finish_prompt(
    record: JobRecord, stats: RunStats | None, items: list[Item], print_reply: bool, code: int
) -> int:
    """``result.json`` from the prompt's row (the run kept it), the reply printed; the exit code."""
    row = None
    if stats is not None and items and record.job["error"] is None:
        row = next((r for r in stats.rows if r["id"] == items[0].id), None)
    if row is not None:
        record.result.update(content=row["content"], token_usage=row["usage"], latency_s=row["latency_s"])
        if row["error"]:
            record.result["error"] = row["error"]
            _say_error(row["error"])
            code = 2 if row["error"]["type"] == "ConfigError" else 1
    record.write_result()
    if record.result["content"] is not None:
        log.info("reply: %s", record.result["content"])
        if print_reply:
            print(record.result["content"])
    return code


def _finish_dataset(record: JobRecord, stats: RunStats, n_items: int) -> int:
    """The one-line summary, from the run's own counts (earlier runs' errors included); the exit code."""
    failed = stats.job_failed
    earlier = f" ({stats.skipped} done in an earlier run)" if stats.skipped else ""
    summary = f"{n_items} items: {n_items - failed} ok, {failed} failed{earlier} -> {record.results_path}"
    log.info(summary)
    print(summary)
    return 1 if failed else 0


def _say_scores(scores: Mapping[str, Mapping[str, Any]]) -> None:
    """Each scorer's mean with its CI, printed and logged (``job.json`` and ``scores.json`` keep them)."""
    from ..eval.metrics import Summary

    for label, summary in scores.items():
        line = f"{label}: {Summary(**summary)}"
        print(line)
        log.info("%s", line)


def _say_error(error: Mapping[str, str]) -> None:
    print(f"error: {error['message']}", file=sys.stderr)
    log.info("error: %s: %s", error["type"], error["message"])  # the job log


def _provider_batch(spec: JobSpec, phase: str) -> Any:
    """``runner.provider_batch`` as :class:`~modelfactory.batch.BatchOptions` (None: online calls)."""
    if not spec.runner.provider_batch.enabled:
        return None
    from ..batch import BatchOptions

    return BatchOptions.from_spec(spec.runner.provider_batch, phase)
