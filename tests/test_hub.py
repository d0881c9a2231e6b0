"""Getting the model: a real HTTP server on 127.0.0.1 plays the Hugging Face Hub.

The server speaks the part of the Hub's protocol that `huggingface_hub` uses: the revision API
(`/api/models/{repo}/revision/{rev}`: the commit and the file list), HEAD and GET on
`/{repo}/resolve/{rev}/{file}` (a small file answers 200 with its git object id as ETag; an LFS
file answers 302 to a storage host, with its sha256 in `X-Linked-Etag` and its size in
`X-Linked-Size`), and GET with `Range` on that storage host. Switches make it break off mid-file,
send corrupted bytes, refuse with an HTTP status, or ignore `Range`.
"""

from __future__ import annotations

import builtins
import collections
import errno
import hashlib
import http.server
import io
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from microqwen import hub as hub_module
from microqwen.cli import main
from microqwen.errors import DownloadError, UsageError
from microqwen.hub import parse_model_id, repo_folder, resolve_model

from .tiny_model import write_tiny_model

REPO = "test-org/tiny-qwen2"
COMMIT = hashlib.sha1(b"the one commit of every test repo").hexdigest()
TEXT = ("config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt")


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's content: the ETag the Hub sends for a small (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(name: str) -> bool:
    return name.endswith(".safetensors")


def etag_of(name: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if is_lfs(name) else git_blob_id(data)


def model_files(directory: pathlib.Path) -> dict[str, bytes]:
    """A repo's files: the tiny model's config and weights, stand-in tokenizer files, a README."""
    write_tiny_model(directory)
    files = {name: (directory / name).read_bytes() for name in ("config.json", "model.safetensors")}
    files["generation_config.json"] = json.dumps({"do_sample": True, "temperature": 0.7}).encode()
    files["tokenizer_config.json"] = json.dumps({"chat_template": "{{ messages }}"}).encode()
    files["tokenizer.json"] = json.dumps({"model": {"type": "BPE"}}).encode()
    files["vocab.json"] = json.dumps({"a": 0, "b": 1}).encode()
    files["merges.txt"] = b"a b\n"
    files["README.md"] = b"# tiny\n"
    return files


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeHub:
    """The Hub's state and switches; `requests` records every request the server saw."""

    repos: dict[str, dict[str, bytes]]
    revisions: dict[str, str] = field(default_factory=lambda: {"main": COMMIT, "v1.0": COMMIT, COMMIT: COMMIT})
    port: int = 0
    token: str | None = None
    drop: collections.Counter[str] = field(default_factory=collections.Counter)
    corrupt: collections.Counter[str] = field(default_factory=collections.Counter)
    status: dict[str, int] = field(default_factory=dict)
    ignore_range: bool = False
    requests: list[Request] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage(self, home: pathlib.Path, repo: str = REPO) -> pathlib.Path:
        return home / "hub" / repo_folder(repo)

    def paths(self, method: str, prefix: str = "") -> list[str]:
        return [r.path for r in self.requests if r.method == method and r.path.startswith(prefix)]


class Handler(http.server.BaseHTTPRequestHandler):
    server: HubServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def do_GET(self) -> None:
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        hub = self.server.hub
        hub.requests.append(Request(self.command, self.path, dict(self.headers.items())))
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", self.path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/([^/]+)", self.path)
        cdn = re.fullmatch(r"/cdn/([0-9a-f]{64})", self.path)
        if api:
            self.api(api.group(1), urllib.parse.unquote(api.group(2)))
        elif resolve:
            self.resolve(resolve.group(1), urllib.parse.unquote(resolve.group(2)), urllib.parse.unquote(resolve.group(3)), body)
        elif cdn:
            name, data = next((n, d) for files in hub.repos.values() for n, d in files.items() if etag_of(n, d) == cdn.group(1))
            self.send(data, name, body)
        else:
            self.refuse(404, "")

    def refused(self, repo: str, revision: str, name: str = "") -> bool:
        hub = self.server.hub
        if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
            return self.refuse(401 if self.headers.get("Authorization") is None else 403, "GatedRepo")
        if repo in hub.status or name in hub.status:
            return self.refuse(hub.status.get(repo) or hub.status[name], "")
        if repo not in hub.repos:
            return self.refuse(404, "RepoNotFound")
        if revision not in hub.revisions:
            return self.refuse(404, "RevisionNotFound")
        if name and name not in hub.repos[repo]:
            return self.refuse(404, "EntryNotFound")
        return False

    def refuse(self, status: int, error_code: str) -> bool:
        self.send_response(status)
        self.send_header("X-Error-Code", error_code)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def api(self, repo: str, revision: str) -> None:
        if self.refused(repo, revision):
            return
        siblings = [{"rfilename": name} for name in self.server.hub.repos[repo]]
        data = json.dumps({"id": repo, "sha": self.server.hub.revisions[revision], "siblings": siblings}).encode()
        self.send(data, "", True)

    def resolve(self, repo: str, revision: str, name: str, body: bool) -> None:
        if self.refused(repo, revision, name):
            return
        data = self.server.hub.repos[repo][name]
        if not is_lfs(name):
            self.send(data, name, body, {"ETag": f'"{git_blob_id(data)}"', "X-Repo-Commit": COMMIT})
            return
        sha256 = hashlib.sha256(data).hexdigest()
        self.send_response(302)
        self.send_header("Location", f"http://localhost:{self.server.hub.port}/cdn/{sha256}")  # another host
        self.send_header("X-Linked-Etag", f'"{sha256}"')  # the sha256 of the bytes behind the redirect
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("ETag", f'"{git_blob_id(b"the LFS pointer file")}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send(self, data: bytes, name: str, body: bool, headers: dict[str, str] | None = None) -> None:
        hub = self.server.hub
        if hub.corrupt[name] > 0:
            hub.corrupt[name] -= 1
            data = data[:-1] + bytes([data[-1] ^ 1])
        byte_range = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(byte_range.group(1)) if byte_range and not hub.ignore_range else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        for header, value in (headers or {}).items():
            self.send_header(header, value)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not body:
            return
        if hub.drop[name] > 0:
            hub.drop[name] -= 1
            self.wfile.write(data[start : (start + len(data)) // 2])  # then close the connection mid-file
            return
        self.wfile.write(data[start:])


class HubServer(http.server.ThreadingHTTPServer):
    daemon_threads = False  # so server_close() waits for every handler thread

    def __init__(self, hub: FakeHub) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hub = hub


@pytest.fixture
def home(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """An empty HF_HOME, and no other Hub settings from the environment."""
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf"


@pytest.fixture
def hub(tmp_path: pathlib.Path, home: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The fake Hub serving REPO, with HF_ENDPOINT pointing at it; stopped and joined afterwards."""
    threads_before = threading.active_count()
    fake = FakeHub({REPO: model_files(tmp_path / "source")})
    server = HubServer(fake)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        assert threading.active_count() == threads_before


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_snapshot_is_sound(storage: pathlib.Path, files: dict[str, bytes]) -> None:
    """Every file in a snapshot is a complete, correct blob behind a relative link: no partial file."""
    for snapshot in (storage / "snapshots").iterdir():
        for link in snapshot.iterdir():
            assert os.readlink(link) == f"../../blobs/{etag_of(link.name, files[link.name])}"
            assert link.read_bytes() == files[link.name]


# --- the cache layout, and its reuse ----------------------------------------------------------------


def test_download_lays_out_the_cache_as_huggingface_hub_does(hub: FakeHub, home: pathlib.Path) -> None:
    files = hub.repos[REPO]
    storage = hub.storage(home)
    assert resolve_model(REPO, progress=False) == str(storage / "snapshots" / COMMIT)
    assert (storage / "refs" / "main").read_text() == COMMIT
    assert sorted(p.name for p in (storage / "snapshots" / COMMIT).iterdir()) == sorted(TEXT + ("model.safetensors",))
    assert_snapshot_is_sound(storage, files)
    blobs = sorted(etag_of(name, files[name]) for name in TEXT + ("model.safetensors",))
    assert sorted(p.name for p in (storage / "blobs").iterdir()) == blobs


def test_the_weights_come_from_the_storage_host_without_the_token(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.token = "hf_secret"
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    resolve_model(REPO, progress=False)
    to_hub = [r for r in hub.requests if not r.path.startswith("/cdn/")]
    to_storage = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert len(to_storage) == 1 and to_storage[0].headers["Host"].startswith("localhost:")
    assert "Authorization" not in to_storage[0].headers
    assert len(to_hub) == 1 + 7 + 6  # the file list, a HEAD for each of the 7 files, a GET for the 6 small ones
    assert all(r.headers["Authorization"] == "Bearer hf_secret" for r in to_hub)


def test_a_complete_cache_is_used_without_a_request(hub: FakeHub) -> None:
    snapshot = resolve_model(REPO, progress=False)
    hub.requests.clear()
    assert resolve_model(REPO, progress=False) == snapshot
    assert resolve_model(f"{REPO}@{COMMIT}", progress=False) == snapshot
    assert hub.requests == []


@pytest.mark.parametrize("variable", ["HF_HOME", "HF_HUB_CACHE"])
def test_a_cache_written_by_another_tool_is_used_with_no_network(
    variable: str, tmp_path: pathlib.Path, home: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "elsewhere"
    monkeypatch.setenv(variable, str(cache))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    storage = (cache / "hub" if variable == "HF_HOME" else cache) / repo_folder(REPO)
    files = model_files(tmp_path / "source")
    (storage / "blobs").mkdir(parents=True)
    (storage / "snapshots" / COMMIT).mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    for name in TEXT + ("model.safetensors",):
        (storage / "blobs" / etag_of(name, files[name])).write_bytes(files[name])
        os.symlink(f"../../blobs/{etag_of(name, files[name])}", storage / "snapshots" / COMMIT / name)
    assert resolve_model(REPO) == str(storage / "snapshots" / COMMIT)


def test_only_the_missing_files_are_fetched(hub: FakeHub, home: pathlib.Path) -> None:
    snapshot = pathlib.Path(resolve_model(REPO, progress=False))
    (snapshot / "model.safetensors").unlink()
    (snapshot / "tokenizer.json").resolve().unlink()  # a dangling link counts as missing
    hub.requests.clear()
    resolve_model(REPO, progress=False)
    assert [(r.method, r.path.rsplit("/", 1)[1]) for r in hub.requests] == [
        ("GET", "main"),
        ("HEAD", "tokenizer.json"),
        ("GET", "tokenizer.json"),
        ("HEAD", "model.safetensors"),  # the blob is still there: linked again, not downloaded
    ]
    assert_snapshot_is_sound(hub.storage(home), hub.repos[REPO])


def test_optional_files_may_be_absent_from_the_repo(hub: FakeHub, home: pathlib.Path) -> None:
    for name in ("generation_config.json", "vocab.json", "merges.txt"):
        del hub.repos[REPO][name]
    snapshot = pathlib.Path(resolve_model(REPO, progress=False))
    fetched = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in snapshot.iterdir()) == fetched
    assert (hub.storage(home) / ".no_exist" / COMMIT / "generation_config.json").exists()
    hub.requests.clear()
    assert resolve_model(REPO, progress=False) == str(snapshot)
    assert hub.requests == []


def test_sharded_weights_are_fetched_by_their_index(hub: FakeHub, home: pathlib.Path) -> None:
    files = hub.repos[REPO]
    del files["model.safetensors"]
    files["model-00001-of-00002.safetensors"] = b"first shard"
    files["model-00002-of-00002.safetensors"] = b"second shard"
    weight_map = {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.norm.weight": "model-00002-of-00002.safetensors",
    }
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    snapshot = pathlib.Path(resolve_model(REPO, progress=False))
    assert (snapshot / "model-00002-of-00002.safetensors").read_bytes() == b"second shard"
    assert_snapshot_is_sound(hub.storage(home), files)
    hub.requests.clear()
    resolve_model(REPO, progress=False)
    assert hub.requests == []


def test_an_index_naming_a_path_is_refused(hub: FakeHub, home: pathlib.Path) -> None:
    files = hub.repos[REPO]
    del files["model.safetensors"]
    files["model.safetensors.index.json"] = json.dumps({"weight_map": {"model.norm.weight": "../../evil.safetensors"}}).encode()
    with pytest.raises(DownloadError, match=r"'../../evil.safetensors' is not a plain \*.safetensors file name"):
        resolve_model(REPO, progress=False)
    assert not (hub.storage(home) / "evil.safetensors").exists()


# --- directories, ids, pickle -----------------------------------------------------------------------


def test_a_directory_is_returned_as_it_is(tmp_path: pathlib.Path, home: pathlib.Path) -> None:
    model = write_tiny_model(tmp_path / "my-model")
    assert resolve_model(str(model)) == str(model)


def test_a_repo_with_only_pickle_weights_is_refused(hub: FakeHub, home: pathlib.Path) -> None:
    files = hub.repos[REPO]
    files["pytorch_model.bin"] = b"\x80\x02}q\x00."  # a pickle: never downloaded, never loaded
    del files["model.safetensors"]
    with pytest.raises(DownloadError, match=r"only in pickle files \(pytorch_model.bin\).* never unpickles"):
        resolve_model(REPO, progress=False)
    assert hub.paths("HEAD") == [] and not (hub.storage(home) / "snapshots").exists()


def test_a_directory_with_only_pickle_weights_is_refused(tmp_path: pathlib.Path) -> None:
    model = write_tiny_model(tmp_path / "old")
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    with pytest.raises(UsageError, match=r"old has its weights only in pickle files \(pytorch_model.bin\)"):
        resolve_model(str(model))


def test_model_ids() -> None:
    assert parse_model_id("Qwen/Qwen2.5-0.5B") == ("Qwen/Qwen2.5-0.5B", "main")
    assert parse_model_id("Qwen/Qwen2.5-0.5B@refs/pr/1") == ("Qwen/Qwen2.5-0.5B", "refs/pr/1")
    assert repo_folder("Qwen/Qwen2.5-0.5B") == "models--Qwen--Qwen2.5-0.5B"


@pytest.mark.parametrize("spec", ["./no/such/dir", "just-a-name", "org/name@", "org/../name", "org--x/name", "org/name@../../x"])
def test_neither_a_directory_nor_a_hub_id(spec: str, home: pathlib.Path) -> None:
    with pytest.raises(UsageError, match=re.escape(repr(spec))):
        resolve_model(spec)


def test_a_tag_is_recorded_in_refs(hub: FakeHub, home: pathlib.Path) -> None:
    assert resolve_model(f"{REPO}@v1.0", progress=False).endswith(COMMIT)
    assert (hub.storage(home) / "refs" / "v1.0").read_text() == COMMIT


# --- offline ---------------------------------------------------------------------------------------


def test_offline_with_an_empty_cache_names_the_setting(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match=f"offline \\(HF_HUB_OFFLINE\\), and {REPO} revision main is not in the cache"):
        resolve_model(REPO)
    assert hub.requests == []


def test_offline_uses_the_cache_and_names_what_is_missing(hub: FakeHub) -> None:
    snapshot = pathlib.Path(resolve_model(REPO, progress=False))
    (snapshot / "generation_config.json").unlink()  # optional: fine offline
    hub.requests.clear()
    assert resolve_model(REPO, offline=True) == str(snapshot)
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(DownloadError, match="lacks model.safetensors"):
        resolve_model(REPO, offline=True)
    assert hub.requests == []


# --- broken connections, bad bytes, full disks ------------------------------------------------------


def test_a_dropped_connection_is_resumed_with_a_range_request(hub: FakeHub, home: pathlib.Path) -> None:
    hub.drop["model.safetensors"] = 1
    resolve_model(REPO, progress=False)
    size = len(hub.repos[REPO]["model.safetensors"])
    assert [r.headers.get("Range") for r in hub.requests if r.path.startswith("/cdn/")] == [None, f"bytes={size // 2}-"]
    assert_snapshot_is_sound(hub.storage(home), hub.repos[REPO])


def test_a_server_that_ignores_range_sends_the_file_again(hub: FakeHub, home: pathlib.Path) -> None:
    hub.ignore_range = True
    hub.drop["tokenizer.json"] = 1
    resolve_model(REPO, progress=False)
    assert_snapshot_is_sound(hub.storage(home), hub.repos[REPO])


def test_a_connection_that_keeps_breaking_leaves_a_resumable_file(hub: FakeHub, home: pathlib.Path) -> None:
    hub.drop["model.safetensors"] = 100
    with pytest.raises(DownloadError, match="broke off 5 times .* run again to resume"):
        resolve_model(REPO, progress=False)
    storage = hub.storage(home)
    data = hub.repos[REPO]["model.safetensors"]
    incomplete = storage / "blobs" / f"{etag_of('model.safetensors', data)}.incomplete"
    assert 0 < incomplete.stat().st_size < len(data)
    assert not (storage / "snapshots" / COMMIT / "model.safetensors").exists()
    have = incomplete.stat().st_size
    hub.drop.clear()
    resolve_model(REPO, progress=False)
    assert hub.requests[-1].headers["Range"] == f"bytes={have}-"
    assert_snapshot_is_sound(storage, hub.repos[REPO])


def test_a_corrupted_download_is_deleted_and_a_retry_succeeds(hub: FakeHub, home: pathlib.Path) -> None:
    data = hub.repos[REPO]["model.safetensors"]
    sha256 = hashlib.sha256(data).hexdigest()
    hub.corrupt["model.safetensors"] = 1
    with pytest.raises(DownloadError, match=f"model.safetensors: the download has sha256 [0-9a-f]{{64}}, the Hub says {sha256}"):
        resolve_model(REPO, progress=False)
    storage = hub.storage(home)
    assert sorted(p.name for p in (storage / "blobs").iterdir()) == sorted(etag_of(n, hub.repos[REPO][n]) for n in TEXT)
    assert not (storage / "snapshots" / COMMIT / "model.safetensors").exists()
    resolve_model(REPO, progress=False)
    assert_snapshot_is_sound(storage, hub.repos[REPO])


class StopWriting:
    """Stands in for `open` in microqwen.hub: .incomplete files take `limit` bytes, then raise `error`."""

    def __init__(self, limit: int, error: BaseException) -> None:
        self.limit, self.error = limit, error

    def __call__(self, path: str, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not str(path).endswith(".incomplete") or "r" in mode:
            return builtins.open(path, mode, *args, **kwargs)
        return LimitedWriter(builtins.open(path, mode, buffering=0), self)


class LimitedWriter(io.BufferedWriter):
    def __init__(self, raw: Any, stop: StopWriting) -> None:
        super().__init__(raw)
        self.stop = stop

    def write(self, data: Any) -> int:
        room = self.stop.limit - self.tell()
        if len(data) > room:
            super().write(bytes(data[:room]))
            self.flush()
            raise self.stop.error
        return super().write(data)


def test_ctrl_c_leaves_only_the_incomplete_blob_and_the_next_run_resumes(
    hub: FakeHub, home: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "open", StopWriting(1000, KeyboardInterrupt()), raising=False)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(REPO, progress=False)
    storage = hub.storage(home)
    data = hub.repos[REPO]["model.safetensors"]
    blob = storage / "blobs" / etag_of("model.safetensors", data)
    assert pathlib.Path(f"{blob}.incomplete").stat().st_size == 1000
    assert not blob.exists() and not (storage / "snapshots" / COMMIT / "model.safetensors").exists()
    monkeypatch.delattr(hub_module, "open")
    resolve_model(REPO, progress=False)
    assert hub.requests[-1].headers["Range"] == "bytes=1000-"
    assert_snapshot_is_sound(storage, hub.repos[REPO])


def test_a_full_disk_says_how_much_space_is_needed(hub: FakeHub, home: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = len(hub.repos[REPO]["model.safetensors"])
    monkeypatch.setattr(hub_module, "open", StopWriting(1000, OSError(errno.ENOSPC, "No space left on device")), raising=False)
    message = f"disk full writing .*: model.safetensors needs {size:,} bytes, {size - 1000:,} .* still to go"
    with pytest.raises(DownloadError, match=message):
        resolve_model(REPO, progress=False)
    assert not (hub.storage(home) / "snapshots" / COMMIT / "model.safetensors").exists()


def test_too_little_free_space_is_refused_before_the_download(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    size = len(hub.repos[REPO]["model.safetensors"])
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(10**9, 10**9 - 2000, 2000))
    with pytest.raises(DownloadError, match=f"model.safetensors needs {size:,} bytes .* but only 2,000 are free"):
        resolve_model(REPO, progress=False)
    assert hub.paths("GET", "/cdn/") == []


# --- HTTP refusals and network failures ------------------------------------------------------------


def test_an_unknown_repo_is_a_404(hub: FakeHub) -> None:
    url = r"http://127.0.0.1:\d+/api/models/test-org/nope/revision/main"
    with pytest.raises(DownloadError, match=rf"model test-org/nope revision main: not found \(HTTP 404 from {url}\)"):
        resolve_model("test-org/nope")


def test_a_missing_file_is_a_404_and_leaves_no_partial_file(hub: FakeHub, home: pathlib.Path) -> None:
    hub.status["tokenizer.json"] = 404
    with pytest.raises(DownloadError, match=f"tokenizer.json of {REPO}: not found \\(HTTP 404"):
        resolve_model(REPO, progress=False)
    assert_snapshot_is_sound(hub.storage(home), hub.repos[REPO])


def test_a_gated_repo_asks_for_hf_token(hub: FakeHub) -> None:
    hub.token = "hf_secret"
    with pytest.raises(DownloadError, match="access denied \\(HTTP 401 .*set HF_TOKEN to an access token"):
        resolve_model(REPO)


def test_a_refused_token_is_named(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.token = "hf_secret"
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(DownloadError, match="access denied \\(HTTP 403 .*HF_TOKEN was refused"):
        resolve_model(REPO)


def test_a_server_error_is_named(hub: FakeHub) -> None:
    hub.status[REPO] = 503
    with pytest.raises(DownloadError, match="HTTP 503 Service Unavailable from"):
        resolve_model(REPO)


def test_no_server_at_the_endpoint(home: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError, match=f"cannot connect to 127.0.0.1:{port}: connection refused"):
        resolve_model(REPO)


def test_no_dns(home: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    with pytest.raises(DownloadError, match=r"cannot find huggingface.co: DNS lookup failed \(Name or service not known\)"):
        resolve_model(REPO)


def test_a_server_that_never_answers_times_out(home: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "TIMEOUT", 0.2)
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        with pytest.raises(DownloadError, match="no answer from 127.0.0.1:\\d+ within 0.2 s"):
            resolve_model(REPO)


# --- progress and the command line ------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_a_line_per_file_otherwise(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    snapshot = resolve_model(REPO)
    size = len(hub.repos[REPO]["model.safetensors"])
    lines = terminal.getvalue().split("\n")
    assert lines[0] == f"{REPO} revision main (commit {COMMIT[:12]}) from {hub.endpoint} into {snapshot}"
    bar = r"\r  model.safetensors +100% \[#{24}\] 0.0/0.0 MB [0-9.]+ MB/s"
    summary = rf"\r  model.safetensors +{size:,} bytes in [0-9.]+ s *"
    assert re.fullmatch(bar + summary, lines[-2])
    assert len(lines) == 1 + 7 + 1


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microqwen", *args], capture_output=True, text=True, timeout=60)


def test_the_download_command_prints_the_directory(hub: FakeHub, home: pathlib.Path) -> None:
    result = run("download", REPO, "--revision", "v1.0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{hub.storage(home) / 'snapshots' / COMMIT}\n"
    assert [line.split()[0] for line in result.stderr.splitlines()[1:]] == list(TEXT) + ["model.safetensors"]


def test_the_download_command_fails_on_one_line(hub: FakeHub) -> None:
    result = run("download", "test-org/nope")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("microqwen: error: model test-org/nope revision main: not found")


def test_the_download_command_fetches_the_instruct_model_by_default(
    hub: FakeHub, home: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.repos["Qwen/Qwen2.5-0.5B-Instruct"] = hub.repos.pop(REPO)
    assert main(["download"]) == 0
    assert capsys.readouterr().out == f"{home / 'hub' / 'models--Qwen--Qwen2.5-0.5B-Instruct' / 'snapshots' / COMMIT}\n"
    assert main(["download", f"{REPO}@main", "--revision", "v1.0"]) == 2
    assert "already names a revision" in capsys.readouterr().err
