"""Webhook credentials, signatures and private CAs (issue 26, defects 11 and 13), against a local receiver.

Before: ``https://user:pass@host/`` passed validation but every delivery failed (urllib took the credentials for part
of the host), a receiver could not tell vigil's alerts from forged ones, and an https receiver behind a private CA
could not be reached.
"""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.webhook_receiver import Receiver
from vigil.alerts import WebhookSink
from vigil.alerts.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature, split_credentials, verify_signature
from vigil.config import WebhookSinkConfig
from vigil.errors import ConfigError
from vigil.types import UnknownEvent

SECRET = "s3cret-shared-with-the-receiver"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver():
    started = Receiver()
    yield started
    started.stop()


def event(i: int = 0) -> UnknownEvent:
    return UnknownEvent(f"e{i:031x}", "cam", i, 0.2, "2026-11-23T09:00:00.000Z", 1.0, 5, (0, 0, 9, 9), None)


def deliver(tmp_path: Path, config: WebhookSinkConfig, count: int = 1) -> None:
    sink = WebhookSink(tmp_path / "events.sqlite3", config, poll_interval_s=0.05)
    try:
        for i in range(count):
            sink.emit(event(i))
        assert sink.wait_until_delivered(timeout_s=15.0), sink.counts()
    finally:
        sink.close()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("userinfo", "headers", "authorization"),
    [
        ("alice:pa%3Ass@", {}, _basic("alice", "pa:ss")),  # percent-encoded ':' in the password
        ("alice@", {}, _basic("alice", "")),
        ("", {"Authorization": "Bearer t0ken"}, "Bearer t0ken"),
        ("", {}, None),
    ],
)
def test_credentials_from_the_url_or_a_header_reach_the_receiver(tmp_path, receiver, userinfo, headers, authorization):
    url = receiver.url.replace("http://", f"http://{userinfo}")
    deliver(tmp_path, WebhookSinkConfig(url=url, headers=headers, timeout_s=2.0))
    (_, got, _), *_ = receiver.delivered
    assert got.get("Authorization") == authorization


@pytest.mark.parametrize(
    ("url", "plain", "authorization"),
    [
        ("https://u:p@h.example/x?q=1", "https://h.example/x?q=1", _basic("u", "p")),
        ("https://h.example:8443/x", "https://h.example:8443/x", None),
        ("http://a%40b:c@h/", "http://h/", _basic("a@b", "c")),
    ],
)
def test_split_credentials(url: str, plain: str, authorization: str | None) -> None:
    assert split_credentials(url) == (plain, authorization)


@pytest.mark.parametrize("source", ["secret", "secret_env"])
def test_each_delivery_is_signed_and_the_receiver_can_check_it(tmp_path, receiver, monkeypatch, source) -> None:
    import time

    monkeypatch.setenv("VIGIL_TEST_WEBHOOK_SECRET", SECRET)
    setting = {"secret": SECRET} if source == "secret" else {"secret_env": "VIGIL_TEST_WEBHOOK_SECRET"}
    deliver(tmp_path, WebhookSinkConfig(url=receiver.url, timeout_s=2.0, **setting), count=3)
    assert len(receiver.delivered) == 3
    for _, headers, body in receiver.delivered:
        assert verify_signature(
            SECRET.encode(), headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER], time.time()
        )


TIMESTAMP = "1700000000"
BODY = b'{"id": "e1", "type": "alert"}'
GOOD = signature(SECRET.encode(), TIMESTAMP, BODY)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "signed", "now", "valid"),
    [
        (SECRET, TIMESTAMP, BODY, GOOD, 1_700_000_010.0, True),
        (SECRET, TIMESTAMP, BODY + b" ", GOOD, 1_700_000_010.0, False),  # body changed
        ("another secret", TIMESTAMP, BODY, GOOD, 1_700_000_010.0, False),  # forged with a guess
        (SECRET, "1700000001", BODY, GOOD, 1_700_000_010.0, False),  # timestamp changed
        (SECRET, TIMESTAMP, BODY, GOOD, 1_700_000_000.0 + 301.0, False),  # replayed after 5 minutes
        (SECRET, "soon", BODY, GOOD, 1_700_000_010.0, False),
        (SECRET, TIMESTAMP, BODY, "v1=" + "0" * 64, 1_700_000_010.0, False),
    ],
)
def test_verify_signature(secret, timestamp, body, signed, now, valid) -> None:
    assert verify_signature(secret.encode(), timestamp, body, signed, now) is valid


def test_an_unset_secret_variable_is_refused_when_the_sink_is_built(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VIGIL_TEST_WEBHOOK_SECRET", raising=False)
    config = WebhookSinkConfig(url="http://127.0.0.1:9/x", secret_env="VIGIL_TEST_WEBHOOK_SECRET")
    with pytest.raises(ConfigError, match="VIGIL_TEST_WEBHOOK_SECRET is not set"):
        WebhookSink(tmp_path / "e.sqlite3", config, start=False)


# ---- a receiver behind a private CA -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def private_ca(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    folder = tmp_path_factory.mktemp("ca")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
               "-addext", "subjectAltName=IP:127.0.0.1"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.parametrize(("trust", "delivered"), [(True, True), (False, False)])
def test_ca_file_trusts_a_private_ca(tmp_path, private_ca, trust: bool, delivered: bool) -> None:
    cert, key = private_ca
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    tls_receiver = Receiver(tls=context)
    try:
        config = WebhookSinkConfig(url=tls_receiver.url, timeout_s=2.0, ca_file=cert if trust else None)
        sink = WebhookSink(tmp_path / "events.sqlite3", config, poll_interval_s=0.05)
        sink.emit(event())
        assert sink.wait_until_delivered(timeout_s=6.0) is delivered
        if not delivered:
            row = sink.outbox._conn.execute("SELECT last_error FROM outbox").fetchone()
            assert "CERTIFICATE_VERIFY_FAILED" in row[0]
        sink.close()
    finally:
        tls_receiver.stop()
    assert (len(tls_receiver.keys) == 1) is delivered


def test_a_ca_file_that_is_not_a_bundle_is_one_clear_error(tmp_path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"alerts\.webhook\.ca_file: .*ca\.pem: not a PEM CA bundle"):
        WebhookSink(tmp_path / "e.sqlite3", WebhookSinkConfig(url="https://127.0.0.1:9/x", ca_file=bad), start=False)
