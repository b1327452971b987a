"""One job of the app, with no Hydra in it: config -> task items -> run -> job record -> exit code.

``run.py`` composes the config with Hydra and calls :func:`run_job`; a test, a notebook or another
launcher can call it with any config shaped like ``conf/config.yaml`` (a ``DictConfig`` or a plain
mapping). What Hydra alone knows is passed in: the output directory and the name the model config was
chosen by. Everything a job leaves on disk is written through :mod:`modelfactory.results`.

Exit codes: 0 all good, 1 a backend or item failed, 2 a config or dataset problem, 3 the job stopped at
its budget (``runner.max_cost_usd``; the reason is in ``job.json``'s ``budget``). A job never raises
for those (a sweep goes on); it records the error in ``job.json`` (and ``result.json`` for one prompt)
and prints it on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from .datasets import Item

__all__ = ["run_job", "task_items", "task_shard"]

log = logging.getLogger("modelfactory.run")  # the job log's name, as when this code lived in run.py


def _dataset_path(value: str, root: Path | None) -> Path:
    """A relative path is looked up from the current directory, then from ``root`` (the project)."""
    p = Path(os.path.expanduser(value))
    if p.is_absolute():
        return p
    here = Path.cwd() / p
    if root is not None and not here.exists() and (root / p).exists():
        return root / p
    return here


def task_items(cfg: Any, root: str | os.PathLike[str] | None = None) -> list[Item]:
    """The items of ``cfg.task``: one prompt, or a dataset file (relative paths also tried under ``root``)."""
    from .datasets import load_dataset, prompt_item, shard_items
    from .errors import ConfigError, Problem

    task = cfg.task
    kind = task.get("type", "prompt")
    if kind == "prompt":
        return [prompt_item(str(task.prompt), task.get("system_prompt"))]
    if kind == "dataset":
        if not task.get("path"):
            raise ConfigError([Problem("task.path", "not set", "task.path=path/to/items.jsonl")])
        items = load_dataset(_dataset_path(str(task.path), Path(root) if root is not None else None))
        limit = task.get("limit")
        items = items[: int(limit)] if limit else items  # before sharding: the shards split these N
        shards, shard = task_shard(cfg)
        return shard_items(items, shards, shard)
    raise ConfigError(
        [Problem("task.type", f"unknown task type {kind!r}", "use task=prompt or task=dataset")]
    )


def task_shard(cfg: Any) -> tuple[Any, Any]:
    """``(task.shards, task.shard)``: which 1/N of the dataset this job runs (``(1, 0)``: all of it)."""
    task = cfg.task
    shards = task.get("shards", 1)
    return (1 if shards is None else shards), (task.get("shard") or 0)


def _error(exc: BaseException, redact: Any) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": redact(str(exc))}


def _unescape_stops(cfg: DictConfig) -> list[str] | None:
    from .overrides import unescape

    return [unescape(str(s)) for s in cfg.get("stop_sequences") or []] or None  # "\n" typed on the CLI


def run_job(
    cfg: DictConfig | Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    *,
    model_name: str | None = None,
    root: str | os.PathLike[str] | None = None,
    raise_errors: bool = False,
) -> int:
    """Run one job and return its exit code; never raises for a config, dataset or backend problem.

    ``cfg``: the app's config (``model``, ``task``, ``generation``, ``stop_sequences``, ``runner``,
    ``output``). ``output_dir``: where ``job.json``, the results file and ``result.json`` go (a resumed job
    adds to what is there). ``model_name``: the name recorded for the model (run.py: the chosen
    ``model=`` config). ``root``: a second place to look for a relative dataset path.
    ``raise_errors``: re-raise instead of recording (run.py: ``HYDRA_FULL_ERROR=1``).
    """
    from .errors import ConfigError
    from .factory import build_model
    from .pricing import price_for
    from .results import aggregate_rows, read_job, read_results, write_job, write_json
    from .runner import run_items
    from .secrets import redact_env

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = cfg.task.get("type", "prompt")
    gen_cfg = OmegaConf.to_container(cfg.generation, resolve=True)
    assert isinstance(gen_cfg, dict)
    generation = {str(k): v for k, v in gen_cfg.items() if v is not None}
    stops = _unescape_stops(cfg)
    runner = cfg.runner
    results_path = out_dir / cfg.output.results_file
    previous = read_job(out_dir) or {}  # a resumed job adds to its earlier runs
    job: dict[str, Any] = {
        "model": model_name,
        "task": kind,
        "results_file": str(cfg.output.results_file),  # readers (the sweep summary) find the rows by it
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
        "stop_sequences": stops,
        "generation": generation,
        "content": None,
        "token_usage": None,
        "latency_s": None,
        "error": None,
    }
    redact = redact_env
    code = 0
    budget_stop: str | None = None
    items: list[Any] = []
    try:
        items = task_items(cfg, root)
        job["items"] = len(items)
        if kind == "prompt":
            result["messages"] = items[0].messages
        model = build_model(cfg.model)
        redact = getattr(model, "redact", redact_env)
        if hasattr(model, "to_dict"):
            result["model_config"] = model.to_dict()
        stats = run_items(
            model,
            items,
            concurrency=int(runner.concurrency),
            batch_size=int(runner.batch_size),
            results_path=results_path,
            progress=bool(runner.progress) and len(items) > 1,
            retry_errors=bool(runner.retry_errors),
            fsync=bool(runner.get("fsync", True)),
            desc=str(model_name or "items"),
            max_cost_usd=None if runner.get("max_cost_usd") is None else float(runner.max_cost_usd),
            mode=str(runner.get("mode", "online")),
            batch=_batch_options(runner),
            stop_sequences=stops,
            **generation,
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
    except Exception as exc:  # config, dataset, build, or a bug: recorded; a sweep goes on
        if raise_errors:
            raise
        job["error"] = result["error"] = _error(exc, redact)
        print(f"error: {job['error']['message']}", file=sys.stderr)
        log.info("error: %s: %s", job["error"]["type"], job["error"]["message"])  # the job log
        code = 2 if isinstance(exc, ConfigError) else 1
    if budget_stop is not None and job["error"] is None:  # the summary's error column says why it stopped
        job["error"] = {"type": "BudgetExceeded", "message": budget_stop}
    write_job(out_dir, job)

    if kind == "prompt":
        row = read_results(results_path).get(items[0].id) if items and not job["error"] else None
        if row is not None:
            result.update(content=row["content"], token_usage=row["usage"], latency_s=row["latency_s"])
            if row["error"]:
                result["error"] = row["error"]
                print(f"error: {row['error']['message']}", file=sys.stderr)
                log.info("error: %s: %s", row["error"]["type"], row["error"]["message"])
                code = 2 if row["error"]["type"] == "ConfigError" else 1
        write_json(out_dir / cfg.output.result_file, result)
        if result["content"] is not None:
            log.info("reply: %s", result["content"])
            if cfg.output.print_reply:
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
    return code


def _batch_options(runner: Any) -> Any:
    """``runner.batch.*`` as :class:`~modelfactory.batch.BatchOptions` (None in online mode)."""
    if str(runner.get("mode", "online")) != "batch":
        return None
    from .batch import BatchOptions

    b = runner.get("batch") or {}
    max_wait = b.get("max_wait")
    max_requests = b.get("max_requests")
    return BatchOptions(
        poll_s=float(b.get("poll_s", 30)),
        max_wait=None if max_wait is None else float(max_wait),
        on_missing=str(b.get("on_missing", "online")),
        max_requests=None if max_requests is None else int(max_requests),
    )
