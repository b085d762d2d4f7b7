"""`vigil token create|revoke|list`: API tokens for machine clients (``Authorization: Bearer TOKEN``).

``create`` prints the token alone on its last line: it is shown once and only its SHA-256 is stored.
"""

from __future__ import annotations

import argparse

from vigil.commands.user import cli_actor, open_store
from vigil.store.audit import AuditLog
from vigil.store.users import TokenStore, parse_role


def run_cli(args: argparse.Namespace) -> int:
    db = open_store(args)
    try:
        tokens, audit = TokenStore(db), AuditLog(db)
        if args.token_command == "list":
            for token in tokens.list():
                state = "active" if token.active else f"revoked {token.revoked_at}" if token.revoked_at else "expired"
                print(f"{token.id}  {token.role.value:<9} {state:<32} {token.name}")
        elif args.token_command == "create":
            token, secret = tokens.create(parse_role(args.role), args.name, cli_actor().name, args.expires_days)
            audit.record(cli_actor(), "token.create", f"token:{token.id}", detail=f"role {token.role.value}")
            print(f"token {token.id} created with role {token.role.value}; it is shown once, store it now:")
            print(secret)
        elif args.token_command == "revoke":
            tokens.revoke(args.id)
            audit.record(cli_actor(), "token.revoke", f"token:{args.id}")
            print(f"token {args.id} revoked")
        return 0
    finally:
        db.close()
