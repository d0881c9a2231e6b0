"""`microqwen serve` in a child process on a free loopback port, and raw HTTP to talk to it.

The server is started the way a user starts it (`python -m microqwen serve --port 0 ...`); it
prints the address it listens on to stderr, which `ServerProcess` reads (and keeps every later
line of its log in `log`, so the pipe never fills).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Iterator

ADDRESS = re.compile(r"explorer at http://127\.0\.0\.1:(\d+)/")


class ServerProcess:
    """A running `microqwen serve`; `stop()` (or the with block's end) sends SIGTERM and waits.

    Its prompt cache is a temporary directory of its own (`$MICROQWEN_CACHE`), removed at the end.
    """

    def __init__(self, model: str, *flags: str, python: str = sys.executable) -> None:
        command = [python, "-m", "microqwen", "serve", "-m", model, "--port", "0", *flags]
        self.cache = tempfile.mkdtemp(prefix="microqwen-serve-cache-")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True,
                                        env=dict(os.environ, MICROQWEN_CACHE=self.cache))  # fmt: skip
        self.log: list[str] = []
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._read_log, args=(ready,), daemon=True).start()
        if not ready.wait(120) or not self.port:
            self.process.kill()
            shutil.rmtree(self.cache, ignore_errors=True)
            raise RuntimeError("the server did not start:\n" + "".join(self.log))

    def _read_log(self, ready: threading.Event) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            found = ADDRESS.search(line)
            if found and not self.port:
                self.port = int(found.group(1))
                ready.set()
        ready.set()  # the process ended

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for_log(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match[str]:
        """The first log line from line `since` on that matches `pattern`, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log[since:]:
                found = re.search(pattern, line)
                if found:
                    return found
            time.sleep(0.02)
        raise AssertionError(f"no log line matches {pattern!r} within {timeout} s:\n" + "".join(self.log[-20:]))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `sig`, wait for the exit; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            shutil.rmtree(self.cache, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ requests

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:  # fmt: skip
        """(status, headers, parsed JSON body) of one request on a fresh connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            connection.request(method, path, data, headers or {})
            response = connection.getresponse()
            payload = response.read()
            kind = response.getheader("Content-Type") or ""
            value = json.loads(payload) if kind.startswith("application/json") else payload
            return response.status, {k.lower(): v for k, v in response.getheaders()}, value
        finally:
            connection.close()

    def post(self, path: str, body: Any) -> Any:
        """POST JSON and return the answer's JSON, which must be a 200."""
        status, _, value = self.request("POST", path, body)
        assert status == 200, value
        return value

    def stream(self, path: str, body: Any) -> list[Any]:
        """POST a streaming request; every `data:` event parsed, up to (not including) [DONE]."""
        return list(events(self.open_stream(path, body)))

    def open_stream(self, path: str, body: Any) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        connection.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        return response

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)


def events(response: http.client.HTTPResponse) -> Iterator[Any]:
    """The JSON of each server-sent event `data: ...`, until `data: [DONE]`."""
    for line in response:
        text = line.decode("utf-8").rstrip("\r\n")
        if not text.startswith("data: "):
            assert text == "", text
            continue
        if text == "data: [DONE]":
            return
        yield json.loads(text[len("data: ") :])
    raise AssertionError("the stream ended without data: [DONE]")


def children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux: /proc/PID/task/*/children)."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(p) for p in f.read().split()]
    return found


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def resident_kb(pid: int) -> int:
    """The process's resident memory (VmRSS), in kB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")
