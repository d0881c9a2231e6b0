"""Byte-level BPE: Qwen2's tokenizer, from text to token ids and back.

The model reads numbers, not text. Qwen2.5's vocabulary has 151,643 tokens, each a string of
bytes, plus 22 added tokens such as `<|im_start|>`; a token's id is its row in the embedding.
Encoding text goes through five steps (docs/reference/qwen2.5-0.5b.md), and `encode_traced` shows each one:

1. Added tokens that appear literally in the text (`<|im_end|>`) are cut out first and become
   their own id, unless `allow_special=False` asks for special tokens to be read as plain text.
2. Each remaining piece is put in Unicode normal form NFC ('e' + U+0301 becomes 'é').
3. The pre-tokenizer (`microqwen.pretokenize`) cuts the piece into words: `' world'`, `'!'`.
4. Each word's UTF-8 bytes become printable characters, one per byte (`bytes_to_unicode`):
   `' world'` is the bytes 20 77 6f 72 6c 64, written `'Ġworld'` (the space byte is 'Ġ').
5. Byte-pair encoding: start from one symbol per byte and merge adjacent pairs, always the pair
   that comes first in merges.txt (the lowest rank), until no listed pair is left. Every symbol
   left is a token of vocab.json; no byte is ever unknown, since all 256 bytes are tokens.

A whole tokenizer in miniature, with the 256 one-byte tokens and four merges:

    >>> base = {char: byte for byte, char in enumerate(bytes_to_unicode())}
    >>> vocab = dict(base, lo=256, low=257, Ġlow=258, er=259)
    >>> tokenizer = Tokenizer(vocab, [("l", "o"), ("lo", "w"), ("Ġ", "low"), ("e", "r")])
    >>> tokenizer.encode("low lower")
    [257, 258, 259]
    >>> [tokenizer.id_to_token(i) for i in [257, 258, 259]]
    ['low', 'Ġlow', 'er']
    >>> tokenizer.decode([257, 258, 259])
    'low lower'

Decoding joins the tokens' bytes and reads them as UTF-8; a token may hold only part of a
character (a Chinese character is 3 bytes, an emoji 4), so `StreamDecoder` holds such bytes back
until the next token completes them. The ids, the decoded text and the streamed chunks are the
same as Hugging Face `tokenizers` gives, on every string the tests try.
"""

from __future__ import annotations

import codecs
import heapq
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

from . import chat, gguf, pretokenize
from .errors import FormatError, UsageError
from .jsonparse import JSON, parse_file

CACHE_SIZE = 10_000
"""Words whose tokens are remembered (the same bound as Hugging Face's BPE cache)."""

MAX_TOKEN_ID = (1 << 21) - 1
"""The largest token id accepted (Qwen2.5's largest is 151,664): ids index a table, so a file cannot ask for 30 GB."""


def bytes_to_unicode() -> list[str]:
    """GPT-2's table from a byte to the printable character that stands for it in vocab.json.

    BPE works on strings of bytes, but vocab.json and merges.txt are text, and a byte such as
    0x20 (space) or 0x0A (newline) would be invisible or break the line-based merges.txt. So
    each byte gets a visible character: the 188 bytes that are printable Latin-1 characters
    ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 (the controls, space, DEL,
    U+0080..U+00A0 and the soft hyphen) take the characters from U+0100 on, in byte order.

    Examples:
        >>> table = bytes_to_unicode()
        >>> table[ord("A")], table[ord(" ")], table[ord("\\n")], table[0], table[0xE4]
        ('A', 'Ġ', 'Ċ', 'Ā', 'ä')
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = [""] * 256
    for byte in printable:
        table[byte] = chr(byte)
    others = [byte for byte in range(256) if not table[byte]]
    for n, byte in enumerate(others):
        table[byte] = chr(256 + n)
    return table


BYTES_TO_UNICODE = bytes_to_unicode()
_TO_BYTE_LEVEL = {byte: char for byte, char in enumerate(BYTES_TO_UNICODE)}  # for str.translate on Latin-1 text
_FROM_BYTE_LEVEL = {ord(char): byte for byte, char in enumerate(BYTES_TO_UNICODE)}


def to_byte_level(text: str) -> str:
    """The UTF-8 bytes of `text`, one character per byte: `to_byte_level(' 中')` is 'Ġä¸Ń'."""
    return text.encode("utf-8").decode("latin-1").translate(_TO_BYTE_LEVEL)


def from_byte_level(tokens: str) -> bytes:
    """The bytes that byte-level characters stand for (the inverse of `to_byte_level`)."""
    return tokens.translate(_FROM_BYTE_LEVEL).encode("latin-1")


def plain_bpe(word: str, ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """Step 5 the plain way: the reference that the fast `Tokenizer.bpe` must equal, symbol for symbol.

    Start from one symbol per character of the byte-level word; while some adjacent pair is in
    `ranks` (merges.txt: pair -> line number), merge the pair of lowest rank, the leftmost one if
    it occurs more than once. Each merge rescans the whole word, so a word of n symbols costs
    about n^2 steps: fine to read and to test with, too slow for a line of Chinese (one word).
    Unlike minbpe's `merge`, which replaces every occurrence of the pair in one pass, this merges
    one occurrence at a time, as Hugging Face does (the two agree when every merge comes after the
    merges that made its two parts, as in a trained merges.txt).

    Examples:
        >>> plain_bpe("lower", {("l", "o"): 0, ("lo", "w"): 1, ("e", "r"): 2})
        ['low', 'er']
        >>> plain_bpe("aaa", {("a", "a"): 0})                  # the leftmost pair first
        ['aa', 'a']
    """
    symbols = list(word)
    while len(symbols) > 1:
        candidates = [(ranks[pair], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks]
        if not candidates:
            break
        _, i = min(candidates)  # the lowest rank; on a tie, the smallest position
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


@dataclass(frozen=True)
class AddedToken:
    """A token outside BPE (`<|im_start|>`), found in the text by exact match before anything else.

    `special` tokens are dropped by `decode(..., skip_special_tokens=True)` and read as plain
    text by `encode(..., allow_special=False)`; the others (`<tool_call>`, `<|fim_prefix|>`)
    always act as single tokens, as in Hugging Face.
    """

    id: int
    content: str
    special: bool


class MergeStep(NamedTuple):
    """One merge applied to a word: the pair, its rank in merges.txt, the symbols after it."""

    left: str
    right: str
    rank: int
    symbols: tuple[str, ...]


@dataclass(frozen=True)
class WordTrace:
    """One pre-token through steps 3-5: the rule that cut it, its bytes, every merge, its ids."""

    text: str
    rule: str
    byte_level: str
    steps: list[MergeStep]
    tokens: list[str]
    ids: list[int]


@dataclass(frozen=True)
class SegmentTrace:
    """A piece of the added-token split (step 1): an added token, or text with its NFC form and words."""

    text: str
    added_id: int | None
    nfc: str = ""
    words: list[WordTrace] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [self.added_id] if self.added_id is not None else [i for word in self.words for i in word.ids]


@dataclass(frozen=True)
class EncodeTrace:
    """Everything `encode` did to one text, step by step."""

    text: str
    segments: list[SegmentTrace]

    @property
    def ids(self) -> list[int]:
        return [i for segment in self.segments for i in segment.ids]


class Tokenizer:
    """Qwen2's byte-level BPE tokenizer: `encode`, `decode`, `StreamDecoder`, `apply_chat_template`.

    `vocab` maps byte-level token strings to ids, `merges` lists the pairs in priority order
    (rank 0 first), `added_tokens` are matched in the text before BPE. `chat_template` is the
    Jinja text of tokenizer_config.json, read only for its default system prompt
    (`microqwen.chat`); `eos_token` names the token that ends a reply. For error messages,
    `source` names where the vocabulary came from and `merge_location(i)` where merge i did
    ("merges.txt line 8").
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Sequence[tuple[str, str]],
        added_tokens: Iterable[AddedToken] = (),
        chat_template: str | None = None,
        eos_token: str | None = None,
        source: str = "vocab",
        merge_location: Callable[[int], str] | None = None,
    ) -> None:
        _check_byte_level(vocab, source)
        self.vocab = dict(vocab)
        self.added_tokens = sorted(added_tokens, key=lambda token: token.id)
        self.bpe_ranks = _merge_ranks(self.vocab, merges, merge_location or (lambda i: f"merges[{i}]"))
        self._id_to_token = _id_table(self.vocab, self.added_tokens, source)
        self._added_by_id = {token.id: token for token in self.added_tokens}
        self._added_by_content = {token.content: token for token in self.added_tokens}
        self._added_patterns = {
            True: _alternation(token.content for token in self.added_tokens),
            False: _alternation(token.content for token in self.added_tokens if not token.special),
        }
        self.default_system = chat.default_system_prompt(chat_template)
        self.eos_token_id = self.token_to_id(eos_token) if eos_token is not None else None
        self._cache: dict[str, list[int]] = {}

    @staticmethod
    def found_in(path: str) -> bool:
        """Does the model at `path` have a tokenizer: a directory with tokenizer.json or vocab.json, or a .gguf file?"""
        if gguf.is_gguf(path):
            return True
        return any(os.path.isfile(os.path.join(path, name)) for name in ("tokenizer.json", "vocab.json"))

    @classmethod
    def from_model(cls, path: str, metadata: Mapping[str, object] | None = None) -> Tokenizer:
        """The tokenizer of a model directory (`from_dir`) or of a .gguf file (`from_gguf`; `metadata` if read already)."""
        if not gguf.is_gguf(path):
            return cls.from_dir(path)
        if not metadata:
            with gguf.GGUFFile(path) as f:
                metadata = f.metadata
        return cls.from_gguf(metadata, path)

    @classmethod
    def from_dir(cls, path: str) -> Tokenizer:
        """Load a model directory: tokenizer.json if present, else vocab.json + merges.txt.

        tokenizer_config.json, when present, gives the chat template and the eos token, and the
        added tokens when there is no tokenizer.json.
        """
        config = _read_tokenizer_config(os.path.join(path, "tokenizer_config.json"))
        chat_template, eos_token = _chat_template(config), _eos_token(config)
        tokenizer_json = os.path.join(path, "tokenizer.json")
        if os.path.isfile(tokenizer_json):
            vocab, merges, added = _read_tokenizer_json(tokenizer_json)
            where = f"{tokenizer_json}: model.merges"
            return cls(vocab, merges, added, chat_template, eos_token, tokenizer_json, lambda i: f"{where}[{i}]")
        vocab_json, merges_txt = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
        if not (os.path.isfile(vocab_json) and os.path.isfile(merges_txt)):
            raise FormatError(f"{path}: no tokenizer.json, and no vocab.json + merges.txt to read a tokenizer from")
        vocab = _read_vocab(parse_file(vocab_json), vocab_json)
        merges, lines = _read_merges_txt(merges_txt)
        added = _config_added_tokens(config, os.path.join(path, "tokenizer_config.json"))
        return cls(vocab, merges, added, chat_template, eos_token, vocab_json, lambda i: f"{merges_txt} line {lines[i]}")

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, object], source: str) -> Tokenizer:
        """The tokenizer of a GGUF file, from its `tokenizer.*` metadata (as llama.cpp's converter writes it).

        `tokenizer.ggml.model` must be "gpt2" (byte-level BPE) and `tokenizer.ggml.pre` "qwen2" (Qwen2's
        pre-tokenizer). `tokenizer.ggml.tokens[i]` is the token of id i, in byte-level characters;
        `tokenizer.ggml.token_type[i]` says what it is, read as transformers reads a GGUF file:

            1 normal, 5 unused       BPE vocabulary (the unused are the padding ids [PAD151665] ...)
            3 control                an added token that is special (<|im_end|>, and <|fim_prefix|>,
                                     which Hugging Face's tokenizer.json does not mark special)
            4 user-defined           an added token that is not special (<tool_call>)

        `tokenizer.ggml.merges` lists the merges as "left right"; `tokenizer.ggml.eos_token_id` names
        the token that ends a reply, and `tokenizer.chat_template` must be Qwen2.5's
        (`microqwen.chat.check_template`). `source` names the file in error messages.
        """
        for key, expected in (("tokenizer.ggml.model", "gpt2"), ("tokenizer.ggml.pre", "qwen2")):
            if metadata.get(key) != expected:
                raise FormatError(f"{source}: {key} is {metadata.get(key)!r}; microqwen implements Qwen2's "
                                  f"byte-level BPE tokenizer, {key} {expected!r}")  # fmt: skip
        if metadata.get("tokenizer.ggml.add_bos_token", False) is not False:
            raise FormatError(f"{source}: tokenizer.ggml.add_bos_token is set; Qwen2 starts a text with no BOS token")
        tokens = _gguf_list(metadata, "tokenizer.ggml.tokens", str, source)
        kinds = _gguf_list(metadata, "tokenizer.ggml.token_type", int, source)
        if len(kinds) != len(tokens):
            raise FormatError(f"{source}: {len(tokens)} tokenizer.ggml.tokens but {len(kinds)} tokenizer.ggml.token_type")
        vocab, added = _gguf_vocab(tokens, kinds, source)
        where = f"{source}: tokenizer.ggml.merges"
        raw_merges = _gguf_list(metadata, "tokenizer.ggml.merges", str, source) if "tokenizer.ggml.merges" in metadata else []
        merges = [_merge_pair(merge, f"{where}[{i}]") for i, merge in enumerate(raw_merges)]
        template = metadata.get("tokenizer.chat_template")
        if template is not None:
            if not isinstance(template, str):
                raise FormatError(f"{source}: tokenizer.chat_template must be a string")
            chat.check_template(template, f"{source}: tokenizer.chat_template")
        eos = metadata.get("tokenizer.ggml.eos_token_id")
        if eos is not None and not (isinstance(eos, int) and 0 <= eos < len(tokens)):
            raise FormatError(f"{source}: tokenizer.ggml.eos_token_id {eos!r} is not one of the {len(tokens)} token ids")
        eos_token = tokens[eos] if isinstance(eos, int) else None
        return cls(vocab, merges, added, template, eos_token, f"{source}: tokenizer.ggml.tokens", lambda i: f"{where}[{i}]")

    @property
    def vocab_size(self) -> int:
        """The number of token ids, added tokens included: 151,665 for Qwen2.5."""
        return len(self._id_to_token)

    def token_to_id(self, token: str) -> int | None:
        """The id of a byte-level token string or an added token, or None."""
        added = self._added_by_content.get(token)
        return added.id if added is not None else self.vocab.get(token)

    def id_to_token(self, token_id: int) -> str | None:
        """The byte-level token string (or added token) of an id, or None if there is none."""
        return self._id_to_token[token_id] if 0 <= token_id < len(self._id_to_token) else None

    def is_special(self, token_id: int) -> bool:
        """True for added tokens marked special (`<|im_end|>`), which skip_special_tokens drops."""
        added = self._added_by_id.get(token_id)
        return added is not None and added.special

    # ------------------------------------------------------------ encoding

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """The token ids of `text`. With `allow_special=False`, `<|im_end|>` in the text is plain text."""
        _check_text(text)
        ids: list[int] = []
        for piece, added_id in self.split_added_tokens(text, allow_special):
            if added_id is not None:
                ids.append(added_id)
            else:
                ids += self._encode_ordinary(piece)
        return ids

    def split_added_tokens(self, text: str, allow_special: bool = True) -> Iterator[tuple[str, int | None]]:
        """Step 1: (piece, None) for ordinary text and (content, id) for each added token found.

        Matching is leftmost, then longest, like Hugging Face's Aho-Corasick search.
        """
        pattern = self._added_patterns[allow_special]
        start = 0
        if pattern is not None:
            for match in pattern.finditer(text):
                if match.start() > start:
                    yield text[start : match.start()], None
                yield match.group(), self._added_by_content[match.group()].id
                start = match.end()
        if start < len(text):
            yield text[start:], None

    def _encode_ordinary(self, text: str) -> list[int]:
        """Steps 2-5 for text without added tokens, with a cache of the words already seen."""
        cache = self._cache
        ids: list[int] = []
        for word in pretokenize.compiled_pattern().findall(unicodedata.normalize("NFC", text)):
            word_ids = cache.get(word)
            if word_ids is None:
                word_ids = [self.vocab[token] for token in self.bpe(to_byte_level(word))]
                if len(cache) < CACHE_SIZE:
                    cache[word] = word_ids
            ids += word_ids
        return ids

    def bpe(self, word: str, steps: list[MergeStep] | None = None) -> list[str]:
        """Step 5: merge the symbols of a byte-level word, lowest rank first, into tokens.

        Like Hugging Face, the next merge is always the lowest-ranked adjacent pair, the leftmost
        one on a tie: the same result as `plain_bpe`, the readable reference (the tests check
        that the two agree). A heap of candidate pairs keeps a long word fast (a line of Chinese is
        one word); a merged-away symbol becomes '' and `left`/`right` link the symbols still alive.
        Each merge applied is appended to `steps` when it is given.

        Examples:
            >>> base = {char: byte for byte, char in enumerate(BYTES_TO_UNICODE)}
            >>> tokenizer = Tokenizer(dict(base, lo=256, low=257, er=258), [("l", "o"), ("lo", "w"), ("e", "r")])
            >>> steps = []
            >>> tokenizer.bpe("lower", steps)
            ['low', 'er']
            >>> [(step.left, step.right, step.rank, step.symbols) for step in steps]
            [('l', 'o', 0, ('lo', 'w', 'e', 'r')), ('lo', 'w', 1, ('low', 'e', 'r')), ('e', 'r', 2, ('low', 'er'))]
        """
        symbols = list(word)
        n = len(symbols)
        left = list(range(-1, n - 1))  # left[i]: the alive symbol before i, -1 for none
        right = list(range(1, n + 1))  # right[i]: the alive symbol after i, n for none
        heap: list[tuple[int, int, str]] = []  # (rank, position, merged token)
        for i in range(n - 1):
            self._push_pair(heap, symbols, i, i + 1)
        while heap:
            rank, i, merged = heapq.heappop(heap)
            j = right[i]
            if not symbols[i] or j == n or symbols[i] + symbols[j] != merged:
                continue  # stale: a symbol of this pair has merged with another since
            pair = symbols[i], symbols[j]
            symbols[i], symbols[j] = merged, ""
            right[i] = right[j]
            if right[j] < n:
                left[right[j]] = i
            if steps is not None:
                steps.append(MergeStep(pair[0], pair[1], rank, tuple(symbol for symbol in symbols if symbol)))
            if left[i] >= 0:
                self._push_pair(heap, symbols, left[i], i)
            if right[i] < n:
                self._push_pair(heap, symbols, i, right[i])
        return [symbol for symbol in symbols if symbol]

    def _push_pair(self, heap: list[tuple[int, int, str]], symbols: list[str], i: int, j: int) -> None:
        rank = self.bpe_ranks.get((symbols[i], symbols[j]))
        if rank is not None:
            heapq.heappush(heap, (rank, i, symbols[i] + symbols[j]))

    def encode_traced(self, text: str, allow_special: bool = True) -> EncodeTrace:
        """`encode`, keeping every step: the added-token split, NFC, pre-tokens, bytes, merges.

        Examples:
            >>> base = {char: byte for byte, char in enumerate(BYTES_TO_UNICODE)}
            >>> tokenizer = Tokenizer(dict(base, lo=256, low=257), [("l", "o"), ("lo", "w")])
            >>> trace = tokenizer.encode_traced("low 2")
            >>> [(word.text, word.rule, word.byte_level, word.tokens) for word in trace.segments[0].words]
            [('low', 'word', 'low', ['low']), (' ', 'space', 'Ġ', ['Ġ']), ('2', 'digit', '2', ['2'])]
            >>> trace.ids == tokenizer.encode("low 2")
            True
        """
        _check_text(text)
        segments = []
        for piece, added_id in self.split_added_tokens(text, allow_special):
            if added_id is not None:
                segments.append(SegmentTrace(piece, added_id))
                continue
            nfc = unicodedata.normalize("NFC", piece)
            words = [self._trace_word(word, rule) for word, rule in pretokenize.pretokenize_traced(nfc)]
            segments.append(SegmentTrace(piece, None, nfc, words))
        return EncodeTrace(text, segments)

    def _trace_word(self, word: str, rule: str) -> WordTrace:
        byte_level = to_byte_level(word)
        steps: list[MergeStep] = []
        tokens = self.bpe(byte_level, steps)
        return WordTrace(word, rule, byte_level, steps, tokens, [self.vocab[token] for token in tokens])

    # ------------------------------------------------------------ decoding

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """The text of token ids: the tokens' bytes read as UTF-8, invalid bytes as U+FFFD.

        Added tokens are written as they are (or dropped when special and `skip_special_tokens`).
        As in Hugging Face, the bytes before an added token are decoded on their own, and an id
        outside the vocabulary is an error (Hugging Face skips it silently).
        """
        stream = self.stream_decoder(skip_special_tokens)
        return "".join(stream.feed_all(ids)) + stream.flush()

    def stream_decoder(self, skip_special_tokens: bool = False) -> StreamDecoder:
        """A `StreamDecoder` over this vocabulary, for text that arrives one token at a time."""
        return StreamDecoder(self, skip_special_tokens)

    def added_token(self, token_id: int) -> AddedToken | None:
        """The added token with this id, or None for a BPE token."""
        return self._added_by_id.get(token_id)

    def token_bytes(self, token_id: int, position: int = 0) -> bytes:
        """The bytes a token stands for; `position` (in a list of ids) names it in the error for a bad id."""
        token = self.id_to_token(token_id) if isinstance(token_id, int) and not isinstance(token_id, bool) else None
        if token is None:
            raise UsageError(
                f"token id {token_id!r} at position {position} is not in the vocabulary (ids 0..{self.vocab_size - 1})"
            )
        return token.encode("utf-8") if token_id in self._added_by_id else from_byte_level(token)

    # ------------------------------------------------------------ chat

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, object]], add_generation_prompt: bool = True, tools: Sequence[object] | None = None
    ) -> str:
        """The prompt text of a conversation in Qwen2.5's chat format (`microqwen.chat.render`)."""
        return chat.render(messages, add_generation_prompt, tools, self.default_system)


class StreamDecoder:
    """Text from token ids as they arrive, never splitting a UTF-8 character.

    `feed(id)` returns the text that is complete so far (maybe ''); bytes of a character not yet
    complete wait for the next token. `flush()` ends the stream: bytes still waiting become
    U+FFFD. Joined, the chunks and the flush are exactly `Tokenizer.decode` of all the ids.

    Examples:
        >>> tokenizer = Tokenizer({char: byte for byte, char in enumerate(BYTES_TO_UNICODE)}, [])
        >>> stream = tokenizer.stream_decoder()
        >>> [stream.feed(byte) for byte in "é!".encode()]      # é is the two bytes C3 A9
        ['', 'é', '!']
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.position = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, token_id: int) -> str:
        """The text that `token_id` completes."""
        data = self.tokenizer.token_bytes(token_id, self.position)
        self.position += 1
        added = self.tokenizer.added_token(token_id)
        if added is None:
            return self._utf8.decode(data)
        if self.skip_special_tokens and added.special:
            return ""
        return self.flush() + added.content

    def feed_all(self, ids: Iterable[int]) -> Iterator[str]:
        """`feed` each id in turn."""
        for token_id in ids:
            yield self.feed(token_id)

    def flush(self) -> str:
        """The bytes still held back, as U+FFFD replacement characters ('' if none)."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text


# ---------------------------------------------------------------- checks


def _check_text(text: str) -> None:
    """Refuse what has no UTF-8 bytes: a lone surrogate (Hugging Face refuses it too)."""
    if not isinstance(text, str):
        raise UsageError(f"text to encode must be a str, not {type(text).__name__}")
    match = _LONE_SURROGATE.search(text)
    if match is not None:
        raise UsageError(
            f"text has a lone surrogate U+{ord(match.group()):04X} at character {match.start()}, which is not "
            "Unicode text and has no UTF-8 encoding (was it decoded with errors='surrogateescape'?)"
        )


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _alternation(contents: Iterable[str]) -> re.Pattern[str] | None:
    """A regex matching any of `contents`, the longest first (None for none)."""
    ordered = sorted(set(contents), key=lambda content: (-len(content), content))
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


def _check_byte_level(vocab: Mapping[str, int], source: str) -> None:
    """Every token is written in byte-level characters, and each of the 256 bytes is a token."""
    missing = [char for char in BYTES_TO_UNICODE if char not in vocab]
    if missing:
        raise FormatError(
            f"{source}: the vocabulary lacks {len(missing)} of the 256 one-byte tokens ({' '.join(missing[:8])} ...); "
            "microqwen reads byte-level BPE vocabularies only"
        )
    strangers = set("".join(vocab)) - set(BYTES_TO_UNICODE)
    if strangers:
        token = next(token for token in vocab if not strangers.isdisjoint(token))
        raise FormatError(f"{source}: token {token!r} (id {vocab[token]}) is not written in byte-level characters")


def _merge_ranks(
    vocab: Mapping[str, int], merges: Sequence[tuple[str, str]], location: Callable[[int], str]
) -> dict[tuple[str, str], int]:
    """{(left, right): rank}, checking that both tokens and their concatenation are in the vocabulary."""
    ranks = {}
    for rank, (left, right) in enumerate(merges):
        for token in (left, right, left + right):
            if token not in vocab:
                raise FormatError(f"{location(rank)}: merge {left!r} {right!r} names {token!r}, which is not in the vocabulary")
        ranks[left, right] = rank
    return ranks


def _id_table(vocab: Mapping[str, int], added_tokens: Sequence[AddedToken], source: str) -> list[str | None]:
    """id -> token string, for every id up to the largest (None where an id has no token)."""
    everything = [*vocab.items(), *((token.content, token.id) for token in added_tokens)]
    largest = max(everything, key=lambda item: item[1], default=("", -1))
    if largest[1] > MAX_TOKEN_ID:
        raise FormatError(
            f"{source}: token {largest[0]!r} has id {largest[1]}, past the largest id microqwen accepts ({MAX_TOKEN_ID:,})"
        )
    table: list[str | None] = [None] * (largest[1] + 1)
    for token, token_id in everything:
        if table[token_id] is not None and table[token_id] != token:
            raise FormatError(f"{source}: token id {token_id} is given to both {table[token_id]!r} and {token!r}")
        table[token_id] = token
    return table


# ---------------------------------------------------------------- files


def _read_tokenizer_json(path: str) -> tuple[dict[str, int], list[tuple[str, str]], list[AddedToken]]:
    """vocab, merges and added tokens of a Hugging Face tokenizer.json, checked to be Qwen2's kind."""
    raw = parse_file(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        raise FormatError(f"{path}: expected a JSON object with a \"model\" object")
    model = raw["model"]
    _expect(model.get("type"), "BPE", f"{path}: model.type")
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback", "ignore_merges"):
        if model.get(key):
            raise FormatError(f"{path}: model.{key} is {model[key]!r}; microqwen implements plain byte-level BPE only")
    _expect(raw.get("normalizer"), {"type": "NFC"}, f"{path}: normalizer")
    _check_pre_tokenizer(raw.get("pre_tokenizer"), path)
    vocab = _read_vocab(model.get("vocab"), f"{path}: model.vocab")
    merges = [_merge_pair(merge, f"{path}: model.merges[{i}]") for i, merge in enumerate(_list(model.get("merges"), path))]
    added = [_added_token(entry, f"{path}: added_tokens[{i}]") for i, entry in enumerate(_list(raw.get("added_tokens", []), path))]
    return vocab, merges, added


def _expect(value: JSON, expected: JSON, what: str) -> None:
    if value != expected:
        raise FormatError(f"{what} is {value!r}; microqwen implements Qwen2's {expected!r}")


def _check_pre_tokenizer(value: JSON, path: str) -> None:
    """The pre-tokenizer must be Qwen2's: Split on QWEN2_PATTERN, then ByteLevel without its own regex."""
    split = {"type": "Split", "pattern": {"Regex": pretokenize.QWEN2_PATTERN}, "behavior": "Isolated", "invert": False}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
    steps = value.get("pretokenizers") if isinstance(value, dict) and value.get("type") == "Sequence" else None
    if (
        not isinstance(steps, list)
        or len(steps) != 2
        or not all(isinstance(step, dict) for step in steps)
        or any(steps[0].get(key) != expected for key, expected in split.items())
        or any(steps[1].get(key) != expected for key, expected in byte_level.items())
    ):
        raise FormatError(
            f"{path}: pre_tokenizer is not Qwen2's (a Sequence of Split on the pattern {pretokenize.QWEN2_PATTERN!r}, "
            "Isolated, then ByteLevel without add_prefix_space or use_regex)"
        )


def _list(value: JSON, path: str) -> list[JSON]:
    if not isinstance(value, list):
        raise FormatError(f"{path}: expected a list of merges and a list of added_tokens, got {type(value).__name__}")
    return value


def _read_vocab(raw: JSON, source: str) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise FormatError(f"{source}: the vocabulary must be a JSON object of token -> id")
    for token, token_id in raw.items():
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            raise FormatError(f"{source}: token {token!r} has id {token_id!r}, not a non-negative integer")
    return raw


def _merge_pair(merge: JSON, where: str) -> tuple[str, str]:
    """A merge written "a b" (older files) or ["a", "b"] (newer files)."""
    parts = merge.split(" ") if isinstance(merge, str) else merge
    if not isinstance(parts, list) or len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
        raise FormatError(f"{where}: a merge must be \"left right\" or [\"left\", \"right\"], got {merge!r}")
    return parts[0], parts[1]


def _read_merges_txt(path: str) -> tuple[list[tuple[str, str]], list[int]]:
    """The merges of merges.txt and the line each is on (an optional first line "#version: ..." is skipped)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: cannot read as UTF-8 text: {e}") from None
    merges, numbers = [], []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise FormatError(f"{path} line {number}: expected two tokens separated by one space, got {line!r}")
        merges.append((parts[0], parts[1]))
        numbers.append(number)
    return merges, numbers


def _added_token(entry: JSON, where: str) -> AddedToken:
    """An added token of tokenizer.json; the matching options Qwen2 does not use are refused."""
    if not isinstance(entry, dict) or not isinstance(entry.get("content"), str) or not entry["content"]:
        raise FormatError(f"{where}: an added token needs a non-empty \"content\" string")
    token_id = entry.get("id")
    if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
        raise FormatError(f"{where}: id {token_id!r} is not a non-negative integer")
    for option in ("lstrip", "rstrip", "single_word", "normalized"):
        if entry.get(option):
            raise FormatError(f"{where}: {option} is true; microqwen matches added tokens exactly, as Qwen2 does")
    return AddedToken(token_id, entry["content"], entry.get("special") is True)


GGUF_TOKEN_TYPES = {1: "normal", 2: "unknown", 3: "control", 4: "user-defined", 5: "unused", 6: "byte"}
"""llama.cpp's token types (tokenizer.ggml.token_type), of which byte-level BPE uses 1, 3, 4 and 5."""


def _gguf_list(metadata: Mapping[str, object], key: str, kind: type, source: str) -> list[Any]:
    value = metadata.get(key)
    if not isinstance(value, list) or not all(isinstance(item, kind) and not isinstance(item, bool) for item in value):
        raise FormatError(f"{source}: {key} must be an array of {kind.__name__}, got {type(value).__name__}")
    return value


def _gguf_vocab(tokens: list[str], kinds: list[int], source: str) -> tuple[dict[str, int], list[AddedToken]]:
    """BPE vocabulary (normal and unused tokens) and added tokens (control: special; user-defined: not)."""
    vocab: dict[str, int] = {}
    added = []
    for token_id, (token, kind) in enumerate(zip(tokens, kinds)):
        if kind in (1, 5):
            if token in vocab:
                raise FormatError(f"{source}: tokenizer.ggml.tokens {vocab[token]} and {token_id} are both {token[:40]!r}")
            vocab[token] = token_id
        elif kind in (3, 4) and token:
            added.append(AddedToken(token_id, token, kind == 3))
        else:
            raise FormatError(
                f"{source}: tokenizer.ggml.token_type[{token_id}] is {kind} ({GGUF_TOKEN_TYPES.get(kind, 'unknown type')}) "
                f"for token {token[:40]!r}; a byte-level BPE vocabulary has normal (1), control (3), user-defined (4) "
                "and unused (5) tokens"
            )
    return vocab, added


def _read_tokenizer_config(path: str) -> dict[str, JSON]:
    if not os.path.isfile(path):
        return {}
    raw = parse_file(path)
    if not isinstance(raw, dict):
        raise FormatError(f"{path}: expected a JSON object")
    return raw


def _config_added_tokens(config: dict[str, JSON], path: str) -> list[AddedToken]:
    """The added tokens of tokenizer_config.json: {"151643": {"content": ..., "special": ...}}."""
    decoder = config.get("added_tokens_decoder", {})
    if not isinstance(decoder, dict):
        raise FormatError(f"{path}: added_tokens_decoder must be an object of id -> token")
    tokens = []
    for key, entry in decoder.items():
        if not _DECIMAL.fullmatch(key):  # "²".isdigit() too, but int("²") fails
            raise FormatError(f"{path}: added_tokens_decoder key {key!r} is not a token id")
        tokens.append(_added_token(dict(entry, id=int(key)) if isinstance(entry, dict) else entry,
                                   f"{path}: added_tokens_decoder[{key!r}]"))  # fmt: skip
    return tokens


_DECIMAL = re.compile("[0-9]+")


def _chat_template(config: dict[str, JSON]) -> str | None:
    """chat_template: one Jinja text, or a list of {"name", "template"} where "default" is used."""
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template
                 if isinstance(entry, dict) and isinstance(entry.get("name"), str)}  # fmt: skip
        template = named.get("default")
    return template if isinstance(template, str) else None


def _eos_token(config: dict[str, JSON]) -> str | None:
    """eos_token: "<|im_end|>", or {"content": "<|im_end|>", ...} in older files."""
    eos = config.get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    return eos if isinstance(eos, str) else None


# ---------------------------------------------------------------- showing the work


def format_trace(trace: EncodeTrace) -> str:
    """The steps of `encode_traced` as text, for `microqwen tokenize --show-merges` and the docs."""
    lines = [f"text {trace.text!r}"]
    for segment in trace.segments:
        if segment.added_id is not None:
            lines.append(f"1. added token {segment.text!r} = {segment.added_id}")
            continue
        lines.append(f"1. text {segment.text!r}")
        changed = f"{ascii(segment.text)} -> {ascii(segment.nfc)}"
        lines.append("2. NFC: " + ("unchanged" if segment.nfc == segment.text else changed))
        lines.append("3. pre-tokens: " + " | ".join(f"{word.text!r} {word.rule}" for word in segment.words))
        lines.append("4. bytes as characters, 5. merges, lowest rank first:")
        for word in segment.words:
            lines += _format_word(word)
    lines.append(f"ids {trace.ids}")
    return "\n".join(lines)


def _format_word(word: WordTrace) -> list[str]:
    hex_bytes = " ".join(f"{byte:02x}" for byte in word.text.encode("utf-8"))
    lines = [f"   {word.text!r}  bytes {hex_bytes}  ->  {' '.join(word.byte_level)}"]
    for step in word.steps:
        lines.append(f"      rank {step.rank:>6}  {step.left + ' + ' + step.right:<16} ->  {' '.join(step.symbols)}")
    lines.append(f"      tokens {word.tokens} = {word.ids}")
    return lines
