"""Durable, at-least-once delivery of events from a table of the events database, by one worker thread.

``Outbox.put(event)`` only inserts the event's JSON payload into the table (one transaction); the worker sends due
rows oldest first through the ``send(event_id, payload)`` function it was given (the webhook's POST; the MQTT
publish), marks a success as delivered, otherwise reschedules the row with exponential backoff
(:func:`vigil.backoff.backoff_delay_s`) until ``max_attempts``, after which the row is marked dead and one warning is
logged. A row delivered and then the process killed before it is marked may be sent twice: receivers de-duplicate
by the event id.

A transport that knows when it cannot deliver (MQTT: not connected to the broker) passes ``ready``: while it returns
False the worker attempts nothing, so an outage costs no attempts; when the transport is back it calls
:meth:`Outbox.retry_now`, which makes every pending row due at once.

Time (the one exception to "monotonic time only"): due times must survive restarts, which a monotonic clock cannot,
so ``next_attempt_at`` is wall-clock epoch seconds. Two guards make clock jumps harmless: on start every pending row
is made due at once (a restart retries immediately), and a row whose due time lies more than ``max_backoff_s`` in
the future (the clock went back) is treated as due.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vigil.alerts.database import open_database
from vigil.backoff import backoff_delay_s
from vigil.errors import VigilError
from vigil.types import Event

log = logging.getLogger("vigil.alerts")

DELIVERED_RETENTION_S = 7 * 24 * 3600.0  # delivered outbox rows are pruned on start after this long
PENDING = "delivered_at IS NULL AND dead_at IS NULL"


def outbox_schema(table: str) -> str:
    """The outbox table ``table`` and its index (``outbox`` is the webhook's)."""
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
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
CREATE INDEX IF NOT EXISTS {table}_pending ON {table}(delivered_at, dead_at, next_attempt_at);
"""


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    error: str = ""  # why it failed, one line


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a row is retried (a sink's config section gives these)."""

    max_attempts: int
    initial_backoff_s: float
    max_backoff_s: float


Send = Callable[[str, str], DeliveryResult]  # (event id, JSON payload) -> result; must not raise


class Outbox:
    """One outbox table and the worker thread that delivers it (see the module docstring).

    ``channel`` names the sink in log lines and the thread name; ``target`` is where it sends, as it may be logged
    (credentials masked). ``wall_clock`` (epoch seconds) is injectable for tests; ``poll_interval_s`` bounds how long
    the worker sleeps when nothing is due; ``batch_size`` bounds the rows sent per loop (it re-checks the stop flag
    between rows); ``close_timeout_s`` bounds the wait for an in-flight send at close; ``ready`` (None: always)
    tells the worker whether the transport can deliver now.
    """

    def __init__(
        self,
        db_path: Path | str,
        send: Send,
        retry: RetryPolicy,
        *,
        channel: str,
        target: str,
        table: str = "outbox",
        close_timeout_s: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
        poll_interval_s: float = 1.0,
        batch_size: int = 32,
        start: bool = True,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.retry = retry
        self.channel = channel
        self.target = target
        self.table = table
        self._send = send
        self._close_timeout_s = close_timeout_s
        self._clock = wall_clock
        self._poll_interval_s = poll_interval_s
        self._batch_size = batch_size
        self._ready = ready
        self._lock = threading.Lock()  # guards the connection; never held while sending
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
                self._conn.executescript(outbox_schema(self.table))
                pending = self._conn.execute(
                    f"UPDATE {self.table} SET next_attempt_at = ? WHERE {PENDING}", (now,)
                ).rowcount
                self._conn.execute(f"DELETE FROM {self.table} WHERE delivered_at < ?", (now - DELIVERED_RETENTION_S,))
        except sqlite3.DatabaseError as exc:
            raise VigilError(f"{self.db_path}: cannot prepare the {self.channel} outbox ({exc})") from None
        if pending:
            log.info("%s: %d undelivered event(s) from an earlier run will be sent", self.channel, pending)

    def retry_now(self) -> int:
        """Make every pending row due now and wake the worker (a restart, a transport that is back); returns how
        many rows are pending."""
        with self._lock:
            if self._closed:
                return 0
            with self._conn:
                pending = self._conn.execute(
                    f"UPDATE {self.table} SET next_attempt_at = ? WHERE {PENDING}", (self._clock(),)
                ).rowcount
        self._wake.set()
        return pending

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"vigil-{self.channel}", daemon=True)
            self._thread.start()

    def put(self, event: Event) -> None:
        """Store the event in the outbox (one transaction) and wake the worker; the send happens later."""
        record = event.to_json()
        now = self._clock()
        with self._lock, self._conn:
            self._conn.execute(
                f"INSERT OR IGNORE INTO {self.table} (id, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?)",
                (record["id"], json.dumps(record, ensure_ascii=False), now, now),
            )
        self._wake.set()

    def close(self) -> None:
        """Stop the worker (waits for at most one in-flight send) and close the database; undelivered rows stay."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self._close_timeout_s)
            if self._thread.is_alive():
                log.warning("%s: worker still busy at close; its undelivered events stay in the outbox", self.channel)
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
            self._record(event_id, attempts + 1, self._send(event_id, payload))
        return len(rows)

    def _due_rows(self) -> list[tuple[str, str, int]]:
        now = self._clock()
        with self._lock:
            if self._closed:
                return []
            return self._conn.execute(
                f"SELECT id, payload, attempts FROM {self.table} WHERE {PENDING} "
                "AND (next_attempt_at <= ? OR next_attempt_at > ?) ORDER BY seq LIMIT ?",
                (now, now + self.retry.max_backoff_s, self._batch_size),
            ).fetchall()

    def _record(self, event_id: str, attempts: int, result: DeliveryResult) -> None:
        now = self._clock()
        dead = not result.ok and attempts >= self.retry.max_attempts
        delay = backoff_delay_s(attempts, self.retry.initial_backoff_s, self.retry.max_backoff_s)
        with self._lock:
            if self._closed:
                return
            with self._conn:
                self._conn.execute(
                    f"UPDATE {self.table} SET attempts = ?, last_error = ?, next_attempt_at = ?, delivered_at = ?, "
                    "dead_at = ? WHERE id = ?",
                    (
                        attempts,
                        result.error or None,
                        now + delay,
                        now if result.ok else None,
                        now if dead else None,
                        event_id,
                    ),
                )
        self._log_outcome(event_id, attempts, result, dead)

    def _log_outcome(self, event_id: str, attempts: int, result: DeliveryResult, dead: bool) -> None:
        if dead:
            log.warning(
                "%s: giving up on event %s after %d attempts to %s: %s",
                self.channel,
                event_id,
                attempts,
                self.target,
                result.error,
            )
        elif not result.ok and attempts == 1:
            log.warning(
                "%s: delivery of %s to %s failed (%s); retrying with backoff",
                self.channel,
                event_id,
                self.target,
                result.error,
            )
        elif result.ok and attempts > 1:
            log.info("%s: delivered %s after %d attempts", self.channel, event_id, attempts)

    def _seconds_until_due(self) -> float:
        with self._lock:
            if self._closed:
                return self._poll_interval_s
            row = self._conn.execute(f"SELECT MIN(next_attempt_at) FROM {self.table} WHERE {PENDING}").fetchone()
        if row is None or row[0] is None:
            return self._poll_interval_s
        return min(self._poll_interval_s, max(0.0, row[0] - self._clock()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            if self._ready is not None and not self._ready():
                self._wake.wait(self._poll_interval_s)  # nothing is attempted while the transport is down
                continue
            try:
                attempted = self.deliver_due()
                wait_s = 0.0 if attempted >= self._batch_size else self._seconds_until_due()
            except sqlite3.Error as exc:
                log.warning(
                    "%s: outbox database error (%s); retrying in %.1f s", self.channel, exc, self._poll_interval_s
                )
                wait_s = self._poll_interval_s
            if wait_s > 0:
                self._wake.wait(max(wait_s, 0.005))

    # -- inspection (tests, `vigil doctor`, shutdown) ----------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows by state: ``pending``, ``delivered``, ``dead``."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT SUM({PENDING}), SUM(delivered_at IS NOT NULL), SUM(dead_at IS NOT NULL) FROM {self.table}"
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
