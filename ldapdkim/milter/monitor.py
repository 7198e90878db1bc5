"""``MetricsSocket``: Prometheus text at ``/metrics`` and a health check at ``/healthz``.

A small threaded HTTP server beside the milter.  ``/metrics`` serves the
counters of :mod:`ldapdkim.metrics`, prometheus_client's process metrics
(CPU, memory, open files) and figures read from the running milter at
scrape time (open sessions, the directory view).  ``/healthz`` answers 200
while the milter accepts sessions and its view of the directory is no
older than ``DirectoryMaxStale``, 503 otherwise, with one line saying why:
a load balancer or an orchestrator can act on it, a person can read it.

Nothing here can change the milter: the server answers GET and HEAD only.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ldapdkim import __version__
from ldapdkim.model import DirectoryView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    """The milter's answer to ``/healthz``."""

    ok: bool
    why: str


def judge(accepting: bool, view: DirectoryView, max_stale: float) -> Health:
    """Healthy while sessions are accepted and the directory view is at most
    ``max_stale`` (``DirectoryMaxStale``) seconds old."""
    if not accepting:
        return Health(False, "not accepting sessions (stopping, or libmilter stopped)")
    if view.age is None:
        return Health(
            False,
            f"no directory view yet ({view.mode}: no server has answered and no saved "
            "replica was read)",
        )
    if view.age > max_stale:
        return Health(
            False,
            f"directory view is {view.age:.0f} s old, more than DirectoryMaxStale "
            f"{max_stale:g} s ({view.mode}, no server connected)",
        )
    age = "current" if view.age == 0 else f"{view.age:.0f} s old"
    return Health(True, f"ok: accepting sessions; directory view {age} ({view.mode})")


@dataclass(frozen=True)
class Figures:
    """What the running milter tells the monitor at each scrape."""

    sessions: int
    """SMTP connections open now."""
    view: DirectoryView
    health: Health


class _RuntimeCollector(Collector):
    """Gauges read from the running milter when Prometheus scrapes."""

    def __init__(self, figures: Callable[[], Figures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Any]:
        now = self._figures()
        view = now.view
        yield InfoMetricFamily("ldapdkim", "ldapdkim's version.", value={"version": __version__})
        yield GaugeMetricFamily("ldapdkim_sessions", "SMTP connections open now.", now.sessions)
        yield GaugeMetricFamily(
            "ldapdkim_healthy", "1 when /healthz answers 200, else 0.", int(now.health.ok)
        )
        mode = GaugeMetricFamily(
            "ldapdkim_directory_mode", "How the directory is read (1 for the current mode).",
            labels=["mode"],
        )  # fmt: skip
        for name in ("sync", "lookup", "memory"):
            mode.add_metric([name], int(view.mode == name))
        yield mode
        yield GaugeMetricFamily(
            "ldapdkim_directory_connected", "1 while a directory server is connected.",
            int(view.connected),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "ldapdkim_directory_view_age_seconds",
            "Seconds since the directory view was last known current (0 while connected; "
            "NaN when it never was).",
            _seconds(view.age),
        )
        yield GaugeMetricFamily(
            "ldapdkim_replica_entries", "Entries in the content-sync replica.", view.entries
        )
        yield GaugeMetricFamily(
            "ldapdkim_replica_last_sync_age_seconds",
            "Seconds since the replica was last synced (0 while syncing; NaN: never).",
            _seconds(view.sync_age),
        )


def _seconds(value: float | None) -> float:
    return math.nan if value is None else value


class _Registries:
    """The process-wide registry and the milter's scrape-time figures, as one."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self._registries = registries

    def collect(self) -> Iterator[Any]:
        for registry in self._registries:
            yield from registry.collect()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Single(WSGIServer):
    """One request at a time, in the caller's thread (a supervisor forks: no threads)."""

    allow_reuse_address = True
    timeout = 0.0


class _Single6(_Single):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log: Prometheus scrapes every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


Environ = dict[str, Any]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Monitor:
    """The HTTP server of ``MetricsSocket``: in a thread of its own, or (``multiprocess``)
    served by the caller's own loop (:meth:`fileno`, :meth:`handle`)."""

    def __init__(
        self,
        host: str,
        port: int,
        figures: Callable[[], Figures],
        *,
        multiprocess: Path | None = None,
    ) -> None:
        """``multiprocess``: the directory where worker processes count (a supervisor
        adds their files up, with its own process metrics); no thread is started."""
        own = CollectorRegistry(auto_describe=False)
        own.register(_RuntimeCollector(figures))
        if multiprocess is None:
            self._registry = _Registries(REGISTRY, own)
        else:
            workers = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(workers, path=str(multiprocess))  # type: ignore[no-untyped-call,unused-ignore]
            ProcessCollector(registry=own)
            self._registry = _Registries(workers, own)
        self._figures = figures
        server_class: type[WSGIServer]
        if multiprocess is None:
            server_class = _Server6 if ":" in host else _Server
        else:
            server_class = _Single6 if ":" in host else _Single
        self._server = make_server(
            host, port, self.app, server_class=server_class, handler_class=_QuietHandler
        )
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ldapdkim-metrics", daemon=True
        )
        self._threaded = multiprocess is None

    def start(self) -> None:
        if self._threaded:
            self._thread.start()
        log.info("metrics and health on http://%s/metrics and /healthz", self.address)

    def fileno(self) -> int:
        """The listening socket, for the caller's select()."""
        return self._server.fileno()

    def handle(self) -> None:
        """Answer one waiting request (the socket was readable)."""
        self._server.handle_request()

    @property
    def address(self) -> str:
        host = str(self._server.server_address[0])
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def close(self) -> None:
        if self._threaded:
            self._server.shutdown()
        self._server.server_close()

    def app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application: ``/metrics``, ``/healthz``, 404 for anything else."""
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", b"GET or HEAD only\n")
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body = generate_latest(self._registry)  # type: ignore[arg-type]
            return _answer(start_response, "200 OK", body, CONTENT_TYPE_LATEST)
        if path == "/healthz":
            health = self._figures().health
            status = "200 OK" if health.ok else "503 Service Unavailable"
            return _answer(start_response, status, f"{health.why}\n".encode())
        return _answer(start_response, "404 Not Found", b"try /metrics or /healthz\n")


def _answer(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
