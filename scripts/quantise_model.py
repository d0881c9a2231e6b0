"""Quantise a bf16 Qwen2 model directory into .gguf files of one block format each (Q8_0, Q4_0, ...).

    $REFPYTHON scripts/quantise_model.py MODEL_DIR TEMPLATE.gguf OUT_DIR [--types Q8_0 Q4_0]

For the "What quantisation does" docs page: the same weights at fewer bits, to compare with the bf16
model they came from. REFPYTHON has the `gguf` package (gguf-py, llama.cpp's Python library) and torch;
gguf-py's `gguf.quants.quantize` does the rounding (round-to-nearest per block of 32, as llama.cpp's
reference quantiser), every matrix in the one type (embedding included, which is also the tied head),
every vector (norms, biases) F32.

MODEL_DIR is a directory in the Hugging Face layout (config.json, model.safetensors in bf16, tied
embeddings); TEMPLATE.gguf a GGUF file of the same model, whose metadata (the qwen2.* keys, the
tokenizer and the chat template) is copied, with general.file_type set to the type written. Writes
OUT_DIR/<name of MODEL_DIR>.<type>.gguf, tensors in llama.cpp's order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import gguf
import numpy as np
import safetensors.torch
import torch
from gguf import GGMLQuantizationType as Q

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_gguf_fixtures import gguf_tensor_name  # noqa: E402

FILE_TYPES = {"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
              "Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1, "Q5_0": gguf.LlamaFileType.MOSTLY_Q5_0,
              "Q5_1": gguf.LlamaFileType.MOSTLY_Q5_1}  # fmt: skip
"""The block formats gguf-py can quantise, and the general.file_type of a file all in that format."""


def tensor_order(config: dict[str, object], state: dict[str, torch.Tensor]) -> list[str]:
    """llama.cpp's order for Qwen2: output (if untied), token_embd, each block's tensors by Hugging Face name, output_norm."""
    names = [] if "lm_head.weight" not in state else ["lm_head.weight"]
    names.append("model.embed_tokens.weight")
    for i in range(int(config["num_hidden_layers"])):  # type: ignore[call-overload]
        prefix = f"model.layers.{i}."
        names += sorted(n for n in state if n.startswith(prefix))  # input_layernorm, mlp.down_proj, ...
    return names + ["model.norm.weight"]


def copy_metadata(writer: gguf.GGUFWriter, template: gguf.GGUFReader, file_type: int) -> None:
    """Every key of the template but the reader's own (GGUF.*) and those GGUFWriter writes itself."""
    for key, field in template.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.alignment"):
            continue
        value = file_type if key == "general.file_type" else field.contents()
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub_type)


def write(model_dir: str, template: gguf.GGUFReader, type_name: str, out: str) -> str:
    config = json.load(open(os.path.join(model_dir, "config.json")))
    state = safetensors.torch.load_file(os.path.join(model_dir, "model.safetensors"))
    path = os.path.join(out, f"{os.path.basename(os.path.normpath(model_dir))}.{type_name}.gguf")
    writer = gguf.GGUFWriter(path, "qwen2")
    copy_metadata(writer, template, FILE_TYPES[type_name])
    qtype = Q[type_name]
    for hf in tensor_order(config, state):
        values = state[hf].to(torch.float32).numpy()
        if values.ndim == 2:
            writer.add_tensor(gguf_tensor_name(hf), gguf.quants.quantize(values, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_tensor_name(hf), np.ascontiguousarray(values))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("template")
    parser.add_argument("out")
    parser.add_argument("--types", nargs="+", default=["Q8_0", "Q4_0"], choices=sorted(FILE_TYPES))
    args = parser.parse_args()
    template = gguf.GGUFReader(args.template)
    os.makedirs(args.out, exist_ok=True)
    for type_name in args.types:
        path = write(args.model_dir, template, type_name, args.out)
        print(f"{path}: {os.path.getsize(path):,} bytes")


if __name__ == "__main__":
    main()
