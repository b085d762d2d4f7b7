"""The store: users, tokens, sessions (fake clock), the append-only audit log, event pages and marks, retention."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher

from vigil.alerts import DB_FILENAME, SqliteSink, utc_timestamp
from vigil.config import RetentionConfig
from vigil.store.audit import Actor, AuditFilter, AuditLog, Outcome
from vigil.store.db import ConflictError, Database, NotFoundError, StoreError
from vigil.store.events import EventFilter, EventStore, decode_cursor, encode_cursor
from vigil.store.retention import apply_retention, cutoffs, snapshot_day_expired
from vigil.store.users import Role, SessionStore, TokenStore, UserStore
from vigil.types import Alert, AlertStage, ListKind, UnknownEvent

CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # real argon2id, fast for tests


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / DB_FILENAME)
    yield database
    database.close()


def make_alert(i: int, ts: str, camera: str = "cam1", person: str = "p1", snapshot: str | None = None) -> Alert:
    return Alert(
        id=f"{i:032x}",
        stage=AlertStage.CONFIRMED,
        person_id=person,
        person_name=person.upper(),
        list=ListKind.DENY,
        camera=camera,
        track_id=i,
        score=0.9,
        margin=0.2,
        ts=ts,
        video_ts_s=0.0,
        frame_index=i,
        bbox=(0, 0, 10, 10),
        snapshot=snapshot,
        label="watchlist",
    )


def make_unknown(i: int, ts: str, snapshot: str | None = None) -> UnknownEvent:
    return UnknownEvent(f"{i:032x}", "cam2", i, 0.3, ts, 0.0, i, (0, 0, 10, 10), snapshot)


# ---- users, tokens, sessions ----------------------------------------------------------------------------------
def test_password_is_stored_as_argon2id_and_verified(db):
    users = UserStore(db, CHEAP_HASHER)
    users.add("alice", Role.ADMIN, "correct horse battery")
    stored = db.conn().execute("SELECT password_hash FROM users").fetchone()[0]
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert users.verify("alice", "correct horse battery").role is Role.ADMIN
    assert users.verify("alice", "wrong password!!") is None
    assert users.verify("nobody", "correct horse battery") is None


@pytest.mark.parametrize(
    "name, password, error",
    [
        ("Alice", "long enough pw", "user name 'Alice'"),
        ("../x", "long enough pw", "user name '../x'"),
        ("bob", "short", "at least 10 characters"),
    ],
)
def test_bad_user_input_is_refused_and_nothing_written(db, name, password, error):
    with pytest.raises(StoreError, match=error):
        UserStore(db, CHEAP_HASHER).add(name, Role.VIEWER, password)
    assert db.conn().execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0


def test_last_admin_cannot_be_deleted_demoted_or_disabled(db):
    users = UserStore(db, CHEAP_HASHER)
    users.add("root", Role.ADMIN, "0123456789")
    for change in (
        lambda: users.delete("root"),
        lambda: users.update("root", role=Role.VIEWER),
        lambda: users.update("root", disabled=True),
    ):
        with pytest.raises(ConflictError, match="last active admin"):
            change()
    users.add("second", Role.ADMIN, "0123456789")
    users.delete("root")
    assert [u.username for u in users.list()] == ["second"]


def test_token_lifecycle(db):
    clock = FakeClock()
    tokens = TokenStore(db, clock)
    token, secret = tokens.create(Role.OPERATOR, "ci", "cli:root", expires_days=1)
    assert secret.startswith("vgl_") and len(secret) > 40
    assert secret not in json.dumps(db.conn().execute("SELECT * FROM api_tokens").fetchall())
    assert tokens.resolve(secret).role is Role.OPERATOR
    assert tokens.resolve(secret + "x") is None and tokens.resolve("Bearer junk") is None
    clock.now += 2 * 86400
    assert tokens.resolve(secret) is None  # expired
    other, other_secret = tokens.create(Role.VIEWER, "", "cli:root")
    tokens.revoke(other.id)
    assert tokens.resolve(other_secret) is None
    with pytest.raises(ConflictError, match="already revoked"):
        tokens.revoke(other.id)
    with pytest.raises(NotFoundError):
        tokens.revoke("nope")


def test_sessions_expire_when_idle_or_old_and_end_with_a_password_change(db):
    clock = FakeClock()
    users = UserStore(db, CHEAP_HASHER)
    alice = users.add("alice", Role.OPERATOR, "0123456789")
    sessions = SessionStore(db, idle_timeout_s=600, max_age_s=3600, wall_clock=clock)
    cookie, session = sessions.create(alice, "127.0.0.1")
    assert cookie not in json.dumps(db.conn().execute("SELECT * FROM sessions").fetchall())
    for _ in range(8):  # used every 5 minutes: stays alive until max age
        clock.now += 300
        assert sessions.resolve(cookie) is not None
    clock.now += 1300  # 3700 s after login
    assert sessions.resolve(cookie) is None
    cookie, _ = sessions.create(alice, "127.0.0.1")
    clock.now += 601
    assert sessions.resolve(cookie) is None  # idle
    cookie, _ = sessions.create(alice, "127.0.0.1")
    users.set_password("alice", "another password")
    assert sessions.resolve(cookie) is None


# ---- audit -------------------------------------------------------------------------------------------------------
def test_audit_is_append_only_and_filterable(db):
    audit = AuditLog(db)
    alice = Actor("user:alice", "admin", "10.0.0.1")
    audit.record(alice, "person.create", "person:jdoe")
    audit.record(alice, "snapshot.read", "event:" + "a" * 32)
    audit.record(Actor("anonymous", None, "10.0.0.9"), "login.failure", "user:bob", Outcome.DENIED, "bad\npassword")
    assert [e.action for e in audit.query(AuditFilter())] == ["login.failure", "snapshot.read", "person.create"]
    assert [e.action for e in audit.query(AuditFilter(action="person."))] == ["person.create"]
    assert audit.query(AuditFilter(outcome="denied"))[0].detail == "bad password"  # one line, not forgeable
    with pytest.raises(sqlite3.DatabaseError, match="append-only"), db.transaction() as conn:
        conn.execute("UPDATE audit SET actor = 'someone else'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"), db.transaction() as conn:
        conn.execute("DELETE FROM audit")
    assert len(audit.query(AuditFilter())) == 3


# ---- events ------------------------------------------------------------------------------------------------------
@pytest.fixture
def stored_events(tmp_path, db):
    sink = SqliteSink(tmp_path / DB_FILENAME)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(25):
        sink.emit(make_alert(i, utc_timestamp(base + timedelta(minutes=i)), camera=f"cam{i % 2}", person=f"p{i % 3}"))
    sink.emit(make_unknown(100, utc_timestamp(base + timedelta(minutes=30))))
    sink.close()
    return EventStore(db)


def test_pages_follow_the_cursor_newest_first_without_gaps(stored_events):
    seen, cursor = [], None
    while True:
        page = stored_events.page(EventFilter(type="alert"), cursor, limit=7)
        seen += [event.record["frame_index"] for event in page.items]
        cursor = page.next
        if cursor is None:
            break
    assert seen == list(range(24, -1, -1))


@pytest.mark.parametrize(
    "where, expected",
    [
        (EventFilter(camera="cam1"), 12),
        (EventFilter(person_id="p0"), 9),
        (EventFilter(camera="cam0", person_id="p0"), 5),
        (EventFilter(type="unknown"), 1),
        (EventFilter(since="2026-01-01T00:10:00.000Z", until="2026-01-01T00:20:00.000Z"), 10),
        (EventFilter(camera="x' OR '1'='1"), 0),
    ],
)
def test_filters(stored_events, where, expected):
    assert len(stored_events.page(where, limit=500).items) == expected


@pytest.mark.parametrize("cursor", ["", "abc", "' OR 1=1 --", encode_cursor("yesterday", 3)])
def test_a_forged_cursor_is_refused(stored_events, cursor):
    with pytest.raises(StoreError, match="cursor"):
        stored_events.page(EventFilter(), cursor)


def test_cursor_round_trip():
    assert decode_cursor(encode_cursor("2026-01-01T00:00:00.000Z", 42)) == ("2026-01-01T00:00:00.000Z", 42)


def test_acknowledge_and_false_match_once_each(stored_events):
    event_id = f"{3:032x}"
    stored_events.acknowledge(event_id, "user:alice", "seen, guard sent")
    with pytest.raises(ConflictError, match="already acknowledged by user:alice"):
        stored_events.acknowledge(event_id, "user:bob", "")
    stored_events.mark_false_match(event_id, "user:bob", "not him")
    event = stored_events.get(event_id)
    assert (event.acknowledged.by, event.false_match.note) == ("user:alice", "not him")
    with pytest.raises(ConflictError, match="only an alert"):
        stored_events.mark_false_match(f"{100:032x}", "user:bob", "")
    with pytest.raises(NotFoundError):
        stored_events.acknowledge("f" * 32, "user:bob", "")


def test_deleting_a_person_anonymises_their_events(stored_events):
    stored_events.anonymise_person("p1")
    assert stored_events.page(EventFilter(person_id="p1")).items == []
    anonymised = [e.record for e in stored_events.page(EventFilter(), limit=500).items if e.record.get("anonymised")]
    assert len(anonymised) == 8
    assert all(r["person_id"] is None and r["person_name"] is None and r["snapshot"] is None for r in anonymised)


# ---- retention ---------------------------------------------------------------------------------------------------
def test_cutoffs_from_a_fake_now():
    now = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
    limits = cutoffs(now, RetentionConfig(alerts_days=30, unknown_events_days=7, snapshots_days=10, audit_days=365))
    assert limits.alerts == "2026-03-01T12:00:00.000Z"
    assert limits.unknown_events == "2026-03-24T12:00:00.000Z"
    assert limits.snapshots == "2026-03-21T12:00:00.000Z"
    assert limits.audit == "2025-03-31T12:00:00.000Z"


@pytest.mark.parametrize(
    "folder, cutoff, expired",
    [
        ("2026-03-20", "2026-03-21T12:00:00.000Z", True),
        ("2026-03-21", "2026-03-21T12:00:00.000Z", False),  # the day is not over at the cutoff
        ("notes", "2030-01-01T00:00:00.000Z", False),
    ],
)
def test_snapshot_day_folders(folder, cutoff, expired):
    assert snapshot_day_expired(folder, cutoff) is expired


def test_retention_deletes_what_is_due_and_nothing_else(tmp_path, db):
    now = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
    snaps = tmp_path / "snapshots"

    def snapshot(name: str, moment: datetime) -> str:  # where save_snapshot puts it: the UTC day it was taken
        path = snaps / moment.date().isoformat() / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"jpeg")
        return str(path)

    sink = SqliteSink(tmp_path / DB_FILENAME)
    ages = {"old_alert": 40, "mid_alert": 20, "new_alert": 1, "old_unknown": 8, "new_unknown": 2}
    for i, (name, days) in enumerate(ages.items()):
        moment = now - timedelta(days=days)
        ts, path = utc_timestamp(moment), snapshot(name, moment)
        event = make_unknown(i, ts, path) if "unknown" in name else make_alert(i, ts, snapshot=path)
        sink.emit(event)
    sink.close()
    outside = tmp_path / "keep.jpg"
    outside.write_bytes(b"x")
    with db.transaction() as conn:  # a tampered row pointing outside the snapshots folder is never followed
        conn.execute(
            "UPDATE alerts SET json = json_set(json, '$.snapshot', ?) WHERE id = ?", (str(outside), f"{0:032x}")
        )
    AuditLog(db).record(Actor("user:a"), "snapshot.read")
    report = apply_retention(db, tmp_path, cutoffs(now, RetentionConfig(snapshots_days=10)))
    left = {e.record["frame_index"]: e.record for e in EventStore(db).page(EventFilter(), limit=50).items}
    assert sorted(left) == [1, 2, 4]  # old alert (40 d > 30) and old unknown (8 d > 7) gone
    assert left[1]["snapshot"] is None and left[2]["snapshot"] and left[4]["snapshot"]  # 20-day snapshot > 10 d
    assert (report.alerts, report.unknown_events) == (1, 1)
    assert outside.exists() and sorted(p.stem for p in snaps.rglob("*.jpg")) == ["new_alert", "new_unknown"]
    assert report.snapshots == 3  # old unknown's, mid alert's (past 10 days), old alert's (orphaned by the tampering)
    assert len(AuditLog(db).query(AuditFilter())) == 1  # today's audit entry is kept


def test_audit_retention_deletes_only_old_entries(tmp_path, db):
    AuditLog(db).record(Actor("user:a"), "snapshot.read")
    future = datetime.now(UTC) + timedelta(days=400)
    report = apply_retention(db, tmp_path, cutoffs(future, RetentionConfig(audit_days=365)))
    assert report.audit == 1 and AuditLog(db).query(AuditFilter()) == []
    with pytest.raises(sqlite3.DatabaseError):  # the guard is back after the job's transaction
        AuditLog(db).record(Actor("user:a"), "x")
        with db.transaction() as conn:
            conn.execute("DELETE FROM audit")
