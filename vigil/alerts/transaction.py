"""One event, one transaction: the rows every sink of the events database writes for an event commit together.

The SQLite store's row (table ``alerts``) and the outbox rows (``outbox`` for the webhook, ``mqtt_outbox`` for MQTT)
of an event are written by :meth:`EventTransaction.write` on one connection, in one transaction, and committed with
one fsync (``synchronous=FULL``, :mod:`vigil.alerts.database`). A crash (``kill -9``, power loss) at any point leaves
the event in every one of those tables or in none: never stored but not queued for a receiver (which would break the
outbox's at-least-once promise), and never delivered without being stored: an outbox worker reads through its own
connection, which sees committed rows only, and the sinks are told after the commit
(:meth:`~vigil.alerts.sink.TransactionalSink.rows_committed`: an outbox wakes its worker). Until issue 26 each sink
committed its own rows: a kill between the commits left the alert stored but never delivered (or delivered to one
receiver and not the other).

Why one transaction and not a recovery on start (queueing, on start, an outbox row for every stored event that has
none): the tables already live in one SQLite file, so one transaction closes the window entirely, and commits once
per event instead of once per sink. A recovery could not tell an event missed by a crash from one stored while that
sink was not configured, or from one whose delivered row was pruned after a week: it would re-send old events, or
need state of its own to avoid it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from vigil.alerts.database import open_database
from vigil.alerts.sink import Sink, TransactionalSink
from vigil.types import Event


class EventTransaction:
    """The sinks of one events database, written together: one connection, one transaction per event."""

    def __init__(self, db_path: Path | str, sinks: Sequence[TransactionalSink]) -> None:
        self.db_path = Path(db_path)
        self.sinks = list(sinks)
        self._conn = open_database(self.db_path)
        self._lock = threading.Lock()  # cameras' threads emit concurrently; one transaction at a time

    @property
    def names(self) -> str:
        """The sinks' names, for log lines: ``sqlite+webhook+mqtt``."""
        return "+".join(sink.name for sink in self.sinks)

    def write(self, event: Event) -> None:
        """Every sink's rows for ``event`` in one transaction, then each sink told. Raises (sqlite3.Error) when the
        transaction fails: it is rolled back, no sink has the event."""
        with self._lock, self._conn:
            for sink in self.sinks:
                sink.insert_rows(self._conn, event)
        for sink in self.sinks:
            sink.rows_committed(event)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def by_database(sinks: Sequence[Sink]) -> tuple[list[EventTransaction], list[Sink]]:
    """The sinks that store rows in an events database, grouped into one :class:`EventTransaction` per database file
    (in the sinks' order), and the other sinks (in their order). Opens one connection per database."""
    groups: dict[Path, list[TransactionalSink]] = {}
    others: list[Sink] = []
    for sink in sinks:
        if isinstance(sink, TransactionalSink):
            groups.setdefault(Path(sink.db_path).resolve(), []).append(sink)
        else:
            others.append(sink)
    transactions: list[EventTransaction] = []
    try:
        for path, group in groups.items():
            transactions.append(EventTransaction(path, group))
    except Exception:
        for transaction in transactions:
            transaction.close()
        raise
    return transactions, others
