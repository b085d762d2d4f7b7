"""The fan-out: each event to every configured sink; a failing sink never silences the others."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigil.alerts.outbox import Outbox, OutboxStatus
from vigil.alerts.registry import SINK_BUILDERS
from vigil.alerts.sink import CameraStatusSink, Sink, SinkContext
from vigil.config import AlertsConfig
from vigil.types import Event

if TYPE_CHECKING:
    from vigil.live import CameraStatus

log = logging.getLogger("vigil.alerts")


class AlertDispatcher:
    """Sends each event to every sink; a failing sink logs a warning and the others still get the event."""

    name = "dispatcher"

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

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
        except Exception:
            cls(sinks).close()
            raise
        return cls(sinks)

    def outbox_statuses(self) -> list[OutboxStatus]:
        """The state of every sink delivered from an outbox (any sink with an ``outbox`` attribute)."""
        outboxes = [getattr(sink, "outbox", None) for sink in self.sinks]
        return [outbox.status() for outbox in outboxes if isinstance(outbox, Outbox)]

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
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
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log.warning("alert sink %s failed to close: %s", sink.name, exc)

    def __enter__(self) -> AlertDispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
