r"""Command-line overrides and saved configs: keep secrets out of what Hydra writes to disk.

Hydra writes every override in clear to ``.hydra/overrides.yaml``, ``config.yaml``, ``hydra.yaml``,
``multirun.yaml`` and launcher logs. So a key typed on the command line is refused *before* Hydra starts
(with the env var to use instead), and a key written literally in a config file is masked in Hydra's
saved copy.

Hydra's command-line grammar passes backslashes through (``'stop_sequences=["\n"]'`` arrives as a
backslash and an ``n``), so :func:`unescape` turns ``\n``, ``\t``, ``\r`` and ``\\`` in stop sequences into
the characters they name: a blank-line stop can be typed on the command line.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .secrets import (
    ENV_CONTAINERS,
    HEADER_CONTAINERS,
    holds_credential,
    is_credential,
    mask_config_secrets,
    override_secrets,
)

__all__ = ["mask_job_config", "refusal_message", "scrub_saved_config", "secret_overrides", "unescape"]

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_ESCAPE = re.compile(r"\\([ntr\\])")


def unescape(text: str) -> str:
    r"""``\n``, ``\t``, ``\r`` and ``\\`` as typed on a command line -> newline, tab, CR, backslash; any
    other backslash stays as it is."""
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group(1)], text)


def secret_overrides(args: list[str]) -> list[str]:
    """The command-line overrides that carry a secret in clear (their keys, never their values).

    Each override is read by Hydra's own parser, as Hydra will read it, so no nesting, quoting or sweep
    (``client_kwargs={default_headers: {X-Custom: K}}``, ``api_key='K'``, ``a,b``) reads one way here and
    another there; and by the plain-text rule as well (the only one when the parser refuses the text:
    Hydra would then print the override, key and all, in its error)."""
    found = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        raw, value = arg.split("=", 1)
        if override_secrets(raw, value) or _parsed_secrets(arg):
            found.append(raw)
    return found


def _parsed_secrets(arg: str) -> bool:
    """Whether ``arg``, parsed as Hydra parses it, holds a credential (:func:`holds_credential`). A dict
    or list the parser refuses is refused here when it names a header or ``env_set`` mapping (where any
    value is a credential): Hydra's parse error would print it whole. (A plain value it refuses was
    judged by the text rule already.)"""
    parser = _parser()
    if parser is None:  # pragma: no cover - run.py needs Hydra; the text rule still applies
        return False
    try:
        override = parser.parse_override(arg)
    except Exception:
        value = arg.split("=", 1)[1].lstrip()
        return value[:1] in ("{", "[") and any(w in value for w in (*HEADER_CONTAINERS, *ENV_CONTAINERS))
    if override.value_type is None:  # ~key: a deletion holds no value
        return False
    return holds_credential(override.key_or_group, _plain(override.value()))


@functools.cache
def _parser() -> Any:
    """Hydra's override parser, made once (Hydra makes its own again: this costs ~1 ms more per run)."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
    except ImportError:  # pragma: no cover
        return None
    return OverridesParser.create()


def _plain(value: Any) -> Any:
    """A parsed override value as mappings, lists and scalars: a sweep (``a,b``, ``choice(a,b)``) as
    the list of its choices, ``glob(...)`` as its patterns, a range or interval (numbers) as nothing."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    choices = getattr(value, "list", None)  # ChoiceSweep
    if isinstance(choices, list):
        return [_plain(v) for v in choices]
    include = getattr(value, "include", None)  # Glob
    if isinstance(include, list):
        return [_plain(v) for v in [*include, *(getattr(value, "exclude", None) or [])]]
    return None


def _first(conf_dirs: Sequence[Path], relative: str) -> Path | None:
    """The file Hydra would read: the first config dir that has it (the user's before the shipped)."""
    return next((d / relative for d in conf_dirs if (d / relative).is_file()), None)


def _default_model(conf_dirs: Sequence[Path]) -> str | None:
    """The model config the app's ``config.yaml`` chooses in its defaults list (``- model: <name>``)."""
    import yaml

    path = _first(conf_dirs, "config.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path else None
    except (OSError, yaml.YAMLError):
        return None
    defaults = data.get("defaults") if isinstance(data, dict) else None
    for entry in defaults if isinstance(defaults, list) else []:
        name = entry.get("model") if isinstance(entry, dict) else None
        if isinstance(name, str) and name:
            return name
    return None


def _model_names(args: list[str], conf_dirs: Sequence[Path]) -> list[str]:
    """The model configs a command line runs: its ``model=`` choices, else the config's default."""
    names = [a.split("=", 1)[1] for a in args if a.startswith(("model=", "+model=", "++model="))]
    if not names:
        default = _default_model(conf_dirs)
        names = [default] if default else []
    out = []
    for value in names:
        out += [n for n in re.split(r"[\s,()\[\]]+", value) if n and n not in ("choice", "glob")]
    return out


def _env_var_for(model_name: str, key: str, args: list[str], conf_dirs: Sequence[Path]) -> str | None:
    """The environment variable the backend of ``model/<model_name>.yaml`` reads for ``key``."""
    path = _first(conf_dirs, f"model/{model_name}.yaml")
    field = key.rsplit(".", 1)[-1]
    if path is None or not key.startswith("model.") or key.count(".") != 1:
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None
    current = data.get(field)
    if isinstance(current, str):
        match = re.search(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)", current)
        if match:
            return match.group(1)
    spec = _registered_spec(str(data.get("_target_", "")))
    if spec is None:
        return None
    config = {**data, **_model_overrides(args)}
    var: str | None = spec.env_var_for(field, config)
    return var


def _registered_spec(target: str) -> Any:
    """The spec class of a registered backend (never a user's class: nothing else is imported here)."""
    from .backends.registry import backend_path

    path = backend_path(target)
    if path is None:
        return None
    from .factory import locate_target

    cls, problems = locate_target(path)
    return None if problems else getattr(cls, "Spec", None)


def _model_overrides(args: list[str]) -> dict[str, str]:
    """``model.<field>=<value>`` overrides as typed (values unparsed)."""
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.startswith("model.") and key.count(".") == 1:
            out[key.removeprefix("model.")] = value
    return out


def refusal_message(keys: list[str], args: list[str], conf_dir: Path | Sequence[Path]) -> str:
    """What to do instead, per refused override: the env var the chosen model's backend reads.
    ``conf_dir``: the config dir, or the dirs in Hydra's search order (the user's, then the shipped)."""
    conf_dirs = [conf_dir] if isinstance(conf_dir, Path) else list(conf_dir)
    lines = [
        "error: refusing a secret on the command line: "
        + ", ".join(f"{k.lstrip('+~')}=<hidden>" for k in keys)
        + ". Hydra would write it in clear to .hydra/overrides.yaml, .hydra/config.yaml, .hydra/hydra.yaml,"
        " multirun.yaml and the launcher's logs."
    ]
    for raw in keys:
        key = raw.lstrip("+~")
        if key.startswith("hydra.job.env_set."):
            name = key.rsplit(".", 1)[-1]
            lines.append(f"  fix: export {name}=... (or put the line {name}=... in ./.env) instead")
            continue
        value = next((a.split("=", 1)[1] for a in args if a.split("=", 1)[0] == raw), "")
        if "${" in value:  # a value inside an interpolation: ${oc.env:UNSET,<key>}, ${oc.decode:<key>}
            lines.append(
                f"  fix: an interpolation that holds the value (a default in ${{oc.env:VAR,...}}, "
                f"${{oc.decode:...}}) is the value in clear; give {key} only ${{oc.env:VAR}}"
            )
            continue
        if value.lstrip().startswith("{"):  # a dict holding a key or a credential header
            lines.append(
                f"  fix: take the credentials out of {key}={{...}}; set each one from the environment, "
                f"e.g. export MY_KEY=... and ++{key}.<name>='${{oc.env:MY_KEY}}'"
            )
            continue
        if not is_credential(key):  # a credential inside a URL (user:password@, ?sig=...)
            lines.append(
                f"  fix: take the credentials out of {key}; give the key through the environment, "
                "e.g. export MY_KEY=... and model.api_key='${oc.env:MY_KEY}'"
            )
            continue
        for name in _model_names(args, conf_dirs):
            var = _env_var_for(name, key, args, conf_dirs)
            if var:
                lines.append(
                    f"  fix (model={name}): export {var}=... (or put the line {var}=... in ./.env) "
                    f"and drop {key}=... from the command line"
                )
        lines.append(
            f"  fix (any model): export MY_KEY=... (or MY_KEY=... in ./.env), then ++{key}='${{oc.env:MY_KEY}}'"
        )
    return "\n".join(lines)


def scrub_saved_config(path: Path) -> bool:
    """A key written literally in a config *file* lands in Hydra's saved copy: mask it there."""
    if not path.is_file():
        return False
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not mask_config_secrets(data):
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # parallel jobs may scrub the same file
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(data)), encoding="utf-8")
    os.replace(tmp, path)
    return True


def mask_job_config(cfg: Any) -> bool:
    """Mask, in place, the literal credentials of a job's config (a ``DictConfig``) once the job is done.

    Why: Hydra hands the task function the very object it returns as the job's ``JobReturn.cfg``, which
    a launcher sends back to the sweep: submitit pickles it into ``*_result.pkl`` beside the sweep, Ray
    through its object store. A key written literally in a config file must not travel with it.
    Interpolations (``${oc.env:KEY}``) stay: they name the secret without holding it."""
    from omegaconf import OmegaConf, open_dict, read_write

    data = OmegaConf.to_container(cfg, resolve=False)
    before = copy.deepcopy(data)
    if not mask_config_secrets(data):
        return False
    with read_write(cfg), open_dict(cfg):
        for path, value in _changed(before, data):
            node = cfg
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = value
    return True


def _changed(before: Any, after: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """The leaves where ``after`` differs from ``before`` (same shape): their key paths and new values."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [c for k in before for c in _changed(before[k], after[k], (*path, k))]
    if isinstance(before, list) and isinstance(after, list):
        return [
            c for i, (b, a) in enumerate(zip(before, after, strict=True)) for c in _changed(b, a, (*path, i))
        ]
    return [] if before == after else [(path, after)]
