"""``modelfactory serve``'s access log (issue 22 item 8): a line per request, through uvicorn's own
formatter, with secrets masked. The log redaction once set ``record.args`` to None, which uvicorn's
``AccessFormatter`` unpacks: every request printed an 80-line "Logging error" instead of its line."""

from __future__ import annotations

import io
import logging

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from modelfactory import CallableModel  # noqa: E402
from modelfactory.serve import BackgroundServer, ServerSettings  # noqa: E402

pytestmark = pytest.mark.server


def echo() -> CallableModel:
    return CallableModel(fn="examples.custom_model.custom_model")


SECRET = "sk-access-log-planted-9911"


class _Collect(logging.StreamHandler):  # type: ignore[type-arg]
    """uvicorn's own access formatter over a string; a formatting error recorded, not printed."""

    def __init__(self) -> None:
        from uvicorn.logging import AccessFormatter

        super().__init__(io.StringIO())
        self.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
        self.errors: list[logging.LogRecord] = []

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.errors.append(record)


def test_access_lines_are_written_and_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request gets its access line through uvicorn's ``AccessFormatter`` (which unpacks
    ``record.args``: the log redaction once set them to None, and every line became an 80-line
    "Logging error"), and a secret in a path is masked in it."""
    monkeypatch.setenv("MF_ACCESS_TEST_API_KEY", SECRET)
    handler = _Collect()
    settings = ServerSettings(port=0, log_level="info")
    with BackgroundServer(echo(), settings) as url:
        access = logging.getLogger("uvicorn.access")
        access.addHandler(handler)
        try:
            assert httpx.get(f"{url}/health", timeout=30).status_code == 200
            assert httpx.get(f"{url}/v1/models/{SECRET}", timeout=30).status_code == 404
        finally:
            access.removeHandler(handler)
    stream = handler.stream
    assert isinstance(stream, io.StringIO)
    text = stream.getvalue()
    assert handler.errors == []
    assert '"GET /health HTTP/1.1" 200' in text
    assert '"GET /v1/models/*** HTTP/1.1" 404' in text
    assert SECRET not in text


def test_a_record_whose_secret_spans_format_and_argument_is_still_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from modelfactory.secrets import scrub, scrubbed_logs

    log = logging.getLogger("test.serve.limits")
    with caplog.at_level(logging.INFO), scrubbed_logs(lambda t: scrub(t, [SECRET])):
        log.info("key " + SECRET[:6] + "%s", SECRET[6:])
        log.info("%s %d", SECRET, 7)
    assert SECRET not in caplog.text
    assert caplog.records[-1].args == ("***", 7)  # the arguments kept (a formatter may read them)
