"""Worker processes: the matrix products on every core, activations through shared memory.

Pure Python runs one core per process, so `WorkerPool` starts N worker processes, and the
main process and the workers share out the rows of every weight matrix (every `linear.Job`):

    job layers.3.mlp.gate_proj+up_proj, W [9728, 896], 1 worker (2 cores):
        the main process computes rows 0..4863        worker 0 computes rows 4864..9727

A worker is a fresh Python interpreter (the same executable) running `worker_main` of this
module, started with the model's path, its share number and two pipes; it opens the model
itself, works out the same jobs from its config, and reads just its rows of each from the file
(so the weights are never pickled or copied between processes). Nothing of the caller's script
runs in it, so `microqwen.load(..., workers=N)` works the same from a script with or without an
`if __name__ == "__main__":` guard, from `python -c`, the REPL or a notebook.

For one product y = W x, the main process

    1. writes x (float64) into the shared input buffer,
    2. sends each worker the job number (a 24-byte frame through its pipe),
    3. computes its own rows of y (instead of sleeping while the workers compute),
    4. waits until every worker has written its rows of y into the shared output buffer
       and answered, then reads them.

The two buffers are anonymous shared memory (`os.memfd_create`, else an unlinked temporary file)
handed to the workers as file descriptors: there is no name to clean up, and the kernel frees
the memory when the last process that maps it is gone, however it ends.

Between products the main process does the cheap steps (norms, RoPE, attention, residuals).
A process that sleeps while it waits pays to wake up (up to half a millisecond on a virtual
machine, and a step has 97 products), so both sides first poll for a few milliseconds
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

from .errors import WorkerError
from .kernels import Kernel, Matrix, Vector
from .linear import TOKENS_PER_PASS, Job, linear_jobs, load_share
from .weights import Weights, open_model

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


class Buffers:
    """The two shared buffers: x (the input activations) and y (each worker's region of outputs).

    x holds TOKENS_PER_PASS vectors of the widest job's input; y has one region per worker, big
    enough for TOKENS_PER_PASS outputs of its largest share.
    """

    def __init__(self, jobs: Sequence[Job], processes: int, fds: tuple[int, int] | None = None) -> None:
        self.region = TOKENS_PER_PASS * max(-(-job.rows // processes) for job in jobs)  # floats per worker
        sizes = (TOKENS_PER_PASS * max(job.cols for job in jobs) * FLOAT, (processes - 1) * self.region * FLOAT)
        self.fds = fds or (_shared_file(sizes[0]), _shared_file(sizes[1]))
        self.x, self.y = (mmap.mmap(fd, size) for fd, size in zip(self.fds, sizes))

    def close(self) -> None:
        """Unmap both buffers and close their descriptors (the memory goes with the last user)."""
        for memory in (self.x, self.y):
            memory.close()
        for fd in self.fds:
            os.close(fd)


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


class WorkerPool:
    """The main process and N workers run `linear.Job`s on their shares of rows: an engine, like `LocalEngine`.

    Share 0 of every job's rows is the main process's, share w + 1 is worker w's.
    """

    def __init__(self, path: str, weights: Weights, jobs: Sequence[Job], n_workers: int, kernel: Kernel = None,
                 mutation: str | None = None) -> None:  # fmt: skip
        self.jobs = list(jobs)
        self.index = {job.name: i for i, job in enumerate(self.jobs)}
        self.n_workers = n_workers
        self.workers: list[Worker] = []
        self.local: list[Matrix] = []  # the main process's share of every job
        self.sequence = 0  # numbers each request, so a late answer to an interrupted one is ignored
        self.closed = False
        self.buffers = Buffers(self.jobs, n_workers + 1)
        atexit.register(self.close)
        try:
            self.workers = [self._start(path, w, kernel, mutation) for w in range(n_workers)]
            self.local = [load_share(weights, job, *self.share(job, 0), kernel) for job in self.jobs]
            self._wait_all(LOADING)
        except BaseException:
            self.close()
            raise

    def share(self, job: Job, who: int) -> tuple[int, int]:
        """The rows [start, stop) of `job` that process `who` computes (0: the main process)."""
        return row_ranges(job.rows, self.n_workers + 1)[who]

    def _start(self, path: str, w: int, kernel: Kernel, mutation: str | None) -> Worker:
        """Start worker w; it loads its shares while the main process loads its own.

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

    def run(self, job: Job, xs: Sequence[Vector]) -> list[list[float]]:
        """[W x for x in xs] for the job's W (T <= TOKENS_PER_PASS), its rows computed by all processes together."""
        self._check_open()
        index = self.index[job.name]
        x, y = self.buffers.x, self.buffers.y
        for t, vector in enumerate(xs):
            _write(x, t * job.cols, vector)
        self._send_all(RUN, index, len(xs), job.name)
        ours = self.local[index].matmat(xs)  # [T, our rows], while the workers compute theirs
        self._wait_all(job.name)
        for w in range(self.n_workers):  # the workers' rows follow ours, worker by worker
            start, stop = self.share(job, w + 1)
            for t, row in enumerate(ours):
                row += _read(y, w * self.buffers.region + t * (stop - start), stop - start)
        return ours

    def kernel_rates(self, job: Job, seconds: float) -> list[float]:
        """Every process times its kernel on its share of `job`, all at once: multiply-adds/s each."""
        self._check_open()
        index = self.index[job.name]
        doing = f"timing the kernel on {job.name}"
        self._send_all(BENCH, index, seconds, doing)
        ours = kernel_rate(self.local[index], seconds)
        return [ours] + self._wait_all(doing)

    def _check_open(self) -> None:
        if self.closed:
            raise WorkerError("the worker pool is closed")

    def _send_all(self, command: int, index: int, amount: float, doing: str) -> None:
        """Send one request to every worker (answers come to `_wait_all`)."""
        self.sequence += 1
        frame = REQUEST.pack(self.sequence, command, index, amount)
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
                os.write(worker.requests, REQUEST.pack(0, STOP, 0, 0.0))
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
    """A worker's whole life: load its rows of every job, then run jobs until told to stop.

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
        with weights:
            ranges = [row_ranges(job.rows, shares)[share] for job in jobs]
            matrices = [load_share(weights, job, start, stop, kernel) for job, (start, stop) in zip(jobs, ranges)]
        buffers = Buffers(jobs, shares, (x_fd, y_fd))
        os.write(answers, _answer_frame(0, 0.0))
        _serve(requests, answers, jobs, ranges, matrices, buffers, (share - 1) * buffers.region)
    except (EOFError, BrokenPipeError):
        pass  # the main process is gone: so are we
    except BaseException:
        error = traceback.format_exc(limit=3).strip().splitlines()[-1]
        try:
            os.write(answers, _answer_frame(-1, 0.0, error))
        except OSError:
            pass


def _serve(requests: int, answers: int, jobs: list[Job], ranges: list[tuple[int, int]], matrices: list[Matrix],
           buffers: Buffers, y_base: int) -> None:  # fmt: skip
    """Answer requests: run a job (x from shared memory, our rows of y back), or time the kernel.

    Our rows of y go to our own region of the output buffer, from float `y_base` on, token after
    token: a late answer to an interrupted request can only overwrite our own rows, which the
    next request then writes again before we answer it.
    """
    while True:
        deadline = time.perf_counter() + SPIN_SECONDS
        while not select.select([requests], [], [], 0.0)[0] and time.perf_counter() < deadline:
            pass  # poll a little while: the next request usually comes within a millisecond
        sequence, command, index, amount = REQUEST.unpack(_read_frame(requests, REQUEST.size))
        if command == STOP:
            return
        if command == BENCH:
            os.write(answers, _answer_frame(sequence, kernel_rate(matrices[index], amount)))
            continue
        job, (start, stop) = jobs[index], ranges[index]
        xs = [_read(buffers.x, t * job.cols, job.cols) for t in range(int(amount))]
        for t, y in enumerate(matrices[index].matmat(xs)):
            _write(buffers.y, y_base + t * (stop - start), y)
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

