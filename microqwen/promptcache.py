"""The prompt cache: the KV cache of prompts kept on disk, so a prefix is evaluated once per machine.

Every chat starts with the same tokens: the default system prompt and `<|im_start|>user\\n`, 24 of
the 35 tokens of "Hi! Who are you?". The keys and values the model computes at a position depend only
on the tokens up to it, so once a prompt has been through the model its KV cache serves every later
prompt that begins the same way (llama.cpp's `--prompt-cache`). `PromptCache.restore` finds the saved
prompt that shares the longest prefix with a new one and loads those positions; `save` writes a prompt's
cache after it was evaluated.

One file per saved prompt, in `$MICROQWEN_CACHE` (default `$XDG_CACHE_HOME/microqwen`, or
`~/.cache/microqwen`), under `prompts/<model and numerics>/`:

    header (JSON, one line)   format, microqwen version, model, numerics, layers, kv width, the token ids
    data                      float64 k and v of every position, layer and kv head, little-endian
    sha256                    of everything before it (32 bytes)

`model` identifies the weights and config: for each weights file its size, modification time and
header (hashing a gigabyte on every start would cost seconds; a file rewritten with the same tensor
layout, size and time to the nanosecond is the one change this misses). `numerics` names the
interpreter, the matrix kernel and the number of processes, because each of them changes the last bits
of the sums, and a cache restored bit for bit must give the logits bit for bit. A file in the folder
that is truncated, corrupted, or from another model, numerics or microqwen version is removed with
one line on stderr, and the prompt recomputed. Writes go to a temporary file renamed into place, so
a reader never sees half a file; when the files pass `MAX_BYTES`, the least recently used go first.
A directory that cannot be written means no cache, not an error. The files hold the prompts' token
ids: `microqwen cache clear` removes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from . import __version__
from .errors import FormatError
from .jsonparse import JSON, parse_bytes

if TYPE_CHECKING:
    from .model import Qwen2ForCausalLM

FORMAT = "microqwen prompt cache 1"
MAX_BYTES = 512 * 2**20
"""The cache keeps at most this many bytes of files (about 10,900 positions of Qwen2.5-0.5B)."""

DIGEST = 32  # bytes of the sha256 at the end of a file


def cache_dir() -> str:
    """`$MICROQWEN_CACHE`, else `$XDG_CACHE_HOME/microqwen`, else `~/.cache/microqwen`."""
    configured = os.environ.get("MICROQWEN_CACHE")
    if configured:
        return os.path.expanduser(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "microqwen")


@dataclass(frozen=True)
class Entry:
    """One saved prompt: its file, its header, its size and when it was last used."""

    path: str
    header: dict[str, JSON]
    size: int
    used: float

    @property
    def ids(self) -> list[int]:
        ids = self.header["ids"]
        assert isinstance(ids, list)
        return ids


class PromptCache:
    """Saved prompts of one model and numerics, in `directory`; `warn` gets one line per ignored file."""

    def __init__(self, model: Qwen2ForCausalLM, directory: str | None = None,
                 warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> None:  # fmt: skip
        self.root = os.path.join(directory or cache_dir(), "prompts")
        self.warn = warn
        config = model.config
        self.identity = {
            "format": FORMAT,
            "version": __version__,
            "model": model.weights.identity() + ":" + hashlib.sha256(repr(config).encode()).hexdigest()[:16],
            "numerics": f"{sys.implementation.name} {sys.version_info[0]}.{sys.version_info[1]}, "
                        f"kernel {model.engine.kernel}, {model.engine.processes} processes",
            "layers": config.num_hidden_layers,
            "kv": config.kv_size,
        }  # fmt: skip
        self.layers, self.layer_floats = config.num_hidden_layers, 2 * config.kv_size  # k and v of one layer
        self.row_floats = self.layers * self.layer_floats  # one position
        key = json.dumps([self.identity[name] for name in ("model", "numerics")]).encode()
        self.directory = os.path.join(self.root, hashlib.sha256(key).hexdigest()[:16])

    def restore(self, model: Qwen2ForCausalLM, ids: Sequence[int]) -> int:
        """Load into the model's empty cache the longest prefix of `ids` a saved prompt shares; its length."""
        best, length = None, 0
        for entry in self.entries():
            shared = common_prefix(entry.ids, ids)
            if shared > length:
                best, length = entry, shared
        if best is None:
            return 0
        rows = self._read(best, length)
        if rows is None:
            return 0
        model.cache.extend(rows)
        _touch(best.path)
        return length

    def save(self, model: Qwen2ForCausalLM, ids: Sequence[int]) -> None:
        """Write the cache of `ids` (the model's first len(ids) positions), unless a saved prompt covers them."""
        if any(len(entry.ids) >= len(ids) and entry.ids[: len(ids)] == list(ids) for entry in self.entries()):
            return
        header = json.dumps(dict(self.identity, ids=list(ids)), separators=(",", ":")).encode() + b"\n"
        data = array("d", [x for row in model.cache.rows(0, len(ids)) for layer in row for x in layer])
        if sys.byteorder != "little":
            data.byteswap()
        body = header + data.tobytes()
        try:
            os.makedirs(self.directory, exist_ok=True)
            name = hashlib.sha256(body).hexdigest()[:32] + ".kv"
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".incomplete-")
            try:
                with os.fdopen(handle, "wb") as f:
                    f.write(body + hashlib.sha256(body).digest())
                os.replace(temporary, os.path.join(self.directory, name))
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError:
            return  # a cache that cannot be written: generation goes on without it
        self._evict()

    def entries(self) -> list[Entry]:
        """The saved prompts of this model and numerics (a file that belongs elsewhere is removed)."""
        found = []
        for entry in all_entries(self.directory, self._drop):
            if {key: entry.header.get(key) for key in self.identity} == self.identity:
                found.append(entry)
            else:
                self._drop(f"microqwen: prompt cache {entry.path}: made by microqwen {entry.header.get('version')} for "
                           f"{entry.header.get('model')}, {entry.header.get('numerics')}; removed", entry.path)  # fmt: skip
        return found

    def _drop(self, line: str, path: str) -> None:
        """Say why a file is not used, and remove it (it would be recomputed anyway)."""
        self.warn(line)
        try:
            os.unlink(path)
        except OSError:
            pass

    def _read(self, entry: Entry, length: int) -> list[list[list[float]]] | None:
        """The first `length` positions of a saved prompt, or None (and a warning) if the file is damaged."""
        try:
            with open(entry.path, "rb") as f:
                raw = f.read()
        except OSError as e:
            self.warn(f"microqwen: prompt cache {entry.path}: cannot read ({e.strerror}); recomputing")
            return None
        header_end = raw.index(b"\n") + 1
        expected = header_end + 8 * self.row_floats * len(entry.ids) + DIGEST
        if len(raw) != expected:
            self._drop(f"microqwen: prompt cache {entry.path}: {len(raw)} bytes, {expected} expected (truncated?); "
                       "removed, recomputing", entry.path)  # fmt: skip
            return None
        if hashlib.sha256(raw[:-DIGEST]).digest() != raw[-DIGEST:]:
            self._drop(f"microqwen: prompt cache {entry.path}: the checksum does not match (corrupted); removed, "
                       "recomputing", entry.path)  # fmt: skip
            return None
        data = array("d")
        data.frombytes(raw[header_end : header_end + 8 * self.row_floats * length])
        if sys.byteorder != "little":
            data.byteswap()
        width = self.layer_floats
        return [[data[(t * self.layers + i) * width : (t * self.layers + i + 1) * width].tolist()
                 for i in range(self.layers)] for t in range(length)]  # fmt: skip

    def _evict(self) -> None:
        """Remove the least recently used files (of any model) until the rest fit MAX_BYTES."""
        entries = sorted(every_entry(self.root), key=lambda e: e.used, reverse=True)
        total = 0
        for entry in entries:
            total += entry.size
            if total > MAX_BYTES:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass


def all_entries(directory: str, drop: Callable[[str, str], None]) -> list[Entry]:
    """Every saved prompt in `directory` whose header can be read; `drop(line, path)` gets the others."""
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(".kv"))
    except OSError:
        return []
    entries = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                line = f.readline(1 << 24)
                status = os.fstat(f.fileno())
            header = parse_bytes(line, path)
            if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("ids"), list):
                raise FormatError(f"{path}: not a prompt cache header")
        except OSError as e:
            drop(f"microqwen: prompt cache {path}: cannot read ({e.strerror}); removed", path)
            continue
        except FormatError as e:
            drop(f"microqwen: prompt cache: {e}; removed", path)
            continue
        entries.append(Entry(path, header, status.st_size, status.st_mtime))
    return entries


def every_entry(root: str) -> list[Entry]:
    """The saved prompts of every model in the cache (`microqwen cache`), unreadable ones left alone."""
    try:
        folders = sorted(os.listdir(root))
    except OSError:
        return []
    return [entry for folder in folders for entry in all_entries(os.path.join(root, folder), lambda line, path: None)]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids a and b share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _touch(path: str) -> None:
    """Mark a file as just used (its modification time orders the eviction)."""
    try:
        os.utime(path)
    except OSError:
        pass
