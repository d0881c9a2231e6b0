"""The weights: every tensor of the model by its Hugging Face name, read from the files in one place.

A model is a directory (config.json and `model.safetensors`, or shards with an index) or one GGUF
file (llama.cpp's format: the config in its metadata, the tensors under llama.cpp's names, mostly
quantised). `open_model(path)` reads and checks either: the config, and that every tensor the config
implies is there with the right shape and a type microqwen reads. Everything the forward pass
multiplies by comes from `Weights`, under the Hugging Face names whatever the file:

    weights.floats("model.norm.weight")                          # [896] floats (norms, biases)
    weights.floats("model.embed_tokens.weight", 9707 * 896, 896) # one row of the embedding: [896]
    weights.matrix(("model.layers.3.mlp.gate_proj.weight",
                    "model.layers.3.mlp.up_proj.weight"),
                   ((0, 2432), (4864, 7296)))                    # rows of the stack, ready for a kernel

A matrix goes to the kernels in its stored form: bfloat16 bits (`array('H')`, 2 bytes a weight), or
a GGUF block format's blocks (`microqwen.kernels.load_matrix`); each process reads only its share of
the rows (`microqwen.shards`). Vectors are widened to floats here. Every read goes through read(2),
not through a view of the file's mmap: a view caught in the traceback of an interrupted step would
keep the file from closing.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from typing import Any, Mapping, Sequence

from . import bf16, gguf, quant
from .config import Config, TensorShape, check_tensors
from .kernels import Kernel, Matrix, StackedMatrix, load_matrix
from .safetensors import Checkpoint, open_checkpoint

Ranges = Sequence[Sequence[int]]
"""Row ranges [start, stop) of a stack of matrices."""


class Weights:
    """The tensors of one model by Hugging Face name; a context manager that closes the file(s).

    `SafetensorsWeights` and `GGUFWeights` say how a tensor's rows are read; the stacking is here.
    `metadata` is a GGUF file's key/value pairs (empty for safetensors).
    """

    tensors: Mapping[str, TensorShape]
    metadata: Mapping[str, gguf.Value] = {}

    def floats(self, name: str, first: int = 0, count: int | None = None) -> list[float]:
        """Elements first..first+count-1 (default: all) of tensor `name`, as floats."""
        raise NotImplementedError

    def matrix(self, names: Sequence[str], ranges: Ranges, columns: tuple[int, int] | None = None,
               kernel: Kernel = None) -> Matrix:  # fmt: skip
        """Rows `ranges` of the matrices `names` stacked row-wise (all of one width), in `kernel`'s form.

        With `columns` = (a, b), only columns a..b-1 of each row (for a GGUF block format, a and b
        must fall on block boundaries). Consecutive rows of one type become one matrix; a stack of
        several types (q_proj Q5_0 over v_proj Q8_0) is a `StackedMatrix` of them.
        """
        runs: list[tuple[str, array[Any], int]] = []  # (dtype, stored rows, row count)
        pieces = _pieces(names, [self.tensors[n].shape[0] for n in names], ranges) or [(names[0], 0, 0)]
        for name, start, stop in pieces:
            dtype, data = self._rows(name, start, stop, columns)
            if runs and runs[-1][0] == dtype:
                runs[-1] = (dtype, runs[-1][1] + data, runs[-1][2] + stop - start)
            else:
                runs.append((dtype, data, stop - start))
        width = columns[1] - columns[0] if columns else self.tensors[names[0]].shape[1]
        parts = [load_matrix(data, rows, width, kernel, dtype) for dtype, data, rows in runs]
        return parts[0] if len(parts) == 1 else StackedMatrix(parts)

    def block_size(self, name: str) -> int:
        """Weights per block of tensor `name`'s type (1 for bfloat16 and the float types)."""
        return quant.BY_NAME[self.tensors[name].dtype].block_size

    def _rows(self, name: str, start: int, stop: int, columns: tuple[int, int] | None) -> tuple[str, array[Any]]:
        """Rows start..stop-1 of matrix `name` (columns a..b-1 only, if given) in their stored form, and its type."""
        raise NotImplementedError

    def identity(self) -> str:
        """A short hash that changes when a weights file does: each file's size, modification time and header.

        (Not a hash of the whole file, which would take seconds for a gigabyte; see `microqwen.promptcache`.)
        """
        raise NotImplementedError

    def close(self) -> None:
        """Close the file(s)."""
        raise NotImplementedError

    def __enter__(self) -> Weights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pieces(names: Sequence[str], heights: Sequence[int], ranges: Ranges) -> list[tuple[str, int, int]]:
    """(tensor, first row, stop row) for each part of the stack's row ranges that lies in one tensor."""
    pieces = []
    for start, stop in ranges:
        offset = 0  # the stack's row where the current matrix begins
        for name, height in zip(names, heights):
            lo, hi = max(start, offset), min(stop, offset + height)
            if lo < hi:
                pieces.append((name, lo - offset, hi - offset))
            offset += height
    return pieces


def _identity(parts: Sequence[tuple[str, bytes]]) -> str:
    """The hash of each file's name, size, modification time and header."""
    digest = hashlib.sha256()
    for path, header in parts:
        status = os.stat(path)
        digest.update(f"{os.path.basename(path)} {status.st_size} {status.st_mtime_ns}\n".encode())
        digest.update(header)
    return digest.hexdigest()[:32]


class SafetensorsWeights(Weights):
    """A checkpoint's tensors, all bfloat16 (config.json + safetensors)."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.tensors = checkpoint.tensors

    def floats(self, name: str, first: int = 0, count: int | None = None) -> list[float]:
        """Elements first..first+count-1 of tensor `name`, widened from bfloat16."""
        values = array("H")
        self.checkpoint.read_into(name, values, first, self.checkpoint.tensors[name].numel if count is None else count)
        return [bf16.TABLE[b] for b in values]

    def _rows(self, name: str, start: int, stop: int, columns: tuple[int, int] | None) -> tuple[str, array[Any]]:
        out = array("H")
        cols = self.checkpoint.tensors[name].shape[1]
        if columns is None:
            self.checkpoint.read_into(name, out, start * cols, (stop - start) * cols)
        else:
            first, last = columns
            for row in range(start, stop):
                self.checkpoint.read_into(name, out, row * cols + first, last - first)
        return "BF16", out

    def identity(self) -> str:
        """Each safetensors file's name, size, modification time and JSON header, hashed."""
        return _identity([(f.path, f.header_bytes()) for f in self.checkpoint.files])

    def close(self) -> None:
        """Close every safetensors file."""
        self.checkpoint.close()


class GGUFWeights(Weights):
    """A GGUF file's tensors under their Hugging Face names (`output.weight` is `lm_head.weight`).

    Matrices stay in their stored types (the kernels compute with the blocks); vectors and embedding
    rows are dequantised as the reference dequantises them (`microqwen.quant.dequantize`).
    """

    def __init__(self, file: gguf.GGUFFile) -> None:
        self.file = file
        self.infos = gguf.hf_tensors(file)
        self.tensors = self.infos
        self.metadata = file.metadata

    def floats(self, name: str, first: int = 0, count: int | None = None) -> list[float]:
        """Elements first..first+count-1 of tensor `name`: the rows that hold them dequantised, then cut."""
        info = self.infos[name]
        count = info.numel - first if count is None else count
        row, skip = divmod(first, info.row_length)
        rows = -(-(skip + count) // info.row_length)
        return self.file.floats(info.name, row, rows)[skip : skip + count].tolist()

    def _rows(self, name: str, start: int, stop: int, columns: tuple[int, int] | None) -> tuple[str, array[Any]]:
        info = self.infos[name]
        out = array("H" if info.dtype == "BF16" else "B")
        self.file.read_rows_into(info.name, out, start, stop - start)
        if columns is None:
            return info.dtype, out
        if any(c % info.type.block_size for c in columns):
            raise ValueError(f"columns {columns} of {name} are not on {info.dtype} block boundaries")
        first, last = (info.type.row_bytes(c) // out.itemsize for c in columns)  # where they are in a row
        row = info.row_bytes // out.itemsize
        kept = array(out.typecode)
        for r in range(stop - start):
            kept += out[r * row + first : r * row + last]
        return info.dtype, kept

    def identity(self) -> str:
        """The file's name, size, modification time and header (metadata and tensor infos), hashed."""
        return _identity([(self.file.path, self.file.header_bytes())])

    def close(self) -> None:
        """Close the .gguf file."""
        self.file.close()


def open_model(path: str) -> tuple[Config, Weights]:
    """The config and the checked weights of a model directory (config.json + safetensors) or a .gguf file."""
    if gguf.is_gguf(path):
        return _open_gguf(path)
    config = Config.from_file(os.path.join(path, "config.json"))
    checkpoint = open_checkpoint(path)
    try:
        check_tensors(config, checkpoint.tensors, path)
    except BaseException:
        checkpoint.close()
        raise
    return config, SafetensorsWeights(checkpoint)


def _open_gguf(path: str) -> tuple[Config, Weights]:
    """A .gguf file: the config from its qwen2.* metadata, its tensors checked against it."""
    file = gguf.GGUFFile(path)
    try:
        config = Config.from_gguf(file.metadata, list(file.tensors), path)
        check_tensors(config, gguf.hf_tensors(file), path, quant.SUPPORTED, "its qwen2 metadata")
    except BaseException:
        file.close()
        raise
    return config, GGUFWeights(file)
