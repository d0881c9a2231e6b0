"""Write broken copies of a good model directory or .gguf file: one fault each, for the corrupted-model tests.

    python scripts/corrupt_model.py GOOD_DIR OUT_DIR [--random-flips 20 --seed 1]
    python scripts/corrupt_model.py GOOD.gguf OUT_DIR [--random-flips 20 --seed 1]

For a model directory that loads (config.json, generation_config.json, model.safetensors, vocab.json,
merges.txt, tokenizer_config.json, and tokenizer.json if you like: as the Hub has them), writes
OUT_DIR/<variant>/ for each fault below, and OUT_DIR/variants.json listing, per variant, the
commands that must refuse it (`inspect` reads only the weights and config.json; `generate` and
`chat` also read the tokenizer and generation_config.json) and a regular expression the one-line
error must match: the file, tensor or key at fault.

The faults (the "safetensors" ones edit the raw bytes with struct and json, not with microqwen):

- model.safetensors cut off at many offsets: inside the 8-byte length, inside the header, right
  after it, inside the data, one byte short; an empty file;
- bytes of the header flipped: its first brace, a dtype, an offset digit, a tensor name (and, with
  --random-flips, that many random header bytes, whose error is not predicted);
- a header length larger than the file, and one over the 100 MB limit; trailing bytes after the data;
- a tensor with the wrong shape, a missing tensor, an extra tensor, an F32 tensor, a name twice;
- a config.json that disagrees with the weights, is not JSON, is empty, lacks a key, has a key of
  the wrong type, or is missing (inspect shows weights without a config);
- a missing tokenizer file; tokenizer files that are not JSON or have a bad merges.txt line;
- a generation_config.json with a value out of range;
- pickle weights only (pytorch_model.bin); a model.safetensors that is a dangling symlink (a Hub cache
  whose blob was deleted); a sharded index naming a missing shard.

For a .gguf file (a qwen2 model with a tokenizer, as llama.cpp writes one), writes OUT_DIR/<variant>.gguf
for each fault below and the same OUT_DIR/variants.json (the commands that must refuse each: all three,
but `inspect` for the last ones, which it shows as they are).
The bytes are edited with struct after a small parse of the layout of their own (`gguf_layout`):

- bad magic; version 1, 4, and 3 written big-endian; a tensor count and a metadata count of 2^64 - 1;
- the file cut off inside the header, the metadata, the vocabulary, the tensor infos, the data;
- a key or string length of 2^63, an array (the vocabulary) of 10^12 elements, an unknown value type,
  an unknown array element type, a bool of 2, a string that is not UTF-8, a duplicate key, an alignment
  that is not a power of two;
- a tensor with 5 dimensions, an unknown ggml type, rows that are not whole blocks, a data offset that
  is misaligned, one that overlaps the tensor before, one past the end of the file, a duplicate tensor
  name; trailing bytes after the data (and, with --random-flips, random header bits);
- tensors that do not fit the qwen2.* keys: a head count that does not divide the embedding length, an
  embedding length three times the tensors' width, a tensor missing (an ffn_up renamed);
- a file whose architecture is not qwen2, whose eos id is not a token, whose chat template (if it has
  one) is not Qwen2.5's, or with a tensor of a type microqwen does not decode (IQ3_S for a Q3_K or
  IQ4_NL for a Q4_0, of the same size, if it has one).

Standard library only, so it runs in any environment: `python scripts/corrupt_model.py` on
CPython or PyPy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

ALL = ("inspect", "generate", "chat")
RUNNERS = ("generate", "chat")  # the commands that read the tokenizer and generation_config.json
WEIGHTS = "model.safetensors"


@dataclass
class Variant:
    """One broken copy: its name, how to break a directory, who must refuse it, and how they say so."""

    name: str
    make: Callable[[str], None]
    commands: Tuple[str, ...]
    expect: Optional[str]  # a regular expression for the error line; None: any one-line error (or a result)


# --- raw safetensors bytes -----------------------------------------------------------------------


def read_raw(path: str) -> Tuple[Dict[str, Any], bytes]:
    """The header as a dict (in file order) and the data buffer."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def write_raw(path: str, header: Dict[str, Any], data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def header_end(path: str) -> int:
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def edit_bytes(path: str, edit: Callable[[bytearray], None]) -> None:
    with open(path, "rb") as f:
        blob = bytearray(f.read())
    edit(blob)
    with open(path, "wb") as f:
        f.write(blob)


def rebuild(path: str, change: Callable[[Dict[str, Tuple[str, List[int], bytes]]], None]) -> None:
    """Rewrite the file after `change` edits {name: (dtype, shape, bytes)}; offsets are recomputed."""
    header, data = read_raw(path)
    header.pop("__metadata__", None)
    tensors = {name: (e["dtype"], e["shape"], data[e["data_offsets"][0] : e["data_offsets"][1]]) for name, e in header.items()}
    change(tensors)
    new_header: Dict[str, Any] = {}
    parts, offset = [], 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        new_header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        parts.append(raw)
        offset += len(raw)
    write_raw(path, new_header, b"".join(parts))


def some_tensor(path: str, part: str) -> str:
    """The first tensor whose name contains `part`."""
    return next(name for name in sorted(read_raw(path)[0]) if part in name)


# --- the faults ----------------------------------------------------------------------------------


def truncate_at(offset: Callable[[str], int]) -> Callable[[str], None]:
    def make(directory: str) -> None:
        path = os.path.join(directory, WEIGHTS)
        with open(path, "r+b") as f:
            f.truncate(offset(path))

    return make


def flip_at(find: Callable[[bytes], int]) -> Callable[[str], None]:
    """Flip the low bit of the header byte `find(header bytes)` returns."""

    def make(directory: str) -> None:
        def edit(blob: bytearray) -> None:
            blob[find(bytes(blob[: header_end(os.path.join(directory, WEIGHTS))]))] ^= 0x01

        edit_bytes(os.path.join(directory, WEIGHTS), edit)

    return make


def set_header_length(n: int) -> Callable[[str], None]:
    def make(directory: str) -> None:
        edit_bytes(os.path.join(directory, WEIGHTS), lambda blob: blob.__setitem__(slice(0, 8), struct.pack("<Q", n)))

    return make


def append_bytes(directory: str) -> None:
    with open(os.path.join(directory, WEIGHTS), "ab") as f:
        f.write(b"\0" * 16)


def wrong_shape(directory: str) -> None:
    def change(tensors: Dict[str, Tuple[str, List[int], bytes]]) -> None:
        name = some_tensor(os.path.join(directory, WEIGHTS), "q_proj.weight")
        dtype, shape, raw = tensors[name]
        cut = len(raw) // shape[0]
        tensors[name] = (dtype, [shape[0] - 1] + shape[1:], raw[cut:])

    rebuild(os.path.join(directory, WEIGHTS), change)


def missing_tensor(directory: str) -> None:
    rebuild(os.path.join(directory, WEIGHTS), lambda tensors: tensors.pop("model.norm.weight"))


def extra_tensor(directory: str) -> None:
    rebuild(os.path.join(directory, WEIGHTS),
            lambda tensors: tensors.__setitem__("model.extra.weight", ("BF16", [4], b"\0" * 8)))  # fmt: skip


def float32_tensor(directory: str) -> None:
    def change(tensors: Dict[str, Tuple[str, List[int], bytes]]) -> None:
        _, shape, raw = tensors["model.norm.weight"]
        tensors["model.norm.weight"] = ("F32", shape, b"".join(b"\0\0" + raw[i : i + 2] for i in range(0, len(raw), 2)))

    rebuild(os.path.join(directory, WEIGHTS), change)


def duplicate_name(directory: str) -> None:
    """The header names model.norm.weight twice (JSON with a repeated key, written by hand)."""
    path = os.path.join(directory, WEIGHTS)
    header, data = read_raw(path)
    entry = json.dumps(header["model.norm.weight"])
    text = json.dumps(header)[:-1] + f', "model.norm.weight": {entry}}}'
    raw = text.encode() + b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data)


def edit_json(name: str, change: Callable[[Dict[str, Any]], None]) -> Callable[[str], None]:
    def make(directory: str) -> None:
        path = os.path.join(directory, name)
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        change(value)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(value, f)

    return make


def write_text(name: str, text: str) -> Callable[[str], None]:
    def make(directory: str) -> None:
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(text)

    return make


def remove(name: str) -> Callable[[str], None]:
    return lambda directory: os.remove(os.path.join(directory, name))


def without_tokenizer_json(make: Callable[[str], None]) -> Callable[[str], None]:
    """A fault in vocab.json or merges.txt: tokenizer.json, read first when present, is removed too."""

    def fault(directory: str) -> None:
        tokenizer_json = os.path.join(directory, "tokenizer.json")
        if os.path.exists(tokenizer_json):
            os.remove(tokenizer_json)
        make(directory)

    return fault


def pickle_only(directory: str) -> None:
    os.remove(os.path.join(directory, WEIGHTS))
    with open(os.path.join(directory, "pytorch_model.bin"), "wb") as f:
        f.write(b"\x80\x02}q\x00.")  # a pickle: never to be loaded


def dangling_link(directory: str) -> None:
    path = os.path.join(directory, WEIGHTS)
    os.remove(path)
    os.symlink("../../blobs/0123456789abcdef", path)


def missing_shard(directory: str) -> None:
    """Two shards in the index; the second, which holds model.norm.weight, is not there."""
    header, _ = read_raw(os.path.join(directory, WEIGHTS))
    missing_tensor(directory)
    os.rename(os.path.join(directory, WEIGHTS), os.path.join(directory, "model-00001-of-00002.safetensors"))
    weight_map = {name: "model-00001-of-00002.safetensors" for name in header if name != "__metadata__"}
    weight_map["model.norm.weight"] = "model-00002-of-00002.safetensors"
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


def set_key(key: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    return lambda raw: raw.__setitem__(key, value)


def variants(good: str) -> List[Variant]:
    """Every fault, for the good model directory `good` (which fixes the offsets and names)."""
    path = os.path.join(good, WEIGHTS)
    size, end = os.path.getsize(path), header_end(path)
    sf = r"model\.safetensors"
    cut = [(f"truncated-at-{offset}", offset) for offset in sorted({0, 4, 8, 9, end // 2, end - 1, end, end + 1,
                                                                    (end + size) // 2, size - 1})]  # fmt: skip
    found = [
        ("flip-first-brace", lambda h: h.index(b"{"), rf"{sf} \(header at byte 8\): line 1 column 1"),
        ("flip-dtype", lambda h: h.index(b"BF16") + 3, rf"{sf}: tensor '[^']+': unknown dtype 'BF17'"),
        ("flip-offset-digit", lambda h: h.index(b"[", h.index(b"data_offsets")) + 1, rf"{sf}: tensor '[^']+'"),
        ("flip-tensor-name", lambda h: h.index(b"model.norm") + 6, r"missing tensor model\.norm\.weight"),
    ]
    truncated = rf"{sf}: (file is \d+ bytes, too short|header length \d+ \(bytes 0-7\) goes past the end|" \
                r".*is the file truncated\?)"  # fmt: skip
    return [
        *(Variant(name, truncate_at(lambda p, o=offset: o), ALL, truncated) for name, offset in cut),
        *(Variant(name, flip_at(find), ALL, expect) for name, find, expect in found),
        Variant("header-length-past-end", set_header_length(size), ALL, rf"{sf}: header length {size} \(bytes 0-7\) goes past the end of the {size}-byte file"),
        Variant("header-length-huge", set_header_length(2**64 - 1), ALL, rf"{sf}: header length {2**64 - 1} \(bytes 0-7\) is over the 100000000-byte limit"),
        Variant("trailing-bytes", append_bytes, ALL, rf"{sf}: 16 trailing bytes after the last tensor"),
        Variant("wrong-shape", wrong_shape, ALL, r"tensor model\.layers\.0\.self_attn\.q_proj\.weight has shape \[\d+, \d+\], the config implies"),
        Variant("missing-tensor", missing_tensor, ALL, r"missing tensor model\.norm\.weight"),
        Variant("extra-tensor", extra_tensor, ALL, r"unexpected tensor model\.extra\.weight"),
        Variant("f32-tensor", float32_tensor, ALL, r"tensor model\.norm\.weight is F32; microqwen reads BF16 weights"),
        Variant("duplicate-tensor-name", duplicate_name, ALL, rf"{sf} \(header at byte 8\): .*duplicate key 'model\.norm\.weight'"),
        Variant("config-disagrees", edit_json("config.json", set_key("num_hidden_layers", 3)), ALL,
                r"the weights do not fit config\.json: missing tensor model\.layers\.2\."),
        Variant("config-not-json", write_text("config.json", '{"hidden_size": 16,'), ALL, r"config\.json: line 1 column 20: expected a string key"),
        Variant("config-empty", write_text("config.json", ""), ALL, r"config\.json: line 1 column 1: unexpected end of input"),
        Variant("config-missing-key", edit_json("config.json", lambda raw: raw.pop("hidden_size")), ALL, r"config\.json: missing key 'hidden_size'"),
        Variant("config-wrong-type", edit_json("config.json", set_key("num_attention_heads", "4")), ALL,
                r"config\.json: num_attention_heads must be a positive integer, got '4'"),
        Variant("config-missing", remove("config.json"), RUNNERS, r"config\.json: cannot read: No such file"),
        Variant("tokenizer-missing", without_tokenizer_json(remove("vocab.json")), RUNNERS, r"no tokenizer\.json, and no vocab\.json \+ merges\.txt"),
        Variant("vocab-not-json", without_tokenizer_json(write_text("vocab.json", '{"a": 0')), RUNNERS, r"vocab\.json: line 1 column 8"),
        Variant("merges-bad-line", without_tokenizer_json(write_text("merges.txt", "a b c\n")), RUNNERS, r"merges\.txt line 1: expected two tokens"),
        Variant("tokenizer-config-not-json", write_text("tokenizer_config.json", "[1, 2"), RUNNERS, r"tokenizer_config\.json: line 1 column 6"),
        Variant("generation-config-out-of-range", edit_json("generation_config.json", set_key("top_p", 7)), RUNNERS,
                r"generation_config\.json: top_p \(--top-p\) must be a finite number in \(0, 1\]"),
        Variant("empty-weights", truncate_at(lambda p: 0), ALL, rf"{sf}: file is 0 bytes, too short"),
        Variant("pickle-only", pickle_only, ALL, r"only (in )?pickle .*pytorch_model\.bin"),
        Variant("dangling-symlink", dangling_link, ALL, rf"{sf}: cannot open: No such file"),
        Variant("missing-shard", missing_shard, ALL, r"model-00002-of-00002\.safetensors: cannot open: No such file"),
    ]  # fmt: skip


def random_flips(good: str, count: int, seed: int) -> List[Variant]:
    """`count` variants with one random header byte flipped by a random bit: any one-line error."""
    rng = random.Random(seed)
    end = header_end(os.path.join(good, WEIGHTS))
    chosen = [(rng.randrange(end), 1 << rng.randrange(8)) for _ in range(count)]

    def flip(position: int, bit: int) -> Callable[[str], None]:
        return lambda d: edit_bytes(os.path.join(d, WEIGHTS), lambda blob: blob.__setitem__(position, blob[position] ^ bit))

    return [Variant(f"random-flip-{position}-bit{bit.bit_length() - 1}", flip(position, bit), (), None) for position, bit in chosen]


NEEDED = ("config.json", "generation_config.json", WEIGHTS, "vocab.json", "merges.txt", "tokenizer_config.json")
"""The files of the good directory that the variants break (a Hub model directory has them all)."""


def check_good(good: str) -> None:
    """Refuse a good directory that lacks a file some variant breaks."""
    missing = [name for name in NEEDED if not os.path.isfile(os.path.join(good, name))]
    if missing:
        raise SystemExit(f"{good}: needs {', '.join(NEEDED)}; missing {', '.join(missing)}")


def write_variants(good: str, out: str, flips: int = 0, seed: int = 1) -> List[Variant]:
    """Write every variant under `out` and `out`/variants.json; return them."""
    check_good(good)
    made = variants(good) + random_flips(good, flips, seed)
    os.makedirs(out, exist_ok=True)
    for variant in made:
        target = os.path.join(out, variant.name)
        if os.path.exists(target):
            shutil.rmtree(target)
        shutil.copytree(good, target)
        variant.make(target)
    manifest = [{"name": v.name, "commands": list(v.commands), "expect": v.expect} for v in made]
    with open(os.path.join(out, "variants.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return made


# --- GGUF files ------------------------------------------------------------------------------------

GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
"""Bytes of each fixed-size GGUF value type (ggml's docs/gguf.md); 8 is a string, 9 an array."""


@dataclass
class GGUFLayout:
    """Where the parts of a good .gguf file are: key -> (key offset, type offset, value offset, value end),
    tensor name -> (info offset, n_dims offset, type offset, data offset field offset), and the section ends."""

    kvs: Dict[str, Tuple[int, int, int, int]]
    infos: Dict[str, Tuple[int, int, int, int]]
    info_start: int
    info_end: int
    data_start: int


def _skip_value(blob: bytes, at: int, kind: int) -> int:
    if kind in GGUF_SIZES:
        return at + GGUF_SIZES[kind]
    if kind == 8:
        return at + 8 + struct.unpack_from("<Q", blob, at)[0]
    element, count = struct.unpack_from("<IQ", blob, at)
    at += 12
    for _ in range(count):
        at = _skip_value(blob, at, element)
    return at


def gguf_layout(blob: bytes) -> GGUFLayout:
    _, _, n_tensors, n_kv = struct.unpack_from("<4sIQQ", blob, 0)
    at, kvs = 24, {}
    for _ in range(n_kv):
        start, length = at, struct.unpack_from("<Q", blob, at)[0]
        key = blob[at + 8 : at + 8 + length].decode("utf-8")
        kind = struct.unpack_from("<I", blob, at + 8 + length)[0]
        value = at + 12 + length
        at = _skip_value(blob, value, kind)
        kvs[key] = (start, value - 4, value, at)
    info_start, infos = at, {}
    for _ in range(n_tensors):
        start, length = at, struct.unpack_from("<Q", blob, at)[0]
        name = blob[at + 8 : at + 8 + length].decode("utf-8")
        dims_at = at + 8 + length
        n_dims = struct.unpack_from("<I", blob, dims_at)[0]
        type_at = dims_at + 4 + 8 * n_dims
        infos[name] = (start, dims_at, type_at, type_at + 4)
        at = type_at + 12
    alignment = 32
    if "general.alignment" in kvs:
        alignment = struct.unpack_from("<I", blob, kvs["general.alignment"][2])[0]
    return GGUFLayout(kvs, infos, info_start, at, at + (-at % alignment))


GGUFEdit = Callable[[bytes, GGUFLayout], bytes]


def put(fmt: str, value: Any, where: Callable[[GGUFLayout], int]) -> GGUFEdit:
    """Overwrite the field at `where(layout)` with struct.pack(fmt, value)."""

    def edit(blob: bytes, layout: GGUFLayout) -> bytes:
        at = where(layout)
        return blob[:at] + struct.pack(fmt, value) + blob[at + struct.calcsize(fmt) :]

    return edit


def cut_at(where: Callable[[bytes, GGUFLayout], int]) -> GGUFEdit:
    return lambda blob, layout: blob[: where(blob, layout)]


def insert_alignment(value: int) -> GGUFEdit:
    """Add a general.alignment of `value` after the other keys, the header padded again before the data."""

    def edit(blob: bytes, layout: GGUFLayout) -> bytes:
        key = b"general.alignment"
        pair = struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, value)
        head = blob[:16] + struct.pack("<Q", len(layout.kvs) + 1) + blob[24 : layout.info_start] + pair
        head += blob[layout.info_start : layout.info_end]
        return head + bytes(-len(head) % 32) + blob[layout.data_start :]

    return edit


def rename(old: str, new: str, in_infos: bool) -> GGUFEdit:
    """Write `new` over the name `old` (the same length) of a tensor or a key."""

    def edit(blob: bytes, layout: GGUFLayout) -> bytes:
        at = (layout.infos if in_infos else layout.kvs)[old][0] + 8
        assert len(new) == len(old)
        return blob[:at] + new.encode() + blob[at + len(new) :]

    return edit


def tensor_field(name: str, field: int) -> Callable[[GGUFLayout], int]:
    """The offset of a tensor info's field: 1 n_dims, 2 type, 3 data offset."""
    return lambda layout: layout.infos[name][field]


def overwrite(old: bytes, new: bytes, where: Callable[[GGUFLayout], int]) -> GGUFEdit:
    """Write `new` over the first `old` (the same length) from the offset `where(layout)` on."""

    def edit(blob: bytes, layout: GGUFLayout) -> bytes:
        at = blob.index(old, where(layout))
        assert len(new) == len(old)
        return blob[:at] + new + blob[at + len(new) :]

    return edit


TWINS = {2: (20, "IQ4_NL"), 11: (21, "IQ3_S")}
"""Block types with a twin of the same block geometry that microqwen does not decode: Q4_0 and IQ4_NL
(18 bytes for 32 weights), Q3_K and IQ3_S (110 bytes for 256)."""


def uint32_value(blob: bytes, layout: GGUFLayout, key: str) -> int:
    """The uint32 value of metadata key `key`."""
    return int(struct.unpack_from("<I", blob, layout.kvs[key][2])[0])


def gguf_model_variants(blob: bytes) -> List[Tuple[str, GGUFEdit, str, Tuple[str, ...]]]:
    """Faults in a well-formed file that only running the model finds (inspect shows the file as it is):
    name, edit, expected error, the commands that refuse it."""
    layout = gguf_layout(blob)
    value_at = lambda key: (lambda lay: lay.kvs[key][2])  # noqa: E731
    variants = [
        ("not-qwen2", overwrite(b"qwen2", b"llama", value_at("general.architecture")),
         r"general.architecture is 'llama'; microqwen runs 'qwen2' files", ("generate", "chat")),
        ("eos-not-a-token", put("<I", 10**6, value_at("tokenizer.ggml.eos_token_id")),
         r"tokenizer.ggml.eos_token_id 1000000 is not one of the \d+ token ids", ("generate", "chat")),
        ("head-count-not-a-divisor", put("<I", 3, value_at("qwen2.attention.head_count")),
         r"qwen2.embedding_length \d+ is not a multiple of qwen2.attention.head_count 3", ALL),
        ("embedding-length-wrong", put("<I", 3 * uint32_value(blob, layout, "qwen2.embedding_length"), value_at("qwen2.embedding_length")),
         r"do not fit (its|the) qwen2 metadata: tensor \S+ has shape \[\d+, \d+\], the config implies", ALL),
    ]  # fmt: skip
    up = next(n for n in layout.infos if n.endswith("ffn_up.weight"))
    variants.append(("missing-tensor", rename(up, up.replace("ffn_up", "ffn_uq"), True),
                     rf"do not fit (its|the) qwen2 metadata: missing tensor model\.layers\.\d+\.mlp\.up_proj\.weight", ALL))  # fmt: skip
    if "tokenizer.chat_template" in layout.kvs:
        variants.append(("other-chat-template", overwrite(b"<|im_start|>", b"<|im_begin|>", value_at("tokenizer.chat_template")),
                         r"tokenizer.chat_template is not Qwen2.5's chat template", ("generate", "chat")))  # fmt: skip
    for name, (_, _, type_at, _) in layout.infos.items():
        kind = struct.unpack_from("<I", blob, type_at)[0]
        if kind in TWINS:
            twin, twin_name = TWINS[kind]
            variants.append(("undecodable-type", put("<I", twin, lambda lay, at=type_at: at),
                             rf"is {twin_name}; microqwen reads F32, F16, BF16", ALL))  # fmt: skip
            break
    return variants


def gguf_variants(blob: bytes) -> List[Tuple[str, GGUFEdit, str]]:
    """Every fault of the GGUF format for the good file `blob` (a qwen2 model with a tokenizer): name, edit,
    expected error. Every command refuses each."""
    layout = gguf_layout(blob)
    names = list(layout.infos)
    first, second, last = names[0], names[1], names[-1]
    block = next(n for n in names if n.endswith("attn_q.weight"))  # a quantised matrix: rows of whole blocks
    twin = block.replace("attn_q", "attn_k")
    tokens = layout.kvs["tokenizer.ggml.tokens"]
    value_at = lambda key: (lambda lay: lay.kvs[key][2])  # noqa: E731
    truncated = r"is it truncated\?|too short|cannot fit"
    cuts = {"in-header": 12, "after-header": 24, "in-first-key": 30, "in-vocabulary": (tokens[2] + tokens[3]) // 2,
            "in-tensor-infos": (layout.info_start + layout.info_end) // 2, "before-data": layout.info_end,
            "in-data": (layout.data_start + len(blob)) // 2, "one-byte-short": len(blob) - 1}  # fmt: skip
    return [
        ("bad-magic", lambda b, lay: b"GGML" + b[4:], r"bytes 0-3 are b'GGML', not b'GGUF': not a GGUF file"),
        ("version-1", put("<I", 1, lambda lay: 4), r"GGUF version 1 \(bytes 4-7\) is the obsolete one"),
        ("version-4", put("<I", 4, lambda lay: 4), r"unknown GGUF version 4 \(bytes 4-7\)"),
        ("big-endian", put(">I", 3, lambda lay: 4), r"is version 3 written big-endian"),
        ("tensor-count-huge", put("<Q", 2**64 - 1, lambda lay: 8), r"18,446,744,073,709,551,615 tensors \(bytes 8-15\)"),
        ("metadata-count-huge", put("<Q", 2**64 - 1, lambda lay: 16), r"18,446,744,073,709,551,615 metadata pairs"),
        *((f"truncated-{name}", cut_at(lambda b, lay, o=offset: o), truncated) for name, offset in cuts.items()),
        ("empty", cut_at(lambda b, lay: 0), r"file is 0 bytes, too short"),
        ("key-length-huge", put("<Q", 2**63, lambda lay: 24), r"metadata key 0 at byte 24 is 9,223,372,036,854,775,808 bytes long"),
        ("string-length-huge", put("<Q", 2**63, value_at("general.architecture")),
         r"metadata key 'general.architecture' at byte \d+ is 9,223,372,036,854,775,808 bytes long"),
        ("vocabulary-count-huge", put("<Q", 10**12, lambda lay: lay.kvs["tokenizer.ggml.tokens"][2] + 4),
         r"metadata key 'tokenizer.ggml.tokens' at byte \d+: an array of 1,000,000,000,000 elements"),
        ("unknown-value-type", put("<I", 13, lambda lay: lay.kvs["qwen2.block_count"][1]),
         r"metadata key 'qwen2.block_count' at byte \d+: unknown value type 13"),
        ("unknown-array-type", put("<I", 99, value_at("tokenizer.ggml.tokens")),
         r"metadata key 'tokenizer.ggml.tokens' at byte \d+: unknown array element type 99"),
        ("bool-of-2", put("<B", 2, value_at("tokenizer.ggml.add_bos_token")), r"add_bos_token' at byte \d+: a bool must be 0 or 1"),
        ("not-utf8", put("<B", 0xFF, lambda lay: lay.kvs["general.architecture"][2] + 8),
         r"metadata key 'general.architecture' at byte \d+ is not UTF-8"),
        ("duplicate-key", rename("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", False),
         r"metadata key 'tokenizer.ggml.eos_token_id' at byte \d+ is a duplicate of the one at byte \d+"),
        ("alignment-48", insert_alignment(48), r"general.alignment at byte \d+ is uint32 48; it must be a uint32 power of two"),
        ("five-dimensions", put("<I", 5, tensor_field(first, 1)), rf"tensor '{first}' \(info at byte \d+\): 5 dimensions"),
        ("unknown-tensor-type", put("<I", 4, tensor_field(first, 2)), rf"tensor '{first}' .*: unknown ggml type 4"),
        ("rows-not-whole-blocks", put("<Q", 33, lambda lay: lay.infos[block][1] + 4), rf"tensor '{block}' .*rows of 33 weights are not whole"),
        ("offset-misaligned", put("<Q", 1, tensor_field(second, 3)), rf"tensor '{second}' .*data offset 1 is not a multiple of the alignment 32"),
        ("offset-overlaps", put("<Q", 0, tensor_field(second, 3)), rf"tensor '{second}' .*data offset 0 overlaps tensor '{first}'"),
        ("offset-past-end", put("<Q", 2**40, tensor_field(last, 3)), rf"tensor '{last}' .*data offset 1099511627776 leaves a hole"),
        ("duplicate-tensor-name", rename(twin, block, True), rf"tensor '{block}' .*a second tensor of this name"),
        ("trailing-bytes", lambda b, lay: b + bytes(64), r"64 trailing bytes after tensor"),
    ]  # fmt: skip


def write_gguf_variants(good: str, out: str, flips: int = 0, seed: int = 1) -> List[Dict[str, Any]]:
    """Write OUT/<variant>.gguf for every GGUF fault (and `flips` random header-bit flips) and OUT/variants.json."""
    with open(good, "rb") as f:
        blob = f.read()
    layout = gguf_layout(blob)
    made = [(name, edit(blob, layout), expect, ALL) for name, edit, expect in gguf_variants(blob)]
    made += [(name, edit(blob, layout), expect, commands) for name, edit, expect, commands in gguf_model_variants(blob)]
    rng = random.Random(seed)
    for _ in range(flips):
        position, bit = rng.randrange(layout.data_start), rng.randrange(8)
        flipped = bytearray(blob)
        flipped[position] ^= 1 << bit
        made.append((f"random-flip-{position}-bit{bit}", bytes(flipped), None, ()))
    os.makedirs(out, exist_ok=True)
    manifest = []
    for name, data, expect, commands in made:
        with open(os.path.join(out, f"{name}.gguf"), "wb") as f:
            f.write(data)
        manifest.append({"name": name, "file": f"{name}.gguf", "commands": list(commands), "expect": expect})
    with open(os.path.join(out, "variants.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("good", help="a model directory that loads, or a .gguf file")
    parser.add_argument("out", help="where to write the broken copies")
    parser.add_argument("--random-flips", type=int, default=0, help="also this many random one-bit header flips")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.good.endswith(".gguf"):
        count = len(write_gguf_variants(args.good, args.out, args.random_flips, args.seed))
    else:
        count = len(write_variants(args.good, args.out, args.random_flips, args.seed))
    print(f"{count} variants in {args.out}")


if __name__ == "__main__":
    main()
