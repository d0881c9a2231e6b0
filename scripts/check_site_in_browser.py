"""Open the built docs site from disk in headless Chromium: no page fetches anything from the network, and search works.

    mkdocs build --strict --site-dir site && python scripts/check_site_in_browser.py site
    python scripts/check_site_in_browser.py site --word softmax --shots /tmp/shots

`scripts/check_site_offline.py` (run by CI) reads the pages; this runs them, so it also sees what their
scripts load. Each page is opened as a file:// address with a fresh Chromium profile and a network log
(`--log-net-log`); every request whose network isolation key is the page's (`file://`) is one the page
made, and none may go out (Chromium's own requests to its vendor, keyed otherwise, are not counted).
Then `index.html?q=WORD` opens the search box with WORD, as a reader typing it would, and the results
it lists are counted from the page's DOM: from file://, search runs only with the iframe-worker shim
(scripts/vendor_iframe_worker.sh). `--shots DIR` writes DIR/home.png and DIR/search.png to look at.
Exit status 1 if a page made a request or the search found nothing. Needs Chromium (see
scripts/screenshot_report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from screenshot_report import FLAGS, chromium  # noqa: E402

BUDGET = ["--virtual-time-budget=8000"]  # let the page's scripts run (search index, KaTeX) before the dump
RESULTS = re.compile(r'md-search-result__meta">\s*(\d+) matching document')  # or "No matching documents"


def run(url: str, *extra: str) -> str:
    """Load `url` in a fresh profile with `extra` flags; the DOM after the scripts ran."""
    with tempfile.TemporaryDirectory(prefix="microqwen-chromium-") as profile:
        command = [chromium(), *FLAGS, *BUDGET, f"--user-data-dir={profile}", *extra, url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"chromium failed on {url} ({result.returncode}):\n{result.stderr[-2000:]}")
    return result.stdout


def page_requests(path: str) -> list[str]:
    """The network requests a page opened from disk makes (Chromium's own are keyed otherwise)."""
    with tempfile.TemporaryDirectory(prefix="microqwen-netlog-") as work:
        log = os.path.join(work, "netlog.json")
        run("file://" + os.path.abspath(path), "--dump-dom", f"--log-net-log={log}")
        with open(log, encoding="utf-8") as f:
            netlog = json.load(f)
    start_job = netlog["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in netlog["events"]
        if event["type"] == start_job and event["params"].get("network_isolation_key", "").startswith("file://")
    ]


def search_results(site: str, word: str) -> int:
    """How many documents the search box lists for `word` on the home page opened from disk."""
    dom = run("file://" + os.path.abspath(os.path.join(site, "index.html")) + f"?q={word}", "--dump-dom")
    found = RESULTS.search(dom)
    return int(found.group(1)) if found else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("site", help="the built site folder (mkdocs build --site-dir)")
    parser.add_argument("--word", default="softmax", help="the word to search for (default softmax)")
    parser.add_argument("--shots", help="write home.png and search.png into this folder")
    args = parser.parse_args()
    pages = sorted(os.path.join(folder, name) for folder, _, files in os.walk(args.site)
                   for name in files if name.endswith(".html"))  # fmt: skip
    failed = False
    for page in pages:
        for url in page_requests(page):
            print(f"{os.path.relpath(page, args.site)}: requested {url}")
            failed = True
    found = search_results(args.site, args.word)
    print(f"{len(pages)} pages opened from disk; searching {args.word!r} lists {found} documents", file=sys.stderr)
    if args.shots:
        os.makedirs(args.shots, exist_ok=True)
        home = "file://" + os.path.abspath(os.path.join(args.site, "index.html"))
        for name, url in (("home", home), ("search", f"{home}?q={args.word}")):
            out = os.path.join(args.shots, f"{name}.png")
            run(url, f"--screenshot={os.path.abspath(out)}", "--window-size=1200,1400")
            print("wrote", out, file=sys.stderr)
    return 1 if failed or found == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
