"""What the explorer page shows, computed with the model's hooks: one function per view.

The page at `/` of `microqwen serve` (`microqwen/static/`) asks the server for these, as JSON:

- `Explorer.run(ids)`: the tokens, and at every position the top next tokens (softmax of the
  logits), every head's attention weights in every layer (`layers.{i}.self_attn.attn_weights`,
  [14, pos + 1]) and the RMS of the residual stream after each layer; positions already computed
  for the same prefix are kept (stepping one token computes one position);
- `Explorer.lens(ids, pos)`: the logit lens at one position (`microqwen.trace.logit_lens`);
- `Explorer.distribution(ids, params)`: the next-token distribution before and after the
  sampler's temperature, top-k, top-p and min-p (`microqwen.sampling.Sampler.distribution`);
- `ablate_head(model, ids, layer, head)`: the next-token distribution with one head's output
  zeroed (its slice of `layers.{layer}.self_attn.attn_output`) at every position, against the
  plain one, and the KL divergence between them (the lab's ablation hook, `microqwen.lab.ablation`);
- `patch_residual(model, clean, corrupt)`: activation patching (`microqwen.lab.patching`): the
  clean prompt's residual stream at one position put into the corrupted prompt's run, for every
  layer and position, and how much of the clean answer that restores.

`SOURCES` says, for each kind of value the page shows, where it comes from: the trace point, its
shape, the function and line that computed it (found with `inspect`), and the docs pages.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import model as model_module, sampling, trace
from .errors import UsageError
from .promptcache import common_prefix
from .distribution import kl_divergence, log_softmax
from .lab import ablation, patching
from .model import Qwen2ForCausalLM, softmax
from .sampling import Sampler, SamplingParams
from .trace import Candidate, Recorder, token_pieces

TOP_K = 10
"""Next-token candidates per position."""

DIGITS = 4
"""Attention weights and probabilities are rounded to this many decimals on the way to the page."""

MEMORY = 256
"""Positions kept for reuse (each with its 25 residual streams of 896 floats for the lens: ~180 KB)."""

Alive = Callable[[], bool]
"""Is the page still waiting for the answer? A long experiment stops when it is not."""


class Stopped(Exception):
    """The page went away in the middle of an experiment."""


@dataclass
class Position:
    """One position's record: the candidates, the attention `[layers][heads][pos + 1]`, the residual streams."""

    top: list[Candidate]
    attn: list[list[list[float]]]
    residuals: list[array[float]]  # embed_tokens, then each layers.{i}: [1 + layers] x [896]
    rms: list[float]


def _rms(values: Sequence[float]) -> float:
    return math.sqrt(math.fsum(v * v for v in values) / len(values))


class Explorer:
    """The explorer's views over one model; every method runs on the thread that owns the model.

    `cached` is the list of ids whose positions the model's KV cache holds (the server keeps it,
    since completions use the same cache): `run` continues from the longest prefix of `ids` that
    both the cache and the memory of computed positions hold.
    """

    def __init__(self, model: Qwen2ForCausalLM) -> None:
        self.model = model
        self.pieces = token_pieces(model.tokenizer)
        self.memory: OrderedDict[tuple[int, ...], Position] = OrderedDict()
        self.last_logits: OrderedDict[tuple[int, ...], list[float]] = OrderedDict()  # a few, 151936 floats each
        n_layers = model.config.num_hidden_layers
        self.streams = ["embed_tokens"] + [f"layers.{i}" for i in range(n_layers)]
        self.wanted = set(self.streams) | {f"layers.{i}.self_attn.attn_weights" for i in range(n_layers)}

    def info(self) -> dict[str, Any]:
        """The model's shape, for the page to lay itself out."""
        c = self.model.config
        return {"layers": c.num_hidden_layers, "heads": c.num_attention_heads, "kv_heads": c.num_key_value_heads,
                "head_dim": c.head_dim, "hidden": c.hidden_size, "intermediate": c.intermediate_size,
                "vocab": c.vocab_size, "max_context": self.model.max_context, "top_k": TOP_K,
                "sampling": _params_json(self.model.sampling or SamplingParams(temperature=0.0)),
                "sources": sources()}  # fmt: skip

    def text(self, token: int) -> str:
        """A token's text, or #id without a tokenizer."""
        piece = self.pieces(token)
        return f"#{token}" if piece is None else piece

    # ------------------------------------------------------------ tokens, candidates, attention, norms

    def run(self, ids: Sequence[int], cached: list[int], start: int = 0) -> tuple[dict[str, Any], list[int]]:
        """Every position of `ids` (from `start` on in the answer); and what the cache holds afterwards."""
        self._check(ids)
        key = tuple(ids)
        known = next((p for p in range(len(ids)) if key[: p + 1] not in self.memory), len(ids))
        if known == len(ids) and key not in self.last_logits:
            known -= 1  # the last position's logits are needed again: run it once more
        keep = min(known, common_prefix(cached, ids))
        self.model.truncate(keep)
        cached = list(ids[:keep])
        for pos in range(keep, len(ids)):
            recorder = Recorder(self.wanted.__contains__)
            logits = self.model.forward(ids[pos], pos, recorder)
            cached.append(ids[pos])
            self._remember(key[: pos + 1], recorder.points[pos], logits)
        answer = {
            "tokens": [{"id": t, "text": self.text(t)} for t in ids],
            "start": start,
            "positions": [self._position_json(self.memory[key[: p + 1]]) for p in range(start, len(ids))],
        }
        return answer, cached

    def _remember(self, key: tuple[int, ...], points: dict[str, trace.Point], logits: list[float]) -> None:
        layers = self.model.config.num_hidden_layers
        residuals = [points[name].values for name in self.streams]
        attn = [trace.attention(points[f"layers.{i}.self_attn.attn_weights"]) for i in range(layers)]
        self.memory[key] = Position(trace.top_tokens(logits, TOP_K), attn, residuals, [_rms(r) for r in residuals])
        self.memory.move_to_end(key)
        while len(self.memory) > MEMORY:
            self.memory.popitem(last=False)
        self.last_logits[key] = logits
        while len(self.last_logits) > 4:
            self.last_logits.popitem(last=False)

    def _position_json(self, position: Position) -> dict[str, Any]:
        return {
            "top": [self._candidate_json(c.id, c.probability, c.logit) for c in position.top],
            "attn": [[[round(w, DIGITS) for w in row] for row in layer] for layer in position.attn],
            "rms": [round(r, 6) for r in position.rms],
        }

    def _candidate_json(self, token: int, p: float, logit: float | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": token, "text": self.text(token), "p": round(p, 6)}
        if logit is not None:
            entry["logit"] = round(logit, 4)
        return entry

    def _check(self, ids: Sequence[int]) -> None:
        vocab = self.model.config.vocab_size
        if not ids:
            raise UsageError("ids: the prompt is empty")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise UsageError(f"ids: token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")
        if len(ids) > self.model.max_context:
            raise UsageError(f"ids: {len(ids)} tokens do not fit the context of {self.model.max_context}")

    def _logits(self, ids: Sequence[int], cached: list[int]) -> tuple[list[float], list[int]]:
        """The logits after the last of `ids` (running what is not remembered)."""
        key = tuple(ids)
        if key not in self.last_logits:
            _, cached = self.run(ids, cached, start=len(ids))
        return self.last_logits[key], cached

    # ------------------------------------------------------------ the lens and the sampler

    def lens(self, ids: Sequence[int], pos: int, cached: list[int]) -> tuple[dict[str, Any], list[int]]:
        """The logit lens at position `pos` of `ids`: each residual stream through the final norm and the head."""
        if not isinstance(pos, int) or not 0 <= pos < len(ids):
            raise UsageError(f"pos must be a position of the prompt, 0..{len(ids) - 1}, got {pos!r}")
        key = tuple(ids[: pos + 1])
        if key not in self.memory:
            _, cached = self.run(ids[: pos + 1], cached, start=pos + 1)
        position = self.memory[key]
        final = position.top[0].id
        rows = trace.logit_lens(self.model, list(zip(self.streams, position.residuals)))  # the last is the output
        answer = {"pos": pos, "final": {"id": final, "text": self.text(final)},
                  "rows": [{"point": r.point, "id": r.id, "text": self.text(r.id), "p": round(r.probability, 6),
                            "rank": r.final_rank, "final_p": round(r.final_probability, 6)} for r in rows]}  # fmt: skip
        return answer, cached

    def distribution(self, ids: Sequence[int], params: SamplingParams, draw: bool,
                     cached: list[int]) -> tuple[dict[str, Any], list[int]]:  # fmt: skip
        """The next-token probabilities as the model gives them, and after the sampler's filters."""
        logits, cached = self._logits(ids, cached)
        sampler = Sampler(params)
        survivors = sampler.distribution(logits, ids)
        raw = softmax(logits)
        answer: dict[str, Any] = {
            "params": _params_json(params),
            "survivors": len(survivors),
            "reshaped": [dict(self._candidate_json(t, p), raw_p=round(raw[t], 6)) for t, p in survivors[:TOP_K * 2]],
        }
        if draw:
            token = sampler.sample(logits, ids)
            answer["drawn"] = self._candidate_json(token, dict(survivors)[token])
        return answer, cached


def _params_json(params: SamplingParams) -> dict[str, Any]:
    return {"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p, "min_p": params.min_p,
            "repetition_penalty": params.repetition_penalty, "seed": params.seed}  # fmt: skip


# ------------------------------------------------------------------ experiments


def ablate_head(model: Qwen2ForCausalLM, ids: Sequence[int], layer: int, head: int) -> dict[str, Any]:
    """The next-token distribution after `ids` with head (layer, head) zeroed, against the plain one.

    Runs the prompt twice from an empty cache (the ablation changes every position's keys and
    values from `layer` on); the cache holds the ablated run afterwards.
    """
    config = model.config
    if not 0 <= layer < config.num_hidden_layers:  # the request's fields, by name
        raise UsageError(f"layer must be in 0..{config.num_hidden_layers - 1}, got {layer}")
    if not 0 <= head < config.num_attention_heads:
        raise UsageError(f"head must be in 0..{config.num_attention_heads - 1}, got {head}")
    hook = ablation.ablation_hook(model, ids, [f"layers.{layer}.self_attn.head.{head}"])  # empties the cache
    before = model.prefill(ids)
    model.reset()
    after = model.prefill(ids, hook)
    p, q = softmax(before), softmax(after)
    shown = {c.id for c in trace.top_tokens(before, TOP_K // 2) + trace.top_tokens(after, TOP_K // 2)}
    return {
        "layer": layer,
        "head": head,
        "point": f"layers.{layer}.self_attn.attn_output",
        "slice": [head * config.head_dim, (head + 1) * config.head_dim],
        "kl": kl_divergence(log_softmax(before), log_softmax(after)),
        "tokens": [{"id": t, "p_before": round(p[t], 6), "p_after": round(q[t], 6)} for t in sorted(shown, key=lambda t: -p[t])],
    }


def patch_residual(model: Qwen2ForCausalLM, clean: Sequence[int], corrupt: Sequence[int],
                   alive: Alive = lambda: True) -> dict[str, Any]:  # fmt: skip
    """Activation patching of the residual stream (`microqwen.lab.patching.patch_residual`), as JSON.

    `effect[r][p]` is the clean answer restored (1) or not (0) by the clean stream `rows[r]`
    (`embed_tokens`, then `layers.{i}`) at position p; `alive()` is asked after every cell, and a
    client that has gone stops the work (`Stopped`).
    """

    def check(done: int, total: int) -> None:
        if not alive():
            raise Stopped()

    result = patching.patch_residual(model, clean, corrupt, progress=check)
    return {"clean_answer": result.answers.a, "corrupt_answer": result.answers.b,
            "ld_clean": result.clean_logit_diff, "ld_corrupt": result.corrupted_logit_diff,
            "rows": result.rows, "effect": result.restored}  # fmt: skip


# ------------------------------------------------------------------ where each value comes from


def source_line(function: Callable[..., Any], needle: str) -> dict[str, Any]:
    """The file (relative to the package) and line of the first line of `function` that contains `needle`."""
    lines, first = inspect.getsourcelines(function)
    package = os.path.dirname(os.path.abspath(__file__))
    file = os.path.relpath(inspect.getsourcefile(function) or "", package).replace(os.sep, "/")
    for offset, line in enumerate(lines):
        if needle in line:
            return {"file": file, "line": first + offset, "function": function.__qualname__,
                    "module": function.__module__}  # fmt: skip
    raise LookupError(f"{function.__qualname__} has no line with {needle!r}")


def _source(point: str, shape: str, computed: dict[str, Any], docs: str, api: str, what: str) -> dict[str, Any]:
    return {"point": point, "shape": shape, "source": computed, "docs": docs, "api": api, "what": what}


@functools.lru_cache(maxsize=None)
def sources() -> dict[str, dict[str, Any]]:
    """For each kind of value the page shows: its trace point, shape, computing line and docs pages."""
    forward = model_module.Qwen2ForCausalLM.forward
    return {
        "token": _source("embed_tokens", "[hidden]", source_line(forward, 'at("embed_tokens"'), "concepts/embeddings.html",
                         "api/model.html#microqwen.model.Embedding", "the token's row of the embedding table"),
        "candidate": _source("logits", "[vocab]", source_line(trace.top_tokens, "softmax("), "concepts/output-head.html",
                             "api/trace.html#microqwen.trace.top_tokens",
                             "p = softmax(logits): the model's own next-token probabilities (temperature 1)"),
        "attention": _source("layers.{layer}.self_attn.attn_weights", "[heads, pos + 1]",
                             source_line(model_module.attention_weights, "softmax("), "concepts/attention.html",
                             "api/model.html#microqwen.model.attention_weights",
                             "softmax over earlier positions of q . k / sqrt(head_dim), one row per head"),
        "lens": _source("layers.{layer}", "[hidden] -> [vocab]", source_line(trace.logit_lens, "lm_head.tokens("),
                        "tutorial-trace.html#where-the-answer-forms-the-logit-lens", "api/trace.html#microqwen.trace.logit_lens",
                        "lm_head(norm(h)) of the residual stream after a layer: its guess if the model stopped there"),
        "rms": _source("layers.{layer}", "[hidden]", source_line(forward, "h = at(name, add(h, down))"),
                       "concepts/embeddings.html", "api/model.html#microqwen.model.Qwen2ForCausalLM.forward",
                       "sqrt(mean(h^2)) of the residual stream after each layer"),
        "distribution": _source("logits", "[vocab]", source_line(Sampler.candidates, "softmax("), "concepts/sampling.html",
                                "api/sampling.html#microqwen.sampling.Sampler.distribution",
                                "repetition penalty, temperature, top-k, top-p, min-p, then renormalised"),
        "ablation": _source("layers.{layer}.self_attn.attn_output", "[heads * head_dim]",
                            source_line(ablation._Experiment.hook, "[0.0] * width"), "explorer.html#ablate-a-head",
                            "api/explorer.html#microqwen.explorer.ablate_head", "one head's slice of o_proj's input set to 0"),
        "patching": _source("layers.{layer}", "[hidden]", source_line(patching._Patcher.restored, "return (self.difference(logits)"),
                            "explorer.html#activation-patching", "api/explorer.html#microqwen.explorer.patch_residual",
                            "(LD patched - LD corrupt) / (LD clean - LD corrupt), LD a logit difference"),
    }
