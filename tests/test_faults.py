"""Fault injection: killed workers, Ctrl-C at every stage, full disks and dropped connections.

Each fault must end cleanly: a one-line error (or "interrupted", exit 130), and nothing left
behind: no worker process, no process still holding that pool's shared memory (its two memfd
buffers, looked up by their inodes), no partial file outside the `.incomplete` blob a download
resumes from.

- a worker is SIGKILLed at a random moment while the model loads, prefills or decodes;
- `generate --workers 2` gets Ctrl-C (SIGINT to its process group, as a terminal sends it)
  while loading, while prefilling (seen on its progress line) and while decoding (seen on stdout);
- `chat` gets Ctrl-C in an answer: the answer stops, and the next message is answered;
- the disk fills up during a download (a real 1 MB tmpfs when this user may mount one);
- the connection drops during a download: reset mid-file, the server gone, the server silent.
"""

from __future__ import annotations

import errno
import os
import pathlib
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Iterator

import pytest

from microqwen import hub as hub_module
from microqwen import workers as workers_module
from microqwen.errors import DownloadError, WorkerError
from microqwen.hub import resolve_model
from microqwen.model import load

from .fuzzing import LONG
from .test_hub import REPO, FakeHub, Handler, HubServer, assert_snapshot_is_sound, etag_of, home, hub
from .test_workers import MEMFD, assert_nothing_left
from .tiny_model import write_byte_tokenizer, write_tiny_model

__all__ = ["home", "hub"]  # the Hub fixtures, shared with test_hub.py


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A small random chat model that takes a second or two to prefill and decode: time to interrupt it."""
    directory = write_tiny_model(tmp_path_factory.mktemp("medium") / "model", seed=2, hidden_size=128,
                                 intermediate_size=512, num_hidden_layers=4, vocab_size=260, eos_token_id=258,
                                 max_position_embeddings=2048)  # fmt: skip
    write_byte_tokenizer(directory)
    return directory


# --- SIGKILL a worker -----------------------------------------------------------------------------

PHASES = ("load", "prefill", "decode")


class Killer(threading.Thread):
    """Waits for the main thread to reach `phase`, sleeps `delay`, then SIGKILLs one worker of the pool."""

    def __init__(self, pools: list[Any], progress: dict[str, str], phase: str, delay: float, victim: int) -> None:
        super().__init__(daemon=True)
        self.pools, self.progress, self.phase, self.delay, self.victim = pools, progress, phase, delay, victim
        self.killed: tuple[int, str] | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 30
        while self.progress["phase"] != self.phase and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(self.delay)
        while time.monotonic() < deadline and self.progress["phase"] != "done":
            processes = self.pools[-1].workers if self.pools else []
            if len(processes) > self.victim:
                os.kill(processes[self.victim].pid, signal.SIGKILL)
                self.killed = (processes[self.victim].pid, self.progress["phase"])
                return
            time.sleep(0.001)


def run_with_a_killer(model_dir: pathlib.Path, phase: str, delay: float, victim: int,
                      monkeypatch: pytest.MonkeyPatch) -> tuple[Killer, str | None, list[Any], list[int]]:  # fmt: skip
    """Load, prefill and decode while a Killer strikes; return it, the WorkerError's message, the pools,
    and the inodes of the shared buffers made.

    The error's frames are cleared at once: CPython 3.12.1 was seen to crash (SIGSEGV) when the
    garbage collector later freed the cycle of those frames and the dead pool (see docs/hardening.md).
    """
    pools: list[Any] = []
    original = workers_module.WorkerPool.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        pools.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(workers_module.WorkerPool, "__init__", recording)
    inodes: list[int] = []
    shared_file = workers_module._shared_file

    def noted(size: int) -> int:
        fd = shared_file(size)
        inodes.append(os.fstat(fd).st_ino)
        return fd

    monkeypatch.setattr(workers_module, "_shared_file", noted)
    progress = {"phase": ""}
    killer = Killer(pools, progress, phase, delay, victim)
    killer.start()
    error: str | None = None
    try:
        progress["phase"] = "load"
        with load(str(model_dir), workers=2) as model:
            progress["phase"] = "prefill"
            model.prefill(list(range(1, 33)))
            progress["phase"] = "decode"
            for _ in range(40):
                model.forward(7, model.pos)
    except WorkerError as e:
        error = str(e)
        traceback.clear_frames(e.__traceback__)
    finally:
        progress["phase"] = "done"
        killer.join()
    return killer, error, pools, inodes


def check_killed_run(killer: Killer, error: str | None, pools: list[Any], inodes: list[int]) -> None:
    pool = pools[-1]
    if killer.killed is not None and killer.killed[1] != "done":
        assert error is not None, f"worker {killer.killed} killed during {killer.killed[1]}, and no WorkerError"
        assert re.fullmatch(r"worker \d \(pid \d+\) was killed by signal 9 while .*", error), error
    assert_nothing_left([w.pid for w in pool.workers], inodes)


@pytest.mark.parametrize("phase", PHASES)
def test_a_worker_killed_during_each_phase(medium: pathlib.Path, phase: str, monkeypatch: pytest.MonkeyPatch) -> None:
    killer, error, pools, inodes = run_with_a_killer(medium, phase, 0.02, 1, monkeypatch)
    assert killer.killed is not None and killer.killed[1] == phase
    check_killed_run(killer, error, pools, inodes)


@pytest.mark.skipif(not LONG, reason="long profile only: MICROQWEN_FUZZ=long")
def test_workers_killed_at_random_moments(medium: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(8)
    for run in range(40):
        phase, delay, victim = rng.choice(PHASES), rng.uniform(0.0, 0.3), rng.randrange(2)
        with monkeypatch.context() as patch:
            killer, error, pools, inodes = run_with_a_killer(medium, phase, delay, victim, patch)
        check_killed_run(killer, error, pools, inodes)


# --- Ctrl-C: the command line ----------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def workers_of(pid: int) -> list[int]:
    def is_worker(child: int) -> bool:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                return b"microqwen.workers" in f.read()
        except OSError:
            return False

    return [child for child in children(pid) if is_worker(child)]


def shared_memory(pid: int) -> set[int]:
    """The inodes of the pool buffers a process has mapped."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return {int(line.split()[4]) for line in maps if MEMFD in line}
    except OSError:
        return set()


class Cli:
    """`python -m microqwen ...` in its own session, stderr on a pseudo-terminal (so progress is shown)."""

    def __init__(self, args: list[str]) -> None:
        self.master, slave = os.openpty()
        self.process = subprocess.Popen([sys.executable, "-m", "microqwen", *args], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=slave, start_new_session=True)  # fmt: skip
        os.close(slave)
        self.stdout = b""
        self.stderr = b""
        self.pids: set[int] = set()
        self.shm: set[int] = set()

    def poll(self, timeout: float = 0.01) -> None:
        """Read what is there, and note the workers and shared memory seen so far."""
        assert self.process.stdout is not None
        streams: list[Any] = [self.master, self.process.stdout]
        readable, _, _ = select.select(streams, [], [], timeout)
        for stream in readable:
            if stream == self.master:
                try:
                    self.stderr += os.read(self.master, 65536)
                except OSError:  # the pty's other end closed
                    pass
            else:
                self.stdout += os.read(self.process.stdout.fileno(), 65536)
        self.pids.update(workers_of(self.process.pid))
        self.shm.update(shared_memory(self.process.pid))

    def wait_for(self, condition: Any, what: str, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while not condition():
            assert self.process.poll() is None, f"exited ({self.process.returncode}) before {what}: {self.stderr!r}"
            assert time.monotonic() < deadline, f"no {what} within {within} s: {self.stderr!r}"
            self.poll()

    def interrupt(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group

    def finish(self, stdin: bytes = b"", within: float = 60.0) -> int:
        assert self.process.stdin is not None
        if stdin:
            self.process.stdin.write(stdin)
        self.process.stdin.close()
        deadline = time.monotonic() + within
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"still running {within} s after: {self.stderr!r}"
            self.poll()
        for _ in range(5):
            self.poll()
        os.close(self.master)
        return self.process.returncode

    def text(self) -> str:
        return self.stderr.decode("utf-8", "replace").replace("\r\n", "\n")


def check_interrupted(cli: Cli) -> None:
    status = cli.finish()
    stderr = cli.text()
    assert status == 130, stderr
    assert stderr.rstrip("\n").split("\n")[-1].split("\r")[-1].endswith("microqwen: interrupted"), stderr
    assert "Traceback" not in stderr and "leaked" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert 1 <= len(cli.pids) <= 2 and cli.shm, (cli.pids, cli.shm)
    assert_nothing_left(sorted(cli.pids), sorted(cli.shm))


def generate_args(model: pathlib.Path) -> list[str]:
    return ["generate", "-m", str(model), "--workers", "2", "-p", "The quick brown fox " * 4, "-n", "400", "--temp", "0"]


@pytest.mark.parametrize("workers_seen", [1, 2])
def test_ctrl_c_while_loading(medium: pathlib.Path, workers_seen: int) -> None:
    """As soon as the first worker exists (it is still starting Python), or when both do."""
    cli = Cli(generate_args(medium))
    cli.wait_for(lambda: len(cli.pids) >= workers_seen, "worker processes")  # the pool is starting
    cli.interrupt()
    check_interrupted(cli)
    assert b"prompt:" not in cli.stderr  # it never got to the prompt


def test_ctrl_c_while_prefilling(medium: pathlib.Path) -> None:
    cli = Cli(generate_args(medium))
    cli.wait_for(lambda: re.search(rb"prompt: (16|32)/80 tokens", cli.stderr), "prompt progress")
    cli.interrupt()
    check_interrupted(cli)
    assert cli.stdout == b""


def test_ctrl_c_while_decoding(medium: pathlib.Path) -> None:
    cli = Cli(generate_args(medium))
    cli.wait_for(lambda: len(cli.stdout) >= 3, "generated text")
    cli.interrupt()
    check_interrupted(cli)


@pytest.mark.skipif(not LONG, reason="long profile only: MICROQWEN_FUZZ=long")
def test_ctrl_c_at_random_moments(medium: pathlib.Path) -> None:
    rng = random.Random(3)
    for _ in range(15):
        cli = Cli(generate_args(medium))
        cli.wait_for(lambda: len(cli.pids) >= 1, "worker processes")
        stop = time.monotonic() + rng.uniform(0.0, 3.0)
        cli.wait_for(lambda: time.monotonic() > stop, "the moment")
        cli.interrupt()
        check_interrupted(cli)


def test_ctrl_c_in_chat_stops_the_answer_and_the_session_goes_on(medium: pathlib.Path) -> None:
    cli = Cli(["chat", "-m", str(medium), "--workers", "2", "-n", "40", "--temp", "0"])
    assert cli.process.stdin is not None
    cli.process.stdin.write(b"Tell me a long story\n")
    cli.process.stdin.flush()
    cli.wait_for(lambda: len(cli.stdout) >= 3, "the first answer")
    cli.interrupt()
    cli.wait_for(lambda: b" [stopped]\n" in cli.stdout, "the answer to stop")
    status = cli.finish(b"And another\n")
    stderr = cli.text()
    assert status == 0, stderr
    first, second = cli.stdout.split(b" [stopped]\n")
    assert first and second.endswith(b"\n"), cli.stdout  # the second message was answered
    assert "Traceback" not in stderr and "prompt eval" in stderr, stderr
    assert_nothing_left(sorted(cli.pids), sorted(cli.shm))


# --- full disk during a download -------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A 1 MB tmpfs (skipped where this user may not mount one)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=64", "tmpfs", str(mount)],
                            capture_output=True)  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def big_weights(hub: FakeHub, tmp_path: pathlib.Path) -> bytes:
    """The fake repo's weights made 1.5 MB, more than the small disk holds."""
    directory = write_tiny_model(tmp_path / "big", seed=None, vocab_size=40_000, hidden_size=16)
    hub.repos[REPO]["model.safetensors"] = (directory / "model.safetensors").read_bytes()
    hub.repos[REPO]["config.json"] = (directory / "config.json").read_bytes()
    assert len(hub.repos[REPO]["model.safetensors"]) > 1_200_000
    return hub.repos[REPO]["model.safetensors"]


def test_a_full_disk_is_refused_before_the_download(hub: FakeHub, big_weights: bytes, small_disk: pathlib.Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("HF_HOME", str(small_disk))
    with pytest.raises(DownloadError, match=f"model.safetensors needs {len(big_weights):,} bytes .* but only [0-9,]+ are free"):
        resolve_model(REPO, progress=False)
    storage = hub.storage(small_disk)
    assert not list((storage / "blobs").glob("*.incomplete")) and hub.paths("GET", "/cdn/") == []
    assert_snapshot_is_sound(storage, hub.repos[REPO])


def test_the_disk_fills_up_mid_file_and_the_download_resumes(hub: FakeHub, big_weights: bytes,
                                                             small_disk: pathlib.Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The free-space check is fooled (another program filled the disk meanwhile); the write fails for real."""
    monkeypatch.setenv("HF_HOME", str(small_disk))
    usage = type("usage", (), {"free": 10**12})
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage)
    with pytest.raises(DownloadError, match=r"disk full writing .*model.safetensors needs [0-9,]+ bytes, [0-9,]+ .* still to go; "
                                            r"free that much and run again to resume"):  # fmt: skip
        resolve_model(REPO, progress=False)
    storage = hub.storage(small_disk)
    incomplete = storage / "blobs" / f"{etag_of('model.safetensors', big_weights)}.incomplete"
    have = incomplete.stat().st_size
    assert 0 < have < len(big_weights)
    assert_snapshot_is_sound(storage, hub.repos[REPO])  # no link to a partial file
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)  # space was freed
    resolve_model(REPO, progress=False)
    assert hub.requests[-1].headers["Range"] == f"bytes={have}-"
    assert_snapshot_is_sound(storage, hub.repos[REPO])


def test_no_inode_left_for_the_cache_folders(hub: FakeHub, small_disk: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(60):  # use up the tmpfs's 64 inodes
        try:
            (small_disk / f"filler{n}").touch()
        except OSError as e:
            assert e.errno == errno.ENOSPC
            break
    monkeypatch.setenv("HF_HOME", str(small_disk))
    with pytest.raises(DownloadError, match="cannot write the cache: .*: No space left on device"):
        resolve_model(REPO, progress=False)


# --- the network drops during a download -----------------------------------------------------------


class FaultyHandler(Handler):
    """The fake Hub, and on the weights: reset the connection, or fall silent, after half the bytes."""

    def send(self, data: bytes, name: str, body: bool, headers: dict[str, str] | None = None) -> None:
        fault = self.server.faults.get(name) if body else None  # type: ignore[attr-defined]
        if fault is None:
            return super().send(data, name, body, headers)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if fault == "reset":  # RST, not FIN: SO_LINGER with a zero timeout
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif fault == "silent":
            self.server.release.wait(10)  # type: ignore[attr-defined]
        self.close_connection = True


@pytest.fixture
def faulty_hub(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeHub, Any]]:
    """A second server on the same fake Hub state, with connection faults; HF_ENDPOINT points at it."""
    server = HubServer(hub)
    server.RequestHandlerClass = FaultyHandler
    server.faults = {}  # type: ignore[attr-defined]
    server.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    port, hub.port = hub.port, server.server_address[1]
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    try:
        yield hub, server
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
        thread.join()
        hub.port = port


def test_a_reset_connection_is_resumed(faulty_hub: tuple[FakeHub, Any], home: pathlib.Path) -> None:
    hub, server = faulty_hub
    server.faults["model.safetensors"] = "reset"
    with pytest.raises(DownloadError, match="broke off 5 times .*run again to resume"):
        resolve_model(REPO, progress=False)
    del server.faults["model.safetensors"]
    resolve_model(REPO, progress=False)
    assert_snapshot_is_sound(hub.storage(home), hub.repos[REPO])


def test_a_server_that_goes_silent_mid_file_times_out(faulty_hub: tuple[FakeHub, Any], home: pathlib.Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    hub, server = faulty_hub
    monkeypatch.setattr(hub_module, "TIMEOUT", 0.2)
    monkeypatch.setattr(hub_module, "RESUME_ATTEMPTS", 2)
    server.faults["model.safetensors"] = "silent"
    start = time.monotonic()
    with pytest.raises(DownloadError, match="broke off 2 times .*timed out"):
        resolve_model(REPO, progress=False)
    assert time.monotonic() - start < 5
    server.release.set()
    storage = hub.storage(home)
    assert_snapshot_is_sound(storage, hub.repos[REPO])
    assert len(list((storage / "blobs").glob("*.incomplete"))) == 1


def test_the_server_gone_mid_download_then_back(hub: FakeHub, home: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server answers half the weights, then vanishes (connection refused on resume); later it is back."""
    hub.drop["model.safetensors"] = 1
    real_get = hub_module._Hub.get
    calls = []

    def get(self: Any, url: str, headers: Any, what: str = "") -> Any:
        calls.append(headers.get("Range"))
        if headers.get("Range"):  # the resume after the drop: nobody listens there any more
            return real_get(self, url.replace(f":{hub.port}/", ":9/"), headers, what)
        return real_get(self, url, headers, what)

    monkeypatch.setattr(hub_module._Hub, "get", get)
    with pytest.raises(DownloadError, match="cannot connect to localhost:9: connection refused"):
        resolve_model(REPO, progress=False)
    storage = hub.storage(home)
    assert_snapshot_is_sound(storage, hub.repos[REPO])
    monkeypatch.setattr(hub_module._Hub, "get", real_get)
    resolve_model(REPO, progress=False)
    assert hub.requests[-1].headers.get("Range", "").startswith("bytes=")
    assert_snapshot_is_sound(storage, hub.repos[REPO])
    assert not list((storage / "blobs").glob("*.incomplete"))
    assert calls.count(None) == len(calls) - 1  # one resume, after the drop
