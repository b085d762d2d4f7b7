"""`vigil outbox status|retry [--config C]`: the alert outboxes of the events database (webhook, and any other sink
delivered from an outbox table).

``status`` prints each outbox's rows by state; ``retry`` queues every given-up ("dead") row again, due now. Safe while
`vigil run` runs: its worker picks the rows up within a second (or at its next probe while the receiver is down).
`vigil run` also re-queues dead rows itself on every start.
"""

from __future__ import annotations

import argparse

from vigil.alerts.database import DB_FILENAME
from vigil.alerts.outbox import outbox_counts, retry_dead
from vigil.config import data_dir_problem, load_config
from vigil.errors import ConfigError


def run_cli(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    problem = data_dir_problem(config.data_dir)
    if problem:
        raise ConfigError(f"{args.config}: data_dir: {problem}")
    db_path = config.data_dir / DB_FILENAME
    if args.outbox_command == "retry":
        revived = retry_dead(db_path)
        for table, count in revived.items():
            print(f"{table}: {count} given-up event(s) queued again")
        print(f"{sum(revived.values())} event(s) queued again" if revived else f"{db_path}: no outbox yet")
        return 0
    counts = outbox_counts(db_path)
    for table, rows in counts.items():
        print(f"{table}: pending={rows['pending']} dead={rows['dead']} delivered={rows['delivered']}")
    if not counts:
        print(f"{db_path}: no outbox yet")
    return 0
