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

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

__all__ = [
    "REDACTED",
    "SECRET_WORDS",
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
    "scrub",
    "scrub_tree",
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
_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*):[^/?#@\s]*@")
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
    if any(d.strip().strip("'\"") not in _NULLS for d in _DEFAULT.findall(v)):
        return True
    return v not in _NULLS and not (v.startswith("${") and v.endswith("}"))


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
    """A URL that carries a credential: a password in ``user:password@``, or a secret-named query
    parameter with a value (``?sig=...``, ``?api_key=...``)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return False
    if password:
        return True
    return any(v and is_secret_key(k) for k, v in parse_qsl(parts.query, keep_blank_values=True))


def has_url_secret(text: str) -> bool:
    """True when some URL inside ``text`` carries a credential (see :func:`url_has_secret`)."""
    return any(url_has_secret(m.group(0)) for m in _URL.finditer(text))


def mask_url(url: str) -> str:
    """``url`` with the password of ``user:password@`` and the values of secret-named query parameters
    replaced by :data:`REDACTED`; the rest is kept as written (so the endpoint stays readable)."""
    if not url_has_secret(url):
        return url
    url = _PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", url, count=1)
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


def redact_env(text: str) -> str:
    """Scrub the values of secret-named environment variables (``*_API_KEY``, ``HF_TOKEN``, ...).

    SDKs read keys from the environment behind our back; their errors may echo them.
    """
    for name, value in os.environ.items():
        if len(value) >= MIN_ENV_SECRET_LEN and value in text and is_secret_key(name):
            text = text.replace(value, "***")
    return text


# --------------------------------------------------------------------------- mappings and configs


def redact_mapping(data: Any) -> Any:
    """A copy of ``data`` with the values of secret-named keys replaced by :data:`REDACTED` (empty ones
    kept, so "not set" stays visible), every ``SecretStr`` shown as :data:`REDACTED` (or ``""``), and
    credentials inside URLs masked (:func:`mask_urls`)."""
    if isinstance(data, str):
        return mask_urls(data)
    if callable(getattr(data, "get_secret_value", None)):  # pydantic's SecretStr, without importing it
        return REDACTED if data.get_secret_value() else ""
    if isinstance(data, Mapping):
        return {
            k: (REDACTED if is_secret_key(str(k)) and v not in (None, "") else redact_mapping(v))
            for k, v in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [redact_mapping(v) for v in data]
    return data


def mask_config_secrets(node: Any) -> bool:
    """Mask, in place, the literal values of secret-named keys in a plain (dict/list) config, and
    credentials inside literal URLs; an interpolation (``${oc.env:KEY}``) is kept, since it names the
    secret without holding it. True if anything was masked."""
    changed = False
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return False
    for k, v in items:
        if isinstance(v, (dict, list)):
            changed |= mask_config_secrets(v)
            continue
        if not isinstance(v, str) or "${" in v or not is_literal(v):
            continue
        named = isinstance(node, dict) and is_secret_key(str(k))
        masked = REDACTED if named else mask_urls(v)
        if masked != v:
            node[k] = masked
            changed = True
    return changed
