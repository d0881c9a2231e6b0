"""Activation patching: which values carry the difference between two prompts.

Take a clean prompt ("The capital of France is") and a corrupted one of the same token count
("The capital of Italy is"). Run the corrupted prompt, but at one (point, position) put back the
value the clean run had there; if the model's answer comes back, that value carried it. The metric
is the logit difference of the two prompts' answers a (the clean top token, " Paris") and b (the
corrupted top token, " Rome"), normalised so that 0 is the corrupted run and 1 the clean one:

    LD(run)  = l_a - l_b                              at the last position
    restored = (LD(patched) - LD(corrupted)) / (LD(clean) - LD(corrupted))

`patch_residual` patches a point of every layer (default the residual stream `layers.{i}`, with
`embed_tokens` before it) at every position: a [layers + 1] x [positions] table. `patch_heads`
patches one head's slice of `attn_output` (at every position) per run: a [layers] x [heads] table.
Positions before the first token where the prompts differ hold the same values in both runs, so
patching there changes nothing (0, and no run is needed); a run that patches position p reuses the
corrupted run's KV cache of positions 0..p-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from ..errors import UsageError
from ..model import Qwen2ForCausalLM
from ..trace import RESIDUAL, token_label
from .components import every_head, patch_point
from .runs import Answers, Runs, answers_of, shown, top_two, writer

Progress = Optional[Callable[[int, int], None]]


@dataclass
class Patching:
    """A patching table: `restored[r][c]` for the patched value of row r (a point or a layer) and column c
    (a position or a head), 1 = the clean answer fully restored, 0 = the corrupted run.

    Attributes:
        kind: `residual` or another per-layer point (rows: points, columns: positions), or `heads`
            (rows: layers, columns: heads).
        rows, columns: their labels (`layers.3`; `5 ' Paris'` or `head 3`).
        restored: the table.
        answers: a (the clean top token) and b (the corrupted one).
        clean_logit_diff, corrupted_logit_diff: LD of the two unpatched runs.
        clean_ids, corrupted_ids: the prompts.
    """

    kind: str
    rows: List[str]
    columns: List[str]
    restored: List[List[float]]
    answers: Answers
    clean_logit_diff: float
    corrupted_logit_diff: float
    clean_ids: List[int]
    corrupted_ids: List[int]


class _Patcher:
    """The clean run (its values of the patched points), the corrupted runs, and the metric."""

    def __init__(self, model: Qwen2ForCausalLM, clean_ids: Sequence[int], corrupted_ids: Sequence[int],
                 points: Sequence[str], answers: tuple[int, int] | None) -> None:  # fmt: skip
        if len(clean_ids) != len(corrupted_ids):
            raise UsageError(f"patching needs prompts of the same token count: the clean prompt has {len(clean_ids)} "
                             f"tokens, the corrupted one {len(corrupted_ids)}")  # fmt: skip
        clean = Runs(model, clean_ids).run(keep=points)
        self.values = clean.points
        self.runs = Runs(model, corrupted_ids)
        corrupted = self.runs.logits()
        clean_logits = clean.logits[len(clean_ids) - 1]
        self.answers = answers or (top_two(clean_logits)[0], top_two(corrupted)[0])
        a, b = self.answers
        if a == b:
            raise UsageError(f"both prompts predict {shown(model, a)} next: the logit difference "
                             "needs two answers (give them, or prompts that disagree)")  # fmt: skip
        self.clean_ld, self.corrupted_ld = self.difference(clean_logits), self.difference(corrupted)
        if self.clean_ld == self.corrupted_ld:
            raise UsageError("the logit difference is the same for both prompts: there is nothing to restore")
        differ = [t for t, (x, y) in enumerate(zip(clean_ids, corrupted_ids)) if x != y]
        self.first_difference = differ[0] if differ else len(clean_ids)
        self.model = model

    def difference(self, logits: Sequence[float]) -> float:
        a, b = self.answers
        return logits[a] - logits[b]

    def restored(self, point: str, positions: Sequence[int], start: int = 0, stop: int | None = None) -> float:
        """The metric with the clean values [start, stop) of `point` written at `positions` of the corrupted run."""
        positions = [pos for pos in positions if pos >= self.first_difference]
        if not positions:
            return 0.0  # the same tokens so far, so the same values: nothing to patch
        changes = {(point, pos): [(start, self.values[pos][point][start:stop])] for pos in positions}
        logits = self.runs.logits(writer(changes), first=min(positions))
        return (self.difference(logits) - self.corrupted_ld) / (self.clean_ld - self.corrupted_ld)

    def result(self, kind: str, rows: List[str], columns: List[str], table: List[List[float]],
               clean_ids: Sequence[int], corrupted_ids: Sequence[int]) -> Patching:  # fmt: skip
        answers = answers_of(self.model, self.answers)
        return Patching(kind, rows, columns, table, answers, self.clean_ld, self.corrupted_ld,
                        list(clean_ids), list(corrupted_ids))  # fmt: skip


def patch_residual(model: Qwen2ForCausalLM, clean_ids: Sequence[int], corrupted_ids: Sequence[int],
                   point: str = RESIDUAL, answers: tuple[int, int] | None = None,
                   progress: Progress = None) -> Patching:  # fmt: skip
    """Patch `point` of every layer (`residual`: the stream after each layer) at every position, one at a time.

    `answers` (a, b) overrides the tokens of the logit difference; `progress(done, total)` follows the runs.
    """
    points = patch_point(point, model.config.num_hidden_layers)
    patcher = _Patcher(model, clean_ids, corrupted_ids, points, answers)
    length = len(clean_ids)
    table = [[0.0] * length for _ in points]
    for pos in range(length):  # position by position: the runs share the cache of 0..pos-1
        for r, name in enumerate(points):
            table[r][pos] = patcher.restored(name, [pos])
            if progress:
                progress(pos * len(points) + r + 1, length * len(points))
    columns = [_position_label(model, pos, clean_ids, corrupted_ids) for pos in range(length)]
    return patcher.result(point, points, columns, table, clean_ids, corrupted_ids)


def patch_heads(model: Qwen2ForCausalLM, clean_ids: Sequence[int], corrupted_ids: Sequence[int],
                answers: tuple[int, int] | None = None, progress: Progress = None) -> Patching:  # fmt: skip
    """Patch each head's slice of `attn_output`, at every position, one head per run: [layers] x [heads]."""
    config = model.config
    heads = every_head(config)
    points = sorted({head.point for head in heads})
    patcher = _Patcher(model, clean_ids, corrupted_ids, points, answers)
    table = [[0.0] * config.num_attention_heads for _ in range(config.num_hidden_layers)]
    for done, head in enumerate(heads, 1):
        table[head.layer][head.head or 0] = patcher.restored(head.point, range(len(clean_ids)), head.start, head.stop)
        if progress:
            progress(done, len(heads))
    rows = [f"layers.{i}" for i in range(config.num_hidden_layers)]
    columns = [f"head {h}" for h in range(config.num_attention_heads)]
    return patcher.result("heads", rows, columns, table, clean_ids, corrupted_ids)


def _position_label(model: Qwen2ForCausalLM, pos: int, clean: Sequence[int], corrupted: Sequence[int]) -> str:
    """`3 ' France'`, or `3 ' France'/' Italy'` where the prompts differ."""
    if clean[pos] == corrupted[pos]:
        return f"{pos} {shown(model, clean[pos])}"
    return f"{pos} {shown(model, clean[pos])}/{shown(model, corrupted[pos])}"


def format_patching(result: Patching) -> str:
    """The table of `restored`: one line per row, one column per position or head (1.00 = fully restored)."""
    answers = result.answers
    a, b = token_label(answers.a, answers.a_text), token_label(answers.b, answers.b_text)
    heads = result.kind == "heads"
    what = "each head's slice of attn_output (at every position)" if heads else f"{result.kind} at one position"
    lines = [f"activation patching: {what} from the clean run put into the corrupted run",
             f"metric: logit difference {a} - {b}, clean {result.clean_logit_diff:.4f}, corrupted "
             f"{result.corrupted_logit_diff:.4f}; 1 = the clean answer fully restored, 0 = the corrupted run"]  # fmt: skip
    width = max(len(r) for r in result.rows)
    if heads:
        lines.append(f"  {'':<{width}} " + " ".join(f"{h:>6}" for h in range(len(result.columns))))
    else:
        lines += [f"  position {c}" for c in result.columns]
        lines.append(f"  {'':<{width}} " + " ".join(f"{p:>6}" for p in range(len(result.columns))))
    lines += [f"  {name:<{width}} " + " ".join(f"{v:6.2f}" for v in row) for name, row in zip(result.rows, result.restored)]
    return "\n".join(lines)
