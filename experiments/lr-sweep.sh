#!/usr/bin/env bash
# The learning-rate sweep of the default experiments (docs/reproduce.md): each experiment named
# on the command line trains with seed 42 at each rate, by its own budget rule, into
# runs/lr-sweep/<experiment>/lr-<rate>/ (a result newer than its experiment file is reused);
# then the table of best validation values (never test) of every run under runs/lr-sweep/ is
# written to runs/lr-sweep/sweep.md. Run from the repository root after `cargo xtask setup`:
#
#   experiments/lr-sweep.sh "1e-3 3e-3" emoji/mope emoji/sequential emoji/prompt-tuning
set -euo pipefail
mope=${MOPE:-target/release/mope}
rates=$1
shift
out=runs/lr-sweep
for experiment in "$@"; do
    for rate in $rates; do
        run="$out/$experiment/lr-$rate"
        if [ ! "$run/result.json" -nt "experiments/$experiment/experiment.toml" ]; then
            echo "== $experiment lr $rate" >&2
            "$mope" train "experiments/$experiment/experiment.toml" --run-dir "$run" --overwrite --plain --set "train.lr=$rate" --set train.seed=42 >&2
        fi
    done
done
python3 - "$out" > "$out/sweep.md" <<'PY'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
print("| experiment | lr | best val | best epoch | epochs trained |\n|---|---:|---:|---:|---:|")
rows = []
for result in root.glob("*/*/lr-*/result.json"):
    r = json.loads(result.read_text())
    rows.append((r["name"], float(result.parent.name[3:]), result.parent.name[3:], r["best_val"], r["best_epoch"], r["epochs"]))
for name, _, rate, val, epoch, epochs in sorted(rows):
    print(f"| {name} | {rate} | {val:.2f} | {epoch} | {epochs} |")
PY
cat "$out/sweep.md"
