"""The RTSP check before a camera is opened: Digest and Basic answers, and what each answer means for a camera.

Against a real server in tests/test_capture.py (GStreamer's, with Basic and Digest passwords); here the pure parts.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from vigil.rtsp_probe import ProbeResult, digest_authorization, probe_rtsp


def test_digest_answer_matches_rfc_2617_example() -> None:
    """RFC 2617 section 3.5's worked example (qop=auth)."""
    params = {"realm": "testrealm@host.com", "qop": "auth,auth-int", "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
              "opaque": "5ccc069c403ebaf9f0171e9517f40e41"}  # fmt: skip
    header = digest_authorization(params, "Mufasa", "Circle Of Life", "GET", "/dir/index.html", cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert "qop=auth" in header and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header


@pytest.mark.parametrize(
    ("result", "refusal", "line"),
    [
        (ProbeResult(200, "OK"), None, "RTSP 200 OK"),
        (ProbeResult(401, "Unauthorized"), "auth", "authentication failed (RTSP 401 Unauthorized)"),
        (ProbeResult(403, "Forbidden"), "auth", "authentication failed (RTSP 403 Forbidden)"),
        (ProbeResult(404, "Not Found"), "status", "RTSP 404 Not Found"),
        (ProbeResult(None, "cannot connect (refused)", reachable=False), "unreachable", "cannot connect (refused)"),
        (
            ProbeResult(None, "no RTSP answer within 5.0 s", timed_out=True),
            "unreachable",
            "no RTSP answer within 5.0 s",
        ),
        (
            ProbeResult(None, "no RTSP answer (ValueError: not an RTSP answer)"),
            None,
            "no RTSP answer (ValueError: not an RTSP answer)",
        ),
    ],
)
def test_what_an_answer_means(result: ProbeResult, refusal: str | None, line: str) -> None:
    assert result.refusal == refusal and result.describe() == line


def _one_shot_server(answer: bytes | None) -> tuple[int, threading.Thread]:
    """A TCP server on a free port that answers one request with ``answer`` (None: reads and never answers)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5.0)

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                if answer is not None:
                    conn.sendall(answer)
                else:
                    conn.settimeout(3.0)
                    with contextlib.suppress(OSError):
                        conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.mark.parametrize(
    ("answer", "status", "refusal"),
    [
        (b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 3\r\n\r\nv=0", 200, None),
        (b'RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Basic realm="cam"\r\n\r\n', 401, "auth"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", None, None),  # not RTSP: left to OpenCV
        (None, None, "unreachable"),  # accepts, never answers (a frozen server)
    ],
)
def test_probe_against_a_scripted_server(answer: bytes | None, status: int | None, refusal: str | None) -> None:
    port, thread = _one_shot_server(answer)
    result = probe_rtsp(f"rtsp://127.0.0.1:{port}/s", timeout_s=1.0)  # no credentials: a 401 is final
    assert (result.status, result.refusal) == (status, refusal)
    thread.join(timeout=5.0)


def test_probe_of_a_closed_port_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = probe_rtsp(f"rtsp://user:pw@127.0.0.1:{port}/s", timeout_s=1.0)
    assert result.refusal == "unreachable" and not result.reachable and "pw" not in result.describe()
