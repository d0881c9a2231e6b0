r"""The pre-tokenizer: cutting text into words before byte-pair encoding.

Byte-pair encoding never merges across the pieces this step cuts, so the pieces decide what a
token can span: a space sticks to the word after it, digits stay single, punctuation keeps to
itself. Qwen2's tokenizer.json gives the cut as one regular expression; each alternative is a rule:

    (?i:'s|'t|'re|'ve|'m|'ll|'d)      contraction  's 't 're 've 'm 'll 'd, in any case
    [^\r\n\p{L}\p{N}]?\p{L}+          word         letters, with one leading non-letter (often a space)
    \p{N}                             digit        one number character: 2024 is 2, 0, 2, 4
     ?[^\s\p{L}\p{N}]+[\r\n]*         punctuation  symbols, an optional space before, line breaks after
    \s*[\r\n]+                        line_breaks  white space that ends in line breaks
    \s+(?!\S)                         spaces       white space, leaving the last space to the next word
    \s+                               space        the white space still left (before a digit or symbol)

At each position the first rule that matches wins and the text it matched is one piece:

    >>> pretokenize("Hello world! It's 2024.")
    ['Hello', ' world', '!', ' It', "'s", ' ', '2', '0', '2', '4', '.']
    >>> pretokenize("    return x\n\n")
    ['   ', ' return', ' x', '\n\n']
    >>> [(piece, rule) for piece, rule in pretokenize_traced("I'M ſo 12")]
    [('I', 'word'), ("'M", 'contraction'), (' ſo', 'word'), (' ', 'space'), ('1', 'digit'), ('2', 'digit')]

Python's `re` has no `\p{L}` (letters) or `\p{N}` (numbers), so we build both classes from
`unicodedata.category` (categories L* and N*), once, the first time they are needed (about 0.15 s
on CPython 3.12). Python's `re` and Oniguruma, the engine Hugging Face `tokenizers` runs this
pattern on, are both backtracking engines that try alternatives left to right, so with the same
character classes they cut the same pieces. Two classes need care:

- `\s` is the Unicode White_Space property in Oniguruma (PropList.txt: U+0009..U+000D, U+0020,
  U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000), which is
  `WHITE_SPACE` here. Python's own `\s` is `str.isspace()`, which also takes U+001C..U+001F.
- `(?i:...)` folds case the Unicode way in both engines: `'ſ` (U+017F LATIN SMALL LETTER LONG S)
  is a contraction like `'s`; no other non-ASCII letter folds to one of s, t, r, e, v, m, l, d.

What still differs is the Unicode version. `unicodedata` is Unicode 15.0 in CPython 3.12, 15.1 in
3.13 and 13.0 in PyPy 3.9, while the Oniguruma in `tokenizers` 0.23 knows Unicode 16.0. A letter or
number assigned after our version (about 5,000 code points for CPython 3.12, 9,900 for PyPy 3.9,
such as U+1C89 CYRILLIC CAPITAL LETTER TJE from Unicode 16.0) is an unassigned code point to us,
so we treat it as a symbol where Hugging Face treats it as a letter. Every assigned code point is
classified the same way (the tests check all 1,114,112 against Hugging Face).
"""

from __future__ import annotations

import functools
import re
import unicodedata

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""The pre-tokenizer pattern of Qwen2's tokenizer.json, in the Oniguruma syntax Hugging Face uses."""

WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
"""The 25 code points of the Unicode White_Space property (PropList.txt): `\\s` in Oniguruma."""

# The rules of QWEN2_PATTERN in order, as (name, Python pattern). {L}, {N}, {S} stand for the
# contents of a character class: letters, numbers, white space.
RULES = (
    ("contraction", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"),
    ("word", r"[^\r\n{L}{N}]?[{L}]+"),
    ("digit", r"[{N}]"),
    ("punctuation", r" ?[^{S}{L}{N}]+[\r\n]*"),
    ("line_breaks", r"[{S}]*[\r\n]+"),
    ("spaces", r"[{S}]+(?![^{S}])"),
    ("space", r"[{S}]+"),
)


def _class_ranges(code_points: list[tuple[int, int]]) -> str:
    """The inside of a regex character class for inclusive ranges: [(65, 90)] -> 'A-Z'."""
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in code_points)


@functools.lru_cache(maxsize=None)
def letter_and_number_classes() -> tuple[str, str]:
    """The insides of the `\\p{L}` and `\\p{N}` character classes, from this Python's `unicodedata`.

    One scan of all 1,114,112 code points writes the first letter of each category ('L', 'N',
    'P', 'S', 'Z', 'C', 'M') into one string; the runs of 'L' and of 'N' in it are the ranges.
    """
    majors = "".join([category[0] for category in map(unicodedata.category, map(chr, range(0x110000)))])
    letters = [(m.start(), m.end() - 1) for m in re.finditer("L+", majors)]
    numbers = [(m.start(), m.end() - 1) for m in re.finditer("N+", majors)]
    return _class_ranges(letters), _class_ranges(numbers)


def _pattern_source(named: bool) -> str:
    letters, numbers = letter_and_number_classes()
    white_space = re.escape(WHITE_SPACE)
    rules = [rule.replace("{L}", letters).replace("{N}", numbers).replace("{S}", white_space) for _, rule in RULES]
    if named:
        rules = [f"(?P<{name}>{rule})" for (name, _), rule in zip(RULES, rules)]
    return "|".join(rules)


@functools.lru_cache(maxsize=None)
def compiled_pattern(named: bool = False) -> re.Pattern[str]:
    """QWEN2_PATTERN as a Python regex; `named=True` puts each rule in a group named after it."""
    return re.compile(_pattern_source(named))


def pretokenize(text: str) -> list[str]:
    """Cut `text` into the pieces that byte-pair encoding works on, one by one."""
    return compiled_pattern().findall(text)


def pretokenize_traced(text: str) -> list[tuple[str, str]]:
    """Like `pretokenize`, with the name of the rule that matched each piece."""
    return [(match.group(), str(match.lastgroup)) for match in compiled_pattern(named=True).finditer(text)]
