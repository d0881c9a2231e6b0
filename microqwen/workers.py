"""Worker processes: the matrix products on every core, activations through shared memory.

Pure Python runs one core per process, so `WorkerPool` starts N processes and gives
each one a slice of the rows of every weight matrix (every `linear.Job`):

    job layers.3.mlp.gate_up_proj, W [9728, 896], 2 workers:
        worker 0 owns rows    0..4863     worker 1 owns rows 4864..9727

Each worker reads its rows straight from the safetensors file (so the weights are
never pickled or copied between processes) into the form its kernel wants. For one
product y = W x, the main process:

    1. writes x (float64) into the shared input buffer,
    2. sends each worker the job number (a few bytes through its pipe),
    3. waits until every worker has written its rows of y into the shared output
       buffer and answered, then reads y.

The main process does the cheap steps (norms, RoPE, attention, residuals) in between.

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
import signal
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

FLOAT = 8  # bytes per float64 in the shared buffers
LOADING = "loading the weights"


def row_ranges(rows: int, n_workers: int) -> list[tuple[int, int]]:
    """Split rows 0..rows-1 into n_workers contiguous slices of nearly equal size."""
    return [(rows * w // n_workers, rows * (w + 1) // n_workers) for w in range(n_workers)]


class WorkerPool:
    """N processes that run `linear.Job`s on their slices of rows; call it like `LocalLinear`."""

    def __init__(self, checkpoint: Checkpoint, jobs: Sequence[Job], n_workers: int, kernel: str | None = None) -> None:
        self.jobs = {job.name: (index, job) for index, job in enumerate(jobs)}
        self.n_workers = n_workers
        self.processes: list[Any] = []
        self.pipes: list[Connection] = []
        self.sequence = 0  # numbers each request, so a late answer to an interrupted one is ignored
        self.closed = False
        max_cols = max(job.cols for job in jobs)
        max_rows = max(job.rows for job in jobs)
        self.x_memory = SharedMemory(create=True, size=MAX_TOKENS * max_cols * FLOAT)
        self.y_memory = SharedMemory(create=True, size=MAX_TOKENS * max_rows * FLOAT)
        atexit.register(self.close)
        try:
            self._start([f.path for f in checkpoint.files], list(jobs), kernel)
        except BaseException:
            self.close()
            raise

    def _start(self, paths: list[str], jobs: list[Job], kernel: str | None) -> None:
        context = multiprocessing.get_context("spawn")
        for w in range(self.n_workers):
            ours, theirs = context.Pipe()
            slices = [row_ranges(job.rows, self.n_workers)[w] for job in jobs]
            process = context.Process(
                target=_worker_main,
                args=(theirs, paths, jobs, slices, kernel, self.x_memory.name, self.y_memory.name),
                name=f"microqwen-worker-{w}",
                daemon=True,
            )
            with _ctrl_c_held():
                process.start()
                theirs.close()  # only the worker holds its end now: if we die, it sees the pipe close
                self.processes.append(process)
                self.pipes.append(ours)
        self._wait_all(LOADING)

    def __call__(self, job: str, xs: Sequence[Vector]) -> list[list[float]]:
        """[W x for x in xs] for the job's W, its rows computed by all workers together."""
        index, spec = self.jobs[job]
        ys: list[list[float]] = []
        for start in range(0, len(xs), MAX_TOKENS):
            ys += self._run(index, spec, xs[start : start + MAX_TOKENS])
        return ys

    def _run(self, index: int, job: Job, xs: Sequence[Vector]) -> list[list[float]]:
        for t, x in enumerate(xs):
            _write(self.x_memory, t * job.cols, x)
        self._request_all(("run", index, len(xs)), job.name)
        return [_read(self.y_memory, t * job.rows, job.rows) for t in range(len(xs))]

    def kernel_rates(self, job: str, seconds: float) -> list[float]:
        """Each worker times its kernel alone on its slice of `job` (all at once): multiply-adds/s."""
        index, spec = self.jobs[job]
        return self._request_all(("bench", index, seconds), f"timing the kernel on {spec.name}")

    def _request_all(self, request: tuple[str, int, float], doing: str) -> list[float]:
        """Send one request to every worker; return their answers' values in worker order."""
        if self.closed:
            raise WorkerError("the worker pool is closed")
        self.sequence += 1
        for w, pipe in enumerate(self.pipes):
            try:
                pipe.send((self.sequence, *request))
            except OSError:  # its end of the pipe is closed: the worker is gone
                self._fail(w, doing)
        return self._wait_all(doing)

    def _wait_all(self, doing: str) -> list[float]:
        """Wait until every worker has answered the current request; a death is a WorkerError."""
        answers = [0.0] * self.n_workers
        waiting = set(range(self.n_workers))
        while waiting:
            events: dict[Any, tuple[str, int]] = {}
            for w in waiting:
                events[self.pipes[w]] = ("answer", w)
                events[self.processes[w].sentinel] = ("exit", w)
            for ready in wait(list(events), timeout=1.0):
                kind, w = events[ready]
                if w not in waiting:
                    continue
                if kind == "exit" and not self.pipes[w].poll():
                    self._fail(w, doing)
                sequence, value = self._answer(w, doing)
                if sequence == self.sequence:  # else: a late answer to an interrupted request
                    answers[w] = value
                    waiting.discard(w)
        return answers

    def _answer(self, w: int, doing: str) -> tuple[int, float]:
        """Read one answer from worker w: (the request's sequence number, its value)."""
        try:
            sequence, status, detail = self.pipes[w].recv()
        except (EOFError, OSError):
            self._fail(w, doing)
        if status != "ok":
            self.close()
            raise WorkerError(f"worker {w} failed while {doing}: {detail}")
        return sequence, detail

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
        for pipe in self.pipes:
            try:
                pipe.send(None)
            except OSError:
                pass  # that worker is already gone
        deadline = time.monotonic() + 5.0
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self.pipes:
            pipe.close()


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
    pipe: Connection, paths: list[str], jobs: list[Job], slices: list[tuple[int, int]],
    kernel: str | None, x_name: str, y_name: str,
) -> None:  # fmt: skip
    """A worker's whole life: load its rows of every job, then run jobs until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    x_memory, y_memory = SharedMemory(name=x_name), SharedMemory(name=y_name)
    try:
        matrices = _load_slices(paths, jobs, slices, kernel)
        pipe.send((0, "ok", 0.0))
        _serve(pipe, jobs, slices, matrices, x_memory, y_memory)
    except (EOFError, BrokenPipeError):
        pass  # the main process is gone: so are we
    except BaseException:
        try:
            pipe.send((-1, "error", traceback.format_exc(limit=3).strip().splitlines()[-1]))
        except OSError:
            pass
    finally:
        x_memory.close()
        y_memory.close()


def _load_slices(paths: list[str], jobs: list[Job], slices: list[tuple[int, int]], kernel: str | None) -> list[Matrix]:
    with Checkpoint([SafetensorsFile(path) for path in paths]) as checkpoint:
        return [
            load_matrix(read_rows(checkpoint, job, start, stop), stop - start, job.cols, kernel)
            for job, (start, stop) in zip(jobs, slices)
        ]


def _serve(
    pipe: Connection, jobs: list[Job], slices: list[tuple[int, int]], matrices: list[Matrix],
    x_memory: SharedMemory, y_memory: SharedMemory,
) -> None:  # fmt: skip
    """Answer requests: run a job (x from shared memory, our rows of y back), or time the kernel."""
    while True:
        message = pipe.recv()
        if message is None:
            return
        sequence, command, index, amount = message
        job, (start, stop) = jobs[index], slices[index]
        if command == "bench":
            pipe.send((sequence, "ok", kernel_rate(matrices[index], amount)))
            continue
        xs = [_read(x_memory, t * job.cols, job.cols) for t in range(amount)]
        for t, y in enumerate(matrices[index].matmat(xs)):
            _write(y_memory, t * job.rows + start, y)
        pipe.send((sequence, "ok", 0.0))


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
