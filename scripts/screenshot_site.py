"""Build the docs site and take screenshots of its key pages in headless Chromium, offline.

    python scripts/screenshot_site.py                      # -> /tmp/microqwen-site/{site,shots/*.png}
    python scripts/screenshot_site.py --out DIR --size 1200,2600

The site is built with `mkdocs build --strict` into DIR/site and opened from the files (file://), with
Chromium's network services off: what the screenshots show is what a reader gets offline (formulas
rendered by the vendored KaTeX, SVG figures, search). Look at them before calling a docs change done.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from screenshot_report import screenshot  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PAGES = [
    "index", "quickstart", "concepts/bf16", "concepts/tokenizer", "concepts/forward", "concepts/rope",
    "concepts/attention", "concepts/sampling", "tutorial-trace", "performance", "api/model",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/microqwen-site", help="where the site and shots go")
    parser.add_argument("--size", default="1200,2600", help="window width,height (default 1200,2600)")
    args = parser.parse_args()
    site, shots = os.path.join(args.out, "site"), os.path.join(args.out, "shots")
    os.makedirs(shots, exist_ok=True)
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", site], cwd=ROOT, check=True)
    for page in PAGES:
        out = os.path.join(shots, page.replace("/", "-") + ".png")
        screenshot(os.path.join(site, page + ".html"), out, args.size)
        print("wrote", out)


if __name__ == "__main__":
    main()
