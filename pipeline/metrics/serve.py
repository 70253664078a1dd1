"""The metrics of a process that has no web app (`pipeline run`, `pipeline worker`): served by
prometheus-client's own HTTP server on a thread, loopback by default."""

from __future__ import annotations

from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.metrics.collectors import registry_for
from pipeline.store.engine import engine_for

DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True, kw_only=True)
class MetricsServer:
    """A running metrics server; `close()` stops it."""

    host: str
    port: int
    server: WSGIServer
    thread: Thread

    @property
    def url(self) -> str:
        """Where the metrics are (any path answers; /metrics is the usual one)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class MetricsPortError(PipelineError):
    """The metrics server cannot listen where it was asked to."""


def serve_metrics(config: Config, *, port: int, host: str = DEFAULT_HOST) -> MetricsServer:
    """Serve the process and `pipeline_*` metrics of `config`'s state database on host:port (port
    0: a free one) until `close()`. Raises MetricsPortError (one line) if it cannot listen."""
    registry = registry_for(config, engine_for(config))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsPortError(f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); choose "
                               "another --metrics-port, or --metrics-host") from None
    return MetricsServer(host=host, port=server.server_port, server=server, thread=thread)
