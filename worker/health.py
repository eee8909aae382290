"""Liveness, readiness and the Prometheus endpoint on one small HTTP server.

``/healthz``: the run loop turned recently. ``/readyz``: the worker can decide
(state complete and current). ``/metrics``: the injected registry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.config import HttpSettings
from worker.metrics import Metrics

logger = logging.getLogger(__name__)

LIVENESS_STALE_SECONDS = 60.0


class Health:
    """Thread-safe liveness and readiness flags set by the run loops."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._lock = threading.Lock()
        self._ready = False
        self._reason = "starting"
        self._alive_at = time.monotonic()

    def mark_alive(self) -> None:
        self._alive_at = time.monotonic()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        with self._lock:
            if ready != self._ready:
                self._metrics.state_ready.set(1 if ready else 0)
            self._ready = ready
            self._reason = reason

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            return self._ready, self._reason

    def seconds_since_alive(self) -> float:
        return time.monotonic() - self._alive_at

    def alive(self) -> bool:
        return self.seconds_since_alive() < LIVENESS_STALE_SECONDS


class HealthServer:
    """Serves /metrics, /healthz and /readyz in a daemon thread."""

    def __init__(self, *, settings: HttpSettings, health: Health, metrics: Metrics) -> None:
        health_ref, registry = health, metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    alive = health_ref.alive()
                    self._json(200 if alive else 503, {"alive": alive})
                elif self.path == "/readyz":
                    ready, reason = health_ref.readiness()
                    self._json(200 if ready else 503, {"ready": ready, "reason": reason})
                else:
                    self._json(404, {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]})

            def _json(self, status: int, body: dict[str, Any]) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                return None  # scrapes every few seconds would drown the worker's own logs

        self._server = ThreadingHTTPServer((settings.host, settings.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="sendgate-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> HealthServer:
        self._thread.start()
        host = self._server.server_address[0]
        logger.info("serving /metrics /healthz /readyz", extra={"address": f"{host!s}:{self.port}"})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
