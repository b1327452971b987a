"""One job of the app, with no Hydra in it: config -> task items -> run -> job record -> exit code.

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
    from .spec import JobSpec

__all__ = ["run_job"]

log = logging.getLogger("modelfactory.run")  # the job log's name, as when this code lived in run.py


def _error(exc: BaseException, redact: Any) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": redact(str(exc))}


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
    from ..errors import ConfigError
    from .._runlock import dir_lock
    from ..secrets import redact_env, scrubbed_logs

    job_redact: list[Any] = [redact_env]  # the model's own, once it is built
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
            return _run_job(cfg, output_dir, model_name, root, raise_errors, batch_phase, job_redact)


def _run_job(
    cfg: DictConfig | Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    model_name: str | None,
    root: str | os.PathLike[str] | None,
    raise_errors: bool,
    batch_phase: str,
    job_redact: list[Any],
) -> int:
    from ..errors import ConfigError, DataError
    from ..factory import build_model
    from .spec import JobSpec
    from ..pricing import price_for
    from .items import task_items, task_shard
    from .record import aggregate_rows, read_job, read_results, write_job, write_json
    from .runner import run_items
    from ..secrets import credential_values, redact_env, redact_mapping, redactor, remember_secrets

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = cfg.get("task")
    kind = task.get("type", "prompt") if isinstance(task, Mapping) else None
    previous = read_job(out_dir) or {}  # a resumed job adds to its earlier runs
    job: dict[str, Any] = {
        "model": model_name,
        "task": kind,
        "results_file": None,  # readers (the sweep summary) find the rows by it
        "items": None,
        "error": None,
        "elapsed_s": previous.get("elapsed_s") or 0.0,
        "runs": int(previous.get("runs") or 0) + 1,
        "last_run": None,
    }
    shards, shard = task_shard(cfg)
    if kind == "dataset" and shards != 1:  # the sweep summary and `modelfactory merge` group shards by it
        job["shard"] = {"index": shard, "count": shards}
    result: dict[str, Any] = {
        "model_name": model_name,
        "model_config": None,
        "messages": None,
        "stop_sequences": None,
        "generation": None,
        "content": None,
        "token_usage": None,
        "latency_s": None,
        "error": None,
    }
    redact: Callable[[str], str] = redact_env
    code = 0
    budget_stop: str | None = None
    items: list[Any] = []
    jc: JobSpec | None = None
    results_path: Path | None = None
    try:
        jc = JobSpec.from_config(cfg)
        results_path = out_dir / jc.output.results_file
        job["results_file"] = jc.output.results_file
        # an api_key or a header among the per-call kwargs is written masked, as the model's own are
        result.update(stop_sequences=jc.stops, generation=redact_mapping(jc.generation))
        items = task_items(cfg, root)
        job["items"] = len(items)
        if kind == "prompt":
            result["messages"] = items[0].messages
        model = build_model(cfg.model)
        redact = job_redact[0] = redactor(getattr(model, "redact", None), jc.generation)
        # a traceback printed after the job (HYDRA_FULL_ERROR=1, run.py) is scrubbed of them too
        held = getattr(model, "secret_values", None)
        remember_secrets([*(held() if callable(held) else []), *credential_values(jc.generation)])
        if hasattr(model, "to_dict"):
            result["model_config"] = model.to_dict()
        stats = run_items(
            model,
            items,
            concurrency=jc.runner.concurrency,
            local_batch_size=jc.runner.local_batch_size,
            results_path=results_path,
            progress=jc.runner.progress and len(items) > 1,
            retry_errors=jc.runner.retry_errors,
            fsync=jc.runner.fsync,
            desc=str(model_name or "items"),
            max_cost_usd=jc.runner.max_cost_usd,
            provider_batch=_provider_batch(jc, batch_phase),
            stop_sequences=jc.stops,
            **jc.generation,
        )
        job["elapsed_s"] = round(float(job["elapsed_s"]) + stats.elapsed_s, 4)
        job["last_run"] = stats.to_dict()
        price = price_for(model)
        job["price"] = None if price is None else price.model_dump()
        # over every run's rows (a resumed job included); None: unknown (no price), never a made-up 0
        job["cost_usd"] = aggregate_rows(read_results(results_path).values())["cost_usd"]
        if stats.budget is not None:
            job["budget"] = stats.budget.to_dict()
            if stats.budget.reason is not None:
                budget_stop = stats.budget.reason
        if batch_phase == "submit" and stats.batches_pending:
            submitted = stats.batches_pending  # the sweep's collecting run writes the rest of the record
            job.update(status="submitted", root=None if root is None else str(root))
            job["error"] = {
                "type": "BatchesPending",
                "message": f"{submitted} batch(es) submitted and not collected yet: the sweep collects "
                f"them when every job has submitted; or re-run this job into {out_dir} to collect them",
            }
    except KeyboardInterrupt:  # Ctrl-C: the rows written so far stay; a rerun resumes from them
        if raise_errors:
            raise
        done = len(read_results(results_path)) if results_path is not None else 0
        job["error"] = result["error"] = {
            "type": "KeyboardInterrupt",
            "message": f"interrupted (Ctrl-C) with {done} rows in the results file; run again to resume",
        }
        job["interrupted"] = True
        job["exit_code"] = 130
        write_job(out_dir, job)
        print(
            f"interrupted: {done} rows kept in {results_path}; run the same command again to resume",
            file=sys.stderr,
        )
        log.info("interrupted")
        return 130
    except Exception as exc:  # config, dataset, build, or a bug: recorded; a sweep goes on
        if raise_errors:
            raise
        job["error"] = result["error"] = _error(exc, redact)
        print(f"error: {job['error']['message']}", file=sys.stderr)
        log.info("error: %s: %s", job["error"]["type"], job["error"]["message"])  # the job log
        code = 2 if isinstance(exc, (ConfigError, DataError)) else 1
    if budget_stop is not None and job["error"] is None:  # the summary's error column says why it stopped
        job["error"] = {"type": "BudgetExceeded", "message": budget_stop}
    job["exit_code"] = code
    write_job(out_dir, job)
    if jc is None or results_path is None:  # the config itself is wrong: nothing more to write
        return code
    if job.get("status") == "submitted":
        pending = job["error"]["message"]
        print(f"{len(items)} items: {pending}")
        log.info("%s", pending)
        return code

    if kind == "prompt":
        row = read_results(results_path).get(items[0].id) if items and not job["error"] else None
        if row is not None:
            result.update(content=row["content"], token_usage=row["usage"], latency_s=row["latency_s"])
            if row["error"]:
                result["error"] = row["error"]
                print(f"error: {row['error']['message']}", file=sys.stderr)
                log.info("error: %s: %s", row["error"]["type"], row["error"]["message"])
                code = 2 if row["error"]["type"] == "ConfigError" else 1
        write_json(out_dir / jc.output.result_file, result)
        if result["content"] is not None:
            log.info("reply: %s", result["content"])
            if jc.output.print_reply:
                print(result["content"])
    elif job["error"] is None or budget_stop is not None:
        rows = read_results(results_path)
        failed = sum(1 for it in items if (rows.get(it.id) or {}).get("error"))
        skipped = (job["last_run"] or {}).get("skipped") or 0
        earlier = f" ({skipped} done in an earlier run)" if skipped else ""
        summary = f"{len(items)} items: {len(items) - failed} ok, {failed} failed{earlier} -> {results_path}"
        log.info(summary)
        print(summary)
        code = 1 if failed else 0
    if budget_stop is not None:  # items were left unsubmitted: the job did not finish
        print(f"error: {budget_stop}", file=sys.stderr)
        log.info("stopped: %s", budget_stop)
        code = code or 3
    if job["exit_code"] != code:  # decided by the rows: job.json keeps the exit code a sweep cannot see
        job["exit_code"] = code
        write_job(out_dir, job)
    return code


def _provider_batch(spec: JobSpec, phase: str) -> Any:
    """``runner.provider_batch`` as :class:`~modelfactory.batch.BatchOptions` (None: online calls)."""
    if not spec.runner.provider_batch.enabled:
        return None
    from ..batch import BatchOptions

    return BatchOptions.from_spec(spec.runner.provider_batch, phase)
