"""Which sinks a config builds, and in which order: one ``build(alerts, context)`` per sink module.

The durable sinks come first, so an event is stored before it is printed. A new sink adds its module's ``build``
here (and its config model to :class:`vigil.config.AlertsConfig`); nothing else changes.
"""

from __future__ import annotations

from vigil.alerts import console, jsonl, mqtt, sqlite, webhook
from vigil.alerts.sink import SinkBuilder

SINK_BUILDERS: tuple[SinkBuilder, ...] = (sqlite.build, webhook.build, mqtt.build, jsonl.build, console.build)
