"""A real browser for tests: Debian's Chromium, headless, driven by Selenium through Debian's chromedriver.

Nothing is downloaded: the driver is given by path (Selenium Manager is skipped, and told to stay offline), and
Chromium starts with a fresh profile, no background networking, no component updates, no sync, no proxy, and a
host resolver that resolves nothing but 127.0.0.1, so the page under test is the only thing it can reach.
Screenshots go to ``out/screenshots/`` (git-ignored) in the repository.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "out" / "screenshots"
CHROMIUM = Path(os.environ.get("VIGIL_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("VIGIL_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT_S = 60.0  # the machine is shared and loaded: generous waits, never a fixed sleep
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--mute-audio",
)


def browser_missing_reason() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (apt-get install {package}; .ci/run installs it)"
    return None


def require_browser() -> None:
    reason = browser_missing_reason()
    if reason:
        pytest.skip(reason)


def start_browser(profile_dir: Path, width: int = 1366, height: int = 900) -> Any:
    """A headless Chromium with a fresh profile in ``profile_dir`` (a WebDriver; call ``quit()``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager, should anything reach it: never download
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(profile_dir.parent / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver


def wait_until(driver: Any, condition: Callable[[Any], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """The first truthy value of ``condition(driver)`` within ``timeout_s``; fails naming ``what`` otherwise."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition(driver)
            if value:
                return value
        except (StaleElementReferenceException, WebDriverException) as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(
        f"timed out after {timeout_s:.0f} s waiting for {what}" + (f" (last error: {last})" if last else "")
    )


def wait_visible(driver: Any, element_id: str, what: str, timeout_s: float = WAIT_S) -> Any:
    """The element with ``element_id`` once it is displayed."""
    return wait_until(driver, lambda d: (e := d.find_element("id", element_id)).is_displayed() and e, what, timeout_s)


def screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def log_in(driver: Any, base_url: str, username: str, password: str, page: str = "/") -> None:
    """Log in through the login form (a fresh session: the cookies of any earlier user are dropped first)."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/login")
    driver.delete_all_cookies()
    driver.get(f"{base_url}/login?next={page}")
    wait_until(driver, lambda d: d.find_element(By.ID, "username"), "the login form")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    wait_until(driver, lambda d: d.find_elements(By.ID, "current-user"), f"{username} to be logged in")


def console_errors(driver: Any) -> list[str]:
    """Severe browser console entries (script errors, CSP violations, failed loads other than expected 4xx)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def remove_profile(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# the page's own figures from the Navigation and Resource Timing APIs: load time, the moment the first events were on
# screen (a mark set by alerts.js), and bytes of the document, scripts and styles (faces and frames are data)
PAGE_FIGURES_JS = """
const nav = performance.getEntriesByType('navigation')[0];
const assets = performance.getEntriesByType('resource').filter((r) => /\\/static\\//.test(r.name));
const bytes = (r) => r.decodedBodySize || 0;
const shown = performance.getEntriesByName('vigil:events-shown')[0];
return {
  dom_content_loaded_ms: Math.round(nav.domContentLoadedEventEnd),
  load_ms: Math.round(nav.loadEventEnd),
  events_shown_ms: shown ? Math.round(shown.startTime) : null,
  document_bytes: bytes(nav),
  transferred_bytes: nav.transferSize + assets.reduce((sum, r) => sum + r.transferSize, 0),
  assets: Object.fromEntries(assets.map((r) => [r.name.replace(/^.*\\/static\\//, ''), bytes(r)])),
  assets_bytes: bytes(nav) + assets.reduce((sum, r) => sum + bytes(r), 0),
};
"""


def measure_first_load(base_url: str, username: str, password: str, page: str, profile: Path) -> dict:
    """A page's first load in a fresh browser profile (nothing cached): logged in through the API first, so that
    the login page's assets are not in the cache when ``page`` loads."""
    import httpx

    answer = httpx.post(f"{base_url}/api/v1/auth/login", json={"username": username, "password": password}, timeout=60)
    answer.raise_for_status()
    driver = start_browser(profile)
    try:
        driver.get(f"{base_url}/api/v1/health")  # a JSON document on the origin, to set the cookie on
        driver.add_cookie({"name": "vigil_session", "value": answer.cookies["vigil_session"], "path": "/"})
        driver.get(f"{base_url}{page}")
        wait_until(
            driver,
            lambda d: d.execute_script("return performance.getEntriesByName('vigil:events-shown').length"),
            "the events on screen",
        )
        return driver.execute_script(PAGE_FIGURES_JS)
    finally:
        driver.quit()
        remove_profile(profile)
