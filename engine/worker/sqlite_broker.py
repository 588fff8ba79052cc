"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, polled every 20 ms.

kombu hands every transport option of this transport to `create_engine`, so its polling
interval cannot be set as an option; this subclass sets it instead (1 s by default would add up
to a second to every job of the demo)."""

from __future__ import annotations

from kombu.transport import sqlalchemy

POLLING_INTERVAL_S = 0.02


class Channel(sqlalchemy.Channel):
    polling_interval = POLLING_INTERVAL_S


class Transport(sqlalchemy.Transport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL_S  # the drain loop reads the transport's, not the channel's
