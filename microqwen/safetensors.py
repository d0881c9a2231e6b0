"""safetensors: the file that holds the weights, read and checked byte by byte.

A .safetensors file has three parts:

    bytes 0..7        N, the header length (unsigned 64-bit, little-endian)
    bytes 8..8+N      a JSON object (UTF-8, padded with spaces to a multiple of 8)
    bytes 8+N..end    the data buffer: every tensor's raw bytes, row-major, back to back

Each header entry says where one tensor lives, relative to the data buffer:

    "model.norm.weight": {"dtype": "BF16", "shape": [896], "data_offsets": [0, 1792]}

so that tensor is the 896 x 2 = 1792 bytes from file offset 8 + N + 0. (Forgetting
the 8 is the off-by-8 bug of the C project microqwen grew out of.) An optional
`"__metadata__"` entry maps strings to strings.

Nothing here trusts the file: `SafetensorsFile` checks every entry before any tensor is
used (the size, the JSON, each dtype, shape and offset range, and that the tensors tile
the data buffer with no hole, no overlap and no trailing byte), and each `FormatError`
names the file, the tensor and the byte offsets at fault. Tensor bytes are then
served two ways: `data` gives a memoryview into a read-only `mmap` of the file (no
copy), and `read_into` reads a range of elements into an array with read(2). The model
loads its weights with `read_into`: each process reads just its share of the rows, and
no view into the map is left for an interrupted step's traceback to hold.

A model too large for one file is sharded: `model.safetensors.index.json` maps each
tensor name to one of several files, and `open_checkpoint` reads them as one.
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from array import array
from typing import Any, BinaryIO, Mapping, Sequence

from .errors import FormatError
from .jsonparse import JSON, parse_bytes, parse_file

DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
"""Bytes per element of every dtype name the format defines (byte-sized ones)."""

MAX_HEADER_BYTES = 100_000_000
"""Reference readers refuse a longer header; so do we (a corrupt N could be anything)."""

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Weights in pickle files (PyTorch's own format) are refused: loading a pickle can run any code."""

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: `begin`/`end` are absolute byte offsets in `path` (end exclusive)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: str
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


class SafetensorsFile:
    """One .safetensors file, header checked, tensors readable through mmap.

    ```python
    with SafetensorsFile("model.safetensors") as f:
        info = f.tensors["model.norm.weight"]     # TensorInfo: dtype "BF16", shape (896,), begin, end
        raw = f.data("model.norm.weight")          # a memoryview of those 1792 bytes, no copy
    ```
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file = open(path, "rb")
        except OSError as e:
            raise FormatError(f"{path}: cannot open: {e.strerror}") from None
        try:
            self.file_size = os.fstat(self._file.fileno()).st_size
            self.header_size, header = _read_header(self._file, path, self.file_size)
            self.metadata = _check_metadata(header.pop("__metadata__", {}), path)
            self.tensors = _check_entries(header, path, 8 + self.header_size, self.file_size)
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._file.close()
            raise

    def data(self, name: str) -> memoryview:
        """The raw bytes of tensor `name`, zero-copy (release the view before `close`)."""
        info = self.tensors[name]
        return memoryview(self._map)[info.begin : info.end]

    def read_into(self, name: str, out: array[Any], first: int, count: int) -> None:
        """Append elements first..first+count-1 of tensor `name` to `out`, read from the file.

        Unlike `data`, this goes through read(2), not the mmap: a process that loads its share of
        the weights this way does not also keep those pages of the file mapped.
        """
        info = self.tensors[name]
        if out.itemsize != DTYPE_SIZES[info.dtype] or not 0 <= first <= first + count <= info.numel:
            raise ValueError(f"cannot read elements {first}..{first + count} of {name} {info.dtype} {list(info.shape)}")
        self._file.seek(info.begin + first * out.itemsize)
        out.fromfile(self._file, count)

    def header_bytes(self) -> bytes:
        """The first 8 + N bytes of the file: the header length and the JSON header."""
        self._file.seek(0)
        return self._file.read(8 + self.header_size)

    def close(self) -> None:
        """Close the file, and unmap it unless a view from `data` is still alive (then the map goes with it)."""
        try:
            self._map.close()
        except BufferError:
            pass
        self._file.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_header(f: BinaryIO, path: str, file_size: int) -> tuple[int, dict[str, JSON]]:
    """Bytes 0..8+N: the header length N, then N bytes of JSON that must be an object."""
    if file_size < 8:
        raise FormatError(f"{path}: file is {file_size} bytes, too short for the 8-byte header length")
    header_size = int.from_bytes(f.read(8), "little")
    if header_size > MAX_HEADER_BYTES:
        raise FormatError(
            f"{path}: header length {header_size} (bytes 0-7) is over the {MAX_HEADER_BYTES}-byte limit"
        )
    if 8 + header_size > file_size:
        raise FormatError(
            f"{path}: header length {header_size} (bytes 0-7) goes past the end of the "
            f"{file_size}-byte file"
        )
    header = parse_bytes(f.read(header_size), f"{path} (header at byte 8)")
    if not isinstance(header, dict):
        raise FormatError(f"{path}: header at byte 8 is a JSON {type(header).__name__}, not an object")
    return header_size, header


def _check_metadata(metadata: JSON, path: str) -> dict[str, str]:
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError(f"{path}: __metadata__ must map strings to strings")
    return metadata


def _check_entries(
    header: dict[str, JSON], path: str, data_start: int, file_size: int
) -> dict[str, TensorInfo]:
    """Check each entry, then that the tensors tile the data buffer exactly."""
    tensors = {name: _check_entry(name, entry, path, data_start) for name, entry in header.items()}
    data_size = file_size - data_start
    expected = 0  # where the next tensor must begin, relative to the data buffer
    previous = "the data buffer's start"
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        begin, end = info.begin - data_start, info.end - data_start
        if begin < expected:
            raise FormatError(
                f"{path}: tensor {info.name!r} data_offsets [{begin}, {end}] overlaps {previous} "
                f"(which ends at {expected})"
            )
        if begin > expected:
            raise FormatError(
                f"{path}: hole of {begin - expected} bytes in the data buffer between {previous} "
                f"(ends at {expected}) and tensor {info.name!r} (begins at {begin})"
            )
        if end > data_size:
            raise FormatError(
                f"{path}: tensor {info.name!r} data_offsets [{begin}, {end}] go past the end of the "
                f"{data_size}-byte data buffer (file offset {file_size}); is the file truncated?"
            )
        expected, previous = end, f"tensor {info.name!r}"
    if expected != data_size:
        raise FormatError(
            f"{path}: {data_size - expected} trailing bytes after the last tensor "
            f"(data ends at file offset {data_start + expected}, the file at {file_size})"
        )
    return tensors


def _check_entry(name: str, entry: JSON, path: str, data_start: int) -> TensorInfo:
    """One header entry: a known dtype, a shape of non-negative ints, offsets that fit the shape."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise FormatError(f"{where}: entry must be an object with the keys dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise FormatError(f"{where}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_natural(d) for d in shape):
        raise FormatError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_natural(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise FormatError(f"{where}: data_offsets {offsets!r} must be [begin, end] with 0 <= begin <= end")
    info = TensorInfo(name, dtype, tuple(shape), path, data_start + offsets[0], data_start + offsets[1])
    if info.numel * DTYPE_SIZES[dtype] != info.nbytes:
        raise FormatError(
            f"{where}: shape {shape} x {DTYPE_SIZES[dtype]} bytes ({dtype}) = "
            f"{info.numel * DTYPE_SIZES[dtype]} bytes, but data_offsets {offsets} span {info.nbytes}"
        )
    return info


def _is_natural(value: JSON) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class Checkpoint:
    """All the tensors of a model, from one .safetensors file or several shards."""

    def __init__(self, files: Sequence[SafetensorsFile]) -> None:
        self.files = list(files)
        self.tensors: dict[str, TensorInfo] = {}
        self._owner: dict[str, SafetensorsFile] = {}
        for f in self.files:
            for name, info in f.tensors.items():
                self.tensors[name] = info
                self._owner[name] = f

    def data(self, name: str) -> memoryview:
        """The raw bytes of tensor `name`, zero-copy, from whichever shard holds it."""
        return self._owner[name].data(name)

    def read_into(self, name: str, out: array[Any], first: int, count: int) -> None:
        """Append `count` elements of tensor `name`, from element `first`, to `out` (see SafetensorsFile)."""
        self._owner[name].read_into(name, out, first, count)

    def close(self) -> None:
        """Close every shard."""
        for f in self.files:
            f.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_checkpoint(path: str) -> Checkpoint:
    """Open a .safetensors file, or a model directory (single file or sharded with an index)."""
    if not os.path.isdir(path):
        return Checkpoint([SafetensorsFile(path)])
    single = os.path.join(path, SINGLE_FILE)
    index = os.path.join(path, INDEX_FILE)
    if os.path.lexists(single):  # a dangling link (a Hub cache whose blob is gone) says so when opened
        return Checkpoint([SafetensorsFile(single)])
    if os.path.exists(index):
        return _open_sharded(path, index)
    pickles = [n for n in sorted(os.listdir(path)) if n.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise FormatError(
            f"{path}: has only pickle weights ({', '.join(pickles)}); microqwen reads safetensors "
            "and never unpickles (pickle files can run code)"
        )
    raise FormatError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE} in this directory")


def _open_sharded(directory: str, index_path: str) -> Checkpoint:
    """Open every shard named in the index and check each holds exactly the tensors it should."""
    index = parse_file(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise FormatError(f"{index_path}: must have a 'weight_map' object of tensor name -> file name")
    expected: dict[str, set[str]] = {}
    for name, shard in weight_map.items():
        if os.path.basename(shard) != shard:
            raise FormatError(f"{index_path}: shard name {shard!r} for {name!r} is not a plain file name")
        expected.setdefault(shard, set()).add(name)
    files: list[SafetensorsFile] = []
    try:
        for shard, names in sorted(expected.items()):
            files.append(SafetensorsFile(os.path.join(directory, shard)))
            _check_shard(files[-1], names, index_path)
    except BaseException:
        for f in files:
            f.close()
        raise
    return Checkpoint(files)


def _check_shard(shard: SafetensorsFile, names: set[str], index_path: str) -> None:
    missing, extra = sorted(names - set(shard.tensors)), sorted(set(shard.tensors) - names)
    if missing:
        raise FormatError(f"{shard.path}: tensors {missing} are missing (the index {index_path} puts them here)")
    if extra:
        raise FormatError(f"{shard.path}: tensors {extra} are not in the index {index_path}")


@dataclass(frozen=True)
class TensorData:
    """A tensor to write: its dtype name, shape and raw little-endian bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes | bytearray | memoryview


def write(path: str, tensors: Mapping[str, TensorData], metadata: Mapping[str, str] | None = None) -> None:
    """Write a .safetensors file: tensors in name order, header padded with spaces to 8 bytes.

    The file is written next to `path` under a temporary name and renamed into
    place only when complete, so a failure never leaves a half-written file.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name]
        size = len(tensor.data)
        numel = 1
        for dim in tensor.shape:
            numel *= dim
        if tensor.dtype not in DTYPE_SIZES or numel * DTYPE_SIZES[tensor.dtype] != size:
            raise FormatError(f"tensor {name!r}: {size} bytes do not fit {tensor.dtype} {list(tensor.shape)}")
        header[name] = {"dtype": tensor.dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "wb") as f:
            f.write(len(text).to_bytes(8, "little"))
            f.write(text)
            for name in sorted(tensors):
                f.write(tensors[name].data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
