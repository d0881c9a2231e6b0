"""Our JSON parser against the standard library's `json`, the judge for RFC 8259."""

from __future__ import annotations

import json
import platform
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microqwen import jsonparse
from microqwen.errors import FormatError


class Refused(Exception):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Refused("duplicate key")
    return dict(pairs)


def _refuse_constant(name: str) -> Any:
    raise Refused(name)


def _check_strict(value: Any, depth: int = 0) -> None:
    """What our parser also refuses and `json` accepts: lone surrogates, deep nesting."""
    if isinstance(value, (list, dict)):
        if depth + 1 > jsonparse.MAX_DEPTH:
            raise Refused("too deep")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            _check_strict(key, depth + 1)
            _check_strict(item, depth + 1)
    if isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise Refused("lone surrogate")


def reference(text: str) -> Any:
    """`json.loads`, made as strict as RFC 8259 and a model loader ask (see jsonparse's docstring)."""
    try:
        value = json.loads(text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError; so is a 5000-digit int
        raise Refused(str(e)) from None
    _check_strict(value)
    return value


def outcome(parse: Any, text: str) -> tuple[str, Any]:
    try:
        return "ok", parse(text)
    except (FormatError, Refused):
        return "refused", None


ON_PYPY = platform.python_implementation() == "PyPy"
differential = pytest.mark.skipif(ON_PYPY, reason="PyPy's json accepts malformed \\u escapes such as \\u001 f")


def same_outcome(text: str) -> None:
    ours, theirs = outcome(jsonparse.parse, text), outcome(reference, text)
    assert ours[0] == theirs[0], f"{text!r}: ours {ours[0]}, json {theirs[0]}"
    assert ours[1] == theirs[1] and repr(ours[1]) == repr(theirs[1])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@differential
@given(json_values, st.sampled_from([None, 0, 2, "\t"]), st.booleans())
def test_documents_json_writes_parse_to_the_same_value(value: Any, indent: Any, ascii_only: bool) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    same_outcome(text)


@differential
@given(json_values, st.data())
@settings(max_examples=300)
def test_mutated_documents_are_accepted_or_refused_like_json(value: Any, data: st.DataObject) -> None:
    text = json.dumps(value, ensure_ascii=data.draw(st.booleans()))
    position = data.draw(st.integers(0, len(text)))
    edit = data.draw(st.sampled_from(["delete", "insert", "replace"]))
    char = data.draw(st.sampled_from(list('{}[]",:\\ \n\t0123456789-+.eEtrufalsn\x00\x1fé\ud800') + ["\\u", "\\ud83d"]))
    if edit == "delete":
        text = text[:position] + text[position + 1 :]
    elif edit == "insert":
        text = text[:position] + char + text[position:]
    else:
        text = text[:position] + char + text[position + 1 :]
    same_outcome(text)


@differential
@given(st.text(alphabet=st.sampled_from(list('{}[]",:\\ 0123456789-.eEtrufalsn')), max_size=20))
def test_random_short_strings_are_judged_like_json(text: str) -> None:
    same_outcome(text)


VALID = [
    '{"a": [1, 2.5, -3e-2, 0, -0, 1E+2, true, false, null]}',
    '"\\ud83d\\ude00 \\u00e9 \\" \\\\ \\/ \\b \\f \\n \\r \\t"',
    " \t\r\n[ ] ",
    "123456789012345678901234567890",
    '{"": ""}',
    "1e400",
]

MALFORMED = [
    ("", "line 1 column 1: unexpected end of input"),
    ('{"a": 1,}', "line 1 column 9: expected a string key"),
    ("[1, 2,]", "line 1 column 7: unexpected character ']'"),
    ("[1 2]", "line 1 column 4: expected ',' or ']'"),
    ('{"a" 1}', "line 1 column 6: expected ':'"),
    ('{"a": 1} x', "line 1 column 10: unexpected text after the JSON value"),
    ('"tab\there"', "line 1 column 5: control character '\\t'"),
    ('"\\ud800"', "line 1 column 2: lone high surrogate"),
    ('"\\udc00"', "line 1 column 2: lone low surrogate"),
    ('"\\ud800\\u0041"', "followed by \\u0041, not a low surrogate"),
    ('"\\x41"', "invalid escape '\\x'"),
    ('"\\u12G4"', "four hex digits"),
    ("NaN", "unexpected character 'N'"),
    ("Infinity", "unexpected character 'I'"),
    ("-Infinity", "invalid number"),
    ("[01]", "line 1 column 3: expected ',' or ']'"),
    ("1.", "line 1 column 2: unexpected text"),
    (".5", "unexpected character '.'"),
    ("tru", "unexpected character 't'"),
    ('"open', "unterminated string"),
    ('{"a": 1, "a": 2}', "line 1 column 10: duplicate key 'a'"),
    ("[" * 101 + "]" * 101, f"nesting deeper than {jsonparse.MAX_DEPTH}"),
    ('{\n  "a": 1,\n  "b": \n}', "line 4 column 1: unexpected character '}'"),
]


@pytest.mark.parametrize("text", VALID)
def test_valid_documents(text: str) -> None:
    assert jsonparse.parse(text) == json.loads(text)


@pytest.mark.parametrize("text, message", MALFORMED)
def test_malformed_documents_name_line_column_and_fault(text: str, message: str) -> None:
    with pytest.raises(FormatError, match="^config.json: .*" + __import__("re").escape(message)):
        jsonparse.parse(text, "config.json")
    if not ON_PYPY:
        same_outcome(text)


def test_deep_nesting_is_an_error_not_a_recursion_error() -> None:
    with pytest.raises(FormatError, match="nesting deeper"):
        jsonparse.parse("[" * 100_000)


def test_nesting_up_to_the_limit_is_fine() -> None:
    depth = jsonparse.MAX_DEPTH
    assert jsonparse.parse("[" * depth + "]" * depth) == json.loads("[" * depth + "]" * depth)


def test_bytes_must_be_utf8_without_bom() -> None:
    with pytest.raises(FormatError, match="h.json: byte 3 is not valid UTF-8"):
        jsonparse.parse_bytes(b'"ab\xff"', "h.json")
    with pytest.raises(FormatError, match="byte-order mark"):
        jsonparse.parse_bytes(b'\xef\xbb\xbf{}', "h.json")
    assert jsonparse.parse_bytes('{"é": "中"}'.encode()) == {"é": "中"}


def test_missing_file_names_the_path(tmp_path: Any) -> None:
    with pytest.raises(FormatError, match="nothere.json: cannot read"):
        jsonparse.parse_file(str(tmp_path / "nothere.json"))


def test_huge_integer_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="too long"):
        jsonparse.parse("9" * 5000)
