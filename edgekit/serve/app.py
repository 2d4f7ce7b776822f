"""The ASGI app: TEI's ``/embed`` and ``/predict``, OpenAI's ``/v1/embeddings``, ``/health``, ``/info``,
``/metrics``. Every refusal is a 4xx with a JSON body in the shape the route's clients parse (TEI's
``{"error", "error_type"}``, OpenAI's ``{"error": {"message", "type", ...}}``); nothing a client sends
can stop the server.

>>> app = create_app(ServedModel.load(cfg), cfg)          # doctest: +SKIP
>>> uvicorn.run(app, port=8080)                           # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import Batcher, BatcherClosed
from .config import ServeConfig
from .metrics import Metrics
from .model import ServedModel
from .schemas import (FIELD_HINTS, EmbedRequest, OpenAIEmbeddingRequest, PredictRequest, ServeError, openai_embeddings,
                      openai_error, predictions, tei_error)

log = logging.getLogger("edgekit.serve")

ROUTES = ("/embed", "/predict", "/v1/embeddings", "/v1/models", "/health", "/info", "/metrics")
CLASSIFY, EMBED = "text-classification", "feature-extraction"


def _route(path: str) -> str:
    """The metric label of a path: a known route, else "other" (so random paths cannot grow the label set)."""
    return path if path in ROUTES else "other"


class _Observe:
    """Pure ASGI middleware: counts every HTTP request by route and status and times it."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status, t0 = 500, time.perf_counter()

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = _route(scope["path"])
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - t0)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    """(status, kind, one line) for a body that is not JSON or does not match the request model."""
    errors = exc.errors()
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    if first["type"] == "json_invalid":
        where = first.get("ctx", {}).get("error", "")
        return 400, "invalid_json", f"the request body is not valid JSON{f' ({where})' if where else ''}"
    loc = [p for p in first["loc"] if p != "body"]
    field = str(loc[0]) if loc else None
    if field is None:
        return 422, "invalid_request", "the request body must be a JSON object, e.g. {\"inputs\": \"some text\"}"
    if first["type"] == "missing":
        return 422, "invalid_request", f"missing field '{field}'"
    hint = FIELD_HINTS.get(field)
    return 422, "invalid_request", f"'{field}' must be {hint}" if hint else f"'{field}': {first['msg']}"


def create_app(model: ServedModel, cfg: ServeConfig) -> FastAPI:
    """The app for one loaded model. Its lifespan starts the batcher and, at shutdown, lets it finish its queue."""
    metrics = Metrics(model=model.name, runtime=model.runtime, task=model.task, precision=model.precision)
    batcher = Batcher(model.run, cfg.max_batch, cfg.max_wait_ms, metrics)
    # A fast tokenizer is not safe to call from two threads at once ("Already borrowed"), so one thread
    # tokenises every request; it still overlaps with the session running on the batcher's thread.
    tokenizer_pool = ThreadPoolExecutor(1, thread_name_prefix="edgekit-tokenize")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.close)  # every queued input still gets its answer
            tokenizer_pool.shutdown(wait=True)

    app = FastAPI(title="edgekit serve", version="1", lifespan=lifespan)
    app.state.metrics, app.state.batcher, app.state.model = metrics, batcher, model
    app.add_middleware(_Observe, metrics=metrics)

    def error(request: Request, status: int, kind: str, message: str) -> JSONResponse:
        metrics.errors.labels(route=_route(request.url.path), kind=kind).inc()
        if request.url.path.startswith("/v1/"):
            body = openai_error(message, "invalid_request_error" if status < 500 else "server_error")
            body["error"]["code"] = kind
        else:
            body = tei_error(message, kind)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError):
        return error(request, exc.status, exc.kind, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error(request, *_validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"no route {request.method} {request.url.path}; routes: {', '.join(ROUTES)}" \
            if exc.status_code in (404, 405) else str(exc.detail)
        return error(request, exc.status_code, kind, message)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error(request, 500, "internal", f"internal error: {type(exc).__name__}: {exc}")

    def need(task: str, route: str) -> None:
        if model.task != task:
            other = "/predict" if model.task == CLASSIFY else "/embed or /v1/embeddings"
            raise ServeError(400, "wrong_task", f"{route} needs a {task} model; this server runs a {model.task} "
                             f"model ({model.name}): use {other}")

    def count(n: int) -> None:
        if n > cfg.max_inputs:
            raise ServeError(413, "too_many_inputs", f"{n} inputs in one request; this server takes at most "
                             f"{cfg.max_inputs} (--max-inputs)")

    async def tokenize(texts: Sequence[str], truncate: bool | None) -> list[np.ndarray]:
        count(len(texts))
        loop = asyncio.get_running_loop()
        trunc = cfg.auto_truncate if truncate is None else truncate
        return await loop.run_in_executor(tokenizer_pool, model.encode, list(texts), trunc)

    async def run(rows: list[np.ndarray], route: str) -> np.ndarray:
        try:
            out = await batcher.submit(rows)
        except BatcherClosed as exc:
            raise ServeError(503, "shutting_down", str(exc)) from None
        except ServeError:
            raise
        except Exception as exc:  # noqa: BLE001 - the session failed on these inputs
            raise ServeError(500, "inference_failed", f"the model failed on this request: {exc}") from None
        metrics.tokens.labels(route=route).inc(sum(len(r) for r in rows))
        return out

    @app.post("/embed")
    async def embed(req: EmbedRequest):
        """TEI: one vector per input, always a list of lists."""
        need(EMBED, "/embed")
        texts = [req.inputs] if isinstance(req.inputs, str) else req.inputs
        vectors = await run(await tokenize(texts, req.truncate), "/embed")
        if req.normalize:  # the artifact's embeddings are normalised already; this only guards other models
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return JSONResponse(vectors.tolist())

    @app.post("/predict")
    async def predict(req: PredictRequest):
        """TEI: every label with its score, best first; a list of such lists when ``inputs`` is a list."""
        need(CLASSIFY, "/predict")
        single = isinstance(req.inputs, str)
        texts = [req.inputs] if single else req.inputs
        logits = await run(await tokenize(texts, req.truncate), "/predict")
        rows = predictions(logits, model.labels or [], req.raw_scores)
        return JSONResponse(rows[0] if single else rows)

    @app.post("/v1/embeddings")
    async def openai_embed(req: OpenAIEmbeddingRequest):
        """OpenAI: ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage"}``."""
        need(EMBED, "/v1/embeddings")
        if req.dimensions is not None and req.dimensions != model.dim:
            raise ServeError(400, "invalid_dimensions", f"dimensions={req.dimensions}, but this model's "
                             f"embeddings have {model.dim}; leave it out or send {model.dim}")
        inp = req.input
        if isinstance(inp, str) or isinstance(inp[0], str):
            rows = await tokenize([inp] if isinstance(inp, str) else inp, None)
        else:
            ids = [inp] if isinstance(inp[0], int) else inp
            count(len(ids))
            rows = model.rows_from_ids(ids, cfg.auto_truncate)
        vectors = await run(rows, "/v1/embeddings")
        tokens = int(sum(len(r) for r in rows))
        return JSONResponse(openai_embeddings(vectors, req.encoding_format, model.name, tokens))

    @app.get("/v1/models")
    async def openai_models():
        return {"object": "list", "data": [{"id": model.name, "object": "model", "created": 0, "owned_by": "edgekit"}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model.name, "task": model.task, "runtime": model.runtime}

    @app.get("/info")
    async def info():
        return {**model.info(), "max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms,
                "max_client_batch_size": cfg.max_inputs, "auto_truncate": cfg.auto_truncate}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    return app
