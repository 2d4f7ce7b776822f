"""`edgekit serve` from the command line: arguments checked before any loading, and SIGTERM drains in-flight requests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from edgekit.cli import main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("edgekit: error: ")
    return err


def test_help_lists_serve(capsys):
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--runtime", "--threads", "--max-batch", "--max-wait-ms", "--auto-truncate"):
        assert flag in out


@pytest.mark.parametrize("args, code, match", [
    (["/no/such/dir"], 2, "no such folder: /no/such/dir"),
    (["{tmp}"], 2, "is not an edgekit artifact (no manifest.json)"),
    (["{fe}", "--runtime", "tensorrt"], 2, "unknown runtime 'tensorrt'; allowed: torch, onnxruntime"),
    (["{fe}", "--runtime", "native"], 2, "runtime 'native' needs the 'native' format"),
    (["{fe}", "--port", "70000"], 2, "70000 is not in the range 0<=x<=65535"),
    (["{fe}", "--max-batch", "0"], 2, "0 is not in the range x>=1"),
    (["{fe}", "--max-length", "100000", "--port", "0"], 2, "longer than the model's maximum of 512 tokens"),
])
def test_bad_arguments_are_one_line(capsys, tmp_path, fe_artifact, args, code, match):
    args = [a.replace("{tmp}", str(tmp_path)).replace("{fe}", str(fe_artifact)) for a in args]
    assert main(["serve", *args]) == code
    assert match in _one_line_error(capsys)


def test_busy_port_fails_before_loading(capsys, fe_artifact, monkeypatch):
    import edgekit.serve.model as served

    def no_load(cfg):
        raise AssertionError("the model was loaded although the port is busy")

    monkeypatch.setattr(served.ServedModel, "load", classmethod(lambda cls, cfg: no_load(cfg)))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(fe_artifact), "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in _one_line_error(capsys)


def test_sigterm_lets_requests_in_flight_finish(fe_artifact):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    # a long batching window keeps the requests in flight while SIGTERM arrives
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "serve", str(fe_artifact), "--port", str(port),
                             "--runtime", "onnxruntime", "--threads", "1", "--max-wait-ms", "3000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.2)
        replies: dict[int, tuple[int, float]] = {}

        def ask(i):
            r = httpx.post(f"{url}/embed", json={"inputs": f"request number {i}"}, timeout=60)
            replies[i] = (r.status_code, time.monotonic())

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.7)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert sorted(replies) == [0, 1, 2, 3]
    assert all(status == 200 for status, _ in replies.values()), replies
    assert all(done > stopped for _, done in replies.values())  # they were answered after the signal
    assert code == 0, err
    assert "Traceback" not in err
