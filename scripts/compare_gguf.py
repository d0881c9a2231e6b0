"""Read a .gguf file with microqwen and with gguf-py, and compare: metadata, tensor infos, dequantised weights.

    $REFPYTHON scripts/compare_gguf.py model.gguf [--per-type 3] [--rows 256]

For a file the tests cannot ship (a real model): every metadata value and tensor info must be the
same, and for `--per-type` tensors of each type (the first, the second and the last of that type),
the first `--rows` rows (0: all) dequantised by `microqwen.quant` must be bit for bit those of
`gguf.quants.dequantize`. Prints one line per tensor; exit status 1 if anything differs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from gguf import GGUFReader, quants

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from microqwen.gguf import GGUFFile  # noqa: E402


def compare_header(f: GGUFFile, reader: GGUFReader) -> list[str]:
    problems = []
    for key, field in reader.fields.items():
        if not key.startswith("GGUF.") and f.metadata.get(key) != field.contents():
            problems.append(f"metadata {key}: microqwen {f.metadata.get(key)!r:.80}, gguf-py {field.contents()!r:.80}")
    if list(f.tensors) != [t.name for t in reader.tensors]:
        problems.append("the tensor names or their order differ")
    for t in reader.tensors:
        ours = f.tensors.get(t.name)
        if ours is None or (ours.begin, ours.nbytes, list(ours.dims), ours.type.id) != (
            t.data_offset, t.n_bytes, [int(d) for d in t.shape], int(t.tensor_type)):  # fmt: skip
            problems.append(f"tensor info {t.name} differs")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path")
    parser.add_argument("--per-type", type=int, default=3, help="tensors of each type to dequantise (default 3)")
    parser.add_argument("--rows", type=int, default=256, help="rows of each to compare (default 256; 0: all)")
    args = parser.parse_args()
    reader = GGUFReader(args.path)
    by_type: dict[str, list] = {}
    for t in reader.tensors:
        by_type.setdefault(t.tensor_type.name, []).append(t)
    with GGUFFile(args.path) as f:
        problems = compare_header(f, reader)
        print(f"{args.path}: {len(f.fields)} metadata keys, {len(f.tensors)} tensor infos: "
              f"{'the same' if not problems else '; '.join(problems)}")  # fmt: skip
        for name, tensors in sorted(by_type.items()):
            picked = list({t.name: t for t in tensors[:2] + tensors[-1:]}.values())[: args.per_type]
            for t in picked:
                info = f.tensors[t.name]
                rows = info.rows if args.rows == 0 else min(info.rows, args.rows)
                start = time.time()
                ours = np.frombuffer(f.floats(t.name, 0, rows).tobytes(), np.float32)
                seconds = time.time() - start
                reference = np.asarray(quants.dequantize(t.data, t.tensor_type), np.float32).reshape(-1)[: ours.size]
                same = np.array_equal(reference.view(np.uint32), ours.view(np.uint32))
                if not same:
                    problems.append(t.name)
                print(f"{name:6} {t.name:28} rows {rows:>6}/{info.rows:<6} {ours.size:>11,} weights: "
                      f"{'bit-exact' if same else 'DIFFERENT'} ({seconds:.1f} s)")  # fmt: skip
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
