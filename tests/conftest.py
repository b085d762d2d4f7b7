"""Shared test helpers: data-dependent tests skip with a clear reason when ../shared/data is absent."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from vigil.paths import data_path, missing_data_reason


def require_data(*parts: str):
    """Return the shared-data path, or skip the calling test with the reason it is missing."""
    reason = missing_data_reason(*parts)
    if reason:
        pytest.skip(reason)
    return data_path(*parts)


@pytest.fixture(scope="session")
def shared_data():
    """A callable fixture: ``shared_data("lfw")`` gives the path or skips the test."""
    return require_data


@pytest.fixture(scope="session")
def looped_clip(tmp_path_factory, shared_data):
    """The Hamilton clip's video track looped ``LOOPS`` times (3.5 minutes, copied, not re-encoded), for GStreamer's
    RTSP server (tests/gst_rtsp_server.py: every client plays the file from its start). Skips when that server or
    ffmpeg is not installed."""
    from gst_rtsp_server import gst_rtsp_available

    reason = gst_rtsp_available() or (None if shutil.which("ffmpeg") else "ffmpeg not installed")
    if reason:
        pytest.skip(reason)
    clip = shared_data("video", "short_hamilton_clip.mp4")
    path = tmp_path_factory.mktemp("gst") / "looped.mp4"
    command = ["ffmpeg", "-loglevel", "error", "-stream_loop", "20", "-i", str(clip), "-an", "-c", "copy", str(path)]
    subprocess.run(command, check=True, timeout=120)
    return path


@pytest.fixture
def gst_servers(looped_clip):
    """Factory for GStreamer RTSP servers on free ports serving ``looped_clip`` (``start=False``: the port is chosen,
    the server started later); every one is killed at teardown."""
    from gst_rtsp_server import GstRtspServer
    from rtsp_server import free_tcp_port

    made: list[GstRtspServer] = []

    def make(start: bool = True, **kwargs) -> GstRtspServer:
        server = GstRtspServer(looped_clip, free_tcp_port(), **kwargs)
        if start:
            server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.kill()
