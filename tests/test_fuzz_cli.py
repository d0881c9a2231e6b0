"""Fuzzing the command line: random arguments for every subcommand.

The only allowed outcomes are a normal result (exit 0, or 1 for `trace --compare` finding a
difference) or exit 2 with ONE line on stderr and no traceback. Most runs call `cli.main(argv)`
in this process, with stdin, stdout and stderr replaced, for speed; a handful go through a real
`python -m microqwen` subprocess, where the interpreter's own text encoding of argv, stdin and
stdout is in play too.

The arguments are drawn from the subcommand's own flags (read from the parser), values that are
wrong in every way a person or a script gets them wrong (negative, huge, nan, empty, not a number,
a lone surrogate as Python makes of bytes that are not UTF-8), and paths to a good tiny model, a
broken one, a plain file and nothing. The Hub is unreachable (HF_HUB_OFFLINE=1) so that a Hub id
ends in a quick error, not a download.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import subprocess
import sys
from typing import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microqwen import cli

from .fuzzing import fuzz
from .tiny_model import write_byte_tokenizer, write_tiny_chat_model, write_tiny_model

COMMANDS = ["inspect", "bench", "download", "tokenize", "generate", "chat", "trace"]


def flags_of(command: str) -> list[str]:
    """Every option string of one subcommand, read from the parser itself."""
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = subparsers.choices[command]
    return sorted(s for action in sub._actions for s in action.option_strings if s not in ("-h", "--help"))


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A good tiny chat model (context 96), a model whose config.json is not JSON, a plain file."""
    root = tmp_path_factory.mktemp("cli-fuzz")
    good = write_tiny_model(root / "good", seed=1, vocab_size=260, eos_token_id=258, max_position_embeddings=96)
    write_byte_tokenizer(good)
    broken = write_tiny_model(root / "broken")
    (broken / "config.json").write_text("{not json")
    (root / "note.txt").write_text("hello")
    return {"good": str(good), "broken": str(broken), "file": str(root / "note.txt"),
            "weights": str(good / "model.safetensors"), "missing": str(root / "missing"), "out": str(root / "out.json"),
            "nodir": str(root / "no" / "such" / "dir" / "out.json")}  # fmt: skip


@pytest.fixture(autouse=True)
def no_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, and a bench that times its kernel for 10 ms instead of 2 s."""
    from microqwen.workers import kernel_rate

    monkeypatch.setattr("microqwen.bench.kernel_rate", lambda matrix, seconds: kernel_rate(matrix, 0.01))
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


NUMBERS = ["0", "1", "2", "3", "-1", "-7", "17", "95", "96", "97", "100000", "99999999999999999999", "1e3", "0.5",
           "nan", "inf", "-inf", "-0", "0x10", "1_0", "", " ", "abc", "1,2"]  # fmt: skip
TEXTS = ["hi", "", "-", "<|im_end|>", "Hello world", "a\r\nb", "é中😀", "\udcff\udcfe", "x" * 300, "--", "/reset",
         "1,2,3", "3,-5", "259,258", "1,,2", "q_proj,attn_weights", "0,3,20-23", "0-1", "*", "layers.0"]  # fmt: skip
PATHS = ["good", "broken", "file", "weights", "missing", "out", "nodir"]
SMALL_VALUED = {"-n", "--n-predict", "--prompt-tokens", "--decode-tokens"}


def value_for(flag: str, data: st.DataObject, places: dict[str, str]) -> str:
    if flag in ("-m", "--model", "--json", "--html", "--compare") or data.draw(st.integers(0, 9), label="a path?") == 0:
        kind = data.draw(st.sampled_from(PATHS + ["hub"]), label="path")
        return "Qwen/Qwen2.5-0.5B-Instruct" if kind == "hub" else places[kind]
    if flag == "--workers":
        return data.draw(st.sampled_from(["0", "0", "0", "1", "-1", "x", "2"]), label="workers")
    if flag in SMALL_VALUED:
        return data.draw(st.sampled_from(["0", "1", "3", "-1", "-2", "x", "200", "100000000", "nan"]), label="count")
    if flag == "--kernel":
        return data.draw(st.sampled_from(["naive", "unrolled", "fast", ""]), label="kernel")
    return data.draw(st.sampled_from(NUMBERS + TEXTS) | st.text(max_size=8), label="value")


def argv_for(command: str, data: st.DataObject, places: dict[str, str]) -> list[str]:
    """The subcommand, a few of its flags with values, and perhaps a positional argument."""
    flags = flags_of(command)
    argv = [command]
    if "--workers" in flags:
        argv += ["--workers", "0"]  # the default (one per CPU) would start processes in every run
    if command in ("generate", "chat") and data.draw(st.booleans(), label="good model"):
        argv += ["-m", places["good"], "-n", "4"]
    for _ in range(data.draw(st.integers(0, 5), label="flags")):
        flag = data.draw(st.sampled_from(flags + ["--bogus", "-z"]), label="flag")
        argv.append(flag)
        if data.draw(st.integers(0, 7), label="drop the value") > 0:
            argv.append(value_for(flag, data, places))
    if command in ("inspect", "download", "tokenize") or data.draw(st.integers(0, 5), label="positional") == 0:
        argv.insert(data.draw(st.integers(1, len(argv)), label="at"), value_for("", data, places))
    return argv


@contextlib.contextmanager
def standard_streams(stdin: bytes) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8", errors="surrogateescape")
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


def run_main(argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """`cli.main(argv)` in this process: (exit status, stdout, stderr)."""
    with standard_streams(stdin) as (out, err):
        try:
            status = cli.main(argv)
        except SystemExit as e:  # argparse: --help, --version, and mistakes in the arguments
            status = e.code if isinstance(e.code, int) else 2
    return status, out.getvalue(), err.getvalue()


def check_outcome(argv: list[str], status: int, stderr: str) -> None:
    shown = f"argv {argv!r}: exit {status}, stderr {stderr!r}"
    assert "Traceback" not in stderr, shown
    assert status in (0, 1, 2), shown
    if status == 2:  # the error is the last line; before it only bench's progress or chat's notes
        lines = stderr.splitlines()
        assert stderr.endswith("\n") and stderr.count("error:") == 1, shown
        assert lines[-1].startswith("microqwen") and "error:" in lines[-1], shown
        assert all(line.startswith(("bench: ", "microqwen: ", "(history cleared)")) for line in lines[:-1]), shown
    if status == 1:
        assert argv[0] == "trace" and "--compare" in argv, shown


STDIN = [b"", b"Hello\n", b"hi\n/reset\nthere\n/exit\n", b"\xff\xfe not UTF-8\n", "é中\n".encode(), b"\x00\n" * 3]


@pytest.mark.parametrize("command", COMMANDS)
def test_random_arguments(command: str, places: dict[str, str]) -> None:
    """Each subcommand gets its own budget of examples (see tests/fuzzing.py)."""

    @fuzz(quick=60 if command != "bench" else 15, long=2_000 if command != "bench" else 300)
    @given(st.data(), st.sampled_from(STDIN))
    def run(data: st.DataObject, stdin: bytes) -> None:
        argv = argv_for(command, data, places)
        status, _, stderr = run_main(argv, stdin)
        check_outcome(argv, status, stderr)

    run()


def test_no_arguments_and_an_unknown_command(places: dict[str, str]) -> None:
    for argv in ([], ["fly"], ["--version"], ["generate", "--temp"], ["inspect"]):
        status, _, stderr = run_main(argv)
        check_outcome(argv, status, stderr)


# Inputs that once crashed the command line, with what they say now.
REGRESSIONS = [
    (["bench", "--model", "{good}", "--workers", "0", "--decode-tokens", "0"], "--prompt-tokens and --decode-tokens must be 1 or more"),
    (["bench", "--model", "{good}", "--workers", "0", "--prompt-tokens", "100000000"], "go past the context limit of 96 tokens"),
    (["bench", "--model", "{good}", "--workers", "0", "--json", "{nodir}"], "cannot write"),
]


@pytest.mark.parametrize("argv, message", REGRESSIONS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in REGRESSIONS])
def test_regressions_in_process(argv: list[str], message: str, places: dict[str, str]) -> None:
    argv = [arg.format(**places) for arg in argv]
    status, _, stderr = run_main(argv, b"\xff not UTF-8")
    check_outcome(argv, status, stderr)
    assert status == 2 and message in stderr, stderr


def run_cli(argv: list[str], stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess[bytes]:
    environ = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-m", "microqwen", *argv], input=stdin, capture_output=True,
                          env=environ, timeout=120)  # fmt: skip


SUBPROCESS_CASES = [
    (["generate", "-m", "{good}", "--workers", "0", "-n", "3", "-p", "-"], b"\xff\xfe\n"),
    (["chat", "-m", "{good}", "--workers", "0", "-n", "3"], b"hello\n\xff\xfe\nmore\n"),
    (["tokenize", "--model", "{good}", "-"], b"\xff"),
    (["tokenize", "--model", "{good}", "\udcff"], b""),
    (["inspect", "{broken}"], b""),
    (["generate", "-n", "x"], b""),
    (["fly"], b""),
]


# The text encodings a user's terminal may give Python: the C locale and C.UTF-8 read bytes that are
# not UTF-8 as lone surrogates; a UTF-8 locale such as en_US.UTF-8 (emulated here) refuses them.
ENCODINGS = {"C": {"LC_ALL": "C"}, "C.UTF-8": {"LC_ALL": "C.UTF-8"}, "strict": {"PYTHONIOENCODING": "utf-8:strict"}}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("argv, stdin", SUBPROCESS_CASES, ids=[" ".join(a[:1] + a[-1:]) for a, _ in SUBPROCESS_CASES])
def test_real_processes(argv: list[str], stdin: bytes, encoding: str, places: dict[str, str]) -> None:
    """Bytes that are not UTF-8 on stdin or in argv: an error line, or a result, never a traceback."""
    args = [arg.format(**places) for arg in argv]
    result = run_cli([os.fsencode(a).decode("utf-8", "surrogateescape") for a in args], stdin, **ENCODINGS[encoding])
    check_outcome(args, result.returncode, result.stderr.decode("utf-8", "replace"))


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_path_that_is_not_utf8_is_printed_escaped(tmp_path: pathlib.Path, places: dict[str, str], encoding: str) -> None:
    """inspect prints the file's path; printing a lone surrogate crashed under a strict UTF-8 stdout."""
    target = tmp_path / os.fsdecode(b"weights-\xff.safetensors")
    target.write_bytes(pathlib.Path(places["weights"]).read_bytes())
    result = run_cli(["inspect", str(target)], b"", **ENCODINGS[encoding])
    check_outcome(["inspect", str(target)], result.returncode, result.stderr.decode("utf-8", "replace"))
    assert result.returncode == 0 and b"weights-\\xff.safetensors: 18,872 bytes" in result.stdout


def test_a_message_that_is_not_text_is_refused_and_the_chat_goes_on(tmp_path: pathlib.Path) -> None:
    model = write_tiny_chat_model(tmp_path / "chat")
    result = run_cli(["chat", "-m", str(model), "--workers", "0", "-n", "3", "--temp", "0"],
                     b"hello\n\xff\nmore\n", LC_ALL="C")  # fmt: skip
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, stderr
    assert result.stdout.count(b"\n") == 3 and "lone surrogate U+DCFF" in stderr  # answer, refusal, answer
    assert "prompt eval" in stderr and "Traceback" not in stderr
