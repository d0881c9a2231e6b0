"""The `microqwen` command line: argument parsing, and turning errors into one-line messages.

Every subcommand is a function `cmd_<name>(args) -> exit status`. A
`MicroQwenError` anywhere below becomes `microqwen: error: <message>` on stderr and
exit status 2; Ctrl-C becomes exit status 130. Results go to stdout, progress and
timings to stderr, so `microqwen ... > out.txt` captures only results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

from . import __version__, gguf, inspect_model
from .config import Config
from .errors import ContextError, MicroQwenError, UsageError
from .kernels import KERNELS
from .sampling import FLAGS, Sampler, SamplingParams
from .serve import DEFAULT_PORT, DOCS_URL, QUEUE_SIZE
from .tokenizer import Tokenizer
from .workers import default_workers

if TYPE_CHECKING:
    from .generation import Conversation
    from .model import Qwen2ForCausalLM

Command = Callable[[argparse.Namespace], int]


def cmd_inspect(args: argparse.Namespace) -> int:
    """`microqwen inspect PATH`: the tensor table and config of a model, from the headers only."""
    if gguf.is_gguf(args.path):
        gguf_report = inspect_model.inspect_gguf(args.path)
        print(inspect_model.gguf_to_json(gguf_report) if args.json else inspect_model.gguf_to_text(gguf_report))
        if gguf_report.problems:
            raise MicroQwenError(f"{args.path}: the tensors do not fit the qwen2 metadata: " + "; ".join(gguf_report.problems))
        return 0
    report = inspect_model.inspect(args.path)
    print(inspect_model.to_json(report) if args.json else inspect_model.to_text(report))
    if report.problems:
        raise MicroQwenError(f"{args.path}: the weights do not fit config.json: " + "; ".join(report.problems))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """`microqwen bench --model MODEL`: kernel rate, load, prefill and decode speed, memory."""
    from . import bench

    if args.prompt_tokens < 1 or args.decode_tokens < 1 or args.workers < 0:
        raise UsageError(f"--prompt-tokens and --decode-tokens must be 1 or more, --workers 0 or more; got "
                         f"{args.prompt_tokens}, {args.decode_tokens}, {args.workers}")  # fmt: skip
    figures = bench.measure(_resolve(args.model), args.workers, args.kernel, args.prompt_tokens, args.decode_tokens,
                            args.long_context, progress=lambda message: print(f"bench: {message}", file=sys.stderr))  # fmt: skip
    print(bench.report(figures))
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=2)
        except OSError as e:
            raise UsageError(f"--json {args.json}: cannot write: {e.strerror}") from None
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    """`microqwen download [ID]`: fetch a model into the Hugging Face cache; print its directory."""
    from . import hub

    spec = args.id or hub.DEFAULT_MODEL
    if args.revision is not None:
        if "@" in spec:
            raise UsageError(f"{spec} already names a revision; drop --revision {args.revision}")
        spec = f"{spec}@{args.revision}"
    print(hub.resolve_model(spec))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """`microqwen cache [list|clear]`: the prompt cache on disk (the KV cache of earlier prompts)."""
    from .promptcache import cache_dir, every_entry

    directory = os.path.join(cache_dir(), "prompts")
    entries = every_entry(directory)
    if args.action == "clear":
        for entry in entries:
            try:
                os.unlink(entry.path)
            except OSError as e:
                raise UsageError(f"{entry.path}: cannot remove: {e.strerror}") from None
        print(f"removed {len(entries)} saved prompts ({sum(e.size for e in entries) / 2**20:.1f} MB) from {directory}")
        return 0
    print(f"{directory}: {len(entries)} saved prompts, {sum(e.size for e in entries) / 2**20:.1f} MB")
    for entry in sorted(entries, key=lambda e: e.used, reverse=True):
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.used))
        print(f"  {used}  {len(entry.ids):6d} tokens  {entry.size / 2**20:7.2f} MB  {entry.header.get('numerics')}  "
              f"{os.path.basename(entry.path)}")  # fmt: skip
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    """`microqwen tokenize --model MODEL TEXT`: the ids and pieces of a text, or every BPE step."""
    from .tokenizer import Tokenizer, format_trace

    tokenizer = Tokenizer.from_model(args.model)
    text = args.text
    if text == "-":
        text = _read_stdin()
    if args.show_merges:
        print(format_trace(tokenizer.encode_traced(text, allow_special=not args.no_special)))
        return 0
    ids = tokenizer.encode(text, allow_special=not args.no_special)
    if args.json:
        print(json.dumps(ids))
        return 0
    for token_id in ids:
        data = tokenizer.token_bytes(token_id)
        try:
            shown = repr(data.decode("utf-8"))
        except UnicodeDecodeError:  # part of a character: show its bytes
            shown = repr(data)
        print(f"{token_id:>6}  {tokenizer.id_to_token(token_id):<16} {shown}")
    print(f"{len(ids)} tokens, {len(text)} characters", file=sys.stderr)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """`microqwen generate -p TEXT`: continue a prompt, streaming text to stdout, timings to stderr."""
    from .generation import Timings, generate
    from .model import check_context, load

    given = _check_sampling_flags(args)
    model_dir = _resolve(args.model)
    config = Config.from_model(model_dir)
    needs_text = args.ids is None or not args.print_ids or args.stop  # ids in, ids out: no tokenizer needed
    tokenizer = Tokenizer.from_model(model_dir) if needs_text else None
    prompt_ids = _prompt_ids(args, tokenizer)
    check_context(0, len(prompt_ids), args.max_context or config.max_position_embeddings)  # before the weights load
    timings = Timings()
    with load(model_dir, args.workers, args.kernel, args.max_context, tokenizer=tokenizer,
              mutation=args.mutate, prompt_cache=not args.no_prompt_cache) as model:  # fmt: skip
        timings.load_seconds = time.perf_counter() - timings.started
        if args.echo and args.print_ids:
            print("\n".join(map(str, prompt_ids)), flush=True)
        elif args.echo and tokenizer is not None:
            _write(tokenizer.decode(prompt_ids))
        for token in generate(model, prompt_ids, args.n_predict, _sampler(model, given), args.stop, timings,
                              _show_progress, lookup=args.lookup):  # fmt: skip
            if not args.print_ids:
                _write(token.text)
            elif token.id is not None:
                print(token.id, flush=True)
    if not args.print_ids:
        _write("\n")
    print(timings.report(), file=sys.stderr)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """`microqwen chat`: a conversation, one message a line, the history kept in the KV cache."""
    from .generation import Conversation, Timings
    from .model import load

    given = _check_sampling_flags(args)
    model_dir = _resolve(args.model)
    tokenizer = Tokenizer.from_model(model_dir)
    timings = Timings()
    with load(model_dir, args.workers, args.kernel, args.max_context, tokenizer=tokenizer,
              prompt_cache=not args.no_prompt_cache) as model:  # fmt: skip
        timings.load_seconds = time.perf_counter() - timings.started
        conversation = Conversation(model, _sampler(model, given), args.system, args.n_predict, timings, args.lookup)
        _chat_loop(conversation, interactive=sys.stdin.isatty())
    print(timings.report(), file=sys.stderr)
    return 0


def _chat_loop(conversation: Conversation, interactive: bool) -> None:
    """Read a message a line; /reset, /exit and end of input; Ctrl-C stops only the current answer."""
    if interactive:
        print("microqwen chat: /reset clears the history, /exit (or Ctrl-D) quits, Ctrl-C stops an answer",
              file=sys.stderr)  # fmt: skip
    while True:
        line = _read_line("> " if interactive else "")
        if line is None or line.strip() in ("/exit", "/quit"):
            return
        if line.strip() == "/reset":
            conversation.reset()
            print("(history cleared)", file=sys.stderr)
            continue
        if not line.strip():
            continue
        answer = conversation.ask(line, _show_progress)
        try:
            for token in answer:
                _write(token.text)
        except KeyboardInterrupt:
            _write(" [stopped]")
        except ContextError as e:  # a message too long: the session goes on
            print(f"microqwen: {e}; /reset starts a new conversation", file=sys.stderr)
        except UsageError as e:  # not text: the session goes on
            print(f"microqwen: {e}", file=sys.stderr)
        finally:
            answer.close()  # now, not at garbage collection: the answer so far joins the history
        _write("\n")


def cmd_trace(args: argparse.Namespace) -> int:
    """`microqwen trace -p TEXT`: every value of every layer, attention, the logit lens; compare, HTML."""
    from . import trace
    from .compare import compare, compare_traces, first_difference, format_comparison, format_growth, read_reference
    from .model import load
    from .report import write_html

    against_unmutated = args.compare == ""
    tolerance = args.tolerance if args.tolerance is not None else 0.0 if against_unmutated else 1e-3
    for flag, value, ok, allowed in (
        ("--top-k", args.top_k, args.top_k >= 1, "1 or more"),
        ("--workers", args.workers, args.workers >= 0, "0 or more"),
        ("-n", args.n_predict, args.n_predict is None or args.n_predict >= 0, "0 or more"),
        ("--tolerance", tolerance, tolerance >= 0, "a number >= 0"),
    ):
        if not ok:
            raise UsageError(f"{flag} must be {allowed}, got {value}")
    for flag, path in (("--json", args.json), ("--html", args.html)):
        _check_directory(flag, path)
    if args.compare is not None and (args.step or args.n_predict):
        raise UsageError("--compare traces the reference's prompt only: it goes without --step and -n")
    if against_unmutated and args.mutate is None:
        raise UsageError("--compare without a reference file compares with the unmutated model: it needs --mutate NAME")
    if args.target is not None and (args.step or args.n_predict or args.compare is not None):
        raise UsageError("--target traces the prompt and then the target: it goes without --step, -n and --compare")
    if args.step and args.prompt == "-":
        raise UsageError("--step reads its answers from stdin: give the prompt as -p TEXT or --ids, not -p -")
    model_dir = _resolve(args.model)
    layers = Config.from_model(model_dir).num_hidden_layers
    chosen = trace.parse_layers(args.layers, layers) if args.layers is not None else tuple(range(layers))
    selection = trace.Selection(chosen, trace.parse_points(args.points, layers) if args.points is not None else ())
    needs_text = Tokenizer.found_in(model_dir) or args.prompt is not None or args.target is not None
    tokenizer = Tokenizer.from_model(model_dir) if needs_text else None
    ref_ids, reference = read_reference(args.compare) if args.compare else ([], {})
    prompt_ids = ref_ids if args.compare and args.ids is None and args.prompt is None else _prompt_ids(args, tokenizer)
    if not prompt_ids:
        raise UsageError("the prompt is empty: give -p TEXT or --ids 1,2,3")
    if args.compare and prompt_ids != ref_ids:
        raise UsageError(f"the prompt is {prompt_ids}, but {args.compare} traced input_ids {ref_ids}")
    targets = _encode_text(tokenizer, args.target, "--target") if args.target is not None else []
    pieces, kept = trace.token_pieces(tokenizer), []
    keep, show = bool(args.json or args.html or args.compare is not None or targets), args.compare is None

    def emit(position: trace.Position) -> None:
        if keep:
            kept.append(position)
        if show:
            print(trace.format_position(position, pieces) + "\n", flush=True)

    question = "next token (Enter = 1, a number = that candidate, q = stop): " if sys.stdin.isatty() else ""
    choose: Callable[[trace.Position], int | None] = (
        (lambda p: trace.choose_interactively(p, lambda: _read_line(question), lambda m: print(m, file=sys.stderr)))
        if args.step else (lambda p: p.choice))  # fmt: skip
    lens = not args.no_lens and (show or bool(args.json or args.html))  # --compare alone needs no lens
    more = None if args.step and args.n_predict is None else args.n_predict or 0  # None: until q
    with load(model_dir, args.workers, args.kernel, tokenizer=tokenizer, mutation=args.mutate) as model:
        session = trace.TraceSession(model, selection, args.top_k, lens, args.lens_mid)
        trace.trace_tokens(session, prompt_ids, more, choose, emit, targets, args.prefill)
    if targets and show:
        print("\n".join(trace.format_target(kept, pieces)))
    if args.json:
        trace.write_json(args.json, kept, pieces)
    if args.html:
        text = tokenizer.decode(prompt_ids) if tokenizer else ",".join(map(str, prompt_ids))
        title = f"microqwen trace: {os.path.basename(model_dir.rstrip(os.sep))}: {text[:80]!r}"
        write_html(args.html, kept, pieces, title + (f" (mutation {args.mutate})" if args.mutate else ""))
    if args.compare is None:
        return 0
    if against_unmutated:
        baseline: list[trace.Position] = []
        with load(model_dir, args.workers, args.kernel, tokenizer=tokenizer) as model:
            session = trace.TraceSession(model, selection, args.top_k, lens=False)
            trace.trace_tokens(session, prompt_ids, 0, choose, baseline.append, prefill=args.prefill)
        missing: list[str] = []
        diffs, source = compare_traces(kept, baseline, tolerance), "the unmutated model"
    else:
        diffs, missing = compare(kept, reference, tolerance, args.compare)
        source = args.compare
    print(format_comparison(diffs, missing, len(kept), source))
    print(format_growth(diffs))
    return 1 if first_difference(diffs) else 0


def _check_directory(flag: str, path: str | None) -> None:
    """An output file's directory must exist (checked before the model loads)."""
    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise UsageError(f"{flag} {path}: there is no directory {os.path.dirname(os.path.abspath(path))}")


def _encode_text(tokenizer: Tokenizer | None, text: str, flag: str) -> list[int]:
    """A text's token ids (a flag's value), which must not be empty."""
    if tokenizer is None:
        raise UsageError(f"{flag} is text, and this model has no tokenizer")
    ids = tokenizer.encode(text)
    if not ids:
        raise UsageError(f"{flag} {text!r} has no tokens")
    return ids


# ------------------------------------------------------------------ the lab


def cmd_ablate(args: argparse.Namespace) -> int:
    """`microqwen ablate -p TEXT COMPONENT...`: switch components off; `--sweep`: every head in turn."""
    from .lab import ablation
    from .lab.components import parse_component, parse_positions

    if args.sweep == bool(args.components):
        raise UsageError("give the components to ablate (e.g. layers.3.self_attn.head.5), or --sweep for every head")
    _check_outputs(args)
    model_dir, tokenizer = _lab_start(args)
    config = Config.from_model(model_dir)
    for name in args.components:
        parse_component(name, config)  # a bad name is an error before the weights load
    ids = _prompt_ids(args, tokenizer)
    positions = parse_positions(args.positions, len(ids))
    answers = _answers(args.logit_diff, tokenizer, "--logit-diff")
    with _lab_model(args, model_dir, tokenizer) as model:
        result: Any
        if args.sweep:
            result = ablation.ablation_sweep(model, ids, args.mode, positions, answers, _bar("ablating heads"))
            print(ablation.format_sweep(result, args.top))
        else:
            result = ablation.ablate(model, ids, args.components, args.mode, positions, answers, args.top_k,
                                     args.score_from)  # fmt: skip
            print(ablation.format_ablation(result))
    _lab_outputs(args, result, tokenizer, ids, "ablation")
    return 0


def cmd_patch(args: argparse.Namespace) -> int:
    """`microqwen patch --clean TEXT --corrupted TEXT`: which (layer, position) carries the difference."""
    from .lab import patching
    from .lab.components import patch_point

    _check_outputs(args)
    model_dir, tokenizer = _lab_start(args)
    config = Config.from_model(model_dir)
    if not args.heads:
        patch_point(args.point, config.num_hidden_layers)  # an unknown point is an error before the weights load
    clean = _ids_or_text(args.clean, args.clean_ids, tokenizer, "--clean")
    corrupted = _ids_or_text(args.corrupted, args.corrupted_ids, tokenizer, "--corrupted")
    if len(clean) != len(corrupted):
        raise UsageError(f"patching needs prompts of the same token count: the clean prompt has {len(clean)} tokens, "
                         f"the corrupted one {len(corrupted)}")  # fmt: skip
    answers = _answers(args.answers, tokenizer, "--answers")
    with _lab_model(args, model_dir, tokenizer) as model:
        if args.heads:
            result = patching.patch_heads(model, clean, corrupted, answers, _bar("patching heads"))
        else:
            result = patching.patch_residual(model, clean, corrupted, args.point, answers, _bar("patching"))
    print(patching.format_patching(result))
    _lab_outputs(args, result, tokenizer, clean, "patching")
    return 0


def cmd_steer(args: argparse.Namespace) -> int:
    """`microqwen steer -p TEXT --layer L --plus TEXT --minus TEXT`: generate with and without a steering vector."""
    from .lab import steering

    pair = [args.plus, args.plus_ids, args.minus, args.minus_ids]
    if (args.vector is None) == all(given is None for given in pair):
        raise UsageError("give the vector as --vector FILE, or as --plus TEXT --minus TEXT (the difference of two prompts)")
    if args.n_predict < 0:
        raise UsageError(f"-n must be 0 or more, got {args.n_predict}")
    _check_outputs(args)
    _check_directory("--save-vector", args.save_vector)
    model_dir, tokenizer = _lab_start(args)
    layers = Config.from_model(model_dir).num_hidden_layers
    if not 0 <= args.layer < layers:
        raise UsageError(f"--layer {args.layer}: this model has layers 0..{layers - 1}")
    ids = _prompt_ids(args, tokenizer)
    with _lab_model(args, model_dir, tokenizer) as model:
        if args.vector is not None:
            vector = steering.read_vector(args.vector, model)
        else:
            plus = _ids_or_text(args.plus, args.plus_ids, tokenizer, "--plus")
            minus = _ids_or_text(args.minus, args.minus_ids, tokenizer, "--minus")
            vector = steering.difference_vector(model, plus, minus, args.layer)
        if args.save_vector:
            steering.write_vector(args.save_vector, vector)
        result = steering.steer(model, ids, args.layer, vector, args.scale, args.n_predict)
    print(steering.format_steering(result, tokenizer.decode(ids) if tokenizer else ""))
    _lab_outputs(args, result, tokenizer, ids, "steering")
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    """`microqwen attribute -p TEXT [--target TEXT]`: direct logit attribution at the last position."""
    from .lab import attribution
    from .sampling import argmax

    _check_outputs(args)
    model_dir, tokenizer = _lab_start(args)
    ids = _prompt_ids(args, tokenizer)
    chosen = _answers([args.target], tokenizer, "--target") if args.target is not None else None
    target = chosen[0] if chosen else None
    with _lab_model(args, model_dir, tokenizer) as model:
        if target is None:
            model.reset()
            target = argmax(model.prefill(ids))
        result = attribution.attribute(model, ids, target)
    print(attribution.format_attribution(result, _token_label(tokenizer, target), args.top))
    _lab_outputs(args, result, tokenizer, ids, "direct logit attribution")
    return 0


def cmd_induction(args: argparse.Namespace) -> int:
    """`microqwen induction`: score every head on a repeated random sequence; `--ablate N` the top N."""
    from .lab import ablation, induction

    if args.ablate < 0:
        raise UsageError(f"--ablate must be 0 or more, got {args.ablate}")
    _check_outputs(args)
    model_dir, tokenizer = _lab_start(args)
    config = Config.from_model(model_dir)
    heads = config.num_hidden_layers * config.num_attention_heads
    if args.ablate > heads // 2:
        raise UsageError(f"--ablate {args.ablate}: at most half of the model's {heads} heads (the rest are the control)")
    low = min(args.low, config.vocab_size - 2)
    ids = induction.repeated_sequence(_text_vocab(tokenizer, config.vocab_size), args.length, args.seed, low)
    print(f"ids: {','.join(map(str, ids))}")
    with _lab_model(args, model_dir, tokenizer) as model:
        result = induction.induction_scores(model, ids)
        print(induction.format_induction(result, args.top))
        if args.ablate:
            top = [s.component for s in result.ranked[: args.ablate]]
            lower_half = [s.component for s in result.ranked[len(result.ranked) // 2 :]]  # the least induction-like
            control = sorted(random.Random(args.seed).sample(lower_half, args.ablate))
            for label, chosen in (("the top", top), ("a control of", control)):
                ablated = ablation.ablate(model, ids, chosen, args.mode, score_from=args.length)
                print(f"ablating {label} {args.ablate} heads ({args.mode}): {', '.join(chosen)}")
                print(f"  loss on the repeat: {ablated.loss_before:.4f} -> {ablated.loss_after:.4f} nats per token")
    _lab_outputs(args, result, tokenizer, ids, "induction heads", f"{args.length} random tokens, twice (seed {args.seed})")
    return 0


def cmd_precision(args: argparse.Namespace) -> int:
    """`microqwen precision -p TEXT --dtype bfloat16`: every value rounded; the drift per point."""
    from .lab import precision
    from .trace import token_pieces

    if args.n_predict < 0:
        raise UsageError(f"-n must be 0 or more, got {args.n_predict}")
    _check_outputs(args)
    model_dir, tokenizer = _lab_start(args)
    ids = _prompt_ids(args, tokenizer)
    with _lab_model(args, model_dir, tokenizer) as model:
        result = precision.compare_precision(model, ids, args.dtype, args.n_predict)
    print(precision.format_precision(result, token_pieces(tokenizer)))
    _lab_outputs(args, result, tokenizer, ids, None)
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    """`microqwen perplexity FILE`: per-token log-probabilities and the perplexity, as llama-perplexity."""
    from .generation import Timings
    from .lab import scoring
    from .model import load

    _check_outputs(args)
    model_dir, tokenizer = _lab_start(args)
    if tokenizer is None:
        raise UsageError(f"{model_dir}: perplexity reads text, and this model has no tokenizer")
    text = _read_stdin() if args.file == "-" else _read_text(args.file)
    timings = Timings()
    started = time.perf_counter()
    ids = tokenizer.encode(text)
    print(f"perplexity: tokenizing the input: {len(ids)} tokens in {1000 * (time.perf_counter() - started):.2f} ms",
          file=sys.stderr)  # fmt: skip
    total = scoring.chunk_count(len(ids), args.ctx_size, args.chunks)
    timings.started = time.perf_counter()
    with load(model_dir, args.workers, args.kernel, tokenizer=tokenizer, mutation=args.mutate) as model:
        timings.load_seconds = time.perf_counter() - timings.started
        print(f"perplexity: calculating perplexity over {total} chunks, n_ctx={args.ctx_size}", file=sys.stderr)
        evaluated = time.perf_counter()
        result = scoring.perplexity(model, ids, args.ctx_size, args.chunks, progress=_chunk_progress(total))
        timings.prompt_seconds = time.perf_counter() - evaluated
        timings.prompt_tokens = total * args.ctx_size
    print(scoring.format_running(result))
    print(scoring.format_final(result))
    if args.json:
        from .lab.runs import to_json

        _save_json(args.json, dict(to_json(result), model=model_dir, mutation=args.mutate))
    print(timings.report(), file=sys.stderr)
    return 0


def _lab_start(args: argparse.Namespace) -> tuple[str, Tokenizer | None]:
    """The model (a directory or a .gguf file) and its tokenizer (None if it has none), checked before the weights load."""
    if args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    model_dir = _resolve(args.model)
    return model_dir, Tokenizer.from_model(model_dir) if Tokenizer.found_in(model_dir) else None


def _lab_model(args: argparse.Namespace, model_dir: str, tokenizer: Tokenizer | None) -> Qwen2ForCausalLM:
    from .model import load

    return load(model_dir, args.workers, args.kernel, tokenizer=tokenizer)


def _check_outputs(args: argparse.Namespace) -> None:
    _check_directory("--json", args.json)
    _check_directory("--html", getattr(args, "html", None))


def _lab_outputs(args: argparse.Namespace, result: Any, tokenizer: Tokenizer | None, ids: Sequence[int],
                 what: str | None, subject: str | None = None) -> None:  # fmt: skip
    """--json (the result as JSON) and --html (its heatmaps and tables, titled with `subject` or the prompt)."""
    from .lab.runs import to_json
    from .report import lab_sections, write_lab_html

    if args.json:
        _save_json(args.json, dict(to_json(result), ids=list(ids)))
    if getattr(args, "html", None) and what is not None:
        text = tokenizer.decode(ids) if tokenizer else ",".join(map(str, ids))
        write_lab_html(args.html, f"microqwen {what}: {subject or repr(text[:80])}", lab_sections(result))


def _save_json(path: str, data: dict[str, Any]) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError as e:
        raise UsageError(f"--json {path}: cannot write: {e.strerror}") from None


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text: byte {e.start} ({e.reason})") from None


def _ids_or_text(text: str | None, ids: str | None, tokenizer: Tokenizer | None, flag: str) -> list[int]:
    """A prompt given as `flag TEXT` or `flag-ids 1,2,3`."""
    if (text is None) == (ids is None):
        raise UsageError(f"give {flag} TEXT or {flag}-ids 1,2,3 (one of them)")
    if ids is not None:
        return _parse_ids(ids, f"{flag}-ids")
    assert text is not None
    return _encode_text(tokenizer, text, flag)


def _answers(texts: Sequence[str] | None, tokenizer: Tokenizer | None, flag: str) -> tuple[int, int] | None:
    """Tokens given as one-token texts (' Paris') or as #ids (#9625); None when not given."""
    if texts is None:
        return None
    ids = []
    for text in texts:
        if text.startswith("#") and text[1:].isdecimal():
            ids.append(int(text[1:]))
            continue
        tokens = _encode_text(tokenizer, text, flag)
        if len(tokens) != 1:
            raise UsageError(f"{flag} {text!r} is {len(tokens)} tokens {tokens}; give one token, or its id as #123")
        ids.append(tokens[0])
    return (ids[0], ids[-1])


def _token_label(tokenizer: Tokenizer | None, token: int) -> str:
    from .trace import show_token, token_pieces

    return show_token(token, token_pieces(tokenizer))


def _text_vocab(tokenizer: Tokenizer | None, vocab_size: int) -> int:
    """The ids a random sequence draws from: the tokenizer's ordinary tokens (no special ones), else the vocabulary."""
    return min(vocab_size, tokenizer.vocab_size) - 50 if tokenizer is not None else vocab_size - 2


def _bar(label: str) -> Callable[[int, int], None]:
    """A progress bar on stderr, one line updated in place (only on a terminal)."""
    started = time.perf_counter()

    def show(done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        filled = 30 * done // total
        eta = (time.perf_counter() - started) / done * (total - done)
        line = f"{label}: [{'=' * filled}{' ' * (30 - filled)}] {done}/{total}, {eta:.0f} s left" if done < total else ""
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)

    return show


def _chunk_progress(total: int) -> Callable[[int, int, float], None]:
    """llama-perplexity's `seconds per pass - ETA` after the first chunk, then the bar."""
    bar = _bar("perplexity")

    def show(done: int, count: int, seconds: float) -> None:
        if done == 1:
            print(f"perplexity: {seconds:.2f} seconds per pass - ETA {seconds * (total - 1) / 60:.2f} minutes",
                  file=sys.stderr)  # fmt: skip
        bar(done, count)

    return show



def cmd_serve(args: argparse.Namespace) -> int:
    """`microqwen serve`: the explorer at /, an OpenAI-compatible API at /v1, until Ctrl-C or SIGTERM."""
    from . import serve
    from .model import load

    for flag, value, low in (("--port", args.port, 0), ("--workers", args.workers, 0), ("--queue", args.queue, 1)):
        if value < low or (flag == "--port" and value > 65535):
            raise UsageError(f"{flag} must be {'in 0..65535' if flag == '--port' else f'{low} or more'}, got {value}")
    from .hub import DEFAULT_MODEL

    model_dir = _resolve(args.model)
    given = args.model or DEFAULT_MODEL
    name = args.alias or (os.path.basename(os.path.normpath(given)) if os.path.exists(given) else given)
    with load(model_dir, args.workers, args.kernel, args.max_context, prompt_cache=not args.no_prompt_cache) as model:
        try:
            serve.serve(model, name, args.host, args.port, args.queue, docs_url=args.docs_url)
        except KeyboardInterrupt:
            print("microqwen serve: stopped", file=sys.stderr)
    return 0


def _read_stdin() -> str:
    """All of standard input, read as bytes so that \r\n reaches the tokenizer unchanged."""
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"standard input is not UTF-8 text: byte {e.start} ({e.reason})") from None


def _read_line(prompt: str) -> str | None:
    """One line of input without its newline, or None at the end of input."""
    try:
        return input(prompt)
    except EOFError:
        return None
    except UnicodeDecodeError as e:
        raise UsageError(f"standard input is not UTF-8 text ({e.reason})") from None


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _show_progress(done: int, total: int) -> None:
    """Prompt progress on stderr, one line updated in place; only on a terminal."""
    if sys.stderr.isatty():
        line = f"prompt: {done}/{total} tokens" if done < total else ""
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)


def _resolve(model: str | None) -> str:
    from .hub import resolve_model

    return resolve_model(model)


SAMPLING_FLAGS = {field: flag.lstrip("-").replace("-", "_") for field, flag in FLAGS.items()}
"""Each sampling field's argparse destination: "--repeat-penalty" sets args.repeat_penalty."""


def _check_sampling_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling flags given; checked now, before a model is fetched or loaded."""
    given = {field: getattr(args, flag) for field, flag in SAMPLING_FLAGS.items() if getattr(args, flag) is not None}
    SamplingParams(**given)  # raises UsageError naming the flag
    if args.n_predict < 0:
        raise UsageError(f"-n must be 0 or more, got {args.n_predict}")
    if args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    if args.max_context is not None and args.max_context < 1:
        raise UsageError(f"--max-context must be 1 or more, got {args.max_context}")
    if args.lookup < 0:
        raise UsageError(f"--lookup must be 0 or more (0 = off), got {args.lookup}")
    if args.lookup and given.get("temperature", 0.0) != 0:
        raise UsageError(f"--lookup checks its drafts against greedy decoding: it needs --temp 0, got --temp {given.get('temperature')}")
    return given


def _sampler(model: Qwen2ForCausalLM, given: dict[str, Any]) -> Sampler:
    """A sampler with the model's generation_config.json defaults (greedy without one), then the flags."""
    return Sampler(dataclasses.replace(model.sampling or SamplingParams(temperature=0.0), **given))


def _prompt_ids(args: argparse.Namespace, tokenizer: Tokenizer | None) -> list[int]:
    """-p TEXT, -p - (stdin) or --ids 1,2,3; with --chat, wrapped in the chat template."""
    if args.ids is not None:
        if args.prompt is not None or args.chat or args.system is not None:
            raise UsageError("--ids gives the prompt as token ids: it goes without -p, --chat and --system")
        return _parse_ids(args.ids, "--ids")
    if args.prompt is None:
        raise UsageError("give a prompt: -p TEXT, -p - to read it from stdin, or --ids 1,2,3")
    assert tokenizer is not None
    text = _read_stdin() if args.prompt == "-" else args.prompt
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system is not None else [])
        text = tokenizer.apply_chat_template(messages + [{"role": "user", "content": text}])
    elif args.system is not None:
        raise UsageError("--system goes with --chat (a raw completion has no system prompt)")
    ids = tokenizer.encode(text)
    if not ids:
        raise UsageError("the prompt is empty")
    return ids


def _parse_ids(text: str, flag: str) -> list[int]:
    """`9707,1879` -> [9707, 1879]; not empty."""
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated token ids, got {text!r}") from None
    if not ids:
        raise UsageError(f"{flag} is empty: give the prompt's token ids, e.g. {flag} 9707,1879")
    return ids


def _add_generation_flags(parser: argparse.ArgumentParser) -> None:
    """The flags generate and chat share, named after llama.cpp's."""
    parser.add_argument("-m", "--model", metavar="MODEL",
                        help="a Hub id, a model directory or a .gguf file (default Qwen/Qwen2.5-0.5B-Instruct)")
    parser.add_argument("-n", "--n-predict", type=int, default=512, metavar="N", help="new tokens at most (default 512)")
    parser.add_argument("--temp", type=float, help="temperature; 0 = greedy (default: the model's generation_config)")
    parser.add_argument("--top-k", type=int, help="keep the k most likely tokens; 0 = off")
    parser.add_argument("--top-p", type=float, help="keep the most likely tokens up to this probability mass; 1 = off")
    parser.add_argument("--min-p", type=float, help="keep tokens at least this fraction as likely as the top one; 0 = off")
    parser.add_argument("--repeat-penalty", type=float, help="penalty for tokens already seen; 1 = off")
    parser.add_argument("-s", "--seed", type=int, help="seed for sampling, to reproduce a run")
    parser.add_argument("--system", metavar="TEXT", help="the system prompt (default: the model's)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes besides the main one (default: CPUs - 1)")
    parser.add_argument("--kernel", choices=sorted(KERNELS), help="matrix kernel (default: the fastest here)")
    parser.add_argument("--max-context", type=int, metavar="N", help="context limit (default: the model's)")  # fmt: skip
    parser.add_argument("--no-prompt-cache", action="store_true",
                        help="do not keep or reuse the KV cache of prompts on disk (see microqwen cache)")
    parser.add_argument("--lookup", type=int, default=0, metavar="N",
                        help="with --temp 0: draft up to N tokens by prompt lookup and check them in one pass "
                             "(the same text, faster when it repeats earlier text)")  # fmt: skip


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a mistake in the arguments is one line on stderr, as every other error is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its flags."""
    parser = _OneLineErrors(prog="microqwen", description="Qwen2.5-0.5B inference in pure Python.")
    parser.add_argument("--version", action="version", version=f"microqwen {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    inspect = commands.add_parser("inspect", help="show the tensors, sizes and config of a model file or directory")
    inspect.add_argument("path", metavar="PATH", help="a .safetensors or .gguf file, or a model directory")
    inspect.add_argument("--json", action="store_true", help="print machine-readable JSON")
    inspect.set_defaults(run=cmd_inspect)

    bench = commands.add_parser("bench", help="measure kernel rate, load, prefill and decode speed, memory")
    bench.add_argument("-m", "--model", required=True, metavar="MODEL", help="a model directory, a .gguf file or a Hub id")
    bench.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes besides the main one (default: CPUs - 1)")
    bench.add_argument("--kernel", choices=sorted(KERNELS), help="matrix kernel (default: the fastest here)")
    bench.add_argument("--prompt-tokens", type=int, default=32, help="prompt length for prefill (default 32)")
    bench.add_argument("--decode-tokens", type=int, default=32, help="tokens to decode (default 32)")
    bench.add_argument("--long-context", type=int, default=1000, metavar="N",
                       help="also decode with N positions in the cache, against 16 (default 1000)")
    bench.add_argument("--json", metavar="FILE", help="also save the figures as JSON")
    bench.set_defaults(run=cmd_bench)

    download = commands.add_parser("download", help="fetch a model from the Hugging Face Hub into its cache; print its directory")
    download.add_argument("id", nargs="?", metavar="ID", help="org/name[@revision] (default Qwen/Qwen2.5-0.5B-Instruct)")
    download.add_argument("--revision", help="a branch, tag or commit (default main)")
    download.set_defaults(run=cmd_download)

    cache = commands.add_parser("cache", help="list or clear the prompt cache (the KV cache of earlier prompts, on disk)")
    cache.add_argument("action", nargs="?", choices=["list", "clear"], default="list", help="list (default) or clear")
    cache.set_defaults(run=cmd_cache)

    tokenize = commands.add_parser("tokenize", help="show the token ids of a text, and how BPE found them")
    tokenize.add_argument("text", metavar="TEXT", help="the text to encode; - reads standard input")
    tokenize.add_argument("--model", required=True, metavar="MODEL", help="a model directory with tokenizer files, or a .gguf file")
    tokenize.add_argument("--json", action="store_true", help="print only the ids, as a JSON list")
    tokenize.add_argument("--show-merges", action="store_true", help="print every step: split, NFC, pre-tokens, merges")
    tokenize.add_argument("--no-special", action="store_true", help="read special tokens like <|im_end|> as plain text")
    tokenize.set_defaults(run=cmd_tokenize)

    generate = commands.add_parser("generate", help="continue a prompt, streaming the text")
    _add_generation_flags(generate)
    generate.add_argument("-p", "--prompt", metavar="TEXT", help="the prompt; - reads it from stdin")
    generate.add_argument("--ids", metavar="1,2,3", help="the prompt as token ids instead of text")
    generate.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    generate.add_argument("--echo", action="store_true", help="print the prompt before the continuation")
    generate.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop at this text (repeatable)")
    generate.add_argument("--print-ids", action="store_true", help="print the new token ids, one a line, not text")
    _add_mutate_flag(generate)
    generate.set_defaults(run=cmd_generate)

    chat = commands.add_parser("chat", help="talk with the model (one message a line when stdin is not a terminal)")
    _add_generation_flags(chat)
    chat.set_defaults(run=cmd_chat)

    trace = commands.add_parser("trace", help="follow tokens through the model: values, attention, logit lens; "
                                "compare with the reference")  # fmt: skip
    trace.add_argument("-m", "--model", metavar="MODEL",
                       help="a Hub id, a model directory or a .gguf file (default Qwen/Qwen2.5-0.5B-Instruct)")
    trace.add_argument("-p", "--prompt", metavar="TEXT", help="the prompt; - reads it from stdin")
    trace.add_argument("--ids", metavar="1,2,3", help="the prompt as token ids (needs no tokenizer)")
    trace.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    trace.add_argument("--system", metavar="TEXT", help="the system prompt, with --chat (default: the model's)")
    trace.add_argument("--layers", metavar="0,3,20-23", help="trace only these layers (numbers and ranges)")
    trace.add_argument("--points", metavar="q_proj,attn_weights",
                       help="show only the points whose name, or a dotted end of it, matches one of these "
                            "(wildcards * and ?; 'residual' = the layer outputs layers.{i})")
    trace.add_argument("--top-k", type=int, default=5, metavar="N", help="next-token candidates shown (default 5)")
    trace.add_argument("--no-lens", action="store_true", help="skip the logit lens (one output head per layer)")
    trace.add_argument("-n", "--n-predict", type=int, metavar="N",
                       help="then trace N more tokens, greedy (with --step: chosen; default: until q)")
    trace.add_argument("--step", action="store_true",
                       help="after each position choose the next token: Enter = the top one, a number, q = stop")
    trace.add_argument("--json", metavar="FILE", help="write the trace as JSON")
    trace.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    trace.add_argument("--compare", metavar="REF", nargs="?", const="",
                       help="compare every point with a reference trace (.safetensors, scripts/reference_trace.py), "
                            "or, without REF and with --mutate, with the unmutated model; exit 1 if any differs")
    trace.add_argument("--tolerance", type=float,
                       help="largest |difference| that is equal (default 1e-3; 0 against the unmutated model)")
    trace.add_argument("--target", metavar="TEXT",
                       help="feed TEXT after the prompt and show its tokens' log-probability and rank at every layer")
    trace.add_argument("--lens-mid", action="store_true",
                       help="the logit lens also reads each layer's stream after attention, before the MLP")
    trace.add_argument("--prefill", action="store_true",
                       help="run the prompt through prefill, as generate does, not one token at a time")
    _add_mutate_flag(trace)
    trace.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes besides the main one (default: CPUs - 1)")
    trace.add_argument("--kernel", choices=sorted(KERNELS), help="matrix kernel (default: the fastest here)")
    trace.set_defaults(run=cmd_trace)

    serve = commands.add_parser("serve", help="the explorer in the browser, and an OpenAI-compatible API")
    serve.add_argument("-m", "--model", metavar="MODEL",
                       help="a Hub id, a model directory or a .gguf file (default Qwen/Qwen2.5-0.5B-Instruct)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the port (default {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--alias", metavar="NAME", help="the model's name in the API (default: the -m value; of a path, its last part)")
    serve.add_argument("--queue", type=int, default=QUEUE_SIZE, metavar="N",
                       help=f"requests that may wait while one runs; more get 503 (default {QUEUE_SIZE})")
    serve.add_argument("--docs-url", default=DOCS_URL, metavar="URL",
                       help="where the explorer's links to the docs go (default: mkdocs serve in a checkout)")
    serve.add_argument("--workers", type=int, default=default_workers(),
                       help="worker processes besides the main one (default: CPUs - 1)")
    serve.add_argument("--kernel", choices=sorted(KERNELS), help="matrix kernel (default: the fastest here)")
    serve.add_argument("--max-context", type=int, metavar="N", help="context limit (default: the model's)")
    serve.add_argument("--no-prompt-cache", action="store_true",
                       help="do not keep or reuse the KV cache of prompts on disk (see microqwen cache)")
    serve.set_defaults(run=cmd_serve)
    _add_lab_commands(commands)
    return parser


def _add_mutate_flag(parser: argparse.ArgumentParser) -> None:
    from .lab.mutations import MUTATIONS

    parser.add_argument("--mutate", metavar="NAME", choices=list(MUTATIONS),
                        help="plant a bug: " + ", ".join(MUTATIONS))


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    """-m, --workers, --kernel: which model, and how it computes."""
    parser.add_argument("-m", "--model", metavar="ID_OR_DIR",
                        help="a Hub id or a model directory (default Qwen/Qwen2.5-0.5B-Instruct)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes besides the main one (default: CPUs - 1)")
    parser.add_argument("--kernel", choices=sorted(KERNELS), help="matrix kernel (default: the fastest here)")


def _add_prompt_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--prompt", metavar="TEXT", help="the prompt; - reads it from stdin")
    parser.add_argument("--ids", metavar="1,2,3", help="the prompt as token ids (needs no tokenizer)")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--system", metavar="TEXT", help="the system prompt, with --chat (default: the model's)")


def _add_outputs(parser: argparse.ArgumentParser, html: bool = True) -> None:
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    if html:
        parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report (heatmaps, tables)")


def _add_lab_commands(commands: Any) -> None:
    """The lab: ablate, patch, steer, attribute, induction, precision, perplexity."""
    from .lab.ablation import MODES
    from .lab.precision import ROUNDINGS

    ablate = commands.add_parser("ablate", help="switch components off (heads, attention, MLPs) and see what changes")
    _add_model_flags(ablate)
    _add_prompt_flags(ablate)
    ablate.add_argument("components", nargs="*", metavar="COMPONENT",
                        help="layers.L.self_attn.head.H, layers.L.self_attn or layers.L.mlp (ablated together)")
    ablate.add_argument("--sweep", action="store_true", help="ablate every head on its own, and rank them")
    ablate.add_argument("--mode", choices=MODES, default="zero", help="0, or the mean over the prompt (default zero)")
    ablate.add_argument("--positions", metavar="0,3-5", help="ablate at these positions only (default: all)")
    ablate.add_argument("--logit-diff", nargs=2, metavar=("A", "B"),
                        help="the two tokens of the logit difference (text of one token, or #id; default: the top two)")
    ablate.add_argument("--score-from", type=int, metavar="N",
                        help="also the loss on the prompt's own tokens from position N on")
    ablate.add_argument("--top-k", type=int, default=5, metavar="N", help="next tokens listed (default 5)")
    ablate.add_argument("--top", type=int, default=20, metavar="N", help="heads listed by --sweep (default 20)")
    _add_outputs(ablate)
    ablate.set_defaults(run=cmd_ablate)

    patch = commands.add_parser("patch", help="activation patching: a clean prompt's values in a corrupted run")
    _add_model_flags(patch)
    patch.add_argument("--clean", metavar="TEXT", help="the clean prompt")
    patch.add_argument("--corrupted", metavar="TEXT", help="the corrupted prompt (the same number of tokens)")
    patch.add_argument("--clean-ids", metavar="1,2,3", help="the clean prompt as token ids")
    patch.add_argument("--corrupted-ids", metavar="1,2,3", help="the corrupted prompt as token ids")
    patch.add_argument("--point", default="residual",
                       help="what to patch at each (layer, position): residual (default) or a point such as mlp.down_proj")
    patch.add_argument("--heads", action="store_true", help="patch each head's slice of attn_output instead")
    patch.add_argument("--answers", nargs=2, metavar=("A", "B"),
                       help="the tokens of the logit difference (default: the clean and the corrupted top token)")
    _add_outputs(patch)
    patch.set_defaults(run=cmd_patch)

    steer = commands.add_parser("steer", help="add a vector to the residual stream while generating")
    _add_model_flags(steer)
    _add_prompt_flags(steer)
    steer.add_argument("--layer", type=int, required=True, help="add it to the stream after this layer")
    steer.add_argument("--vector", metavar="FILE", help="the vector: a JSON list of hidden_size numbers")
    steer.add_argument("--plus", metavar="TEXT", help="the vector is the stream of --plus minus that of --minus")
    steer.add_argument("--minus", metavar="TEXT")
    steer.add_argument("--plus-ids", metavar="1,2,3", help="--plus as token ids")
    steer.add_argument("--minus-ids", metavar="1,2,3", help="--minus as token ids")
    steer.add_argument("--scale", type=float, default=1.0, help="multiply the vector by this (default 1)")
    steer.add_argument("-n", "--n-predict", type=int, default=32, metavar="N", help="tokens to generate (default 32)")
    steer.add_argument("--save-vector", metavar="FILE", help="write the vector as JSON")
    _add_outputs(steer)
    steer.set_defaults(run=cmd_steer)

    attribute = commands.add_parser("attribute", help="direct logit attribution: each component's share of a logit")
    _add_model_flags(attribute)
    _add_prompt_flags(attribute)
    attribute.add_argument("--target", metavar="TEXT", help="the token (text of one token, or #id; default: the top one)")
    attribute.add_argument("--top", type=int, default=20, metavar="N", help="contributions listed (default 20)")
    _add_outputs(attribute)
    attribute.set_defaults(run=cmd_attribute)

    induction = commands.add_parser("induction", help="find induction heads on a repeated random sequence")
    _add_model_flags(induction)
    induction.add_argument("--length", type=int, default=20, help="tokens in the random sequence (default 20)")
    induction.add_argument("--seed", type=int, default=0, help="seed of the random sequence (default 0)")
    induction.add_argument("--low", type=int, default=1000, help="the smallest token id drawn (default 1000)")
    induction.add_argument("--top", type=int, default=10, metavar="N", help="heads listed (default 10)")
    induction.add_argument("--ablate", type=int, default=0, metavar="N",
                           help="ablate the top N heads, and as a control N drawn from the lower-scoring half; "
                                "the loss on the repeat")
    induction.add_argument("--mode", choices=MODES, default="zero", help="how to ablate (default zero)")
    _add_outputs(induction)
    induction.set_defaults(run=cmd_induction)

    precision = commands.add_parser("precision", help="every value rounded to float32 or bfloat16: the drift per point")
    _add_model_flags(precision)
    _add_prompt_flags(precision)
    precision.add_argument("--dtype", choices=list(ROUNDINGS), default="bfloat16", help="(default bfloat16)")
    precision.add_argument("-n", "--n-predict", type=int, default=8, metavar="N",
                           help="greedy tokens generated both ways (default 8)")
    _add_outputs(precision, html=False)
    precision.set_defaults(run=cmd_precision)

    perplexity = commands.add_parser("perplexity", help="the perplexity of a text file, as llama-perplexity measures it")
    _add_model_flags(perplexity)
    perplexity.add_argument("file", metavar="FILE", help="a UTF-8 text file; - reads stdin")
    perplexity.add_argument("-c", "--ctx-size", type=int, default=512, metavar="N",
                            help="tokens per chunk; the second half of each is scored (default 512)")
    perplexity.add_argument("--chunks", type=int, metavar="N", help="score at most N chunks (default: all)")
    _add_outputs(perplexity, html=False)
    _add_mutate_flag(perplexity)
    perplexity.set_defaults(run=cmd_perplexity)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    run: Command = args.run
    try:
        return run(args)
    except MicroQwenError as e:
        print(f"microqwen: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("microqwen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout was closed by its reader (`microqwen trace ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail
        return 1
