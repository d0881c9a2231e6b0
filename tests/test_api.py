"""The Python API at the top of the package: `microqwen.load` a Hub id or a directory, then use it.

The Hub id is resolved through the same code as the command line: here from a cache laid out as
huggingface_hub lays it out (blobs, snapshots/<commit>, refs/main), offline, with the network closed.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys

import pytest

import microqwen
from microqwen.hub import repo_folder

from .tiny_model import write_tiny_chat_model

REPO = "Qwen/Qwen2.5-0.5B-Instruct"
COMMIT = hashlib.sha1(b"a commit of the cached snapshot").hexdigest()
ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_package_exports_the_api() -> None:
    from microqwen.errors import MicroQwenError
    from microqwen.generation import Conversation, generate
    from microqwen.model import load
    from microqwen.tokenizer import Tokenizer

    assert (microqwen.load, microqwen.generate, microqwen.Conversation) == (load, generate, Conversation)
    assert microqwen.Tokenizer is Tokenizer and microqwen.MicroQwenError is MicroQwenError


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """An HF_HOME whose hub cache holds REPO as a snapshot of the tiny chat model (blobs + symlinks)."""
    source = write_tiny_chat_model(tmp_path_factory.mktemp("source") / "model")
    home = tmp_path_factory.mktemp("hf")
    storage = home / "hub" / repo_folder(REPO)
    (storage / "blobs").mkdir(parents=True)
    (storage / "snapshots" / COMMIT).mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    for file in source.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        (storage / "blobs" / blob).write_bytes(file.read_bytes())
        os.symlink(f"../../blobs/{blob}", storage / "snapshots" / COMMIT / file.name)
    return home


def offline(hf_home: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return dict(env, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(ROOT))


SESSION = """
import microqwen
m = microqwen.load({repo!r}, workers=1)
ids = m.tokenizer.encode("Hello")
print(ids, [round(x, 9) for x in m.forward(ids[0], 0)[:3]])
m.reset()
print(repr("".join(t.text for t in microqwen.generate(m, "Hi", max_new_tokens=5))))
m.close()
"""


def test_load_a_hub_id_offline_from_python_c_without_a_main_guard(hf_home: pathlib.Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for key, value in offline(hf_home).items():
        monkeypatch.setenv(key, value)
    with microqwen.load(REPO, workers=1) as model:  # here, as the script will: what it must print
        ids = model.tokenizer.encode("Hello") if model.tokenizer else []
        first = [round(x, 9) for x in model.forward(ids[0], 0)[:3]]
        model.reset()
        text = "".join(t.text for t in microqwen.generate(model, "Hi", max_new_tokens=5))
        assert model.path.endswith(os.path.join("snapshots", COMMIT))
    result = subprocess.run([sys.executable, "-c", SESSION.format(repo=REPO)], capture_output=True, text=True,
                            env=offline(hf_home), cwd=hf_home, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{ids} {first}", repr(text)], result.stderr


def test_an_id_that_is_not_cached_offline_is_a_clear_error(hf_home: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in offline(hf_home).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(microqwen.MicroQwenError, match="offline .*Qwen/Qwen2.5-0.5B revision main is not in the cache"):
        microqwen.load("Qwen/Qwen2.5-0.5B")
