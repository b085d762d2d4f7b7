"""Durable, at-least-once delivery of events from a table of the events database, by one worker thread.

``Outbox.put(event)`` only inserts the event's JSON payload into the table (one transaction); inside
:class:`vigil.alerts.AlertDispatcher` the row is instead written by :meth:`Outbox.insert` in the one transaction that
also stores the event (``alerts``) and its other outbox rows (:mod:`vigil.alerts.transaction`), so a crash leaves an
event stored and queued for every sink, or not stored at all: never stored but not delivered. The worker sends due
rows oldest first through the ``send(event_id, payload)`` function it was given (the webhook's POST; the MQTT
publish), marks a success as delivered, otherwise reschedules the row with exponential backoff
(:func:`vigil.backoff.backoff_delay_s`) until ``max_attempts``, after which the row is marked dead and one warning is
logged. A row delivered and then the process killed before it is marked may be sent twice: receivers de-duplicate
by the event id.

The receiver, not each row, is what fails during an outage, so the worker also keeps the *channel's* state
(:class:`ChannelState`, pure functions): after a failed delivery the channel is down and the worker sends nothing
but one row per channel backoff, or when a new event arrives (a probe: rows behind it are not charged attempts;
once every row is given up, the probe sends the oldest of them without counting); the first delivery that
succeeds ends the outage and catches up at once: every waiting row is due now, and rows that were given up during
the outage are queued again (once per process, so a row the receiver always rejects cannot loop). Dead rows are
also queued again on every start, and by ``vigil outbox retry`` (:func:`retry_dead`) while a run goes on; their
number is in :meth:`Outbox.status` (the status line of ``vigil run``).

A transport that knows when it cannot deliver (MQTT: not connected to the broker) passes ``ready``: while it returns
False the worker attempts nothing, so an outage costs no attempts (and counts as the receiver being down in
:meth:`Outbox.status`); when the transport is back it calls :meth:`Outbox.retry_now`, which makes every pending row
due at once and sends a probe at once even if the channel was in backoff, so its success catches up as above.

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
OUTBOX_COLUMNS = frozenset({"id", "payload", "attempts", "next_attempt_at", "delivered_at", "dead_at"})
REVIVE = "attempts = 0, dead_at = NULL, next_attempt_at = ?"  # a given-up row queued again, due at the given time


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


@dataclass(frozen=True)
class ChannelState:
    """Whether the receiver takes deliveries: ``failures`` in a row (0: up), since when (wall clock), and when the
    next probe may go. Changed only by :func:`after_failure` and :func:`after_success`."""

    failures: int = 0
    down_since: float | None = None
    retry_at: float = 0.0

    def may_send(self, now: float, retry: RetryPolicy) -> bool:
        """Up, or down and the probe is due (a ``retry_at`` beyond one max backoff means the clock went back)."""
        return not self.failures or now >= self.retry_at or self.retry_at - now > retry.max_backoff_s


def after_failure(state: ChannelState, now: float, retry: RetryPolicy) -> ChannelState:
    """The channel after a failed delivery: one more failure, the next probe one channel backoff away."""
    failures = state.failures + 1
    delay = backoff_delay_s(failures, retry.initial_backoff_s, retry.max_backoff_s)
    return ChannelState(failures, state.down_since if state.down_since is not None else now, now + delay)


def after_success(state: ChannelState) -> tuple[ChannelState, float | None]:
    """The channel after a delivery that succeeded, and when the outage it ends began (None: it was up)."""
    return ChannelState(), state.down_since


@dataclass(frozen=True)
class OutboxStatus:
    """One outbox at a glance (health, the status line): rows by state, and how long the receiver has been failing."""

    channel: str
    pending: int
    delivered: int
    dead: int
    receiver_down_s: float | None  # None while the receiver takes deliveries


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
        self._channel = ChannelState()  # only the worker changes it (deliver_due)
        self._fresh = threading.Event()  # a new event arrived: worth a probe even while the receiver is down
        self._revived: set[str] = set()  # rows queued again when an outage ended (at most once each per process)
        self._unready_since: float | None = None  # wall clock: since when ``ready`` has said False (None: ready)
        self._conn = open_database(self.db_path)
        self._prepare()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def _prepare(self) -> None:
        """Create the table, make every pending row due now and queue given-up rows again (a restart retries
        everything at once), prune old delivered rows."""
        now = self._clock()
        try:
            with self._lock, self._conn:
                self._conn.executescript(outbox_schema(self.table))
                dead = self._conn.execute(
                    f"UPDATE {self.table} SET {REVIVE} WHERE dead_at IS NOT NULL", (now,)
                ).rowcount
                pending = self._conn.execute(
                    f"UPDATE {self.table} SET next_attempt_at = ? WHERE {PENDING}", (now,)
                ).rowcount
                self._conn.execute(f"DELETE FROM {self.table} WHERE delivered_at < ?", (now - DELIVERED_RETENTION_S,))
        except sqlite3.DatabaseError as exc:
            raise VigilError(f"{self.db_path}: cannot prepare the {self.channel} outbox ({exc})") from None
        if pending:
            log.info(
                "%s: %d undelivered event(s) from an earlier run will be sent (%d of them given up before)",
                self.channel,
                pending,
                dead,
            )

    def retry_now(self) -> int:
        """Make every pending row due now and wake the worker for a probe even if the channel is in backoff (a
        transport that is back); returns how many rows are pending."""
        with self._lock:
            if self._closed:
                return 0
            with self._conn:
                pending = self._conn.execute(
                    f"UPDATE {self.table} SET next_attempt_at = ? WHERE {PENDING}", (self._clock(),)
                ).rowcount
        self._fresh.set()
        self._wake.set()
        return pending

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"vigil-{self.channel}", daemon=True)
            self._thread.start()

    def put(self, event: Event) -> None:
        """Store the event in the outbox (one transaction) and wake the worker; the send happens later."""
        with self._lock, self._conn:
            self.insert(self._conn, event)
        self.notify()

    def insert(self, conn: sqlite3.Connection, event: Event) -> None:
        """The event's row, due now, through ``conn`` inside the caller's transaction (no commit; a replayed id is
        ignored). Call :meth:`notify` once that transaction committed."""
        record = event.to_json()
        now = self._clock()
        conn.execute(
            f"INSERT OR IGNORE INTO {self.table} (id, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?)",
            (record["id"], json.dumps(record, ensure_ascii=False), now, now),
        )

    def notify(self) -> None:
        """A new row was committed: wake the worker (worth a probe even while the receiver is down)."""
        self._fresh.set()
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
        """Send up to ``batch_size`` due rows, oldest first; stops at the first failure. While the receiver is down,
        one probe per channel backoff (or when a new event arrived): the longest-waiting row, or if none waits, the
        oldest row given up during this outage (a failed probe of it changes nothing). Returns how many were tried."""
        fresh = self._fresh.is_set()
        self._fresh.clear()
        if not (fresh or self._channel.may_send(self._clock(), self.retry)):
            return 0
        rows = self._probe_rows() if self._channel.failures else self._due_rows(self._batch_size)
        attempted = 0
        for event_id, payload, attempts, given_up in rows:
            if self._stop.is_set():
                break
            result = self._send(event_id, payload)
            attempted += 1
            if result.ok or not given_up:
                self._record(event_id, attempts + 1, result)
            if not result.ok:
                self._channel = after_failure(self._channel, self._clock(), self.retry)
                break
            self._channel, outage_began = after_success(self._channel)
            if outage_began is not None:  # the probe found the receiver back: everything waiting goes now
                self._catch_up(outage_began)
                return attempted + self.deliver_due()
        return attempted

    def _catch_up(self, outage_began: float) -> None:
        """The receiver is back: every waiting row is due now, rows given up since the outage began are queued
        again (each once per process)."""
        now = self._clock()
        with self._lock:
            if self._closed:
                return
            with self._conn:
                waiting = self._conn.execute(
                    f"UPDATE {self.table} SET next_attempt_at = ? WHERE {PENDING} AND next_attempt_at > ?", (now, now)
                ).rowcount
                dead = [
                    row[0]
                    for row in self._conn.execute(f"SELECT id FROM {self.table} WHERE dead_at >= ?", (outage_began,))
                    if row[0] not in self._revived
                ]
                self._conn.executemany(f"UPDATE {self.table} SET {REVIVE} WHERE id = ?", [(now, i) for i in dead])
        self._revived.update(dead)
        log.info(
            "%s: %s takes deliveries again after %.0f s: %d waiting event(s) sent now, %d given-up event(s) queued "
            "again",
            self.channel,
            self.target,
            now - outage_began,
            waiting,
            len(dead),
        )

    def _due_rows(self, limit: int) -> list[tuple[str, str, int, bool]]:
        now = self._clock()
        with self._lock:
            if self._closed:
                return []
            rows = self._conn.execute(
                f"SELECT id, payload, attempts FROM {self.table} WHERE {PENDING} "
                "AND (next_attempt_at <= ? OR next_attempt_at > ?) ORDER BY seq LIMIT ?",
                (now, now + self.retry.max_backoff_s, limit),
            ).fetchall()
        return [(event_id, payload, attempts, False) for event_id, payload, attempts in rows]

    def _probe_rows(self) -> list[tuple[str, str, int, bool]]:
        """The one row a probe sends: the pending row that waited longest, else the oldest given up since the outage
        began (so a receiver that comes back after every row was given up is still found)."""
        with self._lock:
            if self._closed:
                return []
            row = (
                self._conn.execute(
                    f"SELECT id, payload, attempts, 0 FROM {self.table} WHERE {PENDING} "
                    "ORDER BY next_attempt_at, seq LIMIT 1"
                ).fetchone()
                or self._conn.execute(
                    f"SELECT id, payload, attempts, 1 FROM {self.table} WHERE dead_at >= ? ORDER BY seq LIMIT 1",
                    (self._channel.down_since,),
                ).fetchone()
            )
        return [] if row is None else [(row[0], row[1], row[2], bool(row[3]))]

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
        now = self._clock()
        if not self._channel.may_send(now, self.retry):
            return min(self._poll_interval_s, self._channel.retry_at - now)
        with self._lock:
            if self._closed:
                return self._poll_interval_s
            row = self._conn.execute(f"SELECT MIN(next_attempt_at) FROM {self.table} WHERE {PENDING}").fetchone()
        if row is None or row[0] is None:
            return self._poll_interval_s
        return min(self._poll_interval_s, max(0.0, row[0] - now))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            if not self._transport_ready():
                self._wake.wait(self._poll_interval_s)  # nothing is attempted while the transport is down
                continue
            try:
                attempted = self.deliver_due()
                busy = attempted >= self._batch_size and not self._channel.failures
                wait_s = 0.0 if busy else self._seconds_until_due()
            except sqlite3.Error as exc:
                log.warning(
                    "%s: outbox database error (%s); retrying in %.1f s", self.channel, exc, self._poll_interval_s
                )
                wait_s = self._poll_interval_s
            if wait_s > 0:
                self._wake.wait(max(wait_s, 0.005))

    def _transport_ready(self) -> bool:
        """``ready``'s answer (True without one); remembers since when it has said False."""
        ready = self._ready is None or self._ready()
        if ready:
            self._unready_since = None
        elif self._unready_since is None:
            self._unready_since = self._clock()
        return ready

    # -- inspection (tests, `vigil doctor`, shutdown) ----------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows by state: ``pending``, ``delivered``, ``dead``."""
        with self._lock:
            return table_counts(self._conn, self.table)

    def status(self) -> OutboxStatus:
        """Rows by state and how long the receiver has been failing or the transport not ready (None while it takes
        deliveries)."""
        counts = self.counts()
        self._transport_ready()
        since = [t for t in (self._channel.down_since, self._unready_since) if t is not None]
        down_s = max(self._clock() - min(since), 0.0) if since else None
        return OutboxStatus(self.channel, counts["pending"], counts["delivered"], counts["dead"], down_s)

    def wait_until_delivered(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until no row is pending; True when none is (dead rows do not count)."""
        deadline = time.monotonic() + timeout_s
        while self.counts()["pending"]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._stop.wait(min(0.02, remaining))
        return True


class OutboxDelivered:
    """The event side of a sink delivered from an :class:`Outbox` (webhook, MQTT), as a
    :class:`~vigil.alerts.sink.TransactionalSink`: ``emit`` stores the event in the outbox (one transaction of its
    own) and wakes the worker; ``insert_rows`` / ``rows_committed`` do the same inside the dispatcher's one
    transaction per event."""

    outbox: Outbox
    db_path: Path

    def emit(self, event: Event) -> None:
        """Store the event in the outbox (one transaction) and wake the worker; the delivery happens later."""
        self.outbox.put(event)

    def insert_rows(self, conn: sqlite3.Connection, event: Event) -> None:
        self.outbox.insert(conn, event)

    def rows_committed(self, event: Event) -> None:
        self.outbox.notify()

    def flush(self) -> None:
        """Nothing to do: an emitted event is already durable in the outbox."""


# -- every outbox table of a database (`vigil outbox status|retry`; any sink delivered from an outbox) -------------


def table_counts(conn: sqlite3.Connection, table: str) -> dict[str, int]:
    """Rows of one outbox table by state: ``pending``, ``delivered``, ``dead``."""
    row = conn.execute(
        f"SELECT SUM({PENDING}), SUM(delivered_at IS NOT NULL), SUM(dead_at IS NOT NULL) FROM {table}"
    ).fetchone()
    return {"pending": row[0] or 0, "delivered": row[1] or 0, "dead": row[2] or 0}


def outbox_tables(conn: sqlite3.Connection) -> list[str]:
    """The tables of the database that are outboxes (they have the outbox columns), by name."""
    names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return [
        name
        for name in names
        if OUTBOX_COLUMNS.issubset(row[1] for row in conn.execute(f'PRAGMA table_info("{name}")'))
    ]


def outbox_counts(db_path: Path | str) -> dict[str, dict[str, int]]:
    """Each outbox table of the events database with its rows by state (empty when the database does not exist)."""
    if not Path(db_path).is_file():
        return {}
    conn = open_database(db_path)
    try:
        return {table: table_counts(conn, table) for table in outbox_tables(conn)}
    except sqlite3.DatabaseError as exc:
        raise VigilError(f"{db_path}: cannot read the outbox ({exc})") from None
    finally:
        conn.close()


def retry_dead(db_path: Path | str, wall_clock: Callable[[], float] = time.time) -> dict[str, int]:
    """Queue every given-up row of every outbox table again, due now; how many per table. A running ``vigil run``
    picks them up within its poll interval (one SQLite transaction; safe while it runs)."""
    if not Path(db_path).is_file():
        return {}
    conn = open_database(db_path)
    try:
        with conn:
            return {
                table: conn.execute(f"UPDATE {table} SET {REVIVE} WHERE dead_at IS NOT NULL", (wall_clock(),)).rowcount
                for table in outbox_tables(conn)
            }
    except sqlite3.DatabaseError as exc:
        raise VigilError(f"{db_path}: cannot update the outbox ({exc})") from None
    finally:
        conn.close()
