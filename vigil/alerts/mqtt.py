"""The MQTT sink: events and camera status to an MQTT broker (Home Assistant, Node-RED, notification tools).

Topics (``<prefix>`` is ``alerts.mqtt.topic_prefix``, default ``vigil``), as a Frigate user would guess them:

- ``<prefix>/events``: every event, the JSON object of the JSONL sink (with its ``id``); not retained.
- ``<prefix>/<camera>/alert/<person_id>``: confirmed alerts only, the same JSON; not retained.
- ``<prefix>/<camera>/status``: the camera's state, retained: the API's camera status JSON
  (:class:`vigil.live.CameraStatus`: ``name``, ``up``, ``fps``, counters, ``last_error``, ``since``) plus
  ``"state": "up"|"down"`` (up: good frames flow), ``"condition": "up"|"STALLED"|"AUTH-FAILED"|"DOWN"`` and ``ts``;
  published by ``vigil run`` every ``status_interval_s`` and within a second of a camera's condition changing.
- ``<prefix>/available``: ``online`` when connected, ``offline`` at a clean stop and as the last will (the broker
  publishes it when vigil dies or loses the connection); retained.

"Retained" above means: when ``alerts.mqtt.retain`` is true (the default). Every publish uses ``alerts.mqtt.qos``
(default 1), except ``available``, which is always QoS 1.

Delivery (events): ``emit`` only stores the event in table ``mqtt_outbox`` of the events database (in the
dispatcher, in the one transaction that also stores the event: :mod:`vigil.alerts.transaction`); the outbox worker
(:mod:`vigil.alerts.outbox`, its own table, so webhook and MQTT deliveries are acknowledged independently) publishes
each row and marks it delivered only once the broker acknowledged every message of it (PUBACK at QoS 1, PUBCOMP at
QoS 2) within ``publish_timeout_s``. So delivery is at least once: a broker outage or a restart of vigil loses
nothing, and a row published but not yet marked may be published again (the ``id`` in the payload de-duplicates).
While the client is not connected the worker attempts nothing (an outage costs no attempts); on every (re)connect
every pending row is made due at once, and messages paho still held from the lost connection are dropped, so the
outbox is the only place that retries.

Connection: paho's network thread connects in the background and reconnects with exponential backoff
(``reconnect_initial_backoff_s`` .. ``reconnect_max_backoff_s``), so vigil starts and runs with the broker down. Each
kind of failure is logged as one line saying what to check (a refused password, an untrusted certificate, a TLS port
spoken to in plain text, a closed port), once, then again every ``REMIND_S`` while it lasts; the password is never
logged. A TLS setting that cannot work (a missing or unreadable CA file, certificate or key) is a
:class:`~vigil.errors.VigilError` when the sink is built: one line naming the key, and vigil does not start.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigil.alerts.events import utc_timestamp
from vigil.alerts.outbox import DeliveryResult, Outbox, OutboxDelivered, RetryPolicy
from vigil.alerts.sink import SinkContext
from vigil.config import AlertsConfig, MqttSinkConfig, MqttTlsConfig
from vigil.errors import VigilError
from vigil.redact import mask_url

if TYPE_CHECKING:
    from paho.mqtt.client import Client, MQTTMessageInfo

    from vigil.live import CameraStatus

log = logging.getLogger("vigil.alerts")

OUTBOX_TABLE = "mqtt_outbox"
ONLINE, OFFLINE = "online", "offline"
REMIND_S = 600.0  # an unchanged connection failure is logged again after this long (DEBUG in between)
CLOSE_TIMEOUT_S = 5.0  # bound on stopping the network thread at close
ACK_POLL_S = 0.2  # how often a wait for an acknowledgement checks that the connection is still the same
CREDENTIAL_REFUSALS = {4, 5, 0x86, 0x87}  # CONNACK codes: bad user name or password, not authorised (3.1.1 and 5)


@dataclass(frozen=True)
class MqttTopics:
    """The topic names under one prefix (camera names and person ids are plain topic levels: their patterns allow
    no ``/``, ``+`` or ``#``)."""

    prefix: str = "vigil"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    def alert(self, camera: str, person_id: str) -> str:
        return f"{self.prefix}/{camera}/alert/{person_id}"

    def status(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/status"


def event_messages(topics: MqttTopics, payload: str) -> list[tuple[str, str]]:
    """The (topic, payload) pairs one stored event is published as: every event to ``events``; a confirmed alert
    also to ``<camera>/alert/<person_id>``."""
    record = json.loads(payload)
    messages = [(topics.events, payload)]
    if record.get("type") == "alert" and record.get("stage") == "confirmed":
        messages.append((topics.alert(record["camera"], record["person_id"]), payload))
    return messages


def status_payload(status: CameraStatus, ts: str | None = None) -> str:
    """A camera's retained status message: the API's status JSON, ``state`` (up or down), ``condition`` (up, STALLED,
    AUTH-FAILED, DOWN) and ``ts`` (last error masked again: a status built elsewhere than
    vigil.live_publish.camera_status may not be)."""
    record = status.to_json()
    record.update(
        state="up" if status.up else "down",
        condition=status.condition,
        last_error=mask_url(status.last_error),
        ts=ts or utc_timestamp(),
    )
    return json.dumps(record)


# ---- settings checked when the sink is built ---------------------------------------------------------------------
def tls_context(tls: MqttTlsConfig) -> ssl.SSLContext:
    """The TLS context for ``alerts.mqtt.tls``; VigilError naming the key when a file is missing or unusable.

    With ``ca_file`` only that bundle is trusted (a private CA), otherwise the system's CAs."""
    cert = tls.client_cert
    files = {"ca_file": tls.ca_file}
    if cert is not None:
        files.update({"client_cert.cert_file": cert.cert_file, "client_cert.key_file": cert.key_file})
    for key, path in files.items():
        if path is not None and not Path(path).is_file():
            raise VigilError(f"alerts.mqtt.tls.{key}: {path}: file not found")
    ca_file = None if tls.ca_file is None else str(tls.ca_file)
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise VigilError(f"alerts.mqtt.tls.ca_file: {ca_file}: not a usable PEM CA file ({_reason(exc)})") from None
    if cert is not None:
        try:
            context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
        except (ssl.SSLError, OSError) as exc:
            raise VigilError(
                f"alerts.mqtt.tls.client_cert: {cert.cert_file} with {cert.key_file}: not a usable PEM certificate "
                f"and key ({_reason(exc)})"
            ) from None
    context.check_hostname = tls.check_hostname
    return context


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)


def resolve_password(config: MqttSinkConfig, environ: dict[str, str] | None = None) -> str | None:
    """The broker password from ``password`` or the variable ``password_env`` names (VigilError when unset)."""
    if config.password is not None:
        return config.password.get_secret_value()
    if config.password_env is None:
        return None
    value = (os.environ if environ is None else environ).get(config.password_env)
    if value is None:
        raise VigilError(f"alerts.mqtt.password_env: environment variable {config.password_env} is not set")
    return value


# ---- why a connection failed, in one line ------------------------------------------------------------------------
def describe_connect_error(exc: BaseException | None, config: MqttSinkConfig) -> str:
    """What went wrong with a connection attempt that raised ``exc`` (socket or TLS level), and what to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = str(exc.verify_message).rstrip(".")
        if "mismatch" in why:
            return (
                f"TLS: the broker's certificate is not valid for {config.host} ({why}): connect by a name the "
                "certificate lists, or set alerts.mqtt.tls.check_hostname: false"
            )
        return f"TLS: the broker's certificate is not trusted ({why}): check alerts.mqtt.tls.ca_file"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc}): is port {config.effective_port} a TLS listener?"
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError) and config.tls is not None:
        # the TCP connection was accepted, then dropped during the handshake: a plain MQTT listener does that
        return f"TLS handshake failed (connection reset): is port {config.effective_port} a TLS listener?"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running, and alerts.mqtt.host/port right?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {config.host} ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return f"no answer within {config.connect_timeout_s:g} s"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return "connection failed"


def describe_refusal(reason_code: Any, config: MqttSinkConfig) -> str:
    """The broker answered CONNECT with a refusal (``reason_code`` is paho's ReasonCode)."""
    code = getattr(reason_code, "value", reason_code)
    if code in CREDENTIAL_REFUSALS:
        who = f"user {config.username!r}" if config.username else "anonymous clients"
        return (
            f"the broker refused the credentials ({reason_code}) for {who}: check alerts.mqtt.username and "
            "password/password_env"
        )
    return f"the broker refused the connection ({reason_code})"


# ---- the connection ------------------------------------------------------------------------------------------------
class MqttConnection:
    """One paho client whose network thread connects in the background and reconnects with backoff (see the module
    docstring). ``on_connected`` runs in that thread after every successful connect, once ``online`` is sent."""

    def __init__(
        self,
        config: MqttSinkConfig,
        password: str | None,
        context: ssl.SSLContext | None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.config = config
        self.topics = MqttTopics(config.topic_prefix)
        self.target = f"{config.host}:{config.effective_port}"
        self._on_connected = on_connected
        self._connected = threading.Event()
        self._generation = 0  # one more at every disconnect: a wait for an ack that spans one fails at once
        self._closing = False
        self._answered = False  # this attempt got a CONNACK (a close before it: not an MQTT listener as configured)
        self._refused = False  # this attempt's CONNACK was a refusal (already reported)
        self._problem = ""  # the last failure, for log lines and delivery errors
        self._warned_mono_s = float("-inf")
        self._down_since_mono_s: float | None = time.monotonic()
        self._ever_connected = False
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id, protocol=mqtt.MQTTv311)
        client.connect_timeout = config.connect_timeout_s
        client.reconnect_delay_set(config.reconnect_initial_backoff_s, config.reconnect_max_backoff_s)
        client.will_set(self.topics.available, OFFLINE, qos=1, retain=config.retain)
        if config.username is not None:
            client.username_pw_set(config.username, password)
        if context is not None:
            client.tls_set_context(context)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        self._client: Client = client

    def start(self) -> None:
        """Connect in the background (returns at once)."""
        self._client.connect_async(self.config.host, self.config.effective_port, self.config.keepalive_s)
        self._client.loop_start()

    def is_connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def problem(self) -> str:
        """Why the client is not connected ("" while it is)."""
        return self._problem

    # ---- publishing ----
    def publish(self, topic: str, payload: str, qos: int, retain: bool, timeout_s: float) -> DeliveryResult:
        """Publish and wait for the broker's acknowledgement (QoS 0: until written); never raises."""
        if not self._connected.is_set():
            return DeliveryResult(False, f"not connected to {self.target}: {self._problem or 'connecting'}")
        generation = self._generation
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
            return self._wait_acknowledged(info, generation, timeout_s)
        except (ValueError, RuntimeError) as exc:  # paho: queue full, publish failed
            return DeliveryResult(False, str(exc))

    def publish_nowait(self, topic: str, payload: str, qos: int, retain: bool) -> bool:
        """Publish without waiting (state topics: the next one supersedes it); False when not connected."""
        if not self._connected.is_set():
            return False
        return self._client.publish(topic, payload, qos=qos, retain=retain).rc == 0

    def _wait_acknowledged(self, info: MQTTMessageInfo, generation: int, timeout_s: float) -> DeliveryResult:
        import paho.mqtt.client as mqtt

        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return DeliveryResult(False, f"publish failed: {mqtt.error_string(info.rc)}")
        deadline = time.monotonic() + timeout_s
        while not info.is_published():
            if self._generation != generation:
                return DeliveryResult(False, f"connection to {self.target} lost before the broker acknowledged")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return DeliveryResult(False, f"no acknowledgement from {self.target} within {timeout_s:g} s")
            info.wait_for_publish(min(ACK_POLL_S, remaining))
        return DeliveryResult(True)

    # ---- paho callbacks (its network thread) ----
    def _on_pre_connect(self, client: Client, userdata: object) -> None:
        self._answered = self._refused = False

    def _on_connect(self, client: Client, userdata: object, flags: Any, reason_code: Any, properties: Any) -> None:
        self._answered = True
        if reason_code.is_failure:
            self._refused = True
            self._report(describe_refusal(reason_code, self.config))
            return
        client.drop_out_messages()  # the outbox re-sends what the lost connection left unacknowledged
        down_s = None if self._down_since_mono_s is None else time.monotonic() - self._down_since_mono_s
        self._down_since_mono_s, self._problem = None, ""
        self._connected.set()
        client.publish(self.topics.available, ONLINE, qos=1, retain=self.config.retain)
        if self._ever_connected:
            log.info("mqtt: reconnected to %s after %.1f s", self.target, down_s or 0.0)
        else:
            log.info("mqtt: connected to %s", self.target)
        self._ever_connected = True
        if self._on_connected is not None:
            self._on_connected()

    def _on_connect_fail(self, client: Client, userdata: object) -> None:
        # paho calls this inside its `except OSError:` block, so the exception being handled is the reason
        self._report(describe_connect_error(sys.exc_info()[1], self.config))

    def _on_disconnect(self, client: Client, userdata: object, flags: Any, reason_code: Any, properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._generation += 1
        if self._down_since_mono_s is None:
            self._down_since_mono_s = time.monotonic()
        if self._closing or self._refused:
            return
        if was_connected:
            self._report(f"lost the connection ({reason_code})")
        elif not self._answered:
            tls_hint = "set alerts.mqtt.tls?" if self.config.tls is None else "check alerts.mqtt.tls"
            self._report(f"the broker closed the connection before answering (a TLS port? {tls_hint})")

    def _report(self, problem: str) -> None:
        """One warning per distinct problem, repeated every ``REMIND_S`` while it lasts (DEBUG in between)."""
        now = time.monotonic()
        repeated = problem == self._problem and now - self._warned_mono_s < REMIND_S
        self._problem = problem
        if repeated:
            log.debug("mqtt: %s: %s", self.target, problem)
            return
        self._warned_mono_s = now
        log.warning("mqtt: %s: %s (retrying; events wait in the outbox)", self.target, problem)

    # ---- stopping ----
    def close(self) -> None:
        """Publish ``offline`` (when connected), disconnect cleanly, stop the network thread (bounded wait)."""
        self._closing = True
        if self._connected.is_set():
            self.publish(self.topics.available, OFFLINE, 1, self.config.retain, min(self.config.publish_timeout_s, 2.0))
        self._client.disconnect()
        stopper = threading.Thread(target=self._client.loop_stop, name="vigil-mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(CLOSE_TIMEOUT_S)
        if stopper.is_alive():
            log.warning("mqtt: the network thread did not stop within %.0f s", CLOSE_TIMEOUT_S)


# ---- the sink ------------------------------------------------------------------------------------------------------
class MqttSink(OutboxDelivered):
    """Events to MQTT from the durable outbox, camera status to retained topics (see the module docstring).

    ``wall_clock``, ``poll_interval_s``, ``batch_size`` and ``start`` are the outbox's (:class:`Outbox`); with
    ``start`` False neither the outbox worker nor the connection is started (tests drive them). Delivery state:
    ``sink.outbox.counts()``, ``sink.outbox.wait_until_delivered(timeout_s)``.
    """

    name = "mqtt"

    def __init__(
        self,
        db_path: Path | str,
        config: MqttSinkConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        poll_interval_s: float = 1.0,
        batch_size: int = 32,
        start: bool = True,
    ) -> None:
        self.db_path = Path(db_path)
        self.config = config
        self.topics = MqttTopics(config.topic_prefix)
        context = tls_context(config.tls) if config.tls is not None else None  # a bad TLS setting stops here
        self.connection = MqttConnection(config, resolve_password(config), context, self._on_connected)
        self._statuses: dict[str, str] = {}  # camera -> its last status payload, re-sent on every connect
        self._statuses_lock = threading.Lock()
        retry = RetryPolicy(config.max_attempts, config.initial_backoff_s, config.max_backoff_s)
        self.outbox = Outbox(
            db_path,
            self._send,
            retry,
            channel="mqtt",
            target=self.connection.target,
            table=OUTBOX_TABLE,
            close_timeout_s=config.publish_timeout_s + 2.0,
            wall_clock=wall_clock,
            poll_interval_s=poll_interval_s,
            batch_size=batch_size,
            start=start,
            ready=self.connection.is_connected,
        )
        if start:
            self.connection.start()

    def _send(self, event_id: str, payload: str) -> DeliveryResult:
        for topic, body in event_messages(self.topics, payload):
            result = self.connection.publish(topic, body, self.config.qos, False, self.config.publish_timeout_s)
            if not result.ok:
                return result
        return DeliveryResult(True)

    def _on_connected(self) -> None:
        with self._statuses_lock:
            statuses = dict(self._statuses)
        for camera, payload in statuses.items():
            self.connection.publish_nowait(self.topics.status(camera), payload, self.config.qos, self.config.retain)
        self.outbox.retry_now()

    def publish_camera_status(self, statuses: Sequence[CameraStatus]) -> None:
        """Publish each camera's status to its retained topic (kept, and re-sent on every reconnect)."""
        stamp = utc_timestamp()
        for status in statuses:
            payload = status_payload(status, stamp)
            with self._statuses_lock:
                self._statuses[status.name] = payload
            topic = self.topics.status(status.name)
            self.connection.publish_nowait(topic, payload, self.config.qos, self.config.retain)

    def close(self) -> None:
        """While connected, wait up to ``publish_timeout_s`` for pending events; then stop the worker, publish
        ``offline`` and disconnect. Undelivered rows stay in the outbox for the next run."""
        if self.connection.is_connected():
            self.outbox.wait_until_delivered(self.config.publish_timeout_s)
        self.outbox.close()
        self.connection.close()


def build(alerts: AlertsConfig, context: SinkContext) -> MqttSink | None:
    if alerts.mqtt is None:
        return None
    return MqttSink(context.db_path, alerts.mqtt, **context.outbox_options)
