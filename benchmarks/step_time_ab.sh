#!/bin/bash
# Step time of `charrnn train` at BASE (a git ref) against this checkout, alternating (base, new,
# base, new, ...) so both sides see the same load; one thread, fp32, the default model on tiny
# Shakespeare. Each run's figure is its mean time per step over the metrics windows after the
# first (the training windows' chars/s, evaluation excluded) and its best window. Prints every
# run (side, pair, mean, best, load), then per side the median of the means and the best window,
# and new/base. Written for issue 32 (the gradient log's cost): BASE=2552a71.
#   BASE=2552a71 PAIRS=6 STEPS=400 benchmarks/step_time_ab.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${BASE:?set BASE to the git ref to compare against}
CORPUS=${CORPUS:-$ROOT/../shared/data/tinyshakespeare.txt}
STEPS=${STEPS:-400}
PAIRS=${PAIRS:-6}
OUT=${OUT:-/tmp/step-time-ab}
FLAGS=${FLAGS:---precision fp32 --no-auto --threads 1}
PYTHON=$ROOT/.venv/bin/python
rm -rf "$OUT" && mkdir -p "$OUT/base"
git -C "$ROOT" archive "$BASE" charrnn | tar -x -C "$OUT/base"
cd "$OUT"  # not the checkout: PYTHONPATH, not the current directory, picks the code
ms_per_step() {  # the run's mean and its best (least disturbed) window, ms per step
  "$PYTHON" - "$1/metrics.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
step_chars = lines[0]["chars"] / lines[0]["step"]
ms = [1000 * step_chars / r["chars_per_s"] for r in lines[1:] if r.get("chars_per_s") and "val_loss" not in r]
print(f"{sum(ms) / len(ms):.3f} {min(ms):.3f}")
PY
}
for pair in $(seq "$PAIRS"); do
  for side in base new; do
    if [ $side = base ]; then code=$OUT/base; else code=$ROOT; fi
    # shellcheck disable=SC2086
    PYTHONPATH=$code "$PYTHON" -m charrnn train "$CORPUS" --out "$side-$pair" \
      --max-steps "$STEPS" --log-every 50 --eval-every 1000000 --eval-chars 1000 $FLAGS -q
    echo "$side $pair $(ms_per_step "$side-$pair") load=$(cut -d' ' -f1 /proc/loadavg)" \
      | tee -a runs.txt
  done
done
"$PYTHON" - <<'PY'
import statistics
rows = [line.split() for line in open("runs.txt")]
for name, column, pick in (("median of the runs' means", 2, statistics.median), ("best window", 3, min)):
    base, new = (pick(float(r[column]) for r in rows if r[0] == side) for side in ("base", "new"))
    print(f"{name}: base {base:.3f} ms/step, new {new:.3f} ms/step; new/base {new / base:.4f}")
PY
