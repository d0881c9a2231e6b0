"""Regenerate the answers docs/serving.md shows, by sending its two curl requests to a real server.

    python scripts/make_serving_snippets.py --model DIR --python pypy3

DIR is a Qwen2.5-0.5B-architecture model directory (the page's answers came from
Qwen2.5-Coder-0.5B-Instruct); the server runs with that interpreter and one worker. The chat answer
is written to docs/snippets/serve/chat.json (ids and times as they came), the stream's events as
they arrived to docs/snippets/serve/stream.txt.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.server_process import ServerProcess  # noqa: E402

OUT = os.path.join(ROOT, "docs", "snippets", "serve")
CHAT = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0}
STREAM = {"prompt": "def fibonacci(n):", "max_tokens": 8, "temperature": 0, "stream": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a model directory with tokenizer files")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs the server")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    with ServerProcess(args.model, "--workers", "1", python=args.python) as server:
        answer = server.post("/v1/chat/completions", CHAT)
        with open(os.path.join(OUT, "chat.json"), "w") as f:
            f.write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        connection.request("POST", "/v1/completions", json.dumps(STREAM), {"Content-Type": "application/json"})
        lines = [line.decode("utf-8").rstrip("\r\n") for line in connection.getresponse()]
        with open(os.path.join(OUT, "stream.txt"), "w") as f:
            f.write("\n".join(line for line in lines if line) + "\n")
    print(f"wrote {OUT}/chat.json and stream.txt", file=sys.stderr)


if __name__ == "__main__":
    main()
