"""A scored sweep on disk, in the shape the runner leaves it (issue 25): every results row carries
``scores`` ({label: Score.to_dict()}), ``job.json`` carries ``scores`` ({label: Summary.to_dict()}) and
``primary``. The scores are computed by the project's own scorers and metrics (``eval.scoring.score_row``,
``eval.metrics.summarize``) on the replies given, so the numbers the outputs show are the real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelfactory.eval.metrics import summarize
from modelfactory.eval.scoring import build_scorers, score_row

ITEMS = {
    "fr": ("What is the capital of France?", "Paris"),
    "jp": ("What is the capital of Japan?", "Tokyo"),
    "it": ("What is the capital of <Italy> & co?", "Rome"),
}
SCORERS = ["includes", "exact"]


def write_items(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": i, "prompt": p, "target": t}) for i, (p, t) in ITEMS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def scored_job(
    sweep: Path,
    num: int,
    model: str,
    replies: dict[str, str | None],
    items_file: Path,
    *,
    cost: float | None = None,
    with_job_scores: bool = True,
) -> Path:
    """Job ``num`` of ``sweep``: ``model`` answered ``replies`` (None: the call failed) to :data:`ITEMS`."""
    from modelfactory.eval.tasks import item_view, task_items

    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- model={model}\n- task=dataset\n")
    task = {"type": "dataset", "path": str(items_file), "scorers": [{"name": n} for n in SCORERS]}
    (job / ".hydra" / "config.yaml").write_text(json.dumps({"task": task}))  # JSON is YAML
    scorers = build_scorers(task["scorers"])
    views = {item.id: item_view(item) for item in task_items(task)}
    rows = []
    for item_id, reply in replies.items():
        error = None if reply is not None else {"type": "APIError", "message": "<b>down</b>"}
        usage = None if error else {"input_tokens": 10, "output_tokens": 4, "total_tokens": 14}
        row: dict[str, Any] = {
            "id": item_id,
            "content": reply,
            "usage": usage,
            "latency_s": 0.2,
            "error": error,
        }
        if cost is not None and error is None:
            row["cost_usd"] = cost
        row.update(score_row(scorers, views[item_id], reply))
        rows.append(row)
    (job / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info: dict[str, Any] = {"model": model, "elapsed_s": 1.0, "runs": 1, "error": None}
    if with_job_scores:
        summaries = {
            s.label: summarize([r["scores"][s.label]["value"] for r in rows]).to_dict() for s in scorers
        }
        info["scores"] = summaries
        info["primary"] = {"scorer": scorers[0].label, "value": summaries[scorers[0].label]["mean"]}
    (job / "job.json").write_text(json.dumps(info))
    return job


def scored_sweep(root: Path) -> Path:
    """Model ``good`` answers all three right (priced); ``bad`` one right, one wrong, one failed call."""
    items = write_items(root / "items.jsonl")
    sweep = root / "sweep"
    scored_job(sweep, 0, "good", {"fr": "Paris", "jp": "It is Tokyo.", "it": "Rome"}, items, cost=0.002)
    scored_job(sweep, 1, "bad", {"fr": "Paris", "jp": "<script>alert(1)</script>", "it": None}, items)
    return sweep
