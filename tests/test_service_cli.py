"""`vigil user`, `vigil token`, `vigil audit` through the real command line (in-process)."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime

import pytest

from vigil.cli import main
from vigil.commands.audit import parse_since
from vigil.errors import VigilError
from vigil.store.db import Database
from vigil.store.users import TokenStore, UserStore


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data_dir: data\n", encoding="utf-8")
    return path


def vigil(args: list[str], monkeypatch, stdin: str = "") -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(args)


def test_user_and_token_lifecycle(config, monkeypatch, capsys):
    c = ["--config", str(config)]
    assert (
        vigil(["user", "add", "alice", "--role", "admin", "--password-stdin", *c], monkeypatch, "a long password\n")
        == 0
    )
    assert vigil(["user", "add", "bob", "--role", "viewer", "--password-stdin", *c], monkeypatch, "short\n") == 2
    assert "at least 10 characters" in capsys.readouterr().err
    assert vigil(["token", "create", "--role", "operator", "--name", "ci", *c], monkeypatch) == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]  # the token alone on the last line
    db = Database.in_data_dir(config.parent / "data")
    token = TokenStore(db).resolve(secret)
    assert token.role.value == "operator" and UserStore(db).verify("alice", "a long password") is not None
    assert vigil(["user", "list", *c], monkeypatch) == 0 and "alice" in capsys.readouterr().out
    assert vigil(["token", "revoke", token.id, *c], monkeypatch) == 0
    assert TokenStore(db).resolve(secret) is None
    assert vigil(["user", "del", "alice", *c], monkeypatch) == 2
    assert "last active admin" in capsys.readouterr().err
    assert vigil(["audit", "--since", "1h", *c], monkeypatch) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines] == ["user.create", "token.create", "token.revoke"]
    assert all(line.split()[1].startswith("cli:") for line in lines)
    db.close()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30m", "2026-01-01T11:30:00.000Z"),
        ("24h", "2025-12-31T12:00:00.000Z"),
        ("7d", "2025-12-25T12:00:00.000Z"),
        ("2025-12-01T00:00:00Z", "2025-12-01T00:00:00.000Z"),
        ("2025-12-01 08:00", "2025-12-01T08:00:00.000Z"),
    ],
)
def test_parse_since(text, expected):
    assert parse_since(text, datetime(2026, 1, 1, 12, tzinfo=UTC)) == expected


def test_parse_since_refuses_nonsense():
    with pytest.raises(VigilError, match="--since"):
        parse_since("yesterday-ish", datetime.now(UTC))
