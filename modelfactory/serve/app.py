"""The FastAPI app serving one model: what a request needs to know about it (:class:`ServeState`, kept on
``app.state.serve``) and the app's assembly. The route handlers are in :mod:`.routes`."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import MissingDependencyError
from .batches import BatchStore
from .dispatch import Dispatcher
from .settings import ServerSettings, served_name, served_names

__all__ = ["ServeState", "create_app", "import_deps"]


@dataclass
class ServeState:
    """The served model and what the routes read about it, computed once per app."""

    model: Any
    settings: ServerSettings
    name: str  # what clients send as `model` / use as the Azure deployment; replies carry it
    names: tuple[str, ...]  # every name it answers to: `name` first, then server.aliases
    key: str | None  # the API key requests must carry; None: no key
    is_local: bool  # its failures are ours (500), not an upstream's (502)
    default_max: int | None  # the model's own max tokens: a reply that long finished for "length"
    dispatcher: Dispatcher
    batches: BatchStore = field(default_factory=BatchStore)  # the Files + Batches API's files and batches

    def serves(self, name: str) -> bool:
        return name in self.names

    def described(self) -> str:
        """``'tiny-llama'``, or ``'tiny-llama' (also 'transformers_tiny')``: for messages."""
        also = ", ".join(f"'{n}'" for n in self.names[1:])
        return f"'{self.name}'" + (f" (also {also})" if also else "")

    @classmethod
    def for_model(cls, model: Any, settings: ServerSettings) -> "ServeState":
        spec = getattr(model, "spec", None)
        return cls(
            model=model,
            settings=settings,
            name=served_name(model, settings),
            names=served_names(model, settings),
            key=settings.key(),
            is_local=callable(getattr(model, "generate_batch", None)) or hasattr(model, "runtime"),
            default_max=getattr(spec, "max_new_tokens", None) or getattr(spec, "max_tokens", None),
            dispatcher=Dispatcher(model, settings),
        )


def create_app(model: Any, settings: ServerSettings | None = None) -> Any:
    """A FastAPI app serving ``model`` (needs ``modelfactory[serve]``)."""
    import_deps()
    from fastapi import FastAPI

    from . import routes  # imports fastapi itself: only once the dependency check has passed

    state = ServeState.for_model(model, settings or ServerSettings())
    app = FastAPI(title="modelfactory", lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    app.state.dispatcher = state.dispatcher  # the names read before ServeState existed
    app.state.served_name = state.name
    routes.install(app)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """The dispatcher's batch worker lives on the server's event loop, from start-up to shutdown."""
    dispatcher: Dispatcher = app.state.serve.dispatcher
    await dispatcher.start()
    try:
        yield
    finally:
        await dispatcher.stop()


def import_deps() -> None:
    """fastapi and uvicorn, or a :class:`MissingDependencyError` naming the extra that brings them."""
    for package in ("fastapi", "uvicorn"):
        try:
            __import__(package)
        except ImportError:
            raise MissingDependencyError(package, "serve", "modelfactory serve") from None
