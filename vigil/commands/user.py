"""`vigil user add|passwd|del|list`: the service's users, in the store of the config's data folder.

Passwords are read twice from the terminal, or once from standard input with ``--password-stdin`` (scripts); they
never appear on the command line (where `ps` and shell history would show them). Every change is audited as
``cli:<OS user>``.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from vigil.errors import VigilError
from vigil.runtime import load_config_or_default
from vigil.store.audit import Actor, AuditLog
from vigil.store.db import Database
from vigil.store.users import UserStore, check_password, parse_role


def cli_actor() -> Actor:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Actor(f"cli:{name}", "admin", "local")


def open_store(args: argparse.Namespace) -> Database:
    config = load_config_or_default(args.config if args.config.exists() else None)
    return Database.in_data_dir(config.data_dir)


def read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise VigilError("the two passwords differ")
    else:
        raise VigilError("no terminal to ask for the password: pipe it with --password-stdin")
    return check_password(password)


def run_cli(args: argparse.Namespace) -> int:
    db = open_store(args)
    try:
        users, audit = UserStore(db), AuditLog(db)
        if args.user_command == "list":
            for user in users.list():
                state = " (disabled)" if user.disabled else ""
                print(f"{user.username:<24} {user.role.value:<9} created {user.created_at}{state}")
            return 0
        if args.user_command == "add":
            role = parse_role(args.role)
            user = users.add(args.name, role, read_password(args))
            audit.record(cli_actor(), "user.create", f"user:{user.username}", detail=f"role {role.value}")
            print(f"user {user.username} added with role {user.role.value}")
        elif args.user_command == "passwd":
            users.set_password(args.name, read_password(args))
            audit.record(cli_actor(), "user.update", f"user:{args.name}", detail="changed password")
            print(f"password of {args.name} changed; their sessions ended")
        elif args.user_command == "del":
            users.delete(args.name)
            audit.record(cli_actor(), "user.delete", f"user:{args.name}")
            print(f"user {args.name} deleted")
        return 0
    finally:
        db.close()
