"""Failpoints: named places where a test or the chaos benchmark makes a process fail on purpose,
at the exact step a real fault would be hardest on (`bench/chaos.py` kills a worker between a
batch leader's store and its followers').

    IMAGINE_FAILPOINTS="worker.after_store=kill"

Each entry is `name=action`; the only action is `kill` (SIGKILL this process: no cleanup, no
ack, like the OOM killer). Unset — always, in production — every point is a no-op.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

ENV = "IMAGINE_FAILPOINTS"


def _armed() -> dict[str, str]:
    entries = [e.strip() for e in os.environ.get(ENV, "").split(",") if e.strip()]
    return dict(e.partition("=")[::2] for e in entries)


def point(name: str) -> None:
    """Fail here if the failpoint `name` is armed in this process's environment."""
    action = _armed().get(name) if ENV in os.environ else None
    if action == "kill":
        log.warning("failpoint %s: killing this process", name)
        os.kill(os.getpid(), signal.SIGKILL)
    elif action:
        raise ValueError(f"{ENV}: unknown action {action!r} for {name}")
