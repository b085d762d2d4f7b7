"""The events database: one SQLite file, ``<data_dir>/events.sqlite3``, shared by the event store and the outbox.

Durability: WAL mode with ``synchronous=FULL``: every commit is fsync'ed, so an alert survives a process kill *and*
a power cut. Alerts are rare (a few per minute, at most a few per second), so one fsync per alert costs nothing
measurable; ``NORMAL`` would survive a process kill only.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from vigil.errors import VigilError

DB_FILENAME = "events.sqlite3"
DB_BUSY_TIMEOUT_S = 10.0  # how long a writer waits for another connection's lock


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
