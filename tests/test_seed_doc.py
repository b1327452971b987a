"""Every code block of smolagents' "Models" page (the seed this project grew from) runs verbatim.

Each block runs in a fresh Python process with ``from smolagents import X`` swapped for
``from modelfactory import X`` and nothing else changed; its endpoints are local servers reached through
the environment only, as a user would redirect them:

- ``api.openai.com``, ``router.huggingface.co`` and ``huggingface.co`` (``login``): ``HTTPS_PROXY`` names
  :class:`~tests.servers.tls_intercept.TLSInterceptor` and ``SSL_CERT_FILE`` its CA; it hands the
  requests to the recording server (any other host is refused, so nothing leaves the machine);
- Anthropic (through LiteLLM): ``ANTHROPIC_BASE_URL`` + ``ANTHROPIC_API_KEY``;
- Azure: the three variables the page names, ``AZURE_OPENAI_ENDPOINT`` (the recording server),
  ``AZURE_OPENAI_API_KEY``, ``OPENAI_API_VERSION``, and ``AZURE_OPENAI_MODEL``;
- ``HuggingFaceTB/SmolLM-135M-Instruct`` (not downloadable here): ``HF_HOME`` holds a Hub cache in which
  that repo is the shipped tiny model (random weights, so its text is noise; what is checked is the
  contract: a reply printed as text, and the stop sequence absent).

Each block gets a few lines appended that report what it built or returned; the assertions are what the
page shows: the reply printed as text, stop sequence "great" absent, LiteLLM honouring ``temperature`` and
``max_tokens`` on the wire, Azure configured from the environment, ``custom_model`` returning an object with
``.content``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelfactory.backends.transformers import builtin_path
from tests.procs import run_script
from tests.servers.recording import RecordingServer
from tests.servers.tls_intercept import TLSInterceptor

pytestmark = [pytest.mark.server, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DOC = (
    REPO / "tests" / "data" / "smolagents_models_doc.md"
)  # a copy of smolagents' docs/source/en/reference/models.md
HOSTS = ("api.openai.com", "router.huggingface.co", "huggingface.co")
DOC_REPLY = "Of course! If you change your mind, feel free to reach out. Take care!"
HF_TOKEN = "hf_docTOKEN0123456789abcdef"
MARK = "@@"


def doc_blocks() -> list[str]:
    text = DOC.read_text()
    return [m.group(2) for m in re.finditer(r"```(python|py)\n(.*?)```", text, re.DOTALL)]


def swapped(code: str) -> str:
    return re.sub(r"^from smolagents import ", "from modelfactory import ", code, flags=re.MULTILINE)


def report(expr: str) -> str:
    """A line to append to a block: prints ``expr`` (a dict) as JSON after a marker."""
    return f"\nimport json as _json\nprint({MARK!r} + _json.dumps({expr}, default=str))\n"


def tiny_model_as_hub_cache(home: Path, repo_id: str) -> None:
    """A Hub cache in ``home`` (``HF_HOME``) in which ``repo_id`` is the shipped tiny model."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    source = builtin_path("builtin:tiny-llama")
    assert source is not None
    for f in source.iterdir():
        if f.name != "build_info.json":
            (snapshot / f.name).symlink_to(f)


def posts(rec: RecordingServer) -> list[Any]:
    """The calls a block made (huggingface_hub also GETs a registry from huggingface.co on its own)."""
    return [r for r in rec.requests if r.method == "POST"]


class Run:
    def __init__(self, stdout: str, data: dict[str, Any]) -> None:
        self.printed = stdout  # what the block itself printed
        self.data = data  # what the appended lines reported


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RecordingServer, TLSInterceptor]]:
    folder = tmp_path_factory.mktemp("tls")
    with RecordingServer(reply=DOC_REPLY) as rec, TLSInterceptor(rec.url, HOSTS, folder) as proxy:
        yield rec, proxy


@pytest.fixture
def run_block(servers: tuple[RecordingServer, TLSInterceptor], tmp_path: Path) -> Iterator[Any]:
    rec, proxy = servers
    rec.requests.clear()

    def run(code: str, env: dict[str, str], offline: bool = False) -> Run:
        full = dict(os.environ)
        full.pop("HF_HUB_OFFLINE", None)
        full.update(proxy.env())
        full.update(
            HF_HOME=str(tmp_path / "hf_home"),
            PYTHONPATH=os.pathsep.join([str(REPO), full.get("PYTHONPATH", "")]),
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            **env,
        )
        if offline:
            full["HF_HUB_OFFLINE"] = "1"
        done = run_script(code, cwd=tmp_path, env=full, timeout=240)
        assert done.returncode == 0, done.stderr[-4000:]
        printed, _, data = done.stdout.partition(MARK)
        return Run(printed, json.loads(data) if data else {})

    yield run
    assert proxy.refused == []  # nothing tried to reach any other host


def test_the_page_has_the_blocks_this_test_knows() -> None:
    blocks = doc_blocks()
    assert len(blocks) == 6
    firsts = [b.strip().splitlines()[0] for b in blocks]
    assert firsts[0].startswith("from huggingface_hub import login, InferenceClient")
    assert [f for f in firsts[1:] if f.startswith("from smolagents import")] == [
        "from smolagents import TransformersModel",
        "from smolagents import HfApiModel",
        "from smolagents import LiteLLMModel",
        "from smolagents import OpenAIServerModel",
    ]
    assert "from smolagents import AzureOpenAIServerModel" in blocks[5]
    assert all("smolagents" not in swapped(b) for b in blocks)


def test_custom_model_returns_a_message_object(run_block: Any, servers: Any) -> None:
    rec, proxy = servers
    block = doc_blocks()[0]
    code = swapped(block) + (
        "\n_answer = custom_model([{'role': 'user', 'content': 'Say hi'}])\n"
        "from modelfactory import CallableModel\n"
        "_reply = CallableModel(custom_model)([{'role': 'user', 'content': 'Say hi'}], stop_sequences=['Task'])\n"
    )
    out = run_block(
        code + report("{'type': type(_answer).__name__, 'content': _answer.content, 'reply': str(_reply)}"),
        {"HF_TOKEN": HF_TOKEN},
    )
    assert out.data["content"] == DOC_REPLY  # an object with a .content attribute holding the text
    assert out.data["type"] == "ChatCompletionOutputMessage"
    assert out.data["reply"] == DOC_REPLY  # and modelfactory takes it as a model
    assert proxy.whoami == ["Bearer <YOUR_HUGGINGFACEHUB_API_TOKEN>"]  # login() checked the token
    chats = posts(rec)
    assert len(chats) == 2
    for r in chats:
        assert r.headers["host"] == "router.huggingface.co"
        assert r.body["model"] == "meta-llama/Llama-3.3-70B-Instruct"
        assert r.body["stop"] == ["Task"] and r.body["max_tokens"] == 1000
        assert r.headers["authorization"] == f"Bearer {HF_TOKEN}"


def test_transformers_model_prints_the_reply_without_the_stop(run_block: Any, tmp_path: Path) -> None:
    tiny_model_as_hub_cache(tmp_path / "hf_home", "HuggingFaceTB/SmolLM-135M-Instruct")
    block = doc_blocks()[1]
    out = run_block(
        swapped(block) + report("{'source': model.spec.source(), 'id': model.model_id}"), {}, offline=True
    )
    assert out.data["id"] == "HuggingFaceTB/SmolLM-135M-Instruct"
    printed = out.printed
    assert printed.endswith("\n") and printed.strip()  # the reply's text ...
    assert "ChatMessage(" not in printed and "token_usage" not in printed  # ... not a repr
    assert "great" not in printed


def test_hf_api_model_prints_the_reply(run_block: Any, servers: Any) -> None:
    rec, _ = servers
    out = run_block(swapped(doc_blocks()[2]), {"HF_TOKEN": HF_TOKEN})
    assert out.printed == DOC_REPLY + "\n"  # what the page shows
    (r,) = posts(rec)
    assert (r.headers["host"], r.path) == ("router.huggingface.co", "/v1/chat/completions")
    assert r.headers["authorization"] == f"Bearer {HF_TOKEN}"
    assert r.body["model"] == "meta-llama/Llama-3.3-70B-Instruct"
    assert [m["content"] for m in r.body["messages"]][-1] == "No need to help, take it easy."


def test_litellm_model_honours_temperature_and_max_tokens_on_the_wire(run_block: Any, servers: Any) -> None:
    rec, _ = servers
    env = {"ANTHROPIC_BASE_URL": rec.url, "ANTHROPIC_API_KEY": "sk-ant-doc-0123456789"}
    out = run_block(swapped(doc_blocks()[3]), env)
    assert out.printed == DOC_REPLY + "\n"
    (r,) = posts(rec)
    assert r.path == "/v1/messages"
    assert r.body["model"] == "claude-3-5-sonnet-latest"
    assert r.body["temperature"] == 0.2 and r.body["max_tokens"] == 10
    assert r.headers["x-api-key"] == "sk-ant-doc-0123456789"  # the env base URL's own key


def test_openai_server_model_as_the_page_builds_it(run_block: Any, servers: Any) -> None:
    rec, _ = servers
    # The page's block uses `os` without importing it (a slip of the page): the one line added.
    code = "import os\n" + swapped(doc_blocks()[4])
    code += "\nprint(model([{'role': 'user', 'content': 'Hi'}]))\n"
    out = run_block(
        code + report("{'api_base': model.spec.api_base}"), {"OPENAI_API_KEY": "sk-doc-0123456789"}
    )
    assert out.data["api_base"] == "https://api.openai.com/v1"
    assert out.printed == DOC_REPLY + "\n"
    (r,) = posts(rec)
    assert (r.headers["host"], r.path) == ("api.openai.com", "/v1/chat/completions")
    assert r.headers["authorization"] == "Bearer sk-doc-0123456789"
    assert r.body["model"] == "gpt-4o"


def test_azure_model_from_the_three_env_vars(run_block: Any, servers: Any) -> None:
    rec, _ = servers
    env = {
        "AZURE_OPENAI_MODEL": "doc-deployment",
        "AZURE_OPENAI_ENDPOINT": rec.url,
        "AZURE_OPENAI_API_KEY": "az-doc-0123456789",
        "OPENAI_API_VERSION": "2024-10-21",
    }
    code = swapped(doc_blocks()[5]) + (
        "\nprint(model([{'role': 'user', 'content': 'Hi'}]))\n"
        # "you can omit azure_endpoint, api_key and api_version ... provided you've set the env vars"
        "print(AzureOpenAIServerModel(model_id=os.environ.get('AZURE_OPENAI_MODEL'))([{'role': 'user', 'content': 'Hi'}]))\n"
    )
    out = run_block(code, env)
    assert out.printed == f"{DOC_REPLY}\n{DOC_REPLY}\n"
    assert len(posts(rec)) == 2
    for r in posts(rec):
        assert r.path == "/openai/deployments/doc-deployment/chat/completions"
        assert r.query == {"api-version": "2024-10-21"}
        assert r.headers["api-key"] == "az-doc-0123456789"
