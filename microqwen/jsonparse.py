"""Our own JSON parser (RFC 8259), for safetensors headers, config and tokenizer files.

JSON has six kinds of value, and the first character says which one comes next:

    {  object    "a": 1, ...         [  array    1, 2, ...
    "  string    with \\ escapes      -0123456789  number
    t f n        true, false, null

so the parser is a recursive descent: `_value` looks at one character and calls
`_object`, `_array`, `_string` or `_number`, which call `_value` for what they contain.
Regular expressions skip whitespace and match number and string runs in one step,
which keeps it fast enough for a 7 MB tokenizer.json.

It is strict where a model loader should be strict, and refuses with a
`FormatError` that names the source, line and column:

- anything after the value (trailing garbage), a missing comma, a trailing comma;
- control characters (below U+0020) inside strings, unknown escapes, and lone
  UTF-16 surrogates, raw or in `\\u` escapes (`"\\ud83d"` without its pair);
- `NaN`, `Infinity` and other non-JSON numbers (the `json` module accepts them);
- the same key twice in one object (a safetensors header must not name a tensor twice);
- nesting deeper than `MAX_DEPTH`, so a hostile file cannot exhaust the stack.

```python
>>> parse('{"shape": [896, 128], "dtype": "BF16", "ok": true}')
{'shape': [896, 128], 'dtype': 'BF16', 'ok': True}

```
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from .errors import FormatError

JSON = Any
"""A parsed JSON value: None, bool, int, float, str, list or dict with str keys."""

MAX_DEPTH = 100
"""Arrays and objects may nest this deep; real model files nest 5 levels at most."""

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_PLAIN_CHARS = re.compile(r'[^"\\\x00-\x1f\ud800-\udfff]*')
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS = {"t": ("true", True), "f": ("false", False), "n": ("null", None)}


def parse(text: str, source: str = "<string>") -> JSON:
    """Parse one JSON document; `source` names it in error messages."""
    return _Parser(text, source).document()


def parse_bytes(data: bytes, source: str = "<bytes>") -> JSON:
    """Parse UTF-8 encoded JSON (a byte-order mark is refused, as RFC 8259 asks)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{source}: byte {e.start} is not valid UTF-8 ({e.reason})") from None
    if text.startswith("\ufeff"):
        raise FormatError(f"{source}: starts with a UTF-8 byte-order mark, which JSON does not allow")
    return parse(text, source)


def parse_file(path: str) -> JSON:
    """Read and parse a JSON file; a missing or unreadable file is a `FormatError` too."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FormatError(f"{path}: cannot read: {e.strerror}") from None
    return parse_bytes(data, path)


class _Parser:
    """One pass over `text`. Each method takes a position and returns (value, next position)."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source

    def fail(self, message: str, pos: int) -> NoReturn:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        raise FormatError(f"{self.source}: line {line} column {column}: {message}")

    def skip_whitespace(self, pos: int) -> int:
        match = _WHITESPACE.match(self.text, pos)
        assert match is not None  # the pattern also matches the empty string
        return match.end()

    def document(self) -> JSON:
        pos = self.skip_whitespace(0)
        value, pos = self.value(pos, depth=0)
        pos = self.skip_whitespace(pos)
        if pos != len(self.text):
            self.fail("unexpected text after the JSON value", pos)
        return value

    def value(self, pos: int, depth: int) -> tuple[JSON, int]:
        char = self.text[pos : pos + 1]
        if char == '"':
            return self.string(pos)
        if char == "{":
            return self.object(pos, depth + 1)
        if char == "[":
            return self.array(pos, depth + 1)
        if char in _LITERALS:
            word, literal = _LITERALS[char]
            if self.text.startswith(word, pos):
                return literal, pos + len(word)
        elif char == "-" or "0" <= char <= "9":
            return self.number(pos)
        if not char:
            self.fail("unexpected end of input, expected a value", pos)
        self.fail(f"unexpected character {char!r}, expected a value", pos)

    def object(self, pos: int, depth: int) -> tuple[dict[str, JSON], int]:
        self.check_depth(pos, depth)
        result: dict[str, JSON] = {}
        pos = self.skip_whitespace(pos + 1)
        if self.text.startswith("}", pos):
            return result, pos + 1
        while True:
            if not self.text.startswith('"', pos):
                self.fail("expected a string key", pos)
            key_pos = pos
            key, pos = self.string(pos)
            if key in result:
                self.fail(f"duplicate key {key!r}", key_pos)
            pos = self.skip_whitespace(pos)
            if not self.text.startswith(":", pos):
                self.fail("expected ':' after the key", pos)
            pos = self.skip_whitespace(pos + 1)
            result[key], pos = self.value(pos, depth)
            pos = self.skip_whitespace(pos)
            if self.text.startswith("}", pos):
                return result, pos + 1
            if not self.text.startswith(",", pos):
                self.fail("expected ',' or '}' in the object", pos)
            pos = self.skip_whitespace(pos + 1)

    def array(self, pos: int, depth: int) -> tuple[list[JSON], int]:
        self.check_depth(pos, depth)
        result: list[JSON] = []
        pos = self.skip_whitespace(pos + 1)
        if self.text.startswith("]", pos):
            return result, pos + 1
        while True:
            item, pos = self.value(pos, depth)
            result.append(item)
            pos = self.skip_whitespace(pos)
            if self.text.startswith("]", pos):
                return result, pos + 1
            if not self.text.startswith(",", pos):
                self.fail("expected ',' or ']' in the array", pos)
            pos = self.skip_whitespace(pos + 1)

    def check_depth(self, pos: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.fail(f"nesting deeper than {MAX_DEPTH} arrays/objects", pos)

    def string(self, pos: int) -> tuple[str, int]:
        """A string from its opening quote: runs of plain characters between escapes."""
        parts = []
        pos += 1
        while True:
            run = _PLAIN_CHARS.match(self.text, pos)
            assert run is not None  # the pattern also matches the empty string
            parts.append(run.group())
            pos = run.end()
            char = self.text[pos : pos + 1]
            if char == '"':
                return "".join(parts), pos + 1
            if char == "\\":
                decoded, pos = self.escape(pos)
                parts.append(decoded)
            elif not char:
                self.fail("unterminated string", pos)
            elif "\ud800" <= char <= "\udfff":
                self.fail(f"lone surrogate U+{ord(char):04X} in a string", pos)
            else:
                self.fail(f"control character {char!r} in a string (write it as an escape)", pos)

    def escape(self, pos: int) -> tuple[str, int]:
        """One escape from its backslash: `\\n`, `\\"`, ..., `\\uXXXX`, or a surrogate pair."""
        kind = self.text[pos + 1 : pos + 2]
        if kind in _ESCAPES:
            return _ESCAPES[kind], pos + 2
        if kind != "u":
            self.fail(f"invalid escape '\\{kind}'", pos)
        code = self.hex4(pos)
        if 0xDC00 <= code <= 0xDFFF:
            self.fail(f"lone low surrogate \\u{code:04x}", pos)
        if 0xD800 <= code <= 0xDBFF:
            if not self.text.startswith("\\u", pos + 6):
                self.fail(f"lone high surrogate \\u{code:04x} (no low surrogate follows)", pos)
            low = self.hex4(pos + 6)
            if not 0xDC00 <= low <= 0xDFFF:
                self.fail(f"high surrogate \\u{code:04x} followed by \\u{low:04x}, not a low surrogate", pos)
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), pos + 12
        return chr(code), pos + 6

    def hex4(self, pos: int) -> int:
        """The four hex digits of the `\\uXXXX` escape that starts at `pos`."""
        digits = _HEX4.match(self.text, pos + 2)
        if digits is None:
            self.fail("\\u must be followed by four hex digits", pos)
        return int(digits.group(), 16)

    def number(self, pos: int) -> tuple[int | float, int]:
        """-?int(.frac)?(e[+-]?exp)?: an int when there is no fraction and no exponent."""
        match = _NUMBER.match(self.text, pos)
        if match is None:
            self.fail("invalid number", pos)
        literal = match.group()
        if match.group(1) is None and match.group(2) is None:
            try:
                return int(literal), match.end()
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                self.fail(f"integer with {len(literal)} digits is too long", pos)
        return float(literal), match.end()
