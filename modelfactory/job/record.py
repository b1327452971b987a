"""Results out: the files a job leaves behind, their names and formats, in one place.

- ``results.jsonl`` (:data:`RESULTS_FILE`, the default of ``output.results_file``): one JSON row per item,
  ``{"id", "content", "usage", "latency_s", "error", "cost_usd"}`` (plus ``served_by`` from a fallback
  model, ``batch`` for items run through a provider's batch API, priced at its rate, ``cached`` for
  replies served from the response cache, which cost 0, ``logprobs`` when the calls asked for them:
  ``ChatMessage.logprobs`` as ``[{"token", "logprob", "top": [[token, logprob], ...]}]``), appended
  as items finish. The newest row of an id wins; a torn last line left by a crash is repaired or dropped.
- ``job.json`` (:data:`JOB_FILE`): the job's record, like every record here written whole or not at all
  (:func:`atomic_open`; an empty or torn one reads as no record: the job did not finish) (model, task, results file, items, error, elapsed
  time, runs, ``price``, ``cost_usd``, ``budget``). It names the results file, so a reader finds the rows whatever the config called them.

The runner writes these files, the app records the job, and the sweep summary, the report, the shard
merge and the trackers read them back (:func:`collect_jobs`: one record per job of a sweep), all through
this module, so a name or a format changes here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

__all__ = [
    "JOB_FILE",
    "RESULTS_FILE",
    "SCORES_FILE",
    "SCORES_SUMMARY_FILE",
    "JobRecord",
    "ResultsWriter",
    "aggregate_rows",
    "atomic_open",
    "collect_jobs",
    "error_row",
    "ok_row",
    "percentile",
    "read_job",
    "read_json_object",
    "read_results",
    "redact_row",
    "job_record_problem",
    "repair_tail",
    "results_path",
    "write_atomic",
    "write_job",
    "write_json",
]

log = logging.getLogger("modelfactory.runner")  # the runner's logger: the messages are the same as before

RESULTS_FILE = "results.jsonl"
JOB_FILE = "job.json"
SCORES_FILE = "scores.jsonl"  # ``modelfactory score``: per item and scorer, over the rows' own scores
SCORES_SUMMARY_FILE = "scores.json"  # ``modelfactory score``: per scorer, the summary

# ---------------------------------------------------------------------------------------------- rows


def usage_of(reply: Any) -> dict[str, int] | None:
    usage = getattr(reply, "token_usage", None)
    if usage is None:
        return None
    to_dict = getattr(usage, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    if isinstance(usage, Mapping):
        return dict(usage)
    return None


def content_of(reply: Any) -> Any:
    if isinstance(reply, str):
        return reply
    return getattr(reply, "content", None)


def ok_row(item_id: str, reply: Any, latency: float) -> dict[str, Any]:
    """The row of an item that got a reply (a ChatMessage-like object, or a plain string)."""
    row = {
        "id": item_id,
        "content": content_of(reply),
        "usage": usage_of(reply),
        "latency_s": round(latency, 4),
        "error": None,
    }
    logprobs = getattr(reply, "logprobs", None)
    if isinstance(logprobs, list):  # asked for (generation.logprobs=true): what a choice scorer can read
        row["logprobs"] = [t.to_dict() if hasattr(t, "to_dict") else t for t in logprobs]
    raw = getattr(reply, "raw", None)
    if isinstance(raw, dict) and "served_by" in raw:  # a FallbackModel: which member answered
        row["served_by"] = raw["served_by"]
    if isinstance(raw, dict) and raw.get("cache") == "hit":  # from the response cache: nothing billed
        row["cached"] = True
    return row


def error_row(item_id: str, exc: BaseException, latency: float) -> dict[str, Any]:
    """The row of an item whose call raised: resume runs it again (``retry_errors``)."""
    error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        error["status"] = status
    return {"id": item_id, "content": None, "usage": None, "latency_s": round(latency, 4), "error": error}


def redact_row(row: dict[str, Any], redact: Callable[[str], str]) -> dict[str, Any]:
    """Mask secrets in a row's free text (a reply or an error may echo a key) before it is written."""
    if isinstance(row.get("content"), str):
        row["content"] = redact(row["content"])
    if row.get("error"):
        row["error"]["message"] = redact(str(row["error"]["message"]))
    return row


# ---------------------------------------------------------------------------------------------- results.jsonl


def repair_tail(path: Path) -> None:
    """A crash mid-write can leave a torn last line: complete it if it parses, else cut it off."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        # find the start of the last line
        chunk = 1 << 16
        pos = size
        start = 0
        while pos > 0:
            read_from = max(0, pos - chunk)
            f.seek(read_from)
            block = f.read(pos - read_from)
            idx = block.rfind(b"\n")
            if idx >= 0:
                start = read_from + idx + 1
                break
            pos = read_from
        f.seek(start)
        tail = f.read()
        try:
            json.loads(tail)
        except ValueError:
            f.truncate(start)
            log.warning("results: dropped a torn last row in %s", path)
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")


def read_results(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The newest row of every id in a results file (in first-seen order). Unreadable lines are skipped."""
    p = Path(path)
    rows: dict[str, dict[str, Any]] = {}
    if not p.exists():
        return rows
    with p.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                log.warning("results: skipping unreadable line %d of %s", number, p)
                continue
            if isinstance(row, dict) and "id" in row:
                rows[str(row["id"])] = row
    return rows


class ResultsWriter:
    """Appends rows; each one is written whole, flushed and (by default) fsynced before the next."""

    def __init__(self, path: Path | None, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        self._file: Any = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            repair_tail(path)
            self._file = path.open("a", encoding="utf-8", newline="\n")

    def write(self, row: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ---------------------------------------------------------------------------------------------- stats


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def aggregate_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts, latency (mean, p95 over successful items), token totals and cost of result rows."""
    ok = failed = tokens_in = tokens_out = tokens_reasoning = 0
    latencies: list[float] = []
    costs: list[float] = []
    for row in rows:
        if isinstance(row.get("cost_usd"), (int, float)):
            costs.append(float(row["cost_usd"]))
        if row.get("error"):
            failed += 1
            continue
        ok += 1
        if isinstance(row.get("latency_s"), (int, float)):
            latencies.append(float(row["latency_s"]))
        usage = row.get("usage") or {}
        tokens_in += int(usage.get("input_tokens") or 0)
        tokens_out += int(usage.get("output_tokens") or 0)
        tokens_reasoning += int(usage.get("reasoning_tokens") or 0)  # a part of tokens_out
    return {
        "ok": ok,
        "failed": failed,
        "mean_latency_s": round(sum(latencies) / len(latencies), 4) if latencies else None,
        "p95_latency_s": percentile(latencies, 95),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "tokens_reasoning": tokens_reasoning,
        # None when no row was priced (a local model, an unknown price): unknown, not free
        "cost_usd": round(sum(costs), 6) if costs else None,
    }


# ---------------------------------------------------------------------------------------------- job.json


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """A text file that replaces ``path`` whole when the ``with`` block ends, or not at all.

    Written to a temporary file of its own in the same dir (two writers never share one), flushed and
    fsynced, then renamed over ``path`` (and the dir fsynced), so a crash or a full disk leaves the old
    file or the new one, never an empty or torn one. Every record modelfactory writes goes through it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    with suppress(OSError):  # the rename itself survives a power cut once the dir is synced
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """``text`` to ``path`` through :func:`atomic_open`."""
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Indented UTF-8 JSON with a final newline (``job.json``, ``result.json``), written atomically."""
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON object file of a run dir (``scores.json``), or ``{}`` when it is missing, unreadable or not
    an object: readers of a finished run treat a torn file as absent, never as an error."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_job(job_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The job record in ``job_dir``; None if there is none or it is unreadable (empty, torn, not a
    JSON object: a full disk, another tool): the job did not finish, whatever the file says."""
    path = Path(job_dir) / JOB_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data else None


def job_record_problem(job_dir: str | os.PathLike[str]) -> str:
    """Why ``job_dir`` has no readable job record, as the summary says it."""
    path = Path(job_dir) / JOB_FILE
    if not path.exists():
        return f"no {JOB_FILE}: the job did not finish"
    return (
        f"{JOB_FILE} is unreadable ({path.stat().st_size} bytes; a full disk or a crash while writing): "
        "the job did not finish; run it again into its dir to resume it"
    )


def write_job(job_dir: str | os.PathLike[str], job: Mapping[str, Any]) -> None:
    """Write the job record (replacing an earlier run's: a resumed job carries its totals over)."""
    write_json(Path(job_dir) / JOB_FILE, job)


class JobRecord:
    """What one job records: ``job.json`` (every job; a resumed job adds to its earlier runs) and, for a
    one-prompt task, ``result.json`` (the reply with its config), built up as the job goes and written
    through :func:`write_job` / :func:`write_json`."""

    def __init__(self, job_dir: str | os.PathLike[str], model_name: str | None, task: str | None) -> None:
        self.dir = Path(job_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.task = task
        previous = read_job(self.dir) or {}
        self.job: dict[str, Any] = {
            "model": model_name,
            "task": task,
            "results_file": None,  # readers (the sweep summary) find the rows by it
            "items": None,
            "error": None,
            "elapsed_s": previous.get("elapsed_s") or 0.0,
            "runs": int(previous.get("runs") or 0) + 1,
            "last_run": None,
        }
        self.result: dict[str, Any] = dict.fromkeys(
            ("model_name", "model_config", "messages", "stop_sequences", "generation", "content")
            + ("token_usage", "latency_s", "error")
        )
        self.result["model_name"] = model_name
        self.results_path: Path | None = None  # known once the config is read
        self.result_file: str | None = None

    def files(self, results_file: str, result_file: str) -> None:
        self.results_path = self.dir / results_file
        self.job["results_file"] = results_file
        self.result_file = result_file

    def ran(self, stats: Any, price: Mapping[str, Any] | None) -> None:
        """A :class:`~modelfactory.job.runner.RunStats`: this run's numbers, the job's totals."""
        self.job["elapsed_s"] = round(float(self.job["elapsed_s"]) + stats.elapsed_s, 4)
        self.job["last_run"] = stats.to_dict()
        self.job["price"] = price
        self.job["cost_usd"] = stats.job_cost_usd  # every item's newest row; None: unknown, never 0
        if stats.budget is not None:
            self.job["budget"] = stats.budget.to_dict()

    def failed(self, error: dict[str, str]) -> None:
        self.job["error"] = self.result["error"] = error

    def write(self, exit_code: int) -> None:
        """``job.json``, with the exit code (a multirun's jobs have no process exit status of their own)."""
        self.job["exit_code"] = exit_code
        write_job(self.dir, self.job)

    def write_result(self) -> None:
        assert self.result_file is not None
        write_json(self.dir / self.result_file, self.result)


def results_path(
    job_dir: str | os.PathLike[str], job: Mapping[str, Any] | None = None, configured: str | None = None
) -> Path:
    """Where a job's rows are: the file its record names, else ``configured`` (the job's
    ``output.results_file``, for a job that died before writing its record), else :data:`RESULTS_FILE`."""
    name = (job or {}).get("results_file") or configured or RESULTS_FILE
    return Path(job_dir) / str(name)


# ---------------------------------------------------------------------------------------- a sweep's jobs


def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job directory under the sweep dir: the ones holding ``.hydra/overrides.yaml``."""
    found = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    found.discard(sweep_dir)  # a single run's dir, if someone points us at one
    return list(found)


def _job_number(job_dir: Path, hydra_cfg: Any) -> int | None:
    try:
        return int(hydra_cfg["hydra"]["job"]["num"])
    except (TypeError, KeyError, ValueError):
        try:
            return int(job_dir.name)
        except ValueError:
            return None


def _configured_results_file(job_dir: Path) -> str | None:
    """``output.results_file`` as the job's saved config has it (a plain name; not an interpolation)."""
    saved = _load_yaml(job_dir / ".hydra" / "config.yaml")
    output = saved.get("output") if isinstance(saved, dict) else None
    name = output.get("results_file") if isinstance(output, dict) else None
    return name if isinstance(name, str) and name and "${" not in name else None


def _split_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def _short_error(error: dict[str, Any], limit: int = 240) -> str:
    lines = [ln.strip().lstrip("- ").strip() for ln in str(error.get("message", "")).splitlines()]
    text = f"{error.get('type')}: " + "; ".join(ln for ln in lines[:4] if ln)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def collect_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One record per job: number, dir, model, overrides (key -> value), metrics and job-level error."""
    root = Path(sweep_dir)
    jobs = []
    for job_dir in _job_dirs(root):
        overrides_raw = _load_yaml(job_dir / ".hydra" / "overrides.yaml") or []
        overrides = dict(_split_override(str(o)) for o in overrides_raw)
        hydra_cfg = _load_yaml(job_dir / ".hydra" / "hydra.yaml")
        job_record = read_job(job_dir)
        job_info: dict[str, Any] = job_record or {}
        model = job_info.get("model") or overrides.get("model")
        if model is None and isinstance(hydra_cfg, dict):
            model = (hydra_cfg.get("hydra", {}).get("runtime", {}).get("choices") or {}).get("model")
        rows_path = results_path(job_dir, job_info, _configured_results_file(job_dir))
        metrics = aggregate_rows(read_results(rows_path).values())
        elapsed = job_info.get("elapsed_s")
        done = metrics["ok"] + metrics["failed"]
        error = job_info.get("error")
        jobs.append(
            {
                "job": _job_number(job_dir, hydra_cfg),
                "dir": str(job_dir.relative_to(root)),
                "model": model,
                "overrides": {k: v for k, v in overrides.items() if k != "model"},
                **metrics,
                "elapsed_s": elapsed,
                "items_per_s": round(done / elapsed, 3) if elapsed else None,
                "out_tokens_per_s": round(metrics["tokens_out"] / elapsed, 1) if elapsed else None,
                "error": _short_error(error)
                if isinstance(error, dict)
                else (None if job_record is not None else job_record_problem(job_dir)),
            }
        )
    jobs.sort(key=lambda j: (j["job"] is None, j["job"] if j["job"] is not None else 0, j["dir"]))
    return jobs
