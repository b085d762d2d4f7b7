"""The web page end to end: the real `vigil run` (the Hamilton clip as a file camera, a watchlist with Lin-Manuel
Miranda, users made with `vigil user add`) and headless Chromium.

In the browser: the operator's live tile shows frames; an alert for Lin-Manuel appears without a reload and is
acknowledged; a viewer cannot open an unknown face's snapshot; the admin adds a person with an uploaded photo (ok)
and sees a photo without a face refused with its reason, and the new person is enrolled by the running pipeline; a
stored name with markup shows as text. Measured and written to out/web_e2e.json (reported, not asserted as times):
the alerts page's first load and asset bytes, and how long after the pipeline stamped each alert it was on screen.
The machine is shared: waits are generous (the pipeline runs at a few frames/s under load).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from api_helpers import store_alert
from browser_helpers import (
    log_in,
    measure_first_load,
    remove_profile,
    require_browser,
    screenshot,
    start_browser,
    wait_until,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "out"
PASSWORD = "e2e password 123"
LIN = "lin-manuel-miranda"
MARKUP_NAME = "<script>window.__pwned = 1</script>"
LIVE_SAMPLES = 3  # live alerts to time (more rows, more samples; the wait for them is bounded below)


def epoch_s(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def write_setup(tmp_path: Path, clip: Path, photo: Path) -> Path:
    watchlist = tmp_path / "watchlist.yaml"
    watchlist.write_text(
        f"photo_dirs: [{photo.parent}]\npeople:\n  - {{id: {LIN}, name: Lin-Manuel Miranda, photos: [{photo}]}}\n",
        encoding="utf-8",
    )  # the photo lies in the shared data folder, which the watchlist must list (photos are confined)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nwatchlist: {watchlist}\n"
        f"cameras:\n  - {{name: hamilton, source: {clip}, fps_cap: 10}}\n"
        "status_interval_s: 2\nalerts: {console: false}\n"
        # a short cooldown: the clip loops every 9 s, so Lin-Manuel alerts again while the page is open; fewer hits
        # per track: at a few frames/s under load a stranger's track gets only a few, and must make an unknown event
        "rules: {cooldown_s: 2, unknown_events: true, min_hits: 1, confirm_hits: 2}\n"
        "server: {listen: '127.0.0.1:0'}\n",
        encoding="utf-8",
    )
    return config


def vigil(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vigil.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )


def start_run(config: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    with log_path.open("w") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "vigil.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = re.findall(r"API on (http://127\.0\.0\.1:\d+)", log_path.read_text())
        if found:
            return run, found[0]
        if run.poll() is not None:
            raise AssertionError(f"vigil run exited with {run.returncode}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    run.kill()
    raise AssertionError("vigil run's API did not start within 300 s")


def rows(driver, selector: str = "article.event"):
    return driver.find_elements("css selector", selector)


def live_rows(driver, person: str) -> list[dict]:
    """Rows that arrived over the stream (they carry data-shown-at) for ``person``, with their timing."""
    return driver.execute_script(
        "return [...document.querySelectorAll('article.event[data-shown-at]')]"
        ".filter((r) => r.querySelector('.person').textContent === arguments[0])"
        ".map((r) => ({id: r.dataset.id, ts: r.dataset.ts, shown_ms: Number(r.dataset.shownAt)}));",
        person,
    )


def operator_live_and_alerts(driver, url: str, figures: dict) -> None:
    log_in(driver, url, "operator", PASSWORD, "/live")
    tile = wait_until(driver, lambda d: rows(d, 'article.tile[data-camera="hamilton"]'), "the camera tile")[0]
    frame = tile.find_element("css selector", "img.frame")
    wait_until(driver, lambda d: frame.get_attribute("data-index") not in (None, "", "1"), "live frames", 180)
    screenshot(driver, "e2e-live")
    driver.get(f"{url}/alerts")
    wait_until(driver, lambda d: "live" in d.find_element("id", "stream-state").text, "the event stream")
    driver.execute_script("window.__sameDocument = true")
    first = wait_until(driver, lambda d: live_rows(d, "Lin-Manuel Miranda"), "a live alert for Lin-Manuel", 420)
    deadline = time.monotonic() + 60
    while len(samples := live_rows(driver, "Lin-Manuel Miranda")) < LIVE_SAMPLES and time.monotonic() < deadline:
        time.sleep(1.0)
    assert driver.execute_script("return window.__sameDocument") is True  # it came without a reload
    figures["alert_on_screen_s"] = [round(s["shown_ms"] / 1000 - epoch_s(s["ts"]), 3) for s in samples]
    row = driver.find_element("css selector", f'article.event[data-id="{first[0]["id"]}"]')
    row.find_element("css selector", "input[name=note]").send_keys("seen on stage, no action")
    row.find_element("css selector", "button.ack").click()
    acknowledged = wait_until(
        driver,
        lambda d: (
            (r := d.find_element("css selector", f'article.event[data-id="{first[0]["id"]}"]'))
            and r.find_elements("css selector", ".mark-ack")
            and r
        ),
        "the acknowledgement",
    )
    assert "Acknowledged by operator" in acknowledged.text and "seen on stage" in acknowledged.text
    screenshot(driver, "e2e-alerts")


def first_unknown_row(driver) -> tuple[str, bool, str] | None:
    """The first unknown-face row's id, whether it shows an image, and its text; None while there is none."""
    found = rows(driver, "article.event.unknown")
    if not found:
        return None
    row = found[0]
    return row.get_attribute("data-id"), bool(row.find_elements("css selector", "img")), row.text


def viewer_cannot_open_unknown_snapshots(driver, url: str) -> None:
    log_in(driver, url, "viewer", PASSWORD, "/alerts")
    driver.find_element("id", "tab-unknown").click()
    # the list may be redrawn (a live event, a refetch) between finding a row and reading it: read it in one go,
    # inside the wait, which retries on a stale element
    event_id, has_image, text = wait_until(driver, first_unknown_row, "an unknown-face event", 300)
    assert not has_image and "hidden for your role" in text
    screenshot(driver, "e2e-unknown-viewer")
    driver.get(f"{url}/api/v1/events/{event_id}/snapshot.jpg")
    assert "may not see snapshots of faces that matched nobody" in driver.find_element("tag name", "body").text


def admin_enrols(driver, url: str, tmp_path: Path, obama: Path) -> None:
    blank = tmp_path / "wall.jpg"  # a photo of a wall: no face
    cv2.imwrite(str(blank), np.full((240, 320, 3), (180, 190, 200), np.uint8))
    log_in(driver, url, "admin", PASSWORD, "/watchlist")
    wait_until(driver, lambda d: rows(d, f'[data-person="{LIN}"]'), "the watchlist")
    driver.find_element("css selector", "#add-person summary").click()
    form = driver.find_element("id", "add-form")
    form.find_element("name", "name").send_keys("Barack Obama")
    form.find_element("name", "photos").send_keys(f"{obama}\n{blank}")
    form.find_element("css selector", "button[type=submit]").click()
    results = wait_until(
        driver, lambda d: len(r := rows(d, "#add-results li.upload[data-result]")) == 2 and r, "both results", 180
    )
    texts = {item.get_attribute("data-result"): item.text for item in results}
    assert texts.get("ok") == f"{obama.name}: ok", texts
    assert texts.get("no_face", "").startswith("wall.jpg: no face"), texts
    # the running pipeline enrols the new person without a restart
    wait_until(
        driver,
        lambda d: (
            (d.refresh() or True)
            and (cards := rows(d, '[data-person="barack-obama"] .enrolled'))
            and cards[0].text == "yes"
        ),
        "the new person enrolled by the running pipeline",
        180,
    )
    screenshot(driver, "e2e-watchlist")


def stored_markup_is_text(driver, url: str, data_dir: Path) -> None:
    """A name with markup that reached the store (written by another tool, or before validation existed) is text."""
    event_id = store_alert(data_dir, "legacy", MARKUP_NAME, "hamilton", snapshot=False).id
    log_in(driver, url, "operator", PASSWORD, "/alerts")
    row = wait_until(
        driver,
        lambda d: (d.refresh() or True) and rows(d, f'article.event[data-id="{event_id}"]'),
        "the stored event",
        60,
    )[0]
    assert row.find_element("css selector", ".person").text == MARKUP_NAME
    assert driver.execute_script("return window.__pwned") is None and not rows(driver, "#events script")


def test_the_page_on_the_real_pipeline(tmp_path, shared_data):
    require_browser()
    clip = shared_data("video", "short_hamilton_clip.mp4")
    lin_photo, obama = shared_data("video", "lin-manuel-miranda.png"), shared_data("video", "obama.jpg")
    config = write_setup(tmp_path, clip, lin_photo)
    for name, role in (("admin", "admin"), ("operator", "operator"), ("viewer", "viewer")):
        vigil("user", "add", name, "--role", role, "--config", str(config), "--password-stdin", stdin=PASSWORD + "\n")
    run, url = start_run(config, tmp_path / "run.log")
    driver = start_browser(tmp_path / "profile")
    figures: dict = {"load_average_at_start": os.getloadavg()}
    try:
        operator_live_and_alerts(driver, url, figures)
        figures["first_load_alerts_page"] = measure_first_load(url, "operator", PASSWORD, "/alerts", tmp_path / "cold")
        viewer_cannot_open_unknown_snapshots(driver, url)
        admin_enrols(driver, url, tmp_path, obama)
        stored_markup_is_text(driver, url, tmp_path / "data")
        figures["load_average_at_end"] = os.getloadavg()
    finally:
        driver.quit()
        remove_profile(tmp_path / "profile")
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=60)
        OUT.mkdir(exist_ok=True)
        (OUT / "web_e2e.json").write_text(json.dumps(figures, indent=2))
        print("web e2e figures:", json.dumps(figures))
    log = (tmp_path / "run.log").read_text()
    assert code == 0 and "Traceback" not in log
