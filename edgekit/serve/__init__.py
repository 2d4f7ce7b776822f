"""``edgekit serve``: an artifact behind HTTP, with dynamic batching and the routes clients already speak.

- ``POST /embed``, ``POST /predict``: Hugging Face text-embeddings-inference's requests and responses.
- ``POST /v1/embeddings``: OpenAI's, so the ``openai`` client (and what is built on it) works unchanged.
- ``GET /health``, ``GET /info``, ``GET /metrics`` (Prometheus text, names start with ``edgekit_``).

Modules: :mod:`.config` (the validated settings), :mod:`.model` (artifact -> session + tokenizer),
:mod:`.batcher` (dynamic batching on one worker thread), :mod:`.schemas` (wire format),
:mod:`.metrics`, :mod:`.app` (routes and errors), :mod:`.server` (uvicorn, signals).

>>> from edgekit.serve import ServeConfig, serve
>>> serve(ServeConfig(artifact="out/minilm", port=8080, max_batch=32))      # doctest: +SKIP
"""
from __future__ import annotations

from .config import ServeConfig
from .server import build_app, serve

__all__ = ["ServeConfig", "build_app", "serve"]
