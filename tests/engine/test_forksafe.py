"""The fork gate: a fork never copies a lock that a background thread holds mid-work.

`lock` stands for what the prefork worker's parent really held (the module lock of an import in
the sweeper thread): the child is a copy with only the forking thread, so a lock held at the fork
is held in the child for good.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from engine.forksafe import ForkGate


def fork_and_try(lock: threading.Lock, gate: ForkGate) -> int:
    """Fork; the child tries the lock (and the gate) and exits 0 if it got both."""
    pid = os.fork()
    if pid == 0:  # the child: nothing but the lock, then out
        code = 1
        if lock.acquire(timeout=1.0):
            with gate.busy():  # its own threads may use the gate after the fork
                code = 0
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def hold(lock: threading.Lock, gate: ForkGate | None, inside: threading.Event, seconds: float) -> threading.Thread:
    """A background thread that holds `lock` for a while, inside the gate when one is given."""

    def work() -> None:
        with gate.busy() if gate is not None else contextlib.nullcontext(), lock:
            inside.set()
            time.sleep(seconds)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_without_the_gate_the_child_inherits_a_held_lock():
    """The failure the gate exists for (the control: this is what the SIGKILL test hit)."""
    gate, lock, inside = ForkGate(), threading.Lock(), threading.Event()
    thread = hold(lock, None, inside, 0.5)
    inside.wait(5)
    assert fork_and_try(lock, gate) == 1
    thread.join()


def test_a_fork_waits_until_the_busy_thread_is_done():
    gate, lock, inside = ForkGate(), threading.Lock(), threading.Event()
    thread = hold(lock, gate, inside, 0.3)
    inside.wait(5)
    assert fork_and_try(lock, gate) == 0
    thread.join()


def test_a_thread_stuck_inside_does_not_stop_forks_for_good(caplog):
    """A background thread stuck longer than `wait_s` (a database that does not answer): the fork
    goes ahead after `wait_s`, and says so, rather than leaving the pool without children."""
    gate, lock, inside = ForkGate(wait_s=0.2), threading.Lock(), threading.Event()
    thread = hold(lock, gate, inside, 3.0)
    inside.wait(5)
    with caplog.at_level(logging.WARNING, logger="engine.forksafe"):
        assert fork_and_try(lock, gate) == 1  # the stuck thread's lock is copied held: stated
    assert thread.is_alive()  # the fork did not wait for it
    assert "still busy" in caplog.text
    with gate.busy():  # and the gate is open again in the parent
        pass
    thread.join()
