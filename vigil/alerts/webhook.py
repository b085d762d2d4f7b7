"""The webhook sink: each event POSTed as JSON from the durable outbox (:mod:`vigil.alerts.outbox`), at least once;
any 2xx is a delivery, anything else (redirects included) is retried. The outbox row is written in the one
transaction that also stores the event (:mod:`vigil.alerts.transaction`).

Each request carries ``Idempotency-Key: <event id>`` (receivers de-duplicate by it) and, when a secret is configured
(``secret`` or the variable ``secret_env`` names), ``X-Vigil-Timestamp: <unix seconds>`` and
``X-Vigil-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``: a receiver recomputes it with the shared secret
(:func:`verify_signature`) and refuses requests it did not get from vigil, or replayed ones older than a few
minutes. Credentials in the URL (``https://user:pass@host/``) are sent as HTTP Basic auth (urllib would otherwise
try to resolve them as part of the host); ``headers`` adds fixed headers (a bearer token); ``ca_file`` verifies an
https receiver with a private CA. The URL is logged with the password masked; secrets never are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from http.client import HTTPException, HTTPMessage
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from vigil import __version__
from vigil.alerts.outbox import DeliveryResult, Outbox, OutboxDelivered, OutboxStatus, RetryPolicy
from vigil.alerts.sink import SinkContext
from vigil.config import AlertsConfig, WebhookSinkConfig
from vigil.errors import ConfigError
from vigil.redact import mask_url

MAX_RESPONSE_BYTES = 65_536  # a webhook response body is drained up to this size and ignored
SIGNATURE_HEADER = "X-Vigil-Signature"
TIMESTAMP_HEADER = "X-Vigil-Timestamp"
SIGNATURE_TOLERANCE_S = 300.0  # verify_signature: how old a timestamp may be (replay window)


class Post(Protocol):
    """Sends one payload (``post_json``; tests pass fakes)."""

    def __call__(
        self,
        url: str,
        event_id: str,
        payload: str,
        timeout_s: float,
        *,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> DeliveryResult: ...


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``v1=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    return "v1=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, signed: str, now_s: float, tolerance_s: float = SIGNATURE_TOLERANCE_S
) -> bool:
    """What a receiver does: True when ``signed`` (the ``X-Vigil-Signature`` value) is ``body``'s signature at
    ``timestamp`` (``X-Vigil-Timestamp``) and that timestamp is within ``tolerance_s`` of ``now_s``."""
    try:
        fresh = abs(now_s - float(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(signature(secret, timestamp, body), signed)


def split_credentials(url: str) -> tuple[str, str | None]:
    """(the URL without ``user:password@``, the ``Authorization: Basic`` value for them or None)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), f"Basic {token}"


def ssl_context_for(config: WebhookSinkConfig) -> ssl.SSLContext | None:
    """A context trusting ``ca_file`` (None: the system's CAs); ConfigError when the file is not a CA bundle."""
    if config.ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(config.ca_file))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"alerts.webhook.ca_file: {config.ca_file}: not a PEM CA bundle ({exc})") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would follow a 301/302/303 as a GET without the body; a redirect is a failed delivery instead."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        return None


def post_json(
    url: str,
    event_id: str,
    payload: str,
    timeout_s: float,
    *,
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> DeliveryResult:
    """POST one payload with ``Idempotency-Key`` (and ``headers``); ok on any 2xx, a one-line error otherwise.
    Never raises.

    Redirects are not followed (they count as failures); proxies come from the usual ``*_proxy`` variables.
    """
    all_headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": event_id,
        "User-Agent": f"vigil/{__version__}",
    }
    request = urllib.request.Request(
        url, data=payload.encode("utf-8"), method="POST", headers={**all_headers, **(headers or {})}
    )
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if ssl_context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout_s) as response:
            response.read(MAX_RESPONSE_BYTES)
            status = response.status
    except urllib.error.HTTPError as exc:
        return DeliveryResult(False, f"HTTP {exc.code}")
    except urllib.error.URLError as exc:
        return DeliveryResult(False, f"{exc.reason}")
    except (OSError, HTTPException, ValueError) as exc:  # timeouts, resets, bad status lines
        return DeliveryResult(False, f"{type(exc).__name__}: {exc}")
    return DeliveryResult(200 <= status < 300, "" if 200 <= status < 300 else f"HTTP {status}")


class WebhookSink(OutboxDelivered):
    """HTTP POST delivery from the durable ``outbox`` table, at least once, by one worker thread.

    ``wall_clock``, ``poll_interval_s``, ``batch_size`` and ``start`` are the outbox's (:class:`Outbox`); ``post``
    is injectable for tests.
    """

    name = "webhook"

    def __init__(
        self,
        db_path: Path | str,
        config: WebhookSinkConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        poll_interval_s: float = 1.0,
        batch_size: int = 32,
        start: bool = True,
        post: Post = post_json,
    ) -> None:
        self.db_path = Path(db_path)
        self.config = config
        self._post = post
        self._url, basic = split_credentials(config.url)
        self._headers = {**({"Authorization": basic} if basic else {}), **config.headers}
        self._secret = config.signing_secret()
        if config.secret_env is not None and self._secret is None:
            raise ConfigError(f"alerts.webhook.secret_env: the environment variable {config.secret_env} is not set")
        self._ssl_context = ssl_context_for(config)
        self._wall_clock = wall_clock
        retry = RetryPolicy(config.max_attempts, config.initial_backoff_s, config.max_backoff_s)
        self.outbox = Outbox(
            db_path,
            self._send,
            retry,
            channel="webhook",
            target=mask_url(config.url),
            close_timeout_s=config.timeout_s + 2.0,
            wall_clock=wall_clock,
            poll_interval_s=poll_interval_s,
            batch_size=batch_size,
            start=start,
        )

    def _send(self, event_id: str, payload: str) -> DeliveryResult:
        headers = dict(self._headers)
        if self._secret is not None:
            timestamp = str(int(self._wall_clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self._secret, timestamp, payload.encode("utf-8"))
        return self._post(
            self._url, event_id, payload, self.config.timeout_s, headers=headers, ssl_context=self._ssl_context
        )

    def start(self) -> None:
        self.outbox.start()

    def close(self) -> None:
        """Stop the worker (waits for at most one in-flight POST) and close the database; undelivered rows stay."""
        self.outbox.close()

    def deliver_due(self) -> int:
        """Send up to ``batch_size`` due rows, oldest first; returns how many were attempted."""
        return self.outbox.deliver_due()

    def counts(self) -> dict[str, int]:
        """Outbox rows by state: ``pending``, ``delivered``, ``dead``."""
        return self.outbox.counts()

    def status(self) -> OutboxStatus:
        """Rows by state and how long the receiver has been failing (health, the status line)."""
        return self.outbox.status()

    def wait_until_delivered(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until no row is pending; True when none is (dead rows do not count)."""
        return self.outbox.wait_until_delivered(timeout_s)


def build(alerts: AlertsConfig, context: SinkContext) -> WebhookSink | None:
    if alerts.webhook is None:
        return None
    return WebhookSink(context.db_path, alerts.webhook, **context.outbox_options)
