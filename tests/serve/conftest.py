"""A tiny random-weight artifact served for real: uvicorn on a free loopback port, in a thread of the test process."""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass

import pytest

from serve_common import CLS_LABELS, MAX_INPUTS, MAX_LENGTH


@pytest.fixture(scope="session")
def fe_artifact(tmp_path_factory):
    from edgekit.api import export

    return export("tiny-bert", tmp_path_factory.mktemp("serve") / "fe", formats="onnx", progress=False).root


@pytest.fixture(scope="session")
def cls_artifact(tmp_path_factory):
    from edgekit.api import export

    root = export("tiny-bert-cls", tmp_path_factory.mktemp("serve") / "cls", formats="onnx", progress=False).root
    # manifest.json is not among the hashed files, so naming the classes keeps the artifact valid
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["labels"] = CLS_LABELS
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


@dataclass
class Running:
    url: str
    model: object  # the ServedModel: its session is the reference the tests compare with
    cfg: object


def _start(artifact, **overrides):
    import uvicorn

    from edgekit.serve import ServeConfig, build_app

    opts = dict(artifact=artifact, runtime="onnxruntime", threads=1, max_batch=8, max_wait_ms=50.0,
                max_inputs=MAX_INPUTS, max_length=MAX_LENGTH)
    cfg = ServeConfig.create(**{**opts, **overrides})
    app = build_app(cfg)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return server, thread, Running(f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.model, cfg)


@pytest.fixture(scope="module")
def fe_server(fe_artifact):
    server, thread, running = _start(fe_artifact)
    yield running
    server.should_exit = True
    thread.join(20)


@pytest.fixture(scope="module")
def cls_server(cls_artifact):
    server, thread, running = _start(cls_artifact)
    yield running
    server.should_exit = True
    thread.join(20)


@pytest.fixture(scope="session")
def texts():
    """Real sentences of different lengths (3 to 14 words, all under MAX_LENGTH tokens) from bbc-news test articles."""
    from edgekit.data import load_dataset

    arts = load_dataset("bbc-news", "test").texts[:12]
    return [" ".join(a.split()[: 3 + i]) for i, a in enumerate(arts)]
