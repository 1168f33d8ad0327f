"""A real headless browser for the page tests: Debian's chromium driven by selenium through
Debian's /usr/bin/chromedriver (nothing downloaded).

* No chromium/chromedriver (or no selenium): the tests that use ``browser`` are **skipped**
  with the reason.
* ``QEC_KILN_REQUIRE_BROWSER=1`` (.ci/run sets it): they **fail** instead; as root without the
  packages the fixture first runs ``.ci/browser.sh install`` (apt-get, about 30 s).

chromium starts with every background service off (no network here: without these flags it
tries to reach Google) and a fresh profile. ``browser.console_errors()`` and
``browser.requests()`` read chromium's console and network logs since the last call.

Example::

    def test_page(browser, tmp_path):
        browser.get("file://" + str(tmp_path / "report.html"))
        assert browser.console_errors() == []
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BROWSER_SH = REPO / ".ci" / "browser.sh"
REQUIRE_ENV = "QEC_KILN_REQUIRE_BROWSER"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
         "--disable-dev-shm-usage", "--window-size=1280,1400")


def browser_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return f"no {CHROMIUM} or {CHROMEDRIVER} (sudo .ci/browser.sh install)"
    return None


def _unavailable(reason: str):
    if browser_required():
        pytest.fail(f"{REQUIRE_ENV}=1 but the browser is unavailable: {reason}")
    pytest.skip(reason)


class Browser:
    """A selenium Chrome driver with the logs this project's tests read."""

    def __init__(self, driver, profile: str):
        self.driver = driver
        self.profile = profile

    def __getattr__(self, name):
        return getattr(self.driver, name)

    def console_errors(self) -> list[str]:
        """SEVERE console entries (script errors, CSP violations, failed loads) since last call."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def requests(self) -> list[str]:
        """URLs of every request chromium sent (or tried) since the last call."""
        urls = []
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                urls.append(msg["params"]["request"]["url"])
        return urls

    def alert_text(self) -> str | None:
        """The text of an open alert/confirm/prompt dialog, or None."""
        from selenium.common.exceptions import NoAlertPresentException

        try:
            return self.driver.switch_to.alert.text
        except NoAlertPresentException:
            return None


@pytest.fixture(scope="session")
def browser():
    """One headless chromium for the session (each test navigates where it needs)."""
    reason = _missing()
    if reason and browser_required() and os.geteuid() == 0 and BROWSER_SH.exists():
        done = subprocess.run(["bash", str(BROWSER_SH), "install"], capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f".ci/browser.sh install failed:\n{done.stderr[-2000:]}")
        reason = _missing()
    if reason:
        _unavailable(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="kiln-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except Exception as ex:  # a chromium that does not start is the same as none
        shutil.rmtree(profile, ignore_errors=True)
        _unavailable(f"chromium did not start: {type(ex).__name__}: {ex}")
    driver.set_page_load_timeout(30)
    try:
        yield Browser(driver, profile)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
