"""A real API server for tests: a temporary data folder with users, a token, stored events with snapshots, a
watchlist with one photographed person, a published camera frame; uvicorn on a free loopback port in a thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
from argon2 import PasswordHasher

from vigil.alerts import DB_FILENAME, SqliteSink, new_event_id, save_snapshot, utc_timestamp
from vigil.config import ServerConfig, VigilConfig
from vigil.live import CameraStatus, LiveFace, LiveFrame, LiveHub, PhotoVerdict, WatchlistState
from vigil.server.app import create_app
from vigil.server.context import ServiceContext, ServiceInfo
from vigil.server.runner import ServerThread
from vigil.store.db import Database
from vigil.store.users import Role
from vigil.types import Alert, AlertStage, ListKind, UnknownEvent

CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct horse battery"
ALERT_ID, UNKNOWN_ID = "a" * 32, "b" * 32


def photo_bytes(colour: tuple[int, int, int], size: int = 64, ext: str = ".jpg") -> bytes:
    image = np.full((size, size, 3), colour, np.uint8)
    return cv2.imencode(ext, image)[1].tobytes()


def fake_verdict(image: np.ndarray) -> PhotoVerdict:
    """Stands in for the face stages: a mostly red photo has one face, a black one none, a blue one two."""
    b, g, r = (float(v) for v in image.reshape(-1, 3).mean(axis=0))
    if r > 150 and g < 100:
        return PhotoVerdict("ok", "ok", 1)
    if b > 150 and r < 100:
        return PhotoVerdict("several_faces", "2 faces found, need exactly one", 2)
    return PhotoVerdict("no_face", "no face found")


class FakeEnroller(threading.Thread):
    """Answers the server's photo checks as the pipeline thread would, between "batches" of 10 ms."""

    def __init__(self, hub: LiveHub) -> None:
        super().__init__(daemon=True)
        self.hub, self.stop = hub, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            for check in self.hub.photo_checks.take():
                if check.future.set_running_or_notify_cancel():
                    check.future.set_result(fake_verdict(check.image))


@dataclass
class ApiServer:
    url: str
    ctx: ServiceContext
    thread: ServerThread
    root: Path
    token: str = ""
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, who: str) -> httpx.Client:
        return self.clients[who]

    def login(self, username: str, password: str = PASSWORD) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30.0)
        answer = client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert answer.status_code == 200, answer.text
        client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
        return client


def store_events(data_dir: Path) -> None:
    sink = SqliteSink(data_dir / DB_FILENAME)
    now = datetime.now(UTC)
    face = np.full((40, 40, 3), 128, np.uint8)
    sink.emit(
        Alert(
            id=ALERT_ID,
            stage=AlertStage.CONFIRMED,
            person_id="ann",
            person_name="Ann",
            list=ListKind.DENY,
            camera="cam1",
            track_id=1,
            score=0.9,
            margin=0.2,
            ts=utc_timestamp(now - timedelta(minutes=1)),
            video_ts_s=1.0,
            frame_index=10,
            bbox=(0, 0, 40, 40),
            snapshot=save_snapshot(data_dir, ALERT_ID, face),
            label="watchlist",
        )
    )
    sink.emit(
        UnknownEvent(
            UNKNOWN_ID,
            "cam1",
            2,
            0.3,
            utc_timestamp(now),
            2.0,
            20,
            (0, 0, 40, 40),
            save_snapshot(data_dir, UNKNOWN_ID, face),
        )
    )
    sink.close()


def store_alert(
    data_dir: Path, person_id: str = "ann", person_name: str = "Ann", camera: str = "cam1", snapshot: bool = True
) -> Alert:
    """Store one provisional alert as the pipeline's SQLite sink does (with a face snapshot unless told not to)."""
    event_id = new_event_id()
    face = np.full((64, 64, 3), (40, 160, 40), np.uint8)
    alert = Alert(
        id=event_id,
        stage=AlertStage.PROVISIONAL,
        person_id=person_id,
        person_name=person_name,
        list=ListKind.DENY,
        camera=camera,
        track_id=7,
        score=0.81,
        margin=0.12,
        ts=utc_timestamp(),
        video_ts_s=3.0,
        frame_index=90,
        bbox=(1, 1, 40, 40),
        snapshot=save_snapshot(data_dir, event_id, face) if snapshot else None,
        label="watchlist",
    )
    sink = SqliteSink(data_dir / DB_FILENAME)
    sink.emit(alert)
    sink.close()
    return alert


def start_server(root: Path, **server_options) -> ApiServer:
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    photos = root / "wl" / "photos" / "ann"
    photos.mkdir(parents=True)
    (photos / "ann1.jpg").write_bytes(photo_bytes((0, 0, 255)))
    watchlist = root / "wl" / "watchlist.yaml"
    watchlist.write_text("people:\n  - {id: ann, name: Ann, photos: [photos/ann/ann1.jpg]}\n", encoding="utf-8")
    store_events(data_dir)
    config = VigilConfig(
        data_dir=data_dir, watchlist=watchlist, server=ServerConfig(listen="127.0.0.1:0", **server_options)
    )
    hub = LiveHub()
    hub.publish_frame(
        LiveFrame(
            "cam1",
            5,
            utc_timestamp(),
            np.zeros((48, 64, 3), np.uint8),
            (LiveFace((4, 4, 20, 20), 1, "ann", "Ann", "deny"),),
        )
    )
    hub.publish_statuses([CameraStatus("cam1", True, fps=25.0, frames_read=100)], utc_timestamp())
    hub.set_watchlist(
        WatchlistState(
            path=str(watchlist),
            people=1,
            loaded_at=utc_timestamp(),
            photo_results={"ann": {}},
            enrolled=frozenset({"ann"}),
        )
    )
    db = Database.in_data_dir(data_dir)
    info = ServiceInfo(
        models=({"kind": "recognizer", "name": "r", "sha256": "0" * 64},),
        sinks=("sqlite",),
        cameras=({"name": "cam1", "source": "rtsp://u:***@cam/1"},),
    )
    ctx = ServiceContext.build(config, hub, db, info, hasher=CHEAP_HASHER)
    ctx.photo_check_timeout_s = 5.0
    for name, role in (("admin", Role.ADMIN), ("operator", Role.OPERATOR), ("viewer", Role.VIEWER)):
        ctx.users.add(name, role, PASSWORD)
    _, secret = ctx.tokens.create(Role.OPERATOR, "tests", "cli:test")
    thread = ServerThread(create_app(ctx), config.server)
    thread.start()
    server = ApiServer(thread.url, ctx, thread, root, secret)
    server.clients["anonymous"] = httpx.Client(base_url=thread.url, timeout=30.0)
    for name in ("viewer", "operator", "admin"):
        server.clients[name] = server.login(name)
    server.clients["token"] = httpx.Client(
        base_url=thread.url, timeout=30.0, headers={"Authorization": f"Bearer {secret}"}
    )
    enroller = FakeEnroller(hub)
    enroller.start()
    server.enroller = enroller
    return server


def stop_server(server: ApiServer) -> None:
    for client in server.clients.values():
        client.close()
    server.ctx.hub.closed.set()
    server.enroller.stop.set()
    server.thread.stop()
    server.ctx.db.close()
