"""The API through a real server (uvicorn on a loopback port, httpx): the role matrix, bad input, audit, SSE."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from api_helpers import ALERT_ID, PASSWORD, UNKNOWN_ID, photo_bytes, start_server, stop_server

from vigil.store.audit import AuditFilter

MISSING = "f" * 32
WHO = ("anonymous", "viewer", "operator", "admin", "token")  # token: an operator-role API token
RANK = {"viewer": 1, "operator": 2, "admin": 3, "token": 2}
PUBLIC = None  # no login needed


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("api"))
    yield server
    stop_server(server)


def photo_id(api) -> str:
    return api.client("admin").get("/api/v1/people/ann").json()["photos"][0]["id"]


# (method, path, json body or "multipart", lowest role allowed, status when allowed). Mutating probes target things
# that do not exist or bodies that fail validation, so each column sees the same state; the status shows the request
# got past authorisation.
MATRIX = [
    ("GET", "/api/v1/health", None, PUBLIC, 200),
    ("GET", "/api/v1/openapi.json", None, PUBLIC, 200),
    ("GET", "/api/docs", None, PUBLIC, 200),
    ("GET", "/metrics", None, "viewer", 200),
    ("GET", "/api/v1/auth/me", None, "viewer", 200),
    ("GET", "/api/v1/events", None, "viewer", 200),
    ("GET", f"/api/v1/events/{ALERT_ID}", None, "viewer", 200),
    ("GET", f"/api/v1/events/{ALERT_ID}/snapshot.jpg", None, "viewer", 200),
    ("GET", f"/api/v1/events/{UNKNOWN_ID}/snapshot.jpg", None, "operator", 200),
    ("POST", f"/api/v1/events/{MISSING}/ack", {"note": "x"}, "operator", 404),
    ("POST", f"/api/v1/events/{MISSING}/false-match", {}, "operator", 404),
    ("DELETE", f"/api/v1/events/{ALERT_ID}/false-match", None, "operator", 409),
    ("GET", "/api/v1/cameras", None, "viewer", 200),
    ("GET", "/api/v1/cameras/cam1", None, "viewer", 200),
    ("GET", "/api/v1/cameras/cam1/frame.jpg", None, "operator", 200),
    ("GET", "/api/v1/stream", None, "viewer", 200),
    ("GET", "/api/v1/people", None, "viewer", 200),
    ("GET", "/api/v1/people/ann", None, "viewer", 200),
    ("GET", "/api/v1/people/ann/photos/{photo}", None, "operator", 200),
    ("POST", "/api/v1/people", {"id": "ann", "name": "Ann Again"}, "admin", 409),
    ("PATCH", "/api/v1/people/nobody", {"name": "X"}, "admin", 404),
    ("DELETE", "/api/v1/people/nobody", None, "admin", 404),
    ("POST", "/api/v1/people/nobody/photos", "multipart", "admin", 404),
    ("DELETE", "/api/v1/people/ann/photos/0000000000000000", None, "admin", 404),
    ("GET", "/api/v1/users", None, "admin", 200),
    ("POST", "/api/v1/users", {"username": "eve", "role": "viewer", "password": "short"}, "admin", 422),
    ("PATCH", "/api/v1/users/nobody", {"disabled": True}, "admin", 404),
    ("DELETE", "/api/v1/users/nobody", None, "admin", 404),
    ("GET", "/api/v1/tokens", None, "admin", 200),
    ("POST", "/api/v1/tokens", {"role": "viewer", "name": "<b>"}, "admin", 422),
    ("DELETE", "/api/v1/tokens/00000000", None, "admin", 404),
    ("GET", "/api/v1/audit", None, "admin", 200),
    ("GET", "/api/v1/system", None, "admin", 200),
]


def expected_status(lowest: str | None, allowed: int, who: str) -> int:
    if lowest is None:
        return allowed
    if who == "anonymous":
        return 401
    return allowed if RANK[who] >= RANK[lowest] else 403


def send(client: httpx.Client, method: str, path: str, body) -> int:
    if method == "GET" and path.endswith("/stream"):
        with client.stream("GET", path) as answer:
            return answer.status_code
    if body == "multipart":
        return client.post(path, files={"file": ("a.jpg", photo_bytes((0, 0, 255)), "image/jpeg")}).status_code
    return client.request(method, path, json=body).status_code


@pytest.mark.parametrize("method, path, body, lowest, allowed", MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX])
def test_role_matrix(api, method, path, body, lowest, allowed):
    path = path.replace("{photo}", photo_id(api))
    got = {who: send(api.client(who), method, path, body) for who in WHO}
    assert got == {who: expected_status(lowest, allowed, who) for who in WHO}


def test_nothing_biometric_for_anonymous(api):
    health = api.client("anonymous").get("/api/v1/health").json()
    text = json.dumps(health)
    assert health["cameras"][0]["name"] == "cam1" and "Ann" not in text and "ann" not in text and "snapshot" not in text


def test_viewer_sees_events_but_no_unknown_face_snapshots(api):
    items = {e["id"]: e for e in api.client("viewer").get("/api/v1/events").json()["items"]}
    assert items[ALERT_ID]["snapshot_url"] and items[UNKNOWN_ID]["snapshot_url"] is None
    assert items[UNKNOWN_ID]["has_snapshot"] and "snapshot" not in items[UNKNOWN_ID]  # never a file path
    assert items[ALERT_ID]["person_photo_url"] is None  # viewers do not see enrolled photos
    operator = {e["id"]: e for e in api.client("operator").get("/api/v1/events").json()["items"]}
    assert operator[UNKNOWN_ID]["snapshot_url"] and operator[ALERT_ID]["person_photo_url"]


def test_events_contract_and_filters(api):
    page = api.client("token").get("/api/v1/events", params={"person": "ann"}).json()
    assert set(page) == {"items", "next"} and page["next"] is None
    (item,) = page["items"]
    assert {"id", "type", "person_id", "camera", "stage", "ts"} <= set(item)
    first = api.client("token").get("/api/v1/events", params={"limit": 1}).json()
    second = api.client("token").get("/api/v1/events", params={"limit": 1, "cursor": first["next"]}).json()
    assert [first["items"][0]["id"], second["items"][0]["id"]] == [UNKNOWN_ID, ALERT_ID] and second["next"] is None
    assert api.client("token").get("/api/v1/events", params={"type": "unknown"}).json()["items"][0]["id"] == UNKNOWN_ID


def test_snapshot_reads_are_audited_with_the_event_id(api):
    before = len(api.ctx.audit.query(AuditFilter(object=f"event:{ALERT_ID}", action="snapshot.read")))
    assert api.client("viewer").get(f"/api/v1/events/{ALERT_ID}/snapshot.jpg").content[:2] == b"\xff\xd8"
    entries = (
        api.client("admin")
        .get("/api/v1/audit", params={"object": f"event:{ALERT_ID}", "action": "snapshot.read"})
        .json()
    )
    assert len(entries["items"]) == before + 1 and entries["items"][0]["actor"] == "user:viewer"
    denied = api.client("viewer").get(f"/api/v1/events/{UNKNOWN_ID}/snapshot.jpg")
    assert denied.status_code == 403
    assert api.ctx.audit.query(AuditFilter(object=f"event:{UNKNOWN_ID}", outcome="denied"))[0].actor == "user:viewer"


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        ("", 200, "view=thumbnail"),
        ("?view=thumbnail", 200, "view=thumbnail"),
        ("?view=full", 200, "view=full"),
        ("?view=poster", 422, None),
        ("?view=full%0Aforged", 422, None),
    ],
)
def test_the_snapshot_view_is_validated_and_recorded_in_the_audit_entry(api, query, status, detail):
    last = api.ctx.audit.query(AuditFilter(object=f"event:{ALERT_ID}", action="snapshot.read"), limit=1)
    before = last[0].seq if last else 0
    answer = api.client("viewer").get(f"/api/v1/events/{ALERT_ID}/snapshot.jpg{query}")
    assert answer.status_code == status
    after = api.ctx.audit.query(AuditFilter(object=f"event:{ALERT_ID}", action="snapshot.read"), limit=1)
    if detail is None:
        assert not after or after[0].seq == before
    else:
        assert after[0].seq > before and after[0].detail == detail


def test_cookie_writes_need_the_csrf_header(api):
    client = api.client("operator")
    token = client.headers.pop("X-CSRF-Token")
    try:
        answer = client.post(f"/api/v1/events/{MISSING}/ack", json={})
        assert answer.status_code == 403 and "CSRF" in answer.json()["error"]
        client.headers["X-CSRF-Token"] = "wrong"
        assert client.post(f"/api/v1/events/{MISSING}/ack", json={}).status_code == 403
    finally:
        client.headers["X-CSRF-Token"] = token


def test_session_cookie_flags(api):
    answer = httpx.post(f"{api.url}/api/v1/auth/login", json={"username": "viewer", "password": PASSWORD})
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # no TLS here


def test_login_is_rate_limited_per_user_and_audited(api):
    client = httpx.Client(base_url=api.url, timeout=30)
    codes = [
        client.post("/api/v1/auth/login", json={"username": "operator", "password": "nope-nope-nope"}).status_code
        for _ in range(6)
    ]
    assert codes == [401] * 5 + [429]
    locked = client.post("/api/v1/auth/login", json={"username": "operator", "password": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    actions = [e.action for e in api.ctx.audit.query(AuditFilter(object="user:operator"), limit=10)]
    assert actions[:2] == ["login.throttled", "login.throttled"] and actions.count("login.failure") == 5
    api.ctx.throttle.clear("user:operator")
    api.ctx.throttle.clear("addr:127.0.0.1")


def test_revoked_token_is_refused_at_once(api):
    created = api.client("admin").post("/api/v1/tokens", json={"role": "viewer", "name": "short-lived"}).json()
    client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {created['secret']}"}, timeout=30)
    assert client.get("/api/v1/events").status_code == 200
    assert api.client("admin").delete(f"/api/v1/tokens/{created['id']}").status_code == 200
    assert client.get("/api/v1/events").status_code == 401
    listed = api.client("admin").get("/api/v1/tokens").json()["items"]
    assert created["secret"] not in json.dumps(listed)


# ---- bad input: each a 4xx with a clear message, nothing written, the attempt audited ------------------------------
def bomb_png(side: int = 6000) -> bytes:
    """A 6000 x 6000 PNG of zeros: 48 KB on the wire, 108 MB decoded (36 MP against the test server's 4 MP limit)."""
    import zlib

    width = height = side
    row = b"\x00" + bytes(width * 3)
    compressor = zlib.compressobj(9)
    raw = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


UPLOADS = [
    ("non-image", ("notes.jpg", b"MZ\x90\x00 this is not an image", "image/jpeg"), 415, "not an image"),
    ("over the size limit", ("big.jpg", b"\xff\xd8" + bytes(300_000), "image/jpeg"), 413, "over the limit"),
    ("decompression bomb", ("bomb.png", "bomb", "image/png"), 413, "decompression bomb"),
    ("path traversal name", ("../../etc/passwd.jpg", "ok-photo", "image/jpeg"), 422, "not allowed"),
    ("no face", ("dark.jpg", "no-face", "image/jpeg"), 422, "no face found"),
    ("several faces", ("two.jpg", "two-faces", "image/jpeg"), 422, "2 faces found"),
]


@pytest.fixture(scope="module")
def small_upload_api(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("uploads"), max_upload_bytes=200_000, max_image_pixels=4_000_000)
    yield server
    stop_server(server)


def _content(kind):
    return (
        {
            "bomb": bomb_png,
            "ok-photo": lambda: photo_bytes((0, 0, 255)),
            "no-face": lambda: photo_bytes((0, 0, 0)),
            "two-faces": lambda: photo_bytes((255, 0, 0)),
        }[kind]()
        if isinstance(kind, str)
        else kind
    )


def snapshot_of_state(api) -> tuple:
    wl = api.ctx.watchlist.path
    files = sorted(str(p.relative_to(wl.parent)) for p in wl.parent.rglob("*") if p.is_file())
    return wl.read_bytes(), tuple(files)


@pytest.mark.parametrize("case, upload, status, message", UPLOADS, ids=[u[0] for u in UPLOADS])
def test_bad_uploads_are_refused_unwritten_and_audited(small_upload_api, case, upload, status, message):
    api = small_upload_api
    name, content, media = upload
    before = snapshot_of_state(api)
    answer = api.client("admin").post("/api/v1/people/ann/photos", files={"file": (name, _content(content), media)})
    assert answer.status_code == status and message in answer.json()["error"]
    assert snapshot_of_state(api) == before
    entry = api.ctx.audit.query(AuditFilter(action="photo.add"), limit=1)[0]
    assert (entry.outcome, entry.object, entry.actor) == (
        "invalid",
        "person:ann",
        "user:admin",
    ) and message in entry.detail


def test_a_good_photo_is_stored_and_reported_ok(small_upload_api):
    api = small_upload_api
    answer = api.client("admin").post(
        "/api/v1/people/ann/photos", files={"file": ("me.png", photo_bytes((10, 20, 250), ext=".png"), "image/png")}
    )
    assert answer.status_code == 201 and answer.json()["result"] == "ok"
    photo = answer.json()["photo"]
    assert api.client("operator").get(photo["url"]).content[:4] == b"\x89PNG"
    assert api.ctx.hub.reload_requested.is_set()
    assert api.client("admin").delete(photo["url"]).json()["file_deleted"] is True


BAD_FILTERS = [
    ("camera", "cam1' OR '1'='1"),
    ("person", "ann; DROP TABLE alerts"),
    ("type", "alert' --"),
    ("stage", 'confirmed" OR 1=1'),
    ("since", "2026-01-01' OR 1=1"),
    ("until", "now()"),
    ("cursor", "' UNION SELECT * FROM users --"),
    ("limit", "10; DELETE FROM alerts"),
    ("order", "ts; DROP TABLE alerts"),  # not a parameter at all
]


@pytest.mark.parametrize("field, value", BAD_FILTERS, ids=[f for f, _ in BAD_FILTERS])
def test_sql_metacharacters_in_filters_are_refused_and_audited(api, field, value):
    answer = api.client("operator").get("/api/v1/events", params={field: value})
    assert answer.status_code == 422 and field in answer.json()["error"]
    entry = api.ctx.audit.query(AuditFilter(actor="user:operator", outcome="invalid"), limit=1)[0]
    assert entry.object == "GET /api/v1/events" and field in entry.detail
    assert len(api.client("operator").get("/api/v1/events").json()["items"]) == 2  # the table is intact


@pytest.mark.parametrize(
    "body, field",
    [
        ({"id": "evil", "name": "<script>alert(1)</script>"}, "name"),
        ({"id": "../etc", "name": "X"}, "id"),
        ({"id": "x", "name": "X", "threshold": 7}, "threshold"),
        ({"id": "x", "name": "X", "photos": ["/etc/passwd"]}, "photos"),
    ],
)
def test_bad_person_is_refused_unwritten_and_audited(api, body, field):
    before = api.ctx.watchlist.path.read_bytes()
    answer = api.client("admin").post("/api/v1/people", json=body)
    assert answer.status_code == 422 and field in answer.json()["error"]
    assert api.ctx.watchlist.path.read_bytes() == before
    assert (
        api.ctx.audit.query(AuditFilter(actor="user:admin", outcome="invalid"), limit=1)[0].object
        == "POST /api/v1/people"
    )


# ---- watchlist edits through the API -------------------------------------------------------------------------------
def test_person_lifecycle(api):
    admin = api.client("admin")
    created = admin.post("/api/v1/people", json={"id": "bob", "name": "Bob O'Brien", "list": "vip"})
    assert created.status_code == 201 and created.json()["photos"] == []
    assert admin.patch("/api/v1/people/bob", json={"threshold": 0.8}).json()["threshold"] == 0.8
    upload = admin.post(
        "/api/v1/people/bob/photos", files={"file": ("bob.jpg", photo_bytes((0, 0, 240)), "image/jpeg")}
    )
    assert upload.status_code == 201
    stored = api.ctx.watchlist.path.parent / "photos" / "bob"
    assert len(list(stored.iterdir())) == 1
    assert admin.delete("/api/v1/people/bob").json()["deleted"] is True
    assert not stored.exists() and admin.get("/api/v1/people/bob").status_code == 404
    actions = [e.action for e in api.ctx.audit.query(AuditFilter(object="person:bob"))]
    assert actions == ["person.delete", "photo.add", "person.update", "person.create"]


def test_acknowledge_and_false_match(api):
    op = api.client("operator")
    ack = op.post(f"/api/v1/events/{ALERT_ID}/ack", json={"note": "guard sent"})
    assert ack.status_code == 200 and ack.json()["acknowledged"]["by"] == "user:operator"
    assert op.post(f"/api/v1/events/{ALERT_ID}/ack", json={}).status_code == 409
    assert op.post(f"/api/v1/events/{ALERT_ID}/false-match", json={"note": "not her"}).status_code == 200
    event = op.get(f"/api/v1/events/{ALERT_ID}").json()
    assert event["acknowledged"]["note"] == "guard sent" and event["false_match"]["note"] == "not her"
    assert op.post(f"/api/v1/events/{UNKNOWN_ID}/false-match", json={}).status_code == 409
    assert op.delete(f"/api/v1/events/{ALERT_ID}/false-match").status_code == 200


# ---- live data ------------------------------------------------------------------------------------------------------
def test_stream_delivers_new_events_and_camera_changes(api):
    from vigil.alerts import utc_timestamp
    from vigil.live import CameraStatus

    lines: list[str] = []
    connected = threading.Event()

    def read() -> None:
        with api.client("viewer").stream("GET", "/api/v1/stream") as answer:
            connected.set()
            for line in answer.iter_lines():
                lines.append(line)
                if "event: unknown" in lines and line.startswith("data:") and '"up": false' in line:
                    return  # the event, then the camera change (the first camera message may be either state)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert connected.wait(10)
    deadline = time.monotonic() + 10
    while api.ctx.hub.feed.subscribers == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    api.ctx.hub.publish_event({"type": "unknown", "id": "c" * 32, "camera": "cam1", "snapshot": "/x.jpg", "ts": "t"})
    api.ctx.hub.publish_statuses([CameraStatus("cam1", False, last_error="read failed")], utc_timestamp())
    reader.join(60)
    assert not reader.is_alive(), f"no camera-down message within 60 s; got {lines}"
    text = "\n".join(lines)
    assert "event: unknown" in text and '"snapshot_url": null' in text and "/x.jpg" not in text
    assert '"up": false' in text
    api.ctx.hub.publish_statuses([CameraStatus("cam1", True)], utc_timestamp())


def test_latest_frame_and_metrics(api):
    frame = api.client("operator").get("/api/v1/cameras/cam1/frame.jpg", params={"width": 32})
    assert frame.status_code == 200 and frame.content[:2] == b"\xff\xd8" and frame.headers["x-vigil-frame-index"] == "5"
    camera = api.client("operator").get("/api/v1/cameras/cam1").json()
    assert camera["latest_frame"]["faces"][0]["person_name"] == "Ann"
    assert api.client("viewer").get("/api/v1/cameras/cam1").json()["latest_frame"] is None
    metrics = api.client("token").get("/metrics").text
    assert (
        'vigil_camera_up{camera="cam1"}' in metrics
        and "vigil_outbox_pending" in metrics
        and "vigil_mqtt_outbox_pending" in metrics
    )


def test_docs_are_served_locally(api):
    page = api.client("anonymous").get("/api/docs").text
    assert "/api/docs/static/swagger-ui-bundle.js" in page and "https://" not in page and "http://" not in page
    assert api.client("anonymous").get("/api/docs/static/swagger-ui-bundle.js").status_code == 200


def test_the_listening_socket_lets_asyncio_disable_nagle():
    """asyncio sets TCP_NODELAY on accepted connections only for IPPROTO_TCP sockets; with proto 0 every response
    written in two parts waited ~40 ms for the client's delayed ACK."""
    import socket

    from vigil.config import ServerConfig
    from vigil.server.runner import bind_socket

    sock = bind_socket(ServerConfig(listen="127.0.0.1:0"))
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


@pytest.mark.parametrize(
    "listen, users, refused",
    [
        ("0.0.0.0:8080", 0, True),
        ("192.0.2.1:80", 0, True),
        ("[::]:8080", 0, True),
        ("0.0.0.0:8080", 1, False),
        ("127.0.0.1:8080", 0, False),
        ("localhost:8080", 0, False),
        ("[::1]:8080", 0, False),
    ],
)
def test_listening_beyond_loopback_needs_a_user(listen, users, refused):
    from vigil.config import ServerConfig
    from vigil.errors import ConfigError
    from vigil.server.runner import refuse_open_without_users

    if refused:
        with pytest.raises(ConfigError, match="no user exists.*vigil user add"):
            refuse_open_without_users(ServerConfig(listen=listen), users)
    else:
        refuse_open_without_users(ServerConfig(listen=listen), users)


def test_cached_event_pages_show_news_at_once(api):
    from vigil.alerts import DB_FILENAME, SqliteSink, utc_timestamp
    from vigil.types import UnknownEvent

    client = api.client("token")
    before = client.get("/api/v1/events").json()["items"]
    assert client.get("/api/v1/events").json()["items"] == before  # answered from the cache
    event = UnknownEvent("d" * 32, "cam1", 9, 0.2, utc_timestamp(), 3.0, 30, (0, 0, 4, 4), None)
    sink = SqliteSink(api.ctx.data_dir / DB_FILENAME)
    sink.emit(event)
    sink.close()
    api.ctx.hub.publish_event(event.to_json())  # what the pipeline does after the sinks stored it
    assert client.get("/api/v1/events").json()["items"][0]["id"] == "d" * 32


def test_response_cache_expires_and_is_bounded():
    from vigil.server.cache import ResponseCache

    now = [0.0]
    cache = ResponseCache(ttl_s=1.0, max_entries=2, clock=lambda: now[0])
    cache.put("a", b"1")
    assert cache.get("a") == b"1"
    now[0] = 1.5
    assert cache.get("a") is None
    for key in ("x", "y", "z"):
        cache.put(key, key.encode())
    assert cache.get("x") is None and cache.get("z") == b"z"


def test_tls_serves_https_and_marks_the_cookie_secure(tmp_path):
    import shutil
    import subprocess

    from api_helpers import CHEAP_HASHER

    from vigil.config import ServerConfig, TlsConfig, VigilConfig
    from vigil.live import LiveHub
    from vigil.server.app import create_app
    from vigil.server.context import ServiceContext
    from vigil.server.runner import ServerThread
    from vigil.store.db import Database
    from vigil.store.users import Role

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = VigilConfig(
        data_dir=tmp_path / "data", server=ServerConfig(listen="127.0.0.1:0", tls=TlsConfig(cert=cert, key=key))
    )
    db = Database.in_data_dir(config.data_dir)
    ctx = ServiceContext.build(config, LiveHub(), db, hasher=CHEAP_HASHER)
    ctx.users.add("alice", Role.VIEWER, PASSWORD)
    server = ServerThread(create_app(ctx), config.server)
    server.start()
    try:
        assert server.url.startswith("https://")
        answer = httpx.post(
            f"{server.url}/api/v1/auth/login",
            json={"username": "alice", "password": PASSWORD},
            verify=False,
            timeout=30,
        )
        assert answer.status_code == 200 and "secure" in answer.headers["set-cookie"].lower()
    finally:
        server.stop()
        db.close()
