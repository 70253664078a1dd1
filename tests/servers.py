"""Real servers for tests: our ASGI apps under uvicorn in a thread, and waiting for /healthz."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import uvicorn

from tests.smtp_sink import free_port


def wait_healthy(base: str, alive: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until GET base/healthz answers "ok"; fail if `alive()` turns False first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert alive(), "the server stopped before answering /healthz"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).text == "ok":
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{base}/healthz did not answer within {timeout}s")


class AppServers:
    """Starts ASGI apps on free loopback ports; `stop()` shuts them all down."""

    def __init__(self) -> None:
        self.running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(self, app: Any) -> str:
        """Serve `app` (it must answer GET /healthz) and return its base URL."""
        return self.run(uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(),
                                                      log_level="warning")))

    def run(self, server: uvicorn.Server) -> str:
        """Run a server built the way a command builds it (on its config's loopback host and port;
        its app must answer GET /healthz) and return its base URL."""
        assert server.config.host.startswith("127."), "tests serve on loopback only"
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        self.running.append((server, thread))
        base = f"http://{server.config.host}:{server.config.port}"
        wait_healthy(base, thread.is_alive)
        return base

    def stop(self) -> None:
        for server, _ in self.running:
            server.should_exit = True
        for _, thread in self.running:
            thread.join(timeout=10)
            assert not thread.is_alive(), "the uvicorn thread did not stop"
