"""Users (argon2id password hashes), API tokens (stored as SHA-256, scoped to a role, revocable) and sessions.

Roles, least to most privileged: ``viewer`` (events, without snapshots of faces that matched nobody), ``operator``
(live view, all snapshots, acknowledge, false-match marks; enrolment when ``server.operators_can_enroll``), ``admin``
(users, tokens, watchlist, audit log, settings). What each role may do is one table in vigil/server/roles.py.

Secrets never stored in clear: a password is argon2id-hashed (``argon2-cffi``'s defaults: 64 MiB, 3 passes); a token
or session id has 256 random bits, so one SHA-256 is enough (a slow hash protects low-entropy secrets only).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from vigil.alerts import utc_timestamp
from vigil.store.db import ConflictError, Database, NotFoundError, StoreError

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024
TOKEN_PREFIX = "vgl_"
TOKEN_NAME_PATTERN = r"^[^\x00-\x1f\x7f<>]{0,100}$"
LAST_USED_RESOLUTION_S = 60.0  # a token's or session's last use is written at most this often (writes cost fsyncs)


class Role(str, Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: Role
    created_at: str
    password_changed_at: str
    disabled: bool

    def to_json(self) -> dict:
        return {
            "username": self.username,
            "role": self.role.value,
            "created_at": self.created_at,
            "password_changed_at": self.password_changed_at,
            "disabled": self.disabled,
        }


@dataclass(frozen=True)
class ApiToken:
    id: str  # public, shown in lists (8 hex); the secret is shown once at creation
    role: Role
    name: str
    created_by: str
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > utc_timestamp())

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "role": self.role.value,
            "name": self.name,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
            "active": self.active,
        }


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    created_at: float  # epoch seconds
    last_seen_at: float


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_username(username: str) -> str:
    if not re.fullmatch(USERNAME_PATTERN, username or ""):
        raise StoreError(f"user name {username!r}: use 1-64 of a-z 0-9 _ . - (starting with a letter or digit)")
    return username


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise StoreError(f"password: at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise StoreError(f"password: at most {MAX_PASSWORD_CHARS} characters")
    return password


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise StoreError(f"role {value!r}: expected one of {', '.join(r.value for r in Role)}") from None


_USER_COLUMNS = "id, username, role, created_at, password_changed_at, disabled"


def _user(row: tuple) -> User:
    return User(row[0], row[1], Role(row[2]), row[3], row[4], bool(row[5]))


class UserStore:
    """Create, change and check users. ``hasher``: an argon2 ``PasswordHasher`` (tests pass a cheap one)."""

    def __init__(self, db: Database, hasher: PasswordHasher | None = None) -> None:
        self.db = db
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    def add(self, username: str, role: Role, password: str) -> User:
        check_username(username)
        password_hash = self.hasher.hash(check_password(password))
        now = utc_timestamp()
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                raise ConflictError(f"user {username!r} already exists")
            conn.execute(
                "INSERT INTO users (username, role, password_hash, created_at, password_changed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (username, role.value, password_hash, now, now),
            )
        return self.require(username)

    def get(self, username: str) -> User | None:
        row = self.db.conn().execute(f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?", (username,)).fetchone()
        return None if row is None else _user(row)

    def get_by_id(self, user_id: int) -> User | None:
        row = self.db.conn().execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
        return None if row is None else _user(row)

    def require(self, username: str) -> User:
        user = self.get(username)
        if user is None:
            raise NotFoundError(f"user {username!r} does not exist")
        return user

    def list(self) -> list[User]:
        return [_user(row) for row in self.db.conn().execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY username")]

    def count(self) -> int:
        return int(self.db.conn().execute("SELECT COUNT(*) FROM users WHERE disabled = 0").fetchone()[0])

    def set_password(self, username: str, password: str) -> None:
        """Change the password and end the user's sessions (a stolen cookie dies with the old password)."""
        password_hash = self.hasher.hash(check_password(password))
        with self.db.transaction() as conn:
            user = self._require_in(conn, username)
            conn.execute(
                "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                (password_hash, utc_timestamp(), user.id),
            )
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (user.id,))

    def update(self, username: str, role: Role | None = None, disabled: bool | None = None) -> User:
        """Change role and/or disabled state; sessions end on any change. The last active admin cannot lose it."""
        with self.db.transaction() as conn:
            user = self._require_in(conn, username)
            new_role, new_disabled = role or user.role, user.disabled if disabled is None else disabled
            if user.role is Role.ADMIN and not user.disabled and (new_role is not Role.ADMIN or new_disabled):
                self._keep_an_admin(conn, user)
            conn.execute(
                "UPDATE users SET role = ?, disabled = ? WHERE id = ?", (new_role.value, int(new_disabled), user.id)
            )
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (user.id,))
        return self.require(username)

    def delete(self, username: str) -> None:
        with self.db.transaction() as conn:
            user = self._require_in(conn, username)
            if user.role is Role.ADMIN and not user.disabled:
                self._keep_an_admin(conn, user)
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (user.id,))
            conn.execute("DELETE FROM users WHERE id = ?", (user.id,))

    def verify(self, username: str, password: str) -> User | None:
        """The user when the password is right and the account enabled; None otherwise (same cost either way)."""
        row = (
            self.db.conn()
            .execute(f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE username = ?", (username,))
            .fetchone()
        )
        stored = row[6] if row is not None else self._dummy_hash()
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row[5]:
            return None
        if self.hasher.check_needs_rehash(stored):
            with self.db.transaction() as conn:
                conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (self.hasher.hash(password), row[0]))
        return _user(row[:6])

    def _dummy_hash(self) -> str:
        """A hash of a random password, so an unknown user name costs as much as a wrong password."""
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    @staticmethod
    def _require_in(conn, username: str) -> User:
        row = conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?", (username,)).fetchone()
        if row is None:
            raise NotFoundError(f"user {username!r} does not exist")
        return _user(row)

    @staticmethod
    def _keep_an_admin(conn, user: User) -> None:
        others = conn.execute(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0 AND id != ?", (user.id,)
        ).fetchone()[0]
        if not others:
            raise ConflictError(f"user {user.username!r} is the last active admin; create another admin first")


_TOKEN_COLUMNS = "id, role, name, created_by, created_at, expires_at, last_used_at, revoked_at"


class TokenStore:
    """API tokens for machine clients: ``vgl_<43 url-safe chars>``; only the SHA-256 is kept."""

    def __init__(self, db: Database, wall_clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = wall_clock

    def create(self, role: Role, name: str, created_by: str, expires_days: float | None = None) -> tuple[ApiToken, str]:
        """A new token and its secret (returned once, never stored)."""
        if not re.fullmatch(TOKEN_NAME_PATTERN, name):
            raise StoreError("token name: at most 100 characters, no control characters or < >")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(4)
        now = self._now()
        expires = None if expires_days is None else utc_timestamp(now + timedelta(days=expires_days))
        with self.db.transaction() as conn:
            conn.execute(
                f"INSERT INTO api_tokens (token_hash, {_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                (sha256_hex(secret), token_id, role.value, name, created_by, utc_timestamp(now), expires),
            )
        return self.require(token_id), secret

    def list(self) -> list[ApiToken]:
        rows = self.db.conn().execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at")
        return [self._token(row) for row in rows]

    def require(self, token_id: str) -> ApiToken:
        row = self.db.conn().execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"token {token_id!r} does not exist")
        return self._token(row)

    def revoke(self, token_id: str) -> ApiToken:
        with self.db.transaction() as conn:
            changed = conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (utc_timestamp(self._now()), token_id),
            ).rowcount
        token = self.require(token_id)
        if not changed:
            raise ConflictError(f"token {token_id!r} was already revoked at {token.revoked_at}")
        return token

    def resolve(self, secret: str) -> ApiToken | None:
        """The active token for a presented secret, or None (unknown, revoked or expired)."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        row = (
            self.db.conn()
            .execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?", (sha256_hex(secret),))
            .fetchone()
        )
        if row is None:
            return None
        token = self._token(row)
        now = self._now()
        if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= utc_timestamp(now)):
            return None
        if token.last_used_at is None or token.last_used_at < utc_timestamp(
            now - timedelta(seconds=LAST_USED_RESOLUTION_S)
        ):
            with self.db.transaction() as conn:
                conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (utc_timestamp(now), token.id))
        return token

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @staticmethod
    def _token(row: tuple) -> ApiToken:
        return ApiToken(row[0], Role(row[1]), row[2], row[3], row[4], row[5], row[6], row[7])


_SESSION_USER_COLUMNS = ", ".join("u." + column for column in _USER_COLUMNS.split(", "))


class SessionStore:
    """Browser sessions: the cookie carries a random id, the table its SHA-256, the user and a CSRF token."""

    def __init__(
        self, db: Database, idle_timeout_s: float, max_age_s: float, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.idle_timeout_s = idle_timeout_s
        self.max_age_s = max_age_s
        self._clock = wall_clock

    def create(self, user: User, client: str) -> tuple[str, Session]:
        """A new session for ``user``: (cookie value, session)."""
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self._clock()
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM sessions WHERE created_at < ? OR last_seen_at < ?",
                (now - self.max_age_s, now - self.idle_timeout_s),
            )
            conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                (sha256_hex(session_id), user.id, csrf, now, now, client),
            )
        return session_id, Session(user, csrf, now, now)

    def resolve(self, session_id: str) -> Session | None:
        """The live session for a cookie value, or None (unknown, expired, idle too long, user disabled)."""
        if not session_id or len(session_id) > 200:
            return None
        conn = self.db.conn()
        row = conn.execute(
            f"SELECT s.csrf_token, s.created_at, s.last_seen_at, {_SESSION_USER_COLUMNS} "
            "FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?",
            (sha256_hex(session_id),),
        ).fetchone()
        if row is None:
            return None
        csrf, created, last_seen, user = row[0], row[1], row[2], _user(row[3:])
        now = self._clock()
        if user.disabled or now - created > self.max_age_s or now - last_seen > self.idle_timeout_s:
            self.delete(session_id)
            return None
        if now - last_seen > LAST_USED_RESOLUTION_S:
            with self.db.transaction() as conn:
                conn.execute("UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?", (now, sha256_hex(session_id)))
            last_seen = now
        return Session(user, csrf, created, last_seen)

    def delete(self, session_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", (sha256_hex(session_id),))
