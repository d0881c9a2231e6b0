"""The tokenizer gives Hugging Face's ids, text and streamed chunks on the real Qwen2.5 vocabulary."""

from __future__ import annotations

import json
import pathlib
import unicodedata
from typing import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microqwen.errors import FormatError, UsageError
from microqwen.pretokenize import pretokenize
from microqwen.tokenizer import (
    BYTES_TO_UNICODE, AddedToken, Tokenizer, format_trace, from_byte_level, plain_bpe, to_byte_level,
)  # fmt: skip

from . import qwen_vocab, tokenizer_fixtures

# Published encodings, see docs/reference/qwen2.5-0.5b.md.
PUBLISHED = {
    "Hello world": [9707, 1879],
    " Hello world": [21927, 1879],
    "The capital of France is": [785, 6722, 315, 9625, 374],
    "\n": [198],
    " ": [220],
    "": [],
}
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=80)


@pytest.mark.parametrize("text", list(PUBLISHED))
def test_published_encodings(qwen: Tokenizer, text: str) -> None:
    assert qwen.encode(text) == PUBLISHED[text]


def test_sizes_and_special_tokens(qwen: Tokenizer) -> None:
    assert len(qwen.vocab) == 151_643 and len(qwen.bpe_ranks) == 151_387
    assert qwen.vocab_size == 151_665
    for token_id, content, special in qwen_vocab.ADDED_TOKENS:
        assert qwen.token_to_id(content) == token_id and qwen.id_to_token(token_id) == content
        assert qwen.is_special(token_id) is special
    assert qwen.eos_token_id == 151645
    assert qwen.token_to_id("Ġworld") == 1879 and qwen.id_to_token(1879) == "Ġworld"
    assert qwen.id_to_token(151_665) is None and qwen.id_to_token(-1) is None and qwen.token_to_id("nope") is None


def test_hard_strings_give_hugging_faces_ids(qwen: Tokenizer) -> None:
    cases = tokenizer_fixtures.hard_strings()
    assert len(cases) >= 300
    wrong = [case["text"] for case in cases if qwen.encode(case["text"]) != case["ids"]]
    assert wrong == []


def test_special_tokens_as_text_give_hugging_faces_ids(qwen: Tokenizer) -> None:
    """allow_special=False is Hugging Face's encode_special_tokens=True: <tool_call> (not special) stays one token."""
    cases = tokenizer_fixtures.hard_strings()
    wrong = [case["text"] for case in cases if qwen.encode(case["text"], allow_special=False) != case["ids_special_as_text"]]
    assert wrong == []
    assert qwen.encode("<|im_end|><tool_call>", allow_special=False)[-1] == 151657


def test_vocab_json_and_merges_txt_give_the_same_ids(qwen_from_vocab_and_merges: Tokenizer) -> None:
    cases = tokenizer_fixtures.hard_strings()
    wrong = [case["text"] for case in cases if qwen_from_vocab_and_merges.encode(case["text"]) != case["ids"]]
    assert wrong == []
    assert qwen_from_vocab_and_merges.eos_token_id == 151645


def test_the_corpus_gives_hugging_faces_ids(qwen: Tokenizer) -> None:
    corpus = tokenizer_fixtures.load("corpus.json.gz")
    assert corpus["utf8_bytes"] >= 1_000_000 and len(corpus["documents"]) >= 40
    wrong = [doc["name"] for doc in corpus["documents"] if qwen.encode(doc["text"]) != doc["ids"]]
    assert wrong == []


def test_decoding_the_corpus_gives_back_its_nfc_text(qwen: Tokenizer) -> None:
    """decode(encode(s)) == s for NFC text; NFD text comes back composed (NFC), the documented exception."""
    nfd = 0
    for doc in tokenizer_fixtures.corpus_documents():
        text = doc["text"]
        if unicodedata.is_normalized("NFC", text):
            assert qwen.decode(doc["ids"]) == text, doc["name"]
        else:
            nfd += 1
            assert qwen.decode(doc["ids"]) == unicodedata.normalize("NFC", text) != text, doc["name"]
    assert nfd >= 2


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_round_trip_is_nfc(qwen: Tokenizer, text: str) -> None:
    assert qwen.decode(qwen.encode(text)) == unicodedata.normalize("NFC", text)
    assert qwen.decode(qwen.encode(text, allow_special=False)) == unicodedata.normalize("NFC", text)


def test_decode_gives_hugging_faces_text(qwen: Tokenizer) -> None:
    """Random ids, characters cut between tokens, special tokens in between, with and without skipping."""
    cases = tokenizer_fixtures.load("decode.json")["cases"]
    assert any("\ufffd" in case["text"] for case in cases)
    assert [case["ids"] for case in cases if qwen.decode(case["ids"]) != case["text"]] == []
    skipped = [case["ids"] for case in cases if qwen.decode(case["ids"], skip_special_tokens=True) != case["text_skip_special"]]
    assert skipped == []


def test_stream_decoder_against_hugging_faces_decode_stream(qwen: Tokenizer) -> None:
    """Hugging Face's DecodeStream waits until all its text ends on a whole character; we give each
    character as soon as it is whole. So after every id its text is a prefix of ours, and the same
    whenever it gives a chunk."""
    for case in tokenizer_fixtures.load("decode.json")["streams"]:
        stream = qwen.stream_decoder()
        ours, theirs = "", ""
        for token_id, chunk in zip(case["ids"], case["chunks"]):
            ours += stream.feed(token_id)
            theirs += chunk or ""
            assert ours.startswith(theirs) and (chunk is None or ours == theirs), case["text"]
        assert ours + stream.flush() == unicodedata.normalize("NFC", case["text"])
    assert sum(chunk is None for case in tokenizer_fixtures.load("decode.json")["streams"] for chunk in case["chunks"]) > 5


def test_stream_decoder_flushes_an_unfinished_character_as_a_replacement(qwen: Tokenizer) -> None:
    first_byte_of_wen = qwen.vocab[to_byte_level("文")[0]]  # 文 is E6 96 87; the one-byte token E6
    stream = qwen.stream_decoder()
    assert stream.feed(first_byte_of_wen) == ""
    assert stream.flush() == "\ufffd" == qwen.decode([first_byte_of_wen])
    assert stream.feed(qwen.vocab["Ġ"]) == " "  # a flushed stream starts afresh


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 151_664), max_size=12), st.booleans())
def test_streamed_chunks_join_to_decode(qwen: Tokenizer, ids: list[int], skip: bool) -> None:
    stream = qwen.stream_decoder(skip_special_tokens=skip)
    chunks = [stream.feed(token_id) for token_id in ids]
    assert "".join(chunks) + stream.flush() == qwen.decode(ids, skip_special_tokens=skip)


def test_trace_shows_every_step(qwen: Tokenizer) -> None:
    trace = qwen.encode_traced("Hi<|im_end|> cafe\u0301's")
    assert trace.ids == qwen.encode("Hi<|im_end|> cafe\u0301's")
    first, added, last = trace.segments
    assert (first.text, added.text, added.added_id) == ("Hi", "<|im_end|>", 151645)
    assert last.nfc == " café's" and [(w.text, w.rule) for w in last.words] == [(" café", "word"), ("'s", "contraction")]
    word = last.words[0]
    assert word.byte_level == "ĠcafÃ©" == to_byte_level(" café")
    assert [step.rank for step in word.steps] == sorted(step.rank for step in word.steps)
    assert word.steps[-1].symbols == tuple(word.tokens) and [qwen.vocab[t] for t in word.tokens] == word.ids
    for step in word.steps:
        assert qwen.bpe_ranks[step.left, step.right] == step.rank
    text = format_trace(trace)
    assert "rank" in text and "contraction" in text and str(trace.ids) in text


def test_traced_ids_match_on_hard_strings(qwen: Tokenizer) -> None:
    cases = tokenizer_fixtures.hard_strings()
    assert [case["text"] for case in cases if qwen.encode_traced(case["text"]).ids != case["ids"]] == []


def bpe_words(tokenizer: Tokenizer, texts: Iterable[str]) -> set[str]:
    """The distinct byte-level words that `encode` hands to BPE for `texts` (after steps 1-4)."""
    words: set[str] = set()
    for text in texts:
        for piece, added_id in tokenizer.split_added_tokens(text):
            if added_id is None:
                words.update(to_byte_level(word) for word in pretokenize(unicodedata.normalize("NFC", piece)))
    return words


def test_the_heap_bpe_equals_the_plain_one_on_the_hard_strings_and_the_corpus(qwen: Tokenizer) -> None:
    texts = [case["text"] for case in tokenizer_fixtures.hard_strings()]
    words = bpe_words(qwen, texts + [doc["text"] for doc in tokenizer_fixtures.corpus_documents()])
    assert len(words) > 30_000 and max(map(len, words)) >= 1000  # a 1,000-byte run is one word
    assert [word for word in sorted(words) if qwen.bpe(word) != plain_bpe(word, qwen.bpe_ranks)] == []


@pytest.mark.parametrize("name", list(qwen_vocab.SMALL_TOKENIZERS))
def test_the_plain_bpe_gives_hugging_faces_ids_on_the_small_vocabularies(tmp_path: pathlib.Path, name: str) -> None:
    """Merges out of order and two merges that make one token: the reference, too, merges as Hugging Face does."""
    tokenizer = Tokenizer.from_dir(str(qwen_vocab.write_small_tokenizer(tmp_path, name)))
    for case in tokenizer_fixtures.load("small.json")[name]:
        words = pretokenize(case["text"])
        ids = [tokenizer.vocab[token] for word in words for token in plain_bpe(to_byte_level(word), tokenizer.bpe_ranks)]
        assert ids == case["ids"], case["text"]


@st.composite
def merges_and_words(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[str]]:
    """Merges over 'a', 'b', 'c' and the tokens they make, in any order (repeats too), and words to merge."""
    tokens, merges = ["a", "b", "c"], []
    for _ in range(draw(st.integers(0, 14))):
        left, right = draw(st.sampled_from(tokens)), draw(st.sampled_from(tokens))
        merges.append((left, right))
        if left + right not in tokens:
            tokens.append(left + right)
    return draw(st.permutations(merges)), draw(st.lists(st.text("abc", max_size=24), min_size=1, max_size=8))


@settings(max_examples=300, deadline=None)
@given(merges_and_words())
def test_the_heap_bpe_equals_the_plain_one_for_any_merges(example: tuple[list[tuple[str, str]], list[str]]) -> None:
    merges, words = example
    vocab = {char: byte for byte, char in enumerate(BYTES_TO_UNICODE)}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    tokenizer = Tokenizer(vocab, merges)
    for word in words:
        assert tokenizer.bpe(word) == plain_bpe(word, tokenizer.bpe_ranks), word


def test_the_byte_table_is_gpt2s() -> None:
    table = qwen_vocab.bytes_to_unicode()
    assert BYTES_TO_UNICODE == [table[byte] for byte in range(256)]
    assert from_byte_level(to_byte_level("é 中\n")) == "é 中\n".encode()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", tokenizer_fixtures.load("hard_strings.json")["refused"], ids=lambda c: str(c["code_points"]))
def test_lone_surrogates_are_refused_as_hugging_face_refuses_them(qwen: Tokenizer, case: dict[str, object]) -> None:
    text = "".join(map(chr, case["code_points"]))  # type: ignore[call-overload]
    with pytest.raises(UsageError, match="lone surrogate U\\+D[89A-F][0-9A-F]{2} at character"):
        qwen.encode(text)
    with pytest.raises(UsageError, match="lone surrogate"):
        qwen.encode_traced(text)


@pytest.mark.parametrize("ids", [[9707, 151_665], [-1], [9707, 10**9]])
def test_ids_out_of_range_are_refused(qwen: Tokenizer, ids: list[int]) -> None:
    with pytest.raises(UsageError, match=f"token id {ids[-1]} at position {len(ids) - 1} is not in the vocabulary \\(ids 0..151664\\)"):
        qwen.decode(ids)


SMALL_VOCAB = qwen_vocab.small_vocab("hello")
SMALL_MERGES = qwen_vocab.SMALL_TOKENIZERS["hello"][1]


def write_small(directory: pathlib.Path, merges: object = None, pattern: str | None = None) -> pathlib.Path:
    """A tokenizer.json of Qwen2's kind with a small vocabulary (fast to load)."""
    raw = qwen_vocab.tokenizer_json(SMALL_VOCAB, SMALL_MERGES)
    raw["model"]["merges"] = SMALL_MERGES if merges is None else merges  # type: ignore[index]
    if pattern is not None:
        raw["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern  # type: ignore[index]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return directory


def write_vocab_merges(directory: pathlib.Path, merges_txt: str, vocab: dict[str, int] = SMALL_VOCAB) -> pathlib.Path:
    """The older layout: vocab.json and merges.txt (text as given), no tokenizer.json."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text(merges_txt, encoding="utf-8")
    return directory


@pytest.mark.parametrize("name", list(qwen_vocab.SMALL_TOKENIZERS))
def test_small_vocabularies_merge_as_hugging_face_does(tmp_path: pathlib.Path, name: str) -> None:
    """Merges listed out of order, and two merges that make the same token, as Hugging Face orders them."""
    tokenizer = Tokenizer.from_dir(str(qwen_vocab.write_small_tokenizer(tmp_path, name)))
    cases = tokenizer_fixtures.load("small.json")[name]
    assert [case["text"] for case in cases if tokenizer.encode(case["text"]) != case["ids"]] == []
    assert [case["text"] for case in cases if tokenizer.decode(case["ids"]) != case["text"]] == []


def test_invalid_json_names_file_line_and_column(tmp_path: pathlib.Path) -> None:
    (tmp_path / "tokenizer.json").write_text('{\n  "model": {\n    "vocab": {"a": 1,}\n  }\n}')
    with pytest.raises(FormatError, match="tokenizer.json: line 3 column 22: expected a string key"):
        Tokenizer.from_dir(str(tmp_path))


def test_a_merge_naming_an_unknown_token_names_the_line_of_merges_txt(tmp_path: pathlib.Path) -> None:
    write_vocab_merges(tmp_path, "h e\nl l\n\nhe ll\nhell zzz\n")
    with pytest.raises(FormatError, match="merges.txt line 5: merge 'hell' 'zzz' names 'zzz', which is not in the vocabulary"):
        Tokenizer.from_dir(str(tmp_path))


def test_a_merge_naming_an_unknown_token_in_tokenizer_json(tmp_path: pathlib.Path) -> None:
    write_small(tmp_path, merges=["h e", "l l", "Ġ zzz"])
    with pytest.raises(FormatError, match=r"tokenizer.json: model.merges\[2\]: merge 'Ġ' 'zzz' names 'zzz'"):
        Tokenizer.from_dir(str(tmp_path))
    write_small(tmp_path, merges=["h e", "he l"])
    with pytest.raises(FormatError, match=r"model.merges\[1\]: merge 'he' 'l' names 'hel', which is not in the vocabulary"):
        Tokenizer.from_dir(str(tmp_path))


def test_merges_as_pairs_or_with_a_version_header_mean_the_same(tmp_path: pathlib.Path) -> None:
    strings = Tokenizer.from_dir(str(write_small(tmp_path / "strings")))
    pairs = Tokenizer.from_dir(str(write_small(tmp_path / "pairs", merges=[m.split(" ") for m in SMALL_MERGES])))
    versioned = write_vocab_merges(tmp_path / "versioned", "#version: 0.2\r\n" + "\r\n".join(SMALL_MERGES))
    plain = write_vocab_merges(tmp_path / "plain", "\n".join(SMALL_MERGES) + "\n")
    for tokenizer in [pairs, Tokenizer.from_dir(str(versioned)), Tokenizer.from_dir(str(plain))]:
        assert tokenizer.bpe_ranks == strings.bpe_ranks == {tuple(m.split(" ")): i for i, m in enumerate(SMALL_MERGES)}


def test_a_first_line_that_is_a_merge_is_not_skipped(tmp_path: pathlib.Path) -> None:
    write_vocab_merges(tmp_path, "# #\nh e\n", dict(SMALL_VOCAB, **{"##": 261}))
    assert Tokenizer.from_dir(str(tmp_path)).bpe_ranks == {("#", "#"): 0, ("h", "e"): 1}


@pytest.mark.parametrize("merge", ["a", "a b c", ["a"], 7, ["a", ""]])
def test_a_malformed_merge_in_tokenizer_json(tmp_path: pathlib.Path, merge: object) -> None:
    write_small(tmp_path, merges=["h e", merge])
    with pytest.raises(FormatError, match=r"model.merges\[1\]: a merge must be"):
        Tokenizer.from_dir(str(tmp_path))


def test_a_bad_merges_line_is_named(tmp_path: pathlib.Path) -> None:
    write_vocab_merges(tmp_path, "Ġ w\nh e\nt h e\n")
    with pytest.raises(FormatError, match="merges.txt line 3: expected two tokens separated by one space, got 't h e'"):
        Tokenizer.from_dir(str(tmp_path))


def test_a_different_pre_tokenizer_is_refused(tmp_path: pathlib.Path) -> None:
    write_small(tmp_path, pattern=r"\s+|\S+")
    with pytest.raises(FormatError, match="tokenizer.json: pre_tokenizer is not Qwen2's"):
        Tokenizer.from_dir(str(tmp_path))


def test_a_directory_without_tokenizer_files(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FormatError, match="no tokenizer.json, and no vocab.json \\+ merges.txt"):
        Tokenizer.from_dir(str(tmp_path))


def test_a_vocabulary_without_the_byte_tokens_is_refused() -> None:
    with pytest.raises(FormatError, match="lacks 256 of the 256 one-byte tokens"):
        Tokenizer({"a b": 0}, [])
    base = {char: byte for byte, char in enumerate(BYTES_TO_UNICODE)}
    with pytest.raises(FormatError, match="token 'a b' \\(id 256\\) is not written in byte-level characters"):
        Tokenizer(dict(base, **{"a b": 256}), [])
    with pytest.raises(FormatError, match="token id 3 is given to both"):
        Tokenizer(base, [], [AddedToken(3, "<x>", True)])
