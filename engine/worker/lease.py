"""A running job's lease: the proof that its worker is still alive.

A worker that claims a job stamps `heartbeat_at` on its row, and its `Heartbeat` thread renews the
stamp every few seconds for every job it is rendering. A claim (engine/worker/claiming.py) leaves
alone a job whose lease is live (`lease_live`) and adopts one whose lease ran out; the sweeper
(engine/worker/recovery.py) applies the same rule in SQL to put such jobs back on the queue.
Kept apart from the claim so the runtime, which owns one Heartbeat, need not import it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from engine.domain.types import GenerationStatus
from engine.store.db import Database, rowcount
from engine.store.models import Generation, utcnow

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews the lease of every job this process is rendering, from a thread of its own, so a
    render that spends minutes inside one model call still shows a live worker."""

    def __init__(self, db: Database, worker: str, interval_s: float) -> None:
        self.db = db
        self.worker = worker
        self.interval_s = interval_s
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, generation_ids: list[int]) -> Iterator[None]:
        with self._lock:
            self._held.update(generation_ids)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="imagine-heartbeat", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.difference_update(generation_ids)

    def beat(self) -> int:
        """Renew the held jobs' leases now; returns how many rows were renewed."""
        with self._lock:
            held = sorted(self._held)
        if not held:
            return 0
        return self.db.retrying(_renew_leases, held, self.worker, deadline_s=self.interval_s)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.beat()
            except Exception as error:  # noqa: BLE001 - the next beat tries again; the lease is long
                log.warning("heartbeat not written: %s", str(error).splitlines()[0][:200])


def _renew_leases(session: Session, generation_ids: list[int], worker: str) -> int:
    result = session.execute(
        update(Generation)
        .where(
            Generation.id.in_(generation_ids),
            Generation.worker == worker,
            Generation.status == str(GenerationStatus.RUNNING),
        )
        # updated_at stays: a heartbeat is not a change the delivery loop needs to look at.
        .values(heartbeat_at=utcnow(), updated_at=Generation.updated_at)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def lease_live(generation: Generation, lease_s: float, now: datetime | None = None) -> bool:
    """Whether the worker that last claimed this running job renewed its lease recently."""
    return beat_live(generation.heartbeat_at or generation.started_at, lease_s, now)


def beat_live(beat: datetime | None, lease_s: float, now: datetime | None = None) -> bool:
    """Whether a lease last renewed at `beat` is still live."""
    return beat is not None and beat > (now or utcnow()) - timedelta(seconds=lease_s)
