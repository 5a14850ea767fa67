#!/usr/bin/env bash
# Builds, on this machine, the two programs a lent GPU machine runs (the device tool: it reaches no
# package registry, so nothing can be built there): the operations' tests (crate `ops`) with the CUDA backend, and
# the training-step bench with it. Stripped and gzipped into .gpu/ (ignored by git), about 10 MB
# each, for the device tool's `carry: [".gpu"]`; benches/gpu/run.sh runs them there.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .gpu

# The path cargo reports for the executable it built last.
executable() {
    cargo "$@" --no-run --message-format=json | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4
}

tests=$(executable test -p ops --features cuda --lib)
bench=$(executable bench -p mope-benches --features cuda --bench train_step)
for pair in "ops_tests=$tests" "train_step=$bench"; do
    name=${pair%%=*}
    strip -o ".gpu/$name" "${pair#*=}"
    gzip -9f ".gpu/$name"
done
ls -l .gpu
