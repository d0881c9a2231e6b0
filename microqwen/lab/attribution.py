"""Direct logit attribution: how much each component writes the target's logit, straight into the stream.

The residual stream at the last position is a sum: the embedding, then what each layer's attention
and MLP added (`microqwen.model`),

    h = embed + sum_i (o_proj_i(o_i) + mlp_i)      o_proj_i(o_i) = sum_H W_o,i[:, 64 H : 64 (H + 1)] o_i,H

(o_proj has no bias; the biases of q, k and v are already inside each head's output o_i,H). The
target's logit is a function of h through the final RMSNorm. With the norm's scale frozen at its
value for this h, s = 1 / sqrt(mean(h^2) + eps) (as TransformerLens does), the logit is linear in h:

    logit_target = W_U[target] . (norm.weight * h * s) = u . h,     u = W_U[target] * norm.weight * s

so it splits exactly into one term per component, u . (its output), and the terms add up to the
logit. A head's term is u . (W_o,H o_H); computing W_o (o with every other head zeroed) gives W_o,H o_H.
This is the *direct* effect only: what a component writes that later layers also read is not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

from ..errors import UsageError
from ..kernels import dot
from ..model import Qwen2ForCausalLM
from .components import head_name
from .runs import Runs, token_text


@dataclass
class Attribution:
    """The direct logit attribution of one target token at the last position.

    Attributes:
        target: the token id; `text` its text (None without a tokenizer).
        logit: its logit, as the model computed it.
        scale: the final norm's frozen scale s = 1 / sqrt(mean(h^2) + eps).
        contributions: `embed_tokens`, `layers.{i}.self_attn.head.{h}` and `layers.{i}.mlp` -> their term.
    """

    target: int
    text: Optional[str]
    logit: float
    scale: float
    contributions: Dict[str, float]

    @property
    def total(self) -> float:
        """The sum of the contributions, which equals the logit (to rounding)."""
        return math.fsum(self.contributions.values())


def attribute(model: Qwen2ForCausalLM, ids: Sequence[int], target: int) -> Attribution:
    """Direct logit attribution of `target` at the last position of `ids` (see the module docstring)."""
    config = model.config
    if not 0 <= target < config.vocab_size:
        raise UsageError(f"target token {target} is outside the vocabulary (0..{config.vocab_size - 1})")
    layers, heads, width = config.num_hidden_layers, config.num_attention_heads, config.head_dim
    last_layer = f"layers.{layers - 1}"
    points = ["embed_tokens", last_layer] + [f"layers.{i}.{p}" for i in range(layers)
                                             for p in ("self_attn.attn_output", "mlp.down_proj")]  # fmt: skip
    run = Runs(model, ids).run(keep=points)
    seen = run.points[len(ids) - 1]
    stream = seen[last_layer]  # [896], what the final norm reads
    scale = 1.0 / math.sqrt(dot(stream, stream) / len(stream) + model.norm.eps)
    head_row = model.weights.floats(model.lm_head.job.tensors[0], target * config.hidden_size, config.hidden_size)
    u = [w * g * scale for w, g in zip(head_row, model.norm.weight)]  # [896]
    contributions = {"embed_tokens": dot(u, seen["embed_tokens"])}
    for i, layer in enumerate(model.layers):
        o = seen[f"layers.{i}.self_attn.attn_output"]  # [896]: 14 heads x 64
        alone = [[v if h * width <= j < (h + 1) * width else 0.0 for j, v in enumerate(o)] for h in range(heads)]
        for h, written in enumerate(layer.self_attn.o_proj.tokens(alone)):  # W_o,H o_H: [896] each
            contributions[head_name(i, h)] = dot(u, written)
        contributions[f"layers.{i}.mlp"] = dot(u, seen[f"layers.{i}.mlp.down_proj"])
    return Attribution(target, token_text(model, target), run.logits[len(ids) - 1][target], scale, contributions)


def direct_logit_attribution(model: Qwen2ForCausalLM, ids: Sequence[int], target: int) -> Dict[str, float]:
    """`{"embed_tokens": x, "layers.{i}.self_attn.head.{h}": x, "layers.{i}.mlp": x}` for the last position of `ids`.

    Each x is the component's direct contribution to the logit of token `target` (the final norm's
    scale frozen); they add up to that logit. `attribute` returns the logit and the scale as well.
    """
    return attribute(model, ids, target).contributions


def format_attribution(result: Attribution, target: str, top: int = 20) -> str:
    """The `top` largest contributions (by size), their sum, and the logit they add up to."""
    ranked = sorted(result.contributions.items(), key=lambda item: -abs(item[1]))
    lines = [f"direct logit attribution of {target} at the last position (final norm scale frozen at {result.scale:.5f}):",
             f"  {'component':<28} {'contribution':>12}"]  # fmt: skip
    lines += [f"  {name:<28} {value:12.4f}" for name, value in ranked[:top]]
    if len(ranked) > top:
        rest = math.fsum(value for _, value in ranked[top:])
        lines.append(f"  {f'the other {len(ranked) - top}':<28} {rest:12.4f}")
    lines.append(f"  {'sum':<28} {result.total:12.4f}   (the logit of {target}: {result.logit:.4f})")
    return "\n".join(lines)
