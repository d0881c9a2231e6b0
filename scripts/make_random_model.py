"""Write a full-size Qwen2.5-0.5B model directory with random weights, for benchmarks and large tests.

    python scripts/make_random_model.py                         # -> models/random-qwen2.5-0.5b/ (988 MB)
    python scripts/make_random_model.py --seed 1 --out DIR --tokenizer-from ~/models/Qwen2.5-0.5B-Instruct

Pure Python (the standard library and microqwen), on CPython 3.9+ or PyPy. The directory has
Qwen2.5-0.5B-Instruct's own config.json and generation_config.json (copied from
tests/data/qwen2.5-0.5b-instruct, the published hub files), and a model.safetensors with exactly its
290 tensor names and shapes (`microqwen.config.expected_shapes`: 494,032,768 parameters, tied
output head) in bfloat16, written by `microqwen.safetensors.write` (atomic: renamed into place).

The weights are normal, with each kind of tensor at the mean and standard deviation of the trained
model's, measured on Qwen2.5-Coder-0.5B-Instruct (same architecture; its Q4_K_M GGUF dequantised to
bf16) and rounded (`KINDS`). For the biases that is a robust std (1.4826 x the median absolute deviation):
their plain std is dominated by a few huge entries (a k_proj.bias value reaches 211). So the
residual stream, attention and the tied head see realistic scales, and a forward pass gives finite,
spread logits.

Speed: drawing 494 million normal numbers one at a time takes CPython about 10 minutes. Instead,
each kind of weight matrix gets a pool of 2^20 bfloat16 samples, drawn once; a matrix is cut from
slices of its pool at random offsets. So that no two rows come out identical (two rows cut at the
same offset would be: the embedding has 151,936 rows), each slice also gets its own random
permutation of the 4 lowest mantissa bits, applied to its low bytes with `bytes.translate` (a value
moves by less than 1/8 of itself, within its binade). Small tensors (norms, biases) are drawn
sample by sample. Deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from microqwen import bf16  # noqa: E402
from microqwen.config import Config, expected_shapes  # noqa: E402
from microqwen.safetensors import TensorData, write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HUB_FILES = os.path.join(ROOT, "tests", "data", "qwen2.5-0.5b-instruct")
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json")
DEFAULT_OUT = os.path.join(ROOT, "models", "random-qwen2.5-0.5b")

KINDS: Dict[str, Tuple[float, float]] = {
    "embed_tokens.weight": (0.0, 0.017),
    "input_layernorm.weight": (2.1, 1.0),
    "post_attention_layernorm.weight": (2.1, 0.9),
    "self_attn.q_proj.weight": (0.0, 0.020),
    "self_attn.q_proj.bias": (0.0, 0.55),
    "self_attn.k_proj.weight": (0.0, 0.022),
    "self_attn.k_proj.bias": (0.0, 0.69),
    "self_attn.v_proj.weight": (0.0, 0.018),
    "self_attn.v_proj.bias": (0.0, 0.078),
    "self_attn.o_proj.weight": (0.0, 0.019),
    "mlp.gate_proj.weight": (0.0, 0.015),
    "mlp.up_proj.weight": (0.0, 0.025),
    "mlp.down_proj.weight": (0.0, 0.013),
    "model.norm.weight": (7.2, 1.2),
}
"""(mean, std) of each kind of tensor, by the end of its name."""

POOL_SIZE = 1 << 20  # bf16 samples per pool (2 MiB)
SLICE_MIN, SLICE_MAX = 1 << 14, 1 << 17  # elements per slice
SMALL = 1 << 16  # tensors up to this many elements are drawn sample by sample


def kind_of(name: str) -> str:
    """'model.layers.3.self_attn.q_proj.bias' -> 'self_attn.q_proj.bias'."""
    for kind in KINDS:
        if name.endswith(kind):
            return kind
    raise KeyError(f"no weight statistics for tensor {name!r}")


def normal_bf16(rng: random.Random, mean: float, std: float, count: int) -> bytes:
    """`count` normal samples, each rounded to bfloat16: little-endian bytes."""
    return bf16.from_floats([rng.gauss(mean, std) for _ in range(count)])


def low_bit_permutation(rng: random.Random) -> bytes:
    """A bytes.translate table for a bf16 low byte: keep its top 4 bits, permute the 4 lowest mantissa bits."""
    low = list(range(16))
    rng.shuffle(low)
    return bytes((byte & 0xF0) | low[byte & 0x0F] for byte in range(256))


def from_pool(rng: random.Random, pool: bytes, count: int) -> bytearray:
    """`count` bf16 values cut from `pool` in slices at random offsets, each slice's low bits permuted."""
    out = bytearray(2 * count)
    pos = 0  # in elements
    while pos < count:
        length = min(count - pos, rng.randrange(SLICE_MIN, SLICE_MAX))
        start = rng.randrange(0, POOL_SIZE - length)
        piece = bytearray(pool[2 * start : 2 * (start + length)])
        piece[0::2] = piece[0::2].translate(low_bit_permutation(rng))  # low bytes (little-endian)
        out[2 * pos : 2 * (pos + length)] = piece
        pos += length
    return out


def random_tensors(config: Config, seed: int) -> Dict[str, TensorData]:
    """Every tensor of the checkpoint, in name order, from one seeded generator."""
    rng = random.Random(seed)
    pools: Dict[str, bytes] = {}
    tensors = {}
    for name, shape in sorted(expected_shapes(config).items()):
        kind = kind_of(name)
        mean, std = KINDS[kind]
        count = 1
        for dim in shape:
            count *= dim
        if count <= SMALL:
            data: bytes | bytearray = normal_bf16(rng, mean, std, count)
        else:
            if kind not in pools:
                pools[kind] = normal_bf16(rng, mean, std, POOL_SIZE)
            data = from_pool(rng, pools[kind], count)
        tensors[name] = TensorData("BF16", shape, data)
    return tensors


def sources(tokenizer_from: str | None) -> List[str]:
    """The files to copy into the output, each checked to exist before anything is written."""
    paths = [os.path.join(HUB_FILES, name) for name in CONFIG_FILES]
    if tokenizer_from:
        paths += [os.path.join(tokenizer_from, name) for name in TOKENIZER_FILES]
    for path in paths:
        if not os.path.isfile(path):
            raise SystemExit(f"make_random_model: {path}: no such file")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--tokenizer-from", metavar="DIR", help="copy " + ", ".join(TOKENIZER_FILES) + " from DIR")
    args = parser.parse_args()
    start = time.perf_counter()
    files = sources(args.tokenizer_from)
    config = Config.from_file(os.path.join(HUB_FILES, "config.json"))
    tensors = random_tensors(config, args.seed)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model.safetensors")
    write(path, tensors, {"format": "pt", "generator": "scripts/make_random_model.py", "seed": str(args.seed)})
    for source in files:
        shutil.copyfile(source, os.path.join(args.out, os.path.basename(source)))
    seconds = time.perf_counter() - start
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path):,} bytes, seed {args.seed}, "
          f"{seconds:.1f} s ({sys.implementation.name} {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
