"""Resource limits: huge prompts, -n far past the context, megabytes of text to tokenize.

Each run is a real `python -m microqwen` process with a timeout (never a hang), started by a small
wrapper that reports the peak resident memory of the command (`getrusage(RUSAGE_CHILDREN)`), so
the memory is measured, not guessed. The outcome is a clear error or a correct result:

- a 100,000-character prompt: refused before the model loads ("100012 tokens from position 0 go past
  the context limit of 512 tokens"), and in `chat` the message is refused and the next one answered;
- `-n 1000000` with a 64-token context: generation stops at the end of the context;
- 1 MB (quick profile) or 10 MB (long profile) of text through `tokenize`: the ids decode back to
  the same text.
"""

from __future__ import annotations

import json
import pathlib
import random
import re
import subprocess
import sys
import time

import pytest

from microqwen.tokenizer import Tokenizer

from .fuzzing import LONG
from .tiny_model import write_tiny_chat_model, write_tiny_model

MEASURE = """
import resource, subprocess, sys
result = subprocess.run(sys.argv[2:], stdin=open(sys.argv[1], "rb"), timeout=600)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(result.returncode)
"""


def measured(args: list[str], stdin: pathlib.Path, timeout: float) -> tuple[subprocess.CompletedProcess[bytes], float, float]:
    """Run `python -m microqwen ARGS` < stdin: the result, its seconds, its peak resident memory in MB."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", MEASURE, str(stdin), sys.executable, "-m", "microqwen", *args],
                            capture_output=True, timeout=timeout)  # fmt: skip
    seconds = time.perf_counter() - start
    *stderr, peak_kb = result.stderr.decode("utf-8", "replace").rstrip("\n").split("\n")
    result.stderr = "".join(line + "\n" for line in stderr).encode()
    return result, seconds, int(peak_kb) / 1024


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_chat_model(tmp_path_factory.mktemp("limits") / "chat")  # byte tokenizer, context 512


def test_a_100000_character_prompt_is_refused_before_loading(chat_model: pathlib.Path, tmp_path: pathlib.Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("All work and no play makes Jack a dull boy. " * 2273)  # 100,012 characters
    result, seconds, peak_mb = measured(["generate", "-m", str(chat_model), "-p", "-", "--workers", "2"], prompt, 120)
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.count("\n") == 1, stderr
    assert "100012 tokens from position 0 go past the context limit of 512 tokens" in stderr
    assert seconds < 30 and peak_mb < 400, (seconds, peak_mb)


def test_a_100000_character_message_is_refused_and_the_chat_goes_on(chat_model: pathlib.Path, tmp_path: pathlib.Path) -> None:
    session = tmp_path / "session.txt"
    session.write_text("x" * 100_000 + "\nHello\n")
    result, seconds, peak_mb = measured(["chat", "-m", str(chat_model), "--workers", "0", "-n", "4", "--temp", "0"],
                                        session, 120)  # fmt: skip
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert re.search(r"microqwen: 1000\d\d tokens from position 0 go past the context limit of 512 tokens .*"
                     r"/reset starts a new conversation", stderr)
    assert result.stdout.count(b"\n") == 2 and "prompt eval" in stderr  # the refusal's newline, then an answer
    assert seconds < 60 and peak_mb < 400, (seconds, peak_mb)


def test_n_far_past_the_context_stops_at_its_end(tmp_path: pathlib.Path) -> None:
    model = write_tiny_model(tmp_path / "no-eos", seed=1, eos_token_id=None, max_position_embeddings=64)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    args = ["generate", "-m", str(model), "--ids", "1,2,3", "--print-ids", "-n", "1000000", "--temp", "0", "--workers", "0"]
    result, seconds, peak_mb = measured(args, empty, 120)
    assert result.returncode == 0, result.stderr
    # the 3 prompt tokens and 61 new ones fill positions 0..63; the 62nd new token comes from position 63's
    # logits and needs no position of its own
    assert len(result.stdout.split()) == 64 - 3 + 1
    assert seconds < 30 and peak_mb < 400, (seconds, peak_mb)


def varied_text(size: int, seed: int = 1) -> str:
    """`size` bytes of made-up words, Chinese, digits, emoji and line breaks: few repeats for the word cache."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    parts, total = [], 0
    while total < size:
        kind = rng.random()
        if kind < 0.8:
            word = "".join(rng.choice(letters) for _ in range(rng.randint(1, 10)))
        elif kind < 0.9:
            word = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(rng.randint(1, 4)))
        else:
            word = rng.choice(["1999", ",", ".", "\n", "é", "😀", "()", "->", "<|im_end|>"])
        parts.append(word + " ")
        total += len(word.encode()) + 1
    return "".join(parts)


@pytest.mark.parametrize("megabytes", [10] if LONG else [1])
def test_megabytes_of_text_to_tokenize(qwen_dir: pathlib.Path, qwen: Tokenizer, tmp_path: pathlib.Path, megabytes: int) -> None:
    """The real Qwen2.5 vocabulary; the ids must decode to the same text (1 MB quick, 10 MB long)."""
    text = varied_text(megabytes * 1_000_000)
    source = tmp_path / "input.txt"
    source.write_text(text, encoding="utf-8")
    result, seconds, peak_mb = measured(["tokenize", "--model", str(qwen_dir), "-", "--json"], source, 600)
    assert result.returncode == 0, result.stderr
    ids = json.loads(result.stdout)
    assert qwen.decode(ids) == text
    print(f"\n{megabytes} MB -> {len(ids):,} tokens in {seconds:.1f} s, peak {peak_mb:.0f} MB resident")
    assert seconds < 20 * megabytes and peak_mb < 400 + 60 * megabytes, (seconds, peak_mb)
