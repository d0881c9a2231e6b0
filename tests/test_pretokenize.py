"""The pre-tokenizer cuts text exactly where Hugging Face's Split on Qwen2's pattern does."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from microqwen import pretokenize
from microqwen.pretokenize import WHITE_SPACE, letter_and_number_classes, pretokenize_traced

from . import tokenizer_fixtures
from .qwen_vocab import PATTERN


def test_the_pattern_is_the_one_in_qwen2_tokenizer_json() -> None:
    assert pretokenize.QWEN2_PATTERN == PATTERN


def test_hard_strings_are_cut_as_hugging_face_cuts_them() -> None:
    cases = tokenizer_fixtures.hard_strings()
    assert len(cases) >= 300
    wrong = [(c["text"], pretokenize.pretokenize(c["text"]), c["pre_tokens"]) for c in cases
             if pretokenize.pretokenize(c["text"]) != c["pre_tokens"]]  # fmt: skip
    assert wrong == []


def our_classes() -> list[str]:
    """Our class of every code point, read off the character classes the pattern is built from."""
    letters, numbers = letter_and_number_classes()
    every = "".join(chr(code) if not 0xD800 <= code <= 0xDFFF else "\0" for code in range(0x110000))
    classes = ["O"] * 0x110000
    for kind, body in [("L", letters), ("N", numbers), ("S", re.escape(WHITE_SPACE))]:
        for match in re.finditer(f"[{body}]+", every):
            classes[match.start() : match.end()] = [kind] * (match.end() - match.start())
    return classes


def test_every_code_point_is_classified_as_hugging_face_does() -> None:
    """Letter, number, white space or other, for all 1,114,112 code points.

    The one documented difference: a letter or number that Hugging Face's Oniguruma (Unicode 16.0)
    knows and this Python's unicodedata does not (an unassigned code point, 'Cn', to it).
    """
    hf, ours = tokenizer_fixtures.hf_classes(), our_classes()
    differences = [code for code in range(0x110000) if hf[code] != "surrogate" and hf[code] != ours[code]]
    newer = [code for code in differences if unicodedata.category(chr(code)) == "Cn" and ours[code] == "O"]
    assert [hex(code) for code in differences if code not in set(newer)] == []
    assert len(newer) < 12_000  # about 5,000 for CPython 3.12's Unicode 15.0, 9,900 for PyPy 3.9's 13.0


def test_white_space_is_the_unicode_property_not_pythons_isspace() -> None:
    hf = tokenizer_fixtures.hf_classes()
    assert "".join(chr(code) for code in range(0x110000) if hf[code] == "S") == WHITE_SPACE
    python_only = [c for c in map(chr, range(0x110000)) if c.isspace() and c not in WHITE_SPACE]
    assert python_only == ["\x1c", "\x1d", "\x1e", "\x1f"]  # so these are symbols, not spaces, to Qwen2


def test_contractions_fold_case_as_hugging_face_does() -> None:
    """After an apostrophe: which letters act as s/t/m/d, r/v, e and l ("'ſ" is "'s" folded)."""
    probes = tokenizer_fixtures.load("unicode.json")["contraction_probes"]
    letters = [chr(code) for code, kind in enumerate(our_classes()) if kind == "L"]
    for probe, accepted in probes.items():  # is everything before the final a one contraction?
        texts = {c: probe.format(c) for c in letters}
        assert [ord(c) for c, text in texts.items() if pretokenize.pretokenize(text) == [text[:-1], "a"]] == accepted
    assert "".join(map(chr, probes["'{}a"])) == "DMSTdmstſ"


def test_each_rule_by_name() -> None:
    text = "I'M here:\n\n  x  1\t!"
    case = tokenizer_fixtures.hard_string(text)
    assert [piece for piece, _ in pretokenize_traced(text)] == case["pre_tokens"]
    assert pretokenize_traced(text) == [
        ("I", "word"), ("'M", "contraction"), (" here", "word"), (":\n\n", "punctuation"), (" ", "spaces"),
        (" x", "word"), (" ", "spaces"), (" ", "space"), ("1", "digit"), ("\t", "space"), ("!", "punctuation"),
    ]  # fmt: skip
    assert [rule for _, rule in pretokenize_traced("x \n\n y")] == ["word", "line_breaks", "word"]


@given(st.text(st.characters(blacklist_categories=["Cs"]), max_size=60))
def test_pieces_cover_the_text_and_traced_pieces_are_the_same(text: str) -> None:
    pieces = pretokenize.pretokenize(text)
    assert "".join(pieces) == text and all(pieces)
    assert [piece for piece, _ in pretokenize_traced(text)] == pieces
