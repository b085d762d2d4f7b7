"""Alerts: the events the rules produce, and the sinks they go to.

An event is a :class:`vigil.types.Alert` (``type: "alert"``) or a :class:`vigil.types.UnknownEvent`
(``type: "unknown"``); both carry a unique ``id`` (uuid4 hex) and ``to_json()``. Every sink has the same interface
(:class:`vigil.alerts.sink.Sink`: ``name``, ``emit(event)``, ``flush()``, ``close()``), and
:class:`~vigil.alerts.dispatcher.AlertDispatcher` fans each event out to the configured sinks; a failing sink logs a
warning and never stops the others. The sinks that keep the event in the events database (the SQLite store, the
webhook and MQTT outboxes: :class:`~vigil.alerts.sink.TransactionalSink`) get it in one transaction, so it is stored
and queued for every receiver, or not at all.

Modules:

- ``events``: event records from rules decisions (ids, timestamps, one readable line per event)
- ``sink``: the sink interface and what a sink's builder is given (:class:`~vigil.alerts.sink.SinkContext`)
- ``console``, ``jsonl``, ``sqlite``, ``webhook``, ``mqtt``: one module per sink, each with its
  ``build(alerts, context)``
- ``database``: the events database file (``<data_dir>/events.sqlite3``) shared by the SQLite store and the outbox
- ``outbox``: durable at-least-once delivery from a table of that database (webhook and MQTT, a table each)
- ``transaction``: one event, one transaction: the store's row and every outbox row of an event commit together
- ``registry``: which sinks a config builds, in which order
- ``dispatcher``: the fan-out
- ``snapshots``: the face crop saved with an event (the best face of its track)

Adding a sink: a module with a class (``name``, ``emit``, ``flush``, ``close``) and ``build(alerts, context)``, its
config model as a field of :class:`vigil.config.AlertsConfig`, and its ``build`` in ``registry.SINK_BUILDERS``.
Every logger here is ``vigil.alerts``.
"""

from __future__ import annotations

from vigil.alerts.console import ConsoleSink
from vigil.alerts.database import DB_FILENAME, open_database
from vigil.alerts.dispatcher import AlertDispatcher
from vigil.alerts.events import describe, event_from_decision, new_event_id, utc_timestamp
from vigil.alerts.jsonl import JsonlSink, read_jsonl
from vigil.alerts.mqtt import MqttSink
from vigil.alerts.outbox import DeliveryResult, Outbox
from vigil.alerts.sink import CameraStatusSink, Sink, SinkContext, TransactionalSink
from vigil.alerts.snapshots import crop_with_margin, face_crop, replace_snapshot, save_snapshot, snapshot_path
from vigil.alerts.sqlite import SqliteSink, load_events
from vigil.alerts.webhook import WebhookSink, post_json

__all__ = [
    "DB_FILENAME",
    "AlertDispatcher",
    "CameraStatusSink",
    "ConsoleSink",
    "DeliveryResult",
    "JsonlSink",
    "MqttSink",
    "Outbox",
    "Sink",
    "SinkContext",
    "SqliteSink",
    "TransactionalSink",
    "WebhookSink",
    "describe",
    "event_from_decision",
    "load_events",
    "new_event_id",
    "open_database",
    "post_json",
    "read_jsonl",
    "crop_with_margin",
    "face_crop",
    "replace_snapshot",
    "save_snapshot",
    "snapshot_path",
    "utc_timestamp",
]
