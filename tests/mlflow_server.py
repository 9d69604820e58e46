"""A real `mlflow server` on 127.0.0.1 (a free port) over a store, for tests that browse runs as a user does."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.request

from conftest import BIN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(store_uri: str, timeout_s: float = 120):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            store_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"mlflow server did not answer at {url}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def rest(url: str, endpoint: str, body: dict | None = None, query: str = "") -> dict:
    """One MLflow REST call: GET with a query string, or POST with a JSON body."""
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{endpoint}{query}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"content-type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
