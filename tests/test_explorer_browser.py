"""The explorer page in a real headless Chromium (Debian's chromium and chromium-driver), over WebDriver.

It opens `/?prompt=...`, checks the tokens and the top-k against the server's own JSON, steps one
token, picks a candidate, clicks a head and a value, and ablates a head: what a learner does first.
"""

from __future__ import annotations

import urllib.parse
from typing import Iterator

import pytest

from .server_process import ServerProcess
from .tiny_model import write_tiny_chat_model
from .webdriver import Browser, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="needs chromium and chromedriver "
                                "(apt-get install -y chromium chromium-driver)")  # fmt: skip

PROMPT = "Hello, world"
IDLE = "document.body.dataset.ready === 'true' && !document.body.dataset.busy"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model = write_tiny_chat_model(tmp_path_factory.mktemp("browser") / "chat")
    with ServerProcess(str(model), "--workers", "0") as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as opened:
        yield opened


def open_page(browser: Browser, server: ServerProcess, prompt: str) -> None:
    browser.get(f"{server.url}/?prompt={urllib.parse.quote(prompt)}")
    browser.wait_for(IDLE)
    assert browser.text(browser.find("#status")) == ""


def token_ids(browser: Browser) -> list[int]:
    return [int(browser.attribute(e, "data-token-id") or -1) for e in browser.find_all("[data-token-id]")]


def test_the_page_shows_the_prompts_tokens_and_top_k(browser: Browser, server: ServerProcess) -> None:
    open_page(browser, server, PROMPT)
    expected = server.post("/explorer/run", {"prompt": PROMPT})
    assert token_ids(browser) == [t["id"] for t in expected["tokens"]] == list(PROMPT.encode())
    candidates = [int(browser.attribute(e, "data-candidate-id") or -1) for e in browser.find_all("[data-candidate-id]")]
    assert candidates == [c["id"] for c in expected["positions"][-1]["top"]]
    shown = browser.execute("return [...document.querySelectorAll('#candidates td.value:nth-child(3)')]"
                            ".map(td => td.textContent)")  # fmt: skip
    assert shown == [f"{c['p']:.4f}" for c in expected["positions"][-1]["top"]]
    heads = browser.find_all("#heads figure[data-head]")
    assert len(heads) == 4 and len(browser.find_all("#lens tr")) == 1 + 3  # embed_tokens and 2 layers
    assert browser.execute("return document.querySelectorAll('#rms polyline').length") == len(PROMPT)
    loaded = browser.execute("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(server.url + "/") for url in loaded), loaded  # nothing from elsewhere


def test_step_and_pick_add_tokens(browser: Browser, server: ServerProcess) -> None:
    open_page(browser, server, PROMPT)
    top = int(browser.attribute(browser.find("[data-candidate-id]"), "data-candidate-id") or -1)
    browser.click(browser.find("#step"))
    browser.wait_for(IDLE)
    assert token_ids(browser) == list(PROMPT.encode()) + [top]
    second = browser.find_all("[data-candidate-id]")[1]
    chosen = int(browser.attribute(second, "data-candidate-id") or -1)
    browser.click(second)
    browser.wait_for(IDLE)
    ids = token_ids(browser)
    assert ids == list(PROMPT.encode()) + [top, chosen]
    expected = server.post("/explorer/run", {"ids": ids})
    candidates = [int(browser.attribute(e, "data-candidate-id") or -1) for e in browser.find_all("[data-candidate-id]")]
    assert candidates == [c["id"] for c in expected["positions"][-1]["top"]]


def test_clicking_a_head_enlarges_it_and_a_cell_says_where_it_comes_from(browser: Browser, server: ServerProcess) -> None:
    open_page(browser, server, PROMPT)
    browser.click(browser.find("#heads figure[data-head='2']"))
    assert browser.attribute(browser.find("#heads figure.sel"), "data-head") == "2"
    assert "head 2 enlarged" in browser.text(browser.find("#head-hint"))
    cells = browser.find_all("#head rect.cell")
    assert len(cells) == len(PROMPT) * (len(PROMPT) + 1) // 2  # one per (position, earlier position)
    browser.click(cells[-1])
    browser.wait_for("document.querySelector('#where-code .hit') !== null")
    facts = browser.text(browser.find("#where-facts"))
    assert "layers.0.self_attn.attn_weights" in facts and "[4, 12]" in facts and "model.py line" in facts
    assert "softmax(" in browser.text(browser.find("#where-code .hit"))


def test_clicking_a_head_in_the_lab_ablates_it(browser: Browser, server: ServerProcess) -> None:
    open_page(browser, server, PROMPT)
    browser.click(browser.find("#ablation-grid button[data-layer='1'][data-head='3']"))
    browser.wait_for(IDLE)
    expected = server.post("/explorer/ablate", {"prompt": PROMPT, "layer": 1, "head": 3})
    assert f"{expected['kl']:.4g}" in browser.text(browser.find("#ablation p"))
    rows = browser.find_all("#ablation tr")
    assert len(rows) == 1 + len(expected["tokens"])
    assert "done" in (browser.attribute(browser.find("#ablation-grid button[data-layer='1'][data-head='3']"), "class") or "")


def test_patching_draws_a_layers_by_positions_heatmap(browser: Browser, server: ServerProcess) -> None:
    browser.get(f"{server.url}/?clean=abcd&corrupt=abce")
    browser.wait_for("document.body.dataset.ready === 'true'")
    browser.click(browser.find("#patch"))
    browser.wait_for(IDLE)
    assert len(browser.find_all("#patching rect.cell")) == (1 + 2) * 4  # embed_tokens and 2 layers x 4 positions


def test_a_bad_request_shows_its_message(browser: Browser, server: ServerProcess) -> None:
    browser.get(f"{server.url}/?clean=abc&corrupt=abcd")
    browser.wait_for("document.body.dataset.ready === 'true'")
    browser.click(browser.find("#patch"))
    browser.wait_for("document.getElementById('status').className === 'error'")
    assert "the clean prompt has 3 tokens, the corrupted one 4" in browser.text(browser.find("#status"))
