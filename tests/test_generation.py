"""Generation: the loop, stop strings, the conversation's cache reuse, and the generate/chat commands."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from typing import Sequence

import pytest

from microqwen.errors import UsageError
from microqwen.generation import Conversation, StopStrings, Timings, generate
from microqwen.model import load
from microqwen.sampling import Sampler, SamplingParams
from microqwen.tokenizer import Tokenizer

from .reference import GREEDY_TOKENS, load_reference, model_dirs, token_ids
from .tiny_model import write_tiny_chat_model

GREEDY = Sampler(SamplingParams(temperature=0.0))


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "microqwen", *args], input=stdin, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_chat_model(tmp_path_factory.mktemp("chat") / "model")


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("model", model_dirs(), ids=lambda p: p.name)
def test_cli_greedy_generation_reproduces_the_reference(model: pathlib.Path, workers: str) -> None:
    ref = load_reference(model / "reference.safetensors")
    prompt = ",".join(map(str, token_ids(ref)))
    result = run("generate", "-m", str(model), "--ids", prompt, "--print-ids", "--temp", "0",
                 "--repeat-penalty", "1", "-n", str(GREEDY_TOKENS), "--workers", workers)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [int(line) for line in result.stdout.split()] == token_ids(ref, "greedy_ids")
    assert "prompt eval =" in result.stderr and "eval time   =" in result.stderr


def test_a_seed_reproduces_a_sampled_run() -> None:
    model = model_dirs()[0]
    args = ["generate", "-m", str(model), "--ids", "1,2,3", "--print-ids", "--temp", "1.5", "-n", "12", "--workers", "0"]
    first, again, other = run(*args, "-s", "7"), run(*args, "-s", "7"), run(*args, "-s", "8")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout and len(first.stdout.split()) == 12
    assert other.stdout != first.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--temp", "-1"], "temperature (--temp) must be a finite number >= 0"),
        (["--top-p", "1.5"], "top_p (--top-p) must be a finite number in (0, 1]"),
        (["--top-p", "0"], "top_p (--top-p) must be a finite number in (0, 1]"),
        (["--top-k", "-3"], "top_k (--top-k) must be an integer >= 0"),
        (["-n", "-2"], "-n must be 0 or more, got -2"),
        (["--workers", "-1"], "--workers must be 0 or more"),
    ],
)
def test_bad_flags_fail_before_any_work(flags: list[str], message: str) -> None:
    result = run("generate", "-m", "/nonexistent/model", "-p", "hi", *flags)  # the model is never looked at
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ids", ""], "--ids is empty"),
        (["--ids", "1,2", "--system", "Be brief."], "it goes without -p, --chat and --system"),
        (["--ids", "1,2", "--stop", "x"], "no tokenizer.json"),  # a stop string is text: it needs the tokenizer
    ],
)
def test_ids_in_ids_out_misuses(flags: list[str], message: str) -> None:
    model = str(model_dirs()[0])  # no tokenizer files: --ids and --print-ids do not need one
    result = run("generate", "-m", model, "--print-ids", "--workers", "0", *flags)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_echo_with_print_ids_prints_the_prompt_ids_first() -> None:
    model = str(model_dirs()[0])
    result = run("generate", "-m", model, "--ids", "5,6,7", "--print-ids", "--echo", "-n", "2", "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:3] == ["5", "6", "7"] and len(result.stdout.split()) == 5


def test_a_missing_model_is_one_line() -> None:
    result = run("generate", "-m", "/nonexistent/model", "-p", "hi")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "/nonexistent/model" in result.stderr


def test_a_prompt_longer_than_the_context_fails_before_loading(chat_model: pathlib.Path) -> None:
    result = run("generate", "-m", str(chat_model), "-p", "x" * 40, "--max-context", "16", "--workers", "2")
    assert result.returncode == 2
    assert "40 tokens from position 0 go past the context limit of 16 tokens" in result.stderr
    assert "load time" not in result.stderr


def test_prompt_from_stdin_echo_and_stop_string(chat_model: pathlib.Path) -> None:
    base = ["generate", "-m", str(chat_model), "-p", "-", "--temp", "0", "-n", "40", "--workers", "0"]
    full = run(*base, stdin="Hello")
    assert full.returncode == 0, full.stderr
    continuation = full.stdout[:-1]  # the command ends the text with a newline
    echoed = run(*base, "--echo", stdin="Hello")
    assert echoed.stdout == "Hello" + full.stdout
    stop = continuation[5:8]
    assert len(stop) == 3 and stop.strip(), continuation  # the seeded tiny model's text has one to stop at
    stopped = run(*base, "--stop", stop, stdin="Hello")
    assert stopped.stdout == continuation[: continuation.index(stop)] + "\n"


def test_chat_reads_a_message_a_line(chat_model: pathlib.Path) -> None:
    session = "Hi there\nHow are you?\n/reset\nHi there\n/exit\nnever read\n"
    result = run("chat", "-m", str(chat_model), "--temp", "0", "-n", "8", "--workers", "0", stdin=session)
    assert result.returncode == 0, result.stderr
    answers = result.stdout.split("\n")
    assert len(answers) == 4 and answers[3] == ""  # three answers, each ended by a newline
    assert answers[2] == answers[0]  # after /reset the same question gets the same greedy answer
    assert "(history cleared)" in result.stderr and "total time" in result.stderr


def test_stop_strings_hold_back_what_could_start_one() -> None:
    stop = StopStrings(["</s>", "END"])
    assert stop.feed("abc<") == "abc"
    assert stop.feed("/") == ""
    assert stop.feed("x") == "</x"  # not a stop string after all
    assert stop.feed("E") == ""
    assert stop.feed("ND more") == "" and stop.stopped
    assert stop.feed("anything") == ""
    unfinished = StopStrings(["END"])
    assert unfinished.feed("the EN") == "the " and unfinished.flush() == "EN"


def test_generate_stops_at_eos_and_counts_tokens(chat_model: pathlib.Path) -> None:
    with load(str(chat_model)) as model:
        prompt = [72, 105]
        model.eos_token_ids = ()
        free = [t.id for t in generate(model, prompt, 6, GREEDY) if t.id is not None]
        model.reset()
        timings = Timings()
        model.eos_token_ids = (free[2],)
        stopped = [t.id for t in generate(model, prompt, 6, GREEDY, timings=timings)]
    assert len(free) == 6 and stopped == free[: free.index(free[2])]
    assert timings.generated_tokens == len(stopped)
    assert (timings.restored_tokens, timings.prompt_tokens) == (1, 1)  # the first run saved the prompt's cache


def test_conversation_reuses_the_cache_and_survives_an_interrupted_answer(chat_model: pathlib.Path) -> None:
    tokenizer = Tokenizer.from_dir(str(chat_model))
    with load(str(chat_model)) as model:
        timings = Timings()
        chat = Conversation(model, GREEDY, max_new_tokens=6, timings=timings)
        first = "".join(t.text for t in chat.ask("Hello"))
        prompt_after_first = timings.prompt_tokens
        second = chat.ask("More")
        next(second)
        second.close()  # what the chat loop does on Ctrl-C: the answer so far is kept
        assert model.pos == len(chat.cached) and [m["role"] for m in chat.messages] == ["user", "assistant"] * 2
        third = "".join(t.text for t in chat.ask("Again"))
        new_tokens = timings.prompt_tokens - prompt_after_first
        whole = tokenizer.encode(tokenizer.apply_chat_template(chat.messages[:-1]))
        assert new_tokens < len(whole) - len(tokenizer.encode(first))  # only the new turns were run
        model.reset()
        fresh = Conversation(model, GREEDY, max_new_tokens=6)
        fresh.messages = list(chat.messages[:-2])
        assert "".join(t.text for t in fresh.ask("Again")) == third  # same answer as from scratch


class RecordingSampler(Sampler):
    """Greedy, and keeps the ids the repetition penalty was given at each step."""

    def __init__(self) -> None:
        super().__init__(SamplingParams(temperature=0.0, repetition_penalty=1.1))
        self.seen: list[list[int]] = []

    def sample(self, logits: Sequence[float], previous_ids: Sequence[int] = ()) -> int:
        self.seen.append(list(previous_ids))
        return super().sample(logits, previous_ids)


def test_the_penalty_counts_the_whole_conversation_also_the_cached_part(chat_model: pathlib.Path) -> None:
    """As in the reference, whose input ids are the whole rendered conversation at every turn."""
    tokenizer = Tokenizer.from_dir(str(chat_model))
    sampler = RecordingSampler()
    with load(str(chat_model)) as model:
        chat = Conversation(model, sampler, max_new_tokens=3)
        list(chat.ask("Hello"))
        sampler.seen.clear()
        list(chat.ask("More"))
        rendered = tokenizer.encode(tokenizer.apply_chat_template(chat.messages[:-1]))
        assert len(chat.cached) > 0 and sampler.seen[0] == rendered


@pytest.mark.parametrize("workers", [0, 1])
def test_lookup_decoding_gives_exactly_the_greedy_tokens(workers: int) -> None:
    """Prompt lookup drafts from earlier text; whatever it drafts, the tokens are greedy decoding's."""
    fixture = model_dirs()[1]
    prompt = token_ids(load_reference(fixture / "reference.safetensors"))
    prompt = prompt + prompt  # text that repeats: drafts to find
    with load(str(fixture), workers=workers, prompt_cache=False) as model:
        model.eos_token_ids = ()
        plain = [t.id for t in generate(model, prompt, 40, GREEDY)]
        for n in (1, 4, 16):
            model.reset()
            timings = Timings()
            assert [t.id for t in generate(model, prompt, 40, GREEDY, timings=timings, lookup=n)] == plain, n
            assert timings.drafted_tokens > 0 and timings.generated_tokens == 40
            assert model.pos == len(prompt) + 40 - 1  # as one by one: the last token is not run
        model.reset()
        first = [t.id for t in generate(model, prompt, 10, GREEDY, lookup=4, stop=())]
        assert first == plain[:10]


def test_lookup_needs_greedy_decoding_and_no_hook(chat_model: pathlib.Path) -> None:
    with load(str(chat_model)) as model:
        sampling = Sampler(SamplingParams(temperature=0.7))
        with pytest.raises(UsageError, match="it needs --temp 0"):
            list(generate(model, [72, 105], 4, sampling, lookup=3))
        with pytest.raises(UsageError, match="lookup decoding goes without a hook"):
            list(generate(model, [72, 105], 4, GREEDY, lookup=3, hook=lambda *args: None))
