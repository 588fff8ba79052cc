"""/metrics, /healthz and /readyz for every long-running process (bots and workers).

A small threaded HTTP server (the standard library's) in a daemon thread, so it answers
whatever the process's own event loop or render is doing:

- /healthz — liveness: 200 while the process runs.
- /readyz — readiness: runs each check (the database answers, the broker accepts a
  connection, a worker's model is loaded) and answers 200, or 503 with what failed, as JSON.
- /metrics — Prometheus text; `before_scrape` hooks refresh gauges that are read on demand
  (the queue depth from the database).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine import forksafe

if TYPE_CHECKING:  # for annotations only: this module imports its heavier dependencies lazily
    from celery import Celery

    from engine.store.db import Database

log = logging.getLogger(__name__)

Check = Callable[[], None]  # raises when not ready


class OpsServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        checks: dict[str, Check] | None = None,
        before_scrape: list[Callable[[], None]] | None = None,
        cache_s: float = 2.0,
    ) -> None:
        self.host = host
        self.port = port
        self.checks = dict(checks or {})
        self.before_scrape = list(before_scrape or [])
        self.cache_s = cache_s
        self._cached: tuple[float, bool, dict[str, str]] | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Run the checks (at most every cache_s seconds: probes can be frequent)."""
        with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self.cache_s:
                return self._cached[1], self._cached[2]
            results = {}
            for name, check in self.checks.items():
                try:
                    check()
                    results[name] = "ok"
                except Exception as error:  # noqa: BLE001 - any failure means "not ready"
                    results[name] = f"{type(error).__name__}: {error}"[:300]
            ready = all(v == "ok" for v in results.values())
            self._cached = (now, ready, results)
            return ready, results

    def metrics(self) -> bytes:
        for hook in self.before_scrape:
            try:
                hook()
            except Exception:  # noqa: BLE001 - a stale gauge beats a failed scrape
                log.warning("metrics hook failed", exc_info=True)
        return generate_latest()

    def start(self) -> OpsServer:
        ops = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                # A prefork worker's parent serves these while it forks children.
                with forksafe.busy():
                    self._get()

            def _get(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    ready, results = ops.readiness()
                    body = json.dumps({"ready": ready, "checks": results}).encode()
                    self._send(200 if ready else 503, body, "application/json")
                elif path == "/metrics":
                    self._send(200, ops.metrics(), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # probes every few seconds: keep the log quiet
                return None

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="imagine-ops", daemon=True).start()
        log.info("ops endpoints on http://%s:%d (/metrics /healthz /readyz)", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- checks shared by bots and workers ----------------------------------------------------------


def database_check(db: Database) -> Check:
    def check() -> None:
        from sqlalchemy import text

        with db.sync_engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    return check


def broker_check(celery_app: Celery, timeout_s: float = 2.0) -> Check:
    def check() -> None:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout_s)

    return check


def queue_depth_hook(db: Database) -> Callable[[], None]:
    """Refresh imagine_queue_depth from the database (jobs queued for the gpu queue)."""

    def refresh() -> None:
        from sqlalchemy import func, select

        from engine.metrics import QUEUE_DEPTH
        from engine.store.models import Generation

        with db.sync_engine.connect() as connection:
            queued = connection.execute(
                select(func.count()).select_from(Generation).where(Generation.status == "queued")
            ).scalar_one()
        QUEUE_DEPTH.labels(queue="gpu").set(queued)

    return refresh
