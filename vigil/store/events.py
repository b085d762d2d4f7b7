"""Reading the events the sinks stored (table ``alerts``), and the operators' marks on them.

``EventStore.page`` lists events newest first with filters (camera, person, type, stage, time range) and keyset
pagination: the cursor names the last row returned (its ``ts`` and rowid), so a page costs one index range scan
however deep it is, and rows inserted meanwhile never shift a page. Every filter value is bound as a parameter.

Marks live in their own tables (the sinks' rows stay as written): an acknowledgement (who, when, note) and a
"false match" (this alert was not that person; kept for the feedback work). Deleting a person anonymises their
events: person id and name and the snapshot are removed, the rest stays (``anonymised: true``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

from vigil.alerts import utc_timestamp
from vigil.alerts.mqtt import OUTBOX_TABLE as MQTT_OUTBOX_TABLE
from vigil.alerts.outbox import outbox_tables, table_counts
from vigil.store.db import ConflictError, Database, NotFoundError, StoreError

EVENT_ID_PATTERN = r"^[0-9a-f]{32}$"
MAX_PAGE = 500
MAX_NOTE_CHARS = 1000
OUTBOX_TABLES = ("outbox", MQTT_OUTBOX_TABLE)  # the webhook's, MQTT's


@dataclass(frozen=True)
class EventFilter:
    camera: str | None = None
    person_id: str | None = None
    type: str | None = None  # "alert" | "unknown"
    stage: str | None = None  # "provisional" | "confirmed"
    since: str | None = None  # ISO-8601 UTC in the events' own format, inclusive
    until: str | None = None  # exclusive


@dataclass(frozen=True)
class Mark:
    by: str
    at: str
    note: str

    def to_json(self) -> dict:
        return {"by": self.by, "at": self.at, "note": self.note}


@dataclass(frozen=True)
class StoredEvent:
    record: dict  # the event's JSON as the sinks wrote it (vigil.alerts: Alert.to_json / UnknownEvent.to_json)
    acknowledged: Mark | None
    false_match: Mark | None

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def type(self) -> str:
        return self.record["type"]

    @property
    def snapshot(self) -> str | None:
        return self.record.get("snapshot")


@dataclass(frozen=True)
class EventRow:
    """One listed event as JSON text, for lists that pass it on without parsing it (the API's event pages)."""

    id: str
    type: str
    person_id: str | None
    has_snapshot: bool
    public_json: str  # the record without its ``snapshot`` path (a server-side file path is never shown)
    acknowledged_json: str  # a JSON object or ``null``
    false_match_json: str


@dataclass(frozen=True)
class EventRowPage:
    items: list[EventRow]
    next: str | None


@dataclass(frozen=True)
class EventPage:
    items: list[StoredEvent]
    next: str | None  # cursor of the next (older) page, None at the end


def encode_cursor(ts: str, rowid: int) -> str:
    return base64.urlsafe_b64encode(f"{ts}|{rowid}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """(ts, rowid) of a cursor this module made; StoreError for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\|(\d{1,18})", text)
    if len(cursor) > 100 or match is None:
        raise StoreError("cursor: not a cursor returned by this API (use the 'next' value as it is)")
    return match.group(1), int(match.group(2))


_SELECT = (
    "SELECT a.rowid, a.ts, a.json, k.by, k.at, k.note, f.by, f.at, f.note FROM alerts a "
    "LEFT JOIN acknowledgements k ON k.event_id = a.id LEFT JOIN false_matches f ON f.event_id = a.id"
)


_SELECT_ROWS = (
    "SELECT a.rowid, a.ts, a.id, a.type, a.person_id, json_extract(a.json, '$.snapshot') IS NOT NULL, "
    "json_remove(a.json, '$.snapshot'), "
    "CASE WHEN k.by IS NULL THEN 'null' ELSE json_object('by', k.by, 'at', k.at, 'note', k.note) END, "
    "CASE WHEN f.by IS NULL THEN 'null' ELSE json_object('by', f.by, 'at', f.at, 'note', f.note) END FROM alerts a "
    "LEFT JOIN acknowledgements k ON k.event_id = a.id LEFT JOIN false_matches f ON f.event_id = a.id"
)


def _event(row: tuple) -> StoredEvent:
    ack = Mark(row[3], row[4], row[5]) if row[3] is not None else None
    false_match = Mark(row[6], row[7], row[8]) if row[6] is not None else None
    return StoredEvent(json.loads(row[2]), ack, false_match)


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.version = 0  # bumped by every change made through this instance (answer caches key on it)

    def page(self, where: EventFilter, cursor: str | None = None, limit: int = 50) -> EventPage:
        rows, more = self._rows(_SELECT, where, cursor, limit)
        return EventPage([_event(row) for row in rows], encode_cursor(rows[-1][1], rows[-1][0]) if more else None)

    def page_rows(self, where: EventFilter, cursor: str | None = None, limit: int = 50) -> EventRowPage:
        """As :meth:`page`, with each event as JSON text shaped by SQLite (no parsing in Python)."""
        rows, more = self._rows(_SELECT_ROWS, where, cursor, limit)
        items = [EventRow(r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8]) for r in rows]
        return EventRowPage(items, encode_cursor(rows[-1][1], rows[-1][0]) if more else None)

    def _rows(self, select: str, where: EventFilter, cursor: str | None, limit: int) -> tuple[list[tuple], bool]:
        clauses: list[str] = []
        args: list[object] = []
        for column, value in (
            ("a.camera = ?", where.camera),
            ("a.person_id = ?", where.person_id),
            ("a.type = ?", where.type),
            ("a.stage = ?", where.stage),
            ("a.ts >= ?", where.since),
            ("a.ts < ?", where.until),
        ):
            if value is not None:
                clauses.append(column)
                args.append(value)
        if cursor is not None:
            ts, rowid = decode_cursor(cursor)
            clauses.append("(a.ts, a.rowid) < (?, ?)")
            args.extend([ts, rowid])
        limit = max(1, min(limit, MAX_PAGE))
        sql = f"{select}{' WHERE ' + ' AND '.join(clauses) if clauses else ''} ORDER BY a.ts DESC, a.rowid DESC LIMIT ?"
        rows = self.db.conn().execute(sql, [*args, limit + 1]).fetchall()
        return rows[:limit], len(rows) > limit

    def get(self, event_id: str) -> StoredEvent | None:
        if not re.fullmatch(EVENT_ID_PATTERN, event_id):
            return None
        row = self.db.conn().execute(f"{_SELECT} WHERE a.id = ?", (event_id,)).fetchone()
        return None if row is None else _event(row)

    def acknowledge(self, event_id: str, by: str, note: str) -> Mark:
        """Acknowledge once; StoreError if the event is unknown or already acknowledged."""
        note = _check_note(note)
        with self.db.transaction() as conn:
            self._require_in(conn, event_id)
            existing = conn.execute("SELECT by, at FROM acknowledgements WHERE event_id = ?", (event_id,)).fetchone()
            if existing:
                raise ConflictError(f"event {event_id}: already acknowledged by {existing[0]} at {existing[1]}")
            mark = Mark(by, utc_timestamp(), note)
            conn.execute("INSERT INTO acknowledgements VALUES (?, ?, ?, ?)", (event_id, mark.by, mark.at, mark.note))
        self.version += 1
        return mark

    def mark_false_match(self, event_id: str, by: str, note: str) -> Mark:
        """Record that an alert was not its person (alerts only; once)."""
        note = _check_note(note)
        with self.db.transaction() as conn:
            record = self._require_in(conn, event_id)
            if record["type"] != "alert":
                raise ConflictError(
                    f"event {event_id}: only an alert can be marked a false match (this is {record['type']})"
                )
            if conn.execute("SELECT 1 FROM false_matches WHERE event_id = ?", (event_id,)).fetchone():
                raise ConflictError(f"event {event_id}: already marked a false match")
            mark = Mark(by, utc_timestamp(), note)
            conn.execute(
                "INSERT INTO false_matches VALUES (?, ?, ?, ?, ?, ?)",
                (event_id, record.get("person_id"), record["camera"], mark.by, mark.at, mark.note),
            )
        self.version += 1
        return mark

    def clear_false_match(self, event_id: str) -> None:
        with self.db.transaction() as conn:
            if not conn.execute("DELETE FROM false_matches WHERE event_id = ?", (event_id,)).rowcount:
                raise ConflictError(f"event {event_id}: not marked a false match")
        self.version += 1

    def anonymise_person(self, person_id: str) -> list[str]:
        """Strip a deleted person from their events (id, name, snapshot); returns the snapshot paths to delete."""
        with self.db.transaction() as conn:
            snapshots = [
                row[0]
                for row in conn.execute(
                    "SELECT json_extract(json, '$.snapshot') FROM alerts WHERE person_id = ?", (person_id,)
                )
                if row[0]
            ]
            conn.execute(
                "UPDATE alerts SET person_id = NULL, json = json_set(json, '$.person_id', NULL, '$.person_name', NULL, "
                "'$.snapshot', NULL, '$.anonymised', json('true')) WHERE person_id = ?",
                (person_id,),
            )
            conn.execute("UPDATE false_matches SET person_id = NULL WHERE person_id = ?", (person_id,))
        self.version += 1
        return snapshots

    def cameras(self) -> list[str]:
        return [row[0] for row in self.db.conn().execute("SELECT DISTINCT camera FROM alerts ORDER BY camera")]

    def outbox_counts_by_table(self) -> dict[str, dict[str, int]]:
        """Every outbox table (any sink delivered from an outbox: ``outbox``, ``mqtt_outbox``) with its rows by
        state."""
        conn = self.db.conn()
        return {table: table_counts(conn, table) for table in outbox_tables(conn)}

    def outbox_counts(self, table: str = "outbox") -> dict[str, int]:
        """Outbox rows by state: the webhook's ``outbox``, or another sink's table (``mqtt_outbox``); all 0 when that
        sink was never configured. ``table`` is one of those constants, never user input."""
        if table not in OUTBOX_TABLES:
            raise ValueError(f"unknown outbox table {table!r}")
        conn = self.db.conn()
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone():
            return {"pending": 0, "delivered": 0, "dead": 0}
        return table_counts(conn, table)

    @staticmethod
    def _require_in(conn, event_id: str) -> dict:
        row = conn.execute("SELECT json FROM alerts WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"event {event_id} does not exist")
        return json.loads(row[0])


def _check_note(note: str) -> str:
    if len(note) > MAX_NOTE_CHARS:
        raise StoreError(f"note: at most {MAX_NOTE_CHARS} characters")
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", note)
