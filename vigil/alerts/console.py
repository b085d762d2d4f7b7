"""The console sink: one readable line per event through ``logging``."""

from __future__ import annotations

import logging

from vigil.alerts.events import describe
from vigil.alerts.sink import SinkContext
from vigil.config import AlertsConfig
from vigil.types import Event

log = logging.getLogger("vigil.alerts")


class ConsoleSink:
    """One readable line per event through ``logging`` (logger ``vigil.alerts``, level INFO: the CLI shows INFO)."""

    name = "console"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log

    def emit(self, event: Event) -> None:
        self._log.info("%s", describe(event))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def build(alerts: AlertsConfig, context: SinkContext) -> ConsoleSink | None:
    return ConsoleSink() if alerts.console else None
