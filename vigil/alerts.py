"""Events and their sinks: console, JSONL file, SQLite, and a webhook delivered from a durable SQLite outbox.

Every sink has the same three methods: ``emit(event)``, ``flush()``, ``close()``. An event is an
:class:`vigil.types.Alert` (``type: "alert"``) or an :class:`UnknownEvent` (``type: "unknown"``); both carry a
unique ``id`` (uuid4 hex) and ``to_json()``. :class:`AlertDispatcher` fans one event out to every configured sink;
a failing sink logs a warning and never stops the others.

Durability. The SQLite file ``<data_dir>/events.sqlite3`` runs in WAL mode with ``synchronous=FULL``: every commit
is fsync'ed, so an alert survives a process kill *and* a power cut. Alerts are rare (a few per minute, at most a
few per second), so one fsync per alert costs nothing measurable; ``NORMAL`` would survive a process kill only.

Webhook outbox (at least once). ``WebhookSink.emit`` only inserts the JSON payload into the ``outbox`` table (one
transaction); a worker thread POSTs due rows oldest first with header ``Idempotency-Key: <id>``, marks 2xx as
delivered, otherwise reschedules with exponential backoff (:func:`backoff_delay_s`) until ``max_attempts``, after
which the row is marked dead and one warning is logged. A row delivered and then the process killed before it is
marked may be sent twice: receivers de-duplicate by the idempotency key.

Time in the outbox (the one exception to "monotonic time only"): due times must survive restarts, which a
monotonic clock cannot, so ``next_attempt_at`` is wall-clock epoch seconds. Two guards make clock jumps harmless:
on start every pending row is made due at once (a restart retries immediately), and a row whose due time lies more
than ``max_backoff_s`` in the future (the clock went back) is treated as due.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from http.client import HTTPException
from pathlib import Path
from typing import Protocol

import numpy as np

from vigil import __version__
from vigil.config import AlertsConfig, WebhookSinkConfig
from vigil.errors import VigilError
from vigil.redact import mask_url
from vigil.rules import Decision, DecisionKind
from vigil.types import Alert

log = logging.getLogger(__name__)

DB_FILENAME = "events.sqlite3"
SNAPSHOT_DIRNAME = "snapshots"
DB_BUSY_TIMEOUT_S = 10.0  # how long a writer waits for another connection's lock
DELIVERED_RETENTION_S = 7 * 24 * 3600.0  # delivered outbox rows are pruned on start after this long
MAX_RESPONSE_BYTES = 65_536  # a webhook response body is drained up to this size and ignored


# ---------------------------------------------------------------------------------------------------------------------
# Event records
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnknownEvent:
    """A face tracked long enough that matched nobody on the watchlist (``rules.unknown_events``)."""

    id: str
    camera: str
    track_id: int
    score: float  # cosine to the closest watchlist person on the deciding frame (0 with an empty watchlist)
    ts: str  # ISO-8601 UTC
    video_ts_s: float
    frame_index: int
    bbox: tuple[float, float, float, float]
    snapshot: str | None

    def to_json(self) -> dict:
        return {
            "type": "unknown",
            "id": self.id,
            "camera": self.camera,
            "track_id": self.track_id,
            "score": round(float(self.score), 4),
            "ts": self.ts,
            "video_ts_s": round(float(self.video_ts_s), 3),
            "frame_index": self.frame_index,
            "bbox": [round(float(v), 1) for v in self.bbox],
            "snapshot": self.snapshot,
        }


Event = Alert | UnknownEvent


def new_event_id() -> str:
    """A unique event id (uuid4 hex), stable across retries because it is stored with the event."""
    return uuid.uuid4().hex


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: ``2026-11-23T09:11:37.123Z`` (now when ``moment`` is None)."""
    moment = datetime.now(timezone.utc) if moment is None else moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_from_decision(
    decision: Decision,
    *,
    bbox: Sequence[float],
    frame_index: int,
    video_ts_s: float,
    snapshot: str | None,
    event_id: str | None = None,
    ts: str | None = None,
) -> Event:
    """Turn a rules :class:`~vigil.rules.Decision` into the event record the sinks take."""
    event_id = event_id or new_event_id()
    ts = ts or utc_timestamp()
    box = tuple(float(v) for v in bbox[:4])
    if decision.kind is DecisionKind.UNKNOWN or decision.person is None or decision.stage is None:
        return UnknownEvent(event_id, decision.camera, decision.track_id, decision.score, ts, video_ts_s,
                            frame_index, box, snapshot)
    person = decision.person
    return Alert(
        id=event_id, stage=decision.stage, person_id=person.id, person_name=person.name, list=person.list,
        camera=decision.camera, track_id=decision.track_id, score=decision.score, margin=decision.margin, ts=ts,
        video_ts_s=video_ts_s, frame_index=frame_index, bbox=box, snapshot=snapshot, label=decision.label,
    )


def describe(event: Event) -> str:
    """One readable line for logs and the console."""
    where = f"camera={event.camera} track={event.track_id} frame={event.frame_index} t={event.video_ts_s:.2f}s"
    if isinstance(event, UnknownEvent):
        return f"UNKNOWN face {where} best_score={event.score:.3f} id={event.id}"
    return (
        f"ALERT {event.stage.value} [{event.label or event.list.value}] {event.person_id} ({event.person_name}) "
        f"{where} score={event.score:.3f} margin={event.margin:.3f} id={event.id}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Sinks
# ---------------------------------------------------------------------------------------------------------------------


class Sink(Protocol):
    name: str

    def emit(self, event: Event) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


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


class JsonlSink:
    """Appends one JSON object per line; each line reaches the OS at once, ``flush``/``close`` also fsync."""

    name = "jsonl"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise VigilError(f"{self.path}: cannot open events file ({exc.strerror or exc})") from None
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        line = json.dumps(event.to_json(), ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()  # to the OS: survives a process kill

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())  # to the disk: survives a power cut

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._file.close()


def read_jsonl(path: Path | str) -> list[dict]:
    """Read an events file back; a torn last line (killed mid-write) is skipped."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping an unreadable line", path)
    return events


def open_database(path: Path | str) -> sqlite3.Connection:
    """Open (creating) the events database: WAL, synchronous=FULL, busy timeout; VigilError if it is not SQLite."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=DB_BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except (sqlite3.DatabaseError, OSError) as exc:
        raise VigilError(f"{path}: cannot open the events database ({exc})") from None
    return conn


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
        record = event.to_json()
        row = (record["id"], record["type"], record.get("stage"), record["camera"], record.get("person_id"),
               record["ts"], json.dumps(record, ensure_ascii=False))
        with self._lock, self._conn:
            self._conn.execute("INSERT OR IGNORE INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def flush(self) -> None:
        with self._lock:
            self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def load_events(db_path: Path | str, camera: str | None = None, person_id: str | None = None) -> list[dict]:
    """The stored events (as their JSON objects), oldest first, optionally for one camera and/or person."""
    conn = open_database(db_path)
    try:
        query, args = "SELECT json FROM alerts WHERE 1=1", []
        if camera is not None:
            query, args = query + " AND camera = ?", [*args, camera]
        if person_id is not None:
            query, args = query + " AND person_id = ?", [*args, person_id]
        return [json.loads(row[0]) for row in conn.execute(query + " ORDER BY ts, rowid", args)]
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------------------------
# Webhook outbox
# ---------------------------------------------------------------------------------------------------------------------

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    delivered_at REAL,
    dead_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(delivered_at, dead_at, next_attempt_at);
"""
PENDING = "delivered_at IS NULL AND dead_at IS NULL"


def backoff_delay_s(failures: int, initial_s: float, max_s: float, multiplier: float = 2.0) -> float:
    """Seconds to wait after ``failures`` (>= 1) failed attempts: ``initial * multiplier**(failures-1)``, capped.

    No jitter: there is one sender per outbox, so there is no herd to spread out.
    """
    if failures < 1:
        return 0.0
    return min(max_s, initial_s * multiplier ** min(failures - 1, 64))


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    error: str = ""  # why it failed, one line


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would follow a 301/302/303 as a GET without the body; a redirect is a failed delivery instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        return None


def post_json(url: str, event_id: str, payload: str, timeout_s: float) -> DeliveryResult:
    """POST one payload with ``Idempotency-Key``; ok on any 2xx, a one-line error otherwise. Never raises.

    Redirects are not followed (they count as failures); proxies come from the usual ``*_proxy`` variables.
    """
    request = urllib.request.Request(
        url,
        data=payload.encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": event_id, "User-Agent": f"vigil/{__version__}"},
    )
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout_s) as response:
            response.read(MAX_RESPONSE_BYTES)
            status = response.status
    except urllib.error.HTTPError as exc:
        return DeliveryResult(False, f"HTTP {exc.code}")
    except urllib.error.URLError as exc:
        return DeliveryResult(False, f"{exc.reason}")
    except (OSError, HTTPException, ValueError) as exc:  # timeouts, resets, bad status lines
        return DeliveryResult(False, f"{type(exc).__name__}: {exc}")
    return DeliveryResult(200 <= status < 300, "" if 200 <= status < 300 else f"HTTP {status}")


class WebhookSink:
    """HTTP POST delivery from the durable ``outbox`` table, at least once, by one worker thread.

    ``wall_clock`` (epoch seconds) is injectable for tests; ``poll_interval_s`` bounds how long the worker sleeps
    when nothing is due; ``batch_size`` bounds the rows sent per loop (it re-checks the stop flag between rows).
    """

    name = "webhook"

    def __init__(
        self,
        db_path: Path | str,
        config: WebhookSinkConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        poll_interval_s: float = 1.0,
        batch_size: int = 32,
        start: bool = True,
        post: Callable[[str, str, str, float], DeliveryResult] = post_json,
    ) -> None:
        self.db_path = Path(db_path)
        self.config = config
        self._clock = wall_clock
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._post = post
        self._lock = threading.Lock()  # guards the connection; never held during HTTP
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._closed = False
        self._conn = open_database(self.db_path)
        self._prepare()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def _prepare(self) -> None:
        """Create the table, make every pending row due now (restart = retry now), prune old delivered rows."""
        now = self._clock()
        try:
            with self._lock, self._conn:
                self._conn.executescript(OUTBOX_SCHEMA)
                pending = self._conn.execute(f"UPDATE outbox SET next_attempt_at = ? WHERE {PENDING}", (now,)).rowcount
                self._conn.execute("DELETE FROM outbox WHERE delivered_at < ?", (now - DELIVERED_RETENTION_S,))
        except sqlite3.DatabaseError as exc:
            raise VigilError(f"{self.db_path}: cannot prepare the webhook outbox ({exc})") from None
        if pending:
            log.info("webhook: %d undelivered event(s) from an earlier run will be sent", pending)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vigil-webhook", daemon=True)
            self._thread.start()

    def emit(self, event: Event) -> None:
        """Store the event in the outbox (one transaction) and wake the worker; the POST happens later."""
        record = event.to_json()
        now = self._clock()
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO outbox (id, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?)",
                (record["id"], json.dumps(record, ensure_ascii=False), now, now),
            )
        self._wake.set()

    def flush(self) -> None:
        """Nothing to do: an emitted event is already durable in the outbox."""

    def close(self) -> None:
        """Stop the worker (waits for at most one in-flight POST) and close the database; undelivered rows stay."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout_s + 2.0)
            if self._thread.is_alive():
                log.warning("webhook: worker still busy at close; its undelivered events stay in the outbox")
        with self._lock:
            self._closed = True
            self._conn.close()

    # -- delivery ----------------------------------------------------------------------------------------------------

    def deliver_due(self) -> int:
        """Send up to ``batch_size`` due rows, oldest first; returns how many were attempted."""
        rows = self._due_rows()
        for event_id, payload, attempts in rows:
            if self._stop.is_set():
                break
            result = self._post(self.config.url, event_id, payload, self.config.timeout_s)
            self._record(event_id, attempts + 1, result)
        return len(rows)

    def _due_rows(self) -> list[tuple[str, str, int]]:
        now = self._clock()
        with self._lock:
            if self._closed:
                return []
            return self._conn.execute(
                f"SELECT id, payload, attempts FROM outbox WHERE {PENDING} "
                "AND (next_attempt_at <= ? OR next_attempt_at > ?) ORDER BY seq LIMIT ?",
                (now, now + self.config.max_backoff_s, self._batch_size),
            ).fetchall()

    def _record(self, event_id: str, attempts: int, result: DeliveryResult) -> None:
        now = self._clock()
        dead = not result.ok and attempts >= self.config.max_attempts
        delay = backoff_delay_s(attempts, self.config.initial_backoff_s, self.config.max_backoff_s)
        with self._lock:
            if self._closed:
                return
            with self._conn:
                self._conn.execute(
                    "UPDATE outbox SET attempts = ?, last_error = ?, next_attempt_at = ?, delivered_at = ?, "
                    "dead_at = ? WHERE id = ?",
                    (attempts, result.error or None, now + delay, now if result.ok else None, now if dead else None,
                     event_id),
                )
        url = mask_url(self.config.url)
        if dead:
            log.warning("webhook: giving up on event %s after %d attempts to %s: %s", event_id, attempts, url,
                        result.error)
        elif not result.ok and attempts == 1:
            log.warning("webhook: delivery of %s to %s failed (%s); retrying with backoff", event_id, url,
                        result.error)
        elif result.ok and attempts > 1:
            log.info("webhook: delivered %s after %d attempts", event_id, attempts)

    def _seconds_until_due(self) -> float:
        with self._lock:
            if self._closed:
                return self._poll_interval_s
            row = self._conn.execute(f"SELECT MIN(next_attempt_at) FROM outbox WHERE {PENDING}").fetchone()
        if row is None or row[0] is None:
            return self._poll_interval_s
        return min(self._poll_interval_s, max(0.0, row[0] - self._clock()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                attempted = self.deliver_due()
                wait_s = 0.0 if attempted >= self._batch_size else self._seconds_until_due()
            except sqlite3.Error as exc:
                log.warning("webhook: outbox database error (%s); retrying in %.1f s", exc, self._poll_interval_s)
                wait_s = self._poll_interval_s
            if wait_s > 0:
                self._wake.wait(max(wait_s, 0.005))

    # -- inspection (tests, `vigil doctor`, shutdown) ----------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows by state: ``pending``, ``delivered``, ``dead``."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT SUM({PENDING}), SUM(delivered_at IS NOT NULL), SUM(dead_at IS NOT NULL) FROM outbox"
            ).fetchone()
        return {"pending": row[0] or 0, "delivered": row[1] or 0, "dead": row[2] or 0}

    def wait_until_delivered(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until no row is pending; True when none is (dead rows do not count)."""
        deadline = time.monotonic() + timeout_s
        while self.counts()["pending"]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._stop.wait(min(0.02, remaining))
        return True


# ---------------------------------------------------------------------------------------------------------------------
# Fan-out and snapshots
# ---------------------------------------------------------------------------------------------------------------------


class AlertDispatcher:
    """Sends each event to every sink; a failing sink logs a warning and the others still get the event."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    @classmethod
    def from_config(cls, config: AlertsConfig, data_dir: Path | str, **webhook_options) -> AlertDispatcher:
        """Build the configured sinks; SQLite and the webhook outbox share ``<data_dir>/events.sqlite3``.

        The durable sinks come first so an event is stored before it is printed.
        """
        db_path = Path(data_dir) / DB_FILENAME
        sinks: list[Sink] = []
        try:
            if config.sqlite:
                sinks.append(SqliteSink(db_path))
            if config.webhook is not None:
                sinks.append(WebhookSink(db_path, config.webhook, **webhook_options))
            if config.jsonl is not None:
                sinks.append(JsonlSink(config.jsonl.path))
            if config.console:
                sinks.append(ConsoleSink())
        except Exception:
            cls(sinks).close()
            raise
        return cls(sinks)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception as exc:  # one broken sink must not silence the others
                log.warning("alert sink %s failed for event %s: %s", sink.name, event.id, exc)

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

    def __exit__(self, *exc_info) -> None:
        self.close()


def snapshot_path(data_dir: Path | str, event_id: str, day: date | None = None) -> Path:
    """``<data_dir>/snapshots/<YYYY-MM-DD>/<id>.jpg`` (UTC date of today unless ``day`` is given)."""
    day = day or datetime.now(timezone.utc).date()
    return Path(data_dir) / SNAPSHOT_DIRNAME / day.isoformat() / f"{event_id}.jpg"


def save_snapshot(data_dir: Path | str, event_id: str, image_bgr: np.ndarray, day: date | None = None) -> str | None:
    """Write a face crop as JPEG (atomically: temp file, then rename); returns its path, or None with a warning.

    A failed snapshot must not cost the alert, so this never raises for I/O or encoding problems.
    """
    import cv2  # heavy; only needed when a snapshot is saved

    path = snapshot_path(data_dir, event_id, day)
    try:
        if image_bgr is None or image_bgr.size == 0:
            raise ValueError("empty image")
        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image_bgr), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise ValueError("JPEG encoding failed")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jpg.tmp")
        tmp.write_bytes(encoded.tobytes())
        os.replace(tmp, path)
    except (OSError, ValueError, cv2.error) as exc:
        log.warning("%s: cannot save snapshot (%s)", path, exc)
        return None
    return str(path)
