"""A WebDriver client from the standard library: headless Chromium driven through chromedriver.

WebDriver (the W3C standard that selenium speaks) is JSON over HTTP, so `http.client` is enough:
start `chromedriver --port=N`, open a session whose capabilities start Chromium headless, then send
commands: go to a URL, find elements by CSS selector, click them, run a script, take a screenshot.

    with Browser() as browser:
        browser.get("http://127.0.0.1:8080/?prompt=Hello")
        browser.wait_for("document.body.dataset.ready === 'true'")
        browser.click(browser.find("[data-candidate-id]"))

Debian's packages: `apt-get install -y chromium chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver).
Chromium runs with a fresh profile in a temporary directory and every background service off, so it
requests nothing but the pages it is sent to.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
"""The key under which WebDriver returns an element reference."""

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def find_chromium() -> tuple[str, str] | None:
    """(chromium, chromedriver), from $CHROMIUM / $CHROMEDRIVER or the PATH; None if either is missing."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebDriverError(Exception):
    """chromedriver answered a command with an error."""


class Browser:
    """One headless Chromium window, through its own chromedriver process; a context manager."""

    def __init__(self, size: tuple[int, int] = (1400, 1800)) -> None:
        found = find_chromium()
        if found is None:
            raise WebDriverError("no chromium and chromedriver: apt-get install -y chromium chromium-driver")
        chromium, driver = found
        self.profile = tempfile.mkdtemp(prefix="microqwen-chromium-")
        self.port = _free_port()
        self.driver = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
        self.session = ""
        try:
            self._wait_ready()
            args = CHROMIUM_FLAGS + [f"--window-size={size[0]},{size[1]}", f"--user-data-dir={self.profile}"]
            options = {"binary": chromium, "args": args}
            capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
            answer = self._send("POST", "/session", {"capabilities": capabilities})
            self.session = answer["sessionId"]
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self._send("GET", "/status").get("ready"):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise WebDriverError("chromedriver did not start within 20 s")

    def _send(self, method: str, path: str, body: Any = None) -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            data = None if body is None else json.dumps(body).encode()
            connection.request(method, path, data, {"Content-Type": "application/json"})
            answer = json.loads(connection.getresponse().read() or b"{}")
        finally:
            connection.close()
        value = answer.get("value", answer) if isinstance(answer, dict) else answer
        if isinstance(value, dict) and "error" in value:
            raise WebDriverError(f"{method} {path}: {value['error']}: {value.get('message', '')[:500]}")
        return value if path != "/session" else answer.get("value", answer)

    def command(self, method: str, path: str, body: Any = None) -> Any:
        """A command of this session: path relative to /session/{id}."""
        return self._send(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        """The first element matching a CSS selector (its WebDriver id)."""
        return str(self.command("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def find_all(self, css: str) -> list[str]:
        return [e[ELEMENT] for e in self.command("POST", "/elements", {"using": "css selector", "value": css})]

    def click(self, element: str) -> None:
        self.command("POST", f"/element/{element}/click", {})

    def text(self, element: str) -> str:
        return str(self.command("GET", f"/element/{element}/text"))

    def attribute(self, element: str, name: str) -> str | None:
        value = self.command("GET", f"/element/{element}/attribute/{name}")
        return None if value is None else str(value)

    def execute(self, script: str, *args: Any) -> Any:
        """Run `script` (a function body; `arguments` are the args) in the page; its return value."""
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, condition: str, timeout: float = 60.0) -> None:
        """Wait until the JavaScript expression `condition` is true in the page."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.execute(f"return Boolean({condition});"):
                return
            time.sleep(0.05)
        raise WebDriverError(f"waited {timeout} s for {condition}")

    def screenshot(self, path: str) -> None:
        """A PNG of the window."""
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.command("GET", "/screenshot")))

    def element_screenshot(self, element: str, path: str) -> None:
        """A PNG of one element, scrolled to the top of the window first (Chromium cuts the picture at the
        window's edge)."""
        self.execute("arguments[0].scrollIntoView({block: 'start'});", {ELEMENT: element})
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.command("GET", f"/element/{element}/screenshot")))

    def close(self) -> None:
        """End the session (Chromium exits), stop chromedriver, remove the profile."""
        try:
            if self.session:
                self.command("DELETE", "")
        except (OSError, WebDriverError):
            pass
        finally:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
