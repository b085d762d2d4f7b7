"""`vigil doctor`: a camera that cannot be reached is reported (password masked) and fails the check in time."""

from __future__ import annotations

import re
import socket

from vigil.cli import main


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_camera_fails_within_its_timeout_and_hides_the_password(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(
        "cameras:\n"
        f"  - {{name: gate, source: 'rtsp://admin:hunter2@127.0.0.1:{free_port()}/live', "
        "open_timeout_s: 1, read_timeout_s: 1}\n",
        encoding="utf-8",
    )
    code = main(["doctor", "--config", str(config)])
    out = capsys.readouterr()
    assert code == 1
    assert "camera gate" in out.out and "FAIL" in out.out
    assert "hunter2" not in out.out + out.err
    assert "admin:***@" in out.out
    camera_line = next(line for line in out.out.splitlines() if line.startswith("camera gate"))
    took_s = float(re.search(r"\(([0-9.]+) s\)$", camera_line).group(1))
    assert took_s < 1 + 1 + 2  # open + read timeouts, plus slack: a dead host must not block for OpenCV's 30 s


def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("cameras:\n  - {name: gate}\n", encoding="utf-8")
    assert main(["doctor", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cameras[0].source: Field required" in err[0]


def test_a_two_source_camera_has_both_streams_checked(tmp_path, capsys, shared_data):
    clip = shared_data("video", "short_hamilton_clip.mp4")
    config = tmp_path / "config.yaml"
    config.write_text(
        "cameras:\n"
        f"  - {{name: gate, source: '{clip}', detect_source: 'rtsp://u:pw@127.0.0.1:{free_port()}/sub', "
        "open_timeout_s: 1, read_timeout_s: 1}\n",
        encoding="utf-8",
    )
    code = main(["doctor", "--config", str(config)])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("camera gate")]
    assert code == 1 and len(lines) == 2
    assert "main stream" in lines[0] and "ok, 640x360" in lines[0]
    assert "detection sub-stream" in lines[1] and "FAIL" in lines[1] and "pw" not in lines[1]
