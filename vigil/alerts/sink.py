"""The one sink interface, and what a sink's builder is given."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from vigil.alerts.database import DB_FILENAME
from vigil.config import AlertsConfig
from vigil.types import Event

if TYPE_CHECKING:
    from vigil.live import CameraStatus


class Sink(Protocol):
    """Where events go. ``emit`` must not block for long (network delivery goes through the outbox); ``flush``
    makes what was emitted durable; ``close`` flushes and releases. :class:`vigil.alerts.AlertDispatcher` is a
    sink too (the fan-out to the configured ones), and it is what the pipeline gets."""

    name: str

    def emit(self, event: Event) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class CameraStatusSink(Protocol):
    """A sink that also takes the cameras' state (MQTT's retained ``<camera>/status`` topics). ``vigil run`` gives
    every camera's :class:`~vigil.live.CameraStatus` (the snapshot the API shows too) each status interval and when
    one goes up or down; it must not block (state is published without waiting)."""

    def publish_camera_status(self, statuses: Sequence[CameraStatus]) -> None: ...


@runtime_checkable
class TransactionalSink(Protocol):
    """A sink whose durable record of an event is rows of the events database: the SQLite store (``alerts``) and
    every outbox (``outbox``, ``mqtt_outbox``).

    :class:`vigil.alerts.AlertDispatcher` writes the rows of all such sinks of one database in ONE transaction
    (:class:`vigil.alerts.transaction.EventTransaction`): ``insert_rows`` adds the sink's rows for the event through
    the connection it is given and never commits; ``rows_committed`` is called once that transaction committed (an
    outbox wakes its worker). ``emit`` alone does both in a transaction of the sink's own."""

    name: str
    db_path: Path

    def insert_rows(self, conn: sqlite3.Connection, event: Event) -> None: ...

    def rows_committed(self, event: Event) -> None: ...


@dataclass(frozen=True)
class SinkContext:
    """What a sink's ``build(alerts, context)`` may use besides its own config section.

    ``outbox_options``: keyword options for every sink delivered from the outbox (:class:`vigil.alerts.Outbox`):
    tests pass a fake ``wall_clock`` or a short ``poll_interval_s``.
    """

    data_dir: Path
    outbox_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        """The events database shared by the SQLite store and the outbox: ``<data_dir>/events.sqlite3``."""
        return Path(self.data_dir) / DB_FILENAME


SinkBuilder = Callable[[AlertsConfig, SinkContext], "Sink | None"]
