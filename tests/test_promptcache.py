"""The prompt cache: a restored prefix gives the logits bit for bit, and a bad file is never used.

Each test has its own empty cache directory (`$MICROQWEN_CACHE`, set by conftest.py).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from microqwen import promptcache
from microqwen.generation import Conversation, Timings, generate
from microqwen.model import load
from microqwen.promptcache import PromptCache, cache_dir, common_prefix, every_entry
from microqwen.sampling import Sampler, SamplingParams

from .reference import load_reference, model_dirs, token_ids
from .tiny_model import write_tiny_chat_model

GREEDY = Sampler(SamplingParams(temperature=0.0))
FIXTURE = model_dirs()[0]
PROMPT = token_ids(load_reference(FIXTURE / "reference.safetensors"))


def logits_after(path: pathlib.Path, ids: list[int], workers: int = 0, cache: bool = True) -> tuple[list[float], Timings]:
    """The logits after `ids`, evaluated as generation does (through the prompt cache), and its timings."""
    timings = Timings()
    with load(str(path), workers=workers, prompt_cache=cache) as model:
        model.eos_token_ids = ()
        captured: list[list[float]] = []
        sampler = Recording(captured)
        list(generate(model, ids, 1, sampler, timings=timings))
    return captured[0], timings


class Recording(Sampler):
    """Greedy, and keeps the logits it was given."""

    def __init__(self, into: list[list[float]]) -> None:
        super().__init__(SamplingParams(temperature=0.0))
        self.into = into

    def sample(self, logits: object, previous_ids: object = ()) -> int:
        self.into.append(list(logits))  # type: ignore[call-overload]
        return super().sample(logits, previous_ids)  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_restored_prefix_gives_the_logits_bit_for_bit(workers: int) -> None:
    without, _ = logits_after(FIXTURE, PROMPT, workers, cache=False)
    first, cold = logits_after(FIXTURE, PROMPT[:12], workers)  # saves the first 12 positions
    warm_logits, warm = logits_after(FIXTURE, PROMPT, workers)  # shares 12 tokens with it
    assert cold.restored_tokens == 0 and warm.restored_tokens == 12 and warm.prompt_tokens == len(PROMPT) - 12
    assert warm_logits == without  # bit for bit
    again, again_timings = logits_after(FIXTURE, PROMPT, workers)  # now the whole prompt is saved
    assert again == without and again_timings.restored_tokens == len(PROMPT) - 1  # the last token always runs


def test_greedy_text_is_the_same_and_a_second_chat_evaluates_only_the_new_tokens(tmp_path: pathlib.Path) -> None:
    model_dir = write_tiny_chat_model(tmp_path / "chat")
    answers, prompt_tokens = [], []
    for cache in (False, True, True):
        timings = Timings()
        with load(str(model_dir), prompt_cache=cache) as model:
            chat = Conversation(model, GREEDY, max_new_tokens=8, timings=timings)
            answers.append("".join(t.text for t in chat.ask("Hi! Who are you?")))
            chat.reset()
        prompt_tokens.append((timings.prompt_tokens, timings.restored_tokens))
    assert answers[0] == answers[1] == answers[2]
    assert prompt_tokens[1][1] == 0 and prompt_tokens[2][0] == 1  # the second run only ran the last token
    other = Timings()
    with load(str(model_dir)) as model:  # another question: the system prompt and the user marker come from disk
        tokenizer = model.tokenizer
        assert tokenizer is not None
        first, second = (tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": text}]))
                         for text in ("Hi! Who are you?", "Something else entirely"))  # fmt: skip
        chat = Conversation(model, GREEDY, max_new_tokens=2, timings=other)
        list(chat.ask("Something else entirely"))
    assert other.restored_tokens == common_prefix(first, second) > 30
    assert other.prompt_tokens == len(second) - other.restored_tokens


def saved_files() -> list[pathlib.Path]:
    return sorted(pathlib.Path(cache_dir(), "prompts").glob("*/*.kv"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "other-version", "other-model", "garbage"])
def test_a_damaged_or_foreign_file_is_ignored_with_one_line_and_recomputed(damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    expected, _ = logits_after(FIXTURE, PROMPT, cache=False)
    logits_after(FIXTURE, PROMPT)
    (path,) = saved_files()
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 0x10]) + data[-99:])
    elif damage == "other-version":
        path.write_bytes(data.replace(b'"version":"', b'"version":"0.0.0-', 1))
    elif damage == "other-model":
        path.write_bytes(data.replace(b'"model":"', b'"model":"f', 1))
    else:
        path.write_bytes(b"\x00\xffnot json\n" + data)
    capsys.readouterr()
    logits, timings = logits_after(FIXTURE, PROMPT)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert logits == expected and timings.restored_tokens == 0  # recomputed, never used
    assert len(warnings) == 1 and str(path) in warnings[0] and "removed" in warnings[0], warnings
    assert len(saved_files()) == 1 and saved_files()[0] != path or saved_files()[0].read_bytes() == data


def test_a_cache_that_cannot_be_written_means_no_cache(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MICROQWEN_CACHE", str(blocker / "cache"))  # a directory inside a file cannot exist
    expected, _ = logits_after(FIXTURE, PROMPT, cache=False)
    for _ in range(2):
        logits, timings = logits_after(FIXTURE, PROMPT)
        assert logits == expected and timings.restored_tokens == 0


def test_the_least_recently_used_files_go_first(monkeypatch: pytest.MonkeyPatch) -> None:
    with load(str(FIXTURE), prompt_cache=False) as model:
        cache = PromptCache(model)

        def save(first: int) -> None:  # a 4-token prompt of its own
            model.reset()
            model.prefill([first] + PROMPT[1:4])
            cache.save(model, [first] + PROMPT[1:4])

        for first in (1, 2, 3):
            save(first)
        size = saved_files()[0].stat().st_size
        model.reset()
        assert cache.restore(model, [1] + PROMPT[1:4]) == 4  # the oldest, used again: now the most recent
        monkeypatch.setattr(promptcache, "MAX_BYTES", 3 * size + 1)
        save(4)  # a fourth file: the least recently used one (prompt 2) must go
    kept = sorted(entry.ids[0] for entry in every_entry(os.path.join(cache_dir(), "prompts")))
    assert kept == [1, 3, 4]


def test_two_processes_saving_at_once_leave_whole_files(tmp_path: pathlib.Path) -> None:
    script = (f"import sys; sys.path.insert(0, {str(pathlib.Path(__file__).resolve().parent.parent)!r})\n"
              "from microqwen.model import load\n"
              f"m = load({str(FIXTURE)!r})\n"
              f"from microqwen.generation import generate\n"
              f"list(generate(m, {PROMPT!r}, 1))\n")  # fmt: skip
    runs = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for run in runs:
        assert run.wait(timeout=120) == 0, run.stderr.read() if run.stderr else ""
        assert run.stderr is not None and "prompt cache" not in run.stderr.read()  # no half-written file was met
    files = [p for p in pathlib.Path(cache_dir(), "prompts").glob("*/*") if p.is_file()]
    assert files and all(p.suffix == ".kv" for p in files)  # no temporary file left behind
    logits, timings = logits_after(FIXTURE, PROMPT)
    assert timings.restored_tokens == len(PROMPT) - 1


def test_the_cache_command_lists_and_clears(capsys: pytest.CaptureFixture[str]) -> None:
    from microqwen import cli

    logits_after(FIXTURE, PROMPT)
    assert cli.main(["cache"]) == 0
    listing = capsys.readouterr().out
    assert "1 saved prompts" in listing and f"{len(PROMPT):6d} tokens" in listing
    assert cli.main(["cache", "clear"]) == 0
    assert "removed 1 saved prompts" in capsys.readouterr().out and saved_files() == []
