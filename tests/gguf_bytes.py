"""Build .gguf bytes by hand (struct), independently of microqwen's reader, following ggml's docs/gguf.md.

Laid out as gguf-py's GGUFWriter lays a file out (metadata in the order given, tensor infos, zero
padding to the alignment, each tensor padded to it), which tests/test_gguf.py checks byte for byte
against the committed files that GGUFWriter wrote. Types are written as the reader names them:
"uint32", "string", "array[string]", "array[array[int32]]".

>>> blob = gguf_file([("general.architecture", "string", "qwen2")], [("a", 0, (2,), bytes(8))])
>>> blob[:4], len(blob) % 32
(b'GGUF', 0)
"""

from __future__ import annotations

import struct
from typing import Any, Sequence, Tuple

SCALARS = {"uint8": (0, "<B"), "int8": (1, "<b"), "uint16": (2, "<H"), "int16": (3, "<h"), "uint32": (4, "<I"),
           "int32": (5, "<i"), "float32": (6, "<f"), "bool": (7, "<?"), "uint64": (10, "<Q"), "int64": (11, "<q"),
           "float64": (12, "<d")}  # fmt: skip
STRING, ARRAY = 8, 9

Metadata = Sequence[Tuple[str, str, Any]]
Tensors = Sequence[Tuple[str, int, Tuple[int, ...], bytes]]
"""(name, ggml type id, dims with the row length first, the stored bytes)."""


def string(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def type_id(kind: str) -> int:
    if kind in SCALARS:
        return SCALARS[kind][0]
    return STRING if kind == "string" else ARRAY


def value(kind: str, item: Any) -> bytes:
    """The bytes of one value (without its type)."""
    if kind in SCALARS:
        return struct.pack(SCALARS[kind][1], item)
    if kind == "string":
        return string(item)
    inner = kind[len("array[") : -1]
    return struct.pack("<IQ", type_id(inner), len(item)) + b"".join(value(inner, element) for element in item)


def key_value(key: str, kind: str, item: Any) -> bytes:
    return string(key) + struct.pack("<I", type_id(kind)) + value(kind, item)


def tensor_info(name: str, ggml_type: int, dims: Sequence[int], offset: int) -> bytes:
    return string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack(
        "<IQ", ggml_type, offset)  # fmt: skip


def pad(data: bytes, alignment: int) -> bytes:
    return data + bytes(-len(data) % alignment)


def gguf_file(metadata: Metadata, tensors: Tensors = (), version: int = 3, alignment: int = 32) -> bytes:
    """A whole file: header, metadata, tensor infos, padding, each tensor's bytes padded to the alignment."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata))
    head += b"".join(key_value(key, kind, item) for key, kind, item in metadata)
    offset, infos, data = 0, b"", b""
    for name, ggml_type, dims, raw in tensors:
        infos += tensor_info(name, ggml_type, dims, offset)
        data += pad(raw, alignment)
        offset += len(pad(raw, alignment))
    return pad(head + infos, alignment) + data
