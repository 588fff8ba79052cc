"""Background threads in a process that forks: `with forksafe.busy():` around each piece of work.

The prefork pool's parent (`imagine-bot worker --pool prefork`) forks a child at start and again
whenever one dies. A forked child is a copy of the parent with only the forking thread in it: a
lock that another thread held at that moment stays held in the child, with no thread left to
release it. Seen in the SIGKILL test, about one run in ten under load: the new child stuck for
good on the module lock of `sqlalchemy.dialects.postgresql.dml`, which the parent's sweeper
thread was importing when the pool forked, so the job waited in the broker forever. An import, a
metric's lock, a C library's mutex — any of them will do.

So the parent's background threads (the recovery sweeper, the /metrics and /readyz server) do
each piece of work inside `busy()`, and an at-fork hook makes `os.fork()` wait until no thread is
inside and keeps new ones out until the fork is done. A thread that stays inside longer than
`wait_s` (a database that does not answer) is not waited for beyond that: the fork goes ahead and
says so in the log, because a worker that never replaces its children is worse.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

log = logging.getLogger(__name__)

WAIT_S = 30.0


class ForkGate:
    """Many threads may be busy at once; a fork waits for none to be, then holds them off."""

    def __init__(self, wait_s: float = WAIT_S) -> None:
        self.wait_s = wait_s
        self._cond = threading.Condition(threading.Lock())
        self._busy = 0
        self._forking = False
        ref = weakref.ref(self)
        os.register_at_fork(
            before=lambda: _call(ref, ForkGate._before_fork),
            after_in_parent=lambda: _call(ref, ForkGate._after_fork),
            after_in_child=lambda: _call(ref, ForkGate._after_fork_in_child),
        )

    @contextmanager
    def busy(self) -> Iterator[None]:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._cond.notify_all()

    def _before_fork(self) -> None:
        # Held across the fork (released in both processes after it): nobody enters or leaves.
        self._cond.acquire()
        self._forking = True
        deadline = time.monotonic() + self.wait_s
        while self._busy and (left := deadline - time.monotonic()) > 0:
            self._cond.wait(left)
        if self._busy:
            log.warning("forking while %d background thread(s) still busy after %.0f s", self._busy, self.wait_s)

    def _after_fork(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def _after_fork_in_child(self) -> None:
        # The busy threads were not copied into the child: nothing here is busy.
        self._busy = 0
        self._forking = False
        self._cond.release()


def _call(ref: weakref.ref[ForkGate], hook: Callable[[ForkGate], None]) -> None:
    gate = ref()
    if gate is not None:
        hook(gate)


_GATE = ForkGate()


def busy() -> AbstractContextManager[None]:
    """Work a fork must not cut in two (the process-wide gate)."""
    return _GATE.busy()
