"""GGUF: llama.cpp's one-file model format, read and checked byte by byte.

A .gguf file holds everything a model needs (architecture numbers, tokenizer, chat template and
every tensor) in four parts, all little-endian (the spec: ggml's docs/gguf.md):

    bytes 0-3      the magic "GGUF"
    bytes 4-7      the version, uint32: 2 or 3 (version 1 had 32-bit counts; 3 allows big-endian files)
    bytes 8-15     tensor_count, uint64
    bytes 16-23    metadata_kv_count, uint64
    metadata       metadata_kv_count key/value pairs: key (string), value type (uint32), value
    tensor infos   tensor_count of: name (string), n_dims (uint32), n_dims dimensions (uint64 each),
                   type (uint32, a ggml type of `microqwen.quant`), offset (uint64)
    padding        zeros up to a multiple of the alignment (`general.alignment`, 32 if absent)
    data section   each tensor's bytes at its offset from here, a multiple of the alignment

A string is its byte length (uint64) and that many bytes of UTF-8, no terminator. A value is one
of 13 types: the integers uint8 int8 uint16 int16 uint32 int32 uint64 int64, float32 and float64,
bool (one byte, 0 or 1), string, and array (element type uint32, count uint64, the elements; an
array may hold arrays). Qwen2.5's file says, for instance:

    general.architecture      string         "qwen2"
    qwen2.block_count         uint32         24
    qwen2.rope.freq_base      float32        1000000.0
    tokenizer.ggml.tokens     array[string]  151,936 tokens

A tensor's dimensions are listed fastest-varying first: `dims[0]` is the row length, so
`token_embd.weight` with dims [896, 151936] is the [151936, 896] matrix of Hugging Face. Rows are
whole blocks of the tensor's type, so one row of a Q4_K matrix of width 4864 is 19 blocks of 144
bytes.

Nothing here trusts the file: `GGUFFile` checks every count, length, type, dimension and offset
against the file's size before it reads or allocates anything, refuses what the format or llama.cpp
refuses (a duplicate key or tensor name, an unknown type, a row that is not whole blocks, an
alignment that is not a power of two), and requires the tensors to follow each other in the order
of their infos, each at the next aligned offset, with no hole, no overlap and nothing after the last
one's padding. Each `FormatError` names the file, the key or tensor, and the byte offset at fault.
Tensor bytes are then read on request with read(2): `read_rows_into` appends rows in their stored
form (the blocks) to an array, `floats` dequantises them.

`hf_name` maps llama.cpp's tensor names to Hugging Face's (`blk.3.attn_q.weight` is
`model.layers.3.self_attn.q_proj.weight`) and `hf_tensors` gives a file's tensors under those names.
"""

from __future__ import annotations

import os
import re
import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, List, Union

from . import quant
from .errors import FormatError
from .quant import GGMLType

MAGIC = b"GGUF"
VERSIONS = (2, 3)
HEADER_BYTES = 24
DEFAULT_ALIGNMENT = 32
"""The alignment of a file without `general.alignment` (the spec)."""

MAX_ALIGNMENT = 1 << 20
"""llama.cpp refuses a larger alignment (1 MiB): the padding it asks for could be anything."""

MAX_STRING_BYTES = 64 << 20
"""The longest string accepted (llama.cpp's limit, 64 MiB); a chat template is a few KB."""

MAX_ARRAY_LENGTH = 1 << 24
"""The longest metadata array accepted: 16,777,216 elements, over 100 times Qwen2.5's 151,936 tokens."""

MAX_NESTING = 8
"""Arrays of arrays nested deeper than this are refused (no real file nests at all)."""

MAX_KEY_BYTES = 65535
"""The longest metadata key the spec allows."""

MAX_NAME_BYTES = 63
"""The longest tensor name llama.cpp reads (GGML_MAX_NAME is 64 bytes with the terminating NUL)."""

MAX_DIMS = 4
"""ggml tensors have at most 4 dimensions."""

Value = Union[int, float, bool, str, List[Any]]
"""A metadata value: an int, float, bool or str, or a list of them (lists may nest)."""

_SCALARS = {
    0: ("uint8", "<B", 1), 1: ("int8", "<b", 1), 2: ("uint16", "<H", 2), 3: ("int16", "<h", 2),
    4: ("uint32", "<I", 4), 5: ("int32", "<i", 4), 6: ("float32", "<f", 4), 7: ("bool", "<B", 1),
    10: ("uint64", "<Q", 8), 11: ("int64", "<q", 8), 12: ("float64", "<d", 8),
}  # fmt: skip
"""Value type id -> (name, struct format, size) for the fixed-size types."""

STRING, ARRAY = 8, 9
_ARRAY_CODES = {"uint8": "B", "int8": "b", "uint16": "H", "int16": "h", "uint32": "I", "int32": "i",
                "float32": "f", "bool": "B", "uint64": "Q", "int64": "q", "float64": "d"}  # fmt: skip
_MIN_BYTES = {**{kind: size for kind, (_, _, size) in _SCALARS.items()}, STRING: 8, ARRAY: 12}
"""The fewest bytes a value of each type takes: what a count is checked against before a loop."""

_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Field:
    """One metadata key/value pair: the value, its GGUF type ("uint32", "array[string]"), where it is."""

    key: str
    type: str
    value: Value
    offset: int  # the byte where the key begins


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: its ggml type, its dimensions as the file lists them, its absolute byte range.

    `dims` is GGUF's order (row length first); `shape` is the row-major order of Hugging Face and
    safetensors (`dims` reversed), so `token_embd.weight` has dims (896, 151936), shape (151936, 896).
    """

    name: str
    type: GGMLType
    dims: tuple[int, ...]
    path: str
    begin: int
    info_offset: int  # where the tensor info is, in the header (for messages)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.dims))

    @property
    def dtype(self) -> str:
        """The type's name, as safetensors' `TensorInfo.dtype`: "Q4_K", "F32", ..."""
        return self.type.name

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.dims:
            count *= dim
        return count

    @property
    def row_length(self) -> int:
        """Weights per row: dims[0] (1 for a 0-dimensional tensor)."""
        return self.dims[0] if self.dims else 1

    @property
    def rows(self) -> int:
        return self.numel // self.row_length

    @property
    def row_bytes(self) -> int:
        return self.type.row_bytes(self.row_length)

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes

    @property
    def end(self) -> int:
        return self.begin + self.nbytes

    @property
    def bits_per_weight(self) -> float:
        return self.type.bits_per_weight


class GGUFFile:
    """One .gguf file, header checked, tensors readable by rows with read(2).

    ```python
    with GGUFFile("qwen2.5-0.5b-instruct-q4_k_m.gguf") as f:
        f.metadata["qwen2.block_count"]                   # 24
        info = f.tensors["blk.0.ffn_down.weight"]         # TensorInfo: Q6_K, dims (4864, 896)
        blocks = array("B")
        f.read_rows_into("blk.0.ffn_down.weight", blocks, 0, 2)   # rows 0 and 1: 2 x 19 x 210 bytes
        f.floats("blk.0.attn_norm.weight")                # array('f') of 896 weights
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
            cursor = _Cursor(self._file, path, self.file_size)
            self.version, tensor_count, kv_count = _read_header(cursor)
            self.fields = _read_metadata(cursor, kv_count)
            self.alignment = _alignment(self.fields, path)
            infos = [_read_tensor_info(cursor, self.alignment) for _ in range(tensor_count)]
            self.data_start = _align(cursor.pos, self.alignment)
            self.tensors = _place_tensors(infos, path, self.data_start, self.alignment, self.file_size)
        except BaseException:
            self._file.close()
            raise

    @property
    def metadata(self) -> dict[str, Value]:
        """key -> value for every metadata pair, in file order."""
        return {key: field.value for key, field in self.fields.items()}

    def read_rows_into(self, name: str, out: array[Any], first: int, count: int) -> None:
        """Append rows first..first+count-1 of tensor `name`, as stored, to `out`, read from the file.

        `out` receives the raw bytes: an `array('B')` for a quantised type; for F32, F16 or BF16
        an array of that element size (`'f'`, or `'H'` for the 16-bit bits) holds one weight each.
        """
        info = self.tensors[name]
        if info.row_bytes % out.itemsize or not 0 <= first <= first + count <= info.rows:
            raise ValueError(f"cannot read rows {first}..{first + count} of {name} {info.dtype} {list(info.shape)} "
                             f"into an array of {out.itemsize}-byte items")  # fmt: skip
        self._file.seek(info.begin + first * info.row_bytes)
        out.fromfile(self._file, count * info.row_bytes // out.itemsize)

    def header_bytes(self) -> bytes:
        """Bytes 0 .. data_start-1: the header, metadata and tensor infos (what identifies the file cheaply)."""
        self._file.seek(0)
        return self._file.read(self.data_start)

    def read_rows(self, name: str, first: int, count: int) -> bytes:
        """Rows first..first+count-1 of tensor `name` in their stored form (whole blocks)."""
        out = array("B")
        self.read_rows_into(name, out, first, count)
        return out.tobytes()

    def floats(self, name: str, first: int = 0, count: int | None = None) -> array[float]:
        """Rows first..first+count-1 (default: all) of tensor `name`, dequantised to float32."""
        info = self.tensors[name]
        if info.dtype not in quant.SUPPORTED:
            raise FormatError(f"{self.path}: tensor {name!r} is {info.dtype}; microqwen dequantises "
                              f"{', '.join(quant.SUPPORTED)}")  # fmt: skip
        rows = info.rows - first if count is None else count
        return quant.dequantize(info.dtype, self.read_rows(name, first, rows))

    def close(self) -> None:
        """Close the file (nothing is mapped: every read went through read(2))."""
        self._file.close()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_gguf(path: str) -> bool:
    """A file named *.gguf, or a file that starts with the GGUF magic (a directory is neither)."""
    if os.path.isdir(path):
        return False
    if path.endswith(".gguf"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


# ---------------------------------------------------------------- the header


class _Cursor:
    """Reads the header front to back through a buffer; never asks for a byte past the file's end."""

    def __init__(self, f: BinaryIO, path: str, size: int) -> None:
        self.f, self.path, self.size = f, path, size
        self.pos = 0
        self._buffer = b""
        self._start = 0  # the file offset of _buffer[0]

    def remaining(self) -> int:
        return self.size - self.pos

    def _window(self, n: int, what: str) -> int:
        """Make bytes pos..pos+n available; return where they start in the buffer."""
        if n > self.size - self.pos:
            raise FormatError(f"{self.path}: {what} at byte {self.pos} needs {n:,} bytes, but the "
                              f"{self.size:,}-byte file ends {self.size - self.pos:,} bytes later; is it truncated?")  # fmt: skip
        if self.pos + n > self._start + len(self._buffer):
            self.f.seek(self.pos)
            self._buffer, self._start = self.f.read(max(n, _READ_CHUNK)), self.pos
        return self.pos - self._start

    def unpack(self, fmt: str, size: int, what: str) -> Any:
        at = self._window(size, what)
        self.pos += size
        return struct.unpack_from(fmt, self._buffer, at)[0]

    def take(self, n: int, what: str) -> bytes:
        at = self._window(n, what)
        self.pos += n
        return self._buffer[at : at + n]

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> str:
        """A GGUF string: uint64 length, then UTF-8 bytes."""
        start = self.pos
        length = self.unpack("<Q", 8, f"{what} (its length)")
        if length > limit:
            raise FormatError(f"{self.path}: {what} at byte {start} is {length:,} bytes long, over the {limit:,}-byte limit")
        data = self.take(length, f"{what} (a {length:,}-byte string)")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"{self.path}: {what} at byte {start} is not UTF-8 (byte {start + 8 + e.start}: "
                              f"{data[e.start : e.start + 4]!r})") from None  # fmt: skip

    def strings(self, count: int, what: str) -> list[str]:
        """`count` strings in a row (a vocabulary): those wholly in the buffer are cut out in a tight loop."""
        values: list[str] = []
        unpack_from = struct.unpack_from
        for i in range(count):
            buffer, at = self._buffer, self.pos - self._start
            if at + 8 <= len(buffer):
                length = unpack_from("<Q", buffer, at)[0]
                if at + 8 + length <= len(buffer) and length <= MAX_STRING_BYTES:
                    try:
                        values.append(buffer[at + 8 : at + 8 + length].decode("utf-8"))
                        self.pos += 8 + length
                        continue
                    except UnicodeDecodeError:
                        pass  # string() below says where
            values.append(self.string(f"{what}[{i}]"))
        return values


def _read_header(cursor: _Cursor) -> tuple[int, int, int]:
    """Bytes 0-23: the magic, the version and the two counts, each checked."""
    path, size = cursor.path, cursor.size
    if size < HEADER_BYTES:
        raise FormatError(f"{path}: file is {size} bytes, too short for the {HEADER_BYTES}-byte GGUF header")
    magic = cursor.take(4, "the magic")
    if magic != MAGIC:
        raise FormatError(f"{path}: bytes 0-3 are {magic!r}, not {MAGIC!r}: not a GGUF file")
    version = cursor.unpack("<I", 4, "the version")
    if version not in VERSIONS:
        raise FormatError(f"{path}: {_version_problem(version)}")
    tensor_count = cursor.unpack("<Q", 8, "the tensor count")
    kv_count = cursor.unpack("<Q", 8, "the metadata count")
    # each key/value takes at least 14 bytes (length 8, one key byte, type 4, one value byte), a tensor info 25
    if 14 * kv_count + 25 * tensor_count > size - HEADER_BYTES:
        raise FormatError(f"{path}: {tensor_count:,} tensors (bytes 8-15) and {kv_count:,} metadata pairs "
                          f"(bytes 16-23) cannot fit in the {size:,}-byte file")  # fmt: skip
    return version, tensor_count, kv_count


def _version_problem(version: int) -> str:
    if version == 1:
        return "GGUF version 1 (bytes 4-7) is the obsolete one with 32-bit counts; microqwen reads versions 2 and 3"
    swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
    if swapped in VERSIONS:
        return f"version {version} (bytes 4-7) is version {swapped} written big-endian; microqwen reads little-endian files"
    return f"unknown GGUF version {version} (bytes 4-7); microqwen reads GGUF versions 2 and 3"


def _read_metadata(cursor: _Cursor, count: int) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for index in range(count):
        offset = cursor.pos
        key = cursor.string(f"metadata key {index}", MAX_KEY_BYTES)
        if not key or not key.isascii():
            raise FormatError(f"{cursor.path}: metadata key {index} at byte {offset} is {_shown(key)}; keys must be "
                              "non-empty ASCII")  # fmt: skip
        if key in fields:
            raise FormatError(f"{cursor.path}: metadata key {_shown(key)} at byte {offset} is a duplicate of the one "
                              f"at byte {fields[key].offset}")  # fmt: skip
        kind = cursor.unpack("<I", 4, f"the value type of {_shown(key)}")
        type_name, value = _read_value(cursor, kind, f"metadata key {_shown(key)}", 0)
        fields[key] = Field(key, type_name, value, offset)
    return fields


def _shown(text: str, limit: int = 80) -> str:
    """repr(text), cut to `limit` characters: a key may be 65,535 bytes long, an error line may not."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _read_value(cursor: _Cursor, kind: int, what: str, depth: int) -> tuple[str, Value]:
    """One value of type `kind`: (its type name, the value)."""
    if kind in _SCALARS:
        name, fmt, size = _SCALARS[kind]
        start = cursor.pos
        value = cursor.unpack(fmt, size, f"{what} ({name})")
        if name == "bool":
            if value > 1:
                raise FormatError(f"{cursor.path}: {what} at byte {start}: a bool must be 0 or 1, got {value}")
            return name, bool(value)
        return name, value
    if kind == STRING:
        return "string", cursor.string(what)
    if kind == ARRAY:
        return _read_array(cursor, what, depth + 1)
    raise FormatError(f"{cursor.path}: {what} at byte {cursor.pos - 4}: unknown value type {kind} (GGUF defines 0-12)")


def _read_array(cursor: _Cursor, what: str, depth: int) -> tuple[str, list[Any]]:
    """An array: element type, count (checked against the bytes left), then the elements."""
    start = cursor.pos
    if depth > MAX_NESTING:
        raise FormatError(f"{cursor.path}: {what} at byte {start}: arrays nested deeper than {MAX_NESTING}")
    kind = cursor.unpack("<I", 4, f"{what} (array element type)")
    count = cursor.unpack("<Q", 8, f"{what} (array length)")
    if kind not in _MIN_BYTES:
        raise FormatError(f"{cursor.path}: {what} at byte {start}: unknown array element type {kind} (GGUF defines 0-12)")
    if count > MAX_ARRAY_LENGTH:
        raise FormatError(f"{cursor.path}: {what} at byte {start}: an array of {count:,} elements, over the "
                          f"{MAX_ARRAY_LENGTH:,}-element limit")  # fmt: skip
    if count * _MIN_BYTES[kind] > cursor.remaining():
        raise FormatError(f"{cursor.path}: {what} at byte {start}: {count:,} elements cannot fit in the "
                          f"{cursor.remaining():,} bytes left of the file; is it truncated?")  # fmt: skip
    if kind in _SCALARS:
        name, _, size = _SCALARS[kind]
        items = array(_ARRAY_CODES[name])
        items.frombytes(cursor.take(count * size, f"{what} ({count:,} {name})"))
        if sys.byteorder == "big":
            items.byteswap()
        if name == "bool":
            if any(item > 1 for item in items):
                raise FormatError(f"{cursor.path}: {what} at byte {start}: an array of bool holds a value that is not 0 or 1")
            return "array[bool]", [item == 1 for item in items]
        return f"array[{name}]", items.tolist()
    if kind == STRING:
        return "array[string]", cursor.strings(count, what)
    values, element = [], "array[]"
    for i in range(count):
        element, value = _read_array(cursor, f"{what}[{i}]", depth + 1)
        values.append(value)
    return f"array[{element if count else 'array'}]", values


def _alignment(fields: dict[str, Field], path: str) -> int:
    """general.alignment: a uint32 power of two, at most 1 MiB; 32 when absent."""
    field = fields.get("general.alignment")
    if field is None:
        return DEFAULT_ALIGNMENT
    value = field.value
    if field.type != "uint32" or not isinstance(value, int) or value < 1 or value & (value - 1) or value > MAX_ALIGNMENT:
        raise FormatError(f"{path}: general.alignment at byte {field.offset} is {field.type} {value!r}; it must be "
                          f"a uint32 power of two no larger than {MAX_ALIGNMENT:,}")  # fmt: skip
    return value


def _read_tensor_info(cursor: _Cursor, alignment: int) -> TensorInfo:
    """name, n_dims, dims, type, offset: each checked on its own (the layout is checked after)."""
    path, start = cursor.path, cursor.pos
    name = cursor.string("the name of a tensor info", MAX_NAME_BYTES)
    where = f"{path}: tensor {name!r} (info at byte {start})"
    if not name:
        raise FormatError(f"{where}: a tensor name must not be empty")
    n_dims = cursor.unpack("<I", 4, f"tensor {name!r} (its number of dimensions)")
    if n_dims > MAX_DIMS:
        raise FormatError(f"{where}: {n_dims} dimensions; ggml tensors have at most {MAX_DIMS}")
    dims = tuple(cursor.unpack("<Q", 8, f"tensor {name!r} (dimension {i})") for i in range(n_dims))
    if any(dim < 1 for dim in dims):
        raise FormatError(f"{where}: dimensions {list(dims)}: each must be at least 1")
    type_id = cursor.unpack("<I", 4, f"tensor {name!r} (its type)")
    offset = cursor.unpack("<Q", 8, f"tensor {name!r} (its data offset)")
    ggml_type = quant.TYPES.get(type_id)
    if ggml_type is None:
        raise FormatError(f"{where}: unknown ggml type {type_id}")
    row_length = dims[0] if dims else 1  # a 0-dimensional tensor is one weight
    if row_length % ggml_type.block_size:
        raise FormatError(f"{where}: rows of {row_length} weights are not whole {ggml_type.name} blocks of "
                          f"{ggml_type.block_size}")  # fmt: skip
    if offset % alignment:
        raise FormatError(f"{where}: data offset {offset} is not a multiple of the alignment {alignment}")
    return TensorInfo(name, ggml_type, dims, path, offset, start)  # `begin` is relative until placed


def _align(offset: int, alignment: int) -> int:
    return offset + (-offset % alignment)


def _place_tensors(
    infos: list[TensorInfo], path: str, data_start: int, alignment: int, file_size: int
) -> dict[str, TensorInfo]:
    """Make offsets absolute and check the tensors follow each other in info order, each at the next
    aligned offset, inside the file, with at most the last one's padding after it."""
    tensors: dict[str, TensorInfo] = {}
    expected, previous = 0, "the data section's start"  # where the next tensor must begin
    for info in infos:
        where = f"{path}: tensor {info.name!r} (info at byte {info.info_offset})"
        if info.name in tensors:
            raise FormatError(f"{where}: a second tensor of this name (the first's info is at byte "
                              f"{tensors[info.name].info_offset})")  # fmt: skip
        offset = info.begin
        if offset < expected:
            raise FormatError(f"{where}: data offset {offset} overlaps {previous} (tensors follow their infos' "
                              f"order; this one must begin at {expected})")  # fmt: skip
        if offset > expected:
            raise FormatError(f"{where}: data offset {offset} leaves a hole of {offset - expected} bytes after "
                              f"{previous} (which, padded, ends at {expected})")  # fmt: skip
        placed = TensorInfo(info.name, info.type, info.dims, path, data_start + offset, info.info_offset)
        if placed.end > file_size:
            raise FormatError(f"{where}: {placed.nbytes:,} bytes at file offset {placed.begin:,} go past the end of "
                              f"the {file_size:,}-byte file; is it truncated?")  # fmt: skip
        tensors[info.name] = placed
        expected, previous = _align(offset + placed.nbytes, alignment), f"tensor {info.name!r}"
    used = data_start + expected if tensors else data_start
    if file_size > used:
        raise FormatError(f"{path}: {file_size - used:,} trailing bytes after {previous} and its padding "
                          f"(the data ends at byte {used:,}, the file at {file_size:,})")  # fmt: skip
    return tensors


# ---------------------------------------------------------------- Hugging Face names

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}  # fmt: skip
"""llama.cpp's names inside block N (`blk.N.`) -> Hugging Face's inside `model.layers.N.`."""

_LAYER = re.compile(r"blk\.(0|[1-9][0-9]*)\.(.+)")
_HF_LAYER = re.compile(r"model\.layers\.(0|[1-9][0-9]*)\.(.+)")


def hf_name(name: str) -> str | None:
    """The Hugging Face name of a Qwen2 tensor of a GGUF file, or None for a name Qwen2 has not.

    Examples:
        >>> hf_name("blk.3.attn_q.weight")
        'model.layers.3.self_attn.q_proj.weight'
        >>> hf_name("output_norm.weight")
        'model.norm.weight'
    """
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    match = _LAYER.fullmatch(name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        return None
    return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"


def gguf_name(name: str) -> str | None:
    """The other way: a Hugging Face tensor name -> llama.cpp's (None if Qwen2 has no such tensor)."""
    for gguf, hf in _GLOBAL_NAMES.items():
        if hf == name:
            return gguf
    match = _HF_LAYER.fullmatch(name)
    for gguf, hf in _LAYER_NAMES.items():
        if match is not None and match.group(2) == hf:
            return f"blk.{match.group(1)}.{gguf}"
    return None


def hf_tensors(f: GGUFFile) -> Dict[str, TensorInfo]:
    """A file's tensors by Hugging Face name; tensors Qwen2 has no name for keep their GGUF name."""
    return {hf_name(name) or name: info for name, info in f.tensors.items()}
