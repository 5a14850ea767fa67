#!/usr/bin/env bash
# The learning-rate sweep of the default experiments (docs/reproduce.md): each experiment named
# on the command line trains with seed 42 at each rate, by its own budget rule, into
# runs/lr-sweep/<experiment>/lr-<rate>/; the table of best validation values (never test) goes
# to runs/lr-sweep/sweep.md. Run from the repository root after `cargo xtask setup`:
#
#   experiments/lr-sweep.sh "1e-3 3e-3" emoji/mope emoji/sequential emoji/prompt-tuning
set -euo pipefail
mope=${MOPE:-target/release/mope}
rates=$1
shift
out=runs/lr-sweep
mkdir -p "$out"
table="$out/sweep.md"
[ -f "$table" ] || printf '| experiment | lr | best val | best epoch | epochs trained |\n|---|---:|---:|---:|---:|\n' > "$table"
for experiment in "$@"; do
    for rate in $rates; do
        run="$out/$experiment/lr-$rate"
        if [ ! -f "$run/result.json" ]; then
            echo "== $experiment lr $rate" >&2
            "$mope" train "experiments/$experiment/experiment.toml" --run-dir "$run" --plain --set "train.lr=$rate" --set train.seed=42 >&2
        fi
        python3 - "$run/result.json" "$experiment" "$rate" >> "$table" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {r['best_val']:.2f} | {r['best_epoch']} | {r['epochs']} |")
PY
    done
done
cat "$table"
