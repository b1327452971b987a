"""What every experiment tracker is: the :class:`Tracker` interface, the ``tracking`` settings, the run
state a tracker keeps in the sweep and job dirs, and what is logged as a job's params (redacted).

The trackers (:mod:`.mlflow`, :mod:`.wandb`) subclass :class:`Tracker`; the choice between them and the
Hydra callback that drives them live above them, in :mod:`modelfactory.tracking.callback`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf

__all__ = ["Tracker", "job_params", "read_state", "tracking_settings"]

BACKENDS = ("mlflow", "wandb")
STATE_DIR = ".tracking"
SWEEP_FILES = ("summary.csv", "summary.md", "report.html")


class Tracker(ABC):
    """One tracking backend. Holds a client and, between ``start_job`` and ``end_job``, the live job run.

    States are small JSON-able dicts (run ids, never a URI or a key) saved in the sweep and job dirs.
    """

    name: ClassVar[str]

    def __init__(self, settings: Mapping[str, Any], project_dir: Path) -> None:
        self.settings = settings
        self.project_dir = project_dir

    @abstractmethod
    def start_sweep(
        self, name: str, params: dict[str, str], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Open (or, with ``previous``, continue) the sweep's parent run; return its state."""

    @abstractmethod
    def end_sweep(
        self,
        state: dict[str, Any],
        name: str,
        params: dict[str, str],
        metrics: dict[str, float],
        files: list[Path],
    ) -> None:
        """Log the sweep's totals and files on the parent run and close it."""

    @abstractmethod
    def start_job(
        self,
        name: str,
        params: dict[str, str],
        tags: dict[str, str],
        parent: dict[str, Any] | None,
        previous: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Open the job's run under ``parent`` (or continue ``previous``); return its state."""

    @abstractmethod
    def end_job(
        self, state: dict[str, Any], metrics: dict[str, float], step: int, files: list[Path], failed: bool
    ) -> None:
        """Log the job's metrics (at ``step``: the job's run count) and files, then close its run."""


def tracking_settings(config: DictConfig) -> dict[str, Any] | None:
    """``config.tracking`` as a plain dict, or None when tracking is off (``tracking=none``)."""
    node = config.get("tracking") if isinstance(config, DictConfig) else None
    if node is None:
        return None
    settings = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else None
    if not isinstance(settings, dict) or settings.get("backend") in (None, "none", False):
        return None
    return {str(k): v for k, v in settings.items()}


# ------------------------------------------------------------------------------------------ state files


def _state_path(directory: Path, backend: str) -> Path:
    return directory / STATE_DIR / f"{backend}.json"


def read_state(directory: str | Path, backend: str) -> dict[str, Any] | None:
    """The run state a backend saved in a sweep or job dir (None if none or unreadable)."""
    try:
        data = json.loads(_state_path(Path(directory), backend).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_state(directory: Path, backend: str, state: dict[str, Any]) -> None:
    from ..job.record import write_atomic

    write_atomic(_state_path(directory, backend), json.dumps(state, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ what is logged


def _clean(value: Any) -> str:
    """A param value as text: secret-looking environment values and URL credentials masked."""
    from ..secrets import mask_urls, redact_env

    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return mask_urls(redact_env(text))  # the one URL rule (userinfo, token query params) of secrets


def _flatten(prefix: str, node: Any, out: dict[str, str]) -> None:
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            _flatten(f"{prefix}.{key}", value, out)
    else:
        out[prefix] = _clean(node)


def _override_params(config: DictConfig) -> dict[str, str]:
    """The task overrides (the job's, or the sweep's lists) as params, through the project's redaction:
    a value is parsed as Hydra parses it, so a secret-looking key is masked even inside a dict value
    (``++model.default_headers={Authorization: ...}``); interpolations stay unresolved text. Tracking's
    own settings are not params of a job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ..secrets import redact_mapping

    raw = OmegaConf.select(config, "hydra.overrides.task", default=None) or []
    parser = OverridesParser.create()
    params: dict[str, str] = {}
    for text in (str(o) for o in raw):
        key, _, value_text = text.partition("=")
        key = key.lstrip("+~")
        if key == "tracking" or key.startswith("tracking."):
            continue
        value: Any = value_text
        try:
            override = parser.parse_overrides([text])[0]
            if not override.is_sweep_override():
                value = override.value()
        except Exception:  # not Hydra's grammar (cannot happen for a job that ran): keep the text
            pass
        params[key] = _clean(redact_mapping({key: value})[key])
    return params


def job_params(config: DictConfig) -> dict[str, str]:
    """What a tracker logs as the job's params: the model config as written (interpolations such as
    ``${oc.env:VAR}`` unresolved, so a key read from the environment is never read here), flattened as
    ``model.<field>``, secret-looking fields masked by the project's redaction, then the job's overrides
    (``model=...``, ``generation.temperature=...``), masked the same way."""
    from ..secrets import redact_mapping

    params: dict[str, str] = {}
    model = config.get("model") if isinstance(config, DictConfig) else None
    if isinstance(model, DictConfig):
        _flatten("model", redact_mapping(OmegaConf.to_container(model, resolve=False)), params)
    params.update(_override_params(config))
    return params
