"""Take the screenshots of docs/explorer.md: the explorer on a real model, in headless Chromium.

    python scripts/screenshot_explorer.py --model DIR --python pypy3     # a few minutes on 2 cores

DIR is a Qwen2.5-0.5B-architecture model directory with its tokenizer (the docs' pictures were made
with Qwen2.5-Coder-0.5B-Instruct). The script starts `microqwen serve` with that interpreter, opens
the page with a prompt, does what the page describes (a layer, a head, a value clicked, the sampler
moved, three heads ablated, a patching run) and writes docs/images/explorer-*.png, one per view.
Chromium and chromedriver: `apt-get install -y chromium chromium-driver`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.server_process import ServerProcess  # noqa: E402
from tests.webdriver import Browser  # noqa: E402

IMAGES = os.path.join(ROOT, "docs", "images")
PROMPT = "The capital of France is"
CLEAN, CORRUPT = "The capital of France is", "The capital of Italy is"
IDLE = "document.body.dataset.ready === 'true' && !document.body.dataset.busy"


def shoot(browser: Browser, css: str, name: str) -> None:
    path = os.path.join(IMAGES, f"explorer-{name}.png")
    browser.element_screenshot(browser.find(css), path)
    print(f"{path}: {os.path.getsize(path)} bytes", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a model directory with tokenizer files")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs the server")
    parser.add_argument("--workers", default="1", help="the server's worker processes (default 1)")
    parser.add_argument("--layer", type=int, default=1, help="the layer whose attention is shown")
    parser.add_argument("--head", type=int, default=9, help="the head enlarged")
    args = parser.parse_args()
    start = time.monotonic()
    with ServerProcess(args.model, "--workers", args.workers, python=args.python) as server, \
            Browser(size=(900, 1400)) as browser:  # fmt: skip
        query = urllib.parse.urlencode({"prompt": PROMPT, "clean": CLEAN, "corrupt": CORRUPT})
        browser.get(f"{server.url}/?{query}")
        browser.wait_for(IDLE, timeout=900)
        browser.execute("document.getElementById('where').hidden = true;")
        shoot(browser, "#view-tokens", "tokens")
        browser.execute("for (const [id, v] of [['temperature', 0.7], ['top_k', 20], ['top_p', 0.8]]) {"
                        " const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event('input')); }")
        browser.wait_for(IDLE + " && document.getElementById('survivors').textContent.includes('survive')", 300)
        time.sleep(1.0)
        shoot(browser, "#view-next", "next-token")
        browser.execute(f"const s = document.getElementById('layer'); s.value = {args.layer};"
                        " s.dispatchEvent(new Event('change'));")
        browser.click(browser.find(f"#heads figure[data-head='{args.head}']"))
        shoot(browser, "#view-attention", "attention")
        cells = browser.find_all("#head rect.cell")
        browser.click(cells[-2])
        browser.wait_for("document.querySelector('#where-code .hit') !== null")
        shoot(browser, "#where", "where")
        browser.click(browser.find("#where-close"))
        shoot(browser, "#view-lens", "lens")
        for layer, head in ((0, 11), (23, 3), (args.layer, args.head)):
            browser.click(browser.find(f"#ablation-grid button[data-layer='{layer}'][data-head='{head}']"))
            browser.wait_for(IDLE, timeout=900)
        browser.click(browser.find("#patch"))
        browser.wait_for(IDLE, timeout=1800)
        shoot(browser, "#lab-ablation", "ablation")
        shoot(browser, "#lab-patching", "patching")
    print(f"done in {time.monotonic() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
