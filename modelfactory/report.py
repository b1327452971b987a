"""``report.html``: a sweep (or several, ``modelfactory compare``) as one self-contained page.

The summary table (sortable) and bar charts: latency p50/p95, throughput, tokens, cost and error rate
per job, then one panel per swept parameter (each metric against that parameter's values, one series
per model). Charts are inline SVG drawn here and the only script is a few lines of table sorting, so the
file opens offline, from an e-mail or an artifact store: no CDN, no fonts, no request at view time.

It reads what the jobs left on disk (:func:`modelfactory.job.record.collect_jobs`, as the sweep summary
does, plus :func:`modelfactory.jobmetrics.job_metrics` for the median, the error rate and the cost).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .job.record import collect_jobs, write_atomic
from .jobmetrics import job_metrics

__all__ = ["compare_cli", "compare_sweeps", "markdown_table", "report_jobs", "write_report"]

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
    """The sweep's job records (as in ``summary.*``) with p50 latency, error rate and cost added."""
    root = Path(sweep_dir)
    jobs = collect_jobs(root)
    for job in jobs:
        extra = job_metrics(root / job["dir"])
        job["p50_latency_s"] = extra["p50_latency_s"]
        job["error_rate"] = extra["error_rate"]
        job["error_pct"] = None if extra["error_rate"] is None else round(100 * float(extra["error_rate"]), 2)
        job["cost_usd"] = extra["cost_usd"]
        job["sweep"] = sweep_label
    return jobs


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
    header = (["sweep"] if several else []) + ["job", "model", *keys] + [h for _, h in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for job in jobs:
        row = ([str(job.get("sweep") or "")] if several else []) + [
            _fmt(job.get("job")),
            _fmt(job.get("model")),
        ]
        row += [str(job["overrides"].get(k, "")) for k in keys]
        row += [_fmt(job.get(k)) for k, _ in COLUMNS]
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
    heads = (["sweep"] if several else []) + ["job", "model", *keys] + [h for _, h in COLUMNS]
    out = ['<div class="wide"><table class="sortable"><thead><tr>']
    out += [f"<th>{_esc(h)}</th>" for h in heads]
    out.append("</tr></thead><tbody>")
    for job in jobs:
        cells = ([("s", job.get("sweep"))] if several else []) + [
            ("", job.get("job")),
            ("s", job.get("model")),
        ]
        cells += [("s", job["overrides"].get(k, "")) for k in keys]
        cells += [("e" if k == "error" else "", job.get(k)) for k, _ in COLUMNS]
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
