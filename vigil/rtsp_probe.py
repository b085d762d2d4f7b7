"""One RTSP DESCRIBE before a camera is opened: tells a wrong password from a camera that is down or missing.

OpenCV's FFmpeg backend reports every failure to open as "cannot open", but the two need opposite handling: a camera
that is down should be retried within seconds, while a wrong password must be retried *slowly*, because cameras lock
an account after a few failed logins (Hikvision and Dahua: 5, then 30 minutes). :func:`probe_rtsp` speaks just
enough RTSP/1.0 to find out: a DESCRIBE, and on a ``401`` challenge one more with the URL's credentials (Basic, or
Digest MD5 with or without ``qop=auth``, RFC 7616). So a probe is one login attempt, and when it fails OpenCV is not
asked to try again. The password is never logged: only the status line of the answer is kept.

Only ``rtsp://`` (plain TCP); ``rtsps://`` is left to OpenCV. Every socket operation shares one deadline.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

DEFAULT_RTSP_PORT = 554
MAX_HEADER_BYTES = 65_536
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


@dataclass(frozen=True)
class ProbeResult:
    """What the camera answered. ``status`` is None when no RTSP answer came (``reachable`` says whether the TCP
    connection opened at all); ``reason`` is the answer's status text or why there was none (no credentials)."""

    status: int | None
    reason: str
    reachable: bool = True
    timed_out: bool = False

    @property
    def auth_failed(self) -> bool:
        """The camera refused the credentials (or asked for some and the URL has none)."""
        return self.status in (401, 403)

    @property
    def refusal(self) -> str | None:
        """Why the stream cannot be read now: ``auth`` (401/403), ``status`` (another error status) or ``unreachable``
        (no connection, or no answer in time); None when it may be (a reply vigil cannot parse is not a refusal:
        OpenCV may still read the stream)."""
        if self.auth_failed:
            return "auth"
        if self.status is not None and self.status >= 400:
            return "status"
        return "unreachable" if not self.reachable or self.timed_out else None

    def describe(self) -> str:
        """One line for logs and ``CameraStats.last_error`` (no credentials in it)."""
        if self.status is None:
            return self.reason
        if self.auth_failed:
            return f"authentication failed (RTSP {self.status} {self.reason})"
        return f"RTSP {self.status} {self.reason}"


def is_plain_rtsp(source: str | int) -> bool:
    return isinstance(source, str) and source.lower().startswith("rtsp://")


def probe_rtsp(url: str, timeout_s: float) -> ProbeResult:
    """DESCRIBE ``url``; on a 401 challenge, once more with the URL's credentials. Never raises."""
    deadline = time.monotonic() + timeout_s
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or DEFAULT_RTSP_PORT
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    netloc = f"[{host}]" if ":" in host else host
    plain_url = urlunsplit((parts.scheme, f"{netloc}:{port}" if parts.port else netloc, parts.path, parts.query, ""))
    try:
        with socket.create_connection((host, port), timeout=max(deadline - time.monotonic(), 0.01)) as conn:
            reader = _AnswerReader(conn, deadline)
            status, reason, challenges = reader.ask(_describe(plain_url, 1, None))
            if status != 401:
                return ProbeResult(status, reason)
            if not user:
                return ProbeResult(401, f"{reason}; the URL has no user name and password")
            authorization = _authorization(challenges, user, password, plain_url)
            if authorization is None:
                return ProbeResult(None, "the camera asks for an authentication scheme vigil does not speak")
            status, reason, _ = reader.ask(_describe(plain_url, 2, authorization))
            return ProbeResult(status, reason)
    except TimeoutError:
        return ProbeResult(None, f"no RTSP answer within {timeout_s:.1f} s", timed_out=True)
    except (ConnectionRefusedError, socket.gaierror) as exc:
        return ProbeResult(None, f"cannot connect ({exc.strerror or exc})", reachable=False)
    except (OSError, ValueError) as exc:
        return ProbeResult(None, f"no RTSP answer ({type(exc).__name__}: {exc})")


def _describe(url: str, cseq: int, authorization: str | None) -> bytes:
    lines = [f"DESCRIBE {url} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp", "User-Agent: vigil"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class _AnswerReader:
    """Sends a request and reads one answer (status, reason, ``WWW-Authenticate`` values), body drained."""

    def __init__(self, conn: socket.socket, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.buffer = b""

    def _recv(self) -> None:
        self.conn.settimeout(max(self.deadline - time.monotonic(), 0.01))
        chunk = self.conn.recv(65_536)
        if not chunk:
            raise ValueError("connection closed before an answer")
        self.buffer += chunk
        if len(self.buffer) > MAX_HEADER_BYTES + 65_536:
            raise ValueError("answer too long")

    def ask(self, request: bytes) -> tuple[int, str, list[str]]:
        self.conn.settimeout(max(self.deadline - time.monotonic(), 0.01))
        self.conn.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        match = re.match(r"RTSP/\d\.\d (\d{3}) ?(.*)", lines[0])
        if match is None:
            raise ValueError(f"not an RTSP answer: {lines[0][:60]!r}")
        headers = [line.partition(":") for line in lines[1:]]
        length = next((int(value.strip()) for key, _, value in headers if key.strip().lower() == "content-length"), 0)
        while len(self.buffer) < length:
            self._recv()
        self.buffer = self.buffer[length:]
        challenges = [value.strip() for key, _, value in headers if key.strip().lower() == "www-authenticate"]
        return int(match.group(1)), match.group(2).strip(), challenges


def _authorization(challenges: list[str], user: str, password: str, url: str) -> str | None:
    """The ``Authorization`` value answering the strongest challenge offered (Digest over Basic)."""
    for challenge in challenges:
        scheme, _, params_text = challenge.partition(" ")
        if scheme.lower() == "digest":
            params = {key.lower(): quoted or bare for key, quoted, bare in _CHALLENGE_PARAM.findall(params_text)}
            if params.get("algorithm", "MD5").upper() == "MD5" and "nonce" in params:
                return digest_authorization(params, user, password, "DESCRIBE", url, cnonce=os.urandom(8).hex())
    if any(challenge.lower().startswith("basic") for challenge in challenges):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return None


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def digest_authorization(params: dict[str, str], user: str, password: str, method: str, uri: str, cnonce: str) -> str:
    """RFC 7616 Digest (MD5) for one request; ``qop=auth`` when the challenge offers it, else the RFC 2069 form."""
    realm, nonce = params.get("realm", ""), params["nonce"]
    ha1 = _md5(f"{user}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in [q.strip() for q in params.get("qop", "").split(",")]:
        response = _md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        fields += ["qop=auth", "nc=00000001", f'cnonce="{cnonce}"']
    else:
        response = _md5(f"{ha1}:{nonce}:{ha2}")
    fields.append(f'response="{response}"')
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(fields)
