"""What a request needs to know about the served model (:class:`ServeState`, kept on ``app.state.serve``).

Its own module so that :mod:`.app` (which imports :mod:`.routes` once fastapi is known to be there) and
:mod:`.routes` both import it without importing each other.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..model import runs_locally
from ..secrets import StreamScrubber, env_secret_values, scrub
from .batches import BatchStore
from .dispatch import Dispatcher
from .settings import ServerSettings, served_name, served_names

__all__ = ["BULK_BYTES", "ServeState", "context_length"]

BULK_BYTES = 64 * 1024  # a body this large is prepared in the bulk thread


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
    context_length: int | None = None  # the model's context in tokens (local models), for the 400 past it
    prep_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="modelfactory-prep")
    )  # parsing and length checks off the event loop, two at a time: request-sized work never blocks it
    bulk_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="modelfactory-prep-bulk")
    )  # the same for bodies of BULK_BYTES or more, one at a time: ordinary requests never queue behind them

    def pool_for(self, size: int) -> ThreadPoolExecutor:
        """The prep threads for request-sized work on ``size`` bytes: a megabyte of tools or a batch file
        goes to :attr:`bulk_pool`, so it cannot hold up the ordinary requests behind it."""
        return self.bulk_pool if size >= BULK_BYTES else self.prep_pool

    def secrets(self) -> list[str]:
        """What no client may see: the served model's credentials (an upstream API's key, its auth
        headers, its URL's userinfo, whatever env var each came from) and secret-named env values."""
        own = getattr(self.model, "secret_values", None)
        return [*(own() if callable(own) else []), *env_secret_values()]

    def redactor(self) -> Callable[[str], str]:
        """Scrubs :meth:`secrets` from a text: an upstream that echoes its key (in a reply, a tool call's
        arguments, an error) must not hand it to this server's clients."""
        secrets = self.secrets()
        return lambda text: scrub(text, secrets)

    def stream_scrubber(self) -> StreamScrubber:
        """:meth:`redactor` for a streamed reply: a key split across two chunks is caught too."""
        return StreamScrubber(self.secrets())

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
            is_local=runs_locally(model),
            default_max=getattr(spec, "max_new_tokens", None) or getattr(spec, "max_tokens", None),
            dispatcher=Dispatcher(model, settings),
            context_length=settings.max_context_tokens or context_length(model),
        )


def context_length(model: Any, load: bool = False) -> int | None:
    """The model's context in tokens, if it says. A local model tells once loaded: ``load`` allows that
    (a request would load it anyway); an app built before loading asks again at the first request."""
    loaded = getattr(model, "is_loaded", True)
    if not load and not (loaded() if callable(loaded) else loaded):
        return None
    try:
        n = getattr(model, "context_length", None)
    except Exception:  # a model that cannot tell: no check, as before
        return None
    return n if isinstance(n, int) and n > 0 else None
