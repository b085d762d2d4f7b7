"""Retention: personal data is deleted when its time is up (``retention:`` in the config).

Policy (pure, tested with a fake clock): :func:`cutoffs` turns "now" and the configured days into the oldest
timestamp each kind of record may have. :func:`apply_retention` deletes, in small transactions so the alert sinks
never wait long for the database lock: alerts and unknown-face events older than their cutoffs (with their
snapshots and marks), snapshots older than theirs (the event stays, ``snapshot: null``), snapshot files no event
names any more, and audit entries older than ``audit_days``. :class:`RetentionJob` runs it on start and every
``interval_s`` in its own thread; each run that deleted something leaves one audit entry.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vigil.alerts import utc_timestamp
from vigil.alerts.snapshots import SNAPSHOT_DIRNAME
from vigil.config import RetentionConfig
from vigil.store.audit import SYSTEM, AuditLog
from vigil.store.db import Database

log = logging.getLogger("vigil.retention")
BATCH_ROWS = 500  # rows deleted per transaction


@dataclass(frozen=True)
class Cutoffs:
    """Records with a timestamp before these (ISO-8601 UTC, the events' own format) are deleted."""

    alerts: str
    unknown_events: str
    snapshots: str
    audit: str


@dataclass(frozen=True)
class RetentionReport:
    alerts: int = 0
    unknown_events: int = 0
    snapshots: int = 0  # snapshot files deleted (with their events, on their own, or orphaned)
    audit: int = 0

    @property
    def total(self) -> int:
        return self.alerts + self.unknown_events + self.snapshots + self.audit


def cutoffs(now: datetime, config: RetentionConfig) -> Cutoffs:
    """The oldest timestamp each kind may keep at ``now``; a snapshot never outlives its event."""

    def before(days: float) -> str:
        return utc_timestamp(now - timedelta(days=days))

    return Cutoffs(
        alerts=before(config.alerts_days),
        unknown_events=before(config.unknown_events_days),
        snapshots=before(config.snapshots_days),
        audit=before(config.audit_days),
    )


def snapshot_day_expired(day_folder: str, cutoff: str) -> bool:
    """A ``snapshots/<YYYY-MM-DD>`` folder whose whole day lies before ``cutoff`` (pure; folders not named as a
    date are never expired)."""
    try:
        day = datetime.strptime(day_folder, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return False
    return utc_timestamp(day + timedelta(days=1)) <= cutoff


def apply_retention(db: Database, data_dir: Path, limits: Cutoffs) -> RetentionReport:
    snapshot_root = (Path(data_dir) / SNAPSHOT_DIRNAME).resolve()
    alerts, files_a = _delete_events(db, "alert", limits.alerts, snapshot_root)
    unknown, files_u = _delete_events(db, "unknown", limits.unknown_events, snapshot_root)
    files_s = _drop_snapshots(db, limits.snapshots, snapshot_root)
    files_o = _drop_expired_day_folders(snapshot_root, limits.snapshots)
    return RetentionReport(alerts, unknown, files_a + files_u + files_s + files_o, _prune_audit(db, limits.audit))


def _delete_events(db: Database, kind: str, cutoff: str, snapshot_root: Path) -> tuple[int, int]:
    deleted = files = 0
    while True:
        with db.transaction() as conn:
            rows = conn.execute(
                "SELECT id, json_extract(json, '$.snapshot') FROM alerts WHERE type = ? AND ts < ? LIMIT ?",
                (kind, cutoff, BATCH_ROWS),
            ).fetchall()
            ids = [(row[0],) for row in rows]
            conn.executemany("DELETE FROM alerts WHERE id = ?", ids)
            conn.executemany("DELETE FROM acknowledgements WHERE event_id = ?", ids)
            conn.executemany("DELETE FROM false_matches WHERE event_id = ?", ids)
        files += sum(remove_snapshot(row[1], snapshot_root) for row in rows)
        deleted += len(rows)
        if len(rows) < BATCH_ROWS:
            return deleted, files


def _drop_snapshots(db: Database, cutoff: str, snapshot_root: Path) -> int:
    files = 0
    while True:
        with db.transaction() as conn:
            rows = conn.execute(
                "SELECT id, json_extract(json, '$.snapshot') FROM alerts WHERE ts < ? "
                "AND json_extract(json, '$.snapshot') IS NOT NULL LIMIT ?",
                (cutoff, BATCH_ROWS),
            ).fetchall()
            conn.executemany(
                "UPDATE alerts SET json = json_set(json, '$.snapshot', NULL) WHERE id = ?", [(row[0],) for row in rows]
            )
        files += sum(remove_snapshot(row[1], snapshot_root) for row in rows)
        if len(rows) < BATCH_ROWS:
            return files


def _drop_expired_day_folders(snapshot_root: Path, cutoff: str) -> int:
    """Whole day folders past the cutoff (snapshots whose event was lost or deleted elsewhere)."""
    files = 0
    if not snapshot_root.is_dir():
        return 0
    for folder in snapshot_root.iterdir():
        if folder.is_dir() and not folder.is_symlink() and snapshot_day_expired(folder.name, cutoff):
            files += sum(1 for path in folder.rglob("*") if path.is_file())
            shutil.rmtree(folder, ignore_errors=True)
    return files


def _prune_audit(db: Database, cutoff: str) -> int:
    with db.transaction() as conn:
        conn.execute("UPDATE audit_prune_cutoff SET cutoff = ? WHERE id = 1", (cutoff,))
        deleted = conn.execute("DELETE FROM audit WHERE ts < ?", (cutoff,)).rowcount
        conn.execute("UPDATE audit_prune_cutoff SET cutoff = '' WHERE id = 1")
    return deleted


def remove_snapshot(path: str | None, snapshot_root: Path) -> bool:
    """Delete one snapshot file if it lies under ``snapshot_root`` (a path from the database is not trusted)."""
    if not path:
        return False
    target = Path(path).resolve()
    if not target.is_relative_to(snapshot_root) or not target.is_file():
        return False
    try:
        target.unlink()
    except OSError as exc:
        log.warning("%s: cannot delete snapshot (%s)", target, exc)
        return False
    return True


class RetentionJob:
    """Applies retention on start and every ``config.interval_s`` until stopped (its own daemon thread)."""

    def __init__(
        self,
        db: Database,
        data_dir: Path,
        config: RetentionConfig,
        audit: AuditLog,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.data_dir, self.config, self.audit = db, Path(data_dir), config, audit
        self._clock = wall_clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_run: str | None = None
        self.last_report = RetentionReport()

    def run_once(self) -> RetentionReport:
        now = datetime.fromtimestamp(self._clock(), UTC)
        report = apply_retention(self.db, self.data_dir, cutoffs(now, self.config))
        self.last_run, self.last_report = utc_timestamp(now), report
        if report.total:
            detail = (
                f"deleted {report.alerts} alerts, {report.unknown_events} unknown-face events, "
                f"{report.snapshots} snapshots, {report.audit} audit entries"
            )
            log.info("retention: %s", detail)
            self.audit.record(SYSTEM, "retention.apply", None, detail=detail)
        return report

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vigil-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # a retention failure must not end the service; it is retried next interval
                log.warning("retention: run failed (%s); retrying in %.0f s", exc, self.config.interval_s)
            self._stop.wait(self.config.interval_s)
