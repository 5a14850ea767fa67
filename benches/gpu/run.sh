#!/usr/bin/env bash
# Runs on a lent GPU machine, from the repository's root, with `carry: [".gpu"]` (built by
# benches/gpu/bundle.sh): the CUDA tests of the custom operations (each against its reference on
# flex), then the training step on CUDA against PyTorch eager on the same GPU. Logs go to $OUT
# (the device tool brings them back) or /tmp. Exits non-zero if a CUDA test was skipped.
set -uo pipefail
out=${OUT:-/tmp}
gunzip -kf .gpu/*.gz && chmod +x .gpu/ops_tests .gpu/train_step || exit 1
nvidia-smi -L 2>&1 | tee "$out/device.txt"
.gpu/ops_tests --nocapture 2>&1 | tee "$out/cuda_tests.log"
if grep -q SKIPPED "$out/cuda_tests.log"; then
    echo "a CUDA test was SKIPPED: no CUDA device could be opened" >&2
    exit 1
fi
# The bench finds benches/reference/mope_step.py from the repository's root; the machine's
# python3 has CUDA PyTorch.
MOPE_TORCH_PYTHON=python3 .gpu/train_step small vit-b text --steps 5 --device cuda 2>&1 | tee "$out/train_step.log"
