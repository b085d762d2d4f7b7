"""The store's SQLite database: schema, migrations, one connection per thread.

The alert sinks create ``alerts`` and ``outbox`` (vigil/alerts.py); :func:`migrate` adds the service's tables and
the indexes the events API needs, idempotently (``IF NOT EXISTS``), so it runs on every open.

The audit table is append-only: a trigger aborts every UPDATE, and every DELETE of a row newer than the cutoff in
``audit_prune_cutoff`` (empty, i.e. nothing deletable, except inside the retention job's own transaction). This
guards against a bug in vigil, not against someone with write access to the file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vigil.alerts.database import DB_FILENAME, open_database
from vigil.alerts.sqlite import ALERTS_SCHEMA
from vigil.errors import VigilError


class StoreError(VigilError):
    """A request the store refuses because of its input (bad name, weak password, bad cursor): nothing written."""


class NotFoundError(StoreError):
    """The user, token, event or person named does not exist."""


class ConflictError(StoreError):
    """The request contradicts the current state (already exists, already acknowledged, last admin)."""


SERVICE_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    password_changed_at TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    name TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    client TEXT
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT,
    client TEXT,
    action TEXT NOT NULL,
    object TEXT,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
CREATE INDEX IF NOT EXISTS audit_actor_ts ON audit(actor, ts);
CREATE INDEX IF NOT EXISTS audit_action_ts ON audit(action, ts);
CREATE TABLE IF NOT EXISTS audit_prune_cutoff (id INTEGER PRIMARY KEY CHECK (id = 1), cutoff TEXT NOT NULL);
INSERT OR IGNORE INTO audit_prune_cutoff VALUES (1, '');
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
WHEN OLD.ts >= (SELECT cutoff FROM audit_prune_cutoff WHERE id = 1)
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS acknowledgements (
    event_id TEXT PRIMARY KEY,
    by TEXT NOT NULL,
    at TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS false_matches (
    event_id TEXT PRIMARY KEY,
    person_id TEXT,
    camera TEXT NOT NULL,
    by TEXT NOT NULL,
    at TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alerts_camera_ts ON alerts(camera, ts);
CREATE INDEX IF NOT EXISTS alerts_person_ts ON alerts(person_id, ts);
CREATE INDEX IF NOT EXISTS alerts_type_ts ON alerts(type, ts);
"""


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create every table and index the store needs (a no-op when they exist)."""
    try:
        with conn:
            conn.executescript(ALERTS_SCHEMA)
            conn.executescript(SERVICE_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise VigilError(f"{path}: cannot prepare the store's tables ({exc})") from None


class Database:
    """The store file, with one connection per thread (SQLite connections are not shared across threads here).

    Writers serialise on SQLite's own lock (busy timeout 10 s, WAL lets readers go on meanwhile).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._closed = False
        migrate(self.conn(), self.path)

    @classmethod
    def in_data_dir(cls, data_dir: Path | str) -> Database:
        return cls(Path(data_dir) / DB_FILENAME)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise VigilError(f"{self.path}: the store is closed")
                conn = open_database(self.path)
                conn.execute("PRAGMA foreign_keys=ON")
                self._all.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (BEGIN IMMEDIATE): commit on success, roll back on error."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._all:
                conn.close()
            self._all.clear()
