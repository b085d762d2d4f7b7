"""GStreamer's RTSP server (Debian's gst-rtsp-server) as a separate process the tests can kill, freeze and restart.

Run as a script with the *system* Python, which has the GObject bindings (``python3-gi``,
``gir1.2-gst-rtsp-server-1.0``; the project's venv has not)::

    /usr/bin/python3 tests/gst_rtsp_server.py --port 8554 --video clip.mp4 [--user U --password P --auth basic|digest]

It serves the H.264 track of an MP4 at ``rtsp://127.0.0.1:PORT/cam`` (each client gets its own pipeline from the start
of the file, paced in real time), prints ``ready`` once it listens, and one line ``answer <status>`` per RTSP answer
it sends (the tests count ``401``s: failed logins). Imported, this module gives :class:`GstRtspServer`, which starts
that script as a child process and stops it by its pid: ``kill()`` (SIGKILL, the port refuses until ``start()``),
``freeze()`` / ``thaw()`` (SIGSTOP / SIGCONT: connections stay open, nothing is sent).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
_CHECK = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"


def gst_rtsp_available() -> str | None:
    """None when the server can run here, else why not (for a skip reason)."""
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} not found"
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {SYSTEM_PYTHON}: {exc}"
    if done.returncode != 0:
        return "GStreamer's RTSP server is not installed (apt-get install gir1.2-gst-rtsp-server-1.0 python3-gi ...)"
    return None


class GstRtspServer:
    """The script above as a child process on 127.0.0.1:``port``."""

    def __init__(
        self, video: Path | str, port: int, user: str | None = None, password: str | None = None, auth: str = "basic"
    ) -> None:
        self.video, self.port = Path(video), port
        self.user, self.password, self.auth = user, password, auth
        self.process: subprocess.Popen[str] | None = None
        self.answers: list[int] = []  # every RTSP status code the server sent, in order
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def url_with(self, user: str, password: str) -> str:
        return f"rtsp://{user}:{password}@127.0.0.1:{self.port}/cam"

    def count(self, status: int) -> int:
        with self._lock:
            return self.answers.count(status)

    def start(self, timeout_s: float = 30.0) -> None:
        command = [SYSTEM_PYTHON, __file__, "--port", str(self.port), "--video", str(self.video)]
        if self.user is not None and self.password is not None:
            command += ["--user", self.user, "--password", self.password, "--auth", self.auth]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        ready = threading.Event()
        threading.Thread(target=self._read, args=(self.process, ready), daemon=True).start()
        if not ready.wait(timeout_s):
            self.kill()
            raise RuntimeError(f"GStreamer RTSP server on port {self.port} not ready within {timeout_s} s")

    def _read(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("ready"):
                ready.set()
            elif line.startswith("answer "):
                with self._lock:
                    self.answers.append(int(line.split()[1]))

    def kill(self) -> None:
        """SIGKILL (a crash): connections drop, the port refuses until ``start()``."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)  # a frozen process must be able to die
                self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def __enter__(self) -> GstRtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# ---- the server itself (system Python) ---------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( filesrc location="{args.video}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )'
    )
    factory.set_shared(False)
    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        if args.auth == "digest":
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(args.user, args.password, token)
        else:
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("viewer", "media.factory.access", True)
        permissions.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/cam", factory)

    def on_client(_server: object, client: GstRtspServer.RTSPClient) -> None:
        def sent(_client: object, _context: object, message: GstRtsp.RTSPMessage) -> None:
            with contextlib.suppress(Exception):
                print(f"answer {int(message.parse_response()[1])}", flush=True)

        client.connect("send-message", sent)

    server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    print("ready", flush=True)
    loop = GLib.MainLoop()
    GLib.timeout_add_seconds(1, lambda: os.getppid() != 1 or loop.quit())  # the test process died: go too
    loop.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--auth", choices=("basic", "digest"), default="basic")
    _serve(parser.parse_args())


if __name__ == "__main__":
    main()
