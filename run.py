"""The modelfactory app: compose a config, build the model, run the task's items, record the results.

python run.py                                   # offline tiny model, one prompt
python run.py model=openai_gpt4o prompt="Hi"    # any config in conf/model/
python run.py task=dataset runner.concurrency=16
python run.py -m model=a,b generation.temperature=0,0.7     # a sweep, with a summary table at the end

Keys never go on the command line (Hydra writes every override to disk in clear): such an override is
refused before Hydra starts. Put them in the environment or in ./.env (loaded here, never copied).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from modelfactory.overrides import refusal_message, scrub_saved_config, secret_overrides, unescape

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("modelfactory.run")

# ------------------------------------------------------------------------------------ one job


def _dataset_path(value: str) -> Path:
    p = Path(os.path.expanduser(value))
    if p.is_absolute():
        return p
    here = Path.cwd() / p
    if not here.exists() and (ROOT / p).exists():
        return ROOT / p
    return here


def task_items(cfg: DictConfig) -> list[Any]:
    from modelfactory.errors import ConfigError, Problem
    from modelfactory.runner import load_dataset, prompt_item

    task = cfg.task
    kind = task.get("type", "prompt")
    if kind == "prompt":
        return [prompt_item(str(task.prompt), task.get("system_prompt"))]
    if kind == "dataset":
        if not task.get("path"):
            raise ConfigError([Problem("task.path", "not set", "task.path=path/to/items.jsonl")])
        items = load_dataset(_dataset_path(str(task.path)))
        limit = task.get("limit")
        return items[: int(limit)] if limit else items
    raise ConfigError(
        [Problem("task.type", f"unknown task type {kind!r}", "use task=prompt or task=dataset")]
    )


def _error(exc: BaseException, redact: Any) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": redact(str(exc))}


def run(cfg: DictConfig) -> int:
    """One job. Returns the exit code; never raises for a config, dataset or backend problem."""
    from modelfactory import ConfigError, build_model
    from modelfactory.results import read_job, read_results, write_job, write_json
    from modelfactory.runner import run_items
    from modelfactory.settings import redact_env

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        if scrub_saved_config(out_dir / ".hydra" / "config.yaml"):
            print(
                "warning: a key is written literally in a config file; it was masked in this run's "
                ".hydra/config.yaml. Prefer ${oc.env:VAR} in config files.",
                file=sys.stderr,
            )
        if multirun:
            scrub_saved_config(Path(hc.sweep.dir) / "multirun.yaml")
    except Exception as exc:  # never let the scrubbing itself fail a job
        log.warning("could not check the saved config for literal keys: %s", exc)

    model_name = hc.runtime.choices.get("model")
    kind = cfg.task.get("type", "prompt")
    gen_cfg = OmegaConf.to_container(cfg.generation, resolve=True)
    assert isinstance(gen_cfg, dict)
    generation = {str(k): v for k, v in gen_cfg.items() if v is not None}
    stops = [unescape(str(s)) for s in cfg.get("stop_sequences") or []] or None  # "\n" typed on the CLI
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
    items: list[Any] = []
    try:
        items = task_items(cfg)
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
            stop_sequences=stops,
            **generation,
        )
        job["elapsed_s"] = round(float(job["elapsed_s"]) + stats.elapsed_s, 4)
        job["last_run"] = stats.to_dict()
    except Exception as exc:  # config, dataset, build, or a bug: recorded; a sweep goes on
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        job["error"] = result["error"] = _error(exc, redact)
        print(f"error: {job['error']['message']}", file=sys.stderr)
        log.info("error: %s: %s", job["error"]["type"], job["error"]["message"])  # the job log
        code = 2 if isinstance(exc, ConfigError) else 1
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
    elif job["error"] is None:
        rows = read_results(results_path)
        failed = sum(1 for it in items if (rows.get(it.id) or {}).get("error"))
        skipped = (job["last_run"] or {}).get("skipped") or 0
        earlier = f" ({skipped} done in an earlier run)" if skipped else ""
        summary = f"{len(items)} items: {len(items) - failed} ok, {failed} failed{earlier} -> {results_path}"
        log.info(summary)
        print(summary)
        code = 1 if failed else 0
    return code


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    code = run(cfg)
    # A failing job in a sweep is recorded (job.json, results.jsonl); only a single run sets the exit code.
    if code and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(code)


def skip_mode_probe(args: list[str]) -> None:
    """Spare Hydra its first of two full compositions on a plain single run (~0.1 s of a cold start).

    Hydra composes the whole config once only to read ``hydra.mode``, then again to run. Nothing in our
    ``conf/config.yaml`` sets the mode; only ``-m`` or an override (``experiment=...``, ``hydra.mode``, a
    ``hydra/...`` group) can. When none is present, the answer is known: no mode, i.e. a single run.
    """
    touches_mode = any(
        a in ("-m", "--multirun")
        or a.startswith(("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir"))
        or "experiment" in a
        or "hydra.mode" in a
        or a.lstrip("+~").startswith("hydra/")
        for a in args
    )
    try:
        from hydra._internal.hydra import Hydra
    except ImportError:  # pragma: no cover - a Hydra without this internal: keep its own behaviour
        return
    if not touches_mode and hasattr(Hydra, "get_mode"):
        Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]


def cli() -> None:
    args = sys.argv[1:]
    keys = secret_overrides(args)
    if keys:
        print(refusal_message(keys, args, ROOT / "conf"), file=sys.stderr)
        sys.exit(2)
    if Path(".env").is_file():  # keys for the backends, read from the environment; never copied anywhere
        from modelfactory.runner import load_dotenv

        load_dotenv()
    skip_mode_probe(args)
    main()


if __name__ == "__main__":
    cli()
