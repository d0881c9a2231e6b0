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

A .gguf file holds its config and tokenizer in its metadata: `inspect_gguf` reads the header (the
metadata and tensor infos, about 6 MB for Qwen2.5, mostly the vocabulary) and shows the model, the
config it implies, the tokenizer, every metadata key, the quantisation mix (tensors, weights and bits
per weight of each type) and the tensor table with llama.cpp's and Hugging Face's names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from . import chat, gguf, quant
from .config import Config, mismatches
from .errors import MicroQwenError
from .safetensors import Checkpoint, TensorInfo, open_checkpoint
from .tokenizer import GGUF_TOKEN_TYPES


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


# ---------------------------------------------------------------- GGUF files


@dataclass
class GGUFReport:
    """What `inspect` found in a .gguf file: the header, the metadata, the tensors in file order, the config."""

    path: str
    file_size: int
    version: int
    alignment: int
    data_start: int
    fields: dict[str, gguf.Field]
    tensors: list[gguf.TensorInfo]
    config: Config | None
    problems: list[str]

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)

    def type_mix(self) -> dict[str, dict[str, int]]:
        """Per tensor type, most weights first: how many tensors, weights and bytes."""
        mix: dict[str, dict[str, int]] = {}
        for t in self.tensors:
            entry = mix.setdefault(t.dtype, {"tensors": 0, "weights": 0, "bytes": 0})
            entry["tensors"] += 1
            entry["weights"] += t.numel
            entry["bytes"] += t.nbytes
        return dict(sorted(mix.items(), key=lambda item: -item[1]["weights"]))


def inspect_gguf(path: str) -> GGUFReport:
    """Read a .gguf file's header; the config if it is a qwen2 file, and how its tensors fit that config."""
    with gguf.GGUFFile(path) as f:
        tensors = list(f.tensors.values())
        report = GGUFReport(path, f.file_size, f.version, f.alignment, f.data_start, f.fields, tensors, None, [])
        if f.metadata.get("general.architecture") == "qwen2":
            report.config = Config.from_gguf(f.metadata, list(f.tensors), path)
            report.problems = mismatches(report.config, gguf.hf_tensors(f), quant.SUPPORTED)
    return report


FILE_TYPES = {
    0: "ALL_F32", 1: "MOSTLY_F16", 2: "MOSTLY_Q4_0", 3: "MOSTLY_Q4_1", 7: "MOSTLY_Q8_0", 8: "MOSTLY_Q5_0",
    9: "MOSTLY_Q5_1", 10: "MOSTLY_Q2_K", 11: "MOSTLY_Q3_K_S", 12: "MOSTLY_Q3_K_M", 13: "MOSTLY_Q3_K_L",
    14: "MOSTLY_Q4_K_S", 15: "MOSTLY_Q4_K_M", 16: "MOSTLY_Q5_K_S", 17: "MOSTLY_Q5_K_M", 18: "MOSTLY_Q6_K",
    32: "MOSTLY_BF16",
}  # fmt: skip
"""general.file_type: llama.cpp's name for the mix (llama.h `llama_ftype`); 15 is Q4_K_M."""


def gguf_to_text(report: GGUFReport) -> str:
    """The human-readable summary: file, model, config, tokenizer, metadata, types, then the tensor table."""
    lines = [
        f"file        {_printable(report.path)}: {report.file_size:,} bytes, GGUF v{report.version}, header "
        f"{report.data_start:,} bytes ({len(report.fields)} metadata keys, {len(report.tensors)} tensor infos), "
        f"alignment {report.alignment}",
        f"model       {_model_line(report.fields)}",
    ]
    if report.config is not None:
        lines.append(f"config      {_summary(report.config)}")
    lines.append(f"tokenizer   {_tokenizer_line(report.fields)}")
    lines += [f"metadata    {key:<40} {field.type:<14} {_short(field.value)}" for key, field in report.fields.items()]
    bits = 8 * sum(t.nbytes for t in report.tensors) / max(report.parameters, 1)
    lines.append(f"tensors     {len(report.tensors)}, {report.parameters:,} weights, {bits:.2f} bits per weight on average")
    for name, entry in report.type_mix().items():
        ggml_type = quant.BY_NAME[name]
        lines.append(f"  {name:<8}  {entry['tensors']:>4} tensors  {entry['weights']:>13,} weights  "
                     f"{entry['bytes']:>13,} bytes  {ggml_type.bits_per_weight:g} bits per weight")  # fmt: skip
    width = max([len(t.name) for t in report.tensors] + [4])
    hf_width = max([len(gguf.hf_name(t.name) or "") for t in report.tensors] + [12])
    lines.append(f"{'name':<{width}}  {'Hugging Face':<{hf_width}}  type     {'shape':<12} {'offset':>13} {'bytes':>13}  bits")
    for t in report.tensors:
        shape = "x".join(map(str, t.shape)) or "scalar"
        lines.append(f"{t.name:<{width}}  {gguf.hf_name(t.name) or '-':<{hf_width}}  {t.dtype:<8} {shape:<12} "
                     f"{t.begin:>13,} {t.nbytes:>13,}  {t.bits_per_weight:g}")  # fmt: skip
    return "\n".join(lines)


def _model_line(fields: dict[str, gguf.Field]) -> str:
    value = {key: field.value for key, field in fields.items()}
    file_type = value.get("general.file_type")
    kind = f"{FILE_TYPES.get(file_type, 'unknown')} ({file_type})" if isinstance(file_type, int) else "not given"
    return (f"{value.get('general.name', '(no general.name)')!s}, architecture {value.get('general.architecture')!s}, "
            f"file type {kind}, quantization version {value.get('general.quantization_version', '-')!s}")  # fmt: skip


def tokenizer_summary(fields: dict[str, gguf.Field]) -> dict[str, object]:
    """The tokenizer.* metadata in brief: model, pre-tokenizer, token counts by type, merges, special ids, template."""
    value = {key: field.value for key, field in fields.items()}
    tokens, kinds = value.get("tokenizer.ggml.tokens"), value.get("tokenizer.ggml.token_type")
    counts: dict[str, int] = {}
    for kind in kinds if isinstance(kinds, list) else []:
        name = _token_type_name(kind)
        counts[name] = counts.get(name, 0) + 1
    merges = value.get("tokenizer.ggml.merges")
    return {
        "model": value.get("tokenizer.ggml.model"), "pre": value.get("tokenizer.ggml.pre"),
        "tokens": len(tokens) if isinstance(tokens, list) else 0, "token_types": counts,
        "merges": len(merges) if isinstance(merges, list) else 0,
        **{name: value.get(f"tokenizer.ggml.{name}_token_id") for name in ("eos", "padding", "bos")},
        "chat_template": _template_kind(value.get("tokenizer.chat_template")),
    }  # fmt: skip


def _token_type_name(kind: object) -> str:
    return GGUF_TOKEN_TYPES.get(kind, f"type {kind}") if isinstance(kind, int) else f"type {kind!r}"


def _template_kind(template: object) -> str:
    if template is None:
        return "none"
    if not isinstance(template, str):
        return "not a string"
    try:
        chat.check_template(template, "tokenizer.chat_template")
    except MicroQwenError:
        return f"not Qwen2.5's ({len(template):,} characters)"
    return f"Qwen2.5's ({len(template):,} characters)"


def _tokenizer_line(fields: dict[str, gguf.Field]) -> str:
    t = tokenizer_summary(fields)
    if not t["tokens"]:
        return "none"
    kinds = t["token_types"]
    types = ", ".join(f"{count:,} {name}" for name, count in kinds.items()) if isinstance(kinds, dict) else ""
    return (f"{t['model']} (pre {t['pre']}): {t['tokens']:,} tokens ({types}), {t['merges']:,} merges, "
            f"eos {t['eos']}, padding {t['padding']}, bos {t['bos']}; chat template {t['chat_template']}")  # fmt: skip


def _short(value: gguf.Value, limit: int = 60) -> str:
    """A metadata value on one line: arrays as their length and first items, long strings cut."""
    if isinstance(value, list):
        head = ", ".join(_short(item, 20) for item in value[:4])
        return f"[{head}{', ...' if len(value) > 4 else ''}] ({len(value):,} items)"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def gguf_to_json(report: GGUFReport) -> str:
    """The same facts as JSON; arrays of more than 16 items are given as their length and first 16."""
    config = None
    if report.config is not None:
        config = dict(vars(report.config), n_rep=report.config.n_rep, eos_token_ids=list(report.config.eos_token_ids))
    metadata = {key: {"type": field.type, "offset": field.offset, **_json_value(field.value)}
                for key, field in report.fields.items()}  # fmt: skip
    tensors = [{"name": t.name, "hf_name": gguf.hf_name(t.name), "type": t.dtype, "dims": list(t.dims),
                "shape": list(t.shape), "offset": t.begin, "bytes": t.nbytes, "bits_per_weight": t.bits_per_weight}
               for t in report.tensors]  # fmt: skip
    document = {
        "file": {"path": report.path, "bytes": report.file_size, "version": report.version,
                 "alignment": report.alignment, "header_bytes": report.data_start},
        "metadata": metadata, "tokenizer": tokenizer_summary(report.fields), "types": report.type_mix(),
        "tensors": tensors, "parameters": report.parameters, "config": config, "problems": report.problems,
    }  # fmt: skip
    return json.dumps(document, indent=2)


def _json_value(value: gguf.Value) -> dict[str, object]:
    if isinstance(value, list) and len(value) > 16:
        return {"length": len(value), "head": value[:16]}
    return {"value": value}
