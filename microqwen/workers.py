"""Worker processes: the matrix products on every core, activations through shared memory.

Pure Python runs one core per process, so `WorkerPool` starts N worker processes, and the
main process and the workers share out the rows of every weight matrix (every `linear.Job`):

    job layers.3.mlp.gate_up_proj, W [9728, 896], 1 worker (2 cores):
        the main process computes rows 0..4863        worker 0 computes rows 4864..9727

Each worker reads its rows straight from the safetensors file (so the weights are never
pickled or copied between processes) into the form its kernel wants. For one product
y = W x, the main process

    1. writes x (float64) into the shared input buffer,
    2. sends each worker the job number (a 24-byte frame through its pipe),
    3. computes its own rows of y (instead of sleeping while the workers compute),
    4. waits until every worker has written its rows of y into the shared output buffer
       and answered, then reads them.

Between products the main process does the cheap steps (norms, RoPE, attention, residuals).
A process that sleeps while it waits pays to wake up (up to half a millisecond on a virtual
machine, and a step has 97 products), so both sides first poll for a few milliseconds
(`SPIN_SECONDS`) and only then sleep: the main process while the last worker finishes, a
worker while the main process does the cheap steps before the next product. With one
process per core, the one that polls has its core to itself.

Nothing is left behind: the pool is a context manager and also closes at interpreter
exit; shared memory is unlinked on every exit path; workers ignore Ctrl-C (the main
process handles it and can go on using the pool, and they start with it held back, so a Ctrl-C
during their start does not reach them either); a worker that dies is reported as a
`WorkerError` within a second instead of a hang; and if the main process is killed,
each worker sees its pipe close and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import struct
import time
import traceback
from array import array
from multiprocessing.connection import Connection, wait
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Iterator, NoReturn, Sequence

from .errors import WorkerError
from .kernels import Matrix, Vector, load_matrix
from .linear import Job, read_rows
from .safetensors import Checkpoint, SafetensorsFile

MAX_TOKENS = 16
"""Activations per job call that fit the shared buffers (larger calls are split)."""

SPIN_SECONDS = 0.005
"""How long a process polls for an answer or a request before it sleeps until one comes."""

FLOAT = 8  # bytes per float64 in the shared buffers
LOADING = "loading the weights"

RUN, BENCH, STOP = 0, 1, 2
REQUEST = struct.Struct("<qiid")  # sequence number, command, job index, tokens (RUN) or seconds (BENCH)
ANSWER = struct.Struct("<qid")  # sequence number, 0 = done or 1 = failed, a value (a kernel rate)
ANSWER_FRAME = 512  # bytes: the answer, then a failed worker's error message
"""Messages are fixed-size frames, each written by one write(2) and read by one read(2). A pipe
delivers a write of up to PIPE_BUF (4096) bytes whole, so no interruption (Ctrl-C) can leave
half a message in a pipe."""


def default_workers() -> int:
    """One worker per CPU but one: the main process computes a share too (0 on a single CPU)."""
    return max((os.cpu_count() or 1) - 1, 0)


def row_ranges(rows: int, shares: int) -> list[tuple[int, int]]:
    """Split rows 0..rows-1 into `shares` contiguous slices of nearly equal size."""
    return [(rows * w // shares, rows * (w + 1) // shares) for w in range(shares)]


class WorkerPool:
    """The main process and N workers run `linear.Job`s on their shares of rows; call it like `LocalLinear`.

    Share 0 of every job's rows is the main process's, share w + 1 is worker w's.
    """

    def __init__(self, checkpoint: Checkpoint, jobs: Sequence[Job], n_workers: int, kernel: str | None = None) -> None:
        self.jobs = {job.name: (index, job) for index, job in enumerate(jobs)}
        self.n_workers = n_workers
        self.processes: list[Any] = []
        self.requests: list[Connection] = []  # we write, worker w reads
        self.answers: list[Connection] = []  # worker w writes, we read
        self.local: list[Matrix] = []  # the main process's share of every job
        self.sequence = 0  # numbers each request, so a late answer to an interrupted one is ignored
        self.closed = False
        max_cols = max(job.cols for job in jobs)
        self.region = MAX_TOKENS * max(-(-job.rows // (n_workers + 1)) for job in jobs)  # floats of y per worker
        self.x_memory = SharedMemory(create=True, size=MAX_TOKENS * max_cols * FLOAT)
        self.y_memory = SharedMemory(create=True, size=n_workers * self.region * FLOAT)
        atexit.register(self.close)
        try:
            self._start([f.path for f in checkpoint.files], list(jobs), kernel)
            self.local = _load_shares(checkpoint, list(jobs), [self.share(job, 0) for job in jobs], kernel)
            self._wait_all(LOADING)
        except BaseException:
            self.close()
            raise

    def share(self, job: Job, who: int) -> tuple[int, int]:
        """The rows [start, stop) of `job` that process `who` computes (0: the main process)."""
        return row_ranges(job.rows, self.n_workers + 1)[who]

    def _start(self, paths: list[str], jobs: list[Job], kernel: str | None) -> None:
        """Start the workers; they load their shares while the main process loads its own."""
        context = multiprocessing.get_context("spawn")
        for w in range(self.n_workers):
            request_reader, request_writer = context.Pipe(duplex=False)
            answer_reader, answer_writer = context.Pipe(duplex=False)
            shares = [self.share(job, w + 1) for job in jobs]
            process = context.Process(
                target=_worker_main,
                args=(request_reader, answer_writer, paths, jobs, shares, kernel, self.x_memory.name,
                      self.y_memory.name, w * self.region),
                name=f"microqwen-worker-{w}",
                daemon=True,
            )  # fmt: skip
            with _ctrl_c_held():
                process.start()
                request_reader.close()  # only the worker holds these ends now: if we die, it reads
                answer_writer.close()  # the end of its requests, and if it dies, we read the end of its answers
                self.processes.append(process)
                self.requests.append(request_writer)
                self.answers.append(answer_reader)

    def __call__(self, job: str, xs: Sequence[Vector]) -> list[list[float]]:
        """[W x for x in xs] for the job's W, its rows computed by all processes together."""
        if self.closed:
            raise WorkerError("the worker pool is closed")
        index, spec = self.jobs[job]
        ys: list[list[float]] = []
        for start in range(0, len(xs), MAX_TOKENS):
            ys += self._run(index, spec, xs[start : start + MAX_TOKENS])
        return ys

    def _run(self, index: int, job: Job, xs: Sequence[Vector]) -> list[list[float]]:
        for t, x in enumerate(xs):
            _write(self.x_memory, t * job.cols, x)
        self._send_all(RUN, index, len(xs), job.name)
        ours = self.local[index].matmat(xs)  # [T, our rows], while the workers compute theirs
        self._wait_all(job.name)
        for w in range(self.n_workers):  # the workers' rows follow ours, worker by worker
            start, stop = self.share(job, w + 1)
            for t, y in enumerate(ours):
                y += _read(self.y_memory, w * self.region + t * (stop - start), stop - start)
        return ours

    def kernel_rates(self, job: str, seconds: float) -> list[float]:
        """Every process times its kernel on its share of `job`, all at once: multiply-adds/s each."""
        index, spec = self.jobs[job]
        doing = f"timing the kernel on {spec.name}"
        self._send_all(BENCH, index, seconds, doing)
        ours = kernel_rate(self.local[index], seconds)
        return [ours] + self._wait_all(doing)

    def _send_all(self, command: int, index: int, amount: float, doing: str) -> None:
        """Send one request to every worker (answers come to `_wait_all`)."""
        if self.closed:
            raise WorkerError("the worker pool is closed")
        self.sequence += 1
        frame = REQUEST.pack(self.sequence, command, index, amount)
        for w, requests in enumerate(self.requests):
            try:
                _write_frame(requests, frame)
            except OSError:  # its end of the pipe is closed: the worker is gone
                self._fail(w, doing)

    def _wait_all(self, doing: str) -> list[float]:
        """Wait until every worker has answered the current request; a death is a WorkerError."""
        answers = [0.0] * self.n_workers
        waiting = set(range(self.n_workers))
        deadline = time.perf_counter() + SPIN_SECONDS
        while waiting and time.perf_counter() < deadline:  # poll first: waking up costs more
            for w in [w for w in waiting if self.answers[w].poll()]:
                sequence, value = self._answer(w, doing)
                if sequence == self.sequence:
                    answers[w] = value
                    waiting.discard(w)
        while waiting:
            events: dict[Any, tuple[str, int]] = {}
            for w in waiting:
                events[self.answers[w]] = ("answer", w)
                events[self.processes[w].sentinel] = ("exit", w)
            for ready in wait(list(events), timeout=1.0):
                kind, w = events[ready]
                if w not in waiting:
                    continue
                if kind == "exit" and not self.answers[w].poll():
                    self._fail(w, doing)
                sequence, value = self._answer(w, doing)
                if sequence == self.sequence:  # else: a late answer to an interrupted request
                    answers[w] = value
                    waiting.discard(w)
        return answers

    def _answer(self, w: int, doing: str) -> tuple[int, float]:
        """Read one answer from worker w: (the request's sequence number, its value)."""
        try:
            frame = _read_frame(self.answers[w], ANSWER_FRAME)
        except (EOFError, OSError):
            self._fail(w, doing)
        sequence, failed, value = ANSWER.unpack_from(frame)
        if failed:
            self.close()
            detail = frame[ANSWER.size :].rstrip(b"\0").decode("utf-8", "replace")
            raise WorkerError(f"worker {w} failed while {doing}: {detail}")
        return sequence, value

    def _fail(self, w: int, doing: str) -> NoReturn:
        process = self.processes[w]
        process.join(timeout=1.0)
        code = process.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        if doing == LOADING and code == 1:  # it died before it could report: it never got to run our code
            how += (" before it started (a script that calls microqwen.load(..., workers=N) must guard its"
                    " top level with `if __name__ == \"__main__\":`, as multiprocessing requires)")
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
            _free(self.x_memory)
            _free(self.y_memory)

    def _stop_workers(self) -> None:
        for requests in self.requests:
            try:
                _write_frame(requests, REQUEST.pack(0, STOP, 0, 0.0))
            except OSError:
                pass  # that worker is already gone
        deadline = time.monotonic() + 5.0
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for connection in self.requests + self.answers:
            connection.close()


def _free(memory: SharedMemory) -> None:
    """Remove the segment's name first (so nothing is left in /dev/shm), then unmap it.

    Unmapping fails with BufferError while a view of it is alive, e.g. one held by the traceback
    of an interrupted step; the mapping then goes when that view does.
    """
    memory.unlink()
    try:
        memory.close()
    except BufferError:
        pass


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Hold back SIGINT while a worker starts, and until it is on our list of workers.

    A new process inherits the blocked signal through exec, so a Ctrl-C sent to the whole process
    group (as a terminal does) cannot interrupt a worker still importing microqwen, before it
    ignores SIGINT, and print its traceback. Here the held-back Ctrl-C is delivered on the way out.
    """
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _worker_main(
    requests: Connection, answers: Connection, paths: list[str], jobs: list[Job], shares: list[tuple[int, int]],
    kernel: str | None, x_name: str, y_name: str, y_base: int,
) -> None:  # fmt: skip
    """A worker's whole life: load its rows of every job, then run jobs until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    memories: list[SharedMemory] = []
    try:
        memories += [SharedMemory(name=x_name), SharedMemory(name=y_name)]
        with Checkpoint([SafetensorsFile(path) for path in paths]) as checkpoint:
            matrices = _load_shares(checkpoint, jobs, shares, kernel)
        _write_frame(answers, _answer_frame(0, 0.0))
        _serve(requests, answers, jobs, shares, matrices, memories[0], memories[1], y_base)
    except (EOFError, BrokenPipeError):
        pass  # the main process is gone: so are we
    except BaseException:
        error = traceback.format_exc(limit=3).strip().splitlines()[-1]
        try:
            _write_frame(answers, _answer_frame(-1, 0.0, error))
        except OSError:
            pass
    finally:
        for memory in memories:
            memory.close()


def _load_shares(checkpoint: Checkpoint, jobs: list[Job], shares: list[tuple[int, int]], kernel: str | None) -> list[Matrix]:
    """Rows [start, stop) of every job, read from the file into the kernel's form."""
    return [
        load_matrix(read_rows(checkpoint, job, start, stop), stop - start, job.cols, kernel)
        for job, (start, stop) in zip(jobs, shares)
    ]


def _serve(
    requests: Connection, answers: Connection, jobs: list[Job], shares: list[tuple[int, int]],
    matrices: list[Matrix], x_memory: SharedMemory, y_memory: SharedMemory, y_base: int,
) -> None:  # fmt: skip
    """Answer requests: run a job (x from shared memory, our rows of y back), or time the kernel.

    Our rows of y go to our own region of the output buffer, from float `y_base` on, token after
    token: a late answer to an interrupted request can only overwrite our own rows, which the
    next request then writes again before we answer it.
    """
    while True:
        deadline = time.perf_counter() + SPIN_SECONDS
        while not requests.poll() and time.perf_counter() < deadline:
            pass  # poll a little while: the next request usually comes within a millisecond
        sequence, command, index, amount = REQUEST.unpack(_read_frame(requests, REQUEST.size))
        if command == STOP:
            return
        if command == BENCH:
            _write_frame(answers, _answer_frame(sequence, kernel_rate(matrices[index], amount)))
            continue
        job, (start, stop) = jobs[index], shares[index]
        xs = [_read(x_memory, t * job.cols, job.cols) for t in range(int(amount))]
        for t, y in enumerate(matrices[index].matmat(xs)):
            _write(y_memory, y_base + t * (stop - start), y)
        _write_frame(answers, _answer_frame(sequence, 0.0))


def _answer_frame(sequence: int, value: float, error: str | None = None) -> bytes:
    """An answer: done (with a value), or failed (with the error message, cut to fit the frame)."""
    message = (error or "").encode("utf-8")[: ANSWER_FRAME - ANSWER.size]
    return ANSWER.pack(sequence, error is not None, value) + message.ljust(ANSWER_FRAME - ANSWER.size, b"\0")


def _write_frame(connection: Connection, frame: bytes) -> None:
    """One write(2) of a whole frame (at most PIPE_BUF bytes, so the pipe delivers it whole)."""
    os.write(connection.fileno(), frame)


def _read_frame(connection: Connection, size: int) -> bytes:
    """One read(2) of one frame; EOFError when the other end is closed."""
    frame = os.read(connection.fileno(), size)
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


def _write(memory: SharedMemory, offset: int, values: Vector) -> None:
    """Store float64 values at float index `offset` of a shared buffer."""
    assert memory.buf is not None
    memory.buf[FLOAT * offset : FLOAT * (offset + len(values))] = array("d", values).tobytes()


def _read(memory: SharedMemory, offset: int, count: int) -> list[float]:
    """Load `count` float64 values from float index `offset` of a shared buffer."""
    assert memory.buf is not None
    values = array("d")
    with memory.buf[FLOAT * offset : FLOAT * (offset + count)] as view:  # released even if interrupted
        values.frombytes(view)
    return values.tolist()
