"""Ablation: switch components off and see how the next-token distribution moves.

To ablate a component (`microqwen.lab.components`) is to replace its value, at every position of the
prompt or at chosen ones, by

    zero:  0                                  its contribution to the residual stream is removed
    mean:  (1/T) sum_t value_t               its mean over the prompt's T positions in the clean run:
                                              what it adds on average, but nothing about this token

and to compare the distribution after the last token with the clean run's:

    KL(clean || ablated) = sum_i p_i (log p_i - log q_i)        (nats; 0: nothing moved)
    logit difference     = l_a - l_b                            of two chosen tokens (default: the clean top two)
    loss                 = -(1/n) sum_t log q(ids[t] | ids[:t])  over t >= score_from: the prompt's own tokens

`ablate` does one ablation; `ablation_sweep` ablates every attention head on its own (24 x 14 = 336
runs on Qwen2.5-0.5B) and ranks them by how far the distribution moves. Both return plain data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from ..distribution import kl_divergence, log_probability, log_softmax
from ..errors import UsageError
from ..model import Hook, Qwen2ForCausalLM
from ..sampling import argmax
from .components import Component, check_positions, every_head, parse_component
from ..trace import fit, token_label
from .runs import Answers, Change, Runs, TokenChoice, answers_of, token_text, top_choices, top_two, writer

MODES = ("zero", "mean")
"""What an ablated component's value becomes: 0, or its mean over the prompt's positions."""


@dataclass
class Ablation:
    """One ablation's effect on the next token after the prompt.

    Attributes:
        components: the ablated components, by name.
        mode: `zero` or `mean`.
        positions: the ablated positions (None: every position of the prompt).
        before, after: the top next tokens of the clean and of the ablated run.
        kl: KL(clean || ablated) of the next-token distributions, in nats.
        answers: the two tokens of the logit difference.
        logit_diff_before, logit_diff_after: l_a - l_b in the clean and the ablated run.
        score_from: the first position whose token the loss scores (None: no loss).
        loss_before, loss_after: the mean -log p of the prompt's tokens from `score_from` on.
    """

    components: List[str]
    mode: str
    positions: Optional[List[int]]
    before: List[TokenChoice]
    after: List[TokenChoice]
    kl: float
    answers: Answers
    logit_diff_before: float
    logit_diff_after: float
    score_from: Optional[int] = None
    loss_before: Optional[float] = None
    loss_after: Optional[float] = None


def ablate(model: Qwen2ForCausalLM, ids: Sequence[int], components: Sequence[str], mode: str = "zero",
           positions: Sequence[int] | None = None, answers: tuple[int, int] | None = None, top_k: int = 5,
           score_from: int | None = None) -> Ablation:  # fmt: skip
    """Ablate `components` (names like `layers.3.self_attn.head.5`) together; compare with the clean run.

    Args:
        model: the model (its KV cache is emptied first).
        ids: the prompt.
        components: names of components (`microqwen.lab.components`), ablated together.
        mode: `zero` or `mean` (the mean over the prompt's positions).
        positions: ablate only at these positions (None: at every position).
        answers: the token ids (a, b) of the logit difference (default: the clean run's top two).
        top_k: how many next tokens to list before and after.
        score_from: also score the prompt's own tokens from this position on (the loss).
    """
    parts = [parse_component(name, model.config) for name in components]
    experiment = _Experiment(model, ids, parts, mode, positions, score_from)
    clean = experiment.clean()
    chosen = answers or top_two(clean[experiment.last])
    after = experiment.ablated(parts)
    a, b = chosen
    return Ablation(
        [c.name for c in parts], mode, None if positions is None else sorted(set(positions)),
        top_choices(model, clean[experiment.last], top_k), top_choices(model, after[experiment.last], top_k),
        kl_divergence(log_softmax(clean[experiment.last]), log_softmax(after[experiment.last])),
        answers_of(model, chosen),
        _difference(clean[experiment.last], chosen), _difference(after[experiment.last], chosen),
        score_from, experiment.loss(clean), experiment.loss(after),
    )  # fmt: skip


def ablation_hook(model: Qwen2ForCausalLM, ids: Sequence[int], components: Sequence[str], mode: str = "zero",
                  positions: Sequence[int] | None = None) -> Hook:  # fmt: skip
    """The hook `ablate` uses: it ablates `components` at the prompt's positions (or the chosen ones).

    For the mean it runs `ids` once to find the means. Use it on the same prompt, with
    `Qwen2ForCausalLM.prefill` or `microqwen.generate` (the generated positions are not ablated).
    """
    parts = [parse_component(name, model.config) for name in components]
    experiment = _Experiment(model, ids, parts, mode, positions, None)
    if mode == "mean":
        experiment.clean()
    model.reset()
    return experiment.hook(parts)


@dataclass
class HeadEffect:
    """What ablating one head does: its name, the KL of the change, the logit difference after, the new top token."""

    component: str
    layer: int
    head: int
    kl: float
    logit_diff: float
    top_id: int
    top_text: Optional[str]


@dataclass
class Sweep:
    """Every head ablated on its own.

    Attributes:
        mode, positions: as in `Ablation`.
        answers, logit_diff_before: the logit difference of the clean run.
        kl: `[layer][head]` KL(clean || ablated), the heatmap.
        logit_diff: `[layer][head]` the logit difference with that head ablated.
        ranked: every head's `HeadEffect`, the largest KL first.
    """

    mode: str
    positions: Optional[List[int]]
    answers: Answers
    logit_diff_before: float
    kl: List[List[float]]
    logit_diff: List[List[float]]
    ranked: List[HeadEffect]


def ablation_sweep(model: Qwen2ForCausalLM, ids: Sequence[int], mode: str = "zero",
                   positions: Sequence[int] | None = None, answers: tuple[int, int] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> Sweep:  # fmt: skip
    """Ablate each attention head alone (one run per head after one clean run); `progress(done, total)` after each."""
    heads = every_head(model.config)
    experiment = _Experiment(model, ids, heads, mode, positions, None)
    clean = experiment.clean()[experiment.last]
    chosen = answers or top_two(clean)
    log_clean = log_softmax(clean)
    effects = []
    for done, head in enumerate(heads, 1):
        after = experiment.ablated([head])[experiment.last]
        best = argmax(after)
        effects.append(HeadEffect(head.name, head.layer, head.head or 0, kl_divergence(log_clean, log_softmax(after)),
                                  _difference(after, chosen), best, token_text(model, best)))  # fmt: skip
        if progress:
            progress(done, len(heads))
    n_heads = model.config.num_attention_heads
    grid = [effects[i : i + n_heads] for i in range(0, len(effects), n_heads)]
    return Sweep(mode, None if positions is None else sorted(set(positions)),
                 answers_of(model, chosen),
                 _difference(clean, chosen), [[e.kl for e in row] for row in grid],
                 [[e.logit_diff for e in row] for row in grid], sorted(effects, key=lambda e: -e.kl))  # fmt: skip


class _Experiment:
    """The runs of one ablation experiment: a clean run (which also finds the means), then ablated ones."""

    def __init__(self, model: Qwen2ForCausalLM, ids: Sequence[int], parts: Sequence[Component], mode: str,
                 positions: Sequence[int] | None, score_from: int | None) -> None:  # fmt: skip
        if mode not in MODES:
            raise UsageError(f"unknown ablation mode {mode!r}: the modes are {', '.join(MODES)}")
        length = len(ids)
        check_positions(positions, length)
        if score_from is not None and not 1 <= score_from < length:
            raise UsageError(f"the loss scores tokens from position {score_from}; the prompt has positions 1..{length - 1}"
                             " to score (position 0 has nothing before it)")  # fmt: skip
        self.runs, self.ids, self.mode, self.last = Runs(model, ids), list(ids), mode, length - 1
        self.positions = sorted(set(range(length) if positions is None else positions))
        self.scored = [] if score_from is None else list(range(score_from - 1, length - 1))
        self.first = min(self.positions + self.scored)
        self.points = sorted({part.point for part in parts}) if mode == "mean" else []
        self.means: Dict[str, List[float]] = {}

    def clean(self) -> Dict[int, List[float]]:
        """The clean run: its logits (after the last position, and the scored ones), and the means of the points."""
        run = self.runs.run(at=self.scored + [self.last], keep=self.points)
        for point in self.points:
            rows = [run.points[pos][point] for pos in sorted(run.points)]
            self.means[point] = [math.fsum(column) / len(rows) for column in zip(*rows)]
        return run.logits

    def ablated(self, parts: Sequence[Component]) -> Dict[int, List[float]]:
        """A run with `parts` ablated: its logits at the same positions as the clean run's."""
        return self.runs.run(self.hook(parts), self.first, self.scored + [self.last]).logits

    def hook(self, parts: Sequence[Component]) -> Hook:
        """The hook that writes each part's ablated value at the chosen positions."""
        changes: Dict[tuple[str, int], List[Change]] = {}
        for part in parts:
            width = part.stop - part.start
            value = self.means[part.point][part.start : part.stop] if self.mode == "mean" else [0.0] * width
            for pos in self.positions:
                changes.setdefault((part.point, pos), []).append((part.start, value))
        return writer(changes)

    def loss(self, logits: Dict[int, List[float]]) -> float | None:
        """-(1/n) sum log p(ids[t + 1]) over the scored positions t (None when nothing is scored)."""
        if not self.scored:
            return None
        return -math.fsum(log_probability(logits[t], self.ids[t + 1]) for t in self.scored) / len(self.scored)


def _difference(logits: Sequence[float], answers: tuple[int, int]) -> float:
    return logits[answers[0]] - logits[answers[1]]


# ------------------------------------------------------------------ text


def format_ablation(result: Ablation) -> str:
    """The next tokens before and after, the KL, the logit difference and (with `score_from`) the loss."""
    where = "every position" if result.positions is None else "positions " + ",".join(map(str, result.positions))
    lines = [f"ablated ({result.mode}, at {where}): {', '.join(result.components)}",
             f"  {'#':>3}  {'before':<24} {'p':>6}    {'after':<24} {'p':>6}"]  # fmt: skip
    for n, (b, a) in enumerate(zip(result.before, result.after), 1):
        lines.append(f"  {n:>2}.  {fit(token_label(b.id, b.text), 24)} {b.probability:.4f}    "
                     f"{fit(token_label(a.id, a.text), 24)} {a.probability:.4f}")  # fmt: skip
    answers = result.answers
    pair = f"{token_label(answers.a, answers.a_text)} - {token_label(answers.b, answers.b_text)}"
    lines += [f"KL(clean || ablated) = {result.kl:.4f} nats",
              f"logit difference {pair}: {result.logit_diff_before:.4f} -> {result.logit_diff_after:.4f}"]  # fmt: skip
    if result.loss_before is not None and result.loss_after is not None:
        lines.append(f"loss on the prompt's tokens from position {result.score_from}: {result.loss_before:.4f} -> "
                     f"{result.loss_after:.4f} nats per token")  # fmt: skip
    return "\n".join(lines)


def format_sweep(result: Sweep, top: int = 20) -> str:
    """The `top` heads that move the distribution most, and the layers x heads table of KL."""
    answers = result.answers
    pair = f"{token_label(answers.a, answers.a_text)} - {token_label(answers.b, answers.b_text)}"
    lines = [f"every head ablated alone ({result.mode}); clean logit difference {pair} = {result.logit_diff_before:.4f}",
             f"  {'rank':>4}  {'head':<28} {'KL':>8}  {'logit diff':>10}  top token after"]  # fmt: skip
    for n, e in enumerate(result.ranked[:top], 1):
        lines.append(f"  {n:>4}  {e.component:<28} {e.kl:8.4f}  {e.logit_diff:10.4f}  {token_label(e.top_id, e.top_text)}")
    heads = len(result.kl[0]) if result.kl else 0
    lines += ["KL(clean || ablated), layers x heads:", "  layer " + "".join(f"{h:>7}" for h in range(heads))]
    lines += [f"  {i:>5} " + "".join(f"{v:7.3f}" for v in row) for i, row in enumerate(result.kl)]
    return "\n".join(lines)
