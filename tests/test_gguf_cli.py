"""Every command that runs a model takes `--model x.gguf`: generate, chat, trace, bench, serve and the lab's.

On the k-quant fixture (`tests/fixtures/gguf/README.md`: Q5_0, Q8_0 and k-quant matrices, an untied head),
whose reference is transformers' GGUF loader: generate prints its greedy ids, trace --compare finds every
point within 1e-4 of its residual stream and logits, and serve answers with its greedy text.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from microqwen.tokenizer import Tokenizer

from .reference import GREEDY_TOKENS, load_reference, rows, token_ids
from .server_process import ServerProcess
from .test_fuzz_cli import run_main

GGUF = pathlib.Path(__file__).resolve().parent / "fixtures" / "gguf"
MODEL = str(GGUF / "kquants-gqa2-untied.gguf")
REFERENCE = str(GGUF / "kquants-gqa2-untied.reference.safetensors")
GREEDY = ["--temp", "0", "--repeat-penalty", "1", "--workers", "0", "--no-prompt-cache"]


def prompt_and_greedy_ids() -> tuple[list[int], list[int]]:
    ref = load_reference(REFERENCE)
    return token_ids(ref), token_ids(ref, "greedy_ids")


def test_generate_prints_the_references_greedy_ids() -> None:
    prompt, greedy = prompt_and_greedy_ids()
    argv = ["generate", "-m", MODEL, "--ids", ",".join(map(str, prompt)), "--print-ids", "-n", str(GREEDY_TOKENS), *GREEDY]
    status, out, err = run_main(argv)
    assert status == 0, err
    assert [int(line) for line in out.split()] == greedy


def test_chat_answers_as_generate_does_with_the_files_chat_template() -> None:
    """The fixture's template is Qwen2.5's (read from tokenizer.chat_template): chat's first answer is generate --chat's text."""
    status, chatted, err = run_main(["chat", "-m", MODEL, "--system", "Be brief.", "-n", "6", *GREEDY], b"Hello\n")
    assert status == 0, err
    status, generated, err = run_main(["generate", "-m", MODEL, "--chat", "--system", "Be brief.", "-p", "Hello", "-n", "6", *GREEDY])
    assert status == 0, err
    assert generated.strip("\n") and generated.strip("\n") in chatted


def test_trace_compares_every_point_with_the_reference() -> None:
    status, out, err = run_main(["trace", "-m", MODEL, "--compare", REFERENCE, "--tolerance", "1e-4", "--workers", "0"])
    assert status == 0, err
    assert "[OK]   logits" in out and "layers.4" in out and ": 0 differ" in out


def test_bench_measures_a_gguf_file() -> None:
    argv = ["bench", "-m", MODEL, "--workers", "0", "--prompt-tokens", "2", "--decode-tokens", "2", "--long-context", "4"]
    status, out, err = run_main(argv)
    assert status == 0, err
    assert f"model {MODEL}" in out and "decode" in out and "peak resident" in out


def test_serve_completes_with_the_references_greedy_text() -> None:
    prompt, greedy = prompt_and_greedy_ids()
    tokenizer = Tokenizer.from_model(MODEL)
    with ServerProcess(MODEL, "--workers", "0") as server:
        status, _, models = server.request("GET", "/v1/models")
        answer = server.post("/v1/completions", {"prompt": prompt, "max_tokens": GREEDY_TOKENS, "temperature": 0})
    assert status == 200 and [m["id"] for m in models["data"]] == ["kquants-gqa2-untied.gguf"]
    assert answer["choices"][0]["text"] == tokenizer.decode(greedy)
    assert answer["usage"]["completion_tokens"] == GREEDY_TOKENS


def test_the_labs_attribution_adds_up_to_the_references_logit(tmp_path: pathlib.Path) -> None:
    """A lab command on a .gguf file: direct logit attribution of the reference's own next token, whose
    terms add up to the logit transformers computed there."""
    ref = load_reference(REFERENCE)
    prompt = token_ids(ref)
    logits = rows(*ref["logits"])[-1]  # after the last prompt token
    target = max(range(len(logits)), key=logits.__getitem__)
    out = tmp_path / "dla.json"
    argv = ["attribute", "-m", MODEL, "--ids", ",".join(map(str, prompt)), "--target", f"#{target}",
            "--workers", "0", "--json", str(out)]  # fmt: skip
    status, _, err = run_main(argv)
    assert status == 0, err
    result = json.loads(out.read_text())
    assert sum(result["contributions"].values()) == pytest.approx(logits[target], abs=1e-4)
