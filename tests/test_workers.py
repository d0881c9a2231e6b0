"""The worker pool: same numbers for any worker count, and nothing left behind on any exit path."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from microqwen.errors import WorkerError
from microqwen.model import Qwen2ForCausalLM, load
from microqwen.config import Config
from microqwen.linear import linear_jobs
from microqwen.shards import plan
from microqwen.workers import WorkerPool

from .tiny_model import write_tiny_model

PROMPT = [3, 17, 9, 30, 1, 12, 5, 22, 8]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=1)


def logits_of(model: Qwen2ForCausalLM) -> list[list[float]]:
    return [model.forward(token, pos) for pos, token in enumerate(PROMPT)]


def pool_of(model: Qwen2ForCausalLM) -> WorkerPool:
    assert isinstance(model.engine, WorkerPool)
    return model.engine


MEMFD = "/memfd:microqwen-activations"
"""How the pool's shared buffers appear in /proc/<pid>/maps and /proc/<pid>/fd (os.memfd_create's name)."""


def pool_memory(pool: WorkerPool) -> list[int]:
    """The inode numbers of the pool's two shared buffers (while it is open)."""
    return [os.fstat(fd).st_ino for fd in pool.buffers.fds]


def memory_in_use(inodes: list[int]) -> list[int]:
    """Those of `inodes` that any process on the machine still maps or holds open."""
    found: set[int] = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/maps") as maps:
                found.update(int(line.split()[4]) for line in maps if MEMFD in line)
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if MEMFD in os.readlink(f"/proc/{entry}/fd/{fd}"):
                    found.add(os.stat(f"/proc/{entry}/fd/{fd}").st_ino)
        except OSError:  # the process ended while we looked, or is not ours to read
            pass
    return sorted(found & set(inodes))


def assert_nothing_left(pids: list[int], inodes: list[int], within: float = 10.0) -> None:
    """No worker process alive, and no process holding the pool's shared memory (the kernel then frees it)."""
    assert inodes, "no shared memory to look for"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        held = memory_in_use(inodes)
        if not alive and not held:
            return
        time.sleep(0.1)
    raise AssertionError(f"left behind: processes {alive}, shared memory {held}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("processes", [1, 2, 3, 5, 14, 16])
def test_the_plan_gives_every_head_unit_and_row_to_one_process(processes: int) -> None:
    config = Config.from_file("tests/data/qwen2.5-0.5b-instruct/config.json")
    shares = plan(config, processes)
    assert [j for s in shares for j in s.heads] == list(range(14))
    assert [u for s in shares for u in s.units] == list(range(4864))
    assert [r for s in shares for r in s.vocab] == list(range(151936))
    for s in shares:  # each share has the key/value heads its query heads read, and no other
        assert set(s.kv_heads) == {j // config.n_rep for j in s.heads}
    sizes = [len(s.units) for s in shares]
    assert max(sizes) - min(sizes) <= 1
    job = linear_jobs(config)[0]  # q/k/v: every row of the stack is some share's
    covered = {r for s in shares for start, stop in s.rows(job, config) for r in range(start, stop)}
    assert covered == set(range(job.rows))


def read_only(name: str, pos: int, values: tuple[float, ...], shape: tuple[int, ...]) -> None:
    """A hook that changes nothing: with it, forward takes the readable path in this process."""


def test_results_do_not_depend_on_the_worker_count(tiny: pathlib.Path) -> None:
    """The same numbers, up to the order in which o_proj's and down_proj's partial sums are added."""
    with load(str(tiny), workers=0, kernel="naive") as model:
        expected = logits_of(model)
    for workers in (1, 2, 3):
        with load(str(tiny), workers=workers, kernel="naive") as model:
            logits = logits_of(model)
            assert max(abs(a - b) for row, ref in zip(logits, expected) for a, b in zip(row, ref)) < 1e-12
            model.reset()
            assert model.prefill(PROMPT) == logits[-1], f"workers={workers}"  # bit for bit
            model.reset()
            assert [model.forward(t, pos, read_only) for pos, t in enumerate(PROMPT)] == logits


def test_passes_with_and_without_a_hook_share_one_cache(tiny: pathlib.Path) -> None:
    """A pass with a hook runs here, the others on the workers' shards of the KV cache: they must agree."""
    with load(str(tiny), workers=2) as model:
        fast = logits_of(model)
        model.reset()
        mixed = [model.forward(t, pos, read_only if pos % 3 == 0 else None) for pos, t in enumerate(PROMPT)]
        assert mixed == fast
        model.truncate(4)  # what an interrupted step or a conversation that went another way does
        assert [model.forward(t, pos) for pos, t in enumerate(PROMPT) if pos >= 4] == fast[4:]
        model.reset()
        model.prefill(PROMPT[:5], read_only)
        assert [model.forward(t, pos) for pos, t in enumerate(PROMPT) if pos >= 5] == fast[5:]


def test_context_manager_stops_workers_and_frees_memory(tiny: pathlib.Path) -> None:
    with load(str(tiny), workers=2) as model:
        pool = pool_of(model)
        pids, inodes = [w.pid for w in pool.workers], pool_memory(pool)
        assert all(_alive(pid) for pid in pids) and memory_in_use(inodes) == sorted(inodes)
        model.forward(3, 0)
    assert_nothing_left(pids, inodes)


def test_an_exception_in_the_with_block_cleans_up(tiny: pathlib.Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with load(str(tiny), workers=2) as model:
            pool = pool_of(model)
            pids, inodes = [w.pid for w in pool.workers], pool_memory(pool)
            raise RuntimeError("boom")
    assert_nothing_left(pids, inodes)


def test_a_failure_after_the_workers_started_stops_them(tiny: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[WorkerPool, list[int], list[int]]] = []

    def fail(self: Qwen2ForCausalLM, config: object, weights: object, pool: WorkerPool, max_context: int) -> None:
        started.append((pool, [w.pid for w in pool.workers], pool_memory(pool)))
        raise KeyboardInterrupt  # Ctrl-C while the model reads its norms

    monkeypatch.setattr(Qwen2ForCausalLM, "__init__", fail)
    with pytest.raises(KeyboardInterrupt):
        load(str(tiny), workers=2)
    pool, pids, inodes = started[0]
    assert_nothing_left(pids, inodes)
    with pytest.raises(WorkerError, match="the worker pool is closed"):
        pool.run(pool.jobs[1], [[0.0] * pool.jobs[1].cols])


def test_a_killed_worker_is_an_error_not_a_hang(tiny: pathlib.Path) -> None:
    model = load(str(tiny), workers=2)
    pool = pool_of(model)
    pids, inodes = [w.pid for w in pool.workers], pool_memory(pool)
    os.kill(pids[1], signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker 1 \(pid \d+\) was killed by signal 9 while"):
        for pos, token in enumerate(PROMPT):
            model.forward(token, pos)
    assert time.monotonic() - start < 5.0
    assert_nothing_left(pids, inodes)
    model.close()  # closing again is harmless


def test_ctrl_c_in_the_middle_of_a_step_leaves_the_pool_usable(tiny: pathlib.Path) -> None:
    """Ctrl-C (SIGINT) at random moments of steps: answers to interrupted requests arrive late and
    must not mix into the next request's results, nor leave a pipe half-read."""
    with load(str(tiny), workers=2, kernel="naive") as reference:
        expected = logits_of(reference)
    rng = random.Random(5)
    interrupted = 0
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with load(str(tiny), workers=2, kernel="naive") as model:
            for _ in range(40):
                ctrl_c = threading.Timer(rng.uniform(0.0005, 0.02), os.kill, (os.getpid(), signal.SIGINT))
                try:
                    ctrl_c.start()  # (on a busy machine the signal may come before start() returns)
                    while True:
                        if model.pos == 60:
                            model.reset()
                        model.forward(PROMPT[0], model.pos)
                except KeyboardInterrupt:
                    interrupted += 1
                ctrl_c.join()
                model.reset()
                assert logits_of(model) == expected  # the pool still gives the right answers
                model.reset()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert interrupted == 40


def run_script(body: str, *args: str) -> subprocess.Popen[str]:
    root = pathlib.Path(__file__).resolve().parent.parent
    script = textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


STARTER = """
    import os, sys, time
    from microqwen.model import load
    model = load(sys.argv[1], workers=2)
    pool = model.engine
    print(*[w.pid for w in pool.workers], *[os.fstat(fd).st_ino for fd in pool.buffers.fds], flush=True)
    model.forward(3, 0)
    {ending}
"""


def started(process: subprocess.Popen[str]) -> tuple[list[int], list[int]]:
    assert process.stdout is not None
    words = process.stdout.readline().split()
    assert len(words) == 4, process.communicate()
    return [int(w) for w in words[:2]], [int(w) for w in words[2:]]


def test_workers_exit_when_the_main_process_is_killed(tiny: pathlib.Path) -> None:
    process = run_script(STARTER.format(ending="time.sleep(60)"), str(tiny))
    pids, inodes = started(process)
    process.kill()
    process.wait()
    assert_nothing_left(pids, inodes)


def test_interpreter_exit_without_close_cleans_up(tiny: pathlib.Path) -> None:
    process = run_script(STARTER.format(ending="print('done', flush=True)"), str(tiny))
    pids, inodes = started(process)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and out.strip() == "done", err
    assert "leaked" not in err and "Traceback" not in err
    assert_nothing_left(pids, inodes)


UNGUARDED = """
import sys
sys.path.insert(0, {root!r})
import microqwen
model = microqwen.load({model!r}, workers=1)
print(model.forward(3, 0)[:4])
model.close()
"""


def test_workers_start_from_a_script_without_a_main_guard(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Spawned workers would re-run a script's top level; ours run only microqwen.workers."""
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    with load(str(tiny), workers=1) as model:
        expected = str(model.forward(3, 0)[:4])
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED.format(root=root, model=str(tiny)))
    from_file = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    from_c = subprocess.run([sys.executable, "-c", script.read_text()], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)  # fmt: skip
    from_repl = subprocess.run([sys.executable, "-i"], input=script.read_text(), capture_output=True, text=True,
                               timeout=120, cwd=tmp_path)  # fmt: skip
    for run in (from_file, from_c, from_repl):  # (PyPy's REPL writes its >>>> prompts to stdout)
        assert run.returncode == 0 and expected in run.stdout, run.stdout + run.stderr
        assert "Traceback" not in run.stderr, run.stderr


def test_negative_worker_count_is_refused(tiny: pathlib.Path) -> None:
    from microqwen.errors import UsageError

    with pytest.raises(UsageError, match="workers must be 0 or more, got -1"):
        load(str(tiny), workers=-1)


