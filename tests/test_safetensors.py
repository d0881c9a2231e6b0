"""Reading, checking and writing safetensors files; every bad input names its fault."""

from __future__ import annotations

import json
import os
import pathlib
import struct
from typing import Any, Callable

import pytest

from microqwen import bf16
from microqwen.errors import FormatError
from microqwen.safetensors import MAX_HEADER_BYTES, SafetensorsFile, TensorData, open_checkpoint, write

from .safetensors_bytes import header_and_data, two_tensors


def save(tmp_path: pathlib.Path, content: bytes, name: str = "model.safetensors") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def test_reads_header_offsets_and_bytes(tmp_path: pathlib.Path) -> None:
    entries, data = two_tensors()
    content = header_and_data(entries, data)
    path = save(tmp_path, content)
    header_size = struct.unpack("<Q", content[:8])[0]
    with SafetensorsFile(path) as f:
        assert f.header_size == header_size and header_size % 8 == 0
        assert f.metadata == {"format": "pt"}
        a, b = f.tensors["a"], f.tensors["b"]
        assert (a.dtype, a.shape, a.begin, a.end) == ("BF16", (2, 3), 8 + header_size, 8 + header_size + 12)
        assert (b.dtype, b.shape, b.numel, b.nbytes) == ("F32", (4,), 4, 16)
        view = f.data("a")
        assert list(bf16.to_floats(view)) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        assert struct.unpack("<4f", f.data("b")) == (0.5, -1.0, 2.0, 8.0)
        view.release()


def test_unpadded_header_and_zero_size_tensors_are_fine(tmp_path: pathlib.Path) -> None:
    entries = {
        "empty": {"dtype": "F32", "shape": [0, 5], "data_offsets": [0, 0]},
        "x": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
        "scalar": {"dtype": "I32", "shape": [], "data_offsets": [3, 7]},
    }
    with SafetensorsFile(save(tmp_path, header_and_data(entries, b"abc\x01\x00\x00\x00", pad=False))) as f:
        assert bytes(f.data("x")) == b"abc" and f.tensors["scalar"].numel == 1


def corrupt(change: Callable[[dict[str, Any]], None]) -> bytes:
    entries, data = two_tensors()
    change(entries)
    return header_and_data(entries, data)


BAD_FILES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "file is 0 bytes, too short for the 8-byte header length"),
    ("short", b"\x05\x00\x00", "file is 3 bytes"),
    ("header past end", struct.pack("<Q", 1000) + b"{}", r"header length 1000 \(bytes 0-7\) goes past the end of the 10-byte file"),
    ("huge header", struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", rf"header length {MAX_HEADER_BYTES + 1} \(bytes 0-7\) is over"),
    ("not json", struct.pack("<Q", 4) + b"{abc", "header at byte 8.*line 1 column 2: expected a string key"),
    ("not an object", struct.pack("<Q", 2) + b"[]", "header at byte 8 is a JSON list, not an object"),
    ("not utf-8", struct.pack("<Q", 4) + b'"\xff"x', "byte 1 is not valid UTF-8"),
    ("duplicate", struct.pack("<Q", 109) + b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
     b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}xy', "duplicate key 'a'"),
    ("unknown dtype", corrupt(lambda e: e["a"].update(dtype="BF17")), "tensor 'a': unknown dtype 'BF17'"),
    ("bad shape", corrupt(lambda e: e["a"].update(shape=[2, -3])), r"tensor 'a': shape \[2, -3\] is not a list"),
    ("bool in shape", corrupt(lambda e: e["a"].update(shape=[True, 6])), "is not a list of non-negative integers"),
    ("missing key", corrupt(lambda e: e["b"].pop("dtype")), "tensor 'b': entry must be an object with the keys"),
    ("bad offsets", corrupt(lambda e: e["b"].update(data_offsets=[28, 12])), r"data_offsets \[28, 12\] must be"),
    ("size mismatch", corrupt(lambda e: e["a"].update(shape=[3, 3])), r"tensor 'a': shape \[3, 3\] x 2 bytes \(BF16\) = 18 bytes, but data_offsets \[0, 12\] span 12"),
    ("overlap", corrupt(lambda e: e["b"].update(data_offsets=[8, 24])), r"tensor 'b' data_offsets \[8, 24\] overlaps tensor 'a' \(which ends at 12\)"),
    ("hole", corrupt(lambda e: e["b"].update(data_offsets=[16, 32])), r"hole of 4 bytes in the data buffer between tensor 'a' \(ends at 12\) and tensor 'b'"),
    ("past end", corrupt(lambda e: (e["b"].update(data_offsets=[12, 36], shape=[6]))), r"tensor 'b' data_offsets \[12, 36\] go past the end of the 28-byte data buffer"),
    ("metadata", corrupt(lambda e: e["__metadata__"].update(n=1)), "__metadata__ must map strings to strings"),
]


@pytest.mark.parametrize("content, message", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_files_are_refused_with_the_fault_named(tmp_path: pathlib.Path, content: bytes, message: str) -> None:
    path = save(tmp_path, content)
    with pytest.raises(FormatError, match=message) as error:
        SafetensorsFile(path)
    assert str(error.value).startswith(path)


def test_trailing_bytes_are_refused(tmp_path: pathlib.Path) -> None:
    entries, data = two_tensors()
    path = save(tmp_path, header_and_data(entries, data + b"\x00\x00\x00"))
    with pytest.raises(FormatError, match="3 trailing bytes after the last tensor"):
        SafetensorsFile(path)


@pytest.mark.parametrize("cut", [8, 20, 100, -1, -17])
def test_truncated_files_are_refused(tmp_path: pathlib.Path, cut: int) -> None:
    entries, data = two_tensors()
    path = save(tmp_path, header_and_data(entries, data)[:cut])
    with pytest.raises(FormatError, match="goes past the end|go past the end|not valid|unterminated|expected"):
        SafetensorsFile(path)


def test_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FormatError, match="x.safetensors: cannot open"):
        SafetensorsFile(str(tmp_path / "x.safetensors"))


def test_writer_round_trips_and_pads_the_header(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "w.safetensors")
    tensors = {
        "z.weight": TensorData("BF16", (2, 2), bf16.from_floats([1.0, -2.0, 0.5, 3.0])),
        "a.bias": TensorData("F32", (1,), struct.pack("<f", 7.0)),
    }
    write(path, tensors, {"format": "pt"})
    raw = pathlib.Path(path).read_bytes()
    header_size = struct.unpack("<Q", raw[:8])[0]
    assert header_size % 8 == 0 and raw[8 + header_size - 1 : 8 + header_size].strip() in (b"}", b"")
    assert list(json.loads(raw[8 : 8 + header_size])) == ["__metadata__", "a.bias", "z.weight"]  # name order
    with SafetensorsFile(path) as f:
        assert list(bf16.to_floats(f.data("z.weight"))) == [1.0, -2.0, 0.5, 3.0]
        assert f.tensors["a.bias"].begin == 8 + header_size
        assert f.metadata == {"format": "pt"}


def test_writer_refuses_wrong_sizes_and_leaves_no_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "w.safetensors"
    with pytest.raises(FormatError, match="tensor 'x': 3 bytes do not fit BF16 \\[2\\]"):
        write(str(path), {"x": TensorData("BF16", (2,), b"abc")})
    assert os.listdir(tmp_path) == []


def write_shards(tmp_path: pathlib.Path, index: dict[str, str]) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    write(str(tmp_path / "part-1.safetensors"), {"a": TensorData("U8", (1,), b"A"), "b": TensorData("U8", (1,), b"B")})
    write(str(tmp_path / "part-2.safetensors"), {"c": TensorData("U8", (2,), b"CC")})


def test_sharded_checkpoint_reads_as_one(tmp_path: pathlib.Path) -> None:
    write_shards(tmp_path, {"a": "part-1.safetensors", "b": "part-1.safetensors", "c": "part-2.safetensors"})
    with open_checkpoint(str(tmp_path)) as checkpoint:
        assert sorted(checkpoint.tensors) == ["a", "b", "c"]
        assert bytes(checkpoint.data("c")) == b"CC" and bytes(checkpoint.data("a")) == b"A"
        assert checkpoint.tensors["c"].path.endswith("part-2.safetensors")


def test_shard_missing_a_tensor_of_the_index(tmp_path: pathlib.Path) -> None:
    write_shards(tmp_path, {"a": "part-1.safetensors", "b": "part-1.safetensors", "c": "part-2.safetensors", "d": "part-2.safetensors"})
    with pytest.raises(FormatError, match=r"part-2.safetensors: tensors \['d'\] are missing"):
        open_checkpoint(str(tmp_path))


def test_shard_with_a_tensor_not_in_the_index(tmp_path: pathlib.Path) -> None:
    write_shards(tmp_path, {"a": "part-1.safetensors", "c": "part-2.safetensors"})
    with pytest.raises(FormatError, match=r"part-1.safetensors: tensors \['b'\] are not in the index"):
        open_checkpoint(str(tmp_path))


def test_index_naming_a_path_outside_the_directory(tmp_path: pathlib.Path) -> None:
    write_shards(tmp_path, {"a": "../part-1.safetensors"})
    with pytest.raises(FormatError, match="is not a plain file name"):
        open_checkpoint(str(tmp_path))


def test_pickle_only_directory_is_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(FormatError, match="only pickle weights \\(pytorch_model.bin\\).*never unpickles"):
        open_checkpoint(str(tmp_path))


def test_empty_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FormatError, match="no model.safetensors or model.safetensors.index.json"):
        open_checkpoint(str(tmp_path))


def test_read_into_reads_elements_through_the_file(tmp_path: pathlib.Path) -> None:
    from array import array

    entries, data = two_tensors()
    with SafetensorsFile(save(tmp_path, header_and_data(entries, data))) as f:
        bits = array("H")
        f.read_into("a", bits, 2, 3)  # elements 2, 3, 4 of [1, 2, 3, 4, 5, 6] in bf16
        assert [bf16.bits_to_float(b) for b in bits] == [3.0, 4.0, 5.0]
        with pytest.raises(ValueError, match="cannot read elements 4..7 of a BF16"):
            f.read_into("a", bits, 4, 3)
        with pytest.raises(ValueError, match="cannot read"):
            f.read_into("b", bits, 0, 1)  # F32 into 2-byte items
