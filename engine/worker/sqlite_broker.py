"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, polled every 20 ms.

kombu hands every transport option of this transport to `create_engine`, so its polling
interval cannot be set as an option; this subclass sets it instead (1 s by default would add up
to a second to every job of the demo)."""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES, sqlalchemy

POLLING_INTERVAL_S = 0.02
#: Celery's worker loop waits up to 2 s for a message and looks for a stop request only between
#: waits, then waits once more: an embedded worker took 4 s to stop (the console's exit, every
#: test that starts one). Shorter waits cost one more empty poll round each, nothing else.
MAX_DRAIN_WAIT_S = 0.2
#: kombu takes the transport from a broker URL's scheme ("sqla+sqlite://…") and then ignores
#: Celery's `broker_transport`, so the embedded broker's URL names this alias instead.
ALIAS = "imaginesqla"


class Channel(sqlalchemy.Channel):
    polling_interval = POLLING_INTERVAL_S


class Transport(sqlalchemy.Transport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL_S  # the drain loop reads the transport's, not the channel's

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        # None still blocks until a message: only the worker loop's bounded waits are shortened.
        if timeout is not None:
            timeout = min(timeout, MAX_DRAIN_WAIT_S)
        return super().drain_events(connection, timeout=timeout, **kwargs)


TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:Transport")


def broker_url(sqlalchemy_url: str) -> str:
    """'sqla+sqlite:///x.db' → 'imaginesqla+sqlite:///x.db' (this transport, same database)."""
    return f"{ALIAS}+{sqlalchemy_url.split('+', 1)[1]}"
