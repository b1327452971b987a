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
    "is_literal",
    "is_secret_key",
    "mask_config_secrets",
    "mask_url",
    "mask_urls",
    "redact_env",
    "redact_mapping",
    "scrub",
    "url_has_secret",
]

REDACTED = "**********"
# A secret-looking name contains one of these (after the exceptions below are taken out).
SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "authorization", "credential", "cookie")
# ... or has one of these as a whole word (too short or too common to match inside other words).
_SECRET_PARTS = frozenset({"sig", "signature"})
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


def is_literal(value: str) -> bool:
    """A value typed in clear: not empty or null, not an ``${oc.env:...}``-style interpolation."""
    v = value.strip().strip("'\"")
    return v not in ("", "null", "None", "~") and not (v.startswith("${") and v.endswith("}"))


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
