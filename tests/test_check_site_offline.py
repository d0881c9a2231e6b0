"""scripts/check_site_offline.py: every remote resource of a built site is found, and nothing else is.

CI runs the checker on the real site right after `mkdocs build --strict`; these tests check the
checker itself on small pages, one way of loading something from the network each.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_site_offline", ROOT / "scripts" / "check_site_offline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_site_offline"] = module
    spec.loader.exec_module(module)
    return module


check = load_script()

SHIM = "https://unpkg.com/iframe-worker/shim"
FONTS = "https://fonts.googleapis.com/css?family=Roboto"

REMOTE_PAGES = {  # a one-line page, and what the checker must report for it
    "the offline plugin's default shim": (f'<script src="{SHIM}"></script>', f"<script src={SHIM}>"),
    "a protocol-relative script": ("<script src='//cdn.example.org/x.js'></script>", "<script src=//cdn.example.org/x.js>"),
    "a style sheet": (f'<link rel="stylesheet" href="{FONTS}">', f"<link rel=stylesheet href={FONTS}>"),
    "a preconnect": ('<link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>',
                     "<link rel=preconnect href=https://fonts.gstatic.com>"),
    "an icon, upper case": ('<LINK REL="icon" HREF="HTTPS://example.org/i.png">',
                            "<link rel=icon href=HTTPS://example.org/i.png>"),
    "a link without rel": ('<link href="https://example.org/x.css">', "<link rel= href=https://example.org/x.css>"),
    "an image": ('<p>text <img alt="" src="http://example.org/a.png"></p>', "<img src=http://example.org/a.png>"),
    "an image set": ('<img src="a.png" srcset="a2.png 2x, https://example.org/a3.png 3x">',
                     "<img srcset=https://example.org/a3.png>"),
    "a video poster": ('<video poster="https://example.org/p.jpg"></video>', "<video poster=https://example.org/p.jpg>"),
    "an iframe": ('<iframe src="https://example.org/embed"></iframe>', "<iframe src=https://example.org/embed>"),
    "an object": ('<object data="https://example.org/figure.svg"></object>', "<object data=https://example.org/figure.svg>"),
    "an SVG image": ('<svg><image href="https://example.org/a.png"/></svg>', "<image href=https://example.org/a.png>"),
    "an SVG use, old style": ('<svg><use xlink:href="https://example.org/i.svg#x"/></svg>',
                              "<use href=https://example.org/i.svg#x>"),
    "a style attribute": ("<div style=\"background: url('https://example.org/bg.png')\"></div>",
                          "<div style>: CSS url() https://example.org/bg.png"),
    "a style element": ("<style>@font-face { src: url(https://example.org/f.woff2) }</style>",
                        "CSS url() https://example.org/f.woff2"),
    "an @import in a style element": ('<style>@import "https://example.org/more.css";</style>',
                                      "CSS @import https://example.org/more.css"),
    "a websocket": ('<script src="wss://example.org/live"></script>', "<script src=wss://example.org/live>"),
    "a mermaid diagram": ('<pre class="mermaid"><code>graph LR; a --> b</code></pre>',
                          "<pre class=mermaid>: the theme loads mermaid.js from unpkg.com"),
    "a repository link": ('<a href="https://github.com/x/y" class="md-source" data-md-component="source">y</a>',
                          "<a data-md-component=source href=https://github.com/x/y>: "
                          "the theme asks its host's API for stars"),
}

LOCAL_PAGES = {
    "relative addresses": '<script src="../assets/iframe-worker/shim.js"></script><link rel="stylesheet" href="a.css">',
    "a data: image": '<img src="data:image/png;base64,iVBORw0KGgo=">',
    "links in the text": '<a href="https://huggingface.co/Qwen/Qwen2.5-0.5B">the model</a>',
    "a canonical link": '<link rel="canonical" href="https://example.org/page/">',
    "an SVG namespace": '<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0"/></svg>',
    "an address in the text": "<p>src=\"https://example.org/x.js\" is how a remote script looks</p>",
    "an address in code": '<pre><code>&lt;script src="https://unpkg.com/x"&gt;</code></pre>',
}


@pytest.mark.parametrize(("html", "what"), REMOTE_PAGES.values(), ids=REMOTE_PAGES.keys())
def test_each_way_of_loading_from_the_network_is_found(html: str, what: str) -> None:
    assert check.html_problems(html) == [(1, what)]


@pytest.mark.parametrize("html", LOCAL_PAGES.values(), ids=LOCAL_PAGES.keys())
def test_local_resources_and_links_to_other_sites_are_fine(html: str) -> None:
    assert check.html_problems(html) == []


def test_a_style_element_names_the_line_of_its_remote_address() -> None:
    html = "<html>\n<style>\n.x { color: red }\n@font-face { src: url(https://example.org/f.woff2) }\n</style>"
    assert check.html_problems(html) == [(4, "CSS url() https://example.org/f.woff2")]


def test_a_style_sheet_names_the_line_of_each_remote_address() -> None:
    css = 'a { background: url("img/a.png") }\n@import url(//example.org/b.css);\n@import "c.css";\n' \
          "b { src: url(data:font/woff2;base64,AAAA) }\n@import 'https://example.org/d.css';\n"  # fmt: skip
    assert check.css_problems(css) == [
        (2, "CSS url() //example.org/b.css"),
        (5, "CSS @import https://example.org/d.css"),
    ]


def test_the_site_check_reads_html_css_and_svg_and_sets_the_exit_status(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "index.html").write_text('<html><head>\n<script src="assets/x.js"></script></head></html>')
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "x.js").write_text('load("https://example.org/never-checked.js")')
    assert check.main([str(tmp_path)]) == 0
    (tmp_path / "assets" / "style.css").write_text("\n\nbody { background: url(https://example.org/bg.png) }")
    (tmp_path / "assets" / "figure.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg">\n'
                                                    '<image href="http://example.org/a.png"/></svg>')  # fmt: skip
    assert check.main([str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "assets/figure.svg:2: <image href=http://example.org/a.png>",
        "assets/style.css:3: CSS url() https://example.org/bg.png",
    ]


def test_a_folder_without_a_built_site_is_an_error(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main([str(tmp_path)]) == 2
    assert "no index.html" in capsys.readouterr().err
