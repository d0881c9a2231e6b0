"""Make the forward-pass fixtures: small random Qwen2 models, and what the reference computes for them.

    $REFPYTHON scripts/make_model_fixtures.py          # REFPYTHON: a Python with torch + transformers
    $REFPYTHON scripts/make_model_fixtures.py --out DIR --only gqa7-hd64-tied

For each model in MODELS this writes `tests/fixtures/models/<name>/`:

    config.json, generation_config.json, model.safetensors
        as `save_pretrained` writes them in bfloat16 (a tied model has no lm_head.weight). transformers 5
        writes the RoPE base as `"rope_parameters": {"rope_theta": ..., "rope_type": "default"}`; the
        Qwen2.5 hub file (transformers 4) has a top-level `"rope_theta"`. Models with `hub_layout` get the
        hub's form, the others keep transformers 5's, so microqwen.config is tested on both.
    reference.safetensors
        input_ids I64 [T], logits F32 [T, V] (one batched causal pass), every trace point F32 for every
        position (names are the Hugging Face module paths without `model.`, see `trace_point_names`),
        greedy_ids I64 [16] and greedy_logits F32 [16, V] (generate with the KV cache),
        rotary_emb.inv_freq F32 [head_dim / 2] (RoPE's frequencies, as the reference computes them),
        ablated_logits F32 [T, V] (the batched pass with head ABLATED's slice of o_proj's input set to
        zero by a PyTorch pre-hook), and a __metadata__ of versions, seeds, scales and the statistics below.
        For the models in LAB_MODELS also the lab's references (`lab_references`, all made with PyTorch
        hooks on the reference): ablations, activation patching, steering, direct logit attribution and
        planted bugs, each described in the metadata key `lab`.

How the reference is computed: random float32 weights are rounded to bfloat16 and saved; the saved
directory is then LOADED back with `from_pretrained(dir, dtype=torch.float32, attn_implementation="eager")`
and everything is computed from that model, so the reference reads the very files the tests read.

Why the scales matter: with tiny random weights every position looks alike, attention is nearly uniform
and the logits are nearly tied, so a wrong RoPE, causal mask or head mapping would hide under a 1e-3
tolerance. Each model's weight scales are chosen so that attention is peaked and logits are spread, and
the script measures that and refuses to write a model that is not:

    attention entropy   H / log(n) per (layer, head, query row) with n >= 4 visible positions
                        (1 = uniform, 0 = one-hot): mean and min
    peaked heads        fraction of (layer, head) whose weight exceeds 0.5 somewhere (same rows)
    logit margin        top-1 minus top-2 logit, per position: min and median (batched and greedy)

`trace_point_names`, `record_trace` and `generate_greedy` take any Qwen2ForCausalLM and prompt, so
another script (e.g. one that traces the real 1 GB model) can import and reuse them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import safetensors
import safetensors.torch
import torch
import transformers
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from microqwen.model import point_names  # noqa: E402  (stdlib only: importable here too)

DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "models")
GREEDY_TOKENS = 16

THRESHOLDS = {
    "attn_entropy_mean_max": 0.75,   # mean normalised entropy must stay below this (uniform = 1)
    "attn_entropy_min_max": 0.25,    # some row must be close to one-hot
    "peaked_heads_min": 0.5,         # at least half the heads put > 0.5 on one position somewhere
    "margin_median_min": 0.1,        # top-1 minus top-2 logit, median over positions
    "margin_min_min": 1e-3,          # ... and at every position (batched and greedy)
    "logit_abs_max": 100.0,          # logits stay in a sane range
}  # fmt: skip
"""What every fixture must satisfy (tests/test_fixtures.py checks the same numbers)."""


@dataclass
class Scales:
    """Weight scales: a linear layer's std is gain / sqrt(fan_in), so its output has std ~ gain."""

    embed_std: float = 0.2  # small next to the layers' outputs, or a tied model keeps predicting its input
    norm_mean: float = 1.0
    norm_std: float = 0.4
    final_norm_mean: float = 2.0  # tied logits: std ~ embed_std * sqrt(hidden) * final_norm_mean
    q_gain: float = 1.5
    k_gain: float = 1.5
    v_gain: float = 1.0
    o_gain: float = 1.0
    gate_gain: float = 1.0
    up_gain: float = 1.0
    down_gain: float = 1.0
    lm_head_gain: float = 4.0
    q_bias_std: float = 0.5
    k_bias_std: float = 0.5
    v_bias_std: float = 0.2


@dataclass
class FixtureModel:
    """One fixture: its name says what it covers; config keys go to Qwen2Config as they are."""

    name: str
    config: dict[str, Any]
    prompt_length: int
    weight_seed: int
    prompt_seed: int
    scales: Scales = field(default_factory=Scales)
    hub_layout: bool = True  # config.json with a top-level rope_theta, as the Qwen2.5 hub file


COMMON = {
    "vocab_size": 256,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "use_sliding_window": False,
    "bos_token_id": 254,
    "eos_token_id": 255,
}

MODELS = [
    FixtureModel(
        name="gqa7-hd64-tied",  # the real model's attention: 14 heads share 2 kv heads (n_rep 7), head_dim 64
        config=dict(COMMON, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=14,
                    num_key_value_heads=2, head_dim=64, rope_theta=1e6, tie_word_embeddings=True),
        prompt_length=20, weight_seed=1, prompt_seed=101, scales=Scales(embed_std=0.15, final_norm_mean=3.0),
    ),
    FixtureModel(
        name="gqa2-hd64-untied",  # n_rep 2, explicit head_dim 64 (not hidden/heads = 32), own lm_head
        config=dict(COMMON, hidden_size=128, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=64, rope_theta=1e6, tie_word_embeddings=False),
        prompt_length=24, weight_seed=2, prompt_seed=102, scales=Scales(final_norm_mean=1.0), hub_layout=False,
    ),
    FixtureModel(
        name="mha-hd16-theta1e4-tied",  # n_rep 1 (plain multi-head), head_dim 64/4 = 16 derived, rope_theta 1e4
        config=dict(COMMON, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=4, rope_theta=1e4, tie_word_embeddings=True),
        prompt_length=17, weight_seed=3, prompt_seed=103,
    ),
    FixtureModel(
        name="mqa-hd32-untied",  # multi-query attention: 2 heads share 1 kv head, head_dim 32 explicit, own lm_head
        config=dict(COMMON, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=32, rope_theta=1e6, tie_word_embeddings=False),
        prompt_length=16, weight_seed=4, prompt_seed=105, scales=Scales(final_norm_mean=1.0),
    ),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Weights


def init_weights(model: Qwen2ForCausalLM, scales: Scales, seed: int) -> None:
    """Draw every parameter from a seeded generator (in name order), then round it to bfloat16."""
    generator = torch.Generator().manual_seed(seed)
    final_norm = "model.norm.weight"
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator)
            if name == final_norm:
                param.copy_(scales.final_norm_mean + scales.norm_std * noise)
            elif name.endswith("layernorm.weight"):
                param.copy_(scales.norm_mean + scales.norm_std * noise)
            elif name == "model.embed_tokens.weight":
                param.copy_(scales.embed_std * noise)
            elif name.endswith(".bias"):
                param.copy_(getattr(scales, _role(name) + "_bias_std") * noise)
            else:
                gain = scales.lm_head_gain if name == "lm_head.weight" else getattr(scales, _role(name) + "_gain")
                param.copy_(gain / math.sqrt(param.shape[1]) * noise)
            param.copy_(param.to(torch.bfloat16).to(torch.float32))


def _role(name: str) -> str:
    """'model.layers.0.self_attn.q_proj.weight' -> 'q'."""
    return name.split(".")[-2].replace("_proj", "")


def save_model(model: Qwen2ForCausalLM, directory: str, hub_layout: bool) -> None:
    """save_pretrained in bfloat16; with hub_layout, put rope_theta at the top level of config.json."""
    model.to(torch.bfloat16).save_pretrained(directory)
    if not hub_layout:
        return
    path = os.path.join(directory, "config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    rope = config.pop("rope_parameters")
    if set(rope) != {"rope_theta", "rope_type"} or rope["rope_type"] != "default":
        raise SystemExit(f"{path}: unexpected rope_parameters {rope}")
    config["rope_theta"] = rope["rope_theta"]
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_model(directory: str) -> Qwen2ForCausalLM:
    """The reference as the tests see it: float32 compute over the saved bf16 weights, eager attention."""
    model = Qwen2ForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def check_loaded(model: Qwen2ForCausalLM, fixture: FixtureModel) -> None:
    """transformers must honour head_dim and rope_theta as configured (not hidden/heads, not a default)."""
    config = model.config
    head_dim = fixture.config.get("head_dim", config.hidden_size // config.num_attention_heads)
    attention = model.model.layers[0].self_attn
    assert attention.head_dim == head_dim, (attention.head_dim, head_dim)
    assert attention.q_proj.out_features == config.num_attention_heads * head_dim
    assert model.model.rotary_emb.inv_freq.numel() == head_dim // 2
    assert config.rope_parameters == {"rope_theta": fixture.config["rope_theta"], "rope_type": "default"}
    assert config._attn_implementation == "eager"
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tied == fixture.config["tie_word_embeddings"]


# ---------------------------------------------------------------------------------------------------
# Trace points (reusable for any Qwen2ForCausalLM)

DERIVED_POINTS = ("self_attn.rope_q", "self_attn.rope_k", "self_attn.attn_weights", "self_attn.attn_output")
"""Points that are not a module's output: computed in a hook on self_attn, or o_proj's input."""

ABLATED = (1, 1)
"""(layer, head) whose slice of attn_output the `ablated_logits` pass sets to zero."""


def trace_point_names(num_hidden_layers: int) -> list[str]:
    """Every trace point, in forward order (microqwen's names), but `logits`, which is stored on its own."""
    return point_names(num_hidden_layers)[:-1]


def trace_shapes(config: Qwen2Config, length: int) -> dict[str, tuple[int, ...]]:
    """The shape of each trace point for a prompt of `length` tokens."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    widths = {
        "self_attn.q_proj": config.num_attention_heads * head_dim,
        "self_attn.rope_q": config.num_attention_heads * head_dim,
        "self_attn.k_proj": config.num_key_value_heads * head_dim,
        "self_attn.rope_k": config.num_key_value_heads * head_dim,
        "self_attn.v_proj": config.num_key_value_heads * head_dim,
        "self_attn.attn_output": config.num_attention_heads * head_dim,
        "mlp.gate_proj": config.intermediate_size,
        "mlp.up_proj": config.intermediate_size,
    }
    shapes = {}
    for name in trace_point_names(config.num_hidden_layers):
        point = name.split(".", 2)[2] if name.count(".") >= 2 else ""
        if point == "self_attn.attn_weights":
            shapes[name] = (config.num_attention_heads, length, length)
        else:
            shapes[name] = (length, widths.get(point, config.hidden_size))
    return shapes


def record_trace(model: Qwen2ForCausalLM, input_ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One batched causal forward over `input_ids` [T]: the logits [T, V] and every trace point.

    Module outputs are caught with forward hooks (the decoder layer's own output for `layers.{i}`,
    not output_hidden_states, whose last entry is after the final norm). A hook on each self_attn
    module rotates the caught q_proj/k_proj outputs with transformers' `apply_rotary_pos_emb` and the
    cos/sin that the model passed in, and keeps the eager softmax probabilities that self_attn returns;
    a pre-hook on o_proj keeps its input, the heads' outputs concatenated (`attn_output`).
    """
    config = model.config
    names = trace_point_names(config.num_hidden_layers)
    trace: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            if name.endswith(DERIVED_POINTS):
                continue
            module = model.model.get_submodule(name)
            handles.append(module.register_forward_hook(_keep_output(trace, name)))
        for i, layer in enumerate(model.model.layers):
            hook = _keep_attention(trace, f"layers.{i}.self_attn", layer.self_attn.head_dim)
            handles.append(layer.self_attn.register_forward_hook(hook, with_kwargs=True))
            keep_input = _keep_input(trace, f"layers.{i}.self_attn.attn_output")
            handles.append(layer.self_attn.o_proj.register_forward_pre_hook(keep_input))
        with torch.no_grad():
            logits = model(input_ids[None], use_cache=False).logits[0]
    finally:
        for handle in handles:
            handle.remove()
    return logits, {name: trace[name] for name in names}


def _keep_output(trace: dict[str, torch.Tensor], name: str) -> Any:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        tensor = output[0] if isinstance(output, tuple) else output
        trace[name] = tensor[0].detach().clone()  # drop the batch dimension: [T, width]

    return hook


def _keep_input(trace: dict[str, torch.Tensor], name: str) -> Any:
    def hook(module: torch.nn.Module, args: Any) -> None:
        trace[name] = args[0][0].detach().clone()  # [T, heads * head_dim]

    return hook


def ablated_logits(model: Qwen2ForCausalLM, input_ids: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    """The logits [T, V] of a batched pass with one head's output set to zero: its columns of o_proj's
    input (a forward pre-hook replacing the input, as interpretability tools ablate a head)."""
    head_dim = model.model.layers[layer].self_attn.head_dim

    def zero_head(module: torch.nn.Module, args: Any) -> Any:
        heads = args[0].clone()
        heads[..., head * head_dim : (head + 1) * head_dim] = 0.0
        return (heads,)

    handle = model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(zero_head)
    try:
        with torch.no_grad():
            return model(input_ids[None], use_cache=False).logits[0]
    finally:
        handle.remove()


def _keep_attention(trace: dict[str, torch.Tensor], prefix: str, head_dim: int) -> Any:
    def hook(module: torch.nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        cos, sin = kwargs["position_embeddings"]
        q = trace[f"{prefix}.q_proj"]  # [T, heads * head_dim]
        k = trace[f"{prefix}.k_proj"]  # [T, kv_heads * head_dim]
        length = q.shape[0]
        q_heads = q.view(1, length, -1, head_dim).transpose(1, 2)  # [1, heads, T, head_dim]
        k_heads = k.view(1, length, -1, head_dim).transpose(1, 2)  # [1, kv_heads, T, head_dim]
        q_rot, k_rot = apply_rotary_pos_emb(q_heads, k_heads, cos, sin)
        trace[f"{prefix}.rope_q"] = q_rot[0].transpose(0, 1).reshape(length, -1).clone()  # heads in order
        trace[f"{prefix}.rope_k"] = k_rot[0].transpose(0, 1).reshape(length, -1).clone()
        trace[f"{prefix}.attn_weights"] = output[1][0].detach().clone()  # [heads, T, T]

    return hook


def generate_greedy(model: Qwen2ForCausalLM, input_ids: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `count` greedy tokens with the KV cache (fewer if an eos stops it): the new ids [n] and
    the raw logits that chose them [n, V] (checked to be what argmax saw: no logits processor ran).
    """
    eos = model.config.eos_token_id
    settings = GenerationConfig(do_sample=False, max_new_tokens=count, eos_token_id=eos, pad_token_id=eos)
    with torch.no_grad():
        out = model.generate(
            input_ids[None], generation_config=settings, output_logits=True, output_scores=True,
            return_dict_in_generate=True, use_cache=True,
        )  # fmt: skip
    new_ids = out.sequences[0, input_ids.numel() :]
    logits = torch.stack(out.logits)[:, 0, :]
    assert torch.equal(torch.stack(out.scores)[:, 0, :], logits), "a logits processor changed the greedy scores"
    assert torch.equal(logits.argmax(-1), new_ids)
    return new_ids, logits


# ---------------------------------------------------------------------------------------------------
# Statistics


def attention_stats(trace: dict[str, torch.Tensor], num_hidden_layers: int) -> dict[str, float]:
    """Normalised entropy over rows with >= 4 visible positions, and the fraction of peaked heads."""
    entropies, peaked, heads = [], 0, 0
    for i in range(num_hidden_layers):
        weights = trace[f"layers.{i}.self_attn.attn_weights"]  # [heads, T, T]
        rows = weights[:, 3:, :]  # query t sees t + 1 positions: keep t >= 3
        visible = torch.arange(4, weights.shape[1] + 1, dtype=torch.float64)
        p = rows.double()
        entropy = -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(-1)  # [heads, T-3]
        entropies.append(entropy / torch.log(visible))
        peaked += int((rows.amax(dim=(1, 2)) > 0.5).sum())
        heads += weights.shape[0]
    normalised = torch.cat([e.flatten() for e in entropies])
    return {
        "attn_entropy_mean": float(normalised.mean()),
        "attn_entropy_min": float(normalised.min()),
        "peaked_heads": peaked / heads,
    }


def margin_stats(logits: torch.Tensor, prefix: str) -> dict[str, float]:
    """Top-1 minus top-2 logit at each row of [N, V]: min and median, and the largest |logit|."""
    top2 = logits.topk(2, dim=-1).values
    margins = top2[:, 0] - top2[:, 1]
    return {
        f"{prefix}_margin_min": float(margins.min()),
        f"{prefix}_margin_median": float(margins.quantile(0.5)),  # the mean of the middle two if even
        f"{prefix}_abs_max": float(logits.abs().max()),
    }


def check_thresholds(name: str, stats: dict[str, float]) -> None:
    failures = []
    if not stats["attn_entropy_mean"] < THRESHOLDS["attn_entropy_mean_max"]:
        failures.append("attention too uniform on average")
    if not stats["attn_entropy_min"] < THRESHOLDS["attn_entropy_min_max"]:
        failures.append("no attention row is close to one-hot")
    if not stats["peaked_heads"] >= THRESHOLDS["peaked_heads_min"]:
        failures.append("too few peaked heads")
    for prefix in ("logits", "greedy_logits"):
        if not stats[f"{prefix}_margin_min"] > THRESHOLDS["margin_min_min"]:
            failures.append(f"{prefix}: a top-1/top-2 margin is under {THRESHOLDS['margin_min_min']}")
        if not stats[f"{prefix}_abs_max"] < THRESHOLDS["logit_abs_max"]:
            failures.append(f"{prefix}: |logit| reaches {stats[f'{prefix}_abs_max']:.1f}")
    if not stats["logits_margin_median"] > THRESHOLDS["margin_median_min"]:
        failures.append("median logit margin too small")
    if failures:
        raise SystemExit(f"{name}: {'; '.join(failures)}: {stats}")


def check_consistency(model: Qwen2ForCausalLM, trace: dict[str, torch.Tensor], input_ids: torch.Tensor,
                      greedy_ids: torch.Tensor, greedy_logits: torch.Tensor) -> dict[str, float]:
    """Cross-checks of the reference against itself, recorded in the metadata.

    rope_vs_attn: softmax(rope_q . rope_k / sqrt(head_dim), causal) recomputed from the traced rotated
    q and k, against the traced attention weights (so rope_q/rope_k are what attention used).
    cache_vs_full: greedy_logits (KV cache, one token at a time) against one batched pass over the
    prompt and the greedy tokens.
    """
    config = model.config
    head_dim = model.model.layers[0].self_attn.head_dim
    n_rep = config.num_attention_heads // config.num_key_value_heads
    length = input_ids.numel()
    mask = torch.full((length, length), float("-inf")).triu(1)
    worst = 0.0
    for i in range(config.num_hidden_layers):
        q = trace[f"layers.{i}.self_attn.rope_q"].view(length, -1, head_dim).transpose(0, 1)  # [heads, T, d]
        k = trace[f"layers.{i}.self_attn.rope_k"].view(length, -1, head_dim).transpose(0, 1)  # [kv, T, d]
        k = k.repeat_interleave(n_rep, dim=0)  # query head j reads kv head j // n_rep
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(head_dim) + mask, dim=-1)
        worst = max(worst, float((weights - trace[f"layers.{i}.self_attn.attn_weights"]).abs().max()))
    full = torch.cat([input_ids, greedy_ids[:-1]])
    with torch.no_grad():
        full_logits = model(full[None], use_cache=False).logits[0, length - 1 :]
    return {"check_rope_vs_attn_max_abs_diff": worst,
            "check_cache_vs_full_max_abs_diff": float((full_logits - greedy_logits).abs().max())}


# ---------------------------------------------------------------------------------------------------
# Sensitivity: how far classic bugs move the logits (each must be far above the tests' tolerance)


def bug_sensitivity(model: Qwen2ForCausalLM, input_ids: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
    """max |logits| difference between the reference and the reference with one bug planted."""
    config = model.config
    head_dim = model.model.layers[0].self_attn.head_dim
    theta = config.rope_parameters["rope_theta"]
    bugs: dict[str, Callable[[], Any]] = {
        "rope_theta_swapped": lambda: _patched(model.model.rotary_emb, "inv_freq",
                                               _inv_freq(1e4 if theta != 1e4 else 1e6, head_dim)),
        "rope_interleaved": lambda: _patched(modeling_qwen2, "apply_rotary_pos_emb", _interleaved_rope),
        "no_causal_mask": lambda: _patched(modeling_qwen2, "create_causal_mask", lambda **kwargs: None),
    }  # fmt: skip
    if config.num_attention_heads != config.num_key_value_heads:
        bugs["kv_heads_tiled"] = lambda: _patched(modeling_qwen2, "repeat_kv", _tiled_kv)
    diffs = {}
    for name, plant in bugs.items():
        with plant(), torch.no_grad():
            wrong = model(input_ids[None], use_cache=False)
        diffs[f"bug_{name}_max_abs_logit_diff"] = float((wrong.logits[0] - logits).abs().max())
    return diffs


@contextlib.contextmanager
def _patched(owner: Any, attribute: str, value: Any) -> Iterator[None]:
    saved = getattr(owner, attribute)
    setattr(owner, attribute, value)
    try:
        yield
    finally:
        setattr(owner, attribute, saved)


def _inv_freq(theta: float, head_dim: int) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))


def _interleaved_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The original paper's RoPE (pairs 2i, 2i+1), the classic mistake for Qwen's rotate-half."""
    half = cos.shape[-1] // 2
    cos = cos[..., :half].repeat_interleave(2, dim=-1).unsqueeze(unsqueeze_dim)
    sin = sin[..., :half].repeat_interleave(2, dim=-1).unsqueeze(unsqueeze_dim)

    def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
        return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)

    return q * cos + rotate_pairs(q) * sin, k * cos + rotate_pairs(k) * sin


def _tiled_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Query head j reads kv head j % kv_heads (the wrong GQA mapping) instead of j // n_rep."""
    return hidden_states.repeat(1, n_rep, 1, 1)


# ---------------------------------------------------------------------------------------------------
# The lab's references: interventions made with PyTorch hooks (microqwen.lab must agree with them)

LAB_MODELS = ("gqa7-hd64-tied", "gqa2-hd64-untied", "mqa-hd32-untied")
"""The fixtures that carry the lab's references: GQA (n_rep 7, tied), untied, and multi-query (one kv head)."""

MEAN_HEAD = (1, 1)  # layer, head: mean-ablated
ZERO_ATTENTION = 0  # layer whose whole attention output is zeroed
MEAN_MLP = 2  # layer whose MLP output is replaced by its mean over the positions
ZERO_MLP_AT = (1, (3, 7))  # layer whose MLP output is zeroed at these positions only
STEER = (1, 4.0, 8)  # layer, scale, greedy tokens generated with the vector added
NO_MASK_TOKENS = 8  # the unmasked pass runs over the prompt's first tokens: one prefill block of microqwen


def _replace_output(change: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """A forward hook that replaces a module's output (the first element of a tuple) by change(output)."""
    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (change(output[0]),) + output[1:]
        return change(output)

    return hook


def _hooked(modules_and_hooks: list[tuple[torch.nn.Module, Any, bool]]) -> Any:
    """A context in which each (module, hook, pre) is registered (pre: a forward pre-hook)."""
    @contextlib.contextmanager
    def context() -> Iterator[None]:
        handles = [m.register_forward_pre_hook(h) if pre else m.register_forward_hook(h) for m, h, pre in modules_and_hooks]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    return context()


def _logits(model: Qwen2ForCausalLM, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids[None], use_cache=False).logits[0]


def _set_positions(positions: tuple[int, ...] | None, value: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """change(x): x [1, T, width] with `value` ([width], or [T, width]) written at `positions` (None: all)."""
    def change(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        chosen = list(range(x.shape[1])) if positions is None else list(positions)
        x[0, chosen] = value if value.dim() == 1 else value[chosen]
        return x

    return change


def corrupted_prompt(model: Qwen2ForCausalLM, input_ids: torch.Tensor, seed: int) -> tuple[torch.Tensor, int]:
    """The prompt with one token (in the middle) replaced by a seeded random one that changes the top next token."""
    generator = torch.Generator().manual_seed(seed)
    where = input_ids.numel() // 2
    clean_top = int(_logits(model, input_ids)[-1].argmax())
    for _ in range(100):
        corrupted = input_ids.clone()
        corrupted[where] = int(torch.randint(0, model.config.vocab_size - 2, (1,), generator=generator))
        if corrupted[where] != input_ids[where] and int(_logits(model, corrupted)[-1].argmax()) != clean_top:
            return corrupted, where
    raise SystemExit("no corruption of the middle token changes the top next token")


def lab_references(model: Qwen2ForCausalLM, input_ids: torch.Tensor, trace: dict[str, torch.Tensor],
                   seed: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:  # fmt: skip
    """The logits of ablations, patches, steering and planted bugs, and the DLA terms, by PyTorch hooks.

    Returns the tensors and a description of each (the metadata key `lab`).
    """
    layers = model.model.layers
    head_dim = layers[0].self_attn.head_dim
    length = input_ids.numel()
    tensors: dict[str, torch.Tensor] = {}
    about: dict[str, str] = {}

    def keep(name: str, value: torch.Tensor, text: str) -> None:
        tensors[name], about[name] = value.contiguous(), text

    # ablation: the logits after the last position [V]
    layer, head = MEAN_HEAD
    cols = slice(head * head_dim, (head + 1) * head_dim)
    mean = trace[f"layers.{layer}.self_attn.attn_output"].mean(0)  # [heads * head_dim]

    def mean_head(module: torch.nn.Module, args: Any) -> Any:
        heads = args[0].clone()
        heads[..., cols] = mean[cols]
        return (heads,)

    with _hooked([(layers[layer].self_attn.o_proj, mean_head, True)]):
        keep(f"ablate.mean.layers.{layer}.self_attn.head.{head}", _logits(model, input_ids)[-1],
             "head's slice of o_proj's input set to its mean over the prompt's positions, at every position")
    zero = _replace_output(lambda x: torch.zeros_like(x))
    with _hooked([(layers[ZERO_ATTENTION].self_attn.o_proj, zero, False)]):
        keep(f"ablate.zero.layers.{ZERO_ATTENTION}.self_attn", _logits(model, input_ids)[-1],
             "o_proj's output set to 0 at every position")
    mlp_mean = trace[f"layers.{MEAN_MLP}.mlp.down_proj"].mean(0)
    with _hooked([(layers[MEAN_MLP].mlp, _replace_output(_set_positions(None, mlp_mean)), False)]):
        keep(f"ablate.mean.layers.{MEAN_MLP}.mlp", _logits(model, input_ids)[-1],
             "the MLP's output set to its mean over the prompt's positions, at every position")
    layer, positions = ZERO_MLP_AT
    blank = torch.zeros(model.config.hidden_size)
    with _hooked([(layers[layer].mlp, _replace_output(_set_positions(positions, blank)), False)]):
        keep(f"ablate.zero.layers.{layer}.mlp@{','.join(map(str, positions))}", _logits(model, input_ids)[-1],
             "the MLP's output set to 0 at those positions only")

    # activation patching: the clean prompt's values put into the corrupted prompt's run
    corrupted, where = corrupted_prompt(model, input_ids, seed)
    keep("patch.corrupted_ids", corrupted, f"the prompt with position {where} replaced (seeded)")
    keep("patch.corrupted_logits", _logits(model, corrupted)[-1], "the corrupted prompt's logits after its last position")
    last_layer = len(layers) - 1
    for layer, pos in ((0, where), (1, where), (1, length - 1), (last_layer, length - 1)):
        value = trace[f"layers.{layer}"][pos]
        with _hooked([(layers[layer], _replace_output(_set_positions((pos,), value)), False)]):
            keep(f"patch.layers.{layer}@{pos}", _logits(model, corrupted)[-1],
                 "the corrupted run with the clean residual stream after that layer at that position")
    layer, head = ABLATED
    cols = slice(head * head_dim, (head + 1) * head_dim)
    clean_heads = trace[f"layers.{layer}.self_attn.attn_output"]  # [T, heads * head_dim]

    def patch_head(module: torch.nn.Module, args: Any) -> Any:
        heads = args[0].clone()
        heads[0, :, cols] = clean_heads[:, cols]
        return (heads,)

    with _hooked([(layers[layer].self_attn.o_proj, patch_head, True)]):
        keep(f"patch.layers.{layer}.self_attn.head.{head}", _logits(model, corrupted)[-1],
             "the corrupted run with the clean head's slice of o_proj's input at every position")

    # steering: a seeded vector added to the residual stream after a layer, at every position
    layer, scale, count = STEER
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(seed + 1))
    keep("steer.vector", vector, f"the vector; added x {scale} after layer {layer}")
    add = _replace_output(lambda x: x + scale * vector)
    with _hooked([(layers[layer], add, False)]):
        keep("steer.logits", _logits(model, input_ids), "the logits with the vector added, every position [T, V]")
        greedy, _ = generate_greedy(model, input_ids, count)
        keep("steer.greedy_ids", greedy, f"{count} greedy tokens with the vector added at every position (KV cache)")
    plus, minus = input_ids[:5], input_ids[5:9]
    difference = _logits_and_stream(model, plus, layer) - _logits_and_stream(model, minus, layer)
    keep("steer.difference", difference, f"the stream after layer {layer} at the last token: prompt[:5] minus prompt[5:9]")

    # direct logit attribution of the top next token at the last position, in float64 from the traced values
    target = int(_logits(model, input_ids)[-1].argmax())
    h = trace[f"layers.{last_layer}"][-1].double()
    norm = model.model.norm
    s = torch.rsqrt(h.pow(2).mean() + norm.variance_epsilon)
    u = model.lm_head.weight[target].double() * norm.weight.double() * s
    terms = [u @ trace["embed_tokens"][-1].double()]
    for i, decoder in enumerate(layers):
        w_o = decoder.self_attn.o_proj.weight.double()  # [hidden, heads * head_dim]
        o = trace[f"layers.{i}.self_attn.attn_output"][-1].double()
        for h_ in range(model.config.num_attention_heads):
            cols = slice(h_ * head_dim, (h_ + 1) * head_dim)
            terms.append(u @ (w_o[:, cols] @ o[cols]))
        terms.append(u @ trace[f"layers.{i}.mlp.down_proj"][-1].double())
    contributions = torch.stack(terms).float()
    logit = _logits(model, input_ids)[-1, target]
    assert abs(float(contributions.double().sum()) - float(logit)) < 1e-4, "the DLA terms must add up to the logit"
    keep("dla.target", torch.tensor([target]), "the top next token at the last position")
    keep("dla.contributions", contributions, "embed_tokens, then per layer: head 0..H-1, then the MLP")

    # planted bugs: the reference with the same bug
    theta = model.config.rope_parameters["rope_theta"]
    bugs: dict[str, tuple[Callable[[], Any], torch.Tensor]] = {
        "rope-theta-1e4": (lambda: _patched(model.model.rotary_emb, "inv_freq", _inv_freq(1e4, head_dim)), input_ids),
        "interleaved-rope": (lambda: _patched(modeling_qwen2, "apply_rotary_pos_emb", _interleaved_rope), input_ids),
        "scores-times-sqrt-d": (lambda: _all_patched([(a.self_attn, "scaling", head_dim**0.5) for a in layers]),
                                input_ids),
        "rmsnorm-no-eps": (lambda: _all_patched([(n, "variance_epsilon", 0.0) for n in _norms(model)]), input_ids),
        "no-causal-mask": (lambda: _patched(modeling_qwen2, "create_causal_mask", lambda **kwargs: None),
                           input_ids[:NO_MASK_TOKENS]),
    }  # fmt: skip
    assert theta != 1e4, "rope-theta-1e4 needs a model whose theta is not 1e4"
    for name, (plant, ids) in bugs.items():
        with plant():
            keep(f"mutated.{name}", _logits(model, ids), f"the logits with the bug planted, every position of {len(ids)}")
    with bugs["scores-times-sqrt-d"][0]():  # it sharpens attention 64-fold in the exponent: float32 noise grows,
        _, bugged = record_trace(model, input_ids)  # so the attention where it starts is kept too
    keep("mutated.scores-times-sqrt-d.layer_0_attention", bugged["layers.0.self_attn.attn_weights"],
         "layer 0's attention weights with the bug planted [heads, T, T]")
    return tensors, about


def _logits_and_stream(model: Qwen2ForCausalLM, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
    """The residual stream after `layer` at the last token [hidden]."""
    _, trace = record_trace(model, input_ids)
    return trace[f"layers.{layer}"][-1]


def _norms(model: Qwen2ForCausalLM) -> list[torch.nn.Module]:
    return [m for layer in model.model.layers for m in (layer.input_layernorm, layer.post_attention_layernorm)] + [
        model.model.norm]


@contextlib.contextmanager
def _all_patched(settings: list[tuple[Any, str, Any]]) -> Iterator[None]:
    saved = [(owner, attribute, getattr(owner, attribute)) for owner, attribute, _ in settings]
    for owner, attribute, value in settings:
        setattr(owner, attribute, value)
    try:
        yield
    finally:
        for owner, attribute, value in saved:
            setattr(owner, attribute, value)


# ---------------------------------------------------------------------------------------------------
# One fixture


def make_fixture(fixture: FixtureModel, out_dir: str) -> dict[str, float]:
    directory = os.path.join(out_dir, fixture.name)
    if os.path.exists(directory):
        shutil.rmtree(directory)
    torch.manual_seed(fixture.weight_seed)  # nothing should draw from it, but make sure it is fixed
    model = Qwen2ForCausalLM(Qwen2Config(**fixture.config))
    init_weights(model, fixture.scales, fixture.weight_seed)
    save_model(model, directory, fixture.hub_layout)
    model = load_model(directory)
    check_loaded(model, fixture)

    generator = torch.Generator().manual_seed(fixture.prompt_seed)
    input_ids = torch.randint(0, fixture.config["vocab_size"] - 2, (fixture.prompt_length,), generator=generator)
    logits, trace = record_trace(model, input_ids)
    greedy_ids, greedy_logits = generate_greedy(model, input_ids, GREEDY_TOKENS)
    eos = fixture.config["eos_token_id"]
    if greedy_ids.numel() != GREEDY_TOKENS or eos in greedy_ids.tolist():
        raise SystemExit(f"{fixture.name}: greedy continuation {greedy_ids.tolist()} meets eos {eos}: "
                         "a caller comparing 16 tokens would stop there; choose another prompt seed")

    stats = attention_stats(trace, model.config.num_hidden_layers)
    stats.update(margin_stats(logits, "logits"))
    stats.update(margin_stats(greedy_logits, "greedy_logits"))
    check_thresholds(fixture.name, stats)
    checks = check_consistency(model, trace, input_ids, greedy_ids, greedy_logits)
    assert max(checks.values()) < 1e-4, checks
    bugs = bug_sensitivity(model, input_ids, logits)
    ablated = ablated_logits(model, input_ids, *ABLATED)
    checks["ablation_max_logit_change"] = float((ablated - logits).abs().max())
    assert checks["ablation_max_logit_change"] > 0.01, f"{fixture.name}: zeroing head {ABLATED} changes nothing"

    tensors = {"input_ids": input_ids, "logits": logits, "greedy_ids": greedy_ids, "greedy_logits": greedy_logits,
               "rotary_emb.inv_freq": model.model.rotary_emb.inv_freq, "ablated_logits": ablated}  # fmt: skip
    tensors.update(trace)
    for name, shape in trace_shapes(model.config, fixture.prompt_length).items():
        assert tuple(tensors[name].shape) == shape, (name, tuple(tensors[name].shape), shape)
    about: dict[str, str] = {}
    if fixture.name in LAB_MODELS:
        lab, about = lab_references(model, input_ids, trace, fixture.prompt_seed + 1000)
        tensors.update(lab)
    assert all(torch.isfinite(t.float()).all() for t in tensors.values()), f"{fixture.name}: non-finite values"
    metadata = _metadata(fixture, stats, dict(checks, **bugs))
    if about:
        metadata["lab"] = json.dumps(about, sort_keys=True)
    write_reference(os.path.join(directory, "reference.safetensors"), tensors, metadata)
    return dict(stats, **checks, **bugs)


def write_reference(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """safetensors.torch.save_file, then the metadata keys sorted in place for byte-identical reruns.

    The safetensors package serialises __metadata__ from a hash map, so its key order changes from
    run to run; sorting it keeps the header the same length and the same JSON.
    """
    safetensors.torch.save_file({name: t.contiguous() for name, t in tensors.items()}, path, metadata)
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":")).encode("utf-8").ljust(size)
        assert len(text) == size, (len(text), size)
        f.seek(8)
        f.write(text)


def _metadata(fixture: FixtureModel, stats: dict[str, float], checks: dict[str, float]) -> dict[str, str]:
    """All values strings, as the safetensors format requires."""
    metadata = {
        "generator": "scripts/make_model_fixtures.py",
        "model": fixture.name,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "safetensors_version": safetensors.__version__,
        "python_version": platform.python_version(),
        "compute": "float32 over bfloat16 weights, attn_implementation=eager, torch.set_num_threads(1)",
        "weight_seed": str(fixture.weight_seed),
        "prompt_seed": str(fixture.prompt_seed),
        "prompt": f"torch.randint(0, vocab_size - 2, ({fixture.prompt_length},), "
                  "generator=torch.Generator().manual_seed(prompt_seed))",
        "scales": json.dumps(vars(fixture.scales), sort_keys=True),
        "greedy": f"generate(do_sample=False, max_new_tokens={GREEDY_TOKENS}, use_cache=True), output_logits",
        "ablated": f"layers.{ABLATED[0]}.self_attn.head.{ABLATED[1]}: its slice of o_proj's input set to 0",
        "thresholds": json.dumps(THRESHOLDS, sort_keys=True),
    }
    metadata.update({key: repr(value) for key, value in stats.items()})
    metadata.update({key: f"{value:.3g}" for key, value in checks.items()})
    return metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--only", action="append", help="make only this model (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # same reduction order on every run, whatever the machine
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(args.out, exist_ok=True)
    for fixture in MODELS:
        if args.only and fixture.name not in args.only:
            continue
        stats = make_fixture(fixture, args.out)
        print(f"{fixture.name}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
