"""`microqwen serve`: the model behind an HTTP server, for the explorer page and for OpenAI clients.

    microqwen serve -m Qwen/Qwen2.5-0.5B-Instruct          # http://127.0.0.1:8080/

Standard library only: `http.server`, one thread per connection. The routes:

    GET  /                       the explorer (microqwen/static/index.html); /?prompt=... starts with a prompt
    GET  /static/NAME            its script and style sheet
    GET  /source/NAME.py         a module of this package, as text (the explorer links values to their lines)
    POST /explorer/...           the explorer's views (`microqwen.explorer`): run, lens, distribution, ablate, patch
    POST /v1/chat/completions    OpenAI's API (`microqwen.openai_api`), streaming or not
    POST /v1/completions
    GET  /v1/models              the one model
    GET  /health                 {"status": "ok"}, as llama-server answers
    POST /tokenize, /detokenize  text <-> token ids, as llama-server's

The model holds one sequence (its KV cache), so it runs one request at a time, on the main thread:

    connection threads ──Job──► bounded queue ──► main thread: job.work(job) ──events──► the connection's thread
    (parse, check, answer)      (full: 503 + Retry-After)   (generate, trace, ...)      (JSON, or SSE chunks)

Every request is checked before it joins the queue (bad JSON, a wrong type or an out-of-range
value is a 400 that names the field; a body over `MAX_BODY` a 413), and the queue answers 503
with a Retry-After when it is full. Between two tokens the main thread asks the job whether its
client is still there (the socket has not been closed), and stops generating when it is not,
which frees the model for the next request. The KV cache is kept from one request to the next:
a chat request that resends the conversation so far runs only its new tokens, as llama-server does.

Ctrl-C or SIGTERM reach the main thread: the server stops listening, the queued requests get a
503, and the model is closed (its worker processes stopped, their shared memory freed).
Bound to a loopback address (the default), the server also refuses requests whose Host header
names another machine, so a web page cannot reach it by rebinding a domain name to 127.0.0.1.
"""

from __future__ import annotations

import collections
import http.server
import ipaddress
import json
import math
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

from . import explorer as views
from .errors import FormatError, MicroQwenError, WorkerError
from .generation import generate
from .promptcache import common_prefix
from .jsonparse import JSON, parse_bytes
from .model import Qwen2ForCausalLM
from .openai_api import (
    Answer,
    CompletionRequest,
    Fields,
    RequestError,
    TokenLogprob,
    finish_reason,
    model_card,
    models_list,
    parse_completion,
    token_logprob,
    usage,
)
from .sampling import Sampler, SamplingParams

DEFAULT_PORT = 8080
"""llama-server's port, which chat front ends try first."""

MAX_BODY = 1 << 20
"""The largest request body, in bytes (1 MB): a longer one is answered 413 without being read."""

QUEUE_SIZE = 8
"""Requests that may wait for the model while it serves another; one more is answered 503."""

DOCS_URL = "http://127.0.0.1:8000/"
"""Where the explorer's links to the docs go by default: `mkdocs serve` in a checkout of microqwen."""

IDLE_SECONDS = 60.0
"""A kept-alive connection with no request for this long is closed."""

POLL_SECONDS = 0.1
"""How often a connection's thread waiting for the model looks whether its client has gone."""

PACKAGE = os.path.dirname(os.path.abspath(__file__))
STATIC = os.path.join(PACKAGE, "static")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}  # fmt: skip
PAGE_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
"""The explorer's Content-Security-Policy: scripts, styles and requests from this server only (no CDN)."""

Event = Tuple[str, Any]
"""What the main thread sends a job's connection: ("piece", Piece), ("done", (finish, usage)),
("result", JSON-ready value) or ("error", RequestError)."""


class ClientGone(Exception):
    """The client closed its connection before the answer was complete."""


def package_modules() -> list[str]:
    """The package's modules by their path in it, with `/` (`model.py`, `lab/ablation.py`)."""
    found = []
    for folder, _, files in os.walk(PACKAGE):
        inside = os.path.relpath(folder, PACKAGE)
        found += [name if inside == "." else f"{inside}/{name}" for name in files if name.endswith(".py")]
    return sorted(found)


def peer_closed(connection: socket.socket) -> bool:
    """True once the other end has closed the connection: the socket reads as ended (or is broken)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0.0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset by the peer, or closed here
        return True


class Job:
    """One piece of work for the model, and the channel its results go back through.

    `work(job)` runs on the main thread and reports with `job.emit`; `alive()` says whether
    anyone still waits for it (the connection's thread gave up, or the client closed the socket).
    """

    def __init__(self, work: Callable[[Job], None], connection: socket.socket | None = None) -> None:
        self.work = work
        self.connection = connection
        self.events: queue.Queue[Event] = queue.Queue()
        self.abandoned = threading.Event()

    def emit(self, kind: str, value: Any) -> None:
        """Send an event to the job's connection (from the main thread)."""
        self.events.put((kind, value))

    def alive(self) -> bool:
        """Does anyone still wait for the answer? (The main thread asks between tokens.)"""
        if self.abandoned.is_set():
            return False
        if self.connection is not None and peer_closed(self.connection):
            self.abandoned.set()
        return not self.abandoned.is_set()

    def wait(self) -> Iterator[Event]:
        """The job's events as they come, up to its last ("done", "result" or "error"); `ClientGone`
        (and the job abandoned) if the client closes the connection first."""
        while True:
            try:
                kind, value = self.events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not self.alive():
                    raise ClientGone() from None
                continue
            if kind == "error":
                raise value
            yield kind, value
            if kind in ("done", "result"):
                return


class Scheduler:
    """The bounded queue in front of the model, and the loop that runs its jobs in order.

    A job whose client has gone while it waited gives its place up (and is never run).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.waiting: collections.deque[Job] = collections.deque()
        self.changed = threading.Condition()
        self.seconds_per_job = 1.0  # a running average, for Retry-After

    def submit(self, job: Job) -> None:
        """Queue `job`, or answer 503 with an estimate of when to come back."""
        with self.changed:
            self.waiting = collections.deque(j for j in self.waiting if not j.abandoned.is_set())
            if len(self.waiting) >= self.size:
                wait = max(1, min(60, math.ceil(self.seconds_per_job * (len(self.waiting) + 1))))
                raise RequestError(503, f"the server is busy: {len(self.waiting)} requests are waiting for the model; "
                                        f"try again in {wait} s", kind="server_busy",
                                   headers={"Retry-After": str(wait)})  # fmt: skip
            self.waiting.append(job)
            self.changed.notify()

    def run(self) -> None:
        """Run jobs until KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one); a dead worker ends it too."""
        while True:
            with self.changed:
                while not self.waiting:
                    self.changed.wait(timeout=0.5)  # a timeout, so that a signal is handled promptly
                job = self.waiting.popleft()
            if not job.alive():
                continue  # its client left while it waited
            start = time.perf_counter()
            _run_job(job)
            self.seconds_per_job = 0.8 * self.seconds_per_job + 0.2 * (time.perf_counter() - start)

    def close(self) -> None:
        """Answer every job still waiting: the server is going away."""
        with self.changed:
            jobs, self.waiting = list(self.waiting), collections.deque()
        for job in jobs:
            job.emit("error", RequestError(503, "the server is shutting down", kind="server_shutting_down"))


def _run_job(job: Job) -> None:
    """Run one job, turning what it raises into its answer. A dead worker also stops the server."""
    try:
        job.work(job)
    except views.Stopped:
        pass
    except RequestError as e:
        job.emit("error", e)
    except WorkerError as e:
        job.emit("error", RequestError(500, str(e), kind="server_error"))
        raise
    except MicroQwenError as e:  # a bad id, a prompt too long for the context, ...
        job.emit("error", RequestError(400, str(e)))
    except Exception as e:  # a bug: say so, and go on serving
        traceback.print_exc()
        job.emit("error", RequestError(500, f"internal error: {type(e).__name__}: {e}", kind="server_error"))


class Piece:
    """A piece of generated text, and the logprobs of the token that released it (if asked)."""

    def __init__(self, text: str, logprob: TokenLogprob | None) -> None:
        self.text, self.logprob = text, logprob


class LogitsTap:
    """A hook that keeps each step's logits until the token drawn from them is reported (`take`)."""

    def __init__(self) -> None:
        self.pending: list[Sequence[float]] = []

    def __call__(self, name: str, pos: int, values: Sequence[float], shape: tuple[int, ...]) -> None:
        if name == "logits":
            self.pending.append(values)

    def take(self) -> Sequence[float]:
        """The logits of the oldest step whose token has not been reported yet."""
        return self.pending.pop(0)


class App:
    """What the server serves: the model, what its KV cache holds, the explorer, the queue, the files.

    `cached` (the ids whose positions the cache holds) is read and written on the main thread only.
    """

    def __init__(self, model: Qwen2ForCausalLM, name: str, queue_size: int = QUEUE_SIZE, max_body: int = MAX_BODY,
                 docs_url: str = DOCS_URL, log: Callable[[str], None] | None = None) -> None:  # fmt: skip
        if model.tokenizer is None:
            raise MicroQwenError(f"{model.path}: the server needs a model with tokenizer files")
        self.model, self.tokenizer, self.name = model, model.tokenizer, name
        self.explorer = views.Explorer(model)
        self.cached: list[int] = []
        self.scheduler = Scheduler(queue_size)
        self.max_body = max_body
        self.docs_url = docs_url if docs_url.endswith("/") else docs_url + "/"
        self.created = int(time.time())
        self.log = log or (lambda line: print(f"microqwen serve: {line}", file=sys.stderr, flush=True))
        self.static = {name: os.path.join(STATIC, name) for name in os.listdir(STATIC)}
        self.sources = {name: os.path.join(PACKAGE, name) for name in package_modules()}

    def info(self) -> dict[str, Any]:
        """What the explorer page needs first: the model's name and shape, where the docs are."""
        return dict(self.explorer.info(), model=self.name, docs=self.docs_url)

    # ------------------------------------------------------------ completions (on the main thread)

    def complete(self, job: Job, request: CompletionRequest) -> None:
        """Generate the answer to a chat or completion request, reporting each piece to the job."""
        model, ids = self.model, request.prompt_ids
        keep = common_prefix(self.cached, ids[:-1])  # at least one prompt token runs, for its logits
        model.truncate(keep)
        tap = LogitsTap() if request.top_logprobs is not None else None
        limit = request.max_tokens if request.max_tokens is not None else model.max_context
        stream = generate(model, ids[keep:], limit, Sampler(request.sampling), request.stop,
                          cached_ids=ids[:keep], hook=tap)  # fmt: skip
        generated: list[int] = []
        start, left = time.perf_counter(), False
        try:
            for token in stream:
                logprob = None
                if token.id is not None:
                    generated.append(token.id)
                    if tap is not None and request.top_logprobs is not None:
                        logprob = token_logprob(tap.take(), token.id, request.top_logprobs)
                job.emit("piece", Piece(token.text, logprob))
                if not job.alive():
                    left = True
                    break
        finally:
            stream.close()
            self.cached = (ids + generated)[: model.pos]  # the last token may not have run
            model.truncate(len(self.cached))
        seconds = time.perf_counter() - start
        if left:
            self.log(f"the client left after {len(generated)} tokens; stopped ({seconds:.2f} s)")
            return
        full = len(ids) + len(generated) >= model.max_context
        finish = finish_reason(self.tokenizer, generated, request, full)
        self.log(f"{'chat' if request.chat else 'completion'}: {len(ids)} prompt tokens ({keep} cached), "
                 f"{len(generated)} new, {seconds:.2f} s, finish {finish}")  # fmt: skip
        job.emit("done", (finish, usage(len(ids), len(generated))))

    # ------------------------------------------------------------ the explorer (on the main thread)

    def explorer_work(self, view: str, fields: Fields) -> Callable[[Job], None]:
        """Check an explorer request (on the connection's thread); the work to queue for the model.

        Every view answers one JSON value. `cached` is cleared while a view runs and set again only
        when it succeeds: a view interrupted halfway leaves the cache in no known state, and the
        next request then starts afresh. The experiments leave their own runs in the cache.
        """
        explorer = self.explorer
        ids = self._ids(fields) if view != "patch" else []
        compute: Callable[[Job, list[int]], tuple[Any, list[int]]]
        if view == "run":
            start = fields.integer("start", 0) or 0
            compute = lambda job, cached: explorer.run(ids, cached, start)  # noqa: E731
        elif view == "lens":
            pos = _required(fields.integer("pos", 0), "pos")
            compute = lambda job, cached: explorer.lens(ids, pos, cached)  # noqa: E731
        elif view == "distribution":
            params, draw = _sampling_fields(fields), fields.boolean("draw")
            compute = lambda job, cached: explorer.distribution(ids, params, draw, cached)  # noqa: E731
        elif view == "ablate":
            layer, head = _required(fields.integer("layer", 0), "layer"), _required(fields.integer("head", 0), "head")
            compute = lambda job, cached: (views.ablate_head(self.model, ids, layer, head), [])  # noqa: E731
        else:
            clean, corrupt = self._ids(fields, "clean"), self._ids(fields, "corrupt")
            tokens = {"clean": self._tokens(clean), "corrupt": self._tokens(corrupt)}

            def compute(job: Job, cached: list[int]) -> tuple[Any, list[int]]:
                result = views.patch_residual(self.model, clean, corrupt, job.alive)
                answers = {f"{name}_text": explorer.text(result[name]) for name in ("clean_answer", "corrupt_answer")}
                return dict(result, **tokens, **answers), []

        def work(job: Job) -> None:
            cached, self.cached = self.cached, []
            answer, self.cached = compute(job, cached)
            job.emit("result", answer)

        return work

    def _ids(self, fields: Fields, name: str = "prompt") -> list[int]:
        """The prompt of an explorer request: a text (`prompt`, or `chat: true` to wrap it in the chat
        template), or token ids (`ids`)."""
        text = fields.string(name)
        if text is None and name == "prompt" and fields.get("ids") is not None:
            ids = fields.get("ids")
            if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise RequestError(400, "ids must be a non-empty array of token ids", "ids")
            return ids
        if not text:
            raise RequestError(400, f"{name} must be a non-empty string", name)
        if fields.boolean("chat"):
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}])
        return self.tokenizer.encode(text)

    def _tokens(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        return [{"id": t, "text": self.explorer.text(t)} for t in ids]


def _required(value: int | None, name: str) -> int:
    if value is None:
        raise RequestError(400, f"{name} is required", name)
    return value


def _sampling_fields(fields: Fields) -> SamplingParams:
    """The explorer's sampler settings: the same fields as the API's, a wider temperature range."""
    top_k = fields.integer("top_k", 0)
    return SamplingParams(
        temperature=_default(fields.number("temperature", 0, 10), 1.0),
        top_k=top_k or 0,
        top_p=_default(fields.number("top_p", 0, 1, low_open=True), 1.0),
        min_p=_default(fields.number("min_p", 0, 1), 0.0),
        repetition_penalty=_default(fields.number("repetition_penalty", 0, 10, low_open=True), 1.0),
        seed=fields.integer("seed", 0),
    )


def _default(value: float | None, default: float) -> float:
    return default if value is None else value


# ------------------------------------------------------------------ HTTP


class Handler(http.server.BaseHTTPRequestHandler):
    """One connection: parse each request, check it, queue its work, write the answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, and chunked streams
    server_version = "microqwen"
    timeout = IDLE_SECONDS
    server: Server

    @property
    def app(self) -> App:
        return self.server.app

    def do_GET(self) -> None:
        """http.server calls do_<METHOD>: every method goes to `dispatch` (a wrong one is a 405 there)."""
        self.dispatch(self.command)

    do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def dispatch(self, method: str) -> None:
        """Route the request; every refusal is OpenAI's error object with its status."""
        try:
            self._check_host()
            path = urllib.parse.urlsplit(self.path).path
            route, allowed = self._route(path)
            if method not in allowed:
                raise RequestError(405, f"{method} {path}: use {' or '.join(allowed)}",
                                   headers={"Allow": ", ".join(allowed)})  # fmt: skip
            route(path)
        except RequestError as e:
            self.send_json(e.status, e.body(), e.headers)
        except (ClientGone, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _route(self, path: str) -> tuple[Callable[[str], None], tuple[str, ...]]:
        routes: dict[str, tuple[Callable[[str], None], tuple[str, ...]]] = {
            "/": (self.page, ("GET",)),
            "/health": (lambda _: self.send_json(200, {"status": "ok"}), ("GET",)),
            "/v1/models": (lambda _: self.send_json(200, models_list(self.app.name, self.app.created)), ("GET",)),
            "/v1/chat/completions": (lambda _: self.completions(chat=True), ("POST",)),
            "/v1/completions": (lambda _: self.completions(chat=False), ("POST",)),
            "/tokenize": (lambda _: self.tokenize(), ("POST",)),
            "/detokenize": (lambda _: self.detokenize(), ("POST",)),
            "/explorer/info": (lambda _: self.send_json(200, self.app.info()), ("GET",)),
        }
        if path in routes:
            return routes[path]
        if path.startswith("/v1/models/"):  # a Hub id has a slash: org/name
            return self.model_card, ("GET",)
        prefix, _, rest = path.rpartition("/")
        if prefix == "/explorer" and rest in ("run", "lens", "distribution", "ablate", "patch"):
            return (lambda _: self.explore(rest)), ("POST",)
        if prefix == "/static":
            return self.static, ("GET",)
        if path.startswith("/source/"):  # a module, or a module of a subpackage (lab/ablation.py)
            return self.source, ("GET",)
        raise RequestError(404, f"there is nothing at {path}")

    def _check_host(self) -> None:
        if not self.server.loopback:
            return
        host = urllib.parse.urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        if host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("127."):
            raise RequestError(403, f"Host {host!r} is not this server's (it serves only 127.0.0.1 and localhost)")

    # ------------------------------------------------------------ reading and writing

    def read_json(self) -> JSON:
        """The request body, parsed; 411 without a Content-Length, 413 over the limit, 400 if not JSON."""
        length = self.headers.get("Content-Length")
        if length is None or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RequestError(411, "a request body needs a Content-Length header (chunked bodies are not supported)")
        if not length.strip().isdigit():
            self.close_connection = True
            raise RequestError(400, f"Content-Length must be a number of bytes, got {length!r}")
        size = int(length)
        if size > self.app.max_body:
            self.close_connection = True  # the body stays unread
            raise RequestError(413, f"the request body is {size} bytes; the limit is {self.app.max_body}")
        data = self.rfile.read(size)
        if len(data) < size:
            raise ClientGone()
        try:
            return parse_bytes(data, "the request body")
        except FormatError as e:
            raise RequestError(400, str(e)) from None

    def send_json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        """A whole answer: `value` as JSON."""
        body = json.dumps(value, ensure_ascii=False).encode("utf-8")
        self.send_bytes(status, body, "application/json", headers)

    def send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        """A whole answer with its length (the connection stays open for the next request, unless closing)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, an unknown method), as JSON too."""
        self.close_connection = True
        try:
            self.send_json(code, RequestError(code, message or self.responses.get(code, ("error",))[0]).body())
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """http.server's line per request, in the server's log."""
        self.app.log(f"{self.address_string()} {format % args}")

    # ------------------------------------------------------------ routes

    def page(self, path: str) -> None:
        """GET /: the explorer, with a policy that lets it load and ask nothing but this server."""
        self._file(self.app.static["index.html"], {"Content-Security-Policy": PAGE_POLICY})

    def static(self, path: str) -> None:
        """GET /static/NAME: a file of microqwen/static, found by name in the folder's listing."""
        name = urllib.parse.unquote(path.rpartition("/")[2])
        if name not in self.app.static:  # a name from the folder's own listing: nothing else can be opened
            raise RequestError(404, f"there is no file {name!r} in the explorer's folder")
        self._file(self.app.static[name])

    def source(self, path: str) -> None:
        """GET /source/NAME.py (or /source/lab/NAME.py): a module of the package, as text."""
        name = urllib.parse.unquote(path[len("/source/") :])
        if name not in self.app.sources:
            raise RequestError(404, f"there is no module {name!r} in microqwen")
        self._file(self.app.sources[name], content_type="text/plain; charset=utf-8")

    def _file(self, path: str, headers: dict[str, str] | None = None, content_type: str | None = None) -> None:
        with open(path, "rb") as f:
            body = f.read()
        kind = content_type or CONTENT_TYPES.get(os.path.splitext(path)[1], "application/octet-stream")
        self.send_bytes(200, body, kind, dict(headers or {}, **{"Cache-Control": "no-cache"}))

    def model_card(self, path: str) -> None:
        """GET /v1/models/{id}: the model, if that is its name."""
        name = urllib.parse.unquote(path[len("/v1/models/") :])
        if name != self.app.name:
            raise RequestError(404, f"the model {name!r} is not served here; this server has {self.app.name!r}", "model")
        self.send_json(200, model_card(self.app.name, self.app.created))

    def tokenize(self) -> None:
        """llama-server's /tokenize: {"content", "with_pieces", "parse_special"} -> {"tokens": [...]}."""
        fields = Fields(self.read_json())
        content = fields.string("content")
        if content is None:
            raise RequestError(400, "content must be a string: the text to tokenize", "content")
        fields.boolean("add_special")  # Qwen2.5 adds no BOS token: nothing to add
        special = fields.get("parse_special") is None or fields.boolean("parse_special")  # <|im_end|> as one token
        try:
            ids = self.app.tokenizer.encode(content, allow_special=special)
        except MicroQwenError as e:
            raise RequestError(400, f"content: {e}", "content") from None
        if not fields.boolean("with_pieces"):
            self.send_json(200, {"tokens": ids})
            return
        self.send_json(200, {"tokens": [{"id": t, "piece": _piece(self.app.tokenizer.token_bytes(t))} for t in ids]})

    def detokenize(self) -> None:
        """llama-server's /detokenize: {"tokens": [ids]} -> {"content": text}."""
        tokens = Fields(self.read_json()).get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise RequestError(400, "tokens must be an array of token ids", "tokens")
        try:
            self.send_json(200, {"content": self.app.tokenizer.decode(tokens)})
        except MicroQwenError as e:
            raise RequestError(400, f"tokens: {e}", "tokens") from None

    def completions(self, chat: bool) -> None:
        """POST /v1/chat/completions and /v1/completions: check, queue, then answer whole or streamed."""
        app = self.app
        request = parse_completion(self.read_json(), chat, app.tokenizer, app.model.sampling,
                                   app.model.max_context, app.name)  # fmt: skip
        job = Job(lambda job: app.complete(job, request), self.connection)
        app.scheduler.submit(job)
        answer = Answer(request, app.tokenizer)
        if request.stream:
            self._stream(job, answer)
        else:
            self._whole(job, answer)

    def _whole(self, job: Job, answer: Answer) -> None:
        for kind, value in job.wait():
            if kind == "piece":
                answer.add(value.text, value.logprob)
            else:
                self.send_json(200, answer.response(*value))

    def _stream(self, job: Job, answer: Answer) -> None:
        """Server-sent events: `data: {chunk}` for each piece of text, then `data: [DONE]`."""
        started = False
        try:
            for kind, value in job.wait():
                if not started:
                    self._open_stream()
                    started = True
                    first = answer.first_chunk()
                    if first is not None:
                        self._event(first)
                chunks = [answer.add(value.text, value.logprob)] if kind == "piece" else answer.final_chunks(*value)
                for chunk in chunks:
                    if chunk is not None:
                        self._event(chunk)
        except RequestError as e:
            if not started:
                raise
            self._event(e.body())  # the stream has begun: the error goes in it, as OpenAI's does
        except (BrokenPipeError, ConnectionResetError):
            job.abandoned.set()
            raise
        self._send_chunk(b"data: [DONE]\n\n")
        self._send_chunk(b"")

    def _open_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _event(self, value: Any) -> None:
        self._send_chunk(b"data: " + json.dumps(value, ensure_ascii=False).encode("utf-8") + b"\n\n")

    def _send_chunk(self, data: bytes) -> None:
        """One piece of a chunked body (the empty one ends it)."""
        self.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()

    def explore(self, view: str) -> None:
        """POST /explorer/VIEW: check, queue, answer the view's JSON."""
        job = Job(self.app.explorer_work(view, Fields(self.read_json())), self.connection)
        self.app.scheduler.submit(job)
        for _, value in job.wait():
            self.send_json(200, value)


def _piece(data: bytes) -> str | list[int]:
    """A token's piece as llama-server writes it: its text if its bytes are UTF-8, else the bytes."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return list(data)


class Server(http.server.ThreadingHTTPServer):
    """A thread per connection; the threads never keep the process alive."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.loopback = is_loopback(address[0])
        super().__init__(address, Handler)


def is_loopback(host: str) -> bool:
    """Is `host` an address of this machine only (127.x.x.x, ::1, localhost)?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stop_on_sigterm(signum: int, frame: Optional[object]) -> None:
    raise KeyboardInterrupt()


def serve(model: Qwen2ForCausalLM, name: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          queue_size: int = QUEUE_SIZE, max_body: int = MAX_BODY, docs_url: str = DOCS_URL) -> None:  # fmt: skip
    """Serve `model` until Ctrl-C or SIGTERM (which this raises as KeyboardInterrupt once the server is down)."""
    app = App(model, name, queue_size, max_body, docs_url)
    try:
        server = Server((host, port), app)
    except OSError as e:
        raise MicroQwenError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    if not server.loopback:
        app.log(f"warning: listening on {host}, not a loopback address: anyone who can reach this machine can use "
                "the model (and there is no authentication)")  # fmt: skip
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    app.log(f"{name}: explorer at http://{shown}:{bound}/, OpenAI API at http://{shown}:{bound}/v1 (Ctrl-C stops)")
    listener = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    listener.start()
    try:
        app.scheduler.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
        app.scheduler.close()
