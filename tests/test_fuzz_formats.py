"""Fuzzing every reader of outside data: a result or a `MicroQwenError`, never a crash.

The targets, each with generated inputs (see tests/fuzzing.py for the quick and long profiles):

- the JSON parser: any text, any bytes, deep nesting, numbers of any size;
- the safetensors header reader: random headers, and a valid file with bytes flipped, cut off or
  inserted;
- config.json and generation_config.json: every key given any JSON value;
- the tokenizer files: tokenizer.json, vocab.json, merges.txt and tokenizer_config.json with a
  random part of them replaced, dropped or added to, then loaded and used;
- the chat messages: `apply_chat_template` with any list, dict or other value as messages and tools;
- the GGUF reader: random metadata and tensor infos of every type (hand-built with tests/gguf_bytes.py),
  and a good model file with bytes flipped, cut off or inserted, then read and dequantised; the
  qwen2.* config and the tokenizer.* metadata with any value for any key.

The inputs that once crashed a reader are in tests/fuzz_corpus/ (test_fuzz_corpus.py replays them).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import struct
import tempfile
from typing import Any, Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from microqwen import jsonparse
from microqwen import quant
from microqwen.config import Config, expected_shapes
from microqwen.errors import ConfigError, FormatError, MicroQwenError, UsageError
from microqwen.gguf import GGUFFile
from microqwen.safetensors import DTYPE_SIZES, SafetensorsFile, open_checkpoint
from microqwen.sampling import SamplingParams, read_eos_token_ids
from microqwen.tokenizer import Tokenizer

from . import gguf_bytes, qwen_vocab
from .fuzzing import fuzz, outcome
from .tiny_model import TINY_CONFIG, write_tiny_model

# --- values of every JSON kind, and edits of a parsed document ------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "BF16", "F32", "qwen2", "silu", "<|im_end|>", "Ġ", "a b", "0", "-1"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def paths_in(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (a tuple of keys and indexes) to a node of a parsed JSON document."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_in(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value[:50]):  # a vocabulary's 256 entries need not all be targets
            yield from paths_in(item, prefix + (index,))


def mutate(document: Any, data: st.DataObject, edits: int = 3) -> Any:
    """A copy of `document` with a few random nodes replaced, removed, or given a new key or item."""
    document = json.loads(json.dumps(document))
    for _ in range(data.draw(st.integers(1, edits), label="edits")):
        path = data.draw(st.sampled_from(list(paths_in(document))), label="path")
        kind = data.draw(st.sampled_from(["replace", "remove", "add"]), label="edit")
        new = data.draw(json_values, label="value")
        if not path:
            document = new
            continue
        *parent_path, last = path
        parent = document
        for key in parent_path:
            parent = parent[key]
        if kind == "replace":
            parent[last] = new
        elif kind == "remove":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][data.draw(st.text(max_size=8), label="key")] = new
        elif isinstance(parent[last], list):
            parent[last].insert(data.draw(st.integers(0, len(parent[last])), label="at"), new)
        else:
            parent[last] = new
    return document


@pytest.fixture()
def scratch() -> Iterator[pathlib.Path]:
    """A directory emptied before each generated example (tmp_path is shared by all of them)."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="microqwen-fuzz-"))
    yield directory
    shutil.rmtree(directory)


def fresh(directory: pathlib.Path) -> pathlib.Path:
    for entry in directory.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return directory


# --- JSON -----------------------------------------------------------------------------------------


@fuzz(quick=400, long=20_000)
@given(st.text())
def test_json_any_text(text: str) -> None:
    outcome(lambda: jsonparse.parse(text, "fuzz.json"))


@fuzz(quick=200, long=10_000)
@given(st.binary())
@example(b"\xef\xbb\xbf")
@example(b'"\xed\xa0\x80"')  # a surrogate written in UTF-8 (CESU-8), which Python refuses to decode
def test_json_any_bytes(data: bytes) -> None:
    outcome(lambda: jsonparse.parse_bytes(data, "fuzz.json"))


json_tokens = st.lists(
    st.sampled_from(['{', '}', '[', ']', ',', ':', '"k"', '"', '1', '-0.5e3', 'true', 'null', ' ', '\\u', '"\\ud800"']),
    max_size=40,
)


@fuzz(quick=300, long=20_000)
@given(json_tokens)
def test_json_token_soup(tokens: list[str]) -> None:
    outcome(lambda: jsonparse.parse("".join(tokens), "fuzz.json"))


@fuzz(quick=60, long=2_000)
@given(st.integers(1, 200_000), st.sampled_from(["[", "{\"a\":", "[{\"k\": ["]), st.booleans())
def test_json_deep_nesting(depth: int, opener: str, closed: bool) -> None:
    closer = {"[": "]", "{\"a\":": "}", "[{\"k\": [": "]}]"}[opener]
    text = opener * depth + ("0" + closer * depth if closed else "")
    result = outcome(lambda: jsonparse.parse(text, "deep.json"))
    nesting = depth * (2 if opener.startswith("[{") else 1)
    if nesting > jsonparse.MAX_DEPTH or not closed:
        assert isinstance(result, FormatError)


@fuzz(quick=200, long=10_000)
@given(st.from_regex(r"\A-?(0|[1-9][0-9]{0,6000})(\.[0-9]{1,400})?([eE][-+]?[0-9]{1,40})?\Z"))
@example("1" + "0" * 5000)  # past CPython's 4300-digit limit for int()
@example("1e99999999999999999999")  # past the float range: inf, as json gives
@example("-1e-99999999999999999999")
def test_json_numbers_of_any_size(literal: str) -> None:
    result = outcome(lambda: jsonparse.parse(literal, "number.json"))
    if not isinstance(result, MicroQwenError):
        assert isinstance(result, (int, float))


# --- safetensors ----------------------------------------------------------------------------------

entries = st.fixed_dictionaries(
    {},
    optional={
        "dtype": st.sampled_from(sorted(DTYPE_SIZES) + ["bf16", "F128", ""]) | json_values,
        "shape": st.lists(st.integers(-2, 8), max_size=3) | json_values,
        "data_offsets": st.lists(st.integers(-4, 80), min_size=2, max_size=2) | json_values,
    },
)
headers = st.dictionaries(st.text(max_size=6), entries | json_values, max_size=5)


def header_file(path: pathlib.Path, header: Any, data: bytes, declared: int | None = None) -> None:
    text = json.dumps(header).encode()
    n = len(text) if declared is None else declared
    path.write_bytes(n.to_bytes(8, "little", signed=False) + text + data)


@fuzz(quick=300, long=10_000)
@given(headers, st.binary(max_size=96), st.none() | st.integers(0, 2**64 - 1))
def test_safetensors_random_headers(scratch: pathlib.Path, header: Any, data: bytes, declared: int | None) -> None:
    path = fresh(scratch) / "model.safetensors"
    header_file(path, header, data, declared)
    result = outcome(lambda: SafetensorsFile(str(path)))
    if isinstance(result, SafetensorsFile):
        with result:
            covered = sum(info.nbytes for info in result.tensors.values())
            assert 8 + result.header_size + covered == result.file_size
            for name in result.tensors:
                assert len(result.data(name)) == result.tensors[name].nbytes


@pytest.fixture(scope="module")
def good_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a tiny model's model.safetensors (its header is about 2 KB, its data 8 KB)."""
    directory = write_tiny_model(tmp_path_factory.mktemp("good") / "model", seed=3, vocab_size=64)
    return (directory / "model.safetensors").read_bytes()


def edited(data: bytes, draw: st.DataObject, header_size: int) -> bytes:
    """`data` with bytes flipped, cut off or inserted, mostly in the 8-byte length and the header."""
    out = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4), label="edits")):
        in_header = draw.draw(st.booleans(), label="in header")
        position = draw.draw(st.integers(0, min(len(out), 8 + header_size if in_header else len(out))), label="at")
        kind = draw.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]), label="edit")
        if kind == "flip" and position < len(out):
            out[position] ^= 1 << draw.draw(st.integers(0, 7), label="bit")
        elif kind == "set" and position < len(out):
            out[position] = draw.draw(st.sampled_from(b'{}[]",:0129 \x00\xffe-'), label="byte")
        elif kind == "truncate":
            del out[position:]
        elif kind == "insert":
            out[position:position] = draw.draw(st.binary(min_size=1, max_size=9), label="bytes")
        elif kind == "delete":
            del out[position : position + draw.draw(st.integers(1, 9), label="length")]
    return bytes(out)


@fuzz(quick=300, long=10_000)
@given(st.data())
def test_safetensors_edited_files(scratch: pathlib.Path, good_model: bytes, data: st.DataObject) -> None:
    path = fresh(scratch) / "model.safetensors"
    path.write_bytes(edited(good_model, data, int.from_bytes(good_model[:8], "little")))
    result = outcome(lambda: open_checkpoint(str(path)))
    if not isinstance(result, MicroQwenError):
        with result:
            assert sum(info.nbytes for info in result.tensors.values()) <= path.stat().st_size


@fuzz(quick=100, long=3_000)
@given(st.data())
def test_a_model_with_an_edited_weights_file_loads_or_says_why(
    scratch: pathlib.Path, good_model: bytes, data: st.DataObject
) -> None:
    from microqwen.model import load

    directory = fresh(scratch)
    (directory / "config.json").write_text(json.dumps(dict(TINY_CONFIG, vocab_size=64)))
    (directory / "model.safetensors").write_bytes(edited(good_model, data, int.from_bytes(good_model[:8], "little")))

    def run() -> list[float]:
        with load(str(directory), workers=0) as model:
            return model.forward(5, 0)

    outcome(run)


# --- config.json and generation_config.json ------------------------------------------------------

CONFIG_KEYS = sorted(TINY_CONFIG) + ["head_dim", "model_type", "hidden_act", "rope_scaling", "layer_types",
                                     "use_sliding_window", "rope_parameters"]  # fmt: skip


@fuzz(quick=300, long=10_000)
@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, max_size=6), st.sets(st.sampled_from(CONFIG_KEYS)))
@example({"rms_norm_eps": 1e999}, set())  # parses to inf: refused, not kept as a norm that zeroes every value
@example({"rope_theta": float("inf")}, set())
def test_config_any_value_for_any_key(changes: dict[str, Any], removed: set[str]) -> None:
    raw = {key: value for key, value in dict(TINY_CONFIG, **changes).items() if key not in removed}
    result = outcome(lambda: Config.from_dict(raw, "config.json"))
    if isinstance(result, Config):
        assert result.num_attention_heads % result.num_key_value_heads == 0 and result.head_dim % 2 == 0
        assert all(0 < value < float("inf") for value in (result.rope_theta, result.rms_norm_eps))
        assert all(dim > 0 for shape in expected_shapes(result).values() for dim in shape)
    else:
        assert isinstance(result, ConfigError)


@fuzz(quick=200, long=5_000)
@given(st.data())
def test_config_file_edited(scratch: pathlib.Path, data: st.DataObject) -> None:
    path = fresh(scratch) / "config.json"
    path.write_text(json.dumps(mutate(TINY_CONFIG, data)))
    outcome(lambda: Config.from_file(str(path)))


GENERATION_KEYS = ["do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "eos_token_id"]


@fuzz(quick=200, long=5_000)
@given(st.dictionaries(st.sampled_from(GENERATION_KEYS), json_values | st.floats(), max_size=4) | json_values)
def test_generation_config_any_value(scratch: pathlib.Path, raw: Any) -> None:
    path = fresh(scratch) / "generation_config.json"
    path.write_text(json.dumps(raw))
    outcome(lambda: SamplingParams.from_generation_config(str(path)))
    outcome(lambda: read_eos_token_ids(str(path)))


# --- tokenizer files ------------------------------------------------------------------------------

TOKENIZER_JSON = qwen_vocab.tokenizer_json(qwen_vocab.small_vocab("tricky"), qwen_vocab.SMALL_TOKENIZERS["tricky"][1])
TOKENIZER_CONFIG = qwen_vocab._tokenizer_config("instruct")
SAMPLE = "Hello <|im_end|> aaab ccc\r\n 2024 é中😀"


def use(directory: pathlib.Path) -> None:
    """Load the tokenizer and run every method that reads what the files gave it."""
    tokenizer = Tokenizer.from_dir(str(directory))
    ids = tokenizer.encode(SAMPLE)
    tokenizer.decode(ids, skip_special_tokens=True)
    tokenizer.apply_chat_template([{"role": "user", "content": SAMPLE}])
    tokenizer.encode_traced(SAMPLE, allow_special=False)


@fuzz(quick=300, long=10_000)
@given(st.data())
def test_tokenizer_json_edited(scratch: pathlib.Path, data: st.DataObject) -> None:
    directory = fresh(scratch)
    (directory / "tokenizer.json").write_text(json.dumps(mutate(TOKENIZER_JSON, data)), encoding="utf-8")
    outcome(lambda: use(directory))


@fuzz(quick=300, long=10_000)
@given(st.data())
def test_tokenizer_config_edited(scratch: pathlib.Path, data: st.DataObject) -> None:
    directory = fresh(scratch)
    (directory / "tokenizer.json").write_text(json.dumps(TOKENIZER_JSON), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(mutate(TOKENIZER_CONFIG, data)), encoding="utf-8")
    outcome(lambda: use(directory))


def merges_lines() -> list[str]:
    return list(qwen_vocab.SMALL_TOKENIZERS["tricky"][1])


@fuzz(quick=300, long=10_000)
@given(st.data())
def test_vocab_json_and_merges_txt_edited(scratch: pathlib.Path, data: st.DataObject) -> None:
    directory = fresh(scratch)
    vocab = qwen_vocab.small_vocab("tricky")
    if data.draw(st.booleans(), label="edit vocab.json"):
        vocab = mutate(vocab, data)
    lines = merges_lines()
    for _ in range(data.draw(st.integers(0, 3), label="merges edits")):
        at = data.draw(st.integers(0, len(lines)), label="line")
        lines.insert(at, data.draw(st.text(max_size=10) | st.sampled_from(["#version: 0.2", "a", "a b c", " a  b"]), label="text"))
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "\n".join(lines).encode("utf-8", "surrogatepass")
    if data.draw(st.booleans(), label="flip a byte"):
        merges += data.draw(st.binary(min_size=1, max_size=4), label="trailing bytes")
    (directory / "merges.txt").write_bytes(merges)
    config = mutate(TOKENIZER_CONFIG, data) if data.draw(st.booleans(), label="edit config") else TOKENIZER_CONFIG
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    outcome(lambda: use(directory))


# --- chat messages --------------------------------------------------------------------------------

roles = st.sampled_from(["system", "user", "assistant", "tool", "developer", ""]) | json_values
messages = st.fixed_dictionaries(
    {}, optional={"role": roles, "content": st.text(max_size=20) | json_values, "tool_calls": json_values
                  | st.lists(st.fixed_dictionaries({}, optional={"name": json_values | st.text(max_size=5),
                                                                  "arguments": json_values,
                                                                  "function": json_values}), max_size=2)}
)  # fmt: skip
conversations = st.lists(messages | json_values, max_size=5) | json_values | st.tuples(messages, messages)


@pytest.fixture(scope="module")
def chat_tokenizer() -> Tokenizer:
    directory = pathlib.Path(tempfile.mkdtemp(prefix="microqwen-chat-"))
    try:
        (directory / "tokenizer.json").write_text(json.dumps(TOKENIZER_JSON), encoding="utf-8")
        (directory / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG), encoding="utf-8")
        return Tokenizer.from_dir(str(directory))
    finally:
        shutil.rmtree(directory)


@fuzz(quick=400, long=20_000)
@given(conversations, st.booleans(), st.none() | st.lists(json_values, max_size=3) | json_values)
def test_chat_messages_of_any_shape(chat_tokenizer: Tokenizer, conversation: Any, add: bool, tools: Any) -> None:
    def render_and_encode() -> list[int]:
        return chat_tokenizer.encode(chat_tokenizer.apply_chat_template(conversation, add, tools), allow_special=True)

    result = outcome(render_and_encode)
    if isinstance(result, MicroQwenError):
        assert isinstance(result, UsageError)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("where", ["tools", "arguments"])
def test_chat_json_nested_past_the_stack_is_a_usage_error(chat_tokenizer: Tokenizer, where: str) -> None:
    """json.dumps of a value nested past the stack raised RecursionError out of apply_chat_template.

    (5,000 levels were enough on CPython 3.12 and PyPy; 3.13's json writes them, so use 100,000.)
    """
    call = {"name": "f", "arguments": nested(100_000) if where == "arguments" else {}}
    conversation = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    tools = [nested(100_000)] if where == "tools" else None
    with pytest.raises(UsageError, match=r"(tools\[0\]|tool_calls\[0\]\.arguments): cannot be written as JSON"):
        chat_tokenizer.apply_chat_template(conversation, True, tools)


# --- GGUF -----------------------------------------------------------------------------------------

GGUF_FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "gguf"
VALUE_KINDS = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64", "bool", "string"]
_BOUNDS = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767),
           "uint32": (0, 2**32 - 1), "int32": (-(2**31), 2**31 - 1), "uint64": (0, 2**64 - 1), "int64": (-(2**63), 2**63 - 1)}  # fmt: skip


def gguf_values(kind: str) -> st.SearchStrategy[Any]:
    if kind in _BOUNDS:
        return st.integers(*_BOUNDS[kind])
    if kind == "float32":
        return st.floats(width=32)
    if kind == "float64":
        return st.floats()
    return st.booleans() if kind == "bool" else st.text(max_size=12)


@st.composite
def gguf_pairs(draw: st.DrawFn) -> tuple[str, str, Any]:
    """A key (sometimes one the reader or the config reads) and a value of a random type, arrays and nested arrays too."""
    key = draw(st.sampled_from(["general.alignment", "general.architecture", "qwen2.block_count", "a.b", "", "é"])
               | st.text(max_size=8))  # fmt: skip
    kind = draw(st.sampled_from(VALUE_KINDS))
    depth = draw(st.integers(0, 2))
    strategy = gguf_values(kind)
    for _ in range(depth):
        kind, strategy = f"array[{kind}]", st.lists(strategy, max_size=3)
    return key, kind, draw(strategy)


gguf_tensors = st.lists(st.tuples(st.sampled_from(["a", "b", "blk.0.attn_q.weight", ""]) | st.text(max_size=4),
                                  st.sampled_from([0, 1, 8, 12, 30, 4, 40, 99]),
                                  st.lists(st.sampled_from([0, 1, 2, 32, 256, 2**40]), max_size=3).map(tuple),
                                  st.binary(max_size=80)), max_size=3)  # fmt: skip


def read_everything(f: GGUFFile) -> None:
    """What a loader does with a file that opened: every tensor's rows, dequantised where the type allows."""
    for name, info in f.tensors.items():
        assert f.data_start <= info.begin and info.end <= f.file_size and (info.begin - f.data_start) % f.alignment == 0
        if info.dtype in quant.SUPPORTED:
            assert len(f.floats(name)) == info.numel


@fuzz(quick=300, long=10_000)
@given(st.lists(gguf_pairs(), max_size=5), gguf_tensors, st.sampled_from([2, 3, 1, 4]), st.sampled_from([32, 1, 64]))
def test_gguf_random_metadata_and_tensors(scratch: pathlib.Path, pairs: Any, tensors: Any, version: int, alignment: int) -> None:
    try:
        blob = gguf_bytes.gguf_file(pairs, tensors, version, alignment)
    except (struct.error, OverflowError):  # a value the hand writer cannot pack (a NaN is fine; this is not)
        return
    path = fresh(scratch) / "model.gguf"
    path.write_bytes(blob)

    def run() -> None:
        with GGUFFile(str(path)) as f:
            read_everything(f)

    outcome(run)


@pytest.fixture(scope="module")
def good_gguf() -> bytes:
    return (GGUF_FIXTURES / "kquants-gqa2-untied.gguf").read_bytes()


@fuzz(quick=300, long=10_000)
@given(st.data())
def test_gguf_edited_files(scratch: pathlib.Path, good_gguf: bytes, data: st.DataObject) -> None:
    path = fresh(scratch) / "model.gguf"
    path.write_bytes(edited(good_gguf, data, 7904))  # 7904: where the data section begins

    def run() -> None:
        with GGUFFile(str(path)) as f:
            read_everything(f)
            Config.from_gguf(f.metadata, list(f.tensors), f.path)
            Tokenizer.from_gguf(f.metadata, f.path).encode(SAMPLE)

    outcome(run)


GGUF_CONFIG_KEYS = ["general.architecture", "qwen2.embedding_length", "qwen2.feed_forward_length", "qwen2.block_count",
                    "qwen2.attention.head_count", "qwen2.attention.head_count_kv", "qwen2.context_length",
                    "qwen2.rope.freq_base", "qwen2.attention.layer_norm_rms_epsilon", "qwen2.attention.key_length",
                    "qwen2.attention.value_length", "qwen2.rope.dimension_count", "qwen2.vocab_size",
                    "qwen2.rope.scaling.type", "tokenizer.ggml.tokens", "tokenizer.ggml.eos_token_id"]  # fmt: skip


@pytest.fixture(scope="module")
def kquant_metadata() -> dict[str, Any]:
    with GGUFFile(str(GGUF_FIXTURES / "kquants-gqa2-untied.gguf")) as f:
        return f.metadata


@fuzz(quick=300, long=10_000)
@given(st.dictionaries(st.sampled_from(GGUF_CONFIG_KEYS), json_values | st.floats(), max_size=5), st.sets(st.sampled_from(GGUF_CONFIG_KEYS)))
def test_gguf_config_any_value_for_any_key(kquant_metadata: dict[str, Any], changes: dict[str, Any], removed: set[str]) -> None:
    metadata = {key: value for key, value in dict(kquant_metadata, **changes).items() if key not in removed}
    result = outcome(lambda: Config.from_gguf(metadata, ["output.weight"], "model.gguf"))
    if isinstance(result, Config):
        assert result.num_attention_heads % result.num_key_value_heads == 0 and result.head_dim % 2 == 0
        assert all(dim > 0 for shape in expected_shapes(result).values() for dim in shape)
    else:
        assert isinstance(result, ConfigError)


@pytest.fixture(scope="module")
def small_tokenizer_metadata() -> dict[str, Any]:
    with GGUFFile(str(GGUF_FIXTURES / "tokenizer.gguf")) as f:
        return f.metadata


@fuzz(quick=200, long=5_000)
@given(st.data())
def test_gguf_tokenizer_metadata_edited(small_tokenizer_metadata: dict[str, Any], data: st.DataObject) -> None:
    metadata = mutate(small_tokenizer_metadata, data)
    if not isinstance(metadata, dict):  # the metadata of a file is always a dict: only its values vary
        return

    def run() -> None:
        tokenizer = Tokenizer.from_gguf(metadata, "model.gguf")
        tokenizer.decode(tokenizer.encode(SAMPLE), skip_special_tokens=True)
        tokenizer.apply_chat_template([{"role": "user", "content": SAMPLE}])

    result = outcome(run)
    assert not isinstance(result, MicroQwenError) or isinstance(result, (FormatError, UsageError))
