"""The fan-out: each event to every configured sink; a failing sink never silences the others.

The sinks that keep the event in the events database (the SQLite store, the webhook and MQTT outboxes) are written
first, together, in one transaction (:mod:`vigil.alerts.transaction`): the event is stored and queued for every
receiver, or, if that transaction fails, in none of them (one ERROR line). Then the other sinks (JSONL, console).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigil.alerts.outbox import Outbox, OutboxStatus
from vigil.alerts.registry import SINK_BUILDERS
from vigil.alerts.sink import CameraStatusSink, Sink, SinkContext
from vigil.alerts.transaction import by_database
from vigil.config import AlertsConfig
from vigil.types import Event

if TYPE_CHECKING:
    from vigil.live import CameraStatus

log = logging.getLogger("vigil.alerts")


class AlertDispatcher:
    """Sends each event to every sink; a failing sink logs a warning and the others still get the event. The sinks
    of an events database get it in one transaction (all or none of them)."""

    name = "dispatcher"

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)
        self.transactions, self._others = by_database(self.sinks)

    @classmethod
    def from_config(cls, config: AlertsConfig, data_dir: Path | str, **outbox_options: Any) -> AlertDispatcher:
        """Build the configured sinks (:data:`vigil.alerts.registry.SINK_BUILDERS`, in that order); the SQLite
        store and the outbox share ``<data_dir>/events.sqlite3``. ``outbox_options`` go to every outbox-delivered
        sink (tests: a fake clock, fast polling). If one sink cannot be built, those already built are closed."""
        context = SinkContext(Path(data_dir), outbox_options)
        sinks: list[Sink] = []
        try:
            for build in SINK_BUILDERS:
                sink = build(config, context)
                if sink is not None:
                    sinks.append(sink)
            return cls(sinks)
        except Exception:
            close_all(sinks)
            raise

    def outbox_statuses(self) -> list[OutboxStatus]:
        """The state of every sink delivered from an outbox (any sink with an ``outbox`` attribute)."""
        outboxes = [getattr(sink, "outbox", None) for sink in self.sinks]
        return [outbox.status() for outbox in outboxes if isinstance(outbox, Outbox)]

    def emit(self, event: Event) -> None:
        for transaction in self.transactions:
            try:
                transaction.write(event)
            except Exception as exc:  # rolled back: none of these sinks has the event
                log.error("event %s not stored (%s: none has it): %s", event.id, transaction.names, exc)
        for sink in self._others:
            try:
                sink.emit(event)
            except Exception as exc:  # one broken sink must not silence the others
                log.warning("alert sink %s failed for event %s: %s", sink.name, event.id, exc)

    def publish_camera_status(self, statuses: Sequence[CameraStatus]) -> None:
        """The cameras' state to every sink that takes it (:class:`~vigil.alerts.sink.CameraStatusSink`)."""
        for sink in self.sinks:
            if isinstance(sink, CameraStatusSink):
                try:
                    sink.publish_camera_status(statuses)
                except Exception as exc:
                    log.warning("alert sink %s failed to publish camera status: %s", sink.name, exc)

    def flush(self) -> None:
        for sink in self.sinks:
            try:
                sink.flush()
            except Exception as exc:
                log.warning("alert sink %s failed to flush: %s", sink.name, exc)

    def close(self) -> None:
        """Flush every sink, then close every sink (each attempted even if another fails)."""
        self.flush()
        close_all(self.sinks)
        for transaction in self.transactions:
            transaction.close()

    def __enter__(self) -> AlertDispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def close_all(sinks: Sequence[Sink]) -> None:
    """Close every sink, each attempted even if another fails (a warning each)."""
    for sink in sinks:
        try:
            sink.close()
        except Exception as exc:
            log.warning("alert sink %s failed to close: %s", sink.name, exc)
