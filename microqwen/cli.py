"""The `microqwen` command line: argument parsing, and turning errors into one-line messages.

Every subcommand is a function `cmd_<name>(args) -> exit status`. A
`MicroQwenError` anywhere below becomes `microqwen: error: <message>` on stderr and
exit status 2; Ctrl-C becomes exit status 130. Results go to stdout, progress and
timings to stderr, so `microqwen ... > out.txt` captures only results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

from . import __version__, inspect_model
from .errors import MicroQwenError, UsageError
from .kernels import KERNELS

Command = Callable[[argparse.Namespace], int]


def cmd_inspect(args: argparse.Namespace) -> int:
    report = inspect_model.inspect(args.path)
    print(inspect_model.to_json(report) if args.json else inspect_model.to_text(report))
    if report.problems:
        raise MicroQwenError(f"{args.path}: the weights do not fit config.json: " + "; ".join(report.problems))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    figures = bench.measure(args.model, args.workers, args.kernel, args.prompt_tokens, args.decode_tokens,
                            progress=lambda message: print(f"bench: {message}", file=sys.stderr))  # fmt: skip
    print(bench.report(figures))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from . import hub

    spec = args.id or hub.DEFAULT_MODEL
    if args.revision is not None:
        if "@" in spec:
            raise UsageError(f"{spec} already names a revision; drop --revision {args.revision}")
        spec = f"{spec}@{args.revision}"
    print(hub.resolve_model(spec))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microqwen", description="Qwen2.5-0.5B inference in pure Python.")
    parser.add_argument("--version", action="version", version=f"microqwen {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    inspect = commands.add_parser("inspect", help="show the tensors, sizes and config of a model file or directory")
    inspect.add_argument("path", metavar="PATH", help="a .safetensors file or a model directory")
    inspect.add_argument("--json", action="store_true", help="print machine-readable JSON")
    inspect.set_defaults(run=cmd_inspect)

    bench = commands.add_parser("bench", help="measure kernel rate, load, prefill and decode speed, memory")
    bench.add_argument("--model", required=True, metavar="DIR", help="a model directory")
    bench.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPUs)")
    bench.add_argument("--kernel", choices=sorted(KERNELS), help="matrix kernel (default: the fastest here)")
    bench.add_argument("--prompt-tokens", type=int, default=32, help="prompt length for prefill (default 32)")
    bench.add_argument("--decode-tokens", type=int, default=32, help="tokens to decode (default 32)")
    bench.add_argument("--json", metavar="FILE", help="also save the figures as JSON")
    bench.set_defaults(run=cmd_bench)

    download = commands.add_parser("download", help="fetch a model from the Hugging Face Hub into its cache; print its directory")
    download.add_argument("id", nargs="?", metavar="ID", help="org/name[@revision] (default Qwen/Qwen2.5-0.5B-Instruct)")
    download.add_argument("--revision", help="a branch, tag or commit (default main)")
    download.set_defaults(run=cmd_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    run: Command = args.run
    try:
        return run(args)
    except MicroQwenError as e:
        print(f"microqwen: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("microqwen: interrupted", file=sys.stderr)
        return 130
