"""`vigil run` as a service, end to end: the real pipeline on the Hamilton clip with its API on a loopback port;
health, live frame, hot reload (a hand edit, a bad hand edit, an API edit), clean stop; and the refusal to listen
beyond loopback without users."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from vigil.cli import main

REPO = Path(__file__).resolve().parent.parent
PEOPLE = {"lin-manuel-miranda": "lin-manuel-miranda.png", "obama": "obama.jpg", "biden": "biden.jpg"}


def write_watchlist(path: Path, video_dir: Path, ids: list[str], broken: bool = False) -> None:
    lines = [f"photo_dirs: [{video_dir}]", "people:"] + [
        f"  - {{id: {pid}, name: {pid.title()}, photos: [{video_dir / PEOPLE[pid]}]}}" for pid in ids
    ]
    path.write_text("\n".join(lines) + ("\n  - {id: oops, name: \n" if broken else "\n"), encoding="utf-8")


def write_config(tmp_path: Path, clip: Path, listen: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nwatchlist: {tmp_path / 'watchlist.yaml'}\n"
        f"cameras:\n  - {{name: hamilton, source: {clip}, fps_cap: 10}}\n"
        f"status_interval_s: 2\nalerts: {{console: false}}\nserver: {{listen: '{listen}'}}\n",
        encoding="utf-8",
    )
    return config


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_refuses_to_listen_beyond_loopback_without_users(tmp_path, shared_data):
    clip = shared_data("video", "short_hamilton_clip.mp4")
    write_watchlist(tmp_path / "watchlist.yaml", clip.parent, ["obama"])
    config = write_config(tmp_path, clip, "0.0.0.0:0")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "vigil.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "no user exists" in errors[0] and "vigil user add" in errors[0]
    assert time.monotonic() - started < 60  # refused before any model loads


def test_vigil_run_serves_the_api_and_hot_reloads(tmp_path, shared_data, monkeypatch, capsys):
    clip = shared_data("video", "short_hamilton_clip.mp4")
    watchlist = tmp_path / "watchlist.yaml"
    write_watchlist(watchlist, clip.parent, ["lin-manuel-miranda", "obama"])
    config = write_config(tmp_path, clip, "127.0.0.1:0")
    assert main(["token", "create", "--config", str(config), "--role", "admin"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "vigil.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    try:
        port = wait_for(lambda: re.findall(r"API on http://127\.0\.0\.1:(\d+)", log_path.read_text()), 300, "the API")
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port[0]}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

        def health() -> dict:
            return api.get("/api/v1/health").json()

        wait_for(lambda: health()["cameras"] and health()["cameras"][0]["up"], 120, "the camera up in health")
        assert health()["watchlist"]["people_enrolled"] == 2 and len(health()["models"]) >= 2
        frame = wait_for(
            lambda: (r := api.get("/api/v1/cameras/hamilton/frame.jpg")).status_code == 200 and r, 120, "a live frame"
        )
        assert frame.content[:2] == b"\xff\xd8"

        write_watchlist(watchlist, clip.parent, ["lin-manuel-miranda", "obama", "biden"])  # a hand edit
        wait_for(lambda: health()["watchlist"]["people_enrolled"] == 3, 120, "the hand edit to be reloaded")
        write_watchlist(watchlist, clip.parent, ["obama"], broken=True)  # a bad hand edit: the last good list stays
        wait_for(lambda: health()["watchlist"]["error"], 60, "the reload error in health")
        assert health()["watchlist"]["people_enrolled"] == 3 and health()["status"] == "degraded"
        write_watchlist(watchlist, clip.parent, ["obama"])
        wait_for(
            lambda: health()["watchlist"]["people_enrolled"] == 1 and not health()["watchlist"]["error"],
            120,
            "the fixed file to be reloaded",
        )

        created = api.post("/api/v1/people", json={"id": "newcomer", "name": "New Comer", "list": "vip"})
        assert created.status_code == 201 and "newcomer" in watchlist.read_text()
        assert watchlist.with_name("watchlist.yaml.prev").exists()
        assert api.get("/api/v1/people/newcomer").json()["enrolled"] is False  # no photo yet
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=60)
    text = log_path.read_text()
    assert code == 0 and "stopped:" in text and "Traceback" not in text
    assert "watchlist reload failed" in text
