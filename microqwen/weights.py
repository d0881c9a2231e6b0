"""The weights: every tensor of the model by its Hugging Face name, read from the files in one place.

A model directory holds config.json and the weights (`model.safetensors`, or shards with an index).
`open_model(path)` reads and checks both: the config, and that every tensor the config implies is
there with the right shape and dtype. Everything the forward pass multiplies by comes from `Weights`:

    weights.floats("model.norm.weight")                          # [896] floats (norms, biases)
    weights.floats("model.embed_tokens.weight", 9707 * 896, 896) # one row of the embedding: [896]
    weights.bits(("model.layers.3.mlp.gate_proj.weight",
                  "model.layers.3.mlp.up_proj.weight"), 0, 9728) # bf16 bits of stacked rows, for a kernel

The matrices go to the matrix kernels as their raw bfloat16 bits (`array('H')`, 2 bytes a weight);
each process reads only its share of the rows (`microqwen.linear`). Vectors are widened to floats
here, through `bf16.TABLE`. Every read goes through read(2), not through a view of the file's mmap:
a view caught in the traceback of an interrupted step would keep the file from closing.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from typing import Sequence

from . import bf16
from .config import Config, check_tensors
from .safetensors import Checkpoint, open_checkpoint


class Weights:
    """The tensors of one checkpoint (bfloat16), by name; a context manager that closes the files."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.tensors = checkpoint.tensors

    def floats(self, name: str, first: int = 0, count: int | None = None) -> list[float]:
        """Elements first..first+count-1 (default: all) of tensor `name`, as floats."""
        values = array("H")
        self.checkpoint.read_into(name, values, first, self.tensors[name].numel if count is None else count)
        return [bf16.TABLE[b] for b in values]

    def bits(self, names: Sequence[str], start: int, stop: int, columns: tuple[int, int] | None = None) -> array[int]:
        """The bfloat16 bits of rows [start, stop) of the matrices `names` stacked row-wise (same width),
        row after row; with `columns` = (a, b), only columns a..b-1 of each row."""
        out = array("H")
        offset = 0  # the stack's row where the current matrix begins
        for name in names:
            rows, cols = self.tensors[name].shape
            lo, hi = max(start, offset), min(stop, offset + rows)
            if lo < hi and columns is None:
                self.checkpoint.read_into(name, out, (lo - offset) * cols, (hi - lo) * cols)
            elif lo < hi:
                assert columns is not None
                first, last = columns
                for row in range(lo - offset, hi - offset):
                    self.checkpoint.read_into(name, out, row * cols + first, last - first)
            offset += rows
        return out

    def identity(self) -> str:
        """A short hash that changes when a weights file does: each file's size, modification time and header.

        (Not a hash of the whole file, which would take seconds for a gigabyte; see `microqwen.promptcache`.)
        """
        digest = hashlib.sha256()
        for f in self.checkpoint.files:
            status = os.stat(f.path)
            digest.update(f"{os.path.basename(f.path)} {status.st_size} {status.st_mtime_ns}\n".encode())
            digest.update(f.header_bytes())
        return digest.hexdigest()[:32]

    def close(self) -> None:
        """Close the files."""
        self.checkpoint.close()

    def __enter__(self) -> Weights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_model(path: str) -> tuple[Config, Weights]:
    """The config and the checked weights of a model directory (config.json + safetensors)."""
    config = Config.from_file(os.path.join(path, "config.json"))
    checkpoint = open_checkpoint(path)
    try:
        check_tensors(config, checkpoint.tensors, path)
    except BaseException:
        checkpoint.close()
        raise
    return config, Weights(checkpoint)
