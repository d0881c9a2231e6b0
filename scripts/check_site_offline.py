"""Check that the built docs site loads nothing from the network: every script, style, font and image is local.

    mkdocs build --strict --site-dir site && python scripts/check_site_offline.py site

Reads every .html, .css and .svg file under the site folder and prints one line per remote resource
(`file:line: what`), then exits with status 1 if there was any. A resource is remote when its address
is absolute with a network scheme (`https://cdn...`, `http:`, `ftp:`, `ws:`) or protocol-relative
(`//cdn...`). Checked:

- HTML: `src` of script, img, iframe, audio, video, source, track, embed, input; `srcset`; `poster`;
  `data` of object; `href` of every `<link>` but the ones a browser does not fetch (canonical,
  alternate, ...: `NAVIGATION_RELS`); `href`/`xlink:href` of SVG `<image>` and `<use>`; CSS in `style`
  attributes and `<style>` elements;
- CSS: `url(...)` and `@import`;
- two things Material for MkDocs fetches at run time from the page's own script: mermaid.js from
  unpkg.com for a `mermaid` diagram, and the repository's stars from the GitHub or GitLab API for a
  `repo_url` (the header's `data-md-component="source"` link).

Links in the text (`<a href="https://huggingface.co/...">`) are fine: the reader follows them on
purpose. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from html.parser import HTMLParser
from typing import Iterator, List, Optional, Tuple

REMOTE = re.compile(r"^\s*(?:(?:https?|ftp|wss?):|//)", re.IGNORECASE)
"""An address that the browser would fetch from the network."""

CSS_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)
CSS_IMPORT = re.compile(r"@import\s+(['\"])(.*?)\1", re.IGNORECASE)

SOURCE_ATTRIBUTES = {"src", "data", "poster"}
"""Attributes whose value is one address that is fetched, on any element that has them."""

NAVIGATION_RELS = {"alternate", "author", "bookmark", "canonical", "help", "license", "me", "next", "prev", "search"}
"""`<link rel=...>` values that only name a page, which the browser does not load."""

SVG_LINKS = {"image", "use", "feimage"}
"""SVG elements whose href (or xlink:href) is loaded."""

Problem = Tuple[int, str]  # (line, what)


def is_remote(address: str) -> bool:
    """True for an absolute network address (`https://...`, `//host/...`); False for relative and data: ones."""
    return bool(REMOTE.match(address))


def css_problems(css: str, first_line: int = 1) -> List[Problem]:
    """The remote `url(...)` and `@import "..."` addresses of a style sheet, with their lines."""
    problems = []
    for pattern, kind in ((CSS_URL, "CSS url()"), (CSS_IMPORT, "CSS @import")):
        for match in pattern.finditer(css):
            if is_remote(match.group(2)):
                line = first_line + css.count("\n", 0, match.start())
                problems.append((line, f"{kind} {match.group(2).strip()}"))
    return sorted(problems)


class _PageScanner(HTMLParser):
    """Collects the remote resources of one HTML page as it is parsed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: List[Problem] = []
        self._style_start: Optional[int] = None

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        line = self.getpos()[0]
        values = {name: value or "" for name, value in attrs}
        for name, value in values.items():
            if name in SOURCE_ATTRIBUTES and is_remote(value):
                self.problems.append((line, f"<{tag} {name}={value}>"))
            elif name in ("srcset", "imagesrcset"):
                for candidate in value.split(","):
                    address = candidate.strip().split(" ")[0]
                    if is_remote(address):
                        self.problems.append((line, f"<{tag} {name}={address}>"))
            elif name == "style":
                self.problems += [(line, f"<{tag} style>: {what}") for _, what in css_problems(value)]
        href = values.get("href") or values.get("xlink:href") or ""
        if tag == "link" and is_remote(href):
            rels = set(values.get("rel", "").lower().split())
            if not rels or not rels <= NAVIGATION_RELS:
                self.problems.append((line, f"<link rel={values.get('rel', '')} href={href}>"))
        if tag in SVG_LINKS and is_remote(href):
            self.problems.append((line, f"<{tag} href={href}>"))
        if "mermaid" in values.get("class", "").split():
            self.problems.append((line, f"<{tag} class=mermaid>: the theme loads mermaid.js from unpkg.com"))
        if values.get("data-md-component") == "source":
            what = f"<{tag} data-md-component=source href={href}>: the theme asks its host's API for stars"
            self.problems.append((line, what))
        if tag == "style":
            self._style_start = line

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._style_start = None

    def handle_data(self, data: str) -> None:
        if self._style_start is not None:
            self.problems += css_problems(data, self.getpos()[0])


def html_problems(html: str) -> List[Problem]:
    """The remote resources of an HTML page (or of an SVG file, which the same parser reads)."""
    scanner = _PageScanner()
    scanner.feed(html)
    scanner.close()
    return scanner.problems


def site_problems(site: str) -> Iterator[str]:
    """`path:line: what` for every remote resource of every .html, .css and .svg file under `site`."""
    for folder, _, files in sorted(os.walk(site)):
        for name in sorted(files):
            path = os.path.join(folder, name)
            extension = os.path.splitext(name)[1].lower()
            if extension not in (".html", ".css", ".svg"):
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            problems = css_problems(text) if extension == ".css" else html_problems(text)
            for line, what in problems:
                yield f"{os.path.relpath(path, site)}:{line}: {what}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("site", help="the built site folder (mkdocs build --site-dir)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.site, "index.html")):
        print(f"{args.site}: no index.html, not a built site", file=sys.stderr)
        return 2
    problems = list(site_problems(args.site))
    for problem in problems:
        print(problem)
    pages = sum(name.endswith(".html") for _, _, files in os.walk(args.site) for name in files)
    print(f"{args.site}: {len(problems)} remote resources in {pages} pages", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
