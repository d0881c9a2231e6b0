"""Build .safetensors bytes by hand (struct + json), independently of microqwen's writer."""

from __future__ import annotations

import json
import struct
from typing import Any


def header_and_data(entries: dict[str, Any], data: bytes, pad: bool = True) -> bytes:
    """8-byte little-endian length, the JSON header (space-padded to 8), then `data`."""
    header = json.dumps(entries).encode()
    if pad:
        header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def two_tensors() -> tuple[dict[str, Any], bytes]:
    """A small valid layout: a [2, 3] BF16 tensor, then a [4] F32 tensor, and metadata."""
    a = struct.pack("<6H", 0x3F80, 0x4000, 0x4040, 0x4080, 0x40A0, 0x40C0)  # 1..6 in bf16
    b = struct.pack("<4f", 0.5, -1.0, 2.0, 8.0)
    entries = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [12, 28]},
    }
    return entries, a + b
