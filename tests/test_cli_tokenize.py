"""`microqwen tokenize`: ids with their pieces, --json, --show-merges, standard input, errors."""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from microqwen.cli import main

from . import tokenizer_fixtures

DOCS_PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "concepts" / "tokenizer.md"


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """The real command line, in a fresh interpreter, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "microqwen", *args], input=stdin, capture_output=True, timeout=300)


def test_ids_with_their_pieces(qwen_dir: pathlib.Path) -> None:
    result = run("tokenize", "--model", str(qwen_dir), "Hello world 中")
    assert result.returncode == 0, result.stderr
    rows = [line.split(maxsplit=2) for line in result.stdout.decode().splitlines()]
    assert [int(row[0]) for row in rows] == tokenizer_fixtures.hard_string("Hello world 中")["ids"]
    assert [row[1:] for row in rows] == [["Hello", "'Hello'"], ["Ġworld", "' world'"], ["Ġä¸Ń", "' 中'"]]
    assert result.stderr.decode() == "3 tokens, 13 characters\n"


def test_json_and_stdin_keep_crlf(qwen_dir: pathlib.Path) -> None:
    text = tokenizer_fixtures.hard_string("line1\r\nline2")
    result = run("tokenize", "--json", "--model", str(qwen_dir), "-", stdin=text["text"].encode())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == text["ids"]


def test_a_piece_of_a_character_is_shown_as_bytes(qwen_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    family = "👨\u200d👩\u200d👧\u200d👦"  # the joiner U+200D (E2 80 8D) is cut between two tokens
    case = tokenizer_fixtures.hard_string(family)
    assert main(["tokenize", "--model", str(qwen_dir), family]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in lines] == case["ids"]
    assert any("b'" in line for line in lines)


def test_show_merges(qwen_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenize", "--show-merges", "--model", str(qwen_dir), "Hello world<|im_end|>"]) == 0
    out = capsys.readouterr().out
    assert "3. pre-tokens: 'Hello' word | ' world' word" in out
    assert "1. added token '<|im_end|>' = 151645" in out
    assert out.rstrip().endswith("ids [9707, 1879, 151645]")


def test_no_special_reads_special_tokens_as_text(qwen_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = tokenizer_fixtures.hard_string("<|im_end|>\n")
    assert main(["tokenize", "--json", "--no-special", "--model", str(qwen_dir), case["text"]]) == 0
    assert json.loads(capsys.readouterr().out) == case["ids_special_as_text"]


def test_bad_input_is_one_line_and_exit_2(qwen_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    result = run("tokenize", "--model", str(tmp_path), "x")
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode().startswith("microqwen: error: ") and "no tokenizer.json" in result.stderr.decode()
    result = run("tokenize", "--model", str(qwen_dir), "-", stdin=b"ok \xff")
    assert result.returncode == 2 and b"standard input is not UTF-8 text: byte 3" in result.stderr
    assert result.stderr.count(b"\n") == 1


def console_examples(page: pathlib.Path) -> list[tuple[str, str]]:
    """Each `$ microqwen tokenize ...` line in the page's console blocks, with the output shown under it."""
    examples: list[tuple[str, str]] = []
    for block in re.findall(r"```console\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
        for command in re.split(r"^(?=\$ )", block, flags=re.M):
            if command.startswith("$ microqwen tokenize"):
                first, _, output = command.partition("\n")
                examples.append((first[2:], output))
    return examples


def test_the_docs_examples_are_real_output(qwen_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The docs page shows `microqwen tokenize` output made with the real vocabulary: run it again."""
    examples = console_examples(DOCS_PAGE)
    assert len(examples) >= 4
    for command, output in examples:
        args = [str(qwen_dir) if arg == "DIR" else arg for arg in shlex.split(command)[1:]]
        assert main(args) == 0
        assert capsys.readouterr().out == output, command
        case = tokenizer_fixtures.hard_string(args[-1])
        assert shown_ids(args, output) == case["ids_special_as_text" if "--no-special" in args else "ids"], command


def shown_ids(args: list[str], output: str) -> list[int]:
    """The ids an example's output shows: a JSON list, the `ids [...]` line of --show-merges, or a table."""
    if "--json" in args:
        listed = output
    elif "--show-merges" in args:
        listed = output.splitlines()[-1].removeprefix("ids ")
    else:
        return [int(line.split()[0]) for line in output.splitlines()]
    ids: list[int] = json.loads(listed)
    return ids
