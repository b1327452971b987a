"""``report.html``: a sweep (or several, ``modelfactory compare``) as one self-contained page.

The summary table (sortable, with a mean, 95% CI and n per scorer when the task has scorers) and bar
charts: latency p50/p95, throughput, tokens, cost and error rate per job, then one panel per swept parameter (each metric against that parameter's values, one series
per model). Charts are inline SVG drawn here and the only script is a few lines of table sorting, so the
file opens offline, from an e-mail or an artifact store: no CDN, no fonts, no request at view time.
A scored sweep adds "Score vs cost" (per scorer: the score against model + judge cost per job, one colour
per model, the 95% CI as a whisker; and the score per job), "Paired comparison" (when two or more jobs
scored the same items: per scorer the best job against the others, by the code of ``modelfactory
compare RUN_A RUN_B``) and "Samples" (prompt, target, and each job's reply with its scores side by
side, every text escaped). The shards of a sharded set are one job here, as in ``summary.*``.

It reads what the jobs left on disk (:func:`modelfactory.job.record.collect_jobs`, as the sweep summary
does, plus :func:`modelfactory.jobmetrics.job_metrics` for the median, the error rate and the cost, and
:func:`~modelfactory.jobmetrics.job_scores`; the samples' prompts and targets from the task each job saved).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .job.record import collect_jobs, write_atomic
from .jobmetrics import job_metrics, job_scores
from .secrets import mask_urls, redact_env

__all__ = ["comparisons", "compare_cli", "compare_sweeps", "markdown_table", "report_jobs", "write_report"]

REPORT_FILE = "report.html"
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"]
# (key, header) of the metric columns of the table, in order
COLUMNS = [
    ("ok", "ok"),
    ("failed", "failed"),
    ("error_pct", "error %"),
    ("p50_latency_s", "p50 s"),
    ("p95_latency_s", "p95 s"),
    ("mean_latency_s", "mean s"),
    ("tokens_in", "tokens in"),
    ("tokens_out", "tokens out"),
    ("elapsed_s", "wall s"),
    ("items_per_s", "items/s"),
    ("out_tokens_per_s", "out tok/s"),
    ("cost_usd", "cost $"),
    ("error", "job error"),
]


# ---------------------------------------------------------------------------------------------- data


def report_jobs(sweep_dir: str | Path, sweep_label: str | None = None) -> list[dict[str, Any]]:
    """The sweep's job records (as in ``summary.*``: the shards of a sharded set merged into one record,
    :mod:`modelfactory.merge`) with p50 latency, error rate, cost and scores added."""
    from .merge import merge_jobs

    root = Path(sweep_dir)
    jobs = collect_jobs(root)
    for job in jobs:
        extra = job_metrics(root / job["dir"])
        job["p50_latency_s"] = extra["p50_latency_s"]
        job["error_rate"] = extra["error_rate"]
        job["cost_usd"] = extra["cost_usd"]
        job["scores"], job["judge_cost_usd"] = job_scores(root / job["dir"])
    jobs = merge_jobs(jobs, root)  # a merged set: p50, cost and scores over all its shards' rows
    for job in jobs:
        if "dirs" in job:  # a merged set
            done = int(job["ok"]) + int(job["failed"])
            job["error_rate"] = round(int(job["failed"]) / done, 4) if done else None
        job["error_pct"] = None if job["error_rate"] is None else round(100 * float(job["error_rate"]), 2)
        job["sweep"] = sweep_label
        job["paths"] = [str(root / d) for d in job.get("dirs") or [job["dir"]]]  # a set: its shards' dirs
        job["path"] = job["paths"][0]
        for label, summary in job["scores"].items():
            job[f"score:{label}"] = summary.get("mean")
            low, high = summary.get("ci_low"), summary.get("ci_high")
            job[f"score:{label}:ci"] = None if low is None or high is None else f"{_fmt(low)}–{_fmt(high)}"
            job[f"score:{label}:n"] = summary.get("n")
        counts = [int(s["unscored"]) for s in job["scores"].values() if isinstance(s.get("unscored"), int)]
        job["unscored"] = max(counts) if counts else None
    return jobs


def _labels_scored(jobs: Sequence[dict[str, Any]]) -> list[str]:
    """The scorer labels of the jobs, in the order first seen (none: the sweep had no scorers)."""
    labels: list[str] = []
    for job in jobs:
        labels += [label for label in job.get("scores") or {} if label not in labels]
    return labels


def _columns(jobs: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The table's metric columns: :data:`COLUMNS`, with per scorer its mean, 95% CI and n, the items
    left unscored and the judge's cost before the job error (only when the jobs were scored)."""
    labels = _labels_scored(jobs)
    if not labels:
        return list(COLUMNS)
    scored = [
        (f"score:{lb}{k}", f"{lb}{h}")
        for lb in labels
        for k, h in (("", ""), (":ci", " 95% CI"), (":n", " n"))
    ]
    scored.append(("unscored", "unscored"))
    if any(j.get("judge_cost_usd") is not None for j in jobs):
        scored.append(("judge_cost_usd", "judge $"))
    return COLUMNS[:-1] + scored + COLUMNS[-1:]


def _swept(jobs: Sequence[dict[str, Any]]) -> list[str]:
    """Parameters whose value differs between jobs: ``sweep`` (compare), ``model``, then overrides."""
    keys: list[str] = []
    if len({j.get("sweep") for j in jobs}) > 1:
        keys.append("sweep")
    if len({str(j.get("model")) for j in jobs}) > 1:
        keys.append("model")
    for job in jobs:
        for key in job["overrides"]:
            if key not in keys and len({str(j["overrides"].get(key, "")) for j in jobs}) > 1:
                keys.append(key)
    return keys


def _value(job: dict[str, Any], key: str) -> str:
    if key == "sweep":
        return str(job.get("sweep") or "")
    if key == "model":
        return str(job.get("model") or "")
    return str(job["overrides"].get(key, ""))


def _job_label(job: dict[str, Any], swept: Sequence[str]) -> str:
    num = "?" if job.get("job") is None else str(job["job"])
    head = f"{job['sweep']}/{num}" if job.get("sweep") else num
    parts = [_value(job, k) for k in swept if k != "sweep"]
    return " ".join([head, *parts])


def _override_keys(jobs: Sequence[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for job in jobs:
        for key in job["overrides"]:
            if key not in keys:
                keys.append(key)
    return keys


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}".rstrip("0").rstrip(".")
        return f"{value:.3g}"
    return str(value)


def markdown_table(jobs: Sequence[dict[str, Any]]) -> str:
    """One row per job (with a ``sweep`` column when several sweeps are compared), as Markdown."""
    keys = _override_keys(jobs)
    several = len({j.get("sweep") for j in jobs}) > 1
    columns = _columns(jobs)
    header = (["sweep"] if several else []) + ["job", "model", *keys] + [h for _, h in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for job in jobs:
        row = ([str(job.get("sweep") or "")] if several else []) + [
            _fmt(job.get("job")),
            _fmt(job.get("model")),
        ]
        row += [str(job["overrides"].get(k, "")) for k in keys]
        row += [_fmt(job.get(k)) for k, _ in columns]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- charts


def _tick(value: float) -> str:
    """An axis label: short, never in exponent notation (``0.00005``, ``2.5``, ``1200``)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= 8 else f"{value:.4g}"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    scale = 10 ** math.floor(math.log10(value))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * scale >= value:
            return m * scale
    return 10 * scale


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def bar_chart(
    title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], unit: str = ""
) -> str:
    """Grouped bars as an inline ``<svg>``; a missing value (None) is marked ``n/a``, not drawn as 0."""
    width, height = 560, 300
    left, right, top, bottom = 64, 16, 40, 72
    pw, ph = width - left - right, height - top - bottom
    values = [float(v) for _, vals in series for v in vals if v is not None]
    out = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{_esc(title)}</title>',
        f'<text x="{left}" y="18" class="t">{_esc(title)}</text>',
    ]
    if not values or not labels:
        out.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="na">no data</text></svg>'
        )
        return "".join(out)
    vmax = _nice_max(max(values))
    for i in range(5):  # grid lines and y tick labels
        tick = vmax * i / 4
        y = top + ph - ph * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="k">{_esc(_tick(tick))}</text>'
        )
    if unit:
        out.append(
            f'<text x="14" y="{top + ph / 2:.1f}" transform="rotate(-90 14 {top + ph / 2:.1f})" '
            f'text-anchor="middle" class="k">{_esc(unit)}</text>'
        )
    group = pw / len(labels)
    bar = group * 0.8 / max(1, len(series))
    for i, label in enumerate(labels):
        x0 = left + i * group + group * 0.1
        for j, (name, vals) in enumerate(series):
            v = vals[i] if i < len(vals) else None
            x = x0 + j * bar
            if v is None:
                out.append(
                    f'<text x="{x + bar / 2:.1f}" y="{top + ph - 4}" text-anchor="middle" class="na">n/a</text>'
                )
                continue
            h = max(1.0, ph * float(v) / vmax)
            tip = f"{label} | {name}: {_fmt(float(v))} {unit}".strip()
            out.append(
                f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{max(1.0, bar - 1):.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[j % len(PALETTE)]}"><title>{_esc(tip)}</title></rect>'
            )
        cx, cy = left + i * group + group / 2, top + ph + 12
        short = label if len(label) <= 22 else label[:21] + "…"
        out.append(
            f'<text x="{cx:.1f}" y="{cy}" transform="rotate(-30 {cx:.1f} {cy})" text-anchor="end" class="k">'
            f"<title>{_esc(label)}</title>{_esc(short)}</text>"
        )
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" class="a"/>')
    if len(series) > 1:  # legend, right-aligned above the plot
        x = width - right
        for j, (name, _) in reversed(list(enumerate(series))):
            text = name if len(name) <= 18 else name[:17] + "…"
            x -= 14 + 7 * len(text)
            out.append(f'<rect x="{x}" y="26" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>')
            out.append(f'<text x="{x + 13}" y="35" class="k">{_esc(text)}</text>')
    out.append("</svg>")
    return "".join(out)


def _mean(values: Sequence[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float))]
    return sum(nums) / len(nums) if nums else None


def _job_charts(jobs: Sequence[dict[str, Any]], swept: Sequence[str]) -> list[str]:
    labels = [_job_label(j, swept) for j in jobs]

    def col(key: str) -> list[float | None]:
        return [j.get(key) for j in jobs]

    charts = [
        bar_chart(
            "Latency per job: p50 and p95",
            labels,
            [("p50", col("p50_latency_s")), ("p95", col("p95_latency_s"))],
            "s",
        ),
        bar_chart("Throughput: items per second", labels, [("items/s", col("items_per_s"))], "items/s"),
        bar_chart(
            "Throughput: output tokens per second", labels, [("out tok/s", col("out_tokens_per_s"))], "tok/s"
        ),
        bar_chart("Tokens per job", labels, [("in", col("tokens_in")), ("out", col("tokens_out"))], "tokens"),
        bar_chart("Error rate", labels, [("errors", col("error_pct"))], "%"),
    ]
    if any(j.get("cost_usd") is not None for j in jobs):
        charts.insert(4, bar_chart("Cost per job", labels, [("cost", col("cost_usd"))], "USD"))
    return charts


def _param_charts(jobs: Sequence[dict[str, Any]], key: str) -> list[str]:
    """Each metric against the values of one swept parameter; one series per model (when the parameter
    is not the model itself and several models ran), so the two effects are not averaged together."""
    values: list[str] = []
    for job in jobs:
        if _value(job, key) not in values:
            values.append(_value(job, key))
    with contextlib.suppress(ValueError):  # numbers in numeric order; any text: as they came
        values.sort(key=float)
    models = sorted({str(j.get("model")) for j in jobs})
    groups = models if key != "model" and len(models) > 1 else ["all jobs"]

    def series(metric: str, how: str = "mean") -> list[tuple[str, list[float | None]]]:
        out = []
        for group in groups:
            vals: list[float | None] = []
            for value in values:
                sel = [
                    j
                    for j in jobs
                    if _value(j, key) == value and (group == "all jobs" or str(j.get("model")) == group)
                ]
                if how == "rate":
                    done = sum(int(j.get("ok") or 0) + int(j.get("failed") or 0) for j in sel)
                    vals.append(
                        round(100 * sum(int(j.get("failed") or 0) for j in sel) / done, 2) if done else None
                    )
                else:
                    vals.append(_mean([j.get(metric) for j in sel]))
            out.append((group, vals))
        return out

    charts = [
        bar_chart(f"p95 latency by {key}", values, series("p95_latency_s"), "s"),
        bar_chart(f"items/s by {key}", values, series("items_per_s"), "items/s"),
        bar_chart(f"output tokens/s by {key}", values, series("out_tokens_per_s"), "tok/s"),
        bar_chart(f"error rate by {key}", values, series("", "rate"), "%"),
    ]
    if any(j.get("cost_usd") is not None for j in jobs):
        charts.append(bar_chart(f"cost by {key} (mean per job)", values, series("cost_usd"), "USD"))
    return charts


def scatter_chart(
    title: str, points: Sequence[tuple[str, str, float, float, float | None, float | None]], x_unit: str
) -> str:
    """Points ``(label, series, x, y, y_low, y_high)`` as an inline ``<svg>``: one colour per series (a
    legend below), the 95% CI as a vertical whisker, y from 0 to at least 1 (a score)."""
    width, height = 560, 320
    left, right, top, bottom = 64, 16, 40, 72
    pw, ph = width - left - right, height - top - bottom
    out = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{_esc(title)}</title>',
        f'<text x="{left}" y="18" class="t">{_esc(title)}</text>',
    ]
    if not points:
        out.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="na">no data</text></svg>'
        )
        return "".join(out)
    xmax = _nice_max(1.08 * max(p[2] for p in points))  # the costliest point inside the frame
    ymax = _nice_max(max([1.0] + [float(v) for p in points for v in (p[3], p[5]) if v is not None]))
    series = list(dict.fromkeys(p[1] for p in points))

    def xy(x: float, y: float) -> tuple[float, float]:
        return left + pw * x / xmax, top + ph - ph * y / ymax

    for i in range(5):  # grid, y ticks (score) and x ticks (cost)
        gy, gx = top + ph - ph * i / 4, left + pw * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{gy:.1f}" y2="{gy:.1f}" class="g"/>')
        out.append(
            f'<text x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end" class="k">{_tick(ymax * i / 4)}</text>'
        )
        out.append(
            f'<text x="{gx:.1f}" y="{top + ph + 14}" text-anchor="middle" class="k">{_tick(xmax * i / 4)}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{top + ph + 30}" text-anchor="middle" class="k">{_esc(x_unit)}</text>'
    )
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" class="a"/>')
    for label, name, x, y, low, high in points:
        colour = PALETTE[series.index(name) % len(PALETTE)]
        px, py = xy(x, y)
        if low is not None and high is not None:
            _, y0 = xy(x, low)
            _, y1 = xy(x, high)
            out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y0:.1f}" y2="{y1:.1f}" stroke="{colour}"/>')
        tip = f"{label}: {_fmt(y)} at {_fmt(x)} {x_unit}"
        out.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="5" fill="{colour}"><title>{_esc(tip)}</title></circle>'
        )
    x = left
    for j, name in enumerate(series):  # legend, under the axis
        text = name if len(name) <= 18 else name[:17] + "…"
        out.append(
            f'<rect x="{x}" y="{height - 18}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
        )
        out.append(f'<text x="{x + 13}" y="{height - 9}" class="k">{_esc(text)}</text>')
        x += 24 + 7 * len(text)
    out.append("</svg>")
    return "".join(out)


def _total_cost(job: dict[str, Any]) -> float | None:
    """What the job cost with its judge: None when the model's cost is unknown (never a made-up 0)."""
    cost = job.get("cost_usd")
    if not isinstance(cost, (int, float)):
        return None
    judge = job.get("judge_cost_usd")
    return float(cost) + (float(judge) if isinstance(judge, (int, float)) else 0.0)


def _score_charts(jobs: Sequence[dict[str, Any]], swept: Sequence[str]) -> list[str]:
    """Per scorer: the score against the cost (model + judge) per job, one colour per model, when any job
    was priced; and the score per job as bars."""
    labels = [_job_label(j, swept) for j in jobs]
    charts = []
    for scorer in _labels_scored(jobs):
        points = []
        for job, label in zip(jobs, labels, strict=True):
            summary = (job.get("scores") or {}).get(scorer) or {}
            cost, mean = _total_cost(job), summary.get("mean")
            if cost is not None and isinstance(mean, (int, float)):
                points.append(
                    (
                        label,
                        str(job.get("model")),
                        cost,
                        float(mean),
                        summary.get("ci_low"),
                        summary.get("ci_high"),
                    )
                )
        if points:
            charts.append(scatter_chart(f"{scorer} vs cost per job (model + judge)", points, "USD"))
        means = [((j.get("scores") or {}).get(scorer) or {}).get("mean") for j in jobs]
        charts.append(bar_chart(f"Score: {scorer} (mean)", labels, [(scorer, means)], "score"))
    return charts


COMPARE_LIMIT = 8  # per scorer, the best job against at most this many others (the next best first)


def _item_scores(job: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per scorer label, item id -> score (None: unscored) of the job (a merged set: of every shard), read
    as ``modelfactory compare RUN_A RUN_B`` reads a run (:func:`~modelfactory.eval.rescore.read_scores`)."""
    from .eval.rescore import read_scores

    out: dict[str, dict[str, float | None]] = {}
    for path in _paths(job):
        for label, values in read_scores(path).items():
            out.setdefault(label, {}).update(values)
    return out


def comparisons(jobs: Sequence[dict[str, Any]], swept: Sequence[str]) -> list[tuple[str, Any]]:
    """Per scorer, the job with the best mean against each other job that scored some of the same items
    (at most :data:`COMPARE_LIMIT`, the next best first): ``(scorer, Comparison)`` pairs computed by
    :func:`~modelfactory.eval.compare.compare_scores`, the code of ``modelfactory compare RUN_A RUN_B``
    (paired bootstrap CI of the difference, McNemar's test for 0/1 scores, the verdict in words)."""
    from .eval.compare import compare_scores

    per_job = [_item_scores(j) for j in jobs]
    labels = [f"[{_job_label(j, swept)}]" for j in jobs]
    out = []
    for scorer in _labels_scored(jobs):
        means: dict[int, float] = {}
        for i, job in enumerate(jobs):
            mean = ((job.get("scores") or {}).get(scorer) or {}).get("mean")
            if isinstance(mean, (int, float)):
                means[i] = float(mean)
        ranked = sorted(means, key=lambda i: -means[i])  # stable: of equal means, the first job leads
        if len(ranked) < 2:
            continue
        best, done = ranked[0], 0
        for other in ranked[1:]:
            if done == COMPARE_LIMIT:
                break
            result = compare_scores(
                per_job[best].get(scorer, {}),
                per_job[other].get(scorer, {}),
                label_a=labels[best],
                label_b=labels[other],
            )
            if result.n:  # no item scored by both: nothing to pair
                out.append((scorer, result))
                done += 1
    return out


def _comparison_table(found: Sequence[tuple[str, Any]]) -> str:
    heads = ["scorer", "best job (A)", "vs job (B)", "n", "A", "B", "A − B", "95% CI", "McNemar p", "verdict"]
    out = ['<div class="wide"><table class="compare"><thead><tr>']
    out += [f"<th>{_esc(h)}</th>" for h in heads] + ["</tr></thead><tbody>"]
    for scorer, c in found:
        cells = [
            ("s", scorer),
            ("s", c.label_a),
            ("s", c.label_b),
            ("", c.n),
            ("", _fmt(c.mean_a)),
            ("", _fmt(c.mean_b)),
            ("", f"{c.diff:+.3f}"),
            ("", f"{c.ci_low:+.3f} to {c.ci_high:+.3f}"),
            ("", "" if c.p_value is None else f"{c.p_value:.3g}"),
            ("v", c.verdict),
        ]
        out.append("<tr>" + "".join(f'<td class="{k}">{_esc(v)}</td>' for k, v in cells) + "</tr>")
    out.append("</tbody></table></div>")
    out.append(
        '<p class="meta">per scorer, the job with the best mean against the others, on the items both '
        "scored: paired bootstrap 95% CI of the difference, McNemar's test for 0/1 scores; the numbers "
        "<code>modelfactory compare RUN_A RUN_B</code> prints</p>"
    )
    return "".join(out)


SAMPLE_LIMIT = 200  # items shown in the per-sample view (a HumanEval sweep has 164)


def _task_items(job_dir: Path) -> dict[str, dict[str, Any]]:
    """The job's items as its scorers saw them (prompt, target), from the task saved in ``.hydra``;
    empty when there is none (a job run without Hydra) or it cannot be read."""
    from .errors import ModelFactoryError
    from .eval.rescore import saved_task
    from .eval.tasks import item_view, task_items

    try:
        return {item.id: item_view(item) for item in task_items(saved_task(job_dir))}
    except (ModelFactoryError, OSError, ValueError):
        return {}


def _prompt(view: dict[str, Any], row: dict[str, Any]) -> str:
    messages = view.get("messages") or row.get("messages") or []
    texts = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last = texts[-1] if texts else row.get("prompt", "")
    text = last if isinstance(last, str) else json.dumps(last, ensure_ascii=False)
    return mask_urls(redact_env(text))  # the rows are redacted when written; a dataset's text is not


def _sample_cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return '<td class="x na">not run</td>'
    if row.get("error"):
        error = row["error"]
        reply = f'<div class="err">{_esc(error.get("type", "") if isinstance(error, dict) else "")}: '
        reply += f"{_esc(_clip(error.get('message', '') if isinstance(error, dict) else error))}</div>"
    else:
        reply = f'<div class="r">{_esc(_clip(row.get("content") or ""))}</div>'
    marks = []
    for label, score in (row.get("scores") or {}).items():
        if not isinstance(score, dict):
            continue
        value = score.get("value")
        kind = (
            "na" if value is None else ("ok" if float(value) >= 1 else "no" if float(value) <= 0 else "part")
        )
        why = score.get("error") or score.get("explanation") or ""
        marks.append(
            f'<span class="sc {kind}" title="{_esc(why)}">{_esc(label)} {_esc(_fmt(value) if value is not None else "unscored")}</span>'
        )
    return f'<td class="x">{reply}{"".join(marks)}</td>'


def _clip(text: Any, limit: int = 600) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scored_rows(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The job's newest row per item (a merged set: every shard's), with its ``scores``: the runner's,
    with those ``modelfactory score`` wrote to ``scores.jsonl`` afterwards over them."""
    from .eval.rescore import with_rescores

    rows: dict[str, dict[str, Any]] = {}
    for path in _paths(job):
        rows.update(with_rescores(path))
    return rows


def _paths(job: dict[str, Any]) -> list[Path]:
    return [Path(p) for p in job.get("paths") or [job["path"]]]


def _samples(jobs: Sequence[dict[str, Any]], swept: Sequence[str]) -> str:
    """Prompt, target and each job's reply with its scores, side by side, one row per item (the first
    :data:`SAMPLE_LIMIT`); every text escaped."""
    rows_of = [_scored_rows(j) for j in jobs]
    views: dict[str, dict[str, Any]] = {}
    for job in jobs:
        views.update({k: v for k, v in _task_items(_paths(job)[0]).items() if k not in views})
    ids = list(dict.fromkeys(i for rows in rows_of for i in rows))
    heads = ["item", "prompt", "target", *(_job_label(j, swept) for j in jobs)]
    out = ['<div class="wide"><table class="samples"><thead><tr>']
    out += [f"<th>{_esc(h)}</th>" for h in heads] + ["</tr></thead><tbody>"]
    for item_id in ids[:SAMPLE_LIMIT]:
        first = next(rows[item_id] for rows in rows_of if item_id in rows)
        view = views.get(item_id, {})
        target = view.get("target", first.get("target"))
        target_text = (
            " | ".join(map(str, target))
            if isinstance(target, list)
            else ("" if target is None else str(target))
        )
        out.append(
            f'<tr><td class="s">{_esc(item_id)}</td><td class="x">{_esc(_clip(_prompt(view, first)))}</td>'
        )
        out.append(
            f'<td class="x">{_esc(target_text)}</td>'
            + "".join(_sample_cell(rows.get(item_id)) for rows in rows_of)
            + "</tr>"
        )
    out.append("</tbody></table></div>")
    if len(ids) > SAMPLE_LIMIT:
        out.append(
            f'<p class="meta">the first {SAMPLE_LIMIT} of {len(ids)} items; every row is in each job\'s results file</p>'
        )
    return "".join(out)


# ---------------------------------------------------------------------------------------------- page

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:#666;font-size:12px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f4f6;cursor:pointer;user-select:none}td.s{text-align:left}td.e{text-align:left;white-space:normal;
max-width:360px;color:#b00020}
.wide{overflow-x:auto}.grid{display:flex;flex-wrap:wrap;gap:12px}
.chart{border:1px solid #e5e7eb;border-radius:6px;background:#fff}
.chart .t{font-size:13px;font-weight:600;fill:#222}.chart .k{font-size:10px;fill:#555}
.chart .na{font-size:10px;fill:#999}.chart .g{stroke:#eee}.chart .a{stroke:#999}
table.samples th{text-align:left}table.samples td.x{text-align:left;white-space:normal;vertical-align:top;max-width:320px}
.samples .r,.samples .err{white-space:pre-wrap;font-family:ui-monospace,monospace;margin-bottom:4px}
table.compare td.v{text-align:left;white-space:normal;min-width:320px;max-width:560px}
.samples .err{color:#b00020}.sc{display:inline-block;border-radius:3px;padding:0 4px;margin:1px 3px 0 0}
.sc.ok{background:#d9f2d9}.sc.no{background:#f8d7da}.sc.part{background:#fff3cd}.sc.na{background:#eee;color:#666}
"""

_JS = """
(function(){
  document.querySelectorAll("table.sortable").forEach(function(table){
    var heads = table.querySelectorAll("th");
    heads.forEach(function(th, col){
      th.addEventListener("click", function(){
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var dir = th.getAttribute("data-dir") === "asc" ? -1 : 1;
        heads.forEach(function(h){ h.removeAttribute("data-dir"); });
        th.setAttribute("data-dir", dir === 1 ? "asc" : "desc");
        rows.sort(function(a, b){
          var x = a.cells[col].textContent, y = b.cells[col].textContent;
          var nx = parseFloat(x), ny = parseFloat(y);
          if (!isNaN(nx) && !isNaN(ny)) return dir * (nx - ny);
          return dir * x.localeCompare(y);
        });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
  document.documentElement.setAttribute("data-report-ready", String(document.querySelectorAll("svg.chart").length));
})();
"""


def _html_table(jobs: Sequence[dict[str, Any]]) -> str:
    keys = _override_keys(jobs)
    several = len({j.get("sweep") for j in jobs}) > 1
    columns = _columns(jobs)
    heads = (["sweep"] if several else []) + ["job", "model", *keys] + [h for _, h in columns]
    out = ['<div class="wide"><table class="sortable"><thead><tr>']
    out += [f"<th>{_esc(h)}</th>" for h in heads]
    out.append("</tr></thead><tbody>")
    for job in jobs:
        cells = ([("s", job.get("sweep"))] if several else []) + [
            ("", job.get("job")),
            ("s", job.get("model")),
        ]
        cells += [("s", job["overrides"].get(k, "")) for k in keys]
        cells += [("e" if k == "error" else "", job.get(k)) for k, _ in columns]
        out.append("<tr>" + "".join(f'<td class="{c}">{_esc(_fmt(v))}</td>' for c, v in cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def render(jobs: Sequence[dict[str, Any]], title: str, sources: Sequence[str]) -> str:
    """The whole page as a string."""
    swept = _swept(jobs)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        '<p class="meta">'
        + "<br>".join(_esc(s) for s in sources)
        + f"<br>{len(jobs)} job(s); written {_esc(_dt.datetime.now().isoformat(timespec='seconds'))}</p>",
        "<h2>Summary</h2>",
        _html_table(jobs),
        "<h2>Per job</h2>",
        '<div class="grid">' + "".join(_job_charts(jobs, swept)) + "</div>",
    ]
    if _labels_scored(jobs):
        parts.append("<h2>Score vs cost</h2>")
        parts.append('<div class="grid">' + "".join(_score_charts(jobs, swept)) + "</div>")
        found = comparisons(jobs, swept)
        if found:  # two or more jobs scored on the same items
            parts.append("<h2>Paired comparison</h2>")
            parts.append(_comparison_table(found))
        parts.append("<h2>Samples</h2>")
        parts.append(_samples(jobs, swept))
    params = [k for k in swept if len({_value(j, k) for j in jobs}) > 1]
    if params:
        parts.append("<h2>By swept parameter</h2>")
        for key in params:
            parts.append(f"<h3>{_esc(key)}</h3>")
            parts.append('<div class="grid">' + "".join(_param_charts(jobs, key)) + "</div>")
    parts.append(f"<script>{_JS}</script></body></html>\n")
    return "".join(parts)


def write_report(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """``report.html`` for one sweep, by default in the sweep dir next to ``summary.*``."""
    root = Path(sweep_dir)
    path = Path(out) if out is not None else root / REPORT_FILE
    jobs = report_jobs(root)
    write_atomic(path, render(jobs, f"Sweep report: {root.name}", [str(root.resolve())]))
    return path


def _labels(dirs: Sequence[Path]) -> list[str]:
    """Shortest distinct trailing paths: ``2026-12-01/06-02-28`` vs ``2026-12-02/06-02-28``."""
    parts = [d.resolve().parts for d in dirs]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(d) for d in dirs]


def compare_sweeps(sweep_dirs: Sequence[str | Path], out: str | Path) -> tuple[str, Path]:
    """One table and one ``report.html`` (at ``out``) across several sweeps; returns (markdown, path)."""
    from .errors import ConfigError, Problem

    dirs = [Path(d) for d in sweep_dirs]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        raise ConfigError(
            [
                Problem("sweep dir", f"not a directory: {d}", "give the sweep dirs (multirun/<date>/<time>)")
                for d in missing
            ]
        )
    jobs: list[dict[str, Any]] = []
    for directory, label in zip(dirs, _labels(dirs), strict=True):
        found = report_jobs(directory, label)
        if not found:
            raise ConfigError(
                [
                    Problem(
                        "sweep dir",
                        f"no jobs under {directory} (no */.hydra/overrides.yaml)",
                        "give a multirun's sweep dir, e.g. multirun/2026-12-01/06-02-28",
                    )
                ]
            )
        jobs += found
    path = Path(out)
    write_atomic(
        path, render(jobs, f"Sweep comparison: {len(dirs)} sweeps", [str(d.resolve()) for d in dirs])
    )
    return markdown_table(jobs), path


def compare_cli(sweep_dirs: Sequence[Path], out: Path) -> int:
    """``modelfactory compare``: print the table, write the page; exit 2 on a bad sweep dir."""
    import sys

    from .errors import ConfigError

    try:
        table, path = compare_sweeps(sweep_dirs, out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table + f"\nreport: {path}")
    return 0
