"""A local RTSP test server: Debian's ffmpeg encodes a looping clip to RTP, a small Python server relays it.

Why not ``ffmpeg -f rtsp -rtsp_flags listen rtsp://...``? FFmpeg's RTSP *muxer* cannot listen: ``listen`` is a
flag of the RTSP *demuxer* (it accepts an ANNOUNCE/RECORD push), and as an output ffmpeg connects to a server
(verified with ffmpeg 5.1: "Connection to tcp://127.0.0.1:PORT failed: Connection refused"). mediamtx is not
available, so this module is the server:

* one ``ffmpeg -re -stream_loop -1 -i CLIP -c:v libx264 -g 15 -f rtp`` process sends RTP/RTCP over UDP to two
  local sockets and writes the SDP (a short GOP, 0.5 s, so a client joining mid-stream decodes within ~0.5 s);
* an RTSP/1.0 listener answers OPTIONS, DESCRIBE, SETUP (RTP over TCP, interleaved channels 0-1 only; a UDP
  SETUP gets ``461 Unsupported Transport``), PLAY, GET_PARAMETER and TEARDOWN, any number of clients at once;
* a relay thread copies every RTP/RTCP datagram to each playing client as ``$ channel length payload``.

``stop()`` closes every client connection (the client sees the camera drop) and ends ffmpeg; ``start()`` again
serves on the same port. ``freeze()`` keeps the connections open but stops sending packets (a stalled camera).
Every socket and wait has a timeout; ``stop()`` returns within about two seconds.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

_POLL_S = 0.2


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Client:
    """One RTSP client connection; writes from the relay and the control thread are serialised by a lock."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.playing = False

    def send(self, data: bytes) -> bool:
        try:
            with self.lock:
                self.conn.sendall(data)
            return True
        except OSError:
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        self.conn.close()


class RtspTestServer:
    """Serve ``video`` in a loop at ``rtsp://127.0.0.1:PORT/PATH`` (RTP over TCP only)."""

    def __init__(self, video: Path | str, port: int | None = None, path: str = "cam", gop_frames: int = 15) -> None:
        self.video = Path(video)
        self.port = port or free_tcp_port()
        self.path = path
        self.gop_frames = gop_frames
        self.transports_requested: list[str] = []  # Transport headers of every SETUP, to check TCP was asked
        self._clients: list[_Client] = []
        self._clients_lock = threading.Lock()
        self._stop = threading.Event()
        self._frozen = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ffmpeg: subprocess.Popen | None = None
        self._listener: socket.socket | None = None
        self._udp: list[socket.socket] = []
        self._sdp = ""
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{self.path}"

    def __enter__(self) -> RtspTestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        """Start ffmpeg and the listener; returns once the SDP is known and the port accepts connections."""
        self._stop.clear()
        self._frozen.clear()
        self._udp = [self._bind_udp(), self._bind_udp()]
        self._tmp = tempfile.TemporaryDirectory(prefix="vigil-rtsp-")
        sdp_path = Path(self._tmp.name) / "stream.sdp"
        self._ffmpeg = subprocess.Popen(
            self._ffmpeg_command(sdp_path), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._sdp = self._wait_for_sdp(sdp_path, timeout_s)
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener.settimeout(_POLL_S)
        self._spawn(self._accept_loop)
        self._spawn(self._relay_loop)

    def stop(self) -> None:
        """Drop every client, stop ffmpeg and free the port (it can be started again)."""
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        if self._ffmpeg is not None:
            self._ffmpeg.kill()
            self._ffmpeg.wait(timeout=5)
            if self._ffmpeg.stderr is not None:
                self._ffmpeg.stderr.close()
            self._ffmpeg = None
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads = []
        for sock in self._udp:
            sock.close()
        self._udp = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def freeze(self, frozen: bool = True) -> None:
        """Stop (or resume) sending packets while keeping every connection open: a stalled camera."""
        if frozen:
            self._frozen.set()
        else:
            self._frozen.clear()

    def playing_clients(self) -> int:
        with self._clients_lock:
            return sum(1 for client in self._clients if client.playing)

    # ---- ffmpeg ----------------------------------------------------------------------------------------------
    def _ffmpeg_command(self, sdp_path: Path) -> list[str]:
        rtp_port, rtcp_port = (sock.getsockname()[1] for sock in self._udp)
        return [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            str(self.video),
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            str(self.gop_frames),
            "-pix_fmt",
            "yuv420p",
            "-flags",
            "+global_header",
            "-f",
            "rtp",
            "-sdp_file",
            str(sdp_path),
            f"rtp://127.0.0.1:{rtp_port}?rtcpport={rtcp_port}&pkt_size=1200",
        ]

    def _wait_for_sdp(self, sdp_path: Path, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._ffmpeg is not None and self._ffmpeg.poll() is not None:
                err = self._ffmpeg.stderr.read().decode(errors="replace") if self._ffmpeg.stderr else ""
                raise RuntimeError(f"ffmpeg exited with {self._ffmpeg.returncode}: {err.strip()[-500:]}")
            if sdp_path.is_file():
                text = sdp_path.read_text()
                if "m=video" in text and "rtpmap" in text:
                    return text
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ffmpeg wrote no SDP within {timeout_s} s")

    def _describe_sdp(self) -> str:
        """The ffmpeg SDP rewritten for RTSP: no address or port, one control per track."""
        lines = []
        for line in self._sdp.splitlines():
            line = line.strip()
            if line.startswith("c="):
                line = "c=IN IP4 0.0.0.0"
            elif line.startswith("m=video"):
                parts = line.split()
                parts[1] = "0"
                line = " ".join(parts)
            if line:
                lines.append(line)
        lines.insert(lines.index(next(x for x in lines if x.startswith("m="))), "a=control:*")
        lines.append("a=control:trackID=0")
        return "\r\n".join(lines) + "\r\n"

    @staticmethod
    def _bind_udp() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(_POLL_S)
        return sock

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"rtsp-test-{target.__name__}")
        thread.start()
        self._threads.append(thread)

    # ---- relay -----------------------------------------------------------------------------------------------
    def _relay_loop(self) -> None:
        import select

        channels = {sock.fileno(): channel for channel, sock in enumerate(self._udp)}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(self._udp, [], [], _POLL_S)
            except (OSError, ValueError):
                return
            for sock in ready:
                try:
                    data = sock.recv(65536)
                except OSError:
                    continue
                if not self._frozen.is_set():
                    self._broadcast(channels[sock.fileno()], data)

    def _broadcast(self, channel: int, data: bytes) -> None:
        frame = b"$" + bytes([channel]) + len(data).to_bytes(2, "big") + data
        with self._clients_lock:
            clients = [client for client in self._clients if client.playing]
        for client in clients:
            if not client.send(frame):
                self._drop(client)

    def _drop(self, client: _Client) -> None:
        with self._clients_lock:
            if client in self._clients:
                self._clients.remove(client)
        client.close()

    # ---- RTSP control ----------------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                return
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(_POLL_S)
            client = _Client(conn)
            with self._clients_lock:
                self._clients.append(client)
            self._spawn(self._serve_client, client)

    def _serve_client(self, client: _Client) -> None:
        reader = _RequestReader(client.conn, self._stop)
        while not self._stop.is_set():
            request = reader.next_request()
            if request is None:
                break
            method, headers = request
            if not self._answer(client, method, headers):
                break
        self._drop(client)

    def _answer(self, client: _Client, method: str, headers: dict[str, str]) -> bool:
        """Send the reply to one request; False ends the connection."""
        cseq = headers.get("cseq", "0")
        session = "Session: 4242;timeout=60\r\n"
        if method == "OPTIONS":
            return self._reply(client, cseq, "Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN\r\n")
        if method == "DESCRIBE":
            body = self._describe_sdp()
            extra = f"Content-Base: {self.url}/\r\nContent-Type: application/sdp\r\nContent-Length: {len(body)}\r\n"
            return self._reply(client, cseq, extra, body)
        if method == "SETUP":
            transport = headers.get("transport", "")
            self.transports_requested.append(transport)
            if "TCP" not in transport.upper():
                return self._reply(client, cseq, status="461 Unsupported Transport")
            return self._reply(client, cseq, session + "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
        if method == "PLAY":
            ok = self._reply(client, cseq, session + "Range: npt=0.000-\r\n")
            client.playing = True
            return ok
        if method in ("GET_PARAMETER", "SET_PARAMETER"):
            return self._reply(client, cseq, session)
        if method == "TEARDOWN":
            self._reply(client, cseq, session)
            return False
        return self._reply(client, cseq, status="405 Method Not Allowed")

    @staticmethod
    def _reply(client: _Client, cseq: str, extra: str = "", body: str = "", status: str = "200 OK") -> bool:
        return client.send(f"RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n{extra}\r\n{body}".encode())


class _RequestReader:
    """Reads RTSP requests from a socket, skipping interleaved ``$`` packets (the client's RTCP reports)."""

    def __init__(self, conn: socket.socket, stop: threading.Event) -> None:
        self.conn = conn
        self.stop = stop
        self.buffer = b""

    def _fill(self) -> bool:
        while not self.stop.is_set():
            try:
                chunk = self.conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return False
            if not chunk:
                return False
            self.buffer += chunk
            return True
        return False

    def next_request(self) -> tuple[str, dict[str, str]] | None:
        """(method, lower-cased headers) or None when the connection ended."""
        while True:
            if self.buffer.startswith(b"$"):
                if len(self.buffer) >= 4 and len(self.buffer) >= 4 + int.from_bytes(self.buffer[2:4], "big"):
                    self.buffer = self.buffer[4 + int.from_bytes(self.buffer[2:4], "big") :]
                    continue
            elif b"\r\n\r\n" in self.buffer:
                return self._parse()
            if not self._fill():
                return None

    def _parse(self) -> tuple[str, dict[str, str]]:
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode(errors="replace").split("\r\n")
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        while len(self.buffer) < length and self._fill():
            pass
        self.buffer = self.buffer[length:]
        return lines[0].split(" ", 1)[0].upper(), headers
