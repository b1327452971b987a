"""The FastAPI app serving one model: its assembly, with the model's :class:`~.state.ServeState` kept on
``app.state.serve``. The route handlers are in :mod:`.routes`."""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..errors import MissingDependencyError
from .dispatch import Dispatcher
from .settings import ServerSettings
from .state import ServeState

__all__ = ["ServeState", "create_app", "import_deps"]


def create_app(model: Any, settings: ServerSettings | None = None) -> Any:
    """A FastAPI app serving ``model`` (needs ``modelfactory[serve]``)."""
    import_deps()
    from fastapi import FastAPI

    from . import (
        batch_routes,
        completion_routes,
        routes,
    )  # they import fastapi: only once the dependency check has passed

    state = ServeState.for_model(model, settings or ServerSettings())
    app = FastAPI(title="modelfactory", lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    app.state.dispatcher = state.dispatcher  # the names read before ServeState existed
    app.state.served_name = state.name
    routes.install(app)
    batch_routes.install(app)  # the Files + Batches API
    completion_routes.install(app)  # /v1/completions and /v1/embeddings (local models)
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
        app.state.serve.prep_pool.shutdown(wait=False, cancel_futures=True)
        app.state.serve.bulk_pool.shutdown(wait=False, cancel_futures=True)


def import_deps() -> None:
    """fastapi and uvicorn, or a :class:`MissingDependencyError` naming the extra that brings them."""
    for package in ("fastapi", "uvicorn"):
        try:
            __import__(package)
        except ImportError:
            raise MissingDependencyError(package, "serve", "modelfactory serve") from None
