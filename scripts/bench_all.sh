#!/usr/bin/env bash
# Every measurement behind docs/performance.md, in one run on a quiet machine (no other jobs:
# a busy core makes every number here meaningless). Writes docs/bench/*.json and the ladder chart.
#
#   bash scripts/bench_all.sh            (needs models/random-qwen2.5-0.5b: scripts/make_random_model.py;
#                                         pypy3; python3.12 and python3.13; $REFPYTHON, a Python with PyTorch;
#                                         $MICROQWEN_REAL_MODEL, a real model directory, for lookup decoding)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/random-qwen2.5-0.5b
OUT=docs/bench
mkdir -p "$OUT"
pick() {  # the first interpreter that runs (pyenv puts shims on PATH that fail when not active)
  for candidate in "python$1" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1"*/bin/python; do
    if "$candidate" -c pass 2>/dev/null; then echo "$candidate"; return; fi
  done
  echo "no Python $1 found" >&2; exit 1
}
PY39=$(pick 3.9); PY312=$(pick 3.12); PY313=$(pick 3.13)
REF="${REFPYTHON:?set REFPYTHON to a Python with torch and transformers (scripts/make_model_fixtures.py says how)}"

uname -a > "$OUT/machine.txt"; lscpu | grep -E "Model name|^CPU\(s\)|L2|L3" >> "$OUT/machine.txt"

for py in "$PY39" "$PY312" "$PY313" pypy3; do
  name=$("$py" -c 'import platform; print(platform.python_implementation().lower() + platform.python_version())')
  "$py" scripts/bench_ladder.py --json "$OUT/ladder-$name.json"
done
"$PY312" scripts/bench_ladder.py --chart docs/images/kernel-ladder.svg "$OUT"/ladder-*.json

for run in 1 2 3; do
  pypy3 -m microqwen bench --model "$MODEL" --workers 1 --json "$OUT/bench-pypy-w1-run$run.json"
done
pypy3 -m microqwen bench --model "$MODEL" --workers 0 --json "$OUT/bench-pypy-w0.json"
"$PY312" -m microqwen bench --model "$MODEL" --workers 1 --json "$OUT/bench-cpython3.12-w1.json"
"$PY313" -m microqwen bench --model "$MODEL" --workers 1 --json "$OUT/bench-cpython3.13-w1.json"
"$PY312" -m microqwen bench --model "$MODEL" --workers 0 --json "$OUT/bench-cpython3.12-w0.json"
"$REF" scripts/bench_torch.py --model "$MODEL" --threads 2 --json "$OUT/torch-threads2.json"
if [ -n "${MICROQWEN_REAL_MODEL:-}" ]; then  # a real model directory: random weights do not repeat their prompt
  pypy3 scripts/bench_lookup.py --model "$MICROQWEN_REAL_MODEL" --workers 1 --json "$OUT/lookup-pypy-w1.json"
fi
python3 scripts/bench_report.py
