"""Run the app with uvicorn: check the arguments and the address, load the model, serve until SIGTERM/SIGINT.

SIGTERM (or Ctrl-C) stops accepting connections, lets every request in flight finish (uvicorn's
graceful shutdown, then the batcher finishes its queue) and exits with status 0 (Ctrl-C: 130, as for every command).
"""
from __future__ import annotations

import signal
import socket
import sys

from edgekit.errors import EdgekitError

from .config import ServeConfig


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port`` (port 0: any free port), or one clear error."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise EdgekitError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise EdgekitError(f"cannot listen on {host}:{port}: {exc.strerror} (choose another --port)") from None
    return sock


def build_app(cfg: ServeConfig):
    """Load the model and return the ASGI app, for running it under another server (Ray Serve, gunicorn, ...).

    The app's lifespan starts the batcher; its shutdown lets the batcher finish its queue.

    >>> app = build_app(ServeConfig(artifact="out/minilm"))       # doctest: +SKIP
    >>> app.state.model.task                                      # doctest: +SKIP
    'feature-extraction'
    """
    from .app import create_app
    from .model import ServedModel

    return create_app(ServedModel.load(cfg), cfg)


def serve(cfg: ServeConfig, log_level: str = "info") -> None:
    """Serve ``cfg.artifact`` until stopped. Blocks.

    >>> serve(ServeConfig(artifact="out/minilm", port=8080))      # doctest: +SKIP
    """
    import uvicorn

    sock = bind(cfg.host, cfg.port)  # before loading: a busy port should not cost a model load
    try:
        app = build_app(cfg)
        model = app.state.model
        host, port = sock.getsockname()[:2]
        print(f"edgekit serve: {model.name} ({model.task}, {model.runtime} {model.precision}, up to "
              f"{model.max_length} tokens) on http://{host}:{port}", file=sys.stderr, flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=cfg.access_log,
                                               lifespan="on", timeout_graceful_shutdown=None))
        # uvicorn re-raises the signal that stopped it once it has drained; after SIGTERM that is a clean exit (0).
        previous = signal.signal(signal.SIGTERM, _exit_cleanly)
        try:
            server.run(sockets=[sock])
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        sock.close()


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)
