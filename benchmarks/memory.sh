#!/bin/bash
# How far back it remembers (issue 32, docs/memory.md): the default `charrnn train` with each
# cell (RNN, GRU, LSTM) for MAX_TIME on tiny Shakespeare, one after another, then one
# `charrnn compare --memory` of the three: its JSON (memory.json), its tables (memory.txt) and
# the curves (memory.png, needs the plot extra) go to OUT, with each run's directory.
# Run it on a quiet machine: the figures of docs/memory.md and benchmarks/RESULTS.md come from
#   MAX_TIME=90s benchmarks/memory.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-$ROOT/../shared/data/tinyshakespeare.txt}
CHARRNN=${CHARRNN:-$ROOT/.venv/bin/charrnn}
OUT=${OUT:-/tmp/memory-bench}
MAX_TIME=${MAX_TIME:-90s}
CELLS=${CELLS:-rnn gru lstm}
mkdir -p "$OUT"
runs=()
for cell in $CELLS; do
  run=$OUT/$cell-$MAX_TIME
  rm -rf "$run"
  "$CHARRNN" train "$CORPUS" --cell "$cell" --max-time "$MAX_TIME" --seed 1 --out "$run" -q \
    > "$run.log" 2>&1
  echo "$cell: trained for $MAX_TIME ($(date +%T), load $(cut -d' ' -f1 /proc/loadavg))"
  runs+=("$run")
done
"$CHARRNN" compare "${runs[@]}" --memory --json > "$OUT/memory.json"
COLUMNS=${COLUMNS:-100} "$CHARRNN" compare "${runs[@]}" --memory --plot "$OUT/memory.png" 2>&1 \
  | tee "$OUT/memory.txt"
