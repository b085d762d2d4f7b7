"""The audit log: who read which biometric data and who changed what, when, from where; append-only.

One row per access or change: ``actor`` (``user:alice``, ``token:1a2b3c4d``, ``cli:root``, ``anonymous``,
``system``), its ``role``, the ``client`` address, an ``action`` (``snapshot.read``, ``person.create``,
``login.failure``...), the ``object`` (``event:<id>``, ``person:<id>``, ``user:<name>``...), the ``outcome`` (``ok``,
``denied``, ``invalid``, ``failed``) and a one-line ``detail``. Rows are never updated; only the retention job
deletes rows older than ``retention.audit_days`` (see vigil/store/db.py for the guard).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from vigil.alerts import utc_timestamp
from vigil.store.db import Database

MAX_DETAIL_CHARS = 500
ACTION_PATTERN = r"^[a-z_]+(\.[a-z_]+)*$"


class Outcome(str, Enum):
    OK = "ok"
    DENIED = "denied"  # not allowed (role, CSRF, rate limit)
    INVALID = "invalid"  # bad input: nothing was written
    FAILED = "failed"  # allowed and valid, but it did not work (e.g. the enroller timed out)


@dataclass(frozen=True)
class Actor:
    """Who acts: ``name`` as stored (``user:alice``), their role (None when anonymous) and client address."""

    name: str
    role: str | None = None
    client: str | None = None


SYSTEM = Actor("system")


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts: str
    actor: str
    role: str | None
    client: str | None
    action: str
    object: str | None
    outcome: str
    detail: str | None

    def to_json(self) -> dict:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "role": self.role,
            "client": self.client,
            "action": self.action,
            "object": self.object,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class AuditFilter:
    since: str | None = None  # ISO-8601 UTC (``utc_timestamp`` format), inclusive
    until: str | None = None  # exclusive
    actor: str | None = None
    action: str | None = None  # exact, or a prefix ending in "." ("person." = every person action)
    object: str | None = None
    outcome: str | None = None


def one_line(text: str | None, limit: int = MAX_DETAIL_CHARS) -> str | None:
    """Control characters (newlines included) replaced by spaces, cut to ``limit``: a log line cannot be forged."""
    if text is None:
        return None
    return re.sub(r"[\x00-\x1f\x7f]", " ", str(text))[:limit]


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        actor: Actor,
        action: str,
        object_: str | None = None,
        outcome: Outcome = Outcome.OK,
        detail: str | None = None,
    ) -> int:
        """Append one entry (its own transaction, committed before the caller answers); returns its seq."""
        if not re.fullmatch(ACTION_PATTERN, action):
            raise ValueError(f"audit action {action!r} does not match {ACTION_PATTERN}")
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO audit (ts, actor, role, client, action, object, outcome, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    utc_timestamp(),
                    one_line(actor.name, 100),
                    actor.role,
                    one_line(actor.client, 100),
                    action,
                    one_line(object_, 200),
                    outcome.value,
                    one_line(detail),
                ),
            )
            return int(cursor.lastrowid or 0)

    def query(self, where: AuditFilter, before_seq: int | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first; ``before_seq`` pages backwards (the API's cursor)."""
        clauses, args = self._clauses(where)
        if before_seq is not None:
            clauses, args = [*clauses, "seq < ?"], [*args, before_seq]
        sql = (
            "SELECT seq, ts, actor, role, client, action, object, outcome, detail FROM audit"
            f"{' WHERE ' + ' AND '.join(clauses) if clauses else ''} ORDER BY seq DESC LIMIT ?"
        )
        return [AuditEntry(*row) for row in self.db.conn().execute(sql, [*args, limit])]

    @staticmethod
    def _clauses(where: AuditFilter) -> tuple[list[str], list]:
        clauses: list[str] = []
        args: list = []
        for column, value in (
            ("ts >= ?", where.since),
            ("ts < ?", where.until),
            ("actor = ?", where.actor),
            ("object = ?", where.object),
            ("outcome = ?", where.outcome),
        ):
            if value is not None:
                clauses.append(column)
                args.append(value)
        if where.action is not None:
            if where.action.endswith("."):
                clauses.append("substr(action, 1, ?) = ?")
                args.extend([len(where.action), where.action])
            else:
                clauses.append("action = ?")
                args.append(where.action)
        return clauses, args
