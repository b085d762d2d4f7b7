"""The SQLite event store: every event in table ``alerts`` of the events database (:mod:`vigil.alerts.database`)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from vigil.alerts.database import open_database
from vigil.alerts.sink import SinkContext
from vigil.config import AlertsConfig
from vigil.errors import VigilError
from vigil.types import Event

ALERTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    stage TEXT,
    camera TEXT NOT NULL,
    person_id TEXT,
    ts TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_camera ON alerts(camera);
CREATE INDEX IF NOT EXISTS alerts_person_id ON alerts(person_id);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts(ts);
"""


class SqliteSink:
    """Stores every event in table ``alerts`` of ``<data_dir>/events.sqlite3``; a replayed id is ignored."""

    name = "sqlite"

    def __init__(self, db_path: Path | str) -> None:
        self.db_path = Path(db_path)
        self._conn = open_database(self.db_path)
        self._lock = threading.Lock()
        try:
            with self._conn:
                self._conn.executescript(ALERTS_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise VigilError(f"{self.db_path}: cannot create the alerts table ({exc})") from None

    def emit(self, event: Event) -> None:
        """Store the event (its own transaction; the dispatcher uses :meth:`insert_rows` in its one transaction)."""
        with self._lock, self._conn:
            self.insert_rows(self._conn, event)

    def insert_rows(self, conn: sqlite3.Connection, event: Event) -> None:
        """The event's row in ``alerts``, through ``conn`` inside the caller's transaction (no commit)."""
        record = event.to_json()
        row = (
            record["id"],
            record["type"],
            record.get("stage"),
            record["camera"],
            record.get("person_id"),
            record["ts"],
            json.dumps(record, ensure_ascii=False),
        )
        conn.execute("INSERT OR IGNORE INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def rows_committed(self, event: Event) -> None:
        """Nothing to do: the row is the store."""

    def flush(self) -> None:
        with self._lock:
            self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def build(alerts: AlertsConfig, context: SinkContext) -> SqliteSink | None:
    return SqliteSink(context.db_path) if alerts.sqlite else None


def load_events(db_path: Path | str, camera: str | None = None, person_id: str | None = None) -> list[dict]:
    """The stored events (as their JSON objects), oldest first, optionally for one camera and/or person."""
    conn = open_database(db_path)
    try:
        query = "SELECT json FROM alerts WHERE 1=1"
        args: list[str] = []
        if camera is not None:
            query, args = query + " AND camera = ?", [*args, camera]
        if person_id is not None:
            query, args = query + " AND person_id = ?", [*args, person_id]
        return [json.loads(row[0]) for row in conn.execute(query + " ORDER BY ts, rowid", args)]
    finally:
        conn.close()
