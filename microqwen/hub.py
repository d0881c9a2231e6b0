"""Getting the model: Hub ids, the Hugging Face cache, and downloads that resume and check their hash.

A model on the Hugging Face Hub has an id `org/name` and a git history; a branch such as `main`
or a tag names one commit. Each file of a revision has a URL:

    https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/resolve/main/config.json
    {HF_ENDPOINT}         /{repo id}                  /resolve/{revision}/{file}

Tools that download from the Hub share one cache, laid out by `huggingface_hub`, so a model that
`transformers` already fetched is used here with no network at all, and the other way round:

    ~/.cache/huggingface/hub/                      $HF_HUB_CACHE, or $HF_HOME/hub
      models--Qwen--Qwen2.5-0.5B-Instruct/         "models--" + the id, "/" written "--"
        refs/main                                  the text 7ae557604adf67be50417f59c2c2f167def9a775
        blobs/fdf756fa7fcbe740...8fb7fe            a file's bytes, named after its ETag
        snapshots/7ae557604adf.../                 one directory per commit: the model directory
          model.safetensors -> ../../blobs/fdf756fa7fcbe740...8fb7fe

The Hub sends each file's ETag in the answer to an HTTP HEAD request. For a large file stored with
git LFS (the weights) the ETag is the file's sha256 (header `X-Linked-Etag`), so the download is
checked against it. Bytes go to `blobs/<etag>.incomplete` first, and an interrupted download resumes
from there with `Range: bytes=<bytes so far>-`; the file is renamed to `blobs/<etag>`, and linked
into the snapshot, only once it is complete and checked.

```python
>>> parse_model_id("Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf67be50417f59c2c2f167def9a775")
('Qwen/Qwen2.5-0.5B-Instruct', '7ae557604adf67be50417f59c2c2f167def9a775')
>>> repo_folder("Qwen/Qwen2.5-0.5B-Instruct")
'models--Qwen--Qwen2.5-0.5B-Instruct'
>>> file_url("https://huggingface.co", "Qwen/Qwen2.5-0.5B-Instruct", "main", "model.safetensors")
'https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/resolve/main/model.safetensors'

```

`resolve_model` puts it together: a directory is used as it is; a Hub id is looked up in the
cache, and whatever is missing is downloaded.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import IO, Collection, Iterator, Mapping

from . import __version__
from .errors import DownloadError, UsageError
from .jsonparse import parse_bytes, parse_file
from .gguf import is_gguf
from .safetensors import PICKLE_SUFFIXES

DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
"""The model `resolve_model(None)` and `microqwen download` fetch."""

DEFAULT_ENDPOINT = "https://huggingface.co"
"""Where files come from unless `HF_ENDPOINT` names a mirror."""

TIMEOUT = 10.0
"""Seconds to wait to connect, and then for each block of bytes, before a request gives up."""

RESUME_ATTEMPTS = 5
"""How many times one download may break off mid-file and go on from where it stopped."""

CHUNK = 1 << 20
"""Bytes read from the network and written to disk at a time (1 MiB)."""

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TEXT_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt")
"""The small files, fetched before the weights; generation_config.json, vocab.json and merges.txt are optional."""

OPTIONAL_FILES = ("generation_config.json",)
"""Files a complete snapshot has unless the repo has none (then `.no_exist/<commit>/<file>` says so)."""

_WORD = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_REPO_ID = re.compile(f"{_WORD}/{_WORD}")
_REVISION = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ETAG = re.compile(r"[0-9A-Za-z_-]{1,128}")
_SHARD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.safetensors")
_TRUE = ("1", "ON", "YES", "TRUE")


# --- names: model id, cache folder, URL ---------------------------------------------------------


def parse_model_id(spec: str) -> tuple[str, str]:
    """Split `org/name@revision` into (repo id, revision); the revision defaults to `main`."""
    repo_id, at, revision = spec.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id or len(repo_id) > 96:
        raise UsageError(f"{spec!r} is not a model directory, a .gguf file, nor a Hub id of the form org/name[@revision]")
    if at and (not _REVISION.fullmatch(revision) or {".", ".."} & set(revision.split("/"))):
        raise UsageError(f"{spec!r}: {revision!r} is not a branch, tag or commit name")
    return repo_id, revision if at else "main"


def repo_folder(repo_id: str) -> str:
    """The cache folder of a model repo: `org/name` -> `models--org--name`."""
    return "models--" + repo_id.replace("/", "--")


def file_url(endpoint: str, repo_id: str, revision: str, filename: str) -> str:
    """The URL that serves one file of one revision."""
    quoted = urllib.parse.quote(revision, safe="")
    return f"{endpoint}/{repo_id}/resolve/{quoted}/{urllib.parse.quote(filename)}"


def hub_cache() -> str:
    """The cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`."""
    explicit = os.environ.get("HF_HUB_CACHE")
    if explicit:
        return _expand(explicit)
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(_expand(os.environ.get("HF_HOME") or os.path.join(cache_home, "huggingface")), "hub")


def is_offline() -> bool:
    """True when `HF_HUB_OFFLINE` is 1, ON, YES or TRUE: then only the cache is used."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


# --- which files a model needs ------------------------------------------------------------------


def missing_files(directory: str, absent: Collection[str] = ()) -> list[str]:
    """The files a complete model directory has and `directory` lacks, shards named by the index too.

    `absent` lists optional files (`OPTIONAL_FILES`) that need not be there.
    """
    have = {name for name in os.listdir(directory) if os.path.isfile(os.path.join(directory, name))}
    wanted = ["config.json", "tokenizer_config.json"]
    if "tokenizer.json" not in have and not {"vocab.json", "merges.txt"} <= have:
        wanted.append("tokenizer.json")
    wanted += [name for name in OPTIONAL_FILES if name not in absent]
    if WEIGHTS in have:
        wanted.append(WEIGHTS)
    elif WEIGHTS_INDEX in have:
        wanted += shard_names(os.path.join(directory, WEIGHTS_INDEX))
    else:
        wanted.append(WEIGHTS)
    return [name for name in wanted if name not in have]


def shard_names(index_path: str) -> list[str]:
    """The weight files a `model.safetensors.index.json` names in its `weight_map`, sorted."""
    index = parse_file(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise DownloadError(f"{index_path}: no 'weight_map' object naming the weight files")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not isinstance(shard, str) or not _SHARD.fullmatch(shard):
            raise DownloadError(f"{index_path}: {shard!r} is not a plain *.safetensors file name")
    return shards


def weights_problem(names: Collection[str]) -> str | None:
    """Why a model with these files cannot be loaded (no safetensors weights), or None if it can."""
    if WEIGHTS in names or WEIGHTS_INDEX in names:
        return None
    pickles = sorted(name for name in names if name.endswith(PICKLE_SUFFIXES))
    if pickles:
        return (
            f"has its weights only in pickle files ({', '.join(pickles)}); microqwen reads only "
            f"{WEIGHTS} and never unpickles, since loading a pickle can run any code"
        )
    return f"has no {WEIGHTS} or {WEIGHTS_INDEX}"


def _files_to_fetch(names: Collection[str], repo_id: str) -> list[str]:
    """The files to download from a repo holding `names`, small ones first."""
    problem = weights_problem(names)
    if problem is not None:
        raise DownloadError(f"{repo_id} {problem}")
    for required in ("config.json", "tokenizer_config.json"):
        if required not in names:
            raise DownloadError(f"{repo_id} has no {required}, so it is not a model microqwen can run")
    if "tokenizer.json" not in names and not {"vocab.json", "merges.txt"} <= set(names):
        raise DownloadError(f"{repo_id} has no tokenizer.json (nor vocab.json and merges.txt)")
    weights = WEIGHTS if WEIGHTS in names else WEIGHTS_INDEX
    return [name for name in TEXT_FILES if name in names] + [weights]


# --- resolve_model: directory, cache, or download ------------------------------------------------


def resolve_model(spec: str | None, *, offline: bool | None = None, progress: bool = True) -> str:
    """Return a local model directory (or .gguf file) for `spec`, downloading what is missing.

    Args:
        spec: a model directory, a .gguf file (returned as it is), or a Hub id `org/name` or
            `org/name@revision`; None means `DEFAULT_MODEL`.
        offline: use only the cache; None reads `HF_HUB_OFFLINE`.
        progress: show the download on stderr (a bar on a terminal, else a line per file).

    Raises:
        UsageError: `spec` is neither a directory, a .gguf file nor a Hub id, or the directory has no
            safetensors weights.
        DownloadError: the cache lacks files and the Hub cannot supply them, with the reason.
    """
    if spec is not None and os.path.isdir(spec):
        return _checked_directory(spec)
    if spec is not None and os.path.isfile(spec) and is_gguf(spec):
        return spec
    repo_id, revision = parse_model_id(DEFAULT_MODEL if spec is None else spec)
    storage = os.path.join(hub_cache(), repo_folder(repo_id))
    offline = is_offline() if offline is None else offline
    snapshot = cached_snapshot(storage, revision)
    if snapshot is not None:
        commit = os.path.basename(snapshot)
        absent = OPTIONAL_FILES if offline else _known_absent(storage, commit)
        missing = missing_files(snapshot, absent)
        if not missing:
            return snapshot
        if offline:
            raise DownloadError(f"offline (HF_HUB_OFFLINE), and the cached {snapshot} lacks {', '.join(missing)}")
    if offline:
        raise DownloadError(f"offline (HF_HUB_OFFLINE), and {repo_id} revision {revision} is not in the cache {hub_cache()}")
    try:
        return _download(_Hub.from_environ(), repo_id, revision, storage, progress)
    except OSError as e:
        raise DownloadError(f"cannot write the cache: {e.filename}: {e.strerror}") from None


def cached_snapshot(storage: str, revision: str) -> str | None:
    """The snapshot directory of `revision` (a commit, or a name in `refs/`) in a repo's cache folder."""
    commit = revision
    if not _COMMIT.fullmatch(revision):
        try:
            with open(os.path.join(storage, "refs", revision), encoding="ascii") as f:
                commit = f.read().strip()
        except (OSError, UnicodeDecodeError):
            return None
    if not _COMMIT.fullmatch(commit):
        return None
    snapshot = os.path.join(storage, "snapshots", commit)
    return snapshot if os.path.isdir(snapshot) else None


def _checked_directory(path: str) -> str:
    problem = weights_problem(os.listdir(path))
    if problem is not None:
        raise UsageError(f"model directory {path} {problem}")
    return path


def _known_absent(storage: str, commit: str) -> list[str]:
    """Optional files the repo is known not to have at `commit` (marked in `.no_exist/`)."""
    return [name for name in OPTIONAL_FILES if os.path.exists(os.path.join(storage, ".no_exist", commit, name))]


def _download(hub: _Hub, repo_id: str, revision: str, storage: str, progress: bool) -> str:
    """Fetch the files of `revision` that the cache lacks; return the snapshot directory."""
    commit, names = hub.listing(repo_id, revision)
    files = _files_to_fetch(names, repo_id)
    snapshot = os.path.join(storage, "snapshots", commit)
    if progress:
        print(f"{repo_id} revision {revision} (commit {commit[:12]}) from {hub.endpoint} into {snapshot}", file=sys.stderr)
    _write_ref(storage, revision, commit)
    for name in OPTIONAL_FILES:
        if name not in names:
            _touch(os.path.join(storage, ".no_exist", commit, name))
    for name in files:
        _fetch(hub, repo_id, commit, name, storage, progress)
    if WEIGHTS_INDEX in files:
        for shard in shard_names(os.path.join(snapshot, WEIGHTS_INDEX)):
            if shard not in names:
                raise DownloadError(f"{repo_id}: {WEIGHTS_INDEX} names {shard}, which the repo does not have")
            _fetch(hub, repo_id, commit, shard, storage, progress)
    return snapshot


def _write_ref(storage: str, revision: str, commit: str) -> None:
    """Record which commit a branch or tag named (`refs/main`), written whole or not at all."""
    if revision == commit:
        return
    path = os.path.join(storage, "refs", revision)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="ascii") as f:
        f.write(commit)
    os.replace(temporary, path)


def _touch(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "ab").close()


# --- one file: HEAD, blob, symlink ---------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """What the Hub's answer to HEAD says about one file."""

    name: str
    url: str
    """Where to GET the bytes: the resolve URL, or the storage URL it redirects to (LFS files)."""
    etag: str
    """The blob's name in the cache: the git object id, or the sha256 for an LFS file."""
    size: int
    sha256: str | None
    """The hash the download must have (LFS files), or None for a small git file."""


def _fetch(hub: _Hub, repo_id: str, commit: str, name: str, storage: str, progress: bool) -> None:
    """Make `snapshots/<commit>/<name>` a link to a complete blob, downloading it if needed."""
    pointer = os.path.join(storage, "snapshots", commit, name)
    if os.path.isfile(pointer):
        return
    remote = hub.head(repo_id, commit, name)
    blob = os.path.join(storage, "blobs", remote.etag)
    if not os.path.isfile(blob):
        os.makedirs(os.path.dirname(blob), exist_ok=True)
        _download_blob(hub, remote, blob, _Progress(name, remote.size, progress))
    os.makedirs(os.path.dirname(pointer), exist_ok=True)
    if os.path.lexists(pointer):
        os.remove(pointer)
    os.symlink(os.path.relpath(blob, os.path.dirname(pointer)), pointer)


class _Broken(Exception):
    """The connection broke off mid-file; the bytes so far are in the .incomplete file."""


def _download_blob(hub: _Hub, remote: RemoteFile, blob: str, bar: _Progress) -> None:
    """Download into `<blob>.incomplete`, resuming after breaks; check it, then rename it to `blob`."""
    incomplete = blob + ".incomplete"
    _check_space(incomplete, remote)
    try:
        for _ in range(RESUME_ATTEMPTS):
            try:
                _transfer(hub, remote, incomplete, bar)
                break
            except _Broken as e:
                reason = str(e)
        else:
            raise DownloadError(
                f"{remote.name}: the connection broke off {RESUME_ATTEMPTS} times ({reason}); "
                f"{_size(incomplete):,} of {remote.size:,} bytes are in {incomplete}: run again to resume"
            )
    finally:
        bar.close()
    _verify(incomplete, remote)
    os.replace(incomplete, blob)


def _transfer(hub: _Hub, remote: RemoteFile, incomplete: str, bar: _Progress) -> None:
    """GET the file, or the rest of it after the bytes `incomplete` holds, and append them."""
    have = _size(incomplete)
    if have > remote.size:
        have = 0
    if have == remote.size:
        return
    with hub.get(remote.url, {"Range": f"bytes={have}-"} if have else {}) as response:
        if have and response.status != 206:
            have = 0  # the server ignored the Range and sends the whole file: start over
        elif have and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            raise DownloadError(f"{remote.url}: asked for bytes {have}- and got {response.headers.get('Content-Range')}")
        bar.start(have)
        try:
            with open(incomplete, "ab" if have else "wb") as f:
                for chunk in _chunks(response):
                    f.write(chunk)
                    bar.advance(len(chunk))
        except OSError as e:
            raise _disk_error(e, incomplete, remote) from None
    got = _size(incomplete)
    if got < remote.size:
        raise _Broken(f"the server stopped sending at byte {got:,} of {remote.size:,}")
    if got > remote.size:
        os.remove(incomplete)
        raise DownloadError(f"{remote.url}: the server sent {got:,} bytes, its HEAD answer said {remote.size:,}")


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The body in blocks; a connection that breaks off raises `_Broken` (not OSError)."""
    while True:
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as e:
            raise _Broken(str(e) or type(e).__name__) from None
        if not chunk:
            return
        yield chunk


def _check_space(incomplete: str, remote: RemoteFile) -> None:
    needed = remote.size - _size(incomplete)
    free = shutil.disk_usage(os.path.dirname(incomplete)).free
    if needed > free:
        raise DownloadError(
            f"{remote.name} needs {needed:,} bytes ({needed / 1e6:,.1f} MB) in {os.path.dirname(incomplete)}, "
            f"but only {free:,} are free"
        )


def _disk_error(e: OSError, incomplete: str, remote: RemoteFile) -> DownloadError:
    if e.errno == errno.ENOSPC:
        still = remote.size - _size(incomplete)
        return DownloadError(
            f"disk full writing {incomplete}: {remote.name} needs {remote.size:,} bytes, {still:,} "
            f"({still / 1e6:,.1f} MB) still to go; free that much and run again to resume"
        )
    return DownloadError(f"cannot write {incomplete}: {e.strerror}")


def _verify(incomplete: str, remote: RemoteFile) -> None:
    """Compare an LFS file's sha256 with the Hub's; delete a file that does not match."""
    if remote.sha256 is None:
        return
    digest = hashlib.sha256()
    with open(incomplete, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    if digest.hexdigest() != remote.sha256:
        os.remove(incomplete)
        raise DownloadError(
            f"{remote.name}: the download has sha256 {digest.hexdigest()}, the Hub says {remote.sha256}; "
            "the bad file was deleted, run again to download it afresh"
        )


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


# --- HTTP ----------------------------------------------------------------------------------------


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    """Hand a 3xx answer back to the caller, which decides whether to follow it."""

    def http_error_302(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: http.client.HTTPMessage
    ) -> IO[bytes]:
        return fp

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


_OPENER = urllib.request.build_opener(_KeepRedirects)


@dataclass(frozen=True)
class _Hub:
    """The Hub at `endpoint`, with the token (if any) sent to it and to no other host."""

    endpoint: str
    token: str | None

    @classmethod
    def from_environ(cls) -> _Hub:
        """`HF_ENDPOINT` (default https://huggingface.co) and `HF_TOKEN`."""
        return cls(os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/"), os.environ.get("HF_TOKEN") or None)

    def listing(self, repo_id: str, revision: str) -> tuple[str, set[str]]:
        """Ask the Hub's API which commit `revision` is, and which files it has."""
        quoted = urllib.parse.quote(revision, safe="")
        url = f"{self.endpoint}/api/models/{repo_id}/revision/{quoted}"
        what = f"model {repo_id} revision {revision}"
        with self.get(url, {}, what) as response:
            try:
                body = response.read()
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(f"{url}: the connection broke off: {e}") from None
        info = parse_bytes(body, url)
        commit = info.get("sha") if isinstance(info, dict) else None
        siblings = info.get("siblings") if isinstance(info, dict) else None
        if not isinstance(commit, str) or not _COMMIT.fullmatch(commit) or not isinstance(siblings, list):
            raise DownloadError(f"{url}: the answer has no commit 'sha' and 'siblings' list; is HF_ENDPOINT a Hub?")
        return commit, {s["rfilename"] for s in siblings if isinstance(s, dict) and isinstance(s.get("rfilename"), str)}

    def head(self, repo_id: str, commit: str, name: str) -> RemoteFile:
        """HEAD the file's resolve URL; an LFS file answers with a redirect that carries its sha256."""
        url = file_url(self.endpoint, repo_id, commit, name)
        response, final_url = self._follow("HEAD", url, {}, f"{name} of {repo_id}")
        with response:
            headers = response.headers
            redirected = 300 <= response.status < 400
            linked = headers.get("X-Linked-Etag")
            etag = (linked or headers.get("ETag") or "").replace("W/", "").strip('"')
            size = headers.get("X-Linked-Size") or (None if redirected else headers.get("Content-Length"))
            location = urllib.parse.urljoin(final_url, headers["Location"]) if redirected else final_url
        if not _ETAG.fullmatch(etag) or size is None or not size.isdigit():
            raise DownloadError(f"{url}: the answer to HEAD lacks a usable ETag and size; is HF_ENDPOINT a Hub?")
        sha256 = etag if linked and _SHA256.fullmatch(etag) else None
        if sha256 is None and name.endswith(".safetensors"):
            raise DownloadError(f"{url}: the Hub gave no sha256 (X-Linked-Etag) to check the weights against")
        return RemoteFile(name, location, etag, int(size), sha256)

    def get(self, url: str, headers: Mapping[str, str], what: str = "") -> http.client.HTTPResponse:
        """GET `url`, following redirects; the caller reads and closes the response."""
        return self._follow("GET", url, headers, what or url)[0]

    def _follow(self, method: str, url: str, headers: Mapping[str, str], what: str) -> tuple[http.client.HTTPResponse, str]:
        """Send the request and follow redirects (a HEAD only those on the same host); return the answer and its URL."""
        for _ in range(10):
            response = self._send(method, url, headers, what)
            location = response.headers.get("Location")
            if not 300 <= response.status < 400 or location is None:
                return response, url
            target = urllib.parse.urljoin(url, location)
            if method == "HEAD" and _host(target) != _host(url):
                return response, url
            response.close()
            url = target
        raise DownloadError(f"{what}: too many redirects, the last to {url}")

    def _send(self, method: str, url: str, headers: Mapping[str, str], what: str) -> http.client.HTTPResponse:
        """One request, with a timeout; every failure becomes a one-line `DownloadError`."""
        request = urllib.request.Request(url, method=method, headers=dict(headers))
        request.add_header("User-Agent", f"microqwen/{__version__}")
        request.add_header("Accept-Encoding", "identity")
        if self.token is not None and _host(url) == _host(self.endpoint):
            request.add_unredirected_header("Authorization", f"Bearer {self.token}")
        try:
            response: http.client.HTTPResponse = _OPENER.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as e:
            e.close()
            raise self._refused(e, url, what) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise _unreachable(e, url) from None
        return response

    def _refused(self, e: urllib.error.HTTPError, url: str, what: str) -> DownloadError:
        if e.code in (401, 403):
            hint = (
                "HF_TOKEN was refused: check that it may read the repo and that you accepted the model's conditions"
                if self.token is not None
                else "if it is gated or private, accept its conditions on the Hub and set HF_TOKEN to an access token"
            )
            return DownloadError(f"{what}: access denied (HTTP {e.code} from {url}); {hint}")
        if e.code == 404:
            return DownloadError(f"{what}: not found (HTTP 404 from {url})")
        return DownloadError(f"{what}: HTTP {e.code} {e.reason} from {url}")


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc.lower()


def _unreachable(e: Exception, url: str) -> DownloadError:
    """Name the network failure: DNS, refused, timeout, or what else the OS said."""
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    host = _host(url)
    if isinstance(reason, socket.gaierror):
        return DownloadError(
            f"cannot find {host}: DNS lookup failed ({reason.strerror}); no network? (HF_HUB_OFFLINE=1 uses only the cache)"
        )
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return DownloadError(f"no answer from {host} within {TIMEOUT:g} s ({url})")
    if isinstance(reason, ConnectionRefusedError):
        return DownloadError(f"cannot connect to {host}: connection refused; no network, or HF_ENDPOINT is wrong?")
    return DownloadError(f"cannot reach {host}: {getattr(reason, 'strerror', None) or reason} ({url})")


# --- progress on stderr --------------------------------------------------------------------------


class _Progress:
    """One file's download on stderr: a live bar on a terminal, then (or else) one summary line."""

    def __init__(self, name: str, total: int, enabled: bool) -> None:
        self.name, self.total, self.enabled = name, total, enabled
        self.live = enabled and sys.stderr.isatty()
        self.done = self.resumed_at = 0
        self.started, self.drawn = time.monotonic(), 0.0
        self.width = 0

    def start(self, have: int) -> None:
        """A request starts; `have` bytes are already on disk."""
        if self.done == 0 and have:
            self.resumed_at = have
        self.done = have

    def advance(self, n: int) -> None:
        self.done += n
        if self.live and time.monotonic() - self.drawn >= 0.1:
            self.drawn = time.monotonic()
            fill = 24 * self.done // max(self.total, 1)
            rate = (self.done - self.resumed_at) / max(self.drawn - self.started, 1e-9)
            self._show(
                f"  {self.name:<30} {100 * self.done // max(self.total, 1):3d}% [{'#' * fill:<24}] "
                f"{self.done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB {rate / 1e6:.1f} MB/s"
            )

    def close(self) -> None:
        """Replace the bar by the summary line (complete or not)."""
        if not self.enabled:
            return
        seconds = time.monotonic() - self.started
        stopped = "" if self.done == self.total else f" of {self.total:,} (stopped)"
        resumed = f", resumed at byte {self.resumed_at:,}" if self.resumed_at else ""
        self._show(f"  {self.name:<30} {self.done:>13,} bytes{stopped} in {seconds:.1f} s{resumed}")
        sys.stderr.write("\n")
        sys.stderr.flush()

    def _show(self, line: str) -> None:
        if self.live:
            sys.stderr.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            sys.stderr.write(line)
        sys.stderr.flush()
