"""The GGUF reader: files written by gguf-py read back as gguf-py wrote them, and every malformed file refused.

Good files are the committed fixtures (tests/fixtures/gguf, written by gguf-py's GGUFWriter); bad
ones are built by hand with tests/gguf_bytes.py, which the first tests check reproduces GGUFWriter's
files byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import re
import pathlib
import struct
from array import array
from typing import Any

import pytest

from microqwen import quant
from microqwen.config import Config, expected_shapes, mismatches
from microqwen.errors import ConfigError, FormatError
from microqwen.gguf import MAX_ARRAY_LENGTH, GGUFFile, gguf_name, hf_name, hf_tensors
from microqwen.safetensors import SafetensorsFile

from . import gguf_bytes

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "gguf"
MODEL_FILES = sorted(p.name.replace(".reference.safetensors", ".gguf") for p in FIXTURES.glob("*.reference.safetensors")
                     if p.name != "blocks.reference.safetensors")  # fmt: skip
METADATA = json.loads((FIXTURES / "metadata.json").read_text(encoding="utf-8"))


def write(tmp_path: pathlib.Path, blob: bytes, name: str = "model.gguf") -> str:
    path = tmp_path / name
    path.write_bytes(blob)
    return str(path)


def refused(tmp_path: pathlib.Path, blob: bytes) -> str:
    """The one-line FormatError a file of these bytes gives."""
    with pytest.raises(FormatError) as caught:
        GGUFFile(write(tmp_path, blob))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "model.gguf"))
    return message


# --- files gguf-py wrote -------------------------------------------------------------------------


def test_every_metadata_type_reads_as_written() -> None:
    with GGUFFile(str(FIXTURES / "metadata.gguf")) as f:
        assert f.version == 3 and f.alignment == 64 and f.data_start == METADATA["data_offset"]
        assert list(f.fields) == list(METADATA["fields"])
        for key, expected in METADATA["fields"].items():
            assert (f.fields[key].type, f.fields[key].value) == (expected["type"], expected["value"]), key
        assert isinstance(f.metadata["test.bool.true"], bool) and f.metadata["test.uint64"] == 2**64 - 1


def test_tensor_infos_and_data_read_as_gguf_py_reads_them() -> None:
    with GGUFFile(str(FIXTURES / "metadata.gguf")) as f:
        for name, expected in METADATA["tensors"].items():
            info = f.tensors[name]
            assert (info.dtype, list(info.dims), info.begin, info.nbytes) == (
                expected["type"], expected["dims"], expected["offset"], expected["bytes"])  # fmt: skip
        assert f.tensors["a.weight"].shape == (2, 3)  # dims (3, 2): the row length first
        assert f.floats("a.weight").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert f.floats("b.weight").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def metadata_as_written() -> list[tuple[str, str, Any]]:
    return [(key, field["type"], field["value"]) for key, field in METADATA["fields"].items()]


def test_the_hand_writer_writes_gguf_pys_bytes() -> None:
    """tests/gguf_bytes.py lays a file out as GGUFWriter does, so the hand-made bad files differ only in their fault."""
    tensors = [("a.weight", 0, (3, 2), array("f", range(6)).tobytes()),
               ("b.weight", 1, (5,), struct.pack("<5e", *range(5)))]  # fmt: skip
    assert gguf_bytes.gguf_file(metadata_as_written(), tensors, alignment=64) == (FIXTURES / "metadata.gguf").read_bytes()
    with GGUFFile(str(FIXTURES / "tokenizer.gguf")) as f:
        fields = [(key, field.type, field.value) for key, field in f.fields.items()]
    assert gguf_bytes.gguf_file(fields) == (FIXTURES / "tokenizer.gguf").read_bytes()


@pytest.mark.parametrize("name", MODEL_FILES)
def test_every_tensor_dequantises_bit_for_bit_as_gguf_py(name: str) -> None:
    """The SHA-256 of gguf-py's float32 dequantisation of each tensor, recorded by the fixture script."""
    with SafetensorsFile(str(FIXTURES / name.replace(".gguf", ".reference.safetensors"))) as reference:
        digests = json.loads(reference.metadata["dequantized_sha256"])
    with GGUFFile(str(FIXTURES / name)) as f:
        assert sorted(f.tensors) == sorted(digests)
        for tensor in f.tensors:
            assert hashlib.sha256(f.floats(tensor).tobytes()).hexdigest() == digests[tensor], tensor


def test_a_version_2_file_reads_as_version_3(tmp_path: pathlib.Path) -> None:
    """Version 3 only allows big-endian files; a little-endian file is laid out the same in both."""
    blob = (FIXTURES / "metadata.gguf").read_bytes()
    with GGUFFile(str(FIXTURES / "metadata.gguf")) as f3, GGUFFile(write(tmp_path, blob[:4] + struct.pack("<I", 2) + blob[8:])) as f2:
        assert (f2.version, f3.version) == (2, 3) and f2.metadata == f3.metadata and f2.tensors.keys() == f3.tensors.keys()


def test_rows_are_read_in_their_stored_form() -> None:
    with GGUFFile(str(FIXTURES / "kquants-gqa2-untied.gguf")) as f:
        info = f.tensors["blk.2.ffn_down.weight"]  # Q4_K, dims (256, 32): 32 rows of one 144-byte block
        assert (info.dtype, info.shape, info.rows, info.row_bytes, info.bits_per_weight) == ("Q4_K", (32, 256), 32, 144, 4.5)
        rows = array("B")
        f.read_rows_into("blk.2.ffn_down.weight", rows, 3, 2)
        assert rows.tobytes() == f.read_rows("blk.2.ffn_down.weight", 0, 32)[3 * 144 : 5 * 144]
        assert f.floats("blk.2.ffn_down.weight", 3, 2) == quant.dequantize("Q4_K", rows.tobytes())
        bits = array("f")
        f.read_rows_into("output_norm.weight", bits, 0, 1)  # F32: one float each
        assert bits == f.floats("output_norm.weight")
        with pytest.raises(ValueError, match="cannot read rows 31..33"):
            f.read_rows("blk.2.ffn_down.weight", 31, 2)
        with pytest.raises(ValueError, match="4-byte items"):
            f.read_rows_into("blk.0.attn_q.weight", array("f"), 0, 1)  # Q5_0: rows of 22 bytes


def test_a_type_microqwen_cannot_decode_is_named(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, gguf_bytes.gguf_file([], [("w", 16, (256, 1), bytes(66))]))  # IQ2_XXS
    with GGUFFile(path) as f:
        assert f.tensors["w"].dtype == "IQ2_XXS"
        with pytest.raises(FormatError, match="tensor 'w' is IQ2_XXS; microqwen dequantises F32, F16, BF16, Q8_0"):
            f.floats("w")


# --- Hugging Face names and the config ------------------------------------------------------------


def test_names_map_both_ways_for_every_qwen2_tensor() -> None:
    config = Config.from_file(str(FIXTURES.parent / "models" / "gqa2-hd64-untied" / "config.json"))
    for name in expected_shapes(config):
        assert gguf_name(name) is not None and hf_name(gguf_name(name) or "") == name
    assert gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq") is None and hf_name("blk.0.attn_qkv.weight") is None
    assert hf_name("blk.01.attn_q.weight") is None  # no leading zeros: not a name llama.cpp writes


@pytest.mark.parametrize("name", MODEL_FILES)
def test_a_model_file_has_exactly_the_tensors_its_config_implies(name: str) -> None:
    with GGUFFile(str(FIXTURES / name)) as f:
        config = Config.from_gguf(f.metadata, list(f.tensors), f.path)
        assert mismatches(config, hf_tensors(f), quant.SUPPORTED) == []


def test_the_converted_model_has_the_config_of_its_safetensors_original() -> None:
    original = Config.from_file(str(FIXTURES.parent / "models" / "mha-hd16-theta1e4-tied" / "config.json"))
    with GGUFFile(str(FIXTURES / "mha-hd16-theta1e4-tied.Q8_0.gguf")) as f:
        config = Config.from_gguf(f.metadata, list(f.tensors), f.path)
    assert config.rms_norm_eps == struct.unpack("<f", struct.pack("<f", original.rms_norm_eps))[0]  # stored as float32
    assert vars(config) == dict(vars(original), rms_norm_eps=config.rms_norm_eps)


def test_the_k_quant_model_is_untied_with_shared_kv_heads() -> None:
    with GGUFFile(str(FIXTURES / "kquants-gqa2-untied.gguf")) as f:
        config = Config.from_gguf(f.metadata, list(f.tensors), f.path)
    assert (config.hidden_size, config.n_rep, config.head_dim, config.intermediate_size) == (32, 2, 16, 256)
    assert not config.tie_word_embeddings and config.eos_token_ids == (255,) and config.vocab_size == 256


QWEN2 = {"general.architecture": "qwen2", "qwen2.embedding_length": 896, "qwen2.feed_forward_length": 4864,
         "qwen2.block_count": 24, "qwen2.attention.head_count": 14, "qwen2.attention.head_count_kv": 2,
         "qwen2.context_length": 32768, "qwen2.rope.freq_base": 1e6, "qwen2.attention.layer_norm_rms_epsilon": 1e-6,
         "tokenizer.ggml.tokens": ["a"] * 151936, "tokenizer.ggml.eos_token_id": 151645}  # fmt: skip
"""Qwen2.5-0.5B's numbers (config.json), under llama.cpp's keys."""


def test_qwen25_metadata_gives_qwen25s_config() -> None:
    config = Config.from_gguf(QWEN2, ["output.weight"], "q.gguf")
    published = Config.from_file(str(FIXTURES.parent.parent / "data" / "qwen2.5-0.5b-instruct" / "config.json"))
    assert vars(config) == dict(vars(published), tie_word_embeddings=False)


@pytest.mark.parametrize("change,message", [
    ({"general.architecture": "llama"}, "general.architecture is 'llama'; microqwen runs 'qwen2' files"),
    ({"qwen2.block_count": None}, "missing key 'qwen2.block_count'"),
    ({"qwen2.attention.head_count": 2.5}, "qwen2.attention.head_count must be a positive integer, got 2.5"),
    ({"qwen2.attention.head_count_kv": 4}, "head_count 14 is not a multiple of qwen2.attention.head_count_kv 4"),
    ({"qwen2.attention.head_count": 6}, "qwen2.embedding_length 896 is not a multiple of qwen2.attention.head_count 6"),
    ({"qwen2.rope.dimension_count": 32}, "qwen2.rope.dimension_count is 32, but the head size is 64"),
    ({"qwen2.attention.key_length": 63}, "the head size 63 must be even"),
    ({"qwen2.rope.scaling.type": "yarn"}, "qwen2.rope.scaling.type 'yarn' is not supported"),
    ({"qwen2.rope.freq_base": float("inf")}, "qwen2.rope.freq_base must be a positive number"),
    ({"tokenizer.ggml.tokens": None}, "no qwen2.vocab_size, and no tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.eos_token_id": -1}, "tokenizer.ggml.eos_token_id must be a token id, got -1"),
])  # fmt: skip
def test_bad_metadata_is_a_config_error_naming_the_key(change: dict[str, Any], message: str) -> None:
    metadata = {key: value for key, value in dict(QWEN2, **change).items() if value is not None}
    with pytest.raises(ConfigError, match=r"^q\.gguf: .*" + message.replace("(", r"\(").replace(".", r"\.")):
        Config.from_gguf(metadata, [], "q.gguf")


def test_key_length_and_vocab_size_keys_are_read() -> None:
    config = Config.from_gguf(dict(QWEN2, **{"qwen2.attention.key_length": 128, "qwen2.vocab_size": 1000}), [], "q.gguf")
    assert (config.head_dim, config.q_size, config.vocab_size, config.tie_word_embeddings) == (128, 1792, 1000, True)


# --- files that are not what they claim -----------------------------------------------------------

GOOD_METADATA = [("general.architecture", "string", "qwen2"), ("general.alignment", "uint32", 32)]
GOOD_TENSORS = [("a", 0, (4,), bytes(16)), ("b", 8, (32, 2), bytes(68))]  # F32 [4], Q8_0 [2, 32]


def good(**changes: Any) -> bytes:
    return gguf_bytes.gguf_file(changes.get("metadata", GOOD_METADATA), changes.get("tensors", GOOD_TENSORS),
                                changes.get("version", 3))  # fmt: skip


def test_the_good_file_reads(tmp_path: pathlib.Path) -> None:
    with GGUFFile(write(tmp_path, good())) as f:
        assert [(t.dtype, t.shape, t.begin - f.data_start) for t in f.tensors.values()] == [("F32", (4,), 0), ("Q8_0", (2, 32), 32)]


def header(tensors: int = 0, kvs: int = 0, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


def metadata_file(*pairs: bytes) -> bytes:
    return header(0, len(pairs)) + b"".join(pairs)


def raw_kv(key: str, kind: int, body: bytes) -> bytes:
    return gguf_bytes.string(key) + struct.pack("<I", kind) + body


@pytest.mark.parametrize("blob,message", [
    (b"", "file is 0 bytes, too short for the 24-byte GGUF header"),
    (b"GGML" + bytes(20), r"bytes 0-3 are b'GGML', not b'GGUF': not a GGUF file"),
    (header(version=1), "GGUF version 1 \\(bytes 4-7\\) is the obsolete one with 32-bit counts"),
    (header(version=4), "unknown GGUF version 4 \\(bytes 4-7\\); microqwen reads GGUF versions 2 and 3"),
    (header(version=3 << 24), "version 50331648 \\(bytes 4-7\\) is version 3 written big-endian"),
    (header(tensors=2**64 - 1), "18,446,744,073,709,551,615 tensors \\(bytes 8-15\\) and 0 metadata pairs .* cannot fit"),
    (header(kvs=10**12), "1,000,000,000,000 metadata pairs \\(bytes 16-23\\) cannot fit in the 24-byte file"),
])  # fmt: skip
def test_bad_headers(tmp_path: pathlib.Path, blob: bytes, message: str) -> None:
    assert re.search(message, refused(tmp_path, blob))


@pytest.mark.parametrize("pair,message", [
    (struct.pack("<Q", 2**63) + bytes(16), "metadata key 0 at byte 24 is 9,223,372,036,854,775,808 bytes long, over the 65,535-byte limit"),
    (struct.pack("<Q", 70000) + b"k" * 70000 + struct.pack("<I", 0) + b"\0", "metadata key 0 at byte 24 is 70,000 bytes long, over the 65,535-byte limit"),
    (raw_kv("", 0, bytes(16)), "metadata key 0 at byte 24 is ''; keys must be non-empty ASCII"),
    (raw_kv("clé", 0, b"\0"), "metadata key 0 at byte 24 is 'clé'; keys must be non-empty ASCII"),
    (struct.pack("<Q", 2) + b"\xff\xfe" + struct.pack("<I", 0) + b"\0", "metadata key 0 at byte 24 is not UTF-8 \\(byte 32"),
    (raw_kv("k", 13, b"\0"), "metadata key 'k' at byte 33: unknown value type 13 \\(GGUF defines 0-12\\)"),
    (raw_kv("k", 7, b"\x02"), "metadata key 'k' at byte 37: a bool must be 0 or 1, got 2"),
    (raw_kv("k", 8, struct.pack("<Q", 2**63)), "metadata key 'k' at byte 37 is 9,223,372,036,854,775,808 bytes long, over the 67,108,864-byte limit"),
    (raw_kv("k", 8, struct.pack("<Q", 2**20)), "metadata key 'k' \\(a 1,048,576-byte string\\) at byte 45 needs 1,048,576 bytes, but the 45-byte file ends 0 bytes later; is it truncated\\?"),
    (raw_kv("k", 8, struct.pack("<Q", 100) + b"abc"), "metadata key 'k' \\(a 100-byte string\\) at byte 45 needs 100 bytes, but the 48-byte file ends 3 bytes later"),
    (raw_kv("k", 8, struct.pack("<Q", 1) + b"\x80"), "metadata key 'k' at byte 37 is not UTF-8 \\(byte 45: b'\\\\x80'\\)"),
    (raw_kv("k", 9, struct.pack("<IQ", 0, 10**12)), "metadata key 'k' at byte 37: an array of 1,000,000,000,000 elements, over the 16,777,216-element limit"),
    (raw_kv("k", 9, struct.pack("<IQ", 8, 1000)), "metadata key 'k' at byte 37: 1,000 elements cannot fit in the 0 bytes left of the file"),
    (raw_kv("k", 9, struct.pack("<IQ", 99, 1)), "metadata key 'k' at byte 37: unknown array element type 99"),
    (raw_kv("k", 9, struct.pack("<IQ", 7, 2) + b"\x01\x05"), "metadata key 'k' at byte 37: an array of bool holds a value that is not 0 or 1"),
    (raw_kv("k", 9, struct.pack("<IQ", 9, 1) * 9 + struct.pack("<IQ", 0, 0)), "metadata key 'k'\\[0\\]\\[0\\].* at byte 133: arrays nested deeper than 8"),
    (raw_kv("k", 9, struct.pack("<IQ", 8, 2) + gguf_bytes.string("a") + struct.pack("<Q", 2) + b"\xc3("), "metadata key 'k'\\[1\\] at byte 58 is not UTF-8 \\(byte 66: b'\\\\xc3\\('"),
])  # fmt: skip
def test_bad_metadata_values(tmp_path: pathlib.Path, pair: bytes, message: str) -> None:
    assert re.search(message, refused(tmp_path, metadata_file(pair)))


def test_a_duplicate_key_names_both_places(tmp_path: pathlib.Path) -> None:
    blob = metadata_file(gguf_bytes.key_value("a.b", "uint8", 1), gguf_bytes.key_value("a.b", "uint8", 2))
    assert refused(tmp_path, blob).endswith("metadata key 'a.b' at byte 40 is a duplicate of the one at byte 24")


@pytest.mark.parametrize("kind,value", [("uint32", 48), ("uint32", 0), ("uint32", 1 << 21), ("uint64", 32), ("int32", 32)])
def test_bad_alignments(tmp_path: pathlib.Path, kind: str, value: int) -> None:
    blob = gguf_bytes.gguf_file([("general.alignment", kind, value)])
    assert f"general.alignment at byte 24 is {kind} {value}; it must be a uint32 power of two" in refused(tmp_path, blob)


def tensor_file(*infos: bytes, data: bytes = b"", alignment: int = 32) -> bytes:
    head = header(len(infos), 0) + b"".join(infos)
    return gguf_bytes.pad(head, alignment) + data


def info(name: str = "w", ggml_type: int = 0, dims: tuple[int, ...] = (4,), offset: int = 0) -> bytes:
    return gguf_bytes.tensor_info(name, ggml_type, dims, offset)


@pytest.mark.parametrize("blob,message", [
    (tensor_file(info(name="")), "tensor '' \\(info at byte 24\\): a tensor name must not be empty"),
    (tensor_file(info(name="x" * 64)), "the name of a tensor info at byte 24 is 64 bytes long, over the 63-byte limit"),
    (tensor_file(info(dims=(1, 1, 1, 1, 1))), "tensor 'w' \\(info at byte 24\\): 5 dimensions; ggml tensors have at most 4"),
    (tensor_file(info(dims=(4, 0))), "dimensions \\[4, 0\\]: each must be at least 1"),
    (tensor_file(info(ggml_type=4)), "tensor 'w' \\(info at byte 24\\): unknown ggml type 4"),
    (tensor_file(info(ggml_type=12, dims=(255,))), "rows of 255 weights are not whole Q4_K blocks of 256"),
    (tensor_file(info(offset=16), data=bytes(48)), "data offset 16 is not a multiple of the alignment 32"),
    (tensor_file(info(dims=(2**62, 2**62)), data=bytes(32)), "tensor 'w' \\(info at byte 24\\): 85,070,591,730,234,615,865,843,651,857,942,052,864 bytes at file offset 96 go past the end of the 128-byte file; is it truncated\\?"),
    (tensor_file(info(offset=32), data=bytes(64)), "data offset 32 leaves a hole of 32 bytes after the data section's start"),
    (tensor_file(info("a"), info("b", offset=0), data=bytes(64)), "tensor 'b' \\(info at byte 57\\): data offset 0 overlaps tensor 'a'"),
    (tensor_file(info("a", dims=(16,)), info("b", offset=32), data=bytes(64)), "tensor 'b' .*: data offset 32 overlaps tensor 'a' .*must begin at 64"),
    (tensor_file(info("a"), info("a", offset=32), data=bytes(64)), "tensor 'a' \\(info at byte 57\\): a second tensor of this name \\(the first's info is at byte 24\\)"),
    (tensor_file(info(), data=bytes(33)), "1 trailing bytes after tensor 'w' and its padding \\(the data ends at byte 96, the file at 97\\)"),
    (header(0, 0) + bytes(40), "32 trailing bytes after the data section's start and its padding"),
])  # fmt: skip
def test_bad_tensor_infos_and_layouts(tmp_path: pathlib.Path, blob: bytes, message: str) -> None:
    assert re.search(message, refused(tmp_path, blob))


def test_a_file_cut_anywhere_says_where(tmp_path: pathlib.Path) -> None:
    blob = (FIXTURES / "kquants-gqa2-untied.gguf").read_bytes()
    for end in sorted({5, 23, 24, 30, 100, 1000, 5000, 7903, 7904, 8000, len(blob) // 2, len(blob) - 1}):
        message = refused(tmp_path, blob[:end])
        assert "truncated" in message or "too short" in message or "cannot fit" in message, (end, message)


def test_a_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FormatError, match="nope.gguf: cannot open: No such file"):
        GGUFFile(str(tmp_path / "nope.gguf"))


def test_an_array_at_the_limit_is_read(tmp_path: pathlib.Path) -> None:
    """The limit itself is no problem: only a count the bytes cannot hold, or a longer one, is refused."""
    blob = metadata_file(raw_kv("k", 9, struct.pack("<IQ", 0, 1 << 16) + bytes(1 << 16)))
    with GGUFFile(write(tmp_path, gguf_bytes.pad(blob, 32))) as f:
        value = f.metadata["k"]
        assert f.fields["k"].type == "array[uint8]" and isinstance(value, list) and len(value) == 1 << 16 < MAX_ARRAY_LENGTH


def test_check_tensors_names_the_gguf_metadata() -> None:
    from microqwen.config import check_tensors

    with GGUFFile(str(FIXTURES / "kquants-gqa2-untied.gguf")) as f:
        config = Config.from_gguf(f.metadata, list(f.tensors), f.path)
        tensors = hf_tensors(f)
    check_tensors(config, tensors, "k.gguf", quant.SUPPORTED, "its qwen2 metadata")
    with pytest.raises(ConfigError, match="tensor model.layers.0.mlp.down_proj.weight is Q2_K; microqwen reads BF16 weights"):
        check_tensors(config, tensors, "k.gguf")  # the default: what safetensors files hold
    del tensors["model.norm.weight"]
    with pytest.raises(ConfigError, match=r"^k\.gguf: the weights do not fit its qwen2 metadata: missing tensor model\.norm\.weight"):
        check_tensors(config, tensors, "k.gguf", quant.SUPPORTED, "its qwen2 metadata")
