"""Everything a request handler may use, built once per server: the stores, the watchlist editor, the live hub."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher

from vigil import __version__
from vigil.config import RetentionConfig, ServerConfig, VigilConfig
from vigil.live import LiveHub
from vigil.server.throttle import LoginThrottle
from vigil.store.audit import AuditLog
from vigil.store.db import Database
from vigil.store.events import EventStore
from vigil.store.retention import RetentionJob
from vigil.store.users import SessionStore, TokenStore, UserStore
from vigil.store.watchlist import WatchlistEditor

LIVE_AUDIT_INTERVAL_S = 600.0  # one live.view audit entry per user and camera per this many seconds


@dataclass(frozen=True)
class ServiceInfo:
    """Static facts shown by /health and /system (no secrets: camera sources are masked)."""

    version: str = __version__
    models: tuple[dict, ...] = ()  # {"kind", "name", "sha256"}
    sinks: tuple[str, ...] = ()
    cameras: tuple[dict, ...] = ()  # {"name", "source" (masked)}


@dataclass
class ServiceContext:
    server: ServerConfig
    retention: RetentionConfig
    data_dir: Path
    db: Database
    users: UserStore
    tokens: TokenStore
    sessions: SessionStore
    audit: AuditLog
    events: EventStore
    watchlist: WatchlistEditor | None
    hub: LiveHub
    info: ServiceInfo = ServiceInfo()
    retention_job: RetentionJob | None = None
    photo_check_timeout_s: float = 30.0
    monotonic: Callable[[], float] = time.monotonic
    throttle: LoginThrottle = field(init=False)
    _live_audited: dict[tuple[str, str], float] = field(default_factory=dict)
    _live_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.throttle = LoginThrottle(self.server.login_max_failures, self.server.login_window_s)

    @classmethod
    def build(
        cls,
        config: VigilConfig,
        hub: LiveHub,
        db: Database,
        info: ServiceInfo = ServiceInfo(),
        hasher: PasswordHasher | None = None,
        watchlist: Path | None = None,
    ) -> ServiceContext:
        """The context for ``config``'s data folder and watchlist (``watchlist`` overrides the config's)."""
        watchlist_path = watchlist or config.watchlist
        server = config.server
        return cls(
            server=server,
            retention=config.retention,
            data_dir=Path(config.data_dir),
            db=db,
            users=UserStore(db, hasher),
            tokens=TokenStore(db),
            sessions=SessionStore(db, server.session_idle_timeout_s, server.session_max_age_s),
            audit=AuditLog(db),
            events=EventStore(db),
            watchlist=WatchlistEditor(watchlist_path) if watchlist_path is not None else None,
            hub=hub,
            info=info,
        )

    def live_view_due(self, actor: str, camera: str) -> bool:
        """Whether this live-frame read should be audited (first in LIVE_AUDIT_INTERVAL_S for this actor+camera)."""
        now = self.monotonic()
        with self._live_lock:
            last = self._live_audited.get((actor, camera))
            if last is not None and now - last < LIVE_AUDIT_INTERVAL_S:
                return False
            self._live_audited[(actor, camera)] = now
            return True
