"""`vigil audit --since 24h`: the audit log, oldest first, one line per entry (or ``--json``, one object a line)."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta

from vigil.alerts import utc_timestamp
from vigil.commands.user import open_store
from vigil.errors import VigilError
from vigil.store.audit import AuditFilter, AuditLog

UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime) -> str:
    """``30m``, ``24h``, ``7d`` before ``now``, or an ISO-8601 time (UTC when no zone is given)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match:
        return utc_timestamp(now - timedelta(seconds=float(match.group(1)) * UNITS_S[match.group(2)]))
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise VigilError(f"--since {text!r}: use a duration (30m, 24h, 7d) or an ISO-8601 time") from None
    return utc_timestamp(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def run_cli(args: argparse.Namespace) -> int:
    since = parse_since(args.since, datetime.now(UTC))
    db = open_store(args)
    try:
        where = AuditFilter(since=since, actor=args.actor, action=args.action)
        entries = list(reversed(AuditLog(db).query(where, limit=args.limit)))
    finally:
        db.close()
    for entry in entries:
        if args.json:
            print(json.dumps(entry.to_json(), ensure_ascii=False))
        else:
            detail = f"  {entry.detail}" if entry.detail else ""
            print(
                f"{entry.ts}  {entry.actor:<20} {entry.client or '-':<15} {entry.action:<22} "
                f"{entry.object or '-':<40} {entry.outcome}{detail}"
            )
    return 0
