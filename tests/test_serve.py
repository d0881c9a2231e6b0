"""`microqwen serve` over raw HTTP: the OpenAI API's answers, llama-server's extras, and every refusal.

The server runs as a child process (`tests/server_process.py`) on a tiny random chat model with a
byte tokenizer. Its greedy answers are checked against `microqwen generate` for the same prompt,
its logprobs against the log-softmax of the model's logits, computed here.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import socket
import subprocess
import sys
from typing import Any, Iterator

import pytest

import microqwen
from microqwen.serve import is_loopback

from .server_process import ServerProcess
from .tiny_model import write_tiny_chat_model

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_chat_model(tmp_path_factory.mktemp("serve") / "chat")


@pytest.fixture(scope="module")
def server(chat_model: pathlib.Path) -> Iterator[ServerProcess]:
    with ServerProcess(str(chat_model), "--workers", "0") as process:
        yield process


def generate_cli(model: pathlib.Path, *args: str) -> str:
    """What `microqwen generate` prints for the same prompt, greedy (without its final newline)."""
    command = [sys.executable, "-m", "microqwen", "generate", "-m", str(model), "--temp", "0", "--repeat-penalty", "1",
               "--workers", "0", *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    return result.stdout[:-1]


def token_id(name: str, tokenizer: microqwen.Tokenizer) -> int:
    """The id of a token named in logprobs: its text, or `bytes:\\xNN` (with the byte tokenizer, id NN)."""
    if name.startswith("bytes:\\x"):
        return int(name[len("bytes:\\x") :], 16)
    (token,) = tokenizer.encode(name)
    return token


def log_softmax(logits: list[float]) -> list[float]:
    """log p_i = l_i - log(sum_j e^(l_j)), written here (not the package's) for the comparison."""
    top = max(logits)
    total = math.log(sum(math.exp(x - top) for x in logits)) + top
    return [x - total for x in logits]


# ------------------------------------------------------------------ answers


def test_health_and_models(server: ServerProcess, chat_model: pathlib.Path) -> None:
    assert server.request("GET", "/health")[::2] == (200, {"status": "ok"})
    status, _, models = server.request("GET", "/v1/models")
    assert status == 200 and models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [chat_model.name] and models["data"][0]["object"] == "model"
    assert server.request("GET", "/v1/models/" + chat_model.name)[2]["id"] == chat_model.name


def test_greedy_completion_equals_microqwen_generate(server: ServerProcess, chat_model: pathlib.Path) -> None:
    answer = server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 12, "temperature": 0})
    expected = generate_cli(chat_model, "-p", PROMPT, "-n", "12")
    choice = answer["choices"][0]
    assert answer["object"] == "text_completion" and answer["id"].startswith("cmpl-")
    assert choice["text"] == expected
    assert choice["finish_reason"] == "length"
    prompt_tokens = len(PROMPT.encode())  # the byte tokenizer: one token a byte
    assert answer["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 12, "total_tokens": prompt_tokens + 12}


def test_greedy_chat_equals_microqwen_generate_chat(server: ServerProcess, chat_model: pathlib.Path) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    answer = server.post("/v1/chat/completions", {"messages": messages, "max_tokens": 10, "temperature": 0})
    choice = answer["choices"][0]
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert choice["message"] == {"role": "assistant", "content": generate_cli(chat_model, "--chat", "-p", PROMPT, "-n", "10")}
    tokenizer = microqwen.Tokenizer.from_dir(str(chat_model))
    assert answer["usage"]["prompt_tokens"] == len(tokenizer.encode(tokenizer.apply_chat_template(messages)))


def test_a_completion_from_token_ids_and_the_default_max_tokens(server: ServerProcess, chat_model: pathlib.Path) -> None:
    ids = list(PROMPT.encode())
    answer = server.post("/v1/completions", {"prompt": ids, "temperature": 0})
    assert answer["usage"]["completion_tokens"] == 16  # OpenAI's default max_tokens for a completion
    assert answer["choices"][0]["text"] == generate_cli(chat_model, "--ids", ",".join(map(str, ids)), "-n", "16")


@pytest.mark.parametrize("chat", [False, True], ids=["completion", "chat"])
def test_streaming_equals_not_streaming(server: ServerProcess, chat: bool) -> None:
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body: dict[str, Any] = {"max_tokens": 20, "temperature": 0.9, "seed": 11}
    body.update({"messages": [{"role": "user", "content": PROMPT}]} if chat else {"prompt": PROMPT})
    body.update({"logprobs": True, "top_logprobs": 3} if chat else {"logprobs": 3})
    whole = server.post(path, body)
    chunks = server.stream(path, dict(body, stream=True, stream_options={"include_usage": True}))
    ids = {chunk["id"] for chunk in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-" if chat else "cmpl-")
    assert all(c["object"] == ("chat.completion.chunk" if chat else "text_completion") for c in chunks)
    *pieces, last, tail = chunks
    assert tail["choices"] == [] and tail["usage"] == whole["usage"]
    choice = whole["choices"][0]
    assert last["choices"][0]["finish_reason"] == choice["finish_reason"]
    if chat:
        assert pieces[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in pieces)
        streamed = [e for c in pieces if c["choices"][0]["logprobs"] for e in c["choices"][0]["logprobs"]["content"]]
        assert text == choice["message"]["content"] and streamed == choice["logprobs"]["content"]
    else:
        text = "".join(c["choices"][0]["text"] for c in pieces)
        logprobs = choice["logprobs"]
        for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            assert [x for c in pieces for x in c["choices"][0]["logprobs"][name]] == logprobs[name]
        assert text == choice["text"]
    assert len(streamed if chat else logprobs["tokens"]) == whole["usage"]["completion_tokens"]


def test_logprobs_are_the_models_log_softmax(server: ServerProcess, chat_model: pathlib.Path) -> None:
    answer = server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 6, "temperature": 1.0, "seed": 3,
                                             "logprobs": 5})  # fmt: skip
    logprobs = answer["choices"][0]["logprobs"]
    with microqwen.load(str(chat_model), progress=False) as model:
        assert model.tokenizer is not None
        ids = model.tokenizer.encode(PROMPT)
        generated = [token_id(token, model.tokenizer) for token in logprobs["tokens"]]
        logits = model.prefill(ids)
        for step, token in enumerate(generated):
            expected = log_softmax(logits)
            assert logprobs["token_logprobs"][step] == pytest.approx(expected[token], abs=1e-9)
            best = sorted(range(len(logits)), key=lambda t: -logits[t])[:5]
            top = logprobs["top_logprobs"][step]
            assert list(top.values()) == pytest.approx([expected[t] for t in best], abs=1e-9)
            assert [token_id(name, model.tokenizer) for name in top] == best
            logits = model.forward(token, model.pos)
    offsets = logprobs["text_offset"]  # where the text each token released starts
    assert offsets == sorted(offsets) and offsets[0] == 0 and offsets[-1] <= len(answer["choices"][0]["text"])


def test_stop_strings_end_the_answer_with_finish_stop(server: ServerProcess) -> None:
    free = server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 12, "temperature": 0})["choices"][0]["text"]
    stop = free[3:5]
    answer = server.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "stop": [stop]})
    assert answer["choices"][0]["text"] == free[: free.index(stop)]
    assert answer["choices"][0]["finish_reason"] == "stop"


def test_the_model_ending_its_answer_is_finish_stop(server: ServerProcess) -> None:
    """The tiny model's <|im_end|> (258) ends a chat answer; found by asking for it as the prompt's continuation."""
    for seed in range(40):
        body = {"prompt": PROMPT, "max_tokens": 40, "temperature": 2.0, "seed": seed, "logprobs": 0}
        answer = server.post("/v1/completions", body)
        if answer["usage"]["completion_tokens"] < 40:
            assert answer["choices"][0]["finish_reason"] == "stop"
            return
    pytest.fail("no sampled answer ended with the end-of-sequence token in 40 tries")


def test_sampling_with_a_seed_is_reproducible(server: ServerProcess) -> None:
    body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 1.5, "top_k": 40, "seed": 5}
    first, again = server.post("/v1/completions", body), server.post("/v1/completions", body)
    other = server.post("/v1/completions", dict(body, seed=6))
    assert first["choices"][0]["text"] == again["choices"][0]["text"] != other["choices"][0]["text"]


def test_tokenize_and_detokenize_as_llama_server(server: ServerProcess) -> None:
    assert server.post("/tokenize", {"content": "Hi"}) == {"tokens": [72, 105]}
    assert server.post("/tokenize", {"content": "é<|im_end|>", "with_pieces": True}) == {
        "tokens": [{"id": 0xC3, "piece": [0xC3]}, {"id": 0xA9, "piece": [0xA9]}, {"id": 258, "piece": "<|im_end|>"}]}
    assert server.post("/tokenize", {"content": "<|im_end|>", "parse_special": False})["tokens"] == list(b"<|im_end|>")
    assert server.post("/detokenize", {"tokens": [72, 105, 0xC3, 0xA9]}) == {"content": "Hié"}


def test_static_files_are_the_packages_own(server: ServerProcess) -> None:
    static = pathlib.Path(microqwen.__file__).parent / "static"
    status, headers, page = server.request("GET", "/?prompt=Hi")
    assert status == 200 and page == (static / "index.html").read_bytes()
    assert headers["content-type"].startswith("text/html") and "default-src 'self'" in headers["content-security-policy"]
    for name in ("explorer.js", "explorer.css"):
        assert server.request("GET", "/static/" + name)[2] == (static / name).read_bytes()
    for module in ("model.py", "lab/ablation.py"):
        source = server.request("GET", "/source/" + module)
        assert source[0] == 200 and source[2] == (static.parent / module).read_bytes()


# ------------------------------------------------------------------ refusals


def error_of(answer: tuple[int, dict[str, str], Any]) -> tuple[int, str | None, str]:
    status, headers, body = answer
    assert headers["content-type"].startswith("application/json")
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    return status, error["param"], error["message"]


CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "Hi"}]

BAD_BODIES = [
    (CHAT, {"messages": MESSAGES, "temperature": "hot"}, "temperature", "must be a number in [0, 2]"),
    (CHAT, {"messages": MESSAGES, "temperature": 2.5}, "temperature", "got 2.5"),
    (CHAT, {"messages": MESSAGES, "temperature": True}, "temperature", "must be a number"),
    (CHAT, {"messages": MESSAGES, "top_p": 0}, "top_p", "must be a number in (0, 1]"),
    (CHAT, {"messages": MESSAGES, "top_p": 1.5}, "top_p", "must be a number in (0, 1]"),
    (CHAT, {"messages": MESSAGES, "top_k": -2}, "top_k", "must be an integer >= -1"),
    (CHAT, {"messages": MESSAGES, "min_p": 2}, "min_p", "must be a number in [0, 1]"),
    (CHAT, {"messages": MESSAGES, "repetition_penalty": 0}, "repetition_penalty", "must be a number in (0, 10]"),
    (CHAT, {"messages": MESSAGES, "seed": 1.5}, "seed", "must be an integer"),
    (CHAT, {"messages": MESSAGES, "max_tokens": 0}, "max_tokens", "must be an integer >= 1"),
    (CHAT, {"messages": MESSAGES, "max_tokens": "10"}, "max_tokens", "must be an integer >= 1"),
    (CHAT, {"messages": MESSAGES, "max_completion_tokens": -1}, "max_completion_tokens", "must be an integer >= 1"),
    (CHAT, {"messages": MESSAGES, "n": 2}, "n", "only 1 is supported"),
    (CHAT, {"messages": MESSAGES, "stream": "yes"}, "stream", "must be true or false"),
    (CHAT, {"messages": MESSAGES, "stream_options": {"include_usage": True}}, "stream_options", "goes with stream"),
    (CHAT, {"messages": MESSAGES, "stop": 5}, "stop", "must be a string or an array of strings"),
    (CHAT, {"messages": MESSAGES, "stop": ["a", 1]}, "stop", "must be a string or an array of strings"),
    (CHAT, {"messages": MESSAGES, "logprobs": "yes"}, "logprobs", "must be true or false"),
    (CHAT, {"messages": MESSAGES, "top_logprobs": 3}, "top_logprobs", "needs logprobs: true"),
    (CHAT, {"messages": MESSAGES, "logprobs": True, "top_logprobs": 21}, "top_logprobs", "in 0..20"),
    (CHAT, {"messages": MESSAGES, "presence_penalty": 0.5}, "presence_penalty", "only 0 is supported"),
    (CHAT, {"messages": MESSAGES, "tools": [{"type": "function"}]}, "tools", "only [] is supported"),
    (CHAT, {"messages": MESSAGES, "model": 3}, "model", "must be a string"),
    (CHAT, {}, "messages", "must be a non-empty array"),
    (CHAT, {"messages": "Hi"}, "messages", "must be a non-empty array"),
    (CHAT, {"messages": []}, "messages", "must be a non-empty array"),
    (CHAT, {"messages": ["Hi"]}, "messages[0]", "must be an object"),
    (CHAT, {"messages": [{"role": "robot", "content": "Hi"}]}, "messages", "role 'robot' is not one of"),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "must be a string or an array"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0]",
     "only {\"type\": \"text\""),
    (CHAT, {"messages": [{"role": "user", "content": "x" * 600}]}, "messages", "go past the context limit of 512"),
    (COMPLETIONS, {}, "prompt", "must be a string or an array of token ids"),
    (COMPLETIONS, {"prompt": ""}, "prompt", "prompt is empty"),
    (COMPLETIONS, {"prompt": ["a", "b"]}, "prompt", "one prompt per request, got 2"),
    (COMPLETIONS, {"prompt": [1, 2, 999]}, "prompt", "token id 999 is not in the vocabulary (0..258)"),
    (COMPLETIONS, {"prompt": "Hi", "logprobs": 6}, "logprobs", "in 0..5"),
    (COMPLETIONS, {"prompt": "Hi", "echo": True}, "echo", "only false is supported"),
    (COMPLETIONS, {"prompt": "Hi", "best_of": 3}, "best_of", "only 1 is supported"),
    ("/tokenize", {"content": 5}, "content", "must be a string"),
    ("/detokenize", {"tokens": [1, 999]}, "tokens", "not in the vocabulary"),
    ("/detokenize", {"tokens": "abc"}, "tokens", "must be an array of token ids"),
    ("/explorer/run", {"prompt": ""}, "prompt", "must be a non-empty string"),
    ("/explorer/run", {"ids": [1, "2"]}, "ids", "must be a non-empty array of token ids"),
    ("/explorer/lens", {"prompt": "Hi"}, "pos", "pos is required"),
    ("/explorer/ablate", {"prompt": "Hi", "layer": 0}, "head", "head is required"),
    ("/explorer/distribution", {"prompt": "Hi", "temperature": -1}, "temperature", "must be a number in [0, 10]"),
    ("/explorer/patch", {"clean": "Hi"}, "corrupt", "must be a non-empty string"),
]


@pytest.mark.parametrize("path, body, param, message", BAD_BODIES, ids=lambda v: str(v)[:40])
def test_a_bad_field_is_a_400_that_names_it(server: ServerProcess, path: str, body: Any, param: str, message: str) -> None:
    status, named, text = error_of(server.request("POST", path, body))
    assert (status, named) == (400, param), text
    assert message in text


BAD_RUNS = [  # checked when the model runs them: still a 400, and the message names the field
    ("/explorer/run", {"ids": [1, 999]}, "token id 999 is outside the vocabulary"),
    ("/explorer/lens", {"prompt": "Hi", "pos": 5}, "pos must be a position of the prompt, 0..1"),
    ("/explorer/ablate", {"prompt": "Hi", "layer": 2, "head": 0}, "layer must be in 0..1, got 2"),
    ("/explorer/ablate", {"prompt": "Hi", "layer": 0, "head": 4}, "head must be in 0..3, got 4"),
    ("/explorer/patch", {"clean": "Hi", "corrupt": "Hi!"}, "the clean prompt has 2 tokens, the corrupted one 3"),
]


@pytest.mark.parametrize("path, body, message", BAD_RUNS, ids=lambda v: str(v)[:40])
def test_a_bad_experiment_is_a_400(server: ServerProcess, path: str, body: Any, message: str) -> None:
    status, _, text = error_of(server.request("POST", path, body))
    assert status == 400 and message in text, text


@pytest.mark.parametrize(
    "raw, message",
    [(b"{", "the request body: line 1 column 2"), (b"[1, 2]", "must be a JSON object, got an array"),
     (b"\xff{}", "the request body: byte 0 is not valid UTF-8"), (b'{"a": NaN}', "the request body: line 1"),
     (b"[" * 200 + b"]" * 200, "nest")],
    ids=["truncated", "array", "not-utf8", "nan", "deep"],
)
def test_a_body_that_is_not_a_json_object_is_a_400(server: ServerProcess, raw: bytes, message: str) -> None:
    status, param, text = error_of(server.request("POST", CHAT, raw=raw, headers={"Content-Type": "application/json"}))
    assert (status, param) == (400, None) and message in text, text


def raw_exchange(server: ServerProcess, request: bytes) -> tuple[int, dict[str, str], Any]:
    """Send bytes as they are; the status line, headers and JSON body of the answer."""
    with server.connect() as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_a_body_over_the_limit_is_a_413_before_it_is_read(server: ServerProcess) -> None:
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1048577\r\n\r\n{"
    status, headers, body = raw_exchange(server, request)
    assert status == 413 and "1048577 bytes; the limit is 1048576" in body["error"]["message"]
    assert headers["connection"] == "close"
    just_fits = json.dumps({"messages": MESSAGES, "max_tokens": 1, "user": "x" * (1 << 20)})[: 1 << 20]
    assert error_of(server.request("POST", CHAT, raw=just_fits.encode()))[0] == 400  # read, then cut JSON


def test_a_body_without_a_length_is_a_411(server: ServerProcess) -> None:
    chunked = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    assert raw_exchange(server, chunked)[0] == 411
    assert raw_exchange(server, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 411


@pytest.mark.parametrize(
    "path",
    ["/v1/nothing", "/static/../serve.py", "/static/..%2fserve.py", "/static/%2e%2e%2fserve.py", "/static/%2e%2e/cli.py",
     "/static/..%5cserve.py", "/static/%252e%252e%252fserve.py", "/static/explorer.js/../../serve.py",
     "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/source/../static/index.html", "/source/..%2f..%2fREADME.md",
     "/source/static", "/source/explorer.js", "/static/", "/v1/models/other-model", "/static/index.html%00"],
)
def test_unknown_paths_are_404_and_nothing_outside_the_package_is_served(server: ServerProcess, path: str) -> None:
    status, _, text = error_of(server.request("GET", path))
    assert status == 404, text


def test_a_known_path_with_the_wrong_method_is_a_405(server: ServerProcess) -> None:
    status, headers, _ = server.request("GET", CHAT)
    assert status == 405 and headers["allow"] == "POST"
    assert server.request("DELETE", "/health")[0] == 405
    status, _, body = server.request("BREW", "/")  # not an HTTP method at all: http.server's own 501, as JSON
    assert status == 501 and body["error"]["code"] == 501


def test_a_foreign_host_header_is_refused_on_loopback(server: ServerProcess) -> None:
    status, _, text = error_of(server.request("GET", "/health", headers={"Host": "attacker.example:8080"}))
    assert status == 403 and "attacker.example" in text
    assert server.request("GET", "/health", headers={"Host": "localhost:1234"})[0] == 200


def test_a_valid_request_is_still_served_after_the_bad_ones(server: ServerProcess, chat_model: pathlib.Path) -> None:
    for path, body, _, _ in BAD_BODIES[:5]:
        server.request("POST", path, body)
    raw_exchange(server, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 9999999\r\n\r\n")
    answer = server.post(COMPLETIONS, {"prompt": PROMPT, "max_tokens": 5, "temperature": 0})
    assert answer["choices"][0]["text"] == generate_cli(chat_model, "-p", PROMPT, "-n", "5")
    assert server.process.poll() is None


def test_the_log_says_what_each_request_cost(server: ServerProcess) -> None:
    server.post(COMPLETIONS, {"prompt": PROMPT, "max_tokens": 3, "temperature": 0})
    server.wait_for_log(r"completion: 24 prompt tokens \(\d+ cached\), 3 new, [\d.]+ s, finish length")


def test_a_chat_that_goes_on_reuses_the_cached_conversation(server: ServerProcess) -> None:
    first = [{"role": "user", "content": "Hello there"}]
    answer = server.post(CHAT, {"messages": first, "max_tokens": 6, "temperature": 0})["choices"][0]["message"]
    follow = first + [answer, {"role": "user", "content": "And then?"}]
    before = len(server.log)
    server.post(CHAT, {"messages": follow, "max_tokens": 4, "temperature": 0})
    server.wait_for_log(r"chat: .* 4 new")
    (line,) = [line for line in server.log[before:] if "chat:" in line]
    found = re.search(r"chat: (\d+) prompt tokens \((\d+) cached\)", line)
    assert found is not None
    prompt, cached = int(found.group(1)), int(found.group(2))
    assert cached > prompt // 2  # the conversation so far came from the cache


def test_serve_with_a_bad_flag_is_one_line_and_exit_2() -> None:
    result = subprocess.run([sys.executable, "-m", "microqwen", "serve", "-m", "/nonexistent", "--port", "70000"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--port must be in 0..65535, got 70000" in result.stderr


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.3.4.5", True), ("localhost", True), ("::1", True),
                                            ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.org", False)])
def test_which_addresses_are_loopback(host: str, loopback: bool) -> None:
    """Only these serve without a warning (and check the Host header of each request)."""
    assert is_loopback(host) is loopback


def test_an_address_it_cannot_listen_on_is_one_line_and_exit_2(chat_model: pathlib.Path) -> None:
    result = subprocess.run([sys.executable, "-m", "microqwen", "serve", "-m", str(chat_model), "--workers", "0",
                             "--host", "192.0.2.1", "--port", "0"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "microqwen: error: cannot listen on 192.0.2.1:0:"), result.stderr
