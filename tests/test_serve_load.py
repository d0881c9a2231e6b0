"""`microqwen serve` under load and misuse: the queue, clients that leave, signals, many clients at once.

A "slow" fixture model (4 layers of 256, tens of milliseconds a token) keeps a generation running
long enough to leave it, fill the queue behind it, or stop the server under it.
"""

from __future__ import annotations

import json
import os
import pathlib
import select
import signal
import socket
import threading
import time
from typing import Any, Iterator

import pytest

from .server_process import ServerProcess, children, open_descriptors, resident_kb
from .test_workers import MEMFD, assert_nothing_left
from .tiny_model import write_byte_tokenizer, write_tiny_chat_model, write_tiny_model

LONG = {"prompt": "Tell me a long story", "max_tokens": 1500, "temperature": 1.0, "seed": 1, "logprobs": 0,
        "stream": True}  # fmt: skip
"""A streaming request that would run for a minute: with logprobs, every token is an event."""


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("slow") / "model"
    write_tiny_model(directory, seed=3, vocab_size=260, eos_token_id=258, max_position_embeddings=2048, hidden_size=256,
                     intermediate_size=1024, num_hidden_layers=4)  # fmt: skip
    write_byte_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def slow_server(slow_model: pathlib.Path) -> Iterator[ServerProcess]:
    with ServerProcess(str(slow_model), "--workers", "0", "--queue", "1") as process:
        yield process


def send_long_stream(server: ServerProcess) -> socket.socket:
    """Send the long streaming request on a raw socket, without reading the answer."""
    connection = server.connect()
    body = json.dumps(LONG).encode()
    connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
    return connection


def start_long_stream(server: ServerProcess) -> tuple[socket.socket, int]:
    """The long streaming request, once it runs: (the socket, the events read so far, 2 or more)."""
    connection = send_long_stream(server)
    received = b""
    while received.count(b"data: ") < 2:
        received += connection.recv(65536)
    return connection, received.count(b"data: ")


def drain(connection: socket.socket) -> int:
    """Read what has arrived so far without waiting; the number of events in it."""
    count = 0
    while select.select([connection], [], [], 0.0)[0]:
        data = connection.recv(1 << 20)
        if not data:
            break
        count += data.count(b"data: ")
    return count


def test_a_client_that_leaves_mid_stream_stops_its_generation(slow_server: ServerProcess) -> None:
    since = len(slow_server.log)
    connection, received = start_long_stream(slow_server)
    time.sleep(0.3)
    received += drain(connection)  # everything the server has sent so far
    connection.close()
    left = slow_server.wait_for_log(r"the client left after (\d+) tokens", since=since)
    generated = int(left.group(1))
    assert generated <= received + 2, f"{generated} tokens generated, {received} events had reached the client"
    start = time.monotonic()
    answer = slow_server.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2, "temperature": 0})
    assert answer["usage"]["completion_tokens"] == 2 and time.monotonic() - start < 5  # the model is free


def test_a_full_queue_is_a_503_with_retry_after(slow_server: ServerProcess) -> None:
    since = len(slow_server.log)
    running, _ = start_long_stream(slow_server)  # runs
    waiting = send_long_stream(slow_server)  # waits: the queue holds one
    time.sleep(0.5)  # its connection's thread has read it and put it in the queue
    try:
        status, headers, body = slow_server.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 1})
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert body["error"]["type"] == "server_busy" and "1 requests are waiting" in body["error"]["message"]
    finally:
        running.close()
        waiting.close()
    slow_server.wait_for_log(r"the client left after \d+ tokens", since=since)
    answer = slow_server.post("/v1/completions", {"prompt": "Hi", "max_tokens": 1, "temperature": 0})
    assert answer["usage"]["completion_tokens"] == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_server_mid_generation_and_leaves_nothing(slow_model: pathlib.Path, sig: int) -> None:
    server = ServerProcess(str(slow_model), "--workers", "1")
    try:
        workers = children(server.pid)
        fds = [f"/proc/{server.pid}/fd/{fd}" for fd in os.listdir(f"/proc/{server.pid}/fd")]
        inodes = sorted({os.stat(fd).st_ino for fd in fds if MEMFD in os.readlink(fd)})
        assert len(workers) == 1 and len(inodes) == 2
        connection, _ = start_long_stream(server)
        start = time.monotonic()
        status = server.stop(sig, timeout=10)
        assert time.monotonic() - start < 5 and status == 0, "".join(server.log[-5:])
        assert any("stopped" in line for line in server.log[-3:])
        connection.close()
        assert_nothing_left(workers, inodes)
    finally:
        if server.process.poll() is None:
            server.process.kill()


def settled_descriptors(pid: int) -> int:
    """The server's open descriptors once its connection threads have closed their sockets (a count
    that stays the same for half a second)."""
    count, since = open_descriptors(pid), time.monotonic()
    while time.monotonic() - since < 0.5:
        time.sleep(0.05)
        now = open_descriptors(pid)
        if now != count:
            count, since = now, time.monotonic()
    return count


def test_many_clients_at_once(tmp_path: pathlib.Path) -> None:
    """8 clients x 25 short requests: every answer a 200, or a documented 503; memory and descriptors stable."""
    model = write_tiny_chat_model(tmp_path / "chat")
    with ServerProcess(str(model), "--workers", "0", "--queue", "4") as server:
        warm = [server.post("/v1/completions", {"prompt": "warm", "max_tokens": 2}) for _ in range(20)]
        assert len(warm) == 20
        fds, rss = settled_descriptors(server.pid), resident_kb(server.pid)
        statuses: list[int] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            for i in range(25):
                chat = (n + i) % 2 == 0
                path = "/v1/chat/completions" if chat else "/v1/completions"
                body: dict[str, Any] = {"max_tokens": 4, "temperature": 0.8, "seed": i, "stream": i % 3 == 0}
                body.update({"messages": [{"role": "user", "content": f"client {n} asks {i}"}]} if chat
                            else {"prompt": f"client {n}, request {i}:"})  # fmt: skip
                try:
                    status, headers, value = server.request("POST", path, body)
                    if status == 200 and body["stream"]:
                        assert b"data: [DONE]" in value
                    elif status == 503:
                        assert int(headers["retry-after"]) >= 1 and value["error"]["type"] == "server_busy"
                    else:
                        assert status == 200 and value["usage"]["completion_tokens"] <= 4, value
                except Exception as e:  # collected, and the test fails below
                    with lock:
                        errors.append(repr(e))
                    continue
                with lock:
                    statuses.append(status)

        start = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        seconds = time.monotonic() - start
        assert not errors, errors[:3]
        assert len(statuses) == 200 and set(statuses) <= {200, 503}
        after_fds, after_rss = settled_descriptors(server.pid), resident_kb(server.pid)
        print(f"\nload: 8 clients x 25 requests in {seconds:.1f} s ({200 / seconds:.0f} requests/s): "
              f"{statuses.count(200)} answered, {statuses.count(503)} 503 (queue full); "
              f"descriptors {fds} -> {after_fds}; resident memory {rss} kB -> {after_rss} kB")
        assert after_fds == fds
        assert after_rss - rss < 20_000, f"resident memory grew from {rss} kB to {after_rss} kB"
        assert server.post("/v1/completions", {"prompt": "still there?", "max_tokens": 1})["usage"]["completion_tokens"] == 1
    assert server.process.returncode == 0
