"""No secret on disk or in logs: a distinct key through every channel, then every output file is scanned.

Channels: an environment variable, a ``.env`` file in the working directory, a config value
(``${oc.env:...}`` in a model config file, and a key written literally in one), a command-line
interpolation (``model.api_key='${oc.env:VAR}'``), and a key typed on the command line (refused before
Hydra writes anything). The local server echoes each key back, in a reply and in an error message.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers.recording import RecordingServer

ROOT = Path(__file__).resolve().parents[1]

SECRETS = {
    "env": "sk-planted-env-var-1111aaaa",
    "dotenv": "sk-planted-dotenv-2222bbbb",
    "config": "sk-planted-config-3333cccc",
    "literal": "sk-planted-literal-4444dddd",
    "cli_env": "sk-planted-cli-interp-5555eeee",
    "cli": "sk-planted-cli-6666ffff",
}


def app(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_nowhere(secrets: list[str], root: Path, *texts: str) -> int:
    """No secret in any file under ``root`` (bytes, so pickles and logs count) nor in ``texts``."""
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret} found in {path}"
    for text in texts:
        for secret in secrets:
            assert secret not in text
    return len(files)


def completion(content: str) -> dict[str, object]:
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


def openai_model_file(path: Path, url: str, api_key: str) -> None:
    path.write_text(
        f"_target_: modelfactory.OpenAIServerModel\nmodel_id: m\napi_base: {url}/v1\napi_key: {api_key}\n",
        encoding="utf-8",
    )


@pytest.mark.server
def test_no_secret_from_any_channel_reaches_a_file_or_the_console(tmp_path: Path) -> None:
    work, conf, sweep_dir = tmp_path / "work", tmp_path / "conf" / "model", tmp_path / "sweep"
    work.mkdir()
    conf.mkdir(parents=True)
    (work / ".env").write_text(f"DOTENV_SERVER_KEY={SECRETS['dotenv']}\n", encoding="utf-8")
    (work / "items.jsonl").write_text(
        '{"id": "echo", "prompt": "say my key"}\n{"id": "deny", "prompt": "fail with my key"}\n',
        encoding="utf-8",
    )
    with RecordingServer() as server:
        openai_model_file(conf / "via_dotenv.yaml", server.url, "${oc.env:DOTENV_SERVER_KEY}")
        openai_model_file(conf / "via_config.yaml", server.url, "${oc.env:CONFIG_SERVER_KEY}")
        openai_model_file(conf / "via_literal.yaml", server.url, SECRETS["literal"])
        jobs = ["env", "dotenv", "config", "literal"]  # the order the basic launcher runs them in
        for job in jobs:
            server.enqueue(200, completion(f"your key is {SECRETS[job]}"))
            server.enqueue(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {SECRETS[job]}",
                        "type": "invalid_request_error",
                    }
                },
            )
        env = {
            "AZURE_OPENAI_API_KEY": SECRETS["env"],
            "AZURE_OPENAI_ENDPOINT": server.url,
            "AZURE_OPENAI_MODEL": "dep",
            "OPENAI_API_VERSION": "2024-10-21",
            "CONFIG_SERVER_KEY": SECRETS["config"],
        }
        proc = app(
            work,
            "-m",
            f"--config-dir={tmp_path / 'conf'}",
            f"hydra.sweep.dir={sweep_dir}",
            "model=azure_openai,via_dotenv,via_config,via_literal",
            "task=dataset",
            f"task.path={work / 'items.jsonl'}",
            "runner.concurrency=1",
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        sent = [r.headers.get("api-key") or r.headers.get("authorization", "") for r in server.requests]
    # every key really reached the server, through its own channel
    for i, job in enumerate(jobs):
        assert SECRETS[job] in sent[2 * i] and SECRETS[job] in sent[2 * i + 1]
    planted = [SECRETS[j] for j in jobs]
    count = assert_nowhere(planted, sweep_dir, proc.stdout, proc.stderr)
    assert count >= 4 * 6 + 3  # per job: 3 .hydra files, log, results.jsonl, job.json; multirun/summary
    for i, _job in enumerate(jobs):
        rows = {
            r["id"]: r
            for r in map(json.loads, (sweep_dir / str(i) / "results.jsonl").read_text().splitlines())
        }
        assert rows["echo"]["content"] == "your key is ***"
        assert rows["deny"]["error"]["status"] == 401 and "***" in rows["deny"]["error"]["message"]
    assert "**********" in (sweep_dir / "3" / ".hydra" / "config.yaml").read_text()  # the literal, masked
    assert "literally in a config file" in proc.stderr
    summary = (sweep_dir / "summary.csv").read_text()
    assert summary.count(",1,1,") == 4  # each job: 1 ok, 1 failed


@pytest.mark.server
def test_cli_interpolation_names_a_variable_and_is_allowed(tmp_path: Path) -> None:
    with RecordingServer(reply="hello") as server:
        proc = app(
            ROOT,
            f"hydra.run.dir={tmp_path / 'run'}",
            "model=local_server",
            f"model.api_base={server.url}/v1",
            "++model.api_key=${oc.env:MY_SERVER_KEY}",  # ++: local_server.yaml has no api_key key
            env={"MY_SERVER_KEY": SECRETS["cli_env"]},
        )
        assert proc.returncode == 0, proc.stderr
        assert server.last.headers["authorization"] == f"Bearer {SECRETS['cli_env']}"
    assert proc.stdout.strip() == "hello"
    assert_nowhere([SECRETS["cli_env"]], tmp_path, proc.stdout, proc.stderr)
    assert "${oc.env:MY_SERVER_KEY}" in (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["model=openai_gpt4o", f"model.api_key={SECRETS['cli']}"], "export OPENAI_API_KEY="),
        (["-m", "model=azure_openai", f"+model.api_key={SECRETS['cli']}"], "export AZURE_OPENAI_API_KEY="),
        (["model=hf_api", f"+model.token={SECRETS['cli']}"], "export HF_TOKEN="),
        (["model=litellm_claude", f"model.api_key={SECRETS['cli']}"], "export ANTHROPIC_API_KEY="),
        (["model=local_server", f"model.api_key={SECRETS['cli']}"], "model.api_key='${oc.env:MY_KEY}'"),
        ([f"hydra.job.env_set.OPENAI_API_KEY={SECRETS['cli']}"], "export OPENAI_API_KEY="),
        (["model=local_server", f"model.api_base=http://me:{SECRETS['cli']}@127.0.0.1:9/v1"], "credentials"),
    ],
)
def test_a_key_on_the_command_line_is_refused_before_anything_is_written(
    tmp_path: Path, args: list[str], hint: str
) -> None:
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    dirs = [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = app(ROOT, *flags, *dirs, *rest)
    assert proc.returncode == 2
    assert "refusing a secret on the command line" in proc.stderr and hint in proc.stderr
    assert SECRETS["cli"] not in proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()
    assert not list(ROOT.glob("outputs/**/*" + SECRETS["cli"]))


K = SECRETS["cli"]
# Every way found to slip a key past a refusal that only looked at key names (issue 16, item 2).
HIDDEN_PROBES = [
    f"+model.generation_kwargs={{api_key:{K}}}",
    f'+model.client_kwargs.default_headers={{Authorization:"Bearer {K}"}}',
    f"+model.client_kwargs.default_headers.X-Auth={K}",
    f"++hydra.job.env_set={{OPENAI_API_KEY:{K}}}",
    f"+hydra.job.env_set.SRV_AUTH={K}",
    f"++model.api_key=${{oc.env:UNSET_VAR_16,{K}}}",
    f"model.api_base=http://{K}@127.0.0.1:9/v1",
    f"model.api_base=http://:{K}@127.0.0.1:9/v1",
    f"model.api_base=http://127.0.0.1:9/v1?api_key={K}",
    # issue 22, item 3: a header nested in a dict, a per-call header, a decoded literal, an env_set
    # variable under any name, credential query parameters with short names
    f"+model.client_kwargs={{default_headers:{{X-Custom: {K}}}}}",
    f"+model.generation_kwargs={{extra_headers: {{X-Custom: {K}}}}}",
    f"++model.api_key=${{oc.decode:{K}}}",
    f"+hydra.job.env_set.GEN_CRED={K}",
    f"model.api_base=http://127.0.0.1:9/v1?pwd={K}",
    f"model.api_base=http://127.0.0.1:9/v1?code={K}",
]


@pytest.mark.parametrize("probe", HIDDEN_PROBES)
def test_a_key_hidden_in_a_dict_header_default_or_url_is_refused(tmp_path: Path, probe: str) -> None:
    dirs = [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = app(ROOT, *dirs, "model=local_server", probe)
    assert proc.returncode == 2, proc.stderr
    key = probe.split("=", 1)[0].lstrip("+~")
    assert "refusing a secret on the command line" in proc.stderr
    assert f"{key}=<hidden>" in proc.stderr and "fix" in proc.stderr
    assert K not in proc.stdout + proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


# --------------------------------------------------------------------------- issue 16, items 3 and 4

# Keys held by a model under names no env-var rule would call secret (GEN_CRED, ...), or written in a
# config file's URL: each must still be kept out of every file, log and console line.
HELD = {
    "url": "urlinfo-planted-7001aaaa",  # user:K@ in a config file's api_base, literally
    "header": "header-planted-7002bbbb",  # ${oc.env:GEN_CRED} in a non-public header
    "genkw": "genkw-planted-7003cccc",  # ${oc.env:GEN_KW} in generation_kwargs
    "call": "callkw-planted-7004dddd",  # ${oc.env:CALL_CRED} in a per-call generation kwarg
}


def leaks(secrets: list[str], root: Path, *texts: str) -> tuple[list[str], int]:
    """Every (secret, place) where a secret shows up: files under ``root`` (as bytes) and ``texts``;
    and how many places were looked at."""
    found = []
    files = [p for p in root.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        found += [f"{s} in {path.relative_to(root)}" for s in secrets if s.encode() in data]
    for i, text in enumerate(texts):
        found += [f"{s} in text {i}" for s in secrets if s in text]
    return found, len(files) + len(texts)


@pytest.mark.server
def test_credentials_held_under_any_name_or_in_a_url_never_leak(tmp_path: Path) -> None:
    conf, sweep_dir = tmp_path / "conf" / "model", tmp_path / "sweep"
    conf.mkdir(parents=True)
    keys = list(HELD.values())
    echo = " ".join(keys)
    with RecordingServer() as server:
        host = server.url.removeprefix("http://")
        (conf / "held.yaml").write_text(
            "_target_: modelfactory.OpenAIServerModel\n"
            "model_id: m\n"
            f"api_base: http://user:{HELD['url']}@{host}/v1\n"
            "client_kwargs:\n"
            "  default_headers:\n"
            "    X-Upstream-Cred: ${oc.env:GEN_CRED}\n"
            "generation_kwargs:\n"
            "  api_key: ${oc.env:GEN_KW}\n"
            "retry:\n"
            "  max_attempts: 1\n",
            encoding="utf-8",
        )
        server.enqueue(200, completion(f"you sent {echo}"))
        server.enqueue(
            400, {"error": {"message": f"bad credentials {echo}", "type": "invalid_request_error"}}
        )
        proc = app(
            ROOT,
            "-m",
            f"--config-dir={tmp_path / 'conf'}",
            f"hydra.sweep.dir={sweep_dir}",
            "model=held",
            "prompt=echo,deny",
            "+generation.service_token=${oc.env:CALL_CRED}",
            env={"GEN_CRED": HELD["header"], "GEN_KW": HELD["genkw"], "CALL_CRED": HELD["call"]},
        )
        assert proc.returncode == 0, proc.stderr
        sent = server.requests
    # each key really went out, through its own door
    assert len(sent) == 2
    assert sent[0].headers["x-upstream-cred"] == HELD["header"]
    assert sent[0].body["api_key"] == HELD["genkw"] and sent[0].body["service_token"] == HELD["call"]
    assert base64.b64decode(sent[0].headers["authorization"].split()[1]).decode() == f"user:{HELD['url']}"
    found, looked = leaks(keys, sweep_dir, proc.stdout, proc.stderr)
    assert found == [], found
    assert looked >= 2 * 8 + 2  # per job: 3 .hydra files, run.log, results.jsonl, result.json, job.json
    first = json.loads((sweep_dir / "0" / "result.json").read_text())
    assert first["content"] == "you sent *** *** *** ***"
    assert first["model_config"]["api_base"].startswith("http://user:**********@")
    assert first["generation"]["service_token"] == "**********"
    second = json.loads((sweep_dir / "1" / "result.json").read_text())
    assert second["error"]["message"].count("***") >= 4
    assert "HTTP Request: POST http://user:**********@" in (sweep_dir / "0" / "run.log").read_text()
    assert "user:**********@" in (sweep_dir / "0" / ".hydra" / "config.yaml").read_text()


def test_check_never_prints_a_urls_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    """``modelfactory check 'model.api_base=ftp://u:K@h/v1'``: the problem is shown, the key is not."""
    from modelfactory.cli import main

    key = HELD["url"]
    for url in (f"ftp://u:{key}@h/v1", f"ftp://{key}@h/v1", f"ftp://h/v1?api_key={key}"):
        code = main(["check", "model=local_server", f"model.api_base='{url}'"])
        out = capsys.readouterr()
        assert code == 1
        assert "api_base" in out.out and "**********" in out.out
        assert key not in out.out + out.err


# --------------------------------------------------------------------------- issue 16, item 5: serve

UPSTREAM = {
    "key": "sk-upstream-planted-7101eeee",  # the upstream's api_key
    "header": "upstream-hdr-planted-7102ffff",  # a non-public header, under no secret-looking name
    "url": "upstream-url-planted-7103abab",  # user:K@ in the upstream's api_base
}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _sse_content(text: str) -> tuple[str, list[dict[str, object]]]:
    """The content a client reassembles from a stream, and any error events."""
    content, errors = "", []
    for line in text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if "error" in event:
            errors.append(event)
        for choice in event.get("choices") or []:
            content += choice["delta"].get("content") or ""
    return content, errors


@pytest.mark.server
def test_serve_never_hands_the_upstreams_credentials_to_a_client() -> None:
    """``modelfactory serve`` over an API model whose upstream echoes its key: replies (whole and
    streamed, the key split across chunks), errors, batch output files and the server's logs hold none of
    the upstream's credentials."""
    pytest.importorskip("fastapi")
    import httpx

    from modelfactory import OpenAIServerModel
    from modelfactory.serve import BackgroundServer, ServerSettings

    keys = list(UPSTREAM.values())
    echo = "keys: " + " ".join(keys)
    records = _Records()
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.access")]
    levels = {n: logging.getLogger(n).level for n in ("httpx2", "modelfactory.serve")}
    for lg in loggers:
        lg.addHandler(records)
    for name in levels:
        logging.getLogger(name).setLevel(logging.INFO)
    texts: list[str] = []
    try:
        with RecordingServer(reply=echo) as upstream:
            model = OpenAIServerModel(
                model_id="m",
                api_base=upstream.url.replace("http://", f"http://user:{UPSTREAM['url']}@") + "/v1",
                api_key=UPSTREAM["key"],
                client_kwargs={"default_headers": {"X-Upstream-Cred": UPSTREAM["header"]}},
                retry={"max_attempts": 1},
            )
            ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            with (
                BackgroundServer(model, ServerSettings(port=0, log_level="info")) as url,
                httpx.Client(base_url=url, timeout=60) as client,
            ):
                whole = client.post("/v1/chat/completions", json=ask)
                streamed = client.post("/v1/chat/completions", json={**ask, "stream": True})
                upstream.enqueue(400, {"error": {"message": f"bad request: {echo}", "type": "x"}})
                failed = client.post("/v1/chat/completions", json=ask)
                upstream.enqueue(400, {"error": {"message": f"bad request: {echo}", "type": "x"}})
                failed_stream = client.post("/v1/chat/completions", json={**ask, "stream": True})
                line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": ask}
                uploaded = client.post(
                    "/v1/files",
                    files={"file": ("in.jsonl", json.dumps(line).encode())},
                    data={"purpose": "batch"},
                ).json()
                batch = client.post(
                    "/v1/batches",
                    json={
                        "input_file_id": uploaded["id"],
                        "endpoint": "/v1/chat/completions",
                        "completion_window": "24h",
                    },
                ).json()
                for _ in range(600):  # a hang guard: the one-line batch ends quickly
                    batch = client.get(f"/v1/batches/{batch['id']}").json()
                    if batch["status"] == "completed":
                        break
                    time.sleep(0.05)
                output = client.get(f"/v1/files/{batch['output_file_id']}/content")
            assert upstream.requests[0].headers["x-upstream-cred"] == UPSTREAM["header"]  # really sent
    finally:
        for lg in loggers:
            lg.removeHandler(records)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    content, stream_errors = _sse_content(streamed.text)
    assert whole.status_code == 200 and streamed.status_code == 200
    assert whole.json()["choices"][0]["message"]["content"] == "keys: *** *** ***"
    assert content == "keys: *** *** ***" and stream_errors == []
    assert failed.status_code == 400 and failed_stream.status_code == 400
    assert output.status_code == 200 and "keys: *** *** ***" in output.text
    texts += [
        whole.text,
        streamed.text,
        content,
        failed.text,
        failed_stream.text,
        output.text,
        *records.lines,
    ]
    assert any("HTTP Request: POST http://user:**********@" in line for line in records.lines)
    found = [f"{k} in {t[:80]!r}" for t in texts for k in keys if k in t]
    assert found == [], found
    assert len(texts) >= 8


@pytest.mark.server
def test_serve_scrubs_a_key_split_across_streamed_tool_call_arguments() -> None:
    """An upstream that echoes its key into a tool call's arguments, streamed in pieces that cut the key in
    two (and interleaved with a second call): the client gets each call's arguments whole, the key as
    ``***``, and nowhere in the stream the key or a piece of it long enough to rebuild it."""
    pytest.importorskip("fastapi")
    import httpx

    from modelfactory import OpenAIServerModel
    from modelfactory.serve import BackgroundServer, ServerSettings

    key = UPSTREAM["key"]
    head, tail = key[:11], key[11:]
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}

    def chunk(calls: list[dict[str, object]] | None, finish: str | None = None) -> bytes:
        delta: dict[str, object] = {"role": "assistant"}
        if calls is not None:
            delta["tool_calls"] = calls
        event = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(event)}\n\n".encode()

    def call(index: int, arguments: str, name: str | None = None) -> dict[str, object]:
        fn: dict[str, object] = {"arguments": arguments}
        if name is not None:
            fn["name"] = name
        out: dict[str, object] = {"index": index, "function": fn}
        if name is not None:
            out.update(id=f"call_{index}", type="function")
        return out

    sse = b"".join(
        [
            chunk([call(0, "", "search"), call(1, "", "lookup")]),
            chunk([call(0, '{"q": "' + head)]),
            chunk([call(1, '{"id": 7}')]),
            chunk([call(0, tail + '"}')]),
            chunk(None, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )
    with RecordingServer() as upstream:
        upstream.enqueue(200, sse)  # sent as bytes, as they are: the SDK reads the events
        model = OpenAIServerModel(
            model_id="m", api_base=upstream.url + "/v1", api_key=key, retry={"max_attempts": 1}
        )
        ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with (
            BackgroundServer(model, ServerSettings(port=0, log_level="warning")) as url,
            httpx.Client(base_url=url, timeout=60) as client,
        ):
            streamed = client.post("/v1/chat/completions", json=ask)
    assert streamed.status_code == 200, streamed.text
    arguments: dict[int, str] = {}
    for line in streamed.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices") or []:
                for tc in choice["delta"].get("tool_calls") or []:
                    piece = (tc.get("function") or {}).get("arguments") or ""
                    arguments[tc["index"]] = arguments.get(tc["index"], "") + piece
    assert arguments == {0: '{"q": "***"}', 1: '{"id": 7}'}
    assert key not in streamed.text and head not in streamed.text


# --------------------------------------------------------------------------- issue 22, item 4: HTTP Basic

BASIC_USER, BASIC_KEY = "me", "basic-planted-7201abcd"
BASIC = base64.b64encode(f"{BASIC_USER}:{BASIC_KEY}".encode()).decode()  # what the client sends


@pytest.mark.server
def test_a_urls_userinfo_echoed_as_http_basic_never_reaches_a_file(tmp_path: Path) -> None:
    """``api_base: http://me:K@host/v1`` makes the client send ``Authorization: Basic base64(me:K)``;
    a server that echoes it (in a reply, in an error) must not put it in results.jsonl, result.json,
    run.log, the response cache or the console."""
    conf, out = tmp_path / "conf" / "model", tmp_path / "out"
    sweep_dir, cache = out / "sweep", out / "cache.sqlite"
    conf.mkdir(parents=True)
    with RecordingServer() as server:
        host = server.url.removeprefix("http://")
        (conf / "basic.yaml").write_text(
            "_target_: modelfactory.OpenAIServerModel\n"
            "model_id: m\n"
            f"api_base: http://{BASIC_USER}:{BASIC_KEY}@{host}/v1\n"
            f"cache: {{mode: read_write, path: {cache}}}\n"
            "retry:\n"
            "  max_attempts: 1\n",
            encoding="utf-8",
        )
        server.enqueue(200, completion(f"you sent Basic {BASIC}"))
        server.enqueue(
            400, {"error": {"message": f"bad header Basic {BASIC}", "type": "invalid_request_error"}}
        )
        proc = app(
            ROOT,
            "-m",
            f"--config-dir={tmp_path / 'conf'}",
            f"hydra.sweep.dir={sweep_dir}",
            "model=basic",
            "prompt=echo,deny",
        )
        assert proc.returncode == 0, proc.stderr
        sent = server.requests
    assert sent[0].headers["authorization"] == f"Basic {BASIC}"  # really what the server saw
    assert cache.is_file()
    found, looked = leaks([BASIC, BASIC_KEY], out, proc.stdout, proc.stderr)
    assert looked >= 2 * 7 + 2
    assert found == [], found
    first = json.loads((sweep_dir / "0" / "result.json").read_text())
    assert first["content"] == "you sent Basic ***"
    second = json.loads((sweep_dir / "1" / "result.json").read_text())
    assert "Basic ***" in second["error"]["message"]


@pytest.mark.server
def test_serve_never_echoes_an_upstreams_http_basic_credentials() -> None:
    """``modelfactory serve`` over an upstream reached with ``user:K@`` in its URL: the upstream's echo of
    its ``Authorization: Basic`` header is scrubbed from whole and streamed replies."""
    pytest.importorskip("fastapi")
    import httpx

    from modelfactory import OpenAIServerModel
    from modelfactory.serve import BackgroundServer, ServerSettings

    with RecordingServer(reply=f"you sent Basic {BASIC} ok") as upstream:
        model = OpenAIServerModel(
            model_id="m",
            api_base=upstream.url.replace("http://", f"http://{BASIC_USER}:{BASIC_KEY}@") + "/v1",
            retry={"max_attempts": 1},
        )
        ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        with (
            BackgroundServer(model, ServerSettings(port=0, log_level="warning")) as url,
            httpx.Client(base_url=url, timeout=60) as client,
        ):
            whole = client.post("/v1/chat/completions", json=ask)
            streamed = client.post("/v1/chat/completions", json={**ask, "stream": True})
        assert upstream.requests[0].headers["authorization"] == f"Basic {BASIC}"
    content, errors = _sse_content(streamed.text)
    assert whole.json()["choices"][0]["message"]["content"] == "you sent Basic *** ok"
    assert content == "you sent Basic *** ok" and errors == []
    assert BASIC not in whole.text + streamed.text


# --------------------------------------------------------------------------- issue 22, item 9


def test_a_full_error_traceback_is_scrubbed(tmp_path: Path) -> None:
    """``HYDRA_FULL_ERROR=1`` prints the whole traceback (as asked), never a key: here a config error
    whose message quotes an unparsable ``api_base`` holding the key, read from the environment."""
    key = "fullerr-planted-7501eeee"
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "env.yaml").write_text(
        "_target_: modelfactory.OpenAIServerModel\nmodel_id: m\napi_base: ${oc.env:SRV_BASE}\n"
        "api_key: ${oc.env:SRV_CRED}\n",
        encoding="utf-8",
    )
    env = {"SRV_BASE": f"http://u:{key}@[bad/v1", "SRV_CRED": key, "HYDRA_FULL_ERROR": "1"}
    proc = app(
        tmp_path,
        f"--config-dir={tmp_path / 'conf'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "model=env",
        env=env,
    )
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "ConfigError" in proc.stderr
    assert "api_base" in proc.stderr and "http://u:" in proc.stderr
    found, _ = leaks([key], tmp_path / "run", proc.stdout, proc.stderr)
    assert found == [], found


def test_a_literal_config_key_never_travels_back_in_submitits_result_pickle(tmp_path: Path) -> None:
    """submitit pickles each job's return (Hydra's ``JobReturn``, whose ``cfg`` is the job's config) into
    ``*_result.pkl`` in the sweep dir: a key written literally in a config file is masked in it. (The
    ``*_submitted.pkl`` holds the sweep's config: the job needs it to run; use ``${oc.env:VAR}``.)"""
    key = "submitit-literal-planted-7601"
    conf, sweep_dir = tmp_path / "conf" / "model", tmp_path / "sweep"
    conf.mkdir(parents=True)
    (conf / "literal.yaml").write_text(
        "_target_: modelfactory.CallableModel\nfn: examples.custom_model.custom_model\n"
        f"generation_kwargs:\n  api_key: {key}\n",
        encoding="utf-8",
    )
    proc = app(
        ROOT,
        "-m",
        f"--config-dir={tmp_path / 'conf'}",
        f"hydra.sweep.dir={sweep_dir}",
        "model=literal",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=2",
    )
    assert proc.returncode == 0, proc.stderr
    results = list(sweep_dir.glob(".submitit/*/*_result.pkl"))
    assert len(results) == 1 and b"**********" in results[0].read_bytes()
    inputs = {p for p in sweep_dir.glob(".submitit/*/*_submitted.pkl")}
    found, looked = leaks([key], sweep_dir, proc.stdout, proc.stderr)
    assert [f for f in found if not any(str(p.relative_to(sweep_dir)) in f for p in inputs)] == []
    assert looked >= 8


def test_an_env_set_value_in_a_config_file_is_masked_in_hydras_saved_configs(tmp_path: Path) -> None:
    """A config file's ``hydra.job.env_set.GEN_CRED: K``: the job gets the variable, Hydra's saved
    ``hydra.yaml`` and ``multirun.yaml`` hold it masked (issue 22, item 3: env_set values are secrets
    whatever their name)."""
    key = "envset-planted-7701cccc"
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "creds.yaml").write_text(
        f"# @package _global_\nhydra:\n  job:\n    env_set:\n      GEN_CRED: {key}\n      OMP_NUM_THREADS: '1'\n",
        encoding="utf-8",
    )
    sweep_dir = tmp_path / "sweep"
    proc = app(
        ROOT,
        "-m",
        f"--config-dir={tmp_path / 'conf'}",
        f"hydra.sweep.dir={sweep_dir}",
        "experiment=creds",
        "model=custom_callable",
        "prompt=hi",
    )
    assert proc.returncode == 0, proc.stderr
    found, looked = leaks([key], sweep_dir, proc.stdout, proc.stderr)
    assert found == [] and looked >= 6, found
    saved = (sweep_dir / "0" / ".hydra" / "hydra.yaml").read_text()
    assert "GEN_CRED: '**********'" in saved
    assert "OMP_NUM_THREADS: '1'" in saved
