"""The one secret policy: which names hold secrets, and how a secret is kept out of what we write.

Every place that must not leak a key asks here: spec validation errors and ``to_dict`` (settings), the
response-cache key (cache), command-line overrides and Hydra's saved configs (overrides), error texts
(env-value scrubbing). One rule, so they cannot disagree on a name.

The rule, on the last dotted part of a name, case-insensitive (``model.client_kwargs.Authorization``,
``OPENAI_API_KEY``, a URL query parameter ``sig``):

- secret when it contains one of :data:`SECRET_WORDS` (``api_key``, ``hf_token``, ``Authorization``,
  ``db_passwd``, ``session_cookie``, ...) or has ``sig`` / ``signature`` as a whole word (Azure SAS
  ``sig=``, AWS ``X-Amz-Signature``: ``design`` or ``signal`` are not secret);
- but ``token`` inside ``tokenizer``, a trailing ``tokens`` or ``token_id(s)`` name a tokenizer, a count
  or vocabulary ids, not a key, and ``keyword`` is a word: ``tokenizer_id``, ``max_tokens``,
  ``stop_token_ids``, ``keywords`` are not secret (``tokenizer_token`` still is).

That rule is broad on purpose: it decides what is *hidden*, where hiding too much costs nothing. What
is left out of an *identity* (the response-cache key) must be narrower, or two different requests share
one key (``stop_token_ids``, ``keywords``): :func:`names_credential` and :func:`is_credential_param`,
by word and by place. And by place whatever the name: the value of any non-public header, of any
``hydra.job.env_set`` variable, a URL's userinfo and credential query parameters (``?code=``, ``?pwd=``).

A secret is scrubbed from texts in every form it travels in (:func:`secret_forms`): as given, base64 as
HTTP Basic sends it (``K:``, ``:K``, ``user:K`` of a URL's userinfo), URL-encoded and JSON-escaped.

Stdlib only: :mod:`run.py` asks before Hydra (or pydantic) is even imported.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

__all__ = [
    "REDACTED",
    "SECRET_WORDS",
    "StreamScrubber",
    "env_secret_values",
    "has_url_secret",
    "holds_credential",
    "ENV_CONTAINERS",
    "HEADER_CONTAINERS",
    "PUBLIC_ENV",
    "PUBLIC_HEADERS",
    "credential_values",
    "is_credential",
    "is_credential_param",
    "is_literal",
    "is_secret_key",
    "is_url_secret_param",
    "names_credential",
    "names_url_credential",
    "override_secrets",
    "mask_config_secrets",
    "mask_url",
    "mask_urls",
    "public_headers",
    "redact_env",
    "redact_mapping",
    "redactor",
    "remember_secrets",
    "scrub",
    "scrub_tree",
    "scrubbed_traceback",
    "secret_forms",
    "scrubbed_logs",
    "url_has_secret",
]

REDACTED = "**********"
# A secret-looking name contains one of these (after the exceptions below are taken out).
SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "authorization", "credential", "cookie")
# ... or has one of these as a whole word (too short or too common to match inside other words).
_SECRET_PARTS = frozenset({"sig", "signature", "auth", "pwd"})
# "token" inside "tokenizer", a trailing "tokens" (a count: max_tokens), token ids (stop_token_ids,
# eos_token_id: vocabulary ids) and "keyword(s)" do not make a name secret.
_NOT_SECRET = re.compile(r"tokenizer|tokens$|token_ids?$|keywords?")
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


# The words of a name: snake, kebab and camel case (``stop_token_ids``, ``X-Api-Key``, ``apiKey``).
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
# A name with one of these words anywhere names a credential ...
_CREDENTIAL_WORDS = frozenset(
    {
        "secret",
        "secrets",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "credential",
        "credentials",
        "cookie",
        "cookies",
        "authorization",
        "apikey",
        "sig",
        "signature",
    }
)
# ... and with one of these as its last word (``api_key``, ``HF_TOKEN``, ``x-auth``; not
# ``stop_token_ids``, ``keywords``, ``token_type``).
_CREDENTIAL_LAST = frozenset({"key", "token", "auth"})
# URL query parameters that carry a credential under a short name: Azure Functions' ``?code=``,
# ``?pwd=``, ``?pass=``, ``?jwt=`` (besides every secret-looking name: ``?api_key=``, ``?sig=``).
_URL_SECRET_PARAMS = frozenset({"code", "pwd", "pass", "jwt"})


def names_credential(name: str) -> bool:
    """True when the last dotted part of ``name`` *is* the name of a credential, by its words
    (``api_key``, ``hf_token``, ``X-Amz-Signature``, ``client_secret``), not merely contains one
    (``stop_token_ids``, ``allowed_token_ids``, ``keywords``, ``max_tokens``, ``tokenizer``): what the
    response-cache key leaves out. Narrower than :func:`is_secret_key`, which decides what is hidden."""
    words = [w.lower() for w in _WORDS.findall(str(name).rsplit(".", 1)[-1])]
    return bool(words) and (words[-1] in _CREDENTIAL_LAST or not _CREDENTIAL_WORDS.isdisjoint(words))


def is_url_secret_param(name: str) -> bool:
    """True when a URL query parameter called ``name`` carries a credential: a secret-looking name
    (:func:`is_secret_key`: ``api_key``, ``sig``) or one of the short ones (``code``, ``pwd``)."""
    name = str(name)
    return is_secret_key(name) or name.strip().lower() in _URL_SECRET_PARAMS


def names_url_credential(name: str) -> bool:
    """:func:`names_credential` for a URL query parameter: also the short names (``code``, ``pwd``)."""
    return names_credential(name) or str(name).strip().lower() in _URL_SECRET_PARAMS


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
# Where a mapping's keys are environment variables a job sets (``hydra.job.env_set``): every value there
# is a credential (GEN_CRED=K, whatever the name) unless the variable is one of PUBLIC_ENV.
ENV_CONTAINERS = frozenset({"env_set"})
PUBLIC_ENV = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "CUBLAS_WORKSPACE_CONFIG",
        "PYTORCH_CUDA_ALLOC_CONF",
        "OMP_NUM_THREADS",
        "OMP_WAIT_POLICY",
        "GOMP_SPINCOUNT",  # with OMP_WAIT_POLICY, a user's own thread policy (backends/transformers/_threads)
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TOKENIZERS_PARALLELISM",
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HOME",
        "HF_HUB_CACHE",
        "LITELLM_LOCAL_MODEL_COST_MAP",
        "OPENAI_API_VERSION",
        "PYTHONHASHSEED",
        "TZ",
        "LANG",
        "LC_ALL",
    }
)
_NULLS = ("", "null", "None", "~")
# An auth scheme written before an interpolation ("Bearer ${oc.env:KEY}") holds nothing in clear.
_SCHEMES = ("", "bearer", "basic", "token")
# Resolvers whose first argument names something (a variable, a config node), the rest a default.
_NAMING_RESOLVERS = frozenset({"oc.env", "oc.select", "oc.deprecated", "oc.dict.keys", "oc.dict.values"})


def is_literal(value: str) -> bool:
    """A value typed in clear: not empty or null, and not only interpolations that name where the value
    comes from (``${oc.env:KEY}``, ``Bearer ${oc.env:KEY}``, ``${model.other}``). An interpolation that
    carries the value is a literal: ``${oc.env:UNSET,sk-...}`` (a default), ``${oc.decode:sk-...}``,
    ``${oc.create:...}`` or any other resolver given a value in clear."""
    return _holds_literal(str(value), outer=True)


def _holds_literal(text: str, *, outer: bool = False) -> bool:
    v = text.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        v = v[1:-1].strip()
    if v in _NULLS:
        return False
    split = _interpolations(v)
    if split is None:  # an unbalanced "${": read as text
        return True
    inner, outside = split
    rest = outside.strip()
    if not inner:
        return bool(rest)
    # beside interpolations: an auth scheme ("Bearer ${oc.env:K}") or a few characters joining them
    # ("${oc.env:A}:${oc.env:B}", "sk-${oc.env:K}") hold no key; a longer text may
    if len(rest) >= MIN_SECRET_LEN and not (outer and rest.lower() in _SCHEMES):
        return True
    return any(_resolver_literal(i) for i in inner)


def _interpolations(text: str) -> tuple[list[str], str] | None:
    """The contents of the top-level ``${...}`` of ``text`` and the text outside them; None when a
    ``${`` is not closed."""
    inner: list[str] = []
    outside: list[str] = []
    i = 0
    while i < len(text):
        if not text.startswith("${", i):
            outside.append(text[i])
            i += 1
            continue
        depth, j = 1, i + 2
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:
            return None
        inner.append(text[i + 2 : j - 1])
        i = j
    return inner, "".join(outside)


def _split_args(text: str) -> list[str]:
    """A resolver's arguments: split at the commas outside braces, brackets and quotes."""
    args, depth, quote_char, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote_char:
            quote_char = "" if ch == quote_char else quote_char
        elif ch in "'\"":
            quote_char = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(text[start:i])
            start = i + 1
    return [*args, text[start:]]


def _resolver_literal(inner: str) -> bool:
    """Whether ``${inner}`` carries a value in clear: a node reference (``${a.b}``) does not; a naming
    resolver's default may; any other resolver's arguments are values (``${oc.decode:K}``)."""
    name, colon, rest = inner.partition(":")
    if not colon:
        return _holds_literal(inner) if "${" in inner else False  # ${a.b}, or ${${x}}-style nesting
    args = _split_args(rest)
    if name.strip() in _NAMING_RESOLVERS:
        return any(_holds_literal(a) for a in args[1:]) or ("${" in args[0] and _holds_literal(args[0]))
    return any(_holds_literal(a) for a in args)


def is_credential(path: str) -> bool:
    """True when the value at dotted ``path`` is a credential: a secret-looking name
    (:func:`is_secret_key`), any header under ``default_headers`` / ``headers`` / ``extra_headers`` that
    is not one of :data:`PUBLIC_HEADERS`, or any ``hydra.job.env_set`` variable not in
    :data:`PUBLIC_ENV`."""
    parts = str(path).split(".")
    if is_secret_key(parts[-1]):
        return True
    return _by_place(parts)


def _by_place(parts: list[str]) -> bool:
    if len(parts) < 2:
        return False
    if parts[-2] in HEADER_CONTAINERS:
        return parts[-1].lower() not in PUBLIC_HEADERS
    return parts[-2] in ENV_CONTAINERS and parts[-1].upper() not in PUBLIC_ENV


def is_credential_param(path: str) -> bool:
    """:func:`is_credential` for what leaves an identity (the response-cache key): a name that *is* a
    credential's (:func:`names_credential`), or a credential by place (a non-public header)."""
    parts = str(path).split(".")
    return names_credential(parts[-1]) or _by_place(parts)


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
            out += _url_credentials(m.group(0)) + _basic_credentials(m.group(0))
    return out


def _url_credentials(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        # the password, or a user name given alone (a token as the user: https://TOKEN@host)
        userinfo, query = parts.password or parts.username, parts.query
    except ValueError:  # unparsable ("[" in the host, a bad port): its userinfo is a credential still
        m = _USERINFO.match(url)
        user, _, password = (m.group(2) if m else "").partition(":")
        userinfo, query = password or user, url.partition("?")[2].partition("#")[0]
    found = [unquote_plus(userinfo)] if userinfo else []
    pairs = parse_qsl(query, keep_blank_values=True)
    return found + [v for k, v in pairs if v and is_url_secret_param(k)]


def _basic_credentials(url: str) -> list[str]:
    """What an HTTP client sends for a URL's ``user:password@`` (``Authorization: Basic
    base64(user:password)``, as httpx and requests do), so a server that echoes it is scrubbed too. A
    password or a user given alone is covered by :func:`secret_forms` of the value itself."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return []
    if not user or not password:
        return []
    pairs = {f"{unquote(user)}:{unquote(password)}", f"{unquote_plus(user)}:{unquote_plus(password)}"}
    return [f for pair in sorted(pairs) for f in _base64_forms(pair.encode())]


# Hydra's dict grammar, one ``key: value`` pair: {api_key: K, "Authorization": "Bearer K"}
_PAIR = re.compile(r"""([^\s{}\[\],:'"]+|"[^"]*"|'[^']*')\s*:\s*("[^"]*"|'[^']*'|[^,{}\[\]]*)""")


def holds_credential(path: str, value: Any) -> bool:
    """True when ``value`` (parsed: mappings, lists, scalars), put at dotted ``path``, holds a credential
    in clear: a literal (:func:`is_literal`) at a credential path (:func:`is_credential`: a secret name, a
    non-public header, an ``env_set`` variable) at any depth, or a URL with credentials anywhere. What a
    command-line override may not carry, however it nests it (``client_kwargs={default_headers: {...}}``)."""
    if isinstance(value, Mapping):
        return any(holds_credential(f"{path}.{k}", v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(holds_credential(path, v) for v in value)
    if value is None or isinstance(value, bool):
        return False
    text = str(value)
    return has_url_secret(text) or (is_credential(path) and is_literal(text))


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
        secret = m.group(3) and is_url_secret_param(unquote_plus(m.group(2)))
        return f"{m.group(1)}{m.group(2)}={REDACTED}" if secret else m.group(0)

    return head + _PARAM.sub(param, sep + query)


def mask_urls(text: str) -> str:
    """Every URL inside ``text`` through :func:`mask_url`."""
    return _URL.sub(lambda m: mask_url(m.group(0)), text) if "://" in text else text


# --------------------------------------------------------------------------- texts


def _base64_forms(data: bytes) -> list[str]:
    """``data`` base64-encoded, standard and URL-safe, with and without the ``=`` padding."""
    padded = [enc(data).decode("ascii") for enc in _ENCODERS]
    return list(dict.fromkeys(padded + [p.rstrip("=") for p in padded]))


_ENCODERS = (base64.b64encode, base64.urlsafe_b64encode)


# Every derived form made so far: a list of forms passed again (a StreamScrubber's) is not derived twice.
_DERIVED: set[str] = set()


@functools.lru_cache(maxsize=4096)
def _forms(secret: str) -> tuple[str, ...]:
    if secret in _DERIVED:
        return (secret,)
    raw = secret.encode("utf-8")
    forms = [secret]
    for data in (raw, raw + b":", b":" + raw):  # alone, as HTTP Basic's user or password
        forms += _base64_forms(data)
    forms += [quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]]
    out = tuple(dict.fromkeys(forms))
    _DERIVED.update(out[1:])
    return out


@functools.lru_cache(maxsize=256)
def _all_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    keep = {f for s in secrets if len(s) >= MIN_SECRET_LEN for f in _forms(s) if len(f) >= MIN_SECRET_LEN}
    return tuple(sorted(keep, key=lambda f: (-len(f), f)))


def secret_forms(secrets: Iterable[str]) -> list[str]:
    """Every form in which each of ``secrets`` may come back, longest first: as given; base64 (standard
    and URL-safe) of ``K``, ``K:`` and ``:K`` (HTTP Basic with the key as user or password: a server
    that echoes its ``Authorization`` header); URL-encoded; JSON-escaped. ``Bearer K`` holds ``K``
    itself. A secret shorter than :data:`MIN_SECRET_LEN` (a placeholder) has none."""
    return list(_all_forms(tuple(secrets)))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace each known secret in ``text``, in each of its forms (:func:`secret_forms`), by ``***``:
    longest first, so a key that contains another is scrubbed whole; one shorter than
    :data:`MIN_SECRET_LEN` (a placeholder) is left alone."""
    for form in _all_forms(tuple(secrets)):
        if form in text:
            text = text.replace(form, "***")
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
        # every string to replace (each secret's derived forms too: Basic base64 of K), longest first;
        # the window covers the longest, so none is cut in two
        self.secrets = secret_forms(secrets)
        longest = max(map(len, self.secrets), default=0)
        self.window = -(-longest // STREAM_WINDOW_STEP) * STREAM_WINDOW_STEP
        self._held = ""

    def feed(self, piece: str) -> str:
        text = self._held + piece
        cut = max(0, len(text) - self.window)
        # A form that begins before the cut lies whole in ``text`` (the window covers the longest), so it
        # is released whole and scrubbed as :func:`scrub` would scrub the whole stream: the longest form
        # found there wins, never a shorter one that a longer, still-arriving form begins with.
        for secret in self.secrets:
            start = text.find(secret, max(0, cut - len(secret) + 1))
            while start != -1 and start < cut:
                cut = max(cut, start + len(secret))
                start = text.find(secret, start + 1)
        self._held = text[cut:]
        return self._scrub(text[:cut])

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:  # exactly these strings (longest first): the window was sized for them
            if secret in text:
                text = text.replace(secret, "***")
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


_remembered: set[str] = set()
_remembered_lock = threading.Lock()


def remember_secrets(values: Iterable[str]) -> None:
    """Keep ``values`` (a job's credentials) for the rest of the process, for :func:`scrubbed_traceback`:
    a traceback printed after the job ended (``HYDRA_FULL_ERROR=1``) is scrubbed of them too. Strings
    only, never the model that held them (a local model's weights must be freed with it)."""
    with _remembered_lock:
        _remembered.update(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LEN)


def scrubbed_traceback(exc: BaseException) -> str:
    """``exc``'s traceback as Python prints it (chained causes included), scrubbed of every secret this
    process knows: the credentials jobs remembered (:func:`remember_secrets`), secret-named environment
    values, URL userinfo and credential query parameters. What a full-error mode may print."""
    text = "".join(traceback.format_exception(exc))
    with _remembered_lock:
        known = sorted(_remembered)
    return mask_urls(redact_env(scrub(text, known)))


def env_secret_values() -> list[str]:
    """The values of secret-named environment variables (what :func:`redact_env` scrubs), for a scrubber
    that needs them as a list (:class:`StreamScrubber`)."""
    return [
        v
        for k, v in os.environ.items()
        if len(v) >= MIN_ENV_SECRET_LEN and k not in _SHELL_ENV and is_secret_key(k)
    ]


# The shell's own variables whose names hold a secret word (``pwd``, as in ``?pwd=``): the working
# directory is no secret, and scrubbing it would garble every path in every log and stream.
_SHELL_ENV = frozenset({"PWD", "OLDPWD"})


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
    return scrub(text, env_secret_values())


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
            continue  # "${oc.env:KEY}", "Bearer ${oc.env:KEY}": names the secret without holding it
        masked = REDACTED if named else mask_urls(v)
        if masked != node[k]:
            node[k] = masked
            changed = True
    return changed
