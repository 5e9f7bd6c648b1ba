#!/bin/bash
# Quality for time (issue 22): the default `charrnn train` for MAX_TIME on tiny Shakespeare, the
# baseline checkout's (OLD, default 7d81915 in /tmp/c7d8: `git worktree add /tmp/c7d8 7d81915 &&
# (cd /tmp/c7d8 && make install)`) against this one's, alternating, one at a time, seeds 1-3.
# Each line: seed, side, steps, validation loss of best.pt (`charrnn eval --json`), precision.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-$ROOT/../shared/data/tinyshakespeare.txt}
OLD=${OLD:-/tmp/c7d8/.venv/bin/charrnn}
NEW=${NEW:-$ROOT/.venv/bin/charrnn}
OUT=${OUT:-/tmp/quality-for-time}
MAX_TIME=${MAX_TIME:-90s}
SIDES=${SIDES:-old new}
mkdir -p "$OUT" && cd "$OUT"
for seed in ${SEEDS:-1 2 3}; do
  for side in $SIDES; do
    if [ $side = old ]; then bin=$OLD; else bin=$NEW; fi
    run=$side-$MAX_TIME-$seed
    rm -rf "$run"
    "$bin" train "$CORPUS" --max-time "$MAX_TIME" --seed $seed --out "$run" -q > "$run.log" 2>&1
    steps=$(tail -1 "$run/metrics.jsonl" | python3 -c "import json,sys; print(json.load(sys.stdin)['step'])")
    val=$("$bin" eval --checkpoint "$run" --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['loss'])")
    precision=$(python3 -c "import json; print(json.load(open('$run/config.json'))['train']['precision'])")
    echo "$seed $side steps=$steps val=$val precision=$precision $(date +%T) load=$(cut -d' ' -f1 /proc/loadavg)"
  done
done
