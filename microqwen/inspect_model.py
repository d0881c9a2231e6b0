"""`microqwen inspect`: what is in a model file or directory, without loading the weights.

Reads only the safetensors header(s) and config.json, so it takes milliseconds even
for the 988 MB Qwen2.5-0.5B file:

    $ microqwen inspect ~/models/Qwen2.5-0.5B-Instruct
    file        .../model.safetensors: 988,097,824 bytes, header 32,280 bytes
    tensors     290, 494,032,768 parameters
    config      hidden 896, intermediate 4864, 24 layers, 14 heads (2 kv, head_dim 64, n_rep 7), ...
    name                                  dtype  shape        offset       bytes
    model.embed_tokens.weight             BF16   151936x896   32,288       272,269,312
    ...
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .config import Config, mismatches
from .safetensors import Checkpoint, TensorInfo, open_checkpoint


@dataclass
class Report:
    """What `inspect` found: files, tensors in file order, the config (if any) and its mismatches."""

    files: list[dict[str, object]]
    tensors: list[TensorInfo]
    config: Config | None
    problems: list[str]

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)


def inspect(path: str) -> Report:
    """Read the header(s) at `path` (a .safetensors file or a model directory) and config.json."""
    with open_checkpoint(path) as checkpoint:
        files = _describe_files(checkpoint)
        tensors = sorted(checkpoint.tensors.values(), key=lambda t: (t.path, t.begin))
    config_path = os.path.join(path, "config.json")
    if not os.path.isdir(path) or not os.path.exists(config_path):
        return Report(files, tensors, None, [])
    config = Config.from_file(config_path)
    return Report(files, tensors, config, mismatches(config, {t.name: t for t in tensors}))


def _describe_files(checkpoint: Checkpoint) -> list[dict[str, object]]:
    return [
        {"path": f.path, "bytes": f.file_size, "header_bytes": f.header_size, "metadata": f.metadata}
        for f in checkpoint.files
    ]


def to_text(report: Report) -> str:
    """The human-readable table."""
    lines = [f"file        {_printable(str(f['path']))}: {f['bytes']:,} bytes, header {f['header_bytes']:,} bytes"
             for f in report.files]  # fmt: skip
    lines.append(f"tensors     {len(report.tensors)}, {report.parameters:,} parameters")
    if report.config is not None:
        lines.append(f"config      {_summary(report.config)}")
    width = max([len(t.name) for t in report.tensors] + [4])
    lines.append(f"{'name':<{width}}  dtype    {'shape':<14} {'offset':>15} {'bytes':>15}")
    for t in report.tensors:
        shape = "x".join(map(str, t.shape)) or "scalar"
        lines.append(f"{t.name:<{width}}  {t.dtype:<8} {shape:<14} {t.begin:>15,} {t.nbytes:>15,}")
    return "\n".join(lines)


def _printable(path: str) -> str:
    """A path whose bytes are not UTF-8 (held as lone surrogates) with those bytes written \\xff."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _summary(c: Config) -> str:
    return (
        f"hidden {c.hidden_size}, intermediate {c.intermediate_size}, {c.num_hidden_layers} layers, "
        f"{c.num_attention_heads} heads ({c.num_key_value_heads} kv, head_dim {c.head_dim}, n_rep {c.n_rep}), "
        f"vocab {c.vocab_size}, context {c.max_position_embeddings}, rope_theta {c.rope_theta:g}, "
        f"rms_norm_eps {c.rms_norm_eps:g}, {'tied' if c.tie_word_embeddings else 'untied'} output head"
    )


def to_json(report: Report) -> str:
    """The same facts as JSON, for scripts."""
    config = None
    if report.config is not None:
        config = dict(vars(report.config), n_rep=report.config.n_rep, eos_token_ids=list(report.config.eos_token_ids))
    tensors = [
        {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "file": t.path, "offset": t.begin, "bytes": t.nbytes}
        for t in report.tensors
    ]
    document = {
        "files": report.files,
        "tensors": tensors,
        "parameters": report.parameters,
        "config": config,
        "problems": report.problems,
    }
    return json.dumps(document, indent=2)
