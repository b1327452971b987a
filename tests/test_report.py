"""report.html and ``modelfactory compare``: built from sweep dirs on disk, checked as text, and rendered
in real headless Chromium (Debian's ``chromium``; ``scripts/ci_system_deps.sh`` installs it) with the
network cut off: the charts must draw (pixels of the chart colour in a screenshot, the script ran) and
the console must stay silent. The same checks are first shown to fail on a broken and on a blank page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelfactory.cli import main as cli_main
from modelfactory.report import PALETTE, markdown_table, report_jobs, write_report

ROOT = Path(__file__).resolve().parents[1]


def row(item: str, latency: float, tokens: tuple[int, int] = (10, 5), **extra: Any) -> dict[str, Any]:
    usage = {"input_tokens": tokens[0], "output_tokens": tokens[1], "total_tokens": sum(tokens)}
    return {"id": item, "content": "x", "usage": usage, "latency_s": latency, "error": None, **extra}


def error_row(item: str) -> dict[str, Any]:
    return {
        "id": item,
        "content": None,
        "usage": None,
        "latency_s": 0.05,
        "error": {"type": "E", "message": "<b>"},
    }


def make_job(
    sweep: Path, num: int, overrides: list[str], rows: list[dict[str, Any]], job: dict[str, Any] | None
) -> None:
    d = sweep / str(num)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if job is not None:
        (d / "job.json").write_text(json.dumps(job))


def make_sweep(root: Path) -> Path:
    """2 models x 2 temperatures; model a is priced (cost_usd on rows), b is not; job 3 has a failed
    item, job 2 a job-level error with markup in its message."""
    root.mkdir(parents=True)
    latencies = {
        0: [0.1, 0.2, 0.3, 0.4],
        1: [0.2, 0.4, 0.6, 0.8],
        2: [1.0, 1.0, 2.0, 3.0],
        3: [0.5, 0.5, 0.5],
    }
    num = 0
    for model in ("a", "b"):
        for temp in ("0.0", "0.7"):
            rows = [
                row(f"q{i}", lat, **({"cost_usd": 0.001} if model == "a" else {}))
                for i, lat in enumerate(latencies[num])
            ]
            if num == 3:
                rows.append(error_row("q9"))
            error = {"type": "X", "message": "<script>alert(1)</script>"} if num == 2 else None
            make_job(
                root,
                num,
                [f"model={model}", f"generation.temperature={temp}", "task=dataset"],
                rows,
                {"model": model, "elapsed_s": 2.0, "runs": 1, "error": error},
            )
            num += 1
    return root


# ------------------------------------------------------------------------------------------ the page as text


def test_report_has_the_table_every_chart_and_nothing_external(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep")
    jobs = report_jobs(sweep)
    assert [j["p50_latency_s"] for j in jobs] == [0.2, 0.4, 1.0, 0.5]  # nearest rank, as the summary's p95
    assert [j["p95_latency_s"] for j in jobs] == [0.4, 0.8, 3.0, 0.5]
    assert [j["cost_usd"] for j in jobs] == [0.004, 0.004, None, None]  # unpriced: unknown, not 0
    assert jobs[3]["error_pct"] == 25.0 and jobs[3]["failed"] == 1

    page = write_report(sweep).read_text()
    assert (sweep / "report.html").is_file()
    # per job: latency, items/s, tokens/s, tokens, cost, error rate; per swept parameter (model,
    # generation.temperature; task=dataset is not swept): p95, items/s, tokens/s, error rate, cost
    assert page.count('<svg class="chart"') == 6 + 2 * 5
    assert (
        "<h3>model</h3>" in page and "<h3>generation.temperature</h3>" in page and "<h3>task</h3>" not in page
    )
    assert page.count("<tr>") == 1 + 4  # header + one row per job
    assert page.count("<script>") == 1 and "X: &lt;script&gt;alert(1)&lt;/script&gt;" in page  # escaped
    assert 'fill="' + PALETTE[0] + '"' in page and "n/a" in page  # bars drawn; missing cost marked
    # self-contained: nothing fetched at view time
    assert not re.search(r"""<link|<img|<iframe|\bsrc\s*=|\bhref\s*=|url\(|@import|https?://""", page)

    table = markdown_table(jobs)
    assert table.splitlines()[0].startswith("| job | model | generation.temperature | task | ok | failed |")
    assert "| 3 | b | 0.7 | dataset | 3 | 1 | 25 |" in table


def test_report_of_a_job_that_died_before_any_row(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["model=a"], [], None)
    page = write_report(sweep).read_text()
    assert "<h2>Samples</h2>" not in page and "Score vs cost" not in page  # no scorers: no score sections
    assert "did not finish" in page and page.count("no data") >= 4  # empty charts say so, no crash


def test_compare_two_sweeps_one_table_and_one_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = make_sweep(tmp_path / "mon" / "10-00-00")
    second = tmp_path / "tue" / "10-00-00"  # the same leaf name: labels must still tell them apart
    make_job(second, 0, ["model=a", "generation.temperature=0.0"], [row("q0", 0.05)], {"elapsed_s": 1.0})
    out = tmp_path / "cmp" / "report.html"
    assert cli_main(["compare", str(first), str(second), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("| sweep | job | model |")
    assert "| mon/10-00-00 | 0 | a |" in text and "| tue/10-00-00 | 0 | a |" in text
    assert f"report: {out}" in text
    page = out.read_text()
    assert "<h3>sweep</h3>" in page and page.count("<tr>") == 1 + 5
    assert "mon/10-00-00/0" in page  # job labels carry their sweep

    assert cli_main(["compare", str(first), str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["compare", str(empty)]) == 2
    assert "no jobs under" in capsys.readouterr().err


@pytest.mark.slow
def test_a_multirun_writes_report_html_next_to_the_summary(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "-m",
            f"hydra.sweep.dir={tmp_path}",
            "model=custom_callable",
            "generation.temperature=0,1",
            "task=dataset",
            "task.limit=2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "summary.csv, summary.md, report.html" in proc.stdout
    page = (tmp_path / "report.html").read_text()
    assert page.count("<tr>") == 3 and "<h3>generation.temperature</h3>" in page
    assert not (tmp_path / ".tracking").exists()  # tracking=none (the default) leaves nothing behind


def test_scored_report_shows_scores_cost_and_every_sample_escaped(tmp_path: Path) -> None:
    from tests.scored_sweep import scored_job, write_items

    items = write_items(tmp_path / "items.jsonl")
    sweep = tmp_path / "sweep"
    # job 0 (priced) never reached item "it"; job 1: one right, one wrong (markup), one failed call
    scored_job(sweep, 0, "good", {"fr": "Paris", "jp": "It is Tokyo."}, items, cost=0.002)
    scored_job(sweep, 1, "bad", {"fr": "Paris", "jp": "<script>alert(1)</script>", "it": None}, items)
    jobs = report_jobs(sweep)
    assert [j["score:includes"] for j in jobs] == [1.0, 0.5] and [j["unscored"] for j in jobs] == [0, 1]
    table = markdown_table(jobs)
    assert (
        "| cost $ | includes | includes 95% CI | includes n | exact | exact 95% CI | exact n | unscored | job error |"
        in table
    )
    assert "| 0.004 | 1 | 1–1 | 2 | 0.5 | 0–1 | 2 | 0 |  |" in table  # good: exact 1 of 2 now

    page = write_report(sweep).read_text()
    # per job 6 (one job priced: the cost chart too); per scorer, score vs cost (one point: only job 0 is
    # priced) and the score bars; per model (the swept parameter) 5
    assert page.count('<svg class="chart"') == 6 + 2 * 2 + 5 and page.count("<circle") == 2
    assert "includes vs cost per job (model + judge)" in page and "Score: exact (mean)" in page
    samples = page[page.index("<h2>Samples</h2>") : page.index("<h2>By swept parameter</h2>")]
    assert samples.count("<tr>") == 1 + 3  # header + one row per item
    assert "<th>0 good</th><th>1 bad</th>" in samples  # each model's reply side by side
    assert 'What is the capital of &lt;Italy&gt; &amp; co?</td><td class="x">Rome</td>' in samples
    assert '<td class="x na">not run</td>' in samples  # job 0 has no row for "it"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in samples and "<script>alert" not in page  # escaped
    assert "APIError: &lt;b&gt;down&lt;/b&gt;" in samples and samples.count("unscored</span>") == 2
    assert (
        '<span class="sc no" title="&#x27;it is tokyo.&#x27; is none of [&#x27;Tokyo&#x27;]">exact 0</span>'
        in samples
    )
    assert page.count("<script>") == 1
    assert not re.search(r"""<link|<img|<iframe|\bsrc\s*=|\bhref\s*=|url\(|@import|https?://""", page)


# ------------------------------------------------------------------------------------------ in Chromium


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "headless Chromium is not installed: run `bash scripts/ci_system_deps.sh` (apt-get install chromium)"
    )


def browse(page: Path, work: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run on ``page``: fresh profile, no network (every host name unresolvable)."""
    profile = work / f"profile-{len(list(work.glob('profile-*')))}"
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,1600",
            *mode,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def console_lines(stderr: str) -> list[str]:
    """What the page wrote to the console (messages, uncaught errors, failed loads)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def screenshot_stats(png: Path) -> tuple[float, int]:
    """(share of pixels that are not near-white, pixels of the first chart colour)."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    bar = tuple(int(PALETTE[0][i : i + 2], 16) for i in (1, 3, 5))
    pixels = list(image.getdata())
    inked = sum(1 for p in pixels if sum(p) < 3 * 235)
    coloured = sum(1 for p in pixels if all(abs(c - b) <= 6 for c, b in zip(p, bar, strict=True)))
    return inked / len(pixels), coloured


@pytest.mark.slow
def test_the_checks_catch_a_broken_and_a_blank_page(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>null.draw();</script><img src='https://example.invalid/x.png'>")
    proc = browse(broken, tmp_path, f"--screenshot={tmp_path / 'broken.png'}")
    lines = console_lines(proc.stderr)
    assert any("Uncaught TypeError" in line for line in lines), proc.stderr[-2000:]
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    browse(blank, tmp_path, f"--screenshot={tmp_path / 'blank.png'}")
    assert screenshot_stats(tmp_path / "blank.png") == (0.0, 0)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "sweep")
    page = write_report(sweep)
    charts = page.read_text().count('<svg class="chart"')

    # One Chromium run takes the screenshot and prints the live DOM (both flags together: one browser start,
    # ~1.4 s, instead of two)
    shot = tmp_path / "report.png"
    proc = browse(page, tmp_path, f"--screenshot={shot}", "--dump-dom")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    assert console_lines(proc.stderr) == []  # no script error, no failed load, no message at all
    inked, coloured = screenshot_stats(shot)
    assert inked > 0.03 and coloured > 2000, (inked, coloured)  # text, axes and bars drew
    assert f'data-report-ready="{charts}"' in proc.stdout  # the script ran to its end and saw every chart


@pytest.mark.slow
def test_scored_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from tests.scored_sweep import scored_sweep

    page = write_report(scored_sweep(tmp_path / "s"))
    text = page.read_text()
    assert "<h2>Samples</h2>" in text
    shot = tmp_path / "scored.png"
    proc = browse(page, tmp_path, f"--screenshot={shot}", "--dump-dom")  # one browser start for both
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    assert console_lines(proc.stderr) == []
    inked, coloured = screenshot_stats(shot)
    assert inked > 0.03 and coloured > 2000, (inked, coloured)
    assert f'data-report-ready="{text.count(chr(60) + "svg class=" + chr(34) + "chart")}"' in proc.stdout
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in proc.stdout  # the reply stayed text in the live DOM


def test_a_run_scored_afterwards_shows_its_scores_in_the_samples(tmp_path: Path) -> None:
    """``modelfactory score`` writes scores.json / scores.jsonl beside rows that carry none."""
    from modelfactory.eval.rescore import rescore_run
    from tests.scored_sweep import scored_job, write_items

    items = write_items(tmp_path / "items.jsonl")
    job = scored_job(tmp_path / "sweep", 0, "m", {"fr": "Paris", "jp": "Kyoto"}, items, with_job_scores=False)
    rows = [json.loads(line) for line in (job / "results.jsonl").read_text().splitlines()]
    (job / "results.jsonl").write_text("".join(json.dumps({**r, "scores": None}) + "\n" for r in rows))
    before = write_report(tmp_path / "sweep").read_text()
    assert "<h2>Samples</h2>" not in before and "sc ok" not in before
    rescore_run(job, workers=1)
    page = write_report(tmp_path / "sweep").read_text()
    assert [j["score:includes"] for j in report_jobs(tmp_path / "sweep")] == [0.5]
    samples = page[page.index("<h2>Samples</h2>") :]
    assert samples.count('<span class="sc ok"') == 2 and samples.count('<span class="sc no"') == 2


def test_the_report_pairs_scored_jobs_as_modelfactory_compare_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two jobs scored on the same items: the page shows, per scorer, the best job against the other with
    the numbers `modelfactory compare RUN_A RUN_B` prints (the same difference, CI, McNemar p, verdict)."""
    import html

    from tests.scored_sweep import scored_job, write_items

    items = write_items(tmp_path / "items.jsonl")
    sweep = tmp_path / "sweep"
    worse = scored_job(sweep, 0, "worse", {"fr": "Paris", "jp": "Kyoto", "it": "Milan"}, items)
    best = scored_job(sweep, 1, "best", {"fr": "Paris", "jp": "Tokyo", "it": "Rome"}, items)
    page = write_report(sweep).read_text()
    section = page[page.index("<h2>Paired comparison</h2>") : page.index("<h2>Samples</h2>")]
    assert section.count("<tr>") == 1 + 2  # includes and exact: best vs worse each
    assert cli_main(["compare", str(best), str(worse)]) == 0
    printed = capsys.readouterr().out
    verdicts = [line for line in printed.splitlines() if "difference" in line]
    assert len(verdicts) == 2
    for line in verdicts:  # the CLI's verdict (labels A and B): the same numbers, in the same words
        assert html.escape(line[line.index("(") :], quote=True) in section
    assert "+0.667" in section and "McNemar exact p=0.5" in section  # 2 of 3 won, none lost: p = 2 * 0.25
    assert "no significant difference between [1 best] and [0 worse]" in section

    lone = tmp_path / "lone"  # one scored job: nothing to pair, no section
    scored_job(lone, 0, "m", {"fr": "Paris"}, items)
    assert "Paired comparison" not in write_report(lone).read_text()
