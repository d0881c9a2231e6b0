"""Write broken copies of a good model directory: one fault each, for the corrupted-model tests.

    python scripts/corrupt_model.py GOOD_DIR OUT_DIR [--random-flips 20 --seed 1]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("good", help="a model directory that loads")
    parser.add_argument("out", help="where to write the broken copies")
    parser.add_argument("--random-flips", type=int, default=0, help="also this many random one-bit header flips")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    made = write_variants(args.good, args.out, args.random_flips, args.seed)
    print(f"{len(made)} variants in {args.out}")


if __name__ == "__main__":
    main()
