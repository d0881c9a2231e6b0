"""Worker processes: the matrix products on every core, activations through shared memory.

Pure Python runs one core per process, so `WorkerPool` starts N worker processes, and the main
process and the workers share out every layer as `microqwen.shards` describes (process s of P = N + 1
owns query heads, key/value heads, MLP units and vocabulary rows; the main process is share 0):

    layers.3.mlp with 1 worker (2 cores):
        the main process: gate/up rows 0..2431, down_proj columns 0..2431    (its partial sum)
        worker 0:         gate/up rows 2432..4863, down_proj columns 2432..4863

A worker is a fresh Python interpreter (the same executable) running `worker_main` of this
module, started with the model's path, its share number and two pipes; it opens the model
itself, works out the same plan from its config, and reads just its part of each matrix from the
file (so the weights are never pickled or copied between processes). Nothing of the caller's
script runs in it, so `microqwen.load(..., workers=N)` works the same from a script with or without
an `if __name__ == "__main__":` guard, from `python -c`, the REPL or a notebook.

For one request (a job, or the attention or MLP half of a layer, for up to TOKENS_PER_PASS tokens),
the main process

    1. writes the input vectors (float64) into the shared input buffer,
    2. sends each worker the request (a 36-byte frame through its pipe),
    3. computes its own share (instead of sleeping while the workers compute),
    4. waits until every worker has written its part into the shared output buffer and answered,
       then reads them and puts the parts together (`ShardedEngine`).

The two buffers are anonymous shared memory (`os.memfd_create`, else an unlinked temporary file)
handed to the workers as file descriptors: there is no name to clean up, and the kernel frees
the memory when the last process that maps it is gone, however it ends.

Between requests the main process does the cheap steps (norms, residuals). A process that sleeps
while it waits pays to wake up (up to half a millisecond on a virtual machine, and a step has 49
requests), so both sides first poll for a few milliseconds
(`SPIN_SECONDS`) and only then sleep: the main process while the last worker finishes, a
worker while the main process does the cheap steps before the next product. With one
process per core, the one that polls has its core to itself.

Nothing is left behind: the pool is a context manager and also closes at interpreter exit;
workers run in a session of their own, so a Ctrl-C at the terminal reaches only the main process
(which can go on using the pool); a worker that dies is reported as a `WorkerError` within a
second instead of a hang; and if the main process is killed, each worker sees its pipe close
and exits.
"""

from __future__ import annotations

import atexit
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from typing import NoReturn, Sequence

from .config import Config
from .errors import WorkerError
from .kernels import Kernel, Matrix, Vector
from .linear import TOKENS_PER_PASS, Job, linear_jobs
from .shards import ATTENTION, MLP, RUN, Share, Shard, ShardedEngine, column_steps, compute, plan, split_by_columns
from .weights import Weights, open_model

SPIN_SECONDS = 0.005
"""How long a process polls for an answer or a request before it sleeps until one comes."""

FLOAT = 8  # bytes per float64 in the shared buffers
LOADING = "loading the weights"

PUSH, BENCH, STOP = 3, 4, 5  # besides the shards' RUN, ATTENTION and MLP
REQUEST = struct.Struct("<qiiiqd")  # sequence number, command, job or layer, tokens, position, seconds (BENCH)
ANSWER = struct.Struct("<qid")  # sequence number, 0 = done or 1 = failed, a value (a kernel rate)
ANSWER_FRAME = 512  # bytes: the answer, then a failed worker's error message
"""Messages are fixed-size frames, each written by one write(2) and read by one read(2). A pipe
delivers a write of up to PIPE_BUF (4096) bytes whole, so no interruption (Ctrl-C) can leave
half a message in a pipe."""


def default_workers() -> int:
    """One worker per CPU but one: the main process computes a share too (0 on a single CPU)."""
    return max((os.cpu_count() or 1) - 1, 0)


class Buffers:
    """The two shared buffers: x (the input vectors) and y (a region per worker for its outputs).

    x holds TOKENS_PER_PASS vectors of the widest input (or some positions of the KV cache, for a
    push); each region of y holds TOKENS_PER_PASS of its worker's largest output.
    """

    def __init__(self, config: Config, jobs: Sequence[Job], shares: Sequence[Share], fds: tuple[int, int] | None = None) -> None:
        self.push_row = config.num_hidden_layers * 2 * config.kv_size  # one position of the KV cache, every layer
        x_floats = TOKENS_PER_PASS * max(job.cols for job in jobs)
        self.push_positions = x_floats // self.push_row
        self.region = TOKENS_PER_PASS * max(output_size(config, jobs, share, command, i)
                                            for share in shares[1:] for command, i in requests(config, jobs))  # fmt: skip
        sizes = (max(x_floats, self.push_row) * FLOAT, max(len(shares) - 1, 1) * self.region * FLOAT)
        self.fds = fds or (_shared_file(sizes[0]), _shared_file(sizes[1]))
        self.x, self.y = (mmap.mmap(fd, size) for fd, size in zip(self.fds, sizes))

    def close(self) -> None:
        """Unmap both buffers and close their descriptors (the memory goes with the last user)."""
        for memory in (self.x, self.y):
            memory.close()
        for fd in self.fds:
            os.close(fd)


def requests(config: Config, jobs: Sequence[Job]) -> list[tuple[int, int]]:
    """Every (command, job or layer) a shard can be asked for."""
    layers = range(config.num_hidden_layers)
    return [(RUN, i) for i in range(len(jobs))] + [(ATTENTION, i) for i in layers] + [(MLP, i) for i in layers]


def output_size(config: Config, jobs: Sequence[Job], share: Share, command: int, index: int) -> int:
    """Floats a shard writes per token for a request: its rows, a partial sum, or the attention's partial + k, v."""
    if command == ATTENTION:
        return config.hidden_size + 2 * len(share.kv_heads) * config.head_dim
    if command == MLP:
        return config.hidden_size
    job = jobs[index]
    return job.rows if split_by_columns(job) else sum(stop - start for start, stop in share.rows(job, config))


def _shared_file(size: int) -> int:
    """A descriptor of `size` bytes of anonymous memory that a child process can map too."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("microqwen-activations")
    else:  # macOS and others: a temporary file with its name removed at once
        handle, path = tempfile.mkstemp(prefix="microqwen-")
        os.unlink(path)
        fd = handle
    os.ftruncate(fd, max(size, 1))
    return fd


class Worker:
    """One worker process and the main process's ends of its two pipes."""

    def __init__(self, process: subprocess.Popen[bytes], requests: int, answers: int) -> None:
        self.process, self.requests, self.answers = process, requests, answers

    @property
    def pid(self) -> int:
        return self.process.pid


class WorkerPool(ShardedEngine):
    """The main process (share 0) and N workers (shares 1..N) run the shards: an engine, like `LocalEngine`."""

    def __init__(self, path: str, config: Config, weights: Weights, jobs: Sequence[Job], n_workers: int,
                 kernel: Kernel = None, mutation: str | None = None) -> None:  # fmt: skip
        super().__init__(config, weights, jobs, n_workers + 1, kernel)
        self.n_workers = n_workers
        self.workers: list[Worker] = []
        self.sequence = 0  # numbers each request, so a late answer to an interrupted one is ignored
        self.closed = False
        self.buffers = Buffers(config, self.jobs, self.shares)
        atexit.register(self.close)
        try:
            self.workers = [self._start(path, w, kernel, mutation) for w in range(n_workers)]
            self.local = Shard(config, weights, self.jobs, self.shares[0], kernel)
            self._wait_all(LOADING)
        except BaseException:
            self.close()
            raise

    def _start(self, path: str, w: int, kernel: Kernel, mutation: str | None) -> Worker:
        """Start worker w; it loads its shard while the main process loads its own.

        A planted bug (`mutation`) goes by its name: the worker plants it in its own reads and kernel.
        """
        request_reader, request_writer = os.pipe()
        answer_reader, answer_writer = os.pipe()
        theirs = (request_reader, answer_writer) + self.buffers.fds
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        boot = f"import sys; sys.path.insert(0, {package_parent!r}); import microqwen.workers as w; w.worker_main(sys.argv[1:])"
        name = kernel if isinstance(kernel, str) else ""  # a planted bug's kernel class comes with its mutation
        args = [path, name, mutation or "", str(w + 1), str(self.n_workers + 1), *map(str, theirs)]
        try:
            process = subprocess.Popen([sys.executable, "-c", boot, *args], pass_fds=theirs,
                                       stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        except OSError as e:
            for fd in (request_reader, request_writer, answer_reader, answer_writer):
                os.close(fd)
            raise WorkerError(f"cannot start worker {w} ({sys.executable}): {e.strerror}") from None
        os.close(request_reader)  # only the worker holds these ends now: if we die, it reads the end of its
        os.close(answer_writer)  # requests, and if it dies, we read the end of its answers
        return Worker(process, request_writer, answer_reader)

    def _compute(self, command: int, index: int, xs: Sequence[Vector], pos: int) -> list[list[list[float]]]:
        """Every process's part of the request: ours computed here while the workers compute theirs."""
        self._check_open()
        x, width = self.buffers.x, len(xs[0])
        for t, vector in enumerate(xs):
            _write(x, t * width, vector)
        doing = self.jobs[index].name if command == RUN else f"layers.{index}.{'self_attn' if command == ATTENTION else 'mlp'}"
        self._send_all(command, index, len(xs), pos, 0.0, doing)
        parts = [compute(self.local, command, index, xs, pos)]
        self._wait_all(doing)
        for w in range(self.n_workers):  # the workers' parts follow ours, worker by worker
            size = output_size(self.config, self.jobs, self.shares[w + 1], command, index)
            base = w * self.buffers.region
            parts.append([_read(self.buffers.y, base + t * size, size) for t in range(len(xs))])
        return parts

    def _push(self, first: int, rows: list[list[list[float]]]) -> None:
        """Copy positions of the KV cache to every shard, as many positions per request as the buffer holds."""
        self._check_open()
        self.local.push(first, rows)
        per = self.buffers.push_positions
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            for t, row in enumerate(chunk):
                _write(self.buffers.x, t * self.buffers.push_row, [value for layer in row for value in layer])
            self._send_all(PUSH, 0, len(chunk), first + start, 0.0, "copying the KV cache")
            self._wait_all("copying the KV cache")

    def kernel_rates(self, job: Job, seconds: float) -> list[float]:
        """Every process times its kernel on its share of `job`, all at once: multiply-adds/s each."""
        self._check_open()
        index = self.index[job.name]
        doing = f"timing the kernel on {job.name}"
        self._send_all(BENCH, index, 0, 0, seconds, doing)
        ours = kernel_rate(self.local.matrices[index], seconds)
        return [ours] + self._wait_all(doing)

    def _check_open(self) -> None:
        if self.closed:
            raise WorkerError("the worker pool is closed")

    def _send_all(self, command: int, index: int, tokens: int, pos: int, seconds: float, doing: str) -> None:
        """Send one request to every worker (answers come to `_wait_all`)."""
        self.sequence += 1
        frame = REQUEST.pack(self.sequence, command, index, tokens, pos, seconds)
        for w, worker in enumerate(self.workers):
            try:
                os.write(worker.requests, frame)
            except OSError:  # its end of the pipe is closed: the worker is gone
                self._fail(w, doing)

    def _wait_all(self, doing: str) -> list[float]:
        """Wait until every worker has answered the current request; a death is a WorkerError."""
        answers = [0.0] * self.n_workers
        waiting = {worker.answers: w for w, worker in enumerate(self.workers)}
        deadline = time.perf_counter() + SPIN_SECONDS
        while waiting:
            spinning = time.perf_counter() < deadline  # poll first: waking up costs more
            for fd in select.select(list(waiting), [], [], 0.0 if spinning else 1.0)[0]:
                w = waiting[fd]
                sequence, value = self._answer(w, doing)
                if sequence == self.sequence:  # else: a late answer to an interrupted request
                    answers[w] = value
                    del waiting[fd]
        return answers

    def _answer(self, w: int, doing: str) -> tuple[int, float]:
        """Read one answer from worker w: (the request's sequence number, its value)."""
        try:
            frame = _read_frame(self.workers[w].answers, ANSWER_FRAME)
        except (EOFError, OSError):
            self._fail(w, doing)
        sequence, failed, value = ANSWER.unpack_from(frame)
        if failed:
            self.close()
            detail = frame[ANSWER.size :].rstrip(b"\0").decode("utf-8", "replace")
            raise WorkerError(f"worker {w} failed while {doing}: {detail}")
        return sequence, value

    def _fail(self, w: int, doing: str) -> NoReturn:
        """Worker w is gone: stop the others, and say how it ended."""
        process = self.workers[w].process
        try:
            code = process.wait(timeout=1.0)
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        except subprocess.TimeoutExpired:
            how = "closed its pipe"
        self.close()
        raise WorkerError(f"worker {w} (pid {process.pid}) {how} while {doing}")

    def close(self) -> None:
        """Stop the workers and free the shared memory; safe to call more than once.

        The memory is freed even if stopping the workers is interrupted (a second Ctrl-C).
        """
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        try:
            self._stop_workers()
        finally:
            self.buffers.close()

    def _stop_workers(self) -> None:
        for worker in self.workers:
            try:
                os.write(worker.requests, REQUEST.pack(0, STOP, 0, 0, 0, 0.0))
            except OSError:
                pass  # that worker is already gone
        deadline = time.monotonic() + 5.0
        for worker in self.workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        for worker in self.workers:
            os.close(worker.requests)
            os.close(worker.answers)


# ------------------------------------------------------------------ in the worker process


def worker_main(argv: Sequence[str]) -> None:
    """A worker's whole life: load its shard, then answer requests until told to stop.

    `argv`: the model path, the kernel ('' for the default), a planted bug ('' for none), its share
    number, the number of shares, and four descriptors: its request pipe, its answer pipe, the x and
    y buffers.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    path, mutation, share, shares = argv[0], argv[2], int(argv[3]), int(argv[4])
    kernel: Kernel = argv[1] or None
    requests, answers, x_fd, y_fd = (int(fd) for fd in argv[5:9])
    try:
        config, weights = open_model(path)
        if mutation:  # the same bug as the main process's, in this process's reads and kernel
            from .lab.mutations import engine_parts

            weights, kernel = engine_parts(mutation, weights, kernel)
        jobs = linear_jobs(config)
        every = plan(config, shares, *column_steps(config, weights, jobs))  # the same plan as the main process's
        with weights:
            shard = Shard(config, weights, jobs, every[share], kernel)
        buffers = Buffers(config, jobs, every, (x_fd, y_fd))
        os.write(answers, _answer_frame(0, 0.0))
        _serve(requests, answers, shard, buffers, (share - 1) * buffers.region)
    except (EOFError, BrokenPipeError):
        pass  # the main process is gone: so are we
    except BaseException:
        error = traceback.format_exc(limit=3).strip().splitlines()[-1]
        try:
            os.write(answers, _answer_frame(-1, 0.0, error))
        except OSError:
            pass


def _serve(requests: int, answers: int, shard: Shard, buffers: Buffers, y_base: int) -> None:
    """Answer requests: compute our part (inputs from shared memory, outputs back), copy cache rows, or time the kernel.

    Our outputs go to our own region of the output buffer, from float `y_base` on, token after
    token: a late answer to an interrupted request can only overwrite our own region, which the
    next request then writes again before we answer it.
    """
    config, jobs = shard.config, shard.jobs
    while True:
        deadline = time.perf_counter() + SPIN_SECONDS
        while not select.select([requests], [], [], 0.0)[0] and time.perf_counter() < deadline:
            pass  # poll a little while: the next request usually comes within a millisecond
        sequence, command, index, tokens, pos, seconds = REQUEST.unpack(_read_frame(requests, REQUEST.size))
        if command == STOP:
            return
        if command == BENCH:
            os.write(answers, _answer_frame(sequence, kernel_rate(shard.matrices[index], seconds)))
            continue
        if command == PUSH:
            flat = [_read(buffers.x, t * buffers.push_row, buffers.push_row) for t in range(tokens)]
            width = 2 * config.kv_size
            shard.push(pos, [[row[i * width : (i + 1) * width] for i in range(config.num_hidden_layers)] for row in flat])
        else:
            width = jobs[index].cols if command == RUN else config.hidden_size
            xs = [_read(buffers.x, t * width, width) for t in range(tokens)]
            size = output_size(config, jobs, shard.share, command, index)
            for t, y in enumerate(compute(shard, command, index, xs, pos)):
                _write(buffers.y, y_base + t * size, y)
        os.write(answers, _answer_frame(sequence, 0.0))


def _answer_frame(sequence: int, value: float, error: str | None = None) -> bytes:
    """An answer: done (with a value), or failed (with the error message, cut to fit the frame)."""
    message = (error or "").encode("utf-8")[: ANSWER_FRAME - ANSWER.size]
    return ANSWER.pack(sequence, error is not None, value) + message.ljust(ANSWER_FRAME - ANSWER.size, b"\0")


def _read_frame(fd: int, size: int) -> bytes:
    """One read(2) of one frame; EOFError when the other end is closed."""
    frame = os.read(fd, size)
    if len(frame) != size:
        raise EOFError("the other end of the pipe is closed")
    return frame


def kernel_rate(matrix: Matrix, seconds: float) -> float:
    """Multiply-adds per second of matrix.matvec, timed for about `seconds` after a warm-up call."""
    x = [((j * 7919) % 1000) / 1000.0 - 0.5 for j in range(matrix.cols)]
    matrix.matvec(x)  # warm-up (PyPy compiles the loop here)
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < seconds:
        matrix.matvec(x)
        calls += 1
    return calls * matrix.rows * matrix.cols / (time.perf_counter() - start)


def _write(memory: mmap.mmap, offset: int, values: Vector) -> None:
    """Store float64 values at float index `offset` of a shared buffer."""
    memory[FLOAT * offset : FLOAT * (offset + len(values))] = array("d", values).tobytes()


def _read(memory: mmap.mmap, offset: int, count: int) -> list[float]:
    """Load `count` float64 values from float index `offset` of a shared buffer."""
    values = array("d")
    values.frombytes(memory[FLOAT * offset : FLOAT * (offset + count)])
    return values.tolist()

