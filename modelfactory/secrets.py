"""The one secret policy: which names hold secrets, and how a secret is kept out of what we write.

Every place that must not leak a key asks here: spec validation errors and ``to_dict`` (settings), the
response-cache key (cache), command-line overrides and Hydra's saved configs (overrides), error texts
(env-value scrubbing). One rule, so they cannot disagree on a name.

The rule, on the last dotted part of a name, case-insensitive (``model.client_kwargs.Authorization``,
``OPENAI_API_KEY``, a URL query parameter ``sig``):

- secret when it contains one of :data:`SECRET_WORDS` (``api_key``, ``hf_token``, ``Authorization``,
  ``db_passwd``, ``session_cookie``, ...) or has ``sig`` / ``signature`` as a whole word (Azure SAS
  ``sig=``, AWS ``X-Amz-Signature``: ``design`` or ``signal`` are not secret);
- but ``token`` inside ``tokenizer`` and a trailing ``tokens`` name a tokenizer or a count, not a key:
  ``tokenizer_id``, ``max_tokens``, ``max_new_tokens`` are not secret (``tokenizer_token`` still is).

Stdlib only: :mod:`run.py` asks before Hydra (or pydantic) is even imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

__all__ = [
    "REDACTED",
    "SECRET_WORDS",
    "StreamScrubber",
    "env_secret_values",
    "has_url_secret",
    "PUBLIC_HEADERS",
    "credential_values",
    "is_credential",
    "is_literal",
    "is_secret_key",
    "override_secrets",
    "mask_config_secrets",
    "mask_url",
    "mask_urls",
    "public_headers",
    "redact_env",
    "redact_mapping",
    "redactor",
    "scrub",
    "scrub_tree",
    "scrubbed_logs",
    "url_has_secret",
]

REDACTED = "**********"
# A secret-looking name contains one of these (after the exceptions below are taken out).
SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "authorization", "credential", "cookie")
# ... or has one of these as a whole word (too short or too common to match inside other words).
_SECRET_PARTS = frozenset({"sig", "signature", "auth"})
# "token" inside "tokenizer", and a trailing "tokens" (a count: max_tokens), do not make a name secret.
_NOT_SECRET = re.compile(r"tokenizer|tokens$")
_PARTS = re.compile(r"[^a-z0-9]+")
# An environment value this short is not scrubbed from texts (it would garble ordinary words).
MIN_ENV_SECRET_LEN = 8
# A known secret this short (a test placeholder) is not scrubbed either.
MIN_SECRET_LEN = 4
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
# The userinfo of a URL, up to its last "@" before the path (a password may hold a raw "@").
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#\s]*)@")
_PARAM = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")


def is_secret_key(name: str) -> bool:
    """True when ``name`` (a config key, a header, an env var, a query parameter) holds a secret."""
    leaf = _NOT_SECRET.sub("", str(name).rsplit(".", 1)[-1].lower())
    return any(w in leaf for w in SECRET_WORDS) or not _SECRET_PARTS.isdisjoint(_PARTS.split(leaf))


# Where a mapping's keys are HTTP header names: every value there is a credential unless the header is
# one of PUBLIC_HEADERS (X-Auth, api-key, Ocp-Apim-Subscription-Key: a provider may name its key anything).
HEADER_CONTAINERS = frozenset({"default_headers", "headers", "extra_headers", "http_headers"})
PUBLIC_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "anthropic-beta",
        "anthropic-version",
        "content-type",
        "openai-beta",
        "openai-organization",
        "openai-project",
        "user-agent",
    }
)
_NULLS = ("", "null", "None", "~")
# A literal default inside an interpolation: ${oc.env:UNSET,sk-...} holds the key in clear.
_DEFAULT = re.compile(r"\$\{[\w.]+:[^,}]*,([^}]*)\}")


def is_literal(value: str) -> bool:
    """A value typed in clear: not empty or null, not an ``${oc.env:...}``-style interpolation (unless
    the interpolation carries a literal default: ``${oc.env:UNSET,sk-...}`` is the key in clear)."""
    v = value.strip().strip("'\"")
    if _literal_default(v):
        return True
    return v not in _NULLS and not (v.startswith("${") and v.endswith("}"))


def _literal_default(value: str) -> bool:
    """``${oc.env:UNSET,sk-...}``: an interpolation whose default is a value in clear."""
    return any(d.strip().strip("'\"") not in _NULLS for d in _DEFAULT.findall(value))


def is_credential(path: str) -> bool:
    """True when the value at dotted ``path`` is a credential: a secret-looking name
    (:func:`is_secret_key`), or any header under ``default_headers`` / ``headers`` that is not one of
    :data:`PUBLIC_HEADERS`."""
    parts = str(path).split(".")
    if is_secret_key(parts[-1]):
        return True
    return len(parts) > 1 and parts[-2] in HEADER_CONTAINERS and parts[-1].lower() not in PUBLIC_HEADERS


def public_headers(headers: Any) -> dict[str, str]:
    """The headers of ``headers`` that may be shown and may decide a reply (``OpenAI-Beta``): the public
    ones, names lower-cased."""
    if not isinstance(headers, Mapping):
        return {}
    return {str(k).lower(): str(v) for k, v in headers.items() if str(k).lower() in PUBLIC_HEADERS}


def credential_values(data: Any, path: str = "") -> list[str]:
    """Every credential value held in ``data`` (a spec dump: mappings, lists, ``SecretStr``): values at
    :func:`is_credential` paths, whatever names the env var they came from, and the userinfo and secret
    query values of URLs. So a reply or an error can be scrubbed of all of them."""
    out: list[str] = []
    if callable(getattr(data, "get_secret_value", None)):
        value = data.get_secret_value()
        return [value] if value else []
    if isinstance(data, Mapping):
        for k, v in data.items():
            sub = f"{path}.{k}" if path else str(k)
            if is_credential(sub) and isinstance(v, (str, int)) and not isinstance(v, bool) and str(v):
                text = str(v)
                out.append(text)
                scheme, _, rest = text.partition(" ")  # "Bearer sk-...": the key alone counts too
                if rest and scheme.lower() in ("bearer", "basic", "token"):
                    out.append(rest.strip())
            else:
                out += credential_values(v, sub)
    elif isinstance(data, (list, tuple)):
        for v in data:
            out += credential_values(v, path)
    elif isinstance(data, str) and "://" in data:
        for m in _URL.finditer(data):
            out += _url_credentials(m.group(0))
    return out


def _url_credentials(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        # the password, or a user name given alone (a token as the user: https://TOKEN@host)
        found = [unquote_plus(x) for x in [parts.password or parts.username] if x]
    except ValueError:
        return []
    return found + [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if v and is_secret_key(k)]


# Hydra's dict grammar, one ``key: value`` pair: {api_key: K, "Authorization": "Bearer K"}
_PAIR = re.compile(r"""([^\s{}\[\],:'"]+|"[^"]*"|'[^']*')\s*:\s*("[^"]*"|'[^']*'|[^,{}\[\]]*)""")


def override_secrets(key: str, value: str) -> bool:
    """True when the command-line override ``key=value`` carries a credential in clear: a literal value at
    a credential path (:func:`is_credential`, every ``hydra.job.env_set`` variable that looks secret), a
    dict value holding one (``generation_kwargs={api_key: K}``, ``default_headers={Authorization: ...}``),
    a literal default inside an interpolation, or a URL with userinfo or a secret query parameter."""
    key = key.lstrip("+~")
    if has_url_secret(value) or any(_url_credentials(m.group(0)) for m in _URL.finditer(value)):
        return True
    v = value.strip()
    if v.startswith("{"):
        for name, sub in _PAIR.findall(v):
            name = name.strip("'\"")
            if is_credential(f"{key}.{name}") and is_literal(sub):
                return True
        return False
    return is_credential(key) and is_literal(value)


# --------------------------------------------------------------------------- URLs


def url_has_secret(url: str) -> bool:
    """A URL that carries a credential: userinfo (``user:password@``, ``:password@``, or a token given as
    the user name alone, ``https://TOKEN@host``), or a secret-named query parameter with a value
    (``?sig=...``, ``?api_key=...``). The same rule as :func:`credential_values` and the command-line
    refusal: what one refuses, the others mask and scrub."""
    return bool(_url_credentials(url))


def has_url_secret(text: str) -> bool:
    """True when some URL inside ``text`` carries a credential (see :func:`url_has_secret`)."""
    return any(url_has_secret(m.group(0)) for m in _URL.finditer(text))


def mask_url(url: str) -> str:
    """``url`` with its userinfo (the password of ``user:password@``, or a user name given alone: a token)
    and the values of secret-named query parameters replaced by :data:`REDACTED`; the rest is kept as
    written (so the endpoint stays readable)."""
    if not url_has_secret(url):
        return url

    def userinfo(m: re.Match[str]) -> str:
        user, colon, _ = m.group(2).partition(":")
        return f"{m.group(1)}{user}:{REDACTED}@" if colon else f"{m.group(1)}{REDACTED}@"

    url = _USERINFO.sub(userinfo, url, count=1)
    head, sep, query = url.partition("?")
    if not sep:
        return url

    def param(m: re.Match[str]) -> str:
        secret = m.group(3) and is_secret_key(unquote_plus(m.group(2)))
        return f"{m.group(1)}{m.group(2)}={REDACTED}" if secret else m.group(0)

    return head + _PARAM.sub(param, sep + query)


def mask_urls(text: str) -> str:
    """Every URL inside ``text`` through :func:`mask_url`."""
    return _URL.sub(lambda m: mask_url(m.group(0)), text) if "://" in text else text


# --------------------------------------------------------------------------- texts


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace each known secret in ``text`` by ``***``: longest first, so a key that contains another is
    scrubbed whole; one shorter than :data:`MIN_SECRET_LEN` (a placeholder) is left alone."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LEN:
            text = text.replace(secret, "***")
    return text


def scrub_tree(data: Any, redact: Any) -> Any:
    """A copy of ``data`` (JSON-like: dicts, lists, strings) with ``redact`` applied to every string, keys
    included: a reply's content, tool-call arguments, anything a provider echoed back."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, Mapping):
        return {scrub_tree(k, redact): scrub_tree(v, redact) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [scrub_tree(v, redact) for v in data]
    return data


# The stream scrubber's window is the longest secret rounded up to this many characters: so the delay a
# client sees does not even tell the longest key's exact length.
STREAM_WINDOW_STEP = 32


class StreamScrubber:
    """:func:`scrub` for a text that arrives in pieces (a streamed reply): a secret split across two
    pieces is still caught, and what is sent when never depends on the secrets.

    It always holds back the last :attr:`window` characters (at least the longest secret, rounded up to
    :data:`STREAM_WINDOW_STEP`) whatever they are, scrubs all it holds, and :meth:`feed` returns only what
    falls out of the window; :meth:`flush` returns the window at the end of the stream. A secret still
    arriving lies whole inside the window, so it is never cut by a release. Holding back only a tail that
    could begin a secret (as it once did) was an oracle: a client whose text an upstream echoes saw its
    text held exactly when its guess began the key, and rebuilt the key a letter at a time. Now the
    lengths released depend only on the lengths fed, unless a whole secret was there to scrub."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # every string to replace, longest first; the window covers the longest, so none is cut in two
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)
        longest = max(map(len, self.secrets), default=0)
        self.window = -(-longest // STREAM_WINDOW_STEP) * STREAM_WINDOW_STEP
        self._held = ""

    def feed(self, piece: str) -> str:
        text = self._held + piece
        for secret in self.secrets:  # exactly these strings: the window was sized for them
            if secret in text:
                text = text.replace(secret, "***")
        cut = max(0, len(text) - self.window)
        self._held = text[cut:]
        return text[:cut]

    def flush(self) -> str:
        text, self._held = self._held, ""
        return text


_log_redactors: list[Callable[[str], str]] = []
_log_lock = threading.Lock()
_log_factory: Callable[..., logging.LogRecord] | None = None


@contextlib.contextmanager
def scrubbed_logs(redact: Callable[[str], str]) -> Iterator[None]:
    """While inside, every log record of this process (any logger, any handler, handlers created later
    included: uvicorn's, Hydra's ``run.log``) has ``redact`` applied to its message and traceback when it
    is made, before any handler sees it. So a library that logs a URL with ``user:KEY@`` in it (httpx's
    ``HTTP Request: POST ...`` line) or an exception that echoes a key cannot put it in a log file.

    Nested and concurrent uses stack: each adds its ``redact`` for as long as it is inside."""
    global _log_factory
    with _log_lock:
        if _log_factory is None:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                active = list(_log_redactors)
                if active:
                    _redact_record(record, active)
                return record

            _log_factory = factory
            logging.setLogRecordFactory(factory)
        _log_redactors.append(redact)
    try:
        yield
    finally:
        with _log_lock:
            _log_redactors.remove(redact)


def _redact_record(record: logging.LogRecord, redactors: list[Callable[[str], str]]) -> None:
    def clean(text: str) -> str:
        for redact in redactors:
            text = redact(text)
        return mask_urls(text)

    try:
        message = record.getMessage()
    except Exception:  # a record whose arguments do not fit its format: the handler reports it
        return
    cleaned = clean(message)
    if cleaned != message:
        record.msg, record.args = _redact_args(record, clean, cleaned)
    if record.exc_info and not record.exc_text:
        record.exc_text = clean("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))


def _redact_args(record: logging.LogRecord, clean: Callable[[str], str], cleaned: str) -> tuple[Any, Any]:
    """The record's format and arguments, each string argument redacted, so a formatter that reads
    ``record.args`` (uvicorn's access lines unpack them) still finds them; the whole redacted message
    with no arguments when a secret spans the format and an argument (nothing else leaves it out)."""

    def arg(value: Any) -> Any:
        if isinstance(value, (int, float)):
            return value
        text = str(value)  # an httpx.URL holding user:KEY@ is no str, but formats as one with %s
        redacted = clean(text)
        return redacted if redacted != text or isinstance(value, str) else value

    args = record.args
    if isinstance(args, tuple):
        new_args: Any = tuple(arg(a) for a in args)
    elif isinstance(args, Mapping):
        new_args = {k: arg(v) for k, v in args.items()}
    else:
        return cleaned, ()
    msg = clean(record.msg) if isinstance(record.msg, str) else record.msg
    try:
        ok = (str(msg) % new_args if new_args else str(msg)) == cleaned
    except Exception:  # the redaction changed a format
        ok = False
    return (msg, new_args) if ok else (cleaned, ())


def env_secret_values() -> list[str]:
    """The values of secret-named environment variables (what :func:`redact_env` scrubs), for a scrubber
    that needs them as a list (:class:`StreamScrubber`)."""
    return [v for k, v in os.environ.items() if len(v) >= MIN_ENV_SECRET_LEN and is_secret_key(k)]


def redactor(own: Any = None, *holders: Any) -> Callable[[str], str]:
    """One function that scrubs a text of everything secret a job holds: ``own`` (a model's ``redact``:
    its spec's keys, headers and URL userinfo), the credentials inside each of ``holders`` (per-call
    kwargs such as ``extra_headers``; :func:`credential_values`), and secret-named environment values;
    whatever variable each credential came from."""
    extra = [v for h in holders for v in credential_values(h)]

    def redact(text: str) -> str:
        text = scrub(text, extra) if extra else text
        return redact_env(own(text) if callable(own) else text)

    return redact


def redact_env(text: str) -> str:
    """Scrub the values of secret-named environment variables (``*_API_KEY``, ``HF_TOKEN``, ...).

    SDKs read keys from the environment behind our back; their errors may echo them.
    """
    for name, value in os.environ.items():
        if len(value) >= MIN_ENV_SECRET_LEN and value in text and is_secret_key(name):
            text = text.replace(value, "***")
    return text


# --------------------------------------------------------------------------- mappings and configs


def redact_mapping(data: Any, path: str = "") -> Any:
    """A copy of ``data`` with every credential value replaced by :data:`REDACTED` (empty ones kept, so
    "not set" stays visible): values at :func:`is_credential` paths (a secret-looking name, or any
    non-public header under ``default_headers`` / ``headers``, ``X-Custom`` included), every ``SecretStr``,
    and credentials inside URLs (:func:`mask_urls`). ``path``: where ``data`` sits (``client_kwargs``), so
    a header mapping passed alone is still known as one."""
    if isinstance(data, str):
        return mask_urls(data)
    if callable(getattr(data, "get_secret_value", None)):  # pydantic's SecretStr, without importing it
        return REDACTED if data.get_secret_value() else ""
    if isinstance(data, Mapping):
        out = {}
        for k, v in data.items():
            sub = f"{path}.{k}" if path else str(k)
            out[k] = REDACTED if is_credential(sub) and v not in (None, "") else redact_mapping(v, sub)
        return out
    if isinstance(data, (list, tuple)):
        return [redact_mapping(v, path) for v in data]
    return data


def mask_config_secrets(node: Any, path: str = "") -> bool:
    """Mask, in place, the literal credential values in a plain (dict/list) config: values at
    :func:`is_credential` paths (names, and non-public headers), a literal default inside an interpolation
    there (``${oc.env:UNSET,sk-...}``), and credentials inside literal URLs (``api_base:
    https://user:KEY@host``). A plain interpolation (``${oc.env:KEY}``) is kept: it names the secret
    without holding it. True if anything was masked."""
    changed = False
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return False
    for k, v in items:
        sub = (f"{path}.{k}" if path else str(k)) if isinstance(node, dict) else path
        if isinstance(v, (dict, list)):
            changed |= mask_config_secrets(v, sub)
            continue
        named = isinstance(node, dict) and is_credential(sub)
        if named and isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)  # a numeric key under a credential name is still one
        if not isinstance(v, str) or not is_literal(v):
            continue
        if "${" in v and not _literal_default(v):
            continue  # "Bearer ${oc.env:KEY}": resolved at run time, names the secret without holding it
        masked = REDACTED if named else mask_urls(v)
        if masked != node[k]:
            node[k] = masked
            changed = True
    return changed
