"""Take a screenshot of a trace report (`microqwen trace --html`) in headless Chromium, offline.

    python scripts/screenshot_report.py report.html out.png
    python scripts/screenshot_report.py report.html out.png --view "pos=4&layer=23&head=1" --size 1400,2000

Chromium (Debian: `apt-get install -y chromium chromium-driver`; or the CHROMIUM environment variable)
runs with a fresh profile in a temporary directory, which is removed afterwards, and with every
background network service off, so the picture shows what the page draws from the file alone.
`--view` is the part after `#` in the page's address: the position, layer and head to show.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def chromium() -> str:
    """The Chromium executable: $CHROMIUM, else `chromium` on the PATH."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise SystemExit("no chromium: apt-get install -y chromium chromium-driver (or set CHROMIUM)")
    return found


def screenshot(report: str, out: str, size: str = "1400,2000", view: str = "") -> None:
    """Render `report` (a local HTML file) and write a PNG of the window to `out`."""
    url = "file://" + os.path.abspath(report) + (f"#{view}" if view else "")
    with tempfile.TemporaryDirectory(prefix="microqwen-chromium-") as profile:
        command = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={os.path.abspath(out)}",
                   f"--window-size={size}", url]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not os.path.isfile(out):
        raise SystemExit(f"chromium failed ({result.returncode}):\n{result.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", help="the HTML report")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--size", default="1400,2000", help="window width,height (default 1400,2000)")
    parser.add_argument("--view", default="", help="initial selection, e.g. pos=4&layer=23&head=1")
    args = parser.parse_args()
    if os.path.exists(args.out):
        os.remove(args.out)  # so a failed run cannot leave an old picture in place
    screenshot(args.report, args.out, args.size, args.view)
    print(f"{args.out}: {os.path.getsize(args.out)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
