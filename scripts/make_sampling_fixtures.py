"""Record what transformers' `generate` does to one step's logits: tests/fixtures/sampling/*.json.

    $REFPYTHON scripts/make_sampling_fixtures.py      # the reference venv (torch, transformers)

Each case is a logits vector, the ids seen so far, and the keys of a generation_config.json. A stand-in
model whose forward returns those logits runs `model.generate(max_new_tokens=1, output_scores=True)`, so
the processors are the ones generate itself builds, with its defaults for missing keys and in its own
order. The script records the processors' names, the processed scores (transformers sets a removed
token to -inf), the ids that survive, the softmax probabilities of the survivors (float32, as the
reference computes them) and, for greedy cases, the token generate picks.

Small vectors (8-16 entries, where torch's sort is stable, so top-p ties are deterministic) are stored
as they are. The full 151,936-entry vectors are made from a seed by `full_logits` with `random.random`
and plain arithmetic (bit-identical on every Python); the fixture stores the recipe and a sha256 of the
float32 bytes, and tests/test_sampling.py rebuilds the vector and checks the hash.

Guards, so that no fixture depends on float32 rounding or on how torch orders ties: every case is also
run in float64 and must keep the same survivors (and greedy token), and a vector longer than 16 entries
must not have its top-p boundary cut through tied scores (torch's sort is not stable there).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import random
import struct
from typing import Any

import torch
import transformers
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor
from transformers.modeling_outputs import CausalLMOutputWithPast

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "sampling"
INSTRUCT = ROOT / "tests" / "data" / "qwen2.5-0.5b-instruct" / "generation_config.json"
VOCAB = 151_936
STABLE_SORT_MAX = 16  # torch.sort on CPU is stable for at most this many entries (checked below)


def float32(values: list[float]) -> list[float]:
    """Round to float32 (what the model hands to the sampler) and back to Python floats."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def full_logits(seed: int, scale: float, peaks: int, peak_low: float, peak_high: float) -> list[float]:
    """151,936 scores uniform in [-scale, scale], then `peaks` random ids set uniform in [peak_low, peak_high]."""
    rng = random.Random(seed)
    logits = [(2.0 * rng.random() - 1.0) * scale for _ in range(VOCAB)]
    for _ in range(peaks):
        logits[rng.randrange(VOCAB)] = peak_low + (peak_high - peak_low) * rng.random()
    return float32(logits)


def sha256_float32(logits: list[float]) -> str:
    return hashlib.sha256(struct.pack(f"<{len(logits)}f", *logits)).hexdigest()


class FixedLogits(Qwen2ForCausalLM):
    """A Qwen2 model whose every forward pass returns the same logits: generate's last step sees them."""

    def set_logits(self, logits: list[float], dtype: torch.dtype) -> None:
        self.fixed = torch.tensor(logits, dtype=dtype)

    def forward(self, input_ids: torch.Tensor | None = None, **kwargs: Any) -> CausalLMOutputWithPast:
        assert input_ids is not None
        return CausalLMOutputWithPast(logits=self.fixed.expand(input_ids.shape[0], input_ids.shape[1], -1))


def run_generate(logits: list[float], previous_ids: list[int], config: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    tiny = Qwen2Config(vocab_size=len(logits), hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = FixedLogits(tiny).eval()
    model.set_logits(logits, dtype)
    captured: list[Any] = []
    original = model._get_logits_processor

    def capture(*args: Any, **kwargs: Any) -> Any:
        processors = original(*args, **kwargs)
        captured.extend(processors)
        return processors

    model._get_logits_processor = capture  # type: ignore[method-assign]
    input_ids = torch.tensor([previous_ids])
    one_step = GenerationConfig(**{"pad_token_id": 0, **config, "max_new_tokens": 1, "output_scores": True,
                                   "return_dict_in_generate": True, "use_cache": False})
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=one_step)
    scores = out.scores[0][0]
    processors = [type(p).__name__ for p in captured]
    if not one_step.do_sample:  # greedy: the token, and the penalised scores of the ids seen
        seen = sorted(set(previous_ids))
        return {"processors": processors, "greedy_token": int(out.sequences[0, -1]), "seen_ids": seen,
                "processed_scores_of_seen_ids": [scores[i].item() for i in seen]}
    survivors = [i for i in range(len(logits)) if scores[i].item() != float("-inf")]
    probabilities = torch.softmax(scores, dim=-1)
    return {
        "processors": processors,
        "survivors": survivors,
        "processed_scores": [scores[i].item() for i in survivors],
        "probabilities": [probabilities[i].item() for i in survivors],
    }


def penalised(logits: list[float], previous_ids: list[int], penalty: float) -> list[float]:
    """The scores top-p ranks (the temperature keeps their order): the reference's repetition penalty."""
    scores = torch.tensor([logits])
    if penalty != 1.0:
        scores = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([previous_ids]), scores)
    return [float(x) for x in scores[0].tolist()]


def record(name: str, description: str, logits: list[float], previous_ids: list[int],
           config: dict[str, Any]) -> dict[str, Any]:
    result = run_generate(logits, previous_ids, config, torch.float32)
    check = run_generate(logits, previous_ids, config, torch.float64)
    assert result.get("survivors") == check.get("survivors"), f"{name}: float32 and float64 keep different ids"
    assert result.get("greedy_token") == check.get("greedy_token"), f"{name}: float32 and float64 pick different ids"
    if len(logits) > STABLE_SORT_MAX and "TopPLogitsWarper" in result["processors"]:
        scores = penalised(logits, previous_ids, config.get("repetition_penalty", 1.0))
        survivors = set(result["survivors"])
        lowest_kept = min(scores[i] for i in survivors)
        assert all(scores[i] != lowest_kept for i in range(len(logits)) if i not in survivors), \
            f"{name}: the top-p boundary cuts through tied scores, which torch's unstable sort orders arbitrarily"
    outcome = f"token {result['greedy_token']}" if "greedy_token" in result else f"{len(result['survivors'])} survivors"
    print(f"{name}: {outcome}; {', '.join(result['processors']) or 'no processors'}")
    stored = {"logits": logits} if len(logits) < VOCAB else {}  # a full vector is rebuilt from the recipe
    return {"name": name, "description": description, "generation_config": config, "previous_ids": previous_ids,
            **stored, **result}


def seeded(seed: int, n: int, scale: float) -> list[float]:
    rng = random.Random(seed)
    return float32([rng.gauss(0.0, scale) for _ in range(n)])


def small_cases() -> list[dict[str, Any]]:
    instruct = json.loads(INSTRUCT.read_text())
    sample = {"do_sample": True}
    return [
        record("greedy_tie", "no generation_config keys: greedy; the highest score 2.25 appears at ids 1, 3 and 5",
               float32([0.5, 2.25, -1.0, 2.25, 1.0, 2.25, 0.0, -3.5]), [0], {}),
        record("greedy_penalty_moves_argmax", "greedy still applies the repetition penalty: 3.0 / 1.2 = 2.5 < 2.9",
               float32([1.0, 3.0, 2.8, -0.5, 0.25, 2.9]), [1, 1, 3], {"repetition_penalty": 1.2}),
        record("penalty_positive_negative_zero", "r = 1.5 on a positive, a negative and a zero logit; id 1 twice",
               float32([2.0, -1.5, 0.0, 0.75, -0.25, 3.0, 1.25, -2.0]), [0, 1, 2, 1, 4],
               {**sample, "repetition_penalty": 1.5, "top_k": 0}),
        record("penalty_below_one", "r = 0.8 < 1 makes seen tokens more likely",
               seeded(1, 10, 1.5), [3, 7, 7], {**sample, "repetition_penalty": 0.8, "top_k": 0}),
        record("temperature_low", "T = 0.5 sharpens", seeded(2, 12, 1.0), [0], {**sample, "temperature": 0.5, "top_k": 0}),
        record("temperature_high", "T = 2.0 flattens", seeded(3, 12, 1.0), [0], {**sample, "temperature": 2.0, "top_k": 0}),
        record("top_k_ties_at_kth", "top-k 3: the k-th highest score 2.5 is shared by ids 2, 3 and 5; all survive",
               float32([1.0, 4.0, 2.5, 2.5, 0.5, 2.5, 3.0, -1.0]), [0], {**sample, "top_k": 3}),
        record("top_k_default_larger_than_vocab", "do_sample alone: transformers' default top-k 50 > 10 entries",
               seeded(4, 10, 1.0), [0], dict(sample)),
        record("top_p_boundary_on_cumulative_sum", "four equal scores (1/4 each) and four of probability 0; "
               "top-p 0.75 stops exactly on a cumulative sum and keeps three of the tied four (the higher ids)",
               float32([2.0, 2.0, -1e4, 2.0, -1e4, 2.0, -1e4, -1e4]), [0], {**sample, "top_k": 0, "top_p": 0.75}),
        record("all_equal_instruct_defaults", "eight equal scores with the Instruct defaults; the penalty leaves 0 as it is",
               float32([0.0] * 8), [2, 5], {k: instruct[k] for k in
                                             ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")}),
        record("top_p_tiny_keeps_one", "top-p 0.01 keeps only the most probable token",
               seeded(5, 16, 2.0), [0], {**sample, "top_k": 0, "top_p": 0.01}),
        record("top_p_with_temperature", "T = 1.3, top-p 0.9", seeded(6, 16, 2.0), [0],
               {**sample, "temperature": 1.3, "top_k": 0, "top_p": 0.9}),
        record("min_p", "min-p 0.2: keep p >= 0.2 x the top probability", seeded(7, 16, 1.5), [0],
               {**sample, "top_k": 0, "min_p": 0.2}),
        record("min_p_one_keeps_ties_at_max", "min-p 1.0 keeps exactly the tokens tied at the top",
               float32([1.0, 3.0, 3.0, 2.0, -0.5, 0.0]), [0], {**sample, "top_k": 0, "min_p": 1.0}),
        record("every_filter", "penalty, T = 0.8, top-k 10, top-p 0.9, then min-p 0.1 (after top-p)",
               seeded(8, 16, 1.5), [1, 4, 9, 9], {**sample, "repetition_penalty": 1.3, "temperature": 0.8,
                                                  "top_k": 10, "top_p": 0.9, "min_p": 0.1}),
        record("very_negative", "scores near -1e4 and one at -1e30: the max is subtracted before exp; "
               "T = 0.5 so that s / T stays exact in float32 (float32 has 3 decimals left at 1e4)",
               float32([-1e4, -10001.0, -10002.5, -1e30, -10000.5, -10003.0, -10000.25, -10004.0]), [0],
               {**sample, "temperature": 0.5, "top_k": 0}),
    ]


FULL_RECIPE = {"seed": 2024, "scale": 3.0, "peaks": 300, "peak_low": 6.0, "peak_high": 14.0}


def full_cases() -> dict[str, Any]:
    logits = full_logits(**FULL_RECIPE)  # type: ignore[arg-type]
    instruct = json.loads(INSTRUCT.read_text())
    top = max(range(VOCAB), key=logits.__getitem__)
    rng = random.Random(7)
    prompt = sorted(rng.sample(range(VOCAB), 40)) + [top]
    sample = {"do_sample": True}
    return {
        "recipe": FULL_RECIPE,
        "sha256_float32_le": sha256_float32(logits),
        "cases": [
            record("full_instruct_defaults", "the Instruct generation_config.json as it is",
                   logits, prompt, instruct),
            record("full_top_p_only", "top-k off: top-p 0.95 over the whole vocabulary (T 0.7, r 1.1)",
                   logits, prompt, {**sample, "temperature": 0.7, "top_k": 0, "top_p": 0.95,
                                    "repetition_penalty": 1.1}),
            record("full_min_p", "min-p 0.05 alone over the whole vocabulary", logits, prompt,
                   {**sample, "top_k": 0, "min_p": 0.05}),
            record("full_greedy_penalty", "greedy with r 1.1; the top score's id is in the prompt",
                   logits, prompt, {"repetition_penalty": 1.1}),
        ],
    }


def defaults() -> dict[str, Any]:
    wanted = ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty")
    generation_defaults = GenerationConfig._get_default_generation_params()
    return {"transformers_version": transformers.__version__,
            "defaults": {key: generation_defaults.get(key) for key in wanted}}


def check_stable_sort_limit() -> None:
    for n in range(2, STABLE_SORT_MAX + 1):
        assert torch.sort(torch.zeros(n)).indices.tolist() == list(range(n)), f"torch.sort is not stable at {n}"


def write(name: str, data: Any) -> None:
    path = OUT / name
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size:,} bytes)")


def main() -> None:
    torch.manual_seed(0)
    check_stable_sort_limit()
    OUT.mkdir(parents=True, exist_ok=True)
    source = {"transformers_version": transformers.__version__, "torch_version": torch.__version__}
    write("small.json", {**source, "cases": small_cases()})
    write("full_vocab.json", {**source, **full_cases()})
    write("defaults.json", defaults())


if __name__ == "__main__":
    main()
