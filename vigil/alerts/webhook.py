"""The webhook sink: each event POSTed as JSON from the durable outbox (:mod:`vigil.alerts.outbox`), at least once,
with header ``Idempotency-Key: <id>``; any 2xx is a delivery, anything else (redirects included) is retried."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPException, HTTPMessage
from pathlib import Path
from typing import IO

from vigil import __version__
from vigil.alerts.outbox import DeliveryResult, Outbox, RetryPolicy
from vigil.alerts.sink import SinkContext
from vigil.config import AlertsConfig, WebhookSinkConfig
from vigil.redact import mask_url
from vigil.types import Event

MAX_RESPONSE_BYTES = 65_536  # a webhook response body is drained up to this size and ignored

Post = Callable[[str, str, str, float], DeliveryResult]  # (url, event id, payload, timeout s) -> result


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would follow a 301/302/303 as a GET without the body; a redirect is a failed delivery instead."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        return None


def post_json(url: str, event_id: str, payload: str, timeout_s: float) -> DeliveryResult:
    """POST one payload with ``Idempotency-Key``; ok on any 2xx, a one-line error otherwise. Never raises.

    Redirects are not followed (they count as failures); proxies come from the usual ``*_proxy`` variables.
    """
    request = urllib.request.Request(
        url,
        data=payload.encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": event_id, "User-Agent": f"vigil/{__version__}"},
    )
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout_s) as response:
            response.read(MAX_RESPONSE_BYTES)
            status = response.status
    except urllib.error.HTTPError as exc:
        return DeliveryResult(False, f"HTTP {exc.code}")
    except urllib.error.URLError as exc:
        return DeliveryResult(False, f"{exc.reason}")
    except (OSError, HTTPException, ValueError) as exc:  # timeouts, resets, bad status lines
        return DeliveryResult(False, f"{type(exc).__name__}: {exc}")
    return DeliveryResult(200 <= status < 300, "" if 200 <= status < 300 else f"HTTP {status}")


class WebhookSink:
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
        return self._post(self.config.url, event_id, payload, self.config.timeout_s)

    def start(self) -> None:
        self.outbox.start()

    def emit(self, event: Event) -> None:
        """Store the event in the outbox (one transaction) and wake the worker; the POST happens later."""
        self.outbox.put(event)

    def flush(self) -> None:
        """Nothing to do: an emitted event is already durable in the outbox."""

    def close(self) -> None:
        """Stop the worker (waits for at most one in-flight POST) and close the database; undelivered rows stay."""
        self.outbox.close()

    def deliver_due(self) -> int:
        """Send up to ``batch_size`` due rows, oldest first; returns how many were attempted."""
        return self.outbox.deliver_due()

    def counts(self) -> dict[str, int]:
        """Outbox rows by state: ``pending``, ``delivered``, ``dead``."""
        return self.outbox.counts()

    def wait_until_delivered(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until no row is pending; True when none is (dead rows do not count)."""
        return self.outbox.wait_until_delivered(timeout_s)


def build(alerts: AlertsConfig, context: SinkContext) -> WebhookSink | None:
    if alerts.webhook is None:
        return None
    return WebhookSink(context.db_path, alerts.webhook, **context.outbox_options)
